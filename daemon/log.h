/* log.h - one event a line on stderr, safe against hostile strings.
 *
 * Format: `<UTC time> <level> <event> key=value ...`, or with LOG_FORMAT_JSON one object a line
 * {"time", "level", "event", and each key=value as a field}. Under journald (log_set_journal)
 * lines start with the syslog priority `<N>` and carry no time of their own. The caller formats
 * the key=value part; user-controlled strings go in single quotes ('%s'). Every control character
 * and every byte that is not printable ASCII in the formatted text is written as \xNN, so a file
 * name cannot forge a log line. Never pass a token: tokens only ever reach the Authorization
 * header. Thread-safe (one write(2) per line), but only the loop thread should decide to log.
 */
#ifndef CKPT_LOG_H
#define CKPT_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_KV, LOG_FORMAT_JSON };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "debug", "info", "warn", "error"; returns -1 when unknown. */
int log_parse_level(const char *name, enum log_level *ret_level);
/* Where lines go; default is stderr (fd 2). */
void log_set_fd(int fd);
/* Parses "kv", "json"; returns -1 when unknown. */
int log_parse_format(const char *name, enum log_format *ret_format);
void log_set_format(enum log_format format);
/* journal: prefix `<N>` (syslog priority), no timestamp: journald adds its own. */
void log_set_journal(int journal);
/* Whether fd is the stream systemd named in $JOURNAL_STREAM ("dev:inode"). */
int log_fd_is_journal(int fd);

void log_event(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(event, ...) log_event(LOG_DEBUG, event, __VA_ARGS__)
#define log_info(event, ...) log_event(LOG_INFO, event, __VA_ARGS__)
#define log_warn(event, ...) log_event(LOG_WARN, event, __VA_ARGS__)
#define log_error(event, ...) log_event(LOG_ERROR, event, __VA_ARGS__)

/* Escapes src into dst (always NUL-terminated); returns dst. Exposed for tests and for callers
 * that print user strings outside the log (status tables). */
char *log_escape(char *dst, size_t dst_size, const char *src);

#endif
