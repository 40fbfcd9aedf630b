/* xet_dump.c - prints what the Xet format library makes of files, as one JSON line per file:
 * size, SHA-256, chunks (offset, length, chunk hash), file hash, xorb hash of all the chunks and
 * the verification hash of all of them. tests/hub/test_xet_format.mjs compares these with the
 * official JS client's own chunker and hashes.
 *   xet_dump FILE...
 */
#include "xet_file.h"
#include "xet_hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int dump(const char *path)
{
    struct xet_file_result r;
    int rc = xet_file_scan(path, NULL, NULL, &r);
    if (rc != 0) {
        fprintf(stderr, "xet_dump: cannot scan '%s': %s\n", path, strerror(-rc));
        return 1;
    }
    struct xet_merkle_node *leaves = calloc(r.nchunks + 1, sizeof(*leaves));
    struct xet_hash *hashes = calloc(r.nchunks + 1, sizeof(*hashes));
    if (!leaves || !hashes) {
        fprintf(stderr, "xet_dump: out of memory\n");
        return 1;
    }
    char hex[XET_HASH_HEX_LEN + 1];
    printf("{\"size\": %llu, \"sha256\": \"%s\", \"chunks\": [", (unsigned long long)r.size,
           r.sha256_hex);
    for (size_t i = 0; i < r.nchunks; i++) {
        xet_hash_to_hex(&r.chunks[i].hash, hex);
        printf("%s[%llu, %u, \"%s\"]", i ? ", " : "", (unsigned long long)r.chunks[i].offset,
               r.chunks[i].len, hex);
        leaves[i].hash = r.chunks[i].hash;
        leaves[i].size = r.chunks[i].len;
        hashes[i] = r.chunks[i].hash;
    }
    xet_hash_to_hex(&r.file_hash, hex);
    printf("], \"file_hash\": \"%s\"", hex);
    struct xet_hash h;
    xet_xorb_hash_of(leaves, r.nchunks, &h);
    xet_hash_to_hex(&h, hex);
    printf(", \"xorb_hash\": \"%s\"", hex);
    xet_range_hash(hashes, r.nchunks, &h);
    xet_hash_to_hex(&h, hex);
    printf(", \"range_hash\": \"%s\"}\n", hex);
    free(leaves);
    free(hashes);
    xet_file_result_free(&r);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: xet_dump FILE...\n");
        return 2;
    }
    int failed = 0;
    for (int i = 1; i < argc; i++) {
        failed |= dump(argv[i]);
    }
    return failed;
}
