/*
 * The binary layouts of the boot ABIs smx writes into guest memory: the
 * Linux zero page (Documentation/x86/boot.rst, zero-page.rst), the PVH
 * hvm_start_info (Xen public/arch-x86/hvm/start_info.h) and the Intel MP
 * spec 1.4 tables.  Private to core/boot.c, core/mptable.c and their test.
 * Every structure is little-endian and packed exactly as the ABI says;
 * the static asserts pin the offsets the documents give.
 */
#ifndef SMX_BOOT_IMPL_H
#define SMX_BOOT_IMPL_H

#include <stddef.h>
#include <stdint.h>

/* PVH: Xen ELF note carrying the 32-bit entry (elfnote.h, value 18). */
#define PVH_NOTE_NAME		"Xen"
#define PVH_NOTE_PHYS32_ENTRY	18

/* hvm_start_info, version 1 (start_info.h). */
#define HVM_START_MAGIC		0x336ec578
#define HVM_START_VERSION	1

struct hvm_start_info {
	uint32_t	magic;
	uint32_t	version;
	uint32_t	flags;
	uint32_t	nr_modules;
	uint64_t	modlist_paddr;
	uint64_t	cmdline_paddr;
	uint64_t	rsdp_paddr;
	uint64_t	memmap_paddr;	/* version 1 */
	uint32_t	memmap_entries;
	uint32_t	reserved;
};
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info");

struct hvm_modlist_entry {
	uint64_t	paddr;
	uint64_t	size;
	uint64_t	cmdline_paddr;
	uint64_t	reserved;
};
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "hvm_modlist_entry");

struct hvm_memmap_entry {
	uint64_t	addr;
	uint64_t	size;
	uint32_t	type;		/* E820_* */
	uint32_t	reserved;
};
_Static_assert(sizeof(struct hvm_memmap_entry) == 24, "hvm_memmap_entry");

/* e820 types (ACPI address range types; the same numbers in both ABIs). */
#define E820_RAM		1
#define E820_RESERVED		2

/* The zero page can hold this many e820 entries (zero-page.rst 2D0/A00). */
#define E820_MAX_ZEROPAGE	128

/* boot.rst "The Real-Mode Kernel Header", offsets 0x1f1..0x26b. */
struct bp_setup_header {
	uint8_t		setup_sects;		/* 0x1f1 */
	uint16_t	root_flags;
	uint32_t	syssize;
	uint16_t	ram_size;
	uint16_t	vid_mode;
	uint16_t	root_dev;
	uint16_t	boot_flag;		/* 0x1fe: 0xaa55 */
	uint16_t	jump;			/* 0x200 */
	uint32_t	header;			/* 0x202: "HdrS" */
	uint16_t	version;		/* 0x206 */
	uint32_t	realmode_swtch;
	uint16_t	start_sys_seg;
	uint16_t	kernel_version;
	uint8_t		type_of_loader;		/* 0x210 */
	uint8_t		loadflags;		/* 0x211 */
	uint16_t	setup_move_size;
	uint32_t	code32_start;		/* 0x214 */
	uint32_t	ramdisk_image;		/* 0x218 */
	uint32_t	ramdisk_size;		/* 0x21c */
	uint32_t	bootsect_kludge;
	uint16_t	heap_end_ptr;		/* 0x224 */
	uint8_t		ext_loader_ver;
	uint8_t		ext_loader_type;
	uint32_t	cmd_line_ptr;		/* 0x228 */
	uint32_t	initrd_addr_max;	/* 0x22c */
	uint32_t	kernel_alignment;	/* 0x230 */
	uint8_t		relocatable_kernel;	/* 0x234 */
	uint8_t		min_alignment;
	uint16_t	xloadflags;		/* 0x236 */
	uint32_t	cmdline_size;		/* 0x238 */
	uint32_t	hardware_subarch;
	uint64_t	hardware_subarch_data;
	uint32_t	payload_offset;
	uint32_t	payload_length;
	uint64_t	setup_data;
	uint64_t	pref_address;		/* 0x258 */
	uint32_t	init_size;		/* 0x260 */
	uint32_t	handover_offset;
	uint32_t	kernel_info_offset;
} __attribute__((packed));

#define BP_HDR_OFFSET		0x1f1
#define BP_HDR_MAGIC		0x53726448	/* "HdrS" at 0x202 */
#define BP_LOADED_HIGH		0x01		/* loadflags bit 0 */
#define BP_CAN_USE_HEAP		0x80		/* loadflags bit 7 */
#define BP_XLF_KERNEL_64	0x0001		/* xloadflags bit 0 */
#define BP_LOADER_UNDEFINED	0xff		/* type_of_loader: no ID */

_Static_assert(offsetof(struct bp_setup_header, header) == 0x202 - 0x1f1,
    "setup_header.header");
_Static_assert(offsetof(struct bp_setup_header, cmd_line_ptr) ==
    0x228 - 0x1f1, "setup_header.cmd_line_ptr");
_Static_assert(offsetof(struct bp_setup_header, init_size) == 0x260 - 0x1f1,
    "setup_header.init_size");
_Static_assert(sizeof(struct bp_setup_header) == 0x26c - 0x1f1,
    "setup_header size");

struct bp_e820_entry {
	uint64_t	addr;
	uint64_t	size;
	uint32_t	type;
} __attribute__((packed));

/* The zero page, with only the fields smx fills named (zero-page.rst). */
struct boot_params {
	uint8_t			_pad0[0xc0];
	uint32_t		ext_ramdisk_image;	/* 0x0c0 */
	uint32_t		ext_ramdisk_size;	/* 0x0c4 */
	uint32_t		ext_cmd_line_ptr;	/* 0x0c8 */
	uint8_t			_pad1[0x1e8 - 0xcc];
	uint8_t			e820_entries;		/* 0x1e8 */
	uint8_t			_pad2[0x1f1 - 0x1e9];
	struct bp_setup_header	hdr;			/* 0x1f1 */
	uint8_t			_pad3[0x2d0 - 0x26c];
	struct bp_e820_entry	e820[E820_MAX_ZEROPAGE];	/* 0x2d0 */
	uint8_t			_pad4[0x1000 - 0xcd0];
} __attribute__((packed));

_Static_assert(offsetof(struct boot_params, e820_entries) == 0x1e8,
    "boot_params.e820_entries");
_Static_assert(offsetof(struct boot_params, hdr) == 0x1f1, "boot_params.hdr");
_Static_assert(offsetof(struct boot_params, e820) == 0x2d0,
    "boot_params.e820_table");
_Static_assert(sizeof(struct boot_params) == 4096, "boot_params size");

/* Intel MP spec 1.4, 4.1: the floating pointer structure. */
struct mpf_intel {
	char		signature[4];	/* "_MP_" */
	uint32_t	physptr;
	uint8_t		length;		/* in 16-byte paragraphs: 1 */
	uint8_t		spec_rev;	/* 4 = version 1.4 */
	uint8_t		checksum;
	uint8_t		feature[5];
} __attribute__((packed));
_Static_assert(sizeof(struct mpf_intel) == 16, "mpf_intel");

/* MP spec 4.2: the configuration table header. */
struct mpc_table {
	char		signature[4];	/* "PCMP" */
	uint16_t	length;		/* header + base entries */
	uint8_t		spec_rev;
	uint8_t		checksum;
	char		oem[8];
	char		product[12];
	uint32_t	oem_ptr;
	uint16_t	oem_size;
	uint16_t	entry_count;
	uint32_t	lapic;
	uint16_t	ext_length;
	uint8_t		ext_checksum;
	uint8_t		reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct mpc_table) == 44, "mpc_table");

/* MP spec 4.3: base table entry types. */
#define MP_PROCESSOR		0
#define MP_BUS			1
#define MP_IOAPIC		2
#define MP_INTSRC		3
#define MP_LINTSRC		4

struct mpc_cpu {
	uint8_t		type;
	uint8_t		apic_id;
	uint8_t		apic_ver;
	uint8_t		flags;		/* MPC_CPU_* */
	uint32_t	signature;	/* CPUID(1).EAX */
	uint32_t	features;	/* CPUID(1).EDX */
	uint32_t	reserved[2];
} __attribute__((packed));
_Static_assert(sizeof(struct mpc_cpu) == 20, "mpc_cpu");

#define MPC_CPU_ENABLED		0x01
#define MPC_CPU_BSP		0x02

struct mpc_bus {
	uint8_t		type;
	uint8_t		bus_id;
	char		bus_type[6];	/* "ISA   " */
} __attribute__((packed));
_Static_assert(sizeof(struct mpc_bus) == 8, "mpc_bus");

struct mpc_ioapic {
	uint8_t		type;
	uint8_t		apic_id;
	uint8_t		apic_ver;
	uint8_t		flags;		/* bit 0: usable */
	uint32_t	addr;
} __attribute__((packed));
_Static_assert(sizeof(struct mpc_ioapic) == 8, "mpc_ioapic");

/* Both I/O (type 3) and local (type 4) interrupt assignment entries. */
struct mpc_intsrc {
	uint8_t		type;
	uint8_t		irq_type;	/* MP_INT_* */
	uint16_t	irq_flags;	/* polarity bits 0-1, trigger 2-3 */
	uint8_t		src_bus;
	uint8_t		src_irq;
	uint8_t		dst_apic;
	uint8_t		dst_pin;	/* IOAPIC INTIN# or LAPIC LINTIN# */
} __attribute__((packed));
_Static_assert(sizeof(struct mpc_intsrc) == 8, "mpc_intsrc");

#define MP_INT_INT		0
#define MP_INT_NMI		1
#define MP_INT_EXTINT		3
#define MP_IRQ_POL_HIGH		0x1
#define MP_IRQ_TRIG_LEVEL	0xc
#define MP_APIC_ALL		0xff

#endif /* SMX_BOOT_IMPL_H */
