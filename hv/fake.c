/*
 * hv backend for unit tests: the whole hv.h API kept in memory, with no
 * /dev/kvm.  Memory slots, irq lines, irqfds and ioeventfds are recorded
 * for inspection through hv/fake.h; a vCPU returns the exits a test
 * queued and otherwise blocks until kicked, like a halted guest.
 *
 * Locking: struct hv's lock guards the VM tables, each vCPU's lock its
 * script, registers and run page.  Neither is held while the other is
 * taken.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/base.h"
#include "hv/hv.h"
#include "hv/fake.h"
#include "hv/state_impl.h"

#define FAKE_PAGE	4096ULL

struct fake_irq {
	int		 level;
	unsigned	 edges;
};

struct fake_irqfd {
	int		 fd;
	uint32_t	 gsi;
	int		 resamplefd;
};

struct fake_ioevent {
	int		 fd;
	uint64_t	 addr;
	uint32_t	 len;
	unsigned	 flags;
	uint64_t	 data;
};

struct fake_slot {
	bool		 used;
	uint64_t	 gpa;
	uint64_t	 size;
	void		*hva;
	unsigned	 flags;
	uint64_t	*dirty;		/* with HV_MEM_LOG_DIRTY */
};

struct hv {
	pthread_mutex_t		 lock;
	unsigned		 ncpus;
	struct fake_slot	 slots[HV_FAKE_MAX_SLOTS];
	struct fake_irq		 irqs[HV_FAKE_MAX_GSI];
	struct fake_irqfd	*irqfds;
	size_t			 nirqfds;
	struct fake_ioevent	*ioevents;
	size_t			 nioevents;
	struct hv_vcpu		*vcpus[HV_MAX_VCPUS];
	uint64_t		 clock;		/* a stand-in KVM clock */
};

struct fake_step {
	struct fake_step	*next;
	struct hv_exit		 exit;
	size_t			 len;		/* payload bytes */
	uint8_t			 data[];
};

struct hv_vcpu {
	struct hv		*hv;
	unsigned		 id;
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;
	struct fake_step	*head, *tail;
	unsigned		 nqueued;
	bool			 kicked;
	bool			 halted;
	unsigned		 nintr;
	struct hv_regs		 regs;
	struct hv_sregs		 sregs;
	uint8_t			 page[HV_FAKE_RUN_DATA];
	size_t			 page_len;	/* payload of the current exit */
	uint8_t			 last[HV_FAKE_RUN_DATA];
	size_t			 last_len;
};

/* The fake is always there. */
enum hv_kind
hv_probe(const char **why)
{
	if (why != NULL)
		*why = NULL;
	return HV_KIND_FAKE;
}

/* Human name of a backend kind. */
const char *
hv_kind_name(enum hv_kind kind)
{
	switch (kind) {
	case HV_KIND_ABSENT:
		return "absent";
	case HV_KIND_HARDWARE:
		return "hardware";
	case HV_KIND_PVM:
		return "pvm";
	case HV_KIND_FAKE:
		return "fake";
	}
	return "unknown";
}

/* The KVM API version the fake pretends to speak. */
int
hv_api_version(void)
{
	return 12;
}

/* Create an empty fake VM. */
int
hv_create(struct hv **out, unsigned ncpus)
{
	struct hv	*hv;
	int		 rc;

	if (ncpus < 1 || ncpus > HV_MAX_VCPUS)
		return -EINVAL;
	hv = xcalloc(1, sizeof(*hv));
	hv->ncpus = ncpus;
	if ((rc = pthread_mutex_init(&hv->lock, NULL)) != 0) {
		free(hv);
		return -rc;
	}
	*out = hv;
	return 0;
}

/* Free the fake VM; its vCPUs are gone already. */
void
hv_destroy(struct hv *hv)
{
	if (hv == NULL)
		return;
	pthread_mutex_destroy(&hv->lock);
	for (unsigned i = 0; i < HV_FAKE_MAX_SLOTS; i++)
		free(hv->slots[i].dirty);
	free(hv->irqfds);
	free(hv->ioevents);
	free(hv);
}

/* Record a memory slot, with KVM's alignment and overlap rules. */
int
hv_mem_map(struct hv *hv, uint32_t slot, uint64_t gpa, uint64_t size,
    void *hva, unsigned flags)
{
	struct fake_slot	*s;
	uint32_t		 i;
	int			 rc = 0;

	if (slot >= HV_FAKE_MAX_SLOTS || gpa % FAKE_PAGE != 0 ||
	    size % FAKE_PAGE != 0 || (uintptr_t)hva % FAKE_PAGE != 0 ||
	    gpa + size < gpa)
		return -EINVAL;
	if (size == 0)
		return hv_mem_unmap(hv, slot);
	pthread_mutex_lock(&hv->lock);
	for (i = 0; i < HV_FAKE_MAX_SLOTS; i++) {
		s = &hv->slots[i];
		if (i == slot || !s->used)
			continue;
		if (gpa < s->gpa + s->size && s->gpa < gpa + size) {
			rc = -EEXIST;
			goto out;
		}
	}
	s = &hv->slots[slot];
	free(s->dirty);
	s->used = true;
	s->gpa = gpa;
	s->size = size;
	s->hva = hva;
	s->flags = flags;
	s->dirty = (flags & HV_MEM_LOG_DIRTY) ? xcalloc((size / FAKE_PAGE +
	    63) / 64, sizeof(uint64_t)) : NULL;
out:
	pthread_mutex_unlock(&hv->lock);
	return rc;
}

/* Forget a memory slot. */
int
hv_mem_unmap(struct hv *hv, uint32_t slot)
{
	if (slot >= HV_FAKE_MAX_SLOTS)
		return -EINVAL;
	pthread_mutex_lock(&hv->lock);
	free(hv->slots[slot].dirty);
	memset(&hv->slots[slot], 0, sizeof(hv->slots[slot]));
	pthread_mutex_unlock(&hv->lock);
	return 0;
}

/* Hand out the slot's log and start a new one, as KVM_GET_DIRTY_LOG. */
int
hv_mem_dirty_log(struct hv *hv, uint32_t slot, uint64_t *bitmap)
{
	struct fake_slot	*s;
	size_t			 words;
	int			 rc = 0;

	if (slot >= HV_FAKE_MAX_SLOTS)
		return -EINVAL;
	pthread_mutex_lock(&hv->lock);
	s = &hv->slots[slot];
	if (!s->used || s->dirty == NULL) {
		rc = -ENOENT;
		goto out;
	}
	words = (s->size / FAKE_PAGE + 63) / 64;
	memcpy(bitmap, s->dirty, words * sizeof(uint64_t));
	memset(s->dirty, 0, words * sizeof(uint64_t));
out:
	pthread_mutex_unlock(&hv->lock);
	return rc;
}

/* The "guest" wrote [gpa, gpa + len): log it where a slot logs. */
void
hv_fake_guest_dirty(struct hv *hv, uint64_t gpa, uint64_t len)
{
	struct fake_slot	*s;
	uint64_t		 a, end;
	unsigned		 i;

	pthread_mutex_lock(&hv->lock);
	for (i = 0; i < HV_FAKE_MAX_SLOTS; i++) {
		s = &hv->slots[i];
		if (!s->used || s->dirty == NULL)
			continue;
		a = MAX(gpa, s->gpa) / FAKE_PAGE * FAKE_PAGE;
		end = MIN(gpa + len, s->gpa + s->size);
		for (; a < end; a += FAKE_PAGE)
			s->dirty[(a - s->gpa) / FAKE_PAGE / 64] |=
			    1ULL << ((a - s->gpa) / FAKE_PAGE % 64);
	}
	pthread_mutex_unlock(&hv->lock);
}

/* Record an irq line level and count rising edges. */
int
hv_irq_line(struct hv *hv, uint32_t gsi, int level)
{
	struct fake_irq	*irq;

	if (gsi >= HV_FAKE_MAX_GSI)
		return -EINVAL;
	level = level ? 1 : 0;
	pthread_mutex_lock(&hv->lock);
	irq = &hv->irqs[gsi];
	if (level && !irq->level)
		irq->edges++;
	irq->level = level;
	pthread_mutex_unlock(&hv->lock);
	return 0;
}

/* Record an irqfd; the same (fd, gsi) twice is EBUSY as in KVM. */
int
hv_irqfd(struct hv *hv, int fd, uint32_t gsi, int resamplefd)
{
	size_t	i;
	int	rc = 0;

	if (gsi >= HV_FAKE_MAX_GSI || fd < 0)
		return -EINVAL;
	pthread_mutex_lock(&hv->lock);
	for (i = 0; i < hv->nirqfds; i++) {
		if (hv->irqfds[i].fd == fd) {
			rc = -EBUSY;
			goto out;
		}
	}
	hv->irqfds = xreallocarray(hv->irqfds, hv->nirqfds + 1,
	    sizeof(*hv->irqfds));
	hv->irqfds[hv->nirqfds].fd = fd;
	hv->irqfds[hv->nirqfds].gsi = gsi;
	hv->irqfds[hv->nirqfds].resamplefd = resamplefd;
	hv->nirqfds++;
out:
	pthread_mutex_unlock(&hv->lock);
	return rc;
}

/* Forget an irqfd. */
int
hv_irqfd_remove(struct hv *hv, int fd, uint32_t gsi)
{
	size_t	i;
	int	rc = -ENOENT;

	pthread_mutex_lock(&hv->lock);
	for (i = 0; i < hv->nirqfds; i++) {
		if (hv->irqfds[i].fd == fd && hv->irqfds[i].gsi == gsi) {
			hv->irqfds[i] = hv->irqfds[--hv->nirqfds];
			rc = 0;
			break;
		}
	}
	pthread_mutex_unlock(&hv->lock);
	return rc;
}

/* Is e the same registration as the given arguments? */
static bool
ioevent_same(const struct fake_ioevent *e, int fd, uint64_t addr,
    uint32_t len, unsigned flags, uint64_t data)
{
	if (e->fd != fd || e->addr != addr || e->len != len ||
	    e->flags != flags)
		return false;
	return !(flags & HV_IOEVENT_DATAMATCH) || e->data == data;
}

/* Record an ioeventfd; a duplicate is EEXIST as in KVM. */
int
hv_ioeventfd(struct hv *hv, int fd, uint64_t addr, uint32_t len,
    unsigned flags, uint64_t data)
{
	struct fake_ioevent	*e;
	size_t			 i;
	int			 rc = 0;

	if (fd < 0 || !(len == 0 || len == 1 || len == 2 || len == 4 ||
	    len == 8) || (len == 0 && (flags & HV_IOEVENT_DATAMATCH)))
		return -EINVAL;
	pthread_mutex_lock(&hv->lock);
	for (i = 0; i < hv->nioevents; i++) {
		e = &hv->ioevents[i];
		if (e->addr == addr && e->len == len &&
		    (e->flags & HV_IOEVENT_PIO) == (flags & HV_IOEVENT_PIO) &&
		    (!(e->flags & HV_IOEVENT_DATAMATCH) ||
		    !(flags & HV_IOEVENT_DATAMATCH) || e->data == data)) {
			rc = -EEXIST;
			goto out;
		}
	}
	hv->ioevents = xreallocarray(hv->ioevents, hv->nioevents + 1,
	    sizeof(*hv->ioevents));
	e = &hv->ioevents[hv->nioevents++];
	e->fd = fd;
	e->addr = addr;
	e->len = len;
	e->flags = flags;
	e->data = data;
out:
	pthread_mutex_unlock(&hv->lock);
	return rc;
}

/* Forget an ioeventfd registered with the same arguments. */
int
hv_ioeventfd_remove(struct hv *hv, int fd, uint64_t addr, uint32_t len,
    unsigned flags, uint64_t data)
{
	size_t	i;
	int	rc = -ENOENT;

	pthread_mutex_lock(&hv->lock);
	for (i = 0; i < hv->nioevents; i++) {
		if (ioevent_same(&hv->ioevents[i], fd, addr, len, flags,
		    data)) {
			hv->ioevents[i] = hv->ioevents[--hv->nioevents];
			rc = 0;
			break;
		}
	}
	pthread_mutex_unlock(&hv->lock);
	return rc;
}

/* Create a fake vCPU in the reset state the x86 architecture defines. */
int
hv_vcpu_create(struct hv *hv, unsigned id, struct hv_vcpu **out)
{
	struct hv_vcpu	*v;
	int		 rc;

	if (id >= hv->ncpus)
		return -EINVAL;
	pthread_mutex_lock(&hv->lock);
	rc = hv->vcpus[id] != NULL ? -EEXIST : 0;
	pthread_mutex_unlock(&hv->lock);
	if (rc != 0)
		return rc;
	v = xcalloc(1, sizeof(*v));
	v->hv = hv;
	v->id = id;
	if ((rc = pthread_mutex_init(&v->lock, NULL)) != 0) {
		rc = -rc;
		goto err_free;
	}
	if ((rc = pthread_cond_init(&v->cond, NULL)) != 0) {
		rc = -rc;
		goto err_mutex;
	}
	v->regs.rip = 0xfff0;
	v->regs.rflags = 0x2;
	v->sregs.cs.selector = 0xf000;
	v->sregs.cs.base = 0xffff0000;
	v->sregs.cr0 = 0x60000010;
	v->sregs.apic_base = 0xfee00000 | (id == 0 ? 0x100 : 0) | 0x800;
	pthread_mutex_lock(&hv->lock);
	hv->vcpus[id] = v;
	pthread_mutex_unlock(&hv->lock);
	*out = v;
	return 0;

err_mutex:
	pthread_mutex_destroy(&v->lock);
err_free:
	free(v);
	return rc;
}

/* Free a fake vCPU and whatever is still queued for it. */
void
hv_vcpu_destroy(struct hv_vcpu *v)
{
	struct fake_step	*s, *next;

	if (v == NULL)
		return;
	pthread_mutex_lock(&v->hv->lock);
	v->hv->vcpus[v->id] = NULL;
	pthread_mutex_unlock(&v->hv->lock);
	for (s = v->head; s != NULL; s = next) {
		next = s->next;
		free(s);
	}
	pthread_cond_destroy(&v->cond);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

/* The vCPU's index. */
unsigned
hv_vcpu_id(const struct hv_vcpu *v)
{
	return v->id;
}

/* Stored general-purpose registers. */
int
hv_vcpu_get_regs(struct hv_vcpu *v, struct hv_regs *r)
{
	pthread_mutex_lock(&v->lock);
	*r = v->regs;
	pthread_mutex_unlock(&v->lock);
	return 0;
}

/* Store general-purpose registers. */
int
hv_vcpu_set_regs(struct hv_vcpu *v, const struct hv_regs *r)
{
	pthread_mutex_lock(&v->lock);
	v->regs = *r;
	pthread_mutex_unlock(&v->lock);
	return 0;
}

/* Stored system registers. */
int
hv_vcpu_get_sregs(struct hv_vcpu *v, struct hv_sregs *s)
{
	pthread_mutex_lock(&v->lock);
	*s = v->sregs;
	pthread_mutex_unlock(&v->lock);
	return 0;
}

/* Store system registers. */
int
hv_vcpu_set_sregs(struct hv_vcpu *v, const struct hv_sregs *s)
{
	pthread_mutex_lock(&v->lock);
	v->sregs = *s;
	pthread_mutex_unlock(&v->lock);
	return 0;
}

/* Payload size of an exit: what lives in the run page. */
static int
exit_payload(const struct hv_exit *e, size_t *len)
{
	uint64_t	n = 0;

	if (e->reason == HV_EXIT_IO)
		n = (uint64_t)e->io.size * e->io.count;
	else if (e->reason == HV_EXIT_MMIO)
		n = e->mmio.len;
	if (n > HV_FAKE_RUN_DATA)
		return -EINVAL;
	*len = n;
	return 0;
}

/*
 * Return the next scripted exit; with none queued, wait for a kick or a
 * queued exit.  A pending kick comes first, as KVM's immediate exit does.
 */
int
hv_vcpu_run(struct hv_vcpu *v, struct hv_exit *exit)
{
	struct fake_step	*s;

	pthread_mutex_lock(&v->lock);
	/* The caller has answered the previous exit: keep what it wrote. */
	memcpy(v->last, v->page, v->page_len);
	v->last_len = v->page_len;
	v->page_len = 0;
	while (!v->kicked && v->head == NULL)
		pthread_cond_wait(&v->cond, &v->lock);
	if (v->kicked) {
		v->kicked = false;
		v->nintr++;
		memset(exit, 0, sizeof(*exit));
		exit->reason = HV_EXIT_INTR;
		goto out;
	}
	s = v->head;
	if ((v->head = s->next) == NULL)
		v->tail = NULL;
	v->nqueued--;
	*exit = s->exit;
	memcpy(v->page, s->data, s->len);
	v->page_len = s->len;
	if (exit->reason == HV_EXIT_IO)
		exit->io.data = v->page;
	else if (exit->reason == HV_EXIT_MMIO)
		exit->mmio.data = v->page;
	if (exit->reason == HV_EXIT_INTR)
		v->nintr++;
	free(s);
out:
	pthread_mutex_unlock(&v->lock);
	return 0;
}

/* Wake the vCPU, or make its next run return at once. */
void
hv_vcpu_kick(struct hv_vcpu *v)
{
	pthread_mutex_lock(&v->lock);
	v->kicked = true;
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
}

/* The flag a test set with hv_fake_set_halted(). */
int
hv_vcpu_halted_for_good(struct hv_vcpu *v, bool *out)
{
	pthread_mutex_lock(&v->lock);
	*out = v->halted;
	pthread_mutex_unlock(&v->lock);
	return 0;
}

/* Test API: see hv/fake.h. */
bool
hv_fake_slot(struct hv *hv, uint32_t slot, uint64_t *gpa, uint64_t *size,
    void **hva, unsigned *flags)
{
	struct fake_slot	s;

	if (slot >= HV_FAKE_MAX_SLOTS)
		return false;
	pthread_mutex_lock(&hv->lock);
	s = hv->slots[slot];
	pthread_mutex_unlock(&hv->lock);
	if (!s.used)
		return false;
	if (gpa != NULL)
		*gpa = s.gpa;
	if (size != NULL)
		*size = s.size;
	if (hva != NULL)
		*hva = s.hva;
	if (flags != NULL)
		*flags = s.flags;
	return true;
}

/* Test API: see hv/fake.h. */
int
hv_fake_irq_level(struct hv *hv, uint32_t gsi, unsigned *edges)
{
	struct fake_irq	irq = { 0, 0 };

	if (gsi < HV_FAKE_MAX_GSI) {
		pthread_mutex_lock(&hv->lock);
		irq = hv->irqs[gsi];
		pthread_mutex_unlock(&hv->lock);
	}
	if (edges != NULL)
		*edges = irq.edges;
	return irq.level;
}

/* Read an eventfd's counter if it is readable now; 0 otherwise. */
static uint64_t
eventfd_take(int fd)
{
	struct pollfd	pfd = { .fd = fd, .events = POLLIN };
	uint64_t	n;

	if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLIN))
		return 0;
	if (read(fd, &n, sizeof(n)) != sizeof(n))
		return 0;
	return n;
}

/* Test API: see hv/fake.h. */
uint64_t
hv_fake_irqfd_fired(struct hv *hv, uint32_t gsi)
{
	uint64_t	n = 0;
	size_t		i;

	pthread_mutex_lock(&hv->lock);
	for (i = 0; i < hv->nirqfds; i++)
		if (hv->irqfds[i].gsi == gsi)
			n += eventfd_take(hv->irqfds[i].fd);
	pthread_mutex_unlock(&hv->lock);
	return n;
}

/* Test API: see hv/fake.h. */
unsigned
hv_fake_eoi(struct hv *hv, uint32_t gsi)
{
	uint64_t	one = 1;
	unsigned	n = 0;
	size_t		i;

	pthread_mutex_lock(&hv->lock);
	for (i = 0; i < hv->nirqfds; i++) {
		if (hv->irqfds[i].gsi != gsi || hv->irqfds[i].resamplefd < 0)
			continue;
		if (write(hv->irqfds[i].resamplefd, &one, sizeof(one)) ==
		    sizeof(one))
			n++;
	}
	pthread_mutex_unlock(&hv->lock);
	return n;
}

/* Signal the first ioeventfd matching a guest write, as KVM would. */
static bool
guest_write(struct hv *hv, uint64_t addr, uint32_t len, uint64_t data,
    unsigned pio)
{
	const struct fake_ioevent	*e;
	uint64_t			 one = 1, mask;
	size_t				 i;
	bool				 hit = false;

	mask = len >= 8 ? ~0ULL : (1ULL << (len * 8)) - 1;
	pthread_mutex_lock(&hv->lock);
	for (i = 0; i < hv->nioevents; i++) {
		e = &hv->ioevents[i];
		if ((e->flags & HV_IOEVENT_PIO) != pio || e->addr != addr)
			continue;
		if (e->len != 0 && e->len != len)
			continue;
		if ((e->flags & HV_IOEVENT_DATAMATCH) &&
		    (e->data & mask) != (data & mask))
			continue;
		hit = write(e->fd, &one, sizeof(one)) == sizeof(one);
		break;
	}
	pthread_mutex_unlock(&hv->lock);
	return hit;
}

/* Test API: see hv/fake.h. */
bool
hv_fake_guest_write(struct hv *hv, uint64_t addr, uint32_t len,
    uint64_t data)
{
	return guest_write(hv, addr, len, data, 0);
}

/* Test API: see hv/fake.h. */
bool
hv_fake_guest_pio(struct hv *hv, uint16_t port, uint32_t len, uint64_t data)
{
	return guest_write(hv, port, len, data, HV_IOEVENT_PIO);
}

/* Test API: see hv/fake.h. */
struct hv_vcpu *
hv_fake_vcpu(struct hv *hv, unsigned id)
{
	struct hv_vcpu	*v = NULL;

	if (id < HV_MAX_VCPUS) {
		pthread_mutex_lock(&hv->lock);
		v = hv->vcpus[id];
		pthread_mutex_unlock(&hv->lock);
	}
	return v;
}

/* Test API: see hv/fake.h. */
int
hv_fake_queue_exit(struct hv_vcpu *v, const struct hv_exit *exit,
    const void *data)
{
	struct fake_step	*s;
	size_t			 len;

	if (exit_payload(exit, &len) < 0)
		return -EINVAL;
	s = xcalloc(1, sizeof(*s) + len);
	s->exit = *exit;
	s->len = len;
	if (data != NULL)
		memcpy(s->data, data, len);
	pthread_mutex_lock(&v->lock);
	if (v->tail != NULL)
		v->tail->next = s;
	else
		v->head = s;
	v->tail = s;
	v->nqueued++;
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
	return 0;
}

/* Test API: see hv/fake.h. */
unsigned
hv_fake_queued(struct hv_vcpu *v)
{
	unsigned	n;

	pthread_mutex_lock(&v->lock);
	n = v->nqueued;
	pthread_mutex_unlock(&v->lock);
	return n;
}

/* Test API: see hv/fake.h. */
const uint8_t *
hv_fake_last_data(struct hv_vcpu *v, size_t *len)
{
	const uint8_t	*p;

	pthread_mutex_lock(&v->lock);
	p = v->last_len > 0 ? v->last : NULL;
	if (len != NULL)
		*len = v->last_len;
	pthread_mutex_unlock(&v->lock);
	return p;
}

/* Test API: see hv/fake.h. */
void
hv_fake_set_halted(struct hv_vcpu *v, bool halted)
{
	pthread_mutex_lock(&v->lock);
	v->halted = halted;
	pthread_mutex_unlock(&v->lock);
}

/* Test API: see hv/fake.h. */
unsigned
hv_fake_intr_count(struct hv_vcpu *v)
{
	unsigned	n;

	pthread_mutex_lock(&v->lock);
	n = v->nintr;
	pthread_mutex_unlock(&v->lock);
	return n;
}

/*
 * Snapshot state, in the same framing as the kvm backend's blobs but
 * another magic: "FAKV" for a vCPU (regs, sregs), "FAKM" for the VM
 * (irq levels, clock).
 */
#define FAKE_VCPU_MAGIC		0x564b4146U
#define FAKE_VM_MAGIC		0x4d4b4146U
#define FAKE_STATE_VERSION	1

int
hv_vcpu_save(struct hv_vcpu *v, uint8_t **buf, size_t *len)
{
	pthread_mutex_lock(&v->lock);
	hv_blob_begin(buf, len, FAKE_VCPU_MAGIC, FAKE_STATE_VERSION);
	hv_blob_rec(buf, len, 1, &v->regs, sizeof(v->regs));
	hv_blob_rec(buf, len, 2, &v->sregs, sizeof(v->sregs));
	pthread_mutex_unlock(&v->lock);
	return 0;
}

int
hv_vcpu_restore(struct hv_vcpu *v, const uint8_t *buf, size_t len)
{
	struct hv_regs	r;
	struct hv_sregs	s;
	int		rc;

	if ((rc = hv_blob_check(buf, len, FAKE_VCPU_MAGIC,
	    FAKE_STATE_VERSION)) < 0)
		return rc;
	if (hv_blob_get(buf, len, 1, &r, sizeof(r)) < 0 ||
	    hv_blob_get(buf, len, 2, &s, sizeof(s)) < 0)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	v->sregs = s;
	v->regs = r;
	pthread_mutex_unlock(&v->lock);
	return 0;
}

int
hv_save(struct hv *hv, uint8_t **buf, size_t *len)
{
	pthread_mutex_lock(&hv->lock);
	hv->clock += 1000;		/* time goes on between saves */
	hv_blob_begin(buf, len, FAKE_VM_MAGIC, FAKE_STATE_VERSION);
	hv_blob_rec(buf, len, 1, hv->irqs, sizeof(hv->irqs));
	hv_blob_rec(buf, len, 2, &hv->clock, sizeof(hv->clock));
	pthread_mutex_unlock(&hv->lock);
	return 0;
}

int
hv_restore(struct hv *hv, const uint8_t *buf, size_t len)
{
	struct fake_irq	irqs[HV_FAKE_MAX_GSI];
	uint64_t	clock = 0;
	int		rc;

	if ((rc = hv_blob_check(buf, len, FAKE_VM_MAGIC,
	    FAKE_STATE_VERSION)) < 0)
		return rc;
	if (hv_blob_get(buf, len, 1, irqs, sizeof(irqs)) < 0 ||
	    hv_blob_get(buf, len, 2, &clock, sizeof(clock)) < 0)
		return -EINVAL;
	pthread_mutex_lock(&hv->lock);
	memcpy(hv->irqs, irqs, sizeof(irqs));
	hv->clock = clock;
	pthread_mutex_unlock(&hv->lock);
	return 0;
}

/* The fake's CPU: a fixed feature set, overridable for tests. */
static uint32_t fake_features[HV_CPU_FEATURE_WORDS] = {
	0x80202001, 0x078bfbff, 0x0, 0x0, 0x0, 0x1, 0x2c100800, 0x3, 0x0, 0x0,
};

int
hv_cpu_features(struct hv *hv, uint32_t words[HV_CPU_FEATURE_WORDS])
{
	(void)hv;
	memcpy(words, fake_features, sizeof(fake_features));
	return 0;
}

int
hv_cpu_compatible(struct hv *hv, const uint32_t saved[HV_CPU_FEATURE_WORDS],
    char *why, size_t whylen)
{
	unsigned	i;

	(void)hv;
	for (i = 0; i < HV_CPU_FEATURE_WORDS; i++)
		if (saved[i] & ~fake_features[i]) {
			snprintf(why, whylen, "this host's CPU lacks features "
			    "the snapshot's guest saw: word %u bits 0x%08x", i,
			    saved[i] & ~fake_features[i]);
			return -ENOTSUP;
		}
	return 0;
}

void
hv_fake_set_cpu_features(const uint32_t words[HV_CPU_FEATURE_WORDS])
{
	memcpy(fake_features, words, sizeof(fake_features));
}
