/* The attestation sample: PING, COPY_IN, COPY_OUT, REPORT and VERIFY only. */
#include "common.h"

void enclave_main(struct call *host_call, uint64_t tcs) {
    struct call c;
    call_begin(&c, host_call);
    if (!common_dispatch(&c, tcs))
        c.ret[0] = SGXEMU_UNKNOWN_OP;
    call_end(host_call, &c);
}
