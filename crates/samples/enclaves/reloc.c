/*
 * The self-relocating sample: the operations of the attestation sample plus RELOCATED,
 * which works only through pointers the linker left for the program to relocate
 * (R_X86_64_RELATIVE in DT_RELA, or DT_RELR with -z pack-relative-relocs). The loader
 * measures and adds the pages as linked; this enclave adds its own load address to every
 * relocated word at its first entry, before it uses any of them, as the enclave runtimes
 * of Rust's SGX target and Intel's SDK do.
 */
#include "common.h"

/* The gABI numbers this enclave reads. */
#define DT_NULL 0
#define DT_RELA 7
#define DT_RELASZ 8
#define DT_RELRSZ 35
#define DT_RELR 36
#define R_X86_64_RELATIVE 8

struct dyn {
    int64_t tag;
    uint64_t val;
};

struct rela {
    uint64_t offset;
    uint64_t info;
    int64_t addend;
};

/* Defined by the linker; hidden, so reached RIP-relatively (no relocation needed). */
extern const struct dyn _DYNAMIC[] __attribute__((visibility("hidden")));
extern const char __ehdr_start[] __attribute__((visibility("hidden")));

/* 0: not relocated, 1: a thread is relocating, 2: done. In .bss: needs no relocation. */
static uint64_t relocation_state;
static uint64_t relocations_applied;

static uint64_t apply_rela(uint64_t base, const struct rela *r, uint64_t size) {
    uint64_t n = 0;
    for (uint64_t i = 0; i < size / sizeof *r; i++) {
        if ((r[i].info & 0xFFFFFFFF) != R_X86_64_RELATIVE)
            continue; /* R_X86_64_NONE; the loader refused every other kind */
        *(uint64_t *)(base + r[i].offset) = base + (uint64_t)r[i].addend;
        n++;
    }
    return n;
}

static uint64_t apply_relr(uint64_t base, const uint64_t *relr, uint64_t size) {
    uint64_t n = 0;
    uint64_t *where = 0;
    for (uint64_t i = 0; i < size / sizeof *relr; i++) {
        uint64_t entry = relr[i];
        if ((entry & 1) == 0) {
            where = (uint64_t *)(base + entry);
            *where++ += base;
            n++;
            continue;
        }
        for (int bit = 1; bit < 64; bit++) {
            if (entry & (1ULL << bit)) {
                where[bit - 1] += base;
                n++;
            }
        }
        where += 63;
    }
    return n;
}

/* Applies this enclave's relocations once; threads entering meanwhile wait for it. */
static void relocate_self(void) {
    if (__atomic_load_n(&relocation_state, __ATOMIC_ACQUIRE) == 2)
        return;
    uint64_t expected = 0;
    if (!__atomic_compare_exchange_n(&relocation_state, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&relocation_state, __ATOMIC_ACQUIRE) != 2)
            __builtin_ia32_pause();
        return;
    }
    uint64_t base = (uint64_t)__ehdr_start;
    uint64_t rela = 0, relasz = 0, relr = 0, relrsz = 0;
    for (const struct dyn *d = _DYNAMIC; d->tag != DT_NULL; d++) {
        switch (d->tag) {
        case DT_RELA: rela = d->val; break;
        case DT_RELASZ: relasz = d->val; break;
        case DT_RELR: relr = d->val; break;
        case DT_RELRSZ: relrsz = d->val; break;
        }
    }
    uint64_t n = 0;
    if (relasz)
        n += apply_rela(base, (const struct rela *)(base + rela), relasz);
    if (relrsz)
        n += apply_relr(base, (const uint64_t *)(base + relr), relrsz);
    relocations_applied = n;
    __atomic_store_n(&relocation_state, 2, __ATOMIC_RELEASE);
}

static uint64_t twice(uint64_t x) { return 2 * x; }
static uint64_t squared(uint64_t x) { return x * x; }
static uint64_t negated(uint64_t x) { return -x; }

/* Initialised pointers: each one a relocation. */
static uint64_t (*const functions[])(uint64_t) = {twice, squared, negated};
static const char *const words[] = {"relocate", "yourself", "enclave!"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

void enclave_main(struct call *host_call, uint64_t tcs) {
    relocate_self();
    struct call c;
    call_begin(&c, host_call);
    if (c.op == SGXEMU_OP_RELOCATED) {
        /* args: function index, its argument, word index. */
        c.ret[0] = functions[c.args[0] % COUNT(functions)](c.args[1]);
        memcpy(&c.ret[1], words[c.args[2] % COUNT(words)], 8);
        c.ret[2] = relocations_applied;
        c.ret[3] = (uint64_t)words[0] - (uint64_t)__ehdr_start;
    } else if (!common_dispatch(&c, tcs)) {
        c.ret[0] = SGXEMU_UNKNOWN_OP;
    }
    call_end(host_call, &c);
}
