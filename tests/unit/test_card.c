/* test_card.c - the model card from the real Trainer run in tests/fixtures/trainer-output/,
 * compared field by field with the card transformers wrote for the same run; hostile strings;
 * update in place; missing and malformed sources; Lightning files; parameter counting.
 * With CKPT_CARD_OUT set, writes the rendered cards there for tests/e2e/test_card_yaml.py.
 */
#include "card.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "card_internal.h"
#include "check.h"

#define REPO "alice/tiny-gpt2-demo"

/* GPT-2 shape of the test model; the fixture run does not include its config.json. */
#define V 1000
#define P 128
#define E 64
#define L 2
#define N_PARAMS ((unsigned long long)V * E + P * E + L * (12ULL * E * E + 13 * E) + 2 * E)

static const char *fixture_dir;

static char *read_file(const char *dir, const char *name)
{
    char path[4096];
    FILE *f;
    long n;
    char *s;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "rbe");
    if (f == NULL) {
        fprintf(stderr, "cannot open '%s': %s\n", path, strerror(errno));
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = malloc((size_t)n + 1);
    if (s == NULL || fread(s, 1, (size_t)n, f) != (size_t)n)
        exit(2);
    s[n] = '\0';
    fclose(f);
    return s;
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[4096];
    FILE *f;

    if (dir == NULL || text == NULL)
        return;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "we");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    fputs(text, f);
    fclose(f);
}

static const char *find_fixtures(void)
{
    static char buf[4096];
    const char *src = getenv("CKPT_SOURCE_DIR");
    const char *rel[] = {"tests/fixtures/trainer-output", "../tests/fixtures/trainer-output",
                         "../../tests/fixtures/trainer-output"};
    struct stat st;
    size_t i;

    if (src != NULL) {
        snprintf(buf, sizeof(buf), "%s/tests/fixtures/trainer-output", src);
        return buf;
    }
    for (i = 0; i < sizeof(rel) / sizeof(rel[0]); i++)
        if (stat(rel[i], &st) == 0)
            return rel[i];
    fprintf(stderr, "fixtures not found: set CKPT_SOURCE_DIR\n");
    exit(2);
}

static char *gpt2_config(void)
{
    static char buf[1024];
    snprintf(buf, sizeof(buf),
             "{\"activation_function\":\"gelu_new\",\"architectures\":[\"GPT2LMHeadModel\"],"
             "\"model_type\":\"gpt2\",\"n_embd\":%d,\"n_head\":2,\"n_inner\":null,"
             "\"n_layer\":%d,\"n_positions\":%d,\"vocab_size\":%d,\"dtype\":\"float32\","
             "\"transformers_version\":\"5.17.0\"}",
             E, L, P, V);
    return buf;
}

/* The safetensors header of the test model, split over two shards like save_pretrained would. */
static char *gpt2_header(int shard)
{
    struct card_buf b;
    int i;

    card_buf_init(&b, 1 << 20);
    card_buf_puts(&b, "{\"__metadata__\":{\"format\":\"pt\"}");
#define T(name, ...)                                                                               \
    card_buf_printf(&b, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%s],\"data_offsets\":[0,0]}", name, \
                    __VA_ARGS__)
    if (shard == 0) {
        char s[64];
        snprintf(s, sizeof(s), "%d,%d", V, E);
        T("transformer.wte.weight", s);
        snprintf(s, sizeof(s), "%d,%d", P, E);
        T("transformer.wpe.weight", s);
    } else {
        for (i = 0; i < L; i++) {
            char n[128], s[64];
#define LT(suffix, fmt, ...)                                                                       \
    snprintf(n, sizeof(n), "transformer.h.%d.%s", i, suffix);                                      \
    snprintf(s, sizeof(s), fmt, __VA_ARGS__);                                                      \
    T(n, s)
            LT("ln_1.weight", "%d", E);
            LT("ln_1.bias", "%d", E);
            LT("attn.c_attn.weight", "%d,%d", E, 3 * E);
            LT("attn.c_attn.bias", "%d", 3 * E);
            LT("attn.c_proj.weight", "%d,%d", E, E);
            LT("attn.c_proj.bias", "%d", E);
            LT("ln_2.weight", "%d", E);
            LT("ln_2.bias", "%d", E);
            LT("mlp.c_fc.weight", "%d,%d", E, 4 * E);
            LT("mlp.c_fc.bias", "%d", 4 * E);
            LT("mlp.c_proj.weight", "%d,%d", 4 * E, E);
            LT("mlp.c_proj.bias", "%d", E);
        }
        char s[32];
        snprintf(s, sizeof(s), "%d", E);
        T("transformer.ln_f.weight", s);
        T("transformer.ln_f.bias", s);
    }
    card_buf_puts(&b, "}");
    return card_buf_steal(&b);
}

/* ---- small text helpers for checking the output ---- */

static char *dup_range(const char *s, size_t n)
{
    char *r = malloc(n + 1);
    memcpy(r, s, n);
    r[n] = '\0';
    return r;
}

/* The front matter between the first two --- lines. */
static char *front_matter(const char *readme)
{
    const char *end;

    if (strncmp(readme, "---\n", 4) != 0)
        return NULL;
    end = strstr(readme + 4, "\n---\n");
    return end ? dup_range(readme + 4, (size_t)(end - readme - 4) + 1) : NULL;
}

/* The text after "- key: " on a line of the section, up to the end of the line. */
static char *list_value(const char *text, const char *key)
{
    char pat[256];
    const char *p, *nl;

    snprintf(pat, sizeof(pat), "\n- %s: ", key);
    p = strstr(text, pat);
    if (p == NULL)
        return NULL;
    p += strlen(pat);
    nl = strchr(p, '\n');
    return dup_range(p, nl ? (size_t)(nl - p) : strlen(p));
}

/* The value cell of our "| key | value |" row, Markdown escapes removed. */
static char *table_value(const char *text, const char *key)
{
    char pat[256], *v;
    const char *p, *end;
    size_t i, o = 0;

    /* keys are Markdown-escaped in the table */
    for (i = 0, o = 0; key[i] && o + 3 < sizeof(pat); i++) {
        if (o == 0) {
            memcpy(pat, "\n| ", 3);
            o = 3;
        }
        if (key[i] == '_')
            pat[o++] = '\\';
        pat[o++] = key[i];
    }
    pat[o] = '\0';
    strcat(pat, " | ");
    o = 0;
    p = strstr(text, pat);
    if (p == NULL)
        return NULL;
    p += strlen(pat);
    end = strstr(p, " |\n");
    if (end == NULL)
        return NULL;
    v = malloc((size_t)(end - p) + 1);
    for (i = 0; p + i < end; i++) {
        if (p[i] == '\\' && p + i + 1 < end)
            i++;
        v[o++] = p[i];
    }
    v[o] = '\0';
    return v;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    const char *p = hay;

    while ((p = strstr(p, needle)) != NULL) {
        n++;
        p += strlen(needle);
    }
    return n;
}

/* ---- fixture run ---- */

struct fixture {
    char *state, *results, *trainer_card, *listing;
    cJSON *listing_json;
    char *versions;
    const char *pushed[64];
    size_t n_pushed;
    char *headers[2];
    size_t header_lens[2];
};

static void fixture_load(struct fixture *f)
{
    const cJSON *files, *it;

    memset(f, 0, sizeof(*f));
    f->state = read_file(fixture_dir, "trainer_state.json");
    f->results = read_file(fixture_dir, "all_results.json");
    f->trainer_card = read_file(fixture_dir, "README.generated-by-trainer.md");
    f->listing = read_file(fixture_dir, "listing.json");
    f->listing_json = cJSON_Parse(f->listing);
    CHECK(f->listing_json != NULL);
    f->versions = cJSON_PrintUnformatted(cJSON_GetObjectItem(f->listing_json, "versions"));
    /* what the end-of-training commit holds: the files at the output root */
    files = cJSON_GetObjectItem(f->listing_json, "trainer_output_dir");
    cJSON_ArrayForEach(it, files)
    {
        const char *name = cJSON_GetArrayItem(it, 0)->valuestring;
        if (strchr(name, '/') == NULL && strcmp(name, "README.md") != 0 && f->n_pushed < 64)
            f->pushed[f->n_pushed++] = name;
    }
    f->headers[0] = gpt2_header(0);
    f->headers[1] = gpt2_header(1);
    f->header_lens[0] = strlen(f->headers[0]);
    f->header_lens[1] = strlen(f->headers[1]);
}

static void fixture_free(struct fixture *f)
{
    free(f->state);
    free(f->results);
    free(f->trainer_card);
    free(f->listing);
    free(f->versions);
    free(f->headers[0]);
    free(f->headers[1]);
    cJSON_Delete(f->listing_json);
}

static const char *user_fields =
    "{\"license\":\"apache-2.0\",\"language\":[\"en\"],\"tags\":[\"demo\"],"
    "\"base_model\":\"openai-community/gpt2\",\"datasets\":[\"synthetic-words\"],"
    "\"dataset_split\":\"train\",\"dataset_eval_split\":\"validation\"}";

/* The TrainingArguments of the fixture run, as the ckptpush callback sends them (to_dict()). */
static const char *training_args =
    "{\"learning_rate\":0.0005,\"per_device_train_batch_size\":8,"
    "\"per_device_eval_batch_size\":8,\"seed\":42,\"optim\":\"adamw_torch_fused\","
    "\"adam_beta1\":0.9,\"adam_beta2\":0.999,\"adam_epsilon\":1e-08,\"optim_args\":null,"
    "\"lr_scheduler_type\":\"linear\",\"warmup_steps\":0,\"warmup_ratio\":null,"
    "\"max_steps\":40,\"num_train_epochs\":3.0,\"gradient_accumulation_steps\":1,"
    "\"weight_decay\":0.0,\"fp16\":false,\"bf16\":false,\"max_grad_norm\":1.0,"
    "\"output_dir\":\"tiny-gpt2-demo\",\"report_to\":[]}";

static void fixture_inputs(struct fixture *f, struct card_inputs *in)
{
    memset(in, 0, sizeof(*in));
    in->repo_id = REPO;
    in->config_json = gpt2_config();
    in->trainer_state_json = f->state;
    in->all_results_json = f->results;
    in->user_fields_json = user_fields;
    in->safetensors_headers = (const unsigned char *const *)f->headers;
    in->safetensors_header_lens = f->header_lens;
    in->n_safetensors = 2;
    in->pushed_files = f->pushed;
    in->n_pushed = f->n_pushed;
    in->framework_versions_json = f->versions;
    in->duration_s = -1;
}

/* Every hyperparameter the Trainer listed that we list too has the same value. */
static size_t compare_hparams(const char *ours, const char *trainer)
{
    static const char *const keys[] = {"learning_rate",
                                       "train_batch_size",
                                       "eval_batch_size",
                                       "seed",
                                       "lr_scheduler_type",
                                       "training_steps",
                                       "num_epochs",
                                       "gradient_accumulation_steps",
                                       "mixed_precision_training"};
    size_t i, both = 0;

    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char *t = list_value(trainer, keys[i]), *o = table_value(ours, keys[i]);
        if (t != NULL && o != NULL) {
            CHECK_STR(o, t);
            both++;
        }
        free(t);
        free(o);
    }
    return both;
}

/* Parses our results table (Step | Epoch | Training Loss | Validation Loss) and the Trainer's
 * (Training Loss | Epoch | Step | Validation Loss) and the fixture's log_history; all agree. */
static void compare_results(const char *ours, const char *trainer, const char *state)
{
    double o[16][4], t[16][4];
    size_t no = 0, nt = 0, i;
    const char *p;
    cJSON *st = cJSON_Parse(state), *row;
    size_t ne = 0;

    p = strstr(ours, "| Step | Epoch | Training Loss | Validation Loss |");
    CHECK(p != NULL);
    if (p != NULL) {
        p = strchr(strchr(p, '\n') + 1, '\n') + 1;
        while (no < 16 && sscanf(p, "| %lf | %lf | %lf | %lf |", &o[no][0], &o[no][1], &o[no][2],
                                 &o[no][3]) == 4) {
            no++;
            p = strchr(p, '\n') + 1;
        }
    }
    p = strstr(trainer, "|:-------------:|");
    CHECK(p != NULL);
    if (p != NULL) {
        p = strchr(p, '\n') + 1;
        while (nt < 16 && sscanf(p, "| %lf | %lf | %lf | %lf |", &t[nt][2], &t[nt][1], &t[nt][0],
                                 &t[nt][3]) == 4) {
            nt++;
            p = strchr(p, '\n') + 1;
        }
    }
    CHECK_INT(no, 4);
    CHECK_INT(nt, no);
    for (i = 0; i < no && i < nt; i++) {
        CHECK(o[i][0] == t[i][0]);
        CHECK(o[i][1] == t[i][1]);
        CHECK(o[i][2] == t[i][2]);
        CHECK(o[i][3] == t[i][3]);
    }
    /* and against log_history itself: each in-training evaluation, in order */
    cJSON_ArrayForEach(row, cJSON_GetObjectItem(st, "log_history"))
    {
        const cJSON *ev = cJSON_GetObjectItem(row, "eval_loss");
        char want[32], got[32];
        if (ev == NULL || ne >= no)
            continue;
        CHECK(o[ne][0] == cJSON_GetObjectItem(row, "step")->valuedouble);
        snprintf(want, sizeof(want), "%.4f", ev->valuedouble);
        snprintf(got, sizeof(got), "%.4f", o[ne][3]);
        CHECK_STR(got, want);
        ne++;
    }
    CHECK_INT(ne, no);
    cJSON_Delete(st);
}

static void test_fixture_against_trainer_card(const char *out_dir)
{
    struct fixture f;
    struct card_inputs in;
    struct ckpt_err err;
    char *readme = NULL, *svg = NULL, *fm, *tfm, *v;
    char want[128];

    fixture_load(&f);
    fixture_inputs(&f, &in);
    in.hparams_json = training_args;
    in.hardware = "1x NVIDIA H100 80GB HBM3";
    in.duration_s = 4.5;
    CHECK_INT(card_render(&in, &readme, &svg, &err), 0);
    if (readme == NULL) {
        fixture_free(&f);
        return;
    }
    write_file(out_dir, "README.md", readme);
    write_file(out_dir, CARD_SVG_NAME, svg);

    fm = front_matter(readme);
    tfm = front_matter(f.trainer_card);
    CHECK(fm != NULL && tfm != NULL);
    if (fm != NULL && tfm != NULL) {
        /* every scalar and list item of the Trainer's metadata, except its own tag */
        CHECK(strstr(tfm, "library_name: transformers\n") &&
              strstr(fm, "library_name: \"transformers\"\n"));
        CHECK(strstr(tfm, "license: apache-2.0\n") && strstr(fm, "license: \"apache-2.0\"\n"));
        CHECK(strstr(tfm, "base_model: openai-community/gpt2\n") &&
              strstr(fm, "base_model: \"openai-community/gpt2\"\n"));
        CHECK(strstr(tfm, "language:\n- en\n") && strstr(fm, "language:\n- \"en\"\n"));
        CHECK(strstr(tfm, "- demo\n") && strstr(fm, "tags:\n- \"demo\"\n"));
        CHECK(strstr(tfm, "- name: tiny-gpt2-demo\n") &&
              strstr(fm, "- name: \"tiny-gpt2-demo\"\n"));
        /* the Trainer knew the eval loss but left model-index empty; we do not */
        CHECK(strstr(tfm, "results: []") != NULL);
        CHECK(strstr(fm, "results: []") == NULL);
        CHECK(strstr(fm, "      type: \"text-generation\"\n") != NULL);
        CHECK(strstr(fm, "      name: \"synthetic-words\"\n") != NULL);
        CHECK(strstr(fm, "      split: \"validation\"\n") != NULL);
        CHECK(
            strstr(fm,
                   "    - type: \"loss\"\n      value: 4.16182804107666\n      name: \"Loss\"\n") !=
            NULL);
        CHECK(strstr(fm, "pipeline_tag: \"text-generation\"\n") != NULL);
        CHECK(strstr(fm, "datasets:\n- \"synthetic-words\"\n") != NULL);
    }
    free(fm);
    free(tfm);

    /* the body: model name, summary, hyperparameters, results, versions */
    CHECK(strstr(f.trainer_card, "\n# tiny-gpt2-demo\n") && strstr(readme, "\n# tiny-gpt2-demo\n"));
    CHECK(strstr(f.trainer_card, "\n- Loss: 4.1618\n") && strstr(readme, "\n- Loss: 4.1618\n"));
    CHECK(strstr(readme, "fine-tuned version of [openai-community/gpt2](https://huggingface.co/"
                         "openai-community/gpt2) on the synthetic-words dataset") != NULL);
    CHECK(compare_hparams(readme, f.trainer_card) >= 6);
    v = table_value(readme, "optimizer");
    CHECK(v != NULL && strstr(v, "adamw_torch_fused with betas=(0.9,0.999) and epsilon=1e-08"));
    CHECK(strcasestr(f.trainer_card, "ADAMW_TORCH_FUSED with betas=(0.9,0.999) and epsilon=1e-08"));
    free(v);
    compare_results(readme, f.trainer_card, f.state);
    CHECK(strstr(f.trainer_card, "- Transformers 5.17.0\n") &&
          strstr(readme, "- Transformers 5.17.0\n"));
    CHECK(strstr(f.trainer_card, "- Pytorch 2.11.0+cu130\n") &&
          strstr(readme, "- Pytorch 2.11.0+cu130\n"));
    CHECK(strstr(readme, "More information needed") == NULL);

    /* what the Trainer's card does not have */
    snprintf(want, sizeof(want), "| parameters | %llu", N_PARAMS);
    v = table_value(readme, "parameters");
    CHECK(v != NULL);
    if (v != NULL) {
        char digits[64];
        size_t i, o = 0;
        for (i = 0; v[i] && v[i] != ' '; i++)
            if (v[i] != ',')
                digits[o++] = v[i];
        digits[o] = '\0';
        snprintf(want, sizeof(want), "%llu", N_PARAMS);
        CHECK_STR(digits, want);
    }
    free(v);
    v = table_value(readme, "layers");
    CHECK_STR(v, "2");
    free(v);
    v = table_value(readme, "hidden size");
    CHECK_STR(v, "64");
    free(v);
    v = table_value(readme, "vocabulary size");
    CHECK_STR(v, "1000");
    free(v);
    CHECK(strstr(readme, "model = AutoModelForCausalLM.from_pretrained(\"" REPO "\")") != NULL);
    CHECK(strstr(readme, "AutoTokenizer.from_pretrained(\"" REPO "\")") != NULL);
    CHECK(strstr(readme, "`training\\_args.bin`") != NULL);
    CHECK(strstr(readme, "Safetensors is the safe format to load") != NULL);
    CHECK(strstr(readme, "![Training curves](training_curves.svg)") != NULL);
    CHECK(strstr(readme, "- Hardware: 1x NVIDIA H100 80GB HBM3\n") != NULL);
    CHECK(strstr(readme, "- Duration: 4.5 s\n") != NULL);
    CHECK(strstr(readme, "This model is released under the `apache-2.0` license.") != NULL);
    /* sections in reading order */
    {
        const char *order[] = {"## Model description",
                               "## Model architecture and size",
                               "## How to use",
                               "## Intended uses & limitations",
                               "## Bias, risks and ethical considerations",
                               "## Training data",
                               "## Training procedure",
                               "## Evaluation",
                               "### Training results",
                               "## Hardware and duration",
                               "## Framework versions",
                               "## License"};
        const char *prev = readme;
        size_t i;
        for (i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
            const char *p = strstr(readme, order[i]);
            CHECK(p != NULL && p > prev);
            if (p != NULL)
                prev = p;
        }
    }
    /* a section without a source says what to add, once */
    CHECK_INT(count(readme, "`intended_use`"), 1);
    CHECK_INT(count(readme, "`bias_risks`"), 1);

    CHECK(svg != NULL);
    if (svg != NULL) {
        CHECK(strncmp(svg, "<?xml", 5) == 0);
        CHECK_INT(count(svg, "<polyline"), 2);
        CHECK(strstr(svg, ">training loss<") && strstr(svg, ">eval loss<"));
        CHECK(strstr(svg, "<script") == NULL);
        CHECK(strstr(svg, ">step<") != NULL);
    }
    free(readme);
    free(svg);

    /* from the fixture files alone: hyperparameters trainer_state.json knows */
    fixture_inputs(&f, &in);
    in.user_fields_json = NULL;
    CHECK_INT(card_render(&in, &readme, &svg, &err), 0);
    if (readme != NULL) {
        CHECK(compare_hparams(readme, f.trainer_card) == 2); /* train_batch_size, training_steps */
        CHECK(strstr(readme, "from trainer_state.json") != NULL);
        /* no dataset known: the Hub cannot take results, and the card says what to add */
        CHECK(strstr(readme, "  results: []\n") != NULL);
        CHECK(strstr(readme, "add `datasets`") != NULL);
        CHECK(strstr(readme, "- Training time: 1.0 s (`train_runtime`)") != NULL);
        CHECK(strstr(readme, "\nlicense:") == NULL);
    }
    free(readme);
    free(svg);
    fixture_free(&f);
}

/* ---- hostile strings ---- */

static void test_hostile_strings(const char *out_dir)
{
    static const char *user =
        "{\"model_name\":\"x\\n---\\n<script>alert(1)</script>\","
        "\"license\":\"mit\\\"\\nevil: true\",\"tags\":[\"a\\nb: c\",\"---\",\"#x\",\"'q'\","
        "\"\\\\\\\"\",\"\\u0001\\u007f\\u0085\\u2028\",\"é✓😀\"],"
        "\"datasets\":[\"d|s <!-- ckptpush:end evaluation -->\"],\"pipeline_tag\":\"x: [y]\","
        "\"base_model\":\"a\\\" onclick=\\\"x\",\"intended_use\":\"line1\\n---\\n<!-- "
        "ckptpush:end intended-use --><img src=x onerror=alert(1)>\","
        "\"language\":\"en\\n- fr\"}";
    static const char *state =
        "{\"log_history\":[{\"step\":1,\"loss\":2.0},{\"step\":1,\"eval_<script>x\":1.5,"
        "\"eval_a|b\\nc\":0.5,\"eval_loss\":1.0},{\"step\":2,\"loss\":1.5},"
        "{\"step\":2,\"eval_<script>x\":1.25,\"eval_a|b\\nc\":0.75,\"eval_loss\":0.9}]}";
    struct card_inputs in = {0};
    struct ckpt_err err;
    char *readme = NULL, *svg = NULL, *fm;
    const char *pushed[] = {"we|ird`.pt", "model.safetensors"};
    size_t i;

    in.repo_id = "alice/x";
    in.user_fields_json = user;
    in.trainer_state_json = state;
    in.hardware = "<b>gpu</b>\n# heading";
    in.pushed_files = pushed;
    in.n_pushed = 2;
    in.framework_versions_json = "{\"torch\":\"2|x\\n</svg>\"}";
    in.duration_s = -1;
    CHECK_INT(card_render(&in, &readme, &svg, &err), 0);
    if (readme == NULL)
        return;
    write_file(out_dir, "README.md", readme);
    write_file(out_dir, CARD_SVG_NAME, svg);

    /* the front matter closes once, and only the card's keys start a line in it */
    CHECK_INT(count(readme, "\n---\n"), 1);
    fm = front_matter(readme);
    CHECK(fm != NULL);
    if (fm != NULL) {
        const char *p = fm;
        while (*p) {
            CHECK(*p == ' ' || *p == '-' || strncmp(p, "license:", 8) == 0 ||
                  strncmp(p, "base_model:", 11) == 0 || strncmp(p, "datasets:", 9) == 0 ||
                  strncmp(p, "language:", 9) == 0 || strncmp(p, "tags:", 5) == 0 ||
                  strncmp(p, "pipeline_tag:", 13) == 0 || strncmp(p, "model-index:", 12) == 0);
            /* every list item is one quoted scalar */
            if (p[0] == '-' && p[1] == ' ' && p[2] != 'n')
                CHECK(p[2] == '"');
            p = strchr(p, '\n') + 1;
        }
        CHECK(strstr(fm, "\"mit\\u0022\\u000aevil: true\"") != NULL);
        CHECK(strstr(fm, "\"\\u005c\\u0022\"") != NULL);
        CHECK(strstr(fm, "\"é✓😀\"") != NULL);
        CHECK(strstr(fm, "\"\\u0001\\u007f\\u0085\\u2028\"") != NULL);
        CHECK(strstr(fm, "value: 0.9\n") != NULL);
    }
    free(fm);
    /* no HTML, no forged marker, one of each marker */
    CHECK(strstr(readme, "<script") == NULL);
    CHECK(strstr(readme, "<img") == NULL);
    CHECK(strstr(readme, "<b>") == NULL);
    CHECK(strstr(readme, "&lt;script&gt;") != NULL);
    CHECK_INT(count(readme, "<!-- ckptpush:end evaluation -->"), 1);
    CHECK_INT(count(readme, "<!-- ckptpush:end intended-use -->"), 1);
    CHECK_INT(count(readme, "<!--"), 22);
    /* headings and table cells stay on their line */
    CHECK(strstr(readme, "\n# x --- &lt;script&gt;alert(1)&lt;/script&gt;\n") != NULL);
    CHECK(strstr(readme, "| A\\|b c |") != NULL);
    CHECK(strstr(readme, "\n# heading") == NULL);
    CHECK(strstr(readme, "`we\\|ird\\`.pt`") != NULL);
    /* code snippets never carry a string they cannot hold */
    CHECK(strstr(readme, "\"alice/x\"") != NULL);
    for (i = 0; readme[i]; i++)
        CHECK((unsigned char)readme[i] >= 0x20 || readme[i] == '\n');

    CHECK(svg != NULL);
    if (svg != NULL) {
        CHECK(strstr(svg, "<script") == NULL);
        CHECK(strstr(svg, "eval &lt;script&gt;x") != NULL);
        CHECK(strstr(svg, "eval a|b c") != NULL);
        CHECK_INT(count(svg, "</svg>"), 1);
    }
    free(readme);
    free(svg);
}

/* ---- update in place ---- */

static void test_update_in_place(void)
{
    static const char *existing = "---\nlicense: mit\nmy_key: keep me\ntags:\n- old\nwidget:\n"
                                  "  - text: \"hi\"\n---\n\n# My notes\n\nUser prose here.\n";
    struct fixture f;
    struct card_inputs in;
    struct ckpt_err err;
    char *r1 = NULL, *r2 = NULL, *r3 = NULL, *r4 = NULL, *svg = NULL, *edited;
    const char *p;
    size_t n;

    fixture_load(&f);
    fixture_inputs(&f, &in);
    in.existing_readme = existing;
    CHECK_INT(card_render(&in, &r1, &svg, &err), 0);
    free(svg);
    if (r1 == NULL) {
        fixture_free(&f);
        return;
    }
    /* the user's keys stay where they were; owned keys are replaced in place */
    CHECK(strncmp(r1,
                  "---\nlicense: \"apache-2.0\"\nmy_key: keep me\ntags:\n- \"demo\"\n"
                  "- \"ckptpush\"\nwidget:\n  - text: \"hi\"\nlibrary_name:",
                  strlen("---\nlicense: \"apache-2.0\"\nmy_key: keep me\ntags:\n- \"demo\"\n"
                         "- \"ckptpush\"\nwidget:\n  - text: \"hi\"\nlibrary_name:")) == 0);
    CHECK(strstr(r1, "- old") == NULL);
    p = strstr(r1, "\n---\n\n# My notes\n\nUser prose here.\n\n<!-- ckptpush:begin description");
    CHECK(p != NULL);

    /* the user writes between sections and edits inside one; a new run re-renders */
    p = strstr(r1, "<!-- ckptpush:end usage -->\n");
    CHECK(p != NULL);
    if (p == NULL)
        goto out;
    n = (size_t)(p - r1) + strlen("<!-- ckptpush:end usage -->\n");
    edited = malloc(strlen(r1) + 200);
    memcpy(edited, r1, n);
    strcpy(edited + n, "\nMy own remark about usage.\n");
    strcat(edited, r1 + n);
    {
        char *inside = strstr(edited, "## Hardware and duration");
        memcpy(inside, "## Hardware and DURATION", 24);
    }
    in.existing_readme = edited;
    in.final_metrics_json = "{\"eval_loss\":3.5,\"eval_accuracy\":0.25}";
    CHECK_INT(card_render(&in, &r2, &svg, &err), 0);
    free(svg);
    if (r2 != NULL) {
        CHECK(strstr(r2, "<!-- ckptpush:end usage -->\n\nMy own remark about usage.\n\n"
                         "<!-- ckptpush:begin intended-use") != NULL);
        CHECK(strstr(r2, "User prose here.") != NULL);
        CHECK(strstr(r2, "my_key: keep me\n") != NULL);
        CHECK(strstr(r2, "DURATION") == NULL);
        CHECK(strstr(r2, "- Loss: 3.5000\n- Accuracy: 0.2500\n") != NULL);
        CHECK(strstr(r2, "value: 3.5\n") != NULL);
        CHECK(strstr(r2, "from the metrics the trainer sent") != NULL);
        CHECK_INT(count(r2, "<!-- ckptpush:begin "), 11);
        /* a re-render of its own output changes nothing */
        in.existing_readme = r2;
        CHECK_INT(card_render(&in, &r3, &svg, &err), 0);
        free(svg);
        CHECK(r3 != NULL && strcmp(r2, r3) == 0);
    }
    free(edited);

    /* a README without front matter keeps its text at the top; the Trainer's own card is
     * replaced whole (it holds no user prose) */
    in.existing_readme = f.trainer_card;
    in.final_metrics_json = NULL;
    CHECK_INT(card_render(&in, &r4, &svg, &err), 0);
    free(svg);
    if (r4 != NULL) {
        CHECK(strstr(r4, "More information needed") == NULL);
        CHECK_INT(count(r4, "# tiny-gpt2-demo\n"), 1);
        /* the Hub lists Trainer runs by this tag: kept */
        CHECK(strstr(r4, "- \"generated_from_trainer\"\n") != NULL);
        CHECK(strstr(r4, "results: []") == NULL);
        CHECK_INT(count(r4, "\nlibrary_name:"), 1);
    }
out:
    free(r1);
    free(r2);
    free(r3);
    free(r4);
    fixture_free(&f);
}

/* ---- missing, malformed and other sources ---- */

static void test_missing_and_malformed(void)
{
    struct card_inputs in = {0};
    struct ckpt_err err;
    char *readme = NULL, *svg = (char *)1;
    const unsigned char *hdrs[] = {
        (const unsigned char *)"{\"a\":{\"shape\":[3,4]},\"b\":{\"shape\":"
                               "[99999999999,99999999999,9999999]},"
                               "\"c\":{\"shape\":\"x\"},\"d\":5,"
                               "\"__metadata__\":{\"shape\":[7]}}",
        (const unsigned char *)"not json", NULL,
        (const unsigned char *)"{\"e\":{\"shape\":[5]}}garbage"};
    size_t lens[] = {0, 8, 0, 20};

    lens[0] = strlen((const char *)hdrs[0]);
    in.duration_s = -1;
    CHECK_INT(card_render(&in, &readme, &svg, &err), 0);
    CHECK(svg == NULL);
    CHECK(readme != NULL && strstr(readme, "`intended_use`") && strstr(readme, "results: []") &&
          strstr(readme, "add `license`"));
    free(readme);

    in.repo_id = "bob/m";
    in.config_json = "[1,2]";
    in.trainer_state_json = "{\"log_history\":\"x\",\"max_steps\":\"40\"}";
    in.all_results_json = "not json";
    in.final_metrics_json = "{\"eval_loss\":\"low\",\"eval_f1\":0.5,\"eval_runtime\":3}";
    in.hparams_json = "{\"learning_rate\":\"fast\",\"seed\":[1],\"optim\":7}";
    in.user_fields_json = "{\"license\":5,\"tags\":[1,null,\"ok\"],\"datasets\":{}}";
    in.framework_versions_json = "{\"torch\":2}";
    in.safetensors_headers = hdrs;
    in.safetensors_header_lens = lens;
    in.n_safetensors = 4;
    CHECK_INT(card_render(&in, &readme, &svg, &err), 0);
    if (readme != NULL) {
        CHECK(strstr(readme, "tags:\n- \"ok\"\n- \"ckptpush\"\n") != NULL);
        CHECK(strstr(readme, "\nlicense:") == NULL);
        CHECK(strstr(readme, "- F1: 0.5000\n") != NULL);
        CHECK(strstr(readme, "Runtime") == NULL);
        CHECK(strstr(readme, "| parameters | 17 |") != NULL);
        CHECK(strstr(readme, "No hyperparameters were found") != NULL);
    }
    free(readme);
    free(svg);

    /* extreme values: the axes still end (ticks are counted, not accumulated) */
    in.trainer_state_json = "{\"log_history\":[{\"step\":1,\"loss\":1e17},{\"step\":2,"
                            "\"loss\":1.0000000000000002e17,\"eval_loss\":-1e300},"
                            "{\"step\":1e15,\"loss\":1e308,\"eval_loss\":1e-300}]}";
    CHECK_INT(card_render(&in, &readme, &svg, &err), 0);
    CHECK(svg != NULL && strstr(svg, "</svg>") != NULL);
    free(readme);
    free(svg);

    CHECK(card_is_pickle_path("a/optimizer.pt"));
    CHECK(card_is_pickle_path("last.ckpt"));
    CHECK(card_is_pickle_path("pytorch_model.bin"));
    CHECK(!card_is_pickle_path("model.safetensors"));
    CHECK(!card_is_pickle_path(".pt"));

    {
        char *big = malloc(CARD_MAX_README + 2);
        memset(big, 'a', CARD_MAX_README + 1);
        big[CARD_MAX_README + 1] = '\0';
        in.existing_readme = big;
        CHECK_INT(card_render(&in, &readme, &svg, &err), -EFBIG);
        free(big);
    }
}

static void test_lightning(void)
{
    static const char *csv = "epoch,step,train_loss,val_loss,val_acc\n"
                             "0,9,2.5,,\n0,9,,2.25,0.5\n1,19,2.0,,\n1,19,,1.75,0.625\n";
    static const char *hp = "lr: 0.001\nbatch_size: 32\nlayers:\n  - 1\n# c\nname: 'tiny'\n";
    struct card_inputs in = {0};
    struct ckpt_err err;
    char *readme = NULL, *svg = NULL, *v;
    const char *pushed[] = {"last.ckpt"};

    in.repo_id = "carol/lit";
    in.lightning_metrics_csv = csv;
    in.lightning_hparams_yaml = hp;
    in.pushed_files = pushed;
    in.n_pushed = 1;
    in.duration_s = 3725;
    CHECK_INT(card_render(&in, &readme, &svg, &err), 0);
    if (readme == NULL)
        return;
    CHECK(strstr(readme, "| Step | Epoch | Training Loss | Validation Loss | Acc |\n") != NULL);
    CHECK(strstr(readme, "| 9 | 0 | 2.5000 | 2.2500 | 0.5000 |\n") != NULL);
    CHECK(strstr(readme, "| 19 | 1 | 2.0000 | 1.7500 | 0.6250 |\n") != NULL);
    CHECK(strstr(readme, "- Loss: 1.7500\n- Acc: 0.6250\n") != NULL);
    v = table_value(readme, "lr");
    CHECK_STR(v, "0.001");
    free(v);
    v = table_value(readme, "name");
    CHECK_STR(v, "tiny");
    free(v);
    CHECK(strstr(readme, "| layers |") == NULL);
    CHECK(strstr(readme, "from hparams.yaml") != NULL);
    CHECK(strstr(readme, "torch.load(hf_hub_download(\"carol/lit\", \"last.ckpt\"), "
                         "weights_only=True)") != NULL);
    CHECK(strstr(readme, "- Duration: 1 h 2 min 5 s\n") != NULL);
    CHECK(svg != NULL && strstr(svg, ">eval acc<") != NULL && count(svg, "<polyline") == 3);
    free(readme);
    free(svg);
}

static void test_formatting(void)
{
    struct card_buf b;
    char num[64];

    card_fmt_num(num, sizeof(num), 0.0005);
    CHECK_STR(num, "0.0005");
    card_fmt_num(num, sizeof(num), 1e-08);
    CHECK_STR(num, "1e-08");
    card_fmt_num(num, sizeof(num), 4.16182804107666);
    CHECK_STR(num, "4.16182804107666");
    card_fmt_num(num, sizeof(num), 40);
    CHECK_STR(num, "40");
    card_buf_init(&b, 64);
    card_put_yaml_num(&b, 1e-05);
    card_buf_puts(&b, " ");
    card_put_yaml_num(&b, 2.5e20);
    CHECK_STR(b.data, "1.0e-05 2.5e+20");
    card_buf_release(&b);
    /* the buffer's maximum is an error, sticky */
    card_buf_init(&b, 8);
    card_buf_puts(&b, "12345");
    card_buf_puts(&b, "6789");
    card_buf_puts(&b, "x");
    CHECK_INT(b.err, -EFBIG);
    CHECK_STR(b.data, "12345");
    card_buf_release(&b);
    card_buf_init(&b, 64);
    card_put_yaml_str(&b, "a\xff\xc0\x80z");
    CHECK_STR(b.data, "\"a\\ufffd\\ufffd\\ufffdz\"");
    card_buf_release(&b);
}

/* ---- the Trainer's card as a source ---- */

/* Calls fn for each line of the section under heading (up to the next heading). */
static void each_section_line(const char *text, const char *heading,
                              void (*fn)(const char *line, void *ctx), void *ctx)
{
    const char *p = strstr(text, heading);
    char line[1024];

    CHECK(p != NULL);
    if (p == NULL)
        return;
    p = strchr(p + 1, '\n');
    while (p != NULL && *++p != '\0' && *p != '#') {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n > 0 && n < sizeof(line)) {
            memcpy(line, p, n);
            line[n] = '\0';
            fn(line, ctx);
        }
        p = nl;
    }
}

struct seen {
    const char *ours;
    size_t n;
};

/* "- key: value" of the Trainer's list is "| key | value |" of our table */
static void hparam_kept(const char *line, void *ctx)
{
    struct seen *s = ctx;
    const char *colon = strchr(line, ':');
    char key[128], *v;

    if (strncmp(line, "- ", 2) != 0 || colon == NULL)
        return;
    snprintf(key, sizeof(key), "%.*s", (int)(colon - line - 2), line + 2);
    v = table_value(s->ours, key);
    if (v == NULL)
        fprintf(stderr, "hyperparameter '%s' is missing\n", key);
    CHECK_STR(v, colon + 2);
    free(v);
    s->n++;
}

/* "- Transformers 5.17.0" and the summary's lines appear as they are */
static void line_kept(const char *line, void *ctx)
{
    struct seen *s = ctx;
    char want[1100];

    if (strncmp(line, "- ", 2) != 0 && strncmp(line, "This model", 10) != 0)
        return;
    snprintf(want, sizeof(want), "\n%s\n", line);
    if (strstr(s->ours, want) == NULL)
        fprintf(stderr, "line '%s' is missing\n", line);
    CHECK(strstr(s->ours, want) != NULL);
    s->n++;
}

/* The sources a Trainer run leaves when the ckptpush callback is not used and the model's
 * config.json is not there: the Trainer's own README.md, trainer_state.json and
 * all_results.json. Every fact of the Trainer's card must be in ours. */
static void test_trainer_card_alone(const char *out_dir)
{
    struct fixture f;
    struct card_inputs in = {0};
    struct ckpt_err err;
    char *readme = NULL, *svg = NULL, *fm;
    struct seen s = {0};

    fixture_load(&f);
    in.repo_id = "alice/run-0042"; /* not the model's name: that comes from the Trainer */
    in.existing_readme = f.trainer_card;
    in.trainer_state_json = f.state;
    in.all_results_json = f.results;
    in.duration_s = -1;
    CHECK_INT(card_render(&in, &readme, &svg, &err), 0);
    if (readme == NULL) {
        fixture_free(&f);
        return;
    }
    write_file(out_dir, "README.md", readme);
    write_file(out_dir, CARD_SVG_NAME, svg);
    s.ours = readme;

    /* the body: name, summary sentence with base model link and dataset, eval loss */
    CHECK(strstr(readme, "\n# tiny-gpt2-demo\n") != NULL);
    CHECK(strstr(readme, "\nThis model is a fine-tuned version of [openai-community/gpt2]"
                         "(https://huggingface.co/openai-community/gpt2) on the synthetic-words "
                         "dataset.\nIt achieves the following results on the evaluation set:\n"
                         "- Loss: 4.1618\n") != NULL);
    each_section_line(f.trainer_card, "\n# tiny-gpt2-demo", line_kept, &s);
    CHECK_INT(s.n, 2); /* the sentence and the loss */
    /* every hyperparameter with its value, the optimizer line verbatim */
    s.n = 0;
    each_section_line(f.trainer_card, "### Training hyperparameters", hparam_kept, &s);
    CHECK_INT(s.n, 7);
    CHECK(strstr(readme, "(from the model card the Trainer wrote and trainer_state.json)"));
    /* every row of the results table, and each agrees with log_history */
    compare_results(readme, f.trainer_card, f.state);
    /* every framework version line */
    s.n = 0;
    each_section_line(f.trainer_card, "### Framework versions", line_kept, &s);
    CHECK_INT(s.n, 3);

    /* the metadata: all the Trainer's, and results where it had none */
    fm = front_matter(readme);
    CHECK(fm != NULL);
    if (fm != NULL) {
        CHECK(strstr(fm, "library_name: \"transformers\"\n") != NULL);
        CHECK(strstr(fm, "license: \"apache-2.0\"\n") != NULL);
        CHECK(strstr(fm, "base_model: \"openai-community/gpt2\"\n") != NULL);
        CHECK(strstr(fm, "language:\n- \"en\"\n") != NULL);
        CHECK(strstr(fm, "tags:\n- \"demo\"\n- \"generated_from_trainer\"\n- \"ckptpush\"\n"));
        CHECK(strstr(fm, "model-index:\n- name: \"tiny-gpt2-demo\"\n") != NULL);
        CHECK(strstr(fm, "  - task:\n      type: \"text-generation\"\n") != NULL);
        CHECK(strstr(fm, "    dataset:\n      name: \"synthetic-words\"\n"
                         "      type: \"synthetic-words\"\n") != NULL);
        CHECK(strstr(fm, "    - type: \"loss\"\n      value: 4.16182804107666\n") != NULL);
        /* no pipeline_tag: the widget would follow it, and the run's head is not known */
        CHECK(strstr(fm, "pipeline_tag:") == NULL);
        CHECK(strstr(fm, "datasets:") == NULL); /* not known to be a Hub dataset id */
    }
    free(fm);
    /* the inferred task says what it rests on; the metric says where it came from */
    CHECK(strstr(readme, "is the task of the base model's architecture (`GPT2LMHeadModel` for "
                         "openai-community/gpt2)") != NULL);
    CHECK(strstr(readme, ", from all_results.json:") != NULL);
    CHECK(strstr(readme, "The model card the Trainer wrote gives the license as `apache-2.0`"));
    CHECK(strstr(readme, "Training ran for 40 steps (2 epochs)") != NULL);
    CHECK(strstr(readme, "More information needed") == NULL);
    CHECK(strstr(readme, "This model was trained.") == NULL);
    CHECK(strstr(readme, "generated automatically") == NULL);
    CHECK(svg != NULL);
    free(readme);
    free(svg);

    /* the same without trainer_state.json and all_results.json: the card's own table and
     * rounded summary are the results, and say so */
    in.trainer_state_json = NULL;
    in.all_results_json = NULL;
    CHECK_INT(card_render(&in, &readme, &svg, &err), 0);
    if (readme != NULL) {
        compare_results(readme, f.trainer_card, f.state);
        CHECK(strstr(readme, "- Loss: 4.1618\n") != NULL);
        CHECK(strstr(readme, "      value: 4.1618\n") != NULL);
        CHECK(strstr(readme, "rounded to 4 decimals there") != NULL);
        CHECK(strstr(readme, "(from the model card the Trainer wrote)") != NULL);
        CHECK(strstr(readme, "Training ran for") == NULL);
    }
    free(readme);
    free(svg);

    /* a base model whose task is not known: no results in the metadata, and the card says why */
    {
        char *card = strdup(f.trainer_card), *p;
        while ((p = strstr(card, "openai-community/gpt2")) != NULL)
            memcpy(p, "someone-else/my-model", 21);
        in.existing_readme = card;
        in.all_results_json = f.results;
        CHECK_INT(card_render(&in, &readme, &svg, &err), 0);
        if (readme != NULL) {
            CHECK(strstr(readme, "  results: []\n") != NULL);
            CHECK(strstr(readme, "These results are not in the `model-index` metadata") != NULL);
            CHECK(strstr(readme, "base_model: \"someone-else/my-model\"\n") != NULL);
        }
        free(readme);
        free(svg);
        free(card);
    }
    fixture_free(&f);
}

/* A Trainer card is untrusted text: what it says lands escaped, and its size is bounded. */
static void test_hostile_trainer_card(void)
{
    struct card_buf b;
    struct card_inputs in = {0};
    struct ckpt_err err;
    char *readme = NULL, *svg = NULL;
    int i;

    card_buf_init(&b, 2 * 1024 * 1024);
    card_buf_puts(&b, "---\nlicense: 'mi''t\"'\nbase_model: \"a\\\"<b>\"\n"
                      "tags:\n- '<script>'\n- \"x\\n---\"\nlanguage: en\nmodel-index:\n"
                      "- name: \"n<!-- ckptpush:end description -->\"\n  results: []\n---\n\n"
                      "<!-- This model card has been generated automatically according to the "
                      "information the Trainer had access to. -->\n\n# t<img src=x>\n\n"
                      "This model was trained from scratch on the a|b, the <i>c</i> and the "
                      "`d` datasets.\nIt achieves the following results on the evaluation set:\n"
                      "- <script>x: 1.5\n- Loss: nan\n\n### Training hyperparameters\n\n"
                      "- lr: <!-- ckptpush:begin usage -->\n\n### Training results\n\n"
                      "| Training Loss | Epoch | Step | Validation Loss | <svg> |\n"
                      "|:---:|:---:|:---:|:---:|:---:|\n");
    for (i = 0; i < 6000; i++)
        card_buf_printf(&b, "| No log | %d.0 | %d | %d.5 | 1 |\n", i, i + 1, i);
    card_buf_puts(&b, "\n### Framework versions\n\n- Pytorch 2.0</svg>\n");
    CHECK_INT(b.err, 0);
    in.repo_id = "alice/x";
    in.existing_readme = b.data;
    in.duration_s = -1;
    CHECK_INT(card_render(&in, &readme, &svg, &err), 0);
    if (readme != NULL) {
        CHECK(strstr(readme, "<script") == NULL);
        CHECK(strstr(readme, "<img") == NULL);
        CHECK(strstr(readme, "<i>") == NULL);
        CHECK(strstr(readme, "<b>") == NULL);
        CHECK(strstr(readme, "</svg>") == NULL);
        CHECK_INT(count(readme, "<!--"), 22);
        CHECK(strstr(readme, "This model is a fine-tuned version of a\"&lt;b&gt; on the a\\|b, "
                             "the &lt;i&gt;c&lt;/i&gt; and the \\`d\\` datasets.") != NULL);
        CHECK(strstr(readme, "base_model: \"a\\u0022\\u003cb\\u003e\"\n") != NULL);
        CHECK(strstr(readme, "- \"\\u003cscript\\u003e\"\n") != NULL);
        CHECK(strstr(readme, "- \"x\\u000a---\"\n") != NULL);
        CHECK(strstr(readme, "license: \"mi't\\u0022\"\n") != NULL);
        CHECK_INT(count(readme, "\n---\n"), 1);
        CHECK(strlen(readme) <= CARD_MAX_README);
        CHECK(strstr(readme, "rows shown, evenly spaced") != NULL);
    }
    if (svg != NULL)
        CHECK(strstr(svg, "<svg>") == NULL);
    free(readme);
    free(svg);
    card_buf_release(&b);

    /* "from scratch" is a fact the Trainer recorded; an unknown dataset is not named */
    in.existing_readme = "---\nlibrary_name: transformers\n---\n\n<!-- This model card has been "
                         "generated automatically according to the information the Trainer had "
                         "access to. -->\n\n# m\n\nThis model was trained from scratch on an "
                         "unknown dataset.\n";
    CHECK_INT(card_render(&in, &readme, &svg, &err), 0);
    if (readme != NULL) {
        CHECK(strstr(readme, "\nThis model was trained from scratch.\n") != NULL);
        CHECK(strstr(readme, "`base_model`") == NULL);
        CHECK(strstr(readme, "# m\n") != NULL);
    }
    free(readme);
    free(svg);
}

int main(void)
{
    const char *out = getenv("CKPT_CARD_OUT");
    char hostile[4096], alone[4096];

    fixture_dir = find_fixtures();
    if (out != NULL) {
        snprintf(hostile, sizeof(hostile), "%s/hostile", out);
        mkdir(hostile, 0700);
        snprintf(alone, sizeof(alone), "%s/trainer-card-alone", out);
        mkdir(alone, 0700);
    }
    test_formatting();
    test_fixture_against_trainer_card(out);
    test_hostile_strings(out ? hostile : NULL);
    test_update_in_place();
    test_missing_and_malformed();
    test_lightning();
    test_trainer_card_alone(out ? alone : NULL);
    test_hostile_trainer_card();
    return check_report("test_card");
}
