/*
 * The VM object and its vCPU threads.
 *
 * A vCPU thread does nothing but hv_vcpu_run().  An exit that needs the
 * device model becomes a message in that vCPU's reactor_ring; the thread
 * waits only when the exit needs an answer (a port or MMIO read, string
 * I/O) and goes straight back into the guest after a plain write.  The
 * vCPU thread must not touch the event system or any device: it only
 * pushes messages and waits on its waiter.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/layout.h"
#include "core/vm.h"
#include "fusefs/fusefs.h"
#include "virtio/virtio.h"

#define VM_RING_SLOTS		64
#define VM_MAX_HANDLERS		32
/* Writes up to this size are copied into the message and not waited for. */
#define VM_ASYNC_WRITE_MAX	8
/* Halt detection: how often idle vCPUs are looked at, and the ceiling
 * the interval backs off to while the guest is idle but alive. */
#define VM_HALT_CHECK_MIN_US	100000
#define VM_HALT_CHECK_MAX_US	2000000

enum msg_kind {
	MSG_PIO,
	MSG_MMIO,
	MSG_HALT_STATE,	/* answer to a halt check */
	MSG_PAUSED,	/* the vCPU parked */
	MSG_END,	/* the guest ended the machine (reason in end) */
	MSG_DONE,	/* the thread is leaving; last message */
};

struct vcpu_msg {
	uint8_t			 kind;
	uint8_t			 size;	/* access size */
	uint8_t			 write;
	uint8_t			 end;	/* enum vm_end for MSG_END */
	uint32_t		 count;	/* string I/O repeat */
	uint64_t		 addr;	/* port or guest physical address */
	uint8_t			 inl[VM_ASYNC_WRITE_MAX]; /* async write data */
	uint8_t			*data;	/* for waited exits: the run page */
	struct reactor_waiter	*waiter;	/* NULL: no answer wanted */
	const char		*what;	/* MSG_END detail (static) */
};

struct vcpu {
	struct vm		*vm;
	unsigned		 id;
	struct hv_vcpu		*hv;
	pthread_t		 thread;
	bool			 started;
	struct reactor_ring	*ring;
	struct reactor_waiter	 waiter;	/* answers to exits */
	struct reactor_waiter	 parked;	/* pause -> resume */
	atomic_bool		 pause_req;
	atomic_bool		 halt_check;
	bool			 is_paused;	/* reactor's view */
	bool			 done;		/* reactor's view */
	clockid_t		 cpuclock;
	uint64_t		 last_cpu_ns;
	int			 halt_state;	/* -1 unknown, 0/1 */
};

struct handler {
	uint64_t	 base;
	uint64_t	 len;
	vm_pio_fn	 pio;
	vm_mmio_fn	 mmio;
	void		*opaque;
};

enum vm_state { VM_CREATED, VM_RUNNING, VM_ENDING, VM_ENDED };

struct vm {
	struct reactor		*r;
	struct hv		*hv;
	struct vm_config	 cfg;		/* a private copy */
	struct gmem		 mem;
	uint8_t			*ram;
	uint64_t		 ram_size;
	dev_t			 ram_dev;	/* the ram_file mapped */
	ino_t			 ram_ino;
	unsigned		 ncpus;
	struct vcpu		 vcpus[HV_MAX_VCPUS];
	struct boot_entry	 entry;
	struct uart		*uart;
	struct legacy		*legacy;
	struct vm_vdev {
		struct virtio_dev	*dev;
		uint64_t		 base;
		uint32_t		 device_id;
	}			 vdev[VM_MAX_VIRTIO];
	unsigned		 nvdev;
	char			*cmdline;

	struct handler		 pio[VM_MAX_HANDLERS];
	unsigned		 npio;
	struct handler		 mmio[VM_MAX_HANDLERS];
	unsigned		 nmmio;

	enum vm_state		 state;
	atomic_bool		 stopping;	/* read by vCPU threads */
	enum vm_end		 end;
	char			 end_detail[128];
	vm_end_fn		 end_cb;
	void			*end_arg;
	unsigned		 ndone;
	uint64_t		 nexits;

	vm_paused_fn		 paused_cb;
	void			*paused_arg;
	bool			 pausing;

	struct reactor_timer	*halt_timer;
	uint64_t		 halt_interval;
	unsigned		 halt_rounds;	/* consecutive all-halted */
	unsigned		 halt_answers;
};

static void	vm_finish(struct vm *);
static void	halt_timer_arm(struct vm *, uint64_t);

const char *
vm_end_name(enum vm_end end)
{
	switch (end) {
	case VM_END_NONE:
		return "running";
	case VM_END_POWEROFF:
		return "poweroff";
	case VM_END_REBOOT:
		return "reboot";
	case VM_END_TRIPLE_FAULT:
		return "triple-fault";
	case VM_END_CRASH:
		return "crash";
	case VM_END_STOPPED:
		return "stopped";
	}
	return "unknown";
}

/* Guest RAM: below the MMIO gap, the rest from 4 GiB up.  One anonymous
 * mapping; pages are only allocated when the guest touches them. */
static int
vm_map_ram(struct vm *vm, char *err, size_t errlen)
{
	uint64_t	low, high;
	struct stat	st;
	unsigned	flags;
	int		error, fd = -1;

	if (vm->cfg.ram_file != NULL) {
		/* Copy-on-write over the snapshot's memory file. */
		if ((fd = open(vm->cfg.ram_file, O_RDONLY | O_CLOEXEC)) == -1 ||
		    fstat(fd, &st) == -1) {
			snprintf(err, errlen, "%s: %s", vm->cfg.ram_file,
			    strerror(errno));
			if (fd != -1)
				close(fd);
			return -EIO;
		}
		if ((uint64_t)st.st_size != vm->ram_size) {
			snprintf(err, errlen, "%s: %llu bytes, the machine has "
			    "%llu MiB of memory: not its memory file",
			    vm->cfg.ram_file, (unsigned long long)st.st_size,
			    (unsigned long long)(vm->ram_size >> 20));
			close(fd);
			return -EINVAL;
		}
		vm->ram_dev = st.st_dev;
		vm->ram_ino = st.st_ino;
	}
	vm->ram = mmap(NULL, vm->ram_size, PROT_READ | PROT_WRITE,
	    fd != -1 ? MAP_PRIVATE | MAP_NORESERVE :
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, fd, 0);
	if (fd != -1)
		close(fd);
	if (vm->ram == MAP_FAILED) {
		vm->ram = NULL;
		snprintf(err, errlen, "cannot map %llu MiB of guest memory: %s",
		    (unsigned long long)(vm->ram_size >> 20), strerror(errno));
		return -ENOMEM;
	}
	if (vm->cfg.ram_file == NULL)
		madvise(vm->ram, vm->ram_size, MADV_MERGEABLE);
	low = MIN(vm->ram_size, LAYOUT_MMIO_GAP);
	high = vm->ram_size - low;
	flags = vm->cfg.dirty_log ? HV_MEM_LOG_DIRTY : 0;
	if ((error = gmem_add(&vm->mem, 0, low, vm->ram)) != 0 ||
	    (error = hv_mem_map(vm->hv, 0, 0, low, vm->ram, flags)) != 0)
		goto fail;
	if (high != 0) {
		if ((error = gmem_add(&vm->mem, LAYOUT_HIGH_RAM, high,
		    vm->ram + low)) != 0 ||
		    (error = hv_mem_map(vm->hv, 1, LAYOUT_HIGH_RAM, high,
		    vm->ram + low, flags)) != 0)
			goto fail;
	}
	return 0;
fail:
	snprintf(err, errlen, "cannot register guest memory: %s",
	    strerror(-error));
	return error;
}

static void	vcpu_drain_cb(void *, void *);

/* A guest access to a virtio-mmio window, from the MMIO bus. */
static void
vdev_mmio(void *opaque, uint64_t addr, bool write, uint8_t *data,
    uint8_t len)
{
	struct vm_vdev	*v = opaque;

	virtio_mmio_access(v->dev, addr - v->base, write, data, len);
}

/* Put a created device (dev NULL: creation failed, errno set) on the
 * next window and pin, and on the guest's command line. */
static int
vm_attach_vdev(struct vm *vm, struct virtio_dev *dev, uint32_t device_id,
    const char *what, char *err, size_t errlen)
{
	struct vm_vdev	*v = &vm->vdev[vm->nvdev];
	char		 word[96], *line;
	int		 error;

	if (dev == NULL) {
		if (err[0] == '\0')
			snprintf(err, errlen, "cannot create %s: %s", what,
			    strerror(errno));
		return -1;
	}
	v->dev = dev;
	v->base = LAYOUT_VIRTIO_MMIO + vm->nvdev * LAYOUT_VIRTIO_MMIO_SIZE;
	v->device_id = device_id;
	vm->nvdev++;
	if ((error = vm_mmio_register(vm, v->base, LAYOUT_VIRTIO_MMIO_SIZE,
	    vdev_mmio, v)) != 0) {
		snprintf(err, errlen, "cannot map %s: %s", what,
		    strerror(-error));
		return -1;
	}
	virtio_mmio_cmdline(dev, word, sizeof word);
	xasprintf(&line, "%s %s", vm->cmdline, word);
	free(vm->cmdline);
	vm->cmdline = line;
	return 0;
}

/* KVM memory slots: 0 and 1 hold RAM, DAX windows follow. */
#define VM_SLOT_DAX	2

/* The virtio devices of cfg, in a fixed order (so a snapshot finds each
 * at the same window): rng, balloon, vsock, console, disks, shares. */
static int
vm_add_devices(struct vm *vm, const struct vm_config *cfg, char *err,
    size_t errlen)
{
	struct virtio_host	 host = { vm->r, vm->hv, &vm->mem };
	unsigned		 i, n;
	uint64_t		 base, win;
	uint32_t		 irq;
	struct fusefs_opts	 fo;
	const struct vm_share	*sh;

	vm->cmdline = xstrdup(cfg->cmdline != NULL ? cfg->cmdline : "");
	n = cfg->rng + cfg->balloon + (cfg->vsock_path != NULL) +
	    cfg->hvc + cfg->ndisks + cfg->nshares;
	if (cfg->ndisks > VM_MAX_DISKS || cfg->nshares > VM_MAX_SHARES ||
	    n > VM_MAX_VIRTIO) {
		snprintf(err, errlen, "too many devices: at most %d virtio "
		    "devices, %d of them disks and %d shares", VM_MAX_VIRTIO,
		    VM_MAX_DISKS, VM_MAX_SHARES);
		return -1;
	}
	err[0] = '\0';
#define NEXT_BASE	(LAYOUT_VIRTIO_MMIO + vm->nvdev * LAYOUT_VIRTIO_MMIO_SIZE)
#define NEXT_IRQ	(LAYOUT_VIRTIO_IRQ_BASE + vm->nvdev)
	if (cfg->rng && vm_attach_vdev(vm, virtio_rng_create(&host, NEXT_BASE,
	    NEXT_IRQ), VIRTIO_ID_RNG, "virtio-rng", err, errlen) != 0)
		return -1;
	if (cfg->balloon && vm_attach_vdev(vm, virtio_balloon_create(&host,
	    NEXT_BASE, NEXT_IRQ), VIRTIO_ID_BALLOON, "virtio-balloon", err,
	    errlen) != 0)
		return -1;
	/* MiB to 4 KiB pages; the guest sees it when it reads num_pages. */
	if (cfg->balloon && cfg->balloon_target_mib != 0)
		virtio_balloon_set_target(vm->vdev[vm->nvdev - 1].dev,
		    (uint32_t)(cfg->balloon_target_mib << 8));
	if (cfg->vsock_path != NULL && vm_attach_vdev(vm,
	    virtio_vsock_create(&host, NEXT_BASE, NEXT_IRQ,
	    cfg->vsock_cid != 0 ? cfg->vsock_cid : 3, cfg->vsock_path),
	    VIRTIO_ID_VSOCK, cfg->vsock_path, err, errlen) != 0)
		return -1;
	if (cfg->hvc && vm_attach_vdev(vm, virtio_console_create(&host,
	    NEXT_BASE, NEXT_IRQ, cfg->hvc_fd, -1), VIRTIO_ID_CONSOLE,
	    "virtio-console", err, errlen) != 0)
		return -1;
	for (i = 0; i < cfg->ndisks; i++) {
		base = NEXT_BASE;
		irq = NEXT_IRQ;
		if (vm_attach_vdev(vm, virtio_blk_create(&host, base, irq,
		    cfg->disks[i].path, cfg->disks[i].readonly, err, errlen),
		    VIRTIO_ID_BLOCK, cfg->disks[i].path, err, errlen) != 0)
			return -1;
	}
	for (i = 0; i < cfg->nshares; i++) {
		sh = &cfg->shares[i];
		if (sh->dax && cfg->memory_mib > LAYOUT_DAX_MAX_RAM_MIB) {
			snprintf(err, errlen, "share %s: DAX needs at most %llu "
			    "MiB of memory", sh->tag,
			    (unsigned long long)LAYOUT_DAX_MAX_RAM_MIB);
			return -1;
		}
		win = sh->dax_window != 0 ? sh->dax_window : LAYOUT_DAX_WINDOW;
		if (sh->dax && (win < LAYOUT_DAX_WINDOW_MIN ||
		    win > LAYOUT_DAX_WINDOW_MAX || (win & (win - 1)) != 0)) {
			snprintf(err, errlen, "share %s: DAX window of %llu "
			    "bytes: give a power of two from %llu MiB to %llu "
			    "GiB", sh->tag, (unsigned long long)win,
			    LAYOUT_DAX_WINDOW_MIN >> 20,
			    LAYOUT_DAX_WINDOW_MAX >> 30);
			return -1;
		}
		fusefs_opts_init(&fo);
		fo.root = sh->path;
		fo.readonly = sh->readonly;
		fo.dax_window = sh->dax ? win : 0;
		base = NEXT_BASE;
		irq = NEXT_IRQ;
		if (vm_attach_vdev(vm, virtio_fs_create(&host, base, irq, &fo,
		    sh->tag, VM_SLOT_DAX + i, LAYOUT_DAX_BASE +
		    i * LAYOUT_DAX_STRIDE, err, errlen), VIRTIO_ID_FS,
		    sh->path, err, errlen) != 0)
			return -1;
	}
#undef NEXT_BASE
#undef NEXT_IRQ
	return 0;
}

/* Strings of a config copied, so the machine does not depend on the
 * caller's. */
static char *
dup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

static void
config_copy(struct vm_config *d, const struct vm_config *s)
{
	unsigned	i;

	*d = *s;
	d->kernel = dup_or_null(s->kernel);
	d->initrd = dup_or_null(s->initrd);
	d->cmdline = dup_or_null(s->cmdline);
	d->vsock_path = dup_or_null(s->vsock_path);
	d->ram_file = dup_or_null(s->ram_file);
	for (i = 0; i < MIN(s->ndisks, VM_MAX_DISKS); i++)
		d->disks[i].path = dup_or_null(s->disks[i].path);
	for (i = 0; i < MIN(s->nshares, VM_MAX_SHARES); i++) {
		d->shares[i].path = dup_or_null(s->shares[i].path);
		d->shares[i].tag = dup_or_null(s->shares[i].tag);
	}
}

static void
config_free(struct vm_config *c)
{
	unsigned	i;

	free((char *)c->kernel);
	free((char *)c->initrd);
	free((char *)c->cmdline);
	free((char *)c->vsock_path);
	free((char *)c->ram_file);
	for (i = 0; i < MIN(c->ndisks, VM_MAX_DISKS); i++)
		free((char *)c->disks[i].path);
	for (i = 0; i < MIN(c->nshares, VM_MAX_SHARES); i++) {
		free((char *)c->shares[i].path);
		free((char *)c->shares[i].tag);
	}
}

struct vm *
vm_create(struct reactor *r, const struct vm_config *cfg, char *err,
    size_t errlen)
{
	struct vm		*vm;
	struct boot_spec	 spec;
	struct hv_regs		 regs;
	struct hv_sregs		 sregs;
	struct vcpu		*v;
	unsigned		 i;
	int			 error;

	if (cfg->ncpus < 1 || cfg->ncpus > HV_MAX_VCPUS) {
		snprintf(err, errlen, "--cpus %u: must be 1 to %d", cfg->ncpus,
		    HV_MAX_VCPUS);
		return NULL;
	}
	if (cfg->memory_mib < 16 || cfg->memory_mib > (1ULL << 20)) {
		snprintf(err, errlen, "--memory %llu: must be 16 to 1048576 MiB",
		    (unsigned long long)cfg->memory_mib);
		return NULL;
	}

	vm = xcalloc(1, sizeof *vm);
	vm->r = r;
	config_copy(&vm->cfg, cfg);
	cfg = &vm->cfg;
	vm->ncpus = cfg->ncpus;
	vm->ram_size = cfg->memory_mib << 20;
	vm->state = VM_CREATED;
	atomic_init(&vm->stopping, false);

	if ((error = hv_create(&vm->hv, vm->ncpus)) != 0) {
		snprintf(err, errlen, "cannot create a KVM virtual machine: %s",
		    strerror(-error));
		goto err_free;
	}
	if (vm_map_ram(vm, err, errlen) != 0)
		goto err_free;

	if (vm_add_devices(vm, cfg, err, errlen) != 0)
		goto err_free;

	if (cfg->ram_file != NULL)
		goto platform;
	memset(&spec, 0, sizeof spec);
	spec.kernel = cfg->kernel;
	spec.initrd = cfg->initrd;
	spec.cmdline = vm->cmdline;
	spec.ncpus = vm->ncpus;
	spec.ram_size = vm->ram_size;
	if (boot_load(&vm->mem, &spec, &vm->entry, err, errlen) != 0)
		goto err_free;

platform:
	if ((vm->uart = uart_create(vm, r, 0x3f8, 4, cfg->console_fd,
	    cfg->console_in_fd)) == NULL) {
		snprintf(err, errlen, "cannot create the serial console");
		goto err_free;
	}
	if ((vm->legacy = legacy_create(vm)) == NULL) {
		snprintf(err, errlen, "cannot register legacy devices");
		goto err_free;
	}

	for (i = 0; i < vm->ncpus; i++) {
		v = &vm->vcpus[i];
		v->vm = vm;
		v->id = i;
		v->halt_state = -1;
		atomic_init(&v->pause_req, false);
		atomic_init(&v->halt_check, false);
		if ((error = hv_vcpu_create(vm->hv, i, &v->hv)) != 0) {
			snprintf(err, errlen, "cannot create vCPU %u: %s", i,
			    strerror(-error));
			goto err_free;
		}
		v->ring = reactor_ring_create(r, sizeof(struct vcpu_msg),
		    VM_RING_SLOTS, vcpu_drain_cb, v);
		if (v->ring == NULL) {
			snprintf(err, errlen, "cannot create vCPU %u ring: %s",
			    i, strerror(errno));
			goto err_free;
		}
	}
	if (cfg->ram_file != NULL)
		return vm;
	/* Only the boot vCPU starts running; the others wait for INIT/SIPI
	 * in the in-kernel LAPIC. */
	boot_vcpu_state(&vm->entry, &regs, &sregs);
	if ((error = hv_vcpu_set_sregs(vm->vcpus[0].hv, &sregs)) != 0 ||
	    (error = hv_vcpu_set_regs(vm->vcpus[0].hv, &regs)) != 0) {
		snprintf(err, errlen, "cannot set the boot vCPU state: %s",
		    strerror(-error));
		goto err_free;
	}
	return vm;

err_free:
	vm_free(vm);
	return NULL;
}

void
vm_free(struct vm *vm)
{
	unsigned	i;

	if (vm == NULL)
		return;
	if (vm->state == VM_RUNNING || vm->state == VM_ENDING)
		fatalx("vm_free of a running machine");
	if (vm->halt_timer != NULL)
		reactor_del_timer(vm->halt_timer);
	for (i = 0; i < HV_MAX_VCPUS; i++) {
		if (vm->vcpus[i].ring != NULL)
			reactor_ring_free(vm->vcpus[i].ring);
		if (vm->vcpus[i].hv != NULL)
			hv_vcpu_destroy(vm->vcpus[i].hv);
	}
	/* Devices first: they take their ioeventfds and irqfds off the
	 * hypervisor's VM. */
	for (i = 0; i < vm->nvdev; i++)
		virtio_dev_free(vm->vdev[i].dev);
	free(vm->cmdline);
	if (vm->uart != NULL)
		uart_free(vm->uart);
	legacy_free(vm->legacy);
	if (vm->hv != NULL)
		hv_destroy(vm->hv);
	if (vm->ram != NULL)
		munmap(vm->ram, vm->ram_size);
	config_free(&vm->cfg);
	free(vm);
}

/*
 * vCPU thread side.
 */

/* Push a message; the ring only refuses once the VM is being torn down,
 * and then the thread is about to leave anyway. */
static int
vcpu_post(struct vcpu *v, struct vcpu_msg *m)
{
	return reactor_ring_push(v->ring, m);
}

/* Post an exit and wait for the reactor's answer. */
static void
vcpu_post_wait(struct vcpu *v, struct vcpu_msg *m)
{
	reactor_waiter_init(&v->waiter);
	m->waiter = &v->waiter;
	if (vcpu_post(v, m) == 0)
		reactor_waiter_wait(&v->waiter);
}

static void
vcpu_io_exit(struct vcpu *v, const struct hv_exit *x, bool mmio)
{
	struct vcpu_msg	m;
	size_t		total;

	memset(&m, 0, sizeof m);
	if (mmio) {
		m.kind = MSG_MMIO;
		m.addr = x->mmio.gpa;
		m.size = x->mmio.len;
		m.write = x->mmio.write;
		m.count = 1;
		m.data = x->mmio.data;
	} else {
		m.kind = MSG_PIO;
		m.addr = x->io.port;
		m.size = x->io.size;
		m.write = x->io.write;
		m.count = x->io.count;
		m.data = x->io.data;
	}
	total = (size_t)m.size * m.count;
	/*
	 * A plain port write needs no answer: copy it and go on (the UART's
	 * bytes).  MMIO writes wait: a device register write must take
	 * effect before the guest's next instruction.  virtio's
	 * InterruptACK is why: the driver acks, then scans the used ring;
	 * an ack applied later could clear the bit of a completion the scan
	 * missed, and that interrupt would be lost.
	 */
	if (m.write && !mmio && total <= VM_ASYNC_WRITE_MAX) {
		memcpy(m.inl, m.data, total);
		m.data = NULL;
		vcpu_post(v, &m);
		return;
	}
	vcpu_post_wait(v, &m);
}

/* Where a vCPU was when the guest triple-faulted: one line for the log
 * (vCPU thread, the vCPU is not running).  AMD's SVM leaves the state
 * undefined after a shutdown and KVM reinitialises the vCPU before it
 * returns (real mode at the reset vector): nothing to tell then. */
static void
vcpu_log_fault(struct vcpu *v)
{
	struct hv_regs	r;
	struct hv_sregs	sr;

	if (hv_vcpu_get_regs(v->hv, &r) != 0 ||
	    hv_vcpu_get_sregs(v->hv, &sr) != 0)
		return;
	if ((sr.cr0 & 1) == 0 && r.rip == 0xfff0) {
		log_warnx("vcpu %u triple fault: its state was reset by the "
		    "hypervisor (AMD SVM), where it was is not known", v->id);
		return;
	}
	log_warnx("vcpu %u triple fault: rip %#llx rsp %#llx rflags %#llx "
	    "cr0 %#llx cr2 %#llx cr3 %#llx cr4 %#llx efer %#llx", v->id,
	    (unsigned long long)r.rip, (unsigned long long)r.rsp,
	    (unsigned long long)r.rflags, (unsigned long long)sr.cr0,
	    (unsigned long long)sr.cr2, (unsigned long long)sr.cr3,
	    (unsigned long long)sr.cr4, (unsigned long long)sr.efer);
}

static void
vcpu_end(struct vcpu *v, enum vm_end end, const char *what)
{
	struct vcpu_msg	m;

	memset(&m, 0, sizeof m);
	m.kind = MSG_END;
	m.end = end;
	m.what = what;
	vcpu_post(v, &m);
}

/* Park until the reactor resumes us (or the VM stops). */
static void
vcpu_park(struct vcpu *v)
{
	struct vcpu_msg	m;

	reactor_waiter_init(&v->parked);
	memset(&m, 0, sizeof m);
	m.kind = MSG_PAUSED;
	if (vcpu_post(v, &m) == 0)
		reactor_waiter_wait(&v->parked);
}

static void
vcpu_answer_halt_check(struct vcpu *v)
{
	struct vcpu_msg	m;
	bool		halted = false;

	if (hv_vcpu_halted_for_good(v->hv, &halted) != 0)
		halted = false;
	memset(&m, 0, sizeof m);
	m.kind = MSG_HALT_STATE;
	m.end = halted;
	vcpu_post(v, &m);
}

static void *
vcpu_main(void *arg)
{
	struct vcpu	*v = arg;
	struct vm	*vm = v->vm;
	struct hv_exit	 x;
	struct vcpu_msg	 m;
	int		 error;

	for (;;) {
		if (atomic_load_explicit(&vm->stopping, memory_order_acquire))
			break;
		if (atomic_exchange(&v->pause_req, false)) {
			vcpu_park(v);
			continue;
		}
		if (atomic_exchange(&v->halt_check, false)) {
			vcpu_answer_halt_check(v);
			/* fall through into the guest */
		}
		if ((error = hv_vcpu_run(v->hv, &x)) != 0) {
			vcpu_end(v, VM_END_CRASH, "KVM_RUN failed");
			break;
		}
		switch (x.reason) {
		case HV_EXIT_IO:
			vcpu_io_exit(v, &x, false);
			break;
		case HV_EXIT_MMIO:
			vcpu_io_exit(v, &x, true);
			break;
		case HV_EXIT_INTR:
			break;
		case HV_EXIT_HLT:
			/* Only without an in-kernel LAPIC: a halt is the end. */
			vcpu_end(v, VM_END_POWEROFF, "halt");
			goto out;
		case HV_EXIT_SHUTDOWN:
			vcpu_log_fault(v);
			vcpu_end(v, VM_END_TRIPLE_FAULT, "triple fault");
			goto out;
		case HV_EXIT_RESET:
			vcpu_end(v, VM_END_REBOOT, "system reset");
			goto out;
		case HV_EXIT_POWEROFF:
			vcpu_end(v, VM_END_POWEROFF, "system power-off");
			goto out;
		case HV_EXIT_FAIL:
			vcpu_end(v, VM_END_CRASH, x.fail.what != NULL ?
			    x.fail.what : "hypervisor failure");
			goto out;
		}
	}
out:
	memset(&m, 0, sizeof m);
	m.kind = MSG_DONE;
	vcpu_post(v, &m);
	return NULL;
}

/*
 * Reactor side.
 */

static struct handler *
find_handler(struct handler *h, unsigned n, uint64_t addr, uint64_t len)
{
	unsigned	i;

	for (i = 0; i < n; i++) {
		if (addr >= h[i].base && addr - h[i].base < h[i].len &&
		    len <= h[i].len - (addr - h[i].base))
			return &h[i];
	}
	return NULL;
}

static void
dispatch_io(struct vm *vm, struct vcpu_msg *m)
{
	struct handler	*h;
	uint8_t		*data;
	uint32_t	 i;

	data = m->data != NULL ? m->data : m->inl;
	if (m->kind == MSG_PIO) {
		h = find_handler(vm->pio, vm->npio, m->addr, m->size);
		for (i = 0; i < m->count; i++, data += m->size) {
			if (h != NULL)
				h->pio(h->opaque, (uint16_t)m->addr, m->write,
				    data, m->size);
			else if (!m->write)
				memset(data, 0xff, m->size);
		}
		return;
	}
	h = find_handler(vm->mmio, vm->nmmio, m->addr, m->size);
	if (h != NULL)
		h->mmio(h->opaque, m->addr, m->write, data, m->size);
	else {
		log_debug("vCPU MMIO %s at 0x%llx (%u bytes): nothing there",
		    m->write ? "write" : "read", (unsigned long long)m->addr,
		    m->size);
		if (!m->write)
			memset(data, 0xff, m->size);
	}
}

void
vm_request_end(struct vm *vm, enum vm_end why, const char *detail)
{
	if (vm->state != VM_RUNNING)
		return;
	vm->end = why;
	snprintf(vm->end_detail, sizeof vm->end_detail, "%s",
	    detail != NULL ? detail : vm_end_name(why));
	vm->state = VM_ENDING;
	atomic_store_explicit(&vm->stopping, true, memory_order_release);
	for (unsigned i = 0; i < vm->ncpus; i++) {
		/* Parked vCPUs are released so they can leave. */
		if (vm->vcpus[i].is_paused) {
			vm->vcpus[i].is_paused = false;
			reactor_waiter_wake(&vm->vcpus[i].parked);
		}
		hv_vcpu_kick(vm->vcpus[i].hv);
	}
}

void
vm_stop(struct vm *vm, enum vm_end why)
{
	vm_request_end(vm, why, NULL);
}

/* Note every vCPU's CPU time now, so the next look sees only what the
 * guest itself used since (answering a check costs a little). */
static void
halt_sample_cpu(struct vm *vm)
{
	struct timespec	ts;
	unsigned	i;

	for (i = 0; i < vm->ncpus; i++)
		if (clock_gettime(vm->vcpus[i].cpuclock, &ts) == 0)
			vm->vcpus[i].last_cpu_ns = (uint64_t)ts.tv_sec *
			    1000000000ULL + ts.tv_nsec;
}

static void
halt_round_done(struct vm *vm)
{
	unsigned	i;
	bool		all = true;

	halt_sample_cpu(vm);

	for (i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i].halt_state != 1)
			all = false;
	if (all) {
		/* Twice in a row, so an IPI in flight between two vCPUs'
		 * answers cannot fool us. */
		if (++vm->halt_rounds >= 2) {
			vm_request_end(vm, VM_END_POWEROFF,
			    "every vCPU halted with interrupts off");
			return;
		}
		halt_timer_arm(vm, VM_HALT_CHECK_MIN_US / 4);
		return;
	}
	vm->halt_rounds = 0;
	/* Idle but alive: look less often. */
	vm->halt_interval = MIN(vm->halt_interval * 2, VM_HALT_CHECK_MAX_US);
	halt_timer_arm(vm, vm->halt_interval);
}

static void
vcpu_drain_cb(void *msgp, void *arg)
{
	struct vcpu_msg	*m = msgp;
	struct vcpu	*v = arg;
	struct vm	*vm = v->vm;
	unsigned	 i;
	bool		 all;

	switch (m->kind) {
	case MSG_PIO:
	case MSG_MMIO:
		vm->nexits++;
		dispatch_io(vm, m);
		if (m->waiter != NULL)
			reactor_waiter_wake(m->waiter);
		break;
	case MSG_HALT_STATE:
		v->halt_state = m->end;
		log_debug("vCPU %u: %s", v->id, m->end ? "halted for good" :
		    "not halted for good");
		if (++vm->halt_answers == vm->ncpus && vm->state == VM_RUNNING)
			halt_round_done(vm);
		break;
	case MSG_PAUSED:
		v->is_paused = true;
		if (vm->state != VM_RUNNING || !vm->pausing) {
			/* Stopping, or vm_resume() came after this vCPU took
			 * its pause request but before this message was
			 * drained (resume only wakes vCPUs it knows are
			 * parked): let it go straight away, or it would stay
			 * parked with nobody to wake it. */
			v->is_paused = false;
			reactor_waiter_wake(&v->parked);
			break;
		}
		all = true;
		for (i = 0; i < vm->ncpus; i++)
			if (!vm->vcpus[i].is_paused)
				all = false;
		if (all && vm->pausing) {
			vm->pausing = false;
			if (vm->paused_cb != NULL)
				vm->paused_cb(vm, vm->paused_arg);
		}
		break;
	case MSG_END:
		vm_request_end(vm, m->end, m->what);
		break;
	case MSG_DONE:
		v->done = true;
		if (++vm->ndone == vm->ncpus)
			vm_finish(vm);
		break;
	}
}

/* Tell the owner, from a fresh reactor callback: the owner may free the
 * VM, and vm_finish() runs inside a ring's drain callback. */
static void
vm_ended_cb(void *arg)
{
	struct vm	*vm = arg;

	if (vm->end_cb != NULL)
		vm->end_cb(vm, vm->end, vm->end_arg);
}

/* Every vCPU thread has said goodbye: join them, then tell the owner. */
static void
vm_finish(struct vm *vm)
{
	unsigned	i;

	for (i = 0; i < vm->ncpus; i++) {
		if (vm->vcpus[i].started)
			pthread_join(vm->vcpus[i].thread, NULL);
		vm->vcpus[i].started = false;
	}
	if (vm->halt_timer != NULL) {
		reactor_del_timer(vm->halt_timer);
		vm->halt_timer = NULL;
	}
	if (vm->uart != NULL)
		uart_flush(vm->uart);
	vm->state = VM_ENDED;
	if (reactor_post(vm->r, vm_ended_cb, vm) != 0)
		fatalx("cannot post the end of a machine");
}

/*
 * Halt detection.  A guest without ACPI powers off by halting every CPU
 * with interrupts disabled, which never leaves the kernel's KVM_RUN.  A
 * vCPU thread that used no CPU time since the last look is asked (with a
 * kick) whether it is halted for good; busy guests are never disturbed.
 */
static void
halt_timer_cb(void *arg)
{
	struct vm	*vm = arg;
	struct vcpu	*v;
	struct timespec	 ts;
	uint64_t	 t;
	unsigned	 i;
	bool		 idle = true;

	/* One-shot timers are still objects: free this one before arming
	 * the next. */
	reactor_del_timer(vm->halt_timer);
	vm->halt_timer = NULL;
	if (vm->state != VM_RUNNING)
		return;
	for (i = 0; i < vm->ncpus; i++) {
		v = &vm->vcpus[i];
		if (clock_gettime(v->cpuclock, &ts) != 0)
			continue;
		t = (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
		if (t != v->last_cpu_ns)
			idle = false;
		v->last_cpu_ns = t;
	}
	/* Answering the previous check cost the vCPUs a little CPU time;
	 * a confirmation round asks again regardless. */
	if (vm->halt_rounds > 0)
		idle = true;
	log_debug("halt check: %s", idle ? "idle, asking vCPUs" : "busy");
	if (!idle || vm->pausing || vm_paused(vm)) {
		vm->halt_interval = VM_HALT_CHECK_MIN_US;
		vm->halt_rounds = 0;
		halt_timer_arm(vm, vm->halt_interval);
		return;
	}
	vm->halt_answers = 0;
	for (i = 0; i < vm->ncpus; i++) {
		v = &vm->vcpus[i];
		v->halt_state = -1;
		atomic_store(&v->halt_check, true);
		hv_vcpu_kick(v->hv);
	}
}

static void
halt_timer_arm(struct vm *vm, uint64_t usec)
{
	if (vm->halt_timer != NULL)
		reactor_del_timer(vm->halt_timer);
	vm->halt_timer = reactor_add_timer(vm->r, usec, false, halt_timer_cb,
	    vm);
	if (vm->halt_timer == NULL)
		log_warn("halt detection timer");
}

int
vm_start(struct vm *vm, vm_end_fn end_cb, void *arg)
{
	struct vcpu	*v;
	sigset_t	 all, old;
	unsigned	 i;
	int		 error;

	if (vm->state != VM_CREATED)
		return -EALREADY;
	vm->end_cb = end_cb;
	vm->end_arg = arg;
	vm->state = VM_RUNNING;
	/* vCPU threads take no process signals: SIGINT and SIGTERM belong
	 * to the reactor.  hv unblocks its kick signal around KVM_RUN. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 0; i < vm->ncpus; i++) {
		v = &vm->vcpus[i];
		if ((error = pthread_create(&v->thread, NULL, vcpu_main,
		    v)) != 0) {
			pthread_sigmask(SIG_SETMASK, &old, NULL);
			log_warnx("cannot start vCPU %u thread: %s", i,
			    strerror(error));
			/* The ones already running will see `stopping`
			 * and leave; count the rest as gone. */
			vm->ndone += vm->ncpus - i;
			vm_request_end(vm, VM_END_CRASH, "thread creation");
			/* With no thread running no MSG_DONE will come to
			 * finish the machine: do it here. */
			if (vm->ndone == vm->ncpus)
				vm_finish(vm);
			return 0;
		}
		v->started = true;
		if (pthread_getcpuclockid(v->thread, &v->cpuclock) != 0)
			v->cpuclock = CLOCK_MONOTONIC;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	vm->halt_interval = VM_HALT_CHECK_MIN_US;
	halt_timer_arm(vm, vm->halt_interval);
	return 0;
}

int
vm_pause(struct vm *vm, vm_paused_fn cb, void *arg)
{
	unsigned	i;

	if (vm->state != VM_RUNNING)
		return -ESRCH;
	if (vm->pausing || vm_paused(vm))
		return -EBUSY;
	vm->pausing = true;
	vm->paused_cb = cb;
	vm->paused_arg = arg;
	for (i = 0; i < vm->ncpus; i++) {
		atomic_store(&vm->vcpus[i].pause_req, true);
		hv_vcpu_kick(vm->vcpus[i].hv);
	}
	return 0;
}

void
vm_resume(struct vm *vm)
{
	unsigned	i;

	vm->pausing = false;
	for (i = 0; i < vm->ncpus; i++) {
		atomic_store(&vm->vcpus[i].pause_req, false);
		if (vm->vcpus[i].is_paused) {
			vm->vcpus[i].is_paused = false;
			reactor_waiter_wake(&vm->vcpus[i].parked);
		}
	}
}

bool
vm_paused(const struct vm *vm)
{
	unsigned	i;

	if (vm->state != VM_RUNNING)
		return false;
	for (i = 0; i < vm->ncpus; i++)
		if (!vm->vcpus[i].is_paused)
			return false;
	return true;
}

static int
add_handler(struct handler *tab, unsigned *n, uint64_t base, uint64_t len,
    vm_pio_fn pio, vm_mmio_fn mmio, void *opaque)
{
	if (len == 0 || base + len < base)
		return -EINVAL;
	if (*n == VM_MAX_HANDLERS)
		return -ENOSPC;
	for (unsigned i = 0; i < *n; i++)
		if (base < tab[i].base + tab[i].len &&
		    tab[i].base < base + len)
			return -EEXIST;
	tab[*n].base = base;
	tab[*n].len = len;
	tab[*n].pio = pio;
	tab[*n].mmio = mmio;
	tab[*n].opaque = opaque;
	(*n)++;
	return 0;
}

int
vm_pio_register(struct vm *vm, uint16_t base, uint16_t len, vm_pio_fn fn,
    void *opaque)
{
	return add_handler(vm->pio, &vm->npio, base, len, fn, NULL, opaque);
}

int
vm_mmio_register(struct vm *vm, uint64_t base, uint64_t len, vm_mmio_fn fn,
    void *opaque)
{
	return add_handler(vm->mmio, &vm->nmmio, base, len, NULL, fn, opaque);
}

const struct boot_entry *
vm_boot_entry(const struct vm *vm)
{
	return &vm->entry;
}

const char *
vm_end_detail(const struct vm *vm)
{
	return vm->end_detail;
}

struct hv *
vm_hv(struct vm *vm)
{
	return vm->hv;
}

struct gmem *
vm_gmem(struct vm *vm)
{
	return &vm->mem;
}

uint64_t
vm_exit_count(const struct vm *vm)
{
	return vm->nexits;
}

struct uart *
vm_uart(struct vm *vm)
{
	return vm->uart;
}

struct legacy *
vm_legacy(struct vm *vm)
{
	return vm->legacy;
}

int
vm_ram_file_id(const struct vm *vm, dev_t *dev, ino_t *ino)
{
	if (vm->cfg.ram_file == NULL)
		return -ENOENT;
	*dev = vm->ram_dev;
	*ino = vm->ram_ino;
	return 0;
}

/* Slot 0 holds RAM [0, low), slot 1 the rest: low is a multiple of 64
 * pages, so slot 1's log lands on a word boundary of the bitmap. */
int
vm_dirty_log(struct vm *vm, uint64_t *bitmap)
{
	uint64_t	 low, words, i, *b;
	int		 error;

	if (!vm->cfg.dirty_log)
		return -ENOENT;
	low = MIN(vm->ram_size, LAYOUT_MMIO_GAP);
	words = (vm->ram_size / 4096 + 63) / 64;
	b = xcalloc(words, sizeof(*b));
	if ((error = hv_mem_dirty_log(vm->hv, 0, b)) != 0)
		goto out;
	if (vm->ram_size > low &&
	    (error = hv_mem_dirty_log(vm->hv, 1, b + low / 4096 / 64)) != 0)
		goto out;
	for (i = 0; i < words; i++)
		bitmap[i] |= b[i];
out:
	free(b);
	return error;
}

struct vm_ioeventfd {
	struct reactor_eventfd	*efd;
	uint64_t		 addr;
	uint32_t		 len;
	unsigned		 flags;
	uint64_t		 data;
};

struct vm_irqfd {
	struct reactor_eventfd	*efd;
	uint32_t		 gsi;
};

struct vm_ioeventfd *
vm_ioeventfd_add(struct vm *vm, uint64_t addr, uint32_t len, unsigned flags,
    uint64_t data, reactor_eventfd_fn cb, void *arg)
{
	struct vm_ioeventfd	*io;
	int			 error;

	io = xcalloc(1, sizeof *io);
	io->addr = addr;
	io->len = len;
	io->flags = flags;
	io->data = data;
	if ((io->efd = reactor_eventfd_create(vm->r, cb, arg)) == NULL) {
		error = -errno;
		goto err_free;
	}
	if ((error = hv_ioeventfd(vm->hv, reactor_eventfd_fd(io->efd), addr,
	    len, flags, data)) != 0)
		goto err_efd;
	return io;

err_efd:
	reactor_eventfd_free(io->efd);
err_free:
	free(io);
	errno = -error;
	return NULL;
}

void
vm_ioeventfd_del(struct vm *vm, struct vm_ioeventfd *io)
{
	if (io == NULL)
		return;
	hv_ioeventfd_remove(vm->hv, reactor_eventfd_fd(io->efd), io->addr,
	    io->len, io->flags, io->data);
	reactor_eventfd_free(io->efd);
	free(io);
}

struct vm_irqfd *
vm_irqfd_add(struct vm *vm, uint32_t gsi)
{
	struct vm_irqfd	*irq;
	int		 error;

	irq = xcalloc(1, sizeof *irq);
	irq->gsi = gsi;
	if ((irq->efd = reactor_eventfd_create(vm->r, NULL, NULL)) == NULL) {
		error = -errno;
		goto err_free;
	}
	if ((error = hv_irqfd(vm->hv, reactor_eventfd_fd(irq->efd), gsi,
	    -1)) != 0)
		goto err_efd;
	return irq;

err_efd:
	reactor_eventfd_free(irq->efd);
err_free:
	free(irq);
	errno = -error;
	return NULL;
}

int
vm_irqfd_raise(struct vm_irqfd *irq)
{
	return reactor_eventfd_signal(irq->efd);
}

void
vm_irqfd_del(struct vm *vm, struct vm_irqfd *irq)
{
	if (irq == NULL)
		return;
	hv_irqfd_remove(vm->hv, reactor_eventfd_fd(irq->efd), irq->gsi);
	reactor_eventfd_free(irq->efd);
	free(irq);
}

struct virtio_dev *
vm_virtio(struct vm *vm, uint32_t device_id, unsigned nth)
{
	unsigned	i;

	for (i = 0; i < vm->nvdev; i++)
		if (vm->vdev[i].device_id == device_id && nth-- == 0)
			return vm->vdev[i].dev;
	return NULL;
}

const char *
vm_cmdline(const struct vm *vm)
{
	return vm->cmdline;
}

const struct vm_config *
vm_get_config(const struct vm *vm)
{
	return &vm->cfg;
}

unsigned
vm_ncpus(const struct vm *vm)
{
	return vm->ncpus;
}

struct hv_vcpu *
vm_vcpu_hv(struct vm *vm, unsigned id)
{
	return id < vm->ncpus ? vm->vcpus[id].hv : NULL;
}

uint8_t *
vm_ram(struct vm *vm, uint64_t *size)
{
	*size = vm->ram_size;
	return vm->ram;
}

unsigned
vm_nvdev(const struct vm *vm)
{
	return vm->nvdev;
}

struct virtio_dev *
vm_vdev(struct vm *vm, unsigned i, uint32_t *device_id)
{
	if (i >= vm->nvdev)
		return NULL;
	if (device_id != NULL)
		*device_id = vm->vdev[i].device_id;
	return vm->vdev[i].dev;
}
