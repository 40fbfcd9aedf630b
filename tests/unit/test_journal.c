/* test_journal.c - journal.c on real files and a real loop: write then read back, a torn last
 * record, garbage in the middle, compaction, and a state kept across many reopenings. */
#include "journal.h"

#include "testutil.h"

static int n_done, last_status;

static void on_done(void *ctx, int status)
{
    (void)ctx;
    last_status = status;
    n_done++;
}

static struct journal *open_journal(uv_loop_t *loop, const char *dir)
{
    struct journal *j = NULL;
    int before = n_done;
    REQUIRE(journal_open(&j, loop, dir, on_done, NULL) == 0);
    while (n_done == before)
        uv_run(loop, UV_RUN_ONCE);
    CHECK(last_status == 0);
    return j;
}

static void wait_idle(uv_loop_t *loop, struct journal *j)
{
    int flag = 0;
    REQUIRE(journal_sync(j, on_done, NULL) == 0);
    int before = n_done;
    (void)flag;
    while (n_done == before || journal_busy(j))
        uv_run(loop, UV_RUN_ONCE);
}

static void close_journal(uv_loop_t *loop, struct journal *j)
{
    wait_idle(loop, j);
    journal_free(j);
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

static const char *oid_a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *oid_b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/* Writes two checkpoints and one multipart object with two finished parts. */
static void write_sample(uv_loop_t *loop, const char *dir)
{
    struct journal *j = open_journal(loop, dir);
    const char *files[] = {"model.safetensors", "config.json"};
    const char *urls[] = {"http://s/1?sig=x", "http://s/2?sig=y", "http://s/3?sig=z"};
    struct journal_file st[2] = {
        {.path = (char *)"model.safetensors",
         .size = 3000000,
         .mtime_ns = 1700000000123456789,
         .ino = 42},
        {.path = (char *)"config.json", .size = 10, .mtime_ns = 5, .ino = 43},
    };
    int before = n_done;

    CHECK(journal_detected(j, 1000000000001ull, "checkpoint-10", "transformers-trainer", NULL,
                           NULL) == 0);
    CHECK(journal_sealed(j, 1000000000001ull, "checkpoint-10", "transformers-trainer", 10, files, 2,
                         on_done, NULL) == 0);
    CHECK(journal_stats(j, 1000000000001ull, st, 2, NULL, NULL) == 0);
    CHECK(journal_hashed(j, 1000000000001ull, "model.safetensors", oid_a, NULL, NULL, NULL) == 0);
    CHECK(journal_set_state(j, 1000000000001ull, JOURNAL_UPLOADING, NULL, NULL, NULL) == 0);
    CHECK(journal_obj_planned(j, oid_a, 3000000, 1048576, "http://s/complete?sig=q", 1234, urls, 3,
                              NULL, NULL) == 0);
    CHECK(journal_part_done(j, oid_a, 3000000, 1, "\"etag-1\"", NULL, NULL) == 0);
    CHECK(journal_part_done(j, oid_a, 3000000, 3, "\"etag-3\"", on_done, NULL) == 0);
    CHECK(journal_part_done(j, oid_a, 3000000, 4, "\"nope\"", NULL, NULL) == UV_EINVAL);
    CHECK(journal_sealed(j, 1000000000002ull, "checkpoint-20", "transformers-trainer", 20, files, 1,
                         NULL, NULL) == 0);
    CHECK(journal_set_state(j, 1000000000002ull, JOURNAL_FAILED, "HTTP 413: too large", NULL,
                            NULL) == 0);
    while (n_done < before + 2)
        uv_run(loop, UV_RUN_ONCE);
    CHECK(last_status == 0);
    close_journal(loop, j);
}

static void check_sample(struct journal *j)
{
    struct journal_ckpt *c = journal_ckpt_find(j, 1000000000001ull);
    REQUIRE(c != NULL);
    CHECK_STR(c->name, "checkpoint-10");
    CHECK_STR(c->layout, "transformers-trainer");
    CHECK(c->step == 10);
    CHECK(c->state == JOURNAL_UPLOADING);
    REQUIRE(c->n_files == 2);
    CHECK_STR(c->files[0].path, "model.safetensors");
    CHECK(c->files[0].have_stat && c->files[0].size == 3000000 && c->files[0].ino == 42);
    CHECK(c->files[0].mtime_ns == 1700000000123456789);
    CHECK_STR(c->files[0].sha256, oid_a);
    CHECK_STR(c->files[1].sha256, "");
    struct journal_ckpt *c2 = journal_ckpt_find(j, 1000000000002ull);
    REQUIRE(c2 != NULL);
    CHECK(c2->state == JOURNAL_FAILED);
    CHECK_STR(c2->error, "HTTP 413: too large");
    CHECK(c->seq < c2->seq);
    CHECK(journal_ckpts(j) == c);
    struct journal_obj *o = journal_obj_find(j, oid_a, 3000000);
    REQUIRE(o != NULL);
    CHECK(o->chunk_size == 1048576 && o->n_parts == 3 && o->expires_at == 1234 && !o->done);
    CHECK_STR(o->href, "http://s/complete?sig=q");
    CHECK_STR(o->part_urls[1], "http://s/2?sig=y");
    CHECK_STR(o->etags[0], "\"etag-1\"");
    CHECK(o->etags[1] == NULL);
    CHECK_STR(o->etags[2], "\"etag-3\"");
}

int main(void)
{
    char dir[512], path[600], cmd[1400];
    uv_loop_t loop;
    struct journal *j;

    test_mkdtemp(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/stage/journal", dir);
    REQUIRE(uv_loop_init(&loop) == 0);
    char stage[600];
    snprintf(stage, sizeof(stage), "%s/stage", dir);

    /* 1. write, read back (the directory is created) */
    write_sample(&loop, stage);
    j = open_journal(&loop, stage);
    CHECK(journal_corrupt_records(j) == 0);
    check_sample(j);
    /* another chunk size: the finished parts are forgotten */
    CHECK(journal_obj_planned(j, oid_b, 10, 0, "http://s/put", 0, NULL, 0, NULL, NULL) == 0);
    CHECK(journal_obj_done(j, oid_b, 10, NULL, NULL) == 0);
    close_journal(&loop, j);
    j = open_journal(&loop, stage);
    check_sample(j);
    CHECK(journal_obj_find(j, oid_b, 10) == NULL); /* finished objects are compacted away */
    close_journal(&loop, j);

    /* 2. a torn last record: everything before it survives, the tail is reported and dropped */
    test_rm_rf(stage);
    write_sample(&loop, stage);
    j = open_journal(&loop, stage);
    off_t compact = file_size(path);
    CHECK(journal_set_state(j, 1000000000001ull, JOURNAL_COMMITTED,
                            "0123456789abcdef0123456789abcdef01234567", NULL, NULL) == 0);
    close_journal(&loop, j);
    off_t full = file_size(path);
    REQUIRE(full > compact + 20);
    REQUIRE(truncate(path, full - 7) == 0);
    j = open_journal(&loop, stage);
    CHECK(journal_corrupt_records(j) == 1);
    check_sample(j); /* still uploading: the commit record was torn */
    close_journal(&loop, j);
    /* the rewrite dropped the torn bytes: a clean file now */
    j = open_journal(&loop, stage);
    CHECK(journal_corrupt_records(j) == 0);
    check_sample(j);
    close_journal(&loop, j);

    /* 3. garbage in the middle: the records after it are still read */
    test_rm_rf(stage);
    write_sample(&loop, stage);
    j = open_journal(&loop, stage);
    close_journal(&loop, j);
    compact = file_size(path);
    j = open_journal(&loop, stage);
    CHECK(journal_set_state(j, 1000000000002ull, JOURNAL_UPLOADING, NULL, NULL, NULL) == 0);
    CHECK(journal_part_done(j, oid_a, 3000000, 2, "\"etag-2\"", NULL, NULL) == 0);
    close_journal(&loop, j);
    {
        /* overwrite 16 bytes inside the first record of the snapshot */
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        REQUIRE(pwrite(fd, "GARBAGEGARBAGE!!", 16, 40) == 16);
        close(fd);
    }
    j = open_journal(&loop, stage);
    CHECK(journal_corrupt_records(j) == 1);
    /* checkpoint 1's snapshot record was hit: it is gone, the rest is there */
    CHECK(journal_ckpt_find(j, 1000000000001ull) == NULL);
    struct journal_ckpt *c2 = journal_ckpt_find(j, 1000000000002ull);
    CHECK(c2 != NULL && c2->state == JOURNAL_UPLOADING);
    struct journal_obj *o = journal_obj_find(j, oid_a, 3000000);
    CHECK(o != NULL && o->etags[1] != NULL && strcmp(o->etags[1], "\"etag-2\"") == 0);
    close_journal(&loop, j);

    /* 4. compaction: many appends stay bounded; released checkpoints are dropped past the cap */
    test_rm_rf(stage);
    j = open_journal(&loop, stage);
    const char *one[] = {"w.bin"};
    for (uint64_t id = 1; id <= JOURNAL_RELEASED_KEPT + 50; id++) {
        CHECK(journal_sealed(j, id, "checkpoint-x", "single-file", (int64_t)id, one, 1, NULL,
                             NULL) == 0);
        CHECK(journal_set_state(j, id, JOURNAL_RELEASED, NULL, NULL, NULL) == 0);
    }
    const char *urls[2] = {"u1", "u2"};
    CHECK(journal_obj_planned(j, oid_a, 2000, 1000, "h", 0, urls, 2, NULL, NULL) == 0);
    for (int i = 0; i < 20000; i++)
        CHECK(journal_part_done(j, oid_a, 2000, 1 + (size_t)(i % 2), "\"a-fairly-long-etag-value\"",
                                NULL, NULL) == 0);
    close_journal(&loop, j);
    CHECK(file_size(path) > 500000);
    j = open_journal(&loop, stage);
    size_t n = 0;
    for (struct journal_ckpt *c = journal_ckpts(j); c != NULL; c = c->next)
        n++;
    CHECK(n == JOURNAL_RELEASED_KEPT);
    CHECK(journal_ckpt_find(j, JOURNAL_RELEASED_KEPT + 50) != NULL); /* the newest are kept */
    CHECK(journal_ckpt_find(j, 1) == NULL);
    close_journal(&loop, j);
    CHECK(file_size(path) < 100000);
    snprintf(cmd, sizeof(cmd), "%s/stage/journal.tmp", dir);
    CHECK(access(cmd, F_OK) != 0); /* no temp file left behind */

    /* 6. Xet xorbs the CAS accepted survive a reopening and a compaction; bad ones are refused,
     * and a torn or garbled xorb record only means that xorb is sent again */
    test_rm_rf(stage);
    j = open_journal(&loop, stage);
    const char *xa = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const char *xb = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    const char *cas = "00112233445566ff", *other = "ffeeddccbbaa9988";
    CHECK(journal_xorb_done(j, xa, cas, 1000, NULL, NULL) == 0);
    CHECK(journal_xorb_find(j, xa, cas) != NULL &&
          journal_xorb_find(j, xa, cas)->packed_bytes == 1000);
    CHECK(journal_xorb_done(j, "0123", cas, 1000, NULL, NULL) == UV_EINVAL);
    CHECK(journal_xorb_done(j, "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
                            cas, 1000, NULL, NULL) == UV_EINVAL);
    CHECK(journal_xorb_done(j, xb, cas, 0, NULL, NULL) == UV_EINVAL);
    CHECK(journal_xorb_done(j, xb, "00112233", 10, NULL, NULL) == UV_EINVAL);
    CHECK(journal_xorb_find(j, xa, other) == NULL); /* another CAS never took it */
    close_journal(&loop, j);
    j = open_journal(&loop, stage); /* read back, then compacted */
    CHECK(journal_xorb_find(j, xa, cas) != NULL &&
          journal_xorb_find(j, xa, cas)->packed_bytes == 1000);
    CHECK(journal_xorb_find(j, xb, cas) == NULL);
    CHECK(journal_xorb_done(j, xb, cas, 2000, NULL, NULL) == 0);
    close_journal(&loop, j);
    full = file_size(path);
    REQUIRE(truncate(path, full - 5) == 0); /* xb's record torn */
    j = open_journal(&loop, stage);
    CHECK(journal_corrupt_records(j) == 1);
    CHECK(journal_xorb_find(j, xa, cas) != NULL);
    CHECK(journal_xorb_find(j, xb, cas) == NULL);
    close_journal(&loop, j);
    {
        /* a garbled xorb record (its checksum fails) is skipped and counted: sent again */
        struct journal *m = NULL;
        char *snap = NULL;
        size_t snap_len = 0;
        j = open_journal(&loop, stage);
        close_journal(&loop, j);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        char buf[4096];
        ssize_t got = read(fd, buf, sizeof(buf));
        close(fd);
        REQUIRE(got > 0);
        char *hit = memmem(buf, (size_t)got, xa, 64);
        REQUIRE(hit != NULL);
        hit[10] = 'Z'; /* the CRC now fails: skipped, counted */
        CHECK(journal_load_bytes(&m, buf, (size_t)got, &snap, &snap_len) == 0);
        CHECK(journal_corrupt_records(m) == 1);
        CHECK(journal_xorb_find(m, xa, cas) == NULL);
        free(snap);
        journal_free(m);
    }

    /* 5. an append before the load finished is refused, not reordered */
    {
        struct journal *j2 = NULL;
        int before = n_done;
        REQUIRE(journal_open(&j2, &loop, stage, on_done, NULL) == 0);
        CHECK(journal_sealed(j2, 9, "x", "single-file", 1, one, 1, NULL, NULL) == UV_EAGAIN);
        while (n_done == before)
            uv_run(&loop, UV_RUN_ONCE);
        close_journal(&loop, j2);
    }

    /* 6. the staging directory deleted under an open journal (rm -rf of the watched directory)
     * and the watched directory made again: journal_rewrite writes the whole image into a new
     * staging directory, and a reopening reads it back */
    test_rm_rf(stage);
    write_sample(&loop, stage);
    j = open_journal(&loop, stage);
    test_rm_rf(stage);
    CHECK(journal_set_state(j, 1000000000002ull, JOURNAL_UPLOADING, NULL, NULL, NULL) == 0);
    wait_idle(&loop, j);
    CHECK(access(path, F_OK) != 0); /* that append went to the deleted file */
    journal_rewrite(j);
    close_journal(&loop, j);
    CHECK(file_size(path) > 0);
    j = open_journal(&loop, stage);
    CHECK(journal_corrupt_records(j) == 0);
    c2 = journal_ckpt_find(j, 1000000000002ull);
    CHECK(c2 != NULL && c2->state == JOURNAL_UPLOADING);
    CHECK(journal_ckpt_find(j, 1000000000001ull) != NULL);
    close_journal(&loop, j);
    /* never the staging directory's parent: that is the watched directory, not ours to make */
    {
        struct journal *j3 = open_journal(&loop, stage);
        test_rm_rf(dir);
        journal_rewrite(j3);
        wait_idle(&loop, j3);
        CHECK(access(dir, F_OK) != 0);
        journal_free(j3);
    }

    test_close_loop(&loop);
    test_rm_rf(dir);
    return check_report("test_journal");
}
