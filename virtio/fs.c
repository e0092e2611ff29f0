/*
 * virtio-fs (virtio 1.2 section 5.11): the FUSE protocol over a
 * virtqueue, served by fusefs/ from one host directory, with an optional
 * DAX window (shared memory region 0) the guest maps file pages through.
 *
 * A request is a chain: the FUSE request (fuse_in_header + body, WRITE
 * data after it) in driver-readable segments, then room for the reply
 * (fuse_out_header + body, READ data after it) in device-writable ones.
 * Requests on the hiprio queue (FORGET, BATCH_FORGET, INTERRUPT) have no
 * writable part and get no reply: they are pushed back with length 0.
 *
 * Threads: the reactor pops chains and queues them for a small pool of
 * worker threads (virtio/pool_impl.h), because fusefs_handle() blocks in
 * file-system calls (a slow host disk must not stall every VM's
 * devices).  Back on the reactor, each finished request gets its used
 * element with the reply length (or fails the device when the
 * server found the request malformed).  FUSE requests are independent
 * of each other (the guest orders what needs ordering by waiting for
 * replies), so completing them out of order is fine.  Reset, save and
 * free first drain the pool: the reactor waits for the requests in
 * flight (at most two queues' worth).
 *
 * DAX: the window is one anonymous MAP_NORESERVE reservation registered
 * as a KVM memory slot.  SETUPMAPPING mmaps a file range over part of it
 * with MAP_FIXED and REMOVEMAPPING maps anonymous memory back; KVM's MMU
 * notifier drops its stale translations when the host mapping changes
 * under the slot, so the slot itself never changes.  Unmapped parts read
 * as zero instead of faulting KVM_RUN.
 */
#include <sys/mman.h>
#include <sys/uio.h>

#include <endian.h>
#include <errno.h>
#include <linux/virtio_fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fusefs/fusefs.h"
#include "virtio/pool_impl.h"
#include "virtio/virtio.h"

#define FS_QUEUE_HIPRIO	0
#define FS_QUEUE_REQ	1
/* Linux limits a request to queue size - 4 pages (FUSE_HEADER_OVERHEAD),
 * one segment each: 128 keeps every chain under VIRTIO_MAX_CHAIN. */
#define FS_QUEUE_MAX	128
#define FS_WORKERS	4
#define FS_BATCH	32	/* requests handed to the pool at once */
#define FS_DAX_ALIGN	(2ULL << 20)	/* Linux maps 2 MiB ranges */
#define FS_SAVE_VERSION	1
/* Entry and attribute lifetimes at most: no notification queue carries
 * invalidations, so host edits show when these run out (issue 4.5). */
#define FS_CACHE_MAX_MS	1000

/* One request, from pop to push. */
struct fs_req {
	unsigned		 q;
	ssize_t			 rc;		/* fusefs_handle() */
	uint8_t			 scratch[16];	/* see fs_serve */
	struct virtio_chain	 chain;
	struct iovec		 iov[VIRTIO_MAX_CHAIN + 1];
};

struct vfs {
	struct virtio_dev	*dev;
	struct fusefs		*fs;
	struct virtio_fs_config	 cfg;		/* little-endian, as shown */
	struct hv		*hv;

	/* DAX window: fixed after create (workers mmap into it). */
	uint8_t			*win;		/* NULL: no DAX */
	uint64_t		 win_len;
	uint64_t		 win_gpa;
	uint32_t		 win_slot;
	bool			 win_slot_mapped;
	uint64_t		 maps, unmaps;	/* atomic: worker threads */

	struct vpool		*pool;		/* FS_WORKERS threads */
	/* Reactor only: completions are dropped (after a reset); the
	 * current batch met a malformed request; queues it pushed to. */
	bool			 drop;
	bool			 batch_failed;
	bool			 pushed[2];
	/* Chains taken from the queues and given back (reactor only): a
	 * guest that hangs with both equal is not waiting on us. */
	uint64_t		 popped, answered;
};

/* Anonymous zero pages over [off, off + len) of the window.  MAP_FIXED
 * replaces whatever was there in one step, so the slot never has a hole
 * (a hole would make KVM_RUN fail with EFAULT when the guest touched it). */
static int
win_zero(struct vfs *s, uint64_t off, uint64_t len)
{
	if (mmap(s->win + off, len, PROT_READ | PROT_WRITE, MAP_PRIVATE |
	    MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED)
		return -errno;
	return 0;
}

/* Whether [off, off + len) is a page-aligned, non-empty part of the
 * window (no overflow). */
static bool
win_range_ok(const struct vfs *s, uint64_t off, uint64_t len)
{
	uint64_t	page = (uint64_t)sysconf(_SC_PAGESIZE);

	return s->win != NULL && len != 0 && off % page == 0 &&
	    len % page == 0 && off <= s->win_len && len <= s->win_len - off;
}

/* fusefs transport: SETUPMAPPING (worker thread). */
static int
dax_map_cb(void *arg, uint64_t woff, int fd, uint64_t foff, uint64_t len,
    bool writable)
{
	struct vfs	*s = arg;
	int		 prot = PROT_READ | (writable ? PROT_WRITE : 0), rc;

	if (!win_range_ok(s, woff, len) || foff > (uint64_t)INT64_MAX)
		return -EINVAL;
	if (mmap(s->win + woff, len, prot, MAP_SHARED | MAP_FIXED, fd,
	    (off_t)foff) != MAP_FAILED) {
		__atomic_fetch_add(&s->maps, 1, __ATOMIC_RELAXED);
		return 0;
	}
	rc = -errno;
	/* A failed MAP_FIXED may have unmapped the range already. */
	if (win_zero(s, woff, len) != 0)
		log_warn("virtio-fs: DAX window at +%#llx left unmapped",
		    (unsigned long long)woff);
	return rc;
}

/* fusefs transport: REMOVEMAPPING (worker thread). */
static int
dax_unmap_cb(void *arg, uint64_t woff, uint64_t len)
{
	struct vfs	*s = arg;

	if (!win_range_ok(s, woff, len))
		return -EINVAL;
	__atomic_fetch_add(&s->unmaps, 1, __ATOMIC_RELAXED);
	return win_zero(s, woff, len);
}

/* fusefs transport: no notification queue (VIRTIO_FS_F_NOTIFICATION is
 * not offered; Linux 6.1 has no driver for it). */
static int
notify_cb(void *arg, const struct iovec *iov, unsigned n)
{
	(void)arg;
	(void)iov;
	(void)n;
	return -ENOSYS;
}

/* vpool serve: one request (worker thread).  The chain's readable
 * segments are the request, its writable segments the room for the
 * reply. */
static void
fs_serve_cb(void *arg, void *req)
{
	struct vfs			*s = arg;
	struct fs_req			*rq = req;
	const struct virtio_chain	*c = &rq->chain;
	unsigned			 i, nout = c->nseg - c->nread;

	for (i = 0; i < c->nseg; i++) {
		rq->iov[i].iov_base = c->seg[i].addr;
		rq->iov[i].iov_len = c->seg[i].len;
	}
	/* A request without reply room (FORGET on hiprio) gets a scratch
	 * header's worth, so a server that checks for room before it looks
	 * at the opcode does not call it malformed.  Whatever it writes
	 * there counts against the chain's write_len (0) in fs_done_cb. */
	if (nout == 0) {
		rq->iov[c->nseg].iov_base = rq->scratch;
		rq->iov[c->nseg].iov_len = sizeof(rq->scratch);
		nout = 1;
	}
	rq->rc = fusefs_handle(s->fs, rq->iov, c->nread, rq->iov + c->nread,
	    nout);
}

/* vpool done: a finished request back to the driver (reactor thread),
 * or dropped after a reset (the queues are gone).  A malformed request
 * fails the device and drops the rest of its batch.  NULL ends a batch. */
static void
fs_done_cb(void *arg, void *req)
{
	struct vfs	*s = arg;
	struct fs_req	*rq = req;
	unsigned	 q;

	if (rq == NULL) {
		for (q = 0; q < 2; q++) {
			if (s->pushed[q])
				virtio_queue_notify_guest(
				    virtio_dev_queue(s->dev, q));
			s->pushed[q] = false;
		}
		s->batch_failed = false;
		return;
	}
	if (s->drop || s->batch_failed)
		return;
	if (rq->rc < 0 || (size_t)rq->rc > rq->chain.write_len) {
		/* Sizes that do not add up: the guest's driver is broken
		 * or hostile.  Stop serving it. */
		virtio_dev_fail(s->dev, "malformed FUSE request (queue %u, "
		    "head %u): %s", rq->q, rq->chain.head, rq->rc < 0 ?
		    strerror((int)-rq->rc) : "reply longer than the buffer");
		s->batch_failed = true;
		return;
	}
	if (!virtio_dev_needs_reset(s->dev)) {
		virtio_queue_push(virtio_dev_queue(s->dev, rq->q), &rq->chain,
		    (uint32_t)rq->rc);
		s->pushed[rq->q] = true;
		s->answered++;
	}
}

/* Pop every available chain of queue qi and queue it for the pool. */
static void
fs_notify(struct virtio_dev *dev, void *priv, unsigned qi)
{
	struct vfs		*s = priv;
	struct virtio_queue	*q = virtio_dev_queue(dev, qi);
	struct fs_req		*rq;
	void			*batch[FS_BATCH];
	unsigned		 n = 0;

	for (;;) {
		rq = vpool_get(s->pool);
		if (virtio_queue_pop(q, &rq->chain) != 1) {
			vpool_put(s->pool, rq);
			break;
		}
		rq->q = qi;
		rq->rc = 0;
		s->popped++;
		batch[n++] = rq;
		if (n == FS_BATCH) {
			vpool_submit(s->pool, batch, n);
			n = 0;
		}
	}
	vpool_submit(s->pool, batch, n);
}

/* The core dropped the queues: let the requests in flight finish, drop
 * their replies, and forget the client (a new INIT follows).  fusefs
 * removes its DAX mappings; zeroing the whole window also clears any a
 * failed removal left. */
static void
fs_reset(struct virtio_dev *dev, void *priv)
{
	struct vfs	*s = priv;

	(void)dev;
	s->drop = true;
	vpool_drain(s->pool);
	s->drop = false;
	fusefs_reset(s->fs);
	if (s->win != NULL && win_zero(s, 0, s->win_len) != 0)
		log_warn("virtio-fs: cannot clear the DAX window");
}

static void
fs_config_read(struct virtio_dev *dev, void *priv, uint32_t off, void *data,
    uint32_t len)
{
	struct vfs	*s = priv;

	(void)dev;
	memcpy(data, (const uint8_t *)&s->cfg + off, len);
}

static bool
fs_shm_region(struct virtio_dev *dev, void *priv, uint32_t id, uint64_t *gpa,
    uint64_t *len)
{
	struct vfs	*s = priv;

	(void)dev;
	if (s->win == NULL || id != VIRTIO_FS_SHMCAP_ID_CACHE)
		return false;
	*gpa = s->win_gpa;
	*len = s->win_len;
	return true;
}

/* Record: le32 version, le32 length of the fusefs record, the record.
 * Requests in flight are completed first (a popped, unpushed chain would
 * be lost). */
static int
fs_save(struct virtio_dev *dev, void *priv, uint8_t **buf, size_t *len)
{
	struct vfs	*s = priv;
	uint8_t		*rec = NULL;
	size_t		 rlen = 0;
	uint32_t	 v[2];
	int		 rc;

	(void)dev;
	if (s->win != NULL)
		return -EOPNOTSUPP;
	vpool_drain(s->pool);
	if ((rc = fusefs_save(s->fs, &rec, &rlen)) != 0) {
		free(rec);
		return rc;
	}
	if (rlen > UINT32_MAX) {
		free(rec);
		return -EOVERFLOW;
	}
	v[0] = htole32(FS_SAVE_VERSION);
	v[1] = htole32((uint32_t)rlen);
	*buf = xreallocarray(*buf, *len + sizeof(v) + rlen, 1);
	memcpy(*buf + *len, v, sizeof(v));
	if (rlen > 0)
		memcpy(*buf + *len + sizeof(v), rec, rlen);
	*len += sizeof(v) + rlen;
	free(rec);
	return 0;
}

static int
fs_load(struct virtio_dev *dev, void *priv, const uint8_t *buf, size_t len)
{
	struct vfs	*s = priv;
	uint32_t	 v[2];

	(void)dev;
	if (len < sizeof(v))
		return -EINVAL;
	memcpy(v, buf, sizeof(v));
	if (le32toh(v[0]) != FS_SAVE_VERSION ||
	    le32toh(v[1]) != len - sizeof(v))
		return -EINVAL;
	return fusefs_load(s->fs, buf + sizeof(v), len - sizeof(v));
}

/* Undo everything create set up, in reverse. */
static void
fs_destroy(struct vfs *s)
{
	vpool_free(s->pool);
	/* fusefs_free removes its DAX mappings through the transport. */
	if (s->fs != NULL)
		fusefs_free(s->fs);
	if (s->win_slot_mapped)
		(void)hv_mem_unmap(s->hv, s->win_slot);
	if (s->win != NULL)
		munmap(s->win, s->win_len);
	free(s);
}

static void
fs_free(void *priv)
{
	struct vfs		*s = priv;
	struct fusefs_stats	 st;

	fusefs_get_stats(s->fs, &st);
	log_info("virtio-fs %.36s: %llu requests, %llu errors, %llu DAX "
	    "mappings, %llu removals; chains %llu taken, %llu answered",
	    (const char *)s->cfg.tag, (unsigned long long)st.requests,
	    (unsigned long long)st.errors, (unsigned long long)s->maps,
	    (unsigned long long)s->unmaps, (unsigned long long)s->popped,
	    (unsigned long long)s->answered);
	fs_destroy(s);
}

static const struct virtio_dev_ops fs_ops = {
	.name = "fs",
	.device_id = VIRTIO_ID_FS,
	.nqueues = 2,
	.queue_max = FS_QUEUE_MAX,
	.config_size = sizeof(struct virtio_fs_config),
	.features = 0,
	.notify = fs_notify,
	.reset = fs_reset,
	.config_read = fs_config_read,
	.save = fs_save,
	.load = fs_load,
	.free = fs_free,
	.shm_region = fs_shm_region,
};

struct virtio_dev *
virtio_fs_create(const struct virtio_host *h, uint64_t base, uint32_t irq,
    const struct fusefs_opts *opts, const char *tag, uint32_t dax_slot,
    uint64_t dax_gpa, char *err, size_t errlen)
{
	struct fusefs_transport	 tr;
	struct fusefs_opts	 fo;
	struct vfs		*s;
	size_t			 tlen = tag != NULL ? strlen(tag) : 0;
	int			 saved, rc;

	if (tlen == 0 || tlen > VIRTIO_FS_TAG_MAX) {
		snprintf(err, errlen, "share tag '%s': give 1 to %d bytes",
		    tag != NULL ? tag : "", VIRTIO_FS_TAG_MAX);
		errno = EINVAL;
		return NULL;
	}
	if (opts->dax_window % FS_DAX_ALIGN != 0 ||
	    (opts->dax_window != 0 && dax_gpa % FS_DAX_ALIGN != 0)) {
		snprintf(err, errlen, "share %s: DAX window %#llx at %#llx: "
		    "both must be multiples of 2 MiB", tag,
		    (unsigned long long)opts->dax_window,
		    (unsigned long long)dax_gpa);
		errno = EINVAL;
		return NULL;
	}
	s = xcalloc(1, sizeof(*s));
	s->hv = h->hv;
	memcpy(s->cfg.tag, tag, tlen);
	s->cfg.num_request_queues = htole32(1);
	if (opts->dax_window != 0) {
		s->win_len = opts->dax_window;
		s->win_gpa = dax_gpa;
		s->win_slot = dax_slot;
		s->win = mmap(NULL, s->win_len, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (s->win == MAP_FAILED) {
			s->win = NULL;
			saved = errno;
			snprintf(err, errlen, "share %s: cannot reserve a %llu "
			    "MiB DAX window: %s", tag,
			    (unsigned long long)(s->win_len >> 20),
			    strerror(saved));
			goto err_destroy;
		}
		if ((rc = hv_mem_map(h->hv, dax_slot, dax_gpa, s->win_len,
		    s->win, 0)) != 0) {
			saved = -rc;
			snprintf(err, errlen, "share %s: cannot map the DAX "
			    "window at %#llx: %s", tag,
			    (unsigned long long)dax_gpa, strerror(saved));
			goto err_destroy;
		}
		s->win_slot_mapped = true;
	}
	memset(&tr, 0, sizeof(tr));
	tr.notify = notify_cb;
	if (s->win != NULL) {
		tr.dax_map = dax_map_cb;
		tr.dax_unmap = dax_unmap_cb;
	}
	tr.arg = s;
	fo = *opts;
	fo.entry_timeout_ms = MIN(fo.entry_timeout_ms, FS_CACHE_MAX_MS);
	fo.attr_timeout_ms = MIN(fo.attr_timeout_ms, FS_CACHE_MAX_MS);
	if ((s->fs = fusefs_create(h->r, &fo, &tr, err, errlen)) == NULL) {
		saved = errno;
		goto err_destroy;
	}
	if ((s->pool = vpool_create(h->r, FS_WORKERS, sizeof(struct fs_req),
	    fs_serve_cb, fs_done_cb, s)) == NULL) {
		saved = errno;
		snprintf(err, errlen, "share %s: worker threads: %s", tag,
		    strerror(saved));
		goto err_destroy;
	}
	if ((s->dev = virtio_mmio_create(h, base, irq, &fs_ops, s)) == NULL) {
		saved = errno;
		snprintf(err, errlen, "share %s: virtio device: %s", tag,
		    strerror(saved));
		goto err_destroy;
	}
	return s->dev;

err_destroy:
	fs_destroy(s);
	errno = saved;
	return NULL;
}

struct fusefs *
virtio_fs_server(struct virtio_dev *dev)
{
	struct vfs	*s = virtio_dev_priv(dev);

	return s->fs;
}
