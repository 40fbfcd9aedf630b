/* xet_shard.c - the Xet shard builder (what an upload registers) and parser.
 *
 * Layout (all integers little-endian; hashes as their 32 stored bytes):
 *   header   32-byte tag, u64 version 2, u64 footer size
 *   files    per file: hash, u32 flags, u32 term count, u64 0; its terms (xorb hash, u32 xorb
 *            flags, u32 unpacked bytes, u32 first chunk, u32 end chunk); with the verification
 *            flag one (range hash, 16 zero bytes) per term; with the metadata flag (SHA-256,
 *            16 zero bytes); then a bookend (32 bytes 0xff, 16 zero bytes)
 *   xorbs    per xorb: hash, u32 flags, u32 chunk count, u32 unpacked bytes, u32 stored bytes;
 *            per chunk: hash, u32 unpacked offset, u32 unpacked length, u32 flags (bit 31: the
 *            first chunk of a file, for the global dedup table), u32 0; bookend
 *   footer   200 bytes: version 1, file info offset, CAS info offset, lookup table offsets and
 *            counts, the chunk hash HMAC key, creation time, key expiry, reserved, stored bytes
 *            on disk, materialized bytes, stored bytes, footer offset
 * Built shards carry no lookup tables and no HMAC key, as the official JS client sends them; the
 * parser walks the sections to their bookends and so reads shards with or without tables.
 */
#include "xet_shard.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHARD_HEADER_LEN 48
#define SHARD_FOOTER_LEN 200
#define SHARD_HEADER_VERSION 2
#define SHARD_FOOTER_VERSION 1
#define RECORD_LEN 48 /* every record of both sections is 48 bytes */
#define FILE_FLAG_VERIFICATION 0x80000000u
#define FILE_FLAG_METADATA_EXT 0x40000000u
#define CHUNK_FLAG_GLOBAL_DEDUP 0x80000000u

/* "HFRepoMetaData" then fixed bytes, from the spec. */
static const uint8_t shard_tag[32] = {'H', 'F', 'R', 'e', 'p', 'o', 'M', 'e', 't', 'a', 'D',
                                      'a', 't', 'a', 0,   85,  105, 103, 69,  106, 123, 129,
                                      87,  131, 165, 189, 217, 92,  205, 209, 74,  169};

struct growbuf {
    uint8_t *p;
    size_t len;
    size_t cap;
};

static uint8_t *grow(struct growbuf *g, size_t n)
{
    if (g->cap - g->len < n) {
        size_t cap = g->cap ? g->cap : 4096;
        while (cap - g->len < n) {
            cap *= 2;
        }
        uint8_t *p = realloc(g->p, cap);
        if (!p) {
            return NULL;
        }
        g->p = p;
        g->cap = cap;
    }
    uint8_t *at = g->p + g->len;
    memset(at, 0, n);
    g->len += n;
    return at;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* A SHA-256 digest is stored as the hash whose Xet hex form is the digest's usual hex: each
 * 8-byte group reversed. The same swap turns it back. */
static void swap_words(const uint8_t in[32], uint8_t out[32])
{
    for (int w = 0; w < 4; w++) {
        for (int i = 0; i < 8; i++) {
            out[w * 8 + i] = in[w * 8 + 7 - i];
        }
    }
}

/* Where a file's reconstruction starts: its first term's xorb and chunk. */
struct file_start {
    struct xet_hash xorb;
    uint32_t chunk;
};

struct xet_shard_builder {
    struct growbuf files;
    struct growbuf xorbs;
    struct xet_hash *file_hashes;
    struct file_start *file_starts; /* per file; chunk UINT32_MAX for an empty file */
    size_t nfiles;
    size_t file_hashes_cap;
    size_t nxorbs;
    uint64_t stored_on_disk;
    uint64_t materialized;
    uint64_t stored;
};

int xet_shard_builder_new(struct xet_shard_builder **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : -ENOMEM;
}

void xet_shard_builder_free(struct xet_shard_builder *b)
{
    if (!b) {
        return;
    }
    free(b->files.p);
    free(b->xorbs.p);
    free(b->file_hashes);
    free(b->file_starts);
    free(b);
}

int xet_shard_add_file(struct xet_shard_builder *b, const struct xet_hash *file_hash,
                       const struct xet_term *terms, size_t nterms, const uint8_t sha256[32],
                       uint64_t size)
{
    if ((nterms == 0) != (size == 0) || nterms > UINT32_MAX) {
        return -EINVAL;
    }
    for (size_t i = 0; i < b->nfiles; i++) {
        if (xet_hash_equal(&b->file_hashes[i], file_hash)) {
            return 0;
        }
    }
    if (b->nfiles == b->file_hashes_cap) {
        size_t cap = b->file_hashes_cap ? 2 * b->file_hashes_cap : 16;
        struct xet_hash *p = realloc(b->file_hashes, cap * sizeof(*p));
        if (!p) {
            return -ENOMEM;
        }
        b->file_hashes = p;
        struct file_start *q = realloc(b->file_starts, cap * sizeof(*q));
        if (!q) {
            return -ENOMEM;
        }
        b->file_starts = q;
        b->file_hashes_cap = cap;
    }
    size_t records = 1 + 2 * nterms + (sha256 ? 1 : 0);
    size_t mark = b->files.len;
    uint8_t *p = grow(&b->files, records * RECORD_LEN);
    if (!p) {
        return -ENOMEM;
    }
    uint32_t flags = FILE_FLAG_VERIFICATION | (sha256 ? FILE_FLAG_METADATA_EXT : 0);
    memcpy(p, file_hash->b, XET_HASH_LEN);
    put_u32(p + 32, flags);
    put_u32(p + 36, (uint32_t)nterms);
    p += RECORD_LEN;
    for (size_t i = 0; i < nterms; i++, p += RECORD_LEN) {
        const struct xet_term *t = &terms[i];
        if (t->chunk_end <= t->chunk_start) {
            b->files.len = mark;
            return -EINVAL;
        }
        memcpy(p, t->xorb.b, XET_HASH_LEN);
        put_u32(p + 32, 0);
        put_u32(p + 36, t->unpacked_bytes);
        put_u32(p + 40, t->chunk_start);
        put_u32(p + 44, t->chunk_end);
    }
    for (size_t i = 0; i < nterms; i++, p += RECORD_LEN) {
        memcpy(p, terms[i].range_hash.b, XET_HASH_LEN);
    }
    if (sha256) {
        swap_words(sha256, p);
    }
    b->file_starts[b->nfiles].xorb = nterms ? terms[0].xorb : *file_hash;
    b->file_starts[b->nfiles].chunk = nterms ? terms[0].chunk_start : UINT32_MAX;
    b->file_hashes[b->nfiles++] = *file_hash;
    b->materialized += size;
    return 0;
}

int xet_shard_add_xorb(struct xet_shard_builder *b, const struct xet_hash *xorb_hash,
                       const struct xet_xorb_chunk *chunks, size_t nchunks, uint64_t packed_bytes)
{
    if (nchunks == 0 || nchunks > UINT32_MAX || packed_bytes > UINT32_MAX) {
        return -EINVAL;
    }
    uint8_t *p = grow(&b->xorbs, (1 + nchunks) * RECORD_LEN);
    if (!p) {
        return -ENOMEM;
    }
    uint64_t unpacked = 0;
    for (size_t i = 0; i < nchunks; i++) {
        unpacked += chunks[i].unpacked_len;
    }
    memcpy(p, xorb_hash->b, XET_HASH_LEN);
    put_u32(p + 32, 0);
    put_u32(p + 36, (uint32_t)nchunks);
    put_u32(p + 40, (uint32_t)unpacked);
    put_u32(p + 44, (uint32_t)packed_bytes);
    p += RECORD_LEN;
    for (size_t i = 0; i < nchunks; i++, p += RECORD_LEN) {
        memcpy(p, chunks[i].hash.b, XET_HASH_LEN);
        put_u32(p + 32, chunks[i].unpacked_offset);
        put_u32(p + 36, chunks[i].unpacked_len);
    }
    b->nxorbs++;
    b->stored_on_disk += packed_bytes;
    b->stored += unpacked;
    return 0;
}

size_t xet_shard_builder_size(const struct xet_shard_builder *b)
{
    return SHARD_HEADER_LEN + b->files.len + RECORD_LEN + b->xorbs.len + RECORD_LEN +
           SHARD_FOOTER_LEN;
}

size_t xet_shard_builder_files(const struct xet_shard_builder *b)
{
    return b->nfiles;
}

size_t xet_shard_builder_xorbs(const struct xet_shard_builder *b)
{
    return b->nxorbs;
}

static void put_bookend(uint8_t *p)
{
    memset(p, 0xff, XET_HASH_LEN);
    memset(p + XET_HASH_LEN, 0, RECORD_LEN - XET_HASH_LEN);
}

/* Flags the first chunk of each file, where it lies in a xorb of this shard, for the CAS's
 * global dedup table (as the reference client does): another client asks about a file's first
 * chunk, so that is the chunk worth finding. */
static void mark_file_starts(const struct xet_shard_builder *b, uint8_t *cas)
{
    size_t off = 0;
    for (size_t x = 0; x < b->nxorbs; x++) {
        const uint8_t *header = cas + off;
        uint32_t nchunks = get_u32(header + 36);
        for (size_t f = 0; f < b->nfiles; f++) {
            const struct file_start *fs = &b->file_starts[f];
            if (fs->chunk < nchunks && memcmp(fs->xorb.b, header, XET_HASH_LEN) == 0) {
                put_u32(cas + off + RECORD_LEN * (1 + (size_t)fs->chunk) + 40,
                        CHUNK_FLAG_GLOBAL_DEDUP);
            }
        }
        off += RECORD_LEN * (1 + (size_t)nchunks);
    }
}

int xet_shard_serialize(const struct xet_shard_builder *b, uint64_t created, uint8_t **out,
                        size_t *len)
{
    size_t total = xet_shard_builder_size(b);
    uint8_t *s = calloc(1, total);
    if (!s) {
        return -ENOMEM;
    }
    uint8_t *p = s;
    memcpy(p, shard_tag, sizeof(shard_tag));
    put_u64(p + 32, SHARD_HEADER_VERSION);
    put_u64(p + 40, SHARD_FOOTER_LEN);
    p += SHARD_HEADER_LEN;

    size_t file_info_offset = (size_t)(p - s);
    if (b->files.len) {
        memcpy(p, b->files.p, b->files.len);
    }
    p += b->files.len;
    put_bookend(p);
    p += RECORD_LEN;

    size_t cas_info_offset = (size_t)(p - s);
    if (b->xorbs.len) {
        memcpy(p, b->xorbs.p, b->xorbs.len);
    }
    p += b->xorbs.len;
    put_bookend(p);
    p += RECORD_LEN;

    mark_file_starts(b, s + cas_info_offset);

    size_t footer_offset = (size_t)(p - s);
    put_u64(p, SHARD_FOOTER_VERSION);
    put_u64(p + 8, file_info_offset);
    put_u64(p + 16, cas_info_offset);
    /* 24..71: lookup table offsets and counts, none; 72..103: no HMAC key */
    put_u64(p + 104, created);
    /* 112: key expiry, none; 120..167 reserved */
    put_u64(p + 168, b->stored_on_disk);
    put_u64(p + 176, b->materialized);
    put_u64(p + 184, b->stored);
    put_u64(p + 192, footer_offset);

    *out = s;
    *len = total;
    return 0;
}

/* ---- parsing ---- */

struct xet_shard_index_entry {
    struct xet_hash hash;
    uint32_t xorb;
    uint32_t chunk;
};

static int bad(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(char *err, size_t err_len, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return -EBADMSG;
}

static bool is_bookend(const uint8_t *p)
{
    for (int i = 0; i < XET_HASH_LEN; i++) {
        if (p[i] != 0xff) {
            return false;
        }
    }
    return true;
}

/* Appends n zeroed elements of size sz to *arr (have of them, room for *cap); allocates even
 * for n == 0 so the result is never NULL on success. */
static void *grow_array(void **arr, size_t *cap, size_t have, size_t n, size_t sz)
{
    if (*cap - have < n || !*arr) {
        size_t c = *cap ? *cap : 16;
        while (c - have < n) {
            c *= 2;
        }
        void *p = realloc(*arr, c * sz);
        if (!p) {
            return NULL;
        }
        *arr = p;
        *cap = c;
    }
    uint8_t *at = (uint8_t *)*arr + have * sz;
    memset(at, 0, n * sz);
    return at;
}

static int cmp_index(const void *a, const void *b)
{
    return xet_hash_cmp(&((const struct xet_shard_index_entry *)a)->hash,
                        &((const struct xet_shard_index_entry *)b)->hash);
}

/* Equal hashes ordered by position, so a chunk stored twice is found at its first place. */
static int cmp_index_position(const void *a, const void *b)
{
    const struct xet_shard_index_entry *x = a;
    const struct xet_shard_index_entry *y = b;
    int c = xet_hash_cmp(&x->hash, &y->hash);
    if (c != 0) {
        return c;
    }
    if (x->xorb != y->xorb) {
        return x->xorb < y->xorb ? -1 : 1;
    }
    return x->chunk < y->chunk ? -1 : x->chunk > y->chunk;
}

static int parse_files(const uint8_t *data, size_t off, size_t end, struct xet_shard *s, char *err,
                       size_t err_len)
{
    size_t files_cap = 0;
    size_t terms_cap = 0;
    for (;;) {
        if (end - off < RECORD_LEN) {
            return bad(err, err_len, "shard file info section runs past its end at byte %zu", off);
        }
        const uint8_t *r = data + off;
        off += RECORD_LEN;
        if (is_bookend(r)) {
            return 0;
        }
        uint32_t flags = get_u32(r + 32);
        uint32_t nterms = get_u32(r + 36);
        size_t records = (size_t)nterms * ((flags & FILE_FLAG_VERIFICATION) ? 2 : 1) +
                         ((flags & FILE_FLAG_METADATA_EXT) ? 1 : 0);
        if (records > (end - off) / RECORD_LEN) {
            return bad(err, err_len, "shard file entry at byte %zu claims %u terms past the end",
                       off - RECORD_LEN, nterms);
        }
        struct xet_shard_file *f =
            grow_array((void **)&s->files, &files_cap, s->nfiles, 1, sizeof(*f));
        struct xet_term *t =
            grow_array((void **)&s->terms, &terms_cap, s->nterms, nterms, sizeof(*t));
        if (!f || !t) {
            return -ENOMEM;
        }
        memcpy(f->hash.b, r, XET_HASH_LEN);
        f->flags = flags;
        f->first_term = s->nterms;
        f->nterms = nterms;
        for (uint32_t i = 0; i < nterms; i++, off += RECORD_LEN) {
            const uint8_t *e = data + off;
            memcpy(t[i].xorb.b, e, XET_HASH_LEN);
            t[i].unpacked_bytes = get_u32(e + 36);
            t[i].chunk_start = get_u32(e + 40);
            t[i].chunk_end = get_u32(e + 44);
        }
        if (flags & FILE_FLAG_VERIFICATION) {
            for (uint32_t i = 0; i < nterms; i++, off += RECORD_LEN) {
                memcpy(t[i].range_hash.b, data + off, XET_HASH_LEN);
            }
        }
        if (flags & FILE_FLAG_METADATA_EXT) {
            f->has_sha256 = true;
            swap_words(data + off, f->sha256);
            off += RECORD_LEN;
        }
        s->nfiles++;
        s->nterms += nterms;
    }
}

static int parse_xorbs(const uint8_t *data, size_t off, size_t end, struct xet_shard *s, char *err,
                       size_t err_len)
{
    size_t xorbs_cap = 0;
    size_t chunks_cap = 0;
    for (;;) {
        if (end - off < RECORD_LEN) {
            return bad(err, err_len, "shard CAS info section runs past its end at byte %zu", off);
        }
        const uint8_t *r = data + off;
        off += RECORD_LEN;
        if (is_bookend(r)) {
            return 0;
        }
        uint32_t nchunks = get_u32(r + 36);
        if (nchunks > (end - off) / RECORD_LEN) {
            return bad(err, err_len, "shard xorb entry at byte %zu claims %u chunks past the end",
                       off - RECORD_LEN, nchunks);
        }
        struct xet_shard_xorb *x =
            grow_array((void **)&s->xorbs, &xorbs_cap, s->nxorbs, 1, sizeof(*x));
        struct xet_shard_chunk *c =
            grow_array((void **)&s->chunks, &chunks_cap, s->nchunks, nchunks, sizeof(*c));
        if (!x || !c) {
            return -ENOMEM;
        }
        memcpy(x->hash.b, r, XET_HASH_LEN);
        x->flags = get_u32(r + 32);
        x->unpacked_bytes = get_u32(r + 40);
        x->packed_bytes = get_u32(r + 44);
        x->first_chunk = s->nchunks;
        x->nchunks = nchunks;
        for (uint32_t i = 0; i < nchunks; i++, off += RECORD_LEN) {
            const uint8_t *e = data + off;
            memcpy(c[i].hash.b, e, XET_HASH_LEN);
            c[i].unpacked_offset = get_u32(e + 32);
            c[i].unpacked_len = get_u32(e + 36);
            c[i].flags = get_u32(e + 40);
        }
        s->nxorbs++;
        s->nchunks += nchunks;
    }
}

int xet_shard_parse(const uint8_t *data, size_t len, struct xet_shard *out, char *err,
                    size_t err_len)
{
    memset(out, 0, sizeof(*out));
    if (len < SHARD_HEADER_LEN + SHARD_FOOTER_LEN) {
        return bad(err, err_len, "shard too short (%zu bytes)", len);
    }
    if (memcmp(data, shard_tag, sizeof(shard_tag)) != 0) {
        return bad(err, err_len, "not a shard: wrong header tag");
    }
    uint64_t version = get_u64(data + 32);
    uint64_t footer_len = get_u64(data + 40);
    if (version != SHARD_HEADER_VERSION) {
        return bad(err, err_len, "shard header version %llu, expected %d",
                   (unsigned long long)version, SHARD_HEADER_VERSION);
    }
    if (footer_len < SHARD_FOOTER_LEN || footer_len > len - SHARD_HEADER_LEN) {
        return bad(err, err_len, "shard footer size %llu does not fit a %zu-byte shard",
                   (unsigned long long)footer_len, len);
    }
    size_t footer = len - (size_t)footer_len;
    const uint8_t *f = data + footer;
    if (get_u64(f) != SHARD_FOOTER_VERSION) {
        return bad(err, err_len, "shard footer version %llu, expected %d",
                   (unsigned long long)get_u64(f), SHARD_FOOTER_VERSION);
    }
    uint64_t file_off = get_u64(f + 8);
    uint64_t cas_off = get_u64(f + 16);
    if (file_off < SHARD_HEADER_LEN || file_off > cas_off || cas_off > footer) {
        return bad(err, err_len, "shard section offsets %llu, %llu out of order or past the footer",
                   (unsigned long long)file_off, (unsigned long long)cas_off);
    }
    memcpy(out->hmac_key.b, f + 72, XET_HASH_LEN);
    out->has_hmac_key = !xet_hash_is_zero(&out->hmac_key);
    out->created = get_u64(f + 104);
    out->key_expiry = get_u64(f + 112);

    int rc = parse_files(data, (size_t)file_off, (size_t)cas_off, out, err, err_len);
    if (rc == 0) {
        rc = parse_xorbs(data, (size_t)cas_off, footer, out, err, err_len);
    }
    if (rc == 0 && out->nchunks > 0) {
        out->index = malloc(out->nchunks * sizeof(*out->index));
        if (!out->index) {
            rc = -ENOMEM;
        } else {
            size_t k = 0;
            for (size_t x = 0; x < out->nxorbs; x++) {
                for (size_t c = 0; c < out->xorbs[x].nchunks; c++, k++) {
                    out->index[k].hash = out->chunks[out->xorbs[x].first_chunk + c].hash;
                    out->index[k].xorb = (uint32_t)x;
                    out->index[k].chunk = (uint32_t)c;
                }
            }
            qsort(out->index, out->nchunks, sizeof(*out->index), cmp_index_position);
        }
    }
    if (rc != 0) {
        xet_shard_free(out);
    }
    return rc;
}

void xet_shard_free(struct xet_shard *s)
{
    free(s->files);
    free(s->terms);
    free(s->xorbs);
    free(s->chunks);
    free(s->index);
    memset(s, 0, sizeof(*s));
}

bool xet_shard_find_chunk(const struct xet_shard *s, const struct xet_hash *chunk_hash,
                          size_t *xorb_index, uint32_t *chunk_index)
{
    struct xet_shard_index_entry key;
    if (s->nchunks == 0) {
        return false;
    }
    if (s->has_hmac_key) {
        xet_hash_hmac(chunk_hash, &s->hmac_key, &key.hash);
    } else {
        key.hash = *chunk_hash;
    }
    const struct xet_shard_index_entry *e =
        bsearch(&key, s->index, s->nchunks, sizeof(key), cmp_index);
    if (!e) {
        return false;
    }
    while (e > s->index && xet_hash_equal(&e[-1].hash, &key.hash)) {
        e--;
    }
    *xorb_index = e->xorb;
    *chunk_index = e->chunk;
    return true;
}
