/*
 * snapshot/ on the fake hypervisor: a paused machine saved and made
 * again (registers, RAM, devices), the memory file sparse and shared
 * copy-on-write, and every way a snapshot can be bad refused with a
 * one-line reason: truncated, corrupted, another version, a memory file
 * of the wrong size or content, a host CPU lacking features, a broken
 * export.
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
