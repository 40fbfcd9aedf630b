/* control.c - what each control request does: validates field values, calls daemon.h, replies at
 * once or when the daemon calls back (final with wait, flush), and forwards daemon events to
 * subscribers. Framing, envelopes and field types are ipc.c's. Loop thread only.
 */
#include "control.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "daemon.h"
#include "ipc.h"
#include "ipc_proto.h"
#include "log.h"

struct control {
    struct daemon *daemon;
    struct ipc_server *server;
    bool closing;
    void (*close_cb)(void *ctx);
    void *close_ctx;
};

/* A deferred answer; lives until the daemon calls back, which may be after control_close:
 * it holds only the request, which outlives its client and the server. */
struct control_op {
    struct ipc_request *req; /* NULL: nobody waits (final without wait) */
    const char *what;
    char *path; /* push */
};

static int reply_failed(struct ipc_request *req, const struct ckpt_err *err, const char *fallback)
{
    const char *msg = err != NULL && err->msg[0] != '\0' ? err->msg : fallback;
    return ipc_reply_error_kind(req, IPC_ERR_FAILED,
                                err != NULL ? ckpt_err_kind_name(err->kind) : NULL, msg);
}

static void on_final_done(void *ctx, const struct ckpt_err *err, const char *commit_oid)
{
    struct control_op *op = ctx;
    cJSON *out;

    if (op->req != NULL) {
        if (err != NULL && err->kind != CKPT_ERR_NONE) {
            reply_failed(op->req, err, "final push failed");
        } else {
            out = cJSON_CreateObject();
            cJSON_AddBoolToObject(out, "committed", true);
            if (commit_oid != NULL)
                cJSON_AddStringToObject(out, "commit", commit_oid);
            else
                cJSON_AddNullToObject(out, "commit");
            ipc_reply(op->req, out);
        }
    }
    free(op);
}

static void on_flush_done(void *ctx, const struct ckpt_err *err, const char *commit_oid)
{
    struct control_op *op = ctx;
    cJSON *out;

    (void)commit_oid;
    if (err != NULL && err->kind != CKPT_ERR_NONE) {
        /* The daemon marks a passed deadline with -ETIMEDOUT; anything else is a failed push. */
        bool late = err->code == -ETIMEDOUT;
        ipc_reply_error_kind(op->req, late ? IPC_ERR_TIMEOUT : IPC_ERR_FAILED,
                             ckpt_err_kind_name(err->kind),
                             err->msg[0] != '\0' ? err->msg : "flush did not complete");
    } else {
        out = cJSON_CreateObject();
        cJSON_AddBoolToObject(out, "flushed", true);
        ipc_reply(op->req, out);
    }
    free(op);
}

static void do_status(struct control *c, struct ipc_request *req)
{
    cJSON *out = cJSON_CreateObject();
    int r;

    if (out == NULL) {
        ipc_reply_error_kind(req, IPC_ERR_FAILED, "io", "out of memory");
        return;
    }
    r = daemon_status(c->daemon, out);
    if (r < 0) {
        char msg[128];
        cJSON_Delete(out);
        snprintf(msg, sizeof(msg), "cannot gather status: %s", strerror(-r));
        ipc_reply_error(req, IPC_ERR_FAILED, msg);
        return;
    }
    ipc_reply(req, out);
}

static void on_push_queued(void *ctx, const struct ckpt_err *err, const char *commit_oid)
{
    struct control_op *op = ctx;
    cJSON *out;

    (void)commit_oid;
    if (err != NULL && err->kind != CKPT_ERR_NONE) {
        reply_failed(op->req, err, "push failed");
    } else {
        out = cJSON_CreateObject();
        cJSON_AddStringToObject(out, "path", op->path);
        cJSON_AddBoolToObject(out, "queued", true);
        ipc_reply(op->req, out);
    }
    free(op->path);
    free(op);
}

static void do_push(struct control *c, struct ipc_request *req)
{
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(ipc_request_json(req), "path");
    /* ipc.c checked it: absent, null, or a valid title */
    const cJSON *message = cJSON_GetObjectItemCaseSensitive(ipc_request_json(req), "message");
    struct control_op *op;
    int r;

    if (path->valuestring[0] == '\0') {
        ipc_reply_error(req, IPC_ERR_BAD_REQUEST, "field 'path' of 'push' must not be empty");
        return;
    }
    if ((op = calloc(1, sizeof(*op))) == NULL || (op->path = strdup(path->valuestring)) == NULL) {
        free(op);
        ipc_reply_error_kind(req, IPC_ERR_FAILED, "io", "out of memory");
        return;
    }
    op->what = "push";
    op->req = req;
    log_info("ipc-push", "path='%s'", path->valuestring);
    if ((r = daemon_push_path(c->daemon, path->valuestring,
                              cJSON_IsString(message) ? message->valuestring : NULL, on_push_queued,
                              op)) < 0) {
        char msg[PATH_MAX + 64];
        snprintf(msg, sizeof(msg), "cannot push '%s': %s", op->path, strerror(-r));
        ipc_reply_error(req, IPC_ERR_FAILED, msg);
        free(op->path);
        free(op);
    }
}

static void do_final(struct control *c, struct ipc_request *req)
{
    const cJSON *json = ipc_request_json(req);
    const cJSON *metrics = cJSON_GetObjectItemCaseSensitive(json, "metrics");
    const cJSON *hparams = cJSON_GetObjectItemCaseSensitive(json, "hparams");
    bool wait = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "wait"));
    struct control_op *op = calloc(1, sizeof(*op));
    cJSON *out;
    int r;

    if (op == NULL) {
        ipc_reply_error_kind(req, IPC_ERR_FAILED, "io", "out of memory");
        return;
    }
    op->what = "final";
    op->req = wait ? req : NULL;
    r = daemon_final(c->daemon, cJSON_IsObject(metrics) ? metrics : NULL,
                     cJSON_IsObject(hparams) ? hparams : NULL, on_final_done, op);
    if (r < 0) {
        char msg[128];
        free(op);
        snprintf(msg, sizeof(msg), "cannot start the final push: %s", strerror(-r));
        ipc_reply_error(req, IPC_ERR_FAILED, msg);
        return;
    }
    log_info("ipc-final", "wait=%s", wait ? "yes" : "no");
    if (!wait) {
        out = cJSON_CreateObject();
        cJSON_AddBoolToObject(out, "started", true);
        ipc_reply(req, out);
    }
}

static void do_flush(struct control *c, struct ipc_request *req)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(ipc_request_json(req), "timeout_s");
    unsigned deadline = IPC_FLUSH_DEFAULT_S;
    struct control_op *op;
    char msg[128];
    int r;

    if (cJSON_IsNumber(t)) {
        if (t->valuedouble < 0 || t->valuedouble > IPC_FLUSH_MAX_S) {
            snprintf(msg, sizeof(msg), "field 'timeout_s' of 'flush' must be between 0 and %d",
                     IPC_FLUSH_MAX_S);
            ipc_reply_error(req, IPC_ERR_BAD_REQUEST, msg);
            return;
        }
        deadline = (unsigned)t->valuedouble;
        if ((double)deadline < t->valuedouble)
            deadline++; /* round up: never a shorter wait than asked */
    }
    op = calloc(1, sizeof(*op));
    if (op == NULL) {
        ipc_reply_error_kind(req, IPC_ERR_FAILED, "io", "out of memory");
        return;
    }
    op->what = "flush";
    op->req = req;
    r = daemon_flush(c->daemon, deadline, on_flush_done, op);
    if (r < 0) {
        free(op);
        snprintf(msg, sizeof(msg), "cannot flush: %s", strerror(-r));
        ipc_reply_error(req, IPC_ERR_FAILED, msg);
    }
}

static void reply_bool(struct ipc_request *req, const char *key, bool value)
{
    cJSON *out = cJSON_CreateObject();
    cJSON_AddBoolToObject(out, key, value);
    ipc_reply(req, out);
}

static void on_request(void *ctx, struct ipc_request *req)
{
    struct control *c = ctx;
    const char *type = ipc_request_type(req);

    if (c->closing) {
        ipc_reply_error(req, IPC_ERR_SHUTTING_DOWN, "the daemon is shutting down");
    } else if (strcmp(type, IPC_TYPE_STATUS) == 0) {
        do_status(c, req);
    } else if (strcmp(type, IPC_TYPE_PUSH) == 0) {
        do_push(c, req);
    } else if (strcmp(type, IPC_TYPE_FINAL) == 0) {
        do_final(c, req);
    } else if (strcmp(type, IPC_TYPE_PAUSE) == 0) {
        daemon_pause(c->daemon);
        reply_bool(req, "paused", true);
    } else if (strcmp(type, IPC_TYPE_RESUME) == 0) {
        daemon_resume(c->daemon);
        reply_bool(req, "paused", false);
    } else if (strcmp(type, IPC_TYPE_FLUSH) == 0) {
        do_flush(c, req);
    } else if (strcmp(type, IPC_TYPE_SUBSCRIBE) == 0) {
        ipc_request_subscribe(req);
        reply_bool(req, "subscribed", true);
    } else if (strcmp(type, IPC_TYPE_SHUTDOWN) == 0) {
        log_info("ipc-shutdown", "reason='asked over the control socket'");
        /* Answer first: the drain closes this server, and the reply is short enough to be
         * written to the socket at once. */
        reply_bool(req, "shutting_down", true);
        daemon_request_shutdown(c->daemon);
    } else {
        ipc_reply_error(req, IPC_ERR_UNKNOWN_TYPE, "request type not handled");
    }
}

static void on_event(void *ctx, const char *event, const struct cJSON *fields)
{
    struct control *c = ctx;

    if (!c->closing)
        ipc_broadcast_event(c->server, event, fields);
}

int control_start(struct control **ret, uv_loop_t *loop, struct daemon *d, const char *path,
                  struct ckpt_err *err)
{
    struct control *c = calloc(1, sizeof(*c));
    struct ipc_handler h;
    int r;

    if (c == NULL)
        return ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "out of memory");
    c->daemon = d;
    h.ctx = c;
    h.on_request = on_request;
    r = ipc_server_start(&c->server, loop, path, &h, err);
    if (r < 0) {
        free(c);
        return r;
    }
    daemon_set_event_sink(d, on_event, c);
    *ret = c;
    return 0;
}

static void on_server_closed(void *ctx)
{
    struct control *c = ctx;
    void (*cb)(void *) = c->close_cb;
    void *cb_ctx = c->close_ctx;

    free(c);
    if (cb != NULL)
        cb(cb_ctx);
}

void control_close(struct control *c, void (*cb)(void *ctx), void *ctx)
{
    if (c == NULL) {
        if (cb != NULL)
            cb(ctx);
        return;
    }
    if (c->closing)
        return;
    c->closing = true;
    c->close_cb = cb;
    c->close_ctx = ctx;
    daemon_set_event_sink(c->daemon, NULL, NULL);
    ipc_server_close(c->server, on_server_closed, c);
}
