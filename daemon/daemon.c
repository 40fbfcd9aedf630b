/* daemon.c - one ckptpushd: watch events go to the detector, the files it claims are pinned at
 * first sight, sealed checkpoints go to the push queue; startup checks of the hub, signals, the
 * drain, and the operations the control socket asks for. Loop thread only; everything slow
 * happens in the modules it calls (thread pool, curl multi).
 */
#include "daemon.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "admit.h"
#include "bucket_push.h"
#include "card.h"
#include "card_job.h"
#include "control.h"
#include "coord_client.h"
#include "coord_server.h"
#include "detect.h"
#include "hash.h"
#include "http.h"
#include "hub.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "pin.h"
#include "priority.h"
#include "queue.h"
#include "watch.h"
#include "xet_session.h"

#define STAGING_SKIP_NAME ".ckptpush"
#define MAX_WAITERS 64
#define LOST_IDS_MAX 64
#define EXPLICIT_PUSH_MAX_FILES 100000

/* Someone waiting for the queue to run dry: final, flush. */
struct waiter {
    daemon_done_cb cb;
    void *ctx;
    uint64_t deadline_ms; /* 0: none */
    unsigned failed_before;
};

struct daemon {
    uv_loop_t *loop;
    const struct config *cfg;
    struct watch *watch;
    struct detect *detect;
    struct pin *pin;
    struct hash_pool *hashes;
    struct http *http;
    struct hub *hub;
    struct xet_session *xet; /* NULL in dry-run */
    /* --bucket: the bucket and its Xet session (its own write token). The same as hub and xet
     * when there is no --repo (owned once, by those). */
    struct hub *bucket_hub;
    struct xet_session *bucket_xet;
    char *xet_dir; /* <staging>/xet: the shard cache and xorbs being sent */
    char *xet_work_dir;
    struct hub_op *startup_op;
    struct queue *queue;
    struct control *control;
    struct coord_server *coord_server; /* several nodes, rank 0 */
    struct coord_client *coord_client; /* several nodes, every rank */
    struct metrics *metrics;           /* NULL without --metrics-path */
    struct notify_watchdog *watchdog;  /* NULL unless systemd asked for one */

    uv_timer_t detect_timer;
    uv_timer_t drain_timer;
    uv_timer_t waiter_timer;
    uv_signal_t sig_term;
    uv_signal_t sig_int;
    uv_signal_t sig_usr1;
    uv_signal_t sig_hup;
    unsigned drain_timeout_s; /* reloadable */

    struct waiter waiters[MAX_WAITERS];
    size_t waiter_count;
    char last_commit[41];
    uint64_t explicit_ids; /* ids of explicit pushes count down from UINT64_MAX */
    uint64_t id_base;      /* pin id = id_base + detect id: unique across restarts */
    uint64_t started_ms;

    /* Checkpoints a file of which was gone before it could be pinned (most recent ones). */
    uint64_t lost_ids[LOST_IDS_MAX];
    size_t lost_next;

    daemon_event_cb event_cb;
    void *event_ctx;

    bool hub_ready;
    bool draining;
    bool stopping;
    int exit_code;

    /* Training end: what the trainer sent with `final`, and the end-of-training commit. */
    char *final_metrics_json;
    char *final_hparams_json;
    bool final_requested;
    bool end_commit_queued; /* the model-root or card-only commit of this run */
    unsigned cards_pending;
    unsigned admits_pending;  /* sealed checkpoints whose files are being checked (admit.c) */
    struct admit_req *admits; /* those checkpoints, for a push of one of them meanwhile */
    uint64_t files_skipped;   /* left out of their checkpoints, each named in the log */

    /* The watched directory deleted or moved away: each loss starts an epoch; a checkpoint
     * sealed in an epoch before pins_deleted_epoch lost its pins with the staging directory. */
    unsigned root_epoch;
    unsigned pins_deleted_epoch;
    char moved_staging[PATH_MAX]; /* the staging directory, moved along with the root; "" */

    /* run mode: the wrapped training command */
    uv_process_t child;
    bool child_running;
    int child_exit;      /* its exit status, 128+signal when killed */
    int startup_failure; /* exit code of a failed hub check, reported after the child ends */
};

static void daemon_stop(struct daemon *d, int exit_code);
static void on_detect_timer(uv_timer_t *timer);
static void finish_waiters(struct daemon *d);

/* Nothing sealed is still on its way: checked, carded, queued or pushing. */
static bool drain_done(const struct daemon *d)
{
    return queue_pending(d->queue) == 0 && d->cards_pending == 0 && d->admits_pending == 0;
}

/* How a drain that ran to its end exits: in run mode the command's status comes first. */
static int drained_exit_code(const struct daemon *d)
{
    bool pushed_all = queue_failed_count(d->queue) == 0 && d->startup_failure == 0;

    if (d->cfg->child_argv == NULL)
        return pushed_all           ? CKPT_EXIT_OK
               : d->startup_failure ? d->startup_failure
                                    : CKPT_EXIT_FAILURE;
    if (d->child_exit != 0)
        return d->child_exit;
    return pushed_all ? CKPT_EXIT_OK : CKPT_EXIT_WRAPPED_PUSH_FAILED;
}

/* How a drain cut short (its deadline, a second signal) exits: pushes were left undone. In run
 * mode the command's own failure still comes first, else the push failure of run mode. */
static int cut_short_exit_code(const struct daemon *d)
{
    if (d->cfg->child_argv == NULL)
        return CKPT_EXIT_FAILURE;
    return d->child_exit != 0 ? d->child_exit : CKPT_EXIT_WRAPPED_PUSH_FAILED;
}

static int64_t now_ms(struct daemon *d)
{
    uv_update_time(d->loop);
    return (int64_t)uv_now(d->loop);
}

/* --- detection: events in, pins and sealed checkpoints out ------------------------------- */

/* Pins of earlier runs may still wait under their ids: this run's ids start past them. */
static uint64_t pin_id(const struct daemon *d, const struct detect_cand *c)
{
    return d->id_base + detect_cand_id(c);
}

static void rearm_detect_timer(struct daemon *d)
{
    int64_t deadline = detect_next_deadline_ms(d->detect);
    int64_t now = (int64_t)uv_now(d->loop);

    if (d->stopping)
        return;
    if (deadline < 0) {
        uv_timer_stop(&d->detect_timer);
        return;
    }
    uv_timer_start(&d->detect_timer, on_detect_timer,
                   deadline > now ? (uint64_t)(deadline - now) : 0, 0);
}

static void on_detect_timer(uv_timer_t *timer)
{
    struct daemon *d = timer->data;

    /* Events still queued in the kernel (the loop was busy) may predate the deadline. */
    if (d->watch != NULL)
        watch_read_now(d->watch);
    detect_tick(d->detect, now_ms(d));
    rearm_detect_timer(d);
}

static void on_root_lost(struct daemon *d, const char *moved_to);
static void on_root_back(struct daemon *d);

static void on_watch_event(void *ctx, const struct watch_event *ev)
{
    struct daemon *d = ctx;

    if (d->stopping)
        return;
    if (ev->kind == WATCH_ERROR) {
        log_error("watch-failed", "path='%s' reason='%s'", ev->path ? ev->path : "",
                  ev->message ? ev->message : strerror(-ev->error));
        return;
    }
    if (ev->kind == WATCH_ROOT_LOST) {
        on_root_lost(d, ev->old_path);
        return;
    }
    if (ev->kind == WATCH_ROOT_BACK) {
        on_root_back(d);
        return;
    }
    if (ev->kind == WATCH_OVERFLOW)
        log_warn("watch-overflow", "reason='the kernel dropped events: rescanning'");
    detect_feed(d->detect, ev, now_ms(d));
    rearm_detect_timer(d);
}

static void on_file_added(void *ctx, const struct detect_cand *c, const char *relpath)
{
    struct daemon *d = ctx;
    char source[PATH_MAX];
    int rc;

    if (detect_cand_source(c, relpath, source, sizeof(source)) != 0)
        return;
    queue_note_detected(d->queue, pin_id(d, c), detect_cand_name(c), detect_cand_layout(c));
    rc = pin_add(d->pin, pin_id(d, c), source, relpath);
    if (rc < 0)
        log_warn("pin-failed", "ckpt='%s' file='%s' reason='%s'", detect_cand_name(c), relpath,
                 strerror(-rc));
}

static void on_file_renamed(void *ctx, const struct detect_cand *c, const char *from,
                            const char *to)
{
    struct daemon *d = ctx;

    pin_rename(d->pin, pin_id(d, c), from, to);
}

static void on_file_removed(void *ctx, const struct detect_cand *c, const char *relpath)
{
    struct daemon *d = ctx;

    pin_remove(d->pin, pin_id(d, c), relpath);
}

/* Hashing a file as soon as its writer is done overlaps the hash with the rest of the save and
 * the quiet period; the upload then finds the digest in the hash cache (same inode, size, mtime)
 * or, if the file changed after all, reads it again. Not under the 'end' strategy, which pushes
 * only what is there at the end, nor while paused. */
static void on_file_ready(void *ctx, const struct detect_cand *c, const char *relpath)
{
    struct daemon *d = ctx;
    char source[PATH_MAX], path[PATH_MAX];

    if (d->stopping || d->queue == NULL || d->cfg->strategy == STRATEGY_END ||
        queue_paused(d->queue) || detect_cand_source(c, relpath, source, sizeof(source)) != 0)
        return;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", d->cfg->watch_dir, source) >= sizeof(path))
        return;
    if (hash_prime(d->hashes, path) == 0)
        log_debug("hash-early", "ckpt='%s' file='%s'", detect_cand_name(c), relpath);
}

static bool pins_lost(const struct daemon *d, uint64_t id)
{
    size_t kept = d->lost_next < LOST_IDS_MAX ? d->lost_next : LOST_IDS_MAX;

    for (size_t i = 0; i < kept; i++)
        if (d->lost_ids[i] == id)
            return true;
    return false;
}

static void on_pin_result(void *ctx, const struct pin_result *res)
{
    struct daemon *d = ctx;

    if (res->status == -ENOENT) {
        log_warn("pin-lost", "pin=%" PRIu64 " file='%s' reason='gone before it could be pinned'",
                 res->id, res->relpath);
        if (!pins_lost(d, res->id))
            d->lost_ids[d->lost_next++ % LOST_IDS_MAX] = res->id;
    } else if (res->status == -EINVAL)
        /* Not a regular file (a symlink, a FIFO): admit.c names it when its checkpoint seals. */
        log_debug("pin-skipped", "pin=%" PRIu64 " file='%s' reason='not a regular file'", res->id,
                  res->relpath);
    else if (res->status < 0)
        log_warn("pin-failed", "pin=%" PRIu64 " file='%s' reason='%s'", res->id, res->relpath,
                 strerror(-res->status));
    else if (res->copy_at_seal)
        log_warn("pin-copy",
                 "pin=%" PRIu64 " file='%s' reason='hard links impossible here: the file is "
                 "copied when its checkpoint is sealed'",
                 res->id, res->relpath);
    else
        log_debug("pinned", "pin=%" PRIu64 " file='%s'", res->id, res->relpath);
}

static void queue_sealed(struct daemon *d, uint64_t id, const char *name, const char *layout,
                         int64_t step, const char *source_dir, const char *const *files, size_t n)
{
    int rc = queue_add(d->queue, id, name, layout, step, source_dir, files, n);

    if (rc < 0 && rc != -ENOBUFS) /* a full queue failed it, and said so */
        /* The pins stay on disk: nothing is lost, the checkpoint is only not pushed now. */
        log_error("push-failed", "ckpt='%s' reason='cannot queue: %s'", name, strerror(-rc));
}

/* --- the end-of-training commit: the output root's files plus the model card -------------- */

struct end_commit {
    struct daemon *daemon;
    uint64_t id;
    char *name;
    char **files;
    size_t count;
    char out_dir[PATH_MAX];
    bool card_only;
};

static void end_commit_free(struct end_commit *e)
{
    for (size_t i = 0; i < e->count; i++)
        free(e->files[i]);
    free(e->files);
    free(e->name);
    free(e);
}

static int end_commit_add_file(struct end_commit *e, const char *file)
{
    for (size_t i = 0; i < e->count; i++)
        if (strcmp(e->files[i], file) == 0)
            return 0;
    char **grown = realloc(e->files, (e->count + 1) * sizeof(*grown));
    if (grown == NULL)
        return -ENOMEM;
    e->files = grown;
    if ((e->files[e->count] = strdup(file)) == NULL)
        return -ENOMEM;
    e->count++;
    return 0;
}

static void on_card_written(void *ctx, const struct ckpt_err *err,
                            const struct card_job_result *res)
{
    struct end_commit *e = ctx;
    struct daemon *d = e->daemon;

    d->cards_pending--;
    if (err != NULL) {
        /* The weights matter more than the card: push them without it. */
        log_warn("card-failed", "reason='%s', pushing without a model card", err->msg);
    } else {
        log_info("card", "file='README.md' curves=%s", res->wrote_svg ? "yes" : "no");
        if (res->pickles[0] != '\0')
            log_warn("pickle-weights",
                     "files='%s' reason='pickle formats can run code when loaded: safetensors is "
                     "the safe format, the card says so'",
                     res->pickles);
        end_commit_add_file(e, "README.md");
        if (res->wrote_svg)
            end_commit_add_file(e, CARD_SVG_NAME);
    }
    if (!d->stopping && e->count > 0)
        queue_sealed(d, e->id, e->name, "model-root", -1, e->card_only ? e->out_dir : NULL,
                     (const char *const *)e->files, e->count);
    end_commit_free(e);
    if (d->draining && drain_done(d))
        daemon_stop(d, drained_exit_code(d));
}

static void write_card(struct end_commit *e)
{
    struct daemon *d = e->daemon;
    char pins[PATH_MAX];
    struct card_job_request req = {
        .repo_id = d->cfg->repo_id,
        .model_dir = NULL,
        .logs_dir = d->cfg->watch_dir,
        .out_dir = e->out_dir,
        .final_metrics_json = d->final_metrics_json,
        .hparams_json = d->final_hparams_json,
        .user_fields_json = d->cfg->card_fields_json,
        .duration_s = -1,
    };

    if (!e->card_only) {
        snprintf(pins, sizeof(pins), "%s/pins/%" PRIu64, d->cfg->staging_dir, e->id);
        snprintf(e->out_dir, sizeof(e->out_dir), "%s", pins);
        req.model_dir = pins;
        req.out_dir = pins;
    }
    if (card_job_start(d->loop, &req, on_card_written, e) < 0) {
        struct ckpt_err err;
        ckpt_err_set(&err, CKPT_ERR_IO, -ENOMEM, "out of memory");
        on_card_written(e, &err, NULL);
    }
}

static void on_end_pins_idle(void *ctx, int status)
{
    (void)status;
    write_card(ctx);
}

/* The output root's files are sealed: write the card beside their pins first. */
static void start_end_commit(struct daemon *d, uint64_t id, const char *name,
                             const char *const *files, size_t n)
{
    struct end_commit *e = calloc(1, sizeof(*e));

    if (e == NULL || (e->name = strdup(name)) == NULL)
        goto oom;
    e->daemon = d;
    e->id = id;
    for (size_t i = 0; i < n; i++)
        if (end_commit_add_file(e, files[i]) < 0)
            goto oom;
    d->end_commit_queued = true;
    d->cards_pending++; /* from now: a drain waits for this commit */
    if (pin_when_idle(d->pin, e->id, on_end_pins_idle, e) < 0)
        write_card(e);
    return;
oom:
    log_error("push-failed", "ckpt='%s' reason='out of memory'", name);
    if (e != NULL)
        end_commit_free(e);
}

/* Training ended (the trainer's `final`, or the wrapped command exited) with no model saved at
 * the output root (Lightning, plain loops): the card alone makes the end-of-training commit. */
static void start_card_only_commit(struct daemon *d)
{
    struct end_commit *e;

    bool training_ended = d->final_requested || (d->cfg->child_argv != NULL && !d->child_running);

    /* A SIGTERM alone is a preemption, not the end of training: no card then. */
    if (d->end_commit_queued || d->cfg->dry_run || d->cfg->repo_id == NULL || !training_ended)
        return;
    if ((e = calloc(1, sizeof(*e))) == NULL || (e->name = strdup("")) == NULL) {
        free(e);
        return;
    }
    e->daemon = d;
    e->id = d->explicit_ids--;
    e->card_only = true;
    snprintf(e->out_dir, sizeof(e->out_dir), "%s/card", d->cfg->staging_dir);
    d->end_commit_queued = true;
    d->cards_pending++;
    write_card(e);
}

/* A sealed checkpoint whose files admit.c is looking at before it goes to the queue. The checks
 * run in parallel on the pool and may end in any order; the queue gets them in seal order. */
struct admit_req {
    struct admit_req *next; /* in seal order */
    struct daemon *daemon;
    char *message; /* a client's commit title that came meanwhile (push --message) */
    uint64_t id;
    char *name;
    char *layout;
    char *dir; /* root-relative directory its file names are relative to */
    int64_t step;
    unsigned epoch;
    bool done;    /* checked: files and refusal say what goes to the queue */
    char **files; /* NULL with done: out of memory, nothing to queue */
    size_t n_files;
    char *refusal; /* why it cannot be pushed whole, or NULL */
};

static void admit_req_free(struct admit_req *r)
{
    for (size_t i = 0; i < r->n_files; i++)
        free(r->files[i]);
    free(r->files);
    free(r->refusal);
    free(r->name);
    free(r->layout);
    free(r->dir);
    free(r->message);
    free(r);
}

static const char *refusal_words(const char *reason)
{
    return strcmp(reason, "fifo") == 0         ? "is a FIFO (named pipe), not a regular file"
           : strcmp(reason, "socket") == 0     ? "is a socket, not a regular file"
           : strcmp(reason, "device") == 0     ? "is a device, not a regular file"
           : strcmp(reason, "unreadable") == 0 ? "cannot be read (permission denied)"
                                               : "is not a regular file";
}

static void use_push_message(struct daemon *d, const char *name, const char *message);

/* Checked, its turn in seal order: the files to push go on to the queue (or the end commit). */
static void push_admitted(struct admit_req *r)
{
    struct daemon *d = r->daemon;
    const char *const *files = (const char *const *)r->files;

    if (r->files == NULL) {
        log_error("push-failed", "ckpt='%s' reason='out of memory'", r->name);
        return;
    }
    if (r->refusal != NULL) {
        int rc = queue_add_refused(d->queue, r->id, r->name, r->layout, r->step, files, r->n_files,
                                   r->refusal);
        if (rc < 0)
            log_error("push-failed", "ckpt='%s' reason='cannot queue: %s'", r->name, strerror(-rc));
    } else if (strcmp(r->layout, "model-root") == 0 && !d->cfg->dry_run &&
               d->cfg->repo_id != NULL) {
        start_end_commit(d, r->id, r->name, files, r->n_files); /* with its card */
    } else {
        queue_sealed(d, r->id, r->name, r->layout, r->step, NULL, files, r->n_files);
    }
    if (r->message != NULL)
        use_push_message(d, r->name, r->message);
}

/* Hands the checked checkpoints at the head of the line to the queue, in seal order. */
static void admit_flush(struct daemon *d)
{
    while (d->admits != NULL && d->admits->done) {
        struct admit_req *r = d->admits;
        d->admits = r->next;
        d->admits_pending--;
        if (!d->stopping)
            push_admitted(r);
        admit_req_free(r);
    }
    if (d->stopping || !drain_done(d))
        return;
    finish_waiters(d);
    if (d->draining)
        daemon_stop(d, drained_exit_code(d));
}

/* The files that go to the queue: a's then b's. On failure none (files NULL: nothing queued,
 * said as push-failed). */
static void admit_set_files(struct admit_req *r, const struct admit_file *a, size_t na,
                            const struct admit_file *b, size_t nb)
{
    if ((r->files = calloc(na + nb + 1, sizeof(*r->files))) == NULL)
        return;
    for (size_t i = 0; i < na + nb; i++) {
        if ((r->files[i] = strdup(i < na ? a[i].path : b[i - na].path)) == NULL) {
            for (size_t k = 0; k < i; k++)
                free(r->files[k]);
            free(r->files);
            r->files = NULL;
            r->n_files = 0;
            return;
        }
        r->n_files++;
    }
}

static void on_admitted(void *ctx, int status, const struct admit_result *res)
{
    struct admit_req *r = ctx;
    struct daemon *d = r->daemon;
    char refusal[PATH_MAX + 200] = "";
    const char *dir = r->dir;

    if (status < 0)
        log_warn("admit-failed", "ckpt='%s' reason='%s', pushing its files unchecked", r->name,
                 strerror(-status));
    for (size_t i = 0; i < res->n_skipped; i++) {
        log_warn("skipped", "ckpt='%s' path='%s%s%s' reason=%s", r->name, dir, dir[0] ? "/" : "",
                 res->skipped[i].path, res->skipped[i].reason);
        d->files_skipped++;
    }
    for (size_t i = 0; i < res->n_refused; i++) {
        log_error("unpushable", "ckpt='%s' path='%s%s%s' reason=%s", r->name, dir,
                  dir[0] ? "/" : "", res->refused[i].path, res->refused[i].reason);
        if (refusal[0] == '\0')
            snprintf(refusal, sizeof(refusal),
                     "%s %s: the checkpoint cannot be pushed whole (%zu such file%s)",
                     res->refused[i].path, refusal_words(res->refused[i].reason), res->n_refused,
                     res->n_refused == 1 ? "" : "s");
    }
    if (refusal[0] == '\0' && r->epoch < d->pins_deleted_epoch)
        snprintf(refusal, sizeof(refusal),
                 "its pins were deleted with the watched directory before it could be pushed");
    metrics_note_watch(d->metrics, d->files_skipped, watch_root_missing(d->watch));
    /* A refused checkpoint is journaled with every file, so a retry fails again. */
    admit_set_files(r, res->push, res->n_push, res->refused,
                    refusal[0] != '\0' ? res->n_refused : 0);
    if (refusal[0] != '\0' && (r->refusal = strdup(refusal)) == NULL)
        r->refusal = strdup("out of memory"); /* still refused, never pushed without its file */
    r->done = true;
    admit_flush(d);
}

static void on_sealed(void *ctx, const struct detect_cand *c)
{
    struct daemon *d = ctx;
    size_t n = detect_cand_n_files(c);
    const char *name = detect_cand_name(c), *dir = detect_cand_dir(c);
    const char **files = calloc(n ? n : 1, sizeof(*files));
    struct admit_req *r = calloc(1, sizeof(*r)), **tail;
    char abs[PATH_MAX];

    log_info("sealed", "ckpt='%s' layout=%s rule='%s' files=%zu", name, detect_cand_layout(c),
             detect_cand_rule(c), n);
    if (files == NULL || r == NULL || (r->name = strdup(name)) == NULL ||
        (r->layout = strdup(detect_cand_layout(c))) == NULL || (r->dir = strdup(dir)) == NULL) {
        log_error("push-failed", "ckpt='%s' reason='out of memory'", name);
        free(files);
        if (r != NULL)
            admit_req_free(r);
        return;
    }
    r->daemon = d;
    r->id = pin_id(d, c);
    r->step = detect_cand_step(c);
    r->epoch = d->root_epoch;
    for (size_t i = 0; i < n; i++)
        files[i] = detect_cand_file(c, i);
    snprintf(abs, sizeof(abs), "%s%s%s", d->cfg->watch_dir, dir[0] ? "/" : "", dir);
    /* From the seal on, not when it reaches the queue: a card-only commit must not be made
     * beside it meanwhile. */
    if (strcmp(r->layout, "model-root") == 0 && !d->cfg->dry_run && d->cfg->repo_id != NULL)
        d->end_commit_queued = true;
    d->admits_pending++;
    for (tail = &d->admits; *tail != NULL; tail = &(*tail)->next)
        ;
    *tail = r;
    /* A folder checkpoint is listed too: what the detector never took is named, not lost. */
    if (admit_check(d->loop, abs, files, n, name[0] != '\0' && strcmp(name, dir) == 0, on_admitted,
                    r) < 0) {
        struct admit_file *all = calloc(n ? n : 1, sizeof(*all));
        log_warn("admit-failed", "ckpt='%s' reason='out of memory', pushing its files unchecked",
                 name);
        for (size_t i = 0; all != NULL && i < n; i++)
            all[i].path = (char *)files[i];
        if (all != NULL)
            admit_set_files(r, all, n, NULL, 0);
        free(all);
        r->done = true;
        admit_flush(d);
    }
    free(files);
}

static void on_dropped(void *ctx, const struct detect_cand *c, const char *why)
{
    struct daemon *d = ctx;

    log_warn("dropped", "ckpt='%s' reason='%s'", detect_cand_name(c), why);
    pin_release(d->pin, pin_id(d, c), NULL, NULL);
}

static void on_doubtful(void *ctx, const struct detect_cand *c, const char *why)
{
    (void)ctx;
    log_warn("doubtful", "ckpt='%s' reason='%s', not pushed: it may be missing files",
             detect_cand_name(c), why);
}

static void on_late_write(void *ctx, const struct detect_cand *c, const char *relpath)
{
    (void)ctx;
    log_warn("late-write", "ckpt='%s' file='%s' reason='changed after it was sealed', ignoring",
             detect_cand_name(c), relpath);
}

/* --- the watched directory deleted or moved away, and made again ------------------------- */

static void on_root_lost(struct daemon *d, const char *moved_to)
{
    d->root_epoch++;
    d->moved_staging[0] = '\0';
    metrics_note_watch(d->metrics, d->files_skipped, true);
    if (moved_to != NULL) {
        snprintf(d->moved_staging, sizeof(d->moved_staging), "%s/%s", moved_to, STAGING_SKIP_NAME);
        /* Its pins moved along: nothing is pushed until they are back under the new root. */
        queue_set_ready(d->queue, false);
        log_warn("root-lost",
                 "path='%s' how=moved to='%s' reason='waiting for the directory to be made "
                 "again; the pins moved along and are brought back then'",
                 d->cfg->watch_dir, moved_to);
        return;
    }
    d->pins_deleted_epoch = d->root_epoch;
    log_warn("root-lost",
             "path='%s' how=deleted reason='waiting for the directory to be made again; the "
             "pins and the journal under it are gone'",
             d->cfg->watch_dir);
    size_t failed = queue_fail_waiting(
        d->queue, "root-lost",
        "its pins were deleted with the watched directory before it could be pushed");
    if (failed > 0)
        log_error("root-lost-checkpoints",
                  "path='%s' failed=%zu reason='sealed checkpoints whose pins were deleted with "
                  "the watched directory: not pushed (each is named in its push-failed line)'",
                  d->cfg->watch_dir, failed);
}

static void root_rewatched(struct daemon *d, const char *staging)
{
    queue_staging_renewed(d->queue);
    if (d->hub_ready || d->cfg->dry_run)
        queue_set_ready(d->queue, true);
    metrics_note_watch(d->metrics, d->files_skipped, false);
    log_info("root-rewatched", "path='%s' staging=%s", d->cfg->watch_dir, staging);
}

struct staging_move {
    uv_fs_t req;
    struct daemon *daemon;
};

static void on_staging_moved(uv_fs_t *req)
{
    struct staging_move *m = req->data;
    struct daemon *d = m->daemon;
    int rc = (int)req->result;

    uv_fs_req_cleanup(req);
    free(m);
    if (rc < 0)
        log_error("staging-not-moved",
                  "from='%s' to='%s' reason='%s': its checkpoints cannot be pushed from there",
                  d->moved_staging, d->cfg->staging_dir, uv_strerror(rc));
    root_rewatched(d, rc < 0 ? "new" : "moved-back");
    d->moved_staging[0] = '\0';
}

/* The directory is there again: a moved root's staging directory (pins, journal) comes back
 * under it by a rename (same filesystem: it was its sibling's child), else the journal is
 * written afresh in a new staging directory. The watch rescans what the new root holds. */
static void on_root_back(struct daemon *d)
{
    struct staging_move *m;

    if (d->moved_staging[0] == '\0' || (m = calloc(1, sizeof(*m))) == NULL) {
        root_rewatched(d, d->moved_staging[0] == '\0' ? "new" : "left-behind");
        return;
    }
    m->daemon = d;
    m->req.data = m;
    if (uv_fs_rename(d->loop, &m->req, d->moved_staging, d->cfg->staging_dir, on_staging_moved) <
        0) {
        free(m);
        root_rewatched(d, "left-behind");
    }
}

/* --- the queue's news: subscribers, waiters, the drain ------------------------------------ */

static cJSON *item_json(const struct queue_item_view *v)
{
    cJSON *o = cJSON_CreateObject();
    uint64_t left = v->progress.bytes_to_send > v->progress.bytes_sent
                        ? v->progress.bytes_to_send - v->progress.bytes_sent
                        : 0;

    cJSON_AddNumberToObject(o, "id", (double)v->id);
    cJSON_AddStringToObject(o, "name", v->name);
    cJSON_AddStringToObject(o, "layout", v->layout);
    cJSON_AddStringToObject(o, "state", queue_state_name(v->state));
    cJSON_AddStringToObject(o, "copy", queue_copy_name(v->copy));
    cJSON_AddNumberToObject(o, "step", (double)v->step);
    cJSON_AddNumberToObject(o, "files", (double)v->files);
    cJSON_AddNumberToObject(o, "bytes_total", (double)v->progress.bytes_total);
    cJSON_AddNumberToObject(o, "bytes_hashed", (double)v->progress.bytes_hashed);
    cJSON_AddNumberToObject(o, "bytes_to_send", (double)v->progress.bytes_to_send);
    cJSON_AddNumberToObject(o, "bytes_done", (double)v->progress.bytes_sent);
    cJSON_AddNumberToObject(o, "files_skipped", (double)v->progress.files_skipped);
    cJSON_AddNumberToObject(o, "files_xet", (double)v->progress.files_xet);
    cJSON_AddNumberToObject(o, "xet_bytes_new", (double)v->progress.xet_bytes_new);
    cJSON_AddNumberToObject(o, "xet_bytes_deduped", (double)v->progress.xet_bytes_dedup);
    cJSON_AddNumberToObject(o, "xorbs_sent", (double)v->progress.xorbs_sent);
    cJSON_AddNumberToObject(o, "xorbs_resumed", (double)v->progress.xorbs_resumed);
    cJSON_AddNumberToObject(o, "rate_bps", v->rate_bps);
    cJSON_AddNumberToObject(o, "eta_s", v->rate_bps > 0 ? (double)left / v->rate_bps : -1);
    cJSON_AddNumberToObject(o, "seconds", v->seconds);
    cJSON_AddStringToObject(o, "message", v->message);
    cJSON_AddStringToObject(o, "commit", v->commit);
    cJSON_AddStringToObject(o, "error", v->error);
    return o;
}

static void on_waiter_timer(uv_timer_t *timer);

/* Answers every waiter whose wait is over: the queue ran dry, its deadline passed, or the
 * daemon is stopping; re-arms the timer for the earliest deadline left. */
static void finish_waiters(struct daemon *d)
{
    uint64_t now = (uint64_t)now_ms(d), next = 0;
    /* A checkpoint whose files are being checked is on its way to the queue. */
    size_t kept = 0, pending = queue_pending(d->queue) + d->admits_pending;

    for (size_t i = 0; i < d->waiter_count; i++) {
        struct waiter w = d->waiters[i];
        struct ckpt_err err;

        if (pending > 0 && (w.deadline_ms == 0 || now < w.deadline_ms) && !d->stopping) {
            d->waiters[kept++] = w;
            if (w.deadline_ms != 0 && (next == 0 || w.deadline_ms < next))
                next = w.deadline_ms;
            continue;
        }
        ckpt_err_clear(&err);
        if (pending > 0)
            ckpt_err_set(&err, CKPT_ERR_SERVER, d->stopping ? -ESHUTDOWN : -ETIMEDOUT,
                         "%zu checkpoint(s) still pushing %s", pending,
                         d->stopping ? "when the daemon stopped" : "at the deadline");
        else if (queue_failed_count(d->queue) > w.failed_before)
            ckpt_err_set(&err, CKPT_ERR_SERVER, 0, "%u push(es) failed: see the daemon log",
                         queue_failed_count(d->queue) - w.failed_before);
        w.cb(w.ctx, err.kind == CKPT_ERR_NONE ? NULL : &err, d->last_commit);
    }
    d->waiter_count = kept;
    if (d->stopping)
        return;
    uv_timer_stop(&d->waiter_timer);
    if (next != 0)
        uv_timer_start(&d->waiter_timer, on_waiter_timer, next > now ? next - now : 0, 0);
}

static void on_waiter_timer(uv_timer_t *timer)
{
    finish_waiters(timer->data);
}

/* systemd's STATUS= line: what is being pushed now, for `systemctl status`. */
static void notify_queue_status(struct daemon *d, const struct queue_item_view *v)
{
    size_t pending = queue_pending(d->queue);

    if (d->draining)
        notify_sendf("STATUS=Draining: %zu checkpoint(s) left to push to %s", pending,
                     d->cfg->repo_id ? d->cfg->repo_id : "(dry run)");
    else if (v->state == QUEUE_UPLOADING || v->state == QUEUE_PINNING)
        notify_sendf("STATUS=Pushing '%s' to %s (%zu more waiting)", v->name,
                     d->cfg->repo_id ? d->cfg->repo_id : "(dry run)", pending ? pending - 1 : 0);
    else if (v->state == QUEUE_FAILED)
        notify_sendf("STATUS=Push of '%s' failed: %s (%u failed so far)", v->name, v->error,
                     queue_failed_count(d->queue));
    else if (pending == 0)
        notify_sendf("STATUS=Idle: %u checkpoint(s) pushed to %s, last commit %.12s",
                     queue_committed_count(d->queue),
                     d->cfg->repo_id ? d->cfg->repo_id : "(dry run)",
                     d->last_commit[0] ? d->last_commit : "none");
}

static void on_queue_event(void *ctx, const struct queue_item_view *v)
{
    struct daemon *d = ctx;
    static const char *const events[] = {
        [QUEUE_WAITING] = "sealed",     [QUEUE_PINNING] = "started",
        [QUEUE_UPLOADING] = "progress", [QUEUE_COMMITTED] = "committed",
        [QUEUE_FAILED] = "failed",      [QUEUE_SKIPPED] = "skipped",
    };

    if (v->state == QUEUE_COMMITTED && strcmp(v->commit, BUCKET_COMMIT_MARK) != 0)
        snprintf(d->last_commit, sizeof(d->last_commit), "%s", v->commit); /* the repo's */
    if (v->state == QUEUE_FAILED && pins_lost(d, v->id))
        log_error("push-failed-why",
                  "ckpt='%s' reason='some of its files were deleted before they could be pinned "
                  "(rotation outran the daemon)'",
                  v->name);
    metrics_on_queue_event(d->metrics, v);
    notify_queue_status(d, v);
    if (d->event_cb != NULL) {
        cJSON *fields = item_json(v);
        d->event_cb(d->event_ctx, events[v->state], fields);
        cJSON_Delete(fields);
    }
    if (v->state < QUEUE_COMMITTED || !drain_done(d))
        return;
    finish_waiters(d);
    if (d->draining)
        daemon_stop(d, drained_exit_code(d));
}

/* --- startup: check the token and the repository before saying ready --------------------- */

static int exit_code_for(const struct ckpt_err *err)
{
    switch (err->kind) {
    case CKPT_ERR_AUTH:
        return CKPT_EXIT_AUTH;
    case CKPT_ERR_NETWORK:
        return CKPT_EXIT_UNREACHABLE;
    default:
        return CKPT_EXIT_FAILURE;
    }
}

static void log_ready(struct daemon *d)
{
    log_info("ready", "watch='%s' repo='%s' bucket='%s' endpoint='%s' strategy=%s dry_run=%s",
             d->cfg->watch_dir, d->cfg->repo_id ? d->cfg->repo_id : "",
             d->cfg->bucket_id ? d->cfg->bucket_id : "", d->cfg->endpoint,
             config_strategy_name(d->cfg->strategy), d->cfg->dry_run ? "yes" : "no");
    notify_sendf("READY=1\nSTATUS=Watching '%s' for checkpoints to push to %s", d->cfg->watch_dir,
                 d->cfg->dry_run   ? "nothing (dry run)"
                 : d->cfg->repo_id ? d->cfg->repo_id
                                   : d->cfg->bucket_id);
}

/* A hub that cannot be used stops a plain daemon; in run mode the training goes on (its
 * checkpoints stay pinned for the next start) and the failure becomes the exit code. */
static void startup_failed(struct daemon *d, const struct ckpt_err *err)
{
    if (d->child_running) {
        d->startup_failure = exit_code_for(err);
        log_error("not-pushing",
                  "reason='the hub cannot be used; the training command keeps running and its "
                  "checkpoints stay pinned in %s'",
                  d->cfg->staging_dir);
        return;
    }
    daemon_stop(d, exit_code_for(err));
}

static void hub_usable(struct daemon *d)
{
    d->hub_ready = true;
    if (d->watch != NULL)
        log_ready(d);
    queue_set_ready(d->queue, true);
    /* training ended (a short wrapped command) before the hub was known usable: its card */
    if (d->draining)
        start_card_only_commit(d);
}

/* The commit budget counts the repo's commits of the last hour, this process's or not. */
static void on_commit_dates(void *ctx, const struct ckpt_err *err, const int64_t *dates, size_t n)
{
    struct daemon *d = ctx;

    d->startup_op = NULL;
    if (d->stopping)
        return; /* cancelled */
    if (err != NULL)
        log_warn("commit-history-unread",
                 "repo='%s' reason='%s', the commit budget counts this run's commits only",
                 d->cfg->repo_id, err->msg);
    else
        log_info("commit-history", "repo='%s' commits_last_hour=%u per_hour=%u", d->cfg->repo_id,
                 queue_note_past_commits(d->queue, dates, n, (int64_t)time(NULL)),
                 d->cfg->commits_per_hour);
    hub_usable(d);
}

/* The repo is there (and the bucket, with --bucket): the repo's commit history next. */
static void on_targets_ready(struct daemon *d)
{
    if (d->cfg->repo_id == NULL)
        hub_usable(d); /* a bucket has no commits to count */
    else if (hub_commit_dates(d->hub, on_commit_dates, d, &d->startup_op) < 0)
        hub_usable(d);
}

static void on_bucket_ready(void *ctx, const struct ckpt_err *err)
{
    struct daemon *d = ctx;

    d->startup_op = NULL;
    if (err != NULL) {
        log_error("startup-failed", "bucket='%s' reason='%s'", d->cfg->bucket_id, err->msg);
        startup_failed(d, err);
        return;
    }
    log_info("bucket-ready", "bucket='%s' keep_last=%u", d->cfg->bucket_id, d->cfg->keep_last);
    on_targets_ready(d);
}

static void on_repo_ready(void *ctx, const struct ckpt_err *err)
{
    struct daemon *d = ctx;

    d->startup_op = NULL;
    if (err != NULL) {
        log_error("startup-failed", "%s='%s' reason='%s'", d->cfg->repo_id ? "repo" : "bucket",
                  d->cfg->repo_id ? d->cfg->repo_id : d->cfg->bucket_id, err->msg);
        startup_failed(d, err);
        return;
    }
    if (d->bucket_hub == d->hub)
        on_bucket_ready(d, NULL); /* no --repo: the hub's repo is the bucket, created already */
    else if (d->bucket_hub != NULL &&
             hub_ensure_repo(d->bucket_hub, on_bucket_ready, d, &d->startup_op) == 0)
        return;
    else
        on_targets_ready(d);
}

static void on_whoami(void *ctx, const struct ckpt_err *err, const char *user)
{
    struct daemon *d = ctx;

    d->startup_op = NULL;
    if (err != NULL) {
        log_error("startup-failed", "endpoint='%s' reason='%s'", d->cfg->endpoint, err->msg);
        startup_failed(d, err);
        return;
    }
    log_info("authenticated", "user='%s' endpoint='%s' token_source='%s'", user, d->cfg->endpoint,
             d->cfg->token_source);
    if (hub_ensure_repo(d->hub, on_repo_ready, d, &d->startup_op) < 0)
        daemon_stop(d, CKPT_EXIT_FAILURE);
}

/* --- recovery first, then the watch --------------------------------------------------------- */

/* A checkpoint the journal holds, unchanged on disk: recovery pushes it (or pushed it), so the
 * scan that the watch starts with must not find it a second time. */
static void on_owned_by_journal(void *ctx, const char *name, const char *layout,
                                const char *const *files, size_t n)
{
    struct daemon *d = ctx;
    int rc = detect_own(d->detect, name, layout, files, n);

    if (rc < 0)
        log_warn("own-failed", "ckpt='%s' layout=%s reason='%s', the scan may find it again", name,
                 layout, strerror(-rc));
}

/* The journal is read: only now does the watch start, so that its first scan already knows
 * which checkpoints are recovery's. */
static void on_recovered(void *ctx)
{
    struct daemon *d = ctx;
    struct ckpt_err err;

    if (d->stopping || d->watch != NULL)
        return;
    if (watch_start(&d->watch, d->loop, d->cfg->watch_dir, STAGING_SKIP_NAME, on_watch_event, d,
                    &err) < 0) {
        log_error("startup-failed", "watch='%s' reason='%s'", d->cfg->watch_dir, err.msg);
        daemon_stop(d, CKPT_EXIT_WATCH);
        return;
    }
    if (d->hub_ready || d->cfg->dry_run)
        log_ready(d);
}

/* --- signals, drain and shutdown ---------------------------------------------------------- */

static void on_drain_timeout(uv_timer_t *timer)
{
    struct daemon *d = timer->data;

    log_error("drain-timeout", "seconds=%u pending=%zu reason='pins kept in %s for the next start'",
              d->drain_timeout_s, queue_pending(d->queue), d->cfg->staging_dir);
    daemon_stop(d, cut_short_exit_code(d));
}

static void start_drain(struct daemon *d, const char *why)
{
    if (d->stopping)
        return;
    if (d->draining) {
        if (d->child_running)
            return;
        log_warn("stopping", "reason='second %s: stopping now'", why);
        daemon_stop(d, cut_short_exit_code(d));
        return;
    }
    d->draining = true;
    log_info("draining", "reason='%s' deadline_s=%u", why, d->drain_timeout_s);
    notify_sendf("STOPPING=1\nSTATUS=Draining after %s: %zu checkpoint(s) to push within %us", why,
                 queue_pending(d->queue), d->drain_timeout_s);
    detect_seal_all_complete(d->detect, now_ms(d));
    if (d->hub_ready)
        start_card_only_commit(d);
    if (drain_done(d)) {
        daemon_stop(d, drained_exit_code(d));
        return;
    }
    if (!uv_is_active((uv_handle_t *)&d->drain_timer))
        uv_timer_start(&d->drain_timer, on_drain_timeout, (uint64_t)d->drain_timeout_s * 1000, 0);
}

static bool same_text(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool same_globs(char *const *a, char *const *b)
{
    size_t i = 0;
    for (; a[i] != NULL && b[i] != NULL; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return a[i] == NULL && b[i] == NULL;
}

static bool same_rules(const struct config *a, const struct config *b)
{
    if (a->rule_count != b->rule_count)
        return false;
    for (size_t i = 0; i < a->rule_count; i++) {
        const struct config_rule *x = &a->rules[i], *y = &b->rules[i];
        if (!same_text(x->glob, y->glob) || !same_text(x->marker, y->marker) ||
            x->quiet_ms != y->quiet_ms)
            return false;
    }
    return true;
}

/* SIGHUP: read the configuration again (file, environment, the same flags). What a running
 * daemon can change takes effect; the rest is named and needs a restart. A configuration with
 * problems changes nothing. Reading a small file here is a startup-style exception to the
 * no-I/O rule: SIGHUP is rare and the file is bounded. */
static void reload(struct daemon *d)
{
    struct config fresh;
    struct ckpt_err err;
    char restart[512] = "";

    if (config_load(&fresh, d->cfg->argc, d->cfg->argv, &err) != 0) {
        log_error("reload-rejected", "reason='%s', keeping the running configuration", err.msg);
        config_release(&fresh);
        return;
    }
#define NEEDS_RESTART(changed, name)                                                               \
    if (changed)                                                                                   \
    snprintf(restart + strlen(restart), sizeof(restart) - strlen(restart), "%s%s",                 \
             restart[0] ? "," : "", name)
    NEEDS_RESTART(!same_text(fresh.watch_dir, d->cfg->watch_dir), "watch");
    NEEDS_RESTART(!same_text(fresh.repo_id, d->cfg->repo_id), "repo");
    NEEDS_RESTART(!same_text(fresh.bucket_id, d->cfg->bucket_id), "bucket");
    NEEDS_RESTART(!same_text(fresh.endpoint, d->cfg->endpoint), "endpoint");
    NEEDS_RESTART(!same_text(fresh.socket_path, d->cfg->socket_path), "socket");
    NEEDS_RESTART(fresh.strategy != d->cfg->strategy, "strategy");
    NEEDS_RESTART(fresh.quiet_ms != d->cfg->quiet_ms, "quiet_ms");
    NEEDS_RESTART(fresh.nice != d->cfg->nice, "nice");
    NEEDS_RESTART(!same_text(fresh.job, d->cfg->job), "job");
    NEEDS_RESTART(fresh.staging_max != d->cfg->staging_max, "staging_max");
    NEEDS_RESTART(!same_text(fresh.revision, d->cfg->revision), "revision");
    NEEDS_RESTART(!same_globs(fresh.include, d->cfg->include), "include");
    NEEDS_RESTART(!same_globs(fresh.exclude, d->cfg->exclude), "exclude");
    NEEDS_RESTART(fresh.max_rate != d->cfg->max_rate, "max_rate");
    NEEDS_RESTART(fresh.max_transfers != d->cfg->max_transfers, "max_transfers");
    NEEDS_RESTART(fresh.transfer != d->cfg->transfer, "transfer");
    NEEDS_RESTART(fresh.commits_per_hour != d->cfg->commits_per_hour, "commits_per_hour");
    NEEDS_RESTART(fresh.keep_last != d->cfg->keep_last, "keep_last");
    NEEDS_RESTART(fresh.private_repo != d->cfg->private_repo, "private");
    NEEDS_RESTART(fresh.dry_run != d->cfg->dry_run, "dry_run");
    NEEDS_RESTART(!same_text(fresh.layout, d->cfg->layout), "layout");
    NEEDS_RESTART(!same_rules(&fresh, d->cfg), "rules");
    NEEDS_RESTART(!same_text(fresh.metrics_path, d->cfg->metrics_path), "metrics_path");
    NEEDS_RESTART(!same_text(fresh.card_fields_json, d->cfg->card_fields_json), "card");
#undef NEEDS_RESTART
    log_set_level(fresh.log_level);
    log_set_format(fresh.log_format);
    d->drain_timeout_s = fresh.drain_timeout_s;
    if (d->hub != NULL && fresh.token != NULL && hub_set_token(d->hub, fresh.token) < 0)
        log_error("reload-failed", "reason='out of memory'");
    if (d->bucket_hub != NULL && d->bucket_hub != d->hub && fresh.token != NULL &&
        hub_set_token(d->bucket_hub, fresh.token) < 0)
        log_error("reload-failed", "reason='out of memory'");
    log_info("reloaded", "token_source='%s' log_level=%d drain_timeout_s=%u%s%s%s",
             fresh.token_source ? fresh.token_source : "", (int)fresh.log_level,
             fresh.drain_timeout_s, restart[0] ? " needs_restart='" : "", restart,
             restart[0] ? "'" : "");
    config_release(&fresh);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct daemon *d = sig->data;

    if (signum == SIGHUP) {
        reload(d);
        return;
    }
    if (signum == SIGUSR1) {
        log_info("push-now", "reason='SIGUSR1: sealing every complete checkpoint'");
        detect_seal_all_complete(d->detect, now_ms(d));
        rearm_detect_timer(d);
        return;
    }
    if (d->child_running) {
        /* The command decides how to stop (a Trainer saves first); its exit starts the drain.
         * The deadline runs from now, as a scheduler's grace period does. */
        log_info("forwarding", "signal=%s pid=%d", signum == SIGTERM ? "SIGTERM" : "SIGINT",
                 d->child.pid);
        uv_process_kill(&d->child, signum);
        if (!uv_is_active((uv_handle_t *)&d->drain_timer))
            uv_timer_start(&d->drain_timer, on_drain_timeout, (uint64_t)d->drain_timeout_s * 1000,
                           0);
        return;
    }
    start_drain(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_child_exit(uv_process_t *child, int64_t status, int signum)
{
    struct daemon *d = child->data;

    d->child_running = false;
    d->child_exit = signum ? 128 + signum : (int)status;
    log_info("command-exited", "pid=%d status=%d signal=%d", child->pid, (int)status, signum);
    uv_close((uv_handle_t *)child, NULL);
    start_drain(d, "the training command exited");
}

static int spawn_child(struct daemon *d, struct ckpt_err *err)
{
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_INHERIT_FD, .data.fd = 0},
        {.flags = UV_INHERIT_FD, .data.fd = 1},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    uv_process_options_t options = {
        .exit_cb = on_child_exit,
        .file = d->cfg->child_argv[0],
        .args = d->cfg->child_argv,
        .stdio_count = 3,
        .stdio = stdio,
    };
    int rc;

    d->child.data = d;
    if ((rc = uv_spawn(d->loop, &d->child, &options)) < 0) {
        uv_close((uv_handle_t *)&d->child, NULL);
        return ckpt_err_set(err, CKPT_ERR_INPUT, rc, "cannot run '%s': %s", d->cfg->child_argv[0],
                            uv_strerror(rc));
    }
    d->child_running = true;
    log_info("command-started", "pid=%d command='%s'", d->child.pid, d->cfg->child_argv[0]);
    return 0;
}

static void on_http_closed(void *ctx)
{
    struct daemon *d = ctx;

    d->http = NULL;
}

static void on_watch_closed(void *ctx)
{
    struct daemon *d = ctx;

    d->watch = NULL;
}

static void on_control_closed(void *ctx)
{
    struct daemon *d = ctx;

    d->control = NULL;
}

static void on_coord_client_closed(void *ctx)
{
    struct daemon *d = ctx;

    d->coord_client = NULL;
}

static void on_coord_server_closed(void *ctx)
{
    struct daemon *d = ctx;

    d->coord_server = NULL;
}

static void on_pin_closed(void *ctx)
{
    struct daemon *d = ctx;

    d->pin = NULL;
}

static void daemon_stop(struct daemon *d, int exit_code)
{
    /* what is still waiting or in flight now (an end-of-training commit whose card is being
     * written included) stays pinned for the next start */
    size_t pending = (d->queue != NULL ? queue_pending(d->queue) : 0) + d->cards_pending;

    if (d->stopping)
        return;
    d->stopping = true;
    d->exit_code = exit_code;
    if (!d->draining)
        notify_send("STOPPING=1");
    notify_watchdog_close(d->watchdog);
    d->watchdog = NULL;
    if (d->startup_op != NULL)
        hub_op_cancel(d->startup_op);
    if (d->child_running) {
        /* Stopping must not kill the training: it runs on without us. */
        log_warn("command-left-running", "pid=%d", d->child.pid);
        uv_close((uv_handle_t *)&d->child, NULL);
        d->child_running = false;
    }
    if (d->queue != NULL)
        queue_stop(d->queue);
    /* a report still waiting for its commit ends interrupted: resumed at the next start */
    if (d->coord_client != NULL)
        coord_client_close(d->coord_client, on_coord_client_closed, d);
    if (d->coord_server != NULL)
        coord_server_close(d->coord_server, on_coord_server_closed, d);
    if (d->hashes != NULL)
        hash_pool_drop_primes(d->hashes);
    finish_waiters(d);
    uv_close((uv_handle_t *)&d->detect_timer, NULL);
    uv_close((uv_handle_t *)&d->drain_timer, NULL);
    uv_close((uv_handle_t *)&d->waiter_timer, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_usr1, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    /* Closing the handles restores the default actions: a late SIGTERM while the loop winds
     * down would kill us with the pushes already done but the exit code lost. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    if (d->watch != NULL)
        watch_close(d->watch, on_watch_closed, d);
    if (d->control != NULL)
        control_close(d->control, on_control_closed, d);
    if (d->http != NULL)
        http_close(d->http, on_http_closed, d);
    if (d->pin != NULL)
        pin_close(d->pin, on_pin_closed, d);
    metrics_close(d->metrics); /* last file says ckptpush_up 0; frees itself */
    d->metrics = NULL;
    log_info("stopped", "exit=%d committed=%u failed=%u pending=%zu", exit_code,
             d->queue ? queue_committed_count(d->queue) : 0,
             d->queue ? queue_failed_count(d->queue) : 0, pending);
}

/* Several nodes: rank 0 listens for every node's reports; every rank (0 too) reports to it. */
static int start_coordination(struct daemon *d, struct ckpt_err *err)
{
    const struct config *cfg = d->cfg;
    int rc;

    if (cfg->node_rank == 0) {
        struct coord_server_opts so = {
            .bind_host = strchr(cfg->coord_host, ':') != NULL ? "::" : "0.0.0.0",
            .port = cfg->coord_port,
            .nodes = cfg->nodes,
            .secret = cfg->job_secret,
            .secret_len = cfg->job_secret_len,
            .wait_log_ms = (uint64_t)cfg->coord_wait_s * 1000,
        };
        if ((rc = coord_server_start(&d->coord_server, d->loop, d->hub, &so, err)) < 0)
            return rc;
    }
    struct coord_client_opts co = {
        .host = cfg->coord_host,
        .port = cfg->coord_port,
        .rank = cfg->node_rank,
        .secret = cfg->job_secret,
        .secret_len = cfg->job_secret_len,
    };
    if ((rc = coord_client_start(&d->coord_client, d->loop, &co)) < 0)
        return ckpt_err_set(err, CKPT_ERR_IO, rc, "cannot start the coordinator link: %s",
                            strerror(-rc));
    log_info("node", "rank=%ld nodes=%ld coordinator=%s:%d%s", cfg->node_rank, cfg->nodes,
             cfg->coord_host, cfg->coord_port, cfg->node_rank == 0 ? " (this node)" : "");
    return 0;
}

int daemon_exit_code(const struct daemon *d)
{
    return d->exit_code;
}

/* --- operations for the control socket ---------------------------------------------------- */

static void add_item_to_array(void *ctx, const struct queue_item_view *v)
{
    cJSON_AddItemToArray(ctx, item_json(v));
}

int daemon_status(struct daemon *d, cJSON *out)
{
    cJSON *daemon = cJSON_AddObjectToObject(out, "daemon");
    cJSON *items = cJSON_AddArrayToObject(out, "checkpoints");
    const char *state = d->stopping                         ? "stopping"
                        : d->draining                       ? "draining"
                        : !d->hub_ready && !d->cfg->dry_run ? "starting"
                        : queue_paused(d->queue)            ? "paused"
                        : queue_pending(d->queue)           ? "pushing"
                                                            : "idle";

    if (daemon == NULL || items == NULL)
        return -ENOMEM;
    cJSON_AddStringToObject(daemon, "state", state);
    cJSON_AddStringToObject(daemon, "version", CKPT_VERSION);
    cJSON_AddStringToObject(daemon, "repo", d->cfg->repo_id ? d->cfg->repo_id : "");
    cJSON_AddStringToObject(daemon, "bucket", d->cfg->bucket_id ? d->cfg->bucket_id : "");
    if (d->cfg->nodes > 1) {
        cJSON *node = cJSON_AddObjectToObject(daemon, "node");
        if (node != NULL) {
            cJSON_AddNumberToObject(node, "rank", (double)d->cfg->node_rank);
            cJSON_AddNumberToObject(node, "nodes", (double)d->cfg->nodes);
        }
        if (d->coord_server != NULL)
            cJSON_AddItemToObject(daemon, "coordinator", coord_server_status(d->coord_server));
    }
    cJSON_AddStringToObject(daemon, "endpoint", d->cfg->endpoint);
    cJSON_AddStringToObject(daemon, "watch", d->cfg->watch_dir);
    cJSON_AddStringToObject(daemon, "strategy", config_strategy_name(d->cfg->strategy));
    cJSON_AddBoolToObject(daemon, "paused", queue_paused(d->queue));
    cJSON_AddBoolToObject(daemon, "dry_run", d->cfg->dry_run);
    cJSON_AddNumberToObject(daemon, "pending", (double)queue_pending(d->queue));
    cJSON_AddNumberToObject(daemon, "detecting", (double)detect_pending(d->detect));
    cJSON_AddNumberToObject(daemon, "committed", queue_committed_count(d->queue));
    cJSON_AddNumberToObject(daemon, "failed", queue_failed_count(d->queue));
    cJSON_AddNumberToObject(daemon, "staging_bytes", (double)queue_staging_bytes(d->queue));
    cJSON_AddNumberToObject(daemon, "staging_max", (double)d->cfg->staging_max);
    cJSON_AddNumberToObject(daemon, "copies_waiting", (double)queue_copies_waiting(d->queue));
    cJSON_AddNumberToObject(daemon, "files_skipped", (double)d->files_skipped);
    cJSON_AddBoolToObject(daemon, "root_missing", watch_root_missing(d->watch));
    cJSON_AddNumberToObject(daemon, "uptime_s",
                            (double)((uint64_t)now_ms(d) - d->started_ms) / 1000.0);
    queue_for_each(d->queue, add_item_to_array, items);
    return 0;
}

/* An explicit push: the files under a path are listed on the thread pool, then queued. */
struct explicit_push {
    uv_work_t work;
    struct daemon *daemon;
    daemon_done_cb cb;
    void *ctx;
    char *path;    /* absolute */
    char *message; /* the commit title asked for, or NULL */
    char **files;
    size_t count;
    size_t cap;
    int status;
    bool is_dir;
};

/* nftw has no context argument: one walk at a time, under walk_lock. */
static struct explicit_push *walking;
static uv_mutex_t walk_lock;
static uv_once_t walk_lock_once = UV_ONCE_INIT;

static void init_walk_lock(void)
{
    uv_mutex_init(&walk_lock);
}

static int collect_file(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    struct explicit_push *e = walking;
    const char *rel = path + strlen(e->path) + 1;

    (void)ftw;
    if (type != FTW_F || !S_ISREG(st->st_mode))
        return 0;
    if (strncmp(rel, STAGING_SKIP_NAME "/", sizeof(STAGING_SKIP_NAME)) == 0)
        return 0;
    if (e->count == EXPLICIT_PUSH_MAX_FILES) {
        e->status = -E2BIG;
        return 1;
    }
    if (e->count == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 64;
        char **grown = realloc(e->files, cap * sizeof(*grown));
        if (grown == NULL) {
            e->status = -ENOMEM;
            return 1;
        }
        e->files = grown;
        e->cap = cap;
    }
    if ((e->files[e->count] = strdup(rel)) == NULL) {
        e->status = -ENOMEM;
        return 1;
    }
    e->count++;
    return 0;
}

static int compare_paths(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list_files_work(uv_work_t *work)
{
    struct explicit_push *e = work->data;
    struct stat st;

    if (lstat(e->path, &st) != 0) {
        e->status = -errno;
        return;
    }
    if (S_ISREG(st.st_mode)) {
        char *slash = strrchr(e->path, '/');
        e->files = calloc(1, sizeof(*e->files));
        if (e->files == NULL || (e->files[0] = strdup(slash + 1)) == NULL) {
            e->status = -ENOMEM;
            return;
        }
        e->count = 1;
        *slash = '\0'; /* the path becomes the source directory */
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        e->status = -EINVAL;
        return;
    }
    e->is_dir = true;
    uv_once(&walk_lock_once, init_walk_lock);
    uv_mutex_lock(&walk_lock);
    walking = e;
    if (nftw(e->path, collect_file, 16, FTW_PHYS) < 0 && e->status == 0)
        e->status = -errno;
    walking = NULL;
    uv_mutex_unlock(&walk_lock);
    if (e->status == 0)
        qsort(e->files, e->count, sizeof(*e->files), compare_paths);
}

/* A client's commit title for the checkpoint its push concerns. Too late for one committed
 * already: the push is still answered, the log says the title went unused. */
static void use_push_message(struct daemon *d, const char *name, const char *message)
{
    const char *why = NULL;

    if (message == NULL)
        return;
    if (queue_set_title(d->queue, name, message, &why) < 0)
        log_warn("push-message-ignored", "ckpt='%s' message='%s' reason='%s'", name, message,
                 why != NULL ? why : "unknown");
    else
        log_info("push-message", "ckpt='%s' message='%s'", name, message);
}

static void list_files_done(uv_work_t *work, int status)
{
    struct explicit_push *e = work->data;
    struct daemon *d = e->daemon;
    struct ckpt_err err;
    const char *base;
    int rc = status < 0 ? status : e->status;

    ckpt_err_clear(&err);
    if (rc == 0 && e->count == 0)
        rc = -ENOENT;
    base = e->is_dir ? strrchr(e->path, '/') + 1 : e->files ? e->files[0] : "";
    if (rc == 0 && d->stopping)
        rc = -ESHUTDOWN;
    if (rc == 0)
        rc =
            queue_add(d->queue, d->explicit_ids--, base, e->is_dir ? "explicit-dir" : "single-file",
                      -1, e->path, (const char *const *)e->files, e->count);
    if (rc < 0) {
        ckpt_err_set(
            &err, rc == -ENOENT ? CKPT_ERR_INPUT : CKPT_ERR_IO, rc, "cannot push '%s': %s", e->path,
            rc == -ENOENT && status >= 0 && e->status == 0 ? "no files in it" : strerror(-rc));
        log_error("push-failed", "path='%s' reason='%s'", e->path, err.msg);
    } else {
        log_info("push-requested", "path='%s' files=%zu", e->path, e->count);
        use_push_message(d, base, e->message);
    }
    e->cb(e->ctx, rc < 0 ? &err : NULL, NULL);
    for (size_t i = 0; i < e->count; i++)
        free(e->files[i]);
    free(e->files);
    free(e->path);
    free(e->message);
    free(e);
}

/* A path inside the watched tree that the detector knows is sealed now rather than pushed a
 * second time beside it. Returns true when that took care of the request. */
static bool push_known_checkpoint(struct daemon *d, const char *abs, const char *message)
{
    size_t root_len = strlen(d->cfg->watch_dir);
    const char *rel;

    if (strncmp(abs, d->cfg->watch_dir, root_len) != 0 || abs[root_len] != '/')
        return false;
    rel = abs + root_len + 1;
    detect_seal_all_complete(d->detect, now_ms(d));
    rearm_detect_timer(d);
    /* a file of a checkpoint named otherwise (Lightning's last.ckpt: its save's epoch file) */
    if (detect_owner_name(d->detect, rel) != NULL)
        rel = detect_owner_name(d->detect, rel);
    if (queue_retry_failed(d->queue, rel)) {
        use_push_message(d, rel, message); /* a failed push, retried from its pins */
        return true;
    }
    for (struct admit_req *r = d->admits; r != NULL; r = r->next) {
        if (strcmp(r->name, rel) != 0)
            continue;
        /* Sealed, its files being checked: queued in a moment, with this title. */
        log_info("push-requested", "path='%s' reason='already sealed by the watcher'", abs);
        if (message != NULL) {
            free(r->message);
            r->message = strdup(message);
        }
        return true;
    }
    if (!queue_knows(d->queue, rel))
        return false;
    log_info("push-requested", "path='%s' reason='already sealed by the watcher'", abs);
    use_push_message(d, rel, message);
    return true;
}

int daemon_push_path(struct daemon *d, const char *path, const char *message, daemon_done_cb cb,
                     void *ctx)
{
    struct explicit_push *e;
    char joined[PATH_MAX];

    if (path[0] == '\0' || strlen(path) >= PATH_MAX - strlen(d->cfg->watch_dir) - 2)
        return -EINVAL;
    if (path[0] == '/')
        snprintf(joined, sizeof(joined), "%s", path);
    else
        snprintf(joined, sizeof(joined), "%s/%s", d->cfg->watch_dir, path);
    while (strlen(joined) > 1 && joined[strlen(joined) - 1] == '/')
        joined[strlen(joined) - 1] = '\0';
    if (d->stopping)
        return -ESHUTDOWN;
    if (push_known_checkpoint(d, joined, message)) {
        cb(ctx, NULL, NULL);
        return 0;
    }
    if ((e = calloc(1, sizeof(*e))) == NULL || (e->path = strdup(joined)) == NULL ||
        (message != NULL && (e->message = strdup(message)) == NULL)) {
        if (e != NULL)
            free(e->path);
        free(e);
        return -ENOMEM;
    }
    e->daemon = d;
    e->cb = cb;
    e->ctx = ctx;
    e->work.data = e;
    uv_queue_work(d->loop, &e->work, list_files_work, list_files_done);
    return 0;
}

static int add_waiter(struct daemon *d, unsigned deadline_s, daemon_done_cb cb, void *ctx,
                      struct ckpt_err *err)
{
    struct waiter *w;

    if (d->waiter_count == MAX_WAITERS)
        return ckpt_err_set(err, CKPT_ERR_INPUT, -ENOBUFS, "too many waiting requests");
    w = &d->waiters[d->waiter_count++];
    w->cb = cb;
    w->ctx = ctx;
    w->failed_before = queue_failed_count(d->queue);
    w->deadline_ms = deadline_s ? (uint64_t)now_ms(d) + (uint64_t)deadline_s * 1000 : 0;
    /* Answer at once when nothing is pending, else arm the deadline. */
    finish_waiters(d);
    return 0;
}

int daemon_final(struct daemon *d, const cJSON *metrics, const cJSON *hparams, daemon_done_cb cb,
                 void *ctx)
{
    struct ckpt_err err;

    if (d->stopping)
        return -ESHUTDOWN;
    d->final_requested = true;
    if (metrics != NULL && cJSON_IsObject(metrics)) {
        free(d->final_metrics_json);
        d->final_metrics_json = cJSON_PrintUnformatted(metrics);
    }
    if (hparams != NULL && cJSON_IsObject(hparams)) {
        free(d->final_hparams_json);
        d->final_hparams_json = cJSON_PrintUnformatted(hparams);
    }
    log_info("final", "reason='training ended: pushing everything complete'");
    detect_seal_all_complete(d->detect, now_ms(d));
    rearm_detect_timer(d);
    return add_waiter(d, 0, cb, ctx, &err);
}

void daemon_pause(struct daemon *d)
{
    if (!queue_paused(d->queue))
        log_info("paused", "pending=%zu", queue_pending(d->queue));
    queue_set_paused(d->queue, true);
}

void daemon_resume(struct daemon *d)
{
    if (queue_paused(d->queue))
        log_info("resumed", "pending=%zu", queue_pending(d->queue));
    queue_set_paused(d->queue, false);
}

int daemon_flush(struct daemon *d, unsigned deadline_s, daemon_done_cb cb, void *ctx)
{
    struct ckpt_err err;

    if (d->stopping)
        return -ESHUTDOWN;
    detect_seal_all_complete(d->detect, now_ms(d));
    rearm_detect_timer(d);
    return add_waiter(d, deadline_s, cb, ctx, &err);
}

void daemon_request_shutdown(struct daemon *d)
{
    start_drain(d, "shutdown request");
}

void daemon_set_event_sink(struct daemon *d, daemon_event_cb cb, void *ctx)
{
    d->event_cb = cb;
    d->event_ctx = ctx;
}

/* --- construction --------------------------------------------------------------------------- */

static void init_handles(struct daemon *d)
{
    uv_timer_init(d->loop, &d->detect_timer);
    uv_timer_init(d->loop, &d->drain_timer);
    uv_timer_init(d->loop, &d->waiter_timer);
    uv_signal_init(d->loop, &d->sig_term);
    uv_signal_init(d->loop, &d->sig_int);
    uv_signal_init(d->loop, &d->sig_usr1);
    uv_signal_init(d->loop, &d->sig_hup);
    d->detect_timer.data = d->drain_timer.data = d->waiter_timer.data = d;
    d->sig_term.data = d->sig_int.data = d->sig_usr1.data = d->sig_hup.data = d;
    uv_signal_start(&d->sig_term, on_signal, SIGTERM);
    uv_signal_start(&d->sig_int, on_signal, SIGINT);
    uv_signal_start(&d->sig_usr1, on_signal, SIGUSR1);
    uv_signal_start(&d->sig_hup, on_signal, SIGHUP);
}

int daemon_start(struct daemon **ret, uv_loop_t *loop, const struct config *cfg, int *ret_exit,
                 struct ckpt_err *err)
{
    struct detect_rule rules[CONFIG_MAX_RULES];
    struct detect_config detect_cfg = {
        .dcp_part = cfg->nodes > 1 && cfg->node_rank > 0,
        .quiet_ms = cfg->quiet_ms,
        .layout = cfg->layout,
        .rules = rules,
        .n_rules = cfg->rule_count,
    };
    struct detect_callbacks callbacks = {
        .file_added = on_file_added,
        .file_renamed = on_file_renamed,
        .file_removed = on_file_removed,
        .sealed = on_sealed,
        .dropped = on_dropped,
        .doubtful = on_doubtful,
        .late_write = on_late_write,
        .file_ready = on_file_ready,
    };
    struct daemon *d = calloc(1, sizeof(*d));
    int rc;

    *ret_exit = CKPT_EXIT_FAILURE;
    *ret = d;
    if (d == NULL)
        return ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "out of memory");
    d->loop = loop;
    d->cfg = cfg;
    d->explicit_ids = UINT64_MAX;
    {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        d->id_base = ((uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000) * 1000000;
    }
    d->drain_timeout_s = cfg->drain_timeout_s;
    d->started_ms = (uint64_t)now_ms(d);
    callbacks.ctx = d;
    for (size_t i = 0; i < cfg->rule_count; i++) {
        rules[i].glob = cfg->rules[i].glob;
        rules[i].marker = cfg->rules[i].marker;
        rules[i].quiet_ms = cfg->rules[i].quiet_ms < 0 ? 0 : cfg->rules[i].quiet_ms;
    }
    init_handles(d);

    if (!cfg->dry_run) {
        struct hub_config hub_cfg = {
            .endpoint = cfg->endpoint,
            .token = cfg->token,
            .repo_id = cfg->repo_id != NULL ? cfg->repo_id : cfg->bucket_id,
            .repo_type = cfg->repo_id != NULL ? NULL : "bucket",
            .private_repo = cfg->private_repo,
            .transfer = cfg->transfer == TRANSFER_XET   ? HUB_TRANSFER_XET
                        : cfg->transfer == TRANSFER_LFS ? HUB_TRANSFER_LFS
                                                        : HUB_TRANSFER_AUTO,
        };
        struct http_opts http_opts = {.max_rate = cfg->max_rate};
        if ((rc = http_init(&d->http, loop, &http_opts)) < 0) {
            ckpt_err_set(err, CKPT_ERR_IO, rc, "cannot start HTTP: %s", uv_strerror(rc));
            goto fail;
        }
        if ((rc = hub_init(&d->hub, d->http, &hub_cfg, err)) < 0) {
            *ret_exit = CKPT_EXIT_INVALID;
            goto fail;
        }
        if (cfg->transfer != TRANSFER_LFS) {
            if (asprintf(&d->xet_dir, "%s/xet", cfg->staging_dir) < 0 ||
                asprintf(&d->xet_work_dir, "%s/xet/tmp", cfg->staging_dir) < 0 ||
                (rc = xet_session_new(&d->xet, loop, d->hub, d->xet_dir)) < 0) {
                ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "cannot start Xet: out of memory");
                goto fail;
            }
        }
        if (cfg->bucket_id != NULL && cfg->repo_id == NULL) {
            d->bucket_hub = d->hub;
            d->bucket_xet = d->xet;
        } else if (cfg->bucket_id != NULL) {
            hub_cfg.repo_id = cfg->bucket_id;
            hub_cfg.repo_type = "bucket";
            if ((rc = hub_init(&d->bucket_hub, d->http, &hub_cfg, err)) < 0) {
                *ret_exit = CKPT_EXIT_INVALID;
                goto fail;
            }
            /* its own write token; what is known of the CAS (shard cache, journaled xorbs) is
             * the endpoint's, shared with the repo's session */
            if ((rc = xet_session_new(&d->bucket_xet, loop, d->bucket_hub, d->xet_dir)) < 0) {
                ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "cannot start Xet: out of memory");
                goto fail;
            }
        }
    }
    if ((rc = pin_new(&d->pin, loop, cfg->watch_dir, STAGING_SKIP_NAME, on_pin_result, d)) < 0 ||
        (rc = hash_pool_init(&d->hashes, loop, 2, (int)cfg->nice)) < 0 ||
        (rc = detect_new(&d->detect, &detect_cfg, &callbacks)) < 0) {
        ckpt_err_set(err, CKPT_ERR_IO, rc, "cannot start: %s", strerror(-rc));
        goto fail;
    }
    /* with Xet in use, the early hash also chunks each file so the upload need not read it again */
    hash_pool_keep_xet_scans(d->hashes, d->xet != NULL || d->bucket_xet != NULL);
    {
        struct queue_deps deps = {.loop = loop,
                                  .cfg = cfg,
                                  .pin = d->pin,
                                  .hub = d->hub,
                                  .hashes = d->hashes,
                                  .new_ids_from = d->id_base + 1,
                                  .owned = on_owned_by_journal,
                                  .recovered = on_recovered,
                                  .recovery_ctx = d,
                                  .xet = d->xet,
                                  .xet_work_dir = d->xet_work_dir,
                                  .bucket_hub = d->bucket_hub,
                                  .bucket_xet = d->bucket_xet};
        if (cfg->nodes > 1 && (rc = start_coordination(d, err)) < 0) {
            *ret_exit = CKPT_EXIT_INVALID;
            goto fail;
        }
        deps.coord = d->coord_client;

        if ((rc = queue_new(&d->queue, &deps, on_queue_event, d)) < 0) {
            ckpt_err_set(err, CKPT_ERR_IO, rc, "cannot start: %s", strerror(-rc));
            goto fail;
        }
    }
    if (cfg->metrics_path != NULL) {
        struct metrics_info info = {cfg->metrics_path, cfg->staging_dir, cfg->repo_id, cfg->job,
                                    d->queue};
        if ((rc = metrics_new(&d->metrics, loop, &info)) < 0) {
            ckpt_err_set(err, CKPT_ERR_IO, rc, "cannot start metrics: %s", uv_strerror(rc));
            goto fail;
        }
    }
    if ((rc = notify_watchdog_start(&d->watchdog, loop)) < 0) {
        ckpt_err_set(err, CKPT_ERR_IO, rc, "cannot start the watchdog: %s", uv_strerror(rc));
        goto fail;
    }
    if ((rc = control_start(&d->control, loop, d, cfg->socket_path, err)) < 0) {
        *ret_exit = CKPT_EXIT_INVALID;
        goto fail;
    }
    log_info("listening", "socket='%s'", cfg->socket_path);
    if (cfg->child_argv != NULL && (rc = spawn_child(d, err)) < 0) {
        *ret_exit = CKPT_EXIT_USAGE;
        goto fail;
    }
    /* Only now: the wrapped command inherited the priority we were started with. */
    priority_lower_thread((int)cfg->nice);
    if (cfg->dry_run) {
        queue_set_ready(d->queue, true); /* ready is said once the watch runs */
    } else if ((rc = hub_whoami(d->hub, on_whoami, d, &d->startup_op)) < 0) {
        ckpt_err_set(err, CKPT_ERR_IO, rc, "cannot start: %s", uv_strerror(rc));
        goto fail;
    }
    *ret_exit = CKPT_EXIT_OK;
    return 0;
fail:
    /* The caller runs the loop to let the handles close, then calls daemon_free. */
    daemon_stop(d, *ret_exit);
    return rc;
}

void daemon_free(struct daemon *d)
{
    if (d == NULL)
        return;
    queue_free(d->queue);
    if (d->bucket_xet != d->xet)
        xet_session_free(d->bucket_xet);
    xet_session_free(d->xet);
    free(d->xet_dir);
    free(d->xet_work_dir);
    if (d->bucket_hub != d->hub)
        hub_free(d->bucket_hub);
    hub_free(d->hub);
    hash_pool_free(d->hashes);
    detect_free(d->detect);
    free(d->final_metrics_json);
    free(d->final_hparams_json);
    free(d);
}
