/* test_xet_upload.c - xet_upload.c + xet_session.c against the real test hub's CAS.
 *
 * A 3 MiB file goes up as xorbs and a shard; its Xet hash and SHA-256 are the format library's.
 * Sent again it costs nothing, at each dedup level alone: the session's own chunks, the shard
 * cache a new session reads from disk, the CAS's global dedup query. With the dedup query
 * answering nothing and a journal naming the xorbs, nothing is sent again either (the resume
 * after a SIGKILL). A CAS answering garbage to a dedup query fails the upload with a sentence
 * that says so, and no shard is sent; so does a file that changed since it was hashed.
 * A hash pool in Xet mode gives the same digests as without, and keeps the file's scan: the
 * upload takes it instead of reading the file again, unless the file changed since (then it is
 * read again and refused, as without the pool).
 */
#include "hash.h"
#include "http.h"
#include "hub.h"
#include "journal.h"
#include "xet_file.h"
#include "xet_session.h"
#include "xet_upload.h"

#include "testutil.h"

#define TOKEN "hf_alice_token"
#define REPO "alice/xet-upload-test"
#define MiB (1024u * 1024)

static uv_loop_t loop;
static struct http *http;
static struct hub *hub;
static struct test_hub th;
static char dir[512];
static struct hash_pool *upload_hashes; /* the uploads' opts.hashes */

struct hashed {
    int done;
    int status;
    struct hash_result res;
};

static void on_hashed(void *ctx, int status, const struct hash_result *res)
{
    struct hashed *h = ctx;
    h->done = 1;
    h->status = status;
    if (res != NULL)
        h->res = *res;
}

static struct hashed hash_once(struct hash_pool *p, const char *path)
{
    struct hashed h = {0};
    REQUIRE(hash_file(p, path, on_hashed, &h) == 0);
    test_run_until(&loop, &h.done);
    return h;
}

struct res {
    int done;
    int ok;
    struct ckpt_err err;
    struct xet_upload_result r;
    struct xet_upload_progress p;
    struct xet_upload *u;
};

static void on_done(void *ctx, const struct ckpt_err *err, const struct xet_upload_result *res,
                    size_t n)
{
    struct res *r = ctx;
    r->done = 1;
    r->ok = err == NULL;
    if (err != NULL)
        r->err = *err;
    if (res != NULL && n == 1)
        r->r = res[0];
    xet_upload_get_progress(r->u, &r->p);
}

static void on_repo(void *ctx, const struct ckpt_err *err)
{
    struct res *r = ctx;
    r->done = 1;
    r->ok = err == NULL;
}

static void on_journal(void *ctx, int status)
{
    *(int *)ctx = status == 0 ? 1 : -1;
}

/* Uploads path through session s; returns the outcome. */
static struct res upload(struct xet_session *s, const char *path, const char *sha256, uint64_t size,
                         struct journal *j)
{
    char work[600];
    struct res r = {0};
    snprintf(work, sizeof(work), "%s/xet/tmp", dir);
    struct xet_upload_file f = {.local_path = path, .sha256 = sha256, .size = size};
    struct xet_upload_opts o = {
        .max_transfers = 2, .journal = j, .work_dir = work, .hashes = upload_hashes};
    REQUIRE(xet_upload_start(&r.u, &loop, s, &f, 1, &o, NULL, on_done, &r) == 0);
    test_run_until(&loop, &r.done);
    xet_upload_free(r.u);
    r.u = NULL;
    CHECK(strstr(r.err.msg, TOKEN) == NULL);
    return r;
}

static struct xet_session *session(const char *cache)
{
    struct xet_session *s;
    REQUIRE(xet_session_new(&s, &loop, hub, cache) == 0);
    return s;
}

/* Runs the loop until the session's background work (cache writes) is over. */
static void settle(void)
{
    for (int i = 0; i < 50; i++)
        uv_run(&loop, UV_RUN_NOWAIT), test_sleep_ms(10);
}

static void on_closed(void *ctx)
{
    *(int *)ctx = 1;
}

int main(void)
{
    char path[600], cache[600], cache2[600], cache3[600], jdir[600];
    test_mkdtemp(dir, sizeof(dir));
    test_hub_start(&th, dir);
    REQUIRE(uv_loop_init(&loop) == 0);
    struct http_opts hopts = {.backoff_base_ms = 20, .backoff_cap_ms = 40, .max_attempts = 3};
    REQUIRE(http_init(&http, &loop, &hopts) == 0);
    struct ckpt_err e;
    struct hub_config cfg = {
        .endpoint = th.endpoint, .token = TOKEN, .repo_id = REPO, .transfer = HUB_TRANSFER_XET};
    REQUIRE(hub_init(&hub, http, &cfg, &e) == 0);
    struct res rr = {0};
    REQUIRE(hub_ensure_repo(hub, on_repo, &rr, NULL) == 0);
    test_run_until(&loop, &rr.done);
    REQUIRE(rr.ok);

    /* a 3 MiB file of random bytes: the format library says what its hashes are */
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    FILE *fp = fopen(path, "wb");
    REQUIRE(fp != NULL);
    srand(7);
    for (size_t i = 0; i < 3 * MiB; i++)
        fputc(rand() & 0xff, fp);
    fclose(fp);
    struct xet_file_result scan;
    REQUIRE(xet_file_scan(path, NULL, NULL, &scan) == 0);
    char xet_hex[XET_HASH_HEX_LEN + 1];
    xet_hash_to_hex(&scan.file_hash, xet_hex);

    /* 1. first upload: every chunk is new */
    snprintf(cache, sizeof(cache), "%s/xet", dir);
    struct xet_session *s = session(cache);
    size_t before = test_hub_lines(&th);
    struct res r = upload(s, path, scan.sha256_hex, scan.size, NULL);
    CHECK(r.ok);
    if (!r.ok)
        fprintf(stderr, "upload: %s\n", r.err.msg);
    CHECK(strcmp(r.r.xet_hash, xet_hex) == 0);
    CHECK(strcmp(r.r.sha256, scan.sha256_hex) == 0);
    CHECK(r.p.bytes_new == 3 * MiB && r.p.bytes_deduped == 0);
    CHECK(r.p.xorbs_sent == 1 && r.p.xorbs_total == 1);
    CHECK(test_hub_count(&th, "xorb", before, 0) == 1);
    CHECK(test_hub_count(&th, "shard", before, 0) == 1);
    CHECK(test_hub_count(&th, "dedup", before, 0) == 1); /* the first chunk, nothing known */
    settle();

    /* 2. the same session again: its own chunks, nothing asked, nothing sent */
    before = test_hub_lines(&th);
    r = upload(s, path, scan.sha256_hex, scan.size, NULL);
    CHECK(r.ok && strcmp(r.r.xet_hash, xet_hex) == 0);
    CHECK(r.p.bytes_new == 0 && r.p.bytes_deduped == 3 * MiB && r.p.xorbs_total == 0);
    CHECK(test_hub_count(&th, "xorb", before, 0) == 0);
    CHECK(test_hub_count(&th, "dedup", before, 0) == 0);
    xet_session_free(s);

    /* 3. a restarted daemon: a new session reads the shard cache */
    s = session(cache);
    before = test_hub_lines(&th);
    r = upload(s, path, scan.sha256_hex, scan.size, NULL);
    CHECK(r.ok && r.p.bytes_new == 0 && r.p.xorbs_total == 0);
    CHECK(test_hub_count(&th, "xorb", before, 0) == 0);
    CHECK(test_hub_count(&th, "dedup", before, 0) == 0);
    xet_session_free(s);

    /* 4. no cache: the global dedup query finds the first chunk's xorb, and with it the rest */
    snprintf(cache2, sizeof(cache2), "%s/xet2", dir);
    s = session(cache2);
    before = test_hub_lines(&th);
    r = upload(s, path, scan.sha256_hex, scan.size, NULL);
    CHECK(r.ok && r.p.bytes_new == 0 && r.p.dedup_queries >= 1);
    CHECK(test_hub_count(&th, "xorb", before, 0) == 0);
    settle();
    xet_session_free(s);

    /* 5. resume: nothing cached, the dedup query finds nothing (404), but the journal says
     * the CAS took the xorb: the same file makes the same xorb, which is not sent again */
    snprintf(jdir, sizeof(jdir), "%s/journal", dir);
    struct journal *j = NULL;
    int jready = 0;
    REQUIRE(journal_open(&j, &loop, jdir, on_journal, &jready) == 0);
    test_run_until(&loop, &jready);
    snprintf(cache3, sizeof(cache3), "%s/xet3", dir);
    s = session(cache3);
    test_hub_fault(&th, "{\"route\":\"dedup\",\"count\":100,\"status\":404}");
    r = upload(s, path, scan.sha256_hex, scan.size, j); /* sends it, journals it */
    CHECK(r.ok && r.p.xorbs_sent == 1);
    xet_session_free(s);
    snprintf(cache3, sizeof(cache3), "%s/xet4", dir);
    s = session(cache3);
    before = test_hub_lines(&th);
    r = upload(s, path, scan.sha256_hex, scan.size, j);
    CHECK(r.ok && r.p.xorbs_sent == 0 && r.p.xorbs_resumed == 1);
    CHECK(r.p.bytes_new == 3 * MiB); /* planned as new, found journaled */
    CHECK(test_hub_count(&th, "xorb", before, 0) == 0);
    CHECK(test_hub_count(&th, "shard", before, 0) == 1);
    xet_session_free(s);
    {
        /* the journal speaks for one CAS only: the same Hub under another name is another
         * endpoint, so its session trusts none of it and sends the xorb */
        char other[128];
        struct hub *hub2;
        snprintf(other, sizeof(other), "http://localhost:%d", th.port);
        struct hub_config cfg2 = cfg;
        cfg2.endpoint = other;
        REQUIRE(hub_init(&hub2, http, &cfg2, &e) == 0);
        struct xet_session *s2;
        snprintf(cache3, sizeof(cache3), "%s/xet4b", dir);
        REQUIRE(xet_session_new(&s2, &loop, hub2, cache3) == 0);
        before = test_hub_lines(&th);
        r = upload(s2, path, scan.sha256_hex, scan.size, j);
        CHECK(r.ok && r.p.xorbs_sent == 1 && r.p.xorbs_resumed == 0);
        xet_session_free(s2);
        settle();
        hub_free(hub2);
    }

    /* 5b. an upload that failed (its xorb never reached the CAS) leaves nothing behind that a retry
     * in the same session would count on: the retry sends the xorb and the shard is accepted */
    {
        char path2[600], cache5[600];
        snprintf(path2, sizeof(path2), "%s/other.bin", dir);
        FILE *f2 = fopen(path2, "wb");
        REQUIRE(f2 != NULL);
        for (size_t i = 0; i < MiB; i++)
            fputc(rand() & 0xff, f2);
        fclose(f2);
        struct xet_file_result scan2;
        REQUIRE(xet_file_scan(path2, NULL, NULL, &scan2) == 0);
        snprintf(cache5, sizeof(cache5), "%s/xet-retry", dir);
        s = session(cache5);
        /* every attempt (3) reset mid-body: the upload fails on the network */
        test_hub_fault(&th, "{\"route\":\"xorb\",\"count\":3,\"reset_after_bytes\":1000}");
        r = upload(s, path2, scan2.sha256_hex, scan2.size, NULL);
        CHECK(!r.ok && r.err.kind == CKPT_ERR_NETWORK && strstr(r.err.msg, "xorb upload"));
        before = test_hub_lines(&th);
        r = upload(s, path2, scan2.sha256_hex, scan2.size, NULL);
        CHECK(r.ok && r.p.xorbs_sent == 1 && r.p.bytes_new == MiB);
        if (!r.ok)
            fprintf(stderr, "retry: %s\n", r.err.msg);
        CHECK(test_hub_count(&th, "xorb", before, 0) == 1);
        xet_file_result_free(&scan2);
        xet_session_free(s);
    }

    /* 6. garbage: a dedup answer that is not a shard, a xorb answer that is not its JSON */
    {
        char url[128];
        struct test_buf b;
        snprintf(url, sizeof(url), "%s/_admin/faults", th.endpoint);
        REQUIRE(test_http("DELETE", url, NULL, NULL, &b) == 200);
        free(b.p);
    }
    snprintf(cache3, sizeof(cache3), "%s/xet5", dir);
    s = session(cache3);
    test_hub_fault(&th, "{\"route\":\"dedup\",\"count\":1,\"status\":200}");
    before = test_hub_lines(&th);
    r = upload(s, path, scan.sha256_hex, scan.size, NULL);
    CHECK(!r.ok && r.err.kind == CKPT_ERR_PROTOCOL &&
          strstr(r.err.msg, "dedup query: the CAS answered garbage") != NULL);
    CHECK(test_hub_count(&th, "shard", before, 0) == 0);
    xet_session_free(s);
    /* (a xorb POST answered with garbage: test_xet_session; the test hub's status faults
     * answer before reading a body, which is a reset, not garbage) */
    snprintf(cache3, sizeof(cache3), "%s/xet6", dir);
    s = session(cache3);
    /* a file that changed since it was hashed is refused before anything is sent */
    r = upload(s, path, "0000000000000000000000000000000000000000000000000000000000000000",
               scan.size, NULL);
    CHECK(!r.ok && strstr(r.err.msg, "changed since it was hashed") != NULL);
    CHECK(r.p.scans_reused == 0);
    xet_session_free(s);
    settle();

    /* 7. the early hash in Xet mode: same digests, and the upload does not read the file again */
    {
        struct hash_pool *plain, *xp;
        REQUIRE(hash_pool_init(&plain, &loop, 2, 0) == 0);
        REQUIRE(hash_pool_init(&xp, &loop, 2, 0) == 0);
        hash_pool_keep_xet_scans(xp, true);
        struct hashed a = hash_once(plain, path), b = hash_once(xp, path);
        CHECK(a.status == 0 && b.status == 0);
        CHECK(strcmp(a.res.sha256, scan.sha256_hex) == 0 &&
              strcmp(b.res.sha256, a.res.sha256) == 0);
        CHECK(strcmp(a.res.git_sha1, b.res.git_sha1) == 0 && a.res.git_sha1[0] != '\0');
        CHECK(a.res.sample_len == b.res.sample_len &&
              memcmp(a.res.sample, b.res.sample, a.res.sample_len) == 0);
        upload_hashes = xp;
        snprintf(cache3, sizeof(cache3), "%s/xet7", dir);
        s = session(cache3);
        r = upload(s, path, scan.sha256_hex, scan.size, NULL);
        CHECK(r.ok && r.p.scans_reused == 1);
        CHECK(strcmp(r.r.xet_hash, xet_hex) == 0);
        /* taken: a second upload reads the file itself */
        r = upload(s, path, scan.sha256_hex, scan.size, NULL);
        CHECK(r.ok && r.p.scans_reused == 0 && strcmp(r.r.xet_hash, xet_hex) == 0);
        xet_session_free(s);
        settle();

        /* hashed, then rewritten in place (same size, one byte differs, a new mtime): the kept
         * scan no longer matches the file, which is read again and refused */
        struct hash_pool *xp2; /* its own cache: this pool read xp's file and kept its scan */
        REQUIRE(hash_pool_init(&xp2, &loop, 2, 0) == 0);
        hash_pool_keep_xet_scans(xp2, true);
        b = hash_once(xp2, path);
        CHECK(b.status == 0 && strcmp(b.res.sha256, scan.sha256_hex) == 0);
        upload_hashes = xp2;
        fp = fopen(path, "r+b");
        REQUIRE(fp != NULL);
        fseek(fp, 1000, SEEK_SET);
        int c = fgetc(fp);
        fseek(fp, 1000, SEEK_SET);
        fputc(c ^ 0xff, fp);
        fclose(fp);
        struct timespec later[2] = {{0, UTIME_OMIT}, {time(NULL) + 5, 0}};
        REQUIRE(utimensat(AT_FDCWD, path, later, 0) == 0);
        snprintf(cache3, sizeof(cache3), "%s/xet8", dir);
        s = session(cache3);
        r = upload(s, path, scan.sha256_hex, scan.size, NULL);
        CHECK(!r.ok && strstr(r.err.msg, "changed since it was hashed") != NULL);
        CHECK(r.p.scans_reused == 0);
        xet_session_free(s);
        settle();
        upload_hashes = NULL;
        CHECK(hash_pool_free(plain) == 0 && hash_pool_free(xp) == 0 && hash_pool_free(xp2) == 0);
    }

    xet_file_result_free(&scan);
    while (journal_busy(j))
        uv_run(&loop, UV_RUN_ONCE);
    journal_free(j);
    hub_free(hub);
    int closed = 0;
    http_close(http, on_closed, &closed);
    test_run_until(&loop, &closed);
    test_close_loop(&loop);
    test_hub_stop(&th);
    test_rm_rf(dir);
    return check_report("test_xet_upload");
}
