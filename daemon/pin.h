/* pin.h - hard links that keep a checkpoint's bytes safe from rotation until it is pushed.
 *
 * Owns the staging tree <root>/<staging>/pins/<id>/<relpath>; knows nothing of layouts. Requests
 * are made on the loop thread; the syscalls (mkdir -p, link, rename, unlink, copy, rm -rf) run
 * in libuv's thread pool, one request at a time per candidate id, in the order they were made;
 * different ids run in parallel. Results and callbacks come back on the loop thread.
 */
#ifndef CKPT_PIN_H
#define CKPT_PIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pin;
struct uv_loop_s;

#define PIN_MAX_QUEUED 65536 /* requests waiting or running, all ids together */

enum pin_op { PIN_ADD, PIN_RENAME, PIN_REMOVE, PIN_COPY };

struct pin_result {
    enum pin_op op;
    uint64_t id;
    const char *relpath; /* the pinned name (RENAME: the new one) */
    const char *from;    /* RENAME only */
    /* 0; -ENOENT: the file was gone before it could be pinned (lost); other negative errno. */
    int status;
    /* ADD: a hard link is impossible here (EXDEV, EPERM): the file is copied at seal instead,
     * by pin_copy_pending; status is 0 then. */
    bool copy_at_seal;
};

typedef void (*pin_result_cb)(void *ctx, const struct pin_result *res);
typedef void (*pin_done_cb)(void *ctx, int status);
typedef void (*pin_closed_cb)(void *ctx);

/* staging_name is a directory directly under root (".ckptpush"); created when first needed. */
int pin_new(struct pin **ret, struct uv_loop_s *loop, const char *root, const char *staging_name,
            pin_result_cb cb, void *ctx);
/* Waits for running requests (queued ones are dropped without callbacks), frees, then calls
 * cb; at once when nothing runs. */
void pin_close(struct pin *p, pin_closed_cb cb, void *ctx);

/* src is root-relative, relpath candidate-relative. Paths with a leading '/' or a '..' segment
 * are -EINVAL; a full queue is -ENOBUFS. A pin that exists already is replaced (new inode). */
int pin_add(struct pin *p, uint64_t id, const char *src, const char *relpath);
int pin_rename(struct pin *p, uint64_t id, const char *from, const char *to);
int pin_remove(struct pin *p, uint64_t id, const char *relpath);
/* Copies the files that could not be linked (PIN_COPY results, -ENOENT for lost ones), then
 * cb(ctx, 0 or the first error other than ENOENT). Copied and lost files leave the list; the
 * others stay for the next call. */
int pin_copy_pending(struct pin *p, uint64_t id, pin_done_cb cb, void *ctx);
/* cb(ctx, 0) once every request made before for this id is done. */
int pin_when_idle(struct pin *p, uint64_t id, pin_done_cb cb, void *ctx);
/* Removes the id's staging tree after its earlier requests; cb(ctx, 0 or negative errno). */
int pin_release(struct pin *p, uint64_t id, pin_done_cb cb, void *ctx);
/* The staging path of a pinned file: <root>/<staging>/pins/<id>/<relpath>. */
int pin_path(const struct pin *p, uint64_t id, const char *relpath, char *buf, size_t size);
/* Files of id waiting for a copy at seal. */
size_t pin_copies_pending(const struct pin *p, uint64_t id);

#endif
