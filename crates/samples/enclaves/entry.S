/*
 * enclave_entry: the ELF entry point, where EENTER lands (TCS.OENTRY).
 *
 * In:  RAX = CSSA, RBX = TCS address, RCX = address after the host's ENCLU,
 *      RDI = struct call * (host memory), RSP/RBP = the host's stack.
 * The stack top of each thread is its TCS address (the stack pages lie just below it).
 *
 * CSSA != 0 means an entry after an AEX (an exception handler entry): the samples have no
 * handler, so they EEXIT at once. Otherwise: call enclave_main(call, tcs) on the enclave
 * stack with a clean ABI state (DF = 0, default MXCSR and x87 control word), put the host's
 * RSP and MXCSR/FCW back, scrub the scratch registers, EEXIT to the saved RCX.
 *
 * R12 and R13 carry the host RSP and RCX across the call (enclave_main preserves them);
 * the host side's wrapper saves its callee-saved registers itself. RBP is never touched
 * here and C preserves it: the vDSO needs it after EEXIT.
 */
    .text
    .globl enclave_entry
    .type enclave_entry, @function
    .p2align 4
enclave_entry:
    test    %rax, %rax
    jnz     .Laex_entry

    mov     %rsp, %r12              /* host stack */
    mov     %rcx, %r13              /* where EEXIT returns to */
    mov     %rbx, %rsp              /* stack top = TCS (page-aligned, so 16-aligned) */
    cld
    sub     $16, %rsp
    stmxcsr (%rsp)                  /* the host's MXCSR and FCW, restored on the way out */
    fnstcw  4(%rsp)
    movl    $0x1f80, 8(%rsp)
    ldmxcsr 8(%rsp)
    movw    $0x037f, 12(%rsp)
    fldcw   12(%rsp)

    mov     %rbx, %rsi              /* enclave_main(rdi = host call, rsi = TCS) */
    call    enclave_main

    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    mov     %r12, %rsp
    mov     %r13, %rbx
    xor     %ecx, %ecx              /* leave no enclave values behind */
    xor     %edx, %edx
    xor     %esi, %esi
    xor     %edi, %edi
    xor     %r8d, %r8d
    xor     %r9d, %r9d
    xor     %r10d, %r10d
    xor     %r11d, %r11d
    pxor    %xmm0, %xmm0
    pxor    %xmm1, %xmm1
    pxor    %xmm2, %xmm2
    pxor    %xmm3, %xmm3
    pxor    %xmm4, %xmm4
    pxor    %xmm5, %xmm5
    pxor    %xmm6, %xmm6
    pxor    %xmm7, %xmm7
    pxor    %xmm8, %xmm8
    pxor    %xmm9, %xmm9
    pxor    %xmm10, %xmm10
    pxor    %xmm11, %xmm11
    pxor    %xmm12, %xmm12
    pxor    %xmm13, %xmm13
    pxor    %xmm14, %xmm14
    pxor    %xmm15, %xmm15
    mov     $4, %eax                /* EEXIT to RBX */
    .byte   0x0f, 0x01, 0xd7
    ud2

.Laex_entry:
    mov     %rcx, %rbx              /* EEXIT straight back */
    mov     $4, %eax
    .byte   0x0f, 0x01, 0xd7
    ud2
    .size enclave_entry, . - enclave_entry

    .section .note.GNU-stack, "", @progbits
