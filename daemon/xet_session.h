/* xet_session.h - the daemon's Xet session: write token, CAS requests and what is deduplicated.
 *
 * Owns the Xet write token (memory only: never logged, never journaled; refreshed through the
 * Hub before it expires, and once after a 401 from the CAS), the CAS calls (xorb and shard
 * POSTs, the global dedup query) with their error sentences, and the dedup index: chunks of
 * xorbs this daemon sent or knows the CAS has (from shards it uploaded, kept under
 * <staging>/xet/shards/ so that a restarted daemon reuses them, and from dedup answers). Knows
 * nothing of commits: xet_upload.c turns files into xorbs and a shard with it. Loop thread only;
 * the shard cache is read and written on the libuv pool.
 */
#ifndef CKPT_XET_SESSION_H
#define CKPT_XET_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "err.h"
#include "xet_hash.h"

struct hub;
struct hub_lfs_object;
struct xet_session;
struct xet_shard;

/* Dedup state kept for the daemon's life; the shard cache keeps the newest ones on disk. */
#define XET_CACHE_SHARDS_MAX 256
#define XET_CACHE_BYTES_MAX (256u * 1024 * 1024)
#define XET_TOKEN_MARGIN_S 60 /* a token this close to its expiry is refreshed first */
/* Chunks indexed in memory (40 bytes each, 80 at most with the table's slack: about 40 MiB at the
 * cap, for 32 GiB of distinct chunks); past it the oldest xorbs are forgotten. */
#define XET_INDEX_CHUNKS_MAX (1u << 19)
#define XET_ANSWERS_MAX 64 /* dedup answers kept (the newest) */

/* cache_dir: <staging>/xet (created when needed; shards go to shards-<scope>/), or NULL for no
 * shard cache. */
int xet_session_new(struct xet_session **ret, uv_loop_t *loop, struct hub *hub,
                    const char *cache_dir);
/* NULL-safe. Only when no CAS request is in flight (their uploads are gone); shard cache reads
 * and writes still running on the pool finish first, and the last one frees the session. */
void xet_session_free(struct xet_session *s);

/* 16 hex digits naming the Hub endpoint: what is known of one CAS (journaled xorbs, cached
 * shards) is never taken for another's. */
const char *xet_session_scope(const struct xet_session *s);

/* A token from an LFS batch answer's X-Xet-* headers; kept when newer than the one held. */
void xet_session_offer_token(struct xet_session *s, const struct hub_lfs_object *obj);

/* cb once the shard cache is read: before this returns when it was already (a bad shard file
 * is skipped, logged and deleted; an unreadable folder is an empty cache). */
typedef void (*xet_ready_cb)(void *ctx);
int xet_session_when_ready(struct xet_session *s, xet_ready_cb cb, void *ctx);

/* ---- CAS requests ---- */

struct xet_op;
/* err NULL on success. body/len: a dedup query's shard (NULL, 0 when the CAS has no match);
 * valid only during the call. A cancelled request reports CKPT_ERR_IO with UV_ECANCELED. */
typedef void (*xet_done_cb)(void *ctx, const struct ckpt_err *err, const uint8_t *body, size_t len);
/* Bytes handed to the network; negative when a retry restarts the body. Count only. */
typedef void (*xet_sent_cb)(void *ctx, int64_t delta);

/* POST {cas}/v1/xorbs/default/{hash} with len bytes of body_path as the body; retried. */
int xet_post_xorb(struct xet_session *s, const struct xet_hash *hash, const char *body_path,
                  uint64_t len, xet_sent_cb sent, xet_done_cb cb, void *ctx, struct xet_op **ret);
/* POST {cas}/v1/shards (body copied); retried. */
int xet_post_shard(struct xet_session *s, const uint8_t *body, size_t len, xet_done_cb cb,
                   void *ctx, struct xet_op **ret);
/* GET {cas}/v1/chunks/default-merkledb/{hash}: a shard naming xorbs that hold the chunk. */
int xet_query_chunk(struct xet_session *s, const struct xet_hash *chunk, xet_done_cb cb, void *ctx,
                    struct xet_op **ret);
/* The op's callback runs later with the cancelled error (unless it already ran). */
void xet_op_cancel(struct xet_op *op);

/* Whether the spec allows a global dedup query for this chunk (first chunks of files are asked
 * by the caller regardless). */
bool xet_chunk_dedup_eligible(const struct xet_hash *chunk);

/* ---- dedup index ---- */

/* Where the CAS (or a xorb this session sends) holds this chunk. */
bool xet_session_find_chunk(struct xet_session *s, const struct xet_hash *chunk,
                            struct xet_hash *xorb, uint32_t *index);
/* The chunks of a xorb that will be (or is) in the CAS: later lookups find them. Returns the
 * xorb's id in this session (> 0) or -ENOMEM. */
int xet_session_add_xorb(struct xet_session *s, const struct xet_hash *xorb,
                         const struct xet_hash *chunks, size_t n);
/* A xorb added by an upload that failed: the CAS may lack it, or know it from no shard, so its
 * chunks are no longer found (a retry plans them again; the journal spares re-sending those the
 * CAS took). */
void xet_session_forget_xorb(struct xet_session *s, int id);
/* A dedup answer (parsed; ownership taken, freed with the session). 0 or -ENOMEM. */
int xet_session_add_answer(struct xet_session *s, struct xet_shard *answer);
/* Keeps the index within XET_INDEX_CHUNKS_MAX (forgetting the oldest xorbs' chunks) and the
 * dedup answers within XET_ANSWERS_MAX. Only between files: a lookup answered before must
 * still be answered the same while one file is planned. */
void xet_session_trim(struct xet_session *s);
/* A shard the CAS accepted: written to the cache (on the pool; failures are logged, not
 * reported), its xorbs are indexed by the caller with xet_session_add_xorb. Copied. */
void xet_session_cache_shard(struct xet_session *s, const struct xet_hash *name,
                             const uint8_t *shard, size_t len);

/* For status and metrics: every byte this session's xorb POSTs sent, chunk bytes found already
 * stored, and what the CAS answered. */
struct xet_session_stats {
    uint64_t xorbs_sent;
    uint64_t xorb_bytes_sent;
    uint64_t shards_sent;
    uint64_t dedup_queries;
    uint64_t token_refreshes;
    uint64_t index_evictions;
    size_t chunks_indexed;
    size_t cached_shards;
};
void xet_session_get_stats(const struct xet_session *s, struct xet_session_stats *ret);

#endif
