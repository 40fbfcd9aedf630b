/* xet_session.c - Xet write token, CAS requests, dedup index and the local shard cache.
 *
 * Token: every CAS request waits for a token that is valid for XET_TOKEN_MARGIN_S more seconds;
 * one refresh (GET xet-write-token through hub.c) serves every request waiting. A 401 from the
 * CAS drops the token the request carried and sends it once more with a fresh one. The token is
 * only ever put in the Authorization header and is wiped from memory when replaced.
 *
 * Index: open addressing from chunk hash to (xorb, chunk index), xorbs interned in one array.
 * Dedup answers keep their chunk hashes HMAC'd with the answer's key, so they stay as parsed
 * shards and are searched one by one (few: one per eligible chunk at most).
 *
 * Shard cache: <cache_dir>/shards-<scope>/<xet hash>.shard, written atomically (temporary name,
 * fsync, rename). Read once, at the first upload, on the pool; a file that does not parse is logged
 * and skipped, never trusted. The oldest files beyond XET_CACHE_SHARDS_MAX or XET_CACHE_BYTES_MAX
 * are deleted when read.
 */
#include "xet_session.h"

#include "http.h"
#include "hub.h"
#include "log.h"
#include "xet_shard.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <uv.h>

#define XET_ANSWER_MAX (64u * 1024 * 1024) /* a dedup answer is one shard */

enum xop_kind { XOP_XORB, XOP_SHARD, XOP_QUERY };

struct xet_op {
    struct xet_session *s;
    enum xop_kind kind;
    struct xet_op *next_wait;
    struct http_xfer *xfer;
    xet_done_cb cb;
    xet_sent_cb sent;
    void *ctx;
    char path[256]; /* after the CAS URL */
    char *body_path;
    uint8_t *body;
    size_t body_len;
    uint64_t file_len;
    char *token_used; /* the token the request carried (a 401 drops it only if still held) */
    int retried_auth;
    int cancelled;
    int waiting;
    char what[96];
};

struct idx_entry {
    struct xet_hash chunk;
    uint32_t xorb; /* index into xorbs + 1; 0: empty slot */
    uint32_t index;
};

struct cached_file {
    char *name;
    time_t mtime;
    off_t size;
};

struct cache_job {
    uv_work_t work;
    struct xet_session *s;
    int load; /* else store */
    /* store */
    char name[XET_HASH_HEX_LEN + 1];
    uint8_t *data;
    size_t len;
    int status;
    /* load: the parsed shards, and the files skipped */
    struct xet_shard *shards;
    size_t nshards;
    unsigned bad;
    char bad_name[128];
    char bad_why[160];
};

struct ready_waiter {
    struct ready_waiter *next;
    xet_ready_cb cb;
    void *ctx;
};

struct xet_session {
    uv_loop_t *loop;
    char scope[17];
    struct hub *hub;
    struct http *http;
    char *cache_dir;

    char *cas_url;
    char *token;
    char *session_id;
    int64_t exp;
    int64_t got_at;
    struct hub_op *token_op;
    struct xet_op *waiting, *waiting_tail;

    struct idx_entry *idx;
    size_t idx_cap, idx_used;
    struct xet_hash *xorbs;
    size_t n_xorbs, xorbs_cap;
    uint32_t evicted_to; /* xorbs with an id up to this are no longer indexed */
    uint8_t *xorb_dead;  /* per xorb: forgotten (its upload failed), its entries are void */
    struct xet_shard **answers;
    size_t n_answers;

    int cache_state; /* 0 not read, 1 reading, 2 read */
    struct ready_waiter *ready;
    size_t ops_in_flight; /* CAS requests, the token request, cache jobs */
    size_t cache_jobs;    /* pool work cannot be cancelled: the last one frees a freed session */
    int free_pending;
    struct xet_session_stats stats;
};

/* ---- small helpers ----------------------------------------------------------------------- */

static void wipe_free(char *secret)
{
    if (secret != NULL) {
        explicit_bzero(secret, strlen(secret));
        free(secret);
    }
}

/* Replaces every copy of secret in text by ***. */
static void redact_secret(char *text, const char *secret)
{
    size_t sl = secret != NULL ? strlen(secret) : 0;
    char *p;
    if (sl < 4)
        return;
    while ((p = strstr(text, secret)) != NULL) {
        memmove(p + 3, p + sl, strlen(p + sl) + 1);
        memcpy(p, "***", 3);
    }
}

static void clean_copy(char *dst, size_t size, const char *s, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; i < n && s[i] != '\0' && j + 1 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[j++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    dst[j] = '\0';
}

/* "scheme://host[:port]" of url, for messages. */
static void origin_of(const char *url, char *dst, size_t size)
{
    const char *p = url != NULL ? strstr(url, "://") : NULL;
    size_t n = p != NULL ? (size_t)(p + 3 - url) + strcspn(p + 3, "/?#") : 0;
    snprintf(dst, size, "%.*s", (int)n, url != NULL ? url : "");
}

/* ---- session ----------------------------------------------------------------------------- */

int xet_session_new(struct xet_session **ret, uv_loop_t *loop, struct hub *hub,
                    const char *cache_dir)
{
    struct xet_session *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return UV_ENOMEM;
    s->loop = loop;
    s->hub = hub;
    {
        /* the endpoint names the CAS it hands tokens for */
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        const char *ep = hub_endpoint(hub);
        if (EVP_Digest(ep, strlen(ep), md, &mdlen, EVP_sha256(), NULL) != 1) {
            free(s);
            return UV_ENOMEM;
        }
        for (int i = 0; i < 8; i++)
            snprintf(s->scope + 2 * i, 3, "%02x", md[i]);
    }
    s->http = hub_http(hub);
    if (cache_dir != NULL && (s->cache_dir = strdup(cache_dir)) == NULL) {
        free(s);
        return UV_ENOMEM;
    }
    if (cache_dir == NULL)
        s->cache_state = 2;
    *ret = s;
    return 0;
}

static void session_release(struct xet_session *s)
{
    wipe_free(s->token);
    free(s->cas_url);
    free(s->session_id);
    free(s->cache_dir);
    free(s->idx);
    free(s->xorbs);
    free(s->xorb_dead);
    for (size_t i = 0; i < s->n_answers; i++) {
        xet_shard_free(s->answers[i]);
        free(s->answers[i]);
    }
    free(s->answers);
    while (s->ready != NULL) {
        struct ready_waiter *w = s->ready;
        s->ready = w->next;
        free(w);
    }
    free(s);
}

void xet_session_free(struct xet_session *s)
{
    if (s == NULL)
        return;
    if (s->cache_jobs > 0) {
        s->free_pending = 1;
        return;
    }
    session_release(s);
}

const char *xet_session_scope(const struct xet_session *s)
{
    return s->scope;
}

void xet_session_get_stats(const struct xet_session *s, struct xet_session_stats *ret)
{
    *ret = s->stats;
    ret->chunks_indexed = s->idx_used;
}

static int set_token(struct xet_session *s, const char *cas_url, const char *token, int64_t exp,
                     const char *session_id)
{
    char *c = strdup(cas_url), *t = strdup(token);
    char *sid = session_id != NULL ? strdup(session_id) : NULL;
    if (c == NULL || t == NULL || (session_id != NULL && sid == NULL)) {
        free(c);
        wipe_free(t);
        free(sid);
        return -ENOMEM;
    }
    size_t n = strlen(c);
    while (n > 0 && c[n - 1] == '/')
        c[--n] = '\0';
    wipe_free(s->token);
    free(s->cas_url);
    if (sid != NULL || s->session_id == NULL) {
        free(s->session_id);
        s->session_id = sid;
    }
    s->cas_url = c;
    s->token = t;
    /* a token without expiry is used for a few minutes, then refreshed */
    s->got_at = (int64_t)time(NULL);
    s->exp = exp > 0 ? exp : s->got_at + 5 * 60;
    return 0;
}

void xet_session_offer_token(struct xet_session *s, const struct hub_lfs_object *obj)
{
    if (obj->xet_token == NULL || obj->xet_cas_url == NULL)
        return;
    if (s->token != NULL && obj->xet_token_exp > 0 && obj->xet_token_exp <= s->exp)
        return;
    set_token(s, obj->xet_cas_url, obj->xet_token, obj->xet_token_exp, obj->xet_session_id);
}

/* Good for a new request: not within the margin of its expiry (XET_TOKEN_MARGIN_S, or half its
 * lifetime when that is shorter, so that a short-lived token is not refreshed at once). */
static bool token_valid(const struct xet_session *s)
{
    int64_t margin = XET_TOKEN_MARGIN_S;
    if ((s->exp - s->got_at) / 2 < margin)
        margin = (s->exp - s->got_at) / 2;
    return s->token != NULL && s->exp > (int64_t)time(NULL) + margin;
}

/* Good for a request going now: not expired yet. */
static bool token_usable(const struct xet_session *s)
{
    return s->token != NULL && s->exp > (int64_t)time(NULL);
}

/* ---- CAS requests ------------------------------------------------------------------------ */

static void op_send(struct xet_op *op);
static void op_finish(struct xet_op *op, const struct ckpt_err *err, const uint8_t *body,
                      size_t len);

static void fetch_token(struct xet_session *s);

static void on_token(void *ctx, const struct ckpt_err *err, const struct hub_xet_token *tok)
{
    struct xet_session *s = ctx;
    struct ckpt_err e;
    s->token_op = NULL;
    s->ops_in_flight--;
    if (err == NULL) {
        if (set_token(s, tok->cas_url, tok->access_token, tok->exp, NULL) < 0) {
            ckpt_err_set(&e, CKPT_ERR_IO, -ENOMEM, "Xet write token: out of memory");
            err = &e;
        } else {
            s->stats.token_refreshes++;
            log_debug("xet_token", "repo='%s' expires_in=%" PRId64 "s", hub_repo_id(s->hub),
                      s->exp - (int64_t)time(NULL));
        }
    }
    struct xet_op *w = s->waiting;
    s->waiting = s->waiting_tail = NULL;
    while (w != NULL) {
        struct xet_op *next = w->next_wait;
        w->waiting = 0;
        w->next_wait = NULL;
        if (w->cancelled) {
            ckpt_err_set(&e, CKPT_ERR_IO, UV_ECANCELED, "%s cancelled", w->what);
            op_finish(w, &e, NULL, 0);
        } else if (err != NULL) {
            op_finish(w, err, NULL, 0);
        } else if (!token_usable(s)) {
            ckpt_err_set(&e, CKPT_ERR_PROTOCOL, -EPROTO,
                         "Xet write token for '%s': bad answer: it expired already",
                         hub_repo_id(s->hub));
            op_finish(w, &e, NULL, 0);
        } else {
            op_send(w);
        }
        w = next;
    }
}

static void fetch_token(struct xet_session *s)
{
    if (s->token_op != NULL)
        return;
    int r = hub_xet_write_token(s->hub, on_token, s, &s->token_op);
    if (r < 0) {
        struct ckpt_err e;
        ckpt_err_set(&e, CKPT_ERR_IO, r, "Xet write token for '%s': %s", hub_repo_id(s->hub),
                     uv_strerror(r));
        s->ops_in_flight++;
        s->token_op = NULL;
        /* fail the waiting ones as a failed answer would */
        struct xet_op *w = s->waiting;
        s->waiting = s->waiting_tail = NULL;
        s->ops_in_flight--;
        while (w != NULL) {
            struct xet_op *next = w->next_wait;
            w->waiting = 0;
            op_finish(w, &e, NULL, 0);
            w = next;
        }
        return;
    }
    s->ops_in_flight++;
}

static void op_wait_token(struct xet_op *op)
{
    struct xet_session *s = op->s;
    op->waiting = 1;
    op->next_wait = NULL;
    if (s->waiting_tail != NULL)
        s->waiting_tail->next_wait = op;
    else
        s->waiting = op;
    s->waiting_tail = op;
    fetch_token(s);
}

static void op_free(struct xet_op *op)
{
    wipe_free(op->token_used);
    free(op->body_path);
    free(op->body);
    free(op);
}

static void op_finish(struct xet_op *op, const struct ckpt_err *err, const uint8_t *body,
                      size_t len)
{
    struct xet_session *s = op->s;
    s->ops_in_flight--;
    op->cb(op->ctx, err, body, len);
    op_free(op);
}

static void on_op_sent(void *ctx, int64_t delta)
{
    struct xet_op *op = ctx;
    if (op->kind == XOP_XORB)
        op->s->stats.xorb_bytes_sent += (uint64_t)delta; /* wraps back on a restarted body */
    if (op->sent != NULL)
        op->sent(op->ctx, delta);
}

/* The CAS's own sentence: a JSON error/message, or the start of a text body. */
static void cas_message(const struct xet_session *s, const struct http_response *res, char *dst,
                        size_t size)
{
    dst[0] = '\0';
    cJSON *j = cJSON_ParseWithLength(res->body, res->body_len);
    const cJSON *m = NULL;
    if (cJSON_IsObject(j)) {
        m = cJSON_GetObjectItemCaseSensitive(j, "error");
        if (!cJSON_IsString(m))
            m = cJSON_GetObjectItemCaseSensitive(j, "message");
    }
    if (cJSON_IsString(m))
        clean_copy(dst, size, m->valuestring, strlen(m->valuestring));
    else if (j == NULL && res->body_len > 0 && strncmp(res->content_type, "text/", 5) == 0)
        clean_copy(dst, size, res->body, res->body_len < 200 ? res->body_len : 200);
    cJSON_Delete(j);
    redact_secret(dst, s->token);
}

/* 0 for a usable answer; else fills err (naming the CAS, never the token). */
static int cas_error(struct xet_op *op, const struct http_response *res, struct ckpt_err *err)
{
    char where[256], msg[240];
    origin_of(op->s->cas_url, where, sizeof(where));
    switch (res->fail) {
    case HTTP_FAIL_CANCELLED:
        return ckpt_err_set(err, CKPT_ERR_IO, UV_ECANCELED, "%s cancelled", op->what);
    case HTTP_FAIL_FILE:
        return ckpt_err_set(err, CKPT_ERR_IO, -EIO, "%s: %s", op->what, res->error);
    case HTTP_FAIL_TOO_BIG:
        return ckpt_err_set(err, CKPT_ERR_PROTOCOL, -EPROTO, "%s: CAS '%s' answered garbage: %s",
                            op->what, where, res->error);
    case HTTP_FAIL_NETWORK:
        ckpt_err_set(err, CKPT_ERR_NETWORK, -ECONNABORTED, "cannot reach CAS '%s': %s (%s)", where,
                     res->error, op->what);
        return -ECONNABORTED;
    case HTTP_FAIL_NONE:
        break;
    }
    long st = res->status;
    if (st >= 200 && st <= 299)
        return 0;
    if (op->kind == XOP_QUERY && st == 404)
        return 0; /* no xorb holds the chunk */
    cas_message(op->s, res, msg, sizeof(msg));
    const char *sep = msg[0] != '\0' ? ": " : "";
    if (st == 401 || st == 403)
        ckpt_err_set(err, CKPT_ERR_AUTH, (int)st,
                     "%s: CAS '%s' refused the Xet token (HTTP %ld)%s%s", op->what, where, st, sep,
                     msg);
    else if (st == 408 || st == 429 || st >= 500)
        ckpt_err_set(err, CKPT_ERR_SERVER, (int)st,
                     "%s: CAS '%s' server error (HTTP %ld) after %u attempts%s%s", op->what, where,
                     st, res->attempts, sep, msg);
    else if (st >= 400)
        ckpt_err_set(err, CKPT_ERR_REJECTED, (int)st, "%s: CAS '%s' rejected it (HTTP %ld)%s%s",
                     op->what, where, st, sep, msg);
    else
        ckpt_err_set(err, CKPT_ERR_PROTOCOL, (int)st, "%s: CAS '%s' answered HTTP %ld", op->what,
                     where, st);
    return -EIO;
}

/* A 2xx answer's body must be what the route promises: a JSON object for the POSTs. */
static int cas_check_answer(struct xet_op *op, const struct http_response *res,
                            struct ckpt_err *err)
{
    char where[256];
    if (op->kind == XOP_QUERY)
        return 0; /* the caller parses the shard */
    origin_of(op->s->cas_url, where, sizeof(where));
    cJSON *j = cJSON_ParseWithLength(res->body, res->body_len);
    const char *key = op->kind == XOP_XORB ? "was_inserted" : "result";
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    int ok = cJSON_IsObject(j) && (cJSON_IsBool(v) || cJSON_IsNumber(v));
    cJSON_Delete(j);
    if (ok)
        return 0;
    return ckpt_err_set(err, CKPT_ERR_PROTOCOL, -EPROTO,
                        "%s: CAS '%s' answered garbage: not a JSON object with '%s'", op->what,
                        where, key);
}

static void on_op_done(void *ctx, const struct http_response *res)
{
    struct xet_op *op = ctx;
    struct xet_session *s = op->s;
    struct ckpt_err e;
    ckpt_err_clear(&e);
    op->xfer = NULL;
    bool refused = res->fail == HTTP_FAIL_NONE && res->status == 401;
    if (refused && s->token != NULL && op->token_used != NULL &&
        strcmp(s->token, op->token_used) == 0) {
        /* a token the CAS refuses is of no use to any later request either */
        wipe_free(s->token);
        s->token = NULL;
    }
    if (refused && !op->retried_auth && !op->cancelled) {
        /* expired or revoked early: one fresh token, one more try */
        op->retried_auth = 1;
        log_info("xet_token_refused", "repo='%s' request='%s', asking a fresh token",
                 hub_repo_id(s->hub), op->what);
        op_wait_token(op);
        return;
    }
    int r = cas_error(op, res, &e);
    if (r == 0 && !(op->kind == XOP_QUERY && res->status == 404))
        r = cas_check_answer(op, res, &e);
    if (r < 0) {
        redact_secret(e.msg, s->token);
        redact_secret(e.msg, op->token_used);
        op_finish(op, &e, NULL, 0);
        return;
    }
    if (op->kind == XOP_XORB)
        s->stats.xorbs_sent++;
    else if (op->kind == XOP_SHARD)
        s->stats.shards_sent++;
    if (op->kind == XOP_QUERY && res->status == 404)
        op_finish(op, NULL, NULL, 0);
    else
        op_finish(op, NULL, (const uint8_t *)res->body, res->body_len);
}

static void op_send(struct xet_op *op)
{
    struct xet_session *s = op->s;
    char url[2048], sid[160];
    struct ckpt_err e;
    if (!token_usable(s)) {
        op_wait_token(op); /* expired while it waited for a retry or a slot */
        return;
    }
    int n = snprintf(url, sizeof(url), "%s%s", s->cas_url, op->path);
    if (n < 0 || (size_t)n >= sizeof(url)) {
        ckpt_err_set(&e, CKPT_ERR_PROTOCOL, -ENAMETOOLONG, "%s: the CAS URL is too long", op->what);
        op_finish(op, &e, NULL, 0);
        return;
    }
    wipe_free(op->token_used);
    if ((op->token_used = strdup(s->token)) == NULL) {
        ckpt_err_set(&e, CKPT_ERR_IO, -ENOMEM, "%s: out of memory", op->what);
        op_finish(op, &e, NULL, 0);
        return;
    }
    struct http_request req = {
        .method = op->kind == XOP_QUERY ? "GET" : "POST",
        .url = url,
        .bearer = s->token,
        .retryable = HTTP_RETRY_ALL,
        .max_response = op->kind == XOP_QUERY ? XET_ANSWER_MAX : 0,
    };
    if (s->session_id != NULL) {
        snprintf(sid, sizeof(sid), "X-Xet-Session-Id: %.120s", s->session_id);
        req.headers[0] = sid;
    }
    if (op->kind == XOP_XORB) {
        req.content_type = "application/octet-stream";
        req.body_path = op->body_path;
        req.body_offset = 0;
        req.body_file_len = op->file_len;
        req.sent_cb = on_op_sent;
    } else if (op->kind == XOP_SHARD) {
        req.content_type = "application/octet-stream";
        req.body = op->body;
        req.body_len = op->body_len;
    }
    int r = http_send(s->http, &req, on_op_done, op, &op->xfer);
    if (r < 0) {
        ckpt_err_set(&e, CKPT_ERR_IO, r, "%s: %s", op->what, uv_strerror(r));
        op_finish(op, &e, NULL, 0);
    }
}

static struct xet_op *op_new(struct xet_session *s, enum xop_kind kind, xet_done_cb cb, void *ctx)
{
    struct xet_op *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->s = s;
    op->kind = kind;
    op->cb = cb;
    op->ctx = ctx;
    return op;
}

/* Starts op: it waits for a token or goes at once. Its callback always runs later. */
static int op_start(struct xet_op *op, struct xet_op **ret)
{
    op->s->ops_in_flight++;
    if (ret != NULL)
        *ret = op;
    if (!token_valid(op->s))
        op_wait_token(op);
    else
        op_send(op);
    return 0;
}

int xet_post_xorb(struct xet_session *s, const struct xet_hash *hash, const char *body_path,
                  uint64_t len, xet_sent_cb sent, xet_done_cb cb, void *ctx, struct xet_op **ret)
{
    char hex[XET_HASH_HEX_LEN + 1];
    struct xet_op *op = op_new(s, XOP_XORB, cb, ctx);
    if (op == NULL || (op->body_path = strdup(body_path)) == NULL) {
        free(op);
        return UV_ENOMEM;
    }
    xet_hash_to_hex(hash, hex);
    snprintf(op->path, sizeof(op->path), "/v1/xorbs/default/%s", hex);
    snprintf(op->what, sizeof(op->what), "xorb upload %.16s", hex);
    op->file_len = len;
    op->sent = sent;
    return op_start(op, ret);
}

int xet_post_shard(struct xet_session *s, const uint8_t *body, size_t len, xet_done_cb cb,
                   void *ctx, struct xet_op **ret)
{
    struct xet_op *op = op_new(s, XOP_SHARD, cb, ctx);
    if (op == NULL || (op->body = malloc(len > 0 ? len : 1)) == NULL) {
        free(op);
        return UV_ENOMEM;
    }
    memcpy(op->body, body, len);
    op->body_len = len;
    snprintf(op->path, sizeof(op->path), "/v1/shards");
    snprintf(op->what, sizeof(op->what), "shard upload for '%s'", hub_repo_id(s->hub));
    return op_start(op, ret);
}

int xet_query_chunk(struct xet_session *s, const struct xet_hash *chunk, xet_done_cb cb, void *ctx,
                    struct xet_op **ret)
{
    char hex[XET_HASH_HEX_LEN + 1];
    struct xet_op *op = op_new(s, XOP_QUERY, cb, ctx);
    if (op == NULL)
        return UV_ENOMEM;
    xet_hash_to_hex(chunk, hex);
    snprintf(op->path, sizeof(op->path), "/v1/chunks/default-merkledb/%s", hex);
    snprintf(op->what, sizeof(op->what), "dedup query %.16s", hex);
    s->stats.dedup_queries++;
    return op_start(op, ret);
}

void xet_op_cancel(struct xet_op *op)
{
    if (op->cancelled)
        return;
    op->cancelled = 1;
    if (op->xfer != NULL) {
        http_xfer_cancel(op->xfer);
        return;
    }
    if (op->waiting) {
        /* answered when the token request ends; end it now if nobody else waits */
        for (struct xet_op *w = op->s->waiting; w != NULL; w = w->next_wait)
            if (!w->cancelled)
                return;
        if (op->s->token_op != NULL)
            hub_op_cancel(op->s->token_op);
    }
}

bool xet_chunk_dedup_eligible(const struct xet_hash *chunk)
{
    /* the spec's rule: the last 64-bit word (little endian) is 0 mod 1024 */
    uint64_t w = 0;
    for (int i = 7; i >= 0; i--)
        w = w << 8 | chunk->b[24 + i];
    return w % 1024 == 0;
}

/* ---- dedup index ------------------------------------------------------------------------- */

static size_t slot_of(const struct xet_hash *h, size_t cap)
{
    uint64_t k;
    memcpy(&k, h->b, sizeof(k));
    return (size_t)k & (cap - 1);
}

/* Rehashes into cap slots, keeping the chunks of xorbs with an id above keep_above. */
static int idx_rebuild(struct xet_session *s, size_t cap, uint32_t keep_above)
{
    struct idx_entry *n = calloc(cap, sizeof(*n));
    if (n == NULL)
        return -ENOMEM;
    s->idx_used = 0;
    for (size_t i = 0; i < s->idx_cap; i++) {
        if (s->idx[i].xorb <= keep_above || s->xorb_dead[s->idx[i].xorb - 1])
            continue;
        s->idx_used++;
        size_t h = slot_of(&s->idx[i].chunk, cap);
        while (n[h].xorb != 0)
            h = (h + 1) & (cap - 1);
        n[h] = s->idx[i];
    }
    free(s->idx);
    s->idx = n;
    s->idx_cap = cap;
    return 0;
}

static int idx_grow(struct xet_session *s)
{
    return idx_rebuild(s, s->idx_cap ? s->idx_cap * 2 : 4096, 0);
}

void xet_session_trim(struct xet_session *s)
{
    while (s->n_answers > XET_ANSWERS_MAX) {
        xet_shard_free(s->answers[0]);
        free(s->answers[0]);
        memmove(s->answers, s->answers + 1, --s->n_answers * sizeof(*s->answers));
    }
    if (s->idx_used <= XET_INDEX_CHUNKS_MAX)
        return;
    /* forget the older half of the xorbs still indexed */
    uint32_t keep_above = s->evicted_to + (uint32_t)((s->n_xorbs - s->evicted_to) / 2);
    size_t cap = s->idx_cap;
    if (idx_rebuild(s, cap, keep_above) < 0)
        return; /* out of memory: keep the index as it is */
    s->evicted_to = keep_above;
    s->stats.index_evictions++;
    log_info("xet_index_trimmed", "chunks=%zu xorbs_forgotten=%u", s->idx_used, keep_above);
}

bool xet_session_find_chunk(struct xet_session *s, const struct xet_hash *chunk,
                            struct xet_hash *xorb, uint32_t *index)
{
    if (s->idx_cap > 0) {
        for (size_t h = slot_of(chunk, s->idx_cap); s->idx[h].xorb != 0;
             h = (h + 1) & (s->idx_cap - 1)) {
            if (xet_hash_equal(&s->idx[h].chunk, chunk)) {
                if (s->xorb_dead[s->idx[h].xorb - 1])
                    break;
                *xorb = s->xorbs[s->idx[h].xorb - 1];
                *index = s->idx[h].index;
                return true;
            }
        }
    }
    for (size_t i = 0; i < s->n_answers; i++) {
        size_t xi;
        uint32_t ci;
        if (xet_shard_find_chunk(s->answers[i], chunk, &xi, &ci)) {
            *xorb = s->answers[i]->xorbs[xi].hash;
            *index = ci;
            return true;
        }
    }
    return false;
}

int xet_session_add_xorb(struct xet_session *s, const struct xet_hash *xorb,
                         const struct xet_hash *chunks, size_t n)
{
    if (s->n_xorbs == s->xorbs_cap) {
        size_t cap = s->xorbs_cap ? s->xorbs_cap * 2 : 256;
        struct xet_hash *x = realloc(s->xorbs, cap * sizeof(*x));
        if (x == NULL)
            return -ENOMEM;
        s->xorbs = x;
        uint8_t *d = realloc(s->xorb_dead, cap);
        if (d == NULL)
            return -ENOMEM;
        s->xorb_dead = d;
        s->xorbs_cap = cap;
    }
    s->xorb_dead[s->n_xorbs] = 0;
    s->xorbs[s->n_xorbs++] = *xorb;
    uint32_t id = (uint32_t)s->n_xorbs;
    for (size_t i = 0; i < n; i++) {
        if ((s->idx_used + 1) * 4 > s->idx_cap * 3 && idx_grow(s) < 0)
            return -ENOMEM;
        size_t h = slot_of(&chunks[i], s->idx_cap);
        for (; s->idx[h].xorb != 0; h = (h + 1) & (s->idx_cap - 1))
            if (xet_hash_equal(&s->idx[h].chunk, &chunks[i]))
                break;
        if (s->idx[h].xorb != 0 && !s->xorb_dead[s->idx[h].xorb - 1])
            continue; /* the first xorb that holds a chunk keeps it */
        if (s->idx[h].xorb == 0)
            s->idx_used++;
        s->idx[h].chunk = chunks[i];
        s->idx[h].xorb = id;
        s->idx[h].index = (uint32_t)i;
    }
    return (int)id;
}

void xet_session_forget_xorb(struct xet_session *s, int id)
{
    if (id > 0 && (size_t)id <= s->n_xorbs)
        s->xorb_dead[id - 1] = 1;
}

int xet_session_add_answer(struct xet_session *s, struct xet_shard *answer)
{
    struct xet_shard **a = realloc(s->answers, (s->n_answers + 1) * sizeof(*a));
    if (a == NULL)
        return -ENOMEM;
    s->answers = a;
    s->answers[s->n_answers++] = answer;
    return 0;
}

/* Indexes a parsed shard of our own (plain chunk hashes) xorb by xorb. */
static void index_own_shard(struct xet_session *s, const struct xet_shard *sh)
{
    for (size_t x = 0; x < sh->nxorbs; x++) {
        const struct xet_shard_xorb *xo = &sh->xorbs[x];
        struct xet_hash *hs = malloc((xo->nchunks > 0 ? xo->nchunks : 1) * sizeof(*hs));
        if (hs == NULL)
            return;
        for (size_t c = 0; c < xo->nchunks; c++)
            hs[c] = sh->chunks[xo->first_chunk + c].hash;
        xet_session_add_xorb(s, &xo->hash, hs, xo->nchunks);
        free(hs);
    }
}

/* ---- shard cache (pool) ------------------------------------------------------------------ */

static int cmp_newest_first(const void *a, const void *b)
{
    const struct cached_file *x = a, *y = b;
    return x->mtime < y->mtime ? 1 : x->mtime > y->mtime ? -1 : strcmp(x->name, y->name);
}

static int read_whole(const char *path, uint8_t **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)XET_CACHE_BYTES_MAX) {
        close(fd);
        return -EINVAL;
    }
    uint8_t *buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    size_t got = 0;
    if (buf == NULL) {
        close(fd);
        return -ENOMEM;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (got != (size_t)st.st_size) {
        free(buf);
        return -EIO;
    }
    *out = buf;
    *len = got;
    return 0;
}

/* Xorbs a killed daemon was building or sending: rebuilt when needed, never trusted. */
static void clear_work_dir(const char *cache_dir)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/tmp", cache_dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len > 5 && strcmp(de->d_name + len - 5, ".xorb") == 0)
            unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
}

static void cache_load(struct cache_job *job)
{
    char dir[4096], path[4200];
    clear_work_dir(job->s->cache_dir);
    snprintf(dir, sizeof(dir), "%s/shards-%s", job->s->cache_dir, job->s->scope);
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct cached_file *files = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        struct stat st;
        if (len != XET_HASH_HEX_LEN + 6 || strcmp(de->d_name + XET_HASH_HEX_LEN, ".shard") != 0)
            continue;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            struct cached_file *f = realloc(files, cap * sizeof(*f));
            if (f == NULL)
                break;
            files = f;
        }
        files[n].name = strdup(de->d_name);
        files[n].mtime = st.st_mtime;
        files[n].size = st.st_size;
        if (files[n].name != NULL)
            n++;
    }
    closedir(d);
    qsort(files, n, sizeof(*files), cmp_newest_first);
    job->shards = calloc(n > 0 ? n : 1, sizeof(*job->shards));
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
        bytes += (uint64_t)files[i].size;
        if (job->shards == NULL || i >= XET_CACHE_SHARDS_MAX || bytes > XET_CACHE_BYTES_MAX) {
            unlink(path); /* the oldest go */
            continue;
        }
        uint8_t *data = NULL;
        size_t len = 0;
        char why[160] = "";
        int r = read_whole(path, &data, &len);
        if (r == 0) {
            r = xet_shard_parse(data, len, &job->shards[job->nshards], why, sizeof(why));
            free(data);
        } else {
            snprintf(why, sizeof(why), "%s", strerror(-r));
        }
        if (r == 0) {
            job->nshards++;
        } else {
            job->bad++;
            snprintf(job->bad_name, sizeof(job->bad_name), "%.100s", files[i].name);
            snprintf(job->bad_why, sizeof(job->bad_why), "%s", why);
            unlink(path); /* never trusted again; the content is still in the CAS */
        }
    }
    for (size_t i = 0; i < n; i++)
        free(files[i].name);
    free(files);
}

static int mkdir_p(const char *dir)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    return mkdir(tmp, 0700) < 0 && errno != EEXIST ? -errno : 0;
}

static void cache_store(struct cache_job *job)
{
    char dir[4096], tmp[4200], path[4200];
    snprintf(dir, sizeof(dir), "%s/shards-%s", job->s->cache_dir, job->s->scope);
    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, job->name);
    snprintf(path, sizeof(path), "%s/%s.shard", dir, job->name);
    if ((job->status = mkdir_p(dir)) < 0)
        return;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        job->status = -errno;
        return;
    }
    size_t off = 0;
    while (off < job->len) {
        ssize_t n = write(fd, job->data + off, job->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            job->status = n < 0 ? -errno : -EIO;
            break;
        }
        off += (size_t)n;
    }
    if (job->status == 0 && fsync(fd) < 0)
        job->status = -errno;
    close(fd);
    if (job->status == 0 && rename(tmp, path) < 0)
        job->status = -errno;
    if (job->status < 0)
        unlink(tmp);
}

static void cache_work(uv_work_t *w)
{
    struct cache_job *job = w->data;
    if (job->load)
        cache_load(job);
    else
        cache_store(job);
}

static void cache_done(uv_work_t *w, int status)
{
    struct cache_job *job = w->data;
    struct xet_session *s = job->s;
    (void)status;
    s->ops_in_flight--;
    s->cache_jobs--;
    if (s->free_pending) {
        for (size_t i = 0; job->load && i < job->nshards; i++)
            xet_shard_free(&job->shards[i]);
        if (job->load)
            free(job->shards);
        free(job->data);
        free(job);
        if (s->cache_jobs == 0)
            session_release(s);
        return;
    }
    if (job->load) {
        /* oldest first: trimming forgets the oldest xorbs first */
        for (size_t i = job->nshards; i-- > 0;) {
            index_own_shard(s, &job->shards[i]);
            xet_shard_free(&job->shards[i]);
        }
        xet_session_trim(s);
        free(job->shards);
        s->stats.cached_shards = job->nshards;
        if (job->bad > 0)
            log_warn("xet_cache_bad_shard",
                     "dir='%s' files=%u last='%s' error='%s', skipped and deleted", s->cache_dir,
                     job->bad, job->bad_name, job->bad_why);
        log_info("xet_cache_loaded", "dir='%s' shards=%zu chunks=%zu", s->cache_dir, job->nshards,
                 s->idx_used);
        s->cache_state = 2;
        while (s->ready != NULL) {
            struct ready_waiter *r = s->ready;
            s->ready = r->next;
            r->cb(r->ctx);
            free(r);
        }
    } else {
        if (job->status < 0)
            log_warn("xet_cache_write_failed", "dir='%s' shard=%s error='%s'", s->cache_dir,
                     job->name, uv_strerror(job->status));
        else
            s->stats.cached_shards++;
        free(job->data);
    }
    free(job);
}

static int cache_queue(struct xet_session *s, struct cache_job *job)
{
    job->s = s;
    job->work.data = job;
    int r = uv_queue_work(s->loop, &job->work, cache_work, cache_done);
    if (r == 0) {
        s->ops_in_flight++;
        s->cache_jobs++;
    }
    return r;
}

int xet_session_when_ready(struct xet_session *s, xet_ready_cb cb, void *ctx)
{
    if (s->cache_state == 2) {
        cb(ctx);
        return 0;
    }
    struct ready_waiter *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return UV_ENOMEM;
    w->cb = cb;
    w->ctx = ctx;
    w->next = s->ready;
    s->ready = w;
    if (s->cache_state == 0) {
        struct cache_job *job = calloc(1, sizeof(*job));
        int r = job != NULL ? (job->load = 1, cache_queue(s, job)) : UV_ENOMEM;
        if (r < 0) {
            free(job);
            s->ready = w->next;
            free(w);
            return r;
        }
        s->cache_state = 1;
    }
    return 0;
}

void xet_session_cache_shard(struct xet_session *s, const struct xet_hash *name,
                             const uint8_t *shard, size_t len)
{
    if (s->cache_dir == NULL)
        return;
    struct cache_job *job = calloc(1, sizeof(*job));
    if (job == NULL || (job->data = malloc(len > 0 ? len : 1)) == NULL) {
        free(job);
        return;
    }
    memcpy(job->data, shard, len);
    job->len = len;
    xet_hash_to_hex(name, job->name);
    if (cache_queue(s, job) < 0) {
        free(job->data);
        free(job);
    }
}
