/* test_pin.c - hard-link pins on real files: they survive the originals, keep order per id,
 * follow renames and replacements, fall back to copies across file systems, and release cleanly.
 * Requests are made and checked on the loop thread; the work runs in libuv's pool.
 */
#include "check.h"
#include "detect.h"
#include "err.h"
#include "pin.h"
#include "watch.h"

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

struct t {
    uv_loop_t loop;
    struct pin *pin;
    char root[1024];
    char results[64][300];
    int n_results;
    int phase;
    bool closed;
    char big[200000];
};

static void on_result(void *ctx, const struct pin_result *res)
{
    struct t *t = ctx;
    static const char *const ops[] = {"add", "rename", "remove", "copy"};
    if (t->n_results < 64)
        snprintf(t->results[t->n_results++], sizeof(t->results[0]), "%s %llu %s%s%s %d%s",
                 ops[res->op], (unsigned long long)res->id, res->from ? res->from : "",
                 res->from ? "->" : "", res->relpath, res->status,
                 res->copy_at_seal ? " copy" : "");
}

static void write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(write(fd, data, n) == (ssize_t)n);
    close(fd);
}

static bool same_content(const char *path, const void *data, size_t n)
{
    char *buf = malloc(n + 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, buf, n + 1) : -1;
    bool ok = got == (ssize_t)n && memcmp(buf, data, n) == 0;
    if (fd >= 0)
        close(fd);
    free(buf);
    return ok;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static const char *at(struct t *t, const char *rel)
{
    static char buf[2][PATH_MAX];
    static int k;
    k ^= 1;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", t->root, rel);
    return buf[k];
}

static const char *staged(struct t *t, uint64_t id, const char *rel)
{
    static char buf[2][PATH_MAX];
    static int k;
    k ^= 1;
    CHECK(pin_path(t->pin, id, rel, buf[k], sizeof(buf[k])) == 0);
    return buf[k];
}

static bool has_result(struct t *t, const char *want)
{
    for (int i = 0; i < t->n_results; i++) {
        if (strcmp(t->results[i], want) == 0)
            return true;
    }
    fprintf(stderr, "result not seen: '%s'\n", want);
    return false;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void on_closed(void *ctx)
{
    ((struct t *)ctx)->closed = true;
}

static void on_idle(void *ctx, int status);

static void on_done(void *ctx, int status)
{
    (void)ctx;
    CHECK(status == 0);
}

static void on_released(void *ctx, int status)
{
    struct t *t = ctx;
    CHECK(status == 0);
    CHECK(!exists(staged(t, 1, "y/x2.json")));
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/.ckptpush/pins/1", t->root);
    CHECK(!exists(dir));
    /* Other ids untouched. */
    CHECK(exists(staged(t, 2, "c.bin")) == false);
    t->phase = 99;
    pin_close(t->pin, on_closed, t);
}

static void on_idle(void *ctx, int status)
{
    struct t *t = ctx;
    struct stat a, b;

    CHECK(status == 0);
    switch (t->phase++) {
    case 0:
        CHECK(has_result(t, "add 1 model.safetensors 0"));
        CHECK(has_result(t, "add 1 sub/x.json 0"));
        CHECK(has_result(t, "add 1 missing.bin -2"));
        CHECK(stat(at(t, "checkpoint-1/model.safetensors"), &a) == 0);
        CHECK(stat(staged(t, 1, "model.safetensors"), &b) == 0);
        CHECK(a.st_ino == b.st_ino && b.st_nlink == 2);
        /* Rotation: the originals go away, the pinned bytes stay. */
        CHECK(unlink(at(t, "checkpoint-1/model.safetensors")) == 0);
        CHECK(unlink(at(t, "checkpoint-1/sub/x.json")) == 0);
        CHECK(rmdir(at(t, "checkpoint-1/sub")) == 0);
        CHECK(same_content(staged(t, 1, "model.safetensors"), t->big, sizeof(t->big)));
        CHECK(same_content(staged(t, 1, "sub/x.json"), "{}", 2));
        /* Renames follow; a file replaced by rename gets its new inode pinned. */
        CHECK(pin_rename(t->pin, 1, "sub/x.json", "y/x2.json") == 0);
        write_file(at(t, "checkpoint-1/a.bin"), "v1", 2);
        CHECK(pin_add(t->pin, 1, "checkpoint-1/a.bin", "a.bin") == 0);
        write_file(at(t, "checkpoint-1/.tmp"), "v2", 2);
        CHECK(rename(at(t, "checkpoint-1/.tmp"), at(t, "checkpoint-1/a.bin")) == 0);
        CHECK(pin_add(t->pin, 1, "checkpoint-1/a.bin", "a.bin") == 0);
        /* Strict order for one id: add, rename, rename, remove. */
        write_file(at(t, "checkpoint-2.bin"), "c2", 2);
        CHECK(pin_add(t->pin, 2, "checkpoint-2.bin", "a.bin") == 0);
        CHECK(pin_rename(t->pin, 2, "a.bin", "b.bin") == 0);
        CHECK(pin_rename(t->pin, 2, "b.bin", "c.bin") == 0);
        CHECK(pin_remove(t->pin, 2, "c.bin") == 0);
        CHECK(pin_when_idle(t->pin, 2, on_idle, t) == 0);
        CHECK(pin_when_idle(t->pin, 1, on_idle, t) == 0);
        break;
    case 1:
    case 2:
        if (t->phase == 2)
            break; /* wait for both ids */
        CHECK(exists(staged(t, 1, "y/x2.json")));
        CHECK(!exists(staged(t, 1, "sub/x.json")));
        CHECK(same_content(staged(t, 1, "y/x2.json"), "{}", 2));
        CHECK(same_content(staged(t, 1, "a.bin"), "v2", 2));
        CHECK(stat(at(t, "checkpoint-1/a.bin"), &a) == 0);
        CHECK(stat(staged(t, 1, "a.bin"), &b) == 0 && a.st_ino == b.st_ino);
        CHECK(!exists(staged(t, 2, "a.bin")) && !exists(staged(t, 2, "b.bin")) &&
              !exists(staged(t, 2, "c.bin")));
        {
            int k = -1;
            const char *order[] = {"add 2 a.bin 0", "rename 2 a.bin->b.bin 0",
                                   "rename 2 b.bin->c.bin 0", "remove 2 c.bin 0"};
            int found = 0;
            for (int i = 0; i < t->n_results; i++) {
                if (found < 4 && strcmp(t->results[i], order[found]) == 0) {
                    CHECK(i > k);
                    k = i;
                    found++;
                }
            }
            CHECK(found == 4);
        }
        CHECK(pin_release(t->pin, 1, on_released, t) == 0);
        break;
    }
}

/* Staging on another file system: links fail with EXDEV, the copy is taken at seal. */
static void test_copy_fallback(void)
{
    struct stat a, b;
    if (stat("/dev/shm", &a) != 0 || stat(getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", &b) != 0 ||
        a.st_dev == b.st_dev) {
        printf("test_pin: no second file system, copy fallback not tested\n");
        return;
    }
    static struct t t;
    char shm[] = "/dev/shm/ckpt-test-pin-XXXXXX";
    char link_path[PATH_MAX];
    CHECK(mkdtemp(shm) != NULL);
    snprintf(t.root, sizeof(t.root), "%s/ckpt-test-pin2-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    CHECK(mkdtemp(t.root) != NULL);
    snprintf(link_path, sizeof(link_path), "%s/.ckptpush", t.root);
    CHECK(symlink(shm, link_path) == 0);
    write_file(at(&t, "w.pt"), "weights", 7);
    CHECK(uv_loop_init(&t.loop) == 0);
    CHECK(pin_new(&t.pin, &t.loop, t.root, ".ckptpush", on_result, &t) == 0);
    CHECK(pin_add(t.pin, 7, "w.pt", "w.pt") == 0);
    CHECK(pin_when_idle(t.pin, 7, on_done, &t) == 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    CHECK(has_result(&t, "add 7 w.pt 0 copy"));
    CHECK(pin_copies_pending(t.pin, 7) == 1);
    CHECK(!exists(staged(&t, 7, "w.pt")));
    CHECK(pin_copy_pending(t.pin, 7, on_done, NULL) == 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    CHECK(has_result(&t, "copy 7 w.pt 0"));
    CHECK(same_content(staged(&t, 7, "w.pt"), "weights", 7));
    CHECK(pin_copies_pending(t.pin, 7) == 0);
    t.closed = false;
    pin_close(t.pin, on_closed, &t);
    CHECK(t.closed);
    CHECK(uv_loop_close(&t.loop) == 0);
    nftw(t.root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    nftw(shm, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* --- the whole "see a checkpoint" path: real files -> watch -> detect -> pin ------------------ */

struct pl {
    uv_loop_t loop;
    uv_timer_t deadline; /* detect's one timer */
    uv_timer_t script;
    struct watch *w;
    struct detect *d;
    struct pin *pin;
    char root[1024];
    int step;
    int sealed, dropped, idle_checked, closed;
    uint64_t ids[2];
    char rules[2][160];
};

static void pl_on_deadline(uv_timer_t *h);

static void pl_rearm(struct pl *pl)
{
    int64_t t = detect_next_deadline_ms(pl->d);
    if (t < 0) {
        uv_timer_stop(&pl->deadline);
        return;
    }
    int64_t now = (int64_t)uv_now(&pl->loop);
    uv_timer_start(&pl->deadline, pl_on_deadline, t > now ? (uint64_t)(t - now) : 1, 0);
}

static void pl_on_deadline(uv_timer_t *h)
{
    struct pl *pl = h->data;
    detect_tick(pl->d, (int64_t)uv_now(&pl->loop));
    pl_rearm(pl);
}

static void pl_on_event(void *ctx, const struct watch_event *ev)
{
    struct pl *pl = ctx;
    CHECK(ev->kind != WATCH_ERROR && ev->kind != WATCH_OVERFLOW);
    CHECK(detect_feed(pl->d, ev, (int64_t)uv_now(&pl->loop)) == 0);
    pl_rearm(pl);
}

static void pl_added(void *ctx, const struct detect_cand *c, const char *rel)
{
    struct pl *pl = ctx;
    char src[PATH_MAX];
    CHECK(detect_cand_source(c, rel, src, sizeof(src)) == 0);
    CHECK(pin_add(pl->pin, detect_cand_id(c), src, rel) == 0);
}

static void pl_renamed(void *ctx, const struct detect_cand *c, const char *from, const char *to)
{
    struct pl *pl = ctx;
    CHECK(pin_rename(pl->pin, detect_cand_id(c), from, to) == 0);
}

static void pl_removed(void *ctx, const struct detect_cand *c, const char *rel)
{
    struct pl *pl = ctx;
    CHECK(pin_remove(pl->pin, detect_cand_id(c), rel) == 0);
}

static void pl_dropped(void *ctx, const struct detect_cand *c, const char *why)
{
    struct pl *pl = ctx;
    fprintf(stderr, "dropped '%s': %s\n", detect_cand_name(c), why);
    pl->dropped++;
}

static void pl_pins_checked(void *ctx, int status);

static void pl_sealed(void *ctx, const struct detect_cand *c)
{
    struct pl *pl = ctx;
    int k = pl->sealed++;
    CHECK(k < 2);
    if (k >= 2)
        return;
    CHECK(strcmp(detect_cand_name(c), k == 0 ? "checkpoint-1" : "checkpoint-2") == 0);
    CHECK(detect_cand_n_files(c) == 3);
    CHECK(strcmp(detect_cand_file(c, 0), "config.json") == 0);
    CHECK(strcmp(detect_cand_file(c, 1), "model.safetensors") == 0);
    CHECK(strcmp(detect_cand_file(c, 2), "trainer_state.json") == 0);
    pl->ids[k] = detect_cand_id(c);
    snprintf(pl->rules[k], sizeof(pl->rules[k]), "%s", detect_cand_rule(c));
    CHECK(pin_when_idle(pl->pin, detect_cand_id(c), pl_pins_checked, pl) == 0);
}

static bool pl_staged_is(struct pl *pl, uint64_t id, const char *rel, const char *want)
{
    char p[PATH_MAX];
    CHECK(pin_path(pl->pin, id, rel, p, sizeof(p)) == 0);
    return same_content(p, want, strlen(want));
}

static void pl_released(void *ctx, int status)
{
    (void)ctx;
    CHECK(status == 0);
}

static void pl_pins_checked(void *ctx, int status)
{
    struct pl *pl = ctx;
    uint64_t id = pl->ids[pl->idle_checked++];
    CHECK(status == 0);
    /* Complete bytes although checkpoint-1 was deleted before its quiet period ended. */
    CHECK(pl_staged_is(pl, id, "config.json", "{\"a\": 1}"));
    CHECK(pl_staged_is(pl, id, "model.safetensors", "weights-part1weights-part2"));
    CHECK(pl_staged_is(pl, id, "trainer_state.json", "{\"global_step\": 1}"));
    CHECK(pin_release(pl->pin, id, pl_released, pl) == 0);
}

static void pl_write(struct pl *pl, const char *rel, const char *data)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", pl->root, rel);
    write_file(p, data, strlen(data));
}

static void pl_closed(void *ctx)
{
    ((struct pl *)ctx)->closed++;
}

static void pl_write_checkpoint(struct pl *pl, int n)
{
    char p[PATH_MAX], q[PATH_MAX], rel[64];
    snprintf(p, sizeof(p), "%s/checkpoint-%d", pl->root, n);
    CHECK(mkdir(p, 0755) == 0);
    snprintf(rel, sizeof(rel), "checkpoint-%d/config.json", n);
    pl_write(pl, rel, "{\"a\": 1}");
    /* safetensors: written under a hidden temporary name, renamed before it is closed. */
    snprintf(p, sizeof(p), "%s/checkpoint-%d/.tmpW", pl->root, n);
    snprintf(q, sizeof(q), "%s/checkpoint-%d/model.safetensors", pl->root, n);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, "weights-part1", 13) == 13);
    CHECK(rename(p, q) == 0);
    CHECK(write(fd, "weights-part2", 13) == 13);
    close(fd);
    snprintf(rel, sizeof(rel), "checkpoint-%d/trainer_state.json", n);
    pl_write(pl, rel, "{\"global_step\": 1}");
}

static void pl_script(uv_timer_t *h)
{
    struct pl *pl = h->data;
    char p[PATH_MAX];
    switch (pl->step++) {
    case 0:
        pl_write_checkpoint(pl, 1);
        break;
    case 1:
        /* Rotation, well inside the quiet period. */
        CHECK(pl->sealed == 0);
        snprintf(p, sizeof(p), "%s/checkpoint-1", pl->root);
        nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        pl_write_checkpoint(pl, 2);
        break;
    case 2:
        if (pl->idle_checked < 2 && pl->step < 40) {
            pl->step--;
            break; /* wait for checkpoint-2's quiet period and the pin checks */
        }
        CHECK(pl->sealed == 2 && pl->idle_checked == 2 && pl->dropped == 0);
        CHECK(strstr(pl->rules[0], "early") != NULL);
        CHECK(strcmp(pl->rules[1], "trainer_state.json closed, 300 ms quiet") == 0);
        watch_close(pl->w, pl_closed, pl);
        pin_close(pl->pin, pl_closed, pl);
        uv_close((uv_handle_t *)&pl->deadline, NULL);
        uv_close((uv_handle_t *)&pl->script, NULL);
        return;
    }
    uv_timer_start(&pl->script, pl_script, 100, 0);
}

static void test_pipeline(void)
{
    static struct pl pl;
    struct ckpt_err err;
    struct detect_config cfg = {.quiet_ms = 300};
    struct detect_callbacks cbs = {&pl,        pl_added, pl_renamed, pl_removed, pl_sealed,
                                   pl_dropped, NULL,     NULL,       NULL};
    const char *tmp = getenv("TMPDIR");

    snprintf(pl.root, sizeof(pl.root), "%s/ckpt-test-pipeline-XXXXXX", tmp ? tmp : "/tmp");
    CHECK(mkdtemp(pl.root) != NULL);
    CHECK(uv_loop_init(&pl.loop) == 0);
    CHECK(detect_new(&pl.d, &cfg, &cbs) == 0);
    CHECK(pin_new(&pl.pin, &pl.loop, pl.root, ".ckptpush", NULL, NULL) == 0);
    CHECK(watch_start(&pl.w, &pl.loop, pl.root, ".ckptpush", pl_on_event, &pl, &err) == 0);
    uv_timer_init(&pl.loop, &pl.deadline);
    uv_timer_init(&pl.loop, &pl.script);
    pl.deadline.data = &pl;
    pl.script.data = &pl;
    uv_timer_start(&pl.script, pl_script, 50, 0);
    uv_run(&pl.loop, UV_RUN_DEFAULT);
    CHECK(pl.closed == 2);
    CHECK(uv_loop_close(&pl.loop) == 0);
    /* Released: no staging tree left behind. */
    char p[PATH_MAX];
    struct stat st;
    snprintf(p, sizeof(p), "%s/.ckptpush/pins/1", pl.root);
    CHECK(lstat(p, &st) < 0);
    detect_free(pl.d);
    nftw(pl.root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    static struct t t;
    const char *tmp = getenv("TMPDIR");

    for (size_t i = 0; i < sizeof(t.big); i++)
        t.big[i] = (char)(i * 7 + 3);
    snprintf(t.root, sizeof(t.root), "%s/ckpt-test-pin-XXXXXX", tmp != NULL ? tmp : "/tmp");
    CHECK(mkdtemp(t.root) != NULL);
    CHECK(mkdir(at(&t, "checkpoint-1"), 0755) == 0);
    CHECK(mkdir(at(&t, "checkpoint-1/sub"), 0755) == 0);
    write_file(at(&t, "checkpoint-1/model.safetensors"), t.big, sizeof(t.big));
    write_file(at(&t, "checkpoint-1/sub/x.json"), "{}", 2);

    CHECK(uv_loop_init(&t.loop) == 0);
    CHECK(pin_new(&t.pin, &t.loop, t.root, ".ckptpush", on_result, &t) == 0);
    /* Paths from events are checked before anything is queued. */
    CHECK(pin_add(t.pin, 1, "../etc/passwd", "x") == -EINVAL);
    CHECK(pin_add(t.pin, 1, "/etc/passwd", "x") == -EINVAL);
    CHECK(pin_add(t.pin, 1, "a", "x/../../y") == -EINVAL);
    CHECK(pin_rename(t.pin, 1, "a", "/b") == -EINVAL);
    char p[PATH_MAX], want[PATH_MAX];
    CHECK(pin_path(t.pin, 42, "sub/f.bin", p, sizeof(p)) == 0);
    snprintf(want, sizeof(want), "%s/.ckptpush/pins/42/sub/f.bin", t.root);
    CHECK(strcmp(p, want) == 0);

    CHECK(pin_add(t.pin, 1, "checkpoint-1/model.safetensors", "model.safetensors") == 0);
    CHECK(pin_add(t.pin, 1, "checkpoint-1/sub/x.json", "sub/x.json") == 0);
    CHECK(pin_add(t.pin, 1, "checkpoint-1/missing.bin", "missing.bin") == 0);
    CHECK(pin_when_idle(t.pin, 1, on_idle, &t) == 0);
    CHECK(t.n_results == 0); /* nothing is reported before the loop runs */
    uv_run(&t.loop, UV_RUN_DEFAULT);
    CHECK(t.phase == 99);
    CHECK(t.closed);
    CHECK(uv_loop_close(&t.loop) == 0);
    nftw(t.root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);

    test_copy_fallback();
    test_pipeline();
    return check_report("test_pin");
}
