/* xet_chunk.h - Xet content-defined chunking: where chunk boundaries fall in a byte stream.
 *
 * Owns the gear-hash chunker of the Xet spec (huggingface.co/docs/xet/chunking): 64 KiB target,
 * 8 KiB minimum, 128 KiB maximum, the spec's gear table and mask, and the skip over the first
 * bytes of each chunk that cannot end it. Streaming: feeding a stream in buffers of any sizes
 * gives the same boundaries as feeding it in one buffer. The chunker never copies or keeps
 * data; the caller keeps the bytes of the open chunk. No globals; one chunker per stream.
 */
#ifndef CKPT_XET_CHUNK_H
#define CKPT_XET_CHUNK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XET_CHUNK_TARGET (64u * 1024)
#define XET_CHUNK_MIN (XET_CHUNK_TARGET / 8)
#define XET_CHUNK_MAX (XET_CHUNK_TARGET * 2)

struct xet_chunker {
    uint64_t gear;      /* rolling hash state */
    uint64_t chunk_len; /* bytes of the open chunk fed so far */
};

void xet_chunker_init(struct xet_chunker *c);

/* Scans data, which continues the open chunk. Returns how many bytes of data it consumed and
 * sets *boundary: true when the open chunk ends after those bytes (its length is then
 * *chunk_len; the next call starts a new chunk), false when all of data was consumed into the
 * open chunk without finding its end. Call again with the rest of data until it is consumed. */
size_t xet_chunker_scan(struct xet_chunker *c, const uint8_t *data, size_t len, bool *boundary,
                        uint64_t *chunk_len);

/* At the end of the stream: the length of the last chunk (the open one), 0 when none; resets
 * the chunker for a new stream. */
uint64_t xet_chunker_finish(struct xet_chunker *c);

/* All boundaries of one buffer, for tests and small inputs: writes up to max chunk lengths
 * into lens and returns the number of chunks (which may exceed max: then only the first max
 * were written). An empty buffer has no chunks. */
size_t xet_chunk_buffer(const uint8_t *data, size_t len, uint64_t *lens, size_t max);

#endif
