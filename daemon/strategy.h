/* strategy.h - what a sealed checkpoint becomes in the repo: which of its files go to which repo
 * paths, and the commit message, following the Hub strategies transformers users know. Pure
 * functions; no I/O.
 */
#ifndef CKPT_STRATEGY_H
#define CKPT_STRATEGY_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct strategy_item {
    char *path_in_repo;
    const char *file; /* borrowed: relative to the checkpoint root, as given */
};

struct strategy_plan {
    struct strategy_item *items;
    size_t count;
    char *message;
};

/* layout: the detector's layout name ("trainer", "single-file", "model-root", ...); name: the
 * checkpoint's root-relative path ("" for the output root); step: -1 when unknown. Returns 0 or
 * -ENOMEM; a plan may hold zero items (nothing of this checkpoint is pushed by the strategy). */
int strategy_plan(enum config_strategy strategy, const char *layout, const char *name,
                  long long step, const char *const *files, size_t file_count,
                  struct strategy_plan *ret);
/* --bucket: every file of the checkpoint once, at its place in the watched tree: NAME/FILE
 * (single-file: NAME; lightning: beside NAME; model-root: FILE). No strategy applies: a bucket
 * keeps each checkpoint under its own prefix. */
int strategy_plan_bucket(const char *layout, const char *name, long long step,
                         const char *const *files, size_t file_count, struct strategy_plan *ret);
void strategy_plan_release(struct strategy_plan *plan);
/* Keeps the items whose repo path matches one of include (all when include is NULL or empty)
 * and none of exclude (NULL-terminated fnmatch globs); returns how many were dropped. */
size_t strategy_filter(struct strategy_plan *plan, char *const *include, char *const *exclude);

/* Remote retention (--keep-last): true when name is a folder this job's naming pattern creates,
 * `checkpoint-<n>` with n in decimal digits; *ret_n gets n. */
bool strategy_checkpoint_number(const char *name, unsigned long long *ret_n);
enum strategy_retirement {
    STRATEGY_KEEP = 0,
    STRATEGY_RETIRE_NOW,   /* this commit pushes it beyond the newest keep_last */
    STRATEGY_RETIRE_AGAIN, /* already beyond them without this commit: gone, unless an earlier
                              commit failed or ran with a larger keep_last */
};
/* Of the committed checkpoint folders names[0..n) (duplicates allowed) and current (being
 * committed now), marks in marks[] those that fall beyond the newest keep_last by their number.
 * current and names outside the pattern are never marked; keep_last 0 marks none. Returns how
 * many were marked. */
size_t strategy_retire(const char *current, const char *const *names, size_t n, unsigned keep_last,
                       enum strategy_retirement *marks);

#endif
