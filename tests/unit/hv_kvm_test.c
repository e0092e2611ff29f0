/*
 * kvm-tier tests of hv/kvm.c: tiny hand-assembled 32-bit protected-mode
 * guests (general-purpose instructions only, so they also run where
 * guest kernel mode is emulated) check exits, ioeventfd, irqfd, kicks,
 * halts and triple faults.  Skips (77) without a usable /dev/kvm.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include "core/base/base.h"
#include "hv/hv.h"
#include "tests/tap.h"

#define GUEST_MEM	(2ULL << 20)
#define GUEST_CODE	0x1000ULL
#define GUEST_STACK	0x8000ULL

/*
 * out 0x42 to 0x3f8; in al from 0x3f8 and echo it to 0x3f9; 4-byte MMIO
 * write of 0x12345678 to 0xd0000000; 4-byte MMIO read from 0xd0000004,
 * echoed with out eax to 0x3f9; MMIO write to 0xd0001000 (an ioeventfd);
 * out al to 0x10 (the end marker); hlt.
 */
static const uint8_t code_io[] = {
	0xb0, 0x42,			/* mov al, 0x42 */
	0x66, 0xba, 0xf8, 0x03,		/* mov dx, 0x3f8 */
	0xee,				/* out dx, al */
	0xec,				/* in al, dx */
	0x66, 0xba, 0xf9, 0x03,		/* mov dx, 0x3f9 */
	0xee,				/* out dx, al */
	0xb8, 0x78, 0x56, 0x34, 0x12,	/* mov eax, 0x12345678 */
	0xa3, 0x00, 0x00, 0x00, 0xd0,	/* mov [0xd0000000], eax */
	0xa1, 0x04, 0x00, 0x00, 0xd0,	/* mov eax, [0xd0000004] */
	0xef,				/* out dx, eax */
	0xa3, 0x00, 0x10, 0x00, 0xd0,	/* mov [0xd0001000], eax */
	0xe6, 0x10,			/* out 0x10, al */
	0xf4,				/* hlt */
};

/* CPUID leaves 1, 0x40000000 and 0xB.1, each register out to a port. */
static const uint8_t code_cpuid[] = {
	0xb8, 0x01, 0x00, 0x00, 0x00,	/* mov eax, 1 */
	0x0f, 0xa2,			/* cpuid */
	0x89, 0xd8, 0xe7, 0x11,		/* mov eax, ebx; out 0x11, eax */
	0x89, 0xc8, 0xe7, 0x11,		/* mov eax, ecx; out 0x11, eax */
	0xb8, 0x00, 0x00, 0x00, 0x40,	/* mov eax, 0x40000000 */
	0x0f, 0xa2,			/* cpuid */
	0x89, 0xd8, 0xe7, 0x12,		/* mov eax, ebx; out 0x12, eax */
	0x89, 0xc8, 0xe7, 0x12,		/* mov eax, ecx; out 0x12, eax */
	0x89, 0xd0, 0xe7, 0x12,		/* mov eax, edx; out 0x12, eax */
	0xb8, 0x0b, 0x00, 0x00, 0x00,	/* mov eax, 0xb */
	0xb9, 0x01, 0x00, 0x00, 0x00,	/* mov ecx, 1 */
	0x0f, 0xa2,			/* cpuid */
	0x89, 0xd8, 0xe7, 0x13,		/* mov eax, ebx; out 0x13, eax */
	0x89, 0xd0, 0xe7, 0x13,		/* mov eax, edx; out 0x13, eax */
	0xf4,				/* hlt */
};

/*
 * CPUID leaf 1 ECX, leaf 7.0 EBX, ECX, EDX, then leaf 0xD subleaves
 * 0..XSAVE_SUBLEAVES-1 (EAX, EBX, ECX, EDX each), every value out to
 * port 0x20; hlt.
 */
#define XSAVE_SUBLEAVES	20
static const uint8_t code_cpuid_xsave[] = {
	0xb8, 0x01, 0x00, 0x00, 0x00,	/* mov eax, 1 */
	0x0f, 0xa2,			/* cpuid */
	0x89, 0xc8, 0xe7, 0x20,		/* mov eax, ecx; out 0x20, eax */
	0xb8, 0x07, 0x00, 0x00, 0x00,	/* mov eax, 7 */
	0x31, 0xc9,			/* xor ecx, ecx */
	0x0f, 0xa2,			/* cpuid */
	0x89, 0xd8, 0xe7, 0x20,		/* mov eax, ebx; out 0x20, eax */
	0x89, 0xc8, 0xe7, 0x20,		/* mov eax, ecx; out 0x20, eax */
	0x89, 0xd0, 0xe7, 0x20,		/* mov eax, edx; out 0x20, eax */
	0x31, 0xf6,			/* xor esi, esi */
	/* 1: (29 bytes) */
	0xb8, 0x0d, 0x00, 0x00, 0x00,	/* mov eax, 0xd */
	0x89, 0xf1,			/* mov ecx, esi */
	0x0f, 0xa2,			/* cpuid */
	0xe7, 0x20,			/* out 0x20, eax */
	0x89, 0xd8, 0xe7, 0x20,		/* mov eax, ebx; out 0x20, eax */
	0x89, 0xc8, 0xe7, 0x20,		/* mov eax, ecx; out 0x20, eax */
	0x89, 0xd0, 0xe7, 0x20,		/* mov eax, edx; out 0x20, eax */
	0x46,				/* inc esi */
	0x83, 0xfe, XSAVE_SUBLEAVES,	/* cmp esi, XSAVE_SUBLEAVES */
	0x72, 0xe3,			/* jb 1b */
	0xf4,				/* hlt */
};

/*
 * Read the word at 0x10000000 (a memory slot added after the vCPU, so
 * after the irqchip), store it back at 0x10000004, out it to 0x11; hlt.
 */
#define LATE_SLOT_GPA	0x10000000ULL
static const uint8_t code_late_slot[] = {
	0xa1, 0x00, 0x00, 0x00, 0x10,	/* mov eax, [0x10000000] */
	0xa3, 0x04, 0x00, 0x00, 0x10,	/* mov [0x10000004], eax */
	0xe7, 0x11,			/* out 0x11, eax */
	0xf4,				/* hlt */
};

static const uint8_t code_out_loop[] = {
	0xe6, 0x10,			/* 1: out 0x10, al */
	0xeb, 0xfc,			/* jmp 1b */
};

static const uint8_t code_spin[] = {
	0xeb, 0xfe,			/* jmp . */
};

static const uint8_t code_cli_hlt[] = {
	0xfa,				/* cli */
	0xf4,				/* hlt */
};

static const uint8_t code_sti_hlt[] = {
	0xfb,				/* sti */
	0xf4,				/* hlt */
};

static const uint8_t code_ud2[] = {
	0x0f, 0x0b,			/* ud2 (with an empty IDT) */
};

struct vm {
	struct hv	*hv;
	struct hv_vcpu	*vcpu;
	uint8_t		*mem;
};

/* Sleep ms milliseconds. */
static void
sleep_ms(unsigned ms)
{
	struct timespec	ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* A flat 4 GiB segment of the given type. */
static void
flat_segment(struct hv_segment *s, uint16_t sel, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->s = 1;
	s->db = 1;
	s->g = 1;
}

/*
 * A VM with ncpus vCPUs possible, 2 MiB of RAM at 0 holding code at
 * GUEST_CODE, and vCPU 0 in flat 32-bit protected mode at its start.
 */
static int
vm_open(struct vm *vm, unsigned ncpus, const uint8_t *code, size_t len)
{
	struct hv_regs	 r;
	struct hv_sregs	 s;
	void		*p;

	memset(vm, 0, sizeof(*vm));
	p = mmap(NULL, GUEST_MEM, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	vm->mem = p;
	memcpy(vm->mem + GUEST_CODE, code, len);
	if (hv_create(&vm->hv, ncpus) != 0)
		goto err;
	if (hv_mem_map(vm->hv, 0, 0, GUEST_MEM, vm->mem, 0) != 0)
		goto err;
	if (hv_vcpu_create(vm->hv, 0, &vm->vcpu) != 0)
		goto err;
	if (hv_vcpu_get_sregs(vm->vcpu, &s) != 0)
		goto err;
	flat_segment(&s.cs, 0x08, 0xb);
	flat_segment(&s.ds, 0x10, 0x3);
	s.es = s.fs = s.gs = s.ss = s.ds;
	s.cr0 = 0x11;			/* PE, ET; paging off */
	if (hv_vcpu_set_sregs(vm->vcpu, &s) != 0)
		goto err;
	memset(&r, 0, sizeof(r));
	r.rip = GUEST_CODE;
	r.rsp = GUEST_STACK;
	r.rflags = 0x2;
	if (hv_vcpu_set_regs(vm->vcpu, &r) != 0)
		goto err;
	return 0;
err:
	tap_diag("vm_open failed");
	return -1;
}

/* Undo vm_open(). */
static void
vm_close(struct vm *vm)
{
	if (vm->vcpu != NULL)
		hv_vcpu_destroy(vm->vcpu);
	if (vm->hv != NULL)
		hv_destroy(vm->hv);
	if (vm->mem != NULL)
		munmap(vm->mem, GUEST_MEM);
	memset(vm, 0, sizeof(*vm));
}

/* Run until the next exit; fail on anything but the expected reason. */
static int
run_expect(struct vm *vm, struct hv_exit *e, enum hv_exit_reason want)
{
	if (hv_vcpu_run(vm->vcpu, e) != 0) {
		tap_diag("hv_vcpu_run failed");
		return -1;
	}
	if (e->reason != want) {
		tap_diag("exit %d, expected %d (fail %s code %llu)",
		    e->reason, want,
		    e->reason == HV_EXIT_FAIL ? e->fail.what : "-",
		    e->reason == HV_EXIT_FAIL ?
		    (unsigned long long)e->fail.code : 0ULL);
		return -1;
	}
	return 0;
}

/* Little-endian 32-bit value in b. */
static uint32_t
le32(const uint8_t *b)
{
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
	    (uint32_t)b[3] << 24;
}

/* Probe names the kind; the API version is 12. */
static int
test_probe(void)
{
	const char	*why = NULL;
	enum hv_kind	 k;

	k = hv_probe(&why);
	tap_diag("kind %s", hv_kind_name(k));
	TAP_CHECK(k == HV_KIND_HARDWARE || k == HV_KIND_PVM);
	TAP_CHECK(hv_api_version() == 12);
	return TAP_PASS;
}

/* Port I/O out and in, MMIO write and read, MMIO ioeventfd. */
static int
test_io_mmio_ioeventfd(void)
{
	struct vm	 vm;
	struct hv_exit	 e;
	uint64_t	 n = 0;
	int		 efd = -1, rc = TAP_FAIL;

	if (vm_open(&vm, 1, code_io, sizeof(code_io)) != 0)
		goto out;
	if ((efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
	    hv_ioeventfd(vm.hv, efd, 0xd0001000, 4, 0, 0) != 0) {
		tap_diag("ioeventfd setup failed");
		goto out;
	}
	if (run_expect(&vm, &e, HV_EXIT_IO) != 0)
		goto out;
	if (!e.io.write || e.io.port != 0x3f8 || e.io.size != 1 ||
	    e.io.count != 1 || e.io.data[0] != 0x42) {
		tap_diag("bad out exit port %#x size %u", e.io.port,
		    e.io.size);
		goto out;
	}
	if (run_expect(&vm, &e, HV_EXIT_IO) != 0)
		goto out;
	if (e.io.write || e.io.port != 0x3f8 || e.io.size != 1) {
		tap_diag("bad in exit");
		goto out;
	}
	e.io.data[0] = 0x5a;
	if (run_expect(&vm, &e, HV_EXIT_IO) != 0)
		goto out;
	if (!e.io.write || e.io.port != 0x3f9 || e.io.data[0] != 0x5a) {
		tap_diag("in value not echoed: %#x", e.io.data[0]);
		goto out;
	}
	if (run_expect(&vm, &e, HV_EXIT_MMIO) != 0)
		goto out;
	if (!e.mmio.write || e.mmio.gpa != 0xd0000000 || e.mmio.len != 4 ||
	    le32(e.mmio.data) != 0x12345678) {
		tap_diag("bad mmio write exit gpa %#llx",
		    (unsigned long long)e.mmio.gpa);
		goto out;
	}
	if (run_expect(&vm, &e, HV_EXIT_MMIO) != 0)
		goto out;
	if (e.mmio.write || e.mmio.gpa != 0xd0000004 || e.mmio.len != 4) {
		tap_diag("bad mmio read exit");
		goto out;
	}
	memcpy(e.mmio.data, "\x0d\xf0\xfe\xca", 4);
	if (run_expect(&vm, &e, HV_EXIT_IO) != 0)
		goto out;
	if (e.io.port != 0x3f9 || e.io.size != 4 ||
	    le32(e.io.data) != 0xcafef00d) {
		tap_diag("mmio read value not echoed: %#x", le32(e.io.data));
		goto out;
	}
	/* The ioeventfd write must not exit: next is the end marker. */
	if (run_expect(&vm, &e, HV_EXIT_IO) != 0)
		goto out;
	if (e.io.port != 0x10) {
		tap_diag("expected the end marker, got port %#x", e.io.port);
		goto out;
	}
	if (read(efd, &n, sizeof(n)) != sizeof(n) || n != 1) {
		tap_diag("ioeventfd not signalled");
		goto out;
	}
	if (hv_ioeventfd_remove(vm.hv, efd, 0xd0001000, 4, 0, 0) != 0) {
		tap_diag("ioeventfd remove failed");
		goto out;
	}
	rc = TAP_PASS;
out:
	if (efd >= 0)
		close(efd);
	vm_close(&vm);
	return rc;
}

/* The guest sees its APIC ID, topology and the KVM signature. */
static int
test_cpuid(void)
{
	struct vm	 vm;
	struct hv_exit	 e;
	uint32_t	 v[7];
	char		 sig[13];
	unsigned	 i;
	int		 rc = TAP_FAIL;

	if (vm_open(&vm, 2, code_cpuid, sizeof(code_cpuid)) != 0)
		goto out;
	for (i = 0; i < ARRAY_SIZE(v); i++) {
		if (run_expect(&vm, &e, HV_EXIT_IO) != 0)
			goto out;
		v[i] = le32(e.io.data);
	}
	memcpy(sig, &v[2], 4);
	memcpy(sig + 4, &v[3], 4);
	memcpy(sig + 8, &v[4], 4);
	sig[12] = '\0';
	tap_diag("leaf1 ebx %#x ecx %#x; sig \"%s\"; leaf b.1 ebx %u edx %u",
	    v[0], v[1], sig, v[5], v[6]);
	if ((v[0] >> 24) != 0 || ((v[0] >> 16) & 0xff) != 2 ||
	    !(v[1] & (1U << 31))) {
		tap_diag("leaf 1 wrong");
		goto out;
	}
	if (strcmp(sig, "KVMKVMKVM") != 0 || v[5] != 2 || v[6] != 0) {
		tap_diag("signature or topology wrong");
		goto out;
	}
	rc = TAP_PASS;
out:
	vm_close(&vm);
	return rc;
}

/* irq lines and irqfds (edge and level with resample) are accepted. */
static int
test_irq(void)
{
	struct vm	 vm;
	uint64_t	 one = 1;
	int		 fd = -1, fd2 = -1, rfd = -1, rc = TAP_FAIL;

	if (vm_open(&vm, 1, code_spin, sizeof(code_spin)) != 0)
		goto out;
	if (hv_irq_line(vm.hv, 4, 1) != 0 || hv_irq_line(vm.hv, 4, 0) != 0) {
		tap_diag("irq line failed");
		goto out;
	}
	fd = eventfd(0, EFD_CLOEXEC);
	fd2 = eventfd(0, EFD_CLOEXEC);
	rfd = eventfd(0, EFD_CLOEXEC);
	if (fd < 0 || fd2 < 0 || rfd < 0)
		goto out;
	if (hv_irqfd(vm.hv, fd, 5, -1) != 0 ||
	    hv_irqfd(vm.hv, fd2, 16, rfd) != 0) {
		tap_diag("irqfd registration failed");
		goto out;
	}
	if (write(fd, &one, sizeof(one)) != sizeof(one) ||
	    write(fd2, &one, sizeof(one)) != sizeof(one))
		goto out;
	if (hv_irqfd_remove(vm.hv, fd, 5) != 0 ||
	    hv_irqfd_remove(vm.hv, fd2, 16) != 0) {
		tap_diag("irqfd removal failed");
		goto out;
	}
	rc = TAP_PASS;
out:
	if (fd >= 0)
		close(fd);
	if (fd2 >= 0)
		close(fd2);
	if (rfd >= 0)
		close(rfd);
	vm_close(&vm);
	return rc;
}

/* Bit b of v. */
static bool
bit(uint32_t v, unsigned b)
{
	return (v >> b) & 1;
}

/*
 * The feature bit an XSAVE state component holds the state of, from
 * leaf 1 ECX (c1) and leaf 7.0 (b7, c7, d7); -1 for one not expected.
 */
static int
xsave_feature(unsigned comp, uint32_t c1, uint32_t b7, uint32_t c7,
    uint32_t d7)
{
	switch (comp) {
	case 2:
		return bit(c1, 28);			/* AVX */
	case 3: case 4:
		return bit(b7, 14);			/* MPX */
	case 5: case 6: case 7:
		return bit(b7, 16) && bit(c1, 28);	/* AVX-512F */
	case 8:
		return bit(b7, 25);			/* PT */
	case 9:
		return bit(c7, 3);			/* PKU */
	case 11: case 12:
		return bit(c7, 7) || bit(d7, 20);	/* CET */
	case 17: case 18:
		return bit(d7, 24);			/* AMX-TILE */
	}
	return -1;
}

/*
 * What the guest reads from leaf 0xD is self-consistent: no XSAVE means
 * all zero; otherwise every advertised component has its feature bit and
 * a size, unadvertised subleaves read zero, and 0xD.0 ECX (and 0xD.1 EBX
 * with XSAVEC/XSAVES) match the sizes computed from the subleaves.
 */
static int
test_cpuid_xsave(void)
{
	struct vm	 vm;
	struct hv_exit	 e;
	uint32_t	 v[4 + 4 * XSAVE_SUBLEAVES], c1, b7, c7, d7;
	uint32_t	(*d)[4], std = 576, cmp = 576, full;
	uint64_t	 xcr0, xss, all;
	unsigned	 i;
	int		 rc = TAP_FAIL;

	if (vm_open(&vm, 1, code_cpuid_xsave, sizeof(code_cpuid_xsave)) != 0)
		goto out;
	for (i = 0; i < ARRAY_SIZE(v); i++) {
		if (run_expect(&vm, &e, HV_EXIT_IO) != 0 ||
		    e.io.port != 0x20 || e.io.size != 4)
			goto out;
		v[i] = le32(e.io.data);
	}
	c1 = v[0], b7 = v[1], c7 = v[2], d7 = v[3];
	d = (uint32_t (*)[4])&v[4];
	xcr0 = (uint64_t)d[0][3] << 32 | d[0][0];
	xss = (uint64_t)d[1][3] << 32 | d[1][2];
	tap_diag("leaf 1 ecx %#x; 7.0 %#x %#x %#x; 0xd.0 %#x %#x %#x %#x; "
	    "0xd.1 %#x %#x %#x %#x", c1, b7, c7, d7, d[0][0], d[0][1],
	    d[0][2], d[0][3], d[1][0], d[1][1], d[1][2], d[1][3]);
	if (!bit(c1, 26)) {
		for (i = 0; i < 4 * XSAVE_SUBLEAVES; i++)
			if (v[4 + i] != 0) {
				tap_diag("no XSAVE, yet 0xd.%u reg %u is %#x",
				    i / 4, i % 4, v[4 + i]);
				goto out;
			}
		tap_diag("no XSAVE: leaf 0xd is empty");
		rc = TAP_PASS;
		goto out;
	}
	if ((xcr0 & 3) != 3) {
		tap_diag("x87/SSE state not advertised");
		goto out;
	}
	if (!bit(d[1][0], 3) && xss != 0) {
		tap_diag("IA32_XSS components without XSAVES");
		goto out;
	}
	all = xcr0 | xss;
	for (i = 2; i < XSAVE_SUBLEAVES; i++) {
		if (!(all & (1ULL << i))) {
			if (d[i][0] | d[i][1] | d[i][2] | d[i][3]) {
				tap_diag("0xd.%u not advertised but not zero", i);
				goto out;
			}
			continue;
		}
		if (xsave_feature(i, c1, b7, c7, d7) != 1 || d[i][0] == 0) {
			tap_diag("component %u advertised without its feature "
			    "bit or size", i);
			goto out;
		}
		if ((xcr0 & (1ULL << i)) && d[i][1] + d[i][0] > std)
			std = d[i][1] + d[i][0];
		if (d[i][2] & 2)
			cmp = (cmp + 63) & ~63U;
		cmp += d[i][0];
	}
	if (all >> XSAVE_SUBLEAVES) {
		tap_diag("components above %u advertised", XSAVE_SUBLEAVES - 1);
		goto out;
	}
	/* EBX follows the guest's XCR0 (x87 only at reset): at most all. */
	if (d[0][2] != std || d[0][1] < 576 || d[0][1] > std) {
		tap_diag("0xd.0 sizes ebx %u ecx %u, computed %u", d[0][1],
		    d[0][2], std);
		goto out;
	}
	full = cmp;
	if ((d[1][0] & 0xa) && (d[1][1] < 576 || d[1][1] > full)) {
		tap_diag("0xd.1 ebx %u, compacted size of all is %u",
		    d[1][1], full);
		goto out;
	}
	rc = TAP_PASS;
out:
	vm_close(&vm);
	return rc;
}

/*
 * The irqchip may be created lazily: an irq line and an irqfd driven
 * before any vCPU exists work, and a vCPU can be created after them.
 */
static int
test_irq_before_vcpu(void)
{
	struct hv	*hv = NULL;
	struct hv_vcpu	*v = NULL;
	int		 fd = -1, rc = TAP_FAIL;

	if (hv_create(&hv, 1) != 0)
		goto out;
	if ((fd = eventfd(0, EFD_CLOEXEC)) < 0)
		goto out;
	if (hv_irqfd(hv, fd, 5, -1) != 0) {
		tap_diag("irqfd before any vCPU failed");
		goto out;
	}
	if (hv_irq_line(hv, 4, 1) != 0 || hv_irq_line(hv, 4, 0) != 0) {
		tap_diag("irq line before any vCPU failed");
		goto out;
	}
	if (hv_vcpu_create(hv, 0, &v) != 0) {
		tap_diag("vCPU after the irqchip failed");
		goto out;
	}
	if (hv_irqfd_remove(hv, fd, 5) != 0)
		goto out;
	rc = TAP_PASS;
out:
	if (fd >= 0)
		close(fd);
	if (v != NULL)
		hv_vcpu_destroy(v);
	if (hv != NULL)
		hv_destroy(hv);
	return rc;
}

/* Nanoseconds on the monotonic clock. */
static uint64_t
mono_ns(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/*
 * A memory slot added once the vCPU (and so the irqchip) exists, as DAX
 * windows will be, is read and written by the guest; removing it works.
 */
static int
test_late_slot(void)
{
	struct vm	 vm;
	struct hv_exit	 e;
	uint32_t	*page = MAP_FAILED, w;
	uint64_t	 t0;
	int		 rc = TAP_FAIL;

	if (vm_open(&vm, 1, code_late_slot, sizeof(code_late_slot)) != 0)
		goto out;
	page = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		goto out;
	page[0] = 0xcafef00d;
	t0 = mono_ns();
	if (hv_mem_map(vm.hv, 1, LATE_SLOT_GPA, 4096, page, 0) != 0) {
		tap_diag("mapping a slot after the vCPU failed");
		goto out;
	}
	tap_diag("slot added after the irqchip in %llu us",
	    (unsigned long long)((mono_ns() - t0) / 1000));
	if (run_expect(&vm, &e, HV_EXIT_IO) != 0)
		goto out;
	w = le32(e.io.data);
	if (e.io.port != 0x11 || w != 0xcafef00d || page[1] != 0xcafef00d) {
		tap_diag("guest read %#x, wrote %#x", w, page[1]);
		goto out;
	}
	if (hv_mem_unmap(vm.hv, 1) != 0) {
		tap_diag("removing the late slot failed");
		goto out;
	}
	rc = TAP_PASS;
out:
	vm_close(&vm);
	if (page != MAP_FAILED)
		munmap(page, 4096);
	return rc;
}

struct kicker {
	struct hv_vcpu	*vcpu;
	unsigned	 delay_ms;
	uint64_t	 at;		/* now_ns() of the kick */
};

/* Thread body: wait, then kick. */
static void *
kick_later_cb(void *arg)
{
	struct kicker	*k = arg;

	sleep_ms(k->delay_ms);
	k->at = now_ns();
	hv_vcpu_kick(k->vcpu);
	return NULL;
}

/* Run code that halts, kick it out after 50 ms, ask halted_for_good. */
static int
halt_and_ask(const uint8_t *code, size_t len, bool *halted)
{
	struct vm	 vm;
	struct hv_exit	 e;
	struct kicker	 k;
	pthread_t	 t;
	int		 rc = -1;

	if (vm_open(&vm, 1, code, len) != 0)
		goto out;
	k.vcpu = vm.vcpu;
	k.delay_ms = 50;
	if (pthread_create(&t, NULL, kick_later_cb, &k) != 0)
		goto out;
	if (hv_vcpu_run(vm.vcpu, &e) != 0) {
		pthread_join(t, NULL);
		goto out;
	}
	pthread_join(t, NULL);
	if (e.reason != HV_EXIT_INTR) {
		tap_diag("exit %d instead of INTR", e.reason);
		goto out;
	}
	if (hv_vcpu_halted_for_good(vm.vcpu, halted) != 0)
		goto out;
	rc = 0;
out:
	vm_close(&vm);
	return rc;
}

/* cli; hlt parks the vCPU for good; a kick gets it out. */
static int
test_halted_for_good(void)
{
	bool	halted = false;

	TAP_CHECK(halt_and_ask(code_cli_hlt, sizeof(code_cli_hlt),
	    &halted) == 0);
	TAP_CHECK(halted);
	return TAP_PASS;
}

/* sti; hlt waits for an interrupt: not halted for good. */
static int
test_halted_with_if(void)
{
	bool	halted = true;

	TAP_CHECK(halt_and_ask(code_sti_hlt, sizeof(code_sti_hlt),
	    &halted) == 0);
	TAP_CHECK(!halted);
	return TAP_PASS;
}

/* A running (not halted) vCPU is not halted for good. */
static int
test_not_halted(void)
{
	struct vm	 vm;
	struct hv_exit	 e;
	bool		 halted = true;
	int		 rc = TAP_FAIL;

	if (vm_open(&vm, 1, code_out_loop, sizeof(code_out_loop)) != 0)
		goto out;
	if (run_expect(&vm, &e, HV_EXIT_IO) != 0)
		goto out;
	if (hv_vcpu_halted_for_good(vm.vcpu, &halted) != 0 || halted)
		goto out;
	rc = TAP_PASS;
out:
	vm_close(&vm);
	return rc;
}

/* A kick before the first run makes it return INTR, once. */
static int
test_kick_before_run(void)
{
	struct vm	 vm;
	struct hv_exit	 e;
	int		 rc = TAP_FAIL;

	if (vm_open(&vm, 1, code_out_loop, sizeof(code_out_loop)) != 0)
		goto out;
	hv_vcpu_kick(vm.vcpu);
	hv_vcpu_kick(vm.vcpu);		/* may coalesce */
	if (run_expect(&vm, &e, HV_EXIT_INTR) != 0)
		goto out;
	if (run_expect(&vm, &e, HV_EXIT_IO) != 0)
		goto out;
	/* Kick between runs, on the vCPU thread itself. */
	hv_vcpu_kick(vm.vcpu);
	if (run_expect(&vm, &e, HV_EXIT_INTR) != 0)
		goto out;
	if (run_expect(&vm, &e, HV_EXIT_IO) != 0)
		goto out;
	if (run_expect(&vm, &e, HV_EXIT_IO) != 0)
		goto out;
	rc = TAP_PASS;
out:
	vm_close(&vm);
	return rc;
}

/*
 * A kick left pending on this thread by a vCPU destroyed without running
 * again must not make another vCPU's first run return INTR.
 */
static int
test_stale_kick(void)
{
	struct vm	 vm;
	struct hv_exit	 e;
	int		 rc = TAP_FAIL;

	if (vm_open(&vm, 1, code_out_loop, sizeof(code_out_loop)) != 0)
		goto out;
	if (run_expect(&vm, &e, HV_EXIT_IO) != 0)
		goto out;
	hv_vcpu_kick(vm.vcpu);		/* never consumed */
	vm_close(&vm);
	if (vm_open(&vm, 1, code_out_loop, sizeof(code_out_loop)) != 0)
		goto out;
	if (run_expect(&vm, &e, HV_EXIT_IO) != 0)
		goto out;
	rc = TAP_PASS;
out:
	vm_close(&vm);
	return rc;
}

/* A kick gets a vCPU out of a busy guest loop promptly. */
static int
test_kick_busy_loop(void)
{
	struct vm	 vm;
	struct hv_exit	 e;
	struct kicker	 k;
	pthread_t	 t;
	uint64_t	 lat;
	int		 rc = TAP_FAIL, i;

	if (vm_open(&vm, 1, code_spin, sizeof(code_spin)) != 0)
		goto out;
	for (i = 0; i < 3; i++) {
		k.vcpu = vm.vcpu;
		k.delay_ms = 50;
		if (pthread_create(&t, NULL, kick_later_cb, &k) != 0)
			goto out;
		if (hv_vcpu_run(vm.vcpu, &e) != 0) {
			pthread_join(t, NULL);
			goto out;
		}
		lat = now_ns() - k.at;
		pthread_join(t, NULL);
		if (e.reason != HV_EXIT_INTR) {
			tap_diag("exit %d instead of INTR", e.reason);
			goto out;
		}
		tap_diag("kick to INTR: %llu us", (unsigned long long)lat /
		    1000);
		if (lat > 2000000000ULL) {
			tap_diag("kick took longer than 2 s");
			goto out;
		}
	}
	rc = TAP_PASS;
out:
	vm_close(&vm);
	return rc;
}

struct kick_race {
	struct hv_vcpu	*vcpu;
	unsigned	 nkicks;
	unsigned	 nintr;		/* written by the vCPU thread */
	int		 failed;
};

/* Thread body: kick, wait for that kick's INTR, repeat. */
static void *
kick_each_cb(void *arg)
{
	struct kick_race	*kr = arg;
	unsigned		 i, spins;

	for (i = 1; i <= kr->nkicks; i++) {
		hv_vcpu_kick(kr->vcpu);
		for (spins = 0; __atomic_load_n(&kr->nintr,
		    __ATOMIC_SEQ_CST) < i; spins++) {
			if (spins > 200000) {	/* ~10 s: a lost kick */
				__atomic_store_n(&kr->failed, 1,
				    __ATOMIC_SEQ_CST);
				hv_vcpu_kick(kr->vcpu);
				return NULL;
			}
			usleep(50);
		}
	}
	return NULL;
}

/*
 * Kicks from another thread at random points of a guest that exits on
 * every loop iteration: every kick yields exactly one INTR.
 */
static int
test_kick_exactly_once(void)
{
	struct vm		 vm;
	struct hv_exit		 e;
	struct kick_race	 kr;
	pthread_t		 t;
	unsigned		 nio = 0, after = 0;
	int			 rc = TAP_FAIL;

	if (vm_open(&vm, 1, code_out_loop, sizeof(code_out_loop)) != 0)
		goto out;
	memset(&kr, 0, sizeof(kr));
	kr.vcpu = vm.vcpu;
	kr.nkicks = 200;
	if (pthread_create(&t, NULL, kick_each_cb, &kr) != 0)
		goto out;
	for (;;) {
		if (hv_vcpu_run(vm.vcpu, &e) != 0)
			break;
		if (e.reason == HV_EXIT_INTR)
			__atomic_add_fetch(&kr.nintr, 1, __ATOMIC_SEQ_CST);
		else if (e.reason == HV_EXIT_IO)
			nio++;
		else
			break;
		if (__atomic_load_n(&kr.nintr, __ATOMIC_SEQ_CST) >=
		    kr.nkicks || __atomic_load_n(&kr.failed,
		    __ATOMIC_SEQ_CST))
			break;
	}
	pthread_join(t, NULL);
	if (kr.failed || kr.nintr != kr.nkicks) {
		tap_diag("%u INTR for %u kicks", kr.nintr, kr.nkicks);
		goto out;
	}
	/* No stale kick left: the next exits are the guest's own. */
	for (after = 0; after < 50; after++) {
		if (hv_vcpu_run(vm.vcpu, &e) != 0 || e.reason != HV_EXIT_IO) {
			tap_diag("spurious exit %d after the last kick",
			    e.reason);
			goto out;
		}
	}
	tap_diag("%u kicks, %u io exits in between", kr.nkicks, nio);
	rc = TAP_PASS;
out:
	vm_close(&vm);
	return rc;
}

/* ud2 with an empty IDT: #UD, #GP, #DF, triple fault. */
static int
test_triple_fault(void)
{
	struct vm	 vm;
	struct hv_exit	 e;
	struct hv_sregs	 s;
	int		 rc = TAP_FAIL;

	if (vm_open(&vm, 1, code_ud2, sizeof(code_ud2)) != 0)
		goto out;
	if (hv_vcpu_get_sregs(vm.vcpu, &s) != 0)
		goto out;
	s.idt.base = 0;
	s.idt.limit = 0;
	if (hv_vcpu_set_sregs(vm.vcpu, &s) != 0)
		goto out;
	if (run_expect(&vm, &e, HV_EXIT_SHUTDOWN) != 0)
		goto out;
	rc = TAP_PASS;
out:
	vm_close(&vm);
	return rc;
}

/* Two VMs side by side, run interleaved. */
static int
test_two_vms(void)
{
	struct vm	 a, b;
	struct hv_exit	 e;
	int		 i, rc = TAP_FAIL;

	memset(&b, 0, sizeof(b));
	if (vm_open(&a, 1, code_out_loop, sizeof(code_out_loop)) != 0 ||
	    vm_open(&b, 1, code_io, sizeof(code_io)) != 0)
		goto out;
	for (i = 0; i < 3; i++) {
		if (run_expect(&a, &e, HV_EXIT_IO) != 0 || e.io.port != 0x10)
			goto out;
	}
	if (run_expect(&b, &e, HV_EXIT_IO) != 0 || e.io.port != 0x3f8 ||
	    e.io.data[0] != 0x42)
		goto out;
	if (run_expect(&a, &e, HV_EXIT_IO) != 0 || e.io.port != 0x10)
		goto out;
	rc = TAP_PASS;
out:
	vm_close(&a);
	vm_close(&b);
	return rc;
}

/* HV_MAX_VCPUS vCPUs can be created (and destroyed). */
static int
test_max_vcpus(void)
{
	struct hv	*hv;
	struct hv_vcpu	*v[HV_MAX_VCPUS];
	unsigned	 i, n = 0;
	int		 rc = TAP_FAIL;

	if (hv_create(&hv, HV_MAX_VCPUS) != 0)
		return TAP_FAIL;
	for (n = 0; n < HV_MAX_VCPUS; n++) {
		if (hv_vcpu_create(hv, n, &v[n]) != 0) {
			tap_diag("vCPU %u failed", n);
			goto out;
		}
		if (hv_vcpu_id(v[n]) != n)
			goto out;
	}
	if (hv_vcpu_create(hv, HV_MAX_VCPUS, &v[0]) != -EINVAL)
		goto out;
	rc = TAP_PASS;
out:
	for (i = 0; i < n; i++)
		hv_vcpu_destroy(v[i]);
	hv_destroy(hv);
	return rc;
}

/* Bad arguments are refused, not crashed on. */
static int
test_bad_args(void)
{
	struct hv	*hv;

	TAP_CHECK(hv_create(&hv, 0) == -EINVAL);
	TAP_CHECK(hv_create(&hv, HV_MAX_VCPUS + 1) == -EINVAL);
	return TAP_PASS;
}

/* Open file descriptors of this process. */
static int
count_fds(void)
{
	DIR		*d;
	int		 n = 0;

	if ((d = opendir("/proc/self/fd")) == NULL)
		return -1;
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

static int	fds_at_start;

/* Remember the descriptor count before any VM exists. */
static int
test_fds_before(void)
{
	TAP_CHECK((fds_at_start = count_fds()) > 0);
	return TAP_PASS;
}

/* Every VM and vCPU above gave its descriptors back. */
static int
test_fds_after(void)
{
	int	n = count_fds();

	if (n != fds_at_start) {
		tap_diag("%d descriptors open, %d at start", n, fds_at_start);
		return TAP_FAIL;
	}
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "count descriptors", test_fds_before },
	{ "probe and API version", test_probe },
	{ "port I/O, MMIO exits and MMIO ioeventfd", test_io_mmio_ioeventfd },
	{ "CPUID APIC ID, topology, KVM signature", test_cpuid },
	{ "irq line and irqfd", test_irq },
	{ "CPUID leaf 0xD agrees with the feature bits", test_cpuid_xsave },
	{ "irq line and irqfd before any vCPU", test_irq_before_vcpu },
	{ "a memory slot added after the irqchip", test_late_slot },
	{ "cli; hlt is halted for good", test_halted_for_good },
	{ "sti; hlt is not halted for good", test_halted_with_if },
	{ "a running vCPU is not halted for good", test_not_halted },
	{ "kick before run returns INTR once", test_kick_before_run },
	{ "a stale kick does not leak to the next vCPU", test_stale_kick },
	{ "kick leaves a busy guest loop", test_kick_busy_loop },
	{ "every kick yields exactly one INTR", test_kick_exactly_once },
	{ "triple fault is SHUTDOWN", test_triple_fault },
	{ "two VMs at once", test_two_vms },
	{ "HV_MAX_VCPUS vCPUs", test_max_vcpus },
	{ "bad arguments", test_bad_args },
	{ "no descriptor leaks", test_fds_after },
};

int
main(void)
{
	const char	*why = NULL;

	log_init("hv_kvm_test", LOG_NORMAL);
	if (hv_probe(&why) == HV_KIND_ABSENT) {
		printf("1..0 # SKIP %s\n", why != NULL ? why : "no /dev/kvm");
		return 77;
	}
	return tap_run(cases, ARRAY_SIZE(cases), 60);
}
