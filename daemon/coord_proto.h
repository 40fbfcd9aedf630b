/* coord_proto.h - the multi-node protocol between each node's ckptpushd and the coordinator
 * (node rank 0): message names, limits, and the authentication of each line. Pure: no loop, no
 * I/O, no logging; callable from any thread (the unit tests' and the fuzzer's entry points).
 *
 * Wire format: NDJSON over TCP, the framing of the control socket (ipc_framer), each line a JSON
 * object that ends with ,"mac":"<64 hex>"}: HMAC-SHA256, keyed with the job secret, over
 * COORD_MAC_LABEL, one direction byte ('n' node to coordinator, 'c' coordinator to node), '\n'
 * and the line as it would be without the mac field (its bytes up to ,"mac" and a closing '}').
 *   coordinator, on connect  {"v":1,"type":"hello","nonce":"<32 hex>"}
 *   node                     {"v":1,"type":"report","nonce":<hello's>,"seq":k,"rank":r,
 *                             "ckpt":"<name>","step":s,"message":"<commit title>",
 *                             "files":[{"path":..,"size":..,"sha256":..,"via":"lfs|xet|hub"}]}
 *   coordinator              {"v":1,"type":"reply","nonce":..,"seq":k,"ok":true,"commit":"<oid>"}
 *                            {"v":1,"type":"reply","nonce":..,"seq":k,"ok":false,
 *                             "error":{"code":"<COORD_ERR_*>","message":".."}}
 * The nonce is fresh for each connection and seq grows by at least 1 with each report, so a line
 * replayed on the same or another connection is refused. A report is answered once the
 * checkpoint's single commit is made (or failed): that may take as long as the slowest node.
 */
#ifndef CKPT_COORD_PROTO_H
#define CKPT_COORD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;

#define COORD_PROTO_VERSION 1
#define COORD_MAC_LABEL "ckptpush-coord-v1"
/* One line, '\n' included: a report of UPLOAD_FILES_MAX files fits. */
#define COORD_MAX_MESSAGE (16u * 1024 * 1024)
#define COORD_MAX_NODES 4096
#define COORD_NONCE_HEX 32
#define COORD_MAC_HEX 64
/* The shortest job secret taken, in bytes. */
#define COORD_SECRET_MIN 16
#define COORD_SECRET_MAX 4096
#define COORD_DEFAULT_PORT 29555
#define COORD_MAX_NAME 256

#define COORD_TYPE_HELLO "hello"
#define COORD_TYPE_REPORT "report"
#define COORD_TYPE_REPLY "reply"

#define COORD_DIR_NODE 'n'
#define COORD_DIR_COORD 'c'

/* error.code of a refused report */
#define COORD_ERR_AUTH "auth"         /* bad mac, nonce or seq: the connection is closed */
#define COORD_ERR_BAD "bad-report"    /* the report is malformed */
#define COORD_ERR_CONFLICT "conflict" /* two nodes gave one path different content */
#define COORD_ERR_FAILED "failed"     /* the commit failed; the node reports again later */

struct coord_file {
    const char *path;
    const char *sha256;
    uint64_t size;
    const char *via;
};

/* A report, pointing into the cJSON it was parsed from. */
struct coord_report {
    long rank;
    uint64_t seq;
    const char *ckpt;
    int64_t step;
    const char *message;
    struct coord_file *files; /* malloc'd; the caller frees it */
    size_t n_files;
};

/* HMAC-SHA256 of label, dir, '\n', body[0..len) as 64 lowercase hex (+ NUL). */
void coord_mac(const unsigned char *key, size_t key_len, char dir, const char *body, size_t len,
               char hex[COORD_MAC_HEX + 1]);
/* body: a JSON object's text with at least one member (it ends with '}'). Returns a malloc'd line
 * ending with the mac field and '\n', or NULL (out of memory, or body not an object's text). */
char *coord_seal(const unsigned char *key, size_t key_len, char dir, const char *body,
                 size_t *ret_len);
/* Checks line[0..len) (a trailing '\r' cut) sent in direction dir: the mac field is where
 * coord_seal puts it and matches (constant-time compare). On success returns 0 with *ret_json
 * parsed (the caller frees it), its "v" checked. Else -EINVAL or -EACCES (bad or missing mac)
 * with why set. */
int coord_open(const unsigned char *key, size_t key_len, char dir, char *line, size_t len,
               struct cJSON **ret_json, char *why, size_t why_size);
/* The "type" string of an opened message, or NULL. */
const char *coord_msg_type(const struct cJSON *json);
/* Checks nonce (must equal want) and seq (must be > last) of a node's or a reply's message.
 * Returns 0 with *ret_seq, or -EACCES with why set. */
int coord_check_fresh(const struct cJSON *json, const char *want_nonce, uint64_t last_seq,
                      uint64_t *ret_seq, char *why, size_t why_size);
/* Parses a report (after coord_open and coord_check_fresh): rank in [0, nodes), a checkpoint name
 * (1..COORD_MAX_NAME bytes, no control characters, no "..", not absolute), step, message, files
 * (at least one, each with a relative path, size, lowercase sha256 and via). Returns 0, or -EINVAL
 * with why set naming the field. */
int coord_parse_report(const struct cJSON *json, long nodes, struct coord_report *ret, char *why,
                       size_t why_size);
/* Fills hex with COORD_NONCE_HEX random hex digits. Returns 0 or -EIO. */
int coord_new_nonce(char hex[COORD_NONCE_HEX + 1]);

#endif
