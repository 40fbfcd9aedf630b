/* upload.h - push one set of local files to the Hub as one commit.
 *
 * Owns the sequence hash -> preupload -> LFS batch -> PUTs -> read regular files -> commit, the
 * skipping of content already on the Hub, and the progress counters. Does not decide what to
 * push or when, and does not log the outcome (the caller does). Loop thread only.
 */
#ifndef CKPT_UPLOAD_H
#define CKPT_UPLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct hub;
struct hash_pool;
struct journal;
struct upload;
struct xet_session;

#define UPLOAD_FILES_MAX 20000
#define UPLOAD_REGULAR_BYTES_MAX (128u * 1024 * 1024) /* base64 in one commit body */
#define UPLOAD_COMMIT_ATTEMPTS 3

struct upload_file {
    const char *path_in_repo;
    const char *local_path;
    const char *journal_path; /* the file's name in the journal's checkpoint; NULL: none */
    /* A hash known from an earlier run (same inode, size and mtime): the file is not hashed
     * again when it is bigger than HASH_GIT_SHA1_MAX (smaller ones are cheap and need more). */
    const char *sha256;
    uint64_t size;
};

struct upload_progress {
    uint64_t bytes_total; /* sum of file sizes, known once hashing is done */
    uint64_t bytes_hashed;
    uint64_t bytes_sent;    /* LFS bytes handed to the network, minus restarted bodies */
    uint64_t bytes_to_send; /* LFS bytes the Hub does not have, known after the batch */
    size_t files_total;
    size_t files_skipped;      /* same content already on the Hub */
    size_t files_ignored;      /* the Hub's .gitignore matched */
    size_t files_hash_skipped; /* hash known from the journal */
    size_t parts_sent;         /* PUTs (whole objects or parts) that succeeded */
    size_t parts_resumed;      /* multipart parts finished by an earlier run: not sent again */
    size_t rebatches;          /* objects re-batched for fresh URLs (expired, session lost) */
    /* Xet (the Hub answered transfer "xet"): bytes_sent counts xorb bytes */
    size_t files_xet;         /* LFS objects that went through Xet */
    uint64_t xet_bytes_new;   /* chunk bytes no dedup level had */
    uint64_t xet_bytes_dedup; /* chunk bytes the CAS had already */
    size_t xorbs_sent;
    size_t xorbs_resumed; /* accepted before a restart (journal): not sent again */
};

struct upload_opts {
    unsigned max_transfers; /* PUTs (whole files or parts) in flight; 0 -> 4 */
    /* Hashes, the state (hashed, planned, uploading) of checkpoint journal_id and every LFS
     * object's URLs and finished parts go to the journal; finished parts found there are not
     * sent again. NULL: nothing recorded. */
    struct journal *journal;
    uint64_t journal_id;
    /* Repo paths deleted by the same commit where they exist (checked by the preupload, so a
     * path already gone is no error); copied. A path also uploaded is not deleted. */
    const char *const *deletes;
    size_t n_deletes;
    /* Where objects go when the batch answers transfer "xet" (hub_config.transfer offers it);
     * work_dir holds xorbs between their build and their POST. NULL: such an answer fails. */
    struct xet_session *xet;
    const char *xet_work_dir;
    /* Stop once every object is on the Hub: no commit (another process makes it, naming each
     * file by sha256 as an lfsFile; the Hub accepts an object any client uploaded). Every file
     * goes as an LFS object then, also one the Hub would take as a regular file, and deletes are
     * ignored. The callback gets commit_oid NULL; upload_file_result says what to commit. */
    bool no_commit;
    /* true: the hub's batch answers switch the hash pool's Xet scans (hash_pool_keep_xet_scans)
     * on (transfer xet) and off (basic, multipart), so a hub without Xet costs no chunking.
     * false where something else (a bucket) uses Xet whatever the hub answers. */
    bool xet_scans_follow_hub;
};

/* What a no_commit upload put on the Hub for one file. */
struct upload_file_result {
    const char *path_in_repo;
    const char *sha256; /* 64 hex */
    uint64_t size;
    const char *via; /* "lfs", "xet", or "hub" when the Hub had the content already */
    bool ignored;    /* the Hub's .gitignore matched: not to be committed */
};

#define UPLOAD_REBATCH_MAX 8 /* fresh URLs per object per upload */

/* err is NULL on success. commit_oid is the new commit, or the current head when nothing
 * changed (no commit is made then). A cancelled upload reports kind CKPT_ERR_IO with code
 * UV_ECANCELED. Both pointers are valid only during the call. */
typedef void (*upload_done_cb)(void *ctx, const struct ckpt_err *err, const char *commit_oid);

/* Copies files[] and the message. Fails at once (no callback) with UV_EINVAL (no files, empty
 * message, duplicate path_in_repo), UV_E2BIG (more than UPLOAD_FILES_MAX) or UV_ENOMEM. hub and
 * hashes must outlive the upload. opts may be NULL. */
int upload_start(struct upload **ret, struct hub *hub, struct hash_pool *hashes,
                 const struct upload_file *files, size_t n, const char *commit_message,
                 const struct upload_opts *opts, upload_done_cb cb, void *ctx);
void upload_get_progress(const struct upload *u, struct upload_progress *ret);
/* File i (in upload_start's order) once the callback reported success; valid until upload_free.
 * Returns 0, or -EINVAL when i is out of range or the upload has not succeeded. */
int upload_file_result(const struct upload *u, size_t i, struct upload_file_result *ret);
/* Replaces the commit message while the commit is not yet asked for. Returns 0, -EALREADY once
 * the commit was sent (a retried commit keeps what the first one said), or -ENOMEM. */
int upload_set_message(struct upload *u, const char *commit_message);
/* Stops everything in flight; cb runs later with the cancelled error (unless it already ran). */
void upload_cancel(struct upload *u);
/* NULL-safe. After cb ran: frees now. Before: cancels, never calls cb, and frees once the work in
 * flight has drained. */
void upload_free(struct upload *u);

#endif
