/* test_hash.c - hash.c against known vectors, `openssl dgst` and `git hash-object`; the Xet
 * scans it keeps, by file identity and within their memory cap. */
#include "hash.h"
#include "xet_file.h"

#include "testutil.h"

struct expect {
    const char *path;
    int status;
    struct hash_result res;
    int done;
};

static int n_done;

static void on_hash(void *ctx, int status, const struct hash_result *res)
{
    struct expect *e = ctx;
    e->status = status;
    if (res != NULL)
        e->res = *res;
    CHECK((status == 0) == (res != NULL));
    e->done = 1;
    n_done++;
}

int main(void)
{
    char dir[512], path[16][600], cmd[1400], line[256];
    test_mkdtemp(dir, sizeof(dir));
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    struct hash_pool *pool;
    REQUIRE(hash_pool_init(&pool, &loop, 2, 0) == 0);

    snprintf(path[0], sizeof(path[0]), "%s/abc", dir);
    test_write_file(path[0], "abc", 3);
    snprintf(path[1], sizeof(path[1]), "%s/empty", dir);
    test_write_file(path[1], "", 0);
    snprintf(path[2], sizeof(path[2]), "%s/random5m", dir);
    test_random_file(path[2], 5 * 1024 * 1024 + 7, 1);
    snprintf(path[3], sizeof(path[3]), "%s/random11m", dir);
    test_random_file(path[3], 11 * 1024 * 1024, 2);
    snprintf(path[4], sizeof(path[4]), "%s/link", dir);
    REQUIRE(symlink(path[0], path[4]) == 0);
    snprintf(path[5], sizeof(path[5]), "%s/missing", dir);
    snprintf(path[6], sizeof(path[6]), "%s", dir); /* a directory */
    snprintf(path[7], sizeof(path[7]), "%s/fifo", dir);
    REQUIRE(mkfifo(path[7], 0600) == 0);
    int n_paths = 8;
    /* more jobs than the pool runs at once: the FIFO queue must drain them all */
    for (int i = 8; i < 16; i++) {
        snprintf(path[i], sizeof(path[i]), "%s/q%d", dir, i);
        test_random_file(path[i], 300000 + (size_t)i, (unsigned)i);
        n_paths++;
    }

    struct expect ex[16];
    memset(ex, 0, sizeof(ex));
    for (int i = 0; i < n_paths; i++) {
        ex[i].path = path[i];
        REQUIRE(hash_file(pool, path[i], on_hash, &ex[i]) == 0);
    }
    CHECK(hash_pool_pending(pool) == (size_t)n_paths);
    CHECK(hash_pool_free(pool) == UV_EBUSY);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(n_done == n_paths);
    CHECK(hash_pool_pending(pool) == 0);

    CHECK(ex[0].status == 0);
    CHECK(ex[0].res.size == 3);
    CHECK(strcmp(ex[0].res.sha256,
                 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    CHECK(strcmp(ex[0].res.git_sha1, "f2ba8f84ab5c1bce84a7b441cb1959cfc7093b7f") == 0);
    CHECK(ex[0].res.sample_len == 3 && memcmp(ex[0].res.sample, "abc", 3) == 0);
    CHECK(!ex[0].res.binary && !ex[1].res.binary);
    CHECK(ex[2].res.binary); /* 5 MiB of random bytes hold a NUL */

    CHECK(ex[1].status == 0 && ex[1].res.size == 0 && ex[1].res.sample_len == 0);
    CHECK(strcmp(ex[1].res.sha256,
                 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    CHECK(strcmp(ex[1].res.git_sha1, "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391") == 0);

    for (int i = 2; i < n_paths; i++) {
        if (i >= 4 && i < 8)
            continue;
        CHECK(ex[i].status == 0);
        snprintf(cmd, sizeof(cmd), "openssl dgst -sha256 -r '%s'", path[i]);
        test_command_line(cmd, line, sizeof(line));
        line[64] = '\0';
        CHECK(strcmp(ex[i].res.sha256, line) == 0);
        struct stat st;
        REQUIRE(stat(path[i], &st) == 0);
        CHECK(ex[i].res.size == (uint64_t)st.st_size);
        CHECK(ex[i].res.sample_len == 512);
        if (i == 3) {
            CHECK(ex[i].res.git_sha1[0] == '\0'); /* above 10 MiB */
        } else {
            snprintf(cmd, sizeof(cmd), "git hash-object --no-filters '%s'", path[i]);
            test_command_line(cmd, line, sizeof(line));
            CHECK(strcmp(ex[i].res.git_sha1, line) == 0);
        }
    }
    CHECK(ex[4].status == UV_ELOOP);
    CHECK(ex[5].status == UV_ENOENT);
    CHECK(ex[6].status == UV_EINVAL);
    CHECK(ex[7].status == UV_EINVAL);

    /* Primes: one job per path, below requested jobs, answered from the cache afterwards. */
    n_done = 0;
    CHECK(hash_prime(pool, path[3]) == 0);
    CHECK(hash_prime(pool, path[3]) == 0); /* already being read: not queued again */
    CHECK(hash_prime(pool, path[2]) == 0);
    CHECK(hash_prime(pool, path[2]) == 0); /* already queued */
    CHECK(hash_pool_pending(pool) == 2);
    struct expect again[2];
    memset(again, 0, sizeof(again));
    /* asked for while its prime reads it: waits for the prime, then the cache answers */
    REQUIRE(hash_file(pool, path[3], on_hash, &again[0]) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(n_done == 1 && again[0].status == 0 &&
          strcmp(again[0].res.sha256, ex[3].res.sha256) == 0);
    /* The cache is keyed by inode, size and mtime: content changed behind a restored mtime is
     * still answered from it, which shows the prime's digest was used rather than a new read. */
    struct stat before;
    REQUIRE(stat(path[2], &before) == 0);
    test_random_file(path[2], (size_t)before.st_size, 99);
    struct timespec times[2] = {before.st_atim, before.st_mtim};
    REQUIRE(utimensat(AT_FDCWD, path[2], times, 0) == 0);
    REQUIRE(hash_file(pool, path[2], on_hash, &again[1]) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(again[1].status == 0 && strcmp(again[1].res.sha256, ex[2].res.sha256) == 0);
    /* Two names of one inode (a pin is a hard link) asked for at once: read once. */
    char linked[640];
    snprintf(linked, sizeof(linked), "%s.pin", path[10]);
    REQUIRE(link(path[10], linked) == 0);
    test_random_file(path[10], 4 * 1024 * 1024, 42); /* new content: not in the cache */
    uint64_t reads = hash_pool_files_read(pool);
    memset(again, 0, sizeof(again));
    REQUIRE(hash_file(pool, path[10], on_hash, &again[0]) == 0);
    REQUIRE(hash_file(pool, linked, on_hash, &again[1]) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(again[0].status == 0 && again[1].status == 0);
    CHECK(strcmp(again[0].res.sha256, again[1].res.sha256) == 0);
    CHECK(hash_pool_files_read(pool) == reads + 1);
    /* Text for the first 512 bytes (the preupload sample), a NUL far behind it: binary. */
    static char text_then_nul[70000];
    memset(text_then_nul, 'a', sizeof(text_then_nul));
    text_then_nul[65536 + 3] = '\0';
    char mixed[640];
    snprintf(mixed, sizeof(mixed), "%s/text-then-nul", dir);
    test_write_file(mixed, text_then_nul, sizeof(text_then_nul));
    memset(again, 0, sizeof(again));
    REQUIRE(hash_file(pool, mixed, on_hash, &again[0]) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(again[0].status == 0 && again[0].res.binary && again[0].res.sample_len == 512);
    CHECK(memchr(again[0].res.sample, 0, again[0].res.sample_len) == NULL);
    /* Shutdown forgets primes not started. */
    CHECK(hash_file(pool, path[0], on_hash, &again[0]) == 0);
    CHECK(hash_prime(pool, path[8]) == 0 && hash_prime(pool, path[9]) == 0);
    hash_pool_drop_primes(pool);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(hash_pool_pending(pool) == 0);

    CHECK(hash_pool_free(pool) == 0);

    /* Xet mode keeps each file's scan (the same one xet_file_scan makes) until it is taken,
     * within the cap: past it the oldest is dropped, and a file changed since is not answered. */
    REQUIRE(hash_pool_init(&pool, &loop, 1, 0) == 0);
    hash_pool_keep_xet_scans(pool, true);
    struct xet_file_result want, got;
    REQUIRE(xet_file_scan(path[2], NULL, NULL, &want) == 0);
    REQUIRE(want.nchunks > 4);
    /* room for one of the two files' lists */
    hash_pool_set_xet_keep_max(pool, (want.nchunks + want.nchunks / 2) * sizeof(*want.chunks));
    char other[640];
    snprintf(other, sizeof(other), "%s/other", dir);
    test_random_file(other, (size_t)want.size, 5);
    struct expect x[2] = {{0}};
    REQUIRE(hash_file(pool, path[2], on_hash, &x[0]) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    REQUIRE(x[0].status == 0);
    struct stat st2, st_other;
    REQUIRE(stat(path[2], &st2) == 0);
    REQUIRE(hash_take_xet_scan(pool, &st2, &got));
    CHECK(got.nchunks == want.nchunks && got.size == want.size &&
          xet_hash_equal(&got.file_hash, &want.file_hash) &&
          strcmp(got.sha256_hex, x[0].res.sha256) == 0);
    for (size_t i = 0; i < want.nchunks && i < got.nchunks; i++)
        CHECK(got.chunks[i].offset == want.chunks[i].offset &&
              got.chunks[i].len == want.chunks[i].len &&
              xet_hash_equal(&got.chunks[i].hash, &want.chunks[i].hash));
    xet_file_result_free(&got);
    CHECK(!hash_take_xet_scan(pool, &st2, &got)); /* taken: gone */
    /* a new read of path[2] (new mtime), then of another file: path[2]'s list is dropped */
    struct timespec newer[2] = {{0, UTIME_OMIT}, {st2.st_mtim.tv_sec + 7, 0}};
    REQUIRE(utimensat(AT_FDCWD, path[2], newer, 0) == 0);
    REQUIRE(stat(path[2], &st2) == 0);
    memset(x, 0, sizeof(x));
    REQUIRE(hash_file(pool, path[2], on_hash, &x[0]) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    REQUIRE(hash_file(pool, other, on_hash, &x[1]) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(x[0].status == 0 && x[1].status == 0);
    REQUIRE(stat(other, &st_other) == 0);
    CHECK(!hash_take_xet_scan(pool, &st2, &got));
    CHECK(hash_take_xet_scan(pool, &st_other, &got));
    if (got.size > 0)
        xet_file_result_free(&got);
    /* kept, then the file changed (a new mtime): not answered */
    memset(x, 0, sizeof(x));
    REQUIRE(utimensat(AT_FDCWD, other, newer, 0) == 0);
    REQUIRE(stat(other, &st_other) == 0);
    REQUIRE(hash_file(pool, other, on_hash, &x[0]) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    struct timespec newest[2] = {{0, UTIME_OMIT}, {st_other.st_mtim.tv_sec + 3, 0}};
    REQUIRE(utimensat(AT_FDCWD, other, newest, 0) == 0);
    REQUIRE(stat(other, &st_other) == 0);
    CHECK(!hash_take_xet_scan(pool, &st_other, &got));
    xet_file_result_free(&want);
    CHECK(hash_pool_free(pool) == 0);
    test_close_loop(&loop);
    test_rm_rf(dir);
    return check_report("test_hash");
}
