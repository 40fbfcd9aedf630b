/* card_data.c - the run facts a model card shows, gathered from the inputs in order of trust:
 * the trainer's final message, trainer_state.json and *_results.json, config.json, the Lightning
 * files, then the user's fields. Parses untrusted JSON/YAML/CSV defensively: wrong types and
 * malformed parts are skipped. Pure; any thread.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "card_internal.h"

enum { J_CONFIG, J_STATE, J_RESULTS, J_FINAL, J_HPARAMS, J_USER, J_VERSIONS, J_COUNT };

static cJSON *parse_obj(const char *text)
{
    cJSON *j;

    if (text == NULL)
        return NULL;
    j = cJSON_Parse(text);
    if (j != NULL && !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static const char *get_str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (!cJSON_IsString(v) || v->valuestring == NULL || v->valuestring[0] == '\0')
        return NULL;
    return v->valuestring;
}

static bool get_num(const cJSON *obj, const char *key, double *ret)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return false;
    *ret = v->valuedouble;
    return true;
}

/* A string or a list of strings, into at most CARD_MAX_LIST borrowed pointers. */
static size_t get_list(const cJSON *obj, const char *key, const char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key), *it;
    size_t n = 0;

    if (cJSON_IsString(v) && v->valuestring[0] != '\0') {
        out[0] = v->valuestring;
        return 1;
    }
    if (!cJSON_IsArray(v))
        return 0;
    cJSON_ArrayForEach(it, v)
    {
        if (n < CARD_MAX_LIST && cJSON_IsString(it) && it->valuestring[0] != '\0')
            out[n++] = it->valuestring;
    }
    return n;
}

static void copy_str(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src);
}

/* ---- model config ---- */

struct arch_rule {
    const char *suffix, *auto_class, *pipeline;
};

static const struct arch_rule arch_rules[] = {
    {"ForCausalLM", "AutoModelForCausalLM", "text-generation"},
    {"LMHeadModel", "AutoModelForCausalLM", "text-generation"},
    {"ForMaskedLM", "AutoModelForMaskedLM", "fill-mask"},
    {"ForSequenceClassification", "AutoModelForSequenceClassification", "text-classification"},
    {"ForTokenClassification", "AutoModelForTokenClassification", "token-classification"},
    {"ForQuestionAnswering", "AutoModelForQuestionAnswering", "question-answering"},
    {"ForMultipleChoice", "AutoModelForMultipleChoice", "multiple-choice"},
    {"ForImageClassification", "AutoModelForImageClassification", "image-classification"},
    {"ForAudioClassification", "AutoModelForAudioClassification", "audio-classification"},
    {"ForCTC", "AutoModelForCTC", "automatic-speech-recognition"},
    {"ForObjectDetection", "AutoModelForObjectDetection", "object-detection"},
    {"ForSemanticSegmentation", "AutoModelForSemanticSegmentation", "image-segmentation"},
    {"ForSpeechSeq2Seq", "AutoModelForSpeechSeq2Seq", "automatic-speech-recognition"},
};

struct task_name {
    const char *pipeline, *name;
};

/* The names transformers' model cards give each task. */
static const struct task_name task_names[] = {
    {"text-generation", "Causal Language Modeling"},
    {"fill-mask", "Masked Language Modeling"},
    {"text-classification", "Text Classification"},
    {"token-classification", "Token Classification"},
    {"question-answering", "Question Answering"},
    {"multiple-choice", "Multiple Choice"},
    {"image-classification", "Image Classification"},
    {"audio-classification", "Audio Classification"},
    {"automatic-speech-recognition", "Automatic Speech Recognition"},
    {"object-detection", "Object Detection"},
    {"image-segmentation", "Image Segmentation"},
    {"text2text-generation", "Sequence-to-sequence Language Modeling"},
    {"summarization", "Summarization"},
    {"translation", "Translation"},
    {"feature-extraction", "Feature Extraction"},
};

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n > m && strcmp(s + n - m, suffix) == 0;
}

static void config_kv(struct card_data *d, const char *label, const char *const *keys)
{
    const cJSON *cfg = d->json[J_CONFIG];
    char num[64];
    double v;

    if (d->n_config >= CARD_MAX_CONFIG)
        return;
    for (; *keys; keys++) {
        const char *s = get_str(cfg, *keys);
        if (get_num(cfg, *keys, &v)) {
            card_fmt_num(num, sizeof(num), v);
            s = num;
        }
        if (s == NULL)
            continue;
        copy_str(d->config[d->n_config].key, CARD_NAME_MAX, label);
        copy_str(d->config[d->n_config].value, sizeof(d->config[0].value), s);
        d->n_config++;
        return;
    }
}

static void gather_config(struct card_data *d)
{
    const cJSON *cfg = d->json[J_CONFIG], *archs;
    const char *name_or_path;
    size_t i;

    if (cfg == NULL)
        return;
    d->has_config = true;
    d->model_type = get_str(cfg, "model_type");
    archs = cJSON_GetObjectItemCaseSensitive(cfg, "architectures");
    if (cJSON_IsArray(archs) && cJSON_IsString(cJSON_GetArrayItem(archs, 0)))
        d->architecture = cJSON_GetArrayItem(archs, 0)->valuestring;
    if (d->architecture != NULL) {
        for (i = 0; i < sizeof(arch_rules) / sizeof(arch_rules[0]); i++) {
            if (ends_with(d->architecture, arch_rules[i].suffix)) {
                d->auto_class = arch_rules[i].auto_class;
                if (d->pipeline_tag == NULL)
                    d->pipeline_tag = arch_rules[i].pipeline;
                break;
            }
        }
        if (d->auto_class == NULL && ends_with(d->architecture, "Model")) {
            d->auto_class = "AutoModel";
            if (d->pipeline_tag == NULL)
                d->pipeline_tag = "feature-extraction";
        }
    }
    /* transformers' own card takes the base model from here; only hub-id-like values, never a
     * local path */
    name_or_path = get_str(cfg, "_name_or_path");
    if (d->base_model == NULL && name_or_path != NULL && card_is_plain(name_or_path, 96) &&
        name_or_path[0] != '.' && name_or_path[0] != '/' &&
        strchr(name_or_path, '/') == strrchr(name_or_path, '/') &&
        strstr(name_or_path, "checkpoint") == NULL)
        d->base_model = name_or_path;

    config_kv(d, "model_type", (const char *const[]){"model_type", NULL});
    if (d->architecture != NULL && d->n_config < CARD_MAX_CONFIG) {
        copy_str(d->config[d->n_config].key, CARD_NAME_MAX, "architecture");
        copy_str(d->config[d->n_config].value, sizeof(d->config[0].value), d->architecture);
        d->n_config++;
    }
    config_kv(d, "layers",
              (const char *const[]){"num_hidden_layers", "n_layer", "num_layers", NULL});
    config_kv(d, "hidden size", (const char *const[]){"hidden_size", "n_embd", "d_model", NULL});
    config_kv(d, "attention heads",
              (const char *const[]){"num_attention_heads", "n_head", "num_heads", NULL});
    config_kv(d, "key/value heads", (const char *const[]){"num_key_value_heads", NULL});
    config_kv(d, "intermediate size",
              (const char *const[]){"intermediate_size", "n_inner", "ffn_dim", "d_ff", NULL});
    config_kv(d, "vocabulary size", (const char *const[]){"vocab_size", NULL});
    config_kv(d, "context length",
              (const char *const[]){"max_position_embeddings", "n_positions", "n_ctx", NULL});
    config_kv(d, "dtype", (const char *const[]){"dtype", "torch_dtype", NULL});
}

static void gather_params(const struct card_inputs *in, struct card_data *d)
{
    size_t i;

    for (i = 0; i < in->n_safetensors && in->safetensors_headers != NULL; i++) {
        const char *hdr = (const char *)in->safetensors_headers[i];
        size_t len;
        cJSON *j, *t;

        if (hdr == NULL)
            continue;
        len = in->safetensors_header_lens ? in->safetensors_header_lens[i] : strlen(hdr);
        j = cJSON_ParseWithLength(hdr, len);
        if (!cJSON_IsObject(j)) {
            cJSON_Delete(j);
            continue;
        }
        cJSON_ArrayForEach(t, j)
        {
            const cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape"), *dim;
            const char *dtype = get_str(t, "dtype");
            uint64_t count = 1;
            bool ok = cJSON_IsArray(shape);

            if (t->string == NULL || strcmp(t->string, "__metadata__") == 0 || !ok)
                continue;
            cJSON_ArrayForEach(dim, shape)
            {
                double v = dim->valuedouble;
                if (!cJSON_IsNumber(dim) || v < 0 || v > 1e15 || v != floor(v) ||
                    (v > 0 && count > UINT64_MAX / (uint64_t)v)) {
                    ok = false;
                    break;
                }
                count *= (uint64_t)v;
            }
            if (!ok || d->n_params > UINT64_MAX - count)
                continue;
            d->n_params += count;
            d->n_tensors++;
            d->params_known = true;
            if (dtype != NULL && card_is_plain(dtype, 16) && strstr(d->dtypes, dtype) == NULL &&
                strlen(d->dtypes) + strlen(dtype) + 3 < sizeof(d->dtypes)) {
                if (d->dtypes[0])
                    strcat(d->dtypes, ", ");
                strcat(d->dtypes, dtype);
            }
        }
        cJSON_Delete(j);
    }
}

/* ---- metrics and the training log ---- */

/* Throughput and timing keys are not results. */
static bool metric_is_result(const char *key)
{
    static const char *const skip[] = {
        "runtime", "samples_per_second", "steps_per_second",      "jit_compilation_time", "epoch",
        "step",    "total_flos",         "model_preparation_time"};
    size_t i;

    for (i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (strcmp(key, skip[i]) == 0)
            return false;
    return key[0] != '\0' && strlen(key) < CARD_NAME_MAX;
}

static void metric_set(struct card_data *d, const char *key, double v)
{
    size_t i;

    for (i = 0; i < d->n_metrics; i++) {
        if (strcmp(d->metrics[i].key, key) == 0) {
            d->metrics[i].value = v;
            return;
        }
    }
    if (d->n_metrics >= CARD_MAX_METRICS)
        return;
    copy_str(d->metrics[d->n_metrics].key, CARD_NAME_MAX, key);
    d->metrics[d->n_metrics].value = v;
    d->n_metrics++;
}

/* Takes every numeric eval_* result of obj; returns how many. */
static size_t metrics_from(struct card_data *d, const cJSON *obj)
{
    const cJSON *it;
    size_t n = 0;

    cJSON_ArrayForEach(it, obj)
    {
        if (it->string == NULL || strncmp(it->string, "eval_", 5) != 0 || !cJSON_IsNumber(it) ||
            !isfinite(it->valuedouble) || !metric_is_result(it->string + 5))
            continue;
        metric_set(d, it->string + 5, it->valuedouble);
        n++;
    }
    return n;
}

static int eval_col(struct card_data *d, const char *key)
{
    size_t i;

    for (i = 0; i < d->n_eval_cols; i++)
        if (strcmp(d->eval_cols[i], key) == 0)
            return (int)i;
    if (d->n_eval_cols >= CARD_MAX_EVAL_COLS || !metric_is_result(key))
        return -1;
    copy_str(d->eval_cols[d->n_eval_cols], CARD_NAME_MAX, key);
    return (int)d->n_eval_cols++;
}

static struct card_log *log_add(struct card_data *d)
{
    struct card_log *l;

    if (d->n_log >= CARD_MAX_LOG) {
        d->log_truncated = true;
        return NULL;
    }
    l = &d->log[d->n_log];
    memset(l, 0, sizeof(*l));
    return l;
}

static void gather_log_history(struct card_data *d)
{
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(d->json[J_STATE], "log_history"), *row;
    bool ended = false;

    if (!cJSON_IsArray(hist))
        return;
    cJSON_ArrayForEach(row, hist)
    {
        struct card_log *l;
        const cJSON *it;
        double v;

        if (!cJSON_IsObject(row))
            continue;
        if (cJSON_GetObjectItemCaseSensitive(row, "train_runtime") != NULL) {
            ended = true;
            if (get_num(row, "train_runtime", &v))
                d->train_runtime = v;
            continue;
        }
        if (!get_num(row, "step", &v) || (l = log_add(d)) == NULL)
            continue;
        l->step = v;
        l->has_epoch = get_num(row, "epoch", &l->epoch);
        l->has_loss = get_num(row, "loss", &l->loss);
        l->after_train_end = ended;
        cJSON_ArrayForEach(it, row)
        {
            int c;
            if (it->string == NULL || strncmp(it->string, "eval_", 5) != 0 || !cJSON_IsNumber(it) ||
                !isfinite(it->valuedouble))
                continue;
            if ((c = eval_col(d, it->string + 5)) < 0)
                continue;
            l->eval[c] = it->valuedouble;
            l->eval_mask |= 1u << c;
            l->is_eval = true;
        }
        if (l->has_loss || l->is_eval)
            d->n_log++;
    }
    if (d->n_log > 0)
        d->log_source = "trainer_state.json";
}

/* Lightning's CSVLogger: a header, then rows where empty cells are missing values. */
static void gather_metrics_csv(struct card_data *d, const char *csv)
{
    enum { MAX_COLS = 64 };
    char line[4096], *cols[MAX_COLS];
    int col_kind[MAX_COLS]; /* -1 skip, -2 step, -3 epoch, -4 loss, >= 0 eval column */
    size_t ncols = 0, i;
    const char *p = csv;
    bool header = true;

    while (p != NULL && *p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p), n = 0;
        char *save = NULL, *tok;
        struct card_log row = {0};
        bool has_step = false;

        if (len >= sizeof(line))
            len = sizeof(line) - 1;
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl ? nl + 1 : NULL;
        if (len > 0 && line[len - 1] == '\r')
            line[len - 1] = '\0';
        if (line[0] == '\0')
            continue;
        /* strsep keeps empty cells, which carry meaning here */
        save = line;
        while ((tok = strsep(&save, ",")) != NULL && n < MAX_COLS) {
            if (header) {
                const char *k = tok;
                col_kind[n] = -1;
                if (strcmp(k, "step") == 0)
                    col_kind[n] = -2;
                else if (strcmp(k, "epoch") == 0)
                    col_kind[n] = -3;
                else if (strcmp(k, "train_loss") == 0 || strcmp(k, "train_loss_step") == 0 ||
                         strcmp(k, "loss") == 0)
                    col_kind[n] = -4;
                else if (strncmp(k, "val_", 4) == 0 || strncmp(k, "val/", 4) == 0)
                    col_kind[n] = eval_col(d, k + 4);
                else if (strncmp(k, "eval_", 5) == 0)
                    col_kind[n] = eval_col(d, k + 5);
                cols[n] = NULL;
            } else if (n < ncols && tok[0] != '\0') {
                char *end;
                double v = strtod(tok, &end);
                if (*end != '\0' || !isfinite(v)) {
                    n++;
                    continue;
                }
                if (col_kind[n] == -2) {
                    row.step = v;
                    has_step = true;
                } else if (col_kind[n] == -3) {
                    row.epoch = v;
                    row.has_epoch = true;
                } else if (col_kind[n] == -4) {
                    row.loss = v;
                    row.has_loss = true;
                } else if (col_kind[n] >= 0) {
                    row.eval[col_kind[n]] = v;
                    row.eval_mask |= 1u << col_kind[n];
                    row.is_eval = true;
                }
            }
            n++;
        }
        if (header) {
            ncols = n;
            header = false;
            continue;
        }
        if (has_step && (row.has_loss || row.is_eval)) {
            struct card_log *l = log_add(d);
            if (l == NULL)
                break;
            *l = row;
            d->n_log++;
        }
    }
    (void)cols;
    if (d->n_log > 0)
        d->log_source = "metrics.csv";
    /* the final metrics: the last value of each validation column */
    for (i = d->n_log; i-- > 0;) {
        unsigned c;
        for (c = 0; c < d->n_eval_cols; c++) {
            bool have = false;
            size_t k;
            for (k = 0; k < d->n_metrics; k++)
                have = have || strcmp(d->metrics[k].key, d->eval_cols[c]) == 0;
            if (!have && (d->log[i].eval_mask & (1u << c)))
                metric_set(d, d->eval_cols[c], d->log[i].eval[c]);
        }
    }
}

/* "loss" first: it is the column everyone looks for. */
static void eval_cols_loss_first(struct card_data *d)
{
    char tmp[CARD_NAME_MAX];
    size_t i, c;
    int at = -1;

    for (c = 0; c < d->n_eval_cols; c++)
        if (strcmp(d->eval_cols[c], "loss") == 0)
            at = (int)c;
    if (at <= 0)
        return;
    memcpy(tmp, d->eval_cols[at], sizeof(tmp));
    memmove(d->eval_cols[1], d->eval_cols[0], (size_t)at * sizeof(d->eval_cols[0]));
    memcpy(d->eval_cols[0], tmp, sizeof(tmp));
    for (i = 0; i < d->n_log; i++) {
        struct card_log *l = &d->log[i];
        double v = l->eval[at];
        unsigned bit = (l->eval_mask >> at) & 1u, low = l->eval_mask & ((1u << at) - 1);
        memmove(&l->eval[1], &l->eval[0], (size_t)at * sizeof(double));
        l->eval[0] = v;
        l->eval_mask = (l->eval_mask & ~((1u << (at + 1)) - 1)) | (low << 1) | bit;
    }
}

static void gather_metrics(struct card_data *d)
{
    size_t i;
    double v;

    /* least trusted first: each later source overrides */
    for (i = d->n_log; i-- > 0;) {
        if (d->log[i].is_eval) {
            size_t c;
            for (c = 0; c < d->n_eval_cols; c++)
                if (d->log[i].eval_mask & (1u << c))
                    metric_set(d, d->eval_cols[c], d->log[i].eval[c]);
            if (strcmp(d->log_source, "metrics.csv") == 0)
                d->metrics_source = "the last validation values in metrics.csv";
            else if (strcmp(d->log_source, "trainer_state.json") == 0)
                d->metrics_source = "the last evaluation in trainer_state.json";
            else
                d->metrics_source = "the last row of the results table in the model card the "
                                    "Trainer wrote (rounded to 4 decimals there)";
            break;
        }
    }
    if (d->json[J_RESULTS] != NULL) {
        if (metrics_from(d, d->json[J_RESULTS]) > 0)
            d->metrics_source = "all_results.json";
        if (get_num(d->json[J_RESULTS], "train_runtime", &v))
            d->train_runtime = v;
    }
    if (d->json[J_FINAL] != NULL) {
        if (metrics_from(d, d->json[J_FINAL]) > 0)
            d->metrics_source = "the metrics the trainer sent at the end of training";
        if (get_num(d->json[J_FINAL], "train_runtime", &v))
            d->train_runtime = v;
    }
    /* loss first */
    for (i = 1; i < d->n_metrics; i++) {
        if (strcmp(d->metrics[i].key, "loss") == 0) {
            struct card_metric m = d->metrics[i];
            memmove(&d->metrics[1], &d->metrics[0], i * sizeof(m));
            d->metrics[0] = m;
            break;
        }
    }
}

/* ---- hyperparameters ---- */

/* The first source to name a hyperparameter wins: sources are read most trusted first. */
static void hp_add(struct card_data *d, const char *key, const char *value)
{
    size_t i;

    if (value == NULL || d->n_hparams >= CARD_MAX_HPARAMS)
        return;
    for (i = 0; i < d->n_hparams; i++)
        if (strcmp(d->hparams[i].key, key) == 0)
            return;
    copy_str(d->hparams[d->n_hparams].key, CARD_NAME_MAX, key);
    copy_str(d->hparams[d->n_hparams].value, sizeof(d->hparams[0].value), value);
    d->n_hparams++;
}

static void hp_from(struct card_data *d, size_t before, unsigned source)
{
    if (d->n_hparams > before)
        d->hparams_from |= source;
}

static void hp_num(struct card_data *d, const cJSON *obj, const char *from, const char *key,
                   bool skip_zero)
{
    char num[64];
    double v;

    if (!get_num(obj, from, &v) || (skip_zero && v == 0))
        return;
    card_fmt_num(num, sizeof(num), v);
    hp_add(d, key, num);
}

static bool get_true(const cJSON *obj, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, key));
}

static void gather_training_args(struct card_data *d, const cJSON *a)
{
    const char *optim = get_str(a, "optim");
    double v, steps;

    hp_num(d, a, "learning_rate", "learning_rate", false);
    hp_num(d, a, "per_device_train_batch_size", "train_batch_size", false);
    hp_num(d, a, "per_device_eval_batch_size", "eval_batch_size", false);
    hp_num(d, a, "seed", "seed", false);
    if (get_num(a, "gradient_accumulation_steps", &v) && v > 1)
        hp_num(d, a, "gradient_accumulation_steps", "gradient_accumulation_steps", false);
    if (optim != NULL) {
        char text[256], b1[32], b2[32], eps[32];
        double x1, x2, e;
        const char *oargs = get_str(a, "optim_args");
        if (strstr(optim, "adam") != NULL && get_num(a, "adam_beta1", &x1) &&
            get_num(a, "adam_beta2", &x2) && get_num(a, "adam_epsilon", &e)) {
            card_fmt_num(b1, sizeof(b1), x1);
            card_fmt_num(b2, sizeof(b2), x2);
            card_fmt_num(eps, sizeof(eps), e);
            snprintf(text, sizeof(text), "%.64s with betas=(%s,%s) and epsilon=%s%s%.64s", optim,
                     b1, b2, eps, oargs ? " and optimizer_args=" : "", oargs ? oargs : "");
        } else {
            snprintf(text, sizeof(text), "%.64s%s%.64s", optim, oargs ? " with " : "",
                     oargs ? oargs : "");
        }
        hp_add(d, "optimizer", text);
    }
    hp_num(d, a, "weight_decay", "weight_decay", true);
    hp_add(d, "lr_scheduler_type", get_str(a, "lr_scheduler_type"));
    hp_num(d, a, "warmup_ratio", "lr_scheduler_warmup_ratio", true);
    hp_num(d, a, "warmup_steps", "lr_scheduler_warmup_steps", true);
    if (get_num(a, "max_steps", &steps) && steps > 0)
        hp_num(d, a, "max_steps", "training_steps", false);
    else
        hp_num(d, a, "num_train_epochs", "num_epochs", false);
    if (get_true(a, "fp16"))
        hp_add(d, "mixed_precision_training", "Native AMP (fp16)");
    else if (get_true(a, "bf16"))
        hp_add(d, "mixed_precision_training", "Native AMP (bf16)");
    hp_num(d, a, "label_smoothing_factor", "label_smoothing_factor", true);
    hp_num(d, a, "max_grad_norm", "max_grad_norm", false);
}

static void gather_lightning_hparams(struct card_data *d, const char *yaml)
{
    const char *p = yaml;

    while (p != NULL && *p != '\0' && d->n_hparams < CARD_MAX_HPARAMS) {
        const char *nl = strchr(p, '\n'), *colon;
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char key[CARD_NAME_MAX], value[256];
        size_t klen, vlen;
        const char *v;

        colon = memchr(p, ':', len);
        /* top-level `key: scalar` only; nested blocks and lists are skipped */
        if (colon != NULL && len > 0 && !isspace((unsigned char)p[0]) && p[0] != '#' &&
            p[0] != '-' && (klen = (size_t)(colon - p)) < sizeof(key) && klen > 0) {
            memcpy(key, p, klen);
            key[klen] = '\0';
            v = colon + 1;
            while (v < p + len && (*v == ' ' || *v == '\t'))
                v++;
            vlen = (size_t)(p + len - v);
            while (vlen > 0 && isspace((unsigned char)v[vlen - 1]))
                vlen--;
            if (vlen >= 2 && (v[0] == '\'' || v[0] == '"') && v[vlen - 1] == v[0]) {
                v++;
                vlen -= 2;
            }
            if (vlen > 0 && vlen < sizeof(value) && v[0] != '&' && v[0] != '!') {
                memcpy(value, v, vlen);
                value[vlen] = '\0';
                hp_add(d, key, value);
            }
        }
        p = nl ? nl + 1 : NULL;
    }
}

/* ---- user fields and versions ---- */

static void gather_user(struct card_data *d)
{
    const cJSON *u = d->json[J_USER];

    if (u == NULL)
        return;
    d->license = get_str(u, "license");
    d->base_model = get_str(u, "base_model");
    d->library_name = get_str(u, "library_name");
    d->pipeline_tag = get_str(u, "pipeline_tag");
    d->n_languages = get_list(u, "language", d->languages);
    d->n_tags = get_list(u, "tags", d->tags);
    d->n_datasets = get_list(u, "datasets", d->datasets);
    d->dataset_name = get_str(u, "dataset_name");
    d->dataset_config = get_str(u, "dataset_config");
    d->dataset_split = get_str(u, "dataset_split");
    d->dataset_eval_split = get_str(u, "dataset_eval_split");
    d->dataset_license = get_str(u, "dataset_license");
    d->model_description = get_str(u, "model_description");
    d->training_data = get_str(u, "training_data");
    d->intended_use = get_str(u, "intended_use");
    d->limitations = get_str(u, "limitations");
    d->bias_risks = get_str(u, "bias_risks");
    if (get_str(u, "model_name") != NULL)
        copy_str(d->model_name, sizeof(d->model_name), get_str(u, "model_name"));
}

static void gather_versions(struct card_data *d)
{
    static const char *const pretty[][2] = {
        {"transformers", "Transformers"},
        {"torch", "Pytorch"},
        {"datasets", "Datasets"},
        {"tokenizers", "Tokenizers"},
        {"lightning", "Lightning"},
        {"accelerate", "Accelerate"},
        {"pytorch_lightning", "PyTorch Lightning"},
        {"peft", "PEFT"},
    };
    const cJSON *it;

    cJSON_ArrayForEach(it, d->json[J_VERSIONS])
    {
        const char *name = it->string;
        size_t i;
        if (name == NULL || !cJSON_IsString(it) || d->n_versions >= CARD_MAX_LIST)
            continue;
        for (i = 0; i < sizeof(pretty) / sizeof(pretty[0]); i++)
            if (strcmp(name, pretty[i][0]) == 0)
                name = pretty[i][1];
        copy_str(d->versions[d->n_versions].key, CARD_NAME_MAX, name);
        copy_str(d->versions[d->n_versions].value, sizeof(d->versions[0].value), it->valuestring);
        d->n_versions++;
    }
}

void card_metric_title(char *dst, size_t size, const char *key)
{
    size_t n = 0;
    bool up = true;

    for (; *key && n + 1 < size; key++) {
        char c = *key;
        if (c == '_') {
            c = ' ';
            up = true;
        } else if (up) {
            c = (char)toupper((unsigned char)c);
            up = false;
        } else {
            c = (char)tolower((unsigned char)c);
        }
        dst[n++] = c;
    }
    dst[n] = '\0';
}

/* Base models whose published config.json names one architecture, so their task is a fact
 * about the base; see card.h for when it stands in for the run's own. Kept small on purpose. */
static const struct {
    const char *id, *architecture;
} known_bases[] = {
    {"openai-community/gpt2", "GPT2LMHeadModel"},
    {"openai-community/gpt2-medium", "GPT2LMHeadModel"},
    {"openai-community/gpt2-large", "GPT2LMHeadModel"},
    {"openai-community/gpt2-xl", "GPT2LMHeadModel"},
    {"distilbert/distilgpt2", "GPT2LMHeadModel"},
    {"gpt2", "GPT2LMHeadModel"},
    {"gpt2-medium", "GPT2LMHeadModel"},
    {"gpt2-large", "GPT2LMHeadModel"},
    {"gpt2-xl", "GPT2LMHeadModel"},
    {"distilgpt2", "GPT2LMHeadModel"},
};

static const char *task_display_name(const char *pipeline)
{
    size_t i;

    for (i = 0; pipeline != NULL && i < sizeof(task_names) / sizeof(task_names[0]); i++)
        if (strcmp(pipeline, task_names[i].pipeline) == 0)
            return task_names[i].name;
    return NULL;
}

/* The task model-index needs: the run's own (pipeline_tag from the user or config.json), else
 * the one the Trainer's card recorded, else the base model's when it is known. */
static void gather_index_task(struct card_data *d)
{
    const struct card_trainer_card *tc = d->trainer_card;
    size_t i, k;

    if (d->pipeline_tag != NULL) {
        d->index_task = d->pipeline_tag;
    } else if (tc != NULL && tc->task_type != NULL) {
        d->index_task = tc->task_type;
    } else if (d->base_model != NULL && !d->has_config) {
        for (i = 0; i < sizeof(known_bases) / sizeof(known_bases[0]); i++) {
            if (strcmp(d->base_model, known_bases[i].id) != 0)
                continue;
            for (k = 0; k < sizeof(arch_rules) / sizeof(arch_rules[0]); k++) {
                if (ends_with(known_bases[i].architecture, arch_rules[k].suffix)) {
                    d->index_task = arch_rules[k].pipeline;
                    d->index_task_base_arch = known_bases[i].architecture;
                    break;
                }
            }
            break;
        }
    }
    d->index_task_name = task_display_name(d->index_task);
}

static bool list_has(const char *const *list, size_t n, const char *s)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

/* Fills what the more trusted sources left open from the card the Trainer wrote. */
static void merge_trainer_card_facts(struct card_data *d, bool user_named)
{
    const struct card_trainer_card *tc = d->trainer_card;
    size_t i;

    if (tc == NULL)
        return;
    if (!user_named && tc->model_name != NULL)
        copy_str(d->model_name, sizeof(d->model_name), tc->model_name);
    if (d->base_model == NULL)
        d->base_model = tc->base_model;
    if (d->license == NULL && tc->license != NULL) {
        d->license = tc->license;
        d->license_from_trainer_card = true;
    }
    if (d->library_name == NULL)
        d->library_name = tc->library_name;
    if (d->n_languages == 0) {
        memcpy(d->languages, tc->languages, tc->n_languages * sizeof(tc->languages[0]));
        d->n_languages = tc->n_languages;
    }
    /* the tags add up: the Hub lists Trainer runs by generated_from_trainer */
    for (i = 0; i < tc->n_tags && d->n_tags < CARD_MAX_LIST; i++)
        if (!list_has(d->tags, d->n_tags, tc->tags[i]))
            d->tags[d->n_tags++] = tc->tags[i];
    if (d->n_datasets == 0 && d->dataset_name == NULL) {
        memcpy(d->datasets, tc->datasets, tc->n_datasets * sizeof(tc->datasets[0]));
        d->n_datasets = tc->n_datasets;
        memcpy(d->dataset_names, tc->dataset_names,
               tc->n_dataset_names * sizeof(tc->dataset_names[0]));
        d->n_dataset_names = tc->n_dataset_names;
        if (tc->n_dataset_names > 0)
            d->dataset_name = tc->dataset_names[0];
    }
    if (d->base_model == NULL && tc->from_scratch)
        d->from_scratch = true;
}

/* The Trainer card's results table, when no log had rows. */
static void merge_trainer_card_results(struct card_data *d)
{
    const struct card_trainer_card *tc = d->trainer_card;

    if (tc == NULL)
        return;
    if (d->n_log == 0 && tc->n_log > 0) {
        memcpy(d->eval_cols, tc->eval_cols, sizeof(d->eval_cols));
        d->n_eval_cols = tc->n_eval_cols;
        memcpy(d->log, tc->log, tc->n_log * sizeof(*d->log));
        d->n_log = tc->n_log;
        d->log_source = "the model card the Trainer wrote";
    }
}

/* Its summary's metrics (rounded), when no other source had any: read after gather_metrics. */
static void merge_trainer_card_metrics(struct card_data *d)
{
    const struct card_trainer_card *tc = d->trainer_card;
    size_t i;

    if (tc != NULL && d->n_metrics == 0 && tc->n_metrics > 0) {
        memcpy(d->metrics, tc->metrics, tc->n_metrics * sizeof(tc->metrics[0]));
        d->n_metrics = tc->n_metrics;
        d->metrics_source = "the model card the Trainer wrote (rounded to 4 decimals there)";
        for (i = 1; i < d->n_metrics; i++) {
            if (strcmp(d->metrics[i].key, "loss") == 0) {
                struct card_metric m = d->metrics[i];
                memmove(&d->metrics[1], &d->metrics[0], i * sizeof(m));
                d->metrics[0] = m;
                break;
            }
        }
    }
}

static void gather_versions_from_card(struct card_data *d)
{
    const struct card_trainer_card *tc = d->trainer_card;
    size_t i, k;

    for (i = 0; tc != NULL && i < tc->n_versions && d->n_versions < CARD_MAX_LIST; i++) {
        bool have = false;
        for (k = 0; k < d->n_versions; k++)
            have = have || strcasecmp(d->versions[k].key, tc->versions[i].key) == 0;
        if (!have)
            d->versions[d->n_versions++] = tc->versions[i];
    }
}

int card_data_gather(const struct card_inputs *in, struct card_data *d)
{
    const char *slash;
    size_t before;
    bool user_named;
    double v;

    memset(d, 0, sizeof(*d));
    d->train_runtime = -1;
    d->repo_id = in->repo_id ? in->repo_id : "";
    d->log = calloc(CARD_MAX_LOG, sizeof(*d->log));
    if (d->log == NULL)
        return -ENOMEM;
    if (card_is_trainer_card(in->existing_readme)) {
        d->trainer_card = calloc(1, sizeof(*d->trainer_card));
        if (d->trainer_card == NULL ||
            card_trainer_card_parse(in->existing_readme, d->trainer_card) < 0)
            return -ENOMEM;
    }
    d->json[J_CONFIG] = parse_obj(in->config_json);
    d->json[J_STATE] = parse_obj(in->trainer_state_json);
    d->json[J_RESULTS] = parse_obj(in->all_results_json);
    d->json[J_FINAL] = parse_obj(in->final_metrics_json);
    d->json[J_HPARAMS] = parse_obj(in->hparams_json);
    d->json[J_USER] = parse_obj(in->user_fields_json);
    d->json[J_VERSIONS] = parse_obj(in->framework_versions_json);

    slash = strrchr(d->repo_id, '/');
    copy_str(d->model_name, sizeof(d->model_name), slash ? slash + 1 : d->repo_id);
    gather_user(d);
    user_named = get_str(d->json[J_USER], "model_name") != NULL;
    if (d->dataset_name == NULL && d->n_datasets > 0)
        d->dataset_name = d->datasets[0];
    gather_config(d);
    merge_trainer_card_facts(d, user_named);
    if (d->dataset_name == NULL && d->n_datasets > 0)
        d->dataset_name = d->datasets[0];
    d->task_name = task_display_name(d->pipeline_tag);
    gather_index_task(d);
    if (d->library_name == NULL && d->model_type != NULL && d->architecture != NULL)
        d->library_name = "transformers";
    gather_params(in, d);

    gather_log_history(d);
    if (d->n_log == 0 && in->lightning_metrics_csv != NULL) {
        d->n_eval_cols = 0;
        gather_metrics_csv(d, in->lightning_metrics_csv);
    }
    merge_trainer_card_results(d);
    eval_cols_loss_first(d);
    gather_metrics(d);
    merge_trainer_card_metrics(d);
    if (get_num(d->json[J_STATE], "global_step", &v) && v > 0) {
        d->trained_steps = v;
        d->trained_steps_known = true;
    }
    if (get_num(d->json[J_STATE], "epoch", &v) && v > 0) {
        d->trained_epochs = v;
        d->trained_epochs_known = true;
    }

    /* hyperparameters, most trusted source first */
    before = d->n_hparams;
    if (d->json[J_HPARAMS] != NULL)
        gather_training_args(d, d->json[J_HPARAMS]);
    hp_from(d, before, CARD_HP_IPC);
    before = d->n_hparams;
    for (size_t i = 0; d->trainer_card != NULL && i < d->trainer_card->n_hparams; i++)
        hp_add(d, d->trainer_card->hparams[i].key, d->trainer_card->hparams[i].value);
    hp_from(d, before, CARD_HP_TRAINER_CARD);
    if (d->json[J_STATE] != NULL) {
        const cJSON *st = d->json[J_STATE];
        double steps;
        before = d->n_hparams;
        hp_num(d, st, "train_batch_size", "train_batch_size", false);
        if (get_num(st, "max_steps", &steps) && steps > 0)
            hp_num(d, st, "max_steps", "training_steps", false);
        hp_num(d, st, "num_train_epochs", "num_epochs", false);
        hp_from(d, before, CARD_HP_STATE);
    }
    before = d->n_hparams;
    if (in->lightning_hparams_yaml != NULL)
        gather_lightning_hparams(d, in->lightning_hparams_yaml);
    hp_from(d, before, CARD_HP_LIGHTNING);
    gather_versions(d);
    gather_versions_from_card(d);
    return 0;
}

void card_data_release(struct card_data *d)
{
    size_t i;

    for (i = 0; i < sizeof(d->json) / sizeof(d->json[0]); i++) {
        cJSON_Delete(d->json[i]);
        d->json[i] = NULL;
    }
    free(d->log);
    d->log = NULL;
    card_trainer_card_release(d->trainer_card);
    free(d->trainer_card);
    d->trainer_card = NULL;
}
