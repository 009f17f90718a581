// Creates an enclave through /dev/sgx_enclave, maps two ranges of its ELRANGE with different
// protections, and prints the /proc/self/maps lines that lie in ELRANGE (read with open and
// with fopen), as tools that inspect a process see them.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

struct sgx_enclave_create {
    uint64_t src;
};
#define SGX_IOC_ENCLAVE_CREATE _IOW(0xA4, 0x00, struct sgx_enclave_create)
#define SIZE (1UL << 20)

static void print_elrange_lines(FILE *maps, uint64_t base) {
    char line[512];
    while (fgets(line, sizeof line, maps)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx", &start, &end) == 2 && start < base + SIZE && end > base) {
            char perms[5] = {0};
            char path[256] = "";
            sscanf(line, "%*lx-%*lx %4s %*s %*s %*s %255s", perms, path);
            printf("+%lx-+%lx %s %s\n", start - base, end - base, perms, path);
        }
    }
}

int main(void) {
    int fd = open("/dev/sgx_enclave", O_RDWR);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    char *area = mmap(NULL, 2 * SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t base = ((uint64_t)area + SIZE - 1) & ~(SIZE - 1);
    static uint8_t secs[4096] __attribute__((aligned(4096)));
    *(uint64_t *)(secs + 0) = SIZE;            // SIZE
    *(uint64_t *)(secs + 8) = base;            // BASEADDR
    *(uint32_t *)(secs + 16) = 1;              // SSAFRAMESIZE
    *(uint64_t *)(secs + 48) = 1ULL << 2;      // ATTRIBUTES.MODE64BIT
    *(uint64_t *)(secs + 56) = 3;              // XFRM: x87 | SSE
    struct sgx_enclave_create create = {.src = (uint64_t)secs};
    if (ioctl(fd, SGX_IOC_ENCLAVE_CREATE, &create)) {
        perror("ENCLAVE_CREATE");
        return 1;
    }
    if (mmap((void *)base, 0x4000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
        mmap((void *)(base + 0x4000), SIZE - 0x4000, PROT_READ | PROT_EXEC, MAP_SHARED | MAP_FIXED, fd, 0) ==
            MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    int maps_fd = open("/proc/self/maps", O_RDONLY);
    FILE *maps = fdopen(maps_fd, "r");
    print_elrange_lines(maps, base);
    fclose(maps);
    maps = fopen("/proc/self/maps", "r");
    print_elrange_lines(maps, base);
    fclose(maps);
    return 0;
}
