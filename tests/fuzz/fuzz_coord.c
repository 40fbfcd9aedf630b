/* fuzz_coord.c - the coordinator's input path for one line (coord_proto.c): authentication, then
 * freshness and report parsing, as coord_server.c runs them. Checks their contract: a refusal
 * always says why, a parsed report's fields are within what the parser promises.
 * Input: byte 0 = mode: bit 0 set, the rest is a message body sealed here with the fuzzer's key
 * (so the parsers behind the HMAC are reached); clear, the rest is a line as it came off the
 * wire. Bits 1-3: the number of nodes - 1.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "coord_proto.h"

static const unsigned char KEY[] = "fuzz-job-secret-0123456789";

static void check(int cond)
{
    if (!cond)
        abort();
}

static void open_line(char *line, size_t len, long nodes)
{
    cJSON *json = NULL;
    char why[256] = "";
    int rc = coord_open(KEY, sizeof(KEY) - 1, COORD_DIR_NODE, line, len, &json, why, sizeof(why));
    if (rc < 0) {
        check((rc == -EACCES || rc == -EINVAL) && json == NULL && why[0] != '\0');
        return;
    }
    check(cJSON_IsObject(json));
    uint64_t seq = 0;
    why[0] = '\0';
    if (coord_check_fresh(json, "00112233445566778899aabbccddeeff", 0, &seq, why, sizeof(why)) < 0)
        check(why[0] != '\0');
    else
        check(seq > 0);
    struct coord_report r;
    why[0] = '\0';
    rc = coord_parse_report(json, nodes, &r, why, sizeof(why));
    if (rc == 0) {
        check(r.rank >= 0 && r.rank < nodes && r.ckpt[0] != '\0' && r.n_files >= 1);
        for (size_t i = 0; i < r.n_files; i++)
            check(strlen(r.files[i].sha256) == 64 && r.files[i].path[0] != '\0' &&
                  r.files[i].path[0] != '/');
        free(r.files);
    } else {
        check(why[0] != '\0' && r.files == NULL);
    }
    cJSON_Delete(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 20)
        return 0;
    long nodes = 1 + ((data[0] >> 1) & 7);
    char *body = malloc(size);
    if (body == NULL)
        return 0;
    memcpy(body, data + 1, size - 1);
    body[size - 1] = '\0';
    size_t len = strlen(body);
    if (data[0] & 1) {
        size_t sealed_len = 0;
        char *line = coord_seal(KEY, sizeof(KEY) - 1, COORD_DIR_NODE, body, &sealed_len);
        if (line != NULL) {
            check(sealed_len > 0 && line[sealed_len - 1] == '\n');
            line[--sealed_len] = '\0';
            open_line(line, sealed_len, nodes);
            free(line);
        }
    } else {
        open_line(body, len, nodes);
    }
    free(body);
    return 0;
}
