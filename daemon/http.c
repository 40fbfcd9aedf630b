/* http.c - libcurl multi socket API on the libuv loop, with retries and streamed file bodies.
 *
 * Owns sockets (uv_poll), the curl timeout (uv_timer), and each transfer's life: open the body
 * file, attempt, back off, deliver. Does not know URLs' meaning. Loop thread only; body files are
 * read with uv_fs_read into two fixed buffers, so memory does not grow with the file.
 */
#include "http.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

/* curl's upload buffer for file bodies. With 4 transfers: 4 x (512 KiB here + 2 x 512 KiB of
 * our read buffers) = 6 MiB, less than the 8.25 MiB of 64 KiB + 2 x 1 MiB before. */
#define HTTP_UPLOAD_BUFFER (512L * 1024)
/* A file body handed to curl in full has reached, or is about to reach, the server, which acts on
 * it (stores a part) and then answers. A cancel then waits this long for that answer, so that the
 * caller can record what the server did (a part's ETag) instead of sending it again later. */
#define HTTP_ANSWER_GRACE_MS 1000

enum xfer_state {
    XS_OPENING,   /* waiting for uv_fs_open of the body file */
    XS_ACTIVE,    /* easy handle in the multi */
    XS_BACKOFF,   /* waiting on the retry timer */
    XS_FINISHING, /* result fixed; waiting for reads in flight, then delivery */
    XS_DONE,      /* callback ran; closing the timer */
};

enum rb_state { RB_EMPTY, RB_READING, RB_READY };

struct ring_buf {
    struct http_xfer *x;
    uv_fs_t req;
    char *data;
    uint64_t off; /* file offset of data[0] */
    size_t want, have, pos;
    enum rb_state state;
};

struct http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    uv_timer_t rate_timer; /* refills the bucket while a transfer waits for it */
    int rate_timer_closed;
    double tokens; /* body bytes that may be sent now */
    uint64_t refilled_ns;
    struct http_opts opts;
    struct http_xfer *xfers; /* every transfer not yet freed */
    size_t n_polls;
    int closing;
    int timer_closed;
    http_close_cb close_cb;
    void *close_ctx;
};

struct sock_ctx {
    uv_poll_t poll;
    struct http *h;
    curl_socket_t fd;
};

struct http_xfer {
    struct http *h;
    struct http_xfer *prev, *next;
    enum xfer_state state;
    CURL *easy;
    struct curl_slist *hdrs;
    char *url;
    char *method;
    int in_multi;
    int retryable;
    int restart_pending;
    int too_big;
    int cancel_pending; /* cancelled while its answer was due: the answer is waited for */
    size_t max_response;
    size_t body_cap;
    char errbuf[CURL_ERROR_SIZE];

    /* memory body */
    char *mem;
    size_t mem_len, mem_pos;
    /* file body */
    char *path;
    uv_fs_t open_req;
    int opening;
    uv_file fd;
    uint64_t f_off, f_len, f_next, f_consumed;
    struct ring_buf rb[2];
    int rb_r, rb_w;
    int reads_in_flight;
    int paused;
    int rate_paused; /* waiting for tokens */
    int file_err;

    http_sent_cb sent_cb;
    int64_t sent_attempt;
    http_done_cb cb;
    void *ctx;
    uv_timer_t timer; /* backoff, then delivery */
    struct http_response res;
};

static void check_multi_info(struct http *h);
static void xfer_finish(struct http_xfer *x);
static void http_maybe_release(struct http *h);

/* ---- sockets and the curl timer ---------------------------------------------------------- */

static void on_poll_closed(uv_handle_t *handle)
{
    struct sock_ctx *sc = handle->data;
    struct http *h = sc->h;
    free(sc);
    h->n_polls--;
    http_maybe_release(h);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct sock_ctx *sc = p->data;
    struct http *h = sc->h;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(h->multi, sc->fd, flags, &running);
    check_multi_info(h);
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int action, void *userp, void *socketp)
{
    (void)easy;
    struct http *h = userp;
    struct sock_ctx *sc = socketp;
    if (action == CURL_POLL_REMOVE) {
        if (sc != NULL) {
            uv_poll_stop(&sc->poll);
            uv_close((uv_handle_t *)&sc->poll, on_poll_closed);
            curl_multi_assign(h->multi, s, NULL);
        }
        return 0;
    }
    if (sc == NULL) {
        sc = calloc(1, sizeof(*sc));
        if (sc == NULL)
            return -1;
        sc->h = h;
        sc->fd = s;
        if (uv_poll_init_socket(h->loop, &sc->poll, s) < 0) {
            free(sc);
            return -1;
        }
        sc->poll.data = sc;
        h->n_polls++;
        curl_multi_assign(h->multi, s, sc);
    }
    int events = 0;
    if (action == CURL_POLL_IN || action == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (action == CURL_POLL_OUT || action == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    uv_poll_start(&sc->poll, events, on_poll);
    return 0;
}

static void on_multi_timeout(uv_timer_t *t)
{
    struct http *h = t->data;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(h);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct http *h = userp;
    if (h->timer_closed || uv_is_closing((uv_handle_t *)&h->timer))
        return 0;
    if (timeout_ms < 0) {
        uv_timer_stop(&h->timer);
        return 0;
    }
    /* 0 would run curl from inside its own callback; a 1 ms timer goes through the loop */
    uv_timer_start(&h->timer, on_multi_timeout, timeout_ms == 0 ? 1 : (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- response capture -------------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct http_xfer *x = userp;
    size_t n = size * nmemb;
    struct http_response *res = &x->res;
    if (res->body_len + n > x->max_response) {
        x->too_big = 1;
        return 0;
    }
    if (res->body_len + n + 1 > x->body_cap) {
        size_t cap = x->body_cap * 2;
        while (cap < res->body_len + n + 1)
            cap *= 2;
        if (cap > x->max_response + 1)
            cap = x->max_response + 1;
        char *p = realloc(res->body, cap);
        if (p == NULL) {
            x->too_big = 1;
            return 0;
        }
        res->body = p;
        x->body_cap = cap;
    }
    memcpy(res->body + res->body_len, data, n);
    res->body_len += n;
    res->body[res->body_len] = '\0';
    return n;
}

static void clear_headers(struct http_response *res)
{
    res->etag[0] = res->location[0] = res->retry_after[0] = res->ratelimit[0] = '\0';
    res->error_code[0] = res->error_message[0] = res->request_id[0] = '\0';
    res->content_type[0] = '\0';
}

static size_t on_header(char *data, size_t size, size_t nitems, void *userp)
{
    struct http_xfer *x = userp;
    size_t n = size * nitems;
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        /* a new response (redirect or 1xx) replaces the headers we kept */
        clear_headers(&x->res);
        return n;
    }
    const char *colon = memchr(data, ':', n);
    if (colon == NULL)
        return n;
    size_t name_len = (size_t)(colon - data);
    const char *v = colon + 1;
    const char *end = data + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    static const struct {
        const char *name;
        size_t off, size;
    } keep[] = {
#define K(n, f) {n, offsetof(struct http_response, f), sizeof(((struct http_response *)0)->f)}
        K("etag", etag),
        K("location", location),
        K("retry-after", retry_after),
        K("ratelimit", ratelimit),
        K("x-error-code", error_code),
        K("x-error-message", error_message),
        K("x-request-id", request_id),
        K("content-type", content_type),
#undef K
    };
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        if (strlen(keep[i].name) == name_len && strncasecmp(keep[i].name, data, name_len) == 0) {
            char *dst = (char *)&x->res + keep[i].off;
            size_t len = (size_t)(end - v);
            if (len >= keep[i].size)
                len = keep[i].size - 1; /* truncated: these are bounded by design */
            memcpy(dst, v, len);
            dst[len] = '\0';
            break;
        }
    }
    return n;
}

/* ---- request bodies ---------------------------------------------------------------------- */

static void on_read_done(uv_fs_t *req);

static int issue_read(struct ring_buf *b)
{
    struct http_xfer *x = b->x;
    uv_buf_t buf = uv_buf_init(b->data + b->have, (unsigned)(b->want - b->have));
    b->req.data = b;
    int r =
        uv_fs_read(x->h->loop, &b->req, x->fd, &buf, 1, (int64_t)(b->off + b->have), on_read_done);
    if (r < 0)
        return r;
    x->reads_in_flight++;
    return 0;
}

static void set_file_err(struct http_xfer *x, int err, const char *what)
{
    if (x->file_err != 0)
        return;
    x->file_err = err;
    snprintf(x->res.error, sizeof(x->res.error), "cannot %s '%s': %s", what, x->path,
             uv_strerror(err));
}

static void kick_reads(struct http_xfer *x)
{
    size_t bufsize = x->h->opts.file_buf_size;
    while (x->file_err == 0 && x->rb[x->rb_w].state == RB_EMPTY &&
           x->f_next < x->f_off + x->f_len) {
        struct ring_buf *b = &x->rb[x->rb_w];
        uint64_t left = x->f_off + x->f_len - x->f_next;
        b->off = x->f_next;
        b->want = left < bufsize ? (size_t)left : bufsize;
        b->have = b->pos = 0;
        b->state = RB_READING;
        int r = issue_read(b);
        if (r < 0) {
            b->state = RB_EMPTY;
            set_file_err(x, r, "read");
            return;
        }
        x->f_next += b->want;
        x->rb_w ^= 1;
    }
}

static void unpause(struct http_xfer *x)
{
    if (x->paused && x->in_multi) {
        x->paused = 0;
        curl_easy_pause(x->easy, CURLPAUSE_CONT);
    }
}

static void xfer_io_drained(struct http_xfer *x);

static void on_read_done(uv_fs_t *req)
{
    struct ring_buf *b = req->data;
    struct http_xfer *x = b->x;
    ssize_t result = req->result;
    uv_fs_req_cleanup(req);
    x->reads_in_flight--;
    if (x->state != XS_ACTIVE) {
        /* the attempt ended while we read: the data is stale */
        b->state = RB_EMPTY;
        if (x->reads_in_flight == 0)
            xfer_io_drained(x);
        return;
    }
    if (result < 0) {
        b->state = RB_EMPTY;
        set_file_err(x, (int)result, "read");
    } else if (result == 0) {
        b->state = RB_EMPTY;
        set_file_err(x, UV_EIO, "read (file shrank)");
    } else {
        b->have += (size_t)result;
        if (b->have < b->want) {
            int r = issue_read(b);
            if (r == 0)
                return;
            set_file_err(x, r, "read");
        } else {
            b->state = RB_READY;
            /* Checkpoint bytes are read once: drop them from the page cache rather than push
             * out the training job's pages. A hint, not data I/O: it does not wait for the
             * disk, so it may run here. */
            posix_fadvise(x->fd, (off_t)b->off, (off_t)b->have, POSIX_FADV_DONTNEED);
        }
    }
    unpause(x);
}

/* ---- the shared bandwidth cap ------------------------------------------------------------ */

#define RATE_TICK_MS 20

static void rate_refill(struct http *h)
{
    uint64_t now = uv_hrtime();
    double burst = (double)h->opts.max_rate / 10.0; /* 100 ms of sending */

    if (burst < 16384)
        burst = 16384;
    h->tokens += (double)(now - h->refilled_ns) * (double)h->opts.max_rate / 1e9;
    if (h->tokens > burst)
        h->tokens = burst;
    h->refilled_ns = now;
}

static void on_rate_timer(uv_timer_t *t)
{
    struct http *h = t->data;
    int waiting = 0;

    rate_refill(h);
    for (struct http_xfer *x = h->xfers, *next; x != NULL && h->tokens >= 1; x = next) {
        next = x->next;
        if (!x->rate_paused)
            continue;
        x->rate_paused = 0;
        unpause(x); /* may call on_read_body at once, which takes tokens or pauses again */
    }
    for (struct http_xfer *x = h->xfers; x != NULL; x = x->next)
        waiting |= x->rate_paused;
    if (!waiting)
        uv_timer_stop(&h->rate_timer);
}

/* How much of room may go now; 0 pauses the transfer until the bucket refills. */
static size_t rate_take(struct http_xfer *x, size_t room)
{
    struct http *h = x->h;

    if (h->opts.max_rate == 0)
        return room;
    rate_refill(h);
    if (h->tokens < 1) {
        x->rate_paused = 1;
        if (!uv_is_active((uv_handle_t *)&h->rate_timer) && !h->closing)
            uv_timer_start(&h->rate_timer, on_rate_timer, RATE_TICK_MS, RATE_TICK_MS);
        return 0;
    }
    return room < h->tokens ? room : (size_t)h->tokens;
}

static size_t on_read_body(char *dst, size_t size, size_t nitems, void *userp)
{
    struct http_xfer *x = userp;
    size_t room = size * nitems;
    size_t n = 0;
    if ((x->mem != NULL && x->mem_pos < x->mem_len) ||
        (x->path != NULL && x->file_err == 0 && x->f_consumed < x->f_len)) {
        room = rate_take(x, room);
        if (room == 0) {
            x->paused = 1;
            return CURL_READFUNC_PAUSE;
        }
    }
    if (x->mem != NULL) {
        n = x->mem_len - x->mem_pos;
        if (n > room)
            n = room;
        memcpy(dst, x->mem + x->mem_pos, n);
        x->mem_pos += n;
    } else if (x->path != NULL) {
        if (x->file_err != 0)
            return CURL_READFUNC_ABORT;
        if (x->f_consumed == x->f_len)
            return 0;
        struct ring_buf *b = &x->rb[x->rb_r];
        if (b->state != RB_READY) {
            x->paused = 1;
            return CURL_READFUNC_PAUSE;
        }
        n = b->have - b->pos;
        if (n > room)
            n = room;
        memcpy(dst, b->data + b->pos, n);
        b->pos += n;
        x->f_consumed += n;
        if (b->pos == b->have) {
            b->state = RB_EMPTY;
            x->rb_r ^= 1;
            kick_reads(x);
        }
    }
    x->sent_attempt += (int64_t)n;
    if (x->h->opts.max_rate > 0)
        x->h->tokens -= (double)n;
    if (x->sent_cb != NULL && n > 0)
        x->sent_cb(x->ctx, (int64_t)n);
    return n;
}

static int on_seek_body(void *userp, curl_off_t offset, int origin)
{
    struct http_xfer *x = userp;
    /* Only memory bodies rewind; a file body is restarted by our own retry instead. */
    if (x->mem == NULL || origin != SEEK_SET || offset < 0 || (size_t)offset > x->mem_len)
        return CURL_SEEKFUNC_CANTSEEK;
    if (x->sent_cb != NULL)
        x->sent_cb(x->ctx, (int64_t)offset - (int64_t)x->mem_pos);
    x->sent_attempt += (int64_t)offset - (int64_t)x->mem_pos;
    x->mem_pos = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

/* ---- transfer life ----------------------------------------------------------------------- */

static void xfer_free(struct http_xfer *x)
{
    if (x->easy != NULL)
        curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->hdrs);
    free(x->url);
    free(x->method);
    free(x->mem);
    free(x->path);
    free(x->rb[0].data);
    free(x->rb[1].data);
    free(x->res.body);
    free(x);
}

static void on_xfer_closed(uv_handle_t *handle)
{
    struct http_xfer *x = handle->data;
    struct http *h = x->h;
    if (x->prev != NULL)
        x->prev->next = x->next;
    else
        h->xfers = x->next;
    if (x->next != NULL)
        x->next->prev = x->prev;
    xfer_free(x);
    http_maybe_release(h);
}

static void on_deliver(uv_timer_t *t)
{
    struct http_xfer *x = t->data;
    x->state = XS_DONE;
    if (x->fd >= 0) {
        /* a read-only regular file: close does not wait on data */
        close(x->fd);
        x->fd = -1;
    }
    x->cb(x->ctx, &x->res);
    uv_close((uv_handle_t *)&x->timer, on_xfer_closed);
}

static void xfer_io_drained(struct http_xfer *x);

static int attempt_start(struct http_xfer *x)
{
    struct http_response *res = &x->res;
    res->fail = HTTP_FAIL_NONE;
    res->status = 0;
    res->body_len = 0;
    res->body[0] = '\0';
    res->curl_code = 0;
    res->error[0] = '\0';
    clear_headers(res);
    res->attempts++;
    x->too_big = 0;
    x->errbuf[0] = '\0';
    x->mem_pos = 0;
    x->sent_attempt = 0;
    x->paused = 0;
    x->rate_paused = 0;
    if (x->path != NULL) {
        x->rb[0].state = x->rb[1].state = RB_EMPTY;
        x->rb_r = x->rb_w = 0;
        x->f_next = x->f_off;
        x->f_consumed = 0;
        x->file_err = 0;
    }
    x->state = XS_ACTIVE;
    /* a handle removed while paused must not start the next attempt paused */
    curl_easy_pause(x->easy, CURLPAUSE_CONT);
    CURLMcode mc = curl_multi_add_handle(x->h->multi, x->easy);
    if (mc != CURLM_OK) {
        x->state = XS_FINISHING;
        return UV_ENOMEM;
    }
    x->in_multi = 1;
    if (x->path != NULL)
        kick_reads(x);
    return 0;
}

static void xfer_io_drained(struct http_xfer *x)
{
    if (x->reads_in_flight > 0 || x->opening)
        return;
    if (x->state == XS_FINISHING) {
        uv_timer_start(&x->timer, on_deliver, 0, 0);
    } else if (x->state == XS_BACKOFF && x->restart_pending) {
        x->restart_pending = 0;
        if (attempt_start(x) < 0) {
            x->res.fail = HTTP_FAIL_NETWORK;
            snprintf(x->res.error, sizeof(x->res.error), "cannot start transfer");
            xfer_finish(x);
        }
    }
}

static void xfer_finish(struct http_xfer *x)
{
    if (x->in_multi) {
        curl_multi_remove_handle(x->h->multi, x->easy);
        x->in_multi = 0;
    }
    x->state = XS_FINISHING;
    uv_timer_stop(&x->timer);
    xfer_io_drained(x);
}

static void on_backoff_done(uv_timer_t *t)
{
    struct http_xfer *x = t->data;
    x->restart_pending = 1;
    xfer_io_drained(x);
}

static int is_retryable_status(long status)
{
    return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

/* Parses a non-negative decimal; returns -1 on anything else. */
static long long parse_seconds(const char *s, size_t n)
{
    long long v = 0;
    if (n == 0 || n > 9)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* The wait before the next attempt, in ms. */
static uint64_t retry_delay_ms(struct http_xfer *x)
{
    const struct http_opts *o = &x->h->opts;
    struct http_response *res = &x->res;
    if (res->status == 429 && res->ratelimit[0] != '\0') {
        /* RateLimit: "api";r=0;t=N -> the window resets in N s */
        const char *t = strstr(res->ratelimit, ";t=");
        if (t != NULL) {
            t += 3;
            size_t n = strspn(t, "0123456789");
            long long v = parse_seconds(t, n);
            if (v >= 0)
                return (uint64_t)(v + 1) * 1000;
        }
    }
    if (res->retry_after[0] != '\0') {
        long long v = parse_seconds(res->retry_after, strlen(res->retry_after));
        if (v >= 0)
            return (uint64_t)v * 1000;
    }
    unsigned shift = res->attempts > 1 ? res->attempts - 1 : 0;
    if (shift > 20)
        shift = 20;
    uint64_t d = o->backoff_base_ms << shift;
    if (d > o->backoff_cap_ms)
        d = o->backoff_cap_ms;
    /* full jitter on the upper half keeps many clients from retrying in step */
    uint64_t half = d / 2;
    return half + (half > 0 ? (uint64_t)rand() % (half + 1) : 0);
}

static void url_for_log(char *dst, size_t size, const char *url)
{
    /* presigned URLs carry their signature in the query: never log it */
    size_t n = strcspn(url, "?#");
    if (n >= size)
        n = size - 1;
    memcpy(dst, url, n);
    dst[n] = '\0';
}

/* Every retry of every http, for the metrics; loop thread only. */
static uint64_t retries_total;

uint64_t http_retries_total(void)
{
    return retries_total;
}

static void attempt_done(struct http_xfer *x, CURLcode result)
{
    struct http_response *res = &x->res;
    long status = 0;
    if (result == CURLE_OK) {
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        res->status = status;
        res->fail = HTTP_FAIL_NONE;
    } else if (x->too_big) {
        res->fail = HTTP_FAIL_TOO_BIG;
        snprintf(res->error, sizeof(res->error), "response larger than %zu bytes", x->max_response);
    } else if (x->file_err != 0) {
        res->fail = HTTP_FAIL_FILE;
    } else {
        res->fail = HTTP_FAIL_NETWORK;
        res->curl_code = (int)result;
        snprintf(res->error, sizeof(res->error), "%s",
                 x->errbuf[0] != '\0' ? x->errbuf : curl_easy_strerror(result));
    }
    if (x->cancel_pending) {
        /* the answer a cancel waited for: delivered as it is, a failure as the cancel */
        if (res->fail != HTTP_FAIL_NONE) {
            res->fail = HTTP_FAIL_CANCELLED;
            snprintf(res->error, sizeof(res->error), "cancelled");
        }
        xfer_finish(x);
        return;
    }
    int retry = x->retryable && res->attempts < x->h->opts.max_attempts &&
                (x->retryable == HTTP_RETRY_429
                     ? res->fail == HTTP_FAIL_NONE && status == 429
                     : res->fail == HTTP_FAIL_NETWORK ||
                           (res->fail == HTTP_FAIL_NONE && is_retryable_status(status)));
    uint64_t delay = retry ? retry_delay_ms(x) : 0;
    if (retry && delay > x->h->opts.retry_after_max_ms)
        retry = 0;
    if (!retry) {
        xfer_finish(x);
        return;
    }
    char where[256];
    retries_total++;
    url_for_log(where, sizeof(where), x->url);
    if (res->fail == HTTP_FAIL_NETWORK)
        log_warn("http_retry", "method=%s url='%s' error='%s' attempt=%u, retrying in %llums",
                 x->method, where, res->error, res->attempts, (unsigned long long)delay);
    else
        log_warn("http_retry", "method=%s url='%s' status=%ld attempt=%u, retrying in %llums",
                 x->method, where, status, res->attempts, (unsigned long long)delay);
    if (x->sent_cb != NULL && x->sent_attempt != 0)
        x->sent_cb(x->ctx, -x->sent_attempt);
    x->sent_attempt = 0;
    x->state = XS_BACKOFF;
    uv_timer_start(&x->timer, on_backoff_done, delay, 0);
}

static void check_multi_info(struct http *h)
{
    CURLMsg *msg;
    int pending;
    while ((msg = curl_multi_info_read(h->multi, &pending)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct http_xfer *x = NULL;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(h->multi, easy);
        x->in_multi = 0;
        attempt_done(x, result);
    }
}

static void on_open_done(uv_fs_t *req)
{
    struct http_xfer *x = req->data;
    ssize_t result = req->result;
    uv_fs_req_cleanup(req);
    x->opening = 0;
    if (result >= 0)
        x->fd = (uv_file)result;
    if (x->state != XS_OPENING) {
        xfer_io_drained(x); /* cancelled meanwhile */
        return;
    }
    if (result < 0) {
        x->res.fail = HTTP_FAIL_FILE;
        set_file_err(x, (int)result, "open");
        xfer_finish(x);
        return;
    }
    if (attempt_start(x) < 0) {
        x->res.fail = HTTP_FAIL_NETWORK;
        snprintf(x->res.error, sizeof(x->res.error), "cannot start transfer");
        xfer_finish(x);
    }
}

/* ---- public API -------------------------------------------------------------------------- */

int http_init(struct http **ret, uv_loop_t *loop, const struct http_opts *opts)
{
    struct http *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return UV_ENOMEM;
    if (opts != NULL)
        h->opts = *opts;
    struct http_opts *o = &h->opts;
    if (o->max_attempts == 0)
        o->max_attempts = 6;
    if (o->backoff_base_ms == 0)
        o->backoff_base_ms = 1000;
    if (o->backoff_cap_ms == 0)
        o->backoff_cap_ms = 8000;
    if (o->retry_after_max_ms == 0)
        o->retry_after_max_ms = 300000;
    if (o->connect_timeout_ms == 0)
        o->connect_timeout_ms = 30000;
    if (o->stall_timeout_s == 0)
        o->stall_timeout_s = 60;
    if (o->file_buf_size == 0)
        o->file_buf_size = 512 * 1024; /* = HTTP_UPLOAD_BUFFER: one read feeds one send */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        goto error;
    h->loop = loop;
    h->multi = curl_multi_init();
    if (h->multi == NULL)
        goto error_global;
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    uv_timer_init(loop, &h->rate_timer);
    h->rate_timer.data = h;
    h->refilled_ns = uv_hrtime();
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    *ret = h;
    return 0;
error_global:
    curl_global_cleanup();
error:
    free(h);
    return UV_ENOMEM;
}

static int xfer_setup(struct http_xfer *x, const struct http_request *req)
{
    struct http *h = x->h;
    CURL *e = curl_easy_init();
    if (e == NULL)
        return UV_ENOMEM;
    x->easy = e;
    char line[8192];
    if (req->bearer != NULL) {
        snprintf(line, sizeof(line), "Authorization: Bearer %s", req->bearer);
        struct curl_slist *l = curl_slist_append(x->hdrs, line);
        explicit_bzero(line, sizeof(line));
        if (l == NULL)
            return UV_ENOMEM;
        x->hdrs = l;
    }
    if (req->content_type != NULL) {
        snprintf(line, sizeof(line), "Content-Type: %s", req->content_type);
        struct curl_slist *l = curl_slist_append(x->hdrs, line);
        if (l == NULL)
            return UV_ENOMEM;
        x->hdrs = l;
    }
    /* the bodies we send are accepted or rejected whole; 100-continue only costs a round trip */
    struct curl_slist *l = curl_slist_append(x->hdrs, "Expect:");
    if (l == NULL)
        return UV_ENOMEM;
    x->hdrs = l;
    for (size_t i = 0; i < HTTP_MAX_HEADERS && req->headers[i] != NULL; i++) {
        l = curl_slist_append(x->hdrs, req->headers[i]);
        if (l == NULL)
            return UV_ENOMEM;
        x->hdrs = l;
    }

    int has_body = req->body != NULL || req->body_path != NULL;
    curl_off_t body_len =
        req->body_path != NULL ? (curl_off_t)req->body_file_len : (curl_off_t)req->body_len;
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_VERBOSE, 0L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "ckptpush/" CKPT_VERSION);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->opts.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, h->opts.stall_timeout_s);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    if (req->follow_redirects) {
        /* curl drops a custom Authorization header when the redirect changes host */
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
    }
    if (has_body) {
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read_body);
        curl_easy_setopt(e, CURLOPT_READDATA, x);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek_body);
        curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
        /* curl's 64 KiB default costs a read callback and a send() per 64 KiB: a 2 GiB body
         * is 32768 of each. Larger chunks cut that CPU (curl caps the size at 2 MiB). */
        if (req->body_path != NULL)
            curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, HTTP_UPLOAD_BUFFER);
    }
    if (strcmp(req->method, "GET") == 0 && !has_body) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(req->method, "HEAD") == 0 && !has_body) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(req->method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, body_len);
        if (!has_body)
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    } else if (has_body) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, body_len);
        if (strcmp(req->method, "PUT") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, x->method);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, x->method);
    }
    return 0;
}

int http_send(struct http *h, const struct http_request *req, http_done_cb cb, void *ctx,
              struct http_xfer **ret_xfer)
{
    if (h->closing)
        return UV_ESHUTDOWN;
    if (req->method == NULL || req->url == NULL || cb == NULL ||
        (req->body != NULL && req->body_path != NULL))
        return UV_EINVAL;
    if (req->body != NULL && req->body_len > HTTP_MAX_MEM_BODY)
        return UV_E2BIG;
    struct http_xfer *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return UV_ENOMEM;
    x->h = h;
    x->fd = -1;
    x->cb = cb;
    x->ctx = ctx;
    x->sent_cb = req->sent_cb;
    x->retryable = req->retryable;
    x->max_response = req->max_response != 0 ? req->max_response : HTTP_DEFAULT_MAX_RESPONSE;
    x->body_cap = 4096;
    x->res.body = malloc(x->body_cap);
    x->url = strdup(req->url);
    x->method = strdup(req->method);
    int r = UV_ENOMEM;
    if (x->res.body == NULL || x->url == NULL || x->method == NULL)
        goto error;
    x->res.body[0] = '\0';
    if (req->body != NULL) {
        x->mem = malloc(req->body_len > 0 ? req->body_len : 1);
        if (x->mem == NULL)
            goto error;
        memcpy(x->mem, req->body, req->body_len);
        x->mem_len = req->body_len;
    } else if (req->body_path != NULL) {
        x->path = strdup(req->body_path);
        x->rb[0].data = malloc(h->opts.file_buf_size);
        x->rb[1].data = malloc(h->opts.file_buf_size);
        if (x->path == NULL || x->rb[0].data == NULL || x->rb[1].data == NULL)
            goto error;
        x->rb[0].x = x->rb[1].x = x;
        x->f_off = req->body_offset;
        x->f_len = req->body_file_len;
    }
    r = xfer_setup(x, req);
    if (r < 0)
        goto error;

    if (x->path != NULL) {
        x->open_req.data = x;
        /* O_NONBLOCK: a FIFO planted in place of a file fails instead of blocking a pool thread */
        r = uv_fs_open(h->loop, &x->open_req, x->path,
                       O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0, on_open_done);
        if (r < 0)
            goto error;
        x->opening = 1;
        x->state = XS_OPENING;
    } else {
        r = attempt_start(x);
        if (r < 0)
            goto error;
    }
    uv_timer_init(h->loop, &x->timer);
    x->timer.data = x;
    x->next = h->xfers;
    if (h->xfers != NULL)
        h->xfers->prev = x;
    h->xfers = x;
    if (ret_xfer != NULL)
        *ret_xfer = x;
    return 0;
error:
    if (x->in_multi)
        curl_multi_remove_handle(h->multi, x->easy);
    xfer_free(x);
    return r;
}

static void cancel_now(struct http_xfer *x)
{
    x->cancel_pending = 0;
    x->res.fail = HTTP_FAIL_CANCELLED;
    x->res.status = 0;
    snprintf(x->res.error, sizeof(x->res.error), "cancelled");
    xfer_finish(x);
}

static void on_answer_grace_over(uv_timer_t *t)
{
    cancel_now(t->data);
}

void http_xfer_cancel(struct http_xfer *x)
{
    if (x->state == XS_FINISHING || x->state == XS_DONE || x->cancel_pending)
        return;
    if (x->state == XS_ACTIVE && x->in_multi && x->path != NULL && x->file_err == 0 &&
        x->f_consumed == x->f_len) {
        x->cancel_pending = 1;
        uv_timer_start(&x->timer, on_answer_grace_over, HTTP_ANSWER_GRACE_MS, 0);
        return;
    }
    cancel_now(x);
}

static void on_rate_timer_closed(uv_handle_t *handle)
{
    struct http *h = handle->data;
    h->rate_timer_closed = 1;
    http_maybe_release(h);
}

static void on_http_timer_closed(uv_handle_t *handle)
{
    struct http *h = handle->data;
    h->timer_closed = 1;
    http_maybe_release(h);
}

static void http_maybe_release(struct http *h)
{
    if (!h->closing || h->xfers != NULL)
        return;
    if (h->multi != NULL) {
        /* closes cached connections: their sockets go through CURL_POLL_REMOVE */
        curl_multi_cleanup(h->multi);
        h->multi = NULL;
        curl_global_cleanup();
        uv_close((uv_handle_t *)&h->timer, on_http_timer_closed);
        uv_close((uv_handle_t *)&h->rate_timer, on_rate_timer_closed);
        return;
    }
    if (!h->timer_closed || !h->rate_timer_closed || h->n_polls > 0)
        return;
    http_close_cb cb = h->close_cb;
    void *ctx = h->close_ctx;
    free(h);
    if (cb != NULL)
        cb(ctx);
}

void http_close(struct http *h, http_close_cb cb, void *ctx)
{
    if (h->closing)
        return;
    h->closing = 1;
    h->close_cb = cb;
    h->close_ctx = ctx;
    for (struct http_xfer *x = h->xfers; x != NULL; x = x->next)
        http_xfer_cancel(x);
    http_maybe_release(h);
}
