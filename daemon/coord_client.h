/* coord_client.h - a node's link to the coordinator of a multi-node job: one TCP connection
 * (made again after a drop, with backoff), the reports of checkpoints whose objects this node put
 * on the Hub, each sent until the coordinator answers it with the checkpoint's commit. Owns the
 * connection and the pending reports; the secret is copied. Loop thread only.
 */
#ifndef CKPT_COORD_CLIENT_H
#define CKPT_COORD_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "err.h"

struct coord_client;
struct coord_file;

struct coord_client_opts {
    const char *host; /* name or address of the coordinator */
    int port;
    long rank;
    const unsigned char *secret;
    size_t secret_len;
};

/* err NULL: commit_oid is the commit holding every node's files. A refused report (conflict,
 * malformed) is CKPT_ERR_REJECTED; a failed commit CKPT_ERR_SERVER (the caller retries); a
 * client closing CKPT_ERR_IO with UV_ECANCELED. */
typedef void (*coord_report_cb)(void *ctx, const struct ckpt_err *err, const char *commit_oid);

/* Starts connecting (in the background: a coordinator not up yet is retried). Returns 0 or a
 * negative errno. */
int coord_client_start(struct coord_client **ret, uv_loop_t *loop,
                       const struct coord_client_opts *opts);
/* Copies everything; cb runs once (also after reconnections). Returns 0 or -ENOMEM. */
int coord_client_report(struct coord_client *c, const char *ckpt, int64_t step, const char *message,
                        const struct coord_file *files, size_t n, coord_report_cb cb, void *ctx);
/* Every pending report's cb runs with the cancelled error; handles close; cb(ctx) once freed.
 * NULL-safe. */
void coord_client_close(struct coord_client *c, void (*cb)(void *ctx), void *ctx);

#endif
