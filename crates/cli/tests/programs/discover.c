/*
 * Finds the emulated SGX device nodes through every file API a program or library might
 * use, and prints what each says: the open family (fortified variants included), fopen,
 * the stat family (statx too), the access family, readlink of the udev links and of a
 * descriptor in /proc/self/fd, realpath.
 *
 * The ioctl probe (see dup_probe.c) tells an emulated enclave descriptor (EFAULT, 14)
 * from any other file (ENOTTY, 25).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

struct sgx_enclave_create {
    unsigned long long src;
};
#define SGX_IOC_ENCLAVE_CREATE _IOW(0xA4, 0x00, struct sgx_enclave_create)

extern int __open_2(const char *, int);
extern int __open64_2(const char *, int);
extern int __openat_2(int, const char *, int);
extern int __openat64_2(int, const char *, int);

static int probe(int fd) {
    if (fd < 0)
        return -errno;
    struct sgx_enclave_create create = {.src = 8};
    int result = ioctl(fd, SGX_IOC_ENCLAVE_CREATE, &create) == -1 ? errno : 0;
    close(fd);
    return result;
}

static const char *type(mode_t mode) {
    return S_ISCHR(mode) ? "chr" : S_ISLNK(mode) ? "lnk" : S_ISDIR(mode) ? "dir" : S_ISREG(mode) ? "reg" : "?";
}

static void show_stat(const char *what, int ret, const struct stat *st) {
    if (ret != 0)
        printf("%s: errno %d\n", what, errno);
    else
        printf("%s: %s %04o %u:%u size %lld\n", what, type(st->st_mode), st->st_mode & 07777, major(st->st_rdev),
               minor(st->st_rdev), (long long)st->st_size);
}

static int ok(int ret) {
    return ret == 0 ? 0 : errno;
}

int main(void) {
    const char *enclave = "/dev/sgx_enclave";
    printf("open %d open64 %d openat %d openat64 %d __open_2 %d __open64_2 %d __openat_2 %d __openat64_2 %d\n",
           probe(open(enclave, O_RDWR)), probe(open64(enclave, O_RDWR)), probe(openat(AT_FDCWD, enclave, O_RDWR)),
           probe(openat64(AT_FDCWD, enclave, O_RDWR)), probe(__open_2(enclave, O_RDWR)),
           probe(__open64_2(enclave, O_RDWR)), probe(__openat_2(AT_FDCWD, enclave, O_RDWR)),
           probe(__openat64_2(AT_FDCWD, enclave, O_RDWR)));
    printf("link %d provision %d provision-link %d nofollow %d\n", probe(open("/dev/sgx/enclave", O_RDWR)),
           probe(open("/dev/sgx_provision", O_RDWR)), probe(open("/dev/sgx/provision", O_RDWR)),
           probe(open("/dev/sgx/enclave", O_RDWR | O_NOFOLLOW)));

    FILE *f = fopen(enclave, "r+");
    FILE *f64 = fopen64("/dev/sgx/enclave", "re");
    printf("fopen %d fopen64 %d\n", f ? probe(dup(fileno(f))) : -errno, f64 ? probe(dup(fileno(f64))) : -errno);
    if (f)
        fclose(f);
    if (f64)
        fclose(f64);

    struct stat st;
    show_stat("stat enclave", stat(enclave, &st), &st);
    show_stat("stat provision", stat("/dev/sgx_provision", &st), &st);
    show_stat("lstat enclave", lstat(enclave, &st), &st);
    show_stat("stat link", stat("/dev/sgx/enclave", &st), &st);
    show_stat("lstat link", lstat("/dev/sgx/enclave", &st), &st);
    show_stat("fstatat link nofollow", fstatat(AT_FDCWD, "/dev/sgx/provision", &st, AT_SYMLINK_NOFOLLOW), &st);
    show_stat("fstatat link", fstatat(AT_FDCWD, "/dev/sgx/provision", &st, 0), &st);
    show_stat("stat dir", stat("/dev/sgx", &st), &st);
    int fd = open(enclave, O_RDWR);
    show_stat("fstat", fstat(fd, &st), &st);
    show_stat("fstatat empty path", fstatat(fd, "", &st, AT_EMPTY_PATH), &st);

    struct statx sx;
    int r = statx(AT_FDCWD, enclave, 0, STATX_BASIC_STATS, &sx);
    printf("statx enclave: %d %s %04o %u:%u\n", r, type(sx.stx_mode), sx.stx_mode & 07777, sx.stx_rdev_major,
           sx.stx_rdev_minor);
    r = statx(AT_FDCWD, "/dev/sgx/enclave", AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx);
    printf("statx link nofollow: %d %s\n", r, type(sx.stx_mode));

    printf("access %d %d %d faccessat %d %d euidaccess %d eaccess %d x %d\n", ok(access(enclave, F_OK)),
           ok(access(enclave, R_OK | W_OK)), ok(access("/dev/sgx/provision", R_OK | W_OK)),
           ok(faccessat(AT_FDCWD, "/dev/sgx/enclave", R_OK | W_OK, 0)),
           ok(faccessat(AT_FDCWD, "/dev/sgx_provision", W_OK, AT_EACCESS)), ok(euidaccess(enclave, W_OK)),
           ok(eaccess("/dev/sgx/enclave", R_OK)), ok(access(enclave, X_OK)));

    char path[64], link[PATH_MAX];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, link, sizeof link);
    printf("readlink fd: %.*s\n", (int)(n > 0 ? n : 0), link);
    n = readlinkat(AT_FDCWD, "/dev/sgx/enclave", link, sizeof link);
    printf("readlink link: %.*s\n", (int)(n > 0 ? n : 0), link);
    n = readlink("/dev/sgx/provision", link, 5);
    printf("readlink truncated: %zd %.*s\n", n, (int)(n > 0 ? n : 0), link);
    n = readlink(enclave, link, sizeof link);
    printf("readlink node: %zd errno %d\n", n, errno);
    char *real = realpath("/dev/sgx/enclave", NULL);
    printf("realpath: %s\n", real ? real : "(null)");
    free(real);
    close(fd);
    return 0;
}
