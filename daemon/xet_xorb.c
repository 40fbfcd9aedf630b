/* xet_xorb.c - the Xet xorb builder and chunk reader.
 *
 * Each chunk is stored one of three ways: LZ4 (frame format, 64 KiB independent blocks, no
 * checksums: what the reference's lz4_flex frame encoder writes by default), or its bytes
 * regrouped by position mod 4 (ByteGrouping4: the exponent bytes of float tensors line up) then
 * LZ4, whichever a cheap statistic predicts, or as is when that does not make it smaller.
 * Compression contexts and scratch buffers live in the builder and are reused, so appending
 * allocates nothing.
 */
#include "xet_xorb.h"

#include "xet_chunk.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <lz4frame.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

struct xet_xorb {
    uint8_t *buf;
    size_t cap;
    size_t len;
    struct xet_xorb_chunk *chunks;
    size_t nchunks;
    uint64_t unpacked;
    LZ4F_cctx *cctx;
    LZ4F_preferences_t prefs;
    enum xet_xorb_policy policy;
    uint8_t *grouped; /* XET_CHUNK_MAX: the ByteGrouping4 input */
    uint8_t *packed;  /* frame bound: the compressed chunk */
    size_t packed_cap;
    /* The last chunk that did not fit: its stored form, kept for the next xorb. */
    struct xet_hash held_hash;
    size_t held_len;
    const uint8_t *held_data;
    int held_scheme; /* -1: nothing held */
    size_t held_stored;
};

static size_t min_cap(void)
{
    return 2 * (XET_CHUNK_MAX + XET_CHUNK_HEADER_LEN + 1024);
}

int xet_xorb_new(struct xet_xorb **out, size_t max_bytes)
{
    struct xet_xorb *x = calloc(1, sizeof(*x));
    if (!x) {
        return -ENOMEM;
    }
    if (max_bytes == 0 || max_bytes > XET_XORB_MAX_BYTES) {
        max_bytes = XET_XORB_MAX_BYTES;
    }
    if (max_bytes < min_cap()) {
        max_bytes = min_cap();
    }
    x->cap = max_bytes;
    x->prefs.frameInfo.blockSizeID = LZ4F_max64KB;
    x->prefs.frameInfo.blockMode = LZ4F_blockIndependent;
    x->prefs.frameInfo.contentChecksumFlag = LZ4F_noContentChecksum;
    x->prefs.compressionLevel = 0;
    x->prefs.autoFlush = 1;
    x->packed_cap = LZ4F_compressFrameBound(XET_CHUNK_MAX, &x->prefs);
    x->buf = malloc(x->cap);
    x->chunks = malloc(XET_XORB_MAX_CHUNKS * sizeof(*x->chunks));
    x->grouped = malloc(XET_CHUNK_MAX);
    x->packed = malloc(x->packed_cap);
    x->held_scheme = -1;
    if (!x->buf || !x->chunks || !x->grouped || !x->packed ||
        LZ4F_isError(LZ4F_createCompressionContext(&x->cctx, LZ4F_VERSION))) {
        xet_xorb_free(x);
        return -ENOMEM;
    }
    *out = x;
    return 0;
}

void xet_xorb_free(struct xet_xorb *x)
{
    if (!x) {
        return;
    }
    if (x->cctx) {
        LZ4F_freeCompressionContext(x->cctx);
    }
    free(x->buf);
    free(x->chunks);
    free(x->grouped);
    free(x->packed);
    free(x);
}

void xet_xorb_set_policy(struct xet_xorb *x, enum xet_xorb_policy policy)
{
    x->policy = policy;
    x->held_scheme = -1; /* a held chunk was packed under the old policy */
}

void xet_xorb_reset(struct xet_xorb *x)
{
    x->len = 0;
    x->nchunks = 0;
    x->unpacked = 0;
}

/* Byte i of the chunk goes to group i % 4; groups are laid out one after the other, the first
 * ones one byte longer when the length is not a multiple of 4. */
static void bg4_split(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t q = n / 4;
    size_t r = n % 4;
    uint8_t *g[4];
    g[0] = out;
    g[1] = g[0] + q + (r > 0);
    g[2] = g[1] + q + (r > 1);
    g[3] = g[2] + q + (r > 2);
    size_t i = 0;
#ifdef __SSE2__
    /* 16 words a round: byte k of each word, masked to 32 bits and narrowed twice (the values
     * are below 256, so the saturating packs keep them). About 3 times the scalar speed. */
    const __m128i low_byte = _mm_set1_epi32(0xff);
    for (; i + 16 <= q; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(in + 4 * i));
        __m128i b = _mm_loadu_si128((const __m128i *)(in + 4 * i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(in + 4 * i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(in + 4 * i + 48));
        for (int k = 0; k < 4; k++) {
            __m128i ab = _mm_packs_epi32(_mm_and_si128(_mm_srli_epi32(a, 8 * k), low_byte),
                                         _mm_and_si128(_mm_srli_epi32(b, 8 * k), low_byte));
            __m128i cd = _mm_packs_epi32(_mm_and_si128(_mm_srli_epi32(c, 8 * k), low_byte),
                                         _mm_and_si128(_mm_srli_epi32(d, 8 * k), low_byte));
            _mm_storeu_si128((__m128i *)(g[k] + i), _mm_packus_epi16(ab, cd));
        }
    }
#endif
    for (; i < q; i++) {
        g[0][i] = in[4 * i];
        g[1][i] = in[4 * i + 1];
        g[2][i] = in[4 * i + 2];
        g[3][i] = in[4 * i + 3];
    }
    for (size_t k = 0; k < r; k++) {
        g[k][q] = in[4 * q + k];
    }
}

static void bg4_join(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t q = n / 4;
    size_t r = n % 4;
    const uint8_t *g0 = in;
    const uint8_t *g1 = g0 + q + (r > 0);
    const uint8_t *g2 = g1 + q + (r > 1);
    const uint8_t *g3 = g2 + q + (r > 2);
    for (size_t i = 0; i < q; i++) {
        out[4 * i] = g0[i];
        out[4 * i + 1] = g1[i];
        out[4 * i + 2] = g2[i];
        out[4 * i + 3] = g3[i];
    }
    if (r > 0) {
        out[4 * q] = g0[q];
    }
    if (r > 1) {
        out[4 * q + 1] = g1[q];
    }
    if (r > 2) {
        out[4 * q + 2] = g2[q];
    }
}

/* LZ4 frame of in into out (packed_cap bytes); 0 when it failed (then stored as is). */
static size_t lz4_frame(struct xet_xorb *x, const uint8_t *in, size_t n, uint8_t *out)
{
    size_t pos = LZ4F_compressBegin(x->cctx, out, x->packed_cap, &x->prefs);
    if (LZ4F_isError(pos)) {
        return 0;
    }
    size_t r = LZ4F_compressUpdate(x->cctx, out + pos, x->packed_cap - pos, in, n, NULL);
    if (LZ4F_isError(r)) {
        return 0;
    }
    pos += r;
    r = LZ4F_compressEnd(x->cctx, out + pos, x->packed_cap - pos, NULL);
    if (LZ4F_isError(r)) {
        return 0;
    }
    return pos + r;
}

#define POPCOUNT_B2(n) n, n + 1, n + 1, n + 2
#define POPCOUNT_B4(n) POPCOUNT_B2(n), POPCOUNT_B2(n + 1), POPCOUNT_B2(n + 1), POPCOUNT_B2(n + 2)
#define POPCOUNT_B6(n) POPCOUNT_B4(n), POPCOUNT_B4(n + 1), POPCOUNT_B4(n + 1), POPCOUNT_B4(n + 2)
static const uint8_t popcount8[256] = {POPCOUNT_B6(0), POPCOUNT_B6(1), POPCOUNT_B6(1),
                                       POPCOUNT_B6(2)};

/* Whether byte grouping is likely to pay, the reference's way: per byte position mod 4, the
 * histogram of set-bit counts; when one position's histogram diverges from the average of all
 * (Kullback-Leibler divergence above 0.02, the reference's empirical threshold), the positions
 * hold different kinds of bytes (exponents, mantissas) and grouping them helps LZ4. A quarter
 * of the chunk is sampled (64 bytes of every 256), which decides the same way in practice. */
static bool bg4_predicted(const uint8_t *data, size_t len)
{
    uint32_t hist[4][9] = {{0}};
    for (size_t block = 0; block < len; block += 256) {
        size_t end = block + 64 < len ? block + 64 : len;
        for (size_t i = block; i < end; i++) {
            hist[i & 3][popcount8[data[i]]]++;
        }
    }
    double base[9];
    double base_total = 0;
    double totals[4] = {0};
    for (int j = 0; j < 9; j++) {
        base[j] = 1; /* no state has probability zero */
        for (int k = 0; k < 4; k++) {
            base[j] += hist[k][j];
            totals[k] += hist[k][j];
        }
    }
    for (int k = 0; k < 4; k++) {
        base_total += totals[k];
    }
    for (int k = 0; k < 4; k++) {
        double kl = 0;
        for (int j = 0; j < 9 && totals[k] > 0; j++) {
            double pk = hist[k][j] / totals[k];
            if (pk > 0) {
                kl += pk * log(pk / (base[j] / base_total));
            }
        }
        if (kl > 0.02) {
            return true;
        }
    }
    return false;
}

/* Chooses how to store data: one compression, LZ4 or ByteGrouping4-LZ4 as predicted (trying
 * both would double the cost of the daemon's heaviest step), kept only when smaller. Fills
 * x->held_scheme and x->held_stored; the bytes are in x->packed or data itself. */
static void pack_chunk(struct xet_xorb *x, const uint8_t *data, size_t len)
{
    size_t packed;
    int scheme;
    if (x->policy == XET_XORB_STORE) {
        packed = 0;
        scheme = XET_COMPRESSION_NONE;
    } else if (x->policy == XET_XORB_PREDICT && bg4_predicted(data, len)) {
        bg4_split(data, len, x->grouped);
        packed = lz4_frame(x, x->grouped, len, x->packed);
        scheme = XET_COMPRESSION_BG4_LZ4;
    } else {
        packed = lz4_frame(x, data, len, x->packed);
        scheme = XET_COMPRESSION_LZ4;
    }
    if (packed == 0 || packed >= len) {
        scheme = XET_COMPRESSION_NONE;
        packed = len;
    }
    x->held_scheme = scheme;
    x->held_stored = packed;
}

static void put_u24(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
}

int xet_xorb_add(struct xet_xorb *x, const void *data, size_t len, const struct xet_hash *hash)
{
    if (len == 0 || len > XET_CHUNK_MAX) {
        return -EINVAL;
    }
    if (x->nchunks >= XET_XORB_MAX_CHUNKS) {
        return XET_XORB_FULL;
    }
    /* A chunk refused as too big is usually appended again next, to a fresh xorb: keep its
     * compressed form rather than compress it twice. */
    bool held = x->held_scheme >= 0 && x->held_data == data && x->held_len == len &&
                xet_hash_equal(&x->held_hash, hash);
    if (!held) {
        pack_chunk(x, data, len);
        x->held_data = data;
        x->held_len = len;
        x->held_hash = *hash;
    }
    if (x->len + XET_CHUNK_HEADER_LEN + x->held_stored > x->cap) {
        return XET_XORB_FULL;
    }

    uint8_t *h = x->buf + x->len;
    const uint8_t *stored = data;
    if (x->held_scheme != XET_COMPRESSION_NONE) {
        stored = x->packed;
    }
    h[0] = 0; /* chunk header version */
    put_u24(h + 1, (uint32_t)x->held_stored);
    h[4] = (uint8_t)x->held_scheme;
    put_u24(h + 5, (uint32_t)len);
    memcpy(h + XET_CHUNK_HEADER_LEN, stored, x->held_stored);

    struct xet_xorb_chunk *c = &x->chunks[x->nchunks++];
    c->hash = *hash;
    c->offset = (uint32_t)x->len;
    c->packed_len = (uint32_t)(XET_CHUNK_HEADER_LEN + x->held_stored);
    c->unpacked_len = (uint32_t)len;
    c->unpacked_offset = (uint32_t)x->unpacked;
    x->len += c->packed_len;
    x->unpacked += len;
    x->held_scheme = -1;
    x->held_data = NULL;
    return 0;
}

size_t xet_xorb_count(const struct xet_xorb *x)
{
    return x->nchunks;
}

const struct xet_xorb_chunk *xet_xorb_chunks(const struct xet_xorb *x)
{
    return x->chunks;
}

const uint8_t *xet_xorb_bytes(const struct xet_xorb *x, size_t *len)
{
    *len = x->len;
    return x->buf;
}

uint64_t xet_xorb_unpacked_bytes(const struct xet_xorb *x)
{
    return x->unpacked;
}

void xet_xorb_hash(const struct xet_xorb *x, struct xet_hash *out)
{
    struct xet_merkle m;
    xet_merkle_init(&m);
    for (size_t i = 0; i < x->nchunks; i++) {
        xet_merkle_add(&m, &x->chunks[i].hash, x->chunks[i].unpacked_len);
    }
    xet_merkle_root(&m, out);
}

/* ---- reading ---- */

static uint32_t get_u24(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
}

/* Decodes a whole LZ4 frame of exactly in_len bytes into exactly want bytes. */
static int lz4_unframe(const uint8_t *in, size_t in_len, uint8_t *out, size_t want)
{
    LZ4F_dctx *d;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&d, LZ4F_VERSION))) {
        return -ENOMEM;
    }
    size_t in_pos = 0;
    size_t out_pos = 0;
    size_t hint = 1;
    int rc = 0;
    while (hint != 0) {
        size_t src = in_len - in_pos;
        size_t dst = want - out_pos;
        if (src == 0) {
            rc = -EBADMSG; /* frame truncated */
            break;
        }
        hint = LZ4F_decompress(d, out + out_pos, &dst, in + in_pos, &src, NULL);
        if (LZ4F_isError(hint)) {
            rc = -EBADMSG;
            break;
        }
        in_pos += src;
        out_pos += dst;
        if (src == 0 && dst == 0 && hint != 0) {
            rc = -EBADMSG; /* more output than the header said */
            break;
        }
    }
    LZ4F_freeDecompressionContext(d);
    if (rc == 0 && (in_pos != in_len || out_pos != want)) {
        rc = -EBADMSG;
    }
    return rc;
}

int xet_xorb_next_chunk(const uint8_t *xorb, size_t len, size_t *pos, uint8_t *out, size_t out_cap,
                        size_t *out_len)
{
    if (*pos == len) {
        return 1;
    }
    if (*pos > len || len - *pos < XET_CHUNK_HEADER_LEN) {
        return -EBADMSG;
    }
    const uint8_t *h = xorb + *pos;
    uint32_t stored = get_u24(h + 1);
    uint32_t unpacked = get_u24(h + 5);
    int scheme = h[4];
    if (h[0] != 0 || scheme > XET_COMPRESSION_BG4_LZ4 || unpacked > XET_CHUNK_MAX ||
        stored > len - *pos - XET_CHUNK_HEADER_LEN) {
        return -EBADMSG;
    }
    if (unpacked > out_cap) {
        return -ENOBUFS;
    }
    const uint8_t *body = h + XET_CHUNK_HEADER_LEN;
    int rc = 0;
    if (scheme == XET_COMPRESSION_NONE) {
        if (stored != unpacked) {
            return -EBADMSG;
        }
        memcpy(out, body, stored);
    } else if (scheme == XET_COMPRESSION_LZ4) {
        rc = lz4_unframe(body, stored, out, unpacked);
    } else {
        uint8_t *grouped = malloc(unpacked ? unpacked : 1);
        if (!grouped) {
            return -ENOMEM;
        }
        rc = lz4_unframe(body, stored, grouped, unpacked);
        if (rc == 0) {
            bg4_join(grouped, unpacked, out);
        }
        free(grouped);
    }
    if (rc != 0) {
        return rc;
    }
    *out_len = unpacked;
    *pos += XET_CHUNK_HEADER_LEN + stored;
    return 0;
}
