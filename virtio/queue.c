/*
 * Split virtqueues (virtio 1.2 section 2.7), device side.  The rings
 * live in guest memory and the guest may change them at any moment, so
 * every descriptor is copied once into a local before it is checked and
 * used (no double fetch), every index is bounded, and every buffer goes
 * through gmem_ptr().
 */
#include <errno.h>
#include <string.h>

#include "virtio/virtio_impl.h"

/* Ring field addresses (section 2.7.6 / 2.7.8). */
#define AVAIL_FLAGS(vq)		((uint16_t *)((vq)->avail))
#define AVAIL_IDX(vq)		((uint16_t *)((vq)->avail + 2))
#define AVAIL_RING(vq, i)	((uint16_t *)((vq)->avail + 4 + 2 * (i)))
#define USED_EVENT(vq)		AVAIL_RING(vq, (vq)->num)
#define USED_IDX(vq)		((uint16_t *)((vq)->used + 2))
#define USED_ELEM(vq, i)	((uint32_t *)((vq)->used + 4 + 8 * (i)))
#define AVAIL_EVENT(vq)		((uint16_t *)((vq)->used + 4 + 8 * (vq)->num))

int
virtio_queue_enable(struct virtio_queue *vq)
{
	const struct gmem	*mem = vq->dev->host.mem;
	uint16_t		 num = vq->num;
	uint8_t			*desc, *avail, *used;

	if (num == 0 || (num & (num - 1)) != 0 ||
	    num > vq->dev->ops->queue_max)
		return -EINVAL;
	/* Alignment of section 2.7 (table 2.3). */
	if (vq->desc_gpa % 16 != 0 || vq->avail_gpa % 2 != 0 ||
	    vq->used_gpa % 4 != 0)
		return -EINVAL;
	desc = gmem_ptr(mem, vq->desc_gpa, VRING_DESC_SIZE(num));
	avail = gmem_ptr(mem, vq->avail_gpa, VRING_AVAIL_SIZE(num));
	used = gmem_ptr(mem, vq->used_gpa, VRING_USED_SIZE(num));
	if (desc == NULL || avail == NULL || used == NULL)
		return -EFAULT;
	/* The atomics below need host alignment too; guest RAM is mapped
	 * page-aligned, so this only fails on a strange memory setup. */
	if ((uintptr_t)avail % 2 != 0 || (uintptr_t)used % 4 != 0)
		return -EFAULT;
	vq->desc = desc;
	vq->avail = avail;
	vq->used = used;
	vq->last_avail = 0;
	vq->used_idx = 0;
	vq->signalled_used = 0;
	vq->signalled_valid = false;
	vq->ready = true;
	return 0;
}

void
virtio_queue_disable(struct virtio_queue *vq)
{
	vq->ready = false;
	vq->desc = vq->avail = vq->used = NULL;
}

bool
virtio_queue_ready(const struct virtio_queue *vq)
{
	return vq != NULL && vq->ready;
}

uint16_t
virtio_queue_size(const struct virtio_queue *vq)
{
	return vq->num;
}

/* Add one descriptor's buffer to the chain.  NULL or the reason it is
 * malformed. */
static const char *
add_seg(struct virtio_queue *vq, struct virtio_chain *c,
    const struct vring_desc_le *d, bool *seen_write)
{
	struct virtio_seg	*s;
	bool			 write = d->flags & VRING_DESC_F_WRITE;
	uint8_t			*p;

	/* Section 2.7.4.2: device-readable descriptors come first. */
	if (!write && *seen_write)
		return "readable descriptor after a writable one";
	if (write)
		*seen_write = true;
	/* A zero-length buffer carries nothing; its address is not even
	 * looked at (the driver may leave it zero). */
	if (d->len == 0)
		return NULL;
	if (c->nseg == VIRTIO_MAX_CHAIN)
		return "chain has too many segments";
	if ((p = gmem_ptr(vq->dev->host.mem, d->addr, d->len)) == NULL)
		return "buffer outside guest memory";
	if (write) {
		if (d->len > UINT32_MAX - c->write_len)
			return "writable length overflows";
		c->write_len += d->len;
	} else {
		if (d->len > UINT32_MAX - c->read_len)
			return "readable length overflows";
		c->read_len += d->len;
		c->nread++;
	}
	s = &c->seg[c->nseg++];
	s->addr = p;
	s->len = d->len;
	s->write = write;
	return NULL;
}

/* Follow an indirect table (section 2.7.5.3): once, never nested. */
static const char *
walk_indirect(struct virtio_queue *vq, struct virtio_chain *c,
    const struct vring_desc_le *ind, bool *seen_write)
{
	struct vring_desc_le	 d;
	const uint8_t		*table;
	uint32_t		 entries, i = 0, count = 0;
	const char		*why;

	if (!virtio_dev_has(vq->dev, VIRTIO_F_INDIRECT_DESC))
		return "indirect descriptor without INDIRECT_DESC";
	if (ind->flags & VRING_DESC_F_NEXT)
		return "indirect descriptor with NEXT";
	if (ind->len == 0 || ind->len % 16 != 0)
		return "indirect table length not a multiple of 16";
	entries = ind->len / 16;
	if ((table = gmem_ptr(vq->dev->host.mem, ind->addr, ind->len)) ==
	    NULL)
		return "indirect table outside guest memory";
	for (;;) {
		/* More steps than entries means a loop. */
		if (++count > entries)
			return "indirect chain loops";
		memcpy(&d, table + 16 * (size_t)i, sizeof(d));
		if (d.flags & VRING_DESC_F_INDIRECT)
			return "indirect descriptor inside an indirect table";
		if ((why = add_seg(vq, c, &d, seen_write)) != NULL)
			return why;
		if (!(d.flags & VRING_DESC_F_NEXT))
			return NULL;
		if (d.next >= entries)
			return "indirect next out of range";
		i = d.next;
	}
}

/* Gather the chain starting at head. */
static const char *
walk_chain(struct virtio_queue *vq, uint16_t head, struct virtio_chain *c)
{
	struct vring_desc_le	 d;
	unsigned		 count = 0;
	uint16_t		 i = head;
	bool			 seen_write = false;
	const char		*why;

	c->head = head;
	c->nseg = c->nread = 0;
	c->read_len = c->write_len = 0;
	if (head >= vq->num)
		return "head index out of range";
	for (;;) {
		/* A chain longer than the queue must revisit a slot. */
		if (++count > vq->num)
			return "chain longer than the queue (loop)";
		memcpy(&d, vq->desc + 16 * (size_t)i, sizeof(d));
		if (d.flags & VRING_DESC_F_INDIRECT)
			return walk_indirect(vq, c, &d, &seen_write);
		if ((why = add_seg(vq, c, &d, &seen_write)) != NULL)
			return why;
		if (!(d.flags & VRING_DESC_F_NEXT))
			return NULL;
		if (d.next >= vq->num)
			return "next index out of range";
		i = d.next;
	}
}

int
virtio_queue_pop(struct virtio_queue *vq, struct virtio_chain *c)
{
	struct virtio_dev	*dev = vq->dev;
	bool			 event_idx;
	uint16_t		 avail_idx, pending, head;
	const char		*why;

	if (!vq->ready || !virtio_dev_live(dev))
		return 0;
	event_idx = virtio_dev_has(dev, VIRTIO_F_EVENT_IDX);
	/* Acquire: the ring entry and descriptors read below were written
	 * by the driver before it published avail->idx (its write barrier
	 * pairs with this). */
	avail_idx = __atomic_load_n(AVAIL_IDX(vq), __ATOMIC_ACQUIRE);
	pending = avail_idx - vq->last_avail;
	if (pending == 0 && event_idx) {
		/*
		 * Going idle: ask to be kicked for the next buffer
		 * (avail_event = what we consumed), then look again.  The
		 * full barrier orders our avail_event store before the
		 * re-read of avail->idx (store-then-load needs more than
		 * acquire/release): a driver that published a buffer
		 * before seeing the new avail_event skipped its kick, and
		 * we must see that buffer now.
		 */
		__atomic_store_n(AVAIL_EVENT(vq), vq->last_avail,
		    __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		avail_idx = __atomic_load_n(AVAIL_IDX(vq), __ATOMIC_ACQUIRE);
		pending = avail_idx - vq->last_avail;
	}
	if (pending == 0)
		return 0;
	if (pending > vq->num) {
		virtio_dev_fail(dev, "queue %u: avail idx %u jumped from %u",
		    vq->index, avail_idx, vq->last_avail);
		return -EINVAL;
	}
	head = __atomic_load_n(AVAIL_RING(vq, vq->last_avail & (vq->num - 1)),
	    __ATOMIC_RELAXED);
	if ((why = walk_chain(vq, head, c)) != NULL) {
		virtio_dev_fail(dev, "queue %u: chain at %u: %s", vq->index,
		    head, why);
		return -EINVAL;
	}
	vq->last_avail++;
	/* Kick suppression: the driver need not kick until it adds past
	 * what we have taken. */
	if (event_idx)
		__atomic_store_n(AVAIL_EVENT(vq), vq->last_avail,
		    __ATOMIC_RELAXED);
	return 1;
}

void
virtio_queue_push(struct virtio_queue *vq, const struct virtio_chain *c,
    uint32_t written)
{
	uint32_t	*elem;

	if (!vq->ready || virtio_dev_needs_reset(vq->dev))
		return;
	if (written > c->write_len)
		written = c->write_len;
	elem = USED_ELEM(vq, vq->used_idx & (vq->num - 1));
	__atomic_store_n(&elem[0], (uint32_t)c->head, __ATOMIC_RELAXED);
	__atomic_store_n(&elem[1], written, __ATOMIC_RELAXED);
	vq->used_idx++;
	/* Release: the used element must be visible before the used->idx
	 * that publishes it (pairs with the driver's read barrier after
	 * it reads used->idx). */
	__atomic_store_n(USED_IDX(vq), vq->used_idx, __ATOMIC_RELEASE);
}

/* Section 2.7.7.2: interrupt when new used idx passed used_event, i.e.
 * used_event lies in [old, new). */
static bool
need_event(uint16_t event, uint16_t new, uint16_t old)
{
	return (uint16_t)(new - event - 1) < (uint16_t)(new - old);
}

void
virtio_queue_notify_guest(struct virtio_queue *vq)
{
	uint16_t	new, old, event, flags;
	bool		valid;

	if (!vq->ready || virtio_dev_needs_reset(vq->dev))
		return;
	new = vq->used_idx;
	old = vq->signalled_used;
	valid = vq->signalled_valid;
	/* Nothing used since the last interrupt (or since the queue was
	 * enabled, when signalled_used starts equal to used_idx). */
	if (new == old)
		return;
	vq->signalled_used = new;
	vq->signalled_valid = true;
	/*
	 * Full barrier: our used->idx store must be visible before we read
	 * the driver's suppression state.  The driver re-enables
	 * interrupts (flags / used_event), barriers, then re-reads
	 * used->idx; with store-then-load ordering on both sides at least
	 * one of us sees the other's write and no wakeup is lost.
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (virtio_dev_has(vq->dev, VIRTIO_F_EVENT_IDX)) {
		event = __atomic_load_n(USED_EVENT(vq), __ATOMIC_RELAXED);
		if (valid && !need_event(event, new, old))
			return;
	} else {
		flags = __atomic_load_n(AVAIL_FLAGS(vq), __ATOMIC_RELAXED);
		if (flags & VRING_AVAIL_F_NO_INTERRUPT)
			return;
	}
	virtio_dev_raise(vq->dev, VIRTIO_ISR_USED);
}

/* Copy across segments [first, end) starting at byte off of that range;
 * to_chain picks the direction. */
static size_t
chain_copy(const struct virtio_chain *c, unsigned first, unsigned end,
    size_t off, void *buf, size_t len, bool to_chain)
{
	uint8_t		*b = buf;
	size_t		 done = 0, n;
	unsigned	 i;

	for (i = first; i < end && done < len; i++) {
		if (off >= c->seg[i].len) {
			off -= c->seg[i].len;
			continue;
		}
		n = MIN(c->seg[i].len - off, len - done);
		if (to_chain)
			memcpy(c->seg[i].addr + off, b + done, n);
		else
			memcpy(b + done, c->seg[i].addr + off, n);
		done += n;
		off = 0;
	}
	return done;
}

size_t
virtio_chain_read(const struct virtio_chain *c, size_t off, void *dst,
    size_t len)
{
	return chain_copy(c, 0, c->nread, off, dst, len, false);
}

size_t
virtio_chain_write(const struct virtio_chain *c, size_t off,
    const void *src, size_t len)
{
	return chain_copy(c, c->nread, c->nseg, off, (void *)src, len, true);
}
