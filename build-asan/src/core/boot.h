/*
 * Linux boot: loading a kernel, initrd and command line into guest memory
 * and the machine tables a kernel without ACPI needs (e820 memory map in
 * hvm_start_info or boot_params, MP table), then the register state of
 * the boot vCPU.  Private to core/.  Works on a struct gmem alone, so it
 * is tested without a hypervisor.
 */
#ifndef SMX_BOOT_H
#define SMX_BOOT_H

#include "core/base/base.h"
#include "hv/hv.h"

struct boot_spec {
	const char	*kernel;	/* path: ELF vmlinux with a PVH note, or bzImage */
	const char	*initrd;	/* path or NULL */
	const char	*cmdline;	/* may be NULL; at most LAYOUT_CMDLINE_MAX-1 */
	unsigned	 ncpus;		/* 1..HV_MAX_VCPUS */
	uint64_t	 ram_size;	/* bytes, as mapped in the gmem */
};

enum boot_mode {
	BOOT_PVH,	/* 32-bit protected mode, paging off, ebx = start_info */
	BOOT_LINUX64,	/* 64-bit boot protocol, rsi = boot_params */
};

struct boot_entry {
	enum boot_mode	 mode;
	uint64_t	 entry;		/* guest physical entry point */
	uint64_t	 arg;		/* start_info or boot_params address */
	const char	*format;	/* "vmlinux (PVH)", "bzImage" */
};

/*
 * Load spec->kernel (+ initrd, cmdline) into mem, write the e820 map and
 * the MP table for spec->ncpus CPUs, and describe the entry in *out.
 * mem holds the guest RAM regions (below the MMIO gap and above 4 GiB).
 * On failure returns -errno and writes a one-line reason naming the file
 * and the problem into err (e.g. "bzImage: boot protocol 2.05 too old,
 * need 2.12").
 */
int	boot_load(const struct gmem *mem, const struct boot_spec *spec,
	    struct boot_entry *out, char *err, size_t errlen) WUR;

/*
 * The register state of the boot vCPU for *entry: flat 32-bit protected
 * mode for BOOT_PVH, long mode with the identity page tables (which
 * boot_load() wrote) for BOOT_LINUX64.
 */
void	boot_vcpu_state(const struct boot_entry *entry, struct hv_regs *,
	    struct hv_sregs *);

/*
 * Write an Intel MP spec 1.4 table for ncpus CPUs (APIC IDs 0..n-1),
 * one ISA bus, the IOAPIC at LAYOUT_IOAPIC with LAYOUT_IOAPIC_PINS pins
 * and identity-mapped ISA interrupts (IRQ0 routed to pin 2 as on PCs),
 * into the EBDA.  Called by boot_load().
 */
int	mptable_write(const struct gmem *mem, unsigned ncpus) WUR;

#endif /* SMX_BOOT_H */
