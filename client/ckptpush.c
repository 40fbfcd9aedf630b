/* ckptpush.c - the command-line client of ckptpushd's control socket: one blocking Unix socket,
 * one request per command (watch: a subscription plus periodic status), results and --json on
 * stdout, errors on stderr, exit codes of ipc_proto.h. Single-threaded; no libuv.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ipc_proto.h"
#include "restore.h"

#define REPLY_TIMEOUT_MS 30000
#define FLUSH_GRACE_MS 5000
#define MAX_INPUT_FILE (16 * 1024 * 1024)

static const char *prog = "ckptpush";
static bool opt_json;

struct conn {
    const char *sock, *job; /* resolved and connected lazily: usage errors come first */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int fd;
    char *buf; /* IPC_MAX_REPLY + 1 bytes */
    size_t len;
    long next_id;
};

/* ---- small helpers ------------------------------------------------------------------------- */
static void errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errorf(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Control characters from the daemon (file names) must not drive the terminal. */
static void put_safe(FILE *f, const char *s)
{
    for (; s != NULL && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch == 0x7f)
            fprintf(f, "\\x%02x", ch);
        else
            fputc(ch, f);
    }
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *i = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(i) ? i->valuestring : NULL;
}

static bool jnum(const cJSON *o, const char *key, double *ret)
{
    const cJSON *i = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(i))
        return false;
    *ret = i->valuedouble;
    return true;
}

static bool parse_seconds(const char *s, double *ret)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < 0 || v > IPC_FLUSH_MAX_S)
        return false;
    *ret = v;
    return true;
}

static void human_bytes(char *dst, size_t size, double b)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;

    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(dst, size, "%.0f %s", b, units[u]);
    else
        snprintf(dst, size, "%.1f %s", b, units[u]);
}

static void human_duration(char *dst, size_t size, double s)
{
    long t = (long)(s + 0.5);

    if (t >= 3600)
        snprintf(dst, size, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60)
        snprintf(dst, size, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(dst, size, "%lds", t);
}

/* ---- the socket ---------------------------------------------------------------------------- */
static int only_socket_in(const char *dir, char *dst, size_t size)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    char names[512] = "";

    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".sock") != 0)
            continue;
        if (found == 0 && (size_t)snprintf(dst, size, "%s/", dir) + n < size)
            strcat(dst, e->d_name);
        else if (found == 0)
            dst[0] = '\0'; /* too long for a socket path: found, but not usable */
        if (strlen(names) + n + 3 < sizeof(names)) {
            strcat(names, found ? ", " : "");
            strncat(names, e->d_name, n - 5);
        }
        found++;
    }
    closedir(d);
    if (found > 1)
        errorf("several daemons are running (%s): pass --job NAME or --socket PATH", names);
    return found;
}

/* --socket, --job, $CKPTPUSH_SOCKET, $CKPTPUSH_JOB, else the one socket of this user. */
static int resolve_socket(const char *sock, const char *job, char *dst, size_t size)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int n;

    if (sock == NULL)
        sock = getenv("CKPTPUSH_SOCKET");
    if (sock != NULL && sock[0] != '\0') {
        snprintf(dst, size, "%s", sock);
        return IPC_EXIT_OK;
    }
    if (job == NULL)
        job = getenv("CKPTPUSH_JOB");
    if (job != NULL && job[0] != '\0') {
        if (ipc_proto_default_path(dst, size, job) < 0) {
            errorf("socket path for job '%s' is too long", job);
            return IPC_EXIT_USAGE;
        }
        return IPC_EXIT_OK;
    }
    if (ipc_proto_socket_dir(dir, sizeof(dir)) < 0) {
        errorf("socket directory path is too long");
        return IPC_EXIT_USAGE;
    }
    n = only_socket_in(dir, dst, size);
    if (n == 1)
        return IPC_EXIT_OK;
    if (n == 0)
        errorf("no daemon is running (no socket in '%s'); pass --socket PATH or --job NAME", dir);
    return n == 0 ? IPC_EXIT_NO_DAEMON : IPC_EXIT_USAGE;
}

static int conn_open(struct conn *c)
{
    const char *path = c->path;
    struct sockaddr_un addr;
    int r;

    if (c->fd >= 0)
        return IPC_EXIT_OK;
    r = resolve_socket(c->sock, c->job, c->path, sizeof(c->path));
    if (r != IPC_EXIT_OK)
        return r;
    if (strlen(path) >= sizeof(addr.sun_path)) {
        errorf("socket path '%s' is too long", path);
        return IPC_EXIT_USAGE;
    }
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path) + 1);
    c->buf = malloc(IPC_MAX_REPLY + 1);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->buf == NULL || c->fd < 0) {
        errorf("cannot create a socket: %s", strerror(errno));
        return IPC_EXIT_FAILED;
    }
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int e = errno;
        if (e == ENOENT || e == ECONNREFUSED)
            errorf("no daemon is listening on '%s'", path);
        else
            errorf("cannot connect to '%s': %s", path, strerror(e));
        return IPC_EXIT_NO_DAEMON;
    }
    return IPC_EXIT_OK;
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    c->fd = -1;
    c->buf = NULL;
}

/* Next line as JSON. Returns 0, or an exit code (timeout: deadline_ms passed; <0 is none). */
static int conn_read(struct conn *c, long long deadline_ms, cJSON **ret)
{
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - c->buf);
            cJSON *j;
            *nl = '\0';
            j = cJSON_Parse(c->buf);
            memmove(c->buf, nl + 1, c->len - n - 1);
            c->len -= n + 1;
            if (!cJSON_IsObject(j)) {
                cJSON_Delete(j);
                errorf("daemon sent a line that is not a JSON object");
                return IPC_EXIT_PROTOCOL;
            }
            *ret = j;
            return 0;
        }
        if (c->len >= IPC_MAX_REPLY) {
            errorf("daemon sent a line longer than %d bytes", IPC_MAX_REPLY);
            return IPC_EXIT_PROTOCOL;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int timeout = -1;
        if (deadline_ms >= 0) {
            long long left = deadline_ms - now_ms();
            timeout = left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
        }
        int r = poll(&pfd, 1, timeout);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            return IPC_EXIT_TIMEOUT;
        ssize_t got = recv(c->fd, c->buf + c->len, IPC_MAX_REPLY - c->len, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            errorf("daemon closed the connection%s%s", got < 0 ? ": " : "",
                   got < 0 ? strerror(errno) : "");
            return IPC_EXIT_PROTOCOL;
        }
        c->len += (size_t)got;
    }
}

/* Sends {"v":1,"id":N,"type":type,...fields}; fields consumed. *ret_id is the id used. */
static int conn_send(struct conn *c, const char *type, cJSON *fields, long *ret_id)
{
    cJSON *o = fields != NULL ? fields : cJSON_CreateObject();
    char *text;
    size_t len, off = 0;
    int r = conn_open(c);

    if (r != IPC_EXIT_OK) {
        cJSON_Delete(o);
        return r;
    }
    cJSON_AddNumberToObject(o, "v", IPC_PROTO_VERSION);
    cJSON_AddNumberToObject(o, "id", (double)++c->next_id);
    cJSON_AddStringToObject(o, "type", type);
    text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (text == NULL) {
        errorf("out of memory");
        return IPC_EXIT_FAILED;
    }
    len = strlen(text);
    if (len + 1 > IPC_MAX_MESSAGE) {
        errorf("request is longer than %d bytes (metrics or hyperparameters too large?)",
               IPC_MAX_MESSAGE - 1);
        cJSON_free(text);
        return IPC_EXIT_USAGE;
    }
    text[len] = '\n'; /* cJSON allocated len + 1 bytes: the NUL becomes the newline */
    while (off < len + 1) {
        ssize_t n = send(c->fd, text + off, len + 1 - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            errorf("cannot send to the daemon: %s", strerror(errno));
            cJSON_free(text);
            return IPC_EXIT_PROTOCOL;
        }
        off += (size_t)n;
    }
    cJSON_free(text);
    *ret_id = c->next_id;
    return IPC_EXIT_OK;
}

static int exit_for_error(const char *code)
{
    if (code == NULL)
        return IPC_EXIT_PROTOCOL;
    if (strcmp(code, IPC_ERR_FAILED) == 0 || strcmp(code, IPC_ERR_SHUTTING_DOWN) == 0)
        return IPC_EXIT_FAILED;
    if (strcmp(code, IPC_ERR_TIMEOUT) == 0)
        return IPC_EXIT_TIMEOUT;
    if (strcmp(code, IPC_ERR_FORBIDDEN) == 0 || strcmp(code, IPC_ERR_BUSY) == 0)
        return IPC_EXIT_NO_DAEMON;
    return IPC_EXIT_PROTOCOL;
}

/* Reports an error reply on stderr (and stdout with --json); returns its exit code. */
static int report_error(const cJSON *reply)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(reply, "error");
    const char *code = jstr(e, "code"), *msg = jstr(e, "message");

    if (opt_json) {
        char *text = cJSON_Print(reply);
        if (text != NULL)
            printf("%s\n", text);
        cJSON_free(text);
    }
    fprintf(stderr, "%s: ", prog);
    put_safe(stderr, msg != NULL ? msg : "daemon refused the request");
    fprintf(stderr, " (%s)\n", code != NULL ? code : "no error code");
    return exit_for_error(code);
}

/* One request, its reply (events in between are skipped). 0 with *ret set when ok is true, else
 * the exit code (errors already reported). timeout_ms < 0: wait forever. */
static int call(struct conn *c, const char *type, cJSON *fields, long timeout_ms, cJSON **ret)
{
    long long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    long id;
    int r;

    r = conn_send(c, type, fields, &id);
    if (r != 0)
        return r;
    for (;;) {
        cJSON *j = NULL;
        const cJSON *rid, *ok;
        r = conn_read(c, deadline, &j);
        if (r == IPC_EXIT_TIMEOUT) {
            errorf("no answer to '%s' within %.0f s", type, timeout_ms / 1000.0);
            return r;
        }
        if (r != 0)
            return r;
        if (cJSON_GetObjectItemCaseSensitive(j, "event") != NULL) {
            cJSON_Delete(j);
            continue;
        }
        rid = cJSON_GetObjectItemCaseSensitive(j, "id");
        ok = cJSON_GetObjectItemCaseSensitive(j, "ok");
        /* id null: the server answered before reading us (forbidden, busy, bad line). */
        if (!(cJSON_IsNumber(rid) && rid->valuedouble == (double)id) && !cJSON_IsNull(rid)) {
            cJSON_Delete(j);
            continue;
        }
        if (cJSON_IsTrue(ok)) {
            *ret = j;
            return 0;
        }
        r = report_error(j);
        cJSON_Delete(j);
        return r;
    }
}

static void print_json(const cJSON *j)
{
    char *text = cJSON_Print(j);
    if (text != NULL)
        printf("%s\n", text);
    cJSON_free(text);
}

/* ---- status -------------------------------------------------------------------------------- */
static bool state_final(const char *state)
{
    static const char *const done[] = {"committed",  "failed", "skipped",
                                       "superseded", "done",   "abandoned"};
    if (state == NULL)
        return true;
    for (size_t i = 0; i < sizeof(done) / sizeof(done[0]); i++)
        if (strcmp(state, done[i]) == 0)
            return true;
    return false;
}

/* Nothing left to do: every checkpoint reached a final state. */
static bool status_idle(const cJSON *st)
{
    const char *state = jstr(cJSON_GetObjectItemCaseSensitive(st, "daemon"), "state");
    const cJSON *ck;

    /* "pushing", "starting", "draining": work is under way even if no item shows it yet. */
    if (state != NULL && strcmp(state, "idle") != 0 && strcmp(state, "paused") != 0)
        return false;
    cJSON_ArrayForEach(ck, cJSON_GetObjectItemCaseSensitive(st, "checkpoints"))
    {
        if (!state_final(jstr(ck, "state")))
            return false;
    }
    return true;
}

/* "2,3" from a list of ranks. */
static void put_ranks(FILE *f, const cJSON *list)
{
    const cJSON *r;
    bool first = true;
    cJSON_ArrayForEach(r, list)
    {
        if (cJSON_IsNumber(r)) {
            fprintf(f, "%s%.0f", first ? "" : ",", r->valuedouble);
            first = false;
        }
    }
    if (first)
        fputs("none", f);
}

/* Several nodes: this node's rank; on rank 0, the checkpoints waiting for nodes. */
static void print_nodes(FILE *f, const cJSON *d)
{
    const cJSON *node = cJSON_GetObjectItemCaseSensitive(d, "node");
    const cJSON *coord = cJSON_GetObjectItemCaseSensitive(d, "coordinator"), *p;
    double rank, nodes;

    if (!jnum(node, "rank", &rank) || !jnum(node, "nodes", &nodes))
        return;
    fprintf(f, "node %.0f of %.0f", rank, nodes);
    if (coord != NULL) {
        fputs(" (coordinator; connected: ", f);
        put_ranks(f, cJSON_GetObjectItemCaseSensitive(coord, "connected"));
        fputc(')', f);
    }
    fputc('\n', f);
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(coord, "pending"))
    {
        double waited = 0;
        jnum(p, "waited_s", &waited);
        fputs("waiting: ", f);
        put_safe(f, jstr(p, "ckpt") ? jstr(p, "ckpt") : "?");
        fputs(" missing node(s) ", f);
        put_ranks(f, cJSON_GetObjectItemCaseSensitive(p, "missing"));
        fputs(", reported ", f);
        put_ranks(f, cJSON_GetObjectItemCaseSensitive(p, "reported"));
        fprintf(f, " (%.0f s)\n", waited);
    }
}

static void print_status(FILE *f, const cJSON *st, bool tty)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(st, "daemon");
    const cJSON *cks = cJSON_GetObjectItemCaseSensitive(st, "checkpoints"), *ck;
    char a[32], b[32], buf[96];
    double v;

    fputs("daemon: ", f);
    put_safe(f, jstr(d, "state") ? jstr(d, "state") : "?");
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "paused")))
        fputs(" (paused)", f);
    if (jstr(d, "repo") && jstr(d, "repo")[0] != '\0') {
        fputs("  repo ", f);
        put_safe(f, jstr(d, "repo"));
    }
    if (jstr(d, "bucket") && jstr(d, "bucket")[0] != '\0') {
        fputs("  bucket ", f);
        put_safe(f, jstr(d, "bucket"));
    }
    if (jstr(d, "watch")) {
        fputs("  watch '", f);
        put_safe(f, jstr(d, "watch"));
        fputc('\'', f);
    }
    if (jnum(d, "uptime_s", &v)) {
        human_duration(a, sizeof(a), v);
        fprintf(f, "  up %s", a);
    }
    if (jnum(d, "copies_waiting", &v) && v > 0) {
        double held = 0, max = 0;
        jnum(d, "staging_bytes", &held);
        jnum(d, "staging_max", &max);
        human_bytes(a, sizeof(a), held);
        human_bytes(b, sizeof(b), max);
        fprintf(f, "  %.0f cop%s waiting (staging %s of %s)", v, v == 1 ? "y" : "ies", a,
                max > 0 ? b : "no max");
    }
    if (jnum(d, "files_skipped", &v) && v > 0)
        fprintf(f, "  %.0f file%s skipped (see the log)", v, v == 1 ? "" : "s");
    fputc('\n', f);
    print_nodes(f, d);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "root_missing")))
        fputs("the watched directory is missing (deleted or moved away): waiting for it to be "
              "made again\n",
              f);
    if (cJSON_GetArraySize(cks) == 0) {
        fputs("no checkpoints yet\n", f);
        return;
    }
    fprintf(f, "%-24s %-10s %-*s %-21s %-12s %-8s %s\n", "CHECKPOINT", "STATE", tty ? 27 : 5,
            "DONE", "BYTES", "RATE", "ETA", "ERROR");
    cJSON_ArrayForEach(ck, cks)
    {
        double total = 0, done = 0, rate = 0, eta = -1;
        const char *name = jstr(ck, "name"), *state = jstr(ck, "state");
        int pct;
        jnum(ck, "bytes_total", &total);
        jnum(ck, "bytes_done", &done);
        {
            /* Xet: chunks the Hub already had are done without being sent */
            double deduped = 0;
            if (jnum(ck, "xet_bytes_deduped", &deduped))
                done += deduped;
        }
        pct = total > 0 ? (int)(100.0 * done / total) : 0;
        if (state != NULL && strcmp(state, "committed") == 0)
            pct = 100;
        if (pct > 100)
            pct = 100;
        {
            char nm[64] = "";
            snprintf(nm, sizeof(nm), "%s", name != NULL && name[0] ? name : "(final)");
            for (char *p = nm; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                    *p = '?';
            fprintf(f, "%-24s %-10.10s ", nm, state ? state : "?");
        }
        if (tty) {
            char bar[21];
            int fill = pct / 5;
            for (int i = 0; i < 20; i++)
                bar[i] = i < fill ? '#' : '-';
            bar[20] = '\0';
            fprintf(f, "[%s] %3d%% ", bar, pct);
        } else {
            fprintf(f, "%4d%% ", pct);
        }
        human_bytes(a, sizeof(a), done);
        human_bytes(b, sizeof(b), total);
        snprintf(buf, sizeof(buf), "%s/%s", a, b);
        fprintf(f, "%-21s ", buf);
        if (jnum(ck, "rate_bps", &rate) && rate > 0) {
            human_bytes(a, sizeof(a), rate);
            snprintf(buf, sizeof(buf), "%s/s", a);
        } else {
            snprintf(buf, sizeof(buf), "-");
        }
        fprintf(f, "%-12s ", buf);
        if (jnum(ck, "eta_s", &eta) && eta >= 0 && !state_final(state))
            human_duration(buf, sizeof(buf), eta);
        else
            snprintf(buf, sizeof(buf), "-");
        fprintf(f, "%-8s ", buf);
        put_safe(f, jstr(ck, "error") ? jstr(ck, "error") : "");
        fputc('\n', f);
    }
}

/* ---- commands ------------------------------------------------------------------------------ */
struct command {
    const char *name;
    const char *usage;
    const char *help;
    int (*run)(struct conn *c, int argc, char **argv);
};

static const struct command *current;

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: %s %s\n", prog, current->usage);
    return IPC_EXIT_USAGE;
}

static int simple(struct conn *c, const char *type, const char *done_text)
{
    cJSON *r = NULL;
    int code = call(c, type, NULL, REPLY_TIMEOUT_MS, &r);

    if (code != 0)
        return code;
    if (opt_json)
        print_json(r);
    else
        printf("%s\n", done_text);
    cJSON_Delete(r);
    return IPC_EXIT_OK;
}

static int cmd_status(struct conn *c, int argc, char **argv)
{
    cJSON *r = NULL;
    int code;

    (void)argv;
    if (argc > 0)
        return usage_error("unexpected argument '%s'", argv[0]);
    code = call(c, IPC_TYPE_STATUS, NULL, REPLY_TIMEOUT_MS, &r);
    if (code != 0)
        return code;
    if (opt_json)
        print_json(r);
    else
        print_status(stdout, r, isatty(STDOUT_FILENO));
    cJSON_Delete(r);
    return IPC_EXIT_OK;
}

static void print_event(const cJSON *ev)
{
    const cJSON *item;
    bool first = true;

    cJSON_ArrayForEach(item, ev)
    {
        if (item->string == NULL || strcmp(item->string, "v") == 0)
            continue;
        if (!first)
            fputc(' ', stdout);
        first = false;
        if (strcmp(item->string, "event") == 0 && cJSON_IsString(item)) {
            put_safe(stdout, item->valuestring);
            continue;
        }
        put_safe(stdout, item->string);
        fputc('=', stdout);
        if (cJSON_IsString(item)) {
            fputc('\'', stdout);
            put_safe(stdout, item->valuestring);
            fputc('\'', stdout);
        } else {
            char *t = cJSON_PrintUnformatted(item);
            put_safe(stdout, t);
            cJSON_free(t);
        }
    }
    fputc('\n', stdout);
}

/* Subscribes, asks status every interval, redraws (tty) or prints events as lines, until every
 * checkpoint reached a final state. */
static int cmd_watch(struct conn *c, int argc, char **argv)
{
    double interval = 1.0;
    bool tty = isatty(STDOUT_FILENO) && !opt_json;
    long status_id = 0, id;
    long long next_status = 0;
    cJSON *r = NULL;
    int code;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            if (!parse_seconds(argv[++i], &interval) || interval < 0.05)
                return usage_error("--interval wants seconds (at least 0.05), not '%s'", argv[i]);
        } else {
            return usage_error("unexpected argument '%s'", argv[i]);
        }
    }
    code = call(c, IPC_TYPE_SUBSCRIBE, NULL, REPLY_TIMEOUT_MS, &r);
    if (code != 0)
        return code;
    cJSON_Delete(r);
    for (;;) {
        cJSON *j = NULL;
        long long t = now_ms();
        if (status_id == 0 && t >= next_status) {
            code = conn_send(c, IPC_TYPE_STATUS, NULL, &id);
            if (code != 0)
                return code;
            status_id = id;
        }
        code = conn_read(c, status_id != 0 ? t + REPLY_TIMEOUT_MS : next_status, &j);
        if (code == IPC_EXIT_TIMEOUT && status_id == 0)
            continue;
        if (code != 0) {
            if (code == IPC_EXIT_TIMEOUT)
                errorf("no answer to 'status' within %d s", REPLY_TIMEOUT_MS / 1000);
            return code;
        }
        if (cJSON_GetObjectItemCaseSensitive(j, "event") != NULL) {
            if (opt_json) {
                char *text = cJSON_PrintUnformatted(j);
                printf("%s\n", text);
                cJSON_free(text);
            } else if (!tty) {
                print_event(j);
            }
            fflush(stdout);
            cJSON_Delete(j);
            continue;
        }
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ok"))) {
            code = report_error(j);
            cJSON_Delete(j);
            return code;
        }
        status_id = 0;
        next_status = now_ms() + (long long)(interval * 1000);
        if (tty) {
            fputs("\033[H\033[2J", stdout);
            print_status(stdout, j, true);
        } else if (opt_json) {
            char *text = cJSON_PrintUnformatted(j);
            printf("%s\n", text);
            cJSON_free(text);
        }
        fflush(stdout);
        if (status_idle(j)) {
            if (!tty && !opt_json)
                print_status(stdout, j, false);
            cJSON_Delete(j);
            return IPC_EXIT_OK;
        }
        cJSON_Delete(j);
    }
}

static int cmd_push(struct conn *c, int argc, char **argv)
{
    char path[PATH_MAX], why[160];
    const char *arg = NULL, *message = NULL;
    cJSON *f, *r = NULL;
    int code;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--message") == 0) {
            if (i + 1 >= argc)
                return usage_error("--message needs the commit title");
            message = argv[++i];
        } else if (arg == NULL) {
            arg = argv[i];
        } else {
            return usage_error("push takes one PATH");
        }
    }
    if (arg == NULL)
        return usage_error("push needs a PATH");
    /* The daemon's rule, checked before connecting: a typo costs no round trip. */
    if (message != NULL && ipc_proto_check_push_message(message, why, sizeof(why)) < 0)
        return usage_error("--message %s", why);
    /* Relative to where the user stands, not to the daemon's watched root; a missing path is
     * left for the daemon to report. */
    if (realpath(arg, path) != NULL) {
        /* Resolved here: the daemon may run elsewhere in the tree. */
    } else if (arg[0] == '/') {
        snprintf(path, sizeof(path), "%s", arg);
    } else {
        char cwd[PATH_MAX];
        if (getcwd(cwd, sizeof(cwd)) == NULL) {
            errorf("cannot get the current directory: %s", strerror(errno));
            return IPC_EXIT_FAILED;
        }
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", cwd, arg) >= sizeof(path)) {
            errorf("path '%s' is too long", arg);
            return IPC_EXIT_USAGE;
        }
    }
    f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "path", path);
    if (message != NULL)
        cJSON_AddStringToObject(f, "message", message);
    code = call(c, IPC_TYPE_PUSH, f, REPLY_TIMEOUT_MS, &r);
    if (code != 0)
        return code;
    if (opt_json) {
        print_json(r);
    } else {
        fputs("queued '", stdout);
        put_safe(stdout, path);
        fputs("'\n", stdout);
    }
    cJSON_Delete(r);
    return IPC_EXIT_OK;
}

static cJSON *read_json_object(const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
    char *buf;
    size_t n;
    cJSON *j;

    if (f == NULL) {
        errorf("cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    buf = malloc(MAX_INPUT_FILE + 1);
    n = buf != NULL ? fread(buf, 1, MAX_INPUT_FILE + 1, f) : 0;
    if (f != stdin)
        fclose(f);
    if (buf == NULL || n > MAX_INPUT_FILE) {
        errorf("'%s' is larger than %d bytes", path, MAX_INPUT_FILE);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    j = cJSON_Parse(buf);
    free(buf);
    if (!cJSON_IsObject(j)) {
        errorf("'%s' does not hold a JSON object", path);
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static int cmd_final(struct conn *c, int argc, char **argv)
{
    bool wait = false;
    double timeout = -1;
    cJSON *f = cJSON_CreateObject(), *r = NULL, *obj;
    const char *commit;
    int code;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--wait") == 0) {
            wait = true;
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            if (!parse_seconds(argv[++i], &timeout)) {
                cJSON_Delete(f);
                return usage_error("--timeout wants seconds, not '%s'", argv[i]);
            }
        } else if ((strcmp(argv[i], "--metrics-json") == 0 ||
                    strcmp(argv[i], "--hparams-json") == 0) &&
                   i + 1 < argc) {
            const char *key = argv[i][2] == 'm' ? "metrics" : "hparams";
            obj = read_json_object(argv[++i]);
            if (obj == NULL) {
                cJSON_Delete(f);
                return IPC_EXIT_USAGE;
            }
            cJSON_DeleteItemFromObject(f, key);
            cJSON_AddItemToObject(f, key, obj);
        } else {
            cJSON_Delete(f);
            return usage_error("unexpected argument '%s'", argv[i]);
        }
    }
    cJSON_AddBoolToObject(f, "wait", wait);
    code = call(c, IPC_TYPE_FINAL, f,
                timeout >= 0 ? (long)(timeout * 1000) : (wait ? -1 : REPLY_TIMEOUT_MS), &r);
    if (code != 0)
        return code;
    commit = jstr(r, "commit");
    if (opt_json)
        print_json(r);
    else if (!wait)
        printf("final push started\n");
    else if (commit != NULL)
        printf("committed %s\n", commit);
    else
        printf("committed\n");
    cJSON_Delete(r);
    return IPC_EXIT_OK;
}

static int cmd_flush(struct conn *c, int argc, char **argv)
{
    double timeout = -1;
    cJSON *f = cJSON_CreateObject(), *r = NULL;
    int code;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            if (!parse_seconds(argv[++i], &timeout)) {
                cJSON_Delete(f);
                return usage_error("--timeout wants seconds, not '%s'", argv[i]);
            }
        } else {
            cJSON_Delete(f);
            return usage_error("unexpected argument '%s'", argv[i]);
        }
    }
    if (timeout >= 0)
        cJSON_AddNumberToObject(f, "timeout_s", timeout);
    /* The daemon enforces the deadline; we only guard against a daemon that never answers. */
    code = call(c, IPC_TYPE_FLUSH, f,
                (long)((timeout >= 0 ? timeout : IPC_FLUSH_DEFAULT_S) * 1000) + FLUSH_GRACE_MS, &r);
    if (code != 0)
        return code;
    if (opt_json)
        print_json(r);
    else
        printf("flushed\n");
    cJSON_Delete(r);
    return IPC_EXIT_OK;
}

static int no_args(int argc, char **argv)
{
    return argc > 0 ? usage_error("unexpected argument '%s'", argv[0]) : 0;
}

static int cmd_pause(struct conn *c, int argc, char **argv)
{
    return no_args(argc, argv) ? IPC_EXIT_USAGE : simple(c, IPC_TYPE_PAUSE, "paused");
}

static int cmd_resume(struct conn *c, int argc, char **argv)
{
    return no_args(argc, argv) ? IPC_EXIT_USAGE : simple(c, IPC_TYPE_RESUME, "resumed");
}

static int cmd_shutdown(struct conn *c, int argc, char **argv)
{
    return no_args(argc, argv) ? IPC_EXIT_USAGE
                               : simple(c, IPC_TYPE_SHUTDOWN, "daemon is shutting down");
}

static int cmd_restore(struct conn *c, int argc, char **argv)
{
    (void)c; /* talks to the Hub, not to a daemon */
    return restore_command(argc, argv, current->usage);
}

_Static_assert(IPC_MAX_PUSH_MESSAGE == 200, "push's help text names the limit");

static const struct command commands[] = {
    {"status", "status [--json]",
     "Show every checkpoint: state, progress, bytes, rate, ETA, last error. Progress bars when\n"
     "stdout is a terminal; --json prints the daemon's answer as is.",
     cmd_status},
    {"watch", "watch [--interval S] [--json]",
     "Follow the daemon live until every checkpoint is committed or failed: a redrawn table on\n"
     "a terminal, one line per event otherwise (--json: one JSON object per line).",
     cmd_watch},
    {"push", "push PATH [--message TEXT] [--json]",
     "Seal the file or directory PATH (relative to the current directory) and push it now, even\n"
     "when it lies outside the watched directory. --message gives its commit the title TEXT\n"
     "(one line, at most 200 bytes) instead of the daemon's; too late once it is committed.",
     cmd_push},
    {"final", "final [--wait] [--timeout S] [--metrics-json FILE] [--hparams-json FILE] [--json]",
     "Training ended: seal what is complete and push the end-of-training commit. FILEs hold\n"
     "JSON objects for the model card ('-' reads stdin). --wait answers once it is committed\n"
     "(exit 0) or failed (exit 1); --timeout gives up waiting after S seconds (exit 5).",
     cmd_final},
    {"pause", "pause [--json]", "Stop starting uploads; what is running finishes.", cmd_pause},
    {"resume", "resume [--json]", "Undo pause.", cmd_resume},
    {"flush", "flush [--timeout S] [--json]",
     "Wait until every sealed checkpoint is committed or failed; after S seconds (default 600)\n"
     "give up with exit 5.",
     cmd_flush},
    {"shutdown", "shutdown [--json]", "Ask the daemon to drain and exit.", cmd_shutdown},
    {"restore",
     "restore --repo ID [--revision R] [--endpoint URL] [--token-path FILE] [--missing-ok] DIR",
     "Download the newest complete checkpoint of the Hub repo ID (last-checkpoint/, else the\n"
     "highest checkpoint-N/, else the root's model files when their trainer_state.json says\n"
     "the step) into DIR/checkpoint-<step>, verified, through DIR/.ckptpush-restore-<step>/;\n"
     "a second run continues an interrupted one. A newer DIR/checkpoint-M is kept (exit 0).\n"
     "--missing-ok: a repo or revision not found, or no checkpoint in it yet, is exit 0 (a\n"
     "job's first start). Needs no daemon. Exit 1 also for not found, a refused token, no\n"
     "checkpoint or a hash mismatch; 3 the Hub cannot be reached; 4 it answered garbage.",
     cmd_restore},
};

static void print_usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--socket PATH | --job NAME] COMMAND [ARGS]\n"
            "\n"
            "Talk to a running ckptpushd, or restore a checkpoint from the Hub.\n"
            "\n"
            "commands:\n",
            prog);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %s\n", commands[i].usage);
    fprintf(f,
            "\n"
            "options:\n"
            "  --socket PATH  the daemon's control socket (env CKPTPUSH_SOCKET)\n"
            "  --job NAME     the daemon's job name (env CKPTPUSH_JOB); default socket\n"
            "                 $XDG_RUNTIME_DIR/ckptpush/NAME.sock or /tmp/ckptpush-UID/NAME.sock;\n"
            "                 without either, the only socket there is used\n"
            "  --json         print the daemon's answers as JSON\n"
            "  --help         this text; COMMAND --help for a command\n"
            "  --version      print the version\n"
            "\n"
            "exit codes: 0 ok, 1 the operation failed, 2 usage, 3 daemon not running or not\n"
            "reachable, 4 protocol error, 5 timeout\n");
}

int main(int argc, char **argv)
{
    const char *sock = NULL, *job = NULL;
    struct conn c = {.fd = -1};
    bool want_help = false;
    int i, code, rest_argc = 0;
    char **rest;

    signal(SIGPIPE, SIG_IGN);
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_usage(stdout);
            return IPC_EXIT_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("ckptpush %s (protocol %d)\n", CKPT_VERSION, IPC_PROTO_VERSION);
            return IPC_EXIT_OK;
        } else if (strcmp(argv[i], "--json") == 0) {
            opt_json = true;
        } else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
            sock = argv[++i];
        } else if (strcmp(argv[i], "--job") == 0 && i + 1 < argc) {
            job = argv[++i];
        } else {
            fprintf(stderr, "%s: unknown option '%s'\n", prog, argv[i]);
            print_usage(stderr);
            return IPC_EXIT_USAGE;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "%s: no command given\n", prog);
        print_usage(stderr);
        return IPC_EXIT_USAGE;
    }
    if (strcmp(argv[i], "help") == 0) {
        if (i + 1 >= argc) {
            print_usage(stdout);
            return IPC_EXIT_OK;
        }
        i++;
        want_help = true;
    }
    for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
        if (strcmp(argv[i], commands[k].name) == 0)
            current = &commands[k];
    if (current == NULL) {
        fprintf(stderr, "%s: unknown command '%s'\n", prog, argv[i]);
        print_usage(stderr);
        return IPC_EXIT_USAGE;
    }
    /* Command arguments: --help and --json anywhere, the rest to the command. */
    rest = calloc((size_t)argc, sizeof(*rest));
    for (i = i + 1; i <= argc; i++) {
        if (i == argc) {
            if (!want_help)
                break;
        }
        if (i == argc || strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s [--socket PATH | --job NAME] %s\n\n%s\n", prog, current->usage,
                   current->help);
            free(rest);
            return IPC_EXIT_OK;
        }
        if (strcmp(argv[i], "--json") == 0)
            opt_json = true;
        else
            rest[rest_argc++] = argv[i];
    }
    c.sock = sock;
    c.job = job;
    code = current->run(&c, rest_argc, rest);
    conn_close(&c);
    free(rest);
    fflush(stdout);
    return code;
}
