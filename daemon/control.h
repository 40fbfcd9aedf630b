/* control.h - the daemon's control socket: ipc requests mapped to the operations of daemon.h,
 * daemon events streamed to subscribers. Owns the ipc server; not the daemon. Loop thread only.
 */
#ifndef CKPT_CONTROL_H
#define CKPT_CONTROL_H

#include <uv.h>

#include "err.h"

struct control;
struct daemon;

/* Listens on path (see ipc_server_start) and registers as d's event sink. Fails at once with a
 * negative errno and err filled. */
int control_start(struct control **ret, uv_loop_t *loop, struct daemon *d, const char *path,
                  struct ckpt_err *err);
/* Unregisters the event sink, disconnects clients, removes the socket; cb(ctx) once every handle
 * is closed and c is freed. Answers still owed (final with wait, flush) are dropped when the
 * daemon calls back later; c must not be used after this. NULL-safe (cb is then called at once). */
void control_close(struct control *c, void (*cb)(void *ctx), void *ctx);

#endif
