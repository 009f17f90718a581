/*
 * The trap floors of scripts/intel-sdk-bench, measured outside sgxemu, as the native
 * benchmark defines them (crates/native/benches/native.rs, `sigill_round_trip` and
 * `gp_round_trip`): a #UD (`ud2`, SIGILL) and a #GP (`hlt` in user mode, SIGSEGV) whose
 * SA_SIGINFO handler steps over the instruction, CALLS times in a row, the average per
 * trap. (In a KVM guest a #UD costs several times a #GP.) Prints the best of ROUNDS such
 * batches of each kind:
 *
 *   ud2_us <microseconds per #UD round trip>
 *   gp_us <microseconds per #GP round trip>
 *
 * usage: ./floor [CALLS [ROUNDS]]   (default 20000 and 1)
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

static void skip_trap(int sig, siginfo_t *info, void *context)
{
    (void)info;
    /* ud2 is two bytes, hlt one. */
    ((ucontext_t *)context)->uc_mcontext.gregs[REG_RIP] += sig == SIGILL ? 2 : 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void ud2(void)
{
    __asm__ volatile("ud2");
}

static void hlt(void)
{
    __asm__ volatile("hlt");
}

/* The best of ROUNDS batches of CALLS traps by `trap`, per trap, after a warm-up. */
static double best_per_trap(void (*trap)(void), uint64_t calls, uint64_t rounds)
{
    for (uint64_t i = 0; i < 1000; i++)
        trap();
    double best = 0;
    for (uint64_t r = 0; r < rounds; r++) {
        double start = now();
        for (uint64_t i = 0; i < calls; i++)
            trap();
        double took = (now() - start) / (double)calls;
        if (r == 0 || took < best)
            best = took;
    }
    return best;
}

int main(int argc, char **argv)
{
    uint64_t calls = argc > 1 ? strtoull(argv[1], NULL, 10) : 20000;
    uint64_t rounds = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    if (calls == 0 || rounds == 0) {
        fprintf(stderr, "usage: %s [CALLS [ROUNDS]]\n", argv[0]);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = skip_trap;
    sa.sa_flags = SA_SIGINFO;
    if (sigaction(SIGILL, &sa, NULL) != 0 || sigaction(SIGSEGV, &sa, NULL) != 0) {
        perror("sigaction");
        return 1;
    }
    double ud = best_per_trap(ud2, calls, rounds);
    double gp = best_per_trap(hlt, calls, rounds);
    printf("ud2_us %.3f\n", ud * 1e6);
    printf("gp_us %.3f\n", gp * 1e6);
    return 0;
}
