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
/* A private temp directory inside the store (same filesystem).  At open,
 * files there named *.tmp or *.lock that no process holds a flock on
 * are removed (crash leftovers); other names (partial downloads) are
 * kept, so writers of *.tmp files must flock them while they live. */
const char *image_store_tmpdir(struct image_store *);
/* Per-blob lock (flock on tmp/<hex>.lock): blocks until this process
 * owns the blob's download; then check image_store_has_blob() before
 * fetching.  unlock releases it (and removes the lock file).  Locks from
 * different opens of the store, threads or processes exclude each
 * other; a child forked while the lock is held shares it (close the
 * fd in the child). */
int	image_store_lock_blob(struct image_store *, const char *digest,
	    int *fd) WUR;
void	image_store_unlock_blob(struct image_store *, const char *digest,
	    int fd);
/* The same lock in two steps, for a thread that must not touch the
 * store: the lock file's path (taken where the store is alive), then
 * the blocking lock of that path. */
int	image_store_blob_lock_path(struct image_store *, const char *digest,
	    char *path, size_t len) WUR;
int	image_lock_path(const char *path, int *fd) WUR;
/* Keep gc away while blobs are added but not yet reachable from a ref
 * (a pull: hold before the first blob, release after set_ref).  Shared:
 * any number of holders; image_store_gc() returns -EBUSY while one is
 * held. */
int	image_store_hold(struct image_store *, int *fd) WUR;
void	image_store_release(int fd);
/* The chain id of the first n layers (OCI image spec, config.md):
 * chain(L0) = diffid0; chain(Ln) = sha256(chain(Ln-1) + " " + diffidn),
 * written as "sha256:<hex>".  rootfs/<hex of the chain id>/ holds those
 * layers unpacked.  -EINVAL on a malformed diff id or n == 0. */
int	image_chain_id(const char *const *diff_ids, size_t n,
	    char out[72]) WUR;

/*
 * Layer unpacking (image/unpack.c).  Applies one layer (tar, gzip or zstd
 * compressed: detected from the content) onto the directory rootfs_fd,
 * OCI image-spec semantics: whiteouts (.wh.NAME) and opaque directories
 * (.wh..wh..opq), hardlinks, symlinks, device nodes and fifos (when
 * allowed), uid/gid/mode/mtime, xattrs.  Every entry is applied with
 * fd-relative operations that cannot escape the rootfs: "../" and
 * absolute names, symlinked parents, symlink-then-write, hardlinks to
 * outside refuse the whole layer, and nothing is
 * ever written outside rootfs_fd.  -EINVAL + reason for a hostile or
 * corrupt layer.
 *
 * Details: parents are walked with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS) (O_NOFOLLOW walk before Linux 5.6), so a parent
 * that is a symlink -- even one pointing inside the rootfs -- refuses the
 * whole layer; missing parents are made 0755.  Symlinks are stored
 * verbatim.  Hardlink targets are named from the root and must exist.
 * uid/gid above 2^32-2 refuse the layer (flag or not).  A later entry
 * replaces what is there, except that a directory over a directory is
 * merged.  Whiteouts and opaque markers hide lower layers only, never
 * entries of this layer, whatever their order.  Directory modes and
 * times are set at the end; a directory of a lower layer keeps its
 * times when this layer adds or removes entries in it (as umoci does),
 * so a tree depends on its layers only.  Without IMAGE_UNPACK_DEVICES,
 * device nodes and fifos are skipped (counted in skipped).  xattrs that
 * cannot be set are logged, not fatal; trusted.overlay.* is never set.
 * On failure the rootfs is left half applied: unpack into a scratch
 * directory and discard it on error.  Blocking; call off the reactor
 * thread.
 */
#define IMAGE_UNPACK_DEVICES	0x1	/* device nodes and fifos (root) */
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

/*
 * The registry client (image/registry.c), OCI distribution spec, on the
 * libcurl multi interface driven by the reactor (no thread blocks on the
 * network).  A pull resolves the reference (manifest list / OCI index ->
 * the wanted platform), stores manifest and config, downloads missing
 * layers in parallel (verified by sha256 while streaming, resumed with
 * Range after an interruption, retried with backoff on 5xx / connection
 * errors, redirects followed), then sets the ref.  Auth: anonymous bearer
 * tokens from WWW-Authenticate, basic/bearer with the credentials
 * image_auth_get() finds (docker's config.json or its credential
 * helper).  HTTPS with the system CAs; plain HTTP only for registries
 * marked insecure.
 *
 * Hostile registries: a manifest or config over 4 MiB, one that is not
 * a JSON object, an unknown manifest, config or layer media type, a
 * config whose rootfs.diff_ids does not list the layers, a blob that
 * does not match its digest or size fail the pull with a one-line
 * message before the ref is set; blobs that fail verification are
 * never stored (a partial cut short by the network stays in tmp/ for the
 * next pull to resume).  408/429/5xx and connection errors are retried
 * (honouring Retry-After up to 60 s), then fail naming the status.
 */
struct reactor;
struct image_pull;

struct image_pull_opts {
	size_t		 size;		/* sizeof(struct image_pull_opts) */
	const char	*platform;	/* "linux/amd64" (default) */
	const char	*const *insecure;	/* NULL-terminated hosts, or NULL */
	unsigned	 max_parallel;	/* layer downloads at once (default 3) */
	unsigned	 retries;	/* per request (default 5) */
	unsigned	 stall_s;	/* abort a transfer idle this long (30) */
	const char	*auth_file;	/* default: image_auth_path() */
};

enum image_pull_event_kind {
	IMAGE_PULL_RESOLVED,	/* manifest digest known */
	IMAGE_PULL_LAYER_START,
	IMAGE_PULL_LAYER_PROGRESS,
	IMAGE_PULL_LAYER_DONE,	/* downloaded and verified, or present */
	IMAGE_PULL_DONE,	/* ref set; error == 0 */
	IMAGE_PULL_FAILED,	/* error and message set */
};

struct image_pull_event {
	enum image_pull_event_kind kind;
	const char	*digest;	/* manifest or layer */
	uint64_t	 done, total;	/* bytes, for layers */
	int		 error;		/* -errno for FAILED */
	const char	*message;	/* one line, for FAILED */
};

typedef void (*image_pull_fn)(const struct image_pull_event *, void *arg);

void	image_pull_opts_init(struct image_pull_opts *);
/* Start pulling ref into store; cb reports progress and the end on the
 * reactor thread.  NULL + errno when it cannot even start.  The ref is
 * set to the platform's manifest digest (an index is stored but not
 * referenced).  cb may call image_pull_free() only for DONE and FAILED.
 * The pull keeps reactor_run() going until its final event.  The store
 * must stay open until then: a per-blob lock wait runs on a helper
 * thread that uses it.  Layer events are for layers only (not the
 * config).  A configured credential helper runs (and is waited for)
 * inside this call; its failure is the pull's FAILED event. */
struct image_pull *image_pull_start(struct reactor *, struct image_store *,
	    const struct image_ref *, const struct image_pull_opts *,
	    image_pull_fn cb, void *arg);
/* Abort (cb gets FAILED with -ECANCELED) or free a finished pull. */
void	image_pull_free(struct image_pull *);
/* Check user/pass against registry (a host from image_auth_registry())
 * the way `docker login` does: GET /v2/, answering a 401 with basic auth
 * or a bearer token fetched with them (no scope).  cb gets DONE when the
 * registry accepts them, FAILED with a one-line message (e.g.
 * "HOST rejected the username or password (HTTP 401)") otherwise.  Only
 * insecure, retries and stall_s of opts are used.  Free with
 * image_pull_free().  NULL + errno when it cannot start. */
struct image_pull *image_login_start(struct reactor *, const char *registry,
	    const char *user, const char *pass,
	    const struct image_pull_opts *, image_pull_fn cb, void *arg);

/*
 * Registry credentials (image/auth.c), shared with docker: config.json in
 * $DOCKER_CONFIG, else ~/.docker ("auths": {"HOST": {"auth":
 * base64(user:password)}}, Docker Hub's key "https://index.docker.io/v1/"),
 * or a credential helper: "credHelpers": {"HOST": "NAME"} for one
 * registry, "credsStore": "NAME" for all, meaning the program
 * docker-credential-NAME on PATH (verbs get, store, erase; server URL or
 * JSON on stdin).  Helpers run blocking, as children of the caller.  file
 * NULL means image_auth_path().  Errors come with a one-line reason in
 * err: -ENOEXEC for a missing helper, -EIO for a failing one, -EINVAL for
 * a file that is not a JSON object (never overwritten).
 */
/* The default file path. 0 or -ENOENT (neither variable set). */
int	image_auth_path(char *buf, size_t len);
/* Normalize a registry name as `docker login` takes it ("HOST[:PORT]",
 * "https://HOST/v1/", Docker Hub's names -> "docker.io").  -EINVAL. */
int	image_auth_registry(const char *s, char *host, size_t len, char *err,
	    size_t errlen) WUR;
/* The credentials for registry: *user and *pass (free them) and, when
 * source is not NULL, where they came from (the file or
 * "docker-credential-NAME").  -ENOENT when there are none (a helper
 * saying "credentials not found" included). */
int	image_auth_get(const char *file, const char *registry, char **user,
	    char **pass, char *source, size_t slen, char *err, size_t errlen)
	    WUR;
/* Save credentials: with the registry's helper (`store`), else in
 * "auths" of the file (mode 0600, written to a temp file and renamed;
 * other keys and entries kept).  where receives the file or helper. */
int	image_auth_store(const char *file, const char *registry,
	    const char *user, const char *pass, char *where, size_t wlen,
	    char *err, size_t errlen) WUR;
/* Forget them: the helper's `erase` and the file's entries for
 * registry.  -ENOENT when there was nothing to forget. */
int	image_auth_erase(const char *file, const char *registry, char *err,
	    size_t errlen) WUR;

/*
 * Import (image/import.c): images made from local things, no network.
 *
 * image_import_dir() turns a directory into a one-layer image: the layer
 * is a pax tar (entries sorted by name, mtime in seconds, uid/gid/mode,
 * xattrs, hardlinks by (dev, ino); no atime, ctime or owner names), gzip
 * compressed, so importing the same tree twice gives the same digests.
 * The OCI config says linux/amd64, Env PATH (plus opts->env), Cmd
 * (default ["/bin/sh"]) and WorkingDir (default "/"); "created" is the
 * newest mtime in the tree.  Blobs go into the
 * store under a gc hold, then ref is set.  digest (72 bytes, may be NULL)
 * receives the manifest digest.  Blocking.
 */
struct image_import_opts {
	size_t		 size;		/* sizeof(struct image_import_opts) */
	const char	*const *cmd;	/* NULL-terminated argv, or NULL */
	const char	*const *env;	/* NULL-terminated "K=V", or NULL */
	const char	*workdir;	/* default "/" */
	long long	 uid, gid;	/* every entry's owner; -1: as found */
};

void	image_import_opts_init(struct image_import_opts *);
int	image_import_dir(struct image_store *, const char *dir,
	    const struct image_ref *, const struct image_import_opts *,
	    char *digest, char *err, size_t errlen) WUR;

/*
 * image_load() adds the images of a `docker save` archive (a tar with
 * manifest.json) or of an OCI image layout (a directory or a tar with
 * oci-layout, index.json and blobs/sha256/) to the store.  Every blob is
 * verified (descriptor digests and sizes, the config's rootfs.diff_ids
 * against the layers' uncompressed content) before any ref is set: on
 * error no ref changes.  Refs come from RepoTags (docker) or the
 * org.opencontainers.image.ref.name annotation (OCI: a full reference,
 * or a bare tag applied to name); name (may be NULL) is used when the
 * archive names nothing, and for an OCI layout it overrides the
 * repository.  cb(ref, manifest digest, arg) reports each ref set.
 * -EINVAL + reason for a malformed or hostile archive.  Blocking.
 */
typedef void (*image_load_fn)(const char *ref, const char *digest,
	    void *arg);

int	image_load(struct image_store *, const char *path, const char *name,
	    image_load_fn cb, void *arg, char *err, size_t errlen) WUR;

/*
 * Rootfs cache (image/rootfs.c): an image's layers unpacked into
 * rootfs/<chain id hex>/ under the store, one full tree per image, named
 * by the chain id of all its layers (no tree is kept for a prefix of the
 * layer list alone).  It is built in tmp/ of the store on a copy of the
 * longest prefix whose tree is cached (another image's tree: images that
 * extend a cached image reuse its work; a real copy: no inode is shared
 * between trees; the kernel may clone extents) or on an empty directory,
 * applying the remaining layers in turn to that one tree, synced once and
 * then renamed in: a tree under rootfs/ is always complete.  A per-image
 * lock (a store blob lock keyed by sha256("rootfs " + chain id)) makes
 * concurrent callers, in this process or others, build a tree once.
 * Directory times come from the layers: a directory keeps those of the
 * layer that made it when a later layer adds or removes entries in it.
 * Trees are shared read-only by convention (modes are kept exact, not
 * stripped of w).  As root, owners, device nodes and xattrs are applied;
 * otherwise xattrs only.  A gc hold is kept while building, so smx gc
 * answers busy meanwhile.  A crash mid-build leaves tmp/<hex>.rootfs,
 * removed by the next build of that tree.  Layer content is not checked
 * against its diff id (the blob's digest was checked when stored).
 * Blocking; call off the reactor thread.
 */
struct image_rootfs_stats {
	unsigned	layers;		/* layers of the image */
	unsigned	reused;		/* layers found unpacked: all of them
					   when the tree was cached, else
					   the cached prefix copied */
	unsigned	unpacked;	/* layers this call unpacked */
};

/* Unpack (or find) the tree of the image whose manifest is
 * manifest_digest; its path goes into path.  stats may be NULL.
 * -ENOENT when a blob is missing, -EINVAL for a malformed manifest or
 * config or a refused layer (nothing is left under rootfs/), with a
 * reason in err. */
int	image_rootfs_get(struct image_store *, const char *manifest_digest,
	    char *path, size_t len, struct image_rootfs_stats *stats,
	    char *err, size_t errlen) WUR;

/*
 * The guest's initramfs (image/initramfs.c): an uncompressed newc cpio
 * holding init_path as /init (0755), /dev/console (c 5 1) and the
 * directories /dev /proc /sys /run /tmp /mnt, all owned by root.
 * Cached as <home>/initramfs/<sha256 of the agent's bytes>.cpio
 * (written as a temp file, fsynced and renamed in); its path goes into
 * path.  -errno with a reason in err.  Blocking (reads the agent).
 */
int	image_initramfs_get(const char *home, const char *init_path,
	    char *path, size_t len, char *err, size_t errlen) WUR;

#endif /* SMX_IMAGE_H */
