/* AES-128-CMAC (RFC 4493) with AES-NI, for VERIFY. Also built for the host's tests. */
#ifndef SGXEMU_CMAC_H
#define SGXEMU_CMAC_H

#include <stddef.h>
#include <stdint.h>

/* mac = AES-128-CMAC(key, msg[0..len)). Wipes its key schedule and subkeys. */
void sgxemu_aes128_cmac(const uint8_t key[16], const uint8_t *msg, size_t len, uint8_t mac[16]);

/* Zeroes n bytes in a way the compiler cannot drop as a dead store. */
void sgxemu_wipe(void *p, size_t n);

/* 1 if a[0..n) == b[0..n), else 0; the time taken depends only on n. */
int sgxemu_ct_equal(const void *a, const void *b, size_t n);

#endif
