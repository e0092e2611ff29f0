/*
 * The unpacked-rootfs cache: rootfs/<chain id hex>/ in the store, one
 * complete tree per image (for the chain id of all its layers), built on
 * a copy of the longest cached prefix when there is one.
 */
#include <sys/stat.h>
#include <sys/xattr.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"

#define META_MAX	(4u << 20)	/* largest manifest or config read */
#define XATTR_BUF	(64u << 10)

struct layers {
	size_t	  n;
	char	**blobs;	/* layer blob digests, base first */
	char	**diff_ids;	/* uncompressed digests, from the config */
};

static void
layers_free(struct layers *l)
{
	size_t	i;

	for (i = 0; i < l->n; i++) {
		free(l->blobs[i]);
		free(l->diff_ids[i]);
	}
	free(l->blobs);
	free(l->diff_ids);
	memset(l, 0, sizeof(*l));
}

/* Read a JSON blob of the store. */
static int
get_json(struct image_store *s, const char *digest, const char *what,
    cJSON **out, char *err, size_t errlen)
{
	uint8_t	*buf;
	size_t	 len;
	int	 error;

	if ((error = image_store_get_blob(s, digest, META_MAX, &buf,
	    &len)) != 0) {
		snprintf(err, errlen, "%s %s: %s%s", what, digest,
		    strerror(-error), error == -ENOENT ?
		    " (pull the image again)" : "");
		return error;
	}
	*out = cJSON_ParseWithLength((const char *)buf, len);
	free(buf);
	if (*out == NULL) {
		snprintf(err, errlen, "%s %s is not JSON", what, digest);
		return -EINVAL;
	}
	return 0;
}

static const char *
digest_of(const cJSON *desc)
{
	const cJSON	*d;

	d = cJSON_GetObjectItemCaseSensitive(desc, "digest");
	if (!cJSON_IsString(d) || !image_digest_valid(d->valuestring))
		return NULL;
	return d->valuestring;
}

/* The layer blobs of a manifest and the diff ids of its config. */
static int
load_layers(struct image_store *s, const char *manifest, struct layers *l,
    char *err, size_t errlen)
{
	cJSON		*m = NULL, *c = NULL;
	const cJSON	*arr, *ids, *it;
	const char	*config, *d;
	size_t		 n, i;
	int		 error;

	if ((error = get_json(s, manifest, "manifest", &m, err, errlen)) != 0)
		return error;
	error = -EINVAL;
	if (cJSON_GetObjectItemCaseSensitive(m, "manifests") != NULL) {
		snprintf(err, errlen, "%s is an image index, not a manifest "
		    "(name one platform's manifest)", manifest);
		goto out;
	}
	arr = cJSON_GetObjectItemCaseSensitive(m, "layers");
	config = digest_of(cJSON_GetObjectItemCaseSensitive(m, "config"));
	if (config == NULL || !cJSON_IsArray(arr) ||
	    (n = cJSON_GetArraySize(arr)) == 0) {
		snprintf(err, errlen, "manifest %s has no config or no "
		    "layers", manifest);
		goto out;
	}
	if ((error = get_json(s, config, "config", &c, err, errlen)) != 0)
		goto out;
	error = -EINVAL;
	ids = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(c, "rootfs"), "diff_ids");
	if (!cJSON_IsArray(ids) || (size_t)cJSON_GetArraySize(ids) != n) {
		snprintf(err, errlen, "config %s: rootfs.diff_ids does not "
		    "match the %zu layers of manifest %s", config, n, manifest);
		goto out;
	}
	l->blobs = xcalloc(n, sizeof(char *));
	l->diff_ids = xcalloc(n, sizeof(char *));
	l->n = n;
	for (i = 0; i < n; i++) {
		it = cJSON_GetArrayItem(ids, i);
		if ((d = digest_of(cJSON_GetArrayItem(arr, i))) == NULL ||
		    !cJSON_IsString(it) ||
		    !image_digest_valid(it->valuestring)) {
			snprintf(err, errlen, "manifest %s: layer %zu has a "
			    "malformed digest or diff id", manifest, i);
			layers_free(l);
			goto out;
		}
		l->blobs[i] = xstrdup(d);
		l->diff_ids[i] = xstrdup(it->valuestring);
	}
	error = 0;
out:
	cJSON_Delete(c);
	cJSON_Delete(m);
	return error;
}

/* --- copying a tree ---------------------------------------------------- */

/* Files with several links, so the copy links them alike. */
struct link {
	dev_t	 dev;
	ino_t	 ino;
	char	*path;		/* relative to the destination root */
};

struct copy {
	int		 droot;		/* destination root */
	bool		 owners;
	struct link	*links;
	size_t		 nlinks, cap;
	char		 rel[PATH_MAX];	/* current entry, from the root */
	char		*err;
	size_t		 errlen;
};

static const char *
link_find(struct copy *c, const struct stat *st)
{
	size_t	i;

	for (i = 0; i < c->nlinks; i++)
		if (c->links[i].ino == st->st_ino &&
		    c->links[i].dev == st->st_dev)
			return c->links[i].path;
	return NULL;
}

static void
link_add(struct copy *c, const struct stat *st)
{
	if (c->nlinks == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->links = xreallocarray(c->links, c->cap, sizeof(*c->links));
	}
	c->links[c->nlinks].dev = st->st_dev;
	c->links[c->nlinks].ino = st->st_ino;
	c->links[c->nlinks].path = xstrdup(c->rel);
	c->nlinks++;
}

/* Copy the xattrs of fd src to fd dst (trusted.overlay.* never). */
static int
copy_xattrs(int src, int dst)
{
	char	*names, *val, *n;
	ssize_t	 len, vlen;
	int	 error = 0;

	if ((len = flistxattr(src, NULL, 0)) <= 0)
		return 0;
	names = xmalloc(len);
	val = xmalloc(XATTR_BUF);
	if ((len = flistxattr(src, names, len)) < 0)
		len = 0;
	for (n = names; n < names + len; n += strlen(n) + 1) {
		if (strncmp(n, "trusted.overlay.", 16) == 0)
			continue;
		if ((vlen = fgetxattr(src, n, val, XATTR_BUF)) < 0)
			continue;
		if (fsetxattr(dst, n, val, vlen, 0) == -1)
			log_debug("rootfs: cannot copy xattr %s: %s", n,
			    strerror(errno));
	}
	free(val);
	free(names);
	return error;
}

/* Owner, xattrs, mode and times of an open copy; the mode after the
 * owner, as chown clears set-id bits. */
static int
copy_meta(struct copy *c, int src, int dst, const struct stat *st)
{
	struct timespec	ts[2] = { st->st_atim, st->st_mtim };

	if (c->owners && fchown(dst, st->st_uid, st->st_gid) == -1)
		return -errno;
	copy_xattrs(src, dst);
	if (fchmod(dst, st->st_mode & 07777) == -1 ||
	    futimens(dst, ts) == -1)
		return -errno;
	return 0;
}

static int
copy_data(int src, int dst)
{
	char	buf[64 << 10];
	ssize_t	n, w;
	off_t	off;

	/* copy_file_range may share extents (reflink) where the
	 * filesystem can; the read/write loop is the fallback. */
	for (;;) {
		n = copy_file_range(src, NULL, dst, NULL, 1 << 30, 0);
		if (n == 0)
			return 0;
		if (n < 0)
			break;
	}
	if (errno != EXDEV && errno != EINVAL && errno != ENOSYS &&
	    errno != EOPNOTSUPP)
		return -errno;
	/* Nothing was copied when it fails on the first call. */
	if ((off = lseek(dst, 0, SEEK_CUR)) > 0 &&
	    lseek(src, off, SEEK_SET) != off)
		return -errno;
	while ((n = read(src, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (off = 0; off < n; off += w)
			if ((w = write(dst, buf + off, n - off)) < 0) {
				if (errno == EINTR) {
					w = 0;
					continue;
				}
				return -errno;
			}
	}
	return 0;
}

static int copy_dir(struct copy *, int sfd, int dfd);

/* Copy one entry name of directory sfd into directory dfd. */
static int
copy_entry(struct copy *c, int sfd, int dfd, const char *name)
{
	struct stat	 st;
	struct timespec	 ts[2];
	const char	*first;
	char		 target[PATH_MAX];
	ssize_t		 n;
	int		 s = -1, d = -1, error = 0;

	if (fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1)
		return -errno;
	if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
		if ((first = link_find(c, &st)) != NULL)
			return linkat(c->droot, first, dfd, name, 0) == -1 ?
			    -errno : 0;
		link_add(c, &st);
	}
	switch (st.st_mode & S_IFMT) {
	case S_IFDIR:
		/* Writable until its contents are in. */
		if (mkdirat(dfd, name, 0700) == -1)
			return -errno;
		if ((s = openat(sfd, name, O_RDONLY | O_DIRECTORY |
		    O_NOFOLLOW | O_CLOEXEC)) == -1 ||
		    (d = openat(dfd, name, O_RDONLY | O_DIRECTORY |
		    O_NOFOLLOW | O_CLOEXEC)) == -1) {
			error = -errno;
			break;
		}
		if ((error = copy_dir(c, s, d)) == 0)
			error = copy_meta(c, s, d, &st);
		break;
	case S_IFREG:
		if ((s = openat(sfd, name, O_RDONLY | O_NOFOLLOW |
		    O_CLOEXEC)) == -1 ||
		    (d = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL |
		    O_NOFOLLOW | O_CLOEXEC, 0600)) == -1) {
			error = -errno;
			break;
		}
		if ((error = copy_data(s, d)) == 0)
			error = copy_meta(c, s, d, &st);
		break;
	case S_IFLNK:
		if ((n = readlinkat(sfd, name, target, sizeof(target))) < 0 ||
		    (size_t)n == sizeof(target))
			return n < 0 ? -errno : -ENAMETOOLONG;
		target[n] = '\0';
		if (symlinkat(target, dfd, name) == -1)
			return -errno;
		goto meta_at;
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
		if (mknodat(dfd, name, st.st_mode, st.st_rdev) == -1)
			return -errno;
		goto meta_at;
	default:
		/* Sockets: nothing an image can carry. */
		return 0;
	}
	if (s != -1)
		close(s);
	if (d != -1)
		close(d);
	return error;

meta_at:
	/* No fd to hold for links and nodes: by name, not followed. */
	ts[0] = st.st_atim;
	ts[1] = st.st_mtim;
	if (c->owners && fchownat(dfd, name, st.st_uid, st.st_gid,
	    AT_SYMLINK_NOFOLLOW) == -1)
		return -errno;
	if (!S_ISLNK(st.st_mode) &&
	    fchmodat(dfd, name, st.st_mode & 07777, 0) == -1)
		return -errno;
	if (utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW) == -1)
		return -errno;
	return 0;
}

/* Copy the entries of directory sfd into dfd; c->rel names sfd. */
static int
copy_dir(struct copy *c, int sfd, int dfd)
{
	struct dirent	*de;
	DIR		*dir;
	size_t		 base = strlen(c->rel);
	int		 fd, error = 0;

	if ((fd = dup(sfd)) == -1)
		return -errno;
	if ((dir = fdopendir(fd)) == NULL) {
		error = -errno;
		close(fd);
		return error;
	}
	rewinddir(dir);
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if ((size_t)snprintf(c->rel + base, sizeof(c->rel) - base,
		    "%s%s", base ? "/" : "", de->d_name) >=
		    sizeof(c->rel) - base) {
			error = -ENAMETOOLONG;
			break;
		}
		if ((error = copy_entry(c, sfd, dfd, de->d_name)) != 0) {
			if (c->err[0] == '\0')
				snprintf(c->err, c->errlen, "copying %s: %s",
				    c->rel, strerror(-error));
			break;
		}
	}
	c->rel[base] = '\0';
	closedir(dir);
	return error;
}

/* Copy the tree src (an existing directory) into dst (created). */
static int
copy_tree(const char *src, const char *dst, bool owners, char *err,
    size_t errlen)
{
	struct copy	 c = { .owners = owners, .err = err, .errlen = errlen };
	struct stat	 st;
	size_t		 i;
	int		 s, error;

	err[0] = '\0';
	if ((s = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -errno;
	if (fstat(s, &st) == -1 || mkdir(dst, 0700) == -1 ||
	    (c.droot = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		error = -errno;
		close(s);
		return error;
	}
	if ((error = copy_dir(&c, s, c.droot)) == 0)
		error = copy_meta(&c, s, c.droot, &st);
	close(c.droot);
	close(s);
	for (i = 0; i < c.nlinks; i++)
		free(c.links[i].path);
	free(c.links);
	if (error != 0 && err[0] == '\0')
		snprintf(err, errlen, "copying %s: %s", src, strerror(-error));
	return error;
}

/* --- building chains --------------------------------------------------- */

static bool
is_dir(const char *path)
{
	struct stat	st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int
fsync_path(const char *path)
{
	int	fd, error = 0;

	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -errno;
	if (fsync(fd) == -1)
		error = -errno;
	close(fd);
	return error;
}

/*
 * Build rootfs/<chains[n-1] hex>, the tree of the whole layer list, under
 * that chain's lock.  Another caller may have built it while we waited:
 * then there is nothing to do.  Otherwise start from a copy of the tree
 * of the longest prefix in the cache (none: an empty directory), apply
 * the remaining layers in turn to that one tree in tmp/, sync once and
 * rename it in.  *from is the number of layers found unpacked (n when
 * the tree was there), *did whether we built it.
 */
static int
build_tree(struct image_store *s, const char *rootdir, char (*chains)[72],
    char *const *blobs, size_t n, size_t *from, bool *did, char *err,
    size_t errlen)
{
	struct image_unpack_stats	 us;
	char				 dst[PATH_MAX], tmp[PATH_MAX];
	char				 src[PATH_MAX], layer[PATH_MAX];
	char				 lock[72], hex[SHA256_HEX_LEN + 1];
	const char			*chain = chains[n - 1];
	char				*key;
	unsigned			 flags;
	uint64_t			 entries = 0, bytes = 0;
	bool				 root = geteuid() == 0;
	size_t				 k, i;
	int				 lfd, tfd, tdir, error;

	*did = false;
	*from = n;
	snprintf(dst, sizeof(dst), "%s/%s", rootdir, chain + 7);
	/* Cached: no lock needed, as trees appear complete. */
	if (is_dir(dst))
		return 0;
	/* Named after the chain: only the lock holder touches it, so one
	 * found here is what a crash left. */
	snprintf(tmp, sizeof(tmp), "%s/%s.rootfs", image_store_tmpdir(s),
	    chain + 7);
	/* The lock is keyed apart from the chain id, which equals the
	 * first layer's digest when that layer is uncompressed: a pull
	 * holding that blob's download lock must not block us. */
	xasprintf(&key, "rootfs %s", chain);
	sha256_buf(key, strlen(key), hex);
	free(key);
	snprintf(lock, sizeof(lock), "sha256:%s", hex);
	if ((error = image_store_lock_blob(s, lock, &lfd)) != 0) {
		snprintf(err, errlen, "cannot lock %s: %s", dst,
		    strerror(-error));
		return error;
	}
	if (is_dir(dst))
		goto out_unlock;
	/* The longest cached prefix: another image's whole tree, or one
	 * an older cache kept.  Trees appear complete (renamed in), and
	 * our gc hold keeps them. */
	for (k = n - 1; k > 0; k--) {
		snprintf(src, sizeof(src), "%s/%s", rootdir,
		    chains[k - 1] + 7);
		if (is_dir(src))
			break;
	}
	*from = k;
	for (i = k; i < n; i++)
		if (!image_store_has_blob(s, blobs[i])) {
			error = -ENOENT;
			snprintf(err, errlen, "layer %s is not in the store "
			    "(pull the image again)", blobs[i]);
			goto out_unlock;
		}
	if ((tdir = open(image_store_tmpdir(s), O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) == -1) {
		error = -errno;
		snprintf(err, errlen, "%s: %s", image_store_tmpdir(s),
		    strerror(errno));
		goto out_unlock;
	}
	if ((error = rm_tree_at(tdir, strrchr(tmp, '/') + 1, NULL)) != 0) {
		snprintf(err, errlen, "cannot remove the leftover %s: %s", tmp,
		    strerror(-error));
		goto out_tdir;
	}
	if (k > 0) {
		if ((error = copy_tree(src, tmp, root, err, errlen)) != 0)
			goto out_rm;
	} else if (mkdir(tmp, 0755) == -1) {
		error = -errno;
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out_tdir;
	}
	if ((tfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		error = -errno;
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out_rm;
	}
	flags = IMAGE_UNPACK_XATTRS;
	if (root)
		flags |= IMAGE_UNPACK_DEVICES | IMAGE_UNPACK_OWNERS;
	for (i = k; i < n && error == 0; i++) {
		if ((error = image_store_blob_path(s, blobs[i], layer,
		    sizeof(layer))) != 0) {
			snprintf(err, errlen, "layer %s: %s", blobs[i],
			    strerror(-error));
			break;
		}
		if ((error = image_layer_unpack(tfd, layer, flags, &us, err,
		    errlen)) == 0) {
			entries += us.entries;
			bytes += us.bytes;
		}
	}
	/* The tree is durable before its name appears: one sync of the
	 * filesystem for all the layers. */
	if (error == 0 && syncfs(tfd) == -1) {
		error = -errno;
		snprintf(err, errlen, "syncing %s: %s", tmp, strerror(errno));
	}
	close(tfd);
	if (error != 0)
		goto out_rm;
	if (rename(tmp, dst) == -1) {
		error = -errno;
		snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, dst,
		    strerror(errno));
		goto out_rm;
	}
	fsync_path(rootdir);
	log_debug("rootfs: %s: %zu of %zu layers unpacked on %s, %llu "
	    "entries, %llu bytes", chain, n - k, n, k ? "a copy of a "
	    "cached prefix" : "an empty tree", (unsigned long long)entries,
	    (unsigned long long)bytes);
	*did = true;
	goto out_tdir;

out_rm:
	rm_tree_at(tdir, strrchr(tmp, '/') + 1, NULL);
out_tdir:
	close(tdir);
out_unlock:
	image_store_unlock_blob(s, lock, lfd);
	return error;
}

int
image_rootfs_get(struct image_store *s, const char *manifest, char *path,
    size_t len, struct image_rootfs_stats *stats, char *err, size_t errlen)
{
	struct image_rootfs_stats	  st = { 0 };
	struct layers			  l = { 0 };
	char				(*chains)[72] = NULL;
	char				 *rootdir;
	const char			 *tmpdir, *slash;
	size_t				  k, have;
	bool				  did;
	int				  hold, error;

	if (!image_digest_valid(manifest)) {
		snprintf(err, errlen, "\"%s\" is not a sha256 digest",
		    manifest);
		return -EINVAL;
	}
	/* rootfs/ is the sibling of tmp/ in the store's layout. */
	tmpdir = image_store_tmpdir(s);
	slash = strrchr(tmpdir, '/');
	xasprintf(&rootdir, "%.*s/rootfs", (int)(slash - tmpdir), tmpdir);
	/* Keep gc from taking a tree or a blob while we work. */
	if ((error = image_store_hold(s, &hold)) != 0) {
		snprintf(err, errlen, "cannot hold the store: %s",
		    strerror(-error));
		goto out_free;
	}
	if ((error = load_layers(s, manifest, &l, err, errlen)) != 0)
		goto out_release;
	chains = xcalloc(l.n, sizeof(*chains));
	for (k = 0; k < l.n; k++)
		if ((error = image_chain_id((const char *const *)l.diff_ids,
		    k + 1, chains[k])) != 0) {
			snprintf(err, errlen, "manifest %s: bad diff ids",
			    manifest);
			goto out_release;
		}
	st.layers = l.n;
	if ((error = build_tree(s, rootdir, chains, l.blobs, l.n, &have,
	    &did, err, errlen)) != 0)
		goto out_release;
	/* Found whole (maybe built meanwhile by a concurrent caller), or
	 * built on a prefix of have layers. */
	st.reused = have;
	st.unpacked = did ? l.n - have : 0;
	if ((size_t)snprintf(path, len, "%s/%s", rootdir,
	    chains[l.n - 1] + 7) >= len) {
		error = -ENAMETOOLONG;
		snprintf(err, errlen, "rootfs path too long");
	}
out_release:
	image_store_release(hold);
out_free:
	free(chains);
	layers_free(&l);
	free(rootdir);
	if (stats != NULL)
		*stats = st;
	return error;
}
