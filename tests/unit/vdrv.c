/*
 * vdrv: the guest side of a virtio-mmio device for unit tests.  See
 * vdrv.h.  The ring layout is written from the guest's point of view
 * (virtio 1.2 section 2.7) with the barriers a real driver uses.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/mman.h>

#include <event2/event.h>

#include "hv/fake.h"
#include "tests/unit/vdrv.h"

#define DESC_F_NEXT	1
#define DESC_F_WRITE	2
#define DESC_F_INDIRECT	4

/* Give guest RAM back the way env_init() got it. */
static void
free_ram(struct vdrv_env *env)
{
	if (env->guard == 0)
		free(env->ram);
	else
		munmap(env->ram - env->guard, env->ram_size + 2 * env->guard);
}

/* RAM from calloc (guard 0) or its own mapping between two PROT_NONE
 * regions of guard bytes each. */
static int
env_init(struct vdrv_env *env, uint64_t ram_size, size_t guard)
{
	uint8_t	*map;
	int	 rc;

	memset(env, 0, sizeof(*env));
	ram_size = ALIGN_UP(ram_size, 4096);
	if ((env->r = reactor_create()) == NULL)
		return -errno;
	if ((rc = hv_create(&env->hv, 1)) < 0)
		goto err_reactor;
	if (guard == 0)
		env->ram = xcalloc(1, ram_size);
	else {
		/* Reserve guard + RAM + guard inaccessible, then open up
		 * the middle: anonymous pages come zeroed. */
		map = mmap(NULL, ram_size + 2 * guard, PROT_NONE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (map == MAP_FAILED) {
			rc = -errno;
			goto err_hv;
		}
		if (mprotect(map + guard, ram_size, PROT_READ | PROT_WRITE)
		    != 0) {
			rc = -errno;
			munmap(map, ram_size + 2 * guard);
			goto err_hv;
		}
		env->ram = map + guard;
		env->guard = guard;
	}
	env->ram_size = ram_size;
	if ((rc = gmem_add(&env->mem, VDRV_RAM_GPA, ram_size, env->ram)) < 0)
		goto err_ram;
	env->brk = VDRV_RAM_GPA;
	env->host.r = env->r;
	env->host.hv = env->hv;
	env->host.mem = &env->mem;
	return 0;

err_ram:
	free_ram(env);
err_hv:
	hv_destroy(env->hv);
err_reactor:
	reactor_free(env->r);
	return rc;
}

int
vdrv_env_init(struct vdrv_env *env, uint64_t ram_size)
{
	return env_init(env, ram_size, 0);
}

int
vdrv_env_init_guarded(struct vdrv_env *env, uint64_t ram_size)
{
	return env_init(env, ram_size, VDRV_GUARD);
}

void
vdrv_env_fini(struct vdrv_env *env)
{
	vdrv_env_poll(env);
	reactor_free(env->r);
	hv_destroy(env->hv);
	free_ram(env);
	memset(env, 0, sizeof(*env));
}

void
vdrv_env_poll(struct vdrv_env *env)
{
	int	i;

	/* A few passes: a callback may make another fd ready (a post, a
	 * resample re-raise). */
	for (i = 0; i < 8; i++)
		event_base_loop(reactor_base(env->r), EVLOOP_NONBLOCK);
}

bool
vdrv_env_run_until(struct vdrv_env *env, bool (*cond)(void *), void *arg,
    unsigned timeout_ms)
{
	struct timespec	ts = { 0, 200000 };
	uint64_t	end = now_ns() + (uint64_t)timeout_ms * 1000000;

	for (;;) {
		vdrv_env_poll(env);
		if (cond(arg))
			return true;
		if (now_ns() >= end)
			return false;
		nanosleep(&ts, NULL);
	}
}

uint64_t
vdrv_alloc(struct vdrv_env *env, uint64_t len, uint64_t align)
{
	uint64_t	gpa;

	if (align == 0)
		align = 1;
	gpa = ALIGN_UP(env->brk, align);
	if (gpa < env->brk || len > env->ram_size ||
	    gpa + len > VDRV_RAM_GPA + env->ram_size)
		fatalx("vdrv: guest RAM exhausted (%llu bytes asked)",
		    (unsigned long long)len);
	env->brk = gpa + len;
	memset(env->ram + (gpa - VDRV_RAM_GPA), 0, len);
	return gpa;
}

uint64_t
vdrv_alloc_data(struct vdrv_env *env, const void *data, uint64_t len)
{
	uint64_t	gpa = vdrv_alloc(env, len, 8);

	if (len > 0)
		memcpy(vdrv_ptr(env, gpa, len), data, len);
	return gpa;
}

void *
vdrv_ptr(struct vdrv_env *env, uint64_t gpa, uint64_t len)
{
	return gmem_ptr(&env->mem, gpa, len);
}

/* Host pointer into guest RAM that must exist (the test's own rings). */
static void *
must_ptr(struct vdrv_env *env, uint64_t gpa, uint64_t len)
{
	void	*p = gmem_ptr(&env->mem, gpa, len);

	if (p == NULL)
		fatalx("vdrv: %#llx+%llu outside guest RAM",
		    (unsigned long long)gpa, (unsigned long long)len);
	return p;
}

void
vdrv_attach(struct vdrv *d, struct vdrv_env *env, struct virtio_dev *dev,
    uint64_t base, uint32_t irq)
{
	memset(d, 0, sizeof(*d));
	d->env = env;
	d->dev = dev;
	d->base = base;
	d->irq = irq;
}

void
vdrv_detach(struct vdrv *d)
{
	memset(d, 0, sizeof(*d));
}

uint32_t
vdrv_read(struct vdrv *d, uint32_t off)
{
	uint8_t	b[4];

	virtio_mmio_access(d->dev, off, false, b, 4);
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
	    (uint32_t)b[3] << 24;
}

void
vdrv_write(struct vdrv *d, uint32_t off, uint32_t val)
{
	uint8_t	b[4] = { val, val >> 8, val >> 16, val >> 24 };

	virtio_mmio_access(d->dev, off, true, b, 4);
}

uint64_t
vdrv_device_features(struct vdrv *d)
{
	uint64_t	f;

	vdrv_write(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	f = (uint64_t)vdrv_read(d, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
	vdrv_write(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	f |= vdrv_read(d, VIRTIO_MMIO_DEVICE_FEATURES);
	return f;
}

int
vdrv_negotiate(struct vdrv *d, uint64_t features)
{
	unsigned	i;

	vdrv_write(d, VIRTIO_MMIO_STATUS, 0);
	for (i = 0; i < VIRTIO_MAX_QUEUES; i++)
		memset(&d->q[i], 0, sizeof(d->q[i]));
	vdrv_write(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	vdrv_write(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE |
	    VIRTIO_STATUS_DRIVER);
	vdrv_write(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	vdrv_write(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
	vdrv_write(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	vdrv_write(d, VIRTIO_MMIO_DRIVER_FEATURES, features >> 32);
	vdrv_write(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE |
	    VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	if (!(vdrv_read(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK))
		return -EPROTO;
	d->features = features;
	return 0;
}

int
vdrv_queue_setup(struct vdrv *d, unsigned q, uint16_t size)
{
	struct vdrv_queue	*vq;
	unsigned		 i;

	if (q >= VIRTIO_MAX_QUEUES || size == 0 || size > VDRV_QMAX ||
	    (size & (size - 1)) != 0)
		fatalx("vdrv: bad queue %u size %u", q, size);
	vq = &d->q[q];
	memset(vq, 0, sizeof(*vq));
	vq->size = size;
	vq->desc = vdrv_alloc(d->env, 16ULL * size, 16);
	vq->avail = vdrv_alloc(d->env, 6ULL + 2ULL * size, 2);
	vq->used = vdrv_alloc(d->env, 6ULL + 8ULL * size, 4);
	for (i = 0; i < size; i++)
		vq->next[i] = i + 1;
	vq->free_head = 0;
	vq->nfree = size;

	vdrv_write(d, VIRTIO_MMIO_QUEUE_SEL, q);
	if (vdrv_read(d, VIRTIO_MMIO_QUEUE_READY) != 0 ||
	    vdrv_read(d, VIRTIO_MMIO_QUEUE_NUM_MAX) < size)
		return -EIO;
	vdrv_write(d, VIRTIO_MMIO_QUEUE_NUM, size);
	vdrv_write(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)vq->desc);
	vdrv_write(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, vq->desc >> 32);
	vdrv_write(d, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)vq->avail);
	vdrv_write(d, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, vq->avail >> 32);
	vdrv_write(d, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)vq->used);
	vdrv_write(d, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, vq->used >> 32);
	vdrv_write(d, VIRTIO_MMIO_QUEUE_READY, 1);
	if (vdrv_read(d, VIRTIO_MMIO_QUEUE_READY) != 1)
		return -EIO;
	return 0;
}

void
vdrv_driver_ok(struct vdrv *d)
{
	vdrv_write(d, VIRTIO_MMIO_STATUS, vdrv_read(d, VIRTIO_MMIO_STATUS) |
	    VIRTIO_STATUS_DRIVER_OK);
	vdrv_env_poll(d->env);
}

int
vdrv_start(struct vdrv *d, uint64_t want, uint16_t qsize)
{
	uint32_t	max;
	unsigned	q;
	int		rc;

	want = (want & vdrv_device_features(d)) |
	    (1ULL << VIRTIO_F_VERSION_1);
	if ((rc = vdrv_negotiate(d, want)) < 0)
		return rc;
	d->nqueues = 0;
	for (q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		vdrv_write(d, VIRTIO_MMIO_QUEUE_SEL, q);
		if ((max = vdrv_read(d, VIRTIO_MMIO_QUEUE_NUM_MAX)) == 0)
			break;
		if ((rc = vdrv_queue_setup(d, q, MIN(MIN(max, qsize),
		    VDRV_QMAX))) < 0)
			return rc;
		d->nqueues = q + 1;
	}
	vdrv_driver_ok(d);
	if (vdrv_read(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET)
		return -EIO;
	return 0;
}

/* Write one descriptor into a table at gpa. */
static void
put_desc(struct vdrv_env *env, uint64_t table, unsigned i, uint64_t addr,
    uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t	*p = must_ptr(env, table + 16ULL * i, 16);

	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

/* Publish head on the avail ring. */
static void
publish(struct vdrv *d, struct vdrv_queue *vq, uint16_t head)
{
	uint16_t	*ring, *idx;

	ring = must_ptr(d->env, vq->avail + 4 + 2ULL *
	    (vq->avail_idx & (vq->size - 1)), 2);
	idx = must_ptr(d->env, vq->avail + 2, 2);
	__atomic_store_n(ring, head, __ATOMIC_RELAXED);
	vq->avail_idx++;
	/* The ring entry and descriptors before the index (virtio_wmb). */
	__atomic_store_n(idx, vq->avail_idx, __ATOMIC_RELEASE);
}

int
vdrv_add(struct vdrv *d, unsigned q, const struct vdrv_buf *b, unsigned n,
    bool indirect)
{
	struct vdrv_queue	*vq = &d->q[q];
	unsigned		 i, need = indirect ? 1 : n;
	uint16_t		 head, cur, flags;

	if (q >= VIRTIO_MAX_QUEUES || vq->size == 0 || n == 0 ||
	    (indirect && n > VDRV_IND_MAX))
		fatalx("vdrv: bad add on queue %u (%u buffers)", q, n);
	if (vq->nfree < need)
		return -ENOSPC;
	head = vq->free_head;
	if (indirect) {
		/* One table per descriptor slot, allocated on first use. */
		if (vq->ind == 0)
			vq->ind = vdrv_alloc(d->env, 16ULL * VDRV_IND_MAX *
			    vq->size, 16);
		for (i = 0; i < n; i++) {
			flags = (b[i].write ? DESC_F_WRITE : 0) |
			    (i + 1 < n ? DESC_F_NEXT : 0);
			put_desc(d->env, vq->ind + 16ULL * VDRV_IND_MAX * head,
			    i, b[i].gpa, b[i].len, flags, i + 1 < n ? i + 1 : 0);
		}
		put_desc(d->env, vq->desc, head, vq->ind +
		    16ULL * VDRV_IND_MAX * head, 16 * n, DESC_F_INDIRECT, 0);
		vq->free_head = vq->next[head];
	} else {
		cur = head;
		for (i = 0; i < n; i++) {
			flags = (b[i].write ? DESC_F_WRITE : 0) |
			    (i + 1 < n ? DESC_F_NEXT : 0);
			put_desc(d->env, vq->desc, cur, b[i].gpa, b[i].len,
			    flags, i + 1 < n ? vq->next[cur] : 0);
			cur = vq->next[cur];
		}
		vq->free_head = cur;
	}
	vq->nfree -= need;
	vq->chain_len[head] = need;
	publish(d, vq, head);
	return head;
}

int
vdrv_add1(struct vdrv *d, unsigned q, uint64_t gpa, uint32_t len, bool write)
{
	struct vdrv_buf	b = { gpa, len, write };

	return vdrv_add(d, q, &b, 1, false);
}

void
vdrv_kick(struct vdrv *d, unsigned q)
{
	if (!hv_fake_guest_write(d->env->hv, d->base +
	    VIRTIO_MMIO_QUEUE_NOTIFY, 4, q))
		vdrv_write(d, VIRTIO_MMIO_QUEUE_NOTIFY, q);
	vdrv_env_poll(d->env);
}

uint16_t
vdrv_used_pending(struct vdrv *d, unsigned q)
{
	struct vdrv_queue	*vq = &d->q[q];
	uint16_t		*idx;

	if (vq->size == 0)
		return 0;
	idx = must_ptr(d->env, vq->used + 2, 2);
	return __atomic_load_n(idx, __ATOMIC_ACQUIRE) - vq->last_used;
}

bool
vdrv_used(struct vdrv *d, unsigned q, uint32_t *id, uint32_t *len)
{
	struct vdrv_queue	*vq = &d->q[q];
	uint32_t		 e[2];
	uint16_t		 head, n, i;

	if (vdrv_used_pending(d, q) == 0)
		return false;
	/* After the acquire load of used->idx in vdrv_used_pending(). */
	memcpy(e, must_ptr(d->env, vq->used + 4 + 8ULL *
	    (vq->last_used & (vq->size - 1)), 8), 8);
	vq->last_used++;
	if (id != NULL)
		*id = e[0];
	if (len != NULL)
		*len = e[1];
	/* Give the chain's descriptors back (a bogus id is the device's
	 * bug: leave the free list alone). */
	if (e[0] < vq->size && (n = vq->chain_len[e[0]]) != 0) {
		head = e[0];
		for (i = 1; i < n; i++)
			head = vq->next[head];
		vq->next[head] = vq->free_head;
		vq->free_head = e[0];
		vq->nfree += n;
		vq->chain_len[e[0]] = 0;
	}
	return true;
}

struct used_wait {
	struct vdrv	*d;
	unsigned	 q;
};

static bool
used_ready(void *arg)
{
	struct used_wait	*w = arg;

	return vdrv_used_pending(w->d, w->q) != 0;
}

bool
vdrv_wait_used(struct vdrv *d, unsigned q, uint32_t *id, uint32_t *len,
    unsigned timeout_ms)
{
	struct used_wait	w = { d, q };

	if (!vdrv_env_run_until(d->env, used_ready, &w, timeout_ms))
		return false;
	return vdrv_used(d, q, id, len);
}

void
vdrv_set_no_interrupt(struct vdrv *d, unsigned q, bool on)
{
	uint16_t	*flags = must_ptr(d->env, d->q[q].avail, 2);

	__atomic_store_n(flags, on ? 1 : 0, __ATOMIC_SEQ_CST);
}

void
vdrv_set_used_event(struct vdrv *d, unsigned q, uint16_t v)
{
	uint16_t	*p = must_ptr(d->env, d->q[q].avail + 4 +
	    2ULL * d->q[q].size, 2);

	__atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

uint16_t
vdrv_avail_event(struct vdrv *d, unsigned q)
{
	uint16_t	*p = must_ptr(d->env, d->q[q].used + 4 +
	    8ULL * d->q[q].size, 2);

	return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

/* Config access of the widest natural size that fits. */
static void
config_access(struct vdrv *d, uint32_t off, uint8_t *p, uint32_t len,
    bool write)
{
	uint8_t	n;

	while (len > 0) {
		if (len >= 4 && off % 4 == 0)
			n = 4;
		else if (len >= 2 && off % 2 == 0)
			n = 2;
		else
			n = 1;
		virtio_mmio_access(d->dev, VIRTIO_MMIO_CONFIG + off, write, p,
		    n);
		off += n;
		p += n;
		len -= n;
	}
}

void
vdrv_config_read(struct vdrv *d, uint32_t off, void *buf, uint32_t len)
{
	config_access(d, off, buf, len, false);
}

void
vdrv_config_write(struct vdrv *d, uint32_t off, const void *buf,
    uint32_t len)
{
	uint8_t	tmp[256];
	uint32_t n;

	/* config_access() wants a writable buffer for reads; copy. */
	while (len > 0) {
		n = MIN(len, sizeof(tmp));
		memcpy(tmp, buf, n);
		config_access(d, off, tmp, n, true);
		off += n;
		buf = (const uint8_t *)buf + n;
		len -= n;
	}
}

uint64_t
vdrv_irq_fired(struct vdrv *d)
{
	vdrv_env_poll(d->env);
	return hv_fake_irqfd_fired(d->env->hv, d->irq);
}

uint32_t
vdrv_isr_ack(struct vdrv *d)
{
	uint32_t	isr = vdrv_read(d, VIRTIO_MMIO_INTERRUPT_STATUS);

	if (isr != 0)
		vdrv_write(d, VIRTIO_MMIO_INTERRUPT_ACK, isr);
	return isr;
}

void
vdrv_eoi(struct vdrv *d)
{
	hv_fake_eoi(d->env->hv, d->irq);
	vdrv_env_poll(d->env);
}
