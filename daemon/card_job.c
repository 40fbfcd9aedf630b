/* card_job.c - gather the card's sources from disk, render, write; on the thread pool. */
#include "card_job.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "card.h"

#define SOURCE_MAX (8u * 1024 * 1024)      /* a JSON or YAML source bigger than this is ignored */
#define SAFETENSORS_HEADER_MAX (16u << 20) /* the format allows 100 MB; ours are far smaller */
#define MAX_WEIGHT_FILES 256
#define MAX_LISTED_FILES 1024

struct card_job {
    uv_work_t work;
    card_job_cb cb;
    void *ctx;
    char *repo_id, *model_dir, *logs_dir, *out_dir;
    char *final_metrics_json, *hparams_json, *user_fields_json;
    double duration_s;
    struct ckpt_err err;
    bool wrote_svg;
    char pickles[1024];
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Reads a whole small file; NULL when missing, unreadable or larger than max. */
static char *read_small(const char *dir, const char *name, size_t max)
{
    char path[PATH_MAX];
    struct stat st;
    char *buf;
    ssize_t got;
    int fd;

    if (dir == NULL || snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
        return NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max ||
        (buf = malloc((size_t)st.st_size + 1)) == NULL) {
        close(fd);
        return NULL;
    }
    got = pread(fd, buf, (size_t)st.st_size, 0);
    close(fd);
    if (got != st.st_size) {
        free(buf);
        return NULL;
    }
    buf[got] = '\0';
    return buf;
}

/* The JSON header of a safetensors file: 8 bytes of little-endian length, then the header. */
static unsigned char *read_safetensors_header(const char *path, size_t *ret_len)
{
    unsigned char len_bytes[8];
    unsigned char *header;
    uint64_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0)
        return NULL;
    if (pread(fd, len_bytes, 8, 0) != 8)
        goto fail;
    for (int i = 7; i >= 0; i--)
        len = (len << 8) | len_bytes[i];
    if (len == 0 || len > SAFETENSORS_HEADER_MAX || (header = malloc(len + 1)) == NULL)
        goto fail;
    if (pread(fd, header, len, 8) != (ssize_t)len) {
        free(header);
        goto fail;
    }
    close(fd);
    header[len] = '\0';
    *ret_len = len;
    return header;
fail:
    close(fd);
    return NULL;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Lightning writes <logs>/lightning_logs/version_<n>/{hparams.yaml,metrics.csv}: take the
 * highest version that has them. */
static void find_lightning_logs(const char *logs_dir, char **hparams, char **metrics)
{
    char base[PATH_MAX], best[PATH_MAX] = "";
    long best_version = -1;
    struct dirent *entry;
    DIR *dir;

    if (logs_dir == NULL)
        return;
    snprintf(base, sizeof(base), "%s/lightning_logs", logs_dir);
    if ((dir = opendir(base)) == NULL)
        return;
    while ((entry = readdir(dir)) != NULL) {
        long version;
        if (sscanf(entry->d_name, "version_%ld", &version) != 1 || version <= best_version)
            continue;
        if (strlen(base) + strlen(entry->d_name) + 2 > sizeof(best))
            continue;
        best_version = version;
        strcpy(best, base);
        strcat(best, "/");
        strcat(best, entry->d_name);
    }
    closedir(dir);
    if (best_version < 0)
        return;
    *hparams = read_small(best, "hparams.yaml", SOURCE_MAX);
    *metrics = read_small(best, "metrics.csv", SOURCE_MAX);
}

static int write_file(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    size_t len = strlen(text);
    int fd, rc = 0;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -errno;
    /* The card replaces a pinned README.md: write beside it, then rename over the link, so the
     * Trainer's own file (the same inode in the output directory) is never modified. */
    if (write(fd, text, len) != (ssize_t)len || fsync(fd) != 0)
        rc = -errno ? -errno : -EIO;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0)
        unlink(tmp);
    return rc;
}

static void card_job_work(uv_work_t *work)
{
    struct card_job *job = work->data;
    struct card_inputs in = {.repo_id = job->repo_id,
                             .final_metrics_json = job->final_metrics_json,
                             .hparams_json = job->hparams_json,
                             .user_fields_json = job->user_fields_json,
                             .duration_s = job->duration_s};
    unsigned char *headers[MAX_WEIGHT_FILES];
    size_t header_lens[MAX_WEIGHT_FILES], n_headers = 0, n_files = 0;
    char *files[MAX_LISTED_FILES];
    char *config = NULL, *state = NULL, *results = NULL, *readme = NULL;
    char *hparams_yaml = NULL, *metrics_csv = NULL, *out_readme = NULL, *out_svg = NULL;
    int rc;

    if (job->model_dir != NULL) {
        DIR *dir = opendir(job->model_dir);
        struct dirent *entry;

        config = read_small(job->model_dir, "config.json", SOURCE_MAX);
        state = read_small(job->model_dir, "trainer_state.json", SOURCE_MAX);
        results = read_small(job->model_dir, "all_results.json", SOURCE_MAX);
        if (results == NULL)
            results = read_small(job->model_dir, "eval_results.json", SOURCE_MAX);
        readme = read_small(job->model_dir, "README.md", CARD_MAX_README);
        while (dir != NULL && (entry = readdir(dir)) != NULL) {
            char path[PATH_MAX];
            if (entry->d_name[0] == '.')
                continue;
            if (n_files < MAX_LISTED_FILES && strcmp(entry->d_name, "README.md") != 0)
                files[n_files++] = strdup(entry->d_name);
            if (!has_suffix(entry->d_name, ".safetensors") || n_headers == MAX_WEIGHT_FILES)
                continue;
            snprintf(path, sizeof(path), "%s/%s", job->model_dir, entry->d_name);
            if ((headers[n_headers] = read_safetensors_header(path, &header_lens[n_headers])))
                n_headers++;
        }
        if (dir != NULL)
            closedir(dir);
    }
    find_lightning_logs(job->logs_dir, &hparams_yaml, &metrics_csv);

    in.config_json = config;
    in.trainer_state_json = state;
    in.all_results_json = results;
    in.existing_readme = readme;
    in.lightning_hparams_yaml = hparams_yaml;
    in.lightning_metrics_csv = metrics_csv;
    in.safetensors_headers = (const unsigned char *const *)headers;
    in.safetensors_header_lens = header_lens;
    in.n_safetensors = n_headers;
    in.pushed_files = (const char *const *)files;
    in.n_pushed = n_files;

    rc = card_render(&in, &out_readme, &out_svg, &job->err);
    if (rc == 0 && mkdir(job->out_dir, 0700) != 0 && errno != EEXIST)
        rc = ckpt_err_set(&job->err, CKPT_ERR_IO, -errno, "cannot create '%s': %s", job->out_dir,
                          strerror(errno));
    if (rc == 0 && (rc = write_file(job->out_dir, "README.md", out_readme)) < 0)
        ckpt_err_set(&job->err, CKPT_ERR_IO, rc, "cannot write '%s/README.md': %s", job->out_dir,
                     strerror(-rc));
    if (rc == 0 && out_svg != NULL) {
        if ((rc = write_file(job->out_dir, CARD_SVG_NAME, out_svg)) < 0)
            ckpt_err_set(&job->err, CKPT_ERR_IO, rc, "cannot write '%s/%s': %s", job->out_dir,
                         CARD_SVG_NAME, strerror(-rc));
        else
            job->wrote_svg = true;
    }
    for (size_t i = 0; i < n_files; i++) {
        if (files[i] != NULL && card_is_pickle_path(files[i])) {
            size_t used = strlen(job->pickles);
            snprintf(job->pickles + used, sizeof(job->pickles) - used, "%s%s", used ? "," : "",
                     files[i]);
        }
        free(files[i]);
    }
    for (size_t i = 0; i < n_headers; i++)
        free(headers[i]);
    free(config);
    free(state);
    free(results);
    free(readme);
    free(hparams_yaml);
    free(metrics_csv);
    free(out_readme);
    free(out_svg);
}

static void card_job_free(struct card_job *job)
{
    free(job->repo_id);
    free(job->model_dir);
    free(job->logs_dir);
    free(job->out_dir);
    free(job->final_metrics_json);
    free(job->hparams_json);
    free(job->user_fields_json);
    free(job);
}

static void card_job_done(uv_work_t *work, int status)
{
    struct card_job *job = work->data;
    struct card_job_result res = {.wrote_svg = job->wrote_svg, .pickles = job->pickles};

    if (status < 0)
        ckpt_err_set(&job->err, CKPT_ERR_IO, status, "model card cancelled");
    job->cb(job->ctx, job->err.kind == CKPT_ERR_NONE ? NULL : &job->err, &res);
    card_job_free(job);
}

int card_job_start(uv_loop_t *loop, const struct card_job_request *req, card_job_cb cb, void *ctx)
{
    struct card_job *job = calloc(1, sizeof(*job));

    if (job == NULL)
        return -ENOMEM;
    job->work.data = job;
    job->cb = cb;
    job->ctx = ctx;
    job->duration_s = req->duration_s;
    job->repo_id = dup_or_null(req->repo_id);
    job->model_dir = dup_or_null(req->model_dir);
    job->logs_dir = dup_or_null(req->logs_dir);
    job->out_dir = dup_or_null(req->out_dir);
    job->final_metrics_json = dup_or_null(req->final_metrics_json);
    job->hparams_json = dup_or_null(req->hparams_json);
    job->user_fields_json = dup_or_null(req->user_fields_json);
    if (job->out_dir == NULL || (req->repo_id && job->repo_id == NULL)) {
        card_job_free(job);
        return -ENOMEM;
    }
    ckpt_err_clear(&job->err);
    return uv_queue_work(loop, &job->work, card_job_work, card_job_done);
}
