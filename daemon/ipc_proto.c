/* ipc_proto.c - the rules of ipc_proto.h both sides apply: the default socket path and the
 * values a field may hold beyond its JSON type (push's message), so that the client refuses what
 * the daemon would. Pure functions over libc, compiled into both ckptcore and the ckptpush
 * client; any thread.
 */
#include "ipc_proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

int ipc_proto_check_push_message(const char *message, char *why, size_t why_size)
{
    size_t len = strlen(message);

    if (len == 0) {
        snprintf(why, why_size, "must not be empty");
        return -EINVAL;
    }
    if (len > IPC_MAX_PUSH_MESSAGE) {
        snprintf(why, why_size, "must be at most %d bytes, not %zu", IPC_MAX_PUSH_MESSAGE, len);
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)message[i];
        if (c < 0x20 || c == 0x7f) {
            snprintf(why, why_size,
                     "must not contain control characters (byte 0x%02x at offset %zu): a commit "
                     "title is one line",
                     c, i);
            return -EINVAL;
        }
    }
    return 0;
}

int ipc_proto_job_name(char *dst, size_t dst_size, const char *name_or_dir)
{
    const char *start, *end;
    size_t n = 0;

    if (dst_size <= IPC_MAX_JOB)
        return -EINVAL;
    if (name_or_dir == NULL)
        name_or_dir = "";
    end = name_or_dir + strlen(name_or_dir);
    while (end > name_or_dir && end[-1] == '/')
        end--;
    start = end;
    while (start > name_or_dir && start[-1] != '/')
        start--;
    for (const char *p = start; p < end && n < IPC_MAX_JOB; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
        /* No hidden files, no "." or "..". */
        if (n == 0 && c == '.')
            ok = 0;
        dst[n++] = ok ? c : '_';
    }
    dst[n] = '\0';
    if (n == 0)
        snprintf(dst, dst_size, "default");
    return 0;
}

int ipc_proto_socket_dir(char *dst, size_t dst_size)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;

    if (xdg != NULL && xdg[0] == '/')
        n = snprintf(dst, dst_size, "%s/ckptpush", xdg);
    else
        n = snprintf(dst, dst_size, "/tmp/ckptpush-%u", (unsigned)geteuid());
    if (n < 0 || (size_t)n >= dst_size)
        return -ENAMETOOLONG;
    return 0;
}

int ipc_proto_default_path(char *dst, size_t dst_size, const char *job)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char name[IPC_MAX_JOB + 1];
    int n, r;

    r = ipc_proto_socket_dir(dir, sizeof(dir));
    if (r < 0)
        return r;
    ipc_proto_job_name(name, sizeof(name), job);
    n = snprintf(dst, dst_size, "%s/%s.sock", dir, name);
    if (n < 0 || (size_t)n >= dst_size || (size_t)n >= sizeof(dir))
        return -ENAMETOOLONG;
    return 0;
}
