/* test_config.c - flags over environment, token discovery, and every validation error. */
#include "config.h"

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
    CHECK(strstr(err.msg, "control characters") != NULL);
    CHECK(strstr(err.msg, "hf_bad") == NULL);
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
    CHECK(strstr(err.msg, "unknown option '--frobnicate'") != NULL);
    config_release(&cfg);

    char *norepo[] = {"ckptpushd", "--watch", tmpdir, NULL};
    CHECK_INT(load(&cfg, &err, 3, norepo), CKPT_EXIT_USAGE);
    CHECK(strstr(err.msg, "missing --repo") != NULL);
    config_release(&cfg);

    char *novalue[] = {"ckptpushd", "--watch", NULL};
    CHECK_INT(load(&cfg, &err, 2, novalue), CKPT_EXIT_USAGE);
    CHECK(strstr(err.msg, "needs a value") != NULL);
    config_release(&cfg);

    /* Every invalid value is reported at once. */
    char *bad[] = {"ckptpushd",  "--watch",    tmpdir,        "--repo", "a/b",
                   "--quiet-ms", "soon",       "--log-level", "loud",   "--strategy",
                   "sometimes",  "--endpoint", "ftp://x",     NULL};
    CHECK_INT(load(&cfg, &err, 13, bad), CKPT_EXIT_INVALID);
    CHECK(strstr(err.msg, "--quiet-ms: 'soon'") != NULL);
    CHECK(strstr(err.msg, "--log-level: unknown level 'loud'") != NULL);
    CHECK(strstr(err.msg, "unknown strategy 'sometimes'") != NULL);
    config_release(&cfg);

    char *badurl[] = {"ckptpushd", "--watch",    tmpdir,    "--repo",
                      "a/b",       "--endpoint", "ftp://x", NULL};
    CHECK_INT(load(&cfg, &err, 7, badurl), CKPT_EXIT_INVALID);
    CHECK(strstr(err.msg, "invalid endpoint 'ftp://x'") != NULL);
    config_release(&cfg);

    char *nodir[] = {"ckptpushd", "--watch", "/nonexistent/ckpt-dir", "--repo", "a/b", NULL};
    CHECK_INT(load(&cfg, &err, 5, nodir), CKPT_EXIT_WATCH);
    CHECK(strstr(err.msg, "cannot watch '/nonexistent/ckpt-dir'") != NULL);
    config_release(&cfg);

    unsetenv("HF_TOKEN");
    setenv("HOME", tmpdir, 1);
    char *notoken[] = {"ckptpushd", "--watch", tmpdir, "--repo", "a/b", NULL};
    CHECK_INT(load(&cfg, &err, 5, notoken), CKPT_EXIT_INVALID);
    CHECK(strstr(err.msg, "no Hugging Face token") != NULL);
    config_release(&cfg);
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
    rmdir(tmpdir);
    return check_report("test_config");
}
