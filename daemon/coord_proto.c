/* coord_proto.c - the multi-node protocol's pure parts: line authentication (HMAC-SHA256 with a
 * direction label), freshness (per-connection nonce, growing seq) and report parsing. */
#include "coord_proto.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define MAC_FIELD ",\"mac\":\""
#define MAC_FIELD_LEN (sizeof(MAC_FIELD) - 1)
/* ,"mac":"<64 hex>"} */
#define MAC_SUFFIX_LEN (MAC_FIELD_LEN + COORD_MAC_HEX + 2)

static void to_hex(const unsigned char *b, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[b[i] >> 4];
        hex[2 * i + 1] = digits[b[i] & 15];
    }
    hex[2 * n] = '\0';
}

/* The mac covers body[0..len) followed by '}' (the object closed where the mac field began). */
static void mac_closed(const unsigned char *key, size_t key_len, char dir, const char *body,
                       size_t len, bool close, char hex[COORD_MAC_HEX + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char head[sizeof(COORD_MAC_LABEL) + 2];
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t out = 0;
    int ok = ctx != NULL && EVP_MAC_init(ctx, key, key_len, params) == 1;

    snprintf(head, sizeof(head), "%s%c\n", COORD_MAC_LABEL, dir);
    ok = ok && EVP_MAC_update(ctx, (const unsigned char *)head, strlen(head)) == 1;
    ok = ok && EVP_MAC_update(ctx, (const unsigned char *)body, len) == 1;
    ok = ok && (!close || EVP_MAC_update(ctx, (const unsigned char *)"}", 1) == 1);
    ok = ok && EVP_MAC_final(ctx, md, &out, sizeof(md)) == 1;
    md_len = ok ? (unsigned int)out : 0;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    if (md_len != 32) {
        /* never a valid mac: all 'x' compares unequal to any hex */
        memset(hex, 'x', COORD_MAC_HEX);
        hex[COORD_MAC_HEX] = '\0';
        return;
    }
    to_hex(md, md_len, hex);
}

void coord_mac(const unsigned char *key, size_t key_len, char dir, const char *body, size_t len,
               char hex[COORD_MAC_HEX + 1])
{
    mac_closed(key, key_len, dir, body, len, false, hex);
}

char *coord_seal(const unsigned char *key, size_t key_len, char dir, const char *body,
                 size_t *ret_len)
{
    size_t len = strlen(body);
    char hex[COORD_MAC_HEX + 1];
    char *line;

    if (len < 3 || body[0] != '{' || body[len - 1] != '}')
        return NULL;
    coord_mac(key, key_len, dir, body, len, hex);
    if ((line = malloc(len - 1 + MAC_SUFFIX_LEN + 2)) == NULL)
        return NULL;
    memcpy(line, body, len - 1);
    size_t at = len - 1;
    memcpy(line + at, MAC_FIELD, MAC_FIELD_LEN);
    at += MAC_FIELD_LEN;
    memcpy(line + at, hex, COORD_MAC_HEX);
    at += COORD_MAC_HEX;
    memcpy(line + at, "\"}\n", 4);
    *ret_len = at + 3;
    return line;
}

int coord_open(const unsigned char *key, size_t key_len, char dir, char *line, size_t len,
               cJSON **ret_json, char *why, size_t why_size)
{
    char want[COORD_MAC_HEX + 1];

    *ret_json = NULL;
    if (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    if (len < MAC_SUFFIX_LEN + 1 || line[len - 1] != '}' || line[len - 2] != '"' ||
        memcmp(line + len - MAC_SUFFIX_LEN, MAC_FIELD, MAC_FIELD_LEN) != 0) {
        snprintf(why, why_size, "the message does not end with its \"mac\" field");
        return -EACCES;
    }
    size_t body_len = len - MAC_SUFFIX_LEN;
    mac_closed(key, key_len, dir, line, body_len, true, want);
    if (CRYPTO_memcmp(want, line + body_len + MAC_FIELD_LEN, COORD_MAC_HEX) != 0) {
        snprintf(why, why_size,
                 "the HMAC of the message does not match (wrong job secret, or altered)");
        return -EACCES;
    }
    cJSON *json = cJSON_ParseWithLength(line, len);
    if (json == NULL || !cJSON_IsObject(json)) {
        cJSON_Delete(json);
        snprintf(why, why_size, "the message is not one JSON object");
        return -EINVAL;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, "v");
    if (!cJSON_IsNumber(v) || v->valuedouble != COORD_PROTO_VERSION) {
        cJSON_Delete(json);
        snprintf(why, why_size, "field v is not %d", COORD_PROTO_VERSION);
        return -EINVAL;
    }
    *ret_json = json;
    return 0;
}

const char *coord_msg_type(const cJSON *json)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(json, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static bool get_uint(const cJSON *o, const char *name, double max, uint64_t *ret)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(n) || !isfinite(n->valuedouble) || n->valuedouble < 0 ||
        n->valuedouble > max || n->valuedouble != floor(n->valuedouble))
        return false;
    *ret = (uint64_t)n->valuedouble;
    return true;
}

int coord_check_fresh(const cJSON *json, const char *want_nonce, uint64_t last_seq,
                      uint64_t *ret_seq, char *why, size_t why_size)
{
    const cJSON *nonce = cJSON_GetObjectItemCaseSensitive(json, "nonce");
    uint64_t seq;

    if (!cJSON_IsString(nonce) || strcmp(nonce->valuestring, want_nonce) != 0) {
        snprintf(why, why_size, "the message names the nonce of another connection (a replay)");
        return -EACCES;
    }
    if (!get_uint(json, "seq", 9007199254740991.0, &seq) || seq <= last_seq) {
        snprintf(why, why_size,
                 "field seq is missing or not above %" PRIu64 " (a replay or a reordered line)",
                 last_seq);
        return -EACCES;
    }
    *ret_seq = seq;
    return 0;
}

static bool has_control(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static bool is_sha256(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n == 64;
}

static bool bad_relpath(const char *p, size_t max)
{
    size_t n = strlen(p);
    return n == 0 || n > max || p[0] == '/' || has_control(p) || strcmp(p, "..") == 0 ||
           strncmp(p, "../", 3) == 0 || strstr(p, "/../") != NULL ||
           (n >= 3 && strcmp(p + n - 3, "/..") == 0);
}

int coord_parse_report(const cJSON *json, long nodes, struct coord_report *ret, char *why,
                       size_t why_size)
{
    const cJSON *ckpt = cJSON_GetObjectItemCaseSensitive(json, "ckpt");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(json, "message");
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(json, "step");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(json, "files");
    uint64_t rank;

    memset(ret, 0, sizeof(*ret));
    if (!get_uint(json, "rank", (double)nodes - 1, &rank)) {
        snprintf(why, why_size, "field rank is not a node rank from 0 to %ld", nodes - 1);
        return -EINVAL;
    }
    if (!cJSON_IsString(ckpt) || bad_relpath(ckpt->valuestring, COORD_MAX_NAME)) {
        snprintf(why, why_size, "field ckpt is not a checkpoint name (1-%d bytes, relative)",
                 COORD_MAX_NAME);
        return -EINVAL;
    }
    if (!cJSON_IsNumber(step) || !isfinite(step->valuedouble) ||
        step->valuedouble != floor(step->valuedouble) || fabs(step->valuedouble) > 9.0e15) {
        snprintf(why, why_size, "field step is not an integer");
        return -EINVAL;
    }
    if (!cJSON_IsString(msg) || msg->valuestring[0] == '\0' || strlen(msg->valuestring) > 1024) {
        snprintf(why, why_size, "field message is not a commit title (1-1024 bytes)");
        return -EINVAL;
    }
    int n = cJSON_IsArray(files) ? cJSON_GetArraySize(files) : -1;
    if (n < 1 || n > 20000) {
        snprintf(why, why_size, "field files is not a list of 1 to 20000 files");
        return -EINVAL;
    }
    ret->files = calloc((size_t)n, sizeof(*ret->files));
    if (ret->files == NULL) {
        snprintf(why, why_size, "out of memory");
        return -ENOMEM;
    }
    size_t i = 0;
    const cJSON *f;
    cJSON_ArrayForEach(f, files)
    {
        const cJSON *path = cJSON_GetObjectItemCaseSensitive(f, "path");
        const cJSON *sha = cJSON_GetObjectItemCaseSensitive(f, "sha256");
        const cJSON *via = cJSON_GetObjectItemCaseSensitive(f, "via");
        struct coord_file *cf = &ret->files[i];
        if (!cJSON_IsString(path) || bad_relpath(path->valuestring, 4096) || !cJSON_IsString(sha) ||
            !is_sha256(sha->valuestring) || !cJSON_IsString(via) ||
            (strcmp(via->valuestring, "lfs") != 0 && strcmp(via->valuestring, "xet") != 0 &&
             strcmp(via->valuestring, "hub") != 0) ||
            !get_uint(f, "size", 9007199254740991.0, &cf->size)) {
            snprintf(why, why_size,
                     "file %zu of files lacks a relative path, a size, a lowercase sha256 "
                     "or a via of lfs, xet or hub",
                     i + 1);
            free(ret->files);
            ret->files = NULL;
            return -EINVAL;
        }
        cf->path = path->valuestring;
        cf->sha256 = sha->valuestring;
        cf->via = via->valuestring;
        i++;
    }
    ret->rank = (long)rank;
    ret->ckpt = ckpt->valuestring;
    ret->step = (int64_t)step->valuedouble;
    ret->message = msg->valuestring;
    ret->n_files = i;
    return 0;
}

int coord_new_nonce(char hex[COORD_NONCE_HEX + 1])
{
    unsigned char b[COORD_NONCE_HEX / 2];
    if (RAND_bytes(b, sizeof(b)) != 1)
        return -EIO;
    to_hex(b, sizeof(b), hex);
    return 0;
}
