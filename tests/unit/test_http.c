/* test_http.c - http.c against a real HTTP server (tests/unit/http_echo.py).
 *
 * Bodies from memory and from file ranges (with tiny ring buffers, so reads pause and resume),
 * the bearer only where asked, retries with Retry-After and RateLimit, a reset mid-body, limits,
 * cancellation (a file body sent in full waits up to 1 s for its answer: the server may have
 * acted on it) and http_close with transfers in flight; the loop must close empty.
 */
#include "http.h"

#include "testutil.h"

#include <openssl/evp.h>
#include <sys/resource.h>

#define TOKEN "hf_secret_token_for_http_test"

struct call {
    int done;
    struct http_response res;
    char body[4096];
    int64_t sent;
    uint64_t t_start, t_end;
    cJSON *json;
};

static uv_loop_t loop;
static struct http *http;
static struct test_hub echo;

static void on_done(void *ctx, const struct http_response *res)
{
    struct call *c = ctx;
    c->res = *res;
    snprintf(c->body, sizeof(c->body), "%s", res->body);
    c->res.body = c->body;
    c->json = cJSON_Parse(c->body);
    c->t_end = uv_hrtime();
    c->done = 1;
}

static void on_sent(void *ctx, int64_t delta)
{
    ((struct call *)ctx)->sent += delta;
}

static void run(struct http_request *req, struct call *c)
{
    memset(c, 0, sizeof(*c));
    if (req->sent_cb == NULL && (req->body != NULL || req->body_path != NULL))
        req->sent_cb = on_sent;
    c->t_start = uv_hrtime();
    REQUIRE(http_send(http, req, on_done, c, NULL) == 0);
    test_run_until(&loop, &c->done);
}

static double secs(const struct call *c)
{
    return (double)(c->t_end - c->t_start) / 1e9;
}

static const char *jstr(const struct call *c, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->json, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static double jnum(const struct call *c, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->json, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static int jtrue(const struct call *c, const char *k)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c->json, k));
}

static void sha256_range(const char *path, uint64_t off, uint64_t len, char hex[65])
{
    size_t n;
    char *data = test_read_file(path, &n);
    REQUIRE(data != NULL && off + len <= n);
    unsigned char md[32];
    unsigned int mdlen;
    EVP_Digest(data + off, len, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    free(data);
}

static void done_call(struct call *c)
{
    cJSON_Delete(c->json);
    c->json = NULL;
}

static void cancel_later(uv_timer_t *t)
{
    http_xfer_cancel(t->data);
    uv_close((uv_handle_t *)t, NULL);
}

static void on_closed(void *ctx)
{
    *(int *)ctx = 1;
}

int main(void)
{
    char dir[512], file[600], url[256];
    test_mkdtemp(dir, sizeof(dir));
    test_echo_start(&echo, dir);
    REQUIRE(uv_loop_init(&loop) == 0);
    struct http_opts opts = {.backoff_base_ms = 50,
                             .backoff_cap_ms = 200,
                             .max_attempts = 4,
                             .file_buf_size = 64 * 1024};
    REQUIRE(http_init(&http, &loop, &opts) == 0);
    snprintf(file, sizeof(file), "%s/body.bin", dir);
    test_random_file(file, 5 * 1024 * 1024 + 123, 3);
    struct call c;
    char want[65];

    /* memory body with bearer and content type */
    snprintf(url, sizeof(url), "%s/echo", echo.endpoint);
    struct http_request req = {.method = "POST",
                               .url = url,
                               .bearer = TOKEN,
                               .content_type = "application/json",
                               .body = "{\"a\":1}",
                               .body_len = 7};
    run(&req, &c);
    CHECK(c.res.fail == HTTP_FAIL_NONE && c.res.status == 200);
    CHECK(jnum(&c, "len") == 7 && jtrue(&c, "auth"));
    CHECK(strcmp(jstr(&c, "content_type"), "application/json") == 0);
    CHECK(strcmp(c.res.request_id, "req-1") == 0);
    CHECK(strncmp(c.res.content_type, "application/json", 16) == 0);
    CHECK(c.res.attempts == 1 && c.sent == 7);
    done_call(&c);

    /* a file range, streamed through 64 KiB buffers, without Authorization */
    struct http_request put = {.method = "PUT",
                               .url = url,
                               .body_path = file,
                               .body_offset = 1000,
                               .body_file_len = 3 * 1024 * 1024 + 5,
                               .retryable = 1};
    run(&put, &c);
    sha256_range(file, 1000, 3 * 1024 * 1024 + 5, want);
    CHECK(c.res.status == 200);
    CHECK(strcmp(jstr(&c, "sha256"), want) == 0);
    CHECK(jnum(&c, "len") == 3 * 1024 * 1024 + 5);
    CHECK(!jtrue(&c, "auth") && !jtrue(&c, "chunked"));
    CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(c.json, "expect")));
    CHECK(c.sent == 3 * 1024 * 1024 + 5);
    done_call(&c);

    /* --max-rate: one token bucket for all transfers. Two 768 KiB bodies at 1 MiB/s together
     * take about 1.5 s (less the 100 ms burst), where per-handle caps would give 0.75 s. */
    {
        struct http *capped;
        struct http_opts copts = {.max_rate = 1024 * 1024, .file_buf_size = 64 * 1024};
        struct call c1, c2;
        int closed_capped = 0;
        REQUIRE(http_init(&capped, &loop, &copts) == 0);
        struct http_request p1 = {.method = "PUT",
                                  .url = url,
                                  .body_path = file,
                                  .body_file_len = 768 * 1024,
                                  .retryable = 1};
        struct http_request p2 = p1;
        p2.body_offset = 768 * 1024;
        memset(&c1, 0, sizeof(c1));
        memset(&c2, 0, sizeof(c2));
        p1.sent_cb = p2.sent_cb = on_sent;
        uint64_t t0 = uv_hrtime();
        c1.t_start = c2.t_start = t0;
        REQUIRE(http_send(capped, &p1, on_done, &c1, NULL) == 0);
        REQUIRE(http_send(capped, &p2, on_done, &c2, NULL) == 0);
        test_run_until(&loop, &c1.done);
        test_run_until(&loop, &c2.done);
        double took = (double)((c1.t_end > c2.t_end ? c1.t_end : c2.t_end) - t0) / 1e9;
        fprintf(stderr, "two capped bodies of 768 KiB at 1 MiB/s: %.2f s\n", took);
        CHECK(c1.res.status == 200 && c2.res.status == 200);
        CHECK(jnum(&c1, "len") == 768 * 1024 && jnum(&c2, "len") == 768 * 1024);
        CHECK(took > 1.2 && took < 4.0);
        done_call(&c1);
        done_call(&c2);
        http_close(capped, on_closed, &closed_capped);
        test_run_until(&loop, &closed_capped);
    }

    /* memory does not grow with the body: 256 MiB (sparse) through 64 KiB buffers */
    {
        char sparse[700];
        snprintf(sparse, sizeof(sparse), "%s/sparse.bin", dir);
        int fd = open(sparse, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        REQUIRE(fd >= 0 && ftruncate(fd, 256 * 1024 * 1024) == 0);
        close(fd);
        struct rusage ru0, ru1;
        getrusage(RUSAGE_SELF, &ru0);
        struct http_request big = {.method = "PUT",
                                   .url = url,
                                   .body_path = sparse,
                                   .body_file_len = 256 * 1024 * 1024,
                                   .retryable = 1};
        run(&big, &c);
        getrusage(RUSAGE_SELF, &ru1);
        CHECK(c.res.status == 200 && jnum(&c, "len") == 256.0 * 1024 * 1024);
        CHECK(c.sent == 256 * 1024 * 1024);
        fprintf(stderr, "max RSS %ld kB -> %ld kB\n", ru0.ru_maxrss, ru1.ru_maxrss);
        CHECK(ru1.ru_maxrss - ru0.ru_maxrss < 16 * 1024);
        done_call(&c);
        unlink(sparse);
    }

    /* a reset after 100 kB of the body: retried from the start, the byte count rewinds */
    snprintf(url, sizeof(url), "%s/reset/r1/1/100000", echo.endpoint);
    put.url = url;
    put.body_offset = 0;
    put.body_file_len = 5 * 1024 * 1024 + 123;
    run(&put, &c);
    sha256_range(file, 0, 5 * 1024 * 1024 + 123, want);
    CHECK(c.res.status == 200 && c.res.attempts == 2);
    CHECK(strcmp(jstr(&c, "sha256"), want) == 0);
    CHECK(c.sent == 5 * 1024 * 1024 + 123);
    done_call(&c);

    /* 503 with Retry-After: 1, twice: two waits of 1 s, then success */
    snprintf(url, sizeof(url), "%s/flaky/f1/2/503?retry_after=1", echo.endpoint);
    struct http_request get = {.method = "GET", .url = url, .bearer = TOKEN, .retryable = 1};
    run(&get, &c);
    CHECK(c.res.status == 200 && c.res.attempts == 3);
    CHECK(secs(&c) >= 2.0 && secs(&c) < 5.0);
    done_call(&c);

    /* 429 with RateLimit t=0: wait t+1 = 1 s */
    snprintf(url, sizeof(url), "%s/flaky/f2/1/429?ratelimit_t=0", echo.endpoint);
    run(&get, &c);
    CHECK(c.res.status == 200 && c.res.attempts == 2);
    CHECK(secs(&c) >= 1.0 && secs(&c) < 3.0);
    done_call(&c);

    /* exponential backoff until attempts run out; the last answer is reported */
    snprintf(url, sizeof(url), "%s/status/500", echo.endpoint);
    run(&get, &c);
    CHECK(c.res.status == 500 && c.res.attempts == 4);
    CHECK(secs(&c) >= 0.15); /* >= 25 + 50 + 100 ms with jitter on the upper half */
    CHECK(strstr(c.res.body, "status 500") != NULL);
    done_call(&c);

    /* not retryable: one attempt; 4xx: never retried */
    get.retryable = 0;
    snprintf(url, sizeof(url), "%s/status/503", echo.endpoint);
    run(&get, &c);
    CHECK(c.res.status == 503 && c.res.attempts == 1);
    done_call(&c);
    get.retryable = 1;
    snprintf(url, sizeof(url), "%s/status/422", echo.endpoint);
    run(&get, &c);
    CHECK(c.res.status == 422 && c.res.attempts == 1);
    done_call(&c);

    /* a Retry-After longer than allowed ends retrying at once */
    snprintf(url, sizeof(url), "%s/status/503?retry_after=100000", echo.endpoint);
    run(&get, &c);
    CHECK(c.res.status == 503 && c.res.attempts == 1);
    done_call(&c);

    /* the response cap */
    snprintf(url, sizeof(url), "%s/big/100000", echo.endpoint);
    get.max_response = 1000;
    run(&get, &c);
    CHECK(c.res.fail == HTTP_FAIL_TOO_BIG && c.res.attempts == 1);
    get.max_response = 0;
    run(&get, &c);
    CHECK(c.res.fail == HTTP_FAIL_NONE && c.res.body_len == 100000);
    done_call(&c);

    /* nobody listening: a network failure after all attempts, the token nowhere in the text */
    snprintf(url, sizeof(url), "http://127.0.0.1:1/x");
    run(&get, &c);
    CHECK(c.res.fail == HTTP_FAIL_NETWORK && c.res.attempts == 4);
    CHECK(c.res.error[0] != '\0' && strstr(c.res.error, TOKEN) == NULL);
    done_call(&c);

    /* a body file that does not exist */
    snprintf(url, sizeof(url), "%s/echo", echo.endpoint);
    put.url = url;
    char missing[700];
    snprintf(missing, sizeof(missing), "%s/missing", dir);
    put.body_path = missing;
    run(&put, &c);
    CHECK(c.res.fail == HTTP_FAIL_FILE && strstr(c.res.error, "missing") != NULL);
    put.body_path = file;

    /* bad requests fail at once */
    struct http_request both = {.method = "PUT", .url = url, .body = "x", .body_path = file};
    CHECK(http_send(http, &both, on_done, &c, NULL) == UV_EINVAL);

    /* cancel a slow request */
    snprintf(url, sizeof(url), "%s/slow", echo.endpoint);
    struct http_xfer *x;
    memset(&c, 0, sizeof(c));
    get.url = url;
    REQUIRE(http_send(http, &get, on_done, &c, &x) == 0);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = x;
    uv_timer_start(&t, cancel_later, 200, 0);
    test_run_until(&loop, &c.done);
    CHECK(c.res.fail == HTTP_FAIL_CANCELLED);
    done_call(&c);

    /* cancel a file body sent in full: its answer, due 300 ms later, is delivered as it is */
    snprintf(url, sizeof(url), "%s/late/300", echo.endpoint);
    struct http_request late = {.method = "PUT",
                                .url = url,
                                .body_path = file,
                                .body_file_len = 256 * 1024,
                                .sent_cb = on_sent};
    memset(&c, 0, sizeof(c));
    REQUIRE(http_send(http, &late, on_done, &c, &x) == 0);
    while (c.sent < 256 * 1024 && !c.done)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(!c.done);
    http_xfer_cancel(x);
    http_xfer_cancel(x); /* twice: the grace is not cut short */
    test_run_until(&loop, &c.done);
    CHECK(c.res.fail == HTTP_FAIL_NONE && c.res.status == 200);
    CHECK(jnum(&c, "len") == 256 * 1024);
    done_call(&c);
    /* ... but not for longer than the grace: an answer 5 s late is cancelled after about 1 s */
    snprintf(url, sizeof(url), "%s/late/5000", echo.endpoint);
    memset(&c, 0, sizeof(c));
    REQUIRE(http_send(http, &late, on_done, &c, &x) == 0);
    while (c.sent < 256 * 1024 && !c.done)
        uv_run(&loop, UV_RUN_ONCE);
    c.t_start = uv_hrtime();
    http_xfer_cancel(x);
    test_run_until(&loop, &c.done);
    CHECK(c.res.fail == HTTP_FAIL_CANCELLED);
    CHECK(secs(&c) >= 0.9 && secs(&c) < 3.0);
    done_call(&c);

    /* close with transfers in flight: each callback runs (cancelled), then the close callback */
    struct call c1, c2;
    memset(&c1, 0, sizeof(c1));
    memset(&c2, 0, sizeof(c2));
    REQUIRE(http_send(http, &get, on_done, &c1, NULL) == 0);
    snprintf(url, sizeof(url), "%s/echo", echo.endpoint);
    put.url = url;
    REQUIRE(http_send(http, &put, on_done, &c2, NULL) == 0);
    for (int i = 0; i < 5; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    int closed = 0;
    http_close(http, on_closed, &closed);
    test_run_until(&loop, &closed);
    CHECK(c1.done && c1.res.fail == HTTP_FAIL_CANCELLED);
    CHECK(c2.done && c2.res.fail == HTTP_FAIL_CANCELLED);
    done_call(&c1);
    done_call(&c2);

    test_close_loop(&loop);
    test_hub_stop(&echo);
    test_rm_rf(dir);
    curl_global_cleanup();
    return check_report("test_http");
}
