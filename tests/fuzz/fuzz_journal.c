/* fuzz_journal.c - journal.c's reader on arbitrary bytes: the input is written as <dir>/journal
 * and opened on a real loop. Whatever it holds, the open must finish, and the rewritten file
 * must read back clean (no corrupt record) into the same image. Seeds: corpus/fuzz_journal
 * (valid, torn and damaged journals written by make_seeds.py's framing).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "journal.h"
#include "log.h"

static char dir[256];
static int opened;

static void check(int cond)
{
    if (!cond)
        abort();
}

static void on_open(void *ctx, int status)
{
    (void)ctx;
    check(status == 0);
    opened = 1;
}

static struct journal *open_and_wait(uv_loop_t *loop)
{
    struct journal *j = NULL;

    opened = 0;
    check(journal_open(&j, loop, dir, on_open, NULL) == 0);
    while (!opened || journal_busy(j))
        uv_run(loop, UV_RUN_ONCE);
    return j;
}

static void count(struct journal *j, size_t *ckpts, size_t *files)
{
    *ckpts = *files = 0;
    for (struct journal_ckpt *c = journal_ckpts(j); c != NULL; c = c->next) {
        (*ckpts)++;
        *files += c->n_files;
        check(c->state <= JOURNAL_FAILED);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[300];
    uv_loop_t loop;
    size_t c1, f1, c2, f2;
    FILE *f;

    if (dir[0] == '\0') {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/ckpt-fuzz-journal-XXXXXX", base ? base : "/tmp");
        check(mkdtemp(dir) != NULL);
        log_set_level(LOG_ERROR);
    }
    snprintf(path, sizeof(path), "%s/journal", dir);
    check((f = fopen(path, "wbe")) != NULL);
    check(fwrite(data, 1, size, f) == size);
    fclose(f);
    check(uv_loop_init(&loop) == 0);
    struct journal *j = open_and_wait(&loop);
    count(j, &c1, &f1);
    journal_free(j);
    /* the open rewrote the file from the image: it must read back clean and the same */
    j = open_and_wait(&loop);
    check(journal_corrupt_records(j) == 0);
    count(j, &c2, &f2);
    check(c1 == c2 && f1 == f2);
    journal_free(j);
    check(uv_loop_close(&loop) == 0);
    unlink(path);
    return 0;
}
