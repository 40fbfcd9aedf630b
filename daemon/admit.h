/* admit.h - which files of a sealed checkpoint can be pushed, which are left out and why.
 *
 * Owns the check between the seal and the queue: each file of the checkpoint is looked at with
 * lstat (never opened, so a FIFO cannot block), and a folder checkpoint is listed for what the
 * detector never took as a file of it (symlinks, special files, hidden files). The outcome is
 * three lists: files to push; files skipped on purpose (a symlink, a hidden file, a name the Hub
 * refuses), each with its reason; files that make the checkpoint unpushable (a FIFO, socket or
 * device where a file should be, an unreadable file). Knows nothing of layouts, pins or the Hub.
 * The lstat calls and the listing run on libuv's thread pool; the result comes back on the loop
 * thread.
 */
#ifndef CKPT_ADMIT_H
#define CKPT_ADMIT_H

#include <stdbool.h>
#include <stddef.h>

struct uv_loop_s;

/* Entries looked at in one folder listing: a checkpoint is not worth an unbounded walk. */
#define ADMIT_MAX_ENTRIES 100000

struct admit_file {
    char *path;         /* relative to the checkpoint's directory */
    const char *reason; /* skipped/refused: a short word, e.g. "symlink", "fifo", "bad-name" */
};

struct admit_result {
    struct admit_file *push; /* reason NULL; the order of the request */
    size_t n_push;
    struct admit_file *skipped; /* symlink, symlink-dir, hidden, bad-name */
    size_t n_skipped;
    struct admit_file *refused; /* fifo, socket, device, unreadable, not-a-file */
    size_t n_refused;
};

/* Called on the loop thread; res is valid only during the call; status is 0 or a negative errno
 * (then res lists every file as pushed, unchecked: the queue's own checks still apply). */
typedef void (*admit_done_cb)(void *ctx, int status, const struct admit_result *res);

/* dir: absolute directory of the checkpoint; files: relative to it (copied). list_dir: also list
 * dir recursively for entries that are not among files (a folder checkpoint; not for the
 * output root, whose other entries belong to other checkpoints). */
int admit_check(struct uv_loop_s *loop, const char *dir, const char *const *files, size_t n,
                bool list_dir, admit_done_cb cb, void *ctx);

/* Why the Hub would refuse this repo path (a control character, a backslash, bytes that are not
 * UTF-8), or NULL when it is acceptable. Pure; any thread. */
const char *admit_bad_name(const char *path);
/* A hidden name a writer uses for a file it is still writing (".tmpXXXX", "x.tmp", NFS's
 * ".nfsXXXX", an editor's ".~lock"): left out without a word. Pure; any thread. */
bool admit_writer_temporary(const char *base);
/* The skip reason for a file of this type (S_IFMT bits of st_mode) and name, NULL to push it,
 * with *refuse set when the whole checkpoint cannot be pushed because of it. link_to_dir: a
 * symlink whose target is a directory. Pure; any thread. */
const char *admit_classify(const char *path, unsigned mode, bool link_to_dir, bool *refuse);

#endif
