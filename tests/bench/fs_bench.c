/*
 * fs_bench: file-system operation rates in one directory, for comparing a
 * fusefs mount with the native directory behind it (tests/bench/fusefs-bench
 * runs it on both and prints the ratios).
 *
 *   fs_bench meta DIR N         create, stat and unlink N empty files:
 *                               create_per_s=.. stat_per_s=.. unlink_per_s=..
 *   fs_bench seq DIR MB [RAW]   write DIR/seq.data (MB MiB in 1 MiB writes,
 *                               then fsync), read it back cold and warm:
 *                               write_mb_s=.. read_cold_mb_s=.. read_warm_mb_s=..
 *
 * Cold: before the first read the file's cached pages are dropped with
 * posix_fadvise(POSIX_FADV_DONTNEED), in DIR and, when DIR is a mount of
 * directory RAW, in RAW too (the server's reads would otherwise come from
 * the host's page cache).  Nothing is asserted; timings are printed.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK	(1 << 20)

static double
now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what, const char *path)
{
	fprintf(stderr, "fs_bench: %s %s: %s\n", what, path, strerror(errno));
	exit(1);
}

static int
meta(const char *dir, long n)
{
	struct stat	 st;
	char		 p[4096];
	double		 t0, t1, t2, t3;
	long		 i;
	int		 fd;

	t0 = now();
	for (i = 0; i < n; i++) {
		snprintf(p, sizeof(p), "%s/m%ld", dir, i);
		if ((fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0644)) < 0)
			die("create", p);
		close(fd);
	}
	t1 = now();
	for (i = 0; i < n; i++) {
		snprintf(p, sizeof(p), "%s/m%ld", dir, i);
		if (stat(p, &st) != 0)
			die("stat", p);
	}
	t2 = now();
	for (i = 0; i < n; i++) {
		snprintf(p, sizeof(p), "%s/m%ld", dir, i);
		if (unlink(p) != 0)
			die("unlink", p);
	}
	t3 = now();
	printf("create_per_s=%.0f stat_per_s=%.0f unlink_per_s=%.0f\n",
	    n / (t1 - t0), n / (t2 - t1), n / (t3 - t2));
	return 0;
}

/* Drop path's cached pages (its data must be on disk already). */
static void
drop(const char *path)
{
	int	fd;

	if ((fd = open(path, O_RDONLY)) < 0)
		die("open", path);
	if (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0)
		fprintf(stderr, "fs_bench: fadvise %s failed: reads may "
		    "be warm\n", path);
	close(fd);
}

/* Read path to its end in CHUNK reads; MB/s. */
static double
read_all(const char *path, char *buf, long mb)
{
	double	t0;
	ssize_t	n;
	int	fd;

	if ((fd = open(path, O_RDONLY)) < 0)
		die("open", path);
	t0 = now();
	while ((n = read(fd, buf, CHUNK)) > 0)
		;
	if (n < 0)
		die("read", path);
	close(fd);
	return mb / (now() - t0);
}

static int
seq(const char *dir, long mb, const char *raw)
{
	char	 p[4096], rp[4096], *buf;
	double	 t0, w, rc, rw;
	long	 i;
	int	 fd;

	if ((buf = malloc(CHUNK)) == NULL)
		die("malloc", "buffer");
	/* Incompressible, so no layer can cheat. */
	srandom(42);
	for (i = 0; i < CHUNK / (long)sizeof(long); i++)
		((long *)buf)[i] = random() ^ (random() << 31);
	snprintf(p, sizeof(p), "%s/seq.data", dir);
	if ((fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644)) < 0)
		die("create", p);
	t0 = now();
	for (i = 0; i < mb; i++) {
		buf[0] = (char)i;
		if (write(fd, buf, CHUNK) != CHUNK)
			die("write", p);
	}
	if (fsync(fd) != 0)
		die("fsync", p);
	w = mb / (now() - t0);
	close(fd);
	drop(p);
	if (raw != NULL) {
		snprintf(rp, sizeof(rp), "%s/seq.data", raw);
		drop(rp);
	}
	rc = read_all(p, buf, mb);
	rw = read_all(p, buf, mb);
	if (unlink(p) != 0)
		die("unlink", p);
	printf("write_mb_s=%.1f read_cold_mb_s=%.1f read_warm_mb_s=%.1f\n",
	    w, rc, rw);
	free(buf);
	return 0;
}

int
main(int argc, char **argv)
{
	long	n;

	if (argc >= 4 && strcmp(argv[1], "meta") == 0 &&
	    (n = atol(argv[3])) > 0)
		return meta(argv[2], n);
	if ((argc == 4 || argc == 5) && strcmp(argv[1], "seq") == 0 &&
	    (n = atol(argv[3])) > 0)
		return seq(argv[2], n, argc == 5 ? argv[4] : NULL);
	fprintf(stderr, "usage: fs_bench meta DIR N | seq DIR MB [RAW]\n");
	return 2;
}
