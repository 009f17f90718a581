/*
 * The architectural structures the samples hand to ENCLU, and one wrapper per leaf
 * (SDM Vol. 3D ch. 34-38; crates/arch has the same layouts in Rust).
 */
#ifndef SGXEMU_SGX_H
#define SGXEMU_SGX_H

#include <stddef.h>
#include <stdint.h>

/* ENCLU leaf numbers (EAX). */
#define ENCLU_EREPORT 0
#define ENCLU_EGETKEY 1
#define ENCLU_EEXIT 4
#define ENCLU_EACCEPT 5
#define ENCLU_EMODPE 6
#define ENCLU_EACCEPTCOPY 7

/* KEYREQUEST.KEYNAME of the report key. */
#define KEYNAME_REPORT 3

#define SGX_PAGE_SIZE 4096

/* SECINFO: 64 bytes, 64-byte aligned. */
struct secinfo {
    uint64_t flags;
    uint8_t reserved[56];
} __attribute__((aligned(64)));

/* TARGETINFO: 512 bytes, 512-byte aligned; the samples only copy it. */
struct targetinfo {
    uint8_t bytes[512];
} __attribute__((aligned(512)));

/* REPORTDATA: 64 bytes, 128-byte aligned. */
struct reportdata {
    uint8_t bytes[64];
} __attribute__((aligned(128)));

/*
 * REPORT: 432 bytes. EREPORT wants a 512-byte-aligned output address, but an aligned(512)
 * type would be padded to 512 bytes, so the alignment goes on the variable instead.
 */
struct report {
    uint8_t mac_data[384]; /* CPUSVN .. REPORTDATA: what the MAC covers */
    uint8_t keyid[32];
    uint8_t mac[16];
};

/* KEYREQUEST: 512 bytes, 512-byte aligned. */
struct keyrequest {
    uint16_t keyname;
    uint16_t keypolicy;
    uint16_t isvsvn;
    uint16_t reserved1;
    uint8_t cpusvn[16];
    uint8_t attributemask[16];
    uint8_t keyid[32];
    uint32_t miscmask;
    uint16_t configsvn;
    uint8_t reserved2[434];
} __attribute__((aligned(512)));

_Static_assert(sizeof(struct secinfo) == 64, "SECINFO is 64 bytes");
_Static_assert(sizeof(struct targetinfo) == 512, "TARGETINFO is 512 bytes");
_Static_assert(sizeof(struct reportdata) == 128, "REPORTDATA padded to its alignment");
_Static_assert(sizeof(struct report) == 432, "REPORT is 432 bytes");
_Static_assert(offsetof(struct report, keyid) == 384, "REPORT.KEYID at 384");
_Static_assert(offsetof(struct report, mac) == 416, "REPORT.MAC at 416");
_Static_assert(sizeof(struct keyrequest) == 512, "KEYREQUEST is 512 bytes");
_Static_assert(offsetof(struct keyrequest, cpusvn) == 8, "KEYREQUEST.CPUSVN at 8");
_Static_assert(offsetof(struct keyrequest, attributemask) == 24, "KEYREQUEST.ATTRIBUTEMASK at 24");
_Static_assert(offsetof(struct keyrequest, keyid) == 40, "KEYREQUEST.KEYID at 40");
_Static_assert(offsetof(struct keyrequest, miscmask) == 72, "KEYREQUEST.MISCMASK at 72");
_Static_assert(offsetof(struct keyrequest, configsvn) == 76, "KEYREQUEST.CONFIGSVN at 76");

#ifdef SGXEMU_HOST_TEST
/* Host-side unit tests (crates/samples/tests/host.rs) supply ENCLU. */
uint64_t sgxemu_test_enclu(uint64_t rax, uint64_t rbx, uint64_t rcx, uint64_t rdx);

static inline uint64_t enclu(uint64_t rax, uint64_t rbx, uint64_t rcx, uint64_t rdx) {
    return sgxemu_test_enclu(rax, rbx, rcx, rdx);
}
#else
/* ENCLU (0F 01 D7). RAX returns the leaf's status where it has one. */
static inline uint64_t enclu(uint64_t rax, uint64_t rbx, uint64_t rcx, uint64_t rdx) {
    __asm__ volatile(".byte 0x0f, 0x01, 0xd7" : "+a"(rax), "+b"(rbx), "+c"(rcx), "+d"(rdx) : : "memory", "cc");
    return rax;
}
#endif

static inline void sgx_ereport(const struct targetinfo *ti, const struct reportdata *rd, struct report *out) {
    enclu(ENCLU_EREPORT, (uintptr_t)ti, (uintptr_t)rd, (uintptr_t)out);
}

/* Returns EGETKEY's status (0 on success). */
static inline uint64_t sgx_egetkey(const struct keyrequest *kr, uint8_t key[16]) {
    return enclu(ENCLU_EGETKEY, (uintptr_t)kr, (uintptr_t)key, 0);
}

/* Returns EACCEPT's status (0 on success). */
static inline uint64_t sgx_eaccept(const struct secinfo *si, uint64_t page) {
    return enclu(ENCLU_EACCEPT, (uintptr_t)si, page, 0);
}

static inline void sgx_emodpe(const struct secinfo *si, uint64_t page) {
    enclu(ENCLU_EMODPE, (uintptr_t)si, page, 0);
}

/* Returns EACCEPTCOPY's status (0 on success). */
static inline uint64_t sgx_eacceptcopy(const struct secinfo *si, uint64_t dst, uint64_t src) {
    return enclu(ENCLU_EACCEPTCOPY, (uintptr_t)si, dst, src);
}

#endif
