/*
 * Unit test for the VM object (core/vm.c) and its devices (core/uart.c,
 * core/legacy.c) on the fake hypervisor.  Each case builds a machine
 * from a synthesized PVH kernel, scripts what its vCPUs "do" with
 * hv_fake_queue_exit() and drives the reactor on the main thread.
 *
 * Synchronisation: a vCPU's exits reach the reactor in order through its
 * ring, so a test queues what it wants, then a read of SYNC_GPA (a test
 * MMIO window) and runs the reactor until that read arrives.  While the
 * vCPU waits for that answer its previous exit's data, as the device
 * answered it, is what hv_fake_last_data() shows: the sync handler keeps
 * a copy, which is how a test sees what a port read returned.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/vm.h"
#include "hv/fake.h"
#include "reactor/reactor.h"
#include "tests/tap.h"

#define SYNC_GPA	0xd0000000ULL	/* the test's sync window */
#define DEV_GPA		0xd0001000ULL	/* a test MMIO device, 0x100 bytes */
#define DEV_LEN		0x100
#define NOWHERE_GPA	0xd0002000ULL	/* nothing registered here */

#define COM1		0x3f8
#define UART_IRQ	4

#define SEC		1000000ULL	/* microseconds */

static char	 tmpdir[] = "/tmp/vm_test.XXXXXX";
static char	*kernel_path;

/* One machine under test and what the test saw of it. */
struct tvm {
	struct reactor	*r;
	struct vm	*vm;
	struct hv	*hv;
	unsigned	 ncpus;
	int		 out[2];	/* console output pipe */
	int		 in[2];		/* console input pipe, or -1 */
	char		 err[256];

	int		 ended;
	enum vm_end	 end;
	bool		 timed_out;

	unsigned	 syncs;
	uint8_t		 last[64];	/* data of the exit before a sync */
	size_t		 last_len;
	struct hv_vcpu	*sync_vcpu;

	/* The test MMIO device. */
	unsigned	 dev_reads, dev_writes, dev_stop_at;
	uint64_t	 dev_addr;
	uint8_t		 dev_len;
	uint8_t		 dev_data[8];

	unsigned	 paused_calls;
	bool		 started;
};

static struct tvm	T;

/* Threads of this process, from /proc. */
static int
count_dir(const char *path)
{
	DIR		*d;
	struct dirent	*e;
	int		 n = 0;

	if ((d = opendir(path)) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* Write the smallest kernel boot_load() takes: an ELF64 executable with
 * one PT_LOAD at 1 MiB and a PT_NOTE holding the PVH entry note. */
static int
write_kernel(void)
{
	uint8_t		img[0x1100];
	Elf64_Ehdr	eh;
	Elf64_Phdr	ph;
	Elf64_Nhdr	nh;
	uint64_t	entry = 0x100000;
	const size_t	noteoff = 0x200;
	FILE		*f;

	memset(img, 0, sizeof(img));
	memset(&eh, 0, sizeof(eh));
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_version = EV_CURRENT;
	eh.e_entry = entry;
	eh.e_phoff = sizeof(eh);
	eh.e_ehsize = sizeof(eh);
	eh.e_phentsize = sizeof(ph);
	eh.e_phnum = 2;
	memcpy(img, &eh, sizeof(eh));

	memset(&ph, 0, sizeof(ph));
	ph.p_type = PT_LOAD;
	ph.p_flags = PF_R | PF_X;
	ph.p_offset = 0x1000;
	ph.p_vaddr = ph.p_paddr = entry;
	ph.p_filesz = 0x100;
	ph.p_memsz = 0x1000;
	ph.p_align = 0x1000;
	memcpy(img + sizeof(eh), &ph, sizeof(ph));
	memset(&ph, 0, sizeof(ph));
	ph.p_type = PT_NOTE;
	ph.p_offset = noteoff;
	ph.p_filesz = sizeof(nh) + 4 + 8;
	ph.p_align = 4;
	memcpy(img + sizeof(eh) + sizeof(ph), &ph, sizeof(ph));

	nh.n_namesz = 4;
	nh.n_descsz = 8;
	nh.n_type = 18;		/* XEN_ELFNOTE_PHYS32_ENTRY */
	memcpy(img + noteoff, &nh, sizeof(nh));
	memcpy(img + noteoff + sizeof(nh), "Xen", 4);
	memcpy(img + noteoff + sizeof(nh) + 4, &entry, 8);
	memset(img + 0x1000, 0xf4, 0x100);	/* hlt */

	xasprintf(&kernel_path, "%s/vmlinux", tmpdir);
	if ((f = fopen(kernel_path, "w")) == NULL)
		return -1;
	if (fwrite(img, 1, sizeof(img), f) != sizeof(img)) {
		fclose(f);
		return -1;
	}
	return fclose(f) == 0 ? 0 : -1;
}

static void
end_cb(struct vm *vm, enum vm_end why, void *arg)
{
	struct tvm	*t = arg;

	t->ended++;
	t->end = why;
	reactor_stop(t->r);
}

/* The sync window: keep the previous exit's data and stop the loop. */
static void
sync_mmio(void *opaque, uint64_t addr, bool write, uint8_t *data,
    uint8_t len)
{
	struct tvm	*t = opaque;
	const uint8_t	*p;
	size_t		 n = 0;

	if (write)
		return;
	memset(data, 0, len);
	p = hv_fake_last_data(t->sync_vcpu, &n);
	t->last_len = p != NULL ? MIN(n, sizeof(t->last)) : 0;
	if (p != NULL)
		memcpy(t->last, p, t->last_len);
	t->syncs++;
	reactor_stop(t->r);
}

/* The test device: records the last access, reads give 0x11 0x22 ... */
static void
dev_mmio(void *opaque, uint64_t addr, bool write, uint8_t *data, uint8_t len)
{
	struct tvm	*t = opaque;
	unsigned	 i;

	t->dev_addr = addr;
	t->dev_len = len;
	if (write) {
		t->dev_writes++;
		memcpy(t->dev_data, data, MIN(len, sizeof(t->dev_data)));
	} else {
		t->dev_reads++;
		for (i = 0; i < len; i++)
			data[i] = 0x11 * (i + 1);
	}
	if (t->dev_stop_at != 0 && t->dev_writes + t->dev_reads ==
	    t->dev_stop_at)
		reactor_stop(t->r);
}

static void
guard_cb(void *arg)
{
	struct tvm	*t = arg;

	t->timed_out = true;
	reactor_stop(t->r);
}

/* Run the reactor until something stops it or usec pass; true when
 * something else stopped it first. */
static bool
run_for(struct tvm *t, uint64_t usec)
{
	struct reactor_timer	*g;

	t->timed_out = false;
	if ((g = reactor_add_timer(t->r, usec, false, guard_cb, t)) == NULL)
		fatal("guard timer");
	if (reactor_run(t->r) != 0)
		fatalx("reactor_run failed");
	reactor_del_timer(g);
	return !t->timed_out;
}

/* Queue a port access of size * count bytes on vCPU v. */
static void
queue_pio(struct hv_vcpu *v, uint16_t port, uint8_t size, bool write,
    const void *data, uint32_t count)
{
	struct hv_exit	x;

	memset(&x, 0, sizeof(x));
	x.reason = HV_EXIT_IO;
	x.io.port = port;
	x.io.size = size;
	x.io.write = write;
	x.io.count = count;
	if (hv_fake_queue_exit(v, &x, data) != 0)
		fatalx("queue_pio");
}

static void
queue_mmio(struct hv_vcpu *v, uint64_t gpa, uint8_t len, bool write,
    const void *data)
{
	struct hv_exit	x;

	memset(&x, 0, sizeof(x));
	x.reason = HV_EXIT_MMIO;
	x.mmio.gpa = gpa;
	x.mmio.len = len;
	x.mmio.write = write;
	if (hv_fake_queue_exit(v, &x, data) != 0)
		fatalx("queue_mmio");
}

static void
queue_exit(struct hv_vcpu *v, enum hv_exit_reason reason)
{
	struct hv_exit	x;

	memset(&x, 0, sizeof(x));
	x.reason = reason;
	if (reason == HV_EXIT_FAIL) {
		x.fail.code = 42;
		x.fail.what = "scripted entry failure";
	}
	if (hv_fake_queue_exit(v, &x, NULL) != 0)
		fatalx("queue_exit");
}

/* Everything queued on v so far has been handled by the reactor. */
static int
sync_vcpu(struct tvm *t, struct hv_vcpu *v)
{
	unsigned	before = t->syncs;

	t->sync_vcpu = v;
	queue_mmio(v, SYNC_GPA, 8, false, NULL);
	while (t->syncs == before) {
		if (!run_for(t, 5 * SEC)) {
			tap_diag("vCPU %u: no sync within 5 s", hv_vcpu_id(v));
			return -1;
		}
		if (t->ended && t->syncs == before) {
			tap_diag("machine ended (%s) before the sync",
			    vm_end_name(t->end));
			return -1;
		}
	}
	return 0;
}

static int
sync0(struct tvm *t)
{
	return sync_vcpu(t, hv_fake_vcpu(t->hv, 0));
}

/* outb / outw / outl on vCPU 0, handled before returning. */
static int
out(struct tvm *t, uint16_t port, uint8_t size, uint32_t val)
{
	queue_pio(hv_fake_vcpu(t->hv, 0), port, size, true, &val, 1);
	return sync0(t);
}

/* inb / inw / inl on vCPU 0: what the device answered, or -1. */
static int64_t
in(struct tvm *t, uint16_t port, uint8_t size)
{
	uint32_t	v = 0;

	queue_pio(hv_fake_vcpu(t->hv, 0), port, size, false, NULL, 1);
	if (sync0(t) != 0)
		return -1;
	if (t->last_len != size) {
		tap_diag("read of port %#x: %zu bytes of answer", port,
		    t->last_len);
		return -1;
	}
	memcpy(&v, t->last, size);
	return v;
}

static int64_t
mmio_in(struct tvm *t, uint64_t gpa, uint8_t len, uint64_t *val)
{
	queue_mmio(hv_fake_vcpu(t->hv, 0), gpa, len, false, NULL);
	if (sync0(t) != 0 || t->last_len != len)
		return -1;
	*val = 0;
	memcpy(val, t->last, len);
	return 0;
}

/* Build, register the test windows and start a machine in T. */
static int
tvm_up(unsigned ncpus, bool with_input)
{
	struct vm_config	cfg;

	memset(&T, 0, sizeof(T));
	T.in[0] = T.in[1] = -1;
	T.ncpus = ncpus;
	if ((T.r = reactor_create()) == NULL)
		fatal("reactor_create");
	if (pipe2(T.out, O_CLOEXEC | O_NONBLOCK) == -1)
		fatal("pipe");
	if (with_input && pipe2(T.in, O_CLOEXEC | O_NONBLOCK) == -1)
		fatal("pipe");
	memset(&cfg, 0, sizeof(cfg));
	cfg.kernel = kernel_path;
	cfg.cmdline = "console=ttyS0";
	cfg.ncpus = ncpus;
	cfg.memory_mib = 16;
	cfg.console_fd = T.out[1];
	cfg.console_in_fd = T.in[0];
	if ((T.vm = vm_create(T.r, &cfg, T.err, sizeof(T.err))) == NULL) {
		tap_diag("vm_create: %s", T.err);
		return -1;
	}
	T.hv = vm_hv(T.vm);
	if (vm_mmio_register(T.vm, SYNC_GPA, 8, sync_mmio, &T) != 0 ||
	    vm_mmio_register(T.vm, DEV_GPA, DEV_LEN, dev_mmio, &T) != 0) {
		tap_diag("vm_mmio_register failed");
		return -1;
	}
	if (vm_start(T.vm, end_cb, &T) != 0) {
		tap_diag("vm_start failed");
		return -1;
	}
	T.started = true;
	return 0;
}

/* Stop T's machine if it still runs, wait for its end, free it all.
 * Returns -1 when the machine did not end. */
static int
tvm_down(void)
{
	int	rc = 0;

	if (T.vm != NULL && T.started && !T.ended) {
		vm_stop(T.vm, VM_END_STOPPED);
		while (!T.ended)
			if (!run_for(&T, 5 * SEC)) {
				tap_diag("machine did not end within 5 s");
				/* Leak it: vm_free of a running one is fatal. */
				return -1;
			}
	}
	if (T.ended > 1) {
		tap_diag("end callback ran %d times", T.ended);
		rc = -1;
	}
	vm_free(T.vm);
	T.vm = NULL;
	if (T.r == NULL)
		return -1;
	close(T.out[0]);
	close(T.out[1]);
	if (T.in[0] >= 0) {
		close(T.in[0]);
		close(T.in[1]);
	}
	reactor_free(T.r);
	T.r = NULL;
	return rc;
}

/* Wait for T's machine to end by itself (at most usec). */
static bool
wait_end(uint64_t usec)
{
	uint64_t	deadline = now_ns() + usec * 1000;

	while (!T.ended && now_ns() < deadline)
		run_for(&T, (deadline - now_ns()) / 1000 + 1);
	return T.ended;
}

/* Whatever the console pipe holds now. */
static size_t
console_read(char *buf, size_t len)
{
	ssize_t	n, done = 0;

	while ((size_t)done < len - 1 &&
	    (n = read(T.out[0], buf + done, len - 1 - done)) > 0)
		done += n;
	buf[done] = '\0';
	return done;
}

#define CHECK_IN(port, size, want) do {					\
	int64_t	got_ = in(&T, (port), (size));				\
	if (got_ != (int64_t)(want)) {					\
		tap_diag("in(%#x, %u) = %#llx, want %#llx", (port),	\
		    (unsigned)(size), (long long)got_,			\
		    (long long)(want));					\
		goto fail;						\
	}								\
} while (0)

#define CHECK(cond) TAP_CHECK_GOTO(cond, fail)

/* Bytes written to THR, by single OUTs and by a REP OUTSB longer than
 * an asynchronous write, reach the console in order. */
static int
t_uart_output(void)
{
	struct hv_vcpu	*v;
	const char	*hello = "Hello";
	const char	*rest = ", serial world!\n";	/* 16 bytes */
	char		 buf[256];
	unsigned	 i;
	uint64_t	 before;

	if (tvm_up(1, false) != 0)
		goto fail;
	v = hv_fake_vcpu(T.hv, 0);
	before = vm_exit_count(T.vm);
	for (i = 0; hello[i] != '\0'; i++)
		queue_pio(v, COM1, 1, true, &hello[i], 1);
	queue_pio(v, COM1, 1, true, rest, strlen(rest));
	CHECK(sync0(&T) == 0);
	/* 5 single writes, one string write, the sync. */
	CHECK(vm_exit_count(T.vm) - before == 7);
	/* The newline flushed it. */
	console_read(buf, sizeof(buf));
	CHECK(strcmp(buf, "Hello, serial world!\n") == 0);

	/* Without a newline the bytes go out soon, and surely at the end. */
	for (i = 0; i < 3; i++)
		queue_pio(v, COM1, 1, true, &"abc"[i], 1);
	CHECK(sync0(&T) == 0);
	vm_stop(T.vm, VM_END_STOPPED);
	CHECK(wait_end(5 * SEC));
	console_read(buf, sizeof(buf));
	CHECK(strcmp(buf, "abc") == 0);
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

/* The registers the Linux 8250 driver's probe looks at. */
static int
t_uart_registers(void)
{
	char	buf[64];

	if (tvm_up(1, false) != 0)
		goto fail;
	/* LSR: transmitter empty, no data. */
	CHECK_IN(COM1 + 5, 1, 0x60);
	/* A wide read touches the first register only. */
	CHECK_IN(COM1 + 5, 2, 0xff60);
	CHECK_IN(COM1 + 0, 4, 0xffffff00);
	/* Scratch register. */
	CHECK(out(&T, COM1 + 7, 1, 0x5a) == 0);
	CHECK_IN(COM1 + 7, 1, 0x5a);
	CHECK(out(&T, COM1 + 7, 1, 0xa5) == 0);
	CHECK_IN(COM1 + 7, 1, 0xa5);
	/* IER holds its four bits. */
	CHECK(out(&T, COM1 + 1, 1, 0xff) == 0);
	CHECK_IN(COM1 + 1, 1, 0x0f);
	CHECK(out(&T, COM1 + 1, 1, 0x00) == 0);
	CHECK_IN(COM1 + 1, 1, 0x00);

	/* DLAB: 0x3f8 / 0x3f9 are the divisor latch, nothing is sent. */
	CHECK(out(&T, COM1 + 3, 1, 0x83) == 0);
	CHECK_IN(COM1 + 3, 1, 0x83);
	CHECK(out(&T, COM1 + 0, 1, 0x0c) == 0);
	CHECK(out(&T, COM1 + 1, 1, 0x34) == 0);
	CHECK_IN(COM1 + 0, 1, 0x0c);
	CHECK_IN(COM1 + 1, 1, 0x34);
	CHECK(out(&T, COM1 + 3, 1, 0x03) == 0);
	CHECK_IN(COM1 + 1, 1, 0x00);	/* IER again, untouched */
	CHECK_IN(COM1 + 3, 1, 0x03);
	CHECK(out(&T, COM1 + 3, 1, 0x83) == 0);
	CHECK_IN(COM1 + 0, 1, 0x0c);	/* the latch kept its value */
	CHECK(out(&T, COM1 + 3, 1, 0x03) == 0);

	/* Loopback, as autoconfig() tests it: MCR = LOOP | 0x0a gives
	 * MSR upper bits 0x90; all outputs give 0xf0. */
	CHECK(out(&T, COM1 + 4, 1, 0x1a) == 0);
	CHECK_IN(COM1 + 6, 1, 0x90);
	CHECK(out(&T, COM1 + 4, 1, 0x1f) == 0);
	CHECK_IN(COM1 + 6, 1, 0xf0);
	CHECK(out(&T, COM1 + 4, 1, 0x10) == 0);
	CHECK_IN(COM1 + 6, 1, 0x00);
	/* In loopback a byte sent comes back on RBR, not on the console. */
	CHECK(out(&T, COM1 + 0, 1, 0x55) == 0);
	CHECK_IN(COM1 + 5, 1, 0x61);
	CHECK_IN(COM1 + 0, 1, 0x55);
	CHECK_IN(COM1 + 5, 1, 0x60);
	CHECK_IN(COM1 + 0, 1, 0x00);	/* empty RBR */
	/* Out of loopback: modem lines up. */
	CHECK(out(&T, COM1 + 4, 1, 0x0b) == 0);
	CHECK_IN(COM1 + 4, 1, 0x0b);
	CHECK_IN(COM1 + 6, 1, 0xb0);
	vm_stop(T.vm, VM_END_STOPPED);
	CHECK(wait_end(5 * SEC));
	CHECK(console_read(buf, sizeof(buf)) == 0);
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

/* IIR and the IRQ line: THRE interrupts are edges, cleared by reading
 * IIR and raised again by the next THR write. */
static int
t_uart_thre_irq(void)
{
	unsigned	edges;

	if (tvm_up(1, false) != 0)
		goto fail;
	CHECK_IN(COM1 + 2, 1, 0x01);
	CHECK(hv_fake_irq_level(T.hv, UART_IRQ, &edges) == 0 && edges == 0);
	/* IER = THRI with an empty THR: pending at once. */
	CHECK(out(&T, COM1 + 1, 1, 0x02) == 0);
	CHECK(hv_fake_irq_level(T.hv, UART_IRQ, &edges) == 1 && edges == 1);
	CHECK_IN(COM1 + 2, 1, 0x02);
	CHECK(hv_fake_irq_level(T.hv, UART_IRQ, &edges) == 0 && edges == 1);
	CHECK_IN(COM1 + 2, 1, 0x01);
	/* A THR write: a new edge. */
	CHECK(out(&T, COM1, 1, 'x') == 0);
	CHECK(hv_fake_irq_level(T.hv, UART_IRQ, &edges) == 1 && edges == 2);
	/* FIFOs on: the 16550A's top bits in IIR. */
	CHECK(out(&T, COM1 + 2, 1, 0x07) == 0);
	CHECK_IN(COM1 + 2, 1, 0xc2);
	CHECK(hv_fake_irq_level(T.hv, UART_IRQ, &edges) == 0 && edges == 2);
	CHECK_IN(COM1 + 2, 1, 0xc1);
	CHECK(out(&T, COM1, 1, '\n') == 0);
	CHECK(hv_fake_irq_level(T.hv, UART_IRQ, &edges) == 1 && edges == 3);
	/* Masking THRI lowers the line. */
	CHECK(out(&T, COM1 + 1, 1, 0x00) == 0);
	CHECK(hv_fake_irq_level(T.hv, UART_IRQ, &edges) == 0 && edges == 3);
	CHECK_IN(COM1 + 2, 1, 0xc1);
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

/* ioeventfd and irqfd: a guest write KVM matches reaches the callback on
 * the reactor with the count; a non-matching value or address does not;
 * an irqfd raised from another thread reaches the hypervisor's gsi. */
static uint64_t	iofd_total;
static unsigned	iofd_calls;

static void
iofd_cb(uint64_t count, void *arg)
{
	iofd_total += count;
	iofd_calls++;
	(void)arg;
}

static void *
raise_thread(void *arg)
{
	vm_irqfd_raise(arg);
	return NULL;
}

static int
t_fastpaths(void)
{
	struct vm_ioeventfd	*io = NULL, *io2 = NULL;
	struct vm_irqfd		*irq = NULL;
	pthread_t		 th;
	unsigned		 i;

	iofd_total = iofd_calls = 0;
	if (tvm_up(1, false) != 0)
		goto fail;
	io = vm_ioeventfd_add(T.vm, 0xd0000050, 4, HV_IOEVENT_DATAMATCH, 3,
	    iofd_cb, NULL);
	CHECK(io != NULL);
	io2 = vm_ioeventfd_add(T.vm, 0xd0001050, 4, 0, 0, iofd_cb, NULL);
	CHECK(io2 != NULL);
	/* Same address and value twice is refused, as KVM does. */
	CHECK(vm_ioeventfd_add(T.vm, 0xd0000050, 4, HV_IOEVENT_DATAMATCH, 3,
	    iofd_cb, NULL) == NULL && errno == EEXIST);
	CHECK(!hv_fake_guest_write(T.hv, 0xd0000050, 4, 2));
	CHECK(hv_fake_guest_write(T.hv, 0xd0000050, 4, 3));
	CHECK(hv_fake_guest_write(T.hv, 0xd0000050, 4, 3));
	CHECK(hv_fake_guest_write(T.hv, 0xd0001050, 4, 12345));
	for (i = 0; i < 100 && iofd_total < 3; i++)
		run_for(&T, 10000);
	CHECK(iofd_total == 3);
	CHECK(iofd_calls >= 2 && iofd_calls <= 3);
	vm_ioeventfd_del(T.vm, io);
	io = NULL;
	CHECK(!hv_fake_guest_write(T.hv, 0xd0000050, 4, 3));

	irq = vm_irqfd_add(T.vm, 17);
	CHECK(irq != NULL);
	CHECK(pthread_create(&th, NULL, raise_thread, irq) == 0);
	pthread_join(th, NULL);
	CHECK(vm_irqfd_raise(irq) == 0);
	CHECK(hv_fake_irqfd_fired(T.hv, 17) == 2);
	vm_irqfd_del(T.vm, irq);
	irq = NULL;
	vm_ioeventfd_del(T.vm, io2);
	io2 = NULL;
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	vm_irqfd_del(T.vm, irq);
	vm_ioeventfd_del(T.vm, io);
	vm_ioeventfd_del(T.vm, io2);
	tvm_down();
	return TAP_FAIL;
}

/* Host console input shows up as LSR.DR and RBR bytes in order, with
 * IRQ 4 raised while IER = RDI and data waits. */
static int
t_uart_input(void)
{
	unsigned	edges, i;
	const char	*msg = "xyz";

	if (tvm_up(1, true) != 0)
		goto fail;
	CHECK(out(&T, COM1 + 2, 1, 0x01) == 0);	/* FIFO on */
	CHECK(out(&T, COM1 + 1, 1, 0x01) == 0);	/* IER = RDI */
	CHECK(hv_fake_irq_level(T.hv, UART_IRQ, &edges) == 0 && edges == 0);
	CHECK_IN(COM1 + 5, 1, 0x60);
	CHECK(write(T.in[1], msg, 3) == 3);
	/* No DTR yet: nobody has the tty open, so input waits on the host
	 * (as it must through Linux's IRQ probe and FIFO reset). */
	run_for(&T, 100000);
	CHECK(hv_fake_irq_level(T.hv, UART_IRQ, &edges) == 0 && edges == 0);
	CHECK_IN(COM1 + 5, 1, 0x60);
	/* A probe-like blip of DTR takes nothing either. */
	CHECK(out(&T, COM1 + 4, 1, 0x0b) == 0);
	CHECK(out(&T, COM1 + 4, 1, 0x08) == 0);
	run_for(&T, 100000);
	CHECK_IN(COM1 + 5, 1, 0x60);
	/* The tty opens: DTR | RTS | OUT2. */
	CHECK(out(&T, COM1 + 4, 1, 0x0b) == 0);
	/* The reactor reads the pipe on its own schedule. */
	for (i = 0; i < 200 && hv_fake_irq_level(T.hv, UART_IRQ, NULL) == 0;
	    i++)
		run_for(&T, 10000);
	CHECK(hv_fake_irq_level(T.hv, UART_IRQ, &edges) == 1 && edges == 1);
	CHECK_IN(COM1 + 5, 1, 0x61);
	CHECK_IN(COM1 + 2, 1, 0xc4);
	for (i = 0; i < 3; i++) {
		CHECK_IN(COM1 + 5, 1, 0x61);
		CHECK_IN(COM1 + 0, 1, (uint8_t)msg[i]);
	}
	CHECK_IN(COM1 + 5, 1, 0x60);
	CHECK_IN(COM1 + 2, 1, 0xc1);
	CHECK(hv_fake_irq_level(T.hv, UART_IRQ, &edges) == 0 && edges == 1);
	/* More input: a new edge. */
	CHECK(write(T.in[1], "!", 1) == 1);
	for (i = 0; i < 200 && hv_fake_irq_level(T.hv, UART_IRQ, NULL) == 0;
	    i++)
		run_for(&T, 10000);
	CHECK(hv_fake_irq_level(T.hv, UART_IRQ, &edges) == 1 && edges == 2);
	CHECK_IN(COM1 + 0, 1, '!');
	CHECK(hv_fake_irq_level(T.hv, UART_IRQ, NULL) == 0);
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

/* One CMOS register through ports 0x70 / 0x71, or -1. */
static int
cmos(uint8_t reg)
{
	if (out(&T, 0x70, 1, reg | 0x80) != 0)	/* with the NMI mask bit */
		return -1;
	return (int)in(&T, 0x71, 1);
}

/* A BCD byte's value, or -1 if it is not BCD. */
static int
from_bcd(int b)
{
	if (b < 0 || (b & 0x0f) > 9 || (b >> 4) > 9)
		return -1;
	return (b >> 4) * 10 + (b & 0x0f);
}

/* The RTC: UIP clear, BCD 24-hour mode, and the host's UTC time. */
static int
t_cmos_rtc(void)
{
	struct tm	tm;
	time_t		before, after, guest;
	int		sec, min, hour, mday, mon, year, cent;

	if (tvm_up(1, false) != 0)
		goto fail;
	CHECK((cmos(0x0a) & 0x80) == 0);
	/* DM (bit 2) clear = BCD, bit 1 = 24-hour. */
	CHECK((cmos(0x0b) & 0x06) == 0x02);
	CHECK((cmos(0x0d) & 0x80) == 0x80);
	before = time(NULL);
	sec = from_bcd(cmos(0x00));
	min = from_bcd(cmos(0x02));
	hour = from_bcd(cmos(0x04));
	mday = from_bcd(cmos(0x07));
	mon = from_bcd(cmos(0x08));
	year = from_bcd(cmos(0x09));
	cent = from_bcd(cmos(0x32));
	after = time(NULL);
	CHECK(sec >= 0 && sec < 60 && min >= 0 && min < 60);
	CHECK(hour >= 0 && hour < 24 && mday >= 1 && mday <= 31);
	CHECK(mon >= 1 && mon <= 12 && year >= 0 && cent >= 19);
	memset(&tm, 0, sizeof(tm));
	tm.tm_sec = sec;
	tm.tm_min = min;
	tm.tm_hour = hour;
	tm.tm_mday = mday;
	tm.tm_mon = mon - 1;
	tm.tm_year = cent * 100 + year - 1900;
	guest = timegm(&tm);
	/* Fields read one by one may straddle a minute (or hour...)
	 * boundary: the mix is off by less than one unit of the field
	 * that rolled over; a minute covers what a test run can see. */
	if (guest < before - 61 || guest > after + 61) {
		tap_diag("guest RTC %lld, host %lld..%lld", (long long)guest,
		    (long long)before, (long long)after);
		goto fail;
	}
	/* CMOS RAM outside the clock keeps what is written. */
	CHECK(out(&T, 0x70, 1, 0x40) == 0);
	CHECK(out(&T, 0x71, 1, 0x9c) == 0);
	CHECK(cmos(0x40) == 0x9c);
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

/* A write that resets the PC ends the machine with REBOOT; harmless
 * writes to the same ports do not. */
static int
reset_case(uint16_t port, uint8_t harmless, uint8_t reset, const char *why)
{
	if (tvm_up(2, false) != 0)
		goto fail;
	CHECK(out(&T, port, 1, harmless) == 0);
	CHECK(!T.ended);
	queue_pio(hv_fake_vcpu(T.hv, 0), port, 1, true, &reset, 1);
	CHECK(wait_end(5 * SEC));
	CHECK(T.end == VM_END_REBOOT);
	if (strcmp(vm_end_detail(T.vm), why) != 0) {
		tap_diag("end detail \"%s\", want \"%s\"", vm_end_detail(T.vm),
		    why);
		goto fail;
	}
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

static int
t_i8042_reset(void)
{
	return reset_case(0x64, 0xd1, 0xfe, "i8042 reset");
}

static int
t_cf9_reset(void)
{
	return reset_case(0xcf9, 0x02, 0x06, "port 0xcf9 reset");
}

static int
t_port92_reset(void)
{
	return reset_case(0x92, 0x02, 0x03, "port 0x92 fast reset");
}

/* Nothing at a port: reads are all ones at every width, writes vanish;
 * a read straddling the end of a device is nobody's. */
static int
t_unclaimed_ports(void)
{
	if (tvm_up(1, false) != 0)
		goto fail;
	CHECK_IN(0x2f8, 1, 0xff);
	CHECK_IN(0x510, 2, 0xffff);
	CHECK_IN(0x510, 4, 0xffffffff);
	CHECK_IN(0xcfc, 4, 0xffffffff);
	CHECK(out(&T, 0x2f8, 1, 0x41) == 0);
	CHECK(out(&T, 0x510, 4, 0x12345678) == 0);
	CHECK_IN(0x3fe, 4, 0xffffffff);	/* MSR + 0x3ff..0x401 */
	/* The i8042 status port is claimed: 0 (input buffer empty). */
	CHECK_IN(0x64, 1, 0x00);
	CHECK(!T.ended);
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

/* One exit reason from one vCPU ends a two-vCPU machine so. */
static int
exit_case(enum hv_exit_reason reason, enum vm_end want, const char *detail)
{
	if (tvm_up(2, false) != 0)
		goto fail;
	queue_exit(hv_fake_vcpu(T.hv, 1), reason);
	CHECK(wait_end(5 * SEC));
	if (T.end != want) {
		tap_diag("ended %s, want %s", vm_end_name(T.end),
		    vm_end_name(want));
		goto fail;
	}
	CHECK(strcmp(vm_end_detail(T.vm), detail) == 0);
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

static int
t_exit_shutdown(void)
{
	return exit_case(HV_EXIT_SHUTDOWN, VM_END_TRIPLE_FAULT, "triple fault");
}

static int
t_exit_fail(void)
{
	return exit_case(HV_EXIT_FAIL, VM_END_CRASH, "scripted entry failure");
}

static int
t_exit_poweroff(void)
{
	return exit_case(HV_EXIT_POWEROFF, VM_END_POWEROFF, "system power-off");
}

static int
t_exit_reset(void)
{
	return exit_case(HV_EXIT_RESET, VM_END_REBOOT, "system reset");
}

/* MMIO: nothing there reads all ones; a registered window gets the
 * accesses with their address, width and data. */
static int
t_mmio(void)
{
	uint64_t	val;
	uint32_t	w = 0xdeadbeef;

	if (tvm_up(1, false) != 0)
		goto fail;
	CHECK(mmio_in(&T, NOWHERE_GPA, 4, &val) == 0 && val == 0xffffffff);
	CHECK(mmio_in(&T, NOWHERE_GPA + 0x10, 8, &val) == 0 &&
	    val == UINT64_MAX);
	CHECK(mmio_in(&T, 0xfed00000, 1, &val) == 0 && val == 0xff);
	CHECK(T.dev_reads == 0 && T.dev_writes == 0);

	queue_mmio(hv_fake_vcpu(T.hv, 0), DEV_GPA + 4, 4, true, &w);
	CHECK(sync0(&T) == 0);
	CHECK(T.dev_writes == 1 && T.dev_addr == DEV_GPA + 4 &&
	    T.dev_len == 4 && memcmp(T.dev_data, &w, 4) == 0);
	CHECK(mmio_in(&T, DEV_GPA + 8, 8, &val) == 0);
	CHECK(val == 0x8877665544332211ULL);
	CHECK(T.dev_reads == 1 && T.dev_addr == DEV_GPA + 8 && T.dev_len == 8);
	CHECK(mmio_in(&T, DEV_GPA + DEV_LEN - 2, 2, &val) == 0 &&
	    val == 0x2211);
	CHECK(T.dev_reads == 2);
	/* Straddling the end of the window: not the device's. */
	CHECK(mmio_in(&T, DEV_GPA + DEV_LEN - 2, 4, &val) == 0 &&
	    val == 0xffffffff);
	CHECK(T.dev_reads == 2);

	/* Registration rules. */
	CHECK(vm_mmio_register(T.vm, DEV_GPA + 0x80, 0x100, dev_mmio, &T) ==
	    -EEXIST);
	CHECK(vm_mmio_register(T.vm, NOWHERE_GPA, 0, dev_mmio, &T) == -EINVAL);
	CHECK(vm_mmio_register(T.vm, UINT64_MAX - 1, 4, dev_mmio, &T) ==
	    -EINVAL);
	CHECK(vm_start(T.vm, end_cb, &T) == -EALREADY);
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

/* Every vCPU halted for good and nothing queued: the machine powers
 * off by itself. */
static int
t_halt_all(void)
{
	uint64_t	t0;
	unsigned	i;

	if (tvm_up(2, false) != 0)
		goto fail;
	t0 = now_ns();
	for (i = 0; i < T.ncpus; i++)
		hv_fake_set_halted(hv_fake_vcpu(T.hv, i), true);
	CHECK(wait_end(5 * SEC));
	CHECK(T.end == VM_END_POWEROFF);
	tap_diag("halt detected after %llu ms",
	    (unsigned long long)(now_ns() - t0) / 1000000);
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

/* One vCPU of two halted for good: the machine keeps running. */
static int
t_halt_one(void)
{
	if (tvm_up(2, false) != 0)
		goto fail;
	hv_fake_set_halted(hv_fake_vcpu(T.hv, 1), true);
	CHECK(!wait_end(1500000));
	/* The vCPUs were asked, the machine still answers. */
	CHECK(hv_fake_intr_count(hv_fake_vcpu(T.hv, 0)) > 0);
	tap_diag("vCPU 0 kicked %u times in 1.5 s",
	    hv_fake_intr_count(hv_fake_vcpu(T.hv, 0)));
	CHECK(out(&T, COM1 + 7, 1, 0x42) == 0);
	CHECK_IN(COM1 + 7, 1, 0x42);
	vm_stop(T.vm, VM_END_STOPPED);
	CHECK(wait_end(5 * SEC));
	CHECK(T.end == VM_END_STOPPED);
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

static void
paused_cb(struct vm *vm, void *arg)
{
	struct tvm	*t = arg;

	t->paused_calls++;
	reactor_stop(t->r);
}

/* Pause n vCPUs: the callback once all park, queued exits wait for
 * vm_resume(), a second pause then a stop while paused end cleanly. */
static int
pause_case(unsigned n)
{
	uint32_t	w = 1;
	unsigned	i;

	if (tvm_up(n, false) != 0)
		goto fail;
	CHECK(vm_pause(T.vm, paused_cb, &T) == 0);
	CHECK(vm_pause(T.vm, paused_cb, &T) == -EBUSY);
	while (T.paused_calls == 0)
		CHECK(run_for(&T, 5 * SEC));
	CHECK(T.paused_calls == 1);
	CHECK(vm_paused(T.vm));
	CHECK(vm_pause(T.vm, paused_cb, &T) == -EBUSY);

	for (i = 0; i < n; i++)
		queue_mmio(hv_fake_vcpu(T.hv, i), DEV_GPA, 4, true, &w);
	CHECK(!run_for(&T, 200000));
	CHECK(T.dev_writes == 0);
	for (i = 0; i < n; i++)
		CHECK(hv_fake_queued(hv_fake_vcpu(T.hv, i)) == 1);
	CHECK(T.paused_calls == 1);

	vm_resume(T.vm);
	CHECK(!vm_paused(T.vm));
	T.dev_stop_at = n;
	while (T.dev_writes < n)
		CHECK(run_for(&T, 5 * SEC));
	T.dev_stop_at = 0;
	for (i = 0; i < n; i++)
		CHECK(sync_vcpu(&T, hv_fake_vcpu(T.hv, i)) == 0);

	/* Again, then stop while paused. */
	CHECK(vm_pause(T.vm, paused_cb, &T) == 0);
	while (T.paused_calls == 1)
		CHECK(run_for(&T, 5 * SEC));
	CHECK(vm_paused(T.vm));
	vm_stop(T.vm, VM_END_STOPPED);
	CHECK(!vm_paused(T.vm));
	CHECK(wait_end(5 * SEC));
	CHECK(T.end == VM_END_STOPPED);
	CHECK(T.paused_calls == 2);
	CHECK(vm_pause(T.vm, paused_cb, &T) == -ESRCH);
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

static int
t_pause2(void)
{
	return pause_case(2);
}

static int
t_pause4(void)
{
	return pause_case(4);
}

/* vm_resume() before every vCPU has parked cancels the pause: no vCPU
 * may stay parked behind the guest's back. */
static int
t_resume_before_parked(void)
{
	uint32_t	w = 1;
	unsigned	i;

	if (tvm_up(2, false) != 0)
		goto fail;
	CHECK(vm_pause(T.vm, paused_cb, &T) == 0);
	/* Let the vCPUs park and post that they did, unseen yet. */
	usleep(100000);
	vm_resume(T.vm);
	for (i = 0; i < T.ncpus; i++)
		queue_mmio(hv_fake_vcpu(T.hv, i), DEV_GPA, 4, true, &w);
	T.dev_stop_at = T.ncpus;
	while (T.dev_writes < T.ncpus)
		if (!run_for(&T, 2 * SEC)) {
			tap_diag("%u of %u vCPUs ran after the resume",
			    T.dev_writes, T.ncpus);
			goto fail;
		}
	CHECK(!vm_paused(T.vm));
	CHECK(T.paused_calls == 0);
	/* A fresh pause still works. */
	CHECK(vm_pause(T.vm, paused_cb, &T) == 0);
	while (T.paused_calls == 0)
		CHECK(run_for(&T, 5 * SEC));
	vm_resume(T.vm);
	CHECK(sync0(&T) == 0);
	CHECK(tvm_down() == 0);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

static void
stop_timer_cb(void *arg)
{
	vm_stop(arg, VM_END_STOPPED);
}

/* vm_stop from a timer: STOPPED, and no vCPU thread left behind. */
static int
t_stop(void)
{
	struct reactor_timer	*tm;
	int			 threads, fds;

	threads = count_dir("/proc/self/task");
	fds = count_dir("/proc/self/fd");
	if (tvm_up(4, true) != 0)
		goto fail;
	CHECK(count_dir("/proc/self/task") == threads + 4);
	tm = reactor_add_timer(T.r, 100000, false, stop_timer_cb, T.vm);
	CHECK(tm != NULL);
	CHECK(wait_end(5 * SEC));
	reactor_del_timer(tm);
	CHECK(T.end == VM_END_STOPPED);
	CHECK(strcmp(vm_end_detail(T.vm), "stopped") == 0);
	/* Joined before the end callback: the threads are gone. */
	CHECK(count_dir("/proc/self/task") == threads);
	/* Idempotent after the end. */
	vm_stop(T.vm, VM_END_CRASH);
	CHECK(!run_for(&T, 100000));
	CHECK(T.ended == 1 && T.end == VM_END_STOPPED);
	CHECK(tvm_down() == 0);
	CHECK(count_dir("/proc/self/fd") == fds);
	return TAP_PASS;
fail:
	tvm_down();
	return TAP_FAIL;
}

#define MANY	20

struct many {
	struct reactor	*r;
	unsigned	 ended;
	enum vm_end	 end[MANY];
};

static void
many_end_cb(struct vm *vm, enum vm_end why, void *arg)
{
	struct many	*m = arg;

	m->ended++;
	if (m->ended == MANY)
		reactor_stop(m->r);
}

/* Stop a machine once its vCPUs have taken every queued exit (a loaded
 * host may not have run a vCPU thread yet when the timer first fires).
 * vm_stop() is idempotent, so later ticks are harmless. */
static void
stop_drained_cb(void *arg)
{
	struct vm	*vm = arg;
	struct hv_vcpu	*vcpu;
	unsigned	 j;

	for (j = 0; (vcpu = hv_fake_vcpu(vm_hv(vm), j)) != NULL; j++)
		if (hv_fake_queued(vcpu) != 0)
			return;
	vm_stop(vm, VM_END_STOPPED);
}

/* Twenty machines in one reactor, each with console traffic and its own
 * stop timer: every one ends, every thread is joined. */
static int
t_many(void)
{
	struct vm		*vms[MANY];
	struct reactor_timer	*tms[MANY], *g;
	struct vm_config	 cfg;
	struct many		 m;
	char			 err[256], buf[4096];
	int			 p[2], threads;
	unsigned		 i, j;
	size_t			 n;
	bool			 ok = false;

	memset(&m, 0, sizeof(m));
	memset(vms, 0, sizeof(vms));
	memset(tms, 0, sizeof(tms));
	threads = count_dir("/proc/self/task");
	if ((m.r = reactor_create()) == NULL)
		fatal("reactor_create");
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == -1)
		fatal("pipe");
	memset(&cfg, 0, sizeof(cfg));
	cfg.kernel = kernel_path;
	cfg.memory_mib = 16;
	cfg.console_fd = p[1];
	cfg.console_in_fd = -1;
	for (i = 0; i < MANY; i++) {
		cfg.ncpus = 1 + i % 2;
		if ((vms[i] = vm_create(m.r, &cfg, err, sizeof(err))) == NULL) {
			tap_diag("machine %u: %s", i, err);
			goto out;
		}
		if (vm_start(vms[i], many_end_cb, &m) != 0)
			goto out;
		for (j = 0; j < cfg.ncpus; j++)
			queue_pio(hv_fake_vcpu(vm_hv(vms[i]), j), COM1, 1,
			    true, "+", 1);
		tms[i] = reactor_add_timer(m.r, 20000 + 10000 * i, true,
		    stop_drained_cb, vms[i]);
	}
	g = reactor_add_timer(m.r, 10 * SEC, false, guard_cb, &T);
	T.r = m.r;
	T.timed_out = false;
	if (reactor_run(m.r) != 0)
		fatalx("reactor_run");
	reactor_del_timer(g);
	T.r = NULL;
	if (m.ended != MANY) {
		tap_diag("%u of %d machines ended", m.ended, MANY);
		goto out;
	}
	/* Every vCPU wrote one '+', flushed by each machine's end. */
	n = read(p[0], buf, sizeof(buf));
	if (n != MANY + MANY / 2) {
		tap_diag("console got %zd bytes, want %d", (ssize_t)n,
		    MANY + MANY / 2);
		goto out;
	}
	if (count_dir("/proc/self/task") != threads) {
		tap_diag("%d threads left", count_dir("/proc/self/task") -
		    threads);
		goto out;
	}
	ok = true;
out:
	if (m.ended != MANY && vms[0] != NULL) {
		/* Do not free what may still run: leak and fail. */
		return TAP_FAIL;
	}
	for (i = 0; i < MANY; i++) {
		if (tms[i] != NULL)
			reactor_del_timer(tms[i]);
		vm_free(vms[i]);
	}
	close(p[0]);
	close(p[1]);
	reactor_free(m.r);
	return ok ? TAP_PASS : TAP_FAIL;
}

/* A configuration vm_create() must refuse, with a message. */
static int
bad_config(unsigned ncpus, uint64_t mib, const char *kernel)
{
	struct reactor		*r;
	struct vm_config	 cfg;
	struct vm		*vm;
	char			 err[256];
	int			 fds;

	fds = count_dir("/proc/self/fd");
	if ((r = reactor_create()) == NULL)
		fatal("reactor_create");
	memset(&cfg, 0, sizeof(cfg));
	cfg.kernel = kernel;
	cfg.ncpus = ncpus;
	cfg.memory_mib = mib;
	cfg.console_fd = -1;
	cfg.console_in_fd = -1;
	err[0] = '\0';
	vm = vm_create(r, &cfg, err, sizeof(err));
	reactor_free(r);
	if (vm != NULL) {
		tap_diag("vm_create accepted %u cpus, %llu MiB, %s", ncpus,
		    (unsigned long long)mib, kernel);
		vm_free(vm);
		return TAP_FAIL;
	}
	tap_diag("refused: %s", err);
	TAP_CHECK(err[0] != '\0');
	TAP_CHECK(count_dir("/proc/self/fd") == fds);
	return TAP_PASS;
}

static int
t_bad_config(void)
{
	char	*missing;
	int	 rc;

	if ((rc = bad_config(0, 16, kernel_path)) != TAP_PASS ||
	    (rc = bad_config(HV_MAX_VCPUS + 1, 16, kernel_path)) != TAP_PASS ||
	    (rc = bad_config(1, 8, kernel_path)) != TAP_PASS)
		return rc;
	xasprintf(&missing, "%s/no-such-vmlinux", tmpdir);
	rc = bad_config(2, 16, missing);
	free(missing);
	return rc;
}

/* The end names the CLI prints. */
static int
t_end_names(void)
{
	TAP_CHECK(strcmp(vm_end_name(VM_END_POWEROFF), "poweroff") == 0);
	TAP_CHECK(strcmp(vm_end_name(VM_END_REBOOT), "reboot") == 0);
	TAP_CHECK(strcmp(vm_end_name(VM_END_TRIPLE_FAULT),
	    "triple-fault") == 0);
	TAP_CHECK(strcmp(vm_end_name(VM_END_CRASH), "crash") == 0);
	TAP_CHECK(strcmp(vm_end_name(VM_END_STOPPED), "stopped") == 0);
	TAP_CHECK(strcmp(vm_end_name((enum vm_end)99), "unknown") == 0);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "uart: THR bytes reach the console in order", t_uart_output },
	{ "uart: LSR, SCR, IER, DLAB, loopback", t_uart_registers },
	{ "uart: IIR and IRQ 4 edges for THRE", t_uart_thre_irq },
	{ "uart: console input on RBR with IRQ 4", t_uart_input },
	{ "ioeventfd and irqfd fast paths", t_fastpaths },
	{ "cmos: RTC in BCD 24h with the host UTC time", t_cmos_rtc },
	{ "legacy: i8042 0xfe ends with reboot", t_i8042_reset },
	{ "legacy: 0xcf9 0x06 ends with reboot", t_cf9_reset },
	{ "legacy: 0x92 bit 0 ends with reboot", t_port92_reset },
	{ "unclaimed ports read all ones", t_unclaimed_ports },
	{ "exit: shutdown is a triple fault", t_exit_shutdown },
	{ "exit: fail is a crash", t_exit_fail },
	{ "exit: poweroff", t_exit_poweroff },
	{ "exit: reset is a reboot", t_exit_reset },
	{ "mmio: all ones when unclaimed, handler otherwise", t_mmio },
	{ "halt: all vCPUs halted powers off", t_halt_all },
	{ "halt: one of two halted keeps running", t_halt_one },
	{ "pause/resume with 2 vCPUs", t_pause2 },
	{ "pause/resume with 4 vCPUs", t_pause4 },
	{ "resume before every vCPU parked", t_resume_before_parked },
	{ "stop from a timer joins every vCPU", t_stop },
	{ "twenty machines in one reactor", t_many },
	{ "bad configurations are refused", t_bad_config },
	{ "end names", t_end_names },
};

int
main(void)
{
	char	*cmd;
	int	 rc;

	log_init("vm_test", LOG_NORMAL);
	if (mkdtemp(tmpdir) == NULL || write_kernel() != 0) {
		printf("1..0 # SKIP cannot write a test kernel under /tmp\n");
		return 77;
	}
	rc = tap_run(cases, ARRAY_SIZE(cases), 120);
	xasprintf(&cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		rc = 1;
	free(cmd);
	free(kernel_path);
	return rc;
}
