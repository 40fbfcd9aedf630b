/* xet_hash.c - keyed BLAKE3 hashes of the Xet format and its aggregated merkle tree.
 *
 * Keys and the node format are the spec's (huggingface.co/docs/xet/hashing); the published
 * reference vectors of xet-core are checked in tests/unit/test_xet.c.
 */
#include "xet_hash.h"

#include "blake3.h"

#include <errno.h>
#include <string.h>

static const uint8_t data_key[32] = {102, 151, 245, 119, 91,  149, 80,  222, 49,  53,  203,
                                     172, 165, 151, 24,  28,  157, 228, 33,  16,  155, 235,
                                     43,  88,  180, 208, 176, 75,  147, 173, 242, 41};
static const uint8_t internal_node_key[32] = {1,   126, 197, 199, 165, 71,  41,  150, 253, 148, 102,
                                              102, 180, 138, 2,   230, 93,  221, 83,  111, 55,  199,
                                              109, 210, 248, 99,  82,  230, 74,  83,  113, 63};
static const uint8_t verification_key[32] = {127, 24,  87,  214, 206, 86,  237, 102, 18,  127, 249,
                                             19,  231, 165, 195, 243, 164, 205, 38,  213, 181, 219,
                                             73,  230, 65,  36,  152, 127, 40,  251, 148, 195};

_Static_assert(sizeof(struct xet_hash) == XET_HASH_LEN, "hash arrays are hashed as bytes");

static void keyed(const uint8_t key[32], const void *data, size_t len, struct xet_hash *out)
{
    blake3_hasher h;
    blake3_hasher_init_keyed(&h, key);
    blake3_hasher_update(&h, data, len);
    blake3_hasher_finalize(&h, out->b, XET_HASH_LEN);
}

void xet_chunk_hash(const void *data, size_t len, struct xet_hash *out)
{
    keyed(data_key, data, len, out);
}

static const char hex_digits[] = "0123456789abcdef";

/* Each 8-byte group is a little-endian u64 printed most significant digit first. */
static void hex_of(const struct xet_hash *h, char *out)
{
    for (int word = 0; word < 4; word++) {
        for (int i = 7; i >= 0; i--) {
            uint8_t byte = h->b[word * 8 + i];
            *out++ = hex_digits[byte >> 4];
            *out++ = hex_digits[byte & 15];
        }
    }
}

void xet_hash_to_hex(const struct xet_hash *h, char out[XET_HASH_HEX_LEN + 1])
{
    hex_of(h, out);
    out[XET_HASH_HEX_LEN] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int xet_hash_from_hex(const char *hex, struct xet_hash *out)
{
    struct xet_hash h;
    for (int word = 0; word < 4; word++) {
        for (int i = 7; i >= 0; i--) {
            int hi = hex_value(hex[0]);
            int lo = hi < 0 ? -1 : hex_value(hex[1]);
            if (lo < 0) {
                return -EINVAL;
            }
            h.b[word * 8 + i] = (uint8_t)(hi << 4 | lo);
            hex += 2;
        }
    }
    if (*hex != '\0') {
        return -EINVAL;
    }
    *out = h;
    return 0;
}

bool xet_hash_equal(const struct xet_hash *a, const struct xet_hash *b)
{
    return memcmp(a->b, b->b, XET_HASH_LEN) == 0;
}

bool xet_hash_is_zero(const struct xet_hash *h)
{
    static const struct xet_hash zero;
    return xet_hash_equal(h, &zero);
}

int xet_hash_cmp(const struct xet_hash *a, const struct xet_hash *b)
{
    return memcmp(a->b, b->b, XET_HASH_LEN);
}

void xet_hash_hmac(const struct xet_hash *h, const struct xet_hash *key, struct xet_hash *out)
{
    keyed(key->b, h->b, XET_HASH_LEN, out);
}

void xet_range_hash(const struct xet_hash *chunk_hashes, size_t n, struct xet_hash *out)
{
    keyed(verification_key, chunk_hashes, n * XET_HASH_LEN, out);
}

/* ---- the aggregated merkle tree ---- */

/* "<64 hex digits> : <decimal size>\n" */
#define NODE_LINE_MAX (XET_HASH_HEX_LEN + 3 + 20 + 1)

static void merge_nodes(const struct xet_merkle_node *nodes, size_t n, struct xet_merkle_node *out)
{
    char buf[XET_MERKLE_GROUP_MAX * NODE_LINE_MAX];
    size_t pos = 0;
    uint64_t total = 0;

    for (size_t i = 0; i < n; i++) {
        hex_of(&nodes[i].hash, buf + pos);
        pos += XET_HASH_HEX_LEN;
        memcpy(buf + pos, " : ", 3);
        pos += 3;
        char digits[20];
        int nd = 0;
        uint64_t v = nodes[i].size;
        do {
            digits[nd++] = (char)('0' + v % 10);
            v /= 10;
        } while (v > 0);
        while (nd > 0) {
            buf[pos++] = digits[--nd];
        }
        buf[pos++] = '\n';
        total += nodes[i].size;
    }
    keyed(internal_node_key, buf, pos, &out->hash);
    out->size = total;
}

/* How many of nodes form the next parent: at least 2, at most 9, closing after the first node
 * from the third on whose last little-endian word is 0 mod 4 (the spec's mean branching
 * factor of 4). Decided by the first 9 nodes at most. */
static size_t next_group(const struct xet_merkle_node *nodes, size_t n)
{
    if (n <= 2) {
        return n;
    }
    size_t end = n < XET_MERKLE_GROUP_MAX ? n : XET_MERKLE_GROUP_MAX;
    for (size_t i = 2; i < end; i++) {
        if ((nodes[i].hash.b[24] & 3) == 0) {
            return i + 1;
        }
    }
    return end;
}

void xet_merkle_init(struct xet_merkle *m)
{
    memset(m->npending, 0, sizeof(m->npending));
    memset(m->nodes_seen, 0, sizeof(m->nodes_seen));
    m->leaves = 0;
}

static void merge_front(struct xet_merkle *m, int level, size_t count);

static void push_node(struct xet_merkle *m, int level, const struct xet_merkle_node *node)
{
    m->pending[level][m->npending[level]++] = *node;
    m->nodes_seen[level]++;
    /* With a full group's worth pending, the next group no longer depends on later nodes. */
    if (m->npending[level] == XET_MERKLE_GROUP_MAX) {
        merge_front(m, level, next_group(m->pending[level], XET_MERKLE_GROUP_MAX));
    }
}

static void merge_front(struct xet_merkle *m, int level, size_t count)
{
    struct xet_merkle_node parent;
    merge_nodes(m->pending[level], count, &parent);
    m->npending[level] = (uint8_t)(m->npending[level] - count);
    memmove(m->pending[level], m->pending[level] + count,
            m->npending[level] * sizeof(struct xet_merkle_node));
    /* 48 levels hold 2^47 leaves at least: every level halves the count or better. */
    if (level + 1 < XET_MERKLE_LEVELS) {
        push_node(m, level + 1, &parent);
    }
}

void xet_merkle_add(struct xet_merkle *m, const struct xet_hash *hash, uint64_t size)
{
    struct xet_merkle_node leaf = {.hash = *hash, .size = size};
    m->leaves++;
    push_node(m, 0, &leaf);
}

void xet_merkle_root(struct xet_merkle *m, struct xet_hash *out)
{
    memset(out, 0, sizeof(*out));
    if (m->leaves == 0) {
        return;
    }
    for (int level = 0; level < XET_MERKLE_LEVELS; level++) {
        bool above = level + 1 < XET_MERKLE_LEVELS && m->nodes_seen[level + 1] > 0;
        if (m->nodes_seen[level] == 1 && !above) {
            *out = m->pending[level][0].hash;
            break;
        }
        while (m->npending[level] > 0) {
            merge_front(m, level, next_group(m->pending[level], m->npending[level]));
        }
    }
    xet_merkle_init(m);
}

void xet_merkle_file_hash(struct xet_merkle *m, struct xet_hash *out)
{
    bool empty = m->leaves == 0;
    struct xet_hash root;
    static const struct xet_hash zero_key;

    xet_merkle_root(m, &root);
    if (empty) {
        memset(out, 0, sizeof(*out));
        return;
    }
    xet_hash_hmac(&root, &zero_key, out);
}

void xet_xorb_hash_of(const struct xet_merkle_node *leaves, size_t n, struct xet_hash *out)
{
    struct xet_merkle m;
    xet_merkle_init(&m);
    for (size_t i = 0; i < n; i++) {
        xet_merkle_add(&m, &leaves[i].hash, leaves[i].size);
    }
    xet_merkle_root(&m, out);
}

void xet_file_hash_of(const struct xet_merkle_node *leaves, size_t n, struct xet_hash *out)
{
    struct xet_merkle m;
    xet_merkle_init(&m);
    for (size_t i = 0; i < n; i++) {
        xet_merkle_add(&m, &leaves[i].hash, leaves[i].size);
    }
    xet_merkle_file_hash(&m, out);
}
