/* notify.h - the systemd notification protocol without libsystemd: one datagram of KEY=VALUE
 * lines to $NOTIFY_SOCKET (a path, or "@name" for an abstract socket), and the watchdog ping at
 * half of $WATCHDOG_USEC from a timer on the loop, so that a stuck loop stops the pings. Does not
 * decide what to say (the daemon does). Loop thread; notify_send is also safe before the loop.
 */
#ifndef CKPT_NOTIFY_H
#define CKPT_NOTIFY_H

#include <stdint.h>

#include <uv.h>

/* The longest message sent; longer STATUS= text is cut. */
#define NOTIFY_MESSAGE_MAX 1024

/* Sends state ("READY=1\nSTATUS=...") as one datagram. 0 when sent or when $NOTIFY_SOCKET is
 * unset (not under systemd: nothing to do), else a negative errno. Never blocks. */
int notify_send(const char *state);
/* printf-style notify_send; control characters in the result become spaces except the newlines
 * between KEY=VALUE lines, which the format alone should contain. */
int notify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The watchdog interval systemd asked for in microseconds, 0 when none (or meant for another
 * process: $WATCHDOG_PID). */
uint64_t notify_watchdog_usec(void);

struct notify_watchdog;
/* Starts pinging WATCHDOG=1 every usec/2 when systemd asked for it; *ret stays NULL when not.
 * The timer does not keep the loop alive. */
int notify_watchdog_start(struct notify_watchdog **ret, uv_loop_t *loop);
/* NULL-safe; the memory goes in the timer's close callback. */
void notify_watchdog_close(struct notify_watchdog *w);

#endif
