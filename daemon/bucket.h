/* bucket.h - the Hub's Storage Buckets API (mutable, unversioned, every file a Xet file).
 *
 * Owns the batch request (NDJSON addFile by Xet hash, deleteFile), and the reading of its answer
 * ({success, processed, succeeded, failed:[{path, error}]}, 422 when any failed). Creating the
 * bucket and its Xet write token are hub.c's (a hub whose repo_type is "bucket"); which files
 * go where and when is queue.c's and bucket_push.c's. Loop thread only.
 */
#ifndef CKPT_BUCKET_H
#define CKPT_BUCKET_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"
#include "xet_hash.h"

struct hub;
struct hub_op;

enum bucket_op_kind { BUCKET_ADD, BUCKET_DELETE };

struct bucket_op {
    enum bucket_op_kind kind;
    const char *path;
    const char *xet_hash; /* BUCKET_ADD: hex */
};

#define BUCKET_BATCH_BODY_MAX (32u * 1024 * 1024)

/* The NDJSON body, one operation a line. *ret is malloc'd. 0, UV_ENOMEM or UV_E2BIG. */
int bucket_batch_body(const struct bucket_op *ops, size_t n, char **ret, size_t *ret_len);

/* Reads a batch answer (status 200 or 422): 0 when every operation took effect, a deleteFile of
 * a path already gone counting as done (a re-sent batch after a restart finds it deleted). Else
 * fills err naming the bucket, the first failed path and the Hub's reason (CKPT_ERR_REJECTED),
 * or what in the answer could not be read (CKPT_ERR_PROTOCOL). */
int bucket_batch_check(const char *bucket_id, long status, const char *body, size_t len,
                       const struct bucket_op *ops, size_t n, struct ckpt_err *err);

typedef void (*bucket_done_cb)(void *ctx, const struct ckpt_err *err);

/* POST /api/buckets/NS/NAME/batch with ops (copied), retried after a transport error, 408, 429
 * or 5xx: adding the same hash to the same path again and deleting a path already gone change
 * nothing. hub's repo_type must be "bucket". */
int bucket_batch(struct hub *hub, const struct bucket_op *ops, size_t n, bucket_done_cb cb,
                 void *ctx, struct hub_op **ret_op);

#endif
