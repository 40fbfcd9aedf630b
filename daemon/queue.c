/* queue.c - one push at a time, in the order checkpoints were sealed. */
#include "queue.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pin.h"
#include "strategy.h"

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
    uint64_t sealed_at_ms;
    uint64_t upload_started_ms;
    uint64_t finished_ms;
    struct strategy_plan plan;
    char **local_paths;
    struct upload *upload;
    struct upload_progress progress; /* kept after the upload is freed */
    char commit[41];
    char *error;
};

struct queue {
    struct queue_deps deps;
    queue_event_cb cb;
    void *ctx;
    struct item *head;
    struct item *tail;
    size_t waiting;
    struct item *active;
    struct item *history[QUEUE_HISTORY]; /* ring, newest at history_next - 1 */
    size_t history_next;
    bool ready;
    bool paused;
    bool stopped;
    unsigned committed;
    unsigned failed;
};

static void pump(struct queue *q);

const char *queue_state_name(enum queue_state state)
{
    static const char *const names[] = {
        [QUEUE_WAITING] = "waiting",     [QUEUE_PINNING] = "pinning",
        [QUEUE_UPLOADING] = "uploading", [QUEUE_COMMITTED] = "committed",
        [QUEUE_FAILED] = "failed",       [QUEUE_SKIPPED] = "skipped",
    };
    return (unsigned)state < sizeof(names) / sizeof(names[0]) ? names[state] : "unknown";
}

static uint64_t now_ms(const struct queue *q)
{
    uv_update_time(q->deps.loop);
    return uv_now(q->deps.loop);
}

static void item_free(struct item *it)
{
    if (it == NULL)
        return;
    for (size_t i = 0; i < it->file_count; i++)
        free(it->files[i]);
    if (it->local_paths != NULL)
        for (size_t i = 0; i < it->plan.count; i++)
            free(it->local_paths[i]);
    free(it->local_paths);
    strategy_plan_release(&it->plan);
    upload_free(it->upload);
    free(it->files);
    free(it->name);
    free(it->layout);
    free(it->source_dir);
    free(it->error);
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
    v->step = it->step;
    v->files = it->file_count;
    v->message = it->plan.message ? it->plan.message : "";
    v->commit = it->commit;
    v->error = it->error ? it->error : "";
    if (it->upload != NULL)
        upload_get_progress(it->upload, &v->progress);
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

/* The item leaves the active slot for the history; the next one starts. */
static void finish(struct queue *q, struct item *it, enum queue_state state)
{
    struct item **slot = &q->history[q->history_next % QUEUE_HISTORY];

    if (it->upload != NULL) {
        upload_get_progress(it->upload, &it->progress);
        upload_free(it->upload);
        it->upload = NULL;
    }
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
    pump(q);
}

static void fail(struct queue *q, struct item *it, const char *kind, const char *reason)
{
    free(it->error);
    it->error = strdup(reason);
    /* The pins are kept: the checkpoint is not lost, only not pushed yet. */
    log_error("push-failed", "ckpt='%s' kind=%s reason='%s' pins='%s/pins/%" PRIu64 "'", it->name,
              kind, reason, q->deps.cfg->staging_dir, it->id);
    finish(q, it, QUEUE_FAILED);
}

static void on_released(void *ctx, int status)
{
    struct item *it = ctx;

    if (status < 0)
        log_warn("release-failed", "ckpt='%s' reason='%s'", it->name, strerror(-status));
    finish(it->queue, it, it->commit[0] ? QUEUE_COMMITTED : QUEUE_SKIPPED);
}

static void release(struct queue *q, struct item *it)
{
    if (it->source_dir != NULL)
        on_released(it, 0);
    else if (pin_release(q->deps.pin, it->id, on_released, it) < 0)
        on_released(it, 0);
}

static void on_uploaded(void *ctx, const struct ckpt_err *err, const char *commit_oid)
{
    struct item *it = ctx;
    struct queue *q = it->queue;
    struct queue_item_view view;

    if (err != NULL) {
        fail(q, it, ckpt_err_kind_name(err->kind), err->msg);
        return;
    }
    snprintf(it->commit, sizeof(it->commit), "%s", commit_oid);
    view_of(q, it, &view);
    log_info("committed",
             "ckpt='%s' commit=%s files=%zu skipped=%zu bytes=%" PRIu64 " sent=%" PRIu64
             " seconds=%.3f message='%s'",
             it->name, it->commit, view.progress.files_total, view.progress.files_skipped,
             view.progress.bytes_total, view.progress.bytes_sent, view.seconds, it->plan.message);
    release(q, it);
}

static void start_upload(struct queue *q, struct item *it)
{
    struct upload_file *files = NULL;
    char path[PATH_MAX];
    int rc;

    if ((rc = strategy_plan(q->deps.cfg->strategy, it->layout, it->name, it->step,
                            (const char *const *)it->files, it->file_count, &it->plan)) < 0)
        goto fail;
    if (it->plan.count == 0 || q->deps.hub == NULL) {
        log_info("skipped", "ckpt='%s' reason='%s'", it->name,
                 q->deps.hub == NULL ? "dry run" : "the strategy pushes none of its files");
        release(q, it);
        return;
    }
    it->local_paths = calloc(it->plan.count, sizeof(*it->local_paths));
    files = calloc(it->plan.count, sizeof(*files));
    if (it->local_paths == NULL || files == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < it->plan.count; i++) {
        if (it->source_dir != NULL)
            snprintf(path, sizeof(path), "%s/%s", it->source_dir, it->plan.items[i].file);
        else if ((rc = pin_path(q->deps.pin, it->id, it->plan.items[i].file, path, sizeof(path))) <
                 0)
            goto fail;
        if ((it->local_paths[i] = strdup(path)) == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
        files[i].path_in_repo = it->plan.items[i].path_in_repo;
        files[i].local_path = it->local_paths[i];
    }
    rc = upload_start(&it->upload, q->deps.hub, q->deps.hashes, files, it->plan.count,
                      it->plan.message, NULL, on_uploaded, it);
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
    start_upload(it->queue, it);
}

static void on_pins_idle(void *ctx, int status)
{
    struct item *it = ctx;
    struct queue *q = it->queue;

    (void)status; /* a file lost before it was pinned was logged by the daemon */
    if (pin_copies_pending(q->deps.pin, it->id) > 0 &&
        pin_copy_pending(q->deps.pin, it->id, on_pins_copied, it) == 0)
        return;
    start_upload(q, it);
}

static void pump(struct queue *q)
{
    struct item *it;

    if (q->active != NULL || q->head == NULL || q->stopped || q->paused || !q->ready)
        return;
    it = q->head;
    q->head = it->next;
    if (q->head == NULL)
        q->tail = NULL;
    it->next = NULL;
    q->waiting--;
    q->active = it;
    set_state(q, it, QUEUE_PINNING);
    if (it->source_dir != NULL)
        start_upload(q, it);
    else if (pin_when_idle(q->deps.pin, it->id, on_pins_idle, it) < 0)
        on_pins_idle(it, 0);
}

int queue_new(struct queue **ret, const struct queue_deps *deps, queue_event_cb cb, void *ctx)
{
    struct queue *q = calloc(1, sizeof(*q));

    if (q == NULL)
        return -ENOMEM;
    q->deps = *deps;
    q->cb = cb;
    q->ctx = ctx;
    *ret = q;
    return 0;
}

int queue_add(struct queue *q, uint64_t id, const char *name, const char *layout, int64_t step,
              const char *source_dir, const char *const *files, size_t file_count)
{
    struct item *it;

    if (q->waiting >= QUEUE_MAX_WAITING)
        return -ENOBUFS;
    if ((it = calloc(1, sizeof(*it))) == NULL)
        return -ENOMEM;
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
    if (q->tail != NULL)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    q->waiting++;
    set_state(q, it, QUEUE_WAITING);
    pump(q);
    return 0;
oom:
    item_free(it);
    return -ENOMEM;
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

void queue_stop(struct queue *q)
{
    q->stopped = true;
    if (q->active != NULL && q->active->upload != NULL)
        upload_cancel(q->active->upload);
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
    free(q);
}
