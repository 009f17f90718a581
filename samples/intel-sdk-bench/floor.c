/*
 * The trap floor of scripts/intel-sdk-bench, measured outside sgxemu: one host SIGILL round
 * trip, as the native benchmark defines it (crates/native/benches/native.rs,
 * `sigill_round_trip`): a `ud2` whose SA_SIGINFO handler steps over it by advancing RIP by 2,
 * CALLS times in a row, the average per trap. Prints the best of ROUNDS such batches:
 *
 *   floor_us <microseconds per trap round trip>
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

static void skip_ud2(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)info;
    ((ucontext_t *)context)->uc_mcontext.gregs[REG_RIP] += 2;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
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
    sa.sa_sigaction = skip_ud2;
    sa.sa_flags = SA_SIGINFO;
    if (sigaction(SIGILL, &sa, NULL) != 0) {
        perror("sigaction");
        return 1;
    }
    /* Warm-up, as the app warms up its calls. */
    for (uint64_t i = 0; i < 1000; i++)
        __asm__ volatile("ud2");
    double best = 0;
    for (uint64_t r = 0; r < rounds; r++) {
        double start = now();
        for (uint64_t i = 0; i < calls; i++)
            __asm__ volatile("ud2");
        double took = (now() - start) / (double)calls;
        if (r == 0 || took < best)
            best = took;
    }
    printf("floor_us %.3f\n", best * 1e6);
    return 0;
}
