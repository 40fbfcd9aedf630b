/* coord_client.c - the node side of coord_proto.h: connect (again after a drop), wait for the
 * coordinator's hello, send each pending report under that connection's nonce with a fresh seq,
 * match each authenticated reply to its report by seq. */
#include "coord_client.h"

#include "coord_proto.h"
#include "ipc.h"
#include "log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define RETRY_MIN_MS 250
#define RETRY_MAX_MS 5000

struct pend {
    cJSON *body; /* the report without v, type, nonce, seq */
    char *ckpt;
    uint64_t seq; /* on the current connection; 0: not sent on it */
    coord_report_cb cb;
    void *ctx;
    struct pend *next;
};

/* One connection attempt and, once made, the connection. */
struct link {
    struct coord_client *c;
    uv_tcp_t tcp;
    uv_connect_t connect;
    struct ipc_framer in;
    char nonce[COORD_NONCE_HEX + 1]; /* from hello; "" before */
    bool closing;
};

struct coord_client {
    uv_loop_t *loop;
    char *host;
    int port;
    long rank;
    unsigned char *secret;
    size_t secret_len;
    uv_timer_t retry;
    uv_getaddrinfo_t resolve;
    bool resolving;
    struct link *link;
    uint64_t seq;
    uint64_t backoff_ms;
    bool warned; /* the coordinator is unreachable: said once per outage */
    bool closing;
    int handles;
    struct pend *pending;
    void (*close_cb)(void *ctx);
    void *close_ctx;
};

static void connect_now(struct coord_client *c);

static void maybe_freed(struct coord_client *c)
{
    if (!c->closing || c->handles > 0 || c->resolving)
        return;
    void (*cb)(void *) = c->close_cb;
    void *ctx = c->close_ctx;
    OPENSSL_cleanse(c->secret, c->secret_len);
    free(c->secret);
    free(c->host);
    free(c);
    if (cb != NULL)
        cb(ctx);
}

static void on_link_closed(uv_handle_t *h)
{
    struct link *l = h->data;
    struct coord_client *c = l->c;
    free(l->in.buf);
    free(l);
    c->handles--;
    maybe_freed(c);
}

static void on_retry(uv_timer_t *t)
{
    connect_now(t->data);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct coord_client *c = h->data;
    c->handles--;
    maybe_freed(c);
}

static void schedule_retry(struct coord_client *c)
{
    if (c->closing)
        return;
    c->backoff_ms = c->backoff_ms == 0 ? RETRY_MIN_MS : c->backoff_ms * 2;
    if (c->backoff_ms > RETRY_MAX_MS)
        c->backoff_ms = RETRY_MAX_MS;
    uv_timer_start(&c->retry, on_retry, c->backoff_ms, 0);
}

static void link_drop(struct link *l, const char *why)
{
    struct coord_client *c = l->c;
    if (l->closing)
        return;
    l->closing = true;
    if (c->link == l)
        c->link = NULL;
    for (struct pend *p = c->pending; p != NULL; p = p->next)
        p->seq = 0;
    if (!c->closing) {
        if (!c->warned)
            log_warn("coord-unreachable", "coordinator=%s:%d reason='%s' next='retrying'", c->host,
                     c->port, why);
        c->warned = true;
        schedule_retry(c);
    }
    uv_close((uv_handle_t *)&l->tcp, on_link_closed);
}

static void on_written(uv_write_t *w, int status)
{
    (void)status; /* a failed write ends in a read error, which drops the link */
    free(w->data);
    free(w);
}

static void send_report(struct link *l, struct pend *p)
{
    struct coord_client *c = l->c;
    cJSON *o = cJSON_Duplicate(p->body, 1);
    char *text = NULL, *line = NULL;
    size_t len = 0;
    uv_write_t *w = NULL;

    if (o != NULL) {
        cJSON_AddNumberToObject(o, "v", COORD_PROTO_VERSION);
        cJSON_AddStringToObject(o, "type", COORD_TYPE_REPORT);
        cJSON_AddStringToObject(o, "nonce", l->nonce);
        p->seq = ++c->seq;
        cJSON_AddNumberToObject(o, "seq", (double)p->seq);
        text = cJSON_PrintUnformatted(o);
    }
    if (text != NULL)
        line = coord_seal(c->secret, c->secret_len, COORD_DIR_NODE, text, &len);
    if (line != NULL)
        w = calloc(1, sizeof(*w));
    cJSON_Delete(o);
    free(text);
    if (w == NULL) {
        free(line);
        p->seq = 0; /* sent at the next connection */
        return;
    }
    w->data = line;
    uv_buf_t buf = uv_buf_init(line, (unsigned)len);
    if (uv_write(w, (uv_stream_t *)&l->tcp, &buf, 1, on_written) != 0) {
        free(line);
        free(w);
    }
}

static void finish_pend(struct coord_client *c, struct pend *p, const struct ckpt_err *err,
                        const char *commit)
{
    for (struct pend **pp = &c->pending; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    p->cb(p->ctx, err, commit);
    cJSON_Delete(p->body);
    free(p->ckpt);
    free(p);
}

static void on_reply(struct coord_client *c, const cJSON *json)
{
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(json, "seq");
    struct pend *p = c->pending;
    while (p != NULL && !(cJSON_IsNumber(seq) && p->seq != 0 && (double)p->seq == seq->valuedouble))
        p = p->next;
    if (p == NULL)
        return; /* a report answered twice or one already dropped */
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(json, "ok");
    const cJSON *commit = cJSON_GetObjectItemCaseSensitive(json, "commit");
    if (cJSON_IsTrue(ok) && cJSON_IsString(commit)) {
        finish_pend(c, p, NULL, commit->valuestring);
        return;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(json, "error");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
    const char *cs = cJSON_IsString(code) ? code->valuestring : "?";
    struct ckpt_err err;
    bool retry = strcmp(cs, COORD_ERR_FAILED) == 0;
    ckpt_err_set(&err, retry ? CKPT_ERR_SERVER : CKPT_ERR_REJECTED, retry ? -EAGAIN : -EINVAL,
                 "coordinator: %s: %s", cs, cJSON_IsString(msg) ? msg->valuestring : "");
    finish_pend(c, p, &err, NULL);
}

static void on_line(struct link *l, char *line, size_t len)
{
    struct coord_client *c = l->c;
    cJSON *json = NULL;
    char why[256];
    uint64_t seq;

    if (len == 0)
        return;
    if (coord_open(c->secret, c->secret_len, COORD_DIR_COORD, line, len, &json, why, sizeof(why)) <
        0) {
        log_warn("coord-refused", "coordinator=%s:%d reason='%s' next='reconnecting'", c->host,
                 c->port, why);
        link_drop(l, why);
        return;
    }
    const char *type = coord_msg_type(json);
    if (l->nonce[0] == '\0') {
        const cJSON *nonce = cJSON_GetObjectItemCaseSensitive(json, "nonce");
        if (type == NULL || strcmp(type, COORD_TYPE_HELLO) != 0 || !cJSON_IsString(nonce) ||
            strlen(nonce->valuestring) != COORD_NONCE_HEX) {
            log_warn("coord-refused", "coordinator=%s:%d reason='no hello first'", c->host,
                     c->port);
            cJSON_Delete(json);
            link_drop(l, "no hello");
            return;
        }
        snprintf(l->nonce, sizeof(l->nonce), "%s", nonce->valuestring);
        if (c->warned)
            log_info("coord-connected", "coordinator=%s:%d", c->host, c->port);
        else
            log_debug("coord-connected", "coordinator=%s:%d", c->host, c->port);
        c->warned = false;
        c->backoff_ms = 0;
        for (struct pend *p = c->pending; p != NULL; p = p->next)
            send_report(l, p);
        cJSON_Delete(json);
        return;
    }
    /* a reply: under our nonce; its seq names the report (checked against the pending ones) */
    if (type == NULL || strcmp(type, COORD_TYPE_REPLY) != 0 ||
        coord_check_fresh(json, l->nonce, 0, &seq, why, sizeof(why)) < 0) {
        log_warn("coord-refused", "coordinator=%s:%d reason='%s'", c->host, c->port,
                 type == NULL || strcmp(type, COORD_TYPE_REPLY) != 0 ? "not a reply" : why);
        cJSON_Delete(json);
        link_drop(l, "refused reply");
        return;
    }
    on_reply(c, json);
    cJSON_Delete(json);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct link *l = h->data;
    (void)suggested;
    buf->base = l->in.buf + l->in.len;
    buf->len = COORD_MAX_MESSAGE - l->in.len;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct link *l = stream->data;
    char *line;
    size_t len;
    (void)buf;

    if (nread < 0) {
        link_drop(l, nread == UV_EOF ? "the coordinator closed the connection"
                                     : uv_strerror((int)nread));
        return;
    }
    l->in.len += (size_t)nread;
    while (!l->closing && ipc_framer_next(&l->in, &line, &len))
        on_line(l, line, len);
    if (!l->closing && ipc_framer_compact(&l->in) == -EMSGSIZE)
        link_drop(l, "a line too long");
}

static void on_connected(uv_connect_t *req, int status)
{
    struct link *l = req->data;
    if (l->closing)
        return;
    if (status < 0) {
        link_drop(l, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&l->tcp, 1);
    uv_read_start((uv_stream_t *)&l->tcp, on_alloc, on_read);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct coord_client *c = req->data;
    c->resolving = false;
    if (c->closing) {
        uv_freeaddrinfo(res);
        maybe_freed(c);
        return;
    }
    struct link *l = status == 0 ? calloc(1, sizeof(*l)) : NULL;
    if (l == NULL || (l->in.buf = malloc(COORD_MAX_MESSAGE)) == NULL) {
        if (l != NULL)
            free(l);
        if (!c->warned)
            log_warn("coord-unreachable", "coordinator=%s:%d reason='%s' next='retrying'", c->host,
                     c->port, status < 0 ? uv_strerror(status) : "out of memory");
        c->warned = true;
        uv_freeaddrinfo(res);
        schedule_retry(c);
        return;
    }
    l->c = c;
    l->in.cap = COORD_MAX_MESSAGE;
    l->tcp.data = l;
    l->connect.data = l;
    uv_tcp_init(c->loop, &l->tcp);
    c->handles++;
    c->link = l;
    int rc = uv_tcp_connect(&l->connect, &l->tcp, res->ai_addr, on_connected);
    uv_freeaddrinfo(res);
    if (rc < 0)
        link_drop(l, uv_strerror(rc));
}

static void connect_now(struct coord_client *c)
{
    char port[16];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};

    if (c->closing || c->link != NULL || c->resolving)
        return;
    snprintf(port, sizeof(port), "%d", c->port);
    c->resolve.data = c;
    int rc = uv_getaddrinfo(c->loop, &c->resolve, on_resolved, c->host, port, &hints);
    if (rc < 0) {
        schedule_retry(c);
        return;
    }
    c->resolving = true;
}

int coord_client_start(struct coord_client **ret, uv_loop_t *loop,
                       const struct coord_client_opts *opts)
{
    struct coord_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->loop = loop;
    c->port = opts->port;
    c->rank = opts->rank;
    c->host = strdup(opts->host);
    c->secret = malloc(opts->secret_len);
    if (c->host == NULL || c->secret == NULL) {
        free(c->host);
        free(c->secret);
        free(c);
        return -ENOMEM;
    }
    memcpy(c->secret, opts->secret, opts->secret_len);
    c->secret_len = opts->secret_len;
    uv_timer_init(loop, &c->retry);
    c->retry.data = c;
    c->handles = 1;
    connect_now(c);
    *ret = c;
    return 0;
}

int coord_client_report(struct coord_client *c, const char *ckpt, int64_t step, const char *message,
                        const struct coord_file *files, size_t n, coord_report_cb cb, void *ctx)
{
    struct pend *p = calloc(1, sizeof(*p));
    cJSON *o = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(o, "files");
    bool ok = p != NULL && list != NULL && (p->ckpt = strdup(ckpt)) != NULL;

    if (ok) {
        ok = cJSON_AddNumberToObject(o, "rank", (double)c->rank) != NULL &&
             cJSON_AddStringToObject(o, "ckpt", ckpt) != NULL &&
             cJSON_AddNumberToObject(o, "step", (double)step) != NULL &&
             cJSON_AddStringToObject(o, "message", message) != NULL;
    }
    for (size_t i = 0; ok && i < n; i++) {
        cJSON *f = cJSON_CreateObject();
        ok = f != NULL && cJSON_AddItemToArray(list, f) &&
             cJSON_AddStringToObject(f, "path", files[i].path) != NULL &&
             cJSON_AddNumberToObject(f, "size", (double)files[i].size) != NULL &&
             cJSON_AddStringToObject(f, "sha256", files[i].sha256) != NULL &&
             cJSON_AddStringToObject(f, "via", files[i].via) != NULL;
    }
    if (!ok) {
        cJSON_Delete(o);
        if (p != NULL)
            free(p->ckpt);
        free(p);
        return -ENOMEM;
    }
    p->body = o;
    p->cb = cb;
    p->ctx = ctx;
    p->next = c->pending;
    c->pending = p;
    if (c->link != NULL && c->link->nonce[0] != '\0')
        send_report(c->link, p);
    return 0;
}

void coord_client_close(struct coord_client *c, void (*cb)(void *ctx), void *ctx)
{
    if (c == NULL) {
        if (cb != NULL)
            cb(ctx);
        return;
    }
    c->closing = true;
    c->close_cb = cb;
    c->close_ctx = ctx;
    struct ckpt_err err;
    ckpt_err_set(&err, CKPT_ERR_IO, UV_ECANCELED,
                 "the daemon is stopping before the coordinator "
                 "committed this checkpoint");
    while (c->pending != NULL)
        finish_pend(c, c->pending, &err, NULL);
    if (c->resolving)
        uv_cancel((uv_req_t *)&c->resolve);
    if (c->link != NULL)
        link_drop(c->link, "closing");
    uv_close((uv_handle_t *)&c->retry, on_timer_closed);
}
