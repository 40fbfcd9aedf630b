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
/* Only after uv_run returned. */
void daemon_free(struct daemon *d);

#endif
