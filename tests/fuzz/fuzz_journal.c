/* fuzz_journal.c - the journal reader (journal_load_bytes: record framing, CRCs, torn tails,
 * garbage skipping, then every record applied to the image) and the compaction that follows a
 * load. Checks that compacting is stable: the compacted file, read again, compacts to the same
 * image (same checkpoints and objects). Input: byte 0 bit 0 set = the rest is a journal file as
 * is; clear = the rest is record payloads, one a line, framed here with valid CRCs so the fuzzer
 * reaches apply() (bit 1: then also cut the last record short, a torn tail).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "journal.h"
#include "log.h"

static void check(int cond)
{
    if (!cond)
        abort();
}

/* The journal's record checksum (journal.c). */
static uint32_t record_crc(const unsigned char *p, size_t len)
{
    return (uint32_t)crc32(0L, p, (uInt)len);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR); /* corrupt records are expected here: no warning per run */
    return 0;
}

static void count(struct journal *j, size_t *ret_ckpts, size_t *ret_files)
{
    *ret_ckpts = *ret_files = 0;
    for (struct journal_ckpt *c = journal_ckpts(j); c != NULL; c = c->next) {
        (*ret_ckpts)++;
        *ret_files += c->n_files;
        check(c->name == NULL || strlen(c->name) < 1u << 20);
        for (size_t i = 0; i < c->n_files; i++)
            check(c->files[i].path != NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct journal *j1, *j2;
    char *snap1 = NULL, *snap2 = NULL;
    size_t len1 = 0, len2 = 0, c1, f1, c2, f2;
    unsigned char *file = NULL;
    size_t file_len = 0;

    if (size < 1)
        return 0;
    if (data[0] & 1) {
        file = malloc(size - 1 + 1);
        if (file == NULL)
            return 0;
        memcpy(file, data + 1, size - 1);
        file_len = size - 1;
    } else {
        /* Each line becomes a record: 12 header bytes + payload at most twice the input. */
        file = malloc(2 * size + 16);
        if (file == NULL)
            return 0;
        for (size_t off = 1; off < size;) {
            const uint8_t *nl = memchr(data + off, '\n', size - off);
            size_t n = nl != NULL ? (size_t)(nl - (data + off)) : size - off;
            if (n > 0) {
                put_u32(file + file_len, (uint32_t)n);
                put_u32(file + file_len + 4, record_crc(file + file_len, 4));
                put_u32(file + file_len + 8, record_crc(data + off, n));
                memcpy(file + file_len + 12, data + off, n);
                file_len += 12 + n;
            }
            off += n + 1;
        }
        if ((data[0] & 2) && file_len > 0)
            file_len--;
    }
    if (journal_load_bytes(&j1, file, file_len, &snap1, &len1) == 0) {
        count(j1, &c1, &f1);
        check(journal_load_bytes(&j2, snap1, len1, &snap2, &len2) == 0);
        check(journal_corrupt_records(j2) == 0); /* what we write, we read back whole */
        count(j2, &c2, &f2);
        check(c1 == c2 && f1 == f2);
        journal_free(j2);
        journal_free(j1);
    }
    free(snap1);
    free(snap2);
    free(file);
    return 0;
}
