/* metrics.c - counters kept on the loop thread from queue events; each write takes a snapshot
 * and hands it to the thread pool, which sums the staging tree, formats the text, writes a temp
 * file beside the target and renames it over. No fsync: a metrics file lost in a crash is
 * rewritten by the next start, and the rename alone keeps readers from seeing half a file.
 */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "log.h"
#include "queue.h"

#define TEXT_MAX 8192

struct snapshot {
    uint64_t uploaded_bytes;
    uint64_t xet_new_bytes, xet_dedup_bytes;
    uint64_t committed, failed, skipped;
    uint64_t retries;
    uint64_t waiting, pinning, uploading;
    uint64_t pending;
    double last_commit_s; /* unix time, 0: none yet */
    bool up;
    uint64_t files_skipped;
    bool root_missing;
};

struct write_job {
    uv_work_t work;
    struct metrics *m;
    struct snapshot snap;
    int status;
};

struct metrics {
    uv_loop_t *loop;
    uv_timer_t timer;
    char *path;
    char *staging_dir;
    char *repo;
    char *job;
    const struct queue *queue;
    struct write_job job_buf;
    uint64_t finished_bytes; /* bytes sent by pushes that ended */
    uint64_t finished_xet_new, finished_xet_dedup;
    uint64_t committed, failed, skipped;
    double last_commit_s;
    uint64_t files_skipped;
    bool root_missing;
    uint64_t last_write_ms;
    int last_status; /* of the previous write, to log a failure once */
    bool dirty;
    bool writing;
    bool closing;
};

static void start_write(struct metrics *m);

static uint64_t now_ms(struct metrics *m)
{
    uv_update_time(m->loop);
    return uv_now(m->loop);
}

/* --- the thread pool side -------------------------------------------------------------------- */

struct staging_sum {
    uint64_t bytes;
    uint64_t exclusive; /* files only the pins still hold: disk the staging tree costs */
    unsigned entries;
};

static void sum_dir(int dirfd, struct staging_sum *sum, int depth)
{
    DIR *dir = fdopendir(dirfd);
    struct dirent *de;

    if (dir == NULL) {
        close(dirfd);
        return;
    }
    while ((de = readdir(dir)) != NULL && sum->entries < METRICS_STAGING_MAX_ENTRIES) {
        struct stat st;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        sum->entries++;
        if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISREG(st.st_mode)) {
            sum->bytes += (uint64_t)st.st_size;
            if (st.st_nlink == 1)
                sum->exclusive += (uint64_t)st.st_size;
        } else if (S_ISDIR(st.st_mode) && depth < 64) {
            int fd = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd >= 0)
                sum_dir(fd, sum, depth + 1);
        }
    }
    closedir(dir);
}

static void escape_label(char *dst, size_t size, const char *src)
{
    size_t out = 0;

    for (const char *p = src ? src : ""; *p != '\0' && out + 3 < size; p++) {
        if (*p == '\\' || *p == '"') {
            dst[out++] = '\\';
            dst[out++] = *p;
        } else if (*p == '\n') {
            dst[out++] = '\\';
            dst[out++] = 'n';
        } else {
            dst[out++] = *p;
        }
    }
    dst[out] = '\0';
}

static int format(const struct metrics *m, const struct snapshot *s, const struct staging_sum *st,
                  char *text, size_t size)
{
    char repo[256], job[160];

    escape_label(repo, sizeof(repo), m->repo);
    escape_label(job, sizeof(job), m->job);
    return snprintf(
        text, size,
        "# HELP ckptpush_up 1 while ckptpushd runs, 0 in the file it writes when it exits.\n"
        "# TYPE ckptpush_up gauge\n"
        "ckptpush_up %d\n"
        "# HELP ckptpush_info The daemon's version and target.\n"
        "# TYPE ckptpush_info gauge\n"
        "ckptpush_info{version=\"%s\",repo=\"%s\",job=\"%s\"} 1\n"
        "# HELP ckptpush_uploaded_bytes_total File bytes sent to the Hub (LFS uploads, Xet "
        "xorbs).\n"
        "# TYPE ckptpush_uploaded_bytes_total counter\n"
        "ckptpush_uploaded_bytes_total %" PRIu64 "\n"
        "# HELP ckptpush_xet_chunk_bytes_total Bytes of Xet chunks, by whether they were new "
        "(sent in xorbs) or deduplicated (the CAS had them).\n"
        "# TYPE ckptpush_xet_chunk_bytes_total counter\n"
        "ckptpush_xet_chunk_bytes_total{kind=\"new\"} %" PRIu64 "\n"
        "ckptpush_xet_chunk_bytes_total{kind=\"deduplicated\"} %" PRIu64 "\n"
        "# HELP ckptpush_checkpoints Checkpoints sealed and not yet pushed, by state.\n"
        "# TYPE ckptpush_checkpoints gauge\n"
        "ckptpush_checkpoints{state=\"waiting\"} %" PRIu64 "\n"
        "ckptpush_checkpoints{state=\"pinning\"} %" PRIu64 "\n"
        "ckptpush_checkpoints{state=\"uploading\"} %" PRIu64 "\n"
        "# HELP ckptpush_checkpoints_total Checkpoints whose push ended, by result.\n"
        "# TYPE ckptpush_checkpoints_total counter\n"
        "ckptpush_checkpoints_total{result=\"committed\"} %" PRIu64 "\n"
        "ckptpush_checkpoints_total{result=\"failed\"} %" PRIu64 "\n"
        "ckptpush_checkpoints_total{result=\"skipped\"} %" PRIu64 "\n"
        "# HELP ckptpush_http_retries_total HTTP requests retried after a network error or a "
        "retryable status.\n"
        "# TYPE ckptpush_http_retries_total counter\n"
        "ckptpush_http_retries_total %" PRIu64 "\n"
        "# HELP ckptpush_queue_depth Checkpoints waiting or being pushed.\n"
        "# TYPE ckptpush_queue_depth gauge\n"
        "ckptpush_queue_depth %" PRIu64 "\n"
        "# HELP ckptpush_last_commit_timestamp_seconds When the last commit landed (0: none).\n"
        "# TYPE ckptpush_last_commit_timestamp_seconds gauge\n"
        "ckptpush_last_commit_timestamp_seconds %.3f\n"
        "# HELP ckptpush_staging_bytes Bytes of the files pinned in the staging directory.\n"
        "# TYPE ckptpush_staging_bytes gauge\n"
        "ckptpush_staging_bytes %" PRIu64 "\n"
        "# HELP ckptpush_staging_exclusive_bytes Pinned bytes the training run already deleted: "
        "disk held only by the pins.\n"
        "# TYPE ckptpush_staging_exclusive_bytes gauge\n"
        "ckptpush_staging_exclusive_bytes %" PRIu64 "\n"
        "# HELP ckptpush_files_skipped_total Files left out of their checkpoints: symlinks, "
        "hidden files, names the Hub refuses (each named in the log).\n"
        "# TYPE ckptpush_files_skipped_total counter\n"
        "ckptpush_files_skipped_total %" PRIu64 "\n"
        "# HELP ckptpush_watch_root_missing 1 while the watched directory is deleted or moved "
        "away.\n"
        "# TYPE ckptpush_watch_root_missing gauge\n"
        "ckptpush_watch_root_missing %d\n",
        s->up ? 1 : 0, CKPT_VERSION, repo, job, s->uploaded_bytes, s->xet_new_bytes,
        s->xet_dedup_bytes, s->waiting, s->pinning, s->uploading, s->committed, s->failed,
        s->skipped, s->retries, s->pending, s->last_commit_s, st->bytes, st->exclusive,
        s->files_skipped, s->root_missing ? 1 : 0);
}

static void write_work(uv_work_t *work)
{
    struct write_job *j = work->data;
    struct metrics *m = j->m;
    struct staging_sum sum = {0};
    char text[TEXT_MAX], tmp[4200];
    int fd, len;

    fd = open(m->staging_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0)
        sum_dir(fd, &sum, 0);
    len = format(m, &j->snap, &sum, text, sizeof(text));
    if (len < 0 || (size_t)len >= sizeof(text)) {
        j->status = -ENOBUFS;
        return;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", m->path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        j->status = -errno;
        return;
    }
    {
        /* Keep the write's errno (ENOSPC, EDQUOT): "no space left" is what the person needs. */
        ssize_t n = write(fd, text, (size_t)len);
        j->status = n == len ? 0 : n < 0 ? -errno : -ENOSPC;
    }
    if (close(fd) != 0 && j->status == 0)
        j->status = -errno;
    if (j->status == 0 && rename(tmp, m->path) != 0)
        j->status = -errno;
    if (j->status != 0)
        unlink(tmp);
}

/* --- the loop side ---------------------------------------------------------------------------- */

static void count_active(void *ctx, const struct queue_item_view *v)
{
    struct snapshot *s = ctx;

    switch (v->state) {
    case QUEUE_WAITING:
        s->waiting++;
        break;
    case QUEUE_PINNING:
        s->pinning++;
        break;
    case QUEUE_UPLOADING:
        s->uploading++;
        s->uploaded_bytes += v->progress.bytes_sent;
        s->xet_new_bytes += v->progress.xet_bytes_new;
        s->xet_dedup_bytes += v->progress.xet_bytes_dedup;
        break;
    default:
        break;
    }
}

static void on_timer(uv_timer_t *timer)
{
    struct metrics *m = timer->data;

    m->dirty = true;
    if (!m->writing)
        start_write(m);
}

static void on_closed(uv_handle_t *handle)
{
    struct metrics *m = handle->data;

    free(m->path);
    free(m->staging_dir);
    free(m->repo);
    free(m->job);
    free(m);
}

static void write_done(uv_work_t *work, int status)
{
    struct write_job *j = work->data;
    struct metrics *m = j->m;
    int rc = status < 0 ? status : j->status;

    m->writing = false;
    m->last_write_ms = now_ms(m);
    if (rc < 0 && rc != m->last_status)
        log_warn("metrics-failed", "path='%s' reason='%s', retrying on the next change", m->path,
                 strerror(-rc));
    m->last_status = rc;
    if (m->closing) {
        if (m->dirty) {
            start_write(m);
            return;
        }
        uv_close((uv_handle_t *)&m->timer, on_closed);
        return;
    }
    if (m->dirty) {
        metrics_changed(m);
    } else if (j->snap.pending > 0 && !uv_is_active((uv_handle_t *)&m->timer)) {
        /* bytes move without state changes while a push runs */
        uv_timer_start(&m->timer, on_timer, METRICS_BUSY_INTERVAL_MS, 0);
    }
}

static void start_write(struct metrics *m)
{
    struct write_job *j = &m->job_buf;
    int rc;

    uv_timer_stop(&m->timer);
    memset(j, 0, sizeof(*j));
    j->m = m;
    j->work.data = j;
    j->snap.uploaded_bytes = m->finished_bytes;
    j->snap.xet_new_bytes = m->finished_xet_new;
    j->snap.xet_dedup_bytes = m->finished_xet_dedup;
    j->snap.committed = m->committed;
    j->snap.failed = m->failed;
    j->snap.skipped = m->skipped;
    j->snap.last_commit_s = m->last_commit_s;
    j->snap.files_skipped = m->files_skipped;
    j->snap.root_missing = m->root_missing;
    j->snap.retries = http_retries_total();
    j->snap.up = !m->closing;
    if (m->queue != NULL) {
        queue_for_each(m->queue, count_active, &j->snap);
        j->snap.pending = queue_pending(m->queue);
    }
    if (m->closing)
        m->queue = NULL; /* not read after close */
    m->dirty = false;
    rc = uv_queue_work(m->loop, &j->work, write_work, write_done);
    if (rc < 0) {
        log_warn("metrics-failed", "path='%s' reason='%s', ignoring", m->path, uv_strerror(rc));
        if (m->closing)
            uv_close((uv_handle_t *)&m->timer, on_closed);
        return;
    }
    m->writing = true;
}

int metrics_new(struct metrics **ret, uv_loop_t *loop, const struct metrics_info *info)
{
    struct metrics *m;

    *ret = NULL;
    if (info->path == NULL || info->path[0] == '\0')
        return UV_EINVAL;
    if ((m = calloc(1, sizeof(*m))) == NULL)
        return UV_ENOMEM;
    m->path = strdup(info->path);
    m->staging_dir = strdup(info->staging_dir ? info->staging_dir : "");
    m->repo = strdup(info->repo ? info->repo : "");
    m->job = strdup(info->job ? info->job : "");
    if (m->path == NULL || m->staging_dir == NULL || m->repo == NULL || m->job == NULL) {
        free(m->path);
        free(m->staging_dir);
        free(m->repo);
        free(m->job);
        free(m);
        return UV_ENOMEM;
    }
    m->loop = loop;
    m->queue = info->queue;
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    m->dirty = true;
    start_write(m);
    *ret = m;
    return 0;
}

void metrics_on_queue_event(struct metrics *m, const struct queue_item_view *v)
{
    struct timespec ts;

    if (m == NULL)
        return;
    switch (v->state) {
    case QUEUE_COMMITTED:
        m->committed++;
        m->finished_bytes += v->progress.bytes_sent;
        m->finished_xet_new += v->progress.xet_bytes_new;
        m->finished_xet_dedup += v->progress.xet_bytes_dedup;
        clock_gettime(CLOCK_REALTIME, &ts);
        m->last_commit_s = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
        break;
    case QUEUE_FAILED:
        m->failed++;
        m->finished_bytes += v->progress.bytes_sent;
        m->finished_xet_new += v->progress.xet_bytes_new;
        m->finished_xet_dedup += v->progress.xet_bytes_dedup;
        break;
    case QUEUE_SKIPPED:
        m->skipped++;
        break;
    default:
        break;
    }
    metrics_changed(m);
}

void metrics_note_watch(struct metrics *m, uint64_t files_skipped, bool root_missing)
{
    if (m == NULL || (m->files_skipped == files_skipped && m->root_missing == root_missing))
        return;
    m->files_skipped = files_skipped;
    m->root_missing = root_missing;
    metrics_changed(m);
}

void metrics_changed(struct metrics *m)
{
    uint64_t now, next;

    if (m == NULL || m->closing)
        return;
    m->dirty = true;
    if (m->writing)
        return; /* write_done comes back here */
    now = now_ms(m);
    next = m->last_write_ms + METRICS_MIN_INTERVAL_MS;
    if (m->last_write_ms != 0 && now < next) {
        /* the busy refresh may be armed further out: the change wins */
        if (!uv_is_active((uv_handle_t *)&m->timer) || uv_timer_get_due_in(&m->timer) > next - now)
            uv_timer_start(&m->timer, on_timer, next - now, 0);
        return;
    }
    start_write(m);
}

void metrics_close(struct metrics *m)
{
    if (m == NULL || m->closing)
        return;
    m->closing = true;
    m->dirty = true;
    uv_timer_stop(&m->timer);
    if (!m->writing)
        start_write(m);
}
