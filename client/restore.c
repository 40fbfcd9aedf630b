/* restore.c - `ckptpush restore`: finds the newest complete checkpoint in a Hub repo
 * (last-checkpoint/, else the highest checkpoint-N/, else the model files at the root when their
 * trainer_state.json says the step), downloads it at one commit into DIR/.ckptpush-restore-<step>/
 * (Range resumes from partial files; finished files are never fetched again), verifies every file
 * (SHA-256 of LFS files, git blob SHA-1 of the others) and renames the folder to
 * DIR/checkpoint-<step>. Owns the Hub download side and its token lookup; one blocking curl
 * handle, single-threaded like the rest of the client.
 */
#include "restore.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/evp.h>

#include "ipc_proto.h"

#define DEFAULT_ENDPOINT "https://huggingface.co"
#define PART_SUFFIX ".ckptpush-part"
#define TMP_PREFIX ".ckptpush-restore-"
#define JSON_MAX (64u * 1024 * 1024) /* a tree page or trainer_state.json */
#define ATTEMPTS 5                   /* per request: connection errors, 429 and 5xx */
#define REDIRECTS_MAX 5
#define STALL_SECONDS 120       /* a transfer below 1 byte/s this long counts as a timeout */
#define NOTHING_TO_RESTORE (-1) /* --missing-ok: no repo, revision or checkpoint yet; exit 0 */

struct entry {
    char *path; /* repo path */
    uint64_t size;
    char oid[41];    /* git blob id (of the pointer for LFS files) */
    char sha256[65]; /* LFS files: the content's SHA-256; "" otherwise */
};

struct restore {
    const char *endpoint, *repo, *revision, *dir;
    char *token; /* never printed */
    bool missing_ok;
    CURL *curl;
    char sha[41]; /* the commit everything is read at */
    struct entry *entries;
    size_t n_entries, cap_entries;
};

struct answer {
    long status;
    char *body; /* memory mode */
    size_t len, max;
    int fd; /* file mode when >= 0 */
    uint64_t limit, written, range_from;
    bool overflow, write_failed, restarted;
    char location[4096], next[4096], error_code[64], content_range[128];
    long retry_after;
};

static void fail_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail_msg(const char *fmt, ...)
{
    va_list ap;

    fputs("ckptpush: restore: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- token: the huggingface_hub conventions, as ckptpushd reads them ------------------------ */

static char *strip_token(char *s)
{
    size_t n;

    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

static const char *env_set(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* 0 with *ret NULL when the file is missing or empty. */
static int read_token_file(const char *path, char **ret)
{
    char buf[4096];
    FILE *f = fopen(path, "r");
    size_t n;

    *ret = NULL;
    if (f == NULL)
        return errno == ENOENT ? 0 : -errno;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *t = strip_token(buf);
    if (t[0] != '\0' && (*ret = strdup(t)) == NULL)
        return -ENOMEM;
    explicit_bzero(buf, sizeof(buf));
    return 0;
}

static int find_token(const char *token_path, char **ret)
{
    char path[PATH_MAX];
    const char *v;
    int rc;

    *ret = NULL;
    if ((v = env_set("HF_TOKEN")) != NULL || (v = env_set("HUGGING_FACE_HUB_TOKEN")) != NULL) {
        char *copy = strdup(v);
        if (copy == NULL)
            return -ENOMEM;
        *ret = strdup(strip_token(copy));
        free(copy);
        return *ret == NULL ? -ENOMEM : 0;
    }
    if ((v = env_set("CREDENTIALS_DIRECTORY")) != NULL) {
        snprintf(path, sizeof(path), "%s/hf_token", v);
        if ((rc = read_token_file(path, ret)) < 0 || *ret != NULL)
            return rc;
    }
    if (token_path != NULL || (token_path = env_set("HF_TOKEN_PATH")) != NULL)
        snprintf(path, sizeof(path), "%s", token_path);
    else if ((v = env_set("HF_HOME")) != NULL)
        snprintf(path, sizeof(path), "%s/token", v);
    else if ((v = env_set("XDG_CACHE_HOME")) != NULL)
        snprintf(path, sizeof(path), "%s/huggingface/token", v);
    else if ((v = env_set("HOME")) != NULL)
        snprintf(path, sizeof(path), "%s/.cache/huggingface/token", v);
    else
        return 0;
    if ((rc = read_token_file(path, ret)) < 0)
        fail_msg("cannot read the token file '%s': %s", path, strerror(-rc));
    return rc;
}

/* ---- HTTP ---------------------------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
    struct answer *a = ctx;
    size_t n = size * nmemb;

    if (a->fd >= 0 && a->status == 200 && a->range_from > 0) {
        /* the server ignored the Range: the whole file comes from byte 0 */
        if (ftruncate(a->fd, 0) != 0 || lseek(a->fd, 0, SEEK_SET) != 0) {
            a->write_failed = true;
            return 0;
        }
        a->limit += a->range_from;
        a->range_from = 0;
        a->restarted = true;
    }
    if (a->fd >= 0 && a->status >= 200 && a->status < 300) {
        if (a->written + n > a->limit) {
            a->overflow = true; /* more bytes than the tree says the file has */
            return 0;
        }
        for (size_t off = 0; off < n;) {
            ssize_t w = write(a->fd, data + off, n - off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                a->write_failed = true;
                return 0;
            }
            off += (size_t)w;
        }
        a->written += n;
        return n;
    }
    /* error bodies and JSON answers go to memory, capped */
    if (a->len + n > a->max) {
        a->overflow = true;
        return 0;
    }
    char *grown = realloc(a->body, a->len + n + 1);
    if (grown == NULL)
        return 0;
    a->body = grown;
    memcpy(a->body + a->len, data, n);
    a->len += n;
    a->body[a->len] = '\0';
    return n;
}

static void header_value(char *dst, size_t size, const char *v, size_t n)
{
    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    if (n >= size)
        n = size - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

/* Link: <URL>; rel="next" (the Hub's pagination). */
static void parse_link_next(char *dst, size_t size, const char *v)
{
    const char *rel = strstr(v, "rel=\"next\"");
    const char *open, *close;

    dst[0] = '\0';
    if (rel == NULL)
        return;
    for (open = rel; open > v && *open != '<'; open--)
        ;
    if (*open != '<' || (close = strchr(open, '>')) == NULL || close > rel)
        return;
    if ((size_t)(close - open - 1) < size) {
        memcpy(dst, open + 1, (size_t)(close - open - 1));
        dst[close - open - 1] = '\0';
    }
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ctx)
{
    struct answer *a = ctx;
    size_t n = size * nmemb;
    char line[8192];

    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        const char *sp = memchr(data, ' ', n);
        a->status = sp != NULL ? strtol(sp + 1, NULL, 10) : 0;
        a->location[0] = a->next[0] = a->error_code[0] = a->content_range[0] = '\0';
        a->retry_after = -1;
        return n;
    }
    header_value(line, sizeof(line), data, n);
#define IS(name) (strncasecmp(line, name ":", sizeof(name)) == 0)
    const char *v = strchr(line, ':');
    if (v == NULL)
        return n;
    v++;
    while (*v == ' ')
        v++;
    if (IS("Location"))
        snprintf(a->location, sizeof(a->location), "%s", v);
    else if (IS("Link"))
        parse_link_next(a->next, sizeof(a->next), v);
    else if (IS("X-Error-Code"))
        snprintf(a->error_code, sizeof(a->error_code), "%s", v);
    else if (IS("Content-Range"))
        snprintf(a->content_range, sizeof(a->content_range), "%s", v);
    else if (IS("Retry-After"))
        a->retry_after = strtol(v, NULL, 10);
#undef IS
    return n;
}

static void answer_reset(struct answer *a, int fd, uint64_t limit)
{
    free(a->body);
    memset(a, 0, sizeof(*a));
    a->fd = fd;
    a->limit = limit;
    a->max = JSON_MAX;
    a->retry_after = -1;
}

/* One request, no redirect followed. auth: send the token (Hub API and resolve URLs only). */
static CURLcode perform(struct restore *rs, const char *url, bool auth, uint64_t range_from,
                        struct answer *a)
{
    struct curl_slist *headers = NULL;
    char *auth_header = NULL;
    char range[64];
    CURLcode rc;

    curl_easy_reset(rs->curl);
    curl_easy_setopt(rs->curl, CURLOPT_URL, url);
    curl_easy_setopt(rs->curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(rs->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(rs->curl, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(rs->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(rs->curl, CURLOPT_LOW_SPEED_TIME, (long)STALL_SECONDS);
    curl_easy_setopt(rs->curl, CURLOPT_USERAGENT, "ckptpush/" CKPT_VERSION " (restore)");
    curl_easy_setopt(rs->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(rs->curl, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(rs->curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(rs->curl, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(rs->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    headers = curl_slist_append(headers, "Accept-Encoding: identity");
    if (auth && rs->token != NULL &&
        asprintf(&auth_header, "Authorization: Bearer %s", rs->token) >= 0)
        headers = curl_slist_append(headers, auth_header);
    if (range_from > 0) {
        snprintf(range, sizeof(range), "%" PRIu64 "-", range_from);
        curl_easy_setopt(rs->curl, CURLOPT_RANGE, range);
    }
    curl_easy_setopt(rs->curl, CURLOPT_HTTPHEADER, headers);
    rc = curl_easy_perform(rs->curl);
    curl_slist_free_all(headers);
    if (auth_header != NULL) {
        explicit_bzero(auth_header, strlen(auth_header));
        free(auth_header);
    }
    return rc;
}

static bool retryable(CURLcode rc, const struct answer *a)
{
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
        rc == CURLE_GOT_NOTHING || rc == CURLE_PARTIAL_FILE || rc == CURLE_OPERATION_TIMEDOUT)
        return true;
    return rc == CURLE_OK && (a->status == 429 || a->status == 408 || a->status >= 500);
}

static void backoff(int attempt, const struct answer *a)
{
    long s = 1L << attempt;
    if (a->retry_after >= 0 && a->retry_after <= 60)
        s = a->retry_after;
    sleep((unsigned)s);
}

/* The exit code and message for a request that did not answer what was wanted. what names the
 * request for the user. */
static int request_failed(struct restore *rs, const char *what, CURLcode rc, const struct answer *a)
{
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        fail_msg("%s: the Hub at '%s' stopped answering (%s)", what, rs->endpoint,
                 curl_easy_strerror(rc));
        return IPC_EXIT_TIMEOUT;
    }
    if (rc == CURLE_WRITE_ERROR && a->overflow) {
        fail_msg("%s: the Hub sent more bytes than it announced: not a valid answer", what);
        return IPC_EXIT_PROTOCOL;
    }
    if (rc == CURLE_WRITE_ERROR && a->write_failed) {
        fail_msg("%s: cannot write the file: %s", what, strerror(errno));
        return IPC_EXIT_FAILED;
    }
    if (rc != CURLE_OK) {
        fail_msg("%s: cannot reach the Hub at '%s': %s", what, rs->endpoint,
                 curl_easy_strerror(rc));
        return IPC_EXIT_NO_DAEMON;
    }
    if (a->status == 401 || a->status == 403) {
        if (rs->token == NULL)
            fail_msg("%s: the Hub refused access (HTTP %ld) and no token was found: set "
                     "HF_TOKEN or write it to $HF_HOME/token",
                     what, a->status);
        else
            fail_msg("%s: the Hub refused the token (HTTP %ld): it is invalid or may not read "
                     "'%s'",
                     what, a->status, rs->repo);
        return IPC_EXIT_FAILED;
    }
    if (a->status == 404 && rs->missing_ok && strcmp(a->error_code, "EntryNotFound") != 0) {
        printf("nothing to restore: %s not found\n",
               strcmp(a->error_code, "RevisionNotFound") == 0 ? "revision" : "repo");
        return NOTHING_TO_RESTORE;
    }
    if (a->status == 404) {
        if (strcmp(a->error_code, "RevisionNotFound") == 0)
            fail_msg("%s: revision '%s' not found in repo '%s' (HTTP 404)", what, rs->revision,
                     rs->repo);
        else if (strcmp(a->error_code, "EntryNotFound") == 0)
            fail_msg("%s: not found in repo '%s' at commit %s (HTTP 404)", what, rs->repo, rs->sha);
        else
            fail_msg("%s: repo '%s' not found (HTTP 404), or it is private and the token may "
                     "not read it",
                     what, rs->repo);
        return IPC_EXIT_FAILED;
    }
    if (a->status >= 500 || a->status == 429 || a->status == 408) {
        fail_msg("%s: the Hub kept failing (HTTP %ld after %d attempts)", what, a->status,
                 ATTEMPTS);
        return IPC_EXIT_FAILED;
    }
    fail_msg("%s: unexpected answer from the Hub (HTTP %ld)", what, a->status);
    return IPC_EXIT_PROTOCOL;
}

/* GET url (with the token) as JSON, retried; *next gets the Link rel="next" URL or "". */
static int get_json(struct restore *rs, const char *url, const char *what, cJSON **ret, char *next,
                    size_t next_size)
{
    struct answer a = {.fd = -1};
    CURLcode rc = CURLE_OK;
    int code;

    *ret = NULL;
    for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
        answer_reset(&a, -1, 0);
        rc = perform(rs, url, true, 0, &a);
        if (!retryable(rc, &a) || attempt + 1 == ATTEMPTS)
            break;
        backoff(attempt, &a);
    }
    if (rc != CURLE_OK || a.status != 200) {
        code = request_failed(rs, what, rc, &a);
        free(a.body);
        return code;
    }
    *ret = cJSON_ParseWithLength(a.body != NULL ? a.body : "", a.len);
    if (*ret == NULL) {
        fail_msg("%s: the Hub's answer is not valid JSON", what);
        free(a.body);
        return IPC_EXIT_PROTOCOL;
    }
    if (next != NULL)
        snprintf(next, next_size, "%s", a.next);
    free(a.body);
    return IPC_EXIT_OK;
}

/* ---- the repo at one commit ---------------------------------------------------------------- */

static char *escape_segment(CURL *curl, const char *s)
{
    return curl_easy_escape(curl, s, 0);
}

/* The path with each segment percent-encoded, '/' kept. */
static char *escape_path(CURL *curl, const char *path)
{
    size_t cap = strlen(path) * 3 + 1, len = 0;
    char *out = malloc(cap), *copy = strdup(path), *save = NULL;

    if (out == NULL || copy == NULL) {
        free(out);
        free(copy);
        return NULL;
    }
    out[0] = '\0';
    for (char *seg = strtok_r(copy, "/", &save); seg != NULL; seg = strtok_r(NULL, "/", &save)) {
        char *e = escape_segment(curl, seg);
        if (e == NULL)
            break;
        len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? "/" : "", e);
        curl_free(e);
    }
    free(copy);
    return out;
}

static int read_revision(struct restore *rs)
{
    char *rev = escape_segment(rs->curl, rs->revision), *url = NULL, what[256];
    cJSON *j = NULL;
    int code;

    snprintf(what, sizeof(what), "revision '%s' of '%s'", rs->revision, rs->repo);
    if (rev == NULL ||
        asprintf(&url, "%s/api/models/%s/revision/%s", rs->endpoint, rs->repo, rev) < 0) {
        curl_free(rev);
        return IPC_EXIT_FAILED;
    }
    curl_free(rev);
    code = get_json(rs, url, what, &j, NULL, 0);
    free(url);
    if (code != IPC_EXIT_OK)
        return code;
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(j, "sha");
    bool ok = cJSON_IsString(sha) && strlen(sha->valuestring) == 40;
    for (size_t i = 0; ok && i < 40; i++)
        ok = isxdigit((unsigned char)sha->valuestring[i]);
    if (!ok) {
        fail_msg("%s: the Hub's answer has no commit id ('sha')", what);
        cJSON_Delete(j);
        return IPC_EXIT_PROTOCOL;
    }
    memcpy(rs->sha, sha->valuestring, 41);
    cJSON_Delete(j);
    return IPC_EXIT_OK;
}

static bool is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

/* A repo path we may turn into a local one: relative, no '.', '..' or empty segments. */
static bool safe_repo_path(const char *p)
{
    const char *seg = p;

    if (p[0] == '\0' || p[0] == '/')
        return false;
    for (const char *c = p;; c++) {
        if (*c == '/' || *c == '\0') {
            size_t n = (size_t)(c - seg);
            if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
                return false;
            if (*c == '\0')
                return true;
            seg = c + 1;
        } else if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            return false;
        }
    }
}

static bool json_size(const cJSON *o, const char *key, uint64_t *ret)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9.0e15 ||
        v->valuedouble != (double)(uint64_t)v->valuedouble)
        return false;
    *ret = (uint64_t)v->valuedouble;
    return true;
}

static int add_entry(struct restore *rs, const cJSON *item, const char *what)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(item, "type");
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(item, "path");
    const cJSON *oid = cJSON_GetObjectItemCaseSensitive(item, "oid");
    const cJSON *lfs = cJSON_GetObjectItemCaseSensitive(item, "lfs");
    struct entry e = {0};

    if (!cJSON_IsString(type) || !cJSON_IsString(path)) {
        fail_msg("%s: an entry has no 'type' or 'path'", what);
        return IPC_EXIT_PROTOCOL;
    }
    if (strcmp(type->valuestring, "file") != 0)
        return IPC_EXIT_OK; /* directories */
    if (!safe_repo_path(path->valuestring)) {
        fail_msg("%s: refusing the path '%.200s' (absolute, '..' or control characters)", what,
                 path->valuestring);
        return IPC_EXIT_PROTOCOL;
    }
    if (!cJSON_IsString(oid) || !is_hex(oid->valuestring, 40) ||
        !json_size(item, "size", &e.size)) {
        fail_msg("%s: the entry of '%.200s' has no valid 'oid' or 'size'", what, path->valuestring);
        return IPC_EXIT_PROTOCOL;
    }
    memcpy(e.oid, oid->valuestring, 41);
    if (lfs != NULL && !cJSON_IsNull(lfs)) {
        const cJSON *sha = cJSON_GetObjectItemCaseSensitive(lfs, "oid");
        uint64_t size;
        if (!cJSON_IsString(sha) || !is_hex(sha->valuestring, 64) ||
            !json_size(lfs, "size", &size)) {
            fail_msg("%s: the 'lfs' of '%.200s' has no valid 'oid' or 'size'", what,
                     path->valuestring);
            return IPC_EXIT_PROTOCOL;
        }
        memcpy(e.sha256, sha->valuestring, 65);
        e.size = size;
    }
    if (rs->n_entries == rs->cap_entries) {
        size_t cap = rs->cap_entries ? 2 * rs->cap_entries : 64;
        struct entry *grown = realloc(rs->entries, cap * sizeof(*grown));
        if (grown == NULL)
            return IPC_EXIT_FAILED;
        rs->entries = grown;
        rs->cap_entries = cap;
    }
    if ((e.path = strdup(path->valuestring)) == NULL)
        return IPC_EXIT_FAILED;
    rs->entries[rs->n_entries++] = e;
    return IPC_EXIT_OK;
}

/* Every file of the repo at rs->sha, following the Link pages. */
static int list_tree(struct restore *rs)
{
    char *url = NULL, next[4096], what[256], origin[1024];
    int code = IPC_EXIT_OK;

    snprintf(what, sizeof(what), "the file list of '%s' at %.12s", rs->repo, rs->sha);
    if (asprintf(&url, "%s/api/models/%s/tree/%s?recursive=true", rs->endpoint, rs->repo, rs->sha) <
        0)
        return IPC_EXIT_FAILED;
    /* pages are followed only on the endpoint's own origin: the token goes with them */
    snprintf(origin, sizeof(origin), "%s", rs->endpoint);
    char *slash = strstr(origin, "://");
    if (slash != NULL && (slash = strchr(slash + 3, '/')) != NULL)
        *slash = '\0';
    for (int page = 0; url != NULL && code == IPC_EXIT_OK; page++) {
        cJSON *j = NULL, *item;
        code = get_json(rs, url, what, &j, next, sizeof(next));
        free(url);
        url = NULL;
        if (code != IPC_EXIT_OK)
            break;
        if (!cJSON_IsArray(j)) {
            fail_msg("%s: the Hub's answer is not a list", what);
            code = IPC_EXIT_PROTOCOL;
        }
        cJSON_ArrayForEach(item, j)
        {
            if (code == IPC_EXIT_OK)
                code = add_entry(rs, item, what);
        }
        cJSON_Delete(j);
        if (code == IPC_EXIT_OK && next[0] != '\0') {
            size_t n = strlen(origin);
            if (strncmp(next, origin, n) != 0 || (next[n] != '/' && next[n] != '?')) {
                fail_msg("%s: the next page is on another host ('%.200s')", what, next);
                code = IPC_EXIT_PROTOCOL;
            } else if (page > 100000 || (url = strdup(next)) == NULL) {
                code = IPC_EXIT_FAILED;
            }
        }
    }
    free(url);
    return code;
}

static const struct entry *find_entry(const struct restore *rs, const char *path)
{
    for (size_t i = 0; i < rs->n_entries; i++)
        if (strcmp(rs->entries[i].path, path) == 0)
            return &rs->entries[i];
    return NULL;
}

/* ---- hashing and files --------------------------------------------------------------------- */

/* The file's SHA-256 (LFS) or git blob SHA-1, hex; 0 or -errno. */
static int hash_file(const char *path, bool git_blob, uint64_t size, char *hex)
{
    unsigned char buf[1 << 16], md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;
    ssize_t n;

    if (ctx == NULL || fd < 0) {
        rc = fd < 0 ? -errno : -ENOMEM;
        goto out;
    }
    EVP_DigestInit_ex(ctx, git_blob ? EVP_sha1() : EVP_sha256(), NULL);
    if (git_blob) {
        char head[64];
        int len = snprintf(head, sizeof(head), "blob %" PRIu64, size);
        EVP_DigestUpdate(ctx, head, (size_t)len + 1); /* with its NUL */
    }
    while ((n = read(fd, buf, sizeof(buf))) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        EVP_DigestUpdate(ctx, buf, (size_t)n);
    }
    EVP_DigestFinal_ex(ctx, md, &md_len);
    for (unsigned i = 0; i < md_len; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
out:
    if (fd >= 0)
        close(fd);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* 1: the file has the entry's size and hash; 0: it does not (got holds what it has); -errno. */
static int verify_file(const char *path, const struct entry *e, char *got)
{
    struct stat st;
    bool lfs = e->sha256[0] != '\0';
    int rc;

    got[0] = '\0';
    if (stat(path, &st) != 0)
        return -errno;
    if ((uint64_t)st.st_size != e->size) {
        snprintf(got, 80, "%lld bytes", (long long)st.st_size);
        return 0;
    }
    if ((rc = hash_file(path, !lfs, e->size, got)) < 0)
        return rc;
    return strcasecmp(got, lfs ? e->sha256 : e->oid) == 0;
}

static int mkdirs(const char *dir)
{
    char path[PATH_MAX];

    if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int fsync_path(const char *path, bool dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_WRONLY) | O_CLOEXEC), rc = 0;

    if (fd < 0)
        return -errno;
    if (fsync(fd) != 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* Resolves a Location against the URL it came from (absolute, or a path on the same origin). */
static char *resolve_location(const char *base, const char *loc)
{
    char *out = NULL;

    if (strncmp(loc, "http://", 7) == 0 || strncmp(loc, "https://", 8) == 0)
        return strdup(loc);
    if (loc[0] != '/')
        return NULL;
    const char *host = strstr(base, "://");
    const char *end = host != NULL ? strchr(host + 3, '/') : NULL;
    int n = end != NULL ? (int)(end - base) : (int)strlen(base);
    if (asprintf(&out, "%.*s%s", n, base, loc) < 0)
        return NULL;
    return out;
}

/* Downloads the entry into part (appending from its current size), following the resolve
 * redirect without the token. Retries transport errors, 429 and 5xx, each time from what is on
 * disk. */
static int download(struct restore *rs, const struct entry *e, const char *part)
{
    char *path = escape_path(rs->curl, e->path), *url = NULL, what[PATH_MAX + 64];
    struct answer a = {.fd = -1};
    CURLcode rc = CURLE_OK;
    int code = IPC_EXIT_FAILED;

    snprintf(what, sizeof(what), "download of '%s'", e->path);
    if (path == NULL ||
        asprintf(&url, "%s/%s/resolve/%s/%s", rs->endpoint, rs->repo, rs->sha, path) < 0) {
        free(path);
        return IPC_EXIT_FAILED;
    }
    free(path);
    for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
        struct stat st;
        char *target = strdup(url);
        bool auth = true;
        int fd = open(part, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        uint64_t have;

        if (fd < 0 || fstat(fd, &st) != 0 || target == NULL) {
            fail_msg("%s: cannot open '%s': %s", what, part, strerror(errno));
            if (fd >= 0)
                close(fd);
            free(target);
            code = IPC_EXIT_FAILED;
            break;
        }
        have = (uint64_t)st.st_size;
        if (have > e->size) { /* not this content: start again */
            if (ftruncate(fd, 0) != 0) {
                close(fd);
                free(target);
                break;
            }
            have = 0;
        }
        if (have == e->size) {
            close(fd);
            free(target);
            code = IPC_EXIT_OK;
            break;
        }
        lseek(fd, (off_t)have, SEEK_SET);
        for (int hop = 0; hop <= REDIRECTS_MAX; hop++) {
            answer_reset(&a, fd, e->size - have);
            a.range_from = have;
            rc = perform(rs, target, auth, have, &a);
            if (rc != CURLE_OK || a.status < 300 || a.status >= 400 || a.location[0] == '\0')
                break;
            char *next = resolve_location(target, a.location);
            /* a relative redirect stays on the Hub (a renamed repo); storage gets no token */
            auth = auth && a.location[0] == '/';
            free(target);
            if ((target = next) == NULL)
                break;
        }
        free(target);
        if (a.restarted)
            have = 0;
        if (rc == CURLE_OK && a.status == 206) {
            unsigned long long start = 0;
            if (sscanf(a.content_range, "bytes %llu-", &start) != 1 || start != have) {
                close(fd);
                fail_msg("%s: the Hub answered a range request with the wrong range ('%s')", what,
                         a.content_range);
                code = IPC_EXIT_PROTOCOL;
                break;
            }
        }
        if (rc == CURLE_OK && a.status == 416 && have > 0) {
            close(fd);
            if (truncate(part, 0) != 0)
                break;
            continue;
        }
        fsync(fd);
        close(fd);
        if (rc == CURLE_OK && (a.status == 200 || a.status == 206) && have + a.written == e->size) {
            code = IPC_EXIT_OK;
            break;
        }
        if (rc == CURLE_OK && (a.status == 200 || a.status == 206)) {
            rc = CURLE_PARTIAL_FILE; /* cut short: resume from what is there */
        }
        if (!retryable(rc, &a) || attempt + 1 == ATTEMPTS) {
            if (rc == CURLE_PARTIAL_FILE)
                fail_msg("%s: the connection kept breaking (%" PRIu64 " of %" PRIu64
                         " bytes); run restore again to continue",
                         what, have + a.written, e->size);
            else
                code = request_failed(rs, what, rc, &a);
            if (a.overflow)
                unlink(part); /* not the file the listing describes: nothing to resume */
            if (rc == CURLE_PARTIAL_FILE)
                code = IPC_EXIT_NO_DAEMON;
            break;
        }
        backoff(attempt, &a);
    }
    free(a.body);
    free(url);
    return code;
}

/* ---- choosing the checkpoint --------------------------------------------------------------- */

struct choice {
    char prefix[256];  /* repo folder with its '/', or "" for the root */
    long long step;    /* -1: read from its trainer_state.json */
    const char *where; /* for messages */
    /* learn_step's verified trainer_state.json, moved into the temporary folder once the
     * restore goes ahead (so it is not fetched twice); "" when none */
    char state_file[PATH_MAX + 32];
};

static bool checkpoint_number(const char *s, size_t n, long long *ret)
{
    long long v = 0;

    if (n <= 11 || strncmp(s, "checkpoint-", 11) != 0)
        return false;
    for (size_t i = 11; i < n; i++) {
        if (!isdigit((unsigned char)s[i]) || v > (LLONG_MAX - 9) / 10)
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *ret = v;
    return true;
}

static int choose(const struct restore *rs, struct choice *c)
{
    long long best = -1;
    bool root_files = false;

    memset(c, 0, sizeof(*c));
    c->step = -1;
    if (find_entry(rs, "last-checkpoint/trainer_state.json") != NULL) {
        snprintf(c->prefix, sizeof(c->prefix), "last-checkpoint/");
        c->where = "last-checkpoint/ (strategy checkpoint)";
        return IPC_EXIT_OK;
    }
    for (size_t i = 0; i < rs->n_entries; i++) {
        const char *p = rs->entries[i].path, *slash = strchr(p, '/');
        long long n;
        if (slash == NULL) {
            root_files =
                root_files || (strcmp(p, ".gitattributes") != 0 && strcmp(p, "README.md") != 0);
            continue;
        }
        if (strcmp(slash + 1, "trainer_state.json") == 0 &&
            checkpoint_number(p, (size_t)(slash - p), &n) && n > best)
            best = n;
    }
    if (best >= 0) {
        snprintf(c->prefix, sizeof(c->prefix), "checkpoint-%lld/", best);
        c->step = best;
        c->where = "the newest checkpoint-N/ (strategy all_checkpoints)";
        return IPC_EXIT_OK;
    }
    if (find_entry(rs, "trainer_state.json") != NULL) {
        c->where = "the repo's root (strategy every_save)";
        return IPC_EXIT_OK;
    }
    if (rs->missing_ok) {
        printf("nothing to restore: '%s' holds no checkpoint yet\n", rs->repo);
        return NOTHING_TO_RESTORE;
    }
    if (root_files)
        fail_msg("'%s' at %.12s holds model files at its root but no trainer_state.json that "
                 "says their step, and no last-checkpoint/ or checkpoint-N/ folder: nothing to "
                 "resume from (push with --strategy checkpoint or all_checkpoints)",
                 rs->repo, rs->sha);
    else
        fail_msg("'%s' at %.12s holds no checkpoint (no last-checkpoint/, checkpoint-N/ or "
                 "trainer_state.json)",
                 rs->repo, rs->sha);
    return IPC_EXIT_FAILED;
}

/* The checkpoint's files: under prefix, or at the root (not in folders) for "". */
static bool in_choice(const struct choice *c, const char *path)
{
    if (c->prefix[0] == '\0')
        return strchr(path, '/') == NULL && strcmp(path, ".gitattributes") != 0;
    return strncmp(path, c->prefix, strlen(c->prefix)) == 0;
}

static int by_size(const void *a, const void *b)
{
    const struct entry *x = *(const struct entry *const *)a, *y = *(const struct entry *const *)b;
    return x->size < y->size ? -1 : x->size > y->size ? 1 : strcmp(x->path, y->path);
}

/* ---- the local side ------------------------------------------------------------------------ */

/* The highest checkpoint-M/ in dir, or -1. */
static long long newest_local(const char *dir, char *name, size_t size)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    long long best = -1, n;

    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (checkpoint_number(de->d_name, strlen(de->d_name), &n) && n > best &&
            stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            best = n;
            snprintf(name, size, "%s", de->d_name);
        }
    }
    closedir(d);
    return best;
}

static const struct restore *sweep_rs;
static const char *sweep_root;
static const struct choice *sweep_choice;

/* Files in the temporary folder that the checkpoint does not list (an earlier, different
 * attempt) must not end up in it. */
static int sweep_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    char repo_path[PATH_MAX];

    (void)st;
    (void)ftw;
    if (flag != FTW_F && flag != FTW_SL)
        return 0;
    snprintf(repo_path, sizeof(repo_path), "%s%s", sweep_choice->prefix,
             path + strlen(sweep_root) + 1);
    if (find_entry(sweep_rs, repo_path) == NULL)
        unlink(path);
    return 0;
}

static int fetch_all(struct restore *rs, const struct choice *c, const char *tmp,
                     uint64_t *ret_bytes, size_t *ret_files, size_t *ret_kept)
{
    const struct entry **list = calloc(rs->n_entries + 1, sizeof(*list));
    size_t n = 0;
    int code = IPC_EXIT_OK;

    if (list == NULL)
        return IPC_EXIT_FAILED;
    for (size_t i = 0; i < rs->n_entries; i++)
        if (in_choice(c, rs->entries[i].path))
            list[n++] = &rs->entries[i];
    qsort(list, n, sizeof(*list), by_size); /* small files first: most files done soonest */
    *ret_files = n;
    for (size_t i = 0; i < n && code == IPC_EXIT_OK; i++) {
        const struct entry *e = list[i];
        char final[PATH_MAX], part[PATH_MAX + 32], got[80];
        int rc;

        if ((size_t)snprintf(final, sizeof(final), "%s/%s", tmp, e->path + strlen(c->prefix)) >=
            sizeof(final)) {
            fail_msg("the local path of '%s' is too long", e->path);
            code = IPC_EXIT_FAILED;
            break;
        }
        snprintf(part, sizeof(part), "%s" PART_SUFFIX, final);
        char *slash = strrchr(final, '/');
        *slash = '\0';
        rc = mkdirs(final);
        *slash = '/';
        if (rc < 0) {
            fail_msg("cannot create the folder of '%s': %s", final, strerror(-rc));
            code = IPC_EXIT_FAILED;
            break;
        }
        *ret_bytes += e->size;
        /* finished by an earlier run: checked again (it may be of another commit), not fetched */
        if ((rc = verify_file(final, e, got)) == 1) {
            (*ret_kept)++;
            continue;
        }
        if (rc == 0)
            unlink(final);
        if ((code = download(rs, e, part)) != IPC_EXIT_OK)
            break;
        if ((rc = verify_file(part, e, got)) < 0) {
            fail_msg("cannot read back '%s': %s", part, strerror(-rc));
            code = IPC_EXIT_FAILED;
        } else if (rc == 0) {
            unlink(part);
            fail_msg("'%s' does not match the Hub's %s (expected %s, got %s): the download was "
                     "deleted; run restore again to fetch it anew",
                     e->path, e->sha256[0] ? "SHA-256" : "git blob id",
                     e->sha256[0] ? e->sha256 : e->oid, got);
            code = IPC_EXIT_FAILED;
        } else if (rename(part, final) != 0) {
            fail_msg("cannot rename '%s': %s", part, strerror(errno));
            code = IPC_EXIT_FAILED;
        }
    }
    free(list);
    return code;
}

/* Reads the step from a trainer_state.json downloaded to path. */
static long long read_step(const char *path)
{
    FILE *f = fopen(path, "r");
    char *text = NULL;
    long long step = -1;
    long size;

    if (f == NULL)
        return -1;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && size < (long)JSON_MAX &&
        fseek(f, 0, SEEK_SET) == 0 && (text = malloc((size_t)size + 1)) != NULL &&
        fread(text, 1, (size_t)size, f) == (size_t)size) {
        text[size] = '\0';
        cJSON *j = cJSON_Parse(text);
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(j, "global_step");
        if (cJSON_IsNumber(g) && g->valuedouble >= 0 && g->valuedouble < 9.0e15 &&
            g->valuedouble == (double)(long long)g->valuedouble)
            step = (long long)g->valuedouble;
        cJSON_Delete(j);
    }
    free(text);
    fclose(f);
    return step;
}

/* The step of an interrupted run's DIR/.ckptpush-restore-<n>/ whose trainer_state.json is
 * this one, or -1. */
static long long interrupted_step(const char *dir, const struct entry *e)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    long long found = -1;

    if (d == NULL)
        return -1;
    while (found < 0 && (de = readdir(d)) != NULL) {
        char path[PATH_MAX], got[80], name[64];
        long long n;
        if (strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0 ||
            (size_t)snprintf(path, sizeof(path), "%s/%s/trainer_state.json", dir, de->d_name) >=
                sizeof(path) ||
            verify_file(path, e, got) != 1 || (n = read_step(path)) < 0)
            continue;
        /* the folder must be named for the step its state says */
        snprintf(name, sizeof(name), TMP_PREFIX "%lld", n);
        if (strcmp(de->d_name, name) == 0)
            found = n;
    }
    closedir(d);
    return found;
}

/* last-checkpoint/ and the root name no step: their trainer_state.json is fetched first (into
 * a side folder) and says it. */
static int learn_step(struct restore *rs, struct choice *c)
{
    char repo_path[300], side[PATH_MAX], part[PATH_MAX + 32], got[80];
    const struct entry *e;
    int code, rc;

    snprintf(repo_path, sizeof(repo_path), "%strainer_state.json", c->prefix);
    e = find_entry(rs, repo_path);
    if ((c->step = interrupted_step(rs->dir, e)) >= 0)
        return IPC_EXIT_OK; /* an interrupted run has it, verified: not fetched again */
    snprintf(side, sizeof(side), "%s/" TMP_PREFIX "state", rs->dir);
    if ((rc = mkdirs(side)) < 0) {
        fail_msg("cannot create '%s': %s", side, strerror(-rc));
        return IPC_EXIT_FAILED;
    }
    snprintf(part, sizeof(part), "%s/%.12s-trainer_state.json", side, rs->sha);
    unlink(part); /* small: always fetched again */
    if ((code = download(rs, e, part)) != IPC_EXIT_OK)
        return code;
    rc = verify_file(part, e, got);
    if (rc == 1)
        c->step = read_step(part);
    if (rc == 1 && c->step >= 0) {
        snprintf(c->state_file, sizeof(c->state_file), "%s", part);
        return IPC_EXIT_OK;
    }
    unlink(part);
    rmdir(side);
    if (rc != 1) {
        fail_msg("'%s' does not match the Hub's git blob id: not restored", repo_path);
        return IPC_EXIT_FAILED;
    }
    if (c->step < 0) {
        fail_msg("'%s' says no global_step (a whole number): cannot name the checkpoint",
                 repo_path);
        return IPC_EXIT_PROTOCOL;
    }
    return IPC_EXIT_OK;
}

/* The trainer_state.json learn_step fetched goes into tmp (NULL: it is not needed). */
static void place_state_file(const struct restore *rs, const struct choice *c, const char *tmp)
{
    char path[PATH_MAX + 32], side[PATH_MAX];

    if (c->state_file[0] == '\0')
        return;
    snprintf(path, sizeof(path), "%s/trainer_state.json", tmp != NULL ? tmp : "");
    if (tmp == NULL || access(path, F_OK) == 0 || rename(c->state_file, path) != 0)
        unlink(c->state_file);
    snprintf(side, sizeof(side), "%s/" TMP_PREFIX "state", rs->dir);
    rmdir(side);
}

static int run(struct restore *rs)
{
    char local_name[NAME_MAX + 1] = "", tmp[PATH_MAX], target[PATH_MAX], marker[PATH_MAX + 32];
    struct choice c;
    uint64_t bytes = 0;
    size_t files = 0, kept = 0;
    long long local;
    int code, rc;

    if ((code = read_revision(rs)) != IPC_EXIT_OK || (code = list_tree(rs)) != IPC_EXIT_OK ||
        (code = choose(rs, &c)) != IPC_EXIT_OK)
        return code;
    if ((rc = mkdirs(rs->dir)) < 0) {
        fail_msg("cannot create '%s': %s", rs->dir, strerror(-rc));
        return IPC_EXIT_FAILED;
    }
    if (c.step < 0 && (code = learn_step(rs, &c)) != IPC_EXIT_OK)
        return code;

    /* never replace what training may resume from: a newer local checkpoint wins */
    local = newest_local(rs->dir, local_name, sizeof(local_name));
    snprintf(target, sizeof(target), "%s/checkpoint-%lld", rs->dir, c.step);
    snprintf(marker, sizeof(marker), "%s/trainer_state.json", target);
    if (local >= c.step)
        place_state_file(rs, &c, NULL);
    if (local > c.step) {
        printf("%s/%s is newer than the Hub's checkpoint-%lld: kept, nothing restored\n", rs->dir,
               local_name, c.step);
        return IPC_EXIT_OK;
    }
    if (local == c.step) {
        if (access(marker, F_OK) == 0) {
            printf("%s is already there: nothing restored\n", target);
            return IPC_EXIT_OK;
        }
        fail_msg("'%s' exists but is incomplete (no trainer_state.json): move it away or delete "
                 "it, then run restore again",
                 target);
        return IPC_EXIT_FAILED;
    }

    snprintf(tmp, sizeof(tmp), "%s/" TMP_PREFIX "%lld", rs->dir, c.step);
    if ((rc = mkdirs(tmp)) < 0) {
        fail_msg("cannot create '%s': %s", tmp, strerror(-rc));
        place_state_file(rs, &c, NULL);
        return IPC_EXIT_FAILED;
    }
    place_state_file(rs, &c, tmp);
    printf("restoring checkpoint-%lld of '%s' from %s at %.12s\n", c.step, rs->repo, c.where,
           rs->sha);
    fflush(stdout);
    if ((code = fetch_all(rs, &c, tmp, &bytes, &files, &kept)) != IPC_EXIT_OK)
        return code;
    sweep_rs = rs;
    sweep_root = tmp;
    sweep_choice = &c;
    nftw(tmp, sweep_one, 16, FTW_PHYS);
    if (fsync_path(tmp, true) < 0 || rename(tmp, target) != 0) {
        fail_msg("cannot rename '%s' to '%s': %s", tmp, target, strerror(errno));
        return IPC_EXIT_FAILED;
    }
    fsync_path(rs->dir, true);
    printf("restored %s: %zu files, %" PRIu64 " bytes, %zu already there from an interrupted "
           "run\n",
           target, files, bytes, kept);
    return IPC_EXIT_OK;
}

static void release(struct restore *rs)
{
    for (size_t i = 0; i < rs->n_entries; i++)
        free(rs->entries[i].path);
    free(rs->entries);
    if (rs->token != NULL) {
        explicit_bzero(rs->token, strlen(rs->token));
        free(rs->token);
    }
    if (rs->curl != NULL)
        curl_easy_cleanup(rs->curl);
}

static bool valid_repo_id(const char *id)
{
    const char *slash = strchr(id, '/');
    if (slash == NULL || slash == id || slash[1] == '\0' || strchr(slash + 1, '/') != NULL)
        return false;
    for (const char *p = id; *p; p++)
        if (!isalnum((unsigned char)*p) && strchr("-_./", *p) == NULL)
            return false;
    return strstr(id, "..") == NULL;
}

int restore_command(int argc, char **argv, const char *usage)
{
    struct restore rs = {.revision = "main"};
    const char *token_path = NULL;
    char endpoint[2048];
    int code;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (strcmp(a, "--repo") == 0 && has_value)
            rs.repo = argv[++i];
        else if (strcmp(a, "--revision") == 0 && has_value)
            rs.revision = argv[++i];
        else if (strcmp(a, "--endpoint") == 0 && has_value)
            rs.endpoint = argv[++i];
        else if (strcmp(a, "--token-path") == 0 && has_value)
            token_path = argv[++i];
        else if (strcmp(a, "--missing-ok") == 0)
            rs.missing_ok = true;
        else if (a[0] == '-' || rs.dir != NULL) {
            fail_msg("%s '%s'", a[0] == '-' ? "unknown option or missing value:" : "unexpected", a);
            fprintf(stderr, "usage: ckptpush %s\n", usage);
            return IPC_EXIT_USAGE;
        } else
            rs.dir = a;
    }
    if (rs.repo == NULL || rs.dir == NULL || rs.revision[0] == '\0') {
        fail_msg("%s", rs.repo == NULL  ? "--repo NAMESPACE/NAME is required"
                       : rs.dir == NULL ? "the output DIR is required"
                                        : "--revision is empty");
        fprintf(stderr, "usage: ckptpush %s\n", usage);
        return IPC_EXIT_USAGE;
    }
    if (!valid_repo_id(rs.repo)) {
        fail_msg("invalid repo id '%s' (namespace/name)", rs.repo);
        return IPC_EXIT_USAGE;
    }
    if (rs.endpoint == NULL && (rs.endpoint = env_set("HF_ENDPOINT")) == NULL)
        rs.endpoint = DEFAULT_ENDPOINT;
    snprintf(endpoint, sizeof(endpoint), "%s", rs.endpoint);
    for (size_t n = strlen(endpoint); n > 0 && endpoint[n - 1] == '/'; n--)
        endpoint[n - 1] = '\0';
    if (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0) {
        fail_msg("invalid endpoint '%s' (http:// or https://)", rs.endpoint);
        return IPC_EXIT_USAGE;
    }
    rs.endpoint = endpoint;
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof(dir), "%s", rs.dir) >= (int)sizeof(dir)) {
        fail_msg("the path '%s' is too long", rs.dir);
        return IPC_EXIT_USAGE;
    }
    for (size_t n = strlen(dir); n > 1 && dir[n - 1] == '/'; n--)
        dir[n - 1] = '\0';
    rs.dir = dir;
    if (env_set("HF_HUB_OFFLINE") != NULL && strcmp(getenv("HF_HUB_OFFLINE"), "0") != 0) {
        fail_msg("HF_HUB_OFFLINE is set: restoring needs the Hub");
        return IPC_EXIT_FAILED;
    }
    if (find_token(token_path, &rs.token) < 0)
        return IPC_EXIT_FAILED;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || (rs.curl = curl_easy_init()) == NULL) {
        fail_msg("cannot start libcurl");
        return IPC_EXIT_FAILED;
    }
    code = run(&rs);
    if (code == NOTHING_TO_RESTORE)
        code = IPC_EXIT_OK;
    release(&rs);
    curl_global_cleanup();
    fflush(stdout);
    return code;
}
