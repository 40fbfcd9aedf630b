/* admit.c - the check between a checkpoint's seal and its push: lstat of each file and a listing
 * of a folder checkpoint on the thread pool, sorted into pushed, skipped and refused files.
 *
 * Owns the rules for what cannot be pushed (see admit.h); the names the Hub refuses follow
 * tests/hub/hub.py's validate_repo_path and hub-protocol.md (control characters, backslashes).
 */
#include "admit.h"

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
#include <uv.h>

#define ADMIT_MAX_DEPTH 32

struct list {
    struct admit_file *v;
    size_t n, cap;
};

struct admit_job {
    uv_work_t work;
    admit_done_cb cb;
    void *ctx;
    char *dir;
    char **files;
    size_t n_files;
    char **sorted; /* files, sorted, for the listing's membership test */
    bool list_dir;
    size_t entries;
    int status;
    struct list push, skipped, refused;
};

const char *admit_bad_name(const char *path)
{
    const unsigned char *p = (const unsigned char *)path;

    while (*p != '\0') {
        if (*p < 0x20 || *p == 0x7f)
            return "a control character in the name";
        if (*p == '\\')
            return "a backslash in the name";
        if (*p < 0x80) {
            p++;
            continue;
        }
        /* UTF-8: a lead byte, then its continuation bytes; no overlong forms or surrogates. */
        size_t len = (*p & 0xe0) == 0xc0   ? 2
                     : (*p & 0xf0) == 0xe0 ? 3
                     : (*p & 0xf8) == 0xf0 ? 4
                                           : 0;
        uint32_t cp = len == 2 ? (*p & 0x1fu) : len == 3 ? (*p & 0x0fu) : (*p & 0x07u);
        if (len == 0)
            return "bytes that are not UTF-8 in the name";
        for (size_t i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return "bytes that are not UTF-8 in the name";
            cp = (cp << 6) | (p[i] & 0x3fu);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return "bytes that are not UTF-8 in the name";
        p += len;
    }
    return NULL;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

bool admit_writer_temporary(const char *base)
{
    /* tempfile/fsspec (".tmpab12cd", Lightning's atomic saves), torch DCP (".metadata.tmp"), NFS
     * silly renames of open deleted files, LibreOffice/editor locks and swap files. */
    return base[0] == '.' && (strncmp(base, ".tmp", 4) == 0 || ends_with(base, ".tmp") ||
                              strncmp(base, ".nfs", 4) == 0 || strncmp(base, ".~lock", 6) == 0 ||
                              ends_with(base, ".swp") || ends_with(base, ".swx"));
}

const char *admit_classify(const char *path, unsigned mode, bool link_to_dir, bool *refuse)
{
    *refuse = false;
    if (admit_bad_name(path) != NULL)
        return "bad-name";
    switch (mode & S_IFMT) {
    case S_IFREG:
        return NULL;
    case S_IFLNK:
        return link_to_dir ? "symlink-dir" : "symlink";
    case S_IFIFO:
        *refuse = true;
        return "fifo";
    case S_IFSOCK:
        *refuse = true;
        return "socket";
    case S_IFCHR:
    case S_IFBLK:
        *refuse = true;
        return "device";
    default:
        *refuse = true;
        return "not-a-file";
    }
}

static int list_add(struct list *l, const char *path, const char *reason)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct admit_file *v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    if ((l->v[l->n].path = strdup(path)) == NULL)
        return -ENOMEM;
    l->v[l->n].reason = reason;
    l->n++;
    return 0;
}

static void list_free(struct list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].path);
    free(l->v);
    *l = (struct list){0};
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_member(const struct admit_job *job, const char *rel)
{
    return bsearch(&rel, job->sorted, job->n_files, sizeof(*job->sorted), cmp_str) != NULL;
}

static bool link_points_to_dir(int dfd, const char *name)
{
    struct stat st;
    return fstatat(dfd, name, &st, 0) == 0 && S_ISDIR(st.st_mode);
}

/* A symlink to a regular file of the same checkpoint folder (a Trainer's pytorch_model.bin naming
 * model.safetensors, Lightning's save_last="link") is pushed with the bytes it names: its pin is
 * a hard link of the target (pin.c). One that leaves the folder is not followed: that could
 * publish any file the daemon can read (a key, another job's data). */
static bool link_stays_inside(const char *dir, const char *path)
{
    char real_dir[PATH_MAX], real[PATH_MAX];
    struct stat st;
    size_t n;

    if (realpath(dir, real_dir) == NULL || realpath(path, real) == NULL || stat(real, &st) < 0 ||
        !S_ISREG(st.st_mode))
        return false;
    n = strlen(real_dir);
    return strncmp(real, real_dir, n) == 0 && real[n] == '/';
}

/* One file the detector took: what lstat says it is. A file already gone is left to the queue:
 * its pin is the truth (rotation may have deleted the original after the seal). */
static int check_member(struct admit_job *job, const char *rel)
{
    char path[PATH_MAX];
    struct stat st;
    const char *reason;
    bool refuse, to_dir = false;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", job->dir, rel) >= sizeof(path) ||
        lstat(path, &st) < 0)
        return list_add(&job->push, rel, NULL);
    if (S_ISLNK(st.st_mode)) {
        to_dir = link_points_to_dir(AT_FDCWD, path);
        if (!to_dir && admit_bad_name(rel) == NULL && link_stays_inside(job->dir, path))
            return list_add(&job->push, rel, NULL);
    }
    reason = admit_classify(rel, st.st_mode, to_dir, &refuse);
    if (reason == NULL && access(path, R_OK) < 0 && errno == EACCES) {
        reason = "unreadable";
        refuse = true;
    }
    if (reason == NULL)
        return list_add(&job->push, rel, NULL);
    return list_add(refuse ? &job->refused : &job->skipped, rel, reason);
}

/* What is in the folder besides the detector's files: left out, and said so. A regular file that
 * is not among them came after the seal (the detector reports that as a late write). */
static int list_dir(struct admit_job *job, const char *rel, int depth)
{
    char path[PATH_MAX], child[PATH_MAX];
    struct dirent *de;
    DIR *dir;
    int rc = 0;

    if (depth > ADMIT_MAX_DEPTH)
        return 0;
    if ((size_t)snprintf(path, sizeof(path), "%s%s%s", job->dir, rel[0] ? "/" : "", rel) >=
        sizeof(path))
        return 0;
    if ((dir = opendir(path)) == NULL)
        return 0; /* gone (rotation): nothing more to say than its pins do */
    while (rc == 0 && (de = readdir(dir)) != NULL && job->entries++ < ADMIT_MAX_ENTRIES) {
        struct stat st;
        const char *reason;
        bool refuse;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if ((size_t)snprintf(child, sizeof(child), "%s%s%s", rel, rel[0] ? "/" : "", de->d_name) >=
                sizeof(child) ||
            is_member(job, child) || fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (admit_bad_name(child) != NULL) {
            rc = list_add(&job->skipped, child, "bad-name");
            continue;
        }
        if (de->d_name[0] == '.') {
            if (!admit_writer_temporary(de->d_name))
                rc = list_add(&job->skipped, child, "hidden");
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            rc = list_dir(job, child, depth + 1);
            continue;
        }
        if (S_ISREG(st.st_mode))
            continue;
        reason = admit_classify(child, st.st_mode,
                                S_ISLNK(st.st_mode) && link_points_to_dir(dirfd(dir), de->d_name),
                                &refuse);
        rc = list_add(refuse ? &job->refused : &job->skipped, child, reason);
    }
    closedir(dir);
    return rc;
}

static void admit_work(uv_work_t *w)
{
    struct admit_job *job = w->data;

    for (size_t i = 0; i < job->n_files && job->status == 0; i++)
        job->status = check_member(job, job->files[i]);
    if (job->status == 0 && job->list_dir)
        job->status = list_dir(job, "", 0);
}

static void job_free(struct admit_job *job)
{
    for (size_t i = 0; i < job->n_files; i++)
        free(job->files[i]);
    free(job->files);
    free(job->sorted);
    free(job->dir);
    list_free(&job->push);
    list_free(&job->skipped);
    list_free(&job->refused);
    free(job);
}

static void admit_done(uv_work_t *w, int status)
{
    struct admit_job *job = w->data;
    struct admit_result res;
    struct admit_file *all = NULL;

    if (status == 0)
        status = job->status;
    if (status < 0) {
        /* Unchecked: every file goes on to the queue, whose own checks still hold. */
        all = calloc(job->n_files ? job->n_files : 1, sizeof(*all));
        for (size_t i = 0; all != NULL && i < job->n_files; i++)
            all[i].path = job->files[i];
        res = (struct admit_result){all, all != NULL ? job->n_files : 0, NULL, 0, NULL, 0};
    } else {
        res = (struct admit_result){job->push.v,    job->push.n,    job->skipped.v,
                                    job->skipped.n, job->refused.v, job->refused.n};
    }
    job->cb(job->ctx, status, &res);
    free(all);
    job_free(job);
}

int admit_check(struct uv_loop_s *loop, const char *dir, const char *const *files, size_t n,
                bool list_dir, admit_done_cb cb, void *ctx)
{
    struct admit_job *job = calloc(1, sizeof(*job));
    int rc;

    if (job == NULL)
        return -ENOMEM;
    job->cb = cb;
    job->ctx = ctx;
    job->list_dir = list_dir;
    job->dir = strdup(dir);
    job->files = calloc(n ? n : 1, sizeof(*job->files));
    job->sorted = calloc(n ? n : 1, sizeof(*job->sorted));
    if (job->dir == NULL || job->files == NULL || job->sorted == NULL)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        if ((job->files[i] = strdup(files[i])) == NULL)
            goto oom;
        job->sorted[i] = job->files[i];
        job->n_files++;
    }
    qsort(job->sorted, job->n_files, sizeof(*job->sorted), cmp_str);
    job->work.data = job;
    if ((rc = uv_queue_work(loop, &job->work, admit_work, admit_done)) < 0) {
        job_free(job);
        return rc;
    }
    return 0;
oom:
    job_free(job);
    return -ENOMEM;
}
