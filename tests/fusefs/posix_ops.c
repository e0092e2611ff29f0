/*
 * posix_ops DIR: run a fixed script of POSIX operations inside DIR (which
 * must be empty) and print, one line each, what every operation returned
 * (value or errno name), then a listing of the resulting tree with the
 * stat fields that do not depend on when or where it ran.  The fusefs
 * conformance test runs it on a fusefs mount and on a native directory
 * and diffs the two outputs.  Run as root (it checks ownership changes
 * and permission refusals as another user).
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int	dfd;		/* the directory under test */

/* Print the result of one operation: its value, or the errno's name. */
static long
show(const char *what, long rc)
{
	if (rc < 0)
		printf("%-40s -> -1 %s\n", what, strerrorname_np(errno));
	else
		printf("%-40s -> %ld\n", what, rc);
	return rc;
}
#define OP(expr)	show(#expr, (long)(expr))
/* Opens print 0 or the errno: descriptor numbers differ between runs. */
#define OPENOK(expr) do {						\
	int	fd_ = (expr);						\
	show(#expr, fd_ < 0 ? -1 : 0);					\
	if (fd_ >= 0)							\
		close(fd_);						\
} while (0)

/* Create file name with content s. */
static void
mkfile(const char *name, const char *s, mode_t mode)
{
	int	fd;

	if ((fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC, mode)) < 0) {
		show(name, -1);
		return;
	}
	if (s != NULL && write(fd, s, strlen(s)) < 0)
		show("write", -1);
	close(fd);
}

/* Print a file's content (up to 200 bytes), or the error. */
static void
cat(const char *name)
{
	char	buf[201];
	ssize_t	n;
	int	fd;

	if ((fd = openat(dfd, name, O_RDONLY)) < 0) {
		printf("cat %s: %s\n", name, strerrorname_np(errno));
		return;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0) {
		printf("cat %s: read %s\n", name, strerrorname_np(errno));
		return;
	}
	buf[n] = '\0';
	printf("cat %s: \"%s\"\n", name, buf);
}

static void
statline(const char *name, int flags)
{
	struct stat	st;

	if (fstatat(dfd, name, &st, flags) < 0) {
		printf("stat %s: %s\n", name, strerrorname_np(errno));
		return;
	}
	printf("stat %s: mode %06o nlink %lu uid %u gid %u size %lld\n", name,
	    st.st_mode, (unsigned long)st.st_nlink, st.st_uid, st.st_gid,
	    (long long)st.st_size);
}

static void
t_perms(void)
{
	struct stat	st;
	pid_t		pid;
	int		status;

	printf("## permissions and ownership\n");
	OP(mkdirat(dfd, "perm", 0777));
	umask(022);
	mkfile("perm/f022", "x", 0666);
	umask(077);
	mkfile("perm/f077", "x", 0666);
	OP(mkdirat(dfd, "perm/d077", 0777));
	umask(0);
	mkfile("perm/f000", "x", 0666);
	OP(mkdirat(dfd, "perm/d000", 0777));
	OP(mknodat(dfd, "perm/p000", S_IFIFO | 0666, 0));
	OP(symlinkat("x", dfd, "perm/l000"));
	umask(022);
	statline("perm/f000", 0);
	statline("perm/d000", 0);
	statline("perm/p000", 0);
	statline("perm/f022", 0);
	statline("perm/f077", 0);
	statline("perm/d077", 0);
	mkfile("perm/suid", "x", 0755);
	OP(fchmodat(dfd, "perm/suid", 04755, 0));
	statline("perm/suid", 0);
	OP(fchmodat(dfd, "perm/suid", 06755, 0));
	statline("perm/suid", 0);
	/* chown of an executable drops set-user-ID (and set-group-ID with
	 * group execute) even for root. */
	OP(fchownat(dfd, "perm/suid", 1000, 1000, 0));
	statline("perm/suid", 0);
	OP(fchownat(dfd, "perm/suid", -1, 2000, 0));
	statline("perm/suid", 0);
	OP(mkdirat(dfd, "perm/sgid", 0755));
	OP(fchmodat(dfd, "perm/sgid", 02775, 0));
	OP(fchownat(dfd, "perm/sgid", 0, 3000, 0));
	/* A new entry in a set-group-ID directory takes its group. */
	mkfile("perm/sgid/f", "x", 0644);
	OP(mkdirat(dfd, "perm/sgid/d", 0755));
	statline("perm/sgid/f", 0);
	statline("perm/sgid/d", 0);
	OP(mkdirat(dfd, "perm/sticky", 0777));
	OP(fchmodat(dfd, "perm/sticky", 01777, 0));
	mkfile("perm/sticky/roots", "x", 0666);
	mkfile("perm/secret", "s", 0600);
	mkfile("perm/public", "p", 0644);
	OP(mkdirat(dfd, "perm/closed", 0700));
	mkfile("perm/closed/f", "c", 0644);
	OP(symlinkat("target", dfd, "perm/link"));
	OP(fchownat(dfd, "perm/link", 1000, 1000, AT_SYMLINK_NOFOLLOW));
	statline("perm/link", AT_SYMLINK_NOFOLLOW);

	/* As an unprivileged user: the server must refuse what the kernel
	 * would (the mount has no default_permissions). */
	fflush(stdout);
	if ((pid = fork()) == 0) {
		if (setgroups(0, NULL) < 0 || setresgid(1000, 1000, 1000) < 0 ||
		    setresuid(1000, 1000, 1000) < 0)
			_exit(99);
		printf("# as uid 1000\n");
		OPENOK(openat(dfd, "perm/secret", O_RDONLY));
		OPENOK(openat(dfd, "perm/public", O_RDONLY));
		OPENOK(openat(dfd, "perm/public", O_WRONLY));
		OPENOK(openat(dfd, "perm/new", O_WRONLY | O_CREAT, 0644));
		OPENOK(openat(dfd, "perm/closed/f", O_RDONLY));
		OP(faccessat(dfd, "perm/secret", R_OK, 0));
		OP(faccessat(dfd, "perm/public", R_OK, 0));
		OP(faccessat(dfd, "perm/public", W_OK, 0));
		OP(fchmodat(dfd, "perm/public", 0666, 0));
		OP(fchownat(dfd, "perm/suid", 1000, 1000, 0));
		OP(fchownat(dfd, "perm/public", 1000, 1000, 0));
		OP(fchmodat(dfd, "perm/suid", 0700, 0));
		OP(unlinkat(dfd, "perm/public", 0));
		OP(mkdirat(dfd, "perm/sticky/mine", 0755));
		mkfile("perm/sticky/minef", "m", 0644);
		OP(unlinkat(dfd, "perm/sticky/roots", 0));
		OP(renameat(dfd, "perm/sticky/roots", dfd, "perm/sticky/x"));
		OP(unlinkat(dfd, "perm/sticky/minef", 0));
		OP(fstatat(dfd, "perm/closed/f", &st, 0));
		fflush(stdout);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	printf("child status %d\n", status);
}

static void
t_rename(void)
{
	printf("## rename\n");
	OP(mkdirat(dfd, "ren", 0755));
	mkfile("ren/a", "a", 0644);
	mkfile("ren/b", "b", 0644);
	OP(renameat(dfd, "ren/a", dfd, "ren/b"));
	cat("ren/a");
	cat("ren/b");
	OP(mkdirat(dfd, "ren/d1", 0755));
	OP(mkdirat(dfd, "ren/d2", 0755));
	OP(mkdirat(dfd, "ren/full", 0755));
	mkfile("ren/full/x", "x", 0644);
	OP(renameat(dfd, "ren/b", dfd, "ren/d1"));
	OP(renameat(dfd, "ren/d1", dfd, "ren/b"));
	OP(renameat(dfd, "ren/d1", dfd, "ren/d2"));
	OP(renameat(dfd, "ren/d2", dfd, "ren/full"));
	OP(renameat(dfd, "ren/full", dfd, "ren/full/sub"));
	OP(renameat(dfd, "ren/b", dfd, "ren/b"));
	OP(renameat(dfd, "ren/missing", dfd, "ren/c"));
	mkfile("ren/c", "c", 0644);
	OP(renameat2(dfd, "ren/c", dfd, "ren/b", RENAME_NOREPLACE));
	OP(renameat2(dfd, "ren/c", dfd, "ren/e", RENAME_NOREPLACE));
	OP(renameat2(dfd, "ren/e", dfd, "ren/full", RENAME_EXCHANGE));
	cat("ren/e/x");
	cat("ren/full");
	OP(renameat2(dfd, "ren/e", dfd, "ren/nothere", RENAME_EXCHANGE));
	OP(renameat2(dfd, "ren/e", dfd, "ren/full",
	    RENAME_EXCHANGE | RENAME_NOREPLACE));
	/* Renaming over a hard link of the same inode is a no-op. */
	OP(linkat(dfd, "ren/b", dfd, "ren/b2", 0));
	OP(renameat(dfd, "ren/b", dfd, "ren/b2"));
	statline("ren/b", 0);
	/* Rename into another directory, with an open fd surviving. */
	{
		int	fd = openat(dfd, "ren/b2", O_RDWR);
		char	buf[8] = "";

		OP(renameat(dfd, "ren/b2", dfd, "ren/e/moved"));
		OP(pwrite(fd, "Z", 1, 1));
		OP(pread(fd, buf, sizeof(buf), 0));
		printf("via moved fd: \"%s\"\n", buf);
		close(fd);
	}
	cat("ren/e/moved");
}

static void
t_links(void)
{
	struct stat	a, b;

	printf("## hard links and symlinks\n");
	OP(mkdirat(dfd, "ln", 0755));
	mkfile("ln/f", "data", 0644);
	OP(linkat(dfd, "ln/f", dfd, "ln/g", 0));
	OP(linkat(dfd, "ln/f", dfd, "ln/h", 0));
	statline("ln/f", 0);
	if (fstatat(dfd, "ln/f", &a, 0) == 0 &&
	    fstatat(dfd, "ln/g", &b, 0) == 0)
		printf("same inode f g: %d\n", a.st_ino == b.st_ino &&
		    a.st_dev == b.st_dev);
	OP(unlinkat(dfd, "ln/f", 0));
	statline("ln/g", 0);
	OP(linkat(dfd, "ln/g", dfd, "ln/h", 0));
	OP(linkat(dfd, "ln", dfd, "ln/dirlink", 0));
	OP(symlinkat("g", dfd, "ln/rel"));
	OP(symlinkat("/nonexistent/abs/target", dfd, "ln/abs"));
	OP(symlinkat("nothing-here", dfd, "ln/dangling"));
	OP(symlinkat("rel", dfd, "ln/chain"));
	OP(symlinkat("loop2", dfd, "ln/loop1"));
	OP(symlinkat("loop1", dfd, "ln/loop2"));
	OP(symlinkat("x", dfd, "ln/g"));
	{
		char	buf[256];
		ssize_t	n;
		const char *names[] = { "ln/rel", "ln/abs", "ln/dangling",
		    "ln/chain", "ln/g" };
		size_t	i;

		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			n = readlinkat(dfd, names[i], buf, sizeof(buf));
			if (n >= 0) {
				buf[n] = '\0';
				printf("readlink %s: \"%s\" %zd\n", names[i],
				    buf, n);
			} else
				printf("readlink %s: %s\n", names[i],
				    strerrorname_np(errno));
		}
		n = readlinkat(dfd, "ln/abs", buf, 4);
		printf("readlink short: %zd \"%.4s\"\n", n, buf);
	}
	cat("ln/chain");
	cat("ln/dangling");
	cat("ln/loop1");
	statline("ln/rel", 0);
	statline("ln/rel", AT_SYMLINK_NOFOLLOW);
	statline("ln/dangling", 0);
	OPENOK(openat(dfd, "ln/rel", O_RDONLY | O_NOFOLLOW));
	OPENOK(openat(dfd, "ln/dangling", O_WRONLY | O_CREAT | O_EXCL, 0644));
	mkfile("ln/dangling", "created through a dangling link", 0644);
	cat("ln/nothing-here");
}

static void
t_sparse(void)
{
	struct stat	st;
	int		fd;
	off_t		o;

	printf("## sparse files, SEEK_DATA/SEEK_HOLE, offsets above 4 GiB\n");
	if ((fd = openat(dfd, "sparse", O_RDWR | O_CREAT, 0644)) < 0) {
		show("open sparse", -1);
		return;
	}
	OP(pwrite(fd, "one", 3, 1 << 20));
	OP(pwrite(fd, "two", 3, 10 << 20));
	OP(fsync(fd));
	fstat(fd, &st);
	printf("size %lld sparse %d\n", (long long)st.st_size,
	    st.st_blocks * 512 < st.st_size / 2);
	for (o = 0; o <= (11 << 20); o += (1 << 19)) {
		printf("at %lld: data %lld hole %lld\n", (long long)o,
		    (long long)lseek(fd, o, SEEK_DATA),
		    (long long)lseek(fd, o, SEEK_HOLE));
	}
	OP(ftruncate(fd, 0));
	OP(pwrite(fd, "big", 3, 5LL << 30));
	fstat(fd, &st);
	printf("5G size %lld sparse %d\n", (long long)st.st_size,
	    st.st_blocks < 1024);
	{
		char	buf[8] = "";

		OP(pread(fd, buf, 3, 5LL << 30));
		printf("5G read \"%s\"\n", buf);
		OP(pread(fd, buf, 3, (5LL << 30) - 1));
		OP(pread(fd, buf, 8, (5LL << 30) + 3));
	}
	printf("5G data from 0: %lld\n", (long long)lseek(fd, 0, SEEK_DATA));
	printf("5G hole from 5G: %lld\n",
	    (long long)lseek(fd, 5LL << 30, SEEK_HOLE));
	printf("SEEK_DATA past end: %lld %s\n",
	    (long long)lseek(fd, 6LL << 30, SEEK_DATA),
	    strerrorname_np(errno));
	OP(ftruncate(fd, 6LL << 30));
	OP(fstat(fd, &st) == 0 ? st.st_size : -1);
	OP(fallocate(fd, 0, 0, 65536));
	OP(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096));
	printf("after punch: data %lld\n", (long long)lseek(fd, 0, SEEK_DATA));
	close(fd);
}

static void
t_xattr(void)
{
	char	buf[256], *p;
	ssize_t	n;
	int	fd;

	printf("## xattrs\n");
	mkfile("xa", "x", 0644);
	if ((fd = openat(dfd, "xa", O_RDONLY)) < 0)
		return;
	OP(fsetxattr(fd, "user.one", "1", 1, 0));
	OP(fsetxattr(fd, "user.two", "22", 2, 0));
	OP(fsetxattr(fd, "user.empty", "", 0, 0));
	OP(fsetxattr(fd, "user.one", "x", 1, XATTR_CREATE));
	OP(fsetxattr(fd, "user.three", "x", 1, XATTR_REPLACE));
	OP(fsetxattr(fd, "user.one", "111", 3, XATTR_REPLACE));
	OP(fgetxattr(fd, "user.one", NULL, 0));
	n = fgetxattr(fd, "user.one", buf, sizeof(buf));
	printf("get one: %zd \"%.*s\"\n", n, (int)(n > 0 ? n : 0), buf);
	OP(fgetxattr(fd, "user.one", buf, 1));
	OP(fgetxattr(fd, "user.empty", buf, sizeof(buf)));
	OP(fgetxattr(fd, "user.none", buf, sizeof(buf)));
	OP(fsetxattr(fd, "bogus.ns", "x", 1, 0));
	n = flistxattr(fd, buf, sizeof(buf));
	printf("list:");
	/* Order is the file system's; the native one is the reference. */
	for (p = buf; n > 0 && p < buf + n; p += strlen(p) + 1)
		printf(" %s", p);
	printf("\n");
	OP(flistxattr(fd, NULL, 0));
	OP(flistxattr(fd, buf, 3));
	OP(fremovexattr(fd, "user.two"));
	OP(fremovexattr(fd, "user.two"));
	close(fd);
	OP(getxattr("/nonexistent", "user.x", buf, 1));
	OP(symlinkat("xa", dfd, "xalink"));
	OP(fchdir(dfd));
	OP(lsetxattr("xalink", "user.l", "1", 1, 0));
	OP(getxattr("xalink", "user.one", buf, sizeof(buf)));
	OP(lgetxattr("xalink", "user.one", buf, sizeof(buf)));
	OP(mkdirat(dfd, "xad", 0755));
	OP(setxattr("xad", "user.dir", "d", 1, 0));
	OP(getxattr("xad", "user.dir", buf, sizeof(buf)));
	OP(setxattr("xad", "trusted.t", "t", 1, 0));
	OP(getxattr("xad", "trusted.t", buf, sizeof(buf)));
}

static void
t_flags(void)
{
	char	buf[64] = "";
	int	fd;

	printf("## O_APPEND, O_TRUNC, O_EXCL, misc\n");
	mkfile("ap", "start", 0644);
	if ((fd = openat(dfd, "ap", O_WRONLY | O_APPEND)) >= 0) {
		OP(write(fd, "+one", 4));
		OP(lseek(fd, 0, SEEK_SET));
		OP(write(fd, "+two", 4));
		/* Linux: pwrite on an O_APPEND fd appends anyway. */
		OP(pwrite(fd, "+three", 6, 0));
		OP(lseek(fd, 0, SEEK_CUR));
		close(fd);
	}
	cat("ap");
	if ((fd = openat(dfd, "ap", O_RDWR | O_TRUNC)) >= 0) {
		struct stat st;

		fstat(fd, &st);
		printf("after O_TRUNC size %lld\n", (long long)st.st_size);
		OP(write(fd, "new", 3));
		close(fd);
	}
	cat("ap");
	OPENOK(openat(dfd, "ap", O_WRONLY | O_CREAT | O_EXCL, 0644));
	OPENOK(openat(dfd, "ap", O_RDONLY | O_DIRECTORY));
	OPENOK(openat(dfd, "ap/x", O_RDONLY));
	OPENOK(openat(dfd, ".", O_WRONLY));
	OP(mkdirat(dfd, "ap", 0755));
	OP(mkdirat(dfd, "m", 0755));
	mkfile("m/f", "f", 0644);
	OP(unlinkat(dfd, "m", AT_REMOVEDIR));
	OP(unlinkat(dfd, "m", 0));
	OP(unlinkat(dfd, "m/f/x", 0));
	OP(unlinkat(dfd, "m/f", AT_REMOVEDIR));
	OP(unlinkat(dfd, "m/f", 0));
	OP(unlinkat(dfd, "m", AT_REMOVEDIR));
	OP(mknodat(dfd, "fifo", S_IFIFO | 0640, 0));
	OP(mknodat(dfd, "regnod", S_IFREG | 0600, 0));
	OP(truncate("ap", 100));
	{
		struct timespec	ts[2] = { { 1000000000, 123456789 },
		    { 1200000000, 987654321 } };
		struct stat	st;

		OP(utimensat(dfd, "ap", ts, 0));
		fstatat(dfd, "ap", &st, 0);
		printf("times %lld.%09ld %lld.%09ld\n",
		    (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
		    (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
		ts[0].tv_nsec = UTIME_OMIT;
		ts[1].tv_sec = 1300000000;
		ts[1].tv_nsec = 5;
		OP(utimensat(dfd, "ap", ts, 0));
		fstatat(dfd, "ap", &st, 0);
		printf("times %lld.%09ld %lld.%09ld\n",
		    (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
		    (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
	}
	/* An unlinked file stays usable through its fd. */
	if ((fd = openat(dfd, "gone", O_RDWR | O_CREAT, 0644)) >= 0) {
		OP(unlinkat(dfd, "gone", 0));
		OP(write(fd, "still", 5));
		OP(pread(fd, buf, sizeof(buf), 0));
		OP(fchmod(fd, 0600));
		close(fd);
	}
}

static void
t_mmap(void)
{
	char	buf[8192], *p;
	int	fd, i, ok;

	printf("## mmap\n");
	if ((fd = openat(dfd, "mm", O_RDWR | O_CREAT, 0644)) < 0)
		return;
	for (i = 0; i < (int)sizeof(buf); i++)
		buf[i] = (char)('a' + i % 26);
	OP(write(fd, buf, sizeof(buf)));
	p = mmap(NULL, sizeof(buf), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		show("mmap", -1);
		close(fd);
		return;
	}
	printf("mmap read ok %d\n", memcmp(p, buf, sizeof(buf)) == 0);
	memcpy(p + 100, "MMAPWRITE", 9);
	memcpy(p + 5000, "SECONDPAGE", 10);
	OP(msync(p, sizeof(buf), MS_SYNC));
	memset(buf, 0, sizeof(buf));
	OP(pread(fd, buf, sizeof(buf), 0));
	ok = memcmp(buf + 100, "MMAPWRITE", 9) == 0 &&
	    memcmp(buf + 5000, "SECONDPAGE", 10) == 0;
	printf("read sees mmap writes %d\n", ok);
	OP(pwrite(fd, "PW", 2, 200));
	printf("mmap sees pwrite %d\n", memcmp(p + 200, "PW", 2) == 0);
	munmap(p, sizeof(buf));
	close(fd);
	/* Through a fresh open, after the mapping is gone. */
	if ((fd = openat(dfd, "mm", O_RDONLY)) >= 0) {
		OP(pread(fd, buf, 9, 100));
		printf("reopened: \"%.9s\"\n", buf);
		p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		printf("shared writable map of O_RDONLY: %s\n",
		    p == MAP_FAILED ? strerrorname_np(errno) : "mapped");
		close(fd);
	}
}

/* The tree, sorted, with stat fields that do not depend on time or
 * place; hard links are shown as the first path with that inode. */
struct ent {
	char	path[512];
	dev_t	dev;
	ino_t	ino;
};
static struct ent	seen[4096];
static int		nseen;

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
listing(int parent, const char *rel)
{
	DIR		*d;
	struct dirent	*e;
	struct stat	 st;
	char		*names[1024], path[512], link[256];
	int		 n = 0, i, j, fd;
	ssize_t		 ln;

	if ((fd = openat(parent, rel, O_RDONLY | O_DIRECTORY)) < 0 ||
	    (d = fdopendir(fd)) == NULL) {
		printf("list %s: %s\n", rel, strerrorname_np(errno));
		return;
	}
	while ((e = readdir(d)) != NULL && n < 1024)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			names[n++] = strdup(e->d_name);
	closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_str);
	for (i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", rel, names[i]);
		if (fstatat(dfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			printf("%s: %s\n", path, strerrorname_np(errno));
			continue;
		}
		printf("%s %06o %lu %u:%u", path, st.st_mode,
		    (unsigned long)st.st_nlink, st.st_uid, st.st_gid);
		if (!S_ISDIR(st.st_mode))
			printf(" %lld", (long long)st.st_size);
		if (S_ISLNK(st.st_mode) &&
		    (ln = readlinkat(dfd, path, link, sizeof(link) - 1)) >= 0) {
			link[ln] = '\0';
			printf(" -> %s", link);
		}
		for (j = 0; j < nseen; j++)
			if (seen[j].ino == st.st_ino && seen[j].dev == st.st_dev)
				printf(" = %s", seen[j].path);
		if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && j == nseen &&
		    nseen < 4096) {
			snprintf(seen[nseen].path, sizeof(seen[0].path), "%s",
			    path);
			seen[nseen].dev = st.st_dev;
			seen[nseen++].ino = st.st_ino;
		}
		printf("\n");
		if (S_ISDIR(st.st_mode))
			listing(dfd, path);
		free(names[i]);
	}
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: posix_ops EMPTY-DIR\n");
		return 2;
	}
	if ((dfd = open(argv[1], O_RDONLY | O_DIRECTORY)) < 0) {
		perror(argv[1]);
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	t_perms();
	t_rename();
	t_links();
	t_sparse();
	t_xattr();
	t_flags();
	t_mmap();
	printf("## tree\n");
	listing(dfd, ".");
	return 0;
}
