/*
 * snapshot/ on the fake hypervisor: a paused machine saved and made
 * again (registers, RAM, devices), the memory file sparse and shared
 * copy-on-write, and every way a snapshot can be bad refused with a
 * one-line reason: truncated, corrupted, another version, a memory file
 * of the wrong size or content, a host CPU lacking features, a broken
 * export.  The UART and CMOS state round trip, and diff snapshots.
 */
#include <sys/stat.h>

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/vm.h"
#include "hv/fake.h"
#include "hv/hv.h"
#include "snapshot/snapshot.h"
#include "snapshot/snapshot_impl.h"
#include "tests/tap.h"

#define MIB		32

static char		 tmpdir[] = "/tmp/snapshot_test.XXXXXX";
static char		*kernel, *snapdir;
static struct reactor	*R;
static char		 err[512];

/* A PVH ELF the loader accepts: one PT_LOAD of hlt at 1 MiB and the Xen
 * PHYS32_ENTRY note. */
static int
make_kernel(void)
{
	uint8_t		 img[0x2000];
	Elf64_Ehdr	*eh = (Elf64_Ehdr *)(void *)img;
	Elf64_Phdr	*ph = (Elf64_Phdr *)(void *)(img + sizeof(*eh));
	Elf64_Nhdr	 nh = { 4, 8, 18 };
	uint64_t	 entry = 0x100000;
	FILE		*f;

	memset(img, 0, sizeof(img));
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_version = EV_CURRENT;
	eh->e_entry = entry;
	eh->e_phoff = sizeof(*eh);
	eh->e_ehsize = sizeof(*eh);
	eh->e_phentsize = sizeof(*ph);
	eh->e_phnum = 2;
	ph[0].p_type = PT_LOAD;
	ph[0].p_flags = PF_R | PF_X;
	ph[0].p_offset = 0x1000;
	ph[0].p_vaddr = ph[0].p_paddr = entry;
	ph[0].p_filesz = ph[0].p_memsz = 0x1000;
	ph[0].p_align = 0x1000;
	ph[1].p_type = PT_NOTE;
	ph[1].p_offset = 0x400;
	ph[1].p_filesz = sizeof(nh) + 4 + 8;
	ph[1].p_align = 4;
	memcpy(img + 0x400, &nh, sizeof(nh));
	memcpy(img + 0x400 + sizeof(nh), "Xen", 4);
	memcpy(img + 0x400 + sizeof(nh) + 4, &entry, 8);
	memset(img + 0x1000, 0xf4, 0x1000);
	xasprintf(&kernel, "%s/vmlinux", tmpdir);
	if ((f = fopen(kernel, "w")) == NULL)
		return -1;
	if (fwrite(img, 1, sizeof(img), f) != sizeof(img)) {
		fclose(f);
		return -1;
	}
	return fclose(f);
}

static void
stop_cb(void *arg)
{
	reactor_stop(R);
}

static void
paused_cb(struct vm *vm, void *arg)
{
	*(bool *)arg = true;
	reactor_stop(R);
}

static void
ended_cb(struct vm *vm, enum vm_end end, void *arg)
{
	*(bool *)arg = true;
	reactor_stop(R);
}

/* Run the reactor until stopped, at most 5 s. */
static void
run_a_while(void)
{
	struct reactor_timer	*t;

	t = reactor_add_timer(R, 5000000, false, stop_cb, NULL);
	if (t == NULL || reactor_run(R) != 0)
		fatalx("reactor");
	reactor_del_timer(t);
}

static void
fill_config(struct vm_config *c, const char *vsock)
{
	memset(c, 0, sizeof(*c));
	c->kernel = kernel;
	c->cmdline = "console=ttyS0 a=b";
	c->ncpus = 2;
	c->memory_mib = MIB;
	c->console_fd = -1;
	c->console_in_fd = -1;
	c->hvc_fd = -1;
	c->rng = true;
	c->balloon = true;
	c->vsock_path = vsock;
}

static const struct hv_regs want_regs = {
	.rax = 0x1111, .rbx = 0x2222, .r15 = 0xf15f15, .rip = 0x100123,
	.rflags = 0x202,
};

/* The RAM pattern: a few pages written, the rest zero. */
static void
pattern(uint8_t *ram, uint64_t size)
{
	uint64_t	off;

	for (off = 0x200000; off < size; off += 0x100000)
		snprintf((char *)ram + off, 64, "page at %llx",
		    (unsigned long long)off);
}

/* Boot, pause, save into snapdir, stop: the snapshot every case uses. */
static int
t_capture(void)
{
	struct vm_config	 c;
	struct vm		*vm;
	struct stat		 st;
	char			*vs, *mem;
	uint8_t			*ram;
	uint64_t		 size;
	bool			 paused = false, ended = false;
	int			 rc = TAP_FAIL;

	xasprintf(&vs, "%s/vsock0", tmpdir);
	fill_config(&c, vs);
	vm = vm_create(R, &c, err, sizeof(err));
	if (vm == NULL) {
		tap_diag("vm_create: %s", err);
		free(vs);
		return TAP_FAIL;
	}
	TAP_CHECK_GOTO(hv_vcpu_set_regs(vm_vcpu_hv(vm, 1), &want_regs) == 0,
	    out);
	ram = vm_ram(vm, &size);
	pattern(ram, size);
	/* Not paused: refused. */
	TAP_CHECK_GOTO(snapshot_save(vm, snapdir, err, sizeof(err)) ==
	    -EBUSY, out);
	TAP_CHECK_GOTO(vm_start(vm, ended_cb, &ended) == 0, out);
	TAP_CHECK_GOTO(vm_pause(vm, paused_cb, &paused) == 0, out);
	run_a_while();
	TAP_CHECK_GOTO(paused, out);
	if (snapshot_save(vm, snapdir, err, sizeof(err)) != 0) {
		tap_diag("snapshot_save: %s", err);
		goto out;
	}
	xasprintf(&mem, "%s/memory", snapdir);
	TAP_CHECK_GOTO(stat(mem, &st) == 0, out_mem);
	TAP_CHECK_GOTO((uint64_t)st.st_size == (uint64_t)MIB << 20, out_mem);
	/* Sparse: far fewer blocks than bytes. */
	tap_diag("memory file: %lld bytes, %lld allocated",
	    (long long)st.st_size, (long long)st.st_blocks * 512);
	TAP_CHECK_GOTO((uint64_t)st.st_blocks * 512 < st.st_size / 4, out_mem);
	rc = TAP_PASS;
out_mem:
	free(mem);
	vm_stop(vm, VM_END_STOPPED);
	run_a_while();
	TAP_CHECK(ended);
out:
	if (!ended && rc != TAP_PASS) {
		vm_stop(vm, VM_END_STOPPED);
		run_a_while();
	}
	vm_free(vm);
	free(vs);
	return rc;
}

/* Restore twice from one snapshot: state and RAM as saved, each with
 * its own vsock path; a write to one clone's RAM is private. */
static int
t_restore(void)
{
	struct snapshot_restore_opts	 o;
	struct vm			*a = NULL, *b = NULL;
	struct hv_regs			 r;
	uint8_t				*ra, *rb, *ref;
	uint64_t			 sa, sb, off;
	char				*va, *vb;
	int				 rc = TAP_FAIL;

	xasprintf(&va, "%s/vsock-a", tmpdir);
	xasprintf(&vb, "%s/vsock-b", tmpdir);
	snapshot_restore_opts_init(&o);
	o.vsock_path = va;
	o.verify_memory = true;
	if ((a = snapshot_restore(R, snapdir, &o, err, sizeof(err))) == NULL) {
		tap_diag("restore: %s", err);
		goto out;
	}
	o.vsock_path = vb;
	o.verify_memory = false;
	if ((b = snapshot_restore(R, snapdir, &o, err, sizeof(err))) == NULL) {
		tap_diag("restore: %s", err);
		goto out;
	}
	TAP_CHECK_GOTO(vm_ncpus(a) == 2, out);
	TAP_CHECK_GOTO(hv_vcpu_get_regs(vm_vcpu_hv(a, 1), &r) == 0, out);
	TAP_CHECK_GOTO(memcmp(&r, &want_regs, sizeof(r)) == 0, out);
	TAP_CHECK_GOTO(strcmp(vm_get_config(a)->cmdline,
	    "console=ttyS0 a=b") == 0, out);
	TAP_CHECK_GOTO(vm_nvdev(a) == 3, out);
	TAP_CHECK_GOTO(access(va, F_OK) == 0 && access(vb, F_OK) == 0, out);
	ra = vm_ram(a, &sa);
	rb = vm_ram(b, &sb);
	TAP_CHECK_GOTO(sa == (uint64_t)MIB << 20 && sb == sa, out);
	/* The pattern and the loaded kernel (hlt at 1 MiB) are back. */
	ref = xcalloc(1, sa);
	pattern(ref, sa);
	for (off = 0x200000; off < sa; off += 0x100000)
		TAP_CHECK_GOTO(memcmp(ra + off, ref + off, 4096) == 0,
		    out_ref);
	TAP_CHECK_GOTO(ra[0x100000] == 0xf4 && ra[0x100fff] == 0xf4, out_ref);
	TAP_CHECK_GOTO(memcmp(ra, rb, sa) == 0, out_ref);
	/* Copy-on-write: one clone's write is not the other's. */
	memcpy(ra + 0x200000, "changed", 8);
	TAP_CHECK_GOTO(memcmp(rb + 0x200000, ref + 0x200000, 4096) == 0,
	    out_ref);
	rc = TAP_PASS;
out_ref:
	free(ref);
out:
	vm_free(a);
	vm_free(b);
	free(va);
	free(vb);
	return rc;
}

/* Copy snapdir to a fresh directory for one bad case. */
static char *
copy_snapshot(const char *name)
{
	char	*d, *cmd;

	xasprintf(&d, "%s/%s", tmpdir, name);
	xasprintf(&cmd, "rm -rf '%s' && cp -a '%s' '%s'", d, snapdir, d);
	if (system(cmd) != 0)
		fatalx("%s failed", cmd);
	free(cmd);
	return d;
}

/* Restore from dir must fail with `want` in the reason. */
static int
refused(const char *dir, bool verify, const char *want)
{
	struct snapshot_restore_opts	 o;
	struct vm			*vm;
	char				*vs;

	xasprintf(&vs, "%s/vsock-bad", tmpdir);
	unlink(vs);
	snapshot_restore_opts_init(&o);
	o.vsock_path = vs;
	o.verify_memory = verify;
	err[0] = '\0';
	vm = snapshot_restore(R, dir, &o, err, sizeof(err));
	free(vs);
	if (vm != NULL) {
		tap_diag("%s: restored, want a refusal naming '%s'", dir, want);
		vm_free(vm);
		return TAP_FAIL;
	}
	tap_diag("refused: %s", err);
	if (strstr(err, want) == NULL || strchr(err, '\n') != NULL) {
		tap_diag("want a one-line reason naming '%s'", want);
		return TAP_FAIL;
	}
	return TAP_PASS;
}

/* Rewrite the state file with f applied to its bytes. */
static void
edit_state(const char *dir, void (*f)(uint8_t *, size_t *))
{
	char	*path;
	uint8_t	*buf;
	size_t	 len;
	FILE	*fp;

	xasprintf(&path, "%s/state", dir);
	if (read_file(path, 1 << 26, &buf, &len) != 0)
		fatalx("read %s", path);
	f(buf, &len);
	if ((fp = fopen(path, "w")) == NULL ||
	    fwrite(buf, 1, len, fp) != len || fclose(fp) != 0)
		fatalx("write %s", path);
	free(buf);
	free(path);
}

static void
cut_half(uint8_t *b, size_t *len)
{
	*len /= 2;
}

static void
flip_byte(uint8_t *b, size_t *len)
{
	b[*len - 100] ^= 0x40;
}

static void
bump_version(uint8_t *b, size_t *len)
{
	struct snap_header	h;

	memcpy(&h, b, sizeof(h));
	h.version = SNAPSHOT_VERSION + 1;
	h.hdr_crc = crc32(0, (const uint8_t *)&h,
	    offsetof(struct snap_header, hdr_crc));
	memcpy(b, &h, sizeof(h));
}

/* A version 1 file (before the UART and CMOS sections). */
static void
old_version(uint8_t *b, size_t *len)
{
	struct snap_header	h;

	memcpy(&h, b, sizeof(h));
	h.version = 1;
	h.hdr_crc = crc32(0, (const uint8_t *)&h,
	    offsetof(struct snap_header, hdr_crc));
	memcpy(b, &h, sizeof(h));
}

static void
garbage(uint8_t *b, size_t *len)
{
	memset(b, 'x', *len);
}

static void
tiny(uint8_t *b, size_t *len)
{
	*len = 10;
}

static int
t_truncated(void)
{
	char	*d = copy_snapshot("truncated");
	int	 rc;

	edit_state(d, cut_half);
	rc = refused(d, false, "truncated");
	edit_state(d, tiny);
	if (rc == TAP_PASS)
		rc = refused(d, false, "truncated");
	free(d);
	return rc;
}

static int
t_corrupted(void)
{
	char	*d = copy_snapshot("corrupted");
	int	 rc;

	edit_state(d, flip_byte);
	rc = refused(d, false, "corrupted");
	free(d);
	return rc;
}

static int
t_not_snapshot(void)
{
	char	*d = copy_snapshot("garbage"), *m;
	int	 rc;

	edit_state(d, garbage);
	rc = refused(d, false, "not an smx snapshot");
	free(d);
	xasprintf(&m, "%s/missing", tmpdir);
	if (rc == TAP_PASS)
		rc = refused(m, false, "No such file");
	free(m);
	return rc;
}

static int
t_version(void)
{
	char	*d = copy_snapshot("version");
	int	 rc;

	edit_state(d, bump_version);
	rc = refused(d, false, "version");
	edit_state(d, old_version);
	if (rc == TAP_PASS)
		rc = refused(d, false, "format version 1,");
	free(d);
	return rc;
}

static int
t_memory_size(void)
{
	char	*d = copy_snapshot("memsize"), *m;
	int	 rc;

	xasprintf(&m, "%s/memory", d);
	TAP_CHECK(truncate(m, ((off_t)MIB << 20) - 4096) == 0);
	rc = refused(d, false, "the state says");
	unlink(m);
	if (rc == TAP_PASS)
		rc = refused(d, false, "No such file");
	free(m);
	free(d);
	return rc;
}

static int
t_memory_digest(void)
{
	char	*d = copy_snapshot("memdigest"), *m;
	int	 fd, rc;

	xasprintf(&m, "%s/memory", d);
	fd = open(m, O_WRONLY);
	TAP_CHECK(fd != -1 && pwrite(fd, "x", 1, 0x300001) == 1);
	close(fd);
	rc = refused(d, true, "SHA-256 mismatch");
	if (rc == TAP_PASS && snapshot_check(d, true, NULL, NULL, err,
	    sizeof(err)) == 0) {
		tap_diag("snapshot_check passed a corrupted memory file");
		rc = TAP_FAIL;
	}
	free(m);
	free(d);
	return rc;
}

static int
t_cpu_features(void)
{
	uint32_t	have[HV_CPU_FEATURE_WORDS], fewer[HV_CPU_FEATURE_WORDS];
	int		rc;

	hv_cpu_features(NULL, have);
	memcpy(fewer, have, sizeof(fewer));
	fewer[1] &= ~(1U << 26);	/* SSE2 gone */
	hv_fake_set_cpu_features(fewer);
	rc = refused(snapdir, false, "lacks features");
	hv_fake_set_cpu_features(have);
	return rc;
}

static int
t_export_import(void)
{
	struct snapshot_restore_opts	 o;
	struct vm			*vm;
	uint32_t			 have[HV_CPU_FEATURE_WORDS];
	uint32_t			 fewer[HV_CPU_FEATURE_WORDS];
	char				*file, *d, *vs, *cmd;
	uint64_t			 mib;
	int				 rc = TAP_FAIL;

	xasprintf(&file, "%s/export.smx", tmpdir);
	xasprintf(&d, "%s/imported", tmpdir);
	xasprintf(&vs, "%s/vsock-imp", tmpdir);
	if (snapshot_export(snapdir, file, err, sizeof(err)) != 0) {
		tap_diag("export: %s", err);
		goto out;
	}
	if (snapshot_import(file, d, err, sizeof(err)) != 0) {
		tap_diag("import: %s", err);
		goto out;
	}
	TAP_CHECK_GOTO(snapshot_check(d, true, &mib, NULL, err,
	    sizeof(err)) == 0 && mib == MIB, out);
	snapshot_restore_opts_init(&o);
	o.vsock_path = vs;
	if ((vm = snapshot_restore(R, d, &o, err, sizeof(err))) == NULL) {
		tap_diag("restore of the import: %s", err);
		goto out;
	}
	vm_free(vm);
	/* A host lacking a feature refuses the import. */
	hv_cpu_features(NULL, have);
	memcpy(fewer, have, sizeof(fewer));
	fewer[0] &= ~1U;		/* SSE3 gone */
	hv_fake_set_cpu_features(fewer);
	rc = snapshot_import(file, d, err, sizeof(err));
	hv_fake_set_cpu_features(have);
	tap_diag("import on a lesser CPU: %s", err);
	TAP_CHECK_GOTO(rc != 0 && strstr(err, "lacks features") != NULL, out);
	/* Truncated and corrupted exports. */
	xasprintf(&cmd, "truncate -s -1000 '%s'", file);
	TAP_CHECK_GOTO(system(cmd) == 0, out_cmd);
	rc = snapshot_import(file, d, err, sizeof(err));
	tap_diag("truncated export: %s", err);
	TAP_CHECK_GOTO(rc != 0, out_cmd);
	free(cmd);
	/* A fresh export with bytes changed in the middle. */
	TAP_CHECK_GOTO(snapshot_export(snapdir, file, err, sizeof(err)) == 0,
	    out_cmd);
	xasprintf(&cmd, "printf 'garbage' | dd of='%s' bs=1 seek=2000 "
	    "conv=notrunc 2>/dev/null", file);
	TAP_CHECK_GOTO(system(cmd) == 0, out_cmd);
	rc = snapshot_import(file, d, err, sizeof(err));
	tap_diag("corrupted export: %s", err);
	TAP_CHECK_GOTO(rc != 0, out_cmd);
	rc = TAP_PASS;
out_cmd:
	free(cmd);
out:
	free(file);
	free(d);
	free(vs);
	return rc;
}

/* Run the reactor for about ms milliseconds. */
static void
run_ms(unsigned ms)
{
	struct reactor_timer	*t;

	t = reactor_add_timer(R, ms * 1000ULL, false, stop_cb, NULL);
	if (t == NULL || reactor_run(R) != 0)
		fatalx("reactor");
	reactor_del_timer(t);
}

/* A one-byte port write for vCPU v to "make". */
static void
outb(struct hv_vcpu *v, uint16_t port, uint8_t val)
{
	struct hv_exit	x;

	memset(&x, 0, sizeof(x));
	x.reason = HV_EXIT_IO;
	x.io.port = port;
	x.io.size = 1;
	x.io.write = true;
	x.io.count = 1;
	if (hv_fake_queue_exit(v, &x, &val) != 0)
		fatalx("queue_exit");
}

/* Start vm, let vCPU 0 make its queued exits, pause: the exits reach
 * the reactor through the vCPU's ring before its pause does. */
static int
start_and_pause(struct vm *vm, bool *ended)
{
	bool		paused = false;
	unsigned	i;

	if (vm_start(vm, ended_cb, ended) != 0)
		return -1;
	for (i = 0; i < 500 && hv_fake_queued(vm_vcpu_hv(vm, 0)) != 0; i++)
		run_ms(10);
	if (vm_pause(vm, paused_cb, &paused) != 0)
		return -1;
	run_a_while();
	return paused ? 0 : -1;
}

static void
stop_and_free(struct vm *vm, bool *ended)
{
	vm_resume(vm);
	vm_stop(vm, VM_END_STOPPED);
	while (!*ended)
		run_a_while();
	vm_free(vm);
}

/* The UART and CMOS blobs of vm. */
static void
device_blobs(struct vm *vm, uint8_t **u, size_t *ul, uint8_t **l, size_t *ll)
{
	*u = *l = NULL;
	*ul = *ll = 0;
	if (uart_save(vm_uart(vm), u, ul) != 0 ||
	    legacy_save(vm_legacy(vm), l, ll) != 0)
		fatalx("device save");
}

/*
 * The guest programs the UART the way the Linux 8250 driver does
 * (divisor, line control, FIFO, loopback bytes into the RX FIFO, the
 * receive interrupt on) and writes CMOS RAM; after a snapshot and a
 * restore the registers, FIFO, interrupt line and CMOS are as saved.
 */
static int
t_uart_legacy(void)
{
	struct snapshot_restore_opts	 o;
	struct vm_config		 c;
	struct vm			*vm, *b = NULL;
	struct hv_vcpu			*v;
	uint8_t				*ua, *la, *ub, *lb, *bad = NULL;
	size_t				 ual, lal, ubl, lbl, n;
	uint32_t			 ver = 2;
	char				*d;
	bool				 ended = false;
	int				 rc = TAP_FAIL;

	xasprintf(&d, "%s/uartsnap", tmpdir);
	fill_config(&c, NULL);
	if ((vm = vm_create(R, &c, err, sizeof(err))) == NULL) {
		tap_diag("vm_create: %s", err);
		free(d);
		return TAP_FAIL;
	}
	v = vm_vcpu_hv(vm, 0);
	outb(v, 0x3fb, 0x83);		/* DLAB */
	outb(v, 0x3f8, 0x01);		/* DLL: 115200 baud */
	outb(v, 0x3f9, 0x00);
	outb(v, 0x3fb, 0x03);		/* 8N1 */
	outb(v, 0x3fa, 0x01);		/* FIFO on */
	outb(v, 0x3ff, 0x5a);		/* scratch */
	outb(v, 0x3fc, 0x1b);		/* loopback, DTR, RTS, OUT2 */
	outb(v, 0x3f8, 'h');
	outb(v, 0x3f8, 'i');
	outb(v, 0x3fc, 0x0b);		/* loopback off */
	outb(v, 0x3f9, 0x01);		/* receive interrupt on */
	outb(v, 0x70, 0x40);
	outb(v, 0x71, 0xab);		/* CMOS RAM byte */
	outb(v, 0x70, 0x41);
	if (start_and_pause(vm, &ended) != 0) {
		tap_diag("the machine did not pause");
		goto out;
	}
	TAP_CHECK_GOTO(hv_fake_irq_level(vm_hv(vm), 4, NULL) == 1, out);
	if (snapshot_save(vm, d, err, sizeof(err)) != 0) {
		tap_diag("snapshot_save: %s", err);
		goto out;
	}
	device_blobs(vm, &ua, &ual, &la, &lal);
	snapshot_restore_opts_init(&o);
	if ((b = snapshot_restore(R, d, &o, err, sizeof(err))) == NULL) {
		tap_diag("restore: %s", err);
		goto out_blobs;
	}
	device_blobs(b, &ub, &ubl, &lb, &lbl);
	/* Register file: IER LCR MCR SCR FCR DLL DLM, THRE, IRQ, FIFO. */
	TAP_CHECK_GOTO(ubl == ual && memcmp(ua, ub, ual) == 0, out_all);
	TAP_CHECK_GOTO(ubl == 19 + 2 && memcmp(ub + 8,
	    "\x01\x03\x0b\x5a\x01\x01\x00", 7) == 0 && ub[16] == 1 &&
	    ub[17] == 2 && memcmp(ub + 19, "hi", 2) == 0, out_all);
	TAP_CHECK_GOTO(lbl == lal && memcmp(la, lb, lal) == 0, out_all);
	TAP_CHECK_GOTO(lb[8] == 0x41 && lb[9 + 0x40] == 0xab, out_all);
	/* The restored UART drove its interrupt line as it was. */
	TAP_CHECK_GOTO(hv_fake_irq_level(vm_hv(b), 4, NULL) == 1, out_all);
	/* Blobs of another version, cut short, or with a FIFO longer than
	 * the UART's are refused. */
	bad = xmalloc(ubl);
	memcpy(bad, ub, ubl);
	memcpy(bad + 4, &ver, 4);
	TAP_CHECK_GOTO(uart_load(vm_uart(b), bad, ubl) == -EPROTO, out_all);
	TAP_CHECK_GOTO(uart_load(vm_uart(b), ub, ubl - 1) == -EINVAL,
	    out_all);
	memcpy(bad, ub, ubl);
	bad[18] = 0x10;			/* 4096 + 2 bytes */
	TAP_CHECK_GOTO(uart_load(vm_uart(b), bad, ubl) == -EINVAL, out_all);
	n = lbl;
	TAP_CHECK_GOTO(legacy_load(vm_legacy(b), lb, n - 1) == -EINVAL,
	    out_all);
	memcpy(lb + 4, &ver, 4);
	TAP_CHECK_GOTO(legacy_load(vm_legacy(b), lb, n) == -EPROTO, out_all);
	rc = TAP_PASS;
out_all:
	free(bad);
	free(ub);
	free(lb);
out_blobs:
	free(ua);
	free(la);
out:
	vm_free(b);
	stop_and_free(vm, &ended);
	free(d);
	return rc;
}

/* The whole RAM of two machines is the same. */
static bool
same_ram(struct vm *a, struct vm *b)
{
	uint64_t	sa, sb;
	uint8_t		*ra = vm_ram(a, &sa), *rb = vm_ram(b, &sb);

	return sa == sb && memcmp(ra, rb, sa) == 0;
}

/* The page count a diff directory's pages file holds. */
static uint64_t
diff_pages(const char *dir)
{
	struct stat	 st;
	char		*p;
	uint64_t	 n;

	xasprintf(&p, "%s/pages", dir);
	n = stat(p, &st) == 0 ? ((uint64_t)st.st_size - 16) / (8 + 4096) :
	    ~0ULL;
	free(p);
	return n;
}

/*
 * Diff snapshots: a clone of the base with dirty logging; the guest
 * writes one page (in the dirty log), the host writes another (a
 * device's DMA: not in the log), a third is written back unchanged and
 * a fourth only marked in the log.  The diff holds the two changed
 * pages, restores to the same RAM and registers, and is refused against
 * a base it was not taken from, as its own base, with a truncated pages
 * file, and as the base of another diff.  A machine not made from the
 * base (booted) diffs by comparing every page.
 */
static int
t_diff(void)
{
	struct snapshot_restore_opts	 o;
	struct vm_config		 c;
	struct vm			*a, *b = NULL, *f = NULL;
	struct hv_regs			 r;
	uint64_t			 size, *bm = NULL;
	uint8_t				*ram;
	char				*d, *d2, *d3, *p = NULL, *vs;
	uint8_t				 tmp[64];
	bool				 ended = false, fended = false;
	int				 rc = TAP_FAIL;

	xasprintf(&d, "%s/diff", tmpdir);
	xasprintf(&d2, "%s/diff2", tmpdir);
	xasprintf(&d3, "%s/diff3", tmpdir);
	xasprintf(&vs, "%s/vsock-diff", tmpdir);
	snapshot_restore_opts_init(&o);
	o.track_dirty = true;
	o.vsock_path = vs;
	if ((a = snapshot_restore(R, snapdir, &o, err, sizeof(err))) == NULL) {
		tap_diag("restore: %s", err);
		goto out_free;
	}
	if (start_and_pause(a, &ended) != 0)
		goto out;
	ram = vm_ram(a, &size);
	bm = xcalloc(size / 4096 / 64, sizeof(*bm));
	/* The dirty log: what the guest wrote, once. */
	hv_fake_guest_dirty(vm_hv(a), 0x5000, 1);
	TAP_CHECK_GOTO(vm_dirty_log(a, bm) == 0 && bm[0] == 1ULL << 5, out);
	bm[0] = 0;
	TAP_CHECK_GOTO(vm_dirty_log(a, bm) == 0 && bm[0] == 0, out);
	memcpy(ram + 0x300000, "guest wrote this", 16);
	hv_fake_guest_dirty(vm_hv(a), 0x300000, 16);
	memcpy(ram + 0x500000, "device wrote this", 17);
	memcpy(tmp, ram + 0x400000, sizeof(tmp));	/* unchanged */
	memcpy(ram + 0x400000, tmp, sizeof(tmp));
	hv_fake_guest_dirty(vm_hv(a), 0x600000, 4096);	/* unchanged */
	if (snapshot_save_diff(a, snapdir, d, err, sizeof(err)) != 0) {
		tap_diag("snapshot_save_diff: %s", err);
		goto out;
	}
	tap_diag("diff: %llu pages", (unsigned long long)diff_pages(d));
	TAP_CHECK_GOTO(diff_pages(d) == 2, out);
	snapshot_restore_opts_init(&o);
	o.verify_memory = true;
	if ((b = snapshot_restore(R, d, &o, err, sizeof(err))) == NULL) {
		tap_diag("restore the diff: %s", err);
		goto out;
	}
	TAP_CHECK_GOTO(same_ram(a, b), out);
	TAP_CHECK_GOTO(hv_vcpu_get_regs(vm_vcpu_hv(b, 1), &r) == 0 &&
	    memcmp(&r, &want_regs, sizeof(r)) == 0, out);
	vm_free(b);
	b = NULL;
	/* Into its own base, against a diff: refused. */
	TAP_CHECK_GOTO(snapshot_save_diff(a, snapdir, snapdir, err,
	    sizeof(err)) == -EINVAL, out);
	tap_diag("refused: %s", err);
	TAP_CHECK_GOTO(snapshot_save_diff(a, d, d2, err, sizeof(err)) ==
	    -EINVAL && strstr(err, "diff snapshot itself") != NULL, out);
	tap_diag("refused: %s", err);
	/* Another base than its own. */
	snapshot_restore_opts_init(&o);
	xasprintf(&p, "%s/uartsnap", tmpdir);
	o.base_dir = p;
	b = snapshot_restore(R, d, &o, err, sizeof(err));
	free(p);
	p = NULL;
	TAP_CHECK_GOTO(b == NULL && strstr(err, "another snapshot") != NULL,
	    out);
	tap_diag("refused: %s", err);
	/* A booted machine diffs by comparison; a second diff of the
	 * clone still holds its pages after the log was restarted. */
	fill_config(&c, NULL);
	if ((f = vm_create(R, &c, err, sizeof(err))) == NULL ||
	    start_and_pause(f, &fended) != 0) {
		tap_diag("boot: %s", err);
		goto out;
	}
	if (snapshot_save_diff(f, snapdir, d3, err, sizeof(err)) != 0 ||
	    snapshot_save_diff(a, snapdir, d2, err, sizeof(err)) != 0) {
		tap_diag("snapshot_save_diff: %s", err);
		goto out;
	}
	TAP_CHECK_GOTO(diff_pages(d2) == 2, out);
	snapshot_restore_opts_init(&o);
	if ((b = snapshot_restore(R, d3, &o, err, sizeof(err))) == NULL) {
		tap_diag("restore the booted diff: %s", err);
		goto out;
	}
	TAP_CHECK_GOTO(same_ram(f, b), out);
	tap_diag("booted diff: %llu pages", (unsigned long long)diff_pages(d3));
	vm_free(b);
	b = NULL;
	/* A truncated pages file. */
	xasprintf(&p, "%s/pages", d);
	TAP_CHECK_GOTO(truncate(p, 16 + 2 * 8 + 4096) == 0, out);
	if (refused(d, false, "truncated") != TAP_PASS)
		goto out;
	/* The base taken again (of another machine) under the same name:
	 * the clone's RAM is still the old memory file, so its diff is
	 * made by comparison and still restores to its RAM. */
	if (snapshot_save(f, snapdir, err, sizeof(err)) != 0 ||
	    snapshot_save_diff(a, snapdir, d2, err, sizeof(err)) != 0) {
		tap_diag("base again: %s", err);
		goto out;
	}
	snapshot_restore_opts_init(&o);
	if ((b = snapshot_restore(R, d2, &o, err, sizeof(err))) == NULL) {
		tap_diag("restore over the new base: %s", err);
		goto out;
	}
	tap_diag("diff over the new base: %llu pages",
	    (unsigned long long)diff_pages(d2));
	TAP_CHECK_GOTO(same_ram(a, b), out);
	rc = TAP_PASS;
out:
	vm_free(b);
	if (f != NULL)
		stop_and_free(f, &fended);
	stop_and_free(a, &ended);
out_free:
	free(bm);
	free(p);
	free(vs);
	free(d);
	free(d2);
	free(d3);
	return rc;
}

static const struct tap_case cases[] = {
	{ "capture a paused machine into a sparse memory file", t_capture },
	{ "restore two clones: registers, devices, copy-on-write RAM",
	    t_restore },
	{ "truncated state file refused", t_truncated },
	{ "corrupted state file refused", t_corrupted },
	{ "not a snapshot / no snapshot refused", t_not_snapshot },
	{ "another format version refused", t_version },
	{ "memory file of the wrong size refused", t_memory_size },
	{ "corrupted memory file refused when verified", t_memory_digest },
	{ "host CPU lacking a feature refused", t_cpu_features },
	{ "export, import, and bad exports", t_export_import },
	{ "UART registers, RX FIFO, IRQ and CMOS round trip", t_uart_legacy },
	{ "diff snapshot: dirtied pages only, BASE + diff restore, refusals",
	    t_diff },	/* last: it takes the base again */
};

int
main(void)
{
	char	*cmd;
	int	 rc;

	log_init("snapshot_test", LOG_NORMAL);
	if (mkdtemp(tmpdir) == NULL || make_kernel() != 0)
		fatal("test directory");
	xasprintf(&snapdir, "%s/snap", tmpdir);
	if ((R = reactor_create()) == NULL)
		fatal("reactor");
	rc = tap_run(cases, ARRAY_SIZE(cases), 120);
	reactor_free(R);
	xasprintf(&cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		rc = 1;
	free(cmd);
	free(snapdir);
	free(kernel);
	return rc;
}
