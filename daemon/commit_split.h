/* commit_split.h - how one checkpoint's files are cut into commits: one commit whenever the Hub's
 * limits allow it, else the fewest those limits force. Pure: no I/O, no loop.
 */
#ifndef CKPT_COMMIT_SPLIT_H
#define CKPT_COMMIT_SPLIT_H

#include <stddef.h>
#include <stdint.h>

struct commit_limits {
    size_t max_files;           /* files in one commit */
    uint64_t regular_max;       /* a file this size or smaller may be committed as regular */
    uint64_t max_regular_bytes; /* regular bytes one commit body may carry */
};

/* The limits this daemon commits within: UPLOAD_FILES_MAX files, UPLOAD_REGULAR_BYTES_MAX bytes of
 * files of at most HUB_REGULAR_MAX (the Hub decides per file whether it is regular or LFS, and
 * only after the preupload: each file that may be regular is counted as regular). */
extern const struct commit_limits commit_limits_hub;

/* Which limit ended a commit before the files did. */
enum commit_split_reason {
    COMMIT_SPLIT_NONE,
    COMMIT_SPLIT_FILES,
    COMMIT_SPLIT_REGULAR_BYTES,
};

/* How many of the files sizes[0..n) (in commit order) go into the next commit: at least one when
 * n > 0 (a single file above a limit is its own commit, the upload then says why it fails).
 * *ret_reason, when not NULL, says which limit ended that commit. */
size_t commit_split_next(const uint64_t *sizes, size_t n, const struct commit_limits *lim,
                         enum commit_split_reason *ret_reason);
/* Commits the files need in all; *ret_reason is the limit that ended the first commit. */
size_t commit_split_count(const uint64_t *sizes, size_t n, const struct commit_limits *lim,
                          enum commit_split_reason *ret_reason);
/* Words for the log ("" for COMMIT_SPLIT_NONE). */
const char *commit_split_reason_text(enum commit_split_reason reason);

#endif
