/* daemon.h - one ckptpushd: wires the watcher, the detector, pins, hashing and the Hub together
 * and owns the queue of sealed checkpoints waiting to be pushed, in save order. Loop thread only.
 */
#ifndef CKPT_DAEMON_H
#define CKPT_DAEMON_H

#include <uv.h>

#include "config.h"

struct daemon;

/* Starts watching and checks the hub. The daemon stops by itself (a fatal hub answer at start,
 * or a drain after SIGTERM/SIGINT finishing); uv_run returns once every handle is closed and
 * daemon_exit_code says how it ended. Fails at once (exit code in *ret_exit, reason in err)
 * when the watch cannot start. */
int daemon_start(struct daemon **ret, uv_loop_t *loop, const struct config *cfg, int *ret_exit,
                 struct ckpt_err *err);
int daemon_exit_code(const struct daemon *d);

/* --- what the control socket (ipc/control.c) may ask; loop thread only ---------------------
 * Results go into cJSON objects owned by the caller; a callback is called exactly once unless
 * the function fails at once (then never). */
struct cJSON;
typedef void (*daemon_done_cb)(void *ctx, const struct ckpt_err *err, const char *commit_oid);
/* Streamed to subscribers: event is "sealed", "progress", "committed", "failed", "paused",
 * "resumed", "final"; fields is an object the sink must not keep. */
typedef void (*daemon_event_cb)(void *ctx, const char *event, const struct cJSON *fields);

/* {"daemon":{state, repo, endpoint, watch, paused, uptime_s}, "checkpoints":[{id, name, layout,
 * state, files, bytes_total, bytes_done, rate_bps, eta_s, commit, error}]} */
int daemon_status(struct daemon *d, struct cJSON *out);
/* Seal the file or directory at path (absolute, or relative to the watched root) and queue it
 * now; it may lie outside the watched tree. A checkpoint the daemon already sealed is not queued
 * twice. message (NULL: the strategy's) is the title of its commit; one that comes too late (the
 * checkpoint is committed already) is logged as ignored, the push itself still answered. cb(ctx,
 * NULL, NULL) once it is queued, or with the reason it cannot be. */
int daemon_push_path(struct daemon *d, const char *path, const char *message, daemon_done_cb cb,
                     void *ctx);
/* Training ended: seal everything complete, push the end-of-training commit (metrics and
 * hyperparameters, both optional objects, feed the model card), cb when it is committed or
 * failed. */
int daemon_final(struct daemon *d, const struct cJSON *metrics, const struct cJSON *hparams,
                 daemon_done_cb cb, void *ctx);
void daemon_pause(struct daemon *d);
void daemon_resume(struct daemon *d);
/* cb once every sealed checkpoint is committed (or failed), or after deadline_s with a
 * CKPT_ERR_SERVER-kind error saying what is left. */
int daemon_flush(struct daemon *d, unsigned deadline_s, daemon_done_cb cb, void *ctx);
void daemon_request_shutdown(struct daemon *d);
void daemon_set_event_sink(struct daemon *d, daemon_event_cb cb, void *ctx);
/* Only after uv_run returned. */
void daemon_free(struct daemon *d);

#endif
