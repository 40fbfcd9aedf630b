/* fuzz_ipc.c - the control socket's input path: bytes arrive in reads of a size chosen by the
 * input, go through the line framer and each line through the request parser, exactly as ipc.c
 * does for a client (ipc_framer_*, ipc_parse_request). Checks the parser's contract.
 * Input: byte 0 = read size (low 6 bits, +1) and, with both high bits, "the input, an oversized
 * line, the input again, read in 4 KiB bursts"; the rest is the stream.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ipc.h"
#include "ipc_proto.h"

static void check(int cond)
{
    if (!cond)
        abort();
}

static void parse_line(char *line, size_t len)
{
    struct ipc_parsed p;
    int r;

    check(line[len] == '\0' && memchr(line, '\n', len) == NULL);
    r = ipc_parse_request(line, len, &p);
    if (r == 1) {
        check(p.type != NULL && p.code == NULL && cJSON_IsObject(p.json));
        check(p.id == NULL || cJSON_IsNumber(p.id) || cJSON_IsString(p.id));
    } else if (r == 0) {
        check(p.json == NULL);
    } else {
        check(r == -EINVAL && p.code != NULL && p.message[0] != '\0');
        check(memchr(p.message, '\0', sizeof(p.message)) != NULL);
    }
    cJSON_Delete(p.json);
}

/* Bytes [at, at + n) of the big stream: data, IPC_MAX_MESSAGE bytes of 'x', data. */
static void fill(char *dst, const uint8_t *data, size_t size, size_t at, size_t n)
{
    while (n > 0) {
        size_t k;
        if (at < size) {
            k = size - at < n ? size - at : n;
            memcpy(dst, data + at, k);
        } else if (at < size + IPC_MAX_MESSAGE) {
            k = size + IPC_MAX_MESSAGE - at < n ? size + IPC_MAX_MESSAGE - at : n;
            memset(dst, 'x', k);
        } else {
            k = n;
            memcpy(dst, data + (at - size - IPC_MAX_MESSAGE), k);
        }
        dst += k;
        at += k;
        n -= k;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char buf[IPC_MAX_MESSAGE];
    struct ipc_framer f = {.buf = buf};
    size_t step, total, fed = 0;
    bool big;
    char *line;
    size_t len;

    if (size < 1)
        return 0;
    step = (size_t)(data[0] & 0x3f) + 1;
    data++;
    size--;
    if (size == 0)
        return 0;
    big = (data[-1] & 0xc0) == 0xc0;
    /* Big: the input, then a line too long to hold, then the input again (recovery). */
    total = big ? 2 * size + IPC_MAX_MESSAGE : size;
    while (fed < total) {
        size_t n = big ? 4096 : step, room = IPC_MAX_MESSAGE - f.len;
        if (n > total - fed)
            n = total - fed;
        if (n > room)
            n = room;
        fill(buf + f.len, data, size, fed, n);
        f.len += n;
        fed += n;
        while (ipc_framer_next(&f, &line, &len))
            parse_line(line, len);
        ipc_framer_compact(&f);
        check(f.len < IPC_MAX_MESSAGE && f.start == 0);
    }
    return 0;
}
