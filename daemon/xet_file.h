/* xet_file.h - one pass over a local file for a Xet upload: chunks, chunk hashes, SHA-256 and
 * the Xet file hash.
 *
 * Meant for a libuv pool thread (it blocks on reads). Reads the file once in 1 MiB pieces into
 * buffers it reuses (no whole-file buffer), and hands each chunk's bytes, contiguous, to an
 * optional callback so the caller can build xorbs in the same pass. Not owned here: dedup,
 * xorbs, uploading. Thread-safe; no globals.
 */
#ifndef CKPT_XET_FILE_H
#define CKPT_XET_FILE_H

#include "xet_hash.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#define XET_FILE_READ_SIZE (1u * 1024 * 1024)

struct xet_file_chunk {
    uint64_t offset; /* in the file */
    uint32_t len;
    struct xet_hash hash;
};

struct xet_file_result {
    uint64_t size;
    uint8_t sha256[32];
    char sha256_hex[65];
    struct xet_hash file_hash;     /* zeros for an empty file */
    struct xet_file_chunk *chunks; /* malloc'd, in file order */
    size_t nchunks;
};

/* Called for each chunk in file order with its bytes (valid during the call only). A nonzero
 * return stops the scan and is returned by xet_file_scan. */
typedef int (*xet_file_chunk_cb)(void *ctx, const struct xet_file_chunk *chunk,
                                 const uint8_t *data);

/* Scans path (a symlink is refused: -ELOOP; not a regular file: -EINVAL). 0, a negative errno
 * (-EIO when the file changed size while being read), or the callback's nonzero return. On
 * success the caller calls xet_file_result_free; on failure *out holds nothing to free. */
int xet_file_scan(const char *path, xet_file_chunk_cb cb, void *ctx, struct xet_file_result *out);
/* Called with each piece read, in file order, before it is chunked (valid during the call). */
typedef void (*xet_file_read_cb)(void *ctx, const uint8_t *data, size_t len);
/* The same scan of an open regular file from its current offset, st its fstat before reading;
 * on_read (may be NULL) sees every byte, so a caller can compute more digests in the same read.
 * Returns as xet_file_scan; fd stays open. */
int xet_file_scan_fd(int fd, const struct stat *st, xet_file_read_cb on_read, void *read_ctx,
                     struct xet_file_result *out);
void xet_file_result_free(struct xet_file_result *r);

#endif
