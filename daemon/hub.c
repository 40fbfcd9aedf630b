/* hub.c - Hub protocol requests and answers (see docs/hub-protocol.md sections 1-7).
 *
 * Owns URLs, JSON/NDJSON bodies, cJSON parsing that never trusts a type, and the mapping of a
 * failed request to a ckpt_err sentence that names the repo but never the token. Transport and
 * retries are http.c's. Loop thread only.
 */
#include "hub.h"

#include "http.h"
#include "hub_internal.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <uv.h>

#define HUB_ANSWER_MAX (8u * 1024 * 1024) /* a 100-object batch answer is well under this */
#define HUB_COMMIT_DATES_MAX 1000         /* one page of history; the Hub sends fewer */

struct hub {
    struct http *http;
    char *endpoint;
    char *token;
    char *repo_id;
    char *rev;
    char *rev_enc;
    const char *type_seg;   /* models, datasets, spaces */
    const char *web_prefix; /* "", "datasets/", "spaces/" */
    const char *type_name;  /* model, dataset, space */
    bool private_repo;
    enum hub_transfer transfer;
    size_t n_ops;
};

enum op_kind {
    OP_WHOAMI,
    OP_ENSURE_REPO,
    OP_ENSURE_BRANCH,
    OP_HEAD,
    OP_PREUPLOAD,
    OP_BATCH,
    OP_PUT,
    OP_COMPLETE,
    OP_COMMIT,
    OP_COMMITS,
    OP_XET_TOKEN
};

struct hub_op {
    struct hub *hub;
    enum op_kind kind;
    struct http_xfer *xfer;
    void *ctx;
    union {
        hub_done_cb done;
        hub_user_cb user;
        hub_oid_cb oid;
        hub_etag_cb etag;
        hub_dates_cb dates;
        hub_xet_token_cb xet_token;
    } cb;
    hub_sent_cb sent;
    struct hub_preupload_file *files;
    struct hub_lfs_object *objs;
    size_t n;
    int storage;     /* presigned URL: 401/403 mean an expired URL, not a bad token */
    char what[160];  /* for messages: "preupload to 'ns/name'" */
    char where[256]; /* what "cannot reach" names: the endpoint or a storage origin */
};

/* ---- small helpers ----------------------------------------------------------------------- */

struct sbuf {
    char *p;
    size_t len, cap, max;
    int failed; /* sticky: after a failure appends are no-ops, checked once at the end */
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->max) {
        b->failed = UV_E2BIG;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = UV_ENOMEM;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* Appends s as a JSON string literal. */
static void sb_json(struct sbuf *b, const char *s)
{
    char *q = NULL;
    cJSON *j = cJSON_CreateString(s);
    if (j != NULL)
        q = cJSON_PrintUnformatted(j);
    if (q == NULL)
        b->failed = UV_ENOMEM;
    else
        sb_str(b, q);
    free(q);
    cJSON_Delete(j);
}

static void sb_base64(struct sbuf *b, const void *data, size_t len)
{
    /* EVP_EncodeBlock works on int lengths: go in slices that are multiples of 3 */
    const unsigned char *p = data;
    unsigned char out[4 * 4096 / 3 + 4];
    while (len > 0 && !b->failed) {
        size_t n = len > 3 * 1024 ? 3 * 1024 : len;
        int m = EVP_EncodeBlock(out, p, (int)n);
        sb_add(b, (const char *)out, (size_t)m);
        p += n;
        len -= n;
    }
}

static char *pct_encode(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1);
    if (out == NULL)
        return NULL;
    char *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            *o++ = (char)*p;
        } else {
            static const char hexd[] = "0123456789ABCDEF";
            *o++ = '%';
            *o++ = hexd[*p >> 4];
            *o++ = hexd[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/* Copies s into dst with control and non-ASCII bytes replaced, so messages stay one line. */
static void clean_copy(char *dst, size_t size, const char *s, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; i < n && s[i] != '\0' && j + 1 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[j++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    dst[j] = '\0';
}

static int is_hex(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    }
    return 1;
}

static const char *json_str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- errors ------------------------------------------------------------------------------ */

/* The Hub's own sentence: X-Error-Message, else the JSON body's error/message. */
static void hub_message(const struct http_response *res, char *dst, size_t size)
{
    dst[0] = '\0';
    if (res->error_message[0] != '\0') {
        clean_copy(dst, size, res->error_message, sizeof(res->error_message));
        return;
    }
    cJSON *j = cJSON_ParseWithLength(res->body, res->body_len);
    const char *m = NULL;
    if (cJSON_IsObject(j)) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        if (cJSON_IsString(e))
            m = e->valuestring;
        else if (cJSON_IsArray(e) && cJSON_IsString(cJSON_GetArrayItem(e, 0)))
            m = cJSON_GetArrayItem(e, 0)->valuestring;
        if (m == NULL)
            m = json_str(j, "message");
        if (m == NULL)
            m = json_str(j, "error_description");
        const cJSON *errs = cJSON_GetObjectItemCaseSensitive(j, "errors");
        if (m == NULL && cJSON_IsArray(errs))
            m = json_str(cJSON_GetArrayItem(errs, 0), "message");
    }
    if (m != NULL)
        clean_copy(dst, size, m, strlen(m));
    else if (j == NULL && res->body_len > 0 && strncmp(res->content_type, "text/", 5) == 0)
        clean_copy(dst, size, res->body, res->body_len < 200 ? res->body_len : 200);
    cJSON_Delete(j);
}

/* A hostile server could echo the token back: never let it into a message. Every error passes
 * through here in on_http_done before a callback sees it. A server's text is clipped before it is
 * quoted, so it may end in the token's first characters: such text is cleaned where it is clipped,
 * before anything follows it. */
static void redact(const struct hub *hub, char *text, size_t size)
{
    if (hub->token == NULL || strlen(hub->token) < 4)
        return;
    size_t tl = strlen(hub->token);
    char *p;
    while ((p = strstr(text, hub->token)) != NULL) {
        memmove(p + 3, p + tl, strlen(p + tl) + 1);
        memcpy(p, "***", 3);
    }
    size_t len = strlen(text);
    for (size_t keep = tl - 1; keep >= 4; keep--) {
        if (len >= keep && memcmp(text + len - keep, hub->token, keep) == 0) {
            snprintf(text + len - keep, size - (len - keep), "***");
            break;
        }
    }
}

/* Returns 0 for a 2xx answer, else fills err and returns its code. */
static int map_error(struct hub_op *op, const struct http_response *res, struct ckpt_err *err)
{
    struct hub *hub = op->hub;
    char msg[300];
    char rid[HTTP_HDR_SHORT + 24] = "";
    if (res->request_id[0] != '\0') {
        char clean[HTTP_HDR_SHORT];
        clean_copy(clean, sizeof(clean), res->request_id, sizeof(res->request_id));
        snprintf(rid, sizeof(rid), " (request id %s)", clean);
    }
    switch (res->fail) {
    case HTTP_FAIL_CANCELLED:
        return ckpt_err_set(err, CKPT_ERR_IO, UV_ECANCELED, "%s cancelled", op->what);
    case HTTP_FAIL_FILE:
        return ckpt_err_set(err, CKPT_ERR_IO, -EIO, "%s: %s", op->what, res->error);
    case HTTP_FAIL_TOO_BIG:
        return ckpt_err_set(err, CKPT_ERR_PROTOCOL, -EPROTO, "%s: %s", op->what, res->error);
    case HTTP_FAIL_NETWORK:
        ckpt_err_set(err, CKPT_ERR_NETWORK, -ECONNABORTED, "cannot reach '%s': %s (%s)", op->where,
                     res->error, op->what);
        return -ECONNABORTED;
    case HTTP_FAIL_NONE:
        break;
    }
    long st = res->status;
    if (st >= 200 && st <= 299)
        return 0;
    hub_message(res, msg, sizeof(msg));
    redact(hub, msg, sizeof(msg));
    const char *sep = msg[0] != '\0' ? ": " : "";
    int code = (int)st;
    if ((st == 401 || st == 403) && !op->storage) {
        ckpt_err_set(err, CKPT_ERR_AUTH, code,
                     "%s: the token was rejected or lacks access to repo '%s' (HTTP %ld)%s%s%s",
                     op->what, hub->repo_id, st, sep, msg, rid);
    } else if (st == 404 && !op->storage) {
        if (strcmp(res->error_code, "RevisionNotFound") == 0)
            ckpt_err_set(err, CKPT_ERR_NOT_FOUND, code,
                         "%s: revision '%s' not found in repo '%s'%s%s%s", op->what, hub->rev,
                         hub->repo_id, sep, msg, rid);
        else
            ckpt_err_set(err, CKPT_ERR_NOT_FOUND, code, "%s: repo '%s' not found (HTTP 404)%s%s%s",
                         op->what, hub->repo_id, sep, msg, rid);
    } else if (st == 409 || st == 412) {
        ckpt_err_set(err, CKPT_ERR_CONFLICT, code, "%s: conflict (HTTP %ld)%s%s%s", op->what, st,
                     sep, msg, rid);
    } else if (st == 408 || st == 429 || st >= 500) {
        ckpt_err_set(err, CKPT_ERR_SERVER, code,
                     "%s: server error (HTTP %ld) after %u attempts%s%s%s", op->what, st,
                     res->attempts, sep, msg, rid);
    } else if (st >= 400) {
        ckpt_err_set(err, CKPT_ERR_REJECTED, code, "%s: rejected (HTTP %ld)%s%s%s", op->what, st,
                     sep, msg, rid);
    } else {
        ckpt_err_set(err, CKPT_ERR_PROTOCOL, code, "%s: unexpected HTTP %ld", op->what, st);
    }
    return -EIO; /* err->code holds the HTTP status */
}

static int protocol_error(struct hub_op *op, struct ckpt_err *err, const char *what)
{
    return ckpt_err_set(err, CKPT_ERR_PROTOCOL, -EPROTO, "%s: bad answer: %s", op->what, what);
}

/* ---- config ------------------------------------------------------------------------------ */

static int valid_part(const char *s, size_t n)
{
    if (n == 0 || n > 96)
        return 0;
    if (s[0] == '-' || s[0] == '.' || s[n - 1] == '-' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '-' || c == '_' || c == '.'))
            return 0;
        if (i > 0 && (c == '-' || c == '.') && s[i - 1] == c)
            return 0; /* the Hub refuses "--" and ".." */
    }
    return 1;
}

int hub_validate_repo_id(const char *repo_id, struct ckpt_err *err)
{
    char shown[160];
    size_t n = repo_id != NULL ? strlen(repo_id) : 0;
    clean_copy(shown, sizeof(shown), repo_id != NULL ? repo_id : "", n);
    const char *slash = repo_id != NULL ? strchr(repo_id, '/') : NULL;
    if (slash == NULL)
        return ckpt_err_set(err, CKPT_ERR_INPUT, -EINVAL,
                            "invalid repo id '%s': expected 'namespace/name'", shown);
    if (strchr(slash + 1, '/') != NULL)
        return ckpt_err_set(err, CKPT_ERR_INPUT, -EINVAL, "invalid repo id '%s': more than one '/'",
                            shown);
    if (!valid_part(repo_id, (size_t)(slash - repo_id)) ||
        !valid_part(slash + 1, strlen(slash + 1)))
        return ckpt_err_set(err, CKPT_ERR_INPUT, -EINVAL,
                            "invalid repo id '%s': each part is 1-96 of [A-Za-z0-9._-], not "
                            "starting or ending with '-' or '.', without '--' or '..'",
                            shown);
    return 0;
}

int hub_init(struct hub **ret, struct http *http, const struct hub_config *cfg,
             struct ckpt_err *err)
{
    int r = hub_validate_repo_id(cfg->repo_id, err);
    if (r < 0)
        return UV_EINVAL;
    const char *ep = cfg->endpoint;
    if (ep == NULL || (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0)) {
        char shown[160];
        clean_copy(shown, sizeof(shown), ep != NULL ? ep : "", ep != NULL ? strlen(ep) : 0);
        ckpt_err_set(err, CKPT_ERR_INPUT, -EINVAL,
                     "invalid endpoint '%s': expected http:// or https://", shown);
        return UV_EINVAL;
    }
    for (const char *p = ep; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '?' || *p == '#') {
            ckpt_err_set(err, CKPT_ERR_INPUT, -EINVAL,
                         "invalid endpoint: contains a space, control character, '?' or '#'");
            return UV_EINVAL;
        }
    }
    const char *type = cfg->repo_type != NULL ? cfg->repo_type : "model";
    struct hub *hub = calloc(1, sizeof(*hub));
    if (hub == NULL)
        return UV_ENOMEM;
    if (strcmp(type, "model") == 0) {
        hub->type_seg = "models";
        hub->web_prefix = "";
    } else if (strcmp(type, "dataset") == 0) {
        hub->type_seg = "datasets";
        hub->web_prefix = "datasets/";
    } else if (strcmp(type, "space") == 0) {
        hub->type_seg = "spaces";
        hub->web_prefix = "spaces/";
    } else {
        free(hub);
        ckpt_err_set(err, CKPT_ERR_INPUT, -EINVAL,
                     "invalid repo type: expected 'model', 'dataset' or 'space'");
        return UV_EINVAL;
    }
    hub->type_name = type[0] == 'm' ? "model" : type[0] == 'd' ? "dataset" : "space";
    hub->http = http;
    hub->private_repo = cfg->private_repo;
    hub->transfer = cfg->transfer;
    hub->endpoint = strdup(ep);
    hub->repo_id = strdup(cfg->repo_id);
    hub->rev = strdup(cfg->revision != NULL ? cfg->revision : "main");
    hub->token = cfg->token != NULL && cfg->token[0] != '\0' ? strdup(cfg->token) : NULL;
    if (hub->endpoint == NULL || hub->repo_id == NULL || hub->rev == NULL ||
        (cfg->token != NULL && cfg->token[0] != '\0' && hub->token == NULL))
        goto nomem;
    hub->rev_enc = pct_encode(hub->rev);
    if (hub->rev_enc == NULL)
        goto nomem;
    size_t n = strlen(hub->endpoint);
    while (n > 0 && hub->endpoint[n - 1] == '/')
        hub->endpoint[--n] = '\0';
    *ret = hub;
    return 0;
nomem:
    hub_free(hub);
    return UV_ENOMEM;
}

void hub_free(struct hub *hub)
{
    if (hub == NULL)
        return;
    if (hub->token != NULL)
        explicit_bzero(hub->token, strlen(hub->token));
    free(hub->token);
    free(hub->endpoint);
    free(hub->repo_id);
    free(hub->rev);
    free(hub->rev_enc);
    free(hub);
}

int hub_set_token(struct hub *hub, const char *token)
{
    char *copy = token ? strdup(token) : NULL;

    if (token != NULL && copy == NULL)
        return -ENOMEM;
    if (hub->token != NULL) {
        explicit_bzero(hub->token, strlen(hub->token));
        free(hub->token);
    }
    hub->token = copy;
    return 0;
}

int hub_set_revision(struct hub *hub, const char *revision)
{
    const char *rev = revision != NULL && revision[0] != '\0' ? revision : "main";
    char *copy, *enc;

    if (strcmp(rev, hub->rev) == 0)
        return 0;
    if ((copy = strdup(rev)) == NULL || (enc = pct_encode(rev)) == NULL) {
        free(copy);
        return -ENOMEM;
    }
    free(hub->rev);
    free(hub->rev_enc);
    hub->rev = copy;
    hub->rev_enc = enc;
    return 0;
}

const char *hub_revision(const struct hub *hub)
{
    return hub->rev;
}

const char *hub_repo_id(const struct hub *hub)
{
    return hub->repo_id;
}

const char *hub_endpoint(const struct hub *hub)
{
    return hub->endpoint;
}

enum hub_transfer hub_transfer_mode(const struct hub *hub)
{
    return hub->transfer;
}

struct http *hub_http(const struct hub *hub)
{
    return hub->http;
}

/* ---- request plumbing -------------------------------------------------------------------- */

static void on_http_done(void *ctx, const struct http_response *res);

static struct hub_op *op_new(struct hub *hub, enum op_kind kind, void *ctx, const char *verb)
{
    struct hub_op *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->hub = hub;
    op->kind = kind;
    op->ctx = ctx;
    snprintf(op->what, sizeof(op->what), "%s '%s'", verb, hub->repo_id);
    snprintf(op->where, sizeof(op->where), "%s", hub->endpoint);
    return op;
}

/* Sends req for op. On failure frees op and returns the error (no callback). */
static int op_send(struct hub_op *op, struct http_request *req, struct hub_op **ret_op)
{
    int r = http_send(op->hub->http, req, on_http_done, op, &op->xfer);
    if (r < 0) {
        free(op);
        return r;
    }
    op->hub->n_ops++;
    if (ret_op != NULL)
        *ret_op = op;
    return 0;
}

/* op for a request whose JSON body b holds. When building b or the op failed: frees b, sets *ret
 * to the error and returns NULL. */
static struct hub_op *op_new_body(struct hub *hub, enum op_kind kind, void *ctx, const char *verb,
                                  struct sbuf *b, int *ret)
{
    struct hub_op *op = b->failed ? NULL : op_new(hub, kind, ctx, verb);
    if (op == NULL) {
        free(b->p);
        *ret = b->failed ? b->failed : UV_ENOMEM;
    }
    return op;
}

/* op_send with b as the body; b is freed either way (http_send copied it). */
static int op_send_body(struct hub_op *op, struct http_request *req, struct sbuf *b,
                        struct hub_op **ret_op)
{
    req->body = b->p;
    req->body_len = b->len;
    int r = op_send(op, req, ret_op);
    free(b->p);
    return r;
}

static int api_url(struct hub *hub, char *dst, size_t size, const char *what)
{
    int n = snprintf(dst, size, "%s/api/%s/%s/%s/%s", hub->endpoint, hub->type_seg, hub->repo_id,
                     what, hub->rev_enc);
    return n < 0 || (size_t)n >= size ? UV_ENAMETOOLONG : 0;
}

void hub_op_cancel(struct hub_op *op)
{
    http_xfer_cancel(op->xfer);
}

/* ---- answers ----------------------------------------------------------------------------- */

static int parse_whoami(struct hub_op *op, const cJSON *j, struct ckpt_err *err,
                        const char **ret_name)
{
    *ret_name = json_str(j, "name");
    return *ret_name != NULL ? 0 : protocol_error(op, err, "no string 'name'");
}

static int parse_oid(struct hub_op *op, const cJSON *j, struct ckpt_err *err, const char *key,
                     const char **ret_oid)
{
    const char *oid = json_str(j, key);
    if (oid == NULL || !is_hex(oid, 40, 40)) {
        char what[64];
        snprintf(what, sizeof(what), "no 40-hex '%s'", key);
        return protocol_error(op, err, what);
    }
    *ret_oid = oid;
    return 0;
}

static int parse_preupload(struct hub_op *op, const cJSON *j, struct ckpt_err *err,
                           const char **ret_oid)
{
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(j, "files");
    if (!cJSON_IsArray(files))
        return protocol_error(op, err, "'files' is not an array");
    for (size_t i = 0; i < op->n; i++)
        op->files[i].mode = HUB_MODE_UNKNOWN;
    const cJSON *f;
    cJSON_ArrayForEach(f, files)
    {
        const char *path = json_str(f, "path");
        const char *mode = json_str(f, "uploadMode");
        const cJSON *ign = cJSON_GetObjectItemCaseSensitive(f, "shouldIgnore");
        const cJSON *oid = cJSON_GetObjectItemCaseSensitive(f, "oid");
        if (path == NULL || mode == NULL)
            return protocol_error(op, err, "a file without string 'path' or 'uploadMode'");
        if (strcmp(mode, "lfs") != 0 && strcmp(mode, "regular") != 0)
            return protocol_error(op, err, "'uploadMode' is neither 'lfs' nor 'regular'");
        if (ign != NULL && !cJSON_IsBool(ign) && !cJSON_IsNull(ign))
            return protocol_error(op, err, "'shouldIgnore' is not a boolean");
        if (oid != NULL && !cJSON_IsNull(oid) &&
            !(cJSON_IsString(oid) && is_hex(oid->valuestring, 40, 64)))
            return protocol_error(op, err, "'oid' is not a hex string");
        for (size_t i = 0; i < op->n; i++) {
            struct hub_preupload_file *pf = &op->files[i];
            if (strcmp(pf->path, path) != 0)
                continue;
            /* an empty PUT to S3 fails: 0-byte files are always regular (as py does) */
            pf->mode = strcmp(mode, "lfs") == 0 && pf->size > 0 ? HUB_MODE_LFS : HUB_MODE_REGULAR;
            pf->should_ignore = cJSON_IsTrue(ign);
            snprintf(pf->remote_oid, sizeof(pf->remote_oid), "%s",
                     cJSON_IsString(oid) ? oid->valuestring : "");
        }
    }
    for (size_t i = 0; i < op->n; i++) {
        if (op->files[i].mode == HUB_MODE_UNKNOWN)
            return protocol_error(op, err, "a file we asked about is missing");
    }
    const cJSON *head = cJSON_GetObjectItemCaseSensitive(j, "commitOid");
    if (!cJSON_IsString(head) || !is_hex(head->valuestring, 40, 40))
        return protocol_error(op, err, "no 40-hex 'commitOid'");
    *ret_oid = head->valuestring;
    return 0;
}

/* n decimal digits at s, nothing else (sscanf's %d would take a sign or spaces): the value, or
 * -1. */
static int fixed_digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* "2026-11-24T00:21:19.000Z" or with an offset ("+02:00"): Unix seconds. */
static int parse_iso8601(const char *s, int64_t *ret)
{
    struct tm tm = {0};
    if (strlen(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
        s[16] != ':')
        return -EINVAL;
    tm.tm_year = fixed_digits(s, 4);
    tm.tm_mon = fixed_digits(s + 5, 2);
    tm.tm_mday = fixed_digits(s + 8, 2);
    tm.tm_hour = fixed_digits(s + 11, 2);
    tm.tm_min = fixed_digits(s + 14, 2);
    tm.tm_sec = fixed_digits(s + 17, 2);
    if (tm.tm_year < 0 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 || tm.tm_sec < 0 ||
        tm.tm_sec > 60)
        return -EINVAL;
    s += 19;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++)
            ;
    int offset_s = 0;
    if ((s[0] == '+' || s[0] == '-') && strlen(s) == 6 && s[3] == ':') {
        int h = fixed_digits(s + 1, 2), m = fixed_digits(s + 4, 2);
        if (h < 0 || h > 23 || m < 0 || m > 59)
            return -EINVAL;
        offset_s = (s[0] == '+' ? 1 : -1) * (h * 3600 + m * 60);
    } else if (strcmp(s, "Z") != 0) {
        return -EINVAL;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *ret = (int64_t)t - offset_s;
    return 0;
}

/* An array of commits, newest first; each must carry its date. The repo's creation made the
 * last one when it is titled so: not a commit anyone pushed. */
static int parse_commit_dates(struct hub_op *op, const cJSON *j, struct ckpt_err *err,
                              int64_t **ret_dates, size_t *ret_n)
{
    if (!cJSON_IsArray(j))
        return protocol_error(op, err, "not a JSON array of commits");
    size_t n = (size_t)cJSON_GetArraySize(j);
    const cJSON *last = cJSON_GetArrayItem(j, (int)n - 1);
    const char *title = n > 0 ? json_str(last, "title") : NULL;
    if (title != NULL && strcmp(title, "initial commit") == 0)
        n--;
    if (n > HUB_COMMIT_DATES_MAX)
        n = HUB_COMMIT_DATES_MAX;
    int64_t *dates = calloc(n > 0 ? n : 1, sizeof(*dates));
    if (dates == NULL)
        return ckpt_err_set(err, CKPT_ERR_IO, UV_ENOMEM, "out of memory");
    size_t i = 0;
    for (const cJSON *c = j->child; c != NULL && i < n; c = c->next, i++) {
        const char *date = json_str(c, "date");
        if (date == NULL || parse_iso8601(date, &dates[i]) < 0) {
            free(dates);
            return protocol_error(op, err, "a commit without an ISO 8601 'date'");
        }
    }
    *ret_dates = dates;
    *ret_n = n;
    return 0;
}

static int parse_u64(const cJSON *v, uint64_t *ret)
{
    if (cJSON_IsNumber(v)) {
        if (v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
            v->valuedouble != (double)(uint64_t)v->valuedouble)
            return -1;
        *ret = (uint64_t)v->valuedouble;
        return 0;
    }
    if (cJSON_IsString(v)) {
        const char *s = v->valuestring;
        if (*s == '\0' || strlen(s) > 19 || strspn(s, "0123456789") != strlen(s))
            return -1;
        *ret = strtoull(s, NULL, 10);
        return 0;
    }
    return -1;
}

static int parse_multipart(struct hub_op *op, struct hub_lfs_object *o, const cJSON *hdr,
                           struct ckpt_err *err)
{
    if (parse_u64(cJSON_GetObjectItemCaseSensitive(hdr, "chunk_size"), &o->chunk_size) < 0 ||
        o->chunk_size == 0)
        return protocol_error(op, err, "multipart 'chunk_size' is not a positive integer");
    uint64_t n = (o->size + o->chunk_size - 1) / o->chunk_size;
    size_t digits = 0;
    const cJSON *h;
    cJSON_ArrayForEach(h, hdr)
    {
        if (h->string != NULL && h->string[0] != '\0' &&
            strspn(h->string, "0123456789") == strlen(h->string))
            digits++;
    }
    if (n == 0 || n > HUB_PARTS_MAX || digits != n)
        return ckpt_err_set(err, CKPT_ERR_PROTOCOL, -EPROTO,
                            "%s: invalid multipart answer for '%s': %zu part URLs for %" PRIu64
                            " bytes in chunks of %" PRIu64,
                            op->what, o->oid, digits, o->size, o->chunk_size);
    o->part_urls = calloc((size_t)n, sizeof(char *));
    if (o->part_urls == NULL)
        return ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "%s: out of memory", op->what);
    o->n_parts = (size_t)n;
    cJSON_ArrayForEach(h, hdr)
    {
        if (h->string == NULL || h->string[0] == '\0' ||
            strspn(h->string, "0123456789") != strlen(h->string))
            continue;
        unsigned long k = strlen(h->string) > 6 ? 0 : strtoul(h->string, NULL, 10);
        if (k < 1 || k > n || o->part_urls[k - 1] != NULL || !cJSON_IsString(h))
            return protocol_error(op, err, "multipart part keys are not 1..N once each");
        o->part_urls[k - 1] = strdup(h->valuestring);
        if (o->part_urls[k - 1] == NULL)
            return ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "%s: out of memory", op->what);
    }
    return 0;
}

/* The value of header name (any case) in an LFS action's header object, or NULL. */
static const char *header_value(const cJSON *hdr, const char *name)
{
    const cJSON *h;
    cJSON_ArrayForEach(h, hdr)
    {
        if (h->string != NULL && strcasecmp(h->string, name) == 0)
            return cJSON_IsString(h) ? h->valuestring : NULL;
    }
    return NULL;
}

/* A Xet answer's upload headers: where the CAS is and a first write token. */
static int parse_xet_action(struct hub_op *op, struct hub_lfs_object *lo, const cJSON *hdr,
                            struct ckpt_err *err)
{
    const char *cas = header_value(hdr, "X-Xet-Cas-Url");
    const char *token = header_value(hdr, "X-Xet-Access-Token");
    const char *exp = header_value(hdr, "X-Xet-Token-Expiration");
    const char *sid = header_value(hdr, "X-Xet-Session-Id");
    lo->action = HUB_LFS_XET;
    if (cas != NULL && strncmp(cas, "http://", 7) != 0 && strncmp(cas, "https://", 8) != 0)
        return protocol_error(op, err, "'X-Xet-Cas-Url' is not an http(s) URL");
    if (exp != NULL &&
        (exp[0] == '\0' || strlen(exp) > 12 || strspn(exp, "0123456789") != strlen(exp)))
        return protocol_error(op, err, "'X-Xet-Token-Expiration' is not a number of seconds");
    if (cas == NULL || token == NULL || token[0] == '\0')
        return 0; /* the session asks the token endpoint */
    lo->xet_cas_url = strdup(cas);
    lo->xet_token = strdup(token);
    lo->xet_session_id = sid != NULL && sid[0] != '\0' ? strdup(sid) : NULL;
    lo->xet_token_exp = exp != NULL ? (int64_t)strtoll(exp, NULL, 10) : 0;
    if (lo->xet_cas_url == NULL || lo->xet_token == NULL ||
        (sid != NULL && sid[0] != '\0' && lo->xet_session_id == NULL))
        return ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "%s: out of memory", op->what);
    return 0;
}

static int parse_batch(struct hub_op *op, const cJSON *j, struct ckpt_err *err)
{
    const cJSON *objects = cJSON_GetObjectItemCaseSensitive(j, "objects");
    if (!cJSON_IsArray(objects))
        return protocol_error(op, err, "'objects' is not an array");
    const char *transfer = json_str(j, "transfer");
    bool xet = transfer != NULL && strcmp(transfer, "xet") == 0;
    if (xet && op->hub->transfer == HUB_TRANSFER_LFS)
        return protocol_error(op, err, "transfer 'xet', which we did not offer");
    int *seen = calloc(op->n, sizeof(int));
    if (seen == NULL)
        return ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "%s: out of memory", op->what);
    int r = 0;
    const cJSON *o;
    cJSON_ArrayForEach(o, objects)
    {
        const char *oid = json_str(o, "oid");
        uint64_t size;
        if (oid == NULL || parse_u64(cJSON_GetObjectItemCaseSensitive(o, "size"), &size) < 0) {
            r = protocol_error(op, err, "an object without string 'oid' or integer 'size'");
            break;
        }
        size_t i;
        for (i = 0; i < op->n; i++) {
            if (!seen[i] && strcmp(op->objs[i].oid, oid) == 0 && op->objs[i].size == size)
                break;
        }
        if (i == op->n)
            continue; /* not ours, or a duplicate: ignore */
        seen[i] = 1;
        struct hub_lfs_object *lo = &op->objs[i];
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
        if (e != NULL) {
            char msg[200] = "";
            const char *m = json_str(e, "message");
            const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
            if (m != NULL)
                clean_copy(msg, sizeof(msg), m, strlen(m));
            redact(op->hub, msg, sizeof(msg));
            r = ckpt_err_set(err, CKPT_ERR_REJECTED, cJSON_IsNumber(code) ? code->valueint : -EIO,
                             "%s: object '%s' refused (code %d): %s", op->what, oid,
                             cJSON_IsNumber(code) ? code->valueint : 0, msg);
            break;
        }
        const cJSON *actions = cJSON_GetObjectItemCaseSensitive(o, "actions");
        if (actions == NULL || cJSON_IsNull(actions)) {
            lo->action = HUB_LFS_STORED;
            continue;
        }
        const cJSON *up = cJSON_GetObjectItemCaseSensitive(actions, "upload");
        const char *href = json_str(up, "href");
        const cJSON *hdr = cJSON_GetObjectItemCaseSensitive(up, "header");
        if (!cJSON_IsObject(actions) || href == NULL || (hdr != NULL && !cJSON_IsObject(hdr))) {
            r = protocol_error(op, err,
                               "'actions.upload' without string 'href' or object 'header'");
            break;
        }
        if (strncmp(href, "http://", 7) != 0 && strncmp(href, "https://", 8) != 0) {
            r = protocol_error(op, err, "'href' is not an http(s) URL");
            break;
        }
        if (xet) {
            r = parse_xet_action(op, lo, hdr, err);
            if (r < 0)
                break;
            if ((lo->href = strdup(href)) == NULL) {
                r = ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "%s: out of memory", op->what);
                break;
            }
            continue;
        }
        if (op->hub->transfer == HUB_TRANSFER_XET) {
            char shown[32];
            clean_copy(shown, sizeof(shown), transfer != NULL ? transfer : "basic",
                       transfer != NULL ? strlen(transfer) : 5);
            r = ckpt_err_set(err, CKPT_ERR_REJECTED, -EPROTONOSUPPORT,
                             "%s: the hub does not offer Xet uploads (it answered transfer '%s'); "
                             "--transfer xet requires them (use auto or lfs)",
                             op->what, shown);
            break;
        }
        const cJSON *exp = cJSON_GetObjectItemCaseSensitive(up, "expires_in");
        if (cJSON_IsNumber(exp) && exp->valuedouble > 0 && exp->valuedouble < 1e9)
            lo->expires_at = (int64_t)time(NULL) + (int64_t)exp->valuedouble;
        lo->href = strdup(href);
        if (lo->href == NULL) {
            r = ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "%s: out of memory", op->what);
            break;
        }
        if (hdr != NULL && cJSON_GetObjectItemCaseSensitive(hdr, "chunk_size") != NULL) {
            lo->action = HUB_LFS_MULTIPART;
            r = parse_multipart(op, lo, hdr, err);
            if (r < 0)
                break;
        } else {
            lo->action = HUB_LFS_BASIC;
        }
    }
    for (size_t i = 0; r == 0 && i < op->n; i++) {
        if (!seen[i])
            r = protocol_error(op, err, "an object we asked about is missing");
    }
    free(seen);
    if (r < 0) {
        for (size_t i = 0; i < op->n; i++)
            hub_lfs_object_release(&op->objs[i]);
    }
    return r;
}

static int parse_xet_token(struct hub_op *op, const cJSON *j, struct ckpt_err *err,
                           struct hub_xet_token *tok)
{
    const char *cas = json_str(j, "casUrl");
    const char *token = json_str(j, "accessToken");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(j, "exp");
    uint64_t e;
    if (cas == NULL || (strncmp(cas, "http://", 7) != 0 && strncmp(cas, "https://", 8) != 0))
        return protocol_error(op, err, "'casUrl' is not an http(s) URL");
    if (token == NULL || token[0] == '\0')
        return protocol_error(op, err, "no string 'accessToken'");
    if (parse_u64(exp, &e) < 0 || e > (uint64_t)INT64_MAX)
        return protocol_error(op, err, "'exp' is not a number of seconds");
    tok->cas_url = cas;
    tok->access_token = token;
    tok->exp = (int64_t)e;
    return 0;
}

static void on_http_done(void *ctx, const struct http_response *res)
{
    struct hub_op *op = ctx;
    struct ckpt_err e;
    ckpt_err_clear(&e);
    op->hub->n_ops--;
    int r = map_error(op, res, &e);
    if (r < 0 && (op->kind == OP_ENSURE_REPO || op->kind == OP_ENSURE_BRANCH) &&
        res->fail == HTTP_FAIL_NONE && res->status == 409) {
        ckpt_err_clear(&e);
        r = 0; /* the repo exists */
    }
    cJSON *j = NULL;
    bool no_history = r < 0 && op->kind == OP_COMMITS && res->fail == HTTP_FAIL_NONE &&
                      res->status == 404 && strcmp(res->error_code, "RevisionNotFound") == 0;
    if (no_history) {
        ckpt_err_clear(&e);
        r = 0; /* the branch is made by the first commit to it */
    }
    int needs_json = op->kind == OP_WHOAMI || op->kind == OP_HEAD || op->kind == OP_PREUPLOAD ||
                     op->kind == OP_BATCH || op->kind == OP_COMMIT || op->kind == OP_XET_TOKEN ||
                     (op->kind == OP_COMMITS && !no_history);
    if (r == 0 && needs_json) {
        j = cJSON_ParseWithLength(res->body, res->body_len);
        if (op->kind != OP_COMMITS && !cJSON_IsObject(j))
            r = protocol_error(op, &e, "not a JSON object");
    }
    int64_t *dates = NULL;
    size_t n_dates = 0;
    const char *text = NULL; /* the user name or oid the answer carries */
    struct hub_xet_token tok = {0};
    if (r == 0) {
        switch (op->kind) {
        case OP_WHOAMI:
            r = parse_whoami(op, j, &e, &text);
            break;
        case OP_HEAD:
            r = parse_oid(op, j, &e, "sha", &text);
            break;
        case OP_COMMIT:
            r = parse_oid(op, j, &e, "commitOid", &text);
            break;
        case OP_PREUPLOAD:
            r = parse_preupload(op, j, &e, &text);
            break;
        case OP_BATCH:
            r = parse_batch(op, j, &e);
            break;
        case OP_XET_TOKEN:
            r = parse_xet_token(op, j, &e, &tok);
            break;
        case OP_COMMITS:
            if (!no_history)
                r = parse_commit_dates(op, j, &e, &dates, &n_dates);
            break;
        default:
            break;
        }
    }
    if (r < 0)
        redact(op->hub, e.msg, sizeof(e.msg));
    const struct ckpt_err *errp = r < 0 ? &e : NULL;
    if (r < 0)
        text = NULL;
    switch (op->kind) {
    case OP_WHOAMI:
        op->cb.user(op->ctx, errp, text);
        break;
    case OP_HEAD:
    case OP_COMMIT:
    case OP_PREUPLOAD:
        op->cb.oid(op->ctx, errp, text);
        break;
    case OP_PUT:
        op->cb.etag(op->ctx, errp, errp == NULL ? res->etag : NULL);
        break;
    case OP_COMMITS:
        op->cb.dates(op->ctx, errp, dates, n_dates);
        break;
    case OP_XET_TOKEN:
        op->cb.xet_token(op->ctx, errp, errp == NULL ? &tok : NULL);
        break;
    case OP_BATCH:
    case OP_ENSURE_REPO:
    case OP_ENSURE_BRANCH:
    case OP_COMPLETE:
        op->cb.done(op->ctx, errp);
        break;
    }
    cJSON_Delete(j);
    free(dates);
    free(op);
}

/* ---- operations -------------------------------------------------------------------------- */

int hub_whoami(struct hub *hub, hub_user_cb cb, void *ctx, struct hub_op **ret_op)
{
    char url[2048];
    snprintf(url, sizeof(url), "%s/api/whoami-v2", hub->endpoint);
    struct hub_op *op = op_new(hub, OP_WHOAMI, ctx, "whoami for");
    if (op == NULL)
        return UV_ENOMEM;
    op->cb.user = cb;
    struct http_request req = {.method = "GET", .url = url, .bearer = hub->token, .retryable = 1};
    return op_send(op, &req, ret_op);
}

int hub_ensure_branch(struct hub *hub, hub_done_cb cb, void *ctx, struct hub_op **ret_op)
{
    char url[2048];
    int len = snprintf(url, sizeof(url), "%s/api/%s/%s/branch/%s", hub->endpoint, hub->type_seg,
                       hub->repo_id, hub->rev_enc);
    if (len < 0 || (size_t)len >= sizeof(url))
        return UV_ENAMETOOLONG;
    struct hub_op *op = op_new(hub, OP_ENSURE_BRANCH, ctx, "create branch in");
    if (op == NULL)
        return UV_ENOMEM;
    op->cb.done = cb;
    /* from main's head; retrying is safe: a create that landed answers 409 the second time */
    struct http_request req = {.method = "POST",
                               .url = url,
                               .bearer = hub->token,
                               .content_type = "application/json",
                               .body = "{}",
                               .body_len = 2,
                               .retryable = 1};
    return op_send(op, &req, ret_op);
}

int hub_ensure_repo(struct hub *hub, hub_done_cb cb, void *ctx, struct hub_op **ret_op)
{
    char url[2048];
    snprintf(url, sizeof(url), "%s/api/repos/create", hub->endpoint);
    const char *slash = strchr(hub->repo_id, '/');
    char ns[128];
    snprintf(ns, sizeof(ns), "%.*s", (int)(slash - hub->repo_id), hub->repo_id);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "name", slash + 1);
    cJSON_AddStringToObject(j, "organization", ns);
    cJSON_AddStringToObject(j, "type", hub->type_name);
    cJSON_AddStringToObject(j, "visibility", hub->private_repo ? "private" : "public");
    char *body = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    struct hub_op *op = body != NULL ? op_new(hub, OP_ENSURE_REPO, ctx, "create repo") : NULL;
    if (op == NULL) {
        free(body);
        return UV_ENOMEM;
    }
    op->cb.done = cb;
    /* retrying is safe: a create that landed answers 409 the second time */
    struct http_request req = {.method = "POST",
                               .url = url,
                               .bearer = hub->token,
                               .content_type = "application/json",
                               .body = body,
                               .body_len = strlen(body),
                               .retryable = 1};
    int r = op_send(op, &req, ret_op);
    free(body);
    return r;
}

/* GET /api/T/R/<what>/REV for op, whose callback the caller set. Frees op on failure. */
static int api_get(struct hub_op *op, const char *what, struct hub_op **ret_op)
{
    char url[2048];
    int r = api_url(op->hub, url, sizeof(url), what);
    if (r < 0) {
        free(op);
        return r;
    }
    struct http_request req = {
        .method = "GET", .url = url, .bearer = op->hub->token, .retryable = 1};
    return op_send(op, &req, ret_op);
}

int hub_get_head(struct hub *hub, hub_oid_cb cb, void *ctx, struct hub_op **ret_op)
{
    struct hub_op *op = op_new(hub, OP_HEAD, ctx, "read head of");
    if (op == NULL)
        return UV_ENOMEM;
    op->cb.oid = cb;
    return api_get(op, "revision", ret_op);
}

int hub_commit_dates(struct hub *hub, hub_dates_cb cb, void *ctx, struct hub_op **ret_op)
{
    struct hub_op *op = op_new(hub, OP_COMMITS, ctx, "read the commit history of");
    if (op == NULL)
        return UV_ENOMEM;
    op->cb.dates = cb;
    return api_get(op, "commits", ret_op);
}

int hub_xet_write_token(struct hub *hub, hub_xet_token_cb cb, void *ctx, struct hub_op **ret_op)
{
    struct hub_op *op = op_new(hub, OP_XET_TOKEN, ctx, "Xet write token for");
    if (op == NULL)
        return UV_ENOMEM;
    op->cb.xet_token = cb;
    return api_get(op, "xet-write-token", ret_op);
}

int hub_preupload(struct hub *hub, struct hub_preupload_file *files, size_t n, hub_oid_cb cb,
                  void *ctx, struct hub_op **ret_op)
{
    if (n == 0 || n > HUB_PREUPLOAD_MAX)
        return UV_EINVAL;
    char url[2048];
    int r = api_url(hub, url, sizeof(url), "preupload");
    if (r < 0)
        return r;
    struct sbuf b = {.max = 1024 * 1024};
    sb_str(&b, "{\"files\":[");
    for (size_t i = 0; i < n; i++) {
        char num[32];
        if (files[i].sample_len > 512) {
            free(b.p);
            return UV_EINVAL;
        }
        sb_str(&b, i > 0 ? ",{\"path\":" : "{\"path\":");
        sb_json(&b, files[i].path);
        snprintf(num, sizeof(num), ",\"size\":%" PRIu64 ",\"sample\":\"", files[i].size);
        sb_str(&b, num);
        sb_base64(&b, files[i].sample, files[i].sample_len);
        sb_str(&b, "\"}");
    }
    sb_str(&b, "]}");
    int err;
    struct hub_op *op = op_new_body(hub, OP_PREUPLOAD, ctx, "preupload to", &b, &err);
    if (op == NULL)
        return err;
    op->cb.oid = cb;
    op->files = files;
    op->n = n;
    struct http_request req = {.method = "POST",
                               .url = url,
                               .bearer = hub->token,
                               .content_type = "application/json",
                               .retryable = 1};
    return op_send_body(op, &req, &b, ret_op);
}

void hub_lfs_object_release(struct hub_lfs_object *obj)
{
    free(obj->href);
    obj->href = NULL;
    for (size_t i = 0; i < obj->n_parts; i++)
        free(obj->part_urls[i]);
    free(obj->part_urls);
    obj->part_urls = NULL;
    obj->n_parts = 0;
    obj->chunk_size = 0;
    obj->action = HUB_LFS_STORED;
    if (obj->xet_token != NULL)
        explicit_bzero(obj->xet_token, strlen(obj->xet_token));
    free(obj->xet_token);
    free(obj->xet_cas_url);
    free(obj->xet_session_id);
    obj->xet_token = NULL;
    obj->xet_cas_url = NULL;
    obj->xet_session_id = NULL;
    obj->xet_token_exp = 0;
}

int hub_lfs_batch(struct hub *hub, struct hub_lfs_object *objs, size_t n, hub_done_cb cb, void *ctx,
                  struct hub_op **ret_op)
{
    if (n == 0 || n > HUB_BATCH_MAX)
        return UV_EINVAL;
    char url[2048];
    int len = snprintf(url, sizeof(url), "%s/%s%s.git/info/lfs/objects/batch", hub->endpoint,
                       hub->web_prefix, hub->repo_id);
    if (len < 0 || (size_t)len >= sizeof(url))
        return UV_ENAMETOOLONG;
    struct sbuf b = {.max = 1024 * 1024};
    static const char *const offers[] = {
        [HUB_TRANSFER_LFS] = "[\"basic\",\"multipart\"]",
        [HUB_TRANSFER_AUTO] = "[\"basic\",\"multipart\",\"xet\"]",
        [HUB_TRANSFER_XET] = "[\"xet\"]",
    };
    sb_str(&b, "{\"operation\":\"upload\",\"transfers\":");
    sb_str(&b, offers[hub->transfer]);
    sb_str(&b, ",\"hash_algo\":\"sha256\",\"ref\":{\"name\":");
    sb_json(&b, hub->rev);
    sb_str(&b, "},\"objects\":[");
    for (size_t i = 0; i < n; i++) {
        char line[128];
        if (!is_hex(objs[i].oid, 64, 64)) {
            free(b.p);
            return UV_EINVAL;
        }
        snprintf(line, sizeof(line), "%s{\"oid\":\"%s\",\"size\":%" PRIu64 "}", i > 0 ? "," : "",
                 objs[i].oid, objs[i].size);
        sb_str(&b, line);
        objs[i].action = HUB_LFS_STORED;
        objs[i].href = NULL;
        objs[i].part_urls = NULL;
        objs[i].n_parts = 0;
        objs[i].expires_at = 0;
        objs[i].xet_cas_url = NULL;
        objs[i].xet_token = NULL;
        objs[i].xet_session_id = NULL;
        objs[i].xet_token_exp = 0;
    }
    sb_str(&b, "]}");
    int err;
    struct hub_op *op = op_new_body(hub, OP_BATCH, ctx, "LFS batch for", &b, &err);
    if (op == NULL)
        return err;
    op->cb.done = cb;
    op->objs = objs;
    op->n = n;
    struct http_request req = {.method = "POST",
                               .url = url,
                               .bearer = hub->token,
                               .content_type = "application/vnd.git-lfs+json",
                               .headers = {"Accept: application/vnd.git-lfs+json"},
                               .max_response = HUB_ANSWER_MAX,
                               .retryable = 1};
    return op_send_body(op, &req, &b, ret_op);
}

static void storage_where(struct hub_op *op, const char *url)
{
    /* name only scheme://host of a presigned URL: its query is a credential */
    const char *p = strstr(url, "://");
    size_t n = p != NULL ? (size_t)(p + 3 - url) + strcspn(p + 3, "/?#") : strcspn(url, "/?#");
    snprintf(op->where, sizeof(op->where), "%.*s", (int)n, url);
    op->storage = 1;
}

static void on_put_sent(void *ctx, int64_t delta)
{
    struct hub_op *op = ctx;
    if (op->sent != NULL)
        op->sent(op->ctx, delta);
}

int hub_lfs_put(struct hub *hub, const char *url, const char *local_path, uint64_t offset,
                uint64_t len, hub_sent_cb sent, hub_etag_cb cb, void *ctx, struct hub_op **ret_op)
{
    struct hub_op *op = op_new(hub, OP_PUT, ctx, "upload to storage for");
    if (op == NULL)
        return UV_ENOMEM;
    op->cb.etag = cb;
    op->sent = sent;
    storage_where(op, url);
    struct http_request req = {.method = "PUT",
                               .url = url,
                               .body_path = local_path,
                               .body_offset = offset,
                               .body_file_len = len,
                               .max_response = 64 * 1024,
                               .retryable = 1,
                               .sent_cb = on_put_sent};
    return op_send(op, &req, ret_op);
}

int hub_lfs_complete(struct hub *hub, const char *href, const char *oid, const char *const *etags,
                     size_t n_parts, hub_done_cb cb, void *ctx, struct hub_op **ret_op)
{
    struct sbuf b = {.max = 4 * 1024 * 1024};
    sb_str(&b, "{\"oid\":");
    sb_json(&b, oid);
    sb_str(&b, ",\"parts\":[");
    for (size_t i = 0; i < n_parts; i++) {
        char num[48];
        snprintf(num, sizeof(num), "%s{\"partNumber\":%zu,\"etag\":", i > 0 ? "," : "", i + 1);
        sb_str(&b, num);
        sb_json(&b, etags[i]);
        sb_str(&b, "}");
    }
    sb_str(&b, "]}");
    int err;
    struct hub_op *op =
        op_new_body(hub, OP_COMPLETE, ctx, "complete multipart upload for", &b, &err);
    if (op == NULL)
        return err;
    op->cb.done = cb;
    storage_where(op, href);
    struct http_request req = {.method = "POST",
                               .url = href,
                               .content_type = "application/vnd.git-lfs+json",
                               .headers = {"Accept: application/vnd.git-lfs+json"},
                               .max_response = 64 * 1024,
                               .retryable = 1};
    return op_send_body(op, &req, &b, ret_op);
}

int hub_commit(struct hub *hub, const char *summary, const char *description,
               const char *parent_commit, const struct hub_commit_op *ops, size_t n, hub_oid_cb cb,
               void *ctx, struct hub_op **ret_op)
{
    if (summary == NULL || summary[0] == '\0')
        return UV_EINVAL;
    char url[2048];
    int r = api_url(hub, url, sizeof(url), "commit");
    if (r < 0)
        return r;
    struct sbuf b = {.max = HUB_COMMIT_BODY_MAX};
    sb_str(&b, "{\"key\":\"header\",\"value\":{\"summary\":");
    sb_json(&b, summary);
    sb_str(&b, ",\"description\":");
    sb_json(&b, description != NULL ? description : "");
    if (parent_commit != NULL) {
        sb_str(&b, ",\"parentCommit\":");
        sb_json(&b, parent_commit);
    }
    sb_str(&b, "}}\n");
    for (size_t i = 0; i < n; i++) {
        const struct hub_commit_op *o = &ops[i];
        char num[128];
        switch (o->kind) {
        case HUB_COMMIT_FILE:
            sb_str(&b, "{\"key\":\"file\",\"value\":{\"path\":");
            sb_json(&b, o->path);
            sb_str(&b, ",\"content\":\"");
            sb_base64(&b, o->content, o->content_len);
            sb_str(&b, "\",\"encoding\":\"base64\"}}\n");
            break;
        case HUB_COMMIT_LFS:
            if (o->oid == NULL || !is_hex(o->oid, 64, 64)) {
                free(b.p);
                return UV_EINVAL;
            }
            sb_str(&b, "{\"key\":\"lfsFile\",\"value\":{\"path\":");
            sb_json(&b, o->path);
            snprintf(num, sizeof(num),
                     ",\"algo\":\"sha256\",\"oid\":\"%s\",\"size\":%" PRIu64 "}}\n", o->oid,
                     o->size);
            sb_str(&b, num);
            break;
        case HUB_COMMIT_DELETE:
            sb_str(&b, "{\"key\":\"deletedFile\",\"value\":{\"path\":");
            sb_json(&b, o->path);
            sb_str(&b, "}}\n");
            break;
        }
    }
    int err;
    struct hub_op *op = op_new_body(hub, OP_COMMIT, ctx, "commit to", &b, &err);
    if (op == NULL)
        return err;
    op->cb.oid = cb;
    struct http_request req = {.method = "POST",
                               .url = url,
                               .bearer = hub->token,
                               .content_type = "application/x-ndjson",
                               .retryable = HTTP_RETRY_429};
    return op_send_body(op, &req, &b, ret_op);
}

/* ---- answers without a transfer (hub_internal.h) ------------------------------------------- */

int hub_answer(struct hub *hub, const struct hub_answer_args *a, const struct http_response *res)
{
    static const enum op_kind kinds[] = {
        [HUB_ANSWER_WHOAMI] = OP_WHOAMI,
        [HUB_ANSWER_HEAD] = OP_HEAD,
        [HUB_ANSWER_PREUPLOAD] = OP_PREUPLOAD,
        [HUB_ANSWER_BATCH] = OP_BATCH,
        [HUB_ANSWER_PUT] = OP_PUT,
        [HUB_ANSWER_COMPLETE] = OP_COMPLETE,
        [HUB_ANSWER_COMMIT] = OP_COMMIT,
        [HUB_ANSWER_ENSURE] = OP_ENSURE_REPO,
        [HUB_ANSWER_COMMITS] = OP_COMMITS,
        [HUB_ANSWER_XET_TOKEN] = OP_XET_TOKEN,
    };
    struct hub_op *op;

    if ((unsigned)a->kind >= sizeof(kinds) / sizeof(kinds[0]))
        return -EINVAL;
    op = op_new(hub, kinds[a->kind], a->ctx, "answer for");
    if (op == NULL)
        return -ENOMEM;
    switch (a->kind) {
    case HUB_ANSWER_WHOAMI:
        op->cb.user = a->user;
        break;
    case HUB_ANSWER_HEAD:
    case HUB_ANSWER_COMMIT:
    case HUB_ANSWER_PREUPLOAD:
        op->cb.oid = a->oid;
        break;
    case HUB_ANSWER_BATCH:
    case HUB_ANSWER_COMPLETE:
    case HUB_ANSWER_ENSURE:
        op->cb.done = a->done;
        break;
    case HUB_ANSWER_PUT:
        op->cb.etag = a->etag;
        break;
    case HUB_ANSWER_COMMITS:
        op->cb.dates = a->dates;
        break;
    case HUB_ANSWER_XET_TOKEN:
        op->cb.xet_token = a->xet_token;
        break;
    }
    op->files = a->files;
    op->objs = a->objs;
    op->n = a->n;
    if (a->storage_url != NULL)
        storage_where(op, a->storage_url);
    hub->n_ops++;
    on_http_done(op, res);
    return 0;
}
