/* fuzz_card.c - card_render on fuzzed sources: every JSON, YAML, CSV and README input the model
 * card reads from a run, plus one safetensors header. Checks that a card comes out (or a named
 * error) and that the README keeps its front matter well formed enough to start with "---".
 * Input: the sources separated by NUL bytes, in the order of `fields` below (an empty field is a
 * missing source). tests/fuzz/make_seeds.py writes the Trainer fixtures in this form.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "card.h"

static void check(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const pushed[] = {"model.safetensors", "pytorch_model.bin", "config.json",
                                         "tokenizer.json"};
    const char *fields[11] = {NULL};
    const unsigned char *headers[1];
    size_t header_lens[1];
    struct card_inputs in;
    struct ckpt_err err;
    char *copy, *p, *readme = NULL, *svg = NULL;
    size_t n = 0;
    int r;

    if (size > 4 * 1024 * 1024)
        return 0;
    copy = malloc(size + 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    /* Split on NULs: each field ends at the next NUL (or the end). */
    for (p = copy; n < 11 && p <= copy + size; n++) {
        fields[n] = p[0] != '\0' ? p : NULL;
        p += strlen(p) + 1;
    }
    memset(&in, 0, sizeof(in));
    in.repo_id = "alice/run";
    in.config_json = fields[0];
    in.trainer_state_json = fields[1];
    in.all_results_json = fields[2];
    in.final_metrics_json = fields[3];
    in.hparams_json = fields[4];
    in.user_fields_json = fields[5];
    in.lightning_hparams_yaml = fields[6];
    in.lightning_metrics_csv = fields[7];
    in.existing_readme = fields[8];
    in.framework_versions_json = fields[9];
    if (fields[10] != NULL) {
        headers[0] = (const unsigned char *)fields[10];
        header_lens[0] = strlen(fields[10]);
        in.safetensors_headers = headers;
        in.safetensors_header_lens = header_lens;
        in.n_safetensors = 1;
    }
    in.pushed_files = pushed;
    in.n_pushed = sizeof(pushed) / sizeof(pushed[0]);
    in.hardware = "1x fuzz";
    in.duration_s = size % 2 ? 3600.5 : -1;
    ckpt_err_clear(&err);
    r = card_render(&in, &readme, &svg, &err);
    if (r == 0) {
        check(readme != NULL && strncmp(readme, "---\n", 4) == 0);
        check(strlen(readme) <= CARD_MAX_README);
        check(svg == NULL || strlen(svg) <= CARD_MAX_SVG);
    } else {
        check(err.msg[0] != '\0' && readme == NULL);
    }
    free(readme);
    free(svg);
    free(copy);
    return 0;
}
