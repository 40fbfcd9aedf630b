/* replay.c - runs one fuzz target's entry point on files, without libFuzzer: each file named, or
 * each regular file in each directory named (sorted). Linked with every fuzz target as
 * replay_<target>, it is the regression test run by ctest in every build, and reproduces a crash
 * under a debugger: `replay_fuzz_hub crash-1234`. Single-threaded.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

#define REPLAY_MAX_INPUT (16 * 1024 * 1024)

static int run_file(const char *path)
{
    struct stat st;
    uint8_t *buf;
    size_t got;
    FILE *f = fopen(path, "rbe");

    if (f == NULL || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) ||
        st.st_size > REPLAY_MAX_INPUT) {
        fprintf(stderr, "replay: cannot use '%s': %s\n", path,
                f == NULL ? strerror(errno) : "not a regular file of at most 16 MiB");
        if (f != NULL)
            fclose(f);
        return -1;
    }
    /* An exact-size heap copy, so ASan sees reads past the end as libFuzzer would. */
    buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    if (buf == NULL) {
        fclose(f);
        return -1;
    }
    got = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, got);
    free(buf);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, unsigned *count)
{
    char **names = NULL, path[4096];
    size_t n = 0, cap = 0;
    struct dirent *e;
    DIR *d = opendir(dir);
    int r = 0;

    if (d == NULL) {
        fprintf(stderr, "replay: cannot open '%s': %s\n", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            char **grown = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*names));
            if (grown == NULL)
                break;
            names = grown;
        }
        if ((names[n] = strdup(e->d_name)) != NULL)
            n++;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), by_name);
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (r == 0 && run_file(path) < 0)
            r = -1;
        else
            (*count)++;
        free(names[i]);
    }
    free(names);
    return r;
}

int main(int argc, char **argv)
{
    unsigned count = 0;
    struct stat st;

    if (LLVMFuzzerInitialize != NULL)
        LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            if (run_dir(argv[i], &count) < 0)
                return 1;
        } else if (stat(argv[i], &st) != 0 && errno == ENOENT) {
            continue; /* a target without regressions yet has no directory */
        } else if (run_file(argv[i]) < 0) {
            return 1;
        } else {
            count++;
        }
    }
    printf("replay: %u inputs ran without a crash\n", count);
    return count > 0 ? 0 : 1;
}
