/* test_ipc.c - the control socket server on a real loop, driven by real client sockets from a
 * second thread: framing, garbage, truncated and oversized lines, envelope errors, deferred and
 * dropped replies, a subscriber that never reads, the client limit, another user's peer
 * credentials (when root can switch user), socket and directory modes. The loop must close empty.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "check.h"
#include "ipc.h"
#include "ipc_proto.h"

#define EVENT_COUNT 3000
#define EVENT_PAYLOAD 1024
#define TIMEOUT_MS 5000

static uv_loop_t loop;
static struct ipc_server *server;
static uv_timer_t flush_timer;
static struct ipc_request *pending_flush;
static struct ipc_request *pending_final;
static int server_closed;
static char tmp_dir[200];
static char sock_dir[256];
static char sock_path[320];

static void set_addr(struct sockaddr_un *addr, const char *path)
{
    size_t n = strlen(path);

    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    if (n >= sizeof(addr->sun_path))
        n = sizeof(addr->sun_path) - 1;
    memcpy(addr->sun_path, path, n);
}

/* ---- the handler (loop thread) ------------------------------------------------------------- */
static void on_flush_timer(uv_timer_t *t)
{
    cJSON *out = cJSON_CreateObject();

    (void)t;
    cJSON_AddBoolToObject(out, "flushed", true);
    ipc_reply(pending_flush, out);
    pending_flush = NULL;
}

static void on_server_closed(void *ctx)
{
    (void)ctx;
    server_closed++;
}

static void on_request(void *ctx, struct ipc_request *req)
{
    const char *type = ipc_request_type(req);
    const cJSON *json = ipc_request_json(req);
    cJSON *out = cJSON_CreateObject();

    (void)ctx;
    cJSON_AddStringToObject(out, "type", type);
    if (strcmp(type, IPC_TYPE_STATUS) == 0) {
        cJSON_AddNumberToObject(out, "clients", ipc_server_client_count(server));
        /* Reserved names in fields must not override the envelope. */
        cJSON_AddStringToObject(out, "ok", "forged");
        ipc_reply(req, out);
    } else if (strcmp(type, IPC_TYPE_PUSH) == 0) {
        cJSON_AddStringToObject(out, "path",
                                cJSON_GetObjectItemCaseSensitive(json, "path")->valuestring);
        ipc_reply(req, out);
    } else if (strcmp(type, IPC_TYPE_FLUSH) == 0) {
        cJSON_Delete(out);
        pending_flush = req;
        uv_timer_start(&flush_timer, on_flush_timer, 100, 0);
    } else if (strcmp(type, IPC_TYPE_FINAL) == 0) {
        cJSON_Delete(out);
        pending_final = req;
    } else if (strcmp(type, IPC_TYPE_RESUME) == 0) {
        /* Answer the final whose client went away: must be dropped, not crash. */
        int late = pending_final != NULL ? ipc_reply(pending_final, NULL) : 1;
        pending_final = NULL;
        cJSON_AddNumberToObject(out, "late", late);
        ipc_reply(req, out);
    } else if (strcmp(type, IPC_TYPE_PAUSE) == 0) {
        char *payload = malloc(EVENT_PAYLOAD + 1);
        cJSON *fields = cJSON_CreateObject();
        int first = -100, last = -100;
        memset(payload, 'p', EVENT_PAYLOAD);
        payload[EVENT_PAYLOAD] = '\0';
        cJSON_AddStringToObject(fields, "blob", payload);
        for (int i = 0; i < EVENT_COUNT; i++) {
            cJSON_SetNumberHelper(cJSON_AddNumberToObject(fields, "i", i), i);
            int n = ipc_broadcast_event(server, IPC_EVENT_PROGRESS, fields);
            cJSON_DeleteItemFromObject(fields, "i");
            if (i == 0)
                first = n;
            last = n;
        }
        cJSON_Delete(fields);
        free(payload);
        cJSON_AddNumberToObject(out, "first", first);
        cJSON_AddNumberToObject(out, "last", last);
        ipc_reply(req, out);
    } else if (strcmp(type, IPC_TYPE_SUBSCRIBE) == 0) {
        ipc_request_subscribe(req);
        ipc_reply(req, out);
    } else if (strcmp(type, IPC_TYPE_SHUTDOWN) == 0) {
        ipc_reply(req, out);
        uv_close((uv_handle_t *)&flush_timer, NULL);
        ipc_server_close(server, on_server_closed, NULL);
    } else {
        ipc_reply(req, out);
    }
}

/* ---- a blocking client (test thread) ------------------------------------------------------- */
struct conn {
    int fd;
    size_t len;
    char buf[256 * 1024];
};

static struct conn *conn_open(void)
{
    struct sockaddr_un addr;
    struct conn *c = calloc(1, sizeof(*c));

    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    set_addr(&addr, sock_path);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        fprintf(stderr, "connect '%s': %s\n", sock_path, strerror(errno));
        test_failures++;
    }
    return c;
}

static void conn_close(struct conn *c)
{
    close(c->fd);
    free(c);
}

static void conn_send(struct conn *c, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "send: %s\n", strerror(errno));
            test_failures++;
            return;
        }
        data += n;
        len -= (size_t)n;
    }
}

static void conn_sends(struct conn *c, const char *s)
{
    conn_send(c, s, strlen(s));
}

/* One line (without '\n') into a malloc'd string; NULL on EOF (*eof set), error or timeout. */
static char *conn_line(struct conn *c, bool *eof)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

    if (eof != NULL)
        *eof = false;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - c->buf);
            char *line = malloc(n + 1);
            memcpy(line, c->buf, n);
            line[n] = '\0';
            memmove(c->buf, nl + 1, c->len - n - 1);
            c->len -= n + 1;
            return line;
        }
        if (c->len == sizeof(c->buf) || poll(&pfd, 1, TIMEOUT_MS) <= 0)
            return NULL;
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
        if (r <= 0) {
            if (eof != NULL)
                *eof = r == 0 || errno == ECONNRESET;
            return NULL;
        }
        c->len += (size_t)r;
    }
}

static cJSON *conn_json(struct conn *c)
{
    char *line = conn_line(c, NULL);
    cJSON *j;

    if (line == NULL) {
        fprintf(stderr, "no reply line\n");
        test_failures++;
        return cJSON_CreateObject();
    }
    j = cJSON_Parse(line);
    if (j == NULL) {
        fprintf(stderr, "reply is not JSON: %.200s\n", line);
        test_failures++;
        j = cJSON_CreateObject();
    }
    free(line);
    return j;
}

static cJSON *conn_request(struct conn *c, const char *line)
{
    conn_sends(c, line);
    return conn_json(c);
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *i = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(i) ? i->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *key)
{
    const cJSON *i = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(i) ? i->valuedouble : -12345;
}

static const char *err_code(const cJSON *o)
{
    return jstr(cJSON_GetObjectItemCaseSensitive(o, "error"), "code");
}

static const char *err_msg(const cJSON *o)
{
    return jstr(cJSON_GetObjectItemCaseSensitive(o, "error"), "message");
}

static bool conn_at_eof(struct conn *c)
{
    bool eof = false;
    char *line = conn_line(c, &eof);
    if (line != NULL) {
        fprintf(stderr, "unexpected line before EOF: %.200s\n", line);
        free(line);
        return false;
    }
    return eof;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The server sees closes asynchronously: ask until only `want` clients remain. */
static void wait_clients(struct conn *c, int want)
{
    double got = -1;
    for (int i = 0; i < 100 && got != want; i++) {
        cJSON *r = conn_request(c, "{\"v\":1,\"type\":\"status\"}\n");
        got = jnum(r, "clients");
        cJSON_Delete(r);
        if (got != want)
            sleep_ms(20);
    }
    CHECK_INT(got, want);
}

/* ---- the cases ----------------------------------------------------------------------------- */
static void case_good(void)
{
    struct conn *c = conn_open();
    cJSON *r = conn_request(c, "{\"v\":1,\"id\":7,\"type\":\"status\"}\n");

    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")));
    CHECK_INT(jnum(r, "v"), 1);
    CHECK_INT(jnum(r, "id"), 7);
    CHECK_STR(jstr(r, "type"), "status");
    cJSON_Delete(r);
    /* String ids, CRLF and blank lines are fine; unknown extra fields are ignored. */
    r = conn_request(c, "\n\r\n{\"v\":1,\"id\":\"abc\",\"type\":\"push\",\"path\":\"x/y\","
                        "\"extra\":[1]}\r\n");
    CHECK_STR(jstr(r, "id"), "abc");
    CHECK_STR(jstr(r, "path"), "x/y");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")));
    cJSON_Delete(r);
    conn_close(c);
}

static void case_garbage(void)
{
    struct conn *c = conn_open();
    cJSON *r = conn_request(c, "hello world\n");

    CHECK_STR(err_code(r), IPC_ERR_BAD_JSON);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(r, "ok")));
    CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r, "id")));
    cJSON_Delete(r);
    r = conn_request(c, "[1,2]\n");
    CHECK_STR(err_code(r), IPC_ERR_BAD_JSON);
    cJSON_Delete(r);
    r = conn_request(c, "{\"v\":1,\"type\":\"status\"} trailing\n");
    CHECK_STR(err_code(r), IPC_ERR_BAD_JSON);
    cJSON_Delete(r);
    conn_send(c, "{\"v\":1,\0}\n", 10);
    r = conn_json(c);
    CHECK_STR(err_code(r), IPC_ERR_BAD_JSON);
    cJSON_Delete(r);
    r = conn_request(c, "{\"v\":1,\"id\":{},\"type\":\"status\"}\n");
    CHECK_STR(err_code(r), IPC_ERR_BAD_REQUEST);
    CHECK(err_msg(r) != NULL && strstr(err_msg(r), "'id'") != NULL);
    cJSON_Delete(r);
    /* Still serving on the same connection. */
    r = conn_request(c, "{\"v\":1,\"id\":2,\"type\":\"status\"}\n");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")));
    cJSON_Delete(r);
    conn_close(c);
}

static void case_types(void)
{
    struct conn *c = conn_open();
    cJSON *r = conn_request(c, "{\"v\":1,\"id\":1,\"type\":\"nope\"}\n");

    CHECK_STR(err_code(r), IPC_ERR_UNKNOWN_TYPE);
    CHECK(err_msg(r) != NULL && strstr(err_msg(r), "'nope'") != NULL);
    CHECK_INT(jnum(r, "id"), 1);
    cJSON_Delete(r);
    r = conn_request(c, "{\"v\":1,\"id\":2}\n");
    CHECK_STR(err_code(r), IPC_ERR_UNKNOWN_TYPE);
    cJSON_Delete(r);
    r = conn_request(c, "{\"v\":1,\"id\":3,\"type\":\"push\",\"path\":5}\n");
    CHECK_STR(err_code(r), IPC_ERR_BAD_REQUEST);
    CHECK(err_msg(r) != NULL && strstr(err_msg(r), "'path'") != NULL);
    cJSON_Delete(r);
    r = conn_request(c, "{\"v\":1,\"id\":4,\"type\":\"push\"}\n");
    CHECK_STR(err_code(r), IPC_ERR_BAD_REQUEST);
    cJSON_Delete(r);
    r = conn_request(c, "{\"v\":1,\"id\":5,\"type\":\"final\",\"wait\":\"yes\"}\n");
    CHECK_STR(err_code(r), IPC_ERR_BAD_REQUEST);
    CHECK(err_msg(r) != NULL && strstr(err_msg(r), "'wait'") != NULL);
    cJSON_Delete(r);
    r = conn_request(c, "{\"v\":1,\"id\":6,\"type\":\"flush\",\"timeout_s\":\"1\"}\n");
    CHECK_STR(err_code(r), IPC_ERR_BAD_REQUEST);
    cJSON_Delete(r);
    r = conn_request(c, "{\"v\":1,\"id\":7,\"type\":\"status\"}\n");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")));
    cJSON_Delete(r);
    conn_close(c);
}

static void case_oversized(void)
{
    struct conn *c = conn_open();
    size_t big = 100 * 1024, len;
    char *line = malloc(big + 64);
    cJSON *r;

    memset(line, 'x', big);
    line[big] = '\n';
    conn_send(c, line, big + 1);
    r = conn_request(c, "{\"v\":1,\"id\":9,\"type\":\"status\"}\n");
    CHECK_STR(err_code(r), IPC_ERR_TOO_LARGE);
    cJSON_Delete(r);
    r = conn_json(c);
    CHECK_INT(jnum(r, "id"), 9);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")));
    cJSON_Delete(r);

    /* The limit is exact: IPC_MAX_MESSAGE bytes with the newline pass, one more does not. */
    for (int extra = 0; extra < 2; extra++) {
        const char *head = "{\"v\":1,\"id\":10,\"type\":\"status\"}";
        len = IPC_MAX_MESSAGE - 1 + (size_t)extra;
        free(line);
        line = malloc(len + 1);
        memset(line, ' ', len);
        memcpy(line, head, strlen(head));
        line[len] = '\n';
        conn_send(c, line, len + 1);
        r = conn_json(c);
        if (extra == 0)
            CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")));
        else
            CHECK_STR(err_code(r), IPC_ERR_TOO_LARGE);
        cJSON_Delete(r);
    }
    r = conn_request(c, "{\"v\":1,\"id\":11,\"type\":\"status\"}\n");
    CHECK_INT(jnum(r, "id"), 11);
    cJSON_Delete(r);
    free(line);
    conn_close(c);
}

static void case_truncated(void)
{
    struct conn *c = conn_open();
    cJSON *r;

    conn_sends(c, "{\"v\":1,\"id\":1,\"type\":\"status\"}\n{\"v\":1,\"type\":\"sta");
    shutdown(c->fd, SHUT_WR);
    r = conn_json(c);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")));
    cJSON_Delete(r);
    r = conn_json(c);
    CHECK_STR(err_code(r), IPC_ERR_BAD_JSON);
    CHECK(err_msg(r) != NULL && strstr(err_msg(r), "newline") != NULL);
    cJSON_Delete(r);
    CHECK(conn_at_eof(c));
    conn_close(c);
}

/* Gone mid-line: the error reply hits a closed socket (EPIPE), the server goes on. */
static void case_closed_mid_line(void)
{
    struct conn *c = conn_open();
    cJSON *r;

    conn_sends(c, "{\"v\":1,\"type\":\"status\"");
    conn_close(c);
    sleep_ms(50);
    c = conn_open();
    r = conn_request(c, "{\"v\":1,\"id\":3,\"type\":\"status\"}\n");
    CHECK_INT(jnum(r, "id"), 3);
    cJSON_Delete(r);
    conn_close(c);
}

static void case_version(void)
{
    struct conn *c = conn_open();
    cJSON *r = conn_request(c, "{\"v\":2,\"id\":5,\"type\":\"status\"}\n{\"v\":1,\"type\":"
                               "\"status\"}\n");

    CHECK_STR(err_code(r), IPC_ERR_BAD_VERSION);
    CHECK_INT(jnum(r, "id"), 5);
    CHECK(err_msg(r) != NULL && strstr(err_msg(r), "2") != NULL && strstr(err_msg(r), "1"));
    cJSON_Delete(r);
    /* The request after the bad one is not answered: the server closed. */
    CHECK(conn_at_eof(c));
    conn_close(c);

    c = conn_open();
    r = conn_request(c, "{\"id\":6,\"type\":\"status\"}\n");
    CHECK_STR(err_code(r), IPC_ERR_BAD_VERSION);
    cJSON_Delete(r);
    CHECK(conn_at_eof(c));
    conn_close(c);
}

static void case_deferred(void)
{
    struct conn *c = conn_open();
    cJSON *r;

    /* The deferred flush is answered after the status sent behind it. */
    conn_sends(c, "{\"v\":1,\"id\":\"f\",\"type\":\"flush\",\"timeout_s\":3}\n"
                  "{\"v\":1,\"id\":\"s\",\"type\":\"status\"}\n");
    r = conn_json(c);
    CHECK_STR(jstr(r, "id"), "s");
    cJSON_Delete(r);
    r = conn_json(c);
    CHECK_STR(jstr(r, "id"), "f");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "flushed")));
    cJSON_Delete(r);

    /* A deferred reply after end of input still arrives, then EOF. */
    conn_sends(c, "{\"v\":1,\"id\":\"g\",\"type\":\"flush\"}\n");
    shutdown(c->fd, SHUT_WR);
    r = conn_json(c);
    CHECK_STR(jstr(r, "id"), "g");
    cJSON_Delete(r);
    CHECK(conn_at_eof(c));
    conn_close(c);
}

static void case_gone(void)
{
    struct conn *x = conn_open(), *y = conn_open();
    struct pollfd pfd = {.fd = x->fd, .events = POLLIN};
    cJSON *r;

    conn_sends(x, "{\"v\":1,\"id\":1,\"type\":\"final\",\"wait\":true}\n"
                  "{\"v\":1,\"id\":2,\"type\":\"status\"}\n");
    /* Leave the status reply unread: closing with unread data resets the connection. */
    CHECK(poll(&pfd, 1, TIMEOUT_MS) == 1);
    conn_close(x);
    r = conn_request(y, "{\"v\":1,\"type\":\"status\"}\n");
    cJSON_Delete(r);
    wait_clients(y, 1);
    r = conn_request(y, "{\"v\":1,\"type\":\"resume\"}\n");
    CHECK_INT(jnum(r, "late"), -ENOTCONN);
    cJSON_Delete(r);
    conn_close(y);
}

static void case_slow_subscriber(void)
{
    struct conn *s = conn_open(), *y = conn_open();
    size_t total = 0;
    ssize_t n;
    cJSON *r;
    char buf[65536];
    struct pollfd pfd = {.fd = 0, .events = POLLIN};

    r = conn_request(s, "{\"v\":1,\"type\":\"subscribe\"}\n");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")));
    cJSON_Delete(r);
    r = conn_request(y, "{\"v\":1,\"type\":\"pause\"}\n");
    CHECK_INT(jnum(r, "first"), 1); /* only s subscribed */
    CHECK_INT(jnum(r, "last"), 0);  /* s was disconnected on the way */
    cJSON_Delete(r);
    r = conn_request(y, "{\"v\":1,\"type\":\"status\"}\n");
    CHECK_INT(jnum(r, "clients"), 1);
    cJSON_Delete(r);
    /* s gets what the kernel held, then EOF: far less than everything. */
    pfd.fd = s->fd;
    for (;;) {
        if (poll(&pfd, 1, TIMEOUT_MS) <= 0) {
            CHECK(!"slow subscriber saw no EOF");
            break;
        }
        n = recv(s->fd, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        total += (size_t)n;
    }
    CHECK(total > 0);
    CHECK(total < (size_t)EVENT_COUNT * EVENT_PAYLOAD);
    conn_close(s);
    conn_close(y);
}

static void case_max_clients(void)
{
    struct conn *y = conn_open(), *many[IPC_MAX_CLIENTS];
    cJSON *r;

    wait_clients(y, 1);
    for (int i = 0; i < IPC_MAX_CLIENTS; i++)
        many[i] = conn_open();
    r = conn_json(many[IPC_MAX_CLIENTS - 1]);
    CHECK_STR(err_code(r), IPC_ERR_BUSY);
    cJSON_Delete(r);
    CHECK(conn_at_eof(many[IPC_MAX_CLIENTS - 1]));
    r = conn_request(many[0], "{\"v\":1,\"type\":\"status\"}\n");
    CHECK_INT(jnum(r, "clients"), IPC_MAX_CLIENTS);
    cJSON_Delete(r);
    for (int i = 0; i < IPC_MAX_CLIENTS; i++)
        conn_close(many[i]);
    wait_clients(y, 1);
    conn_close(y);
}

/* A child that is another user but keeps the right to reach the 0700 directory, so that only
 * the peer credential check can refuse it. Returns the child's verdict, or -1 to skip. */
static int case_other_user(void)
{
    pid_t pid;
    int status;

    if (geteuid() != 0)
        return -1;
    pid = fork();
    if (pid == 0) {
        struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2];
        struct conn *c;
        cJSON *r;
        int ok;
        memset(data, 0, sizeof(data));
        data[0].effective = data[0].permitted = 1u << CAP_DAC_OVERRIDE;
        if (prctl(PR_SET_KEEPCAPS, 1L, 0L, 0L, 0L) < 0 || setresgid(65534, 65534, 65534) < 0 ||
            setresuid(65534, 65534, 65534) < 0 || syscall(SYS_capset, &hdr, data) < 0)
            _exit(77);
        /* The refusal comes unasked, at connect; sending could race the close. */
        c = conn_open();
        r = conn_json(c);
        ok = err_code(r) != NULL && strcmp(err_code(r), IPC_ERR_FORBIDDEN) == 0 && conn_at_eof(c);
        _exit(ok && test_failures == 0 ? 0 : 1);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return 1;
    return WEXITSTATUS(status) == 77 ? -1 : WEXITSTATUS(status);
}

static void client_main(void *arg)
{
    struct conn *c;
    cJSON *r;
    int other;

    (void)arg;
    case_good();
    case_garbage();
    case_types();
    case_oversized();
    case_truncated();
    case_closed_mid_line();
    case_version();
    case_deferred();
    case_gone();
    case_slow_subscriber();
    case_max_clients();
    other = case_other_user();
    if (other < 0)
        printf("test_ipc: other-user case skipped (needs root and capabilities)\n");
    else
        CHECK_INT(other, 0);

    c = conn_open();
    r = conn_request(c, "{\"v\":1,\"id\":99,\"type\":\"shutdown\"}\n");
    CHECK_INT(jnum(r, "id"), 99);
    cJSON_Delete(r);
    CHECK(conn_at_eof(c));
    conn_close(c);
}

static void on_noop_request(void *ctx, struct ipc_request *req)
{
    (void)ctx;
    ipc_reply(req, NULL);
}

/* Start refusals: fail at once, leave nothing behind once the loop ran. */
static void check_start_refusals(void)
{
    struct ipc_handler h = {NULL, on_noop_request};
    struct ipc_server *s = NULL, *s2 = NULL;
    struct ckpt_err err;
    struct sockaddr_un addr;
    char bad_dir[256], path[300];
    int fd;

    snprintf(bad_dir, sizeof(bad_dir), "%s/open", tmp_dir);
    mkdir(bad_dir, 0700);
    chmod(bad_dir, 0777);
    snprintf(path, sizeof(path), "%s/x.sock", bad_dir);
    CHECK_INT(ipc_server_start(&s, &loop, path, &h, &err), -EPERM);
    CHECK(strstr(err.msg, "writable") != NULL);
    rmdir(bad_dir);

    /* A stale socket (bound, never listened, closed) is replaced. */
    snprintf(path, sizeof(path), "%s/stale.sock", tmp_dir);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    set_addr(&addr, path);
    CHECK_INT(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    close(fd);
    CHECK_INT(ipc_server_start(&s, &loop, path, &h, &err), 0);
    /* A live one is not. */
    CHECK_INT(ipc_server_start(&s2, &loop, path, &h, &err), -EADDRINUSE);
    ipc_server_close(s, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(access(path, F_OK) < 0); /* the server removed its socket */

    /* Not a socket at all. */
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    close(fd);
    CHECK_INT(ipc_server_start(&s, &loop, path, &h, &err), -EEXIST);
    unlink(path);

    memset(path, 'a', sizeof(path) - 1);
    path[0] = '/';
    path[200] = '\0';
    CHECK_INT(ipc_server_start(&s, &loop, path, &h, &err), -ENAMETOOLONG);
}

static void check_proto_paths(void)
{
    char job[IPC_MAX_JOB + 1], path[256];

    ipc_proto_job_name(job, sizeof(job), "/runs/my run:1//");
    CHECK_STR(job, "my_run_1");
    ipc_proto_job_name(job, sizeof(job), "..");
    CHECK_STR(job, "_.");
    ipc_proto_job_name(job, sizeof(job), "/");
    CHECK_STR(job, "default");
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    CHECK_INT(ipc_proto_default_path(path, sizeof(path), "out/exp-1"), 0);
    CHECK_STR(path, "/run/user/1000/ckptpush/exp-1.sock");
    unsetenv("XDG_RUNTIME_DIR");
    CHECK_INT(ipc_proto_default_path(path, sizeof(path), "exp"), 0);
    {
        char want[64];
        snprintf(want, sizeof(want), "/tmp/ckptpush-%u/exp.sock", (unsigned)geteuid());
        CHECK_STR(path, want);
    }
}

/* Parses one request line (copied: the parser cuts a '\r' in place); returns its result and
 * leaves the answer in *p. */
static int parse_line(const char *line, struct ipc_parsed *p)
{
    char buf[1024];
    size_t len = strlen(line);
    int r;

    REQUIRE(len < sizeof(buf));
    memcpy(buf, line, len + 1);
    r = ipc_parse_request(buf, len, p);
    cJSON_Delete(p->json);
    p->json = NULL;
    return r;
}

static void check_push_message_rules(void)
{
    struct ipc_parsed p;
    char line[512], long_title[IPC_MAX_PUSH_MESSAGE + 2];

    CHECK_INT(parse_line("{\"v\":1,\"type\":\"push\",\"path\":\"c\",\"message\":"
                         "\"Training in progress, epoch 2\"}",
                         &p),
              1);
    CHECK_STR(p.type, IPC_TYPE_PUSH);
    /* null is "not given", as for every optional field */
    CHECK_INT(parse_line("{\"v\":1,\"type\":\"push\",\"path\":\"c\",\"message\":null}", &p), 1);
    /* UTF-8 beyond ASCII is a title like any other */
    CHECK_INT(parse_line("{\"v\":1,\"type\":\"push\",\"path\":\"c\",\"message\":\"\u00e9poque "
                         "\xc3\xa9\"}",
                         &p),
              1);

    CHECK_INT(parse_line("{\"v\":1,\"id\":3,\"type\":\"push\",\"path\":\"c\",\"message\":7}", &p),
              -EINVAL);
    CHECK_STR(p.code, IPC_ERR_BAD_REQUEST);
    CHECK(strstr(p.message, "field 'message' of 'push' must be a string") != NULL);
    CHECK(p.id != NULL);

    CHECK_INT(parse_line("{\"v\":1,\"type\":\"push\",\"path\":\"c\",\"message\":\"\"}", &p),
              -EINVAL);
    CHECK_STR(p.code, IPC_ERR_BAD_REQUEST);
    CHECK(strstr(p.message, "'message'") != NULL && strstr(p.message, "empty") != NULL);

    memset(long_title, 'x', IPC_MAX_PUSH_MESSAGE);
    long_title[IPC_MAX_PUSH_MESSAGE] = '\0';
    snprintf(line, sizeof(line), "{\"v\":1,\"type\":\"push\",\"path\":\"c\",\"message\":\"%s\"}",
             long_title);
    CHECK_INT(parse_line(line, &p), 1);
    strcat(long_title, "x");
    snprintf(line, sizeof(line), "{\"v\":1,\"type\":\"push\",\"path\":\"c\",\"message\":\"%s\"}",
             long_title);
    CHECK_INT(parse_line(line, &p), -EINVAL);
    CHECK_STR(p.code, IPC_ERR_BAD_REQUEST);
    CHECK(strstr(p.message, "'message'") != NULL && strstr(p.message, "at most 200 bytes") != NULL);

    CHECK_INT(parse_line("{\"v\":1,\"type\":\"push\",\"path\":\"c\",\"message\":\"a\\nb\"}", &p),
              -EINVAL);
    CHECK_STR(p.code, IPC_ERR_BAD_REQUEST);
    CHECK(strstr(p.message, "'message'") != NULL && strstr(p.message, "control") != NULL);
    CHECK_INT(
        parse_line("{\"v\":1,\"type\":\"push\",\"path\":\"c\",\"message\":\"a\\u001fb\"}", &p),
        -EINVAL);
    CHECK(strstr(p.message, "0x1f") != NULL);
    CHECK_INT(parse_line("{\"v\":1,\"type\":\"push\",\"path\":\"c\",\"message\":\"a\\u007f\"}", &p),
              -EINVAL);
}

/* cJSON ends a string at an escaped NUL: the request must be refused, not acted on cut short,
 * whichever string holds it. An escaped backslash before "u0000" is no NUL. */
static void check_escaped_nul(void)
{
    struct ipc_parsed p;

    CHECK_INT(parse_line("{\"v\":1,\"id\":9,\"type\":\"push\",\"path\":\"c\",\"message\":"
                         "\"ok\\u0000evil\"}",
                         &p),
              -EINVAL);
    CHECK_STR(p.code, IPC_ERR_BAD_REQUEST);
    CHECK(strstr(p.message, "\\u0000") != NULL && strstr(p.message, "NUL") != NULL);
    CHECK(p.id != NULL);
    CHECK_INT(parse_line("{\"v\":1,\"type\":\"push\",\"path\":\"ckpt\\u0000/../x\"}", &p), -EINVAL);
    CHECK_STR(p.code, IPC_ERR_BAD_REQUEST);
    CHECK_INT(parse_line("{\"v\":1,\"type\":\"stat\\u0000us\"}", &p), -EINVAL);
    CHECK_STR(p.code, IPC_ERR_BAD_REQUEST);
    CHECK_INT(parse_line("{\"v\":1,\"type\":\"final\",\"metrics\":{\"k\\u0000\":1}}", &p), -EINVAL);
    CHECK_STR(p.code, IPC_ERR_BAD_REQUEST);
    CHECK_INT(parse_line("{\"v\":1,\"type\":\"push\",\"path\":\"a\\\\u0000\"}", &p), 1);
    CHECK_INT(parse_line("{\"v\":1,\"type\":\"push\",\"path\":\"a\\u0001\"}", &p), 1);
}

int main(void)
{
    struct ipc_handler h = {NULL, on_request};
    struct ckpt_err err;
    struct stat st;
    uv_thread_t thread;
    char cmd[256];
    int r;

    /* No SIGPIPE handling here: the server must survive writing to closed clients itself. */
    /* Not $TMPDIR: socket paths must stay short. */
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/ckpt-ipc-XXXXXX");
    if (mkdtemp(tmp_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(sock_dir, sizeof(sock_dir), "%s/run", tmp_dir);
    snprintf(sock_path, sizeof(sock_path), "%s/job.sock", sock_dir);
    uv_loop_init(&loop);
    check_proto_paths();
    check_push_message_rules();
    check_escaped_nul();
    check_start_refusals();

    r = ipc_server_start(&server, &loop, sock_path, &h, &err);
    CHECK_INT(r, 0);
    if (r < 0) {
        fprintf(stderr, "ipc_server_start: %s\n", err.msg);
        return check_report("test_ipc");
    }
    CHECK_INT(stat(sock_dir, &st), 0);
    CHECK_INT(st.st_mode & 07777, 0700);
    CHECK_INT(stat(sock_path, &st), 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK_INT(st.st_mode & 07777, 0600);
    uv_timer_init(&loop, &flush_timer);

    uv_thread_create(&thread, client_main, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_thread_join(&thread);

    CHECK_INT(server_closed, 1);
    CHECK(access(sock_path, F_OK) < 0);
    CHECK_INT(uv_loop_close(&loop), 0);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove '%s'\n", tmp_dir);
    return check_report("test_ipc");
}
