/* log.c - structured, escaped log lines on one file descriptor. */

#include "log.h"

#include <stddef.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_INFO;
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

void log_event(enum log_level level, const char *event, const char *fmt, ...)
{
    char raw[2048], escaped[4096], line[4300];
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

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    len = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s %s\n",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   now.tv_nsec / 1000000, level_names[level], event, escaped);
    if (len < 0)
        return;
    if ((size_t)len >= sizeof(line)) {
        len = sizeof(line) - 1;
        line[len - 1] = '\n';
    }
    /* One write per line so that lines from threads never interleave. */
    (void)!write(log_fd, line, (size_t)len);
}
