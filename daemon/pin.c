/* pin.c - staging hard links, per-candidate ordered requests on libuv's thread pool.
 *
 * Owns the request queues and the "copy at seal" lists; the loop thread builds each request
 * (all strings resolved up front), a pool thread runs its syscalls, the loop thread reports.
 * uv_queue_work rather than chained uv_fs_* calls: mkdir -p + link + replace is one job that
 * holds one pool slot and cannot be interleaved with the candidate's next request.
 */
#include "pin.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

enum req_op { REQ_ADD, REQ_RENAME, REQ_REMOVE, REQ_COPY, REQ_IDLE, REQ_RELEASE };

struct copy_ent {
    struct copy_ent *next;
    char *src;     /* absolute */
    char *relpath; /* candidate-relative */
    int status;    /* set by the worker */
};

struct pin_req {
    uv_work_t work;
    struct pin_req *next;
    struct pin_cand *pc;
    enum req_op op;
    char *src; /* absolute: ADD source, RENAME old staging path */
    char *dst; /* absolute staging path */
    char *relpath;
    char *from;              /* RENAME: old relpath */
    struct copy_ent *copies; /* COPY: a snapshot taken when it starts */
    pin_done_cb cb;
    void *ctx;
    size_t base_len; /* of the root, in dst */
    int status;
    bool link_impossible;
};

struct pin_cand {
    struct pin_cand *next;
    struct pin *pin;
    uint64_t id;
    struct pin_req *head, *tail;
    bool running;
    struct copy_ent *copies; /* files to copy at seal */
};

struct pin {
    uv_loop_t *loop;
    char *root;
    char *staging; /* absolute <root>/<staging_name> */
    pin_result_cb cb;
    void *ctx;
    struct pin_cand *cands;
    size_t queued;
    size_t running;
    bool closing;
    bool warned_copy;
    struct pin_cand *dispatching; /* whose results are being reported: not freed meanwhile */
    pin_closed_cb closed_cb;
    void *closed_ctx;
};

static bool rel_valid(const char *p)
{
    if (p == NULL || p[0] == '\0' || p[0] == '/')
        return false;
    for (const char *s = p; *s != '\0';) {
        size_t n = strcspn(s, "/");
        if ((n == 2 && s[0] == '.' && s[1] == '.') || n == 0)
            return false;
        s += n;
        if (*s == '/')
            s++;
    }
    return strlen(p) < PATH_MAX - 128;
}

int pin_path(const struct pin *p, uint64_t id, const char *relpath, char *buf, size_t size)
{
    int n;
    if (!rel_valid(relpath))
        return -EINVAL;
    n = snprintf(buf, size, "%s/pins/%llu/%s", p->staging, (unsigned long long)id, relpath);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static char *cand_dir(const struct pin *p, uint64_t id)
{
    char buf[PATH_MAX];
    int n = snprintf(buf, sizeof(buf), "%s/pins/%llu", p->staging, (unsigned long long)id);
    return n < 0 || (size_t)n >= sizeof(buf) ? NULL : strdup(buf);
}

/* --- worker side (pool threads): syscalls only, no shared state ---------------------------- */

/* Creates the parents of path below its first base_len bytes (the root: never recreated, a
 * deleted root must not come back as a staging tree). */
static int mkdir_parents(const char *path, size_t base_len)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    if (base_len >= strlen(buf))
        return -EINVAL;
    for (char *s = buf + base_len + 1; *s != '\0'; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(buf, 0700) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    return 0;
}

static int do_link(const char *src, const char *dst, size_t base_len)
{
    struct stat st;
    int rc = mkdir_parents(dst, base_len);
    if (rc < 0)
        return rc;
    int follow = 0;
    if (lstat(src, &st) < 0)
        return -errno;
    if (S_ISLNK(st.st_mode)) {
        /* Lightning's save_last="link": last.ckpt is a symlink to the save's file; the pin holds
         * the file it names, so the push sends those bytes as last.ckpt. */
        if (stat(src, &st) < 0)
            return -errno;
        follow = AT_SYMLINK_FOLLOW;
    }
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    if (linkat(AT_FDCWD, src, AT_FDCWD, dst, follow) == 0)
        return 0;
    if (errno != EEXIST)
        return -errno;
    /* Replaced by a rename: the old link pins the old inode, the new one must win. */
    if (unlink(dst) < 0 && errno != ENOENT)
        return -errno;
    return linkat(AT_FDCWD, src, AT_FDCWD, dst, follow) == 0 ? 0 : -errno;
}

static int do_copy(const char *src, const char *dst, size_t base_len)
{
    char tmp[PATH_MAX], buf[1 << 16];
    struct stat st;
    int in, out, rc = 0;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.copy-tmp", dst) >= sizeof(tmp))
        return -ENAMETOOLONG;
    rc = mkdir_parents(dst, base_len);
    if (rc < 0)
        return rc;
    /* O_NONBLOCK: a FIFO renamed over the file since it was linked must fail, not block. */
    in = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
    if (in < 0)
        return -errno;
    if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(in);
        return -EINVAL;
    }
    out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (out < 0) {
        rc = -errno;
        close(in);
        return rc;
    }
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : 0;
            break;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t m = write(out, buf + off, (size_t)(n - off));
            if (m < 0 && errno == EINTR)
                continue;
            if (m < 0) {
                rc = -errno;
                break;
            }
            off += m;
        }
        if (rc < 0)
            break;
    }
    close(in);
    if (close(out) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, dst) < 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
    return rc;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
    return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

static void work_run(uv_work_t *wk)
{
    struct pin_req *r = wk->data;
    switch (r->op) {
    case REQ_ADD:
        r->status = do_link(r->src, r->dst, r->base_len);
        r->link_impossible = r->status == -EXDEV || r->status == -EPERM;
        break;
    case REQ_RENAME:
        r->status = mkdir_parents(r->dst, r->base_len);
        if (r->status == 0 && rename(r->src, r->dst) < 0)
            r->status = -errno;
        break;
    case REQ_REMOVE:
        r->status = unlink(r->dst) < 0 && errno != ENOENT ? -errno : 0;
        break;
    case REQ_COPY:
        r->status = 0;
        for (struct copy_ent *e = r->copies; e != NULL; e = e->next) {
            char dst[PATH_MAX];
            if ((size_t)snprintf(dst, sizeof(dst), "%s/%s", r->dst, e->relpath) >= sizeof(dst))
                e->status = -ENAMETOOLONG;
            else
                e->status = do_copy(e->src, dst, r->base_len);
            if (e->status < 0 && e->status != -ENOENT && r->status == 0)
                r->status = e->status;
        }
        break;
    case REQ_IDLE:
        r->status = 0;
        break;
    case REQ_RELEASE: {
        struct stat st;
        r->status = 0;
        if (lstat(r->dst, &st) < 0)
            break;
        if (nftw(r->dst, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
            r->status = errno != 0 ? -errno : -EIO;
        break;
    }
    }
}

/* --- loop side ---------------------------------------------------------------------------- */

static void copies_free(struct copy_ent *e)
{
    while (e != NULL) {
        struct copy_ent *next = e->next;
        free(e->src);
        free(e->relpath);
        free(e);
        e = next;
    }
}

static void req_free(struct pin_req *r)
{
    free(r->src);
    free(r->dst);
    free(r->relpath);
    free(r->from);
    copies_free(r->copies);
    free(r);
}

static struct pin_cand *cand_get(struct pin *p, uint64_t id, bool create)
{
    for (struct pin_cand *pc = p->cands; pc != NULL; pc = pc->next) {
        if (pc->id == id)
            return pc;
    }
    if (!create)
        return NULL;
    struct pin_cand *pc = calloc(1, sizeof(*pc));
    if (pc == NULL)
        return NULL;
    pc->pin = p;
    pc->id = id;
    pc->next = p->cands;
    p->cands = pc;
    return pc;
}

static void cand_unlink_free(struct pin *p, struct pin_cand *pc)
{
    for (struct pin_cand **pp = &p->cands; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == pc) {
            *pp = pc->next;
            break;
        }
    }
    for (struct pin_req *r = pc->head; r != NULL;) {
        struct pin_req *next = r->next;
        req_free(r);
        r = next;
    }
    copies_free(pc->copies);
    free(pc);
}

static void pin_free(struct pin *p)
{
    while (p->cands != NULL)
        cand_unlink_free(p, p->cands);
    free(p->root);
    free(p->staging);
    free(p);
}

static struct copy_ent **copies_find(struct pin_cand *pc, const char *relpath)
{
    for (struct copy_ent **e = &pc->copies; *e != NULL; e = &(*e)->next) {
        if (strcmp((*e)->relpath, relpath) == 0)
            return e;
    }
    return NULL;
}

static void copies_forget(struct pin_cand *pc, const char *relpath)
{
    struct copy_ent **e = copies_find(pc, relpath);
    if (e != NULL) {
        struct copy_ent *x = *e;
        *e = x->next;
        x->next = NULL;
        copies_free(x);
    }
}

static struct copy_ent *copies_snapshot(const struct pin_cand *pc)
{
    struct copy_ent *head = NULL, **tail = &head;
    for (const struct copy_ent *e = pc->copies; e != NULL; e = e->next) {
        struct copy_ent *c = calloc(1, sizeof(*c));
        if (c == NULL)
            break;
        c->src = strdup(e->src);
        c->relpath = strdup(e->relpath);
        if (c->src == NULL || c->relpath == NULL) {
            copies_free(c);
            break;
        }
        *tail = c;
        tail = &c->next;
    }
    return head;
}

static void report(struct pin *p, enum pin_op op, uint64_t id, const char *relpath,
                   const char *from, int status, bool copy)
{
    struct pin_result res = {op, id, relpath, from, status, copy};
    if (p->cb != NULL)
        p->cb(p->ctx, &res);
}

static void kick(struct pin_cand *pc);
static void finish_close(struct pin *p);
static void dispatch(struct pin *p, struct pin_cand *pc, struct pin_req *r);

static void work_done(uv_work_t *wk, int status)
{
    struct pin_req *r = wk->data;
    struct pin_cand *pc = r->pc;
    struct pin *p = pc->pin;

    pc->head = r->next;
    if (pc->head == NULL)
        pc->tail = NULL;
    pc->running = false;
    p->running--;
    p->queued--;
    if (status < 0 && r->status == 0)
        r->status = status;
    if (!p->closing)
        dispatch(p, pc, r);
    req_free(r);
    if (p->closing) {
        if (p->running == 0)
            finish_close(p);
        return;
    }
    /* pc may have been given more work by the callbacks. */
    if (pc->head == NULL && pc->copies == NULL)
        cand_unlink_free(p, pc);
    else
        kick(pc);
}

static void finish_close(struct pin *p)
{
    pin_closed_cb cb = p->closed_cb;
    void *ctx = p->closed_ctx;
    pin_free(p);
    if (cb != NULL)
        cb(ctx);
}

/* Reports one finished request; callbacks may make new requests or close the pin. */
static void dispatch(struct pin *p, struct pin_cand *pc, struct pin_req *r)
{
    p->dispatching = pc;
    switch (r->op) {
    case REQ_ADD:
        if (r->link_impossible) {
            struct copy_ent *e = calloc(1, sizeof(*e));
            if (e != NULL && (e->src = strdup(r->src)) != NULL &&
                (e->relpath = strdup(r->relpath)) != NULL) {
                copies_forget(pc, r->relpath);
                e->next = pc->copies;
                pc->copies = e;
                if (!p->warned_copy) {
                    p->warned_copy = true;
                    log_warn("pin_fallback",
                             "cannot hard-link into '%s': %s, copying files at seal instead",
                             p->staging, strerror(-r->status));
                }
                r->status = 0;
            } else {
                copies_free(e);
                r->status = -ENOMEM;
                r->link_impossible = false;
            }
        } else if (r->status == 0) {
            copies_forget(pc, r->relpath);
        }
        report(p, PIN_ADD, pc->id, r->relpath, NULL, r->status, r->link_impossible);
        break;
    case REQ_RENAME: {
        struct copy_ent **e = copies_find(pc, r->from);
        if (e != NULL) {
            /* The copy is taken at seal from the file's new place. */
            char *rel = strdup(r->relpath);
            char src[PATH_MAX];
            const char *old_src = (*e)->src;
            size_t ol = strlen(old_src), fl = strlen(r->from);
            if (rel != NULL && ol >= fl &&
                (size_t)snprintf(src, sizeof(src), "%.*s%s", (int)(ol - fl), old_src, r->relpath) <
                    sizeof(src)) {
                char *s = strdup(src);
                if (s != NULL) {
                    copies_forget(pc, r->relpath);
                    e = copies_find(pc, r->from);
                    free((*e)->src);
                    free((*e)->relpath);
                    (*e)->src = s;
                    (*e)->relpath = rel;
                    rel = NULL;
                    r->status = 0;
                }
            }
            free(rel);
        }
        report(p, PIN_RENAME, pc->id, r->relpath, r->from, r->status, false);
        break;
    }
    case REQ_REMOVE:
        copies_forget(pc, r->relpath);
        report(p, PIN_REMOVE, pc->id, r->relpath, NULL, r->status, false);
        break;
    case REQ_COPY:
        for (struct copy_ent *e = r->copies; e != NULL; e = e->next) {
            /* A file gone before its copy is lost for good: reported once, not copied again.
             * Other errors (a full disk) keep it listed for the next pin_copy_pending. */
            if (e->status == 0 || e->status == -ENOENT)
                copies_forget(pc, e->relpath);
            report(p, PIN_COPY, pc->id, e->relpath, NULL, e->status, false);
        }
        if (r->cb != NULL)
            r->cb(r->ctx, r->status);
        break;
    case REQ_RELEASE:
        copies_free(pc->copies);
        pc->copies = NULL;
        if (r->cb != NULL)
            r->cb(r->ctx, r->status);
        break;
    case REQ_IDLE:
        if (r->cb != NULL)
            r->cb(r->ctx, r->status);
        break;
    }
    p->dispatching = NULL;
}

static void kick(struct pin_cand *pc)
{
    struct pin *p = pc->pin;
    struct pin_req *r = pc->head;
    if (pc->running || r == NULL || p->closing)
        return;
    if (r->op == REQ_COPY)
        r->copies = copies_snapshot(pc);
    r->work.data = r;
    int rc = uv_queue_work(p->loop, &r->work, work_run, work_done);
    if (rc < 0) {
        /* Only fails for a NULL work callback; keep the request queued for the next kick. */
        return;
    }
    pc->running = true;
    p->running++;
}

static int enqueue(struct pin *p, uint64_t id, enum req_op op, char *src, char *dst,
                   const char *relpath, const char *from, pin_done_cb cb, void *ctx)
{
    struct pin_cand *pc;
    struct pin_req *r;

    if (p->closing) {
        free(src);
        free(dst);
        return -ECANCELED;
    }
    if (p->queued >= PIN_MAX_QUEUED) {
        free(src);
        free(dst);
        return -ENOBUFS;
    }
    r = calloc(1, sizeof(*r));
    pc = cand_get(p, id, true);
    if (r == NULL || pc == NULL) {
        free(r);
        free(src);
        free(dst);
        return -ENOMEM;
    }
    r->pc = pc;
    r->base_len = strlen(p->root);
    r->op = op;
    r->src = src;
    r->dst = dst;
    r->cb = cb;
    r->ctx = ctx;
    r->relpath = relpath != NULL ? strdup(relpath) : NULL;
    r->from = from != NULL ? strdup(from) : NULL;
    if ((relpath != NULL && r->relpath == NULL) || (from != NULL && r->from == NULL) ||
        (op != REQ_IDLE && dst == NULL)) {
        req_free(r);
        if (pc->head == NULL && pc->copies == NULL && !pc->running && pc != p->dispatching)
            cand_unlink_free(p, pc);
        return -ENOMEM;
    }
    if (pc->tail != NULL)
        pc->tail->next = r;
    else
        pc->head = r;
    pc->tail = r;
    p->queued++;
    kick(pc);
    return 0;
}

static char *abs_of(const struct pin *p, const char *rel)
{
    char buf[PATH_MAX];
    int n = snprintf(buf, sizeof(buf), "%s/%s", p->root, rel);
    return n < 0 || (size_t)n >= sizeof(buf) ? NULL : strdup(buf);
}

static char *staged_of(const struct pin *p, uint64_t id, const char *rel)
{
    char buf[PATH_MAX];
    return pin_path(p, id, rel, buf, sizeof(buf)) < 0 ? NULL : strdup(buf);
}

int pin_add(struct pin *p, uint64_t id, const char *src, const char *relpath)
{
    if (!rel_valid(src) || !rel_valid(relpath))
        return -EINVAL;
    return enqueue(p, id, REQ_ADD, abs_of(p, src), staged_of(p, id, relpath), relpath, NULL, NULL,
                   NULL);
}

int pin_rename(struct pin *p, uint64_t id, const char *from, const char *to)
{
    if (!rel_valid(from) || !rel_valid(to))
        return -EINVAL;
    return enqueue(p, id, REQ_RENAME, staged_of(p, id, from), staged_of(p, id, to), to, from, NULL,
                   NULL);
}

int pin_remove(struct pin *p, uint64_t id, const char *relpath)
{
    if (!rel_valid(relpath))
        return -EINVAL;
    return enqueue(p, id, REQ_REMOVE, NULL, staged_of(p, id, relpath), relpath, NULL, NULL, NULL);
}

int pin_copy_pending(struct pin *p, uint64_t id, pin_done_cb cb, void *ctx)
{
    return enqueue(p, id, REQ_COPY, NULL, cand_dir(p, id), NULL, NULL, cb, ctx);
}

int pin_when_idle(struct pin *p, uint64_t id, pin_done_cb cb, void *ctx)
{
    return enqueue(p, id, REQ_IDLE, NULL, NULL, NULL, NULL, cb, ctx);
}

int pin_release(struct pin *p, uint64_t id, pin_done_cb cb, void *ctx)
{
    return enqueue(p, id, REQ_RELEASE, NULL, cand_dir(p, id), NULL, NULL, cb, ctx);
}

size_t pin_copies_pending(const struct pin *p, uint64_t id)
{
    size_t n = 0;
    for (const struct pin_cand *pc = p->cands; pc != NULL; pc = pc->next) {
        if (pc->id != id)
            continue;
        for (const struct copy_ent *e = pc->copies; e != NULL; e = e->next)
            n++;
    }
    return n;
}

int pin_new(struct pin **ret, struct uv_loop_s *loop, const char *root, const char *staging_name,
            pin_result_cb cb, void *ctx)
{
    struct pin *p;
    char buf[PATH_MAX];

    if (root == NULL || root[0] == '\0' || !rel_valid(staging_name) ||
        strchr(staging_name, '/') != NULL)
        return -EINVAL;
    if ((size_t)snprintf(buf, sizeof(buf), "%s/%s", root, staging_name) >= sizeof(buf) - 256)
        return -ENAMETOOLONG;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    p->loop = loop;
    p->cb = cb;
    p->ctx = ctx;
    p->root = strdup(root);
    p->staging = strdup(buf);
    if (p->root == NULL || p->staging == NULL) {
        pin_free(p);
        return -ENOMEM;
    }
    for (size_t n = strlen(p->root); n > 1 && p->root[n - 1] == '/'; n--)
        p->root[n - 1] = '\0';
    *ret = p;
    return 0;
}

void pin_close(struct pin *p, pin_closed_cb cb, void *ctx)
{
    if (p == NULL || p->closing)
        return;
    p->closing = true;
    p->closed_cb = cb;
    p->closed_ctx = ctx;
    /* Inside a result callback, work_done finishes the close once the callback returns. */
    if (p->running == 0 && p->dispatching == NULL)
        finish_close(p);
}
