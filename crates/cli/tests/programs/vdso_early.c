/*
 * __vdso_sgx_enter_enclave called before the emulator's constructor has run: built with
 * -DLIB this is a library whose constructor (which runs before the preload's, as every
 * constructor of the program's own libraries does) calls it; without, the program that
 * links that library and calls it again from main. The entry point builds the vDSO on that
 * first call with every argument register kept: leaf 0 is -EINVAL, and EENTER with a
 * reserved byte of `run` set is -EINVAL too (so ECX and the stack argument arrived).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

typedef int (*enter_fn)(unsigned long, unsigned long, unsigned long, unsigned int, unsigned long, unsigned long,
                        void *);

static void probe(const char *when) {
    enter_fn enter = (enter_fn)dlsym(RTLD_DEFAULT, "__vdso_sgx_enter_enclave");
    if (!enter) {
        printf("%s: not found\n", when);
        return;
    }
    char run[256] = {0};
    int leaf0 = enter(0, 0, 0, 0, 0, 0, run);
    run[100] = 1;
    int reserved = enter(0, 0, 0, 2, 0, 0, run);
    printf("%s: leaf0 %d reserved %d\n", when, leaf0, reserved);
}

#ifdef LIB
__attribute__((constructor)) static void early(void) { probe("constructor"); }
#else
int main(void) {
    probe("main");
    return 0;
}
#endif
