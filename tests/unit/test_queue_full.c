/* test_queue_full.c - a sealed checkpoint that finds QUEUE_MAX_WAITING others waiting is not
 * dropped in silence: it ends failed at once (counted, an event with its error), and the ones
 * that waited are still pushed. A dry run (no hub), paused while the queue fills. */
#include "config.h"
#include "pin.h"
#include "queue.h"

#include "testutil.h"

struct qf {
    uv_loop_t loop;
    struct queue *q;
    uint64_t failed_id;
    char failed_error[256];
    int skipped;
    int pin_closed;
    int drained;
};

static void on_queue_event(void *ctx, const struct queue_item_view *v)
{
    struct qf *t = ctx;

    if (v->state == QUEUE_FAILED) {
        t->failed_id = v->id;
        snprintf(t->failed_error, sizeof(t->failed_error), "%s", v->error);
    } else if (v->state == QUEUE_SKIPPED) {
        t->skipped++;
    }
}

static void on_pin_result(void *ctx, const struct pin_result *res)
{
    (void)ctx;
    (void)res;
}

static void on_pin_closed(void *ctx)
{
    ((struct qf *)ctx)->pin_closed = 1;
}

static void on_check(uv_timer_t *timer)
{
    struct qf *t = timer->data;

    if (queue_pending(t->q) == 0)
        t->drained = 1;
}

int main(void)
{
    static struct qf t;
    char root[512], name[64];
    const char *files[] = {"model.bin"};
    struct config cfg;
    struct pin *pin;
    uv_timer_t check;

    test_mkdtemp(root, sizeof(root));
    memset(&cfg, 0, sizeof(cfg));
    cfg.watch_dir = root;
    cfg.strategy = STRATEGY_ALL_CHECKPOINTS;
    cfg.commits_per_hour = 128;
    cfg.max_transfers = 1;
    REQUIRE(uv_loop_init(&t.loop) == 0);
    REQUIRE(pin_new(&pin, &t.loop, root, ".ckptpush", on_pin_result, &t) == 0);
    struct queue_deps deps = {.loop = &t.loop, .cfg = &cfg, .pin = pin, .new_ids_from = 1};
    REQUIRE(queue_new(&t.q, &deps, on_queue_event, &t) == 0);
    queue_set_ready(t.q, true);
    queue_set_paused(t.q, true);

    for (uint64_t id = 1; id <= QUEUE_MAX_WAITING; id++) {
        snprintf(name, sizeof(name), "checkpoint-%llu", (unsigned long long)id);
        CHECK_INT(queue_add(t.q, id, name, "model-dir", (int64_t)id, NULL, files, 1), 0);
    }
    CHECK_INT(queue_failed_count(t.q), 0);
    CHECK_INT(queue_add(t.q, QUEUE_MAX_WAITING + 1, "checkpoint-late", "model-dir",
                        QUEUE_MAX_WAITING + 1, NULL, files, 1),
              -ENOBUFS);
    CHECK_INT(queue_failed_count(t.q), 1);
    CHECK_INT(t.failed_id, QUEUE_MAX_WAITING + 1);
    CHECK(strstr(t.failed_error, "too many checkpoints wait") != NULL);
    CHECK_INT(queue_pending(t.q), QUEUE_MAX_WAITING);

    /* the ones that waited are still pushed (skipped: a dry run) */
    queue_set_paused(t.q, false);
    uv_timer_init(&t.loop, &check);
    check.data = &t;
    uv_timer_start(&check, on_check, 5, 5);
    test_run_until(&t.loop, &t.drained);
    CHECK_INT(t.skipped, QUEUE_MAX_WAITING);
    CHECK_INT(queue_failed_count(t.q), 1);

    uv_close((uv_handle_t *)&check, NULL);
    queue_stop(t.q);
    pin_close(pin, on_pin_closed, &t);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    CHECK(t.pin_closed);
    queue_free(t.q);
    CHECK(uv_loop_close(&t.loop) == 0);
    test_rm_rf(root);
    return check_report("test_queue_full");
}
