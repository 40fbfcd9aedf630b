/* hub.h - the Hugging Face Hub HTTP protocol client (docs/hub-protocol.md): whoami, create repo,
 * preupload, LFS batch, basic and multipart PUTs, multipart completion, commit, head lookup.
 *
 * Owns URL building, request bodies, defensive parsing of answers, and the mapping of HTTP
 * failures to struct ckpt_err. Does not schedule uploads (upload.c does). Loop thread only.
 */
#ifndef CKPT_HUB_H
#define CKPT_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct http;
struct http_xfer;
struct hub;

#define HUB_PREUPLOAD_MAX 100 /* files per preupload call (what js sends) */
#define HUB_BATCH_MAX 100     /* objects per LFS batch call */
#define HUB_PARTS_MAX 10000   /* multipart parts per object (S3) */
#define HUB_REGULAR_MAX (10u * 1024 * 1024)

/* What the LFS batch offers (docs/hub-protocol.md section 8). LFS: basic and multipart only, as
 * before Xet; AUTO adds "xet" and takes it when the Hub answers "transfer":"xet"; XET offers only
 * "xet" and fails the batch when the Hub answers anything else for an object it lacks. */
enum hub_transfer { HUB_TRANSFER_LFS = 0, HUB_TRANSFER_AUTO, HUB_TRANSFER_XET };

struct hub_config {
    const char *endpoint;  /* "https://huggingface.co"; a path prefix is allowed */
    const char *token;     /* may be NULL (anonymous) */
    const char *repo_id;   /* "namespace/name" */
    const char *repo_type; /* "model" (default when NULL), "dataset", "space" */
    const char *revision;  /* branch; "main" when NULL */
    bool private_repo;     /* visibility when ensure_repo creates it */
    enum hub_transfer transfer;
};

/* Every callback gets err == NULL on success. A cancelled operation reports kind CKPT_ERR_IO
 * with code UV_ECANCELED. err and the strings passed are valid only during the call. */
typedef void (*hub_done_cb)(void *ctx, const struct ckpt_err *err);
typedef void (*hub_user_cb)(void *ctx, const struct ckpt_err *err, const char *user);
/* commit_oid: the head of the revision (preupload, head) or the new commit (commit). */
typedef void (*hub_oid_cb)(void *ctx, const struct ckpt_err *err, const char *commit_oid);
typedef void (*hub_etag_cb)(void *ctx, const struct ckpt_err *err, const char *etag);
/* dates: when each commit of the history's first page was made (Unix seconds, newest first). */
typedef void (*hub_dates_cb)(void *ctx, const struct ckpt_err *err, const int64_t *dates, size_t n);
/* Bytes handed to the network for a PUT; negative when a retry restarts a body. Runs inside a
 * curl callback: count only. */
typedef void (*hub_sent_cb)(void *ctx, int64_t delta);

/* Checks and copies cfg. Fails with UV_EINVAL and a message in err (repo id, endpoint, type). */
int hub_init(struct hub **ret, struct http *http, const struct hub_config *cfg,
             struct ckpt_err *err);
/* NULL-safe. Call only when no operation is in flight. */
void hub_free(struct hub *hub);
const char *hub_repo_id(const struct hub *hub);
/* The branch that preupload, batch refs and commits name from now on (NULL or "": main). Only
 * between operations: those in flight keep theirs. */
int hub_set_revision(struct hub *hub, const char *revision);
const char *hub_revision(const struct hub *hub);
/* A rotated token (SIGHUP): used from the next request on. -ENOMEM or 0. */
int hub_set_token(struct hub *hub, const char *token);
const char *hub_endpoint(const struct hub *hub);
enum hub_transfer hub_transfer_mode(const struct hub *hub);
/* The transport the hub sends on, for the Xet session's CAS requests. */
struct http *hub_http(const struct hub *hub);

/* Validates "namespace/name" as the Hub does; fills err naming the id (escaped). */
int hub_validate_repo_id(const char *repo_id, struct ckpt_err *err);

/* An operation in flight; valid until its callback has run. */
struct hub_op;
void hub_op_cancel(struct hub_op *op);

int hub_whoami(struct hub *hub, hub_user_cb cb, void *ctx, struct hub_op **ret_op);
/* POST /api/repos/create; an existing repo (409) is success. */
int hub_ensure_repo(struct hub *hub, hub_done_cb cb, void *ctx, struct hub_op **ret_op);
/* POST /api/T/R/branch/REV from the default branch's head; an existing branch (409) is success. */
int hub_ensure_branch(struct hub *hub, hub_done_cb cb, void *ctx, struct hub_op **ret_op);
/* GET /api/T/R/revision/REV -> sha. */
int hub_get_head(struct hub *hub, hub_oid_cb cb, void *ctx, struct hub_op **ret_op);
/* GET /api/T/R/commits/REV, its first page -> the commits' dates; a revision that does not exist
 * yet has none. */
int hub_commit_dates(struct hub *hub, hub_dates_cb cb, void *ctx, struct hub_op **ret_op);

enum hub_mode { HUB_MODE_UNKNOWN = 0, HUB_MODE_REGULAR, HUB_MODE_LFS };

struct hub_preupload_file {
    const char *path; /* in repo */
    uint64_t size;
    const unsigned char *sample; /* first <= 512 bytes */
    size_t sample_len;
    /* filled on success */
    enum hub_mode mode;
    bool should_ignore;
    char remote_oid[65]; /* "" when the path does not exist at the revision */
};

/* files[0..n) (n <= HUB_PREUPLOAD_MAX) must stay valid until cb; outputs are filled before cb
 * runs with err == NULL. Files missing from the answer are a protocol error. */
int hub_preupload(struct hub *hub, struct hub_preupload_file *files, size_t n, hub_oid_cb cb,
                  void *ctx, struct hub_op **ret_op);

enum hub_lfs_action { HUB_LFS_STORED = 0, HUB_LFS_BASIC, HUB_LFS_MULTIPART, HUB_LFS_XET };

struct hub_lfs_object {
    char oid[65]; /* sha256 hex */
    uint64_t size;
    /* filled on success; release with hub_lfs_object_release */
    enum hub_lfs_action action;
    char *href; /* basic: PUT URL; multipart: completion URL */
    uint64_t chunk_size;
    char **part_urls; /* multipart: n_parts URLs, part i+1 at [i] */
    size_t n_parts;
    int64_t expires_at; /* unix seconds from the answer's expires_in; 0 when not given */
    /* Xet (the answer's X-Xet-* upload headers; NULL / 0 when absent: the session asks the
     * token endpoint). xet_token is a secret: never logged, never journaled. */
    char *xet_cas_url;
    char *xet_token;
    int64_t xet_token_exp; /* unix seconds */
    char *xet_session_id;
};
void hub_lfs_object_release(struct hub_lfs_object *obj);

/* objs[0..n) (n <= HUB_BATCH_MAX) must stay valid until cb. A per-object error in the answer
 * fails the whole call (CKPT_ERR_REJECTED with the Hub's message). */
int hub_lfs_batch(struct hub *hub, struct hub_lfs_object *objs, size_t n, hub_done_cb cb, void *ctx,
                  struct hub_op **ret_op);
/* PUT file bytes [offset, offset+len) to a presigned URL, without Authorization; retried. The
 * etag (verbatim, quotes kept) is "" when the answer has none. */
int hub_lfs_put(struct hub *hub, const char *url, const char *local_path, uint64_t offset,
                uint64_t len, hub_sent_cb sent, hub_etag_cb cb, void *ctx, struct hub_op **ret_op);
/* POST the multipart completion (etags[i] for part i+1), without Authorization; retried. */
int hub_lfs_complete(struct hub *hub, const char *href, const char *oid, const char *const *etags,
                     size_t n_parts, hub_done_cb cb, void *ctx, struct hub_op **ret_op);

/* A Xet write token (GET /api/T/R/xet-write-token/REV). access_token is a secret. */
struct hub_xet_token {
    const char *cas_url;
    const char *access_token;
    int64_t exp; /* unix seconds */
};
typedef void (*hub_xet_token_cb)(void *ctx, const struct ckpt_err *err,
                                 const struct hub_xet_token *token);
/* Retried like every Hub GET; a 404 or 501 means the Hub has no Xet (CKPT_ERR_NOT_FOUND /
 * CKPT_ERR_REJECTED). */
int hub_xet_write_token(struct hub *hub, hub_xet_token_cb cb, void *ctx, struct hub_op **ret_op);

enum hub_commit_kind { HUB_COMMIT_FILE, HUB_COMMIT_LFS, HUB_COMMIT_DELETE };

struct hub_commit_op {
    enum hub_commit_kind kind;
    const char *path;
    const char *oid;     /* LFS: sha256 hex */
    uint64_t size;       /* LFS */
    const void *content; /* FILE: raw bytes, sent base64 */
    size_t content_len;
};

#define HUB_COMMIT_BODY_MAX (256u * 1024 * 1024)

/* One NDJSON commit POST, retried here only after a 429 (refused before it was applied); never
 * after a lost answer or a 5xx, which may hide a commit that landed.
 * parent_commit may be NULL. The body is built before returning; ops may be freed then. Fails at
 * once with UV_E2BIG past HUB_COMMIT_BODY_MAX. A transport failure is CKPT_ERR_NETWORK. */
int hub_commit(struct hub *hub, const char *summary, const char *description,
               const char *parent_commit, const struct hub_commit_op *ops, size_t n, hub_oid_cb cb,
               void *ctx, struct hub_op **ret_op);

#endif
