/*
 * Enclave descriptors used and closed at every phase of the process's life: opened in a
 * constructor, closed in a vfork child (which must leave the parent's descriptor alone),
 * closed by a pthread key destructor of an exiting thread, by an atexit handler and by an
 * ELF destructor (as Intel's SDK closes its descriptor from a C++ static destructor), the
 * last two after the C library has torn down thread-local storage. Everything is printed
 * to buffered stdout, which only reaches the pipe if the process exits normally.
 *
 * The probe: SGX_IOC_ENCLAVE_CREATE with its SECS at an unmapped address, which the
 * driver answers with EFAULT (14); a descriptor that is no enclave gives ENOTTY (25).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sgx_probe.h"

static int ctor_fd = -1, atexit_fd = -1, dtor_fd = -1;
static int ctor_probe;
static pthread_key_t key;

__attribute__((constructor)) static void early(void) {
    ctor_fd = open("/dev/sgx_enclave", O_RDWR);
    ctor_probe = probe(ctor_fd);
}

static void at_exit(void) {
    int before = probe(atexit_fd);
    printf("atexit: probe %d close %d\n", before, close(atexit_fd));
}

__attribute__((destructor)) static void late(void) {
    int fresh = open("/dev/sgx_enclave", O_RDWR);
    int fresh_probe = probe(fresh);
    int before = probe(dtor_fd);
    int closed = close(dtor_fd);
    printf("destructor: probe %d close %d new %d close %d\n", before, closed, fresh_probe, close(fresh));
}

static void key_destructor(void *value) {
    int fd = (int)(long)value;
    int before = probe(fd);
    printf("thread exit: probe %d close %d\n", before, close(fd));
}

static void *worker(void *arg) {
    (void)arg;
    int fd = open("/dev/sgx_enclave", O_RDWR);
    printf("thread: probe %d\n", probe(fd));
    pthread_setspecific(key, (void *)(long)fd);
    return NULL;
}

int main(void) {
    printf("constructor: probe %d\n", ctor_probe);
    atexit_fd = open("/dev/sgx_enclave", O_RDWR);
    dtor_fd = open("/dev/sgx_enclave", O_RDWR);
    printf("main: probe %d %d\n", probe(atexit_fd), probe(dtor_fd));

    pthread_key_create(&key, key_destructor);
    pthread_t thread;
    pthread_create(&thread, NULL, worker, NULL);
    pthread_join(thread, NULL);

    pid_t child = vfork();
    if (child == 0) {
        close(ctor_fd);
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    printf("after vfork child closed it: probe %d\n", probe(ctor_fd));

    atexit(at_exit);
    return 0;
}
