/*
 * Finds the vDSO without getauxval, as the `vdso` crate, Go's runtime and static runtimes
 * do: AT_SYSINFO_EHDR from the auxiliary vector that follows the environment on the
 * initial stack, and from /proc/self/auxv (read with open/read and with fopen). Looks
 * __vdso_sgx_enter_enclave up in each image's dynamic symbol table (DT_GNU_HASH, and
 * DT_HASH) and calls it with leaf 0, which the kernel's ABI answers with -EINVAL; also
 * looks up __vdso_clock_gettime (the host's, forwarded), so a lookup that finds nothing is
 * no fault of this parser.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

typedef int (*enter_fn)(unsigned long, unsigned long, unsigned long, unsigned int, unsigned long, unsigned long,
                        void *);

static uint32_t gnu_hash(const char *s) {
    uint32_t h = 5381;
    for (; *s; s++)
        h = h * 33 + (unsigned char)*s;
    return h;
}

static unsigned long sysv_hash(const char *s) {
    unsigned long h = 0, g;
    for (; *s; s++) {
        h = (h << 4) + (unsigned char)*s;
        g = h & 0xf0000000;
        if (g)
            h ^= g >> 24;
        h &= ~g;
    }
    return h;
}

/* The symbol `name` of the ELF image mapped at `base`, through its GNU (`gnu`) or SysV hash
 * table; 0 if the image has none or the symbol is not in it. */
static void *lookup(uintptr_t base, const char *name, int gnu) {
    const ElfW(Ehdr) *eh = (const ElfW(Ehdr) *)base;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
        return 0;
    const ElfW(Phdr) *ph = (const ElfW(Phdr) *)(base + eh->e_phoff);
    intptr_t bias = 0;
    const ElfW(Dyn) *dyn = 0;
    int have_load = 0;
    for (int i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type == PT_LOAD && !have_load) {
            bias = (intptr_t)base + (intptr_t)ph[i].p_offset - (intptr_t)ph[i].p_vaddr;
            have_load = 1;
        }
        if (ph[i].p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(base + ph[i].p_offset);
    }
    if (!dyn || !have_load)
        return 0;
    const ElfW(Sym) *symtab = 0;
    const char *strtab = 0;
    const uint32_t *hash = 0, *ghash = 0;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        if (dyn->d_tag == DT_SYMTAB)
            symtab = (const ElfW(Sym) *)(dyn->d_un.d_ptr + bias);
        if (dyn->d_tag == DT_STRTAB)
            strtab = (const char *)(dyn->d_un.d_ptr + bias);
        if (dyn->d_tag == DT_HASH)
            hash = (const uint32_t *)(dyn->d_un.d_ptr + bias);
        if (dyn->d_tag == DT_GNU_HASH)
            ghash = (const uint32_t *)(dyn->d_un.d_ptr + bias);
    }
    if (!symtab || !strtab)
        return 0;
    if (gnu) {
        if (!ghash)
            return 0;
        uint32_t nbuckets = ghash[0], symoffset = ghash[1], bloom_size = ghash[2];
        const uint32_t *buckets = ghash + 4 + bloom_size * (sizeof(ElfW(Addr)) / 4);
        const uint32_t *chain = buckets + nbuckets;
        uint32_t h = gnu_hash(name);
        for (uint32_t i = buckets[h % nbuckets]; i >= symoffset && i != 0; i++) {
            uint32_t c = chain[i - symoffset];
            if ((c | 1) == (h | 1) && strcmp(strtab + symtab[i].st_name, name) == 0 && symtab[i].st_shndx != SHN_UNDEF)
                return (void *)(symtab[i].st_value + bias);
            if (c & 1)
                break;
        }
        return 0;
    }
    if (!hash)
        return 0;
    uint32_t nbucket = hash[0];
    const uint32_t *bucket = hash + 2, *chain = bucket + nbucket;
    for (uint32_t i = bucket[sysv_hash(name) % nbucket]; i != STN_UNDEF; i = chain[i])
        if (strcmp(strtab + symtab[i].st_name, name) == 0 && symtab[i].st_shndx != SHN_UNDEF)
            return (void *)(symtab[i].st_value + bias);
    return 0;
}

static void probe(const char *how, uintptr_t base) {
    printf("%s: base %s", how, base == 0 ? "none" : base == getauxval(AT_SYSINFO_EHDR) ? "getauxval's" : "other");
    for (int gnu = 1; gnu >= 0; gnu--) {
        if (base && lookup(base, "__vdso_clock_gettime", gnu))
            printf(" clock_gettime");
        enter_fn enter = base ? (enter_fn)lookup(base, "__vdso_sgx_enter_enclave", gnu) : 0;
        char run[256] = {0};
        if (enter)
            printf(" %s %d", gnu ? "gnu_hash" : "hash", enter(0, 0, 0, 0, 0, 0, run));
        else
            printf(" %s none", gnu ? "gnu_hash" : "hash");
    }
    printf("\n");
}

/* AT_SYSINFO_EHDR in a vector of (key, value) pairs. */
static uintptr_t from_pairs(const ElfW(auxv_t) *v, size_t n) {
    for (size_t i = 0; i < n && v[i].a_type != AT_NULL; i++)
        if (v[i].a_type == AT_SYSINFO_EHDR)
            return v[i].a_un.a_val;
    return 0;
}

int main(int argc, char **argv, char **envp) {
    (void)argc;
    (void)argv;
    char **p = envp;
    while (*p)
        p++;
    probe("stack", from_pairs((const ElfW(auxv_t) *)(p + 1), (size_t)-1));

    ElfW(auxv_t) buf[128];
    int fd = open("/proc/self/auxv", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
    if (fd >= 0)
        close(fd);
    probe("proc", n > 0 ? from_pairs(buf, (size_t)n / sizeof buf[0]) : 0);

    char path[64];
    snprintf(path, sizeof path, "/proc/%d/auxv", (int)getpid());
    FILE *f = fopen(path, "r");
    size_t m = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f)
        fclose(f);
    probe("pid", from_pairs(buf, m / sizeof buf[0]));
    return 0;
}
