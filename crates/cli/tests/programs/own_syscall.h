// A system call made by the test program's own `syscall` instruction, not the C library's
// `syscall()` (whose instruction lies in the C library): the kernel's result, -errno on
// failure. What programs that bypass the C library (Go, Gramine's loader) do.
#ifndef OWN_SYSCALL_H
#define OWN_SYSCALL_H

static inline long own_syscall6(long n, long a, long b, long c, long d, long e, long f) {
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

static inline long own_syscall4(long n, long a, long b, long c, long d) {
    return own_syscall6(n, a, b, c, d, 0, 0);
}

static inline long own_syscall3(long n, long a, long b, long c) {
    return own_syscall6(n, a, b, c, 0, 0, 0);
}

#endif
