/*
 * The host <-> sample-enclave call protocol. Shared with the Rust side
 * (crates/samples/src/lib.rs, module `op`); a unit test there checks that every
 * SGXEMU_* number below equals its Rust constant, so change both together.
 */
#ifndef SGXEMU_OPS_H
#define SGXEMU_OPS_H

#include <stddef.h>
#include <stdint.h>

/* Operation numbers (struct call.op). */
#define SGXEMU_OP_PING 0
#define SGXEMU_OP_FILL 1
#define SGXEMU_OP_CHECK 2
#define SGXEMU_OP_ACCEPT 3
#define SGXEMU_OP_ACCEPT_COPY 4
#define SGXEMU_OP_EMODPE 5
#define SGXEMU_OP_COPY_IN 6
#define SGXEMU_OP_COPY_OUT 7
#define SGXEMU_OP_READ 8
#define SGXEMU_OP_WRITE 9
#define SGXEMU_OP_EXEC 10
#define SGXEMU_OP_UD2 11
#define SGXEMU_OP_REPORT 20
#define SGXEMU_OP_VERIFY 21
#define SGXEMU_OP_RELOCATED 30

/* PING's ret[0]: "SGXEMU_1" read as a big-endian number. */
#define SGXEMU_PING_MAGIC 0x534758454D555F31ULL

/* ret[0] of an operation the enclave does not implement. */
#define SGXEMU_UNKNOWN_OP 0xFFFFFFFFFFFFFFFFULL

/* FILL/CHECK pattern: word k = seed ^ (k * SGXEMU_FILL_MULTIPLIER). */
#define SGXEMU_FILL_MULTIPLIER 0x9E3779B97F4A7C15ULL

/* One call, in untrusted host memory; RDI points at it on EENTER. */
struct call {
    uint64_t op;
    uint64_t args[6];
    uint64_t ret[4];
};

_Static_assert(sizeof(struct call) == 88, "struct call is 88 bytes");
_Static_assert(offsetof(struct call, args) == 8, "args at 8");
_Static_assert(offsetof(struct call, ret) == 56, "ret at 56");

#endif
