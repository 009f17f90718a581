/* The trusted side of the SDK call-cost benchmark: nothing but the calls themselves. */
#include <stdint.h>

#include "Enclave_t.h"

void ecall_empty(void) {}

void ecall_ocalls(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        ocall_empty();
}
