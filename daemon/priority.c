/* priority.c - see priority.h. */
#include "priority.h"

#include <errno.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ioprio_set(2) has no glibc wrapper: best-effort class (2), lowest level (7). */
#define IOPRIO_WHO_PROCESS 1
#define IOPRIO_BE_LOWEST ((2 << 13) | 7)

void priority_lower_thread(int nice)
{
    static _Thread_local int lowered_to;

    if (nice > 19)
        nice = 19;
    if (nice <= lowered_to)
        return;
    lowered_to = nice;
    pid_t tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    int now = getpriority(PRIO_PROCESS, (id_t)tid);
    /* started nicer than asked (nice -n 15 ckptpushd ...): keep that, even as root */
    if (errno == 0 && now < nice)
        (void)setpriority(PRIO_PROCESS, (id_t)tid, nice);
    (void)syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, IOPRIO_BE_LOWEST);
}
