/*
 * Images from local things: a directory turned into a one-layer image,
 * `docker save` archives and OCI image layouts (image-spec layout.md).
 * Everything read from an archive is untrusted: member names are
 * normalized and may not climb out of the archive, JSON is size-capped,
 * and every blob is checked against its digest (and every layer against
 * the config's diff_ids) before a single ref is set.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>

#include <linux/openat2.h>

#include <archive.h>
#include <archive_entry.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "image/image.h"

#define JSON_MAX	(4u << 20)	/* manifests, configs, indexes */
#define MEMBERS_MAX	100000u		/* entries of a loaded tar */
#define IMAGES_MAX	256u		/* images in one archive */
#define LAYERS_MAX	512u
#define LINK_HOPS	8
#define CHUNK		(64u << 10)

#define MT_MANIFEST	"application/vnd.oci.image.manifest.v1+json"
#define MT_CONFIG	"application/vnd.oci.image.config.v1+json"
#define MT_LAYER	"application/vnd.oci.image.layer.v1.tar"
#define DEFAULT_PATH \
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define REF_NAME_KEY	"org.opencontainers.image.ref.name"

static void __attribute__((format(printf, 3, 4)))
seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list	ap;

	if (err == NULL || len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

/* A fresh flocked *.tmp file in the store's tmp directory (the lock
 * keeps a concurrent open's crash cleanup away from it). */
static int
tmp_file(struct image_store *s, char **pathp, int *fdp)
{
	char	*path;
	int	 fd, error;

	xasprintf(&path, "%s/imp-XXXXXX.tmp", image_store_tmpdir(s));
	if ((fd = mkostemps(path, 4, O_CLOEXEC)) == -1 ||
	    flock(fd, LOCK_EX) == -1) {
		error = -errno;
		if (fd != -1) {
			unlink(path);
			close(fd);
		}
		free(path);
		return error;
	}
	*pathp = path;
	*fdp = fd;
	return 0;
}

static void
digest_str(struct sha256_ctx *c, char out[72])
{
	uint8_t	d[SHA256_LEN];
	char	hex[SHA256_HEX_LEN + 1];

	sha256_final(c, d);
	sha256_hex(d, hex);
	snprintf(out, 72, "sha256:%s", hex);
}

static void
digest_buf(const void *p, size_t len, char out[72])
{
	char	hex[SHA256_HEX_LEN + 1];

	sha256_buf(p, len, hex);
	snprintf(out, 72, "sha256:%s", hex);
}

/* Print j compactly and put it in the store; its digest and size out. */
static int
put_json(struct image_store *s, cJSON *j, char digest[72], size_t *size)
{
	char	*txt;
	int	 error;

	if ((txt = cJSON_PrintUnformatted(j)) == NULL)
		return -ENOMEM;
	*size = strlen(txt);
	digest_buf(txt, *size, digest);
	error = image_store_put_blob(s, digest, txt, *size);
	cJSON_free(txt);
	return error;
}

static cJSON *
descriptor(const char *mt, const char *digest, uint64_t size)
{
	cJSON	*d = cJSON_CreateObject();

	cJSON_AddStringToObject(d, "mediaType", mt);
	cJSON_AddStringToObject(d, "digest", digest);
	cJSON_AddNumberToObject(d, "size", (double)size);
	return d;
}

/* ---------------------------------------------------------------------
 * Import of a directory.
 */

/* The layer being written: the tar goes through sha256 (the diff id),
 * then deflate (gzip framing, header mtime 0: deterministic), then
 * sha256 again (the blob digest) into the temp file. */
struct layer_out {
	struct sha256_ctx	 diff, blob;
	z_stream		 z;
	int			 fd;
	uint64_t		 size;
	uint8_t			 buf[CHUNK];
};

/* Run deflate with flush until it has nothing more to give. */
static int
deflate_out(struct layer_out *o, int flush)
{
	size_t	n;
	int	rc, error;

	for (;;) {
		o->z.next_out = o->buf;
		o->z.avail_out = sizeof(o->buf);
		rc = deflate(&o->z, flush);
		if (rc == Z_STREAM_ERROR)
			return -EIO;
		n = sizeof(o->buf) - o->z.avail_out;
		if (n > 0) {
			sha256_update(&o->blob, o->buf, n);
			if ((error = write_all(o->fd, o->buf, n)) != 0)
				return error;
			o->size += n;
		}
		if (flush == Z_FINISH ? rc == Z_STREAM_END :
		    o->z.avail_out != 0)
			return 0;
	}
}

static la_ssize_t
layer_write_cb(struct archive *a, void *arg, const void *buf, size_t len)
{
	struct layer_out	*o = arg;
	int			 error;

	sha256_update(&o->diff, buf, len);
	o->z.next_in = (Bytef *)(uintptr_t)buf;
	o->z.avail_in = (uInt)len;
	if ((error = deflate_out(o, Z_NO_FLUSH)) != 0) {
		archive_set_error(a, -error, "writing the layer: %s",
		    strerror(-error));
		return -1;
	}
	return (la_ssize_t)len;
}

struct hardlink {
	dev_t	 dev;
	ino_t	 ino;
	char	*name;
};

struct walk {
	struct archive	*a;
	const char	*root;
	struct hardlink	*hl;
	size_t		 nhl, caphl;
	time_t		 newest;	/* mtime: the image's "created" */
	long long	 uid, gid;	/* forced owner, or -1 */
	char		*err;
	size_t		 errlen;
};

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The xattrs of path in name order; system.* (ACLs) are left out. */
static int
add_xattrs(const char *path, struct archive_entry *e)
{
	char	*names = NULL, **v = NULL, *p;
	void	*val = NULL;
	ssize_t	 n, m;
	size_t	 nv = 0, i;

	if ((n = llistxattr(path, NULL, 0)) <= 0)
		return 0;	/* none, or unsupported here */
	names = xmalloc((size_t)n);
	if ((n = llistxattr(path, names, (size_t)n)) <= 0)
		goto out;
	for (p = names; p < names + n; p += strlen(p) + 1) {
		v = xreallocarray(v, nv + 1, sizeof(*v));
		v[nv++] = p;
	}
	if (nv > 1)
		qsort(v, nv, sizeof(*v), cmp_str);
	for (i = 0; i < nv; i++) {
		if (strncmp(v[i], "system.", 7) == 0)
			continue;
		if ((m = lgetxattr(path, v[i], NULL, 0)) < 0)
			continue;
		val = xmalloc((size_t)m + 1);
		if ((m = lgetxattr(path, v[i], val, (size_t)m)) >= 0)
			archive_entry_xattr_add_entry(e, v[i], val, (size_t)m);
		free(val);
	}
out:
	free(v);
	free(names);
	return 0;
}

/* Copy size bytes of the file at path into the archive's current entry. */
static int
add_data(struct walk *w, const char *path, int64_t size)
{
	static uint8_t	 zero[CHUNK];
	uint8_t		*buf;
	ssize_t		 n;
	int		 fd, error = 0;

	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) == -1) {
		error = -errno;
		seterr(w->err, w->errlen, "cannot read %s: %s", path,
		    strerror(errno));
		return error;
	}
	buf = xmalloc(CHUNK);
	while (size > 0) {
		n = read(fd, buf, size < CHUNK ? (size_t)size : CHUNK);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			error = -errno;
			seterr(w->err, w->errlen, "cannot read %s: %s", path,
			    strerror(errno));
			goto out;
		}
		if (n == 0)	/* shrank while we read: pad with zeros */
			break;
		if (archive_write_data(w->a, buf, (size_t)n) != n)
			goto archive_err;
		size -= n;
	}
	while (size > 0) {
		n = size < CHUNK ? (ssize_t)size : (ssize_t)CHUNK;
		if (archive_write_data(w->a, zero, (size_t)n) != n)
			goto archive_err;
		size -= n;
	}
	goto out;
archive_err:
	error = -EIO;
	seterr(w->err, w->errlen, "writing the layer: %s",
	    archive_error_string(w->a));
out:
	free(buf);
	close(fd);
	return error;
}

/* One entry (name is relative to the root); *isdir says to descend. */
static int
add_entry(struct walk *w, const char *name, bool *isdir)
{
	struct archive_entry	*e;
	struct stat		 st;
	char			*path, target[PATH_MAX];
	ssize_t			 n;
	size_t			 i;
	bool			 data = false;
	int			 error = 0;

	*isdir = false;
	xasprintf(&path, "%s/%s", w->root, name);
	if (lstat(path, &st) == -1) {
		error = -errno;
		seterr(w->err, w->errlen, "cannot stat %s: %s", path,
		    strerror(errno));
		free(path);
		return error;
	}
	if (S_ISSOCK(st.st_mode)) {
		log_info("import: %s is a socket; left out", path);
		free(path);
		return 0;
	}
	e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_mode(e, st.st_mode);
	archive_entry_set_uid(e, w->uid >= 0 ? w->uid : st.st_uid);
	archive_entry_set_gid(e, w->gid >= 0 ? w->gid : st.st_gid);
	/* Seconds only: a sub-second part would add a pax record. */
	archive_entry_set_mtime(e, st.st_mtime, 0);
	if (st.st_mtime > w->newest)
		w->newest = st.st_mtime;
	add_xattrs(path, e);
	if (S_ISDIR(st.st_mode))
		*isdir = true;
	else if (S_ISLNK(st.st_mode)) {
		if ((n = readlink(path, target, sizeof(target) - 1)) == -1) {
			error = -errno;
			seterr(w->err, w->errlen, "cannot read link %s: %s",
			    path, strerror(errno));
			goto out;
		}
		target[n] = '\0';
		archive_entry_set_symlink(e, target);
	} else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
		archive_entry_set_rdev(e, st.st_rdev);
	else if (S_ISREG(st.st_mode)) {
		for (i = 0; st.st_nlink > 1 && i < w->nhl; i++)
			if (w->hl[i].dev == st.st_dev &&
			    w->hl[i].ino == st.st_ino)
				break;
		if (st.st_nlink > 1 && i < w->nhl) {
			/* A later name of a file already written. */
			archive_entry_set_hardlink(e, w->hl[i].name);
			archive_entry_set_size(e, 0);
		} else {
			if (st.st_nlink > 1) {
				if (w->nhl == w->caphl) {
					w->caphl = w->caphl ? w->caphl * 2 : 16;
					w->hl = xreallocarray(w->hl, w->caphl,
					    sizeof(*w->hl));
				}
				w->hl[w->nhl].dev = st.st_dev;
				w->hl[w->nhl].ino = st.st_ino;
				w->hl[w->nhl++].name = xstrdup(name);
			}
			archive_entry_set_size(e, st.st_size);
			data = st.st_size > 0;
		}
	}
	if (archive_write_header(w->a, e) != ARCHIVE_OK) {
		error = -EIO;
		seterr(w->err, w->errlen, "writing the layer at %s: %s", name,
		    archive_error_string(w->a));
		goto out;
	}
	if (data)
		error = add_data(w, path, st.st_size);
out:
	archive_entry_free(e);
	free(path);
	return error;
}

/* Add the entries under rel ("" for the root), sorted by name, each
 * directory before what it holds. */
static int
walk_dir(struct walk *w, const char *rel, int depth)
{
	struct dirent	*de;
	DIR		*d;
	char		*path, **names = NULL, *child;
	size_t		 n = 0, i;
	bool		 isdir;
	int		 error = 0;

	if (depth > 256) {
		seterr(w->err, w->errlen, "%s: directories nested too deep",
		    w->root);
		return -ELOOP;
	}
	xasprintf(&path, "%s%s%s", w->root, *rel ? "/" : "", rel);
	if ((d = opendir(path)) == NULL) {
		error = -errno;
		seterr(w->err, w->errlen, "cannot read directory %s: %s",
		    path, strerror(errno));
		free(path);
		return error;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		names = xreallocarray(names, n + 1, sizeof(*names));
		names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	free(path);
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_str);
	for (i = 0; i < n && error == 0; i++) {
		xasprintf(&child, "%s%s%s", rel, *rel ? "/" : "", names[i]);
		if ((error = add_entry(w, child, &isdir)) == 0 && isdir)
			error = walk_dir(w, child, depth + 1);
		free(child);
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return error;
}

/* Write dir as a gzip'd tar into a store temp file. */
static int
write_layer(struct image_store *s, const char *dir,
    const struct image_import_opts *opts, char **tmp,
    char diff_id[72], char digest[72], uint64_t *size, time_t *newest,
    char *err, size_t errlen)
{
	struct layer_out	*o;
	struct walk		 w = { .root = dir, .err = err, .errlen = errlen,
	    .uid = -1, .gid = -1 };
	size_t			 i;
	int			 error;

	if (opts != NULL && opts->size >= sizeof(*opts)) {
		w.uid = opts->uid;
		w.gid = opts->gid;
	}
	o = xcalloc(1, sizeof(*o));
	sha256_init(&o->diff);
	sha256_init(&o->blob);
	if (deflateInit2(&o->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
	    Z_DEFAULT_STRATEGY) != Z_OK) {
		free(o);
		seterr(err, errlen, "cannot start gzip");
		return -ENOMEM;
	}
	if ((error = tmp_file(s, tmp, &o->fd)) != 0) {
		seterr(err, errlen, "cannot create a temp file in %s: %s",
		    image_store_tmpdir(s), strerror(-error));
		goto out_z;
	}
	w.a = archive_write_new();
	if (archive_write_set_format_pax_restricted(w.a) != ARCHIVE_OK ||
	    archive_write_open(w.a, o, NULL, layer_write_cb, NULL) !=
	    ARCHIVE_OK) {
		error = -EIO;
		seterr(err, errlen, "cannot start the layer: %s",
		    archive_error_string(w.a));
		goto out_archive;
	}
	if ((error = walk_dir(&w, "", 0)) != 0)
		goto out_archive;
	if (archive_write_close(w.a) != ARCHIVE_OK) {
		error = -EIO;
		seterr(err, errlen, "finishing the layer: %s",
		    archive_error_string(w.a));
		goto out_archive;
	}
	o->z.next_in = NULL;
	o->z.avail_in = 0;
	if ((error = deflate_out(o, Z_FINISH)) != 0) {
		seterr(err, errlen, "writing the layer: %s", strerror(-error));
		goto out_archive;
	}
	digest_str(&o->diff, diff_id);
	digest_str(&o->blob, digest);
	*size = o->size;
	*newest = w.newest;
out_archive:
	archive_write_free(w.a);
	close(o->fd);
	if (error != 0) {
		unlink(*tmp);
		free(*tmp);
		*tmp = NULL;
	}
out_z:
	deflateEnd(&o->z);
	free(o);
	for (i = 0; i < w.nhl; i++)
		free(w.hl[i].name);
	free(w.hl);
	return error;
}

void
image_import_opts_init(struct image_import_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->uid = o->gid = -1;
}

/* The OCI config of a one-layer image. */
static cJSON *
import_config(const struct image_import_opts *o, const char *diff_id,
    time_t newest)
{
	static const char *const sh[] = { "/bin/sh", NULL };
	const char *const	*cmd = sh, *const *ev;
	cJSON			*root, *cfg, *env, *arr, *rootfs, *it;
	const char		*eq;
	char			 created[32];
	struct tm		 tm;
	size_t			 klen;
	bool			 replaced;

	if (o != NULL && o->cmd != NULL && o->cmd[0] != NULL)
		cmd = o->cmd;
	root = cJSON_CreateObject();
	/* The newest mtime in the tree, not the clock: the same tree
	 * still gives the same config. */
	if (gmtime_r(&newest, &tm) != NULL && strftime(created,
	    sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm) > 0)
		cJSON_AddStringToObject(root, "created", created);
	cJSON_AddStringToObject(root, "architecture", "amd64");
	cJSON_AddStringToObject(root, "os", "linux");
	cfg = cJSON_AddObjectToObject(root, "config");
	env = cJSON_AddArrayToObject(cfg, "Env");
	cJSON_AddItemToArray(env, cJSON_CreateString(DEFAULT_PATH));
	/* Later values of a variable replace earlier ones, PATH included. */
	for (ev = o != NULL ? o->env : NULL; ev != NULL && *ev != NULL; ev++) {
		eq = strchr(*ev, '=');
		klen = eq != NULL ? (size_t)(eq - *ev) + 1 : strlen(*ev);
		replaced = false;
		cJSON_ArrayForEach(it, env)
			if (strncmp(it->valuestring, *ev, klen) == 0 &&
			    (it->valuestring[klen - 1] == '=' ||
			    it->valuestring[klen] == '\0')) {
				cJSON_SetValuestring(it, *ev);
				replaced = true;
				break;
			}
		if (!replaced)
			cJSON_AddItemToArray(env, cJSON_CreateString(*ev));
	}
	arr = cJSON_AddArrayToObject(cfg, "Cmd");
	for (; *cmd != NULL; cmd++)
		cJSON_AddItemToArray(arr, cJSON_CreateString(*cmd));
	cJSON_AddStringToObject(cfg, "WorkingDir",
	    o != NULL && o->workdir != NULL ? o->workdir : "/");
	rootfs = cJSON_AddObjectToObject(root, "rootfs");
	cJSON_AddStringToObject(rootfs, "type", "layers");
	arr = cJSON_AddArrayToObject(rootfs, "diff_ids");
	cJSON_AddItemToArray(arr, cJSON_CreateString(diff_id));
	arr = cJSON_AddArrayToObject(root, "history");
	it = cJSON_CreateObject();
	cJSON_AddStringToObject(it, "created_by", "smx import");
	cJSON_AddItemToArray(arr, it);
	return root;
}

int
image_import_dir(struct image_store *s, const char *dir,
    const struct image_ref *ref, const struct image_import_opts *o,
    char *digest, char *err, size_t errlen)
{
	struct stat	 st;
	cJSON		*cfg, *man, *layers;
	char		 diff_id[72], layer[72], cdigest[72], mdigest[72];
	char		*tmp = NULL;
	uint64_t	 lsize = 0;
	time_t		 newest = 0;
	size_t		 csize, msize;
	int		 hold, error;

	if (stat(dir, &st) == -1) {
		error = -errno;
		seterr(err, errlen, "%s: %s", dir, strerror(errno));
		return error;
	}
	if (!S_ISDIR(st.st_mode)) {
		seterr(err, errlen, "%s: not a directory", dir);
		return -ENOTDIR;
	}
	if ((error = image_store_hold(s, &hold)) != 0) {
		seterr(err, errlen, "cannot hold the store: %s",
		    strerror(-error));
		return error;
	}
	if ((error = write_layer(s, dir, o, &tmp, diff_id, layer, &lsize,
	    &newest, err, errlen)) != 0)
		goto out;
	if ((error = image_store_put_blob_file(s, layer, tmp)) != 0) {
		unlink(tmp);
		seterr(err, errlen, "cannot store the layer of %s: %s", dir,
		    strerror(-error));
		goto out;
	}
	cfg = import_config(o, diff_id, newest);
	error = put_json(s, cfg, cdigest, &csize);
	cJSON_Delete(cfg);
	if (error != 0) {
		seterr(err, errlen, "cannot store the config: %s",
		    strerror(-error));
		goto out;
	}
	man = cJSON_CreateObject();
	cJSON_AddNumberToObject(man, "schemaVersion", 2);
	cJSON_AddStringToObject(man, "mediaType", MT_MANIFEST);
	cJSON_AddItemToObject(man, "config",
	    descriptor(MT_CONFIG, cdigest, csize));
	layers = cJSON_AddArrayToObject(man, "layers");
	cJSON_AddItemToArray(layers,
	    descriptor(MT_LAYER "+gzip", layer, lsize));
	error = put_json(s, man, mdigest, &msize);
	cJSON_Delete(man);
	if (error == 0)
		error = image_store_set_ref(s, ref, mdigest);
	if (error != 0) {
		seterr(err, errlen, "cannot store the image: %s",
		    strerror(-error));
		goto out;
	}
	if (digest != NULL)
		snprintf(digest, 72, "%s", mdigest);
out:
	free(tmp);
	image_store_release(hold);
	return error;
}

/* ---------------------------------------------------------------------
 * Loading archives.  A source is a directory or a tar unpacked into a
 * private temp directory; members are looked up by normalized name.
 */

struct member {
	char	*name;		/* normalized */
	char	*file;		/* extracted copy, or NULL for a link */
	char	*link;		/* normalized target name */
};

struct src {
	struct image_store	*s;
	const char		*path;
	int			 dirfd;		/* directory source */
	char			*xdir;		/* tar source: extraction */
	struct member		*m;
	size_t			 n;
	char			*err;
	size_t			 errlen;
};

/* Join base (a directory name, "" for the top) and p into a name
 * without ".", ".." or empty components.  -EINVAL when p is absolute
 * or climbs above the top. */
static int
norm_name(const char *base, const char *p, char *out, size_t len)
{
	char	 buf[PATH_MAX * 2], *tok, *save;
	size_t	 o = 0, stack[PATH_MAX / 2], depth = 0;

	if (*p == '/' || strlen(base) + strlen(p) + 2 > sizeof(buf))
		return -EINVAL;
	memcpy(buf, base, strlen(base));
	buf[strlen(base)] = '/';
	memcpy(buf + strlen(base) + 1, p, strlen(p) + 1);
	out[0] = '\0';
	for (tok = strtok_r(buf, "/", &save); tok != NULL;
	    tok = strtok_r(NULL, "/", &save)) {
		if (strcmp(tok, ".") == 0)
			continue;
		if (strcmp(tok, "..") == 0) {
			if (depth == 0)
				return -EINVAL;
			o = stack[--depth];
			out[o] = '\0';
			continue;
		}
		if (depth == ARRAY_SIZE(stack) ||
		    o + strlen(tok) + 2 > len)
			return -EINVAL;
		stack[depth++] = o;
		if (o > 0)
			out[o++] = '/';
		memcpy(out + o, tok, strlen(tok) + 1);
		o += strlen(tok);
	}
	return o > 0 ? 0 : -EINVAL;
}

static void
src_close(struct src *src)
{
	size_t	i;

	for (i = 0; i < src->n; i++) {
		if (src->m[i].file != NULL)
			unlink(src->m[i].file);
		free(src->m[i].name);
		free(src->m[i].file);
		free(src->m[i].link);
	}
	free(src->m);
	if (src->xdir != NULL) {
		rmdir(src->xdir);
		free(src->xdir);
	}
	if (src->dirfd != -1)
		close(src->dirfd);
}

/* Unpack the regular files (and links) of a tar into src->xdir. */
static int
src_extract(struct src *src)
{
	struct archive		*a;
	struct archive_entry	*e;
	struct member		*m;
	const char		*name, *hl, *sl;
	char			 norm[PATH_MAX], dir[PATH_MAX], *slash;
	const void		*buf;
	size_t			 len, cap = 0;
	int64_t			 off;
	int			 fd = -1, rc, error = 0;

	xasprintf(&src->xdir, "%s/load-XXXXXX", image_store_tmpdir(src->s));
	if (mkdtemp(src->xdir) == NULL) {
		error = -errno;
		seterr(src->err, src->errlen, "cannot create a temp "
		    "directory in %s: %s", image_store_tmpdir(src->s),
		    strerror(errno));
		free(src->xdir);
		src->xdir = NULL;
		return error;
	}
	a = archive_read_new();
	archive_read_support_format_tar(a);
	archive_read_support_filter_all(a);
	if (archive_read_open_filename(a, src->path, CHUNK) != ARCHIVE_OK)
		goto bad;
	while ((rc = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		name = archive_entry_pathname(e);
		hl = archive_entry_hardlink(e);
		sl = archive_entry_symlink(e);
		if (name == NULL)
			continue;
		if (norm_name("", name, norm, sizeof(norm)) != 0) {
			if (strcmp(name, ".") == 0 || strcmp(name, "./") == 0)
				continue;
			seterr(src->err, src->errlen, "%s: member name %.64s "
			    "escapes the archive", src->path, name);
			error = -EINVAL;
			goto out;
		}
		if (hl == NULL && (sl == NULL ||
		    archive_entry_filetype(e) != AE_IFLNK) &&
		    archive_entry_filetype(e) != AE_IFREG)
			continue;	/* directories and the like */
		if (src->n == MEMBERS_MAX) {
			seterr(src->err, src->errlen, "%s: more than %u "
			    "members", src->path, MEMBERS_MAX);
			error = -EFBIG;
			goto out;
		}
		if (src->n == cap) {
			cap = cap ? cap * 2 : 64;
			src->m = xreallocarray(src->m, cap, sizeof(*src->m));
		}
		m = &src->m[src->n++];
		memset(m, 0, sizeof(*m));
		m->name = xstrdup(norm);
		if (hl != NULL || archive_entry_filetype(e) == AE_IFLNK) {
			/* Hardlinks name their target from the top,
			 * symlinks from the link's directory. */
			snprintf(dir, sizeof(dir), "%s", norm);
			if ((slash = strrchr(dir, '/')) != NULL)
				*slash = '\0';
			else
				dir[0] = '\0';
			if (norm_name(hl != NULL ? "" : dir,
			    hl != NULL ? hl : sl, norm, sizeof(norm)) != 0) {
				seterr(src->err, src->errlen, "%s: link %.64s "
				    "points outside the archive", src->path,
				    m->name);
				error = -EINVAL;
				goto out;
			}
			m->link = xstrdup(norm);
			continue;
		}
		xasprintf(&m->file, "%s/%zu", src->xdir, src->n);
		if ((fd = open(m->file, O_WRONLY | O_CREAT | O_EXCL |
		    O_CLOEXEC, 0600)) == -1) {
			error = -errno;
			seterr(src->err, src->errlen, "cannot write %s: %s",
			    m->file, strerror(errno));
			goto out;
		}
		while ((rc = archive_read_data_block(a, &buf, &len, &off)) ==
		    ARCHIVE_OK) {
			if (lseek(fd, off, SEEK_SET) == -1 ||
			    (error = write_all(fd, buf, len)) != 0) {
				error = error ? error : -errno;
				seterr(src->err, src->errlen, "cannot write "
				    "%s: %s", m->file, strerror(-error));
				goto out;
			}
		}
		if (rc != ARCHIVE_EOF)
			goto bad;
		/* A sparse tail leaves the file short. */
		if (ftruncate(fd, archive_entry_size(e)) == -1) {
			error = -errno;
			goto out;
		}
		close(fd);
		fd = -1;
	}
	if (rc == ARCHIVE_EOF)
		goto out;
bad:
	seterr(src->err, src->errlen, "%s: not a readable tar: %s", src->path,
	    archive_error_string(a) ? archive_error_string(a) : "corrupt");
	error = -EINVAL;
out:
	if (fd != -1)
		close(fd);
	archive_read_free(a);
	return error;
}

static int
src_open(struct image_store *s, const char *path, struct src *src,
    char *err, size_t errlen)
{
	struct stat	st;

	memset(src, 0, sizeof(*src));
	src->s = s;
	src->path = path;
	src->dirfd = -1;
	src->err = err;
	src->errlen = errlen;
	if (stat(path, &st) == -1) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (S_ISDIR(st.st_mode)) {
		if ((src->dirfd = open(path, O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC)) == -1) {
			seterr(err, errlen, "%s: %s", path, strerror(errno));
			return -errno;
		}
		return 0;
	}
	return src_extract(src);
}

/* Open a member for reading; -ENOENT when absent. */
static int
src_member(struct src *src, const char *name, int *fdp)
{
	struct open_how	 how = { .flags = O_RDONLY | O_CLOEXEC,
	    .resolve = RESOLVE_BENEATH };
	char		 norm[PATH_MAX];
	size_t		 i;
	int		 hops, fd;

	if (norm_name("", name, norm, sizeof(norm)) != 0)
		return -EINVAL;
	if (src->dirfd != -1) {
		fd = (int)syscall(SYS_openat2, src->dirfd, norm, &how,
		    sizeof(how));
		if (fd == -1 && errno == ENOSYS)
			fd = openat(src->dirfd, norm, O_RDONLY | O_CLOEXEC);
		if (fd == -1)
			return -errno;
		*fdp = fd;
		return 0;
	}
	for (hops = 0; hops <= LINK_HOPS; hops++) {
		for (i = src->n; i-- > 0;)	/* the last copy wins */
			if (strcmp(src->m[i].name, norm) == 0)
				break;
		if (i == (size_t)-1)
			return -ENOENT;
		if (src->m[i].link == NULL) {
			if ((fd = open(src->m[i].file, O_RDONLY |
			    O_CLOEXEC)) == -1)
				return -errno;
			*fdp = fd;
			return 0;
		}
		snprintf(norm, sizeof(norm), "%s", src->m[i].link);
	}
	return -ELOOP;
}

/* A whole member of at most max bytes. */
static int
src_read(struct src *src, const char *name, size_t max, uint8_t **bufp,
    size_t *lenp)
{
	struct stat	 st;
	uint8_t		*buf;
	ssize_t		 n;
	size_t		 len = 0;
	int		 fd, error;

	if ((error = src_member(src, name, &fd)) != 0) {
		seterr(src->err, src->errlen, "%s: cannot open %.80s: %s",
		    src->path, name, strerror(-error));
		return error;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > max) {
		seterr(src->err, src->errlen, "%s: %.80s is %s", src->path,
		    name, S_ISREG(st.st_mode) ? "too large" : "not a file");
		close(fd);
		return -EFBIG;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	while (len < (size_t)st.st_size) {
		n = read(fd, buf + len, (size_t)st.st_size - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	*bufp = buf;
	*lenp = len;
	return 0;
}

static int
src_json(struct src *src, const char *name, cJSON **jp)
{
	uint8_t	*buf;
	size_t	 len;
	int	 error;

	if ((error = src_read(src, name, JSON_MAX, &buf, &len)) != 0)
		return error;
	*jp = cJSON_ParseWithLength((char *)buf, len);
	free(buf);
	if (*jp == NULL) {
		seterr(src->err, src->errlen, "%s: %.80s is not valid JSON",
		    src->path, name);
		return -EINVAL;
	}
	return 0;
}

/* The hex a member name promises ("blobs/sha256/<hex>", "<hex>.json",
 * "<hex>/layer.tar" does not count), or NULL. */
static bool
named_digest(const char *name, char out[72])
{
	const char	*b = strrchr(name, '/');
	char		 hex[65];
	size_t		 i;

	b = b != NULL ? b + 1 : name;
	if (strlen(b) != 64 && !(strlen(b) == 69 &&
	    strcmp(b + 64, ".json") == 0))
		return false;
	for (i = 0; i < 64; i++) {
		if (!((b[i] >= '0' && b[i] <= '9') ||
		    (b[i] >= 'a' && b[i] <= 'f')))
			return false;
		hex[i] = b[i];
	}
	hex[64] = '\0';
	snprintf(out, 72, "sha256:%s", hex);
	return true;
}

/* A blob staged in the store's tmp directory, not yet put. */
struct staged {
	char	*tmp;
	char	 digest[72];
};

/* Copy a member into a store temp file while hashing it; the layer's
 * diff id (sha256 of the decompressed stream) and media type too. */
static int
stage_layer(struct src *src, const char *name, struct staged *st,
    uint64_t *size, char diff_id[72], const char **mt)
{
	struct sha256_ctx	 c;
	struct archive		*a;
	struct archive_entry	*e;
	uint8_t			*buf, magic[4] = { 0 };
	const void		*p;
	size_t			 len;
	int64_t			 off;
	ssize_t			 n;
	int			 in, out, error;

	if ((error = src_member(src, name, &in)) != 0) {
		seterr(src->err, src->errlen, "%s: cannot open layer %.80s: "
		    "%s", src->path, name, strerror(-error));
		return error;
	}
	if ((error = tmp_file(src->s, &st->tmp, &out)) != 0) {
		seterr(src->err, src->errlen, "cannot create a temp file in "
		    "%s: %s", image_store_tmpdir(src->s), strerror(-error));
		close(in);
		return error;
	}
	sha256_init(&c);
	*size = 0;
	buf = xmalloc(CHUNK);
	while ((n = read(in, buf, CHUNK)) > 0) {
		if (*size == 0)
			memcpy(magic, buf, n < 4 ? (size_t)n : 4);
		sha256_update(&c, buf, (size_t)n);
		if ((error = write_all(out, buf, (size_t)n)) != 0)
			break;
		*size += (uint64_t)n;
	}
	free(buf);
	close(in);
	if (n == -1)
		error = -errno;
	if (error != 0) {
		seterr(src->err, src->errlen, "%s: cannot copy layer %.80s: %s",
		    src->path, name, strerror(-error));
		goto fail;
	}
	digest_str(&c, st->digest);
	if (magic[0] == 0x1f && magic[1] == 0x8b)
		*mt = MT_LAYER "+gzip";
	else if (magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f &&
	    magic[3] == 0xfd)
		*mt = MT_LAYER "+zstd";
	else
		*mt = MT_LAYER;
	/* The uncompressed stream, through libarchive's raw reader. */
	if (lseek(out, 0, SEEK_SET) == -1) {
		error = -errno;
		goto fail;
	}
	a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_raw(a);
	sha256_init(&c);
	if (*size == 0) {
		/* An empty file has no stream; treat it as such. */
	} else if (archive_read_open_fd(a, out, CHUNK) != ARCHIVE_OK ||
	    archive_read_next_header(a, &e) != ARCHIVE_OK) {
		error = -EINVAL;
	} else {
		while (archive_read_data_block(a, &p, &len, &off) ==
		    ARCHIVE_OK)
			sha256_update(&c, p, len);
		if (archive_errno(a) != 0)
			error = -EINVAL;
	}
	if (error != 0)
		seterr(src->err, src->errlen, "%s: layer %.80s is corrupt: %s",
		    src->path, name, archive_error_string(a) ?
		    archive_error_string(a) : "unreadable");
	archive_read_free(a);
	if (error != 0)
		goto fail;
	digest_str(&c, diff_id);
	close(out);
	return 0;
fail:
	close(out);
	unlink(st->tmp);
	free(st->tmp);
	st->tmp = NULL;
	return error;
}

/* What one archive adds: staged blobs and, at the end, refs. */
struct load {
	struct src	 src;
	const char	*name;		/* the caller's NAME, or NULL */
	struct {
		struct image_ref	 ref;
		char			 digest[72];
	}		*refs;
	size_t		 nrefs;
};

static void
add_ref(struct load *l, const struct image_ref *r, const char *digest)
{
	l->refs = xreallocarray(l->refs, l->nrefs + 1, sizeof(*l->refs));
	l->refs[l->nrefs].ref = *r;
	snprintf(l->refs[l->nrefs++].digest, 72, "%s", digest);
}

/* Put a staged blob at once (verifying it), under the caller's hold. */
static int
put_staged(struct load *l, struct staged *st)
{
	int	error;

	error = image_store_put_blob_file(l->src.s, st->digest, st->tmp);
	if (error != 0) {
		unlink(st->tmp);
		seterr(l->src.err, l->src.errlen, "cannot store blob %s: %s",
		    st->digest, strerror(-error));
	}
	free(st->tmp);
	st->tmp = NULL;
	return error;
}

/* Check the layers listed by names (or descriptors) against the
 * config's diff ids, store them, and append their descriptors. */
static int
load_layers(struct load *l, const cJSON *diff_ids, const char *const *names,
    const cJSON *const *descs, size_t n, cJSON *layers)
{
	const cJSON	*want, *d;
	struct staged	 st;
	const char	*mt = NULL;
	char		 diff_id[72], named[72], name[128];
	uint64_t	 size = 0;
	size_t		 i;
	int		 error;

	if (!cJSON_IsArray(diff_ids) ||
	    (size_t)cJSON_GetArraySize(diff_ids) != n) {
		seterr(l->src.err, l->src.errlen, "%s: the config lists %d "
		    "diff_ids for %zu layers", l->src.path,
		    cJSON_GetArraySize(diff_ids), n);
		return -EINVAL;
	}
	for (i = 0; i < n; i++) {
		if (descs != NULL) {
			d = cJSON_GetObjectItemCaseSensitive(descs[i],
			    "digest");
			if (!cJSON_IsString(d) ||
			    !image_digest_valid(d->valuestring)) {
				seterr(l->src.err, l->src.errlen, "%s: layer "
				    "%zu has no valid digest", l->src.path, i);
				return -EINVAL;
			}
			snprintf(name, sizeof(name), "blobs/sha256/%s",
			    d->valuestring + 7);
		} else
			snprintf(name, sizeof(name), "%s", names[i]);
		if ((error = stage_layer(&l->src, name, &st, &size, diff_id,
		    &mt)) != 0)
			return error;
		want = cJSON_GetArrayItem(diff_ids, (int)i);
		error = -EBADMSG;
		if (descs != NULL) {
			d = cJSON_GetObjectItemCaseSensitive(descs[i], "size");
			if (strcmp(cJSON_GetObjectItemCaseSensitive(descs[i],
			    "digest")->valuestring, st.digest) != 0 ||
			    !cJSON_IsNumber(d) || d->valuedouble != (double)size)
				seterr(l->src.err, l->src.errlen, "%s: layer "
				    "%.80s does not match its descriptor (it "
				    "is %s, %llu bytes)", l->src.path, name,
				    st.digest, (unsigned long long)size);
			else
				error = 0;
		} else if (named_digest(name, named) &&
		    strcmp(named, st.digest) != 0)
			seterr(l->src.err, l->src.errlen, "%s: %.80s does not "
			    "match its name (it is %s)", l->src.path, name,
			    st.digest);
		else
			error = 0;
		if (error == 0 && (!cJSON_IsString(want) ||
		    strcmp(want->valuestring, diff_id) != 0)) {
			seterr(l->src.err, l->src.errlen, "%s: layer %.80s is "
			    "%s uncompressed, the config says %.80s",
			    l->src.path, name, diff_id, cJSON_IsString(want) ?
			    want->valuestring : "something else");
			error = -EBADMSG;
		}
		if (error == 0 && (error = put_staged(l, &st)) == 0)
			cJSON_AddItemToArray(layers, descriptor(
			    descs != NULL ? cJSON_GetObjectItemCaseSensitive(
			    descs[i], "mediaType")->valuestring : mt,
			    st.digest, size));
		if (st.tmp != NULL) {
			unlink(st.tmp);
			free(st.tmp);
		}
		if (error != 0)
			return error;
	}
	return 0;
}

/* Parse s as a reference, with a one-line error naming where from. */
static int
parse_ref(struct load *l, const char *s, struct image_ref *r)
{
	char	why[256];

	if (image_ref_parse(s, r, why, sizeof(why)) != 0) {
		seterr(l->src.err, l->src.errlen, "%s: bad image name %.80s: "
		    "%s", l->src.path, s, why);
		return -EINVAL;
	}
	return 0;
}

/* A `docker save` archive: manifest.json. */
static int
load_docker(struct load *l, cJSON *mj)
{
	const cJSON	*img, *c, *tags, *t, *ls, *it;
	const char	**names = NULL;
	struct image_ref r;
	cJSON		*cfg = NULL, *man, *layers;
	uint8_t		*cbuf = NULL;
	size_t		 clen, n, msize;
	char		 cdigest[72], named[72], mdigest[72];
	int		 error = 0, nimg = 0;

	if (!cJSON_IsArray(mj) || cJSON_GetArraySize(mj) == 0 ||
	    (unsigned)cJSON_GetArraySize(mj) > IMAGES_MAX) {
		seterr(l->src.err, l->src.errlen, "%s: manifest.json must "
		    "list 1 to %u images", l->src.path, IMAGES_MAX);
		return -EINVAL;
	}
	cJSON_ArrayForEach(img, mj) {
		nimg++;
		c = cJSON_GetObjectItemCaseSensitive(img, "Config");
		ls = cJSON_GetObjectItemCaseSensitive(img, "Layers");
		tags = cJSON_GetObjectItemCaseSensitive(img, "RepoTags");
		if (!cJSON_IsString(c) || !cJSON_IsArray(ls) ||
		    cJSON_GetArraySize(ls) == 0 ||
		    (unsigned)cJSON_GetArraySize(ls) > LAYERS_MAX) {
			seterr(l->src.err, l->src.errlen, "%s: image %d of "
			    "manifest.json needs Config and 1 to %u Layers",
			    l->src.path, nimg, LAYERS_MAX);
			return -EINVAL;
		}
		if ((error = src_read(&l->src, c->valuestring, JSON_MAX, &cbuf,
		    &clen)) != 0)
			return error;
		digest_buf(cbuf, clen, cdigest);
		if (named_digest(c->valuestring, named) &&
		    strcmp(named, cdigest) != 0) {
			seterr(l->src.err, l->src.errlen, "%s: config %.80s "
			    "does not match its name (it is %s)", l->src.path,
			    c->valuestring, cdigest);
			error = -EBADMSG;
			goto out;
		}
		if ((cfg = cJSON_ParseWithLength((char *)cbuf, clen)) ==
		    NULL) {
			seterr(l->src.err, l->src.errlen, "%s: config %.80s is "
			    "not valid JSON", l->src.path, c->valuestring);
			error = -EINVAL;
			goto out;
		}
		n = 0;
		names = xreallocarray(NULL, (size_t)cJSON_GetArraySize(ls),
		    sizeof(*names));
		cJSON_ArrayForEach(it, ls) {
			if (!cJSON_IsString(it)) {
				seterr(l->src.err, l->src.errlen, "%s: a layer "
				    "name is not a string", l->src.path);
				error = -EINVAL;
				goto out;
			}
			names[n++] = it->valuestring;
		}
		man = cJSON_CreateObject();
		cJSON_AddNumberToObject(man, "schemaVersion", 2);
		cJSON_AddStringToObject(man, "mediaType", MT_MANIFEST);
		cJSON_AddItemToObject(man, "config",
		    descriptor(MT_CONFIG, cdigest, clen));
		layers = cJSON_AddArrayToObject(man, "layers");
		error = load_layers(l, cJSON_GetObjectItemCaseSensitive(
		    cJSON_GetObjectItemCaseSensitive(cfg, "rootfs"),
		    "diff_ids"), names, NULL, n, layers);
		if (error == 0 && (error = image_store_put_blob(l->src.s,
		    cdigest, cbuf, clen)) != 0)
			seterr(l->src.err, l->src.errlen, "cannot store "
			    "config %s: %s", cdigest, strerror(-error));
		if (error == 0 && (error = put_json(l->src.s, man, mdigest,
		    &msize)) != 0)
			seterr(l->src.err, l->src.errlen, "cannot store a "
			    "manifest: %s", strerror(-error));
		cJSON_Delete(man);
		if (error != 0)
			goto out;
		n = 0;
		cJSON_ArrayForEach(t, tags) {
			if (!cJSON_IsString(t))
				continue;
			if ((error = parse_ref(l, t->valuestring, &r)) != 0)
				goto out;
			add_ref(l, &r, mdigest);
			n++;
		}
		if (n == 0 && l->name != NULL) {
			if ((error = parse_ref(l, l->name, &r)) != 0)
				goto out;
			add_ref(l, &r, mdigest);
		} else if (n == 0) {
			seterr(l->src.err, l->src.errlen, "%s: image %d has no "
			    "RepoTags; give a NAME", l->src.path, nimg);
			error = -EINVAL;
			goto out;
		}
		cJSON_Delete(cfg);
		cfg = NULL;
		free(cbuf);
		cbuf = NULL;
		free(names);
		names = NULL;
	}
out:
	cJSON_Delete(cfg);
	free(cbuf);
	free(names);
	return error;
}

/* A blob of an OCI layout named by a descriptor, verified, at most
 * JSON_MAX bytes. */
static int
layout_blob(struct load *l, const cJSON *desc, uint8_t **bufp, size_t *lenp,
    char digest[72])
{
	const cJSON	*d = cJSON_GetObjectItemCaseSensitive(desc, "digest");
	const cJSON	*sz = cJSON_GetObjectItemCaseSensitive(desc, "size");
	char		 name[128];
	int		 error;

	if (!cJSON_IsString(d) || !image_digest_valid(d->valuestring) ||
	    !cJSON_IsNumber(sz)) {
		seterr(l->src.err, l->src.errlen, "%s: a descriptor lacks a "
		    "valid sha256 digest or size", l->src.path);
		return -EINVAL;
	}
	snprintf(name, sizeof(name), "blobs/sha256/%s", d->valuestring + 7);
	if ((error = src_read(&l->src, name, JSON_MAX, bufp, lenp)) != 0)
		return error;
	digest_buf(*bufp, *lenp, digest);
	if (strcmp(digest, d->valuestring) != 0 ||
	    sz->valuedouble != (double)*lenp) {
		seterr(l->src.err, l->src.errlen, "%s: blob %s does not match "
		    "its descriptor (it is %s, %zu bytes)", l->src.path,
		    d->valuestring, digest, *lenp);
		free(*bufp);
		return -EBADMSG;
	}
	return 0;
}

/* Whether an index entry is for linux/amd64 (or says no platform). */
static bool
wanted_platform(const cJSON *desc)
{
	const cJSON	*p = cJSON_GetObjectItemCaseSensitive(desc, "platform");
	const cJSON	*os, *arch;

	if (p == NULL)
		return true;
	os = cJSON_GetObjectItemCaseSensitive(p, "os");
	arch = cJSON_GetObjectItemCaseSensitive(p, "architecture");
	return cJSON_IsString(os) && strcmp(os->valuestring, "linux") == 0 &&
	    cJSON_IsString(arch) && strcmp(arch->valuestring, "amd64") == 0;
}

/* Store the manifest desc names (following nested indexes to the
 * linux/amd64 one) and all it reaches; its digest out. */
static int
layout_manifest(struct load *l, const cJSON *desc, int depth,
    char mdigest[72])
{
	const cJSON	*ms, *el, *cdesc, *ls, **descs = NULL, *mt;
	cJSON		*m = NULL, *cfg = NULL, *layers = NULL;
	uint8_t		*mbuf = NULL, *cbuf = NULL;
	size_t		 mlen, clen, n = 0;
	char		 cdigest[72];
	int		 error;

	if (depth > 4) {
		seterr(l->src.err, l->src.errlen, "%s: indexes nested too "
		    "deep", l->src.path);
		return -ELOOP;
	}
	if ((error = layout_blob(l, desc, &mbuf, &mlen, mdigest)) != 0)
		return error;
	if ((m = cJSON_ParseWithLength((char *)mbuf, mlen)) == NULL) {
		seterr(l->src.err, l->src.errlen, "%s: manifest %s is not "
		    "valid JSON", l->src.path, mdigest);
		error = -EINVAL;
		goto out;
	}
	if ((ms = cJSON_GetObjectItemCaseSensitive(m, "manifests")) != NULL) {
		cJSON_ArrayForEach(el, ms)
			if (wanted_platform(el)) {
				error = layout_manifest(l, el, depth + 1,
				    mdigest);
				goto out;
			}
		seterr(l->src.err, l->src.errlen, "%s: index %s has no "
		    "linux/amd64 image", l->src.path, mdigest);
		error = -ENOENT;
		goto out;
	}
	cdesc = cJSON_GetObjectItemCaseSensitive(m, "config");
	ls = cJSON_GetObjectItemCaseSensitive(m, "layers");
	if (cdesc == NULL || !cJSON_IsArray(ls) ||
	    (unsigned)cJSON_GetArraySize(ls) > LAYERS_MAX) {
		seterr(l->src.err, l->src.errlen, "%s: manifest %s needs a "
		    "config and at most %u layers", l->src.path, mdigest,
		    LAYERS_MAX);
		error = -EINVAL;
		goto out;
	}
	if ((error = layout_blob(l, cdesc, &cbuf, &clen, cdigest)) != 0)
		goto out;
	if ((cfg = cJSON_ParseWithLength((char *)cbuf, clen)) == NULL) {
		seterr(l->src.err, l->src.errlen, "%s: config %s is not "
		    "valid JSON", l->src.path, cdigest);
		error = -EINVAL;
		goto out;
	}
	descs = xreallocarray(NULL, (size_t)cJSON_GetArraySize(ls) + 1,
	    sizeof(*descs));
	cJSON_ArrayForEach(el, ls) {
		mt = cJSON_GetObjectItemCaseSensitive(el, "mediaType");
		if (!cJSON_IsString(mt)) {
			seterr(l->src.err, l->src.errlen, "%s: a layer of %s "
			    "has no mediaType", l->src.path, mdigest);
			error = -EINVAL;
			goto out;
		}
		descs[n++] = el;
	}
	layers = cJSON_CreateArray();
	if ((error = load_layers(l, cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(cfg, "rootfs"), "diff_ids"),
	    NULL, descs, n, layers)) != 0)
		goto out;
	if ((error = image_store_put_blob(l->src.s, cdigest, cbuf, clen)) !=
	    0 || (error = image_store_put_blob(l->src.s, mdigest, mbuf,
	    mlen)) != 0)
		seterr(l->src.err, l->src.errlen, "cannot store image %s: %s",
		    mdigest, strerror(-error));
out:
	cJSON_Delete(layers);
	cJSON_Delete(cfg);
	cJSON_Delete(m);
	free(descs);
	free(cbuf);
	free(mbuf);
	return error;
}

/* An OCI layout: oci-layout and index.json. */
static int
load_oci(struct load *l)
{
	const cJSON	*ms, *el, *ann, *rn, *v;
	cJSON		*lay = NULL, *idx = NULL;
	struct image_ref r;
	char		 mdigest[72], *full = NULL;
	const char	*slash, *colon;
	int		 error, count;

	if ((error = src_json(&l->src, "oci-layout", &lay)) != 0)
		return error;
	v = cJSON_GetObjectItemCaseSensitive(lay, "imageLayoutVersion");
	if (!cJSON_IsString(v)) {
		seterr(l->src.err, l->src.errlen, "%s: oci-layout has no "
		    "imageLayoutVersion", l->src.path);
		error = -EINVAL;
		goto out;
	}
	if ((error = src_json(&l->src, "index.json", &idx)) != 0)
		goto out;
	ms = cJSON_GetObjectItemCaseSensitive(idx, "manifests");
	count = cJSON_GetArraySize(ms);
	if (!cJSON_IsArray(ms) || count == 0 || (unsigned)count > IMAGES_MAX) {
		seterr(l->src.err, l->src.errlen, "%s: index.json must list 1 "
		    "to %u manifests", l->src.path, IMAGES_MAX);
		error = -EINVAL;
		goto out;
	}
	cJSON_ArrayForEach(el, ms) {
		ann = cJSON_GetObjectItemCaseSensitive(el, "annotations");
		rn = cJSON_GetObjectItemCaseSensitive(ann, REF_NAME_KEY);
		/* Several platforms of one name: the index says which. */
		if (count > 1 && !wanted_platform(el))
			continue;
		if ((error = layout_manifest(l, el, 0, mdigest)) != 0)
			goto out;
		free(full);
		full = NULL;
		if (cJSON_IsString(rn) && (strchr(rn->valuestring, '/') ||
		    strchr(rn->valuestring, ':') ||
		    strchr(rn->valuestring, '@')) && l->name == NULL)
			full = xstrdup(rn->valuestring);
		else if (cJSON_IsString(rn) && l->name != NULL &&
		    strchr(rn->valuestring, '/') == NULL &&
		    strchr(rn->valuestring, ':') == NULL) {
			/* A bare tag goes with NAME, unless NAME has one. */
			slash = strrchr(l->name, '/');
			colon = strchr(slash ? slash : l->name, ':');
			if (colon == NULL && strchr(l->name, '@') == NULL)
				xasprintf(&full, "%s:%s", l->name,
				    rn->valuestring);
			else
				full = xstrdup(l->name);
		} else if (l->name != NULL)
			full = xstrdup(l->name);
		else {
			seterr(l->src.err, l->src.errlen, "%s: manifest %s is "
			    "not named (%s); give a NAME", l->src.path,
			    mdigest, cJSON_IsString(rn) ? "only a tag" :
			    "no " REF_NAME_KEY);
			error = -EINVAL;
			goto out;
		}
		if ((error = parse_ref(l, full, &r)) != 0)
			goto out;
		add_ref(l, &r, mdigest);
	}
	if (l->nrefs == 0) {
		seterr(l->src.err, l->src.errlen, "%s: no linux/amd64 image",
		    l->src.path);
		error = -ENOENT;
	}
out:
	free(full);
	cJSON_Delete(idx);
	cJSON_Delete(lay);
	return error;
}

int
image_load(struct image_store *s, const char *path, const char *name,
    image_load_fn cb, void *arg, char *err, size_t errlen)
{
	struct load	 l;
	cJSON		*mj = NULL;
	char		 buf[IMAGE_REF_MAX];
	size_t		 i;
	int		 hold, fd, error;

	memset(&l, 0, sizeof(l));
	l.name = name;
	if ((error = image_store_hold(s, &hold)) != 0) {
		seterr(err, errlen, "cannot hold the store: %s",
		    strerror(-error));
		return error;
	}
	if ((error = src_open(s, path, &l.src, err, errlen)) != 0)
		goto out;
	/* docker save writes manifest.json (and, since 25, an OCI layout
	 * beside it whose names are bare tags): prefer manifest.json. */
	if (src_member(&l.src, "manifest.json", &fd) == 0) {
		close(fd);
		if ((error = src_json(&l.src, "manifest.json", &mj)) == 0)
			error = load_docker(&l, mj);
	} else if (src_member(&l.src, "oci-layout", &fd) == 0) {
		close(fd);
		error = load_oci(&l);
	} else {
		seterr(err, errlen, "%s: neither a docker save archive "
		    "(manifest.json) nor an OCI layout (oci-layout)", path);
		error = -EINVAL;
	}
	/* Refs only once everything is verified and stored. */
	for (i = 0; error == 0 && i < l.nrefs; i++) {
		if ((error = image_store_set_ref(s, &l.refs[i].ref,
		    l.refs[i].digest)) != 0) {
			seterr(err, errlen, "cannot set a ref: %s",
			    strerror(-error));
			break;
		}
		if (cb != NULL && image_ref_familiar(&l.refs[i].ref, buf,
		    sizeof(buf)) >= 0)
			cb(buf, l.refs[i].digest, arg);
	}
out:
	cJSON_Delete(mj);
	free(l.refs);
	src_close(&l.src);
	image_store_release(hold);
	return error;
}
