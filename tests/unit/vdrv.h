/*
 * vdrv: a virtio-mmio "guest driver" for unit tests.  It drives a device
 * made with virtio_mmio_create() from the guest's side, on guest memory
 * that is plain calloc'ed host memory, with the fake hypervisor (hv/fake)
 * and the reactor run on the test's own thread.  Link: vdrv.c,
 * virtio/mmio.c, virtio/queue.c, the device under test, reactor, base,
 * hv/fake.c, libevent.
 *
 * A device test in five steps:
 *
 *	struct vdrv_env env;  struct vdrv d;  uint32_t id, len;
 *	vdrv_env_init(&env, 16 << 20);                  guest RAM, reactor, hv
 *	dev = virtio_rng_create(&env.host, VDRV_BASE(0), VDRV_IRQ(0), ...);
 *	vdrv_attach(&d, &env, dev, VDRV_BASE(0), VDRV_IRQ(0));
 *	vdrv_start(&d, 0, 64);                        negotiate, queues, DRIVER_OK
 *	buf = vdrv_alloc(&env, 64, 8);                  guest buffer (a GPA)
 *	vdrv_add1(&d, 0, buf, 64, true);                one device-writable buffer
 *	vdrv_kick(&d, 0);                               ioeventfd -> device notify
 *	vdrv_wait_used(&d, 0, &id, &len, 1000);         runs the reactor
 *	memcpy(out, vdrv_ptr(&env, buf, len), len);
 *	vdrv_irq_fired(&d) / vdrv_isr_ack(&d)           interrupts
 *	virtio_dev_free(dev); vdrv_detach(&d); vdrv_env_fini(&env);
 *
 * Everything runs on the calling thread; functions that wait run the
 * reactor (so device callbacks, posts and timers run inside them).
 * Failures that mean the test itself is wrong (out of guest memory, bad
 * queue number) are fatal; device behaviour is reported to the caller.
 */
#ifndef SMX_TESTS_VDRV_H
#define SMX_TESTS_VDRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/base.h"
#include "hv/hv.h"
#include "reactor/reactor.h"
#include "virtio/virtio.h"

#define VDRV_RAM_GPA	0x100000ULL	/* guest RAM starts at 1 MiB */
#define VDRV_BASE(i)	(0xd0000000ULL + (uint64_t)(i) * VIRTIO_MMIO_WINDOW)
#define VDRV_IRQ(i)	(16u + (i))
#define VDRV_QMAX	256	/* largest queue vdrv drives */
#define VDRV_IND_MAX	32	/* entries of one indirect table */

/* The test machine: reactor, fake hv, guest RAM. */
struct vdrv_env {
	struct reactor		*r;
	struct hv		*hv;
	struct gmem		 mem;
	struct virtio_host	 host;	/* pass to the device constructor */
	uint8_t			*ram;
	uint64_t		 ram_size;
	uint64_t		 brk;	/* next free GPA for vdrv_alloc */
	size_t			 guard;	/* guard bytes each side; 0: calloc */
};

/* RAM of ram_size bytes (zeroed) at VDRV_RAM_GPA.  0 or -errno. */
int	vdrv_env_init(struct vdrv_env *, uint64_t ram_size);
/*
 * Same, but RAM is its own mapping with VDRV_GUARD bytes of PROT_NONE
 * right before and after it: a host access that strays past either end
 * of guest RAM faults at once (ASan does not watch mmap'd memory).  For
 * fuzzers.  0 or -errno.
 */
#define VDRV_GUARD	(1 << 20)
int	vdrv_env_init_guarded(struct vdrv_env *, uint64_t ram_size);
/* Free everything; free the devices (virtio_dev_free) first. */
void	vdrv_env_fini(struct vdrv_env *);
/* Run every reactor callback that is ready now; never blocks. */
void	vdrv_env_poll(struct vdrv_env *);
/* Run the reactor until cond(arg) is true or timeout_ms passes;
 * returns the last cond value. */
bool	vdrv_env_run_until(struct vdrv_env *, bool (*cond)(void *),
	    void *arg, unsigned timeout_ms);
/* Zeroed guest memory of len bytes aligned to align (a power of two):
 * its guest physical address.  Fatal when RAM is exhausted. */
uint64_t vdrv_alloc(struct vdrv_env *, uint64_t len, uint64_t align);
/* vdrv_alloc() + copy len bytes of data into it. */
uint64_t vdrv_alloc_data(struct vdrv_env *, const void *data, uint64_t len);
/* Host pointer to [gpa, gpa + len) of guest RAM, NULL if outside. */
void	*vdrv_ptr(struct vdrv_env *, uint64_t gpa, uint64_t len);

/* The driver's view of one queue.  Ring GPAs are public so a test can
 * scribble on the rings itself (see virtio_fuzz_test.c). */
struct vdrv_queue {
	uint16_t	 size;		/* 0: not set up */
	uint64_t	 desc, avail, used;	/* ring GPAs */
	uint64_t	 ind;		/* GPA of the indirect tables, or 0 */
	uint16_t	 avail_idx;	/* next avail->idx to publish */
	uint16_t	 last_used;	/* used entries taken */
	uint16_t	 free_head, nfree;
	uint16_t	 next[VDRV_QMAX];	/* free list */
	uint16_t	 chain_len[VDRV_QMAX];	/* descriptors per head */
};

struct vdrv {
	struct vdrv_env		*env;
	struct virtio_dev	*dev;
	uint64_t		 base;
	uint32_t		 irq;
	uint64_t		 features;	/* as accepted by FEATURES_OK */
	unsigned		 nqueues;	/* set up by vdrv_start */
	struct vdrv_queue	 q[VIRTIO_MAX_QUEUES];
};

/* Bind a driver to a device created at base / irq on env. */
void	vdrv_attach(struct vdrv *, struct vdrv_env *, struct virtio_dev *,
	    uint64_t base, uint32_t irq);
/* Forget the driver's state (nothing to free on the device side). */
void	vdrv_detach(struct vdrv *);

/* 32-bit register access at a window offset (VIRTIO_MMIO_*), through
 * virtio_mmio_access() as a trapped vCPU access would. */
uint32_t vdrv_read(struct vdrv *, uint32_t off);
void	vdrv_write(struct vdrv *, uint32_t off, uint32_t val);
/* The 64 device feature bits. */
uint64_t vdrv_device_features(struct vdrv *);

/*
 * Reset, ACKNOWLEDGE | DRIVER, accept exactly `features` (the caller
 * includes VIRTIO_F_VERSION_1 if it wants it: vdrv does not add bits),
 * set FEATURES_OK and read it back.  0, or -EPROTO when the device
 * refused (FEATURES_OK stayed clear).
 */
int	vdrv_negotiate(struct vdrv *, uint64_t features);
/* Allocate rings of `size` entries (power of two, <= VDRV_QMAX and
 * QueueNumMax) in guest RAM and make queue q ready.  0, or -EIO when
 * the device did not take it (QueueReady reads 0 / NEEDS_RESET). */
int	vdrv_queue_setup(struct vdrv *, unsigned q, uint16_t size);
/* Set DRIVER_OK. */
void	vdrv_driver_ok(struct vdrv *);
/*
 * The usual bring-up: negotiate (device features & want, plus
 * VERSION_1), set up every queue the device has (QueueNumMax != 0) with
 * min(qsize, QueueNumMax) entries, DRIVER_OK.  want = ~0ULL takes all
 * offered.  0 or -errno.
 */
int	vdrv_start(struct vdrv *, uint64_t want, uint16_t qsize);

/* One buffer of a chain: device-readable (write false) or -writable. */
struct vdrv_buf {
	uint64_t	gpa;
	uint32_t	len;
	bool		write;
};

/*
 * Put a chain of n buffers on queue q's available ring (readable ones
 * must come first, but vdrv does not check: tests may want bad
 * chains).  indirect: one descriptor pointing to a table of n entries
 * (n <= VDRV_IND_MAX).  Does not kick.  Returns the head id (what the
 * used ring will name), or -ENOSPC when descriptors ran out.
 */
int	vdrv_add(struct vdrv *, unsigned q, const struct vdrv_buf *,
	    unsigned n, bool indirect);
/* One-buffer shorthand. */
int	vdrv_add1(struct vdrv *, unsigned q, uint64_t gpa, uint32_t len,
	    bool write);
/* Kick queue q as the guest would (a 4-byte QueueNotify write matched
 * by the ioeventfd; falls back to a trapped write if none matched) and
 * run what became ready. */
void	vdrv_kick(struct vdrv *, unsigned q);
/* Take the next used element of q without waiting: true with *id /
 * *len (either may be NULL); frees its descriptors. */
bool	vdrv_used(struct vdrv *, unsigned q, uint32_t *id, uint32_t *len);
/* Same, running the reactor up to timeout_ms for one to appear. */
bool	vdrv_wait_used(struct vdrv *, unsigned q, uint32_t *id,
	    uint32_t *len, unsigned timeout_ms);
/* Used entries published by the device and not yet taken. */
uint16_t vdrv_used_pending(struct vdrv *, unsigned q);

/* Interrupt suppression, driver side: avail->flags NO_INTERRUPT, and
 * the used_event slot (EVENT_IDX).  avail_event reads the device's. */
void	vdrv_set_no_interrupt(struct vdrv *, unsigned q, bool);
void	vdrv_set_used_event(struct vdrv *, unsigned q, uint16_t);
uint16_t vdrv_avail_event(struct vdrv *, unsigned q);

/* Config space bytes [off, off + len) (offset within config), read or
 * written with 4-, 2- and 1-byte accesses as a driver would. */
void	vdrv_config_read(struct vdrv *, uint32_t off, void *, uint32_t len);
void	vdrv_config_write(struct vdrv *, uint32_t off, const void *,
	    uint32_t len);

/* How many times the device's irqfd fired since the last call (0:
 * none).  Reading resets the count. */
uint64_t vdrv_irq_fired(struct vdrv *);
/* Read InterruptStatus, write it back to InterruptACK, return it: what
 * a guest's interrupt handler does. */
uint32_t vdrv_isr_ack(struct vdrv *);
/* The guest's EOI: the fake signals the resample fd; the reactor runs
 * so the device can re-raise. */
void	vdrv_eoi(struct vdrv *);

#endif /* SMX_TESTS_VDRV_H */
