/* ipc_proto.h - the control protocol of ckptpushd, shared by the daemon (ipc.c, control.c) and
 * every client (client/ckptpush.c; client/python mirrors it): version, message and error names,
 * limits, the default socket path rule and the exit codes of `ckptpush`. Bump IPC_PROTO_VERSION
 * when a message changes incompatibly. No state, no libuv: callable from any thread.
 *
 * Wire format: one JSON object per line ('\n'), UTF-8, on a Unix stream socket (mode 0600).
 *   request  {"v":1,"id":<int|string, optional>,"type":"<IPC_TYPE_*>",...fields}
 *   reply    {"v":1,"id":<same>,"ok":true,...fields}
 *            {"v":1,"id":<same>,"ok":false,"error":{"code":"<IPC_ERR_*>","message":"..."}}
 *   event    {"v":1,"event":"<IPC_EVENT_*>",...fields}   (only after "subscribe")
 * Replies come in request order except deferred ones (final with wait, flush), which come when
 * done; match them by id. A wrong "v" is answered with bad-version, then the server closes.
 */
#ifndef CKPT_IPC_PROTO_H
#define CKPT_IPC_PROTO_H

#include <stddef.h>

#define IPC_PROTO_VERSION 1

/* A request line, '\n' included. Longer lines get too-large and are skipped to their end. */
#define IPC_MAX_MESSAGE (64 * 1024)
/* A reply or event line the server sends; clients must accept lines this long. */
#define IPC_MAX_REPLY (1024 * 1024)
#define IPC_MAX_CLIENTS 64
/* Bytes waiting for one client that does not read; past this it is disconnected. */
#define IPC_MAX_QUEUED_OUTPUT (1024 * 1024)
/* A client-chosen string id. */
#define IPC_MAX_ID 256
/* flush: default and largest "timeout_s". */
#define IPC_FLUSH_DEFAULT_S 600
#define IPC_FLUSH_MAX_S 86400
/* A job name after sanitizing (see ipc_proto_job_name). */
#define IPC_MAX_JOB 64
/* push: the longest "message" (commit title), in bytes. The Hub shows a title on one line and
 * git tools cut long ones; transformers' own titles are well under this. */
#define IPC_MAX_PUSH_MESSAGE 200

/* Request types ("type"). */
#define IPC_TYPE_STATUS "status"       /* -> {"daemon":{...},"checkpoints":[...]} */
#define IPC_TYPE_PUSH "push"           /* "path", "message": string -> {"path"} */
#define IPC_TYPE_FINAL "final"         /* "metrics","hparams": object, "wait": bool */
#define IPC_TYPE_PAUSE "pause"         /* -> {"paused":true} */
#define IPC_TYPE_RESUME "resume"       /* -> {"paused":false} */
#define IPC_TYPE_FLUSH "flush"         /* "timeout_s": number -> {} once all is committed */
#define IPC_TYPE_SUBSCRIBE "subscribe" /* -> {"subscribed":true}, then events */
#define IPC_TYPE_SHUTDOWN "shutdown"   /* -> {"shutting_down":true}, then a drain */

/* Events ("event"), as daemon_set_event_sink streams them; fields are one checkpoint as in
 * status's "checkpoints" list. Clients must ignore events they do not know. */
#define IPC_EVENT_SEALED "sealed"       /* queued for pushing */
#define IPC_EVENT_STARTED "started"     /* pinning and hashing */
#define IPC_EVENT_PROGRESS "progress"   /* uploading: bytes_done, rate_bps, eta_s */
#define IPC_EVENT_COMMITTED "committed" /* "commit" holds the commit id */
#define IPC_EVENT_FAILED "failed"       /* "error" says why */
#define IPC_EVENT_SKIPPED "skipped"

/* Error codes ("error.code"). The first group is the client's fault (ckptpush exits 4). */
#define IPC_ERR_BAD_JSON "bad-json"         /* not JSON, or not one object */
#define IPC_ERR_TOO_LARGE "too-large"       /* request line over IPC_MAX_MESSAGE */
#define IPC_ERR_UNKNOWN_TYPE "unknown-type" /* "type" missing or not known */
#define IPC_ERR_BAD_REQUEST "bad-request"   /* a field has the wrong type; message names it */
#define IPC_ERR_BAD_VERSION "bad-version"   /* "v" is not IPC_PROTO_VERSION; then closed */
#define IPC_ERR_FORBIDDEN "forbidden"       /* peer is another user (not root); then closed */
#define IPC_ERR_BUSY "busy"                 /* IPC_MAX_CLIENTS reached; then closed */
#define IPC_ERR_FAILED "failed"             /* the operation failed; "kind" says the class */
#define IPC_ERR_TIMEOUT "timeout"           /* flush deadline passed */
#define IPC_ERR_SHUTTING_DOWN "shutting-down"

/* Exit codes of the `ckptpush` client. */
enum ipc_exit {
    IPC_EXIT_OK = 0,
    IPC_EXIT_FAILED = 1,    /* the daemon answered that the operation failed */
    IPC_EXIT_USAGE = 2,     /* bad command line */
    IPC_EXIT_NO_DAEMON = 3, /* socket missing, nothing listening, or access refused */
    IPC_EXIT_PROTOCOL = 4,  /* unexpected, malformed or refused message */
    IPC_EXIT_TIMEOUT = 5,   /* --timeout ran out, or flush's deadline passed */
};

/* Checks push's "message" (a commit title): not empty, at most IPC_MAX_PUSH_MESSAGE bytes, no
 * control characters (a newline would make it a title plus a description). Returns 0, or -EINVAL
 * with why set to what is wrong, a phrase that follows "field 'message' of 'push' ". */
int ipc_proto_check_push_message(const char *message, char *why, size_t why_size);
/* The job name: the last path component of name_or_dir (trailing '/' ignored), each byte outside
 * [A-Za-z0-9._-] replaced by '_', a leading '.' replaced by '_', cut to IPC_MAX_JOB bytes; empty
 * becomes "default". Returns 0, or -EINVAL when dst_size <= IPC_MAX_JOB. */
int ipc_proto_job_name(char *dst, size_t dst_size, const char *name_or_dir);
/* The socket directory: $XDG_RUNTIME_DIR/ckptpush when XDG_RUNTIME_DIR is an absolute path,
 * else /tmp/ckptpush-<euid>. Returns 0 or -ENAMETOOLONG. */
int ipc_proto_socket_dir(char *dst, size_t dst_size);
/* <socket dir>/<job>.sock, job sanitized by ipc_proto_job_name. Returns 0 or -ENAMETOOLONG when
 * the result does not fit dst or a sockaddr_un. */
int ipc_proto_default_path(char *dst, size_t dst_size, const char *job);

#endif
