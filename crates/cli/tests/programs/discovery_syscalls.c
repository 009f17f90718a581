/*
 * The emulated platform through the channels that bypass the C library's directory and
 * stdio layers: listings of /dev and /dev/sgx by the getdents64 and getdents system calls
 * (the C library's syscall(), its getdents64() wrapper and the program's own `syscall`
 * instruction), small listing buffers, d_off and lseek; chdir/fchdir into /dev/sgx and the
 * relative names, getcwd and /proc/self/cwd there; MSRs read through stdio, readv, preadv
 * and syscall(SYS_pread64), and the program's own pread64/read instructions; device calls
 * through the C library's syscall() function. Prints one line
 * per check.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>
#include "own_syscall.h"

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* The old getdents record: d_type is its last byte. */
struct linux_dirent {
    unsigned long d_ino;
    unsigned long d_off;
    unsigned short d_reclen;
    char d_name[];
};

static char kind(unsigned char type) {
    return type == DT_CHR ? 'c' : type == DT_DIR ? 'd' : type == DT_LNK ? 'l' : '?';
}

enum how { LIBC_SYSCALL, WRAPPER, OWN_INSTRUCTION, OLD_GETDENTS };

static long list_call(enum how how, int fd, char *buf, size_t size) {
    long n;
    switch (how) {
    case LIBC_SYSCALL:
        return syscall(SYS_getdents64, fd, buf, size);
    case WRAPPER:
        return getdents64(fd, buf, size);
    case OLD_GETDENTS:
        return syscall(SYS_getdents, fd, buf, size);
    case OWN_INSTRUCTION:
        n = own_syscall3(SYS_getdents64, fd, (long)buf, (long)size);
        if (n < 0) {
            errno = (int)-n;
            return -1;
        }
        return n;
    }
    return -1;
}

/* One record's name, type and d_off. */
static void record(enum how how, const char *at, const char **name, unsigned char *type, long *off,
                   unsigned short *reclen) {
    if (how == OLD_GETDENTS) {
        const struct linux_dirent *d = (const void *)at;
        *name = d->d_name;
        *type = (unsigned char)at[d->d_reclen - 1];
        *off = (long)d->d_off;
        *reclen = d->d_reclen;
    } else {
        const struct linux_dirent64 *d = (const void *)at;
        *name = d->d_name;
        *type = d->d_type;
        *off = d->d_off;
        *reclen = d->d_reclen;
    }
}

/* Lists `fd` to its end with `size`-byte calls: prints the entries whose names start with
 * `prefix` (all if empty) and how many calls gave emulated ones; returns the d_off of the
 * entry before the first printed one in *before. */
static void list_fd(const char *label, enum how how, int fd, size_t size, const char *prefix, long *before) {
    char buf[4096];
    int calls_with_sgx = 0, total = 0;
    long last_off = -1;
    printf("%s:", label);
    for (;;) {
        long n = list_call(how, fd, buf, size);
        if (n < 0) {
            printf(" error %d", errno);
            break;
        }
        if (n == 0)
            break;
        int printed = 0;
        for (long at = 0; at < n;) {
            const char *name;
            unsigned char type;
            long off;
            unsigned short reclen;
            record(how, buf + at, &name, &type, &off, &reclen);
            if (strncmp(name, prefix, strlen(prefix)) == 0) {
                if (before && total == 0)
                    *before = last_off;
                printf(" %s/%c", name, kind(type));
                printed = 1;
                total++;
            }
            last_off = off;
            at += reclen;
        }
        calls_with_sgx += printed;
    }
    printf(" (%d entries in %d calls)\n", total, calls_with_sgx);
}

static void listings(void) {
    int dev = open("/dev", O_RDONLY | O_DIRECTORY);
    int sgx = openat(AT_FDCWD, "/dev/sgx", O_RDONLY | O_DIRECTORY);
    if (dev < 0 || sgx < 0) {
        printf("open: %d %d errno %d\n", dev, sgx, errno);
        return;
    }
    long before = -1;
    list_fd("syscall getdents64 /dev", LIBC_SYSCALL, dev, sizeof(char[4096]), "sgx", &before);
    /* A buffer that holds one of the emulated records, not two. */
    lseek(dev, 0, SEEK_SET);
    list_fd("48-byte getdents64 /dev", LIBC_SYSCALL, dev, 48, "sgx", NULL);
    /* Resuming after the host's last entry, with a buffer too small for any entry. */
    char tiny[16];
    off_t at = lseek(dev, before, SEEK_SET);
    long n = syscall(SYS_getdents64, dev, tiny, sizeof tiny);
    printf("resume at the last host entry's d_off: %d, 16 bytes: %ld errno %d\n", at == before, n,
           n < 0 ? errno : 0);
    list_fd("then", LIBC_SYSCALL, dev, 4096, "", NULL);
    lseek(dev, 0, SEEK_SET);
    list_fd("rewound, getdents64()", WRAPPER, dev, 4096, "sgx", NULL);
    lseek(dev, 0, SEEK_SET);
    list_fd("own syscall instruction /dev", OWN_INSTRUCTION, dev, 4096, "sgx", NULL);
    lseek(dev, 0, SEEK_SET);
    list_fd("old getdents /dev", OLD_GETDENTS, dev, 4096, "sgx", NULL);
    list_fd("syscall getdents64 /dev/sgx", LIBC_SYSCALL, sgx, 4096, "", NULL);
    lseek(sgx, 0, SEEK_SET);
    list_fd("old getdents /dev/sgx", OLD_GETDENTS, sgx, 4096, "", NULL);
    lseek(sgx, 0, SEEK_SET);
    list_fd("own syscall instruction /dev/sgx", OWN_INSTRUCTION, sgx, 32, "", NULL);
    /* readdir lists through the C library's own getdents64: each entry still comes once. */
    DIR *dir = opendir("/dev");
    int count = 0;
    for (struct dirent *e; dir && (e = readdir(dir));)
        count += strncmp(e->d_name, "sgx", 3) == 0;
    if (dir)
        closedir(dir);
    printf("readdir /dev: %d sgx entries\n", count);
    close(dev);
    close(sgx);
}

static void print_cwd(const char *when) {
    char buf[256], link[256];
    char *cwd = getcwd(buf, sizeof buf);
    long raw = syscall(SYS_getcwd, link, sizeof link);
    char raw_cwd[256];
    snprintf(raw_cwd, sizeof raw_cwd, "%s", raw > 0 ? link : "?");
    ssize_t len = readlink("/proc/self/cwd", link, sizeof link - 1);
    link[len > 0 ? len : 0] = 0;
    printf("%s: getcwd %s syscall %s /proc/self/cwd %s\n", when, cwd ? cwd : "?", raw_cwd, link);
}

static void directories(void) {
    struct stat st;
    char target[64] = {0};
    printf("chdir /dev/sgx: %d\n", chdir("/dev/sgx"));
    print_cwd("in /dev/sgx");
    int enclave = open("enclave", O_RDWR);
    int fstat_ok = enclave >= 0 && fstat(enclave, &st) == 0 && S_ISCHR(st.st_mode) && minor(st.st_rdev) == 125;
    printf("open enclave: %d", fstat_ok);
    printf(" stat provision: %d", stat("provision", &st) == 0 && S_ISCHR(st.st_mode) && minor(st.st_rdev) == 126);
    printf(" lstat enclave: %d", lstat("./enclave", &st) == 0 && S_ISLNK(st.st_mode));
    printf(" readlink: %s", readlink("enclave", target, sizeof target - 1) > 0 ? target : "?");
    int via_target = open("../sgx_enclave", O_RDWR);
    printf(" target: %d", via_target >= 0);
    printf(" stat .: %d", stat(".", &st) == 0 && S_ISDIR(st.st_mode) && st.st_ino == 0x5600);
    printf(" other name: %d\n", open("nonexistent", O_RDONLY) == -1 && errno == ENOENT);
    DIR *dir = opendir(".");
    printf("opendir .:");
    for (struct dirent *e; dir && (e = readdir(dir));)
        printf(" %s/%c", e->d_name, kind(e->d_type));
    printf("\n");
    if (dir)
        closedir(dir);
    close(enclave);
    close(via_target);
    printf("chdir ..: %d\n", chdir(".."));
    print_cwd("back");
    int sgx = open("/dev/sgx", O_RDONLY | O_DIRECTORY);
    printf("fchdir: %d\n", fchdir(sgx));
    print_cwd("after fchdir");
    int at = openat(sgx, "provision", O_RDONLY);
    printf("openat dirfd provision: %d\n", at >= 0 && fstat(at, &st) == 0 && minor(st.st_rdev) == 126);
    close(at);
    long raw = syscall(SYS_chdir, "/");
    print_cwd("syscall chdir /");
    /* Names relative to the descriptor, not the working directory (now /). */
    long own = own_syscall3(SYS_openat, sgx, (long)"enclave", O_RDWR);
    printf("own instruction openat dirfd enclave: %d", own >= 0 && fstat((int)own, &st) == 0 && minor(st.st_rdev) == 125);
    close((int)own);
    own = own_syscall4(SYS_readlinkat, sgx, (long)"provision", (long)target, sizeof target);
    printf(" %.*s\n", own > 0 ? (int)own : 0, target);
    close(sgx);
    raw |= own_syscall3(SYS_chdir, (long)"/dev/sgx", 0, 0);
    print_cwd("own instruction chdir /dev/sgx");
    int into_link = chdir("enclave");
    printf("raw chdirs: %ld, chdir enclave: %d errno %d\n", raw, into_link, errno);
    chdir("/");
}

static void msrs(void) {
    uint64_t v[2] = {0, 0};
    FILE *f = fopen("/dev/cpu/0/msr", "r");
    if (!f) {
        perror("fopen msr");
        return;
    }
    int seek = fseek(f, 0x3a, SEEK_SET);
    size_t got = fread(v, 8, 1, f);
    printf("stdio 0x3a: %d %zu %#llx", seek, got, (unsigned long long)v[0]);
    seek = fseek(f, 0x8c, SEEK_SET);
    got = fread(v, 8, 1, f);
    printf(", 0x8c: %d %zu %016llx, ftell %ld", seek, got, (unsigned long long)v[0], ftell(f));
    int fd = fileno(f);
    ssize_t n = fd >= 0 ? pread(fd, v, 8, 0x8d) : -1;
    printf(", fileno pread 0x8d: %zd %016llx\n", n, (unsigned long long)v[0]);
    fclose(f);
    fd = open("/dev/cpu/0/msr", O_RDONLY);
    FILE *g = fdopen(dup(fd), "r");
    fseek(g, 0x8f, SEEK_SET);
    got = fread(v, 8, 1, g);
    printf("fdopen 0x8f: %zu %016llx\n", got, (unsigned long long)v[0]);
    fclose(g);
    struct iovec iov[2] = {{&v[0], 8}, {&v[1], 8}};
    v[0] = v[1] = 0;
    lseek(fd, 0x3a, SEEK_SET);
    n = readv(fd, iov, 2);
    printf("readv 0x3a: %zd %#llx %#llx\n", n, (unsigned long long)v[0], (unsigned long long)v[1]);
    n = preadv(fd, iov, 1, 0x8d);
    printf("preadv 0x8d: %zd %016llx\n", n, (unsigned long long)v[0]);
    n = syscall(SYS_pread64, fd, v, 8, 0x8e);
    printf("syscall pread64 0x8e: %zd %016llx\n", n, (unsigned long long)v[0]);
    n = syscall(SYS_preadv, fd, iov, 2, 0x8c, 0);
    printf("syscall preadv 0x8c: %zd %016llx %016llx\n", n, (unsigned long long)v[0], (unsigned long long)v[1]);
    n = syscall(SYS_pread64, fd, v, 4, 0x3a);
    printf("syscall pread64 4 bytes: %zd errno %d\n", n, n < 0 ? errno : 0);
    /* The program's own instructions, which nothing traps: the descriptor itself holds the
     * MSRs at their offsets. */
    v[0] = 0;
    n = own_syscall4(SYS_pread64, fd, (long)v, 8, 0x8f);
    printf("own pread64 0x8f: %zd %016llx", n, (unsigned long long)v[0]);
    own_syscall3(SYS_lseek, fd, 0x3a, SEEK_SET);
    n = own_syscall3(SYS_read, fd, (long)v, 8);
    printf(", own lseek+read 0x3a: %zd %#llx\n", n, (unsigned long long)v[0]);
    close(fd);
}

/* The device calls through the C library's syscall() function: the emulated device, its
 * stat, its driver's errno, the signal mask as the program sees it; and a number the
 * emulator leaves alone (getpid) still the kernel's. */
static void syscall_function(void) {
    long fd = syscall(SYS_openat, AT_FDCWD, "/dev/sgx_enclave", O_RDWR);
    struct stat st;
    long stat = syscall(SYS_newfstatat, AT_FDCWD, "/dev/sgx/enclave", &st, 0);
    printf("syscall openat: %d, newfstatat: %ld char %d", fd >= 0, stat, S_ISCHR(st.st_mode));
    /* SGX_IOC_ENCLAVE_CREATE with a NULL argument: the driver's EFAULT, not the host's
     * ENOTTY or EBADF. */
    long r = syscall(SYS_ioctl, fd, 0x4008a400UL, NULL);
    printf(", ioctl: %ld errno %d", r, r < 0 ? errno : 0);
    printf(", close: %ld\n", syscall(SYS_close, fd));
    sigset_t all, seen;
    sigfillset(&all);
    r = syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, NULL, 8);
    sigprocmask(SIG_BLOCK, NULL, &seen);
    printf("syscall rt_sigprocmask: %ld, SIGSEGV blocked as asked: %d", r, sigismember(&seen, SIGSEGV));
    sigprocmask(SIG_UNBLOCK, &all, NULL);
    printf(", getpid: %d\n", syscall(SYS_getpid) == getpid());
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    listings();
    directories();
    msrs();
    syscall_function();
    return 0;
}
