/* test_admit.c - the check between a checkpoint's seal and its push, on a real tree with a real
 * loop: names the Hub refuses, writer temporaries, and a folder holding a FIFO, symlinks (to a
 * file inside, to a file outside, to a directory), a hidden file and a temporary. The FIFO is
 * never opened (the check would block on it). The loop must close with no handle left.
 */
#include "admit.h"
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

struct got {
    int calls;
    int status;
    char push[512], skipped[512], refused[512];
};

static void join_list(char *dst, size_t size, const struct admit_file *v, size_t n)
{
    dst[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(dst);
        snprintf(dst + len, size - len, "%s%s%s%s", len ? " " : "", v[i].path,
                 v[i].reason ? ":" : "", v[i].reason ? v[i].reason : "");
    }
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const struct admit_file *)a)->path, ((const struct admit_file *)b)->path);
}

static void on_done(void *ctx, int status, const struct admit_result *res)
{
    struct got *g = ctx;

    g->calls++;
    g->status = status;
    /* The listing's order is the directory's: sort for the comparison. */
    if (res->n_skipped > 0)
        qsort(res->skipped, res->n_skipped, sizeof(*res->skipped), cmp_file);
    if (res->n_refused > 0)
        qsort(res->refused, res->n_refused, sizeof(*res->refused), cmp_file);
    join_list(g->push, sizeof(g->push), res->push, res->n_push);
    join_list(g->skipped, sizeof(g->skipped), res->skipped, res->n_skipped);
    join_list(g->refused, sizeof(g->refused), res->refused, res->n_refused);
}

static void write_file(const char *dir, const char *name)
{
    char p[PATH_MAX];
    int fd;

    snprintf(p, sizeof(p), "%s/%s", dir, name);
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, "x", 1) == 1);
        close(fd);
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void test_names(void)
{
    bool refuse;

    CHECK(admit_bad_name("model.safetensors") == NULL);
    CHECK(admit_bad_name("sub/dir/caf\xc3\xa9.json") == NULL);
    CHECK(admit_bad_name("a\nb") != NULL);
    CHECK(admit_bad_name("a\x01"
                         "b") != NULL);
    CHECK(admit_bad_name("a\x7f") != NULL);
    CHECK(admit_bad_name("a\\b") != NULL);
    CHECK(admit_bad_name("\xff") != NULL);
    CHECK(admit_bad_name("\xc0\xaf") != NULL);     /* overlong '/' */
    CHECK(admit_bad_name("\xed\xa0\x80") != NULL); /* a surrogate */
    CHECK(admit_bad_name("\xe2\x82") != NULL);     /* cut short */

    CHECK(admit_writer_temporary(".tmpab12cd"));
    CHECK(admit_writer_temporary(".metadata.tmp"));
    CHECK(admit_writer_temporary(".nfs000000001"));
    CHECK(!admit_writer_temporary(".notes"));
    CHECK(!admit_writer_temporary("x.tmp")); /* not hidden: not a temporary of ours to hide */

    CHECK(admit_classify("a.bin", S_IFREG, false, &refuse) == NULL && !refuse);
    CHECK(strcmp(admit_classify("a.bin", S_IFLNK, false, &refuse), "symlink") == 0 && !refuse);
    CHECK(strcmp(admit_classify("a", S_IFLNK, true, &refuse), "symlink-dir") == 0 && !refuse);
    CHECK(strcmp(admit_classify("a", S_IFIFO, false, &refuse), "fifo") == 0 && refuse);
    CHECK(strcmp(admit_classify("a", S_IFSOCK, false, &refuse), "socket") == 0 && refuse);
    CHECK(strcmp(admit_classify("a", S_IFCHR, false, &refuse), "device") == 0 && refuse);
    CHECK(strcmp(admit_classify("a\n", S_IFREG, false, &refuse), "bad-name") == 0 && !refuse);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    char base[PATH_MAX], ck[PATH_MAX + 32], outside[PATH_MAX + 32], p[PATH_MAX * 2];
    const char *members[] = {"config.json", "model.safetensors", "pytorch_model.bin",
                             "bad\nname.json", "gone.bin"};
    uv_loop_t loop;
    struct got g = {0};

    test_names();
    snprintf(base, sizeof(base), "%s/ckpt-test-admit-XXXXXX", tmp != NULL ? tmp : "/tmp");
    CHECK(mkdtemp(base) != NULL);
    snprintf(ck, sizeof(ck), "%s/checkpoint-5", base);
    snprintf(outside, sizeof(outside), "%s/outside.bin", base);
    CHECK(mkdir(ck, 0755) == 0);
    write_file(base, "outside.bin");
    write_file(ck, "config.json");
    write_file(ck, "bad\nname.json");
    write_file(ck, ".notes");
    write_file(ck, ".tmpab12cd");
    snprintf(p, sizeof(p), "%s/model.safetensors", ck);
    CHECK(mkfifo(p, 0644) == 0);
    snprintf(p, sizeof(p), "%s/pytorch_model.bin", ck);
    CHECK(symlink("config.json", p) == 0);
    snprintf(p, sizeof(p), "%s/outside.bin", ck);
    CHECK(symlink(outside, p) == 0);
    snprintf(p, sizeof(p), "%s/up", ck);
    CHECK(symlink("..", p) == 0);
    snprintf(p, sizeof(p), "%s/sub", ck);
    CHECK(mkdir(p, 0755) == 0);
    write_file(ck, "sub/late.bin"); /* regular, not a member: the detector's late write */

    CHECK(uv_loop_init(&loop) == 0);
    CHECK(admit_check(&loop, ck, members, 5, true, on_done, &g) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(g.calls == 1 && g.status == 0);
    /* A member already gone is left to the queue (its pin is the truth); a link to a file of
     * the same folder is pushed (its pin holds the target's bytes), one leaving it is not. */
    CHECK(strcmp(g.push, "config.json pytorch_model.bin gone.bin") == 0);
    if (strcmp(g.push, "config.json pytorch_model.bin gone.bin") != 0)
        fprintf(stderr, "push: %s\n", g.push);
    CHECK(strcmp(g.refused, "model.safetensors:fifo") == 0);
    CHECK(strcmp(g.skipped,
                 ".notes:hidden bad\nname.json:bad-name outside.bin:symlink up:symlink-dir") == 0);
    if (strcmp(g.skipped,
               ".notes:hidden bad\nname.json:bad-name outside.bin:symlink up:symlink-dir") != 0)
        fprintf(stderr, "skipped: %s\n", g.skipped);

    /* The output root's files: only the members are looked at, nothing else is listed. */
    g = (struct got){0};
    CHECK(admit_check(&loop, ck, members, 2, false, on_done, &g) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(g.calls == 1 && strcmp(g.push, "config.json") == 0 && g.skipped[0] == '\0');
    CHECK(strcmp(g.refused, "model.safetensors:fifo") == 0);

    CHECK(uv_loop_close(&loop) == 0);
    nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_report("test_admit");
}
