/* detect.h - which files form a checkpoint and when it is complete ("sealed").
 *
 * Pure logic: fed watch events and the time, it groups files into candidates by layout rules
 * (a small table in detect.c) and seals each exactly once. No I/O, no uv: the caller owns the one
 * timer (detect_next_deadline_ms / detect_tick). Single-threaded; run it on the loop thread.
 * Callbacks run inside detect_feed/tick/seal_all; they must not call back into detect.
 */
#ifndef CKPT_DETECT_H
#define CKPT_DETECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct detect;
struct detect_cand;
struct watch_event;

#define DETECT_MAX_FILES (1 << 20) /* files tracked at once */
#define DETECT_MAX_CANDS (1 << 16) /* candidates alive at once */
#define DETECT_DEFAULT_QUIET_MS 1000

#define DETECT_MAX_RULES 64

/* A rule of the configuration: the first directory (root-relative, fnmatch with FNM_PATHNAME)
 * matching glob is a checkpoint; it is complete when marker (a path inside it, hidden allowed;
 * NULL: no marker, its files closed) is closed, then quiet_ms (0: the global quiet period)
 * without events. Rules come before the built-in layouts. */
struct detect_rule {
    const char *glob;
    const char *marker;
    int64_t quiet_ms;
};

struct detect_config {
    /* One node of several, not the one that writes DCP's .metadata (rank > 0): a DCP folder is
     * this node's part once its .distcp files are closed, then the quiet period. */
    bool dcp_part;
    int64_t quiet_ms;   /* quiet period after the last event of a candidate; 0 -> default */
    const char *layout; /* NULL or "": auto-detect; else only this built-in layout (and rules) */
    const struct detect_rule *rules; /* copied by detect_new */
    size_t n_rules;
};

/* A candidate pointer is valid during the callback only; keep its id. Relative paths are
 * relative to detect_cand_dir(). file_added may come again for a relpath already added: the file
 * was replaced by a rename (new inode), pin it again. */
struct detect_callbacks {
    void *ctx;
    void (*file_added)(void *ctx, const struct detect_cand *c, const char *relpath);
    void (*file_renamed)(void *ctx, const struct detect_cand *c, const char *from, const char *to);
    void (*file_removed)(void *ctx, const struct detect_cand *c, const char *relpath);
    void (*sealed)(void *ctx, const struct detect_cand *c);
    void (*dropped)(void *ctx, const struct detect_cand *c, const char *why);
    /* It cannot be known whole (why says what was missed): it will not be sealed. */
    void (*doubtful)(void *ctx, const struct detect_cand *c, const char *why);
    void (*late_write)(void *ctx, const struct detect_cand *c, const char *relpath);
    /* A member of an unsealed candidate was closed after writing or renamed in, or its
     * candidate became complete and waits out its quiet period (then once per member; not for
     * a candidate only a directory listing has shown, as at start): its bytes are probably
     * final, so work on them may start; only the seal makes them so. */
    void (*file_ready)(void *ctx, const struct detect_cand *c, const char *relpath);
};

/* Built-in layouts (the names detect_cand_layout returns): transformers-trainer, nemo,
 * deepspeed, accelerate, orbax, torchsnapshot, torch-dcp, model-dir, model-root, lightning,
 * single-file;
 * "custom" is a configured rule. Rules and completion sources: tests/fixtures/traces/synthetic/
 * SOURCES.md. -EINVAL: unknown layout, more than DETECT_MAX_RULES or an invalid rule. */
int detect_new(struct detect **ret, const struct detect_config *cfg,
               const struct detect_callbacks *cbs);
bool detect_layout_known(const char *name);
void detect_free(struct detect *d);

/* Returns 0, -EINVAL for a path with a leading '/' or a '..' segment, -ENAMETOOLONG, or -ENOSPC
 * when DETECT_MAX_FILES / DETECT_MAX_CANDS is reached (the event is then ignored). Seals nothing:
 * an event read late may predate a deadline that passed, so it restarts the quiet period. The
 * caller reads every queued event (watch_read_now) before detect_tick. */
int detect_feed(struct detect *d, const struct watch_event *ev, int64_t now_ms);
/* Earliest time a candidate may seal, -1 when none can without further events. */
int64_t detect_next_deadline_ms(const struct detect *d);
void detect_tick(struct detect *d, int64_t now_ms);
/* Shutdown: seals every candidate whose layout marker holds and that has no open file, without
 * waiting for the quiet period. A checkpoint folder without its marker stays unsealed. */
void detect_seal_all_complete(struct detect *d, int64_t now_ms);
/* Forgets a sealed candidate (after its push): later writes under its name start a new one. */
void detect_forget(struct detect *d, uint64_t id);
/* Unsealed candidates alive now (tests, status). */
size_t detect_pending(const struct detect *d);

/* Recovery owns this checkpoint (the journal holds it, sealed or pushed, and its files are still
 * the ones journaled): directory listings (the scan at start, rescans after an overflow) skip
 * its files, so it is not detected, sealed or pinned a second time. name and layout as the
 * journal has them, files relative to its directory (a folder layout owns all below its name).
 * A file of it written again later (an event, not a listing) is a new save, detected as usual.
 * Returns 0, -EINVAL for a name that is no built-in layout or "custom", -ENOMEM. */
int detect_own(struct detect *d, const char *name, const char *layout, const char *const *files,
               size_t n);
/* Name of the file candidate a root-relative file belongs to now (a Lightning last.ckpt: its
 * save's epoch file), or NULL (none, or a folder's). Valid until the next call into detect. */
const char *detect_owner_name(const struct detect *d, const char *path);
/* Pure: does layout make folder candidates; the root-relative directory a checkpoint's files are
 * relative to (its name for a folder, else the name's parent; "" for the root). */
bool detect_layout_is_folder(const char *layout);
int detect_layout_dir(const char *layout, const char *name, char *buf, size_t size);

uint64_t detect_cand_id(const struct detect_cand *c);
/* Root-relative path of the folder or file; "" for the model-root candidate. */
const char *detect_cand_name(const struct detect_cand *c);
/* Root-relative directory the relpaths are relative to ("" for the root). */
const char *detect_cand_dir(const struct detect_cand *c);
const char *detect_cand_layout(const struct detect_cand *c);
/* Why it sealed, e.g. "trainer_state.json closed, 1000 ms quiet"; "" before. */
const char *detect_cand_rule(const struct detect_cand *c);
int64_t detect_cand_step(const struct detect_cand *c);
bool detect_cand_sealed(const struct detect_cand *c);
/* Files, sorted, once sealed (0 before). */
size_t detect_cand_n_files(const struct detect_cand *c);
const char *detect_cand_file(const struct detect_cand *c, size_t i);
/* Writes dir + "/" + relpath (root-relative source path of a file) into buf. */
int detect_cand_source(const struct detect_cand *c, const char *relpath, char *buf, size_t size);

#endif
