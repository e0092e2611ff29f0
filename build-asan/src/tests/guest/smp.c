/*
 * smp test: find the CPUs in the MP table (Intel MultiProcessor
 * Specification 1.4), start every AP with INIT-SIPI-SIPI through the local
 * APIC and wait until each has checked in from long mode.
 */
#include "testguest.h"

#define MSR_APIC_BASE		0x1b
#define APIC_BASE_ENABLE	(1U << 11)
#define APIC_BASE_MASK		0xfffff000UL

#define LAPIC_ID		0x020
#define LAPIC_SVR		0x0f0
#define LAPIC_ICR_LO		0x300
#define LAPIC_ICR_HI		0x310
#define ICR_BUSY		(1U << 12)
#define ICR_INIT		0x00004500U	/* INIT, level assert */
#define ICR_SIPI		0x00004600U	/* start-up, vector = page */

#define DELAY_INIT		10000	/* pause loops; KVM needs none */
#define DELAY_SIPI		1000
#define TIMEOUT_TSC		10000000000ULL	/* a few seconds */
#define TIMEOUT_SPINS		200000000UL	/* in case the TSC is stuck */

/* MP floating pointer structure (spec 4.1). */
struct mp_fps {
	char		signature[4];	/* "_MP_" */
	uint32_t	config;		/* physical address of the table */
	uint8_t		length;		/* in 16-byte units: 1 */
	uint8_t		revision;
	uint8_t		checksum;
	uint8_t		features[5];	/* features[0] != 0: default config */
} __attribute__((packed));

/* MP configuration table header (spec 4.2). */
struct mp_config {
	char		signature[4];	/* "PCMP" */
	uint16_t	length;		/* base table, header included */
	uint8_t		revision;
	uint8_t		checksum;
	char		oem[8];
	char		product[12];
	uint32_t	oem_table;
	uint16_t	oem_size;
	uint16_t	entries;
	uint32_t	lapic;
	uint16_t	ext_length;
	uint8_t		ext_checksum;
	uint8_t		reserved;
} __attribute__((packed));

#define MP_PROCESSOR		0
#define MP_PROCESSOR_SIZE	20
#define MP_OTHER_SIZE		8	/* bus, I/O APIC, interrupt entries */
#define MP_LAST_TYPE		4
#define MP_CPU_ENABLED		0x01
#define MP_CPU_BSP		0x02

static uint64_t lapic;
static volatile uint32_t ap_online;
static volatile uint32_t ap_apic_id[TG_MAX_CPUS];

static uint8_t
checksum(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint8_t s = 0;

	while (n-- > 0)
		s += *b++;
	return s;
}

static const struct mp_fps *
scan_fps(uint64_t base, uint64_t len)
{
	const struct mp_fps *f;
	uint64_t a;

	for (a = base; a + sizeof(*f) <= base + len; a += 16) {
		f = phys(a);
		if (memcmp(f->signature, "_MP_", 4) == 0 && f->length == 1 &&
		    checksum(f, 16) == 0)
			return f;
	}
	return NULL;
}

/* Spec 4: first KiB of the EBDA, else the last KiB of base memory,
 * then the BIOS ROM area 0xf0000-0xfffff. */
static const struct mp_fps *
find_fps(void)
{
	const struct mp_fps *f = NULL;
	uint64_t ebda, basemem;

	ebda = (uint64_t)*(volatile uint16_t *)phys(0x40e) << 4;
	basemem = (uint64_t)*(volatile uint16_t *)phys(0x413) << 10;
	if (ebda >= 0x80000 && ebda < 0xa0000)
		f = scan_fps(ebda, 1024);
	else if (basemem >= 0x80000 && basemem <= 0xa0000)
		f = scan_fps(basemem - 1024, 1024);
	else
		f = scan_fps(0x9fc00, 1024);
	if (f == NULL)
		f = scan_fps(0xf0000, 0x10000);
	return f;
}

static uint64_t
rdmsr(uint32_t msr)
{
	uint32_t lo, hi;

	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}

static void
wrmsr(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v),
	    "d"((uint32_t)(v >> 32)));
}

static void
spin(unsigned long n)
{
	while (n-- > 0)
		cpu_relax();
}

static void
send_ipi(uint8_t apic_id, uint32_t icr)
{
	unsigned long i;

	mmio_write32(lapic + LAPIC_ICR_HI, (uint32_t)apic_id << 24);
	mmio_write32(lapic + LAPIC_ICR_LO, icr);
	for (i = 0; i < 1000000; i++)
		if ((mmio_read32(lapic + LAPIC_ICR_LO) & ICR_BUSY) == 0)
			return;
	tg_fail("smp: IPI 0x%x to apic %u stuck busy", icr, apic_id);
}

void
ap_main(uint32_t slot)
{
	ap_apic_id[slot] = mmio_read32(lapic + LAPIC_ID) >> 24;
	/* The locked add also orders the store above before it. */
	__asm__ volatile("lock incl %0" : "+m"(ap_online) : : "memory");
	halt_forever();
}

void
test_smp(const char *arg)
{
	uint8_t apic[TG_MAX_CPUS], bsp_id;
	const struct mp_config *c;
	const struct mp_fps *f;
	const uint8_t *e, *end;
	uint64_t base, t0;
	unsigned long spins;
	uint32_t i, j, n = 0, seen, naps;
	int bsp_found = 0;

	(void)arg;
	if ((f = find_fps()) == NULL)
		tg_fail("smp: no MP floating pointer found");
	if (f->config == 0)
		tg_fail("smp: MP default configuration %u not supported",
		    f->features[0]);
	c = phys(f->config);
	if (memcmp(c->signature, "PCMP", 4) != 0 ||
	    checksum(c, c->length) != 0)
		tg_fail("smp: bad MP config table at 0x%x", f->config);
	tg_printf("smp: MP table at 0x%lx, config at 0x%x, %u entries\n",
	    (uint64_t)(uintptr_t)f, f->config, c->entries);

	e = (const uint8_t *)(c + 1);
	end = (const uint8_t *)c + c->length;
	for (i = 0; i < c->entries; i++) {
		if (e >= end || *e > MP_LAST_TYPE)
			tg_fail("smp: bad MP config entry %u", i);
		if (*e != MP_PROCESSOR) {
			e += MP_OTHER_SIZE;
			continue;
		}
		if (e[3] & MP_CPU_ENABLED) {
			if (n == TG_MAX_CPUS)
				tg_fail("smp: more than %u cpus", TG_MAX_CPUS);
			apic[n++] = e[1];
		} else
			tg_printf("smp: apic %u disabled in MP table\n", e[1]);
		e += MP_PROCESSOR_SIZE;
	}
	tg_printf("smp: %u cpus\n", n);
	if (n == 0)
		tg_fail("smp: MP table lists no enabled cpu");

	/* The APIC is where the APIC_BASE MSR says; the table must agree. */
	base = rdmsr(MSR_APIC_BASE);
	if ((base & APIC_BASE_ENABLE) == 0)
		wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE);
	lapic = base & APIC_BASE_MASK;
	if (lapic != c->lapic)
		tg_fail("smp: MP table lapic 0x%x, APIC_BASE msr 0x%lx",
		    c->lapic, lapic);
	bsp_id = mmio_read32(lapic + LAPIC_ID) >> 24;
	for (i = 0; i < n; i++) {
		tg_printf("smp: cpu %u apic %u%s\n", i, apic[i],
		    apic[i] == bsp_id ? " (bsp)" : "");
		if (apic[i] == bsp_id)
			bsp_found = 1;
	}
	if (!bsp_found)
		tg_fail("smp: own apic id %u not in MP table", bsp_id);
	naps = n - 1;

	/* Software-enable the APIC (spurious vector 0xff). */
	mmio_write32(lapic + LAPIC_SVR, 0x1ff);
	if ((size_t)(tramp_end - tramp_start) > 4096)
		tg_fail("smp: trampoline too large");
	memcpy(phys(TG_TRAMPOLINE), tramp_start, tramp_end - tramp_start);
	ap_next_slot = 1;
	ap_online = 0;

	/* INIT, then two SIPIs (spec B.4); all APs start in parallel. */
	for (i = 0; i < n; i++)
		if (apic[i] != bsp_id)
			send_ipi(apic[i], ICR_INIT);
	spin(DELAY_INIT);
	for (j = 0; j < 2; j++) {
		for (i = 0; i < n; i++)
			if (apic[i] != bsp_id)
				send_ipi(apic[i], ICR_SIPI |
				    (TG_TRAMPOLINE >> 12));
		spin(DELAY_SIPI);
	}

	t0 = rdtsc();
	for (spins = 0; ap_online < naps; spins++) {
		if (rdtsc() - t0 > TIMEOUT_TSC || spins > TIMEOUT_SPINS)
			tg_fail("smp: only %u of %u cpus online",
			    ap_online + 1, n);
		cpu_relax();
	}

	/* Each AP must have reported a distinct apic id from the table. */
	for (i = 0; i < n; i++) {
		if (apic[i] == bsp_id)
			continue;
		for (seen = 0, j = 1; j <= naps; j++)
			if (ap_apic_id[j] == apic[i])
				seen++;
		if (seen != 1)
			tg_fail("smp: apic %u checked in %u times", apic[i],
			    seen);
	}
	tg_printf("smp: %u cpus online\n", n);
}
