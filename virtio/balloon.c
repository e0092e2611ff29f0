/*
 * virtio-balloon (virtio 1.2 section 5.5): the host asks the guest to
 * give back memory (num_pages), the guest hands over page frame numbers
 * on the inflate queue and the host drops the backing pages; free page
 * reporting does the same for ranges the guest's allocator has free; the
 * stats queue carries the guest's memory statistics.
 *
 * Queue numbering follows Linux (drivers/virtio/virtio_balloon.c and
 * virtio_mmio.c's find_vqs): queues that a negotiated feature leaves out
 * take no index, so inflateq 0, deflateq 1, then statsq if STATS_VQ,
 * then (were it offered) free_page_vq, then reporting_vq if REPORTING.
 * We never offer FREE_PAGE_HINT, so reporting is 2 or 3.
 */
#include <errno.h>
#include <string.h>
#include <endian.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/virtio_balloon.h>

#include "virtio/virtio.h"

#define BALLOON_QUEUES		4	/* inflate, deflate, stats, reporting */
/* Linux's page reporting wants at least 32 descriptors in its queue. */
#define BALLOON_QUEUE_MAX	256
#define BALLOON_CONFIG_SIZE	16	/* up to poison_val */
#define BALLOON_PAGE		(1ULL << VIRTIO_BALLOON_PFN_SHIFT)
#define BALLOON_PFN_BATCH	256	/* PFNs read from a chain at a time */
#define BALLOON_STAT_SIZE	10	/* le16 tag + le64 value, packed */
#define BALLOON_STATS_MAX	256	/* entries parsed per buffer */

enum bq { BQ_INFLATE, BQ_DEFLATE, BQ_STATS, BQ_REPORTING, BQ_NONE };

struct balloon {
	struct virtio_dev	*dev;
	uint32_t		 num_pages;	/* the host's target */
	uint32_t		 actual;	/* what the guest says it holds */
	uintptr_t		 host_page;	/* host page size */
	struct virtio_balloon_stats st;
	bool			 warned_pfn;

	/* The driver's stats buffer, kept until we want new stats
	 * (returning it is the request, section 5.5.6.3). */
	bool			 stats_held;
	struct virtio_chain	 stats_chain;
	struct reactor_timer	*stats_timer;
};

/* Which role queue q plays under the negotiated features. */
static enum bq
queue_role(struct virtio_dev *dev, unsigned q)
{
	unsigned	next = 2;

	if (q == 0)
		return BQ_INFLATE;
	if (q == 1)
		return BQ_DEFLATE;
	if (virtio_dev_has(dev, VIRTIO_BALLOON_F_STATS_VQ)) {
		if (q == next)
			return BQ_STATS;
		next++;
	}
	if (virtio_dev_has(dev, VIRTIO_BALLOON_F_REPORTING) && q == next)
		return BQ_REPORTING;
	return BQ_NONE;
}

static struct virtio_queue *
role_queue(struct virtio_dev *dev, enum bq role)
{
	unsigned	q;

	for (q = 0; q < BALLOON_QUEUES; q++)
		if (queue_role(dev, q) == role)
			return virtio_dev_queue(dev, q);
	return NULL;
}

/* Give the pages under [p, p + len) back to the host kernel.  Only whole
 * host pages inside the range are dropped: a partial page may hold data
 * the guest still uses.  The range was bounds-checked by gmem. */
static void
drop_range(struct balloon *b, uint8_t *p, uint64_t len)
{
	uintptr_t	start, end;

	start = ALIGN_UP((uintptr_t)p, b->host_page);
	end = ALIGN_DOWN((uintptr_t)p + len, b->host_page);
	if (end <= start)
		return;
	if (madvise((void *)start, end - start, MADV_DONTNEED) == -1)
		log_warn("balloon: madvise %#lx+%#lx", (unsigned long)start,
		    (unsigned long)(end - start));
	else
		b->st.dropped_bytes += end - start;
}

/*
 * Inflate: the chain holds le32 PFNs of 4 KiB pages.  Runs of PFNs whose
 * host addresses are contiguous become one madvise.  A PFN outside guest
 * RAM is ignored (logged once): it can free nothing of ours.
 */
static void
inflate_chain(struct balloon *b, const struct gmem *mem,
    const struct virtio_chain *c)
{
	uint32_t	 pfn[BALLOON_PFN_BATCH];
	uint8_t		*run = NULL, *p;
	uint64_t	 run_len = 0;
	size_t		 off, n, i;

	for (off = 0; off + 4 <= c->read_len; off += n * 4) {
		n = MIN((c->read_len - off) / 4, BALLOON_PFN_BATCH);
		if (virtio_chain_read(c, off, pfn, n * 4) != n * 4)
			break;
		for (i = 0; i < n; i++) {
			b->st.inflated++;
			p = gmem_ptr(mem, (uint64_t)le32toh(pfn[i]) <<
			    VIRTIO_BALLOON_PFN_SHIFT, BALLOON_PAGE);
			if (p == NULL) {
				b->st.ignored++;
				if (!b->warned_pfn)
					log_warnx("balloon: pfn %#x outside "
					    "guest RAM ignored",
					    le32toh(pfn[i]));
				b->warned_pfn = true;
				continue;
			}
			if (run != NULL && p == run + run_len) {
				run_len += BALLOON_PAGE;
				continue;
			}
			if (run != NULL)
				drop_range(b, run, run_len);
			run = p;
			run_len = BALLOON_PAGE;
		}
	}
	if (run != NULL)
		drop_range(b, run, run_len);
}

/* Free page reporting (section 5.5.6.6): every descriptor is a free
 * guest range (Linux posts them device-writable); drop each. */
static void
report_chain(struct balloon *b, const struct virtio_chain *c)
{
	unsigned	i;

	for (i = 0; i < c->nseg; i++) {
		b->st.reported += c->seg[i].len;
		drop_range(b, c->seg[i].addr, c->seg[i].len);
	}
}

/* Parse a stats buffer: packed {le16 tag, le64 val} entries. */
static void
stats_parse(struct balloon *b, const struct virtio_chain *c)
{
	uint8_t		e[BALLOON_STAT_SIZE];
	uint16_t	tag;
	uint64_t	val;
	size_t		off, n = 0;

	for (off = 0; off + BALLOON_STAT_SIZE <= c->read_len &&
	    n < BALLOON_STATS_MAX; off += BALLOON_STAT_SIZE, n++) {
		if (virtio_chain_read(c, off, e, sizeof(e)) != sizeof(e))
			break;
		memcpy(&tag, e, 2);
		memcpy(&val, e + 2, 8);
		tag = le16toh(tag);
		if (tag >= VIRTIO_BALLOON_NSTATS)
			continue;	/* a newer driver's statistic */
		b->st.val[tag] = le64toh(val);
		b->st.present |= 1U << tag;
	}
	b->st.generation++;
	b->st.updated_ns = now_ns();
}

static void
stats_queue(struct balloon *b, struct virtio_queue *vq)
{
	struct virtio_chain	*c;
	bool			 pushed = false;
	int			 rc;

	c = xmalloc(sizeof(*c));
	while ((rc = virtio_queue_pop(vq, c)) == 1) {
		/* A driver that posts a second buffer before we returned
		 * the first: hand the older one back, keep the newest. */
		if (b->stats_held) {
			virtio_queue_push(vq, &b->stats_chain, 0);
			pushed = true;
		}
		stats_parse(b, c);
		memcpy(&b->stats_chain, c, sizeof(*c));
		b->stats_held = true;
	}
	free(c);
	if (pushed)
		virtio_queue_notify_guest(vq);
}

/* Inflate, deflate and reporting: consume every chain, return it. */
static void
page_queue(struct balloon *b, struct virtio_queue *vq, enum bq role)
{
	struct virtio_chain	*c;
	bool			 pushed = false;
	int			 rc;

	c = xmalloc(sizeof(*c));
	while ((rc = virtio_queue_pop(vq, c)) == 1) {
		switch (role) {
		case BQ_INFLATE:
			inflate_chain(b, virtio_dev_mem(b->dev), c);
			break;
		case BQ_DEFLATE:
			/* Pages fault back in on their own. */
			b->st.deflated += c->read_len / 4;
			break;
		default:
			report_chain(b, c);
			break;
		}
		virtio_queue_push(vq, c, 0);
		pushed = true;
	}
	free(c);
	if (pushed)
		virtio_queue_notify_guest(vq);
}

static void
balloon_notify(struct virtio_dev *dev, void *priv, unsigned q)
{
	struct balloon		*b = priv;
	struct virtio_queue	*vq;
	enum bq			 role;

	role = queue_role(dev, q);
	if (role == BQ_NONE || (vq = virtio_dev_queue(dev, q)) == NULL)
		return;		/* a queue the features left out */
	if (role == BQ_STATS)
		stats_queue(b, vq);
	else
		page_queue(b, vq, role);
}


static void
balloon_reset(struct virtio_dev *dev, void *priv)
{
	struct balloon	*b = priv;

	(void)dev;
	/* The queues are gone, and with them the held stats buffer.  The
	 * target is the host's wish and survives a guest reset. */
	b->stats_held = false;
	b->actual = 0;
}

static void
config_image(const struct balloon *b, uint8_t img[BALLOON_CONFIG_SIZE])
{
	uint32_t	v;

	memset(img, 0, BALLOON_CONFIG_SIZE);
	v = htole32(b->num_pages);
	memcpy(img, &v, 4);
	v = htole32(b->actual);
	memcpy(img + 4, &v, 4);
}

static void
balloon_config_read(struct virtio_dev *dev, void *priv, uint32_t off,
    void *data, uint32_t len)
{
	uint8_t	img[BALLOON_CONFIG_SIZE];

	(void)dev;
	config_image(priv, img);
	memcpy(data, img + off, len);
}

/* Only `actual` is the driver's to write; the rest is read-only. */
static void
balloon_config_write(struct virtio_dev *dev, void *priv, uint32_t off,
    const void *data, uint32_t len)
{
	struct balloon	*b = priv;
	uint8_t		 img[BALLOON_CONFIG_SIZE];
	uint32_t	 v;

	(void)dev;
	config_image(b, img);
	memcpy(img + off, data, len);
	memcpy(&v, img + 4, 4);
	b->actual = le32toh(v);
	log_debug("balloon: guest holds %u pages (target %u)", b->actual,
	    b->num_pages);
}

/* Snapshot record: version, target, actual, stats-held + head. */
#define BALLOON_SAVE_VERSION	1

struct balloon_record {
	uint32_t	version;
	uint32_t	num_pages;
	uint32_t	actual;
	uint16_t	stats_held;
	uint16_t	stats_head;
};

static int
balloon_save(struct virtio_dev *dev, void *priv, uint8_t **buf, size_t *len)
{
	struct balloon		*b = priv;
	struct balloon_record	 rec = {
		.version = BALLOON_SAVE_VERSION,
		.num_pages = b->num_pages,
		.actual = b->actual,
		.stats_held = b->stats_held,
		.stats_head = b->stats_held ? b->stats_chain.head : 0,
	};

	(void)dev;
	*buf = xreallocarray(*buf, *len + sizeof(rec), 1);
	memcpy(*buf + *len, &rec, sizeof(rec));
	*len += sizeof(rec);
	return 0;
}

/* The held stats buffer is restored by its head alone: returning it
 * needs nothing else (its data was parsed before the snapshot). */
static int
balloon_load(struct virtio_dev *dev, void *priv, const uint8_t *buf,
    size_t len)
{
	struct balloon		*b = priv;
	struct balloon_record	 rec;

	(void)dev;
	if (len != sizeof(rec))
		return -EINVAL;
	memcpy(&rec, buf, sizeof(rec));
	if (rec.version != BALLOON_SAVE_VERSION || rec.stats_held > 1)
		return -EINVAL;
	b->num_pages = rec.num_pages;
	b->actual = rec.actual;
	b->stats_held = rec.stats_held;
	memset(&b->stats_chain, 0, sizeof(b->stats_chain));
	b->stats_chain.head = rec.stats_head;
	return 0;
}

static void
balloon_free(void *priv)
{
	struct balloon	*b = priv;

	if (b->stats_timer != NULL)
		reactor_del_timer(b->stats_timer);
	free(b);
}

static const struct virtio_dev_ops balloon_ops = {
	.name = "balloon",
	.device_id = VIRTIO_ID_BALLOON,
	.nqueues = BALLOON_QUEUES,
	.queue_max = BALLOON_QUEUE_MAX,
	.config_size = BALLOON_CONFIG_SIZE,
	.features = (1ULL << VIRTIO_BALLOON_F_STATS_VQ) |
	    (1ULL << VIRTIO_BALLOON_F_DEFLATE_ON_OOM) |
	    (1ULL << VIRTIO_BALLOON_F_REPORTING),
	.notify = balloon_notify,
	.reset = balloon_reset,
	.config_read = balloon_config_read,
	.config_write = balloon_config_write,
	.save = balloon_save,
	.load = balloon_load,
	.free = balloon_free,
};

struct virtio_dev *
virtio_balloon_create(const struct virtio_host *h, uint64_t base,
    uint32_t irq)
{
	struct balloon		*b;
	struct virtio_dev	*dev;
	long			 pg;

	b = xcalloc(1, sizeof(*b));
	pg = sysconf(_SC_PAGESIZE);
	b->host_page = pg > 0 ? (uintptr_t)pg : 4096;
	if ((dev = virtio_mmio_create(h, base, irq, &balloon_ops, b)) ==
	    NULL) {
		free(b);
		return NULL;
	}
	b->dev = dev;
	return dev;
}

void
virtio_balloon_set_target(struct virtio_dev *dev, uint32_t pages)
{
	struct balloon	*b = virtio_dev_priv(dev);

	if (b->num_pages == pages)
		return;
	b->num_pages = pages;
	virtio_dev_config_changed(dev);
}

uint32_t
virtio_balloon_actual(struct virtio_dev *dev)
{
	struct balloon	*b = virtio_dev_priv(dev);

	return b->actual;
}

int
virtio_balloon_stats(struct virtio_dev *dev, struct virtio_balloon_stats *st)
{
	struct balloon	*b = virtio_dev_priv(dev);

	*st = b->st;
	return b->st.generation > 0 ? 0 : -ENODATA;
}

int
virtio_balloon_request_stats(struct virtio_dev *dev)
{
	struct balloon		*b = virtio_dev_priv(dev);
	struct virtio_queue	*vq;

	if (!virtio_dev_has(dev, VIRTIO_BALLOON_F_STATS_VQ))
		return -ENOTSUP;
	if (!b->stats_held ||
	    (vq = role_queue(dev, BQ_STATS)) == NULL ||
	    !virtio_queue_ready(vq))
		return -EAGAIN;
	b->stats_held = false;
	virtio_queue_push(vq, &b->stats_chain, 0);
	virtio_queue_notify_guest(vq);
	return 0;
}

static void
stats_timer_cb(void *arg)
{
	struct balloon	*b = arg;

	/* -EAGAIN: the previous request is still unanswered; fine. */
	(void)virtio_balloon_request_stats(b->dev);
}

int
virtio_balloon_stats_interval(struct virtio_dev *dev, unsigned ms)
{
	struct balloon	*b = virtio_dev_priv(dev);

	if (b->stats_timer != NULL) {
		reactor_del_timer(b->stats_timer);
		b->stats_timer = NULL;
	}
	if (ms == 0)
		return 0;
	b->stats_timer = reactor_add_timer(virtio_dev_reactor(dev),
	    (uint64_t)ms * 1000, true, stats_timer_cb, b);
	return b->stats_timer != NULL ? 0 : -errno;
}
