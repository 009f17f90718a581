/*
 * Finds __vdso_sgx_enter_enclave through the dynamic linker, as runners that take it from
 * the kernel's vDSO do: a reference in this program (weak with -DWEAK, versioned
 * __vdso_sgx_enter_enclave@LINUX_2.6 with -DVERSIONED, which the test links against a fake
 * linux-vdso.so.1 for DT_NEEDED and the version) and dlsym(RTLD_DEFAULT). Calls it as the
 * kernel's ABI says and prints what it returned:
 *   leaf 0 (no such leaf)                       -> -EINVAL before anything else is read,
 *   EENTER with a reserved byte of `run` set     -> -EINVAL (so `run`, the stack argument,
 *                                                   arrived),
 *   EENTER with TCS 0 and a clean `run`          -> 0, the fault reported in `run`.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct sgx_enclave_run {
    uint64_t tcs;
    uint32_t function;
    uint16_t exception_vector;
    uint16_t exception_error_code;
    uint64_t exception_addr;
    uint64_t user_handler;
    uint64_t user_data;
    uint8_t reserved[216];
};

typedef int (*enter_fn)(unsigned long rdi, unsigned long rsi, unsigned long rdx, unsigned int function,
                        unsigned long r8, unsigned long r9, struct sgx_enclave_run *run);

#ifdef VERSIONED
#define ENTER vdso_enter
__asm__(".symver vdso_enter, __vdso_sgx_enter_enclave@LINUX_2.6");
#else
#define ENTER __vdso_sgx_enter_enclave
#endif

#ifdef WEAK
__attribute__((weak))
#endif
extern int ENTER(unsigned long, unsigned long, unsigned long, unsigned int, unsigned long, unsigned long,
                 struct sgx_enclave_run *);

static void probe(const char *how, enter_fn enter) {
    if (!enter) {
        printf("%s: not found\n", how);
        return;
    }
    struct sgx_enclave_run run;
    memset(&run, 0, sizeof run);
    int leaf0 = enter(0, 0, 0, 0, 0, 0, &run);
    run.reserved[100] = 1;
    int reserved = enter(0, 0, 0, 2, 0, 0, &run);
    memset(&run, 0, sizeof run);
    int eenter = enter(0, 0, 0, 2, 0, 0, &run);
    printf("%s: leaf0 %d reserved %d eenter %d reported %d\n", how, leaf0, reserved, eenter,
           run.function == 2 && run.exception_vector != 0);
}

int main(void) {
    enter_fn linked = ENTER;
    enter_fn found = (enter_fn)dlsym(RTLD_DEFAULT, "__vdso_sgx_enter_enclave");
    probe("linked", linked);
    probe("dlsym", found);
    printf("same %d\n", linked == found);
    return 0;
}
