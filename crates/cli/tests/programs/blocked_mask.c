/* A program that blocks every signal (with pthread_sigmask, and with its own rt_sigprocmask
 * system call) and then does what needs the emulator's own signals: CPUID (the emulator
 * traps it), in the main thread and in a thread created with everything blocked. On
 * hardware this works; the mask the program reads back is the one it set, and a signal
 * it blocked stays pending. Exit status 0 only if all of that held. */
#define _GNU_SOURCE
#include <cpuid.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include "own_syscall.h"

static int sgx1(void) {
    unsigned a, b, c, d;
    __cpuid_count(0x12, 0, a, b, c, d);
    return a & 1;
}

/* Whether the program's view of its mask holds SIGILL, SIGSEGV and SIGUSR1. */
static int reads_all_blocked(int raw) {
    sigset_t now;
    sigemptyset(&now);
    if (raw) {
        unsigned long long word = 0;
        if (own_syscall4(SYS_rt_sigprocmask, SIG_BLOCK, 0, (long)&word, 8) != 0)
            return 0;
        memcpy(&now, &word, sizeof word);
    } else if (pthread_sigmask(SIG_BLOCK, NULL, &now) != 0) {
        return 0;
    }
    return sigismember(&now, SIGILL) == 1 && sigismember(&now, SIGSEGV) == 1 && sigismember(&now, SIGUSR1) == 1;
}

static void *worker(void *arg) {
    (void)arg;
    static int ok;
    ok = reads_all_blocked(0) && sgx1();
    return &ok;
}

int main(void) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    int libc_ok = reads_all_blocked(0) && sgx1();
    pthread_t t;
    void *thread_ok = NULL;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, &thread_ok);

    /* The program's own system calls: unblock, then block everything again. */
    unsigned long long every = ~0ULL;
    own_syscall4(SYS_rt_sigprocmask, SIG_UNBLOCK, (long)&every, 0, 8);
    own_syscall4(SYS_rt_sigprocmask, SIG_BLOCK, (long)&every, 0, 8);
    int raw_ok = reads_all_blocked(1) && sgx1();

    /* A blocked asynchronous signal still waits. */
    raise(SIGUSR1);
    sigset_t pending;
    sigpending(&pending);
    int pending_ok = sigismember(&pending, SIGUSR1) == 1;

    printf("libc %d thread %d raw %d pending %d\n", libc_ok, thread_ok && *(int *)thread_ok, raw_ok, pending_ok);
    return libc_ok && thread_ok && *(int *)thread_ok && raw_ok && pending_ok ? 0 : 1;
}
