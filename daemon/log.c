/* log.c - structured, escaped log lines on one file descriptor. */

#include "log.h"

#include <stddef.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_INFO;
static enum log_format current_format = LOG_FORMAT_KV;
static int journal_mode;
static int log_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
    current_level = level;
}

enum log_level log_get_level(void)
{
    return current_level;
}

int log_parse_level(const char *name, enum log_level *ret_level)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *ret_level = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_set_fd(int fd)
{
    log_fd = fd;
}

int log_parse_format(const char *name, enum log_format *ret_format)
{
    if (strcmp(name, "kv") == 0)
        *ret_format = LOG_FORMAT_KV;
    else if (strcmp(name, "json") == 0)
        *ret_format = LOG_FORMAT_JSON;
    else
        return -1;
    return 0;
}

void log_set_format(enum log_format format)
{
    current_format = format;
}

void log_set_journal(int journal)
{
    journal_mode = journal;
}

int log_fd_is_journal(int fd)
{
    const char *env = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    /* systemd sets it for the service's own stderr: a child with a redirected stderr inherits
     * the variable, so compare the stream itself. */
    if (env == NULL || sscanf(env, "%llu:%llu", &dev, &ino) != 2 || fstat(fd, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

char *log_escape(char *dst, size_t dst_size, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    size_t out = 0;

    if (dst_size == 0)
        return dst;
    for (const unsigned char *p = (const unsigned char *)src; *p != '\0'; p++) {
        if (*p >= 0x20 && *p < 0x7f && *p != '\\') {
            if (out + 1 >= dst_size)
                break;
            dst[out++] = (char)*p;
        } else {
            if (out + 4 >= dst_size)
                break;
            dst[out++] = '\\';
            dst[out++] = 'x';
            dst[out++] = hex[*p >> 4];
            dst[out++] = hex[*p & 0xf];
        }
    }
    dst[out] = '\0';
    return dst;
}

/* Appends src to dst[*out..size) with JSON string escaping; src is already log-escaped, so only
 * quote and backslash remain to be handled. Stops short rather than overflow. */
static void json_append(char *dst, size_t size, size_t *out, const char *src, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        int esc = src[i] == '"' || src[i] == '\\';
        if (*out + 2 + (size_t)esc >= size)
            return;
        if (esc)
            dst[(*out)++] = '\\';
        dst[(*out)++] = src[i];
    }
}

static int is_number(const char *s, size_t len)
{
    size_t i = s[0] == '-' ? 1 : 0, digits = 0, dots = 0;

    if (len > 18) /* keep integers exact for JSON readers using doubles */
        return 0;
    for (; i < len; i++) {
        if (s[i] == '.' && digits > 0 && dots == 0)
            dots++;
        else if (s[i] >= '0' && s[i] <= '9')
            digits++;
        else
            return 0;
    }
    return digits > 0 && s[len - 1] != '.' && !(len > 1 && s[0] == '0' && s[1] != '.') &&
           !(len > 2 && s[0] == '-' && s[1] == '0' && s[2] != '.');
}

static int is_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

/* Turns `key=value key='quoted value' ...` into JSON fields. A quoted value ends at the quote
 * followed by a space or the end; words that are not key=value go into "msg". */
static void json_fields(char *dst, size_t size, size_t *out, const char *text)
{
    char msg[1024];
    size_t msg_len = 0;
    const char *p = text;

    while (*p != '\0') {
        const char *key = p, *eq, *val, *end;
        size_t klen;

        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        key = p;
        for (eq = p; is_key_char(*eq); eq++)
            ;
        klen = (size_t)(eq - key);
        if (klen == 0 || *eq != '=') {
            /* a free word: up to the next space */
            end = strchr(p, ' ');
            end = end ? end : p + strlen(p);
            if (msg_len + (size_t)(end - p) + 2 < sizeof(msg)) {
                if (msg_len > 0)
                    msg[msg_len++] = ' ';
                memcpy(msg + msg_len, p, (size_t)(end - p));
                msg_len += (size_t)(end - p);
            }
            p = end;
            continue;
        }
        val = eq + 1;
        if (*val == '\'') {
            val++;
            for (end = val; *end != '\0'; end++)
                if (*end == '\'' && (end[1] == ' ' || end[1] == '\0' || end[1] == ','))
                    break;
            p = *end != '\0' ? end + 1 : end;
            if (*p == ',')
                p++;
        } else {
            end = strchr(val, ' ');
            end = end ? end : val + strlen(val);
            p = end;
        }
        if (*out + klen + 8 >= size)
            break;
        memcpy(dst + *out, ",\"", 2);
        *out += 2;
        json_append(dst, size, out, key, klen);
        memcpy(dst + *out, "\":", 2);
        *out += 2;
        if (val[-1] != '\'' && is_number(val, (size_t)(end - val))) {
            json_append(dst, size, out, val, (size_t)(end - val));
        } else {
            dst[(*out)++] = '"';
            json_append(dst, size, out, val, (size_t)(end - val));
            if (*out + 1 < size)
                dst[(*out)++] = '"';
        }
    }
    if (msg_len > 0 && *out + 10 < size) {
        memcpy(dst + *out, ",\"msg\":\"", 8);
        *out += 8;
        json_append(dst, size, out, msg, msg_len);
        if (*out + 1 < size)
            dst[(*out)++] = '"';
    }
}

static size_t format_json(char *line, size_t size, const char *stamp, enum log_level level,
                          const char *event, const char *escaped)
{
    size_t out = 0;
    char ev[256];

    log_escape(ev, sizeof(ev), event);
    if (stamp[0] != '\0')
        out = (size_t)snprintf(line, size, "{\"time\":\"%s\",\"level\":\"%s\",\"event\":\"", stamp,
                               level_names[level]);
    else
        out = (size_t)snprintf(line, size, "{\"level\":\"%s\",\"event\":\"", level_names[level]);
    json_append(line, size, &out, ev, strlen(ev));
    line[out++] = '"';
    /* room for the closing brace and newline is kept by the 3 below */
    json_fields(line, size - 3, &out, escaped);
    line[out++] = '}';
    line[out++] = '\n';
    line[out] = '\0';
    return out;
}

void log_event(enum log_level level, const char *event, const char *fmt, ...)
{
    /* syslog priorities of debug, info, warn, error */
    static const char priorities[] = {'7', '6', '4', '3'};
    char raw[2048], escaped[4096], line[8300], stamp[64] = "";
    size_t prefix = 0;
    struct timespec now;
    struct tm tm;
    va_list ap;
    int len;

    if (level < current_level)
        return;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    log_escape(escaped, sizeof(escaped), raw);

    if (journal_mode) {
        line[0] = '<';
        line[1] = priorities[level];
        line[2] = '>';
        prefix = 3;
    } else {
        clock_gettime(CLOCK_REALTIME, &now);
        gmtime_r(&now.tv_sec, &tm);
        snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 now.tv_nsec / 1000000);
    }
    if (current_format == LOG_FORMAT_JSON) {
        len = (int)(prefix + format_json(line + prefix, sizeof(line) - prefix, stamp, level, event,
                                         escaped));
    } else {
        len = snprintf(line + prefix, sizeof(line) - prefix, "%s%s%s %s %s\n", stamp,
                       stamp[0] ? " " : "", level_names[level], event, escaped);
        if (len < 0)
            return;
        len += (int)prefix;
        if ((size_t)len >= sizeof(line)) {
            len = sizeof(line) - 1;
            line[len - 1] = '\n';
        }
    }
    /* One write per line so that lines from threads never interleave. */
    (void)!write(log_fd, line, (size_t)len);
}
