/* fuzz_hub.c - the Hub's answers: whoami, revision (head), preupload, LFS batch (basic and
 * multipart), storage PUT and completion, commit and repo creation, parsed by hub.c's own code
 * (hub_answer) against fixed requests, with errors mapped to sentences that must never carry the
 * token. Input: byte 0 = operation, byte 1 = HTTP status index (bit 7: X-Error-Code
 * RevisionNotFound), the rest the body. tests/fuzz/make_seeds.py writes real answers in this form.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "hub.h"
#include "hub_internal.h"

#define FUZZ_TOKEN "hf_FUZZsecretTOKEN0123456789"

static const long statuses[] = {200, 201, 400, 401, 403, 404, 409, 412, 413, 422, 429, 500, 503};

/* sha256 of 7000 'w' and of 100 'x' (see make_seeds.py). */
#define OID_MULTI "3bd4d2d0fe38dd3a49938fe168e6a896be21dbf0f842c2900dda235a78486729"
#define OID_BASIC "09ecb6ebc8bcefc733f6f2ec44f791abeed6a99edf0cc31519637898aebd52d8"

static struct hub *hub;
static int calls;
static int verbose; /* FUZZ_VERBOSE=1: print each outcome (checking that seeds reach success) */

static void check(int cond)
{
    if (!cond)
        abort();
}

static void check_err(const struct ckpt_err *err)
{
    if (verbose)
        fprintf(stderr, "fuzz_hub: %s\n", err == NULL ? "ok" : err->msg);
    if (err == NULL)
        return;
    check(err->kind != CKPT_ERR_NONE);
    check(memchr(err->msg, '\0', sizeof(err->msg)) != NULL);
    check(strstr(err->msg, FUZZ_TOKEN) == NULL);
    for (const char *p = err->msg; *p != '\0'; p++)
        check(*p != '\n' && *p != '\r');
}

static void on_user(void *ctx, const struct ckpt_err *err, const char *user)
{
    (void)ctx;
    calls++;
    check_err(err);
    check((err == NULL) == (user != NULL));
}

static void on_oid(void *ctx, const struct ckpt_err *err, const char *oid)
{
    (void)ctx;
    calls++;
    check_err(err);
    check((err == NULL) == (oid != NULL));
    if (oid != NULL)
        check(strlen(oid) == 40);
}

static void on_done(void *ctx, const struct ckpt_err *err)
{
    (void)ctx;
    calls++;
    check_err(err);
}

static void on_etag(void *ctx, const struct ckpt_err *err, const char *etag)
{
    (void)ctx;
    calls++;
    check_err(err);
    check((err == NULL) == (etag != NULL));
}

static void on_xet_token(void *ctx, const struct ckpt_err *err, const struct hub_xet_token *tok)
{
    (void)ctx;
    calls++;
    check_err(err);
    check((err == NULL) == (tok != NULL));
    if (tok != NULL)
        check(tok->cas_url != NULL && tok->access_token != NULL && tok->access_token[0] != '\0');
}

static void on_dates(void *ctx, const struct ckpt_err *err, const int64_t *dates, size_t n)
{
    (void)ctx;
    calls++;
    check_err(err);
    check(err == NULL || n == 0);
    for (size_t i = 0; i < n; i++)
        check(dates[i] > -62167219200 && dates[i] < 253402300800); /* years 0000-9999 */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct hub_config cfg;
    struct ckpt_err err;

    (void)argc;
    (void)argv;
    verbose = getenv("FUZZ_VERBOSE") != NULL;
    memset(&cfg, 0, sizeof(cfg));
    cfg.repo_id = "alice/fuzz";
    cfg.transfer = HUB_TRANSFER_AUTO; /* Xet answers are parsed too */
    cfg.endpoint = "http://127.0.0.1:1";
    cfg.token = FUZZ_TOKEN;
    ckpt_err_clear(&err);
    /* The answer path never touches the transport. */
    if (hub_init(&hub, NULL, &cfg, &err) < 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned char sample[] = "{\"a\": 1}\n   ";
    struct hub_preupload_file files[2];
    struct hub_lfs_object objs[2];
    struct hub_answer_args a;
    struct http_response res;

    if (size < 2)
        return 0;
    memset(&res, 0, sizeof(res));
    res.status = statuses[(data[1] & 0x7f) % (sizeof(statuses) / sizeof(statuses[0]))];
    res.attempts = 1;
    if (data[1] & 0x80)
        snprintf(res.error_code, sizeof(res.error_code), "RevisionNotFound");
    snprintf(res.content_type, sizeof(res.content_type), "%s",
             data[0] & 0x80 ? "text/plain" : "application/json");
    res.body = malloc(size - 2 + 1);
    if (res.body == NULL)
        return 0;
    memcpy(res.body, data + 2, size - 2);
    res.body[size - 2] = '\0';
    res.body_len = size - 2;

    memset(files, 0, sizeof(files));
    files[0].path = "config.json";
    files[0].size = 12;
    files[0].sample = sample;
    files[0].sample_len = 12;
    files[1].path = "model.safetensors";
    files[1].size = 7000;
    memset(objs, 0, sizeof(objs));
    snprintf(objs[0].oid, sizeof(objs[0].oid), "%s", OID_MULTI);
    objs[0].size = 7000;
    snprintf(objs[1].oid, sizeof(objs[1].oid), "%s", OID_BASIC);
    objs[1].size = 100;

    memset(&a, 0, sizeof(a));
    a.kind = (enum hub_answer_kind)((data[0] & 0x7f) % (HUB_ANSWER_XET_TOKEN + 1));
    a.user = on_user;
    a.oid = on_oid;
    a.done = on_done;
    a.etag = on_etag;
    a.dates = on_dates;
    a.xet_token = on_xet_token;
    if (a.kind == HUB_ANSWER_PREUPLOAD) {
        a.files = files;
        a.n = 2;
    } else if (a.kind == HUB_ANSWER_BATCH) {
        a.objs = objs;
        a.n = 2;
    } else if (a.kind == HUB_ANSWER_PUT || a.kind == HUB_ANSWER_COMPLETE) {
        a.storage_url = "http://127.0.0.1:1/_storage/part?sig=1";
    }
    calls = 0;
    check(hub_answer(hub, &a, &res) == 0);
    check(calls == 1);
    for (size_t i = 0; i < 2; i++) {
        const struct hub_lfs_object *o = &objs[i];
        if (o->action == HUB_LFS_MULTIPART) {
            check(o->href != NULL && o->chunk_size > 0 && o->n_parts > 0);
            for (size_t k = 0; k < o->n_parts; k++)
                check(o->part_urls[k] != NULL);
        }
        if (o->action == HUB_LFS_XET)
            check(o->href != NULL && (o->xet_token == NULL) == (o->xet_cas_url == NULL));
        hub_lfs_object_release(&objs[i]);
    }
    free(res.body);
    return 0;
}
