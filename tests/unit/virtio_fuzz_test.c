/*
 * Hostile rings against the virtio core: crafted malicious descriptor
 * chains with a known verdict (loops, next out of range, nested or
 * malformed indirect tables, buffers at or past the end of guest memory,
 * wrapping 64-bit addresses, avail idx jumps, zero-length descriptors,
 * writable-before-readable) and thousands of random rings.  The device
 * is an echo device copying readable bytes into writable ones, so every
 * accepted segment is really read and written.  Nothing may crash or
 * touch memory outside guest RAM: run it under ASan (tools/check does).
 *
 * Deterministic: SMX_FUZZ_SEED picks the seed (default 1; "random":
 * the time), which is
 * printed; SMX_FUZZ_ITERS the number of random rounds (default 20000).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/tap.h"
#include "tests/unit/vdrv.h"
#include "virtio/virtio.h"

#define QSIZE		16
#define RAM		(1 << 20)
#define RAM_END		(VDRV_RAM_GPA + RAM)
#define F(b)		(1ULL << (b))
#define D_NEXT		1
#define D_WRITE		2
#define D_IND		4

struct echo {
	unsigned	popped, bad;
};

static void
echo_notify(struct virtio_dev *dev, void *priv, unsigned q)
{
	struct echo		*e = priv;
	struct virtio_queue	*vq = virtio_dev_queue(dev, q);
	static struct virtio_chain c;
	static uint8_t		 buf[1 << 16];
	size_t			 n, off;
	int			 rc;

	while ((rc = virtio_queue_pop(vq, &c)) == 1) {
		e->popped++;
		/* Touch every byte of every segment. */
		for (off = 0; off < c.read_len; off += n)
			if ((n = virtio_chain_read(&c, off, buf,
			    sizeof(buf))) == 0)
				break;
		for (off = 0; off < c.write_len; off += n)
			if ((n = virtio_chain_write(&c, off, buf,
			    MIN(sizeof(buf), c.write_len - off))) == 0)
				break;
		virtio_queue_push(vq, &c, c.write_len);
	}
	if (rc < 0)
		e->bad++;
	virtio_queue_notify_guest(vq);
}

static const struct virtio_dev_ops echo_ops = {
	.name = "fuzz-echo",
	.device_id = 0x7e58,
	.nqueues = 1,
	.queue_max = QSIZE,
	.notify = echo_notify,
};

static struct vdrv_env	 env;
static struct vdrv	 d;
static struct echo	 E;
static struct virtio_dev *dev;
static uint64_t		 data;		/* 64 KiB of buffers */
static uint64_t		 tables;	/* 32 KiB of indirect tables */
static uint64_t		 rng_state;

static uint64_t
rnd(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

static uint64_t
rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

/* Fresh driver bring-up on the same guest RAM layout every time. */
static int
restart(uint64_t features)
{
	env.brk = VDRV_RAM_GPA;
	if (vdrv_start(&d, features, QSIZE) < 0)
		return -1;
	data = vdrv_alloc(&env, 1 << 16, 16);
	tables = vdrv_alloc(&env, 1 << 15, 16);
	(void)vdrv_irq_fired(&d);
	return 0;
}

static void
wdesc(uint64_t table, unsigned i, uint64_t addr, uint32_t len,
    uint16_t flags, uint16_t next)
{
	uint8_t	*p = vdrv_ptr(&env, table + 16ULL * i, 16);

	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

/* Put head on the avail ring and advance avail idx by `step` (1 for an
 * honest driver). */
static void
publish(uint16_t head, uint16_t step)
{
	struct vdrv_queue	*q = &d.q[0];
	uint16_t		*ring = vdrv_ptr(&env, q->avail + 4 +
	    2ULL * (q->avail_idx % QSIZE), 2);
	uint16_t		*idx = vdrv_ptr(&env, q->avail + 2, 2);

	*ring = head;
	q->avail_idx += step;
	__atomic_store_n(idx, q->avail_idx, __ATOMIC_RELEASE);
}

/* Kick; 1 when a used entry appeared, -1 when the device gave up. */
static int
outcome(void)
{
	uint32_t	len;

	vdrv_kick(&d, 0);
	if (virtio_dev_needs_reset(dev))
		return -1;
	return vdrv_used(&d, 0, NULL, &len) ? 1 : 0;
}

/* One crafted case: its name, ring, and the verdict expected. */
struct craft {
	const char	*name;
	uint64_t	 features;
	void		(*build)(void);
	int		 expect;
};

#define DESC	(d.q[0].desc)

static void b_ok(void) { wdesc(DESC, 0, data, 8, D_NEXT, 1);
	wdesc(DESC, 1, data + 8, 8, D_WRITE, 0); publish(0, 1); }
static void b_self_loop(void) { wdesc(DESC, 3, data, 8, D_NEXT, 3);
	publish(3, 1); }
static void b_loop(void) { wdesc(DESC, 0, data, 8, D_NEXT, 1);
	wdesc(DESC, 1, data, 8, D_NEXT, 2);
	wdesc(DESC, 2, data, 8, D_NEXT, 0); publish(0, 1); }
static void b_full_chain(void) {
	for (unsigned i = 0; i < QSIZE; i++)
		wdesc(DESC, i, data + 16 * i, 16,
		    i + 1 < QSIZE ? D_NEXT : 0, i + 1);
	publish(0, 1); }
static void b_next_oob(void) { wdesc(DESC, 0, data, 8, D_NEXT, QSIZE);
	publish(0, 1); }
static void b_next_huge(void) { wdesc(DESC, 0, data, 8, D_NEXT, 0xffff);
	publish(0, 1); }
static void b_head_oob(void) { publish(QSIZE, 1); }
static void b_head_huge(void) { publish(0xffff, 1); }
static void b_end_fits(void) { wdesc(DESC, 0, RAM_END - 64, 64, D_WRITE, 0);
	publish(0, 1); }
static void b_end_over(void) { wdesc(DESC, 0, RAM_END - 64, 65, D_WRITE, 0);
	publish(0, 1); }
static void b_beyond(void) { wdesc(DESC, 0, RAM_END, 1, 0, 0);
	publish(0, 1); }
static void b_below(void) { wdesc(DESC, 0, VDRV_RAM_GPA - 4, 8, 0, 0);
	publish(0, 1); }
static void b_wrap(void) { wdesc(DESC, 0, 0xfffffffffffffff0ULL, 0x20,
	D_WRITE, 0); publish(0, 1); }
static void b_wrap2(void) { wdesc(DESC, 0, VDRV_RAM_GPA, 0xffffffff, 0, 0);
	publish(0, 1); }
static void b_zero_len(void) { wdesc(DESC, 0, 0xdeadbeefdeadULL, 0, D_NEXT,
	1); wdesc(DESC, 1, data, 8, D_WRITE, 0); publish(0, 1); }
static void b_write_then_read(void) { wdesc(DESC, 0, data, 8,
	D_WRITE | D_NEXT, 1); wdesc(DESC, 1, data + 8, 8, 0, 0);
	publish(0, 1); }
static void b_jump(void) { b_ok(); d.q[0].avail_idx += QSIZE;
	publish(0, 1); }
static void b_jump_max(void) {
	for (unsigned i = 0; i < QSIZE; i++) {
		wdesc(DESC, i, data + 16 * i, 16, D_WRITE, 0);
		publish(i, 1);
	} }
static void b_ind_ok(void) { wdesc(tables, 0, data, 8, D_NEXT, 1);
	wdesc(tables, 1, data + 8, 8, D_WRITE, 0);
	wdesc(DESC, 0, tables, 32, D_IND, 0); publish(0, 1); }
static void b_ind_nested(void) { wdesc(tables, 0, tables + 64, 16, D_IND, 0);
	wdesc(DESC, 0, tables, 16, D_IND, 0); publish(0, 1); }
static void b_ind_len17(void) { wdesc(DESC, 0, tables, 17, D_IND, 0);
	publish(0, 1); }
static void b_ind_len0(void) { wdesc(DESC, 0, tables, 0, D_IND, 0);
	publish(0, 1); }
static void b_ind_next(void) { wdesc(tables, 0, data, 8, 0, 0);
	wdesc(DESC, 0, tables, 16, D_IND | D_NEXT, 1);
	wdesc(DESC, 1, data, 8, 0, 0); publish(0, 1); }
static void b_ind_beyond(void) { wdesc(DESC, 0, RAM_END - 16, 32, D_IND, 0);
	publish(0, 1); }
static void b_ind_huge(void) { wdesc(DESC, 0, tables, 0xfffffff0, D_IND, 0);
	publish(0, 1); }
static void b_ind_loop(void) { wdesc(tables, 0, data, 8, D_NEXT, 1);
	wdesc(tables, 1, data, 8, D_NEXT, 0);
	wdesc(DESC, 0, tables, 32, D_IND, 0); publish(0, 1); }
static void b_ind_next_oob(void) { wdesc(tables, 0, data, 8, D_NEXT, 2);
	wdesc(tables, 1, data, 8, 0, 0);
	wdesc(DESC, 0, tables, 32, D_IND, 0); publish(0, 1); }
static void b_ind_chain(unsigned n) {
	for (unsigned i = 0; i < n; i++)
		wdesc(tables, i, data + (i % 4096) * 16, 16,
		    i + 1 < n ? D_NEXT : 0, i + 1);
	wdesc(DESC, 0, tables, 16 * n, D_IND, 0); publish(0, 1); }
static void b_ind_max(void) { b_ind_chain(VIRTIO_MAX_CHAIN); }
static void b_ind_too_long(void) { b_ind_chain(VIRTIO_MAX_CHAIN + 1); }
static void b_ind_after_direct(void) { wdesc(tables, 0, data, 8, D_WRITE, 0);
	wdesc(DESC, 0, data + 8, 8, D_NEXT, 1);
	wdesc(DESC, 1, tables, 16, D_IND, 0); publish(0, 1); }
static void b_ind_ring_overlap(void) {
	/* The table is the descriptor ring itself: legal memory. */
	wdesc(DESC, 1, data, 8, 0, 0);
	wdesc(DESC, 0, DESC + 16, 16, D_IND, 0); publish(0, 1); }
static void b_ind_ring_self(void) {
	/* ... but then it holds the indirect descriptor itself. */
	wdesc(DESC, 0, DESC, 16 * QSIZE, D_IND, 0); publish(0, 1); }

#define II	F(VIRTIO_F_INDIRECT_DESC)
static const struct craft crafts[] = {
	{ "honest chain", 0, b_ok, 1 },
	{ "self loop", 0, b_self_loop, -1 },
	{ "three-descriptor loop", 0, b_loop, -1 },
	{ "chain as long as the queue", 0, b_full_chain, 1 },
	{ "next == queue size", 0, b_next_oob, -1 },
	{ "next 0xffff", 0, b_next_huge, -1 },
	{ "head == queue size", 0, b_head_oob, -1 },
	{ "head 0xffff", 0, b_head_huge, -1 },
	{ "buffer ending at end of RAM", 0, b_end_fits, 1 },
	{ "buffer one byte past RAM", 0, b_end_over, -1 },
	{ "buffer beyond RAM", 0, b_beyond, -1 },
	{ "buffer straddling RAM start", 0, b_below, -1 },
	{ "64-bit wrapping address", 0, b_wrap, -1 },
	{ "4 GiB length", 0, b_wrap2, -1 },
	{ "zero-length descriptor, bogus address", 0, b_zero_len, 1 },
	{ "writable before readable", 0, b_write_then_read, -1 },
	{ "avail idx jumps past queue size", 0, b_jump, -1 },
	{ "avail idx a full queue ahead", 0, b_jump_max, 1 },
	{ "indirect honest", II, b_ind_ok, 1 },
	{ "indirect without the feature", 0, b_ind_ok, -1 },
	{ "indirect inside indirect", II, b_ind_nested, -1 },
	{ "indirect length 17", II, b_ind_len17, -1 },
	{ "indirect length 0", II, b_ind_len0, -1 },
	{ "indirect with NEXT", II, b_ind_next, -1 },
	{ "indirect table past RAM", II, b_ind_beyond, -1 },
	{ "indirect table 4 GiB", II, b_ind_huge, -1 },
	{ "indirect loop", II, b_ind_loop, -1 },
	{ "indirect next out of table", II, b_ind_next_oob, -1 },
	{ "indirect with VIRTIO_MAX_CHAIN segments", II, b_ind_max, 1 },
	{ "indirect one segment too many", II, b_ind_too_long, -1 },
	{ "direct then indirect", II, b_ind_after_direct, 1 },
	{ "indirect table inside the ring", II, b_ind_ring_overlap, 1 },
	{ "indirect table holding itself", II, b_ind_ring_self, -1 },
};

static int
setup(void)
{
	memset(&E, 0, sizeof(E));
	if (vdrv_env_init(&env, RAM) < 0)
		return -1;
	if ((dev = virtio_mmio_create(&env.host, VDRV_BASE(0), VDRV_IRQ(0),
	    &echo_ops, &E)) == NULL)
		return -1;
	vdrv_attach(&d, &env, dev, VDRV_BASE(0), VDRV_IRQ(0));
	return 0;
}

static void
teardown(void)
{
	virtio_dev_free(dev);
	vdrv_env_fini(&env);
}

static int
t_crafted(void)
{
	const struct craft	*c;
	size_t			 i;
	int			 got, failed = 0;

	if (setup() < 0)
		return TAP_FAIL;
	for (i = 0; i < ARRAY_SIZE(crafts); i++) {
		c = &crafts[i];
		if (restart(c->features) < 0) {
			tap_diag("%s: bring-up failed", c->name);
			failed++;
			continue;
		}
		c->build();
		got = outcome();
		if (got != c->expect) {
			tap_diag("%s: got %d, want %d", c->name, got, c->expect);
			failed++;
		}
		/* A refused ring always raises the config interrupt. */
		if (got < 0 && !(vdrv_isr_ack(&d) & VIRTIO_ISR_CONFIG)) {
			tap_diag("%s: no config interrupt", c->name);
			failed++;
		}
	}
	teardown();
	return failed ? TAP_FAIL : TAP_PASS;
}

/* A guest address the fuzzer likes: mostly plausible, often nasty. */
static uint64_t
fuzz_addr(void)
{
	/* One in twelve is hostile. */
	if (rnd_below(12) != 0)
		return data + rnd_below((1 << 16) - 4096);
	switch (rnd_below(8)) {
	case 0:
		return RAM_END - rnd_below(256);
	case 1:
		return RAM_END + rnd_below(256);
	case 2:
		return -rnd_below(4096);		/* wraps */
	case 3:
		return rnd();
	case 4:
		return VDRV_RAM_GPA - rnd_below(64);
	case 5:
		return tables + 16 * rnd_below(64);
	default:
		return DESC + rnd_below(16 * QSIZE);
	}
}

static uint32_t
fuzz_len(void)
{
	switch (rnd_below(24)) {
	case 0:
	case 1:
		return 0;
	case 2:
		return (uint32_t)rnd();
	case 3:
		return 0xffffffff - (uint32_t)rnd_below(16);
	default:
		return (uint32_t)rnd_below(4096);
	}
}

static uint16_t
fuzz_flags(bool readable)
{
	uint16_t	f = 0;

	if (rnd_below(2) != 0)
		f |= D_NEXT;
	/* Mostly honest ordering: readable ones first. */
	if (!readable || rnd_below(16) == 0)
		f |= D_WRITE;
	if (rnd_below(24) == 0)
		f |= D_IND;
	if (rnd_below(64) == 0)
		f |= (uint16_t)rnd();
	return f;
}

/* n descriptors whose next links stay mostly in [0, range), indirect
 * tables mostly of an honest length. */
static void
fuzz_table(uint64_t table, unsigned n, unsigned range)
{
	uint32_t	len;
	uint16_t	flags;
	unsigned	i;

	for (i = 0; i < n; i++) {
		flags = fuzz_flags(i < n / 2);
		len = fuzz_len();
		if ((flags & D_IND) && rnd_below(4) != 0)
			len = 16 * (1 + rnd_below(8));
		wdesc(table, i, (flags & D_IND) && rnd_below(4) != 0 ?
		    tables + 16 * rnd_below(56) : fuzz_addr(), len, flags,
		    rnd_below(16) == 0 ? (uint16_t)rnd() :
		    (uint16_t)rnd_below(range));
	}
}

static int
t_random(void)
{
	const char	*s;
	uint64_t	 seed, iters, it, features;
	unsigned	 restarts = 0, accepted = 0, refused = 0, k, i;
	uint16_t	*idx;

	s = getenv("SMX_FUZZ_SEED");
	/* A fixed seed by default, so a run is repeatable (and CI cannot
	 * fail on a seed nobody saw); "random" explores. */
	if (s == NULL)
		seed = 1;
	else if (strcmp(s, "random") == 0)
		seed = (uint64_t)time(NULL);
	else
		seed = strtoull(s, NULL, 0);
	s = getenv("SMX_FUZZ_ITERS");
	iters = s != NULL ? strtoull(s, NULL, 0) : 20000;
	tap_diag("seed %" PRIu64 " (SMX_FUZZ_SEED=%" PRIu64
	    " reproduces), %" PRIu64 " rounds", seed, seed, iters);
	rng_state = seed * 2654435761ULL + 1;

	if (setup() < 0)
		return TAP_FAIL;
	for (it = 0; it < iters; it++) {
		if (it == 0 || virtio_dev_needs_reset(dev) ||
		    rnd_below(50) == 0) {
			features = (rnd_below(2) ? F(VIRTIO_F_INDIRECT_DESC) :
			    0) | (rnd_below(2) ? F(VIRTIO_F_EVENT_IDX) : 0);
			if (restart(features) < 0) {
				tap_diag("round %" PRIu64 ": bring-up failed",
				    it);
				teardown();
				return TAP_FAIL;
			}
			restarts++;
		}
		/* Mostly-sane descriptors with a few nasty ones. */
		fuzz_table(DESC, QSIZE, QSIZE + 1);
		fuzz_table(tables, 64, 70);
		if (rnd_below(3) == 0) {
			/* An honest-looking chain now and then. */
			for (i = 0; i < 3; i++)
				wdesc(DESC, i, data + 64 * i, 64,
				    (i == 2 ? D_WRITE : 0) |
				    (i < 2 ? D_NEXT : 0), i + 1);
		}
		k = rnd_below(4) + 1;
		for (i = 0; i < k; i++)
			publish(rnd_below(32) == 0 ? (uint16_t)rnd() :
			    (uint16_t)rnd_below(QSIZE), 1);
		if (rnd_below(40) == 0) {
			/* Scribble on avail idx / used ring directly. */
			idx = vdrv_ptr(&env, d.q[0].avail + 2, 2);
			*idx = (uint16_t)rnd();
			d.q[0].avail_idx = *idx;
		}
		if (rnd_below(10) == 0)
			vdrv_set_used_event(&d, 0, (uint16_t)rnd());
		vdrv_kick(&d, 0);
		while (vdrv_used(&d, 0, NULL, NULL))
			accepted++;
		if (virtio_dev_needs_reset(dev))
			refused++;
		if (rnd_below(4) == 0) {
			vdrv_isr_ack(&d);
			vdrv_eoi(&d);
		}
		(void)vdrv_irq_fired(&d);
	}
	tap_diag("%u restarts, %u chains used, %u rings refused",
	    restarts, accepted, refused);
	teardown();
	/* Both verdicts must have been exercised. */
	return accepted > 0 && refused > 0 ? TAP_PASS : TAP_FAIL;
}

static const struct tap_case cases[] = {
	{ "crafted malicious rings", t_crafted },
	{ "random rings", t_random },
};

int
main(void)
{
	log_init("virtio_fuzz_test", LOG_QUIET);
	return tap_run(cases, ARRAY_SIZE(cases), 300);
}
