/* bucket_push.c - one checkpoint into a Storage Bucket (see bucket_push.h).
 *
 * outstanding counts what must call back before the push may be freed: hash jobs (they cannot
 * be cancelled), the journal write waited for before the batch, and the batch request in flight. A
 * Xet upload frees itself when dropped (xet_upload_free), so it is never waited for.
 */
#include "bucket_push.h"

#include "bucket.h"
#include "hash.h"
#include "hub.h"
#include "journal.h"
#include "log.h"
#include "xet_upload.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct bp_file {
    struct bucket_push *p;
    char *path; /* in the bucket */
    char *local_path;
    char *journal_path;
    char sha256[65];
    uint64_t size;
    char xet_hash[XET_HASH_HEX_LEN + 1];
};

struct bucket_push {
    struct hub *hub;
    struct hash_pool *hashes;
    struct xet_session *xet;
    struct journal *journal;
    uint64_t journal_id;
    unsigned max_transfers;
    char *work_dir;
    struct bp_file *files;
    size_t n;
    size_t hashed;
    char **deletes;
    size_t n_deletes;
    struct xet_upload *xu;
    struct xet_upload *xu_done; /* finished: freed with the push, never inside its callback */
    struct hub_op *op;
    unsigned outstanding;
    struct upload_progress progress;
    upload_done_cb cb;
    void *ctx;
    struct ckpt_err err;
    bool failed, finished, free_when_done;
    bool starting; /* inside bucket_push_start: a failure reports through its return value */
    bool retire_failed;
};

static void release(struct bucket_push *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->files[i].path);
        free(p->files[i].local_path);
        free(p->files[i].journal_path);
    }
    for (size_t i = 0; i < p->n_deletes; i++)
        free(p->deletes[i]);
    xet_upload_free(p->xu);
    xet_upload_free(p->xu_done);
    free(p->deletes);
    free(p->files);
    free(p->work_dir);
    free(p);
}

static void finish(struct bucket_push *p, const struct ckpt_err *err)
{
    if (p->finished)
        return;
    p->finished = true;
    if (p->free_when_done) {
        release(p);
        return;
    }
    p->cb(p->ctx, err, err == NULL ? BUCKET_COMMIT_MARK : NULL);
}

static void maybe_finish_failed(struct bucket_push *p)
{
    if (p->failed && p->outstanding == 0 && !p->starting)
        finish(p, &p->err);
}

static void fail(struct bucket_push *p, const struct ckpt_err *err)
{
    if (p->failed || p->finished)
        return;
    p->failed = true;
    p->err = *err;
    if (p->op != NULL)
        hub_op_cancel(p->op);
    if (p->xu != NULL) {
        xet_upload_free(p->xu); /* never calls back now */
        p->xu = NULL;
    }
    maybe_finish_failed(p);
}

static void fail_code(struct bucket_push *p, int code, const char *what)
{
    struct ckpt_err e;
    ckpt_err_set(&e, code == UV_ECANCELED ? CKPT_ERR_IO : CKPT_ERR_INPUT, code, "%s: %s", what,
                 uv_strerror(code));
    fail(p, &e);
}

static void journal_state(struct bucket_push *p, enum journal_state s)
{
    if (p->journal != NULL)
        journal_set_state(p->journal, p->journal_id, s, NULL, NULL, NULL);
}

/* ---- retention, once the checkpoint is whole --------------------------------------------- */

static void on_retired(void *ctx, const struct ckpt_err *err)
{
    struct bucket_push *p = ctx;
    p->op = NULL;
    p->outstanding--;
    if (p->failed) {
        maybe_finish_failed(p);
        return;
    }
    /* the checkpoint is in whole either way; the next push names these paths again */
    p->retire_failed = err != NULL;
    if (err != NULL)
        log_warn("bucket-retire-failed",
                 "bucket='%s' files=%zu reason='%s', named again by the next push",
                 hub_repo_id(p->hub), p->n_deletes, err->msg);
    else
        log_info("bucket-retired", "bucket='%s' files=%zu", hub_repo_id(p->hub), p->n_deletes);
    finish(p, NULL);
}

static void send_deletes(struct bucket_push *p)
{
    struct bucket_op *ops = calloc(p->n_deletes ? p->n_deletes : 1, sizeof(*ops));
    int rc;

    if (p->n_deletes == 0) {
        free(ops);
        finish(p, NULL);
        return;
    }
    if (ops == NULL) {
        fail_code(p, UV_ENOMEM, "bucket retention");
        return;
    }
    for (size_t i = 0; i < p->n_deletes; i++)
        ops[i] = (struct bucket_op){.kind = BUCKET_DELETE, .path = p->deletes[i]};
    rc = bucket_batch(p->hub, ops, p->n_deletes, on_retired, p, &p->op);
    free(ops);
    if (rc < 0) {
        fail_code(p, rc, "bucket retention");
        return;
    }
    p->outstanding++;
}

/* ---- the files' batch -------------------------------------------------------------------- */

static void on_added(void *ctx, const struct ckpt_err *err)
{
    struct bucket_push *p = ctx;
    p->op = NULL;
    p->outstanding--;
    if (p->failed) {
        maybe_finish_failed(p);
        return;
    }
    if (err != NULL) {
        fail(p, err);
        return;
    }
    send_deletes(p);
}

static void send_adds(struct bucket_push *p)
{
    struct bucket_op *ops = calloc(p->n, sizeof(*ops));
    int rc;

    if (ops == NULL) {
        fail_code(p, UV_ENOMEM, "bucket batch");
        return;
    }
    for (size_t i = 0; i < p->n; i++)
        ops[i] = (struct bucket_op){
            .kind = BUCKET_ADD, .path = p->files[i].path, .xet_hash = p->files[i].xet_hash};
    rc = bucket_batch(p->hub, ops, p->n, on_added, p, &p->op);
    free(ops);
    if (rc < 0) {
        fail_code(p, rc, "bucket batch");
        return;
    }
    p->outstanding++;
}

/* ---- Xet --------------------------------------------------------------------------------- */

static void on_xet_sent(void *ctx, int64_t delta)
{
    struct upload_progress *pr = &((struct bucket_push *)ctx)->progress;
    if (delta < 0 && (uint64_t)-delta > pr->bytes_sent)
        pr->bytes_sent = 0;
    else
        pr->bytes_sent += (uint64_t)delta;
}

static void take_xet_progress(struct bucket_push *p)
{
    struct xet_upload_progress x;
    if (p->xu == NULL)
        return;
    xet_upload_get_progress(p->xu, &x);
    p->progress.xet_bytes_new = x.bytes_new;
    p->progress.xet_bytes_dedup = x.bytes_deduped;
    p->progress.xorbs_sent = x.xorbs_sent;
    p->progress.xorbs_resumed = x.xorbs_resumed;
}

static void on_journal_synced(void *ctx, int status)
{
    struct bucket_push *p = ctx;
    p->outstanding--;
    if (p->failed) {
        maybe_finish_failed(p);
        return;
    }
    if (status < 0)
        log_warn("bucket-journal-unsynced",
                 "bucket='%s' reason='%s', a restart may send some xorbs again",
                 hub_repo_id(p->hub), uv_strerror(status));
    send_adds(p);
}

static void on_xet_done(void *ctx, const struct ckpt_err *err, const struct xet_upload_result *res,
                        size_t n)
{
    struct bucket_push *p = ctx;
    struct xet_upload_progress x;
    xet_upload_get_progress(p->xu, &x);
    take_xet_progress(p);
    p->xu_done = p->xu;
    p->xu = NULL;
    if (err != NULL) {
        fail(p, err);
        return;
    }
    for (size_t i = 0; i < n && i < p->n; i++)
        memcpy(p->files[i].xet_hash, res[i].xet_hash, sizeof(p->files[i].xet_hash));
    p->progress.files_xet = n;
    log_info("upload_xet_done",
             "repo='%s' files=%zu new_bytes=%" PRIu64 " dedup_bytes=%" PRIu64
             " xorbs_sent=%zu xorbs_resumed=%zu xet_scan_reused=%zu",
             hub_repo_id(p->hub), n, p->progress.xet_bytes_new, p->progress.xet_bytes_dedup,
             p->progress.xorbs_sent, p->progress.xorbs_resumed, x.scans_reused);
    /* the batch goes once every xorb record is on disk: a SIGKILL from then on never makes a
     * restart send a xorb again */
    if (p->journal != NULL && journal_set_state(p->journal, p->journal_id, JOURNAL_UPLOADING, NULL,
                                                on_journal_synced, p) == 0) {
        p->outstanding++;
        return;
    }
    send_adds(p);
}

static void start_xet(struct bucket_push *p)
{
    struct xet_upload_file *files = calloc(p->n, sizeof(*files));
    struct xet_upload_opts xo = {.max_transfers = p->max_transfers,
                                 .journal = p->journal,
                                 .work_dir = p->work_dir,
                                 .hashes = p->hashes};
    int rc;

    if (files == NULL) {
        fail_code(p, UV_ENOMEM, "Xet upload");
        return;
    }
    for (size_t i = 0; i < p->n; i++)
        files[i] = (struct xet_upload_file){.local_path = p->files[i].local_path,
                                            .sha256 = p->files[i].sha256,
                                            .size = p->files[i].size};
    journal_state(p, JOURNAL_UPLOADING);
    rc = xet_upload_start(&p->xu, hash_pool_loop(p->hashes), p->xet, files, p->n, &xo, on_xet_sent,
                          on_xet_done, p);
    free(files);
    if (rc < 0) {
        p->xu = NULL;
        fail_code(p, rc, "Xet upload");
    }
}

/* ---- hashing ----------------------------------------------------------------------------- */

static void file_hashed(struct bucket_push *p)
{
    if (++p->hashed == p->n) {
        journal_state(p, JOURNAL_HASHED);
        start_xet(p);
    }
}

static void on_hashed(void *ctx, int status, const struct hash_result *res)
{
    struct bp_file *f = ctx;
    struct bucket_push *p = f->p;

    p->outstanding--;
    if (p->failed) {
        maybe_finish_failed(p);
        return;
    }
    if (status < 0) {
        struct ckpt_err e;
        char shown[256];
        log_escape(shown, sizeof(shown), f->local_path);
        ckpt_err_set(&e, CKPT_ERR_IO, status, "cannot hash '%s': %s", shown, uv_strerror(status));
        fail(p, &e);
        return;
    }
    f->size = res->size;
    memcpy(f->sha256, res->sha256, sizeof(f->sha256));
    if (p->journal != NULL && f->journal_path != NULL)
        journal_hashed(p->journal, p->journal_id, f->journal_path, res->sha256, res->git_sha1, NULL,
                       NULL);
    p->progress.bytes_hashed += res->size;
    p->progress.bytes_total += res->size;
    file_hashed(p);
}

/* ---- API --------------------------------------------------------------------------------- */

int bucket_push_start(struct bucket_push **ret, struct hub *hub, struct hash_pool *hashes,
                      struct xet_session *xet, const struct upload_file *files, size_t n,
                      const struct bucket_push_opts *opts, upload_done_cb cb, void *ctx)
{
    struct bucket_push *p;
    size_t known = 0;

    if (n == 0 || n > UPLOAD_FILES_MAX || opts == NULL || opts->xet_work_dir == NULL || xet == NULL)
        return UV_EINVAL;
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return UV_ENOMEM;
    p->hub = hub;
    p->hashes = hashes;
    p->xet = xet;
    p->journal = opts->journal;
    p->journal_id = opts->journal_id;
    p->max_transfers = opts->max_transfers;
    p->cb = cb;
    p->ctx = ctx;
    p->n = n;
    p->progress.files_total = n;
    if ((p->work_dir = strdup(opts->xet_work_dir)) == NULL ||
        (p->files = calloc(n, sizeof(*p->files))) == NULL ||
        (p->deletes = calloc(opts->n_deletes ? opts->n_deletes : 1, sizeof(char *))) == NULL)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        struct bp_file *f = &p->files[i];
        f->p = p;
        if ((f->path = strdup(files[i].path_in_repo)) == NULL ||
            (f->local_path = strdup(files[i].local_path)) == NULL ||
            (files[i].journal_path != NULL &&
             (f->journal_path = strdup(files[i].journal_path)) == NULL))
            goto nomem;
        for (size_t k = 0; k < i; k++)
            if (strcmp(p->files[k].path, f->path) == 0) {
                release(p);
                return UV_EINVAL;
            }
    }
    for (size_t i = 0; i < opts->n_deletes; i++) {
        bool added = false;
        for (size_t k = 0; k < n && !added; k++)
            added = strcmp(p->files[k].path, opts->deletes[i]) == 0;
        if (!added && (p->deletes[p->n_deletes++] = strdup(opts->deletes[i])) == NULL)
            goto nomem;
    }
    /* hashes known from the journal (same inode, size and mtime) are taken as they are: the
     * Xet scan reads every byte anyway and fails the push if they no longer match */
    for (size_t i = 0; i < n; i++) {
        if (files[i].sha256 == NULL || strlen(files[i].sha256) != 64)
            continue;
        memcpy(p->files[i].sha256, files[i].sha256, 65);
        p->files[i].size = files[i].size;
        p->progress.files_hash_skipped++;
        p->progress.bytes_total += files[i].size;
        known++;
    }
    p->hashed = known;
    p->starting = true;
    for (size_t i = 0; i < n && !p->failed; i++) {
        if (p->files[i].sha256[0] != '\0')
            continue;
        int rc = hash_file(hashes, p->files[i].local_path, on_hashed, &p->files[i]);
        if (rc < 0)
            fail_code(p, rc, "hash");
        else
            p->outstanding++;
    }
    if (known == n && !p->failed) {
        journal_state(p, JOURNAL_HASHED);
        start_xet(p); /* its callback runs later */
    }
    p->starting = false;
    if (p->failed) {
        int rc = p->err.code < 0 ? p->err.code : UV_EIO;
        /* the caller hears the error now, never the callback; hash jobs may still be out */
        p->free_when_done = true;
        maybe_finish_failed(p);
        return rc;
    }
    *ret = p;
    return 0;
nomem:
    release(p);
    return UV_ENOMEM;
}

void bucket_push_get_progress(const struct bucket_push *p, struct upload_progress *ret)
{
    *ret = p->progress;
    if (p->xu != NULL) {
        struct xet_upload_progress x;
        xet_upload_get_progress(p->xu, &x);
        ret->xet_bytes_new = x.bytes_new;
        ret->xet_bytes_dedup = x.bytes_deduped;
        ret->xorbs_sent = x.xorbs_sent;
        ret->xorbs_resumed = x.xorbs_resumed;
    }
    ret->bytes_to_send = ret->xet_bytes_new;
}

bool bucket_push_retire_failed(const struct bucket_push *p)
{
    return p->retire_failed;
}

void bucket_push_cancel(struct bucket_push *p)
{
    struct ckpt_err e;
    if (p->finished || p->failed)
        return;
    ckpt_err_set(&e, CKPT_ERR_IO, UV_ECANCELED, "bucket push to '%s' cancelled",
                 hub_repo_id(p->hub));
    fail(p, &e);
}

void bucket_push_free(struct bucket_push *p)
{
    if (p == NULL)
        return;
    if (p->finished) {
        release(p);
        return;
    }
    p->free_when_done = true;
    bucket_push_cancel(p);
}
