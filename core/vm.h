/*
 * The VM object: guest RAM, vCPU threads, the port-I/O and MMIO buses,
 * and the end-of-life of a machine.  Private to core/.
 *
 * Threads: everything here is called on the reactor thread except where
 * a comment says otherwise.  vCPU threads only run the guest and post
 * exits into their ring; every device handler runs on the reactor.
 */
#ifndef SMX_VM_H
#define SMX_VM_H

#include <sys/types.h>

#include <stdbool.h>
#include <stdint.h>

#include "core/base/base.h"
#include "core/boot.h"
#include "core/layout.h"
#include "hv/hv.h"
#include "reactor/reactor.h"

struct vm;
struct uart;
struct legacy;
struct virtio_dev;

/* How a machine ended.  The order is the public enum smx_end's. */
enum vm_end {
	VM_END_NONE = 0,
	VM_END_POWEROFF,	/* halted for good, or a power-off request */
	VM_END_REBOOT,		/* i8042 / port 0xcf9 / system reset */
	VM_END_TRIPLE_FAULT,	/* shutdown exit */
	VM_END_CRASH,		/* the hypervisor could not go on */
	VM_END_STOPPED,		/* the host stopped it */
};

const char	*vm_end_name(enum vm_end);

/* A virtio-blk disk. */
struct vm_disk {
	const char	*path;
	bool		 readonly;
};
#define VM_MAX_DISKS	4
/* A virtio-fs share of a host directory, mounted by tag in the guest;
 * with dax a window of dax_window bytes (a power of two from
 * LAYOUT_DAX_WINDOW_MIN to _MAX; 0: LAYOUT_DAX_WINDOW) at
 * LAYOUT_DAX_BASE + n * stride. */
struct vm_share {
	const char	*path;
	const char	*tag;
	bool		 readonly;
	bool		 dax;
	uint64_t	 dax_window;
};
#define VM_MAX_SHARES	4
/* virtio-mmio devices: one 4 KiB window and one IOAPIC pin each. */
#define VM_MAX_VIRTIO	(LAYOUT_IOAPIC_PINS - LAYOUT_VIRTIO_IRQ_BASE)

struct vm_config {
	const char	*kernel;
	const char	*initrd;
	const char	*cmdline;	/* device words are appended */
	unsigned	 ncpus;		/* 1..HV_MAX_VCPUS */
	uint64_t	 memory_mib;
	int		 console_fd;	/* UART output goes here */
	int		 console_in_fd;	/* -1, or guest console input */

	/* virtio devices, declared to the guest on its command line. */
	bool		 rng;
	bool		 balloon;
	uint64_t	 balloon_target_mib; /* initial target, 0: none */
	const char	*vsock_path;	/* NULL: no vsock */
	uint64_t	 vsock_cid;	/* 0: 3 */
	bool		 hvc;		/* virtio-console (hvc0)... */
	int		 hvc_fd;	/* ...writing here */
	struct vm_disk	 disks[VM_MAX_DISKS];
	unsigned	 ndisks;
	struct vm_share	 shares[VM_MAX_SHARES];	/* after the disks */
	unsigned	 nshares;

	/*
	 * Restore: guest RAM is this file (memory_mib MiB exactly) mapped
	 * MAP_PRIVATE, so every machine made from it shares its clean pages
	 * through the page cache.  No kernel is loaded and the vCPUs keep
	 * KVM's reset state: the caller (snapshot/) sets every state before
	 * vm_start().  NULL: fresh anonymous RAM and a boot.
	 */
	const char	*ram_file;
	/* Have the hypervisor log the pages the guest writes to RAM, for
	 * vm_dirty_log() (diff snapshots). */
	bool		 dirty_log;
};

typedef void (*vm_end_fn)(struct vm *, enum vm_end, void *arg);

/*
 * Build a machine from *cfg: RAM, hypervisor VM and vCPUs, devices, the
 * kernel loaded; nothing runs yet.  On failure returns NULL and writes a
 * one-line reason into err.
 */
struct vm	*vm_create(struct reactor *, const struct vm_config *,
		    char *err, size_t errlen);
/* Start the vCPU threads.  end_cb runs once on the reactor thread when
 * the machine has ended and every vCPU thread has been joined. */
int		 vm_start(struct vm *, vm_end_fn end_cb, void *arg) WUR;
/* Ask the machine to end with `why` (VM_END_STOPPED from the host).
 * Idempotent; end_cb follows asynchronously. */
void		 vm_stop(struct vm *, enum vm_end why);
/* Free a machine that never started or has ended. */
void		 vm_free(struct vm *);

/*
 * Pause: every vCPU leaves the guest and parks; cb runs on the reactor
 * thread once all are parked.  vm_resume() lets them run again.  Used
 * by snapshots.
 */
typedef void (*vm_paused_fn)(struct vm *, void *arg);
int		 vm_pause(struct vm *, vm_paused_fn cb, void *arg) WUR;
void		 vm_resume(struct vm *);
bool		 vm_paused(const struct vm *);

/* Details of the machine, for the CLI and tests. */
const struct boot_entry	*vm_boot_entry(const struct vm *);
const char	*vm_end_detail(const struct vm *);
struct hv	*vm_hv(struct vm *);
/* The nth virtio device with this device ID (VIRTIO_ID_*), or NULL. */
struct virtio_dev *vm_virtio(struct vm *, uint32_t device_id, unsigned nth);
/* The guest command line as booted (the caller's plus device words). */
const char	*vm_cmdline(const struct vm *);
struct gmem	*vm_gmem(struct vm *);
/* For snapshots: the machine's configuration as created (a private
 * copy, strings included), its vCPUs, RAM and virtio devices in window
 * order (the order vm_create() makes them in from the same config). */
const struct vm_config *vm_get_config(const struct vm *);
unsigned	 vm_ncpus(const struct vm *);
struct hv_vcpu	*vm_vcpu_hv(struct vm *, unsigned id);
uint8_t		*vm_ram(struct vm *, uint64_t *size);
unsigned	 vm_nvdev(const struct vm *);
struct virtio_dev *vm_vdev(struct vm *, unsigned i, uint32_t *device_id);
uint64_t	 vm_exit_count(const struct vm *);
struct uart	*vm_uart(struct vm *);
struct legacy	*vm_legacy(struct vm *);
/* The file RAM is mapped from (cfg.ram_file as it was opened: the path
 * may name another file since), or -ENOENT for anonymous RAM. */
int		 vm_ram_file_id(const struct vm *, dev_t *, ino_t *);
/*
 * With cfg.dirty_log: OR into bitmap (one bit per 4 KiB page of RAM as
 * vm_ram() lays it out, bit i of word i / 64) the pages the guest wrote
 * since the last call (or since creation), and restart the log.  Pages
 * the host wrote into guest memory are not in it.  -ENOENT without
 * dirty_log.  The vCPUs should be paused for a consistent answer.
 */
int		 vm_dirty_log(struct vm *, uint64_t *bitmap) WUR;

/*
 * The port-I/O bus.  A handler owns [base, base + len).  Reads fill
 * `size` bytes of data; unclaimed reads return all ones (an empty ISA
 * bus) and unclaimed writes are ignored.  Handlers run on the reactor.
 */
typedef void (*vm_pio_fn)(void *opaque, uint16_t port, bool write,
	    uint8_t *data, uint8_t size);
int		 vm_pio_register(struct vm *, uint16_t base, uint16_t len,
		    vm_pio_fn, void *opaque) WUR;

/* The MMIO bus, same rules, for windows that are not guest RAM. */
typedef void (*vm_mmio_fn)(void *opaque, uint64_t addr, bool write,
	    uint8_t *data, uint8_t len);
int		 vm_mmio_register(struct vm *, uint64_t base, uint64_t len,
		    vm_mmio_fn, void *opaque) WUR;

/*
 * The fast paths, hypervisor and reactor together.  An ioeventfd calls
 * cb(count, arg) on the reactor thread after the guest wrote `len` bytes
 * at MMIO address addr (only `data` with HV_IOEVENT_DATAMATCH; port I/O
 * with HV_IOEVENT_PIO), without the vCPU leaving the kernel.  An irqfd
 * raises gsi (edge) each time it is signalled, from any thread, without a
 * trip through the reactor.  NULL + errno on failure.
 */
struct vm_ioeventfd;
struct vm_irqfd;
struct vm_ioeventfd *vm_ioeventfd_add(struct vm *, uint64_t addr,
		    uint32_t len, unsigned flags, uint64_t data,
		    reactor_eventfd_fn cb, void *arg);
void		 vm_ioeventfd_del(struct vm *, struct vm_ioeventfd *);
struct vm_irqfd	*vm_irqfd_add(struct vm *, uint32_t gsi);
int		 vm_irqfd_raise(struct vm_irqfd *);
void		 vm_irqfd_del(struct vm *, struct vm_irqfd *);

/* The 8250 UART at 0x3f8 / IRQ 4 (core/uart.c). */
struct uart	*uart_create(struct vm *, struct reactor *, uint16_t base,
		    unsigned irq, int out_fd, int in_fd);
void		 uart_flush(struct uart *);
void		 uart_free(struct uart *);
/* Snapshot: append a versioned blob of the registers, RX FIFO and IRQ
 * state to *buf; load one into a UART just created (0, -EINVAL for a
 * malformed blob, -EPROTO for another version). */
int		 uart_save(struct uart *, uint8_t **buf, size_t *len) WUR;
int		 uart_load(struct uart *, const uint8_t *buf, size_t len) WUR;

/* Legacy PC ports a kernel touches: CMOS RTC, i8042 reset, 0xcf9
 * reset, POST port (core/legacy.c). */
struct legacy	*legacy_create(struct vm *);
void		 legacy_free(struct legacy *);
/* Snapshot of the CMOS index and RAM, as uart_save()/uart_load(). */
int		 legacy_save(struct legacy *, uint8_t **buf, size_t *len) WUR;
int		 legacy_load(struct legacy *, const uint8_t *buf, size_t len)
		    WUR;
/* Called by the legacy devices: the guest asked for a reset. */
void		 vm_request_end(struct vm *, enum vm_end, const char *detail);

#endif /* SMX_VM_H */
