/* card_yaml.c - the card's YAML front matter: the keys the card owns (library_name, license,
 * base_model, datasets, language, tags, pipeline_tag, model-index), replaced in place inside the
 * front matter a README already has, every other key kept byte for byte. Every string is written
 * double-quoted and escaped; pure, any thread.
 */
#include <stdio.h>
#include <string.h>

#include "card_internal.h"

static const char *const owned_keys[] = {"library_name", "license", "base_model",   "datasets",
                                         "language",     "tags",    "pipeline_tag", "model-index"};
#define N_OWNED (sizeof(owned_keys) / sizeof(owned_keys[0]))

static void put_list(struct card_buf *b, const char *key, const char *const *items, size_t n,
                     const char *extra)
{
    size_t i;

    card_buf_printf(b, "%s:\n", key);
    for (i = 0; i < n; i++) {
        card_buf_puts(b, "- ");
        card_put_yaml_str(b, items[i]);
        card_buf_puts(b, "\n");
    }
    if (extra != NULL) {
        card_buf_puts(b, "- ");
        card_put_yaml_str(b, extra);
        card_buf_puts(b, "\n");
    }
}

static void put_scalar(struct card_buf *b, const char *key, const char *value)
{
    card_buf_printf(b, "%s: ", key);
    card_put_yaml_str(b, value);
    card_buf_puts(b, "\n");
}

static void put_model_index(struct card_buf *b, const struct card_data *d)
{
    const char *ds_type = d->n_datasets > 0 ? d->datasets[0] : d->dataset_name;
    const char *split = d->dataset_eval_split ? d->dataset_eval_split : d->dataset_split;
    size_t i;

    card_buf_puts(b, "model-index:\n- name: ");
    card_put_yaml_str(b, d->model_name);
    /* the Hub requires task.type, dataset.name/type and at least a metric: without them an
     * empty list, as transformers writes, rather than invented values (card.h says where the
     * task comes from; the Evaluation section says why results are missing) */
    if (d->n_metrics == 0 || d->index_task == NULL || ds_type == NULL) {
        card_buf_puts(b, "\n  results: []\n");
        return;
    }
    card_buf_puts(b, "\n  results:\n  - task:\n      type: ");
    card_put_yaml_str(b, d->index_task);
    if (d->index_task_name != NULL) {
        card_buf_puts(b, "\n      name: ");
        card_put_yaml_str(b, d->index_task_name);
    }
    card_buf_puts(b, "\n    dataset:\n      name: ");
    card_put_yaml_str(b, d->dataset_name ? d->dataset_name : ds_type);
    card_buf_puts(b, "\n      type: ");
    card_put_yaml_str(b, ds_type);
    if (d->dataset_config != NULL) {
        card_buf_puts(b, "\n      config: ");
        card_put_yaml_str(b, d->dataset_config);
    }
    if (split != NULL) {
        card_buf_puts(b, "\n      split: ");
        card_put_yaml_str(b, split);
    }
    card_buf_puts(b, "\n    metrics:\n");
    for (i = 0; i < d->n_metrics; i++) {
        char title[CARD_NAME_MAX];
        card_metric_title(title, sizeof(title), d->metrics[i].key);
        card_buf_puts(b, "    - type: ");
        card_put_yaml_str(b, d->metrics[i].key);
        card_buf_puts(b, "\n      value: ");
        card_put_yaml_num(b, d->metrics[i].value);
        card_buf_puts(b, "\n      name: ");
        card_put_yaml_str(b, title);
        card_buf_puts(b, "\n");
    }
}

/* Writes the owned key if the run has a value for it; returns whether it did. */
static bool put_owned(struct card_buf *b, const struct card_data *d, const char *key)
{
    if (strcmp(key, "library_name") == 0 && d->library_name != NULL)
        put_scalar(b, key, d->library_name);
    else if (strcmp(key, "license") == 0 && d->license != NULL)
        put_scalar(b, key, d->license);
    else if (strcmp(key, "base_model") == 0 && d->base_model != NULL)
        put_scalar(b, key, d->base_model);
    else if (strcmp(key, "datasets") == 0 && d->n_datasets > 0)
        put_list(b, key, d->datasets, d->n_datasets, NULL);
    else if (strcmp(key, "language") == 0 && d->n_languages > 0)
        put_list(b, key, d->languages, d->n_languages, NULL);
    else if (strcmp(key, "tags") == 0)
        put_list(b, key, d->tags, d->n_tags, "ckptpush");
    else if (strcmp(key, "pipeline_tag") == 0 && d->pipeline_tag != NULL)
        put_scalar(b, key, d->pipeline_tag);
    else if (strcmp(key, "model-index") == 0)
        put_model_index(b, d);
    else
        return false;
    return true;
}

/* The key of a top-level mapping line ("key: ...", "'key': ..."), or 0 when the line is not one
 * (indented, a list item, a comment, a continuation). */
static size_t top_key(const char *line, size_t len, char *key, size_t key_size)
{
    const char *colon;
    size_t n;

    if (len == 0 || line[0] == ' ' || line[0] == '\t' || line[0] == '-' || line[0] == '#')
        return 0;
    colon = memchr(line, ':', len);
    if (colon == NULL)
        return 0;
    n = (size_t)(colon - line);
    while (n > 0 && line[n - 1] == ' ')
        n--;
    if (n >= 2 && (line[0] == '"' || line[0] == '\'') && line[n - 1] == line[0]) {
        line++;
        n -= 2;
    }
    if (n == 0 || n >= key_size)
        return 0;
    memcpy(key, line, n);
    key[n] = '\0';
    return n;
}

static int owned_index(const char *key)
{
    size_t i;

    for (i = 0; i < N_OWNED; i++)
        if (strcmp(key, owned_keys[i]) == 0)
            return (int)i;
    return -1;
}

void card_yaml_front_matter(struct card_buf *b, const struct card_data *d, const char *existing,
                            size_t existing_len)
{
    bool done[N_OWNED] = {false};
    /* NULL + 0 is undefined behaviour in C: no existing front matter has no end either. */
    const char *p = existing, *end = existing != NULL ? existing + existing_len : NULL;
    bool skipping = false;
    size_t i;

    card_buf_puts(b, "---\n");
    /* walk the user's front matter entry by entry: an owned key we have a value for is replaced
     * where it stands (with its indented continuation lines), anything else is copied */
    while (p != NULL && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char key[CARD_NAME_MAX];

        if (top_key(p, len, key, sizeof(key)) > 0) {
            int k = owned_index(key);
            skipping = false;
            if (k >= 0 && !done[k]) {
                size_t before = b->len;
                if (put_owned(b, d, key)) {
                    done[k] = true;
                    skipping = true;
                } else {
                    b->len = before;
                }
            } else if (k >= 0 && done[k]) {
                skipping = true; /* a duplicate key: YAML would reject it anyway */
            }
        }
        if (!skipping) {
            card_buf_put(b, p, len);
            card_buf_puts(b, "\n");
        }
        p = nl ? nl + 1 : NULL;
    }
    for (i = 0; i < N_OWNED; i++)
        if (!done[i])
            put_owned(b, d, owned_keys[i]);
    card_buf_puts(b, "---\n");
}
