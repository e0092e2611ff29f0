/*
 * Unit test for core/base/sha256.c: the FIPS 180-2 example vectors, every
 * padding edge (lengths around 55/56/64 bytes), the same input fed in
 * odd-sized pieces, and random data checked against sha256sum(1).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/base.h"
#include "tests/tap.h"

/* Hash len bytes of data, fed in pieces of `step` bytes (0: at once). */
static void
hash_steps(const void *data, size_t len, size_t step, char hex[65])
{
	struct sha256_ctx	c;
	uint8_t			d[SHA256_LEN];
	const uint8_t		*p = data;
	size_t			n;

	sha256_init(&c);
	if (step == 0)
		step = len ? len : 1;
	while (len > 0) {
		n = MIN(step, len);
		sha256_update(&c, p, n);
		p += n;
		len -= n;
	}
	sha256_final(&c, d);
	sha256_hex(d, hex);
}

/* FIPS 180-2 appendix B and the usual extra vectors. */
static int
t_vectors(void)
{
	static const struct {
		const char	*in;
		const char	*out;
	} v[] = {
		{ "", "e3b0c44298fc1c149afbf4c8996fb924"
		    "27ae41e4649b934ca495991b7852b855" },
		{ "abc", "ba7816bf8f01cfea414140de5dae2223"
		    "b00361a396177a9cb410ff61f20015ad" },
		{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		    "248d6a61d20638b8e5c026930c3e6039"
		    "a33ce45964ff2167f6ecedd419db06c1" },
		{ "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
		    "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
		    "cf5b16a778af8380036ce59e7b049237"
		    "0b249b11e8f07a51afac45037afee9d1" },
	};
	char	hex[65];
	size_t	i, step;

	for (i = 0; i < ARRAY_SIZE(v); i++) {
		for (step = 0; step < 8; step++) {
			hash_steps(v[i].in, strlen(v[i].in), step, hex);
			if (strcmp(hex, v[i].out) != 0) {
				tap_diag("vector %zu step %zu: %s", i, step,
				    hex);
				return TAP_FAIL;
			}
		}
	}
	sha256_buf("abc", 3, hex);
	TAP_CHECK(strcmp(hex, v[1].out) == 0);
	return TAP_PASS;
}

/* One million 'a' (FIPS 180-2 B.3), in pieces that straddle blocks. */
static int
t_million_a(void)
{
	char	*buf, hex[65];

	buf = xmalloc(1000000);
	memset(buf, 'a', 1000000);
	hash_steps(buf, 1000000, 0, hex);
	TAP_CHECK_GOTO(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67"
	    "f1809a48a497200e046d39ccc7112cd0") == 0, fail);
	hash_steps(buf, 1000000, 997, hex);
	TAP_CHECK_GOTO(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67"
	    "f1809a48a497200e046d39ccc7112cd0") == 0, fail);
	free(buf);
	return TAP_PASS;
fail:
	free(buf);
	return TAP_FAIL;
}

/* Ask sha256sum(1) for the digest of len bytes of buf.  0 or -errno. */
static int
sha256sum(const uint8_t *buf, size_t len, char hex[65])
{
	char	path[] = "/tmp/sha256_test.XXXXXX", cmd[128];
	FILE	*f;
	int	fd, ok;

	if ((fd = mkstemp(path)) == -1)
		return -errno;
	ok = write(fd, buf, len) == (ssize_t)len;
	close(fd);
	snprintf(cmd, sizeof(cmd), "sha256sum %s", path);
	if (!ok || (f = popen(cmd, "r")) == NULL) {
		unlink(path);
		return -EIO;
	}
	ok = fscanf(f, "%64s", hex) == 1;
	ok = pclose(f) == 0 && ok;
	unlink(path);
	return ok ? 0 : -EIO;
}

/* Random data of every length around the padding edges, and big ones,
 * against sha256sum. */
static int
t_random_vs_sha256sum(void)
{
	static const size_t	lens[] = { 1, 54, 55, 56, 57, 63, 64, 65, 119,
	    120, 127, 128, 129, 1000, 4096, 65537, 1 << 20 };
	uint8_t			*buf;
	char			 want[65], got[65];
	size_t			 i, j;

	if (system("command -v sha256sum >/dev/null 2>&1") != 0) {
		tap_diag("sha256sum not installed (coreutils)");
		return TAP_SKIP;
	}
	srandom(getpid());
	buf = xmalloc(1 << 20);
	for (i = 0; i < ARRAY_SIZE(lens); i++) {
		for (j = 0; j < lens[i]; j++)
			buf[j] = random();
		TAP_CHECK_GOTO(sha256sum(buf, lens[i], want) == 0, fail);
		hash_steps(buf, lens[i], 0, got);
		TAP_CHECK_GOTO(strcmp(want, got) == 0, fail);
		hash_steps(buf, lens[i], 1 + random() % 200, got);
		TAP_CHECK_GOTO(strcmp(want, got) == 0, fail);
	}
	free(buf);
	return TAP_PASS;
fail:
	tap_diag("length %zu", lens[i]);
	free(buf);
	return TAP_FAIL;
}

static const struct tap_case cases[] = {
	{ "FIPS 180-2 vectors, any split", t_vectors },
	{ "one million 'a'", t_million_a },
	{ "random data matches sha256sum", t_random_vs_sha256sum },
};

int
main(void)
{
	return tap_run(cases, ARRAY_SIZE(cases), 60);
}
