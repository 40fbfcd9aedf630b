/* config.h - the daemon's effective configuration: command-line flags over the environment
 * (Hugging Face conventions: HF_TOKEN, HF_TOKEN_PATH, HF_HOME, HF_ENDPOINT), validated all at once
 * before anything starts. Owns the token: it is only ever handed to the hub module. Runs at
 * startup on the main thread, before the loop.
 */
#ifndef CKPT_CONFIG_H
#define CKPT_CONFIG_H

#include <stdbool.h>

#include "err.h"
#include "log.h"

/* Exit codes of ckptpushd, documented in README. */
enum ckpt_exit {
    CKPT_EXIT_OK = 0,
    CKPT_EXIT_FAILURE = 1,             /* a push failed or an internal error */
    CKPT_EXIT_USAGE = 2,               /* unknown flag, missing argument */
    CKPT_EXIT_INVALID = 3,             /* a value is invalid (repo id, number, URL, token format) */
    CKPT_EXIT_WATCH = 4,               /* the watched directory cannot be used */
    CKPT_EXIT_AUTH = 5,                /* the hub rejected the token */
    CKPT_EXIT_UNREACHABLE = 6,         /* the hub cannot be reached */
    CKPT_EXIT_WRAPPED_PUSH_FAILED = 7, /* run mode: the command succeeded, its push did not */
};

enum config_strategy {
    STRATEGY_EVERY_SAVE,
    STRATEGY_CHECKPOINT,      /* + the whole latest checkpoint under last-checkpoint/ */
    STRATEGY_ALL_CHECKPOINTS, /* + each checkpoint under its own folder name */
    STRATEGY_END,             /* nothing during training, everything at the end */
};

#define CONFIG_GLOBS_MAX 64

struct config {
    char *watch_dir;    /* absolute, resolved */
    char *staging_dir;  /* absolute; default <watch_dir>/.ckptpush */
    char *repo_id;      /* "namespace/name" */
    char *endpoint;     /* no trailing slash */
    char *token;        /* secret: never logged */
    char *token_source; /* where it came from, for messages: "HF_TOKEN", a file path */
    char *job;          /* names the control socket; default: the watched dir's basename */
    char *socket_path;  /* the control socket; default from ipc_proto_default_path */
    enum config_strategy strategy;
    bool private_repo;
    bool dry_run;
    unsigned quiet_ms;
    unsigned drain_timeout_s;
    enum log_level log_level;
    bool show_help;
    bool show_version;
    /* Upload path (issue 4). */
    char *revision;                      /* branch for intermediate commits; NULL: main */
    char *include[CONFIG_GLOBS_MAX + 1]; /* fnmatch globs on repo paths, NULL-terminated */
    char *exclude[CONFIG_GLOBS_MAX + 1];
    unsigned long long max_rate;    /* upload bytes per second, all transfers; 0: none */
    unsigned max_transfers;         /* PUTs in flight (parts or files) */
    unsigned long long staging_max; /* bytes of copied (not linked) pins; 0: no limit */
    /* `ckptpushd [options] run -- CMD ARGS...`: the training command, NULL-terminated; borrowed
     * from argv. NULL when not wrapping a command. */
    char **child_argv;
};

/* Fills cfg from argv and the environment. On failure returns the exit code to use (usage or
 * invalid) and err says every problem found, one per line. */
int config_load(struct config *cfg, int argc, char **argv, struct ckpt_err *err);
void config_release(struct config *cfg);
const char *config_strategy_name(enum config_strategy strategy);
void config_print_usage(void);

#endif
