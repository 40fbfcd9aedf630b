/* xet_file.c - one read of a local file for a Xet upload: chunk boundaries, chunk hashes, the
 * file's SHA-256 and Xet file hash.
 *
 * The buffer holds the open chunk (at most XET_CHUNK_MAX bytes) followed by the latest read, so
 * every chunk is contiguous when it is hashed and handed to the callback; the open chunk's
 * bytes move to the front before each read. Memory: XET_CHUNK_MAX + XET_FILE_READ_SIZE, plus the
 * chunk list (48 bytes a chunk, about 0.75 MiB per GiB of file).
 */
#include "xet_file.h"

#include "xet_chunk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

struct scan {
    struct xet_file_result *res;
    size_t chunks_cap;
    struct xet_merkle merkle;
    xet_file_chunk_cb cb;
    void *ctx;
    xet_file_read_cb on_read;
    void *read_ctx;
};

static int emit_chunk(struct scan *s, uint64_t offset, const uint8_t *data, size_t len)
{
    struct xet_file_result *r = s->res;
    if (r->nchunks == s->chunks_cap) {
        size_t cap = s->chunks_cap ? 2 * s->chunks_cap : 256;
        struct xet_file_chunk *p = realloc(r->chunks, cap * sizeof(*p));
        if (!p) {
            return -ENOMEM;
        }
        r->chunks = p;
        s->chunks_cap = cap;
    }
    struct xet_file_chunk *c = &r->chunks[r->nchunks++];
    c->offset = offset;
    c->len = (uint32_t)len;
    xet_chunk_hash(data, len, &c->hash);
    xet_merkle_add(&s->merkle, &c->hash, len);
    return s->cb ? s->cb(s->ctx, c, data) : 0;
}

static int scan_fd(int fd, uint64_t size, struct scan *s, EVP_MD_CTX *sha)
{
    const size_t cap = XET_CHUNK_MAX + XET_FILE_READ_SIZE;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        return -ENOMEM;
    }
    struct xet_chunker chunker;
    xet_chunker_init(&chunker);
    size_t start = 0;   /* the open chunk's first byte in buf */
    size_t scanned = 0; /* bytes of buf the chunker has seen */
    size_t filled = 0;  /* bytes of buf holding data */
    uint64_t base = 0;  /* file offset of buf[0] */
    uint64_t total = 0;
    int rc = 0;

    for (;;) {
        /* The open chunk moves to the front so a full read fits behind it. */
        if (start > 0) {
            memmove(buf, buf + start, filled - start);
            base += start;
            scanned -= start;
            filled -= start;
            start = 0;
        }
        ssize_t n;
        do {
            n = read(fd, buf + filled, cap - filled);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0) {
            break;
        }
        if (EVP_DigestUpdate(sha, buf + filled, (size_t)n) != 1) {
            rc = -ENOMEM;
            break;
        }
        if (s->on_read)
            s->on_read(s->read_ctx, buf + filled, (size_t)n);
        filled += (size_t)n;
        total += (uint64_t)n;
        while (scanned < filled) {
            bool boundary;
            uint64_t len;
            scanned += xet_chunker_scan(&chunker, buf + scanned, filled - scanned, &boundary, &len);
            if (boundary) {
                rc = emit_chunk(s, base + start, buf + start, scanned - start);
                if (rc != 0) {
                    goto out;
                }
                start = scanned;
            }
        }
    }
    if (rc == 0 && xet_chunker_finish(&chunker) > 0) {
        rc = emit_chunk(s, base + start, buf + start, filled - start);
    }
    if (rc == 0 && total != size) {
        rc = -EIO; /* the file changed while being read */
    }
out:
    free(buf);
    return rc;
}

static int scan_open_fd(int fd, const struct stat *st, struct scan *s)
{
    struct xet_file_result *out = s->res;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    xet_merkle_init(&s->merkle);
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    int rc = -ENOMEM;
    if (sha && EVP_DigestInit_ex(sha, EVP_sha256(), NULL) == 1) {
        rc = scan_fd(fd, (uint64_t)st->st_size, s, sha);
    }
    if (rc == 0) {
        struct stat after;
        if (fstat(fd, &after) != 0 || after.st_size != st->st_size) {
            rc = -EIO;
        }
    }
    unsigned int dlen = 0;
    if (rc == 0 && EVP_DigestFinal_ex(sha, out->sha256, &dlen) != 1) {
        rc = -ENOMEM;
    }
    EVP_MD_CTX_free(sha);
    if (rc != 0) {
        xet_file_result_free(out);
        return rc;
    }
    out->size = (uint64_t)st->st_size;
    for (int i = 0; i < 32; i++) {
        static const char digits[] = "0123456789abcdef";
        out->sha256_hex[2 * i] = digits[out->sha256[i] >> 4];
        out->sha256_hex[2 * i + 1] = digits[out->sha256[i] & 15];
    }
    out->sha256_hex[64] = '\0';
    xet_merkle_file_hash(&s->merkle, &out->file_hash);
    return 0;
}

int xet_file_scan_fd(int fd, const struct stat *st, xet_file_read_cb on_read, void *read_ctx,
                     struct xet_file_result *out)
{
    memset(out, 0, sizeof(*out));
    if (!S_ISREG(st->st_mode)) {
        return -EINVAL;
    }
    struct scan s = {.res = out, .on_read = on_read, .read_ctx = read_ctx};
    return scan_open_fd(fd, st, &s);
}

int xet_file_scan(const char *path, xet_file_chunk_cb cb, void *ctx, struct xet_file_result *out)
{
    memset(out, 0, sizeof(*out));
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    struct scan s = {.res = out, .cb = cb, .ctx = ctx};
    int rc = scan_open_fd(fd, &st, &s);
    close(fd);
    return rc;
}

void xet_file_result_free(struct xet_file_result *r)
{
    free(r->chunks);
    memset(r, 0, sizeof(*r));
}
