/* The operations both sample enclaves implement: PING, COPY_IN, COPY_OUT, REPORT, VERIFY. */
#include "common.h"

#include "cmac.h"

void call_begin(struct call *c, const struct call *host_call) {
    memcpy(c, host_call, offsetof(struct call, ret));
    memset(c->ret, 0, sizeof c->ret);
}

void call_end(struct call *host_call, const struct call *c) {
    memcpy(host_call->ret, c->ret, sizeof c->ret);
}

/*
 * REPORT: args targetinfo (host, 512 bytes), reportdata (host, 64 bytes), report_out
 * (host, 432 bytes). EREPORT's operands must be inside the enclave and aligned, so they
 * live on this thread's stack.
 */
__attribute__((noinline)) static void op_report(struct call *c) {
    struct targetinfo ti;
    struct reportdata rd;
    struct report rep __attribute__((aligned(512)));

    memcpy(&ti, (const void *)(uintptr_t)c->args[0], sizeof ti);
    memcpy(rd.bytes, (const void *)(uintptr_t)c->args[1], sizeof rd.bytes);
    memset(rd.bytes + sizeof rd.bytes, 0, sizeof rd - sizeof rd.bytes);
    sgx_ereport(&ti, &rd, &rep);
    memcpy((void *)(uintptr_t)c->args[2], &rep, sizeof rep);
    c->ret[0] = 0;
}

/*
 * VERIFY: args report (host, 432 bytes). Derives the report key for the report's KEYID
 * and recomputes the MAC: ret[0] = 1 if it matches, ret[1] = EGETKEY's status.
 */
__attribute__((noinline)) static void op_verify(struct call *c) {
    struct report rep;
    struct keyrequest kr;
    uint8_t key[16] __attribute__((aligned(16)));
    uint8_t mac[16];

    memcpy(&rep, (const void *)(uintptr_t)c->args[0], sizeof rep);
    memset(&kr, 0, sizeof kr);
    kr.keyname = KEYNAME_REPORT;
    memcpy(kr.keyid, rep.keyid, sizeof kr.keyid);

    uint64_t status = sgx_egetkey(&kr, key);
    c->ret[1] = status;
    c->ret[0] = 0;
    if (status == 0) {
        sgxemu_aes128_cmac(key, rep.mac_data, sizeof rep.mac_data, mac);
        c->ret[0] = (uint64_t)sgxemu_ct_equal(mac, rep.mac, sizeof mac);
    }
    sgxemu_wipe(key, sizeof key);
    sgxemu_wipe(mac, sizeof mac);
}

int common_dispatch(struct call *c, uint64_t tcs) {
    switch (c->op) {
    case SGXEMU_OP_PING:
        c->ret[0] = SGXEMU_PING_MAGIC;
        c->ret[1] = tcs;
        return 1;
    case SGXEMU_OP_COPY_IN:
    case SGXEMU_OP_COPY_OUT: /* args dst, src, len */
        memcpy((void *)(uintptr_t)c->args[0], (const void *)(uintptr_t)c->args[1], c->args[2]);
        c->ret[0] = c->args[2];
        return 1;
    case SGXEMU_OP_REPORT:
        op_report(c);
        return 1;
    case SGXEMU_OP_VERIFY:
        op_verify(c);
        return 1;
    default:
        return 0;
    }
}
