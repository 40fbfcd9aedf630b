/* err.c - filling struct ckpt_err. */
#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void ckpt_err_clear(struct ckpt_err *err)
{
    if (err == NULL)
        return;
    err->kind = CKPT_ERR_NONE;
    err->code = 0;
    err->msg[0] = '\0';
}

int ckpt_err_set(struct ckpt_err *err, enum ckpt_err_kind kind, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->kind = kind;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    if (code < 0)
        return code;
    return code == 0 ? -1 : -EIO;
}

const char *ckpt_err_kind_name(enum ckpt_err_kind kind)
{
    static const char *const names[] = {
        [CKPT_ERR_NONE] = "none",           [CKPT_ERR_IO] = "io",
        [CKPT_ERR_NETWORK] = "network",     [CKPT_ERR_AUTH] = "auth",
        [CKPT_ERR_NOT_FOUND] = "not-found", [CKPT_ERR_CONFLICT] = "conflict",
        [CKPT_ERR_PROTOCOL] = "protocol",   [CKPT_ERR_REJECTED] = "rejected",
        [CKPT_ERR_SERVER] = "server",       [CKPT_ERR_INPUT] = "input",
    };
    if ((unsigned)kind >= sizeof(names) / sizeof(names[0]))
        return "unknown";
    return names[kind];
}
