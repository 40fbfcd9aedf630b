/* config.c - flags, environment and token discovery for ckptpushd. */
#include "config.h"

#include "ipc_proto.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_ENDPOINT "https://huggingface.co"
#define TOKEN_MAX 4096

static void add_problem(struct ckpt_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Collects every problem so that the user fixes them all in one go. */
static void add_problem(struct ckpt_err *err, const char *fmt, ...)
{
    size_t used = strlen(err->msg);
    va_list ap;

    if (used > 0 && used + 1 < sizeof(err->msg))
        err->msg[used++] = '\n';
    err->msg[used] = '\0';
    va_start(ap, fmt);
    vsnprintf(err->msg + used, sizeof(err->msg) - used, fmt, ap);
    va_end(ap);
    err->kind = CKPT_ERR_INPUT;
}

void config_print_usage(void)
{
    fputs("usage: ckptpushd --watch DIR --repo NAMESPACE/NAME [options] [run -- CMD ARGS...]\n"
          "\n"
          "Watches DIR for checkpoints and pushes each complete one to a Hugging Face Hub repo.\n"
          "With `run`, starts the training command, passes signals on, makes the final push\n"
          "when it exits and exits with its status (7: it succeeded but the push failed).\n"
          "\n"
          "  --watch DIR          training output directory to watch (required)\n"
          "  --repo ID            target repository, namespace/name (required unless --dry-run)\n"
          "  --endpoint URL       Hub endpoint (default: $HF_ENDPOINT, else " DEFAULT_ENDPOINT ")\n"
          "  --strategy NAME      what to push: every_save (default), checkpoint,\n"
          "                       all_checkpoints or end (as transformers' hub_strategy)\n"
          "  --revision BRANCH    intermediate checkpoints go to BRANCH (created if missing);\n"
          "                       the end-of-training commit goes to main\n"
          "  --include GLOB       push only repo paths matching GLOB (repeatable)\n"
          "  --exclude GLOB       never push repo paths matching GLOB (repeatable)\n"
          "  --max-rate BYTES     upload bandwidth cap, all transfers together (0: none)\n"
          "  --max-transfers N    parts or files uploading at once (4)\n"
          "  --staging-max BYTES  space for pins that had to be copied (0: no limit)\n"
          "  --public             create the repo public (default: private)\n"
          "  --quiet-ms N         quiet period before a checkpoint counts as complete (1000)\n"
          "  --staging DIR        where pins live (default: DIR/.ckptpush)\n"
          "  --drain-timeout S    on SIGTERM, seconds to finish pushes before exiting (60)\n"
          "  --dry-run            detect and pin, push nothing\n"
          "  --socket PATH        control socket (default: $XDG_RUNTIME_DIR/ckptpush/JOB.sock)\n"
          "  --job NAME           job name for the default socket (default: DIR's basename)\n"
          "  --log-level LEVEL    debug, info, warn or error (info)\n"
          "  --help, --version\n"
          "\n"
          "The token comes from HF_TOKEN, else the file HF_TOKEN_PATH, else $HF_HOME/token.\n",
          stdout);
}

static const char *const strategy_names[] = {
    [STRATEGY_EVERY_SAVE] = "every_save",
    [STRATEGY_CHECKPOINT] = "checkpoint",
    [STRATEGY_ALL_CHECKPOINTS] = "all_checkpoints",
    [STRATEGY_END] = "end",
};

const char *config_strategy_name(enum config_strategy strategy)
{
    return (unsigned)strategy < sizeof(strategy_names) / sizeof(strategy_names[0])
               ? strategy_names[strategy]
               : "unknown";
}

static int parse_u64(const char *text, unsigned long long *ret)
{
    char *end;

    if (text[0] == '\0' || !isdigit((unsigned char)text[0]))
        return -EINVAL;
    errno = 0;
    *ret = strtoull(text, &end, 10);
    return errno != 0 || *end != '\0' ? -EINVAL : 0;
}

static int add_glob(char **list, const char *glob)
{
    size_t n = 0;

    while (list[n] != NULL)
        n++;
    if (n >= CONFIG_GLOBS_MAX || glob[0] == '\0')
        return -E2BIG;
    list[n] = strdup(glob);
    return list[n] != NULL ? 0 : -ENOMEM;
}

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
    return *ret ? 0 : -ENOMEM;
}

static void find_token(struct config *cfg, struct ckpt_err *err)
{
    static const char *const env_names[] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"};
    char path[PATH_MAX];
    const char *home;
    int rc;

    for (size_t i = 0; i < 2; i++) {
        const char *value = getenv(env_names[i]);
        if (value != NULL && value[0] != '\0') {
            char *copy = strdup(value);
            if (copy == NULL)
                return;
            cfg->token = strdup(strip(copy));
            free(copy);
            cfg->token_source = strdup(env_names[i]);
            goto check;
        }
    }
    if (getenv("HF_TOKEN_PATH") != NULL && getenv("HF_TOKEN_PATH")[0] != '\0')
        snprintf(path, sizeof(path), "%s", getenv("HF_TOKEN_PATH"));
    else if ((home = getenv("HF_HOME")) != NULL && home[0] != '\0')
        snprintf(path, sizeof(path), "%s/token", home);
    else if ((home = getenv("XDG_CACHE_HOME")) != NULL && home[0] != '\0')
        snprintf(path, sizeof(path), "%s/huggingface/token", home);
    else if ((home = getenv("HOME")) != NULL)
        snprintf(path, sizeof(path), "%s/.cache/huggingface/token", home);
    else
        return;
    rc = read_token_file(path, &cfg->token);
    if (rc < 0) {
        add_problem(err, "cannot read token file '%s': %s", path, strerror(-rc));
        return;
    }
    if (cfg->token != NULL)
        cfg->token_source = strdup(path);
check:
    if (cfg->token != NULL && !token_is_clean(cfg->token))
        add_problem(err, "the token from '%s' contains spaces or control characters",
                    cfg->token_source);
}

static void check_watch_dir(struct config *cfg, const char *dir, struct ckpt_err *err, int *code)
{
    char resolved[PATH_MAX];
    struct stat st;

    if (realpath(dir, resolved) == NULL || stat(resolved, &st) != 0) {
        add_problem(err, "cannot watch '%s': %s", dir, strerror(errno));
        *code = CKPT_EXIT_WATCH;
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        add_problem(err, "cannot watch '%s': not a directory", dir);
        *code = CKPT_EXIT_WATCH;
        return;
    }
    if (access(resolved, R_OK | W_OK | X_OK) != 0) {
        /* Write access is needed for the staging directory of pins. */
        add_problem(err, "cannot watch '%s': %s (read, write and search access needed)", dir,
                    strerror(errno));
        *code = CKPT_EXIT_WATCH;
        return;
    }
    cfg->watch_dir = strdup(resolved);
}

int config_load(struct config *cfg, int argc, char **argv, struct ckpt_err *err)
{
    enum {
        OPT_PUBLIC = 256,
        OPT_QUIET,
        OPT_STAGING,
        OPT_DRAIN,
        OPT_DRY,
        OPT_LOG,
        OPT_STRATEGY,
        OPT_SOCKET,
        OPT_JOB,
        OPT_REVISION,
        OPT_INCLUDE,
        OPT_EXCLUDE,
        OPT_MAX_RATE,
        OPT_MAX_TRANSFERS,
        OPT_STAGING_MAX,
    };
    static const struct option options[] = {
        {"watch", required_argument, NULL, 'w'},
        {"repo", required_argument, NULL, 'r'},
        {"endpoint", required_argument, NULL, 'e'},
        {"strategy", required_argument, NULL, OPT_STRATEGY},
        {"public", no_argument, NULL, OPT_PUBLIC},
        {"quiet-ms", required_argument, NULL, OPT_QUIET},
        {"staging", required_argument, NULL, OPT_STAGING},
        {"drain-timeout", required_argument, NULL, OPT_DRAIN},
        {"dry-run", no_argument, NULL, OPT_DRY},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"socket", required_argument, NULL, OPT_SOCKET},
        {"job", required_argument, NULL, OPT_JOB},
        {"revision", required_argument, NULL, OPT_REVISION},
        {"include", required_argument, NULL, OPT_INCLUDE},
        {"exclude", required_argument, NULL, OPT_EXCLUDE},
        {"max-rate", required_argument, NULL, OPT_MAX_RATE},
        {"max-transfers", required_argument, NULL, OPT_MAX_TRANSFERS},
        {"staging-max", required_argument, NULL, OPT_STAGING_MAX},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *watch = NULL, *endpoint = NULL, *staging = NULL, *socket = NULL, *job = NULL;
    int code = 0, opt;

    memset(cfg, 0, sizeof(*cfg));
    ckpt_err_clear(err);
    cfg->private_repo = true;
    cfg->quiet_ms = 1000;
    cfg->drain_timeout_s = 60;
    cfg->log_level = LOG_INFO;
    cfg->strategy = STRATEGY_EVERY_SAVE;
    cfg->max_transfers = 4;

    opterr = 0;
    optind = 1;
    /* '+': options end at the first word that is not one ("run"), so the wrapped command's own
     * flags are never taken for ours. */
    while ((opt = getopt_long(argc, argv, "+:hV", options, NULL)) != -1) {
        switch (opt) {
        case 'w':
            watch = optarg;
            break;
        case 'r':
            free(cfg->repo_id);
            cfg->repo_id = strdup(optarg);
            break;
        case 'e':
            endpoint = optarg;
            break;
        case OPT_STRATEGY: {
            size_t i;
            for (i = 0; i < sizeof(strategy_names) / sizeof(strategy_names[0]); i++)
                if (strcmp(optarg, strategy_names[i]) == 0)
                    break;
            if (i < sizeof(strategy_names) / sizeof(strategy_names[0])) {
                cfg->strategy = (enum config_strategy)i;
            } else {
                add_problem(err,
                            "--strategy: unknown strategy '%s' (known: every_save, checkpoint, "
                            "all_checkpoints, end)",
                            optarg);
                code = code ? code : CKPT_EXIT_INVALID;
            }
            break;
        }
        case OPT_REVISION:
            if (optarg[0] == '\0' || strchr(optarg, ' ') != NULL || strstr(optarg, "..") != NULL) {
                add_problem(err, "--revision: invalid branch name '%s'", optarg);
                code = code ? code : CKPT_EXIT_INVALID;
            } else {
                free(cfg->revision);
                cfg->revision = strdup(optarg);
            }
            break;
        case OPT_INCLUDE:
        case OPT_EXCLUDE:
            if (add_glob(opt == OPT_INCLUDE ? cfg->include : cfg->exclude, optarg) < 0) {
                add_problem(err, "--%s: too many globs or an empty one ('%s')",
                            opt == OPT_INCLUDE ? "include" : "exclude", optarg);
                code = code ? code : CKPT_EXIT_INVALID;
            }
            break;
        case OPT_MAX_RATE:
        case OPT_STAGING_MAX:
            if (parse_u64(optarg, opt == OPT_MAX_RATE ? &cfg->max_rate : &cfg->staging_max) < 0) {
                add_problem(err, "--%s: '%s' is not a number of bytes",
                            opt == OPT_MAX_RATE ? "max-rate" : "staging-max", optarg);
                code = code ? code : CKPT_EXIT_INVALID;
            }
            break;
        case OPT_MAX_TRANSFERS:
            if (parse_unsigned(optarg, 64, &cfg->max_transfers) != 0 || cfg->max_transfers == 0) {
                add_problem(err, "--max-transfers: '%s' is not a number from 1 to 64", optarg);
                code = code ? code : CKPT_EXIT_INVALID;
            }
            break;
        case OPT_PUBLIC:
            cfg->private_repo = false;
            break;
        case OPT_QUIET:
            if (parse_unsigned(optarg, 3600 * 1000, &cfg->quiet_ms) != 0) {
                add_problem(err, "--quiet-ms: '%s' is not a number of milliseconds (0-3600000)",
                            optarg);
                code = code ? code : CKPT_EXIT_INVALID;
            }
            break;
        case OPT_STAGING:
            staging = optarg;
            break;
        case OPT_DRAIN:
            if (parse_unsigned(optarg, 24 * 3600, &cfg->drain_timeout_s) != 0) {
                add_problem(err, "--drain-timeout: '%s' is not a number of seconds (0-86400)",
                            optarg);
                code = code ? code : CKPT_EXIT_INVALID;
            }
            break;
        case OPT_DRY:
            cfg->dry_run = true;
            break;
        case OPT_SOCKET:
            socket = optarg;
            break;
        case OPT_JOB:
            job = optarg;
            break;
        case OPT_LOG:
            if (log_parse_level(optarg, &cfg->log_level) != 0) {
                add_problem(err, "--log-level: unknown level '%s' (debug, info, warn, error)",
                            optarg);
                code = code ? code : CKPT_EXIT_INVALID;
            }
            break;
        case 'h':
            cfg->show_help = true;
            return 0;
        case 'V':
            cfg->show_version = true;
            return 0;
        case ':':
            add_problem(err, "option '%s' needs a value", argv[optind - 1]);
            return CKPT_EXIT_USAGE;
        default:
            add_problem(err, "unknown option '%s' (see --help)", argv[optind - 1]);
            return CKPT_EXIT_USAGE;
        }
    }
    if (optind < argc && strcmp(argv[optind], "run") == 0) {
        int first = optind + 1;
        if (first < argc && strcmp(argv[first], "--") == 0)
            first++;
        if (first >= argc) {
            add_problem(err, "run: missing the command to run (run -- CMD ARGS...)");
            return CKPT_EXIT_USAGE;
        }
        cfg->child_argv = argv + first;
    } else if (optind < argc) {
        add_problem(err, "unexpected argument '%s' (see --help)", argv[optind]);
        return CKPT_EXIT_USAGE;
    }
    if (watch == NULL) {
        add_problem(err, "missing --watch DIR (see --help)");
        return CKPT_EXIT_USAGE;
    }
    if (cfg->repo_id == NULL && !cfg->dry_run) {
        add_problem(err, "missing --repo NAMESPACE/NAME (see --help)");
        return CKPT_EXIT_USAGE;
    }
    if (code != 0)
        return code;

    if (endpoint == NULL)
        endpoint = getenv("HF_ENDPOINT");
    if (endpoint == NULL || endpoint[0] == '\0')
        endpoint = DEFAULT_ENDPOINT;
    if (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0) {
        add_problem(err, "invalid endpoint '%s': must start with http:// or https://", endpoint);
        code = CKPT_EXIT_INVALID;
    } else {
        size_t len = strlen(endpoint);
        while (len > 0 && endpoint[len - 1] == '/')
            len--;
        cfg->endpoint = strndup(endpoint, len);
    }

    find_token(cfg, err);
    if (err->kind == CKPT_ERR_INPUT && code == 0)
        code = CKPT_EXIT_INVALID;
    if (cfg->token == NULL && !cfg->dry_run) {
        add_problem(err, "no Hugging Face token: set HF_TOKEN or write one to $HF_HOME/token");
        code = CKPT_EXIT_INVALID;
    }

    check_watch_dir(cfg, watch, err, &code);
    if (cfg->watch_dir != NULL) {
        char path[PATH_MAX];
        if (staging == NULL)
            snprintf(path, sizeof(path), "%s/.ckptpush", cfg->watch_dir);
        else if (staging[0] != '/' && getcwd(path, sizeof(path)) != NULL)
            snprintf(path + strlen(path), sizeof(path) - strlen(path), "/%s", staging);
        else
            snprintf(path, sizeof(path), "%s", staging);
        cfg->staging_dir = strdup(path);
    }
    if (cfg->watch_dir != NULL) {
        char name[IPC_MAX_JOB + 1], path[PATH_MAX];
        ipc_proto_job_name(name, sizeof(name), job ? job : cfg->watch_dir);
        cfg->job = strdup(name);
        if (socket != NULL)
            cfg->socket_path = strdup(socket);
        else if (ipc_proto_default_path(path, sizeof(path), name) == 0)
            cfg->socket_path = strdup(path);
        else {
            add_problem(err, "the default control socket path is too long: set --socket");
            code = code ? code : CKPT_EXIT_INVALID;
        }
    }
    return code;
}

void config_release(struct config *cfg)
{
    if (cfg->token != NULL) {
        /* Do not leave the secret in freed heap memory (core dumps). */
        explicit_bzero(cfg->token, strlen(cfg->token));
        free(cfg->token);
    }
    free(cfg->token_source);
    free(cfg->watch_dir);
    free(cfg->staging_dir);
    free(cfg->repo_id);
    free(cfg->endpoint);
    free(cfg->job);
    free(cfg->revision);
    for (size_t i = 0; cfg->include[i] != NULL; i++)
        free(cfg->include[i]);
    for (size_t i = 0; cfg->exclude[i] != NULL; i++)
        free(cfg->exclude[i]);
    free(cfg->socket_path);
    memset(cfg, 0, sizeof(*cfg));
}
