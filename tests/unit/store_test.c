/*
 * Unit test for image/store.c on a fresh store in a temp directory:
 * blob round trips (memory, file, file from another filesystem), digest
 * mismatches leaving nothing, corruption on disk, 8 processes putting one
 * blob, refs with odd names, gc against built manifests, indexes and
 * configs, leftovers of a crash, per-blob locks and chain ids.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"
#include "tests/tap.h"

static char	home[] = "/tmp/store_test.XXXXXX";
static int	seq;

/* A fresh store in its own subdirectory of home. */
static struct image_store *
fresh(char *dir, size_t len)
{
	struct image_store	*s;
	char			 err[256];

	snprintf(dir, len, "%s/s%d", home, seq++);
	if (image_store_open(dir, &s, err, sizeof(err)) != 0) {
		tap_diag("%s", err);
		return NULL;
	}
	return s;
}

static void
digest_of(const void *p, size_t len, char out[72])
{
	char	hex[65];

	sha256_buf(p, len, hex);
	snprintf(out, 72, "sha256:%s", hex);
}

/* Entries in a directory, "." and ".." aside; -1 when unreadable. */
static int
count_dir(const char *dir, const char *sub)
{
	char		 path[512];
	struct dirent	*de;
	DIR		*d;
	int		 n = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static int
write_path(const char *path, const void *p, size_t len)
{
	int	fd, ok;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644)) == -1)
		return -1;
	ok = write(fd, p, len) == (ssize_t)len;
	close(fd);
	return ok ? 0 : -1;
}

static int
t_roundtrip(void)
{
	struct image_store	*s;
	char			 dir[256], d[72], d2[72], path[512], src[512];
	uint8_t			*buf = NULL;
	size_t			 len;
	struct stat		 st;
	static const char	 msg[] = "hello, store";
	int			 rc = TAP_FAIL;

	if ((s = fresh(dir, sizeof(dir))) == NULL)
		return TAP_FAIL;
	digest_of(msg, sizeof(msg), d);
	TAP_CHECK_GOTO(!image_store_has_blob(s, d), out);
	TAP_CHECK_GOTO(image_store_put_blob(s, d, msg, sizeof(msg)) == 0, out);
	TAP_CHECK_GOTO(image_store_has_blob(s, d), out);
	/* Again: a no-op. */
	TAP_CHECK_GOTO(image_store_put_blob(s, d, msg, sizeof(msg)) == 0, out);
	TAP_CHECK_GOTO(image_store_get_blob(s, d, 1024, &buf, &len) == 0, out);
	TAP_CHECK_GOTO(len == sizeof(msg) && memcmp(buf, msg, len) == 0, out);
	free(buf);
	buf = NULL;
	TAP_CHECK_GOTO(image_store_get_blob(s, d, 4, &buf, &len) == -EFBIG,
	    out);
	TAP_CHECK_GOTO(image_store_blob_path(s, d, path, sizeof(path)) == 0,
	    out);
	TAP_CHECK_GOTO(stat(path, &st) == 0 && (st.st_mode & 0222) == 0, out);
	TAP_CHECK_GOTO(image_store_blob_path(s, "sha256:x", path,
	    sizeof(path)) == -EINVAL, out);

	/* From a file on the same filesystem: renamed in. */
	snprintf(src, sizeof(src), "%s/in", dir);
	TAP_CHECK_GOTO(write_path(src, "file blob", 9) == 0, out);
	digest_of("file blob", 9, d2);
	TAP_CHECK_GOTO(image_store_put_blob_file(s, d2, src) == 0, out);
	TAP_CHECK_GOTO(access(src, F_OK) == -1, out);
	TAP_CHECK_GOTO(image_store_get_blob(s, d2, 1024, &buf, &len) == 0,
	    out);
	TAP_CHECK_GOTO(len == 9 && memcmp(buf, "file blob", 9) == 0, out);
	TAP_CHECK_GOTO(count_dir(dir, "blobs/sha256") == 2, out);
	TAP_CHECK_GOTO(count_dir(dir, "tmp") == 0, out);
	rc = TAP_PASS;
out:
	free(buf);
	image_store_close(s);
	return rc;
}

/* A file on another filesystem (/dev/shm) is copied while hashed. */
static int
t_other_fs(void)
{
	struct image_store	*s;
	struct stat		 a, b;
	char			 dir[256], d[72];
	char			 src[] = "/dev/shm/store_test.XXXXXX";
	uint8_t			*big, *buf = NULL;
	size_t			 len, i, n = 3 << 20;
	int			 fd, rc = TAP_FAIL;

	if ((s = fresh(dir, sizeof(dir))) == NULL)
		return TAP_FAIL;
	if (stat("/dev/shm", &a) == -1 || stat(dir, &b) == -1 ||
	    a.st_dev == b.st_dev) {
		tap_diag("/dev/shm is missing or on the store's filesystem");
		image_store_close(s);
		return TAP_SKIP;
	}
	big = xmalloc(n);
	for (i = 0; i < n; i++)
		big[i] = i * 7 + (i >> 12);
	digest_of(big, n, d);
	TAP_CHECK_GOTO((fd = mkstemp(src)) != -1, out);
	TAP_CHECK_GOTO(write(fd, big, n) == (ssize_t)n, out_close);
	/* Wrong digest first: refused, source kept, nothing stored. */
	big[0] ^= 1;
	{
		char	wrong[72];

		digest_of(big, n, wrong);
		TAP_CHECK_GOTO(image_store_put_blob_file(s, wrong, src) ==
		    -EBADMSG, out_close);
	}
	TAP_CHECK_GOTO(access(src, F_OK) == 0, out_close);
	TAP_CHECK_GOTO(count_dir(dir, "blobs/sha256") == 0, out_close);
	TAP_CHECK_GOTO(count_dir(dir, "tmp") == 0, out_close);
	TAP_CHECK_GOTO(image_store_put_blob_file(s, d, src) == 0, out_close);
	TAP_CHECK_GOTO(access(src, F_OK) == -1, out_close);
	big[0] ^= 1;
	TAP_CHECK_GOTO(image_store_get_blob(s, d, n, &buf, &len) == 0,
	    out_close);
	TAP_CHECK_GOTO(len == n && memcmp(buf, big, n) == 0, out_close);
	TAP_CHECK_GOTO(count_dir(dir, "tmp") == 0, out_close);
	rc = TAP_PASS;
out_close:
	close(fd);
	unlink(src);
out:
	free(buf);
	free(big);
	image_store_close(s);
	return rc;
}

static int
t_mismatch(void)
{
	struct image_store	*s;
	char			 dir[256], d[72], src[512];
	int			 rc = TAP_FAIL;

	if ((s = fresh(dir, sizeof(dir))) == NULL)
		return TAP_FAIL;
	digest_of("right", 5, d);
	TAP_CHECK_GOTO(image_store_put_blob(s, d, "wrong", 5) == -EBADMSG,
	    out);
	TAP_CHECK_GOTO(!image_store_has_blob(s, d), out);
	snprintf(src, sizeof(src), "%s/in", dir);
	TAP_CHECK_GOTO(write_path(src, "wrong", 5) == 0, out);
	TAP_CHECK_GOTO(image_store_put_blob_file(s, d, src) == -EBADMSG, out);
	TAP_CHECK_GOTO(image_store_put_blob(s, "sha256:abc", "x", 1) ==
	    -EINVAL, out);
	TAP_CHECK_GOTO(count_dir(dir, "blobs/sha256") == 0, out);
	TAP_CHECK_GOTO(count_dir(dir, "tmp") == 0, out);
	rc = TAP_PASS;
out:
	image_store_close(s);
	return rc;
}

static int
t_corrupt(void)
{
	struct image_store	*s;
	char			 dir[256], d[72], path[512];
	uint8_t			*buf = NULL;
	size_t			 len;
	int			 rc = TAP_FAIL;

	if ((s = fresh(dir, sizeof(dir))) == NULL)
		return TAP_FAIL;
	digest_of("precious", 8, d);
	TAP_CHECK_GOTO(image_store_put_blob(s, d, "precious", 8) == 0, out);
	TAP_CHECK_GOTO(image_store_blob_path(s, d, path, sizeof(path)) == 0,
	    out);
	TAP_CHECK_GOTO(chmod(path, 0644) == 0, out);
	TAP_CHECK_GOTO(write_path(path, "prEcious", 8) == 0, out);
	TAP_CHECK_GOTO(image_store_get_blob(s, d, 64, &buf, &len) == -EBADMSG,
	    out);
	TAP_CHECK_GOTO(!image_store_has_blob(s, d), out);
	/* And it can be stored again. */
	TAP_CHECK_GOTO(image_store_put_blob(s, d, "precious", 8) == 0, out);
	TAP_CHECK_GOTO(image_store_get_blob(s, d, 64, &buf, &len) == 0, out);
	rc = TAP_PASS;
out:
	free(buf);
	image_store_close(s);
	return rc;
}

/* Eight processes put the same 2 MiB blob at once, half from memory,
 * half from files; each uses its own open of the store. */
static int
t_concurrent_put(void)
{
	struct image_store	*s;
	char			 dir[256], d[72], src[512];
	uint8_t			*big, *buf = NULL;
	size_t			 i, n = 2 << 20, len;
	pid_t			 pids[8];
	int			 status, k, bad = 0, rc = TAP_FAIL;

	if ((s = fresh(dir, sizeof(dir))) == NULL)
		return TAP_FAIL;
	big = xmalloc(n);
	for (i = 0; i < n; i++)
		big[i] = (i * 2654435761u) >> 13;
	digest_of(big, n, d);
	for (k = 0; k < 8; k++) {
		if ((pids[k] = fork()) == 0) {
			struct image_store	*c;
			char			 err[256];

			if (image_store_open(dir, &c, err, sizeof(err)) != 0)
				_exit(2);
			if (k % 2 == 0)
				_exit(image_store_put_blob(c, d, big, n) != 0);
			snprintf(src, sizeof(src), "%s/in%d", dir, k);
			if (write_path(src, big, n) != 0)
				_exit(3);
			_exit(image_store_put_blob_file(c, d, src) != 0);
		}
	}
	for (k = 0; k < 8; k++)
		if (waitpid(pids[k], &status, 0) == -1 || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0)
			bad++;
	TAP_CHECK_GOTO(bad == 0, out);
	TAP_CHECK_GOTO(count_dir(dir, "blobs/sha256") == 1, out);
	TAP_CHECK_GOTO(count_dir(dir, "tmp") == 0, out);
	/* The source files were all consumed. */
	TAP_CHECK_GOTO(count_dir(dir, "") == 6, out);
	TAP_CHECK_GOTO(image_store_get_blob(s, d, n, &buf, &len) == 0, out);
	TAP_CHECK_GOTO(len == n && memcmp(buf, big, n) == 0, out);
	rc = TAP_PASS;
out:
	free(buf);
	free(big);
	image_store_close(s);
	return rc;
}

struct seen {
	char	refs[16][IMAGE_REF_MAX + 1];
	char	digests[16][72];
	int	n;
};

static int
list_cb(const char *ref, const char *digest, void *arg)
{
	struct seen	*w = arg;

	if (w->n < 16) {
		snprintf(w->refs[w->n], sizeof(w->refs[0]), "%s", ref);
		snprintf(w->digests[w->n], sizeof(w->digests[0]), "%s", digest);
	}
	w->n++;
	return 0;
}

/* Index of ref in w, or -1. */
static int
seen_find(const struct seen *w, const char *ref)
{
	int	i;

	for (i = 0; i < w->n && i < 16; i++)
		if (strcmp(w->refs[i], ref) == 0)
			return i;
	return -1;
}

static int
stop_cb(const char *ref, const char *digest, void *arg)
{
	(*(int *)arg)++;
	return 7;
}

static int
t_refs(void)
{
	struct image_store	*s;
	struct image_ref	 r[6];
	struct seen		 w;
	char			 dir[256], d1[72], d2[72], got[80], path[512];
	static const char	*names[] = {
		"alpine",
		"localhost:5000/a/b:c",
		"localhost:5000/a/b/c:latest",
		"registry.example.com:443/x/y/z:Tag_1.0-rc",
		"[::1]:5000/v6:t",
		"x@sha256:0123456789abcdef0123456789abcdef"
		    "0123456789abcdef0123456789abcdef",
	};
	static const char	*full[] = {
		"docker.io/library/alpine:latest",
		"localhost:5000/a/b:c",
		"localhost:5000/a/b/c:latest",
		"registry.example.com:443/x/y/z:Tag_1.0-rc",
		"[::1]:5000/v6:t",
		"docker.io/library/x@sha256:0123456789abcdef0123456789abcdef"
		    "0123456789abcdef0123456789abcdef",
	};
	int			 i, n, rc = TAP_FAIL;

	if ((s = fresh(dir, sizeof(dir))) == NULL)
		return TAP_FAIL;
	digest_of("m1", 2, d1);
	digest_of("m2", 2, d2);
	for (i = 0; i < 6; i++)
		TAP_CHECK_GOTO(image_ref_parse(names[i], &r[i], NULL, 0) == 0,
		    out);
	TAP_CHECK_GOTO(image_store_get_ref(s, &r[0], got, sizeof(got)) ==
	    -ENOENT, out);
	for (i = 0; i < 6; i++)
		TAP_CHECK_GOTO(image_store_set_ref(s, &r[i], i % 2 ? d2 : d1)
		    == 0, out);
	TAP_CHECK_GOTO(image_store_set_ref(s, &r[0], "sha256:nope") ==
	    -EINVAL, out);
	for (i = 0; i < 6; i++) {
		TAP_CHECK_GOTO(image_store_get_ref(s, &r[i], got,
		    sizeof(got)) == 0, out);
		TAP_CHECK_GOTO(strcmp(got, i % 2 ? d2 : d1) == 0, out);
	}
	/* Overwrite. */
	TAP_CHECK_GOTO(image_store_set_ref(s, &r[1], d1) == 0, out);
	TAP_CHECK_GOTO(image_store_get_ref(s, &r[1], got, sizeof(got)) == 0 &&
	    strcmp(got, d1) == 0, out);

	/* The tree: escaped domain, nested path, tags apart from dirs. */
	snprintf(path, sizeof(path), "%s/refs/localhost%%3A5000/a/b/%%3Ac",
	    dir);
	TAP_CHECK_GOTO(access(path, F_OK) == 0, out);
	snprintf(path, sizeof(path), "%s/refs/localhost%%3A5000/a/b/c/"
	    "%%3Alatest", dir);
	TAP_CHECK_GOTO(access(path, F_OK) == 0, out);
	snprintf(path, sizeof(path), "%s/refs/%%5B%%3A%%3A1%%5D%%3A5000/v6/"
	    "%%3At", dir);
	TAP_CHECK_GOTO(access(path, F_OK) == 0, out);

	memset(&w, 0, sizeof(w));
	TAP_CHECK_GOTO(image_store_list_refs(s, list_cb, &w) == 0, out);
	TAP_CHECK_GOTO(w.n == 6, out);
	for (i = 0; i < 6; i++) {
		n = seen_find(&w, full[i]);
		if (n < 0)
			tap_diag("not listed: %s", full[i]);
		TAP_CHECK_GOTO(n >= 0, out);
		TAP_CHECK_GOTO(strcmp(w.digests[n], i % 2 && i != 1 ? d2 : d1)
		    == 0, out);
	}
	n = 0;
	TAP_CHECK_GOTO(image_store_list_refs(s, stop_cb, &n) == 7 && n == 1,
	    out);

	/* Deleting prunes the now empty directories, keeps the rest. */
	TAP_CHECK_GOTO(image_store_del_ref(s, &r[2]) == 0, out);
	TAP_CHECK_GOTO(image_store_del_ref(s, &r[2]) == -ENOENT, out);
	snprintf(path, sizeof(path), "%s/refs/localhost%%3A5000/a/b/c", dir);
	TAP_CHECK_GOTO(access(path, F_OK) == -1, out);
	TAP_CHECK_GOTO(image_store_get_ref(s, &r[1], got, sizeof(got)) == 0,
	    out);
	TAP_CHECK_GOTO(image_store_del_ref(s, &r[1]) == 0, out);
	snprintf(path, sizeof(path), "%s/refs/localhost%%3A5000", dir);
	TAP_CHECK_GOTO(access(path, F_OK) == -1, out);
	memset(&w, 0, sizeof(w));
	TAP_CHECK_GOTO(image_store_list_refs(s, list_cb, &w) == 0 && w.n == 4,
	    out);
	TAP_CHECK_GOTO(count_dir(dir, "tmp") == 0, out);
	rc = TAP_PASS;
out:
	image_store_close(s);
	return rc;
}

/* Store a JSON document (or any string) as a blob; its digest in d. */
static int
put_str(struct image_store *s, const char *str, char d[72])
{
	digest_of(str, strlen(str), d);
	return image_store_put_blob(s, d, str, strlen(str));
}

/* An image: layers (blobs with the given contents), a config listing
 * their diff ids (the layers are "uncompressed", so digest = diff id),
 * a manifest.  Its digest in m, config's in c. */
static int
put_image(struct image_store *s, const char *const *layers, int n,
    char m[72], char c[72], char layer_d[][72])
{
	char	json[4096];
	size_t	o;
	int	i;

	for (i = 0; i < n; i++)
		if (put_str(s, layers[i], layer_d[i]) != 0)
			return -1;
	o = snprintf(json, sizeof(json), "{\"architecture\":\"amd64\","
	    "\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
	    "\"diff_ids\":[");
	for (i = 0; i < n; i++)
		o += snprintf(json + o, sizeof(json) - o, "%s\"%s\"",
		    i ? "," : "", layer_d[i]);
	snprintf(json + o, sizeof(json) - o, "]}}");
	if (put_str(s, json, c) != 0)
		return -1;
	o = snprintf(json, sizeof(json), "{\"schemaVersion\":2,\"mediaType\":"
	    "\"application/vnd.oci.image.manifest.v1+json\",\"config\":"
	    "{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
	    "\"digest\":\"%s\",\"size\":1},\"layers\":[", c);
	for (i = 0; i < n; i++)
		o += snprintf(json + o, sizeof(json) - o, "%s{\"mediaType\":"
		    "\"application/vnd.oci.image.layer.v1.tar\",\"digest\":"
		    "\"%s\",\"size\":1}", i ? "," : "", layer_d[i]);
	snprintf(json + o, sizeof(json) - o, "]}");
	return put_str(s, json, m);
}

static uint64_t
blob_size(struct image_store *s, const char *d)
{
	char		path[512];
	struct stat	st;

	if (image_store_blob_path(s, d, path, sizeof(path)) != 0 ||
	    stat(path, &st) == -1)
		return 1ULL << 40;
	return st.st_size;
}

/* rootfs/<chain id hex>/ with a file in a read-only subdirectory. */
static int
make_rootfs(const char *dir, const char *chain)
{
	char	path[512];

	snprintf(path, sizeof(path), "%s/rootfs/%s", dir, chain + 7);
	if (mkdir(path, 0755) == -1)
		return -1;
	snprintf(path, sizeof(path), "%s/rootfs/%s/etc", dir, chain + 7);
	if (mkdir(path, 0755) == -1)
		return -1;
	snprintf(path, sizeof(path), "%s/rootfs/%s/etc/hostname", dir,
	    chain + 7);
	if (write_path(path, "0123456789", 10) == -1)
		return -1;
	snprintf(path, sizeof(path), "%s/rootfs/%s/etc", dir, chain + 7);
	return chmod(path, 0555);
}

static int
t_gc(void)
{
	struct image_store	*s;
	struct image_ref	 ra, rb;
	static const char	*la[] = { "layer one", "layer two" };
	static const char	*lb[] = { "layer two", "layer three" };
	static const char	*lc[] = { "orphan layer" };
	char			 dir[256], ma[72], mb[72], mc[72], ca[72];
	char			 cb[72], cc[72], da[2][72], db[2][72], dc[1][72];
	char			 idx[72], stray[72], json[1024], chain[72];
	char			 prefix[72];
	char			 path[512];
	const char		*ids[2];
	uint64_t		 bytes, want;
	unsigned		 blobs;
	int			 hold, rc = TAP_FAIL;

	if ((s = fresh(dir, sizeof(dir))) == NULL)
		return TAP_FAIL;
	TAP_CHECK_GOTO(put_image(s, la, 2, ma, ca, da) == 0, out);
	TAP_CHECK_GOTO(put_image(s, lb, 2, mb, cb, db) == 0, out);
	TAP_CHECK_GOTO(put_image(s, lc, 1, mc, cc, dc) == 0, out);
	snprintf(json, sizeof(json), "{\"schemaVersion\":2,\"mediaType\":"
	    "\"application/vnd.oci.image.index.v1+json\",\"manifests\":["
	    "{\"digest\":\"%s\",\"size\":1,\"platform\":{\"os\":\"linux\"}},"
	    "{\"digest\":\"%s\",\"size\":1}]}", ma, mb);
	TAP_CHECK_GOTO(put_str(s, json, idx) == 0, out);
	TAP_CHECK_GOTO(put_str(s, "stray bytes!", stray) == 0, out);
	/* 5 layers, 4 distinct ("layer two" twice), 3 configs, 3
	 * manifests, the index, the stray. */
	TAP_CHECK_GOTO(count_dir(dir, "blobs/sha256") == 12, out);
	want = blob_size(s, mc) + blob_size(s, cc) + blob_size(s, dc[0]) +
	    blob_size(s, stray) + 2 * 10;	/* + two rootfs files */

	/* Rootfs trees: image a's and a stale tree of its first layer
	 * alone (the cache keeps no prefixes), the full b, orphan c. */
	ids[0] = da[0];
	ids[1] = da[1];
	TAP_CHECK_GOTO(image_chain_id(ids, 1, prefix) == 0 &&
	    make_rootfs(dir, prefix) == 0, out);
	TAP_CHECK_GOTO(image_chain_id(ids, 2, chain) == 0 &&
	    make_rootfs(dir, chain) == 0, out);
	ids[0] = db[0];
	ids[1] = db[1];
	TAP_CHECK_GOTO(image_chain_id(ids, 2, chain) == 0 &&
	    make_rootfs(dir, chain) == 0, out);
	ids[0] = dc[0];
	TAP_CHECK_GOTO(image_chain_id(ids, 1, chain) == 0 &&
	    make_rootfs(dir, chain) == 0, out);
	/* A name gc does not own stays. */
	snprintf(path, sizeof(path), "%s/rootfs/unpacking.partial", dir);
	TAP_CHECK_GOTO(mkdir(path, 0755) == 0, out);

	TAP_CHECK_GOTO(image_ref_parse("a", &ra, NULL, 0) == 0, out);
	TAP_CHECK_GOTO(image_ref_parse("localhost:5000/b/c:1", &rb, NULL, 0)
	    == 0, out);
	TAP_CHECK_GOTO(image_store_set_ref(s, &ra, idx) == 0, out);

	/* A pull in progress keeps gc away. */
	TAP_CHECK_GOTO(image_store_hold(s, &hold) == 0, out);
	TAP_CHECK_GOTO(image_store_gc(s, &bytes, &blobs) == -EBUSY, out);
	image_store_release(hold);

	TAP_CHECK_GOTO(image_store_gc(s, &bytes, &blobs) == 0, out);
	/* Gone: mc, cc, dc[0], stray; the orphan and the prefix rootfs. */
	TAP_CHECK_GOTO(blobs == 4, out);
	TAP_CHECK_GOTO(bytes == want, out);
	TAP_CHECK_GOTO(!image_store_has_blob(s, mc) &&
	    !image_store_has_blob(s, cc) && !image_store_has_blob(s, dc[0]) &&
	    !image_store_has_blob(s, stray), out);
	TAP_CHECK_GOTO(image_store_has_blob(s, idx) &&
	    image_store_has_blob(s, ma) && image_store_has_blob(s, mb) &&
	    image_store_has_blob(s, ca) && image_store_has_blob(s, cb) &&
	    image_store_has_blob(s, da[0]) && image_store_has_blob(s, da[1]) &&
	    image_store_has_blob(s, db[1]), out);
	TAP_CHECK_GOTO(count_dir(dir, "blobs/sha256") == 8, out);
	TAP_CHECK_GOTO(count_dir(dir, "rootfs") == 3, out);
	snprintf(path, sizeof(path), "%s/rootfs/%s", dir, chain + 7);
	TAP_CHECK_GOTO(access(path, F_OK) == -1, out);
	snprintf(path, sizeof(path), "%s/rootfs/%s", dir, prefix + 7);
	TAP_CHECK_GOTO(access(path, F_OK) == -1, out);

	/* Nothing more to do. */
	TAP_CHECK_GOTO(image_store_gc(s, &bytes, &blobs) == 0 && blobs == 0 &&
	    bytes == 0, out);

	/* Ref b to manifest b alone, drop a: a's own things go. */
	TAP_CHECK_GOTO(image_store_set_ref(s, &rb, mb) == 0, out);
	TAP_CHECK_GOTO(image_store_del_ref(s, &ra) == 0, out);
	TAP_CHECK_GOTO(image_store_gc(s, &bytes, &blobs) == 0, out);
	/* idx, ma, ca, da[0] ("layer one"). */
	TAP_CHECK_GOTO(blobs == 4, out);
	TAP_CHECK_GOTO(count_dir(dir, "blobs/sha256") == 4, out);
	TAP_CHECK_GOTO(count_dir(dir, "rootfs") == 2, out);

	TAP_CHECK_GOTO(image_store_del_ref(s, &rb) == 0, out);
	TAP_CHECK_GOTO(image_store_gc(s, &bytes, &blobs) == 0 && blobs == 4,
	    out);
	TAP_CHECK_GOTO(count_dir(dir, "blobs/sha256") == 0, out);
	TAP_CHECK_GOTO(count_dir(dir, "rootfs") == 1, out);
	rc = TAP_PASS;
out:
	image_store_close(s);
	return rc;
}

/* Leftovers of a crash go at open; held temp files, locks and other
 * names stay. */
static int
t_crash_leftovers(void)
{
	struct image_store	*s;
	char			 dir[256], path[512], err[256];
	int			 held, rc = TAP_FAIL;

	if ((s = fresh(dir, sizeof(dir))) == NULL)
		return TAP_FAIL;
	image_store_close(s);
	snprintf(path, sizeof(path), "%s/tmp/Ab12Cd.tmp", dir);
	TAP_CHECK(write_path(path, "half a blob", 11) == 0);
	snprintf(path, sizeof(path), "%s/tmp/%064d.lock", dir, 0);
	TAP_CHECK(write_path(path, "", 0) == 0);
	snprintf(path, sizeof(path), "%s/tmp/%064d.partial", dir, 1);
	TAP_CHECK(write_path(path, "resume me", 9) == 0);
	/* Someone else's live temp file: flocked. */
	snprintf(path, sizeof(path), "%s/tmp/Live00.tmp", dir);
	TAP_CHECK((held = open(path, O_RDWR | O_CREAT, 0600)) != -1);
	TAP_CHECK(flock(held, LOCK_EX) == 0);

	TAP_CHECK_GOTO(image_store_open(dir, &s, err, sizeof(err)) == 0, out);
	image_store_close(s);
	TAP_CHECK_GOTO(count_dir(dir, "tmp") == 2, out);
	TAP_CHECK_GOTO(access(path, F_OK) == 0, out);
	snprintf(path, sizeof(path), "%s/tmp/%064d.partial", dir, 1);
	TAP_CHECK_GOTO(access(path, F_OK) == 0, out);
	rc = TAP_PASS;
out:
	close(held);
	return rc;
}

/* Two processes want one blob: the second waits for the first, then
 * finds the blob there. */
static int
t_blob_lock(void)
{
	struct image_store	*s;
	char			 dir[256], d[72];
	int			 fd, p[2], status;
	pid_t			 pid;
	char			 c;
	int			 rc = TAP_FAIL;

	if ((s = fresh(dir, sizeof(dir))) == NULL)
		return TAP_FAIL;
	digest_of("shared layer", 12, d);
	TAP_CHECK_GOTO(pipe(p) == 0, out);
	TAP_CHECK_GOTO(image_store_lock_blob(s, d, &fd) == 0, out);
	if ((pid = fork()) == 0) {
		struct image_store	*c2;
		char			 err[256];
		int			 fd2;

		/* The inherited fd shares the parent's lock. */
		close(fd);
		close(p[0]);
		if (image_store_open(dir, &c2, err, sizeof(err)) != 0)
			_exit(2);
		if (write(p[1], "r", 1) != 1)
			_exit(5);
		if (image_store_lock_blob(c2, d, &fd2) != 0)
			_exit(3);
		/* The first holder fetched it meanwhile. */
		if (!image_store_has_blob(c2, d))
			_exit(4);
		image_store_unlock_blob(c2, d, fd2);
		_exit(0);
	}
	close(p[1]);
	TAP_CHECK_GOTO(read(p[0], &c, 1) == 1, out_wait);
	usleep(100000);
	TAP_CHECK_GOTO(waitpid(pid, &status, WNOHANG) == 0, out_wait);
	TAP_CHECK_GOTO(image_store_put_blob(s, d, "shared layer", 12) == 0,
	    out_wait);
	image_store_unlock_blob(s, d, fd);
	fd = -1;
	TAP_CHECK_GOTO(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	    WEXITSTATUS(status) == 0, out);
	TAP_CHECK_GOTO(count_dir(dir, "tmp") == 0, out);
	rc = TAP_PASS;
	goto out;
out_wait:
	if (fd != -1)
		image_store_unlock_blob(s, d, fd);
	waitpid(pid, &status, 0);
out:
	close(p[0]);
	image_store_close(s);
	return rc;
}

static int
t_chain_id(void)
{
	char		 a[72], b[72], c[72], want[72], buf[256], hex[65];
	char		 out[72];
	const char	*ids[3];

	digest_of("a", 1, a);
	digest_of("b", 1, b);
	digest_of("c", 1, c);
	ids[0] = a;
	ids[1] = b;
	ids[2] = c;
	TAP_CHECK(image_chain_id(ids, 0, out) == -EINVAL);
	TAP_CHECK(image_chain_id(ids, 1, out) == 0 && strcmp(out, a) == 0);
	snprintf(buf, sizeof(buf), "%s %s", a, b);
	sha256_buf(buf, strlen(buf), hex);
	snprintf(want, sizeof(want), "sha256:%s", hex);
	TAP_CHECK(image_chain_id(ids, 2, out) == 0 && strcmp(out, want) == 0);
	snprintf(buf, sizeof(buf), "%s %s", want, c);
	sha256_buf(buf, strlen(buf), hex);
	snprintf(want, sizeof(want), "sha256:%s", hex);
	TAP_CHECK(image_chain_id(ids, 3, out) == 0 && strcmp(out, want) == 0);
	ids[1] = "sha256:short";
	TAP_CHECK(image_chain_id(ids, 2, out) == -EINVAL);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "put/get round trip, from memory and file", t_roundtrip },
	{ "file from another filesystem is copied", t_other_fs },
	{ "digest mismatch leaves nothing", t_mismatch },
	{ "corrupt blob on disk detected and removed", t_corrupt },
	{ "8 processes put one blob", t_concurrent_put },
	{ "refs: set/get/list/del, odd names", t_refs },
	{ "gc removes exactly the unreachable", t_gc },
	{ "crash leftovers cleaned at open", t_crash_leftovers },
	{ "per-blob lock shares a download", t_blob_lock },
	{ "chain ids", t_chain_id },
};

int
main(void)
{
	char	cmd[512];
	int	rc;

	log_init("store_test", LOG_NORMAL);
	if (mkdtemp(home) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	rc = tap_run(cases, ARRAY_SIZE(cases), 60);
	snprintf(cmd, sizeof(cmd), "chmod -R u+w %s; rm -rf %s", home, home);
	if (rc == 0 && system(cmd) != 0)
		return 1;
	return rc;
}
