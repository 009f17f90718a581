/*
 * The untrusted side of the SDK call-cost benchmark (scripts/intel-sdk-bench): loads
 * enclave.signed.so in debug mode, warms up, then times CALLS empty ECALLs and one ECALL that
 * makes CALLS empty OCALLs, and prints the cost of one call of each kind:
 *
 *   ecall_us <microseconds per empty ECALL round trip>
 *   ocall_us <microseconds per empty OCALL round trip>
 *
 * usage: ./app [CALLS]   (default 20000)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "Enclave_u.h"
#include "sgx_urts.h"

void ocall_empty(void) {}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void check(sgx_status_t status, const char *what)
{
    if (status != SGX_SUCCESS) {
        fprintf(stderr, "%s failed: SGX status 0x%x\n", what, (unsigned)status);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    uint64_t calls = argc > 1 ? strtoull(argv[1], NULL, 10) : 20000;
    if (calls == 0) {
        fprintf(stderr, "usage: %s [CALLS]\n", argv[0]);
        return 2;
    }
    sgx_enclave_id_t eid = 0;
    check(sgx_create_enclave("enclave.signed.so", SGX_DEBUG_FLAG, NULL, NULL, &eid, NULL),
          "sgx_create_enclave");

    /* Warm-up: the first calls initialise the trusted runtime and touch fresh pages. */
    uint64_t warm = calls / 10 < 1000 ? 1000 : calls / 10;
    for (uint64_t i = 0; i < warm; i++)
        check(ecall_empty(eid), "ecall_empty");
    check(ecall_ocalls(eid, warm), "ecall_ocalls");

    double start = now();
    for (uint64_t i = 0; i < calls; i++)
        check(ecall_empty(eid), "ecall_empty");
    double ecall = (now() - start) / (double)calls;

    start = now();
    check(ecall_ocalls(eid, calls), "ecall_ocalls");
    /* The one ECALL that carries the OCALLs is taken out. */
    double ocall = (now() - start - ecall) / (double)calls;

    printf("ecall_us %.3f\nocall_us %.3f\n", ecall * 1e6, ocall * 1e6);
    check(sgx_destroy_enclave(eid), "sgx_destroy_enclave");
    return 0;
}
