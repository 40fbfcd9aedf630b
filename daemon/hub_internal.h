/* hub_internal.h - the answer side of hub.c without a transfer: hands an HTTP response to the
 * parser of an operation as if its request had just finished, so that the fuzzer and unit tests
 * reach exactly the code the daemon runs on the Hub's answers. Not for the daemon itself. Runs on
 * the caller's thread; the callback runs before hub_answer returns.
 */
#ifndef CKPT_HUB_INTERNAL_H
#define CKPT_HUB_INTERNAL_H

#include "hub.h"

struct http_response;

enum hub_answer_kind {
    HUB_ANSWER_WHOAMI,    /* cb.user */
    HUB_ANSWER_HEAD,      /* cb.oid */
    HUB_ANSWER_PREUPLOAD, /* cb.oid; files, n */
    HUB_ANSWER_BATCH,     /* cb.done; objs, n */
    HUB_ANSWER_PUT,       /* cb.etag; storage_url */
    HUB_ANSWER_COMPLETE,  /* cb.done; storage_url */
    HUB_ANSWER_COMMIT,    /* cb.oid */
    HUB_ANSWER_ENSURE,    /* cb.done */
    HUB_ANSWER_COMMITS,   /* cb.dates */
    HUB_ANSWER_XET_TOKEN, /* cb.xet_token */
};

struct hub_answer_args {
    enum hub_answer_kind kind;
    hub_user_cb user;
    hub_oid_cb oid;
    hub_done_cb done;
    hub_etag_cb etag;
    hub_dates_cb dates;
    hub_xet_token_cb xet_token;
    void *ctx;
    struct hub_preupload_file *files;
    struct hub_lfs_object *objs;
    size_t n;
    const char *storage_url; /* PUT, COMPLETE: the presigned URL asked */
};

/* Runs the answer parser of a->kind on res; its callback runs once, before this returns.
 * Returns 0, or -ENOMEM / -EINVAL (no callback). */
int hub_answer(struct hub *hub, const struct hub_answer_args *a, const struct http_response *res);

#endif
