/* watch.c - recursive inotify read through a uv_poll, with scans for what predates a watch.
 *
 * Owns the inotify fd, the wd -> path map and the scan queue; reports root-relative events and
 * knows nothing of checkpoints. Runs on the loop thread only (see watch.h for the scan budget).
 */
#include "watch.h"

#include "err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define WATCH_MASK                                                                                 \
    (IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE |            \
     IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)
/* The root's parent: the root's own IN_DELETE_SELF waits until nothing holds it (an open file
 * below it, such as the journal, delays it indefinitely), its parent's IN_DELETE does not; and a
 * directory of the root's name appearing there again ends the wait. */
#define PARENT_MASK                                                                                \
    (IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_DELETE_SELF | IN_MOVE_SELF |         \
     IN_ONLYDIR)
#define READ_BUF 65536
#define MAX_BATCH (READ_BUF / sizeof(struct inotify_event) + 1) /* + a pending MOVED_FROM */
#define SCAN_STEPS_IDLE 16   /* directory listings per loop iteration for big scans */
#define SCAN_STEPS_URGENT 64 /* listings done at once for a directory that just appeared */
/* A rename's MOVED_TO is queued a moment after its MOVED_FROM: long enough for a renaming
 * process preempted between the two, short enough that a file moved out is reported at once. */
#define RENAME_PAIR_WAIT_MS 10

struct wdir {
    int wd;
    char *path; /* "" for the root */
};

struct scan_item {
    struct scan_item *next;
    char path[];
};

struct watch {
    uv_poll_t poll;
    uv_idle_t idle;
    uv_timer_t pair_timer; /* runs only while a MOVED_FROM waits for its MOVED_TO */
    int fd;
    int handles_open;
    bool closing;
    bool rescan_all;
    char *root;
    char *skip;
    watch_event_cb cb;
    void *ctx;
    watch_closed_cb closed_cb;
    void *closed_ctx;
    struct wdir *dirs; /* sorted by wd */
    size_t n_dirs, cap_dirs;
    struct scan_item *scan_head, *scan_tail;
    size_t n_scan;
    const struct inotify_event **batch;
    bool *consumed;
    /* A MOVED_FROM that ended a read, kept for its MOVED_TO: in the next read of the drain, or
     * up to RENAME_PAIR_WAIT_MS later (inotify(7): the pair is not queued atomically). */
    alignas(struct inotify_event) char pending[sizeof(struct inotify_event) + NAME_MAX + 1];
    bool has_pending;
    bool pair_waited; /* the pair timer fired: a MOVED_FROM still pending after it moved out */
    /* The root's directory itself (O_PATH): where it went when it is moved away. -1 unknown. */
    int root_fd;
    bool root_lost; /* deleted, moved or unmounted: waiting for it to come back */
    int parent_wd;  /* the parent's watch, -1 when it could not be watched or is gone */
};

const char *watch_kind_name(enum watch_kind kind)
{
    static const char *const names[] = {
        [WATCH_CREATE] = "create",           [WATCH_MODIFY] = "modify",
        [WATCH_CLOSE_WRITE] = "close_write", [WATCH_MOVED_IN] = "moved_in",
        [WATCH_RENAMED] = "renamed",         [WATCH_MOVED_OUT] = "moved_out",
        [WATCH_DELETE] = "delete",           [WATCH_ATTRIB] = "attrib",
        [WATCH_OVERFLOW] = "overflow",       [WATCH_SCANNED] = "scanned",
        [WATCH_UNLISTED] = "unlisted",       [WATCH_ERROR] = "error",
        [WATCH_ROOT_LOST] = "root_lost",     [WATCH_ROOT_BACK] = "root_back",
    };
    return (unsigned)kind < sizeof(names) / sizeof(names[0]) ? names[kind] : "unknown";
}

unsigned watch_count(const struct watch *w)
{
    return (unsigned)w->n_dirs;
}

bool watch_root_missing(const struct watch *w)
{
    return w != NULL && w->root_lost;
}

static void emit(struct watch *w, enum watch_kind kind, bool is_dir, const char *path,
                 const char *old_path)
{
    struct watch_event ev = {kind, is_dir, path, old_path, 0, NULL};
    if (!w->closing)
        w->cb(w->ctx, &ev);
}

static void emit_error(struct watch *w, const char *path, int error)
{
    char msg[PATH_MAX + 160];
    struct watch_event ev = {WATCH_ERROR, true, path, NULL, error, msg};
    if (error == -ENOSPC)
        snprintf(msg, sizeof(msg),
                 "cannot watch '%s': inotify watch limit reached, raise "
                 "fs.inotify.max_user_watches (or %d directories watched)",
                 path, WATCH_MAX_DIRS);
    else
        snprintf(msg, sizeof(msg), "cannot watch '%s': %s", path, strerror(-error));
    if (!w->closing)
        w->cb(w->ctx, &ev);
}

static int join(char *buf, size_t size, const char *dir, const char *name)
{
    int n =
        dir[0] == '\0' ? snprintf(buf, size, "%s", name) : snprintf(buf, size, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static bool under_or_at(const char *path, const char *prefix, size_t n)
{
    return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* --- wd map ------------------------------------------------------------------------------- */

static size_t dirs_lower(const struct watch *w, int wd)
{
    size_t lo = 0, hi = w->n_dirs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (w->dirs[mid].wd < wd)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct wdir *dirs_find(struct watch *w, int wd)
{
    size_t i = dirs_lower(w, wd);
    return i < w->n_dirs && w->dirs[i].wd == wd ? &w->dirs[i] : NULL;
}

static int dirs_set(struct watch *w, int wd, const char *path)
{
    size_t i = dirs_lower(w, wd);
    char *p = strdup(path);
    if (p == NULL)
        return -ENOMEM;
    if (i < w->n_dirs && w->dirs[i].wd == wd) {
        free(w->dirs[i].path);
        w->dirs[i].path = p;
        return 0;
    }
    if (w->n_dirs >= WATCH_MAX_DIRS) {
        free(p);
        return -ENOSPC;
    }
    if (w->n_dirs == w->cap_dirs) {
        size_t cap = w->cap_dirs == 0 ? 64 : w->cap_dirs * 2;
        struct wdir *a = realloc(w->dirs, cap * sizeof(*a));
        if (a == NULL) {
            free(p);
            return -ENOMEM;
        }
        w->dirs = a;
        w->cap_dirs = cap;
    }
    memmove(&w->dirs[i + 1], &w->dirs[i], (w->n_dirs - i) * sizeof(*w->dirs));
    w->dirs[i].wd = wd;
    w->dirs[i].path = p;
    w->n_dirs++;
    return 0;
}

static void dirs_del_at(struct watch *w, size_t i)
{
    free(w->dirs[i].path);
    memmove(&w->dirs[i], &w->dirs[i + 1], (w->n_dirs - i - 1) * sizeof(*w->dirs));
    w->n_dirs--;
}

/* Forgets the watches at and under path; rm asks the kernel too (moved out: still alive). */
static void dirs_drop_subtree(struct watch *w, const char *path, bool rm)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < w->n_dirs;) {
        if (under_or_at(w->dirs[i].path, path, n)) {
            if (rm)
                inotify_rm_watch(w->fd, w->dirs[i].wd);
            dirs_del_at(w, i);
            continue;
        }
        i++;
    }
}

static void dirs_rename_subtree(struct watch *w, const char *from, const char *to)
{
    size_t n = strlen(from);
    char buf[PATH_MAX];
    for (size_t i = 0; i < w->n_dirs; i++) {
        if (!under_or_at(w->dirs[i].path, from, n))
            continue;
        if ((size_t)snprintf(buf, sizeof(buf), "%s%s", to, w->dirs[i].path + n) >= sizeof(buf))
            continue;
        char *p = strdup(buf);
        if (p == NULL)
            continue;
        free(w->dirs[i].path);
        w->dirs[i].path = p;
    }
}

/* --- scans -------------------------------------------------------------------------------- */

static int scan_push(struct watch *w, const char *path, bool front)
{
    if (w->n_scan >= WATCH_MAX_DIRS)
        return -ENOSPC;
    size_t n = strlen(path) + 1;
    struct scan_item *it = malloc(sizeof(*it) + n);
    if (it == NULL)
        return -ENOMEM;
    memcpy(it->path, path, n);
    it->next = NULL;
    if (w->scan_head == NULL) {
        w->scan_head = w->scan_tail = it;
    } else if (front) {
        it->next = w->scan_head;
        w->scan_head = it;
    } else {
        w->scan_tail->next = it;
        w->scan_tail = it;
    }
    w->n_scan++;
    return 0;
}

/* Watch first, then list: whatever appears after the watch is an event, whatever was there
 * before is in the listing; the overlap is harmless (consumers treat scans as idempotent). */
static void scan_one(struct watch *w, const char *rel, bool urgent)
{
    char abs[PATH_MAX], child[PATH_MAX];
    struct dirent *de;
    int wd, dfd, rc;
    DIR *dir;

    if (rel[0] == '\0')
        snprintf(abs, sizeof(abs), "%s", w->root);
    else if (join(abs, sizeof(abs), w->root, rel) < 0)
        return;
    wd = inotify_add_watch(w->fd, abs, WATCH_MASK);
    if (wd < 0) {
        rc = -errno;
        if (rc != -ENOENT && rc != -ENOTDIR && rc != -ELOOP)
            emit_error(w, rel, rc);
        else if (rc == -ENOENT && rel[0] != '\0')
            emit(w, WATCH_UNLISTED, true, rel, NULL); /* made and removed (or renamed) unseen */
        return;
    }
    rc = dirs_set(w, wd, rel);
    if (rc < 0) {
        inotify_rm_watch(w->fd, wd);
        emit_error(w, rel, rc);
        return;
    }
    dfd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0) {
        if (rel[0] != '\0')
            emit(w, WATCH_UNLISTED, true, rel, NULL);
        return; /* gone meanwhile: its IN_IGNORED drops the watch */
    }
    dir = fdopendir(dfd);
    if (dir == NULL) {
        close(dfd);
        return;
    }
    while (!w->closing && (de = readdir(dir)) != NULL) {
        unsigned char type = de->d_type;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (rel[0] == '\0' && w->skip != NULL && strcmp(de->d_name, w->skip) == 0)
            continue;
        if (join(child, sizeof(child), rel, de->d_name) < 0)
            continue;
        if (type == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                continue;
            type = S_ISDIR(st.st_mode)   ? DT_DIR
                   : S_ISREG(st.st_mode) ? DT_REG
                   : S_ISLNK(st.st_mode) ? DT_LNK
                                         : DT_UNKNOWN;
        }
        if (type == DT_DIR) {
            emit(w, WATCH_SCANNED, true, child, NULL);
            rc = scan_push(w, child, urgent);
            if (rc < 0)
                emit_error(w, child, rc);
        } else if (type == DT_REG || type == DT_LNK) {
            /* a symlink as its IN_CREATE reports it (Lightning's last.ckpt, save_last="link") */
            emit(w, WATCH_SCANNED, false, child, NULL);
        }
    }
    closedir(dir);
}

static void on_idle(uv_idle_t *h);

static void idle_kick(struct watch *w)
{
    if (w->scan_head != NULL && !w->closing)
        uv_idle_start(&w->idle, on_idle);
}

static void scan_run(struct watch *w, int steps, bool urgent)
{
    while (steps-- > 0 && w->scan_head != NULL && !w->closing) {
        struct scan_item *it = w->scan_head;
        w->scan_head = it->next;
        if (w->scan_head == NULL)
            w->scan_tail = NULL;
        w->n_scan--;
        scan_one(w, it->path, urgent);
        free(it);
    }
    idle_kick(w);
}

static void on_idle(uv_idle_t *h)
{
    struct watch *w = h->data;
    scan_run(w, SCAN_STEPS_IDLE, false);
    if (w->scan_head == NULL || w->closing)
        uv_idle_stop(&w->idle);
}

/* A directory appeared (created, moved in, renamed): watch and list it now, and its subdirs
 * ahead of any background scan, so a tree made by mkdir -p is caught up at once. */
static void scan_now(struct watch *w, const char *rel)
{
    scan_one(w, rel, true);
    scan_run(w, SCAN_STEPS_URGENT, true);
}

/* --- the root deleted or moved away, and back ------------------------------------------- */

static void wait_for_root(struct watch *w);

static void emit_root_error(struct watch *w, const char *what, const char *path, int error)
{
    char msg[2 * PATH_MAX + 160];
    struct watch_event ev = {WATCH_ERROR, true, "", NULL, error, msg};

    snprintf(msg, sizeof(msg), "'%s' is gone and cannot be waited for: %s '%s': %s", w->root, what,
             path, strerror(-error));
    if (!w->closing)
        w->cb(w->ctx, &ev);
}

/* Where the root's directory is now, after IN_MOVE_SELF: the kernel's name for our O_PATH fd. */
static const char *root_now(struct watch *w, char *buf, size_t size)
{
    char link[64];
    ssize_t n;

    if (w->root_fd < 0)
        return NULL;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", w->root_fd);
    n = readlink(link, buf, size - 1);
    if (n <= 0 || (size_t)n >= size - 1)
        return NULL;
    buf[n] = '\0';
    if (strstr(buf, " (deleted)") != NULL || buf[0] != '/')
        return NULL;
    return buf;
}

static void open_root_fd(struct watch *w)
{
    if (w->root_fd >= 0)
        close(w->root_fd);
    w->root_fd = open(w->root, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
}

static const char *root_base(const struct watch *w)
{
    const char *slash = strrchr(w->root, '/');
    return slash != NULL ? slash + 1 : w->root;
}

/* The old tree is no concern of ours any more: forget every watch and scan of it. */
static void root_lost(struct watch *w, bool moved)
{
    char where[PATH_MAX];
    const char *to;

    if (w->root_lost)
        return;
    emit(w, moved ? WATCH_MOVED_OUT : WATCH_DELETE, true, "", NULL);
    w->root_lost = true;
    to = moved ? root_now(w, where, sizeof(where)) : NULL;
    for (size_t i = 0; i < w->n_dirs; i++) {
        inotify_rm_watch(w->fd, w->dirs[i].wd); /* EINVAL for those already gone: harmless */
        free(w->dirs[i].path);
    }
    w->n_dirs = 0;
    while (w->scan_head != NULL) {
        struct scan_item *it = w->scan_head;
        w->scan_head = it->next;
        free(it);
    }
    w->scan_tail = NULL;
    w->n_scan = 0;
    w->has_pending = false;
    if (w->root_fd >= 0)
        close(w->root_fd);
    w->root_fd = -1;
    emit(w, WATCH_ROOT_LOST, true, "", to);
    if (!w->closing)
        wait_for_root(w);
}

static void root_back(struct watch *w)
{
    int wd, rc;

    wd = inotify_add_watch(w->fd, w->root, WATCH_MASK);
    if (wd < 0) {
        rc = -errno;
        if (rc == -ENOENT || rc == -ENOTDIR)
            wait_for_root(w); /* gone again already */
        else
            emit_root_error(w, "cannot watch it again at", w->root, rc);
        return;
    }
    if ((rc = dirs_set(w, wd, "")) < 0 || (rc = scan_push(w, "", false)) < 0) {
        inotify_rm_watch(w->fd, wd);
        emit_root_error(w, "cannot watch it again at", w->root, rc);
        return;
    }
    w->root_lost = false;
    open_root_fd(w);
    emit(w, WATCH_ROOT_BACK, true, "", NULL);
    idle_kick(w);
}

static int watch_parent(struct watch *w)
{
    char parent[PATH_MAX];
    const char *slash = strrchr(w->root, '/');

    if (w->parent_wd >= 0)
        return 0;
    if (slash == NULL)
        snprintf(parent, sizeof(parent), ".");
    else if (slash == w->root)
        snprintf(parent, sizeof(parent), "/");
    else
        snprintf(parent, sizeof(parent), "%.*s", (int)(slash - w->root), w->root);
    w->parent_wd = inotify_add_watch(w->fd, parent, PARENT_MASK);
    if (w->parent_wd < 0 && w->root_lost)
        emit_root_error(w, "cannot watch its parent", parent, -errno);
    return w->parent_wd < 0 ? -1 : 0;
}

/* Event-driven: the parent's watch reports the root's return, no polling; a root made again
 * before that watch existed is seen by the lstat after it. */
static void wait_for_root(struct watch *w)
{
    struct stat st;

    if (watch_parent(w) == 0 && lstat(w->root, &st) == 0 && S_ISDIR(st.st_mode))
        root_back(w);
}

static void parent_event(struct watch *w, const struct inotify_event *ev)
{
    bool ours = (ev->mask & IN_ISDIR) && ev->len > 0 && strcmp(ev->name, root_base(w)) == 0;

    if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
        if (!(ev->mask & IN_IGNORED))
            inotify_rm_watch(w->fd, w->parent_wd);
        w->parent_wd = -1;
        if (w->root_lost)
            emit_root_error(w, "its parent is gone too", "", -ENOENT);
        return;
    }
    if (!ours)
        return;
    if (ev->mask & (IN_DELETE | IN_MOVED_FROM))
        root_lost(w, (ev->mask & IN_MOVED_FROM) != 0);
    else if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) && w->root_lost)
        root_back(w);
}

/* --- reading ------------------------------------------------------------------------------ */

/* A FIFO, socket, device or symlink is complete when it is made: no write, so no close, will
 * ever say so. Reported as found by a listing (state known), never as a file being written. One
 * lstat, metadata only, like the listings. */
static bool special_file(const struct watch *w, const char *rel)
{
    char abs[PATH_MAX];
    struct stat st;

    return join(abs, sizeof(abs), w->root, rel) == 0 && lstat(abs, &st) == 0 &&
           !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
}

/* One path component, NUL-terminated within its padded length: what the kernel sends. A name
 * with '/' or a "." or ".." would make paths outside the tree. */
static bool name_ok(const char *name, size_t size)
{
    size_t n = strnlen(name, size);

    return n < size && memchr(name, '/', n) == NULL && strcmp(name, ".") != 0 &&
           strcmp(name, "..") != 0;
}

size_t watch_decode(const char *buf, size_t len, const struct inotify_event **ret, size_t max)
{
    size_t n = 0, off = 0;

    while (n < max && len - off >= sizeof(struct inotify_event)) {
        const struct inotify_event *ev = (const struct inotify_event *)(buf + off);
        /* The kernel pads names with NULs to keep the next record aligned. */
        if (ev->len > len - off - sizeof(*ev) || ev->len % alignof(struct inotify_event) != 0 ||
            (ev->len > 0 && !name_ok(ev->name, ev->len)))
            break;
        ret[n++] = ev;
        off += sizeof(*ev) + ev->len;
    }
    return n;
}

static void process_batch(struct watch *w, const char *buf, size_t len)
{
    size_t n = 0;
    char from[PATH_MAX], to[PATH_MAX];
    const struct inotify_event *pending = (const struct inotify_event *)w->pending;

    if (w->has_pending) {
        w->has_pending = false;
        w->batch[n] = pending;
        w->consumed[n] = false;
        n++;
    }
    if (buf != NULL)
        n += watch_decode(buf, len, w->batch + n, MAX_BATCH - n);
    for (size_t i = 0; i < n; i++)
        w->consumed[i] = false;
    for (size_t i = 0; i < n && !w->closing; i++) {
        const struct inotify_event *ev = w->batch[i];
        bool is_dir = (ev->mask & IN_ISDIR) != 0;
        struct wdir *d;

        if (w->consumed[i])
            continue;
        if (ev->mask & IN_Q_OVERFLOW) {
            emit(w, WATCH_OVERFLOW, false, "", NULL);
            w->rescan_all = true;
            continue;
        }
        if (w->parent_wd >= 0 && ev->wd == w->parent_wd) {
            parent_event(w, ev);
            continue;
        }
        d = dirs_find(w, ev->wd);
        if (d == NULL)
            continue; /* dropped already (moved out, deleted) */
        if (ev->mask & IN_IGNORED) {
            bool root = d->path[0] == '\0';
            dirs_del_at(w, (size_t)(d - w->dirs));
            if (root)
                root_lost(w, false); /* unmounted, or its IN_DELETE_SELF was lost */
            continue;
        }
        if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
            /* The parent reports the delete or the move; only the root has no parent here. */
            if (d->path[0] == '\0')
                root_lost(w, (ev->mask & IN_MOVE_SELF) != 0);
            continue;
        }
        if (ev->len == 0 || ev->name[0] == '\0')
            continue;
        if (d->path[0] == '\0' && w->skip != NULL && strcmp(ev->name, w->skip) == 0)
            continue;
        if (join(from, sizeof(from), d->path, ev->name) < 0)
            continue;

        if (ev->mask & IN_CREATE) {
            emit(w, is_dir || !special_file(w, from) ? WATCH_CREATE : WATCH_SCANNED, is_dir, from,
                 NULL);
            if (is_dir)
                scan_now(w, from);
        }
        if (ev->mask & IN_MODIFY)
            emit(w, WATCH_MODIFY, is_dir, from, NULL);
        if (ev->mask & IN_ATTRIB)
            emit(w, WATCH_ATTRIB, is_dir, from, NULL);
        if (ev->mask & IN_CLOSE_WRITE)
            emit(w, WATCH_CLOSE_WRITE, is_dir, from, NULL);
        if (ev->mask & IN_DELETE) {
            if (is_dir)
                dirs_drop_subtree(w, from, false);
            emit(w, WATCH_DELETE, is_dir, from, NULL);
        }
        if (ev->mask & IN_MOVED_FROM) {
            struct wdir *dd = NULL;
            size_t j;
            for (j = i + 1; j < n && ev->cookie != 0; j++) {
                const struct inotify_event *e2 = w->batch[j];
                if ((e2->mask & IN_MOVED_TO) && e2->cookie == ev->cookie && !w->consumed[j]) {
                    dd = dirs_find(w, e2->wd);
                    break;
                }
            }
            if (j >= n && i == n - 1 && ev != pending && ev->cookie != 0 &&
                sizeof(*ev) + ev->len <= sizeof(w->pending) && buf != NULL) {
                memcpy(w->pending, ev, sizeof(*ev) + ev->len);
                w->has_pending = true;
                continue;
            }
            if (dd != NULL) {
                w->consumed[j] = true;
                /* Into the staging dir is out of the tree, like anywhere unwatched. */
                if ((dd->path[0] == '\0' && w->skip != NULL &&
                     strcmp(w->batch[j]->name, w->skip) == 0) ||
                    join(to, sizeof(to), dd->path, w->batch[j]->name) < 0)
                    dd = NULL;
            }
            if (dd != NULL) {
                emit(w, WATCH_RENAMED, is_dir, to, from);
                if (is_dir) {
                    dirs_rename_subtree(w, from, to);
                    scan_now(w, to);
                }
            } else {
                if (is_dir)
                    dirs_drop_subtree(w, from, true);
                emit(w, WATCH_MOVED_OUT, is_dir, from, NULL);
            }
        }
        if (ev->mask & IN_MOVED_TO) {
            emit(w, WATCH_MOVED_IN, is_dir, from, NULL);
            if (is_dir)
                scan_now(w, from);
        }
    }
}

static void drain(struct watch *w);

static void on_pair_timer(uv_timer_t *t)
{
    struct watch *w = t->data;
    w->pair_waited = true;
    drain(w);
}

/* After reading the fd to EAGAIN. */
static void drain_end(struct watch *w)
{
    if (w->has_pending && w->pair_waited)
        process_batch(w, NULL, 0); /* its MOVED_TO never came: moved out */
    else if (w->has_pending && !uv_is_active((uv_handle_t *)&w->pair_timer))
        uv_timer_start(&w->pair_timer, on_pair_timer, RENAME_PAIR_WAIT_MS, 0);
    w->pair_waited = false;
    if (!w->has_pending)
        uv_timer_stop(&w->pair_timer);
    if (w->rescan_all) {
        w->rescan_all = false;
        if (scan_push(w, "", false) == 0)
            idle_kick(w);
    }
    idle_kick(w);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    struct watch *w = h->data;

    (void)events;
    if (w->closing)
        return;
    if (status < 0) {
        emit_error(w, "", status);
        return;
    }
    drain(w);
}

void watch_read_now(struct watch *w)
{
    if (w != NULL && !w->closing)
        drain(w);
}

/* Reads until the kernel queue is empty: every event that happened before this call is reported
 * before it returns. */
static void drain(struct watch *w)
{
    alignas(struct inotify_event) char buf[READ_BUF];

    for (;;) {
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                emit_error(w, "", -errno);
            break;
        }
        if (n == 0)
            break;
        process_batch(w, buf, (size_t)n);
        if (w->closing)
            return;
    }
    drain_end(w);
}

void watch_feed(struct watch *w, const char *buf, size_t len)
{
    alignas(struct inotify_event) char copy[READ_BUF];

    if (w->closing)
        return;
    if (buf == NULL) {
        if (w->has_pending)
            process_batch(w, NULL, 0); /* the end of the input: no MOVED_TO will come */
        drain_end(w);
        return;
    }
    if (len > sizeof(copy))
        len = sizeof(copy);
    memcpy(copy, buf, len);
    process_batch(w, copy, len);
}

/* --- lifecycle ---------------------------------------------------------------------------- */

static void watch_free(struct watch *w)
{
    if (w->fd >= 0)
        close(w->fd);
    if (w->root_fd >= 0)
        close(w->root_fd);
    for (size_t i = 0; i < w->n_dirs; i++)
        free(w->dirs[i].path);
    while (w->scan_head != NULL) {
        struct scan_item *it = w->scan_head;
        w->scan_head = it->next;
        free(it);
    }
    free(w->dirs);
    free(w->batch);
    free(w->consumed);
    free(w->root);
    free(w->skip);
    free(w);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct watch *w = h->data;
    if (--w->handles_open > 0)
        return;
    watch_closed_cb cb = w->closed_cb;
    void *ctx = w->closed_ctx;
    watch_free(w);
    if (cb != NULL)
        cb(ctx);
}

void watch_close(struct watch *w, watch_closed_cb closed_cb, void *ctx)
{
    if (w == NULL || w->closing)
        return;
    w->closing = true;
    w->closed_cb = closed_cb;
    w->closed_ctx = ctx;
    uv_close((uv_handle_t *)&w->poll, on_handle_closed);
    uv_close((uv_handle_t *)&w->idle, on_handle_closed);
    uv_close((uv_handle_t *)&w->pair_timer, on_handle_closed);
}

static int start_error(struct ckpt_err *err, const char *root, int code)
{
    if (code == -ENOSPC)
        return ckpt_err_set(err, CKPT_ERR_IO, code,
                            "cannot watch '%s': inotify watch limit reached, raise "
                            "fs.inotify.max_user_watches",
                            root);
    if (code == -EMFILE)
        return ckpt_err_set(err, CKPT_ERR_IO, code,
                            "cannot create an inotify instance: limit reached, raise "
                            "fs.inotify.max_user_instances");
    return ckpt_err_set(err, CKPT_ERR_IO, code, "cannot watch '%s': %s", root, strerror(-code));
}

int watch_start(struct watch **ret, struct uv_loop_s *loop, const char *root, const char *skip_name,
                watch_event_cb cb, void *ctx, struct ckpt_err *err)
{
    struct watch *w;
    int rc, wd;

    if (root == NULL || root[0] == '\0' || cb == NULL)
        return ckpt_err_set(err, CKPT_ERR_INPUT, -EINVAL, "watch root missing");
    if (strlen(root) >= PATH_MAX - 256)
        return start_error(err, root, -ENAMETOOLONG);
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->fd = -1;
    w->root_fd = -1;
    w->parent_wd = -1;
    w->cb = cb;
    w->ctx = ctx;
    w->root = strdup(root);
    w->skip = skip_name != NULL && skip_name[0] != '\0' ? strdup(skip_name) : NULL;
    w->batch = calloc(MAX_BATCH, sizeof(*w->batch));
    w->consumed = calloc(MAX_BATCH, sizeof(*w->consumed));
    if (w->root == NULL || w->batch == NULL || w->consumed == NULL ||
        (skip_name != NULL && skip_name[0] != '\0' && w->skip == NULL)) {
        rc = -ENOMEM;
        goto error;
    }
    /* "dir/" and "dir" are the same root; keep joins free of "//". */
    for (size_t n = strlen(w->root); n > 1 && w->root[n - 1] == '/'; n--)
        w->root[n - 1] = '\0';

    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0) {
        rc = start_error(err, root, -errno);
        goto error;
    }
    wd = inotify_add_watch(w->fd, w->root, WATCH_MASK);
    if (wd < 0) {
        rc = start_error(err, root, -errno);
        goto error;
    }
    rc = dirs_set(w, wd, "");
    if (rc < 0)
        goto error;
    open_root_fd(w);
    watch_parent(w); /* without it only the root's own events say it is gone */
    rc = scan_push(w, "", false);
    if (rc < 0)
        goto error;
    rc = uv_poll_init(loop, &w->poll, w->fd);
    if (rc < 0) {
        start_error(err, root, rc);
        goto error;
    }
    /* From here on the handles exist: failures go through uv_close. */
    w->poll.data = w;
    uv_idle_init(loop, &w->idle);
    w->idle.data = w;
    uv_timer_init(loop, &w->pair_timer);
    w->pair_timer.data = w;
    w->handles_open = 3;
    rc = uv_poll_start(&w->poll, UV_READABLE, on_readable);
    if (rc < 0) {
        start_error(err, root, rc);
        watch_close(w, NULL, NULL);
        return rc;
    }
    idle_kick(w);
    *ret = w;
    return 0;

error:
    watch_free(w);
    return rc;
}
