/* runner.c - not a benchmark: the measuring wrapper bench.sh puts around each run.
 * It forks, sets LD_PRELOAD (only in the child, so the runner itself never runs on the
 * allocator under test), execs the benchmark, and on exit writes one line to OUTFILE:
 *   wall_s=<seconds, monotonic clock> maxrss_kb=<ru_maxrss of the child> status=<exit code,
 *   or 128+signal, or 124 on timeout>
 * Checks: none of the allocator; it kills the child after TIMEOUT seconds.
 *
 * usage: runner OUTFILE TIMEOUT PRELOAD|- prog [args...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile pid_t child;
static volatile sig_atomic_t timed_out;

static void on_alarm(int sig)
{
    (void)sig;
    timed_out = 1;
    if (child > 0) kill(child, SIGKILL);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: runner OUTFILE TIMEOUT PRELOAD|- prog [args...]\n");
        return 64;
    }
    const char *out = argv[1];
    unsigned timeout = (unsigned)atoi(argv[2]);
    const char *preload = argv[3];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 70;
    }
    if (pid == 0) {
        if (strcmp(preload, "-") != 0) setenv("LD_PRELOAD", preload, 1);
        else unsetenv("LD_PRELOAD");
        execv(argv[4], &argv[4]);
        perror(argv[4]);
        _exit(127);
    }
    child = pid;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    alarm(timeout);
    int st = 0;
    struct rusage ru;
    while (wait4(pid, &st, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("wait4");
            return 70;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    alarm(0);
    int status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (timed_out) status = 124;
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    FILE *f = fopen(out, "w");
    if (!f) {
        perror(out);
        return 70;
    }
    fprintf(f, "wall_s=%.6f maxrss_kb=%ld status=%d\n", wall, ru.ru_maxrss, status);
    fclose(f);
    return 0;
}
