/* test_coord_proto.c - the multi-node protocol's pure parts: the HMAC matches an independent
 * computation (Python's hmac), a sealed line opens with the same key and direction only, any
 * altered byte or missing mac is refused, a replayed line (other nonce, same or lower seq) is
 * refused, and every malformed report field is named. */
#include "coord_proto.h"

#include "check.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char KEY[] = "0123456789abcdef0123";
#define KEY_LEN (sizeof(KEY) - 1)
#define SHA "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static void test_mac_vector(void)
{
    char hex[COORD_MAC_HEX + 1];
    /* python3: hmac.new(key, b'ckptpush-coord-v1n\n{"a":1}', hashlib.sha256).hexdigest() */
    coord_mac(KEY, KEY_LEN, COORD_DIR_NODE, "{\"a\":1}", 7, hex);
    CHECK_STR(hex, "18facc1ce2ec8d2fc7e6b8050fc0687673ce9e65674c76b77a79309209484131");
    coord_mac(KEY, KEY_LEN, COORD_DIR_COORD, "{\"a\":1}", 7, hex);
    CHECK_STR(hex, "dce970b2d9c249ad500630e5bc1fa89603adfae5977e2e68ca7945bf9ad4844c");
}

/* Seals body, opens a copy of the line (without its '\n') as told; returns the rc. */
static int roundtrip(const char *body, const unsigned char *open_key, size_t open_len,
                     char open_dir, void (*alter)(char *line, size_t len), char *why)
{
    size_t len = 0;
    char *line = coord_seal(KEY, KEY_LEN, COORD_DIR_NODE, body, &len);
    REQUIRE(line != NULL);
    REQUIRE(len > 0 && line[len - 1] == '\n');
    line[--len] = '\0';
    if (alter != NULL)
        alter(line, len);
    cJSON *json = NULL;
    int rc = coord_open(open_key, open_len, open_dir, line, strlen(line), &json, why, 256);
    CHECK((rc == 0) == (json != NULL));
    cJSON_Delete(json);
    free(line);
    return rc;
}

static void flip_body(char *line, size_t len)
{
    (void)len;
    line[3] ^= 1; /* inside "v" */
}

static void flip_mac(char *line, size_t len)
{
    line[len - 3] = line[len - 3] == '0' ? '1' : '0';
}

static void cut_mac(char *line, size_t len)
{
    memcpy(line + len - 10, "\"}", 3);
}

static void test_seal_open(void)
{
    char why[256];
    const char *body = "{\"v\":1,\"type\":\"hello\",\"nonce\":\"00\"}";
    static const unsigned char other[] = "another-secret-of-this-job";

    CHECK_INT(roundtrip(body, KEY, KEY_LEN, COORD_DIR_NODE, NULL, why), 0);
    CHECK_INT(roundtrip(body, other, sizeof(other) - 1, COORD_DIR_NODE, NULL, why), -EACCES);
    CHECK(strstr(why, "HMAC") != NULL);
    /* a node's line sent back as if the coordinator said it */
    CHECK_INT(roundtrip(body, KEY, KEY_LEN, COORD_DIR_COORD, NULL, why), -EACCES);
    CHECK_INT(roundtrip(body, KEY, KEY_LEN, COORD_DIR_NODE, flip_body, why), -EACCES);
    CHECK_INT(roundtrip(body, KEY, KEY_LEN, COORD_DIR_NODE, flip_mac, why), -EACCES);
    CHECK_INT(roundtrip(body, KEY, KEY_LEN, COORD_DIR_NODE, cut_mac, why), -EACCES);
    CHECK(strstr(why, "mac") != NULL);
    CHECK_INT(roundtrip("{\"v\":2}", KEY, KEY_LEN, COORD_DIR_NODE, NULL, why), -EINVAL);
    CHECK(strstr(why, "field v") != NULL);

    size_t len;
    CHECK(coord_seal(KEY, KEY_LEN, COORD_DIR_NODE, "{}", &len) == NULL);
    CHECK(coord_seal(KEY, KEY_LEN, COORD_DIR_NODE, "[1,2]", &len) == NULL);
    CHECK(coord_seal(KEY, KEY_LEN, COORD_DIR_NODE, "", &len) == NULL);

    /* no mac at all, garbage, a trailing '\r' */
    char plain[] = "{\"v\":1,\"type\":\"report\"}";
    cJSON *json = NULL;
    CHECK_INT(coord_open(KEY, KEY_LEN, COORD_DIR_NODE, plain, strlen(plain), &json, why, 256),
              -EACCES);
    char junk[] = "\xff\xfe not json at all";
    CHECK_INT(coord_open(KEY, KEY_LEN, COORD_DIR_NODE, junk, strlen(junk), &json, why, 256),
              -EACCES);
    char *line = coord_seal(KEY, KEY_LEN, COORD_DIR_NODE, body, &len);
    REQUIRE(line != NULL);
    line[len - 1] = '\r';
    CHECK_INT(coord_open(KEY, KEY_LEN, COORD_DIR_NODE, line, len, &json, why, 256), 0);
    cJSON_Delete(json);
    free(line);
}

static void test_fresh(void)
{
    char why[256];
    uint64_t seq = 0;
    cJSON *j = cJSON_Parse("{\"nonce\":\"abc\",\"seq\":5}");
    REQUIRE(j != NULL);
    CHECK_INT(coord_check_fresh(j, "abc", 4, &seq, why, sizeof(why)), 0);
    CHECK_INT(seq, 5);
    CHECK_INT(coord_check_fresh(j, "abc", 5, &seq, why, sizeof(why)), -EACCES);
    CHECK(strstr(why, "seq") != NULL);
    CHECK_INT(coord_check_fresh(j, "abd", 0, &seq, why, sizeof(why)), -EACCES);
    CHECK(strstr(why, "replay") != NULL);
    cJSON_Delete(j);
    const char *bad[] = {"{\"nonce\":\"abc\"}", "{\"nonce\":\"abc\",\"seq\":-1}",
                         "{\"nonce\":\"abc\",\"seq\":1.5}", "{\"nonce\":\"abc\",\"seq\":\"2\"}",
                         "{\"seq\":2}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        j = cJSON_Parse(bad[i]);
        REQUIRE(j != NULL);
        CHECK_INT(coord_check_fresh(j, "abc", 0, &seq, why, sizeof(why)), -EACCES);
        cJSON_Delete(j);
    }
}

static int parse(const char *text, long nodes, char *why)
{
    cJSON *j = cJSON_Parse(text);
    struct coord_report r;
    REQUIRE(j != NULL);
    int rc = coord_parse_report(j, nodes, &r, why, 256);
    if (rc == 0) {
        CHECK(r.n_files >= 1);
        free(r.files);
    } else {
        CHECK(r.files == NULL);
    }
    cJSON_Delete(j);
    return rc;
}

#define FILE_OK                                                                                    \
    "{\"path\":\"step-1/__0_0.distcp\",\"size\":10,\"sha256\":\"" SHA "\",\"via\":\"lfs\"}"
#define REPORT(rank, ckpt, step, files)                                                            \
    "{\"rank\":" rank ",\"ckpt\":" ckpt ",\"step\":" step ",\"message\":\"m\",\"files\":[" files   \
    "]}"

static void test_parse_report(void)
{
    char why[256];
    cJSON *j = cJSON_Parse(REPORT("2", "\"step-1\"", "1", FILE_OK "," FILE_OK));
    struct coord_report r;
    REQUIRE(j != NULL);
    CHECK_INT(coord_parse_report(j, 3, &r, why, sizeof(why)), 0);
    CHECK_INT(r.rank, 2);
    CHECK_STR(r.ckpt, "step-1");
    CHECK_INT(r.step, 1);
    CHECK_INT(r.n_files, 2);
    CHECK_STR(r.files[0].sha256, SHA);
    CHECK_INT(r.files[0].size, 10);
    CHECK_STR(r.files[1].via, "lfs");
    free(r.files);
    cJSON_Delete(j);

    CHECK_INT(parse(REPORT("3", "\"step-1\"", "1", FILE_OK), 3, why), -EINVAL);
    CHECK(strstr(why, "rank") != NULL);
    CHECK_INT(parse(REPORT("-1", "\"step-1\"", "1", FILE_OK), 3, why), -EINVAL);
    CHECK_INT(parse(REPORT("0", "\"/abs\"", "1", FILE_OK), 3, why), -EINVAL);
    CHECK(strstr(why, "ckpt") != NULL);
    CHECK_INT(parse(REPORT("0", "\"../up\"", "1", FILE_OK), 3, why), -EINVAL);
    CHECK_INT(parse(REPORT("0", "\"a\\nb\"", "1", FILE_OK), 3, why), -EINVAL);
    CHECK_INT(parse(REPORT("0", "\"\"", "1", FILE_OK), 3, why), -EINVAL);
    CHECK_INT(parse(REPORT("0", "\"s\"", "1.5", FILE_OK), 3, why), -EINVAL);
    CHECK(strstr(why, "step") != NULL);
    CHECK_INT(parse(REPORT("0", "\"s\"", "1", ""), 3, why), -EINVAL);
    CHECK(strstr(why, "files") != NULL);
    const char *bad_files[] = {
        "{\"path\":\"/x\",\"size\":1,\"sha256\":\"" SHA "\",\"via\":\"lfs\"}",
        "{\"path\":\"a/../../x\",\"size\":1,\"sha256\":\"" SHA "\",\"via\":\"lfs\"}",
        "{\"path\":\"x\",\"size\":-1,\"sha256\":\"" SHA "\",\"via\":\"lfs\"}",
        "{\"path\":\"x\",\"size\":1,\"sha256\":\"ABC\",\"via\":\"lfs\"}",
        "{\"path\":\"x\",\"size\":1,\"sha256\":\"" SHA "\",\"via\":\"ftp\"}",
        "{\"path\":\"x\",\"size\":1,\"sha256\":\"" SHA "\"}",
        "{\"size\":1,\"sha256\":\"" SHA "\",\"via\":\"xet\"}",
        "7",
    };
    for (size_t i = 0; i < sizeof(bad_files) / sizeof(bad_files[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text), REPORT("0", "\"s\"", "1", FILE_OK ",%s"), bad_files[i]);
        CHECK_INT(parse(text, 3, why), -EINVAL);
        CHECK(strstr(why, "file 2") != NULL);
    }
    /* the message is required */
    CHECK_INT(parse("{\"rank\":0,\"ckpt\":\"s\",\"step\":1,\"files\":[" FILE_OK "]}", 3, why),
              -EINVAL);
    CHECK(strstr(why, "message") != NULL);
}

static void test_nonce(void)
{
    char a[COORD_NONCE_HEX + 1], b[COORD_NONCE_HEX + 1];
    REQUIRE(coord_new_nonce(a) == 0 && coord_new_nonce(b) == 0);
    CHECK_INT(strlen(a), COORD_NONCE_HEX);
    CHECK(strspn(a, "0123456789abcdef") == COORD_NONCE_HEX);
    CHECK(strcmp(a, b) != 0);
}

int main(void)
{
    test_mac_vector();
    test_seal_open();
    test_fresh();
    test_parse_report();
    test_nonce();
    return check_report("test_coord_proto");
}
