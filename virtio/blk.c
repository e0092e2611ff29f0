/*
 * virtio-blk (virtio 1.2 section 5.2): one request queue over a raw
 * image file (or a host block device), read-only or read-write.
 *
 * A request is a chain: a 16-byte header {le32 type, le32 reserved,
 * le64 sector} in driver-readable memory, then the data (driver-readable
 * for OUT / DISCARD / WRITE_ZEROES, device-writable for IN / GET_ID), then
 * one status byte, the last device-writable byte of the chain.  A request
 * the device can answer (bad type, bad range, wrong directions) gets an
 * error status; a chain without any writable byte cannot even be
 * answered and marks the device NEEDS_RESET.
 *
 * Threads: the reactor pops and checks the chain, then hands the request
 * to the device's worker pool (virtio/pool_impl.h) of one I/O thread,
 * which does the blocking preadv/pwritev/fallocate/fdatasync straight on
 * guest memory; the reactor then writes the status byte and pushes the
 * chain.  One worker per device keeps requests in order (a FLUSH follows
 * the writes before it); parallel I/O on one disk would need more.
 * Reset and save first drain the pool (the reactor waits for the I/O in
 * flight: at most one queue's worth).
 */
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/virtio_blk.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "virtio/pool_impl.h"
#include "virtio/virtio.h"

#define SECTOR_SHIFT	9
#define SECTOR_SIZE	(1u << SECTOR_SHIFT)
#define BLK_HDR_SIZE	16
#define BLK_QUEUE_MAX	256
#define BLK_BATCH	32	/* requests handed to the pool at once */
/* Data segments per request: the chain minus header and status. */
#define BLK_SEG_MAX	(VIRTIO_MAX_CHAIN - 2)
#define BLK_SIZE_MAX	(1u << 20)	/* bytes per data segment */
/* Discard / write-zeroes limits (sectors per range, ranges per request).
 * Write zeroes may fall back to writing real zeroes, so it is kept
 * smaller to bound the time one request can take. */
#define BLK_DISCARD_SECTORS	(1u << 22)	/* 2 GiB */
#define BLK_DISCARD_SEGS	16
#define BLK_DISCARD_ALIGN	8		/* sectors: 4 KiB */
#define BLK_WZ_SECTORS		(1u << 16)	/* 32 MiB */
#define BLK_WZ_SEGS		16

#define BLK_SAVE_VERSION	1

/* The config space we expose: the packed Linux layout up to the end of
 * the write-zeroes fields (no secure erase). */
#define BLK_CONFIG_SIZE	offsetof(struct virtio_blk_config, \
	    max_secure_erase_sectors)

#define BLK_FEATURES_COMMON	((1ULL << VIRTIO_BLK_F_SIZE_MAX) | \
	    (1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_BLK_SIZE) | \
	    (1ULL << VIRTIO_BLK_F_FLUSH))
#define BLK_FEATURES_RW		(BLK_FEATURES_COMMON | \
	    (1ULL << VIRTIO_BLK_F_DISCARD) | (1ULL << VIRTIO_BLK_F_WRITE_ZEROES))
#define BLK_FEATURES_RO		(BLK_FEATURES_COMMON | \
	    (1ULL << VIRTIO_BLK_F_RO))

/* One request, from pop to push. */
struct blk_req {
	bool			 flush, discard, wz;	/* negotiated */
	uint8_t			*status_p;
	uint8_t			 status;
	uint32_t		 written;
	struct virtio_chain	 chain;
	struct iovec		 iov[VIRTIO_MAX_CHAIN];
};

struct blk {
	struct virtio_dev	*dev;
	/* Fixed after create: the worker reads these without a lock. */
	int			 fd;
	bool			 ro;
	uint64_t		 capacity;	/* sectors */
	char			 id[VIRTIO_BLK_ID_BYTES];
	struct virtio_blk_config cfg;		/* little-endian, as shown */

	struct vpool		*pool;		/* one worker: in order */
	/* Reactor only: completions are dropped (after a reset), and
	 * whether the current batch pushed anything. */
	bool			 drop;
	bool			 pushed;
};

/*
 * Gather up to `limit` bytes of segments [first, last) of c, skipping
 * the first `skip` bytes, into iov.  Empty pieces are left out (a
 * zero-byte preadv result then always means end of file).  Returns the
 * iovec count; *total gets the bytes gathered.
 */
static int
gather(const struct virtio_chain *c, unsigned first, unsigned last,
    size_t skip, size_t limit, struct iovec *iov, size_t *total)
{
	unsigned	i;
	size_t		len, got = 0;
	int		n = 0;

	for (i = first; i < last && got < limit; i++) {
		len = c->seg[i].len;
		if (skip >= len) {
			skip -= len;
			continue;
		}
		len = MIN(len - skip, limit - got);
		if (len > 0) {
			iov[n].iov_base = c->seg[i].addr + skip;
			iov[n].iov_len = len;
			n++;
			got += len;
		}
		skip = 0;
	}
	*total = got;
	return n;
}

/* preadv/pwritev the whole iovec at off, riding out EINTR and short
 * transfers.  Returns 0 or -errno (-EIO at end of file). */
static int
rw_all(int fd, bool write, struct iovec *iov, int n, off_t off)
{
	ssize_t	r;

	while (n > 0) {
		r = write ? pwritev(fd, iov, n, off) : preadv(fd, iov, n, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO;
		off += r;
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= r;
		}
	}
	return 0;
}

/* Whether [sector, sector + nsect) lies inside the disk (no overflow). */
static bool
in_range(const struct blk *s, uint64_t sector, uint64_t nsect)
{
	return sector <= s->capacity && nsect <= s->capacity - sector;
}

/* Write real zeroes over [off, off + len): the fallback when the file
 * system cannot zero a range itself. */
static int
write_zeroes(int fd, off_t off, uint64_t len)
{
	static const uint8_t	zero[64 * 1024];
	struct iovec		iov;
	size_t			chunk;
	int			rc;

	while (len > 0) {
		chunk = MIN(len, sizeof(zero));
		iov.iov_base = (void *)zero;
		iov.iov_len = chunk;
		if ((rc = rw_all(fd, true, &iov, 1, off)) != 0)
			return rc;
		off += chunk;
		len -= chunk;
	}
	return 0;
}

/* fallocate that retries EINTR; 0 or -errno. */
static int
falloc(int fd, int mode, off_t off, off_t len)
{
	while (fallocate(fd, mode, off, len) != 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/* DISCARD or WRITE_ZEROES: an array of 16-byte ranges after the header. */
static uint8_t
blk_ranges(struct blk *s, const struct blk_req *rq, uint32_t type)
{
	const struct virtio_chain		*c = &rq->chain;
	struct virtio_blk_discard_write_zeroes	rg;
	bool		 wz = type == VIRTIO_BLK_T_WRITE_ZEROES;
	uint32_t	 max_sect = wz ? BLK_WZ_SECTORS : BLK_DISCARD_SECTORS;
	uint32_t	 max_seg = wz ? BLK_WZ_SEGS : BLK_DISCARD_SEGS;
	uint32_t	 flags, nsect, data = c->read_len - BLK_HDR_SIZE;
	uint64_t	 sector;
	off_t		 off, len;
	unsigned	 i, n;
	int		 rc;

	if (!(wz ? rq->wz : rq->discard))
		return VIRTIO_BLK_S_UNSUPP;
	if (s->ro)
		return VIRTIO_BLK_S_IOERR;
	if (data == 0 || data % sizeof(rg) != 0)
		return VIRTIO_BLK_S_IOERR;
	n = data / sizeof(rg);
	if (n > max_seg)
		return VIRTIO_BLK_S_IOERR;
	/* Check every range before touching any. */
	for (i = 0; i < n; i++) {
		if (virtio_chain_read(c, BLK_HDR_SIZE + i * sizeof(rg), &rg,
		    sizeof(rg)) != sizeof(rg))
			return VIRTIO_BLK_S_IOERR;
		flags = le32toh(rg.flags);
		nsect = le32toh(rg.num_sectors);
		/* Section 5.2.6.2: unknown flags, and unmap on a discard,
		 * are unsupported. */
		if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) != 0 ||
		    (!wz && flags != 0))
			return VIRTIO_BLK_S_UNSUPP;
		if (nsect > max_sect ||
		    !in_range(s, le64toh(rg.sector), nsect))
			return VIRTIO_BLK_S_IOERR;
	}
	for (i = 0; i < n; i++) {
		if (virtio_chain_read(c, BLK_HDR_SIZE + i * sizeof(rg), &rg,
		    sizeof(rg)) != sizeof(rg))
			return VIRTIO_BLK_S_IOERR;
		sector = le64toh(rg.sector);
		nsect = le32toh(rg.num_sectors);
		if (!in_range(s, sector, nsect))	/* reread: guest memory */
			return VIRTIO_BLK_S_IOERR;
		off = (off_t)(sector << SECTOR_SHIFT);
		len = (off_t)nsect << SECTOR_SHIFT;
		if (len == 0)
			continue;
		if (!wz) {
			/* Discard is a hint: a file system that cannot
			 * punch holes simply keeps the data. */
			rc = falloc(s->fd, FALLOC_FL_PUNCH_HOLE |
			    FALLOC_FL_KEEP_SIZE, off, len);
			if (rc != 0 && rc != -EOPNOTSUPP)
				return VIRTIO_BLK_S_IOERR;
			continue;
		}
		rc = -EOPNOTSUPP;
		if (le32toh(rg.flags) & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)
			rc = falloc(s->fd, FALLOC_FL_PUNCH_HOLE |
			    FALLOC_FL_KEEP_SIZE, off, len);
		if (rc == -EOPNOTSUPP)
			rc = falloc(s->fd, FALLOC_FL_ZERO_RANGE |
			    FALLOC_FL_KEEP_SIZE, off, len);
		if (rc == -EOPNOTSUPP || rc == -EINVAL)
			rc = write_zeroes(s->fd, off, len);
		if (rc != 0)
			return VIRTIO_BLK_S_IOERR;
	}
	return VIRTIO_BLK_S_OK;
}

/* Serve one request (worker thread): the status it gets and (in
 * *written) the bytes the device wrote into the chain, status byte
 * included.  Touches only guest memory, the fd and fixed fields of s. */
static uint8_t
blk_serve(struct blk *s, struct blk_req *rq, uint32_t *written)
{
	const struct virtio_chain	*c = &rq->chain;
	uint8_t		 hdr[BLK_HDR_SIZE];
	uint32_t	 type;
	uint64_t	 sector;
	size_t		 len;
	int		 n;

	*written = 1;
	if (virtio_chain_read(c, 0, hdr, sizeof(hdr)) != sizeof(hdr))
		return VIRTIO_BLK_S_IOERR;
	memcpy(&type, hdr, 4);
	memcpy(&sector, hdr + 8, 8);
	type = le32toh(type);
	sector = le64toh(sector);

	switch (type) {
	case VIRTIO_BLK_T_IN:
		/* Data must be device-writable, whole sectors, on disk. */
		if (c->read_len != BLK_HDR_SIZE)
			return VIRTIO_BLK_S_IOERR;
		n = gather(c, c->nread, c->nseg, 0, c->write_len - 1, rq->iov,
		    &len);
		if (len % SECTOR_SIZE != 0 ||
		    !in_range(s, sector, len >> SECTOR_SHIFT))
			return VIRTIO_BLK_S_IOERR;
		if (rw_all(s->fd, false, rq->iov, n,
		    (off_t)(sector << SECTOR_SHIFT)) != 0)
			return VIRTIO_BLK_S_IOERR;
		*written = len + 1;
		return VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_OUT:
		if (s->ro || c->write_len != 1)
			return VIRTIO_BLK_S_IOERR;
		n = gather(c, 0, c->nread, BLK_HDR_SIZE, SIZE_MAX, rq->iov,
		    &len);
		if (len % SECTOR_SIZE != 0 ||
		    !in_range(s, sector, len >> SECTOR_SHIFT))
			return VIRTIO_BLK_S_IOERR;
		if (rw_all(s->fd, true, rq->iov, n,
		    (off_t)(sector << SECTOR_SHIFT)) != 0)
			return VIRTIO_BLK_S_IOERR;
		return VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_FLUSH:
		if (!rq->flush)
			return VIRTIO_BLK_S_UNSUPP;
		if (s->ro)
			return VIRTIO_BLK_S_OK;	/* nothing of ours to flush */
		while (fdatasync(s->fd) != 0) {
			if (errno != EINTR)
				return VIRTIO_BLK_S_IOERR;
		}
		return VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_GET_ID:
		/* Up to 20 bytes, not NUL-terminated when all are used. */
		len = MIN((size_t)c->write_len - 1, sizeof(s->id));
		virtio_chain_write(c, 0, s->id, len);
		*written = len + 1;
		return VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		return blk_ranges(s, rq, type);
	default:
		return VIRTIO_BLK_S_UNSUPP;
	}
}

/* vpool serve: one request on the worker thread. */
static void
blk_serve_cb(void *arg, void *req)
{
	struct blk_req	*rq = req;

	rq->status = blk_serve(arg, rq, &rq->written);
}

/* vpool done: a finished request back to the driver (reactor thread),
 * or dropped after a reset (the queues are gone).  NULL ends a batch. */
static void
blk_done_cb(void *arg, void *req)
{
	struct blk		*s = arg;
	struct virtio_queue	*q = virtio_dev_queue(s->dev, 0);
	struct blk_req		*rq = req;

	if (rq == NULL) {
		if (s->pushed)
			virtio_queue_notify_guest(q);
		s->pushed = false;
		return;
	}
	if (s->drop)
		return;
	*rq->status_p = rq->status;
	virtio_queue_push(q, &rq->chain, rq->written);
	s->pushed = true;
}

/* The status byte: the last byte of the last non-empty writable segment. */
static uint8_t *
status_byte(const struct virtio_chain *c)
{
	unsigned	i;

	for (i = c->nseg; i > c->nread; i--) {
		if (c->seg[i - 1].len > 0)
			return c->seg[i - 1].addr + c->seg[i - 1].len - 1;
	}
	return NULL;
}

/* Pop every available request and queue it for the worker. */
static void
blk_notify(struct virtio_dev *dev, void *priv, unsigned qi)
{
	struct blk		*s = priv;
	struct virtio_queue	*q = virtio_dev_queue(dev, qi);
	struct blk_req		*rq;
	void			*batch[BLK_BATCH];
	unsigned		 n = 0;

	for (;;) {
		rq = vpool_get(s->pool);
		if (virtio_queue_pop(q, &rq->chain) != 1) {
			vpool_put(s->pool, rq);
			break;
		}
		rq->status_p = status_byte(&rq->chain);
		if (rq->status_p == NULL) {
			virtio_dev_fail(dev, "request %u has no status byte",
			    rq->chain.head);
			vpool_put(s->pool, rq);
			break;
		}
		rq->flush = virtio_dev_has(dev, VIRTIO_BLK_F_FLUSH);
		rq->discard = virtio_dev_has(dev, VIRTIO_BLK_F_DISCARD);
		rq->wz = virtio_dev_has(dev, VIRTIO_BLK_F_WRITE_ZEROES);
		batch[n++] = rq;
		if (n == BLK_BATCH) {
			vpool_submit(s->pool, batch, n);
			n = 0;
		}
	}
	vpool_submit(s->pool, batch, n);
}

/* The core dropped the queues: let the I/O in flight finish, then drop
 * its completions (nobody is waiting for them any more). */
static void
blk_reset(struct virtio_dev *dev, void *priv)
{
	struct blk	*s = priv;

	(void)dev;
	s->drop = true;
	vpool_drain(s->pool);
	s->drop = false;
}

static void
blk_config_read(struct virtio_dev *dev, void *priv, uint32_t off, void *data,
    uint32_t len)
{
	struct blk	*s = priv;

	(void)dev;
	memcpy(data, (const uint8_t *)&s->cfg + off, len);
}

/* The file is reopened by the owner on restore; we keep only the
 * capacity, to notice an image that changed size under a snapshot.
 * Requests in flight are completed first. */
static int
blk_save(struct virtio_dev *dev, void *priv, uint8_t **buf, size_t *len)
{
	struct blk	*s = priv;
	uint8_t		 rec[16];
	uint32_t	 v = htole32(BLK_SAVE_VERSION), pad = 0;
	uint64_t	 cap = htole64(s->capacity);

	(void)dev;
	/* A popped request not yet pushed would be lost: finish them all. */
	vpool_drain(s->pool);
	memcpy(rec, &v, 4);
	memcpy(rec + 4, &pad, 4);
	memcpy(rec + 8, &cap, 8);
	*buf = xreallocarray(*buf, *len + sizeof(rec), 1);
	memcpy(*buf + *len, rec, sizeof(rec));
	*len += sizeof(rec);
	return 0;
}

static int
blk_load(struct virtio_dev *dev, void *priv, const uint8_t *buf, size_t len)
{
	struct blk	*s = priv;
	uint32_t	 v;
	uint64_t	 cap;

	(void)dev;
	if (len != 16)
		return -EINVAL;
	memcpy(&v, buf, 4);
	memcpy(&cap, buf + 8, 8);
	if (le32toh(v) != BLK_SAVE_VERSION)
		return -EINVAL;
	if (le64toh(cap) != s->capacity)
		log_warnx("blk: image has %llu sectors, the snapshot saw %llu",
		    (unsigned long long)s->capacity,
		    (unsigned long long)le64toh(cap));
	return 0;
}

static void
blk_free(void *priv)
{
	struct blk	*s = priv;

	vpool_free(s->pool);
	close(s->fd);
	free(s);
}

#define BLK_OPS(feat) {							\
	.name = "blk",							\
	.device_id = VIRTIO_ID_BLOCK,					\
	.nqueues = 1,							\
	.queue_max = BLK_QUEUE_MAX,					\
	.config_size = BLK_CONFIG_SIZE,					\
	.features = (feat),						\
	.notify = blk_notify,						\
	.reset = blk_reset,						\
	.config_read = blk_config_read,					\
	.save = blk_save,						\
	.load = blk_load,						\
	.free = blk_free,						\
}

/* Features are part of the ops table, so read-only and read-write disks
 * get a table each. */
static const struct virtio_dev_ops blk_ops_rw = BLK_OPS(BLK_FEATURES_RW);
static const struct virtio_dev_ops blk_ops_ro = BLK_OPS(BLK_FEATURES_RO);

/* A 20-byte serial that stays the same for the same file: FNV-1a over
 * its device and inode numbers. */
static void
make_id(char id[VIRTIO_BLK_ID_BYTES], const struct stat *st)
{
	uint64_t	h = 0xcbf29ce484222325ULL, v[2];
	char		buf[24];
	size_t		i;

	v[0] = st->st_dev;
	v[1] = st->st_ino;
	for (i = 0; i < sizeof(v); i++) {
		h ^= ((const uint8_t *)v)[i];
		h *= 0x100000001b3ULL;
	}
	snprintf(buf, sizeof(buf), "smx-%016llx", (unsigned long long)h);
	memcpy(id, buf, VIRTIO_BLK_ID_BYTES);
}

static void
fill_config(struct blk *s)
{
	struct virtio_blk_config	*c = &s->cfg;

	memset(c, 0, sizeof(*c));
	c->capacity = htole64(s->capacity);
	c->size_max = htole32(BLK_SIZE_MAX);
	c->seg_max = htole32(BLK_SEG_MAX);
	c->blk_size = htole32(SECTOR_SIZE);
	if (!s->ro) {
		c->max_discard_sectors = htole32(BLK_DISCARD_SECTORS);
		c->max_discard_seg = htole32(BLK_DISCARD_SEGS);
		c->discard_sector_alignment = htole32(BLK_DISCARD_ALIGN);
		c->max_write_zeroes_sectors = htole32(BLK_WZ_SECTORS);
		c->max_write_zeroes_seg = htole32(BLK_WZ_SEGS);
		c->write_zeroes_may_unmap = 1;
	}
}

struct virtio_dev *
virtio_blk_create(const struct virtio_host *h, uint64_t base, uint32_t irq,
    const char *path, bool readonly, char *err, size_t errlen)
{
	struct blk	*s;
	struct stat	 st;
	uint64_t	 bytes;
	int		 fd, saved;

	fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0) {
		saved = errno;
		snprintf(err, errlen, "disk %s: %s%s", path, strerror(saved),
		    saved == EACCES || saved == EROFS ? " (try read-only)" :
		    "");
		errno = saved;
		return NULL;
	}
	if (fstat(fd, &st) != 0) {
		saved = errno;
		snprintf(err, errlen, "disk %s: %s", path, strerror(saved));
		goto err_close_fd;
	}
	if (S_ISREG(st.st_mode))
		bytes = st.st_size;
	else if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &bytes) != 0) {
			saved = errno;
			snprintf(err, errlen, "disk %s: size: %s", path,
			    strerror(saved));
			goto err_close_fd;
		}
	} else {
		saved = EINVAL;
		snprintf(err, errlen, "disk %s: not a regular file or block "
		    "device", path);
		goto err_close_fd;
	}

	s = xcalloc(1, sizeof(*s));
	s->fd = fd;
	s->ro = readonly;
	/* A trailing partial sector is not addressable: round down. */
	s->capacity = bytes >> SECTOR_SHIFT;
	make_id(s->id, &st);
	fill_config(s);
	s->pool = vpool_create(h->r, 1, sizeof(struct blk_req), blk_serve_cb,
	    blk_done_cb, s);
	if (s->pool == NULL) {
		saved = errno;
		snprintf(err, errlen, "disk %s: I/O thread: %s", path,
		    strerror(saved));
		goto err_free;
	}
	s->dev = virtio_mmio_create(h, base, irq,
	    readonly ? &blk_ops_ro : &blk_ops_rw, s);
	if (s->dev == NULL) {
		saved = errno;
		snprintf(err, errlen, "disk %s: virtio device: %s", path,
		    strerror(saved));
		vpool_free(s->pool);
		goto err_free;
	}
	return s->dev;

err_free:
	free(s);
err_close_fd:
	close(fd);
	errno = saved;
	return NULL;
}
