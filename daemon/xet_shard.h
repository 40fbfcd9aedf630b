/* xet_shard.h - building and parsing Xet shards, the Xet format's metadata objects.
 *
 * Owns the shard layout (huggingface.co/docs/xet/shard): header, file info section (per file:
 * its hash, reconstruction terms, one verification entry per term, and the metadata extension
 * with the file's SHA-256 that links a git LFS pointer to it), CAS info section (per xorb: its
 * hash, sizes and per chunk hash, unpacked offset and size), footer. Building what an upload
 * sends (POST /v1/shards) and parsing both what a dedup query answers (chunk hashes HMAC'd with
 * the footer's key) and shards the daemon stored itself. No I/O; no globals.
 */
#ifndef CKPT_XET_SHARD_H
#define CKPT_XET_SHARD_H

#include "xet_hash.h"
#include "xet_xorb.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A reconstruction term: chunks [chunk_start, chunk_end) of one xorb. */
struct xet_term {
    struct xet_hash xorb;
    uint32_t chunk_start;
    uint32_t chunk_end;         /* exclusive */
    uint32_t unpacked_bytes;    /* sum of the chunks' lengths */
    struct xet_hash range_hash; /* xet_range_hash of the chunks' hashes (verification) */
};

/* ---- building ---- */

struct xet_shard_builder;

int xet_shard_builder_new(struct xet_shard_builder **out);
void xet_shard_builder_free(struct xet_shard_builder *b);
/* Adds a file (terms copied). sha256: the file's SHA-256 digest, 32 bytes in the usual order
 * (stored so its Xet hex form is the usual SHA-256 hex), or NULL for no metadata extension.
 * size: the file's length (the footer's materialized bytes). 0, -EINVAL (no terms for a
 * non-empty file), -ENOMEM. A file already added with the same hash is not added twice. */
int xet_shard_add_file(struct xet_shard_builder *b, const struct xet_hash *file_hash,
                       const struct xet_term *terms, size_t nterms, const uint8_t sha256[32],
                       uint64_t size);
/* Adds a xorb's CAS info (chunks copied; their unpacked_offset and unpacked_len are used).
 * packed_bytes: the serialized xorb's length. 0, -EINVAL (no chunks), -ENOMEM. */
int xet_shard_add_xorb(struct xet_shard_builder *b, const struct xet_hash *xorb_hash,
                       const struct xet_xorb_chunk *chunks, size_t nchunks, uint64_t packed_bytes);
/* The serialized size the shard would have now (to cap a shard's size). */
size_t xet_shard_builder_size(const struct xet_shard_builder *b);
size_t xet_shard_builder_files(const struct xet_shard_builder *b);
size_t xet_shard_builder_xorbs(const struct xet_shard_builder *b);
/* Serializes into a malloc'd buffer (*out, *len; the caller frees). created: the footer's
 * creation time (seconds since the epoch). 0 or -ENOMEM. The builder is unchanged. */
int xet_shard_serialize(const struct xet_shard_builder *b, uint64_t created, uint8_t **out,
                        size_t *len);

/* ---- parsing ---- */

struct xet_shard_file {
    struct xet_hash hash;
    uint32_t flags;
    size_t first_term; /* index into xet_shard.terms */
    size_t nterms;
    bool has_sha256;
    uint8_t sha256[32]; /* usual digest order */
};

struct xet_shard_xorb {
    struct xet_hash hash;
    uint32_t flags;
    uint32_t unpacked_bytes;
    uint32_t packed_bytes;
    size_t first_chunk; /* index into xet_shard.chunks */
    size_t nchunks;
};

struct xet_shard_chunk {
    struct xet_hash hash; /* as stored: HMAC'd with hmac_key when has_hmac_key */
    uint32_t unpacked_offset;
    uint32_t unpacked_len;
    uint32_t flags;
};

struct xet_shard {
    struct xet_shard_file *files;
    size_t nfiles;
    struct xet_term *terms; /* range_hash zero when the file has no verification entries */
    size_t nterms;
    struct xet_shard_xorb *xorbs;
    size_t nxorbs;
    struct xet_shard_chunk *chunks;
    size_t nchunks;
    bool has_hmac_key;
    struct xet_hash hmac_key;
    uint64_t created;
    uint64_t key_expiry;
    /* private: chunk lookup table sorted by stored hash */
    struct xet_shard_index_entry *index;
};

/* Parses a whole shard. 0, -ENOMEM, or -EBADMSG with a sentence in err (err_len bytes, may be
 * NULL) naming what is wrong. On success the caller calls xet_shard_free. */
int xet_shard_parse(const uint8_t *data, size_t len, struct xet_shard *out, char *err,
                    size_t err_len);
void xet_shard_free(struct xet_shard *s);

/* Looks a chunk up by its plain chunk hash (HMAC'd here with the shard's key when it has one).
 * true and *xorb_index (into s->xorbs) and *chunk_index (within that xorb) when found; a chunk
 * stored more than once is found at its first place (lowest xorb, then chunk index). */
bool xet_shard_find_chunk(const struct xet_shard *s, const struct xet_hash *chunk_hash,
                          size_t *xorb_index, uint32_t *chunk_index);

#endif
