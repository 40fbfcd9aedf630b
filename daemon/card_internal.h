/* card_internal.h - what the card_*.c files share: a bounded text buffer with escapers for each
 * output context, and the run facts gathered from the inputs. Not for other modules.
 */
#ifndef CKPT_CARD_INTERNAL_H
#define CKPT_CARD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "card.h"

struct cJSON;

/* A growable string with a hard maximum. The first failure (ENOMEM, EFBIG) sticks in err and
 * makes every later append a no-op, so callers check once at the end. data is always
 * NUL-terminated once anything was appended. */
struct card_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
    int err;
};

void card_buf_init(struct card_buf *b, size_t max);
void card_buf_release(struct card_buf *b);
/* Hands data to the caller (an empty string when nothing was appended); NULL on ENOMEM. */
char *card_buf_steal(struct card_buf *b);
void card_buf_put(struct card_buf *b, const char *s, size_t n);
void card_buf_puts(struct card_buf *b, const char *s);
void card_buf_printf(struct card_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Longest user string copied into any output; longer ones are cut at a UTF-8 boundary. */
#define CARD_MAX_FIELD 4096

/* YAML double-quoted scalar, readable by YAML 1.1 and 1.2 parsers and by JSON-string decoders:
 * controls, quotes and backslashes become \uXXXX / \\ escapes, invalid UTF-8 becomes U+FFFD. */
void card_put_yaml_str(struct card_buf *b, const char *s);
/* A YAML number: shortest round-trip form that YAML 1.1 still reads as a float (1.0e-05). */
void card_put_yaml_num(struct card_buf *b, double v);
/* Inline Markdown text (one line): markup characters backslash-escaped, HTML characters as
 * entities, line breaks as spaces. Also safe in a table cell. */
void card_put_md(struct card_buf *b, const char *s);
/* Markdown prose from the user (paragraphs kept): HTML characters as entities, so no tag, comment
 * or ckptpush marker can be forged. */
void card_put_md_block(struct card_buf *b, const char *s);
/* XML text or attribute value. */
void card_put_xml(struct card_buf *b, const char *s);
/* Shortest round-trip decimal ("0.0005", "1e-08", "40"). */
void card_fmt_num(char *dst, size_t size, double v);
/* True when s is made only of [A-Za-z0-9._-/] and is 1..maxlen long: safe inside code. */
bool card_is_plain(const char *s, size_t maxlen);

/* ---- run facts ---- */

#define CARD_MAX_METRICS 32
#define CARD_MAX_EVAL_COLS 12
#define CARD_MAX_LOG 4096
#define CARD_MAX_LIST 32
#define CARD_MAX_HPARAMS 48
#define CARD_MAX_CONFIG 16
#define CARD_NAME_MAX 96

struct card_metric {
    char key[CARD_NAME_MAX]; /* without the eval_ prefix: "loss", "accuracy" */
    double value;
};

/* One log_history (or metrics.csv) entry reduced to what the card shows. */
struct card_log {
    double step;
    double epoch;
    bool has_epoch;
    bool has_loss;
    double loss;
    bool is_eval;
    bool after_train_end; /* logged after the train summary (final evaluate()) */
    unsigned eval_mask;   /* bit i: eval[i] set */
    double eval[CARD_MAX_EVAL_COLS];
};

struct card_kv {
    char key[CARD_NAME_MAX];
    char value[256];
};

/* What the card transformers' Trainer wrote (its README.md, recognised by its marker comment)
 * says about the run: a source below the trainer's IPC message and config.json, above nothing.
 * Strings live in arena; every list is bounded; the results table is read into log. */
struct card_trainer_card {
    const char *model_name, *base_model, *license, *library_name, *task_type;
    bool from_scratch; /* "This model was trained from scratch on ..." */
    const char *languages[CARD_MAX_LIST];
    size_t n_languages;
    const char *tags[CARD_MAX_LIST];
    size_t n_tags;
    const char *datasets[CARD_MAX_LIST]; /* front matter `datasets:` (Hub ids) */
    size_t n_datasets;
    const char *dataset_names[CARD_MAX_LIST]; /* "on the X dataset" of the summary sentence */
    size_t n_dataset_names;
    struct card_metric metrics[CARD_MAX_METRICS]; /* the summary's "- Loss: 4.1618" lines */
    size_t n_metrics;
    struct card_kv hparams[CARD_MAX_HPARAMS];
    size_t n_hparams;
    struct card_kv versions[CARD_MAX_LIST];
    size_t n_versions;
    char eval_cols[CARD_MAX_EVAL_COLS][CARD_NAME_MAX];
    size_t n_eval_cols;
    struct card_log *log; /* CARD_MAX_LOG entries, NULL until a results table is found */
    size_t n_log;
    char arena[64 * 1024];
    size_t arena_used;
};

/* card_trainer.c */
bool card_is_trainer_card(const char *readme);
/* Fills *tc from text (a README the Trainer generated); 0 or -ENOMEM. */
int card_trainer_card_parse(const char *text, struct card_trainer_card *tc);
void card_trainer_card_release(struct card_trainer_card *tc);

enum {
    CARD_HP_IPC = 1u << 0,
    CARD_HP_TRAINER_CARD = 1u << 1,
    CARD_HP_STATE = 1u << 2,
    CARD_HP_LIGHTNING = 1u << 3,
};

struct card_data {
    char model_name[CARD_NAME_MAX + 1];
    const char *repo_id;
    /* user fields and config facts; strings point into the cJSON trees below */
    const char *license, *base_model, *library_name, *pipeline_tag, *task_name;
    const char *languages[CARD_MAX_LIST];
    size_t n_languages;
    const char *tags[CARD_MAX_LIST];
    size_t n_tags;
    const char *datasets[CARD_MAX_LIST];
    size_t n_datasets;
    const char *dataset_names[CARD_MAX_LIST]; /* for the summary, when the Trainer named several */
    size_t n_dataset_names;
    const char *dataset_name, *dataset_config, *dataset_split, *dataset_eval_split;
    const char *dataset_license;
    const char *model_description, *training_data, *intended_use, *limitations, *bias_risks;
    /* config.json */
    bool has_config;
    const char *model_type, *architecture;
    const char *auto_class; /* "AutoModelForCausalLM", NULL when the suffix is unknown */
    struct card_kv config[CARD_MAX_CONFIG];
    size_t n_config;
    /* safetensors */
    uint64_t n_params;
    size_t n_tensors;
    char dtypes[64];
    bool params_known;
    /* final evaluation metrics, most trusted source first; source names where they came from */
    struct card_metric metrics[CARD_MAX_METRICS];
    size_t n_metrics;
    const char *metrics_source;
    /* the training log */
    char eval_cols[CARD_MAX_EVAL_COLS][CARD_NAME_MAX]; /* "loss" first when present */
    size_t n_eval_cols;
    struct card_log *log;
    size_t n_log;
    bool log_truncated;
    const char *log_source;
    /* hyperparameters as shown */
    struct card_kv hparams[CARD_MAX_HPARAMS];
    size_t n_hparams;
    unsigned hparams_from; /* CARD_HP_* bits: which sources gave at least one row */
    double train_runtime;  /* < 0 unknown */
    /* frameworks: pretty name and version */
    struct card_kv versions[CARD_MAX_LIST];
    size_t n_versions;
    /* where facts came from, for the sentences that must say so */
    bool license_from_trainer_card;
    bool from_scratch;
    const char *index_task;           /* model-index task.type: pipeline_tag, else see card.h */
    const char *index_task_name;      /* its display name, NULL when unknown */
    const char *index_task_base_arch; /* set when index_task came from the base model */
    bool trained_steps_known, trained_epochs_known;
    double trained_steps, trained_epochs;   /* trainer_state.json global_step, epoch */
    struct card_trainer_card *trainer_card; /* NULL when existing_readme is not the Trainer's */
    /* parsed trees, owned */
    struct cJSON *json[8];
};

int card_data_gather(const struct card_inputs *in, struct card_data *d);
void card_data_release(struct card_data *d);
/* "Loss", "F1 Macro": the Trainer's display name of a metric key. */
void card_metric_title(char *dst, size_t size, const char *key);

/* card_yaml.c: the front matter the card owns, merged into existing (may be NULL: the text of
 * the existing front matter, without the --- lines). */
void card_yaml_front_matter(struct card_buf *b, const struct card_data *d, const char *existing,
                            size_t existing_len);

/* card_svg.c: NULL when there is nothing to plot; -ENOMEM/-EFBIG via *ret_err. */
char *card_svg_render(const struct card_data *d, int *ret_err);

#endif
