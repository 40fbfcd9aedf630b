/* ipc.h - the control socket server: a Unix stream socket on the loop, peer credentials, line
 * framing, JSON envelope checks (version, id, type, field types), bounded output per client, and
 * event broadcast to subscribers. What a request does is the handler's business (control.c).
 * Loop thread only.
 */
#ifndef CKPT_IPC_H
#define CKPT_IPC_H

#include <stdbool.h>
#include <uv.h>

#include "err.h"

struct cJSON;
struct ipc_server;
/* One request: its id, type and parsed JSON. Handed to on_request, then owned by the handler until
 * it calls ipc_reply or ipc_reply_error exactly once (at once or later), which frees it. When the
 * client went away meanwhile, the reply is dropped: a request never dangles. */
struct ipc_request;

struct ipc_handler {
    void *ctx;
    /* The request's envelope and field types are already checked (see ipc_proto.h). */
    void (*on_request)(void *ctx, struct ipc_request *req);
};

/* Binds path (parent directory created 0700 if missing; refused when not ours or writable by
 * others; a stale socket nobody answers on is replaced), socket mode 0600, and listens. Fails at
 * once with a negative errno and a sentence in err. */
int ipc_server_start(struct ipc_server **ret, uv_loop_t *loop, const char *path,
                     const struct ipc_handler *h, struct ckpt_err *err);
/* Disconnects every client, closes the socket, unlinks its path if still ours; cb(ctx) once all
 * handles are closed and the server is freed. Pending requests stay valid (replies dropped). */
void ipc_server_close(struct ipc_server *s, void (*cb)(void *ctx), void *ctx);
/* Sends {"v":1,"event":event,...fields} to each subscribed client; fields may be NULL. Returns
 * the number of clients it was queued for, or a negative errno. */
int ipc_broadcast_event(struct ipc_server *s, const char *event, const struct cJSON *fields);
unsigned ipc_server_client_count(const struct ipc_server *s);

const char *ipc_request_type(const struct ipc_request *req);
/* The whole request object (read only; valid until the reply). */
const struct cJSON *ipc_request_json(const struct ipc_request *req);
/* The client is still connected. */
bool ipc_request_connected(const struct ipc_request *req);
/* Marks the request's client as an event subscriber. -ENOTCONN when it went away. */
int ipc_request_subscribe(struct ipc_request *req);

/* {"v":1,"id":..,"ok":true,...fields}; fields (an object or NULL) is consumed. Frees req. */
int ipc_reply(struct ipc_request *req, struct cJSON *fields);
/* {"v":1,"id":..,"ok":false,"error":{"code":code,"message":message}}. Frees req. */
int ipc_reply_error(struct ipc_request *req, const char *code, const char *message);
/* Same, with "error.kind" (e.g. ckpt_err_kind_name) for operation failures. Frees req. */
int ipc_reply_error_kind(struct ipc_request *req, const char *code, const char *kind,
                         const char *message);

/* ---- pure parsing: no loop, no I/O, no logging; any thread (the fuzzer's entry points) ---- */

/* Line framing over a buffer of cap bytes (0: IPC_MAX_MESSAGE): read into buf + len, add to
 * len, then take lines with ipc_framer_next and call ipc_framer_compact once none is left. */
struct ipc_framer {
    char *buf;       /* cap bytes */
    size_t cap;      /* 0: IPC_MAX_MESSAGE (the control socket); the coordinator's is larger */
    size_t len;      /* bytes held; < cap between reads */
    size_t start;    /* where the next line begins */
    bool discarding; /* skipping the rest of an oversized line */
};

/* The next complete line, its '\n' replaced by a NUL: returns true with *ret_line and *ret_len
 * (valid until the next compact), false when no complete line is held. */
bool ipc_framer_next(struct ipc_framer *f, char **ret_line, size_t *ret_len);
/* Moves a partial line to the front. Returns -EMSGSIZE when it fills the buffer: it is dropped,
 * and its rest, up to the next '\n', is skipped. */
int ipc_framer_compact(struct ipc_framer *f);
/* Drops every byte held (a client that is going away). */
void ipc_framer_reset(struct ipc_framer *f);

/* One request line checked: envelope, id, version, type and field types (see ipc_proto.h). */
struct ipc_parsed {
    struct cJSON *json;     /* the request; the caller frees it (also after a failure) */
    const struct cJSON *id; /* in json; NULL when absent, null, or itself the fault */
    const char *type;       /* on success: one of IPC_TYPE_* (static) */
    const char *code;       /* on failure: IPC_ERR_* to answer */
    bool close;             /* on failure: answer, then close the connection */
    char message[256];      /* on failure: the sentence to answer */
};

/* Parses line[0..len) (NUL-terminated at len; a trailing '\r' is cut in place). Returns 1 with a
 * request, 0 for a blank line (nothing to answer), or -EINVAL with code and message to answer
 * (with id when known). The caller frees ret->json in every case. */
int ipc_parse_request(char *line, size_t len, struct ipc_parsed *ret);

#endif
