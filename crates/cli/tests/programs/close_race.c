/*
 * close() racing ioctls on the same enclave descriptor. One thread adds pages in a loop
 * (SGX_IOC_ENCLAVE_ADD_PAGES, then the CREATE probe), the main thread closes the descriptor
 * while those calls are in flight. As in the kernel, an ioctl in flight holds a reference
 * to the open file: the enclave is released only when the last reference goes, so every
 * call either completes or finds the descriptor closed (EBADF). Nothing may abort.
 *
 * Prints "iterations N adds A ebadf B other O" and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
#define ENCLAVE_SIZE (64UL << 20)
#define PAGES_PER_CALL 8
#define ITERATIONS 200

static uint8_t secs[PAGE] __attribute__((aligned(4096)));
static uint64_t secinfo[8] __attribute__((aligned(64)));
static uint8_t *source;

static atomic_int started;
static atomic_long adds, ebadf, other;

static void *adder(void *arg) {
    int fd = (int)(long)arg;
    struct sgx_enclave_add_pages add = {
        .src = (uint64_t)source, .length = PAGES_PER_CALL * PAGE, .secinfo = (uint64_t)secinfo};
    for (uint64_t offset = 0;; offset = (offset + PAGES_PER_CALL * PAGE) % ENCLAVE_SIZE) {
        add.offset = offset;
        add.count = 0;
        int ret = ioctl(fd, SGX_IOC_ENCLAVE_ADD_PAGES, &add);
        int err = errno;
        atomic_store(&started, 1);
        if (ret == 0) {
            atomic_fetch_add(&adds, 1);
        } else if (err == EBADF) {
            atomic_fetch_add(&ebadf, 1);
            return NULL;
        } else if (err != EBUSY && err != ENOMEM) {
            atomic_fetch_add(&other, 1); if (getenv("VERBOSE")) fprintf(stderr, "errno %d\n", err);
        }
        int probed = probe(fd);
        if (probed == EBADF) {
            atomic_fetch_add(&ebadf, 1);
            return NULL;
        }
    }
}

int main(void) {
    source = mmap(NULL, PAGES_PER_CALL * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (source == MAP_FAILED)
        return 2;
    memset(source, 0xA5, PAGES_PER_CALL * PAGE);
    secinfo[0] = 0x203; /* REG, R|W */
    int i;
    for (i = 0; i < ITERATIONS; i++) {
        int fd = open("/dev/sgx_enclave", O_RDWR);
        if (fd < 0) {
            perror("open");
            return 3;
        }
        memset(secs, 0, sizeof(secs));
        *(uint64_t *)(secs + 0) = ENCLAVE_SIZE;          /* size */
        *(uint64_t *)(secs + 8) = 0x100000000000UL;      /* base, aligned to size */
        *(uint32_t *)(secs + 16) = 1;                     /* ssa_frame_size */
        *(uint64_t *)(secs + 48) = 0x4;                   /* attributes: MODE64BIT */
        *(uint64_t *)(secs + 56) = 0x3;                   /* xfrm */
        struct sgx_enclave_create create = {.src = (uint64_t)secs};
        if (ioctl(fd, SGX_IOC_ENCLAVE_CREATE, &create) != 0) {
            perror("SGX_IOC_ENCLAVE_CREATE");
            return 4;
        }
        atomic_store(&started, 0);
        pthread_t thread;
        pthread_create(&thread, NULL, adder, (void *)(long)fd);
        /* Close once the adder is busy: some iterations land in the middle of a call. */
        while (!atomic_load(&started))
            ;
        for (volatile int spin = 0; spin < (i % 16) * 1000; spin++)
            ;
        if (close(fd) != 0) {
            perror("close");
            return 5;
        }
        pthread_join(thread, NULL);
    }
    printf("iterations %d adds %ld ebadf %ld other %ld\n", i, atomic_load(&adds), atomic_load(&ebadf),
           atomic_load(&other));
    return 0;
}
