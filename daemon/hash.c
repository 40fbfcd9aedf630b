/* hash.c - file digests on the libuv thread pool, at most max_jobs at a time.
 *
 * The loop thread queues jobs and runs completions; hash_work runs on a pool thread and is the
 * only place file data is read. Reads use pread in HASH_CHUNK pieces and leave the pages cached:
 * the upload reads the same bytes moments later and drops them behind itself (http.c).
 * A file whose inode, size and mtime were hashed before (a pin of an unchanged file, a file
 * linked into the next checkpoint, a file primed before its checkpoint was sealed) is answered
 * from a small cache instead of read again.
 *
 * Two queues: hash_file's jobs, and below them hash_prime's speculative ones, which only fill the
 * cache and run when no requested job waits. A job that finds its file (same inode, size and
 * mtime; a pin is a hard link of the file primed) being read by another job waits for that read
 * and takes its digest from the cache, so a file is read once however it is reached.
 *
 * With Xet in use (hash_pool_keep_xet_scans), the same read also chunks the file and hashes its
 * chunks (xet_file.h); the chunk list is kept, by file identity, until the Xet upload takes it
 * (hash_take_xet_scan), within HASH_XET_KEEP_MAX bytes.
 *
 * Hashing is the daemon's heaviest CPU user, and it runs beside a training job: each pool thread
 * lowers its own CPU and I/O priority before its first hash (priority.h).
 */
#include "hash.h"

#include "priority.h"
#include "xet_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#define HASH_CHUNK (1u * 1024 * 1024)
#define HASH_CACHE_SLOTS 1024

/* What identifies unchanged content without reading it: the same inode of the same device, the
 * same size and the same modification time to the nanosecond. */
struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

struct hash_cache_entry {
    struct file_id id;
    bool used;
    struct hash_result res;
};

/* A Xet scan kept for the upload, oldest first. */
struct kept_scan {
    struct file_id id;
    struct xet_file_result scan;
    struct kept_scan *next;
};

struct hash_job {
    uv_work_t work;
    struct hash_pool *pool;
    struct hash_job *next;
    hash_done_cb cb; /* NULL: a prime, nobody waits for it */
    void *ctx;
    int status;
    struct hash_result res;
    char path[]; /* flexible: the copied path */
};

struct hash_queue {
    struct hash_job *head, *tail;
    size_t n;
};

struct hash_pool {
    uv_loop_t *loop;
    int max_jobs;
    int nice; /* 0: leave the pool threads' priority alone */
    int running;
    struct hash_job *running_jobs[HASH_MAX_JOBS];
    struct hash_queue wanted, primes;
    uv_mutex_t cache_lock; /* pool threads share the cache and the reading list */
    uv_cond_t read_done;
    struct file_id reading[HASH_MAX_JOBS]; /* the files pool threads are reading now */
    int n_reading;
    struct hash_cache_entry cache[HASH_CACHE_SLOTS];
    size_t cache_next;
    uint64_t cache_hits, files_read;
    /* Read buffers, kept for the next job: at most one per job running, so memory stays at
     * max_jobs * HASH_CHUNK whichever pool threads the jobs land on (glibc would otherwise keep
     * freed 2 MiB blocks in each thread's arena). */
    unsigned char *spare_bufs[HASH_MAX_JOBS];
    int n_spare_bufs;
    bool xet; /* scan for Xet in the same read */
    struct kept_scan *kept_head, *kept_tail;
    size_t kept_bytes, kept_max;
};

static size_t kept_size(const struct xet_file_result *scan)
{
    return scan->nchunks * sizeof(*scan->chunks);
}

/* cache_lock held. Unlinks the entry after prev (NULL: the head) and returns it. */
static struct kept_scan *kept_unlink_locked(struct hash_pool *p, struct kept_scan *prev)
{
    struct kept_scan *k = prev != NULL ? prev->next : p->kept_head;
    if (prev != NULL)
        prev->next = k->next;
    else
        p->kept_head = k->next;
    if (p->kept_tail == k)
        p->kept_tail = prev;
    p->kept_bytes -= kept_size(&k->scan);
    return k;
}

static void kept_free(struct kept_scan *k)
{
    xet_file_result_free(&k->scan);
    free(k);
}

/* Pool thread. Takes scan (freed here when it is not kept). */
static void kept_add(struct hash_pool *p, const struct file_id *id, struct xet_file_result *scan)
{
    size_t bytes = kept_size(scan);
    struct kept_scan *k = malloc(sizeof(*k));
    if (k == NULL) {
        xet_file_result_free(scan);
        return;
    }
    *k = (struct kept_scan){.id = *id, .scan = *scan};
    struct kept_scan *drop = NULL;
    uv_mutex_lock(&p->cache_lock);
    if (bytes > p->kept_max) {
        uv_mutex_unlock(&p->cache_lock);
        kept_free(k);
        return;
    }
    while (p->kept_head != NULL && p->kept_bytes + bytes > p->kept_max) {
        struct kept_scan *old = kept_unlink_locked(p, NULL);
        old->next = drop;
        drop = old;
    }
    if (p->kept_tail != NULL)
        p->kept_tail->next = k;
    else
        p->kept_head = k;
    p->kept_tail = k;
    p->kept_bytes += bytes;
    uv_mutex_unlock(&p->cache_lock);
    while (drop != NULL) {
        struct kept_scan *next = drop->next;
        kept_free(drop);
        drop = next;
    }
}

static struct file_id id_of(const struct stat *st)
{
    return (struct file_id){st->st_dev, st->st_ino, st->st_size, st->st_mtim};
}

static bool same_id(const struct file_id *id, const struct stat *st)
{
    return id->dev == st->st_dev && id->ino == st->st_ino && id->size == st->st_size &&
           id->mtime.tv_sec == st->st_mtim.tv_sec && id->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* Pool thread, cache_lock held. */
static bool cache_lookup_locked(struct hash_pool *p, const struct stat *st, struct hash_result *res)
{
    for (size_t i = 0; i < HASH_CACHE_SLOTS; i++) {
        if (p->cache[i].used && same_id(&p->cache[i].id, st)) {
            *res = p->cache[i].res;
            p->cache_hits++;
            return true;
        }
    }
    return false;
}

/* Pool thread. True when the cache answered, else the file is now listed as read by this thread
 * (reading_end must follow). Waits while another thread reads the same file. */
static bool cache_lookup_or_claim(struct hash_pool *p, const struct stat *st,
                                  struct hash_result *res)
{
    bool hit;
    uv_mutex_lock(&p->cache_lock);
    for (;;) {
        if ((hit = cache_lookup_locked(p, st, res)))
            break;
        bool busy = false;
        for (int i = 0; i < p->n_reading && !busy; i++)
            busy = same_id(&p->reading[i], st);
        if (!busy) {
            p->reading[p->n_reading++] = id_of(st);
            p->files_read++;
            break;
        }
        uv_cond_wait(&p->read_done, &p->cache_lock);
    }
    uv_mutex_unlock(&p->cache_lock);
    return hit;
}

/* Pool thread: the read of st's file is over; res (NULL: it failed or the file changed while it
 * was read) goes into the cache first, so the threads woken find it there. */
static void reading_end(struct hash_pool *p, const struct stat *st, const struct hash_result *res)
{
    uv_mutex_lock(&p->cache_lock);
    if (res != NULL) {
        p->cache[p->cache_next++ % HASH_CACHE_SLOTS] =
            (struct hash_cache_entry){id_of(st), true, *res};
    }
    for (int i = 0; i < p->n_reading; i++) {
        if (same_id(&p->reading[i], st)) {
            p->reading[i] = p->reading[--p->n_reading];
            break;
        }
    }
    uv_cond_broadcast(&p->read_done);
    uv_mutex_unlock(&p->cache_lock);
}

/* Pool thread. NULL when out of memory. */
static unsigned char *buf_take(struct hash_pool *p)
{
    unsigned char *buf = NULL;
    uv_mutex_lock(&p->cache_lock);
    if (p->n_spare_bufs > 0)
        buf = p->spare_bufs[--p->n_spare_bufs];
    uv_mutex_unlock(&p->cache_lock);
    return buf != NULL ? buf : malloc(HASH_CHUNK);
}

/* Pool thread. NULL-safe. */
static void buf_give(struct hash_pool *p, unsigned char *buf)
{
    if (buf == NULL)
        return;
    uv_mutex_lock(&p->cache_lock);
    if (p->n_spare_bufs < HASH_MAX_JOBS) {
        p->spare_bufs[p->n_spare_bufs++] = buf;
        buf = NULL;
    }
    uv_mutex_unlock(&p->cache_lock);
    free(buf);
}

static void hex(char *dst, const unsigned char *src, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = digits[src[i] >> 4];
        dst[2 * i + 1] = digits[src[i] & 15];
    }
    dst[2 * n] = '\0';
}

struct xet_read {
    struct hash_result *res;
    EVP_MD_CTX *sha1; /* NULL: none wanted */
    bool failed;
};

/* Pool thread: what hash_fd's loop does besides SHA-256, on the Xet scan's reads. */
static void xet_read_piece(void *ctx, const uint8_t *data, size_t n)
{
    struct xet_read *x = ctx;
    struct hash_result *res = x->res;
    if (res->sample_len < HASH_SAMPLE_MAX) {
        size_t take = HASH_SAMPLE_MAX - res->sample_len;
        if (take > n)
            take = n;
        memcpy(res->sample + res->sample_len, data, take);
        res->sample_len += take;
    }
    if (!res->binary && x->sha1 != NULL) /* small files only: larger ones are LFS anyway */
        res->binary = memchr(data, 0, n) != NULL;
    if (x->sha1 != NULL && EVP_DigestUpdate(x->sha1, data, n) != 1)
        x->failed = true;
}

/* Pool thread. Returns 0 or a negative errno. */
static int hash_fd(struct hash_pool *p, int fd, struct hash_result *res)
{
    struct stat st, after;
    bool unchanged;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    if (cache_lookup_or_claim(p, &st, res))
        return 0;

    uint64_t size = (uint64_t)st.st_size;
    int want_sha1 = size <= HASH_GIT_SHA1_MAX;
    uv_mutex_lock(&p->cache_lock);
    bool xet = p->xet;
    uv_mutex_unlock(&p->cache_lock);
    struct xet_file_result scan;
    bool scanned = false;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    unsigned char *buf = xet ? NULL : buf_take(p);
    EVP_MD_CTX *sha256 = EVP_MD_CTX_new();
    EVP_MD_CTX *sha1 = want_sha1 ? EVP_MD_CTX_new() : NULL;
    int r = -ENOMEM;
    if ((buf == NULL && !xet) || sha256 == NULL || (want_sha1 && sha1 == NULL))
        goto out;
    r = -EIO;
    if (EVP_DigestInit_ex(sha256, EVP_sha256(), NULL) != 1)
        goto out;
    if (want_sha1) {
        char hdr[32];
        int n = snprintf(hdr, sizeof(hdr), "blob %llu", (unsigned long long)size);
        /* the header includes its terminating NUL, as git's does */
        if (EVP_DigestInit_ex(sha1, EVP_sha1(), NULL) != 1 ||
            EVP_DigestUpdate(sha1, hdr, (size_t)n + 1) != 1)
            goto out;
    }
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

    uint64_t off = 0;
    res->sample_len = 0;
    res->binary = false;
    if (xet) {
        struct xet_read x = {.res = res, .sha1 = sha1};
        r = xet_file_scan_fd(fd, &st, xet_read_piece, &x, &scan);
        if (r != 0)
            goto out;
        scanned = true;
        r = -EIO;
        if (x.failed)
            goto out;
        memcpy(res->sha256, scan.sha256_hex, sizeof(res->sha256));
        goto digests;
    }
    while (off < size) {
        size_t want = size - off < HASH_CHUNK ? (size_t)(size - off) : HASH_CHUNK;
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            goto out;
        }
        if (n == 0) {
            r = -EIO; /* the file shrank under us: the digest would not match its size */
            goto out;
        }
        if (res->sample_len < HASH_SAMPLE_MAX) {
            size_t take = HASH_SAMPLE_MAX - res->sample_len;
            if (take > (size_t)n)
                take = (size_t)n;
            memcpy(res->sample + res->sample_len, buf, take);
            res->sample_len += take;
        }
        if (!res->binary && want_sha1)
            res->binary = memchr(buf, 0, (size_t)n) != NULL;
        if (EVP_DigestUpdate(sha256, buf, (size_t)n) != 1 ||
            (want_sha1 && EVP_DigestUpdate(sha1, buf, (size_t)n) != 1)) {
            r = -EIO;
            goto out;
        }
        off += (uint64_t)n;
    }

    if (EVP_DigestFinal_ex(sha256, md, &mdlen) != 1 || mdlen != 32)
        goto out;
    hex(res->sha256, md, 32);
digests:
    res->git_sha1[0] = '\0';
    if (want_sha1) {
        if (EVP_DigestFinal_ex(sha1, md, &mdlen) != 1 || mdlen != 20)
            goto out;
        hex(res->git_sha1, md, 20);
    }
    res->size = size;
    r = 0;
out:
    /* Remember it only if nothing wrote to the file while it was read. */
    unchanged = r == 0 && fstat(fd, &after) == 0 && after.st_size == st.st_size &&
                after.st_mtim.tv_sec == st.st_mtim.tv_sec &&
                after.st_mtim.tv_nsec == st.st_mtim.tv_nsec;
    if (scanned) {
        /* kept before the cache entry appears, so a job answered by the cache finds it too */
        struct file_id id = id_of(&st);
        if (unchanged)
            kept_add(p, &id, &scan);
        else
            xet_file_result_free(&scan);
    }
    reading_end(p, &st, unchanged ? res : NULL);
    EVP_MD_CTX_free(sha1);
    EVP_MD_CTX_free(sha256);
    buf_give(p, buf);
    return r;
}

static void hash_work(uv_work_t *w)
{
    struct hash_job *job = w->data;
    priority_lower_thread(job->pool->nice);
    /* O_NONBLOCK: a FIFO in place of a file must fail, not block a pool thread */
    int fd = open(job->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        job->status = -errno;
        return;
    }
    job->status = hash_fd(job->pool, fd, &job->res);
    close(fd);
}

static void hash_pump(struct hash_pool *p);

static void running_del(struct hash_pool *p, const struct hash_job *job)
{
    for (int i = 0; i < p->running; i++) {
        if (p->running_jobs[i] == job) {
            p->running_jobs[i] = p->running_jobs[--p->running];
            return;
        }
    }
}

static void hash_after(uv_work_t *w, int status)
{
    struct hash_job *job = w->data;
    struct hash_pool *p = job->pool;
    running_del(p, job);
    if (status == 0)
        status = job->status;
    if (job->cb != NULL)
        job->cb(job->ctx, status, status == 0 ? &job->res : NULL);
    free(job);
    hash_pump(p);
}

static bool path_running(const struct hash_pool *p, const char *path)
{
    for (int i = 0; i < p->running; i++)
        if (strcmp(p->running_jobs[i]->path, path) == 0)
            return true;
    return false;
}

static void queue_push(struct hash_queue *q, struct hash_job *job)
{
    if (q->tail != NULL)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
    q->n++;
}

static struct hash_job *queue_pop(struct hash_queue *q)
{
    struct hash_job *job = q->head;
    if (job == NULL)
        return NULL;
    q->head = job->next;
    if (q->head == NULL)
        q->tail = NULL;
    q->n--;
    job->next = NULL;
    return job;
}

static void hash_pump(struct hash_pool *p)
{
    while (p->running < p->max_jobs) {
        struct hash_job *job = queue_pop(&p->wanted);
        if (job == NULL)
            job = queue_pop(&p->primes);
        if (job == NULL)
            return;
        job->work.data = job;
        int r = uv_queue_work(p->loop, &job->work, hash_work, hash_after);
        if (r < 0) {
            /* uv_queue_work fails only on bad arguments; report it rather than lose the job */
            if (job->cb != NULL)
                job->cb(job->ctx, r, NULL);
            free(job);
            continue;
        }
        p->running_jobs[p->running++] = job;
    }
}

int hash_pool_init(struct hash_pool **ret, uv_loop_t *loop, int max_jobs, int nice)
{
    struct hash_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return UV_ENOMEM;
    p->loop = loop;
    p->nice = nice > 0 ? (nice < 19 ? nice : 19) : 0;
    p->max_jobs = max_jobs > 0 && max_jobs <= HASH_MAX_JOBS ? max_jobs : 2;
    p->kept_max = HASH_XET_KEEP_MAX;
    if (uv_mutex_init(&p->cache_lock) != 0) {
        free(p);
        return UV_ENOMEM;
    }
    if (uv_cond_init(&p->read_done) != 0) {
        uv_mutex_destroy(&p->cache_lock);
        free(p);
        return UV_ENOMEM;
    }
    *ret = p;
    return 0;
}

static struct hash_job *job_new(struct hash_pool *p, const char *path, hash_done_cb cb, void *ctx)
{
    size_t len = strlen(path);
    struct hash_job *job = calloc(1, sizeof(*job) + len + 1);
    if (job == NULL)
        return NULL;
    memcpy(job->path, path, len + 1);
    job->pool = p;
    job->cb = cb;
    job->ctx = ctx;
    return job;
}

int hash_file(struct hash_pool *p, const char *path, hash_done_cb cb, void *ctx)
{
    if (p->wanted.n >= HASH_QUEUE_MAX)
        return UV_ENOBUFS;
    struct hash_job *job = job_new(p, path, cb, ctx);
    if (job == NULL)
        return UV_ENOMEM;
    queue_push(&p->wanted, job);
    hash_pump(p);
    return 0;
}

int hash_prime(struct hash_pool *p, const char *path)
{
    if (path_running(p, path))
        return 0;
    for (const struct hash_job *job = p->primes.head; job != NULL; job = job->next)
        if (strcmp(job->path, path) == 0)
            return 0;
    if (p->primes.n >= HASH_PRIME_QUEUE_MAX)
        return UV_ENOBUFS;
    struct hash_job *job = job_new(p, path, NULL, NULL);
    if (job == NULL)
        return UV_ENOMEM;
    queue_push(&p->primes, job);
    hash_pump(p);
    return 0;
}

void hash_pool_keep_xet_scans(struct hash_pool *p, bool on)
{
    uv_mutex_lock(&p->cache_lock);
    p->xet = on;
    uv_mutex_unlock(&p->cache_lock);
}

void hash_pool_set_xet_keep_max(struct hash_pool *p, size_t max_bytes)
{
    uv_mutex_lock(&p->cache_lock);
    p->kept_max = max_bytes;
    uv_mutex_unlock(&p->cache_lock);
}

bool hash_take_xet_scan(struct hash_pool *p, const struct stat *st, struct xet_file_result *out)
{
    struct kept_scan *found = NULL;
    uv_mutex_lock(&p->cache_lock);
    for (struct kept_scan *prev = NULL, *k = p->kept_head; k != NULL; prev = k, k = k->next) {
        if (same_id(&k->id, st)) {
            found = kept_unlink_locked(p, prev);
            break;
        }
    }
    uv_mutex_unlock(&p->cache_lock);
    if (found == NULL)
        return false;
    *out = found->scan;
    free(found);
    return true;
}

uv_loop_t *hash_pool_loop(const struct hash_pool *p)
{
    return p->loop;
}

uint64_t hash_pool_files_read(struct hash_pool *p)
{
    uv_mutex_lock(&p->cache_lock);
    uint64_t n = p->files_read;
    uv_mutex_unlock(&p->cache_lock);
    return n;
}

size_t hash_pool_pending(const struct hash_pool *p)
{
    return p->wanted.n + p->primes.n + (size_t)p->running;
}

void hash_pool_drop_primes(struct hash_pool *p)
{
    while (p->primes.head != NULL) {
        struct hash_job *job = p->primes.head;
        p->primes.head = job->next;
        free(job);
    }
    p->primes.tail = NULL;
    p->primes.n = 0;
}

int hash_pool_free(struct hash_pool *p)
{
    if (p == NULL)
        return 0;
    if (hash_pool_pending(p) > 0)
        return UV_EBUSY;
    while (p->n_spare_bufs > 0)
        free(p->spare_bufs[--p->n_spare_bufs]);
    while (p->kept_head != NULL)
        kept_free(kept_unlink_locked(p, NULL));
    uv_cond_destroy(&p->read_done);
    uv_mutex_destroy(&p->cache_lock);
    free(p);
    return 0;
}
