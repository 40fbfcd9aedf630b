/* queue.c - one push at a time, in the order checkpoints were sealed, journaled at each step.
 *
 * An item's path: sealed (journaled) -> waiting -> pinning (its pins settle) -> stat (size,
 * mtime, inode of each file on the pool; journaled) -> uploading (upload.c journals hashes,
 * parts, objects) -> committed (journaled, then reported) -> pins released (journaled).
 * At start the journal is read and the pins directory listed; whatever an earlier run left
 * unfinished goes first, in its save order.
 *
 * Copies at seal run beside that path: a sealed item whose files could not be hard-linked is
 * copied into its pins while it waits, so rotation cannot take it before its turn to push.
 * One such copy runs at a time (the thread pool also serves the journal, hashing and upload
 * reads), in queue order, and with staging_max set a copy starts only while the measured staging
 * bytes are within it; an item that pump would supersede is not copied. The push never reads a file
 * still being copied: the pin module runs an id's requests in order, and the push's pin_when_idle
 * comes after the copy; a copy still waiting when its item's turn comes runs then, on the push
 * path, whatever staging_max says.
 */
#include "queue.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bucket_push.h"
#include "commit_split.h"
#include "coord_client.h"
#include "coord_proto.h"
#include "detect.h"
#include "hub.h"
#include "journal.h"
#include "log.h"
#include "pin.h"
#include "strategy.h"

#define RECOVER_MAX_DIRS 65536
#define QUEUE_NOTES_MAX 256
#define QUEUE_RETRY_BOUNDED 5 /* attempts for protocol and local I/O errors */
#define QUEUE_BUDGET_RING 4096
#define QUEUE_BUDGET_WINDOW_MS (3600u * 1000)
#define RECOVER_MAX_FILES 100000

struct item {
    struct item *next;
    struct queue *queue;
    uint64_t id;
    char *name;
    char *layout;
    char *source_dir; /* NULL: read from the pins */
    int64_t step;
    char **files;
    size_t file_count;
    enum queue_state state;
    enum queue_copy copy;
    bool copy_checking;    /* its pins are being asked whether anything needs a copy */
    bool copy_wait_logged; /* its copy-waiting line was written */
    size_t copy_files;     /* files its copy at seal had to copy */
    bool journaled;        /* its sealed record is durable */
    bool sealing;          /* its sealed record is being written */
    bool deferred;         /* found again by a scan: journaled only if it is not a re-push */
    size_t part_off;       /* very many files: the first plan item of the commit in flight */
    size_t part_n;
    size_t part_no;    /* of that commit, from 1 */
    bool part_waiting; /* its next commit waits for the commit budget */
    bool lost;         /* every file was gone before it could be pinned: a failure */
    bool recovered;
    unsigned attempts;
    uint64_t sealed_at_ms;
    uint64_t upload_started_ms;
    uint64_t finished_ms;
    struct strategy_plan plan;
    char *title; /* a client's commit title (queue_set_title): replaces the plan's message */
    char **local_paths;
    struct journal_file *stats; /* plan.count, after the stat step */
    bool *present;
    struct upload *upload;
    struct bucket_push *bpush; /* instead of upload: to the bucket (--bucket) */
    bool reporting; /* several nodes: its objects are up, the coordinator's answer is due */
    bool reported;  /* that answer came: on_uploaded takes it as the upload's end */
    struct upload_progress progress; /* kept after the upload is freed */
    char commit[41];
    char *error;
    char *refusal; /* queue_add_refused: why it cannot be pushed; failed at its turn */
};

/* A pin request made for a waiting item that may have moved on (pushed, released, freed from
 * the history) by the time it is answered: the answer looks the item up again by id. Listed in
 * the queue, which frees what the pin module dropped unanswered when it closed. */
struct pin_call {
    struct pin_call *next;
    struct queue *q;
    uint64_t id;
    uint64_t started_ms;
};

struct queue {
    struct queue_deps deps;
    queue_event_cb cb;
    void *ctx;
    struct journal *journal;
    char *staging; /* the pins' parent: <root>/.ckptpush */
    struct item *head;
    struct item *tail;
    size_t waiting;
    struct item *active;
    struct item *history[QUEUE_HISTORY]; /* ring, newest at history_next - 1 */
    size_t history_next;
    uv_timer_t retry_timer;
    uv_timer_t budget_timer;
    bool staging_scanning, staging_rescan, staging_over;
    bool staging_stale;     /* a copy ended after the last measure began */
    uint64_t staging_bytes; /* held only by pins: originals rotated away, or copies */
    struct pin_call *pin_calls;
    bool seal_copying; /* a copy at seal is running */
    size_t staging_pins;
    uint64_t commit_ms[QUEUE_BUDGET_RING]; /* times of the last commits, a ring */
    size_t n_commits;
    uint64_t last_detected;
    struct note {
        uint64_t id;
        char *name, *layout;
    } notes[QUEUE_NOTES_MAX]; /* detected before the journal was read */
    size_t n_notes;
    bool recovered;    /* journal read and pins listed: pushing may start */
    bool branch_ready; /* --revision: the branch exists */
    bool ready;
    bool paused;
    bool stopped;
    unsigned committed;
    unsigned failed;
    /* --bucket --keep-last: folders retired before are named again (deleted if still there)
     * only by the first push of this process (a crash may have come between a checkpoint's
     * batch and its retention batch) and after a retention batch failed; otherwise each push
     * names only what it retires now, so its batch stays small however long the run */
    bool bucket_retire_again;
};

static void pump(struct queue *q);
static void stat_files(struct queue *q, struct item *it);
static void start_upload(struct queue *q, struct item *it);
static void copy_next(struct queue *q);

const char *queue_state_name(enum queue_state state)
{
    static const char *const names[] = {
        [QUEUE_WAITING] = "waiting",     [QUEUE_PINNING] = "pinning",
        [QUEUE_UPLOADING] = "uploading", [QUEUE_COMMITTED] = "committed",
        [QUEUE_FAILED] = "failed",       [QUEUE_SKIPPED] = "skipped",
    };
    return (unsigned)state < sizeof(names) / sizeof(names[0]) ? names[state] : "unknown";
}

const char *queue_copy_name(enum queue_copy copy)
{
    static const char *const names[] = {
        [QUEUE_COPY_NONE] = "none",
        [QUEUE_COPY_WAITING] = "waiting",
        [QUEUE_COPY_RUNNING] = "copying",
        [QUEUE_COPY_DONE] = "copied",
    };
    return (unsigned)copy < sizeof(names) / sizeof(names[0]) ? names[copy] : "unknown";
}

static uint64_t now_ms(const struct queue *q)
{
    uv_update_time(q->deps.loop);
    return uv_now(q->deps.loop);
}

static void plan_release(struct item *it)
{
    if (it->local_paths != NULL)
        for (size_t i = 0; i < it->plan.count; i++)
            free(it->local_paths[i]);
    free(it->local_paths);
    it->local_paths = NULL;
    free(it->stats);
    it->stats = NULL;
    free(it->present);
    it->present = NULL;
    strategy_plan_release(&it->plan);
}

/* Keeps the progress of the push in flight (to the repo or the bucket) and frees it. */
static void drop_push(struct item *it)
{
    if (it->upload != NULL) {
        upload_get_progress(it->upload, &it->progress);
        upload_free(it->upload);
        it->upload = NULL;
    }
    if (it->bpush != NULL) {
        bucket_push_get_progress(it->bpush, &it->progress);
        bucket_push_free(it->bpush);
        it->bpush = NULL;
    }
}

/* --bucket: intermediate checkpoints go to the bucket; the final model goes to the repo, or to
 * the bucket when there is no repo. */
static bool to_bucket(const struct queue *q, const struct item *it)
{
    return q->deps.bucket_hub != NULL &&
           (strcmp(it->layout, "model-root") != 0 || q->deps.cfg->repo_id == NULL);
}

static void item_free(struct item *it)
{
    if (it == NULL)
        return;
    for (size_t i = 0; i < it->file_count; i++)
        free(it->files[i]);
    plan_release(it);
    upload_free(it->upload);
    bucket_push_free(it->bpush);
    free(it->files);
    free(it->name);
    free(it->layout);
    free(it->source_dir);
    free(it->title);
    free(it->error);
    free(it->refusal);
    free(it);
}

static void view_of(const struct queue *q, const struct item *it, struct queue_item_view *v)
{
    uint64_t end = it->finished_ms ? it->finished_ms : now_ms(q);

    memset(v, 0, sizeof(*v));
    v->id = it->id;
    v->name = it->name;
    v->layout = it->layout;
    v->state = it->state;
    v->copy = it->copy;
    v->step = it->step;
    v->files = it->file_count;
    v->message = it->plan.message ? it->plan.message : "";
    v->commit = it->commit;
    v->error = it->error ? it->error : "";
    v->recovered = it->recovered;
    v->attempts = it->attempts;
    if (it->upload != NULL)
        upload_get_progress(it->upload, &v->progress);
    else if (it->bpush != NULL)
        bucket_push_get_progress(it->bpush, &v->progress);
    else
        v->progress = it->progress;
    v->seconds = (double)(end - it->sealed_at_ms) / 1000.0;
    if (it->state == QUEUE_UPLOADING && end > it->upload_started_ms)
        v->rate_bps =
            (double)v->progress.bytes_sent * 1000.0 / (double)(end - it->upload_started_ms);
}

static void set_state(struct queue *q, struct item *it, enum queue_state state)
{
    struct queue_item_view view;

    it->state = state;
    log_debug("push-state", "ckpt='%s' state=%s", it->name, queue_state_name(state));
    view_of(q, it, &view);
    if (q->cb != NULL)
        q->cb(q->ctx, &view);
}

static bool journaled(const struct item *it)
{
    return it->source_dir == NULL;
}

/* Journal writes whose failure is logged but never stops a push: the pins are ground truth. */
static void on_journal_written(void *ctx, int status)
{
    (void)ctx;
    (void)status; /* journal.c logs the first failure */
}

/* ---- staging space: what only the pins keep alive --------------------------------------- */

struct staging_job {
    uv_work_t work;
    struct queue *q;
    char *pins;
    uint64_t bytes;
    size_t dirs;
};

static struct staging_job *staging_walking; /* nftw has no context: one walk at a time */
static uv_mutex_t staging_lock;
static uv_once_t staging_once = UV_ONCE_INIT;

static void staging_lock_init(void)
{
    uv_mutex_init(&staging_lock);
}

static int staging_visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)path;
    if (type == FTW_D && ftw->level == 1)
        staging_walking->dirs++;
    /* a file with one link left is kept only by its pin: the space is ours */
    if (type == FTW_F && S_ISREG(st->st_mode) && st->st_nlink == 1)
        staging_walking->bytes += (uint64_t)st->st_blocks * 512;
    return 0;
}

static void staging_work(uv_work_t *w)
{
    struct staging_job *job = w->data;

    uv_once(&staging_once, staging_lock_init);
    uv_mutex_lock(&staging_lock);
    staging_walking = job;
    nftw(job->pins, staging_visit, 16, FTW_PHYS);
    staging_walking = NULL;
    uv_mutex_unlock(&staging_lock);
}

static void staging_scan(struct queue *q);

static void after_staging(uv_work_t *w, int status)
{
    struct staging_job *job = w->data;
    struct queue *q = job->q;
    uint64_t max = q->deps.cfg->staging_max;

    (void)status;
    q->staging_scanning = false;
    if (job->bytes != q->staging_bytes || job->dirs != q->staging_pins)
        log_debug("staging", "dir='%s' pins=%zu bytes_held=%" PRIu64 " max=%llu", job->pins,
                  job->dirs, job->bytes, (unsigned long long)max);
    q->staging_bytes = job->bytes;
    q->staging_pins = job->dirs;
    if (max > 0 && job->bytes > max && !q->staging_over)
        log_warn("staging-full",
                 "dir='%s' bytes_held=%" PRIu64 " max=%llu pins=%zu reason='what only the pins "
                 "hold (copies, checkpoints rotated away) is kept until pushed: nothing pinned "
                 "is dropped; new copies wait until pushes free space'",
                 job->pins, job->bytes, (unsigned long long)max, job->dirs);
    else if (max > 0 && job->bytes <= max && q->staging_over)
        log_info("staging-ok", "bytes_held=%" PRIu64 " max=%llu", job->bytes,
                 (unsigned long long)max);
    q->staging_over = max > 0 && job->bytes > max;
    free(job->pins);
    free(job);
    if (q->staging_rescan && !q->stopped) {
        /* something changed during this walk: only the next one measures it */
        q->staging_rescan = false;
        staging_scan(q);
        return;
    }
    q->staging_stale = false;
    copy_next(q);
}

/* Measures the pins on the pool; one walk at a time, one more queued at most. */
static void staging_scan(struct queue *q)
{
    struct staging_job *job;

    if (q->staging_scanning) {
        q->staging_rescan = true;
        return;
    }
    if ((job = calloc(1, sizeof(*job))) == NULL ||
        asprintf(&job->pins, "%s/pins", q->staging) < 0) {
        free(job);
        return;
    }
    job->q = q;
    job->work.data = job;
    if (uv_queue_work(q->deps.loop, &job->work, staging_work, after_staging) < 0) {
        free(job->pins);
        free(job);
        return;
    }
    q->staging_scanning = true;
}

uint64_t queue_staging_bytes(const struct queue *q)
{
    return q->staging_bytes;
}

/* Strategy checkpoint: a later step of the same layout among the items from `later` on makes
 * it stale (last-checkpoint/ would be overwritten at once); pump releases it unpushed. */
static struct item *superseded_by(const struct queue *q, const struct item *it, struct item *later)
{
    if (q->deps.cfg->strategy != STRATEGY_CHECKPOINT || strcmp(it->layout, "model-root") == 0 ||
        it->source_dir != NULL)
        return NULL;
    for (; later != NULL; later = later->next)
        if (strcmp(later->layout, it->layout) == 0 && later->source_dir == NULL &&
            !(later->step >= 0 && it->step >= 0 && later->step <= it->step))
            return later;
    return NULL;
}

/* ---- copies at seal: pins a hard link could not make, copied while their item waits ------- */

static struct pin_call *pin_call_new(struct queue *q, uint64_t id)
{
    struct pin_call *call = calloc(1, sizeof(*call));

    if (call == NULL)
        return NULL;
    call->q = q;
    call->id = id;
    call->started_ms = now_ms(q);
    call->next = q->pin_calls;
    q->pin_calls = call;
    return call;
}

static void pin_call_free(struct pin_call *call)
{
    struct queue *q = call->q;

    for (struct pin_call **pp = &q->pin_calls; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == call) {
            *pp = call->next;
            break;
        }
    }
    free(call);
}

static struct item *waiting_item(const struct queue *q, uint64_t id)
{
    for (struct item *it = q->head; it != NULL; it = it->next)
        if (it->id == id)
            return it;
    return NULL;
}

size_t queue_copies_waiting(const struct queue *q)
{
    size_t n = 0;

    for (const struct item *it = q->head; it != NULL; it = it->next)
        n += it->copy == QUEUE_COPY_WAITING;
    return n;
}

/* The copy made new bytes that only the pins hold: measure before the next copy starts. */
static void copy_ended(struct queue *q)
{
    if (q->stopped)
        return;
    q->staging_stale = true;
    staging_scan(q);
}

static void on_seal_copied(void *ctx, int status)
{
    struct pin_call *call = ctx;
    struct queue *q = call->q;
    uint64_t id = call->id;
    double seconds = (double)(now_ms(q) - call->started_ms) / 1000.0;
    struct item *it = q->active != NULL && q->active->id == id ? q->active : waiting_item(q, id);

    pin_call_free(call);
    q->seal_copying = false;
    if (status < 0)
        /* the files stay on the list: the push copies them again when its turn comes */
        log_warn("pin-copy-failed", "ckpt='%s' pin=%" PRIu64 " reason='%s'",
                 it != NULL ? it->name : "", id, strerror(-status));
    else
        log_info("pins-copied", "ckpt='%s' pin=%" PRIu64 " files=%zu at=seal seconds=%.3f",
                 it != NULL ? it->name : "", id, it != NULL ? it->copy_files : 0, seconds);
    if (it != NULL)
        it->copy = QUEUE_COPY_DONE;
    copy_ended(q);
    copy_next(q);
}

/* A waiting copy of an item that will never be pushed is dropped (its pins are released
 * uncopied when pump reaches it). Items leave the line only at its head, so a later step that
 * supersedes it now still does then. */
static bool copy_still_needed(struct queue *q, struct item *it)
{
    struct item *later = superseded_by(q, it, it->next);

    if (later == NULL)
        return true;
    log_debug("copy-skipped", "ckpt='%s' by='%s' reason='superseded: never pushed'", it->name,
              later->name);
    it->copy = QUEUE_COPY_NONE;
    return false;
}

/* Starts the copy of the first waiting item (queue order) whose copy waits, unless one runs or
 * staging_max is reached; then every item left waiting says so, once. An earlier item not yet
 * known to need a copy holds the later ones back: copies go strictly in push order. */
static void copy_next(struct queue *q)
{
    uint64_t max = q->deps.cfg->staging_max;
    struct item *it;

    while (!q->seal_copying && !q->stopped) {
        for (it = q->head; it != NULL && it->copy != QUEUE_COPY_WAITING; it = it->next)
            if (it->copy_checking)
                return; /* on_seal_pins_idle comes back here */
        if (it == NULL)
            return;
        if (!copy_still_needed(q, it))
            continue;
        if (max > 0 && q->staging_stale) {
            staging_scan(q); /* after_staging comes back here */
            return;
        }
        if (max > 0 && q->staging_bytes > max) {
            for (; it != NULL; it = it->next) {
                if (it->copy != QUEUE_COPY_WAITING || it->copy_wait_logged ||
                    !copy_still_needed(q, it))
                    continue;
                it->copy_wait_logged = true;
                log_warn("copy-waiting",
                         "ckpt='%s' files=%zu bytes_held=%" PRIu64 " max=%llu "
                         "reason='staging_max reached: its files are copied once pushes free "
                         "space, or when its turn to push comes; until then rotation may delete "
                         "them'",
                         it->name, it->copy_files, q->staging_bytes, (unsigned long long)max);
            }
            return;
        }
        struct pin_call *call = pin_call_new(q, it->id);
        int rc =
            call != NULL ? pin_copy_pending(q->deps.pin, it->id, on_seal_copied, call) : -ENOMEM;
        if (rc < 0) {
            if (call != NULL)
                pin_call_free(call);
            /* left to the push path, which copies what is still pending */
            log_warn("pin-copy-failed",
                     "ckpt='%s' reason='cannot start the copy: %s', copying "
                     "when its turn to push comes",
                     it->name, strerror(-rc));
            it->copy = QUEUE_COPY_NONE;
            continue;
        }
        log_debug("pins-copying", "ckpt='%s' pin=%" PRIu64 " files=%zu bytes_held=%" PRIu64,
                  it->name, it->id, it->copy_files, q->staging_bytes);
        it->copy = QUEUE_COPY_RUNNING;
        q->seal_copying = true;
    }
}

/* The pin requests made before the seal are done: are there files to copy? */
static void on_seal_pins_idle(void *ctx, int status)
{
    struct pin_call *call = ctx;
    struct queue *q = call->q;
    struct item *it = waiting_item(q, call->id);
    size_t files;

    (void)status;
    pin_call_free(call);
    /* An item that became active meanwhile copies on the push path. */
    if (it != NULL) {
        it->copy_checking = false;
        if ((files = pin_copies_pending(q->deps.pin, it->id)) > 0) {
            it->copy_files = files;
            it->copy = QUEUE_COPY_WAITING;
        }
    }
    copy_next(q); /* later items may have waited for this answer */
}

/* At seal: the pin requests of the item are asked about once they are done. */
static void seal_check_copies(struct queue *q, struct item *it)
{
    struct pin_call *call;

    if (it->source_dir != NULL || (call = pin_call_new(q, it->id)) == NULL)
        return;
    if (pin_when_idle(q->deps.pin, it->id, on_seal_pins_idle, call) < 0)
        pin_call_free(call); /* the push path copies, as a last resort */
    else
        it->copy_checking = true;
}

/* The item leaves the active slot for the history; the next one starts. */
static void finish(struct queue *q, struct item *it, enum queue_state state)
{
    struct item **slot = &q->history[q->history_next % QUEUE_HISTORY];

    drop_push(it);
    it->finished_ms = now_ms(q);
    if (q->active == it)
        q->active = NULL;
    if (state == QUEUE_FAILED)
        q->failed++;
    else if (state == QUEUE_COMMITTED)
        q->committed++;
    item_free(*slot);
    *slot = it;
    q->history_next++;
    set_state(q, it, state);
    if (!q->stopped)
        staging_scan(q);
    pump(q);
}

static void set_error(struct item *it, const char *reason)
{
    free(it->error);
    it->error = strdup(reason);
}

static void log_failed(struct queue *q, struct item *it, const char *kind)
{
    /* The pins are kept: the checkpoint is not lost, only not pushed yet. */
    log_error("push-failed",
              "ckpt='%s' kind=%s reason='%s' pins='%s/pins/%" PRIu64
              "' next='retried at the next start'",
              it->name, kind, it->error ? it->error : "", q->staging, it->id);
}

static void on_failed_journaled(void *ctx, int status)
{
    struct item *it = ctx;

    (void)status;
    finish(it->queue, it, QUEUE_FAILED);
}

static void fail(struct queue *q, struct item *it, const char *kind, const char *reason)
{
    set_error(it, reason);
    log_failed(q, it, kind);
    if (journaled(it) &&
        journal_set_state(q->journal, it->id, JOURNAL_FAILED, reason, on_failed_journaled, it) == 0)
        return;
    finish(q, it, QUEUE_FAILED);
}

static void on_released(void *ctx, int status)
{
    struct item *it = ctx;
    struct queue *q = it->queue;

    if (status < 0)
        log_warn("release-failed", "ckpt='%s' reason='%s'", it->name, strerror(-status));
    else if (journaled(it))
        journal_set_state(q->journal, it->id, JOURNAL_RELEASED, NULL, on_journal_written, NULL);
    finish(q, it, it->commit[0] ? QUEUE_COMMITTED : it->lost ? QUEUE_FAILED : QUEUE_SKIPPED);
}

static void release(struct queue *q, struct item *it)
{
    if (it->source_dir != NULL)
        on_released(it, 0);
    else if (pin_release(q->deps.pin, it->id, on_released, it) < 0)
        on_released(it, 0);
}

static void on_committed_journaled(void *ctx, int status)
{
    struct item *it = ctx;
    struct queue *q = it->queue;
    struct queue_item_view view;

    (void)status;
    view_of(q, it, &view);
    if (strcmp(it->commit, BUCKET_COMMIT_MARK) == 0) {
        log_info(
            "bucket-pushed",
            "ckpt='%s' bucket='%s' files=%zu bytes=%" PRIu64 " sent=%" PRIu64
            " hash_skipped=%zu xet_new=%" PRIu64 " xet_dedup=%" PRIu64
            " xorbs_sent=%zu xorbs_resumed=%zu attempts=%u recovered=%s seconds=%.3f",
            it->name, q->deps.cfg->bucket_id, view.progress.files_total, view.progress.bytes_total,
            view.progress.bytes_sent, view.progress.files_hash_skipped, view.progress.xet_bytes_new,
            view.progress.xet_bytes_dedup, view.progress.xorbs_sent, view.progress.xorbs_resumed,
            it->attempts + 1, it->recovered ? "yes" : "no", view.seconds);
        release(q, it);
        return;
    }
    log_info("committed",
             "ckpt='%s' commit=%s files=%zu skipped=%zu bytes=%" PRIu64 " sent=%" PRIu64
             " parts_sent=%zu parts_resumed=%zu hash_skipped=%zu rebatches=%zu xet_files=%zu"
             " xet_new=%" PRIu64 " xet_dedup=%" PRIu64 " xorbs_sent=%zu xorbs_resumed=%zu"
             " attempts=%u recovered=%s seconds=%.3f message='%s'",
             it->name, it->commit, view.progress.files_total, view.progress.files_skipped,
             view.progress.bytes_total, view.progress.bytes_sent, view.progress.parts_sent,
             view.progress.parts_resumed, view.progress.files_hash_skipped, view.progress.rebatches,
             view.progress.files_xet, view.progress.xet_bytes_new, view.progress.xet_bytes_dedup,
             view.progress.xorbs_sent, view.progress.xorbs_resumed, it->attempts + 1,
             it->recovered ? "yes" : "no", view.seconds, it->plan.message);
    release(q, it);
}

/* Worth another try later? The Hub or the network being away is retried for as long as it
 * takes (the checkpoint waits, its pins are safe); an answer we could not use, or a local
 * read error, a few times before the checkpoint is failed. */
static bool transient(const struct ckpt_err *err, unsigned attempts)
{
    switch (err->kind) {
    case CKPT_ERR_NETWORK:
    case CKPT_ERR_SERVER:
    case CKPT_ERR_CONFLICT:
        return true;
    case CKPT_ERR_PROTOCOL:
        return attempts < QUEUE_RETRY_BOUNDED;
    case CKPT_ERR_IO:
        return err->code != UV_ECANCELED && err->code != UV_ENOENT && err->code != -ENOENT &&
               attempts < QUEUE_RETRY_BOUNDED;
    default:
        return false;
    }
}

static void on_retry_timer(uv_timer_t *timer)
{
    struct queue *q = timer->data;
    struct item *it = q->active;

    if (it == NULL || q->stopped)
        return;
    if (q->paused || !q->ready) {
        /* paused meanwhile: it goes back to the head of the line */
        q->active = NULL;
        it->next = q->head;
        q->head = it;
        if (q->tail == NULL)
            q->tail = it;
        q->waiting++;
        return;
    }
    log_info("push-retry", "ckpt='%s' attempt=%u", it->name, it->attempts + 1);
    set_state(q, it, QUEUE_PINNING);
    stat_files(q, it);
}

static bool part_over_budget(struct queue *q, struct item *it);

/* Several nodes: this checkpoint goes to the coordinator's commit (explicit pushes and the
 * end-of-training commit do not). */
static bool via_coordinator(const struct queue *q, const struct item *it)
{
    return q->deps.coord != NULL && it->source_dir == NULL &&
           strcmp(it->layout, "model-root") != 0 && strcmp(it->layout, "explicit-dir") != 0 &&
           strcmp(it->layout, "single-file") != 0;
}

static void on_uploaded(void *ctx, const struct ckpt_err *err, const char *commit_oid);

static void on_reported(void *ctx, const struct ckpt_err *err, const char *commit_oid)
{
    struct item *it = ctx;
    it->reporting = false;
    it->reported = true;
    if (err == NULL)
        log_info("node-committed", "ckpt='%s' commit=%s", it->name, commit_oid);
    on_uploaded(it, err, commit_oid);
}

/* The objects of this node's part are on the Hub: tell the coordinator what they are. */
static void report_part(struct queue *q, struct item *it)
{
    struct coord_file *files = calloc(it->part_n ? it->part_n : 1, sizeof(*files));
    size_t n = 0;
    int rc = -ENOMEM;

    for (size_t k = 0; files != NULL && k < it->part_n; k++) {
        struct upload_file_result r;
        if (upload_file_result(it->upload, k, &r) < 0 || r.ignored)
            continue;
        files[n++] = (struct coord_file){r.path_in_repo, r.sha256, r.size, r.via};
    }
    if (files != NULL && n == 0) {
        struct ckpt_err err;
        free(files);
        ckpt_err_set(&err, CKPT_ERR_INPUT, -EINVAL,
                     "every file of this node's part is ignored by "
                     "the repo's .gitignore: nothing to report");
        it->reported = true;
        on_uploaded(it, &err, NULL);
        return;
    }
    if (files != NULL)
        rc = coord_client_report(q->deps.coord, it->name, it->step,
                                 it->title != NULL ? it->title : it->plan.message, files, n,
                                 on_reported, it);
    free(files);
    if (rc < 0) {
        struct ckpt_err err;
        ckpt_err_set(&err, CKPT_ERR_IO, rc, "cannot report to the coordinator: %s", strerror(-rc));
        it->reported = true;
        on_uploaded(it, &err, NULL);
        return;
    }
    it->reporting = true;
    log_info("node-uploaded",
             "ckpt='%s' files=%zu next='waiting for the commit of the coordinator'", it->name, n);
}

static void on_uploaded(void *ctx, const struct ckpt_err *err, const char *commit_oid)
{
    struct item *it = ctx;
    struct queue *q = it->queue;

    if (err == NULL && commit_oid == NULL && !it->reported) {
        report_part(q, it);
        return;
    }

    if (err != NULL && transient(err, it->attempts) && !q->stopped) {
        uint64_t delay = QUEUE_RETRY_BASE_MS << (it->attempts < 8 ? it->attempts : 8);
        if (delay > QUEUE_RETRY_MAX_MS)
            delay = QUEUE_RETRY_MAX_MS;
        delay = delay / 2 + (uint64_t)rand() % (delay / 2 + 1); /* jitter */
        drop_push(it);
        plan_release(it);
        it->attempts++;
        set_error(it, err->msg);
        log_warn("push-retry-later", "ckpt='%s' kind=%s attempt=%u reason='%s', retrying in %.1fs",
                 it->name, ckpt_err_kind_name(err->kind), it->attempts, err->msg,
                 (double)delay / 1000.0);
        set_state(q, it, QUEUE_WAITING);
        uv_timer_start(&q->retry_timer, on_retry_timer, delay, 0);
        return;
    }
    if (err != NULL) {
        if (err->kind == CKPT_ERR_IO && err->code == UV_ECANCELED) {
            /* the daemon is stopping: the journal still says uploading, the next start resumes */
            set_error(it, err->msg);
            log_warn("push-interrupted", "ckpt='%s' reason='%s' next='resumed at the next start'",
                     it->name, err->msg);
            finish(q, it, QUEUE_FAILED);
            return;
        }
        fail(q, it, ckpt_err_kind_name(err->kind), err->msg);
        return;
    }
    snprintf(it->commit, sizeof(it->commit), "%s", commit_oid);
    if (it->bpush != NULL) {
        q->bucket_retire_again = bucket_push_retire_failed(it->bpush);
        drop_push(it); /* a bucket has no commits: nothing counts against the budget */
    } else {
        if (it->upload != NULL)
            upload_get_progress(it->upload, &it->progress);
        if (it->upload == NULL || it->progress.files_total > it->progress.files_skipped)
            q->commit_ms[q->n_commits++ % QUEUE_BUDGET_RING] = now_ms(q);
    }
    if (it->part_off + it->part_n < it->plan.count) {
        log_info("committed-part", "ckpt='%s' commit=%s part=%zu files=%zu-%zu of %zu", it->name,
                 it->commit, it->part_no, it->part_off + 1, it->part_off + it->part_n,
                 it->plan.count);
        it->part_off += it->part_n;
        it->part_no++;
        upload_free(it->upload);
        it->upload = NULL;
        if (!part_over_budget(q, it))
            start_upload(q, it);
        return;
    }
    if (journaled(it) && journal_set_state(q->journal, it->id, JOURNAL_COMMITTED, it->commit,
                                           on_committed_journaled, it) == 0)
        return;
    on_committed_journaled(it, 0);
}

/* ---- the stat step: which files are there, which are unchanged since they were hashed ---- */

struct stat_job {
    uv_work_t work;
    struct item *item;
    size_t n;
    char **paths; /* borrowed from the item */
    struct journal_file *stats;
    bool *present;
};

static void stat_work(uv_work_t *w)
{
    struct stat_job *job = w->data;

    for (size_t i = 0; i < job->n; i++) {
        struct stat st;
        if (lstat(job->paths[i], &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        job->present[i] = true;
        job->stats[i].size = (uint64_t)st.st_size;
        job->stats[i].mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        job->stats[i].ino = (uint64_t)st.st_ino;
        job->stats[i].have_stat = true;
    }
}

static bool same_file(const struct journal_file *a, const struct journal_file *b)
{
    return a->have_stat && b->have_stat && a->size == b->size && a->mtime_ns == b->mtime_ns &&
           a->ino == b->ino;
}

static struct journal_file *journal_file_of(struct journal_ckpt *c, const char *path)
{
    for (size_t i = 0; c != NULL && i < c->n_files; i++)
        if (strcmp(c->files[i].path, path) == 0)
            return &c->files[i];
    return NULL;
}

/* An earlier push of the very same files under the same name (a checkpoint found again by the
 * scan after a restart): nothing to push. */
static struct journal_ckpt *pushed_before(struct queue *q, struct item *it)
{
    for (struct journal_ckpt *c = journal_ckpts(q->journal); c != NULL; c = c->next) {
        bool all = true;
        if (c->id == it->id || (c->state != JOURNAL_COMMITTED && c->state != JOURNAL_RELEASED) ||
            c->name == NULL || c->layout == NULL || strcmp(c->name, it->name) != 0 ||
            strcmp(c->layout, it->layout) != 0)
            continue;
        for (size_t i = 0; i < it->plan.count && all; i++) {
            const struct journal_file *f = journal_file_of(c, it->plan.items[i].file);
            all = f != NULL && it->present[i] && same_file(f, &it->stats[i]);
        }
        if (all && it->plan.count > 0)
            return c;
    }
    return NULL;
}

static void start_upload(struct queue *q, struct item *it);

static void on_stats_journaled(void *ctx, int status)
{
    struct item *it = ctx;

    (void)status;
    start_upload(it->queue, it);
}

static void on_deferred_sealed(void *ctx, int status)
{
    struct item *it = ctx;
    struct queue *q = it->queue;

    (void)status;
    for (size_t i = 0; i < it->plan.count; i++)
        it->stats[i].path = (char *)it->plan.items[i].file; /* borrowed, read only */
    if (journal_stats(q->journal, it->id, it->stats, it->plan.count, on_stats_journaled, it) < 0)
        start_upload(q, it);
}

static void after_stat(uv_work_t *w, int status)
{
    struct stat_job *job = w->data;
    struct item *it = job->item;
    struct queue *q = it->queue;
    size_t kept = 0;

    (void)status;
    free(job);
    if (q->stopped) {
        finish(q, it, QUEUE_FAILED);
        return;
    }
    for (size_t i = 0; i < it->plan.count; i++) {
        if (!it->present[i]) {
            log_warn("file-lost", "ckpt='%s' file='%s' reason='not in its pins'", it->name,
                     it->plan.items[i].file);
            free(it->plan.items[i].path_in_repo);
            free(it->local_paths[i]);
            continue;
        }
        it->plan.items[kept] = it->plan.items[i];
        it->local_paths[kept] = it->local_paths[i];
        it->stats[kept] = it->stats[i];
        it->present[kept] = true;
        kept++;
    }
    if (kept > 0 && kept < it->plan.count && strcmp(it->layout, "lightning") != 0) {
        /* Half a checkpoint is worse than none: a reader (a resumed training, from_pretrained)
         * would load it. Its pins stay for a person to look at. (Each file of a Lightning save
         * is a whole checkpoint: the ones pinned are pushed.) */
        char why[160];
        snprintf(why, sizeof(why),
                 "%zu of its %zu files were deleted before they could be pinned (rotation "
                 "outran the daemon): not pushing half a checkpoint",
                 it->plan.count - kept, it->plan.count);
        it->plan.count = kept;
        fail(q, it, "incomplete", why);
        return;
    }
    it->plan.count = kept;
    if (kept == 0) {
        /* Every file went (rotation) before it could be linked: the checkpoint is lost, a
         * failure of this run (exit code, status, metrics). No restart can bring the bytes back,
         * so its pins are released and the journal does not keep it to fail again. */
        set_error(it, "every file was gone before it could be pinned (rotation outran the "
                      "daemon): lost");
        log_error("lost", "ckpt='%s' reason='%s' counted='failed'", it->name, it->error);
        it->lost = true;
        plan_release(it);
        release(q, it);
        return;
    }
    if (!journaled(it)) {
        start_upload(q, it);
        return;
    }
    struct journal_ckpt *before = pushed_before(q, it);
    if (before != NULL) {
        if (before->commit[0] != '\0')
            log_info("already-pushed",
                     "ckpt='%s' commit=%s reason='the same files were committed before the "
                     "restart'",
                     it->name, before->commit);
        else
            log_info("already-skipped",
                     "ckpt='%s' reason='the same files were superseded or coalesced before the "
                     "restart'",
                     it->name);
        plan_release(it);
        release(q, it);
        return;
    }
    if (it->deferred) {
        it->deferred = false;
        if (journal_sealed(q->journal, it->id, it->name, it->layout, it->step,
                           (const char *const *)it->files, it->file_count, on_deferred_sealed,
                           it) == 0)
            return;
    }
    on_deferred_sealed(it, 0);
}

/* The client's title over the strategy's message, for the plan just made or in flight. */
static int use_title(struct item *it)
{
    char *copy = strdup(it->title);

    if (copy == NULL)
        return -ENOMEM;
    free(it->plan.message);
    it->plan.message = copy;
    return 0;
}

static void stat_files(struct queue *q, struct item *it)
{
    char path[PATH_MAX];
    struct stat_job *job;
    int rc;

    if (it->refusal != NULL) {
        fail(q, it, "unpushable", it->refusal);
        return;
    }
    if (to_bucket(q, it))
        rc = strategy_plan_bucket(it->layout, it->name, it->step, (const char *const *)it->files,
                                  it->file_count, &it->plan);
    else
        rc = strategy_plan(q->deps.cfg->strategy, it->layout, it->name, it->step,
                           (const char *const *)it->files, it->file_count, &it->plan);
    if (rc < 0)
        goto fail;
    if (it->title != NULL && (rc = use_title(it)) < 0)
        goto fail;
    size_t dropped = strategy_filter(&it->plan, q->deps.cfg->include, q->deps.cfg->exclude);
    if (dropped > 0)
        log_debug("filtered", "ckpt='%s' dropped=%zu reason='--include/--exclude'", it->name,
                  dropped);
    if (it->plan.count == 0 || q->deps.hub == NULL) {
        log_info("skipped", "ckpt='%s' strategy=%s reason='%s'", it->name,
                 config_strategy_name(q->deps.cfg->strategy),
                 q->deps.hub == NULL ? "dry run" : "the strategy pushes none of its files now");
        release(q, it);
        return;
    }
    it->local_paths = calloc(it->plan.count, sizeof(*it->local_paths));
    it->stats = calloc(it->plan.count, sizeof(*it->stats));
    it->present = calloc(it->plan.count, sizeof(*it->present));
    job = calloc(1, sizeof(*job));
    if (it->local_paths == NULL || it->stats == NULL || it->present == NULL || job == NULL) {
        free(job);
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < it->plan.count; i++) {
        if (it->source_dir != NULL)
            snprintf(path, sizeof(path), "%s/%s", it->source_dir, it->plan.items[i].file);
        else if ((rc = pin_path(q->deps.pin, it->id, it->plan.items[i].file, path, sizeof(path))) <
                 0) {
            free(job);
            goto fail;
        }
        if ((it->local_paths[i] = strdup(path)) == NULL) {
            free(job);
            rc = -ENOMEM;
            goto fail;
        }
    }
    job->item = it;
    job->n = it->plan.count;
    job->paths = it->local_paths;
    job->stats = it->stats;
    job->present = it->present;
    job->work.data = job;
    if ((rc = uv_queue_work(q->deps.loop, &job->work, stat_work, after_stat)) < 0) {
        free(job);
        goto fail;
    }
    return;
fail:
    fail(q, it, "internal", strerror(-rc));
}

static void start_upload(struct queue *q, struct item *it);

static void on_branch(void *ctx, const struct ckpt_err *err)
{
    struct item *it = ctx;

    if (err != NULL) {
        on_uploaded(it, err, NULL);
        return;
    }
    it->queue->branch_ready = true;
    log_info("branch-ready", "repo='%s' branch='%s'", hub_repo_id(it->queue->deps.hub),
             it->queue->deps.cfg->revision);
    start_upload(it->queue, it);
}

/* --revision: intermediate checkpoints go to the branch, the end of training to main. */
static bool to_branch(const struct queue *q, const struct item *it)
{
    return q->deps.cfg->revision != NULL && strcmp(it->layout, "model-root") != 0;
}

/* The files under last-checkpoint/ from the latest checkpoint committed before (the journal
 * remembers them) that this one does not have. The upload checks each still exists. */
static void stale_last_checkpoint(struct queue *q, const struct item *it, char ***ret,
                                  size_t *ret_n)
{
    struct journal_ckpt *prev = NULL;

    *ret = NULL;
    *ret_n = 0;
    if (q->deps.cfg->strategy != STRATEGY_CHECKPOINT || !journaled(it) ||
        strcmp(it->layout, "transformers-trainer") != 0)
        return;
    for (struct journal_ckpt *c = journal_ckpts(q->journal); c != NULL; c = c->next)
        if (c->id != it->id && c->commit[0] != '\0' && c->layout != NULL &&
            strcmp(c->layout, it->layout) == 0 &&
            (c->state == JOURNAL_COMMITTED || c->state == JOURNAL_RELEASED) &&
            (prev == NULL || c->seq > prev->seq))
            prev = c;
    if (prev == NULL || (*ret = calloc(prev->n_files ? prev->n_files : 1, sizeof(char *))) == NULL)
        return;
    for (size_t i = 0; i < prev->n_files; i++) {
        bool kept = false;
        for (size_t k = 0; k < it->file_count && !kept; k++)
            kept = strcmp(it->files[k], prev->files[i].path) == 0;
        if (!kept && asprintf(&(*ret)[*ret_n], "last-checkpoint/%s", prev->files[i].path) >= 0)
            (*ret_n)++;
    }
}

/* --keep-last with all_checkpoints: the files of this job's committed checkpoint-<n>/ folders
 * (the journal remembers them) beyond the newest keep_last, deleted by the commit that completes
 * this newer one, so the Hub never holds fewer than keep_last whole checkpoints. Repo content
 * this job did not push is never named; the upload checks each path still exists. */
static void retired_checkpoints(struct queue *q, const struct item *it, char ***ret, size_t *ret_n)
{
    struct journal_ckpt *c;
    const char **names = NULL;
    struct journal_ckpt **ckpts = NULL;
    enum strategy_retirement *retire = NULL;
    size_t n = 0, n_files = 0, again_folders = 0;

    bool bucket = to_bucket(q, it);

    *ret = NULL;
    *ret_n = 0;
    if (q->deps.cfg->keep_last == 0 || !journaled(it) ||
        (!bucket && (q->deps.cfg->strategy != STRATEGY_ALL_CHECKPOINTS ||
                     strcmp(it->layout, "transformers-trainer") != 0)))
        return;
    for (c = journal_ckpts(q->journal); c != NULL; c = c->next)
        n++;
    names = calloc(n + 1, sizeof(*names));
    ckpts = calloc(n + 1, sizeof(*ckpts));
    retire = calloc(n + 1, sizeof(*retire));
    if (names == NULL || ckpts == NULL || retire == NULL)
        goto out;
    n = 0;
    for (c = journal_ckpts(q->journal); c != NULL; c = c->next)
        if (c->id != it->id && c->commit[0] != '\0' && c->name != NULL && c->layout != NULL &&
            strcmp(c->layout, it->layout) == 0 &&
            bucket == (strcmp(c->commit, BUCKET_COMMIT_MARK) == 0) &&
            (c->state == JOURNAL_COMMITTED || c->state == JOURNAL_RELEASED)) {
            ckpts[n] = c;
            names[n++] = c->name;
        }
    if (strategy_retire(it->name, names, n, q->deps.cfg->keep_last, retire) == 0)
        goto out;
    for (size_t i = 0; i < n; i++)
        if (retire[i] != STRATEGY_KEEP)
            n_files += ckpts[i]->n_files;
    if ((*ret = calloc(n_files ? n_files : 1, sizeof(char *))) == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        bool again = false;
        if (retire[i] == STRATEGY_KEEP ||
            (bucket && retire[i] == STRATEGY_RETIRE_AGAIN && !q->bucket_retire_again))
            continue;
        for (size_t k = 0; k < i && !again; k++) /* saved twice: one folder */
            again = retire[k] != STRATEGY_KEEP && strcmp(names[k], names[i]) == 0;
        if (again)
            continue;
        size_t before = *ret_n;
        for (size_t f = 0; f < ckpts[i]->n_files; f++) {
            bool dup = false;
            char *path;
            if (asprintf(&path, "%s/%s", names[i], ckpts[i]->files[f].path) < 0)
                continue;
            for (size_t k = 0; k < *ret_n && !dup; k++)
                dup = strcmp((*ret)[k], path) == 0;
            if (dup)
                free(path);
            else
                (*ret)[(*ret_n)++] = path;
        }
        if (retire[i] == STRATEGY_RETIRE_NOW)
            log_info("retiring", "ckpt='%s' folder='%s' files=%zu keep_last=%u target=%s", it->name,
                     names[i], *ret_n - before, q->deps.cfg->keep_last, bucket ? "bucket" : "repo");
        else
            again_folders++;
    }
    /* Named again in case an earlier commit failed or kept more: where gone, no change. */
    if (again_folders > 0)
        log_debug("retiring-again", "ckpt='%s' folders=%zu keep_last=%u", it->name, again_folders,
                  q->deps.cfg->keep_last);
out:
    free(names);
    free(ckpts);
    free(retire);
}

/* How many plan items from part_off go into the next commit; the first time, says when a
 * checkpoint needs more than one. 0: out of memory. */
static size_t next_part(struct item *it)
{
    size_t left = it->plan.count - it->part_off;
    uint64_t *sizes = calloc(left ? left : 1, sizeof(*sizes));
    enum commit_split_reason why;
    size_t n;

    if (sizes == NULL)
        return 0;
    for (size_t k = 0; k < left; k++)
        sizes[k] = it->stats[it->part_off + k].size;
    if (it->part_off == 0) {
        size_t parts = commit_split_count(sizes, left, &commit_limits_hub, &why);
        it->part_no = 1;
        if (parts > 1)
            log_info("commit-split",
                     "ckpt='%s' parts=%zu files=%zu max_files=%zu max_regular_bytes=%" PRIu64
                     " reason='%s'",
                     it->name, parts, it->plan.count, commit_limits_hub.max_files,
                     commit_limits_hub.max_regular_bytes, commit_split_reason_text(why));
    }
    n = commit_split_next(sizes, left, &commit_limits_hub, NULL);
    free(sizes);
    return n;
}

/* The whole checkpoint in one push (no commit limits apply), retention after it. */
static void start_bucket_push(struct queue *q, struct item *it)
{
    struct upload_file *files = calloc(it->plan.count, sizeof(*files));
    struct journal_ckpt *c = journaled(it) ? journal_ckpt_find(q->journal, it->id) : NULL;
    char **deletes = NULL;
    size_t n_deletes = 0;
    int rc = -ENOMEM;

    if (files == NULL) {
        fail(q, it, "internal", strerror(ENOMEM));
        return;
    }
    for (size_t i = 0; i < it->plan.count; i++) {
        const struct journal_file *f = journal_file_of(c, it->plan.items[i].file);
        files[i].path_in_repo = it->plan.items[i].path_in_repo;
        files[i].local_path = it->local_paths[i];
        files[i].journal_path = it->plan.items[i].file;
        if (f != NULL && f->sha256[0] != '\0' && same_file(f, &it->stats[i])) {
            files[i].sha256 = f->sha256;
            files[i].size = f->size;
        }
    }
    retired_checkpoints(q, it, &deletes, &n_deletes);
    struct bucket_push_opts opts = {.max_transfers = q->deps.cfg->max_transfers,
                                    .journal = q->journal,
                                    .journal_id = it->id,
                                    .xet_work_dir = q->deps.xet_work_dir,
                                    .deletes = (const char *const *)deletes,
                                    .n_deletes = n_deletes};
    it->part_off = 0;
    it->part_n = it->plan.count;
    rc = bucket_push_start(&it->bpush, q->deps.bucket_hub, q->deps.hashes, q->deps.bucket_xet,
                           files, it->plan.count, &opts, on_uploaded, it);
    for (size_t k = 0; k < n_deletes; k++)
        free(deletes[k]);
    free(deletes);
    free(files);
    if (rc < 0) {
        it->bpush = NULL;
        fail(q, it, "internal", strerror(-rc));
        return;
    }
    it->upload_started_ms = now_ms(q);
    set_state(q, it, QUEUE_UPLOADING);
}

static void start_upload(struct queue *q, struct item *it)
{
    struct upload_file *files = calloc(it->plan.count, sizeof(*files));
    struct journal_ckpt *c = journaled(it) ? journal_ckpt_find(q->journal, it->id) : NULL;
    struct upload_opts opts = {.journal = q->journal,
                               .journal_id = it->id,
                               .max_transfers = q->deps.cfg->max_transfers,
                               .xet = q->deps.xet,
                               .xet_work_dir = q->deps.xet_work_dir,
                               .xet_scans_follow_hub = q->deps.bucket_xet == NULL};
    int rc = -ENOMEM;

    if (q->stopped) {
        free(files);
        finish(q, it, QUEUE_FAILED);
        return;
    }
    if (files == NULL)
        goto fail;
    if (to_bucket(q, it)) {
        free(files);
        start_bucket_push(q, it);
        return;
    }
    if ((rc = hub_set_revision(q->deps.hub, to_branch(q, it) ? q->deps.cfg->revision : NULL)) < 0)
        goto fail;
    if (to_branch(q, it) && !q->branch_ready) {
        free(files);
        if ((rc = hub_ensure_branch(q->deps.hub, on_branch, it, NULL)) < 0)
            fail(q, it, "internal", strerror(-rc));
        return;
    }
    /* One commit per checkpoint: each commit counts against the budget. Only what one commit
     * cannot carry (commit_split.c) makes several; the later ones say "(part N)", as
     * upload_folder does. Several nodes: the coordinator commits all at once (LFS only). */
    bool coord = via_coordinator(q, it);
    size_t n = coord ? it->plan.count : next_part(it);
    it->reported = false;
    it->reporting = false;
    opts.no_commit = coord;
    char message[512];
    if (n == 0) {
        rc = -ENOMEM;
        goto fail;
    }
    if (it->part_off == 0)
        snprintf(message, sizeof(message), "%s", it->plan.message);
    else
        snprintf(message, sizeof(message), "%s (part %zu)", it->plan.message, it->part_no);
    for (size_t k = 0; k < n; k++) {
        size_t i = it->part_off + k;
        const struct journal_file *f = journal_file_of(c, it->plan.items[i].file);
        files[k].path_in_repo = it->plan.items[i].path_in_repo;
        files[k].local_path = it->local_paths[i];
        files[k].journal_path = it->plan.items[i].file;
        if (f != NULL && f->sha256[0] != '\0' && same_file(f, &it->stats[i])) {
            files[k].sha256 = f->sha256;
            files[k].size = f->size;
        }
    }
    it->part_n = n;
    /* strategy checkpoint: last-checkpoint/ is replaced, so files of the checkpoint pushed
     * there before that this one lacks go, in the commit that completes the new one;
     * all_checkpoints with --keep-last: folders beyond the newest K go the same way */
    char **deletes = NULL;
    size_t n_deletes = 0;
    if (it->part_off + n == it->plan.count && !coord) {
        stale_last_checkpoint(q, it, &deletes, &n_deletes);
        if (n_deletes == 0) {
            free(deletes); /* an empty list */
            retired_checkpoints(q, it, &deletes, &n_deletes);
        }
    }
    opts.deletes = (const char *const *)deletes;
    opts.n_deletes = n_deletes;
    rc = upload_start(&it->upload, q->deps.hub, q->deps.hashes, files, n, message, &opts,
                      on_uploaded, it);
    for (size_t k = 0; k < n_deletes; k++)
        free(deletes[k]);
    free(deletes);
    free(files);
    files = NULL;
    if (rc < 0)
        goto fail;
    it->upload_started_ms = now_ms(q);
    set_state(q, it, QUEUE_UPLOADING);
    return;
fail:
    free(files);
    fail(q, it, "internal", strerror(-rc));
}

static void on_pins_copied(void *ctx, int status)
{
    struct item *it = ctx;

    if (status < 0)
        log_warn("pin-copy-failed", "ckpt='%s' reason='%s'", it->name, strerror(-status));
    else
        log_info("pins-copied", "ckpt='%s' pin=%" PRIu64 " files=%zu at=push", it->name, it->id,
                 it->copy_files);
    it->copy = QUEUE_COPY_DONE;
    copy_ended(it->queue);
    stat_files(it->queue, it);
}

/* Every pin request made before, a copy at seal included, is done: what is still to copy (its
 * copy waited for staging space, or failed) is copied now, before the files are read. */
static void on_pins_idle(void *ctx, int status)
{
    struct item *it = ctx;
    struct queue *q = it->queue;
    size_t pending = pin_copies_pending(q->deps.pin, it->id);

    (void)status; /* a file lost before it was pinned was logged by the daemon */
    if (pending > 0 && pin_copy_pending(q->deps.pin, it->id, on_pins_copied, it) == 0) {
        log_debug("pins-copying", "ckpt='%s' pin=%" PRIu64 " files=%zu reason='its turn to push'",
                  it->name, it->id, pending);
        it->copy_files = pending;
        it->copy = QUEUE_COPY_RUNNING;
        return;
    }
    stat_files(q, it);
}

unsigned queue_note_past_commits(struct queue *q, const int64_t *dates, size_t n, int64_t now_s)
{
    uint64_t now = now_ms(q);
    unsigned counted = 0;

    for (size_t i = 0; i < n; i++) {
        /* a Hub clock ahead of ours: made just now */
        uint64_t age_ms = dates[i] < now_s ? (uint64_t)(now_s - dates[i]) * 1000 : 0;
        if (age_ms >= QUEUE_BUDGET_WINDOW_MS)
            continue;
        /* The loop clock starts at boot: a commit older than that counts as made at boot, which
         * waits a little longer than needed, never less. */
        q->commit_ms[q->n_commits++ % QUEUE_BUDGET_RING] = age_ms < now ? now - age_ms : 0;
        counted++;
    }
    return counted;
}

/* Commits made in the last hour; *ret_wait_ms: until one of them leaves the window. */
static unsigned commits_in_window(struct queue *q, uint64_t *ret_wait_ms)
{
    uint64_t now = now_ms(q), oldest = UINT64_MAX;
    size_t kept = q->n_commits < QUEUE_BUDGET_RING ? q->n_commits : QUEUE_BUDGET_RING;
    unsigned n = 0;

    for (size_t i = 0; i < kept; i++) {
        uint64_t t = q->commit_ms[i];
        if (now - t >= QUEUE_BUDGET_WINDOW_MS)
            continue;
        n++;
        if (t < oldest)
            oldest = t;
    }
    *ret_wait_ms = n > 0 ? oldest + QUEUE_BUDGET_WINDOW_MS - now : 0;
    return n;
}

static void on_budget_timer(uv_timer_t *timer)
{
    struct queue *q = timer->data;
    struct item *it = q->active;

    if (it != NULL && it->part_waiting) {
        if (part_over_budget(q, it))
            return;
        it->part_waiting = false;
        start_upload(q, it);
        return;
    }
    pump(q);
}

/* A checkpoint that needs several commits (commit_split.c): each counts against the budget, and
 * when it is spent the next one waits, logged, keeping the checkpoint's place and pins. */
static bool part_over_budget(struct queue *q, struct item *it)
{
    uint64_t wait_ms;
    unsigned n = commits_in_window(q, &wait_ms);

    if (n < q->deps.cfg->commits_per_hour)
        return false;
    it->part_waiting = true;
    log_warn("commit-budget",
             "ckpt='%s' part=%zu commits=%u per_hour=%u reason='the Hub allows about %u commits "
             "an hour', waiting %.0fs",
             it->name, it->part_no, n, q->deps.cfg->commits_per_hour, q->deps.cfg->commits_per_hour,
             (double)wait_ms / 1000.0);
    uv_timer_start(&q->budget_timer, on_budget_timer, wait_ms + 1, 0);
    return true;
}

/* The commit budget is spent: a newer checkpoint of the same layout waiting behind the head
 * makes pushing the head pointless (every_save and checkpoint overwrite the same paths), so it
 * is skipped, logged; otherwise the head waits. Returns true when pump must stop here. */
static bool over_budget(struct queue *q)
{
    uint64_t wait_ms;
    unsigned n = commits_in_window(q, &wait_ms);
    struct item *it = q->head;

    if (n < q->deps.cfg->commits_per_hour)
        return false;
    if (q->deps.cfg->strategy != STRATEGY_ALL_CHECKPOINTS && it->step >= 0 &&
        strcmp(it->layout, "model-root") != 0) {
        for (struct item *later = it->next; later != NULL; later = later->next) {
            if (strcmp(later->layout, it->layout) != 0 || later->step <= it->step)
                continue;
            q->head = it->next;
            if (q->head == NULL)
                q->tail = NULL;
            it->next = NULL;
            q->waiting--;
            q->active = it;
            if (it->copy == QUEUE_COPY_WAITING)
                it->copy = QUEUE_COPY_NONE; /* not pushed: no copy needed */
            log_info("coalesced",
                     "ckpt='%s' by='%s' commits=%u per_hour=%u reason='commit budget spent: "
                     "only the newest waiting checkpoint is pushed'",
                     it->name, later->name, n, q->deps.cfg->commits_per_hour);
            release(q, it);
            return true;
        }
    }
    if (!uv_is_active((uv_handle_t *)&q->budget_timer)) {
        log_warn("commit-budget",
                 "ckpt='%s' commits=%u per_hour=%u reason='the Hub allows about %u commits an "
                 "hour', waiting %.0fs",
                 it->name, n, q->deps.cfg->commits_per_hour, q->deps.cfg->commits_per_hour,
                 (double)wait_ms / 1000.0);
        uv_timer_start(&q->budget_timer, on_budget_timer, wait_ms + 1, 0);
    }
    return true;
}

static void pump(struct queue *q)
{
    struct item *it;

    if (q->active != NULL || q->head == NULL || q->stopped || q->paused || !q->ready ||
        !q->recovered || !q->head->journaled)
        return;
    if (q->deps.hub != NULL && !to_bucket(q, q->head) && over_budget(q))
        return;
    it = q->head;
    q->head = it->next;
    if (q->head == NULL)
        q->tail = NULL;
    it->next = NULL;
    q->waiting--;
    q->active = it;
    /* A copy still waiting runs on the push path (on_pins_idle), never held back by
     * staging_max: a queue stuck behind its own copy would never free the space it waits for. */
    bool copy_waited = it->copy == QUEUE_COPY_WAITING && it->copy_wait_logged;
    if (it->copy == QUEUE_COPY_WAITING)
        it->copy = QUEUE_COPY_NONE;
    set_state(q, it, QUEUE_PINNING);
    if ((q->deps.cfg->strategy == STRATEGY_CHECKPOINT ||
         q->deps.cfg->strategy == STRATEGY_EVERY_SAVE) &&
        strcmp(it->layout, "model-root") != 0 && it->source_dir == NULL && !to_bucket(q, it)) {
        struct item *later = superseded_by(q, it, q->head);
        if (later != NULL) {
            /* last-checkpoint/ would be overwritten at once: pushing it is stale data */
            log_info("superseded",
                     "ckpt='%s' by='%s' reason='strategy checkpoint keeps only the latest: "
                     "not pushed'",
                     it->name, later->name);
            release(q, it);
            return;
        }
        /* Found again after a restart (its name is journaled, or it was left unfinished) while
         * a later step was pushed meanwhile: pushing it now would put old files over newer
         * ones. A new save (training resumed from an earlier step) has a name not seen yet. */
        for (struct journal_ckpt *c = journal_ckpts(q->journal);
             (it->deferred || it->recovered) && c != NULL; c = c->next) {
            if (c->id == it->id || it->step < 0 || c->step <= it->step || c->layout == NULL ||
                strcmp(c->layout, it->layout) != 0 ||
                (c->state != JOURNAL_COMMITTED && c->state != JOURNAL_RELEASED))
                continue;
            log_info("superseded",
                     "ckpt='%s' by='%s' reason='a later step of this run was pushed already: "
                     "its files would overwrite newer ones'",
                     it->name, c->name ? c->name : "");
            release(q, it);
            return;
        }
    }
    if (copy_waited)
        log_info("copy-at-push",
                 "ckpt='%s' bytes_held=%" PRIu64 " max=%llu reason='its turn to push came "
                 "before staging space: copied now'",
                 it->name, q->staging_bytes, (unsigned long long)q->deps.cfg->staging_max);
    if (it->source_dir != NULL)
        stat_files(q, it);
    else if (pin_when_idle(q->deps.pin, it->id, on_pins_idle, it) < 0)
        on_pins_idle(it, 0);
}

/* ---- adding ------------------------------------------------------------------------------ */

static void on_sealed_journaled(void *ctx, int status)
{
    struct item *it = ctx;

    (void)status;
    it->journaled = true;
    set_state(it->queue, it, QUEUE_WAITING);
    pump(it->queue);
}

/* A checkpoint of this name is journaled already: this one is likely the scan after a restart
 * finding it again. */
static bool name_known(struct queue *q, const struct item *it)
{
    for (struct journal_ckpt *c = journal_ckpts(q->journal); c != NULL; c = c->next)
        if (c->id != it->id && c->state >= JOURNAL_SEALED && c->name != NULL && c->layout != NULL &&
            strcmp(c->name, it->name) == 0 && strcmp(c->layout, it->layout) == 0)
            return true;
    return false;
}

/* Writes the sealed record of every item that has none yet, in queue order. One whose name is
 * journaled already waits for its stat step (the same files as an earlier push: skipped, never
 * journaled, so that restarts do not pile up copies of it). */
static void journal_waiting(struct queue *q)
{
    for (struct item *it = q->head; it != NULL && q->recovered; it = it->next) {
        if (it->journaled || it->sealing)
            continue;
        if (!it->recovered && name_known(q, it)) {
            it->journaled = true;
            it->deferred = true;
            set_state(q, it, QUEUE_WAITING);
            continue;
        }
        it->sealing = true;
        if (journal_sealed(q->journal, it->id, it->name, it->layout, it->step,
                           (const char *const *)it->files, it->file_count, on_sealed_journaled,
                           it) < 0) {
            it->journaled = true; /* the pins stay the ground truth */
            set_state(q, it, QUEUE_WAITING);
        }
    }
    pump(q);
}

static struct item *item_new(struct queue *q, uint64_t id, const char *name, const char *layout,
                             int64_t step, const char *source_dir, const char *const *files,
                             size_t file_count)
{
    struct item *it = calloc(1, sizeof(*it));

    if (it == NULL)
        return NULL;
    it->queue = q;
    it->id = id;
    it->step = step;
    it->sealed_at_ms = now_ms(q);
    it->name = strdup(name);
    it->layout = strdup(layout);
    it->files = calloc(file_count ? file_count : 1, sizeof(*it->files));
    if (it->name == NULL || it->layout == NULL || it->files == NULL)
        goto oom;
    if (source_dir != NULL && (it->source_dir = strdup(source_dir)) == NULL)
        goto oom;
    for (size_t i = 0; i < file_count; i++) {
        if ((it->files[i] = strdup(files[i])) == NULL)
            goto oom;
        it->file_count++;
    }
    return it;
oom:
    item_free(it);
    return NULL;
}

static int add_item(struct queue *q, uint64_t id, const char *name, const char *layout,
                    int64_t step, const char *source_dir, const char *const *files,
                    size_t file_count, const char *refusal);

int queue_add(struct queue *q, uint64_t id, const char *name, const char *layout, int64_t step,
              const char *source_dir, const char *const *files, size_t file_count)
{
    return add_item(q, id, name, layout, step, source_dir, files, file_count, NULL);
}

static int add_item(struct queue *q, uint64_t id, const char *name, const char *layout,
                    int64_t step, const char *source_dir, const char *const *files,
                    size_t file_count, const char *refusal)
{
    struct item *it;

    if ((it = item_new(q, id, name, layout, step, source_dir, files, file_count)) == NULL)
        return -ENOMEM;
    if (refusal != NULL && (it->refusal = strdup(refusal)) == NULL) {
        item_free(it);
        return -ENOMEM;
    }
    if (q->waiting >= QUEUE_MAX_WAITING) {
        /* Not pushed in this run: a failure (status, exit code), never a silent one. Its pins
         * stay on disk, and the next start finds them. */
        set_error(it, "cannot wait for its turn: too many checkpoints wait already");
        log_failed(q, it, "queue-full");
        finish(q, it, QUEUE_FAILED);
        return -ENOBUFS;
    }
    /* Save order: a scan at start may seal checkpoint-20 before checkpoint-10; an earlier step
     * of the same layout goes before a waiting later one. */
    struct item **at = &q->head;
    while (*at != NULL && !(step >= 0 && (*at)->step > step && !(*at)->recovered &&
                            strcmp((*at)->layout, layout) == 0)) {
        at = &(*at)->next;
    }
    it->next = *at;
    *at = it;
    if (it->next == NULL)
        q->tail = it;
    q->waiting++;
    seal_check_copies(q, it);
    if (!journaled(it)) {
        it->journaled = true;
        set_state(q, it, QUEUE_WAITING);
        pump(q);
        return 0;
    }
    it->state = QUEUE_WAITING;
    journal_waiting(q);
    return 0;
}

void queue_note_detected(struct queue *q, uint64_t id, const char *name, const char *layout)
{
    if (id == q->last_detected)
        return;
    q->last_detected = id;
    if (!q->recovered) {
        struct note *n = &q->notes[q->n_notes];
        for (size_t i = 0; i < q->n_notes; i++)
            if (q->notes[i].id == id)
                return;
        if (q->n_notes == QUEUE_NOTES_MAX)
            return; /* its pins are released at the next start if this run dies first */
        n->id = id;
        n->name = strdup(name);
        n->layout = strdup(layout);
        if (n->name == NULL || n->layout == NULL) {
            free(n->name);
            free(n->layout);
            return;
        }
        q->n_notes++;
        return;
    }
    if (journal_ckpt_find(q->journal, id) == NULL)
        journal_detected(q->journal, id, name, layout, on_journal_written, NULL);
}

static void flush_notes(struct queue *q)
{
    for (size_t i = 0; i < q->n_notes; i++) {
        struct note *n = &q->notes[i];
        if (journal_ckpt_find(q->journal, n->id) == NULL)
            journal_detected(q->journal, n->id, n->name, n->layout, on_journal_written, NULL);
        free(n->name);
        free(n->layout);
    }
    q->n_notes = 0;
}

/* ---- recovery at start: the journal and the pins directory -------------------------------- */

struct pin_dir {
    uint64_t id;
    char **files;
    size_t n, cap;
    bool original; /* its first file is a link of a file in the watched tree */
};

/* A checkpoint the journal holds: are its files in the watched tree still the journaled ones? */
struct known_ckpt {
    uint64_t id;
    char *dir; /* watched-tree-relative directory of its files */
    char **files;
    struct journal_file *stats; /* have_stat, size, mtime_ns, ino of each file */
    size_t n;
    bool pushed; /* committed: a file it has no stat of was not pushed, so it cannot matter */
    bool same;   /* out: every file still there is the one journaled (or pinned) */
    bool taken;  /* recovery keeps it: requeued, or pushed already */
};

struct recover_job {
    uv_work_t work;
    struct queue *q;
    struct known_ckpt *known;
    size_t n_known;
    char *pins;      /* <staging>/pins */
    char *watch_dir; /* originals of unsealed checkpoints are looked for here */
    char **names;    /* unsealed checkpoints' names (in), exists[] (out) */
    bool *exists;
    size_t n_names;
    struct pin_dir *dirs;
    size_t n_dirs;
    int status;
};

static struct pin_dir *walking_dir; /* nftw has no context: one walk at a time */
static size_t walking_base;
static uv_mutex_t walk_lock;
static uv_once_t walk_once = UV_ONCE_INIT;

static void walk_lock_init(void)
{
    uv_mutex_init(&walk_lock);
}

static int collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    struct pin_dir *d = walking_dir;

    (void)ftw;
    if (type != FTW_F || !S_ISREG(st->st_mode) || strlen(path) <= walking_base)
        return 0;
    if (d->n >= RECOVER_MAX_FILES)
        return 1;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        char **p = realloc(d->files, cap * sizeof(*p));
        if (p == NULL)
            return 1;
        d->files = p;
        d->cap = cap;
    }
    if ((d->files[d->n] = strdup(path + walking_base)) != NULL)
        d->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Pins the journal does not know: is their first file still in the watched tree, under the
 * root or a top-level folder, as the same inode? Then the scan pushes the original. */
static bool original_exists(struct recover_job *job, const char *pin_dir, const struct pin_dir *d)
{
    char path[PATH_MAX];
    struct stat pin, st;
    struct dirent *de;
    bool found = false;
    DIR *top;

    if (d->n == 0)
        return false;
    snprintf(path, sizeof(path), "%s/%s", pin_dir, d->files[0]);
    if (lstat(path, &pin) != 0 || pin.st_nlink < 2)
        return false; /* the only link left: the original is gone */
    snprintf(path, sizeof(path), "%s/%s", job->watch_dir, d->files[0]);
    if (lstat(path, &st) == 0 && st.st_ino == pin.st_ino && st.st_dev == pin.st_dev)
        return true;
    if ((top = opendir(job->watch_dir)) == NULL)
        return false;
    for (size_t i = 0; !found && (de = readdir(top)) != NULL && i < RECOVER_MAX_DIRS; i++) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s/%s", job->watch_dir, de->d_name, d->files[0]);
        found = lstat(path, &st) == 0 && st.st_ino == pin.st_ino && st.st_dev == pin.st_dev;
    }
    closedir(top);
    return found;
}

/* Pool thread: a file the scan would find is the journaled one when its inode, size and mtime
 * are those journaled, or (not stat'ed yet) its inode is its pin's; a pushed checkpoint's file
 * without a stat was not pushed (the strategy left it out). */
static void compare_known(struct recover_job *job, struct known_ckpt *k)
{
    k->same = true;
    for (size_t i = 0; i < k->n && k->same; i++) {
        char path[PATH_MAX], pin[PATH_MAX];
        struct stat st, ps;
        const struct journal_file *f = &k->stats[i];
        if (k->dir[0] == '\0')
            snprintf(path, sizeof(path), "%s/%s", job->watch_dir, k->files[i]);
        else
            snprintf(path, sizeof(path), "%s/%s/%s", job->watch_dir, k->dir, k->files[i]);
        if (stat(path, &st) != 0) { /* follows a symlink, as its pin did */
            k->same = errno == ENOENT;
            continue;
        }
        if (f->have_stat) {
            k->same = f->size == (uint64_t)st.st_size && f->ino == (uint64_t)st.st_ino &&
                      f->mtime_ns == (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
            continue;
        }
        snprintf(pin, sizeof(pin), "%s/%" PRIu64 "/%s", job->pins, k->id, k->files[i]);
        if (lstat(pin, &ps) != 0)
            k->same = k->pushed;
        else
            k->same = ps.st_ino == st.st_ino && ps.st_dev == st.st_dev;
    }
}

static void recover_work(uv_work_t *w)
{
    struct recover_job *job = w->data;
    DIR *dir = opendir(job->pins);
    struct dirent *de;

    for (size_t i = 0; i < job->n_known; i++)
        compare_known(job, &job->known[i]);

    for (size_t i = 0; i < job->n_names; i++) {
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", job->watch_dir, job->names[i]);
        job->exists[i] = job->names[i][0] != '\0' && lstat(path, &st) == 0;
    }
    if (dir == NULL) {
        job->status = errno == ENOENT ? 0 : -errno;
        return;
    }
    job->dirs = calloc(RECOVER_MAX_DIRS, sizeof(*job->dirs));
    while (job->dirs != NULL && (de = readdir(dir)) != NULL && job->n_dirs < RECOVER_MAX_DIRS) {
        char *end;
        char path[PATH_MAX];
        struct pin_dir *d = &job->dirs[job->n_dirs];
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        errno = 0;
        d->id = strtoull(de->d_name, &end, 10);
        if (errno != 0 || *end != '\0')
            continue;
        job->n_dirs++;
        snprintf(path, sizeof(path), "%s/%s", job->pins, de->d_name);
        uv_once(&walk_once, walk_lock_init);
        uv_mutex_lock(&walk_lock);
        walking_dir = d;
        walking_base = strlen(path) + 1;
        nftw(path, collect, 16, FTW_PHYS);
        walking_dir = NULL;
        uv_mutex_unlock(&walk_lock);
        if (d->n > 1)
            qsort(d->files, d->n, sizeof(*d->files), cmp_str);
        d->original = original_exists(job, path, d);
    }
    closedir(dir);
}

static struct pin_dir *find_dir(struct recover_job *job, uint64_t id)
{
    for (size_t i = 0; i < job->n_dirs; i++)
        if (job->dirs[i].id == id)
            return &job->dirs[i];
    return NULL;
}

static void release_quietly(struct queue *q, uint64_t id)
{
    pin_release(q->deps.pin, id, NULL, NULL);
}

static int cmp_seq(const void *a, const void *b)
{
    const struct journal_ckpt *x = *(struct journal_ckpt *const *)a;
    const struct journal_ckpt *y = *(struct journal_ckpt *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void requeue(struct queue *q, struct item ***tail, uint64_t id, const char *name,
                    const char *layout, int64_t step, const char *const *files, size_t n,
                    bool journaled_already)
{
    struct item *it = item_new(q, id, name, layout, step, NULL, files, n);

    if (it == NULL) {
        log_error("recover-failed", "pin=%" PRIu64 " reason='out of memory', pins kept", id);
        return;
    }
    it->recovered = true;
    it->journaled = journaled_already;
    it->state = QUEUE_WAITING;
    **tail = it;
    *tail = &it->next;
    q->waiting++;
}

static void take_known(struct recover_job *job, uint64_t id)
{
    for (size_t i = 0; i < job->n_known; i++)
        if (job->known[i].id == id)
            job->known[i].taken = true;
}

/* The checkpoints recovery keeps, unchanged on disk: the scan is to leave them alone. */
static void report_owned(struct queue *q, struct recover_job *job)
{
    for (size_t i = 0; i < job->n_known && q->deps.owned != NULL; i++) {
        struct known_ckpt *k = &job->known[i];
        struct journal_ckpt *c = journal_ckpt_find(q->journal, k->id);
        if (!k->taken || !k->same || c == NULL)
            continue;
        q->deps.owned(q->deps.recovery_ctx, c->name, c->layout, (const char *const *)k->files,
                      k->n);
    }
}

static void known_free(struct recover_job *job)
{
    for (size_t i = 0; i < job->n_known; i++) {
        struct known_ckpt *k = &job->known[i];
        for (size_t f = 0; f < k->n; f++)
            free(k->files[f]);
        free(k->files);
        free(k->stats);
        free(k->dir);
    }
    free(job->known);
}

/* Copies what compare_known needs of each sealed or pushed checkpoint with a detector layout. */
static int known_collect(struct queue *q, struct recover_job *job)
{
    size_t n = 0;
    for (struct journal_ckpt *c = journal_ckpts(q->journal); c != NULL; c = c->next)
        n++;
    if ((job->known = calloc(n ? n : 1, sizeof(*job->known))) == NULL)
        return -ENOMEM;
    for (struct journal_ckpt *c = journal_ckpts(q->journal); c != NULL; c = c->next) {
        char dir[PATH_MAX];
        struct known_ckpt *k = &job->known[job->n_known];
        if (c->state == JOURNAL_DETECTED || c->id >= q->deps.new_ids_from || c->name == NULL ||
            c->layout == NULL || c->n_files == 0 ||
            detect_layout_dir(c->layout, c->name, dir, sizeof(dir)) < 0)
            continue;
        job->n_known++;
        k->id = c->id;
        k->pushed = c->state == JOURNAL_COMMITTED || c->state == JOURNAL_RELEASED;
        k->dir = strdup(dir);
        k->files = calloc(c->n_files, sizeof(*k->files));
        k->stats = calloc(c->n_files, sizeof(*k->stats));
        if (k->dir == NULL || k->files == NULL || k->stats == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < c->n_files; i++, k->n++) {
            if ((k->files[i] = strdup(c->files[i].path)) == NULL)
                return -ENOMEM;
            k->stats[i] = c->files[i];
            k->stats[i].path = NULL; /* not owned here */
        }
    }
    return 0;
}

static void after_recover(uv_work_t *w, int status)
{
    struct recover_job *job = w->data;
    struct queue *q = job->q;
    struct item *first = NULL, **tail = &first;
    size_t n = 0, k = 0, requeued = 0, released = 0;
    struct journal_ckpt **order;

    if (status == 0 && job->status < 0)
        log_warn("recover-failed", "dir='%s' reason='%s', pushing only new checkpoints", job->pins,
                 strerror(-job->status));
    for (struct journal_ckpt *c = journal_ckpts(q->journal); c != NULL; c = c->next)
        n++;
    order = calloc(n ? n : 1, sizeof(*order));
    for (struct journal_ckpt *c = journal_ckpts(q->journal); order != NULL && c != NULL;
         c = c->next)
        order[k++] = c;
    if (order != NULL)
        qsort(order, k, sizeof(*order), cmp_seq);
    for (size_t i = 0, u = 0; order != NULL && i < k; i++) {
        struct journal_ckpt *c = order[i];
        struct pin_dir *d = find_dir(job, c->id);
        bool unsealed = c->state == JOURNAL_DETECTED;
        bool original = false;
        if (unsealed && u < job->n_names)
            original = job->exists[u++];
        if (c->id >= q->deps.new_ids_from)
            continue;
        if (d != NULL)
            d->id = 0; /* known */
        if (c->state == JOURNAL_COMMITTED || c->state == JOURNAL_RELEASED) {
            take_known(job, c->id);
            if (d != NULL) {
                release_quietly(q, c->id);
                released++;
                if (c->state == JOURNAL_COMMITTED)
                    journal_set_state(q->journal, c->id, JOURNAL_RELEASED, NULL, on_journal_written,
                                      NULL);
            }
            continue;
        }
        if (d == NULL || (unsealed && original) || (unsealed && d->n == 0)) {
            /* no pins: nothing to push from (the scan finds the original if it is still
             * there); an unsealed one whose original is still there is sealed again by the
             * scan, from new pins */
            if (d == NULL && !unsealed)
                log_warn("recover-lost",
                         "ckpt='%s' pin=%" PRIu64 " state=%s reason='its pins are gone', "
                         "pushed again only if the scan finds it",
                         c->name ? c->name : "", c->id, journal_state_name(c->state));
            if (d != NULL)
                release_quietly(q, c->id);
            journal_forget(q->journal, c->id, on_journal_written, NULL);
            continue;
        }
        if (unsealed) {
            log_warn("recovered-unsealed",
                     "ckpt='%s' pin=%" PRIu64 " files=%zu reason='its original is gone: pushing "
                     "what was pinned'",
                     c->name ? c->name : "", c->id, d->n);
            requeue(q, &tail, c->id, c->name ? c->name : "", c->layout ? c->layout : "explicit-dir",
                    c->step, (const char *const *)d->files, d->n, false);
        } else {
            const char **files = calloc(c->n_files ? c->n_files : 1, sizeof(*files));
            for (size_t f = 0; files != NULL && f < c->n_files; f++)
                files[f] = c->files[f].path;
            log_info("recovered", "ckpt='%s' pin=%" PRIu64 " state=%s files=%zu%s%s%s",
                     c->name ? c->name : "", c->id, journal_state_name(c->state), c->n_files,
                     c->error ? " error='" : "", c->error ? c->error : "", c->error ? "'" : "");
            if (files != NULL)
                requeue(q, &tail, c->id, c->name ? c->name : "",
                        c->layout ? c->layout : "explicit-dir", c->step, files, c->n_files, true);
            free(files);
            take_known(job, c->id);
        }
        requeued++;
    }
    free(order);
    /* Pins the journal does not know. With a sound journal they belong to a candidate that
     * died in the milliseconds between its first file and its journal record: its original
     * is still there and the scan finds it again. With a damaged or missing journal they may be
     * anything: pushed under a name of their own rather than lost. */
    bool damaged = journal_corrupt_records(q->journal) > 0 || k == 0;
    for (size_t i = 0; i < job->n_dirs; i++) {
        struct pin_dir *d = &job->dirs[i];
        char name[48];
        if (d->id == 0 || d->id >= q->deps.new_ids_from)
            continue;
        if (d->n == 0 || !damaged || d->original) {
            if (d->n > 0)
                log_info("released-unknown",
                         "pin=%" PRIu64 " files=%zu reason='never journaled: the scan finds its "
                         "original'",
                         d->id, d->n);
            release_quietly(q, d->id);
            continue;
        }
        snprintf(name, sizeof(name), "recovered-%" PRIu64, d->id);
        log_warn("recovered-unknown",
                 "pin=%" PRIu64 " files=%zu name='%s' reason='pins the journal does not know: "
                 "pushed under their own folder'",
                 d->id, d->n, name);
        requeue(q, &tail, d->id, name, "explicit-dir", -1, (const char *const *)d->files, d->n,
                false);
        requeued++;
    }
    /* recovered ones go before everything sealed by this run */
    if (first != NULL) {
        *tail = q->head;
        if (q->head == NULL) {
            q->tail = first;
            while (q->tail->next != NULL)
                q->tail = q->tail->next;
        }
        q->head = first;
    }
    log_info("recovery", "journal_corrupt_records=%u requeued=%zu released=%zu",
             journal_corrupt_records(q->journal), requeued, released);
    report_owned(q, job);
    for (size_t i = 0; i < job->n_dirs; i++) {
        for (size_t f = 0; f < job->dirs[i].n; f++)
            free(job->dirs[i].files[f]);
        free(job->dirs[i].files);
    }
    free(job->dirs);
    for (size_t i = 0; i < job->n_names; i++)
        free(job->names[i]);
    free(job->names);
    free(job->exists);
    free(job->pins);
    free(job->watch_dir);
    known_free(job);
    free(job);
    q->recovered = true;
    flush_notes(q);
    staging_scan(q);
    for (struct item *it = q->head; it != NULL; it = it->next)
        if (it->journaled && it->recovered)
            set_state(q, it, QUEUE_WAITING);
    journal_waiting(q);
    if (q->deps.recovered != NULL)
        q->deps.recovered(q->deps.recovery_ctx);
}

static void on_journal_open(void *ctx, int status)
{
    struct queue *q = ctx;
    struct recover_job *job = calloc(1, sizeof(*job));
    size_t n = 0;

    if (status < 0)
        log_error("journal-failed", "dir='%s' reason='%s', pushing without a journal", q->staging,
                  uv_strerror(status));
    for (struct journal_ckpt *c = journal_ckpts(q->journal); c != NULL; c = c->next)
        n += c->state == JOURNAL_DETECTED;
    if (job == NULL || asprintf(&job->pins, "%s/pins", q->staging) < 0 ||
        (job->watch_dir = strdup(q->deps.cfg->watch_dir)) == NULL ||
        (job->names = calloc(n ? n : 1, sizeof(char *))) == NULL ||
        (job->exists = calloc(n ? n : 1, sizeof(bool))) == NULL)
        goto fail;
    /* in seq order, as after_recover walks them */
    {
        struct journal_ckpt **order = calloc(n ? n : 1, sizeof(*order));
        size_t k = 0;
        if (order == NULL)
            goto fail;
        for (struct journal_ckpt *c = journal_ckpts(q->journal); c != NULL; c = c->next)
            if (c->state == JOURNAL_DETECTED)
                order[k++] = c;
        qsort(order, k, sizeof(*order), cmp_seq);
        for (size_t i = 0; i < k; i++)
            job->names[job->n_names++] = strdup(order[i]->name ? order[i]->name : "");
        free(order);
    }
    job->q = q;
    job->work.data = job;
    if (known_collect(q, job) == 0 &&
        uv_queue_work(q->deps.loop, &job->work, recover_work, after_recover) == 0)
        return;
fail:
    if (job != NULL) {
        known_free(job);
        for (size_t i = 0; i < job->n_names; i++)
            free(job->names[i]);
        free(job->names);
        free(job->exists);
        free(job->pins);
        free(job->watch_dir);
        free(job);
    }
    log_error("recover-failed", "dir='%s' reason='out of memory'", q->staging);
    q->recovered = true;
    flush_notes(q);
    journal_waiting(q);
    if (q->deps.recovered != NULL)
        q->deps.recovered(q->deps.recovery_ctx);
}

/* ---- the rest of the API ------------------------------------------------------------------ */

int queue_new(struct queue **ret, const struct queue_deps *deps, queue_event_cb cb, void *ctx)
{
    struct queue *q = calloc(1, sizeof(*q));
    char path[PATH_MAX];
    int rc;

    if (q == NULL)
        return -ENOMEM;
    q->deps = *deps;
    q->bucket_retire_again = true;
    if (q->deps.new_ids_from == 0)
        q->deps.new_ids_from = UINT64_MAX;
    q->cb = cb;
    q->ctx = ctx;
    q->staging_stale = true; /* not measured yet */
    /* the journal lives beside the pins: <staging>/pins/<id>/<file> */
    if ((rc = pin_path(deps->pin, 0, "x", path, sizeof(path))) < 0) {
        free(q);
        return rc;
    }
    path[strlen(path) - strlen("/pins/0/x")] = '\0';
    if ((q->staging = strdup(path)) == NULL) {
        free(q);
        return -ENOMEM;
    }
    if ((rc = journal_open(&q->journal, deps->loop, q->staging, on_journal_open, q)) < 0) {
        free(q->staging);
        free(q);
        return rc;
    }
    uv_timer_init(deps->loop, &q->retry_timer);
    q->retry_timer.data = q;
    uv_timer_init(deps->loop, &q->budget_timer);
    q->budget_timer.data = q;
    *ret = q;
    return 0;
}

void queue_set_ready(struct queue *q, bool ready)
{
    q->ready = ready;
    pump(q);
}

void queue_set_paused(struct queue *q, bool paused)
{
    q->paused = paused;
    pump(q);
}

bool queue_paused(const struct queue *q)
{
    return q->paused;
}

size_t queue_pending(const struct queue *q)
{
    return q->waiting + (q->active != NULL);
}

unsigned queue_committed_count(const struct queue *q)
{
    return q->committed;
}

unsigned queue_failed_count(const struct queue *q)
{
    return q->failed;
}

void queue_for_each(const struct queue *q, queue_event_cb cb, void *ctx)
{
    struct queue_item_view view;
    size_t kept = q->history_next < QUEUE_HISTORY ? q->history_next : QUEUE_HISTORY;

    if (q->active != NULL) {
        view_of(q, q->active, &view);
        cb(ctx, &view);
    }
    for (const struct item *it = q->head; it != NULL; it = it->next) {
        view_of(q, it, &view);
        cb(ctx, &view);
    }
    for (size_t i = 1; i <= kept; i++) {
        view_of(q, q->history[(q->history_next - i) % QUEUE_HISTORY], &view);
        cb(ctx, &view);
    }
}

bool queue_retry_failed(struct queue *q, const char *name)
{
    size_t kept = q->history_next < QUEUE_HISTORY ? q->history_next : QUEUE_HISTORY;

    for (size_t i = 1; i <= kept; i++) {
        const struct item *old = q->history[(q->history_next - i) % QUEUE_HISTORY];
        struct item *it;
        if (strcmp(old->name, name) != 0)
            continue;
        if (old->state != QUEUE_FAILED || old->source_dir != NULL)
            return false; /* its newest push did not fail */
        it = item_new(q, old->id, old->name, old->layout, old->step, NULL,
                      (const char *const *)old->files, old->file_count);
        if (it == NULL || (old->title != NULL && (it->title = strdup(old->title)) == NULL)) {
            item_free(it);
            return false;
        }
        log_info("push-retry", "ckpt='%s' reason='asked for: it failed with %s'", it->name,
                 old->error ? old->error : "an error");
        it->journaled = true; /* its sealed record is in the journal, with its pins */
        it->state = QUEUE_WAITING;
        it->next = q->head;
        q->head = it;
        if (q->tail == NULL)
            q->tail = it;
        q->waiting++;
        set_state(q, it, QUEUE_WAITING);
        pump(q);
        return true;
    }
    return false;
}

bool queue_knows(const struct queue *q, const char *name)
{
    size_t kept = q->history_next < QUEUE_HISTORY ? q->history_next : QUEUE_HISTORY;

    if (q->active != NULL && strcmp(q->active->name, name) == 0)
        return true;
    for (const struct item *it = q->head; it != NULL; it = it->next)
        if (strcmp(it->name, name) == 0)
            return true;
    for (size_t i = 1; i <= kept; i++) {
        const struct item *it = q->history[(q->history_next - i) % QUEUE_HISTORY];
        if (it->state == QUEUE_COMMITTED && strcmp(it->name, name) == 0)
            return true;
    }
    return false;
}

/* The last one waiting of this name (an explicit push of the same path again queues it behind the
 * first), else the one in flight. */
static struct item *pending_named(const struct queue *q, const char *name)
{
    struct item *found = NULL;

    for (struct item *it = q->head; it != NULL; it = it->next)
        if (strcmp(it->name, name) == 0)
            found = it;
    if (found == NULL && q->active != NULL && strcmp(q->active->name, name) == 0)
        found = q->active;
    return found;
}

int queue_set_title(struct queue *q, const char *name, const char *title, const char **ret_reason)
{
    struct item *it = pending_named(q, name);
    char *copy;
    int rc;

    if (it == NULL) {
        size_t kept = q->history_next < QUEUE_HISTORY ? q->history_next : QUEUE_HISTORY;
        for (size_t i = 1; i <= kept; i++) {
            const struct item *old = q->history[(q->history_next - i) % QUEUE_HISTORY];
            if (strcmp(old->name, name) != 0)
                continue;
            *ret_reason = old->state == QUEUE_COMMITTED ? "it is committed already"
                          : old->state == QUEUE_SKIPPED
                              ? "it was not pushed (skipped or superseded)"
                              : "its push ended";
            return old->state == QUEUE_COMMITTED ? -EALREADY : -ENOENT;
        }
        *ret_reason = "no checkpoint of that name is waiting or being pushed";
        return -ENOENT;
    }
    if (it->part_off > 0) {
        *ret_reason = "the first of its commits is made already";
        return -EALREADY;
    }
    if (it->upload != NULL && (rc = upload_set_message(it->upload, title)) < 0) {
        *ret_reason = rc == -EALREADY ? "its commit is being made" : "out of memory";
        return rc;
    }
    if ((copy = strdup(title)) == NULL) {
        *ret_reason = "out of memory";
        return -ENOMEM;
    }
    free(it->title);
    it->title = copy;
    if (it->plan.message != NULL && use_title(it) < 0) {
        *ret_reason = "out of memory";
        return -ENOMEM;
    }
    *ret_reason = NULL;
    return 0;
}

void queue_stop(struct queue *q)
{
    if (q->stopped)
        return;
    q->stopped = true;
    uv_close((uv_handle_t *)&q->retry_timer, NULL);
    uv_close((uv_handle_t *)&q->budget_timer, NULL);
    if (q->active != NULL && q->active->upload != NULL) {
        upload_cancel(q->active->upload);
    } else if (q->active != NULL && q->active->bpush != NULL) {
        bucket_push_cancel(q->active->bpush);
    } else if (q->active != NULL && q->active->part_waiting) {
        /* between two commits of one checkpoint: the next start pushes the rest */
        set_error(q->active, "stopped while its next commit waited for the commit budget");
        log_warn("push-interrupted", "ckpt='%s' reason='%s' next='resumed at the next start'",
                 q->active->name, q->active->error);
        finish(q, q->active, QUEUE_FAILED);
    } else if (q->active != NULL && q->active->state == QUEUE_WAITING) {
        finish(q, q->active, QUEUE_FAILED); /* waiting for a retry */
    }
}

int queue_add_refused(struct queue *q, uint64_t id, const char *name, const char *layout,
                      int64_t step, const char *const *files, size_t file_count, const char *reason)
{
    return add_item(q, id, name, layout, step, NULL, files, file_count, reason);
}

size_t queue_fail_waiting(struct queue *q, const char *kind, const char *reason)
{
    struct item *taken = NULL, **taken_tail = &taken, **at = &q->head;
    size_t n = 0;

    /* Detached first: each failure pumps the queue, which must not start one of them. */
    while (*at != NULL) {
        struct item *it = *at;
        if (it->source_dir != NULL) {
            at = &it->next;
            continue;
        }
        *at = it->next;
        it->next = NULL;
        *taken_tail = it;
        taken_tail = &it->next;
        q->waiting--;
    }
    q->tail = NULL;
    for (struct item *it = q->head; it != NULL; it = it->next)
        q->tail = it;
    while (taken != NULL) {
        struct item *it = taken;
        taken = it->next;
        it->next = NULL;
        fail(q, it, kind, reason);
        n++;
    }
    return n;
}

void queue_staging_renewed(struct queue *q)
{
    journal_rewrite(q->journal);
}

void queue_free(struct queue *q)
{
    struct item *it, *next;

    if (q == NULL)
        return;
    item_free(q->active);
    for (it = q->head; it != NULL; it = next) {
        next = it->next;
        item_free(it);
    }
    for (size_t i = 0; i < QUEUE_HISTORY; i++)
        item_free(q->history[i]);
    for (size_t i = 0; i < q->n_notes; i++) {
        free(q->notes[i].name);
        free(q->notes[i].layout);
    }
    while (q->pin_calls != NULL) /* dropped unanswered when the pin module closed */
        pin_call_free(q->pin_calls);
    journal_free(q->journal);
    free(q->staging);
    free(q);
}
