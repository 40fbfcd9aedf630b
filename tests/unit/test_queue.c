/* test_queue.c - the queue's copies at seal, in a dry run (no hub), with the staging directory on
 * another file system so that every pin is a copy: sealed checkpoints are copied while the queue
 * is paused, one at a time in queue order; past staging_max the later copies wait, start again
 * when a push releases space, or run at their turn to push; each push step comes after its
 * checkpoint's copy, and waiting copies never stop the queue; a checkpoint that strategy
 * checkpoint will never push is not copied. Skipped without a second file system (/dev/shm
 * beside TMPDIR).
 */
#include "check.h"
#include "config.h"
#include "pin.h"
#include "queue.h"

#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define N_CKPT 8
#define MODEL_BYTES (64 * 1024)

struct qt {
    uv_loop_t loop;
    uv_timer_t poll;
    struct pin *pin;
    struct queue *q;
    struct config cfg;
    char root[1024];
    char shm[256];
    /* pin copy results and queue state changes, in the order they came */
    char seq[128][96];
    int n_seq;
    enum queue_copy copy[N_CKPT + 1]; /* by id, from queue_for_each */
    bool (*until)(struct qt *t);
    int reached;
    int pin_closed;
    unsigned char model[N_CKPT + 1][MODEL_BYTES];
};

static void note(struct qt *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct qt *t, const char *fmt, ...)
{
    va_list ap;

    if (t->n_seq == (int)(sizeof(t->seq) / sizeof(t->seq[0])))
        return;
    va_start(ap, fmt);
    vsnprintf(t->seq[t->n_seq++], sizeof(t->seq[0]), fmt, ap);
    va_end(ap);
}

/* Index of the first entry equal to want, -1 when there is none. */
static int seq_at(const struct qt *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int seq_at(const struct qt *t, const char *fmt, ...)
{
    char want[96];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(want, sizeof(want), fmt, ap);
    va_end(ap);
    for (int i = 0; i < t->n_seq; i++)
        if (strcmp(t->seq[i], want) == 0)
            return i;
    fprintf(stderr, "not seen: '%s'\n", want);
    return -1;
}

static void on_pin_result(void *ctx, const struct pin_result *res)
{
    if (res->op == PIN_COPY)
        note(ctx, "copy %llu %s %d", (unsigned long long)res->id, res->relpath, res->status);
}

static void on_queue_event(void *ctx, const struct queue_item_view *v)
{
    note(ctx, "%s %llu", queue_state_name(v->state), (unsigned long long)v->id);
}

static void record_copy(void *ctx, const struct queue_item_view *v)
{
    struct qt *t = ctx;
    if (v->id >= 1 && v->id <= N_CKPT)
        t->copy[v->id] = v->copy;
}

static void on_poll(uv_timer_t *timer)
{
    struct qt *t = timer->data;

    queue_for_each(t->q, record_copy, t);
    if (t->until != NULL && t->until(t))
        t->reached = 1;
}

static void run_until(struct qt *t, bool (*until)(struct qt *t))
{
    time_t start = time(NULL);

    t->until = until;
    t->reached = 0;
    while (!t->reached) {
        uv_run(&t->loop, UV_RUN_ONCE);
        REQUIRE(time(NULL) - start < 30);
    }
    t->until = NULL;
}

static void run_for_ms(struct qt *t, uint64_t ms)
{
    uint64_t end = uv_now(&t->loop) + ms;
    while (uv_now(&t->loop) < end)
        uv_run(&t->loop, UV_RUN_ONCE);
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wbe");
    REQUIRE(f != NULL);
    REQUIRE(fwrite(data, 1, n, f) == n);
    REQUIRE(fclose(f) == 0);
}

static bool staged_is(struct qt *t, uint64_t id, const char *rel, const void *data, size_t n)
{
    char path[PATH_MAX];
    struct stat st;
    bool same = false;

    CHECK(pin_path(t->pin, id, rel, path, sizeof(path)) == 0);
    if (stat(path, &st) != 0 || (size_t)st.st_size != n)
        return false;
    FILE *f = fopen(path, "rbe");
    unsigned char *buf = malloc(n ? n : 1);
    if (f != NULL && buf != NULL && fread(buf, 1, n, f) == n)
        same = memcmp(buf, data, n) == 0;
    if (f != NULL)
        fclose(f);
    free(buf);
    return same;
}

/* checkpoint-<id>/{model.bin,config.json}, pinned (as copies: links fail) and sealed. */
static void seal(struct qt *t, uint64_t id)
{
    char dir[PATH_MAX], path[PATH_MAX + 32], rel[64], name[32];
    const char *files[] = {"model.bin", "config.json"};

    snprintf(dir, sizeof(dir), "%s/checkpoint-%llu", t->root, (unsigned long long)id);
    REQUIRE(mkdir(dir, 0755) == 0);
    for (size_t i = 0; i < sizeof(t->model[id]); i++)
        t->model[id][i] = (unsigned char)(i * 31 + id * 7);
    snprintf(path, sizeof(path), "%s/model.bin", dir);
    write_file(path, t->model[id], sizeof(t->model[id]));
    snprintf(path, sizeof(path), "%s/config.json", dir);
    write_file(path, "{}", 2);
    for (size_t i = 0; i < 2; i++) {
        snprintf(rel, sizeof(rel), "checkpoint-%llu/%s", (unsigned long long)id, files[i]);
        CHECK(pin_add(t->pin, id, rel, files[i]) == 0);
    }
    snprintf(name, sizeof(name), "checkpoint-%llu", (unsigned long long)id);
    CHECK(queue_add(t->q, id, name, "transformers-trainer", (int64_t)id * 10, NULL, files, 2) == 0);
}

static void rotate(struct qt *t, uint64_t id)
{
    char path[PATH_MAX + 32];

    snprintf(path, sizeof(path), "%s/checkpoint-%llu/model.bin", t->root, (unsigned long long)id);
    CHECK(unlink(path) == 0);
    snprintf(path, sizeof(path), "%s/checkpoint-%llu/config.json", t->root, (unsigned long long)id);
    CHECK(unlink(path) == 0);
}

static bool first_two_copied_third_waits(struct qt *t)
{
    return t->copy[1] == QUEUE_COPY_DONE && t->copy[2] == QUEUE_COPY_DONE &&
           t->copy[3] == QUEUE_COPY_WAITING && queue_staging_bytes(t->q) > t->cfg.staging_max;
}

static bool fourth_copied_fifth_waits(struct qt *t)
{
    return t->copy[4] == QUEUE_COPY_DONE && t->copy[5] == QUEUE_COPY_WAITING &&
           queue_staging_bytes(t->q) > t->cfg.staging_max;
}

static bool eighth_copied(struct qt *t)
{
    return t->copy[8] == QUEUE_COPY_DONE;
}

static bool queue_empty(struct qt *t)
{
    return queue_pending(t->q) == 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void on_pin_closed(void *ctx)
{
    ((struct qt *)ctx)->pin_closed = 1;
}

/* Copy before the push step that would read it; pushes in queue order. */
static void check_pushed_after_copy(struct qt *t, uint64_t from, uint64_t to)
{
    for (uint64_t id = from; id <= to; id++) {
        int copied = seq_at(t, "copy %llu model.bin 0", (unsigned long long)id);
        int skipped = seq_at(t, "skipped %llu", (unsigned long long)id);
        CHECK(copied >= 0 && skipped > copied);
        if (id > from)
            CHECK(seq_at(t, "pinning %llu", (unsigned long long)id - 1) <
                  seq_at(t, "pinning %llu", (unsigned long long)id));
        CHECK(t->copy[id] == QUEUE_COPY_DONE);
    }
}

int main(void)
{
    static struct qt t;
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char link_path[PATH_MAX + 16];
    struct stat a, b;

    if (stat("/dev/shm", &a) != 0 || stat(tmp, &b) != 0 || a.st_dev == b.st_dev) {
        printf("test_queue: no second file system (/dev/shm), copies at seal not tested\n");
        return 0;
    }
    snprintf(t.root, sizeof(t.root), "%s/ckpt-test-queue-XXXXXX", tmp);
    snprintf(t.shm, sizeof(t.shm), "/dev/shm/ckpt-test-queue-XXXXXX");
    REQUIRE(mkdtemp(t.root) != NULL && mkdtemp(t.shm) != NULL);
    snprintf(link_path, sizeof(link_path), "%s/.ckptpush", t.root);
    REQUIRE(symlink(t.shm, link_path) == 0);

    t.cfg.watch_dir = t.root;
    t.cfg.strategy = STRATEGY_ALL_CHECKPOINTS;
    t.cfg.commits_per_hour = 128;
    t.cfg.max_transfers = 1;
    /* about one and a half checkpoints: the second copy starts (the first is within the limit),
     * the third waits */
    t.cfg.staging_max = MODEL_BYTES + MODEL_BYTES / 2;

    REQUIRE(uv_loop_init(&t.loop) == 0);
    REQUIRE(pin_new(&t.pin, &t.loop, t.root, ".ckptpush", on_pin_result, &t) == 0);
    struct queue_deps deps = {.loop = &t.loop, .cfg = &t.cfg, .pin = t.pin, .new_ids_from = 1};
    REQUIRE(queue_new(&t.q, &deps, on_queue_event, &t) == 0);
    uv_timer_init(&t.loop, &t.poll);
    t.poll.data = &t;
    uv_timer_start(&t.poll, on_poll, 5, 5);
    queue_set_ready(t.q, true);
    queue_set_paused(t.q, true);

    /* 1. paused: the copies are taken at seal, in order, until staging_max */
    for (uint64_t id = 1; id <= 3; id++)
        seal(&t, id);
    run_until(&t, first_two_copied_third_waits);
    run_for_ms(&t, 100);
    queue_for_each(t.q, record_copy, &t);
    CHECK(t.copy[3] == QUEUE_COPY_WAITING); /* nothing frees space while paused */
    CHECK_INT(queue_copies_waiting(t.q), 1);
    CHECK(staged_is(&t, 1, "model.bin", t.model[1], MODEL_BYTES));
    CHECK(staged_is(&t, 2, "model.bin", t.model[2], MODEL_BYTES));
    CHECK(staged_is(&t, 2, "config.json", "{}", 2));
    CHECK(!staged_is(&t, 3, "model.bin", t.model[3], MODEL_BYTES));
    CHECK(seq_at(&t, "copy 1 model.bin 0") < seq_at(&t, "copy 2 model.bin 0"));
    for (int i = 0; i < t.n_seq; i++)
        CHECK(strncmp(t.seq[i], "pinning", 7) != 0); /* no push started */

    /* 2. rotation takes the copied ones; the resumed queue pushes all three, the waiting copy
     * taken when the first push released its pins or at its own turn */
    rotate(&t, 1);
    rotate(&t, 2);
    queue_set_paused(t.q, false);
    run_until(&t, queue_empty);
    run_for_ms(&t, 50);
    queue_for_each(t.q, record_copy, &t);
    check_pushed_after_copy(&t, 1, 3);
    for (int i = 0; i < t.n_seq; i++)
        CHECK(strstr(t.seq[i], " -2") == NULL); /* nothing lost */

    /* 3. a limit no copy fits under: the next copy waits past the pause, and runs when its turn
     * to push comes (after the push started), not never */
    t.cfg.staging_max = 1;
    queue_set_paused(t.q, true);
    seal(&t, 4);
    seal(&t, 5);
    run_until(&t, fourth_copied_fifth_waits);
    CHECK(!staged_is(&t, 5, "model.bin", t.model[5], MODEL_BYTES));
    queue_set_paused(t.q, false);
    run_until(&t, queue_empty);
    queue_for_each(t.q, record_copy, &t);
    check_pushed_after_copy(&t, 4, 5);
    CHECK(seq_at(&t, "pinning 5") < seq_at(&t, "copy 5 model.bin 0"));

    /* 4. strategy checkpoint: with step 80 waiting, 60 and 70 are superseded, never pushed:
     * their copies are not taken */
    t.cfg.strategy = STRATEGY_CHECKPOINT;
    t.cfg.staging_max = 0;
    queue_set_paused(t.q, true);
    for (uint64_t id = 6; id <= 8; id++)
        seal(&t, id);
    run_until(&t, eighth_copied);
    CHECK(t.copy[6] == QUEUE_COPY_NONE && t.copy[7] == QUEUE_COPY_NONE);
    CHECK_INT(queue_copies_waiting(t.q), 0);
    queue_set_paused(t.q, false);
    run_until(&t, queue_empty);
    for (int i = 0; i < t.n_seq; i++)
        CHECK(strncmp(t.seq[i], "copy 6 ", 7) != 0 && strncmp(t.seq[i], "copy 7 ", 7) != 0);
    CHECK(seq_at(&t, "skipped 6") >= 0 && seq_at(&t, "skipped 7") >= 0);
    CHECK(seq_at(&t, "copy 8 model.bin 0") < seq_at(&t, "skipped 8"));

    uv_close((uv_handle_t *)&t.poll, NULL);
    queue_stop(t.q);
    pin_close(t.pin, on_pin_closed, &t);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    CHECK(t.pin_closed);
    queue_free(t.q);
    CHECK(uv_loop_close(&t.loop) == 0);

    /* every pin released */
    char pins[PATH_MAX + 8];
    snprintf(pins, sizeof(pins), "%s/pins", t.shm);
    int left = 0;
    for (uint64_t id = 1; id <= N_CKPT; id++) {
        char p[PATH_MAX + 32];
        snprintf(p, sizeof(p), "%s/%llu", pins, (unsigned long long)id);
        left += lstat(p, &a) == 0;
    }
    CHECK_INT(left, 0);
    if (test_failures != 0)
        for (int i = 0; i < t.n_seq; i++)
            fprintf(stderr, "  %s\n", t.seq[i]);
    nftw(t.root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    nftw(t.shm, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_report("test_queue");
}
