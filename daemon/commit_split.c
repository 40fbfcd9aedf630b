/* commit_split.c - cutting one checkpoint's files into commits within the Hub's limits.
 *
 * The Hub takes thousands of operations in one commit (create_commit's capacity is about 25k LFS
 * files and 1 GB of regular content), and every commit counts against the repo's commit budget
 * (--commits-per-hour), so a checkpoint is one commit unless a limit forces more. The cut is
 * greedy in plan order: commit_split_next from any offset gives the same commits as from the
 * start, so a push resumed at a later part cuts the rest the same way.
 */
#include "commit_split.h"

#include "hub.h"
#include "upload.h"

const struct commit_limits commit_limits_hub = {
    .max_files = UPLOAD_FILES_MAX,
    .regular_max = HUB_REGULAR_MAX,
    .max_regular_bytes = UPLOAD_REGULAR_BYTES_MAX,
};

size_t commit_split_next(const uint64_t *sizes, size_t n, const struct commit_limits *lim,
                         enum commit_split_reason *ret_reason)
{
    uint64_t regular = 0;
    size_t k;

    if (ret_reason != NULL)
        *ret_reason = COMMIT_SPLIT_NONE;
    for (k = 0; k < n; k++) {
        if (k == lim->max_files) {
            if (ret_reason != NULL)
                *ret_reason = COMMIT_SPLIT_FILES;
            break;
        }
        if (sizes[k] <= lim->regular_max) {
            if (k > 0 && regular + sizes[k] > lim->max_regular_bytes) {
                if (ret_reason != NULL)
                    *ret_reason = COMMIT_SPLIT_REGULAR_BYTES;
                break;
            }
            regular += sizes[k];
        }
    }
    return k > 0 || n == 0 ? k : 1;
}

size_t commit_split_count(const uint64_t *sizes, size_t n, const struct commit_limits *lim,
                          enum commit_split_reason *ret_reason)
{
    size_t parts = 0;

    for (size_t off = 0; off < n; parts++)
        off += commit_split_next(sizes + off, n - off, lim, parts == 0 ? ret_reason : NULL);
    if (n == 0 && ret_reason != NULL)
        *ret_reason = COMMIT_SPLIT_NONE;
    return parts;
}

const char *commit_split_reason_text(enum commit_split_reason reason)
{
    switch (reason) {
    case COMMIT_SPLIT_FILES:
        return "more files than one commit may carry";
    case COMMIT_SPLIT_REGULAR_BYTES:
        return "more bytes of small files (possibly regular: base64 in the commit body) than one "
               "commit may carry";
    default:
        return "";
    }
}
