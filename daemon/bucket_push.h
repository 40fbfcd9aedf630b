/* bucket_push.h - push one checkpoint's files to a Storage Bucket: hash, Xet upload, one batch.
 *
 * Owns the sequence hash -> Xet upload (xorbs and a shard through the bucket's own Xet session
 * and write token) -> one batch of addFile by Xet hash -> then, only once that batch answered
 * that every file took effect, one batch of deleteFile for the paths retention retires. No
 * commit and no commit budget: a bucket has no history. Does not decide what to push, where or
 * when (queue.c does) and logs only the retention outcome. Loop thread only; hashing and the Xet
 * scans run on the libuv pool.
 *
 * Restart: hashes and accepted xorbs are journaled (the journal's checkpoint journal_id and its
 * xorb records), so a push begun again after a SIGKILL hashes nothing unchanged and sends no
 * xorb the CAS took; the batch is sent again whole (adding the same hash at the same path and
 * deleting a path already gone change nothing).
 */
#ifndef CKPT_BUCKET_PUSH_H
#define CKPT_BUCKET_PUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "upload.h"

struct bucket_push;
struct hash_pool;
struct hub;
struct journal;
struct xet_session;

/* What the journal records as the "commit" of a checkpoint pushed to a bucket: there is none,
 * and retention tells these from repo commits by it. */
#define BUCKET_COMMIT_MARK "0000000000000000000000000000000000000000"

struct bucket_push_opts {
    unsigned max_transfers; /* xorb POSTs in flight; 0 -> 4 */
    struct journal *journal;
    uint64_t journal_id;
    const char *xet_work_dir; /* required */
    /* Bucket paths deleted once every file is in (copied): retention. A path also added is not
     * deleted. */
    const char *const *deletes;
    size_t n_deletes;
};

/* files[i].path_in_repo is the bucket path. Copies everything. UV_EINVAL (no files, no work
 * dir), UV_ENOMEM. hub (repo_type "bucket"), hashes and xet must outlive the push. On success
 * cb gets BUCKET_COMMIT_MARK as the commit. A cancelled push reports CKPT_ERR_IO, UV_ECANCELED. */
int bucket_push_start(struct bucket_push **ret, struct hub *hub, struct hash_pool *hashes,
                      struct xet_session *xet, const struct upload_file *files, size_t n,
                      const struct bucket_push_opts *opts, upload_done_cb cb, void *ctx);
/* bytes_sent counts xorb bytes; files_xet, xet_bytes_* and xorbs_* as for a Xet commit. */
void bucket_push_get_progress(const struct bucket_push *p, struct upload_progress *ret);
/* After cb: whether the retention batch failed (the checkpoint is whole all the same). */
bool bucket_push_retire_failed(const struct bucket_push *p);
/* cb runs later with the cancelled error unless it already ran. */
void bucket_push_cancel(struct bucket_push *p);
/* NULL-safe. After cb: frees now. Before: cancels, never calls cb, frees once drained. */
void bucket_push_free(struct bucket_push *p);

#endif
