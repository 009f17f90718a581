/* Calls that install a mask of the program's while they wait (sigsuspend, ppoll, pselect,
 * epoll_pwait, epoll_pwait2) and the sigwait family, each made by a thread with a mask
 * that blocks everything but SIGUSR1. While the thread waits, the main thread reads the
 * thread's real mask from /proc: the emulator's traps (SIGILL, SIGTRAP, SIGBUS, SIGFPE,
 * SIGSEGV, SIGSYS) and its IPI (SIGRTMAX-1) must stay unblocked, as they are no signals on
 * hardware; then it sends the IPI signal (the emulator's: it must end no wait and never be
 * taken by sigwaitinfo) and SIGUSR1, which ends the wait as on a kernel. Prints one word
 * per call: "ok", "blocked" (the emulator's signals were blocked during the call), "early"
 * (the IPI ended the wait) or what the call returned instead. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { SUSPEND, PPOLL, PSELECT, EPOLL_PWAIT, EPOLL_PWAIT2, SIGWAITINFO, SIGTIMEDWAIT, CALLS };
static const char *names[CALLS] = {"sigsuspend", "ppoll", "pselect", "epoll_pwait", "epoll_pwait2", "sigwaitinfo", "sigtimedwait"};

static volatile pid_t waiter_tid;
static volatile int handled;
static int result[CALLS];
static int returned[CALLS];
static int early[CALLS];

static void on_usr1(int sig) { (void)sig; handled++; }

static void *waiter(void *arg) {
    int call = (int)(long)arg;
    sigset_t usr1, all_but_usr1, waited;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigfillset(&all_but_usr1);
    sigdelset(&all_but_usr1, SIGUSR1);
    /* SIGUSR1 only during the call; the wait set of sigwaitinfo holds the IPI signal too. */
    sigset_t block = usr1;
    sigaddset(&block, SIGRTMAX - 1);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    sigemptyset(&waited);
    sigaddset(&waited, SIGUSR1);
    sigaddset(&waited, SIGRTMAX - 1);
    waiter_tid = (pid_t)syscall(SYS_gettid);
    int ep = epoll_create1(0);
    struct epoll_event ev;
    struct timespec long_time = {60, 0};
    int ret = 0, before = handled;
    switch (call) {
    case SUSPEND: ret = sigsuspend(&all_but_usr1); break;
    case PPOLL: ret = ppoll(NULL, 0, NULL, &all_but_usr1); break;
    case PSELECT: ret = pselect(0, NULL, NULL, NULL, NULL, &all_but_usr1); break;
    case EPOLL_PWAIT: ret = epoll_pwait(ep, &ev, 1, -1, &all_but_usr1); break;
    case EPOLL_PWAIT2: ret = epoll_pwait2(ep, &ev, 1, NULL, &all_but_usr1); break;
    case SIGWAITINFO: ret = sigwaitinfo(&waited, NULL); break;
    case SIGTIMEDWAIT: ret = sigtimedwait(&waited, NULL, &long_time); break;
    }
    /* The kernel's results: EINTR after SIGUSR1's handler, or SIGUSR1 taken by the wait. */
    returned[call] = ret == -1 ? -errno : ret;
    /* Ended before SIGUSR1's handler ran: by the IPI, which is no signal on hardware. */
    early[call] = call < SIGWAITINFO && handled == before;
    close(ep);
    return NULL;
}

/* The thread's real blocked mask (SigBlk in /proc), or 0 if unreadable. */
static unsigned long long sigblk(pid_t tid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
    FILE *f = fopen(path, "r");
    unsigned long long mask = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "SigBlk:", 7) == 0)
            mask = strtoull(line + 7, NULL, 16);
    fclose(f);
    return mask;
}

#define BIT(s) (1ULL << ((s) - 1))

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    unsigned long long ours = BIT(SIGILL) | BIT(SIGTRAP) | BIT(SIGBUS) | BIT(SIGFPE) | BIT(SIGSEGV) | BIT(SIGSYS) | BIT(SIGRTMAX - 1);
    for (int call = 0; call < CALLS; call++) {
        waiter_tid = 0;
        pthread_t t;
        pthread_create(&t, NULL, waiter, (void *)(long)call);
        while (!waiter_tid)
            usleep(100);
        /* In the call: its mask is installed (SIGUSR2 blocked), or for the sigwait family
         * the waited-for SIGUSR1 is unblocked while it waits. */
        unsigned long long now = 0;
        for (int i = 0; i < 20000; i++) {
            now = sigblk(waiter_tid);
            int inside = call >= SIGWAITINFO ? (now & BIT(SIGUSR1)) == 0 && (now & BIT(SIGUSR2)) == 0 && now != 0
                                             : (now & BIT(SIGUSR2)) != 0;
            if (call >= SIGWAITINFO && i > 200)
                inside = 1; /* The wait unblocks nothing we can see: give it time. */
            if (inside)
                break;
            usleep(100);
        }
        result[call] = call < SIGWAITINFO && (now & ours) ? 1 : 0;
        /* The emulator's IPI: ends no wait, is never the program's. */
        syscall(SYS_tgkill, getpid(), waiter_tid, SIGRTMAX - 1);
        usleep(20000);
        syscall(SYS_tgkill, getpid(), waiter_tid, SIGUSR1);
        pthread_join(t, NULL);
        int expected = call >= SIGWAITINFO ? SIGUSR1 : -EINTR;
        if (result[call])
            printf("%s blocked\n", names[call]);
        else if (early[call])
            printf("%s early\n", names[call]);
        else if (returned[call] != expected)
            printf("%s returned %d\n", names[call], returned[call]);
        else
            printf("%s ok\n", names[call]);
    }
    return 0;
}
