// Maps an enclave's first four pages, then puts mappings of its own over two of them (an
// anonymous MAP_FIXED mmap through the C library, then one made with a raw system call, then
// an mremap with MREMAP_FIXED): on the kernel each new VMA replaces the enclave's there and the
// page is the program's. Prints the /proc/self/maps lines of that range and the data the
// program wrote into its pages.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "own_syscall.h"

struct sgx_enclave_create {
    uint64_t src;
};
#define SGX_IOC_ENCLAVE_CREATE _IOW(0xA4, 0x00, struct sgx_enclave_create)
#define SIZE (1UL << 20)

static void print_lines(uint64_t base, uint64_t len) {
    char line[512];
    FILE *maps = fopen("/proc/self/maps", "r");
    while (fgets(line, sizeof line, maps)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx", &start, &end) == 2 && start < base + len && end > base) {
            char perms[5] = {0};
            char path[256] = "";
            sscanf(line, "%*lx-%*lx %4s %*s %*s %*s %255s", perms, path);
            printf("+%lx-+%lx %s %s\n", start < base ? 0 : start - base, (end > base + len ? base + len : end) - base,
                   perms, path);
        }
    }
    fclose(maps);
}

int main(void) {
    int fd = open("/dev/sgx_enclave", O_RDWR);
    char *area = mmap(NULL, 2 * SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t base = ((uint64_t)area + SIZE - 1) & ~(SIZE - 1);
    static uint8_t secs[4096] __attribute__((aligned(4096)));
    *(uint64_t *)(secs + 0) = SIZE;       // SIZE
    *(uint64_t *)(secs + 8) = base;       // BASEADDR
    *(uint32_t *)(secs + 16) = 1;         // SSAFRAMESIZE
    *(uint64_t *)(secs + 48) = 1ULL << 2; // ATTRIBUTES.MODE64BIT
    *(uint64_t *)(secs + 56) = 3;         // XFRM: x87 | SSE
    struct sgx_enclave_create create = {.src = (uint64_t)secs};
    if (fd < 0 || ioctl(fd, SGX_IOC_ENCLAVE_CREATE, &create) ||
        mmap((void *)base, 0x5000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
        perror("enclave");
        return 1;
    }
    int rw = PROT_READ | PROT_WRITE, anon = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
    char *first = mmap((void *)(base + 0x1000), 0x1000, rw, anon, -1, 0);
    char *second = (char *)own_syscall6(SYS_mmap, base + 0x3000, 0x1000, rw, anon, -1, 0);
    if (first == MAP_FAILED || second == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    strcpy(first, "libc");
    strcpy(second, "raw");
    // A page of the program's own, moved onto the enclave's last page.
    char *elsewhere = mmap(NULL, 0x1000, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    strcpy(elsewhere, "moved");
    char *third = mremap(elsewhere, 0x1000, 0x1000, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)(base + 0x4000));
    if (third == MAP_FAILED) {
        perror("mremap");
        return 1;
    }
    print_lines(base, 0x5000);
    printf("data %s %s %s\n", first, second, third);
    return 0;
}
