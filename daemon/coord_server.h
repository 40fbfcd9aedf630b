/* coord_server.h - the coordinator of a multi-node job (node rank 0): a TCP listener speaking
 * coord_proto.h, which gathers each node's report of a checkpoint and makes the checkpoint's one
 * commit once every node's part is in. Owns the connections, the reports and the waiting timers;
 * not the hub (borrowed) nor the secret (copied). Loop thread only.
 */
#ifndef CKPT_COORD_SERVER_H
#define CKPT_COORD_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "err.h"

struct cJSON;
struct hub;
struct coord_server;

struct coord_server_opts {
    const char *bind_host; /* address to listen on ("0.0.0.0": every interface) */
    int port;
    long nodes;
    const unsigned char *secret;
    size_t secret_len;
    /* After this long without every node's report of a checkpoint, the missing ranks are
     * logged (coord-waiting), and again each period after. */
    uint64_t wait_log_ms;
};

/* Listens now. Fails with a negative errno and err filled (port taken, bad address). */
int coord_server_start(struct coord_server **ret, uv_loop_t *loop, struct hub *hub,
                       const struct coord_server_opts *opts, struct ckpt_err *err);
/* The port listened on (the one asked for, or the kernel's pick for 0). */
int coord_server_port(const struct coord_server *s);
/* {"nodes":N,"connected":[ranks],"pending":[{"ckpt","step","reported":[..],"missing":[..],
 * "waited_s"}],"committed":[{"ckpt","commit"}]}; NULL when out of memory. */
struct cJSON *coord_server_status(const struct coord_server *s);
/* Drops connections and reports (a report not yet committed is sent again by its node when it
 * reconnects to the next coordinator); cb(ctx) once every handle is closed. NULL-safe. */
void coord_server_close(struct coord_server *s, void (*cb)(void *ctx), void *ctx);

#endif
