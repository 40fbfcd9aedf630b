/* watch.h - recursive inotify on one root, turned into root-relative events.
 *
 * Owns the inotify descriptor, the wd -> relative-path map and the scans that make up for events a
 * directory had before its watch existed. Does not decide what a checkpoint is (detect.c does).
 * Threads: everything runs on the loop thread. inotify is read through a uv_poll; directory
 * listings (metadata only) run on the loop thread, one listing per scan step, a bounded number
 * of steps per loop iteration (a uv_idle drives the rest), so a huge tree never blocks for long;
 * a file made while watched gets one lstat there too (a FIFO or symlink is reported as scanned:
 * no close will ever come for it). The root's parent is watched as well: the root's own
 * IN_DELETE_SELF waits until no file below it is open, its parent's IN_DELETE does not.
 */
#ifndef CKPT_WATCH_H
#define CKPT_WATCH_H

#include <stdbool.h>
#include <stddef.h>

struct ckpt_err;
struct uv_loop_s;
struct watch;

/* Most directories watched at once (also bounded by fs.inotify.max_user_watches). */
#define WATCH_MAX_DIRS (1 << 20)

enum watch_kind {
    WATCH_CREATE,
    WATCH_MODIFY,
    WATCH_CLOSE_WRITE,
    WATCH_MOVED_IN,  /* renamed in from outside the tree (or from an unwatched place) */
    WATCH_RENAMED,   /* within the tree: old_path -> path */
    WATCH_MOVED_OUT, /* renamed to outside the tree */
    WATCH_DELETE,    /* path "" with is_dir: the root itself was deleted (before WATCH_ROOT_LOST) */
    WATCH_ATTRIB,
    WATCH_OVERFLOW, /* the kernel queue overflowed: events were lost, a rescan follows */
    WATCH_SCANNED,  /* synthetic: found by a directory listing, state unknown */
    WATCH_UNLISTED, /* is_dir: appeared but was gone before it could be listed (contents unknown) */
    WATCH_ERROR,    /* a directory could not be watched: error and message say why */
    /* path "": the root itself was deleted, moved away or unmounted. old_path: where it was moved
     * to (absolute), NULL when it is gone. No events come from the old tree after this; the
     * parent directory is watched until a directory of the root's name appears there again. */
    WATCH_ROOT_LOST,
    /* path "": a directory of the root's name is there again and watched; WATCH_SCANNED for what
     * it holds follows, as at start. */
    WATCH_ROOT_BACK,
};

/* Valid only during the callback. Paths are relative to the root, without a leading slash. */
struct watch_event {
    enum watch_kind kind;
    bool is_dir;
    const char *path;
    const char *old_path; /* WATCH_RENAMED: where from; WATCH_ROOT_LOST: see above; else NULL */
    int error;            /* WATCH_ERROR only: negative errno */
    const char *message;  /* WATCH_ERROR only: a sentence for the person */
};

typedef void (*watch_event_cb)(void *ctx, const struct watch_event *ev);
typedef void (*watch_closed_cb)(void *ctx);

/* Watches root recursively. skip_name (may be NULL) names a directory directly under root that
 * is never watched nor reported (the staging dir). Events start on a later loop iteration with
 * WATCH_SCANNED for everything already in the tree. Fails at once (no callback) when root cannot
 * be watched; err then holds the sentence (ENOSPC names fs.inotify.max_user_watches). */
int watch_start(struct watch **ret, struct uv_loop_s *loop, const char *root, const char *skip_name,
                watch_event_cb cb, void *ctx, struct ckpt_err *err);
/* Stops events at once (also from inside the event callback); memory and the descriptor are
 * released in the close callbacks, then closed_cb (may be NULL) runs. */
void watch_close(struct watch *w, watch_closed_cb closed_cb, void *ctx);
/* Reports every event the kernel has queued now, before returning (the loop may not have polled
 * for a while). Call it before judging a quiet period by the clock: an event still unread may
 * predate the deadline. Not from inside the event callback. */
void watch_read_now(struct watch *w);
/* Number of directories watched now (tests, status). */
unsigned watch_count(const struct watch *w);
/* True between WATCH_ROOT_LOST and WATCH_ROOT_BACK. */
bool watch_root_missing(const struct watch *w);
const char *watch_kind_name(enum watch_kind kind);

struct inotify_event;
/* Splits buf[0..len) (aligned like struct inotify_event), as read from an inotify descriptor,
 * into at most max records in ret. Stops at a record cut short or malformed (a name length that
 * breaks the alignment, a name without its NUL, with a '/', or "." or ".."), which the kernel never
 * sends. Returns the count. Pure; any thread. */
size_t watch_decode(const char *buf, size_t len, const struct inotify_event **ret, size_t max);
/* Handles buf (at most 64 KiB) as if read from w's inotify descriptor; buf NULL ends the drain
 * as reaching EAGAIN does. For tests and the fuzzer. */
void watch_feed(struct watch *w, const char *buf, size_t len);

#endif
