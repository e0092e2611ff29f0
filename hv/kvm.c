/*
 * hv backend for Linux KVM (/dev/kvm), hardware-backed or PVM.
 *
 * Kicking a vCPU: the kick signal (HV_KICK_SIGNAL in hv.h) is blocked
 * in the vCPU thread at all times except inside KVM_RUN, where
 * KVM_SET_SIGNAL_MASK unblocks it.  A kick, under the vCPU's kick lock,
 * sets kvm_run->immediate_exit and sends the signal to the vCPU thread:
 *   - before KVM_RUN: immediate_exit makes KVM_RUN return EINTR at once;
 *   - inside KVM_RUN: the signal is pending and unblocked, so the kernel
 *     leaves the guest and KVM_RUN returns EINTR;
 *   - between runs: the signal stays pending (blocked), immediate_exit
 *     stays set, and the next KVM_RUN returns EINTR.
 * After an EINTR / KVM_EXIT_INTR, the vCPU thread takes the same lock,
 * clears immediate_exit and drains the pending signal with a zero-timeout
 * sigtimedwait().  Because a kick sets the flag and sends the signal
 * atomically with respect to that clean-up, a kick is either fully
 * consumed by this INTR or fully visible to the next run: none is lost
 * and none is delivered twice.  A no-op handler is installed once so that
 * the signal never takes its default (fatal) action.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <linux/kvm.h>

#include "core/base/base.h"
#include "core/layout.h"
#include "hv/hv.h"
#include "hv/state_impl.h"

#define KVM_DEV			"/dev/kvm"
#define KVM_API_EXPECTED	12

/* LAPIC register offsets and LVT delivery modes (SDM vol. 3, 11.5.1). */
#define APIC_LVT_LINT0		0x350
#define APIC_LVT_LINT1		0x360
#define APIC_DM_NMI		0x400
#define APIC_DM_EXTINT		0x700
#define APIC_LVT_MASKED		0x10000

#define RFLAGS_IF		(1ULL << 9)

struct hv {
	int			 kvm_fd;
	int			 vm_fd;
	unsigned		 ncpus;
	size_t			 run_size;
	struct kvm_cpuid2	*cpuid;		/* KVM_GET_SUPPORTED_CPUID */
	/* Created on first need: see irqchip_ensure(). */
	pthread_mutex_t		 irq_lock;
	bool			 have_irqchip;	/* under irq_lock */
	bool			 have_pit;	/* under irq_lock */
	bool			 irq_ready;	/* both exist; atomic */
	/* MSRs a vCPU save takes: the host's list, filtered to those that
	 * read back (found at the first save, under irq_lock). */
	uint32_t		*msrs;
	unsigned		 nmsrs;
	bool			 msrs_known;
};

struct hv_vcpu {
	struct hv		*hv;
	unsigned		 id;
	int			 fd;
	struct kvm_run		*run;
	pthread_mutex_t		 kick_lock;
	pthread_t		 thread;	/* set at the first run */
	bool			 have_thread;
};

static const struct {
	int		 cap;
	const char	*name;
} kvm_needed_caps[] = {
	{ KVM_CAP_IRQCHIP,		"KVM_CAP_IRQCHIP" },
	{ KVM_CAP_IRQFD,		"KVM_CAP_IRQFD" },
	{ KVM_CAP_IOEVENTFD,		"KVM_CAP_IOEVENTFD" },
	{ KVM_CAP_USER_MEMORY,		"KVM_CAP_USER_MEMORY" },
	{ KVM_CAP_SET_TSS_ADDR,		"KVM_CAP_SET_TSS_ADDR" },
	{ KVM_CAP_PIT2,			"KVM_CAP_PIT2" },
	{ KVM_CAP_IMMEDIATE_EXIT,	"KVM_CAP_IMMEDIATE_EXIT" },
};

static pthread_once_t	kick_once = PTHREAD_ONCE_INIT;

/* ioctl() that retries on EINTR and returns the result or -errno. */
static int
xioctl(int fd, unsigned long req, void *arg)
{
	int	rc;

	do
		rc = ioctl(fd, req, arg);
	while (rc == -1 && errno == EINTR);
	return rc == -1 ? -errno : rc;
}

/* Open /dev/kvm for the backend, close-on-exec. */
static int
kvm_open(void)
{
	int	fd;

	if ((fd = open(KVM_DEV, O_RDWR | O_CLOEXEC)) == -1)
		return -errno;
	return fd;
}

/* Does the cpuinfo file list a hardware virtualization flag? */
static bool
cpu_has_virt_flag(const char *path)
{
	FILE	*f;
	char	*line = NULL, *tok, *save;
	size_t	 cap = 0;
	bool	 found = false;

	/* /proc files report size 0: read them line by line. */
	if ((f = fopen(path, "re")) == NULL)
		return false;
	while (!found && getline(&line, &cap, f) != -1) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		for (tok = strtok_r(line, " \t\n", &save); tok != NULL;
		    tok = strtok_r(NULL, " \t\n", &save))
			if (strcmp(tok, "vmx") == 0 || strcmp(tok, "svm") == 0)
				found = true;
		break;
	}
	free(line);
	fclose(f);
	return found;
}

/* What kind of KVM this host offers, without keeping anything open. */
enum hv_kind
hv_probe(const char **why)
{
	static char	reason[128];
	struct stat	st;
	int		fd, vm;

	if ((fd = kvm_open()) < 0) {
		snprintf(reason, sizeof reason, "%s: %s", KVM_DEV,
		    strerror(-fd));
		if (why != NULL)
			*why = reason;
		return HV_KIND_ABSENT;
	}
	if (stat("/sys/module/kvm_pvm", &st) == 0) {
		close(fd);
		return HV_KIND_PVM;
	}
	if (cpu_has_virt_flag("/proc/cpuinfo")) {
		close(fd);
		return HV_KIND_HARDWARE;
	}
	/* Neither PVM nor a CPU flag (hidden by a hypervisor?): try a VM. */
	if ((vm = xioctl(fd, KVM_CREATE_VM, NULL)) < 0) {
		snprintf(reason, sizeof reason, "%s: KVM_CREATE_VM: %s",
		    KVM_DEV, strerror(-vm));
		close(fd);
		if (why != NULL)
			*why = reason;
		return HV_KIND_ABSENT;
	}
	close(vm);
	close(fd);
	return HV_KIND_HARDWARE;
}

/* Human name of a backend kind. */
const char *
hv_kind_name(enum hv_kind kind)
{
	switch (kind) {
	case HV_KIND_ABSENT:
		return "absent";
	case HV_KIND_HARDWARE:
		return "hardware";
	case HV_KIND_PVM:
		return "pvm";
	case HV_KIND_FAKE:
		return "fake";
	}
	return "unknown";
}

/* KVM_GET_API_VERSION of /dev/kvm. */
int
hv_api_version(void)
{
	int	fd, v;

	if ((fd = kvm_open()) < 0)
		return fd;
	v = xioctl(fd, KVM_GET_API_VERSION, NULL);
	close(fd);
	return v;
}

/*
 * Fetch the supported CPUID table, growing the buffer while E2BIG.  The
 * table is the host's and does not change: it is fetched once per
 * process and copied (the ioctl runs CPUID for every leaf, which costs a
 * quarter of a millisecond when the host is itself virtualized, a good
 * part of a snapshot restore).
 */
static pthread_mutex_t	 cpuid_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kvm_cpuid2 *cpuid_cache;

static struct kvm_cpuid2 *
cpuid_copy(const struct kvm_cpuid2 *c)
{
	size_t	size = sizeof(*c) + c->nent * sizeof(c->entries[0]);

	return memcpy(xmalloc(size), c, size);
}

static int
get_supported_cpuid(int kvm_fd, struct kvm_cpuid2 **out)
{
	struct kvm_cpuid2	*c = NULL;
	unsigned		 n;
	int			 rc;

	pthread_mutex_lock(&cpuid_lock);
	if (cpuid_cache != NULL) {
		*out = cpuid_copy(cpuid_cache);
		pthread_mutex_unlock(&cpuid_lock);
		return 0;
	}
	pthread_mutex_unlock(&cpuid_lock);
	for (n = 64; n <= 4096; n *= 2) {
		c = xreallocarray(c, 1, sizeof(*c) +
		    n * sizeof(struct kvm_cpuid_entry2));
		memset(c, 0, sizeof(*c));
		c->nent = n;
		rc = xioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c);
		if (rc == 0) {
			pthread_mutex_lock(&cpuid_lock);
			if (cpuid_cache == NULL)
				cpuid_cache = cpuid_copy(c);
			pthread_mutex_unlock(&cpuid_lock);
			*out = c;
			return 0;
		}
		if (rc != -E2BIG)
			break;
	}
	free(c);
	return rc;
}

/*
 * Create the VM.  The irqchip and PIT are not created here but by
 * irqchip_ensure() when first needed: on some hosts (PVM) a memory slot
 * registered shortly after KVM_CREATE_IRQCHIP costs milliseconds (the
 * update waits out a grace period the irqchip's setup started), where
 * registered before it costs tens of microseconds.  The TSS and identity
 * map addresses must precede the first vCPU and cost nothing: set here.
 */
int
hv_create(struct hv **out, unsigned ncpus)
{
	uint64_t		 idmap = LAYOUT_IDENTITY_MAP;
	struct hv		*hv;
	size_t			 i;
	int			 rc;

	if (ncpus < 1 || ncpus > HV_MAX_VCPUS)
		return -EINVAL;
	hv = xcalloc(1, sizeof(*hv));
	hv->ncpus = ncpus;
	hv->vm_fd = -1;
	if ((hv->kvm_fd = kvm_open()) < 0) {
		rc = hv->kvm_fd;
		log_warnx("%s: %s", KVM_DEV, strerror(-rc));
		goto err_free;
	}
	if ((rc = xioctl(hv->kvm_fd, KVM_GET_API_VERSION, NULL)) < 0) {
		log_warnx("KVM_GET_API_VERSION: %s", strerror(-rc));
		goto err_close_kvm;
	}
	if (rc != KVM_API_EXPECTED) {
		log_warnx("%s: KVM API version %d, need %d", KVM_DEV, rc,
		    KVM_API_EXPECTED);
		rc = -ENOTSUP;
		goto err_close_kvm;
	}
	for (i = 0; i < ARRAY_SIZE(kvm_needed_caps); i++) {
		if (xioctl(hv->kvm_fd, KVM_CHECK_EXTENSION,
		    (void *)(uintptr_t)kvm_needed_caps[i].cap) <= 0) {
			log_warnx("%s: the kernel lacks %s; a newer kernel is "
			    "needed", KVM_DEV, kvm_needed_caps[i].name);
			rc = -ENOTSUP;
			goto err_close_kvm;
		}
	}
	if ((rc = xioctl(hv->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, NULL)) < 0) {
		log_warnx("KVM_GET_VCPU_MMAP_SIZE: %s", strerror(-rc));
		goto err_close_kvm;
	}
	hv->run_size = (size_t)rc;
	if ((rc = get_supported_cpuid(hv->kvm_fd, &hv->cpuid)) < 0) {
		log_warnx("KVM_GET_SUPPORTED_CPUID: %s", strerror(-rc));
		goto err_close_kvm;
	}
	if ((rc = xioctl(hv->kvm_fd, KVM_CREATE_VM, NULL)) < 0) {
		log_warnx("KVM_CREATE_VM: %s", strerror(-rc));
		goto err_free_cpuid;
	}
	hv->vm_fd = rc;
	if ((rc = xioctl(hv->vm_fd, KVM_SET_TSS_ADDR,
	    (void *)(uintptr_t)LAYOUT_TSS)) < 0) {
		log_warnx("KVM_SET_TSS_ADDR: %s", strerror(-rc));
		goto err_close_vm;
	}
	if ((rc = xioctl(hv->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap)) < 0) {
		log_warnx("KVM_SET_IDENTITY_MAP_ADDR: %s", strerror(-rc));
		goto err_close_vm;
	}
	if ((rc = pthread_mutex_init(&hv->irq_lock, NULL)) != 0) {
		rc = -rc;
		goto err_close_vm;
	}
	*out = hv;
	return 0;

err_close_vm:
	close(hv->vm_fd);
err_free_cpuid:
	free(hv->cpuid);
err_close_kvm:
	close(hv->kvm_fd);
err_free:
	free(hv);
	return rc;
}

/*
 * Create the in-kernel PIC/IOAPIC/LAPIC and then the PIT, once, on behalf
 * of `who` (named in the log line if it fails).  KVM wants the irqchip
 * before any vCPU and the PIT after the irqchip.  A part that failed is
 * tried again on the next call; one that succeeded cannot be undone and
 * is not repeated (a second KVM_CREATE_IRQCHIP is EEXIST).  Safe from
 * any thread; after success it is one atomic load.
 */
static int
irqchip_ensure(struct hv *hv, const char *who)
{
	struct kvm_pit_config	pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	int			rc = 0;

	if (__atomic_load_n(&hv->irq_ready, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&hv->irq_lock);
	if (!hv->have_irqchip) {
		if ((rc = xioctl(hv->vm_fd, KVM_CREATE_IRQCHIP, NULL)) < 0) {
			log_warnx("KVM_CREATE_IRQCHIP (first needed by %s): %s",
			    who, strerror(-rc));
			goto out;
		}
		hv->have_irqchip = true;
	}
	if (!hv->have_pit) {
		if ((rc = xioctl(hv->vm_fd, KVM_CREATE_PIT2, &pit)) < 0) {
			log_warnx("KVM_CREATE_PIT2 (first needed by %s): %s",
			    who, strerror(-rc));
			goto out;
		}
		hv->have_pit = true;
	}
	rc = 0;
	__atomic_store_n(&hv->irq_ready, true, __ATOMIC_RELEASE);
out:
	pthread_mutex_unlock(&hv->irq_lock);
	return rc;
}

/* Tear the VM down; vCPUs are gone already. */
void
hv_destroy(struct hv *hv)
{
	if (hv == NULL)
		return;
	pthread_mutex_destroy(&hv->irq_lock);
	close(hv->vm_fd);
	close(hv->kvm_fd);
	free(hv->cpuid);
	free(hv->msrs);
	free(hv);
}

/* KVM_SET_USER_MEMORY_REGION; size 0 deletes the slot. */
int
hv_mem_map(struct hv *hv, uint32_t slot, uint64_t gpa, uint64_t size,
    void *hva, unsigned flags)
{
	struct kvm_userspace_memory_region	r;

	memset(&r, 0, sizeof(r));
	r.slot = slot;
	r.guest_phys_addr = gpa;
	r.memory_size = size;
	r.userspace_addr = (uintptr_t)hva;
	if (flags & HV_MEM_READONLY)
		r.flags |= KVM_MEM_READONLY;
	if (flags & HV_MEM_LOG_DIRTY)
		r.flags |= KVM_MEM_LOG_DIRTY_PAGES;
	return xioctl(hv->vm_fd, KVM_SET_USER_MEMORY_REGION, &r);
}

/* Delete a memory slot. */
int
hv_mem_unmap(struct hv *hv, uint32_t slot)
{
	struct kvm_userspace_memory_region	r;

	memset(&r, 0, sizeof(r));
	r.slot = slot;
	return xioctl(hv->vm_fd, KVM_SET_USER_MEMORY_REGION, &r);
}

/* KVM_GET_DIRTY_LOG: without KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled
 * (we never enable it) the get also clears the log and write-protects
 * the pages again. */
int
hv_mem_dirty_log(struct hv *hv, uint32_t slot, uint64_t *bitmap)
{
	struct kvm_dirty_log	l;

	memset(&l, 0, sizeof(l));
	l.slot = slot;
	l.dirty_bitmap = bitmap;
	/* KVM answers -ENOENT for a slot without a log, as promised. */
	return xioctl(hv->vm_fd, KVM_GET_DIRTY_LOG, &l);
}

/* Set an irqchip input line. */
int
hv_irq_line(struct hv *hv, uint32_t gsi, int level)
{
	struct kvm_irq_level	l;
	int			rc;

	if ((rc = irqchip_ensure(hv, "hv_irq_line")) < 0)
		return rc;
	memset(&l, 0, sizeof(l));
	l.irq = gsi;
	l.level = level ? 1 : 0;
	return xioctl(hv->vm_fd, KVM_IRQ_LINE, &l);
}

/* Route eventfd fd to gsi (level-triggered with a resample fd). */
int
hv_irqfd(struct hv *hv, int fd, uint32_t gsi, int resamplefd)
{
	struct kvm_irqfd	i;
	int			rc;

	if ((rc = irqchip_ensure(hv, "hv_irqfd")) < 0)
		return rc;
	memset(&i, 0, sizeof(i));
	i.fd = fd;
	i.gsi = gsi;
	if (resamplefd >= 0) {
		i.flags = KVM_IRQFD_FLAG_RESAMPLE;
		i.resamplefd = resamplefd;
	}
	return xioctl(hv->vm_fd, KVM_IRQFD, &i);
}

/* Remove an irqfd route (never creates the irqchip: no route yet). */
int
hv_irqfd_remove(struct hv *hv, int fd, uint32_t gsi)
{
	struct kvm_irqfd	i;

	memset(&i, 0, sizeof(i));
	i.fd = fd;
	i.gsi = gsi;
	i.flags = KVM_IRQFD_FLAG_DEASSIGN;
	return xioctl(hv->vm_fd, KVM_IRQFD, &i);
}

/* Build and issue a KVM_IOEVENTFD request. */
static int
ioeventfd(struct hv *hv, int fd, uint64_t addr, uint32_t len,
    unsigned flags, uint64_t data, bool deassign)
{
	struct kvm_ioeventfd	e;

	memset(&e, 0, sizeof(e));
	e.fd = fd;
	e.addr = addr;
	e.len = len;
	e.datamatch = data;
	if (flags & HV_IOEVENT_PIO)
		e.flags |= KVM_IOEVENTFD_FLAG_PIO;
	if (flags & HV_IOEVENT_DATAMATCH)
		e.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
	if (deassign)
		e.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
	return xioctl(hv->vm_fd, KVM_IOEVENTFD, &e);
}

/* Register an ioeventfd. */
int
hv_ioeventfd(struct hv *hv, int fd, uint64_t addr, uint32_t len,
    unsigned flags, uint64_t data)
{
	return ioeventfd(hv, fd, addr, len, flags, data, false);
}

/* Unregister an ioeventfd; arguments as at registration. */
int
hv_ioeventfd_remove(struct hv *hv, int fd, uint64_t addr, uint32_t len,
    unsigned flags, uint64_t data)
{
	return ioeventfd(hv, fd, addr, len, flags, data, true);
}

/* Bits needed to number n items (ceil(log2(n))). */
static unsigned
order_of(unsigned n)
{
	unsigned	o = 0;

	while ((1U << o) < n)
		o++;
	return o;
}

/* The entry for leaf fn, subleaf idx (ignored where not significant). */
static struct kvm_cpuid_entry2 *
cpuid_find(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	unsigned	i;

	for (i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn &&
		    (!(c->entries[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) ||
		    c->entries[i].index == idx))
			return &c->entries[i];
	return NULL;
}

/* Bit `bit` of a register of leaf fn.idx; absent leaves read 0. */
static bool
cpuid_bit(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx, char reg,
    unsigned bit)
{
	struct kvm_cpuid_entry2	*e;
	uint32_t		 v;

	if ((e = cpuid_find(c, fn, idx)) == NULL)
		return false;
	v = reg == 'a' ? e->eax : reg == 'b' ? e->ebx : reg == 'c' ?
	    e->ecx : e->edx;
	return (v >> bit) & 1;
}

/*
 * May XSAVE state component `comp` (an XCR0 or IA32_XSS bit) be
 * advertised?  Only when the feature it holds the state of is in the
 * table (SDM vol. 1, 13.1-13.5).  Components this table does not know
 * are not advertised: a guest cannot use state it has no feature for.
 */
static bool
xsave_comp_backed(struct kvm_cpuid2 *c, unsigned comp)
{
	switch (comp) {
	case 0:					/* x87 */
	case 1:					/* SSE */
		return true;
	case 2:					/* AVX (YMM_Hi128) */
		return cpuid_bit(c, 1, 0, 'c', 28);
	case 3:					/* MPX BNDREGS */
	case 4:					/* MPX BNDCSR */
		return cpuid_bit(c, 7, 0, 'b', 14);
	case 5:					/* AVX-512 opmask */
	case 6:					/* AVX-512 ZMM_Hi256 */
	case 7:					/* AVX-512 Hi16_ZMM */
		return cpuid_bit(c, 7, 0, 'b', 16) && cpuid_bit(c, 1, 0, 'c', 28);
	case 8:					/* PT (supervisor) */
		return cpuid_bit(c, 7, 0, 'b', 25);
	case 9:					/* PKRU */
		return cpuid_bit(c, 7, 0, 'c', 3);
	case 11:				/* CET user (supervisor) */
	case 12:				/* CET supervisor */
		return cpuid_bit(c, 7, 0, 'c', 7) || cpuid_bit(c, 7, 0, 'd', 20);
	case 17:				/* AMX TILECFG */
	case 18:				/* AMX TILEDATA */
		return cpuid_bit(c, 7, 0, 'd', 24);
	default:
		return false;
	}
}

/*
 * Make leaf 0xD agree with the rest of the table.  KVM_GET_SUPPORTED_CPUID
 * reports what the host can context-switch, which can include components
 * whose feature bits the same table hides (a PVM host offers AVX and
 * AVX-512 state with XSAVE and AVX absent from leaf 1), and Linux checks
 * the sizes it computes from the subleaves against the sizes CPUID
 * reports.  So: without XSAVE, leaf 0xD is all zero (as on a CPU without
 * it); otherwise subleaf 0/1 advertise only components whose feature is
 * present (and whose partners are: MPX, AVX-512 and AMX come in sets),
 * subleaves of the others read zero, and the sizes are recomputed from
 * the remaining subleaves.  0xD.0 EBX (size for the current XCR0) and
 * 0xD.1 EBX are kept up to date by KVM as the guest writes XCR0/XSS; the
 * values set here are those for everything advertised, as KVM reports.
 */
static void
cpuid_fix_xsave(struct kvm_cpuid2 *c)
{
	static const uint64_t	 sets[] = { 0x18, 0xe0, 0x1800, 0x60000 };
	struct kvm_cpuid_entry2	*e, *s0, *s1, *si;
	uint64_t		 xcr0, xss, m;
	uint32_t		 std, cmp;
	unsigned		 i;

	if ((s0 = cpuid_find(c, 0xd, 0)) == NULL)
		return;
	s1 = cpuid_find(c, 0xd, 1);
	if (!cpuid_bit(c, 1, 0, 'c', 26)) {	/* no XSAVE */
		for (i = 0; i < c->nent; i++) {
			e = &c->entries[i];
			if (e->function == 0xd)
				e->eax = e->ebx = e->ecx = e->edx = 0;
		}
		return;
	}
	xcr0 = ((uint64_t)s0->edx << 32 | s0->eax) | 0x3;
	xss = 0;
	/* Supervisor state needs XSAVES (0xD.1 EAX bit 3). */
	if (s1 != NULL && (s1->eax & (1U << 3)))
		xss = (uint64_t)s1->edx << 32 | s1->ecx;
	for (i = 2; i < 64; i++) {
		m = 1ULL << i;
		if (!((xcr0 | xss) & m))
			continue;
		si = cpuid_find(c, 0xd, i);
		if (si == NULL || si->eax == 0 || !xsave_comp_backed(c, i)) {
			xcr0 &= ~m;
			xss &= ~m;
		}
	}
	for (i = 0; i < ARRAY_SIZE(sets); i++) {
		if ((xcr0 & sets[i]) != sets[i])
			xcr0 &= ~sets[i];
		if ((xss & sets[i]) != sets[i])
			xss &= ~sets[i];
	}
	/* Sizes: standard format from the offsets, compacted in order. */
	std = cmp = 512 + 64;			/* legacy area + header */
	for (i = 2; i < 64; i++) {
		m = 1ULL << i;
		si = cpuid_find(c, 0xd, i);
		if (si == NULL || si->function != 0xd || si->index != i)
			continue;
		if (!((xcr0 | xss) & m)) {
			si->eax = si->ebx = si->ecx = si->edx = 0;
			continue;
		}
		if ((xcr0 & m) && si->ebx + si->eax > std)
			std = si->ebx + si->eax;
		if (si->ecx & 0x2)		/* 64-byte aligned if compacted */
			cmp = (cmp + 63) & ~63U;
		cmp += si->eax;
	}
	s0->eax = (uint32_t)xcr0;
	s0->edx = (uint32_t)(xcr0 >> 32);
	s0->ebx = s0->ecx = std;
	if (s1 != NULL) {
		s1->ecx = (uint32_t)xss;
		s1->edx = (uint32_t)(xss >> 32);
		/* XSAVEC or XSAVES: the compacted size; else reserved. */
		s1->ebx = (s1->eax & 0xa) ? cmp : 0;
	}
}

/*
 * The per-vCPU CPUID: the supported table with this vCPU's APIC ID and a
 * topology of ncpus single-threaded cores in one package.  Leaf 0xB (and
 * 0x1F when the table reaches it) is rebuilt: subleaf 0 the SMT level,
 * 1 the core level, 2 the invalid terminator; EDX is the x2APIC ID.
 * Leaf 0xD is made consistent with the feature bits: cpuid_fix_xsave().
 */
static struct kvm_cpuid2 *
vcpu_cpuid(const struct hv *hv, unsigned id)
{
	const struct kvm_cpuid2	*src = hv->cpuid;
	struct kvm_cpuid2	*c;
	struct kvm_cpuid_entry2	*e;
	uint32_t		 maxleaf = 0, topo[2] = { 0xb, 0x1f };
	unsigned		 i, j, n = 0, ncpus = hv->ncpus, cache;

	c = xcalloc(1, sizeof(*c) + (src->nent + 6) *
	    sizeof(struct kvm_cpuid_entry2));
	for (i = 0; i < src->nent; i++) {
		if (src->entries[i].function == 0)
			maxleaf = src->entries[i].eax;
		if (src->entries[i].function == 0xb ||
		    src->entries[i].function == 0x1f)
			continue;
		c->entries[n] = src->entries[i];
		e = &c->entries[n++];
		switch (e->function) {
		case 1:
			e->ebx = (e->ebx & 0xffff) | (ncpus << 16) | (id << 24);
			e->ecx |= 1U << 31;		/* hypervisor */
			if (ncpus > 1)
				e->edx |= 1U << 28;	/* HTT */
			break;
		case 4:
			/* Deterministic cache parameters (Intel). */
			if ((e->eax & 0x1f) == 0)
				break;
			cache = (e->eax >> 5) & 7;
			e->eax &= 0x3fff;
			e->eax |= (ncpus - 1) << 26;
			if (cache >= 3)
				e->eax |= (ncpus - 1) << 14;
			break;
		case 0x80000008:
			/* AMD: NC and ApicIdCoreIdSize. */
			e->ecx &= ~0xf0ffU;
			e->ecx |= (ncpus - 1) | (order_of(ncpus) << 12);
			break;
		case 0x8000001d:
			/* AMD cache topology: only L3 is shared. */
			if ((e->eax & 0x1f) == 0)
				break;
			cache = (e->eax >> 5) & 7;
			e->eax &= ~(0xfffU << 14);
			if (cache >= 3)
				e->eax |= (ncpus - 1) << 14;
			break;
		case 0x8000001e:
			e->eax = id;			/* extended APIC ID */
			e->ebx = id & 0xff;		/* core id, 1 thread */
			e->ecx = 0;			/* node 0 */
			break;
		}
	}
	for (j = 0; j < ARRAY_SIZE(topo); j++) {
		if (maxleaf < topo[j])
			continue;
		for (i = 0; i < 3; i++) {
			e = &c->entries[n++];
			memset(e, 0, sizeof(*e));
			e->function = topo[j];
			e->index = i;
			e->flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
			e->edx = id;
			switch (i) {
			case 0:				/* SMT: 1 thread */
				e->ebx = 1;
				e->ecx = (1 << 8) | i;
				break;
			case 1:				/* core */
				e->eax = order_of(ncpus);
				e->ebx = ncpus;
				e->ecx = (2 << 8) | i;
				break;
			default:			/* end of levels */
				e->ecx = i;
				break;
			}
		}
	}
	c->nent = n;
	cpuid_fix_xsave(c);
	return c;
}

/*
 * LAPIC as firmware leaves it: LINT0 delivers ExtINT on the BSP (so the
 * PIC reaches the CPU) and LINT1 delivers NMI everywhere.
 */
static int
vcpu_setup_lapic(struct hv_vcpu *v)
{
	struct kvm_lapic_state	 lapic;
	uint32_t		 reg;
	int			 rc;

	if ((rc = xioctl(v->fd, KVM_GET_LAPIC, &lapic)) < 0)
		return rc;
	if (v->id == 0) {
		memcpy(&reg, &lapic.regs[APIC_LVT_LINT0], sizeof(reg));
		reg = (reg & ~(APIC_LVT_MASKED | 0x700)) | APIC_DM_EXTINT;
		memcpy(&lapic.regs[APIC_LVT_LINT0], &reg, sizeof(reg));
	}
	memcpy(&reg, &lapic.regs[APIC_LVT_LINT1], sizeof(reg));
	reg = (reg & ~(APIC_LVT_MASKED | 0x700)) | APIC_DM_NMI;
	memcpy(&lapic.regs[APIC_LVT_LINT1], &reg, sizeof(reg));
	return xioctl(v->fd, KVM_SET_LAPIC, &lapic);
}

/* The kick signal's handler: its only job is not to be the default. */
static void
kick_signal_cb(int sig)
{
	(void)sig;
}

/* Install the kick signal handler once per process. */
static void
kick_install(void)
{
	struct sigaction	sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_signal_cb;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0;		/* no SA_RESTART: KVM_RUN must see EINTR */
	if (sigaction(HV_KICK_SIGNAL, &sa, NULL) == -1)
		fatal("sigaction kick signal");
}

/* Create vCPU id with its kvm_run page, CPUID and LAPIC. */
int
hv_vcpu_create(struct hv *hv, unsigned id, struct hv_vcpu **out)
{
	struct kvm_cpuid2	*cpuid;
	struct hv_vcpu		*v;
	void			*run;
	int			 rc;

	if (id >= hv->ncpus)
		return -EINVAL;
	/* The in-kernel LAPIC is made with the vCPU: irqchip first. */
	if ((rc = irqchip_ensure(hv, "hv_vcpu_create")) < 0)
		return rc;
	pthread_once(&kick_once, kick_install);
	v = xcalloc(1, sizeof(*v));
	v->hv = hv;
	v->id = id;
	if ((rc = xioctl(hv->vm_fd, KVM_CREATE_VCPU,
	    (void *)(uintptr_t)id)) < 0) {
		log_warnx("KVM_CREATE_VCPU %u: %s", id, strerror(-rc));
		goto err_free;
	}
	v->fd = rc;
	run = mmap(NULL, hv->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
	    v->fd, 0);
	if (run == MAP_FAILED) {
		rc = -errno;
		log_warn("mmap kvm_run of vCPU %u", id);
		goto err_close;
	}
	v->run = run;
	cpuid = vcpu_cpuid(hv, id);
	rc = xioctl(v->fd, KVM_SET_CPUID2, cpuid);
	free(cpuid);
	if (rc < 0) {
		log_warnx("KVM_SET_CPUID2 vCPU %u: %s", id, strerror(-rc));
		goto err_unmap;
	}
	if ((rc = vcpu_setup_lapic(v)) < 0) {
		log_warnx("LAPIC setup of vCPU %u: %s", id, strerror(-rc));
		goto err_unmap;
	}
	if ((rc = pthread_mutex_init(&v->kick_lock, NULL)) != 0) {
		rc = -rc;
		goto err_unmap;
	}
	*out = v;
	return 0;

err_unmap:
	munmap(v->run, hv->run_size);
err_close:
	close(v->fd);
err_free:
	free(v);
	return rc;
}

/* Destroy a vCPU: its thread no longer runs it. */
void
hv_vcpu_destroy(struct hv_vcpu *v)
{
	if (v == NULL)
		return;
	pthread_mutex_destroy(&v->kick_lock);
	munmap(v->run, v->hv->run_size);
	close(v->fd);
	free(v);
}

/* The vCPU's index (= APIC ID). */
unsigned
hv_vcpu_id(const struct hv_vcpu *v)
{
	return v->id;
}

/* General-purpose registers. */
int
hv_vcpu_get_regs(struct hv_vcpu *v, struct hv_regs *r)
{
	struct kvm_regs	k;
	int		rc;

	if ((rc = xioctl(v->fd, KVM_GET_REGS, &k)) < 0)
		return rc;
	r->rax = k.rax; r->rbx = k.rbx; r->rcx = k.rcx; r->rdx = k.rdx;
	r->rsi = k.rsi; r->rdi = k.rdi; r->rsp = k.rsp; r->rbp = k.rbp;
	r->r8 = k.r8; r->r9 = k.r9; r->r10 = k.r10; r->r11 = k.r11;
	r->r12 = k.r12; r->r13 = k.r13; r->r14 = k.r14; r->r15 = k.r15;
	r->rip = k.rip; r->rflags = k.rflags;
	return 0;
}

/* Set general-purpose registers. */
int
hv_vcpu_set_regs(struct hv_vcpu *v, const struct hv_regs *r)
{
	struct kvm_regs	k;

	memset(&k, 0, sizeof(k));
	k.rax = r->rax; k.rbx = r->rbx; k.rcx = r->rcx; k.rdx = r->rdx;
	k.rsi = r->rsi; k.rdi = r->rdi; k.rsp = r->rsp; k.rbp = r->rbp;
	k.r8 = r->r8; k.r9 = r->r9; k.r10 = r->r10; k.r11 = r->r11;
	k.r12 = r->r12; k.r13 = r->r13; k.r14 = r->r14; k.r15 = r->r15;
	k.rip = r->rip; k.rflags = r->rflags;
	return xioctl(v->fd, KVM_SET_REGS, &k);
}

/* kvm_segment -> hv_segment. */
static void
seg_from_kvm(struct hv_segment *h, const struct kvm_segment *k)
{
	h->base = k->base;
	h->limit = k->limit;
	h->selector = k->selector;
	h->type = k->type;
	h->present = k->present;
	h->dpl = k->dpl;
	h->db = k->db;
	h->s = k->s;
	h->l = k->l;
	h->g = k->g;
	h->avl = k->avl;
	h->unusable = k->unusable;
}

/* hv_segment -> kvm_segment. */
static void
seg_to_kvm(struct kvm_segment *k, const struct hv_segment *h)
{
	memset(k, 0, sizeof(*k));
	k->base = h->base;
	k->limit = h->limit;
	k->selector = h->selector;
	k->type = h->type;
	k->present = h->present;
	k->dpl = h->dpl;
	k->db = h->db;
	k->s = h->s;
	k->l = h->l;
	k->g = h->g;
	k->avl = h->avl;
	k->unusable = h->unusable;
}

/* System registers. */
int
hv_vcpu_get_sregs(struct hv_vcpu *v, struct hv_sregs *s)
{
	struct kvm_sregs	k;
	int			rc;

	if ((rc = xioctl(v->fd, KVM_GET_SREGS, &k)) < 0)
		return rc;
	seg_from_kvm(&s->cs, &k.cs);
	seg_from_kvm(&s->ds, &k.ds);
	seg_from_kvm(&s->es, &k.es);
	seg_from_kvm(&s->fs, &k.fs);
	seg_from_kvm(&s->gs, &k.gs);
	seg_from_kvm(&s->ss, &k.ss);
	seg_from_kvm(&s->tr, &k.tr);
	seg_from_kvm(&s->ldt, &k.ldt);
	s->gdt.base = k.gdt.base;
	s->gdt.limit = k.gdt.limit;
	s->idt.base = k.idt.base;
	s->idt.limit = k.idt.limit;
	s->cr0 = k.cr0; s->cr2 = k.cr2; s->cr3 = k.cr3; s->cr4 = k.cr4;
	s->cr8 = k.cr8; s->efer = k.efer; s->apic_base = k.apic_base;
	return 0;
}

/*
 * Set system registers.  The pending-interrupt bitmap, which hv_sregs
 * does not carry, is kept as KVM has it.
 */
int
hv_vcpu_set_sregs(struct hv_vcpu *v, const struct hv_sregs *s)
{
	struct kvm_sregs	k;
	int			rc;

	if ((rc = xioctl(v->fd, KVM_GET_SREGS, &k)) < 0)
		return rc;
	seg_to_kvm(&k.cs, &s->cs);
	seg_to_kvm(&k.ds, &s->ds);
	seg_to_kvm(&k.es, &s->es);
	seg_to_kvm(&k.fs, &s->fs);
	seg_to_kvm(&k.gs, &s->gs);
	seg_to_kvm(&k.ss, &s->ss);
	seg_to_kvm(&k.tr, &s->tr);
	seg_to_kvm(&k.ldt, &s->ldt);
	k.gdt.base = s->gdt.base;
	k.gdt.limit = s->gdt.limit;
	k.idt.base = s->idt.base;
	k.idt.limit = s->idt.limit;
	k.cr0 = s->cr0; k.cr2 = s->cr2; k.cr3 = s->cr3; k.cr4 = s->cr4;
	k.cr8 = s->cr8; k.efer = s->efer; k.apic_base = s->apic_base;
	return xioctl(v->fd, KVM_SET_SREGS, &k);
}

/* Take every pending kick signal of this thread, without waiting. */
static void
drain_kick_signal(void)
{
	struct timespec	 zero = { 0, 0 };
	sigset_t	 kick;

	sigemptyset(&kick);
	sigaddset(&kick, HV_KICK_SIGNAL);
	while (sigtimedwait(&kick, NULL, &zero) > 0)
		;
}

/*
 * First run on this thread: remember it as the kick target, block the
 * kick signal here and let KVM unblock it only inside KVM_RUN.  The mask
 * KVM applies is this thread's mask now, minus the kick signal.
 */
static int
vcpu_bind_thread(struct hv_vcpu *v)
{
	struct {
		struct kvm_signal_mask	hdr;
		uint8_t			set[8];	/* the kernel's sigset_t */
	} km;
	sigset_t	 kick, cur;
	int		 rc;

	sigemptyset(&kick);
	sigaddset(&kick, HV_KICK_SIGNAL);
	if ((rc = pthread_sigmask(SIG_BLOCK, &kick, &cur)) != 0)
		return -rc;
	sigdelset(&cur, HV_KICK_SIGNAL);
	/* KVM wants the kernel's 64-bit sigset: the first 8 bytes. */
	memset(&km, 0, sizeof(km));
	km.hdr.len = sizeof(km.set);
	memcpy(km.set, &cur, sizeof(km.set));
	if ((rc = xioctl(v->fd, KVM_SET_SIGNAL_MASK, &km)) < 0)
		return rc;
	/*
	 * A kick aimed at a vCPU this thread ran before and never ran
	 * again may still be pending here: not ours, and that vCPU's
	 * immediate_exit still holds its kick.
	 */
	drain_kick_signal();
	pthread_mutex_lock(&v->kick_lock);
	v->thread = pthread_self();
	v->have_thread = true;
	pthread_mutex_unlock(&v->kick_lock);
	return 0;
}

/* Consume every kick up to now: see the comment at the top. */
static void
vcpu_drain_kicks(struct hv_vcpu *v)
{
	pthread_mutex_lock(&v->kick_lock);
	__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
	drain_kick_signal();
	pthread_mutex_unlock(&v->kick_lock);
}

/* Run the vCPU until an exit user space must handle. */
int
hv_vcpu_run(struct hv_vcpu *v, struct hv_exit *exit)
{
	struct kvm_run	*run = v->run;
	int		 rc;

	/* First run, or the vCPU moved to another thread. */
	if ((!v->have_thread || !pthread_equal(v->thread, pthread_self())) &&
	    (rc = vcpu_bind_thread(v)) < 0)
		return rc;
	memset(exit, 0, sizeof(*exit));
	for (;;) {
		if (ioctl(v->fd, KVM_RUN, NULL) == 0)
			break;
		if (errno == EAGAIN)
			continue;
		if (errno == EINTR) {
			vcpu_drain_kicks(v);
			exit->reason = HV_EXIT_INTR;
			return 0;
		}
		return -errno;
	}
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		exit->reason = HV_EXIT_IO;
		exit->io.port = run->io.port;
		exit->io.size = run->io.size;
		exit->io.write = run->io.direction == KVM_EXIT_IO_OUT;
		exit->io.count = run->io.count;
		exit->io.data = (uint8_t *)run + run->io.data_offset;
		break;
	case KVM_EXIT_MMIO:
		exit->reason = HV_EXIT_MMIO;
		exit->mmio.gpa = run->mmio.phys_addr;
		exit->mmio.len = run->mmio.len;
		exit->mmio.write = run->mmio.is_write;
		exit->mmio.data = run->mmio.data;
		break;
	case KVM_EXIT_HLT:
		exit->reason = HV_EXIT_HLT;
		break;
	case KVM_EXIT_SHUTDOWN:
		exit->reason = HV_EXIT_SHUTDOWN;
		break;
	case KVM_EXIT_INTR:
		vcpu_drain_kicks(v);
		exit->reason = HV_EXIT_INTR;
		break;
	case KVM_EXIT_SYSTEM_EVENT:
		switch (run->system_event.type) {
		case KVM_SYSTEM_EVENT_RESET:
			exit->reason = HV_EXIT_RESET;
			break;
		case KVM_SYSTEM_EVENT_SHUTDOWN:
			exit->reason = HV_EXIT_POWEROFF;
			break;
		default:
			exit->reason = HV_EXIT_FAIL;
			exit->fail.code = run->system_event.type;
			exit->fail.what = run->system_event.type ==
			    KVM_SYSTEM_EVENT_CRASH ? "guest crash event" :
			    "unknown system event";
			break;
		}
		break;
	case KVM_EXIT_FAIL_ENTRY:
		exit->reason = HV_EXIT_FAIL;
		exit->fail.code =
		    run->fail_entry.hardware_entry_failure_reason;
		exit->fail.what = "vm entry failed";
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		exit->reason = HV_EXIT_FAIL;
		exit->fail.code = run->internal.suberror;
		switch (run->internal.suberror) {
		case KVM_INTERNAL_ERROR_EMULATION:
			exit->fail.what = "instruction emulation failed";
			break;
		case KVM_INTERNAL_ERROR_SIMUL_EX:
			exit->fail.what = "exception while delivering "
			    "an exception";
			break;
		case KVM_INTERNAL_ERROR_DELIVERY_EV:
			exit->fail.what = "exception while delivering an event";
			break;
		default:
			exit->fail.what = "kvm internal error";
			break;
		}
		break;
	default:
		exit->reason = HV_EXIT_FAIL;
		exit->fail.code = run->exit_reason;
		exit->fail.what = "unexpected kvm exit";
		break;
	}
	return 0;
}

/* Make the current or next run return HV_EXIT_INTR. */
void
hv_vcpu_kick(struct hv_vcpu *v)
{
	pthread_mutex_lock(&v->kick_lock);
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (v->have_thread)
		pthread_kill(v->thread, HV_KICK_SIGNAL);
	pthread_mutex_unlock(&v->kick_lock);
}

/* Halted, interrupts off, no NMI pending or being injected. */
int
hv_vcpu_halted_for_good(struct hv_vcpu *v, bool *out)
{
	struct kvm_mp_state	mp;
	struct kvm_regs		regs;
	struct kvm_vcpu_events	ev;
	int			rc;

	*out = false;
	if ((rc = xioctl(v->fd, KVM_GET_MP_STATE, &mp)) < 0)
		return rc;
	/* An AP that was never started (or was sent INIT) waits for a
	 * SIPI: it runs again only if another CPU starts it, so when every
	 * other CPU is halted for good, so is it. */
	if (mp.mp_state == KVM_MP_STATE_UNINITIALIZED ||
	    mp.mp_state == KVM_MP_STATE_INIT_RECEIVED) {
		*out = v->id != 0;
		return 0;
	}
	if (mp.mp_state != KVM_MP_STATE_HALTED)
		return 0;
	if ((rc = xioctl(v->fd, KVM_GET_REGS, &regs)) < 0)
		return rc;
	if (regs.rflags & RFLAGS_IF)
		return 0;
	if ((rc = xioctl(v->fd, KVM_GET_VCPU_EVENTS, &ev)) < 0)
		return rc;
	*out = ev.nmi.pending == 0 && ev.nmi.injected == 0;
	return 0;
}

/*
 * Snapshot state.  Blobs are "KVMV" / "KVMM" version 1: one record per
 * KVM structure, the structure as the kernel's UAPI lays it out (fixed
 * by the ABI, so records are portable between kernels of one
 * architecture).
 */
#define KVM_VCPU_MAGIC		0x564d564bU	/* "KVMV" */
#define KVM_VM_MAGIC		0x4d4d564bU	/* "KVMM" */
#define KVM_STATE_VERSION	1

enum {
	REC_REGS = 1, REC_SREGS, REC_FPU, REC_XSAVE, REC_XCRS, REC_MSRS,
	REC_LAPIC, REC_EVENTS, REC_MP_STATE, REC_DEBUGREGS,
	REC_PIC_MASTER = 32, REC_PIC_SLAVE, REC_IOAPIC, REC_PIT2, REC_CLOCK,
};

#define MSR_MAX		1024

/* kvm_msrs with room for n entries. */
static struct kvm_msrs *
msrs_alloc(unsigned n)
{
	struct kvm_msrs	*m;

	m = xcalloc(1, sizeof(*m) + n * sizeof(struct kvm_msr_entry));
	m->nmsrs = n;
	return m;
}

/*
 * The MSRs worth saving: KVM_GET_MSR_INDEX_LIST (MSRs the host saves
 * and emulates), less those this vCPU cannot read back (the list names
 * MSRs of features the CPUID hides, and a PVM host refuses some).
 */
static int
msrs_probe(struct hv_vcpu *v)
{
	struct hv	*hv = v->hv;
	struct kvm_msr_list *l;
	struct kvm_msrs	*one;
	unsigned	 i;
	int		 rc = 0;

	pthread_mutex_lock(&hv->irq_lock);
	if (hv->msrs_known)
		goto out;
	l = xcalloc(1, sizeof(*l) + MSR_MAX * sizeof(uint32_t));
	l->nmsrs = MSR_MAX;
	if ((rc = xioctl(hv->kvm_fd, KVM_GET_MSR_INDEX_LIST, l)) < 0) {
		log_warnx("KVM_GET_MSR_INDEX_LIST: %s", strerror(-rc));
		free(l);
		goto out;
	}
	hv->msrs = xcalloc(l->nmsrs + 1, sizeof(uint32_t));
	one = msrs_alloc(1);
	for (i = 0; i < l->nmsrs; i++) {
		one->nmsrs = 1;
		one->entries[0].index = l->indices[i];
		if (xioctl(v->fd, KVM_GET_MSRS, one) == 1)
			hv->msrs[hv->nmsrs++] = l->indices[i];
	}
	free(one);
	free(l);
	hv->msrs_known = true;
	rc = 0;
out:
	pthread_mutex_unlock(&hv->irq_lock);
	return rc;
}

/* Append the vCPU's MSRs as a kvm_msrs record. */
static int
save_msrs(struct hv_vcpu *v, uint8_t **buf, size_t *len)
{
	struct kvm_msrs	*m;
	unsigned	 i;
	int		 rc;

	if ((rc = msrs_probe(v)) < 0)
		return rc;
	m = msrs_alloc(v->hv->nmsrs);
	for (i = 0; i < v->hv->nmsrs; i++)
		m->entries[i].index = v->hv->msrs[i];
	if ((rc = xioctl(v->fd, KVM_GET_MSRS, m)) < 0)
		goto out;
	if ((unsigned)rc != m->nmsrs) {
		log_warnx("KVM_GET_MSRS: MSR 0x%x did not read back",
		    m->entries[rc].index);
		rc = -EIO;
		goto out;
	}
	hv_blob_rec(buf, len, REC_MSRS, m, sizeof(*m) +
	    m->nmsrs * sizeof(struct kvm_msr_entry));
	rc = 0;
out:
	free(m);
	return rc;
}

/* Append the vCPU's FPU/SSE/AVX state: XSAVE2 size when larger. */
static int
save_fpu(struct hv_vcpu *v, uint8_t **buf, size_t *len)
{
	struct kvm_fpu	 fpu;
	void		*xs;
	int		 size, rc;

	if (xioctl(v->hv->kvm_fd, KVM_CHECK_EXTENSION,
	    (void *)(uintptr_t)KVM_CAP_XSAVE) <= 0) {
		if ((rc = xioctl(v->fd, KVM_GET_FPU, &fpu)) < 0)
			return rc;
		hv_blob_rec(buf, len, REC_FPU, &fpu, sizeof(fpu));
		return 0;
	}
	size = xioctl(v->hv->kvm_fd, KVM_CHECK_EXTENSION,
	    (void *)(uintptr_t)KVM_CAP_XSAVE2);
	if (size < (int)sizeof(struct kvm_xsave))
		size = sizeof(struct kvm_xsave);
	xs = xcalloc(1, (size_t)size);
	rc = xioctl(v->fd, size > (int)sizeof(struct kvm_xsave) ?
	    KVM_GET_XSAVE2 : KVM_GET_XSAVE, xs);
	if (rc >= 0)
		hv_blob_rec(buf, len, REC_XSAVE, xs, (size_t)size);
	free(xs);
	return rc < 0 ? rc : 0;
}

/* One vCPU ioctl into a record. */
static int
save_one(struct hv_vcpu *v, unsigned long req, uint32_t tag, void *p,
    size_t size, uint8_t **buf, size_t *len)
{
	int	rc;

	if ((rc = xioctl(v->fd, req, p)) < 0)
		return rc;
	hv_blob_rec(buf, len, tag, p, size);
	return 0;
}

int
hv_vcpu_save(struct hv_vcpu *v, uint8_t **buf, size_t *len)
{
	struct kvm_regs		 regs;
	struct kvm_sregs	 sregs;
	struct kvm_xcrs		 xcrs;
	struct kvm_lapic_state	 lapic;
	struct kvm_vcpu_events	 ev;
	struct kvm_mp_state	 mp;
	struct kvm_debugregs	 dbg;
	size_t			 start = *len;
	int			 rc;

	hv_blob_begin(buf, len, KVM_VCPU_MAGIC, KVM_STATE_VERSION);
	memset(&xcrs, 0, sizeof(xcrs));
	if ((rc = save_one(v, KVM_GET_REGS, REC_REGS, &regs, sizeof(regs),
	    buf, len)) < 0 ||
	    (rc = save_one(v, KVM_GET_SREGS, REC_SREGS, &sregs,
	    sizeof(sregs), buf, len)) < 0 ||
	    (rc = save_fpu(v, buf, len)) < 0 ||
	    (rc = save_one(v, KVM_GET_XCRS, REC_XCRS, &xcrs, sizeof(xcrs),
	    buf, len)) < 0 ||
	    (rc = save_msrs(v, buf, len)) < 0 ||
	    (rc = save_one(v, KVM_GET_LAPIC, REC_LAPIC, &lapic,
	    sizeof(lapic), buf, len)) < 0 ||
	    (rc = save_one(v, KVM_GET_VCPU_EVENTS, REC_EVENTS, &ev,
	    sizeof(ev), buf, len)) < 0 ||
	    (rc = save_one(v, KVM_GET_MP_STATE, REC_MP_STATE, &mp,
	    sizeof(mp), buf, len)) < 0 ||
	    (rc = save_one(v, KVM_GET_DEBUGREGS, REC_DEBUGREGS, &dbg,
	    sizeof(dbg), buf, len)) < 0) {
		log_warnx("saving vCPU %u: %s", v->id, strerror(-rc));
		*len = start;
		return rc;
	}
	return 0;
}

/* Set one fixed-size record; a missing record is an error. */
static int
restore_one(struct hv_vcpu *v, const uint8_t *buf, size_t len,
    unsigned long req, uint32_t tag, void *p, size_t size, const char *what)
{
	int	rc;

	if ((rc = hv_blob_get(buf, len, tag, p, size)) < 0) {
		log_warnx("vCPU %u state: %s record %s", v->id, what,
		    rc == -ENOENT ? "missing" : "malformed");
		return -EINVAL;
	}
	if ((rc = xioctl(v->fd, req, p)) < 0)
		log_warnx("vCPU %u: setting %s: %s", v->id, what,
		    strerror(-rc));
	return rc;
}

/* The FPU record (XSAVE of any size the host takes, or legacy FPU). */
static int
restore_fpu(struct hv_vcpu *v, const uint8_t *buf, size_t len)
{
	const uint8_t	*p;
	struct kvm_fpu	 fpu;
	void		*xs;
	size_t		 rlen = 0, size;
	int		 rc, err, host;

	if ((p = hv_blob_find(buf, len, REC_XSAVE, &rlen, &err)) == NULL) {
		if (err != 0)
			return err;
		return restore_one(v, buf, len, KVM_SET_FPU, REC_FPU, &fpu,
		    sizeof(fpu), "FPU");
	}
	host = xioctl(v->hv->kvm_fd, KVM_CHECK_EXTENSION,
	    (void *)(uintptr_t)KVM_CAP_XSAVE2);
	size = MAX((size_t)MAX(host, 0), sizeof(struct kvm_xsave));
	if (rlen < sizeof(struct kvm_xsave) || rlen > size) {
		log_warnx("vCPU %u state: xsave record of %zu bytes, this "
		    "host takes %zu", v->id, rlen, size);
		return -EINVAL;
	}
	/* KVM_SET_XSAVE reads as much as the host's XSAVE2 size. */
	xs = xcalloc(1, size);
	memcpy(xs, p, rlen);
	if ((rc = xioctl(v->fd, KVM_SET_XSAVE, xs)) < 0)
		log_warnx("vCPU %u: setting xsave: %s", v->id,
		    strerror(-rc));
	free(xs);
	return rc;
}

/*
 * Set the MSRs.  KVM_SET_MSRS stops at the first MSR it refuses: name
 * it and go on past it (a restore on a host that does not emulate one
 * MSR should not fail on it), but refuse EFER or the APIC base, which
 * the sregs carry anyway.
 */
static int
restore_msrs(struct hv_vcpu *v, const uint8_t *buf, size_t len)
{
	const uint8_t	*p;
	struct kvm_msrs	 hdr, *m;
	size_t		 rlen = 0;
	unsigned	 done = 0;
	int		 rc, err;

	if ((p = hv_blob_find(buf, len, REC_MSRS, &rlen, &err)) == NULL ||
	    rlen < sizeof(hdr)) {
		log_warnx("vCPU %u state: MSR record missing", v->id);
		return -EINVAL;
	}
	memcpy(&hdr, p, sizeof(hdr));
	if (hdr.nmsrs > MSR_MAX || rlen != sizeof(hdr) +
	    hdr.nmsrs * sizeof(struct kvm_msr_entry)) {
		log_warnx("vCPU %u state: MSR record malformed", v->id);
		return -EINVAL;
	}
	m = msrs_alloc(hdr.nmsrs);
	memcpy(m->entries, p + sizeof(hdr), hdr.nmsrs *
	    sizeof(struct kvm_msr_entry));
	while (done < hdr.nmsrs) {
		m->nmsrs = hdr.nmsrs - done;
		rc = xioctl(v->fd, KVM_SET_MSRS, m);
		if (rc < 0) {
			free(m);
			return rc;
		}
		if ((unsigned)rc == m->nmsrs)
			break;
		log_warnx("vCPU %u: MSR 0x%x refused on restore, skipped",
		    v->id, m->entries[rc].index);
		done += (unsigned)rc + 1;
		memmove(m->entries, m->entries + rc + 1, (m->nmsrs - rc - 1) *
		    sizeof(struct kvm_msr_entry));
	}
	free(m);
	return 0;
}

/*
 * Pending events.  KVM_GET_VCPU_EVENTS leaves the "valid" flags of the
 * NMI-pending and SIPI-vector fields clear (they are always returned);
 * set them so those fields are restored too, as QEMU does.
 */
static int
restore_events(struct hv_vcpu *v, const uint8_t *buf, size_t len,
    struct kvm_vcpu_events *ev)
{
	int	rc;

	if (hv_blob_get(buf, len, REC_EVENTS, ev, sizeof(*ev)) < 0) {
		log_warnx("vCPU %u state: events record missing or malformed",
		    v->id);
		return -EINVAL;
	}
	ev->flags |= KVM_VCPUEVENT_VALID_NMI_PENDING |
	    KVM_VCPUEVENT_VALID_SIPI_VECTOR;
	if ((rc = xioctl(v->fd, KVM_SET_VCPU_EVENTS, ev)) < 0)
		log_warnx("vCPU %u: setting events: %s", v->id, strerror(-rc));
	return rc;
}

int
hv_vcpu_restore(struct hv_vcpu *v, const uint8_t *buf, size_t len)
{
	struct kvm_regs		 regs;
	struct kvm_sregs	 sregs;
	struct kvm_xcrs		 xcrs;
	struct kvm_lapic_state	 lapic;
	struct kvm_vcpu_events	 ev;
	struct kvm_mp_state	 mp;
	struct kvm_debugregs	 dbg;
	int			 rc;

	if ((rc = hv_blob_check(buf, len, KVM_VCPU_MAGIC,
	    KVM_STATE_VERSION)) < 0)
		return rc;
	/*
	 * Order (api.rst and what QEMU does): sregs first (they set the
	 * mode the GPRs and MSRs are read in), the extended state, the
	 * LAPIC before the MSRs (the TSC deadline MSR is only written in
	 * TSC-deadline mode) and before events and mp_state (an event
	 * may be an interrupt the LAPIC has in service).
	 */
	if ((rc = restore_one(v, buf, len, KVM_SET_SREGS, REC_SREGS, &sregs,
	    sizeof(sregs), "sregs")) < 0 ||
	    (rc = restore_one(v, buf, len, KVM_SET_REGS, REC_REGS, &regs,
	    sizeof(regs), "regs")) < 0 ||
	    (rc = restore_fpu(v, buf, len)) < 0 ||
	    (rc = restore_one(v, buf, len, KVM_SET_XCRS, REC_XCRS, &xcrs,
	    sizeof(xcrs), "xcrs")) < 0 ||
	    (rc = restore_one(v, buf, len, KVM_SET_LAPIC, REC_LAPIC, &lapic,
	    sizeof(lapic), "LAPIC")) < 0 ||
	    (rc = restore_msrs(v, buf, len)) < 0 ||
	    (rc = restore_one(v, buf, len, KVM_SET_MP_STATE, REC_MP_STATE,
	    &mp, sizeof(mp), "mp_state")) < 0 ||
	    (rc = restore_events(v, buf, len, &ev)) < 0 ||
	    (rc = restore_one(v, buf, len, KVM_SET_DEBUGREGS, REC_DEBUGREGS,
	    &dbg, sizeof(dbg), "debugregs")) < 0)
		return rc;
	return 0;
}

int
hv_save(struct hv *hv, uint8_t **buf, size_t *len)
{
	static const uint32_t	 chips[] = { KVM_IRQCHIP_PIC_MASTER,
	    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC };
	struct kvm_irqchip	 chip;
	struct kvm_pit_state2	 pit;
	struct kvm_clock_data	 clock;
	size_t			 start = *len;
	unsigned		 i;
	int			 rc;

	if ((rc = irqchip_ensure(hv, "hv_save")) < 0)
		return rc;
	hv_blob_begin(buf, len, KVM_VM_MAGIC, KVM_STATE_VERSION);
	for (i = 0; i < ARRAY_SIZE(chips); i++) {
		memset(&chip, 0, sizeof(chip));
		chip.chip_id = chips[i];
		if ((rc = xioctl(hv->vm_fd, KVM_GET_IRQCHIP, &chip)) < 0)
			goto fail;
		hv_blob_rec(buf, len, REC_PIC_MASTER + i, &chip, sizeof(chip));
	}
	if ((rc = xioctl(hv->vm_fd, KVM_GET_PIT2, &pit)) < 0)
		goto fail;
	hv_blob_rec(buf, len, REC_PIT2, &pit, sizeof(pit));
	memset(&clock, 0, sizeof(clock));
	if ((rc = xioctl(hv->vm_fd, KVM_GET_CLOCK, &clock)) < 0)
		goto fail;
	hv_blob_rec(buf, len, REC_CLOCK, &clock, sizeof(clock));
	return 0;
fail:
	log_warnx("saving the VM's irqchip, PIT and clock: %s", strerror(-rc));
	*len = start;
	return rc;
}

int
hv_restore(struct hv *hv, const uint8_t *buf, size_t len)
{
	struct kvm_irqchip	 chip;
	struct kvm_pit_state2	 pit;
	struct kvm_clock_data	 clock;
	unsigned		 i;
	int			 rc;

	if ((rc = hv_blob_check(buf, len, KVM_VM_MAGIC,
	    KVM_STATE_VERSION)) < 0)
		return rc;
	if ((rc = irqchip_ensure(hv, "hv_restore")) < 0)
		return rc;
	for (i = 0; i < 3; i++) {
		if (hv_blob_get(buf, len, REC_PIC_MASTER + i, &chip,
		    sizeof(chip)) < 0 || chip.chip_id != i)
			return -EINVAL;
		if ((rc = xioctl(hv->vm_fd, KVM_SET_IRQCHIP, &chip)) < 0) {
			log_warnx("KVM_SET_IRQCHIP %u: %s", i, strerror(-rc));
			return rc;
		}
	}
	if (hv_blob_get(buf, len, REC_PIT2, &pit, sizeof(pit)) < 0 ||
	    hv_blob_get(buf, len, REC_CLOCK, &clock, sizeof(clock)) < 0)
		return -EINVAL;
	if ((rc = xioctl(hv->vm_fd, KVM_SET_PIT2, &pit)) < 0) {
		log_warnx("KVM_SET_PIT2: %s", strerror(-rc));
		return rc;
	}
	/* The guest's clock continues from where it was saved: no flags
	 * (KVM_CLOCK_REALTIME would jump it by the time in between). */
	clock.flags = 0;
	memset(clock.pad, 0, sizeof(clock.pad));
	if ((rc = xioctl(hv->vm_fd, KVM_SET_CLOCK, &clock)) < 0) {
		log_warnx("KVM_SET_CLOCK: %s", strerror(-rc));
		return rc;
	}
	return 0;
}

/* A CPUID register, 0 when the leaf is absent. */
static uint32_t
cpuid_reg(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx, char reg)
{
	struct kvm_cpuid_entry2	*e;

	if ((e = cpuid_find(c, fn, idx)) == NULL)
		return 0;
	return reg == 'a' ? e->eax : reg == 'b' ? e->ebx : reg == 'c' ?
	    e->ecx : e->edx;
}

static const struct {
	uint32_t	 fn, idx;
	char		 reg;
	const char	*name;
} feature_words[HV_CPU_FEATURE_WORDS] = {
	{ 1, 0, 'c', "CPUID.1:ECX" },
	{ 1, 0, 'd', "CPUID.1:EDX" },
	{ 7, 0, 'b', "CPUID.7.0:EBX" },
	{ 7, 0, 'c', "CPUID.7.0:ECX" },
	{ 7, 0, 'd', "CPUID.7.0:EDX" },
	{ 0x80000001, 0, 'c', "CPUID.80000001:ECX" },
	{ 0x80000001, 0, 'd', "CPUID.80000001:EDX" },
	{ 0xd, 0, 'a', "XCR0 components (CPUID.D.0:EAX)" },
	{ 0xd, 0, 'd', "XCR0 components (CPUID.D.0:EDX)" },
	{ 0xd, 1, 'a', "XSAVE features (CPUID.D.1:EAX)" },
};

int
hv_cpu_features(struct hv *hv, uint32_t words[HV_CPU_FEATURE_WORDS])
{
	unsigned	i;

	for (i = 0; i < HV_CPU_FEATURE_WORDS; i++)
		words[i] = cpuid_reg(hv->cpuid, feature_words[i].fn,
		    feature_words[i].idx, feature_words[i].reg);
	return 0;
}

int
hv_cpu_compatible(struct hv *hv, const uint32_t saved[HV_CPU_FEATURE_WORDS],
    char *why, size_t whylen)
{
	uint32_t	have[HV_CPU_FEATURE_WORDS], missing;
	unsigned	i;

	hv_cpu_features(hv, have);
	for (i = 0; i < HV_CPU_FEATURE_WORDS; i++) {
		if ((missing = saved[i] & ~have[i]) == 0)
			continue;
		snprintf(why, whylen, "this host's CPU lacks features the "
		    "snapshot's guest saw: %s bits 0x%08x", feature_words[i].name,
		    missing);
		return -ENOTSUP;
	}
	return 0;
}
