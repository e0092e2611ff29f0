/*
 * testguest: a freestanding 64-bit guest used by the KVM-tier tests.
 *
 * Runs in ring 0 with identity-mapped memory (first 4 GiB, 2 MiB pages),
 * general-purpose registers only, no interrupts.  Talks to the host over
 * the 8250 UART at port 0x3f8.
 *
 * Physical layout (keep a VMM's boot data clear of these):
 *   0x8000 - 0x8fff   AP real-mode trampoline (copied there by smp.c)
 *   0x100000 - _end   the image: text, data, bss, page tables, stacks
 */
#ifndef TESTGUEST_H
#define TESTGUEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define TG_LOAD_ADDR	0x100000UL
#define TG_TRAMPOLINE	0x8000UL	/* must match start.S */
#define TG_MAX_CPUS	32		/* must match start.S */

/* Xen PVH start_info (xen/include/public/arch-x86/hvm/start_info.h). */
#define HVM_START_MAGIC	0x336ec578U

struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	/* version >= 1 */
	uint64_t memmap_paddr;
	uint32_t memmap_entries;
	uint32_t reserved;
};

struct hvm_memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;		/* 1 = RAM, as in e820 */
	uint32_t reserved;
};

#define HVM_MEMMAP_RAM	1

/* Symbols from testguest.ld / start.S. */
extern char _start_image[], _end_image[];
extern char tramp_start[], tramp_end[];
extern volatile uint32_t ap_next_slot;

/* Port and MMIO access. */
static inline void
outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t
inb(uint16_t port)
{
	uint8_t v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint32_t
mmio_read32(uint64_t addr)
{
	return *(volatile uint32_t *)addr;
}

static inline void
mmio_write32(uint64_t addr, uint32_t v)
{
	*(volatile uint32_t *)addr = v;
}

static inline uint64_t
rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static inline void
cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

/* uart.c: polled 8250 output. */
void	uart_putc(char c);
void	uart_puts(const char *s);

/* lib.c */
void	*memset(void *d, int c, size_t n);
void	*memcpy(void *d, const void *s, size_t n);
int	 memcmp(const void *a, const void *b, size_t n);
size_t	 strlen(const char *s);
int	 strcmp(const char *a, const char *b);
int	 strncmp(const char *a, const char *b, size_t n);
/* Parses a whole decimal string; 0 on success, -1 if empty/garbage/overflow. */
int	 parse_u64(const char *s, uint64_t *out);
/* printf subset: %s %c %d %u %x %p, with l/ll, width and 0 flag. */
void	 tg_vprintf(const char *fmt, va_list ap);
void	 tg_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Identity-mapped physical address to pointer.  The asm hides the
 * constant from GCC, which otherwise warns about low addresses. */
static inline void *
phys(uint64_t addr)
{
	__asm__("" : "+r"(addr));
	return (void *)addr;
}

/* main.c: print "TESTGUEST FAIL <reason>" and leave as exit= says. */
void	 tg_fail(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

/*
 * Tests, selected by a command-line word; arg is the text after '=' (or
 * NULL).  A test prints its own lines prefixed "<word>: " and calls
 * tg_fail() on failure.
 */
void	 test_smp(const char *arg);
/* vdev.c: one test per virtio device (see README.md). */
void	 test_virtio_rng(const char *arg);
void	 test_virtio_blk(const char *arg);
void	 test_virtio_blk_ro(const char *arg);
void	 test_virtio_console(const char *arg);
void	 test_virtio_balloon(const char *arg);
void	 test_virtio_vsock(const char *arg);
void	 test_vsock_listen(const char *arg);
/* fs.c: FUSE over virtio-fs. */
void	 test_virtio_fs(const char *arg);
/* bench.c: the guest side of `make bench` (tests/bench/virtio_bench). */
void	 test_vsock_echo(const char *arg);
void	 test_blk_randread(const char *arg);
/* snap.c: counter + FUSE reads + vsock echo forever, for snapshots. */
void	 test_snap_loop(const char *arg);
/* Option words (virtio_mmio.device=, vsock-port=): 1 if taken, 0 if not
 * one of ours; a malformed option fails. */
int	 vdev_option(const char *word);
/* The RAM map from start_info (main.c), for tests that need free RAM. */
const struct hvm_start_info *tg_start_info(void);

/*
 * virtio.c: polled virtio-mmio driver (version 2 transport, split
 * virtqueues).  One device open at a time: vdev_open() resets the buffer
 * pool that queues and vmem_alloc() draw from, vdev_close() resets the
 * device so it lets go of that memory.
 */
#define VBIT(bit)		(1ULL << (bit))
#define VIRTIO_F_INDIRECT_DESC	28
#define VIRTIO_F_VERSION_1	32
#define VIRTIO_INT_USED		0x1	/* InterruptStatus bits */
#define VIRTIO_INT_CONFIG	0x2

#define VQ_MAX_SIZE		16	/* queue size the driver asks for */
#define VQ_IND_MAX		8	/* entries per indirect table */
#define VDEV_MAX_QUEUES		3

/* About a second of TSC at 1-3 GHz; waits are multiples of it. */
#define TSC_SECOND		2000000000ULL

/* Split virtqueue rings (section 2.7), little-endian = native. */
struct vdesc {
	uint64_t	addr;
	uint32_t	len;
	uint16_t	flags;
	uint16_t	next;
};

struct vavail {
	uint16_t	flags;
	uint16_t	idx;
	uint16_t	ring[VQ_MAX_SIZE];
	uint16_t	used_event;
};

struct vused_elem {
	uint32_t	id;
	uint32_t	len;
};

struct vused {
	uint16_t		flags;
	uint16_t		idx;
	struct vused_elem	ring[VQ_MAX_SIZE];
	uint16_t		avail_event;
};

struct vseg {
	void		*addr;
	uint32_t	 len;
	int		 write;		/* device writes it */
};

struct vq {
	unsigned	 index;
	uint16_t	 size;
	uint16_t	 free_head, nfree;
	uint16_t	 avail_idx, last_used;
	struct vdesc	*desc;
	struct vavail	*avail;
	struct vused	*used;
	struct vdesc	(*ind)[VQ_IND_MAX];
	void		*cookie[VQ_MAX_SIZE];
	uint8_t		 inflight[VQ_MAX_SIZE];
};

struct vdev {
	const char	*name;		/* "rng": messages say "rng: ..." */
	uint64_t	 base;
	uint32_t	 irq, id;
	uint64_t	 offered, features;
	uint32_t	 isr_seen;	/* InterruptStatus bits acknowledged */
	unsigned	 nused;		/* buffers the device has returned */
	struct vq	 q[VDEV_MAX_QUEUES];
};

/* "4K@0xd0000000:16" from a virtio_mmio.device= word. */
void	 vdev_declare(const char *arg);
/* Finds the first declared device with this DeviceID ("FAIL no
 * virtio-<name> device" if none), resets it and negotiates VERSION_1 plus
 * the bits of `want` the device offers, up to FEATURES_OK. */
void	 vdev_open(struct vdev *, uint32_t id, const char *name,
	    uint64_t want);
/* Sets up queue q (before vdev_driver_ok). */
struct vq *vdev_queue(struct vdev *, unsigned q);
void	 vdev_driver_ok(struct vdev *);
/* Checks a used-buffer interrupt was seen, resets the device. */
void	 vdev_close(struct vdev *);
/* Reads InterruptStatus and acknowledges what it shows. */
uint32_t vdev_irq_ack(const struct vdev *);
int	 vdev_has(const struct vdev *, unsigned bit);	/* negotiated */
int	 vdev_offers(const struct vdev *, unsigned bit);
uint8_t	 vdev_cfg8(const struct vdev *, uint32_t off);
uint16_t vdev_cfg16(const struct vdev *, uint32_t off);
uint32_t vdev_cfg32(const struct vdev *, uint32_t off);
uint64_t vdev_cfg64(const struct vdev *, uint32_t off);
uint32_t vdev_cfg_gen(const struct vdev *);
void	 vdev_cfg_write32(const struct vdev *, uint32_t off, uint32_t v);
/* Zeroed memory from the pool, for buffers the device reads or writes. */
void	*vmem_alloc(size_t size, size_t align);
/* From now on vdev_open() keeps what the pool holds, so several devices
 * can be open at once (their rings and buffers add up in the pool). */
void	 vmem_keep(void);
/* Makes a chain of n segments available (through one indirect table if
 * `indirect`); returns the head, or -1 when the queue is full. */
int	 vq_add(struct vq *, const struct vseg *segs, unsigned n,
	    int indirect, void *cookie);
void	 vq_kick(struct vdev *, struct vq *);
/* 1 with the next used chain's cookie and written length, 0 if none. */
int	 vq_poll(struct vq *, void **cookie, uint32_t *len);
/* Spins up to `cycles` TSC cycles for a used chain ("<dev>: timed out
 * <what>" otherwise) and acknowledges the interrupt. */
void	*vq_wait(struct vdev *, struct vq *, uint32_t *len, uint64_t cycles,
	    const char *what);

/* start.S */
void	 halt_forever(void) __attribute__((noreturn));
/* smp.c: called by start.S on each AP in long mode, with its stack slot. */
void	 ap_main(uint32_t slot) __attribute__((noreturn));

/* The virtio-vsock packet header (virtio 1.2 section 5.10.6), shared by
 * the vsock test (vdev.c) and the echo bench (bench.c). */
struct vsock_hdr {
	uint64_t	src_cid;
	uint64_t	dst_cid;
	uint32_t	src_port;
	uint32_t	dst_port;
	uint32_t	len;
	uint16_t	type;
	uint16_t	op;
	uint32_t	flags;
	uint32_t	buf_alloc;
	uint32_t	fwd_cnt;
} __attribute__((packed));

_Static_assert(sizeof(struct vsock_hdr) == 44, "virtio_vsock_hdr is 44");

#endif
