/* config.h - the daemon's effective configuration: command-line flags over the environment over
 * a JSON configuration file (--config, $CKPTPUSH_CONFIG), with the Hugging Face conventions for
 * the environment (HF_TOKEN, HF_TOKEN_PATH, HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE), validated all
 * at once before anything starts. Owns the token: it is only ever handed to the hub module. Runs
 * at startup on the main thread, before the loop.
 */
#ifndef CKPT_CONFIG_H
#define CKPT_CONFIG_H

#include <stdbool.h>

#include "err.h"
#include "log.h"

/* Exit codes of ckptpushd, documented in README. */
enum ckpt_exit {
    CKPT_EXIT_OK = 0,
    CKPT_EXIT_FAILURE = 1,     /* a push failed or an internal error */
    CKPT_EXIT_USAGE = 2,       /* unknown flag, missing argument or required setting */
    CKPT_EXIT_INVALID = 3,     /* a value is invalid (config file, repo id, number, URL, token) */
    CKPT_EXIT_WATCH = 4,       /* the watched directory cannot be used */
    CKPT_EXIT_AUTH = 5,        /* the hub rejected the token */
    CKPT_EXIT_UNREACHABLE = 6, /* the hub cannot be reached */
    CKPT_EXIT_WRAPPED_PUSH_FAILED = 7, /* run mode: the command succeeded, its push did not */
};

#define CONFIG_MAX_RULES 32

enum config_strategy {
    STRATEGY_EVERY_SAVE,
    STRATEGY_CHECKPOINT,      /* + the whole latest checkpoint under last-checkpoint/ */
    STRATEGY_ALL_CHECKPOINTS, /* + each checkpoint under its own folder name */
    STRATEGY_END,             /* nothing during training, everything at the end */
};

/* How LFS files travel (issue 13): Xet when the Hub offers it, Xet or fail, or plain LFS. */
enum config_transfer {
    TRANSFER_AUTO,
    TRANSFER_XET,
    TRANSFER_LFS,
};

#define CONFIG_GLOBS_MAX 64

/* The largest configuration file read. */
#define CONFIG_FILE_MAX (1024 * 1024)
#define CONFIG_PROBLEMS_MAX 8192

struct config {
    char *watch_dir;    /* absolute, resolved */
    char *staging_dir;  /* absolute; default <watch_dir>/.ckptpush */
    char *repo_id;      /* "namespace/name" */
    char *bucket_id;    /* Storage Bucket "namespace/name" for intermediate checkpoints; NULL */
    char *endpoint;     /* no trailing slash */
    char *token;        /* secret: never logged */
    char *token_source; /* where it came from, for messages: "HF_TOKEN", a file path */
    char *token_path;   /* token file named by the config (HF_TOKEN_PATH, token_path), or NULL */
    char *config_path;  /* the configuration file read, or NULL */
    char *metrics_path; /* Prometheus textfile, or NULL */
    char *socket_path;  /* the control socket; default from ipc_proto_default_path */
    char *job;          /* names the control socket; default: the watched dir's basename */
    char *layout;       /* force one detection layout, or NULL: auto-detect */
    char *card_fields_json; /* the file's "card" object (license, datasets, ...), or NULL */
    /* User rules, `GLOB[:MARKER[:QUIET_MS]]`, from every source (they add up). */
    struct config_rule {
        char *glob;
        char *marker;  /* NULL: none */
        long quiet_ms; /* -1: the global quiet period */
    } rules[CONFIG_MAX_RULES];
    size_t rule_count;
    /* What the configuration was loaded from, for SIGHUP: argv is borrowed from main. */
    int argc;
    char **argv;
    enum config_strategy strategy;
    /* Upload path (issue 4). */
    char *revision;                      /* branch for intermediate commits; NULL: main */
    char *include[CONFIG_GLOBS_MAX + 1]; /* fnmatch globs on repo paths, NULL-terminated */
    char *exclude[CONFIG_GLOBS_MAX + 1];
    unsigned long long max_rate; /* upload bytes per second, all transfers; 0: none */
    unsigned max_transfers;      /* PUTs in flight (parts or files, or xorbs) */
    enum config_transfer transfer;
    unsigned nice;             /* niceness of the daemon's threads; 0: unchanged */
    unsigned commits_per_hour; /* commit budget per repo; later saves coalesce */
    /* Remote retention: checkpoint folders kept, newest first (all_checkpoints in the repo, or
     * checkpoint prefixes in the bucket); 0: all. */
    unsigned keep_last;
    unsigned long long staging_max; /* copies at seal start within it (queue.c); 0: none */
    /* Several nodes (README "Several nodes"): nodes > 1 turns it on. */
    long nodes;                /* 0 or 1: one node, this daemon commits */
    bool nodes_auto;           /* "auto": SLURM_NNODES, else NNODES */
    long node_rank;            /* -1: SLURM_NODEID, else NODE_RANK */
    char *coordinator;         /* HOST[:PORT] as given; NULL: $MASTER_ADDR */
    char *coord_host;          /* resolved at load when nodes > 1 */
    int coord_port;            /* COORD_DEFAULT_PORT unless given */
    unsigned coord_wait_s;     /* missing nodes are logged after this long, and again */
    char *job_secret_file;     /* NULL: $CKPTPUSH_JOB_SECRET */
    unsigned char *job_secret; /* secret: never logged */
    size_t job_secret_len;
    enum log_format log_format;
    bool private_repo;
    bool dry_run;
    bool offline; /* HF_HUB_OFFLINE: only a dry run may start */
    unsigned quiet_ms;
    unsigned drain_timeout_s;
    enum log_level log_level;
    bool show_help;
    bool show_version;
    bool check_only; /* --check-config */
    /* `ckptpushd [options] run -- CMD ARGS...`: the training command, NULL-terminated; borrowed
     * from argv. NULL when not wrapping a command. */
    char **child_argv;
    /* Every problem config_load found, one a line (err->msg holds as many as fit); kept by
     * config_release so that it can be printed after. */
    char problems[CONFIG_PROBLEMS_MAX];
};

/* Fills cfg from argv, the environment and the configuration file. On failure returns the exit
 * code to use (usage or invalid or watch) and cfg->problems says every problem found, one per
 * line, each naming the flag, variable or file key at fault (err->msg: as many as fit). */
int config_load(struct config *cfg, int argc, char **argv, struct ckpt_err *err);
void config_release(struct config *cfg);
/* Applies the text of a configuration file (JSON, comments allowed; blanked in place) as
 * config_load does for --config, path naming it in problems. Returns 0 or the exit code; each
 * problem is added to cfg->problems. Pure: the setters only check and copy. */
int config_apply_text(struct config *cfg, char *text, const char *path);
const char *config_strategy_name(enum config_strategy strategy);
const char *config_transfer_name(enum config_transfer transfer);
void config_print_usage(void);
/* The effective configuration as one JSON object (token redacted to "hf_***" with its source),
 * newline-terminated; free() the result. NULL when out of memory. */
char *config_to_json(const struct config *cfg);

#endif
