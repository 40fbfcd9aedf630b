/* card_trainer.c - reads the model card transformers' Trainer generated (README.md with its
 * "generated automatically" comment) as a source of run facts: front matter, summary sentence,
 * hyperparameter list, results table, framework versions. Only the fixed layout transformers
 * writes is understood; anything else is skipped. Untrusted text: every string is bounded and
 * stored raw, escaped later where it lands. Pure; any thread.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "card_internal.h"

#define TRAINER_MARKER                                                                             \
    "generated automatically according to the information the Trainer had access to"
#define MAX_LINE 4096

bool card_is_trainer_card(const char *readme)
{
    /* the comment sits right after the front matter; a marker deep in user prose is not it */
    const char *p;

    if (readme == NULL)
        return false;
    p = strstr(readme, TRAINER_MARKER);
    return p != NULL && p - readme < 64 * 1024;
}

/* Copies n bytes into the arena, cut at a UTF-8 boundary to CARD_MAX_FIELD; NULL when the arena
 * is full or the string is empty. */
static const char *keep(struct card_trainer_card *tc, const char *s, size_t n)
{
    char *dst;

    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    while (n > 0 && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    if (n > CARD_MAX_FIELD) {
        n = CARD_MAX_FIELD;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    if (n == 0 || tc->arena_used + n + 1 > sizeof(tc->arena))
        return NULL;
    dst = tc->arena + tc->arena_used;
    memcpy(dst, s, n);
    dst[n] = '\0';
    tc->arena_used += n + 1;
    return dst;
}

static void copy_bounded(char *dst, size_t size, const char *s, size_t n)
{
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    while (n > 0 && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    if (n >= size) {
        n = size - 1;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* A YAML scalar as yaml.dump writes one: plain, 'single' ('' is a quote) or "double" (the
 * common backslash escapes). Flow collections and anchors are not scalars here. */
static const char *yaml_scalar(struct card_trainer_card *tc, const char *s, size_t n)
{
    char tmp[512];
    size_t i, o = 0;

    while (n > 0 && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    if (n == 0 || s[0] == '[' || s[0] == '{' || s[0] == '&' || s[0] == '*' || s[0] == '!' ||
        s[0] == '|' || s[0] == '>')
        return NULL;
    if ((s[0] != '\'' && s[0] != '"') || n < 2 || s[n - 1] != s[0])
        return keep(tc, s, n);
    for (i = 1; i + 1 < n && o + 1 < sizeof(tmp); i++) {
        if (s[0] == '\'' && s[i] == '\'' && s[i + 1] == '\'')
            i++;
        else if (s[0] == '"' && s[i] == '\\' && i + 2 < n) {
            char c = s[++i];
            tmp[o++] = c == 'n' ? '\n' : c == 't' ? '\t' : c;
            continue;
        }
        tmp[o++] = s[i];
    }
    return keep(tc, tmp, o);
}

/* "Validation Loss" -> "loss", "F1 Macro" -> "f1_macro": the inverse of card_metric_title. */
static void metric_key(char *dst, size_t size, const char *title, size_t n)
{
    size_t i, o = 0;

    if (n >= 11 && strncmp(title, "Validation ", 11) == 0) {
        title += 11;
        n -= 11;
    }
    for (i = 0; i < n && o + 1 < size; i++) {
        char c = title[i];
        dst[o++] = c == ' ' ? '_' : (char)tolower((unsigned char)c);
    }
    dst[o] = '\0';
}

static bool parse_num(const char *s, size_t n, double *ret)
{
    char tmp[64], *end;

    copy_bounded(tmp, sizeof(tmp), s, n);
    if (tmp[0] == '\0')
        return false;
    *ret = strtod(tmp, &end);
    return *end == '\0' && isfinite(*ret);
}

/* ---- front matter ---- */

enum { FM_NONE, FM_LANGUAGE, FM_TAGS, FM_DATASETS, FM_INDEX };

static void front_matter_line(struct card_trainer_card *tc, const char *line, size_t len,
                              int *block, int *sub)
{
    size_t ind = 0;
    const char *colon;

    while (ind < len && line[ind] == ' ')
        ind++;
    if (ind == 0 && len > 0 && line[0] != '-' && line[0] != '#') {
        size_t klen;
        const char *v;

        *block = FM_NONE;
        colon = memchr(line, ':', len);
        if (colon == NULL)
            return;
        klen = (size_t)(colon - line);
        v = colon + 1;
#define KEY(k) (klen == strlen(k) && strncmp(line, k, klen) == 0)
        if (KEY("language"))
            *block = FM_LANGUAGE;
        else if (KEY("tags"))
            *block = FM_TAGS;
        else if (KEY("datasets"))
            *block = FM_DATASETS;
        else if (KEY("model-index"))
            *block = FM_INDEX;
        else if (KEY("license"))
            tc->license = yaml_scalar(tc, v, (size_t)(line + len - v));
        else if (KEY("base_model"))
            tc->base_model = yaml_scalar(tc, v, (size_t)(line + len - v));
        else if (KEY("library_name"))
            tc->library_name = yaml_scalar(tc, v, (size_t)(line + len - v));
#undef KEY
        /* `language: en` is a one-item list */
        if (*block == FM_LANGUAGE && tc->n_languages < CARD_MAX_LIST &&
            (v = yaml_scalar(tc, v, (size_t)(line + len - v))) != NULL)
            tc->languages[tc->n_languages++] = v;
        else if (*block == FM_DATASETS && tc->n_datasets < CARD_MAX_LIST &&
                 (v = yaml_scalar(tc, colon + 1, (size_t)(line + len - colon - 1))) != NULL)
            tc->datasets[tc->n_datasets++] = v;
        return;
    }
    if (*block == FM_INDEX) {
        /* - name: X / results: / - task: / type: X / dataset: / name: X */
        const char *s = line + ind;
        size_t n = len - ind;
        if (n >= 2 && s[0] == '-' && s[1] == ' ') {
            s += 2;
            n -= 2;
            while (n > 0 && *s == ' ') {
                s++;
                n--;
            }
        }
        if (n >= 5 && strncmp(s, "task:", 5) == 0)
            *sub = 1;
        else if (n >= 8 && (strncmp(s, "dataset:", 8) == 0 || strncmp(s, "metrics:", 8) == 0))
            *sub = 2;
        else if (n >= 5 && strncmp(s, "name:", 5) == 0 && ind == 0 && tc->model_name == NULL)
            tc->model_name = yaml_scalar(tc, s + 5, n - 5);
        else if (n >= 5 && strncmp(s, "type:", 5) == 0 && *sub == 1 && tc->task_type == NULL)
            tc->task_type = yaml_scalar(tc, s + 5, n - 5);
        return;
    }
    if (len > ind + 1 && line[ind] == '-' && line[ind + 1] == ' ') {
        const char *v = yaml_scalar(tc, line + ind + 2, len - ind - 2);
        if (v == NULL)
            return;
        if (*block == FM_LANGUAGE && tc->n_languages < CARD_MAX_LIST)
            tc->languages[tc->n_languages++] = v;
        else if (*block == FM_TAGS && tc->n_tags < CARD_MAX_LIST)
            tc->tags[tc->n_tags++] = v;
        else if (*block == FM_DATASETS && tc->n_datasets < CARD_MAX_LIST)
            tc->datasets[tc->n_datasets++] = v;
    }
}

/* ---- body ---- */

enum { B_NONE, B_SUMMARY, B_HPARAMS, B_RESULTS, B_VERSIONS };

/* "This model is a fine-tuned version of [X](https://huggingface.co/X) on the D dataset." or
 * "This model was trained from scratch on the A, the B and the C datasets." */
static void summary_sentence(struct card_trainer_card *tc, const char *line, size_t len)
{
    static const char ft[] = "This model is a fine-tuned version of [";
    static const char scratch[] = "This model was trained from scratch on ";
    const char *on, *end = line + len, *p;

    if (len > sizeof(ft) - 1 && strncmp(line, ft, sizeof(ft) - 1) == 0) {
        const char *close = memchr(line, ']', len);
        if (close != NULL && tc->base_model == NULL)
            tc->base_model =
                keep(tc, line + sizeof(ft) - 1, (size_t)(close - line) - (sizeof(ft) - 1));
        p = close ? close : line;
        on = NULL;
        for (; p + 8 <= end; p++)
            if (strncmp(p, ") on the", 8) == 0 || strncmp(p, ") on an ", 8) == 0) {
                on = p + 1;
                break;
            }
    } else if (len > sizeof(scratch) - 1 && strncmp(line, scratch, sizeof(scratch) - 1) == 0) {
        tc->from_scratch = true;
        on = line + sizeof(scratch) - 5; /* at " on " */
    } else {
        return;
    }
    if (on == NULL || (size_t)(end - on) < 5 || strncmp(on, " on the ", 8) != 0)
        return; /* "on an unknown dataset." */
    on += 8;
    while (end > on && (end[-1] == '.' || isspace((unsigned char)end[-1])))
        end--;
    if ((size_t)(end - on) > 8 && strncmp(end - 8, " dataset", 8) == 0) {
        const char *v = keep(tc, on, (size_t)(end - on) - 8);
        if (v != NULL && tc->n_dataset_names < CARD_MAX_LIST)
            tc->dataset_names[tc->n_dataset_names++] = v;
        return;
    }
    if ((size_t)(end - on) <= 9 || strncmp(end - 9, " datasets", 9) != 0)
        return;
    end -= 9;
    /* "A, the B and the C": split on ", the " and the last " and the " */
    while (on < end && tc->n_dataset_names < CARD_MAX_LIST) {
        const char *next = NULL, *q;
        size_t skip = 0;
        for (q = on; q < end; q++) {
            if ((size_t)(end - q) >= 6 && strncmp(q, ", the ", 6) == 0) {
                next = q;
                skip = 6;
                break;
            }
            if ((size_t)(end - q) >= 9 && strncmp(q, " and the ", 9) == 0) {
                next = q;
                skip = 9;
                break;
            }
        }
        const char *v = keep(tc, on, (size_t)((next ? next : end) - on));
        if (v != NULL)
            tc->dataset_names[tc->n_dataset_names++] = v;
        if (next == NULL)
            break;
        on = next + skip;
    }
}

/* "- Loss: 4.1618" */
static void summary_metric(struct card_trainer_card *tc, const char *line, size_t len)
{
    const char *colon = memchr(line, ':', len);
    double v;

    if (len < 3 || strncmp(line, "- ", 2) != 0 || colon == NULL ||
        tc->n_metrics >= CARD_MAX_METRICS ||
        !parse_num(colon + 1, (size_t)(line + len - colon - 1), &v))
        return;
    metric_key(tc->metrics[tc->n_metrics].key, CARD_NAME_MAX, line + 2, (size_t)(colon - line - 2));
    if (tc->metrics[tc->n_metrics].key[0] == '\0')
        return;
    tc->metrics[tc->n_metrics].value = v;
    tc->n_metrics++;
}

/* "- learning_rate: 0.0005" */
static void hparam_line(struct card_trainer_card *tc, const char *line, size_t len)
{
    const char *colon = memchr(line, ':', len);
    struct card_kv *kv;

    if (len < 3 || strncmp(line, "- ", 2) != 0 || colon == NULL || colon == line + 2 ||
        tc->n_hparams >= CARD_MAX_HPARAMS)
        return;
    kv = &tc->hparams[tc->n_hparams];
    copy_bounded(kv->key, sizeof(kv->key), line + 2, (size_t)(colon - line - 2));
    copy_bounded(kv->value, sizeof(kv->value), colon + 1, (size_t)(line + len - colon - 1));
    if (kv->key[0] != '\0' && kv->value[0] != '\0')
        tc->n_hparams++;
}

/* "- Transformers 5.17.0" */
static void version_line(struct card_trainer_card *tc, const char *line, size_t len)
{
    const char *sp;
    struct card_kv *kv;

    if (len < 4 || strncmp(line, "- ", 2) != 0 || tc->n_versions >= CARD_MAX_LIST)
        return;
    for (sp = line + len - 1; sp > line + 2 && *sp != ' '; sp--)
        ;
    if (sp <= line + 2)
        return;
    kv = &tc->versions[tc->n_versions];
    copy_bounded(kv->key, sizeof(kv->key), line + 2, (size_t)(sp - line - 2));
    copy_bounded(kv->value, sizeof(kv->value), sp + 1, (size_t)(line + len - sp - 1));
    if (kv->key[0] != '\0' && kv->value[0] != '\0')
        tc->n_versions++;
}

/* Splits a "| a | b |" row into at most max cells (pointers into line, not terminated). */
static size_t table_cells(const char *line, size_t len, const char **cells, size_t *lens,
                          size_t max)
{
    const char *p = line, *end = line + len;
    size_t n = 0;

    while (end > p && isspace((unsigned char)end[-1]))
        end--;
    if (p >= end || *p != '|' || end[-1] != '|')
        return 0;
    p++;
    while (p < end && n < max) {
        const char *bar = memchr(p, '|', (size_t)(end - p));
        if (bar == NULL)
            break;
        cells[n] = p;
        lens[n] = (size_t)(bar - p);
        n++;
        p = bar + 1;
    }
    return n;
}

enum { COL_SKIP = -1, COL_STEP = -2, COL_EPOCH = -3, COL_LOSS = -4 };
#define MAX_TABLE_COLS (CARD_MAX_EVAL_COLS + 3)

struct results_table {
    int kind[MAX_TABLE_COLS];
    size_t ncols;
    int state; /* 0 header, 1 separator, 2 rows */
};

static int results_line(struct card_trainer_card *tc, struct results_table *t, const char *line,
                        size_t len)
{
    const char *cells[MAX_TABLE_COLS];
    size_t lens[MAX_TABLE_COLS], n, i;
    struct card_log row;
    bool has_step = false;

    n = table_cells(line, len, cells, lens, MAX_TABLE_COLS);
    if (n == 0)
        return 0;
    if (t->state == 0) {
        for (i = 0; i < n; i++) {
            char title[CARD_NAME_MAX], key[CARD_NAME_MAX];
            copy_bounded(title, sizeof(title), cells[i], lens[i]);
            t->kind[i] = COL_SKIP;
            if (strcmp(title, "Step") == 0)
                t->kind[i] = COL_STEP;
            else if (strcmp(title, "Epoch") == 0)
                t->kind[i] = COL_EPOCH;
            else if (strcmp(title, "Training Loss") == 0)
                t->kind[i] = COL_LOSS;
            else if (title[0] != '\0' && tc->n_eval_cols < CARD_MAX_EVAL_COLS) {
                metric_key(key, sizeof(key), title, strlen(title));
                memcpy(tc->eval_cols[tc->n_eval_cols], key, CARD_NAME_MAX);
                t->kind[i] = (int)tc->n_eval_cols++;
            }
        }
        t->ncols = n;
        t->state = 1;
        return 0;
    }
    if (t->state == 1) {
        t->state = 2;
        return 0;
    }
    if (tc->log == NULL && (tc->log = calloc(CARD_MAX_LOG, sizeof(*tc->log))) == NULL)
        return -ENOMEM;
    memset(&row, 0, sizeof(row));
    for (i = 0; i < n && i < t->ncols; i++) {
        double v;
        if (t->kind[i] == COL_SKIP || !parse_num(cells[i], lens[i], &v))
            continue; /* "No log" */
        if (t->kind[i] == COL_STEP) {
            row.step = v;
            has_step = true;
        } else if (t->kind[i] == COL_EPOCH) {
            row.epoch = v;
            row.has_epoch = true;
        } else if (t->kind[i] == COL_LOSS) {
            row.loss = v;
            row.has_loss = true;
        } else {
            row.eval[t->kind[i]] = v;
            row.eval_mask |= 1u << t->kind[i];
            row.is_eval = true;
        }
    }
    if (has_step && (row.has_loss || row.is_eval) && tc->n_log < CARD_MAX_LOG)
        tc->log[tc->n_log++] = row;
    return 0;
}

int card_trainer_card_parse(const char *text, struct card_trainer_card *tc)
{
    const char *p = text;
    int block = FM_NONE, sub = 0, section = B_NONE, r = 0;
    bool in_fm = false, title_seen = false;
    struct results_table table = {.state = 0};
    size_t lineno = 0;

    while (p != NULL && *p != '\0' && r == 0) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        const char *line = p;

        p = nl ? nl + 1 : NULL;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        if (len > MAX_LINE)
            continue;
        if (lineno++ == 0 && len == 3 && strncmp(line, "---", 3) == 0) {
            in_fm = true;
            continue;
        }
        if (in_fm) {
            if (len == 3 && strncmp(line, "---", 3) == 0)
                in_fm = false;
            else
                front_matter_line(tc, line, len, &block, &sub);
            continue;
        }
        if (len >= 2 && line[0] == '#') {
            if (strncmp(line, "# ", 2) == 0 && !title_seen) {
                title_seen = true;
                section = B_SUMMARY;
                if (tc->model_name == NULL)
                    tc->model_name = keep(tc, line + 2, len - 2);
            } else if (strncmp(line, "### Training hyperparameters", 28) == 0) {
                section = B_HPARAMS;
            } else if (strncmp(line, "### Training results", 20) == 0) {
                section = B_RESULTS;
            } else if (strncmp(line, "### Framework versions", 22) == 0) {
                section = B_VERSIONS;
            } else {
                section = B_NONE;
            }
            continue;
        }
        switch (section) {
        case B_SUMMARY:
            summary_sentence(tc, line, len);
            summary_metric(tc, line, len);
            break;
        case B_HPARAMS:
            hparam_line(tc, line, len);
            break;
        case B_RESULTS:
            r = results_line(tc, &table, line, len);
            break;
        case B_VERSIONS:
            version_line(tc, line, len);
            break;
        }
    }
    return r;
}

void card_trainer_card_release(struct card_trainer_card *tc)
{
    if (tc == NULL)
        return;
    free(tc->log);
    tc->log = NULL;
}
