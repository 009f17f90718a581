/* A program with its own SIGSEGV and SIGILL handlers: under sgxemu run it must still receive
 * every fault that is not the emulator's. Exit status 0 only if both handlers ran. */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static sigjmp_buf back;
static volatile int segv_seen, ill_seen;

static void on_segv(int sig, siginfo_t *info, void *uc) {
    (void)sig; (void)uc;
    segv_seen = info->si_addr == (void *)0x10;
    siglongjmp(back, 1);
}

static void on_ill(int sig) {
    (void)sig;
    ill_seen = 1;
    siglongjmp(back, 1);
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    signal(SIGILL, on_ill);
    if (!sigsetjmp(back, 1))
        *(volatile int *)0x10 = 1;
    if (!sigsetjmp(back, 1))
        __asm__ volatile("ud2");
    printf("segv %d ill %d\n", segv_seen, ill_seen);
    return segv_seen && ill_seen ? 0 : 1;
}
