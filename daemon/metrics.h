/* metrics.h - what operators watch, in the Prometheus text format, written to a file for the
 * node_exporter textfile collector: bytes uploaded, checkpoints by state and outcome, HTTP
 * retries, queue depth, last commit time, staging bytes. Written on change, at most once a
 * second (every few seconds while a push runs, nothing when idle), atomically (temp file and
 * rename) on the thread pool. Does not decide anything. Loop thread.
 */
#ifndef CKPT_METRICS_H
#define CKPT_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

struct metrics;
struct queue;
struct queue_item_view;

#define METRICS_MIN_INTERVAL_MS 1000
#define METRICS_BUSY_INTERVAL_MS 5000
/* Staging walks stop here: a metric is not worth an unbounded scan. */
#define METRICS_STAGING_MAX_ENTRIES 100000

struct metrics_info {
    const char *path;        /* the .prom file */
    const char *staging_dir; /* summed on each write; may not exist yet */
    const char *repo;        /* labels of ckptpush_info; may be NULL */
    const char *job;
    const struct queue *queue; /* read at each write; must outlive the metrics */
};

/* Copies the strings; writes the first file at once. Fails at once with UV_EINVAL (no path) or
 * UV_ENOMEM. */
int metrics_new(struct metrics **ret, uv_loop_t *loop, const struct metrics_info *info);
/* NULL-safe: a daemon without --metrics-path passes its NULL. */
void metrics_on_queue_event(struct metrics *m, const struct queue_item_view *v);
void metrics_changed(struct metrics *m);
/* NULL-safe: files left out of their checkpoints so far (symlinks, hidden files, names the Hub
 * refuses), and whether the watched directory is missing now. */
void metrics_note_watch(struct metrics *m, uint64_t files_skipped, bool root_missing);
/* NULL-safe. Writes a last file (ckptpush_up 0) and frees everything once that write is done; the
 * queue is not read after this call. */
void metrics_close(struct metrics *m);

#endif
