/*
 * Small enclaves until the EPC is exhausted: each is created and given one page
 * (SGX_IOC_ENCLAVE_CREATE, SGX_IOC_ENCLAVE_ADD_PAGES) and kept open, so its SECS and its VA
 * page stay in the EPC for good (an uninitialized enclave's SECS is never written out).
 * Once nothing else can be reclaimed, the driver answers ENOMEM, as the kernel does — it
 * neither hangs nor spins. Then every descriptor is closed and one more enclave fits.
 *
 * Prints "enclaves N failed <ioctl> errno E" and "after close: create 0 add 0".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sgx_probe.h"

struct sgx_enclave_add_pages {
    uint64_t src, offset, length, secinfo, flags, count;
};
#define SGX_IOC_ENCLAVE_ADD_PAGES _IOWR(0xA4, 0x01, struct sgx_enclave_add_pages)

#define PAGE 4096UL
#define MAX_ENCLAVES 8192

static uint8_t secs[PAGE] __attribute__((aligned(4096)));
static uint8_t source[PAGE] __attribute__((aligned(4096)));
static uint64_t secinfo[8] __attribute__((aligned(64)));
static int fds[MAX_ENCLAVES];

/* Creates enclave `i` on a new descriptor and adds one page; returns 0, or the errno with
 * the failing step in *step. */
static int one(int i, const char **step) {
    fds[i] = open("/dev/sgx_enclave", O_RDWR);
    if (fds[i] < 0) {
        *step = "open";
        return errno;
    }
    memset(secs, 0, sizeof(secs));
    *(uint64_t *)(secs + 0) = 2 * PAGE;                          /* size */
    *(uint64_t *)(secs + 8) = 0x200000000000UL + i * 2 * PAGE;   /* base */
    *(uint32_t *)(secs + 16) = 1;                                /* ssa_frame_size */
    *(uint64_t *)(secs + 48) = 0x4;                              /* MODE64BIT */
    *(uint64_t *)(secs + 56) = 0x3;                              /* xfrm */
    struct sgx_enclave_create create = {.src = (uint64_t)secs};
    if (ioctl(fds[i], SGX_IOC_ENCLAVE_CREATE, &create) != 0) {
        *step = "create";
        return errno;
    }
    struct sgx_enclave_add_pages add = {
        .src = (uint64_t)source, .offset = 0, .length = PAGE, .secinfo = (uint64_t)secinfo};
    if (ioctl(fds[i], SGX_IOC_ENCLAVE_ADD_PAGES, &add) != 0) {
        *step = "add";
        return errno;
    }
    return 0;
}

int main(void) {
    secinfo[0] = 0x203; /* REG, R|W */
    const char *step = "none";
    int err = 0, n;
    for (n = 0; n < MAX_ENCLAVES; n++) {
        err = one(n, &step);
        if (err)
            break;
    }
    printf("enclaves %d failed %s errno %d\n", n, step, err);
    for (int i = 0; i <= n && i < MAX_ENCLAVES; i++)
        close(fds[i]);
    err = one(0, &step);
    printf("after close: %s %d\n", err ? step : "ok", err);
    return 0;
}
