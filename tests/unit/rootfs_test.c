/*
 * Unit test for image/rootfs.c on a fresh store: images are made here
 * (tar layers written with libarchive, config and manifest JSON) and
 * their trees built.  Covers a two-layer build with its hardlinks and
 * modes keeping one tree per image (no tree per prefix), a cached image
 * costing nothing, an image built on a copy of the longest cached prefix
 * (another image's tree, left untouched, no inode shared), four threads
 * (each with its own store) getting one image with a single unpack per
 * layer, and failures (a hostile layer, a missing blob, an index) leaving
 * nothing behind.
 */
#include <sys/stat.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"
#include "tests/tap.h"

static char			 home[] = "/tmp/rootfs_test.XXXXXX";
static struct image_store	*store;
static char			 base_layer[72], a_layer[72], b_layer[72];
static char			 c_layer[72];
static char			 img_a[72], img_b[72], img_base[72], img_bc[72];

struct tent {
	const char	*name;
	char		 type;		/* 'f' file, 'd' dir, 'h' hardlink */
	mode_t		 mode;
	const char	*data;		/* contents, or hardlink target */
};

/* A tar layer of the entries (uncompressed: its digest is its diff id),
 * put into the store; its digest goes into digest. */
static int
put_layer(const struct tent *t, size_t n, char digest[72])
{
	struct archive_entry	*e;
	struct archive		*a;
	size_t			 cap = 1 << 20, used = 0, i;
	char			*buf = malloc(cap), hex[SHA256_HEX_LEN + 1];
	int			 error = -EIO;

	a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	archive_write_add_filter_none(a);
	if (archive_write_open_memory(a, buf, cap, &used) != ARCHIVE_OK)
		goto out;
	for (i = 0; i < n; i++) {
		e = archive_entry_new();
		archive_entry_set_pathname(e, t[i].name);
		archive_entry_set_mtime(e, 1700000000, 0);
		if (t[i].type == 'h') {
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_hardlink(e, t[i].data);
		} else if (t[i].type == 'd') {
			archive_entry_set_filetype(e, AE_IFDIR);
			archive_entry_set_perm(e, t[i].mode);
		} else {
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_perm(e, t[i].mode);
			archive_entry_set_size(e, strlen(t[i].data));
		}
		if (archive_write_header(a, e) != ARCHIVE_OK) {
			archive_entry_free(e);
			goto out;
		}
		if (t[i].type == 'f')
			archive_write_data(a, t[i].data, strlen(t[i].data));
		archive_entry_free(e);
	}
	if (archive_write_close(a) != ARCHIVE_OK)
		goto out;
	sha256_buf(buf, used, hex);
	snprintf(digest, 72, "sha256:%s", hex);
	error = image_store_put_blob(store, digest, buf, used);
out:
	archive_write_free(a);
	free(buf);
	return error;
}

/* A JSON blob into the store. */
static int
put_json(const char *json, char digest[72])
{
	char	hex[SHA256_HEX_LEN + 1];

	sha256_buf(json, strlen(json), hex);
	snprintf(digest, 72, "sha256:%s", hex);
	return image_store_put_blob(store, digest, json, strlen(json));
}

/* Config and manifest for the layers (uncompressed: diff id = digest). */
static int
put_image(const char *const *layers, size_t n, char digest[72])
{
	char	cfg[4096], man[4096], cd[72];
	size_t	i, o, p;

	o = snprintf(cfg, sizeof(cfg), "{\"architecture\":\"amd64\","
	    "\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
	    "\"diff_ids\":[");
	for (i = 0; i < n; i++)
		o += snprintf(cfg + o, sizeof(cfg) - o, "%s\"%s\"",
		    i ? "," : "", layers[i]);
	snprintf(cfg + o, sizeof(cfg) - o, "]}}");
	if (put_json(cfg, cd) != 0)
		return -EIO;
	p = snprintf(man, sizeof(man), "{\"schemaVersion\":2,\"mediaType\":"
	    "\"application/vnd.oci.image.manifest.v1+json\",\"config\":{"
	    "\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
	    "\"digest\":\"%s\",\"size\":%zu},\"layers\":[", cd, strlen(cfg));
	for (i = 0; i < n; i++)
		p += snprintf(man + p, sizeof(man) - p, "%s{\"mediaType\":"
		    "\"application/vnd.oci.image.layer.v1.tar\",\"digest\":"
		    "\"%s\",\"size\":1}", i ? "," : "", layers[i]);
	snprintf(man + p, sizeof(man) - p, "]}");
	return put_json(man, digest);
}

static bool
file_is(const char *dir, const char *name, const char *want)
{
	char	 path[1024];
	uint8_t	*buf;
	size_t	 len;
	bool	 ok;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (read_file(path, 4096, &buf, &len) != 0)
		return false;
	ok = len == strlen(want) && memcmp(buf, want, len) == 0;
	free(buf);
	return ok;
}

static int
lstat_in(const char *dir, const char *name, struct stat *st)
{
	char	path[1024];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return lstat(path, st);
}

/* Entries of home/tmp ending in .rootfs (leftover build trees). */
static int
tmp_leftovers(void)
{
	struct dirent	*de;
	DIR		*d;
	size_t		 n;
	int		 count = 0;

	if ((d = opendir(image_store_tmpdir(store))) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if ((n = strlen(de->d_name)) > 7 &&
		    strcmp(de->d_name + n - 7, ".rootfs") == 0)
			count++;
	closedir(d);
	return count;
}

/* Trees under home/rootfs. */
static int
trees(void)
{
	struct dirent	*de;
	DIR		*d;
	char		 path[512];
	int		 count = 0;

	snprintf(path, sizeof(path), "%s/rootfs", home);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			count++;
	closedir(d);
	return count;
}

/* Is the tree of the first n layers of layers[] in the cache? */
static bool
cached(const char *const *layers, size_t n)
{
	struct stat	st;
	char		chain[72], path[512];

	if (image_chain_id(layers, n, chain) != 0)
		return false;
	snprintf(path, sizeof(path), "%s/rootfs/%s", home, chain + 7);
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int
test_build(void)
{
	struct image_rootfs_stats	st;
	struct stat			s1, s2;
	const char			*layers[2] = { base_layer, a_layer };
	char				path[512], err[256];
	int				error;

	error = image_rootfs_get(store, img_a, path, sizeof(path), &st, err,
	    sizeof(err));
	if (error != 0)
		tap_diag("%s", err);
	TAP_CHECK(error == 0);
	TAP_CHECK(st.layers == 2 && st.reused == 0 && st.unpacked == 2);
	TAP_CHECK(file_is(path, "etc/os", "base\n"));
	TAP_CHECK(file_is(path, "app/a", "a\n"));
	TAP_CHECK(file_is(path, "bin/tool", "tool\n"));
	TAP_CHECK(lstat_in(path, "bin/tool", &s1) == 0);
	TAP_CHECK(lstat_in(path, "bin/tool2", &s2) == 0);
	TAP_CHECK(s1.st_ino == s2.st_ino && s1.st_nlink == 2);
	TAP_CHECK((s1.st_mode & 07777) == 0751);
	TAP_CHECK(lstat_in(path, "ro", &s1) == 0);
	TAP_CHECK(S_ISDIR(s1.st_mode) && (s1.st_mode & 07777) == 0555);
	TAP_CHECK(s1.st_mtime == 1700000000);
	/* The image's tree only: none for its one-layer prefix. */
	TAP_CHECK(cached(layers, 2) && !cached(layers, 1));
	TAP_CHECK(trees() == 1);
	TAP_CHECK(tmp_leftovers() == 0);
	/* Cached: found, nothing unpacked, nothing added. */
	TAP_CHECK(image_rootfs_get(store, img_a, path, sizeof(path), &st, err,
	    sizeof(err)) == 0);
	TAP_CHECK(st.layers == 2 && st.reused == 2 && st.unpacked == 0);
	TAP_CHECK(trees() == 1);
	return TAP_PASS;
}

/*
 * Images sharing base layers: with no cached prefix an image is unpacked
 * whole; one that extends a cached image starts from a copy of the
 * longest such tree, which stays as it was.
 */
static int
test_shared_base(void)
{
	struct image_rootfs_stats	st;
	struct stat			sa, sb;
	const char			*layers[3] = { base_layer, b_layer,
					    c_layer };
	char				pa[512], pb[512], pbc[512], p0[512];
	char				err[256];

	/* base + b: base + a does not hold the base alone. */
	TAP_CHECK(image_rootfs_get(store, img_b, pb, sizeof(pb), &st, err,
	    sizeof(err)) == 0);
	TAP_CHECK(st.layers == 2 && st.reused == 0 && st.unpacked == 2);
	TAP_CHECK(file_is(pb, "app/b", "b\n"));
	TAP_CHECK(lstat_in(pb, "app/a", &sa) == -1 && errno == ENOENT);
	TAP_CHECK(file_is(pb, "etc/os", "base\n"));
	/* The base image on its own. */
	TAP_CHECK(image_rootfs_get(store, img_base, p0, sizeof(p0), &st, err,
	    sizeof(err)) == 0);
	TAP_CHECK(st.layers == 1 && st.reused == 0 && st.unpacked == 1);
	TAP_CHECK(trees() == 3);
	/* base + b + c: on a copy of base + b (the longest cached prefix,
	 * not the base), c removing b's file and adding its own. */
	TAP_CHECK(image_rootfs_get(store, img_bc, pbc, sizeof(pbc), &st, err,
	    sizeof(err)) == 0);
	TAP_CHECK(st.layers == 3 && st.reused == 2 && st.unpacked == 1);
	TAP_CHECK(cached(layers, 3) && trees() == 4);
	TAP_CHECK(file_is(pbc, "app/c", "c\n"));
	TAP_CHECK(lstat_in(pbc, "app/b", &sa) == -1 && errno == ENOENT);
	TAP_CHECK(lstat_in(pbc, "app/.wh.b", &sa) == -1 && errno == ENOENT);
	TAP_CHECK(file_is(pbc, "etc/os", "base\n"));
	/* What the copy must keep: hardlinks, modes, times. */
	TAP_CHECK(lstat_in(pbc, "bin/tool", &sa) == 0);
	TAP_CHECK(lstat_in(pbc, "bin/tool2", &sb) == 0);
	TAP_CHECK(sa.st_ino == sb.st_ino && sa.st_nlink == 2);
	TAP_CHECK((sa.st_mode & 07777) == 0751);
	TAP_CHECK(lstat_in(pbc, "ro", &sa) == 0);
	TAP_CHECK(S_ISDIR(sa.st_mode) && (sa.st_mode & 07777) == 0555);
	TAP_CHECK(sa.st_mtime == 1700000000);
	/* The source tree is untouched and shares no inode. */
	TAP_CHECK(file_is(pb, "app/b", "b\n"));
	TAP_CHECK(lstat_in(pb, "app/c", &sa) == -1 && errno == ENOENT);
	TAP_CHECK(lstat_in(pb, "etc/os", &sa) == 0);
	TAP_CHECK(lstat_in(pbc, "etc/os", &sb) == 0);
	TAP_CHECK(sa.st_ino != sb.st_ino);
	/* Trees of different images share no inode either. */
	TAP_CHECK(image_rootfs_get(store, img_a, pa, sizeof(pa), &st, err,
	    sizeof(err)) == 0);
	TAP_CHECK(strcmp(pa, pb) != 0);
	TAP_CHECK(lstat_in(pa, "etc/os", &sa) == 0);
	TAP_CHECK(lstat_in(pb, "etc/os", &sb) == 0);
	TAP_CHECK(sa.st_ino != sb.st_ino);
	TAP_CHECK(tmp_leftovers() == 0);
	return TAP_PASS;
}

struct racer {
	const char			*img;
	char				 path[512];
	struct image_rootfs_stats	 st;
	int				 error;
};

static void *
racer_main(void *arg)
{
	struct racer		*r = arg;
	struct image_store	*s;
	char			 err[256];

	if ((r->error = image_store_open(home, &s, err, sizeof(err))) != 0)
		return NULL;
	r->error = image_rootfs_get(s, r->img, r->path, sizeof(r->path),
	    &r->st, err, sizeof(err));
	if (r->error != 0)
		tap_diag("racer: %s", err);
	image_store_close(s);
	return NULL;
}

static int
test_concurrent(void)
{
	static const struct tent	base[] = {
		{ "big", 'f', 0644, "a bigger base layer\n" },
		{ "x/y", 'f', 0600, "y\n" },
	}, top[] = { { "x/z", 'f', 0644, "z\n" } };
	struct racer			r[4];
	pthread_t			t[4];
	const char			*layers[2];
	char				l0[72], l1[72], img[72];
	unsigned			unpacked = 0, i;

	TAP_CHECK(put_layer(base, 2, l0) == 0);
	TAP_CHECK(put_layer(top, 1, l1) == 0);
	layers[0] = l0;
	layers[1] = l1;
	TAP_CHECK(put_image(layers, 2, img) == 0);
	for (i = 0; i < 4; i++) {
		memset(&r[i], 0, sizeof(r[i]));
		r[i].img = img;
		TAP_CHECK(pthread_create(&t[i], NULL, racer_main, &r[i]) == 0);
	}
	for (i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	for (i = 0; i < 4; i++) {
		TAP_CHECK(r[i].error == 0);
		TAP_CHECK(strcmp(r[i].path, r[0].path) == 0);
		TAP_CHECK(r[i].st.reused + r[i].st.unpacked == 2);
		unpacked += r[i].st.unpacked;
	}
	TAP_CHECK(unpacked == 2);
	TAP_CHECK(file_is(r[0].path, "x/z", "z\n"));
	TAP_CHECK(file_is(r[0].path, "x/y", "y\n"));
	return TAP_PASS;
}

static int
test_failures(void)
{
	static const struct tent	evil[] = {
		{ "ok", 'f', 0644, "fine\n" },
		{ "../escape", 'f', 0644, "out\n" },
	};
	const char			*layers[2];
	char				 l1[72], img[72], chain[72], path[512];
	char				 err[256], missing[72];
	struct stat			 st;

	/* A hostile layer on a cached base: no tree, no leftover. */
	TAP_CHECK(put_layer(evil, 2, l1) == 0);
	layers[0] = base_layer;
	layers[1] = l1;
	TAP_CHECK(put_image(layers, 2, img) == 0);
	err[0] = '\0';
	TAP_CHECK(image_rootfs_get(store, img, path, sizeof(path), NULL, err,
	    sizeof(err)) == -EINVAL);
	tap_diag("hostile layer: %s", err);
	TAP_CHECK(err[0] != '\0');
	TAP_CHECK(image_chain_id(layers, 2, chain) == 0);
	snprintf(path, sizeof(path), "%s/rootfs/%s", home, chain + 7);
	TAP_CHECK(stat(path, &st) == -1 && errno == ENOENT);
	TAP_CHECK(tmp_leftovers() == 0);
	snprintf(path, sizeof(path), "%s/escape", home);
	TAP_CHECK(stat(path, &st) == -1);

	/* A layer blob missing from the store. */
	snprintf(missing, sizeof(missing), "sha256:%064d", 7);
	layers[1] = missing;
	TAP_CHECK(put_image(layers, 2, img) == 0);
	TAP_CHECK(image_rootfs_get(store, img, path, sizeof(path), NULL, err,
	    sizeof(err)) == -ENOENT);
	tap_diag("missing layer: %s", err);
	TAP_CHECK(image_chain_id(layers, 2, chain) == 0);
	snprintf(path, sizeof(path), "%s/rootfs/%s", home, chain + 7);
	TAP_CHECK(stat(path, &st) == -1 && errno == ENOENT);

	/* An index, a missing manifest, not a digest. */
	TAP_CHECK(put_json("{\"schemaVersion\":2,\"manifests\":[]}",
	    img) == 0);
	TAP_CHECK(image_rootfs_get(store, img, path, sizeof(path), NULL, err,
	    sizeof(err)) == -EINVAL);
	tap_diag("index: %s", err);
	TAP_CHECK(image_rootfs_get(store, missing, path, sizeof(path), NULL,
	    err, sizeof(err)) == -ENOENT);
	TAP_CHECK(image_rootfs_get(store, "alpine", path, sizeof(path), NULL,
	    err, sizeof(err)) == -EINVAL);
	return TAP_PASS;
}

/* A crash mid-build left tmp/<chain>.rootfs: the next build replaces it. */
static int
test_leftover(void)
{
	static const struct tent	t[] = { { "f", 'f', 0644, "f\n" } };
	const char			*layers[1];
	char				 l0[72], img[72], chain[72], p[512];
	char				 err[256];
	FILE				*f;

	TAP_CHECK(put_layer(t, 1, l0) == 0);
	layers[0] = l0;
	TAP_CHECK(put_image(layers, 1, img) == 0);
	TAP_CHECK(image_chain_id(layers, 1, chain) == 0);
	snprintf(p, sizeof(p), "%s/%s.rootfs", image_store_tmpdir(store),
	    chain + 7);
	TAP_CHECK(mkdir(p, 0755) == 0);
	strcat(p, "/junk");
	TAP_CHECK((f = fopen(p, "w")) != NULL);
	fclose(f);
	/* Read-only, as a layer can leave a directory. */
	*strrchr(p, '/') = '\0';
	TAP_CHECK(chmod(p, 0555) == 0);
	TAP_CHECK(image_rootfs_get(store, img, p, sizeof(p), NULL, err,
	    sizeof(err)) == 0);
	TAP_CHECK(file_is(p, "f", "f\n"));
	TAP_CHECK(!file_is(p, "junk", ""));
	TAP_CHECK(tmp_leftovers() == 0);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "two layers: one tree, files, hardlinks, modes, times", test_build },
	{ "an image built on the longest cached prefix", test_shared_base },
	{ "four concurrent gets unpack each layer once", test_concurrent },
	{ "failures leave no tree and no leftover", test_failures },
	{ "a crash leftover in tmp/ is replaced", test_leftover },
};

int
main(void)
{
	static const struct tent	base[] = {
		{ "etc", 'd', 0755, NULL },
		{ "etc/os", 'f', 0644, "base\n" },
		{ "bin/tool", 'f', 0751, "tool\n" },
		{ "bin/tool2", 'h', 0, "bin/tool" },
		{ "ro", 'd', 0555, NULL },
	}, a[] = { { "app/a", 'f', 0644, "a\n" } },
	    b[] = { { "app/b", 'f', 0644, "b\n" } },
	    c[] = { { "app/.wh.b", 'f', 0644, "" },
	    { "app/c", 'f', 0644, "c\n" } };
	const char			*layers[3];
	char				 err[256], cmd[128];
	int				 rc;

	log_init("rootfs_test", LOG_NORMAL);
	if (mkdtemp(home) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	if (image_store_open(home, &store, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (put_layer(base, 5, base_layer) != 0 ||
	    put_layer(a, 1, a_layer) != 0 || put_layer(b, 1, b_layer) != 0 ||
	    put_layer(c, 2, c_layer) != 0)
		return 1;
	layers[0] = base_layer;
	layers[1] = a_layer;
	if (put_image(layers, 2, img_a) != 0)
		return 1;
	layers[1] = b_layer;
	layers[2] = c_layer;
	if (put_image(layers, 2, img_b) != 0 ||
	    put_image(layers, 1, img_base) != 0 ||
	    put_image(layers, 3, img_bc) != 0)
		return 1;
	rc = tap_run(cases, ARRAY_SIZE(cases), 60);
	image_store_close(store);
	/* Trees hold read-only directories. */
	snprintf(cmd, sizeof(cmd), "chmod -R u+w %s; rm -rf %s", home, home);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", home);
	return rc;
}
