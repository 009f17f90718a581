/*
 * AES-128-CMAC (RFC 4493) on AES-NI: what EREPORT uses to MAC a REPORT with the target's
 * report key (SDM Vol. 3D §38, EREPORT), so VERIFY can recompute it after EGETKEY.
 */
#include "cmac.h"

#include <emmintrin.h>
#include <wmmintrin.h>

void sgxemu_wipe(void *p, size_t n) {
    volatile uint8_t *b = p;
    while (n--)
        *b++ = 0;
}

int sgxemu_ct_equal(const void *a, const void *b, size_t n) {
    const volatile uint8_t *x = a, *y = b;
    uint8_t diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (uint8_t)(x[i] ^ y[i]);
    return ((diff - 1u) >> 8) & 1; /* diff == 0 -> 1, else 0, without a branch */
}

/* One AES-128 key-expansion round; assist = AESKEYGENASSIST(prev, rcon). */
static __m128i expand_round(__m128i prev, __m128i assist) {
    assist = _mm_shuffle_epi32(assist, 0xFF);
    prev = _mm_xor_si128(prev, _mm_slli_si128(prev, 4));
    prev = _mm_xor_si128(prev, _mm_slli_si128(prev, 4));
    prev = _mm_xor_si128(prev, _mm_slli_si128(prev, 4));
    return _mm_xor_si128(prev, assist);
}

/* AESKEYGENASSIST takes the round constant as an immediate, hence a macro. */
#define EXPAND(i, rcon) rk[i] = expand_round(rk[(i) - 1], _mm_aeskeygenassist_si128(rk[(i) - 1], (rcon)))

static void aes128_expand(const uint8_t key[16], __m128i rk[11]) {
    rk[0] = _mm_loadu_si128((const __m128i *)key);
    EXPAND(1, 0x01);
    EXPAND(2, 0x02);
    EXPAND(3, 0x04);
    EXPAND(4, 0x08);
    EXPAND(5, 0x10);
    EXPAND(6, 0x20);
    EXPAND(7, 0x40);
    EXPAND(8, 0x80);
    EXPAND(9, 0x1B);
    EXPAND(10, 0x36);
}

static __m128i aes128_encrypt(const __m128i rk[11], __m128i block) {
    block = _mm_xor_si128(block, rk[0]);
    for (int i = 1; i < 10; i++)
        block = _mm_aesenc_si128(block, rk[i]);
    return _mm_aesenclast_si128(block, rk[10]);
}

/* Doubling in GF(2^128), big-endian bytes, x^128 + x^7 + x^2 + x + 1 (RFC 4493 §2.3). */
static void gf_double(uint8_t out[16], const uint8_t in[16]) {
    uint8_t msb = in[0] >> 7;
    for (int i = 0; i < 15; i++)
        out[i] = (uint8_t)((in[i] << 1) | (in[i + 1] >> 7));
    out[15] = (uint8_t)((in[15] << 1) ^ (0x87 & (0u - msb)));
}

void sgxemu_aes128_cmac(const uint8_t key[16], const uint8_t *msg, size_t len, uint8_t mac[16]) {
    __m128i rk[11];
    uint8_t l[16], k1[16], k2[16], last[16];

    aes128_expand(key, rk);
    _mm_storeu_si128((__m128i *)l, aes128_encrypt(rk, _mm_setzero_si128()));
    gf_double(k1, l);
    gf_double(k2, k1);

    /* n blocks; the last one is complete only for a non-empty multiple of 16 bytes. */
    size_t n = (len + 15) / 16;
    int complete = n != 0 && len % 16 == 0;
    if (n == 0)
        n = 1;

    __m128i x = _mm_setzero_si128();
    for (size_t i = 0; i + 1 < n; i++)
        x = aes128_encrypt(rk, _mm_xor_si128(x, _mm_loadu_si128((const __m128i *)(msg + 16 * i))));

    size_t rem = len - 16 * (n - 1);
    const uint8_t *tail = msg + 16 * (n - 1);
    const uint8_t *sub = complete ? k1 : k2;
    for (size_t i = 0; i < 16; i++) {
        uint8_t b = i < rem ? tail[i] : (i == rem ? 0x80 : 0);
        last[i] = b ^ sub[i];
    }
    x = aes128_encrypt(rk, _mm_xor_si128(x, _mm_loadu_si128((const __m128i *)last)));
    _mm_storeu_si128((__m128i *)mac, x);

    sgxemu_wipe(rk, sizeof rk);
    sgxemu_wipe(l, sizeof l);
    sgxemu_wipe(k1, sizeof k1);
    sgxemu_wipe(k2, sizeof k2);
    sgxemu_wipe(last, sizeof last);
}
