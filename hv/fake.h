/*
 * The fake hv backend's test-only API.  Link hv/fake.c instead of
 * hv/kvm.c and a unit test gets the whole hv.h API in memory, plus these
 * calls to see what a module asked of the hypervisor and to script what
 * the "guest" does.  Every call here is thread-safe.
 */
#ifndef SMX_HV_FAKE_H
#define SMX_HV_FAKE_H

#include <stdbool.h>
#include <stdint.h>

#include "hv/hv.h"

#define HV_FAKE_MAX_SLOTS	32
#define HV_FAKE_MAX_GSI		256
/* Largest data payload of one scripted exit (the fake's "run page"). */
#define HV_FAKE_RUN_DATA	4096

/*
 * Memory slot `slot` as last mapped: true and its gpa, size, hva and
 * HV_MEM_* flags (each out pointer may be NULL), or false when the slot
 * is empty.
 */
bool	hv_fake_slot(struct hv *, uint32_t slot, uint64_t *gpa, uint64_t *size,
	    void **hva, unsigned *flags);

/* The "guest" wrote [gpa, gpa + len): the pages go into the dirty log
 * of each slot mapped with HV_MEM_LOG_DIRTY that holds them. */
void	hv_fake_guest_dirty(struct hv *, uint64_t gpa, uint64_t len);

/*
 * The last level hv_irq_line() set on gsi (0 if never), and in *edges
 * (may be NULL) how many 0 -> 1 transitions it made.
 */
int	hv_fake_irq_level(struct hv *, uint32_t gsi, unsigned *edges);

/*
 * Whether an irqfd registered on gsi was written since the last call:
 * reads (and so resets) the registered eventfd without blocking.
 * Returns the eventfd counter read (0 when nothing fired or no irqfd is
 * registered for gsi).
 */
uint64_t hv_fake_irqfd_fired(struct hv *, uint32_t gsi);

/*
 * The guest's EOI of gsi: signals the resamplefd of each level-triggered
 * irqfd on gsi, as KVM does.  Returns how many were signalled.
 */
unsigned hv_fake_eoi(struct hv *, uint32_t gsi);

/*
 * A guest write of len bytes of `data` (little-endian, as the guest would
 * store it) to MMIO address addr, or to port `addr` with the _pio
 * variant: signals the eventfd of the first matching ioeventfd as KVM
 * would (address, length, or length 0 = any; and the value with
 * HV_IOEVENT_DATAMATCH).  Returns true when one matched; otherwise the
 * real guest would have exited to user space.
 */
bool	hv_fake_guest_write(struct hv *, uint64_t addr, uint32_t len,
	    uint64_t data);
bool	hv_fake_guest_pio(struct hv *, uint16_t port, uint32_t len,
	    uint64_t data);

/* The vCPU created with this id, or NULL. */
struct hv_vcpu *hv_fake_vcpu(struct hv *, unsigned id);

/*
 * Queue an exit for hv_vcpu_run() to return, after those already queued.
 * For HV_EXIT_IO (size * count bytes) and HV_EXIT_MMIO (len bytes), data
 * (may be NULL = zeros) is copied into the fake's run page, and the
 * exit's data pointer given back by hv_vcpu_run() points there.  The
 * data pointer inside *exit is ignored.  Returns 0, or -EINVAL when the
 * payload exceeds HV_FAKE_RUN_DATA.  Wakes a blocked hv_vcpu_run().
 */
int	hv_fake_queue_exit(struct hv_vcpu *, const struct hv_exit *,
	    const void *data);

/* Number of exits queued and not yet returned. */
unsigned hv_fake_queued(struct hv_vcpu *);

/*
 * The data of the exit before the most recent one, as the caller left it
 * in the run page when it called hv_vcpu_run() again (so what it
 * answered to a read); *len (may be NULL) gets its size.  NULL when that
 * exit carried no data.  The pointer stays valid until the next run.
 */
const uint8_t *hv_fake_last_data(struct hv_vcpu *, size_t *len);

/* What hv_vcpu_halted_for_good() reports from now on. */
void	hv_fake_set_halted(struct hv_vcpu *, bool);

/* How many times hv_vcpu_run() returned HV_EXIT_INTR. */
unsigned hv_fake_intr_count(struct hv_vcpu *);

/* What hv_cpu_features() reports from now on (process wide). */
void	hv_fake_set_cpu_features(const uint32_t words[HV_CPU_FEATURE_WORDS]);

#endif /* SMX_HV_FAKE_H */
