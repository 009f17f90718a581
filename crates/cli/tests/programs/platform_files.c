/*
 * What a program learns about SGX from files other than the device nodes: the sgx and
 * sgx_lc flags of /proc/cpuinfo (through fopen and through open), node 0's EPC size in
 * sysfs, and IA32_FEATURE_CONTROL and the launch-key hash MSRs through /dev/cpu/N/msr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Whether `word` is one of the blank-separated words of `line`. */
static int has_word(const char *line, const char *word) {
    size_t n = strlen(word);
    for (const char *p = line; (p = strstr(p, word)) != NULL; p += n)
        if ((p == line || p[-1] == ' ' || p[-1] == '\t') && (p[n] == ' ' || p[n] == '\n' || p[n] == 0))
            return 1;
    return 0;
}

static int msr(int fd, long index, uint64_t *value) {
    return pread(fd, value, 8, index) == 8 ? 0 : errno;
}

int main(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) {
        perror("fopen /proc/cpuinfo");
        return 1;
    }
    char line[65536];
    int processors = 0, flags = 0, sgx = 0, lc = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "processor", 9) == 0)
            processors++;
        if (strncmp(line, "flags", 5) == 0 && strchr(line, ':')) {
            flags++;
            sgx += has_word(strchr(line, ':') + 1, "sgx");
            lc += has_word(strchr(line, ':') + 1, "sgx_lc");
        }
    }
    fclose(f);
    printf("cpuinfo: processors %d flags %d sgx %d sgx_lc %d\n", processors > 0 && processors == flags,
           flags == processors, sgx == flags, lc == flags);

    int fd = open("/proc/cpuinfo", O_RDONLY);
    ssize_t n = read(fd, line, sizeof line - 1);
    line[n > 0 ? n : 0] = 0;
    printf("cpuinfo open: sgx_lc %d\n", strstr(line, " sgx_lc") != NULL);
    close(fd);

    fd = open("/sys/devices/system/node/node0/x86/sgx_total_bytes", O_RDONLY);
    n = read(fd, line, sizeof line - 1);
    line[n > 0 ? n : 0] = 0;
    printf("sgx_total_bytes: %s", line);
    close(fd);

    long last = sysconf(_SC_NPROCESSORS_CONF) - 1;
    char path[64];
    snprintf(path, sizeof path, "/dev/cpu/%ld/msr", last);
    int last_fd = open(path, O_RDONLY);
    fd = open("/dev/cpu/0/msr", O_RDONLY);
    uint64_t value = 0;
    int err = msr(fd, 0x3a, &value);
    printf("msr 0x3a: %d %#llx last cpu %d\n", err, (unsigned long long)value,
           msr(last_fd, 0x3a, &value) == 0 && value == 0x60001);
    for (long index = 0x8c; index <= 0x8f; index++) {
        err = msr(fd, index, &value);
        printf("msr %#lx: %d %016llx\n", index, err, (unsigned long long)value);
    }
    uint64_t pair[2] = {0, 0};
    lseek(fd, 0x8c, SEEK_SET);
    n = read(fd, pair, 16);
    printf("read at 0x8c: %zd %016llx %016llx\n", n, (unsigned long long)pair[0], (unsigned long long)pair[1]);
    printf("msr 0x10: %d, 4 bytes: %d, write open: %d, cpu 99999: %d\n", msr(fd, 0x10, &value),
           pread(fd, &value, 4, 0x3a) == -1 ? errno : 0, open("/dev/cpu/0/msr", O_RDWR) == -1 ? errno : 0,
           open("/dev/cpu/99999/msr", O_RDONLY) == -1 ? errno : 0);
    int copy = dup(fd);
    close(fd);
    printf("dup: %d\n", msr(copy, 0x3a, &value));
    close(copy);
    close(last_fd);
    return 0;
}
