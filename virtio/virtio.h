/*
 * virtio: the virtio-mmio transport (virtio 1.2 section 4.2, version 2
 * registers), split virtqueues (section 2.7) and the device model
 * interface every device file implements.  One file per device, each a
 * static const struct virtio_dev_ops with one public constructor.
 *
 * Threads: everything runs on the reactor thread.  Queue kicks arrive
 * through ioeventfds (never on a vCPU thread), interrupts leave through
 * irqfds.  Guest memory is reached only through the gmem accessor, and
 * every index, address and length the guest supplies is checked: a
 * malformed ring marks the device NEEDS_RESET (status bit 0x40) and
 * raises a configuration interrupt; nothing the guest writes can crash
 * the process or touch memory outside the guest.
 */
#ifndef SMX_VIRTIO_H
#define SMX_VIRTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/base.h"
#include "hv/hv.h"
#include "reactor/reactor.h"

struct virtio_dev;
struct virtio_queue;

/* Device IDs (section 5). */
#define VIRTIO_ID_NET		1
#define VIRTIO_ID_BLOCK		2
#define VIRTIO_ID_CONSOLE	3
#define VIRTIO_ID_RNG		4
#define VIRTIO_ID_BALLOON	5
#define VIRTIO_ID_VSOCK		19
#define VIRTIO_ID_FS		26

/* Transport feature bits the core owns (section 6). */
#define VIRTIO_F_INDIRECT_DESC	28
#define VIRTIO_F_EVENT_IDX	29
#define VIRTIO_F_VERSION_1	32

#define VIRTIO_MAX_QUEUES	8
#define VIRTIO_MAX_CHAIN	256	/* segments gathered per chain */

/* What the transport needs from the machine. */
struct virtio_host {
	struct reactor		*r;
	struct hv		*hv;
	const struct gmem	*mem;
};

/* One segment of a descriptor chain, already bounds-checked. */
struct virtio_seg {
	uint8_t		*addr;	/* host pointer into guest memory */
	uint32_t	 len;
	bool		 write;	/* device writes (guest reads) */
};

/* A descriptor chain popped from a queue.  Driver-readable segments come
 * first, then device-writable ones (section 2.7.4.2 requires it). */
struct virtio_chain {
	uint16_t		head;
	unsigned		nseg;
	unsigned		nread;		/* segments the device reads */
	uint32_t		read_len;	/* bytes the device may read */
	uint32_t		write_len;	/* bytes the device may write */
	struct virtio_seg	seg[VIRTIO_MAX_CHAIN];
};

struct virtio_dev_ops {
	const char	*name;		/* "rng", "vsock", ... */
	uint32_t	 device_id;
	unsigned	 nqueues;	/* 1..VIRTIO_MAX_QUEUES */
	uint16_t	 queue_max;	/* QueueNumMax, a power of two */
	uint32_t	 config_size;	/* bytes of device config space */
	uint64_t	 features;	/* device bits; the core adds its own */

	/* Required: the driver kicked queue q (DRIVER_OK is set). */
	void	(*notify)(struct virtio_dev *, void *priv, unsigned q);
	/* Optional: reset to the initial state (device reset or
	 * NEEDS_RESET recovery); the core has already dropped the queues. */
	void	(*reset)(struct virtio_dev *, void *priv);
	/* Optional: the driver set DRIVER_OK; features are final. */
	void	(*driver_ok)(struct virtio_dev *, void *priv);
	/* Optional: config space access at offset (bounds already checked
	 * against config_size); NULL reads zeroes / ignores writes. */
	void	(*config_read)(struct virtio_dev *, void *priv, uint32_t off,
		    void *data, uint32_t len);
	void	(*config_write)(struct virtio_dev *, void *priv, uint32_t off,
		    const void *data, uint32_t len);
	/*
	 * Optional snapshot support: save appends the device's state to
	 * *buf (xreallocarray-grown, *len bytes used) and returns 0 or
	 * -errno; load restores it and returns 0 or -errno (-EINVAL on a
	 * malformed record: never trust a snapshot either).
	 */
	int	(*save)(struct virtio_dev *, void *priv, uint8_t **buf,
		    size_t *len);
	int	(*load)(struct virtio_dev *, void *priv, const uint8_t *buf,
		    size_t len);
	/* Optional: free priv when the device is freed. */
	void	(*free)(void *priv);
};

/*
 * Create a virtio-mmio device at guest physical `base` (one
 * LAYOUT_VIRTIO_MMIO_SIZE window) raising IOAPIC pin `irq` through an
 * irqfd with a resample fd (level-triggered semantics: re-raised on EOI
 * while InterruptStatus is non-zero).  Queue notifications are
 * ioeventfds on the QueueNotify register, one per queue (datamatch).
 * NULL + errno on failure.
 */
struct virtio_dev *virtio_mmio_create(const struct virtio_host *,
	    uint64_t base, uint32_t irq, const struct virtio_dev_ops *,
	    void *priv);
void	virtio_dev_free(struct virtio_dev *);

/* A guest access to the device's MMIO window (offset from base), from
 * the machine's MMIO bus on the reactor thread.  Reads fill data. */
void	virtio_mmio_access(struct virtio_dev *, uint64_t off, bool write,
	    uint8_t *data, uint8_t len);

/* "virtio_mmio.device=4K@0xd0000000:16": the kernel command-line word
 * that declares this device.  Returns snprintf's count. */
int	virtio_mmio_cmdline(const struct virtio_dev *, char *, size_t);

/* The device's private state, queues and negotiated features. */
void		*virtio_dev_priv(struct virtio_dev *);
struct virtio_queue *virtio_dev_queue(struct virtio_dev *, unsigned q);
bool		 virtio_dev_has(const struct virtio_dev *, unsigned feature);
const struct gmem *virtio_dev_mem(const struct virtio_dev *);
struct reactor	*virtio_dev_reactor(const struct virtio_dev *);

/* The device found the guest's input nonsensical: set NEEDS_RESET,
 * raise a configuration interrupt, stop processing until reset.  `why`
 * is logged once (rate-limited) with the device name. */
void	virtio_dev_fail(struct virtio_dev *, const char *why, ...)
	    PRINTF(2, 3);
/* Device config changed: bump ConfigGeneration, raise a config
 * interrupt. */
void	virtio_dev_config_changed(struct virtio_dev *);

/*
 * Take the next available chain.  Returns 1 with *c filled, 0 when the
 * queue is empty (or not ready), -EINVAL when the ring or chain is
 * malformed (the device is then NEEDS_RESET).  Chains are bounded by the
 * queue size, loops are detected, indirect tables are followed once.
 */
int	virtio_queue_pop(struct virtio_queue *, struct virtio_chain *) WUR;
/* Return a chain to the driver with `written` bytes written into its
 * device-writable segments. */
void	virtio_queue_push(struct virtio_queue *, const struct virtio_chain *,
	    uint32_t written);
/* After pushing: interrupt the driver if it wants one (EVENT_IDX /
 * NO_INTERRUPT rules). */
void	virtio_queue_notify_guest(struct virtio_queue *);
/* True when the driver has made the queue ready. */
bool	virtio_queue_ready(const struct virtio_queue *);
uint16_t virtio_queue_size(const struct virtio_queue *);

/* Copy helpers over a chain's readable / writable segments, starting at
 * byte offset off; return bytes copied (short when the chain ends). */
size_t	virtio_chain_read(const struct virtio_chain *, size_t off, void *dst,
	    size_t len);
size_t	virtio_chain_write(const struct virtio_chain *, size_t off,
	    const void *src, size_t len);

#endif /* SMX_VIRTIO_H */
