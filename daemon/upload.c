/* upload.c - one set of files, one commit: hash, preupload, LFS batch, PUTs, commit.
 *
 * Owns the per-upload state machine (upload_enter makes every transition), dedup of identical
 * LFS objects, the transfer slots, and the commit retry rule below. Loop thread only; hashing and
 * reading regular files' content run on the libuv pool.
 *
 * Pipeline: hashed files join a preupload batch (sent at HUB_PREUPLOAD_MAX files, when hashing is
 * over, or at UPLOAD_PIPE_BYTES while no preupload is in flight: the answers pace the batching, so
 * no timer is needed); each answer's new LFS objects go to an LFS batch at once and their PUTs
 * start while later files still hash. Regular files are read and the commit made only after
 * every file is classified and every object is on the Hub.
 *
 * Commit retries: the commit always carries parentCommit (the head seen by preupload), so a
 * commit can never land twice. After a transport error, a 5xx or a 412, we preupload again: if
 * every file's remote oid now equals ours, the content is on the branch and we report success
 * with that head; otherwise we commit again on the new head, at most UPLOAD_COMMIT_ATTEMPTS times.
 */
#include "upload.h"

#include "hash.h"
#include "hub.h"
#include "journal.h"
#include "log.h"
#include "xet_session.h"
#include "xet_upload.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <uv.h>

#define UPLOAD_READS_MAX 2
/* Hashed bytes that wait for a preupload before one is sent while another is in flight would
 * not be: fewer calls for small files, an early start for big ones. */
#define UPLOAD_PIPE_BYTES (32u * 1024 * 1024)

enum upload_state {
    UP_PIPE, /* hash, preupload, LFS batch and PUTs, each file as soon as it can */
    UP_READ,
    UP_COMMIT,
    UP_VERIFY,
    UP_DONE,
};

static const char *const state_names[] = {"pipeline", "read", "commit", "verify", "done"};

struct up_entry {
    struct upload *u;
    char *repo_path;
    char *local_path;
    char *journal_path;
    int known; /* sha256 and size from the journal: not hashed again */
    uint64_t size;
    char sha256[65];
    char git_sha1[41];
    unsigned char sample[HASH_SAMPLE_MAX];
    size_t sample_len;
    bool binary; /* a NUL byte in it (small files only: larger ones are LFS anyway) */
    int skip;    /* same content on the Hub, or ignored */
    size_t obj;
    char *content;
    size_t content_len;
};

enum { PART_TODO = 0, PART_RUNNING, PART_DONE };

struct up_obj {
    size_t entry;          /* the first entry with this content: its file is sent */
    char **etags;          /* n */
    unsigned char *pstate; /* n: PART_* */
    size_t n;              /* parts (1 for a basic transfer); 0 before the batch answer */
    uint64_t chunk_size;   /* of the layout pstate describes */
    size_t cursor;         /* no PART_TODO before it */
    size_t parts_done;
    unsigned gen;        /* bumped by each re-batch: older URLs' failures do not re-batch */
    unsigned layout_gen; /* answers for parts started before it belong to a dropped layout */
    unsigned rebatches;
    int rebatching;
    int completing;
    int counted;
    int via_xet; /* the batch gave it to Xet */
    int done;
};

/* One hub operation in flight; the ctx of its callback. */
struct up_req {
    struct upload *u;
    struct hub_op *op;
    struct up_req *prev, *next;
    size_t obj, part, off, n;
    unsigned gen;
    struct hub_lfs_object *tmp;    /* a re-batch's answer */
    struct hub_preupload_file *pf; /* a pipeline preupload's files: entries idx[0..n) */
    size_t *idx;
};

struct up_read {
    uv_work_t work;
    struct up_entry *e;
    int status;
    char *buf;
    size_t len;
};

struct upload {
    struct hub *hub;
    struct hash_pool *hashes;
    uv_loop_t *loop;
    struct upload_opts opts;
    enum upload_state state;
    char *message;
    upload_done_cb cb;
    void *ctx;

    struct up_entry *entries;
    size_t n;
    size_t hashed;
    struct hub_preupload_file *pf; /* n files, then n_del deletes */
    size_t pre_off;                /* the verify step's next preupload */
    char **del;
    size_t n_del;
    size_t n_del_live; /* deletes of paths that exist */

    /* pipeline: entries in the order their hash became known; [pre_sent, n_ready) wait for a
     * preupload */
    size_t *ready;
    size_t n_ready, pre_sent, pre_answered, pre_inflight;
    uint64_t ready_bytes; /* of the waiting ones */
    size_t changes;
    uint64_t regular_bytes;
    int journaled; /* the furthest journal state this upload recorded */

    /* capacity n: the hub keeps pointers into lo while a batch is in flight */
    struct hub_lfs_object *lo;
    struct up_obj *ob;
    size_t n_objs;
    size_t batch_off; /* objects [0, batch_off) were sent to an LFS batch */
    size_t batch_answered;
    size_t *otab; /* open addressing, obj index + 1 by sha256; otab_cap is a power of two */
    size_t otab_cap;

    size_t running_jobs;
    size_t objs_done;

    /* Xet: objects the batch handed to Xet wait in xet_wait; one xet_upload at a time takes
     * all that wait (its own shard) */
    struct xet_upload *xu, *xu_old;
    size_t *xet_wait, n_xet_wait;
    size_t *xet_run, n_xet_run;
    struct xet_upload_progress xet_done_progress;

    size_t next_read, reads_done;
    size_t n_regular;

    char head[41];
    char parent[41];
    unsigned commit_attempts;

    size_t outstanding; /* hashes, reads and hub ops whose callbacks are still due */
    struct up_req *reqs;
    int failed;
    int finished;
    int succeeded; /* a no_commit upload reached its end: file results may be read */
    int free_when_done;
    int starting; /* inside upload_start: a failure is returned, never called back */
    struct ckpt_err err;
    struct upload_progress progress;
};

static void upload_enter(struct upload *u, enum upload_state s);
static void send_preupload(struct upload *u);
static void obj_forget_parts(struct upload *u, size_t i);
static void pipe_preupload(struct upload *u);
static void pipe_check_done(struct upload *u);
static void xet_pump(struct upload *u);

/* Pipelined phases overlap: a state is recorded only when it moves forward. */
static void journal_state(struct upload *u, enum journal_state s)
{
    if ((int)s <= u->journaled)
        return;
    u->journaled = (int)s;
    if (u->opts.journal != NULL)
        journal_set_state(u->opts.journal, u->opts.journal_id, s, NULL, NULL, NULL);
}

/* ---- completion and failure -------------------------------------------------------------- */

static void upload_release(struct upload *u)
{
    for (size_t i = 0; u->entries != NULL && i < u->n; i++) {
        free(u->entries[i].repo_path);
        free(u->entries[i].local_path);
        free(u->entries[i].journal_path);
        free(u->entries[i].content);
    }
    for (size_t i = 0; i < u->n_objs; i++) {
        obj_forget_parts(u, i);
        hub_lfs_object_release(&u->lo[i]);
    }
    for (size_t i = 0; i < u->n_del; i++)
        free(u->del[i]);
    free(u->del);
    xet_upload_free(u->xu);
    xet_upload_free(u->xu_old);
    free(u->xet_wait);
    free(u->xet_run);
    free(u->entries);
    free(u->ready);
    free(u->otab);
    free(u->pf);
    free(u->lo);
    free(u->ob);
    free(u->message);
    free(u);
}

static void finish(struct upload *u, const struct ckpt_err *err, const char *oid)
{
    if (u->finished)
        return;
    u->finished = 1;
    u->state = UP_DONE;
    log_debug("upload_state", "repo='%s' state=done ok=%d", hub_repo_id(u->hub), err == NULL);
    if (u->free_when_done) {
        upload_release(u);
        return;
    }
    u->cb(u->ctx, err, oid);
}

static void maybe_finish_failed(struct upload *u)
{
    if (u->failed && u->outstanding == 0 && !u->starting)
        finish(u, &u->err, NULL);
}

static void fail(struct upload *u, const struct ckpt_err *err)
{
    if (u->failed)
        return;
    u->failed = 1;
    u->err = *err;
    for (struct up_req *r = u->reqs; r != NULL; r = r->next)
        hub_op_cancel(r->op);
    if (u->xu != NULL)
        xet_upload_cancel(u->xu);
    maybe_finish_failed(u);
}

static void fail_code(struct upload *u, int code, const char *what)
{
    struct ckpt_err e;
    ckpt_err_set(&e, code == UV_ECANCELED ? CKPT_ERR_IO : CKPT_ERR_INPUT, code, "%s: %s", what,
                 uv_strerror(code));
    fail(u, &e);
}

/* ---- hub op bookkeeping ------------------------------------------------------------------ */

static struct up_req *req_new(struct upload *u)
{
    struct up_req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->u = u;
    return r;
}

/* After a hub_* call: links r on success, else frees it and fails the upload. */
static int req_started(struct upload *u, struct up_req *r, int rc, const char *what)
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

/* At the top of a hub callback: unlinks and frees r; returns the upload. */
static struct upload *req_done(struct up_req *r, struct up_req *copy)
{
    struct upload *u = r->u;
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        u->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    *copy = *r;
    free(r);
    u->outstanding--;
    return u;
}

/* ---- hashing ----------------------------------------------------------------------------- */

/* The upload fails for a local file: "cannot <verb> '<its path, escaped>': <why>". */
static void fail_file(struct upload *u, const struct up_entry *e, const char *verb, int status,
                      const char *why)
{
    struct ckpt_err err;
    char shown[256];
    log_escape(shown, sizeof(shown), e->local_path);
    ckpt_err_set(&err, CKPT_ERR_IO, status, "cannot %s '%s': %s", verb, shown, why);
    fail(u, &err);
}

static void on_hashed(void *ctx, int status, const struct hash_result *res)
{
    struct up_entry *e = ctx;
    struct upload *u = e->u;
    u->outstanding--;
    if (u->failed) {
        maybe_finish_failed(u);
        return;
    }
    if (status < 0) {
        fail_file(u, e, "hash", status, uv_strerror(status));
        return;
    }
    e->size = res->size;
    memcpy(e->sha256, res->sha256, sizeof(e->sha256));
    if (u->opts.journal != NULL && e->journal_path != NULL)
        journal_hashed(u->opts.journal, u->opts.journal_id, e->journal_path, res->sha256,
                       res->git_sha1, NULL, NULL);
    memcpy(e->git_sha1, res->git_sha1, sizeof(e->git_sha1));
    memcpy(e->sample, res->sample, res->sample_len);
    e->sample_len = res->sample_len;
    e->binary = res->binary;
    u->progress.bytes_hashed += res->size;
    u->progress.bytes_total += res->size;
    u->ready[u->n_ready++] = (size_t)(e - u->entries);
    u->ready_bytes += res->size;
    if (++u->hashed == u->n)
        journal_state(u, JOURNAL_HASHED);
    pipe_preupload(u);
}

/* ---- preupload (also the verify step after a doubtful commit) ---------------------------- */

static int classify(struct upload *u, const size_t *idx, size_t n);
static void send_batch(struct upload *u);
static void pump_transfers(struct upload *u);

static void on_preupload(void *ctx, const struct ckpt_err *err, const char *head)
{
    struct up_req rc;
    struct upload *u = req_done(ctx, &rc);
    if (rc.pf != NULL) {
        for (size_t k = 0; k < rc.n; k++)
            u->pf[rc.idx[k]] = rc.pf[k];
        free(rc.pf);
        u->pre_inflight--;
    }
    if (u->failed) {
        free(rc.idx);
        maybe_finish_failed(u);
        return;
    }
    if (err != NULL) {
        free(rc.idx);
        fail(u, err);
        return;
    }
    snprintf(u->head, sizeof(u->head), "%s", head);
    if (rc.pf != NULL) {
        u->pre_answered += rc.n;
        int r = classify(u, rc.idx, rc.n);
        free(rc.idx);
        if (r < 0)
            return;
        send_batch(u);
        pipe_preupload(u);
        pipe_check_done(u);
        return;
    }
    u->pre_off = rc.off + rc.n;
    if (u->pre_off < u->n + u->n_del) {
        send_preupload(u);
        return;
    }
    if (u->state == UP_VERIFY) {
        for (size_t k = 0; k < u->n_del; k++) {
            if (u->pf[u->n + k].remote_oid[0] != '\0' && u->n_del_live > 0) {
                snprintf(u->parent, sizeof(u->parent), "%s", u->head);
                upload_enter(u, UP_COMMIT); /* a path we delete is still there */
                return;
            }
        }
        for (size_t i = 0; i < u->n; i++) {
            struct hub_preupload_file *p = &u->pf[i];
            struct up_entry *e = &u->entries[i];
            if (p->should_ignore)
                continue;
            const char *want = p->mode == HUB_MODE_LFS ? e->sha256 : e->git_sha1;
            if (strcmp(p->remote_oid, want) != 0) {
                /* our content is not on the branch: commit again on the head we just saw */
                snprintf(u->parent, sizeof(u->parent), "%s", u->head);
                upload_enter(u, UP_COMMIT);
                return;
            }
        }
        log_info("upload_commit_verified", "repo='%s' head=%s, content already committed",
                 hub_repo_id(u->hub), u->head);
        finish(u, NULL, u->head);
        return;
    }
}

/* Sends what waits when a batch is full, hashing is over, or enough bytes wait while no
 * preupload is in flight (its answer sends the rest). */
static void pipe_preupload(struct upload *u)
{
    while (!u->failed && u->state == UP_PIPE && u->pre_sent < u->n_ready) {
        size_t n = u->n_ready - u->pre_sent;
        if (n < HUB_PREUPLOAD_MAX && u->hashed < u->n &&
            (u->pre_inflight > 0 || u->ready_bytes < UPLOAD_PIPE_BYTES))
            return;
        if (n > HUB_PREUPLOAD_MAX)
            n = HUB_PREUPLOAD_MAX;
        struct up_req *r = req_new(u);
        if (r == NULL || (r->pf = calloc(n, sizeof(*r->pf))) == NULL ||
            (r->idx = malloc(n * sizeof(*r->idx))) == NULL) {
            if (r != NULL) {
                free(r->pf);
                free(r);
            }
            fail_code(u, UV_ENOMEM, "preupload");
            return;
        }
        r->n = n;
        for (size_t k = 0; k < n; k++) {
            struct hub_preupload_file *p = &r->pf[k];
            r->idx[k] = u->ready[u->pre_sent + k];
            if (r->idx[k] >= u->n) {
                p->path = u->del[r->idx[k] - u->n];
                continue;
            }
            struct up_entry *e = &u->entries[r->idx[k]];
            p->path = e->repo_path;
            p->size = e->size;
            p->sample = e->sample;
            p->sample_len = e->sample_len;
            u->ready_bytes -= u->ready_bytes < e->size ? u->ready_bytes : e->size;
        }
        u->pre_sent += n;
        struct hub_preupload_file *pf = r->pf;
        size_t *idx = r->idx;
        int rc = hub_preupload(u->hub, pf, n, on_preupload, r, &r->op);
        if (rc < 0) {
            free(pf);
            free(idx);
        }
        if (req_started(u, r, rc, "preupload") < 0)
            return;
        u->pre_inflight++;
    }
}

static void send_preupload(struct upload *u)
{
    struct up_req *r = req_new(u);
    if (r == NULL) {
        fail_code(u, UV_ENOMEM, "preupload");
        return;
    }
    size_t total = u->n + u->n_del;
    r->off = u->pre_off;
    r->n = total - u->pre_off < HUB_PREUPLOAD_MAX ? total - u->pre_off : HUB_PREUPLOAD_MAX;
    int rc = hub_preupload(u->hub, u->pf + r->off, r->n, on_preupload, r, &r->op);
    req_started(u, r, rc, "preupload");
}

static uint64_t oid_key(const char *sha256)
{
    uint64_t k = 0;
    for (int i = 0; i < 16; i++)
        k = k << 4 | (uint64_t)(sha256[i] <= '9' ? sha256[i] - '0' : (sha256[i] | 0x20) - 'a' + 10);
    return k;
}

/* The object of this content, made when new. */
static size_t obj_for(struct upload *u, size_t entry)
{
    struct up_entry *e = &u->entries[entry];
    size_t mask = u->otab_cap - 1;
    for (size_t h = (size_t)oid_key(e->sha256) & mask;; h = (h + 1) & mask) {
        if (u->otab[h] == 0) {
            size_t i = u->n_objs++;
            memcpy(u->lo[i].oid, e->sha256, sizeof(u->lo[i].oid));
            u->lo[i].size = e->size;
            u->ob[i].entry = entry;
            u->otab[h] = i + 1;
            return i;
        }
        if (strcmp(u->lo[u->otab[h] - 1].oid, e->sha256) == 0)
            return u->otab[h] - 1;
    }
}

/* After a preupload answer for entries idx[0..n): drop what the Hub has, give each LFS file its
 * object (identical content shares one). Returns 0, or -1 after failing the upload. */
static int classify(struct upload *u, const size_t *idx, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        if (idx[k] >= u->n) {
            /* a delete: a change only where the path exists */
            if (u->pf[idx[k]].remote_oid[0] != '\0') {
                u->n_del_live++;
                u->changes++;
            }
            continue;
        }
        struct up_entry *e = &u->entries[idx[k]];
        struct hub_preupload_file *p = &u->pf[idx[k]];
        e->skip = 0;
        if (p->should_ignore) {
            e->skip = 1;
            u->progress.files_ignored++;
            continue;
        }
        /* The Hub judges a file by its first 512 bytes; one with a NUL further on would be
         * refused as a regular file ("contains binary files"), failing the whole commit. */
        if (p->mode != HUB_MODE_LFS && e->binary) {
            log_debug("binary-as-lfs", "path='%s' size=%" PRIu64, e->repo_path, e->size);
            p->mode = HUB_MODE_LFS;
        }
        if (p->mode == HUB_MODE_LFS || u->opts.no_commit) {
            if (p->mode == HUB_MODE_LFS && strcmp(p->remote_oid, e->sha256) == 0) {
                e->skip = 1;
                u->progress.files_skipped++;
                continue;
            }
            e->obj = obj_for(u, idx[k]);
        } else {
            if (e->git_sha1[0] == '\0' || e->size > HUB_REGULAR_MAX) {
                struct ckpt_err err;
                char shown[256];
                log_escape(shown, sizeof(shown), e->repo_path);
                ckpt_err_set(&err, CKPT_ERR_PROTOCOL, -EPROTO,
                             "hub wants '%s' (%" PRIu64 " bytes) as a regular file, which is "
                             "limited to 10 MiB",
                             shown, e->size);
                fail(u, &err);
                return -1;
            }
            if (strcmp(p->remote_oid, e->git_sha1) == 0) {
                e->skip = 1;
                u->progress.files_skipped++;
                continue;
            }
            u->regular_bytes += e->size;
            u->n_regular++;
        }
        u->changes++;
    }
    if (u->regular_bytes > UPLOAD_REGULAR_BYTES_MAX) {
        struct ckpt_err err;
        ckpt_err_set(&err, CKPT_ERR_INPUT, -E2BIG,
                     "%" PRIu64 " bytes of regular (non-LFS) files exceed the %u bytes one commit "
                     "may carry",
                     u->regular_bytes, UPLOAD_REGULAR_BYTES_MAX);
        fail(u, &err);
        return -1;
    }
    return 0;
}

/* Every file classified and every object on the Hub: read the regular files, then commit. */
static void pipe_check_done(struct upload *u)
{
    if (u->failed || u->state != UP_PIPE || u->pre_answered < u->n + u->n_del ||
        u->batch_answered < u->n_objs || u->objs_done < u->n_objs)
        return;
    journal_state(u, JOURNAL_PLANNED);
    snprintf(u->parent, sizeof(u->parent), "%s", u->head);
    if (u->opts.no_commit) {
        u->succeeded = 1;
        finish(u, NULL, NULL);
        return;
    }
    if (u->changes == 0) {
        log_debug("upload_unchanged", "repo='%s' head=%s", hub_repo_id(u->hub), u->head);
        finish(u, NULL, u->head);
        return;
    }
    upload_enter(u, UP_READ);
}

/* ---- LFS batch and transfers ------------------------------------------------------------- */

static void send_complete(struct upload *u, size_t i);
static void obj_setup(struct upload *u, size_t i);

static void on_batch(void *ctx, const struct ckpt_err *err)
{
    struct up_req rc;
    struct upload *u = req_done(ctx, &rc);
    if (u->failed) {
        maybe_finish_failed(u);
        return;
    }
    if (err != NULL) {
        fail(u, err);
        return;
    }
    /* stored ones are done at once: the last one may end the pipeline, so count them after */
    for (size_t i = rc.off; i < rc.off + rc.n && u->state == UP_PIPE && !u->failed; i++)
        obj_setup(u, i);
    u->batch_answered += rc.n;
    pipe_check_done(u);
    if (u->state == UP_PIPE && !u->failed) {
        pump_transfers(u);
        xet_pump(u);
    }
}

/* The objects new since the last batch, at once: their PUTs start while others still hash. */
static void send_batch(struct upload *u)
{
    while (!u->failed && u->batch_off < u->n_objs) {
        struct up_req *r = req_new(u);
        if (r == NULL) {
            fail_code(u, UV_ENOMEM, "LFS batch");
            return;
        }
        r->off = u->batch_off;
        r->n = u->n_objs - r->off < HUB_BATCH_MAX ? u->n_objs - r->off : HUB_BATCH_MAX;
        u->batch_off += r->n;
        int rc = hub_lfs_batch(u->hub, u->lo + r->off, r->n, on_batch, r, &r->op);
        if (req_started(u, r, rc, "LFS batch") < 0)
            return;
    }
}

static void obj_done(struct upload *u, size_t i)
{
    if (u->ob[i].done)
        return;
    u->ob[i].done = 1;
    if (u->opts.journal != NULL)
        journal_obj_done(u->opts.journal, u->lo[i].oid, u->lo[i].size, NULL, NULL);
    u->objs_done++;
    pipe_check_done(u);
}

static void obj_forget_parts(struct upload *u, size_t i)
{
    struct up_obj *ob = &u->ob[i];
    if (ob->etags != NULL)
        for (size_t k = 0; k < ob->n; k++)
            free(ob->etags[k]);
    free(ob->etags);
    free(ob->pstate);
    ob->etags = NULL;
    ob->pstate = NULL;
    ob->n = 0;
    ob->parts_done = 0;
    ob->cursor = 0;
    ob->layout_gen = ob->gen;
}

static uint64_t part_len(const struct hub_lfs_object *o, size_t k)
{
    uint64_t off = (uint64_t)k * o->chunk_size;
    return o->size - off < o->chunk_size ? o->size - off : o->chunk_size;
}

/* ---- Xet ------------------------------------------------------------------------------- */

static void on_xet_sent(void *ctx, int64_t delta)
{
    struct upload_progress *p = &((struct upload *)ctx)->progress;
    if (delta < 0 && (uint64_t)-delta > p->bytes_sent)
        p->bytes_sent = 0;
    else
        p->bytes_sent += (uint64_t)delta;
}

static void xet_add_progress(struct xet_upload_progress *sum, const struct xet_upload_progress *p)
{
    sum->bytes_new += p->bytes_new;
    sum->bytes_deduped += p->bytes_deduped;
    sum->xorbs_sent += p->xorbs_sent;
    sum->xorbs_resumed += p->xorbs_resumed;
}

static void on_xet_done(void *ctx, const struct ckpt_err *err, const struct xet_upload_result *res,
                        size_t n)
{
    struct upload *u = ctx;
    struct xet_upload_progress p;
    u->outstanding--;
    xet_upload_get_progress(u->xu, &p);
    xet_add_progress(&u->xet_done_progress, &p);
    u->xu_old = u->xu; /* freed after this callback returns, at the next start or the end */
    u->xu = NULL;
    if (u->failed) {
        maybe_finish_failed(u);
        return;
    }
    if (err != NULL) {
        fail(u, err);
        return;
    }
    log_info("upload_xet_done",
             "repo='%s' files=%zu new_bytes=%" PRIu64 " dedup_bytes=%" PRIu64
             " xorbs_sent=%zu xorbs_resumed=%zu xet_scan_reused=%zu",
             hub_repo_id(u->hub), n, p.bytes_new, p.bytes_deduped, p.xorbs_sent, p.xorbs_resumed,
             p.scans_reused);
    size_t k = u->n_xet_run;
    u->n_xet_run = 0;
    for (size_t j = 0; j < k && !u->failed && u->state == UP_PIPE; j++) {
        log_debug("upload_xet_file", "oid=%s xet_hash=%s", res[j].sha256, res[j].xet_hash);
        obj_done(u, u->xet_run[j]);
    }
    xet_pump(u);
}

/* Starts one Xet upload with every object waiting, unless one runs. */
static void xet_pump(struct upload *u)
{
    if (u->failed || u->xu != NULL || u->n_xet_wait == 0 || u->state != UP_PIPE)
        return;
    xet_upload_free(u->xu_old);
    u->xu_old = NULL;
    struct xet_upload_file *files = calloc(u->n_xet_wait, sizeof(*files));
    if (files == NULL) {
        fail_code(u, UV_ENOMEM, "Xet upload");
        return;
    }
    for (size_t j = 0; j < u->n_xet_wait; j++) {
        size_t i = u->xet_wait[j];
        files[j].local_path = u->entries[u->ob[i].entry].local_path;
        files[j].sha256 = u->lo[i].oid;
        files[j].size = u->lo[i].size;
    }
    struct xet_upload_opts xo = {.max_transfers = u->opts.max_transfers,
                                 .journal = u->opts.journal,
                                 .work_dir = u->opts.xet_work_dir,
                                 .hashes = u->hashes};
    int rc = xet_upload_start(&u->xu, u->loop, u->opts.xet, files, u->n_xet_wait, &xo, on_xet_sent,
                              on_xet_done, u);
    free(files);
    if (rc < 0) {
        u->xu = NULL;
        fail_code(u, rc, "Xet upload");
        return;
    }
    u->outstanding++;
    memcpy(u->xet_run, u->xet_wait, u->n_xet_wait * sizeof(*u->xet_run));
    u->n_xet_run = u->n_xet_wait;
    u->n_xet_wait = 0;
    journal_state(u, JOURNAL_UPLOADING);
}

/* An object the batch gave to Xet: it waits for the next Xet upload. */
static void xet_take(struct upload *u, size_t i)
{
    struct hub_lfs_object *o = &u->lo[i];
    struct ckpt_err e;
    if (u->opts.xet == NULL || u->opts.xet_work_dir == NULL) {
        ckpt_err_set(&e, CKPT_ERR_PROTOCOL, -EPROTO,
                     "LFS batch for '%s': the hub answered transfer 'xet', which this upload "
                     "cannot use",
                     hub_repo_id(u->hub));
        fail(u, &e);
        return;
    }
    if (u->xet_wait == NULL && ((u->xet_wait = calloc(u->n, sizeof(size_t))) == NULL ||
                                (u->xet_run = calloc(u->n, sizeof(size_t))) == NULL)) {
        fail_code(u, UV_ENOMEM, "Xet upload");
        return;
    }
    xet_session_offer_token(u->opts.xet, o);
    u->ob[i].via_xet = 1;
    if (!u->ob[i].counted) {
        u->ob[i].counted = 1;
        u->progress.files_xet++;
    }
    u->xet_wait[u->n_xet_wait++] = i;
}

/* After a batch answer for object i (the first one or a re-batch): what is left to send. */
static void obj_setup(struct upload *u, size_t i)
{
    struct hub_lfs_object *o = &u->lo[i];
    struct up_obj *ob = &u->ob[i];
    int multi = o->action == HUB_LFS_MULTIPART;
    size_t n = multi ? o->n_parts : 1;

    if (ob->done)
        return;
    if (u->opts.xet != NULL && u->opts.xet_scans_follow_hub && o->action != HUB_LFS_STORED)
        hash_pool_keep_xet_scans(u->hashes, o->action == HUB_LFS_XET);
    if (o->action == HUB_LFS_STORED) {
        obj_done(u, i);
        return;
    }
    if (o->action == HUB_LFS_XET) {
        xet_take(u, i);
        return;
    }
    if (ob->pstate == NULL || ob->n != n || ob->chunk_size != (multi ? o->chunk_size : 0)) {
        obj_forget_parts(u, i);
        ob->etags = calloc(n, sizeof(char *));
        ob->pstate = calloc(n, 1);
        if (ob->etags == NULL || ob->pstate == NULL) {
            fail_code(u, UV_ENOMEM, "plan transfers");
            return;
        }
        ob->n = n;
        ob->chunk_size = multi ? o->chunk_size : 0;
        if (!ob->counted) {
            ob->counted = 1;
            u->progress.bytes_to_send += o->size;
        }
        struct journal_obj *jo =
            u->opts.journal != NULL ? journal_obj_find(u->opts.journal, o->oid, o->size) : NULL;
        if (multi && jo != NULL && jo->chunk_size == o->chunk_size && jo->n_parts == n) {
            for (size_t k = 0; k < n; k++) {
                if (jo->etags[k] == NULL || (ob->etags[k] = strdup(jo->etags[k])) == NULL)
                    continue;
                ob->pstate[k] = PART_DONE;
                ob->parts_done++;
                u->progress.parts_resumed++;
                u->progress.bytes_to_send -= part_len(o, k);
            }
            if (ob->parts_done > 0)
                log_info("upload-resume", "repo='%s' oid=%s parts_done=%zu parts=%zu",
                         hub_repo_id(u->hub), o->oid, ob->parts_done, n);
        }
    }
    ob->cursor = 0;
    if (u->opts.journal != NULL)
        journal_obj_planned(u->opts.journal, o->oid, o->size, multi ? o->chunk_size : 0, o->href,
                            o->expires_at, multi ? (const char *const *)o->part_urls : NULL,
                            multi ? n : 0, NULL, NULL);
    if (multi && ob->parts_done == n)
        send_complete(u, i);
}

static void on_sent(void *ctx, int64_t delta)
{
    struct up_req *r = ctx;
    struct upload_progress *p = &r->u->progress;
    if (delta < 0 && (uint64_t)-delta > p->bytes_sent)
        p->bytes_sent = 0;
    else
        p->bytes_sent += (uint64_t)delta;
}

/* A presigned URL the storage refused: expired (403), signature gone stale (401/403), or the
 * multipart session is gone (404). A new batch answer gives fresh ones. */
static int url_refused(const struct ckpt_err *err)
{
    return err->kind != CKPT_ERR_NETWORK &&
           (err->code == 401 || err->code == 403 || err->code == 404);
}

static void on_rebatch(void *ctx, const struct ckpt_err *err)
{
    struct up_req rc;
    struct upload *u = req_done(ctx, &rc);
    struct up_obj *ob = &u->ob[rc.obj];

    ob->rebatching = 0;
    if (u->failed || err != NULL) {
        if (rc.tmp != NULL)
            hub_lfs_object_release(rc.tmp);
        free(rc.tmp);
        if (u->failed)
            maybe_finish_failed(u);
        else
            fail(u, err);
        return;
    }
    hub_lfs_object_release(&u->lo[rc.obj]);
    u->lo[rc.obj] = *rc.tmp;
    free(rc.tmp);
    obj_setup(u, rc.obj);
    if (!u->failed && u->state == UP_PIPE)
        pump_transfers(u);
}

/* Fresh URLs for object i; the parts already finished stay finished (the server keeps them). */
static int rebatch(struct upload *u, size_t i, const struct ckpt_err *why)
{
    struct up_obj *ob = &u->ob[i];
    struct up_req *r;

    if (ob->rebatching)
        return 0;
    if (ob->rebatches >= UPLOAD_REBATCH_MAX) {
        fail(u, why);
        return -1;
    }
    ob->rebatches++;
    ob->gen++;
    u->progress.rebatches++;
    log_info("upload-rebatch", "repo='%s' oid=%s reason='%s'", hub_repo_id(u->hub), u->lo[i].oid,
             why->msg);
    if ((r = req_new(u)) == NULL || (r->tmp = calloc(1, sizeof(*r->tmp))) == NULL) {
        free(r);
        fail_code(u, UV_ENOMEM, "LFS batch");
        return -1;
    }
    r->obj = i;
    memcpy(r->tmp->oid, u->lo[i].oid, sizeof(r->tmp->oid));
    r->tmp->size = u->lo[i].size;
    ob->rebatching = 1;
    int rc = hub_lfs_batch(u->hub, r->tmp, 1, on_rebatch, r, &r->op);
    if (rc < 0) {
        ob->rebatching = 0;
        free(r->tmp);
    }
    return req_started(u, r, rc, "LFS batch");
}

static void on_complete(void *ctx, const struct ckpt_err *err)
{
    struct up_req rc;
    struct upload *u = req_done(ctx, &rc);
    struct up_obj *ob = &u->ob[rc.obj];

    ob->completing = 0;
    if (u->failed) {
        maybe_finish_failed(u);
        return;
    }
    if (ob->done)
        return;
    if (err != NULL) {
        if (url_refused(err) && rc.gen == ob->gen) {
            rebatch(u, rc.obj, err);
            return;
        }
        if (err->kind == CKPT_ERR_REJECTED && err->code == 400) {
            /* the server does not have the parts we named (lost, or replaced): send all again */
            log_warn("upload-parts-refused",
                     "repo='%s' oid=%s reason='%s', sending every part again", hub_repo_id(u->hub),
                     u->lo[rc.obj].oid, err->msg);
            obj_forget_parts(u, rc.obj);
            if (u->opts.journal != NULL)
                journal_obj_planned(u->opts.journal, u->lo[rc.obj].oid, u->lo[rc.obj].size, 0, NULL,
                                    0, NULL, 0, NULL, NULL);
            rebatch(u, rc.obj, err);
            return;
        }
        fail(u, err);
        return;
    }
    obj_done(u, rc.obj);
}

static void send_complete(struct upload *u, size_t i)
{
    struct hub_lfs_object *o = &u->lo[i];
    struct up_obj *ob = &u->ob[i];
    struct up_req *r = req_new(u);

    if (r == NULL) {
        fail_code(u, UV_ENOMEM, "multipart completion");
        return;
    }
    r->obj = i;
    r->gen = ob->gen;
    ob->completing = 1;
    int st = hub_lfs_complete(u->hub, o->href, o->oid, (const char *const *)ob->etags, o->n_parts,
                              on_complete, r, &r->op);
    if (st < 0)
        ob->completing = 0;
    req_started(u, r, st, "multipart completion");
}

/* A part answered after the upload failed or was cancelled (a stop waits for the answers due,
 * http.c): the server has it, so its ETag is journaled and the next start does not send it
 * again. */
static void record_late_part(struct upload *u, const struct up_req *rc, const struct ckpt_err *err,
                             const char *etag)
{
    struct up_obj *ob = &u->ob[rc->obj];

    if (err != NULL || rc->part == 0 || etag == NULL || etag[0] == '\0' ||
        u->opts.journal == NULL || ob->done || rc->gen < ob->layout_gen || ob->pstate == NULL ||
        rc->part > ob->n)
        return;
    journal_part_done(u->opts.journal, u->lo[rc->obj].oid, u->lo[rc->obj].size, rc->part, etag,
                      NULL, NULL);
}

static void on_put(void *ctx, const struct ckpt_err *err, const char *etag)
{
    struct up_req rc;
    struct upload *u = req_done(ctx, &rc);
    u->running_jobs--;
    if (u->failed) {
        record_late_part(u, &rc, err, etag);
        maybe_finish_failed(u);
        return;
    }
    struct hub_lfs_object *o = &u->lo[rc.obj];
    struct up_obj *ob = &u->ob[rc.obj];
    size_t k = rc.part > 0 ? rc.part - 1 : 0;
    if (ob->done || rc.gen < ob->layout_gen || ob->pstate == NULL || k >= ob->n) {
        /* answered for a layout a re-batch replaced, or for an object found stored */
    } else if (err != NULL) {
        ob->pstate[k] = PART_TODO;
        if (k < ob->cursor)
            ob->cursor = k;
        if (!url_refused(err)) {
            fail(u, err);
            return;
        }
        if (rc.gen == ob->gen && rebatch(u, rc.obj, err) < 0)
            return;
    } else if (rc.part == 0) {
        ob->pstate[k] = PART_DONE;
        u->progress.parts_sent++;
        obj_done(u, rc.obj);
    } else {
        if (etag == NULL || etag[0] == '\0') {
            struct ckpt_err e;
            ckpt_err_set(&e, CKPT_ERR_PROTOCOL, -EPROTO,
                         "upload of part %zu of '%s' to '%s': answer has no ETag", rc.part, o->oid,
                         hub_repo_id(u->hub));
            fail(u, &e);
            return;
        }
        free(ob->etags[k]);
        ob->etags[k] = strdup(etag);
        if (ob->etags[k] == NULL) {
            fail_code(u, UV_ENOMEM, "multipart upload");
            return;
        }
        ob->pstate[k] = PART_DONE;
        u->progress.parts_sent++;
        if (u->opts.journal != NULL)
            journal_part_done(u->opts.journal, o->oid, o->size, rc.part, etag, NULL, NULL);
        if (++ob->parts_done == ob->n)
            send_complete(u, rc.obj);
    }
    if (!u->failed && u->state == UP_PIPE)
        pump_transfers(u);
}

static int start_put(struct upload *u, size_t i, size_t k)
{
    struct hub_lfs_object *o = &u->lo[i];
    struct up_obj *ob = &u->ob[i];
    struct up_entry *e = &u->entries[ob->entry];
    int multi = o->action == HUB_LFS_MULTIPART;
    const char *url = multi ? o->part_urls[k] : o->href;
    uint64_t off = multi ? (uint64_t)k * o->chunk_size : 0;
    uint64_t len = multi ? part_len(o, k) : o->size;
    struct up_req *r = req_new(u);

    if (r == NULL) {
        fail_code(u, UV_ENOMEM, "upload");
        return UV_ENOMEM;
    }
    r->obj = i;
    r->part = multi ? k + 1 : 0;
    r->gen = ob->gen;
    int rc = hub_lfs_put(u->hub, url, e->local_path, off, len, on_sent, on_put, r, &r->op);
    if (req_started(u, r, rc, "upload") < 0)
        return rc;
    ob->pstate[k] = PART_RUNNING;
    u->running_jobs++;
    journal_state(u, JOURNAL_UPLOADING);
    return 0;
}

static void pump_transfers(struct upload *u)
{
    for (size_t i = 0; i < u->n_objs; i++) {
        struct up_obj *ob = &u->ob[i];
        if (ob->done || ob->rebatching || ob->completing || ob->pstate == NULL)
            continue;
        while (ob->cursor < ob->n) {
            if (u->failed || u->running_jobs >= u->opts.max_transfers)
                return;
            size_t k = ob->cursor++;
            if (ob->pstate[k] == PART_TODO && start_put(u, i, k) < 0)
                return;
        }
    }
}

/* ---- regular files' content -------------------------------------------------------------- */

/* Pool thread: reads the whole (<= 10 MiB) file and checks it is what we hashed. */
static void read_work(uv_work_t *w)
{
    struct up_read *rd = w->data;
    struct up_entry *e = rd->e;
    int fd = open(e->local_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        rd->status = -errno;
        return;
    }
    struct stat st;
    rd->status = UV_EIO;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != e->size)
        goto out;
    rd->buf = malloc(e->size > 0 ? e->size : 1);
    if (rd->buf == NULL) {
        rd->status = UV_ENOMEM;
        goto out;
    }
    size_t got = 0;
    while (got < e->size) {
        ssize_t n = pread(fd, rd->buf + got, e->size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rd->status = n < 0 ? -errno : UV_EIO;
            goto out;
        }
        got += (size_t)n;
    }
    rd->len = got;
    {
        char hdr[32];
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        char hexs[41];
        int hn = snprintf(hdr, sizeof(hdr), "blob %zu", got);
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        if (c == NULL || EVP_DigestInit_ex(c, EVP_sha1(), NULL) != 1 ||
            EVP_DigestUpdate(c, hdr, (size_t)hn + 1) != 1 ||
            EVP_DigestUpdate(c, rd->buf, got) != 1 || EVP_DigestFinal_ex(c, md, &mdlen) != 1) {
            EVP_MD_CTX_free(c);
            goto out;
        }
        EVP_MD_CTX_free(c);
        for (unsigned i = 0; i < 20; i++)
            snprintf(hexs + 2 * i, 3, "%02x", md[i]);
        if (strcmp(hexs, e->git_sha1) != 0)
            goto out; /* changed since it was hashed */
    }
    rd->status = 0;
out:
    close(fd);
}

static void pump_reads(struct upload *u);

static void after_read(uv_work_t *w, int status)
{
    struct up_read *rd = w->data;
    struct up_entry *e = rd->e;
    struct upload *u = e->u;
    u->outstanding--;
    if (status == 0)
        status = rd->status;
    if (u->failed) {
        free(rd->buf);
        free(rd);
        maybe_finish_failed(u);
        return;
    }
    if (status < 0) {
        free(rd->buf);
        free(rd);
        fail_file(u, e, "read", status,
                  status == UV_EIO ? "changed since it was hashed, or I/O error"
                                   : uv_strerror(status));
        return;
    }
    e->content = rd->buf;
    e->content_len = rd->len;
    free(rd);
    if (++u->reads_done == u->n_regular)
        upload_enter(u, UP_COMMIT);
    else
        pump_reads(u);
}

static void pump_reads(struct upload *u)
{
    size_t running = u->outstanding;
    while (!u->failed && running < UPLOAD_READS_MAX && u->next_read < u->n) {
        struct up_entry *e = &u->entries[u->next_read++];
        if (e->skip || u->pf[e - u->entries].mode != HUB_MODE_REGULAR)
            continue;
        struct up_read *rd = calloc(1, sizeof(*rd));
        if (rd == NULL) {
            fail_code(u, UV_ENOMEM, "read");
            return;
        }
        rd->e = e;
        rd->work.data = rd;
        int r = uv_queue_work(u->loop, &rd->work, read_work, after_read);
        if (r < 0) {
            free(rd);
            fail_code(u, r, "read");
            return;
        }
        u->outstanding++;
        running++;
    }
}

/* ---- commit ------------------------------------------------------------------------------ */

static void on_commit(void *ctx, const struct ckpt_err *err, const char *oid)
{
    struct up_req rc;
    struct upload *u = req_done(ctx, &rc);
    if (u->failed) {
        maybe_finish_failed(u);
        return;
    }
    if (err == NULL) {
        finish(u, NULL, oid);
        return;
    }
    int doubtful = err->kind == CKPT_ERR_NETWORK || err->kind == CKPT_ERR_SERVER ||
                   (err->kind == CKPT_ERR_CONFLICT && err->code == 412);
    if (doubtful && u->commit_attempts < UPLOAD_COMMIT_ATTEMPTS) {
        log_warn("upload_commit_failed", "repo='%s' error='%s', checking the branch head",
                 hub_repo_id(u->hub), err->msg);
        upload_enter(u, UP_VERIFY);
        return;
    }
    fail(u, err);
}

static void send_commit(struct upload *u)
{
    size_t n = 0;
    struct hub_commit_op *ops = calloc(u->n + u->n_del, sizeof(*ops));
    if (ops == NULL) {
        fail_code(u, UV_ENOMEM, "commit");
        return;
    }
    for (size_t k = 0; k < u->n_del; k++) {
        if (u->pf[u->n + k].remote_oid[0] == '\0')
            continue; /* not there: nothing to delete */
        ops[n].kind = HUB_COMMIT_DELETE;
        ops[n++].path = u->del[k];
    }
    for (size_t i = 0; i < u->n; i++) {
        struct up_entry *e = &u->entries[i];
        if (e->skip)
            continue;
        struct hub_commit_op *o = &ops[n++];
        o->path = e->repo_path;
        if (u->pf[i].mode == HUB_MODE_LFS) {
            o->kind = HUB_COMMIT_LFS;
            o->oid = e->sha256;
            o->size = e->size;
        } else {
            o->kind = HUB_COMMIT_FILE;
            o->content = e->content;
            o->content_len = e->content_len;
        }
    }
    u->commit_attempts++;
    struct up_req *r = req_new(u);
    int rc = UV_ENOMEM;
    if (r != NULL)
        rc = hub_commit(u->hub, u->message, "", u->parent[0] != '\0' ? u->parent : NULL, ops, n,
                        on_commit, r, &r->op);
    free(ops);
    if (r == NULL)
        fail_code(u, rc, "commit");
    else
        req_started(u, r, rc, "commit");
}

/* ---- the one transition function -------------------------------------------------------- */

static void upload_enter(struct upload *u, enum upload_state s)
{
    u->state = s;
    log_debug("upload_state", "repo='%s' state=%s", hub_repo_id(u->hub), state_names[s]);
    switch (s) {
    case UP_PIPE:
        for (size_t i = 0; i < u->n; i++) {
            struct up_entry *e = &u->entries[i];
            if (e->known) {
                /* unchanged since an earlier run hashed it; too big to be a regular file */
                u->progress.bytes_total += e->size;
                u->progress.bytes_hashed += e->size;
                u->progress.files_hash_skipped++;
                u->hashed++;
                u->ready[u->n_ready++] = i;
                u->ready_bytes += e->size;
                continue;
            }
            int r = hash_file(u->hashes, e->local_path, on_hashed, e);
            if (r < 0) {
                fail_code(u, r, "hash");
                return;
            }
            u->outstanding++;
        }
        for (size_t k = 0; k < u->n_del; k++)
            u->ready[u->n_ready++] = u->n + k; /* nothing to hash: they go with the first batch */
        if (u->hashed == u->n)
            journal_state(u, JOURNAL_HASHED);
        pipe_preupload(u);
        break;
    case UP_VERIFY:
        for (size_t i = 0; i < u->n; i++) {
            struct hub_preupload_file *p = &u->pf[i];
            struct up_entry *e = &u->entries[i];
            p->path = e->repo_path;
            p->size = e->size;
            p->sample = e->sample;
            p->sample_len = e->sample_len;
        }
        for (size_t k = 0; k < u->n_del; k++) {
            struct hub_preupload_file *p = &u->pf[u->n + k];
            memset(p, 0, sizeof(*p));
            p->path = u->del[k];
        }
        u->pre_off = 0;
        send_preupload(u);
        break;
    case UP_READ:
        if (u->n_regular == 0) {
            upload_enter(u, UP_COMMIT);
            return;
        }
        pump_reads(u);
        break;
    case UP_COMMIT:
        send_commit(u);
        break;
    case UP_DONE:
        break;
    }
}

/* ---- public API -------------------------------------------------------------------------- */

int upload_set_message(struct upload *u, const char *commit_message)
{
    char *copy;

    if (u->commit_attempts > 0 || u->state == UP_COMMIT || u->state == UP_DONE)
        return -EALREADY;
    if ((copy = strdup(commit_message)) == NULL)
        return -ENOMEM;
    free(u->message);
    u->message = copy;
    return 0;
}

int upload_start(struct upload **ret, struct hub *hub, struct hash_pool *hashes,
                 const struct upload_file *files, size_t n, const char *commit_message,
                 const struct upload_opts *opts, upload_done_cb cb, void *ctx)
{
    if (n == 0 || commit_message == NULL || commit_message[0] == '\0' || cb == NULL)
        return UV_EINVAL;
    if (n > UPLOAD_FILES_MAX)
        return UV_E2BIG;
    for (size_t i = 0; i < n; i++) {
        if (files[i].path_in_repo == NULL || files[i].local_path == NULL ||
            files[i].path_in_repo[0] == '\0')
            return UV_EINVAL;
    }
    struct upload *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return UV_ENOMEM;
    u->hub = hub;
    u->hashes = hashes;
    u->loop = hash_pool_loop(hashes);
    if (opts != NULL)
        u->opts = *opts;
    if (u->opts.max_transfers == 0)
        u->opts.max_transfers = 4;
    if (u->opts.no_commit)
        opts = NULL; /* nothing is deleted without a commit */
    u->cb = cb;
    u->ctx = ctx;
    u->n = n;
    u->message = strdup(commit_message);
    u->entries = calloc(n, sizeof(*u->entries));
    u->opts.deletes = NULL; /* copied below */
    u->opts.n_deletes = 0;
    if (opts != NULL && opts->n_deletes > 0) {
        if (opts->n_deletes > UPLOAD_FILES_MAX ||
            (u->del = calloc(opts->n_deletes, sizeof(char *))) == NULL) {
            upload_release(u);
            return opts->n_deletes > UPLOAD_FILES_MAX ? UV_E2BIG : UV_ENOMEM;
        }
        for (size_t k = 0; k < opts->n_deletes; k++) {
            bool uploaded = false;
            for (size_t i = 0; i < n && !uploaded; i++)
                uploaded = strcmp(files[i].path_in_repo, opts->deletes[k]) == 0;
            if (uploaded || opts->deletes[k][0] == '\0')
                continue;
            if ((u->del[u->n_del] = strdup(opts->deletes[k])) == NULL) {
                upload_release(u);
                return UV_ENOMEM;
            }
            u->n_del++;
        }
    }
    u->pf = calloc(n + u->n_del, sizeof(*u->pf));
    u->ready = calloc(n + u->n_del, sizeof(*u->ready));
    u->lo = calloc(n, sizeof(*u->lo));
    u->ob = calloc(n, sizeof(*u->ob));
    for (u->otab_cap = 16; u->otab_cap < 2 * n; u->otab_cap *= 2)
        ;
    u->otab = calloc(u->otab_cap, sizeof(*u->otab));
    if (u->message == NULL || u->entries == NULL || u->pf == NULL || u->ready == NULL ||
        u->lo == NULL || u->ob == NULL || u->otab == NULL)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        struct up_entry *e = &u->entries[i];
        e->u = u;
        e->repo_path = strdup(files[i].path_in_repo);
        e->local_path = strdup(files[i].local_path);
        if (e->repo_path == NULL || e->local_path == NULL)
            goto nomem;
        if (files[i].journal_path != NULL &&
            (e->journal_path = strdup(files[i].journal_path)) == NULL)
            goto nomem;
        if (files[i].sha256 != NULL && strlen(files[i].sha256) == 64 &&
            files[i].size > HASH_GIT_SHA1_MAX) {
            e->known = 1;
            e->size = files[i].size;
            memcpy(e->sha256, files[i].sha256, 65);
        }
    }
    /* a path twice in one commit would make the later one win silently */
    for (size_t i = 0; i < n; i++) {
        for (size_t k = i + 1; k < n && n <= 4096; k++) {
            if (strcmp(u->entries[i].repo_path, u->entries[k].repo_path) == 0) {
                upload_release(u);
                return UV_EINVAL;
            }
        }
    }
    u->progress.files_total = n;
    /* hash_file fails only at once: then nothing is in flight yet and we can still refuse */
    u->starting = 1;
    upload_enter(u, UP_PIPE);
    u->starting = 0;
    if (u->failed && u->outstanding == 0) {
        int code = u->err.code < 0 ? u->err.code : UV_EIO;
        u->finished = 1;
        upload_release(u);
        return code;
    }
    *ret = u;
    return 0;
nomem:
    upload_release(u);
    return UV_ENOMEM;
}

void upload_get_progress(const struct upload *u, struct upload_progress *ret)
{
    struct xet_upload_progress x = u->xet_done_progress;
    *ret = u->progress;
    if (u->xu != NULL) {
        struct xet_upload_progress p;
        xet_upload_get_progress(u->xu, &p);
        xet_add_progress(&x, &p);
    }
    ret->bytes_to_send += x.bytes_new; /* known once each file is planned */
    ret->xet_bytes_new = x.bytes_new;
    ret->xet_bytes_dedup = x.bytes_deduped;
    ret->xorbs_sent = x.xorbs_sent;
    ret->xorbs_resumed = x.xorbs_resumed;
}

int upload_file_result(const struct upload *u, size_t i, struct upload_file_result *ret)
{
    if (!u->succeeded || i >= u->n)
        return -EINVAL;
    const struct up_entry *e = &u->entries[i];
    ret->path_in_repo = e->repo_path;
    ret->sha256 = e->sha256;
    ret->size = e->size;
    ret->ignored = u->pf[i].should_ignore;
    ret->via = e->skip                                  ? "hub"
               : u->ob[e->obj].via_xet                  ? "xet"
               : u->lo[e->obj].action == HUB_LFS_STORED ? "hub"
                                                        : "lfs";
    return 0;
}

void upload_cancel(struct upload *u)
{
    if (u->finished || u->failed)
        return;
    struct ckpt_err e;
    ckpt_err_set(&e, CKPT_ERR_IO, UV_ECANCELED, "upload to '%s' cancelled", hub_repo_id(u->hub));
    fail(u, &e);
}

void upload_free(struct upload *u)
{
    if (u == NULL)
        return;
    if (u->finished) {
        upload_release(u);
        return;
    }
    u->free_when_done = 1;
    upload_cancel(u);
}
