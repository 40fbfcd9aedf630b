/* fuzz_watch.c - the inotify event decoder and what watch.c does with each record (the wd map,
 * renames paired by cookie across two reads, moved-out directories, overflow), on a real watch of
 * a small temporary tree: the input stands in for what read() returns from the inotify fd.
 * Input: byte 0 = where the rest is split into two reads; the rest = struct inotify_event
 * records. tests/fuzz/make_seeds.py turns the recorded traces into this form.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "err.h"
#include "watch.h"

static uv_loop_t loop;
static char root[64];
static unsigned events;

static void check(int cond)
{
    if (!cond)
        abort();
}

static void on_event(void *ctx, const struct watch_event *ev)
{
    (void)ctx;
    events++;
    check(ev->path != NULL && ev->path[0] != '/');
    /* old_path: where a rename came from, or where the lost root went (absolute) */
    if (ev->kind == WATCH_RENAMED)
        check(ev->old_path != NULL && ev->old_path[0] != '/');
    else if (ev->kind == WATCH_ROOT_LOST)
        check(ev->old_path == NULL || ev->old_path[0] == '/');
    else
        check(ev->old_path == NULL);
    /* The skipped directory never shows, nor anything under it. */
    check(strcmp(ev->path, ".ckptpush") != 0 && strncmp(ev->path, ".ckptpush/", 10) != 0);
}

static void on_closed(void *ctx)
{
    *(int *)ctx = 1;
}

static void remove_root(void)
{
    static const char *const dirs[] = {"checkpoint-10", "out", "step-100", ".ckptpush", ""};
    char path[128];

    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", root, dirs[i]);
        rmdir(path);
    }
    uv_loop_close(&loop);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const dirs[] = {"checkpoint-10", "out", "step-100", ".ckptpush"};
    const char *tmp = getenv("TMPDIR");
    char path[128];

    (void)argc;
    (void)argv;
    snprintf(root, sizeof(root), "%s/ckpt-fuzz-watch-XXXXXX",
             tmp != NULL && strlen(tmp) < 32 ? tmp : "/tmp");
    check(mkdtemp(root) != NULL);
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", root, dirs[i]);
        check(mkdir(path, 0700) == 0);
    }
    check(uv_loop_init(&loop) == 0);
    atexit(remove_root);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct watch *w;
    struct ckpt_err err;
    size_t split;
    int closed = 0;

    if (size < 1 || size - 1 > 65536)
        return 0;
    ckpt_err_clear(&err);
    check(watch_start(&w, &loop, root, ".ckptpush", on_event, NULL, &err) == 0);
    /* The initial scan: the subdirectories get their watches (wd 2..4). */
    for (int i = 0; i < 8; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    split = (size - 1) * data[0] / 255;
    watch_feed(w, (const char *)data + 1, split);
    watch_feed(w, (const char *)data + 1 + split, size - 1 - split);
    watch_feed(w, NULL, 0);
    for (int i = 0; i < 4; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    watch_close(w, on_closed, &closed);
    while (!closed)
        uv_run(&loop, UV_RUN_ONCE);
    check(uv_run(&loop, UV_RUN_NOWAIT) == 0); /* nothing left on the loop */
    return 0;
}
