/*
 * Unit test for core/base/sha256.c: the FIPS 180-4 example vectors, every
 * padding edge (lengths around 55/56/64 bytes), the same input fed in
 * odd-sized pieces, and random data checked against sha256sum(1).  Both
 * compression functions are covered: the cases run in this process (the
 * SHA extensions where the CPU has them) and again in a copy of this
 * program under SMX_SHA256_GENERIC=1 (portable C), and the two hash the
 * same pseudo-random inputs of many lengths to the same digests.  The
 * throughput of each is printed (for information; not checked).
 *   sha256_test [--cases | --digests]   (the second two: the child's parts)
 */
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/base.h"
#include "tests/tap.h"

#define BIG_LEN		(64u << 20)	/* the throughput input */

static char	self[PATH_MAX];		/* this program, to run again */

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

/* FIPS 180-4 examples (SHA256.pdf of the NIST examples page) and the
 * usual extra vectors. */
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

/* One million 'a', in pieces that straddle blocks. */
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

/* xorshift64: the same pseudo-random bytes in both processes. */
static uint64_t
next_rand(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/*
 * Print "<len> <digest whole> <digest in pieces>" for pseudo-random
 * inputs of every length to 300 bytes and around larger block multiples,
 * then "big <digest> <MB/s>" for BIG_LEN bytes.
 */
static void
print_digests(FILE *out)
{
	static const size_t	more[] = { 511, 512, 513, 1000, 4095, 4096,
	    4097, 65535, 65536, 65537, (1 << 20) + 3 };
	uint8_t			*buf;
	uint64_t		 x = 0x9e3779b97f4a7c15ull, t0, ns;
	char			 whole[65], pieces[65];
	size_t			 len, i, j;

	buf = xmalloc(BIG_LEN);
	for (i = 0; i < 301 + ARRAY_SIZE(more); i++) {
		len = i <= 300 ? i : more[i - 301];
		for (j = 0; j < len; j++)
			buf[j] = next_rand(&x);
		hash_steps(buf, len, 0, whole);
		hash_steps(buf, len, 1 + next_rand(&x) % 150, pieces);
		fprintf(out, "%zu %s %s\n", len, whole, pieces);
	}
	for (j = 0; j < BIG_LEN; j += 8) {
		next_rand(&x);
		memcpy(buf + j, &x, 8);
	}
	t0 = now_ns();
	hash_steps(buf, BIG_LEN, 0, whole);
	ns = now_ns() - t0;
	fprintf(out, "big %s %.0f\n", whole,
	    (double)BIG_LEN / 1e6 / ((double)(ns ? ns : 1) / 1e9));
	free(buf);
}

/* Run this program again with args under SMX_SHA256_GENERIC=1. */
static FILE *
run_generic(const char *args)
{
	char	cmd[PATH_MAX + 64];

	snprintf(cmd, sizeof(cmd), "SMX_SHA256_GENERIC=1 '%s' %s", self,
	    args);
	return popen(cmd, "r");
}

/* The case table below, under the portable C compression function. */
static int
t_generic_cases(void)
{
	char	line[256];
	FILE	*f;

	TAP_CHECK((f = run_generic("--cases")) != NULL);
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		tap_diag("generic: %s", line);
	}
	TAP_CHECK(pclose(f) == 0);
	return TAP_PASS;
}

/* This process's compression function and the portable one agree. */
static int
t_paths_agree(void)
{
	char	*mine = NULL, line[256], want[256], hex[65];
	char		*save, *l, *mbs = NULL;
	const char	*env = getenv("SMX_SHA256_GENERIC");
	size_t		 size = 0;
	FILE		*m, *f;
	bool		 sha = false;

#if defined(__x86_64__) || defined(__i386__)
	unsigned	a, b, c, d;

	/* As core/base/sha256.c decides (for the message only). */
	sha = __get_cpuid_count(7, 0, &a, &b, &c, &d) &&
	    (b & (1u << 29)) != 0 &&
	    (env == NULL || env[0] == '\0' || strcmp(env, "0") == 0);
#endif
	tap_diag("this process: %s", sha ? "SHA extensions" :
	    "portable C (no SHA extensions, or forced)");
	TAP_CHECK((m = open_memstream(&mine, &size)) != NULL);
	print_digests(m);
	fclose(m);
	TAP_CHECK_GOTO((f = run_generic("--digests")) != NULL, fail);
	l = strtok_r(mine, "\n", &save);
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		/* The child printed more lines than we did. */
		TAP_CHECK_GOTO(l != NULL, fail_close);
		snprintf(want, sizeof(want), "%s", l);
		if (strncmp(line, "big ", 4) == 0) {
			/* The digest must match; the speeds are shown. */
			mbs = strrchr(want, ' ');
			TAP_CHECK_GOTO(mbs != NULL &&
			    sscanf(line, "big %64s", hex) == 1 &&
			    strncmp(want, "big ", 4) == 0 &&
			    strncmp(want + 4, hex, 64) == 0, fail_close);
			tap_diag("%u MiB: this process %s MB/s, portable C "
			    "%s MB/s", BIG_LEN >> 20, mbs + 1,
			    strrchr(line, ' ') + 1);
		} else if (strcmp(line, want) != 0) {
			tap_diag("mismatch: \"%s\" vs generic \"%s\"", want,
			    line);
			goto fail_close;
		}
		l = strtok_r(NULL, "\n", &save);
	}
	TAP_CHECK_GOTO(pclose(f) == 0, fail);
	/* Every line compared, the last one "big". */
	TAP_CHECK_GOTO(l == NULL && mbs != NULL, fail);
	free(mine);
	return TAP_PASS;
fail_close:
	pclose(f);
fail:
	free(mine);
	return TAP_FAIL;
}

/* Run in both processes. */
static const struct tap_case cases[] = {
	{ "FIPS 180-4 vectors, any split", t_vectors },
	{ "one million 'a'", t_million_a },
	{ "random data matches sha256sum", t_random_vs_sha256sum },
};

/* Run here only: the generic path in a child. */
static const struct tap_case all[] = {
	{ "FIPS 180-4 vectors, any split", t_vectors },
	{ "one million 'a'", t_million_a },
	{ "random data matches sha256sum", t_random_vs_sha256sum },
	{ "the same cases under SMX_SHA256_GENERIC=1", t_generic_cases },
	{ "random lengths: both paths give one digest", t_paths_agree },
};

int
main(int argc, char **argv)
{
	ssize_t	n;

	if (argc > 1 && strcmp(argv[1], "--cases") == 0)
		return tap_run(cases, ARRAY_SIZE(cases), 60);
	if (argc > 1 && strcmp(argv[1], "--digests") == 0) {
		print_digests(stdout);
		return 0;
	}
	if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) < 0) {
		perror("readlink /proc/self/exe");
		return 1;
	}
	self[n] = '\0';
	return tap_run(all, ARRAY_SIZE(all), 120);
}
