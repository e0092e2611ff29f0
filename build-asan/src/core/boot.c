/*
 * Linux boot.  Two ways in: an uncompressed ELF vmlinux through its PVH
 * entry (the Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY, entered in 32-bit
 * protected mode with %ebx = hvm_start_info), or a bzImage through the
 * 64-bit boot protocol (Documentation/x86/boot.rst, "64-bit Boot
 * Protocol": long mode, identity paging, %rsi = boot_params).  Every file
 * byte is untrusted: sizes are checked before anything is read, and all
 * writes into the guest go through gmem.
 */
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/base.h"
#include "core/boot.h"
#include "core/boot_impl.h"
#include "core/layout.h"

#define KERNEL_MAX_SIZE		(256ULL << 20)
#define PAGE_SIZE		4096ULL
#define MiB			(1ULL << 20)
#define GiB			(1ULL << 30)

/* boot.rst: protocol 2.12 added xloadflags and with it XLF_KERNEL_64. */
#define BZ_MIN_VERSION		0x020c
/* boot.rst "64-bit Boot Protocol": the entry is the load address + 0x200. */
#define BZ_ENTRY64_OFFSET	0x200
/* boot.rst: setup_sects of 0 means 4. */
#define BZ_DEFAULT_SETUP_SECTS	4
/* boot.rst: initrd_addr_max unset (pre-2.03) means 0x37ffffff. */
#define BZ_DEFAULT_INITRD_MAX	0x37ffffffULL
/* boot.rst: cmdline_size unset (pre-2.06) means 255. */
#define BZ_DEFAULT_CMDLINE_MAX	255
/* Linux setup stack/heap end as loaders conventionally pass it (boot.rst
 * "heap_end_ptr": offset of the heap end from the setup code - 0x200). */
#define BZ_HEAP_END		0xfe00
/* The zero page has room for the setup header up to the EDD buffer. */
#define BZ_HDR_MAX_END		0x290

/* Page table entry bits (Intel SDM vol. 3, 4.5): present, writable, 2M. */
#define PTE_P			0x001ULL
#define PTE_RW			0x002ULL
#define PTE_PS			0x080ULL

/* Control register and EFER bits (Intel SDM vol. 3, 2.5 and 2.2.1). */
#define CR0_PE			0x00000001ULL
#define CR0_ET			0x00000010ULL
#define CR0_NE			0x00000020ULL
#define CR0_PG			0x80000000ULL
#define CR4_PAE			0x00000020ULL
#define EFER_LME		0x00000100ULL
#define EFER_LMA		0x00000400ULL
/* IA32_APIC_BASE (SDM vol. 3, 10.4.4): BSP flag, global enable. */
#define APIC_BASE_BSP		0x100ULL
#define APIC_BASE_ENABLE	0x800ULL

/*
 * GDT selectors.  The 64-bit protocol fixes __BOOT_CS = 0x10 and
 * __BOOT_DS = 0x18 (boot.rst); PVH leaves them to us, so the 32-bit GDT
 * uses 0x08 / 0x10.  Each GDT ends in a TSS descriptor because VMX
 * refuses to enter a guest whose TR is not a busy TSS.
 */
#define SEL_PVH_CS		0x08
#define SEL_PVH_DS		0x10
#define SEL_PVH_TR		0x18
#define SEL_L64_CS		0x10
#define SEL_L64_DS		0x18
#define SEL_L64_TR		0x20
#define GDT_ENTRIES		6

/* Segment descriptor types (SDM vol. 3, 3.4.5.1 and 3.5). */
#define SEG_CODE_XRA		0xb	/* execute/read, accessed */
#define SEG_DATA_RWA		0x3	/* read/write, accessed */
#define SEG_TSS_BUSY		0xb	/* 32-bit or 64-bit busy TSS */
#define SEG_LDT			0x2
#define TSS_LIMIT		0x67	/* a minimal 104-byte TSS */

#define MEMMAP_MAX		32

/* The machine's memory map: sorted e820-style entries. */
struct memmap {
	struct hvm_memmap_entry	 e[MEMMAP_MAX];
	unsigned		 n;
	uint64_t		 low_top;	/* end of RAM from 1 MiB up */
};

/* What a kernel loader leaves for the common steps. */
struct loadinfo {
	enum boot_mode	 mode;
	uint64_t	 entry;
	uint64_t	 kernel_end;	/* first byte above the kernel */
	uint64_t	 initrd_end;	/* the initrd must end at or below */
	uint64_t	 cmdline_max;	/* bytes, without the NUL */
	uint8_t		 hdr[BZ_HDR_MAX_END - BP_HDR_OFFSET];
	size_t		 hdr_len;	/* bzImage setup header bytes */
};

/* Format a one-line reason into err and return error. */
static int PRINTF(4, 5)
fail(char *err, size_t errlen, int error, const char *fmt, ...)
{
	va_list	ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return error;
}

/* Append [start, end) of the given type to the map if it is not empty. */
static int
memmap_add(struct memmap *mm, uint64_t start, uint64_t end, uint32_t type)
{
	if (end <= start)
		return 0;
	if (mm->n == MEMMAP_MAX)
		return -ENOSPC;
	mm->e[mm->n].addr = start;
	mm->e[mm->n].size = end - start;
	mm->e[mm->n].type = type;
	mm->e[mm->n].reserved = 0;
	mm->n++;
	return 0;
}

/*
 * Describe RAM [a, b): the EBDA and the VGA/ROM hole below 1 MiB are
 * reserved (added once by the caller), and nothing in the MMIO gap
 * below 4 GiB is RAM.
 */
static int
memmap_add_ram(struct memmap *mm, uint64_t a, uint64_t b)
{
	int	error;

	if ((error = memmap_add(mm, a, MIN(b, LAYOUT_EBDA), E820_RAM)) != 0)
		return error;
	if ((error = memmap_add(mm, MAX(a, LAYOUT_HIGHMEM_START),
	    MIN(b, LAYOUT_MMIO_GAP), E820_RAM)) != 0)
		return error;
	return memmap_add(mm, MAX(a, LAYOUT_MMIO_GAP_END), b, E820_RAM);
}

/*
 * Build the memory map from the gmem regions, in address order, adjacent
 * regions merged.  Only the first ram_size bytes of mappings count as RAM
 * (later windows in the gmem, if any, are not memory).
 */
static int
memmap_build(const struct gmem *mem, uint64_t ram_size, struct memmap *mm)
{
	struct gmem_region	r[GMEM_MAX_REGIONS], t;
	uint64_t		budget, a, b;
	unsigned		i, j, n;
	int			error;

	memset(mm, 0, sizeof(*mm));
	n = MIN(mem->nr, GMEM_MAX_REGIONS);
	memcpy(r, mem->r, n * sizeof(r[0]));
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && r[j - 1].gpa > r[j].gpa; j--) {
			t = r[j];
			r[j] = r[j - 1];
			r[j - 1] = t;
		}

	budget = ram_size != 0 ? ram_size : UINT64_MAX;
	for (i = 0; i < n && budget > 0; i = j) {
		a = r[i].gpa;
		b = r[i].gpa + r[i].size;
		for (j = i + 1; j < n && r[j].gpa == b; j++)
			b += r[j].size;
		if (b - a > budget)
			b = a + budget;
		budget -= b - a;
		if ((error = memmap_add_ram(mm, a, b)) != 0)
			return error;
	}
	if ((error = memmap_add(mm, LAYOUT_EBDA, LAYOUT_HIGHMEM_START,
	    E820_RESERVED)) != 0)
		return error;

	/* Sort by address (the reserved entry went in last). */
	for (i = 1; i < mm->n; i++)
		for (j = i; j > 0 && mm->e[j - 1].addr > mm->e[j].addr; j--) {
			struct hvm_memmap_entry	te = mm->e[j];

			mm->e[j] = mm->e[j - 1];
			mm->e[j - 1] = te;
		}
	for (i = 0; i < mm->n; i++)
		if (mm->e[i].type == E820_RAM &&
		    mm->e[i].addr == LAYOUT_HIGHMEM_START)
			mm->low_top = ALIGN_DOWN(mm->e[i].addr + mm->e[i].size,
			    PAGE_SIZE);
	return 0;
}

/*
 * Walk the notes in [p, p + len) looking for XEN_ELFNOTE_PHYS32_ENTRY.
 * Returns -ENOEXEC on a note whose sizes run past the container.
 */
static int
scan_notes(const uint8_t *p, uint64_t len, uint64_t align, uint64_t *entry,
    bool *found)
{
	Elf64_Nhdr	nh;
	uint64_t	off = 0, namesz, descsz, v;
	uint32_t	v32;

	while (len - off >= sizeof(nh)) {
		memcpy(&nh, p + off, sizeof(nh));
		off += sizeof(nh);
		namesz = ALIGN_UP((uint64_t)nh.n_namesz, align);
		descsz = ALIGN_UP((uint64_t)nh.n_descsz, align);
		if (namesz > len - off || nh.n_descsz > len - off - namesz)
			return -ENOEXEC;
		if (nh.n_type == PVH_NOTE_PHYS32_ENTRY &&
		    nh.n_namesz == sizeof(PVH_NOTE_NAME) &&
		    memcmp(p + off, PVH_NOTE_NAME, sizeof(PVH_NOTE_NAME)) == 0) {
			/* Linux emits a pointer-sized value; Xen reads 32 bits. */
			if (nh.n_descsz == 4) {
				memcpy(&v32, p + off + namesz, 4);
				v = v32;
			} else if (nh.n_descsz == 8)
				memcpy(&v, p + off + namesz, 8);
			else
				return -ENOEXEC;
			if (v > UINT32_MAX)
				return -ENOEXEC;
			*entry = v;
			*found = true;
		}
		/* The last note's padding may be cut off by the container. */
		off += namesz + MIN(descsz, len - off - namesz);
	}
	return 0;
}

/* Note alignment: 4 unless the container asks for 8 (gABI "Note Section"). */
static uint64_t
note_align(uint64_t a)
{
	return a == 8 ? 8 : 4;
}

/*
 * Find the PVH entry in the PT_NOTE segments, else in SHT_NOTE sections.
 * Returns 0 (found or not, in *found) or -ENOEXEC with err filled.
 */
static int
elf_find_pvh(const char *path, const uint8_t *img, size_t len,
    const Elf64_Ehdr *eh, uint64_t *entry, bool *found, char *err,
    size_t errlen)
{
	Elf64_Phdr	ph;
	Elf64_Shdr	sh;
	unsigned	i;

	*found = false;
	for (i = 0; i < eh->e_phnum; i++) {
		memcpy(&ph, img + eh->e_phoff + i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_NOTE)
			continue;
		if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
			return fail(err, errlen, -ENOEXEC, "%s: ELF note segment "
			    "%u lies outside the file", path, i);
		if (scan_notes(img + ph.p_offset, ph.p_filesz,
		    note_align(ph.p_align), entry, found) != 0)
			return fail(err, errlen, -ENOEXEC, "%s: ELF note segment "
			    "%u holds a malformed note", path, i);
		if (*found)
			return 0;
	}

	/* Section headers are optional: an unusable table is just skipped. */
	if (eh->e_shoff == 0 || eh->e_shentsize != sizeof(sh) ||
	    eh->e_shoff > len ||
	    (uint64_t)eh->e_shnum * sizeof(sh) > len - eh->e_shoff)
		return 0;
	for (i = 0; i < eh->e_shnum; i++) {
		memcpy(&sh, img + eh->e_shoff + i * sizeof(sh), sizeof(sh));
		if (sh.sh_type != SHT_NOTE)
			continue;
		if (sh.sh_offset > len || sh.sh_size > len - sh.sh_offset)
			return fail(err, errlen, -ENOEXEC, "%s: ELF note section "
			    "%u lies outside the file", path, i);
		if (scan_notes(img + sh.sh_offset, sh.sh_size,
		    note_align(sh.sh_addralign), entry, found) != 0)
			return fail(err, errlen, -ENOEXEC, "%s: ELF note section "
			    "%u holds a malformed note", path, i);
		if (*found)
			return 0;
	}
	return 0;
}

/*
 * Load an ELF64 x86-64 vmlinux at the physical addresses of its PT_LOAD
 * segments.  Everything is validated before the first byte is copied.
 */
static int
elf_load(const struct gmem *mem, const char *path, const uint8_t *img,
    size_t len, struct loadinfo *li, char *err, size_t errlen)
{
	Elf64_Ehdr	 eh;
	Elf64_Phdr	 ph;
	uint64_t	 entry = 0, end = 0;
	unsigned	 i, nload = 0;
	bool		 found, entry_ok = false;
	uint8_t		*dst;
	int		 error;

	if (len < sizeof(eh))
		return fail(err, errlen, -ENOEXEC, "%s: truncated ELF header "
		    "(%zu bytes)", path, len);
	memcpy(&eh, img, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_ident[EI_VERSION] != EV_CURRENT ||
	    eh.e_machine != EM_X86_64)
		return fail(err, errlen, -ENOEXEC, "%s: not an x86-64 ELF64 "
		    "little-endian file", path);
	if (eh.e_type != ET_EXEC)
		return fail(err, errlen, -ENOEXEC, "%s: ELF type %u is not an "
		    "executable", path, eh.e_type);
	if (eh.e_phentsize != sizeof(ph) || eh.e_phnum == 0 ||
	    eh.e_phnum == PN_XNUM || eh.e_phoff > len ||
	    (uint64_t)eh.e_phnum * sizeof(ph) > len - eh.e_phoff)
		return fail(err, errlen, -ENOEXEC, "%s: ELF program header "
		    "table (offset %#llx, %u entries) lies outside the file",
		    path, (unsigned long long)eh.e_phoff, eh.e_phnum);

	if ((error = elf_find_pvh(path, img, len, &eh, &entry, &found, err,
	    errlen)) != 0)
		return error;
	if (!found)
		return fail(err, errlen, -ENOEXEC, "%s: ELF kernel without a "
		    "PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build it with "
		    "CONFIG_PVH=y or pass a bzImage", path);

	for (i = 0; i < eh.e_phnum; i++) {
		memcpy(&ph, img + eh.e_phoff + i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
			continue;
		if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
			return fail(err, errlen, -ENOEXEC, "%s: ELF segment %u "
			    "lies outside the file", path, i);
		if (ph.p_memsz < ph.p_filesz ||
		    ph.p_memsz > UINT64_MAX - ph.p_paddr)
			return fail(err, errlen, -ENOEXEC, "%s: ELF segment %u "
			    "has inconsistent sizes", path, i);
		/* Below 1 MiB live the boot tables, the EBDA and the ROM hole. */
		if (ph.p_paddr < LAYOUT_HIGHMEM_START)
			return fail(err, errlen, -ENOEXEC, "%s: ELF segment %u "
			    "at %#llx overlaps the boot data below 1 MiB", path,
			    i, (unsigned long long)ph.p_paddr);
		if (gmem_ptr(mem, ph.p_paddr, ph.p_memsz) == NULL)
			return fail(err, errlen, -ENOMEM, "%s: ELF segment %u "
			    "[%#llx, %#llx) lies outside guest RAM; give the VM "
			    "more memory", path, i,
			    (unsigned long long)ph.p_paddr,
			    (unsigned long long)(ph.p_paddr + ph.p_memsz));
		if (entry >= ph.p_paddr && entry - ph.p_paddr < ph.p_memsz)
			entry_ok = true;
		end = MAX(end, ph.p_paddr + ph.p_memsz);
		nload++;
	}
	if (nload == 0)
		return fail(err, errlen, -ENOEXEC, "%s: ELF file has nothing "
		    "to load", path);
	if (!entry_ok)
		return fail(err, errlen, -ENOEXEC, "%s: PVH entry %#llx is not "
		    "inside a loaded segment", path, (unsigned long long)entry);

	for (i = 0; i < eh.e_phnum; i++) {
		memcpy(&ph, img + eh.e_phoff + i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
			continue;
		dst = gmem_ptr(mem, ph.p_paddr, ph.p_memsz);
		memcpy(dst, img + ph.p_offset, ph.p_filesz);
		memset(dst + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
	}

	li->mode = BOOT_PVH;
	li->entry = entry;
	li->kernel_end = end;
	li->initrd_end = UINT64_MAX;
	li->cmdline_max = LAYOUT_CMDLINE_MAX - 1;
	return 0;
}

/* Whether img looks like a bzImage ("HdrS" at 0x202, boot.rst). */
static bool
is_bzimage(const uint8_t *img, size_t len)
{
	uint32_t	magic;

	if (len < BP_HDR_OFFSET + sizeof(struct bp_setup_header))
		return false;
	memcpy(&magic, img + 0x202, sizeof(magic));
	return magic == BP_HDR_MAGIC;
}

/*
 * Load the protected-mode part of a bzImage at LAYOUT_KERNEL and keep its
 * setup header for the zero page.
 */
static int
bz_load(const struct gmem *mem, const struct memmap *mm, const char *path,
    const uint8_t *img, size_t len, struct loadinfo *li, char *err,
    size_t errlen)
{
	struct bp_setup_header	hdr;
	uint64_t		setup_len, kernel_len, load, rt, rt_end, align;
	unsigned		sects;
	size_t			hdr_end;

	memcpy(&hdr, img + BP_HDR_OFFSET, sizeof(hdr));
	if (hdr.version < BZ_MIN_VERSION)
		return fail(err, errlen, -ENOEXEC, "%s: bzImage boot protocol "
		    "%u.%02u too old, need 2.12", path, hdr.version >> 8,
		    hdr.version & 0xff);
	if ((hdr.xloadflags & BP_XLF_KERNEL_64) == 0)
		return fail(err, errlen, -ENOEXEC, "%s: bzImage has no 64-bit "
		    "entry point (XLF_KERNEL_64)", path);

	sects = hdr.setup_sects != 0 ? hdr.setup_sects : BZ_DEFAULT_SETUP_SECTS;
	setup_len = (uint64_t)(sects + 1) * 512;
	if (setup_len >= len)
		return fail(err, errlen, -ENOEXEC, "%s: bzImage setup_sects %u "
		    "runs past the end of the file (%zu bytes)", path, sects,
		    len);
	kernel_len = len - setup_len;

	/* boot.rst: the header ends at 0x202 + the byte at 0x201. */
	hdr_end = 0x202 + (size_t)img[0x201];
	hdr_end = MIN(hdr_end, (size_t)BZ_HDR_MAX_END);
	hdr_end = MIN(hdr_end, len);
	li->hdr_len = hdr_end - BP_HDR_OFFSET;
	memcpy(li->hdr, img + BP_HDR_OFFSET, li->hdr_len);

	/*
	 * boot.rst "init_size": the kernel runs from its load address
	 * aligned up to kernel_alignment if relocatable, else from
	 * pref_address, and needs init_size bytes there.
	 */
	load = LAYOUT_KERNEL;
	if (hdr.relocatable_kernel) {
		align = hdr.kernel_alignment;
		if (align == 0 || (align & (align - 1)) != 0)
			return fail(err, errlen, -ENOEXEC, "%s: bzImage "
			    "kernel_alignment %#llx is not a power of two", path,
			    (unsigned long long)align);
		rt = ALIGN_UP(load, align);
	} else
		rt = hdr.pref_address != 0 ? hdr.pref_address : load;
	if (rt > LAYOUT_MMIO_GAP || rt < load)
		return fail(err, errlen, -ENOEXEC, "%s: bzImage wants to run "
		    "at %#llx, outside low memory", path,
		    (unsigned long long)rt);
	rt_end = rt + hdr.init_size;
	if (rt_end > mm->low_top || load + kernel_len > mm->low_top)
		return fail(err, errlen, -ENOMEM, "%s: the kernel needs memory "
		    "up to %llu MiB, the VM has %llu MiB; give it more memory",
		    path, (unsigned long long)
		    ((MAX(rt_end, load + kernel_len) + MiB - 1) / MiB),
		    (unsigned long long)(mm->low_top / MiB));
	if (gmem_write(mem, load, img + setup_len, kernel_len) != 0)
		return fail(err, errlen, -ENOMEM, "%s: the kernel does not fit "
		    "in guest RAM at %#llx", path, (unsigned long long)load);

	li->mode = BOOT_LINUX64;
	li->entry = load + BZ_ENTRY64_OFFSET;
	li->kernel_end = MAX(load + kernel_len, rt_end);
	li->initrd_end = (hdr.initrd_addr_max != 0 ? hdr.initrd_addr_max :
	    BZ_DEFAULT_INITRD_MAX) + 1ULL;
	li->cmdline_max = hdr.version >= 0x0206 ? hdr.cmdline_size :
	    BZ_DEFAULT_CMDLINE_MAX;
	return 0;
}

/*
 * Read the initrd and place it page aligned at the top of low RAM, above
 * the kernel.  Sets *addr and *size (0 when there is none).
 */
static int
initrd_load(const struct gmem *mem, const struct memmap *mm,
    const struct loadinfo *li, const char *path, uint64_t *addr,
    uint64_t *size, char *err, size_t errlen)
{
	uint8_t		*buf;
	size_t		 len;
	uint64_t	 top, floor, at;
	int		 error;

	*addr = *size = 0;
	if (path == NULL)
		return 0;
	top = MIN(mm->low_top, LAYOUT_MMIO_GAP);
	top = ALIGN_DOWN(MIN(top, li->initrd_end), PAGE_SIZE);
	floor = ALIGN_UP(li->kernel_end, PAGE_SIZE);
	if ((error = read_file(path, top, &buf, &len)) != 0) {
		if (error == -EFBIG)
			return fail(err, errlen, -EFBIG, "%s: initrd is larger "
			    "than the guest's %llu MiB of low memory; give the "
			    "VM more memory", path,
			    (unsigned long long)(top / MiB));
		return fail(err, errlen, error, "%s: cannot read initrd: %s",
		    path, strerror(-error));
	}
	if (len > top || ALIGN_DOWN(top - len, PAGE_SIZE) < floor) {
		error = fail(err, errlen, -EFBIG, "%s: initrd of %zu KiB does "
		    "not fit between the kernel's end (%#llx) and %#llx; give "
		    "the VM more memory", path, len / 1024,
		    (unsigned long long)floor, (unsigned long long)top);
		goto out_free;
	}
	at = ALIGN_DOWN(top - len, PAGE_SIZE);
	if (gmem_write(mem, at, buf, len) != 0) {
		error = fail(err, errlen, -EFAULT, "%s: initrd at %#llx is not "
		    "in guest RAM", path, (unsigned long long)at);
		goto out_free;
	}
	log_debug("initrd %s: %zu bytes at %#llx", path, len,
	    (unsigned long long)at);
	*addr = at;
	*size = len;
	error = 0;
out_free:
	free(buf);
	return error;
}

/* Encode a flat segment descriptor (SDM vol. 3, 3.4.5). */
static uint64_t
gdt_entry(uint64_t base, uint64_t limit, unsigned type, unsigned s,
    unsigned l, unsigned db, unsigned g)
{
	return (limit & 0xffff) |
	    ((base & 0xffffff) << 16) |
	    ((uint64_t)(type | (s << 4) | (1U << 7)) << 40) |	/* P=1, DPL 0 */
	    (((limit >> 16) & 0xf) << 48) |
	    ((uint64_t)((l << 1) | (db << 2) | (g << 3)) << 52) |
	    (((base >> 24) & 0xff) << 56);
}

/* The GDT matching the segment state boot_vcpu_state() loads. */
static int
gdt_write(const struct gmem *mem, enum boot_mode mode)
{
	uint64_t	gdt[GDT_ENTRIES];

	memset(gdt, 0, sizeof(gdt));
	if (mode == BOOT_PVH) {
		gdt[SEL_PVH_CS / 8] = gdt_entry(0, 0xfffff, SEG_CODE_XRA, 1, 0,
		    1, 1);
		gdt[SEL_PVH_DS / 8] = gdt_entry(0, 0xfffff, SEG_DATA_RWA, 1, 0,
		    1, 1);
		gdt[SEL_PVH_TR / 8] = gdt_entry(0, TSS_LIMIT, SEG_TSS_BUSY, 0,
		    0, 0, 0);
	} else {
		gdt[SEL_L64_CS / 8] = gdt_entry(0, 0xfffff, SEG_CODE_XRA, 1, 1,
		    0, 1);
		gdt[SEL_L64_DS / 8] = gdt_entry(0, 0xfffff, SEG_DATA_RWA, 1, 0,
		    1, 1);
		/* A 64-bit TSS descriptor takes two slots; base 63:32 = 0. */
		gdt[SEL_L64_TR / 8] = gdt_entry(0, TSS_LIMIT, SEG_TSS_BUSY, 0,
		    0, 0, 0);
	}
	return gmem_write(mem, LAYOUT_GDT, gdt, sizeof(gdt));
}

/* Identity-map the first 4 GiB with 2 MiB pages (SDM vol. 3, 4.5). */
static int
page_tables_write(const struct gmem *mem)
{
	uint64_t	pml4[512], pdpt[512], *pd;
	unsigned	i;
	int		error;

	memset(pml4, 0, sizeof(pml4));
	memset(pdpt, 0, sizeof(pdpt));
	pd = xcalloc(4 * 512, sizeof(*pd));
	pml4[0] = LAYOUT_PDPT | PTE_P | PTE_RW;
	for (i = 0; i < 4; i++)
		pdpt[i] = (LAYOUT_PD + i * PAGE_SIZE) | PTE_P | PTE_RW;
	for (i = 0; i < 4 * 512; i++)
		pd[i] = ((uint64_t)i << 21) | PTE_P | PTE_RW | PTE_PS;
	if ((error = gmem_write(mem, LAYOUT_PML4, pml4, sizeof(pml4))) == 0 &&
	    (error = gmem_write(mem, LAYOUT_PDPT, pdpt, sizeof(pdpt))) == 0)
		error = gmem_write(mem, LAYOUT_PD, pd, 4 * 512 * sizeof(*pd));
	free(pd);
	return error;
}

/* Write hvm_start_info, the module list and the memory map (PVH). */
static int
start_info_write(const struct gmem *mem, const struct memmap *mm,
    uint64_t initrd, uint64_t initrd_size)
{
	uint8_t				buf[LAYOUT_START_INFO_END -
					    LAYOUT_START_INFO];
	struct hvm_start_info		si;
	struct hvm_modlist_entry	mod;
	size_t				off;

	memset(buf, 0, sizeof(buf));
	memset(&si, 0, sizeof(si));
	si.magic = HVM_START_MAGIC;
	si.version = HVM_START_VERSION;
	si.cmdline_paddr = LAYOUT_CMDLINE;
	off = sizeof(si);
	if (initrd_size != 0) {
		memset(&mod, 0, sizeof(mod));
		mod.paddr = initrd;
		mod.size = initrd_size;
		memcpy(buf + off, &mod, sizeof(mod));
		si.nr_modules = 1;
		si.modlist_paddr = LAYOUT_START_INFO + off;
		off += sizeof(mod);
	}
	if (mm->n * sizeof(mm->e[0]) > sizeof(buf) - off)
		return -ENOSPC;
	memcpy(buf + off, mm->e, mm->n * sizeof(mm->e[0]));
	si.memmap_paddr = LAYOUT_START_INFO + off;
	si.memmap_entries = mm->n;
	off += mm->n * sizeof(mm->e[0]);
	memcpy(buf, &si, sizeof(si));
	return gmem_write(mem, LAYOUT_START_INFO, buf, off);
}

/* Write the zero page for the 64-bit boot protocol (zero-page.rst). */
static int
boot_params_write(const struct gmem *mem, const struct memmap *mm,
    const struct loadinfo *li, uint64_t initrd, uint64_t initrd_size)
{
	struct boot_params	*bp;
	unsigned		 i;
	int			 error;

	/* boot.rst: start from zeros, then the header as in the file. */
	bp = xcalloc(1, sizeof(*bp));
	memcpy((uint8_t *)bp + BP_HDR_OFFSET, li->hdr, li->hdr_len);
	bp->hdr.type_of_loader = BP_LOADER_UNDEFINED;
	bp->hdr.loadflags |= BP_LOADED_HIGH | BP_CAN_USE_HEAP;
	bp->hdr.heap_end_ptr = BZ_HEAP_END;
	bp->hdr.cmd_line_ptr = (uint32_t)LAYOUT_CMDLINE;
	bp->ext_cmd_line_ptr = (uint32_t)(LAYOUT_CMDLINE >> 32);
	bp->hdr.ramdisk_image = (uint32_t)initrd;
	bp->hdr.ramdisk_size = (uint32_t)initrd_size;
	bp->ext_ramdisk_image = (uint32_t)(initrd >> 32);
	bp->ext_ramdisk_size = (uint32_t)(initrd_size >> 32);
	for (i = 0; i < mm->n && i < E820_MAX_ZEROPAGE; i++) {
		bp->e820[i].addr = mm->e[i].addr;
		bp->e820[i].size = mm->e[i].size;
		bp->e820[i].type = mm->e[i].type;
	}
	bp->e820_entries = i;
	error = gmem_write(mem, LAYOUT_BOOT_PARAMS, bp, sizeof(*bp));
	free(bp);
	return error;
}

/* Load kernel, command line and initrd, then the boot tables. */
int
boot_load(const struct gmem *mem, const struct boot_spec *spec,
    struct boot_entry *out, char *err, size_t errlen)
{
	struct memmap	 mm;
	struct loadinfo	 li;
	const char	*cmdline, *path;
	uint8_t		*img;
	size_t		 len, cmdlen;
	uint64_t	 initrd, initrd_size;
	int		 error;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	memset(out, 0, sizeof(*out));
	if (spec->kernel == NULL)
		return fail(err, errlen, -EINVAL, "no kernel given");
	path = spec->kernel;
	if (spec->ncpus == 0 || spec->ncpus > HV_MAX_VCPUS)
		return fail(err, errlen, -EINVAL, "%u CPUs requested, smx "
		    "supports 1 to %d", spec->ncpus, HV_MAX_VCPUS);
	cmdline = spec->cmdline != NULL ? spec->cmdline : "";
	cmdlen = strlen(cmdline);
	if (cmdlen >= LAYOUT_CMDLINE_MAX)
		return fail(err, errlen, -E2BIG, "kernel command line is %zu "
		    "bytes, the limit is %d", cmdlen, LAYOUT_CMDLINE_MAX - 1);

	if ((error = memmap_build(mem, spec->ram_size, &mm)) != 0)
		return fail(err, errlen, error, "guest memory has too many "
		    "regions for the memory map");
	if (gmem_ptr(mem, 0, LAYOUT_LOWMEM_END) == NULL ||
	    mm.low_top <= LAYOUT_HIGHMEM_START)
		return fail(err, errlen, -EINVAL, "guest RAM must start at 0 "
		    "and reach past 1 MiB to boot Linux");

	if ((error = read_file(path, KERNEL_MAX_SIZE, &img, &len)) != 0)
		return fail(err, errlen, error, "%s: cannot read kernel: %s",
		    path, strerror(-error));
	memset(&li, 0, sizeof(li));
	if (len >= SELFMAG && memcmp(img, ELFMAG, SELFMAG) == 0) {
		error = elf_load(mem, path, img, len, &li, err, errlen);
		out->format = "vmlinux (PVH)";
	} else if (is_bzimage(img, len)) {
		error = bz_load(mem, &mm, path, img, len, &li, err, errlen);
		out->format = "bzImage";
	} else
		error = fail(err, errlen, -ENOEXEC, "%s: not a bzImage or an "
		    "ELF vmlinux with a PVH entry note", path);
	free(img);
	if (error != 0)
		goto err_out;
	log_debug("kernel %s: %s, entry %#llx, ends at %#llx", path,
	    out->format, (unsigned long long)li.entry,
	    (unsigned long long)li.kernel_end);

	if (cmdlen > li.cmdline_max) {
		error = fail(err, errlen, -E2BIG, "kernel command line is %zu "
		    "bytes, %s accepts at most %llu", cmdlen, path,
		    (unsigned long long)li.cmdline_max);
		goto err_out;
	}
	if ((error = gmem_write(mem, LAYOUT_CMDLINE, cmdline,
	    cmdlen + 1)) != 0) {
		error = fail(err, errlen, error, "cannot write the command "
		    "line at %#llx", LAYOUT_CMDLINE);
		goto err_out;
	}

	if ((error = initrd_load(mem, &mm, &li, spec->initrd, &initrd,
	    &initrd_size, err, errlen)) != 0)
		goto err_out;

	if (li.mode == BOOT_PVH) {
		error = start_info_write(mem, &mm, initrd, initrd_size);
		out->arg = LAYOUT_START_INFO;
	} else {
		if ((error = boot_params_write(mem, &mm, &li, initrd,
		    initrd_size)) == 0)
			error = page_tables_write(mem);
		out->arg = LAYOUT_BOOT_PARAMS;
	}
	if (error == 0)
		error = gdt_write(mem, li.mode);
	if (error != 0) {
		error = fail(err, errlen, error, "cannot write the boot tables "
		    "into guest memory: %s", strerror(-error));
		goto err_out;
	}
	if ((error = mptable_write(mem, spec->ncpus)) != 0) {
		error = fail(err, errlen, error, "cannot write the MP table: "
		    "%s", strerror(-error));
		goto err_out;
	}
	out->mode = li.mode;
	out->entry = li.entry;
	return 0;

err_out:
	memset(out, 0, sizeof(*out));
	return error;
}

/* Fill a present, flat segment register. */
static void
seg_flat(struct hv_segment *s, uint16_t sel, uint8_t type, uint8_t l,
    uint8_t db)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->s = 1;
	s->l = l;
	s->db = db;
	s->g = 1;
}

/* Fill TR with a busy TSS at 0, as the GDT written by boot_load says. */
static void
seg_tss(struct hv_segment *s, uint16_t sel)
{
	memset(s, 0, sizeof(*s));
	s->limit = TSS_LIMIT;
	s->selector = sel;
	s->type = SEG_TSS_BUSY;
	s->present = 1;
}

/* The boot vCPU's registers for the entry boot_load() chose. */
void
boot_vcpu_state(const struct boot_entry *entry, struct hv_regs *regs,
    struct hv_sregs *sregs)
{
	uint16_t	cs, ds;

	memset(regs, 0, sizeof(*regs));
	memset(sregs, 0, sizeof(*sregs));
	/* Bit 1 of RFLAGS is reserved and reads as 1 (SDM vol. 1, 3.4.3). */
	regs->rflags = 0x2;
	regs->rip = entry->entry;
	sregs->gdt.base = LAYOUT_GDT;
	sregs->gdt.limit = GDT_ENTRIES * 8 - 1;
	sregs->ldt.type = SEG_LDT;
	sregs->ldt.unusable = 1;
	/* KVM_SET_SREGS also sets IA32_APIC_BASE: keep the xAPIC enabled. */
	sregs->apic_base = LAYOUT_LAPIC | APIC_BASE_ENABLE | APIC_BASE_BSP;

	if (entry->mode == BOOT_PVH) {
		/* PVH ABI (xen docs/misc/pvh.pandoc): flat 32-bit, no paging. */
		regs->rbx = entry->arg;
		sregs->cr0 = CR0_PE;
		cs = SEL_PVH_CS;
		ds = SEL_PVH_DS;
		seg_flat(&sregs->cs, cs, SEG_CODE_XRA, 0, 1);
		seg_tss(&sregs->tr, SEL_PVH_TR);
	} else {
		/* boot.rst "64-bit Boot Protocol": long mode, identity map. */
		regs->rsi = entry->arg;
		sregs->cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
		sregs->cr3 = LAYOUT_PML4;
		sregs->cr4 = CR4_PAE;
		sregs->efer = EFER_LME | EFER_LMA;
		cs = SEL_L64_CS;
		ds = SEL_L64_DS;
		seg_flat(&sregs->cs, cs, SEG_CODE_XRA, 1, 0);
		seg_tss(&sregs->tr, SEL_L64_TR);
	}
	seg_flat(&sregs->ds, ds, SEG_DATA_RWA, 0, 1);
	sregs->es = sregs->fs = sregs->gs = sregs->ss = sregs->ds;
}
