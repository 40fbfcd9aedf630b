/* testutil.h - helpers shared by the unit tests (header only, not a test itself).
 *
 * Temporary directories, random files, running a command for its output, and the test hub as
 * a subprocess with its JSON-lines request log. Blocking calls are fine here: tests only.
 */
#ifndef CKPT_TESTUTIL_H
#define CKPT_TESTUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <uv.h>

#include "check.h"

static inline void test_mkdtemp(char *dir, size_t size)
{
    const char *base = getenv("TMPDIR");
    snprintf(dir, size, "%s/ckpt-test-XXXXXX", base != NULL ? base : "/tmp");
    REQUIRE(mkdtemp(dir) != NULL);
}

static inline void test_rm_rf(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove '%s'\n", dir);
}

static inline void test_write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, data, len) == (ssize_t)len);
    close(fd);
}

static inline void test_random_file(const char *path, size_t len, unsigned seed)
{
    unsigned char *buf = malloc(len > 0 ? len : 1);
    REQUIRE(buf != NULL);
    uint64_t x = 0x9e3779b97f4a7c15ull ^ seed;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)(x >> 24);
    }
    test_write_file(path, buf, len);
    free(buf);
}

static inline char *test_read_file(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rbe");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    fclose(f);
    if (buf != NULL)
        buf[len] = '\0';
    *ret_len = len;
    return buf;
}

/* Runs a shell command and returns its first output line (trimmed), or "" . */
static inline void test_command_line(const char *cmd, char *out, size_t size)
{
    out[0] = '\0';
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    if (fgets(out, (int)size, p) == NULL)
        out[0] = '\0';
    pclose(p);
    out[strcspn(out, "\r\n")] = '\0';
}

static inline void test_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs the loop until *flag becomes non-zero (or a 60 s guard trips). */
static inline void test_run_until(uv_loop_t *loop, const int *flag)
{
    time_t start = time(NULL);
    while (!*flag) {
        uv_run(loop, UV_RUN_ONCE);
        REQUIRE(time(NULL) - start < 60);
    }
}

static inline void test_walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "left-over handle: type=%s active=%d closing=%d\n",
            uv_handle_type_name(uv_handle_get_type(h)), uv_is_active(h), uv_is_closing(h));
}

/* The loop must close with no handle left. */
static inline void test_close_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    int r = uv_loop_close(loop);
    if (r != 0)
        uv_walk(loop, test_walk_cb, NULL);
    CHECK(r == 0);
}

/* ---- the test hub ------------------------------------------------------------------------ */

static pid_t test_hub_pid;

static inline void test_hub_atexit(void)
{
    if (test_hub_pid > 0) {
        kill(test_hub_pid, SIGKILL);
        waitpid(test_hub_pid, NULL, 0);
    }
}

struct test_hub {
    pid_t pid;
    char dir[512];
    char log[600];
    int port;
    char endpoint[64];
};

/* Starts argv (stdout/stderr to dir/<name>.out) and waits for it to write its port. */
static inline void test_spawn(struct test_hub *t, const char *dir, const char *name,
                              char *const argv[], const char *portfile)
{
    snprintf(t->dir, sizeof(t->dir), "%s", dir);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        char out[600];
        snprintf(out, sizeof(out), "%s/%s.out", dir, name);
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    t->pid = pid;
    test_hub_pid = pid;
    atexit(test_hub_atexit);
    for (int i = 0; i < 300; i++) {
        FILE *f = fopen(portfile, "re");
        if (f != NULL) {
            int ok = fscanf(f, "%d", &t->port) == 1;
            fclose(f);
            if (ok && t->port > 0) {
                snprintf(t->endpoint, sizeof(t->endpoint), "http://127.0.0.1:%d", t->port);
                return;
            }
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            fprintf(stderr, "%s exited early\n", name);
            exit(1);
        }
        test_sleep_ms(50);
    }
    fprintf(stderr, "%s did not start\n", name);
    exit(1);
}

static inline const char *test_source_file(char *buf, size_t size, const char *rel)
{
    const char *src = getenv("CKPT_SOURCE_DIR");
    REQUIRE(src != NULL);
    snprintf(buf, size, "%s/%s", src, rel);
    if (access(buf, R_OK) != 0) {
        fprintf(stderr, "'%s' missing\n", buf);
        exit(1);
    }
    return buf;
}

/* The test hub, as the brief for the upload tests gives it. */
static inline void test_hub_start(struct test_hub *t, const char *dir)
{
    char script[1024], data[600], portfile[600];
    test_source_file(script, sizeof(script), "tests/hub/hub.py");
    snprintf(data, sizeof(data), "%s/hubdata", dir);
    snprintf(portfile, sizeof(portfile), "%s/port", dir);
    snprintf(t->log, sizeof(t->log), "%s/req.log", dir);
    char *const argv[] = {"python3",
                          script,
                          "--data",
                          data,
                          "--port",
                          "0",
                          "--port-file",
                          portfile,
                          "--log",
                          t->log,
                          "--user",
                          "alice:hf_alice_token",
                          "--multipart-threshold",
                          "5242880",
                          "--chunk-size",
                          "5242880",
                          NULL};
    test_spawn(t, dir, "hub", argv, portfile);
}

/* tests/unit/http_echo.py: echoes requests and injects failures. */
static inline void test_echo_start(struct test_hub *t, const char *dir)
{
    char script[1024], portfile[600];
    test_source_file(script, sizeof(script), "tests/unit/http_echo.py");
    snprintf(portfile, sizeof(portfile), "%s/echo.port", dir);
    t->log[0] = '\0';
    char *const argv[] = {"python3", script, "--port-file", portfile, NULL};
    test_spawn(t, dir, "echo", argv, portfile);
}

static inline void test_hub_stop(struct test_hub *t)
{
    if (t->pid <= 0)
        return;
    test_hub_pid = 0;
    kill(t->pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(t->pid, NULL, WNOHANG) == t->pid) {
            t->pid = 0;
            return;
        }
        test_sleep_ms(50);
    }
    kill(t->pid, SIGKILL);
    waitpid(t->pid, NULL, 0);
    t->pid = 0;
}

struct test_buf {
    char *p;
    size_t len;
    size_t cap;
};

/* Doubles: a download of 12 MiB in 16 KiB pieces grown piece by piece copied gigabytes under
 * ASan, whose realloc always moves (unit.test_upload ran past its timeout). */
static inline size_t test_buf_write(char *d, size_t s, size_t n, void *u)
{
    struct test_buf *b = u;
    if (b->len + s * n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + s * n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, s * n);
    b->len += s * n;
    b->p[b->len] = '\0';
    return s * n;
}

/* A blocking request (tests only). Returns the HTTP status; *out gets the body (free it). */
static inline long test_http(const char *method, const char *url, const char *token,
                             const char *body, struct test_buf *out)
{
    CURL *e = curl_easy_init();
    REQUIRE(e != NULL);
    struct curl_slist *h = NULL;
    char auth[256];
    if (token != NULL) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (body != NULL)
        h = curl_slist_append(h, "Content-Type: application/json");
    *out = (struct test_buf){0};
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, test_buf_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    if (body != NULL)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    long status = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    if (out->p == NULL) {
        out->p = calloc(1, 1);
        out->len = 0;
    }
    return status;
}

/* http_echo.py: queues one answer for the next request: status, a JSON object of headers (NULL:
 * a JSON content type), body. */
static inline void test_echo_canned(struct test_hub *t, int status, const char *headers,
                                    const char *body)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "status", status);
    cJSON_AddItemToObject(
        j, "headers", cJSON_Parse(headers ? headers : "{\"Content-Type\":\"application/json\"}"));
    cJSON_AddStringToObject(j, "body", body);
    char *s = cJSON_PrintUnformatted(j);
    char url[256];
    struct test_buf b;
    snprintf(url, sizeof(url), "%s/_canned", t->endpoint);
    REQUIRE(test_http("POST", url, NULL, s, &b) == 200);
    free(b.p);
    free(s);
    cJSON_Delete(j);
}

/* http_echo.py: the last request it got (free with cJSON_Delete). */
static inline cJSON *test_echo_last(struct test_hub *t)
{
    char url[256];
    struct test_buf b;
    snprintf(url, sizeof(url), "%s/_last", t->endpoint);
    REQUIRE(test_http("GET", url, NULL, NULL, &b) == 200);
    cJSON *j = cJSON_Parse(b.p);
    free(b.p);
    return j;
}

/* j[a], or j[a][b], when it is a string; else "". */
static inline const char *test_json_str(const cJSON *j, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, a);
    if (b != NULL)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static inline void test_hub_fault(struct test_hub *t, const char *json)
{
    char url[128];
    struct test_buf b;
    snprintf(url, sizeof(url), "%s/_admin/faults", t->endpoint);
    long st = test_http("POST", url, NULL, json, &b);
    if (st != 200)
        fprintf(stderr, "fault %s -> %ld %s\n", json, st, b.p);
    REQUIRE(st == 200);
    free(b.p);
}

/* Counts request-log lines whose route is route (NULL: any), starting at line `from`. With
 * fault != 0 counts only lines carrying a fault note. */
static inline size_t test_hub_count(struct test_hub *t, const char *route, size_t from, int fault)
{
    size_t len, n = 0, line = 0;
    char *log = test_read_file(t->log, &len);
    if (log == NULL)
        return 0;
    for (char *s = strtok(log, "\n"); s != NULL; s = strtok(NULL, "\n"), line++) {
        if (line < from)
            continue;
        cJSON *j = cJSON_Parse(s);
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "route");
        if (cJSON_IsString(r) && (route == NULL || strcmp(r->valuestring, route) == 0) &&
            (!fault || cJSON_GetObjectItemCaseSensitive(j, "fault") != NULL))
            n++;
        cJSON_Delete(j);
    }
    free(log);
    return n;
}

/* Lines in the request log so far. */
static inline size_t test_hub_lines(struct test_hub *t)
{
    return test_hub_count(t, NULL, 0, 0);
}

/* Uploads to presigned URLs (lfs_put, part_put, complete) that carried Authorization. */
static inline size_t test_hub_auth_leaks(struct test_hub *t)
{
    size_t len, n = 0;
    char *log = test_read_file(t->log, &len);
    if (log == NULL)
        return 0;
    for (char *s = strtok(log, "\n"); s != NULL; s = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(s);
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "route");
        if (cJSON_IsString(r) &&
            (strcmp(r->valuestring, "lfs_put") == 0 || strcmp(r->valuestring, "part_put") == 0 ||
             strcmp(r->valuestring, "complete") == 0) &&
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "auth")))
            n++;
        cJSON_Delete(j);
    }
    free(log);
    return n;
}

#endif
