/*
 * fsx FILE [-N ops] [-S seed] [-l maxlen]: a seeded random sequence of
 * file operations on FILE (write, truncate, read, mmap read, mmap write,
 * fallocate, copy_file_range) checked against an in-memory copy of what
 * the file must hold.  After every operation the size and the touched
 * range are verified, and the whole file every 64 operations.  On a
 * mismatch it prints the seed, the operation number and the last
 * operations, and exits 1.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* note() and fail() take their formats from the fixed strings below with
 * long long arguments; the caller's types are not checked. */
#pragma GCC diagnostic ignored "-Wformat-nonliteral"

enum { OP_WRITE, OP_TRUNC, OP_READ, OP_MAPREAD, OP_MAPWRITE, OP_FALLOC,
    OP_COPY, OP_NUM };
static const char *opnames[] = { "write", "truncate", "read", "mapread",
    "mapwrite", "fallocate", "copy_file_range" };

static uint8_t	*ref, *tmp;
static off_t	 size, maxlen = 256 * 1024;
static int	 fd;
static unsigned long long seed;
static long	 opno;
static char	 hist[16][96];

static uint64_t
rnd(void)
{
	/* splitmix64: a fixed sequence per seed on every host. */
	uint64_t	z = (seed += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void
note(const char *fmt, long long a, long long b, long long c)
{
	snprintf(hist[opno % 16], sizeof(hist[0]), "%ld ", opno);
	snprintf(hist[opno % 16] + strlen(hist[opno % 16]),
	    sizeof(hist[0]) - strlen(hist[opno % 16]), fmt, a, b, c);
}

static void __attribute__((noreturn))
fail(const char *fmt, long long a, long long b)
{
	long	i;

	fprintf(stderr, "fsx: op %ld: ", opno);
	fprintf(stderr, fmt, a, b);
	fprintf(stderr, "\nfsx: last operations:\n");
	for (i = opno - 15; i <= opno; i++)
		if (i >= 0)
			fprintf(stderr, "  %s\n", hist[i % 16]);
	exit(1);
}

/* Compare [off, off + len) of the file with the reference. */
static void
check(off_t off, size_t len)
{
	struct stat	st;
	ssize_t		n;
	size_t		i;

	if (fstat(fd, &st) < 0)
		fail("fstat: %lld %lld", errno, 0);
	if (st.st_size != size)
		fail("size %lld, expected %lld", st.st_size, size);
	if (off >= size)
		return;
	if (off + (off_t)len > size)
		len = size - off;
	if ((n = pread(fd, tmp, len, off)) != (ssize_t)len)
		fail("pread returned %lld, expected %lld", n, len);
	if (memcmp(tmp, ref + off, len) != 0) {
		for (i = 0; i < len && tmp[i] == ref[off + i]; i++)
			;
		fail("content differs at %lld (got 0x%02llx)", off + i,
		    tmp[i]);
	}
}

static void
fill(uint8_t *p, size_t len)
{
	size_t	i;

	for (i = 0; i < len; i++)
		p[i] = (uint8_t)(opno * 7 + i * 13 + (i >> 8));
	if (len > 0)
		p[0] = (uint8_t)rnd();
}

/* Grow or shrink the reference to n, zeroing new bytes. */
static void
ref_resize(off_t n)
{
	if (n > size)
		memset(ref + size, 0, n - size);
	size = n;
}

int
main(int argc, char **argv)
{
	long		 nops = 100000, i;
	const char	*path;
	off_t		 off, off2;
	size_t		 len;
	ssize_t		 n;
	uint8_t		*map;
	int		 ch, op, mode, counts[OP_NUM] = { 0 };
	unsigned long long seed0 = 1;

	while ((ch = getopt(argc, argv, "N:S:l:")) != -1) {
		switch (ch) {
		case 'N': nops = atol(optarg); break;
		case 'S': seed0 = strtoull(optarg, NULL, 0); break;
		case 'l': maxlen = atol(optarg); break;
		default:
			fprintf(stderr, "usage: fsx [-N ops] [-S seed] "
			    "[-l maxlen] FILE\n");
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: fsx [-N ops] [-S seed] [-l maxlen] "
		    "FILE\n");
		return 2;
	}
	path = argv[optind];
	seed = seed0;
	if ((fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644)) < 0) {
		perror(path);
		return 1;
	}
	ref = calloc(1, maxlen);
	tmp = calloc(1, maxlen);
	for (opno = 0; opno < nops; opno++) {
		op = (int)(rnd() % OP_NUM);
		off = (off_t)(rnd() % maxlen);
		len = (size_t)(rnd() % (maxlen - off) % 65536) + 1;
		if (off + (off_t)len > maxlen)
			len = maxlen - off;
		counts[op]++;
		switch (op) {
		case OP_WRITE:
			note("write %lld %lld", off, len, 0);
			if (off + (off_t)len > size)
				ref_resize(off + len);
			fill(ref + off, len);
			if ((n = pwrite(fd, ref + off, len, off)) !=
			    (ssize_t)len)
				fail("pwrite returned %lld errno %lld", n,
				    errno);
			break;
		case OP_TRUNC:
			note("truncate %lld", off, 0, 0);
			if (ftruncate(fd, off) < 0)
				fail("ftruncate: errno %lld %lld", errno, 0);
			ref_resize(off);
			break;
		case OP_READ:
			note("read %lld %lld", off, len, 0);
			break;	/* check() below reads it */
		case OP_MAPREAD:
		case OP_MAPWRITE:
			if (size == 0) {
				note("map skipped (empty)", 0, 0, 0);
				break;
			}
			off %= size;
			if (off + (off_t)len > size)
				len = size - off;
			note(op == OP_MAPREAD ? "mapread %lld %lld" :
			    "mapwrite %lld %lld", off, len, 0);
			off2 = off & ~(off_t)4095;
			map = mmap(NULL, len + (off - off2), PROT_READ |
			    PROT_WRITE, MAP_SHARED, fd, off2);
			if (map == MAP_FAILED)
				fail("mmap: errno %lld %lld", errno, 0);
			if (op == OP_MAPREAD) {
				if (memcmp(map + (off - off2), ref + off,
				    len) != 0)
					fail("mapped content differs in "
					    "[%lld, +%lld)", off, len);
			} else {
				fill(ref + off, len);
				memcpy(map + (off - off2), ref + off, len);
				if (msync(map, len + (off - off2),
				    MS_SYNC) < 0)
					fail("msync: errno %lld %lld", errno,
					    0);
			}
			munmap(map, len + (off - off2));
			break;
		case OP_FALLOC:
			mode = (int)(rnd() % 4);
			note("fallocate mode %lld %lld %lld", mode, off, len);
			if (mode == 0) {
				if (fallocate(fd, 0, off, len) < 0)
					fail("fallocate: errno %lld %lld",
					    errno, 0);
				if (off + (off_t)len > size)
					ref_resize(off + len);
			} else if (mode == 1) {
				if (fallocate(fd, FALLOC_FL_KEEP_SIZE, off,
				    len) < 0)
					fail("fallocate keep: errno %lld %lld",
					    errno, 0);
			} else if (mode == 2) {
				if (fallocate(fd, FALLOC_FL_PUNCH_HOLE |
				    FALLOC_FL_KEEP_SIZE, off, len) < 0)
					fail("punch: errno %lld %lld", errno,
					    0);
				if (off < size)
					memset(ref + off, 0, (off + (off_t)len >
					    size ? size - off : (off_t)len));
			} else {
				if (fallocate(fd, FALLOC_FL_ZERO_RANGE, off,
				    len) < 0)
					fail("zero range: errno %lld %lld",
					    errno, 0);
				if (off + (off_t)len > size)
					ref_resize(off + len);
				memset(ref + off, 0, len);
			}
			break;
		case OP_COPY:
			/* Within the file, source inside it, ranges apart. */
			if (size == 0) {
				note("copy skipped (empty)", 0, 0, 0);
				break;
			}
			off2 = (off_t)(rnd() % size);
			if (off2 + (off_t)len > size)
				len = size - off2;
			if ((off2 < off + (off_t)len &&
			    off < off2 + (off_t)len) || len == 0) {
				note("copy skipped (overlap)", 0, 0, 0);
				break;
			}
			note("copy %lld -> %lld len %lld", off2, off, len);
			{
				loff_t	in = off2, out = off;
				size_t	done = 0;

				while (done < len) {
					n = copy_file_range(fd, &in, fd, &out,
					    len - done, 0);
					if (n <= 0)
						fail("copy_file_range returned "
						    "%lld errno %lld", n,
						    errno);
					done += n;
				}
			}
			if (off + (off_t)len > size)
				ref_resize(off + len);
			memmove(ref + off, ref + off2, len);
			break;
		}
		check(off, len);
		if (opno % 64 == 63)
			check(0, size);
	}
	check(0, size);
	printf("fsx: seed %llu: %ld operations passed (", seed0, nops);
	for (i = 0; i < OP_NUM; i++)
		printf("%s%s %d", i ? ", " : "", opnames[i], counts[i]);
	printf(")\n");
	close(fd);
	return 0;
}
