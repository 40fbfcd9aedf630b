/* fuzz_config.c - the configuration file parser (config_apply_text: comments, JSON, every key's
 * setter) and the effective-configuration printer on whatever it stored. Input: the file's bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config cfg;
    char *text, *json;
    int code;

    if (size > CONFIG_FILE_MAX)
        return 0;
    text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    memset(&cfg, 0, sizeof(cfg));
    code = config_apply_text(&cfg, text, "fuzz.json");
    if (code != 0 && cfg.problems[0] == '\0')
        abort(); /* a refused file always says why */
    if (memchr(cfg.problems, '\0', sizeof(cfg.problems)) == NULL)
        abort();
    json = config_to_json(&cfg);
    free(json);
    config_release(&cfg);
    free(text);
    return 0;
}
