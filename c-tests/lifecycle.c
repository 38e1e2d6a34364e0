/* lifecycle.c - the allocator works at every stage of a process's life.
 *
 * A child process allocates in a constructor, in main, in a second thread that ends the
 * process with exit() while main is blocked, in atexit handlers (which also free blocks made
 * in the constructor) and in a destructor (.fini_array), verifying contents each time. Each
 * stage writes a letter to a pipe; the parent requires the child to exit 0 and the letters
 * "CMTAD" (constructor, main, thread, atexit, destructor) in that order.
 */
#include "check.h"
#include <pthread.h>
#include <sys/wait.h>

static int report_fd = -1;
static unsigned char *from_ctor[64];

static void mark(char c)
{
    if (report_fd >= 0)
        CHECK(write(report_fd, &c, 1) == 1, "write to pipe");
}

static void churn(const char *stage)
{
    void *p[200];
    for (int i = 0; i < 200; i++) {
        size_t n = (size_t)(i * 97 % 5000) + 1 + (i % 10 == 0 ? 300000 : 0);
        p[i] = malloc(n);
        CHECK(p[i] != NULL, "%s: malloc(%zu)", stage, n);
        memset(p[i], i, n);
        CHECK(((unsigned char *)p[i])[n - 1] == (unsigned char)i, "%s: contents", stage);
    }
    for (int i = 0; i < 200; i++)
        free(p[i]);
}

__attribute__((constructor)) static void early(void)
{
    for (int i = 0; i < 64; i++) {
        from_ctor[i] = malloc((size_t)(i + 1) * 24);
        CHECK(from_ctor[i] != NULL, "constructor malloc");
        memset(from_ctor[i], 0x5A, (size_t)(i + 1) * 24);
    }
    churn("constructor");
}

static void at_exit_handler(void)
{
    churn("atexit");
    for (int i = 0; i < 64; i++) {
        CHECK(from_ctor[i][(i + 1) * 24 - 1] == 0x5A, "constructor block corrupted");
        free(from_ctor[i]);
    }
    mark('A');
}

__attribute__((destructor)) static void late(void)
{
    if (report_fd < 0)
        return; /* the parent process: nothing to report */
    churn("destructor");
    mark('D');
    close(report_fd);
}

static void *ender(void *arg)
{
    (void)arg;
    churn("thread");
    mark('T');
    exit(0);
}

int main(void)
{
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        close(fds[0]);
        report_fd = fds[1];
        alarm(30);
        mark('C');
        CHECK(atexit(at_exit_handler) == 0, "atexit");
        churn("main");
        mark('M');
        pthread_t t;
        CHECK(pthread_create(&t, NULL, ender, NULL) == 0, "pthread_create");
        pthread_join(t, NULL); /* never returns: the thread calls exit() */
        _exit(3);
    }
    close(fds[1]);
    char got[16] = {0};
    size_t len = 0;
    ssize_t r;
    while (len < sizeof got - 1 && (r = read(fds[0], got + len, sizeof got - 1 - len)) > 0)
        len += (size_t)r;
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x, stages seen \"%s\"", status, got);
    CHECK(strcmp(got, "CMTAD") == 0, "stages seen \"%s\", want \"CMTAD\"", got);
    printf("lifecycle: constructor, main, exit() from a thread, atexit, destructor all allocated fine\n");
    return 0;
}
