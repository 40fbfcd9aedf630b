/* journal.c - append-only, checksummed records of checkpoint states and LFS uploads.
 *
 * Format: <staging>/journal is a sequence of records, each
 *     u32 length | u32 CRC-32 of those 4 length bytes | u32 CRC-32 of the payload | payload
 * (little endian) where the payload is one JSON object ({"k":"st","id":"7","st":"committed",...}).
 * Numbers that may pass 2^53 (ids, mtimes in ns) are strings.
 *
 * Why append-only records rather than one file per checkpoint rewritten temp-fsync-rename: a
 * multipart upload finishes a part every few hundred milliseconds per transfer, and each part's
 * ETag must be durable before the next restart may skip it. An append + fdatasync costs one
 * small write; rewriting a per-checkpoint file would rewrite every ETag so far each time, and
 * three syscalls plus a directory fsync. The CRC and the length make a torn tail (power cut in
 * the middle of a write) and garbage in the middle detectable: a bad record is logged with its
 * offset and skipped, and reading resumes at the next offset where a whole valid record starts,
 * so one bad sector costs one record, not the rest of the file. Every state the records describe
 * can also be rebuilt from the pins (queue.c re-queues any pins/<id>/ not known committed), so a
 * lost record costs at most some re-hashing or a re-sent part, never a checkpoint.
 *
 * Compaction: at every open and past JOURNAL_COMPACT_AT, the image is written as fresh records
 * to journal.tmp, fsync'd, renamed over journal, and the directory fsync'd (redis' rdbSave).
 *
 * Threads: the image is changed on the loop thread as records are made (the same apply()
 * replays them at load, so the image and the file cannot disagree); bytes go to one writer job
 * at a time on the pool (group commit: every record waiting goes in one write + fdatasync), and
 * callbacks run after it, on the loop thread.
 */
#include "journal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#include <zlib.h>

#define JOURNAL_CBS_MAX 65536

struct jcb {
    journal_done_cb cb;
    void *ctx;
};

struct jbuf {
    char *p;
    size_t len, cap;
};

enum job_kind { JOB_LOAD, JOB_APPEND, JOB_SNAPSHOT };

struct job {
    uv_work_t work;
    struct journal *j;
    enum job_kind kind;
    struct jbuf data; /* APPEND/SNAPSHOT: bytes to write; LOAD: the file read */
    struct jcb *cbs;
    size_t n_cbs;
    int status;
    int fd; /* the append fd after the job (SNAPSHOT and LOAD reopen it) */
};

struct journal {
    uv_loop_t *loop;
    char *dir;
    char *path;
    char *tmp_path;
    int fd; /* owned by the running job while one runs */
    struct job *running;
    struct jbuf pending;
    struct jcb *cbs;
    size_t n_cbs, cap_cbs;
    bool want_snapshot;
    bool loaded;
    uint64_t file_size;
    journal_done_cb open_cb;
    void *open_ctx;
    int last_error;

    struct journal_ckpt *ckpts, *ckpts_tail;
    size_t n_ckpts;
    struct journal_obj *objs;
    size_t n_objs;
    /* Xet xorbs the CAS accepted, in the order recorded (a ring of JOURNAL_XORBS_MAX) */
    struct journal_xorb *xorbs;
    size_t n_xorbs, xorbs_next;
    uint64_t next_seq;
    unsigned corrupt;
};

static void kick(struct journal *j);

/* zlib's CRC-32 (IEEE): a torn or garbled record is what it has to catch, and zlib is already
 * in every process that links libcurl. */
static uint32_t record_crc(const void *data, size_t len)
{
    return (uint32_t)crc32(0L, data, (uInt)len);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- buffers ------------------------------------------------------------------------------- */

static int jbuf_add(struct jbuf *b, const void *data, size_t len, size_t max)
{
    if (b->len + len > max)
        return UV_ENOBUFS;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return UV_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

#define HDR 12

static int frame(struct jbuf *b, const char *payload, size_t max)
{
    unsigned char hdr[HDR];
    size_t len = strlen(payload);
    int rc;

    if (len > JOURNAL_RECORD_MAX)
        return UV_E2BIG;
    put_u32(hdr, (uint32_t)len);
    put_u32(hdr + 4, record_crc(hdr, 4));
    put_u32(hdr + 8, record_crc(payload, len));
    if ((rc = jbuf_add(b, hdr, sizeof(hdr), max)) < 0)
        return rc;
    if ((rc = jbuf_add(b, payload, len, max)) < 0) {
        b->len -= sizeof(hdr);
        return rc;
    }
    return 0;
}

/* ---- names ----------------------------------------------------------------------------------- */

static const char *const state_names[] = {
    [JOURNAL_DETECTED] = "detected",   [JOURNAL_SEALED] = "sealed",
    [JOURNAL_PINNED] = "pinned",       [JOURNAL_HASHED] = "hashed",
    [JOURNAL_PLANNED] = "planned",     [JOURNAL_UPLOADING] = "uploading",
    [JOURNAL_COMMITTED] = "committed", [JOURNAL_RELEASED] = "released",
    [JOURNAL_FAILED] = "failed",
};

const char *journal_state_name(enum journal_state s)
{
    return (unsigned)s < sizeof(state_names) / sizeof(state_names[0]) ? state_names[s] : "unknown";
}

int journal_state_parse(const char *name, enum journal_state *ret)
{
    for (size_t i = 0; i < sizeof(state_names) / sizeof(state_names[0]); i++) {
        if (name != NULL && strcmp(name, state_names[i]) == 0) {
            *ret = (enum journal_state)i;
            return 0;
        }
    }
    return UV_EINVAL;
}

/* ---- the image ------------------------------------------------------------------------------ */

static void files_free(struct journal_file *files, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(files[i].path);
    free(files);
}

static void ckpt_free(struct journal_ckpt *c)
{
    files_free(c->files, c->n_files);
    free(c->name);
    free(c->layout);
    free(c->error);
    free(c);
}

static void obj_parts_free(struct journal_obj *o)
{
    for (size_t i = 0; i < o->n_parts; i++) {
        if (o->part_urls != NULL)
            free(o->part_urls[i]);
        if (o->etags != NULL)
            free(o->etags[i]);
    }
    free(o->part_urls);
    free(o->etags);
    o->part_urls = o->etags = NULL;
    o->n_parts = 0;
}

static void obj_free(struct journal_obj *o)
{
    obj_parts_free(o);
    free(o->href);
    free(o);
}

struct journal_ckpt *journal_ckpts(struct journal *j)
{
    return j->ckpts;
}

struct journal_ckpt *journal_ckpt_find(struct journal *j, uint64_t id)
{
    for (struct journal_ckpt *c = j->ckpts; c != NULL; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

struct journal_obj *journal_obj_find(struct journal *j, const char *oid, uint64_t size)
{
    for (struct journal_obj *o = j->objs; o != NULL; o = o->next)
        if (o->size == size && strcmp(o->oid, oid) == 0)
            return o;
    return NULL;
}

uint64_t journal_next_seq(const struct journal *j)
{
    return j->next_seq;
}

unsigned journal_corrupt_records(const struct journal *j)
{
    return j->corrupt;
}

bool journal_busy(const struct journal *j)
{
    return j->running != NULL;
}

static struct journal_ckpt *ckpt_get(struct journal *j, uint64_t id, bool create)
{
    struct journal_ckpt *c = journal_ckpt_find(j, id);

    if (c != NULL || !create)
        return c;
    if (j->n_ckpts >= JOURNAL_CKPTS_MAX || (c = calloc(1, sizeof(*c))) == NULL)
        return NULL;
    c->id = id;
    c->step = -1;
    c->seq = j->next_seq++;
    if (j->ckpts_tail != NULL)
        j->ckpts_tail->next = c;
    else
        j->ckpts = c;
    j->ckpts_tail = c;
    j->n_ckpts++;
    return c;
}

static void ckpt_unlink(struct journal *j, struct journal_ckpt *victim)
{
    struct journal_ckpt *prev = NULL;

    for (struct journal_ckpt *c = j->ckpts; c != NULL; prev = c, c = c->next) {
        if (c != victim)
            continue;
        if (prev != NULL)
            prev->next = c->next;
        else
            j->ckpts = c->next;
        if (j->ckpts_tail == c)
            j->ckpts_tail = prev;
        j->n_ckpts--;
        ckpt_free(c);
        return;
    }
}

static struct journal_obj *obj_get(struct journal *j, const char *oid, uint64_t size, bool create)
{
    struct journal_obj *o = journal_obj_find(j, oid, size);

    if (o != NULL || !create)
        return o;
    if (strlen(oid) != 64 || j->n_objs >= JOURNAL_OBJS_MAX || (o = calloc(1, sizeof(*o))) == NULL)
        return NULL;
    memcpy(o->oid, oid, 65);
    o->size = size;
    o->next = j->objs;
    j->objs = o;
    j->n_objs++;
    return o;
}

/* ---- JSON helpers ------------------------------------------------------------------------- */

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool ju64(const cJSON *o, const char *key, uint64_t *ret)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    char *end;

    /* 2^64 as a double: anything at or above it cannot be converted (and a record that says so
     * is not one we wrote). */
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 18446744073709551616.0) {
        *ret = (uint64_t)v->valuedouble;
        return true;
    }
    if (cJSON_IsNumber(v))
        return false;
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0')
        return false;
    errno = 0;
    *ret = strtoull(v->valuestring, &end, 10);
    return errno == 0 && *end == '\0';
}

static bool ji64(const cJSON *o, const char *key, int64_t *ret)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    char *end;

    if (cJSON_IsNumber(v)) {
        *ret = (int64_t)v->valuedouble;
        return true;
    }
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0')
        return false;
    errno = 0;
    *ret = strtoll(v->valuestring, &end, 10);
    return errno == 0 && *end == '\0';
}

static void add_u64(cJSON *o, const char *key, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%" PRIu64, v);
    cJSON_AddStringToObject(o, key, num);
}

static void add_i64(cJSON *o, const char *key, int64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%" PRId64, v);
    cJSON_AddStringToObject(o, key, num);
}

static void set_str(char **dst, const char *src)
{
    char *copy = src != NULL ? strdup(src) : NULL;
    free(*dst);
    *dst = copy;
}

static void copy_hex(char *dst, size_t size, const char *src)
{
    if (src != NULL && strlen(src) < size && strspn(src, "0123456789abcdef") == strlen(src))
        memcpy(dst, src, strlen(src) + 1);
}

/* Fills a file from a record's entry; only the fields present. */
static void file_apply(struct journal_file *f, const cJSON *e)
{
    uint64_t u;
    int64_t s;

    if (ju64(e, "size", &u) && ji64(e, "mt", &s)) {
        f->size = u;
        f->mtime_ns = s;
        f->have_stat = ju64(e, "ino", &f->ino);
    }
    copy_hex(f->sha256, sizeof(f->sha256), jstr(e, "sha"));
    copy_hex(f->git_sha1, sizeof(f->git_sha1), jstr(e, "git"));
}

static struct journal_file *file_find(struct journal_ckpt *c, const char *path)
{
    for (size_t i = 0; path != NULL && i < c->n_files; i++)
        if (strcmp(c->files[i].path, path) == 0)
            return &c->files[i];
    return NULL;
}

static int files_set(struct journal_ckpt *c, const cJSON *arr)
{
    size_t n = (size_t)cJSON_GetArraySize(arr), k = 0;
    struct journal_file *files = calloc(n ? n : 1, sizeof(*files));
    const cJSON *e;

    if (files == NULL)
        return UV_ENOMEM;
    cJSON_ArrayForEach(e, arr)
    {
        const char *p = cJSON_IsString(e) ? e->valuestring : jstr(e, "p");
        if (p == NULL || (files[k].path = strdup(p)) == NULL)
            continue;
        if (cJSON_IsObject(e))
            file_apply(&files[k], e);
        k++;
    }
    files_free(c->files, c->n_files);
    c->files = files;
    c->n_files = k;
    return 0;
}

static bool is_lower_hex64(const char *s)
{
    if (s == NULL || strlen(s) != 64)
        return false;
    for (size_t i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool is_cas_key(const char *s)
{
    if (s == NULL || strlen(s) != 16)
        return false;
    for (size_t i = 0; i < 16; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static void xorb_put(struct journal *j, const char *hash, const char *cas, uint64_t packed)
{
    if (journal_xorb_find(j, hash, cas) != NULL)
        return;
    if (j->xorbs == NULL && (j->xorbs = calloc(JOURNAL_XORBS_MAX, sizeof(*j->xorbs))) == NULL)
        return;
    struct journal_xorb *x = &j->xorbs[j->xorbs_next];
    memcpy(x->hash, hash, 65);
    memcpy(x->cas, cas, 17);
    x->packed_bytes = packed;
    j->xorbs_next = (j->xorbs_next + 1) % JOURNAL_XORBS_MAX;
    if (j->n_xorbs < JOURNAL_XORBS_MAX)
        j->n_xorbs++;
}

/* One record into the image: the only place the image changes (load and append alike). */
static int apply(struct journal *j, const cJSON *r)
{
    const char *k = jstr(r, "k");
    uint64_t id = 0, size = 0, u;
    enum journal_state st;
    struct journal_ckpt *c;
    struct journal_obj *o;

    if (k == NULL)
        return UV_EINVAL;
    if (strcmp(k, "det") == 0 || strcmp(k, "seal") == 0 || strcmp(k, "ckpt") == 0) {
        int64_t step;
        if (!ju64(r, "id", &id) || (c = ckpt_get(j, id, true)) == NULL)
            return UV_EINVAL;
        if (jstr(r, "name") != NULL)
            set_str(&c->name, jstr(r, "name"));
        if (jstr(r, "layout") != NULL)
            set_str(&c->layout, jstr(r, "layout"));
        if (ji64(r, "step", &step))
            c->step = step;
        if (ju64(r, "seq", &u)) {
            c->seq = u;
            if (u >= j->next_seq)
                j->next_seq = u + 1;
        }
        if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(r, "files")))
            files_set(c, cJSON_GetObjectItemCaseSensitive(r, "files"));
        if (strcmp(k, "seal") == 0 && c->state < JOURNAL_SEALED)
            c->state = JOURNAL_SEALED;
        if (strcmp(k, "ckpt") == 0 && journal_state_parse(jstr(r, "st"), &st) == 0)
            c->state = st;
        copy_hex(c->commit, sizeof(c->commit), jstr(r, "commit"));
        if (jstr(r, "error") != NULL)
            set_str(&c->error, jstr(r, "error"));
        return 0;
    }
    if (strcmp(k, "st") == 0 || strcmp(k, "stat") == 0 || strcmp(k, "hash") == 0 ||
        strcmp(k, "forget") == 0) {
        if (!ju64(r, "id", &id) || (c = ckpt_get(j, id, false)) == NULL)
            return UV_ENOENT;
        if (strcmp(k, "forget") == 0) {
            ckpt_unlink(j, c);
            return 0;
        }
        if (strcmp(k, "st") == 0) {
            if (journal_state_parse(jstr(r, "st"), &st) < 0)
                return UV_EINVAL;
            c->state = st;
            copy_hex(c->commit, sizeof(c->commit), jstr(r, "commit"));
            set_str(&c->error, st == JOURNAL_FAILED ? jstr(r, "error") : NULL);
        } else if (strcmp(k, "stat") == 0) {
            const cJSON *e;
            cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "files"))
            {
                struct journal_file *f = file_find(c, jstr(e, "p"));
                if (f != NULL) {
                    struct journal_file before = *f;
                    file_apply(f, e);
                    bool same = before.have_stat && before.size == f->size &&
                                before.mtime_ns == f->mtime_ns && before.ino == f->ino;
                    if (!same && jstr(e, "sha") == NULL) {
                        f->sha256[0] = '\0'; /* another file now: its hash is unknown */
                        f->git_sha1[0] = '\0';
                    }
                }
            }
            if (c->state < JOURNAL_PINNED)
                c->state = JOURNAL_PINNED;
        } else {
            struct journal_file *f = file_find(c, jstr(r, "p"));
            if (f != NULL)
                file_apply(f, r);
        }
        return 0;
    }
    if (strcmp(k, "xorb") == 0) {
        /* a bad hash or size is refused like any bad record: the xorb is sent again */
        if (!is_lower_hex64(jstr(r, "h")) || !is_cas_key(jstr(r, "c")) || !ju64(r, "b", &u) ||
            u == 0 || u > 64u * 1024 * 1024)
            return UV_EINVAL;
        xorb_put(j, jstr(r, "h"), jstr(r, "c"), u);
        return 0;
    }
    if (!ju64(r, "size", &size) || jstr(r, "oid") == NULL)
        return UV_EINVAL;
    if (strcmp(k, "obj") == 0) {
        const cJSON *urls = cJSON_GetObjectItemCaseSensitive(r, "parts");
        const cJSON *etags = cJSON_GetObjectItemCaseSensitive(r, "etags");
        uint64_t chunk = 0, n = 0;
        int64_t exp = 0;
        if ((o = obj_get(j, jstr(r, "oid"), size, true)) == NULL)
            return UV_ENOMEM;
        ju64(r, "chunk", &chunk);
        ji64(r, "exp", &exp);
        ju64(r, "n", &n);
        if (n > 100000)
            return UV_EINVAL;
        if (chunk != o->chunk_size || n != o->n_parts) {
            obj_parts_free(o); /* another chunking: the finished parts do not apply */
            if (n > 0) {
                o->part_urls = calloc(n, sizeof(char *));
                o->etags = calloc(n, sizeof(char *));
                if (o->part_urls == NULL || o->etags == NULL) {
                    obj_parts_free(o);
                    return UV_ENOMEM;
                }
                o->n_parts = n;
            }
        }
        o->chunk_size = chunk;
        o->expires_at = exp;
        if (jstr(r, "href") != NULL)
            set_str(&o->href, jstr(r, "href"));
        for (size_t i = 0; i < o->n_parts; i++) {
            const cJSON *url = cJSON_GetArrayItem(urls, (int)i);
            const cJSON *tag = cJSON_GetArrayItem(etags, (int)i);
            if (cJSON_IsString(url))
                set_str(&o->part_urls[i], url->valuestring);
            if (cJSON_IsString(tag))
                set_str(&o->etags[i], tag->valuestring);
        }
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "done")))
            o->done = true;
        return 0;
    }
    if ((o = obj_get(j, jstr(r, "oid"), size, false)) == NULL)
        return UV_ENOENT;
    if (strcmp(k, "part") == 0) {
        const char *etag = jstr(r, "etag");
        if (!ju64(r, "n", &u) || u < 1 || u > o->n_parts || etag == NULL)
            return UV_EINVAL;
        set_str(&o->etags[u - 1], etag);
        return 0;
    }
    if (strcmp(k, "done") == 0) {
        o->done = true;
        return 0;
    }
    return UV_EINVAL;
}

/* ---- snapshot ------------------------------------------------------------------------------- */

static cJSON *ckpt_record(const struct journal_ckpt *c)
{
    cJSON *r = cJSON_CreateObject();
    cJSON *files = cJSON_AddArrayToObject(r, "files");

    cJSON_AddStringToObject(r, "k", "ckpt");
    add_u64(r, "id", c->id);
    add_u64(r, "seq", c->seq);
    cJSON_AddStringToObject(r, "name", c->name ? c->name : "");
    cJSON_AddStringToObject(r, "layout", c->layout ? c->layout : "");
    add_i64(r, "step", c->step);
    cJSON_AddStringToObject(r, "st", journal_state_name(c->state));
    if (c->commit[0] != '\0')
        cJSON_AddStringToObject(r, "commit", c->commit);
    if (c->error != NULL)
        cJSON_AddStringToObject(r, "error", c->error);
    for (size_t i = 0; i < c->n_files; i++) {
        const struct journal_file *f = &c->files[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "p", f->path);
        if (f->have_stat) {
            cJSON_AddNumberToObject(e, "size", (double)f->size);
            add_i64(e, "mt", f->mtime_ns);
            add_u64(e, "ino", f->ino);
        }
        if (f->sha256[0] != '\0')
            cJSON_AddStringToObject(e, "sha", f->sha256);
        if (f->git_sha1[0] != '\0')
            cJSON_AddStringToObject(e, "git", f->git_sha1);
        cJSON_AddItemToArray(files, e);
    }
    return r;
}

static cJSON *obj_record(const struct journal_obj *o, bool with_etags)
{
    cJSON *r = cJSON_CreateObject();

    cJSON_AddStringToObject(r, "k", "obj");
    cJSON_AddStringToObject(r, "oid", o->oid);
    cJSON_AddNumberToObject(r, "size", (double)o->size);
    cJSON_AddNumberToObject(r, "chunk", (double)o->chunk_size);
    cJSON_AddNumberToObject(r, "n", (double)o->n_parts);
    add_i64(r, "exp", o->expires_at);
    if (o->href != NULL)
        cJSON_AddStringToObject(r, "href", o->href);
    if (o->n_parts > 0) {
        cJSON *urls = cJSON_AddArrayToObject(r, "parts");
        cJSON *tags = with_etags ? cJSON_AddArrayToObject(r, "etags") : NULL;
        for (size_t i = 0; i < o->n_parts; i++) {
            cJSON_AddItemToArray(urls, o->part_urls[i] ? cJSON_CreateString(o->part_urls[i])
                                                       : cJSON_CreateNull());
            if (tags != NULL)
                cJSON_AddItemToArray(tags, o->etags[i] ? cJSON_CreateString(o->etags[i])
                                                       : cJSON_CreateNull());
        }
    }
    if (o->done)
        cJSON_AddTrueToObject(r, "done");
    return r;
}

static int add_record(struct jbuf *b, cJSON *r, size_t max)
{
    char *text = r != NULL ? cJSON_PrintUnformatted(r) : NULL;
    int rc = text != NULL ? frame(b, text, max) : UV_ENOMEM;

    free(text);
    cJSON_Delete(r);
    return rc;
}

/* Drops what a restart no longer needs, then writes the image as records. */
static int snapshot(struct journal *j, struct jbuf *out)
{
    size_t released = 0;
    int rc = 0;

    for (struct journal_ckpt *c = j->ckpts; c != NULL; c = c->next)
        released += c->state == JOURNAL_RELEASED;
    for (struct journal_ckpt *c = j->ckpts, *next; c != NULL; c = next) {
        next = c->next;
        if (c->state == JOURNAL_RELEASED && released > JOURNAL_RELEASED_KEPT) {
            ckpt_unlink(j, c);
            released--;
        }
    }
    for (struct journal_obj **p = &j->objs; *p != NULL;) {
        if ((*p)->done) {
            struct journal_obj *o = *p;
            *p = o->next;
            obj_free(o);
            j->n_objs--;
        } else {
            p = &(*p)->next;
        }
    }
    for (struct journal_ckpt *c = j->ckpts; c != NULL && rc == 0; c = c->next)
        rc = add_record(out, ckpt_record(c), JOURNAL_FILE_MAX);
    for (struct journal_obj *o = j->objs; o != NULL && rc == 0; o = o->next)
        rc = add_record(out, obj_record(o, true), JOURNAL_FILE_MAX);
    for (size_t i = 0; i < j->n_xorbs && rc == 0; i++) {
        /* oldest first, so that a reload keeps the same ring order */
        size_t at = (j->xorbs_next + JOURNAL_XORBS_MAX - j->n_xorbs + i) % JOURNAL_XORBS_MAX;
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "k", "xorb");
        cJSON_AddStringToObject(r, "h", j->xorbs[at].hash);
        cJSON_AddStringToObject(r, "c", j->xorbs[at].cas);
        cJSON_AddNumberToObject(r, "b", (double)j->xorbs[at].packed_bytes);
        rc = add_record(out, r, JOURNAL_FILE_MAX);
    }
    return rc;
}

/* ---- pool jobs ---------------------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

static int open_append(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    return fd < 0 ? -errno : fd;
}

static int mkdir_p(const char *dir)
{
    char path[PATH_MAX];

    if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    for (char *p = path + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* temp, fsync, close, rename, fsync the directory; the temp is unlinked on failure. */
static int write_snapshot(struct journal *j, const struct jbuf *data, int *ret_fd)
{
    const char *step = "open";
    int fd;

    /* A staging directory deleted with the watched one is made again here; never its parent,
     * which is the watched directory: its return is the training job's to make. */
    if (mkdir(j->dir, 0700) < 0 && errno != EEXIST && errno != ENOENT)
        return -errno;
    fd = open(j->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    int rc = 0;

    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    step = "write";
    if ((rc = write_all(fd, data->p, data->len)) < 0)
        goto fail;
    step = "fsync";
    if (fsync(fd) < 0) {
        rc = -errno;
        goto fail;
    }
    close(fd);
    fd = -1;
    step = "rename";
    if (rename(j->tmp_path, j->path) < 0) {
        rc = -errno;
        goto fail;
    }
    step = "fsync directory";
    if ((rc = fsync_dir(j->dir)) < 0)
        goto fail;
    if ((rc = open_append(j->path)) < 0)
        return rc;
    *ret_fd = rc;
    return 0;
fail:
    log_warn("journal-write-failed", "file='%s' step='%s' reason='%s'", j->tmp_path, step,
             strerror(-rc));
    if (fd >= 0)
        close(fd);
    unlink(j->tmp_path);
    return rc;
}

static void job_work(uv_work_t *w)
{
    struct job *job = w->data;
    struct journal *j = job->j;

    switch (job->kind) {
    case JOB_LOAD: {
        int rc = mkdir_p(j->dir), fd;
        struct stat st;
        if (rc < 0) {
            job->status = rc;
            return;
        }
        fd = open(j->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            job->status = errno == ENOENT ? 0 : -errno;
            return;
        }
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
            size_t want =
                (uint64_t)st.st_size > JOURNAL_FILE_MAX ? JOURNAL_FILE_MAX : (size_t)st.st_size;
            job->data.p = malloc(want ? want : 1);
            while (job->data.p != NULL && job->data.len < want) {
                ssize_t n = read(fd, job->data.p + job->data.len, want - job->data.len);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n <= 0)
                    break;
                job->data.len += (size_t)n;
            }
        }
        close(fd);
        break;
    }
    case JOB_APPEND:
        if (job->fd < 0) {
            job->status = job->fd;
            return;
        }
        job->status = write_all(job->fd, job->data.p, job->data.len);
        if (job->status == 0 && fdatasync(job->fd) < 0)
            job->status = -errno;
        break;
    case JOB_SNAPSHOT: {
        int fd = -1;
        job->status = write_snapshot(j, &job->data, &fd);
        if (job->status == 0) {
            if (job->fd >= 0)
                close(job->fd);
            job->fd = fd;
        }
        break;
    }
    }
}

/* Loop thread: parses the file read by JOB_LOAD record by record. A bad record is logged with
 * its offset and skipped; reading resumes at the next byte where a header with a valid
 * checksum starts (the header's own CRC makes that search cheap and false starts unlikely). */
static void load_records(struct journal *j, const struct jbuf *data)
{
    const unsigned char *p = (const unsigned char *)data->p;
    size_t off = 0, bad_from = SIZE_MAX;

    while (off < data->len) {
        const char *why = NULL;
        uint32_t len = 0;
        cJSON *r = NULL;
        if (off + HDR > data->len) {
            why = "torn record header at the end";
        } else if (get_u32(p + off + 4) != record_crc(p + off, 4)) {
            why = "bad record header";
        } else {
            len = get_u32(p + off);
            if (len == 0 || len > JOURNAL_RECORD_MAX)
                why = "impossible record length";
            else if (off + HDR + len > data->len)
                why = "torn record at the end";
            else if (get_u32(p + off + 8) != record_crc(p + off + HDR, len))
                why = "checksum mismatch";
            else if ((r = cJSON_ParseWithLength((const char *)p + off + HDR, len)) == NULL ||
                     !cJSON_IsObject(r))
                why = "not a JSON object";
        }
        if (why == NULL) {
            if (bad_from != SIZE_MAX) {
                log_warn("journal-corrupt",
                         "file='%s' offset=%zu bytes=%zu reason='unreadable bytes skipped, "
                         "reading on from offset %zu'",
                         j->path, bad_from, off - bad_from, off);
                bad_from = SIZE_MAX;
            }
            int rc = apply(j, r);
            if (rc < 0 && rc != UV_ENOENT)
                log_warn("journal-corrupt", "file='%s' offset=%zu reason='record not applied: %s'",
                         j->path, off, uv_strerror(rc));
            cJSON_Delete(r);
            off += HDR + len;
            continue;
        }
        cJSON_Delete(r);
        if (bad_from == SIZE_MAX) {
            bad_from = off;
            j->corrupt++;
            log_warn("journal-corrupt", "file='%s' offset=%zu reason='%s'", j->path, off, why);
        }
        off++;
    }
    if (bad_from != SIZE_MAX)
        log_warn("journal-corrupt",
                 "file='%s' offset=%zu bytes=%zu reason='no valid record up to the end: dropped'",
                 j->path, bad_from, data->len - bad_from);
}

static void job_done(uv_work_t *w, int status)
{
    struct job *job = w->data;
    struct journal *j = job->j;
    int rc = status < 0 ? status : job->status;

    j->running = NULL;
    j->fd = job->fd;
    if (job->kind == JOB_LOAD) {
        j->loaded = true;
        if (rc == 0)
            load_records(j, &job->data);
        else
            log_warn("journal-unreadable", "file='%s' reason='%s', rebuilding from the pins",
                     j->path, uv_strerror(rc));
        j->file_size = 0;
        j->want_snapshot = true;
        free(job->data.p);
        free(job);
        kick(j);
        return;
    }
    if (rc < 0) {
        if (j->last_error == 0)
            log_error("journal-write-failed", "file='%s' reason='%s'", j->path, uv_strerror(rc));
        j->last_error = rc;
    } else {
        j->last_error = 0;
        j->file_size = job->kind == JOB_SNAPSHOT ? job->data.len : j->file_size + job->data.len;
    }
    if (job->kind == JOB_SNAPSHOT && j->open_cb != NULL) {
        journal_done_cb cb = j->open_cb;
        j->open_cb = NULL;
        cb(j->open_ctx, rc);
    }
    for (size_t i = 0; i < job->n_cbs; i++)
        job->cbs[i].cb(job->cbs[i].ctx, rc);
    free(job->cbs);
    free(job->data.p);
    free(job);
    kick(j);
}

void journal_rewrite(struct journal *j)
{
    if (j == NULL || !j->loaded)
        return; /* the load writes a snapshot anyway */
    j->want_snapshot = true;
    kick(j);
}

/* Starts the next job when none runs: a snapshot when asked for, else the pending appends. */
static void kick(struct journal *j)
{
    struct job *job;

    if (j->running != NULL || (j->pending.len == 0 && j->n_cbs == 0 && !j->want_snapshot))
        return;
    if ((job = calloc(1, sizeof(*job))) == NULL)
        return; /* retried at the next append */
    job->j = j;
    job->fd = j->fd;
    job->work.data = job;
    if (j->want_snapshot || j->file_size + j->pending.len > JOURNAL_COMPACT_AT) {
        /* The image already holds every pending record: they are in the snapshot. */
        job->kind = JOB_SNAPSHOT;
        if (snapshot(j, &job->data) < 0) {
            free(job->data.p);
            job->data = (struct jbuf){0};
            job->kind = JOB_APPEND;
        } else {
            j->want_snapshot = false;
            free(j->pending.p);
            j->pending = (struct jbuf){0};
        }
    } else {
        job->kind = JOB_APPEND;
    }
    if (job->kind == JOB_APPEND) {
        job->data = j->pending;
        j->pending = (struct jbuf){0};
    }
    job->cbs = j->cbs;
    job->n_cbs = j->n_cbs;
    j->cbs = NULL;
    j->n_cbs = j->cap_cbs = 0;
    if (uv_queue_work(j->loop, &job->work, job_work, job_done) < 0) {
        /* cannot happen with a live loop; keep the bytes for the next try */
        j->pending = job->data;
        j->cbs = job->cbs;
        j->n_cbs = j->cap_cbs = job->n_cbs;
        free(job);
        return;
    }
    j->running = job;
}

static int add_cb(struct journal *j, journal_done_cb cb, void *ctx)
{
    if (cb == NULL)
        return 0;
    if (j->n_cbs >= JOURNAL_CBS_MAX)
        return UV_ENOBUFS;
    if (j->n_cbs == j->cap_cbs) {
        size_t cap = j->cap_cbs ? j->cap_cbs * 2 : 16;
        struct jcb *p = realloc(j->cbs, cap * sizeof(*p));
        if (p == NULL)
            return UV_ENOMEM;
        j->cbs = p;
        j->cap_cbs = cap;
    }
    j->cbs[j->n_cbs++] = (struct jcb){cb, ctx};
    return 0;
}

/* Applies r to the image, queues its bytes and cb, and starts the writer. Takes r. */
static int append(struct journal *j, cJSON *r, journal_done_cb cb, void *ctx)
{
    char *text;
    int rc;

    if (r == NULL)
        return UV_ENOMEM;
    if (!j->loaded) {
        cJSON_Delete(r); /* a record made before the old ones are read would be overtaken */
        return UV_EAGAIN;
    }
    if (j->n_cbs >= JOURNAL_CBS_MAX || j->pending.len >= JOURNAL_PENDING_MAX) {
        cJSON_Delete(r);
        return UV_ENOBUFS;
    }
    if ((text = cJSON_PrintUnformatted(r)) == NULL) {
        cJSON_Delete(r);
        return UV_ENOMEM;
    }
    rc = apply(j, r);
    cJSON_Delete(r);
    if (rc == 0)
        rc = frame(&j->pending, text, JOURNAL_PENDING_MAX);
    free(text);
    if (rc == 0)
        rc = add_cb(j, cb, ctx);
    if (rc == 0)
        kick(j);
    return rc;
}

/* ---- public API ----------------------------------------------------------------------------- */

int journal_open(struct journal **ret, uv_loop_t *loop, const char *dir, journal_done_cb cb,
                 void *ctx)
{
    struct journal *j = calloc(1, sizeof(*j));
    struct job *job = calloc(1, sizeof(*job));
    int rc = UV_ENOMEM;

    if (j == NULL || job == NULL)
        goto fail;
    j->loop = loop;
    j->fd = -1;
    j->next_seq = 1;
    j->open_cb = cb;
    j->open_ctx = ctx;
    j->dir = strdup(dir);
    if (j->dir == NULL || asprintf(&j->path, "%s/" JOURNAL_FILE_NAME, dir) < 0 ||
        asprintf(&j->tmp_path, "%s/" JOURNAL_FILE_NAME ".tmp", dir) < 0)
        goto fail;
    job->j = j;
    job->kind = JOB_LOAD;
    job->fd = -1;
    job->work.data = job;
    if ((rc = uv_queue_work(loop, &job->work, job_work, job_done)) < 0)
        goto fail;
    j->running = job;
    *ret = j;
    return 0;
fail:
    free(job);
    journal_free(j);
    return rc;
}

void journal_free(struct journal *j)
{
    if (j == NULL)
        return;
    if (j->fd >= 0)
        close(j->fd);
    while (j->ckpts != NULL) {
        struct journal_ckpt *c = j->ckpts;
        j->ckpts = c->next;
        ckpt_free(c);
    }
    while (j->objs != NULL) {
        struct journal_obj *o = j->objs;
        j->objs = o->next;
        obj_free(o);
    }
    free(j->xorbs);
    free(j->pending.p);
    free(j->cbs);
    free(j->dir);
    free(j->path);
    free(j->tmp_path);
    free(j);
}

int journal_detected(struct journal *j, uint64_t id, const char *name, const char *layout,
                     journal_done_cb cb, void *ctx)
{
    cJSON *r = cJSON_CreateObject();

    cJSON_AddStringToObject(r, "k", "det");
    add_u64(r, "id", id);
    cJSON_AddStringToObject(r, "name", name);
    cJSON_AddStringToObject(r, "layout", layout);
    return append(j, r, cb, ctx);
}

int journal_sealed(struct journal *j, uint64_t id, const char *name, const char *layout,
                   int64_t step, const char *const *files, size_t n, journal_done_cb cb, void *ctx)
{
    cJSON *r = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(r, "files");
    struct journal_ckpt *c = journal_ckpt_find(j, id);

    cJSON_AddStringToObject(r, "k", "seal");
    add_u64(r, "id", id);
    /* a checkpoint detected before a restart keeps its place; a new one comes last */
    add_u64(r, "seq", c != NULL ? c->seq : j->next_seq);
    cJSON_AddStringToObject(r, "name", name);
    cJSON_AddStringToObject(r, "layout", layout);
    add_i64(r, "step", step);
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(files[i]));
    return append(j, r, cb, ctx);
}

int journal_set_state(struct journal *j, uint64_t id, enum journal_state state, const char *detail,
                      journal_done_cb cb, void *ctx)
{
    cJSON *r;

    if (journal_ckpt_find(j, id) == NULL || state == JOURNAL_SEALED)
        return UV_EINVAL;
    r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "k", "st");
    add_u64(r, "id", id);
    cJSON_AddStringToObject(r, "st", journal_state_name(state));
    if (detail != NULL && state == JOURNAL_COMMITTED)
        cJSON_AddStringToObject(r, "commit", detail);
    if (detail != NULL && state == JOURNAL_FAILED)
        cJSON_AddStringToObject(r, "error", detail);
    return append(j, r, cb, ctx);
}

int journal_stats(struct journal *j, uint64_t id, const struct journal_file *files, size_t n,
                  journal_done_cb cb, void *ctx)
{
    cJSON *r, *arr;

    if (journal_ckpt_find(j, id) == NULL)
        return UV_EINVAL;
    r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "k", "stat");
    add_u64(r, "id", id);
    arr = cJSON_AddArrayToObject(r, "files");
    for (size_t i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "p", files[i].path);
        cJSON_AddNumberToObject(e, "size", (double)files[i].size);
        add_i64(e, "mt", files[i].mtime_ns);
        add_u64(e, "ino", files[i].ino);
        if (files[i].sha256[0] != '\0')
            cJSON_AddStringToObject(e, "sha", files[i].sha256);
        if (files[i].git_sha1[0] != '\0')
            cJSON_AddStringToObject(e, "git", files[i].git_sha1);
        cJSON_AddItemToArray(arr, e);
    }
    return append(j, r, cb, ctx);
}

int journal_hashed(struct journal *j, uint64_t id, const char *path, const char *sha256,
                   const char *git_sha1, journal_done_cb cb, void *ctx)
{
    cJSON *r;

    if (journal_ckpt_find(j, id) == NULL)
        return UV_EINVAL;
    r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "k", "hash");
    add_u64(r, "id", id);
    cJSON_AddStringToObject(r, "p", path);
    cJSON_AddStringToObject(r, "sha", sha256);
    if (git_sha1 != NULL && git_sha1[0] != '\0')
        cJSON_AddStringToObject(r, "git", git_sha1);
    return append(j, r, cb, ctx);
}

int journal_obj_planned(struct journal *j, const char *oid, uint64_t size, uint64_t chunk_size,
                        const char *href, int64_t expires_at, const char *const *part_urls,
                        size_t n_parts, journal_done_cb cb, void *ctx)
{
    cJSON *r = cJSON_CreateObject();

    cJSON_AddStringToObject(r, "k", "obj");
    cJSON_AddStringToObject(r, "oid", oid);
    cJSON_AddNumberToObject(r, "size", (double)size);
    cJSON_AddNumberToObject(r, "chunk", (double)chunk_size);
    cJSON_AddNumberToObject(r, "n", (double)n_parts);
    add_i64(r, "exp", expires_at);
    if (href != NULL)
        cJSON_AddStringToObject(r, "href", href);
    if (n_parts > 0) {
        cJSON *urls = cJSON_AddArrayToObject(r, "parts");
        for (size_t i = 0; i < n_parts; i++)
            cJSON_AddItemToArray(urls, part_urls && part_urls[i] ? cJSON_CreateString(part_urls[i])
                                                                 : cJSON_CreateNull());
    }
    return append(j, r, cb, ctx);
}

int journal_part_done(struct journal *j, const char *oid, uint64_t size, size_t part,
                      const char *etag, journal_done_cb cb, void *ctx)
{
    struct journal_obj *o = journal_obj_find(j, oid, size);
    cJSON *r;

    if (o == NULL || part < 1 || part > o->n_parts || etag == NULL)
        return UV_EINVAL;
    r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "k", "part");
    cJSON_AddStringToObject(r, "oid", oid);
    cJSON_AddNumberToObject(r, "size", (double)size);
    cJSON_AddNumberToObject(r, "n", (double)part);
    cJSON_AddStringToObject(r, "etag", etag);
    return append(j, r, cb, ctx);
}

int journal_obj_done(struct journal *j, const char *oid, uint64_t size, journal_done_cb cb,
                     void *ctx)
{
    cJSON *r;

    if (journal_obj_find(j, oid, size) == NULL && obj_get(j, oid, size, true) == NULL)
        return UV_EINVAL;
    r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "k", "done");
    cJSON_AddStringToObject(r, "oid", oid);
    cJSON_AddNumberToObject(r, "size", (double)size);
    return append(j, r, cb, ctx);
}

const struct journal_xorb *journal_xorb_find(const struct journal *j, const char *hash,
                                             const char *cas)
{
    for (size_t i = 0; i < j->n_xorbs; i++)
        if (strcmp(j->xorbs[i].hash, hash) == 0 && strcmp(j->xorbs[i].cas, cas) == 0)
            return &j->xorbs[i];
    return NULL;
}

int journal_xorb_done(struct journal *j, const char *hash, const char *cas, uint64_t packed_bytes,
                      journal_done_cb cb, void *ctx)
{
    cJSON *r;

    if (!is_lower_hex64(hash) || !is_cas_key(cas) || packed_bytes == 0)
        return UV_EINVAL;
    r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "k", "xorb");
    cJSON_AddStringToObject(r, "h", hash);
    cJSON_AddStringToObject(r, "c", cas);
    cJSON_AddNumberToObject(r, "b", (double)packed_bytes);
    return append(j, r, cb, ctx);
}

int journal_forget(struct journal *j, uint64_t id, journal_done_cb cb, void *ctx)
{
    cJSON *r;

    if (journal_ckpt_find(j, id) == NULL)
        return UV_EINVAL;
    r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "k", "forget");
    add_u64(r, "id", id);
    return append(j, r, cb, ctx);
}

int journal_sync(struct journal *j, journal_done_cb cb, void *ctx)
{
    int rc = add_cb(j, cb, ctx);

    if (rc == 0)
        kick(j);
    return rc;
}

/* ---- the reader without a file (journal.h: tests and the fuzzer) -------------------------- */

int journal_load_bytes(struct journal **ret, const void *data, size_t len, char **ret_snapshot,
                       size_t *ret_snapshot_len)
{
    struct journal *j = calloc(1, sizeof(*j));
    struct jbuf in = {.p = (char *)data, .len = len, .cap = len}, out = {0};
    int rc;

    if (j == NULL || (j->path = strdup("(memory)")) == NULL) {
        free(j);
        return UV_ENOMEM;
    }
    j->fd = -1;
    j->next_seq = 1;
    load_records(j, &in);
    j->loaded = true;
    if (ret_snapshot != NULL) {
        rc = snapshot(j, &out);
        if (rc < 0) {
            free(out.p);
            journal_free(j);
            return rc;
        }
        *ret_snapshot = out.p;
        *ret_snapshot_len = out.len;
    }
    *ret = j;
    return 0;
}
