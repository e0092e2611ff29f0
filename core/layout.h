/*
 * The guest physical memory map of an smx x86-64 machine.  Everything the
 * VMM writes into guest memory before the first instruction has its place
 * here; nothing else in the tree hard-codes a guest address.
 *
 *   0x00000000  real-mode IVT / BDA (left zero)
 *   0x00000500  GDT used for the 64-bit Linux entry
 *   0x00006000  hvm_start_info (PVH) followed by its memmap table
 *   0x00007000  boot_params "zero page" (bzImage 64-bit entry)
 *   0x00008000  free for the guest (the test guest's AP trampoline)
 *   0x00009000  identity page tables for the 64-bit entry (PML4, PDPT,
 *               four PDs: first 4 GiB with 2 MiB pages)
 *   0x00020000  kernel command line (LAYOUT_CMDLINE_MAX bytes)
 *   0x0009fc00  EBDA: the MP floating pointer and MP table (reserved)
 *   0x000a0000  legacy VGA / ROM hole (reserved to 1 MiB)
 *   0x00100000  kernel image (or the ELF's own physical addresses)
 *   ...         RAM up to min(memory, MMIO gap)
 *   0xc0000000  MMIO gap: virtio-mmio windows, IOAPIC, LAPIC, TSS
 *   0x100000000 RAM above 4 GiB when memory exceeds the gap
 *   0x4000000000 virtio-fs DAX windows (256 GiB up), share n at
 *               LAYOUT_DAX_BASE + n * LAYOUT_DAX_STRIDE: above the RAM of
 *               any machine with DAX (vm_create refuses DAX past
 *               LAYOUT_DAX_MAX_RAM_MIB) and, four shares of at most
 *               LAYOUT_DAX_STRIDE each, below 512 GiB (inside 40 physical
 *               address bits).  Not RAM: the e820 map leaves it out.
 */
#ifndef SMX_LAYOUT_H
#define SMX_LAYOUT_H

#define LAYOUT_GDT		0x500ULL
#define LAYOUT_START_INFO	0x6000ULL
#define LAYOUT_START_INFO_END	0x7000ULL
#define LAYOUT_BOOT_PARAMS	0x7000ULL
#define LAYOUT_GUEST_FREE	0x8000ULL
#define LAYOUT_PML4		0x9000ULL
#define LAYOUT_PDPT		0xa000ULL
#define LAYOUT_PD		0xb000ULL	/* 4 pages */
#define LAYOUT_CMDLINE		0x20000ULL
#define LAYOUT_CMDLINE_MAX	4096
#define LAYOUT_EBDA		0x9fc00ULL
#define LAYOUT_LOWMEM_END	0xa0000ULL
#define LAYOUT_HIGHMEM_START	0x100000ULL	/* 1 MiB */
#define LAYOUT_KERNEL		0x100000ULL

#define LAYOUT_MMIO_GAP		0xc0000000ULL
#define LAYOUT_MMIO_GAP_END	0x100000000ULL
#define LAYOUT_VIRTIO_MMIO	0xd0000000ULL	/* one 4 KiB window each */
#define LAYOUT_VIRTIO_MMIO_SIZE	0x1000ULL
#define LAYOUT_IDENTITY_MAP	0xfeffc000ULL	/* KVM_SET_IDENTITY_MAP_ADDR */
#define LAYOUT_TSS		0xfeffd000ULL	/* KVM_SET_TSS_ADDR, 3 pages */
#define LAYOUT_IOAPIC		0xfec00000ULL
#define LAYOUT_LAPIC		0xfee00000ULL
#define LAYOUT_HIGH_RAM		0x100000000ULL
#define LAYOUT_DAX_BASE		0x4000000000ULL	/* 256 GiB */
#define LAYOUT_DAX_STRIDE	0x1000000000ULL	/* 64 GiB per share */
#define LAYOUT_DAX_WINDOW	0x40000000ULL	/* 1 GiB: the default window */
/* Window sizes a share may ask for (powers of two): Linux maps 2 MiB
 * ranges, and a window may not run into the next share's. */
#define LAYOUT_DAX_WINDOW_MIN	0x200000ULL	/* 2 MiB */
#define LAYOUT_DAX_WINDOW_MAX	LAYOUT_DAX_STRIDE
/* RAM that still ends below LAYOUT_DAX_BASE (the gap shifts it up 1 GiB). */
#define LAYOUT_DAX_MAX_RAM_MIB	((LAYOUT_DAX_BASE - LAYOUT_HIGH_RAM + \
	    LAYOUT_MMIO_GAP) >> 20)

/* First IOAPIC pin handed to virtio-mmio devices (ISA uses 0-15). */
#define LAYOUT_VIRTIO_IRQ_BASE	16
#define LAYOUT_IOAPIC_PINS	24

#endif /* SMX_LAYOUT_H */
