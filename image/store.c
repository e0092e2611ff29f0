/*
 * The content-addressed image store under $SMX_HOME (layout in
 * image.h).  Blobs are named by their sha256 and verified on the way in
 * and on the way out; every file appears by rename only after its data
 * and then its directory entry are on disk, so a crash leaves at worst
 * a temp file that the next open removes.
 *
 * Locking: the store lock (flock on <home>/lock, a fresh open file
 * description per use so threads exclude each other too) serialises ref
 * updates and gc; <home>/gc.lock is held shared by pulls and exclusive
 * by gc; tmp/<hex>.lock is a per-blob download lock.  Lock files that
 * get unlinked are re-checked after flock (st_nlink), so an unlinked
 * file's lock is never mistaken for the live one.
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"

#define META_MAX	(16u << 20)	/* largest manifest/config for gc */
#define COPY_CHUNK	(128u << 10)

struct image_store {
	char	*home;
	char	*blobs;		/* <home>/blobs/sha256 */
	char	*refs;
	char	*rootfs;
	char	*tmp;
	char	*lock;
	char	*gclock;
};

/* --- small file helpers ----------------------------------------------- */

/* fsync a directory so a rename or unlink inside it is durable. */
static int
fsync_dir(const char *dir)
{
	int	fd, error = 0;

	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -errno;
	if (fsync(fd) == -1)
		error = -errno;
	close(fd);
	return error;
}

static int
mkdir_p(const char *path, mode_t mode)
{
	char	*p, *s, c;
	int	 error = 0;

	p = xstrdup(path);
	for (s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		c = *s;
		*s = '\0';
		if (mkdir(p, mode) == -1 && errno != EEXIST) {
			error = -errno;
			break;
		}
		if ((*s = c) == '\0')
			break;
	}
	free(p);
	return error;
}

/*
 * Open (creating) path and flock it with `how`.  A file that was
 * unlinked while we waited for the lock is not the lock any more: retry
 * on the new one.  0 and *fdp, or -errno (-EWOULDBLOCK with LOCK_NB).
 */
static int
lock_file(const char *path, int how, int *fdp)
{
	struct stat	st, st2;
	int		fd;

	for (;;) {
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd == -1)
			return -errno;
		while (flock(fd, how) == -1) {
			if (errno != EINTR) {
				int error = -errno;
				close(fd);
				return error;
			}
		}
		if (fstat(fd, &st) == 0 && st.st_nlink > 0 &&
		    stat(path, &st2) == 0 && st.st_ino == st2.st_ino &&
		    st.st_dev == st2.st_dev) {
			*fdp = fd;
			return 0;
		}
		close(fd);
	}
}

/* A fresh temp file tmp/XXXXXX.tmp, flocked so that a concurrent open's
 * cleanup leaves it alone. */
static int
tmp_create(struct image_store *s, char **pathp, int *fdp)
{
	struct stat	 st;
	char		*path;
	int		 fd, error;

	for (;;) {
		xasprintf(&path, "%s/XXXXXX.tmp", s->tmp);
		if ((fd = mkstemps(path, 4)) == -1) {
			error = -errno;
			free(path);
			return error;
		}
		/* Until the flock, a cleanup may have taken it: check. */
		if (flock(fd, LOCK_EX) == 0 && fstat(fd, &st) == 0 &&
		    st.st_nlink > 0)
			break;
		close(fd);
		free(path);
	}
	*pathp = path;
	*fdp = fd;
	return 0;
}

/* Make the temp file fd durable and rename it to dst (in dir). */
static int
tmp_install(int fd, const char *tmp, const char *dst, const char *dir,
    mode_t mode)
{
	if (fchmod(fd, mode) == -1 || fsync(fd) == -1 ||
	    rename(tmp, dst) == -1)
		return -errno;
	return fsync_dir(dir);
}

/* Remove unheld *.tmp and *.lock files from tmp/: what a crash left. */
static void
clean_tmp(struct image_store *s)
{
	struct dirent	*de;
	struct stat	 st;
	DIR		*d;
	size_t		 n;
	int		 dfd, fd;

	if ((d = opendir(s->tmp)) == NULL)
		return;
	dfd = dirfd(d);
	while ((de = readdir(d)) != NULL) {
		n = strlen(de->d_name);
		if (!(n > 4 && strcmp(de->d_name + n - 4, ".tmp") == 0) &&
		    !(n > 5 && strcmp(de->d_name + n - 5, ".lock") == 0))
			continue;
		fd = openat(dfd, de->d_name, O_RDONLY | O_NOFOLLOW |
		    O_CLOEXEC);
		if (fd == -1)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0 &&
		    fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
		    st.st_nlink > 0) {
			log_debug("store: removing leftover %s/%s", s->tmp,
			    de->d_name);
			unlinkat(dfd, de->d_name, 0);
		}
		close(fd);
	}
	closedir(d);
}

/* --- open / close ------------------------------------------------------ */

int
image_store_open(const char *home, struct image_store **sp, char *err,
    size_t errlen)
{
	struct image_store	*s;
	const char		*dirs[4];
	size_t			 i;
	int			 error, fd;

	if (home == NULL)
		home = smx_home();
	s = xcalloc(1, sizeof(*s));
	s->home = xstrdup(home);
	xasprintf(&s->blobs, "%s/blobs/sha256", home);
	xasprintf(&s->refs, "%s/refs", home);
	xasprintf(&s->rootfs, "%s/rootfs", home);
	xasprintf(&s->tmp, "%s/tmp", home);
	xasprintf(&s->lock, "%s/lock", home);
	xasprintf(&s->gclock, "%s/gc.lock", home);
	dirs[0] = s->blobs;
	dirs[1] = s->refs;
	dirs[2] = s->rootfs;
	dirs[3] = s->tmp;
	for (i = 0; i < ARRAY_SIZE(dirs); i++) {
		if ((error = mkdir_p(dirs[i], 0755)) != 0) {
			snprintf(err, errlen, "cannot create %s: %s (set "
			    "SMX_HOME to a writable directory)", dirs[i],
			    strerror(-error));
			goto err_free;
		}
	}
	/* Both lock files exist from the start; they are never removed. */
	if ((fd = open(s->lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1 ||
	    close(fd) == -1 ||
	    (fd = open(s->gclock, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1 ||
	    close(fd) == -1) {
		error = -errno;
		snprintf(err, errlen, "cannot create the lock files in %s: %s",
		    home, strerror(errno));
		goto err_free;
	}
	clean_tmp(s);
	*sp = s;
	return 0;

err_free:
	image_store_close(s);
	return error;
}

void
image_store_close(struct image_store *s)
{
	if (s == NULL)
		return;
	free(s->home);
	free(s->blobs);
	free(s->refs);
	free(s->rootfs);
	free(s->tmp);
	free(s->lock);
	free(s->gclock);
	free(s);
}

const char *
image_store_tmpdir(struct image_store *s)
{
	return s->tmp;
}

/* --- blobs ------------------------------------------------------------- */

int
image_store_blob_path(struct image_store *s, const char *digest, char *buf,
    size_t len)
{
	int	n;

	if (!image_digest_valid(digest))
		return -EINVAL;
	n = snprintf(buf, len, "%s/%s", s->blobs, digest + 7);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

bool
image_store_has_blob(struct image_store *s, const char *digest)
{
	char		path[PATH_MAX];
	struct stat	st;

	if (image_store_blob_path(s, digest, path, sizeof(path)) != 0)
		return false;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int
image_store_put_blob(struct image_store *s, const char *digest,
    const void *data, size_t len)
{
	char	 hex[SHA256_HEX_LEN + 1], dst[PATH_MAX], *tmp;
	int	 fd, error;

	if ((error = image_store_blob_path(s, digest, dst, sizeof(dst))) != 0)
		return error;
	sha256_buf(data, len, hex);
	if (strcmp(hex, digest + 7) != 0) {
		log_warnx("store: content does not match %s (it is "
		    "sha256:%s); not stored", digest, hex);
		return -EBADMSG;
	}
	if (image_store_has_blob(s, digest))
		return 0;
	if ((error = tmp_create(s, &tmp, &fd)) != 0)
		return error;
	if ((error = write_all(fd, data, len)) != 0 ||
	    (error = tmp_install(fd, tmp, dst, s->blobs, 0444)) != 0) {
		log_warnx("store: cannot write blob %s: %s", digest,
		    strerror(-error));
		unlink(tmp);
	}
	close(fd);
	free(tmp);
	return error;
}

/* Hash everything fd holds from its current offset, copying it to out
 * when out != -1. */
static int
hash_fd(int fd, int out, char hex[SHA256_HEX_LEN + 1])
{
	struct sha256_ctx	 c;
	uint8_t			 d[SHA256_LEN], *buf;
	ssize_t			 n;
	int			 error = 0;

	buf = xmalloc(COPY_CHUNK);
	sha256_init(&c);
	for (;;) {
		if ((n = read(fd, buf, COPY_CHUNK)) == -1) {
			if (errno == EINTR)
				continue;
			error = -errno;
			break;
		}
		if (n == 0)
			break;
		sha256_update(&c, buf, n);
		if (out != -1 && (error = write_all(out, buf, n)) != 0)
			break;
	}
	sha256_final(&c, d);
	sha256_hex(d, hex);
	free(buf);
	return error;
}

int
image_store_put_blob_file(struct image_store *s, const char *digest,
    const char *path)
{
	char		 hex[SHA256_HEX_LEN + 1], dst[PATH_MAX];
	char		*tmp = NULL;
	struct stat	 st, tst;
	int		 fd, tfd = -1, error;

	if ((error = image_store_blob_path(s, digest, dst, sizeof(dst))) != 0)
		return error;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -errno;
	if (fstat(fd, &st) == -1 || stat(s->tmp, &tst) == -1) {
		error = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		error = -EINVAL;
		goto out;
	}
	if (image_store_has_blob(s, digest)) {
		unlink(path);
		goto out;
	}
	/* Another filesystem: copy into a temp file while hashing. */
	if (st.st_dev != tst.st_dev) {
		if ((error = tmp_create(s, &tmp, &tfd)) != 0)
			goto out;
	}
	if ((error = hash_fd(fd, tfd, hex)) != 0)
		goto out_tmp;
	if (strcmp(hex, digest + 7) != 0) {
		log_warnx("store: %s does not match %s (it is sha256:%s); "
		    "not stored", path, digest, hex);
		error = -EBADMSG;
		goto out_tmp;
	}
	if (tfd != -1) {
		if ((error = tmp_install(tfd, tmp, dst, s->blobs, 0444)) != 0)
			goto out_tmp;
		unlink(path);
	} else if ((error = tmp_install(fd, path, dst, s->blobs, 0444)) != 0)
		goto out;
	goto out;

out_tmp:
	if (tfd != -1)
		unlink(tmp);
out:
	if (error != 0 && error != -EBADMSG)
		log_warnx("store: cannot add %s as %s: %s", path, digest,
		    strerror(-error));
	if (tfd != -1)
		close(tfd);
	free(tmp);
	close(fd);
	return error;
}

int
image_store_get_blob(struct image_store *s, const char *digest,
    size_t maxlen, uint8_t **bufp, size_t *lenp)
{
	char	 hex[SHA256_HEX_LEN + 1], path[PATH_MAX];
	uint8_t	*buf;
	size_t	 len;
	int	 error;

	if ((error = image_store_blob_path(s, digest, path, sizeof(path))) != 0)
		return error;
	if ((error = read_file(path, maxlen, &buf, &len)) != 0)
		return error;
	sha256_buf(buf, len, hex);
	if (strcmp(hex, digest + 7) != 0) {
		/* Damaged on disk: drop it so the next pull fetches it. */
		log_warnx("store: blob %s is corrupt (content is sha256:%s); "
		    "removed, pull the image again", digest, hex);
		unlink(path);
		free(buf);
		return -EBADMSG;
	}
	*bufp = buf;
	*lenp = len;
	return 0;
}

/* tmp/<hex>.lock */
static int
blob_lock_path(struct image_store *s, const char *digest, char *buf,
    size_t len)
{
	int	n;

	if (!image_digest_valid(digest))
		return -EINVAL;
	n = snprintf(buf, len, "%s/%s.lock", s->tmp, digest + 7);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int
image_store_lock_blob(struct image_store *s, const char *digest, int *fdp)
{
	char	path[PATH_MAX];
	int	error;

	if ((error = blob_lock_path(s, digest, path, sizeof(path))) != 0)
		return error;
	return lock_file(path, LOCK_EX, fdp);
}

int
image_store_blob_lock_path(struct image_store *s, const char *digest,
    char *path, size_t len)
{
	return blob_lock_path(s, digest, path, len);
}

int
image_lock_path(const char *path, int *fdp)
{
	return lock_file(path, LOCK_EX, fdp);
}

void
image_store_unlock_blob(struct image_store *s, const char *digest, int fd)
{
	char	path[PATH_MAX];

	/* Unlink while still holding it: waiters see st_nlink == 0 and
	 * retry on a fresh file. */
	if (blob_lock_path(s, digest, path, sizeof(path)) == 0)
		unlink(path);
	close(fd);
}

int
image_store_hold(struct image_store *s, int *fdp)
{
	return lock_file(s->gclock, LOCK_SH, fdp);
}

void
image_store_release(int fd)
{
	if (fd != -1)
		close(fd);
}

/* --- refs -------------------------------------------------------------- */

/* Escape one path element: bytes outside [A-Za-z0-9._-] and a leading
 * '.' become %XX, so no element is ".", ".." or holds a '/'. */
static int
escape(const char *in, char *out, size_t len)
{
	static const char	hex[] = "0123456789ABCDEF";
	size_t			o = 0;
	unsigned char		c;

	for (; (c = *in) != '\0'; in++) {
		if (o + 4 > len)
			return -ENAMETOOLONG;
		if (((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '_' || c == '-' ||
		    c == '.') && !(o == 0 && c == '.'))
			out[o++] = c;
		else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 0xf];
		}
	}
	out[o] = '\0';
	return 0;
}

static int
unhex(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Undo escape(), appending to out; -EINVAL on a name it cannot have
 * written. */
static int
unescape(const char *in, char *out, size_t len)
{
	size_t	o = strlen(out);
	int	hi, lo;

	for (; *in != '\0'; in++) {
		if (o + 1 >= len)
			return -ENAMETOOLONG;
		if (*in != '%') {
			out[o++] = *in;
			continue;
		}
		if ((hi = unhex(in[1])) < 0 || (lo = unhex(in[2])) < 0)
			return -EINVAL;
		out[o++] = hi << 4 | lo;
		in += 2;
	}
	out[o] = '\0';
	return 0;
}

/*
 * refs/<domain>/<path...>/<leaf>: leaf is the escaped ":tag", or
 * "@digest" for a ref that names a digest.  The escaped separator
 * ("%3A", "%40") cannot begin a path component, so a tag never collides
 * with a nested repository ("a/b:c" vs "a/b/c:latest").  dir gets the
 * directory part.
 */
static int
ref_path(struct image_store *s, const struct image_ref *r, char *path,
    size_t len, char *dirbuf, size_t dirlen)
{
	char		 el[3 * 256 + 1], leaf[160];
	const char	*c, *e;
	size_t		 o;
	int		 n, error;

	if (*r->domain == '\0' || *r->path == '\0' ||
	    (*r->tag == '\0' && !image_digest_valid(r->digest)))
		return -EINVAL;
	if ((error = escape(r->domain, el, sizeof(el))) != 0)
		return error;
	n = snprintf(dirbuf, dirlen, "%s/%s", s->refs, el);
	if (n < 0 || (size_t)n >= dirlen)
		return -ENAMETOOLONG;
	o = n;
	for (c = r->path;; c = e + 1) {
		e = strchrnul(c, '/');
		if (e == c || e - c >= 256)
			return -EINVAL;
		n = snprintf(leaf, sizeof(leaf), "%.*s", (int)(e - c), c);
		if ((error = escape(leaf, el, sizeof(el))) != 0)
			return error;
		n = snprintf(dirbuf + o, dirlen - o, "/%s", el);
		if (n < 0 || (size_t)n >= dirlen - o)
			return -ENAMETOOLONG;
		o += n;
		if (*e == '\0')
			break;
	}
	if (*r->digest != '\0')
		snprintf(leaf, sizeof(leaf), "@%s", r->digest);
	else
		snprintf(leaf, sizeof(leaf), ":%s", r->tag);
	if ((error = escape(leaf, el, sizeof(el))) != 0)
		return error;
	n = snprintf(path, len, "%s/%s", dirbuf, el);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Take the store lock; the fd is the lock. */
static int
store_lock(struct image_store *s, int *fdp)
{
	int	error;

	if ((error = lock_file(s->lock, LOCK_EX, fdp)) != 0)
		log_warnx("store: cannot lock %s: %s", s->lock,
		    strerror(-error));
	return error;
}

int
image_store_set_ref(struct image_store *s, const struct image_ref *r,
    const char *manifest_digest)
{
	char	 path[PATH_MAX], dir[PATH_MAX], line[80], *tmp;
	int	 lfd, fd, error;

	if (!image_digest_valid(manifest_digest))
		return -EINVAL;
	if ((error = ref_path(s, r, path, sizeof(path), dir,
	    sizeof(dir))) != 0)
		return error;
	if ((error = store_lock(s, &lfd)) != 0)
		return error;
	if ((error = mkdir_p(dir, 0755)) != 0)
		goto out_unlock;
	if ((error = tmp_create(s, &tmp, &fd)) != 0)
		goto out_unlock;
	snprintf(line, sizeof(line), "%s\n", manifest_digest);
	if ((error = write_all(fd, line, strlen(line))) != 0 ||
	    (error = tmp_install(fd, tmp, path, dir, 0644)) != 0)
		unlink(tmp);
	close(fd);
	free(tmp);
out_unlock:
	if (error != 0)
		log_warnx("store: cannot set ref %s: %s", path,
		    strerror(-error));
	close(lfd);
	return error;
}

/* Read a ref file: one digest and a newline. */
static int
read_ref_file(const char *path, char *digest, size_t len)
{
	uint8_t	*buf;
	size_t	 n;
	int	 error;

	if ((error = read_file(path, 128, &buf, &n)) != 0)
		return error;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	if (!image_digest_valid((char *)buf))
		error = -EBADMSG;
	else if (n >= len)
		error = -ENAMETOOLONG;
	else
		memcpy(digest, buf, n + 1);
	free(buf);
	return error;
}

int
image_store_get_ref(struct image_store *s, const struct image_ref *r,
    char *digest, size_t len)
{
	char	path[PATH_MAX], dir[PATH_MAX];
	int	error;

	if ((error = ref_path(s, r, path, sizeof(path), dir,
	    sizeof(dir))) != 0)
		return error;
	return read_ref_file(path, digest, len);
}

int
image_store_del_ref(struct image_store *s, const struct image_ref *r)
{
	char	 path[PATH_MAX], dir[PATH_MAX], *slash;
	size_t	 rlen = strlen(s->refs);
	int	 lfd, error;

	if ((error = ref_path(s, r, path, sizeof(path), dir,
	    sizeof(dir))) != 0)
		return error;
	if ((error = store_lock(s, &lfd)) != 0)
		return error;
	if (unlink(path) == -1)
		error = -errno;
	else {
		/* Prune the directories this leaves empty, up to refs/. */
		while (strlen(dir) > rlen && rmdir(dir) == 0 &&
		    (slash = strrchr(dir, '/')) != NULL)
			*slash = '\0';
		fsync_dir(dir);
	}
	close(lfd);
	return error;
}

struct walk {
	int	(*cb)(const char *, const char *, void *);
	void	*arg;
};

/* Walk one directory of refs/: name holds "domain/path..." so far. */
static int
walk_refs(int dfd, const char *dirpath, char *name, size_t namelen,
    struct walk *w)
{
	struct dirent	*de;
	struct image_ref r;
	char		 sub[PATH_MAX], full[IMAGE_REF_MAX + 1], digest[80];
	char		 parse_err[256];
	size_t		 o = strlen(name);
	DIR		*d;
	int		 fd, error = 0;

	if ((d = fdopendir(dfd)) == NULL) {
		close(dfd);
		return -errno;
	}
	while (error == 0 && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", dirpath, de->d_name);
		name[o] = '\0';
		if (strncmp(de->d_name, "%3A", 3) == 0 ||
		    strncmp(de->d_name, "%40", 3) == 0) {
			/* A leaf: name + ":tag" or "@digest". */
			if (unescape(de->d_name, name, namelen) != 0 ||
			    read_ref_file(sub, digest, sizeof(digest)) != 0 ||
			    image_ref_parse(name, &r, parse_err,
			    sizeof(parse_err)) != 0 ||
			    image_ref_format(&r, full, sizeof(full)) != 0) {
				log_warnx("store: ignoring bad ref file %s",
				    sub);
				continue;
			}
			error = w->cb(full, digest, w->arg);
			continue;
		}
		if (o > 0 && o + 1 < namelen) {
			name[o] = '/';
			name[o + 1] = '\0';
		}
		if (unescape(de->d_name, name, namelen) != 0)
			continue;
		fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY |
		    O_NOFOLLOW | O_CLOEXEC);
		if (fd == -1)
			continue;
		error = walk_refs(fd, sub, name, namelen, w);
	}
	name[o] = '\0';
	closedir(d);
	return error;
}

int
image_store_list_refs(struct image_store *s,
    int (*cb)(const char *, const char *, void *), void *arg)
{
	struct walk	w = { cb, arg };
	char		name[IMAGE_REF_MAX + 1] = "";
	int		fd;

	if ((fd = open(s->refs, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -errno;
	return walk_refs(fd, s->refs, name, sizeof(name), &w);
}

/* --- chain ids and gc -------------------------------------------------- */

int
image_chain_id(const char *const *diff_ids, size_t n, char out[72])
{
	char	buf[2 * 72 + 1], hex[SHA256_HEX_LEN + 1];
	size_t	i;

	if (n == 0)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (!image_digest_valid(diff_ids[i]))
			return -EINVAL;
	snprintf(out, 72, "%s", diff_ids[0]);
	for (i = 1; i < n; i++) {
		snprintf(buf, sizeof(buf), "%s %s", out, diff_ids[i]);
		sha256_buf(buf, strlen(buf), hex);
		snprintf(out, 72, "sha256:%s", hex);
	}
	return 0;
}

/* The set of hex names gc keeps. */
struct mark {
	char	(*hex)[SHA256_HEX_LEN + 1];
	size_t	 n, cap;
};

static bool
marked(const struct mark *m, const char *hex)
{
	size_t	i;

	for (i = 0; i < m->n; i++)
		if (strcmp(m->hex[i], hex) == 0)
			return true;
	return false;
}

/* Add hex; false when it was already there. */
static bool
mark_add(struct mark *m, const char *digest)
{
	if (marked(m, digest + 7))
		return false;
	if (m->n == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 64;
		m->hex = xreallocarray(m->hex, m->cap, sizeof(*m->hex));
	}
	snprintf(m->hex[m->n++], SHA256_HEX_LEN + 1, "%s", digest + 7);
	return true;
}

struct gc {
	struct image_store	*s;
	struct mark		 blobs;
	struct mark		 rootfs;
};

/* Mark the rootfs tree of a config: the chain id of its whole
 * rootfs.diff_ids. */
static void
mark_config(struct gc *g, const char *digest)
{
	cJSON		*root, *ids, *id;
	const char	**v = NULL;
	char		 chain[72];
	uint8_t		*buf;
	size_t		 len, n = 0;

	if (image_store_get_blob(g->s, digest, META_MAX, &buf, &len) != 0)
		return;
	root = cJSON_ParseWithLength((char *)buf, len);
	free(buf);
	ids = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(root, "rootfs"), "diff_ids");
	if (cJSON_IsArray(ids)) {
		v = xreallocarray(NULL, cJSON_GetArraySize(ids) + 1,
		    sizeof(*v));
		cJSON_ArrayForEach(id, ids) {
			if (!cJSON_IsString(id) ||
			    !image_digest_valid(id->valuestring))
				break;
			v[n++] = id->valuestring;
		}
		/* Only the image's own tree: the cache keeps no prefix
		 * trees (image/rootfs.c). */
		if (n > 0 && n == (size_t)cJSON_GetArraySize(ids) &&
		    image_chain_id(v, n, chain) == 0)
			mark_add(&g->rootfs, chain);
	}
	free(v);
	cJSON_Delete(root);
}

/* Mark the digest of a {"digest": ...} descriptor. */
static const char *
desc_digest(const cJSON *desc)
{
	const cJSON	*d;

	d = cJSON_GetObjectItemCaseSensitive(desc, "digest");
	if (!cJSON_IsString(d) || !image_digest_valid(d->valuestring))
		return NULL;
	return d->valuestring;
}

/* Mark a manifest or index and everything it reaches.  depth bounds a
 * hostile chain of indexes. */
static void
mark_manifest(struct gc *g, const char *digest, int depth)
{
	cJSON		*root, *el;
	const char	*d;
	uint8_t		*buf;
	size_t		 len;

	if (!mark_add(&g->blobs, digest) || depth > 8)
		return;
	if (image_store_get_blob(g->s, digest, META_MAX, &buf, &len) != 0)
		return;
	root = cJSON_ParseWithLength((char *)buf, len);
	free(buf);
	if (root == NULL)
		return;
	/* OCI index / Docker manifest list. */
	cJSON_ArrayForEach(el, cJSON_GetObjectItemCaseSensitive(root,
	    "manifests"))
		if ((d = desc_digest(el)) != NULL)
			mark_manifest(g, d, depth + 1);
	/* OCI / Docker schema 2 image manifest. */
	if ((d = desc_digest(cJSON_GetObjectItemCaseSensitive(root,
	    "config"))) != NULL) {
		mark_add(&g->blobs, d);
		mark_config(g, d);
	}
	cJSON_ArrayForEach(el, cJSON_GetObjectItemCaseSensitive(root,
	    "layers"))
		if ((d = desc_digest(el)) != NULL)
			mark_add(&g->blobs, d);
	cJSON_Delete(root);
}

static int
gc_ref_cb(const char *ref, const char *digest, void *arg)
{
	mark_manifest(arg, digest, 0);
	return 0;
}

static bool
is_hex64(const char *name)
{
	return strlen(name) == SHA256_HEX_LEN &&
	    strspn(name, "0123456789abcdef") == SHA256_HEX_LEN;
}

/* True when a pull holds this blob's download lock right now. */
static bool
blob_busy(struct image_store *s, const char *hex)
{
	char	path[PATH_MAX];
	bool	busy;
	int	fd;

	snprintf(path, sizeof(path), "%s/%s.lock", s->tmp, hex);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return false;
	busy = flock(fd, LOCK_SH | LOCK_NB) == -1;
	close(fd);
	return busy;
}

/* Sweep one directory of hex names against a mark set. */
static int
sweep(struct image_store *s, const char *dir, const struct mark *m,
    bool blobs, uint64_t *bytes, unsigned *count)
{
	struct dirent	*de;
	struct stat	 st;
	DIR		*d;
	int		 error = 0, e;

	if ((d = opendir(dir)) == NULL)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		if (!is_hex64(de->d_name) || marked(m, de->d_name))
			continue;
		if (blobs) {
			if (blob_busy(s, de->d_name) ||
			    fstatat(dirfd(d), de->d_name, &st,
			    AT_SYMLINK_NOFOLLOW) == -1)
				continue;
			if (unlinkat(dirfd(d), de->d_name, 0) == -1) {
				error = -errno;
				continue;
			}
			*bytes += st.st_size;
			(*count)++;
			log_debug("store: gc removed blob sha256:%s",
			    de->d_name);
		} else if ((e = rm_tree_at(dirfd(d), de->d_name, bytes)) != 0) {
			log_warnx("store: gc cannot remove %s/%s: %s", dir,
			    de->d_name, strerror(-e));
			error = e;
		} else
			log_debug("store: gc removed rootfs %s", de->d_name);
	}
	closedir(d);
	fsync_dir(dir);
	return error;
}

int
image_store_gc(struct image_store *s, uint64_t *freed_bytes,
    unsigned *freed_blobs)
{
	struct gc	 g = { .s = s };
	uint64_t	 bytes = 0;
	unsigned	 count = 0;
	int		 lfd, gfd, error, e;

	/* No pull may be between its first blob and its ref. */
	if ((gfd = open(s->gclock, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1)
		return -errno;
	if (flock(gfd, LOCK_EX | LOCK_NB) == -1) {
		error = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(gfd);
		return error;
	}
	if ((error = store_lock(s, &lfd)) != 0)
		goto out_gc;
	if ((error = image_store_list_refs(s, gc_ref_cb, &g)) != 0)
		goto out;
	error = sweep(s, s->blobs, &g.blobs, true, &bytes, &count);
	e = sweep(s, s->rootfs, &g.rootfs, false, &bytes, &count);
	if (error == 0)
		error = e;
out:
	free(g.blobs.hex);
	free(g.rootfs.hex);
	close(lfd);
out_gc:
	close(gfd);
	if (freed_bytes != NULL)
		*freed_bytes = bytes;
	if (freed_blobs != NULL)
		*freed_blobs = count;
	return error;
}
