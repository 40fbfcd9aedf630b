/* upload.c - one set of files, one commit: hash, preupload, LFS batch, PUTs, commit.
 *
 * Owns the per-upload state machine (upload_enter makes every transition), dedup of identical
 * LFS objects, the transfer slots, and the commit retry rule below. Loop thread only; hashing and
 * reading regular files' content run on the libuv pool.
 *
 * Commit retries: the commit always carries parentCommit (the head seen by preupload), so a
 * commit can never land twice. After a transport error, a 5xx or a 412, we preupload again: if
 * every file's remote oid now equals ours, the content is on the branch and we report success
 * with that head; otherwise we commit again on the new head, at most UPLOAD_COMMIT_ATTEMPTS times.
 */
#include "upload.h"

#include "hash.h"
#include "hub.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <uv.h>

#define UPLOAD_READS_MAX 2

enum upload_state {
    UP_HASH,
    UP_PREUPLOAD,
    UP_BATCH,
    UP_TRANSFER,
    UP_READ,
    UP_COMMIT,
    UP_VERIFY,
    UP_DONE,
};

static const char *const state_names[] = {"hash", "preupload", "batch",  "transfer",
                                          "read", "commit",    "verify", "done"};

struct up_entry {
    struct upload *u;
    char *repo_path;
    char *local_path;
    uint64_t size;
    char sha256[65];
    char git_sha1[41];
    unsigned char sample[HASH_SAMPLE_MAX];
    size_t sample_len;
    int skip; /* same content on the Hub, or ignored */
    size_t obj;
    char *content;
    size_t content_len;
};

struct up_obj {
    size_t entry; /* the first entry with this content: its file is sent */
    char **etags;
    size_t parts_done;
    int done;
};

struct up_job {
    size_t obj;
    size_t part; /* 0: basic PUT; n: multipart part n */
};

/* One hub operation in flight; the ctx of its callback. */
struct up_req {
    struct upload *u;
    struct hub_op *op;
    struct up_req *prev, *next;
    size_t obj, part, off, n;
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
    struct hub_preupload_file *pf;
    size_t pre_off;

    struct hub_lfs_object *lo;
    struct up_obj *ob;
    size_t n_objs;
    size_t batch_off;

    struct up_job *jobs;
    size_t n_jobs, next_job, running_jobs;
    size_t objs_done;

    size_t next_read, reads_done;
    size_t n_regular;

    char head[41];
    char parent[41];
    unsigned commit_attempts;

    size_t outstanding; /* hashes, reads and hub ops whose callbacks are still due */
    struct up_req *reqs;
    int failed;
    int finished;
    int free_when_done;
    int starting; /* inside upload_start: a failure is returned, never called back */
    struct ckpt_err err;
    struct upload_progress progress;
};

static void upload_enter(struct upload *u, enum upload_state s);
static void send_preupload(struct upload *u);

/* ---- completion and failure -------------------------------------------------------------- */

static void upload_release(struct upload *u)
{
    for (size_t i = 0; i < u->n; i++) {
        free(u->entries[i].repo_path);
        free(u->entries[i].local_path);
        free(u->entries[i].content);
    }
    for (size_t i = 0; i < u->n_objs; i++) {
        if (u->ob[i].etags != NULL) {
            for (size_t k = 0; k < u->lo[i].n_parts; k++)
                free(u->ob[i].etags[k]);
            free(u->ob[i].etags);
        }
        hub_lfs_object_release(&u->lo[i]);
    }
    free(u->entries);
    free(u->pf);
    free(u->lo);
    free(u->ob);
    free(u->jobs);
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
        struct ckpt_err err;
        char shown[256];
        log_escape(shown, sizeof(shown), e->local_path);
        ckpt_err_set(&err, CKPT_ERR_IO, status, "cannot hash '%s': %s", shown, uv_strerror(status));
        fail(u, &err);
        return;
    }
    e->size = res->size;
    memcpy(e->sha256, res->sha256, sizeof(e->sha256));
    memcpy(e->git_sha1, res->git_sha1, sizeof(e->git_sha1));
    memcpy(e->sample, res->sample, res->sample_len);
    e->sample_len = res->sample_len;
    u->progress.bytes_hashed += res->size;
    u->progress.bytes_total += res->size;
    if (++u->hashed == u->n)
        upload_enter(u, UP_PREUPLOAD);
}

/* ---- preupload (also the verify step after a doubtful commit) ---------------------------- */

static void on_preupload(void *ctx, const struct ckpt_err *err, const char *head)
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
    snprintf(u->head, sizeof(u->head), "%s", head);
    u->pre_off = rc.off + rc.n;
    if (u->pre_off < u->n) {
        send_preupload(u);
        return;
    }
    if (u->state == UP_VERIFY) {
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
    upload_enter(u, UP_BATCH);
}

static void send_preupload(struct upload *u)
{
    struct up_req *r = req_new(u);
    if (r == NULL) {
        fail_code(u, UV_ENOMEM, "preupload");
        return;
    }
    r->off = u->pre_off;
    r->n = u->n - u->pre_off < HUB_PREUPLOAD_MAX ? u->n - u->pre_off : HUB_PREUPLOAD_MAX;
    int rc = hub_preupload(u->hub, u->pf + r->off, r->n, on_preupload, r, &r->op);
    req_started(u, r, rc, "preupload");
}

static int cmp_obj_idx(const void *a, const void *b, void *arg)
{
    const struct up_entry *entries = arg;
    return strcmp(entries[*(const size_t *)a].sha256, entries[*(const size_t *)b].sha256);
}

/* After preupload: drop what the Hub has, group identical LFS content into objects. Returns 1
 * when there is something to commit, 0 when not, -1 after failing the upload. */
static int classify(struct upload *u)
{
    size_t changes = 0, n_lfs = 0;
    uint64_t regular_bytes = 0;
    for (size_t i = 0; i < u->n; i++) {
        struct up_entry *e = &u->entries[i];
        struct hub_preupload_file *p = &u->pf[i];
        e->skip = 0;
        if (p->should_ignore) {
            e->skip = 1;
            u->progress.files_ignored++;
            continue;
        }
        if (p->mode == HUB_MODE_LFS) {
            if (strcmp(p->remote_oid, e->sha256) == 0) {
                e->skip = 1;
                u->progress.files_skipped++;
                continue;
            }
            n_lfs++;
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
            regular_bytes += e->size;
            u->n_regular++;
        }
        changes++;
    }
    if (regular_bytes > UPLOAD_REGULAR_BYTES_MAX) {
        struct ckpt_err err;
        ckpt_err_set(&err, CKPT_ERR_INPUT, -E2BIG,
                     "%" PRIu64 " bytes of regular (non-LFS) files exceed the %u bytes one commit "
                     "may carry",
                     regular_bytes, UPLOAD_REGULAR_BYTES_MAX);
        fail(u, &err);
        return -1;
    }
    if (changes == 0)
        return 0;
    if (n_lfs == 0)
        return 1;

    size_t *idx = malloc(n_lfs * sizeof(*idx));
    u->lo = calloc(n_lfs, sizeof(*u->lo));
    u->ob = calloc(n_lfs, sizeof(*u->ob));
    if (idx == NULL || u->lo == NULL || u->ob == NULL) {
        free(idx);
        fail_code(u, UV_ENOMEM, "group LFS objects");
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < u->n; i++) {
        if (!u->entries[i].skip && u->pf[i].mode == HUB_MODE_LFS)
            idx[k++] = i;
    }
    qsort_r(idx, n_lfs, sizeof(*idx), cmp_obj_idx, u->entries);
    for (size_t i = 0; i < n_lfs; i++) {
        struct up_entry *e = &u->entries[idx[i]];
        if (u->n_objs == 0 || strcmp(u->lo[u->n_objs - 1].oid, e->sha256) != 0) {
            struct hub_lfs_object *o = &u->lo[u->n_objs];
            memcpy(o->oid, e->sha256, sizeof(o->oid));
            o->size = e->size;
            u->ob[u->n_objs].entry = idx[i];
            u->n_objs++;
        }
        e->obj = u->n_objs - 1;
    }
    free(idx);
    return 1;
}

/* ---- LFS batch and transfers ------------------------------------------------------------- */

static void send_batch(struct upload *u);
static void pump_transfers(struct upload *u);

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
    u->batch_off = rc.off + rc.n;
    if (u->batch_off < u->n_objs) {
        send_batch(u);
        return;
    }
    upload_enter(u, UP_TRANSFER);
}

static void send_batch(struct upload *u)
{
    struct up_req *r = req_new(u);
    if (r == NULL) {
        fail_code(u, UV_ENOMEM, "LFS batch");
        return;
    }
    r->off = u->batch_off;
    r->n = u->n_objs - r->off < HUB_BATCH_MAX ? u->n_objs - r->off : HUB_BATCH_MAX;
    int rc = hub_lfs_batch(u->hub, u->lo + r->off, r->n, on_batch, r, &r->op);
    req_started(u, r, rc, "LFS batch");
}

static void obj_done(struct upload *u, size_t i)
{
    u->ob[i].done = 1;
    if (++u->objs_done == u->n_objs)
        upload_enter(u, UP_READ);
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

static void on_complete(void *ctx, const struct ckpt_err *err)
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
    obj_done(u, rc.obj);
}

static void on_put(void *ctx, const struct ckpt_err *err, const char *etag)
{
    struct up_req rc;
    struct upload *u = req_done(ctx, &rc);
    u->running_jobs--;
    if (u->failed) {
        maybe_finish_failed(u);
        return;
    }
    if (err != NULL) {
        fail(u, err);
        return;
    }
    struct hub_lfs_object *o = &u->lo[rc.obj];
    struct up_obj *ob = &u->ob[rc.obj];
    if (rc.part == 0) {
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
        ob->etags[rc.part - 1] = strdup(etag);
        if (ob->etags[rc.part - 1] == NULL) {
            fail_code(u, UV_ENOMEM, "multipart upload");
            return;
        }
        if (++ob->parts_done == o->n_parts) {
            struct up_req *r = req_new(u);
            if (r == NULL) {
                fail_code(u, UV_ENOMEM, "multipart completion");
                return;
            }
            r->obj = rc.obj;
            int st = hub_lfs_complete(u->hub, o->href, o->oid, (const char *const *)ob->etags,
                                      o->n_parts, on_complete, r, &r->op);
            if (req_started(u, r, st, "multipart completion") < 0)
                return;
        }
    }
    if (!u->failed && u->state == UP_TRANSFER)
        pump_transfers(u);
}

static void pump_transfers(struct upload *u)
{
    while (!u->failed && u->running_jobs < u->opts.max_transfers && u->next_job < u->n_jobs) {
        struct up_job *j = &u->jobs[u->next_job++];
        struct hub_lfs_object *o = &u->lo[j->obj];
        struct up_entry *e = &u->entries[u->ob[j->obj].entry];
        const char *url = o->href;
        uint64_t off = 0, len = o->size;
        if (j->part > 0) {
            url = o->part_urls[j->part - 1];
            off = (uint64_t)(j->part - 1) * o->chunk_size;
            len = o->size - off < o->chunk_size ? o->size - off : o->chunk_size;
        }
        struct up_req *r = req_new(u);
        if (r == NULL) {
            fail_code(u, UV_ENOMEM, "upload");
            return;
        }
        r->obj = j->obj;
        r->part = j->part;
        int rc = hub_lfs_put(u->hub, url, e->local_path, off, len, on_sent, on_put, r, &r->op);
        if (req_started(u, r, rc, "upload") < 0)
            return;
        u->running_jobs++;
    }
}

static int plan_transfers(struct upload *u)
{
    size_t n = 0;
    for (size_t i = 0; i < u->n_objs; i++)
        n += u->lo[i].action == HUB_LFS_MULTIPART ? u->lo[i].n_parts
             : u->lo[i].action == HUB_LFS_BASIC   ? 1
                                                  : 0;
    u->jobs = calloc(n > 0 ? n : 1, sizeof(*u->jobs));
    if (u->jobs == NULL)
        return UV_ENOMEM;
    for (size_t i = 0; i < u->n_objs; i++) {
        struct hub_lfs_object *o = &u->lo[i];
        if (o->action == HUB_LFS_BASIC) {
            u->jobs[u->n_jobs++] = (struct up_job){.obj = i, .part = 0};
            u->progress.bytes_to_send += o->size;
        } else if (o->action == HUB_LFS_MULTIPART) {
            u->ob[i].etags = calloc(o->n_parts, sizeof(char *));
            if (u->ob[i].etags == NULL)
                return UV_ENOMEM;
            for (size_t k = 1; k <= o->n_parts; k++)
                u->jobs[u->n_jobs++] = (struct up_job){.obj = i, .part = k};
            u->progress.bytes_to_send += o->size;
        }
    }
    return 0;
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
        struct ckpt_err err;
        char shown[256];
        log_escape(shown, sizeof(shown), e->local_path);
        ckpt_err_set(&err, CKPT_ERR_IO, status, "cannot read '%s': %s", shown,
                     status == UV_EIO ? "changed since it was hashed, or I/O error"
                                      : uv_strerror(status));
        free(rd->buf);
        free(rd);
        fail(u, &err);
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
    struct hub_commit_op *ops = calloc(u->n, sizeof(*ops));
    if (ops == NULL) {
        fail_code(u, UV_ENOMEM, "commit");
        return;
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
    case UP_HASH:
        for (size_t i = 0; i < u->n; i++) {
            int r = hash_file(u->hashes, u->entries[i].local_path, on_hashed, &u->entries[i]);
            if (r < 0) {
                fail_code(u, r, "hash");
                return;
            }
            u->outstanding++;
        }
        break;
    case UP_PREUPLOAD:
    case UP_VERIFY:
        for (size_t i = 0; i < u->n; i++) {
            struct hub_preupload_file *p = &u->pf[i];
            struct up_entry *e = &u->entries[i];
            p->path = e->repo_path;
            p->size = e->size;
            p->sample = e->sample;
            p->sample_len = e->sample_len;
        }
        u->pre_off = 0;
        send_preupload(u);
        break;
    case UP_BATCH: {
        int r = classify(u);
        if (r < 0)
            return;
        snprintf(u->parent, sizeof(u->parent), "%s", u->head);
        if (r == 0) {
            log_debug("upload_unchanged", "repo='%s' head=%s", hub_repo_id(u->hub), u->head);
            finish(u, NULL, u->head);
            return;
        }
        if (u->n_objs == 0) {
            upload_enter(u, UP_READ);
            return;
        }
        u->batch_off = 0;
        send_batch(u);
        break;
    }
    case UP_TRANSFER: {
        int r = plan_transfers(u);
        if (r < 0) {
            fail_code(u, r, "plan transfers");
            return;
        }
        for (size_t i = 0; i < u->n_objs; i++) {
            if (u->lo[i].action == HUB_LFS_STORED)
                obj_done(u, i); /* the last one moves us on */
        }
        if (u->state == UP_TRANSFER)
            pump_transfers(u);
        break;
    }
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
    u->cb = cb;
    u->ctx = ctx;
    u->n = n;
    u->message = strdup(commit_message);
    u->entries = calloc(n, sizeof(*u->entries));
    u->pf = calloc(n, sizeof(*u->pf));
    if (u->message == NULL || u->entries == NULL || u->pf == NULL)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        struct up_entry *e = &u->entries[i];
        e->u = u;
        e->repo_path = strdup(files[i].path_in_repo);
        e->local_path = strdup(files[i].local_path);
        if (e->repo_path == NULL || e->local_path == NULL)
            goto nomem;
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
    upload_enter(u, UP_HASH);
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
    *ret = u->progress;
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
