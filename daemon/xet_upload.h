/* xet_upload.h - upload local files to the Xet CAS: chunks, dedup, xorbs, one shard.
 *
 * Owns the per-upload pipeline: scan each file on the pool, or take the scan its early hash made
 * in the same read (hash.h) while the file's inode, size and mtime still match (chunks, chunk
 * hashes, SHA-256, Xet file hash), decide per chunk whether the CAS already has it (this session's
 * xorbs, the local shard cache, the global dedup query), pack new chunks into xorbs of at most
 * XET_UPLOAD_XORB_MAX bytes (built on the pool into a file under the cache dir, then POSTed from
 * it), and POST one shard naming every file. Makes no commit: the caller gets each file's Xet hash
 * and SHA-256 (a commit names the file by its sha256 lfsFile oid; a bucket or another node may use
 * them). Loop thread only.
 *
 * Resume: each xorb the CAS accepted is journaled (hash, size) once; xorbs are packed per file
 * in file order, so after a SIGKILL the same files give the same xorbs and the journaled ones
 * are not sent again.
 */
#ifndef CKPT_XET_UPLOAD_H
#define CKPT_XET_UPLOAD_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "err.h"
#include "xet_hash.h"

struct hash_pool;
struct journal;
struct xet_session;
struct xet_upload;

/* Serialized xorb cap: a few in flight keep the daemon's memory small (README, limits). */
#define XET_UPLOAD_XORB_MAX (16u * 1024 * 1024)
#define XET_UPLOAD_QUERIES_MAX 16 /* global dedup queries per file */

struct xet_upload_file {
    const char *local_path;
    const char *sha256; /* hex, from the hash step: the scan checks the file still matches */
    uint64_t size;
};

struct xet_upload_result {
    char xet_hash[XET_HASH_HEX_LEN + 1];
    char sha256[65];
};

struct xet_upload_progress {
    uint64_t bytes_scanned;
    uint64_t bytes_new;     /* chunk bytes no dedup level had: they go into xorbs */
    uint64_t bytes_deduped; /* chunk bytes found in the CAS already */
    uint64_t bytes_sent;    /* xorb bytes handed to the network */
    uint64_t bytes_resumed; /* xorb bytes an earlier run sent (journal) */
    size_t xorbs_total;
    size_t xorbs_sent;
    size_t xorbs_resumed;
    size_t dedup_queries;
    size_t scans_reused; /* files whose chunks came from their early hash, not a second read */
};

struct xet_upload_opts {
    unsigned max_transfers;   /* xorb POSTs in flight; 0 -> 4 */
    struct journal *journal;  /* NULL: nothing recorded, nothing resumed */
    const char *work_dir;     /* where xorbs are built before their POST: <staging>/xet/tmp */
    struct hash_pool *hashes; /* NULL: every file is scanned; else a scan its early hash kept
                                 (hash_pool_keep_xet_scans) is used while the file is unchanged */
};

/* err NULL on success; results[i] for files[i]; valid only during the call. */
typedef void (*xet_upload_done_cb)(void *ctx, const struct ckpt_err *err,
                                   const struct xet_upload_result *results, size_t n);
/* Xorb bytes sent (negative when a retry restarts one); count only. */
typedef void (*xet_upload_sent_cb)(void *ctx, int64_t delta);

/* Copies files and opts. UV_EINVAL (no files, no work_dir), UV_ENOMEM. cb always runs later. */
int xet_upload_start(struct xet_upload **ret, uv_loop_t *loop, struct xet_session *session,
                     const struct xet_upload_file *files, size_t n,
                     const struct xet_upload_opts *opts, xet_upload_sent_cb sent,
                     xet_upload_done_cb cb, void *ctx);
void xet_upload_get_progress(const struct xet_upload *u, struct xet_upload_progress *ret);
/* cb runs later with the cancelled error (CKPT_ERR_IO, UV_ECANCELED) unless it already ran. */
void xet_upload_cancel(struct xet_upload *u);
/* NULL-safe. After cb: frees now. Before: cancels, never calls cb, frees once drained. */
void xet_upload_free(struct xet_upload *u);

#endif
