// What the test programs share: the uapi's ENCLAVE_CREATE, and a probe that tells an
// emulated enclave descriptor (the driver: EFAULT for a bad SECS pointer) from anything else
// (ENOTTY, EBADF...). Returns the errno, or 0.
#ifndef SGX_PROBE_H
#define SGX_PROBE_H

#include <errno.h>
#include <sys/ioctl.h>

struct sgx_enclave_create {
    unsigned long long src;
};
#define SGX_IOC_ENCLAVE_CREATE _IOW(0xA4, 0x00, struct sgx_enclave_create)

static inline int probe(int fd) {
    struct sgx_enclave_create create = {.src = 8};
    return ioctl(fd, SGX_IOC_ENCLAVE_CREATE, &create) == -1 ? errno : 0;
}

#endif
