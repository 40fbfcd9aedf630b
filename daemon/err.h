/* err.h - the second error channel: a code for the program and a sentence for the person.
 *
 * Functions return an int (0 or a negative errno / UV_E* code). Where errno cannot say what went
 * wrong (an HTTP status, a Hub error body, a bad config value) they also fill a caller's
 * struct ckpt_err. Messages follow git: lowercase, problem first, subject quoted, no full stop.
 */
#ifndef CKPT_ERR_H
#define CKPT_ERR_H

enum ckpt_err_kind {
    CKPT_ERR_NONE = 0,
    CKPT_ERR_IO,        /* local file system */
    CKPT_ERR_NETWORK,   /* connection refused, reset, timeout, DNS */
    CKPT_ERR_AUTH,      /* 401 / 403: the token is missing, invalid or lacks rights */
    CKPT_ERR_NOT_FOUND, /* 404 on the repo or revision */
    CKPT_ERR_CONFLICT,  /* 409 / 412 */
    CKPT_ERR_PROTOCOL,  /* the server answered something we cannot use */
    CKPT_ERR_REJECTED,  /* 4xx that will not succeed on retry (413, 422, ...) */
    CKPT_ERR_SERVER,    /* 5xx, 429, 408 after retries ran out */
    CKPT_ERR_INPUT,     /* bad configuration, flag or request */
};

struct ckpt_err {
    enum ckpt_err_kind kind;
    int code; /* negative errno, or the HTTP status for HTTP errors, or 0 */
    char msg[512];
};

void ckpt_err_clear(struct ckpt_err *err);
/* Formats msg; a NULL err is allowed and ignored. Returns -1 when code is 0 so that callers can
 * write `return ckpt_err_set(...)`, else code when it is negative, else -EIO. */
int ckpt_err_set(struct ckpt_err *err, enum ckpt_err_kind kind, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
const char *ckpt_err_kind_name(enum ckpt_err_kind kind);

#endif
