/* test_upload.c - upload.c + hub.c + http.c + hash.c against the real test hub (tests/hub/hub.py).
 *
 * A JSON file and a 12 MiB file go up as one commit (multipart with 5 MiB parts); the tree and
 * the downloaded bytes are checked; a second push sends nothing and makes no commit; injected
 * 503s, a reset mid-part and a dropped commit answer are survived; a bad token gives an auth
 * error that does not contain the token.
 */
#include "hash.h"
#include "http.h"
#include "hub.h"
#include "upload.h"

#include "testutil.h"

#define TOKEN "hf_alice_token"
#define REPO "alice/ckpt-test"

struct env {
    uv_loop_t loop;
    struct http *http;
    struct hash_pool *pool;
    struct hub *hub;
    struct test_hub th;
    char dir[512];
};

struct result {
    int done;
    struct ckpt_err err;
    int ok;
    char oid[64];
    struct upload_progress progress;
};

static struct upload *current;

static void on_upload_done(void *ctx, const struct ckpt_err *err, const char *oid)
{
    struct result *r = ctx;
    r->done = 1;
    r->ok = err == NULL;
    if (err != NULL)
        r->err = *err;
    snprintf(r->oid, sizeof(r->oid), "%s", oid != NULL ? oid : "");
    upload_get_progress(current, &r->progress);
}

static void on_repo(void *ctx, const struct ckpt_err *err)
{
    struct result *r = ctx;
    r->done = 1;
    r->ok = err == NULL;
    if (err != NULL)
        r->err = *err;
}

static void on_whoami(void *ctx, const struct ckpt_err *err, const char *user)
{
    struct result *r = ctx;
    r->done = 1;
    r->ok = err == NULL;
    if (err != NULL)
        r->err = *err;
    snprintf(r->oid, sizeof(r->oid), "%s", user != NULL ? user : "");
}

static struct hub *make_hub(struct env *e, const char *token)
{
    struct hub_config cfg = {.endpoint = e->th.endpoint,
                             .token = token,
                             .repo_id = REPO,
                             .repo_type = "model",
                             .revision = "main",
                             .private_repo = true};
    struct hub *hub;
    struct ckpt_err err;
    ckpt_err_clear(&err);
    REQUIRE(hub_init(&hub, e->http, &cfg, &err) == 0);
    return hub;
}

static void push(struct env *e, struct hub *hub, const struct upload_file *files, size_t n,
                 const char *msg, struct result *r)
{
    memset(r, 0, sizeof(*r));
    REQUIRE(upload_start(&current, hub, e->pool, files, n, msg, NULL, on_upload_done, r) == 0);
    test_run_until(&e->loop, &r->done);
    if (!r->ok)
        fprintf(stderr, "upload failed: %s: %s\n", ckpt_err_kind_name(r->err.kind), r->err.msg);
    upload_free(current);
    current = NULL;
}

/* The file at path_in_repo on main, downloaded through resolve (following the LFS redirect),
 * equals local. */
static int same_remote(struct env *e, const char *path_in_repo, const char *local)
{
    char url[1024];
    struct test_buf b;
    size_t len = 0;
    snprintf(url, sizeof(url), "%s/%s/resolve/main/%s", e->th.endpoint, REPO, path_in_repo);
    long st = test_http("GET", url, TOKEN, NULL, &b);
    char *want = test_read_file(local, &len);
    int same = st == 200 && want != NULL && b.len == len && memcmp(b.p, want, len) == 0;
    if (!same)
        fprintf(stderr, "download of '%s': status %ld, %zu bytes, want %zu\n", path_in_repo, st,
                b.len, len);
    free(b.p);
    free(want);
    return same;
}

static int tree_has(struct env *e, const char *path)
{
    char url[1024];
    struct test_buf b;
    snprintf(url, sizeof(url), "%s/api/models/%s/tree/main?recursive=true", e->th.endpoint, REPO);
    long st = test_http("GET", url, TOKEN, NULL, &b);
    int found = 0;
    cJSON *j = cJSON_Parse(b.p);
    const cJSON *it;
    cJSON_ArrayForEach(it, j)
    {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "path");
        if (cJSON_IsString(p) && strcmp(p->valuestring, path) == 0)
            found = 1;
    }
    cJSON_Delete(j);
    free(b.p);
    return st == 200 && found;
}

static void head_of_main(struct env *e, char *out, size_t size)
{
    char url[1024];
    struct test_buf b;
    snprintf(url, sizeof(url), "%s/api/models/%s/revision/main", e->th.endpoint, REPO);
    test_http("GET", url, TOKEN, NULL, &b);
    cJSON *j = cJSON_Parse(b.p);
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(j, "sha");
    snprintf(out, size, "%s", cJSON_IsString(sha) ? sha->valuestring : "");
    cJSON_Delete(j);
    free(b.p);
}

static void on_http_closed(void *ctx)
{
    *(int *)ctx = 1;
}

int main(void)
{
    struct env e;
    memset(&e, 0, sizeof(e));
    test_mkdtemp(e.dir, sizeof(e.dir));
    test_hub_start(&e.th, e.dir);
    REQUIRE(uv_loop_init(&e.loop) == 0);
    struct http_opts hopts = {.backoff_base_ms = 50, .backoff_cap_ms = 200};
    REQUIRE(http_init(&e.http, &e.loop, &hopts) == 0);
    REQUIRE(hash_pool_init(&e.pool, &e.loop, 2, 0) == 0);
    e.hub = make_hub(&e, TOKEN);

    char json[600], big[600], big2[600], big3[600], small2[600];
    snprintf(json, sizeof(json), "%s/config.json", e.dir);
    snprintf(big, sizeof(big), "%s/model.safetensors", e.dir);
    snprintf(big2, sizeof(big2), "%s/optimizer.pt", e.dir);
    snprintf(big3, sizeof(big3), "%s/rng.bin", e.dir);
    snprintf(small2, sizeof(small2), "%s/trainer_state.json", e.dir);
    const char *cfg_text = "{\"step\": 40, \"lr\": 0.001}\n";
    test_write_file(json, cfg_text, strlen(cfg_text));
    test_random_file(big, 12 * 1024 * 1024, 7);

    struct result r;
    /* whoami and repo creation (twice: the second is a 409 that counts as success) */
    memset(&r, 0, sizeof(r));
    REQUIRE(hub_whoami(e.hub, on_whoami, &r, NULL) == 0);
    test_run_until(&e.loop, &r.done);
    CHECK(r.ok && strcmp(r.oid, "alice") == 0);
    for (int i = 0; i < 2; i++) {
        memset(&r, 0, sizeof(r));
        REQUIRE(hub_ensure_repo(e.hub, on_repo, &r, NULL) == 0);
        test_run_until(&e.loop, &r.done);
        if (!r.ok)
            fprintf(stderr, "ensure_repo: %s\n", r.err.msg);
        CHECK(r.ok);
    }

    /* 1. first push: one commit with both files, the big one multipart */
    struct upload_file files[] = {
        {.path_in_repo = "ckpt/config.json", .local_path = json},
        {.path_in_repo = "ckpt/model.safetensors", .local_path = big},
    };
    size_t mark = test_hub_lines(&e.th);
    push(&e, e.hub, files, 2, "checkpoint 40", &r);
    CHECK(r.ok);
    CHECK(strlen(r.oid) == 40);
    char head[64];
    head_of_main(&e, head, sizeof(head));
    CHECK(strcmp(head, r.oid) == 0);
    CHECK(tree_has(&e, "ckpt/config.json"));
    CHECK(tree_has(&e, "ckpt/model.safetensors"));
    CHECK(same_remote(&e, "ckpt/config.json", json));
    CHECK(same_remote(&e, "ckpt/model.safetensors", big));
    CHECK(test_hub_count(&e.th, "part_put", mark, 0) == 3);
    CHECK(test_hub_count(&e.th, "complete", mark, 0) == 1);
    CHECK(test_hub_count(&e.th, "commit", mark, 0) == 1);
    CHECK(r.progress.files_total == 2 && r.progress.files_skipped == 0);
    CHECK(r.progress.bytes_total == 12 * 1024 * 1024 + strlen(cfg_text));
    CHECK(r.progress.bytes_sent == 12 * 1024 * 1024);

    /* 2. the same files again: nothing uploaded, no commit, the head is reported */
    char first[64];
    snprintf(first, sizeof(first), "%s", r.oid);
    mark = test_hub_lines(&e.th);
    push(&e, e.hub, files, 2, "checkpoint 40 again", &r);
    CHECK(r.ok);
    CHECK(strcmp(r.oid, first) == 0);
    CHECK(r.progress.files_skipped == 2);
    CHECK(r.progress.bytes_sent == 0);
    CHECK(test_hub_count(&e.th, "lfs_put", mark, 0) == 0);
    CHECK(test_hub_count(&e.th, "part_put", mark, 0) == 0);
    CHECK(test_hub_count(&e.th, "lfs_batch", mark, 0) == 0);
    CHECK(test_hub_count(&e.th, "commit", mark, 0) == 0);

    /* 3. faults: two 503 with Retry-After on parts, a reset mid-part, a 429 on preupload, a
     * 502 on the batch; the push still lands, and each fault shows in the log */
    test_random_file(big2, 11 * 1024 * 1024 + 3, 8);
    test_hub_fault(&e.th, "{\"route\":\"part_put\",\"count\":2,\"status\":503,\"retry_after\":1}");
    test_hub_fault(&e.th, "{\"route\":\"part_put\",\"count\":1,\"reset_after_bytes\":100000}");
    test_hub_fault(&e.th, "{\"route\":\"preupload\",\"count\":1,\"status\":429,\"ratelimit_t\":0}");
    test_hub_fault(&e.th, "{\"route\":\"lfs_batch\",\"count\":1,\"status\":502}");
    struct upload_file files3[] = {
        {.path_in_repo = "ckpt/config.json", .local_path = json},
        {.path_in_repo = "ckpt/optimizer.pt", .local_path = big2},
    };
    mark = test_hub_lines(&e.th);
    push(&e, e.hub, files3, 2, "checkpoint 50", &r);
    CHECK(r.ok);
    CHECK(r.progress.files_skipped == 1);
    CHECK(test_hub_count(&e.th, "part_put", mark, 1) == 3);
    CHECK(test_hub_count(&e.th, "part_put", mark, 0) == 6);
    CHECK(test_hub_count(&e.th, "preupload", mark, 1) == 1);
    CHECK(test_hub_count(&e.th, "lfs_batch", mark, 1) == 1);
    CHECK(test_hub_count(&e.th, "commit", mark, 0) == 1);
    CHECK(r.progress.bytes_sent == 11 * 1024 * 1024 + 3);
    CHECK(same_remote(&e, "ckpt/optimizer.pt", big2));

    /* 4. the commit lands but its answer is lost: the head re-read proves it, no second commit */
    test_random_file(big3, 2 * 1024 * 1024, 9);
    test_write_file(small2, "{\"global_step\": 60}\n", 20);
    test_hub_fault(&e.th, "{\"route\":\"commit\",\"count\":1,\"drop_response\":true}");
    struct upload_file files4[] = {
        {.path_in_repo = "ckpt/rng.bin", .local_path = big3},
        {.path_in_repo = "ckpt/trainer_state.json", .local_path = small2},
    };
    mark = test_hub_lines(&e.th);
    push(&e, e.hub, files4, 2, "checkpoint 60", &r);
    CHECK(r.ok);
    head_of_main(&e, head, sizeof(head));
    CHECK(strcmp(head, r.oid) == 0);
    CHECK(test_hub_count(&e.th, "commit", mark, 0) == 1);
    CHECK(test_hub_count(&e.th, "lfs_put", mark, 0) == 1);
    CHECK(same_remote(&e, "ckpt/rng.bin", big3));
    CHECK(same_remote(&e, "ckpt/trainer_state.json", small2));

    /* 4b. the commit answers 412 once (someone moved the branch): the head is re-read, our
     * content is not there, so it commits again on the new head; a 503 goes the same way */
    test_write_file(small2, "{\"global_step\": 65}\n", 20);
    test_hub_fault(&e.th, "{\"route\":\"commit\",\"count\":1,\"status\":412}");
    test_hub_fault(&e.th, "{\"route\":\"commit\",\"count\":1,\"status\":503}");
    mark = test_hub_lines(&e.th);
    push(&e, e.hub, files4, 2, "checkpoint 65", &r);
    CHECK(r.ok);
    CHECK(test_hub_count(&e.th, "commit", mark, 0) == 3);
    CHECK(test_hub_count(&e.th, "preupload", mark, 0) == 3);
    CHECK(same_remote(&e, "ckpt/trainer_state.json", small2));
    head_of_main(&e, head, sizeof(head));
    CHECK(strcmp(head, r.oid) == 0);

    /* 4c. pipeline: 60 MiB in 5 files. Once 36 MiB are hashed they go to a preupload and an LFS
     * batch while the rest still hashes, then the rest in a second one; the fifth file has the
     * first one's content (in another batch): one object, sent once. Still one commit. */
    {
        char pipe_paths[5][600], pipe_repo[5][64];
        struct upload_file pipe_files[5];
        const unsigned seeds[5] = {20, 21, 22, 23, 20};
        for (int i = 0; i < 5; i++) {
            snprintf(pipe_paths[i], sizeof(pipe_paths[i]), "%s/shard-%d.bin", e.dir, i);
            snprintf(pipe_repo[i], sizeof(pipe_repo[i]), "pipe/shard-%d.bin", i);
            test_random_file(pipe_paths[i], 12 * 1024 * 1024, seeds[i]);
            pipe_files[i] =
                (struct upload_file){.path_in_repo = pipe_repo[i], .local_path = pipe_paths[i]};
        }
        mark = test_hub_lines(&e.th);
        push(&e, e.hub, pipe_files, 5, "pipelined", &r);
        CHECK(r.ok);
        CHECK(test_hub_count(&e.th, "preupload", mark, 0) == 2);
        CHECK(test_hub_count(&e.th, "lfs_batch", mark, 0) == 2);
        CHECK(test_hub_count(&e.th, "part_put", mark, 0) == 4 * 3);
        CHECK(test_hub_count(&e.th, "complete", mark, 0) == 4);
        CHECK(test_hub_count(&e.th, "commit", mark, 0) == 1);
        CHECK(r.progress.bytes_total == 5ull * 12 * 1024 * 1024);
        CHECK(r.progress.bytes_sent == 4ull * 12 * 1024 * 1024);
        for (int i = 0; i < 5; i++)
            CHECK(same_remote(&e, pipe_repo[i], pipe_paths[i]));
        head_of_main(&e, head, sizeof(head));
        CHECK(strcmp(head, r.oid) == 0);
    }

    /* 5. a bad token: CKPT_ERR_AUTH naming the repo, never the token */
    const char *bad = "hf_not_a_valid_token_123";
    struct hub *badhub = make_hub(&e, bad);
    test_write_file(small2, "{\"global_step\": 70}\n", 20);
    push(&e, badhub, files4, 2, "checkpoint 70", &r);
    CHECK(!r.ok);
    CHECK(r.err.kind == CKPT_ERR_AUTH);
    CHECK(strstr(r.err.msg, REPO) != NULL);
    CHECK(strstr(r.err.msg, bad) == NULL);
    hub_free(badhub);

    /* 6. cancel right away: the callback reports cancellation */
    memset(&r, 0, sizeof(r));
    REQUIRE(upload_start(&current, e.hub, e.pool, files3, 2, "never", NULL, on_upload_done, &r) ==
            0);
    upload_cancel(current);
    test_run_until(&e.loop, &r.done);
    CHECK(!r.ok && r.err.code == UV_ECANCELED);
    upload_free(current);

    /* 6b. no_commit (a node of several): the objects go up, even a small JSON one as LFS, no
     * commit is made, and the results name what another process commits by sha256 */
    {
        char nc_json[600], nc_big[600], before[64], after[64];
        snprintf(nc_json, sizeof(nc_json), "%s/nc.json", e.dir);
        snprintf(nc_big, sizeof(nc_big), "%s/nc.bin", e.dir);
        test_write_file(nc_json, "{\"rank\": 1}\n", 12);
        test_random_file(nc_big, 3 * 1024 * 1024 + 5, 11);
        struct upload_file nc[] = {
            {.path_in_repo = "node1/nc.json", .local_path = nc_json},
            {.path_in_repo = "node1/nc.bin", .local_path = nc_big},
        };
        struct upload_opts no = {.no_commit = true};
        head_of_main(&e, before, sizeof(before));
        memset(&r, 0, sizeof(r));
        REQUIRE(upload_start(&current, e.hub, e.pool, nc, 2, "unused", &no, on_upload_done, &r) ==
                0);
        test_run_until(&e.loop, &r.done);
        CHECK(r.ok);
        CHECK_STR(r.oid, "");
        head_of_main(&e, after, sizeof(after));
        CHECK_STR(after, before);
        struct upload_file_result res[2];
        struct hub_commit_op ops[2];
        for (size_t i = 0; i < 2; i++) {
            REQUIRE(upload_file_result(current, i, &res[i]) == 0);
            CHECK_STR(res[i].path_in_repo, nc[i].path_in_repo);
            CHECK_STR(res[i].via, "lfs");
            CHECK(strlen(res[i].sha256) == 64 && !res[i].ignored);
            ops[i] = (struct hub_commit_op){.kind = HUB_COMMIT_LFS,
                                            .path = res[i].path_in_repo,
                                            .oid = res[i].sha256,
                                            .size = res[i].size};
        }
        CHECK_INT(res[0].size, 12);
        CHECK_INT(res[1].size, 3 * 1024 * 1024 + 5);
        CHECK(upload_file_result(current, 2, &res[0]) == -EINVAL);
        memset(&r, 0, sizeof(r));
        REQUIRE(hub_commit(e.hub, "node parts", "", NULL, ops, 2, on_upload_done, &r, NULL) == 0);
        test_run_until(&e.loop, &r.done);
        CHECK(r.ok);
        upload_free(current);
        current = NULL;
        CHECK(same_remote(&e, "node1/nc.json", nc_json));
        CHECK(same_remote(&e, "node1/nc.bin", nc_big));
    }

    /* 7. nothing ever sent a token to a presigned URL */
    CHECK(test_hub_auth_leaks(&e.th) == 0);

    hub_free(e.hub);
    int closed = 0;
    http_close(e.http, on_http_closed, &closed);
    test_run_until(&e.loop, &closed);
    CHECK(hash_pool_free(e.pool) == 0);
    test_close_loop(&e.loop);
    test_hub_stop(&e.th);
    if (test_failures != 0)
        fprintf(stderr, "keeping '%s' for inspection\n", e.dir);
    else
        test_rm_rf(e.dir);
    curl_global_cleanup();
    return check_report("test_upload");
}
