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

/* virtio-mmio version 2 register offsets (section 4.2.2). */
#define VIRTIO_MMIO_MAGIC_VALUE		0x000	/* "virt" */
#define VIRTIO_MMIO_VERSION		0x004
#define VIRTIO_MMIO_DEVICE_ID		0x008
#define VIRTIO_MMIO_VENDOR_ID		0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES	0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL	0x014
#define VIRTIO_MMIO_DRIVER_FEATURES	0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL	0x024
#define VIRTIO_MMIO_QUEUE_SEL		0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX	0x034
#define VIRTIO_MMIO_QUEUE_NUM		0x038
#define VIRTIO_MMIO_QUEUE_READY		0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY	0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS	0x060
#define VIRTIO_MMIO_INTERRUPT_ACK	0x064
#define VIRTIO_MMIO_STATUS		0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW	0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH	0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW	0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH	0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW	0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH	0x0a4
#define VIRTIO_MMIO_SHM_SEL		0x0ac
#define VIRTIO_MMIO_SHM_LEN_LOW		0x0b0
#define VIRTIO_MMIO_SHM_LEN_HIGH	0x0b4
#define VIRTIO_MMIO_SHM_BASE_LOW	0x0b8
#define VIRTIO_MMIO_SHM_BASE_HIGH	0x0bc
#define VIRTIO_MMIO_CONFIG_GENERATION	0x0fc
#define VIRTIO_MMIO_CONFIG		0x100
#define VIRTIO_MMIO_WINDOW		0x1000	/* bytes of one device */

#define VIRTIO_MMIO_MAGIC	0x74726976	/* "virt", little-endian */
#define VIRTIO_MMIO_VENDOR	0x00584d53	/* "SMX\0" */

/* Device status bits (section 2.1) and InterruptStatus bits. */
#define VIRTIO_STATUS_ACKNOWLEDGE	0x01
#define VIRTIO_STATUS_DRIVER		0x02
#define VIRTIO_STATUS_DRIVER_OK		0x04
#define VIRTIO_STATUS_FEATURES_OK	0x08
#define VIRTIO_STATUS_NEEDS_RESET	0x40
#define VIRTIO_STATUS_FAILED		0x80
#define VIRTIO_ISR_USED			0x1
#define VIRTIO_ISR_CONFIG		0x2

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
	/*
	 * Optional: shared memory region `id` (section 2.10, read through
	 * the SHMSel / SHMLen / SHMBase registers).  Returns true and fills
	 * the region's guest physical base and length when the device has
	 * region id; false (or a NULL op) reads as "no such region".
	 */
	bool	(*shm_region)(struct virtio_dev *, void *priv, uint32_t id,
		    uint64_t *gpa, uint64_t *len);
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

/* The device status register and whether the device is NEEDS_RESET. */
uint32_t virtio_dev_status(const struct virtio_dev *);
bool	virtio_dev_needs_reset(const struct virtio_dev *);

/*
 * Snapshot the transport state (status, features, selectors, interrupt
 * status, config generation, every queue's registers and ring indices)
 * followed by the device's ops->save record: appended to *buf
 * (xreallocarray-grown, *len bytes used; *buf may start NULL with *len
 * 0).  Returns 0 or -errno.  Reactor thread, device quiescent.
 */
int	virtio_dev_save(struct virtio_dev *, uint8_t **buf, size_t *len) WUR;
/*
 * Restore what virtio_dev_save() wrote into a device created with the
 * same ops (device ID and queue count are checked) on a guest memory
 * holding the saved RAM: ring addresses are re-validated against it.
 * Then calls ops->load with the device's record (a device without load
 * accepts only an empty record).  -EINVAL on a malformed or mismatched
 * record (the device is left reset), 0 on success.  A pending interrupt
 * is signalled again.
 */
int	virtio_dev_load(struct virtio_dev *, const uint8_t *buf, size_t len)
	    WUR;

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

/* virtio-rng (virtio/rng.c): fills the driver's buffers from the host's
 * getrandom().  NULL + errno on failure. */
struct virtio_dev *virtio_rng_create(const struct virtio_host *,
	    uint64_t base, uint32_t irq);

/*
 * virtio-blk (virtio/blk.c): a disk backed by the raw image or block
 * device at path, opened O_RDONLY (and advertised VIRTIO_BLK_F_RO) when
 * readonly, else O_RDWR.  Capacity is the size rounded down to 512-byte
 * sectors, read once here.  Serves IN, OUT, FLUSH, GET_ID (a serial
 * derived from the file's device and inode), and when writable DISCARD
 * and WRITE_ZEROES.  The device owns the fd (closed by virtio_dev_free);
 * save/load keep no file state: on restore the owner creates the device
 * again from the same path.  NULL + errno on failure, with a one-line
 * message naming the path in err.
 */
struct virtio_dev *virtio_blk_create(const struct virtio_host *,
	    uint64_t base, uint32_t irq, const char *path, bool readonly,
	    char *err, size_t errlen);

/*
 * vsock
 *
 * virtio-vsock (virtio/vsock.c), stream sockets only, with a hybrid
 * AF_UNIX host side.  The device listens on the Unix socket uds_path
 * (a stale socket there is replaced; mode 0600): a host program connects
 * and writes "CONNECT <port>\n"; once the guest accepts, it reads
 * "OK <hostport>\n" and then the stream.  A malformed line, a refusal
 * or 5 s without an answer closes it with no OK.  A guest connection to
 * port P is bridged to the Unix socket "<uds_path>_P" (refused with RST
 * when nothing listens there).  guest_cid must be 3..0xfffffffe.  Open
 * streams are not snapshotted: after load the device sends the driver a
 * TRANSPORT_RESET event; the listener lives until virtio_dev_free.
 * NULL + errno on failure (ENAMETOOLONG, EEXIST for a non-socket file
 * at uds_path, EINVAL for a bad cid).
 */
struct virtio_dev *virtio_vsock_create(const struct virtio_host *,
	    uint64_t base, uint32_t irq, uint64_t guest_cid,
	    const char *uds_path);

/*
 * virtio-balloon (virtio/balloon.c, section 5.5).  Queues follow Linux's
 * numbering: inflate 0, deflate 1, stats 2 when STATS_VQ is negotiated,
 * then free page reporting (REPORTING, feature 5).  Inflated PFNs and
 * reported ranges are dropped with MADV_DONTNEED on the guest RAM
 * mapping (whole host pages inside guest RAM only).  Reactor thread.
 */
#define VIRTIO_BALLOON_NSTATS	32	/* stat tags kept (0..31) */

struct virtio_balloon_stats {
	/* The guest's last stats buffer (VIRTIO_BALLOON_S_* tags). */
	uint64_t	generation;	/* buffers received; 0: none yet */
	uint64_t	updated_ns;	/* now_ns() of the last one */
	uint32_t	present;	/* bit t: val[t] was reported */
	uint64_t	val[VIRTIO_BALLOON_NSTATS];
	/* Host-side counters since creation. */
	uint64_t	inflated;	/* PFNs received on inflateq */
	uint64_t	deflated;	/* PFNs received on deflateq */
	uint64_t	ignored;	/* inflated PFNs outside guest RAM */
	uint64_t	reported;	/* bytes of free page reports */
	uint64_t	dropped_bytes;	/* bytes madvise()d away */
};

/* Create the balloon at `base` / `irq` (see virtio_mmio_create).  The
 * target starts at 0 pages.  NULL + errno on failure. */
struct virtio_dev *virtio_balloon_create(const struct virtio_host *,
	    uint64_t base, uint32_t irq);
/* Ask the guest to hold `pages` 4 KiB pages in its balloon: updates
 * num_pages, bumps ConfigGeneration, raises a config interrupt (nothing
 * when unchanged). */
void	virtio_balloon_set_target(struct virtio_dev *, uint32_t pages);
/* The `actual` the driver last wrote (pages it holds). */
uint32_t virtio_balloon_actual(struct virtio_dev *);
/* Copy out the last stats and the counters.  0, or -ENODATA when no
 * stats buffer arrived yet (the counters are filled anyway). */
int	virtio_balloon_stats(struct virtio_dev *,
	    struct virtio_balloon_stats *);
/* Ask for fresh stats by returning the driver's stats buffer; the guest
 * answers with a new one (generation then grows).  0, -ENOTSUP without
 * STATS_VQ, -EAGAIN while no buffer is held (request in flight). */
int	virtio_balloon_request_stats(struct virtio_dev *);
/* Request stats every `ms` milliseconds (0 stops).  0 or -errno. */
int	virtio_balloon_stats_interval(struct virtio_dev *, unsigned ms);

/*
 * virtio-console (virtio/console.c, section 5.3): one port, no
 * MULTIPORT (Linux's hvc0); EMERG_WRITE offered.  Transmitted bytes go
 * to out_fd in order (held, guest waiting, while out_fd is full; dropped
 * once it fails, e.g. a closed pipe: callers ignore SIGPIPE).  in_fd
 * (-1: none) is read only while the driver has a receive buffer posted.
 * Neither fd is closed by the device.  NULL + errno on failure.
 */
struct virtio_dev *virtio_console_create(const struct virtio_host *,
	    uint64_t base, uint32_t irq, int out_fd, int in_fd);

/*
 * fs
 *
 * virtio-fs (virtio/fs.c, section 5.11): a FUSE server (fusefs/) for
 * one host directory, mounted in the guest by `tag` (at most 36 bytes).
 * Queues: hiprio (0: FORGET, BATCH_FORGET, INTERRUPT) and one request
 * queue (1).  No NOTIFICATION feature: the server's notifications fail
 * with -ENOSYS and cache timeouts do their job.  Requests run on a small
 * pool of worker threads (fusefs_handle may block); the reactor pushes
 * the replies.  A malformed request marks the device NEEDS_RESET.
 *
 * DAX: with opts->dax_window != 0 (a multiple of 2 MiB) the device
 * offers shared memory region 0 (VIRTIO_FS_SHMCAP_ID_CACHE) at guest
 * physical dax_gpa, backed by a host reservation of that size
 * registered as KVM memory slot dax_slot; the server's SETUPMAPPING
 * mmaps file ranges into it, REMOVEMAPPING puts zero pages back.
 * dax_slot and dax_gpa are ignored without a window.  The window is not
 * guest RAM: a descriptor pointing into it is refused like any address
 * outside RAM.  Snapshots of a device with a DAX window are refused
 * (-EOPNOTSUPP): the window's contents are file mappings.
 * NULL + errno on failure, with a one-line reason in err.
 */
struct fusefs_opts;
struct fusefs;
#define VIRTIO_FS_TAG_MAX	36
struct virtio_dev *virtio_fs_create(const struct virtio_host *,
	    uint64_t base, uint32_t irq, const struct fusefs_opts *,
	    const char *tag, uint32_t dax_slot, uint64_t dax_gpa, char *err,
	    size_t errlen);
/* The device's FUSE server (stats, tests). */
struct fusefs	*virtio_fs_server(struct virtio_dev *);

#endif /* SMX_VIRTIO_H */
