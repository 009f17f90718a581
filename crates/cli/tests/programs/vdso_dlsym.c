/*
 * Finds __vdso_sgx_enter_enclave through the dynamic linker's handle of the vDSO, as on a
 * host whose vDSO exports it: dlopen("linux-vdso.so.1", RTLD_NOLOAD) with dlsym and dlvsym
 * (version LINUX_2.6; another version finds nothing), and through RTLD_DEFAULT and
 * RTLD_NEXT. Other lookups are the C library's as before (RTLD_NEXT resolved from this
 * program). Each entry point found is called with leaf 0: -EINVAL (-22).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>

typedef int (*enter_fn)(unsigned long, unsigned long, unsigned long, unsigned int, unsigned long,
                        unsigned long, void *);

static int leaf0(void *entry) {
    char run[256] = {0};
    return entry ? ((enter_fn)entry)(0, 0, 0, 0, 0, 0, run) : 1;
}

int main(void) {
    const char *sym = "__vdso_sgx_enter_enclave";
    void *vdso = dlopen("linux-vdso.so.1", RTLD_NOW | RTLD_NOLOAD);
    void *in_vdso = dlsym(vdso, sym);
    void *versioned = dlvsym(vdso, sym, "LINUX_2.6");
    uintptr_t base = getauxval(AT_SYSINFO_EHDR);
    printf("vdso handle %d: dlsym %d dlvsym %d same %d in getauxval's image %d\n", vdso != NULL,
           leaf0(in_vdso), leaf0(versioned), in_vdso == versioned,
           (uintptr_t)in_vdso > base && (uintptr_t)in_vdso < base + (1 << 20));
    printf("other version: %d\n", dlvsym(vdso, sym, "LINUX_2.5") != NULL);
    void *dflt = dlsym(RTLD_DEFAULT, sym);
    void *next = dlsym(RTLD_NEXT, sym);
    void *vdflt = dlvsym(RTLD_DEFAULT, sym, "LINUX_2.6");
    printf("default %d next %d dlvsym default %d same %d\n", leaf0(dflt), leaf0(next), leaf0(vdflt),
           dflt == next && next == vdflt);
    /* Everything else: the C library's answers. */
    void *next_malloc = dlsym(RTLD_NEXT, "malloc");
    /* open is defined by the preload library and the C library: RTLD_NEXT from here finds
     * the preload library's, as RTLD_DEFAULT does. */
    printf("open next is default %d\n", dlsym(RTLD_NEXT, "open") == dlsym(RTLD_DEFAULT, "open"));
    printf("clock_gettime %d malloc next %d default %d versioned %d missing %d\n",
           dlsym(vdso, "__vdso_clock_gettime") != NULL, next_malloc == (void *)malloc,
           dlsym(RTLD_DEFAULT, "malloc") == (void *)malloc,
           dlvsym(RTLD_DEFAULT, "malloc", "GLIBC_2.2.5") == (void *)malloc,
           dlsym(RTLD_DEFAULT, "no_such_symbol") == NULL && dlerror() != NULL);
    return 0;
}
