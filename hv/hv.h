/*
 * hv: the hypervisor seam.  Everything smx needs from a hardware
 * virtualization backend, and nothing about devices.  The backend is
 * chosen at link time: hv/kvm.c for real machines, hv/fake.c for unit
 * tests.  Backend state lives behind the opaque struct hv and struct
 * hv_vcpu.
 *
 * Threads: hv_create(), hv_mem_*(), hv_irq*(), hv_ioeventfd*() and
 * hv_vcpu_create() are called from the reactor thread (or before the VM
 * runs).  hv_vcpu_run() and the hv_vcpu_get/set_*() state calls are made
 * only by the thread that runs that vCPU (or by anyone while the vCPU is
 * not running and its thread is parked).  hv_vcpu_kick() may be called
 * from any thread.  Errors are 0 / -errno.
 */
#ifndef SMX_HV_H
#define SMX_HV_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/base.h"

struct hv;
struct hv_vcpu;

#define HV_MAX_VCPUS	8

enum hv_kind {
	HV_KIND_ABSENT,		/* no usable /dev/kvm */
	HV_KIND_HARDWARE,	/* VT-x / AMD-V backed KVM */
	HV_KIND_PVM,		/* KVM without hardware virtualization (PVM) */
	HV_KIND_FAKE,		/* the unit-test backend */
};

/*
 * What this host offers, without creating a VM.  On HV_KIND_ABSENT,
 * *why (if not NULL) names the reason ("/dev/kvm: No such file ...").
 * The string is static or owned by hv.
 */
enum hv_kind	 hv_probe(const char **why);
const char	*hv_kind_name(enum hv_kind);	/* "hardware", "pvm", ... */
/* KVM API version, or -errno. */
int		 hv_api_version(void);

/*
 * Create a VM with an in-kernel irqchip (PIC, IOAPIC, LAPICs) and PIT.
 * ncpus is 1..HV_MAX_VCPUS.  The backend may create the irqchip and PIT
 * lazily: they exist by the time the first vCPU is created or an IRQ is
 * driven (hv_irq_line(), hv_irqfd()), and an error creating them is
 * returned by (and logged under) the call that needed them.  Map the
 * boot memory slots before creating vCPUs: that is the cheap order.
 */
int	hv_create(struct hv **, unsigned ncpus) WUR;
/* Destroy the VM; every vCPU must have been destroyed first. */
void	hv_destroy(struct hv *);

/*
 * Map host memory [hva, hva + size) at guest physical address gpa in
 * memory slot `slot`.  Addresses and size are page aligned.  A size of
 * zero deletes the slot.
 */
#define HV_MEM_READONLY		0x1
#define HV_MEM_LOG_DIRTY	0x2
int	hv_mem_map(struct hv *, uint32_t slot, uint64_t gpa, uint64_t size,
	    void *hva, unsigned flags) WUR;
int	hv_mem_unmap(struct hv *, uint32_t slot);

/*
 * The dirty log of a slot mapped with HV_MEM_LOG_DIRTY: fill bitmap (one
 * bit per page of the slot, bit i in word i / 64; room for the slot's
 * page count rounded up to 64) with the pages the guest wrote since the
 * slot was mapped or since the last call, and restart the log.  Writes
 * the host makes through hva are not seen.  -ENOENT for a slot mapped
 * without logging or not mapped.
 */
int	hv_mem_dirty_log(struct hv *, uint32_t slot, uint64_t *bitmap) WUR;

/* Drive an irqchip input (IOAPIC pin / PIC line) to level 0 or 1. */
int	hv_irq_line(struct hv *, uint32_t gsi, int level);

/*
 * irqfd: a write to eventfd `fd` raises gsi (edge).  With resamplefd >= 0
 * the line is level-triggered and resamplefd is signalled on EOI.
 */
int	hv_irqfd(struct hv *, int fd, uint32_t gsi, int resamplefd) WUR;
int	hv_irqfd_remove(struct hv *, int fd, uint32_t gsi);

/*
 * ioeventfd: a guest write of `len` bytes to `addr` (MMIO, or port I/O
 * when HV_IOEVENT_PIO) signals eventfd `fd` without leaving the kernel.
 * With HV_IOEVENT_DATAMATCH only writes of `data` match.
 */
#define HV_IOEVENT_PIO		0x1
#define HV_IOEVENT_DATAMATCH	0x2
int	hv_ioeventfd(struct hv *, int fd, uint64_t addr, uint32_t len,
	    unsigned flags, uint64_t data) WUR;
int	hv_ioeventfd_remove(struct hv *, int fd, uint64_t addr, uint32_t len,
	    unsigned flags, uint64_t data);

/*
 * Create vCPU `id` (0..ncpus-1).  Its CPUID is what the host supports
 * (KVM_GET_SUPPORTED_CPUID) with the APIC ID, topology and the KVM
 * paravirt signature filled in; its LAPIC is enabled as on reset.
 */
int	hv_vcpu_create(struct hv *, unsigned id, struct hv_vcpu **) WUR;
void	hv_vcpu_destroy(struct hv_vcpu *);
unsigned hv_vcpu_id(const struct hv_vcpu *);

/* x86 register state, backend independent. */
struct hv_regs {
	uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
	uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
	uint64_t rip, rflags;
};

struct hv_segment {
	uint64_t base;
	uint32_t limit;
	uint16_t selector;
	uint8_t  type, present, dpl, db, s, l, g, avl, unusable;
};

struct hv_dtable {
	uint64_t base;
	uint16_t limit;
};

struct hv_sregs {
	struct hv_segment cs, ds, es, fs, gs, ss, tr, ldt;
	struct hv_dtable  gdt, idt;
	uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base;
};

int	hv_vcpu_get_regs(struct hv_vcpu *, struct hv_regs *);
int	hv_vcpu_set_regs(struct hv_vcpu *, const struct hv_regs *);
int	hv_vcpu_get_sregs(struct hv_vcpu *, struct hv_sregs *);
int	hv_vcpu_set_sregs(struct hv_vcpu *, const struct hv_sregs *);

enum hv_exit_reason {
	HV_EXIT_IO,		/* port I/O: see exit.io */
	HV_EXIT_MMIO,		/* MMIO outside any memory slot: exit.mmio */
	HV_EXIT_HLT,		/* HLT (only without in-kernel LAPIC) */
	HV_EXIT_SHUTDOWN,	/* triple fault */
	HV_EXIT_RESET,		/* the guest asked for a reset (system event) */
	HV_EXIT_POWEROFF,	/* the guest asked to power off (system event) */
	HV_EXIT_INTR,		/* kicked, or interrupted by a signal */
	HV_EXIT_FAIL,		/* entry failure / internal error: exit.fail */
};

struct hv_exit {
	enum hv_exit_reason reason;
	union {
		struct {
			uint16_t port;
			uint8_t  size;		/* 1, 2 or 4 */
			bool	 write;
			uint32_t count;		/* string I/O repeat count */
			uint8_t	*data;		/* size * count bytes; for
						 * reads, fill before the
						 * next hv_vcpu_run() */
		} io;
		struct {
			uint64_t gpa;
			uint8_t  len;		/* 1..8 */
			bool	 write;
			uint8_t	*data;		/* len bytes, same rule */
		} mmio;
		struct {
			uint64_t code;		/* backend specific reason */
			const char *what;	/* static description */
		} fail;
	};
};

/*
 * Enter the guest until the next exit that needs user space, and
 * describe it in *exit.  The data pointers in *exit stay valid until the
 * next call.  Returns 0 or -errno (a broken VM, not a guest action).
 * vCPU thread only.
 */
int	hv_vcpu_run(struct hv_vcpu *, struct hv_exit *) WUR;

/*
 * Make the vCPU leave (or not enter) the guest: the current or next
 * hv_vcpu_run() returns HV_EXIT_INTR promptly.  Any thread; async-signal
 * safe is not required.  Each kick yields at most one HV_EXIT_INTR; kicks
 * may coalesce.  The kvm backend delivers kicks with the signal
 * HV_KICK_SIGNAL to the thread that last ran the vCPU (it blocks that
 * signal there outside KVM_RUN): nothing else in the process may use
 * it, and a vCPU must not be kicked after that thread has exited (join
 * the vCPU thread after its last kick, or destroy the vCPU first).
 */
#define HV_KICK_SIGNAL	(SIGRTMIN + 2)
void	hv_vcpu_kick(struct hv_vcpu *);

/*
 * True when the vCPU is halted with interrupts disabled and nothing
 * pending that could wake it: how a guest without ACPI powers off.
 * vCPU thread, between runs.
 */
int	hv_vcpu_halted_for_good(struct hv_vcpu *, bool *) WUR;

/*
 * Snapshot state.  A blob is backend specific and versioned: it starts
 * with a magic naming the backend and a version, then tagged records
 * (u32 tag, u32 length, payload), so a blob from another backend or a
 * newer format is refused with -EPROTO and a truncated or malformed one
 * with -EINVAL; nothing is trusted.  The save calls append to *buf
 * (xreallocarray-grown, *len bytes used; *buf may start NULL, *len 0).
 *
 * hv_vcpu_save() takes everything the hypervisor keeps for a vCPU:
 * regs, sregs, FPU/xsave, xcrs, every MSR of the host's save list that
 * reads back (TSC, kvmclock, EFER, PAT, STAR/LSTAR..., APIC base), the
 * LAPIC, pending events, mp_state and debug registers.  The vCPU must
 * not be running (its thread parked, or never started).
 * hv_vcpu_restore() puts it back in the order KVM needs (sregs before
 * regs, LAPIC before MSRs and events) into a vCPU created by
 * hv_vcpu_create() on a VM whose memory is already mapped.
 *
 * hv_save() takes the VM's own state: PIC master and slave, IOAPIC,
 * PIT and the KVM clock; hv_restore() sets them on a fresh VM before its
 * vCPUs are restored (the clock continues from the saved value).
 */
int	hv_vcpu_save(struct hv_vcpu *, uint8_t **buf, size_t *len) WUR;
int	hv_vcpu_restore(struct hv_vcpu *, const uint8_t *buf, size_t len)
	    WUR;
int	hv_save(struct hv *, uint8_t **buf, size_t *len) WUR;
int	hv_restore(struct hv *, const uint8_t *buf, size_t len) WUR;

/*
 * CPU features a guest may have seen (CPUID feature words and the XSAVE
 * components), HV_CPU_FEATURE_WORDS of them, for a snapshot to record.
 * hv_cpu_compatible() says whether a guest that saw `saved` can go on
 * on this host: 0, or -ENOTSUP with the first missing feature word
 * named in why.
 */
#define HV_CPU_FEATURE_WORDS	10
int	hv_cpu_features(struct hv *, uint32_t words[HV_CPU_FEATURE_WORDS]);
int	hv_cpu_compatible(struct hv *,
	    const uint32_t saved[HV_CPU_FEATURE_WORDS], char *why,
	    size_t whylen);

#endif /* SMX_HV_H */
