/* coord_server.c - the coordinator: TCP connections from every node's daemon (itself included),
 * their authenticated reports kept per checkpoint, the single commit once every rank reported,
 * and the log lines that say which ranks are missing while a checkpoint waits.
 *
 * A report stays when its node disconnects: its objects are on the Hub already. A checkpoint is
 * never committed without every rank's report. Reports are held in memory only: a coordinator
 * that restarts learns them again, since each node sends its report until it is answered.
 */
#include "coord_server.h"

#include "coord_proto.h"
#include "hub.h"
#include "ipc.h"
#include "log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DONE_KEPT 64

struct conn {
    struct coord_server *s;
    uv_tcp_t tcp;
    struct ipc_framer in;
    char nonce[COORD_NONCE_HEX + 1];
    char peer[64];
    uint64_t last_seq;
    long rank; /* -1 until its first report */
    bool closing;
    struct conn *prev, *next;
};

struct waiter {
    struct conn *c;
    uint64_t seq;
    struct waiter *next;
};

struct part {
    cJSON *json; /* the report's message; r points into it */
    struct coord_report r;
};

struct ckpt {
    struct coord_server *s;
    char *name;
    struct part *parts; /* one per rank */
    size_t n_reported;
    struct waiter *waiters;
    uint64_t first_ms, logged_ms;
    bool committing;
    struct hub_op *op;
    struct ckpt *next;
};

struct done {
    char name[COORD_MAX_NAME + 1];
    char commit[65];
};

struct coord_server {
    uv_loop_t *loop;
    struct hub *hub;
    uv_tcp_t listener;
    uv_timer_t timer;
    long nodes;
    unsigned char *secret;
    size_t secret_len;
    uint64_t wait_log_ms;
    int port;
    struct conn *conns;
    struct ckpt *ckpts;
    struct done done[DONE_KEPT];
    size_t n_done;
    bool closing;
    int handles; /* open handles: listener, timer, connections */
    void (*close_cb)(void *ctx);
    void *close_ctx;
};

static void maybe_freed(struct coord_server *s);

/* ---- sending ----------------------------------------------------------------------------- */

struct send_req {
    uv_write_t w;
    char *line;
};

static void on_written(uv_write_t *w, int status)
{
    struct send_req *r = (struct send_req *)w;
    (void)status; /* a failed write ends in a read error that closes the connection */
    free(r->line);
    free(r);
}

/* Consumes body. */
static void conn_send(struct conn *c, cJSON *body)
{
    char *text = body != NULL ? cJSON_PrintUnformatted(body) : NULL;
    size_t len = 0;
    char *line = text != NULL
                     ? coord_seal(c->s->secret, c->s->secret_len, COORD_DIR_COORD, text, &len)
                     : NULL;
    struct send_req *r = line != NULL ? calloc(1, sizeof(*r)) : NULL;

    cJSON_Delete(body);
    free(text);
    if (r == NULL || c->closing) {
        free(line);
        free(r);
        return;
    }
    r->line = line;
    uv_buf_t buf = uv_buf_init(line, (unsigned)len);
    if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) {
        free(line);
        free(r);
    }
}

static cJSON *reply_body(struct conn *c, uint64_t seq)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    cJSON_AddNumberToObject(o, "v", COORD_PROTO_VERSION);
    cJSON_AddStringToObject(o, "type", COORD_TYPE_REPLY);
    cJSON_AddStringToObject(o, "nonce", c->nonce);
    cJSON_AddNumberToObject(o, "seq", (double)seq);
    return o;
}

static void reply_ok(struct conn *c, uint64_t seq, const char *commit)
{
    cJSON *o = reply_body(c, seq);
    if (o != NULL) {
        cJSON_AddBoolToObject(o, "ok", true);
        cJSON_AddStringToObject(o, "commit", commit);
    }
    conn_send(c, o);
}

static void reply_error(struct conn *c, uint64_t seq, const char *code, const char *message)
{
    cJSON *o = reply_body(c, seq);
    if (o != NULL) {
        cJSON_AddBoolToObject(o, "ok", false);
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        if (e != NULL) {
            cJSON_AddStringToObject(e, "code", code);
            cJSON_AddStringToObject(e, "message", message);
        }
    }
    conn_send(c, o);
}

/* ---- checkpoints ------------------------------------------------------------------------- */

static const char *done_commit(const struct coord_server *s, const char *name)
{
    size_t n = s->n_done < DONE_KEPT ? s->n_done : DONE_KEPT;
    for (size_t k = 0; k < n; k++)
        if (strcmp(s->done[k].name, name) == 0)
            return s->done[k].commit;
    return NULL;
}

static struct ckpt *ckpt_find(struct coord_server *s, const char *name)
{
    for (struct ckpt *ck = s->ckpts; ck != NULL; ck = ck->next)
        if (strcmp(ck->name, name) == 0)
            return ck;
    return NULL;
}

static void ckpt_free(struct ckpt *ck)
{
    for (long r = 0; r < ck->s->nodes; r++) {
        free(ck->parts[r].r.files);
        cJSON_Delete(ck->parts[r].json);
    }
    while (ck->waiters != NULL) {
        struct waiter *w = ck->waiters;
        ck->waiters = w->next;
        free(w);
    }
    free(ck->parts);
    free(ck->name);
    free(ck);
}

static void ckpt_unlink(struct ckpt *ck)
{
    for (struct ckpt **p = &ck->s->ckpts; *p != NULL; p = &(*p)->next) {
        if (*p == ck) {
            *p = ck->next;
            return;
        }
    }
}

/* "1,3" into buf: the ranks with (have) or without a report. */
static void ranks_text(const struct ckpt *ck, bool have, char *buf, size_t size)
{
    size_t at = 0;
    buf[0] = '\0';
    for (long r = 0; r < ck->s->nodes && at + 24 < size; r++)
        if ((ck->parts[r].json != NULL) == have)
            at += (size_t)snprintf(buf + at, size - at, "%s%ld", at ? "," : "", r);
    if (at + 24 >= size)
        snprintf(buf + at, size - at, ",...");
}

static void log_waiting(struct ckpt *ck, const char *why)
{
    char missing[256], shown[COORD_MAX_NAME * 4 + 1];
    ranks_text(ck, false, missing, sizeof(missing));
    log_escape(shown, sizeof(shown), ck->name);
    log_warn("coord-waiting",
             "ckpt='%s' missing=%s reported=%zu/%ld waited_s=%.1f reason='%s' next='no commit "
             "until every node reports; restart the missing node(s) with the same rank'",
             shown, missing, ck->n_reported, ck->s->nodes,
             (double)(uv_now(ck->s->loop) - ck->first_ms) / 1000.0, why);
    ck->logged_ms = uv_now(ck->s->loop);
}

struct op_ent {
    const char *path, *sha256;
    uint64_t size;
    long rank;
};

static int cmp_ent(const void *a, const void *b)
{
    return strcmp(((const struct op_ent *)a)->path, ((const struct op_ent *)b)->path);
}

static void answer_all(struct ckpt *ck, const char *commit, const char *code, const char *msg)
{
    while (ck->waiters != NULL) {
        struct waiter *w = ck->waiters;
        ck->waiters = w->next;
        if (commit != NULL)
            reply_ok(w->c, w->seq, commit);
        else
            reply_error(w->c, w->seq, code, msg);
        free(w);
    }
}

static void on_committed(void *ctx, const struct ckpt_err *err, const char *oid)
{
    struct ckpt *ck = ctx;
    struct coord_server *s = ck->s;
    char shown[COORD_MAX_NAME * 4 + 1];

    ck->op = NULL;
    ck->committing = false;
    log_escape(shown, sizeof(shown), ck->name);
    if (s->closing) {
        ckpt_unlink(ck);
        ckpt_free(ck);
        maybe_freed(s);
        return;
    }
    if (err != NULL) {
        log_warn("coord-commit-failed",
                 "ckpt='%s' kind=%s reason='%s' next='each node reports again and the commit is "
                 "retried'",
                 shown, ckpt_err_kind_name(err->kind), err->msg);
        answer_all(ck, NULL, COORD_ERR_FAILED, err->msg);
        return;
    }
    size_t files = 0;
    for (long r = 0; r < s->nodes; r++)
        files += ck->parts[r].r.n_files;
    log_info("coord-committed", "ckpt='%s' commit=%s nodes=%ld files=%zu", shown, oid, s->nodes,
             files);
    struct done *d = &s->done[s->n_done++ % DONE_KEPT];
    snprintf(d->name, sizeof(d->name), "%s", ck->name);
    snprintf(d->commit, sizeof(d->commit), "%s", oid);
    answer_all(ck, oid, NULL, NULL);
    ckpt_unlink(ck);
    ckpt_free(ck);
}

/* Every rank reported: one commit naming every file of every node by its sha256. */
static void ckpt_commit(struct ckpt *ck)
{
    struct coord_server *s = ck->s;
    size_t total = 0, n = 0;
    char shown[COORD_MAX_NAME * 4 + 1];

    log_escape(shown, sizeof(shown), ck->name);
    for (long r = 0; r < s->nodes; r++)
        total += ck->parts[r].r.n_files;
    struct op_ent *ents = calloc(total, sizeof(*ents));
    struct hub_commit_op *ops = calloc(total, sizeof(*ops));
    if (ents == NULL || ops == NULL) {
        free(ents);
        free(ops);
        answer_all(ck, NULL, COORD_ERR_FAILED, "coordinator out of memory");
        return;
    }
    for (long r = 0; r < s->nodes; r++) {
        for (size_t i = 0; i < ck->parts[r].r.n_files; i++) {
            const struct coord_file *f = &ck->parts[r].r.files[i];
            ents[n++] = (struct op_ent){f->path, f->sha256, f->size, r};
        }
    }
    qsort(ents, n, sizeof(*ents), cmp_ent);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && strcmp(ents[i].path, ops[m - 1].path) == 0) {
            if (strcmp(ents[i].sha256, ops[m - 1].oid) == 0)
                continue; /* the same file written by two nodes */
            char path[512], msg[1024];
            log_escape(path, sizeof(path), ents[i].path);
            snprintf(msg, sizeof(msg), "nodes %ld and %ld give '%s' different content",
                     ents[i - 1].rank, ents[i].rank, path);
            log_error("coord-conflict", "ckpt='%s' reason='%s' next='not committed'", shown, msg);
            free(ents);
            free(ops);
            answer_all(ck, NULL, COORD_ERR_CONFLICT, msg);
            ckpt_unlink(ck);
            ckpt_free(ck);
            return;
        }
        ops[m++] = (struct hub_commit_op){.kind = HUB_COMMIT_LFS,
                                          .path = ents[i].path,
                                          .oid = ents[i].sha256,
                                          .size = ents[i].size};
    }
    const char *message = ck->parts[0].r.message;
    log_info("coord-commit", "ckpt='%s' nodes=%ld files=%zu", shown, s->nodes, m);
    ck->committing = true;
    int rc = hub_commit(s->hub, message, "", NULL, ops, m, on_committed, ck, &ck->op);
    free(ents);
    free(ops);
    if (rc < 0) {
        ck->committing = false;
        log_warn("coord-commit-failed", "ckpt='%s' reason='%s'", shown, uv_strerror(rc));
        answer_all(ck, NULL, COORD_ERR_FAILED, uv_strerror(rc));
    }
}

static void on_report(struct conn *c, cJSON *json, uint64_t seq)
{
    struct coord_server *s = c->s;
    struct coord_report r;
    char why[256], shown[COORD_MAX_NAME * 4 + 1];

    if (coord_parse_report(json, s->nodes, &r, why, sizeof(why)) < 0) {
        log_warn("coord-refused", "peer=%s reason='%s'", c->peer, why);
        reply_error(c, seq, COORD_ERR_BAD, why);
        cJSON_Delete(json);
        return;
    }
    if (c->rank >= 0 && c->rank != r.rank) {
        log_warn("coord-refused", "peer=%s reason='rank %ld on a connection of rank %ld'", c->peer,
                 r.rank, c->rank);
        reply_error(c, seq, COORD_ERR_BAD, "one connection speaks for one rank");
        free(r.files);
        cJSON_Delete(json);
        return;
    }
    if (c->rank < 0)
        log_info("coord-node", "rank=%ld peer=%s", r.rank, c->peer);
    c->rank = r.rank;
    log_escape(shown, sizeof(shown), r.ckpt);
    const char *commit = done_commit(s, r.ckpt);
    if (commit != NULL) {
        log_info("coord-report", "ckpt='%s' rank=%ld files=%zu commit=%s (already committed)",
                 shown, r.rank, r.n_files, commit);
        reply_ok(c, seq, commit);
        free(r.files);
        cJSON_Delete(json);
        return;
    }
    struct ckpt *ck = ckpt_find(s, r.ckpt);
    struct waiter *w = calloc(1, sizeof(*w));
    if (ck == NULL && w != NULL && (ck = calloc(1, sizeof(*ck))) != NULL) {
        ck->s = s;
        ck->name = strdup(r.ckpt);
        ck->parts = calloc((size_t)s->nodes, sizeof(*ck->parts));
        ck->first_ms = ck->logged_ms = uv_now(s->loop);
        if (ck->name == NULL || ck->parts == NULL) {
            free(ck->name);
            free(ck->parts);
            free(ck);
            ck = NULL;
        } else {
            ck->next = s->ckpts;
            s->ckpts = ck;
        }
    }
    if (ck == NULL || w == NULL) {
        free(w);
        free(r.files);
        cJSON_Delete(json);
        reply_error(c, seq, COORD_ERR_FAILED, "coordinator out of memory");
        return;
    }
    w->c = c;
    w->seq = seq;
    w->next = ck->waiters;
    ck->waiters = w;
    if (ck->committing) {
        free(r.files);
        cJSON_Delete(json); /* the commit in flight already holds this rank's part */
        return;
    }
    struct part *p = &ck->parts[r.rank];
    if (p->json == NULL)
        ck->n_reported++;
    free(p->r.files);
    cJSON_Delete(p->json);
    p->json = json;
    p->r = r;
    char missing[256];
    ranks_text(ck, false, missing, sizeof(missing));
    log_info("coord-report", "ckpt='%s' rank=%ld files=%zu reported=%zu/%ld missing=%s", shown,
             r.rank, r.n_files, ck->n_reported, s->nodes, missing[0] ? missing : "none");
    if (ck->n_reported == (size_t)s->nodes)
        ckpt_commit(ck);
}

/* ---- connections ------------------------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct coord_server *s = c->s;
    free(c->in.buf);
    free(c);
    s->handles--;
    maybe_freed(s);
}

static void conn_close(struct conn *c, const char *why)
{
    struct coord_server *s = c->s;
    if (c->closing)
        return;
    c->closing = true;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    /* nobody to answer any more: its node sends the report again on its next connection */
    for (struct ckpt *ck = s->ckpts; ck != NULL; ck = ck->next) {
        for (struct waiter **p = &ck->waiters; *p != NULL;) {
            if ((*p)->c == c) {
                struct waiter *w = *p;
                *p = w->next;
                free(w);
            } else {
                p = &(*p)->next;
            }
        }
    }
    if (c->rank >= 0 && !s->closing) {
        log_warn("coord-node-lost", "rank=%ld peer=%s reason='%s'", c->rank, c->peer, why);
        for (struct ckpt *ck = s->ckpts; ck != NULL; ck = ck->next)
            if (ck->parts[c->rank].json == NULL && !ck->committing)
                log_waiting(ck, "the connection of a node dropped before its report");
    }
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    buf->base = c->in.buf + c->in.len;
    buf->len = COORD_MAX_MESSAGE - c->in.len;
}

static void on_line(struct conn *c, char *line, size_t len)
{
    struct coord_server *s = c->s;
    cJSON *json = NULL;
    char why[256];
    uint64_t seq;

    if (len == 0)
        return;
    if (coord_open(s->secret, s->secret_len, COORD_DIR_NODE, line, len, &json, why, sizeof(why)) <
            0 ||
        coord_check_fresh(json, c->nonce, c->last_seq, &seq, why, sizeof(why)) < 0) {
        log_warn("coord-refused", "peer=%s rank=%ld reason='%s' next='connection closed'", c->peer,
                 c->rank, why);
        cJSON_Delete(json);
        conn_close(c, "refused message");
        return;
    }
    c->last_seq = seq;
    const char *type = coord_msg_type(json);
    if (type == NULL || strcmp(type, COORD_TYPE_REPORT) != 0) {
        log_warn("coord-refused", "peer=%s reason='unknown message type'", c->peer);
        reply_error(c, seq, COORD_ERR_BAD, "unknown message type");
        cJSON_Delete(json);
        return;
    }
    on_report(c, json, seq);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    char *line;
    size_t len;
    (void)buf;

    if (nread < 0) {
        conn_close(c, nread == UV_EOF ? "disconnected" : uv_strerror((int)nread));
        return;
    }
    c->in.len += (size_t)nread;
    while (!c->closing && ipc_framer_next(&c->in, &line, &len))
        on_line(c, line, len);
    if (!c->closing && ipc_framer_compact(&c->in) == -EMSGSIZE) {
        log_warn("coord-refused", "peer=%s reason='a line longer than %u bytes'", c->peer,
                 COORD_MAX_MESSAGE);
        conn_close(c, "line too long");
    }
}

static void peer_name(uv_tcp_t *tcp, char *buf, size_t size)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char host[48] = "?";
    int port = 0;
    snprintf(buf, size, "?");
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    snprintf(buf, size, "%s:%d", host, port);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct coord_server *s = server->data;
    if (status < 0 || s->closing)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->in.buf = malloc(COORD_MAX_MESSAGE)) == NULL ||
        coord_new_nonce(c->nonce) < 0) {
        if (c != NULL)
            free(c->in.buf);
        free(c);
        log_warn("coord-refused", "reason='out of memory'");
        return;
    }
    c->s = s;
    c->rank = -1;
    c->in.cap = COORD_MAX_MESSAGE;
    c->tcp.data = c;
    uv_tcp_init(s->loop, &c->tcp);
    s->handles++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    peer_name(&c->tcp, c->peer, sizeof(c->peer));
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    log_debug("coord-connection", "peer=%s", c->peer);
    cJSON *hello = cJSON_CreateObject();
    if (hello != NULL) {
        cJSON_AddNumberToObject(hello, "v", COORD_PROTO_VERSION);
        cJSON_AddStringToObject(hello, "type", COORD_TYPE_HELLO);
        cJSON_AddStringToObject(hello, "nonce", c->nonce);
    }
    conn_send(c, hello);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- the waiting log --------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    struct coord_server *s = t->data;
    uint64_t now = uv_now(s->loop);
    for (struct ckpt *ck = s->ckpts; ck != NULL; ck = ck->next)
        if (!ck->committing && now - ck->logged_ms >= s->wait_log_ms)
            log_waiting(ck, "timeout");
}

/* ---- life cycle -------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    struct coord_server *s = h->data;
    s->handles--;
    maybe_freed(s);
}

static void maybe_freed(struct coord_server *s)
{
    if (!s->closing || s->handles > 0)
        return;
    for (struct ckpt *ck = s->ckpts; ck != NULL; ck = ck->next)
        if (ck->committing)
            return; /* its callback comes and frees it */
    while (s->ckpts != NULL) {
        struct ckpt *ck = s->ckpts;
        s->ckpts = ck->next;
        ckpt_free(ck);
    }
    void (*cb)(void *) = s->close_cb;
    void *ctx = s->close_ctx;
    OPENSSL_cleanse(s->secret, s->secret_len);
    free(s->secret);
    free(s);
    if (cb != NULL)
        cb(ctx);
}

int coord_server_start(struct coord_server **ret, uv_loop_t *loop, struct hub *hub,
                       const struct coord_server_opts *opts, struct ckpt_err *err)
{
    struct sockaddr_storage addr;
    int rc;

    if (uv_ip4_addr(opts->bind_host, opts->port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(opts->bind_host, opts->port, (struct sockaddr_in6 *)&addr) != 0)
        return ckpt_err_set(err, CKPT_ERR_INPUT, -EINVAL,
                            "coordinator: '%s' is not an IP address to listen on", opts->bind_host);
    struct coord_server *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->secret = malloc(opts->secret_len)) == NULL) {
        free(s);
        return ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "coordinator: out of memory");
    }
    memcpy(s->secret, opts->secret, opts->secret_len);
    s->secret_len = opts->secret_len;
    s->loop = loop;
    s->hub = hub;
    s->nodes = opts->nodes;
    s->wait_log_ms = opts->wait_log_ms > 0 ? opts->wait_log_ms : 60000;
    uv_tcp_init(loop, &s->listener);
    uv_timer_init(loop, &s->timer);
    s->listener.data = s;
    s->timer.data = s;
    s->handles = 2;
    if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&s->listener, 128, on_connection)) != 0) {
        ckpt_err_set(err, CKPT_ERR_IO, rc, "coordinator: cannot listen on %s:%d: %s",
                     opts->bind_host, opts->port, uv_strerror(rc));
        coord_server_close(s, NULL, NULL);
        return rc;
    }
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    s->port = opts->port;
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len) == 0)
        s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    uint64_t tick = s->wait_log_ms / 4;
    tick = tick < 100 ? 100 : tick > 5000 ? 5000 : tick;
    uv_timer_start(&s->timer, on_tick, tick, tick);
    log_info("coord-listening", "address=%s:%d nodes=%ld", opts->bind_host, s->port, s->nodes);
    *ret = s;
    return 0;
}

int coord_server_port(const struct coord_server *s)
{
    return s->port;
}

cJSON *coord_server_status(const struct coord_server *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *conn = cJSON_AddArrayToObject(o, "connected");
    cJSON *pending = cJSON_AddArrayToObject(o, "pending");
    cJSON *committed = cJSON_AddArrayToObject(o, "committed");
    if (o == NULL || conn == NULL || pending == NULL || committed == NULL) {
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddNumberToObject(o, "nodes", (double)s->nodes);
    for (const struct conn *c = s->conns; c != NULL; c = c->next)
        if (c->rank >= 0)
            cJSON_AddItemToArray(conn, cJSON_CreateNumber((double)c->rank));
    for (const struct ckpt *ck = s->ckpts; ck != NULL; ck = ck->next) {
        cJSON *p = cJSON_CreateObject();
        cJSON *have = cJSON_AddArrayToObject(p, "reported");
        cJSON *missing = cJSON_AddArrayToObject(p, "missing");
        if (p == NULL || have == NULL || missing == NULL) {
            cJSON_Delete(p);
            continue;
        }
        cJSON_AddStringToObject(p, "ckpt", ck->name);
        for (long r = 0; r < s->nodes; r++)
            cJSON_AddItemToArray(ck->parts[r].json != NULL ? have : missing,
                                 cJSON_CreateNumber((double)r));
        cJSON_AddNumberToObject(p, "waited_s", (double)(uv_now(s->loop) - ck->first_ms) / 1000.0);
        cJSON_AddBoolToObject(p, "committing", ck->committing);
        cJSON_AddItemToArray(pending, p);
    }
    size_t n = s->n_done < DONE_KEPT ? s->n_done : DONE_KEPT;
    for (size_t k = 0; k < n; k++) {
        const struct done *d = &s->done[(s->n_done - 1 - k) % DONE_KEPT];
        cJSON *c = cJSON_CreateObject();
        if (c == NULL)
            continue;
        cJSON_AddStringToObject(c, "ckpt", d->name);
        cJSON_AddStringToObject(c, "commit", d->commit);
        cJSON_AddItemToArray(committed, c);
    }
    return o;
}

void coord_server_close(struct coord_server *s, void (*cb)(void *ctx), void *ctx)
{
    if (s == NULL) {
        if (cb != NULL)
            cb(ctx);
        return;
    }
    s->closing = true;
    s->close_cb = cb;
    s->close_ctx = ctx;
    while (s->conns != NULL)
        conn_close(s->conns, "coordinator stopping");
    for (struct ckpt *ck = s->ckpts; ck != NULL; ck = ck->next)
        if (ck->committing && ck->op != NULL)
            hub_op_cancel(ck->op);
    uv_close((uv_handle_t *)&s->listener, on_handle_closed);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
}
