/* daemon.c - the life of a checkpoint inside one ckptpushd: watch events go to the detector,
 * files it claims are pinned at first sight, sealed checkpoints queue in save order, and each is
 * pushed as one commit through upload.c, then its pins are released. Also signals and drain.
 * Loop thread only; everything slow happens in the modules it calls (thread pool, curl multi).
 */
#include "daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "detect.h"
#include "hash.h"
#include "http.h"
#include "hub.h"
#include "log.h"
#include "pin.h"
#include "strategy.h"
#include "upload.h"
#include "watch.h"

#define STAGING_SKIP_NAME ".ckptpush"

/* One sealed checkpoint on its way to the Hub. */
struct push {
    struct push *next;
    struct daemon *daemon;
    uint64_t id;
    char *name;
    char *layout;
    int64_t step;
    char **files;
    size_t file_count;
    uint64_t sealed_at_ms;
    struct strategy_plan plan;
    char **local_paths;
    struct upload *upload;
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
    struct hub_op *startup_op;

    uv_timer_t detect_timer;
    uv_timer_t drain_timer;
    uv_signal_t sig_term;
    uv_signal_t sig_int;
    uv_signal_t sig_usr1;

    struct push *queue_head;
    struct push *queue_tail;
    struct push *active;

    bool hub_ready;
    bool draining;
    bool stopping;
    int exit_code;
    unsigned committed;
    unsigned failed;
};

static void pump(struct daemon *d);
static void daemon_stop(struct daemon *d, int exit_code);

static void push_free(struct push *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->file_count; i++)
        free(p->files[i]);
    if (p->local_paths != NULL)
        for (size_t i = 0; i < p->plan.count; i++)
            free(p->local_paths[i]);
    free(p->local_paths);
    strategy_plan_release(&p->plan);
    upload_free(p->upload);
    free(p->files);
    free(p->name);
    free(p->layout);
    free(p);
}

static int64_t now_ms(struct daemon *d)
{
    uv_update_time(d->loop);
    return (int64_t)uv_now(d->loop);
}

/* --- detection: events in, pins and sealed checkpoints out ------------------------------- */

static void on_detect_timer(uv_timer_t *timer);

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

    detect_tick(d->detect, now_ms(d));
    rearm_detect_timer(d);
}

static void on_watch_event(void *ctx, const struct watch_event *ev)
{
    struct daemon *d = ctx;

    if (d->stopping)
        return;
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
    rc = pin_add(d->pin, detect_cand_id(c), source, relpath);
    if (rc < 0)
        log_warn("pin-failed", "ckpt='%s' file='%s' reason='%s'", detect_cand_name(c), relpath,
                 uv_strerror(rc));
}

static void on_file_renamed(void *ctx, const struct detect_cand *c, const char *from,
                            const char *to)
{
    struct daemon *d = ctx;

    pin_rename(d->pin, detect_cand_id(c), from, to);
}

static void on_file_removed(void *ctx, const struct detect_cand *c, const char *relpath)
{
    struct daemon *d = ctx;

    pin_remove(d->pin, detect_cand_id(c), relpath);
}

static void on_pin_result(void *ctx, const struct pin_result *res)
{
    (void)ctx;
    if (res->status == -ENOENT)
        log_warn("pin-lost", "pin=%" PRIu64 " file='%s' reason='gone before it could be pinned'",
                 res->id, res->relpath);
    else if (res->status < 0)
        log_warn("pin-failed", "pin=%" PRIu64 " file='%s' reason='%s'", res->id, res->relpath,
                 strerror(-res->status));
    else if (res->copy_at_seal)
        log_warn("pin-copy",
                 "pin=%" PRIu64 " file='%s' reason='hard links impossible here: the "
                 "file will be copied when its checkpoint is sealed'",
                 res->id, res->relpath);
    else
        log_debug("pinned", "pin=%" PRIu64 " file='%s'", res->id, res->relpath);
}

static void on_sealed(void *ctx, const struct detect_cand *c)
{
    struct daemon *d = ctx;
    struct push *p = calloc(1, sizeof(*p));
    size_t n = detect_cand_n_files(c);

    if (p == NULL)
        goto oom;
    p->daemon = d;
    p->id = detect_cand_id(c);
    p->name = strdup(detect_cand_name(c));
    p->layout = strdup(detect_cand_layout(c));
    p->step = detect_cand_step(c);
    p->sealed_at_ms = (uint64_t)now_ms(d);
    p->files = calloc(n ? n : 1, sizeof(*p->files));
    if (p->name == NULL || p->layout == NULL || p->files == NULL)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        if ((p->files[i] = strdup(detect_cand_file(c, i))) == NULL)
            goto oom;
        p->file_count++;
    }
    log_info("sealed", "ckpt='%s' layout=%s rule='%s' files=%zu", p->name, p->layout,
             detect_cand_rule(c), n);

    if (d->queue_tail != NULL)
        d->queue_tail->next = p;
    else
        d->queue_head = p;
    d->queue_tail = p;
    pump(d);
    return;
oom:
    /* The pins stay on disk: nothing is lost, the checkpoint is only not pushed now. */
    log_error("push-failed", "ckpt='%s' reason='out of memory'", detect_cand_name(c));
    push_free(p);
}

static void on_dropped(void *ctx, const struct detect_cand *c, const char *why)
{
    struct daemon *d = ctx;

    log_warn("dropped", "ckpt='%s' reason='%s'", detect_cand_name(c), why);
    pin_release(d->pin, detect_cand_id(c), NULL, NULL);
}

static void on_late_write(void *ctx, const struct detect_cand *c, const char *relpath)
{
    (void)ctx;
    log_warn("late-write", "ckpt='%s' file='%s' changed after the checkpoint was sealed, ignoring",
             detect_cand_name(c), relpath);
}

/* --- pushing: one checkpoint at a time, in the order they were sealed -------------------- */

static void finish_push(struct daemon *d, struct push *p)
{
    d->active = NULL;
    push_free(p);
    if (d->draining && d->queue_head == NULL)
        daemon_stop(d, d->failed ? CKPT_EXIT_FAILURE : CKPT_EXIT_OK);
    else
        pump(d);
}

static void on_released(void *ctx, int status)
{
    struct push *p = ctx;

    if (status < 0)
        log_warn("release-failed", "ckpt='%s' reason='%s'", p->name, uv_strerror(status));
    finish_push(p->daemon, p);
}

static void on_uploaded(void *ctx, const struct ckpt_err *err, const char *commit_oid)
{
    struct push *p = ctx;
    struct daemon *d = p->daemon;
    struct upload_progress progress;
    double seconds = (double)((uint64_t)now_ms(d) - p->sealed_at_ms) / 1000.0;

    upload_get_progress(p->upload, &progress);
    if (err != NULL) {
        d->failed++;
        log_error("push-failed", "ckpt='%s' kind=%s reason='%s' pins='%s/pins/%" PRIu64 "'",
                  p->name, ckpt_err_kind_name(err->kind), err->msg, d->cfg->staging_dir, p->id);
        finish_push(d, p);
        return;
    }
    d->committed++;
    log_info("committed",
             "ckpt='%s' commit=%s files=%zu skipped=%zu bytes=%" PRIu64 " sent=%" PRIu64
             " seconds=%.3f message='%s'",
             p->name, commit_oid, progress.files_total, progress.files_skipped,
             progress.bytes_total, progress.bytes_sent, seconds, p->plan.message);
    if (pin_release(d->pin, p->id, on_released, p) < 0)
        finish_push(d, p);
}

static void start_upload(struct push *p)
{
    struct daemon *d = p->daemon;
    struct upload_file *files = NULL;
    char path[PATH_MAX];
    int rc;

    rc = strategy_plan(d->cfg->strategy, p->layout, p->name, p->step, (const char *const *)p->files,
                       p->file_count, &p->plan);
    if (rc < 0)
        goto fail;
    if (p->plan.count == 0) {
        log_info("skipped", "ckpt='%s' reason='strategy %s pushes none of its files'", p->name,
                 config_strategy_name(d->cfg->strategy));
        if (pin_release(d->pin, p->id, on_released, p) < 0)
            finish_push(d, p);
        return;
    }
    p->local_paths = calloc(p->plan.count, sizeof(*p->local_paths));
    files = calloc(p->plan.count, sizeof(*files));
    if (p->local_paths == NULL || files == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < p->plan.count; i++) {
        if ((rc = pin_path(d->pin, p->id, p->plan.items[i].file, path, sizeof(path))) < 0)
            goto fail;
        if ((p->local_paths[i] = strdup(path)) == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
        files[i].path_in_repo = p->plan.items[i].path_in_repo;
        files[i].local_path = p->local_paths[i];
    }
    rc = upload_start(&p->upload, d->hub, d->hashes, files, p->plan.count, p->plan.message, NULL,
                      on_uploaded, p);
    free(files);
    if (rc < 0)
        goto fail_logged;
    return;
fail:
    free(files);
fail_logged:
    d->failed++;
    log_error("push-failed", "ckpt='%s' reason='%s'", p->name, uv_strerror(rc));
    finish_push(d, p);
}

static void on_pins_copied(void *ctx, int status)
{
    struct push *p = ctx;
    struct daemon *d = p->daemon;

    if (status < 0)
        log_warn("pin-copy-failed", "ckpt='%s' reason='%s'", p->name, strerror(-status));
    if (d->cfg->dry_run) {
        if (pin_release(d->pin, p->id, on_released, p) < 0)
            finish_push(d, p);
        return;
    }
    start_upload(p);
}

static void on_pins_idle(void *ctx, int status)
{
    struct push *p = ctx;
    struct daemon *d = p->daemon;

    (void)status; /* a lost file was already logged by on_pin_result; push what is there */
    if (pin_copies_pending(d->pin, p->id) > 0 &&
        pin_copy_pending(d->pin, p->id, on_pins_copied, p) == 0)
        return;
    if (d->cfg->dry_run) {
        if (pin_release(d->pin, p->id, on_released, p) < 0)
            finish_push(d, p);
        return;
    }
    start_upload(p);
}

static void pump(struct daemon *d)
{
    struct push *p;

    if (d->active != NULL || d->queue_head == NULL || d->stopping)
        return;
    if (!d->hub_ready && !d->cfg->dry_run)
        return;
    p = d->queue_head;
    d->queue_head = p->next;
    if (d->queue_head == NULL)
        d->queue_tail = NULL;
    p->next = NULL;
    d->active = p;
    if (pin_when_idle(d->pin, p->id, on_pins_idle, p) < 0)
        on_pins_idle(p, 0);
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
    log_info("ready", "watch='%s' repo='%s' endpoint='%s' strategy=%s dry_run=%s",
             d->cfg->watch_dir, d->cfg->repo_id ? d->cfg->repo_id : "", d->cfg->endpoint,
             config_strategy_name(d->cfg->strategy), d->cfg->dry_run ? "yes" : "no");
}

static void on_repo_ready(void *ctx, const struct ckpt_err *err)
{
    struct daemon *d = ctx;

    d->startup_op = NULL;
    if (err != NULL) {
        log_error("startup-failed", "repo='%s' reason='%s'", d->cfg->repo_id, err->msg);
        daemon_stop(d, exit_code_for(err));
        return;
    }
    d->hub_ready = true;
    log_ready(d);
    pump(d);
}

static void on_whoami(void *ctx, const struct ckpt_err *err, const char *user)
{
    struct daemon *d = ctx;

    d->startup_op = NULL;
    if (err != NULL) {
        log_error("startup-failed", "endpoint='%s' reason='%s'", d->cfg->endpoint, err->msg);
        daemon_stop(d, exit_code_for(err));
        return;
    }
    log_info("authenticated", "user='%s' endpoint='%s' token_source='%s'", user, d->cfg->endpoint,
             d->cfg->token_source);
    if (hub_ensure_repo(d->hub, on_repo_ready, d, &d->startup_op) < 0)
        daemon_stop(d, CKPT_EXIT_FAILURE);
}

/* --- signals, drain and shutdown ---------------------------------------------------------- */

static void on_drain_timeout(uv_timer_t *timer)
{
    struct daemon *d = timer->data;
    size_t waiting = 0;

    for (struct push *p = d->queue_head; p != NULL; p = p->next)
        waiting++;
    log_error("drain-timeout",
              "seconds=%u active='%s' waiting=%zu reason='pins kept in %s for the next start'",
              d->cfg->drain_timeout_s, d->active ? d->active->name : "", waiting,
              d->cfg->staging_dir);
    daemon_stop(d, CKPT_EXIT_FAILURE);
}

static void start_drain(struct daemon *d, const char *why)
{
    if (d->draining) {
        log_warn("stopping", "reason='second %s: stopping now'", why);
        daemon_stop(d, CKPT_EXIT_FAILURE);
        return;
    }
    d->draining = true;
    log_info("draining", "reason='%s' deadline_s=%u", why, d->cfg->drain_timeout_s);
    detect_seal_all_complete(d->detect, now_ms(d));
    if (d->active == NULL && d->queue_head == NULL) {
        daemon_stop(d, d->failed ? CKPT_EXIT_FAILURE : CKPT_EXIT_OK);
        return;
    }
    uv_timer_start(&d->drain_timer, on_drain_timeout, (uint64_t)d->cfg->drain_timeout_s * 1000, 0);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct daemon *d = sig->data;

    if (signum == SIGUSR1) {
        log_info("push-now", "reason='SIGUSR1: sealing every complete checkpoint'");
        detect_seal_all_complete(d->detect, now_ms(d));
        rearm_detect_timer(d);
        return;
    }
    start_drain(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_http_closed(void *ctx)
{
    struct daemon *d = ctx;

    d->http = NULL;
}

static void on_pin_closed(void *ctx)
{
    struct daemon *d = ctx;

    d->pin = NULL;
}

static void on_watch_closed(void *ctx)
{
    struct daemon *d = ctx;

    d->watch = NULL;
}

static void daemon_stop(struct daemon *d, int exit_code)
{
    if (d->stopping)
        return;
    d->stopping = true;
    d->exit_code = exit_code;
    if (d->startup_op != NULL)
        hub_op_cancel(d->startup_op);
    if (d->active != NULL && d->active->upload != NULL)
        upload_cancel(d->active->upload);
    uv_close((uv_handle_t *)&d->detect_timer, NULL);
    uv_close((uv_handle_t *)&d->drain_timer, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_usr1, NULL);
    if (d->watch != NULL)
        watch_close(d->watch, on_watch_closed, d);
    if (d->http != NULL)
        http_close(d->http, on_http_closed, d);
    if (d->pin != NULL)
        pin_close(d->pin, on_pin_closed, d);
    log_info("stopped", "exit=%d committed=%u failed=%u", exit_code, d->committed, d->failed);
}

int daemon_exit_code(const struct daemon *d)
{
    return d->exit_code;
}

/* --- construction --------------------------------------------------------------------------- */

static int init_handles(struct daemon *d)
{
    uv_timer_init(d->loop, &d->detect_timer);
    uv_timer_init(d->loop, &d->drain_timer);
    uv_signal_init(d->loop, &d->sig_term);
    uv_signal_init(d->loop, &d->sig_int);
    uv_signal_init(d->loop, &d->sig_usr1);
    d->detect_timer.data = d->drain_timer.data = d;
    d->sig_term.data = d->sig_int.data = d->sig_usr1.data = d;
    uv_signal_start(&d->sig_term, on_signal, SIGTERM);
    uv_signal_start(&d->sig_int, on_signal, SIGINT);
    return uv_signal_start(&d->sig_usr1, on_signal, SIGUSR1);
}

int daemon_start(struct daemon **ret, uv_loop_t *loop, const struct config *cfg, int *ret_exit,
                 struct ckpt_err *err)
{
    struct detect_config detect_cfg = {.quiet_ms = cfg->quiet_ms};
    struct detect_callbacks callbacks = {
        .file_added = on_file_added,
        .file_renamed = on_file_renamed,
        .file_removed = on_file_removed,
        .sealed = on_sealed,
        .dropped = on_dropped,
        .late_write = on_late_write,
    };
    struct daemon *d = calloc(1, sizeof(*d));
    int rc;

    *ret_exit = CKPT_EXIT_FAILURE;
    if (d == NULL)
        return ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "out of memory");
    d->loop = loop;
    d->cfg = cfg;
    callbacks.ctx = d;

    if (mkdir(cfg->staging_dir, 0700) != 0 && errno != EEXIST) {
        rc = ckpt_err_set(err, CKPT_ERR_IO, -errno, "cannot create staging directory '%s': %s",
                          cfg->staging_dir, strerror(errno));
        *ret_exit = CKPT_EXIT_WATCH;
        goto error;
    }
    if ((rc = pin_new(&d->pin, loop, cfg->watch_dir, STAGING_SKIP_NAME, on_pin_result, d)) < 0 ||
        (rc = hash_pool_init(&d->hashes, loop, 2)) < 0 ||
        (rc = detect_new(&d->detect, &detect_cfg, &callbacks)) < 0) {
        ckpt_err_set(err, CKPT_ERR_IO, rc, "cannot start: %s", uv_strerror(rc));
        goto error;
    }
    if (!cfg->dry_run) {
        struct hub_config hub_cfg = {
            .endpoint = cfg->endpoint,
            .token = cfg->token,
            .repo_id = cfg->repo_id,
            .private_repo = cfg->private_repo,
        };
        if ((rc = http_init(&d->http, loop, NULL)) < 0) {
            ckpt_err_set(err, CKPT_ERR_IO, rc, "cannot start HTTP: %s", uv_strerror(rc));
            goto error;
        }
        if ((rc = hub_init(&d->hub, d->http, &hub_cfg, err)) < 0) {
            *ret_exit = CKPT_EXIT_INVALID;
            goto error;
        }
    }
    init_handles(d);
    rc = watch_start(&d->watch, loop, cfg->watch_dir, STAGING_SKIP_NAME, on_watch_event, d, err);
    if (rc < 0) {
        *ret_exit = CKPT_EXIT_WATCH;
        daemon_stop(d, CKPT_EXIT_WATCH);
        *ret = d; /* the caller runs the loop to close the handles, then frees */
        return rc;
    }
    if (cfg->dry_run) {
        log_ready(d);
    } else if ((rc = hub_whoami(d->hub, on_whoami, d, &d->startup_op)) < 0) {
        ckpt_err_set(err, CKPT_ERR_IO, rc, "cannot start: %s", uv_strerror(rc));
        daemon_stop(d, CKPT_EXIT_FAILURE);
        *ret = d;
        return rc;
    }
    *ret = d;
    *ret_exit = CKPT_EXIT_OK;
    return 0;
error:
    if (d->http != NULL)
        http_close(d->http, on_http_closed, d);
    if (d->pin != NULL)
        pin_close(d->pin, on_pin_closed, d);
    /* The loop must run once more to close what was opened; daemon_free is safe after it. */
    d->stopping = true;
    *ret = d;
    return rc;
}

void daemon_free(struct daemon *d)
{
    struct push *p, *next;

    if (d == NULL)
        return;
    push_free(d->active);
    for (p = d->queue_head; p != NULL; p = next) {
        next = p->next;
        push_free(p);
    }
    hub_free(d->hub);
    hash_pool_free(d->hashes);
    detect_free(d->detect);
    free(d);
}
