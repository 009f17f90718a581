/* System calls made with the program's own `syscall` instruction, never through the C
 * library (as Gramine's untrusted loader and Go's runtime make them): they must reach the
 * emulated devices as the C library's calls do, and every other one must still work. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "own_syscall.h"

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            printf("FAIL line %d: ", __LINE__);                                           \
            printf(__VA_ARGS__);                                                          \
            printf("\n");                                                                 \
            fflush(stdout);                                                               \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

/* SGX_IOC_ENCLAVE_CREATE: _IOW(0xA4, 0x00, struct sgx_enclave_create { __u64 src; }). */
#define SGX_IOC_ENCLAVE_CREATE 0x4008a400UL

struct ksigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    unsigned long mask;
};
#define SA_RESTORER_ 0x04000000UL

extern void raw_restorer(void);
__asm__(".text\n.globl raw_restorer\nraw_restorer:\n mov $15, %eax\n syscall\n hlt\n");

static volatile int segv_seen;
static char *segv_page;
static void on_segv(int sig, siginfo_t *info, void *uc) {
    (void)sig; (void)uc;
    if ((char *)info->si_addr == segv_page) {
        segv_seen++;
        mprotect(segv_page, 4096, PROT_READ | PROT_WRITE);
    }
}
static volatile int usr1_seen;
static void on_usr1(int sig) { (void)sig; usr1_seen++; }

static void devices(void) {
    const char *paths[] = {"/dev/sgx_enclave", "/dev/sgx/enclave"};
    for (int i = 0; i < 2; i++) {
        long fd = i == 0 ? own_syscall6(SYS_open, (long)paths[i], O_RDWR, 0, 0, 0, 0)
                         : own_syscall6(SYS_openat, AT_FDCWD, (long)paths[i], O_RDWR | O_CLOEXEC, 0, 0, 0);
        CHECK(fd >= 0, "open %s: %ld", paths[i], fd);
        uint64_t create = 1; /* a bad SECS pointer */
        long r = own_syscall6(SYS_ioctl, fd, SGX_IOC_ENCLAVE_CREATE, (long)&create, 0, 0, 0);
        CHECK(r == -EFAULT, "ENCLAVE_CREATE with a bad SECS: %ld", r);
        long at = own_syscall6(SYS_mmap, 0, 1 << 20, PROT_NONE, MAP_SHARED, fd, 0);
        CHECK(at > 0 || at < -4095, "mmap of the device: %ld", at);
        r = own_syscall6(SYS_munmap, at, 1 << 20, 0, 0, 0, 0);
        CHECK(r == 0, "munmap: %ld", r);
        long copy = own_syscall6(SYS_dup, fd, 0, 0, 0, 0, 0);
        CHECK(copy >= 0, "dup: %ld", copy);
        CHECK(own_syscall6(SYS_close, fd, 0, 0, 0, 0, 0) == 0, "close");
        r = own_syscall6(SYS_ioctl, copy, SGX_IOC_ENCLAVE_CREATE, (long)&create, 0, 0, 0);
        CHECK(r == -EFAULT, "ENCLAVE_CREATE on a raw dup: %ld", r);
        CHECK(own_syscall6(SYS_close, copy, 0, 0, 0, 0, 0) == 0, "close of the copy");
        r = own_syscall6(SYS_ioctl, copy, SGX_IOC_ENCLAVE_CREATE, (long)&create, 0, 0, 0);
        CHECK(r == -EBADF, "ioctl after close: %ld", r);
    }
    /* Opened through the C library, used through raw calls. */
    int fd = open("/dev/sgx_enclave", O_RDWR);
    CHECK(fd >= 0, "libc open: %s", strerror(errno));
    uint64_t create = 1;
    long r = own_syscall6(SYS_ioctl, fd, SGX_IOC_ENCLAVE_CREATE, (long)&create, 0, 0, 0);
    CHECK(r == -EFAULT, "raw ENCLAVE_CREATE on a libc descriptor: %ld (ENOTTY is /dev/null's)", r);
    close(fd);
    /* Discovery. */
    struct stat st;
    r = own_syscall6(SYS_stat, (long)"/dev/sgx_enclave", (long)&st, 0, 0, 0, 0);
    CHECK(r == 0 && S_ISCHR(st.st_mode), "stat: %ld mode %o", r, st.st_mode);
    r = own_syscall6(SYS_access, (long)"/dev/sgx_enclave", R_OK | W_OK, 0, 0, 0, 0);
    CHECK(r == 0, "access: %ld", r);
    char link[64] = {0};
    r = own_syscall6(SYS_readlink, (long)"/dev/sgx/enclave", (long)link, sizeof link, 0, 0, 0);
    CHECK(r == 14 && memcmp(link, "../sgx_enclave", 14) == 0, "readlink: %ld %s", r, link);
    printf("devices ok\n");
}

static void signals(void) {
    /* rt_sigaction of a signal the emulator owns: recorded, and what sigaction reports. */
    struct ksigaction act = {(void *)on_segv, SA_SIGINFO | SA_RESTORER_, (void *)raw_restorer, 0}, old;
    long r = own_syscall6(SYS_rt_sigaction, SIGSEGV, (long)&act, (long)&old, 8, 0, 0);
    CHECK(r == 0, "rt_sigaction: %ld", r);
    struct sigaction now;
    sigaction(SIGSEGV, NULL, &now);
    CHECK(now.sa_sigaction == on_segv, "sigaction reports %p, not the raw call's handler", (void *)now.sa_sigaction);
    struct ksigaction query;
    r = own_syscall6(SYS_rt_sigaction, SIGSEGV, 0, (long)&query, 8, 0, 0);
    CHECK(r == 0 && query.handler == (void *)on_segv, "raw query: %ld %p", r, query.handler);
    r = own_syscall6(SYS_rt_sigaction, SIGSEGV, 0, (long)&query, 7, 0, 0);
    CHECK(r == -EINVAL, "bad sigsetsize: %ld", r);
    segv_page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    segv_page[0] = 1;
    CHECK(segv_seen == 1 && segv_page[0] == 1, "the handler saw %d faults", segv_seen);
    /* An asynchronous signal. */
    struct ksigaction usr1 = {(void *)on_usr1, SA_RESTORER_ | SA_RESTART, (void *)raw_restorer, 0};
    r = own_syscall6(SYS_rt_sigaction, SIGUSR1, (long)&usr1, 0, 8, 0, 0);
    CHECK(r == 0, "rt_sigaction(SIGUSR1): %ld", r);
    own_syscall6(SYS_kill, own_syscall6(SYS_getpid, 0, 0, 0, 0, 0, 0), SIGUSR1, 0, 0, 0, 0);
    CHECK(usr1_seen == 1, "SIGUSR1 seen %d times", usr1_seen);
    sigaction(SIGUSR1, NULL, &now);
    CHECK(now.sa_handler == on_usr1, "sigaction(SIGUSR1) reports %p", (void *)now.sa_handler);
    /* sigaltstack: the raw call and the C library's agree. */
    stack_t ss = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16, .ss_flags = 0}, got, got2;
    r = own_syscall6(SYS_sigaltstack, (long)&ss, 0, 0, 0, 0, 0);
    CHECK(r == 0, "sigaltstack: %ld", r);
    r = own_syscall6(SYS_sigaltstack, 0, (long)&got, 0, 0, 0, 0);
    CHECK(r == 0 && got.ss_sp == ss.ss_sp && got.ss_size == ss.ss_size, "raw query: %ld %p", r, got.ss_sp);
    sigaltstack(NULL, &got2);
    CHECK(got2.ss_sp == ss.ss_sp && got2.ss_size == ss.ss_size, "libc query: %p", got2.ss_sp);
    stack_t tiny = {.ss_sp = ss.ss_sp, .ss_size = 100, .ss_flags = 0};
    CHECK(own_syscall6(SYS_sigaltstack, (long)&tiny, 0, 0, 0, 0, 0) == -ENOMEM, "a tiny stack");
    printf("signals ok\n");
}

static void ordinary(void) {
    CHECK(own_syscall6(SYS_getpid, 0, 0, 0, 0, 0, 0) == getpid(), "getpid");
    const char msg[] = "raw write ok\n";
    fflush(stdout);
    CHECK(own_syscall6(SYS_write, 1, (long)msg, sizeof msg - 1, 0, 0, 0) == sizeof msg - 1, "write");
    errno = 1234;
    long fd = own_syscall6(SYS_open, (long)"/proc/self/exe", O_RDONLY, 0, 0, 0, 0);
    CHECK(fd >= 0 && errno == 1234, "open of an ordinary file: %ld (errno %d)", fd, errno);
    char elf[4];
    CHECK(own_syscall6(SYS_read, fd, (long)elf, 4, 0, 0, 0) == 4 && memcmp(elf, "\x7f" "ELF", 4) == 0, "read");
    long at = own_syscall6(SYS_mmap, 0, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    CHECK(at > 0 && memcmp((char *)at, "\x7f" "ELF", 4) == 0, "file mmap: %ld", at);
    CHECK(own_syscall6(SYS_mprotect, at, 4096, PROT_NONE, 0, 0, 0) == 0, "mprotect");
    CHECK(own_syscall6(SYS_munmap, at, 4096, 0, 0, 0, 0) == 0, "munmap");
    CHECK(own_syscall6(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 100, 0, 0, 0) >= 100, "F_DUPFD_CLOEXEC");
    CHECK(own_syscall6(SYS_close, fd, 0, 0, 0, 0, 0) == 0, "close");
    CHECK(own_syscall6(SYS_open, (long)"/nonexistent/file", O_RDONLY, 0, 0, 0, 0) == -ENOENT, "ENOENT");
    CHECK(own_syscall6(SYS_open, 1, O_RDONLY, 0, 0, 0, 0) == -EFAULT, "EFAULT for a bad path");
    printf("ordinary ok\n");
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *what = argc > 1 ? argv[1] : "all";
    if (!strcmp(what, "ordinary") || !strcmp(what, "all")) ordinary();
    if (!strcmp(what, "devices") || !strcmp(what, "all")) devices();
    if (!strcmp(what, "signals") || !strcmp(what, "all")) signals();
    return 0;
}
