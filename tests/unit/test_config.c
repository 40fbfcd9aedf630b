/* test_config.c - flags over environment, token discovery, and every validation error. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static char tmpdir[] = "/tmp/ckpt-test-config-XXXXXX";

static int load(struct config *cfg, struct ckpt_err *err, int argc, char **argv)
{
    return config_load(cfg, argc, argv, err);
}

static void test_flags_override_environment(void)
{
    char *argv[] = {"ckptpushd",           "--watch", tmpdir, "--repo", "alice/run", "--endpoint",
                    "http://127.0.0.1:9/", NULL};
    struct config cfg;
    struct ckpt_err err;

    setenv("HF_ENDPOINT", "http://env.invalid", 1);
    setenv("HF_TOKEN", "  hf_from_env\n", 1);
    CHECK_INT(load(&cfg, &err, 7, argv), 0);
    CHECK_STR(cfg.endpoint, "http://127.0.0.1:9");
    CHECK_STR(cfg.token, "hf_from_env");
    CHECK_STR(cfg.token_source, "HF_TOKEN");
    CHECK(cfg.private_repo);
    CHECK_INT(cfg.quiet_ms, 1000);
    config_release(&cfg);

    char *argv2[] = {"ckptpushd", "--watch", tmpdir, "--repo", "alice/run", NULL};
    CHECK_INT(load(&cfg, &err, 5, argv2), 0);
    CHECK_STR(cfg.endpoint, "http://env.invalid");
    config_release(&cfg);
    unsetenv("HF_ENDPOINT");
    unsetenv("HF_TOKEN");
}

static void test_token_file(void)
{
    char path[512], home[256];
    char *argv[] = {"ckptpushd", "--watch", tmpdir, "--repo", "alice/run", NULL};
    struct config cfg;
    struct ckpt_err err;
    FILE *f;

    snprintf(home, sizeof(home), "%s/hfhome", tmpdir);
    mkdir(home, 0700);
    snprintf(path, sizeof(path), "%s/token", home);
    f = fopen(path, "w");
    fputs("hf_from_file\r\n", f);
    fclose(f);
    setenv("HF_HOME", home, 1);
    CHECK_INT(load(&cfg, &err, 5, argv), 0);
    CHECK_STR(cfg.token, "hf_from_file");
    CHECK_STR(cfg.token_source, path);
    config_release(&cfg);

    /* A token that would split an HTTP header is refused, and never echoed. */
    f = fopen(path, "w");
    fputs("hf_bad token\n", f);
    fclose(f);
    CHECK_INT(load(&cfg, &err, 5, argv), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "control characters") != NULL);
    CHECK(strstr(cfg.problems, "hf_bad") == NULL);
    config_release(&cfg);
    unsetenv("HF_HOME");
    unlink(path);
    rmdir(home);
}

static void test_errors(void)
{
    struct config cfg;
    struct ckpt_err err;

    setenv("HF_TOKEN", "hf_x", 1);
    char *unknown[] = {"ckptpushd", "--frobnicate", NULL};
    CHECK_INT(load(&cfg, &err, 2, unknown), CKPT_EXIT_USAGE);
    CHECK(strstr(cfg.problems, "unknown option '--frobnicate'") != NULL);
    config_release(&cfg);

    char *norepo[] = {"ckptpushd", "--watch", tmpdir, NULL};
    CHECK_INT(load(&cfg, &err, 3, norepo), CKPT_EXIT_USAGE);
    CHECK(strstr(cfg.problems, "missing --repo") != NULL);
    config_release(&cfg);

    char *novalue[] = {"ckptpushd", "--watch", NULL};
    CHECK_INT(load(&cfg, &err, 2, novalue), CKPT_EXIT_USAGE);
    CHECK(strstr(cfg.problems, "needs a value") != NULL);
    config_release(&cfg);

    /* Every invalid value is reported at once. */
    char *bad[] = {"ckptpushd",  "--watch",    tmpdir,        "--repo", "a/b",
                   "--quiet-ms", "soon",       "--log-level", "loud",   "--strategy",
                   "sometimes",  "--endpoint", "ftp://x",     NULL};
    CHECK_INT(load(&cfg, &err, 13, bad), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "--quiet-ms: 'soon'") != NULL);
    CHECK(strstr(cfg.problems, "--log-level: unknown level 'loud'") != NULL);
    CHECK(strstr(cfg.problems, "unknown strategy 'sometimes'") != NULL);
    config_release(&cfg);

    char *badurl[] = {"ckptpushd", "--watch",    tmpdir,    "--repo",
                      "a/b",       "--endpoint", "ftp://x", NULL};
    CHECK_INT(load(&cfg, &err, 7, badurl), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "invalid endpoint 'ftp://x'") != NULL);
    config_release(&cfg);

    char *nodir[] = {"ckptpushd", "--watch", "/nonexistent/ckpt-dir", "--repo", "a/b", NULL};
    CHECK_INT(load(&cfg, &err, 5, nodir), CKPT_EXIT_WATCH);
    CHECK(strstr(cfg.problems, "cannot watch '/nonexistent/ckpt-dir'") != NULL);
    config_release(&cfg);

    /* --keep-last: a number, and only where checkpoint folders stay in the repo */
    char *keep[] = {"ckptpushd",  "--watch",         tmpdir,        "--repo", "a/b",
                    "--strategy", "all_checkpoints", "--keep-last", "2",      NULL};
    CHECK_INT(load(&cfg, &err, 9, keep), 0);
    CHECK_INT(cfg.keep_last, 2);
    config_release(&cfg);
    keep[8] = "two";
    CHECK_INT(load(&cfg, &err, 9, keep), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "--keep-last: 'two' is not a number from 0 to 100000") != NULL);
    config_release(&cfg);
    keep[6] = "every_save";
    keep[8] = "3";
    CHECK_INT(load(&cfg, &err, 9, keep), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "keep_last: 3 needs strategy all_checkpoints") != NULL);
    config_release(&cfg);
    setenv("CKPTPUSH_KEEP_LAST", "-1", 1);
    CHECK_INT(load(&cfg, &err, 7, keep), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "CKPTPUSH_KEEP_LAST: '-1' is not a number") != NULL);
    config_release(&cfg);
    unsetenv("CKPTPUSH_KEEP_LAST");

    unsetenv("HF_TOKEN");
    setenv("HOME", tmpdir, 1);
    char *notoken[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", NULL};
    CHECK_INT(load(&cfg, &err, 5, notoken), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "no Hugging Face token") != NULL);
    config_release(&cfg);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    fputs(text, f);
    fclose(f);
}

/* The file, then CKPTPUSH_* and HF_* variables, then flags: a later source wins. */
static void test_file_env_flag_precedence(void)
{
    char path[512], text[2048];
    struct config cfg;
    struct ckpt_err err;

    snprintf(path, sizeof(path), "%s/ckptpushd.jsonc", tmpdir);
    snprintf(text, sizeof(text),
             "// comments are allowed, a URL's // inside a string is not one\n"
             "{\n"
             "  \"watch\": \"%s\",\n"
             "  \"repo\": \"file/run\", /* block comment */\n"
             "  \"endpoint\": \"http://file.invalid//\",\n"
             "  \"quiet_ms\": 250,\n"
             "  \"drain_timeout_s\": 90,\n"
             "  \"private\": false,\n"
             "  \"log_level\": \"debug\",\n"
             "  \"log_format\": \"json\",\n"
             "  \"metrics_path\": \"/var/lib/prom/ckpt.prom\",\n"
             "  \"job\": \"run-7\"\n"
             "}\n",
             tmpdir);
    write_file(path, text);
    setenv("HF_TOKEN", "hf_secret_value", 1);

    char *argv[] = {"ckptpushd", "--config", path, NULL};
    CHECK_INT(load(&cfg, &err, 3, argv), 0);
    CHECK_STR(cfg.repo_id, "file/run");
    CHECK_STR(cfg.endpoint, "http://file.invalid");
    CHECK_INT(cfg.quiet_ms, 250);
    CHECK_INT(cfg.drain_timeout_s, 90);
    CHECK(!cfg.private_repo);
    CHECK_INT(cfg.log_level, LOG_DEBUG);
    CHECK_INT(cfg.log_format, LOG_FORMAT_JSON);
    CHECK_STR(cfg.metrics_path, "/var/lib/prom/ckpt.prom");
    CHECK_STR(cfg.job, "run-7");
    CHECK_STR(cfg.config_path, path);
    config_release(&cfg);

    /* The environment beats the file; HF_ENDPOINT is the endpoint's Hugging Face alias. */
    setenv("CKPTPUSH_CONFIG", path, 1);
    setenv("CKPTPUSH_REPO", "env/run", 1);
    setenv("CKPTPUSH_QUIET_MS", "500", 1);
    setenv("CKPTPUSH_PRIVATE", "true", 1);
    setenv("HF_ENDPOINT", "https://env.invalid", 1);
    char *argv2[] = {"ckptpushd", NULL};
    CHECK_INT(load(&cfg, &err, 1, argv2), 0);
    CHECK_STR(cfg.repo_id, "env/run");
    CHECK_STR(cfg.endpoint, "https://env.invalid");
    CHECK_INT(cfg.quiet_ms, 500);
    CHECK(cfg.private_repo);
    CHECK_INT(cfg.drain_timeout_s, 90);
    config_release(&cfg);

    /* CKPTPUSH_ENDPOINT beats HF_ENDPOINT; flags beat everything. */
    setenv("CKPTPUSH_ENDPOINT", "http://ckptpush.invalid", 1);
    char *argv3[] = {"ckptpushd", "--repo",       "flag/run", "--quiet-ms", "7",
                     "--public",  "--log-format", "kv",       NULL};
    CHECK_INT(load(&cfg, &err, 8, argv3), 0);
    CHECK_STR(cfg.repo_id, "flag/run");
    CHECK_STR(cfg.endpoint, "http://ckptpush.invalid");
    CHECK_INT(cfg.quiet_ms, 7);
    CHECK(!cfg.private_repo);
    CHECK_INT(cfg.log_format, LOG_FORMAT_KV);

    /* --check-config's output: effective values, the token redacted with its source. */
    char *json = config_to_json(&cfg);
    CHECK(json != NULL && strstr(json, "\"token\":\t\"hf_***\"") != NULL);
    CHECK(json != NULL && strstr(json, "\"token_source\":\t\"HF_TOKEN\"") != NULL);
    CHECK(json != NULL && strstr(json, "hf_secret_value") == NULL);
    CHECK(json != NULL && strstr(json, "\"repo\":\t\"flag/run\"") != NULL);
    free(json);
    config_release(&cfg);

    unsetenv("CKPTPUSH_CONFIG");
    unsetenv("CKPTPUSH_REPO");
    unsetenv("CKPTPUSH_QUIET_MS");
    unsetenv("CKPTPUSH_PRIVATE");
    unsetenv("CKPTPUSH_ENDPOINT");
    unsetenv("HF_ENDPOINT");
    unsetenv("HF_TOKEN");
    unlink(path);
}

/* Every invalid value in the file and the environment is reported at once, naming its key. */
static void test_file_errors(void)
{
    char path[512], text[2048];
    struct config cfg;
    struct ckpt_err err;
    char *argv[] = {"ckptpushd", "--config", path, NULL};

    setenv("HF_TOKEN", "hf_x", 1);
    snprintf(path, sizeof(path), "%s/bad.json", tmpdir);
    snprintf(text, sizeof(text),
             "{\"watch\": \"relative/dir\", \"repo\": \"no-slash\", \"quiet_ms\": \"soon\",\n"
             " \"drain_timeout_s\": 100000, \"private\": \"yes\", \"frobnicate\": 1,\n"
             " \"log_format\": \"xml\", \"job\": \"a/b\", \"socket\": \"/%0120d\",\n"
             " \"strategy\": \"sometimes\", \"endpoint\": \"ftp://x\", \"log_level\": 3}\n",
             0);
    write_file(path, text);
    setenv("CKPTPUSH_DRAIN_TIMEOUT_S", "-1", 1);
    CHECK_INT(load(&cfg, &err, 3, argv), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "bad.json': watch: 'relative/dir' must be an absolute path") !=
          NULL);
    CHECK(strstr(cfg.problems, "bad.json': repo: invalid repo id 'no-slash'") != NULL);
    CHECK(strstr(cfg.problems, "bad.json': quiet_ms: must be a whole number") != NULL);
    CHECK(strstr(cfg.problems, "bad.json': drain_timeout_s: '100000' is not a number of seconds") !=
          NULL);
    CHECK(strstr(cfg.problems, "bad.json': private: must be true or false") != NULL);
    CHECK(strstr(cfg.problems, "bad.json': unknown key 'frobnicate'") != NULL);
    CHECK(strstr(cfg.problems, "bad.json': log_format: unknown format 'xml'") != NULL);
    CHECK(strstr(cfg.problems, "bad.json': job: 'a/b' is not a job name") != NULL);
    CHECK(strstr(cfg.problems, "bad.json': socket: '/000") != NULL);
    CHECK(strstr(cfg.problems, "bad.json': strategy: unknown strategy 'sometimes'") != NULL);
    CHECK(strstr(cfg.problems, "bad.json': endpoint: invalid endpoint 'ftp://x'") != NULL);
    CHECK(strstr(cfg.problems, "bad.json': log_level: must be a string") != NULL);
    CHECK(strstr(cfg.problems, "CKPTPUSH_DRAIN_TIMEOUT_S: '-1' is not a number of seconds") !=
          NULL);
    /* watch was refused, so it is also missing */
    CHECK(strstr(cfg.problems, "missing --watch") != NULL);
    config_release(&cfg);
    unsetenv("CKPTPUSH_DRAIN_TIMEOUT_S");

    write_file(path, "{\n  \"repo\": \"a/b\",\n  \"quiet_ms\": 10,,\n}\n");
    CHECK_INT(load(&cfg, &err, 3, argv), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "bad.json': invalid JSON near line 3") != NULL);
    config_release(&cfg);

    write_file(path, "[1, 2]");
    CHECK_INT(load(&cfg, &err, 3, argv), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "must be one JSON object") != NULL);
    config_release(&cfg);
    unlink(path);

    CHECK_INT(load(&cfg, &err, 3, argv), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "cannot read config") != NULL &&
          strstr(cfg.problems, "No such file or directory") != NULL);
    config_release(&cfg);

    char *flags[] = {"ckptpushd", "--watch",      tmpdir, "--repo",         "a/b", "--job",
                     "",          "--log-format", "yaml", "--metrics-path", "",    NULL};
    CHECK_INT(load(&cfg, &err, 11, flags), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "--job: '' is not a job name") != NULL);
    CHECK(strstr(cfg.problems, "--log-format: unknown format 'yaml' (kv, json)") != NULL);
    CHECK(strstr(cfg.problems, "--metrics-path: '' is not a path") != NULL);
    config_release(&cfg);

    setenv("CKPTPUSH_DRY_RUN", "maybe", 1);
    char *ok[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", NULL};
    CHECK_INT(load(&cfg, &err, 5, ok), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "CKPTPUSH_DRY_RUN: 'maybe' is not a boolean") != NULL);
    config_release(&cfg);
    unsetenv("CKPTPUSH_DRY_RUN");
    unsetenv("HF_TOKEN");
}

/* HF_HUB_OFFLINE refuses to push; a dry run may still start. */
static void test_offline(void)
{
    struct config cfg;
    struct ckpt_err err;
    char *argv[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", NULL};
    char *dry[] = {"ckptpushd", "--watch", tmpdir, "--dry-run", NULL};

    setenv("HF_TOKEN", "hf_x", 1);
    setenv("HF_HUB_OFFLINE", "1", 1);
    CHECK_INT(load(&cfg, &err, 5, argv), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "HF_HUB_OFFLINE is set") != NULL);
    config_release(&cfg);
    CHECK_INT(load(&cfg, &err, 4, dry), 0);
    CHECK(cfg.offline && cfg.dry_run);
    config_release(&cfg);
    setenv("HF_HUB_OFFLINE", "0", 1);
    CHECK_INT(load(&cfg, &err, 5, argv), 0);
    CHECK(!cfg.offline);
    config_release(&cfg);
    setenv("HF_HUB_OFFLINE", "perhaps", 1);
    CHECK_INT(load(&cfg, &err, 5, argv), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "HF_HUB_OFFLINE: 'perhaps' is not a boolean") != NULL);
    config_release(&cfg);
    unsetenv("HF_HUB_OFFLINE");
    unsetenv("HF_TOKEN");
}

/* systemd's LoadCredential= comes after HF_TOKEN and before token files; HF_TOKEN_PATH and the
 * token_path key name a file. */
static void test_credentials_and_token_path(void)
{
    char creds[512], cred[600], file[512];
    struct config cfg;
    struct ckpt_err err;
    char *argv[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", NULL};

    snprintf(creds, sizeof(creds), "%s/creds", tmpdir);
    mkdir(creds, 0700);
    snprintf(cred, sizeof(cred), "%s/hf_token", creds);
    write_file(cred, "hf_from_credential\n");
    snprintf(file, sizeof(file), "%s/tokenfile", tmpdir);
    write_file(file, "hf_from_token_path\n");

    setenv("CREDENTIALS_DIRECTORY", creds, 1);
    setenv("HF_TOKEN_PATH", file, 1);
    CHECK_INT(load(&cfg, &err, 5, argv), 0);
    CHECK_STR(cfg.token, "hf_from_credential");
    CHECK_STR(cfg.token_source, cred);
    config_release(&cfg);

    setenv("HF_TOKEN", "hf_env", 1);
    CHECK_INT(load(&cfg, &err, 5, argv), 0);
    CHECK_STR(cfg.token_source, "HF_TOKEN");
    config_release(&cfg);
    unsetenv("HF_TOKEN");

    unlink(cred);
    CHECK_INT(load(&cfg, &err, 5, argv), 0);
    CHECK_STR(cfg.token, "hf_from_token_path");
    CHECK_STR(cfg.token_source, file);
    config_release(&cfg);
    unsetenv("HF_TOKEN_PATH");

    char *flag[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", "--token-path", file, NULL};
    CHECK_INT(load(&cfg, &err, 7, flag), 0);
    CHECK_STR(cfg.token, "hf_from_token_path");
    config_release(&cfg);

    unsetenv("CREDENTIALS_DIRECTORY");
    unlink(file);
    rmdir(creds);
}

static void test_layout_and_rules(void)
{
    char path[512], text[1024];
    struct config cfg;
    struct ckpt_err err;

    setenv("HF_TOKEN", "hf_x", 1);
    snprintf(path, sizeof(path), "%s/rules.json", tmpdir);
    snprintf(text, sizeof(text),
             "{\"watch\": \"%s\", \"repo\": \"a/b\", \"rules\": "
             "[\"exports/snap-*:DONE:250\", \"evals/*\"]}",
             tmpdir);
    write_file(path, text);
    char *argv[] = {"ckptpushd", "--config",       path, "--layout", "torch-dcp",
                    "--rule",    "dumps/*:.ready", NULL};
    CHECK_INT(config_load(&cfg, 7, argv, &err), 0);
    CHECK_STR(cfg.layout, "torch-dcp");
    CHECK_INT(cfg.rule_count, 3); /* rules add up across sources */
    CHECK_STR(cfg.rules[0].glob, "exports/snap-*");
    CHECK_STR(cfg.rules[0].marker, "DONE");
    CHECK_INT(cfg.rules[0].quiet_ms, 250);
    CHECK_STR(cfg.rules[1].glob, "evals/*");
    CHECK(cfg.rules[1].marker == NULL);
    CHECK_INT(cfg.rules[1].quiet_ms, -1);
    CHECK_STR(cfg.rules[2].marker, ".ready");
    config_release(&cfg);

    char *bad[] = {"ckptpushd", "--watch", tmpdir,   "--repo",     "a/b",
                   "--layout",  "pickled", "--rule", "x/*:a/b:zz", NULL};
    CHECK_INT(config_load(&cfg, 9, bad, &err), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "unknown layout 'pickled'") != NULL);
    CHECK(strstr(cfg.problems, "rule 'x/*:a/b:zz' must be GLOB[:MARKER[:QUIET_MS]]") != NULL);
    config_release(&cfg);
    unlink(path);
    unsetenv("HF_TOKEN");
}

/* Several nodes: the cluster's variables, flags over them, the secret, and every problem named. */
static void test_nodes(void)
{
    struct config cfg;
    struct ckpt_err err;
    char secret_file[600];
    const char *vars[] = {"SLURM_NNODES", "SLURM_NODEID", "NNODES",
                          "NODE_RANK",    "MASTER_ADDR",  "CKPTPUSH_JOB_SECRET"};

    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    setenv("HF_TOKEN", "hf_nodes", 1);

    /* one node: nothing else needed */
    char *one[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", "--nodes", "1", NULL};
    CHECK_INT(load(&cfg, &err, 7, one), 0);
    CHECK_INT(cfg.nodes, 1);
    config_release(&cfg);

    /* SLURM's variables, MASTER_ADDR, the secret from the environment */
    setenv("SLURM_NNODES", "4", 1);
    setenv("SLURM_NODEID", "3", 1);
    setenv("NODE_RANK", "1", 1); /* SLURM's wins */
    setenv("MASTER_ADDR", "node001", 1);
    setenv("CKPTPUSH_JOB_SECRET", "0123456789abcdef-secret\n", 1);
    char *aut[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", "--nodes", "auto", NULL};
    CHECK_INT(load(&cfg, &err, 7, aut), 0);
    CHECK_INT(cfg.nodes, 4);
    CHECK_INT(cfg.node_rank, 3);
    CHECK_STR(cfg.coord_host, "node001");
    CHECK_INT(cfg.coord_port, 29555);
    CHECK_INT(cfg.job_secret_len, 23); /* the newline dropped */
    char *json = config_to_json(&cfg);
    CHECK(json != NULL && strstr(json, "0123456789abcdef") == NULL);
    CHECK(json != NULL && strstr(json, "\"node001:29555\"") != NULL);
    free(json);
    config_release(&cfg);

    /* flags over the environment; a secret file; an IPv6 coordinator */
    snprintf(secret_file, sizeof(secret_file), "%s/job.secret", tmpdir);
    write_file(secret_file, "from-a-file-on-shared-storage");
    char *flags[] = {
        "ckptpushd", "--watch",     tmpdir, "--repo",        "a/b",        "--nodes",
        "3",         "--node-rank", "0",    "--coordinator", "[::1]:4000", "--job-secret-file",
        secret_file, NULL};
    CHECK_INT(load(&cfg, &err, 13, flags), 0);
    CHECK_INT(cfg.nodes, 3);
    CHECK_INT(cfg.node_rank, 0);
    CHECK_STR(cfg.coord_host, "::1");
    CHECK_INT(cfg.coord_port, 4000);
    CHECK_INT(cfg.job_secret_len, strlen("from-a-file-on-shared-storage"));
    config_release(&cfg);
    unlink(secret_file);

    /* problems, each named: rank out of range, a bad address, a short secret */
    setenv("CKPTPUSH_JOB_SECRET", "short", 1);
    char *bad[] = {"ckptpushd", "--watch",     tmpdir, "--repo",        "a/b",        "--nodes",
                   "2",         "--node-rank", "2",    "--coordinator", "host:99999", NULL};
    CHECK_INT(load(&cfg, &err, 11, bad), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "--coordinator: 'host:99999'") != NULL);
    CHECK(strstr(cfg.problems, "node_rank: 2 is not below nodes (2)") != NULL);
    CHECK(strstr(cfg.problems, "CKPTPUSH_JOB_SECRET: the job secret must hold 16") != NULL);
    CHECK(strstr(cfg.problems, "short") == NULL); /* the secret is never echoed */
    config_release(&cfg);
    char *v6[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", "--coordinator", "::1:80", NULL};
    CHECK_INT(load(&cfg, &err, 7, v6), CKPT_EXIT_INVALID);
    config_release(&cfg);
    char *zero[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", "--nodes", "0", NULL};
    CHECK_INT(load(&cfg, &err, 7, zero), CKPT_EXIT_INVALID);
    config_release(&cfg);

    /* no rank, no address, no secret: usage, each said */
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    char *bare[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", "--nodes", "2", NULL};
    CHECK_INT(load(&cfg, &err, 7, bare), CKPT_EXIT_USAGE);
    CHECK(strstr(cfg.problems, "node_rank: several nodes need") != NULL);
    CHECK(strstr(cfg.problems, "coordinator: several nodes need") != NULL);
    CHECK(strstr(cfg.problems, "job's shared secret") != NULL);
    config_release(&cfg);
    CHECK_INT(load(&cfg, &err, 7, aut), CKPT_EXIT_USAGE); /* auto with no SLURM_NNODES/NNODES */
    config_release(&cfg);
    unsetenv("HF_TOKEN");
}

/* --transfer: auto by default; file < CKPTPUSH_TRANSFER < flag; an unknown mode names the known. */
static void test_bucket(void)
{
    struct config cfg;
    struct ckpt_err err;

    setenv("HF_TOKEN", "hf_secret_value", 1);
    /* a bucket alone is a target; --keep-last applies to it with any strategy */
    char *only[] = {"ckptpushd",   "--watch",     tmpdir, "--bucket",
                    "alice/ckpts", "--keep-last", "2",    NULL};
    CHECK_INT(load(&cfg, &err, 7, only), 0);
    CHECK_STR(cfg.bucket_id, "alice/ckpts");
    CHECK(cfg.repo_id == NULL);
    CHECK_INT(cfg.keep_last, 2);
    char *json = config_to_json(&cfg);
    CHECK(json != NULL && strstr(json, "\"bucket\":\t\"alice/ckpts\"") != NULL);
    free(json);
    config_release(&cfg);

    setenv("CKPTPUSH_BUCKET", "org/b", 1);
    char *env[] = {"ckptpushd", "--watch", tmpdir, "--repo", "alice/run", NULL};
    CHECK_INT(load(&cfg, &err, 5, env), 0);
    CHECK_STR(cfg.bucket_id, "org/b");
    CHECK_STR(cfg.repo_id, "alice/run");
    config_release(&cfg);
    unsetenv("CKPTPUSH_BUCKET");

    /* validated like a repo id, named as a bucket */
    const char *bad[] = {"alice", "a/b/c", "a/-b", "a/b..c"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *argv[] = {"ckptpushd", "--watch", tmpdir, "--bucket", (char *)bad[i], NULL};
        char want[64];
        CHECK(load(&cfg, &err, 5, argv) != 0);
        snprintf(want, sizeof(want), "invalid bucket id '%s'", bad[i]);
        if (strstr(cfg.problems, want) == NULL) {
            fprintf(stderr, "bucket '%s': problems are '%s'\n", bad[i], cfg.problems);
            test_failures++;
        }
        config_release(&cfg);
    }

    /* "" is no bucket, as in the example file */
    char *empty[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", "--bucket", "", NULL};
    CHECK_INT(load(&cfg, &err, 7, empty), 0);
    CHECK(cfg.bucket_id == NULL);
    config_release(&cfg);

    /* every bucket file is a Xet file */
    char *lfs[] = {"ckptpushd", "--watch", tmpdir, "--bucket", "a/b", "--transfer", "lfs", NULL};
    CHECK_INT(load(&cfg, &err, 7, lfs), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "bucket: 'a/b' needs Xet uploads") != NULL);
    config_release(&cfg);

    /* neither target */
    char *none[] = {"ckptpushd", "--watch", tmpdir, NULL};
    CHECK_INT(load(&cfg, &err, 3, none), CKPT_EXIT_USAGE);
    CHECK(strstr(cfg.problems, "or --bucket NAMESPACE/NAME") != NULL);
    config_release(&cfg);
    unsetenv("HF_TOKEN");
}

static void test_transfer(void)
{
    char path[512], text[1024];
    struct config cfg;
    struct ckpt_err err;

    setenv("HF_TOKEN", "hf_secret_value", 1);
    char *plain[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", NULL};
    CHECK_INT(load(&cfg, &err, 5, plain), 0);
    CHECK_INT(cfg.transfer, TRANSFER_AUTO);
    config_release(&cfg);

    snprintf(path, sizeof(path), "%s/transfer.json", tmpdir);
    snprintf(text, sizeof(text), "{\"watch\": \"%s\", \"repo\": \"a/b\", \"transfer\": \"lfs\"}\n",
             tmpdir);
    write_file(path, text);
    char *file[] = {"ckptpushd", "--config", path, NULL};
    CHECK_INT(load(&cfg, &err, 3, file), 0);
    CHECK_INT(cfg.transfer, TRANSFER_LFS);
    char *json = config_to_json(&cfg);
    CHECK(json != NULL && strstr(json, "\"transfer\":\t\"lfs\"") != NULL);
    free(json);
    config_release(&cfg);

    setenv("CKPTPUSH_TRANSFER", "xet", 1);
    CHECK_INT(load(&cfg, &err, 3, file), 0);
    CHECK_INT(cfg.transfer, TRANSFER_XET);
    config_release(&cfg);

    char *flag[] = {"ckptpushd", "--config", path, "--transfer", "auto", NULL};
    CHECK_INT(load(&cfg, &err, 5, flag), 0);
    CHECK_INT(cfg.transfer, TRANSFER_AUTO);
    config_release(&cfg);

    setenv("CKPTPUSH_TRANSFER", "s3", 1);
    CHECK_INT(load(&cfg, &err, 3, file), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems,
                 "CKPTPUSH_TRANSFER: unknown transfer 's3' (known: auto, xet, lfs)") != NULL);
    config_release(&cfg);
    unsetenv("CKPTPUSH_TRANSFER");

    char *bad[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", "--transfer", "XET", NULL};
    CHECK_INT(load(&cfg, &err, 7, bad), CKPT_EXIT_INVALID);
    CHECK(strstr(cfg.problems, "--transfer: unknown transfer 'XET'") != NULL);
    config_release(&cfg);
    unsetenv("HF_TOKEN");
    unlink(path);
}

int main(void)
{
    if (mkdtemp(tmpdir) == NULL)
        return 1;
    unsetenv("HF_TOKEN");
    unsetenv("HUGGING_FACE_HUB_TOKEN");
    unsetenv("HF_TOKEN_PATH");
    unsetenv("HF_HOME");
    unsetenv("XDG_CACHE_HOME");
    test_flags_override_environment();
    test_token_file();
    test_errors();
    test_file_env_flag_precedence();
    test_file_errors();
    test_offline();
    test_credentials_and_token_path();
    test_layout_and_rules();
    test_nodes();
    test_transfer();
    test_bucket();
    rmdir(tmpdir);
    return check_report("test_config");
}
