/*
 * SHA-256 (FIPS 180-4, section 6.2): the image store names every blob by
 * it, and none of our libraries exports one.  Two compression functions:
 * portable C, and one on the x86 SHA extensions (several times faster,
 * which is most of a pull's CPU time), chosen once per process by CPUID.
 * SMX_SHA256_GENERIC=1 in the environment forces the C one, so tests
 * cover both.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define HAVE_SHA_NI	1
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "core/base/base.h"

/* Compress n 64-byte blocks at p into the state h. */
typedef void	blocks_fn(uint32_t h[8], const uint8_t *p, size_t n);

/* Section 4.2.2: the first 32 bits of the fractional parts of the cube
 * roots of the first 64 primes. */
static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
	0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
	0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
	0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
	0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
	0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
	0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n)	(((x) >> (n)) | ((x) << (32 - (n))))

/* One 64-byte block into the running state, section 6.2.2. */
static void
block_generic(uint32_t h[8], const uint8_t *p)
{
	uint32_t	w[64], a, b, c, d, e, f, g, hh, t1, t2;
	int		i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		    (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (i = 16; i < 64; i++)
		w[i] = (ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^
		    (w[i - 2] >> 10)) + w[i - 7] +
		    (ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^
		    (w[i - 15] >> 3)) + w[i - 16];
	a = h[0]; b = h[1]; c = h[2]; d = h[3];
	e = h[4]; f = h[5]; g = h[6]; hh = h[7];
	for (i = 0; i < 64; i++) {
		t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) +
		    ((e & f) ^ (~e & g)) + K[i] + w[i];
		t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) +
		    ((a & b) ^ (a & c) ^ (b & c));
		hh = g; g = f; f = e; e = d + t1;
		d = c; c = b; b = a; a = t1 + t2;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d;
	h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static void
blocks_generic(uint32_t h[8], const uint8_t *p, size_t n)
{
	for (; n > 0; n--, p += 64)
		block_generic(h, p);
}

#ifdef HAVE_SHA_NI
/*
 * The SHA extensions (Intel SDM vol. 2: SHA256RNDS2, SHA256MSG1,
 * SHA256MSG2).  SHA256RNDS2 runs two rounds on the state held as
 * (A,B,E,F) and (C,D,G,H), A and C in the high dword, taking W[t] + K[t]
 * of its two rounds from the low two dwords of its third operand; the
 * (A,B,E,F) it was given is then the (C,D,G,H) of the next two rounds.
 * Message words sit one per dword, W[t] lowest.  Only these functions are
 * compiled for SHA and SSE4.1; blocks_shani() runs only where CPUID says
 * the CPU has them.
 */
#define SHA_TARGET	__attribute__((target("sha,sse4.1")))

/*
 * The schedule words W[t..t+3] (section 6.2.2 step 1) from the four
 * groups before them: a = W[t-16..t-13], b = W[t-12..t-9],
 * c = W[t-8..t-5], d = W[t-4..t-1].  MSG1 gives W[t-16+i] +
 * s0(W[t-15+i]); W[t-7..t-4] is added here; MSG2 adds s1(W[t-2+i]),
 * where W[t+2] and W[t+3] need the words it is computing.
 */
static inline SHA_TARGET __m128i
sched(__m128i a, __m128i b, __m128i c, __m128i d)
{
	__m128i	x;

	x = _mm_sha256msg1_epu32(a, b);
	x = _mm_add_epi32(x, _mm_alignr_epi8(d, c, 4));
	return _mm_sha256msg2_epu32(x, d);
}

/* Four rounds t..t+3 with schedule words w = W[t..t+3]. */
static inline SHA_TARGET void
rounds4(__m128i *abef, __m128i *cdgh, __m128i w, const uint32_t *k)
{
	__m128i	wk, t;

	wk = _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)k));
	t = _mm_sha256rnds2_epu32(*cdgh, *abef, wk);
	*cdgh = *abef;
	/* The upper two W + K into the low half for the next two. */
	*abef = _mm_sha256rnds2_epu32(*cdgh, t, _mm_shuffle_epi32(wk, 0x0e));
	*cdgh = t;
}

static SHA_TARGET void
blocks_shani(uint32_t h[8], const uint8_t *p, size_t n)
{
	/* Byte order within each dword reversed: the words are
	 * big-endian. */
	const __m128i	bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11,
			    4, 5, 6, 7, 0, 1, 2, 3);
	__m128i		abef, cdgh, abef0, cdgh0, w0, w1, w2, w3;
	int		t;

	abef = _mm_set_epi32(h[0], h[1], h[4], h[5]);
	cdgh = _mm_set_epi32(h[2], h[3], h[6], h[7]);
	for (; n > 0; n--, p += 64) {
		abef0 = abef;
		cdgh0 = cdgh;
		w0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)p),
		    bswap);
		w1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)
		    (p + 16)), bswap);
		w2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)
		    (p + 32)), bswap);
		w3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)
		    (p + 48)), bswap);
		rounds4(&abef, &cdgh, w0, K);
		rounds4(&abef, &cdgh, w1, K + 4);
		rounds4(&abef, &cdgh, w2, K + 8);
		rounds4(&abef, &cdgh, w3, K + 12);
		/* w0..w3 roll forward: each new group replaces the
		 * oldest. */
		for (t = 16; t < 64; t += 16) {
			w0 = sched(w0, w1, w2, w3);
			rounds4(&abef, &cdgh, w0, K + t);
			w1 = sched(w1, w2, w3, w0);
			rounds4(&abef, &cdgh, w1, K + t + 4);
			w2 = sched(w2, w3, w0, w1);
			rounds4(&abef, &cdgh, w2, K + t + 8);
			w3 = sched(w3, w0, w1, w2);
			rounds4(&abef, &cdgh, w3, K + t + 12);
		}
		abef = _mm_add_epi32(abef, abef0);
		cdgh = _mm_add_epi32(cdgh, cdgh0);
	}
	h[0] = _mm_extract_epi32(abef, 3);
	h[1] = _mm_extract_epi32(abef, 2);
	h[4] = _mm_extract_epi32(abef, 1);
	h[5] = _mm_extract_epi32(abef, 0);
	h[2] = _mm_extract_epi32(cdgh, 3);
	h[3] = _mm_extract_epi32(cdgh, 2);
	h[6] = _mm_extract_epi32(cdgh, 1);
	h[7] = _mm_extract_epi32(cdgh, 0);
}

/* SHA (leaf 7 EBX bit 29) and the SSSE3 and SSE4.1 shuffles and
 * extracts used around it (leaf 1 ECX bits 9 and 19). */
static bool
cpu_has_sha(void)
{
	unsigned	a, b, c, d;

	if (!__get_cpuid(1, &a, &b, &c, &d) ||
	    (c & (1u << 9)) == 0 || (c & (1u << 19)) == 0)
		return false;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return false;
	return (b & (1u << 29)) != 0;
}
#endif /* HAVE_SHA_NI */

/*
 * The compression function of this process, chosen on first use.  Threads
 * may race to choose; they choose alike, and the atomics keep the race
 * defined.
 */
static blocks_fn *
blocks(void)
{
	static blocks_fn	*chosen;
	blocks_fn		*f;
	const char		*env;

	if ((f = __atomic_load_n(&chosen, __ATOMIC_RELAXED)) != NULL)
		return f;
	f = blocks_generic;
	env = getenv("SMX_SHA256_GENERIC");
#ifdef HAVE_SHA_NI
	if ((env == NULL || env[0] == '\0' || strcmp(env, "0") == 0) &&
	    cpu_has_sha())
		f = blocks_shani;
#endif
	(void)env;
	__atomic_store_n(&chosen, f, __ATOMIC_RELAXED);
	return f;
}

void
sha256_init(struct sha256_ctx *c)
{
	/* Section 5.3.3: square roots of the first 8 primes. */
	static const uint32_t	iv[8] = {
		0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
	};

	memcpy(c->h, iv, sizeof(iv));
	c->len = 0;
	c->nbuf = 0;
}

void
sha256_update(struct sha256_ctx *c, const void *data, size_t len)
{
	const uint8_t	*p = data;
	size_t		 n;

	c->len += len;
	if (c->nbuf > 0) {
		n = MIN(len, sizeof(c->buf) - c->nbuf);
		memcpy(c->buf + c->nbuf, p, n);
		c->nbuf += n;
		p += n;
		len -= n;
		if (c->nbuf < sizeof(c->buf))
			return;
		blocks()(c->h, c->buf, 1);
		c->nbuf = 0;
	}
	if (len >= 64) {
		blocks()(c->h, p, len / 64);
		p += len & ~(size_t)63;
		len &= 63;
	}
	if (len > 0) {
		memcpy(c->buf, p, len);
		c->nbuf = len;
	}
}

void
sha256_final(struct sha256_ctx *c, uint8_t out[SHA256_LEN])
{
	uint64_t	bits = c->len * 8;
	int		i;

	/* Section 5.1.1: a 1 bit, zeros to 56 mod 64, the bit length. */
	c->buf[c->nbuf++] = 0x80;
	if (c->nbuf > 56) {
		memset(c->buf + c->nbuf, 0, 64 - c->nbuf);
		blocks()(c->h, c->buf, 1);
		c->nbuf = 0;
	}
	memset(c->buf + c->nbuf, 0, 56 - c->nbuf);
	for (i = 0; i < 8; i++)
		c->buf[56 + i] = bits >> (56 - 8 * i);
	blocks()(c->h, c->buf, 1);
	for (i = 0; i < 8; i++) {
		out[4 * i] = c->h[i] >> 24;
		out[4 * i + 1] = c->h[i] >> 16;
		out[4 * i + 2] = c->h[i] >> 8;
		out[4 * i + 3] = c->h[i];
	}
	memset(c, 0, sizeof(*c));
}

void
sha256_hex(const uint8_t d[SHA256_LEN], char out[SHA256_HEX_LEN + 1])
{
	static const char	hex[] = "0123456789abcdef";
	int			i;

	for (i = 0; i < SHA256_LEN; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 0xf];
	}
	out[SHA256_HEX_LEN] = '\0';
}

void
sha256_buf(const void *data, size_t len, char out[SHA256_HEX_LEN + 1])
{
	struct sha256_ctx	c;
	uint8_t			d[SHA256_LEN];

	sha256_init(&c);
	sha256_update(&c, data, len);
	sha256_final(&c, d);
	sha256_hex(d, out);
}
