/* card_text.c - the card's bounded text buffer and the escapers for each place a string from
 * the run can land: YAML scalars, Markdown text, XML. Owns no state beyond the buffer; any thread.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "card_internal.h"

void card_buf_init(struct card_buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void card_buf_release(struct card_buf *b)
{
    free(b->data);
    card_buf_init(b, b->max);
}

char *card_buf_steal(struct card_buf *b)
{
    char *s = b->data;

    if (s == NULL)
        s = strdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return s;
}

static int buf_reserve(struct card_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;

    if (b->err)
        return b->err;
    if (extra > b->max || b->len + extra > b->max) {
        b->err = -EFBIG;
        return b->err;
    }
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    p = realloc(b->data, cap);
    if (p == NULL) {
        b->err = -ENOMEM;
        return b->err;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void card_buf_put(struct card_buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void card_buf_puts(struct card_buf *b, const char *s)
{
    card_buf_put(b, s, strlen(s));
}

void card_buf_printf(struct card_buf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->err = b->err ? b->err : -EINVAL;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        card_buf_put(b, small, (size_t)n);
        return;
    }
    if (buf_reserve(b, (size_t)n) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Decodes one UTF-8 sequence at s (n bytes left). Returns its length and the code point, or 1 and
 * -1 for a byte that does not start a valid, shortest-form sequence. */
static size_t utf8_next(const unsigned char *s, size_t n, long *ret_cp)
{
    size_t len, i;
    long cp;

    if (s[0] < 0x80) {
        *ret_cp = s[0];
        return 1;
    }
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2;
        cp = s[0] & 0x1F;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3;
        cp = s[0] & 0x0F;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        *ret_cp = -1;
        return 1;
    }
    if (len > n) {
        *ret_cp = -1;
        return 1;
    }
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *ret_cp = -1;
            return 1;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        *ret_cp = -1;
        return 1;
    }
    *ret_cp = cp;
    return len;
}

/* Walks s up to CARD_MAX_FIELD bytes, code point by code point. */
#define FOR_EACH_CP(s, p, n, cp, len)                                                              \
    for (size_t n = strnlen((s), CARD_MAX_FIELD), len = 0; n > 0; (p) += len, n -= len)            \
        if ((len = utf8_next((p), n, &(cp))), 1)

void card_put_yaml_str(struct card_buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    long cp;

    card_buf_put(b, "\"", 1);
    FOR_EACH_CP((const char *)p, p, n, cp, len)
    {
        /* \" is avoided on purpose: simple front-matter scanners (the Hub emulation among them)
         * toggle their quote state on every quote character. < and > are escaped so that no
         * tag or ckptpush marker appears anywhere in the file. */
        if (cp < 0)
            card_buf_puts(b, "\\ufffd");
        else if (cp == '"' || cp == '\\' || cp == '#' || cp == '<' || cp == '>' || cp < 0x20 ||
                 cp == 0x7F || (cp >= 0x80 && cp <= 0x9F) || cp == 0xFEFF || cp == 0xFFFE ||
                 cp == 0xFFFF || cp == 0x2028 || cp == 0x2029)
            card_buf_printf(b, "\\u%04lx", cp);
        else
            card_buf_put(b, (const char *)p, len);
    }
    card_buf_put(b, "\"", 1);
}

void card_fmt_num(char *dst, size_t size, double v)
{
    int prec;

    if (!isfinite(v)) {
        snprintf(dst, size, "%s", isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf"));
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(dst, size, "%.0f", v);
        return;
    }
    for (prec = 1; prec <= 17; prec++) {
        snprintf(dst, size, "%.*g", prec, v);
        if (strtod(dst, NULL) == v)
            return;
    }
}

void card_put_yaml_num(struct card_buf *b, double v)
{
    char num[64], out[80];
    char *e;

    if (!isfinite(v)) {
        card_buf_puts(b, isnan(v) ? ".nan" : (v > 0 ? ".inf" : "-.inf"));
        return;
    }
    card_fmt_num(num, sizeof(num), v);
    e = strchr(num, 'e');
    if (e != NULL && memchr(num, '.', (size_t)(e - num)) == NULL) {
        /* YAML 1.1 reads 1e-05 as a string; 1.0e-05 is a float everywhere */
        snprintf(out, sizeof(out), "%.*s.0%s", (int)(e - num), num, e);
        card_buf_puts(b, out);
        return;
    }
    card_buf_puts(b, num);
}

static void put_html_char(struct card_buf *b, long cp)
{
    switch (cp) {
    case '<':
        card_buf_puts(b, "&lt;");
        break;
    case '>':
        card_buf_puts(b, "&gt;");
        break;
    case '&':
        card_buf_puts(b, "&amp;");
        break;
    default:
        card_buf_printf(b, "&#%ld;", cp);
    }
}

void card_put_md(struct card_buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    long cp;

    FOR_EACH_CP((const char *)p, p, n, cp, len)
    {
        if (cp < 0)
            card_buf_puts(b, "\xEF\xBF\xBD");
        else if (cp == '\n' || cp == '\r' || cp == '\t')
            card_buf_put(b, " ", 1);
        else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 ||
                 cp == 0x2029)
            continue;
        else if (cp == '<' || cp == '>' || cp == '&')
            put_html_char(b, cp);
        else if (cp < 0x80 && strchr("\\`*_[]|#~", (int)cp) != NULL)
            card_buf_printf(b, "\\%c", (int)cp);
        else
            card_buf_put(b, (const char *)p, len);
    }
}

/* A line of only -, =, * or _ (and spaces) would turn the paragraph above into a heading or
 * draw a rule; such lines are prose here. */
static bool rule_line(const unsigned char *p)
{
    size_t marks = 0;
    unsigned char c = 0;

    for (; *p && *p != '\n'; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\r')
            continue;
        if (strchr("-=*_", *p) == NULL || (c && *p != c))
            return false;
        c = *p;
        marks++;
    }
    return marks > 0;
}

void card_put_md_block(struct card_buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    bool line_start = true;
    long cp;

    FOR_EACH_CP((const char *)p, p, n, cp, len)
    {
        if (line_start && rule_line(p))
            card_buf_put(b, "\\", 1);
        line_start = cp == '\n';
        if (cp < 0)
            card_buf_puts(b, "\xEF\xBF\xBD");
        else if (cp == '\r')
            continue;
        else if ((cp < 0x20 && cp != '\n' && cp != '\t') || cp == 0x7F ||
                 (cp >= 0x80 && cp <= 0x9F))
            continue;
        else if (cp == '<' || cp == '>' || cp == '&')
            put_html_char(b, cp);
        else
            card_buf_put(b, (const char *)p, len);
    }
}

void card_put_xml(struct card_buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    long cp;

    FOR_EACH_CP((const char *)p, p, n, cp, len)
    {
        if (cp < 0)
            card_buf_puts(b, "\xEF\xBF\xBD");
        else if (cp < 0x20 || cp == 0x7F || cp == 0xFFFE || cp == 0xFFFF)
            card_buf_put(b, " ", 1); /* not allowed in XML 1.0, escaped or not */
        else if (cp == '<' || cp == '>' || cp == '&')
            put_html_char(b, cp);
        else if (cp == '"')
            card_buf_puts(b, "&quot;");
        else if (cp == '\'')
            card_buf_puts(b, "&apos;");
        else
            card_buf_put(b, (const char *)p, len);
    }
}

bool card_is_plain(const char *s, size_t maxlen)
{
    size_t n;

    if (s == NULL || *s == '\0')
        return false;
    for (n = 0; s[n]; n++) {
        char c = s[n];
        if (n >= maxlen)
            return false;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '/'))
            return false;
    }
    return strstr(s, "..") == NULL;
}
