/* xet_hash.h - the hashes of the Xet storage format: chunk, xorb, file and verification hashes.
 *
 * Owns the 32-byte hash type, its hex form and the keyed BLAKE3 functions the Xet spec defines
 * (huggingface.co/docs/xet/hashing). Pure computation: no I/O, no globals, thread-safe.
 *
 * Byte order: struct xet_hash holds the 32 bytes exactly as BLAKE3 outputs them, which is also
 * how shards store a hash. The Xet hex form (URLs, JSON, logs) is NOT plain byte order: it reads
 * the bytes as four little-endian u64 words and prints each word as 16 hex digits, so each
 * 8-byte group appears reversed.
 */
#ifndef CKPT_XET_HASH_H
#define CKPT_XET_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XET_HASH_LEN 32
#define XET_HASH_HEX_LEN 64

struct xet_hash {
    uint8_t b[XET_HASH_LEN];
};

/* Chunk hash: BLAKE3 keyed with the spec's DATA_KEY over the chunk's bytes. */
void xet_chunk_hash(const void *data, size_t len, struct xet_hash *out);

/* The Xet hex form, 64 lowercase digits plus a NUL. */
void xet_hash_to_hex(const struct xet_hash *h, char out[XET_HASH_HEX_LEN + 1]);
/* Parses exactly 64 hex digits (either case; more characters after them are an error when the
 * string continues). 0, or -EINVAL. */
int xet_hash_from_hex(const char *hex, struct xet_hash *out);
bool xet_hash_equal(const struct xet_hash *a, const struct xet_hash *b);
bool xet_hash_is_zero(const struct xet_hash *h);
/* Orders hashes by their bytes (for sorted lookup tables); memcmp's sign. */
int xet_hash_cmp(const struct xet_hash *a, const struct xet_hash *b);

/* BLAKE3 of h's 32 bytes keyed with key (the shard's chunk-hash HMAC, and the file hash's
 * final step). */
void xet_hash_hmac(const struct xet_hash *h, const struct xet_hash *key, struct xet_hash *out);

/* Verification hash of a file reconstruction term: BLAKE3 keyed with the spec's
 * VERIFICATION_KEY over the concatenated hashes of the term's chunks, in order. */
void xet_range_hash(const struct xet_hash *chunk_hashes, size_t n, struct xet_hash *out);

/* Streaming merkle tree of (hash, size) leaves with the spec's aggregated node hash (children
 * printed as "<hex> : <size>\n" lines, BLAKE3 keyed with the internal node key) and its
 * variable branching (a group closes after a child whose last word is 0 mod 4, between 2 and 9
 * children). Leaves are added one at a time in constant memory (about 24 KiB, no allocation),
 * so a file of any size is hashed without keeping its chunk list. Fields are private. */
#define XET_MERKLE_LEVELS 48
#define XET_MERKLE_GROUP_MAX 9
struct xet_merkle_node {
    struct xet_hash hash;
    uint64_t size;
};
struct xet_merkle {
    struct xet_merkle_node pending[XET_MERKLE_LEVELS][XET_MERKLE_GROUP_MAX];
    uint8_t npending[XET_MERKLE_LEVELS];
    uint64_t nodes_seen[XET_MERKLE_LEVELS];
    uint64_t leaves;
};

void xet_merkle_init(struct xet_merkle *m);
void xet_merkle_add(struct xet_merkle *m, const struct xet_hash *hash, uint64_t size);
/* The root (the xorb hash of the leaves added); all zeros when none were added. Ends the tree:
 * call xet_merkle_init before adding again. */
void xet_merkle_root(struct xet_merkle *m, struct xet_hash *out);
/* The Xet file hash: the root HMAC'd with the all-zero key; all zeros for an empty file.
 * Ends the tree like xet_merkle_root. */
void xet_merkle_file_hash(struct xet_merkle *m, struct xet_hash *out);

/* The same over an array of leaves (chunk hash, unpacked size). */
void xet_xorb_hash_of(const struct xet_merkle_node *leaves, size_t n, struct xet_hash *out);
void xet_file_hash_of(const struct xet_merkle_node *leaves, size_t n, struct xet_hash *out);

#endif
