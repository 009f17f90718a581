/*
 * The demo sample: every operation of ops.h. It trusts the host completely (addresses are
 * not checked against ELRANGE): it is a test vehicle for the loader and the EDMM paths.
 */
#include "common.h"

static uint64_t pattern(uint64_t seed, uint64_t k) {
    return seed ^ (k * SGXEMU_FILL_MULTIPLIER);
}

/* FILL: args addr, len, seed. Writes len / 8 words; ret[0] = bytes written. */
static void op_fill(struct call *c) {
    uint64_t *p = (uint64_t *)(uintptr_t)c->args[0];
    uint64_t words = c->args[1] / 8, seed = c->args[2];
    for (uint64_t k = 0; k < words; k++)
        p[k] = pattern(seed, k);
    c->ret[0] = words * 8;
}

/* CHECK: args addr, len, seed. ret[0] = words that differ from FILL's pattern. */
static void op_check(struct call *c) {
    const uint64_t *p = (const uint64_t *)(uintptr_t)c->args[0];
    uint64_t words = c->args[1] / 8, seed = c->args[2], bad = 0;
    for (uint64_t k = 0; k < words; k++)
        bad += p[k] != pattern(seed, k);
    c->ret[0] = bad;
}

/* ACCEPT: args addr, len, secinfo_flags. ret[0] = pages accepted, ret[1] = first failure. */
static void op_accept(struct call *c) {
    struct secinfo si = {.flags = c->args[2]};
    uint64_t addr = c->args[0], pages = c->args[1] / SGX_PAGE_SIZE, i;
    for (i = 0; i < pages; i++) {
        uint64_t status = sgx_eaccept(&si, addr + i * SGX_PAGE_SIZE);
        if (status != 0) {
            c->ret[1] = status;
            break;
        }
    }
    c->ret[0] = i;
}

/* ACCEPT_COPY: args dst, src, pages, secinfo_flags. Returns as ACCEPT. */
static void op_accept_copy(struct call *c) {
    struct secinfo si = {.flags = c->args[3]};
    uint64_t dst = c->args[0], src = c->args[1], pages = c->args[2], i;
    for (i = 0; i < pages; i++) {
        uint64_t status = sgx_eacceptcopy(&si, dst + i * SGX_PAGE_SIZE, src);
        if (status != 0) {
            c->ret[1] = status;
            break;
        }
    }
    c->ret[0] = i;
}

/* EMODPE: args addr, len, secinfo_flags. ret[0] = pages. */
static void op_emodpe(struct call *c) {
    struct secinfo si = {.flags = c->args[2]};
    uint64_t addr = c->args[0], pages = c->args[1] / SGX_PAGE_SIZE;
    for (uint64_t i = 0; i < pages; i++)
        sgx_emodpe(&si, addr + i * SGX_PAGE_SIZE);
    c->ret[0] = pages;
}

static int demo_dispatch(struct call *c) {
    switch (c->op) {
    case SGXEMU_OP_FILL:
        op_fill(c);
        return 1;
    case SGXEMU_OP_CHECK:
        op_check(c);
        return 1;
    case SGXEMU_OP_ACCEPT:
        op_accept(c);
        return 1;
    case SGXEMU_OP_ACCEPT_COPY:
        op_accept_copy(c);
        return 1;
    case SGXEMU_OP_EMODPE:
        op_emodpe(c);
        return 1;
    case SGXEMU_OP_READ:
        c->ret[0] = *(volatile const uint64_t *)(uintptr_t)c->args[0];
        return 1;
    case SGXEMU_OP_WRITE:
        *(volatile uint64_t *)(uintptr_t)c->args[0] = c->args[1];
        return 1;
    case SGXEMU_OP_EXEC:
        ((void (*)(void))(uintptr_t)c->args[0])();
        return 1;
    case SGXEMU_OP_UD2:
        __asm__ volatile("ud2");
        __builtin_unreachable();
    default:
        return 0;
    }
}

void enclave_main(struct call *host_call, uint64_t tcs) {
    struct call c;
    call_begin(&c, host_call);
    if (!common_dispatch(&c, tcs) && !demo_dispatch(&c))
        c.ret[0] = SGXEMU_UNKNOWN_OP;
    call_end(host_call, &c);
}
