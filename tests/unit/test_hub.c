/* test_hub.c - hub.c's requests and its handling of hostile or broken answers.
 *
 * A canned-answer server (tests/unit/http_echo.py, /hub/ prefix: also exercises an endpoint
 * with a path prefix) gives each reply; the test checks what hub.c sent and what it made of the
 * answer: parsed outputs, or a ckpt_err of the right kind, never a crash, never the token.
 */
#include "bucket.h"
#include "http.h"
#include "hub.h"

#include "testutil.h"

#define TOKEN "hf_hub_test_token_0123456789"
#define HEAD1 "0123456789abcdef0123456789abcdef01234567"
#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static uv_loop_t loop;
static struct http *http;
static struct hub *hub;
static struct test_hub srv;

struct res {
    int done;
    int ok;
    struct ckpt_err err;
    char str[256];
};

static void on_done(void *ctx, const struct ckpt_err *err)
{
    struct res *r = ctx;
    r->done = 1;
    r->ok = err == NULL;
    if (err != NULL)
        r->err = *err;
}

static void on_str(void *ctx, const struct ckpt_err *err, const char *s)
{
    on_done(ctx, err);
    snprintf(((struct res *)ctx)->str, sizeof(((struct res *)ctx)->str), "%s", s ? s : "");
}

static void wait_res(struct res *r)
{
    test_run_until(&loop, &r->done);
    CHECK(strstr(r->err.msg, TOKEN) == NULL);
}

static void preupload_case(const char *answer, enum ckpt_err_kind want, const char *hint,
                           struct hub_preupload_file *f, size_t n)
{
    struct res r = {0};
    test_echo_canned(&srv, 200, NULL, answer);
    REQUIRE(hub_preupload(hub, f, n, on_str, &r, NULL) == 0);
    wait_res(&r);
    if (want == CKPT_ERR_NONE) {
        CHECK(r.ok);
    } else {
        CHECK(!r.ok && r.err.kind == want);
        if (hint != NULL && strstr(r.err.msg, hint) == NULL) {
            fprintf(stderr, "message '%s' lacks '%s'\n", r.err.msg, hint);
            test_failures++;
        }
    }
}

static void batch_case(const char *answer, enum ckpt_err_kind want, const char *hint,
                       struct hub_lfs_object *o, size_t n)
{
    struct res r = {0};
    test_echo_canned(&srv, 200, NULL, answer);
    REQUIRE(hub_lfs_batch(hub, o, n, on_done, &r, NULL) == 0);
    wait_res(&r);
    if (want == CKPT_ERR_NONE) {
        CHECK(r.ok);
        if (!r.ok)
            fprintf(stderr, "batch: %s\n", r.err.msg);
    } else {
        CHECK(!r.ok && r.err.kind == want);
        if (hint != NULL && strstr(r.err.msg, hint) == NULL) {
            fprintf(stderr, "message '%s' lacks '%s'\n", r.err.msg, hint);
            test_failures++;
        }
    }
}

struct dates_res {
    struct res r;
    int64_t dates[8];
    size_t n;
};

static void on_dates(void *ctx, const struct ckpt_err *err, const int64_t *dates, size_t n)
{
    struct dates_res *d = ctx;
    on_done(&d->r, err);
    for (d->n = 0; d->n < n && d->n < 8; d->n++)
        d->dates[d->n] = dates[d->n];
}

/* The commit history the commit budget starts from: dates in UTC, whatever offset they carry;
 * the repo's creation commit left out; a branch not made yet has none; garbage is an error. */
static void test_commit_dates(void)
{
    static const struct {
        int status;
        const char *headers, *body;
        int ok;
        size_t n;
        int64_t first, second;
    } cases[] = {
        {200, NULL,
         "[{\"id\":\"a\",\"title\":\"Training in progress, step 2\","
         "\"date\":\"2026-11-24T00:21:19.000Z\"},"
         "{\"id\":\"b\",\"title\":\"Training in progress, step 1\","
         "\"date\":\"2026-11-24T02:20:00+02:00\"},"
         "{\"id\":\"c\",\"title\":\"initial commit\",\"date\":\"2026-11-23T10:00:00Z\"}]",
         1, 2, 1795479679, 1795479600},
        {200, NULL, "[]", 1, 0, 0, 0},
        {404, "{\"X-Error-Code\":\"RevisionNotFound\"}", "{\"error\":\"Invalid rev id\"}", 1, 0, 0,
         0},
        {404, "{\"X-Error-Code\":\"RepoNotFound\"}", "{}", 0, 0, 0, 0},
        {200, NULL, "{\"commits\":[]}", 0, 0, 0, 0},
        {200, NULL, "[{\"id\":\"a\"}]", 0, 0, 0, 0},
        {200, NULL, "[{\"date\":\"yesterday\"}]", 0, 0, 0, 0},
        {200, NULL, "[{\"date\":\"2026-13-01T00:00:00Z\"}]", 0, 0, 0, 0},
        {200, NULL, "[{\"date\":\"2026-11-24T00:21:19Zjunk\"}]", 0, 0, 0, 0},
        /* signs and spaces where digits belong (sscanf's %d took them: year -26, found by
         * fuzz_hub) */
        {200, NULL, "[{\"date\":\"-026-11-24T00:21:19Z\"}]", 0, 0, 0, 0},
        {200, NULL, "[{\"date\":\"2026-11-24T-1:21:19Z\"}]", 0, 0, 0, 0},
        {200, NULL, "[{\"date\":\"2026-11-24T00:21: 9Z\"}]", 0, 0, 0, 0},
        {200, NULL, "[{\"date\":\"2026-11-24T00:21:19+-1:00\"}]", 0, 0, 0, 0},
        {200, NULL, "[1, 2]", 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dates_res d;
        memset(&d, 0, sizeof(d));
        test_echo_canned(&srv, cases[i].status, cases[i].headers, cases[i].body);
        REQUIRE(hub_commit_dates(hub, on_dates, &d, NULL) == 0);
        wait_res(&d.r);
        if (d.r.ok != cases[i].ok || d.n != cases[i].n ||
            (d.n > 0 && (d.dates[0] != cases[i].first || d.dates[1] != cases[i].second))) {
            fprintf(stderr, "commit dates case %zu: ok %d n %zu (%s)\n", i, d.r.ok, d.n,
                    d.r.err.msg);
            test_failures++;
        }
        if (!cases[i].ok && d.r.err.kind == CKPT_ERR_PROTOCOL)
            CHECK(strstr(d.r.err.msg, "commit history") != NULL);
    }
    cJSON *j = test_echo_last(&srv);
    CHECK(strcmp(test_json_str(j, "path", NULL), "/hub/api/models/alice/m/commits/refs%2Fpr%2F1") ==
          0);
    cJSON_Delete(j);
}

static void on_closed(void *ctx)
{
    *(int *)ctx = 1;
}

static void test_repo_ids(void)
{
    struct ckpt_err e;
    CHECK(hub_validate_repo_id("alice/model-1.v2_x", &e) == 0);
    const char *bad[] = {
        "alice",  "a/b/c",    "../x",       "alice/--x",           "alice/x.", "", "/x",
        "alice/", "al ice/x", "alice/a..b", "alice/x\n'; rm -rf /"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ckpt_err_clear(&e);
        CHECK(hub_validate_repo_id(bad[i], &e) < 0);
        CHECK(e.kind == CKPT_ERR_INPUT && strncmp(e.msg, "invalid repo id '", 17) == 0);
        CHECK(strchr(e.msg, '\n') == NULL);
    }
    struct hub *h2;
    struct hub_config cfg = {.endpoint = "ftp://x", .repo_id = "a/b"};
    CHECK(hub_init(&h2, http, &cfg, &e) == UV_EINVAL && e.kind == CKPT_ERR_INPUT);
    cfg.endpoint = "http://x";
    cfg.repo_id = "a/../b";
    CHECK(hub_init(&h2, http, &cfg, &e) == UV_EINVAL && strstr(e.msg, "a/../b") != NULL);
    cfg.repo_id = "a/b";
    cfg.repo_type = "buckets";
    CHECK(hub_init(&h2, http, &cfg, &e) == UV_EINVAL);
}

static void on_token(void *ctx, const struct ckpt_err *err, const struct hub_xet_token *tok)
{
    on_str(ctx, err, tok != NULL ? tok->cas_url : NULL);
}

/* A hub whose repo is a Storage Bucket: created at /api/buckets/NS/NAME with its visibility,
 * its Xet write token and batch on bucket routes without a revision; a 422 batch answer whose
 * only failures are deletes of paths already gone is success, an add that failed is not. */
static void test_bucket(const char *endpoint)
{
    struct hub_config cfg = {.endpoint = endpoint,
                             .token = TOKEN,
                             .repo_id = "alice/ckpts",
                             .repo_type = "bucket",
                             .private_repo = true};
    struct hub *b;
    struct ckpt_err e;
    struct res r = {0};
    cJSON *j;

    REQUIRE(hub_init(&b, http, &cfg, &e) == 0);
    test_echo_canned(&srv, 409, NULL,
                     "{\"error\":\"You already created this bucket: alice/ckpts\"}");
    REQUIRE(hub_ensure_repo(b, on_done, &r, NULL) == 0);
    wait_res(&r);
    CHECK(r.ok);
    j = test_echo_last(&srv);
    CHECK_STR(test_json_str(j, "path", NULL), "/hub/api/buckets/alice/ckpts");
    CHECK_STR(test_json_str(j, "body", NULL), "{\"visibility\":\"private\"}");
    cJSON_Delete(j);

    memset(&r, 0, sizeof(r));
    test_echo_canned(&srv, 200, NULL,
                     "{\"accessToken\":\"t\",\"exp\":9999999999,\"casUrl\":\"http://c/cas\"}");
    REQUIRE(hub_xet_write_token(b, on_token, &r, NULL) == 0);
    wait_res(&r);
    CHECK(r.ok);
    CHECK_STR(r.str, "http://c/cas");
    j = test_echo_last(&srv);
    CHECK_STR(test_json_str(j, "path", NULL), "/hub/api/buckets/alice/ckpts/xet-write-token");
    cJSON_Delete(j);

    struct bucket_op ops[] = {
        {BUCKET_ADD, "checkpoint-2/w.bin",
         "1111111111111111111111111111111111111111111111111111111111111111"},
        {BUCKET_DELETE, "checkpoint-1/w.bin", NULL},
    };
    memset(&r, 0, sizeof(r));
    test_echo_canned(&srv, 422, NULL,
                     "{\"success\":false,\"processed\":2,\"succeeded\":1,\"failed\":[{\"path\":"
                     "\"checkpoint-1/w.bin\",\"error\":\"file not found\"}]}");
    REQUIRE(bucket_batch(b, ops, 2, on_done, &r, NULL) == 0);
    wait_res(&r);
    CHECK(r.ok);
    j = test_echo_last(&srv);
    CHECK_STR(test_json_str(j, "path", NULL), "/hub/api/buckets/alice/ckpts/batch");
    CHECK_STR(test_json_str(j, "headers", "content-type"), "application/x-ndjson");
    CHECK(strstr(test_json_str(j, "body", NULL),
                 "{\"type\":\"deleteFile\",\"path\":\"checkpoint-1/w.bin\"}") != NULL);
    cJSON_Delete(j);

    memset(&r, 0, sizeof(r));
    test_echo_canned(&srv, 422, NULL,
                     "{\"success\":false,\"failed\":[{\"path\":\"checkpoint-2/w.bin\",\"error\":"
                     "\"xet hash not found in CAS\"}]}");
    REQUIRE(bucket_batch(b, ops, 2, on_done, &r, NULL) == 0);
    wait_res(&r);
    CHECK(!r.ok && r.err.kind == CKPT_ERR_REJECTED &&
          strstr(r.err.msg, "addFile 'checkpoint-2/w.bin' failed: xet hash not found") != NULL);

    /* a 401 is the token's fault, named as for a repo */
    memset(&r, 0, sizeof(r));
    test_echo_canned(&srv, 401, NULL, "{\"error\":\"Invalid credentials\"}");
    REQUIRE(bucket_batch(b, ops, 1, on_done, &r, NULL) == 0);
    wait_res(&r);
    CHECK(!r.ok && r.err.kind == CKPT_ERR_AUTH);
    hub_free(b);
}

int main(void)
{
    char dir[512], endpoint[300];
    test_mkdtemp(dir, sizeof(dir));
    test_echo_start(&srv, dir);
    REQUIRE(uv_loop_init(&loop) == 0);
    struct http_opts opts = {.backoff_base_ms = 20, .backoff_cap_ms = 40, .max_attempts = 2};
    REQUIRE(http_init(&http, &loop, &opts) == 0);
    test_repo_ids();

    snprintf(endpoint, sizeof(endpoint), "%s/hub///", srv.endpoint);
    struct hub_config cfg = {.endpoint = endpoint,
                             .token = TOKEN,
                             .repo_id = "alice/m",
                             .revision = "refs/pr/1",
                             .private_repo = true};
    struct ckpt_err e;
    REQUIRE(hub_init(&hub, http, &cfg, &e) == 0);
    CHECK(strcmp(hub_endpoint(hub), srv.endpoint) > 0 &&
          strcmp(hub_endpoint(hub) + strlen(srv.endpoint), "/hub") == 0);
    struct res r;
    cJSON *j;

    /* whoami */
    memset(&r, 0, sizeof(r));
    test_echo_canned(&srv, 200, NULL, "{\"name\":\"alice\",\"auth\":{}}");
    REQUIRE(hub_whoami(hub, on_str, &r, NULL) == 0);
    wait_res(&r);
    CHECK(r.ok && strcmp(r.str, "alice") == 0);
    j = test_echo_last(&srv);
    CHECK(strcmp(test_json_str(j, "path", NULL), "/hub/api/whoami-v2") == 0);
    CHECK(strcmp(test_json_str(j, "headers", "authorization"), "Bearer " TOKEN) == 0);
    CHECK(strncmp(test_json_str(j, "headers", "user-agent"), "ckptpush/", 9) == 0);
    cJSON_Delete(j);
    memset(&r, 0, sizeof(r));
    test_echo_canned(&srv, 200, NULL, "{\"name\":17}");
    REQUIRE(hub_whoami(hub, on_str, &r, NULL) == 0);
    wait_res(&r);
    CHECK(!r.ok && r.err.kind == CKPT_ERR_PROTOCOL);

    /* create repo: 409 is fine; the body asks for a private model */
    memset(&r, 0, sizeof(r));
    test_echo_canned(&srv, 409, NULL, "{\"error\":\"You already created this model repo\"}");
    REQUIRE(hub_ensure_repo(hub, on_done, &r, NULL) == 0);
    wait_res(&r);
    CHECK(r.ok);
    j = test_echo_last(&srv);
    cJSON *body = cJSON_Parse(test_json_str(j, "body", NULL));
    CHECK(strcmp(test_json_str(body, "name", NULL), "m") == 0);
    CHECK(strcmp(test_json_str(body, "organization", NULL), "alice") == 0);
    CHECK(strcmp(test_json_str(body, "visibility", NULL), "private") == 0);
    CHECK(strcmp(test_json_str(body, "type", NULL), "model") == 0);
    cJSON_Delete(body);
    cJSON_Delete(j);

    /* error mapping; a server echoing the token never gets it into a message */
    struct {
        int status;
        const char *headers, *body;
        enum ckpt_err_kind kind;
        const char *hint;
    } errs[] = {
        {401, NULL, "{\"error\":\"Invalid credentials: " TOKEN "\"}", CKPT_ERR_AUTH, "alice/m"},
        {403, NULL, "{\"error\":\"forbidden\"}", CKPT_ERR_AUTH, "token"},
        {404, "{\"X-Error-Code\":\"RepoNotFound\"}", "{}", CKPT_ERR_NOT_FOUND, "alice/m"},
        {404, "{\"X-Error-Code\":\"RevisionNotFound\",\"X-Error-Message\":\"Invalid rev id\"}",
         "{}", CKPT_ERR_NOT_FOUND, "refs/pr/1"},
        {412, NULL, "{\"error\":\"The branch was updated\"}", CKPT_ERR_CONFLICT, "branch"},
        {422, NULL, "{\"error\":[\"Invalid path '..\\\\x'\"]}", CKPT_ERR_REJECTED, "Invalid path"},
        {413, NULL, "{\"errors\":[{\"message\":\"too many files\"}]}", CKPT_ERR_REJECTED,
         "too many files"},
        {400, "{\"Content-Type\":\"text/plain\"}", "plain words", CKPT_ERR_REJECTED, "plain"},
        {302, NULL, "{}", CKPT_ERR_PROTOCOL, "302"},
    };
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
        memset(&r, 0, sizeof(r));
        test_echo_canned(&srv, errs[i].status, errs[i].headers, errs[i].body);
        REQUIRE(hub_get_head(hub, on_str, &r, NULL) == 0);
        wait_res(&r);
        CHECK(!r.ok && r.err.kind == errs[i].kind && r.err.code == errs[i].status);
        if (strstr(r.err.msg, errs[i].hint) == NULL) {
            fprintf(stderr, "HTTP %d: message '%s' lacks '%s'\n", errs[i].status, r.err.msg,
                    errs[i].hint);
            test_failures++;
        }
    }
    /* a server text clipped in the middle of an echoed token: not even its start survives */
    {
        char clipped[260];
        memset(clipped, 'x', 190);
        snprintf(clipped + 190, sizeof(clipped) - 190, "%s", TOKEN);
        memset(&r, 0, sizeof(r));
        test_echo_canned(&srv, 400, "{\"Content-Type\":\"text/plain\"}", clipped);
        REQUIRE(hub_get_head(hub, on_str, &r, NULL) == 0);
        wait_res(&r);
        CHECK(!r.ok && strstr(r.err.msg, "xxxxxx***") != NULL);
        CHECK(strstr(r.err.msg, "hf_h") == NULL);
    }
    /* 5xx is retried (2 attempts here), then a server error */
    memset(&r, 0, sizeof(r));
    test_echo_canned(&srv, 500, NULL, "{\"error\":\"boom\"}");
    test_echo_canned(&srv, 503, NULL, "{\"error\":\"still boom\"}");
    REQUIRE(hub_get_head(hub, on_str, &r, NULL) == 0);
    wait_res(&r);
    CHECK(!r.ok && r.err.kind == CKPT_ERR_SERVER && strstr(r.err.msg, "still boom") != NULL);
    /* head: revision percent-encoded as one segment */
    memset(&r, 0, sizeof(r));
    test_echo_canned(&srv, 200, NULL, "{\"sha\":\"" HEAD1 "\"}");
    REQUIRE(hub_get_head(hub, on_str, &r, NULL) == 0);
    wait_res(&r);
    CHECK(r.ok && strcmp(r.str, HEAD1) == 0);
    j = test_echo_last(&srv);
    CHECK(strcmp(test_json_str(j, "path", NULL),
                 "/hub/api/models/alice/m/revision/refs%2Fpr%2F1") == 0);
    cJSON_Delete(j);

    test_commit_dates();

    /* preupload: the request, then every kind of broken answer */
    struct hub_preupload_file f[2] = {
        {.path = "a/model.safetensors",
         .size = 100,
         .sample = (const unsigned char *)"abc",
         .sample_len = 3},
        {.path = "a/empty.bin", .size = 0, .sample = (const unsigned char *)"", .sample_len = 0},
    };
    preupload_case("{\"files\":[{\"path\":\"a/model.safetensors\",\"uploadMode\":\"lfs\","
                   "\"shouldIgnore\":false,\"oid\":\"" SHA_A "\"},{\"path\":\"a/empty.bin\","
                   "\"uploadMode\":\"lfs\",\"shouldIgnore\":true}],\"commitOid\":\"" HEAD1 "\"}",
                   CKPT_ERR_NONE, NULL, f, 2);
    CHECK(f[0].mode == HUB_MODE_LFS && strcmp(f[0].remote_oid, SHA_A) == 0);
    CHECK(!f[0].should_ignore);
    CHECK(f[1].mode == HUB_MODE_REGULAR && f[1].should_ignore && f[1].remote_oid[0] == '\0');
    j = test_echo_last(&srv);
    CHECK(strcmp(test_json_str(j, "path", NULL),
                 "/hub/api/models/alice/m/preupload/refs%2Fpr%2F1") == 0);
    body = cJSON_Parse(test_json_str(j, "body", NULL));
    cJSON *files = cJSON_GetObjectItemCaseSensitive(body, "files");
    CHECK(cJSON_GetArraySize(files) == 2);
    CHECK(strcmp(test_json_str(cJSON_GetArrayItem(files, 0), "sample", NULL), "YWJj") == 0);
    CHECK(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(files, 0), "size")->valuedouble ==
          100);
    cJSON_Delete(body);
    cJSON_Delete(j);
    const char *ok_tail = "],\"commitOid\":\"" HEAD1 "\"}";
    char ans[1024];
    struct {
        const char *files;
        const char *hint;
    } bad_pre[] = {
        {"\"files\":\"x\"", "'files'"},
        {"\"files\":[{\"path\":\"a/model.safetensors\"}", "uploadMode"},
        {"\"files\":[{\"path\":\"a/model.safetensors\",\"uploadMode\":\"xet\"}", "uploadMode"},
        {"\"files\":[{\"path\":\"a/model.safetensors\",\"uploadMode\":\"lfs\",\"shouldIgnore\":"
         "\"no\"}",
         "shouldIgnore"},
        {"\"files\":[{\"path\":\"a/model.safetensors\",\"uploadMode\":\"lfs\",\"oid\":5}", "oid"},
        {"\"files\":[{\"path\":7,\"uploadMode\":\"lfs\"}", "path"},
        {"\"files\":[{\"path\":\"a/model.safetensors\",\"uploadMode\":\"lfs\"}", "missing"},
    };
    for (size_t i = 0; i < sizeof(bad_pre) / sizeof(bad_pre[0]); i++) {
        snprintf(ans, sizeof(ans), "{%s%s", bad_pre[i].files,
                 strchr(bad_pre[i].files, '[') ? ok_tail : ",\"commitOid\":\"" HEAD1 "\"}");
        preupload_case(ans, CKPT_ERR_PROTOCOL, bad_pre[i].hint, f, 2);
    }
    preupload_case(
        "{\"files\":[{\"path\":\"a/model.safetensors\",\"uploadMode\":\"lfs\"},{\"path\":"
        "\"a/empty.bin\",\"uploadMode\":\"regular\"}]}",
        CKPT_ERR_PROTOCOL, "commitOid", f, 2);
    preupload_case("<html>oops</html>", CKPT_ERR_PROTOCOL, "JSON", f, 2);
    preupload_case("[1,2,3]", CKPT_ERR_PROTOCOL, "JSON", f, 2);

    /* LFS batch */
    struct hub_lfs_object o[3];
    memset(o, 0, sizeof(o));
    memcpy(o[0].oid, SHA_A, 65);
    o[0].size = 12;
    memcpy(o[1].oid, SHA_B, 65);
    o[1].size = 25;
    batch_case("{\"transfer\":\"multipart\",\"objects\":[{\"oid\":\"" SHA_A "\",\"size\":12},"
               "{\"oid\":\"" SHA_B "\",\"size\":25,\"actions\":{\"upload\":{\"href\":"
               "\"http://s/complete\",\"header\":{\"chunk_size\":\"10\",\"00002\":\"http://s/2\","
               "\"00001\":\"http://s/1\",\"00003\":\"http://s/3\"}}}}]}",
               CKPT_ERR_NONE, NULL, o, 2);
    CHECK(o[0].action == HUB_LFS_STORED);
    CHECK(o[1].action == HUB_LFS_MULTIPART && o[1].chunk_size == 10 && o[1].n_parts == 3);
    CHECK(o[1].n_parts == 3 && strcmp(o[1].part_urls[0], "http://s/1") == 0 &&
          strcmp(o[1].part_urls[2], "http://s/3") == 0);
    CHECK(o[1].href != NULL && strcmp(o[1].href, "http://s/complete") == 0);
    hub_lfs_object_release(&o[1]);
    j = test_echo_last(&srv);
    CHECK(strcmp(test_json_str(j, "path", NULL), "/hub/alice/m.git/info/lfs/objects/batch") == 0);
    CHECK(strcmp(test_json_str(j, "headers", "accept"), "application/vnd.git-lfs+json") == 0);
    body = cJSON_Parse(test_json_str(j, "body", NULL));
    CHECK(strcmp(test_json_str(body, "hash_algo", NULL), "sha256") == 0);
    CHECK(strcmp(test_json_str(body, "ref", "name"), "refs/pr/1") == 0);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(body, "transfers")) == 2);
    cJSON_Delete(body);
    cJSON_Delete(j);
    batch_case("{\"objects\":[{\"oid\":\"" SHA_A "\",\"size\":12,\"actions\":{\"upload\":{\"href\":"
               "\"http://s/put\"}}}]}",
               CKPT_ERR_NONE, NULL, o, 1);
    CHECK(o[0].action == HUB_LFS_BASIC && strcmp(o[0].href, "http://s/put") == 0);
    hub_lfs_object_release(&o[0]);
    struct {
        const char *obj;
        enum ckpt_err_kind kind;
        const char *hint;
    } bad_batch[] = {
        {"{\"oid\":\"" SHA_A "\",\"size\":12,\"error\":{\"code\":422,\"message\":\"too big\"}}",
         CKPT_ERR_REJECTED, "too big"},
        {"{\"oid\":\"" SHA_A "\",\"size\":\"twelve\"}", CKPT_ERR_PROTOCOL, "size"},
        {"{\"oid\":\"" SHA_A "\",\"size\":12,\"actions\":{\"upload\":{\"href\":3}}}",
         CKPT_ERR_PROTOCOL, "href"},
        {"{\"oid\":\"" SHA_A "\",\"size\":12,\"actions\":{\"upload\":{\"href\":\"file:///etc/"
         "passwd\"}}}",
         CKPT_ERR_PROTOCOL, "href"},
        {"{\"oid\":\"" SHA_A "\",\"size\":12,\"actions\":{\"upload\":{\"href\":\"http://s/c\","
         "\"header\":{\"chunk_size\":\"5\",\"1\":\"http://s/1\",\"2\":\"http://s/2\"}}}}",
         CKPT_ERR_PROTOCOL, "2 part URLs"},
        {"{\"oid\":\"" SHA_A "\",\"size\":12,\"actions\":{\"upload\":{\"href\":\"http://s/c\","
         "\"header\":{\"chunk_size\":\"10\",\"1\":\"http://s/1\",\"3\":\"http://s/3\"}}}}",
         CKPT_ERR_PROTOCOL, "1..N"},
        {"{\"oid\":\"" SHA_A "\",\"size\":12,\"actions\":{\"upload\":{\"href\":\"http://s/c\","
         "\"header\":{\"chunk_size\":\"0\"}}}}",
         CKPT_ERR_PROTOCOL, "chunk_size"},
        {"{\"oid\":\"" SHA_B "\",\"size\":12}", CKPT_ERR_PROTOCOL, "missing"},
    };
    for (size_t i = 0; i < sizeof(bad_batch) / sizeof(bad_batch[0]); i++) {
        snprintf(ans, sizeof(ans), "{\"objects\":[%s]}", bad_batch[i].obj);
        batch_case(ans, bad_batch[i].kind, bad_batch[i].hint, o, 1);
        CHECK(o[0].href == NULL && o[0].part_urls == NULL);
    }

    /* multipart completion: no token, parts in order, ETags verbatim */
    memset(&r, 0, sizeof(r));
    const char *etags[] = {"\"e1\"", "\"e2\""};
    char curl_[300];
    snprintf(curl_, sizeof(curl_), "%s/hub/complete?sig=x", srv.endpoint);
    test_echo_canned(&srv, 200, NULL, "{}");
    REQUIRE(hub_lfs_complete(hub, curl_, SHA_A, etags, 2, on_done, &r, NULL) == 0);
    wait_res(&r);
    CHECK(r.ok);
    j = test_echo_last(&srv);
    CHECK(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "headers"),
                                           "authorization") == NULL);
    CHECK(strcmp(test_json_str(j, "headers", "content-type"), "application/vnd.git-lfs+json") == 0);
    body = cJSON_Parse(test_json_str(j, "body", NULL));
    cJSON *parts = cJSON_GetObjectItemCaseSensitive(body, "parts");
    CHECK(cJSON_GetArraySize(parts) == 2);
    CHECK(strcmp(test_json_str(cJSON_GetArrayItem(parts, 1), "etag", NULL), "\"e2\"") == 0);
    CHECK(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(parts, 1), "partNumber")->valueint ==
          2);
    cJSON_Delete(body);
    cJSON_Delete(j);
    /* a storage 403 (expired URL) is not blamed on the token */
    memset(&r, 0, sizeof(r));
    test_echo_canned(&srv, 403, NULL, "{\"error\":\"expired\"}");
    REQUIRE(hub_lfs_complete(hub, curl_, SHA_A, etags, 2, on_done, &r, NULL) == 0);
    wait_res(&r);
    CHECK(!r.ok && r.err.kind == CKPT_ERR_REJECTED && strstr(r.err.msg, "sig=") == NULL);

    /* commit: NDJSON lines; one attempt even on 5xx */
    struct hub_commit_op ops[] = {
        {.kind = HUB_COMMIT_FILE, .path = "a/c.json", .content = "{}\n", .content_len = 3},
        {.kind = HUB_COMMIT_LFS, .path = "a/m.safetensors", .oid = SHA_A, .size = 12},
        {.kind = HUB_COMMIT_DELETE, .path = "a/old.bin"},
    };
    memset(&r, 0, sizeof(r));
    test_echo_canned(&srv, 200, NULL, "{\"success\":true,\"commitOid\":\"" HEAD1 "\"}");
    REQUIRE(hub_commit(hub, "step 40", "desc", HEAD1, ops, 3, on_str, &r, NULL) == 0);
    wait_res(&r);
    CHECK(r.ok && strcmp(r.str, HEAD1) == 0);
    j = test_echo_last(&srv);
    CHECK(strcmp(test_json_str(j, "headers", "content-type"), "application/x-ndjson") == 0);
    const char *nd = test_json_str(j, "body", NULL);
    char *copy = strdup(nd);
    int line = 0;
    for (char *s = strtok(copy, "\n"); s != NULL; s = strtok(NULL, "\n"), line++) {
        cJSON *l = cJSON_Parse(s);
        const char *key = test_json_str(l, "key", NULL);
        cJSON *v = cJSON_GetObjectItemCaseSensitive(l, "value");
        if (line == 0)
            CHECK(strcmp(key, "header") == 0 &&
                  strcmp(test_json_str(v, "summary", NULL), "step 40") == 0 &&
                  strcmp(test_json_str(v, "parentCommit", NULL), HEAD1) == 0);
        if (line == 1)
            CHECK(strcmp(key, "file") == 0 &&
                  strcmp(test_json_str(v, "content", NULL), "e30K") == 0 &&
                  strcmp(test_json_str(v, "encoding", NULL), "base64") == 0);
        if (line == 2)
            CHECK(strcmp(key, "lfsFile") == 0 &&
                  strcmp(test_json_str(v, "oid", NULL), SHA_A) == 0 &&
                  strcmp(test_json_str(v, "algo", NULL), "sha256") == 0 &&
                  cJSON_GetObjectItemCaseSensitive(v, "size")->valuedouble == 12);
        if (line == 3)
            CHECK(strcmp(key, "deletedFile") == 0 &&
                  strcmp(test_json_str(v, "path", NULL), "a/old.bin") == 0);
        cJSON_Delete(l);
    }
    CHECK(line == 4);
    free(copy);
    cJSON_Delete(j);
    memset(&r, 0, sizeof(r));
    test_echo_canned(&srv, 500, NULL, "{\"error\":\"commit failed\"}");
    test_echo_canned(&srv, 200, NULL, "{\"success\":true,\"commitOid\":\"" HEAD1 "\"}");
    REQUIRE(hub_commit(hub, "step 40", NULL, NULL, ops, 3, on_str, &r, NULL) == 0);
    wait_res(&r);
    CHECK(!r.ok && r.err.kind == CKPT_ERR_SERVER && strstr(r.err.msg, "1 attempts") != NULL);
    CHECK(hub_commit(hub, "", NULL, NULL, ops, 3, on_str, &r, NULL) == UV_EINVAL);
    /* drain the unused canned answer so the server state is clean */
    memset(&r, 0, sizeof(r));
    REQUIRE(hub_get_head(hub, on_str, &r, NULL) == 0);
    wait_res(&r);

    /* nobody listening: a network error naming the endpoint */
    struct hub *dead;
    struct hub_config dcfg = {.endpoint = "http://127.0.0.1:1", .token = TOKEN, .repo_id = "a/b"};
    REQUIRE(hub_init(&dead, http, &dcfg, &e) == 0);
    memset(&r, 0, sizeof(r));
    REQUIRE(hub_whoami(dead, on_str, &r, NULL) == 0);
    wait_res(&r);
    CHECK(!r.ok && r.err.kind == CKPT_ERR_NETWORK &&
          strncmp(r.err.msg, "cannot reach 'http://127.0.0.1:1'", 33) == 0);
    hub_free(dead);

    test_bucket(endpoint);
    hub_free(hub);
    int closed = 0;
    http_close(http, on_closed, &closed);
    test_run_until(&loop, &closed);
    test_close_loop(&loop);
    test_hub_stop(&srv);
    test_rm_rf(dir);
    curl_global_cleanup();
    return check_report("test_hub");
}
