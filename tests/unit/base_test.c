/*
 * Unit test for core/base: the guest-memory accessor (every edge where a
 * bounds check can go wrong: exact end, one past, wrap-around, spans over
 * two regions), whole-file reads, the state directory rule, xasprintf and
 * the alignment macros.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/base.h"
#include "tests/tap.h"

static char	tmpdir[] = "/tmp/base_test.XXXXXX";

/* Two host buffers standing in for guest RAM below and above a gap. */
static uint8_t	low[8192], high[4096];

/* A gmem with low at [0x1000, 0x3000) and high at [0x3000, 0x4000):
 * adjacent regions, so a span across the boundary looks contiguous. */
static void
two_regions(struct gmem *m)
{
	memset(m, 0, sizeof(*m));
	if (gmem_add(m, 0x1000, sizeof(low), low) != 0 ||
	    gmem_add(m, 0x3000, sizeof(high), high) != 0)
		abort();
}

/* gmem_add: zero size, NULL, wrap-around, overlap, the table limit. */
static int
t_gmem_add(void)
{
	struct gmem	m;
	static uint8_t	buf[16];
	unsigned	i;

	memset(&m, 0, sizeof(m));
	TAP_CHECK(gmem_add(&m, 0x1000, 0, buf) == -EINVAL);
	TAP_CHECK(gmem_add(&m, 0x1000, 16, NULL) == -EINVAL);
	TAP_CHECK(gmem_add(&m, UINT64_MAX - 7, 16, buf) == -EINVAL);
	TAP_CHECK(gmem_add(&m, UINT64_MAX, 2, buf) == -EINVAL);
	TAP_CHECK(m.nr == 0);

	TAP_CHECK(gmem_add(&m, 0x1000, 0x1000, buf) == 0);
	/* Same start, inside, straddling either end, covering it. */
	TAP_CHECK(gmem_add(&m, 0x1000, 0x1000, buf) == -EEXIST);
	TAP_CHECK(gmem_add(&m, 0x1800, 0x10, buf) == -EEXIST);
	TAP_CHECK(gmem_add(&m, 0x0800, 0x1000, buf) == -EEXIST);
	TAP_CHECK(gmem_add(&m, 0x1fff, 0x10, buf) == -EEXIST);
	TAP_CHECK(gmem_add(&m, 0, 0x10000, buf) == -EEXIST);
	/* Touching on either side is fine. */
	TAP_CHECK(gmem_add(&m, 0x0800, 0x800, buf) == 0);
	TAP_CHECK(gmem_add(&m, 0x2000, 0x800, buf) == 0);
	TAP_CHECK(m.nr == 3);

	for (i = 3; i < GMEM_MAX_REGIONS; i++)
		TAP_CHECK(gmem_add(&m, 0x100000 * (i + 1), 0x1000, buf) == 0);
	TAP_CHECK(m.nr == GMEM_MAX_REGIONS);
	TAP_CHECK(gmem_add(&m, 0x10000000, 0x1000, buf) == -ENOSPC);
	TAP_CHECK(m.nr == GMEM_MAX_REGIONS);
	return TAP_PASS;
}

/* gmem_ptr inside one region, at and past its edges. */
static int
t_gmem_ptr_bounds(void)
{
	struct gmem	m;

	two_regions(&m);
	TAP_CHECK(gmem_ptr(&m, 0x1000, 1) == low);
	TAP_CHECK(gmem_ptr(&m, 0x1000, sizeof(low)) == low);
	TAP_CHECK(gmem_ptr(&m, 0x1010, 0x10) == low + 0x10);
	/* The last byte, and an access ending exactly at the end. */
	TAP_CHECK(gmem_ptr(&m, 0x2fff, 1) == low + sizeof(low) - 1);
	TAP_CHECK(gmem_ptr(&m, 0x2ff0, 0x10) == low + sizeof(low) - 0x10);
	/* One byte too many, starting inside. */
	TAP_CHECK(gmem_ptr(&m, 0x2ff0, 0x11) == NULL);
	TAP_CHECK(gmem_ptr(&m, 0x1000, sizeof(low) + 1) == NULL);
	/* Below the first region, one past the last. */
	TAP_CHECK(gmem_ptr(&m, 0x0fff, 1) == NULL);
	TAP_CHECK(gmem_ptr(&m, 0x0fff, 2) == NULL);
	TAP_CHECK(gmem_ptr(&m, 0x4000, 1) == NULL);
	TAP_CHECK(gmem_ptr(&m, 0x4000, 0) == NULL);
	/* len 0: fine at any address inside, but gpa itself must be
	 * guest memory, so the address one past the end is refused. */
	TAP_CHECK(gmem_ptr(&m, 0x1000, 0) == low);
	TAP_CHECK(gmem_ptr(&m, 0x3fff, 0) == high + sizeof(high) - 1);
	TAP_CHECK(gmem_ptr(&m, 0x10000, 0) == NULL);
	/* No regions at all. */
	memset(&m, 0, sizeof(m));
	TAP_CHECK(gmem_ptr(&m, 0, 0) == NULL);
	TAP_CHECK(gmem_ptr(&m, 0x1000, 1) == NULL);
	return TAP_PASS;
}

/* Lengths and addresses chosen so a naive gpa + len check would wrap. */
static int
t_gmem_ptr_wrap(void)
{
	struct gmem	m;
	static uint8_t	top[4096];

	two_regions(&m);
	TAP_CHECK(gmem_ptr(&m, 0x1000, UINT64_MAX) == NULL);
	TAP_CHECK(gmem_ptr(&m, 0x1010, UINT64_MAX - 0xf) == NULL);
	TAP_CHECK(gmem_ptr(&m, 0x1010, UINT64_MAX - 0x100f) == NULL);
	TAP_CHECK(gmem_ptr(&m, 0x2fff, UINT64_MAX) == NULL);
	/* gpa + len wraps to exactly the region's start. */
	TAP_CHECK(gmem_ptr(&m, 0x2000, UINT64_MAX - 0xfff) == NULL);
	TAP_CHECK(gmem_ptr(&m, 0x1001, (uint64_t)-1) == NULL);
	TAP_CHECK(gmem_ptr(&m, 0x1fff, 1ULL << 63) == NULL);
	TAP_CHECK(gmem_ptr(&m, UINT64_MAX, 1) == NULL);
	TAP_CHECK(gmem_ptr(&m, UINT64_MAX, 0x2000) == NULL);
	TAP_CHECK(gmem_ptr(&m, 0xffffffffffff0000ULL, 0x10001) == NULL);

	/* A region at the very top of the address space (its end is 2^64,
	 * which does not fit: gmem_add refuses it)... */
	TAP_CHECK(gmem_add(&m, UINT64_MAX - sizeof(top) + 1, sizeof(top), top)
	    == -EINVAL);
	/* ...but one that ends a page short of it is fine, and accesses
	 * near the top still cannot wrap. */
	TAP_CHECK(gmem_add(&m, UINT64_MAX - 2 * sizeof(top) + 1, sizeof(top),
	    top) == 0);
	TAP_CHECK(gmem_ptr(&m, UINT64_MAX - 2 * sizeof(top) + 1,
	    sizeof(top)) == top);
	TAP_CHECK(gmem_ptr(&m, UINT64_MAX - sizeof(top), 1) ==
	    top + sizeof(top) - 1);
	TAP_CHECK(gmem_ptr(&m, UINT64_MAX - sizeof(top), 2) == NULL);
	TAP_CHECK(gmem_ptr(&m, UINT64_MAX - sizeof(top), UINT64_MAX) == NULL);
	return TAP_PASS;
}

/* Two adjacent regions are two host mappings: a span must be refused. */
static int
t_gmem_ptr_two_regions(void)
{
	struct gmem	m;
	uint8_t		buf[32];

	two_regions(&m);
	TAP_CHECK(gmem_ptr(&m, 0x2fff, 2) == NULL);
	TAP_CHECK(gmem_ptr(&m, 0x2000, 0x1001) == NULL);
	TAP_CHECK(gmem_ptr(&m, 0x1000, sizeof(low) + sizeof(high)) == NULL);
	/* Each side alone is fine. */
	TAP_CHECK(gmem_ptr(&m, 0x2fff, 1) == low + sizeof(low) - 1);
	TAP_CHECK(gmem_ptr(&m, 0x3000, 1) == high);
	TAP_CHECK(gmem_ptr(&m, 0x3000, sizeof(high)) == high);
	TAP_CHECK(gmem_read(&m, 0x2ff0, buf, sizeof(buf)) == -EFAULT);
	TAP_CHECK(gmem_write(&m, 0x2ff0, buf, sizeof(buf)) == -EFAULT);
	return TAP_PASS;
}

/* gmem_read / gmem_write copy through the right host bytes. */
static int
t_gmem_read_write(void)
{
	struct gmem	m;
	uint8_t		in[16], out[16];
	unsigned	i;

	two_regions(&m);
	memset(low, 0, sizeof(low));
	memset(high, 0, sizeof(high));
	for (i = 0; i < sizeof(in); i++)
		in[i] = 0xa0 + i;
	TAP_CHECK(gmem_write(&m, 0x2ff0, in, sizeof(in)) == 0);
	TAP_CHECK(memcmp(low + sizeof(low) - 16, in, 16) == 0);
	TAP_CHECK(high[0] == 0);
	TAP_CHECK(gmem_write(&m, 0x3ff0, in, sizeof(in)) == 0);
	TAP_CHECK(memcmp(high + sizeof(high) - 16, in, 16) == 0);
	memset(out, 0, sizeof(out));
	TAP_CHECK(gmem_read(&m, 0x3ff0, out, sizeof(out)) == 0);
	TAP_CHECK(memcmp(out, in, sizeof(in)) == 0);
	/* Failures leave the destination alone. */
	memset(out, 0x5a, sizeof(out));
	TAP_CHECK(gmem_read(&m, 0x3ff1, out, sizeof(out)) == -EFAULT);
	TAP_CHECK(gmem_read(&m, 0x500, out, 1) == -EFAULT);
	for (i = 0; i < sizeof(out); i++)
		TAP_CHECK(out[i] == 0x5a);
	TAP_CHECK(gmem_write(&m, 0x3ff1, in, sizeof(in)) == -EFAULT);
	TAP_CHECK(high[sizeof(high) - 1] == in[15]);
	/* Zero-length copies inside a region succeed. */
	TAP_CHECK(gmem_read(&m, 0x1000, out, 0) == 0);
	TAP_CHECK(gmem_write(&m, 0x1000, in, 0) == 0);
	return TAP_PASS;
}

/* Write len bytes of a pattern to a file in the temporary directory. */
static char *
tmp_file(const char *name, size_t len)
{
	char	*path;
	FILE	*f;
	size_t	 i;

	xasprintf(&path, "%s/%s", tmpdir, name);
	if ((f = fopen(path, "w")) == NULL)
		abort();
	for (i = 0; i < len; i++)
		fputc((int)(i * 7 + 1) & 0xff, f);
	if (fclose(f) != 0)
		abort();
	return path;
}

/* read_file on a regular file: whole content, NUL-terminated. */
static int
t_read_file(void)
{
	char	*path;
	uint8_t	*buf = NULL;
	size_t	 len = 0, i;

	path = tmp_file("regular", 10000);
	TAP_CHECK(read_file(path, 10000, &buf, &len) == 0);
	TAP_CHECK(len == 10000);
	for (i = 0; i < len; i++)
		TAP_CHECK(buf[i] == ((i * 7 + 1) & 0xff));
	TAP_CHECK(buf[len] == '\0');
	free(buf);
	/* One byte over the limit. */
	buf = NULL;
	TAP_CHECK(read_file(path, 9999, &buf, &len) == -EFBIG);
	TAP_CHECK(buf == NULL);
	unlink(path);
	free(path);

	path = tmp_file("empty", 0);
	len = 99;
	TAP_CHECK(read_file(path, 0, &buf, &len) == 0);
	TAP_CHECK(len == 0 && buf != NULL && buf[0] == '\0');
	free(buf);
	unlink(path);
	free(path);
	return TAP_PASS;
}

/* read_file refuses what is not a readable regular file. */
static int
t_read_file_errors(void)
{
	char	*path;
	uint8_t	*buf = NULL;
	size_t	 len;
	int	 fd;

	TAP_CHECK(read_file(tmpdir, 1 << 20, &buf, &len) == -EISDIR);
	xasprintf(&path, "%s/missing", tmpdir);
	TAP_CHECK(read_file(path, 1 << 20, &buf, &len) == -ENOENT);
	free(path);
	xasprintf(&path, "%s/fifo", tmpdir);
	TAP_CHECK(mkfifo(path, 0600) == 0);
	/* O_RDONLY on a FIFO would block without a writer: open one. */
	TAP_CHECK((fd = open(path, O_RDWR | O_CLOEXEC)) >= 0);
	TAP_CHECK(read_file(path, 1 << 20, &buf, &len) == -EINVAL);
	close(fd);
	unlink(path);
	free(path);
	TAP_CHECK(buf == NULL);
	return TAP_PASS;
}

/* smx_home() in a child with `value` as SMX_HOME (NULL: unset), since
 * the answer is computed once per process.  Returns the child's string
 * through a pipe into out. */
static int
home_in_child(const char *value, char *out, size_t outlen)
{
	int	p[2], status;
	pid_t	pid;
	ssize_t	n;

	if (pipe(p) == -1 || (pid = fork()) == -1)
		return -1;
	if (pid == 0) {
		const char	*h;

		close(p[0]);
		if (value == NULL)
			unsetenv("SMX_HOME");
		else
			setenv("SMX_HOME", value, 1);
		h = smx_home();
		/* Asked again, the same string. */
		if (h != smx_home())
			_exit(2);
		if (write(p[1], h, strlen(h)) != (ssize_t)strlen(h))
			_exit(3);
		_exit(0);
	}
	close(p[1]);
	n = read(p[0], out, outlen - 1);
	close(p[0]);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0 || n < 0)
		return -1;
	out[n] = '\0';
	return 0;
}

/* $SMX_HOME wins when set and not empty; else the root/user default. */
static int
t_smx_home(void)
{
	char		got[512], want[512];
	const char	*h;

	TAP_CHECK(home_in_child("/srv/smx-state", got, sizeof(got)) == 0);
	TAP_CHECK(strcmp(got, "/srv/smx-state") == 0);
	if (geteuid() == 0)
		snprintf(want, sizeof(want), "/var/lib/smx");
	else if ((h = getenv("HOME")) != NULL && *h != '\0')
		snprintf(want, sizeof(want), "%s/.local/share/smx", h);
	else {
		tap_diag("HOME unset: the user default is not checked");
		want[0] = '\0';
	}
	TAP_CHECK(home_in_child("", got, sizeof(got)) == 0);
	TAP_CHECK(want[0] == '\0' || strcmp(got, want) == 0);
	TAP_CHECK(home_in_child(NULL, got, sizeof(got)) == 0);
	TAP_CHECK(want[0] == '\0' || strcmp(got, want) == 0);
	return TAP_PASS;
}

/* xasprintf returns the length and a fresh, formatted string. */
static int
t_xasprintf(void)
{
	char	*s, big[5000];

	TAP_CHECK(xasprintf(&s, "%s-%d-%#x", "vm", 42, 255) == 10);
	TAP_CHECK(strcmp(s, "vm-42-0xff") == 0);
	free(s);
	TAP_CHECK(xasprintf(&s, "%s", "") == 0);
	TAP_CHECK(s != NULL && s[0] == '\0');
	free(s);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	TAP_CHECK(xasprintf(&s, "<%s>", big) == (int)sizeof(big) + 1);
	TAP_CHECK(s[0] == '<' && s[sizeof(big)] == '>' &&
	    s[sizeof(big) + 1] == '\0');
	free(s);
	return TAP_PASS;
}

/* ALIGN_UP / ALIGN_DOWN on aligned, unaligned and 64-bit values. */
static int
t_align(void)
{
	uint64_t	big = 0xfffffffff0001001ULL;
	uint32_t	small = 0x1001;

	TAP_CHECK(ALIGN_UP(0, 4096) == 0);
	TAP_CHECK(ALIGN_UP(1, 4096) == 4096);
	TAP_CHECK(ALIGN_UP(4096, 4096) == 4096);
	TAP_CHECK(ALIGN_UP(4097, 4096) == 8192);
	TAP_CHECK(ALIGN_DOWN(4095, 4096) == 0);
	TAP_CHECK(ALIGN_DOWN(4096, 4096) == 4096);
	TAP_CHECK(ALIGN_DOWN(8191, 4096) == 4096);
	TAP_CHECK(ALIGN_UP(7, 1) == 7 && ALIGN_DOWN(7, 1) == 7);
	/* The mask is built in the value's type: no 32-bit truncation of
	 * a 64-bit address. */
	TAP_CHECK(ALIGN_DOWN(big, 4096) == 0xfffffffff0001000ULL);
	TAP_CHECK(ALIGN_UP(big, 4096) == 0xfffffffff0002000ULL);
	TAP_CHECK(ALIGN_UP(big, 2 * 1024 * 1024) == 0xfffffffff0200000ULL);
	TAP_CHECK(ALIGN_UP(small, 0x1000) == 0x2000);
	TAP_CHECK(ALIGN_DOWN(small, 0x1000) == 0x1000);
	return TAP_PASS;
}

/* rm_tree_at: removes a tree with read-only directories, never follows a
 * symlink out of it, counts file bytes, and takes a missing name. */
static int
t_rm_tree(void)
{
	char		 dir[] = "/tmp/base_test.XXXXXX", p[512];
	uint64_t	 bytes = 0;
	int		 dfd, fd;
	struct stat	 st;

	TAP_CHECK(mkdtemp(dir) != NULL);
	snprintf(p, sizeof p, "%s/outside", dir);
	TAP_CHECK(mkdir(p, 0755) == 0);
	snprintf(p, sizeof p, "%s/outside/keep", dir);
	TAP_CHECK((fd = open(p, O_CREAT | O_WRONLY, 0644)) >= 0);
	TAP_CHECK(write(fd, "12345", 5) == 5);
	close(fd);
	snprintf(p, sizeof p, "%s/t", dir);
	TAP_CHECK(mkdir(p, 0755) == 0);
	snprintf(p, sizeof p, "%s/t/ro", dir);
	TAP_CHECK(mkdir(p, 0755) == 0);
	snprintf(p, sizeof p, "%s/t/ro/f", dir);
	TAP_CHECK((fd = open(p, O_CREAT | O_WRONLY, 0644)) >= 0);
	TAP_CHECK(write(fd, "abcdefghij", 10) == 10);
	close(fd);
	snprintf(p, sizeof p, "%s/t/ro", dir);
	TAP_CHECK(chmod(p, 0555) == 0);
	snprintf(p, sizeof p, "%s/t/link", dir);
	TAP_CHECK(symlink("../outside", p) == 0);
	TAP_CHECK((dfd = open(dir, O_RDONLY | O_DIRECTORY)) >= 0);
	TAP_CHECK(rm_tree_at(dfd, "t", &bytes) == 0);
	TAP_CHECK(bytes == 10);
	TAP_CHECK(fstatat(dfd, "t", &st, AT_SYMLINK_NOFOLLOW) == -1 &&
	    errno == ENOENT);
	TAP_CHECK(fstatat(dfd, "outside/keep", &st, 0) == 0 &&
	    st.st_size == 5);
	TAP_CHECK(rm_tree_at(dfd, "t", NULL) == 0);
	TAP_CHECK(rm_tree_at(dfd, "outside", NULL) == 0);
	close(dfd);
	TAP_CHECK(rmdir(dir) == 0);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "gmem_add rejects zero, NULL, wrap, overlap, too many", t_gmem_add },
	{ "gmem_ptr bounds: exact end, one past, len 0", t_gmem_ptr_bounds },
	{ "gmem_ptr cannot be fooled by wrap-around", t_gmem_ptr_wrap },
	{ "gmem_ptr refuses a span over two regions", t_gmem_ptr_two_regions },
	{ "gmem_read/gmem_write", t_gmem_read_write },
	{ "read_file: regular, empty, over maxlen", t_read_file },
	{ "read_file: directory, missing, FIFO", t_read_file_errors },
	{ "smx_home: SMX_HOME set, empty, unset", t_smx_home },
	{ "xasprintf", t_xasprintf },
	{ "ALIGN_UP / ALIGN_DOWN", t_align },
	{ "rm_tree_at: read-only dirs, symlinks not followed", t_rm_tree },
};

int
main(void)
{
	char	*cmd;
	int	 rc;

	if (mkdtemp(tmpdir) == NULL) {
		printf("1..0 # SKIP cannot create a temporary directory\n");
		return 77;
	}
	rc = tap_run(cases, ARRAY_SIZE(cases), 30);
	xasprintf(&cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		rc = 1;
	free(cmd);
	return rc;
}
