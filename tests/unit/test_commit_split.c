/* test_commit_split.c - a checkpoint is one commit unless the Hub's limits force more: 10,000
 * small files are one commit (they were 100 before), 25,000 are two, regular bytes past the
 * commit body's limit cut a commit, big (LFS) files never count as regular, and a cut resumed at
 * any part gives the same commits as from the start. */
#include "commit_split.h"

#include "check.h"
#include "hub.h"
#include "upload.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1024u * 1024u)

static uint64_t *sizes_of(size_t n, uint64_t size)
{
    uint64_t *s = malloc((n ? n : 1) * sizeof(*s));
    REQUIRE(s != NULL);
    for (size_t i = 0; i < n; i++)
        s[i] = size;
    return s;
}

static void test_many_small_files_are_one_commit(void)
{
    uint64_t *s = sizes_of(10000, 4096);
    enum commit_split_reason why = COMMIT_SPLIT_FILES;

    CHECK_INT(commit_split_count(s, 10000, &commit_limits_hub, &why), 1);
    CHECK_INT(why, COMMIT_SPLIT_NONE);
    CHECK_INT(commit_split_next(s, 10000, &commit_limits_hub, &why), 10000);
    CHECK_STR(commit_split_reason_text(why), "");
    free(s);
}

static void test_file_count_limit(void)
{
    size_t n = 2 * UPLOAD_FILES_MAX + 1;
    uint64_t *s = sizes_of(n, 10);
    enum commit_split_reason why;

    CHECK_INT(commit_split_count(s, n, &commit_limits_hub, &why), 3);
    CHECK_INT(why, COMMIT_SPLIT_FILES);
    CHECK(strlen(commit_split_reason_text(why)) > 0);
    CHECK_INT(commit_split_next(s, n, &commit_limits_hub, NULL), UPLOAD_FILES_MAX);
    CHECK_INT(commit_split_count(s, UPLOAD_FILES_MAX, &commit_limits_hub, &why), 1);
    CHECK_INT(why, COMMIT_SPLIT_NONE);
    free(s);
}

static void test_regular_bytes_limit(void)
{
    /* 9 MiB files: 14 fit in 128 MiB, the 15th starts the next commit */
    size_t n = 30, per = UPLOAD_REGULAR_BYTES_MAX / (9 * MiB);
    uint64_t *s = sizes_of(n, 9 * MiB);
    enum commit_split_reason why;

    CHECK_INT(per, 14);
    CHECK_INT(commit_split_next(s, n, &commit_limits_hub, &why), per);
    CHECK_INT(why, COMMIT_SPLIT_REGULAR_BYTES);
    CHECK_INT(commit_split_count(s, n, &commit_limits_hub, NULL), 3);
    /* files above the regular limit are LFS: they never fill the body */
    for (size_t i = 0; i < n; i++)
        s[i] = (uint64_t)HUB_REGULAR_MAX + 1;
    CHECK_INT(commit_split_count(s, n, &commit_limits_hub, &why), 1);
    CHECK_INT(why, COMMIT_SPLIT_NONE);
    free(s);
}

/* Resuming at part k (a retried push keeps the parts committed) cuts the rest the same way. */
static void test_resume_cuts_the_same(void)
{
    struct commit_limits lim = {.max_files = 7, .regular_max = 100, .max_regular_bytes = 250};
    uint64_t s[40];
    size_t ends[40], n_parts = 0;

    for (size_t i = 0; i < 40; i++)
        s[i] = (i * 37) % 160; /* some above regular_max */
    for (size_t off = 0; off < 40;) {
        off += commit_split_next(s + off, 40 - off, &lim, NULL);
        ends[n_parts++] = off;
    }
    CHECK_INT(commit_split_count(s, 40, &lim, NULL), n_parts);
    for (size_t k = 1; k < n_parts; k++) {
        size_t off = ends[k - 1];
        CHECK_INT(off + commit_split_next(s + off, 40 - off, &lim, NULL), ends[k]);
        /* each part within both limits */
        uint64_t regular = 0;
        for (size_t i = off; i < ends[k]; i++)
            regular += s[i] <= lim.regular_max ? s[i] : 0;
        CHECK(ends[k] - off <= lim.max_files);
        CHECK(regular <= lim.max_regular_bytes);
    }
    CHECK_INT(commit_split_count(s, 0, &lim, NULL), 0);
}

int main(void)
{
    test_many_small_files_are_one_commit();
    test_file_count_limit();
    test_regular_bytes_limit();
    test_resume_cuts_the_same();
    return check_report("test_commit_split");
}
