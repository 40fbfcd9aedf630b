/* card.c - the model card's Markdown: sections in the order readers look for them, each wrapped
 * in ckptpush markers so a re-render replaces only what it generated and keeps the user's prose
 * and front matter keys. Facts come from card_data.c, YAML from card_yaml.c, curves from
 * card_svg.c. Pure; any thread.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "card_internal.h"

#ifndef CKPT_VERSION
#define CKPT_VERSION "dev"
#endif

#define CONFIG_HINT "the `card` object of the ckptpushd configuration file"
#define MAX_TABLE_ROWS 300
#define MAX_PICKLES_NAMED 20

static const char *const pickle_exts[] = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"};

bool card_is_pickle_path(const char *path)
{
    size_t n, m, i;

    if (path == NULL)
        return false;
    n = strlen(path);
    for (i = 0; i < sizeof(pickle_exts) / sizeof(pickle_exts[0]); i++) {
        m = strlen(pickle_exts[i]);
        if (n > m && strcmp(path + n - m, pickle_exts[i]) == 0)
            return true;
    }
    return false;
}

static bool pushed(const struct card_inputs *in, const char *suffix, const char **ret_path)
{
    size_t i, n, m = strlen(suffix);

    for (i = 0; i < in->n_pushed && in->pushed_files != NULL; i++) {
        const char *p = in->pushed_files[i];
        if (p == NULL)
            continue;
        n = strlen(p);
        if (n >= m && strcmp(p + n - m, suffix) == 0 &&
            (n == m || p[n - m - 1] == '/' || suffix[0] == '.')) {
            if (ret_path != NULL)
                *ret_path = p;
            return true;
        }
    }
    return false;
}

static void put_4(struct card_buf *b, double v)
{
    card_buf_printf(b, "%.4f", v);
}

static void hint(struct card_buf *b, const char *what)
{
    card_buf_printf(b, "_%s_\n", what);
}

/* ---- sections ---- */

static void put_datasets_phrase(struct card_buf *b, const struct card_data *d)
{
    size_t i;

    if (d->n_dataset_names > 1) {
        /* the Trainer named several: all of them, as it did */
        card_buf_puts(b, " on ");
        for (i = 0; i < d->n_dataset_names; i++) {
            if (i > 0)
                card_buf_puts(b, i + 1 == d->n_dataset_names ? " and " : ", ");
            card_buf_puts(b, "the ");
            card_put_md(b, d->dataset_names[i]);
        }
        card_buf_puts(b, " datasets");
    } else if (d->dataset_name != NULL) {
        card_buf_puts(b, " on the ");
        card_put_md(b, d->dataset_name);
        card_buf_puts(b, " dataset");
    }
}

static void sec_description(struct card_buf *b, const struct card_data *d)
{
    size_t i;

    card_buf_puts(b, "# ");
    card_put_md(b, d->model_name);
    card_buf_puts(b, "\n\n");
    if (d->base_model != NULL) {
        card_buf_puts(b, "This model is a fine-tuned version of ");
        if (card_is_plain(d->base_model, 96)) {
            card_buf_puts(b, "[");
            card_put_md(b, d->base_model);
            card_buf_printf(b, "](https://huggingface.co/%s)", d->base_model);
        } else {
            card_put_md(b, d->base_model);
        }
    } else if (d->from_scratch) {
        card_buf_puts(b, "This model was trained from scratch");
    } else {
        card_buf_puts(b, "This model was trained");
    }
    put_datasets_phrase(b, d);
    card_buf_puts(b, ".\n");
    if (d->n_metrics > 0) {
        card_buf_puts(b, "It achieves the following results on the evaluation set:\n");
        for (i = 0; i < d->n_metrics; i++) {
            char title[CARD_NAME_MAX];
            card_metric_title(title, sizeof(title), d->metrics[i].key);
            card_buf_puts(b, "- ");
            card_put_md(b, title);
            card_buf_puts(b, ": ");
            put_4(b, d->metrics[i].value);
            card_buf_puts(b, "\n");
        }
    }
    if (d->base_model == NULL && !d->from_scratch) {
        card_buf_puts(b, "\n");
        hint(b, "No base model is known: if this model was fine-tuned from one, add `base_model` "
                "to " CONFIG_HINT ".");
    }
    card_buf_puts(b, "\n## Model description\n\n");
    if (d->model_type != NULL || d->architecture != NULL) {
        card_buf_puts(b, "A");
        if (d->model_type != NULL) {
            card_buf_puts(b, " `");
            card_put_md(b, d->model_type);
            card_buf_puts(b, "`");
        }
        card_buf_puts(b, " model");
        if (d->architecture != NULL) {
            card_buf_puts(b, " (");
            card_put_md(b, d->architecture);
            card_buf_puts(b, ")");
        }
        if (d->pipeline_tag != NULL) {
            card_buf_puts(b, " for ");
            card_put_md(b, d->pipeline_tag);
        }
        card_buf_puts(b, ".");
    }
    /* what the run did, not what it planned: a stopped run trained fewer steps than max_steps */
    if (d->trained_steps_known) {
        char n1[64], n2[64];
        card_fmt_num(n1, sizeof(n1), d->trained_steps);
        card_fmt_num(n2, sizeof(n2), round(d->trained_epochs * 1e4) / 1e4);
        card_buf_printf(b, "%sTraining ran for %s steps",
                        b->len && b->data[b->len - 1] == '.' ? " " : "", n1);
        if (d->trained_epochs_known)
            card_buf_printf(b, " (%s epochs)", n2);
        card_buf_puts(b, ", as `trainer_state.json` records.");
    }
    if (d->model_type != NULL || d->architecture != NULL || d->trained_steps_known)
        card_buf_puts(b, "\n\n");
    if (d->model_description != NULL) {
        card_put_md_block(b, d->model_description);
        card_buf_puts(b, "\n");
    } else {
        hint(b, "Add `model_description` to " CONFIG_HINT
                " to say what this model is for and how it differs from its base.");
    }
}

static void put_count(struct card_buf *b, uint64_t n)
{
    char digits[32], out[48];
    size_t len, i, o = 0;

    snprintf(digits, sizeof(digits), "%llu", (unsigned long long)n);
    len = strlen(digits);
    for (i = 0; i < len; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
    card_buf_puts(b, out);
    if (n >= 1000000000ULL)
        card_buf_printf(b, " (%.2f B)", (double)n / 1e9);
    else if (n >= 1000000ULL)
        card_buf_printf(b, " (%.2f M)", (double)n / 1e6);
    else if (n >= 1000ULL)
        card_buf_printf(b, " (%.1f K)", (double)n / 1e3);
}

static void sec_architecture(struct card_buf *b, const struct card_data *d)
{
    size_t i;

    card_buf_puts(b, "## Model architecture and size\n\n");
    if (d->n_config == 0 && !d->params_known) {
        hint(b, "No `config.json` and no safetensors weights were pushed, so the architecture "
                "and size are not known.");
        return;
    }
    card_buf_puts(b, "| Property | Value |\n|:---|:---|\n");
    for (i = 0; i < d->n_config; i++) {
        card_buf_puts(b, "| ");
        card_put_md(b, d->config[i].key);
        card_buf_puts(b, " | ");
        card_put_md(b, d->config[i].value);
        card_buf_puts(b, " |\n");
    }
    if (d->params_known) {
        card_buf_puts(b, "| parameters | ");
        put_count(b, d->n_params);
        card_buf_puts(b, " |\n");
    }
    card_buf_puts(b, "\n");
    if (d->params_known)
        card_buf_printf(b,
                        "The parameter count is the sum over the %zu tensors in the pushed "
                        "safetensors files (%s).\n",
                        d->n_tensors, d->dtypes[0] ? d->dtypes : "dtype unknown");
    else
        hint(b, "The parameter count is unknown: no safetensors weights were pushed.");
}

static void sec_usage(struct card_buf *b, const struct card_data *d, const struct card_inputs *in)
{
    const char *repo = card_is_plain(d->repo_id, 200) ? d->repo_id : "REPO_ID";
    const char *path = NULL;
    size_t i, npickle = 0;

    card_buf_puts(b, "## How to use\n\n");
    if (d->library_name != NULL && strcmp(d->library_name, "transformers") == 0 &&
        d->architecture != NULL) {
        const char *cls = d->auto_class;
        bool tok = pushed(in, "tokenizer.json", NULL) || pushed(in, "tokenizer_config.json", NULL);
        if (cls == NULL)
            cls = card_is_plain(d->architecture, 80) && strchr(d->architecture, '/') == NULL &&
                          strchr(d->architecture, '.') == NULL &&
                          strchr(d->architecture, '-') == NULL
                      ? d->architecture
                      : "AutoModel";
        card_buf_printf(b, "```python\nfrom transformers import %s%s\n\n", cls,
                        tok ? ", AutoTokenizer" : "");
        card_buf_printf(b, "model = %s.from_pretrained(\"%s\")\n", cls, repo);
        if (tok)
            card_buf_printf(b, "tokenizer = AutoTokenizer.from_pretrained(\"%s\")\n", repo);
        if (tok && d->pipeline_tag != NULL && strcmp(d->pipeline_tag, "text-generation") == 0)
            card_buf_puts(b, "\ninputs = tokenizer(\"Hello\", return_tensors=\"pt\")\n"
                             "print(tokenizer.decode(model.generate(**inputs, "
                             "max_new_tokens=20)[0]))\n");
        card_buf_puts(b, "```\n");
    } else if (d->has_config && pushed(in, ".safetensors", &path)) {
        /* PyTorchModelHubMixin saves its init arguments as config.json beside the weights */
        card_buf_printf(
            b,
            "A `config.json` without a transformers architecture beside safetensors "
            "weights is what `PyTorchModelHubMixin` saves; if that is how they were "
            "saved, load them with the model class that was trained.\n\n```python\nfrom "
            "huggingface_hub import PyTorchModelHubMixin\n\n"
            "class MyModel(nn.Module, PyTorchModelHubMixin):  # your class\n"
            "    ...\n\nmodel = MyModel.from_pretrained(\"%s\")\n```\n",
            repo);
    } else if (pushed(in, ".safetensors", &path)) {
        card_buf_printf(b,
                        "```python\nfrom huggingface_hub import hf_hub_download\nfrom "
                        "safetensors.torch import load_file\n\nstate_dict = "
                        "load_file(hf_hub_download(\"%s\", \"%s\"))\n```\n",
                        repo, card_is_plain(path, 200) ? path : "model.safetensors");
    } else if (pushed(in, ".pt", &path) || pushed(in, ".pth", &path) ||
               pushed(in, ".ckpt", &path) || pushed(in, ".bin", &path)) {
        card_buf_printf(b,
                        "```python\nimport torch\nfrom huggingface_hub import hf_hub_download\n\n"
                        "checkpoint = torch.load(hf_hub_download(\"%s\", \"%s\"), "
                        "weights_only=True)\n```\n",
                        repo, card_is_plain(path, 200) ? path : "CHECKPOINT_FILE");
    } else {
        hint(b, "No weights file was pushed with this card, so no loading snippet is given.");
    }
    for (i = 0; i < in->n_pushed && in->pushed_files != NULL; i++)
        npickle += card_is_pickle_path(in->pushed_files[i]);
    if (npickle == 0)
        return;
    card_buf_puts(b,
                  "\n> **Warning:** these files are Python pickles, and loading a pickle can run "
                  "arbitrary code: ");
    for (i = 0, npickle = 0; i < in->n_pushed; i++) {
        if (!card_is_pickle_path(in->pushed_files[i]))
            continue;
        if (npickle++ == MAX_PICKLES_NAMED) {
            card_buf_puts(b, ", ...");
            break;
        }
        card_buf_puts(b, npickle > 1 ? ", `" : "`");
        card_put_md(b, in->pushed_files[i]);
        card_buf_puts(b, "`");
    }
    card_buf_puts(b, ". Safetensors is the safe format to load; open pickles only from a source "
                     "you trust, with `torch.load(..., weights_only=True)`.\n");
}

static void sec_prose(struct card_buf *b, const char *heading, const char *a, const char *a_title,
                      const char *c, const char *c_title, const char *missing)
{
    card_buf_printf(b, "## %s\n\n", heading);
    if (a != NULL) {
        if (a_title)
            card_buf_printf(b, "### %s\n\n", a_title);
        card_put_md_block(b, a);
        card_buf_puts(b, "\n");
    }
    if (c != NULL) {
        if (a != NULL)
            card_buf_puts(b, "\n");
        if (c_title)
            card_buf_printf(b, "### %s\n\n", c_title);
        card_put_md_block(b, c);
        card_buf_puts(b, "\n");
    }
    if (a == NULL && c == NULL)
        hint(b, missing);
}

static void put_dataset_ref(struct card_buf *b, const struct card_data *d)
{
    const char *id = d->n_datasets > 0 ? d->datasets[0] : NULL;

    if (id != NULL && card_is_plain(id, 96) && strchr(id, '/') != NULL) {
        card_buf_puts(b, "[");
        card_put_md(b, d->dataset_name);
        card_buf_printf(b, "](https://huggingface.co/datasets/%s)", id);
    } else {
        card_put_md(b, d->dataset_name);
    }
}

static void sec_training_data(struct card_buf *b, const struct card_data *d)
{
    card_buf_puts(b, "## Training data\n\n");
    if (d->dataset_name == NULL && d->training_data == NULL) {
        hint(b, "Add `datasets` (and `dataset_split`, `dataset_license`) or `training_data` "
                "to " CONFIG_HINT " to say what the model was trained on.");
        return;
    }
    if (d->dataset_name != NULL) {
        card_buf_puts(b, "- Dataset: ");
        put_dataset_ref(b, d);
        card_buf_puts(b, "\n");
        if (d->dataset_config != NULL) {
            card_buf_puts(b, "- Configuration: ");
            card_put_md(b, d->dataset_config);
            card_buf_puts(b, "\n");
        }
        card_buf_puts(b, "- Split: ");
        if (d->dataset_split != NULL)
            card_put_md(b, d->dataset_split);
        else
            card_buf_puts(b, "not given (add `dataset_split`)");
        card_buf_puts(b, "\n- License: ");
        if (d->dataset_license != NULL)
            card_put_md(b, d->dataset_license);
        else
            card_buf_puts(b, "not given (add `dataset_license`)");
        card_buf_puts(b, "\n");
    }
    if (d->training_data != NULL) {
        card_buf_puts(b, "\n");
        card_put_md_block(b, d->training_data);
        card_buf_puts(b, "\n");
    }
}

/* "the TrainingArguments the trainer sent, the model card the Trainer wrote and
 * trainer_state.json": every source that gave a row, most trusted first. */
static void put_hparams_sources(struct card_buf *b, unsigned from)
{
    static const struct {
        unsigned bit;
        const char *text;
    } names[] = {{CARD_HP_IPC, "the TrainingArguments the trainer sent"},
                 {CARD_HP_TRAINER_CARD, "the model card the Trainer wrote"},
                 {CARD_HP_STATE, "trainer_state.json"},
                 {CARD_HP_LIGHTNING, "hparams.yaml"}};
    size_t i, n = 0, total = 0;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        total += (from & names[i].bit) != 0;
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!(from & names[i].bit))
            continue;
        if (n > 0)
            card_buf_puts(b, n + 1 == total ? " and " : ", ");
        card_buf_puts(b, names[i].text);
        n++;
    }
}

static void sec_training_procedure(struct card_buf *b, const struct card_data *d)
{
    size_t i;

    card_buf_puts(b, "## Training procedure\n\n### Training hyperparameters\n\n");
    if (d->n_hparams == 0) {
        hint(b, "No hyperparameters were found: the ckptpush Trainer callback sends them at the "
                "end of training, or keep `trainer_state.json` / Lightning's `hparams.yaml` in "
                "the output directory.");
        return;
    }
    card_buf_puts(b, "The following hyperparameters were used during training (from ");
    put_hparams_sources(b, d->hparams_from);
    card_buf_puts(b, "):\n\n| Hyperparameter | Value |\n|:---|:---|\n");
    for (i = 0; i < d->n_hparams; i++) {
        card_buf_puts(b, "| ");
        card_put_md(b, d->hparams[i].key);
        card_buf_puts(b, " | ");
        card_put_md(b, d->hparams[i].value);
        card_buf_puts(b, " |\n");
    }
}

/* The rows of the results table, the way transformers builds it: one row per evaluation with the
 * training loss last logged at or before it; a final evaluate() repeating a step already shown
 * is left out. Without evaluations, the training rows. */
static size_t result_rows(const struct card_data *d, size_t *rows, size_t max)
{
    size_t i, k, n = 0;
    bool any_eval = false;

    for (i = 0; i < d->n_log; i++)
        any_eval = any_eval || d->log[i].is_eval;
    for (i = 0; i < d->n_log && n < max; i++) {
        const struct card_log *l = &d->log[i];
        bool dup = false;
        if (any_eval != l->is_eval)
            continue;
        for (k = 0; k < n && l->after_train_end; k++)
            dup = dup || d->log[rows[k]].step == l->step;
        if (!dup)
            rows[n++] = i;
    }
    return n;
}

static void sec_results_table(struct card_buf *b, const struct card_data *d)
{
    size_t *rows, n, i, c, every, shown = 0;

    rows = malloc(CARD_MAX_LOG * sizeof(*rows));
    if (rows == NULL) {
        b->err = b->err ? b->err : -ENOMEM;
        return;
    }
    n = result_rows(d, rows, CARD_MAX_LOG);
    every = n > MAX_TABLE_ROWS ? (n + MAX_TABLE_ROWS - 1) / MAX_TABLE_ROWS : 1;
    card_buf_puts(b, "### Training results\n\n| Step | Epoch | Training Loss |");
    for (c = 0; c < d->n_eval_cols; c++) {
        char title[CARD_NAME_MAX];
        if (strcmp(d->eval_cols[c], "loss") == 0) {
            card_buf_puts(b, " Validation Loss |");
            continue;
        }
        card_metric_title(title, sizeof(title), d->eval_cols[c]);
        card_buf_puts(b, " ");
        card_put_md(b, title);
        card_buf_puts(b, " |");
    }
    card_buf_puts(b, "\n|---:|---:|---:|");
    for (c = 0; c < d->n_eval_cols; c++)
        card_buf_puts(b, "---:|");
    card_buf_puts(b, "\n");
    for (i = 0; i < n; i++) {
        const struct card_log *l = &d->log[rows[i]];
        char num[64];
        size_t k;
        bool have_loss = false;
        double loss = 0;

        if (i % every != 0 && i + 1 != n)
            continue;
        shown++;
        for (k = rows[i] + 1; k-- > 0;) {
            if (d->log[k].has_loss && !d->log[k].after_train_end) {
                have_loss = true;
                loss = d->log[k].loss;
                break;
            }
        }
        card_fmt_num(num, sizeof(num), l->step);
        card_buf_printf(b, "| %s | ", num);
        if (l->has_epoch) {
            card_fmt_num(num, sizeof(num), round(l->epoch * 1e4) / 1e4);
            card_buf_puts(b, num);
        } else {
            card_buf_puts(b, "-");
        }
        card_buf_puts(b, " | ");
        if (have_loss)
            put_4(b, loss);
        else
            card_buf_puts(b, "No log");
        card_buf_puts(b, " |");
        for (c = 0; c < d->n_eval_cols; c++) {
            card_buf_puts(b, " ");
            if (l->eval_mask & (1u << c))
                put_4(b, l->eval[c]);
            else
                card_buf_puts(b, "-");
            card_buf_puts(b, " |");
        }
        card_buf_puts(b, "\n");
    }
    if (shown < n)
        card_buf_printf(b, "\n%zu of %zu rows shown, evenly spaced.\n", shown, n);
    if (d->log_truncated)
        card_buf_printf(b, "\nOnly the first %d entries of the log were read.\n", CARD_MAX_LOG);
    free(rows);
}

static void sec_evaluation(struct card_buf *b, const struct card_data *d, bool svg)
{
    const char *split = d->dataset_eval_split ? d->dataset_eval_split : NULL;
    size_t i;

    card_buf_puts(b, "## Evaluation\n\n");
    if (d->n_metrics == 0) {
        hint(b, "No evaluation metrics were found: evaluate during or after training (they are "
                "read from the trainer's final message, `all_results.json`, `trainer_state.json` "
                "or `metrics.csv`).");
    } else {
        card_buf_puts(b, "Final evaluation");
        if (d->dataset_name != NULL) {
            card_buf_puts(b, " on ");
            put_dataset_ref(b, d);
            if (split != NULL) {
                card_buf_puts(b, " (split ");
                card_put_md(b, split);
                card_buf_puts(b, ")");
            }
        }
        card_buf_printf(b, ", from %s:\n\n| Metric | Value |\n|:---|---:|\n", d->metrics_source);
        for (i = 0; i < d->n_metrics; i++) {
            char title[CARD_NAME_MAX], num[64];
            card_metric_title(title, sizeof(title), d->metrics[i].key);
            card_fmt_num(num, sizeof(num), d->metrics[i].value);
            card_buf_puts(b, "| ");
            card_put_md(b, title);
            card_buf_printf(b, " | %s |\n", num);
        }
        if (d->dataset_name == NULL || split == NULL || d->index_task == NULL ||
            d->index_task_base_arch != NULL)
            card_buf_puts(b, "\n");
        if (d->dataset_name == NULL)
            hint(b, "The evaluation dataset is not named: add `datasets` to " CONFIG_HINT
                    " so that the Hub can list these results.");
        else if (d->index_task == NULL)
            hint(b, "These results are not in the `model-index` metadata: the Hub needs the task, "
                    "and without the model's `config.json` it is not known. Add `pipeline_tag` "
                    "to " CONFIG_HINT ".");
        if (d->dataset_name != NULL && split == NULL)
            hint(b,
                 "The evaluation split is not named: add `dataset_eval_split` to " CONFIG_HINT ".");
        if (d->index_task_base_arch != NULL) {
            if (d->dataset_name == NULL || split == NULL)
                card_buf_puts(b, "\n");
            /* an inference, so the card says what it rests on and how to correct it */
            card_buf_puts(b, "_The task in the `model-index` metadata, `");
            card_put_md(b, d->index_task);
            card_buf_puts(b, "`, is the task of the base model's architecture (`");
            card_put_md(b, d->index_task_base_arch);
            card_buf_puts(b, "` for ");
            card_put_md(b, d->base_model);
            card_buf_puts(b, "): this run's `config.json` was not available to confirm it. Add "
                             "`pipeline_tag` to " CONFIG_HINT
                             " if the fine-tuned model has another head._\n");
        }
        card_buf_puts(b, "\n");
    }
    if (d->n_log > 0) {
        if (d->n_metrics == 0)
            card_buf_puts(b, "\n");
        sec_results_table(b, d);
    }
    if (svg)
        card_buf_puts(b, "\n![Training curves](" CARD_SVG_NAME ")\n");
}

static void put_duration(struct card_buf *b, double s)
{
    long long t = (long long)llround(s);

    if (s < 60) {
        card_buf_printf(b, "%.1f s", s);
        return;
    }
    if (t >= 86400)
        card_buf_printf(b, "%lld d ", t / 86400);
    if (t >= 3600)
        card_buf_printf(b, "%lld h ", t / 3600 % 24);
    card_buf_printf(b, "%lld min %lld s", t / 60 % 60, t % 60);
}

static void sec_hardware(struct card_buf *b, const struct card_data *d,
                         const struct card_inputs *in)
{
    card_buf_puts(b, "## Hardware and duration\n\n");
    if (in->hardware != NULL && in->hardware[0] != '\0') {
        card_buf_puts(b, "- Hardware: ");
        card_put_md(b, in->hardware);
        card_buf_puts(b, "\n");
    }
    if (in->duration_s >= 0 && isfinite(in->duration_s)) {
        card_buf_puts(b, "- Duration: ");
        put_duration(b, in->duration_s);
        card_buf_puts(b, "\n");
    } else if (d->train_runtime >= 0) {
        card_buf_puts(b, "- Training time: ");
        put_duration(b, d->train_runtime);
        card_buf_puts(b, " (`train_runtime`)\n");
    }
    if ((in->hardware == NULL || in->hardware[0] == '\0') &&
        ((in->duration_s >= 0 && isfinite(in->duration_s)) || d->train_runtime >= 0))
        card_buf_puts(b, "\n");
    if (in->hardware == NULL || in->hardware[0] == '\0')
        hint(b, "The hardware is not known: add `hardware` to " CONFIG_HINT ".");
}

static void sec_versions(struct card_buf *b, const struct card_data *d)
{
    size_t i;

    card_buf_puts(b, "## Framework versions\n\n");
    for (i = 0; i < d->n_versions; i++) {
        card_buf_puts(b, "- ");
        card_put_md(b, d->versions[i].key);
        card_buf_puts(b, " ");
        card_put_md(b, d->versions[i].value);
        card_buf_puts(b, "\n");
    }
    card_buf_puts(b, "- ckptpush " CKPT_VERSION "\n");
}

static void sec_license(struct card_buf *b, const struct card_data *d)
{
    card_buf_puts(b, "## License\n\n");
    if (d->license == NULL) {
        hint(b, "No license was given: add `license` to " CONFIG_HINT ".");
        return;
    }
    if (d->license_from_trainer_card) {
        /* transformers copies the base model's license when the script gives none */
        card_buf_puts(b, "The model card the Trainer wrote gives the license as `");
        card_put_md(b, d->license);
        card_buf_puts(b, "` (transformers takes the base model's license when the training "
                         "script names none). ");
        hint(b, "Add `license` to " CONFIG_HINT " to confirm or change it.");
        return;
    }
    card_buf_puts(b, "This model is released under the `");
    card_put_md(b, d->license);
    card_buf_puts(b, "` license.\n");
}

/* ---- assembly and update in place ---- */

enum {
    S_DESCRIPTION,
    S_ARCHITECTURE,
    S_USAGE,
    S_INTENDED,
    S_BIAS,
    S_DATA,
    S_PROCEDURE,
    S_EVALUATION,
    S_HARDWARE,
    S_VERSIONS,
    S_LICENSE,
    S_COUNT
};

static const char *const section_names[S_COUNT] = {
    "description", "architecture", "usage",    "intended-use", "bias",   "training-data",
    "training",    "evaluation",   "hardware", "frameworks",   "license"};

static void render_section(struct card_buf *b, int s, const struct card_data *d,
                           const struct card_inputs *in, bool svg)
{
    card_buf_printf(b, "<!-- ckptpush:begin %s -->\n", section_names[s]);
    switch (s) {
    case S_DESCRIPTION:
        sec_description(b, d);
        break;
    case S_ARCHITECTURE:
        sec_architecture(b, d);
        break;
    case S_USAGE:
        sec_usage(b, d, in);
        break;
    case S_INTENDED:
        sec_prose(b, "Intended uses & limitations", d->intended_use, "Intended uses",
                  d->limitations, "Limitations",
                  "Add `intended_use` and `limitations` to " CONFIG_HINT
                  " to say what this model is for and where it fails.");
        break;
    case S_BIAS:
        sec_prose(b, "Bias, risks and ethical considerations", d->bias_risks, NULL, NULL, NULL,
                  "Add `bias_risks` to " CONFIG_HINT
                  " to describe known biases and risks of this model and its training data.");
        break;
    case S_DATA:
        sec_training_data(b, d);
        break;
    case S_PROCEDURE:
        sec_training_procedure(b, d);
        break;
    case S_EVALUATION:
        sec_evaluation(b, d, svg);
        break;
    case S_HARDWARE:
        sec_hardware(b, d, in);
        break;
    case S_VERSIONS:
        sec_versions(b, d);
        break;
    case S_LICENSE:
        sec_license(b, d);
        break;
    }
    card_buf_printf(b, "<!-- ckptpush:end %s -->\n", section_names[s]);
}

struct span {
    size_t begin, end;
    bool found;
};

/* The last begin marker before the first end marker: an orphaned begin earlier in the user's
 * text is left alone rather than swallowing what follows it. */
static struct span find_span(const char *body, int s)
{
    char begin[64], end[64];
    struct span sp = {0, 0, false};
    const char *e, *bpos, *p;

    snprintf(begin, sizeof(begin), "<!-- ckptpush:begin %s -->", section_names[s]);
    snprintf(end, sizeof(end), "<!-- ckptpush:end %s -->", section_names[s]);
    e = strstr(body, end);
    if (e == NULL)
        return sp;
    bpos = NULL;
    for (p = strstr(body, begin); p != NULL && p < e; p = strstr(p + 1, begin))
        bpos = p;
    if (bpos == NULL)
        return sp;
    sp.begin = (size_t)(bpos - body);
    sp.end = (size_t)(e - body) + strlen(end);
    if (body[sp.end] == '\n')
        sp.end++;
    sp.found = true;
    return sp;
}

static void render_body(struct card_buf *b, const char *body, const struct card_data *d,
                        const struct card_inputs *in, bool svg)
{
    struct span spans[S_COUNT];
    int order[S_COUNT], n = 0, i, j, last = -1;
    size_t pos = 0;

    for (i = 0; i < S_COUNT; i++) {
        spans[i] = body ? find_span(body, i) : (struct span){0, 0, false};
        /* overlapping spans (hand-edited markers) count as missing */
        for (j = 0; j < i && spans[i].found; j++)
            if (spans[j].found && spans[i].begin < spans[j].end && spans[j].begin < spans[i].end)
                spans[i].found = false;
        if (spans[i].found)
            order[n++] = i;
    }
    for (i = 1; i < n; i++)
        for (j = i; j > 0 && spans[order[j]].begin < spans[order[j - 1]].begin; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    if (n > 0)
        last = order[n - 1];
    for (i = 0; i < n; i++) {
        int s = order[i];
        card_buf_put(b, body + pos, spans[s].begin - pos);
        render_section(b, s, d, in, svg);
        pos = spans[s].end;
        if (s != last)
            continue;
        /* sections new to this README go after the last generated one */
        for (j = 0; j < S_COUNT; j++) {
            if (!spans[j].found) {
                card_buf_puts(b, "\n");
                render_section(b, j, d, in, svg);
            }
        }
    }
    if (body != NULL)
        card_buf_puts(b, body + pos);
    if (n > 0)
        return;
    if (body != NULL && body[0] != '\0') {
        if (b->len > 0 && b->data[b->len - 1] != '\n')
            card_buf_puts(b, "\n");
        card_buf_puts(b, "\n");
    }
    for (j = 0; j < S_COUNT; j++) {
        if (j > 0)
            card_buf_puts(b, "\n");
        render_section(b, j, d, in, svg);
    }
}

/* Splits "---\n<yaml>\n---\n<body>"; without a closed front matter all of it is body. */
static void split_front_matter(const char *text, const char **ret_fm, size_t *ret_fm_len,
                               const char **ret_body)
{
    const char *p;

    *ret_fm = NULL;
    *ret_fm_len = 0;
    *ret_body = text;
    if (strncmp(text, "---\n", 4) != 0 && strncmp(text, "---\r\n", 5) != 0)
        return;
    p = strchr(text, '\n') + 1;
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        while (len > 0 && (p[len - 1] == '\r' || p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 3 && strncmp(p, "---", 3) == 0) {
            *ret_fm = strchr(text, '\n') + 1;
            *ret_fm_len = (size_t)(p - *ret_fm);
            *ret_body = nl ? nl + 1 : p + strlen(p);
            return;
        }
        if (nl == NULL)
            break;
        p = nl + 1;
    }
}

int card_render(const struct card_inputs *in, char **ret_readme, char **ret_svg,
                struct ckpt_err *err)
{
    const char *fm = NULL, *body = NULL;
    size_t fm_len = 0;
    struct card_data d;
    struct card_buf b;
    char *svg, *readme;
    int r, svg_err;

    if (in == NULL || ret_readme == NULL || ret_svg == NULL)
        return ckpt_err_set(err, CKPT_ERR_INPUT, -EINVAL, "card inputs missing");
    if (in->existing_readme != NULL &&
        strnlen(in->existing_readme, CARD_MAX_README + 1) > CARD_MAX_README)
        return ckpt_err_set(err, CKPT_ERR_INPUT, -EFBIG,
                            "existing README.md is larger than %d bytes", CARD_MAX_README);
    r = card_data_gather(in, &d);
    if (r < 0) {
        card_data_release(&d);
        return ckpt_err_set(err, CKPT_ERR_IO, r, "cannot gather model card facts: out of memory");
    }
    svg = card_svg_render(&d, &svg_err);
    if (svg_err < 0) {
        card_data_release(&d);
        return ckpt_err_set(err, CKPT_ERR_IO, svg_err, "cannot render '%s': %s", CARD_SVG_NAME,
                            svg_err == -EFBIG ? "too large" : "out of memory");
    }
    if (in->existing_readme != NULL) {
        split_front_matter(in->existing_readme, &fm, &fm_len, &body);
        /* transformers' own card has no user prose: replace it whole */
        if (card_is_trainer_card(in->existing_readme))
            body = NULL;
    }
    card_buf_init(&b, CARD_MAX_README);
    card_yaml_front_matter(&b, &d, fm, fm_len);
    if (body == NULL || body[0] != '\n')
        card_buf_puts(&b, "\n");
    render_body(&b, body, &d, in, svg != NULL);
    card_data_release(&d);
    if (b.err) {
        r = b.err;
        card_buf_release(&b);
        free(svg);
        return ckpt_err_set(err, CKPT_ERR_IO, r, "cannot render README.md: %s",
                            r == -EFBIG ? "larger than the card limit" : "out of memory");
    }
    readme = card_buf_steal(&b);
    if (readme == NULL) {
        free(svg);
        return ckpt_err_set(err, CKPT_ERR_IO, -ENOMEM, "cannot render README.md: out of memory");
    }
    *ret_readme = readme;
    *ret_svg = svg;
    return 0;
}
