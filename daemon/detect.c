/* detect.c - layout rules: grouping files into checkpoint candidates and sealing them.
 *
 * Owns file records (open/closed state by root-relative path) and candidates; knows nothing of
 * inotify, pins or uploads. Pure and single-threaded (the loop thread), driven by the caller's
 * clock, so unit tests replay recorded traces with their own timestamps.
 */
#include "detect.h"

#include "watch.h"

#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_LEN 4095

/* --- a string-keyed hash map; keys are owned by the values ------------------------------- */

struct smap_ent {
    const char *key; /* NULL: empty; &tomb: deleted */
    void *val;
};

struct smap {
    struct smap_ent *e;
    size_t cap, n, used; /* used counts tombstones too */
};

static const char tomb;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static struct smap_ent *smap_find(const struct smap *m, const char *key)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = hash_str(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct smap_ent *e = &m->e[i];
        if (e->key == NULL)
            return NULL;
        if (e->key != &tomb && strcmp(e->key, key) == 0)
            return e;
    }
}

static void *smap_get(const struct smap *m, const char *key)
{
    struct smap_ent *e = smap_find(m, key);
    return e != NULL ? e->val : NULL;
}

static int smap_grow(struct smap *m)
{
    size_t cap = m->cap == 0 ? 64 : (m->n * 2 > m->cap ? m->cap * 2 : m->cap);
    struct smap_ent *e = calloc(cap, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->e[i].key == NULL || m->e[i].key == &tomb)
            continue;
        size_t j = hash_str(m->e[i].key) & (cap - 1);
        while (e[j].key != NULL)
            j = (j + 1) & (cap - 1);
        e[j] = m->e[i];
    }
    free(m->e);
    m->e = e;
    m->cap = cap;
    m->used = m->n;
    return 0;
}

/* key must not be present. */
static int smap_put(struct smap *m, const char *key, void *val)
{
    if ((m->used + 1) * 4 > m->cap * 3) {
        int r = smap_grow(m);
        if (r < 0)
            return r;
    }
    size_t i = hash_str(key) & (m->cap - 1);
    while (m->e[i].key != NULL && m->e[i].key != &tomb)
        i = (i + 1) & (m->cap - 1);
    if (m->e[i].key == NULL)
        m->used++;
    m->e[i].key = key;
    m->e[i].val = val;
    m->n++;
    return 0;
}

static void smap_del(struct smap *m, const char *key)
{
    struct smap_ent *e = smap_find(m, key);
    if (e == NULL)
        return;
    e->key = &tomb;
    e->val = NULL;
    m->n--;
}

/* --- records and candidates --------------------------------------------------------------- */

struct layout;

struct drec {
    char *path;               /* root-relative; the map key */
    struct detect_cand *cand; /* candidate it is attributed to, or NULL */
    size_t rel_off;           /* path + rel_off: relative to cand->dir */
    bool member;              /* part of what is pushed (visible) */
    bool open;                /* CREATE/MODIFY seen without CLOSE_WRITE */
    bool closed;              /* closed after writing, or found complete */
    bool late;                /* late write already reported */
    bool scanned;             /* found by a directory listing, never seen written since */
    bool scan_told;           /* reported ready after SCAN_SETTLE_MS without a write */
    int64_t scanned_ms;       /* when that listing reported it */
    int64_t wrote_ms;         /* last close or rename into this name */
};

struct detect_cand {
    uint64_t id;
    char *name;
    char *dir; /* the directory relpaths are relative to: name, or name's parent for files */
    size_t dir_len;
    const struct layout *layout;
    int64_t step;
    int64_t last_ms;
    int64_t quiet_ms; /* the layout's or the custom rule's quiet period */
    int rule_idx;     /* custom rules: index into detect.rules */
    bool marked;      /* orbax: renamed from its temporary name */
    bool doubtful;    /* files of it may have come and gone unseen (cand_doubt): never sealed */
    bool settled;     /* file_ready was reported for every member once it was complete */
    bool live;        /* an event (not only a directory listing) touched it: being saved now */
    int64_t scan_settle_ms; /* when listed members quiet since their listing count as closed */
    bool listed;            /* a folder in it was listed (the folder's watch added) ... */
    int64_t listed_ms;      /* ... last at this time */
    unsigned replaced;      /* versions of a file replaced before the seal (coalesced) */
    size_t n_open;
    struct drec **members;
    size_t n_members, cap_members;
    bool sealed;
    char rule[200];
    char **files; /* sorted snapshot, once sealed */
    size_t n_files;
};

struct match {
    const struct layout *layout;
    int rule_idx;
    const char *name; /* the candidate's name when it is not a prefix of the path (Lightning's
                       * last.ckpt joins the save open in its folder), else NULL */
    size_t name_len;  /* candidate name = path[0..name_len) */
    size_t dir_len;
    size_t rel_off;
    bool member;
};

/* One entry per layout. match() says whether a path belongs to a candidate of this layout;
 * complete() is the layout's marker, checked together with "nothing open" and the quiet
 * period. New layouts (DCP .metadata, DeepSpeed latest, Orbax...) are one more entry. */
struct layout {
    const char *name;
    bool folder;            /* the candidate is a directory that exists before its files */
    bool reopen_after_seal; /* a new write to a sealed candidate is a new checkpoint */
    bool seal_on_delete;    /* a delete inside a marked, closed candidate seals it at once */
    /* d is read only to find a folder candidate already owning the path's directory. */
    bool (*match)(const struct detect *d, const char *path, bool is_dir, struct match *m);
    /* why (may be NULL) gets the marker that holds, for the rule string of the seal. */
    bool (*complete)(const struct detect *d, const struct detect_cand *c, char *why, size_t n);
};

struct detect {
    struct detect_config cfg;
    struct detect_callbacks cbs;
    struct smap files; /* path -> struct drec */
    struct smap names; /* candidate name -> struct detect_cand (the live one for that name) */
    struct detect_cand **cands; /* id order */
    size_t n_cands, cap_cands;
    uint64_t next_id;
    struct detect_rule *rules; /* copies of the configured custom rules */
    size_t n_rules;
    char *force_layout; /* NULL: auto-detect */
    struct smap owned;  /* paths whose checkpoint the journal owns (detect_own): key == value */
};

/* --- path helpers ----------------------------------------------------------------------- */

static bool path_valid(const char *p)
{
    if (p == NULL || p[0] == '/')
        return false;
    for (const char *s = p; *s != '\0';) {
        size_t n = strcspn(s, "/");
        if (n == 2 && s[0] == '.' && s[1] == '.')
            return false;
        s += n;
        if (*s == '/')
            s++;
    }
    return strlen(p) <= PATH_MAX_LEN;
}

static bool under(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    if (n == 0)
        return path[0] != '\0';
    return strncmp(path, prefix, n) == 0 && path[n] == '/';
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s != NULL ? s + 1 : path;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
    }
    return true;
}

/* Any component of path[0..n) hidden? */
static bool has_hidden(const char *path, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (path[i] == '.' && (i == 0 || path[i - 1] == '/'))
            return true;
    }
    return false;
}

/* "model-00001-of-00007.safetensors", "pytorch_model-00001-of-00002.bin" */
static bool is_shard_name(const char *b, const char *prefix, const char *ext)
{
    size_t p = strlen(prefix);
    if (strncmp(b, prefix, p) != 0 || b[p] != '-')
        return false;
    const char *s = b + p + 1;
    size_t d1 = strspn(s, "0123456789");
    if (d1 == 0 || strncmp(s + d1, "-of-", 4) != 0)
        return false;
    s += d1 + 4;
    size_t d2 = strspn(s, "0123456789");
    return d2 > 0 && strcmp(s + d2, ext) == 0;
}

/* What save_model()/save_pretrained() and the end of training write at the output root. */
static bool is_model_file_name(const char *b)
{
    static const char *const exact[] = {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "tf_model.h5",
        "flax_model.msgpack",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "tokenizer.model",
        "spiece.model",
        "sentencepiece.bpe.model",
        "chat_template.jinja",
        "chat_template.json",
        "preprocessor_config.json",
        "processor_config.json",
        "feature_extractor_config.json",
        "image_processor_config.json",
        "training_args.bin",
        "trainer_state.json",
        "README.md",
    };
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        if (strcmp(b, exact[i]) == 0)
            return true;
    }
    if (strncmp(b, "adapter_", 8) == 0)
        return true;
    if (ends_with(b, "_results.json"))
        return true;
    return is_shard_name(b, "model", ".safetensors") || is_shard_name(b, "pytorch_model", ".bin");
}

static bool is_weight_name(const char *b)
{
    static const char *const ext[] = {".safetensors", ".pt", ".pth", ".ckpt", ".bin"};
    for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
        if (ends_with(b, ext[i]) && strlen(b) > strlen(ext[i]))
            return true;
    }
    return false;
}

/* --- layouts ------------------------------------------------------------------------------ */

static struct drec *rec_get(const struct detect *d, const char *path)
{
    return smap_get(&d->files, path);
}

static bool rec_done(const struct detect_cand *c, const struct drec *r)
{
    return r != NULL && r->cand == c && r->member && r->closed && !r->open;
}

/* The member dir/base of c, closed? */
static bool member_closed(const struct detect *d, const struct detect_cand *c, const char *base)
{
    char p[PATH_MAX_LEN + 2];
    if (c->dir_len == 0)
        snprintf(p, sizeof(p), "%s", base);
    else if ((size_t)snprintf(p, sizeof(p), "%s/%s", c->dir, base) >= sizeof(p))
        return false;
    return rec_done(c, rec_get(d, p));
}

static void say(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(char *why, size_t n, const char *fmt, ...)
{
    va_list ap;
    if (why == NULL || n == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
}

/* Layout name of the folder candidate named path[0..dir_len), or NULL: a folder once recognised
 * by one of its files owns the other files written directly into it (temporaries included). */
static const char *owner_of(const struct detect *d, const char *path, size_t dir_len)
{
    char name[PATH_MAX_LEN + 1];
    if (dir_len == 0 || dir_len > PATH_MAX_LEN)
        return NULL;
    memcpy(name, path, dir_len);
    name[dir_len] = '\0';
    const struct detect_cand *c = smap_get(&d->names, name);
    return c != NULL && c->layout->folder ? c->layout->name : NULL;
}

/* A file directly in a (non-hidden) subdirectory: fills the match for that directory. */
static bool in_subdir(const char *path, bool is_dir, struct match *m, const char **ret_base)
{
    const char *b = base_name(path);
    if (is_dir || b == path)
        return false;
    size_t dl = (size_t)(b - path) - 1;
    if (has_hidden(path, dl))
        return false;
    m->name_len = dl;
    m->dir_len = dl;
    m->rel_off = dl + 1;
    m->member = b[0] != '.';
    *ret_base = b;
    return true;
}

/* checkpoint-<N>/ at any depth; the first such component owns everything below it. */
static bool trainer_match(const struct detect *d, const char *path, bool is_dir, struct match *m)
{
    (void)d;
    const char *s = path;
    while (*s != '\0') {
        size_t n = strcspn(s, "/");
        bool last = s[n] == '\0';
        if (s[0] == '.')
            return false; /* hidden directory before any checkpoint folder */
        if (last && !is_dir)
            return false;
        if (n > 11 && strncmp(s, "checkpoint-", 11) == 0 && all_digits(s + 11, n - 11)) {
            m->name_len = (size_t)(s - path) + n;
            m->dir_len = m->name_len;
            m->rel_off = last ? m->name_len : m->name_len + 1;
            m->member = !last && !has_hidden(path + m->rel_off, strlen(path + m->rel_off));
            return true;
        }
        s += n;
        if (*s == '/')
            s++;
    }
    return false;
}

static bool trainer_complete(const struct detect *d, const struct detect_cand *c, char *why,
                             size_t n)
{
    say(why, n, "trainer_state.json closed");
    return member_closed(d, c, "trainer_state.json");
}

static bool owner_match(const struct detect *d, const char *path, bool is_dir, struct match *m,
                        const char *layout);

/* "__<rank>_<n>.distcp": torch.distributed.checkpoint's data files. */
static bool is_distcp_name(const char *b)
{
    if (strncmp(b, "__", 2) != 0 || !ends_with(b, ".distcp"))
        return false;
    const char *s = b + 2;
    size_t d1 = strspn(s, "0123456789");
    if (d1 == 0 || s[d1] != '_')
        return false;
    s += d1 + 1;
    size_t d2 = strspn(s, "0123456789");
    return d2 > 0 && strcmp(s + d2, ".distcp") == 0;
}

/* torch.distributed.checkpoint into a subdirectory: the coordinator writes .metadata last (as
 * .metadata.tmp renamed into place), after every rank's .distcp. .metadata is hidden but it is
 * the checkpoint's index: a member. */
static bool dcp_match(const struct detect *d, const char *path, bool is_dir, struct match *m)
{
    const char *b;
    if (!in_subdir(path, is_dir, m, &b))
        return false;
    bool named = is_distcp_name(b) || strcmp(b, ".metadata") == 0;
    if (!named) {
        const char *o = owner_of(d, path, m->dir_len);
        if (o == NULL || strcmp(o, "torch-dcp") != 0) {
            /* Deeper: what the saver wrote beside the DCP files (NeMo's context/ when its
             * -unfinished marker was gone before the folder was first seen). */
            memset(m, 0, sizeof(*m));
            return owner_match(d, path, is_dir, m, "torch-dcp");
        }
    }
    m->member = b[0] != '.' || strcmp(b, ".metadata") == 0;
    return true;
}

static bool dcp_complete(const struct detect *d, const struct detect_cand *c, char *why, size_t n)
{
    size_t data = 0;
    for (size_t i = 0; i < c->n_members; i++)
        data += is_distcp_name(base_name(c->members[i]->path));
    if (d->cfg.dcp_part && data > 0) {
        say(why, n, "this node's %zu .distcp closed (its part of a multi-node checkpoint)", data);
        return true;
    }
    say(why, n, ".metadata written after %zu .distcp", data);
    return member_closed(d, c, ".metadata");
}

/* "<prefix>-<k>-of-<n>.<ext>": save_pretrained's shards (model-00001-of-00007.safetensors,
 * pytorch_model-00001-of-00002.bin, diffusion_pytorch_model-00001-of-00002.safetensors). */
static bool parse_shard(const char *b, long *ret_k, long *ret_n)
{
    for (const char *s = strchr(b, '-'); s != NULL; s = strchr(s + 1, '-')) {
        const char *p = s + 1;
        size_t d1 = strspn(p, "0123456789");
        if (d1 == 0 || strncmp(p + d1, "-of-", 4) != 0)
            continue;
        const char *q = p + d1 + 4;
        size_t d2 = strspn(q, "0123456789");
        if (d2 == 0 || q[d2] != '.' || q[d2 + 1] == '\0')
            continue;
        *ret_k = strtol(p, NULL, 10);
        *ret_n = strtol(q, NULL, 10);
        return *ret_k >= 1 && *ret_n >= 1 && *ret_k <= *ret_n;
    }
    return false;
}

/* One file that is the whole model (unsharded save_pretrained, PEFT adapter-only save). */
static bool is_whole_weights(const char *b)
{
    static const char *const names[] = {
        "model.safetensors",
        "pytorch_model.bin",
        "tf_model.h5",
        "flax_model.msgpack",
        "adapter_model.safetensors",
        "adapter_model.bin",
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.bin",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(b, names[i]) == 0)
            return true;
    }
    return false;
}

/* save_pretrained() into a subdirectory: a folder holding model files (config, weights,
 * shards and their index, tokenizer, adapter). */
static bool model_dir_match(const struct detect *d, const char *path, bool is_dir, struct match *m)
{
    const char *b;
    long k, n;
    if (!in_subdir(path, is_dir, m, &b))
        return false;
    bool named = b[0] != '.' && (is_model_file_name(b) || is_whole_weights(b) ||
                                 parse_shard(b, &k, &n) || ends_with(b, ".index.json"));
    if (!named) {
        const char *o = owner_of(d, path, m->dir_len);
        if (o == NULL || strcmp(o, "model-dir") != 0)
            return false;
    }
    return true;
}

/* The detector reads no file, so the index's weight_map is not visible: the shard names say
 * how many there are ("-of-N"). Complete when N shards of the largest N seen and an
 * *.index.json are closed; without shards, when one whole-model weights file is closed. */
static bool model_dir_complete(const struct detect *d, const struct detect_cand *c, char *why,
                               size_t n)
{
    (void)d;
    long want = 0, have = 0, k, total;
    bool index = false, whole = false;
    const char *whole_name = "";
    for (size_t i = 0; i < c->n_members; i++) {
        const struct drec *r = c->members[i];
        const char *b = r->path + r->rel_off;
        if (parse_shard(b, &k, &total) && total > want)
            want = total;
    }
    for (size_t i = 0; i < c->n_members; i++) {
        const struct drec *r = c->members[i];
        const char *b = r->path + r->rel_off;
        if (!r->closed)
            continue;
        if (want > 0 && parse_shard(b, &k, &total) && total == want)
            have++;
        else if (ends_with(b, ".index.json"))
            index = true;
        else if (is_whole_weights(b)) {
            whole = true;
            whole_name = b;
        }
    }
    if (want > 0) {
        say(why, n, "index and %ld of %ld shards closed", have, want);
        return index && have == want;
    }
    say(why, n, "%s closed", whole_name);
    return whole;
}

static bool root_match(const struct detect *d, const char *path, bool is_dir, struct match *m)
{
    (void)d;
    if (is_dir || strchr(path, '/') != NULL || path[0] == '.' || !is_model_file_name(path))
        return false;
    m->name_len = 0;
    m->dir_len = 0;
    m->rel_off = 0;
    m->member = true;
    return true;
}

/* A tokenizer or config saved at the root early in a run is not the model: wait for weights. */
static bool root_complete(const struct detect *d, const struct detect_cand *c, char *why, size_t n)
{
    (void)d;
    say(why, n, "model weights present");
    for (size_t i = 0; i < c->n_members; i++) {
        const char *b = c->members[i]->path;
        if (is_weight_name(b) && strcmp(b, "training_args.bin") != 0)
            return true;
    }
    return false;
}

static bool file_match(const struct detect *d, const char *path, bool is_dir, struct match *m)
{
    (void)d;
    const char *b = base_name(path);
    if (is_dir || b[0] == '.' || !is_weight_name(b) || has_hidden(path, (size_t)(b - path)))
        return false;
    if (b == path && is_model_file_name(b))
        return false; /* the root's model files belong to model-root */
    m->name_len = strlen(path);
    m->dir_len = b == path ? 0 : (size_t)(b - path) - 1;
    m->rel_off = (size_t)(b - path);
    m->member = true;
    return true;
}

static bool file_complete(const struct detect *d, const struct detect_cand *c, char *why, size_t n)
{
    (void)d;
    say(why, n, "file closed");
    return c->n_members == 1 && c->members[0]->closed && !c->members[0]->open;
}

/* Candidate named path[0..n) of the given layout, or NULL. */
static struct detect_cand *cand_named(const struct detect *d, const char *path, size_t n,
                                      const char *layout)
{
    char name[PATH_MAX_LEN + 1];
    if (n == 0 || n > PATH_MAX_LEN)
        return NULL;
    memcpy(name, path, n);
    name[n] = '\0';
    struct detect_cand *c = smap_get(&d->names, name);
    return c != NULL && strcmp(c->layout->name, layout) == 0 ? c : NULL;
}

static void match_prefix(struct match *m, const char *path, size_t n, bool is_dir)
{
    bool self = path[n] == '\0';
    m->name_len = n;
    m->dir_len = n;
    m->rel_off = self ? n : n + 1;
    m->member = !self && !is_dir && !has_hidden(path + m->rel_off, strlen(path + m->rel_off));
}

/* The first directory component for which pred() holds owns everything below it. */
static bool component_match(const char *path, bool is_dir, struct match *m,
                            bool (*pred)(const char *path, const char *s, size_t n))
{
    for (const char *s = path; *s != '\0';) {
        size_t n = strcspn(s, "/");
        bool last = s[n] == '\0';
        if (s[0] == '.' || (last && !is_dir))
            return false;
        if (pred(path, s, n)) {
            match_prefix(m, path, (size_t)(s - path) + n, is_dir);
            return true;
        }
        s += n;
        if (*s == '/')
            s++;
    }
    return false;
}

/* An ancestor directory of path (or path itself, a directory) that is a candidate of layout. */
static bool owner_match(const struct detect *d, const char *path, bool is_dir, struct match *m,
                        const char *layout)
{
    size_t len = strlen(path);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && !(i == len && is_dir))
            continue;
        if (cand_named(d, path, i, layout) != NULL) {
            match_prefix(m, path, i, is_dir);
            return true;
        }
        if (i == len)
            break;
    }
    return false;
}

/* DeepSpeed engine.save_checkpoint: tag folder global_step<N>/ (the default tag). */
static bool ds_pred(const char *path, const char *s, size_t n)
{
    (void)path;
    return n > 11 && strncmp(s, "global_step", 11) == 0 && all_digits(s + 11, n - 11);
}

static bool ds_match(const struct detect *d, const char *path, bool is_dir, struct match *m)
{
    (void)d;
    return component_match(path, is_dir, m, ds_pred);
}

/* save_checkpoint writes <save_dir>/latest (the tag) after every file of the tag folder: the
 * detector cannot read which tag it names, so "latest closed after the folder's last write". */
static bool ds_complete(const struct detect *d, const struct detect_cand *c, char *why, size_t n)
{
    char p[PATH_MAX_LEN + 16];
    const char *b = base_name(c->name);
    int64_t last = -1;
    if (b == c->name)
        snprintf(p, sizeof(p), "latest");
    else
        snprintf(p, sizeof(p), "%.*slatest", (int)(b - c->name), c->name);
    say(why, n, "'latest' written after the folder");
    const struct drec *l = rec_get(d, p);
    if (l == NULL || l->open || !l->closed || c->n_members == 0)
        return false;
    for (size_t i = 0; i < c->n_members; i++) {
        if (c->members[i]->wrote_ms > last)
            last = c->members[i]->wrote_ms;
    }
    return l->wrote_ms >= last;
}

/* DeepSpeed's quiet period runs from the write of latest, its marker. */
static void ds_latest_written(struct detect *d, const char *latest, int64_t now)
{
    size_t dl = (size_t)(base_name(latest) - latest);
    for (size_t i = 0; i < d->n_cands; i++) {
        struct detect_cand *c = d->cands[i];
        if (c->sealed || strcmp(c->layout->name, "deepspeed") != 0 ||
            (size_t)(base_name(c->name) - c->name) != dl || strncmp(c->name, latest, dl) != 0)
            continue;
        c->last_ms = now;
    }
}

/* accelerate save_state with automatic_checkpoint_naming: checkpoints/checkpoint_<i>/. */
static bool acc_pred(const char *path, const char *s, size_t n)
{
    if (!(n > 11 && strncmp(s, "checkpoint_", 11) == 0 && all_digits(s + 11, n - 11)))
        return false;
    return s - path >= 12 && strncmp(s - 12, "checkpoints/", 12) == 0 &&
           (s - path == 12 || s[-13] == '/');
}

static bool acc_match(const struct detect *d, const char *path, bool is_dir, struct match *m)
{
    (void)d;
    return component_match(path, is_dir, m, acc_pred);
}

static bool acc_complete(const struct detect *d, const struct detect_cand *c, char *why, size_t n)
{
    (void)d;
    say(why, n, "no marker: %zu files closed", c->n_members);
    return c->n_members > 0;
}

#define ORBAX_TMP ".orbax-checkpoint-tmp-"
/* Orbax's step metadata (metadata/checkpoint.py _STEP_METADATA_FILENAME), written into the
 * temporary folder when it is made and again after the handler's save (Checkpointer.save). */
#define ORBAX_META "_CHECKPOINT_METADATA"

static bool orbax_tmp_pred(const char *path, const char *s, size_t n)
{
    (void)path;
    size_t k = strlen(ORBAX_TMP);
    for (size_t i = 0; i + k <= n; i++) {
        if (strncmp(s + i, ORBAX_TMP, k) == 0)
            return i > 0;
    }
    return false;
}

/* Orbax: <step>.orbax-checkpoint-tmp-<ts>/ written, then renamed to <step>/ (utils.py
 * create_tmp_directory / ensure_atomic_save); where renames are not atomic (GCS) it saves in
 * place and writes commit_success.txt. The temporary folder is a candidate that never seals,
 * so its files are pinned at first sight; the rename moves them to the final candidate. */
static bool orbax_match(const struct detect *d, const char *path, bool is_dir, struct match *m)
{
    const char *b;
    if (component_match(path, is_dir, m, orbax_tmp_pred))
        return true;
    if (owner_match(d, path, is_dir, m, "orbax"))
        return true;
    /* A folder already renamed to its final name when first seen still holds the metadata. */
    memset(m, 0, sizeof(*m));
    return in_subdir(path, is_dir, m, &b) && strcmp(b, ORBAX_META) == 0;
}

static bool orbax_complete(const struct detect *d, const struct detect_cand *c, char *why, size_t n)
{
    if (c->marked) {
        say(why, n, "renamed from its " ORBAX_TMP "* folder");
        return c->n_members > 0;
    }
    if (strstr(base_name(c->name), ORBAX_TMP) != NULL)
        return false;
    if (member_closed(d, c, "commit_success.txt")) {
        say(why, n, "commit_success.txt closed");
        return true;
    }
    /* On a local filesystem Orbax always saves under the temporary name and renames (only GCS
     * paths save in place with commit_success.txt): a folder whose metadata a scan found under
     * its final name was renamed before its watch existed, so it is finalised
     * (utils.is_checkpoint_finalized). Metadata seen written here means an in-place save. */
    char p[PATH_MAX_LEN + 2];
    snprintf(p, sizeof(p), "%s/" ORBAX_META, c->dir);
    const struct drec *meta = rec_get(d, p);
    say(why, n, "found finalised (" ORBAX_META " under its final name)");
    return rec_done(c, meta) && meta->scanned;
}

/* NeMo ModelCheckpoint._save_checkpoint: touches <ckpt>-unfinished beside the checkpoint
 * (a directory for distributed checkpoints), saves, then unlinks the marker. */
#define NEMO_SUFFIX "-unfinished"

static bool nemo_match(const struct detect *d, const char *path, bool is_dir, struct match *m)
{
    size_t len = strlen(path);
    char p[PATH_MAX_LEN + 16];
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && !(i == len && is_dir))
            continue;
        snprintf(p, sizeof(p), "%.*s" NEMO_SUFFIX, (int)i, path);
        if (rec_get(d, p) != NULL || cand_named(d, path, i, "nemo") != NULL) {
            match_prefix(m, path, i, is_dir);
            /* a distributed checkpoint inside: DCP's .metadata is part of it */
            if (!m->member && !is_dir && strcmp(base_name(path), ".metadata") == 0)
                m->member = true;
            return true;
        }
        if (i == len)
            break;
    }
    return false;
}

static bool nemo_complete(const struct detect *d, const struct detect_cand *c, char *why, size_t n)
{
    char p[PATH_MAX_LEN + 16];
    snprintf(p, sizeof(p), "%s" NEMO_SUFFIX, c->name);
    say(why, n, "'%s" NEMO_SUFFIX "' removed", base_name(c->name));
    return c->n_members > 0 && (c->marked || rec_get(d, p) == NULL);
}

/* torchsnapshot Snapshot.take: rank 0 writes .snapshot_metadata after a barrier that follows
 * every rank's writes. Files written before it are adopted when it appears. */
static bool tsnap_match(const struct detect *d, const char *path, bool is_dir, struct match *m)
{
    const char *b;
    if (in_subdir(path, is_dir, m, &b) && strcmp(b, ".snapshot_metadata") == 0) {
        m->member = true;
        return true;
    }
    memset(m, 0, sizeof(*m));
    return owner_match(d, path, is_dir, m, "torchsnapshot");
}

static bool tsnap_complete(const struct detect *d, const struct detect_cand *c, char *why, size_t n)
{
    say(why, n, ".snapshot_metadata written");
    return member_closed(d, c, ".snapshot_metadata");
}

/* Custom rules (configuration): the first directory prefix of a path matching a rule's glob
 * is the checkpoint; complete when the marker (a path inside it, hidden allowed) is closed, or
 * without a marker when its files are closed; then the rule's quiet period. */
static bool custom_match(const struct detect *d, const char *path, bool is_dir, struct match *m)
{
    size_t len = strlen(path);
    char p[PATH_MAX_LEN + 1];
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && !(i == len && is_dir))
            continue;
        memcpy(p, path, i);
        p[i] = '\0';
        for (size_t k = 0; k < d->n_rules; k++) {
            if (fnmatch(d->rules[k].glob, p, FNM_PATHNAME) != 0)
                continue;
            match_prefix(m, path, i, is_dir);
            m->rule_idx = (int)k;
            const char *mk = d->rules[k].marker;
            if (!m->member && mk != NULL && strcmp(path + m->rel_off, mk) == 0)
                m->member = true;
            return true;
        }
        if (i == len)
            break;
    }
    return false;
}

static bool custom_complete(const struct detect *d, const struct detect_cand *c, char *why,
                            size_t n)
{
    const struct detect_rule *r = &d->rules[c->rule_idx];
    if (r->marker == NULL || r->marker[0] == '\0') {
        say(why, n, "rule '%s': files closed", r->glob);
        return c->n_members > 0;
    }
    say(why, n, "rule '%s': '%s' closed", r->glob, r->marker);
    return member_closed(d, c, r->marker);
}

/* Lightning's ModelCheckpoint (lightning/pytorch/callbacks/model_checkpoint.py): a save writes
 * epoch=<E>-step=<S>.ckpt (the default file name; _save_topk_checkpoint), removes the file it
 * pushes out of the top k, then writes last.ckpt (_save_last_checkpoint), each through
 * _atomic_save (written under a temporary name elsewhere, renamed or copied in), or, with
 * save_last="link", makes last.ckpt a symlink to the new file (_link_checkpoint). One save is one
 * candidate, named after its epoch file; last.ckpt joins the save open in its folder. */
#define LIGHTNING_LAST "last"
/* How long a save waits for its last.ckpt when its folder has one from an earlier save
 * (save_last is on): last.ckpt is serialised again after the epoch file. */
#define LIGHTNING_LAST_WAIT_MS 60000

/* "last.ckpt", or "last-v<N>.ckpt" (the version counter for a folder that had one already). */
static bool lightning_is_last(const char *b)
{
    size_t n = strlen(LIGHTNING_LAST);
    if (strncmp(b, LIGHTNING_LAST, n) != 0)
        return false;
    b += n;
    if (strncmp(b, "-v", 2) == 0 && b[2] >= '0' && b[2] <= '9')
        b += 2 + strspn(b + 2, "0123456789");
    return strcmp(b, ".ckpt") == 0;
}

/* The names ModelCheckpoint auto-inserts ("{epoch}" becomes "epoch=3"); with --layout lightning
 * any other *.ckpt file is a save too (a filename template without them). */
static bool lightning_is_save(const struct detect *d, const char *b)
{
    if (d->force_layout != NULL && strcmp(d->force_layout, "lightning") == 0)
        return true;
    return strstr(b, "epoch=") != NULL || strstr(b, "step=") != NULL;
}

static bool lightning_is_cand(const struct detect_cand *c)
{
    return strcmp(c->layout->name, "lightning") == 0;
}

/* The newest unsealed save (not a lone last.ckpt) in the folder path[0..dir_len). */
static struct detect_cand *lightning_open_save(const struct detect *d, const char *path,
                                               size_t dir_len)
{
    struct detect_cand *best = NULL;
    for (size_t i = 0; i < d->n_cands; i++) {
        struct detect_cand *c = d->cands[i];
        if (!lightning_is_cand(c) || c->sealed || c->doubtful || c->dir_len != dir_len ||
            strncmp(c->dir, path, dir_len) != 0 || lightning_is_last(base_name(c->name)))
            continue;
        if (best == NULL || c->id > best->id)
            best = c;
    }
    return best;
}

static bool lightning_match(const struct detect *d, const char *path, bool is_dir, struct match *m)
{
    const char *b = base_name(path);
    if (is_dir || b[0] == '.' || !ends_with(b, ".ckpt") || strlen(b) == strlen(".ckpt") ||
        has_hidden(path, (size_t)(b - path)))
        return false;
    m->dir_len = b == path ? 0 : (size_t)(b - path) - 1;
    m->rel_off = (size_t)(b - path);
    m->member = true;
    m->name_len = strlen(path);
    if (lightning_is_last(b)) {
        const struct detect_cand *save = lightning_open_save(d, path, m->dir_len);
        if (save != NULL) {
            m->name = save->name;
            m->name_len = strlen(save->name);
        }
        return true;
    }
    return lightning_is_save(d, b);
}

/* A save folder had a last.ckpt before this save: save_last is on, its new one is coming. */
static bool lightning_expects_last(const struct detect *d, const struct detect_cand *c)
{
    char p[PATH_MAX_LEN + 16];
    if (c->marked || !c->live || lightning_is_last(base_name(c->name)))
        return false;
    for (size_t i = 0; i < c->n_members; i++)
        if (lightning_is_last(c->members[i]->path + c->members[i]->rel_off))
            return false;
    if (c->dir_len == 0)
        snprintf(p, sizeof(p), LIGHTNING_LAST ".ckpt");
    else
        snprintf(p, sizeof(p), "%s/" LIGHTNING_LAST ".ckpt", c->dir);
    return rec_get(d, p) != NULL;
}

static bool lightning_complete(const struct detect *d, const struct detect_cand *c, char *why,
                               size_t n)
{
    bool last = false;
    for (size_t i = 0; i < c->n_members; i++) {
        const struct drec *r = c->members[i];
        if (!r->closed || r->open)
            return false;
        last |= lightning_is_last(r->path + r->rel_off);
    }
    if (c->n_members == 0)
        return false;
    if (lightning_is_last(base_name(c->name)))
        say(why, n, "%s closed", base_name(c->name));
    else if (last)
        say(why, n, "%s and last.ckpt written", base_name(c->name));
    else
        say(why, n, "%s closed%s", base_name(c->name), c->marked ? ", no last.ckpt came" : "");
    return !lightning_expects_last(d, c);
}

/* Order is priority: the first match wins, and a folder first recognised by a weaker layout
 * (model-dir from its config.json) is upgraded when a stronger one's file shows up. */
static const struct layout layouts[] = {
    {"custom", true, false, true, custom_match, custom_complete},
    {"nemo", true, false, true, nemo_match, nemo_complete},
    {"transformers-trainer", true, false, true, trainer_match, trainer_complete},
    {"deepspeed", true, false, true, ds_match, ds_complete},
    {"accelerate", true, false, true, acc_match, acc_complete},
    {"orbax", true, false, true, orbax_match, orbax_complete},
    {"torchsnapshot", true, false, true, tsnap_match, tsnap_complete},
    {"torch-dcp", true, false, true, dcp_match, dcp_complete},
    {"model-dir", true, true, true, model_dir_match, model_dir_complete},
    {"model-root", false, true, false, root_match, root_complete},
    {"lightning", false, true, true, lightning_match, lightning_complete},
    {"single-file", false, true, true, file_match, file_complete},
};

#define N_LAYOUTS (sizeof(layouts) / sizeof(layouts[0]))

static bool classify(const struct detect *d, const char *path, bool is_dir, struct match *m)
{
    for (size_t i = 0; i < N_LAYOUTS; i++) {
        /* A forced layout replaces auto-detection; custom rules always apply. */
        if (d->force_layout != NULL && i > 0 && strcmp(layouts[i].name, d->force_layout) != 0)
            continue;
        memset(m, 0, sizeof(*m));
        if (layouts[i].match(d, path, is_dir, m)) {
            m->layout = &layouts[i];
            return true;
        }
    }
    return false;
}

bool detect_layout_known(const char *name)
{
    for (size_t i = 1; i < N_LAYOUTS; i++) {
        if (strcmp(layouts[i].name, name) == 0)
            return true;
    }
    return false;
}

/* --- candidates --------------------------------------------------------------------------- */

static int64_t parse_step(const struct detect_cand *c)
{
    const char *b = base_name(c->name);
    if (strcmp(c->layout->name, "transformers-trainer") == 0)
        return strtoll(b + strlen("checkpoint-"), NULL, 10);
    /* accelerate numbers its saves, not its steps */
    if (c->name[0] == '\0' || strcmp(c->layout->name, "accelerate") == 0)
        return -1;
    if (lightning_is_cand(c)) {
        /* "epoch=3.ckpt" names no step; a lone last.ckpt neither */
        const char *s = strstr(b, "step=");
        return s != NULL && s[5] >= '0' && s[5] <= '9' ? strtoll(s + 5, NULL, 10) : -1;
    }
    const char *s = strstr(b, "step");
    if (s != NULL) {
        s += 4;
        s += strspn(s, "=_-");
        if (*s >= '0' && *s <= '9')
            return strtoll(s, NULL, 10);
    }
    /* Exactly one number in the name: that is the step (or epoch); shard names have two. */
    int64_t found = -1;
    int runs = 0;
    for (const char *p = b; *p != '\0' && (c->layout->folder || *p != '.');) {
        if (*p >= '0' && *p <= '9') {
            runs++;
            found = strtoll(p, NULL, 10);
            p += strspn(p, "0123456789");
        } else {
            p++;
        }
    }
    return runs == 1 ? found : -1;
}

static void cand_free(struct detect_cand *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n_files; i++)
        free(c->files[i]);
    free(c->files);
    free(c->members);
    free(c->dir);
    free(c->name);
    free(c);
}

static int cand_new(struct detect *d, const char *path, const struct match *m, int64_t now,
                    struct detect_cand **ret)
{
    if (d->n_cands >= DETECT_MAX_CANDS)
        return -ENOSPC;
    if (d->n_cands == d->cap_cands) {
        size_t cap = d->cap_cands == 0 ? 16 : d->cap_cands * 2;
        struct detect_cand **a = realloc(d->cands, cap * sizeof(*a));
        if (a == NULL)
            return -ENOMEM;
        d->cands = a;
        d->cap_cands = cap;
    }
    struct detect_cand *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->name = m->name != NULL ? strdup(m->name) : strndup(path, m->name_len);
    if (c->name == NULL) {
        free(c);
        return -ENOMEM;
    }
    c->dir = strndup(path, m->dir_len);
    if (c->dir == NULL) {
        free(c->name);
        free(c);
        return -ENOMEM;
    }
    c->dir_len = m->dir_len;
    c->layout = m->layout;
    c->last_ms = now;
    c->rule_idx = m->rule_idx;
    c->quiet_ms = d->cfg.quiet_ms;
    if (strcmp(c->layout->name, "custom") == 0 && d->rules[c->rule_idx].quiet_ms > 0)
        c->quiet_ms = d->rules[c->rule_idx].quiet_ms;
    c->id = ++d->next_id;
    c->step = parse_step(c);
    if (smap_put(&d->names, c->name, c) < 0) {
        cand_free(c);
        return -ENOMEM;
    }
    d->cands[d->n_cands++] = c;
    *ret = c;
    return 0;
}

static int members_add(struct detect_cand *c, struct drec *r)
{
    if (c->n_members == c->cap_members) {
        size_t cap = c->cap_members == 0 ? 16 : c->cap_members * 2;
        struct drec **a = realloc(c->members, cap * sizeof(*a));
        if (a == NULL)
            return -ENOMEM;
        c->members = a;
        c->cap_members = cap;
    }
    c->members[c->n_members++] = r;
    return 0;
}

static void members_del(struct detect_cand *c, struct drec *r)
{
    for (size_t i = 0; i < c->n_members; i++) {
        if (c->members[i] == r) {
            c->members[i] = c->members[--c->n_members];
            return;
        }
    }
}

static void rec_detach(struct drec *r)
{
    struct detect_cand *c = r->cand;
    if (c == NULL)
        return;
    if (r->open)
        c->n_open--;
    if (r->member)
        members_del(c, r);
    r->cand = NULL;
    r->member = false;
}

/* Unlinks a candidate from everything and frees it; its records stay, unattributed. */
static void cand_destroy(struct detect *d, struct detect_cand *c)
{
    for (size_t i = 0; i < d->files.cap; i++) {
        struct smap_ent *e = &d->files.e[i];
        if (e->key != NULL && e->key != &tomb && ((struct drec *)e->val)->cand == c)
            rec_detach(e->val);
    }
    if (smap_get(&d->names, c->name) == c)
        smap_del(&d->names, c->name);
    for (size_t i = 0; i < d->n_cands; i++) {
        if (d->cands[i] == c) {
            memmove(&d->cands[i], &d->cands[i + 1], (d->n_cands - i - 1) * sizeof(*d->cands));
            d->n_cands--;
            break;
        }
    }
    cand_free(c);
}

static void rec_free(struct detect *d, struct drec *r)
{
    rec_detach(r);
    smap_del(&d->files, r->path);
    free(r->path);
    free(r);
}

static bool cand_ready(const struct detect *d, const struct detect_cand *c)
{
    return !c->sealed && !c->doubtful && c->n_open == 0 && c->layout->complete(d, c, NULL, 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void cand_seal(struct detect *d, struct detect_cand *c, const char *how)
{
    c->files = calloc(c->n_members > 0 ? c->n_members : 1, sizeof(*c->files));
    if (c->files != NULL) {
        for (size_t i = 0; i < c->n_members; i++) {
            c->files[c->n_files] = strdup(c->members[i]->path + c->members[i]->rel_off);
            if (c->files[c->n_files] != NULL)
                c->n_files++;
        }
        qsort(c->files, c->n_files, sizeof(*c->files), cmp_str);
    }
    char why[96] = "";
    c->layout->complete(d, c, why, sizeof(why));
    if (c->replaced > 0)
        snprintf(c->rule, sizeof(c->rule), "%s, %s, %u earlier version%s coalesced into the newest",
                 why, how, c->replaced, c->replaced == 1 ? "" : "s");
    else
        snprintf(c->rule, sizeof(c->rule), "%s, %s", why, how);
    c->sealed = true;
    if (d->cbs.sealed != NULL)
        d->cbs.sealed(d->cbs.ctx, c);
}

/* Files of it may have come and gone unseen: it is never sealed (never pushed half). An Orbax
 * temporary folder never seals anyway (its files move to the final name): no news. */
static void cand_doubt(struct detect *d, struct detect_cand *c, const char *why)
{
    if (c->doubtful || c->sealed)
        return;
    c->doubtful = true;
    if (d->cbs.doubtful != NULL && strstr(base_name(c->name), ORBAX_TMP) == NULL)
        d->cbs.doubtful(d->cbs.ctx, c, why);
}

static void cand_drop(struct detect *d, struct detect_cand *c, const char *why)
{
    if (d->cbs.dropped != NULL)
        d->cbs.dropped(d->cbs.ctx, c, why);
    cand_destroy(d, c);
}

/* --- Lightning: a save is over when the next one begins --------------------------------- */

/* Seals a Lightning candidate now if it is complete, no longer waiting for a last.ckpt. */
static void lightning_seal_now(struct detect *d, struct detect_cand *c, const char *how)
{
    if (c->sealed || !lightning_is_cand(c))
        return;
    c->marked = true;
    if (cand_ready(d, c))
        cand_seal(d, c, how);
}

/* Only what events showed in order: a listing shows a later state than the events still
 * queued behind it, so a candidate it found waits out its quiet period instead. */
static bool lightning_seen_live(const struct detect_cand *c)
{
    if (!c->live)
        return false;
    for (size_t i = 0; i < c->n_members; i++)
        if (c->members[i]->scanned)
            return false;
    return true;
}

/* The epoch file of a new save was written (an event, not a listing): the saves before it in
 * its folder are done, whatever the quiet period says, so that the new last.ckpt cannot mix
 * into them. */
static void lightning_next_save(struct detect *d, const char *path)
{
    const struct drec *r = rec_get(d, path);
    const struct detect_cand *save = r != NULL ? r->cand : NULL;
    if (save == NULL || !lightning_is_cand(save) || save->sealed || strcmp(save->name, path) != 0 ||
        lightning_is_last(base_name(path)))
        return;
    for (size_t i = 0; i < d->n_cands; i++) {
        struct detect_cand *c = d->cands[i];
        if (c != save && c->id < save->id && lightning_is_cand(c) && !c->sealed &&
            c->dir_len == save->dir_len && strcmp(c->dir, save->dir) == 0 && lightning_seen_live(c))
            lightning_seal_now(d, c, "sealed early: the next save began");
    }
}

/* A complete file of an unsealed Lightning candidate is about to be replaced (renamed over, or
 * truncated by a copy): each save's version is pushed, not coalesced into the newer one. */
static void lightning_replaced(struct detect *d, const struct drec *t)
{
    if (t->cand != NULL && lightning_is_cand(t->cand) && t->member && t->closed && !t->open &&
        lightning_seen_live(t->cand))
        lightning_seal_now(d, t->cand, "sealed early: a newer version replaced it");
}

/* When a save that waits for its last.ckpt gives up (-1: not waiting). */
static int64_t lightning_wait_deadline(const struct detect *d, const struct detect_cand *c)
{
    if (!lightning_is_cand(c) || c->sealed || c->doubtful || c->n_open > 0 ||
        !lightning_expects_last(d, c))
        return -1;
    return c->last_ms + LIGHTNING_LAST_WAIT_MS;
}

/* --- events ------------------------------------------------------------------------------- */

static int rec_new(struct detect *d, const char *path, struct drec **ret)
{
    if (d->files.n >= DETECT_MAX_FILES)
        return -ENOSPC;
    struct drec *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->path = strdup(path);
    if (r->path == NULL || smap_put(&d->files, r->path, r) < 0) {
        free(r->path);
        free(r);
        return -ENOMEM;
    }
    *ret = r;
    return 0;
}

static void rec_set_open(struct drec *r, bool open)
{
    if (r->open == open)
        return;
    r->open = open;
    if (r->cand != NULL) {
        if (open)
            r->cand->n_open++;
        else
            r->cand->n_open--;
    }
}

static void report_late(struct detect *d, struct detect_cand *c, struct drec *r)
{
    if (r->late || has_hidden(r->path, strlen(r->path)))
        return;
    r->late = true;
    if (d->cbs.late_write != NULL)
        d->cbs.late_write(d->cbs.ctx, c, r->path + (c->dir_len == 0 ? 0 : c->dir_len + 1));
}

static int collect(struct detect *d, const char *prefix, struct drec ***ret, size_t *ret_n);

/* A new folder candidate takes the files already known under it that belong to it (closed
 * before its marker said what it is), except skip, the one being attached now. */
static int cand_adopt(struct detect *d, struct detect_cand *c, const char *skip)
{
    struct drec **recs;
    size_t n;
    int rc = collect(d, c->name, &recs, &n);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct drec *r = recs[i];
        struct match m;
        if (r->cand != NULL || strcmp(r->path, skip) == 0 || !classify(d, r->path, false, &m) ||
            m.layout != c->layout || m.name_len != strlen(c->name))
            continue;
        if (m.member && (rc = members_add(c, r)) < 0)
            break;
        r->cand = c;
        r->rel_off = m.rel_off;
        r->member = m.member;
        if (r->open)
            c->n_open++;
        if (m.member && d->cbs.file_added != NULL)
            d->cbs.file_added(d->cbs.ctx, c, r->path + r->rel_off);
    }
    free(recs);
    return rc;
}

/* Finds (or makes) the live candidate for a matched path. A sealed single file written again
 * is a new checkpoint under the same name: the sealed one is forgotten. */
static int cand_for(struct detect *d, const char *path, const struct match *m, int64_t now,
                    struct detect_cand **ret)
{
    char name[PATH_MAX_LEN + 1];
    snprintf(name, sizeof(name), "%.*s", (int)m->name_len, m->name != NULL ? m->name : path);
    struct detect_cand *c = smap_get(&d->names, name);
    if (c != NULL && !c->sealed && c->layout != m->layout && c->layout->folder &&
        m->layout->folder && m->layout < c->layout) {
        /* e.g. a folder seen as model-dir by its config.json gets its first .distcp */
        c->layout = m->layout;
        c->step = parse_step(c);
    }
    if (c != NULL && c->sealed && c->layout->reopen_after_seal) {
        struct drec **keep = NULL;
        size_t n_keep = 0;
        int rc;
        if ((c->layout->folder || strcmp(c->layout->name, "model-root") == 0) && c->n_members > 0) {
            /* A folder saved again (save_pretrained into the same directory), or the output
             * root getting its results and card after the final model: the new version holds
             * the files still there, written again or not. */
            keep = malloc(c->n_members * sizeof(*keep));
            if (keep == NULL)
                return -ENOMEM;
            memcpy(keep, c->members, c->n_members * sizeof(*keep));
            n_keep = c->n_members;
        }
        cand_destroy(d, c);
        rc = cand_new(d, path, m, now, &c);
        for (size_t i = 0; rc == 0 && i < n_keep; i++) {
            rc = members_add(c, keep[i]);
            if (rc < 0)
                break;
            keep[i]->cand = c;
            keep[i]->member = true;
            if (keep[i]->open)
                c->n_open++;
            if (d->cbs.file_added != NULL)
                d->cbs.file_added(d->cbs.ctx, c, keep[i]->path + keep[i]->rel_off);
        }
        free(keep);
        if (rc < 0)
            return rc;
        *ret = c;
        return 0;
    }
    if (c == NULL) {
        int rc = cand_new(d, path, m, now, ret);
        if (rc == 0 && (*ret)->layout->folder)
            rc = cand_adopt(d, *ret, path);
        return rc;
    }
    *ret = c;
    return 0;
}

/* Attributes a record to the candidate its path belongs to; content says the event wrote it
 * (as opposed to a rename carrying the state). Reports file_added for new members. */
static int rec_attach(struct detect *d, struct drec *r, int64_t now, bool *ret_added)
{
    struct match m;
    struct detect_cand *c;
    int rc;

    *ret_added = false;
    if (!classify(d, r->path, false, &m))
        return 0;
    rc = cand_for(d, r->path, &m, now, &c);
    if (rc < 0)
        return rc;
    if (c->sealed) {
        report_late(d, c, r);
        return 0;
    }
    if (m.member) {
        rc = members_add(c, r);
        if (rc < 0)
            return rc;
    }
    r->cand = c;
    r->rel_off = m.rel_off;
    r->member = m.member;
    if (r->open)
        c->n_open++;
    c->last_ms = now;
    *ret_added = m.member;
    return 0;
}

static const char *rec_rel(const struct drec *r)
{
    return r->path + r->rel_off;
}

/* A member whose writer is done: its bytes are probably final, though only the seal says so. */
static void report_ready(struct detect *d, const struct drec *r)
{
    if (r->cand != NULL && !r->cand->sealed && r->member && !r->open && d->cbs.file_ready != NULL)
        d->cbs.file_ready(d->cbs.ctx, r->cand, rec_rel(r));
}

/* A candidate that became complete waits out its quiet period: every member is reported ready
 * once, including files only a directory listing found (a folder renamed in). */
static void report_settled(struct detect *d)
{
    if (d->cbs.file_ready == NULL)
        return;
    for (size_t i = 0; i < d->n_cands; i++) {
        struct detect_cand *c = d->cands[i];
        if (c->settled || !cand_ready(d, c))
            continue;
        c->settled = true;
        if (!c->live)
            continue; /* found complete by the listing at start: likely pushed long ago */
        for (size_t k = 0; k < c->n_members; k++)
            d->cbs.file_ready(d->cbs.ctx, c, rec_rel(c->members[k]));
    }
}

/* A folder being saved is listed when its watch is added, after its first files may already be
 * written and closed: their CLOSE_WRITE was never seen. One that gets no write this long after
 * the listing is taken as closed for early hashing (the seal still waits for the quiet period,
 * and a file written after all is hashed again). */
#define SCAN_SETTLE_MS 200

static void report_scan_settled(struct detect *d, struct detect_cand *c, int64_t now)
{
    if (c->scan_settle_ms == 0 || now < c->scan_settle_ms)
        return;
    c->scan_settle_ms = 0;
    if (c->sealed || c->settled)
        return;
    for (size_t k = 0; k < c->n_members; k++) {
        struct drec *r = c->members[k];
        if (!r->scanned || r->scan_told || r->open)
            continue;
        if (now < r->scanned_ms + SCAN_SETTLE_MS) {
            if (c->scan_settle_ms == 0 || r->scanned_ms + SCAN_SETTLE_MS < c->scan_settle_ms)
                c->scan_settle_ms = r->scanned_ms + SCAN_SETTLE_MS;
            continue;
        }
        r->scan_told = true;
        report_ready(d, r);
    }
}

static int on_write(struct detect *d, const char *path, bool close, bool scan, int64_t now)
{
    struct drec *r = rec_get(d, path);
    bool added;
    int rc;

    if (r != NULL && scan)
        return 0; /* known: a scan cannot tell more than the events did */
    if (r != NULL && r->cand != NULL && r->cand->sealed) {
        if (r->cand->layout->reopen_after_seal) {
            rec_detach(r);
        } else {
            report_late(d, r->cand, r);
            rec_set_open(r, !close);
            return 0;
        }
    }
    if (r == NULL || r->cand == NULL) {
        if (r == NULL) {
            rc = rec_new(d, path, &r);
            if (rc < 0)
                return rc;
        }
        r->open = !close && !scan;
        r->closed = close || scan;
        r->scanned = scan;
        r->scanned_ms = now;
        rc = rec_attach(d, r, now, &added);
        if (rc < 0) {
            rec_free(d, r);
            return rc;
        }
        if (added && d->cbs.file_added != NULL)
            d->cbs.file_added(d->cbs.ctx, r->cand, rec_rel(r));
    } else {
        rec_set_open(r, !close);
        r->scanned = false;
        if (close)
            r->closed = true;
        if (!r->cand->sealed)
            r->cand->last_ms = now;
    }
    if (!scan && r->cand != NULL)
        r->cand->live = true;
    if (scan && r->cand != NULL && r->cand->live && r->member && r->cand->scan_settle_ms == 0)
        r->cand->scan_settle_ms = now + SCAN_SETTLE_MS;
    if (close)
        report_ready(d, r);
    if (close && strcmp(base_name(path), "latest") == 0)
        ds_latest_written(d, path, now);
    /* Closed files outside every candidate are kept (bounded by DETECT_MAX_FILES): a layout
     * whose marker comes last (torchsnapshot, custom rules) adopts them when it appears. */
    if (close)
        r->wrote_ms = now;
    return 0;
}

/* A Lightning file made: a last.ckpt that is a symlink (save_last="link") is never written nor
 * closed, so it counts as closed until a write shows up (a copy writes at once; the quiet period
 * covers the gap). A complete version made again in place is sealed first. */
static int lightning_on_create(struct detect *d, const char *path, int64_t now)
{
    struct drec *r = rec_get(d, path);
    int rc;

    if (r != NULL)
        lightning_replaced(d, r);
    rc = on_write(d, path, false, false, now);
    r = rec_get(d, path);
    if (rc == 0 && r != NULL && r->cand != NULL && lightning_is_cand(r->cand) && !r->cand->sealed &&
        lightning_is_last(base_name(path))) {
        rec_set_open(r, false);
        r->closed = true;
        r->wrote_ms = now;
    }
    return rc;
}

/* A delete inside a marked, closed checkpoint means its writer is done with it (rotation):
 * seal now, the pins hold the bytes, rather than lose it to the quiet period. */
/* A delete read this soon after the listing that found a file was most likely queued before
 * that listing: the rotation was under way when the folder was first seen. */
#define SCAN_DELETE_RACE_MS 50

static bool seal_early(struct detect *d, struct detect_cand *c, int64_t now)
{
    if (c->sealed || !c->layout->seal_on_delete)
        return false;
    if (c->listed && now - c->listed_ms < SCAN_DELETE_RACE_MS)
        cand_doubt(d, c,
                   "a folder in it was listed just before this removal: its files may "
                   "have been deleted before the listing");
    for (size_t i = 0; i < c->n_members && !c->doubtful; i++) {
        /* A scan lists what is left: files deleted before it left no trace, so whether it is
         * whole is unknown. Found complete and deleted later (rotation after a restart): the
         * listing had it all. */
        const struct drec *m = c->members[i];
        if (m->scanned && now - m->scanned_ms < SCAN_DELETE_RACE_MS)
            cand_doubt(d, c,
                       "first listed just before this removal: files deleted before the "
                       "listing left no trace");
    }
    if (!cand_ready(d, c))
        return false;
    cand_seal(d, c, "sealed early: deleted (rotation) before the quiet period ended");
    return true;
}

static void on_remove(struct detect *d, struct drec *r, int64_t now)
{
    struct detect_cand *c = r->cand;
    if (c == NULL || c->sealed) {
        rec_free(d, r);
        if (c != NULL && c->layout->reopen_after_seal && c->n_members == 0)
            cand_destroy(d, c);
        return;
    }
    /* Only a member's removal is rotation: a writer deletes its own temporaries, and a rename
     * read as moved out, then in (inotify(7) does not promise the pair), removes the old name. */
    if (r->member && seal_early(d, c, now)) {
        rec_free(d, r);
        return;
    }
    if (r->member && d->cbs.file_removed != NULL)
        d->cbs.file_removed(d->cbs.ctx, c, rec_rel(r));
    rec_free(d, r);
    c->last_ms = now;
    if (!c->layout->folder && c->n_members == 0)
        cand_drop(d, c, "its files were deleted before it was sealed");
}

/* Records under prefix (all when prefix is ""), collected first: callbacks change the map. */
static int collect(struct detect *d, const char *prefix, struct drec ***ret, size_t *ret_n)
{
    struct drec **a = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < d->files.cap; i++) {
        struct smap_ent *e = &d->files.e[i];
        if (e->key == NULL || e->key == &tomb || !under(e->key, prefix))
            continue;
        if (n == cap) {
            cap = cap == 0 ? 16 : cap * 2;
            struct drec **b = realloc(a, cap * sizeof(*b));
            if (b == NULL) {
                free(a);
                return -ENOMEM;
            }
            a = b;
        }
        a[n++] = e->val;
    }
    *ret = a;
    *ret_n = n;
    return 0;
}

static int on_dir_gone(struct detect *d, const char *path, int64_t now)
{
    struct drec **recs;
    size_t n;
    int rc;

    /* Folder candidates at or under path: seal if complete, else drop; sealed ones are done. */
    for (size_t i = 0; i < d->n_cands;) {
        struct detect_cand *c = d->cands[i];
        if (c->layout->folder && (strcmp(c->name, path) == 0 || under(c->name, path))) {
            if (!c->sealed && !seal_early(d, c, now))
                cand_drop(d, c,
                          c->doubtful ? "deleted while first seen by a scan: whether it was "
                                        "whole cannot be known"
                                      : "folder deleted before it was sealed");
            else
                cand_destroy(d, c);
            continue;
        }
        i++;
    }
    rc = collect(d, path, &recs, &n);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        /* A previous removal may have dropped a candidate, but records stay valid. */
        on_remove(d, recs[i], now);
    }
    free(recs);
    return 0;
}

/* The watch lists a folder inside a checkpoint as soon as it is seen (its watch is added
 * first): a file made and removed in it before that left no trace. (The checkpoint's own
 * folder needs no such note: what its listing found is marked scanned, and what came after
 * was seen written.) */
static void note_listed(struct detect_cand *c, int64_t now)
{
    if (c != NULL && !c->sealed) {
        c->listed = true;
        c->listed_ms = now;
    }
}

/* live: an event showed it (created or renamed in now), not a directory listing. */
static int on_dir_seen(struct detect *d, const char *path, bool live, int64_t now)
{
    struct match m;
    struct detect_cand *c;
    if (!classify(d, path, true, &m))
        return 0;
    if (m.name_len < strlen(path)) {
        note_listed(cand_named(d, path, m.name_len, m.layout->name), now);
        return 0;
    }
    if (!m.layout->folder || m.name_len != strlen(path))
        return 0;
    int rc = cand_for(d, path, &m, now, &c);
    if (rc < 0)
        return rc;
    if (!c->sealed)
        c->last_ms = now;
    if (live)
        c->live = true;
    return 0;
}

/* from may be NULL (renamed in from outside): no writer is known, the file counts as closed. */
static int on_rename(struct detect *d, const char *from, const char *to, int64_t now)
{
    struct drec *r = from != NULL ? rec_get(d, from) : NULL;
    struct drec *t = rec_get(d, to);
    struct detect_cand *oc = NULL;
    char oldrel[PATH_MAX_LEN + 1] = "";
    bool old_member = false, added;
    int rc;

    if (t != NULL && t != r)
        lightning_replaced(d, t);
    if (t != NULL && t != r) {
        /* Replaced by the rename: its old inode is gone from this name. */
        struct match m;
        struct detect_cand *tc = t->cand;
        /* A newer version renamed over a complete one not sealed yet (last.ckpt, os.replace
         * of latest.pt): coalesced, only the newest is pushed and the seal's rule says so. */
        bool same = tc != NULL && !tc->sealed && (r == NULL || r->cand == NULL || r->cand == tc) &&
                    classify(d, to, false, &m) && m.member;
        if (same) {
            tc->replaced++; /* saves outran the quiet period: only the newest is pushed */
            rec_free(d, t);
        } else
            on_remove(d, t, now);
    }
    if (r == NULL) {
        rc = rec_new(d, to, &r);
        if (rc < 0)
            return rc;
        r->closed = true;
    } else {
        oc = r->cand;
        if (oc != NULL && r->member) {
            old_member = true;
            snprintf(oldrel, sizeof(oldrel), "%s", rec_rel(r));
        }
        char *np = strdup(to);
        if (np == NULL)
            return -ENOMEM;
        rec_detach(r);
        smap_del(&d->files, r->path);
        free(r->path);
        r->path = np;
        if (smap_put(&d->files, r->path, r) < 0) {
            free(r->path);
            free(r);
            return -ENOMEM;
        }
        if (!r->open)
            r->closed = true;
    }
    r->late = false;
    r->scanned = false;
    rc = rec_attach(d, r, now, &added);
    if (rc < 0) {
        rec_free(d, r);
        return rc;
    }
    if (oc != NULL && oc == r->cand && old_member && added) {
        if (d->cbs.file_renamed != NULL)
            d->cbs.file_renamed(d->cbs.ctx, oc, oldrel, rec_rel(r));
    } else {
        if (oc != NULL && !oc->sealed) {
            if (old_member && d->cbs.file_removed != NULL)
                d->cbs.file_removed(d->cbs.ctx, oc, oldrel);
            oc->last_ms = now;
        }
        if (added && d->cbs.file_added != NULL)
            d->cbs.file_added(d->cbs.ctx, r->cand, rec_rel(r));
        if (oc != NULL && oc != r->cand && !oc->layout->folder && oc->n_members == 0) {
            if (oc->sealed)
                cand_destroy(d, oc);
            else
                cand_drop(d, oc, "its file was renamed away before it was sealed");
        }
    }
    r->wrote_ms = now;
    if (r->cand != NULL)
        r->cand->live = true;
    report_ready(d, r);
    return 0;
}

static int on_dir_rename(struct detect *d, const char *from, const char *to, int64_t now)
{
    struct drec **recs;
    size_t n, fl = strlen(from);
    int rc;
    if (orbax_tmp_pred(from, base_name(from), strlen(base_name(from))) &&
        strstr(to, ORBAX_TMP) == NULL && smap_get(&d->names, to) == NULL) {
        /* Orbax finalised a save: the renamed folder is the complete checkpoint. */
        struct match m = {0};
        struct detect_cand *c;
        for (size_t i = 0; i < N_LAYOUTS; i++) {
            if (strcmp(layouts[i].name, "orbax") == 0)
                m.layout = &layouts[i];
        }
        match_prefix(&m, to, strlen(to), true);
        rc = cand_new(d, to, &m, now, &c);
        if (rc < 0)
            return rc;
        c->marked = true;
        c->live = true;
        /* Files a scan found under the final name before this event was read. */
        rc = cand_adopt(d, c, "");
        if (rc < 0)
            return rc;
    }
    if (orbax_tmp_pred(from, base_name(from), strlen(base_name(from)))) {
        /* A scan found it under its final name before this rename event was read. */
        struct detect_cand *c = cand_named(d, to, strlen(to), "orbax");
        if (c != NULL && !c->sealed)
            c->marked = true;
    }
    rc = collect(d, from, &recs, &n);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char np[PATH_MAX_LEN + 1], op[PATH_MAX_LEN + 1];
        if ((size_t)snprintf(np, sizeof(np), "%s%s", to, recs[i]->path + fl) >= sizeof(np))
            continue;
        snprintf(op, sizeof(op), "%s", recs[i]->path);
        rc = on_rename(d, op, np, now);
    }
    free(recs);
    if (rc < 0)
        return rc;
    /* Folder candidates that lived at the old place are gone from there. */
    for (size_t i = 0; i < d->n_cands;) {
        struct detect_cand *c = d->cands[i];
        if (c->layout->folder && (strcmp(c->name, from) == 0 || under(c->name, from))) {
            if (c->sealed)
                cand_destroy(d, c);
            else if (strcmp(c->layout->name, "orbax") == 0)
                cand_drop(d, c, "temporary folder renamed into place, its files moved along");
            else
                cand_drop(d, c, "folder renamed before it was sealed");
            continue;
        }
        i++;
    }
    return on_dir_seen(d, to, true, now);
}

static void on_overflow(struct detect *d, int64_t now)
{
    struct drec **recs;
    size_t n;
    /* Closes were lost: forget open states and restart quiet periods; the rescan that follows
     * refills what is there, and writers still at work show up again with MODIFY. */
    if (collect(d, "", &recs, &n) < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        rec_set_open(recs[i], false);
        if (recs[i]->cand == NULL)
            rec_free(d, recs[i]);
    }
    free(recs);
    for (size_t i = 0; i < d->n_cands; i++)
        d->cands[i]->last_ms = now;
}

/* --- checkpoints the journal owns (detect_own) -------------------------------------------- */

/* The owned entry that is path or one of its parent folders, or NULL. */
static struct smap_ent *owned_find(const struct detect *d, const char *path)
{
    char p[PATH_MAX_LEN + 1];
    size_t len = strlen(path);
    if (d->owned.n == 0 || len > PATH_MAX_LEN)
        return NULL;
    memcpy(p, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        p[i] = '\0';
        struct smap_ent *e = smap_find(&d->owned, p);
        p[i] = path[i];
        if (e != NULL)
            return e;
    }
    return NULL;
}

static void owned_drop(struct detect *d, struct smap_ent *e)
{
    char *key = (char *)e->key;
    smap_del(&d->owned, key);
    free(key);
}

/* A listing of an owned checkpoint's file is skipped. A write to one (an event) is a new save
 * under that name: the journal no longer speaks for it. */
static bool owned_event(struct detect *d, const struct watch_event *ev, const char *path)
{
    struct smap_ent *e;
    if (d->owned.n == 0)
        return false;
    if (ev->kind == WATCH_SCANNED)
        return owned_find(d, path) != NULL;
    if (ev->kind != WATCH_CREATE && ev->kind != WATCH_MODIFY && ev->kind != WATCH_CLOSE_WRITE &&
        ev->kind != WATCH_MOVED_IN && ev->kind != WATCH_RENAMED)
        return false;
    while ((e = owned_find(d, path)) != NULL)
        owned_drop(d, e);
    return false;
}

static int feed_one(struct detect *d, const struct watch_event *ev, int64_t now_ms)
{
    const char *path = ev->path != NULL ? ev->path : "";

    if (ev->kind == WATCH_OVERFLOW) {
        on_overflow(d, now_ms);
        return 0;
    }
    if (ev->kind == WATCH_ERROR)
        return 0;
    if (!path_valid(path) || (ev->kind == WATCH_RENAMED && !path_valid(ev->old_path)))
        return strlen(path) > PATH_MAX_LEN ? -ENAMETOOLONG : -EINVAL;
    if (owned_event(d, ev, path))
        return 0;
    /* No detect_tick here: an event read after a deadline may have happened before it (the loop
     * was busy), so it postpones the seal rather than arrive as a write after it. */

    if (ev->is_dir && ev->kind == WATCH_UNLISTED) {
        /* Files of it may have come and gone unseen: a candidate owning it cannot be known
         * whole. (A temporary folder renamed away lands here too; its candidate never seals.) */
        struct match m;
        struct detect_cand *c;
        if (classify(d, path, true, &m) && m.name_len < strlen(path) &&
            (c = cand_named(d, path, m.name_len, m.layout->name)) != NULL)
            cand_doubt(d, c, "a folder in it was gone before it could be listed");
        return 0;
    }
    if (ev->is_dir) {
        switch (ev->kind) {
        case WATCH_CREATE:
        case WATCH_SCANNED:
        case WATCH_MOVED_IN:
            return on_dir_seen(d, path, ev->kind != WATCH_SCANNED, now_ms);
        case WATCH_DELETE:
        case WATCH_MOVED_OUT:
            return on_dir_gone(d, path, now_ms);
        case WATCH_RENAMED:
            return on_dir_rename(d, ev->old_path, path, now_ms);
        default:
            return 0;
        }
    }
    if (path[0] == '\0')
        return -EINVAL;
    int rc;
    switch (ev->kind) {
    case WATCH_CREATE:
        if ((rc = lightning_on_create(d, path, now_ms)) == 0)
            lightning_next_save(d, path);
        return rc;
    case WATCH_MODIFY:
        return on_write(d, path, false, false, now_ms);
    case WATCH_CLOSE_WRITE:
        if ((rc = on_write(d, path, true, false, now_ms)) == 0)
            lightning_next_save(d, path);
        return rc;
    case WATCH_SCANNED:
        return on_write(d, path, false, true, now_ms);
    case WATCH_ATTRIB: {
        /* Unknown: nothing new (a scan found what exists), and after a delete the name is
         * gone, so it must not come back as a file. */
        struct drec *r = rec_get(d, path);
        if (r == NULL)
            return 0;
        if (r->cand != NULL && !r->cand->sealed)
            r->cand->last_ms = now_ms;
        return 0;
    }
    case WATCH_MOVED_IN:
    case WATCH_RENAMED:
        if ((rc = on_rename(d, ev->kind == WATCH_RENAMED ? ev->old_path : NULL, path, now_ms)) == 0)
            lightning_next_save(d, path);
        return rc;
    case WATCH_DELETE:
    case WATCH_MOVED_OUT: {
        struct drec *r = rec_get(d, path);
        if (r != NULL)
            on_remove(d, r, now_ms);
        if (ends_with(path, NEMO_SUFFIX)) {
            /* The marker's removal is NeMo's "complete": the quiet period starts now. */
            struct detect_cand *c = cand_named(d, path, strlen(path) - strlen(NEMO_SUFFIX), "nemo");
            if (c != NULL && !c->sealed) {
                c->last_ms = now_ms;
                c->marked = true; /* complete once, even if a removal marks it again */
            }
        }
        return 0;
    }
    default:
        return 0;
    }
}

int detect_feed(struct detect *d, const struct watch_event *ev, int64_t now_ms)
{
    int rc = feed_one(d, ev, now_ms);
    report_settled(d);
    return rc;
}

/* --- time --------------------------------------------------------------------------------- */

int64_t detect_next_deadline_ms(const struct detect *d)
{
    int64_t best = -1;
    for (size_t i = 0; i < d->n_cands; i++) {
        const struct detect_cand *c = d->cands[i];
        if (!c->sealed && c->scan_settle_ms > 0 && (best < 0 || c->scan_settle_ms < best))
            best = c->scan_settle_ms;
        int64_t waited = lightning_wait_deadline(d, c);
        if (waited >= 0 && (best < 0 || waited < best))
            best = waited;
        if (!cand_ready(d, c))
            continue;
        int64_t t = c->last_ms + c->quiet_ms;
        if (best < 0 || t < best)
            best = t;
    }
    return best;
}

void detect_tick(struct detect *d, int64_t now_ms)
{
    for (size_t i = 0; i < d->n_cands; i++) {
        struct detect_cand *c = d->cands[i];
        report_scan_settled(d, c, now_ms);
        int64_t waited = lightning_wait_deadline(d, c);
        if (waited >= 0 && now_ms >= waited)
            c->marked = true; /* its last.ckpt did not come: sealed without */
        if (cand_ready(d, c) && now_ms >= c->last_ms + c->quiet_ms) {
            char how[64];
            snprintf(how, sizeof(how), "%lld ms quiet", (long long)c->quiet_ms);
            cand_seal(d, c, how);
        }
    }
}

void detect_seal_all_complete(struct detect *d, int64_t now_ms)
{
    detect_tick(d, now_ms);
    for (size_t i = 0; i < d->n_cands; i++) {
        struct detect_cand *c = d->cands[i];
        if (lightning_is_cand(c))
            c->marked = true; /* a last.ckpt still to come is not waited for */
        if (cand_ready(d, c))
            cand_seal(d, c, "shutdown, quiet period skipped");
    }
}

void detect_forget(struct detect *d, uint64_t id)
{
    for (size_t i = 0; i < d->n_cands; i++) {
        if (d->cands[i]->id == id && d->cands[i]->sealed) {
            cand_destroy(d, d->cands[i]);
            return;
        }
    }
}

size_t detect_pending(const struct detect *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->n_cands; i++)
        n += !d->cands[i]->sealed;
    return n;
}

/* --- lifecycle and accessors -------------------------------------------------------------- */

int detect_new(struct detect **ret, const struct detect_config *cfg,
               const struct detect_callbacks *cbs)
{
    struct detect *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -ENOMEM;
    if (cfg != NULL)
        d->cfg = *cfg;
    if (d->cfg.quiet_ms <= 0)
        d->cfg.quiet_ms = DETECT_DEFAULT_QUIET_MS;
    if (cbs != NULL)
        d->cbs = *cbs;
    if (cfg != NULL && cfg->layout != NULL && cfg->layout[0] != '\0') {
        if (!detect_layout_known(cfg->layout)) {
            free(d);
            return -EINVAL;
        }
        if ((d->force_layout = strdup(cfg->layout)) == NULL)
            goto oom;
    }
    if (cfg != NULL && cfg->n_rules > 0) {
        if (cfg->n_rules > DETECT_MAX_RULES)
            goto inval;
        d->rules = calloc(cfg->n_rules, sizeof(*d->rules));
        if (d->rules == NULL)
            goto oom;
        for (size_t i = 0; i < cfg->n_rules; i++) {
            const struct detect_rule *r = &cfg->rules[i];
            if (r->glob == NULL || r->glob[0] == '\0' || r->quiet_ms < 0 ||
                (r->marker != NULL && !path_valid(r->marker)))
                goto inval;
            d->rules[i].quiet_ms = r->quiet_ms;
            d->rules[i].glob = strdup(r->glob);
            d->rules[i].marker =
                r->marker != NULL && r->marker[0] != '\0' ? strdup(r->marker) : NULL;
            d->n_rules++;
            if (d->rules[i].glob == NULL ||
                (r->marker != NULL && r->marker[0] != '\0' && d->rules[i].marker == NULL))
                goto oom;
        }
    }
    *ret = d;
    return 0;
inval:
    detect_free(d);
    return -EINVAL;
oom:
    detect_free(d);
    return -ENOMEM;
}

void detect_free(struct detect *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->files.cap; i++) {
        struct smap_ent *e = &d->files.e[i];
        if (e->key != NULL && e->key != &tomb) {
            struct drec *r = e->val;
            free(r->path);
            free(r);
        }
    }
    for (size_t i = 0; i < d->n_cands; i++)
        cand_free(d->cands[i]);
    free(d->cands);
    free(d->files.e);
    free(d->names.e);
    for (size_t i = 0; i < d->n_rules; i++) {
        free((char *)d->rules[i].glob);
        free((char *)d->rules[i].marker);
    }
    free(d->rules);
    free(d->force_layout);
    for (size_t i = 0; i < d->owned.cap; i++)
        if (d->owned.e[i].key != NULL && d->owned.e[i].key != &tomb)
            free((char *)d->owned.e[i].key);
    free(d->owned.e);
    free(d);
}

bool detect_layout_is_folder(const char *layout)
{
    for (size_t i = 0; i < N_LAYOUTS; i++)
        if (strcmp(layouts[i].name, layout) == 0)
            return layouts[i].folder;
    return false;
}

int detect_layout_dir(const char *layout, const char *name, char *buf, size_t size)
{
    const char *slash = strrchr(name, '/');
    size_t n;
    if (!detect_layout_known(layout) && strcmp(layout, "custom") != 0)
        return -EINVAL;
    if (detect_layout_is_folder(layout))
        n = strlen(name);
    else
        n = slash != NULL ? (size_t)(slash - name) : 0; /* model-root: "" */
    if (n >= size)
        return -ENAMETOOLONG;
    memcpy(buf, name, n);
    buf[n] = '\0';
    return 0;
}

static int owned_add(struct detect *d, const char *path)
{
    char *key;
    if (!path_valid(path) || smap_get(&d->owned, path) != NULL)
        return 0;
    if ((key = strdup(path)) == NULL)
        return -ENOMEM;
    if (smap_put(&d->owned, key, key) < 0) {
        free(key);
        return -ENOMEM;
    }
    return 0;
}

int detect_own(struct detect *d, const char *name, const char *layout, const char *const *files,
               size_t n)
{
    char dir[PATH_MAX_LEN + 1], path[2 * PATH_MAX_LEN + 2];
    int rc = detect_layout_dir(layout, name, dir, sizeof(dir));
    if (rc < 0)
        return rc;
    if (detect_layout_is_folder(layout) && dir[0] != '\0')
        return owned_add(d, dir); /* everything listed under it */
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (dir[0] == '\0')
            snprintf(path, sizeof(path), "%s", files[i]);
        else
            snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        rc = owned_add(d, path);
    }
    return rc;
}

const char *detect_owner_name(const struct detect *d, const char *path)
{
    const struct drec *r = rec_get(d, path);
    return r != NULL && r->cand != NULL && !r->cand->layout->folder ? r->cand->name : NULL;
}

uint64_t detect_cand_id(const struct detect_cand *c)
{
    return c->id;
}

const char *detect_cand_name(const struct detect_cand *c)
{
    return c->name;
}

const char *detect_cand_dir(const struct detect_cand *c)
{
    return c->dir;
}

const char *detect_cand_layout(const struct detect_cand *c)
{
    return c->layout->name;
}

const char *detect_cand_rule(const struct detect_cand *c)
{
    return c->rule;
}

int64_t detect_cand_step(const struct detect_cand *c)
{
    return c->step;
}

bool detect_cand_sealed(const struct detect_cand *c)
{
    return c->sealed;
}

size_t detect_cand_n_files(const struct detect_cand *c)
{
    return c->n_files;
}

const char *detect_cand_file(const struct detect_cand *c, size_t i)
{
    return i < c->n_files ? c->files[i] : NULL;
}

int detect_cand_source(const struct detect_cand *c, const char *relpath, char *buf, size_t size)
{
    int n;
    if (c->dir_len == 0)
        n = snprintf(buf, size, "%s", relpath);
    else
        n = snprintf(buf, size, "%s/%s", c->dir, relpath);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}
