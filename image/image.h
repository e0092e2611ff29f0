/*
 * image: OCI images.  References (docker-compatible normalization), the
 * content-addressed store under $SMX_HOME, safe layer unpacking with
 * libarchive, and (later) the registry client and importers.  Knows
 * nothing of VMs.
 *
 * Errors: 0 / -errno; functions that can fail on user or network input
 * also write a one-line reason naming the input into an err buffer.
 */
#ifndef SMX_IMAGE_H
#define SMX_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/base.h"

/*
 * References (image/ref.c).
 *
 * "alpine" -> docker.io/library/alpine:latest; "user/app:1" ->
 * docker.io/user/app:1; "localhost:5000/x@sha256:<64 hex>"; registry
 * hosts are recognised as in docker (a first component with a '.' or a
 * ':' or equal to "localhost").  Repository components are lowercase
 * [a-z0-9] separated by '.', '_', '__' or '-'+, tags
 * [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}, digests algo:hex (sha256: 64 hex).
 */
#define IMAGE_REF_MAX	512

struct image_ref {
	char	domain[256];	/* "docker.io", "localhost:5000" */
	char	path[256];	/* "library/alpine" */
	char	tag[129];	/* "latest"; "" when only a digest is given */
	char	digest[72];	/* "sha256:..." or "" */
};

/* Parse and normalize s.  -EINVAL with a reason in err on bad input. */
int	image_ref_parse(const char *s, struct image_ref *, char *err,
	    size_t errlen) WUR;
/* The full normalized form: domain/path[:tag][@digest]. */
int	image_ref_format(const struct image_ref *, char *buf, size_t len);
/* The familiar short form docker prints ("alpine:latest", "user/app:1",
 * "localhost:5000/x:t"). */
int	image_ref_familiar(const struct image_ref *, char *buf, size_t len);
/* The registry API host: "registry-1.docker.io" for docker.io. */
const char *image_ref_registry(const struct image_ref *);

/* Digests: "sha256:" + 64 lowercase hex.  True when well formed. */
bool	image_digest_valid(const char *);

/*
 * The store (image/store.c) under $SMX_HOME:
 *   blobs/sha256/<hex>        content-addressed, verified, read-only
 *   refs/<domain>/<path>/<tag or digest>   -> manifest digest
 *   rootfs/<chain id hex>/    unpacked layers, shared read-only
 *   tmp/                      partial downloads (resumable)
 * Every write is temp file + fsync + rename (+ directory fsync).  A
 * store lock (flock) serialises ref updates and gc; per-blob locks let
 * two pulls of the same image share a download.
 */
struct image_store;

int	image_store_open(const char *home, struct image_store **,
	    char *err, size_t errlen) WUR;
void	image_store_close(struct image_store *);
/* Path of a blob (may not exist). */
int	image_store_blob_path(struct image_store *, const char *digest,
	    char *buf, size_t len);
bool	image_store_has_blob(struct image_store *, const char *digest);
/* Add a blob from memory or from a file, verifying its digest; -EBADMSG
 * on a mismatch (nothing is stored).  The file is consumed (renamed in
 * when on the same filesystem, else copied). */
int	image_store_put_blob(struct image_store *, const char *digest,
	    const void *data, size_t len) WUR;
int	image_store_put_blob_file(struct image_store *, const char *digest,
	    const char *path) WUR;
/* Read a whole blob (at most maxlen bytes) into a fresh buffer,
 * verifying its digest. */
int	image_store_get_blob(struct image_store *, const char *digest,
	    size_t maxlen, uint8_t **buf, size_t *len) WUR;
/* Named refs. */
int	image_store_set_ref(struct image_store *, const struct image_ref *,
	    const char *manifest_digest) WUR;
int	image_store_get_ref(struct image_store *, const struct image_ref *,
	    char *digest, size_t len) WUR;
int	image_store_del_ref(struct image_store *, const struct image_ref *);
/* Every ref: cb(ref string, manifest digest, arg); stops on non-zero. */
int	image_store_list_refs(struct image_store *,
	    int (*cb)(const char *, const char *, void *), void *arg);
/* Remove blobs and rootfs trees no ref reaches (through manifests,
 * configs and layers).  Reports what was freed. */
int	image_store_gc(struct image_store *, uint64_t *freed_bytes,
	    unsigned *freed_blobs) WUR;
/* A private temp directory inside the store (same filesystem). */
const char *image_store_tmpdir(struct image_store *);

/*
 * Layer unpacking (image/unpack.c).  Applies one layer (tar, gzip or zstd
 * compressed: detected from the content) onto the directory rootfs_fd,
 * OCI image-spec semantics: whiteouts (.wh.NAME) and opaque directories
 * (.wh..wh..opq), hardlinks, symlinks, device nodes and fifos (when
 * allowed), uid/gid/mode/mtime, xattrs.  Every entry is applied with
 * fd-relative operations that cannot escape the rootfs: "../" and
 * absolute names, symlinked parents, symlink-then-write, hardlinks to
 * outside are refused (the entry or the layer, see flags) and nothing is
 * ever written outside rootfs_fd.  -EINVAL + reason for a hostile or
 * corrupt layer.
 */
#define IMAGE_UNPACK_DEVICES	0x1	/* create device nodes (root) */
#define IMAGE_UNPACK_OWNERS	0x2	/* chown to the archive's ids */
#define IMAGE_UNPACK_XATTRS	0x4	/* apply xattrs */

struct image_unpack_stats {
	uint64_t	entries;
	uint64_t	bytes;
	uint64_t	whiteouts;
	uint64_t	skipped;	/* refused entries (logged) */
};

int	image_layer_unpack(int rootfs_fd, const char *layer_path,
	    unsigned flags, struct image_unpack_stats *, char *err,
	    size_t errlen) WUR;

#endif /* SMX_IMAGE_H */
