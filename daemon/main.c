/* main.c - ckptpushd's entry point: configuration, the loop, the exit code. */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <uv.h>

#include "config.h"
#include "daemon.h"
#include "log.h"

int main(int argc, char **argv)
{
    struct config cfg;
    struct ckpt_err err;
    struct daemon *daemon = NULL;
    uv_loop_t loop;
    int code;

    /* Big buffers (the 16 MiB xorb of a Xet push, read buffers) are allocated and freed on the
     * pool threads, each with its own malloc arena. By default glibc raises its mmap threshold
     * to the size of the first big buffer freed, after which each arena keeps one such buffer
     * for good: peak RSS grew by 16 MiB per pool thread over successive Xet pushes. A fixed
     * threshold keeps every buffer of 1 MiB or more mmapped, returned to the kernel when freed. */
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);

    code = config_load(&cfg, argc, argv, &err);
    if (cfg.show_help) {
        config_print_usage();
        config_release(&cfg);
        return CKPT_EXIT_OK;
    }
    if (cfg.show_version) {
        printf("ckptpushd %s\n", CKPT_VERSION);
        config_release(&cfg);
        return CKPT_EXIT_OK;
    }
    if (code != 0) {
        /* One line per problem, each naming what is wrong; all of them before anything starts. */
        for (char *line = cfg.problems, *next; line != NULL; line = next) {
            next = strchr(line, '\n');
            if (next != NULL)
                *next++ = '\0';
            fprintf(stderr, "ckptpushd: %s\n", line);
        }
        config_release(&cfg);
        return code;
    }
    if (cfg.check_only) {
        char *text = config_to_json(&cfg);
        code = text != NULL && fputs(text, stdout) >= 0 ? CKPT_EXIT_OK : CKPT_EXIT_FAILURE;
        free(text);
        config_release(&cfg);
        return code;
    }
    log_set_level(cfg.log_level);
    log_set_format(cfg.log_format);
    log_set_journal(log_fd_is_journal(2));
    /* A control client that hangs up mid-reply must not kill the daemon: EPIPE is handled. */
    signal(SIGPIPE, SIG_IGN);

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fputs("ckptpushd: cannot initialise libcurl\n", stderr);
        config_release(&cfg);
        return CKPT_EXIT_FAILURE;
    }
    uv_loop_init(&loop);
    if (daemon_start(&daemon, &loop, &cfg, &code, &err) < 0)
        fprintf(stderr, "ckptpushd: %s\n", err.msg);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (code == CKPT_EXIT_OK && daemon != NULL)
        code = daemon_exit_code(daemon);
    daemon_free(daemon);
    if (uv_loop_close(&loop) != 0)
        log_warn("loop-not-empty", "reason='handles left open at exit'");
    curl_global_cleanup();
    config_release(&cfg);
    return code;
}
