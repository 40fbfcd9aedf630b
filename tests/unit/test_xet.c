/* test_xet.c - the Xet format library (xet_chunk, xet_hash, xet_xorb, xet_shard, xet_file)
 * against xet-core's published vectors, and round trips through its own parsers. The official
 * JS client's implementation checks the same code independently: tests/hub/test_xet_format.mjs. */
#include "xet_chunk.h"
#include "xet_file.h"
#include "xet_hash.h"
#include "xet_shard.h"
#include "xet_xorb.h"

#include "testutil.h"
#include "xet_reference_vectors.h"

#include <errno.h>
#include <lz4frame.h>
#include <openssl/sha.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(rng() >> 32);
    }
}

static struct xet_hash hash_hex(const char *hex)
{
    struct xet_hash h;
    REQUIRE(xet_hash_from_hex(hex, &h) == 0);
    return h;
}

static void check_hash_hex(const struct xet_hash *h, const char *want)
{
    char hex[XET_HASH_HEX_LEN + 1];
    xet_hash_to_hex(h, hex);
    CHECK_STR(hex, want);
}

static void test_hex_form(void)
{
    struct xet_hash h;
    for (int i = 0; i < 32; i++) {
        h.b[i] = (uint8_t)i;
    }
    /* Each 8-byte group is a little-endian word printed most significant byte first. */
    check_hash_hex(&h, "0706050403020100"
                       "0f0e0d0c0b0a0908"
                       "1716151413121110"
                       "1f1e1d1c1b1a1918");
    struct xet_hash back = hash_hex("0706050403020100"
                                    "0F0E0D0C0B0A0908"
                                    "1716151413121110"
                                    "1f1e1d1c1b1a1918");
    CHECK(xet_hash_equal(&h, &back));
    CHECK(xet_hash_from_hex("07", &back) == -EINVAL);
    CHECK(xet_hash_from_hex("0706050403020100"
                            "0f0e0d0c0b0a0908"
                            "1716151413121110"
                            "1f1e1d1c1b1a191g",
                            &back) == -EINVAL);
    CHECK(xet_hash_from_hex("0706050403020100"
                            "0f0e0d0c0b0a0908"
                            "1716151413121110"
                            "1f1e1d1c1b1a1918 ",
                            &back) == -EINVAL);
}

static void test_merkle_vectors(void)
{
    size_t n = sizeof(merkle_vectors) / sizeof(merkle_vectors[0]);
    CHECK(n == 18);
    for (size_t v = 0; v < n; v++) {
        const struct merkle_vector *mv = &merkle_vectors[v];
        struct xet_merkle_node *leaves = calloc(mv->nleaves + 1, sizeof(*leaves));
        REQUIRE(leaves);
        for (size_t i = 0; i < mv->nleaves; i++) {
            leaves[i].hash = hash_hex(mv->leaves[i].hash);
            leaves[i].size = mv->leaves[i].size;
        }
        struct xet_hash root;
        xet_xorb_hash_of(leaves, mv->nleaves, &root);
        check_hash_hex(&root, mv->xorb_hash);

        struct xet_hash file;
        xet_file_hash_of(leaves, mv->nleaves, &file);
        struct xet_hash salt0 = hash_hex(mv->salts[0]);
        CHECK(xet_hash_is_zero(&salt0));
        check_hash_hex(&file, mv->file_hashes[0]);
        /* The salted file hash is the root HMAC'd with the salt (zero for no leaves). */
        for (int s = 1; s < 3; s++) {
            struct xet_hash salt = hash_hex(mv->salts[s]);
            struct xet_hash salted = {{0}};
            if (mv->nleaves > 0) {
                xet_hash_hmac(&root, &salt, &salted);
            }
            check_hash_hex(&salted, mv->file_hashes[s]);
        }
        free(leaves);
    }
}

static size_t trigger_data(uint8_t *data, size_t n, size_t padding)
{
    size_t len = sizeof(chunk_trigger_pattern);
    memcpy(data, chunk_trigger_pattern, len);
    memset(data + len, 0, padding);
    len += padding;
    while (len < n) {
        size_t take = n - len < len ? n - len : len;
        memmove(data + len, data, take);
        len += take;
    }
    return len;
}

/* Chunk lengths of data fed to one chunker in pieces of random sizes (1 byte to 300 KiB). */
static size_t chunk_streamed(const uint8_t *data, size_t len, uint64_t *lens, size_t max)
{
    struct xet_chunker c;
    size_t n = 0;
    size_t pos = 0;
    xet_chunker_init(&c);
    while (pos < len) {
        size_t piece = 1 + (size_t)(rng() % (rng() % 2 ? 64 : 300 * 1024));
        if (piece > len - pos) {
            piece = len - pos;
        }
        size_t end = pos + piece;
        while (pos < end) {
            bool boundary;
            uint64_t chunk_len;
            pos += xet_chunker_scan(&c, data + pos, end - pos, &boundary, &chunk_len);
            if (boundary && n < max) {
                lens[n++] = chunk_len;
            }
        }
    }
    uint64_t last = xet_chunker_finish(&c);
    if (last > 0 && n < max) {
        lens[n++] = last;
    }
    return n;
}

static void test_chunk_vectors(void)
{
    uint8_t *data = malloc(65536);
    REQUIRE(data);
    for (size_t pad = 0; pad < 128; pad++) {
        trigger_data(data, 65536, pad);
        CHECK_INT(data[11111], chunk_trigger_sample_11111[pad]);
        uint64_t lens[16];
        size_t n = xet_chunk_buffer(data, 65536, lens, 16);
        CHECK_INT(n, 8);
        uint64_t end = 0;
        for (size_t i = 0; i < n && i < 8; i++) {
            end += lens[i];
            if (end != chunk_trigger_boundaries[pad][i]) {
                fprintf(stderr, "padding %zu chunk %zu ends at %llu, want %u\n", pad, i,
                        (unsigned long long)end, chunk_trigger_boundaries[pad][i]);
                test_failures++;
                break;
            }
        }
        uint64_t streamed[16];
        size_t ns = chunk_streamed(data, 65536, streamed, 16);
        CHECK(ns == n && memcmp(streamed, lens, n * sizeof(lens[0])) == 0);
    }
    free(data);

    /* test_correctness_1mb_const_data: constant bytes never match, so every chunk is maximal. */
    size_t big = 1000000;
    data = malloc(big);
    REQUIRE(data);
    memset(data, 59, big);
    uint64_t lens[16];
    CHECK_INT(xet_chunk_buffer(data, big, lens, 16), 8);
    for (int i = 0; i < 7; i++) {
        CHECK_INT(lens[i], XET_CHUNK_MAX);
    }
    CHECK_INT(lens[7], big - 7 * XET_CHUNK_MAX);
    CHECK_INT(xet_chunk_buffer(data, 0, lens, 16), 0);
    CHECK_INT(xet_chunk_buffer(data, 1, lens, 16), 1);
    free(data);
}

static void test_chunk_streaming_random(void)
{
    size_t len = 8u * 1024 * 1024 + 12345;
    uint8_t *data = malloc(len);
    REQUIRE(data);
    fill_random(data, len);
    size_t max = len / XET_CHUNK_MIN + 2;
    uint64_t *whole = malloc(max * sizeof(*whole));
    uint64_t *streamed = malloc(max * sizeof(*streamed));
    REQUIRE(whole && streamed);
    size_t n = xet_chunk_buffer(data, len, whole, max);
    CHECK(n > 64 && n < 256); /* about 64 KiB on average */
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(whole[i] <= XET_CHUNK_MAX);
        CHECK(i == n - 1 || whole[i] >= XET_CHUNK_MIN);
        sum += whole[i];
    }
    CHECK_INT(sum, len);
    for (int round = 0; round < 4; round++) {
        size_t ns = chunk_streamed(data, len, streamed, max);
        CHECK(ns == n && memcmp(streamed, whole, n * sizeof(*whole)) == 0);
    }
    free(whole);
    free(streamed);
    free(data);
}

/* Data whose 4-byte words share their high bytes, like float tensors: byte grouping wins. */
static void fill_floatlike(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (i % 4 >= 2) ? (uint8_t)(0x3c + (rng() % 3)) : (uint8_t)rng();
    }
}

static void test_xorb_round_trip(void)
{
    struct xet_xorb *x;
    REQUIRE(xet_xorb_new(&x, 0) == 0);
    size_t total = 3u * 1024 * 1024;
    uint8_t *data = malloc(total);
    REQUIRE(data);
    fill_random(data, total / 3);
    memset(data + total / 3, 0, total / 3);
    fill_floatlike(data + 2 * (total / 3), total - 2 * (total / 3));

    uint64_t lens[128];
    size_t n = xet_chunk_buffer(data, total, lens, 128);
    REQUIRE(n < 128);
    struct xet_merkle_node *leaves = calloc(n, sizeof(*leaves));
    REQUIRE(leaves);
    size_t off = 0;
    int schemes_seen[3] = {0};
    for (size_t i = 0; i < n; i++) {
        xet_chunk_hash(data + off, lens[i], &leaves[i].hash);
        leaves[i].size = lens[i];
        CHECK(xet_xorb_add(x, data + off, lens[i], &leaves[i].hash) == 0);
        off += lens[i];
    }
    CHECK_INT(xet_xorb_count(x), n);
    CHECK_INT(xet_xorb_unpacked_bytes(x), total);
    struct xet_hash want, got;
    xet_xorb_hash_of(leaves, n, &want);
    xet_xorb_hash(x, &got);
    CHECK(xet_hash_equal(&want, &got));

    size_t len;
    const uint8_t *bytes = xet_xorb_bytes(x, &len);
    CHECK(len < total); /* the zeros and the float-like part compress */
    const struct xet_xorb_chunk *chunks = xet_xorb_chunks(x);
    uint8_t *out = malloc(XET_CHUNK_MAX);
    REQUIRE(out);
    size_t pos = 0;
    off = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK_INT(chunks[i].offset, pos);
        CHECK_INT(chunks[i].unpacked_offset, off);
        CHECK_INT(chunks[i].unpacked_len, lens[i]);
        schemes_seen[bytes[pos + 4] < 3 ? bytes[pos + 4] : 0]++;
        size_t out_len = 0;
        int rc = xet_xorb_next_chunk(bytes, len, &pos, out, XET_CHUNK_MAX, &out_len);
        CHECK_INT(rc, 0);
        CHECK_INT(out_len, lens[i]);
        CHECK(rc == 0 && memcmp(out, data + off, lens[i]) == 0);
        CHECK_INT(pos, chunks[i].offset + chunks[i].packed_len);
        off += lens[i];
    }
    size_t out_len;
    CHECK_INT(xet_xorb_next_chunk(bytes, len, &pos, out, XET_CHUNK_MAX, &out_len), 1);
    CHECK(schemes_seen[XET_COMPRESSION_NONE] > 0);
    CHECK(schemes_seen[XET_COMPRESSION_LZ4] > 0);
    CHECK(schemes_seen[XET_COMPRESSION_BG4_LZ4] > 0);

    /* Corruption is refused, not misread. */
    uint8_t *bad = malloc(len);
    REQUIRE(bad);
    memcpy(bad, bytes, len);
    pos = 0;
    CHECK_INT(xet_xorb_next_chunk(bad, len - 1 < 9 ? len : 9, &pos, out, XET_CHUNK_MAX, &out_len),
              -EBADMSG);
    size_t lz4_at = 0;
    for (size_t i = 0; i < n; i++) {
        if (bytes[chunks[i].offset + 4] == XET_COMPRESSION_LZ4) {
            lz4_at = chunks[i].offset;
            break;
        }
    }
    bad[lz4_at + 5] ^= 1; /* uncompressed length no longer matches the frame */
    pos = lz4_at;
    CHECK_INT(xet_xorb_next_chunk(bad, len, &pos, out, XET_CHUNK_MAX, &out_len), -EBADMSG);
    pos = 0;
    CHECK_INT(xet_xorb_next_chunk(bytes, len, &pos, out, 10, &out_len), -ENOBUFS);
    free(bad);

    /* A small cap: chunks that do not fit are refused, then fit the next xorb. */
    struct xet_xorb *small;
    REQUIRE(xet_xorb_new(&small, 1) == 0);
    uint8_t *rnd = data; /* the random third: stored as is */
    size_t added = 0;
    int full = 0;
    off = 0;
    for (size_t i = 0; i < n && off + lens[i] <= total / 3; i++) {
        int rc = xet_xorb_add(small, rnd + off, lens[i], &leaves[i].hash);
        if (rc == XET_XORB_FULL) {
            full++;
            size_t slen;
            xet_xorb_bytes(small, &slen);
            CHECK(slen + XET_CHUNK_HEADER_LEN + lens[i] > 2 * (XET_CHUNK_MAX + 8));
            xet_xorb_reset(small);
            rc = xet_xorb_add(small, rnd + off, lens[i], &leaves[i].hash);
        }
        CHECK_INT(rc, 0);
        added++;
        off += lens[i];
    }
    CHECK(added > 4 && full > 0);
    CHECK_INT(xet_xorb_add(small, rnd, 0, &leaves[0].hash), -EINVAL);
    CHECK_INT(xet_xorb_add(small, rnd, XET_CHUNK_MAX + 1, &leaves[0].hash), -EINVAL);
    xet_xorb_free(small);

    free(out);
    free(leaves);
    free(data);
    xet_xorb_free(x);
}

/* The spec's ByteGrouping4 layout, written plainly: byte i to group i % 4, groups in order,
 * the first (n % 4) groups one byte longer. */
static void plain_bg4_split(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t pos = 0;
    for (size_t k = 0; k < 4; k++) {
        for (size_t i = k; i < n; i += 4) {
            out[pos++] = in[i];
        }
    }
}

static size_t plain_lz4_unframe(const uint8_t *in, size_t in_len, uint8_t *out, size_t cap)
{
    LZ4F_dctx *d;
    REQUIRE(!LZ4F_isError(LZ4F_createDecompressionContext(&d, LZ4F_VERSION)));
    size_t dst = cap;
    size_t src = in_len;
    size_t rc = LZ4F_decompress(d, out, &dst, in, &src, NULL);
    CHECK(rc == 0 && src == in_len);
    LZ4F_freeDecompressionContext(d);
    return dst;
}

static void test_xorb_layout(void)
{
    /* Lengths around the vector loop's 64-byte steps and every remainder mod 4. */
    size_t sizes[] = {65536, 65537, 65538, 65539, 131072, 8195, 4097};
    uint8_t *data = malloc(XET_CHUNK_MAX);
    uint8_t *grouped = malloc(XET_CHUNK_MAX);
    uint8_t *out = malloc(XET_CHUNK_MAX);
    REQUIRE(data && grouped && out);
    struct xet_xorb *x;
    REQUIRE(xet_xorb_new(&x, 0) == 0);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = sizes[s];
        fill_floatlike(data, n);
        struct xet_hash h;
        xet_chunk_hash(data, n, &h);
        xet_xorb_reset(x);
        REQUIRE(xet_xorb_add(x, data, n, &h) == 0);
        size_t len;
        const uint8_t *bytes = xet_xorb_bytes(x, &len);
        CHECK_INT(bytes[4], XET_COMPRESSION_BG4_LZ4);
        CHECK_INT(bytes[5] | bytes[6] << 8 | bytes[7] << 16, n);
        /* The builder's stored bytes are an LZ4 frame of the plainly grouped chunk. */
        plain_bg4_split(data, n, grouped);
        size_t got = plain_lz4_unframe(bytes + 8, len - 8, out, XET_CHUNK_MAX);
        CHECK_INT(got, n);
        CHECK(memcmp(out, grouped, n) == 0);
        /* And the reader ungroups a frame made here. */
        uint8_t *xorb = malloc(8 + LZ4F_compressFrameBound(n, NULL));
        REQUIRE(xorb);
        size_t fl =
            LZ4F_compressFrame(xorb + 8, LZ4F_compressFrameBound(n, NULL), grouped, n, NULL);
        REQUIRE(!LZ4F_isError(fl));
        xorb[0] = 0;
        xorb[1] = (uint8_t)fl;
        xorb[2] = (uint8_t)(fl >> 8);
        xorb[3] = (uint8_t)(fl >> 16);
        xorb[4] = XET_COMPRESSION_BG4_LZ4;
        xorb[5] = (uint8_t)n;
        xorb[6] = (uint8_t)(n >> 8);
        xorb[7] = (uint8_t)(n >> 16);
        size_t pos = 0;
        size_t out_len = 0;
        CHECK_INT(xet_xorb_next_chunk(xorb, 8 + fl, &pos, out, XET_CHUNK_MAX, &out_len), 0);
        CHECK(out_len == n && memcmp(out, data, n) == 0);
        free(xorb);
    }

    /* Policies: LZ4_ONLY never groups, STORE never compresses. */
    xet_xorb_set_policy(x, XET_XORB_LZ4_ONLY);
    xet_xorb_reset(x);
    struct xet_hash h;
    xet_chunk_hash(data, 65536, &h);
    REQUIRE(xet_xorb_add(x, data, 65536, &h) == 0);
    size_t len;
    CHECK(xet_xorb_bytes(x, &len)[4] != XET_COMPRESSION_BG4_LZ4);
    xet_xorb_set_policy(x, XET_XORB_STORE);
    xet_xorb_reset(x);
    memset(data, 0, 65536);
    xet_chunk_hash(data, 65536, &h);
    REQUIRE(xet_xorb_add(x, data, 65536, &h) == 0);
    CHECK_INT(xet_xorb_bytes(x, &len)[4], XET_COMPRESSION_NONE);
    CHECK_INT(len, 8 + 65536);
    xet_xorb_free(x);
    free(data);
    free(grouped);
    free(out);
}

static void test_xorb_chunk_limit(void)
{
    struct xet_xorb *x;
    REQUIRE(xet_xorb_new(&x, 0) == 0);
    uint8_t byte = 7;
    struct xet_hash h;
    xet_chunk_hash(&byte, 1, &h);
    for (unsigned i = 0; i < XET_XORB_MAX_CHUNKS; i++) {
        REQUIRE(xet_xorb_add(x, &byte, 1, &h) == 0);
    }
    CHECK_INT(xet_xorb_add(x, &byte, 1, &h), XET_XORB_FULL);
    xet_xorb_reset(x);
    CHECK_INT(xet_xorb_count(x), 0);
    CHECK_INT(xet_xorb_add(x, &byte, 1, &h), 0);
    xet_xorb_free(x);
}

static void test_shard_round_trip(void)
{
    struct xet_shard_builder *b;
    REQUIRE(xet_shard_builder_new(&b) == 0);
    struct xet_xorb_chunk xa[3], xb[2];
    for (int i = 0; i < 3; i++) {
        fill_random(xa[i].hash.b, 32);
        xa[i].unpacked_len = 1000u + (unsigned)i;
        xa[i].unpacked_offset = (uint32_t)(i * 1000 + (i > 0 ? i - 1 : 0));
    }
    xa[2].unpacked_offset = 2001;
    for (int i = 0; i < 2; i++) {
        fill_random(xb[i].hash.b, 32);
        xb[i].unpacked_len = 70000;
        xb[i].unpacked_offset = (uint32_t)(i * 70000);
    }
    xb[0].hash = xa[2].hash; /* the same chunk stored in both xorbs */
    struct xet_hash ha, hb, f1, f2;
    fill_random(ha.b, 32);
    fill_random(hb.b, 32);
    fill_random(f1.b, 32);
    fill_random(f2.b, 32);
    CHECK_INT(xet_shard_add_xorb(b, &ha, xa, 3, 2500), 0);
    CHECK_INT(xet_shard_add_xorb(b, &hb, xb, 2, 140100), 0);
    CHECK_INT(xet_shard_add_xorb(b, &hb, xb, 0, 0), -EINVAL);

    struct xet_term terms[2] = {
        {.xorb = ha, .chunk_start = 1, .chunk_end = 3, .unpacked_bytes = 2003},
        {.xorb = hb, .chunk_start = 0, .chunk_end = 2, .unpacked_bytes = 140000},
    };
    struct xet_hash ta[2] = {xa[1].hash, xa[2].hash};
    xet_range_hash(ta, 2, &terms[0].range_hash);
    xet_range_hash(&xb[0].hash, 2, &terms[1].range_hash);
    uint8_t sha[32];
    for (int i = 0; i < 32; i++) {
        sha[i] = (uint8_t)(0xa0 + i);
    }
    CHECK_INT(xet_shard_add_file(b, &f1, terms, 2, sha, 142003), 0);
    CHECK_INT(xet_shard_add_file(b, &f1, terms, 2, sha, 142003), 0); /* once only */
    CHECK_INT(xet_shard_add_file(b, &f2, terms + 1, 1, NULL, 140000), 0);
    CHECK_INT(xet_shard_add_file(b, &f2, terms, 0, NULL, 5), -EINVAL);
    CHECK_INT(xet_shard_builder_files(b), 2);
    CHECK_INT(xet_shard_builder_xorbs(b), 2);

    uint8_t *bytes;
    size_t len;
    REQUIRE(xet_shard_serialize(b, 1700000000, &bytes, &len) == 0);
    CHECK_INT(len, xet_shard_builder_size(b));
    /* header 48, files (1+2*2+1)*48 + (1+1+1)*48 + bookend 48, xorbs (1+3)*48 + (1+2)*48 +
     * bookend 48, footer 200 */
    CHECK_INT(len, 48 + 9 * 48 + 48 + 7 * 48 + 48 + 200);
    /* The SHA-256 is stored so that its Xet hex form is the usual hex. */
    struct xet_hash stored_sha;
    memcpy(stored_sha.b, bytes + 48 + 5 * 48, 32);
    check_hash_hex(&stored_sha, "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf");

    struct xet_shard s;
    char err[200];
    REQUIRE(xet_shard_parse(bytes, len, &s, err, sizeof(err)) == 0);
    CHECK_INT(s.nfiles, 2);
    CHECK_INT(s.nterms, 3);
    CHECK_INT(s.nxorbs, 2);
    CHECK_INT(s.nchunks, 5);
    CHECK(!s.has_hmac_key);
    CHECK_INT(s.created, 1700000000);
    CHECK(xet_hash_equal(&s.files[0].hash, &f1));
    CHECK(s.files[0].has_sha256 && memcmp(s.files[0].sha256, sha, 32) == 0);
    CHECK(!s.files[1].has_sha256);
    CHECK_INT(s.files[1].first_term, 2);
    CHECK(xet_hash_equal(&s.terms[0].xorb, &ha));
    CHECK_INT(s.terms[0].chunk_start, 1);
    CHECK_INT(s.terms[0].chunk_end, 3);
    CHECK_INT(s.terms[0].unpacked_bytes, 2003);
    CHECK(xet_hash_equal(&s.terms[0].range_hash, &terms[0].range_hash));
    CHECK(xet_hash_equal(&s.terms[2].range_hash, &terms[1].range_hash));
    CHECK(xet_hash_equal(&s.xorbs[1].hash, &hb));
    CHECK_INT(s.xorbs[1].packed_bytes, 140100);
    CHECK_INT(s.xorbs[1].unpacked_bytes, 140000);
    CHECK_INT(s.xorbs[1].first_chunk, 3);
    CHECK_INT(s.chunks[2].unpacked_offset, 2001);
    /* The first chunk of each file is flagged for global dedup: f1 starts at xorb A chunk 1, f2
     * at xorb B chunk 0. */
    for (size_t i = 0; i < 5; i++) {
        CHECK_INT(s.chunks[i].flags, i == 1 || i == 3 ? 0x80000000u : 0);
    }
    CHECK_INT(s.chunks[2].unpacked_len, 1002);
    size_t xi;
    uint32_t ci;
    CHECK(xet_shard_find_chunk(&s, &xb[1].hash, &xi, &ci) && xi == 1 && ci == 1);
    /* xorb B's first chunk is also xorb A's last: found at its first place */
    CHECK(xet_shard_find_chunk(&s, &xa[2].hash, &xi, &ci) && xi == 0 && ci == 2);
    CHECK(xet_shard_find_chunk(&s, &xa[0].hash, &xi, &ci) && xi == 0 && ci == 0);
    CHECK(!xet_shard_find_chunk(&s, &ha, &xi, &ci));
    xet_shard_free(&s);

    /* A dedup answer's chunk hashes are HMAC'd with the footer's key. */
    uint8_t *keyed_shard = malloc(len);
    REQUIRE(keyed_shard);
    memcpy(keyed_shard, bytes, len);
    struct xet_hash key;
    fill_random(key.b, 32);
    size_t footer = len - 200;
    memcpy(keyed_shard + footer + 72, key.b, 32);
    size_t cas = footer - 48 - 7 * 48;
    size_t chunk_at[5] = {cas + 48, cas + 96, cas + 144, cas + 240, cas + 288};
    const struct xet_hash *plain[5] = {&xa[0].hash, &xa[1].hash, &xa[2].hash, &xb[0].hash,
                                       &xb[1].hash};
    for (int i = 0; i < 5; i++) {
        struct xet_hash mac;
        xet_hash_hmac(plain[i], &key, &mac);
        memcpy(keyed_shard + chunk_at[i], mac.b, 32);
    }
    REQUIRE(xet_shard_parse(keyed_shard, len, &s, err, sizeof(err)) == 0);
    CHECK(s.has_hmac_key);
    CHECK(xet_shard_find_chunk(&s, &xa[2].hash, &xi, &ci) && xi == 0 && ci == 2);
    CHECK(xet_shard_find_chunk(&s, &xb[1].hash, &xi, &ci) && xi == 1 && ci == 1);
    CHECK(xet_shard_find_chunk(&s, &xb[0].hash, &xi, &ci) && xi == 0 && ci == 2);
    xet_shard_free(&s);

    /* Garbage gets a sentence, not a crash. */
    CHECK_INT(xet_shard_parse(bytes, 100, &s, err, sizeof(err)), -EBADMSG);
    CHECK(strstr(err, "too short") != NULL);
    memcpy(keyed_shard, bytes, len);
    keyed_shard[0] = 'X';
    CHECK_INT(xet_shard_parse(keyed_shard, len, &s, err, sizeof(err)), -EBADMSG);
    CHECK(strstr(err, "tag") != NULL);
    memcpy(keyed_shard, bytes, len);
    keyed_shard[48 + 36] = 0xff; /* first file claims a huge term count */
    CHECK_INT(xet_shard_parse(keyed_shard, len, &s, err, sizeof(err)), -EBADMSG);
    CHECK(strstr(err, "past the end") != NULL);
    memcpy(keyed_shard, bytes, len);
    memset(keyed_shard + footer - 48, 0, 48); /* no CAS bookend */
    CHECK_INT(xet_shard_parse(keyed_shard, len, &s, err, sizeof(err)), -EBADMSG);
    /* Truncations at every length fail cleanly. */
    for (size_t cut = 0; cut < len; cut += 7) {
        CHECK(xet_shard_parse(bytes, cut, &s, NULL, 0) == -EBADMSG);
    }
    free(keyed_shard);
    free(bytes);

    /* An empty shard (a dedup answer with nothing) parses. */
    struct xet_shard_builder *e;
    REQUIRE(xet_shard_builder_new(&e) == 0);
    REQUIRE(xet_shard_serialize(e, 0, &bytes, &len) == 0);
    CHECK_INT(xet_shard_parse(bytes, len, &s, err, sizeof(err)), 0);
    CHECK(s.nfiles == 0 && s.nxorbs == 0 && !xet_shard_find_chunk(&s, &ha, &xi, &ci));
    xet_shard_free(&s);
    free(bytes);
    xet_shard_builder_free(e);
    xet_shard_builder_free(b);
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    REQUIRE(f);
    REQUIRE(fseek(f, 0, SEEK_END) == 0);
    long n = ftell(f);
    REQUIRE(n > 0 && fseek(f, 0, SEEK_SET) == 0);
    uint8_t *p = malloc((size_t)n);
    REQUIRE(p && fread(p, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

/* The fuzz seeds are written by tests/fuzz/make_seeds.py from the spec's layout in Python, an
 * implementation independent of this one: the parsers must read them as that script meant. */
static void test_python_written_seeds(void)
{
    const char *src = getenv("CKPT_SOURCE_DIR");
    if (!src) {
        fprintf(stderr, "test_xet: CKPT_SOURCE_DIR unset, seed check skipped\n");
        return;
    }
    char path[1024];
    size_t len;
    struct xet_shard s;
    char err[200];
    snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/fuzz_xet/shard-files-xorbs", src);
    uint8_t *p = read_all(path, &len);
    REQUIRE(xet_shard_parse(p + 1, len - 1, &s, err, sizeof(err)) == 0);
    CHECK_INT(s.nfiles, 2);
    CHECK_INT(s.nterms, 3);
    CHECK_INT(s.nxorbs, 2);
    CHECK_INT(s.nchunks, 3);
    CHECK(s.files[0].has_sha256 && !s.files[1].has_sha256);
    CHECK_INT(s.terms[2].chunk_start, 1);
    CHECK_INT(s.terms[2].chunk_end, 2);
    CHECK_INT(s.terms[2].unpacked_bytes, 70000);
    CHECK_INT(s.xorbs[0].unpacked_bytes, 71000);
    CHECK_INT(s.xorbs[0].packed_bytes, 40000);
    CHECK_INT(s.chunks[1].unpacked_offset, 1000);
    CHECK_INT(s.chunks[1].unpacked_len, 70000);
    size_t xi;
    uint32_t ci;
    CHECK(xet_shard_find_chunk(&s, &s.chunks[2].hash, &xi, &ci) && xi == 1 && ci == 0);
    xet_shard_free(&s);
    free(p);

    snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/fuzz_xet/xorb-three-schemes", src);
    p = read_all(path, &len);
    uint8_t *out = malloc(XET_CHUNK_MAX);
    REQUIRE(out);
    size_t pos = 0, out_len = 0;
    size_t want[3] = {94 * 32, 20000, 9001};
    for (int i = 0; i < 3; i++) {
        CHECK_INT(xet_xorb_next_chunk(p + 1, len - 1, &pos, out, XET_CHUNK_MAX, &out_len), 0);
        CHECK_INT(out_len, want[i]);
    }
    /* make_seeds.py's float-like bytes: (i * 7919) & 255 at i % 4 < 2, else 0x3c + i % 3 */
    for (size_t i = 0; i < 9001; i++) {
        uint8_t want_byte = i % 4 < 2 ? (uint8_t)((i * 7919) & 255) : (uint8_t)(0x3c + i % 3);
        if (out[i] != want_byte) {
            CHECK_INT(out[i], want_byte);
            break;
        }
    }
    CHECK_INT(xet_xorb_next_chunk(p + 1, len - 1, &pos, out, XET_CHUNK_MAX, &out_len), 1);
    free(out);
    free(p);
}

struct scan_check {
    const uint8_t *data;
    uint64_t next_offset;
    size_t calls;
    int stop_after;
};

static int on_chunk(void *ctx, const struct xet_file_chunk *c, const uint8_t *data)
{
    struct scan_check *sc = ctx;
    CHECK_INT(c->offset, sc->next_offset);
    CHECK(memcmp(data, sc->data + c->offset, c->len) == 0);
    struct xet_hash h;
    xet_chunk_hash(data, c->len, &h);
    CHECK(xet_hash_equal(&h, &c->hash));
    sc->next_offset += c->len;
    sc->calls++;
    return sc->stop_after && (int)sc->calls == sc->stop_after ? -ECANCELED : 0;
}

static void write_file(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    REQUIRE(len == 0 || fwrite(data, 1, len, f) == len);
    REQUIRE(fclose(f) == 0);
}

static void test_file_scan(void)
{
    char dir[512], path[600], link[600];
    test_mkdtemp(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/f", dir);
    snprintf(link, sizeof(link), "%s/l", dir);

    size_t len = 5u * 1024 * 1024 + 777;
    uint8_t *data = malloc(len);
    REQUIRE(data);
    fill_random(data, len);
    memset(data + 1024 * 1024, 0, 1024 * 1024); /* maximal chunks across read boundaries */
    write_file(path, data, len);

    struct xet_file_result r;
    struct scan_check sc = {.data = data};
    REQUIRE(xet_file_scan(path, on_chunk, &sc, &r) == 0);
    CHECK_INT(r.size, len);
    CHECK_INT(sc.next_offset, len);
    CHECK_INT(sc.calls, r.nchunks);
    uint64_t *lens = malloc(len / XET_CHUNK_MIN * sizeof(*lens) + 16);
    REQUIRE(lens);
    size_t n = xet_chunk_buffer(data, len, lens, len / XET_CHUNK_MIN + 2);
    CHECK_INT(r.nchunks, n);
    struct xet_merkle_node *leaves = calloc(n, sizeof(*leaves));
    REQUIRE(leaves);
    uint64_t off = 0;
    for (size_t i = 0; i < n && i < r.nchunks; i++) {
        CHECK_INT(r.chunks[i].offset, off);
        CHECK_INT(r.chunks[i].len, lens[i]);
        xet_chunk_hash(data + off, lens[i], &leaves[i].hash);
        leaves[i].size = lens[i];
        off += lens[i];
    }
    struct xet_hash fh;
    xet_file_hash_of(leaves, n, &fh);
    CHECK(xet_hash_equal(&fh, &r.file_hash));
    uint8_t sha[32];
    SHA256(data, len, sha);
    CHECK(memcmp(sha, r.sha256, 32) == 0);
    CHECK_INT(strlen(r.sha256_hex), 64);
    xet_file_result_free(&r);

    /* The callback can stop the scan. */
    struct scan_check stop = {.data = data, .stop_after = 3};
    CHECK_INT(xet_file_scan(path, on_chunk, &stop, &r), -ECANCELED);
    CHECK_INT(stop.calls, 3);
    CHECK(r.chunks == NULL && r.nchunks == 0);

    /* Empty file: no chunks, zero file hash, the SHA-256 of nothing. */
    write_file(path, data, 0);
    REQUIRE(xet_file_scan(path, NULL, NULL, &r) == 0);
    CHECK_INT(r.nchunks, 0);
    CHECK(xet_hash_is_zero(&r.file_hash));
    CHECK_STR(r.sha256_hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    xet_file_result_free(&r);

    REQUIRE(symlink(path, link) == 0);
    CHECK_INT(xet_file_scan(link, NULL, NULL, &r), -ELOOP);
    CHECK_INT(xet_file_scan(dir, NULL, NULL, &r), -EINVAL);
    snprintf(link, sizeof(link), "%s/missing", dir);
    CHECK_INT(xet_file_scan(link, NULL, NULL, &r), -ENOENT);

    free(leaves);
    free(lens);
    free(data);
    test_rm_rf(dir);
}

int main(void)
{
    test_hex_form();
    test_merkle_vectors();
    test_chunk_vectors();
    test_chunk_streaming_random();
    test_xorb_round_trip();
    test_xorb_layout();
    test_xorb_chunk_limit();
    test_shard_round_trip();
    test_file_scan();
    test_python_written_seeds();
    return check_report("test_xet");
}
