/* What both sample enclaves share: the call frame and the operations both implement. */
#ifndef SGXEMU_COMMON_H
#define SGXEMU_COMMON_H

#include "ops.h"
#include "sgx.h"

/* From rt.c in the enclave, from the C library in the host tests. */
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memset(void *dst, int c, size_t n);

/* The C entry point; enclave_entry (entry.S) calls it on the TCS's stack. */
void enclave_main(struct call *host_call, uint64_t tcs);

/*
 * Copies op and args from the host's struct call into c (so the host cannot change them
 * while the enclave works) and zeroes c->ret.
 */
void call_begin(struct call *c, const struct call *host_call);

/* Writes c->ret back into the host's struct call. */
void call_end(struct call *host_call, const struct call *c);

/*
 * Runs PING, COPY_IN, COPY_OUT, REPORT or VERIFY on c; returns 1 if c->op is one of
 * them, 0 otherwise (c untouched).
 */
int common_dispatch(struct call *c, uint64_t tcs);

#endif
