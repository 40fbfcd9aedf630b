/* ipc.c - the control socket server of ipc.h: binds and guards the socket path, accepts clients
 * (SO_PEERCRED: same user or root), frames lines with a hard maximum, checks the JSON envelope
 * and field types, hands requests to the handler and queues replies and events with a bounded
 * output per client. Does not know what a request does. Loop thread only.
 */
#include "ipc.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ipc_proto.h"
#include "log.h"

#define IPC_BACKLOG 16

struct ipc_client;

struct ipc_request {
    struct ipc_request *prev, *next; /* in client->requests while the client is connected */
    struct ipc_client *client;       /* NULL once the client went away: replies are dropped */
    cJSON *json;
    cJSON *id; /* a copy, or NULL */
    const char *type;
};

struct ipc_write {
    uv_write_t req;
    struct ipc_client *client;
    size_t len;
    char data[];
};

struct ipc_client {
    struct ipc_client *prev, *next;
    struct ipc_server *server;
    uv_pipe_t pipe;
    uv_shutdown_t shutdown_req;
    struct ipc_request *requests;
    struct ipc_framer in; /* owns a buffer of IPC_MAX_MESSAGE bytes */
    uint64_t serial;
    unsigned uid;
    int pid;
    bool subscriber;
    bool eof;      /* the peer stopped sending; close once pending requests are answered */
    bool draining; /* no more input; closing after the queued output is written */
    bool closing;  /* uv_close called: the close callback frees */
};

struct ipc_server {
    uv_loop_t *loop;
    uv_pipe_t pipe;
    struct ipc_handler handler;
    struct ipc_client *clients; /* including closing ones, until their close callback */
    unsigned active;            /* clients not yet closing */
    uint64_t next_serial;
    char *path;
    dev_t dev;
    ino_t ino;
    bool bound;
    bool closing;
    bool pipe_closed;
    void (*close_cb)(void *ctx);
    void *close_ctx;
};

/* ---- field rules: what each request type may carry ----------------------------------------- */
enum field_kind { FIELD_STRING, FIELD_OBJECT, FIELD_BOOL, FIELD_NUMBER };

struct field_rule {
    const char *name;
    enum field_kind kind;
    bool required;
    /* A string's value rule beyond its type (ipc_proto.h), or NULL. */
    int (*check_string)(const char *value, char *why, size_t why_size);
};

struct type_rule {
    const char *type;
    struct field_rule fields[3];
};

static const struct type_rule type_rules[] = {
    {IPC_TYPE_STATUS, {{NULL, 0, 0, NULL}}},
    {IPC_TYPE_PUSH,
     {{"path", FIELD_STRING, true, NULL},
      {"message", FIELD_STRING, false, ipc_proto_check_push_message}}},
    {IPC_TYPE_FINAL,
     {{"metrics", FIELD_OBJECT, false, NULL},
      {"hparams", FIELD_OBJECT, false, NULL},
      {"wait", FIELD_BOOL, false, NULL}}},
    {IPC_TYPE_PAUSE, {{NULL, 0, 0, NULL}}},
    {IPC_TYPE_RESUME, {{NULL, 0, 0, NULL}}},
    {IPC_TYPE_FLUSH, {{"timeout_s", FIELD_NUMBER, false, NULL}}},
    {IPC_TYPE_SUBSCRIBE, {{NULL, 0, 0, NULL}}},
    {IPC_TYPE_SHUTDOWN, {{NULL, 0, 0, NULL}}},
};

static const char *const field_kind_names[] = {
    [FIELD_STRING] = "a string",
    [FIELD_OBJECT] = "an object",
    [FIELD_BOOL] = "a boolean",
    [FIELD_NUMBER] = "a number",
};

static bool field_matches(const cJSON *item, enum field_kind kind)
{
    switch (kind) {
    case FIELD_STRING:
        return cJSON_IsString(item);
    case FIELD_OBJECT:
        return cJSON_IsObject(item);
    case FIELD_BOOL:
        return cJSON_IsBool(item);
    case FIELD_NUMBER:
        return cJSON_IsNumber(item) && isfinite(item->valuedouble);
    }
    return false;
}

/* ---- output -------------------------------------------------------------------------------- */
static void client_teardown(struct ipc_client *c, const char *why);
static void client_drain(struct ipc_client *c, const char *why);
static void server_maybe_done(struct ipc_server *s);

static void on_write(uv_write_t *req, int status)
{
    struct ipc_write *w = (struct ipc_write *)req;
    struct ipc_client *c = w->client;

    free(w);
    /* Write callbacks run before the close callback, so c is still allocated. */
    if (status < 0 && status != UV_ECANCELED && !c->closing) {
        log_debug("ipc-write-failed", "client=%llu error=%s", (unsigned long long)c->serial,
                  uv_err_name(status));
        client_teardown(c, "write failed");
    }
}

/* Queues one line (data has no '\n'; it is added). A client whose queue would pass the limit is
 * disconnected rather than buffered without end or waited for. */
static int client_send(struct ipc_client *c, const char *data, size_t len)
{
    struct ipc_write *w;
    uv_buf_t buf;
    int r;

    if (c->closing)
        return -ENOTCONN;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) + len + 1 > IPC_MAX_QUEUED_OUTPUT) {
        log_warn("ipc-client-slow",
                 "client=%llu pid=%d queued=%zu limit=%d reason='not reading, disconnecting'",
                 (unsigned long long)c->serial, c->pid,
                 uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe), IPC_MAX_QUEUED_OUTPUT);
        client_teardown(c, "output queue full");
        return -ENOBUFS;
    }
    w = malloc(sizeof(*w) + len + 1);
    if (w == NULL) {
        client_teardown(c, "out of memory");
        return -ENOMEM;
    }
    w->client = c;
    w->len = len + 1;
    memcpy(w->data, data, len);
    w->data[len] = '\n';
    buf = uv_buf_init(w->data, (unsigned)w->len);
    r = uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_write);
    if (r < 0) {
        free(w);
        client_teardown(c, "write failed");
        return r;
    }
    return 0;
}

/* {"v":1,"id":id} (id NULL -> null). */
static cJSON *envelope(const cJSON *id)
{
    cJSON *o = cJSON_CreateObject();

    if (o == NULL)
        return NULL;
    cJSON_AddNumberToObject(o, "v", IPC_PROTO_VERSION);
    if (id != NULL)
        cJSON_AddItemToObject(o, "id", cJSON_Duplicate(id, true));
    else
        cJSON_AddNullToObject(o, "id");
    return o;
}

static cJSON *error_object(const cJSON *id, const char *code, const char *kind, const char *msg)
{
    cJSON *o = envelope(id), *e;

    if (o == NULL)
        return NULL;
    cJSON_AddFalseToObject(o, "ok");
    e = cJSON_AddObjectToObject(o, "error");
    if (e == NULL) {
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", msg != NULL ? msg : "");
    if (kind != NULL)
        cJSON_AddStringToObject(e, "kind", kind);
    return o;
}

/* Serializes and queues obj (not consumed). Lines over IPC_MAX_REPLY are refused. */
static int client_send_json(struct ipc_client *c, const cJSON *obj)
{
    char *text = cJSON_PrintUnformatted(obj);
    size_t len;
    int r;

    if (text == NULL)
        return -ENOMEM;
    len = strlen(text);
    if (len + 1 > IPC_MAX_REPLY)
        r = -EMSGSIZE;
    else
        r = client_send(c, text, len);
    cJSON_free(text);
    return r;
}

static int client_send_error(struct ipc_client *c, const cJSON *id, const char *code,
                             const char *kind, const char *msg)
{
    cJSON *o = error_object(id, code, kind, msg);
    int r;

    if (o == NULL)
        return -ENOMEM;
    r = client_send_json(c, o);
    cJSON_Delete(o);
    return r;
}

/* ---- requests ------------------------------------------------------------------------------ */
static void request_unlink(struct ipc_request *req)
{
    struct ipc_client *c = req->client;

    if (c == NULL)
        return;
    if (req->prev != NULL)
        req->prev->next = req->next;
    else
        c->requests = req->next;
    if (req->next != NULL)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
    req->client = NULL;
}

static void request_free(struct ipc_request *req)
{
    request_unlink(req);
    cJSON_Delete(req->json);
    cJSON_Delete(req->id);
    free(req);
}

const char *ipc_request_type(const struct ipc_request *req)
{
    return req->type;
}

const struct cJSON *ipc_request_json(const struct ipc_request *req)
{
    return req->json;
}

bool ipc_request_connected(const struct ipc_request *req)
{
    return req->client != NULL && !req->client->closing;
}

int ipc_request_subscribe(struct ipc_request *req)
{
    if (!ipc_request_connected(req))
        return -ENOTCONN;
    req->client->subscriber = true;
    return 0;
}

/* After a reply: a client that stopped sending is closed once nothing is left to answer. */
static void request_done(struct ipc_request *req)
{
    struct ipc_client *c = req->client;

    request_free(req);
    if (c != NULL && c->eof && c->requests == NULL)
        client_drain(c, "end of input");
}

int ipc_reply(struct ipc_request *req, struct cJSON *fields)
{
    struct ipc_client *c = req->client;
    cJSON *o, *child;
    int r;

    if (c == NULL || c->closing) {
        cJSON_Delete(fields);
        request_done(req);
        return -ENOTCONN;
    }
    o = envelope(req->id);
    if (o == NULL) {
        cJSON_Delete(fields);
        request_done(req);
        return -ENOMEM;
    }
    cJSON_AddTrueToObject(o, "ok");
    while (fields != NULL && cJSON_IsObject(fields) && (child = fields->child) != NULL) {
        cJSON_DetachItemViaPointer(fields, child);
        if (child->string == NULL || strcmp(child->string, "v") == 0 ||
            strcmp(child->string, "id") == 0 || strcmp(child->string, "ok") == 0) {
            cJSON_Delete(child);
            continue;
        }
        cJSON_AddItemToObject(o, child->string, child);
    }
    cJSON_Delete(fields);
    r = client_send_json(c, o);
    cJSON_Delete(o);
    if (r == -EMSGSIZE) {
        char msg[128];
        snprintf(msg, sizeof(msg), "reply is longer than %d bytes", IPC_MAX_REPLY);
        r = client_send_error(c, req->id, IPC_ERR_TOO_LARGE, NULL, msg);
    }
    request_done(req);
    return r;
}

int ipc_reply_error_kind(struct ipc_request *req, const char *code, const char *kind,
                         const char *message)
{
    struct ipc_client *c = req->client;
    int r = -ENOTCONN;

    if (c != NULL && !c->closing)
        r = client_send_error(c, req->id, code, kind, message);
    request_done(req);
    return r;
}

int ipc_reply_error(struct ipc_request *req, const char *code, const char *message)
{
    return ipc_reply_error_kind(req, code, NULL, message);
}

/* ---- input --------------------------------------------------------------------------------- */
static bool id_valid(const cJSON *id)
{
    /* Integral and exact in a double; no libm (ckptcore does not link it). */
    if (cJSON_IsNumber(id))
        return id->valuedouble >= -9007199254740992.0 && id->valuedouble <= 9007199254740992.0 &&
               (double)(long long)id->valuedouble == id->valuedouble;
    if (cJSON_IsString(id))
        return strlen(id->valuestring) <= IPC_MAX_ID;
    return false;
}

/* Checks the envelope and field types; on failure fills code and message. */
static bool request_check(const cJSON *json, struct ipc_parsed *ret)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, "v");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(json, "type");
    char *msg = ret->message;
    size_t size = sizeof(ret->message);

    if (!cJSON_IsNumber(v) || v->valuedouble != IPC_PROTO_VERSION) {
        if (v == NULL)
            snprintf(msg, size, "request has no protocol version 'v'; server speaks %d",
                     IPC_PROTO_VERSION);
        else if (cJSON_IsNumber(v))
            snprintf(msg, size, "protocol version %g is not supported; server speaks %d",
                     v->valuedouble, IPC_PROTO_VERSION);
        else
            snprintf(msg, size, "protocol version 'v' is not a number; server speaks %d",
                     IPC_PROTO_VERSION);
        ret->code = IPC_ERR_BAD_VERSION;
        ret->close = true;
        return false;
    }
    if (!cJSON_IsString(type)) {
        ret->code = IPC_ERR_UNKNOWN_TYPE;
        snprintf(msg, size, "%s",
                 type == NULL ? "request has no 'type'" : "'type' is not a string");
        return false;
    }
    for (size_t i = 0; i < sizeof(type_rules) / sizeof(type_rules[0]); i++) {
        const struct type_rule *rule = &type_rules[i];
        if (strcmp(rule->type, type->valuestring) != 0)
            continue;
        for (size_t f = 0; f < sizeof(rule->fields) / sizeof(rule->fields[0]); f++) {
            const struct field_rule *fr = &rule->fields[f];
            const cJSON *item;
            if (fr->name == NULL)
                break;
            item = cJSON_GetObjectItemCaseSensitive(json, fr->name);
            if ((item == NULL || cJSON_IsNull(item)) && !fr->required)
                continue;
            if (item == NULL || !field_matches(item, fr->kind)) {
                snprintf(msg, size, "field '%s' of '%s' %s %s", fr->name, rule->type,
                         item == NULL ? "is missing; it must be" : "must be",
                         field_kind_names[fr->kind]);
                ret->code = IPC_ERR_BAD_REQUEST;
                return false;
            }
            if (fr->check_string != NULL) {
                char why[160];
                if (fr->check_string(item->valuestring, why, sizeof(why)) < 0) {
                    snprintf(msg, size, "field '%s' of '%s' %s", fr->name, rule->type, why);
                    ret->code = IPC_ERR_BAD_REQUEST;
                    return false;
                }
            }
        }
        ret->type = rule->type;
        return true;
    }
    snprintf(msg, size, "unknown request type '%.64s'", type->valuestring);
    ret->code = IPC_ERR_UNKNOWN_TYPE;
    return false;
}

/* cJSON turns an escaped NUL into a real one and so cuts the string there: "a\u0000b" would
 * reach the handler as "a", a different value from the one sent. Only valid JSON comes here, where
 * every backslash starts an escape, so no string tracking is needed. */
static bool has_escaped_nul(const char *line, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (line[i] != '\\')
            continue;
        if (line[i + 1] == 'u' && i + 6 <= len && memcmp(line + i + 2, "0000", 4) == 0)
            return true;
        i++; /* the escaped character: "\\" must not start another escape */
    }
    return false;
}

int ipc_parse_request(char *line, size_t len, struct ipc_parsed *ret)
{
    const char *end = NULL;
    const cJSON *id;

    memset(ret, 0, sizeof(*ret));
    if (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    if (len == 0)
        return 0;
    ret->code = IPC_ERR_BAD_JSON;
    if (memchr(line, '\0', len) != NULL) {
        snprintf(ret->message, sizeof(ret->message), "request contains a NUL byte");
        return -EINVAL;
    }
    ret->json = cJSON_ParseWithOpts(line, &end, true);
    if (ret->json == NULL || !cJSON_IsObject(ret->json)) {
        snprintf(ret->message, sizeof(ret->message), "%s",
                 ret->json == NULL ? "request is not valid JSON" : "request is not an object");
        return -EINVAL;
    }
    id = cJSON_GetObjectItemCaseSensitive(ret->json, "id");
    if (cJSON_IsNull(id))
        id = NULL;
    if (id != NULL && !id_valid(id)) {
        ret->code = IPC_ERR_BAD_REQUEST;
        snprintf(ret->message, sizeof(ret->message),
                 "field 'id' must be an integer or a string of at most %d bytes", IPC_MAX_ID);
        return -EINVAL;
    }
    ret->id = id;
    if (has_escaped_nul(line, len)) {
        ret->code = IPC_ERR_BAD_REQUEST;
        snprintf(ret->message, sizeof(ret->message),
                 "request contains \\u0000 in a string: NUL characters are not allowed");
        return -EINVAL;
    }
    if (!request_check(ret->json, ret))
        return -EINVAL;
    ret->code = NULL;
    return 1;
}

static void handle_line(struct ipc_client *c, char *line, size_t len)
{
    struct ipc_server *s = c->server;
    struct ipc_request *req;
    struct ipc_parsed p;
    int r = ipc_parse_request(line, len, &p);

    if (r == 0)
        return;
    if (r < 0) {
        if (p.close)
            log_info("ipc-bad-version", "client=%llu pid=%d", (unsigned long long)c->serial,
                     c->pid);
        client_send_error(c, p.id, p.code, NULL, p.message);
        if (p.close)
            client_drain(c, "bad version");
        cJSON_Delete(p.json);
        return;
    }
    req = calloc(1, sizeof(*req));
    if (req == NULL || (p.id != NULL && (req->id = cJSON_Duplicate(p.id, true)) == NULL)) {
        free(req);
        client_send_error(c, p.id, IPC_ERR_FAILED, "io", "out of memory");
        cJSON_Delete(p.json);
        return;
    }
    req->json = p.json;
    req->type = p.type;
    req->client = c;
    req->next = c->requests;
    if (c->requests != NULL)
        c->requests->prev = req;
    c->requests = req;
    log_debug("ipc-request", "client=%llu type=%s", (unsigned long long)c->serial, req->type);
    s->handler.on_request(s->handler.ctx, req);
}

bool ipc_framer_next(struct ipc_framer *f, char **ret_line, size_t *ret_len)
{
    char *line, *nl;
    size_t len;

    while ((nl = memchr(f->buf + f->start, '\n', f->len - f->start)) != NULL) {
        line = f->buf + f->start;
        len = (size_t)(nl - line);
        f->start += len + 1;
        if (f->discarding) {
            f->discarding = false;
            continue;
        }
        *nl = '\0';
        *ret_line = line;
        *ret_len = len;
        return true;
    }
    return false;
}

int ipc_framer_compact(struct ipc_framer *f)
{
    if (f->discarding) {
        ipc_framer_reset(f);
        return 0;
    }
    memmove(f->buf, f->buf + f->start, f->len - f->start);
    f->len -= f->start;
    f->start = 0;
    if (f->len == (f->cap != 0 ? f->cap : IPC_MAX_MESSAGE)) {
        f->discarding = true;
        f->len = 0;
        return -EMSGSIZE;
    }
    return 0;
}

void ipc_framer_reset(struct ipc_framer *f)
{
    f->len = 0;
    f->start = 0;
}

static void process_input(struct ipc_client *c)
{
    char *line;
    size_t len;

    while (!c->closing && !c->draining && ipc_framer_next(&c->in, &line, &len))
        handle_line(c, line, len);
    if (c->closing || c->draining) {
        ipc_framer_reset(&c->in);
        return;
    }
    if (ipc_framer_compact(&c->in) == -EMSGSIZE) {
        char msg[96];
        snprintf(msg, sizeof(msg), "request is longer than %d bytes", IPC_MAX_MESSAGE - 1);
        log_info("ipc-too-large", "client=%llu pid=%d", (unsigned long long)c->serial, c->pid);
        client_send_error(c, NULL, IPC_ERR_TOO_LARGE, NULL, msg);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct ipc_client *c = h->data;

    (void)suggested;
    buf->base = c->in.buf + c->in.len;
    buf->len = IPC_MAX_MESSAGE - c->in.len;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct ipc_client *c = stream->data;

    (void)buf;
    if (nread == 0 || c->closing)
        return;
    if (nread == UV_EOF) {
        uv_read_stop(stream);
        c->eof = true;
        if (c->in.len > 0 && !c->in.discarding)
            client_send_error(c, NULL, IPC_ERR_BAD_JSON, NULL,
                              "request not terminated by a newline before end of input");
        ipc_framer_reset(&c->in);
        if (c->requests == NULL)
            client_drain(c, "end of input");
        return;
    }
    if (nread < 0) {
        client_teardown(c, uv_err_name((int)nread));
        return;
    }
    c->in.len += (size_t)nread;
    process_input(c);
}

/* ---- client lifetime ----------------------------------------------------------------------- */
static void on_client_closed(uv_handle_t *h)
{
    struct ipc_client *c = h->data;
    struct ipc_server *s = c->server;

    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    free(c->in.buf);
    free(c);
    server_maybe_done(s);
}

/* The one way out: EOF after draining, errors, a full queue, a refused peer, server close. */
static void client_teardown(struct ipc_client *c, const char *why)
{
    if (c->closing)
        return;
    c->closing = true;
    c->server->active--;
    while (c->requests != NULL)
        request_unlink(c->requests);
    uv_read_stop((uv_stream_t *)&c->pipe);
    log_debug("ipc-disconnect", "client=%llu reason='%s'", (unsigned long long)c->serial, why);
    uv_close((uv_handle_t *)&c->pipe, on_client_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct ipc_client *c = req->data;

    (void)status;
    client_teardown(c, "drained");
}

/* Stop reading, let queued output reach the peer, then close (tmux: flush, then drop). */
static void client_drain(struct ipc_client *c, const char *why)
{
    int r;

    if (c->closing || c->draining)
        return;
    c->draining = true;
    uv_read_stop((uv_stream_t *)&c->pipe);
    c->shutdown_req.data = c;
    r = uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->pipe, on_shutdown);
    if (r < 0)
        client_teardown(c, why);
}

static bool peer_allowed(struct ipc_client *c)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    uv_os_fd_t fd;

    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof(cred)) {
        c->uid = (unsigned)-1;
        c->pid = -1;
        return false;
    }
    c->uid = (unsigned)cred.uid;
    c->pid = (int)cred.pid;
    return cred.uid == geteuid() || cred.uid == 0;
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct ipc_server *s = listener->data;
    struct ipc_client *c;
    int r;

    if (status < 0) {
        log_warn("ipc-accept-failed", "error=%s", uv_err_name(status));
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->in.buf = malloc(IPC_MAX_MESSAGE)) == NULL) {
        free(c);
        log_error("ipc-accept-failed", "error=ENOMEM");
        return;
    }
    c->server = s;
    c->serial = ++s->next_serial;
    uv_pipe_init(s->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->next = s->clients;
    if (s->clients != NULL)
        s->clients->prev = c;
    s->clients = c;
    s->active++;
    r = uv_accept(listener, (uv_stream_t *)&c->pipe);
    if (r < 0) {
        log_warn("ipc-accept-failed", "error=%s", uv_err_name(r));
        client_teardown(c, "accept failed");
        return;
    }
    if (!peer_allowed(c)) {
        log_warn("ipc-peer-refused", "client=%llu uid=%d pid=%d reason='not the daemon user'",
                 (unsigned long long)c->serial, (int)c->uid, c->pid);
        client_send_error(c, NULL, IPC_ERR_FORBIDDEN, NULL,
                          "this daemon only answers its own user and root");
        client_drain(c, "forbidden");
        return;
    }
    if (s->active > IPC_MAX_CLIENTS) {
        char msg[96];
        snprintf(msg, sizeof(msg), "too many clients (at most %d)", IPC_MAX_CLIENTS);
        log_warn("ipc-busy", "client=%llu pid=%d clients=%u", (unsigned long long)c->serial, c->pid,
                 s->active);
        client_send_error(c, NULL, IPC_ERR_BUSY, NULL, msg);
        client_drain(c, "busy");
        return;
    }
    log_debug("ipc-connect", "client=%llu uid=%u pid=%d", (unsigned long long)c->serial, c->uid,
              c->pid);
    r = uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
    if (r < 0)
        client_teardown(c, "read failed");
}

/* ---- events -------------------------------------------------------------------------------- */
int ipc_broadcast_event(struct ipc_server *s, const char *event, const struct cJSON *fields)
{
    cJSON *o;
    const cJSON *child;
    struct ipc_client *c, *next;
    char *text;
    size_t len;
    int n = 0;

    if (s->closing)
        return 0;
    o = cJSON_CreateObject();
    if (o == NULL)
        return -ENOMEM;
    cJSON_AddNumberToObject(o, "v", IPC_PROTO_VERSION);
    cJSON_AddStringToObject(o, "event", event);
    if (fields != NULL && cJSON_IsObject(fields)) {
        cJSON_ArrayForEach(child, fields)
        {
            if (child->string == NULL || strcmp(child->string, "v") == 0 ||
                strcmp(child->string, "event") == 0)
                continue;
            cJSON_AddItemToObject(o, child->string, cJSON_Duplicate(child, true));
        }
    }
    text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (text == NULL)
        return -ENOMEM;
    len = strlen(text);
    if (len + 1 > IPC_MAX_REPLY) {
        log_warn("ipc-event-too-large", "event=%s bytes=%zu, dropping", event, len);
        cJSON_free(text);
        return -EMSGSIZE;
    }
    /* client_send may tear a client down; its memory stays until the close callback. */
    for (c = s->clients; c != NULL; c = next) {
        next = c->next;
        if (!c->subscriber || c->closing || c->draining)
            continue;
        if (client_send(c, text, len) == 0)
            n++;
    }
    cJSON_free(text);
    return n;
}

unsigned ipc_server_client_count(const struct ipc_server *s)
{
    return s->active;
}

/* ---- the socket path ----------------------------------------------------------------------- */
static int prepare_dir(const char *path, struct ckpt_err *err)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    const char *slash = strrchr(path, '/');
    struct stat st;
    size_t n;

    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else {
        n = slash == path ? 1 : (size_t)(slash - path);
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return ckpt_err_set(err, CKPT_ERR_IO, -errno, "cannot create socket directory '%s': %s",
                            dir, strerror(errno));
    if (lstat(dir, &st) < 0)
        return ckpt_err_set(err, CKPT_ERR_IO, -errno, "cannot stat socket directory '%s': %s", dir,
                            strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return ckpt_err_set(err, CKPT_ERR_IO, -ENOTDIR,
                            "socket directory '%s' is not a directory (or is a symlink)", dir);
    /* Whoever can write the directory can swap the socket for their own. */
    if (st.st_uid != geteuid())
        return ckpt_err_set(err, CKPT_ERR_IO, -EPERM,
                            "socket directory '%s' belongs to uid %u, not to us (uid %u)", dir,
                            (unsigned)st.st_uid, (unsigned)geteuid());
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        return ckpt_err_set(err, CKPT_ERR_IO, -EPERM,
                            "socket directory '%s' is writable by group or others (mode %04o)", dir,
                            (unsigned)(st.st_mode & 07777));
    return 0;
}

/* A socket file left by a dead daemon is removed; one with a listener is not ours to take. */
static int remove_stale(const char *path, struct ckpt_err *err)
{
    struct sockaddr_un addr;
    struct stat st;
    int fd, r, e;

    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        return ckpt_err_set(err, CKPT_ERR_IO, -errno, "cannot stat '%s': %s", path,
                            strerror(errno));
    }
    if (!S_ISSOCK(st.st_mode))
        return ckpt_err_set(err, CKPT_ERR_IO, -EEXIST, "'%s' exists and is not a socket", path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return ckpt_err_set(err, CKPT_ERR_IO, -errno, "cannot create a socket: %s",
                            strerror(errno));
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path) + 1);
    r = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
    e = errno;
    close(fd);
    if (r == 0 || e == EAGAIN || e == EINPROGRESS)
        return ckpt_err_set(err, CKPT_ERR_IO, -EADDRINUSE,
                            "another process is listening on '%s' (another ckptpushd for this "
                            "job?)",
                            path);
    if (e != ECONNREFUSED)
        return ckpt_err_set(err, CKPT_ERR_IO, -e, "cannot probe socket '%s': %s", path,
                            strerror(e));
    if (unlink(path) < 0 && errno != ENOENT)
        return ckpt_err_set(err, CKPT_ERR_IO, -errno, "cannot remove stale socket '%s': %s", path,
                            strerror(errno));
    log_info("ipc-stale-socket", "path='%s' reason='nothing listening', removed", path);
    return 0;
}

/* ---- server lifetime ----------------------------------------------------------------------- */
static void server_maybe_done(struct ipc_server *s)
{
    void (*cb)(void *);
    void *ctx;

    if (!s->closing || !s->pipe_closed || s->clients != NULL)
        return;
    cb = s->close_cb;
    ctx = s->close_ctx;
    free(s->path);
    free(s);
    if (cb != NULL)
        cb(ctx);
}

static void on_server_pipe_closed(uv_handle_t *h)
{
    struct ipc_server *s = h->data;

    s->pipe_closed = true;
    server_maybe_done(s);
}

int ipc_server_start(struct ipc_server **ret, uv_loop_t *loop, const char *path,
                     const struct ipc_handler *h, struct ckpt_err *err)
{
    struct ipc_server *s;
    struct stat st;
    int r;

    if (path == NULL || path[0] == '\0')
        return ckpt_err_set(err, CKPT_ERR_INPUT, -EINVAL, "empty socket path");
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return ckpt_err_set(err, CKPT_ERR_INPUT, -ENAMETOOLONG,
                            "socket path '%s' is longer than %zu bytes", path,
                            sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    /* libuv writes with write(2): a reply to a client that just closed must cost us EPIPE, not
     * the process. Process-wide, and what a daemon wants anyway. */
    signal(SIGPIPE, SIG_IGN);
    r = prepare_dir(path, err);
    if (r < 0)
        return r;
    r = remove_stale(path, err);
    if (r < 0)
        return r;
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        return ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "out of memory");
    }
    s->loop = loop;
    s->handler = *h;
    r = uv_pipe_init(loop, &s->pipe, 0);
    if (r < 0) {
        free(s->path);
        free(s);
        return ckpt_err_set(err, CKPT_ERR_IO, r, "cannot create pipe: %s", uv_strerror(r));
    }
    s->pipe.data = s;
    r = uv_pipe_bind(&s->pipe, path);
    if (r < 0) {
        ckpt_err_set(err, CKPT_ERR_IO, r, "cannot bind '%s': %s", path, uv_strerror(r));
        goto error;
    }
    s->bound = true;
    /* Mode before listen: until listen() nobody can connect, so there is no window, and the
     * process-wide umask stays untouched while pool threads create files. */
    if (chmod(path, 0600) < 0 || lstat(path, &st) < 0) {
        r = -errno;
        ckpt_err_set(err, CKPT_ERR_IO, r, "cannot chmod '%s': %s", path, strerror(errno));
        goto error;
    }
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    r = uv_listen((uv_stream_t *)&s->pipe, IPC_BACKLOG, on_connection);
    if (r < 0) {
        ckpt_err_set(err, CKPT_ERR_IO, r, "cannot listen on '%s': %s", path, uv_strerror(r));
        goto error;
    }
    log_info("ipc-listening", "path='%s'", path);
    *ret = s;
    return 0;

error:
    if (s->bound)
        unlink(path);
    s->closing = true;
    uv_close((uv_handle_t *)&s->pipe, on_server_pipe_closed);
    return r;
}

void ipc_server_close(struct ipc_server *s, void (*cb)(void *ctx), void *ctx)
{
    struct ipc_client *c, *next;
    struct stat st;

    if (s == NULL || s->closing)
        return;
    s->closing = true;
    s->close_cb = cb;
    s->close_ctx = ctx;
    /* Only our own socket: a newer daemon may have replaced the path. */
    if (lstat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
        unlink(s->path);
    for (c = s->clients; c != NULL; c = next) {
        next = c->next;
        client_teardown(c, "server closing");
    }
    uv_close((uv_handle_t *)&s->pipe, on_server_pipe_closed);
    log_info("ipc-closed", "path='%s'", s->path);
}
