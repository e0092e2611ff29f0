/*
 * Unit test for image/import.c on a fresh store: a tree with files,
 * directories, symlinks, hardlinks, odd modes, owners and xattrs is
 * imported, its layer unpacked with image_layer_unpack and the trees
 * compared; imports are deterministic; OCI layouts (directory and tar)
 * and docker-save archives built here load; hostile archives fail with
 * a reason and set no ref.
 */
#include <sys/stat.h>
#include <sys/xattr.h>

#include <archive.h>
#include <archive_entry.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"
#include "tests/tap.h"

static char			 home[] = "/tmp/import_test.XXXXXX";
static struct image_store	*store;
static int			 seq;
static const char		*xattr_ns;	/* "user", "trusted" or NULL */

static int
put_file(const char *path, const char *data, mode_t mode)
{
	int	fd;
	ssize_t	n;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)) == -1)
		return -1;
	n = write(fd, data, strlen(data));
	close(fd);
	return n == (ssize_t)strlen(data) ? chmod(path, mode) : -1;
}

/* A fresh directory under home. */
static void
fresh_dir(char *buf, size_t len, const char *what)
{
	snprintf(buf, len, "%s/%s%d", home, what, seq++);
	mkdir(buf, 0755);
}

#define FAIL_TREE do { tap_diag("make_tree line %d: %s", __LINE__, \
	strerror(errno)); return -1; } while (0)

/* The sample tree: every kind of entry import must carry. */
static int
make_tree(const char *root)
{
	char	p[2048], q[2048], name[64];

#define P(s) (snprintf(p, sizeof(p), "%s/%s", root, s), p)
	if (mkdir(P("bin"), 0755) || mkdir(P("etc"), 0755) ||
	    mkdir(P("etc/secret"), 0700) || mkdir(P("empty"), 01777) ||
	    mkdir(P("a"), 0755) || mkdir(P("a/b"), 0750))
		FAIL_TREE;
	if (put_file(P("bin/tool"), "#!/bin/sh\necho hi\n", 04755) ||
	    put_file(P("etc/passwd"), "root:x:0:0::/root:/bin/sh\n", 0644) ||
	    put_file(P("etc/secret/key"), "k", 0600) ||
	    put_file(P("a/b/zero"), "", 0444) ||
	    put_file(P("a/big"), "", 0644))
		FAIL_TREE;
	/* A file larger than one copy chunk. */
	if (truncate(P("a/big"), 300000) != 0)
		FAIL_TREE;
	if (symlink("../etc/passwd", P("bin/pw")) ||
	    symlink("/nowhere/at/all", P("a/dangling")))
		FAIL_TREE;
	snprintf(q, sizeof(q), "%s/a/b/tool2", root);
	if (link(P("bin/tool"), q) != 0)
		FAIL_TREE;
	snprintf(q, sizeof(q), "%s/etc/passwd-", root);
	if (link(P("etc/passwd"), q) != 0)
		FAIL_TREE;
	if (chown(P("etc/secret"), 1234, 5678) ||
	    chown(P("etc/secret/key"), 1234, 5678) ||
	    lchown(P("a/dangling"), 42, 43))
		FAIL_TREE;
	if (xattr_ns != NULL) {
		snprintf(name, sizeof(name), "%s.smx.test", xattr_ns);
		if (lsetxattr(P("etc/passwd"), name, "v1", 2, 0) ||
		    lsetxattr(P("a/b"), name, "dir\0bin", 7, 0))
			FAIL_TREE;
	}
	if (mkfifo(P("a/fifo"), 0640) != 0)
		FAIL_TREE;
#undef P
	return 0;
}

/* Compare the xattrs (system.* aside) of two paths. */
static int
same_xattrs(const char *a, const char *b)
{
	char	la[1024], lb[1024], va[256], vb[256], *p;
	ssize_t	na, nb, xa, xb;

	na = llistxattr(a, la, sizeof(la));
	nb = llistxattr(b, lb, sizeof(lb));
	if (na < 0)
		na = 0;
	if (nb < 0)
		nb = 0;
	for (p = la; p < la + na; p += strlen(p) + 1) {
		if (strncmp(p, "system.", 7) == 0 ||
		    strncmp(p, "security.", 9) == 0)
			continue;
		xa = lgetxattr(a, p, va, sizeof(va));
		xb = lgetxattr(b, p, vb, sizeof(vb));
		if (xa != xb || xa < 0 || memcmp(va, vb, (size_t)xa) != 0) {
			tap_diag("xattr %s differs on %s", p, b);
			return -1;
		}
	}
	(void)lb;
	return 0;
}

static int
same_content(const char *a, const char *b)
{
	uint8_t	*ba, *bb;
	size_t	 la, lb;
	int	 rc = -1;

	if (read_file(a, 1 << 20, &ba, &la) != 0)
		return -1;
	if (read_file(b, 1 << 20, &bb, &lb) == 0) {
		rc = la == lb && memcmp(ba, bb, la) == 0 ? 0 : -1;
		free(bb);
	}
	free(ba);
	return rc;
}

/* Every entry under a exists under b alike; counts entries. */
static int
same_tree(const char *a, const char *b, int *count)
{
	struct dirent	*de;
	struct stat	 sa, sb;
	DIR		*d;
	char		 pa[1024], pb[1024], ta[256], tb[256];
	ssize_t		 n;
	int		 rc = 0;

	if ((d = opendir(a)) == NULL)
		return -1;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		(*count)++;
		snprintf(pa, sizeof(pa), "%s/%s", a, de->d_name);
		snprintf(pb, sizeof(pb), "%s/%s", b, de->d_name);
		if (lstat(pa, &sa) != 0 || lstat(pb, &sb) != 0) {
			tap_diag("missing %s", pb);
			rc = -1;
			break;
		}
		if (sa.st_mode != sb.st_mode || sa.st_uid != sb.st_uid ||
		    sa.st_gid != sb.st_gid) {
			tap_diag("%s: mode %o uid %u gid %u, want %o %u %u",
			    pb, sb.st_mode, sb.st_uid, sb.st_gid, sa.st_mode,
			    sa.st_uid, sa.st_gid);
			rc = -1;
		} else if (!S_ISLNK(sa.st_mode) &&
		    sa.st_mtime != sb.st_mtime) {
			tap_diag("%s: mtime differs", pb);
			rc = -1;
		} else if (S_ISREG(sa.st_mode) && (sa.st_size != sb.st_size ||
		    sa.st_nlink != sb.st_nlink || same_content(pa, pb))) {
			tap_diag("%s: content or link count differs", pb);
			rc = -1;
		} else if (S_ISLNK(sa.st_mode)) {
			n = readlink(pa, ta, sizeof(ta) - 1);
			ta[n < 0 ? 0 : n] = '\0';
			n = readlink(pb, tb, sizeof(tb) - 1);
			tb[n < 0 ? 0 : n] = '\0';
			if (strcmp(ta, tb) != 0) {
				tap_diag("%s -> %s, want %s", pb, tb, ta);
				rc = -1;
			}
		} else if (S_ISDIR(sa.st_mode))
			rc = same_tree(pa, pb, count);
		if (rc == 0)
			rc = same_xattrs(pa, pb);
	}
	closedir(d);
	return rc;
}

/* The manifest of ref, parsed. */
static cJSON *
manifest_of(const char *digest)
{
	uint8_t	*buf;
	size_t	 len;
	cJSON	*j;

	if (image_store_get_blob(store, digest, 1 << 20, &buf, &len) != 0)
		return NULL;
	j = cJSON_ParseWithLength((char *)buf, len);
	free(buf);
	return j;
}

static const char *
jstr(const cJSON *j, const char *a, const char *b)
{
	const cJSON	*v = cJSON_GetObjectItemCaseSensitive(j, a);

	if (b != NULL)
		v = cJSON_GetObjectItemCaseSensitive(v, b);
	return cJSON_IsString(v) ? v->valuestring : "";
}

/* Digest of the first layer of a manifest. */
static int
first_layer(const char *mdigest, char out[72])
{
	cJSON	*m;

	if ((m = manifest_of(mdigest)) == NULL)
		return -1;
	snprintf(out, 72, "%s", jstr(cJSON_GetArrayItem(
	    cJSON_GetObjectItemCaseSensitive(m, "layers"), 0), "digest",
	    NULL));
	cJSON_Delete(m);
	return out[0] ? 0 : -1;
}

static int
import(const char *dir, const char *name, char digest[72])
{
	struct image_import_opts o;
	struct image_ref	 r;
	char			 err[256];
	int			 error;

	image_import_opts_init(&o);
	if (image_ref_parse(name, &r, err, sizeof(err)) != 0)
		return -EINVAL;
	if ((error = image_import_dir(store, dir, &r, &o, digest, err,
	    sizeof(err))) != 0)
		tap_diag("import %s: %s", dir, err);
	return error;
}

/* The manifest digest a ref names, or "" */
static void
ref_digest(const char *name, char out[72])
{
	struct image_ref	r;
	char			err[256];

	out[0] = '\0';
	if (image_ref_parse(name, &r, err, sizeof(err)) != 0 ||
	    image_store_get_ref(store, &r, out, 72) != 0)
		out[0] = '\0';
}

static int
t_roundtrip(void)
{
	struct image_unpack_stats st;
	char	src[256], dst[256], digest[72], layer[72], path[2048];
	char	err[256];
	int	fd, count = 0;

	fresh_dir(src, sizeof(src), "tree");
	fresh_dir(dst, sizeof(dst), "unpacked");
	TAP_CHECK(make_tree(src) == 0);
	TAP_CHECK(import(src, "example/tree:1", digest) == 0);
	TAP_CHECK(first_layer(digest, layer) == 0);
	TAP_CHECK(image_store_blob_path(store, layer, path, sizeof(path)) ==
	    0);
	TAP_CHECK((fd = open(dst, O_RDONLY | O_DIRECTORY)) != -1);
	memset(&st, 0, sizeof(st));
	if (image_layer_unpack(fd, path, IMAGE_UNPACK_DEVICES |
	    IMAGE_UNPACK_OWNERS | IMAGE_UNPACK_XATTRS, &st, err,
	    sizeof(err)) != 0) {
		tap_diag("unpack: %s", err);
		close(fd);
		return TAP_FAIL;
	}
	close(fd);
	TAP_CHECK(same_tree(src, dst, &count) == 0);
	TAP_CHECK(count == 16);
	count = 0;
	TAP_CHECK(same_tree(dst, src, &count) == 0);
	if (xattr_ns == NULL)
		tap_diag("no xattr support here: xattrs not compared");
	return TAP_PASS;
}

static int
t_deterministic(void)
{
	char	a[256], b[256], d1[72], d2[72], d3[72], p[2048];

	fresh_dir(a, sizeof(a), "det");
	TAP_CHECK(make_tree(a) == 0);
	TAP_CHECK(import(a, "example/det:1", d1) == 0);
	TAP_CHECK(import(a, "example/det:2", d2) == 0);
	TAP_CHECK(strcmp(d1, d2) == 0);
	/* A copy made another way (other inodes, same content) too. */
	fresh_dir(b, sizeof(b), "det");
	snprintf(p, sizeof(p), "cp -a %s/. %s/", a, b);
	TAP_CHECK(system(p) == 0);
	TAP_CHECK(import(b, "example/det:3", d3) == 0);
	TAP_CHECK(strcmp(d1, d3) == 0);
	snprintf(p, sizeof(p), "%s/etc/passwd", b);
	TAP_CHECK(put_file(p, "changed\n", 0644) == 0);
	TAP_CHECK(import(b, "example/det:4", d3) == 0);
	TAP_CHECK(strcmp(d1, d3) != 0);
	ref_digest("example/det:2", d2);
	TAP_CHECK(strcmp(d1, d2) == 0);
	return TAP_PASS;
}

static int
t_config(void)
{
	static const char *const cmd[] = { "/bin/hello", "-x", NULL };
	static const char *const env[] = { "A=1", "PATH=/bin", "A=2", NULL };
	struct image_import_opts o;
	struct image_ref	 r;
	char			 src[256], err[256], digest[72];
	cJSON			*m, *c = NULL;
	const cJSON		*v;
	uint8_t			*buf;
	size_t			 len;
	int			 rc = TAP_FAIL;

	fresh_dir(src, sizeof(src), "cfg");
	image_import_opts_init(&o);
	o.cmd = cmd;
	o.env = env;
	TAP_CHECK(image_ref_parse("cfg", &r, err, sizeof(err)) == 0);
	TAP_CHECK(image_import_dir(store, src, &r, &o, digest, err,
	    sizeof(err)) == 0);
	TAP_CHECK((m = manifest_of(digest)) != NULL);
	TAP_CHECK_GOTO(strcmp(jstr(m, "mediaType", NULL),
	    "application/vnd.oci.image.manifest.v1+json") == 0, out);
	TAP_CHECK_GOTO(image_store_get_blob(store, jstr(m, "config",
	    "digest"), 1 << 20, &buf, &len) == 0, out);
	c = cJSON_ParseWithLength((char *)buf, len);
	free(buf);
	TAP_CHECK_GOTO(c != NULL, out);
	TAP_CHECK_GOTO(strcmp(jstr(c, "architecture", NULL), "amd64") == 0 &&
	    strcmp(jstr(c, "os", NULL), "linux") == 0, out);
	TAP_CHECK_GOTO(strcmp(jstr(c, "config", "WorkingDir"), "/") == 0, out);
	v = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(c, "config"), "Cmd");
	TAP_CHECK_GOTO(cJSON_GetArraySize(v) == 2 && strcmp(
	    cJSON_GetArrayItem(v, 1)->valuestring, "-x") == 0, out);
	v = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(c, "config"), "Env");
	TAP_CHECK_GOTO(cJSON_GetArraySize(v) == 2, out);
	TAP_CHECK_GOTO(strcmp(cJSON_GetArrayItem(v, 0)->valuestring,
	    "PATH=/bin") == 0, out);
	TAP_CHECK_GOTO(strcmp(cJSON_GetArrayItem(v, 1)->valuestring,
	    "A=2") == 0, out);
	v = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(c, "rootfs"), "diff_ids");
	TAP_CHECK_GOTO(cJSON_GetArraySize(v) == 1, out);
	rc = TAP_PASS;
out:
	cJSON_Delete(c);
	cJSON_Delete(m);
	return rc;
}

/* Tar entries for the archives built here. */
struct tent {
	const char	*name;
	const void	*data;		/* NULL: a directory (or link) */
	size_t		 len;
	const char	*symlink;
};

static int
write_tar(const char *path, const struct tent *e, size_t n)
{
	struct archive		*a = archive_write_new();
	struct archive_entry	*ae;
	size_t			 i;
	int			 rc = 0;

	archive_write_set_format_pax_restricted(a);
	if (archive_write_open_filename(a, path) != ARCHIVE_OK)
		rc = -1;
	for (i = 0; rc == 0 && i < n; i++) {
		ae = archive_entry_new();
		archive_entry_set_pathname(ae, e[i].name);
		if (e[i].symlink != NULL) {
			archive_entry_set_filetype(ae, AE_IFLNK);
			archive_entry_set_symlink(ae, e[i].symlink);
		} else if (e[i].data == NULL)
			archive_entry_set_filetype(ae, AE_IFDIR);
		else {
			archive_entry_set_filetype(ae, AE_IFREG);
			archive_entry_set_size(ae, (la_int64_t)e[i].len);
		}
		archive_entry_set_perm(ae, 0644);
		if (archive_write_header(a, ae) != ARCHIVE_OK ||
		    (e[i].data != NULL && e[i].symlink == NULL &&
		    archive_write_data(a, e[i].data, e[i].len) !=
		    (la_ssize_t)e[i].len))
			rc = -1;
		archive_entry_free(ae);
	}
	if (archive_write_close(a) != ARCHIVE_OK)
		rc = -1;
	archive_write_free(a);
	return rc;
}

static void
sha(const void *p, size_t len, char out[72])
{
	char	hex[65];

	sha256_buf(p, len, hex);
	snprintf(out, 72, "sha256:%s", hex);
}

static int
load(const char *path, const char *name, char *err, size_t errlen)
{
	return image_load(store, path, name, NULL, NULL, err, errlen);
}

/* An OCI layout of an imported image, written by hand. */
static int
make_layout(const char *dir, const char *mdigest, const char *ref_name)
{
	cJSON		*m;
	const cJSON	*el;
	char		 p[2048], q[4200], idx[2048];
	uint8_t		*buf;
	size_t		 len;
	int		 rc = -1;

	snprintf(p, sizeof(p), "mkdir -p %s/blobs/sha256", dir);
	if (system(p) != 0 || (m = manifest_of(mdigest)) == NULL)
		return -1;
	/* Copy manifest, config and layers. */
#define CP(d) (image_store_blob_path(store, d, p, sizeof(p)), \
	snprintf(q, sizeof(q), "cp %s %s/blobs/sha256/", p, dir), system(q))
	if (CP(mdigest) != 0 || CP(jstr(m, "config", "digest")) != 0)
		goto out;
	cJSON_ArrayForEach(el, cJSON_GetObjectItemCaseSensitive(m, "layers"))
		if (CP(jstr(el, "digest", NULL)) != 0)
			goto out;
#undef CP
	if (image_store_get_blob(store, mdigest, 1 << 20, &buf, &len) != 0)
		goto out;
	free(buf);
	snprintf(p, sizeof(p), "%s/oci-layout", dir);
	if (put_file(p, "{\"imageLayoutVersion\":\"1.0.0\"}", 0644) != 0)
		goto out;
	snprintf(idx, sizeof(idx), "{\"schemaVersion\":2,\"manifests\":[{"
	    "\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
	    "\"digest\":\"%s\",\"size\":%zu%s%s%s}]}", mdigest, len,
	    ref_name ? ",\"annotations\":{\"org.opencontainers.image.ref."
	    "name\":\"" : "", ref_name ? ref_name : "", ref_name ? "\"}" : "");
	snprintf(p, sizeof(p), "%s/index.json", dir);
	rc = put_file(p, idx, 0644);
out:
	cJSON_Delete(m);
	return rc;
}

static int
t_load_oci(void)
{
	char	src[256], lay[256], d[72], got[72], err[256], p[2048];

	fresh_dir(src, sizeof(src), "ocisrc");
	snprintf(p, sizeof(p), "%s/hello", src);
	TAP_CHECK(put_file(p, "hello\n", 0644) == 0);
	TAP_CHECK(import(src, "example/ocisrc", d) == 0);
	/* A directory with a bare tag: needs a name. */
	fresh_dir(lay, sizeof(lay), "layout");
	TAP_CHECK(make_layout(lay, d, "v1") == 0);
	TAP_CHECK(load(lay, NULL, err, sizeof(err)) == -EINVAL);
	tap_diag("expected: %s", err);
	TAP_CHECK(load(lay, "example/oci", err, sizeof(err)) == 0);
	ref_digest("example/oci:v1", got);
	TAP_CHECK(strcmp(got, d) == 0);
	/* A tar of a layout with a full name. */
	fresh_dir(lay, sizeof(lay), "layout");
	TAP_CHECK(make_layout(lay, d, "registry.test/x/y:2") == 0);
	snprintf(p, sizeof(p), "tar -C %s -cf %s.tar .", lay, lay);
	TAP_CHECK(system(p) == 0);
	snprintf(p, sizeof(p), "%s.tar", lay);
	if (load(p, NULL, err, sizeof(err)) != 0) {
		tap_diag("%s", err);
		return TAP_FAIL;
	}
	ref_digest("registry.test/x/y:2", got);
	TAP_CHECK(strcmp(got, d) == 0);
	/* skopeo, when present, makes an oci-archive of the layout. */
	snprintf(p, sizeof(p), "command -v skopeo >/dev/null && skopeo copy "
	    "-q oci:%s:registry.test/x/y:2 oci-archive:%s.sk.tar:3",
	    lay, lay);
	if (system(p) == 0) {
		snprintf(p, sizeof(p), "%s.sk.tar", lay);
		TAP_CHECK(load(p, "example/sk", err, sizeof(err)) == 0);
		ref_digest("example/sk:3", got);
		TAP_CHECK(got[0] != '\0');
	}
	return TAP_PASS;
}

/* A docker save archive: <id>/layer.tar uncompressed, <hex>.json
 * config, manifest.json; edit lets a case spoil one part. */
enum spoil { SPOIL_NONE, SPOIL_DIFFID, SPOIL_CONFIG_NAME, SPOIL_ESCAPE,
	SPOIL_HUGE, SPOIL_JSON, SPOIL_LINK_OUT, SPOIL_NOT_TAR };

static int
make_docker(const char *path, enum spoil spoil)
{
	struct tent	 le[2] = {
		{ "srv", NULL, 0, NULL },
		{ "srv/data.txt", "docker layer\n", 13, NULL },
	};
	struct tent	 e[6];
	char		 lpath[2048], cfg[512], ldiff[72], cdig[72];
	char		 cname[80], man[1024];
	uint8_t		*layer;
	size_t		 llen, n = 0;
	char		*huge = NULL;
	int		 rc;

	snprintf(lpath, sizeof(lpath), "%s.layer", path);
	if (write_tar(lpath, le, 2) != 0 ||
	    read_file(lpath, 1 << 20, &layer, &llen) != 0)
		return -1;
	sha(layer, llen, ldiff);
	snprintf(cfg, sizeof(cfg), "{\"architecture\":\"amd64\",\"os\":"
	    "\"linux\",\"config\":{\"Cmd\":[\"/bin/sh\"]},\"rootfs\":{"
	    "\"type\":\"layers\",\"diff_ids\":[\"%s\"]}}",
	    spoil == SPOIL_DIFFID ? "sha256:00000000000000000000000000000000"
	    "00000000000000000000000000000000" : ldiff);
	sha(cfg, strlen(cfg), cdig);
	snprintf(cname, sizeof(cname), "%s.json", spoil == SPOIL_CONFIG_NAME ?
	    "1111111111111111111111111111111111111111111111111111111111111111" :
	    cdig + 7);
	snprintf(man, sizeof(man), "[{\"Config\":\"%s\",\"RepoTags\":["
	    "\"docker.test/app:1\",\"app:latest\"],\"Layers\":[\"%s\"]}]",
	    cname, spoil == SPOIL_ESCAPE ? "../../../etc/passwd" :
	    "abc/layer.tar");
	e[n++] = (struct tent){ "abc", NULL, 0, NULL };
	e[n++] = (struct tent){ "abc/layer.tar", layer, llen, NULL };
	if (spoil == SPOIL_NOT_TAR)
		e[n - 1].len = 700;	/* a tar cut short */
	e[n++] = (struct tent){ cname, cfg, strlen(cfg), NULL };
	if (spoil == SPOIL_HUGE) {
		huge = calloc(1, 5 << 20);
		memset(huge, ' ', (5 << 20) - 1);
		memcpy(huge, man, strlen(man));
		e[n++] = (struct tent){ "manifest.json", huge, 5 << 20, NULL };
	} else if (spoil == SPOIL_JSON)
		e[n++] = (struct tent){ "manifest.json", "[{\"Con", 6, NULL };
	else if (spoil == SPOIL_LINK_OUT)
		e[n++] = (struct tent){ "manifest.json", NULL, 0,
		    "../../../../etc/hostname" };
	else
		e[n++] = (struct tent){ "manifest.json", man, strlen(man),
		    NULL };
	rc = write_tar(path, e, n);
	free(layer);
	free(huge);
	unlink(lpath);
	return rc;
}

static int
t_load_docker(void)
{
	struct image_unpack_stats st;
	char	dir[256], tar[1024], got[72], got2[72], layer[72], path[2048];
	char	err[256];
	int	fd;

	fresh_dir(dir, sizeof(dir), "docker");
	snprintf(tar, sizeof(tar), "%s/save.tar", dir);
	TAP_CHECK(make_docker(tar, SPOIL_NONE) == 0);
	if (load(tar, NULL, err, sizeof(err)) != 0) {
		tap_diag("%s", err);
		return TAP_FAIL;
	}
	ref_digest("docker.test/app:1", got);
	ref_digest("app", got2);
	TAP_CHECK(got[0] != '\0' && strcmp(got, got2) == 0);
	/* Its layer unpacks. */
	TAP_CHECK(first_layer(got, layer) == 0);
	TAP_CHECK(image_store_blob_path(store, layer, path, sizeof(path)) ==
	    0);
	snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "/root");
	mkdir(dir, 0755);
	TAP_CHECK((fd = open(dir, O_RDONLY | O_DIRECTORY)) != -1);
	TAP_CHECK(image_layer_unpack(fd, path, 0, &st, err, sizeof(err)) ==
	    0);
	close(fd);
	snprintf(path, sizeof(path), "%s/srv/data.txt", dir);
	TAP_CHECK(access(path, R_OK) == 0);
	/* Loading again changes nothing. */
	TAP_CHECK(load(tar, NULL, err, sizeof(err)) == 0);
	ref_digest("docker.test/app:1", got2);
	TAP_CHECK(strcmp(got, got2) == 0);
	return TAP_PASS;
}

static int
t_hostile(void)
{
	static const struct {
		enum spoil	 spoil;
		const char	*why;
	} cases[] = {
		{ SPOIL_DIFFID, "uncompressed" },
		{ SPOIL_CONFIG_NAME, "does not match" },
		{ SPOIL_ESCAPE, "cannot open" },
		{ SPOIL_HUGE, "too large" },
		{ SPOIL_JSON, "not valid JSON" },
		{ SPOIL_LINK_OUT, "outside" },
		{ SPOIL_NOT_TAR, "" },
	};
	struct tent	 esc[] = { { "../evil", "x", 1, NULL } };
	char		 dir[256], tar[1024], got[72], err[256], p[2048];
	size_t		 i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		fresh_dir(dir, sizeof(dir), "hostile");
		snprintf(tar, sizeof(tar), "%s/save.tar", dir);
		TAP_CHECK(make_docker(tar, cases[i].spoil) == 0);
		err[0] = '\0';
		if (load(tar, "hostile:x", err, sizeof(err)) == 0) {
			tap_diag("case %zu loaded", i);
			return TAP_FAIL;
		}
		tap_diag("case %zu: %s", i, err);
		TAP_CHECK(strstr(err, cases[i].why) != NULL);
		TAP_CHECK(strchr(err, '\n') == NULL);
		ref_digest("hostile:x", got);
		TAP_CHECK(got[0] == '\0');
	}
	/* A member climbing out of the archive. */
	snprintf(tar, sizeof(tar), "%s/escape.tar", dir);
	TAP_CHECK(write_tar(tar, esc, 1) == 0);
	TAP_CHECK(load(tar, "hostile:x", err, sizeof(err)) == -EINVAL);
	tap_diag("escape: %s", err);
	/* An OCI layout whose layer was tampered with. */
	fresh_dir(dir, sizeof(dir), "tamper");
	snprintf(p, sizeof(p), "%s/f", dir);
	TAP_CHECK(put_file(p, "original\n", 0644) == 0);
	TAP_CHECK(import(dir, "example/tamper", got) == 0);
	snprintf(p, sizeof(p), "%s/layout", dir);
	TAP_CHECK(make_layout(p, got, "v1") == 0);
	snprintf(p, sizeof(p), "cd %s/layout/blobs/sha256 && for f in *; do "
	    "chmod u+w $f; done && f=$(ls -S | head -n 1) && printf x >> $f",
	    dir);
	TAP_CHECK(system(p) == 0);
	snprintf(p, sizeof(p), "%s/layout", dir);
	TAP_CHECK(load(p, "hostile", err, sizeof(err)) == -EBADMSG);
	tap_diag("tamper: %s", err);
	ref_digest("hostile:v1", got);
	TAP_CHECK(got[0] == '\0');
	/* Not an archive at all. */
	TAP_CHECK(load("/dev/null", "hostile", err, sizeof(err)) != 0);
	tap_diag("/dev/null: %s", err);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "import, unpack, trees equal", t_roundtrip },
	{ "import is deterministic", t_deterministic },
	{ "config: cmd, env, workdir, diff_ids", t_config },
	{ "load an OCI layout (dir and tar)", t_load_oci },
	{ "load a docker save archive", t_load_docker },
	{ "hostile archives refused, no ref set", t_hostile },
};

int
main(void)
{
	char	cmd[512], err[256], probe[300];
	int	rc;

	log_init("import_test", LOG_NORMAL);
	umask(0);
	if (geteuid() != 0) {
		printf("1..0 # SKIP needs root (owners and device nodes)\n");
		return 77;
	}
	if (mkdtemp(home) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(cmd, sizeof(cmd), "%s/store", home);
	if (image_store_open(cmd, &store, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	/* tmpfs before Linux 6.6 has trusted.* but no user.* xattrs. */
	snprintf(probe, sizeof(probe), "%s/probe", home);
	put_file(probe, "", 0644);
	if (lsetxattr(probe, "user.p", "1", 1, 0) == 0)
		xattr_ns = "user";
	else if (lsetxattr(probe, "trusted.p", "1", 1, 0) == 0)
		xattr_ns = "trusted";
	rc = tap_run(cases, ARRAY_SIZE(cases), 120);
	image_store_close(store);
	snprintf(cmd, sizeof(cmd), "chmod -R u+w %s; rm -rf %s", home, home);
	if (rc == 0 && system(cmd) != 0)
		return 1;
	return rc;
}
