/* card_job.h - the file side of the model card: reads what a run left in a directory (config,
 * trainer state, results, safetensors headers, Lightning logs, the README already there),
 * renders the card with card.c and writes README.md and the curves SVG into an output
 * directory. All reading, rendering and writing runs on the libuv thread pool; the request is
 * made and answered on the loop thread.
 */
#ifndef CKPT_CARD_JOB_H
#define CKPT_CARD_JOB_H

#include <stdbool.h>

#include <uv.h>

#include "err.h"

struct card_job_request {
    const char *repo_id;
    const char *model_dir; /* the pinned end-of-training files, or NULL (card only) */
    const char *logs_dir;  /* where to look for Lightning's hparams.yaml / metrics.csv */
    const char *out_dir;   /* README.md and the SVG are written here (created if missing) */
    const char *final_metrics_json; /* from the trainer's `final`, or NULL */
    const char *hparams_json;
    const char *user_fields_json; /* card fields of the configuration, or NULL */
    double duration_s;            /* < 0: unknown */
};

struct card_job_result {
    bool wrote_svg;
    /* pickle-format weights among the files the card describes, comma-separated, or "" */
    const char *pickles;
};

/* err is NULL on success; res and err are valid only during the call. */
typedef void (*card_job_cb)(void *ctx, const struct ckpt_err *err,
                            const struct card_job_result *res);

/* Copies the request. Fails at once only for -ENOMEM. */
int card_job_start(uv_loop_t *loop, const struct card_job_request *req, card_job_cb cb, void *ctx);

#endif
