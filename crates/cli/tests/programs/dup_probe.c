/*
 * Copies of an enclave descriptor (dup, dup2, dup3, fcntl F_DUPFD_CLOEXEC) reach the
 * emulated driver like the original, and keep working after the original is closed; a
 * descriptor that dup2 replaces with another file stops being one.
 *
 * The probe: SGX_IOC_ENCLAVE_CREATE with its SECS at an unmapped address, which the
 * driver answers with EFAULT (any other file: ENOTTY). Prints the errnos.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "sgx_probe.h"

int main(void) {
    int fd = open("/dev/sgx_enclave", O_RDWR);
    if (fd < 0) {
        perror("open /dev/sgx_enclave");
        return 1;
    }
    int copy = dup(fd);
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 100);
    int two = dup2(fd, 50);
    int three = dup3(fd, 51, O_CLOEXEC);
    printf("fd %d dup %d fcntl %d dup2 %d dup3 %d\n", probe(fd), probe(copy), probe(high), probe(two),
           probe(three));
    close(fd);
    printf("after close %d\n", probe(copy));
    int null = open("/dev/null", O_RDWR);
    dup2(null, 50);
    printf("replaced %d kept %d\n", probe(50), probe(51));
    return 0;
}
