/*
 * Unit tests of the fake hv backend (hv/fake.c), which every other
 * module's unit tests stand on.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "core/base/base.h"
#include "hv/hv.h"
#include "hv/fake.h"
#include "tests/tap.h"

/* A VM with one vCPU, or a failed case. */
#define SETUP(hv, v) do {						\
	TAP_CHECK(hv_create(&(hv), 1) == 0);				\
	TAP_CHECK(hv_vcpu_create((hv), 0, &(v)) == 0);			\
} while (0)

/* Sleep ms milliseconds. */
static void
sleep_ms(unsigned ms)
{
	struct timespec	ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Probe, names and vCPU count limits. */
static int
test_probe_create(void)
{
	struct hv	*hv;
	struct hv_vcpu	*v, *v2;
	const char	*why = "x";

	TAP_CHECK(hv_probe(&why) == HV_KIND_FAKE);
	TAP_CHECK(strcmp(hv_kind_name(HV_KIND_FAKE), "fake") == 0);
	TAP_CHECK(strcmp(hv_kind_name(HV_KIND_PVM), "pvm") == 0);
	TAP_CHECK(hv_api_version() == 12);
	TAP_CHECK(hv_create(&hv, 0) == -EINVAL);
	TAP_CHECK(hv_create(&hv, HV_MAX_VCPUS + 1) == -EINVAL);
	TAP_CHECK(hv_create(&hv, 2) == 0);
	TAP_CHECK(hv_vcpu_create(hv, 2, &v) == -EINVAL);
	TAP_CHECK(hv_vcpu_create(hv, 1, &v) == 0);
	TAP_CHECK(hv_vcpu_create(hv, 1, &v2) == -EEXIST);
	TAP_CHECK(hv_vcpu_id(v) == 1);
	TAP_CHECK(hv_fake_vcpu(hv, 1) == v);
	TAP_CHECK(hv_fake_vcpu(hv, 0) == NULL);
	hv_vcpu_destroy(v);
	TAP_CHECK(hv_fake_vcpu(hv, 1) == NULL);
	hv_destroy(hv);
	return TAP_PASS;
}

/* Memory slots are recorded, checked for overlap and deleted. */
static int
test_slots(void)
{
	static uint8_t	 mem[4 * 4096] __attribute__((aligned(4096)));
	struct hv	*hv;
	uint64_t	 gpa, size;
	void		*hva;
	unsigned	 flags;

	TAP_CHECK(hv_create(&hv, 1) == 0);
	TAP_CHECK(!hv_fake_slot(hv, 0, NULL, NULL, NULL, NULL));
	TAP_CHECK(hv_mem_map(hv, 0, 0, 2 * 4096, mem, 0) == 0);
	TAP_CHECK(hv_mem_map(hv, 1, 0x100000, 2 * 4096, mem + 2 * 4096,
	    HV_MEM_READONLY) == 0);
	TAP_CHECK(hv_fake_slot(hv, 1, &gpa, &size, &hva, &flags));
	TAP_CHECK(gpa == 0x100000 && size == 2 * 4096);
	TAP_CHECK(hva == mem + 2 * 4096 && flags == HV_MEM_READONLY);
	/* Overlapping another slot, unaligned: refused like KVM. */
	TAP_CHECK(hv_mem_map(hv, 2, 4096, 4096, mem, 0) == -EEXIST);
	TAP_CHECK(hv_mem_map(hv, 2, 0x200000, 100, mem, 0) == -EINVAL);
	TAP_CHECK(hv_mem_map(hv, HV_FAKE_MAX_SLOTS, 0x200000, 4096, mem,
	    0) == -EINVAL);
	/* Moving a slot over its own old range is fine. */
	TAP_CHECK(hv_mem_map(hv, 0, 0, 4096, mem, HV_MEM_LOG_DIRTY) == 0);
	TAP_CHECK(hv_fake_slot(hv, 0, NULL, &size, NULL, &flags));
	TAP_CHECK(size == 4096 && flags == HV_MEM_LOG_DIRTY);
	TAP_CHECK(hv_mem_map(hv, 0, 0, 0, NULL, 0) == 0);
	TAP_CHECK(!hv_fake_slot(hv, 0, NULL, NULL, NULL, NULL));
	TAP_CHECK(hv_mem_unmap(hv, 1) == 0);
	TAP_CHECK(!hv_fake_slot(hv, 1, NULL, NULL, NULL, NULL));
	hv_destroy(hv);
	return TAP_PASS;
}

/* irq line levels and rising-edge counts. */
static int
test_irq_line(void)
{
	struct hv	*hv;
	unsigned	 edges;

	TAP_CHECK(hv_create(&hv, 1) == 0);
	TAP_CHECK(hv_fake_irq_level(hv, 5, &edges) == 0 && edges == 0);
	TAP_CHECK(hv_irq_line(hv, 5, 1) == 0);
	TAP_CHECK(hv_irq_line(hv, 5, 1) == 0);
	TAP_CHECK(hv_fake_irq_level(hv, 5, &edges) == 1 && edges == 1);
	TAP_CHECK(hv_irq_line(hv, 5, 0) == 0);
	TAP_CHECK(hv_irq_line(hv, 5, 7) == 0);
	TAP_CHECK(hv_fake_irq_level(hv, 5, &edges) == 1 && edges == 2);
	TAP_CHECK(hv_fake_irq_level(hv, 6, NULL) == 0);
	TAP_CHECK(hv_irq_line(hv, HV_FAKE_MAX_GSI, 1) == -EINVAL);
	hv_destroy(hv);
	return TAP_PASS;
}

/* An irqfd fires when written; resample on EOI; removal. */
static int
test_irqfd(void)
{
	struct hv	*hv;
	uint64_t	 one = 1, n;
	int		 fd, rfd;

	TAP_CHECK(hv_create(&hv, 1) == 0);
	TAP_CHECK((fd = eventfd(0, EFD_CLOEXEC)) >= 0);
	TAP_CHECK((rfd = eventfd(0, EFD_CLOEXEC)) >= 0);
	TAP_CHECK(hv_fake_irqfd_fired(hv, 17) == 0);
	TAP_CHECK(hv_irqfd(hv, fd, 17, rfd) == 0);
	TAP_CHECK(hv_irqfd(hv, fd, 18, -1) == -EBUSY);
	TAP_CHECK(hv_fake_irqfd_fired(hv, 17) == 0);	/* not blocking */
	TAP_CHECK(write(fd, &one, sizeof(one)) == sizeof(one));
	TAP_CHECK(write(fd, &one, sizeof(one)) == sizeof(one));
	TAP_CHECK(hv_fake_irqfd_fired(hv, 18) == 0);
	TAP_CHECK(hv_fake_irqfd_fired(hv, 17) == 2);
	TAP_CHECK(hv_fake_irqfd_fired(hv, 17) == 0);
	TAP_CHECK(hv_fake_eoi(hv, 17) == 1);
	TAP_CHECK(read(rfd, &n, sizeof(n)) == sizeof(n) && n == 1);
	TAP_CHECK(hv_irqfd_remove(hv, fd, 18) == -ENOENT);
	TAP_CHECK(hv_irqfd_remove(hv, fd, 17) == 0);
	TAP_CHECK(write(fd, &one, sizeof(one)) == sizeof(one));
	TAP_CHECK(hv_fake_irqfd_fired(hv, 17) == 0);
	close(fd);
	close(rfd);
	hv_destroy(hv);
	return TAP_PASS;
}

/* ioeventfd matching: address, length, data match, MMIO vs PIO. */
static int
test_ioeventfd(void)
{
	struct hv	*hv;
	uint64_t	 n;
	int		 a, b, c;

	TAP_CHECK(hv_create(&hv, 1) == 0);
	TAP_CHECK((a = eventfd(0, EFD_NONBLOCK)) >= 0);
	TAP_CHECK((b = eventfd(0, EFD_NONBLOCK)) >= 0);
	TAP_CHECK((c = eventfd(0, EFD_NONBLOCK)) >= 0);
	/* Queue notify register: queue 0 -> a, queue 1 -> b. */
	TAP_CHECK(hv_ioeventfd(hv, a, 0xd0000050, 4, HV_IOEVENT_DATAMATCH,
	    0) == 0);
	TAP_CHECK(hv_ioeventfd(hv, b, 0xd0000050, 4, HV_IOEVENT_DATAMATCH,
	    1) == 0);
	TAP_CHECK(hv_ioeventfd(hv, b, 0xd0000050, 4, HV_IOEVENT_DATAMATCH,
	    1) == -EEXIST);
	TAP_CHECK(hv_ioeventfd(hv, c, 0x510, 2, HV_IOEVENT_PIO, 0) == 0);
	TAP_CHECK(hv_ioeventfd(hv, c, 0x600, 3, 0, 0) == -EINVAL);

	TAP_CHECK(hv_fake_guest_write(hv, 0xd0000050, 4, 1));
	TAP_CHECK(read(b, &n, sizeof(n)) == sizeof(n) && n == 1);
	TAP_CHECK(read(a, &n, sizeof(n)) == -1 && errno == EAGAIN);
	TAP_CHECK(hv_fake_guest_write(hv, 0xd0000050, 4, 0));
	TAP_CHECK(read(a, &n, sizeof(n)) == sizeof(n) && n == 1);
	/* No match: other value, other length, other address, PIO space. */
	TAP_CHECK(!hv_fake_guest_write(hv, 0xd0000050, 4, 2));
	TAP_CHECK(!hv_fake_guest_write(hv, 0xd0000050, 2, 0));
	TAP_CHECK(!hv_fake_guest_write(hv, 0xd0000054, 4, 0));
	TAP_CHECK(!hv_fake_guest_pio(hv, 0x50, 4, 0));
	TAP_CHECK(!hv_fake_guest_write(hv, 0x510, 2, 0));
	TAP_CHECK(hv_fake_guest_pio(hv, 0x510, 2, 0x1234));
	TAP_CHECK(read(c, &n, sizeof(n)) == sizeof(n) && n == 1);
	TAP_CHECK(read(a, &n, sizeof(n)) == -1 && errno == EAGAIN);
	TAP_CHECK(read(b, &n, sizeof(n)) == -1 && errno == EAGAIN);

	TAP_CHECK(hv_ioeventfd_remove(hv, b, 0xd0000050, 4,
	    HV_IOEVENT_DATAMATCH, 0) == -ENOENT);
	TAP_CHECK(hv_ioeventfd_remove(hv, b, 0xd0000050, 4,
	    HV_IOEVENT_DATAMATCH, 1) == 0);
	TAP_CHECK(!hv_fake_guest_write(hv, 0xd0000050, 4, 1));
	close(a);
	close(b);
	close(c);
	hv_destroy(hv);
	return TAP_PASS;
}

/* Scripted exits come back in order, with data in the run page. */
static int
test_script_order(void)
{
	struct hv	*hv;
	struct hv_vcpu	*v;
	struct hv_exit	 e, got;
	const uint8_t	*last;
	size_t		 len;
	uint8_t		 out[2] = { 'h', 'i' };

	SETUP(hv, v);
	memset(&e, 0, sizeof(e));
	e.reason = HV_EXIT_IO;
	e.io.port = 0x3f8;
	e.io.size = 1;
	e.io.count = 2;
	e.io.write = true;
	TAP_CHECK(hv_fake_queue_exit(v, &e, out) == 0);
	memset(&e, 0, sizeof(e));
	e.reason = HV_EXIT_MMIO;
	e.mmio.gpa = 0xd0000000;
	e.mmio.len = 4;
	TAP_CHECK(hv_fake_queue_exit(v, &e, NULL) == 0);
	memset(&e, 0, sizeof(e));
	e.reason = HV_EXIT_HLT;
	TAP_CHECK(hv_fake_queue_exit(v, &e, NULL) == 0);
	TAP_CHECK(hv_fake_queued(v) == 3);

	TAP_CHECK(hv_vcpu_run(v, &got) == 0);
	TAP_CHECK(got.reason == HV_EXIT_IO && got.io.port == 0x3f8);
	TAP_CHECK(got.io.write && got.io.size == 1 && got.io.count == 2);
	TAP_CHECK(memcmp(got.io.data, "hi", 2) == 0);

	TAP_CHECK(hv_vcpu_run(v, &got) == 0);
	TAP_CHECK(got.reason == HV_EXIT_MMIO && !got.mmio.write);
	TAP_CHECK(got.mmio.gpa == 0xd0000000 && got.mmio.len == 4);
	memcpy(got.mmio.data, "\x76\x69\x72\x74", 4);	/* answer the read */

	TAP_CHECK(hv_vcpu_run(v, &got) == 0);
	TAP_CHECK(got.reason == HV_EXIT_HLT);
	TAP_CHECK((last = hv_fake_last_data(v, &len)) != NULL);
	TAP_CHECK(len == 4 && memcmp(last, "virt", 4) == 0);
	TAP_CHECK(hv_fake_queued(v) == 0);

	/* Too much payload for the run page. */
	memset(&e, 0, sizeof(e));
	e.reason = HV_EXIT_IO;
	e.io.size = 4;
	e.io.count = HV_FAKE_RUN_DATA;
	TAP_CHECK(hv_fake_queue_exit(v, &e, NULL) == -EINVAL);
	hv_vcpu_destroy(v);
	hv_destroy(hv);
	return TAP_PASS;
}

struct runner {
	struct hv_vcpu	*v;
	struct hv_exit	 exit;
	int		 rc;
	volatile int	 done;
};

/* Thread body: one hv_vcpu_run(). */
static void *
run_once_cb(void *arg)
{
	struct runner	*r = arg;

	r->rc = hv_vcpu_run(r->v, &r->exit);
	__atomic_store_n(&r->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/* A run with nothing queued blocks until another thread kicks. */
static int
test_kick_wakes_blocked_run(void)
{
	struct hv	*hv;
	struct hv_vcpu	*v;
	struct runner	 r;
	pthread_t	 t;

	SETUP(hv, v);
	memset(&r, 0, sizeof(r));
	r.v = v;
	TAP_CHECK(pthread_create(&t, NULL, run_once_cb, &r) == 0);
	sleep_ms(30);
	TAP_CHECK(!__atomic_load_n(&r.done, __ATOMIC_SEQ_CST));
	hv_vcpu_kick(v);
	pthread_join(t, NULL);
	TAP_CHECK(r.rc == 0 && r.exit.reason == HV_EXIT_INTR);
	TAP_CHECK(hv_fake_intr_count(v) == 1);
	hv_vcpu_destroy(v);
	hv_destroy(hv);
	return TAP_PASS;
}

/* A run blocked on an empty script wakes for an exit queued later. */
static int
test_queue_wakes_blocked_run(void)
{
	struct hv	*hv;
	struct hv_vcpu	*v;
	struct runner	 r;
	struct hv_exit	 e;
	pthread_t	 t;

	SETUP(hv, v);
	memset(&r, 0, sizeof(r));
	r.v = v;
	TAP_CHECK(pthread_create(&t, NULL, run_once_cb, &r) == 0);
	sleep_ms(20);
	memset(&e, 0, sizeof(e));
	e.reason = HV_EXIT_SHUTDOWN;
	TAP_CHECK(hv_fake_queue_exit(v, &e, NULL) == 0);
	pthread_join(t, NULL);
	TAP_CHECK(r.rc == 0 && r.exit.reason == HV_EXIT_SHUTDOWN);
	hv_vcpu_destroy(v);
	hv_destroy(hv);
	return TAP_PASS;
}

/* A kick before the run wins over the script, and counts once. */
static int
test_kick_before_run(void)
{
	struct hv	*hv;
	struct hv_vcpu	*v;
	struct hv_exit	 e, got;

	SETUP(hv, v);
	memset(&e, 0, sizeof(e));
	e.reason = HV_EXIT_POWEROFF;
	TAP_CHECK(hv_fake_queue_exit(v, &e, NULL) == 0);
	hv_vcpu_kick(v);
	hv_vcpu_kick(v);		/* coalesces */
	TAP_CHECK(hv_vcpu_run(v, &got) == 0 && got.reason == HV_EXIT_INTR);
	TAP_CHECK(hv_vcpu_run(v, &got) == 0 &&
	    got.reason == HV_EXIT_POWEROFF);
	TAP_CHECK(hv_fake_intr_count(v) == 1);
	hv_vcpu_destroy(v);
	hv_destroy(hv);
	return TAP_PASS;
}

/* Registers round trip; the halted flag is what the test set. */
static int
test_state_and_halted(void)
{
	struct hv	*hv;
	struct hv_vcpu	*v;
	struct hv_regs	 r, r2;
	struct hv_sregs	 s, s2;
	bool		 halted;

	SETUP(hv, v);
	TAP_CHECK(hv_vcpu_get_regs(v, &r) == 0 && r.rip == 0xfff0);
	r.rip = 0x100000;
	r.rbx = 0x6000;
	TAP_CHECK(hv_vcpu_set_regs(v, &r) == 0);
	TAP_CHECK(hv_vcpu_get_regs(v, &r2) == 0);
	TAP_CHECK(memcmp(&r, &r2, sizeof(r)) == 0);
	TAP_CHECK(hv_vcpu_get_sregs(v, &s) == 0);
	s.cr0 = 0x11;
	s.cs.db = 1;
	s.gdt.limit = 0x17;
	TAP_CHECK(hv_vcpu_set_sregs(v, &s) == 0);
	TAP_CHECK(hv_vcpu_get_sregs(v, &s2) == 0);
	TAP_CHECK(s2.cr0 == 0x11 && s2.cs.db == 1 && s2.gdt.limit == 0x17);
	TAP_CHECK(hv_vcpu_halted_for_good(v, &halted) == 0 && !halted);
	hv_fake_set_halted(v, true);
	TAP_CHECK(hv_vcpu_halted_for_good(v, &halted) == 0 && halted);
	hv_vcpu_destroy(v);
	hv_destroy(hv);
	return TAP_PASS;
}

/* Destroying a vCPU with exits still queued frees them. */
static int
test_destroy_with_queue(void)
{
	struct hv	*hv;
	struct hv_vcpu	*v;
	struct hv_exit	 e;

	SETUP(hv, v);
	memset(&e, 0, sizeof(e));
	e.reason = HV_EXIT_MMIO;
	e.mmio.len = 8;
	e.mmio.write = true;
	TAP_CHECK(hv_fake_queue_exit(v, &e, "12345678") == 0);
	TAP_CHECK(hv_fake_queue_exit(v, &e, "abcdefgh") == 0);
	hv_vcpu_destroy(v);
	hv_destroy(hv);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "probe and create", test_probe_create },
	{ "memory slots", test_slots },
	{ "irq lines", test_irq_line },
	{ "irqfd fires and resamples", test_irqfd },
	{ "ioeventfd match and no match", test_ioeventfd },
	{ "script order and run page", test_script_order },
	{ "kick wakes a blocked run", test_kick_wakes_blocked_run },
	{ "queued exit wakes a blocked run", test_queue_wakes_blocked_run },
	{ "kick before run", test_kick_before_run },
	{ "registers and halted flag", test_state_and_halted },
	{ "destroy with queued exits", test_destroy_with_queue },
};

int
main(void)
{
	log_init("hv_fake_test", LOG_NORMAL);
	return tap_run(cases, ARRAY_SIZE(cases), 20);
}
