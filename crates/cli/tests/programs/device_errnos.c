/*
 * errnos of the enclave device that the kernel decides outside the driver's ioctls, each
 * checked against the kernel source (see run.rs): CREATE with SECS.SIZE 2^63 (shmem
 * refuses the backing file: EINVAL), ADD_PAGES from an execute-only source (get_user_pages
 * needs VM_READ: EFAULT), the generic file ioctls of do_vfs_ioctl, mmap's checks
 * (MAP_FIXED_NOREPLACE, offset, access mode, hint) and mprotect's (alignment, bits, VMA by
 * VMA in address order: the ordinary pages around the enclave mapping show how far a failing
 * call got). Prints one line per check: "name errno [details]".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "sgx_probe.h"

#ifndef FIGETBSZ
#define FIGETBSZ _IO(0x00, 2)
#endif

struct sgx_enclave_add_pages {
    uint64_t src, offset, length, secinfo, flags, count;
};
#define SGX_IOC_ENCLAVE_ADD_PAGES _IOWR(0xA4, 0x01, struct sgx_enclave_add_pages)

#define PAGE 4096UL
#define BASE 0x300000000000UL
#define SIZE (16 * PAGE)

static uint8_t secs[PAGE] __attribute__((aligned(4096)));
static uint64_t secinfo[8] __attribute__((aligned(64)));

static int err(long ret) { return ret == -1 ? errno : 0; }

static int create(int fd, uint64_t size) {
    memset(secs, 0, sizeof(secs));
    *(uint64_t *)(secs + 0) = size;
    *(uint64_t *)(secs + 8) = BASE;
    *(uint32_t *)(secs + 16) = 1;
    *(uint64_t *)(secs + 48) = 0x4;
    *(uint64_t *)(secs + 56) = 0x3;
    struct sgx_enclave_create c = {.src = (uint64_t)secs};
    return err(ioctl(fd, SGX_IOC_ENCLAVE_CREATE, &c));
}

static int add(int fd, void *src, uint64_t offset, uint64_t flags) {
    secinfo[0] = flags;
    struct sgx_enclave_add_pages a = {
        .src = (uint64_t)src, .offset = offset, .length = PAGE, .secinfo = (uint64_t)secinfo};
    return err(ioctl(fd, SGX_IOC_ENCLAVE_ADD_PAGES, &a));
}

/* Whether the ordinary page at `addr` is readable and writable, as the kernel's
 * get_user_pages sees it (process_vm_readv/writev on ourselves respect the protections;
 * the write puts back the byte just read): "r-", "rw" or "--". */
static const char *perms(uint64_t addr) {
    static char out[3];
    uint8_t byte = 0;
    struct iovec local = {.iov_base = &byte, .iov_len = 1}, remote = {.iov_base = (void *)addr, .iov_len = 1};
    int readable = process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == 1;
    int writable = readable && process_vm_writev(getpid(), &local, 1, &remote, 1, 0) == 1;
    out[0] = readable ? 'r' : '-';
    out[1] = writable ? 'w' : '-';
    out[2] = 0;
    return out;
}

int main(void) {
    int fd = open("/dev/sgx_enclave", O_RDWR);
    printf("create-2^63 %d\n", create(fd, 1UL << 63));
    printf("create %d\n", create(fd, SIZE));

    /* ADD_PAGES: a readable source is fine, an execute-only one is EFAULT. */
    uint8_t *src = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(src, 0x5A, 2 * PAGE);
    mprotect(src + PAGE, PAGE, PROT_EXEC);
    printf("add-readable %d\n", add(fd, src, 0, 0x201));
    printf("add-exec-only %d\n", add(fd, src + PAGE, PAGE, 0x201));

    /* The generic file ioctls. */
    int on = 1, off = 0, bsz = 0, r;
    r = err(ioctl(fd, FIOCLEX));
    printf("fioclex %d cloexec %d\n", r, (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    r = err(ioctl(fd, FIONCLEX));
    printf("fionclex %d cloexec %d\n", r, (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    r = err(ioctl(fd, FIONBIO, &on));
    printf("fionbio %d nonblock %d\n", r, (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
    ioctl(fd, FIONBIO, &off);
    printf("fioasync-off %d\n", err(ioctl(fd, FIOASYNC, &off)));
    r = err(ioctl(fd, FIGETBSZ, &bsz));
    printf("figetbsz %d positive %d\n", r, bsz > 0);

    /* mmap. */
    void *anon = mmap((void *)(BASE + 8 * PAGE), PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    void *m = mmap(anon, PAGE, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    printf("mmap-noreplace-over-a-mapping %d\n", m == MAP_FAILED ? errno : 0);
    m = mmap((void *)(BASE + 6 * PAGE), PAGE, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    printf("mmap-noreplace-free %d\n", m == MAP_FAILED ? errno : 0);
    if (m != MAP_FAILED)
        munmap(m, PAGE);
    m = mmap((void *)(BASE + 4 * PAGE), PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 100);
    printf("mmap-unaligned-offset %d\n", m == MAP_FAILED ? errno : 0);
    m = mmap((void *)(BASE + 4 * PAGE + 123), PAGE, PROT_READ, MAP_SHARED, fd, 0);
    printf("mmap-unaligned-hint %d\n", m == MAP_FAILED ? errno : 0);
    if (m != MAP_FAILED)
        munmap(m, PAGE);
    int ro = open("/dev/sgx_enclave", O_RDONLY);
    m = mmap((void *)(BASE + 4 * PAGE), PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, ro, 0);
    printf("mmap-write-of-rdonly %d\n", m == MAP_FAILED ? errno : 0);
    m = mmap((void *)(BASE + 4 * PAGE), PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, ro, 0);
    printf("mmap-read-of-rdonly %d\n", m == MAP_FAILED ? errno : 0);
    /* No VM_MAYWRITE on that mapping: mprotect cannot make it writable. */
    if (m != MAP_FAILED) {
        printf("mprotect-write-of-rdonly %d\n", err(mprotect(m, PAGE, PROT_READ | PROT_WRITE)));
        munmap(m, PAGE);
    }
    close(ro);

    /* mprotect: the enclave's pages 0-1 (page 0 added read-only) between two ordinary pages. */
    uint64_t below = BASE - PAGE, above = BASE + 2 * PAGE;
    mmap((void *)below, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    mmap((void *)above, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    m = mmap((void *)BASE, 2 * PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
    printf("mmap-enclave %d\n", m == MAP_FAILED ? errno : 0);
    printf("mprotect-unaligned %d\n", err(mprotect((void *)(BASE + 1), PAGE, PROT_READ)));
    printf("mprotect-unknown-bits %d\n", err(mprotect((void *)BASE, PAGE, PROT_READ | 0x10)));
    r = err(mprotect((void *)below, 4 * PAGE, PROT_READ));
    printf("mprotect-across-read %d below %s", r, perms(below));
    printf(" above %s\n", perms(above));
    r = err(mprotect((void *)below, 4 * PAGE, PROT_READ | PROT_WRITE));
    printf("mprotect-across-write %d below %s", r, perms(below));
    printf(" above %s\n", perms(above));
    mprotect((void *)below, PAGE, PROT_NONE);
    mprotect((void *)above, PAGE, PROT_NONE);
    r = err(mprotect((void *)BASE, 3 * PAGE, PROT_READ | PROT_WRITE));
    printf("mprotect-enclave-first %d above %s\n", r, perms(above));
    return 0;
}
