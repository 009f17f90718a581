/*
 * A stand-in for the kernel's vDSO to link against (soname linux-vdso.so.1, version
 * LINUX_2.6), as Fortanix's runner does: it gives a program DT_NEEDED linux-vdso.so.1 and
 * versioned references. At run time the dynamic linker uses the vDSO it already has for
 * that name, never this file.
 */
int __vdso_sgx_enter_enclave(void) { return -38; }
int __vdso_clock_gettime(void) { return -38; }
