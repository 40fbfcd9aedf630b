/* queue.h - sealed checkpoints on their way to the Hub: waiting in save order, pushed one at a
 * time (a later checkpoint's commit never lands before an earlier one's), pins released after the
 * commit is confirmed, a bounded history of finished pushes for status. Owns the journal: every
 * state is durable before it is acted on or reported, and a restart re-queues what the last run
 * left (from the pins, before anything new). Decides and logs each push's outcome: transient
 * failures are retried with backoff, permanent ones leave the checkpoint failed with its pins.
 * Also decides when the pins that could not be hard-linked are copied: at seal, one checkpoint
 * at a time in queue order, within staging_max. Loop thread only.
 */
#ifndef CKPT_QUEUE_H
#define CKPT_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "upload.h"

struct queue;
struct pin;
struct hub;
struct hash_pool;

#define QUEUE_MAX_WAITING 4096
#define QUEUE_HISTORY 64

enum queue_state {
    QUEUE_WAITING,
    QUEUE_PINNING, /* waiting for its pins (links, copies) to be done */
    QUEUE_UPLOADING,
    QUEUE_COMMITTED,
    QUEUE_FAILED,
    QUEUE_SKIPPED, /* the strategy pushes none of its files, or --dry-run */
};

/* The copy of the files a hard link could not pin (another file system), taken at seal. */
enum queue_copy {
    QUEUE_COPY_NONE,    /* nothing to copy (all linked), or not known yet */
    QUEUE_COPY_WAITING, /* behind another copy, or for staging space (staging_max) */
    QUEUE_COPY_RUNNING,
    QUEUE_COPY_DONE,
};

struct queue_item_view {
    uint64_t id;
    const char *name;
    const char *layout;
    enum queue_state state;
    enum queue_copy copy;
    int64_t step;
    size_t files;
    const char *message; /* commit message once planned, else "" */
    const char *commit;  /* commit oid once committed, else "" */
    const char *error;   /* last error, else "" */
    struct upload_progress progress;
    double seconds;  /* since it was sealed */
    double rate_bps; /* bytes sent per second while uploading, 0 otherwise */
    bool recovered;  /* left unfinished by an earlier run */
    unsigned attempts;
};

/* Called on every state change; item is valid only during the call. */
typedef void (*queue_event_cb)(void *ctx, const struct queue_item_view *item);

struct queue_deps {
    uv_loop_t *loop;
    const struct config *cfg;
    struct pin *pin;
    struct hub *hub; /* NULL in dry-run */
    struct hash_pool *hashes;
    /* Pin ids from here up belong to this run: recovery leaves their pins alone. */
    uint64_t new_ids_from;
    /* Recovery (the journal read, the pins listed) calls owned for each checkpoint the journal
     * holds, recovered to push or pushed already, whose files in the watched tree are still the
     * journaled ones (same inode, size and mtime, or the inode of its pin; gone counts too):
     * the scan must leave it alone. Then recovered, once, also when recovery failed. Both may
     * be NULL. */
    void (*owned)(void *ctx, const char *name, const char *layout, const char *const *files,
                  size_t n);
    void (*recovered)(void *ctx);
    void *recovery_ctx;
    /* Several nodes: a detected checkpoint's objects are uploaded without a commit and reported
     * to the coordinator, which makes the one commit of every node's part; its answer is the
     * commit. Explicit pushes and the end-of-training commit are committed here as before.
     * NULL: one node. */
    struct coord_client *coord;
    /* The Xet session and where xorbs are built (<staging>/xet/tmp); NULL: no Xet. */
    struct xet_session *xet;
    const char *xet_work_dir;
    /* --bucket: the bucket (a hub whose repo_type is "bucket") and its own Xet session (the
     * bucket's write token); NULL: no bucket target. May equal hub when there is no repo. */
    struct hub *bucket_hub;
    struct xet_session *bucket_xet;
};

#define QUEUE_RETRY_BASE_MS 1000
#define QUEUE_RETRY_MAX_MS 30000

int queue_new(struct queue **ret, const struct queue_deps *deps, queue_event_cb cb, void *ctx);
/* Copies everything. files are relative to the checkpoint root; they are read from the pins of
 * id, or, when source_dir is not NULL (an explicit push of a path outside the watched tree),
 * from source_dir itself. -ENOBUFS when QUEUE_MAX_WAITING are waiting: the checkpoint ends failed
 * at once, logged (push-failed kind=queue-full), and its pins stay on disk for the next start.
 * Pins that still need a copy (pin_copy_pending) are copied from now on, whatever the push
 * order; the push itself reads them only once their copy is done. */
int queue_add(struct queue *q, uint64_t id, const char *name, const char *layout, int64_t step,
              const char *source_dir, const char *const *files, size_t file_count);
/* Like queue_add, for a checkpoint that cannot be pushed whole (reason names the file and why):
 * it keeps its place in save order and its pins, and fails with kind "unpushable" when its turn
 * comes, journaled with all of its files so that a retry at the next start fails again rather
 * than pushing it without them. */
int queue_add_refused(struct queue *q, uint64_t id, const char *name, const char *layout,
                      int64_t step, const char *const *files, size_t file_count,
                      const char *reason);
/* The pins of every waiting checkpoint are gone (the watched directory was deleted, and the
 * staging directory with it): each fails now with kind and reason, loudly, instead of being
 * found empty at its turn. The push in flight goes on with what it holds. Returns how many. */
size_t queue_fail_waiting(struct queue *q, const char *kind, const char *reason);
/* The staging directory is new (the watched directory was made again): the journal is written
 * there afresh from its image, so that a restart still knows what this run holds. */
void queue_staging_renewed(struct queue *q);
/* A candidate got its first file: journaled so that its pins are known after a crash. */
void queue_note_detected(struct queue *q, uint64_t id, const char *name, const char *layout);
/* Commits the repo got before this process started (Unix seconds, any order), counted against
 * the commit budget: a restarted daemon does not start a fresh hour. Returns how many fall in
 * the last hour. */
unsigned queue_note_past_commits(struct queue *q, const int64_t *dates, size_t n, int64_t now_s);
/* Pushing starts once the hub is known to be usable and while not paused. */
void queue_set_ready(struct queue *q, bool ready);
void queue_set_paused(struct queue *q, bool paused);
bool queue_paused(const struct queue *q);
/* Checkpoints waiting or in flight. */
size_t queue_pending(const struct queue *q);
unsigned queue_committed_count(const struct queue *q);
unsigned queue_failed_count(const struct queue *q);
/* Bytes only the pins keep alive (originals rotated away, copies), as last measured. */
uint64_t queue_staging_bytes(const struct queue *q);
/* Waiting checkpoints whose copy at seal has not started yet. */
size_t queue_copies_waiting(const struct queue *q);
/* Active first, then waiting in order, then the history, newest first. */
void queue_for_each(const struct queue *q, queue_event_cb cb, void *ctx);
/* True when a checkpoint of this name is waiting, in flight, or was committed recently. */
bool queue_knows(const struct queue *q, const char *name);
/* A checkpoint of this name whose last push failed (it kept its pins) goes to the head of the
 * line again; false when there is none. */
bool queue_retry_failed(struct queue *q, const char *name);
/* Gives the checkpoint of this name that is waiting or in flight the commit title a client chose
 * (push's "message", e.g. a Trainer's "Training in progress, epoch 3") instead of the strategy's;
 * a retry after a failure keeps it. Returns 0, or -EALREADY (its commit is made or being made),
 * -ENOENT (none waiting or in flight) or -ENOMEM, with *ret_reason saying why in words. */
int queue_set_title(struct queue *q, const char *name, const char *title, const char **ret_reason);
/* Cancels the push in flight (it ends failed; its pins are kept) and starts no other. */
void queue_stop(struct queue *q);
/* Only when nothing is in flight (after the loop ran down). */
void queue_free(struct queue *q);
const char *queue_state_name(enum queue_state state);
const char *queue_copy_name(enum queue_copy copy);

#endif
