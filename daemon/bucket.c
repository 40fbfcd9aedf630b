/* bucket.c - Storage Bucket batch requests and their answers (see bucket.h). */
#include "bucket.h"

#include "hub.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <uv.h>

int bucket_batch_body(const struct bucket_op *ops, size_t n, char **ret, size_t *ret_len)
{
    size_t len = 0, cap = 0;
    char *body = NULL;

    *ret = NULL;
    *ret_len = 0;
    for (size_t i = 0; i < n; i++) {
        cJSON *j = cJSON_CreateObject();
        char *line = NULL;
        if (j != NULL &&
            cJSON_AddStringToObject(j, "type",
                                    ops[i].kind == BUCKET_ADD ? "addFile" : "deleteFile") != NULL &&
            cJSON_AddStringToObject(j, "path", ops[i].path) != NULL &&
            (ops[i].kind != BUCKET_ADD ||
             cJSON_AddStringToObject(j, "xetHash", ops[i].xet_hash) != NULL))
            line = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (line == NULL) {
            free(body);
            return UV_ENOMEM;
        }
        size_t l = strlen(line);
        if (len + l + 2 > BUCKET_BATCH_BODY_MAX) {
            free(line);
            free(body);
            return UV_E2BIG;
        }
        if (len + l + 2 > cap) {
            size_t c = cap ? cap : 4096;
            while (c < len + l + 2)
                c *= 2;
            char *p = realloc(body, c);
            if (p == NULL) {
                free(line);
                free(body);
                return UV_ENOMEM;
            }
            body = p;
            cap = c;
        }
        memcpy(body + len, line, l);
        len += l;
        body[len++] = '\n';
        body[len] = '\0';
        free(line);
    }
    if (body == NULL)
        return UV_EINVAL;
    *ret = body;
    *ret_len = len;
    return 0;
}

static const struct bucket_op *op_of(const struct bucket_op *ops, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ops[i].path, path) == 0)
            return &ops[i];
    return NULL;
}

int bucket_batch_check(const char *bucket_id, long status, const char *body, size_t len,
                       const struct bucket_op *ops, size_t n, struct ckpt_err *err)
{
    cJSON *j = body != NULL ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *failed = cJSON_GetObjectItemCaseSensitive(j, "failed");
    const cJSON *f;
    int r = 0;

    if (!cJSON_IsObject(j) || (failed != NULL && !cJSON_IsArray(failed)) ||
        (status != 200 && !cJSON_IsArray(failed))) {
        r = ckpt_err_set(err, CKPT_ERR_PROTOCOL, -EPROTO,
                         "bucket batch to '%s': bad answer (HTTP %ld): not a batch result",
                         bucket_id, status);
        goto out;
    }
    cJSON_ArrayForEach(f, failed)
    {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(f, "path");
        const cJSON *why = cJSON_GetObjectItemCaseSensitive(f, "error");
        const char *reason = cJSON_IsString(why) ? why->valuestring : "no reason given";
        const struct bucket_op *op = cJSON_IsString(p) ? op_of(ops, n, p->valuestring) : NULL;
        if (op == NULL) {
            r = ckpt_err_set(err, CKPT_ERR_PROTOCOL, -EPROTO,
                             "bucket batch to '%s': bad answer: a failure names no path we sent",
                             bucket_id);
            goto out;
        }
        /* deleted already: by this batch's first sending, or by hand */
        if (op->kind == BUCKET_DELETE && strstr(reason, "not found") != NULL)
            continue;
        r = ckpt_err_set(err, CKPT_ERR_REJECTED, status == 200 ? 422 : (int)status,
                         "bucket batch to '%s': %s '%.200s' failed: %.200s", bucket_id,
                         op->kind == BUCKET_ADD ? "addFile" : "deleteFile", op->path, reason);
        goto out;
    }
out:
    cJSON_Delete(j);
    return r;
}

struct batch_call {
    char *bucket_id;
    struct bucket_op *ops;
    size_t n;
    char *strings; /* the ops' paths and hashes */
    bucket_done_cb cb;
    void *ctx;
};

static void batch_call_free(struct batch_call *c)
{
    free(c->bucket_id);
    free(c->ops);
    free(c->strings);
    free(c);
}

static void on_batch(void *ctx, const struct ckpt_err *err, long status, const char *body,
                     size_t len)
{
    struct batch_call *c = ctx;
    struct ckpt_err e;

    ckpt_err_clear(&e);
    if (err != NULL && status != 422) {
        c->cb(c->ctx, err);
    } else {
        int r = bucket_batch_check(c->bucket_id, status, body, len, c->ops, c->n, &e);
        c->cb(c->ctx, r < 0 ? &e : NULL);
    }
    batch_call_free(c);
}

/* A copy of ops whose strings live in one block, so that the answer can name them. */
static struct batch_call *batch_call_new(const char *bucket_id, const struct bucket_op *ops,
                                         size_t n)
{
    struct batch_call *c = calloc(1, sizeof(*c));
    size_t size = 0, off = 0;

    for (size_t i = 0; i < n; i++)
        size += strlen(ops[i].path) + 1 + (ops[i].xet_hash ? strlen(ops[i].xet_hash) + 1 : 0);
    if (c == NULL || (c->bucket_id = strdup(bucket_id)) == NULL ||
        (c->ops = calloc(n, sizeof(*c->ops))) == NULL || (c->strings = malloc(size + 1)) == NULL) {
        if (c != NULL)
            batch_call_free(c);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        c->ops[i].kind = ops[i].kind;
        c->ops[i].path = c->strings + off;
        off += (size_t)sprintf(c->strings + off, "%s", ops[i].path) + 1;
        if (ops[i].xet_hash != NULL) {
            c->ops[i].xet_hash = c->strings + off;
            off += (size_t)sprintf(c->strings + off, "%s", ops[i].xet_hash) + 1;
        }
    }
    c->n = n;
    return c;
}

int bucket_batch(struct hub *hub, const struct bucket_op *ops, size_t n, bucket_done_cb cb,
                 void *ctx, struct hub_op **ret_op)
{
    char *body;
    size_t len;
    int r;

    if (n == 0)
        return UV_EINVAL;
    if ((r = bucket_batch_body(ops, n, &body, &len)) < 0)
        return r;
    struct batch_call *c = batch_call_new(hub_repo_id(hub), ops, n);
    if (c == NULL) {
        free(body);
        return UV_ENOMEM;
    }
    c->cb = cb;
    c->ctx = ctx;
    struct hub_call_request req = {.method = "POST",
                                   .what = "batch",
                                   .verb = "bucket batch to",
                                   .content_type = "application/x-ndjson",
                                   .body = body,
                                   .body_len = len,
                                   .retryable = true};
    r = hub_call(hub, &req, on_batch, c, ret_op);
    free(body);
    if (r < 0)
        batch_call_free(c);
    return r;
}
