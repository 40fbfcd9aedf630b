/* xet_speed.c - throughput of the Xet format library on this machine, one core: chunking,
 * chunk hashing, xorb building (the predicted compression per chunk), plain LZ4 alone and, as
 * the yardstick of docs/limits.md, OpenSSL SHA-256, over random data, zeros and bf16-like data
 * (random mantissa bytes, few distinct sign/exponent bytes).
 *   xet_speed [MiB (default 256)] [reps (default 3)]
 * Prints the best of reps in MB/s of CPU time (the process's own), which stays meaningful on a
 * machine shared with other work; wall time is higher when the core is contended.
 */
#include "xet_chunk.h"
#include "xet_hash.h"
#include "xet_xorb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lz4.h>
#include <openssl/evp.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct data {
    uint8_t *p;
    size_t len;
    uint64_t *lens;
    size_t nchunks;
    struct xet_hash *hashes;
};

static void run_chunk(struct data *d)
{
    d->nchunks = xet_chunk_buffer(d->p, d->len, d->lens, d->len / XET_CHUNK_MIN + 2);
}

static void run_hash(struct data *d)
{
    size_t off = 0;
    for (size_t i = 0; i < d->nchunks; i++) {
        xet_chunk_hash(d->p + off, d->lens[i], &d->hashes[i]);
        off += d->lens[i];
    }
}

static struct xet_xorb *xorb;
static size_t stored_bytes;

static void run_xorb(struct data *d)
{
    size_t off = 0;
    stored_bytes = 0;
    xet_xorb_reset(xorb);
    for (size_t i = 0; i < d->nchunks; i++) {
        if (xet_xorb_add(xorb, d->p + off, d->lens[i], &d->hashes[i]) == XET_XORB_FULL) {
            size_t len;
            xet_xorb_bytes(xorb, &len);
            stored_bytes += len;
            xet_xorb_reset(xorb);
            xet_xorb_add(xorb, d->p + off, d->lens[i], &d->hashes[i]);
        }
        off += d->lens[i];
    }
    size_t len;
    xet_xorb_bytes(xorb, &len);
    stored_bytes += len;
}

static char *lz4_out;

static void run_lz4(struct data *d)
{
    size_t off = 0;
    for (size_t i = 0; i < d->nchunks; i++) {
        LZ4_compress_default((const char *)d->p + off, lz4_out, (int)d->lens[i],
                             LZ4_compressBound(XET_CHUNK_MAX));
        off += d->lens[i];
    }
}

static void run_sha256(struct data *d)
{
    unsigned char md[32];
    unsigned int mdlen;
    EVP_Digest(d->p, d->len, md, &mdlen, EVP_sha256(), NULL);
}

static double best_rate(struct data *d, void (*fn)(struct data *), int reps)
{
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        fn(d);
        double rate = (double)d->len / (now() - t0) / 1e6;
        if (rate > best) {
            best = rate;
        }
    }
    return best;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
    int reps = argc > 2 ? atoi(argv[2]) : 3;
    struct data d = {.len = mib * 1024 * 1024};
    d.p = malloc(d.len);
    d.lens = malloc((d.len / XET_CHUNK_MIN + 2) * sizeof(*d.lens));
    d.hashes = malloc((d.len / XET_CHUNK_MIN + 2) * sizeof(*d.hashes));
    lz4_out = malloc((size_t)LZ4_compressBound(XET_CHUNK_MAX));
    if (!d.p || !d.lens || !d.hashes || !lz4_out || xet_xorb_new(&xorb, 16u << 20) != 0) {
        fprintf(stderr, "xet_speed: out of memory\n");
        return 1;
    }
    printf("xet_speed: %zu MiB, best of %d, MB/s (10^6 bytes/s), one thread\n", mib, reps);
    printf("%-8s %7s %9s %9s %9s %9s %9s %9s\n", "data", "chunks", "chunk", "hash", "xorb",
           "lz4-only", "sha256", "stored%");
    static const char *const kinds[] = {"random", "zeros", "bf16"};
    for (int kind = 0; kind < 3; kind++) {
        uint64_t s = 0x853c49e6748fea9bu;
        for (size_t i = 0; i < d.len; i += 8) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            memcpy(d.p + i, &s, 8);
        }
        if (kind == 1) {
            memset(d.p, 0, d.len);
        } else if (kind == 2) {
            for (size_t i = 1; i < d.len; i += 2) {
                d.p[i] = (uint8_t)((d.p[i] & 0x80) | (0x3b + (d.p[i] & 3)));
            }
        }
        double chunk = best_rate(&d, run_chunk, reps);
        double hash = best_rate(&d, run_hash, reps);
        double xb = best_rate(&d, run_xorb, reps);
        double lz4 = best_rate(&d, run_lz4, reps);
        double sha = best_rate(&d, run_sha256, reps);
        printf("%-8s %7zu %9.0f %9.0f %9.0f %9.0f %9.0f %8.1f%%\n", kinds[kind], d.nchunks, chunk,
               hash, xb, lz4, sha, 100.0 * (double)stored_bytes / (double)d.len);
    }
    xet_xorb_free(xorb);
    free(d.p);
    free(d.lens);
    free(d.hashes);
    free(lz4_out);
    return 0;
}
