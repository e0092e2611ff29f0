/*
 * The Intel MultiProcessor Specification 1.4 table.  Without ACPI this is
 * how Linux finds the CPUs, the IOAPIC and the routing of every interrupt
 * line; it scans the last KiB of base memory (the EBDA) for the floating
 * pointer (MP spec 4, "search order").
 */
#include <errno.h>
#include <string.h>

#include "core/base/base.h"
#include "core/boot.h"
#include "core/boot_impl.h"
#include "core/layout.h"

/* MP spec 1.4 = revision byte 4 in both the pointer and the table. */
#define MP_SPEC_REV		4
/* Local APIC version of an integrated APIC (xAPIC, as KVM reports it). */
#define MP_LAPIC_VER		0x14
/* IOAPIC version register value of an 82093AA-like 24-pin IOAPIC. */
#define MP_IOAPIC_VER		0x11
/* CPUID(1).EAX: family 6, model 0, stepping 0. */
#define MP_CPU_SIGNATURE	0x600
/* CPUID(1).EDX: FPU (bit 0) and on-chip APIC (bit 9). */
#define MP_CPU_FEATURES		((1U << 0) | (1U << 9))
/* Room for the pointer and the table: the EBDA up to the VGA hole. */
#define MP_AREA			(LAYOUT_LOWMEM_END - LAYOUT_EBDA)

/* Two's complement of the byte sum, so the bytes sum to 0 (MP spec 4.1). */
static uint8_t
mp_checksum(const uint8_t *p, size_t len)
{
	uint8_t	sum = 0;

	while (len-- > 0)
		sum += *p++;
	return (uint8_t)-sum;
}

/* Append an I/O interrupt entry routing src_irq of the ISA bus to pin. */
static void
add_intsrc(uint8_t *buf, size_t *off, uint8_t type, uint8_t irq_type,
    uint16_t flags, uint8_t src_irq, uint8_t dst_apic, uint8_t dst_pin)
{
	struct mpc_intsrc	e;

	memset(&e, 0, sizeof(e));
	e.type = type;
	e.irq_type = irq_type;
	e.irq_flags = flags;
	e.src_bus = 0;
	e.src_irq = src_irq;
	e.dst_apic = dst_apic;
	e.dst_pin = dst_pin;
	memcpy(buf + *off, &e, sizeof(e));
	*off += sizeof(e);
}

/* Build the floating pointer and the configuration table in the EBDA. */
int
mptable_write(const struct gmem *mem, unsigned ncpus)
{
	uint8_t			 buf[MP_AREA];
	struct mpf_intel	 mpf;
	struct mpc_table	 mpc;
	struct mpc_cpu		 cpu;
	struct mpc_bus		 bus;
	struct mpc_ioapic	 ioapic;
	size_t			 off, need;
	unsigned		 i, irq, nent = 0;
	uint8_t			 ioapic_id;

	if (ncpus == 0 || ncpus > HV_MAX_VCPUS)
		return -EINVAL;
	need = sizeof(mpf) + sizeof(mpc) + ncpus * sizeof(cpu) +
	    sizeof(bus) + sizeof(ioapic) +
	    (15 + LAYOUT_IOAPIC_PINS - LAYOUT_VIRTIO_IRQ_BASE + 2) *
	    sizeof(struct mpc_intsrc);
	if (need > sizeof(buf))
		return -ENOSPC;
	memset(buf, 0, sizeof(buf));
	off = sizeof(mpf) + sizeof(mpc);

	/* 4.3.1 processor entries; APIC IDs are the vCPU indexes. */
	for (i = 0; i < ncpus; i++) {
		memset(&cpu, 0, sizeof(cpu));
		cpu.type = MP_PROCESSOR;
		cpu.apic_id = i;
		cpu.apic_ver = MP_LAPIC_VER;
		cpu.flags = MPC_CPU_ENABLED | (i == 0 ? MPC_CPU_BSP : 0);
		cpu.signature = MP_CPU_SIGNATURE;
		cpu.features = MP_CPU_FEATURES;
		memcpy(buf + off, &cpu, sizeof(cpu));
		off += sizeof(cpu);
		nent++;
	}

	/* 4.3.2 bus entry: the single ISA bus, ID 0 (type string padded). */
	memset(&bus, 0, sizeof(bus));
	bus.type = MP_BUS;
	bus.bus_id = 0;
	memcpy(bus.bus_type, "ISA   ", sizeof(bus.bus_type));
	memcpy(buf + off, &bus, sizeof(bus));
	off += sizeof(bus);
	nent++;

	/* 4.3.3 IOAPIC entry; its ID follows the LAPIC IDs so none clash. */
	ioapic_id = ncpus;
	memset(&ioapic, 0, sizeof(ioapic));
	ioapic.type = MP_IOAPIC;
	ioapic.apic_id = ioapic_id;
	ioapic.apic_ver = MP_IOAPIC_VER;
	ioapic.flags = 1;
	ioapic.addr = LAYOUT_IOAPIC;
	memcpy(buf + off, &ioapic, sizeof(ioapic));
	off += sizeof(ioapic);
	nent++;

	/*
	 * 4.3.4 I/O interrupt entries.  ISA IRQs conform to the bus (edge,
	 * active high) and are wired identity: KVM's default GSI routing
	 * sends IRQ n to IOAPIC pin n, the PIT included, so IRQ0 must not
	 * be described on pin 2 as on PC chipsets (the guest would unmask
	 * a pin the timer never reaches).  IRQ2, the cascade, has no pin.
	 */
	for (irq = 0; irq < 16; irq++) {
		if (irq == 2)
			continue;
		add_intsrc(buf, &off, MP_INTSRC, MP_INT_INT, 0, irq,
		    ioapic_id, irq);
		nent++;
	}
	/* The virtio-mmio pins: level triggered, active high. */
	for (irq = LAYOUT_VIRTIO_IRQ_BASE; irq < LAYOUT_IOAPIC_PINS; irq++) {
		add_intsrc(buf, &off, MP_INTSRC, MP_INT_INT,
		    MP_IRQ_POL_HIGH | MP_IRQ_TRIG_LEVEL, irq, ioapic_id, irq);
		nent++;
	}

	/* 4.3.5 local interrupts: the 8259 on LINT0, NMI on LINT1, all CPUs. */
	add_intsrc(buf, &off, MP_LINTSRC, MP_INT_EXTINT, 0, 0, MP_APIC_ALL, 0);
	add_intsrc(buf, &off, MP_LINTSRC, MP_INT_NMI, 0, 0, MP_APIC_ALL, 1);
	nent += 2;

	/* 4.2 configuration table header; checksum covers the entries too. */
	memset(&mpc, 0, sizeof(mpc));
	memcpy(mpc.signature, "PCMP", 4);
	mpc.length = off - sizeof(mpf);
	mpc.spec_rev = MP_SPEC_REV;
	memcpy(mpc.oem, "SMX     ", sizeof(mpc.oem));
	memcpy(mpc.product, "MICROVM     ", sizeof(mpc.product));
	mpc.entry_count = nent;
	mpc.lapic = LAYOUT_LAPIC;
	memcpy(buf + sizeof(mpf), &mpc, sizeof(mpc));
	buf[sizeof(mpf) + offsetof(struct mpc_table, checksum)] =
	    mp_checksum(buf + sizeof(mpf), mpc.length);

	/* 4.1 floating pointer; feature bytes 0 = table present, no IMCR. */
	memset(&mpf, 0, sizeof(mpf));
	memcpy(mpf.signature, "_MP_", 4);
	mpf.physptr = LAYOUT_EBDA + sizeof(mpf);
	mpf.length = 1;
	mpf.spec_rev = MP_SPEC_REV;
	memcpy(buf, &mpf, sizeof(mpf));
	buf[offsetof(struct mpf_intel, checksum)] =
	    mp_checksum(buf, sizeof(mpf));

	return gmem_write(mem, LAYOUT_EBDA, buf, off);
}
