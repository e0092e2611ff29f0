/*
 * A polled virtio-mmio driver for testguest (virtio 1.2 section 4.2,
 * version 2 registers; split virtqueues, section 2.7).
 *
 * Devices come from "virtio_mmio.device=<size>@<base>:<irq>" words on the
 * command line, as Linux takes them.  No interrupts are taken: the driver
 * spins on the used ring with a TSC bound and acknowledges
 * InterruptStatus itself, so the (level-triggered) line drops again.
 *
 * Queue rings and buffers come from a static pool that vdev_open() resets:
 * one device is open at a time, and vdev_close() resets it so it stops
 * using the pool before the next test reuses it.
 */
#include "testguest.h"

#define MMIO_MAGIC		0x000
#define MMIO_VERSION		0x004
#define MMIO_DEVICE_ID		0x008
#define MMIO_VENDOR_ID		0x00c
#define MMIO_DEV_FEATURES	0x010
#define MMIO_DEV_FEATURES_SEL	0x014
#define MMIO_DRV_FEATURES	0x020
#define MMIO_DRV_FEATURES_SEL	0x024
#define MMIO_QUEUE_SEL		0x030
#define MMIO_QUEUE_NUM_MAX	0x034
#define MMIO_QUEUE_NUM		0x038
#define MMIO_QUEUE_READY	0x044
#define MMIO_QUEUE_NOTIFY	0x050
#define MMIO_INT_STATUS		0x060
#define MMIO_INT_ACK		0x064
#define MMIO_STATUS		0x070
#define MMIO_QUEUE_DESC		0x080	/* low, high at +4 */
#define MMIO_QUEUE_DRIVER	0x090
#define MMIO_QUEUE_DEVICE	0x0a0
#define MMIO_CONFIG_GEN		0x0fc
#define MMIO_CONFIG		0x100

#define MMIO_MAGIC_VALUE	0x74726976U	/* "virt" */

#define STATUS_ACKNOWLEDGE	0x01
#define STATUS_DRIVER		0x02
#define STATUS_DRIVER_OK	0x04
#define STATUS_FEATURES_OK	0x08
#define STATUS_NEEDS_RESET	0x40
#define STATUS_FAILED		0x80

#define DESC_F_NEXT		1
#define DESC_F_WRITE		2
#define DESC_F_INDIRECT		4

/* The MMIO windows must sit in the top GiB, which start.S maps uncached. */
#define UNCACHED_START		0xc0000000UL
#define UNCACHED_END		0x100000000UL

#define MAX_DECLARED		8
#define POOL_SIZE		(48 * 1024)
#define RESET_SPINS		100000
#define STATUS_CHECK_EVERY	65536	/* spins between Status reads */

/* One page per queue: descriptors, avail, used, indirect tables. */
struct vq_page {
	struct vdesc	desc[VQ_MAX_SIZE];
	struct vavail	avail;
	uint8_t		pad0[64 - sizeof(struct vavail) % 64];
	struct vused	used;
	uint8_t		pad1[64 - sizeof(struct vused) % 64];
	struct vdesc	ind[VQ_MAX_SIZE][VQ_IND_MAX];
};

_Static_assert(sizeof(struct vq_page) <= 4096, "vq_page exceeds a page");

struct declared {
	uint64_t	base;
	uint64_t	size;
	uint32_t	irq;
};

static struct declared declared[MAX_DECLARED];
static unsigned ndeclared;

static uint8_t pool[POOL_SIZE] __attribute__((aligned(4096)));
static size_t pool_used;
static int pool_keep;		/* vmem_keep(): devices share the pool */

void
vmem_keep(void)
{
	pool_keep = 1;
}

static uint32_t
reg(const struct vdev *d, uint32_t off)
{
	return mmio_read32(d->base + off);
}

static void
reg_write(const struct vdev *d, uint32_t off, uint32_t v)
{
	mmio_write32(d->base + off, v);
}

static void
reg_write64(const struct vdev *d, uint32_t off, uint64_t v)
{
	reg_write(d, off, (uint32_t)v);
	reg_write(d, off + 4, (uint32_t)(v >> 32));
}

/* Full barrier: ring stores before the index store the device reads, and
 * the index store before the notify (section 2.7.13). */
static inline void
mb(void)
{
	__asm__ volatile("lock; addl $0, (%%rsp)" ::: "memory", "cc");
}

static inline void
barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

void *
vmem_alloc(size_t size, size_t align)
{
	size_t off = (pool_used + align - 1) & ~(align - 1);

	if (off + size > POOL_SIZE)
		tg_fail("virtio: buffer pool exhausted (%lu of %u bytes)",
		    (uint64_t)(off + size), POOL_SIZE);
	pool_used = off + size;
	memset(pool + off, 0, size);
	return pool + off;
}

/* "4K", "0x1000", "512": Linux memparse without the rarer suffixes. */
static int
parse_num(const char **sp, uint64_t *out, int suffix)
{
	const char *s = *sp;
	uint64_t v = 0, base = 10, dig;
	int n = 0;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	for (;; s++, n++) {
		if (*s >= '0' && *s <= '9')
			dig = (uint64_t)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			dig = (uint64_t)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			dig = (uint64_t)(*s - 'A' + 10);
		else
			break;
		if (v > (UINT64_MAX - dig) / base)
			return -1;
		v = v * base + dig;
	}
	if (n == 0)
		return -1;
	if (suffix && (*s == 'K' || *s == 'k')) {
		v <<= 10;
		s++;
	} else if (suffix && (*s == 'M' || *s == 'm')) {
		v <<= 20;
		s++;
	} else if (suffix && (*s == 'G' || *s == 'g')) {
		v <<= 30;
		s++;
	}
	*sp = s;
	*out = v;
	return 0;
}

void
vdev_declare(const char *arg)
{
	struct declared *dc;
	const char *s = arg;
	uint64_t irq;

	if (ndeclared == MAX_DECLARED)
		tg_fail("virtio: more than %u virtio_mmio.device words",
		    MAX_DECLARED);
	dc = &declared[ndeclared];
	if (parse_num(&s, &dc->size, 1) != 0 || *s++ != '@' ||
	    parse_num(&s, &dc->base, 0) != 0 || *s++ != ':' ||
	    parse_num(&s, &irq, 0) != 0 || (*s != '\0' && *s != ':'))
		tg_fail("virtio: bad virtio_mmio.device=%s "
		    "(want <size>@<base>:<irq>)", arg);
	dc->irq = (uint32_t)irq;
	if (dc->size < 0x100 + 4 || dc->base < UNCACHED_START ||
	    dc->base + dc->size > UNCACHED_END || (dc->base & 3) != 0)
		tg_fail("virtio: window 0x%lx+0x%lx is not inside the uncached "
		    "0x%lx-0x%lx range start.S maps", dc->base, dc->size,
		    UNCACHED_START, UNCACHED_END);
	ndeclared++;
}

static void
check_status(const struct vdev *d, const char *when)
{
	uint32_t st = reg(d, MMIO_STATUS);

	if (st & (STATUS_NEEDS_RESET | STATUS_FAILED))
		tg_fail("%s: device status 0x%x (NEEDS_RESET/FAILED) %s",
		    d->name, st, when);
}

static void
reset(const struct vdev *d)
{
	unsigned i;

	reg_write(d, MMIO_STATUS, 0);
	for (i = 0; i < RESET_SPINS; i++)
		if (reg(d, MMIO_STATUS) == 0)
			return;
	tg_fail("%s: Status still 0x%x after reset", d->name,
	    reg(d, MMIO_STATUS));
}

static uint64_t
read_features(const struct vdev *d)
{
	uint64_t f;

	reg_write(d, MMIO_DEV_FEATURES_SEL, 1);
	f = (uint64_t)reg(d, MMIO_DEV_FEATURES) << 32;
	reg_write(d, MMIO_DEV_FEATURES_SEL, 0);
	return f | reg(d, MMIO_DEV_FEATURES);
}

void
vdev_open(struct vdev *d, uint32_t id, const char *name, uint64_t want)
{
	const struct declared *dc;
	struct vdev probe;
	unsigned i;
	uint32_t ver;

	memset(d, 0, sizeof(*d));
	for (i = 0; i < ndeclared; i++) {
		dc = &declared[i];
		memset(&probe, 0, sizeof(probe));
		probe.base = dc->base;
		if (reg(&probe, MMIO_MAGIC) != MMIO_MAGIC_VALUE) {
			tg_printf("virtio: no magic at 0x%lx (reads 0x%x)\n",
			    dc->base, reg(&probe, MMIO_MAGIC));
			continue;
		}
		if (reg(&probe, MMIO_DEVICE_ID) == id)
			break;
	}
	if (i == ndeclared)
		tg_fail("no virtio-%s device", name);

	d->name = name;
	d->base = dc->base;
	d->irq = dc->irq;
	d->id = id;
	ver = reg(d, MMIO_VERSION);
	if (ver != 2)
		tg_fail("%s: virtio-mmio version %u at 0x%lx, need 2 (QEMU: "
		    "-global virtio-mmio.force-legacy=false)", name, ver, d->base);
	tg_printf("%s: device %u vendor 0x%x at 0x%lx irq %u\n", name, id,
	    reg(d, MMIO_VENDOR_ID), d->base, d->irq);

	/* Section 3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK. */
	reset(d);
	if (!pool_keep)
		pool_used = 0;
	reg_write(d, MMIO_STATUS, STATUS_ACKNOWLEDGE);
	reg_write(d, MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
	d->offered = read_features(d);
	if (!(d->offered & VBIT(VIRTIO_F_VERSION_1)))
		tg_fail("%s: device does not offer VERSION_1 (features 0x%lx)",
		    name, d->offered);
	d->features = d->offered & (want | VBIT(VIRTIO_F_VERSION_1));
	tg_printf("%s: features offered 0x%lx accepted 0x%lx\n", name,
	    d->offered, d->features);
	reg_write(d, MMIO_DRV_FEATURES_SEL, 1);
	reg_write(d, MMIO_DRV_FEATURES, (uint32_t)(d->features >> 32));
	reg_write(d, MMIO_DRV_FEATURES_SEL, 0);
	reg_write(d, MMIO_DRV_FEATURES, (uint32_t)d->features);
	reg_write(d, MMIO_STATUS,
	    STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
	if (!(reg(d, MMIO_STATUS) & STATUS_FEATURES_OK))
		tg_fail("%s: device cleared FEATURES_OK (accepted 0x%lx)",
		    name, d->features);
}

struct vq *
vdev_queue(struct vdev *d, unsigned q)
{
	struct vq *vq;
	struct vq_page *pg;
	uint32_t max;
	uint16_t size, i;

	if (q >= VDEV_MAX_QUEUES)
		tg_fail("%s: queue %u beyond the driver's %u", d->name, q,
		    VDEV_MAX_QUEUES);
	vq = &d->q[q];
	reg_write(d, MMIO_QUEUE_SEL, q);
	if (reg(d, MMIO_QUEUE_READY) != 0)
		tg_fail("%s: queue %u is ready before setup", d->name, q);
	max = reg(d, MMIO_QUEUE_NUM_MAX);
	if (max == 0)
		tg_fail("%s: queue %u not available (QueueNumMax 0)", d->name,
		    q);
	for (size = VQ_MAX_SIZE; size > max; size /= 2)
		;

	pg = vmem_alloc(sizeof(*pg), 4096);
	vq->index = q;
	vq->size = size;
	vq->desc = pg->desc;
	vq->avail = &pg->avail;
	vq->used = &pg->used;
	vq->ind = pg->ind;
	vq->last_used = 0;
	vq->avail_idx = 0;
	for (i = 0; i < size; i++) {
		pg->desc[i].next = (uint16_t)(i + 1);
		vq->cookie[i] = NULL;
		vq->inflight[i] = 0;
	}
	vq->free_head = 0;
	vq->nfree = size;

	reg_write(d, MMIO_QUEUE_NUM, size);
	reg_write64(d, MMIO_QUEUE_DESC, (uint64_t)(uintptr_t)pg->desc);
	reg_write64(d, MMIO_QUEUE_DRIVER, (uint64_t)(uintptr_t)&pg->avail);
	reg_write64(d, MMIO_QUEUE_DEVICE, (uint64_t)(uintptr_t)&pg->used);
	reg_write(d, MMIO_QUEUE_READY, 1);
	if (reg(d, MMIO_QUEUE_READY) != 1)
		tg_fail("%s: queue %u did not become ready", d->name, q);
	return vq;
}

void
vdev_driver_ok(struct vdev *d)
{
	reg_write(d, MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER |
	    STATUS_FEATURES_OK | STATUS_DRIVER_OK);
	check_status(d, "after DRIVER_OK");
}

void
vdev_close(struct vdev *d)
{
	if (d->nused > 0 && !(d->isr_seen & VIRTIO_INT_USED))
		tg_fail("%s: %u buffers used but InterruptStatus never showed "
		    "a used-buffer interrupt", d->name, d->nused);
	if (d->nused > 0)
		tg_printf("%s: used-buffer interrupt seen (InterruptStatus "
		    "bits 0x%x)\n", d->name, d->isr_seen);
	reset(d);
	vdev_irq_ack(d);
	pool_used = 0;
}

uint32_t
vdev_irq_ack(const struct vdev *d)
{
	uint32_t st = reg(d, MMIO_INT_STATUS);

	if (st != 0)
		reg_write(d, MMIO_INT_ACK, st);
	return st;
}

int
vdev_has(const struct vdev *d, unsigned bit)
{
	return (d->features & VBIT(bit)) != 0;
}

int
vdev_offers(const struct vdev *d, unsigned bit)
{
	return (d->offered & VBIT(bit)) != 0;
}

uint8_t
vdev_cfg8(const struct vdev *d, uint32_t off)
{
	return *(volatile uint8_t *)(d->base + MMIO_CONFIG + off);
}

uint16_t
vdev_cfg16(const struct vdev *d, uint32_t off)
{
	return *(volatile uint16_t *)(d->base + MMIO_CONFIG + off);
}

uint32_t
vdev_cfg32(const struct vdev *d, uint32_t off)
{
	return reg(d, MMIO_CONFIG + off);
}

/* Two 32-bit reads; ConfigGeneration tells whether they tore (4.2.2.2). */
uint64_t
vdev_cfg64(const struct vdev *d, uint32_t off)
{
	uint32_t gen, lo, hi;
	unsigned tries;

	for (tries = 0; tries < 100; tries++) {
		gen = reg(d, MMIO_CONFIG_GEN);
		lo = reg(d, MMIO_CONFIG + off);
		hi = reg(d, MMIO_CONFIG + off + 4);
		if (reg(d, MMIO_CONFIG_GEN) == gen)
			return ((uint64_t)hi << 32) | lo;
	}
	tg_fail("%s: ConfigGeneration keeps changing", d->name);
}

uint32_t
vdev_cfg_gen(const struct vdev *d)
{
	return reg(d, MMIO_CONFIG_GEN);
}

void
vdev_cfg_write32(const struct vdev *d, uint32_t off, uint32_t v)
{
	reg_write(d, MMIO_CONFIG + off, v);
}

/* Takes n descriptors off the free list, linked by NEXT in order. */
static uint16_t
take_descs(struct vq *q, unsigned n)
{
	uint16_t head = q->free_head, i = head;
	unsigned k;

	for (k = 1; k < n; k++) {
		q->desc[i].flags = DESC_F_NEXT;
		i = q->desc[i].next;
	}
	q->desc[i].flags = 0;
	q->free_head = q->desc[i].next;
	q->nfree = (uint16_t)(q->nfree - n);
	return head;
}

static void
fill(volatile struct vdesc *dd, const struct vseg *s)
{
	dd->addr = (uint64_t)(uintptr_t)s->addr;
	dd->len = s->len;
	if (s->write)
		dd->flags |= DESC_F_WRITE;
}

int
vq_add(struct vq *q, const struct vseg *segs, unsigned n, int indirect,
    void *cookie)
{
	struct vdesc *t;
	uint16_t head, i;
	unsigned k;

	if (n == 0 || (indirect && n > VQ_IND_MAX) ||
	    (!indirect && n > q->size))
		tg_fail("virtio: %u segments do not fit queue %u", n, q->index);
	if (q->nfree < (indirect ? 1 : n))
		return -1;
	if (indirect) {
		head = take_descs(q, 1);
		t = q->ind[head];
		for (k = 0; k < n; k++) {
			t[k].flags = k + 1 < n ? DESC_F_NEXT : 0;
			t[k].next = (uint16_t)(k + 1);
			fill(&t[k], &segs[k]);
		}
		q->desc[head].addr = (uint64_t)(uintptr_t)t;
		q->desc[head].len = (uint32_t)(n * sizeof(*t));
		q->desc[head].flags = DESC_F_INDIRECT;
	} else {
		head = take_descs(q, n);
		for (i = head, k = 0; k < n; k++, i = q->desc[i].next)
			fill(&q->desc[i], &segs[k]);
	}
	q->cookie[head] = cookie;
	q->inflight[head] = 1;
	q->avail->ring[q->avail_idx % q->size] = head;
	mb();		/* descriptors and ring entry before the index */
	q->avail_idx++;
	((volatile struct vavail *)q->avail)->idx = q->avail_idx;
	return head;
}

void
vq_kick(struct vdev *d, struct vq *q)
{
	mb();		/* the avail index before the notify */
	reg_write(d, MMIO_QUEUE_NOTIFY, q->index);
}

int
vq_poll(struct vq *q, void **cookie, uint32_t *len)
{
	volatile struct vused *u = q->used;
	struct vused_elem e;
	uint16_t i, n;

	if (u->idx == q->last_used)
		return 0;
	barrier();	/* x86 keeps loads in order; keep GCC from hoisting */
	e.id = u->ring[q->last_used % q->size].id;
	e.len = u->ring[q->last_used % q->size].len;
	q->last_used++;
	if (e.id >= q->size || !q->inflight[e.id])
		tg_fail("virtio: queue %u used id %u that is not in flight",
		    q->index, e.id);
	*cookie = q->cookie[e.id];
	*len = e.len;
	q->inflight[e.id] = 0;
	/* Give the chain back to the free list. */
	for (i = (uint16_t)e.id, n = 1; q->desc[i].flags & DESC_F_NEXT; n++)
		i = q->desc[i].next;
	q->desc[i].next = q->free_head;
	q->free_head = (uint16_t)e.id;
	q->nfree = (uint16_t)(q->nfree + n);
	return 1;
}

void *
vq_wait(struct vdev *d, struct vq *q, uint32_t *len, uint64_t cycles,
    const char *what)
{
	uint64_t start = rdtsc();
	void *cookie;
	unsigned long spins = 0;

	while (!vq_poll(q, &cookie, len)) {
		cpu_relax();
		if (++spins % STATUS_CHECK_EVERY == 0)
			check_status(d, what);
		if (rdtsc() - start > cycles) {
			check_status(d, what);
			tg_fail("%s: timed out %s (queue %u: avail %u used %u)",
			    d->name, what, q->index, q->avail_idx,
			    ((volatile struct vused *)q->used)->idx);
		}
	}
	/*
	 * The device raises the interrupt after it fills the used ring and
	 * this read reaches it after that, so a used-buffer bit is due by
	 * now unless an earlier wait already acknowledged it for a batch.
	 */
	d->isr_seen |= vdev_irq_ack(d);
	d->nused++;
	return cookie;
}
