/* fuzz_xet.c - the Xet parsers that read bytes from a server or the disk: xet_shard_parse (a
 * dedup query's answer, a stored shard) and xet_xorb_next_chunk (a xorb's chunks, LZ4 and
 * ByteGrouping4 included). Input: byte 0 even = the rest is a shard, odd = a xorb. Checks the
 * parsed shard's indices stay inside its arrays and that every chunk is found again by its
 * stored hash when the shard has no HMAC key; a xorb's chunks decode within their bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xet_chunk.h"
#include "xet_shard.h"
#include "xet_xorb.h"

static void check(int cond)
{
    if (!cond)
        abort();
}

static void fuzz_shard(const uint8_t *data, size_t size)
{
    struct xet_shard s;
    char err[256];
    if (xet_shard_parse(data, size, &s, err, sizeof(err)) != 0) {
        check(err[0] != '\0');
        return;
    }
    size_t terms = 0;
    for (size_t i = 0; i < s.nfiles; i++) {
        check(s.files[i].first_term == terms);
        terms += s.files[i].nterms;
    }
    check(terms == s.nterms);
    size_t chunks = 0;
    for (size_t i = 0; i < s.nxorbs; i++) {
        check(s.xorbs[i].first_chunk == chunks);
        chunks += s.xorbs[i].nchunks;
    }
    check(chunks == s.nchunks);
    if (!s.has_hmac_key) {
        for (size_t x = 0; x < s.nxorbs; x++) {
            for (size_t c = 0; c < s.xorbs[x].nchunks; c++) {
                size_t fx;
                uint32_t fc;
                const struct xet_hash *h = &s.chunks[s.xorbs[x].first_chunk + c].hash;
                check(xet_shard_find_chunk(&s, h, &fx, &fc));
                check(fx < s.nxorbs && fc < s.xorbs[fx].nchunks);
                check(xet_hash_equal(&s.chunks[s.xorbs[fx].first_chunk + fc].hash, h));
            }
        }
    }
    xet_shard_free(&s);
}

static void fuzz_xorb(const uint8_t *data, size_t size)
{
    static uint8_t out[XET_CHUNK_MAX];
    size_t pos = 0;
    for (;;) {
        size_t before = pos;
        size_t len = 0;
        int rc = xet_xorb_next_chunk(data, size, &pos, out, sizeof(out), &len);
        if (rc != 0) {
            check(pos == before);
            break;
        }
        check(pos > before && pos <= size && len <= XET_CHUNK_MAX);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 1)
        fuzz_xorb(data + 1, size - 1);
    else
        fuzz_shard(data + 1, size - 1);
    return 0;
}
