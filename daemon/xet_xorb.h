/* xet_xorb.h - building and reading Xet xorbs, the Xet format's storage objects.
 *
 * Owns the serialized xorb layout (huggingface.co/docs/xet/xorb): a sequence of chunks, each an
 * 8-byte header (version 0, compressed length u24 LE, compression scheme, uncompressed length
 * u24 LE) then its bytes stored as None, LZ4 (frame format) or ByteGrouping4 + LZ4: one
 * compression per chunk, the scheme predicted from byte statistics as the reference does, kept
 * when smaller than the chunk. No footer: like the official JS client, the upload is the chunk
 * sequence only. Not owned here: which chunks go in (dedup), uploading. One builder per thread; no
 * globals.
 */
#ifndef CKPT_XET_XORB_H
#define CKPT_XET_XORB_H

#include "xet_hash.h"

#include <stddef.h>
#include <stdint.h>

#define XET_XORB_MAX_BYTES (64u * 1024 * 1024)
#define XET_XORB_MAX_CHUNKS 8192u
#define XET_CHUNK_HEADER_LEN 8

enum xet_compression {
    XET_COMPRESSION_NONE = 0,
    XET_COMPRESSION_LZ4 = 1,
    XET_COMPRESSION_BG4_LZ4 = 2,
};

struct xet_xorb_chunk {
    struct xet_hash hash;
    uint32_t offset;          /* of its header in the serialized xorb */
    uint32_t packed_len;      /* header + stored bytes */
    uint32_t unpacked_len;    /* the chunk's own length */
    uint32_t unpacked_offset; /* sum of unpacked_len of the chunks before it (shard CAS info) */
};

struct xet_xorb;

/* max_bytes: the serialized size cap, 0 or more than XET_XORB_MAX_BYTES meaning the spec's
 * 64 MiB; at least 2 * (XET_CHUNK_MAX + header) is enforced so any chunk fits an empty xorb.
 * The buffer is allocated once at that size and reused across xet_xorb_reset. -ENOMEM. */
int xet_xorb_new(struct xet_xorb **out, size_t max_bytes);
void xet_xorb_free(struct xet_xorb *x);
/* Empties the xorb for the next one, keeping its buffers. */
void xet_xorb_reset(struct xet_xorb *x);

/* How chunks are compressed. PREDICT (the default): LZ4 or ByteGrouping4-LZ4 as byte statistics
 * predict (ByteGrouping4 suits float tensors but its LZ4 pass runs at about 500 MB/s where
 * plain LZ4 skips incompressible data at several GB/s). LZ4_ONLY: never byte grouping. STORE:
 * no compression (the cheapest, for a CPU-starved machine with a fast link). Each keeps a chunk
 * as is when compression does not make it smaller. */
enum xet_xorb_policy {
    XET_XORB_PREDICT = 0,
    XET_XORB_LZ4_ONLY = 1,
    XET_XORB_STORE = 2,
};
void xet_xorb_set_policy(struct xet_xorb *x, enum xet_xorb_policy policy);

#define XET_XORB_FULL 1
/* Appends one chunk (len 1..XET_CHUNK_MAX, hash its chunk hash), compressing it. Returns 0,
 * XET_XORB_FULL when it would pass the byte cap or the chunk count limit (nothing appended:
 * upload this xorb, reset, append again), or -EINVAL (bad length), -ENOMEM. */
int xet_xorb_add(struct xet_xorb *x, const void *data, size_t len, const struct xet_hash *hash);

size_t xet_xorb_count(const struct xet_xorb *x);
const struct xet_xorb_chunk *xet_xorb_chunks(const struct xet_xorb *x);
/* The serialized bytes so far; valid until the next add, reset or free. */
const uint8_t *xet_xorb_bytes(const struct xet_xorb *x, size_t *len);
uint64_t xet_xorb_unpacked_bytes(const struct xet_xorb *x);
/* The xorb hash (merkle root of the chunk hashes and lengths); zeros when empty. */
void xet_xorb_hash(const struct xet_xorb *x, struct xet_hash *out);

/* Reading a serialized xorb (tests, and checking a download). Decodes the chunk at *pos into
 * out (capacity out_cap >= XET_CHUNK_MAX is always enough), sets *out_len and advances *pos
 * past it. 0; 1 at the end (*pos == len); -EBADMSG for a malformed header, a truncated chunk
 * or data that does not decompress to the header's length; -ENOBUFS when out_cap is short. */
int xet_xorb_next_chunk(const uint8_t *xorb, size_t len, size_t *pos, uint8_t *out, size_t out_cap,
                        size_t *out_len);

#endif
