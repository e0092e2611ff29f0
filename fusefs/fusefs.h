/*
 * fusefs: a FUSE server (protocol 7.31+) exporting one host directory,
 * safe against a lying client.  Every name is resolved beneath the share
 * root with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) relative to
 * directory fds; nodes are held as O_PATH fds (within a budget: see
 * max_node_fds).  A read-only share refuses every mutation with EROFS.
 * Transports: the virtio-fs device
 * (virtio/fs.c) and /dev/fuse on the host (fusefs/devfuse.c, used by
 * `smx mount` and the tests).  Knows nothing of virtio.
 *
 * Threads: fusefs_handle() is thread-safe and may block in file-system
 * calls: transports call it from worker threads, not from the reactor.
 * Everything else runs on the reactor thread unless noted.
 */
#ifndef SMX_FUSEFS_H
#define SMX_FUSEFS_H

#include <sys/uio.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/base.h"

struct reactor;
struct fusefs;

struct fusefs_opts {
	size_t		 size;		/* sizeof(struct fusefs_opts) */
	const char	*root;		/* the shared directory */
	bool		 readonly;
	/* Entry / attribute cache lifetimes handed to the client, ms.
	 * With a transport that cannot carry invalidations keep them at
	 * most 1000 so host edits show within a second. */
	unsigned	 entry_timeout_ms;	/* default 1000 */
	unsigned	 attr_timeout_ms;	/* default 1000 */
	bool		 watch;		/* inotify: invalidate on host edits */
	uint32_t	 max_write;	/* default 1 MiB */
	/* DAX: the window size offered in INIT (0: no DAX).  SETUPMAPPING
	 * and REMOVEMAPPING go to the dax callbacks. */
	uint64_t	 dax_window;
	/* O_PATH fds held for looked-up nodes before the least recently
	 * used ones not in use are closed, to be re-opened by file handle
	 * on demand (needs CAP_DAC_READ_SEARCH; without it nodes keep
	 * their fds and a client that looks up more than the open-file
	 * limit allows gets ENFILE).  0: 3/4 of RLIMIT_NOFILE, shared by
	 * every server in the process. */
	size_t		 max_node_fds;
};

void	fusefs_opts_init(struct fusefs_opts *);

/*
 * What a transport provides.  All optional.  notify sends an unsolicited
 * FUSE notification (already a complete message: fuse_out_header with
 * unique 0 and the notify code in error); 0 or -errno (-ENOSYS: this
 * transport cannot, then timeouts must do).  dax_map maps len bytes of
 * fd at file offset foff into the DAX window at woff (writable or not);
 * dax_unmap replaces [woff, woff + len) with nothing (reads as zero).
 * Both may be called from worker threads.
 */
struct fusefs_transport {
	int	(*notify)(void *arg, const struct iovec *, unsigned n);
	int	(*dax_map)(void *arg, uint64_t woff, int fd, uint64_t foff,
		    uint64_t len, bool writable);
	int	(*dax_unmap)(void *arg, uint64_t woff, uint64_t len);
	void	*arg;
};

/* Create a server for opts->root (which must be a directory).  NULL +
 * errno and a one-line reason in err on failure.  Reactor thread (the
 * inotify watch is registered with r when opts->watch). */
struct fusefs	*fusefs_create(struct reactor *r, const struct fusefs_opts *,
		    const struct fusefs_transport *, char *err, size_t errlen);
/* Free: closes every node and handle, removes DAX mappings. */
void		 fusefs_free(struct fusefs *);

/*
 * Handle one request.  in: the request as the client wrote it
 * (fuse_in_header + body, possibly scattered over several iovecs, e.g.
 * a virtio chain's readable segments; for WRITE the payload follows).
 * out: where the reply goes (fuse_out_header + body; for READ the data
 * follows).  Returns the reply length written into out (0 when the
 * request has no reply: FORGET, BATCH_FORGET, INTERRUPT), or -EINVAL
 * when the request itself is malformed (sizes that do not add up): the
 * transport decides what that costs the client.  Every size is checked
 * before the payload is read; unknown opcodes get ENOSYS replies.
 * Thread-safe.
 */
ssize_t	fusefs_handle(struct fusefs *, const struct iovec *in, unsigned nin,
	    const struct iovec *out, unsigned nout);

/* The client went away or reset: forget every node and handle (the
 * root stays), remove DAX mappings.  A new INIT may follow. */
void	fusefs_reset(struct fusefs *);

/*
 * Snapshot state: the node table (nodeid -> path beneath the root,
 * lookup count, generation) and the open handles (fh -> node, open
 * flags).  save appends to *buf (*len bytes used); load reopens every
 * path beneath the root (a node whose path is gone becomes stale: the
 * client gets ESTALE for it) and returns 0 or -errno (-EINVAL on a
 * malformed record).
 */
int	fusefs_save(struct fusefs *, uint8_t **buf, size_t *len) WUR;
int	fusefs_load(struct fusefs *, const uint8_t *buf, size_t len) WUR;

/* Counters for tests and `smx` diagnostics. */
struct fusefs_stats {
	uint64_t	requests;
	uint64_t	errors;		/* replies with error != 0 */
	uint64_t	malformed;	/* -EINVAL returns */
	uint64_t	nodes;		/* live nodeids */
	uint64_t	handles;	/* live file/dir handles */
	uint64_t	invalidations;	/* notifications sent */
	uint64_t	node_fds;	/* node O_PATH fds open (root aside) */
	uint64_t	evictions;	/* node fds closed over budget */
	uint64_t	reopens;	/* node fds re-opened by file handle */
};
void	fusefs_get_stats(struct fusefs *, struct fusefs_stats *);

/*
 * /dev/fuse on the host (fusefs/devfuse.c): mount the server at
 * mountpoint (fuse.smx, allow_other, default_permissions: the kernel
 * checks permissions as the virtio-fs client does; without it cached
 * directory entries would skip search checks) and serve it with nthreads worker threads
 * reading /dev/fuse.  Notifications go back through the same fd.
 * fusefs_unmount() detaches (lazy), stops the threads and frees.
 */
struct fusefs_mount;
struct fusefs_mount *fusefs_mount(struct reactor *,
		    const struct fusefs_opts *, const char *mountpoint,
		    unsigned nthreads, char *err, size_t errlen);
void	fusefs_unmount(struct fusefs_mount *);
struct fusefs	*fusefs_mount_fs(struct fusefs_mount *);
/*
 * fn(arg) runs once when the kernel ends the connection (the file system
 * was unmounted from outside, or the connection aborted) and every
 * worker has stopped: on the last worker's thread, or at once on the
 * caller's if that already happened.  fn may only do what is safe from
 * any thread (reactor_post()); the owner then calls fusefs_unmount().
 * Not called once fusefs_unmount() has begun.
 */
void	fusefs_mount_set_gone_cb(struct fusefs_mount *, void (*fn)(void *),
	    void *arg);

#endif /* SMX_FUSEFS_H */
