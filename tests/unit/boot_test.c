/*
 * Unit test for core/boot.c and core/mptable.c: kernels synthesized into
 * temporary files are loaded into a gmem over plain host buffers, and
 * every table the loader writes is decoded again from raw offsets (not
 * through the loader's own structs).  Hostile inputs must fail cleanly;
 * run it under AddressSanitizer to catch any stray access.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/base.h"
#include "core/boot.h"
#include "core/layout.h"
#include "tests/tap.h"

#define MiB		(1ULL << 20)
#define GiB		(1ULL << 30)

/* The synthesized vmlinux: two PT_LOADs (the second with bss), a note. */
#define T_TEXT_PADDR	0x100000ULL
#define T_TEXT_OFF	0x200
#define T_TEXT_SIZE	0x100
#define T_DATA_PADDR	0x200000ULL
#define T_DATA_OFF	0x400
#define T_DATA_FILESZ	0x80
#define T_DATA_MEMSZ	0x2000
#define T_NOTE_OFF	0x100
#define T_SHDR_OFF	0x600
#define T_ENTRY		(T_TEXT_PADDR + 0x10)
#define T_ELF_LEN	(T_SHDR_OFF + 2 * sizeof(Elf64_Shdr))

#define ELF_NOTE_IN_SECTION	0x1	/* note only as SHT_NOTE section */
#define ELF_NO_NOTE		0x2
#define ELF_DESC4		0x4	/* 4-byte note value, not 8 */

/* The synthesized bzImage. */
#define T_SETUP_SECTS	4
#define T_BZ_PAYLOAD	(64 * 1024)
#define T_BZ_LEN	((T_SETUP_SECTS + 1) * 512 + T_BZ_PAYLOAD)

static char	tmpdir[] = "/tmp/boot_test.XXXXXX";

struct vm {
	struct gmem	 mem;
	uint8_t		*low;
	uint64_t	 lowsz;
	uint8_t		*high;
	uint64_t	 highsz;
	bool		 mapped;
};

/* Guest RAM [0, size) over calloc'ed memory, filled with junk. */
static void
vm_small(struct vm *vm, uint64_t size)
{
	memset(vm, 0, sizeof(*vm));
	vm->low = calloc(1, size);
	if (vm->low == NULL)
		abort();
	memset(vm->low, 0xa5, size);
	vm->lowsz = size;
	if (gmem_add(&vm->mem, 0, size, vm->low) != 0)
		abort();
}

/* Guest RAM split around the MMIO gap, over sparse anonymous mappings. */
static void
vm_big(struct vm *vm, uint64_t size)
{
	memset(vm, 0, sizeof(*vm));
	vm->mapped = true;
	vm->lowsz = MIN(size, LAYOUT_MMIO_GAP);
	vm->low = mmap(NULL, vm->lowsz, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (vm->low == MAP_FAILED || gmem_add(&vm->mem, 0, vm->lowsz,
	    vm->low) != 0)
		abort();
	if (size > vm->lowsz) {
		vm->highsz = size - vm->lowsz;
		vm->high = mmap(NULL, vm->highsz, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (vm->high == MAP_FAILED || gmem_add(&vm->mem,
		    LAYOUT_HIGH_RAM, vm->highsz, vm->high) != 0)
			abort();
	}
}

/* Release the guest RAM of vm. */
static void
vm_free(struct vm *vm)
{
	if (vm->mapped) {
		munmap(vm->low, vm->lowsz);
		if (vm->high != NULL)
			munmap(vm->high, vm->highsz);
	} else
		free(vm->low);
}

/* Host pointer for guest [gpa, gpa + len), or NULL. */
static uint8_t *
g(struct vm *vm, uint64_t gpa, uint64_t len)
{
	return gmem_ptr(&vm->mem, gpa, len);
}

/* Little-endian loads and stores at any alignment. */
static uint16_t
rd16(const uint8_t *p)
{
	return p[0] | (uint16_t)p[1] << 8;
}

static uint32_t
rd32(const uint8_t *p)
{
	return rd16(p) | (uint32_t)rd16(p + 2) << 16;
}

static uint64_t
rd64(const uint8_t *p)
{
	return rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void
wr16(uint8_t *p, uint16_t v)
{
	p[0] = v;
	p[1] = v >> 8;
}

static void
wr32(uint8_t *p, uint32_t v)
{
	wr16(p, v);
	wr16(p + 2, v >> 16);
}

/* Write buf to a fresh file in the temporary directory; returns the path. */
static char *
tmpfile_write(const char *name, const void *buf, size_t len)
{
	char	*path;
	FILE	*f;

	xasprintf(&path, "%s/%s", tmpdir, name);
	if ((f = fopen(path, "w")) == NULL)
		abort();
	if (len > 0 && fwrite(buf, 1, len, f) != len)
		abort();
	fclose(f);
	return path;
}

/* A sparse file of len bytes. */
static char *
tmpfile_sized(const char *name, off_t len)
{
	char	*path;
	int	 fd;

	xasprintf(&path, "%s/%s", tmpdir, name);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) == -1 ||
	    ftruncate(fd, len) == -1)
		abort();
	close(fd);
	return path;
}

/* Program header i of the test vmlinux. */
static Elf64_Phdr
phdr_get(const uint8_t *img, unsigned i)
{
	Elf64_Phdr	ph;

	memcpy(&ph, img + sizeof(Elf64_Ehdr) + i * sizeof(ph), sizeof(ph));
	return ph;
}

/* Replace program header i of the test vmlinux. */
static void
phdr_set(uint8_t *img, unsigned i, const Elf64_Phdr *ph)
{
	memcpy(img + sizeof(Elf64_Ehdr) + i * sizeof(*ph), ph, sizeof(*ph));
}

/* Build the test vmlinux into img (T_ELF_LEN bytes). */
static void
elf_build(uint8_t *img, unsigned flags)
{
	Elf64_Ehdr	eh;
	Elf64_Phdr	ph;
	Elf64_Shdr	sh[2];
	Elf64_Nhdr	nh;
	uint64_t	entry = T_ENTRY;
	unsigned	i;

	memset(img, 0, T_ELF_LEN);
	memset(&eh, 0, sizeof(eh));
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_version = EV_CURRENT;
	eh.e_entry = 0xffffffff81000000ULL;
	eh.e_phoff = sizeof(eh);
	eh.e_ehsize = sizeof(eh);
	eh.e_phentsize = sizeof(ph);
	eh.e_phnum = 3;
	eh.e_shentsize = sizeof(Elf64_Shdr);
	if (flags & ELF_NOTE_IN_SECTION) {
		eh.e_shoff = T_SHDR_OFF;
		eh.e_shnum = 2;
	}
	memcpy(img, &eh, sizeof(eh));

	memset(&ph, 0, sizeof(ph));
	ph.p_type = PT_LOAD;
	ph.p_flags = PF_R | PF_X;
	ph.p_offset = T_TEXT_OFF;
	ph.p_vaddr = 0xffffffff81000000ULL;
	ph.p_paddr = T_TEXT_PADDR;
	ph.p_filesz = ph.p_memsz = T_TEXT_SIZE;
	ph.p_align = 0x1000;
	phdr_set(img, 0, &ph);
	ph.p_flags = PF_R | PF_W;
	ph.p_offset = T_DATA_OFF;
	ph.p_vaddr = 0xffffffff81100000ULL;
	ph.p_paddr = T_DATA_PADDR;
	ph.p_filesz = T_DATA_FILESZ;
	ph.p_memsz = T_DATA_MEMSZ;
	phdr_set(img, 1, &ph);
	memset(&ph, 0, sizeof(ph));
	ph.p_type = (flags & ELF_NOTE_IN_SECTION) ? PT_NULL : PT_NOTE;
	ph.p_offset = T_NOTE_OFF;
	ph.p_filesz = sizeof(nh) + 4 + ((flags & ELF_DESC4) ? 4 : 8);
	ph.p_align = 4;
	phdr_set(img, 2, &ph);

	for (i = 0; i < T_TEXT_SIZE; i++)
		img[T_TEXT_OFF + i] = 0x10 + i;
	for (i = 0; i < T_DATA_FILESZ; i++)
		img[T_DATA_OFF + i] = 0xd0 ^ i;

	if (!(flags & ELF_NO_NOTE)) {
		nh.n_namesz = 4;
		nh.n_descsz = (flags & ELF_DESC4) ? 4 : 8;
		nh.n_type = 18;	/* XEN_ELFNOTE_PHYS32_ENTRY */
		memcpy(img + T_NOTE_OFF, &nh, sizeof(nh));
		memcpy(img + T_NOTE_OFF + sizeof(nh), "Xen", 4);
		memcpy(img + T_NOTE_OFF + sizeof(nh) + 4, &entry,
		    nh.n_descsz);
	} else {
		/* Some other note, so the note segment is not empty. */
		nh.n_namesz = 4;
		nh.n_descsz = 8;
		nh.n_type = 1;
		memcpy(img + T_NOTE_OFF, &nh, sizeof(nh));
		memcpy(img + T_NOTE_OFF + sizeof(nh), "GNU", 4);
	}

	memset(sh, 0, sizeof(sh));
	sh[1].sh_type = SHT_NOTE;
	sh[1].sh_offset = T_NOTE_OFF;
	sh[1].sh_size = ph.p_filesz;
	sh[1].sh_addralign = 4;
	memcpy(img + T_SHDR_OFF, sh, sizeof(sh));
}

/* Build the test bzImage into img (T_BZ_LEN bytes). */
static void
bz_build(uint8_t *img, uint16_t version, uint8_t setup_sects)
{
	unsigned	i;

	memset(img, 0, T_BZ_LEN);
	img[0x1f1] = setup_sects;
	wr16(img + 0x1fe, 0xaa55);
	img[0x200] = 0xeb;		/* jmp: header ends at 0x202 + 0x6a */
	img[0x201] = 0x6a;
	memcpy(img + 0x202, "HdrS", 4);
	wr16(img + 0x206, version);
	img[0x211] = 0x01;		/* LOADED_HIGH */
	wr32(img + 0x214, 0x100000);	/* code32_start */
	wr32(img + 0x22c, 0x7fffffff);	/* initrd_addr_max */
	wr32(img + 0x230, 0x200000);	/* kernel_alignment */
	img[0x234] = 1;			/* relocatable_kernel */
	wr16(img + 0x236, 0x3);		/* XLF_KERNEL_64 | ..._ABOVE_4G */
	wr32(img + 0x238, 2047);	/* cmdline_size */
	wr32(img + 0x258, 0x1000000);	/* pref_address */
	wr32(img + 0x260, 0x800000);	/* init_size */
	for (i = 0; i < T_BZ_PAYLOAD; i++)
		img[(T_SETUP_SECTS + 1) * 512 + i] = (uint8_t)(i * 7 + 3);
}

/* Check the e820-style table at p (stride bytes per entry) is sane. */
static int
check_memmap(const uint8_t *p, unsigned n, size_t stride, uint64_t lowtop,
    uint64_t high)
{
	uint64_t	addr, size, prev_end = 0;
	uint32_t	type;
	unsigned	i;
	bool		saw_low = false, saw_high = false, saw_ebda = false;

	TAP_CHECK(n >= 3);
	for (i = 0; i < n; i++, p += stride) {
		addr = rd64(p);
		size = rd64(p + 8);
		type = rd32(p + 16);
		TAP_CHECK(size > 0);
		TAP_CHECK(addr >= prev_end);	/* sorted, no overlap */
		prev_end = addr + size;
		if (addr == 0) {
			TAP_CHECK(type == 1 && size == LAYOUT_EBDA);
			continue;
		}
		if (addr == LAYOUT_EBDA) {
			TAP_CHECK(type == 2 && addr + size == 0x100000);
			saw_ebda = true;
			continue;
		}
		if (addr == 0x100000) {
			TAP_CHECK(type == 1 && addr + size == lowtop);
			saw_low = true;
			continue;
		}
		if (addr == LAYOUT_HIGH_RAM) {
			TAP_CHECK(type == 1 && size == high);
			saw_high = true;
			continue;
		}
		tap_diag("unexpected memmap entry %#llx+%#llx type %u",
		    (unsigned long long)addr, (unsigned long long)size, type);
		return TAP_FAIL;
	}
	TAP_CHECK(saw_low && saw_ebda);
	TAP_CHECK(saw_high == (high != 0));
	return TAP_PASS;
}

/* Sum of len bytes modulo 256. */
static uint8_t
bytesum(const uint8_t *p, size_t len)
{
	uint8_t	s = 0;

	while (len-- > 0)
		s += *p++;
	return s;
}

/* Decode and check the MP table for ncpus CPUs. */
static int
check_mptable(struct vm *vm, unsigned ncpus)
{
	uint8_t		*mpf, *t, *e, *end;
	uint32_t	 phys;
	uint16_t	 len, count;
	unsigned	 cpus = 0, bsp = 0, buses = 0, ioapics = 0, n = 0;
	unsigned	 virtio_pins = 0, irq0 = 0, lints = 0, isa = 0;
	uint8_t		 ioapic_id = 0xff;

	TAP_CHECK((mpf = g(vm, LAYOUT_EBDA, 16)) != NULL);
	TAP_CHECK(memcmp(mpf, "_MP_", 4) == 0);
	TAP_CHECK(bytesum(mpf, 16) == 0);
	TAP_CHECK(mpf[8] == 1 && mpf[9] == 4);
	TAP_CHECK(mpf[11] == 0);	/* a configuration table follows */
	phys = rd32(mpf + 4);
	TAP_CHECK(phys >= LAYOUT_EBDA + 16 && phys < LAYOUT_LOWMEM_END);
	TAP_CHECK((t = g(vm, phys, 44)) != NULL);
	TAP_CHECK(memcmp(t, "PCMP", 4) == 0);
	len = rd16(t + 4);
	count = rd16(t + 34);
	TAP_CHECK(phys + len <= LAYOUT_LOWMEM_END);
	TAP_CHECK(bytesum(t, len) == 0);
	TAP_CHECK(t[6] == 4);
	TAP_CHECK(memcmp(t + 8, "SMX     ", 8) == 0);
	TAP_CHECK(rd32(t + 36) == 0xfee00000);

	end = t + len;
	for (e = t + 44; e < end; n++) {
		TAP_CHECK(e + 8 <= end);
		switch (e[0]) {
		case 0:
			TAP_CHECK(e + 20 <= end);
			TAP_CHECK(e[1] == cpus);	/* APIC IDs 0..n-1 */
			TAP_CHECK(e[2] == 0x14);
			TAP_CHECK(e[3] & 1);
			if (e[3] & 2) {
				TAP_CHECK(e[1] == 0);
				bsp++;
			}
			TAP_CHECK(((rd32(e + 4) >> 8) & 0xf) == 6);
			TAP_CHECK((rd32(e + 8) & 0x201) == 0x201);
			cpus++;
			e += 20;
			continue;
		case 1:
			TAP_CHECK(memcmp(e + 2, "ISA   ", 6) == 0);
			buses++;
			break;
		case 2:
			ioapic_id = e[1];
			TAP_CHECK(e[1] == ncpus && e[2] == 0x11 && (e[3] & 1));
			TAP_CHECK(rd32(e + 4) == 0xfec00000);
			ioapics++;
			break;
		case 3:
			TAP_CHECK(e[1] == 0 && e[4] == 0);
			TAP_CHECK(e[6] == ioapic_id);
			if (e[7] >= LAYOUT_VIRTIO_IRQ_BASE) {
				TAP_CHECK(e[7] < LAYOUT_IOAPIC_PINS);
				TAP_CHECK(e[5] == e[7]);
				TAP_CHECK(rd16(e + 2) == 0x000d);
				virtio_pins++;
			} else {
				TAP_CHECK(e[5] != 2);
				/* Identity: KVM routes IRQ n to pin n. */
				TAP_CHECK(e[7] == e[5]);
				if (e[5] == 0)
					irq0++;
				isa++;
			}
			break;
		case 4:
			TAP_CHECK(e[6] == 0xff);
			TAP_CHECK((e[1] == 3 && e[7] == 0) ||
			    (e[1] == 1 && e[7] == 1));
			lints++;
			break;
		default:
			tap_diag("unknown MP entry type %u", e[0]);
			return TAP_FAIL;
		}
		e += 8;
	}
	TAP_CHECK(e == end);
	TAP_CHECK(n == count);
	TAP_CHECK(cpus == ncpus && bsp == 1);
	TAP_CHECK(buses == 1 && ioapics == 1);
	TAP_CHECK(isa == 15 && irq0 == 1);
	TAP_CHECK(virtio_pins == LAYOUT_IOAPIC_PINS - LAYOUT_VIRTIO_IRQ_BASE);
	TAP_CHECK(lints == 2);
	return TAP_PASS;
}

/* Load the test vmlinux (with flags) plus an initrd and check everything. */
static int
pvh_case(unsigned flags)
{
	static uint8_t		 img[T_ELF_LEN];
	struct vm		 vm;
	struct boot_spec	 spec;
	struct boot_entry	 be;
	char			 err[256], *kpath, *ipath;
	uint8_t			 initrd[10000], *si, *p;
	uint64_t		 mod, maddr, msize;
	unsigned		 i;
	int			 rc, result = TAP_FAIL;

	elf_build(img, flags);
	kpath = tmpfile_write("vmlinux", img, sizeof(img));
	for (i = 0; i < sizeof(initrd); i++)
		initrd[i] = (uint8_t)(i * 13);
	ipath = tmpfile_write("initrd", initrd, sizeof(initrd));
	vm_small(&vm, 64 * MiB);
	memset(&spec, 0, sizeof(spec));
	spec.kernel = kpath;
	spec.initrd = ipath;
	spec.cmdline = "console=ttyS0 quiet";
	spec.ncpus = 2;
	spec.ram_size = 64 * MiB;
	rc = boot_load(&vm.mem, &spec, &be, err, sizeof(err));
	if (rc != 0) {
		tap_diag("boot_load: %d %s", rc, err);
		goto out;
	}
#define CHECK(c) TAP_CHECK_GOTO(c, out)
	CHECK(be.mode == BOOT_PVH);
	CHECK(be.entry == T_ENTRY);
	CHECK(be.arg == LAYOUT_START_INFO);
	CHECK(strcmp(be.format, "vmlinux (PVH)") == 0);
	/* Segments loaded, bss zeroed, nothing spilled past it. */
	CHECK(memcmp(g(&vm, T_TEXT_PADDR, T_TEXT_SIZE), img + T_TEXT_OFF,
	    T_TEXT_SIZE) == 0);
	CHECK(memcmp(g(&vm, T_DATA_PADDR, T_DATA_FILESZ), img + T_DATA_OFF,
	    T_DATA_FILESZ) == 0);
	p = g(&vm, T_DATA_PADDR + T_DATA_FILESZ, T_DATA_MEMSZ - T_DATA_FILESZ);
	for (i = 0; i < T_DATA_MEMSZ - T_DATA_FILESZ; i++)
		CHECK(p[i] == 0);
	CHECK(*g(&vm, T_DATA_PADDR + T_DATA_MEMSZ, 1) == 0xa5);
	CHECK(*g(&vm, T_TEXT_PADDR + T_TEXT_SIZE, 1) == 0xa5);

	si = g(&vm, LAYOUT_START_INFO, 56);
	CHECK(rd32(si) == 0x336ec578);
	CHECK(rd32(si + 4) == 1);
	CHECK(strcmp((char *)g(&vm, rd64(si + 24), 20),
	    "console=ttyS0 quiet") == 0);
	CHECK(rd64(si + 24) == LAYOUT_CMDLINE);
	CHECK(rd64(si + 32) == 0);		/* no RSDP */
	CHECK(rd32(si + 12) == 1);		/* nr_modules */
	mod = rd64(si + 16);
	CHECK(mod >= LAYOUT_START_INFO + 56 &&
	    mod + 32 <= LAYOUT_START_INFO_END);
	maddr = rd64(g(&vm, mod, 32));
	msize = rd64(g(&vm, mod + 8, 8));
	CHECK(msize == sizeof(initrd));
	CHECK(maddr % 4096 == 0);
	CHECK(maddr >= T_DATA_PADDR + T_DATA_MEMSZ);
	CHECK(maddr + msize <= 64 * MiB && maddr + msize + 4096 > 64 * MiB);
	CHECK(memcmp(g(&vm, maddr, msize), initrd, msize) == 0);
	CHECK(rd64(si + 40) >= mod + 32);	/* memmap after the modlist */
	CHECK(rd64(si + 40) + rd32(si + 48) * 24 <= LAYOUT_START_INFO_END);
	CHECK(rd32(si + 48) == 3);
	CHECK(check_memmap(g(&vm, rd64(si + 40), 3 * 24), 3, 24, 64 * MiB,
	    0) == TAP_PASS);
	CHECK(check_mptable(&vm, 2) == TAP_PASS);
#undef CHECK
	result = TAP_PASS;
out:
	vm_free(&vm);
	free(kpath);
	free(ipath);
	return result;
}

/* The vmlinux with its note in PT_NOTE and an 8-byte value. */
static int
t_pvh_load(void)
{
	return pvh_case(0);
}

/* The vmlinux with its note only in a section, 4-byte value. */
static int
t_pvh_note_in_section(void)
{
	return pvh_case(ELF_NOTE_IN_SECTION | ELF_DESC4);
}

/* Walk the identity page tables: every 2 MiB page of 0..4 GiB maps 1:1. */
static int
check_page_tables(struct vm *vm, uint64_t cr3)
{
	uint64_t	va, e, pml4e, pdpte;

	for (va = 0; va < 4 * GiB; va += 2 * MiB) {
		pml4e = rd64(g(vm, cr3 + ((va >> 39) & 511) * 8, 8));
		TAP_CHECK(pml4e & 1);
		pdpte = rd64(g(vm, (pml4e & ~0xfffULL) + ((va >> 30) & 511) * 8,
		    8));
		TAP_CHECK(pdpte & 1);
		TAP_CHECK(!(pdpte & 0x80));
		e = rd64(g(vm, (pdpte & ~0xfffULL) + ((va >> 21) & 511) * 8, 8));
		TAP_CHECK((e & 0x83) == 0x83);	/* P, RW, PS */
		TAP_CHECK((e & 0x000ffffffffff000ULL) == va);
	}
	/* Nothing mapped beyond 4 GiB. */
	pml4e = rd64(g(vm, cr3, 8));
	TAP_CHECK((rd64(g(vm, (pml4e & ~0xfffULL) + 4 * 8, 8)) & 1) == 0);
	return TAP_PASS;
}

/* The GDT descriptor at selector sel is a present 64-bit code segment. */
static int
check_gdt_code64(struct vm *vm, uint64_t base, uint16_t sel)
{
	uint64_t	d = rd64(g(vm, base + sel, 8));

	TAP_CHECK(((d >> 47) & 1) == 1);	/* present */
	TAP_CHECK(((d >> 44) & 1) == 1);	/* code/data */
	TAP_CHECK(((d >> 43) & 1) == 1);	/* code */
	TAP_CHECK(((d >> 53) & 1) == 1);	/* L */
	TAP_CHECK(((d >> 54) & 1) == 0);	/* D must be 0 with L */
	TAP_CHECK(((d >> 45) & 3) == 0);	/* DPL 0 */
	return TAP_PASS;
}

/* Load the test bzImage with an initrd and check every table. */
static int
t_bzimage_load(void)
{
	static uint8_t		 img[T_BZ_LEN];
	struct vm		 vm;
	struct boot_spec	 spec;
	struct boot_entry	 be;
	struct hv_regs		 regs;
	struct hv_sregs		 sregs;
	char			 err[256], *kpath, *ipath;
	uint8_t			 initrd[5000], *bp;
	uint64_t		 rd;
	unsigned		 i;
	int			 rc, result = TAP_FAIL;

	bz_build(img, 0x020f, T_SETUP_SECTS);
	kpath = tmpfile_write("bzImage", img, sizeof(img));
	memset(initrd, 0x5c, sizeof(initrd));
	ipath = tmpfile_write("initrd", initrd, sizeof(initrd));
	vm_small(&vm, 64 * MiB);
	memset(&spec, 0, sizeof(spec));
	spec.kernel = kpath;
	spec.initrd = ipath;
	spec.cmdline = "console=ttyS0 root=/dev/vda";
	spec.ncpus = 1;
	spec.ram_size = 64 * MiB;
	if ((rc = boot_load(&vm.mem, &spec, &be, err, sizeof(err))) != 0) {
		tap_diag("boot_load: %d %s", rc, err);
		goto out;
	}
#define CHECK(c) TAP_CHECK_GOTO(c, out)
	CHECK(be.mode == BOOT_LINUX64);
	CHECK(be.entry == 0x100000 + 0x200);
	CHECK(be.arg == LAYOUT_BOOT_PARAMS);
	CHECK(strcmp(be.format, "bzImage") == 0);
	CHECK(memcmp(g(&vm, 0x100000, T_BZ_PAYLOAD),
	    img + (T_SETUP_SECTS + 1) * 512, T_BZ_PAYLOAD) == 0);

	bp = g(&vm, LAYOUT_BOOT_PARAMS, 4096);
	/* Header copied from the file, except what the loader writes. */
	CHECK(memcmp(bp + 0x1f1, img + 0x1f1, 0x210 - 0x1f1) == 0);
	CHECK(memcmp(bp + 0x22c, img + 0x22c, 0x26c - 0x22c) == 0);
	CHECK(bp[0x210] == 0xff);			/* type_of_loader */
	CHECK((bp[0x211] & 0x81) == 0x81);		/* LOADED_HIGH|HEAP */
	CHECK(rd16(bp + 0x224) != 0);			/* heap_end_ptr */
	CHECK(rd32(bp + 0x228) == LAYOUT_CMDLINE);	/* cmd_line_ptr */
	CHECK(rd32(bp + 0xc8) == 0);
	CHECK(strcmp((char *)g(&vm, LAYOUT_CMDLINE, 32),
	    "console=ttyS0 root=/dev/vda") == 0);
	rd = rd32(bp + 0x218);
	CHECK(rd32(bp + 0x21c) == sizeof(initrd));
	CHECK(rd % 4096 == 0);
	/* Above the kernel's runtime footprint: 2 MiB + init_size. */
	CHECK(rd >= 0x200000 + 0x800000);
	CHECK(rd + sizeof(initrd) <= 64 * MiB);
	CHECK(memcmp(g(&vm, rd, sizeof(initrd)), initrd, sizeof(initrd)) == 0);
	CHECK(bp[0x1e8] == 3);				/* e820_entries */
	CHECK(check_memmap(bp + 0x2d0, bp[0x1e8], 20, 64 * MiB, 0) ==
	    TAP_PASS);
	/* The rest of the zero page outside the header and e820 is zero. */
	for (i = 0; i < 0x1e8; i++)
		CHECK(bp[i] == 0);

	boot_vcpu_state(&be, &regs, &sregs);
	CHECK(regs.rip == be.entry && regs.rsi == LAYOUT_BOOT_PARAMS);
	CHECK(regs.rflags == 2 && regs.rbx == 0 && regs.rsp == 0);
	CHECK(sregs.cr3 == LAYOUT_PML4);
	CHECK((sregs.cr0 & 0x80000001) == 0x80000001);
	CHECK(sregs.cr4 & 0x20);
	CHECK((sregs.efer & 0x500) == 0x500);
	CHECK(sregs.cs.l == 1 && sregs.cs.db == 0 && sregs.cs.selector == 0x10);
	CHECK(sregs.ds.selector == 0x18 && sregs.ss.selector == 0x18);
	CHECK(sregs.tr.present && sregs.tr.type == 0xb);
	CHECK(sregs.gdt.base == LAYOUT_GDT);
	CHECK(sregs.gdt.limit >= 0x1f);
	CHECK(check_gdt_code64(&vm, sregs.gdt.base, sregs.cs.selector) ==
	    TAP_PASS);
	CHECK(check_page_tables(&vm, sregs.cr3) == TAP_PASS);
	CHECK(check_mptable(&vm, 1) == TAP_PASS);
#undef CHECK
	result = TAP_PASS;
out:
	vm_free(&vm);
	free(kpath);
	free(ipath);
	return result;
}

/* The PVH register state: flat 32-bit protected mode. */
static int
t_vcpu_state_pvh(void)
{
	struct boot_entry	be = { BOOT_PVH, 0x1000010, LAYOUT_START_INFO,
				    "vmlinux (PVH)" };
	struct hv_regs		regs;
	struct hv_sregs		s;
	const struct hv_segment	*seg[] = { &s.ds, &s.es, &s.fs, &s.gs, &s.ss };
	unsigned		i;

	boot_vcpu_state(&be, &regs, &s);
	TAP_CHECK(regs.rip == 0x1000010 && regs.rbx == LAYOUT_START_INFO);
	TAP_CHECK(regs.rflags == 2 && regs.rsi == 0);
	TAP_CHECK(s.cr0 == 1 && s.cr4 == 0 && s.efer == 0);
	TAP_CHECK(s.cs.base == 0 && s.cs.limit == 0xffffffff);
	TAP_CHECK(s.cs.type == 0xb && s.cs.s && s.cs.present && s.cs.db &&
	    s.cs.g && !s.cs.l && s.cs.selector == 0x8);
	for (i = 0; i < ARRAY_SIZE(seg); i++) {
		TAP_CHECK(seg[i]->type == 0x3 && seg[i]->selector == 0x10);
		TAP_CHECK(seg[i]->present && seg[i]->s && seg[i]->db &&
		    seg[i]->g && seg[i]->limit == 0xffffffff);
	}
	TAP_CHECK(s.tr.type == 0xb && s.tr.present && !s.tr.s);
	TAP_CHECK(s.apic_base & 0x800);
	return TAP_PASS;
}

/* boot_load must fail (any -errno) with a reason, touching nothing wild. */
static int
expect_fail(const char *what, const char *kpath, const char *ipath,
    const char *cmdline, uint64_t ram, unsigned ncpus, int want)
{
	struct vm		vm;
	struct boot_spec	spec;
	struct boot_entry	be;
	char			err[256];
	int			rc;

	vm_small(&vm, ram);
	memset(&spec, 0, sizeof(spec));
	spec.kernel = kpath;
	spec.initrd = ipath;
	spec.cmdline = cmdline;
	spec.ncpus = ncpus;
	spec.ram_size = ram;
	rc = boot_load(&vm.mem, &spec, &be, err, sizeof(err));
	vm_free(&vm);
	if (rc >= 0) {
		tap_diag("%s: boot_load succeeded", what);
		return TAP_FAIL;
	}
	tap_diag("%s: %d %s", what, rc, err);
	TAP_CHECK(err[0] != '\0');
	if (want != 0 && rc != want) {
		tap_diag("%s: wanted %d", what, want);
		return TAP_FAIL;
	}
	TAP_CHECK(be.entry == 0 && be.arg == 0);
	return TAP_PASS;
}

/* A hostile ELF: the test image, changed by fn, cut to len bytes. */
static int
bad_elf(const char *what, void (*fn)(uint8_t *), size_t len, unsigned flags)
{
	uint8_t	*img;
	char	*path;
	int	 rc;

	img = xcalloc(1, T_ELF_LEN);
	elf_build(img, flags);
	if (fn != NULL)
		fn(img);
	path = tmpfile_write("bad-elf", img, len);
	rc = expect_fail(what, path, NULL, "", 64 * MiB, 1, -ENOEXEC);
	free(img);
	free(path);
	return rc;
}

/* Mutators turning the test vmlinux into a hostile one. */
static void
m_phoff(uint8_t *img)
{
	Elf64_Ehdr	eh;

	memcpy(&eh, img, sizeof(eh));
	eh.e_phoff = T_ELF_LEN + 64;
	memcpy(img, &eh, sizeof(eh));
}

static void
m_phnum(uint8_t *img)
{
	Elf64_Ehdr	eh;

	memcpy(&eh, img, sizeof(eh));
	eh.e_phnum = 0xfff0;
	memcpy(img, &eh, sizeof(eh));
}

static void
m_machine(uint8_t *img)
{
	Elf64_Ehdr	eh;

	memcpy(&eh, img, sizeof(eh));
	eh.e_machine = EM_386;
	memcpy(img, &eh, sizeof(eh));
}

static void
m_off_overflow(uint8_t *img)
{
	Elf64_Phdr	ph = phdr_get(img, 0);

	ph.p_offset = 0xffffffffffffff00ULL;
	ph.p_filesz = 0x200;
	ph.p_memsz = 0x200;
	phdr_set(img, 0, &ph);
}

static void
m_filesz_big(uint8_t *img)
{
	Elf64_Phdr	ph = phdr_get(img, 1);

	ph.p_filesz = 0x100000;
	ph.p_memsz = 0x100000;
	phdr_set(img, 1, &ph);
}

static void
m_memsz_small(uint8_t *img)
{
	Elf64_Phdr	ph = phdr_get(img, 1);

	ph.p_memsz = ph.p_filesz - 1;
	phdr_set(img, 1, &ph);
}

static void
m_paddr_wrap(uint8_t *img)
{
	Elf64_Phdr	ph = phdr_get(img, 1);

	ph.p_paddr = 0xfffffffffffff000ULL;
	phdr_set(img, 1, &ph);
}

static void
m_outside_ram(uint8_t *img)
{
	Elf64_Phdr	ph = phdr_get(img, 1);

	ph.p_paddr = 0x40000000;
	phdr_set(img, 1, &ph);
}

static void
m_straddle_ram(uint8_t *img)
{
	Elf64_Phdr	ph = phdr_get(img, 1);

	ph.p_paddr = 64 * MiB - 0x1000;
	phdr_set(img, 1, &ph);
}

static void
m_low(uint8_t *img)
{
	Elf64_Phdr	ph = phdr_get(img, 1);

	ph.p_paddr = LAYOUT_BOOT_PARAMS;
	phdr_set(img, 1, &ph);
}

static void
m_note_namesz(uint8_t *img)
{
	wr32(img + T_NOTE_OFF, 0xffffffff);
}

static void
m_note_descsz(uint8_t *img)
{
	wr32(img + T_NOTE_OFF + 4, 0xfffffff0);
}

static void
m_note_desc3(uint8_t *img)
{
	wr32(img + T_NOTE_OFF + 4, 3);
}

static void
m_note_seg_outside(uint8_t *img)
{
	Elf64_Phdr	ph = phdr_get(img, 2);

	ph.p_filesz = 0xffffffffffffff00ULL;
	phdr_set(img, 2, &ph);
}

static void
m_entry_outside(uint8_t *img)
{
	wr32(img + T_NOTE_OFF + 16, 0x3000000);
}

static void
m_shoff_wild(uint8_t *img)
{
	Elf64_Ehdr	eh;

	memcpy(&eh, img, sizeof(eh));
	eh.e_shoff = 0xfffffffffffffff0ULL;
	eh.e_shnum = 0x7fff;
	memcpy(img, &eh, sizeof(eh));
}

/* Hostile vmlinux cases, one per mutator. */
static int
t_bad_elf_truncated(void)
{
	return bad_elf("truncated ELF", NULL, 40, 0);
}

static int
t_bad_elf_phoff(void)
{
	return bad_elf("phoff beyond file", m_phoff, T_ELF_LEN, 0);
}

static int
t_bad_elf_phnum(void)
{
	return bad_elf("phnum beyond file", m_phnum, T_ELF_LEN, 0);
}

static int
t_bad_elf_machine(void)
{
	return bad_elf("i386 ELF", m_machine, T_ELF_LEN, 0);
}

static int
t_bad_elf_overflow(void)
{
	return bad_elf("PT_LOAD offset+filesz overflow", m_off_overflow,
	    T_ELF_LEN, 0);
}

static int
t_bad_elf_filesz(void)
{
	return bad_elf("PT_LOAD filesz beyond file", m_filesz_big, T_ELF_LEN,
	    0);
}

static int
t_bad_elf_memsz(void)
{
	return bad_elf("PT_LOAD memsz < filesz", m_memsz_small, T_ELF_LEN, 0);
}

static int
t_bad_elf_paddr_wrap(void)
{
	return bad_elf("PT_LOAD paddr+memsz wraps", m_paddr_wrap, T_ELF_LEN,
	    0);
}

/* Outside RAM is -ENOMEM, not -ENOEXEC: the file is fine, the VM small. */
static int
bad_elf_ram(const char *what, void (*fn)(uint8_t *))
{
	uint8_t	*img;
	char	*path;
	int	 rc;

	img = xcalloc(1, T_ELF_LEN);
	elf_build(img, 0);
	fn(img);
	path = tmpfile_write("bad-elf", img, T_ELF_LEN);
	rc = expect_fail(what, path, NULL, "", 64 * MiB, 1, -ENOMEM);
	free(img);
	free(path);
	return rc;
}

static int
t_bad_elf_outside_ram(void)
{
	return bad_elf_ram("PT_LOAD outside RAM", m_outside_ram);
}

static int
t_bad_elf_straddle(void)
{
	return bad_elf_ram("PT_LOAD past the end of RAM", m_straddle_ram);
}

static int
t_bad_elf_low(void)
{
	return bad_elf("PT_LOAD into low memory", m_low, T_ELF_LEN, 0);
}

static int
t_bad_elf_note_namesz(void)
{
	return bad_elf("note namesz bogus", m_note_namesz, T_ELF_LEN, 0);
}

static int
t_bad_elf_note_descsz(void)
{
	return bad_elf("note descsz bogus", m_note_descsz, T_ELF_LEN, 0);
}

static int
t_bad_elf_note_desc3(void)
{
	return bad_elf("PVH note of 3 bytes", m_note_desc3, T_ELF_LEN, 0);
}

static int
t_bad_elf_note_section(void)
{
	return bad_elf("bogus note in a section", m_note_namesz, T_ELF_LEN,
	    ELF_NOTE_IN_SECTION);
}

static int
t_bad_elf_note_segment(void)
{
	return bad_elf("note segment beyond file", m_note_seg_outside,
	    T_ELF_LEN, 0);
}

static int
t_bad_elf_no_note(void)
{
	return bad_elf("no PVH note", NULL, T_ELF_LEN, ELF_NO_NOTE);
}

static int
t_bad_elf_no_note_wild_sections(void)
{
	return bad_elf("no PVH note, wild section table", m_shoff_wild,
	    T_ELF_LEN, ELF_NO_NOTE);
}

static int
t_bad_elf_entry(void)
{
	return bad_elf("PVH entry outside segments", m_entry_outside,
	    T_ELF_LEN, 0);
}

/* A hostile bzImage: the test image with a version/setup_sects/patch. */
static int
bad_bz(const char *what, uint16_t version, uint8_t sects, size_t off,
    uint32_t val, const char *cmdline, uint64_t ram, int want)
{
	uint8_t	*img;
	char	*path;
	int	 rc;

	img = xcalloc(1, T_BZ_LEN);
	bz_build(img, version, sects);
	if (off != 0)
		wr32(img + off, val);
	path = tmpfile_write("bad-bz", img, T_BZ_LEN);
	rc = expect_fail(what, path, NULL, cmdline, ram, 1, want);
	free(img);
	free(path);
	return rc;
}

/* Hostile bzImage cases. */
static int
t_bad_bz_old(void)
{
	return bad_bz("bzImage protocol 2.05", 0x0205, T_SETUP_SECTS, 0, 0,
	    "", 64 * MiB, -ENOEXEC);
}

static int
t_bad_bz_no64(void)
{
	/* xloadflags (0x236) cleared; keep cmdline_size at 0x238 intact. */
	return bad_bz("bzImage without XLF_KERNEL_64", 0x020f, T_SETUP_SECTS,
	    0x234, 0x00000001, "", 64 * MiB, -ENOEXEC);
}

static int
t_bad_bz_sects(void)
{
	return bad_bz("bzImage setup_sects 255", 0x020f, 255, 0, 0, "",
	    64 * MiB, -ENOEXEC);
}

static int
t_bad_bz_align(void)
{
	return bad_bz("bzImage kernel_alignment 3", 0x020f, T_SETUP_SECTS,
	    0x230, 3, "", 64 * MiB, -ENOEXEC);
}

static int
t_bad_bz_init_size(void)
{
	return bad_bz("bzImage init_size beyond RAM", 0x020f, T_SETUP_SECTS,
	    0x260, 0x10000000, "", 64 * MiB, -ENOMEM);
}

static int
t_bad_bz_cmdline_size(void)
{
	return bad_bz("command line longer than cmdline_size", 0x020f,
	    T_SETUP_SECTS, 0x238, 16, "console=ttyS0 root=/dev/vda rw",
	    64 * MiB, -E2BIG);
}

/* A command line over LAYOUT_CMDLINE_MAX. */
static int
t_bad_cmdline(void)
{
	uint8_t	*img;
	char	*path, *cmd;
	int	 rc;

	img = xcalloc(1, T_ELF_LEN);
	elf_build(img, 0);
	path = tmpfile_write("vmlinux", img, T_ELF_LEN);
	cmd = xmalloc(5001);
	memset(cmd, 'x', 5000);
	cmd[5000] = '\0';
	rc = expect_fail("5000-byte command line", path, NULL, cmd, 64 * MiB,
	    1, -E2BIG);
	free(cmd);
	free(img);
	free(path);
	return rc;
}

/* An initrd larger than RAM, and one that fits RAM but not above the
 * kernel. */
static int
t_bad_initrd(void)
{
	uint8_t	*img;
	char	*path, *big, *mid, *none;
	int	 rc;

	img = xcalloc(1, T_BZ_LEN);
	bz_build(img, 0x020f, T_SETUP_SECTS);
	path = tmpfile_write("bzImage", img, T_BZ_LEN);
	big = tmpfile_sized("initrd-big", 40 * MiB);
	mid = tmpfile_sized("initrd-mid", 24 * MiB);
	xasprintf(&none, "%s/no-such-initrd", tmpdir);
	rc = expect_fail("initrd bigger than RAM", path, big, "", 32 * MiB, 1,
	    -EFBIG);
	if (rc == TAP_PASS)
		rc = expect_fail("initrd not fitting above the kernel", path,
		    mid, "", 32 * MiB, 1, -EFBIG);
	if (rc == TAP_PASS)
		rc = expect_fail("missing initrd", path, none, "", 32 * MiB, 1,
		    -ENOENT);
	free(img);
	free(path);
	free(big);
	free(mid);
	free(none);
	return rc;
}

/* Kernel paths that are not kernels, and specs that make no VM. */
static int
t_bad_files(void)
{
	uint8_t	 junk[4096];
	char	*empty, *garbage, *none;
	int	 rc;

	memset(junk, 'A', sizeof(junk));
	empty = tmpfile_write("empty", NULL, 0);
	garbage = tmpfile_write("garbage", junk, sizeof(junk));
	xasprintf(&none, "%s/no-such-kernel", tmpdir);
	rc = expect_fail("empty kernel", empty, NULL, "", 64 * MiB, 1,
	    -ENOEXEC);
	if (rc == TAP_PASS)
		rc = expect_fail("garbage kernel", garbage, NULL, "", 64 * MiB,
		    1, -ENOEXEC);
	if (rc == TAP_PASS)
		rc = expect_fail("directory as kernel", tmpdir, NULL, "",
		    64 * MiB, 1, -EISDIR);
	if (rc == TAP_PASS)
		rc = expect_fail("missing kernel", none, NULL, "", 64 * MiB, 1,
		    -ENOENT);
	if (rc == TAP_PASS)
		rc = expect_fail("zero CPUs", garbage, NULL, "", 64 * MiB, 0,
		    -EINVAL);
	if (rc == TAP_PASS)
		rc = expect_fail("too little RAM", garbage, NULL, "", 512 * 1024,
		    1, -EINVAL);
	free(empty);
	free(garbage);
	free(none);
	return rc;
}

/* mptable_write() alone for ncpus, then decode it. */
static int
mptable_case(unsigned ncpus)
{
	struct vm	vm;
	int		rc;

	vm_small(&vm, 2 * MiB);
	if ((rc = mptable_write(&vm.mem, ncpus)) != 0) {
		tap_diag("mptable_write(%u): %d", ncpus, rc);
		vm_free(&vm);
		return TAP_FAIL;
	}
	rc = check_mptable(&vm, ncpus);
	vm_free(&vm);
	return rc;
}

/* The MP table for one and for the most CPUs, and refused counts. */
static int
t_mptable_1(void)
{
	return mptable_case(1);
}

static int
t_mptable_8(void)
{
	return mptable_case(8);
}

static int
t_mptable_bad(void)
{
	struct vm	vm;
	int		rc0, rc9;

	vm_small(&vm, 2 * MiB);
	rc0 = mptable_write(&vm.mem, 0);
	rc9 = mptable_write(&vm.mem, HV_MAX_VCPUS + 1);
	vm_free(&vm);
	TAP_CHECK(rc0 == -EINVAL && rc9 == -EINVAL);
	return TAP_PASS;
}

/* 4 GiB of RAM: 3 GiB below the MMIO gap, 1 GiB at 4 GiB. */
static int
t_high_memory(void)
{
	static uint8_t		 elf[T_ELF_LEN], bz[T_BZ_LEN];
	struct vm		 vm;
	struct boot_spec	 spec;
	struct boot_entry	 be;
	char			 err[256], *epath, *bpath, *ipath;
	uint8_t			 initrd[3000], *si, *bp;
	uint64_t		 mod;
	int			 rc, result = TAP_FAIL;

	elf_build(elf, 0);
	bz_build(bz, 0x020f, T_SETUP_SECTS);
	epath = tmpfile_write("vmlinux", elf, sizeof(elf));
	bpath = tmpfile_write("bzImage", bz, sizeof(bz));
	memset(initrd, 0x77, sizeof(initrd));
	ipath = tmpfile_write("initrd", initrd, sizeof(initrd));
	vm_big(&vm, 4 * GiB);
	memset(&spec, 0, sizeof(spec));
	spec.kernel = epath;
	spec.initrd = ipath;
	spec.ncpus = 8;
	spec.ram_size = 4 * GiB;
#define CHECK(c) TAP_CHECK_GOTO(c, out)
	if ((rc = boot_load(&vm.mem, &spec, &be, err, sizeof(err))) != 0) {
		tap_diag("boot_load (PVH): %d %s", rc, err);
		goto out;
	}
	si = g(&vm, LAYOUT_START_INFO, 56);
	CHECK(rd32(si + 48) == 4);
	CHECK(check_memmap(g(&vm, rd64(si + 40), 4 * 24), 4, 24,
	    LAYOUT_MMIO_GAP, 1 * GiB) == TAP_PASS);
	/* The initrd sits at the top of low RAM, under the MMIO gap. */
	mod = rd64(si + 16);
	CHECK(rd64(g(&vm, mod, 8)) + sizeof(initrd) <= LAYOUT_MMIO_GAP);
	CHECK(rd64(g(&vm, mod, 8)) + sizeof(initrd) + 4096 > LAYOUT_MMIO_GAP);
	CHECK(check_mptable(&vm, 8) == TAP_PASS);

	spec.kernel = bpath;
	if ((rc = boot_load(&vm.mem, &spec, &be, err, sizeof(err))) != 0) {
		tap_diag("boot_load (bzImage): %d %s", rc, err);
		goto out;
	}
	bp = g(&vm, LAYOUT_BOOT_PARAMS, 4096);
	CHECK(bp[0x1e8] == 4);
	CHECK(check_memmap(bp + 0x2d0, 4, 20, LAYOUT_MMIO_GAP, 1 * GiB) ==
	    TAP_PASS);
#undef CHECK
	result = TAP_PASS;
out:
	vm_free(&vm);
	free(epath);
	free(bpath);
	free(ipath);
	return result;
}

/* RAM given as two adjacent regions is one e820 entry. */
static int
t_split_regions(void)
{
	static uint8_t		 elf[T_ELF_LEN];
	struct gmem		 mem;
	struct boot_spec	 spec;
	struct boot_entry	 be;
	uint8_t			*a, *b, *si;
	char			 err[256], *epath;
	int			 rc, result = TAP_FAIL;

	a = xcalloc(1, 1 * MiB);
	b = xcalloc(1, 31 * MiB);
	memset(&mem, 0, sizeof(mem));
	/* Added high first: the loader must not depend on the order. */
	if (gmem_add(&mem, 1 * MiB, 31 * MiB, b) != 0 ||
	    gmem_add(&mem, 0, 1 * MiB, a) != 0)
		abort();
	elf_build(elf, 0);
	epath = tmpfile_write("vmlinux", elf, sizeof(elf));
	memset(&spec, 0, sizeof(spec));
	spec.kernel = epath;
	spec.ncpus = 1;
	spec.ram_size = 32 * MiB;
	if ((rc = boot_load(&mem, &spec, &be, err, sizeof(err))) != 0) {
		tap_diag("boot_load: %d %s", rc, err);
		goto out;
	}
	si = gmem_ptr(&mem, LAYOUT_START_INFO, 56);
	if (rd32(si + 48) != 3 || rd32(si + 12) != 0 || check_memmap(
	    gmem_ptr(&mem, rd64(si + 40), 3 * 24), 3, 24, 32 * MiB, 0) !=
	    TAP_PASS) {
		tap_diag("memmap of split regions is wrong");
		goto out;
	}
	result = TAP_PASS;
out:
	free(a);
	free(b);
	free(epath);
	return result;
}

/* Load one real kernel file into 512 MiB; returns TAP_PASS or TAP_FAIL. */
static int
smoke(const char *path, enum boot_mode want)
{
	struct vm		 vm;
	struct boot_spec	 spec;
	struct boot_entry	 be;
	char			 err[256];
	uint64_t		 t0;
	int			 rc;

	vm_big(&vm, 512 * MiB);
	memset(&spec, 0, sizeof(spec));
	spec.kernel = path;
	spec.cmdline = "console=ttyS0";
	spec.ncpus = 2;
	spec.ram_size = 512 * MiB;
	t0 = now_ns();
	rc = boot_load(&vm.mem, &spec, &be, err, sizeof(err));
	if (rc != 0) {
		tap_diag("%s: %d %s", path, rc, err);
		vm_free(&vm);
		return TAP_FAIL;
	}
	tap_diag("%s: %s, entry %#llx, loaded in %.1f ms", path, be.format,
	    (unsigned long long)be.entry, (now_ns() - t0) / 1e6);
	rc = be.mode == want ? check_mptable(&vm, 2) : TAP_FAIL;
	vm_free(&vm);
	return rc;
}

/* Run smoke() on every file matching pattern; counts them in *n. */
static int
smoke_glob(const char *pattern, enum boot_mode want, unsigned *n)
{
	glob_t	gl;
	size_t	i;
	int	rc = TAP_PASS;

	if (glob(pattern, 0, NULL, &gl) != 0)
		return TAP_PASS;
	for (i = 0; i < gl.gl_pathc; i++) {
		if (smoke(gl.gl_pathv[i], want) != TAP_PASS)
			rc = TAP_FAIL;
		(*n)++;
	}
	globfree(&gl);
	return rc;
}

/* Smoke: the project's kernels and the host's, if present. */
static int
t_real_kernels(void)
{
	char		*pat;
	unsigned	 n = 0;
	int		 rc = TAP_PASS;

	xasprintf(&pat, "%s/kernel/vmlinux-*", smx_home());
	if (smoke_glob(pat, BOOT_PVH, &n) != TAP_PASS)
		rc = TAP_FAIL;
	free(pat);
	xasprintf(&pat, "%s/kernel/bzImage-*", smx_home());
	if (smoke_glob(pat, BOOT_LINUX64, &n) != TAP_PASS)
		rc = TAP_FAIL;
	free(pat);
	if (smoke_glob("/boot/vmlinuz-*", BOOT_LINUX64, &n) != TAP_PASS)
		rc = TAP_FAIL;
	if (n == 0) {
		tap_diag("no vmlinux-* or bzImage-* in $SMX_HOME/kernel and "
		    "no /boot/vmlinuz-*: nothing to smoke-test");
		return TAP_SKIP;
	}
	return rc;
}

static const struct tap_case cases[] = {
	{ "vmlinux with PVH note: segments, bss, start_info, initrd",
	    t_pvh_load },
	{ "PVH note found in a SHT_NOTE section", t_pvh_note_in_section },
	{ "bzImage: zero page, kernel at 1 MiB, page tables, GDT",
	    t_bzimage_load },
	{ "PVH vCPU state", t_vcpu_state_pvh },
	{ "hostile: truncated ELF", t_bad_elf_truncated },
	{ "hostile: phoff beyond file", t_bad_elf_phoff },
	{ "hostile: phnum beyond file", t_bad_elf_phnum },
	{ "hostile: wrong machine", t_bad_elf_machine },
	{ "hostile: PT_LOAD offset+filesz overflow", t_bad_elf_overflow },
	{ "hostile: PT_LOAD filesz beyond file", t_bad_elf_filesz },
	{ "hostile: PT_LOAD memsz < filesz", t_bad_elf_memsz },
	{ "hostile: PT_LOAD paddr wraps", t_bad_elf_paddr_wrap },
	{ "hostile: PT_LOAD outside RAM", t_bad_elf_outside_ram },
	{ "hostile: PT_LOAD past the end of RAM", t_bad_elf_straddle },
	{ "hostile: PT_LOAD into low memory", t_bad_elf_low },
	{ "hostile: note namesz bogus", t_bad_elf_note_namesz },
	{ "hostile: note descsz bogus", t_bad_elf_note_descsz },
	{ "hostile: PVH note of 3 bytes", t_bad_elf_note_desc3 },
	{ "hostile: bogus note in a section", t_bad_elf_note_section },
	{ "hostile: note segment beyond file", t_bad_elf_note_segment },
	{ "hostile: no PVH note", t_bad_elf_no_note },
	{ "hostile: no PVH note, wild section table",
	    t_bad_elf_no_note_wild_sections },
	{ "hostile: PVH entry outside segments", t_bad_elf_entry },
	{ "hostile: bzImage protocol too old", t_bad_bz_old },
	{ "hostile: bzImage without 64-bit entry", t_bad_bz_no64 },
	{ "hostile: bzImage setup_sects huge", t_bad_bz_sects },
	{ "hostile: bzImage kernel_alignment bogus", t_bad_bz_align },
	{ "hostile: bzImage init_size beyond RAM", t_bad_bz_init_size },
	{ "hostile: command line over cmdline_size", t_bad_bz_cmdline_size },
	{ "hostile: command line too long", t_bad_cmdline },
	{ "hostile: initrd too big", t_bad_initrd },
	{ "hostile: empty, garbage, directory, missing kernel", t_bad_files },
	{ "MP table, 1 CPU", t_mptable_1 },
	{ "MP table, 8 CPUs", t_mptable_8 },
	{ "MP table, bad CPU counts", t_mptable_bad },
	{ "4 GiB RAM: e820 with low and high RAM", t_high_memory },
	{ "adjacent gmem regions merge in the memory map", t_split_regions },
	{ "real kernels on this machine load", t_real_kernels },
};

/* Run the cases in a private temporary directory. */
int
main(void)
{
	int	rc;

	log_init("boot_test", LOG_NORMAL);
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	rc = tap_run(cases, ARRAY_SIZE(cases), 120);
	/* Best effort: remove the files the cases left. */
	{
		glob_t	gl;
		char	*pat;
		size_t	i;

		xasprintf(&pat, "%s/*", tmpdir);
		if (glob(pat, 0, NULL, &gl) == 0) {
			for (i = 0; i < gl.gl_pathc; i++)
				unlink(gl.gl_pathv[i]);
			globfree(&gl);
		}
		free(pat);
		rmdir(tmpdir);
	}
	return rc;
}
