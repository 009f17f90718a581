// The emulator's EPC descriptor is none of the program's: it does not take the low numbers,
// and closing, duplicating, mapping or replacing it — through the C library or raw system
// calls, one at a time or with close_range/closefrom as programs do before exec — leaves it
// alone. Prints one line per check.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "own_syscall.h"

// Calls `call` and prints its result and errno (0 if it succeeded).
#define CHECK(name, call)                                                                                              \
    do {                                                                                                               \
        errno = 0;                                                                                                     \
        long result_ = (long)(call);                                                                                   \
        printf("%s %ld %d\n", name, result_, errno);                                                                   \
    } while (0)

// The descriptor of the emulator's EPC memfd, found as a tool inspecting the process would.
static int find_epc(void) {
    DIR *dir = opendir("/proc/self/fd");
    int found = -1;
    struct dirent *entry;
    while (dir && (entry = readdir(dir))) {
        char path[300], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%s", entry->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n > 0) {
            target[n] = 0;
            if (strstr(target, "sgxemu-epc"))
                found = atoi(entry->d_name);
        }
    }
    if (dir)
        closedir(dir);
    return found;
}

int main(void) {
    int device = open("/dev/sgx_enclave", O_RDWR);
    printf("device fd %d\n", device);
    int epc = find_epc();
    printf("epc far %d\n", epc >= 64);
    CHECK("close", close(epc));
    CHECK("raw close", own_syscall3(SYS_close, epc, 0, 0));
    CHECK("dup", dup(epc));
    CHECK("fcntl", fcntl(epc, F_DUPFD_CLOEXEC, 0));
    CHECK("mmap", mmap(NULL, 4096, PROT_READ, MAP_SHARED, epc, 0) == MAP_FAILED);
    CHECK("raw dup2 from it", own_syscall3(SYS_dup2, epc, 100, 0));
    int file = open("/dev/zero", O_RDONLY);
    printf("dup2 onto it %d\n", dup2(file, epc) == epc);
    int moved = find_epc();
    printf("moved %d far %d\n", moved != epc && moved >= 0, moved >= 64);
    printf("raw dup3 onto it %d\n", own_syscall3(SYS_dup3, file, moved, O_CLOEXEC) == moved);
    int now = find_epc();
    printf("moved again %d\n", now != moved && now >= 64);
    printf("close_range %d\n", close_range(3, ~0U, 0));
    errno = 0;
    int device_closed = fcntl(device, F_GETFD) == -1 && errno == EBADF;
    printf("after close_range epc %d device closed %d\n", find_epc() == now, device_closed);
    printf("reopened %d\n", open("/dev/sgx_enclave", O_RDWR));
    printf("raw close_range %ld\n", own_syscall3(SYS_close_range, 3, ~0U, 0));
    printf("after raw close_range epc %d\n", find_epc() == now);
    open("/dev/sgx_enclave", O_RDWR);
    closefrom(3);
    printf("after closefrom epc %d next fd %d\n", find_epc() == now, open("/dev/null", O_RDONLY));
    return 0;
}
