/* Reads CPUID the way SGX software does, from every kind of context a program has: the main
 * thread, a thread it creates, an asynchronous signal handler and a fork child. Each prints
 * one line of what it saw; the first line says how the emulator intercepts CPUID here
 * ("faulting": the CPU traps every cpuid; "rewritten": the executable's cpuids became ud2). */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char handler_line[256];

static void sgx_view(const char *who, char *out, size_t len) {
    unsigned a, b, c, d;
    char vendor[13] = {0};
    __cpuid_count(0, 0, a, b, c, d);
    memcpy(vendor, &b, 4);
    memcpy(vendor + 4, &d, 4);
    memcpy(vendor + 8, &c, 4);
    unsigned max_leaf = a;
    __cpuid_count(7, 0, a, b, c, d);
    int sgx = (b >> 2) & 1, lc = (c >> 30) & 1;
    __cpuid_count(0x12, 0, a, b, c, d);
    int sgx1 = a & 1, sgx2 = (a >> 1) & 1;
    __cpuid_count(0x12, 2, a, b, c, d);
    unsigned long long epc = ((unsigned long long)(d & 0xfffff) << 32) | (c & 0xfffff000u);
    snprintf(out, len, "%s: vendor=%s max>=0x12:%d sgx=%d lc=%d sgx1=%d sgx2=%d epc=%llu\n", who, vendor,
             max_leaf >= 0x12, sgx, lc, sgx1, sgx2, epc);
}

static void print_view(const char *who) {
    char line[256];
    sgx_view(who, line, sizeof line);
    fputs(line, stdout);
}

static void *thread_main(void *arg) {
    (void)arg;
    print_view("thread");
    return NULL;
}

static void on_usr1(int sig) {
    (void)sig;
    sgx_view("handler", handler_line, sizeof handler_line);
}

int main(void) {
    /* ARCH_GET_CPUID: 1 while cpuid executes normally, 0 while it faults. */
    long cpuid_enabled = syscall(SYS_arch_prctl, ARCH_GET_CPUID, 0);
    printf("mode: %s\n", cpuid_enabled == 0 ? "faulting" : "rewritten");
    print_view("main");

    pthread_t thread;
    if (pthread_create(&thread, NULL, thread_main, NULL) != 0 || pthread_join(thread, NULL) != 0)
        return 2;

    signal(SIGUSR1, on_usr1);
    raise(SIGUSR1);
    fputs(handler_line, stdout);

    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        print_view("child");
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 3;
    return 0;
}
