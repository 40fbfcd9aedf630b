/* xet_upload.c - files to xorbs and one shard: scan, dedup, pack, build, POST (xet_upload.h).
 *
 * Pipeline, each step as soon as it can: at most XU_SCANS files are scanned on the pool at once;
 * files are planned strictly in the order given (the global dedup queries of a file first), so
 * that the same files always give the same xorbs; planned xorbs are built on the pool one at a
 * time (one xorb buffer in memory) into work_dir and POSTed from there, at most max_transfers at
 * once and never more than max_transfers built and waiting; the shard goes once every file is
 * planned and every xorb is in the CAS.
 *
 * Xorbs never mix files: a file's new chunks fill its own xorbs. That costs a little packing on
 * small files, and buys determinism: a daemon killed mid-upload rebuilds byte-identical xorbs,
 * and the journal says which of them the CAS already took.
 */
#include "xet_upload.h"

#include "hash.h"
#include "journal.h"
#include "log.h"
#include "xet_chunk.h"
#include "xet_file.h"
#include "xet_session.h"
#include "xet_shard.h"
#include "xet_xorb.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define XU_SCANS 2

enum { XS_TODO = 0, XS_BUILDING, XS_BUILT, XS_SENDING, XS_DONE };

struct xu_xorb {
    size_t file;
    struct xet_hash hash;
    char hex[XET_HASH_HEX_LEN + 1];
    struct xet_xorb_chunk *chunks; /* hash, unpacked offset and length */
    uint64_t *offsets;             /* in the file */
    size_t n;
    uint64_t packed;
    int state;
    int session_id; /* xet_session_add_xorb's id */
    char *body_path;
};

struct xu_file {
    char *path;
    char sha256[65];
    uint64_t size;
    struct xet_file_result scan;
    int scanned;
    int queried; /* queries sent */
    size_t queries_pending;
    struct xet_term *terms;
    size_t nterms;
    uint8_t sha_bytes[32];
    struct xet_hash file_hash;
};

/* A CAS request in flight; the ctx of its callback. */
struct xu_req {
    struct xet_upload *u;
    struct xet_op *op;
    struct xu_req *prev, *next;
    size_t index; /* xorb or file */
};

struct xu_job {
    uv_work_t work;
    struct xet_upload *u;
    size_t index; /* file (scan) or xorb (build) */
    int status;
    char why[200];
    struct xet_file_result scan;
    bool reused; /* scan taken from the hash pool, not read again */
};

struct xet_upload {
    uv_loop_t *loop;
    struct xet_session *s;
    unsigned max_transfers;
    struct journal *journal;
    struct hash_pool *hashes;
    char *work_dir;
    xet_upload_sent_cb sent;
    xet_upload_done_cb cb;
    void *ctx;

    struct xu_file *files;
    size_t n;
    size_t next_scan, scans_running, next_plan;
    struct xu_xorb *xorbs;
    size_t n_xorbs, xorbs_cap;
    size_t next_build, builds_running, built_waiting, sends_running, xorbs_done;
    int shard_sent;
    uint8_t *shard; /* sent, kept for the cache until the CAS accepts it */
    size_t shard_len;
    int ready; /* the session's shard cache is read */

    /* One xorb buffer for every build (one build runs at a time): allocated by the first and
     * reused, so that peak memory is one xorb, not one per pool thread's malloc arena. */
    struct xet_xorb *builder;

    struct xu_req *reqs;
    size_t outstanding;
    int failed, finished, free_when_done;
    struct ckpt_err err;
    struct xet_upload_progress progress;
};

static void pump(struct xet_upload *u);

/* ---- completion -------------------------------------------------------------------------- */

static void release(struct xet_upload *u)
{
    for (size_t i = 0; i < u->n; i++) {
        free(u->files[i].path);
        free(u->files[i].terms);
        if (u->files[i].scanned)
            xet_file_result_free(&u->files[i].scan);
    }
    for (size_t i = 0; i < u->n_xorbs; i++) {
        if (u->xorbs[i].body_path != NULL && u->xorbs[i].state != XS_DONE)
            unlink(u->xorbs[i].body_path); /* a cancelled upload leaves no xorb files behind */
        free(u->xorbs[i].body_path);
        free(u->xorbs[i].chunks);
        free(u->xorbs[i].offsets);
    }
    free(u->xorbs);
    xet_xorb_free(u->builder);
    free(u->shard);
    free(u->files);
    free(u->work_dir);
    free(u);
}

static void finish(struct xet_upload *u, const struct ckpt_err *err,
                   const struct xet_upload_result *res)
{
    if (u->finished)
        return;
    u->finished = 1;
    if (err != NULL) {
        /* no shard names these xorbs, and some may not be in the CAS: a retry must not count
         * on them */
        for (size_t i = 0; i < u->n_xorbs; i++)
            xet_session_forget_xorb(u->s, u->xorbs[i].session_id);
    }
    if (u->free_when_done) {
        release(u);
        return;
    }
    u->cb(u->ctx, err, res, res != NULL ? u->n : 0);
}

static void maybe_finish_failed(struct xet_upload *u)
{
    if (u->failed && u->outstanding == 0)
        finish(u, &u->err, NULL);
}

static void fail(struct xet_upload *u, const struct ckpt_err *err)
{
    if (u->failed)
        return;
    u->failed = 1;
    u->err = *err;
    for (struct xu_req *r = u->reqs; r != NULL; r = r->next)
        xet_op_cancel(r->op);
    maybe_finish_failed(u);
}

static void fail_code(struct xet_upload *u, int code, const char *what)
{
    struct ckpt_err e;
    ckpt_err_set(&e, CKPT_ERR_IO, code, "%s: %s", what, uv_strerror(code));
    fail(u, &e);
}

static void fail_file(struct xet_upload *u, size_t file, int status, const char *why)
{
    struct ckpt_err e;
    char shown[256];
    log_escape(shown, sizeof(shown), u->files[file].path);
    ckpt_err_set(&e, CKPT_ERR_IO, status < 0 ? status : -EIO, "cannot upload '%s' through Xet: %s",
                 shown, why);
    fail(u, &e);
}

/* ---- request bookkeeping ----------------------------------------------------------------- */

static struct xu_req *req_new(struct xet_upload *u, size_t index)
{
    struct xu_req *r = calloc(1, sizeof(*r));
    if (r != NULL) {
        r->u = u;
        r->index = index;
    }
    return r;
}

static int req_started(struct xet_upload *u, struct xu_req *r, int rc, const char *what)
{
    if (rc < 0) {
        free(r);
        fail_code(u, rc, what);
        return rc;
    }
    r->next = u->reqs;
    if (u->reqs != NULL)
        u->reqs->prev = r;
    u->reqs = r;
    u->outstanding++;
    return 0;
}

static struct xet_upload *req_done(struct xu_req *r, size_t *index)
{
    struct xet_upload *u = r->u;
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        u->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    *index = r->index;
    free(r);
    u->outstanding--;
    return u;
}

/* ---- scanning (pool) --------------------------------------------------------------------- */

static void scan_work(uv_work_t *w)
{
    struct xu_job *job = w->data;
    struct xu_file *f = &job->u->files[job->index];
    if (job->u->hashes != NULL) {
        /* the identity is taken from the open file, so the kept scan describes what is read later
         * at least as far as the hash cache can tell */
        int fd = open(f->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
            hash_take_xet_scan(job->u->hashes, &st, &job->scan))
            job->reused = true;
        if (fd >= 0)
            close(fd);
        if (job->reused) {
            job->status = 0;
            return;
        }
    }
    job->status = xet_file_scan(f->path, NULL, NULL, &job->scan);
}

static void after_scan(uv_work_t *w, int status)
{
    struct xu_job *job = w->data;
    struct xet_upload *u = job->u;
    struct xu_file *f = &u->files[job->index];
    u->outstanding--;
    u->scans_running--;
    if (status == 0)
        status = job->status;
    if (u->failed) {
        if (status == 0)
            xet_file_result_free(&job->scan);
        free(job);
        maybe_finish_failed(u);
        return;
    }
    if (status != 0) {
        fail_file(u, job->index, status < 0 ? status : -EIO,
                  status == -EIO ? "changed while it was read" : uv_strerror(status));
        free(job);
        return;
    }
    f->scan = job->scan;
    f->scanned = 1;
    if (job->reused)
        u->progress.scans_reused++;
    free(job);
    if (f->scan.size != f->size || strcmp(f->scan.sha256_hex, f->sha256) != 0) {
        xet_file_result_free(&f->scan);
        f->scanned = 0;
        fail_file(u, (size_t)(f - u->files), -EIO, "changed since it was hashed");
        return;
    }
    memcpy(f->sha_bytes, f->scan.sha256, 32);
    f->file_hash = f->scan.file_hash;
    f->scanned = 1;
    u->progress.bytes_scanned += f->size;
    pump(u);
}

/* ---- planning (loop, file order) --------------------------------------------------------- */

static void on_query(void *ctx, const struct ckpt_err *err, const uint8_t *body, size_t len)
{
    size_t fi;
    struct xet_upload *u = req_done(ctx, &fi);
    if (u->failed) {
        maybe_finish_failed(u);
        return;
    }
    if (err != NULL) {
        fail(u, err);
        return;
    }
    u->files[fi].queries_pending--;
    if (body != NULL) {
        struct xet_shard *sh = calloc(1, sizeof(*sh));
        char why[160] = "";
        int r = sh != NULL ? xet_shard_parse(body, len, sh, why, sizeof(why)) : -ENOMEM;
        if (r < 0) {
            struct ckpt_err e;
            free(sh);
            if (r == -ENOMEM)
                ckpt_err_set(&e, CKPT_ERR_IO, -ENOMEM, "dedup query: out of memory");
            else
                ckpt_err_set(&e, CKPT_ERR_PROTOCOL, -EPROTO,
                             "dedup query: the CAS answered garbage (not a shard: %s)", why);
            fail(u, &e);
            return;
        }
        if (xet_session_add_answer(u->s, sh) < 0) {
            xet_shard_free(sh);
            free(sh);
            fail_code(u, UV_ENOMEM, "dedup query");
            return;
        }
    }
    pump(u);
}

/* Global dedup: the file's first chunk and the eligible ones the session does not know. */
static int send_queries(struct xet_upload *u, size_t fi)
{
    struct xu_file *f = &u->files[fi];
    size_t sent = 0;
    f->queried = 1;
    for (size_t k = 0; k < f->scan.nchunks && sent < XET_UPLOAD_QUERIES_MAX; k++) {
        struct xet_hash x;
        uint32_t idx;
        const struct xet_hash *h = &f->scan.chunks[k].hash;
        if (k > 0 && !xet_chunk_dedup_eligible(h))
            continue;
        if (xet_session_find_chunk(u->s, h, &x, &idx))
            continue;
        struct xu_req *r = req_new(u, fi);
        if (r == NULL) {
            fail_code(u, UV_ENOMEM, "dedup query");
            return -1;
        }
        int rc = xet_query_chunk(u->s, h, on_query, r, &r->op);
        if (req_started(u, r, rc, "dedup query") < 0)
            return -1;
        f->queries_pending++;
        u->progress.dedup_queries++;
        sent++;
    }
    return 0;
}

/* Closes the open xorb of chunk indexes open[0..n) of file fi: its hash, and the index learns
 * where its chunks are. */
static int close_xorb(struct xet_upload *u, size_t fi, const size_t *open, size_t n)
{
    struct xu_file *f = &u->files[fi];
    if (n == 0)
        return 0;
    if (u->n_xorbs == u->xorbs_cap) {
        size_t cap = u->xorbs_cap ? u->xorbs_cap * 2 : 16;
        struct xu_xorb *x = realloc(u->xorbs, cap * sizeof(*x));
        if (x == NULL)
            return -ENOMEM;
        u->xorbs = x;
        u->xorbs_cap = cap;
    }
    struct xu_xorb *x = &u->xorbs[u->n_xorbs];
    memset(x, 0, sizeof(*x));
    x->file = fi;
    x->chunks = calloc(n, sizeof(*x->chunks));
    x->offsets = calloc(n, sizeof(*x->offsets));
    struct xet_merkle_node *leaves = calloc(n, sizeof(*leaves));
    struct xet_hash *hashes = calloc(n, sizeof(*hashes));
    int rc = -ENOMEM;
    if (x->chunks == NULL || x->offsets == NULL || leaves == NULL || hashes == NULL)
        goto out;
    uint32_t unpacked = 0;
    for (size_t i = 0; i < n; i++) {
        const struct xet_file_chunk *c = &f->scan.chunks[open[i]];
        x->chunks[i].hash = c->hash;
        x->chunks[i].unpacked_len = c->len;
        x->chunks[i].unpacked_offset = unpacked;
        x->offsets[i] = c->offset;
        unpacked += c->len;
        leaves[i].hash = c->hash;
        leaves[i].size = c->len;
        hashes[i] = c->hash;
    }
    x->n = n;
    xet_xorb_hash_of(leaves, n, &x->hash);
    xet_hash_to_hex(&x->hash, x->hex);
    if ((rc = xet_session_add_xorb(u->s, &x->hash, hashes, n)) < 0)
        goto out;
    x->session_id = rc;
    u->n_xorbs++;
    u->progress.xorbs_total++;
    rc = 0;
out:
    if (rc < 0) {
        free(x->chunks);
        free(x->offsets);
    }
    free(leaves);
    free(hashes);
    return rc;
}

/* Decides every chunk of file fi: known (deduplicated) or new (into this file's xorbs), then
 * writes its reconstruction terms. 0 or -ENOMEM. */
static int plan_file(struct xet_upload *u, size_t fi)
{
    struct xu_file *f = &u->files[fi];
    size_t m = f->scan.nchunks;
    size_t *open = calloc(m > 0 ? m : 1, sizeof(*open));
    size_t n_open = 0;
    uint64_t open_bytes = 0;
    /* chunks of the open xorb, to dedup repeats inside it: a small open-addressing set */
    size_t set_cap = 16384;
    size_t *set = calloc(set_cap, sizeof(*set)); /* chunk index + 1 */
    struct xet_hash *th = calloc(m > 0 ? m : 1, sizeof(*th));
    int rc = -ENOMEM;
    if (open == NULL || set == NULL || th == NULL)
        goto out;
    for (size_t k = 0; k < m; k++) {
        const struct xet_file_chunk *c = &f->scan.chunks[k];
        struct xet_hash xh;
        uint32_t xi;
        if (xet_session_find_chunk(u->s, &c->hash, &xh, &xi)) {
            u->progress.bytes_deduped += c->len;
            continue;
        }
        size_t h;
        memcpy(&h, c->hash.b, sizeof(h));
        h &= set_cap - 1;
        bool repeat = false;
        for (; set[h] != 0; h = (h + 1) & (set_cap - 1)) {
            if (xet_hash_equal(&f->scan.chunks[set[h] - 1].hash, &c->hash)) {
                repeat = true;
                break;
            }
        }
        if (repeat) {
            u->progress.bytes_deduped += c->len;
            continue;
        }
        if (n_open > 0 && (open_bytes + c->len + XET_CHUNK_HEADER_LEN > XET_UPLOAD_XORB_MAX ||
                           n_open >= XET_XORB_MAX_CHUNKS)) {
            if ((rc = close_xorb(u, fi, open, n_open)) < 0)
                goto out;
            n_open = 0;
            open_bytes = 0;
            memset(set, 0, set_cap * sizeof(*set));
            /* the closed xorb is in the index now: h's slot is free again */
            memcpy(&h, c->hash.b, sizeof(h));
            h &= set_cap - 1;
        }
        set[h] = k + 1;
        open[n_open++] = k;
        open_bytes += c->len + XET_CHUNK_HEADER_LEN;
        u->progress.bytes_new += c->len;
    }
    if ((rc = close_xorb(u, fi, open, n_open)) < 0)
        goto out;
    /* terms: runs of chunks that sit one after another in one xorb */
    size_t terms_cap = 0;
    size_t run_start = 0;
    for (size_t k = 0; k < m; k++) {
        const struct xet_file_chunk *c = &f->scan.chunks[k];
        struct xet_hash xh;
        uint32_t xi;
        if (!xet_session_find_chunk(u->s, &c->hash, &xh, &xi)) {
            rc = -EPROTO; /* every chunk was just placed: cannot happen */
            goto out;
        }
        struct xet_term *t = f->nterms > 0 ? &f->terms[f->nterms - 1] : NULL;
        if (t != NULL && xet_hash_equal(&t->xorb, &xh) && t->chunk_end == xi) {
            t->chunk_end++;
            t->unpacked_bytes += c->len;
        } else {
            if (t != NULL)
                xet_range_hash(th + run_start, k - run_start, &t->range_hash);
            if (f->nterms == terms_cap) {
                /* grown, not sized by chunks: a 10 GB file has 160,000 chunks, a few terms */
                terms_cap = terms_cap ? terms_cap * 2 : 16;
                struct xet_term *nt = realloc(f->terms, terms_cap * sizeof(*nt));
                if (nt == NULL) {
                    rc = -ENOMEM;
                    goto out;
                }
                f->terms = nt;
            }
            t = &f->terms[f->nterms++];
            t->xorb = xh;
            t->chunk_start = xi;
            t->chunk_end = xi + 1;
            t->unpacked_bytes = c->len;
            run_start = k;
        }
        th[k] = c->hash;
    }
    if (f->nterms > 0)
        xet_range_hash(th + run_start, m - run_start, &f->terms[f->nterms - 1].range_hash);
    rc = 0;
out:
    free(open);
    free(set);
    free(th);
    /* the chunk list is not needed past planning: xorbs keep their own */
    xet_file_result_free(&f->scan);
    f->scanned = 0;
    return rc;
}

/* ---- xorbs: build (pool) and send ------------------------------------------------------- */

/* work_dir and its parent (<staging>/xet/tmp): two mkdirs, on the pool like all file work */
static void make_work_dir(const char *dir)
{
    char parent[4096];
    snprintf(parent, sizeof(parent), "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash != NULL && slash != parent) {
        *slash = '\0';
        (void)mkdir(parent, 0700);
    }
    (void)mkdir(dir, 0700);
}

static void build_work(uv_work_t *w)
{
    struct xu_job *job = w->data;
    struct xet_upload *u = job->u;
    struct xu_xorb *x = &u->xorbs[job->index];
    const char *path = u->files[x->file].path;
    uint8_t *buf = malloc(XET_CHUNK_MAX);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    int out = -1;
    job->status = 0;
    if (buf == NULL || (u->builder == NULL && xet_xorb_new(&u->builder, XET_UPLOAD_XORB_MAX) < 0)) {
        job->status = -ENOMEM;
        goto done;
    }
    struct xet_xorb *b = u->builder;
    xet_xorb_reset(b);
    if (fd < 0) {
        job->status = -errno;
        snprintf(job->why, sizeof(job->why), "%s", strerror(errno));
        goto done;
    }
    for (size_t i = 0; i < x->n; i++) {
        size_t len = x->chunks[i].unpacked_len, got = 0;
        while (got < len) {
            ssize_t r = pread(fd, buf + got, len - got, (off_t)(x->offsets[i] + got));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                job->status = r < 0 ? -errno : -EIO;
                snprintf(job->why, sizeof(job->why), "%s",
                         r < 0 ? strerror(errno) : "shorter than when it was read");
                goto done;
            }
            got += (size_t)r;
        }
        int r = xet_xorb_add(b, buf, len, &x->chunks[i].hash);
        if (r != 0) {
            job->status = r < 0 ? r : -EFBIG;
            snprintf(job->why, sizeof(job->why), "cannot pack chunk %zu into a xorb", i);
            goto done;
        }
    }
    struct xet_hash h;
    xet_xorb_hash(b, &h);
    if (!xet_hash_equal(&h, &x->hash)) {
        job->status = -EIO;
        snprintf(job->why, sizeof(job->why), "changed since it was read");
        goto done;
    }
    size_t len;
    const uint8_t *bytes = xet_xorb_bytes(b, &len);
    make_work_dir(u->work_dir);
    out = open(x->body_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (out < 0) {
        job->status = -errno;
        snprintf(job->why, sizeof(job->why), "cannot write '%s': %s", x->body_path,
                 strerror(errno));
        goto done;
    }
    for (size_t off = 0; off < len;) {
        ssize_t r = write(out, bytes + off, len - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            job->status = r < 0 ? -errno : -EIO;
            snprintf(job->why, sizeof(job->why), "cannot write '%s': %s", x->body_path,
                     strerror(r < 0 ? errno : EIO));
            goto done;
        }
        off += (size_t)r;
    }
    x->packed = len;
done:
    if (out >= 0)
        close(out);
    if (fd >= 0)
        close(fd);
    free(buf);
}

static void after_build(uv_work_t *w, int status)
{
    struct xu_job *job = w->data;
    struct xet_upload *u = job->u;
    struct xu_xorb *x = &u->xorbs[job->index];
    u->outstanding--;
    u->builds_running--;
    if (status == 0)
        status = job->status;
    if (u->failed) {
        free(job);
        maybe_finish_failed(u);
        return;
    }
    if (status < 0) {
        char why[256];
        snprintf(why, sizeof(why), "building xorb %.16s: %s", x->hex,
                 job->why[0] ? job->why : uv_strerror(status));
        fail_file(u, x->file, status, why);
        free(job);
        return;
    }
    free(job);
    x->state = XS_BUILT;
    u->built_waiting++;
    pump(u);
}

static void on_xorb_sent(void *ctx, int64_t delta)
{
    struct xu_req *r = ctx;
    struct xet_upload *u = r->u;
    if (delta < 0 && (uint64_t)-delta > u->progress.bytes_sent)
        u->progress.bytes_sent = 0;
    else
        u->progress.bytes_sent += (uint64_t)delta;
    if (u->sent != NULL)
        u->sent(u->ctx, delta);
}

static void on_unlinked(uv_fs_t *req)
{
    uv_fs_req_cleanup(req);
    free(req);
}

static void drop_body(struct xet_upload *u, struct xu_xorb *x)
{
    uv_fs_t *req = malloc(sizeof(*req));
    if (req != NULL && uv_fs_unlink(u->loop, req, x->body_path, on_unlinked) < 0)
        free(req);
}

static void on_xorb(void *ctx, const struct ckpt_err *err, const uint8_t *body, size_t len)
{
    size_t xi;
    struct xet_upload *u = req_done(ctx, &xi);
    struct xu_xorb *x = &u->xorbs[xi];
    (void)body;
    (void)len;
    u->sends_running--;
    if (u->failed) {
        maybe_finish_failed(u);
        return;
    }
    if (err != NULL) {
        fail(u, err);
        return;
    }
    x->state = XS_DONE;
    u->xorbs_done++;
    u->progress.xorbs_sent++;
    if (u->journal != NULL)
        journal_xorb_done(u->journal, x->hex, xet_session_scope(u->s), x->packed, NULL, NULL);
    log_debug("xet_xorb_sent", "xorb=%s bytes=%" PRIu64 " chunks=%zu", x->hex, x->packed, x->n);
    drop_body(u, x);
    pump(u);
}

static int start_send(struct xet_upload *u, size_t xi)
{
    struct xu_xorb *x = &u->xorbs[xi];
    struct xu_req *r = req_new(u, xi);
    if (r == NULL) {
        fail_code(u, UV_ENOMEM, "xorb upload");
        return -1;
    }
    int rc =
        xet_post_xorb(u->s, &x->hash, x->body_path, x->packed, on_xorb_sent, on_xorb, r, &r->op);
    if (req_started(u, r, rc, "xorb upload") < 0)
        return -1;
    x->state = XS_SENDING;
    u->built_waiting--;
    u->sends_running++;
    return 0;
}

static int start_build(struct xet_upload *u, size_t xi)
{
    struct xu_xorb *x = &u->xorbs[xi];
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s.xorb", u->work_dir, x->hex);
    struct xu_job *job = calloc(1, sizeof(*job));
    if (job == NULL || (x->body_path = strdup(path)) == NULL) {
        free(job);
        fail_code(u, UV_ENOMEM, "xorb build");
        return -1;
    }
    job->u = u;
    job->index = xi;
    job->work.data = job;
    int rc = uv_queue_work(u->loop, &job->work, build_work, after_build);
    if (rc < 0) {
        free(job);
        fail_code(u, rc, "xorb build");
        return -1;
    }
    x->state = XS_BUILDING;
    u->outstanding++;
    u->builds_running++;
    return 0;
}

/* ---- shard ------------------------------------------------------------------------------- */

static void on_shard(void *ctx, const struct ckpt_err *err, const uint8_t *body, size_t len)
{
    size_t unused;
    struct xet_upload *u = req_done(ctx, &unused);
    (void)body;
    (void)len;
    if (u->failed) {
        maybe_finish_failed(u);
        return;
    }
    if (err != NULL) {
        fail(u, err);
        return;
    }
    struct xet_hash name;
    xet_chunk_hash(u->shard, u->shard_len, &name);
    xet_session_cache_shard(u->s, &name, u->shard, u->shard_len);
    struct xet_upload_result *res = calloc(u->n, sizeof(*res));
    if (res == NULL) {
        fail_code(u, UV_ENOMEM, "shard upload");
        return;
    }
    for (size_t i = 0; i < u->n; i++) {
        xet_hash_to_hex(&u->files[i].file_hash, res[i].xet_hash);
        memcpy(res[i].sha256, u->files[i].sha256, sizeof(res[i].sha256));
    }
    finish(u, NULL, res);
    free(res);
}

static void send_shard(struct xet_upload *u)
{
    struct xet_shard_builder *b = NULL;
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc = xet_shard_builder_new(&b);
    for (size_t i = 0; rc == 0 && i < u->n; i++) {
        struct xu_file *f = &u->files[i];
        rc = xet_shard_add_file(b, &f->file_hash, f->terms, f->nterms, f->sha_bytes, f->size);
    }
    for (size_t i = 0; rc == 0 && i < u->n_xorbs; i++) {
        struct xu_xorb *x = &u->xorbs[i];
        rc = xet_shard_add_xorb(b, &x->hash, x->chunks, x->n, x->packed);
    }
    if (rc == 0)
        rc = xet_shard_serialize(b, (uint64_t)time(NULL), &bytes, &len);
    xet_shard_builder_free(b);
    if (rc < 0) {
        fail_code(u, rc, "shard");
        return;
    }
    u->shard_sent = 1;
    struct xu_req *r = req_new(u, 0);
    if (r == NULL) {
        free(bytes);
        fail_code(u, UV_ENOMEM, "shard upload");
        return;
    }
    rc = xet_post_shard(u->s, bytes, len, on_shard, r, &r->op);
    if (req_started(u, r, rc, "shard upload") < 0) {
        free(bytes);
        return;
    }
    u->shard = bytes;
    u->shard_len = len;
}

/* ---- the pump ---------------------------------------------------------------------------- */

static void pump(struct xet_upload *u)
{
    if (u->failed || u->finished || !u->ready)
        return;
    while (u->scans_running < XU_SCANS && u->next_scan < u->n &&
           u->next_scan < u->next_plan + XU_SCANS + 1) {
        struct xu_job *job = calloc(1, sizeof(*job));
        if (job == NULL) {
            fail_code(u, UV_ENOMEM, "scan");
            return;
        }
        job->u = u;
        job->index = u->next_scan;
        job->work.data = job;
        int rc = uv_queue_work(u->loop, &job->work, scan_work, after_scan);
        if (rc < 0) {
            free(job);
            fail_code(u, rc, "scan");
            return;
        }
        u->next_scan++;
        u->scans_running++;
        u->outstanding++;
    }
    while (u->next_plan < u->n && u->files[u->next_plan].scanned) {
        struct xu_file *f = &u->files[u->next_plan];
        if (!f->queried && send_queries(u, u->next_plan) < 0)
            return;
        if (f->queries_pending > 0)
            break;
        xet_session_trim(u->s);
        int rc = plan_file(u, u->next_plan);
        if (rc < 0) {
            fail_code(u, rc, "plan xorbs");
            return;
        }
        u->next_plan++;
    }
    while (u->next_build < u->n_xorbs) {
        struct xu_xorb *x = &u->xorbs[u->next_build];
        const struct journal_xorb *jx =
            u->journal != NULL ? journal_xorb_find(u->journal, x->hex, xet_session_scope(u->s))
                               : NULL;
        if (jx != NULL) {
            /* the CAS took it before a restart: same files, same xorb */
            x->packed = jx->packed_bytes;
            x->state = XS_DONE;
            u->xorbs_done++;
            u->progress.xorbs_resumed++;
            u->progress.bytes_resumed += jx->packed_bytes;
            log_info("xet_xorb_resumed", "xorb=%s bytes=%" PRIu64, x->hex, x->packed);
            u->next_build++;
            continue;
        }
        if (u->builds_running > 0 || u->built_waiting + u->sends_running >= u->max_transfers)
            break;
        if (start_build(u, u->next_build) < 0)
            return;
        u->next_build++;
    }
    for (size_t i = 0; i < u->n_xorbs && u->sends_running < u->max_transfers; i++) {
        if (u->xorbs[i].state == XS_BUILT && start_send(u, i) < 0)
            return;
    }
    if (!u->shard_sent && u->next_plan == u->n && u->xorbs_done == u->n_xorbs)
        send_shard(u);
}

static void on_ready(void *ctx)
{
    struct xet_upload *u = ctx;
    u->outstanding--;
    u->ready = 1;
    if (u->failed) {
        maybe_finish_failed(u);
        return;
    }
    pump(u);
}

/* ---- public API -------------------------------------------------------------------------- */

int xet_upload_start(struct xet_upload **ret, uv_loop_t *loop, struct xet_session *session,
                     const struct xet_upload_file *files, size_t n,
                     const struct xet_upload_opts *opts, xet_upload_sent_cb sent,
                     xet_upload_done_cb cb, void *ctx)
{
    if (n == 0 || opts == NULL || opts->work_dir == NULL || cb == NULL)
        return UV_EINVAL;
    struct xet_upload *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return UV_ENOMEM;
    u->loop = loop;
    u->s = session;
    u->max_transfers = opts->max_transfers > 0 ? opts->max_transfers : 4;
    u->journal = opts->journal;
    u->hashes = opts->hashes;
    u->sent = sent;
    u->cb = cb;
    u->ctx = ctx;
    u->n = n;
    u->files = calloc(n, sizeof(*u->files));
    u->work_dir = strdup(opts->work_dir);
    if (u->files == NULL || u->work_dir == NULL)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        if (files[i].sha256 == NULL || strlen(files[i].sha256) != 64) {
            release(u);
            return UV_EINVAL;
        }
        if ((u->files[i].path = strdup(files[i].local_path)) == NULL)
            goto nomem;
        memcpy(u->files[i].sha256, files[i].sha256, 65);
        u->files[i].size = files[i].size;
    }
    /* on_ready may run before this returns: it only queues pool work, so cb never runs here */
    u->outstanding++;
    *ret = u;
    int rc = xet_session_when_ready(session, on_ready, u);
    if (rc < 0) {
        release(u);
        return rc;
    }
    return 0;
nomem:
    release(u);
    return UV_ENOMEM;
}

void xet_upload_get_progress(const struct xet_upload *u, struct xet_upload_progress *ret)
{
    *ret = u->progress;
}

/* An unfinished upload always has a pool job, a CAS request or the cache read in flight, so
 * fail() never finishes from in here: cb runs later, as upload.c's fail() expects. */
void xet_upload_cancel(struct xet_upload *u)
{
    if (u->finished || u->failed)
        return;
    struct ckpt_err e;
    ckpt_err_set(&e, CKPT_ERR_IO, UV_ECANCELED, "Xet upload cancelled");
    fail(u, &e);
}

void xet_upload_free(struct xet_upload *u)
{
    if (u == NULL)
        return;
    if (u->finished) {
        release(u);
        return;
    }
    u->free_when_done = 1;
    xet_upload_cancel(u);
}
