/* card.h - the model card (README.md) and its training-curves SVG, built from what a run left
 * behind. Pure: no file I/O, no logging, no globals; the caller reads the files on the thread
 * pool, hands their contents here and writes or commits the result. Safe on any thread.
 */
#ifndef CKPT_CARD_H
#define CKPT_CARD_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

/* Hard limits: bigger inputs are cut (rows, tensors) or refused (-EFBIG for the README). */
#define CARD_MAX_README (1024 * 1024)
#define CARD_MAX_SVG (512 * 1024)

/* Every field may be NULL (or 0 / negative where noted); a source that is missing or does not
 * parse is ignored, and the section it feeds says what to add instead. Sources in order of trust:
 * final_metrics_json and hparams_json (from the trainer over IPC), trainer_state_json and
 * all_results_json, config_json, the Lightning files, then user_fields_json.
 *
 * existing_readme is also a source when it is the card transformers' Trainer generated (its
 * "generated automatically ... Trainer" comment): below IPC, trainer_state.json/all_results.json
 * and config.json, above nothing; the user's fields still win. From it come the model name
 * (model-index name or `# title`, over the repo name), base_model, license (the card then says
 * it came from there), library_name, language, tags (added to the user's, generated_from_trainer
 * kept), the dataset names of "on the X dataset", the hyperparameter list, the results table and
 * the summary metrics (only when trainer_state.json / all_results.json are missing; they are
 * rounded to 4 decimals and the card says so), the framework versions. Its body is then replaced
 * whole: it holds no user prose.
 *
 * The model-index task (the Hub requires task.type for every result) is, in this order: the
 * run's pipeline_tag (user field, else from config.json's architecture); the task the Trainer's
 * card recorded in its own model-index; the task of the base model's architecture, only when
 * the run's config.json is missing and base_model is one of a short built-in list whose published
 * config names a single architecture (GPT-2 family: text-generation). In that last case no
 * pipeline_tag is written, and the Evaluation section says the task is inferred from the base
 * model and how to correct it. Otherwise results stay `[]` and the card says why.
 *
 * user_fields_json keys (all optional, wrong types ignored): model_name, license, base_model,
 * library_name, pipeline_tag, language (string or list), tags (list), datasets (string or list),
 * dataset_name, dataset_config, dataset_split, dataset_eval_split, dataset_license,
 * model_description, training_data, intended_use, limitations, bias_risks. */
struct card_inputs {
    const char *repo_id;                /* "alice/run" */
    const char *config_json;            /* the model's config.json */
    const char *trainer_state_json;     /* trainer_state.json */
    const char *all_results_json;       /* all_results.json (or eval_results.json) */
    const char *final_metrics_json;     /* metrics sent with IPC `final`: most trusted */
    const char *hparams_json;           /* TrainingArguments as an object, from IPC */
    const char *user_fields_json;       /* the user's card fields from the ckptpush config */
    const char *lightning_hparams_yaml; /* hparams.yaml, `key: value` lines only */
    const char *lightning_metrics_csv;  /* metrics.csv */
    const unsigned char *const *safetensors_headers; /* JSON header of each weights file: */
    const size_t *safetensors_header_lens;           /* the bytes after the 8-byte length */
    size_t n_safetensors;
    const char *const *pushed_files; /* repo paths in the final commit */
    size_t n_pushed;
    const char *existing_readme;         /* README.md already in the repo */
    const char *framework_versions_json; /* {"transformers":"5.17.0","torch":...} */
    const char *hardware;                /* free text */
    double duration_s;                   /* < 0: unknown */
};

/* Renders README.md (updating existing_readme in place when given: only the marked sections and
 * the front matter keys the card owns change) and training_curves.svg. On success both are
 * malloc'd NUL-terminated strings for the caller to free; *ret_svg is NULL when there is nothing
 * to plot (the README then shows no image). Returns 0, -ENOMEM, or -EFBIG (err says which). */
int card_render(const struct card_inputs *in, char **ret_readme, char **ret_svg,
                struct ckpt_err *err);

/* True for paths whose format is a Python pickle (.bin .pt .pth .ckpt .pkl .pickle): the caller
 * logs them; the card names them with a note to load safetensors instead. */
bool card_is_pickle_path(const char *path);

/* The name of the curves file the card links to, beside README.md. */
#define CARD_SVG_NAME "training_curves.svg"

#endif
