/* notify.c - sd_notify by hand: a fresh SOCK_DGRAM|SOCK_CLOEXEC socket per message, sent with
 * MSG_DONTWAIT (a full receiver queue drops the message instead of blocking the loop), and the
 * watchdog timer. Loop thread.
 */
#include "notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct notify_watchdog {
    uv_timer_t timer;
};

int notify_send(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un addr;
    socklen_t len;
    size_t n;
    ssize_t sent;
    int fd, rc = 0;

    if (path == NULL || path[0] == '\0')
        return 0;
    if (path[0] != '/' && path[0] != '@')
        return -EAFNOSUPPORT; /* vsock: and others are for VMs, not for us */
    n = strlen(path);
    if (n >= sizeof(addr.sun_path))
        return -ENAMETOOLONG;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, n);
    if (path[0] == '@')
        addr.sun_path[0] = '\0'; /* abstract namespace: the length says where the name ends */
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/' ? 1 : 0));

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    sent = sendto(fd, state, strlen(state), MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&addr,
                  len);
    if (sent < 0)
        rc = -errno;
    else if ((size_t)sent != strlen(state))
        rc = -EMSGSIZE;
    close(fd);
    return rc;
}

int notify_sendf(const char *fmt, ...)
{
    char msg[NOTIFY_MESSAGE_MAX];
    va_list ap;

    if (getenv("NOTIFY_SOCKET") == NULL)
        return 0;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* A file name with a newline must not start a KEY= line of its own; the format's own
     * newlines separate assignments and are kept, so only the arguments can be at fault, and
     * they only ever sit in STATUS=, which is the last line by convention. */
    {
        char *status = strstr(msg, "STATUS=");
        for (char *p = status ? status : msg + strlen(msg); *p != '\0'; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = ' ';
    }
    return notify_send(msg);
}

uint64_t notify_watchdog_usec(void)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    unsigned long long value;
    char *end;

    if (usec == NULL || usec[0] == '\0')
        return 0;
    if (pid != NULL && pid[0] != '\0' && strtol(pid, NULL, 10) != (long)getpid())
        return 0;
    errno = 0;
    value = strtoull(usec, &end, 10);
    if (errno != 0 || *end != '\0' || value == 0)
        return 0;
    return value;
}

static void on_watchdog(uv_timer_t *timer)
{
    (void)timer;
    notify_send("WATCHDOG=1");
}

int notify_watchdog_start(struct notify_watchdog **ret, uv_loop_t *loop)
{
    uint64_t usec = notify_watchdog_usec();
    uint64_t every_ms = usec / 2000;
    struct notify_watchdog *w;

    *ret = NULL;
    if (usec == 0 || getenv("NOTIFY_SOCKET") == NULL)
        return 0;
    if ((w = calloc(1, sizeof(*w))) == NULL)
        return UV_ENOMEM;
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_watchdog, 0, every_ms ? every_ms : 1);
    /* The drain, not the watchdog, decides how long the loop lives. */
    uv_unref((uv_handle_t *)&w->timer);
    *ret = w;
    return 0;
}

static void on_watchdog_closed(uv_handle_t *handle)
{
    free(handle->data);
}

void notify_watchdog_close(struct notify_watchdog *w)
{
    if (w == NULL)
        return;
    uv_close((uv_handle_t *)&w->timer, on_watchdog_closed);
}
