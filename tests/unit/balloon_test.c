/*
 * Unit test for virtio-balloon (virtio/balloon.c), driven from the guest
 * side by tests/unit/vdrv on the fake hypervisor.  Guest RAM is swapped
 * for an anonymous mmap so that pages the device drops really leave the
 * process: mincore() tells which are still resident.
 */
#include <sys/mman.h>

#include <endian.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/virtio_balloon.h>

#include "hv/fake.h"
#include "tests/tap.h"
#include "tests/unit/vdrv.h"
#include "virtio/virtio.h"

#define WAIT_MS		2000
#define PG		4096
#define RAM_SIZE	(16u << 20)
#define F(bit)		(1ULL << (bit))

#define Q_INFLATE	0
#define Q_DEFLATE	1

struct tb {
	struct vdrv_env		 env;
	struct vdrv		 d;
	struct virtio_dev	*dev;
	uint8_t			*calloc_ram;	/* vdrv's, put back at the end */
	uint8_t			*map;
};

/* Bring up a balloon accepting `want` of its features. */
static int
setup(struct tb *t, uint64_t want)
{
	memset(t, 0, sizeof(*t));
	if (vdrv_env_init(&t->env, RAM_SIZE) != 0)
		return -1;
	/* Page-aligned, droppable guest RAM in place of vdrv's calloc. */
	t->map = mmap(NULL, t->env.ram_size, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t->map == MAP_FAILED) {
		vdrv_env_fini(&t->env);
		return -1;
	}
	t->calloc_ram = t->env.ram;
	t->env.ram = t->map;
	t->env.mem.r[0].hva = t->map;
	t->dev = virtio_balloon_create(&t->env.host, VDRV_BASE(0),
	    VDRV_IRQ(0));
	if (t->dev == NULL)
		goto err;
	vdrv_attach(&t->d, &t->env, t->dev, VDRV_BASE(0), VDRV_IRQ(0));
	if (vdrv_start(&t->d, want, 64) != 0) {
		virtio_dev_free(t->dev);
		vdrv_detach(&t->d);
		goto err;
	}
	return 0;
err:
	munmap(t->map, t->env.ram_size);
	t->env.ram = t->calloc_ram;
	vdrv_env_fini(&t->env);
	return -1;
}

static void
teardown(struct tb *t)
{
	virtio_dev_free(t->dev);
	vdrv_detach(&t->d);
	munmap(t->map, t->env.ram_size);
	t->env.ram = t->calloc_ram;
	vdrv_env_fini(&t->env);
}

/* Guest pages [gpa, gpa + n pages): touched with a pattern. */
static uint64_t
touched_pages(struct tb *t, unsigned n)
{
	uint64_t	gpa = vdrv_alloc(&t->env, (uint64_t)n * PG, PG);

	memset(vdrv_ptr(&t->env, gpa, (uint64_t)n * PG), 0xa5,
	    (size_t)n * PG);
	return gpa;
}

/* Whether guest page gpa is resident in the host process. */
static int
resident(struct tb *t, uint64_t gpa)
{
	unsigned char	v = 0;

	if (mincore(vdrv_ptr(&t->env, gpa, PG), PG, &v) != 0)
		return -1;
	return v & 1;
}

/* Send le32 PFNs on queue q as one readable buffer; wait for it back. */
static int
send_pfns(struct tb *t, unsigned q, const uint32_t *pfn, unsigned n)
{
	uint64_t	buf;
	uint32_t	i, id, len, *p;
	int		head;

	buf = vdrv_alloc(&t->env, n * 4 + 4, 8);
	p = vdrv_ptr(&t->env, buf, n * 4);
	for (i = 0; i < n; i++)
		p[i] = htole32(pfn[i]);
	if ((head = vdrv_add1(&t->d, q, buf, n * 4, false)) < 0)
		return -1;
	vdrv_kick(&t->d, q);
	if (!vdrv_wait_used(&t->d, q, &id, &len, WAIT_MS))
		return -1;
	return id == (uint32_t)head ? 0 : -1;
}

static bool
needs_reset(struct tb *t)
{
	return vdrv_read(&t->d, VIRTIO_MMIO_STATUS) &
	    VIRTIO_STATUS_NEEDS_RESET;
}

/* Inflated pages leave the process; a gap between two runs, and pages
 * around them, stay with their data. */
static int
test_inflate_frees(void)
{
	struct tb			t;
	struct virtio_balloon_stats	st;
	uint32_t			pfn[64];
	uint64_t			gpa;
	unsigned			i, n = 0;
	int				rc = TAP_FAIL;

	TAP_CHECK(setup(&t, 0) == 0);
	gpa = touched_pages(&t, 64);
	for (i = 0; i < 64; i++)
		if (resident(&t, gpa + (uint64_t)i * PG) != 1)
			goto out;
	/* Pages 8..23 and 32..55, given out of order within a run. */
	for (i = 8; i < 24; i++)
		pfn[n++] = (gpa >> 12) + i;
	for (i = 55; i >= 32; i--)
		pfn[n++] = (gpa >> 12) + i;
	if (send_pfns(&t, Q_INFLATE, pfn, n) != 0) {
		tap_diag("inflate buffer not returned");
		goto out;
	}
	for (i = 0; i < 64; i++) {
		bool	in_balloon = (i >= 8 && i < 24) || (i >= 32 && i < 56);
		uint8_t	*p = vdrv_ptr(&t.env, gpa + (uint64_t)i * PG, PG);

		if (resident(&t, gpa + (uint64_t)i * PG) != !in_balloon) {
			tap_diag("page %u resident %d", i,
			    resident(&t, gpa + (uint64_t)i * PG));
			goto out;
		}
		if (!in_balloon && (p[0] != 0xa5 || p[PG - 1] != 0xa5))
			goto out;
	}
	(void)virtio_balloon_stats(t.dev, &st);
	if (st.inflated != n || st.ignored != 0 ||
	    st.dropped_bytes != (uint64_t)n * PG) {
		tap_diag("inflated %llu dropped %llu",
		    (unsigned long long)st.inflated,
		    (unsigned long long)st.dropped_bytes);
		goto out;
	}
	/* A dropped page reads back as zeroes (it faults in fresh). */
	if (*(uint8_t *)vdrv_ptr(&t.env, gpa + 8 * PG, 1) != 0)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* PFNs outside guest RAM (below it, past it, the largest) and a buffer
 * with a stray byte: ignored, no NEEDS_RESET, RAM untouched. */
static int
test_inflate_outside_ram(void)
{
	struct tb			t;
	struct virtio_balloon_stats	st;
	uint32_t			pfn[4];
	uint64_t			gpa, end_pfn, buf;
	uint32_t			len;
	int				rc = TAP_FAIL;

	TAP_CHECK(setup(&t, 0) == 0);
	gpa = touched_pages(&t, 1);
	end_pfn = (VDRV_RAM_GPA + t.env.ram_size) >> 12;
	pfn[0] = 0;
	pfn[1] = (uint32_t)end_pfn;
	pfn[2] = UINT32_MAX;
	pfn[3] = (VDRV_RAM_GPA >> 12) - 1;
	if (send_pfns(&t, Q_INFLATE, pfn, 4) != 0 || needs_reset(&t))
		goto out;
	(void)virtio_balloon_stats(t.dev, &st);
	if (st.ignored != 4 || st.dropped_bytes != 0)
		goto out;
	if (resident(&t, gpa) != 1)
		goto out;
	/* 6 bytes: one PFN and a half; the half is ignored. */
	buf = vdrv_alloc(&t.env, 8, 8);
	*(uint32_t *)vdrv_ptr(&t.env, buf, 4) = htole32(gpa >> 12);
	if (vdrv_add1(&t.d, Q_INFLATE, buf, 6, false) < 0)
		goto out;
	vdrv_kick(&t.d, Q_INFLATE);
	if (!vdrv_wait_used(&t.d, Q_INFLATE, NULL, &len, WAIT_MS) ||
	    needs_reset(&t) || resident(&t, gpa) != 0)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Deflated pages are only counted (they fault back in). */
static int
test_deflate_counted(void)
{
	struct tb			t;
	struct virtio_balloon_stats	st;
	uint32_t			pfn[3];
	uint64_t			gpa;
	int				rc = TAP_FAIL;

	TAP_CHECK(setup(&t, 0) == 0);
	gpa = touched_pages(&t, 3);
	pfn[0] = gpa >> 12;
	pfn[1] = pfn[0] + 1;
	pfn[2] = pfn[0] + 2;
	if (send_pfns(&t, Q_DEFLATE, pfn, 3) != 0)
		goto out;
	(void)virtio_balloon_stats(t.dev, &st);
	if (st.deflated != 3 || resident(&t, gpa) != 1)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* The host sets a target: config interrupt, new generation, num_pages. */
static int
test_target(void)
{
	struct tb	t;
	uint32_t	gen, v;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, 0) == 0);
	(void)vdrv_irq_fired(&t.d);
	(void)vdrv_isr_ack(&t.d);
	gen = vdrv_read(&t.d, VIRTIO_MMIO_CONFIG_GENERATION);
	virtio_balloon_set_target(t.dev, 1234);
	vdrv_env_poll(&t.env);
	if (vdrv_irq_fired(&t.d) == 0 ||
	    !(vdrv_isr_ack(&t.d) & VIRTIO_ISR_CONFIG))
		goto out;
	if (vdrv_read(&t.d, VIRTIO_MMIO_CONFIG_GENERATION) == gen)
		goto out;
	vdrv_config_read(&t.d, 0, &v, 4);
	if (le32toh(v) != 1234)
		goto out;
	/* The same target again changes nothing. */
	vdrv_eoi(&t.d);
	(void)vdrv_irq_fired(&t.d);
	virtio_balloon_set_target(t.dev, 1234);
	vdrv_env_poll(&t.env);
	if (vdrv_irq_fired(&t.d) != 0)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* actual is the driver's to write; num_pages is not. */
static int
test_actual(void)
{
	struct tb	t;
	uint32_t	v;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, 0) == 0);
	virtio_balloon_set_target(t.dev, 500);
	v = htole32(77);
	vdrv_config_write(&t.d, 4, &v, 4);
	if (virtio_balloon_actual(t.dev) != 77)
		goto out;
	v = 0;
	vdrv_config_read(&t.d, 4, &v, 4);
	if (le32toh(v) != 77)
		goto out;
	v = htole32(9);
	vdrv_config_write(&t.d, 0, &v, 4);
	vdrv_config_read(&t.d, 0, &v, 4);
	if (le32toh(v) != 500 || virtio_balloon_actual(t.dev) != 77)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Write n packed {le16 tag, le64 val} stats into a fresh buffer. */
static uint64_t
stats_buf(struct tb *t, const uint16_t *tag, const uint64_t *val,
    unsigned n)
{
	uint64_t	 gpa = vdrv_alloc(&t->env, 10 * n, 8);
	uint8_t		*p = vdrv_ptr(&t->env, gpa, 10 * n);
	uint16_t	 tl;
	uint64_t	 vl;
	unsigned	 i;

	for (i = 0; i < n; i++) {
		tl = htole16(tag[i]);
		vl = htole64(val[i]);
		memcpy(p + 10 * i, &tl, 2);
		memcpy(p + 10 * i + 2, &vl, 8);
	}
	return gpa;
}

/* Stats: the primed buffer is parsed and held; a request returns it;
 * the driver's next buffer updates the values. */
static int
test_stats(void)
{
	static const uint16_t		tag1[] = { VIRTIO_BALLOON_S_MEMFREE,
	    VIRTIO_BALLOON_S_MEMTOT, 99 };
	static const uint64_t		val1[] = { 1000, 4000, 5 };
	static const uint16_t		tag2[] = { VIRTIO_BALLOON_S_MEMFREE };
	static const uint64_t		val2[] = { 1500 };
	struct tb			t;
	struct virtio_balloon_stats	st;
	unsigned			qs = 2;
	uint64_t			b1;
	int				head, rc = TAP_FAIL;

	TAP_CHECK(setup(&t, F(VIRTIO_BALLOON_F_STATS_VQ)) == 0);
	if (virtio_balloon_stats(t.dev, &st) != -ENODATA ||
	    virtio_balloon_request_stats(t.dev) != -EAGAIN)
		goto out;
	b1 = stats_buf(&t, tag1, val1, 3);
	if ((head = vdrv_add1(&t.d, qs, b1, 30, false)) < 0)
		goto out;
	vdrv_kick(&t.d, qs);
	/* Held, not returned. */
	if (vdrv_used_pending(&t.d, qs) != 0)
		goto out;
	if (virtio_balloon_stats(t.dev, &st) != 0 || st.generation != 1 ||
	    st.val[VIRTIO_BALLOON_S_MEMFREE] != 1000 ||
	    st.val[VIRTIO_BALLOON_S_MEMTOT] != 4000 ||
	    st.present != (F(VIRTIO_BALLOON_S_MEMFREE) |
	    F(VIRTIO_BALLOON_S_MEMTOT)))
		goto out;
	if (virtio_balloon_request_stats(t.dev) != 0)
		goto out;
	if (!vdrv_wait_used(&t.d, qs, NULL, NULL, WAIT_MS))
		goto out;
	if (virtio_balloon_request_stats(t.dev) != -EAGAIN)
		goto out;
	if (vdrv_add1(&t.d, qs, stats_buf(&t, tag2, val2, 1), 10, false) < 0)
		goto out;
	vdrv_kick(&t.d, qs);
	if (virtio_balloon_stats(t.dev, &st) != 0 || st.generation != 2 ||
	    st.val[VIRTIO_BALLOON_S_MEMFREE] != 1500 ||
	    st.val[VIRTIO_BALLOON_S_MEMTOT] != 4000)
		goto out;
	/* Periodic requests return the buffer without being asked. */
	if (virtio_balloon_stats_interval(t.dev, 20) != 0 ||
	    !vdrv_wait_used(&t.d, qs, NULL, NULL, WAIT_MS) ||
	    virtio_balloon_stats_interval(t.dev, 0) != 0)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Without STATS_VQ, stats requests are refused. */
static int
test_stats_absent(void)
{
	struct tb			t;
	int				rc = TAP_FAIL;

	TAP_CHECK(setup(&t, 0) == 0);
	if (virtio_balloon_request_stats(t.dev) != -ENOTSUP)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* A free page report on queue q: two device-writable ranges, one not
 * page aligned at its ends (only its whole pages go). */
static int
report_case(uint64_t features, unsigned q)
{
	struct tb			t;
	struct virtio_balloon_stats	st;
	struct vdrv_buf			b[2];
	uint64_t			gpa;
	unsigned			i;
	int				rc = TAP_FAIL;

	TAP_CHECK(setup(&t, features) == 0);
	gpa = touched_pages(&t, 32);
	b[0].gpa = gpa;			/* pages 0..7 */
	b[0].len = 8 * PG;
	b[0].write = true;
	b[1].gpa = gpa + 16 * PG + 100;	/* pages 17..19 whole */
	b[1].len = 4 * PG;
	b[1].write = true;
	if (vdrv_add(&t.d, q, b, 2, false) < 0)
		goto out;
	vdrv_kick(&t.d, q);
	if (!vdrv_wait_used(&t.d, q, NULL, NULL, WAIT_MS) || needs_reset(&t))
		goto out;
	for (i = 0; i < 32; i++) {
		bool	gone = i < 8 || (i >= 17 && i < 20);

		if (resident(&t, gpa + (uint64_t)i * PG) != !gone) {
			tap_diag("page %u", i);
			goto out;
		}
	}
	(void)virtio_balloon_stats(t.dev, &st);
	if (st.reported != 12 * PG || st.dropped_bytes != 11 * PG)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Reporting takes the first index after the negotiated queues. */
static int
test_report_q2(void)
{
	return report_case(F(VIRTIO_BALLOON_F_REPORTING), 2);
}

static int
test_report_q3(void)
{
	return report_case(F(VIRTIO_BALLOON_F_REPORTING) |
	    F(VIRTIO_BALLOON_F_STATS_VQ), 3);
}

/* A report range outside RAM cannot be described (the core refuses the
 * descriptor): the device is NEEDS_RESET, the process fine. */
static int
test_report_outside_ram(void)
{
	struct tb	t;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, F(VIRTIO_BALLOON_F_REPORTING)) == 0);
	if (vdrv_add1(&t.d, 2, VDRV_RAM_GPA + t.env.ram_size - PG, 2 * PG,
	    true) < 0)
		goto out;
	vdrv_kick(&t.d, 2);
	vdrv_env_poll(&t.env);
	if (!needs_reset(&t))
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Snapshot: target, actual and the held stats buffer survive into a
 * fresh device; a request there returns the driver's buffer. */
static int
test_snapshot(void)
{
	static const uint16_t	tag[] = { VIRTIO_BALLOON_S_MEMFREE };
	static const uint64_t	val[] = { 42 };
	struct tb		t;
	uint8_t			*buf = NULL;
	size_t			 len = 0;
	uint32_t		 id;
	uint32_t		 v;
	int			 head, rc = TAP_FAIL;

	TAP_CHECK(setup(&t, F(VIRTIO_BALLOON_F_STATS_VQ)) == 0);
	virtio_balloon_set_target(t.dev, 321);
	v = htole32(12);
	vdrv_config_write(&t.d, 4, &v, 4);
	if ((head = vdrv_add1(&t.d, 2, stats_buf(&t, tag, val, 1), 10,
	    false)) < 0)
		goto out;
	vdrv_kick(&t.d, 2);
	if (virtio_dev_save(t.dev, &buf, &len) != 0)
		goto out;
	virtio_dev_free(t.dev);
	t.dev = virtio_balloon_create(&t.env.host, VDRV_BASE(0), VDRV_IRQ(0));
	if (t.dev == NULL) {
		vdrv_detach(&t.d);
		munmap(t.map, t.env.ram_size);
		t.env.ram = t.calloc_ram;
		vdrv_env_fini(&t.env);
		free(buf);
		return TAP_FAIL;
	}
	t.d.dev = t.dev;
	if (virtio_dev_load(t.dev, buf, len) != 0) {
		tap_diag("load refused");
		goto out;
	}
	vdrv_config_read(&t.d, 0, &v, 4);
	if (le32toh(v) != 321 || virtio_balloon_actual(t.dev) != 12)
		goto out;
	if (virtio_balloon_request_stats(t.dev) != 0 ||
	    !vdrv_wait_used(&t.d, 2, &id, NULL, WAIT_MS) ||
	    id != (uint32_t)head)
		goto out;
	/* A truncated record is refused. */
	if (virtio_dev_load(t.dev, buf, len - 1) == 0)
		goto out;
	rc = TAP_PASS;
out:
	free(buf);
	teardown(&t);
	return rc;
}

/* Device features: what we offer. */
static int
test_features(void)
{
	struct tb	t;
	uint64_t	f;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, 0) == 0);
	f = vdrv_device_features(&t.d);
	if (!(f & F(VIRTIO_BALLOON_F_STATS_VQ)) ||
	    !(f & F(VIRTIO_BALLOON_F_REPORTING)) ||
	    (f & F(VIRTIO_BALLOON_F_FREE_PAGE_HINT)) ||
	    (f & F(VIRTIO_BALLOON_F_MUST_TELL_HOST)) ||
	    vdrv_read(&t.d, VIRTIO_MMIO_DEVICE_ID) != VIRTIO_ID_BALLOON)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

static const struct tap_case cases[] = {
	{ "features offered", test_features },
	{ "inflate drops the host pages, coalesced", test_inflate_frees },
	{ "inflate PFNs outside RAM ignored", test_inflate_outside_ram },
	{ "deflate counted", test_deflate_counted },
	{ "target: config interrupt and num_pages", test_target },
	{ "actual written by the driver", test_actual },
	{ "stats parsed, held, requested", test_stats },
	{ "stats refused without STATS_VQ", test_stats_absent },
	{ "free page report on queue 2", test_report_q2 },
	{ "free page report on queue 3 with stats", test_report_q3 },
	{ "report outside RAM: NEEDS_RESET", test_report_outside_ram },
	{ "snapshot keeps target, actual, stats buffer", test_snapshot },
};

int
main(void)
{
	log_init("balloon_test", LOG_NORMAL);
	return tap_run(cases, ARRAY_SIZE(cases), 60);
}
