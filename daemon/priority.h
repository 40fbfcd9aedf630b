/* priority.h - the daemon yields the CPU and the disk to the training job it runs beside.
 *
 * Owns lowering the calling thread's CPU niceness and I/O priority. Linux applies both per
 * thread, so the loop thread lowers itself after starting a wrapped command (which keeps the
 * priority it was started with) and each thread-pool thread lowers itself before its first heavy
 * job.
 */
#ifndef CKPT_PRIORITY_H
#define CKPT_PRIORITY_H

/* nice 1-19: the calling thread takes on that niceness unless it is nicer already, and the lowest
 * best-effort I/O priority; once (later calls with the same or a smaller value do nothing). 0 or
 * less: nothing. Never raises a priority, even as root. Failures are ignored: the work still gets
 * done. */
void priority_lower_thread(int nice);

#endif
