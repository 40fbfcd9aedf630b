/* hash.h - SHA-256 (and git blob SHA-1 for small files) of local files on the libuv thread pool.
 *
 * Owns a bounded set of hash jobs in flight and a FIFO of waiting ones, so hashing never takes
 * every pool thread away from uv_fs_* calls. Does not decide what to hash or when. The API is
 * called on the loop thread; file reading and digesting run on pool threads.
 */
#ifndef CKPT_HASH_H
#define CKPT_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <uv.h>

#define HASH_SAMPLE_MAX 512
/* Files up to this size also get the git blob sha1 (the Hub's oid for regular files). */
#define HASH_GIT_SHA1_MAX (10u * 1024 * 1024)
#define HASH_QUEUE_MAX 65536
#define HASH_PRIME_QUEUE_MAX 4096
#define HASH_MAX_JOBS 16

/* Chunk lists kept for Xet uploads, in all (48 bytes a 64 KiB chunk: 64 MiB covers about 85 GB
 * of files hashed but not yet uploaded); past it the oldest are dropped and rescanned. */
#define HASH_XET_KEEP_MAX (64u * 1024 * 1024)

struct hash_pool;
struct xet_file_result;

struct hash_result {
    uint64_t size;
    char sha256[65];
    char git_sha1[41]; /* "" when size > HASH_GIT_SHA1_MAX */
    unsigned char sample[HASH_SAMPLE_MAX];
    size_t sample_len;
    /* A NUL byte somewhere in the file: the Hub rejects such a file committed as regular, whatever
     * its first 512 bytes (the preupload sample) looked like. */
    bool binary;
};

/* status: 0, or a negative errno (UV_ELOOP for a symlink, UV_EINVAL for a non-regular file,
 * UV_EIO when the file shrank while being read). res is NULL unless status is 0 and is only
 * valid during the call. */
typedef void (*hash_done_cb)(void *ctx, int status, const struct hash_result *res);

/* max_jobs outside 1..HASH_MAX_JOBS means the default, 2. nice (1-19): what each pool thread
 * takes on before its first hash (priority_lower_thread); 0: none. */
int hash_pool_init(struct hash_pool **ret, uv_loop_t *loop, int max_jobs, int nice);
/* Queues path (copied). Fails at once (no callback) with UV_ENOBUFS when HASH_QUEUE_MAX jobs
 * wait, or UV_ENOMEM. */
int hash_file(struct hash_pool *p, const char *path, hash_done_cb cb, void *ctx);
/* Speculative: hashes path (copied) into the cache when no hash_file job waits, so a later
 * hash_file of the same inode, size and mtime is answered without reading. Nothing is reported;
 * a file that changes meanwhile is simply read again later. A path already queued or being read
 * is not queued twice. UV_ENOBUFS when HASH_PRIME_QUEUE_MAX wait, or UV_ENOMEM. */
int hash_prime(struct hash_pool *p, const char *path);
/* Forgets the primes not started yet (shutdown: nobody will want them). */
void hash_pool_drop_primes(struct hash_pool *p);
/* on: every file read from now on also gets its Xet scan (xet_file.h) in the same read, kept
 * for hash_take_xet_scan, so a Xet upload does not read and SHA-256 the file again. */
void hash_pool_keep_xet_scans(struct hash_pool *p, bool on);
/* At most max_bytes of kept chunk lists from now on (default HASH_XET_KEEP_MAX); for tests and
 * tight memory. Lists already kept over it go as new ones arrive. */
void hash_pool_set_xet_keep_max(struct hash_pool *p, size_t max_bytes);
/* Any thread. Moves the kept Xet scan of the file st (an fstat of the open file) identifies
 * (inode, size, mtime) into out and forgets it: true. false when none is kept for it (never
 * read in Xet mode, dropped past HASH_XET_KEEP_MAX, or changed since). */
bool hash_take_xet_scan(struct hash_pool *p, const struct stat *st, struct xet_file_result *out);
/* The loop the pool's jobs complete on. */
uv_loop_t *hash_pool_loop(const struct hash_pool *p);
/* Files read so far (the rest were answered by the cache). */
uint64_t hash_pool_files_read(struct hash_pool *p);
/* Jobs queued or running. */
size_t hash_pool_pending(const struct hash_pool *p);
/* NULL-safe. Returns UV_EBUSY (and frees nothing) while jobs are pending. */
int hash_pool_free(struct hash_pool *p);

#endif
