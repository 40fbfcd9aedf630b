/* strategy.c - transformers' hub strategies: every_save (a checkpoint's model files at the repo
 * root), checkpoint (+ the whole latest checkpoint under last-checkpoint/), all_checkpoints (+
 * each checkpoint under its own folder), end (only the end of training); include/exclude globs;
 * which checkpoint folders --keep-last retires. Lightning's files keep their place in the tree
 * under every strategy but end. */
#include "strategy.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What Trainer keeps only to resume training: it never pushes these to the repo root. */
static const char *const training_state_patterns[] = {
    "optimizer.pt",  "optimizer.bin",   "optimizer*.safetensors", "scheduler.pt",   "scaler.pt",
    "rng_state.pth", "rng_state_*.pth", "trainer_state.json",     "global_step*/*", "*.distcp",
};

static bool is_training_state(const char *file)
{
    for (size_t i = 0; i < sizeof(training_state_patterns) / sizeof(training_state_patterns[0]);
         i++)
        if (fnmatch(training_state_patterns[i], file, 0) == 0)
            return true;
    return false;
}

/* PEFT's save_pretrained writes a template card into every adapter checkpoint; transformers'
 * _push_from_checkpoint copies only modeling, adapter, tokenizer and args files to the root, so
 * the repo's own card is never replaced by it. It still goes with the whole checkpoint. */
static bool is_checkpoint_card(const char *file)
{
    return strcmp(file, "README.md") == 0;
}

static char *join(const char *dir, const char *file)
{
    char *out;

    if (dir[0] == '\0')
        return strdup(file);
    if (asprintf(&out, "%s/%s", dir, file) < 0)
        return NULL;
    return out;
}

/* The epoch Lightning put in a file name ("epoch=3-step=400.ckpt"), or -1. */
static long long lightning_epoch(const char *name)
{
    const char *base = strrchr(name, '/');
    const char *e = strstr(base != NULL ? base + 1 : name, "epoch=");

    if (e == NULL || e[6] < '0' || e[6] > '9')
        return -1;
    return strtoll(e + 6, NULL, 10);
}

/* file beside name: "a/b/epoch=1.ckpt" + "last.ckpt" -> "a/b/last.ckpt". */
static char *join_dir_of(const char *name, const char *file)
{
    char *out;
    int dir = (int)(strrchr(name, '/') - name);

    if (asprintf(&out, "%.*s/%s", dir, name, file) < 0)
        return NULL;
    return out;
}

static char *message_for(const char *layout, const char *name, long long step)
{
    char *out = NULL;
    int rc;

    if (strcmp(layout, "model-root") == 0)
        return strdup("End of training");
    if (strcmp(layout, "lightning") == 0 && step >= 0 && lightning_epoch(name) >= 0)
        rc = asprintf(&out, "Training in progress, epoch %lld, step %lld", lightning_epoch(name),
                      step);
    else if (step >= 0)
        rc = asprintf(&out, "Training in progress, step %lld", step);
    else
        rc = asprintf(&out, "Add checkpoint %s", name);
    return rc < 0 ? NULL : out;
}

/* Transformers never pushes these from the output root (push_to_hub's ignore_patterns). */
static bool root_ignored(const char *file)
{
    return file[0] == '_' || fnmatch("checkpoint-*", file, 0) == 0;
}

static int add_item(struct strategy_plan *plan, char *path, const char *file)
{
    if (path == NULL)
        return -ENOMEM;
    plan->items[plan->count].path_in_repo = path;
    plan->items[plan->count].file = file;
    plan->count++;
    return 0;
}

int strategy_plan(enum config_strategy strategy, const char *layout, const char *name,
                  long long step, const char *const *files, size_t file_count,
                  struct strategy_plan *ret)
{
    bool trainer = strcmp(layout, "transformers-trainer") == 0;
    bool root = strcmp(layout, "model-root") == 0;
    bool single = strcmp(layout, "single-file") == 0;
    bool lightning = strcmp(layout, "lightning") == 0;
    /* where the whole checkpoint goes, besides its model files at the root */
    const char *folder = strategy == STRATEGY_CHECKPOINT        ? "last-checkpoint"
                         : strategy == STRATEGY_ALL_CHECKPOINTS ? name
                                                                : NULL;

    memset(ret, 0, sizeof(*ret));
    ret->items = calloc(file_count ? 2 * file_count : 1, sizeof(*ret->items));
    ret->message = message_for(layout, name, step);
    if (ret->items == NULL || ret->message == NULL)
        goto oom;
    if (strategy == STRATEGY_END && !root)
        return 0; /* nothing during training */

    for (size_t i = 0; i < file_count; i++) {
        const char *f = files[i];
        char *path;

        if (trainer && (is_training_state(f) || is_checkpoint_card(f)))
            continue;
        if (root && root_ignored(f))
            continue;
        if (trainer || root)
            path = strdup(f);
        else if (single)
            path = strdup(name); /* the file keeps its place in the tree */
        else if (lightning)
            path = strrchr(name, '/') != NULL
                       ? join_dir_of(name, f) /* the save's files keep their place too */
                       : strdup(f);
        else if (strategy == STRATEGY_CHECKPOINT)
            path = join("last-checkpoint", f);
        else
            path = join(name, f);
        if (add_item(ret, path, f) < 0)
            goto oom;
    }
    /* transformers' hub_strategy checkpoint / all_checkpoints: the whole checkpoint too, so
     * that training can resume from the Hub */
    if (trainer && folder != NULL)
        for (size_t i = 0; i < file_count; i++)
            if (add_item(ret, join(folder, files[i]), files[i]) < 0)
                goto oom;
    return 0;
oom:
    strategy_plan_release(ret);
    return -ENOMEM;
}

static bool any_match(char *const *globs, const char *path)
{
    for (size_t i = 0; globs != NULL && globs[i] != NULL; i++)
        if (fnmatch(globs[i], path, 0) == 0)
            return true;
    return false;
}

size_t strategy_filter(struct strategy_plan *plan, char *const *include, char *const *exclude)
{
    size_t kept = 0, dropped = 0;

    for (size_t i = 0; i < plan->count; i++) {
        struct strategy_item *it = &plan->items[i];
        if ((include != NULL && include[0] != NULL && !any_match(include, it->path_in_repo)) ||
            any_match(exclude, it->path_in_repo)) {
            free(it->path_in_repo);
            dropped++;
            continue;
        }
        plan->items[kept++] = *it;
    }
    plan->count = kept;
    return dropped;
}

void strategy_plan_release(struct strategy_plan *plan)
{
    for (size_t i = 0; i < plan->count; i++)
        free(plan->items[i].path_in_repo);
    free(plan->items);
    free(plan->message);
    memset(plan, 0, sizeof(*plan));
}

bool strategy_checkpoint_number(const char *name, unsigned long long *ret_n)
{
    static const char prefix[] = "checkpoint-";
    unsigned long long n = 0;
    const char *p;

    if (strncmp(name, prefix, sizeof(prefix) - 1) != 0)
        return false;
    p = name + sizeof(prefix) - 1;
    if (*p == '\0')
        return false;
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || n > (~0ULL - 9) / 10)
            return false;
        n = n * 10 + (unsigned long long)(*p - '0');
    }
    *ret_n = n;
    return true;
}

/* Whether number v is already one of names' (current's own name aside). */
static bool number_among(unsigned long long v, const char *current, const char *const *names,
                         size_t n)
{
    unsigned long long x;

    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], current) != 0 && strategy_checkpoint_number(names[i], &x) && x == v)
            return true;
    return false;
}

/* How many distinct checkpoint numbers among names (current's own name aside) are above v. */
static size_t newer_than(unsigned long long v, const char *current, const char *const *names,
                         size_t n)
{
    size_t count = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned long long x, y;
        bool counted = false;
        if (strcmp(names[i], current) == 0 || !strategy_checkpoint_number(names[i], &x) || x <= v)
            continue;
        for (size_t k = 0; k < i && !counted; k++)
            counted = strcmp(names[k], current) != 0 && strategy_checkpoint_number(names[k], &y) &&
                      y == x;
        if (!counted)
            count++;
    }
    return count;
}

size_t strategy_retire(const char *current, const char *const *names, size_t n, unsigned keep_last,
                       enum strategy_retirement *marks)
{
    unsigned long long cur, v;
    size_t marked = 0;

    for (size_t i = 0; i < n; i++)
        marks[i] = STRATEGY_KEEP;
    if (keep_last == 0 || !strategy_checkpoint_number(current, &cur))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], current) == 0 || !strategy_checkpoint_number(names[i], &v))
            continue;
        size_t before = newer_than(v, current, names, n);
        size_t with_current = before + (cur > v && !number_among(cur, current, names, n));
        if (with_current < keep_last)
            continue;
        marks[i] = before >= keep_last ? STRATEGY_RETIRE_AGAIN : STRATEGY_RETIRE_NOW;
        marked++;
    }
    return marked;
}
