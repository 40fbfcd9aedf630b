/* strategy.c - every_save: a checkpoint's model files at the repo root, as Trainer pushes them. */
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

static char *join(const char *dir, const char *file)
{
    char *out;

    if (dir[0] == '\0')
        return strdup(file);
    if (asprintf(&out, "%s/%s", dir, file) < 0)
        return NULL;
    return out;
}

static char *message_for(const char *layout, const char *name, long long step)
{
    char *out = NULL;
    int rc;

    if (strcmp(layout, "model-root") == 0)
        return strdup("End of training");
    if (step >= 0)
        rc = asprintf(&out, "Training in progress, step %lld", step);
    else
        rc = asprintf(&out, "Add checkpoint %s", name);
    return rc < 0 ? NULL : out;
}

int strategy_plan(enum config_strategy strategy, const char *layout, const char *name,
                  long long step, const char *const *files, size_t file_count,
                  struct strategy_plan *ret)
{
    bool at_root = strcmp(layout, "transformers-trainer") == 0 || strcmp(layout, "model-root") == 0;
    bool single = strcmp(layout, "single-file") == 0;

    (void)strategy; /* every_save is the only strategy so far */
    memset(ret, 0, sizeof(*ret));
    ret->items = calloc(file_count ? file_count : 1, sizeof(*ret->items));
    ret->message = message_for(layout, name, step);
    if (ret->items == NULL || ret->message == NULL)
        goto oom;

    for (size_t i = 0; i < file_count; i++) {
        struct strategy_item *item = &ret->items[ret->count];

        if (strcmp(layout, "transformers-trainer") == 0 && is_training_state(files[i]))
            continue;
        if (at_root)
            item->path_in_repo = strdup(files[i]);
        else if (single)
            item->path_in_repo = strdup(name); /* the file keeps its place in the tree */
        else
            item->path_in_repo = join(name, files[i]);
        if (item->path_in_repo == NULL)
            goto oom;
        item->file = files[i];
        ret->count++;
    }
    return 0;
oom:
    strategy_plan_release(ret);
    return -ENOMEM;
}

void strategy_plan_release(struct strategy_plan *plan)
{
    for (size_t i = 0; i < plan->count; i++)
        free(plan->items[i].path_in_repo);
    free(plan->items);
    free(plan->message);
    memset(plan, 0, sizeof(*plan));
}
