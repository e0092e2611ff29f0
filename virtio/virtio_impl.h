/*
 * virtio core internals shared by virtio/mmio.c (the transport) and
 * virtio/queue.c (split virtqueues).  Device files must not include this:
 * they see only virtio/virtio.h.
 */
#ifndef SMX_VIRTIO_IMPL_H
#define SMX_VIRTIO_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "virtio/virtio.h"

/* Split ring layout (section 2.7): sizes for a queue of n entries. */
#define VRING_DESC_F_NEXT	1
#define VRING_DESC_F_WRITE	2
#define VRING_DESC_F_INDIRECT	4
#define VRING_AVAIL_F_NO_INTERRUPT	1

#define VRING_DESC_SIZE(n)	(16ULL * (n))
#define VRING_AVAIL_SIZE(n)	(6ULL + 2ULL * (n))	/* + used_event */
#define VRING_USED_SIZE(n)	(6ULL + 8ULL * (n))	/* + avail_event */

struct vring_desc_le {
	uint64_t	addr;
	uint32_t	len;
	uint16_t	flags;
	uint16_t	next;
};

struct virtio_queue {
	struct virtio_dev	*dev;
	unsigned		 index;
	struct reactor_eventfd	*kick;		/* the QueueNotify ioeventfd */

	/* Driver-programmed registers. */
	uint16_t		 num;
	bool			 ready;
	uint64_t		 desc_gpa, avail_gpa, used_gpa;

	/* Host views of the rings, resolved (and bounds-checked) when the
	 * queue is made ready; NULL otherwise. */
	uint8_t			*desc;
	uint8_t			*avail;
	uint8_t			*used;

	uint16_t		 last_avail;	/* next avail slot to take */
	uint16_t		 used_idx;	/* our copy of used->idx */
	uint16_t		 signalled_used; /* used_idx at last interrupt */
	bool			 signalled_valid;
};

struct virtio_dev {
	struct virtio_host		 host;
	uint64_t			 base;
	uint32_t			 irq;
	const struct virtio_dev_ops	*ops;
	void				*priv;

	uint64_t			 host_features;
	uint64_t			 driver_features;
	uint32_t			 dev_feat_sel;
	uint32_t			 drv_feat_sel;
	uint32_t			 queue_sel;
	uint32_t			 status;
	uint32_t			 isr;
	uint32_t			 config_gen;
	uint32_t			 shm_sel;	/* SHMSel */
	bool				 fail_logged;

	struct reactor_eventfd		*irqfd;
	struct reactor_eventfd		*resample;
	bool				 irqfd_registered;
	struct virtio_queue		 q[VIRTIO_MAX_QUEUES];
};

/* queue.c: set up / drop a queue's host views. */
int	virtio_queue_enable(struct virtio_queue *) WUR;
void	virtio_queue_disable(struct virtio_queue *);
/* mmio.c: set InterruptStatus bits and signal the irqfd. */
void	virtio_dev_raise(struct virtio_dev *, uint32_t isr_bits);
/* True while the device may process its queues. */
bool	virtio_dev_live(const struct virtio_dev *);

#endif /* SMX_VIRTIO_IMPL_H */
