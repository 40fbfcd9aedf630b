/* test_detect.c - completion rules replayed on the recorded framework traces, plus synthetic cases.
 *
 * Feeds detect with the events watch.c would report for each trace (MOVED_FROM/MOVED_TO paired by
 * cookie), at the recorded times, firing the timer exactly at each deadline. Single-threaded.
 */
#include "check.h"
#include "detect.h"
#include "watch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SEALS 64
#define MAX_NOTES 512
#define MAX_READY 1024

struct seal {
    uint64_t id;
    char name[256];
    char layout[64];
    char rule[160];
    int64_t step;
    int64_t at_ms;
    size_t n_files;
    char files[32][128];
};

struct rec {
    int64_t now;
    struct seal seals[MAX_SEALS];
    int n_seals;
    char notes[MAX_NOTES][300]; /* every other callback, as text */
    int n_notes;
    struct {
        char path[300]; /* candidate-dir-relative, as the seal lists files */
        char name[256];
        int64_t at_ms;
    } ready[MAX_READY];
    int n_ready;
};

__attribute__((format(printf, 2, 3))) static void note(struct rec *r, const char *fmt, ...)
{
    va_list ap;
    if (r->n_notes >= MAX_NOTES)
        return;
    va_start(ap, fmt);
    vsnprintf(r->notes[r->n_notes++], sizeof(r->notes[0]), fmt, ap);
    va_end(ap);
}

static void cb_added(void *ctx, const struct detect_cand *c, const char *rel)
{
    note(ctx, "added '%s' '%s'", detect_cand_name(c), rel);
}

static void cb_renamed(void *ctx, const struct detect_cand *c, const char *from, const char *to)
{
    note(ctx, "renamed '%s' '%s' -> '%s'", detect_cand_name(c), from, to);
}

static void cb_removed(void *ctx, const struct detect_cand *c, const char *rel)
{
    note(ctx, "removed '%s' '%s'", detect_cand_name(c), rel);
}

static void cb_dropped(void *ctx, const struct detect_cand *c, const char *why)
{
    note(ctx, "dropped '%s' %s", detect_cand_name(c), why);
}

static void cb_doubtful(void *ctx, const struct detect_cand *c, const char *why)
{
    note(ctx, "doubtful '%s' %s", detect_cand_name(c), why);
}

static void cb_late(void *ctx, const struct detect_cand *c, const char *rel)
{
    note(ctx, "late '%s' '%s'", detect_cand_name(c), rel);
}

static void cb_ready(void *ctx, const struct detect_cand *c, const char *rel)
{
    struct rec *r = ctx;
    CHECK(!detect_cand_sealed(c));
    if (r->n_ready >= MAX_READY)
        return;
    snprintf(r->ready[r->n_ready].path, sizeof(r->ready[0].path), "%s", rel);
    snprintf(r->ready[r->n_ready].name, sizeof(r->ready[0].name), "%s", detect_cand_name(c));
    r->ready[r->n_ready++].at_ms = r->now;
}

/* When name's file rel was first reported ready, -1 if never. */
static int64_t ready_at(const struct rec *r, const char *name, const char *rel)
{
    for (int i = 0; i < r->n_ready; i++)
        if (strcmp(r->ready[i].name, name) == 0 && strcmp(r->ready[i].path, rel) == 0)
            return r->ready[i].at_ms;
    return -1;
}

/* Early hashing may start on every file of a checkpoint before its seal. */
static bool all_ready_before_seal(const struct rec *r)
{
    bool ok = true;
    for (int i = 0; i < r->n_seals; i++) {
        const struct seal *s = &r->seals[i];
        for (size_t k = 0; k < s->n_files && k < 32; k++) {
            int64_t t = ready_at(r, s->name, s->files[k]);
            if (t < 0 || t > s->at_ms) {
                fprintf(stderr, "'%s' '%s' ready at %lld, sealed at %lld\n", s->name, s->files[k],
                        (long long)t, (long long)s->at_ms);
                ok = false;
            }
        }
    }
    return ok;
}

static void cb_sealed(void *ctx, const struct detect_cand *c)
{
    struct rec *r = ctx;
    if (r->n_seals >= MAX_SEALS)
        return;
    struct seal *s = &r->seals[r->n_seals++];
    s->id = detect_cand_id(c);
    snprintf(s->name, sizeof(s->name), "%s", detect_cand_name(c));
    snprintf(s->layout, sizeof(s->layout), "%s", detect_cand_layout(c));
    snprintf(s->rule, sizeof(s->rule), "%s", detect_cand_rule(c));
    s->step = detect_cand_step(c);
    s->at_ms = r->now;
    s->n_files = detect_cand_n_files(c);
    for (size_t i = 0; i < s->n_files && i < 32; i++)
        snprintf(s->files[i], sizeof(s->files[i]), "%s", detect_cand_file(c, i));
}

static struct detect *make(struct rec *r, int64_t quiet)
{
    struct detect_config cfg = {.quiet_ms = quiet};
    struct detect_callbacks cbs = {r,          cb_added,    cb_renamed, cb_removed, cb_sealed,
                                   cb_dropped, cb_doubtful, cb_late,    cb_ready};
    struct detect *d = NULL;
    memset(r, 0, sizeof(*r));
    CHECK(detect_new(&d, &cfg, &cbs) == 0);
    return d;
}

/* Fires the timer for every deadline up to now, as the caller's uv_timer would. */
static void advance(struct detect *d, struct rec *r, int64_t now)
{
    for (;;) {
        int64_t t = detect_next_deadline_ms(d);
        if (t < 0 || t > now)
            break;
        r->now = t;
        detect_tick(d, t);
    }
    r->now = now;
}

static void feed(struct detect *d, struct rec *r, int64_t now, enum watch_kind kind, bool is_dir,
                 const char *path, const char *old)
{
    struct watch_event ev = {kind, is_dir, path, old, 0, NULL};
    advance(d, r, now);
    CHECK(detect_feed(d, &ev, now) == 0);
}

static void finish(struct detect *d, struct rec *r)
{
    advance(d, r, INT64_MAX / 2);
}

static const struct seal *find_seal(const struct rec *r, const char *name)
{
    const struct seal *found = NULL;
    int n = 0;
    for (int i = 0; i < r->n_seals; i++) {
        if (strcmp(r->seals[i].name, name) == 0) {
            found = &r->seals[i];
            n++;
        }
    }
    if (n != 1)
        fprintf(stderr, "seal '%s' seen %d times\n", name, n);
    return n == 1 ? found : NULL;
}

static bool has_note(const struct rec *r, const char *prefix)
{
    for (int i = 0; i < r->n_notes; i++) {
        if (strncmp(r->notes[i], prefix, strlen(prefix)) == 0)
            return true;
    }
    return false;
}

static bool files_are(const struct seal *s, const char *const *want, size_t n)
{
    if (s == NULL || s->n_files != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s->files[i], want[i]) != 0)
            return false;
    }
    return true;
}

/* --- trace replay ------------------------------------------------------------------------- */

struct tev {
    int64_t ms;
    unsigned flags;
    char path[256];
    long cookie;
};

enum {
    F_CREATE = 1,
    F_MODIFY = 2,
    F_CLOSE = 4,
    F_FROM = 8,
    F_TO = 16,
    F_DELETE = 32,
    F_DIR = 64,
    F_ATTRIB = 128,
    F_SELF = 256
};

static int load_trace(const char *name, struct tev **ret)
{
    char path[1024], line[4096];
    const char *src = getenv("CKPT_SOURCE_DIR");
    struct tev *a = calloc(1024, sizeof(*a));
    int n = 0;
    snprintf(path, sizeof(path), "%s/tests/fixtures/traces/%s", src != NULL ? src : ".", name);
    FILE *f = fopen(path, "re");
    if (f == NULL || a == NULL) {
        fprintf(stderr, "cannot open '%s'\n", path);
        exit(2);
    }
    while (fgets(line, sizeof(line), f) != NULL && n < 1024) {
        cJSON *j = cJSON_Parse(line);
        if (j == NULL)
            continue;
        struct tev *e = &a[n++];
        e->ms = (int64_t)(cJSON_GetObjectItem(j, "t")->valuedouble * 1000.0 + 0.5);
        snprintf(e->path, sizeof(e->path), "%s", cJSON_GetObjectItem(j, "path")->valuestring);
        e->cookie = (long)cJSON_GetObjectItem(j, "cookie")->valuedouble;
        cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "ev"))
        {
            const char *s = it->valuestring;
            e->flags |= strcmp(s, "CREATE") == 0        ? F_CREATE
                        : strcmp(s, "MODIFY") == 0      ? F_MODIFY
                        : strcmp(s, "CLOSE_WRITE") == 0 ? F_CLOSE
                        : strcmp(s, "MOVED_FROM") == 0  ? F_FROM
                        : strcmp(s, "MOVED_TO") == 0    ? F_TO
                        : strcmp(s, "DELETE") == 0      ? F_DELETE
                        : strcmp(s, "ISDIR") == 0       ? F_DIR
                        : strcmp(s, "ATTRIB") == 0      ? F_ATTRIB
                                                        : F_SELF;
        }
        cJSON_Delete(j);
    }
    fclose(f);
    *ret = a;
    return n;
}

/* What watch.c reports for a[i] (a MOVED_FROM takes its MOVED_TO along), at a[i]'s time or
 * floor_ms, whichever is later. */
static bool split_renames; /* read each rename as MOVED_OUT then MOVED_IN (inotify(7)) */

static void replay_one(struct detect *d, struct rec *r, const struct tev *a, int n, int i,
                       bool *consumed, int64_t floor_ms)
{
    const struct tev *e = &a[i];
    bool dir = (e->flags & F_DIR) != 0;
    int64_t ms = e->ms > floor_ms ? e->ms : floor_ms;
    if (consumed[i] || (e->flags & F_SELF))
        return;
    if (e->flags & F_CREATE)
        feed(d, r, ms, WATCH_CREATE, dir, e->path, NULL);
    if (e->flags & F_MODIFY)
        feed(d, r, ms, WATCH_MODIFY, dir, e->path, NULL);
    if (e->flags & F_ATTRIB)
        feed(d, r, ms, WATCH_ATTRIB, dir, e->path, NULL);
    if (e->flags & F_CLOSE)
        feed(d, r, ms, WATCH_CLOSE_WRITE, dir, e->path, NULL);
    if (e->flags & F_DELETE)
        feed(d, r, ms, WATCH_DELETE, dir, e->path, NULL);
    if (e->flags & F_FROM) {
        int j;
        for (j = i + 1; j < n; j++) {
            if ((a[j].flags & F_TO) && a[j].cookie == e->cookie)
                break;
        }
        if (j < n && split_renames) {
            consumed[j] = true;
            feed(d, r, ms, WATCH_MOVED_OUT, dir, e->path, NULL);
            feed(d, r, a[j].ms > floor_ms ? a[j].ms : floor_ms, WATCH_MOVED_IN, dir, a[j].path,
                 NULL);
        } else if (j < n) {
            consumed[j] = true;
            feed(d, r, a[j].ms > floor_ms ? a[j].ms : floor_ms, WATCH_RENAMED, dir, a[j].path,
                 e->path);
        } else {
            feed(d, r, ms, WATCH_MOVED_OUT, dir, e->path, NULL);
        }
    }
    if (e->flags & F_TO)
        feed(d, r, ms, WATCH_MOVED_IN, dir, e->path, NULL);
}

/* What watch.c reports for these inotify records. */
static void replay(struct detect *d, struct rec *r, const struct tev *a, int n)
{
    bool consumed[1024] = {false};
    for (int i = 0; i < n; i++)
        replay_one(d, r, a, n, i, consumed, 0);
    finish(d, r);
}

/* Last write (not delete) to anything of the candidate called name. */
static int64_t last_write(const struct tev *a, int n, const char *name)
{
    int64_t t = -1;
    size_t k = strlen(name);
    for (int i = 0; i < n; i++) {
        bool in = k == 0 ? strchr(a[i].path, '/') == NULL && !(a[i].flags & F_DIR)
                         : strncmp(a[i].path, name, k) == 0 &&
                               (a[i].path[k] == '/' || a[i].path[k] == '\0');
        if (in && (a[i].flags & (F_CREATE | F_MODIFY | F_CLOSE | F_FROM | F_TO)))
            t = a[i].ms;
    }
    return t;
}

static void check_timing(const struct rec *r, const struct tev *a, int n, int64_t quiet)
{
    for (int i = 0; i < r->n_seals; i++) {
        const struct seal *s = &r->seals[i];
        int64_t lw = last_write(a, n, s->name);
        CHECK(lw >= 0);
        if (!(s->at_ms >= lw && s->at_ms <= lw + quiet + 2))
            fprintf(stderr, "'%s' sealed at %" PRId64 ", last write %" PRId64 "\n", s->name,
                    s->at_ms, lw);
        CHECK(s->at_ms >= lw && s->at_ms <= lw + quiet + 2);
    }
}

static void test_trainer_trace(int64_t quiet)
{
    static const char *const ckpt_files[] = {"config.json",        "generation_config.json",
                                             "model.safetensors",  "optimizer.pt",
                                             "rng_state.pth",      "scheduler.pt",
                                             "tokenizer.json",     "tokenizer_config.json",
                                             "trainer_state.json", "training_args.bin"};
    static const char *const root_files[] = {
        "README.md",          "all_results.json",       "config.json",
        "eval_results.json",  "generation_config.json", "model.safetensors",
        "tokenizer.json",     "tokenizer_config.json",  "train_results.json",
        "trainer_state.json", "training_args.bin"};
    struct rec *r = calloc(1, sizeof(*r));
    struct tev *a;
    int n = load_trace("hf-trainer-5.17-save-steps.jsonl", &a);
    struct detect *d = make(r, quiet);

    CHECK(n == 193);
    replay(d, r, a, n);
    CHECK(r->n_seals == 5);
    for (int step = 10; step <= 40; step += 10) {
        char name[32];
        snprintf(name, sizeof(name), "checkpoint-%d", step);
        const struct seal *s = find_seal(r, name);
        CHECK(s != NULL);
        if (s == NULL)
            continue;
        CHECK(strcmp(s->layout, "transformers-trainer") == 0);
        CHECK(s->step == step);
        CHECK(files_are(s, ckpt_files, 10));
        CHECK(strstr(s->rule, "trainer_state.json closed") != NULL);
        /* With a long quiet period, rotation deletes 10 and 20 before it ends: sealed early. */
        bool early = quiet >= 500 && step <= 20;
        CHECK((strstr(s->rule, "early") != NULL) == early);
    }
    const struct seal *root = find_seal(r, "");
    CHECK(root != NULL && strcmp(root->layout, "model-root") == 0);
    CHECK(files_are(root, root_files, 11));
    CHECK(root != NULL && root->step == -1);
    CHECK(r->n_seals == 5 && strcmp(r->seals[4].name, "") == 0);
    check_timing(r, a, n, quiet);
    /* Seen once as model.safetensors, never under a temporary name; nothing dropped. */
    CHECK(!has_note(r, "dropped"));
    CHECK(!has_note(r, "removed"));
    CHECK(!has_note(r, "late"));
    for (int i = 0; i < r->n_notes; i++)
        CHECK(strstr(r->notes[i], ".tmp") == NULL);
    CHECK(has_note(r, "added 'checkpoint-10' 'model.safetensors'"));
    CHECK(has_note(r, "added '' 'model.safetensors'"));
    CHECK(r->n_notes == 4 * 10 + 11);
    CHECK(all_ready_before_seal(r));
    /* The weights were ready long before the checkpoint's marker was written. */
    CHECK(ready_at(r, "checkpoint-10", "model.safetensors") <
          ready_at(r, "checkpoint-10", "trainer_state.json"));
    CHECK(detect_pending(d) == 0);
    CHECK(detect_next_deadline_ms(d) == -1);
    detect_free(d);
    free(a);
    free(r);
}

static void test_sharded_trace(void)
{
    static const char *const want[] = {
        "config.json",
        "generation_config.json",
        "model-00001-of-00007.safetensors",
        "model-00002-of-00007.safetensors",
        "model-00003-of-00007.safetensors",
        "model-00004-of-00007.safetensors",
        "model-00005-of-00007.safetensors",
        "model-00006-of-00007.safetensors",
        "model-00007-of-00007.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
    };
    struct rec *r = calloc(1, sizeof(*r));
    struct tev *a;
    int n = load_trace("hf-save-pretrained-sharded.jsonl", &a);
    struct detect *d = make(r, 1000);

    replay(d, r, a, n);
    /* One model folder: 7 shards (named -of-00007) and the index, plus config and tokenizer. */
    CHECK(r->n_seals == 1);
    const struct seal *s = find_seal(r, "out");
    CHECK(s != NULL && strcmp(s->layout, "model-dir") == 0);
    CHECK(files_are(s, want, 12));
    CHECK(s != NULL && s->step == -1);
    CHECK(s != NULL && strcmp(s->rule, "index and 7 of 7 shards closed, 1000 ms quiet") == 0);
    check_timing(r, a, n, 1000);
    CHECK(!has_note(r, "dropped"));
    CHECK(!has_note(r, "removed"));
    for (int i = 0; i < r->n_notes; i++)
        CHECK(strstr(r->notes[i], ".tmp") == NULL);
    detect_free(d);
    free(a);
    free(r);
}

/* The same save cut short: the index never comes, or a shard is missing. */
static void test_sharded_incomplete(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct tev *a;
    int n = load_trace("hf-save-pretrained-sharded.jsonl", &a);
    struct detect *d = make(r, 1000);
    int cut = 0;

    for (int i = 0; i < n; i++) {
        if (strstr(a[i].path, "index.json") != NULL) {
            cut = i;
            break;
        }
    }
    CHECK(cut > 0);
    replay(d, r, a, cut);
    CHECK(r->n_seals == 0 && detect_pending(d) == 1);
    detect_free(d);

    /* All but shard 4 of 7, then the index: still waiting. */
    d = make(r, 1000);
    feed(d, r, 0, WATCH_CLOSE_WRITE, false, "m/config.json", NULL);
    for (int k = 1; k <= 7; k++) {
        char p[64];
        if (k == 4)
            continue;
        snprintf(p, sizeof(p), "m/model-%05d-of-00007.safetensors", k);
        feed(d, r, 10 * k, WATCH_CLOSE_WRITE, false, p, NULL);
    }
    feed(d, r, 100, WATCH_CLOSE_WRITE, false, "m/model.safetensors.index.json", NULL);
    advance(d, r, 60000);
    CHECK(r->n_seals == 0);
    feed(d, r, 60000, WATCH_CLOSE_WRITE, false, "m/model-00004-of-00007.safetensors", NULL);
    finish(d, r);
    const struct seal *s = find_seal(r, "m");
    CHECK(s != NULL && s->n_files == 9 && s->at_ms == 61000);
    detect_free(d);
    free(a);
    free(r);
}

/* Unsharded save_pretrained and a PEFT adapter-only save into subfolders; then the same folder
 * saved again is a new version holding every file still there. */
static void test_model_dir_whole(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);

    feed(d, r, 0, WATCH_CLOSE_WRITE, false, "final/config.json", NULL);
    advance(d, r, 5000);
    CHECK(r->n_seals == 0); /* a config alone is not a model */
    feed(d, r, 5000, WATCH_CREATE, false, "final/model.safetensors", NULL);
    feed(d, r, 5100, WATCH_CLOSE_WRITE, false, "final/model.safetensors", NULL);
    feed(d, r, 5200, WATCH_CLOSE_WRITE, false, "lora/adapter_config.json", NULL);
    feed(d, r, 5300, WATCH_CLOSE_WRITE, false, "lora/adapter_model.safetensors", NULL);
    feed(d, r, 5400, WATCH_CLOSE_WRITE, false, "lora/README.md", NULL);
    advance(d, r, 7000);
    CHECK(r->n_seals == 2);
    const struct seal *s = find_seal(r, "final");
    const char *want[] = {"config.json", "model.safetensors"};
    CHECK(files_are(s, want, 2) && s->at_ms == 6100 && strcmp(s->layout, "model-dir") == 0);
    CHECK(s != NULL && strcmp(s->rule, "model.safetensors closed, 1000 ms quiet") == 0);
    s = find_seal(r, "lora");
    const char *lora[] = {"README.md", "adapter_config.json", "adapter_model.safetensors"};
    CHECK(files_are(s, lora, 3) && s->at_ms == 6400);
    /* Saved again: a temporary, renamed over the weights. */
    feed(d, r, 9000, WATCH_CREATE, false, "final/.tmpX", NULL);
    feed(d, r, 9100, WATCH_RENAMED, false, "final/model.safetensors", "final/.tmpX");
    CHECK(detect_next_deadline_ms(d) == -1); /* still open */
    feed(d, r, 9200, WATCH_CLOSE_WRITE, false, "final/model.safetensors", NULL);
    finish(d, r);
    CHECK(r->n_seals == 3 && strcmp(r->seals[2].name, "final") == 0);
    CHECK(r->seals[2].n_files == 2 && r->seals[2].at_ms == 10200);
    CHECK(r->seals[2].id > r->seals[0].id);
    CHECK(!has_note(r, "late"));
    detect_free(d);
    free(r);
}

static void test_dcp_trace(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct tev *a;
    int n = load_trace("torch-dcp-save.jsonl", &a);
    struct detect *d = make(r, 1000);
    static const char *const want[] = {".metadata", "__0_0.distcp"};

    replay(d, r, a, n);
    CHECK(r->n_seals == 1);
    const struct seal *s = find_seal(r, "step-100");
    CHECK(s != NULL && strcmp(s->layout, "torch-dcp") == 0 && s->step == 100);
    CHECK(files_are(s, want, 2));
    CHECK(s != NULL && strcmp(s->rule, ".metadata written after 1 .distcp, 1000 ms quiet") == 0);
    check_timing(r, a, n, 1000);
    CHECK(!has_note(r, "dropped"));
    CHECK(detect_pending(d) == 0);
    detect_free(d);
    free(a);
    free(r);
}

/* Several ranks; .metadata.tmp closed but not renamed yet; a config.json saved into the folder
 * before any .distcp makes it a model-dir first, upgraded by the first .distcp. */
static void test_dcp_ranks(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);

    feed(d, r, 0, WATCH_CREATE, true, "dcp/step_7", NULL);
    feed(d, r, 1, WATCH_CLOSE_WRITE, false, "dcp/step_7/config.json", NULL);
    for (int rank = 0; rank < 4; rank++) {
        char p[64];
        snprintf(p, sizeof(p), "dcp/step_7/__%d_0.distcp", rank);
        feed(d, r, 10 + rank, WATCH_CREATE, false, p, NULL);
    }
    for (int rank = 0; rank < 4; rank++) {
        char p[64];
        snprintf(p, sizeof(p), "dcp/step_7/__%d_0.distcp", rank);
        feed(d, r, 2000 + rank, WATCH_CLOSE_WRITE, false, p, NULL);
    }
    feed(d, r, 2100, WATCH_CREATE, false, "dcp/step_7/.metadata.tmp", NULL);
    feed(d, r, 2110, WATCH_CLOSE_WRITE, false, "dcp/step_7/.metadata.tmp", NULL);
    advance(d, r, 9000);
    CHECK(r->n_seals == 0);
    feed(d, r, 9000, WATCH_RENAMED, false, "dcp/step_7/.metadata", "dcp/step_7/.metadata.tmp");
    finish(d, r);
    const struct seal *s = find_seal(r, "dcp/step_7");
    CHECK(s != NULL && strcmp(s->layout, "torch-dcp") == 0 && s->step == 7);
    CHECK(s != NULL && s->n_files == 6 && s->at_ms == 10000);
    CHECK(s != NULL && strcmp(s->rule, ".metadata written after 4 .distcp, 1000 ms quiet") == 0);
    detect_free(d);
    free(r);
}

/* --- synthetic traces (tests/fixtures/traces/synthetic, see SOURCES.md there) ----------- */

struct want_seal {
    const char *name;
    const char *layout;
    size_t n_files;
    int count; /* seals of that name (a file replaced after its seal is sealed again) */
};

struct want_trace {
    const char *trace;
    struct want_seal seals[8];
};

static const struct want_trace synthetic[] = {
    {"synthetic/deepspeed-save-checkpoint.jsonl",
     {{"global_step10", "deepspeed", 3, 1}, {"global_step20", "deepspeed", 3, 1}}},
    {"synthetic/orbax-save.jsonl",
     {{"100/default", "orbax", 3, 1}, {"200/default", "orbax", 3, 1}}},
    {"synthetic/nemo-unfinished-marker.jsonl",
     {{"ckpts/megatron--step=100", "nemo", 3, 1}, {"ckpts/megatron--step=200", "nemo", 3, 1}}},
    {"synthetic/torchsnapshot-take.jsonl", {{"snap-30", "torchsnapshot", 3, 1}}},
    {"synthetic/accelerate-save-state.jsonl",
     {{"checkpoints/checkpoint_0", "accelerate", 2, 1},
      {"checkpoints/checkpoint_1", "accelerate", 2, 1},
      {"checkpoints/checkpoint_2", "accelerate", 2, 1}}},
    {"synthetic/plain-torch-save.jsonl",
     {{"ckpt/step_100.pt", "single-file", 1, 1},
      {"ckpt/step_200.pt", "single-file", 1, 1},
      {"ckpt/latest.pt", "single-file", 1, 1}}},
};

static void test_synthetic_traces(int64_t quiet)
{
    for (size_t t = 0; t < sizeof(synthetic) / sizeof(synthetic[0]); t++) {
        const struct want_trace *w = &synthetic[t];
        struct rec *r = calloc(1, sizeof(*r));
        struct tev *a;
        int n = load_trace(w->trace, &a), total = 0;
        struct detect *d = make(r, quiet);

        replay(d, r, a, n);
        for (const struct want_seal *ws = w->seals; ws->name != NULL; ws++) {
            int count = 0;
            total += ws->count;
            for (int i = 0; i < r->n_seals; i++) {
                const struct seal *s = &r->seals[i];
                if (strcmp(s->name, ws->name) != 0)
                    continue;
                count++;
                if (strcmp(s->layout, ws->layout) != 0 || s->n_files != ws->n_files)
                    fprintf(stderr, "%s: '%s' layout %s files %zu rule '%s'\n", w->trace, s->name,
                            s->layout, s->n_files, s->rule);
                CHECK(strcmp(s->layout, ws->layout) == 0 && s->n_files == ws->n_files);
            }
            if (count != ws->count)
                fprintf(stderr, "%s: '%s' sealed %d times\n", w->trace, ws->name, count);
            CHECK(count == ws->count);
        }
        if (r->n_seals != total) {
            for (int i = 0; i < r->n_seals; i++)
                fprintf(stderr, "%s: sealed '%s'\n", w->trace, r->seals[i].name);
        }
        CHECK(r->n_seals == total);
        CHECK(all_ready_before_seal(r));
        /* Never before the last write into it (a replaced file: before its next version). */
        for (int i = 0; i < r->n_seals; i++) {
            if (strstr(r->seals[i].name, "last.ckpt") == NULL)
                CHECK(r->seals[i].at_ms >= last_write(a, n, r->seals[i].name));
        }
        CHECK(detect_pending(d) == 0);
        detect_free(d);
        free(a);
        free(r);
    }
}

/* Specific rules the synthetic traces rely on. */
static void test_rule_details(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct tev *a;
    int n = load_trace("synthetic/plain-torch-save.jsonl", &a);
    struct detect *d = make(r, 1000);
    replay(d, r, a, n);
    const struct seal *s = find_seal(r, "ckpt/latest.pt");
    CHECK(s != NULL && strstr(s->rule, "1 earlier version coalesced into the newest") != NULL);
    detect_free(d);
    free(a);

    /* DeepSpeed: no seal until latest is written after the folder, however long the wait. */
    d = make(r, 1000);
    feed(d, r, 0, WATCH_CLOSE_WRITE, false, "latest", NULL);
    feed(d, r, 10, WATCH_CLOSE_WRITE, false, "global_step5/mp_rank_00_model_states.pt", NULL);
    advance(d, r, 60000);
    CHECK(r->n_seals == 0);
    feed(d, r, 60000, WATCH_CLOSE_WRITE, false, "latest", NULL);
    finish(d, r);
    s = find_seal(r, "global_step5");
    CHECK(s != NULL && s->step == 5 && s->at_ms == 61000);
    CHECK(s != NULL && strcmp(s->rule, "'latest' written after the folder, 1000 ms quiet") == 0);
    detect_free(d);

    /* NeMo: the marker still there at the quiet period's end: no seal; removed: sealed. */
    d = make(r, 1000);
    feed(d, r, 0, WATCH_CLOSE_WRITE, false, "c/m--step=3-unfinished", NULL);
    feed(d, r, 5, WATCH_CLOSE_WRITE, false, "c/m--step=3/__0_0.distcp", NULL);
    feed(d, r, 6, WATCH_RENAMED, false, "c/m--step=3/.metadata", "c/m--step=3/.metadata.tmp");
    advance(d, r, 30000);
    CHECK(r->n_seals == 0);
    feed(d, r, 30000, WATCH_DELETE, false, "c/m--step=3-unfinished", NULL);
    finish(d, r);
    s = find_seal(r, "c/m--step=3");
    CHECK(s != NULL && s->at_ms == 31000 && s->n_files == 2 && s->step == 3);
    detect_free(d);

    /* torchsnapshot adopts what was written before its metadata. */
    d = make(r, 1000);
    feed(d, r, 0, WATCH_CLOSE_WRITE, false, "s/0/model", NULL);
    CHECK(r->n_notes == 0);
    feed(d, r, 100, WATCH_CLOSE_WRITE, false, "s/.snapshot_metadata", NULL);
    CHECK(has_note(r, "added 's' '0/model'"));
    finish(d, r);
    s = find_seal(r, "s");
    const char *ts[] = {".snapshot_metadata", "0/model"};
    CHECK(files_are(s, ts, 2));
    detect_free(d);
    free(r);
}

/* Configured rules and a forced layout. */
static void test_custom_rules(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect_rule rules[] = {{"runs/*/save-*", "DONE", 50}, {"exports/*", NULL, 0}};
    struct detect_config cfg = {.quiet_ms = 1000, .rules = rules, .n_rules = 2};
    struct detect_callbacks cbs = {r,          cb_added,    cb_renamed, cb_removed, cb_sealed,
                                   cb_dropped, cb_doubtful, cb_late,    cb_ready};
    struct detect *d = NULL;

    CHECK(detect_new(&d, &cfg, &cbs) == 0);
    feed(d, r, 0, WATCH_CLOSE_WRITE, false, "runs/a/save-1/weights.bin", NULL);
    feed(d, r, 5, WATCH_CLOSE_WRITE, false, "runs/a/save-1/sub/x.json", NULL);
    advance(d, r, 10000);
    CHECK(r->n_seals == 0);
    feed(d, r, 10000, WATCH_CLOSE_WRITE, false, "runs/a/save-1/DONE", NULL);
    feed(d, r, 10, WATCH_CLOSE_WRITE, false, "exports/e1/model.safetensors", NULL);
    finish(d, r);
    const struct seal *s = find_seal(r, "runs/a/save-1");
    const char *want[] = {"DONE", "sub/x.json", "weights.bin"};
    CHECK(files_are(s, want, 3) && s->at_ms == 10050 && strcmp(s->layout, "custom") == 0);
    CHECK(s != NULL && strcmp(s->rule, "rule 'runs/*/save-*': 'DONE' closed, 50 ms quiet") == 0);
    s = find_seal(r, "exports/e1");
    CHECK(s != NULL && s->n_files == 1 && strcmp(s->layout, "custom") == 0);
    detect_free(d);

    /* Forced layout: only single files, a sharded folder's shards are checkpoints each. */
    struct detect_config forced = {.quiet_ms = 1000, .layout = "single-file"};
    memset(r, 0, sizeof(*r));
    CHECK(detect_new(&d, &forced, &cbs) == 0);
    feed(d, r, 0, WATCH_CLOSE_WRITE, false, "m/config.json", NULL);
    feed(d, r, 1, WATCH_CLOSE_WRITE, false, "m/model-00001-of-00002.safetensors", NULL);
    finish(d, r);
    CHECK(r->n_seals == 1 && strcmp(r->seals[0].layout, "single-file") == 0);
    detect_free(d);

    struct detect_config bad = {.layout = "nope"};
    CHECK(detect_new(&d, &bad, &cbs) == -EINVAL);
    struct detect_rule empty[] = {{"", NULL, 0}};
    struct detect_config bad2 = {.rules = empty, .n_rules = 1};
    CHECK(detect_new(&d, &bad2, &cbs) == -EINVAL);
    free(r);
}

/* --- synthetic cases ---------------------------------------------------------------------- */

static void test_moved_in_from_outside(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);

    feed(d, r, 100, WATCH_MOVED_IN, false, "lightning/epoch=3.ckpt", NULL);
    CHECK(has_note(r, "added 'lightning/epoch=3.ckpt' 'epoch=3.ckpt'"));
    CHECK(detect_next_deadline_ms(d) == 1100);
    feed(d, r, 600, WATCH_ATTRIB, false, "lightning/epoch=3.ckpt", NULL);
    CHECK(detect_next_deadline_ms(d) == 1600);
    advance(d, r, 1599);
    CHECK(r->n_seals == 0);
    advance(d, r, 1600);
    CHECK(r->n_seals == 1);
    const struct seal *s = find_seal(r, "lightning/epoch=3.ckpt");
    /* Lightning's name template "{epoch}": a save of the lightning layout, naming no step */
    CHECK(s != NULL && s->step == -1 && s->at_ms == 1600);
    CHECK(s != NULL && strcmp(s->layout, "lightning") == 0);
    /* A second save replacing the sealed file is a new checkpoint with a new id. */
    feed(d, r, 5000, WATCH_MOVED_IN, false, "lightning/epoch=3.ckpt", NULL);
    finish(d, r);
    CHECK(r->n_seals == 2 && r->seals[1].id > r->seals[0].id);
    detect_free(d);
    free(r);
}

static void test_tmp_renamed_before_close(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);

    feed(d, r, 0, WATCH_CREATE, false, "w/.tmpAbc", NULL);
    feed(d, r, 1, WATCH_MODIFY, false, "w/.tmpAbc", NULL);
    CHECK(r->n_notes == 0); /* hidden: not a checkpoint file */
    feed(d, r, 10, WATCH_RENAMED, false, "w/step_100.pt", "w/.tmpAbc");
    CHECK(has_note(r, "added 'w/step_100.pt' 'step_100.pt'"));
    /* The writer still holds it: no deadline, no seal however long we wait. */
    CHECK(detect_next_deadline_ms(d) == -1);
    advance(d, r, 60000);
    detect_tick(d, 60000);
    CHECK(r->n_seals == 0);
    feed(d, r, 61000, WATCH_CLOSE_WRITE, false, "w/step_100.pt", NULL);
    CHECK(detect_next_deadline_ms(d) == 62000);
    finish(d, r);
    const struct seal *s = find_seal(r, "w/step_100.pt");
    CHECK(s != NULL && s->at_ms == 62000 && s->step == 100);
    detect_free(d);
    free(r);
}

static void test_open_at_deadline_and_seal_all(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);

    feed(d, r, 0, WATCH_CREATE, true, "run/checkpoint-5", NULL);
    feed(d, r, 1, WATCH_CREATE, false, "run/checkpoint-5/optimizer.pt", NULL);
    feed(d, r, 2, WATCH_CLOSE_WRITE, false, "run/checkpoint-5/trainer_state.json", NULL);
    feed(d, r, 3, WATCH_CLOSE_WRITE, false, "run/checkpoint-6/trainer_state.json", NULL);
    feed(d, r, 4, WATCH_CLOSE_WRITE, false, "run/checkpoint-7/config.json", NULL);
    feed(d, r, 5, WATCH_CLOSE_WRITE, false, "best.safetensors", NULL);
    /* checkpoint-5 is open, checkpoint-7 has no trainer_state.json: only 6 and the file due. */
    advance(d, r, 1004);
    CHECK(r->n_seals == 1 && find_seal(r, "run/checkpoint-6") != NULL);
    CHECK(detect_pending(d) == 3);
    r->now = 1004;
    detect_seal_all_complete(d, 1004);
    CHECK(r->n_seals == 2);
    const struct seal *s = find_seal(r, "best.safetensors");
    CHECK(s != NULL && strstr(s->rule, "shutdown") != NULL);
    advance(d, r, 100000);
    CHECK(r->n_seals == 2);
    CHECK(find_seal(r, "run/checkpoint-6") != NULL);
    feed(d, r, 100001, WATCH_CLOSE_WRITE, false, "run/checkpoint-5/optimizer.pt", NULL);
    r->now = 100002;
    detect_seal_all_complete(d, 100002);
    CHECK(r->n_seals == 3);
    s = find_seal(r, "run/checkpoint-5");
    const char *want[] = {"optimizer.pt", "trainer_state.json"};
    CHECK(files_are(s, want, 2) && s->step == 5 && s->at_ms == 100002);
    CHECK(detect_pending(d) == 1); /* checkpoint-7 stays: no marker */
    detect_free(d);
    free(r);
}

static void test_deletes_and_late_writes(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);

    /* A file deleted before its folder sealed is dropped from it. */
    feed(d, r, 0, WATCH_CLOSE_WRITE, false, "checkpoint-1/a.bin", NULL);
    feed(d, r, 1, WATCH_CLOSE_WRITE, false, "checkpoint-1/b.bin", NULL);
    feed(d, r, 2, WATCH_DELETE, false, "checkpoint-1/b.bin", NULL);
    CHECK(has_note(r, "removed 'checkpoint-1' 'b.bin'"));
    feed(d, r, 3, WATCH_CLOSE_WRITE, false, "checkpoint-1/trainer_state.json", NULL);
    finish(d, r);
    const char *want[] = {"a.bin", "trainer_state.json"};
    CHECK(files_are(find_seal(r, "checkpoint-1"), want, 2));
    /* Later writes into the sealed folder start nothing but are reported; deletes are quiet. */
    feed(d, r, 5000, WATCH_CREATE, false, "checkpoint-1/extra.json", NULL);
    feed(d, r, 5001, WATCH_MODIFY, false, "checkpoint-1/extra.json", NULL);
    feed(d, r, 5002, WATCH_CLOSE_WRITE, false, "checkpoint-1/extra.json", NULL);
    feed(d, r, 5003, WATCH_DELETE, false, "checkpoint-1/a.bin", NULL);
    finish(d, r);
    CHECK(r->n_seals == 1);
    int late = 0;
    for (int i = 0; i < r->n_notes; i++)
        late += strcmp(r->notes[i], "late 'checkpoint-1' 'extra.json'") == 0;
    CHECK(late == 1);
    /* A folder deleted before it sealed is dropped and reported. */
    feed(d, r, 6000, WATCH_CREATE, true, "checkpoint-2", NULL);
    feed(d, r, 6001, WATCH_CLOSE_WRITE, false, "checkpoint-2/model.safetensors", NULL);
    feed(d, r, 6002, WATCH_DELETE, false, "checkpoint-2/model.safetensors", NULL);
    feed(d, r, 6003, WATCH_DELETE, true, "checkpoint-2", NULL);
    CHECK(has_note(r, "dropped 'checkpoint-2' folder deleted"));
    /* A single file deleted while still open drops its candidate; one deleted after its
     * close (rotation: Lightning's top-k) is sealed at once, its pin holds the bytes. */
    feed(d, r, 7000, WATCH_CREATE, false, "x/scratch.pt", NULL);
    feed(d, r, 7001, WATCH_DELETE, false, "x/scratch.pt", NULL);
    CHECK(has_note(r, "dropped 'x/scratch.pt'"));
    feed(d, r, 7100, WATCH_CLOSE_WRITE, false, "x/epoch=1.ckpt", NULL);
    feed(d, r, 7101, WATCH_DELETE, false, "x/epoch=1.ckpt", NULL);
    finish(d, r);
    CHECK(r->n_seals == 2);
    const struct seal *early = find_seal(r, "x/epoch=1.ckpt");
    CHECK(early != NULL && early->at_ms == 7101 && strstr(early->rule, "early") != NULL);
    CHECK(detect_pending(d) == 0);
    /* Paths from outside are checked. */
    struct watch_event bad = {WATCH_CREATE, false, "../etc/passwd", NULL, 0, NULL};
    CHECK(detect_feed(d, &bad, 8000) == -EINVAL);
    bad.path = "/abs";
    CHECK(detect_feed(d, &bad, 8000) == -EINVAL);
    detect_free(d);
    free(r);
}

static void test_folder_renamed_into_place(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);

    /* Older transformers: tmp-checkpoint-7/ written, then renamed; watch rescans the new name. */
    feed(d, r, 0, WATCH_CREATE, true, "tmp-checkpoint-7", NULL);
    feed(d, r, 1, WATCH_CLOSE_WRITE, false, "tmp-checkpoint-7/config.json", NULL);
    feed(d, r, 2, WATCH_CLOSE_WRITE, false, "tmp-checkpoint-7/model.safetensors", NULL);
    feed(d, r, 3, WATCH_CLOSE_WRITE, false, "tmp-checkpoint-7/trainer_state.json", NULL);
    feed(d, r, 10, WATCH_RENAMED, true, "checkpoint-7", "tmp-checkpoint-7");
    feed(d, r, 10, WATCH_SCANNED, false, "checkpoint-7/config.json", NULL);
    feed(d, r, 10, WATCH_SCANNED, false, "checkpoint-7/model.safetensors", NULL);
    feed(d, r, 10, WATCH_SCANNED, false, "checkpoint-7/trainer_state.json", NULL);
    finish(d, r);
    CHECK(r->n_seals == 1);
    const char *want[] = {"config.json", "model.safetensors", "trainer_state.json"};
    const struct seal *s = find_seal(r, "checkpoint-7");
    CHECK(files_are(s, want, 3) && s->at_ms == 1010);
    /* Files a listing found are ready once their folder is complete, not before. */
    CHECK(all_ready_before_seal(r) && ready_at(r, "checkpoint-7", "config.json") == 10);
    /* Its model files made tmp-checkpoint-7 a model folder until the rename. */
    CHECK(has_note(r, "dropped 'tmp-checkpoint-7' folder renamed before it was sealed"));
    /* Renames within a folder carry the pin. */
    feed(d, r, 2000, WATCH_CLOSE_WRITE, false, "checkpoint-8/a.bin", NULL);
    feed(d, r, 2001, WATCH_RENAMED, false, "checkpoint-8/b.bin", "checkpoint-8/a.bin");
    CHECK(has_note(r, "renamed 'checkpoint-8' 'a.bin' -> 'b.bin'"));
    detect_free(d);
    free(r);
}

/* A file being written is not ready; it is once closed, and renamed-in files are at once. */
static void test_ready_files(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);

    feed(d, r, 0, WATCH_CREATE, true, "checkpoint-5", NULL);
    feed(d, r, 1, WATCH_CREATE, false, "checkpoint-5/model.safetensors", NULL);
    feed(d, r, 2, WATCH_MODIFY, false, "checkpoint-5/model.safetensors", NULL);
    CHECK(r->n_ready == 0);
    feed(d, r, 3, WATCH_CLOSE_WRITE, false, "checkpoint-5/model.safetensors", NULL);
    CHECK(r->n_ready == 1 && ready_at(r, "checkpoint-5", "model.safetensors") == 3);
    feed(d, r, 4, WATCH_CREATE, false, "checkpoint-5/optimizer.pt", NULL);
    feed(d, r, 5, WATCH_MOVED_IN, false, "checkpoint-5/rng_state.pth", NULL);
    CHECK(r->n_ready == 2 && ready_at(r, "checkpoint-5", "rng_state.pth") == 5);
    feed(d, r, 6, WATCH_CLOSE_WRITE, false, "checkpoint-5/trainer_state.json", NULL);
    /* the marker is there but optimizer.pt is open: not complete, no sweep over the members */
    CHECK(r->n_ready == 3 && ready_at(r, "checkpoint-5", "optimizer.pt") == -1);
    feed(d, r, 7, WATCH_CLOSE_WRITE, false, "checkpoint-5/optimizer.pt", NULL);
    int after_close = r->n_ready;
    /* optimizer.pt closed, then the complete folder's sweep reports all four once */
    CHECK(after_close == 4 + 4);
    feed(d, r, 8, WATCH_ATTRIB, false, "checkpoint-5/optimizer.pt", NULL);
    CHECK(r->n_ready == after_close);
    finish(d, r);
    CHECK(r->n_seals == 1 && r->seals[0].n_files == 4 && all_ready_before_seal(r));
    /* A sealed checkpoint's later write is late, not ready. */
    feed(d, r, 5000, WATCH_CLOSE_WRITE, false, "checkpoint-5/optimizer.pt", NULL);
    CHECK(r->n_ready == after_close && has_note(r, "late 'checkpoint-5' 'optimizer.pt'"));
    detect_free(d);

    /* At start a listing finds old checkpoints, most of them pushed long ago: nothing is
     * reported ready for them. A folder renamed in is being saved now: its files are. */
    d = make(r, 1000);
    feed(d, r, 0, WATCH_SCANNED, true, "checkpoint-1", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "checkpoint-1/model.safetensors", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "checkpoint-1/trainer_state.json", NULL);
    feed(d, r, 5, WATCH_MOVED_IN, true, "checkpoint-2", NULL);
    feed(d, r, 6, WATCH_SCANNED, false, "checkpoint-2/model.safetensors", NULL);
    feed(d, r, 6, WATCH_SCANNED, false, "checkpoint-2/trainer_state.json", NULL);
    finish(d, r);
    CHECK(r->n_seals == 2 && r->n_ready == 2);
    CHECK(ready_at(r, "checkpoint-1", "model.safetensors") == -1);
    CHECK(ready_at(r, "checkpoint-2", "model.safetensors") == 6);
    detect_free(d);

    /* A folder created now is listed when its watch is added: a file already written and
     * closed by then was never seen closing. Without a write for a while it is ready, long
     * before the marker; one still being written is not. */
    memset(r, 0, sizeof(*r));
    d = make(r, 1000);
    feed(d, r, 0, WATCH_CREATE, true, "checkpoint-9", NULL);
    feed(d, r, 2, WATCH_SCANNED, false, "checkpoint-9/model.safetensors", NULL);
    feed(d, r, 2, WATCH_SCANNED, false, "checkpoint-9/optimizer.pt", NULL);
    feed(d, r, 30, WATCH_MODIFY, false, "checkpoint-9/optimizer.pt", NULL);
    feed(d, r, 100, WATCH_SCANNED, false, "checkpoint-9/scheduler.pt", NULL);
    CHECK(r->n_ready == 0);
    feed(d, r, 400, WATCH_CLOSE_WRITE, false, "checkpoint-9/optimizer.pt", NULL);
    CHECK(ready_at(r, "checkpoint-9", "model.safetensors") == 202);
    CHECK(ready_at(r, "checkpoint-9", "scheduler.pt") == 300);
    CHECK(ready_at(r, "checkpoint-9", "optimizer.pt") == 400 && r->n_ready == 3);
    feed(d, r, 3000, WATCH_CLOSE_WRITE, false, "checkpoint-9/trainer_state.json", NULL);
    finish(d, r);
    CHECK(r->n_seals == 1 && all_ready_before_seal(r));
    detect_free(d);
    free(r);
}

static void test_overflow_and_scan(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);

    feed(d, r, 0, WATCH_SCANNED, true, "checkpoint-3", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "checkpoint-3/trainer_state.json", NULL);
    feed(d, r, 0, WATCH_CREATE, false, "checkpoint-3/optimizer.pt", NULL);
    CHECK(detect_next_deadline_ms(d) == -1);
    /* The close was lost in the overflow: open states are forgotten, quiet restarts. */
    struct watch_event ov = {WATCH_OVERFLOW, false, "", NULL, 0, NULL};
    CHECK(detect_feed(d, &ov, 500) == 0);
    CHECK(detect_next_deadline_ms(d) == 1500);
    feed(d, r, 600, WATCH_SCANNED, false, "checkpoint-3/optimizer.pt", NULL);
    finish(d, r);
    const char *want[] = {"optimizer.pt", "trainer_state.json"};
    CHECK(files_are(find_seal(r, "checkpoint-3"), want, 2));
    detect_free(d);
    free(r);
}

/* Zero gaps: Orbax renamed its temporary folder before the watch on the step folder existed, so
 * the scan finds it under its final name; its _CHECKPOINT_METADATA says it is Orbax's, the final
 * name that it is finalised. The same metadata seen written in place waits for
 * commit_success.txt (GCS-style saves). A rename event read after such a scan marks it too. */
static void test_orbax_found_by_scan(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 100);
    const char *want[] = {"_CHECKPOINT_METADATA", "checkpoint", "d/0.0"};

    feed(d, r, 0, WATCH_CREATE, true, "100", NULL);
    feed(d, r, 0, WATCH_SCANNED, true, "100/default", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "100/default/checkpoint", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "100/default/_CHECKPOINT_METADATA", NULL);
    feed(d, r, 0, WATCH_SCANNED, true, "100/default/d", NULL);
    feed(d, r, 1, WATCH_SCANNED, false, "100/default/d/0.0", NULL);
    finish(d, r);
    const struct seal *s = find_seal(r, "100/default");
    CHECK(r->n_seals == 1 && s != NULL && strcmp(s->layout, "orbax") == 0 && s->at_ms == 101);
    CHECK(files_are(s, want, 3));
    CHECK(s != NULL && strstr(s->rule, "found finalised") != NULL);

    /* In place: no seal without commit_success.txt. */
    feed(d, r, 1000, WATCH_CREATE, true, "300", NULL);
    feed(d, r, 1000, WATCH_CLOSE_WRITE, false, "300/_CHECKPOINT_METADATA", NULL);
    feed(d, r, 1001, WATCH_CLOSE_WRITE, false, "300/checkpoint", NULL);
    advance(d, r, 5000);
    CHECK(r->n_seals == 1);
    feed(d, r, 5000, WATCH_CLOSE_WRITE, false, "300/commit_success.txt", NULL);
    finish(d, r);
    s = find_seal(r, "300");
    CHECK(r->n_seals == 2 && s != NULL && s->n_files == 3 && s->at_ms == 5100);

    /* The scan saw the final name, then the queued events of the step folder arrive. */
    feed(d, r, 6000, WATCH_CREATE, true, "200", NULL);
    feed(d, r, 6000, WATCH_SCANNED, true, "200/default", NULL);
    feed(d, r, 6000, WATCH_SCANNED, false, "200/default/checkpoint", NULL);
    feed(d, r, 6001, WATCH_CREATE, true, "200/default.orbax-checkpoint-tmp-1", NULL);
    feed(d, r, 6002, WATCH_RENAMED, true, "200/default", "200/default.orbax-checkpoint-tmp-1");
    finish(d, r);
    s = find_seal(r, "200/default");
    CHECK(r->n_seals == 3 && s != NULL && s->n_files == 1 && s->at_ms == 6102);
    CHECK(s != NULL && strstr(s->rule, "renamed from its") != NULL);
    CHECK(detect_pending(d) == 0);
    detect_free(d);
    free(r);
}

/* Zero gaps on a busy machine: a scan found step_100.pt while its writer was still at it; the
 * loop was busy past the quiet period, then read the writer's MODIFY and CLOSE_WRITE. Those may
 * predate the deadline: they postpone the seal (once, after the close), never follow it. */
static void test_late_read_events(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 100);
    struct watch_event ev = {WATCH_MODIFY, false, "ckpt/step_100.pt", NULL, 0, NULL};

    feed(d, r, 0, WATCH_SCANNED, true, "ckpt", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "ckpt/step_100.pt", NULL);
    CHECK(detect_next_deadline_ms(d) == 100);
    r->now = 300; /* the timer is late; the caller read the queue (watch_read_now) first */
    CHECK(detect_feed(d, &ev, 300) == 0);
    ev.kind = WATCH_CLOSE_WRITE;
    CHECK(detect_feed(d, &ev, 300) == 0);
    CHECK(r->n_seals == 0);
    finish(d, r);
    CHECK(r->n_seals == 1 && r->seals[0].at_ms == 400);
    CHECK(!has_note(r, "dropped"));
    detect_free(d);
    free(r);
}

/* NeMo's -unfinished marker was removed before the folder was first seen: its distributed
 * checkpoint makes it a torch-dcp folder, and what NeMo wrote beside it (context/) is part of it.
 */
static void test_nemo_found_unmarked(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 100);
    const char *want[] = {".metadata", "__0_0.distcp", "context/io.json"};

    feed(d, r, 0, WATCH_SCANNED, true, "ckpts/m--step=200", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "ckpts/m--step=200/__0_0.distcp", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "ckpts/m--step=200/.metadata", NULL);
    feed(d, r, 0, WATCH_SCANNED, true, "ckpts/m--step=200/context", NULL);
    feed(d, r, 1, WATCH_SCANNED, false, "ckpts/m--step=200/context/io.json", NULL);
    finish(d, r);
    const struct seal *s = find_seal(r, "ckpts/m--step=200");
    CHECK(r->n_seals == 1 && s != NULL && strcmp(s->layout, "torch-dcp") == 0);
    CHECK(files_are(s, want, 3));
    detect_free(d);
    free(r);
}

/* Zero gaps: rotation was deleting checkpoint_0 when a scan first saw it. The scan lists what
 * is left; a delete then must not seal it (files gone before the listing left no trace). A
 * folder seen written before its rotation is still sealed early, whole. */
static void test_rotation_under_way_at_scan(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 100);

    feed(d, r, 0, WATCH_SCANNED, true, "checkpoints/checkpoint_0", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "checkpoints/checkpoint_0/optimizer.bin", NULL);
    feed(d, r, 1, WATCH_DELETE, false, "checkpoints/checkpoint_0/optimizer.bin", NULL);
    feed(d, r, 2, WATCH_DELETE, true, "checkpoints/checkpoint_0", NULL);
    finish(d, r);
    CHECK(r->n_seals == 0);
    CHECK(has_note(r, "dropped 'checkpoints/checkpoint_0' deleted while first seen by a scan"));
    feed(d, r, 1000, WATCH_CREATE, true, "checkpoints/checkpoint_1", NULL);
    feed(d, r, 1000, WATCH_CLOSE_WRITE, false, "checkpoints/checkpoint_1/model.safetensors", NULL);
    feed(d, r, 1001, WATCH_CLOSE_WRITE, false, "checkpoints/checkpoint_1/optimizer.bin", NULL);
    feed(d, r, 1002, WATCH_DELETE, false, "checkpoints/checkpoint_1/model.safetensors", NULL);
    const struct seal *s = find_seal(r, "checkpoints/checkpoint_1");
    CHECK(r->n_seals == 1 && s != NULL && s->n_files == 2 && s->at_ms == 1002);
    /* A subfolder made, filled and removed before it could be listed: contents unknown. */
    feed(d, r, 2000, WATCH_CREATE, true, "ckpts/m--step=9", NULL);
    feed(d, r, 2000, WATCH_CLOSE_WRITE, false, "ckpts/m--step=9-unfinished", NULL);
    feed(d, r, 2000, WATCH_CLOSE_WRITE, false, "ckpts/m--step=9/__0_0.distcp", NULL);
    feed(d, r, 2001, WATCH_CREATE, true, "ckpts/m--step=9/context", NULL);
    feed(d, r, 2001, WATCH_UNLISTED, true, "ckpts/m--step=9/context", NULL);
    feed(d, r, 2002, WATCH_DELETE, false, "ckpts/m--step=9-unfinished", NULL);
    feed(d, r, 2003, WATCH_DELETE, false, "ckpts/m--step=9/__0_0.distcp", NULL);
    feed(d, r, 2004, WATCH_DELETE, true, "ckpts/m--step=9", NULL);
    finish(d, r);
    CHECK(r->n_seals == 1 && find_seal(r, "ckpts/m--step=9") == NULL);
    CHECK(has_note(r, "doubtful 'ckpts/m--step=9' a folder in it was gone before it could be"));
    /* Listed when its files were already deleted (the daemon behind the rotation): the
     * subfolder looks empty, not unknown, but its rotation follows the listing at once. */
    feed(d, r, 3000, WATCH_CREATE, true, "ckpts/m--step=10", NULL);
    feed(d, r, 3000, WATCH_CLOSE_WRITE, false, "ckpts/m--step=10-unfinished", NULL);
    feed(d, r, 3000, WATCH_CLOSE_WRITE, false, "ckpts/m--step=10/__0_0.distcp", NULL);
    feed(d, r, 3001, WATCH_CREATE, true, "ckpts/m--step=10/context", NULL);
    feed(d, r, 3002, WATCH_DELETE, false, "ckpts/m--step=10-unfinished", NULL);
    feed(d, r, 3003, WATCH_DELETE, false, "ckpts/m--step=10/__0_0.distcp", NULL);
    feed(d, r, 3004, WATCH_DELETE, true, "ckpts/m--step=10/context", NULL);
    feed(d, r, 3005, WATCH_DELETE, true, "ckpts/m--step=10", NULL);
    finish(d, r);
    CHECK(r->n_seals == 1 && find_seal(r, "ckpts/m--step=10") == NULL);
    CHECK(has_note(r, "doubtful 'ckpts/m--step=10' a folder in it was listed just before"));
    /* The same rotation long after the subfolder was listed (and its file seen written). */
    feed(d, r, 4000, WATCH_CREATE, true, "ckpts/m--step=11", NULL);
    feed(d, r, 4000, WATCH_CLOSE_WRITE, false, "ckpts/m--step=11-unfinished", NULL);
    feed(d, r, 4000, WATCH_CLOSE_WRITE, false, "ckpts/m--step=11/__0_0.distcp", NULL);
    feed(d, r, 4001, WATCH_CREATE, true, "ckpts/m--step=11/context", NULL);
    feed(d, r, 4002, WATCH_CLOSE_WRITE, false, "ckpts/m--step=11/context/io.json", NULL);
    feed(d, r, 4003, WATCH_DELETE, false, "ckpts/m--step=11-unfinished", NULL);
    feed(d, r, 4080, WATCH_DELETE, false, "ckpts/m--step=11/__0_0.distcp", NULL);
    s = find_seal(r, "ckpts/m--step=11");
    CHECK(r->n_seals == 2 && s != NULL && s->n_files == 2 && s->at_ms == 4080);
    detect_free(d);
    free(r);
}

/* --- watches added late ------------------------------------------------------------------ */

struct fs_ent {
    char path[256];
    bool dir;
};

static bool is_under(const char *path, const char *dir)
{
    size_t k = strlen(dir);
    return strncmp(path, dir, k) == 0 && path[k] == '/';
}

static void fs_del(struct fs_ent *fs, int *n, const char *path)
{
    for (int k = 0; k < *n;) {
        if (strcmp(fs[k].path, path) == 0 || is_under(fs[k].path, path)) {
            memmove(&fs[k], &fs[k + 1], (size_t)(*n - k - 1) * sizeof(*fs));
            (*n)--;
        } else {
            k++;
        }
    }
}

static void fs_add(struct fs_ent *fs, int *n, const char *path, bool dir)
{
    fs_del(fs, n, path);
    if (*n < 1024) {
        snprintf(fs[*n].path, sizeof(fs[0].path), "%s", path);
        fs[(*n)++].dir = dir;
    }
}

/* What exists after a[0..upto), in the order it appeared (a directory listing's order). */
static int fs_after(const struct tev *a, int n, int upto, struct fs_ent *fs)
{
    bool consumed[1024] = {false};
    int count = 0;
    for (int i = 0; i < upto; i++) {
        const struct tev *e = &a[i];
        bool dir = (e->flags & F_DIR) != 0;
        if (consumed[i] || (e->flags & F_SELF))
            continue;
        if (e->flags & F_CREATE)
            fs_add(fs, &count, e->path, dir);
        if (e->flags & F_DELETE)
            fs_del(fs, &count, e->path);
        if (e->flags & F_FROM) {
            int j;
            for (j = i + 1; j < n; j++) {
                if ((a[j].flags & F_TO) && a[j].cookie == e->cookie)
                    break;
            }
            if (j < n) {
                consumed[j] = true;
                size_t k = strlen(e->path);
                for (int m = 0; m < count; m++) {
                    char np[256];
                    if (strcmp(fs[m].path, e->path) != 0 && !is_under(fs[m].path, e->path))
                        continue;
                    snprintf(np, sizeof(np), "%s%s", a[j].path, fs[m].path + k);
                    snprintf(fs[m].path, sizeof(fs[m].path), "%s", np);
                }
            } else {
                fs_del(fs, &count, e->path);
            }
        }
        if ((e->flags & F_TO) && !consumed[i])
            fs_add(fs, &count, e->path, dir);
    }
    return count;
}

/* a[i] is a MOVED_TO whose MOVED_FROM is a[i - 1]: nothing can come between them. */
static bool splits_rename(const struct tev *a, int i)
{
    return i > 0 && (a[i].flags & F_TO) && (a[i - 1].flags & F_FROM) &&
           a[i - 1].cookie == a[i].cookie;
}

/* The loop reads dir's CREATE (a[at]) late: the watch on it exists from a[watch_at] on (what
 * happened inside before that made no event), its listing shows the tree as it was before
 * a[list_at] and watches the folders below from then on, and every later event is read after
 * that listing. */
static void replay_late(struct detect *d, struct rec *r, const struct tev *a, int n, int at,
                        int watch_at, int list_at)
{
    static struct fs_ent fs[1024];
    bool consumed[1024] = {false};
    const char *dir = a[at].path;
    int64_t listed_ms = a[list_at - 1].ms;

    for (int i = 0; i <= at; i++)
        replay_one(d, r, a, n, i, consumed, 0);
    int count = fs_after(a, n, list_at, fs);
    bool listed = false;
    for (int k = 0; k < count; k++) {
        listed = listed || strcmp(fs[k].path, dir) == 0;
        if (is_under(fs[k].path, dir))
            feed(d, r, listed_ms, WATCH_SCANNED, fs[k].dir, fs[k].path, NULL);
    }
    if (!listed)
        feed(d, r, listed_ms, WATCH_UNLISTED, true, dir, NULL);
    for (int i = at + 1; i < n; i++) {
        /* Deeper folders are watched from their listing on (watch.c lists them at once). */
        bool deeper = is_under(a[i].path, dir) && strchr(a[i].path + strlen(dir) + 1, '/');
        if ((i < watch_at && is_under(a[i].path, dir)) || (i < list_at && deeper)) {
            if (a[i].flags & F_FROM) /* its MOVED_TO is lost with it */
                for (int j = i + 1; j < n; j++)
                    if ((a[j].flags & F_TO) && a[j].cookie == a[i].cookie)
                        consumed[j] = true;
            continue;
        }
        replay_one(d, r, a, n, i, consumed, listed_ms);
        if ((a[i].flags & F_DIR) && (a[i].flags & (F_FROM | F_TO))) {
            /* watch.c lists a folder renamed (or moved) in */
            int upto =
                (a[i].flags & F_FROM) && i + 1 < n && splits_rename(a, i + 1) ? i + 2 : i + 1;
            const char *to = upto == i + 2 ? a[i + 1].path : a[i].path;
            count = fs_after(a, n, upto, fs);
            for (int k = 0; k < count; k++) {
                if (is_under(fs[k].path, to))
                    feed(d, r, a[i].ms > listed_ms ? a[i].ms : listed_ms, WATCH_SCANNED, fs[k].dir,
                         fs[k].path, NULL);
            }
        }
    }
    finish(d, r);
}

static int seal_count(const struct rec *r, const char *name)
{
    int count = 0;
    for (int i = 0; i < r->n_seals; i++)
        count += strcmp(r->seals[i].name, name) == 0;
    return count;
}

/* A busy loop reads a new directory's CREATE late: its first writes made no event and its
 * listing, taken later still, shows files half-way through a save (temporaries, names renamed
 * since). Whatever the moments, every checkpoint that is still there at the end is sealed, as it
 * is when the watch comes at once. */
static void test_late_watch(const char *trace, int64_t quiet)
{
    static struct fs_ent end[1024];
    struct rec *base = calloc(1, sizeof(*base)), *r = calloc(1, sizeof(*r));
    struct tev *a;
    int n = load_trace(trace, &a), cases = 0, failed = 0;
    struct detect *d = make(base, quiet);

    replay(d, base, a, n);
    detect_free(d);
    int n_end = fs_after(a, n, n, end);
    for (int at = 0; at < n; at++) {
        if ((a[at].flags & (F_CREATE | F_DIR)) != (F_CREATE | F_DIR))
            continue;
        for (int w = at + 1; w <= n && w <= at + 40; w++) {
            if (w < n && splits_rename(a, w))
                continue;
            for (int s = w; s <= n && s <= w + 12; s++) {
                if (s < n && splits_rename(a, s))
                    continue;
                d = make(r, quiet);
                replay_late(d, r, a, n, at, w, s);
                cases++;
                for (int k = 0; k < base->n_seals; k++) {
                    const char *name = base->seals[k].name;
                    bool there = false;
                    for (int m = 0; m < n_end && !there; m++)
                        there = strcmp(end[m].path, name) == 0;
                    if (!there || seal_count(r, name) > 0)
                        continue;
                    if (failed++ < 5)
                        fprintf(stderr,
                                "%s: '%s' not sealed when the watch on '%s' came before event %d "
                                "and its listing before event %d\n",
                                trace, name, a[at].path, w, s);
                }
                /* Never before the last write into it (a file replaced after its seal aside:
                 * a Lightning last.ckpt seen without its save is such a file) */
                for (int k = 0; k < r->n_seals; k++) {
                    const struct seal *sl = &r->seals[k];
                    int64_t last = last_write(a, n, sl->name);
                    if (seal_count(base, sl->name) > 1 || sl->at_ms >= last ||
                        strstr(sl->name, "last.ckpt") != NULL)
                        continue;
                    if (failed++ < 5)
                        fprintf(stderr,
                                "%s: '%s' sealed at %lld, before its last write at %lld, when the "
                                "watch on '%s' came before event %d and its listing before %d\n",
                                trace, sl->name, (long long)sl->at_ms, (long long)last, a[at].path,
                                w, s);
                }
                detect_free(d);
            }
        }
    }
    CHECK(cases > 0);
    CHECK(failed == 0);
    free(a);
    free(r);
    free(base);
}

static void test_late_watches(void)
{
    static const char *const traces[] = {"hf-trainer-5.17-save-steps.jsonl",
                                         "hf-save-pretrained-sharded.jsonl",
                                         "torch-dcp-save.jsonl",
                                         "synthetic/trainer-load-best.jsonl",
                                         "synthetic/trainer-save-epoch.jsonl",
                                         "synthetic/trainer-peft-adapter.jsonl",
                                         "synthetic/trainer-save-only-model.jsonl",
                                         "synthetic/deepspeed-save-checkpoint.jsonl",
                                         "synthetic/orbax-save.jsonl",
                                         "synthetic/nemo-unfinished-marker.jsonl",
                                         "synthetic/torchsnapshot-take.jsonl",
                                         "synthetic/accelerate-save-state.jsonl",
                                         "synthetic/lightning-model-checkpoint.jsonl",
                                         "synthetic/plain-torch-save.jsonl"};
    for (size_t i = 0; i < sizeof(traces) / sizeof(traces[0]); i++)
        test_late_watch(traces[i], 200);
    split_renames = true;
    for (size_t i = 0; i < sizeof(traces) / sizeof(traces[0]); i++)
        test_late_watch(traces[i], 200);
    split_renames = false;
}

static void test_root_waits_for_weights(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);

    /* A tokenizer saved at the start of a run is not the model. */
    feed(d, r, 0, WATCH_CLOSE_WRITE, false, "tokenizer.json", NULL);
    feed(d, r, 1, WATCH_CLOSE_WRITE, false, "training_args.bin", NULL);
    advance(d, r, 50000);
    CHECK(r->n_seals == 0);
    CHECK(detect_next_deadline_ms(d) == -1);
    /* Loose weights with other names are checkpoints of their own. */
    feed(d, r, 50000, WATCH_CLOSE_WRITE, false, "step_200.pt", NULL);
    feed(d, r, 60000, WATCH_CREATE, false, "pytorch_model.bin", NULL);
    feed(d, r, 60500, WATCH_CLOSE_WRITE, false, "pytorch_model.bin", NULL);
    finish(d, r);
    CHECK(r->n_seals == 2);
    const struct seal *s = find_seal(r, "step_200.pt");
    CHECK(s != NULL && s->step == 200 && strcmp(s->layout, "single-file") == 0);
    s = find_seal(r, "");
    const char *want[] = {"pytorch_model.bin", "tokenizer.json", "training_args.bin"};
    CHECK(files_are(s, want, 3) && s->at_ms == 61500);
    CHECK(s != NULL && strcmp(s->rule, "model weights present, 1000 ms quiet") == 0);
    /* Unknown ATTRIB (e.g. after a delete) brings nothing back. */
    feed(d, r, 70000, WATCH_ATTRIB, false, "model.safetensors", NULL);
    CHECK(detect_pending(d) == 0);
    detect_free(d);
    free(r);
}

/* --- Lightning ModelCheckpoint ------------------------------------------------------------ */

#define LDIR "lightning_logs/version_0/checkpoints/"

static bool has_file(const struct seal *s, const char *file)
{
    for (size_t i = 0; s != NULL && i < s->n_files && i < 32; i++)
        if (strcmp(s->files[i], file) == 0)
            return true;
    return false;
}

/* The synthetic trace: epoch files and last.ckpt renamed in, the last save copied in. */
static void test_lightning_trace(int64_t quiet)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct tev *a;
    int n = load_trace("synthetic/lightning-model-checkpoint.jsonl", &a);
    struct detect *d = make(r, quiet);

    replay(d, r, a, n);
    const struct seal *e0 = find_seal(r, LDIR "epoch=0-step=50.ckpt");
    const struct seal *e1 = find_seal(r, LDIR "epoch=1-step=100.ckpt");
    const struct seal *e2 = find_seal(r, LDIR "epoch=2-step=150.ckpt");
    CHECK(e0 != NULL && e1 != NULL && e2 != NULL);
    CHECK(e0 != NULL && strcmp(e0->layout, "lightning") == 0 && e0->step == 50);
    /* last.ckpt comes 100 ms after epoch 0's file: within a 1000 ms quiet period it is part of
     * that save; with 100 ms the save is sealed first and last.ckpt is a checkpoint alone */
    CHECK(has_file(e0, "epoch=0-step=50.ckpt") && has_file(e0, "last.ckpt") == (quiet > 100));
    CHECK(seal_count(r, LDIR "last.ckpt") == (quiet > 100 ? 0 : 1));
    CHECK(e1 != NULL && e1->n_files == 2 && has_file(e1, "last.ckpt") && e1->step == 100);
    /* the last save never got its last.ckpt (the trace ends): it waited, then went without */
    CHECK(e2 != NULL && e2->n_files == 1 && strstr(e2->rule, "no last.ckpt came") != NULL);
    CHECK(r->n_seals == (quiet > 100 ? 3 : 4));
    for (int i = 0; i < r->n_seals; i++)
        CHECK(strstr(r->seals[i].rule, "coalesced") == NULL);
    CHECK(all_ready_before_seal(r));
    CHECK(detect_pending(d) == 0);
    detect_free(d);
    free(a);
    free(r);
}

/* save_top_k=1, save_last=True, saves faster than the quiet period: each save is one checkpoint
 * with its own last.ckpt version, sealed when the next save begins; none is coalesced. */
static void test_lightning_fast_saves(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);
    static const char *const epochs[] = {LDIR "epoch=0-step=10.ckpt", LDIR "epoch=1-step=20.ckpt",
                                         LDIR "epoch=2-step=30.ckpt", LDIR "epoch=3-step=40.ckpt"};

    for (int k = 0; k < 4; k++) {
        int64_t t = 300 * k;
        feed(d, r, t, WATCH_MOVED_IN, false, epochs[k], NULL);
        feed(d, r, t + 1, WATCH_ATTRIB, false, epochs[k], NULL);
        if (k > 0)
            feed(d, r, t + 2, WATCH_DELETE, false, epochs[k - 1], NULL);
        feed(d, r, t + 100, WATCH_MOVED_IN, false, LDIR "last.ckpt", NULL);
        if (k > 0) /* sealed the moment the next save began, with its own last.ckpt */
            CHECK(r->n_seals == k && r->seals[k - 1].at_ms == t);
    }
    finish(d, r);
    CHECK(r->n_seals == 4);
    for (int k = 0; k < 4; k++) {
        const struct seal *s = find_seal(r, epochs[k]);
        CHECK(s != NULL && s->n_files == 2 && has_file(s, "last.ckpt"));
        CHECK(s != NULL && s->step == 10 * (k + 1));
        CHECK(s != NULL && strstr(s->rule, "coalesced") == NULL);
        CHECK(s != NULL && (k == 3 ? strstr(s->rule, "and last.ckpt written, 1000 ms quiet")
                                   : strstr(s->rule, "the next save began")) != NULL);
    }
    /* each version of last.ckpt was pinned under its own save */
    int added = 0;
    for (int i = 0; i < r->n_notes; i++)
        added += strncmp(r->notes[i], "added", 5) == 0 && strstr(r->notes[i], "' 'last.ckpt'");
    CHECK(added == 4);
    CHECK(!has_note(r, "dropped"));
    detect_free(d);
    free(r);
}

/* A folder that had a last.ckpt: the next save waits for its own, however long the quiet
 * period is exceeded (a big model takes long to serialise again), at most a minute. */
static void test_lightning_waits_for_last(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);

    feed(d, r, 0, WATCH_MOVED_IN, false, "ck/epoch=0-step=5.ckpt", NULL);
    feed(d, r, 10, WATCH_MOVED_IN, false, "ck/last.ckpt", NULL);
    advance(d, r, 1010);
    CHECK(r->n_seals == 1 && r->seals[0].n_files == 2);
    feed(d, r, 20000, WATCH_MOVED_IN, false, "ck/epoch=1-step=10.ckpt", NULL);
    advance(d, r, 25000);
    CHECK(r->n_seals == 1); /* waiting for last.ckpt */
    feed(d, r, 25000, WATCH_MOVED_IN, false, "ck/last.ckpt", NULL);
    advance(d, r, 26000);
    CHECK(r->n_seals == 2 && r->seals[1].n_files == 2 && r->seals[1].at_ms == 26000);
    /* no last.ckpt this time (save_last turned off, a stale one there): sealed after a minute */
    feed(d, r, 30000, WATCH_MOVED_IN, false, "ck/epoch=2-step=15.ckpt", NULL);
    CHECK(detect_next_deadline_ms(d) == 90000);
    advance(d, r, 89999);
    CHECK(r->n_seals == 2);
    advance(d, r, 91000);
    CHECK(r->n_seals == 3 && r->seals[2].n_files == 1 && r->seals[2].at_ms == 90000);
    CHECK(strstr(r->seals[2].rule, "no last.ckpt came") != NULL);
    /* a flush or shutdown does not wait for it either */
    feed(d, r, 100000, WATCH_MOVED_IN, false, "ck/epoch=3-step=20.ckpt", NULL);
    detect_seal_all_complete(d, 100001);
    CHECK(r->n_seals == 4 && r->seals[3].n_files == 1);
    detect_free(d);
    free(r);
}

/* save_last="link": last.ckpt is removed and made again as a symlink: a CREATE, never written
 * nor closed. It is part of the save (its pin holds the file it names). */
static void test_lightning_symlink_last(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 500);

    feed(d, r, 0, WATCH_CREATE, false, "ck/epoch=0-step=5.ckpt", NULL);
    feed(d, r, 5, WATCH_MODIFY, false, "ck/epoch=0-step=5.ckpt", NULL);
    feed(d, r, 20, WATCH_CLOSE_WRITE, false, "ck/epoch=0-step=5.ckpt", NULL);
    feed(d, r, 21, WATCH_CREATE, false, "ck/last.ckpt", NULL); /* os.symlink */
    finish(d, r);
    CHECK(r->n_seals == 1 && r->seals[0].n_files == 2 && r->seals[0].at_ms == 521);
    feed(d, r, 5000, WATCH_CREATE, false, "ck/epoch=1-step=10.ckpt", NULL);
    feed(d, r, 5010, WATCH_CLOSE_WRITE, false, "ck/epoch=1-step=10.ckpt", NULL);
    feed(d, r, 5011, WATCH_DELETE, false, "ck/epoch=0-step=5.ckpt", NULL);
    feed(d, r, 5012, WATCH_DELETE, false, "ck/last.ckpt", NULL);
    feed(d, r, 5013, WATCH_CREATE, false, "ck/last.ckpt", NULL);
    finish(d, r);
    CHECK(r->n_seals == 2 && r->seals[1].n_files == 2 && has_file(&r->seals[1], "last.ckpt"));
    CHECK(r->seals[1].at_ms == 5513);
    /* a last.ckpt copied in (created, then written) is waited for as any file */
    feed(d, r, 9000, WATCH_MOVED_IN, false, "ck/epoch=2-step=15.ckpt", NULL);
    feed(d, r, 9001, WATCH_DELETE, false, "ck/last.ckpt", NULL);
    feed(d, r, 9100, WATCH_CREATE, false, "ck/last.ckpt", NULL);
    feed(d, r, 9101, WATCH_MODIFY, false, "ck/last.ckpt", NULL);
    advance(d, r, 20000);
    CHECK(r->n_seals == 2);
    feed(d, r, 20000, WATCH_CLOSE_WRITE, false, "ck/last.ckpt", NULL);
    finish(d, r);
    CHECK(r->n_seals == 3 && r->seals[2].n_files == 2 && r->seals[2].at_ms == 20500);
    detect_free(d);
    free(r);
}

/* save_top_k=0, save_last=True: only last.ckpt, replaced at every save: each version is a
 * checkpoint, sealed when the next replaces it rather than coalesced into it. */
static void test_lightning_last_only(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);

    for (int k = 0; k < 3; k++)
        feed(d, r, 300 * k, WATCH_MOVED_IN, false, "ck/last.ckpt", NULL);
    finish(d, r);
    CHECK(seal_count(r, "ck/last.ckpt") == 3);
    for (int i = 0; i < r->n_seals; i++) {
        CHECK(strcmp(r->seals[i].layout, "lightning") == 0 && r->seals[i].step == -1);
        CHECK(strstr(r->seals[i].rule, "coalesced") == NULL);
    }
    CHECK(r->seals[0].at_ms == 300 && r->seals[1].at_ms == 600 && r->seals[2].at_ms == 1600);
    CHECK(strstr(r->seals[0].rule, "a newer version replaced it") != NULL);
    /* other *.ckpt names stay single files unless --layout lightning */
    feed(d, r, 5000, WATCH_CLOSE_WRITE, false, "ck/model.ckpt", NULL);
    finish(d, r);
    CHECK(find_seal(r, "ck/model.ckpt") != NULL &&
          strcmp(find_seal(r, "ck/model.ckpt")->layout, "single-file") == 0);
    detect_free(d);
    struct detect_config forced = {.quiet_ms = 1000, .layout = "lightning"};
    struct detect_callbacks cbs = {r,          cb_added,    cb_renamed, cb_removed, cb_sealed,
                                   cb_dropped, cb_doubtful, cb_late,    cb_ready};
    memset(r, 0, sizeof(*r));
    CHECK(detect_new(&d, &forced, &cbs) == 0);
    feed(d, r, 0, WATCH_MOVED_IN, false, "ck/my-model-0.25.ckpt", NULL);
    feed(d, r, 10, WATCH_MOVED_IN, false, "ck/last.ckpt", NULL);
    finish(d, r);
    CHECK(r->n_seals == 1 && r->seals[0].n_files == 2 &&
          strcmp(r->seals[0].layout, "lightning") == 0);
    detect_free(d);
    free(r);
}

/* --- checkpoints the journal owns --------------------------------------------------------- */

static void test_owned(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct detect *d = make(r, 1000);
    const char *trainer[] = {"model.safetensors", "trainer_state.json"};
    const char *single[] = {"step_100.pt"};
    const char *light[] = {"epoch=1-step=20.ckpt", "last.ckpt"};
    char dir[64];

    CHECK(detect_own(d, "checkpoint-10", "transformers-trainer", trainer, 2) == 0);
    CHECK(detect_own(d, "ckpt/step_100.pt", "single-file", single, 1) == 0);
    CHECK(detect_own(d, "ck/epoch=1-step=20.ckpt", "lightning", light, 2) == 0);
    CHECK(detect_own(d, "x", "explicit-dir", single, 1) == -EINVAL);
    /* the scan at start finds them all: the owned ones are not detected again */
    feed(d, r, 0, WATCH_SCANNED, true, "checkpoint-10", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "checkpoint-10/model.safetensors", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "checkpoint-10/trainer_state.json", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "checkpoint-10/.hidden", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "ckpt/step_100.pt", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "ck/epoch=1-step=20.ckpt", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "ck/last.ckpt", NULL);
    feed(d, r, 0, WATCH_SCANNED, true, "checkpoint-20", NULL);
    feed(d, r, 0, WATCH_SCANNED, false, "checkpoint-20/trainer_state.json", NULL);
    CHECK(r->n_notes == 1 && has_note(r, "added 'checkpoint-20' 'trainer_state.json'"));
    CHECK(detect_pending(d) == 1);
    finish(d, r);
    CHECK(r->n_seals == 1 && strcmp(r->seals[0].name, "checkpoint-20") == 0);
    /* an overflow's rescan skips them too */
    feed(d, r, 5000, WATCH_OVERFLOW, false, "", NULL);
    feed(d, r, 5000, WATCH_SCANNED, false, "ckpt/step_100.pt", NULL);
    CHECK(detect_pending(d) == 0);
    /* written again (an event): a new save under that name, detected as usual */
    feed(d, r, 6000, WATCH_CLOSE_WRITE, false, "ckpt/step_100.pt", NULL);
    finish(d, r);
    CHECK(seal_count(r, "ckpt/step_100.pt") == 1);
    CHECK(detect_layout_dir("lightning", "a/b/last.ckpt", dir, sizeof(dir)) == 0 &&
          strcmp(dir, "a/b") == 0);
    CHECK(detect_layout_dir("orbax", "100/default", dir, sizeof(dir)) == 0 &&
          strcmp(dir, "100/default") == 0);
    CHECK(detect_layout_dir("model-root", "", dir, sizeof(dir)) == 0 && dir[0] == '\0');
    CHECK(detect_layout_dir("single-file", "w.pt", dir, sizeof(dir)) == 0 && dir[0] == '\0');
    CHECK(detect_layout_dir("custom", "runs/a", dir, sizeof(dir)) == 0 &&
          strcmp(dir, "runs/a") == 0);
    detect_free(d);
    free(r);
}

int main(void)
{
    test_root_waits_for_weights();
    test_trainer_trace(1000);
    test_trainer_trace(100);
    test_sharded_trace();
    test_sharded_incomplete();
    test_model_dir_whole();
    test_dcp_trace();
    test_dcp_ranks();
    test_synthetic_traces(1000);
    test_synthetic_traces(100);
    test_lightning_trace(1000);
    test_lightning_trace(100);
    test_lightning_fast_saves();
    test_lightning_waits_for_last();
    test_lightning_symlink_last();
    test_lightning_last_only();
    test_owned();
    test_rule_details();
    test_custom_rules();
    test_moved_in_from_outside();
    test_tmp_renamed_before_close();
    test_open_at_deadline_and_seal_all();
    test_deletes_and_late_writes();
    test_folder_renamed_into_place();
    test_ready_files();
    test_overflow_and_scan();
    test_orbax_found_by_scan();
    test_late_read_events();
    test_nemo_found_unmarked();
    test_rotation_under_way_at_scan();
    test_late_watches();
    return check_report("test_detect");
}
