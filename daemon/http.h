/* http.h - HTTP requests on libcurl's multi socket API, driven by the libuv loop.
 *
 * Owns the curl multi handle, one uv_poll per socket, one uv_timer, and per-transfer state
 * (request copy, response, body ring buffer, retry timer). Knows nothing of the Hub: callers
 * build URLs and read statuses. Loop thread only; file bodies are read with uv_fs_read.
 */
#ifndef CKPT_HTTP_H
#define CKPT_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct http;
struct http_xfer;

struct http_opts {
    unsigned max_attempts;       /* retryable requests; 0 -> 6 */
    uint64_t backoff_base_ms;    /* 0 -> 1000 */
    uint64_t backoff_cap_ms;     /* 0 -> 8000 */
    uint64_t retry_after_max_ms; /* a longer Retry-After ends retrying; 0 -> 300000 */
    long connect_timeout_ms;     /* 0 -> 30000 */
    long stall_timeout_s;        /* abort below 1 byte/s for this long; 0 -> 60 */
    size_t file_buf_size;        /* each of the 2 ring buffers of a file body; 0 -> 512 KiB */
    /* Request body bytes per second, all transfers together (a token bucket on the loop:
     * curl's per-handle CURLOPT_MAX_SEND_SPEED_LARGE is not shared); 0: no cap. */
    uint64_t max_rate;
};

/* Why a request got no usable HTTP answer. */
enum http_fail {
    HTTP_FAIL_NONE = 0, /* an HTTP response arrived (any status) */
    HTTP_FAIL_NETWORK,  /* connection, TLS, timeout: curl_code and error say which */
    HTTP_FAIL_FILE,     /* the body file could not be read (error names it) */
    HTTP_FAIL_TOO_BIG,  /* the response body exceeded max_response */
    HTTP_FAIL_CANCELLED /* http_xfer_cancel or http_close */
};

#define HTTP_HDR_SHORT 128
#define HTTP_HDR_LONG 2048

struct http_response {
    enum http_fail fail;
    long status; /* 0 when fail != HTTP_FAIL_NONE */
    char *body;  /* NUL-terminated, body_len bytes (NUL excluded); never NULL */
    size_t body_len;
    char etag[HTTP_HDR_SHORT];
    char location[HTTP_HDR_LONG];
    char retry_after[HTTP_HDR_SHORT];
    char ratelimit[HTTP_HDR_SHORT];
    char error_code[HTTP_HDR_SHORT];
    char error_message[512];
    char request_id[HTTP_HDR_SHORT];
    char content_type[HTTP_HDR_SHORT];
    int curl_code;
    char error[256]; /* for the person: curl's text or the file error; never request headers */
    unsigned attempts;
};

/* Called with the total bytes handed to curl as the body; delta is negative when a retry
 * restarts the body. Runs inside a curl callback: only count, never call http_* from here. */
typedef void (*http_sent_cb)(void *ctx, int64_t delta);
/* Called once per successful http_send. res is valid only during the call. */
typedef void (*http_done_cb)(void *ctx, const struct http_response *res);
typedef void (*http_close_cb)(void *ctx);

#define HTTP_RETRY_ALL 1
#define HTTP_RETRY_429 2

#define HTTP_MAX_HEADERS 16
#define HTTP_MAX_MEM_BODY (512u * 1024 * 1024)
#define HTTP_DEFAULT_MAX_RESPONSE (4u * 1024 * 1024)

struct http_request {
    const char *method; /* "GET", "HEAD", "POST", "PUT", ... */
    const char *url;
    const char *bearer;       /* Authorization: Bearer; NULL for presigned storage URLs */
    const char *content_type; /* NULL: none sent */
    const char *headers[HTTP_MAX_HEADERS]; /* "Name: value", NULL-terminated */
    /* Body: from memory (copied), or from a file range (read on the pool), or none. */
    const void *body;
    size_t body_len;
    const char *body_path;
    uint64_t body_offset;
    uint64_t body_file_len;
    size_t max_response; /* 0 -> HTTP_DEFAULT_MAX_RESPONSE */
    /* HTTP_RETRY_ALL: connection errors, 408, 429, 5xx with backoff. HTTP_RETRY_429: only a 429
     * (rate limited: the request was refused before it was applied, so even a commit may be
     * sent again), honouring Retry-After and RateLimit. 0: never. */
    int retryable;
    int follow_redirects;
    http_sent_cb sent_cb;
};

/* opts may be NULL (defaults). */
int http_init(struct http **ret, uv_loop_t *loop, const struct http_opts *opts);
/* Copies everything from req. On success cb runs exactly once, later, from the loop; *ret_xfer
 * (may be NULL) stays valid until then. Fails at once with UV_EINVAL, UV_ENOMEM, UV_E2BIG,
 * UV_ESHUTDOWN (closing). */
int http_send(struct http *h, const struct http_request *req, http_done_cb cb, void *ctx,
              struct http_xfer **ret_xfer);
/* The transfer's cb later runs with HTTP_FAIL_CANCELLED (unless it already finished). A transfer
 * whose file body was sent in full waits up to 1 s for its answer first: the server may have acted
 * on the body, and a success answer is then delivered as such. */
void http_xfer_cancel(struct http_xfer *x);
/* Cancels every transfer (their callbacks run), closes all handles, frees h, then calls cb. */
void http_close(struct http *h, http_close_cb cb, void *ctx);

/* Retries scheduled by every http of the process since it started (metrics). */
uint64_t http_retries_total(void);

#endif
