/*
 * The virtio-mmio transport, version 2 registers (virtio 1.2 section
 * 4.2.2): feature negotiation, the status state machine, queue setup,
 * queue kicks through ioeventfds and interrupts through an irqfd with a
 * resample fd.  Also the transport's snapshot record.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "virtio/virtio_impl.h"

#define CORE_FEATURES	((1ULL << VIRTIO_F_VERSION_1) | \
	(1ULL << VIRTIO_F_INDIRECT_DESC) | (1ULL << VIRTIO_F_EVENT_IDX))

/* Deliver a kick for queue q if the device is in a state to take it. */
static void
queue_kick(struct virtio_dev *dev, unsigned q)
{
	if (q >= dev->ops->nqueues || !virtio_dev_live(dev) ||
	    !dev->q[q].ready)
		return;
	dev->ops->notify(dev, dev->priv, q);
}

/* The QueueNotify ioeventfd of one queue fired (any number of kicks
 * coalesce into one: the device drains the whole ring anyway). */
static void
kick_cb(uint64_t count, void *arg)
{
	struct virtio_queue	*vq = arg;

	(void)count;
	queue_kick(vq->dev, vq->index);
}

/*
 * The guest EOIed our pin.  With a resample irqfd KVM treats the pin as
 * level-triggered: a write to the irqfd asserts it, and the EOI
 * deasserts it and signals this fd.  A real level-triggered line stays
 * asserted as long as the device has something pending; here that is
 * InterruptStatus != 0.  If we did not re-assert now, an interrupt that
 * became pending while the guest's handler ran (after it read
 * InterruptStatus, before its EOI) would never be delivered: the IOAPIC
 * only delivers on an asserted pin, and nothing else would assert it
 * again until the next, unrelated event.  So: still pending -> signal
 * again, exactly as a level line would still read high.
 */
static void
resample_cb(uint64_t count, void *arg)
{
	struct virtio_dev	*dev = arg;

	(void)count;
	if (dev->isr != 0)
		(void)reactor_eventfd_signal(dev->irqfd);
}

void
virtio_dev_raise(struct virtio_dev *dev, uint32_t bits)
{
	dev->isr |= bits;
	if (reactor_eventfd_signal(dev->irqfd) < 0)
		log_warnx("virtio-%s: cannot signal irq %u", dev->ops->name,
		    dev->irq);
}

bool
virtio_dev_live(const struct virtio_dev *dev)
{
	return (dev->status & VIRTIO_STATUS_DRIVER_OK) &&
	    !(dev->status & VIRTIO_STATUS_NEEDS_RESET);
}

/* Drop every queue and the negotiated state: Status written 0. */
static void
dev_reset(struct virtio_dev *dev)
{
	unsigned	i;

	for (i = 0; i < dev->ops->nqueues; i++) {
		virtio_queue_disable(&dev->q[i]);
		dev->q[i].num = dev->ops->queue_max;
		dev->q[i].desc_gpa = dev->q[i].avail_gpa = 0;
		dev->q[i].used_gpa = 0;
	}
	dev->driver_features = 0;
	dev->dev_feat_sel = dev->drv_feat_sel = dev->queue_sel = 0;
	dev->shm_sel = 0;
	dev->status = 0;
	dev->isr = 0;
	dev->fail_logged = false;
	if (dev->ops->reset != NULL)
		dev->ops->reset(dev, dev->priv);
}

/* Remove the eventfds registered so far (create's error path, free). */
static void
dev_teardown(struct virtio_dev *dev)
{
	struct virtio_queue	*vq;
	unsigned		 i;

	for (i = 0; i < VIRTIO_MAX_QUEUES; i++) {
		vq = &dev->q[i];
		if (vq->kick == NULL)
			continue;
		(void)hv_ioeventfd_remove(dev->host.hv,
		    reactor_eventfd_fd(vq->kick),
		    dev->base + VIRTIO_MMIO_QUEUE_NOTIFY, 4,
		    HV_IOEVENT_DATAMATCH, i);
		reactor_eventfd_free(vq->kick);
		vq->kick = NULL;
	}
	if (dev->irqfd_registered)
		(void)hv_irqfd_remove(dev->host.hv,
		    reactor_eventfd_fd(dev->irqfd), dev->irq);
	reactor_eventfd_free(dev->irqfd);
	reactor_eventfd_free(dev->resample);
}

struct virtio_dev *
virtio_mmio_create(const struct virtio_host *host, uint64_t base,
    uint32_t irq, const struct virtio_dev_ops *ops, void *priv)
{
	struct virtio_dev	*dev;
	struct virtio_queue	*vq;
	unsigned		 i;
	int			 rc;

	if (ops == NULL || ops->notify == NULL || ops->nqueues < 1 ||
	    ops->nqueues > VIRTIO_MAX_QUEUES || ops->queue_max == 0 ||
	    ops->queue_max > 32768 ||
	    (ops->queue_max & (ops->queue_max - 1)) != 0 ||
	    ops->config_size > VIRTIO_MMIO_WINDOW - VIRTIO_MMIO_CONFIG ||
	    base % VIRTIO_MMIO_WINDOW != 0) {
		errno = EINVAL;
		return NULL;
	}
	dev = xcalloc(1, sizeof(*dev));
	dev->host = *host;
	dev->base = base;
	dev->irq = irq;
	dev->ops = ops;
	dev->priv = priv;
	dev->host_features = ops->features | CORE_FEATURES;

	if ((dev->irqfd = reactor_eventfd_create(host->r, NULL, NULL)) ==
	    NULL)
		goto err_free;
	if ((dev->resample = reactor_eventfd_create(host->r, resample_cb,
	    dev)) == NULL)
		goto err_teardown;
	if ((rc = hv_irqfd(host->hv, reactor_eventfd_fd(dev->irqfd), irq,
	    reactor_eventfd_fd(dev->resample))) < 0) {
		errno = -rc;
		goto err_teardown;
	}
	dev->irqfd_registered = true;

	for (i = 0; i < ops->nqueues; i++) {
		vq = &dev->q[i];
		vq->dev = dev;
		vq->index = i;
		vq->num = ops->queue_max;
		if ((vq->kick = reactor_eventfd_create(host->r, kick_cb,
		    vq)) == NULL)
			goto err_teardown;
		/* A 4-byte write of the queue index to QueueNotify. */
		if ((rc = hv_ioeventfd(host->hv, reactor_eventfd_fd(vq->kick),
		    base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, HV_IOEVENT_DATAMATCH,
		    i)) < 0) {
			reactor_eventfd_free(vq->kick);
			vq->kick = NULL;
			errno = -rc;
			goto err_teardown;
		}
	}
	return dev;

err_teardown:
	rc = errno;
	log_warn("virtio-%s: eventfd setup at %#llx", ops->name,
	    (unsigned long long)base);
	dev_teardown(dev);
	errno = rc;
err_free:
	rc = errno;
	free(dev);
	errno = rc;
	return NULL;
}

void
virtio_dev_free(struct virtio_dev *dev)
{
	unsigned	i;

	if (dev == NULL)
		return;
	for (i = 0; i < dev->ops->nqueues; i++)
		virtio_queue_disable(&dev->q[i]);
	dev_teardown(dev);
	if (dev->ops->free != NULL)
		dev->ops->free(dev->priv);
	free(dev);
}

/* A status write (section 2.1, 3.1.1). */
static void
status_write(struct virtio_dev *dev, uint32_t val)
{
	uint32_t	old = dev->status, set;
	uint64_t	f = dev->driver_features;
	unsigned	i;

	if (val == 0) {
		dev_reset(dev);
		return;
	}
	/* NEEDS_RESET belongs to the device; the driver cannot set or
	 * clear it, and status bits are only ever added until reset. */
	val &= 0xff & ~VIRTIO_STATUS_NEEDS_RESET;
	val |= old;
	set = val & ~old;
	if (set & VIRTIO_STATUS_FEATURES_OK) {
		/* Refused by leaving the bit clear: the driver re-reads
		 * Status and gives up (section 3.1.1 step 6). */
		if ((f & ~dev->host_features) != 0 ||
		    !(f & (1ULL << VIRTIO_F_VERSION_1))) {
			log_debug("virtio-%s: FEATURES_OK refused "
			    "(driver %#llx, device %#llx)", dev->ops->name,
			    (unsigned long long)f,
			    (unsigned long long)dev->host_features);
			val &= ~VIRTIO_STATUS_FEATURES_OK;
			set &= ~VIRTIO_STATUS_FEATURES_OK;
		}
	}
	if ((set & VIRTIO_STATUS_DRIVER_OK) &&
	    !(val & VIRTIO_STATUS_FEATURES_OK)) {
		/* DRIVER_OK without accepted features: nonsense. */
		dev->status = val & ~VIRTIO_STATUS_DRIVER_OK;
		virtio_dev_fail(dev, "DRIVER_OK before FEATURES_OK");
		return;
	}
	dev->status = val;
	if (set & VIRTIO_STATUS_DRIVER_OK) {
		if (dev->ops->driver_ok != NULL)
			dev->ops->driver_ok(dev, dev->priv);
		/* Kicks that came before DRIVER_OK were ignored; buffers
		 * made available then must not be stranded.  A spurious
		 * notify is harmless: the device finds what it finds. */
		for (i = 0; i < dev->ops->nqueues; i++)
			queue_kick(dev, i);
	}
}

/* QueueReady written: enable (validating everything) or disable. */
static void
queue_ready_write(struct virtio_dev *dev, struct virtio_queue *vq,
    uint32_t val)
{
	int	rc;

	if (val == 0) {
		virtio_queue_disable(vq);
		return;
	}
	if (vq->ready)
		return;
	if ((rc = virtio_queue_enable(vq)) < 0)
		virtio_dev_fail(dev, "queue %u: bad setup (num %u, desc %#llx, "
		    "driver %#llx, device %#llx)", vq->index, vq->num,
		    (unsigned long long)vq->desc_gpa,
		    (unsigned long long)vq->avail_gpa,
		    (unsigned long long)vq->used_gpa);
}

/* Replace the low or high half of a 64-bit address. */
static void
set_half(uint64_t *addr, uint32_t val, bool high)
{
	if (high)
		*addr = (*addr & 0xffffffffULL) | ((uint64_t)val << 32);
	else
		*addr = (*addr & ~0xffffffffULL) | val;
}

/* The selected queue, or NULL if QueueSel names none. */
static struct virtio_queue *
sel_queue(struct virtio_dev *dev)
{
	if (dev->queue_sel >= dev->ops->nqueues)
		return NULL;
	return &dev->q[dev->queue_sel];
}

/* The SHMLen / SHMBase halves of the region SHMSel names.  A region
 * the device lacks reads as length (and base) all-ones (4.2.2). */
static uint32_t
shm_read(struct virtio_dev *dev, uint64_t off)
{
	uint64_t	gpa, len, v;

	if (dev->ops->shm_region == NULL ||
	    !dev->ops->shm_region(dev, dev->priv, dev->shm_sel, &gpa, &len))
		return 0xffffffff;
	v = off == VIRTIO_MMIO_SHM_LEN_LOW || off == VIRTIO_MMIO_SHM_LEN_HIGH ?
	    len : gpa;
	if (off == VIRTIO_MMIO_SHM_LEN_HIGH || off == VIRTIO_MMIO_SHM_BASE_HIGH)
		return (uint32_t)(v >> 32);
	return (uint32_t)v;
}

static uint32_t
reg_read(struct virtio_dev *dev, uint64_t off)
{
	struct virtio_queue	*vq = sel_queue(dev);

	switch (off) {
	case VIRTIO_MMIO_MAGIC_VALUE:
		return VIRTIO_MMIO_MAGIC;
	case VIRTIO_MMIO_VERSION:
		return 2;
	case VIRTIO_MMIO_DEVICE_ID:
		return dev->ops->device_id;
	case VIRTIO_MMIO_VENDOR_ID:
		return VIRTIO_MMIO_VENDOR;
	case VIRTIO_MMIO_DEVICE_FEATURES:
		if (dev->dev_feat_sel > 1)
			return 0;
		return (uint32_t)(dev->host_features >>
		    (32 * dev->dev_feat_sel));
	case VIRTIO_MMIO_QUEUE_NUM_MAX:
		return vq != NULL ? dev->ops->queue_max : 0;
	case VIRTIO_MMIO_QUEUE_READY:
		return vq != NULL && vq->ready;
	case VIRTIO_MMIO_INTERRUPT_STATUS:
		return dev->isr;
	case VIRTIO_MMIO_STATUS:
		return dev->status;
	case VIRTIO_MMIO_SHM_LEN_LOW:
	case VIRTIO_MMIO_SHM_LEN_HIGH:
	case VIRTIO_MMIO_SHM_BASE_LOW:
	case VIRTIO_MMIO_SHM_BASE_HIGH:
		return shm_read(dev, off);
	case VIRTIO_MMIO_CONFIG_GENERATION:
		return dev->config_gen;
	default:
		/* Write-only and unknown registers read as zero. */
		return 0;
	}
}

static void
reg_write(struct virtio_dev *dev, uint64_t off, uint32_t val)
{
	struct virtio_queue	*vq = sel_queue(dev);
	bool			 qwritable;

	/* Queue registers are written while the queue is not ready. */
	qwritable = vq != NULL && !vq->ready;
	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
		dev->dev_feat_sel = val;
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		/* Features are fixed once FEATURES_OK is accepted. */
		if (dev->drv_feat_sel > 1 ||
		    (dev->status & VIRTIO_STATUS_FEATURES_OK))
			break;
		if (dev->drv_feat_sel == 0)
			dev->driver_features = (dev->driver_features &
			    ~0xffffffffULL) | val;
		else
			dev->driver_features = (dev->driver_features &
			    0xffffffffULL) | ((uint64_t)val << 32);
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
		dev->drv_feat_sel = val;
		break;
	case VIRTIO_MMIO_QUEUE_SEL:
		dev->queue_sel = val;
		break;
	case VIRTIO_MMIO_SHM_SEL:
		dev->shm_sel = val;
		break;
	case VIRTIO_MMIO_QUEUE_NUM:
		if (qwritable)
			vq->num = val > 0xffff ? 0 : (uint16_t)val;
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		if (vq != NULL)
			queue_ready_write(dev, vq, val);
		break;
	case VIRTIO_MMIO_QUEUE_NOTIFY:
		/* KVM did not match the ioeventfd (another width or the
		 * ioeventfd is absent): same effect. */
		queue_kick(dev, val);
		break;
	case VIRTIO_MMIO_INTERRUPT_ACK:
		dev->isr &= ~val;
		break;
	case VIRTIO_MMIO_STATUS:
		status_write(dev, val);
		break;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		if (qwritable)
			set_half(&vq->desc_gpa, val,
			    off == VIRTIO_MMIO_QUEUE_DESC_HIGH);
		break;
	case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
	case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
		if (qwritable)
			set_half(&vq->avail_gpa, val,
			    off == VIRTIO_MMIO_QUEUE_DRIVER_HIGH);
		break;
	case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
	case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
		if (qwritable)
			set_half(&vq->used_gpa, val,
			    off == VIRTIO_MMIO_QUEUE_DEVICE_HIGH);
		break;
	default:
		/* Read-only and unknown registers: ignored. */
		break;
	}
}

void
virtio_mmio_access(struct virtio_dev *dev, uint64_t off, bool write,
    uint8_t *data, uint8_t len)
{
	uint32_t	val;
	uint64_t	coff;

	if (len == 0 || len > 8)
		return;
	if (off >= VIRTIO_MMIO_CONFIG) {
		/* Config space: any width, entirely inside config_size. */
		coff = off - VIRTIO_MMIO_CONFIG;
		if (coff >= dev->ops->config_size ||
		    len > dev->ops->config_size - coff) {
			if (!write)
				memset(data, 0, len);
			return;
		}
		if (write) {
			if (dev->ops->config_write != NULL)
				dev->ops->config_write(dev, dev->priv, coff,
				    data, len);
		} else {
			memset(data, 0, len);
			if (dev->ops->config_read != NULL)
				dev->ops->config_read(dev, dev->priv, coff,
				    data, len);
		}
		return;
	}
	/* Registers: 32-bit, aligned (4.2.2); anything else is ignored. */
	if (len != 4 || off % 4 != 0) {
		if (!write)
			memset(data, 0, len);
		return;
	}
	if (write) {
		val = (uint32_t)data[0] | (uint32_t)data[1] << 8 |
		    (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
		reg_write(dev, off, val);
	} else {
		val = reg_read(dev, off);
		data[0] = val;
		data[1] = val >> 8;
		data[2] = val >> 16;
		data[3] = val >> 24;
	}
}

int
virtio_mmio_cmdline(const struct virtio_dev *dev, char *buf, size_t len)
{
	return snprintf(buf, len, "virtio_mmio.device=4K@%#llx:%u",
	    (unsigned long long)dev->base, dev->irq);
}

void *
virtio_dev_priv(struct virtio_dev *dev)
{
	return dev->priv;
}

struct virtio_queue *
virtio_dev_queue(struct virtio_dev *dev, unsigned q)
{
	if (q >= dev->ops->nqueues)
		return NULL;
	return &dev->q[q];
}

bool
virtio_dev_has(const struct virtio_dev *dev, unsigned feature)
{
	if (feature >= 64)
		return false;
	return (dev->driver_features >> feature) & 1;
}

const struct gmem *
virtio_dev_mem(const struct virtio_dev *dev)
{
	return dev->host.mem;
}

struct reactor *
virtio_dev_reactor(const struct virtio_dev *dev)
{
	return dev->host.r;
}

uint32_t
virtio_dev_status(const struct virtio_dev *dev)
{
	return dev->status;
}

bool
virtio_dev_needs_reset(const struct virtio_dev *dev)
{
	return (dev->status & VIRTIO_STATUS_NEEDS_RESET) != 0;
}

void
virtio_dev_fail(struct virtio_dev *dev, const char *why, ...)
{
	char	msg[256];
	va_list	ap;

	/* Logged once per reset cycle: a hostile guest must not be able
	 * to flood the log. */
	if (!dev->fail_logged) {
		va_start(ap, why);
		vsnprintf(msg, sizeof(msg), why, ap);
		va_end(ap);
		log_warnx("virtio-%s at %#llx: %s; device needs reset",
		    dev->ops->name, (unsigned long long)dev->base, msg);
		dev->fail_logged = true;
	}
	if (dev->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	dev->status |= VIRTIO_STATUS_NEEDS_RESET;
	virtio_dev_raise(dev, VIRTIO_ISR_CONFIG);
}

void
virtio_dev_config_changed(struct virtio_dev *dev)
{
	dev->config_gen++;
	if (dev->status & VIRTIO_STATUS_DRIVER_OK)
		virtio_dev_raise(dev, VIRTIO_ISR_CONFIG);
}

/*
 * Snapshot record, little-endian, version 1:
 *   u32 magic "VTIO", u32 version, u32 device_id, u32 nqueues,
 *   u32 status, u64 driver_features, u32 dev_feat_sel, u32 drv_feat_sel,
 *   u32 queue_sel, u32 isr, u32 config_gen,
 *   nqueues x { u16 num, u8 ready, u8 signalled_valid, u64 desc,
 *               u64 avail, u64 used, u16 last_avail, u16 used_idx,
 *               u16 signalled_used, u16 pad },
 *   u32 device record length, device record.
 */
#define SAVE_MAGIC	0x4f495456	/* "VTIO" */
#define SAVE_VERSION	1
#define SAVE_HDR	(4 * 5 + 8 + 4 * 5)
#define SAVE_QUEUE	(4 + 8 * 3 + 8)

static void
put_le(uint8_t *p, uint64_t v, unsigned n)
{
	unsigned	i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t
get_le(const uint8_t *p, unsigned n)
{
	uint64_t	v = 0;
	unsigned	i;

	for (i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

int
virtio_dev_save(struct virtio_dev *dev, uint8_t **buf, size_t *len)
{
	const struct virtio_queue	*vq;
	uint8_t				*p, *dbuf = NULL;
	size_t				 start = *len, need, dlen = 0;
	unsigned			 i;
	int				 rc;

	/* The device's own record first: saving completes the requests
	 * it has in flight, which pushes used entries and may raise the
	 * interrupt, so the transport state below must be read after. */
	if (dev->ops->save != NULL &&
	    (rc = dev->ops->save(dev, dev->priv, &dbuf, &dlen)) < 0) {
		free(dbuf);
		return rc;
	}
	if (dlen > UINT32_MAX) {
		free(dbuf);
		return -EOVERFLOW;
	}
	need = SAVE_HDR + (size_t)dev->ops->nqueues * SAVE_QUEUE + 4;
	*buf = xreallocarray(*buf, start + need + dlen, 1);
	p = *buf + start;
	put_le(p, SAVE_MAGIC, 4); p += 4;
	put_le(p, SAVE_VERSION, 4); p += 4;
	put_le(p, dev->ops->device_id, 4); p += 4;
	put_le(p, dev->ops->nqueues, 4); p += 4;
	put_le(p, dev->status, 4); p += 4;
	put_le(p, dev->driver_features, 8); p += 8;
	put_le(p, dev->dev_feat_sel, 4); p += 4;
	put_le(p, dev->drv_feat_sel, 4); p += 4;
	put_le(p, dev->queue_sel, 4); p += 4;
	put_le(p, dev->isr, 4); p += 4;
	put_le(p, dev->config_gen, 4); p += 4;
	for (i = 0; i < dev->ops->nqueues; i++) {
		vq = &dev->q[i];
		put_le(p, vq->num, 2); p += 2;
		*p++ = vq->ready;
		*p++ = vq->signalled_valid;
		put_le(p, vq->desc_gpa, 8); p += 8;
		put_le(p, vq->avail_gpa, 8); p += 8;
		put_le(p, vq->used_gpa, 8); p += 8;
		put_le(p, vq->last_avail, 2); p += 2;
		put_le(p, vq->used_idx, 2); p += 2;
		put_le(p, vq->signalled_used, 2); p += 2;
		put_le(p, 0, 2); p += 2;
	}
	put_le(p, dlen, 4); p += 4;
	if (dlen > 0)
		memcpy(p, dbuf, dlen);
	*len = start + need + dlen;
	free(dbuf);
	return 0;
}

int
virtio_dev_load(struct virtio_dev *dev, const uint8_t *buf, size_t len)
{
	struct virtio_queue	*vq;
	const uint8_t		*p = buf;
	size_t			 need;
	uint32_t		 devlen;
	unsigned		 i;
	uint16_t		 num;
	int			 rc;

	need = SAVE_HDR + (size_t)dev->ops->nqueues * SAVE_QUEUE + 4;
	if (len < need || get_le(p, 4) != SAVE_MAGIC ||
	    get_le(p + 4, 4) != SAVE_VERSION ||
	    get_le(p + 8, 4) != dev->ops->device_id ||
	    get_le(p + 12, 4) != dev->ops->nqueues)
		return -EINVAL;
	devlen = get_le(buf + need - 4, 4);
	if (devlen != len - need)
		return -EINVAL;

	/* Start from a clean device, then lay the saved state over it. */
	dev_reset(dev);
	p += 16;
	dev->status = get_le(p, 4); p += 4;
	dev->driver_features = get_le(p, 8); p += 8;
	dev->dev_feat_sel = get_le(p, 4); p += 4;
	dev->drv_feat_sel = get_le(p, 4); p += 4;
	dev->queue_sel = get_le(p, 4); p += 4;
	dev->isr = get_le(p, 4) & (VIRTIO_ISR_USED | VIRTIO_ISR_CONFIG);
	p += 4;
	dev->config_gen = get_le(p, 4); p += 4;
	if (dev->status > 0xff ||
	    (dev->driver_features & ~dev->host_features) != 0)
		goto err_reset;
	for (i = 0; i < dev->ops->nqueues; i++) {
		vq = &dev->q[i];
		num = get_le(p, 2); p += 2;
		if (num > dev->ops->queue_max || p[0] > 1 || p[1] > 1)
			goto err_reset;
		vq->num = num;
		vq->desc_gpa = get_le(p + 2, 8);
		vq->avail_gpa = get_le(p + 10, 8);
		vq->used_gpa = get_le(p + 18, 8);
		if (p[0]) {
			/* Re-validate against this memory: a snapshot is
			 * input too. */
			if (virtio_queue_enable(vq) < 0)
				goto err_reset;
		}
		vq->signalled_valid = p[1];
		p += 26;
		vq->last_avail = get_le(p, 2); p += 2;
		vq->used_idx = get_le(p, 2); p += 2;
		vq->signalled_used = get_le(p, 2); p += 2;
		p += 2;
	}
	p += 4;
	if (dev->ops->load != NULL) {
		if ((rc = dev->ops->load(dev, dev->priv, p, devlen)) < 0)
			goto err_reset_rc;
	} else if (devlen != 0)
		goto err_reset;
	/* Whatever was pending before the snapshot is pending now: the
	 * line is asserted again (a spurious interrupt is harmless; the
	 * driver reads InterruptStatus). */
	if (dev->isr != 0)
		(void)reactor_eventfd_signal(dev->irqfd);
	/* A kick the guest gave just before the snapshot may have been
	 * taken by the saving process's ioeventfd and never seen here:
	 * look at every queue once, as a kick would (a spurious kick
	 * finds nothing new). */
	for (i = 0; i < dev->ops->nqueues; i++)
		queue_kick(dev, i);
	return 0;

err_reset:
	rc = -EINVAL;
err_reset_rc:
	dev_reset(dev);
	return rc;
}
