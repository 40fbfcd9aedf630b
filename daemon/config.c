/* config.c - flags, environment, configuration file and token discovery for ckptpushd.
 *
 * Every setting is one row of `keys`: its JSON key, its flag, its CKPTPUSH_<KEY> variable and the
 * function that checks and stores a value. Sources are applied file, environment, flags, so a
 * later one overrides; every problem of every source is collected before returning. Main thread,
 * before the loop starts.
 */
#include "config.h"

#include "coord_proto.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coord_proto.h"
#include "detect.h"
#include "hub.h"
#include "ipc_proto.h"

#define DEFAULT_ENDPOINT "https://huggingface.co"
#define TOKEN_MAX 4096
#define WHY_MAX 320

static void add_problem(struct config *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Collects every problem so that the user fixes them all in one go. */
static void add_problem(struct config *cfg, const char *fmt, ...)
{
    size_t used = strlen(cfg->problems);
    va_list ap;

    if (used > 0 && used + 1 < sizeof(cfg->problems))
        cfg->problems[used++] = '\n';
    cfg->problems[used] = '\0';
    va_start(ap, fmt);
    vsnprintf(cfg->problems + used, sizeof(cfg->problems) - used, fmt, ap);
    va_end(ap);
}

static void set_code(int *code, int value)
{
    if (*code == 0)
        *code = value;
}

void config_print_usage(void)
{
    fputs("usage: ckptpushd --watch DIR --repo NAMESPACE/NAME [options] [run -- CMD ARGS...]\n"
          "       ckptpushd --config FILE [--check-config]\n"
          "\n"
          "Watches DIR for checkpoints and pushes each complete one to a Hugging Face Hub repo.\n"
          "With `run`, starts the training command, passes signals on, makes the final push\n"
          "when it exits and exits with its status (7: it succeeded but the push failed).\n"
          "\n"
          "  --watch DIR          training output directory to watch (required)\n"
          "  --repo ID            target repository, namespace/name (required unless --dry-run\n"
          "                       or --bucket)\n"
          "  --bucket ID          Storage Bucket, namespace/name: intermediate checkpoints go\n"
          "                       there (checkpoint-N/, through Xet); the final model to --repo\n"
          "  --endpoint URL       Hub endpoint (default: $HF_ENDPOINT, else " DEFAULT_ENDPOINT ")\n"
          "  --strategy NAME      what to push: every_save (default), checkpoint,\n"
          "                       all_checkpoints or end (as transformers' hub_strategy)\n"
          "  --revision BRANCH    intermediate checkpoints go to BRANCH (created if missing);\n"
          "                       the end-of-training commit goes to main\n"
          "  --include GLOB       push only repo paths matching GLOB (repeatable)\n"
          "  --exclude GLOB       never push repo paths matching GLOB (repeatable)\n"
          "  --max-rate BYTES     upload bandwidth cap, all transfers together (0: none)\n"
          "  --max-transfers N    parts, files or xorbs uploading at once (4)\n"
          "  --transfer MODE      auto (default: Xet when the Hub offers it, else LFS),\n"
          "                       xet (fail when the Hub does not offer it) or lfs\n"
          "  --nice N             CPU niceness of the daemon's threads, 0-19 (10), with the\n"
          "                       lowest I/O priority: the training keeps the machine; a\n"
          "                       wrapped command keeps its own; 0 leaves them as they are\n"
          "  --commits-per-hour N commit budget; faster saves coalesce (128, as the Hub allows)\n"
          "  --keep-last K        all_checkpoints: the commit adding a checkpoint folder also\n"
          "                       deletes this job's checkpoint-N/ folders beyond the newest K;\n"
          "                       with --bucket: its checkpoint-N/ prefixes beyond the newest K\n"
          "                       (0: keep all)\n"
          "  --staging-max BYTES  pins that had to be copied (no hard link) are copied at\n"
          "                       seal while the staging bytes are within it; later copies\n"
          "                       wait (0: no limit)\n"
          "  --public             create the repo (and bucket) public (default: private)\n"
          "  --quiet-ms N         quiet period before a checkpoint counts as complete (1000)\n"
          "  --drain-timeout S    on SIGTERM, seconds to finish pushes before exiting (60)\n"
          "  --dry-run            detect and pin, push nothing\n"
          "  --log-level LEVEL    debug, info, warn or error (info)\n"
          "  --log-format FORMAT  kv (default) or json: one object a line\n"
          "  --metrics-path FILE  write Prometheus metrics to FILE (textfile collector)\n"
          "  --socket PATH        control socket (default: $XDG_RUNTIME_DIR/ckptpush/JOB.sock)\n"
          "  --job NAME           job name for the default socket (default: DIR's basename)\n"
          "  --layout NAME        only this checkpoint layout (default: auto-detect)\n"
          "  --rule GLOB[:MARKER[:QUIET_MS]]  a checkpoint rule of your own (repeatable)\n"
          "  --token-path FILE    read the token from FILE (like HF_TOKEN_PATH)\n"
          "  --nodes N|auto       several nodes, one daemon each, one commit per checkpoint\n"
          "                       (auto: $SLURM_NNODES, else $NNODES; default 1)\n"
          "  --node-rank R        this node's rank (default: $SLURM_NODEID, else $NODE_RANK);\n"
          "                       rank 0 coordinates and commits\n"
          "  --coordinator HOST[:PORT]  rank 0's address (default: $MASTER_ADDR, port 29555)\n"
          "  --coordinator-wait S seconds before a checkpoint's missing nodes are logged (60)\n"
          "  --job-secret-file F  the job's shared secret (default: $CKPTPUSH_JOB_SECRET)\n"
          "  --config FILE        JSON configuration file (also $CKPTPUSH_CONFIG)\n"
          "  --check-config       print the effective configuration as JSON and exit\n"
          "  --help, --version\n"
          "\n"
          "Flags override the environment (CKPTPUSH_<KEY>, e.g. CKPTPUSH_REPO), which overrides\n"
          "the configuration file. The token comes from HF_TOKEN, else\n"
          "$CREDENTIALS_DIRECTORY/hf_token, else the file HF_TOKEN_PATH, else $HF_HOME/token.\n",
          stdout);
}

static const char *const strategy_names[] = {
    [STRATEGY_EVERY_SAVE] = "every_save",
    [STRATEGY_CHECKPOINT] = "checkpoint",
    [STRATEGY_ALL_CHECKPOINTS] = "all_checkpoints",
    [STRATEGY_END] = "end",
};
#define STRATEGY_COUNT (sizeof(strategy_names) / sizeof(strategy_names[0]))

const char *config_strategy_name(enum config_strategy strategy)
{
    return (unsigned)strategy < STRATEGY_COUNT ? strategy_names[strategy] : "unknown";
}

static const char *const transfer_names[] = {
    [TRANSFER_AUTO] = "auto",
    [TRANSFER_XET] = "xet",
    [TRANSFER_LFS] = "lfs",
};
#define TRANSFER_COUNT (sizeof(transfer_names) / sizeof(transfer_names[0]))

const char *config_transfer_name(enum config_transfer transfer)
{
    return (unsigned)transfer < TRANSFER_COUNT ? transfer_names[transfer] : "unknown";
}

/* --- one setter per key: check the text, store it, or say why not ------------------------ */

static int parse_unsigned(const char *text, unsigned max, unsigned *ret)
{
    char *end;
    unsigned long value;

    if (text[0] == '\0' || !isdigit((unsigned char)text[0]))
        return -EINVAL;
    errno = 0;
    value = strtoul(text, &end, 10);
    if (errno != 0 || *end != '\0' || value > max)
        return -EINVAL;
    *ret = (unsigned)value;
    return 0;
}

static int parse_bool(const char *text, bool *ret)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *ret = true;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *ret = false;
            return 0;
        }
    }
    return -EINVAL;
}

static int replace(char **field, const char *value)
{
    char *copy = strdup(value);

    if (copy == NULL)
        return -ENOMEM;
    free(*field);
    *field = copy;
    return 0;
}

static int set_path(char **field, const char *value, char *why, size_t why_size)
{
    if (value[0] == '\0' || strlen(value) >= PATH_MAX) {
        snprintf(why, why_size, "'%.200s' is not a path", value);
        return -EINVAL;
    }
    return replace(field, value);
}

#define SETTER(name) static int name(struct config *cfg, const char *v, char *why, size_t why_size)

SETTER(set_watch)
{
    return set_path(&cfg->watch_dir, v, why, why_size);
}

SETTER(set_repo)
{
    struct ckpt_err e;

    ckpt_err_clear(&e);
    if (hub_validate_repo_id(v, &e) < 0) {
        snprintf(why, why_size, "%s", e.msg);
        return -EINVAL;
    }
    return replace(&cfg->repo_id, v);
}

SETTER(set_bucket)
{
    struct ckpt_err e;

    if (v[0] == '\0') { /* no bucket: everything to the repo */
        free(cfg->bucket_id);
        cfg->bucket_id = NULL;
        return 0;
    }
    ckpt_err_clear(&e);
    if (hub_validate_repo_id(v, &e) < 0) {
        /* the same rules as a repo id; the sentence names what it is */
        const char *rest = strncmp(e.msg, "invalid repo id ", 16) == 0 ? e.msg + 16 : e.msg;
        snprintf(why, why_size, "invalid bucket id %s", rest);
        return -EINVAL;
    }
    return replace(&cfg->bucket_id, v);
}

SETTER(set_endpoint)
{
    size_t len = strlen(v);

    if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) {
        snprintf(why, why_size, "invalid endpoint '%.200s': must start with http:// or https://",
                 v);
        return -EINVAL;
    }
    while (len > 0 && v[len - 1] == '/')
        len--;
    free(cfg->endpoint);
    cfg->endpoint = strndup(v, len);
    return cfg->endpoint ? 0 : -ENOMEM;
}

SETTER(set_strategy)
{
    for (size_t i = 0; i < STRATEGY_COUNT; i++) {
        if (strcmp(v, strategy_names[i]) == 0) {
            cfg->strategy = (enum config_strategy)i;
            return 0;
        }
    }
    snprintf(why, why_size,
             "unknown strategy '%.100s' (known: every_save, checkpoint, all_checkpoints, end)", v);
    return -EINVAL;
}

SETTER(set_transfer)
{
    for (size_t i = 0; i < TRANSFER_COUNT; i++) {
        if (strcmp(v, transfer_names[i]) == 0) {
            cfg->transfer = (enum config_transfer)i;
            return 0;
        }
    }
    snprintf(why, why_size, "unknown transfer '%.100s' (known: auto, xet, lfs)", v);
    return -EINVAL;
}

SETTER(set_revision)
{
    if (v[0] == '\0') { /* everything to main */
        free(cfg->revision);
        cfg->revision = NULL;
        return 0;
    }
    if (v[0] == '-' || v[0] == '/' || strstr(v, "..") != NULL || strpbrk(v, " ~^:?*[\\") != NULL ||
        strlen(v) > 200) {
        snprintf(why, why_size, "invalid branch name '%.100s'", v);
        return -EINVAL;
    }
    return replace(&cfg->revision, v);
}

static int add_glob(char **list, const char *v, char *why, size_t why_size)
{
    size_t n = 0;

    while (list[n] != NULL)
        n++;
    if (n >= CONFIG_GLOBS_MAX || v[0] == '\0') {
        snprintf(why, why_size, "an empty glob, or more than %d", CONFIG_GLOBS_MAX);
        return -EINVAL;
    }
    list[n] = strdup(v);
    return list[n] != NULL ? 0 : -ENOMEM;
}

SETTER(add_include)
{
    return add_glob(cfg->include, v, why, why_size);
}

SETTER(add_exclude)
{
    return add_glob(cfg->exclude, v, why, why_size);
}

static int parse_bytes(const char *v, unsigned long long *ret)
{
    char *end;

    if (v[0] < '0' || v[0] > '9')
        return -EINVAL;
    errno = 0;
    *ret = strtoull(v, &end, 10);
    return errno != 0 || *end != '\0' ? -EINVAL : 0;
}

SETTER(set_max_rate)
{
    if (parse_bytes(v, &cfg->max_rate) != 0) {
        snprintf(why, why_size, "'%.100s' is not a number of bytes per second", v);
        return -EINVAL;
    }
    return 0;
}

SETTER(set_staging_max)
{
    if (parse_bytes(v, &cfg->staging_max) != 0) {
        snprintf(why, why_size, "'%.100s' is not a number of bytes", v);
        return -EINVAL;
    }
    return 0;
}

SETTER(set_commits_per_hour)
{
    if (parse_unsigned(v, 100000, &cfg->commits_per_hour) != 0 || cfg->commits_per_hour == 0) {
        snprintf(why, why_size, "'%.100s' is not a number from 1 to 100000", v);
        return -EINVAL;
    }
    return 0;
}

SETTER(set_keep_last)
{
    if (parse_unsigned(v, 100000, &cfg->keep_last) != 0) {
        snprintf(why, why_size,
                 "'%.100s' is not a number from 0 to 100000 (0 keeps every checkpoint)", v);
        return -EINVAL;
    }
    return 0;
}

SETTER(set_nice)
{
    if (parse_unsigned(v, 19, &cfg->nice) != 0) {
        snprintf(why, why_size, "'%.100s' is not a number from 0 to 19", v);
        return -EINVAL;
    }
    return 0;
}

SETTER(set_max_transfers)
{
    if (parse_unsigned(v, 64, &cfg->max_transfers) != 0 || cfg->max_transfers == 0) {
        snprintf(why, why_size, "'%.100s' is not a number from 1 to 64", v);
        return -EINVAL;
    }
    return 0;
}

SETTER(set_private)
{
    if (parse_bool(v, &cfg->private_repo) != 0) {
        snprintf(why, why_size, "'%.100s' is not a boolean (true or false)", v);
        return -EINVAL;
    }
    return 0;
}

SETTER(set_dry_run)
{
    if (parse_bool(v, &cfg->dry_run) != 0) {
        snprintf(why, why_size, "'%.100s' is not a boolean (true or false)", v);
        return -EINVAL;
    }
    return 0;
}

SETTER(set_quiet_ms)
{
    if (parse_unsigned(v, 3600 * 1000, &cfg->quiet_ms) != 0) {
        snprintf(why, why_size, "'%.100s' is not a number of milliseconds (0-3600000)", v);
        return -EINVAL;
    }
    return 0;
}

SETTER(set_drain_timeout)
{
    if (parse_unsigned(v, 24 * 3600, &cfg->drain_timeout_s) != 0) {
        snprintf(why, why_size, "'%.100s' is not a number of seconds (0-86400)", v);
        return -EINVAL;
    }
    return 0;
}

SETTER(set_log_level)
{
    if (log_parse_level(v, &cfg->log_level) != 0) {
        snprintf(why, why_size, "unknown level '%.100s' (debug, info, warn, error)", v);
        return -EINVAL;
    }
    return 0;
}

SETTER(set_log_format)
{
    if (log_parse_format(v, &cfg->log_format) != 0) {
        snprintf(why, why_size, "unknown format '%.100s' (kv, json)", v);
        return -EINVAL;
    }
    return 0;
}

SETTER(set_metrics_path)
{
    return set_path(&cfg->metrics_path, v, why, why_size);
}

SETTER(set_socket)
{
    /* sun_path holds 108 bytes with the NUL */
    if (v[0] == '\0' || strlen(v) > 107) {
        snprintf(why, why_size, "'%.200s' is not a socket path (1-107 bytes)", v);
        return -EINVAL;
    }
    return replace(&cfg->socket_path, v);
}

SETTER(set_layout)
{
    if (!detect_layout_known(v)) {
        snprintf(why, why_size,
                 "unknown layout '%s' (transformers-trainer, model-dir, torch-dcp, deepspeed, "
                 "orbax, nemo, torchsnapshot, accelerate, lightning, single-file)",
                 v);
        return -EINVAL;
    }
    return replace(&cfg->layout, v);
}

/* GLOB[:MARKER[:QUIET_MS]]; each one adds a rule. */
SETTER(add_rule)
{
    struct config_rule *rule;
    char *copy, *marker, *quiet;
    unsigned quiet_ms;

    if (cfg->rule_count == CONFIG_MAX_RULES) {
        snprintf(why, why_size, "more than %d rules", CONFIG_MAX_RULES);
        return -EINVAL;
    }
    if ((copy = strdup(v)) == NULL)
        return -ENOMEM;
    marker = strchr(copy, ':');
    quiet = marker ? strchr(marker + 1, ':') : NULL;
    if (marker)
        *marker++ = '\0';
    if (quiet)
        *quiet++ = '\0';
    if (copy[0] == '\0' || (quiet && parse_unsigned(quiet, 3600 * 1000, &quiet_ms) != 0) ||
        (marker && strchr(marker, '/'))) {
        snprintf(why, why_size,
                 "rule '%s' must be GLOB[:MARKER[:QUIET_MS]] (a non-empty glob, a marker file "
                 "name, milliseconds)",
                 v);
        free(copy);
        return -EINVAL;
    }
    rule = &cfg->rules[cfg->rule_count];
    rule->glob = copy;
    rule->marker = marker && marker[0] ? strdup(marker) : NULL;
    rule->quiet_ms = quiet ? (long)quiet_ms : -1;
    cfg->rule_count++;
    return 0;
}

SETTER(set_job)
{
    size_t n = strlen(v);

    /* The job names a socket file and a systemd instance: keep it a plain file name. */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (!(isalnum(c) || c == '-' || c == '_' || c == '.')) {
            n = 0;
            break;
        }
    }
    if (n == 0 || n > IPC_MAX_JOB || v[0] == '.') {
        snprintf(why, why_size,
                 "'%.100s' is not a job name (1-64 of [A-Za-z0-9._-], not starting with '.')", v);
        return -EINVAL;
    }
    return replace(&cfg->job, v);
}

SETTER(set_token_path)
{
    return set_path(&cfg->token_path, v, why, why_size);
}

SETTER(set_nodes)
{
    unsigned n;
    if (strcmp(v, "auto") == 0) {
        cfg->nodes_auto = true;
        return 0;
    }
    if (parse_unsigned(v, COORD_MAX_NODES, &n) != 0 || n == 0) {
        snprintf(why, why_size, "'%.100s' is not auto or a number of nodes from 1 to %d", v,
                 COORD_MAX_NODES);
        return -EINVAL;
    }
    cfg->nodes_auto = false;
    cfg->nodes = n;
    return 0;
}

SETTER(set_node_rank)
{
    unsigned n;
    if (parse_unsigned(v, COORD_MAX_NODES - 1, &n) != 0) {
        snprintf(why, why_size, "'%.100s' is not a node rank from 0 to %d", v, COORD_MAX_NODES - 1);
        return -EINVAL;
    }
    cfg->node_rank = n;
    return 0;
}

/* HOST, HOST:PORT, [V6]:PORT */
static int split_host_port(const char *v, char **ret_host, int *ret_port)
{
    const char *colon = NULL, *end;
    unsigned port = COORD_DEFAULT_PORT;
    size_t host_len;

    if (v[0] == '[') {
        if ((end = strchr(v, ']')) == NULL || end == v + 1)
            return -EINVAL;
        host_len = (size_t)(end - v - 1);
        if (end[1] == ':')
            colon = end + 1;
        else if (end[1] != '\0')
            return -EINVAL;
        v++;
    } else {
        colon = strchr(v, ':');
        if (colon != NULL && strchr(colon + 1, ':') != NULL)
            return -EINVAL; /* a bare IPv6 address: it needs brackets */
        host_len = colon != NULL ? (size_t)(colon - v) : strlen(v);
    }
    if (host_len == 0 || host_len > 253)
        return -EINVAL;
    for (size_t i = 0; i < host_len; i++)
        if (!isalnum((unsigned char)v[i]) && strchr(".-_:", v[i]) == NULL)
            return -EINVAL;
    if (colon != NULL && (parse_unsigned(colon + 1, 65535, &port) != 0 || port == 0))
        return -EINVAL;
    if ((*ret_host = strndup(v, host_len)) == NULL)
        return -ENOMEM;
    *ret_port = (int)port;
    return 0;
}

SETTER(set_coordinator)
{
    char *host = NULL;
    int port, rc = split_host_port(v, &host, &port);
    if (rc == -ENOMEM)
        return rc;
    if (rc < 0) {
        snprintf(why, why_size,
                 "'%.100s' is not HOST or HOST:PORT (port 1-65535; an IPv6 address in [])", v);
        return -EINVAL;
    }
    free(host);
    return replace(&cfg->coordinator, v);
}

SETTER(set_coord_wait)
{
    if (parse_unsigned(v, 86400, &cfg->coord_wait_s) != 0 || cfg->coord_wait_s == 0) {
        snprintf(why, why_size, "'%.100s' is not a number of seconds from 1 to 86400", v);
        return -EINVAL;
    }
    return 0;
}

SETTER(set_job_secret_file)
{
    return set_path(&cfg->job_secret_file, v, why, why_size);
}

/* KEY_NUMBER_OR_TEXT: a whole number or a word ("nodes": 4 or "auto").
 * KEY_LIST: a file gives a string or a list of strings, the environment one value, each flag
 * one more; every value is added. */
enum key_type { KEY_TEXT, KEY_NUMBER, KEY_BOOL, KEY_LIST, KEY_NUMBER_OR_TEXT };

struct key_def {
    const char *key;        /* JSON key; the environment variable is CKPTPUSH_<KEY> */
    const char *flag;       /* long option, or NULL */
    const char *flag_value; /* a flag without argument sets this value */
    const char *env_alias;  /* a Hugging Face variable read when CKPTPUSH_<KEY> is unset */
    enum key_type type;
    bool path; /* must be absolute in a configuration file */
    int (*set)(struct config *cfg, const char *v, char *why, size_t why_size);
};

/* To add a setting: a field in struct config, a setter, a row here, a line in the usage text and
 * in config_to_json. */
static const struct key_def keys[] = {
    {"watch", "watch", NULL, NULL, KEY_TEXT, true, set_watch},
    {"repo", "repo", NULL, NULL, KEY_TEXT, false, set_repo},
    {"bucket", "bucket", NULL, NULL, KEY_TEXT, false, set_bucket},
    {"endpoint", "endpoint", NULL, "HF_ENDPOINT", KEY_TEXT, false, set_endpoint},
    {"strategy", "strategy", NULL, NULL, KEY_TEXT, false, set_strategy},
    {"revision", "revision", NULL, NULL, KEY_TEXT, false, set_revision},
    {"include", "include", NULL, NULL, KEY_LIST, false, add_include},
    {"exclude", "exclude", NULL, NULL, KEY_LIST, false, add_exclude},
    {"max_rate", "max-rate", NULL, NULL, KEY_NUMBER, false, set_max_rate},
    {"max_transfers", "max-transfers", NULL, NULL, KEY_NUMBER, false, set_max_transfers},
    {"transfer", "transfer", NULL, NULL, KEY_TEXT, false, set_transfer},
    {"nice", "nice", NULL, NULL, KEY_NUMBER, false, set_nice},
    {"staging_max", "staging-max", NULL, NULL, KEY_NUMBER, false, set_staging_max},
    {"commits_per_hour", "commits-per-hour", NULL, NULL, KEY_NUMBER, false, set_commits_per_hour},
    {"keep_last", "keep-last", NULL, NULL, KEY_NUMBER, false, set_keep_last},
    {"private", "public", "false", NULL, KEY_BOOL, false, set_private},
    {"quiet_ms", "quiet-ms", NULL, NULL, KEY_NUMBER, false, set_quiet_ms},
    {"drain_timeout_s", "drain-timeout", NULL, NULL, KEY_NUMBER, false, set_drain_timeout},
    {"dry_run", "dry-run", "true", NULL, KEY_BOOL, false, set_dry_run},
    {"log_level", "log-level", NULL, NULL, KEY_TEXT, false, set_log_level},
    {"log_format", "log-format", NULL, NULL, KEY_TEXT, false, set_log_format},
    {"metrics_path", "metrics-path", NULL, NULL, KEY_TEXT, true, set_metrics_path},
    {"socket", "socket", NULL, NULL, KEY_TEXT, true, set_socket},
    {"job", "job", NULL, NULL, KEY_TEXT, false, set_job},
    {"layout", "layout", NULL, NULL, KEY_TEXT, false, set_layout},
    {"rules", "rule", NULL, NULL, KEY_LIST, false, add_rule},
    {"token_path", "token-path", NULL, "HF_TOKEN_PATH", KEY_TEXT, true, set_token_path},
    {"nodes", "nodes", NULL, NULL, KEY_NUMBER_OR_TEXT, false, set_nodes},
    {"node_rank", "node-rank", NULL, NULL, KEY_NUMBER, false, set_node_rank},
    {"coordinator", "coordinator", NULL, NULL, KEY_TEXT, false, set_coordinator},
    {"coordinator_wait_s", "coordinator-wait", NULL, NULL, KEY_NUMBER, false, set_coord_wait},
    {"job_secret_file", "job-secret-file", NULL, NULL, KEY_TEXT, true, set_job_secret_file},
};
#define KEY_COUNT (sizeof(keys) / sizeof(keys[0]))

static void apply(struct config *cfg, const struct key_def *k, const char *value, const char *where,
                  int *code)
{
    char why[WHY_MAX] = "";
    int rc = k->set(cfg, value, why, sizeof(why));

    if (rc == -ENOMEM) {
        add_problem(cfg, "%s: out of memory", where);
        set_code(code, CKPT_EXIT_FAILURE);
    } else if (rc < 0) {
        add_problem(cfg, "%s: %s", where, why);
        set_code(code, CKPT_EXIT_INVALID);
    }
}

/* --- the configuration file: JSON, with // and block comments allowed ------------------- */

/* Blanks out comments outside strings, keeping newlines so that cJSON's error offsets still
 * map to the right line. */
static void strip_comments(char *s)
{
    bool in_string = false;

    for (char *p = s; *p != '\0'; p++) {
        if (in_string) {
            if (*p == '\\' && p[1] != '\0')
                p++;
            else if (*p == '"')
                in_string = false;
        } else if (*p == '"') {
            in_string = true;
        } else if (p[0] == '/' && p[1] == '/') {
            while (*p != '\0' && *p != '\n')
                *p++ = ' ';
            if (*p == '\0')
                break;
        } else if (p[0] == '/' && p[1] == '*') {
            char *end = strstr(p + 2, "*/");
            char *stop = end ? end + 2 : p + strlen(p);
            for (; p < stop; p++)
                if (*p != '\n')
                    *p = ' ';
            p--;
        }
    }
}

static int read_file(const char *path, char **ret)
{
    struct stat st;
    char *buf;
    ssize_t len;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > CONFIG_FILE_MAX) {
        int rc = !S_ISREG(st.st_mode) ? -EINVAL : -EFBIG;
        close(fd);
        return rc;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        close(fd);
        return -ENOMEM;
    }
    while (got < (size_t)st.st_size && (len = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
        got += (size_t)len;
    close(fd);
    buf[got] = '\0';
    *ret = buf;
    return 0;
}

static const struct key_def *find_key(const char *name)
{
    for (size_t i = 0; i < KEY_COUNT; i++)
        if (strcmp(keys[i].key, name) == 0)
            return &keys[i];
    return NULL;
}

int config_apply_text(struct config *cfg, char *text, const char *path)
{
    char where[PATH_MAX + 80];
    cJSON *root, *item;
    int code = 0, *codep = &code;

    strip_comments(text);
    root = cJSON_Parse(text);
    if (root == NULL || !cJSON_IsObject(root)) {
        const char *at = cJSON_GetErrorPtr();
        unsigned line = 1;
        if (root == NULL && at != NULL && at >= text && at <= text + strlen(text))
            for (const char *p = text; p < at; p++)
                line += *p == '\n';
        if (root == NULL)
            add_problem(cfg, "config '%s': invalid JSON near line %u", path, line);
        else
            add_problem(cfg, "config '%s': must be one JSON object", path);
        set_code(codep, CKPT_EXIT_INVALID);
        cJSON_Delete(root);
        return code;
    }
    cJSON_ArrayForEach(item, root)
    {
        const struct key_def *k = find_key(item->string);
        char number[32];
        const char *value = NULL, *want = NULL;

        snprintf(where, sizeof(where), "config '%s': %s", path, item->string);
        if (strcmp(item->string, "card") == 0) {
            /* The model card's own fields: an object handed to the card as it is. */
            if (!cJSON_IsObject(item)) {
                add_problem(cfg, "%s: must be an object of model card fields", where);
                set_code(codep, CKPT_EXIT_INVALID);
            } else {
                free(cfg->card_fields_json);
                cfg->card_fields_json = cJSON_PrintUnformatted(item);
            }
            continue;
        }
        if (k == NULL) {
            add_problem(cfg, "config '%s': unknown key '%s'", path, item->string);
            set_code(codep, CKPT_EXIT_INVALID);
            continue;
        }
        switch (k->type) {
        case KEY_LIST:
            if (cJSON_IsArray(item)) {
                const cJSON *element;
                cJSON_ArrayForEach(element, item)
                {
                    if (cJSON_IsString(element)) {
                        apply(cfg, k, element->valuestring, where, codep);
                    } else {
                        add_problem(cfg, "%s: every element must be a string", where);
                        set_code(codep, CKPT_EXIT_INVALID);
                    }
                }
                continue;
            }
            value = cJSON_IsString(item) ? item->valuestring : NULL;
            want = "a string or a list of strings";
            break;
        case KEY_TEXT:
            value = cJSON_IsString(item) ? item->valuestring : NULL;
            want = "a string";
            break;
        case KEY_BOOL:
            value = cJSON_IsTrue(item) ? "true" : cJSON_IsFalse(item) ? "false" : NULL;
            want = "true or false";
            break;
        case KEY_NUMBER_OR_TEXT:
        case KEY_NUMBER:
            if (k->type == KEY_NUMBER_OR_TEXT && cJSON_IsString(item)) {
                value = item->valuestring;
            } else if (cJSON_IsNumber(item) && item->valuedouble >= 0 && item->valuedouble <= 4e9 &&
                       item->valuedouble == (double)(unsigned long)item->valuedouble) {
                snprintf(number, sizeof(number), "%lu", (unsigned long)item->valuedouble);
                value = number;
            } else if (cJSON_IsNumber(item)) {
                snprintf(number, sizeof(number), "%g", item->valuedouble);
                value = number; /* the setter says why it is out of range */
            }
            want = k->type == KEY_NUMBER ? "a whole number" : "a whole number or a word";
            break;
        }
        if (value == NULL) {
            add_problem(cfg, "%s: must be %s", where, want);
            set_code(codep, CKPT_EXIT_INVALID);
        } else if (k->path && value[0] != '/') {
            /* relative to what? the daemon's working directory differs between launchers */
            add_problem(cfg, "%s: '%s' must be an absolute path", where, value);
            set_code(codep, CKPT_EXIT_INVALID);
        } else {
            apply(cfg, k, value, where, codep);
        }
    }
    cJSON_Delete(root);
    return code;
}

static void load_file(struct config *cfg, const char *path, int *code)
{
    char *text = NULL;
    int rc = read_file(path, &text);

    if (cfg->config_path == NULL)
        cfg->config_path = strdup(path);
    if (rc < 0) {
        add_problem(cfg, "cannot read config '%s': %s", path,
                    rc == -EFBIG    ? "larger than 1 MiB"
                    : rc == -EINVAL ? "not a regular file"
                                    : strerror(-rc));
        set_code(code, CKPT_EXIT_INVALID);
        return;
    }
    set_code(code, config_apply_text(cfg, text, path));
    free(text);
}

/* --- the environment ----------------------------------------------------------------------- */

static const char *env_value(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : NULL;
}

static void load_env(struct config *cfg, int *code)
{
    for (size_t i = 0; i < KEY_COUNT; i++) {
        char name[64];
        const char *value;
        size_t n = (size_t)snprintf(name, sizeof(name), "CKPTPUSH_%s", keys[i].key);

        for (size_t j = 9; j < n; j++)
            name[j] = (char)toupper((unsigned char)name[j]);
        value = env_value(name);
        if (value == NULL && keys[i].env_alias != NULL &&
            (value = env_value(keys[i].env_alias)) != NULL)
            snprintf(name, sizeof(name), "%s", keys[i].env_alias);
        if (value != NULL)
            apply(cfg, &keys[i], value, name, code);
    }
    if (env_value("HF_HUB_OFFLINE") != NULL &&
        parse_bool(env_value("HF_HUB_OFFLINE"), &cfg->offline) != 0) {
        add_problem(cfg, "HF_HUB_OFFLINE: '%s' is not a boolean (1 or 0)",
                    env_value("HF_HUB_OFFLINE"));
        set_code(code, CKPT_EXIT_INVALID);
    }
}

/* --- the token ----------------------------------------------------------------------------- */

static bool token_is_clean(const char *token)
{
    /* A token goes into an HTTP header: anything but visible ASCII could split it. */
    for (const unsigned char *p = (const unsigned char *)token; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    return true;
}

static char *strip(char *s)
{
    size_t len;

    while (isspace((unsigned char)*s))
        s++;
    len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        s[--len] = '\0';
    return s;
}

/* Reads a token file at startup, before the loop runs. Returns 0 with *ret NULL when the file
 * does not exist, which is not an error: the next source is tried. */
static int read_token_file(const char *path, char **ret)
{
    char buf[TOKEN_MAX + 1];
    ssize_t len;
    int fd;

    *ret = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    len = read(fd, buf, TOKEN_MAX);
    close(fd);
    if (len < 0)
        return -errno;
    buf[len] = '\0';
    if (*strip(buf) == '\0')
        return 0;
    *ret = strdup(strip(buf));
    explicit_bzero(buf, sizeof(buf));
    return *ret ? 0 : -ENOMEM;
}

/* HF_TOKEN, HUGGING_FACE_HUB_TOKEN, the systemd credential, then the first token file that
 * exists of: token_path (HF_TOKEN_PATH), $HF_HOME/token, the XDG cache, ~/.cache. */
static void find_token(struct config *cfg)
{
    static const char *const env_names[] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"};
    char path[PATH_MAX];
    const char *home;
    int rc;

    for (size_t i = 0; i < 2; i++) {
        const char *value = env_value(env_names[i]);
        if (value != NULL) {
            char *copy = strdup(value);
            if (copy == NULL)
                return;
            cfg->token = strdup(strip(copy));
            explicit_bzero(copy, strlen(copy));
            free(copy);
            cfg->token_source = strdup(env_names[i]);
            goto check;
        }
    }
    if ((home = env_value("CREDENTIALS_DIRECTORY")) != NULL) {
        /* systemd LoadCredential=hf_token:...; a unit may pass other credentials only, so a
         * missing hf_token sends us on to the token files */
        snprintf(path, sizeof(path), "%s/hf_token", home);
        rc = read_token_file(path, &cfg->token);
        if (rc < 0) {
            add_problem(cfg, "cannot read token credential '%s': %s", path, strerror(-rc));
            return;
        }
        if (cfg->token != NULL) {
            cfg->token_source = strdup(path);
            goto check;
        }
    }
    if (cfg->token_path != NULL)
        snprintf(path, sizeof(path), "%s", cfg->token_path);
    else if ((home = env_value("HF_HOME")) != NULL)
        snprintf(path, sizeof(path), "%s/token", home);
    else if ((home = env_value("XDG_CACHE_HOME")) != NULL)
        snprintf(path, sizeof(path), "%s/huggingface/token", home);
    else if ((home = getenv("HOME")) != NULL)
        snprintf(path, sizeof(path), "%s/.cache/huggingface/token", home);
    else
        return;
    rc = read_token_file(path, &cfg->token);
    if (rc < 0) {
        add_problem(cfg, "cannot read token file '%s': %s", path, strerror(-rc));
        return;
    }
    if (cfg->token != NULL)
        cfg->token_source = strdup(path);
check:
    if (cfg->token != NULL && !token_is_clean(cfg->token))
        add_problem(cfg, "the token from '%s' contains spaces or control characters",
                    cfg->token_source);
}

/* --- paths ---------------------------------------------------------------------------------- */

static void check_watch_dir(struct config *cfg, int *code)
{
    char resolved[PATH_MAX];
    struct stat st;
    char *dir = cfg->watch_dir;

    cfg->watch_dir = NULL;
    if (realpath(dir, resolved) == NULL || stat(resolved, &st) != 0) {
        add_problem(cfg, "cannot watch '%s': %s", dir, strerror(errno));
        set_code(code, CKPT_EXIT_WATCH);
    } else if (!S_ISDIR(st.st_mode)) {
        add_problem(cfg, "cannot watch '%s': not a directory", dir);
        set_code(code, CKPT_EXIT_WATCH);
    } else if (access(resolved, R_OK | W_OK | X_OK) != 0) {
        /* Write access is needed for the staging directory of pins. */
        add_problem(cfg, "cannot watch '%s': %s (read, write and search access needed)", dir,
                    strerror(errno));
        set_code(code, CKPT_EXIT_WATCH);
    } else {
        cfg->watch_dir = strdup(resolved);
    }
    free(dir);
}

/* Relative paths from flags and the environment are taken from the working directory now, so
 * that nothing later depends on it. */
static void make_absolute(char **field)
{
    char cwd[PATH_MAX], path[PATH_MAX * 2];

    if (*field == NULL || (*field)[0] == '/' || getcwd(cwd, sizeof(cwd)) == NULL)
        return;
    snprintf(path, sizeof(path), "%s/%s", cwd, *field);
    replace(field, path);
}

/* --- several nodes: what the cluster gives, then the secret ------------------------------ */

/* A whole number from the environment, or -1. */
static long env_number(const char *name, long max)
{
    const char *v = getenv(name);
    unsigned n;
    if (v == NULL || parse_unsigned(v, (unsigned)max, &n) != 0)
        return -1;
    return n;
}

static void read_job_secret(struct config *cfg, int *code)
{
    char buf[COORD_SECRET_MAX + 2];
    size_t len = 0;
    const char *where = cfg->job_secret_file;

    if (where != NULL) {
        FILE *f = fopen(where, "re");
        if (f == NULL) {
            add_problem(cfg, "job_secret_file: cannot read '%s': %s", where, strerror(errno));
            set_code(code, CKPT_EXIT_INVALID);
            return;
        }
        len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
    } else if (getenv("CKPTPUSH_JOB_SECRET") != NULL) {
        where = "CKPTPUSH_JOB_SECRET";
        len = strlen(getenv("CKPTPUSH_JOB_SECRET"));
        if (len > sizeof(buf))
            len = sizeof(buf);
        memcpy(buf, getenv("CKPTPUSH_JOB_SECRET"), len);
    } else {
        add_problem(cfg, "nodes: several nodes need the job's shared secret: set "
                         "CKPTPUSH_JOB_SECRET, or --job-secret-file on shared storage");
        set_code(code, CKPT_EXIT_USAGE);
        return;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    if (len < COORD_SECRET_MIN || len > COORD_SECRET_MAX) {
        add_problem(cfg, "%s: the job secret must hold %d to %d bytes (it holds %zu)", where,
                    COORD_SECRET_MIN, COORD_SECRET_MAX, len);
        set_code(code, CKPT_EXIT_INVALID);
    } else if ((cfg->job_secret = malloc(len)) != NULL) {
        memcpy(cfg->job_secret, buf, len);
        cfg->job_secret_len = len;
    } else {
        set_code(code, CKPT_EXIT_FAILURE);
    }
    explicit_bzero(buf, sizeof(buf));
}

static void check_nodes(struct config *cfg, int *code)
{
    if (cfg->nodes_auto) {
        cfg->nodes = env_number("SLURM_NNODES", COORD_MAX_NODES);
        if (cfg->nodes < 0)
            cfg->nodes = env_number("NNODES", COORD_MAX_NODES);
        if (cfg->nodes < 1) {
            add_problem(cfg, "nodes: auto needs SLURM_NNODES or NNODES (a number from 1 to %d)",
                        COORD_MAX_NODES);
            set_code(code, CKPT_EXIT_USAGE);
            return;
        }
    }
    if (cfg->nodes <= 1)
        return;
    if (cfg->node_rank < 0)
        cfg->node_rank = env_number("SLURM_NODEID", COORD_MAX_NODES - 1);
    if (cfg->node_rank < 0)
        cfg->node_rank = env_number("NODE_RANK", COORD_MAX_NODES - 1);
    if (cfg->node_rank < 0) {
        add_problem(cfg, "node_rank: several nodes need this node's rank: --node-rank, or "
                         "SLURM_NODEID or NODE_RANK in the environment");
        set_code(code, CKPT_EXIT_USAGE);
    } else if (cfg->node_rank >= cfg->nodes) {
        add_problem(cfg, "node_rank: %ld is not below nodes (%ld)", cfg->node_rank, cfg->nodes);
        set_code(code, CKPT_EXIT_INVALID);
    }
    const char *addr = cfg->coordinator != NULL ? cfg->coordinator : getenv("MASTER_ADDR");
    if (addr == NULL) {
        add_problem(cfg, "coordinator: several nodes need rank 0's address: --coordinator "
                         "HOST[:PORT], or MASTER_ADDR in the environment");
        set_code(code, CKPT_EXIT_USAGE);
    } else if (split_host_port(addr, &cfg->coord_host, &cfg->coord_port) < 0) {
        add_problem(cfg, "MASTER_ADDR: '%.100s' is not a host name or address", addr);
        set_code(code, CKPT_EXIT_INVALID);
    }
    if (cfg->dry_run) {
        add_problem(cfg, "nodes: a dry run cannot be one of several nodes (the coordinator "
                         "commits)");
        set_code(code, CKPT_EXIT_INVALID);
    }
    if (cfg->strategy != STRATEGY_EVERY_SAVE && cfg->strategy != STRATEGY_ALL_CHECKPOINTS) {
        add_problem(cfg,
                    "strategy: %s is not supported with several nodes (every_save or "
                    "all_checkpoints)",
                    config_strategy_name(cfg->strategy));
        set_code(code, CKPT_EXIT_INVALID);
    }
    if (cfg->keep_last > 0) {
        add_problem(cfg, "keep_last: not supported with several nodes");
        set_code(code, CKPT_EXIT_INVALID);
    }
    if (cfg->bucket_id != NULL) {
        /* the coordinator commits to the repo; a bucket batch from several nodes is not built */
        add_problem(cfg, "bucket: not supported with several nodes");
        set_code(code, CKPT_EXIT_INVALID);
    }
    read_job_secret(cfg, code);
}

/* --- loading --------------------------------------------------------------------------------- */

struct flag_value {
    const struct key_def *key;
    const char *value;
};

static int load(struct config *cfg, int argc, char **argv)
{
    enum { OPT_CONFIG = 256, OPT_CHECK, OPT_KEY = 512 };
    struct option options[KEY_COUNT + 5];
    struct flag_value *flags = NULL;
    size_t n_flags = 0, n = 0;
    const char *config_file = NULL;
    int code = 0, opt;

    cfg->private_repo = true;
    cfg->quiet_ms = 1000;
    cfg->drain_timeout_s = 60;
    cfg->log_level = LOG_INFO;
    cfg->log_format = LOG_FORMAT_KV;
    cfg->strategy = STRATEGY_EVERY_SAVE;
    cfg->max_transfers = 4;
    cfg->nice = 10;
    cfg->commits_per_hour = 128;
    cfg->node_rank = -1;
    cfg->coord_wait_s = 60;

    for (size_t i = 0; i < KEY_COUNT; i++)
        if (keys[i].flag != NULL)
            options[n++] =
                (struct option){keys[i].flag, keys[i].flag_value ? no_argument : required_argument,
                                NULL, OPT_KEY + (int)i};
    options[n++] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    options[n++] = (struct option){"check-config", no_argument, NULL, OPT_CHECK};
    options[n++] = (struct option){"help", no_argument, NULL, 'h'};
    options[n++] = (struct option){"version", no_argument, NULL, 'V'};
    options[n] = (struct option){NULL, 0, NULL, 0};

    /* Flags are applied last (they win), but read first: --config names the file. */
    flags = calloc((size_t)argc + 1, sizeof(*flags));
    if (flags == NULL) {
        add_problem(cfg, "out of memory");
        return CKPT_EXIT_FAILURE;
    }
    opterr = 0;
    optind = 1;
    /* '+': options end at the first word that is not one ("run"), so the wrapped command's own
     * flags are never taken for ours. */
    while ((opt = getopt_long(argc, argv, "+:hV", options, NULL)) != -1) {
        if (opt >= OPT_KEY) {
            const struct key_def *k = &keys[opt - OPT_KEY];
            flags[n_flags++] = (struct flag_value){k, k->flag_value ? k->flag_value : optarg};
            continue;
        }
        switch (opt) {
        case OPT_CONFIG:
            config_file = optarg;
            break;
        case OPT_CHECK:
            cfg->check_only = true;
            break;
        case 'h':
            cfg->show_help = true;
            free(flags);
            return 0;
        case 'V':
            cfg->show_version = true;
            free(flags);
            return 0;
        case ':':
            add_problem(cfg, "option '%s' needs a value", argv[optind - 1]);
            free(flags);
            return CKPT_EXIT_USAGE;
        default:
            add_problem(cfg, "unknown option '%s' (see --help)", argv[optind - 1]);
            free(flags);
            return CKPT_EXIT_USAGE;
        }
    }
    if (optind < argc && strcmp(argv[optind], "run") == 0) {
        int first = optind + 1;
        if (first < argc && strcmp(argv[first], "--") == 0)
            first++;
        if (first >= argc) {
            add_problem(cfg, "run: missing the command to run (run -- CMD ARGS...)");
            free(flags);
            return CKPT_EXIT_USAGE;
        }
        cfg->child_argv = argv + first;
    } else if (optind < argc) {
        add_problem(cfg, "unexpected argument '%s' (see --help)", argv[optind]);
        free(flags);
        return CKPT_EXIT_USAGE;
    }

    if (config_file == NULL)
        config_file = env_value("CKPTPUSH_CONFIG");
    if (config_file != NULL)
        load_file(cfg, config_file, &code);
    load_env(cfg, &code);
    for (size_t i = 0; i < n_flags; i++) {
        char where[64];
        snprintf(where, sizeof(where), "--%s", flags[i].key->flag);
        apply(cfg, flags[i].key, flags[i].value, where, &code);
    }
    free(flags);
    make_absolute(&cfg->metrics_path);
    make_absolute(&cfg->token_path);
    make_absolute(&cfg->job_secret_file);

    if (cfg->watch_dir == NULL) {
        add_problem(cfg, "missing --watch DIR (or 'watch' in the config, CKPTPUSH_WATCH)");
        set_code(&code, CKPT_EXIT_USAGE);
    }
    if (cfg->repo_id == NULL && cfg->bucket_id == NULL && !cfg->dry_run) {
        add_problem(cfg, "missing --repo NAMESPACE/NAME (or 'repo' in the config, CKPTPUSH_REPO) "
                         "or --bucket NAMESPACE/NAME");
        set_code(&code, CKPT_EXIT_USAGE);
    }
    if (cfg->keep_last > 0 && cfg->strategy != STRATEGY_ALL_CHECKPOINTS && cfg->bucket_id == NULL) {
        /* Only all_checkpoints (or a bucket) keeps one folder per checkpoint to retire. */
        add_problem(cfg,
                    "keep_last: %u needs strategy all_checkpoints or a bucket (the strategy is "
                    "%s, which keeps no checkpoint folders to delete)",
                    cfg->keep_last, config_strategy_name(cfg->strategy));
        set_code(&code, CKPT_EXIT_INVALID);
    }
    if (cfg->bucket_id != NULL && cfg->transfer == TRANSFER_LFS) {
        /* every bucket file is a Xet file */
        add_problem(cfg, "bucket: '%s' needs Xet uploads; transfer 'lfs' cannot write to a bucket",
                    cfg->bucket_id);
        set_code(&code, CKPT_EXIT_INVALID);
    }
    check_nodes(cfg, &code);
    if (cfg->endpoint == NULL && (cfg->endpoint = strdup(DEFAULT_ENDPOINT)) == NULL)
        set_code(&code, CKPT_EXIT_FAILURE);
    if (cfg->offline && !cfg->dry_run) {
        /* Refusing is clearer than quietly pushing nothing: a dry run must be asked for. */
        add_problem(cfg, "HF_HUB_OFFLINE is set: pushing needs the Hub; unset it, or run with "
                         "--dry-run to detect and pin without pushing");
        set_code(&code, CKPT_EXIT_INVALID);
    }

    {
        size_t before = strlen(cfg->problems);
        find_token(cfg);
        if (strlen(cfg->problems) != before)
            set_code(&code, CKPT_EXIT_INVALID);
    }
    if (cfg->token == NULL && !cfg->dry_run) {
        add_problem(cfg, "no Hugging Face token: set HF_TOKEN, or write one to $HF_HOME/token, "
                         "or give the unit the credential 'hf_token'");
        set_code(&code, CKPT_EXIT_INVALID);
    }

    if (cfg->watch_dir != NULL)
        check_watch_dir(cfg, &code);
    if (cfg->watch_dir != NULL && cfg->staging_dir == NULL) {
        char path[PATH_MAX + 16];
        snprintf(path, sizeof(path), "%s/.ckptpush", cfg->watch_dir);
        cfg->staging_dir = strdup(path);
    }
    if (cfg->watch_dir != NULL) {
        char name[IPC_MAX_JOB + 1], path[PATH_MAX];
        ipc_proto_job_name(name, sizeof(name), cfg->job ? cfg->job : cfg->watch_dir);
        replace(&cfg->job, name);
        if (cfg->socket_path == NULL) {
            if (ipc_proto_default_path(path, sizeof(path), name) == 0) {
                replace(&cfg->socket_path, path);
            } else {
                add_problem(cfg, "the default control socket path is too long: set --socket");
                set_code(&code, CKPT_EXIT_INVALID);
            }
        }
    }
    return code;
}

int config_load(struct config *cfg, int argc, char **argv, struct ckpt_err *err)
{
    int code;

    memset(cfg, 0, sizeof(*cfg));
    ckpt_err_clear(err);
    code = load(cfg, argc, argv);
    cfg->argc = argc;
    cfg->argv = argv;
    if (cfg->problems[0] != '\0')
        ckpt_err_set(err, CKPT_ERR_INPUT, -EINVAL, "%s", cfg->problems);
    return code;
}

static void add_string_or_null(cJSON *o, const char *key, const char *value)
{
    if (value != NULL)
        cJSON_AddStringToObject(o, key, value);
    else
        cJSON_AddNullToObject(o, key);
}

char *config_to_json(const struct config *cfg)
{
    cJSON *o = cJSON_CreateObject();
    char *text, *line = NULL;
    const char *token = NULL;

    if (o == NULL)
        return NULL;
    if (cfg->token != NULL)
        token = strncmp(cfg->token, "hf_", 3) == 0 ? "hf_***" : "***";
    add_string_or_null(o, "watch", cfg->watch_dir);
    add_string_or_null(o, "repo", cfg->repo_id);
    add_string_or_null(o, "bucket", cfg->bucket_id);
    add_string_or_null(o, "endpoint", cfg->endpoint);
    cJSON_AddStringToObject(o, "strategy", config_strategy_name(cfg->strategy));
    add_string_or_null(o, "revision", cfg->revision);
    {
        cJSON *inc = cJSON_AddArrayToObject(o, "include");
        cJSON *exc = cJSON_AddArrayToObject(o, "exclude");
        for (size_t i = 0; inc != NULL && cfg->include[i] != NULL; i++)
            cJSON_AddItemToArray(inc, cJSON_CreateString(cfg->include[i]));
        for (size_t i = 0; exc != NULL && cfg->exclude[i] != NULL; i++)
            cJSON_AddItemToArray(exc, cJSON_CreateString(cfg->exclude[i]));
    }
    cJSON_AddNumberToObject(o, "max_rate", (double)cfg->max_rate);
    cJSON_AddNumberToObject(o, "max_transfers", cfg->max_transfers);
    cJSON_AddStringToObject(o, "transfer", config_transfer_name(cfg->transfer));
    cJSON_AddNumberToObject(o, "nice", cfg->nice);
    cJSON_AddNumberToObject(o, "staging_max", (double)cfg->staging_max);
    cJSON_AddNumberToObject(o, "commits_per_hour", cfg->commits_per_hour);
    cJSON_AddNumberToObject(o, "keep_last", cfg->keep_last);
    cJSON_AddBoolToObject(o, "private", cfg->private_repo);
    cJSON_AddNumberToObject(o, "quiet_ms", cfg->quiet_ms);
    add_string_or_null(o, "staging", cfg->staging_dir);
    cJSON_AddNumberToObject(o, "drain_timeout_s", cfg->drain_timeout_s);
    cJSON_AddBoolToObject(o, "dry_run", cfg->dry_run);
    cJSON_AddStringToObject(o, "log_level",
                            (const char *[]){"debug", "info", "warn", "error"}[cfg->log_level]);
    cJSON_AddStringToObject(o, "log_format", cfg->log_format == LOG_FORMAT_JSON ? "json" : "kv");
    add_string_or_null(o, "metrics_path", cfg->metrics_path);
    add_string_or_null(o, "socket", cfg->socket_path);
    add_string_or_null(o, "job", cfg->job);
    add_string_or_null(o, "layout", cfg->layout);
    if (cfg->card_fields_json != NULL)
        cJSON_AddItemToObject(o, "card", cJSON_Parse(cfg->card_fields_json));
    else
        cJSON_AddNullToObject(o, "card");
    {
        cJSON *rules = cJSON_AddArrayToObject(o, "rules");
        for (size_t i = 0; rules != NULL && i < cfg->rule_count; i++) {
            char rule[PATH_MAX + 64];
            snprintf(rule, sizeof(rule), "%s%s%s", cfg->rules[i].glob,
                     cfg->rules[i].marker || cfg->rules[i].quiet_ms >= 0 ? ":" : "",
                     cfg->rules[i].marker ? cfg->rules[i].marker : "");
            if (cfg->rules[i].quiet_ms >= 0)
                snprintf(rule + strlen(rule), sizeof(rule) - strlen(rule), ":%ld",
                         cfg->rules[i].quiet_ms);
            cJSON_AddItemToArray(rules, cJSON_CreateString(rule));
        }
    }
    cJSON_AddNumberToObject(o, "nodes", cfg->nodes > 1 ? (double)cfg->nodes : 1);
    if (cfg->nodes > 1) {
        char addr[300];
        snprintf(addr, sizeof(addr), strchr(cfg->coord_host, ':') ? "[%s]:%d" : "%s:%d",
                 cfg->coord_host, cfg->coord_port);
        cJSON_AddNumberToObject(o, "node_rank", (double)cfg->node_rank);
        cJSON_AddStringToObject(o, "coordinator", addr);
        cJSON_AddNumberToObject(o, "coordinator_wait_s", cfg->coord_wait_s);
        add_string_or_null(o, "job_secret_file", cfg->job_secret_file);
        cJSON_AddStringToObject(o, "job_secret", "***");
    }
    add_string_or_null(o, "token_path", cfg->token_path);
    add_string_or_null(o, "token", token);
    add_string_or_null(o, "token_source", cfg->token_source);
    add_string_or_null(o, "config_file", cfg->config_path);
    cJSON_AddBoolToObject(o, "offline", cfg->offline);
    text = cJSON_Print(o);
    cJSON_Delete(o);
    if (text != NULL && (line = malloc(strlen(text) + 2)) != NULL)
        sprintf(line, "%s\n", text);
    cJSON_free(text);
    return line;
}

void config_release(struct config *cfg)
{
    if (cfg->token != NULL) {
        /* Do not leave the secret in freed heap memory (core dumps). */
        explicit_bzero(cfg->token, strlen(cfg->token));
        free(cfg->token);
    }
    if (cfg->job_secret != NULL) {
        explicit_bzero(cfg->job_secret, cfg->job_secret_len);
        free(cfg->job_secret);
    }
    free(cfg->coordinator);
    free(cfg->coord_host);
    free(cfg->job_secret_file);
    free(cfg->token_source);
    free(cfg->token_path);
    free(cfg->config_path);
    free(cfg->metrics_path);
    free(cfg->socket_path);
    free(cfg->job);
    free(cfg->layout);
    free(cfg->card_fields_json);
    free(cfg->revision);
    for (size_t i = 0; cfg->include[i] != NULL; i++)
        free(cfg->include[i]);
    for (size_t i = 0; cfg->exclude[i] != NULL; i++)
        free(cfg->exclude[i]);
    for (size_t i = 0; i < cfg->rule_count; i++) {
        free(cfg->rules[i].glob);
        free(cfg->rules[i].marker);
    }
    free(cfg->watch_dir);
    free(cfg->staging_dir);
    free(cfg->repo_id);
    free(cfg->bucket_id);
    free(cfg->endpoint);
    memset(cfg, 0, offsetof(struct config, problems));
}
