/* An enclave belongs to the process that created it. The parent creates one and maps it;
 * the fork child must see no enclave mapping at that address and a dead descriptor, and the
 * parent's enclave must be intact afterwards. Prints what each side saw. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define SGX_IOC_ENCLAVE_CREATE 0x4008a400
#define SGX_IOC_ENCLAVE_REMOVE_PAGES 0xc018a407

struct secs { uint64_t size, base; uint32_t ssaframesize, miscselect; uint8_t r1[24];
              uint64_t attributes, xfrm; uint8_t rest[4096 - 64]; } __attribute__((aligned(4096)));

static int mapped(void *addr) {
    unsigned char vec;
    return mincore(addr, 4096, &vec) == 0;
}

int main(void) {
    int fd = open("/dev/sgx_enclave", O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    size_t size = 1 << 20;
    void *area = mmap(NULL, 2 * size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t base = ((uint64_t)area + size - 1) & ~(uint64_t)(size - 1);
    static struct secs secs;
    secs.size = size; secs.base = base; secs.ssaframesize = 1; secs.attributes = 4; secs.xfrm = 3;
    uint64_t arg = (uint64_t)&secs;
    if (ioctl(fd, SGX_IOC_ENCLAVE_CREATE, &arg)) { perror("create"); return 2; }
    void *enclave = mmap((void *)base, 4096, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
    if (enclave == MAP_FAILED) { perror("mmap"); return 2; }
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        /* REMOVE_PAGES on an uninitialized enclave is EINVAL in the parent; here the fd is
         * no enclave at all. */
        uint64_t remove[3] = {0, 4096, 0};
        int r = ioctl(fd, SGX_IOC_ENCLAVE_REMOVE_PAGES, remove);
        printf("child: mapped %d ioctl %d errno %d\n", mapped(enclave), r, r ? errno : 0);
        fflush(stdout);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    uint64_t remove[3] = {0, 4096, 0};
    int r = ioctl(fd, SGX_IOC_ENCLAVE_REMOVE_PAGES, remove);
    printf("parent: mapped %d ioctl %d errno %d\n", mapped(enclave), r, r ? errno : 0);
    return 0;
}
