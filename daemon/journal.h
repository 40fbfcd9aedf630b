/* journal.h - the durable record of every checkpoint's state and every LFS object's upload, so
 * that a restart after kill -9 or a reboot continues where the last run stopped.
 *
 * Owns <staging>/journal (append-only, checksummed records) and its in-memory image. Does not
 * decide what to push (queue.c does) and never holds the token. The API runs on the loop thread;
 * every read, write, fsync and rename runs on libuv's thread pool, one job at a time.
 */
#ifndef CKPT_JOURNAL_H
#define CKPT_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct journal;

#define JOURNAL_FILE_NAME "journal"
#define JOURNAL_RECORD_MAX (4u * 1024 * 1024)   /* one record's payload */
#define JOURNAL_FILE_MAX (256u * 1024 * 1024)   /* larger files are read up to this size */
#define JOURNAL_PENDING_MAX (32u * 1024 * 1024) /* bytes waiting for the writer */
#define JOURNAL_COMPACT_AT (8u * 1024 * 1024)   /* the file is rewritten past this size */
#define JOURNAL_CKPTS_MAX 65536                 /* checkpoints remembered */
#define JOURNAL_OBJS_MAX 65536                  /* LFS uploads remembered */
#define JOURNAL_RELEASED_KEPT 256               /* released checkpoints kept by compaction */
#define JOURNAL_XORBS_MAX 16384                 /* Xet xorbs remembered (the newest) */

/* A checkpoint's life, in order. FAILED is off the line: kept with its pins, retried later. */
enum journal_state {
    JOURNAL_DETECTED = 0,
    JOURNAL_SEALED,
    JOURNAL_PINNED,
    JOURNAL_HASHED,
    JOURNAL_PLANNED,
    JOURNAL_UPLOADING,
    JOURNAL_COMMITTED,
    JOURNAL_RELEASED,
    JOURNAL_FAILED,
};

struct journal_file {
    char *path; /* checkpoint-relative */
    bool have_stat;
    uint64_t size;
    int64_t mtime_ns;
    uint64_t ino;
    char sha256[65]; /* "" until hashed */
    char git_sha1[41];
};

struct journal_ckpt {
    struct journal_ckpt *next; /* in seq order */
    uint64_t id;               /* the pin id: <staging>/pins/<id>/ */
    uint64_t seq;              /* save order across restarts */
    char *name;
    char *layout;
    int64_t step;
    enum journal_state state;
    char commit[41];
    char *error; /* FAILED: the reason; NULL otherwise */
    struct journal_file *files;
    size_t n_files;
};

struct journal_obj {
    struct journal_obj *next;
    char oid[65];
    uint64_t size;
    uint64_t chunk_size; /* 0: basic transfer */
    char *href;          /* basic PUT URL or multipart completion URL */
    int64_t expires_at;  /* unix seconds; 0 unknown */
    size_t n_parts;
    char **part_urls; /* n_parts, may hold NULLs */
    char **etags;     /* n_parts; NULL until the part is finished */
    bool done;
};

/* A Xet xorb the CAS accepted (issue 13): after a restart it is not sent again. No token. */
struct journal_xorb {
    char hash[65]; /* Xet hex form */
    char cas[17];  /* which CAS took it: 16 hex digits naming the Hub endpoint */
    uint64_t packed_bytes;
};

/* status: 0 once every byte up to this record is on disk, or a negative errno. */
typedef void (*journal_done_cb)(void *ctx, int status);

/* Reads <dir>/journal on the pool (creating dir), rebuilds the in-memory image, and rewrites
 * the file compacted. A torn or corrupt record is logged (file and offset) and skipped; the
 * records after it are still read. cb(ctx, 0) once usable; a journal that cannot be written
 * still loads (cb gets the error) and keeps the image in memory. */
int journal_open(struct journal **ret, uv_loop_t *loop, const char *dir, journal_done_cb cb,
                 void *ctx);
/* Only when no job is in flight (after the loop ran down). NULL-safe. */
void journal_free(struct journal *j);
bool journal_busy(const struct journal *j);
/* Records skipped as corrupt or torn when loading. */
unsigned journal_corrupt_records(const struct journal *j);
const char *journal_state_name(enum journal_state s);
int journal_state_parse(const char *name, enum journal_state *ret);

/* The image. Pointers stay valid until the record they describe is compacted away (released
 * checkpoints beyond JOURNAL_RELEASED_KEPT, finished objects) or journal_free. */
struct journal_ckpt *journal_ckpts(struct journal *j);
struct journal_ckpt *journal_ckpt_find(struct journal *j, uint64_t id);
struct journal_obj *journal_obj_find(struct journal *j, const char *oid, uint64_t size);
uint64_t journal_next_seq(const struct journal *j);

/* Every change is applied to the image at once and cb (may be NULL) runs once it is durable.
 * They fail at once with UV_ENOBUFS (writer too far behind), UV_ENOMEM, UV_EINVAL, or UV_EAGAIN
 * before journal_open's cb ran. */
int journal_detected(struct journal *j, uint64_t id, const char *name, const char *layout,
                     journal_done_cb cb, void *ctx);
int journal_sealed(struct journal *j, uint64_t id, const char *name, const char *layout,
                   int64_t step, const char *const *files, size_t n, journal_done_cb cb, void *ctx);
/* state other than SEALED; detail is the commit oid (COMMITTED) or the reason (FAILED). */
int journal_set_state(struct journal *j, uint64_t id, enum journal_state state, const char *detail,
                      journal_done_cb cb, void *ctx);
/* files[i] of ckpt id: size, mtime, inode (moves it to PINNED). */
int journal_stats(struct journal *j, uint64_t id, const struct journal_file *files, size_t n,
                  journal_done_cb cb, void *ctx);
int journal_hashed(struct journal *j, uint64_t id, const char *path, const char *sha256,
                   const char *git_sha1, journal_done_cb cb, void *ctx);
/* A batch answer: forgets the parts finished under another chunk size. */
int journal_obj_planned(struct journal *j, const char *oid, uint64_t size, uint64_t chunk_size,
                        const char *href, int64_t expires_at, const char *const *part_urls,
                        size_t n_parts, journal_done_cb cb, void *ctx);
int journal_part_done(struct journal *j, const char *oid, uint64_t size, size_t part,
                      const char *etag, journal_done_cb cb, void *ctx);
int journal_obj_done(struct journal *j, const char *oid, uint64_t size, journal_done_cb cb,
                     void *ctx);
/* The CAS named cas (16 lowercase hex digits) accepted xorb hash (Xet hex), packed_bytes long. */
int journal_xorb_done(struct journal *j, const char *hash, const char *cas, uint64_t packed_bytes,
                      journal_done_cb cb, void *ctx);
/* NULL when that CAS is not recorded as having it (or it was forgotten: only the newest
 * JOURNAL_XORBS_MAX are kept). */
const struct journal_xorb *journal_xorb_find(const struct journal *j, const char *hash,
                                             const char *cas);
/* Forgets a checkpoint entirely (its pins are gone). */
int journal_forget(struct journal *j, uint64_t id, journal_done_cb cb, void *ctx);
/* cb once everything appended so far is durable. */
int journal_sync(struct journal *j, journal_done_cb cb, void *ctx);
/* Writes the whole image as a fresh file (temp, fsync, rename), making the journal's directory
 * if it is gone (not its parent): after the staging directory was deleted with the watched one,
 * appends would land in a deleted file. */
void journal_rewrite(struct journal *j);

/* The reader without a file, for tests and the fuzzer: rebuilds an image from data (a journal
 * file's bytes) as journal_open does, and when ret_snapshot is not NULL also makes the compacted
 * file open would write (malloc'd, *ret_snapshot_len bytes; NULL when empty). No loop, no I/O;
 * any thread. Only the image getters and journal_free apply to the result. */
int journal_load_bytes(struct journal **ret, const void *data, size_t len, char **ret_snapshot,
                       size_t *ret_snapshot_len);

#endif
