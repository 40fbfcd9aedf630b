/* test_watch.c - recursive inotify on a real temporary tree with a real loop.
 *
 * Each step changes the tree from a timer callback, then the next step checks the events the
 * watch reported meanwhile. The loop must close with no handle left. Loop thread only.
 */
#include "check.h"
#include "err.h"
#include "watch.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define MAX_EVENTS 40000

struct t {
    uv_loop_t loop;
    uv_timer_t timer;
    struct watch *w;
    char base[1024], root[1100], outside[1100];
    char **events;
    int n_events;
    int step;
    bool closed;
    int overflow_files;
    char lost_to[PATH_MAX]; /* old_path of the last WATCH_ROOT_LOST, "-" for none */
};

static void on_event(void *ctx, const struct watch_event *ev)
{
    struct t *t = ctx;
    char buf[PATH_MAX * 2 + 64];
    if (ev->kind == WATCH_RENAMED)
        snprintf(buf, sizeof(buf), "%s%s %s <- %s", watch_kind_name(ev->kind),
                 ev->is_dir ? "/d" : "", ev->path, ev->old_path);
    else
        snprintf(buf, sizeof(buf), "%s%s %s", watch_kind_name(ev->kind), ev->is_dir ? "/d" : "",
                 ev->path);
    if (ev->kind == WATCH_ERROR)
        fprintf(stderr, "watch error: %s\n", ev->message);
    if (ev->kind == WATCH_ROOT_LOST)
        snprintf(t->lost_to, sizeof(t->lost_to), "%s", ev->old_path ? ev->old_path : "-");
    if (t->n_events < MAX_EVENTS)
        t->events[t->n_events++] = strdup(buf);
}

static bool seen(const struct t *t, const char *want)
{
    for (int i = 0; i < t->n_events; i++) {
        if (strcmp(t->events[i], want) == 0)
            return true;
    }
    fprintf(stderr, "not seen: '%s'\n", want);
    return false;
}

static int count_prefix(const struct t *t, const char *prefix)
{
    int n = 0;
    for (int i = 0; i < t->n_events; i++)
        n += strncmp(t->events[i], prefix, strlen(prefix)) == 0;
    return n;
}

static bool none_contains(const struct t *t, const char *needle)
{
    for (int i = 0; i < t->n_events; i++) {
        if (strstr(t->events[i], needle) != NULL) {
            fprintf(stderr, "unexpected: '%s'\n", t->events[i]);
            return false;
        }
    }
    return true;
}

static void clear(struct t *t)
{
    for (int i = 0; i < t->n_events; i++)
        free(t->events[i]);
    t->n_events = 0;
}

static void write_file(const char *path, const char *data)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(write(fd, data, strlen(data)) == (ssize_t)strlen(data));
    close(fd);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void on_closed(void *ctx)
{
    struct t *t = ctx;
    t->closed = true;
}

static void step(uv_timer_t *h)
{
    struct t *t = h->data;
    const char *R = t->root, *O = t->outside;
    char a[PATH_MAX], b[PATH_MAX];

    switch (t->step++) {
    case 0:
        /* The startup scan reported what was there, the staging dir excepted. */
        CHECK(seen(t, "scanned/d pre"));
        CHECK(seen(t, "scanned pre/a.txt"));
        CHECK(seen(t, "scanned/d pre/sub"));
        CHECK(seen(t, "scanned pre/sub/b.bin"));
        CHECK(none_contains(t, ".ckptpush"));
        CHECK(watch_count(t->w) == 3);
        clear(t);
        /* mkdir -p and a file inside, faster than any watch can be added. */
        snprintf(a, sizeof(a), "%s/a", R);
        CHECK(mkdir(a, 0755) == 0);
        snprintf(a, sizeof(a), "%s/a/b", R);
        CHECK(mkdir(a, 0755) == 0);
        snprintf(a, sizeof(a), "%s/a/b/c", R);
        CHECK(mkdir(a, 0755) == 0);
        snprintf(a, sizeof(a), "%s/a/b/c/f.txt", R);
        write_file(a, "f");
        snprintf(a, sizeof(a), "%s/.ckptpush/pins/y", R);
        write_file(a, "skip");
        break;
    case 1:
        CHECK(seen(t, "create/d a"));
        CHECK(count_prefix(t, "scanned/d a/b") + count_prefix(t, "create/d a/b") >= 1);
        CHECK(count_prefix(t, "scanned/d a/b/c") + count_prefix(t, "create/d a/b/c") >= 1);
        CHECK(count_prefix(t, "scanned a/b/c/f.txt") + count_prefix(t, "close_write a/b/c/f.txt") >=
              1);
        CHECK(none_contains(t, ".ckptpush"));
        CHECK(watch_count(t->w) == 6);
        clear(t);
        snprintf(a, sizeof(a), "%s/a/b/c/g.txt", R);
        write_file(a, "g");
        break;
    case 2:
        CHECK(seen(t, "create a/b/c/g.txt"));
        CHECK(seen(t, "modify a/b/c/g.txt"));
        CHECK(seen(t, "close_write a/b/c/g.txt"));
        clear(t);
        snprintf(a, sizeof(a), "%s/a/b/c/g.txt", R);
        snprintf(b, sizeof(b), "%s/a/b/c/h.txt", R);
        CHECK(rename(a, b) == 0);
        snprintf(a, sizeof(a), "%s/a/b", R);
        snprintf(b, sizeof(b), "%s/a/B", R);
        CHECK(rename(a, b) == 0);
        break;
    case 3:
        CHECK(seen(t, "renamed a/b/c/h.txt <- a/b/c/g.txt"));
        CHECK(seen(t, "renamed/d a/B <- a/b"));
        CHECK(seen(t, "scanned/d a/B/c"));
        CHECK(seen(t, "scanned a/B/c/h.txt"));
        CHECK(count_prefix(t, "moved_") == 0);
        clear(t);
        /* The subtree's watches now report under the new name. */
        snprintf(a, sizeof(a), "%s/a/B/c/new.txt", R);
        write_file(a, "n");
        /* In from outside: a file and a directory with content. */
        snprintf(a, sizeof(a), "%s/in.pt", O);
        write_file(a, "weights");
        snprintf(b, sizeof(b), "%s/in.pt", R);
        CHECK(rename(a, b) == 0);
        snprintf(a, sizeof(a), "%s/d1", O);
        CHECK(mkdir(a, 0755) == 0);
        snprintf(a, sizeof(a), "%s/d1/x.bin", O);
        write_file(a, "x");
        snprintf(a, sizeof(a), "%s/d1", O);
        snprintf(b, sizeof(b), "%s/d1", R);
        CHECK(rename(a, b) == 0);
        /* Out: a file and a directory. */
        snprintf(a, sizeof(a), "%s/pre/a.txt", R);
        snprintf(b, sizeof(b), "%s/a.txt", O);
        CHECK(rename(a, b) == 0);
        snprintf(a, sizeof(a), "%s/pre/sub", R);
        snprintf(b, sizeof(b), "%s/sub", O);
        CHECK(rename(a, b) == 0);
        break;
    case 4:
        CHECK(seen(t, "create a/B/c/new.txt"));
        CHECK(seen(t, "close_write a/B/c/new.txt"));
        CHECK(none_contains(t, "a/b/"));
        CHECK(seen(t, "moved_in in.pt"));
        CHECK(seen(t, "moved_in/d d1"));
        CHECK(seen(t, "scanned d1/x.bin"));
        CHECK(seen(t, "moved_out pre/a.txt"));
        CHECK(seen(t, "moved_out/d pre/sub"));
        clear(t);
        /* Moved out: its old watch must be gone. */
        snprintf(a, sizeof(a), "%s/sub/z.txt", O);
        write_file(a, "z");
        snprintf(a, sizeof(a), "%s/d1/y.bin", R);
        write_file(a, "y");
        /* Deletes. */
        snprintf(a, sizeof(a), "%s/a/B/c/h.txt", R);
        CHECK(unlink(a) == 0);
        snprintf(a, sizeof(a), "%s/a/B", R);
        rm_rf(a);
        break;
    case 5:
        CHECK(none_contains(t, "z.txt"));
        CHECK(seen(t, "close_write d1/y.bin"));
        CHECK(seen(t, "delete a/B/c/h.txt"));
        CHECK(seen(t, "delete/d a/B/c"));
        CHECK(seen(t, "delete/d a/B"));
        CHECK(none_contains(t, ".ckptpush"));
        /* root, pre, a, d1 */
        CHECK(watch_count(t->w) == 4);
        clear(t);
        /* Overflow: more events than the kernel queue holds, before the loop reads any. */
        snprintf(a, sizeof(a), "%s/many", R);
        CHECK(mkdir(a, 0755) == 0);
        break;
    case 6:
        CHECK(seen(t, "create/d many"));
        clear(t);
        for (int i = 0; i < t->overflow_files; i++) {
            snprintf(a, sizeof(a), "%s/many/f%05d", R, i);
            write_file(a, "");
        }
        break;
    case 7: {
        CHECK(count_prefix(t, "overflow") >= 1);
        /* The rescan after the overflow reports every file again. */
        int scanned = count_prefix(t, "scanned many/f");
        if (scanned != t->overflow_files)
            fprintf(stderr, "scanned %d overflow %d\n", scanned, count_prefix(t, "overflow"));
        CHECK(scanned == t->overflow_files);
        CHECK(none_contains(t, ".ckptpush"));
        clear(t);
        watch_close(t->w, on_closed, t);
        uv_close((uv_handle_t *)&t->timer, NULL);
        return;
    }
    }
    /* The step's own file system work may take long: wait counting from now. */
    uv_update_time(&t->loop);
    uv_timer_start(&t->timer, step, t->step == 7 ? 500 : 150, 0);
}

/* A busy loop has not polled inotify for a while when the quiet-period timer fires: whatever the
 * kernel queued meanwhile must be reported by watch_read_now, before the caller judges the quiet
 * period, and in order (a directory made, filled and renamed with no loop iteration between). */
static void test_read_now(struct t *t)
{
    struct ckpt_err err;
    char p[PATH_MAX], q[PATH_MAX];

    clear(t);
    t->closed = false;
    CHECK(uv_loop_init(&t->loop) == 0);
    CHECK(watch_start(&t->w, &t->loop, t->root, ".ckptpush", on_event, t, &err) == 0);
    uv_run(&t->loop, UV_RUN_NOWAIT); /* the initial scan */
    clear(t);
    snprintf(p, sizeof(p), "%s/busy", t->root);
    CHECK(mkdir(p, 0755) == 0);
    snprintf(p, sizeof(p), "%s/busy/x.pt", t->root);
    write_file(p, "x");
    snprintf(p, sizeof(p), "%s/busy/s.tmp", t->root);
    CHECK(mkdir(p, 0755) == 0);
    snprintf(p, sizeof(p), "%s/busy/s.tmp/a.bin", t->root);
    write_file(p, "a");
    snprintf(p, sizeof(p), "%s/busy/s.tmp", t->root);
    snprintf(q, sizeof(q), "%s/busy/s", t->root);
    CHECK(rename(p, q) == 0);
    CHECK(t->n_events == 0);
    watch_read_now(t->w);
    /* busy/ was listed when its CREATE was read: everything in it so far is scanned. */
    CHECK(seen(t, "create/d busy"));
    CHECK(seen(t, "scanned busy/x.pt"));
    CHECK(seen(t, "scanned/d busy/s"));
    CHECK(seen(t, "scanned busy/s/a.bin"));
    CHECK(none_contains(t, "s.tmp/a.bin"));
    watch_close(t->w, on_closed, t);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    CHECK(t->closed);
    CHECK(uv_loop_close(&t->loop) == 0);
    clear(t);
}

static void run_scans(struct t *t)
{
    for (int i = 0; i < 8; i++)
        uv_run(&t->loop, UV_RUN_NOWAIT);
}

/* The root deleted (rm -rf, with a file under it held open, as the journal is: the root's own
 * IN_DELETE_SELF then never comes) or moved away, then made again: reported once each way,
 * nothing from the old tree afterwards, the new tree scanned. A FIFO made in the tree is
 * reported as complete (scanned), not as a file being written. */
static void test_root_lost(struct t *t)
{
    struct ckpt_err err;
    char root[1200], p[PATH_MAX], old[1200];
    int held;

    clear(t);
    t->closed = false;
    snprintf(root, sizeof(root), "%s/again", t->base);
    CHECK(mkdir(root, 0755) == 0);
    snprintf(p, sizeof(p), "%s/.ckptpush", root);
    CHECK(mkdir(p, 0755) == 0);
    snprintf(p, sizeof(p), "%s/.ckptpush/journal", root);
    write_file(p, "j");
    held = open(p, O_RDONLY | O_CLOEXEC);
    CHECK(held >= 0);
    CHECK(uv_loop_init(&t->loop) == 0);
    CHECK(watch_start(&t->w, &t->loop, root, ".ckptpush", on_event, t, &err) == 0);
    run_scans(t);
    clear(t);

    snprintf(p, sizeof(p), "%s/p", root);
    CHECK(mkfifo(p, 0644) == 0);
    watch_read_now(t->w);
    CHECK(seen(t, "scanned p"));
    CHECK(none_contains(t, "create p"));

    rm_rf(root);
    watch_read_now(t->w);
    CHECK(seen(t, "delete/d "));
    CHECK(seen(t, "root_lost/d "));
    CHECK(strcmp(t->lost_to, "-") == 0);
    CHECK(watch_root_missing(t->w));
    CHECK(watch_count(t->w) == 0);

    clear(t);
    CHECK(mkdir(root, 0755) == 0);
    snprintf(p, sizeof(p), "%s/new.bin", root);
    write_file(p, "n");
    watch_read_now(t->w);
    CHECK(seen(t, "root_back/d "));
    CHECK(!watch_root_missing(t->w));
    run_scans(t);
    CHECK(seen(t, "scanned new.bin"));

    clear(t);
    snprintf(old, sizeof(old), "%s/again.old", t->base);
    CHECK(rename(root, old) == 0);
    watch_read_now(t->w);
    CHECK(seen(t, "root_lost/d "));
    CHECK(count_prefix(t, "root_lost") == 1);
    CHECK(strcmp(t->lost_to, old) == 0);
    snprintf(p, sizeof(p), "%s/late.bin", old);
    write_file(p, "l");
    watch_read_now(t->w);
    CHECK(none_contains(t, "late.bin"));
    CHECK(mkdir(root, 0755) == 0);
    watch_read_now(t->w);
    CHECK(seen(t, "root_back/d "));

    close(held);
    watch_close(t->w, on_closed, t);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    CHECK(t->closed);
    CHECK(uv_loop_close(&t->loop) == 0);
    clear(t);
}

int main(void)
{
    static struct t t;
    struct ckpt_err err;
    char p[PATH_MAX];
    const char *tmp = getenv("TMPDIR");

    t.events = calloc(MAX_EVENTS, sizeof(*t.events));
    /* 3 events a file (create, modify-less close, ...) overflow the default 16384 queue. */
    t.overflow_files = 9000;
    snprintf(t.base, sizeof(t.base), "%s/ckpt-test-watch-XXXXXX", tmp != NULL ? tmp : "/tmp");
    CHECK(mkdtemp(t.base) != NULL);
    snprintf(t.root, sizeof(t.root), "%s/root", t.base);
    snprintf(t.outside, sizeof(t.outside), "%s/outside", t.base);
    CHECK(mkdir(t.root, 0755) == 0 && mkdir(t.outside, 0755) == 0);
    snprintf(p, sizeof(p), "%s/pre", t.root);
    CHECK(mkdir(p, 0755) == 0);
    snprintf(p, sizeof(p), "%s/pre/sub", t.root);
    CHECK(mkdir(p, 0755) == 0);
    snprintf(p, sizeof(p), "%s/pre/a.txt", t.root);
    write_file(p, "a");
    snprintf(p, sizeof(p), "%s/pre/sub/b.bin", t.root);
    write_file(p, "b");
    snprintf(p, sizeof(p), "%s/.ckptpush", t.root);
    CHECK(mkdir(p, 0755) == 0);
    snprintf(p, sizeof(p), "%s/.ckptpush/pins", t.root);
    CHECK(mkdir(p, 0755) == 0);
    snprintf(p, sizeof(p), "%s/.ckptpush/pins/x", t.root);
    write_file(p, "x");

    CHECK(uv_loop_init(&t.loop) == 0);
    /* A missing root fails at once with a sentence. */
    struct watch *bad = NULL;
    snprintf(p, sizeof(p), "%s/missing", t.base);
    CHECK(watch_start(&bad, &t.loop, p, ".ckptpush", on_event, &t, &err) == -ENOENT);
    CHECK(strstr(err.msg, "cannot watch") != NULL);

    CHECK(watch_start(&t.w, &t.loop, t.root, ".ckptpush", on_event, &t, &err) == 0);
    CHECK(t.n_events == 0); /* nothing reported before the loop runs */
    uv_timer_init(&t.loop, &t.timer);
    t.timer.data = &t;
    uv_timer_start(&t.timer, step, 150, 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    CHECK(t.step == 8);
    CHECK(t.closed);
    CHECK(uv_loop_close(&t.loop) == 0);
    clear(&t);
    test_read_now(&t);
    test_root_lost(&t);
    free(t.events);
    rm_rf(t.base);
    return check_report("test_watch");
}
