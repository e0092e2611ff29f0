/*
 * Unit test for image/unpack.c: layers are written here with libarchive's
 * writer and applied to a scratch root.  Covers every entry type with its
 * metadata, the three compressions and tar dialects, whiteouts and opaque
 * directories across two layers, type changes between layers, sparse
 * files, and hostile layers: after each of those the call must fail with
 * a reason and nothing may appear outside the root.
 */
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"
#include "tests/tap.h"

static char	tmpdir[] = "/tmp/unpack_test.XXXXXX";
static char	rootdir[128], outside[128], layer[128], secret[160];

enum { F_NONE, F_GZIP, F_ZSTD };
enum { T_PAX, T_GNU, T_USTAR };

/* One archive entry to write.  type: 'f' file, 'd' dir, 'l' symlink
 * (data = target), 'h' hardlink (data = target), 'p' fifo, 'c' char
 * device (rdev 1:3), 's' sparse file (1 MiB, data at both ends). */
struct ent {
	const char	*path;
	char		 type;
	unsigned	 mode;
	const char	*data;
	int64_t		 uid, gid;
	time_t		 mtime;
	const char	*xname, *xval;
};

/* An entry without xattrs. */
#define E(p, t, m, d, u, g, tm) { p, t, m, d, u, g, tm, NULL, NULL }

#define SPARSE_SIZE	(1 << 20)

/* Write entries as a layer file with the given compression and format. */
static int
write_layer(const char *file, int filter, int format, const struct ent *ents,
    size_t n)
{
	struct archive		*a;
	struct archive_entry	*e;
	size_t			 i;
	int			 rc = -1;

	a = archive_write_new();
	if (format == T_GNU)
		archive_write_set_format_gnutar(a);
	else if (format == T_USTAR)
		archive_write_set_format_ustar(a);
	else
		archive_write_set_format_pax_restricted(a);
	if (filter == F_GZIP)
		archive_write_add_filter_gzip(a);
	else if (filter == F_ZSTD)
		archive_write_add_filter_zstd(a);
	else
		archive_write_add_filter_none(a);
	if (archive_write_open_filename(a, file) != ARCHIVE_OK)
		goto out;
	for (i = 0; i < n; i++) {
		const struct ent *t = &ents[i];

		e = archive_entry_new();
		archive_entry_set_pathname(e, t->path);
		archive_entry_set_perm(e, t->mode ? t->mode : 0644);
		archive_entry_set_uid(e, t->uid);
		archive_entry_set_gid(e, t->gid);
		archive_entry_set_mtime(e, t->mtime ? t->mtime : 1000000, 0);
		switch (t->type) {
		case 'f':
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_size(e, t->data ? strlen(t->data) : 0);
			break;
		case 's':
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_size(e, SPARSE_SIZE);
			archive_entry_sparse_add_entry(e, 0, 4);
			archive_entry_sparse_add_entry(e, SPARSE_SIZE - 4, 4);
			break;
		case 'd':
			archive_entry_set_filetype(e, AE_IFDIR);
			archive_entry_set_perm(e, t->mode ? t->mode : 0755);
			break;
		case 'l':
			archive_entry_set_filetype(e, AE_IFLNK);
			archive_entry_set_symlink(e, t->data);
			break;
		case 'h':
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_hardlink(e, t->data);
			archive_entry_set_size(e, 0);
			break;
		case 'p':
			archive_entry_set_filetype(e, AE_IFIFO);
			break;
		case 'c':
			archive_entry_set_filetype(e, AE_IFCHR);
			archive_entry_set_rdev(e, makedev(1, 3));
			break;
		}
		if (t->xname != NULL)
			archive_entry_xattr_add_entry(e, t->xname, t->xval,
			    strlen(t->xval));
		if (archive_write_header(a, e) != ARCHIVE_OK) {
			tap_diag("write %s: %s", t->path,
			    archive_error_string(a));
			archive_entry_free(e);
			goto out;
		}
		if (t->type == 'f' && t->data != NULL)
			archive_write_data(a, t->data, strlen(t->data));
		if (t->type == 's') {
			/* The writer takes the whole logical file and skips
			 * the holes the sparse map names. */
			char *buf = xcalloc(1, SPARSE_SIZE);

			memcpy(buf, "HEAD", 4);
			memcpy(buf + SPARSE_SIZE - 4, "TAIL", 4);
			archive_write_data(a, buf, SPARSE_SIZE);
			free(buf);
		}
		archive_entry_free(e);
	}
	if (archive_write_close(a) == ARCHIVE_OK)
		rc = 0;
out:
	archive_write_free(a);
	return rc;
}

/* A tar by hand: a PAX extended header holding the one record rec
 * ("key=value"), then the regular file "f" holding "x". */
static int
write_raw_pax(const char *file, const char *rec)
{
	uint8_t		 tar[512 * 6];
	char		 line[128];
	size_t		 len, n;
	unsigned	 sum, i, h;
	FILE		*f;

	memset(tar, 0, sizeof(tar));
	/* A record is "<length> key=value\n", the length counting itself. */
	len = strlen(rec) + 3;
	for (n = 0; n < 2; n++)	/* settles once the digits are counted */
		len = strlen(rec) + 3 + snprintf(line, sizeof(line), "%zu",
		    len) - 1;
	snprintf(line, sizeof(line), "%zu %s\n", len, rec);
	for (h = 0; h < 2; h++) {
		uint8_t *b = tar + h * 1024;

		snprintf((char *)b, 100, "%s", h == 0 ? "PaxHeaders/f" : "f");
		snprintf((char *)b + 100, 8, "%07o", 0644);
		snprintf((char *)b + 108, 8, "%07o", 0);
		snprintf((char *)b + 116, 8, "%07o", 0);
		snprintf((char *)b + 124, 12, "%011zo", h == 0 ?
		    strlen(line) : (size_t)1);
		snprintf((char *)b + 136, 12, "%011o", 1000000);
		b[156] = h == 0 ? 'x' : '0';
		memcpy(b + 257, "ustar", 6);
		memcpy(b + 263, "00", 2);
		memset(b + 148, ' ', 8);
		for (sum = 0, i = 0; i < 512; i++)
			sum += b[i];
		snprintf((char *)b + 148, 8, "%06o", sum);
		if (h == 0)
			memcpy(b + 512, line, strlen(line));
		else
			b[512] = 'x';
	}
	if ((f = fopen(file, "w")) == NULL)
		return -1;
	n = fwrite(tar, 1, sizeof(tar), f);	/* two zero blocks end it */
	return fclose(f) == 0 && n == sizeof(tar) ? 0 : -1;
}

/* rm -rf a tree (test scaffolding only). */
static void
rmtree(const char *path)
{
	char	*cmd;

	if (xasprintf(&cmd, "rm -rf '%s'", path) < 0 || system(cmd) != 0)
		abort();
	free(cmd);
}

/* A fresh empty root. */
static void
fresh_root(void)
{
	rmtree(rootdir);
	if (mkdir(rootdir, 0755) != 0)
		abort();
}

/* Apply the layer file to the root. */
static int
unpack(const char *file, unsigned flags, struct image_unpack_stats *st,
    char *err, size_t errlen)
{
	int	fd, rc;

	fd = open(rootdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		abort();
	rc = image_layer_unpack(fd, file, flags, st, err, errlen);
	close(fd);
	return rc;
}

/* Write ents and apply them. */
static int
apply(int filter, int format, const struct ent *ents, size_t n,
    unsigned flags, struct image_unpack_stats *st, char *err, size_t errlen)
{
	if (write_layer(layer, filter, format, ents, n) != 0)
		return -999;
	return unpack(layer, flags, st, err, errlen);
}

/* Read a small file below the root into buf ("" when missing). */
static const char *
slurp(const char *rel, char *buf, size_t len)
{
	char	*p;
	ssize_t	 n;
	int	 fd;

	xasprintf(&p, "%s/%s", rootdir, rel);
	buf[0] = '\0';
	fd = open(p, O_RDONLY | O_NOFOLLOW);
	free(p);
	if (fd < 0)
		return buf;
	n = read(fd, buf, len - 1);
	buf[n > 0 ? n : 0] = '\0';
	close(fd);
	return buf;
}

/* lstat below the root; -1 when missing. */
static int
rstat(const char *rel, struct stat *sb)
{
	char	*p;
	int	 rc;

	xasprintf(&p, "%s/%s", rootdir, rel);
	rc = lstat(p, sb);
	free(p);
	return rc;
}

static bool
exists(const char *rel)
{
	struct stat	sb;

	return rstat(rel, &sb) == 0;
}

/* Count a directory's entries (without . and ..). */
static int
count_dir(const char *path)
{
	DIR		*d;
	struct dirent	*de;
	int		 n = 0;

	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static nlink_t	passwd_nlink;

/* Nothing outside the root changed: tmpdir holds only root, outside and
 * layers; outside holds only the untouched secret; /etc/passwd has no
 * new link. */
static bool
sentinel_ok(void)
{
	struct stat	sb;
	char		buf[64];
	int		fd;
	ssize_t		n;

	if (count_dir(tmpdir) != 3 || count_dir(outside) != 1)
		return false;
	if (stat(secret, &sb) != 0 || sb.st_nlink != 1 || sb.st_size != 6)
		return false;
	if ((fd = open(secret, O_RDONLY)) < 0)
		return false;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n != 6 || memcmp(buf, "secret", 6) != 0)
		return false;
	if (stat("/etc/passwd", &sb) != 0 || sb.st_nlink != passwd_nlink)
		return false;
	return true;
}

/* Every entry type with owners, modes, times and xattrs. */
static int
t_types(void)
{
	static const struct ent ents[] = {
		E("./", 'd', 0711, NULL, 0, 0, 4000),
		{ "./etc/", 'd', 0750, NULL, 0, 0, 5000, "user.dir", "d" },
		{ "./etc/hello", 'f', 0640, "hello\n", 1000, 100, 6000,
		    "user.test", "abc" },
		{ "./etc/trusted", 'f', 0600, "t", 0, 0, 6000,
		    "trusted.test", "xyz" },
		E("./usr/bin/suid", 'f', 04755, "#!", 0, 0, 7000),
		E("./usr/bin/sgid", 'f', 02711, "#!", 12, 34, 7000),
		E("./etc/link", 'l', 0777, "/etc/hello", 1000, 100, 8000),
		{ "./etc/dangling", 'l', 0777, "../../../nowhere", 0, 0, 0,
		    "trusted.sym", "s" },
		E("./etc/hard", 'h', 0, "./etc/hello", 0, 0, 0),
		E("./run/fifo", 'p', 0620, NULL, 5, 6, 9000),
		E("./dev/null", 'c', 0666, NULL, 0, 0, 9000),
	};
	struct image_unpack_stats st;
	struct stat	sb, sb2;
	char		err[256], buf[64];
	ssize_t		n;
	char		*p;
	int		rc;

	fresh_root();
	rc = apply(F_NONE, T_PAX, ents, ARRAY_SIZE(ents), IMAGE_UNPACK_DEVICES |
	    IMAGE_UNPACK_OWNERS | IMAGE_UNPACK_XATTRS, &st, err, sizeof(err));
	if (rc != 0)
		tap_diag("unpack: %d %s", rc, err);
	TAP_CHECK(rc == 0);
	TAP_CHECK(st.entries == ARRAY_SIZE(ents) && st.skipped == 0);
	TAP_CHECK(st.bytes == 6 + 1 + 2 + 2);

	TAP_CHECK(stat(rootdir, &sb) == 0 && (sb.st_mode & 07777) == 0711);
	TAP_CHECK(sb.st_mtim.tv_sec == 4000);
	TAP_CHECK(rstat("etc", &sb) == 0 && S_ISDIR(sb.st_mode));
	TAP_CHECK((sb.st_mode & 07777) == 0750);
	/* Set after its children were written into it. */
	TAP_CHECK(sb.st_mtim.tv_sec == 5000);
	TAP_CHECK(strcmp(slurp("etc/hello", buf, sizeof(buf)), "hello\n") == 0);
	TAP_CHECK(rstat("etc/hello", &sb) == 0 && S_ISREG(sb.st_mode));
	TAP_CHECK((sb.st_mode & 07777) == 0640 && sb.st_uid == 1000 &&
	    sb.st_gid == 100 && sb.st_mtim.tv_sec == 6000);
	TAP_CHECK(sb.st_nlink == 2);
	TAP_CHECK(rstat("etc/hard", &sb2) == 0 && sb2.st_ino == sb.st_ino);

	TAP_CHECK(rstat("usr/bin/suid", &sb) == 0);
	TAP_CHECK((sb.st_mode & 07777) == 04755);
	TAP_CHECK(rstat("usr/bin/sgid", &sb) == 0);
	TAP_CHECK((sb.st_mode & 07777) == 02711 && sb.st_uid == 12 &&
	    sb.st_gid == 34);
	/* Parents the layer did not list: made 0755. */
	TAP_CHECK(rstat("usr", &sb) == 0 && S_ISDIR(sb.st_mode) &&
	    (sb.st_mode & 07777) == 0755);

	TAP_CHECK(rstat("etc/link", &sb) == 0 && S_ISLNK(sb.st_mode));
	TAP_CHECK(sb.st_uid == 1000 && sb.st_mtim.tv_sec == 8000);
	xasprintf(&p, "%s/etc/link", rootdir);
	n = readlink(p, buf, sizeof(buf) - 1);
	free(p);
	TAP_CHECK(n == 10 && memcmp(buf, "/etc/hello", 10) == 0);
	TAP_CHECK(rstat("etc/dangling", &sb) == 0 && S_ISLNK(sb.st_mode));

	TAP_CHECK(rstat("run/fifo", &sb) == 0 && S_ISFIFO(sb.st_mode));
	TAP_CHECK((sb.st_mode & 07777) == 0620 && sb.st_uid == 5 &&
	    sb.st_gid == 6 && sb.st_mtim.tv_sec == 9000);
	TAP_CHECK(rstat("dev/null", &sb) == 0 && S_ISCHR(sb.st_mode));
	TAP_CHECK(sb.st_rdev == makedev(1, 3) && (sb.st_mode & 0777) == 0666);

	xasprintf(&p, "%s/etc/hello", rootdir);
	n = lgetxattr(p, "user.test", buf, sizeof(buf));
	free(p);
	TAP_CHECK(n == 3 && memcmp(buf, "abc", 3) == 0);
	xasprintf(&p, "%s/etc/trusted", rootdir);
	n = lgetxattr(p, "trusted.test", buf, sizeof(buf));
	free(p);
	TAP_CHECK(n == 3 && memcmp(buf, "xyz", 3) == 0);
	xasprintf(&p, "%s/etc", rootdir);
	n = lgetxattr(p, "user.dir", buf, sizeof(buf));
	free(p);
	TAP_CHECK(n == 1 && buf[0] == 'd');
	/* On the symlink itself, not on what it names. */
	xasprintf(&p, "%s/etc/dangling", rootdir);
	n = lgetxattr(p, "trusted.sym", buf, sizeof(buf));
	free(p);
	TAP_CHECK(n == 1 && buf[0] == 's');
	TAP_CHECK(sentinel_ok());
	return TAP_PASS;
}

/* Without the flags: no device nodes or fifos, no owners, no xattrs. */
static int
t_no_flags(void)
{
	static const struct ent ents[] = {
		{ "f", 'f', 0644, "x", 1000, 1000, 0, "user.test", "abc" },
		E("fifo", 'p', 0644, NULL, 0, 0, 0),
		E("null", 'c', 0666, NULL, 0, 0, 0),
	};
	struct image_unpack_stats st;
	struct stat	sb;
	char		err[256], buf[8], *p;

	fresh_root();
	TAP_CHECK(apply(F_NONE, T_PAX, ents, ARRAY_SIZE(ents), 0, &st, err,
	    sizeof(err)) == 0);
	TAP_CHECK(st.skipped == 2 && !exists("fifo") && !exists("null"));
	TAP_CHECK(rstat("f", &sb) == 0 && sb.st_uid == getuid());
	xasprintf(&p, "%s/f", rootdir);
	TAP_CHECK(lgetxattr(p, "user.test", buf, sizeof(buf)) < 0);
	free(p);
	return TAP_PASS;
}

/* gzip, zstd and plain; pax, gnu and ustar; all detected by content. */
static int
t_compressions(void)
{
	static const struct ent ents[] = {
		E("dir/", 'd', 0755, NULL, 0, 0, 0),
		E("dir/file", 'f', 0644, "payload", 0, 0, 0),
		E("dir/l", 'l', 0777, "file", 0, 0, 0),
	};
	static const int filters[] = { F_NONE, F_GZIP, F_ZSTD };
	static const int formats[] = { T_PAX, T_GNU, T_USTAR };
	char	err[256], buf[16];
	size_t	i, j;
	int	rc;

	for (i = 0; i < ARRAY_SIZE(filters); i++)
		for (j = 0; j < ARRAY_SIZE(formats); j++) {
			fresh_root();
			rc = apply(filters[i], formats[j], ents,
			    ARRAY_SIZE(ents), 0, NULL, err, sizeof(err));
			if (rc != 0)
				tap_diag("filter %zu format %zu: %d %s", i, j,
				    rc, err);
			TAP_CHECK(rc == 0);
			TAP_CHECK(strcmp(slurp("dir/file", buf, sizeof(buf)),
			    "payload") == 0);
		}
	return TAP_PASS;
}

/* Two layers: whiteouts and an opaque directory hide the lower layer
 * only; what the upper layer brings stays. */
static int
t_whiteouts(void)
{
	static const struct ent lower[] = {
		E("a/", 'd', 0755, NULL, 0, 0, 0),
		E("a/f1", 'f', 0644, "1", 0, 0, 0),
		E("a/f2", 'f', 0644, "2", 0, 0, 0),
		E("b/", 'd', 0755, NULL, 0, 0, 0),
		E("b/x", 'f', 0644, "x", 0, 0, 0),
		E("b/sub/y", 'f', 0644, "y", 0, 0, 0),
		E("b/sub/deep/z", 'f', 0644, "z", 0, 0, 0),
		E("c", 'f', 0644, "c", 0, 0, 0),
		E("d/keep", 'f', 0644, "k", 0, 0, 0),
		E("e/", 'd', 0755, NULL, 0, 0, 0),
		E("e/gone/deeper", 'f', 0644, "k", 0, 0, 0),
	};
	static const struct ent upper[] = {
		E("a/.wh.f1", 'f', 0644, NULL, 0, 0, 0),
		E("b/", 'd', 0700, NULL, 0, 0, 0),
		E("b/new", 'f', 0644, "n", 0, 0, 0),
		E("b/sub/", 'd', 0755, NULL, 0, 0, 0),
		E("b/sub/fresh", 'f', 0644, "f", 0, 0, 0),
		/* After entries of its own layer, which it must spare. */
		E("b/.wh..wh..opq", 'f', 0644, NULL, 0, 0, 0),
		E(".wh.c", 'f', 0644, NULL, 0, 0, 0),
		E("e/.wh.gone", 'f', 0644, NULL, 0, 0, 0),
		E("new/.wh.nothing", 'f', 0644, NULL, 0, 0, 0),
		/* Made by this layer, then whited out: the whiteout only
		 * hides lower layers. */
		E("mine", 'f', 0644, "m", 0, 0, 0),
		E(".wh.mine", 'f', 0644, NULL, 0, 0, 0),
	};
	struct image_unpack_stats st;
	struct stat	sb;
	char		err[256];
	int		rc;

	fresh_root();
	TAP_CHECK(apply(F_GZIP, T_PAX, lower, ARRAY_SIZE(lower), 0, NULL,
	    err, sizeof(err)) == 0);
	rc = apply(F_GZIP, T_PAX, upper, ARRAY_SIZE(upper), 0, &st, err,
	    sizeof(err));
	if (rc != 0)
		tap_diag("upper: %s", err);
	TAP_CHECK(rc == 0);
	TAP_CHECK(!exists("a/f1") && exists("a/f2") && !exists("a/.wh.f1"));
	TAP_CHECK(!exists("b/x"));
	TAP_CHECK(exists("b/new"));
	TAP_CHECK(exists("b/sub/fresh"));
	TAP_CHECK(!exists("b/sub/y") && !exists("b/sub/deep"));
	TAP_CHECK(!exists("b/.wh..wh..opq"));
	TAP_CHECK(rstat("b", &sb) == 0 && (sb.st_mode & 07777) == 0700);
	TAP_CHECK(!exists("c") && !exists(".wh.c"));
	TAP_CHECK(exists("d/keep"));
	TAP_CHECK(exists("e") && !exists("e/gone"));
	TAP_CHECK(exists("mine"));
	TAP_CHECK(st.whiteouts == 4);
	return TAP_PASS;
}

/* A later layer turns a file into a directory and a directory into a
 * file; a symlink replaced by a file does not write through it. */
static int
t_replace(void)
{
	struct ent	lower[] = {
		E("evil", 'l', 0777, outside, 0, 0, 0),
		E("x", 'f', 0644, "file", 0, 0, 0),
		E("y/inner/deep", 'f', 0644, "deep", 0, 0, 0),
		E("z", 'l', 0777, "x", 0, 0, 0),
	};
	static const struct ent upper[] = {
		E("x/", 'd', 0755, NULL, 0, 0, 0),
		E("x/child", 'f', 0644, "child", 0, 0, 0),
		E("y", 'f', 0600, "now a file", 0, 0, 0),
		E("z", 'f', 0644, "plain", 0, 0, 0),
		E("evil/", 'd', 0755, NULL, 0, 0, 0),
		E("evil/file", 'f', 0644, "in", 0, 0, 0),
	};
	struct stat	sb;
	char		err[256], buf[32];

	fresh_root();
	TAP_CHECK(apply(F_ZSTD, T_PAX, lower, ARRAY_SIZE(lower), 0, NULL,
	    err, sizeof(err)) == 0);
	TAP_CHECK(apply(F_ZSTD, T_PAX, upper, ARRAY_SIZE(upper), 0, NULL,
	    err, sizeof(err)) == 0);
	TAP_CHECK(rstat("x", &sb) == 0 && S_ISDIR(sb.st_mode));
	TAP_CHECK(strcmp(slurp("x/child", buf, sizeof(buf)), "child") == 0);
	TAP_CHECK(rstat("y", &sb) == 0 && S_ISREG(sb.st_mode));
	TAP_CHECK(strcmp(slurp("y", buf, sizeof(buf)), "now a file") == 0);
	TAP_CHECK(rstat("z", &sb) == 0 && S_ISREG(sb.st_mode));
	TAP_CHECK(strcmp(slurp("z", buf, sizeof(buf)), "plain") == 0);
	/* The symlink was replaced by a real directory. */
	TAP_CHECK(rstat("evil", &sb) == 0 && S_ISDIR(sb.st_mode));
	TAP_CHECK(strcmp(slurp("evil/file", buf, sizeof(buf)), "in") == 0);
	TAP_CHECK(sentinel_ok());
	return TAP_PASS;
}

/* A sparse file keeps its holes and its size. */
static int
t_sparse(void)
{
	static const struct ent ents[] = {
		E("sparse", 's', 0644, NULL, 0, 0, 0),
	};
	struct image_unpack_stats st;
	struct stat	sb;
	char		err[256], buf[8], *p;
	int		fd;

	fresh_root();
	TAP_CHECK(apply(F_GZIP, T_PAX, ents, ARRAY_SIZE(ents), 0, &st, err,
	    sizeof(err)) == 0);
	TAP_CHECK(rstat("sparse", &sb) == 0 && sb.st_size == SPARSE_SIZE);
	TAP_CHECK(st.bytes == 8);
	/* Two 4-byte extents, not a megabyte of zeroes. */
	TAP_CHECK(sb.st_blocks * 512 < SPARSE_SIZE / 4);
	xasprintf(&p, "%s/sparse", rootdir);
	fd = open(p, O_RDONLY);
	free(p);
	TAP_CHECK(fd >= 0);
	TAP_CHECK(pread(fd, buf, 4, 0) == 4 && memcmp(buf, "HEAD", 4) == 0);
	TAP_CHECK(pread(fd, buf, 4, SPARSE_SIZE / 2) == 4 &&
	    memcmp(buf, "\0\0\0\0", 4) == 0);
	TAP_CHECK(pread(fd, buf, 4, SPARSE_SIZE - 4) == 4 &&
	    memcmp(buf, "TAIL", 4) == 0);
	close(fd);
	return TAP_PASS;
}

/* Apply a hostile layer: it must fail with exactly the reason want,
 * leave the outside alone, and (when probe is set) not have created
 * probe in the root. */
static int
hostile(const char *what, const struct ent *ents, size_t n,
    const char *probe, const char *want)
{
	char	err[256];
	int	rc;

	fresh_root();
	err[0] = '\0';
	rc = apply(F_NONE, T_PAX, ents, n, IMAGE_UNPACK_OWNERS, NULL, err,
	    sizeof(err));
	tap_diag("%s: %d \"%s\"", what, rc, err);
	TAP_CHECK(rc == -EINVAL);
	if (strcmp(err, want) != 0)
		tap_diag("expected \"%s\"", want);
	TAP_CHECK(strcmp(err, want) == 0);
	TAP_CHECK(sentinel_ok());
	TAP_CHECK(probe == NULL || !exists(probe));
	return TAP_PASS;
}

static int
t_hostile_names(void)
{
	static const struct ent dotdot[] = {
		E("../escape", 'f', 0644, "x", 0, 0, 0) };
	static const struct ent abs[] = {
		E("/abs/path", 'f', 0644, "x", 0, 0, 0) };
	static const struct ent inner[] = {
		E("a/", 'd', 0755, NULL, 0, 0, 0),
		E("a/../../x", 'f', 0644, "x", 0, 0, 0) };
	static const struct ent dots[] = {
		E("./.wh...", 'f', 0644, NULL, 0, 0, 0) };

	if (hostile("../escape", dotdot, 1, NULL, "layer entry "
	    "\"../escape\": name with \"..\" refused") != TAP_PASS ||
	    hostile("/abs/path", abs, 1, "abs", "layer entry \"/abs/path\": "
	    "absolute name refused") != TAP_PASS ||
	    hostile("a/../../x", inner, 2, "x", "layer entry \"a/../../x\": "
	    "name with \"..\" refused") != TAP_PASS ||
	    hostile("whiteout of ..", dots, 1, NULL, "layer entry "
	    "\"./.wh...\": whiteout of \"..\" refused") != TAP_PASS)
		return TAP_FAIL;
	return TAP_PASS;
}

static int
t_hostile_symlinks(void)
{
	struct ent	evil[] = {
		E("evil", 'l', 0777, outside, 0, 0, 0),
		E("evil/pwned", 'f', 0644, "x", 0, 0, 0) };
	static const struct ent inside[] = {
		E("real/", 'd', 0755, NULL, 0, 0, 0),
		E("alias", 'l', 0777, "real", 0, 0, 0),
		E("alias/file", 'f', 0644, "x", 0, 0, 0) };
	static const struct ent dotdotlink[] = {
		E("up", 'l', 0777, "../..", 0, 0, 0),
		E("up/escape", 'f', 0644, "x", 0, 0, 0) };
	struct ent	opq[] = {
		E("evil", 'l', 0777, outside, 0, 0, 0),
		E("evil/.wh..wh..opq", 'f', 0644, NULL, 0, 0, 0) };
	struct ent	wh[] = {
		E("evil", 'l', 0777, outside, 0, 0, 0),
		E("evil/.wh.secret", 'f', 0644, NULL, 0, 0, 0) };
	static const struct ent etc[] = {
		E("etc", 'l', 0777, "/etc", 0, 0, 0),
		E("etc/smx-unpack-test", 'f', 0644, "x", 0, 0, 0) };
	static const struct ent deep[] = {
		E("a/b/", 'd', 0755, NULL, 0, 0, 0),
		E("a/b/c", 'l', 0777, "../../..", 0, 0, 0),
		E("a/b/c/escape", 'f', 0644, "x", 0, 0, 0) };

	if (hostile("symlink to outside, write through", evil, 2, NULL,
	    "layer entry \"evil/pwned\": parent \"evil\" is a symlink: "
	    "refused") != TAP_PASS ||
	    hostile("symlink to inside dir, write through", inside, 3,
	    "real/file", "layer entry \"alias/file\": parent \"alias\" is a "
	    "symlink: refused") != TAP_PASS ||
	    hostile("symlink to .., write through", dotdotlink, 2, NULL,
	    "layer entry \"up/escape\": parent \"up\" is a symlink: "
	    "refused") != TAP_PASS ||
	    hostile("symlink to /etc, write through", etc, 2, NULL,
	    "layer entry \"etc/smx-unpack-test\": parent \"etc\" is a "
	    "symlink: refused") != TAP_PASS ||
	    hostile("deep symlink to .., write through", deep, 3, NULL,
	    "layer entry \"a/b/c/escape\": parent \"a/b/c\" is a symlink: "
	    "refused") != TAP_PASS ||
	    hostile("opaque through symlink", opq, 2, NULL, "layer entry "
	    "\"evil/.wh..wh..opq\": parent \"evil\" is a symlink: refused") !=
	    TAP_PASS ||
	    hostile("whiteout through symlink", wh, 2, NULL, "layer entry "
	    "\"evil/.wh.secret\": parent \"evil\" is a symlink: refused") !=
	    TAP_PASS)
		return TAP_FAIL;
	TAP_CHECK(access("/etc/smx-unpack-test", F_OK) == -1);
	return TAP_PASS;
}

static int
t_hostile_hardlinks(void)
{
	static const struct ent passwd[] = {
		E("h", 'h', 0, "../../etc/passwd", 0, 0, 0) };
	struct ent	absout[] = {
		E("h", 'h', 0, secret, 0, 0, 0) };
	struct ent	vialink[] = {
		E("evil", 'l', 0777, outside, 0, 0, 0),
		E("h", 'h', 0, "evil/secret", 0, 0, 0) };
	static const struct ent missing[] = {
		E("h", 'h', 0, "not/there", 0, 0, 0) };
	static const struct ent self[] = {
		E("h", 'f', 0644, "x", 0, 0, 0),
		E("h", 'h', 0, "./h", 0, 0, 0) };

	if (hostile("hardlink to ../../etc/passwd", passwd, 1, "h",
	    "layer entry \"h\": hardlink target with \"..\" refused") !=
	    TAP_PASS ||
	    hostile("hardlink to an absolute outside path", absout, 1, "h",
	    "layer entry \"h\": absolute hardlink target refused") !=
	    TAP_PASS ||
	    hostile("hardlink through a symlink", vialink, 2, "h",
	    "layer entry \"h\": parent \"evil\" is a symlink: refused") !=
	    TAP_PASS ||
	    hostile("hardlink to a missing target", missing, 1, "h",
	    "layer entry \"h\": hardlink target \"not/there\" missing") !=
	    TAP_PASS ||
	    hostile("hardlink to itself", self, 2, NULL, "layer entry \"h\": "
	    "hardlink to \"./h\" refused") != TAP_PASS)
		return TAP_FAIL;
	return TAP_PASS;
}

static int
t_hostile_ids(void)
{
	static const struct ent big[] = {
		E("f", 'f', 0644, "x", 1LL << 40, 0, 0) };
	static const struct ent minus1[] = {
		E("f", 'f', 0644, "x", 0, 0xffffffffLL, 0) };

	static const struct ent uidmax[] = {
		E("f", 'f', 0644, "x", 0xffffffffLL, 0, 0) };
	char	err[256];
	int	rc;

	if (hostile("uid 2^40", big, 1, "f", "layer entry \"f\": uid/gid "
	    "1099511627776/0 out of range") != TAP_PASS ||
	    hostile("gid 2^32-1", minus1, 1, "f", "layer entry \"f\": "
	    "uid/gid 0/4294967295 out of range") != TAP_PASS ||
	    hostile("uid 2^32-1", uidmax, 1, "f", "layer entry \"f\": "
	    "uid/gid 4294967295/0 out of range") != TAP_PASS)
		return TAP_FAIL;
	/* Negative ids in PAX records (libarchive's writer cannot make
	 * them): refused too, with or without IMAGE_UNPACK_OWNERS. */
	TAP_CHECK(write_raw_pax(layer, "uid=-1") == 0);
	fresh_root();
	rc = unpack(layer, IMAGE_UNPACK_OWNERS, NULL, err, sizeof(err));
	tap_diag("pax uid=-1: %d \"%s\"", rc, err);
	TAP_CHECK(rc == -EINVAL);
	TAP_CHECK(strcmp(err, "layer entry \"f\": uid/gid -1/0 out of "
	    "range") == 0);
	TAP_CHECK(!exists("f") && sentinel_ok());
	TAP_CHECK(write_raw_pax(layer, "gid=-2147483648") == 0);
	fresh_root();
	rc = unpack(layer, 0, NULL, err, sizeof(err));
	tap_diag("pax gid=-2^31: %d \"%s\"", rc, err);
	TAP_CHECK(rc == -EINVAL);
	TAP_CHECK(strcmp(err, "layer entry \"f\": uid/gid 0/-2147483648 out "
	    "of range") == 0);
	TAP_CHECK(!exists("f") && sentinel_ok());
	return TAP_PASS;
}

/* A gzip stream cut in half, and bytes that are no archive at all. */
static int
t_hostile_streams(void)
{
	static const struct ent ents[] = {
		E("a", 'f', 0644, NULL, 0, 0, 0),
		E("b", 'f', 0644, NULL, 0, 0, 0) };
	struct ent	big[2];
	struct stat	sb;
	char		err[256], *data;
	size_t		i;
	int		fd;

	/* Incompressible data, so the cut lands inside the payload. */
	data = xmalloc(256 * 1024 + 1);
	srandom(1);
	for (i = 0; i < 256 * 1024; i++)
		data[i] = 'a' + random() % 26;
	data[256 * 1024] = '\0';
	memcpy(big, ents, sizeof(big));
	big[0].data = big[1].data = data;
	i = write_layer(layer, F_GZIP, T_PAX, big, 2);
	free(data);
	TAP_CHECK(i == 0);
	TAP_CHECK(stat(layer, &sb) == 0);
	TAP_CHECK(truncate(layer, sb.st_size / 2) == 0);
	fresh_root();
	err[0] = '\0';
	TAP_CHECK(unpack(layer, 0, NULL, err, sizeof(err)) == -EINVAL);
	tap_diag("truncated gzip: \"%s\"", err);
	TAP_CHECK(err[0] != '\0' && sentinel_ok());

	fd = open(layer, O_WRONLY | O_TRUNC);
	TAP_CHECK(fd >= 0);
	for (i = 0; i < 100; i++)
		TAP_CHECK(write(fd, "garbage, not a tar file at all!\n", 32) ==
		    32);
	close(fd);
	fresh_root();
	err[0] = '\0';
	TAP_CHECK(unpack(layer, 0, NULL, err, sizeof(err)) == -EINVAL);
	tap_diag("garbage: \"%s\"", err);
	TAP_CHECK(err[0] != '\0' && sentinel_ok() && count_dir(rootdir) == 0);

	err[0] = '\0';
	TAP_CHECK(unpack("/nonexistent/layer", 0, NULL, err, sizeof(err)) < 0);
	TAP_CHECK(err[0] != '\0');
	return TAP_PASS;
}

/* A lower layer's directories keep their times when a later layer adds
 * or removes entries in them; a directory the later layer lists takes
 * that layer's times. */
static int
t_dir_times(void)
{
	static const struct ent lower[] = {
		E("d/", 'd', 0755, NULL, 0, 0, 5000),
		E("d/old1", 'f', 0644, "1", 0, 0, 5000),
		E("d/old2", 'f', 0644, "2", 0, 0, 5000),
		E("e/", 'd', 0755, NULL, 0, 0, 6000),
		E("e/x", 'f', 0644, "x", 0, 0, 6000),
		E("k/", 'd', 0755, NULL, 0, 0, 3000),
	};
	static const struct ent upper[] = {
		E("d/new", 'f', 0644, "n", 0, 0, 9000),
		E("d/.wh.old1", 'f', 0644, NULL, 0, 0, 9000),
		E("d/sub/deep", 'f', 0644, "s", 0, 0, 9000),
		E("e/.wh..wh..opq", 'f', 0644, NULL, 0, 0, 9000),
		E("k/", 'd', 0750, NULL, 0, 0, 7000),
		E("k/new", 'f', 0644, "k", 0, 0, 9000),
	};
	struct stat	sb;
	char		err[256];
	int		rc;

	fresh_root();
	TAP_CHECK(apply(F_NONE, T_PAX, lower, ARRAY_SIZE(lower), 0, NULL,
	    err, sizeof(err)) == 0);
	rc = apply(F_NONE, T_PAX, upper, ARRAY_SIZE(upper), 0, NULL, err,
	    sizeof(err));
	if (rc != 0)
		tap_diag("upper: %s", err);
	TAP_CHECK(rc == 0);
	TAP_CHECK(exists("d/new") && !exists("d/old1") && exists("d/old2"));
	TAP_CHECK(exists("d/sub/deep") && !exists("e/x"));
	/* Added to, removed from, a subdirectory made in it. */
	TAP_CHECK(rstat("d", &sb) == 0 && sb.st_mtime == 5000);
	/* Emptied by an opaque marker. */
	TAP_CHECK(rstat("e", &sb) == 0 && sb.st_mtime == 6000);
	/* Listed again by the upper layer: its times and mode. */
	TAP_CHECK(rstat("k", &sb) == 0 && sb.st_mtime == 7000 &&
	    (sb.st_mode & 07777) == 0750);
	TAP_CHECK(rstat("d/new", &sb) == 0 && sb.st_mtime == 9000);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "entry types, owners, modes, times, xattrs", t_types },
	{ "no devices, owners or xattrs without the flags", t_no_flags },
	{ "gzip, zstd, plain x pax, gnu, ustar", t_compressions },
	{ "whiteouts and opaque directories", t_whiteouts },
	{ "file <-> directory replacement", t_replace },
	{ "sparse file", t_sparse },
	{ "lower directories keep their times", t_dir_times },
	{ "hostile names", t_hostile_names },
	{ "hostile symlinks", t_hostile_symlinks },
	{ "hostile hardlinks", t_hostile_hardlinks },
	{ "hostile ids", t_hostile_ids },
	{ "truncated and garbage streams", t_hostile_streams },
};

int
main(void)
{
	struct stat	sb;
	char		layers[160];
	int		fd, rc;

	if (geteuid() != 0) {
		printf("1..0 # SKIP needs root (owners, device nodes, "
		    "trusted.* xattrs)\n");
		return 77;
	}
	if (mkdtemp(tmpdir) == NULL)
		return 1;
	snprintf(rootdir, sizeof(rootdir), "%s/root", tmpdir);
	snprintf(outside, sizeof(outside), "%s/outside", tmpdir);
	snprintf(layers, sizeof(layers), "%s/layers", tmpdir);
	snprintf(layer, sizeof(layer), "%s/layers/layer", tmpdir);
	snprintf(secret, sizeof(secret), "%s/secret", outside);
	if (mkdir(rootdir, 0755) != 0 || mkdir(outside, 0755) != 0 ||
	    mkdir(layers, 0755) != 0)
		return 1;
	fd = open(secret, O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd < 0 || write(fd, "secret", 6) != 6)
		return 1;
	close(fd);
	if (stat("/etc/passwd", &sb) != 0)
		return 1;
	passwd_nlink = sb.st_nlink;
	/* Modes below are compared exactly. */
	umask(022);
	log_init("unpack_test", LOG_NORMAL);

	rc = tap_run(cases, ARRAY_SIZE(cases), 60);
	rmtree(tmpdir);
	return rc;
}
