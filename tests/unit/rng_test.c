/*
 * Unit test for virtio-rng (virtio/rng.c), driven from the guest side by
 * tests/unit/vdrv on the fake hypervisor.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hv/fake.h"
#include "tests/tap.h"
#include "tests/unit/vdrv.h"
#include "virtio/virtio.h"

#define WAIT_MS		2000
#define RNG_CHAIN_MAX	(64 * 1024)	/* what rng.c gives one chain */

/* The machine of one case: a started rng device on queue 0. */
struct trng {
	struct vdrv_env		 env;
	struct vdrv		 d;
	struct virtio_dev	*dev;
};

static int
setup(struct trng *t)
{
	memset(t, 0, sizeof(*t));
	if (vdrv_env_init(&t->env, 16 << 20) != 0)
		return -1;
	t->dev = virtio_rng_create(&t->env.host, VDRV_BASE(0), VDRV_IRQ(0));
	if (t->dev == NULL) {
		vdrv_env_fini(&t->env);
		return -1;
	}
	vdrv_attach(&t->d, &t->env, t->dev, VDRV_BASE(0), VDRV_IRQ(0));
	if (vdrv_start(&t->d, ~0ULL, 64) != 0) {
		virtio_dev_free(t->dev);
		vdrv_detach(&t->d);
		vdrv_env_fini(&t->env);
		return -1;
	}
	return 0;
}

static void
teardown(struct trng *t)
{
	virtio_dev_free(t->dev);
	vdrv_detach(&t->d);
	vdrv_env_fini(&t->env);
}

/* Whether len bytes are all zero (random bytes of any length >= 8 are
 * not, except with negligible probability). */
static bool
all_zero(const uint8_t *p, size_t len)
{
	size_t	i;

	for (i = 0; i < len; i++) {
		if (p[i] != 0)
			return false;
	}
	return true;
}

/* Post one writable buffer of len bytes, kick, wait: its used length. */
static int
request(struct trng *t, uint64_t gpa, uint32_t len, uint32_t *used)
{
	uint32_t	id;
	int		head;

	head = vdrv_add1(&t->d, 0, gpa, len, true);
	if (head < 0)
		return -1;
	vdrv_kick(&t->d, 0);
	if (!vdrv_wait_used(&t->d, 0, &id, used, WAIT_MS))
		return -1;
	return id == (uint32_t)head ? 0 : -1;
}

static int
test_bytes_arrive(void)
{
	struct trng	t;
	uint64_t	buf;
	uint32_t	used;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t) == 0);
	TAP_CHECK(vdrv_device_features(&t.d) & (1ULL << VIRTIO_F_VERSION_1));
	buf = vdrv_alloc(&t.env, 64, 8);
	if (request(&t, buf, 64, &used) != 0 || used != 64)
		goto out;
	if (all_zero(vdrv_ptr(&t.env, buf, 64), 64))
		goto out;
	/* The driver was interrupted for the used buffer. */
	if (vdrv_irq_fired(&t.d) == 0 || !(vdrv_isr_ack(&t.d) & VIRTIO_ISR_USED))
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

static int
test_requests_differ(void)
{
	struct trng	t;
	uint64_t	a, b;
	uint32_t	used_a, used_b;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t) == 0);
	a = vdrv_alloc(&t.env, 32, 8);
	b = vdrv_alloc(&t.env, 32, 8);
	if (request(&t, a, 32, &used_a) != 0 ||
	    request(&t, b, 32, &used_b) != 0 || used_a != 32 || used_b != 32)
		goto out;
	if (memcmp(vdrv_ptr(&t.env, a, 32), vdrv_ptr(&t.env, b, 32), 32) == 0)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* A buffer larger than one chain's share gets exactly that share; one
 * of exactly that size is filled whole. */
static int
test_large_buffer(void)
{
	struct trng	t;
	uint64_t	big, exact;
	uint32_t	used;
	uint8_t		*p;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t) == 0);
	big = vdrv_alloc(&t.env, 4 * RNG_CHAIN_MAX, 4096);
	exact = vdrv_alloc(&t.env, RNG_CHAIN_MAX, 4096);
	if (request(&t, big, 4 * RNG_CHAIN_MAX, &used) != 0) {
		tap_diag("large request not answered");
		goto out;
	}
	if (used != RNG_CHAIN_MAX) {
		tap_diag("large buffer: %u bytes", used);
		goto out;
	}
	p = vdrv_ptr(&t.env, big, 4 * RNG_CHAIN_MAX);
	/* Both ends of the filled part got bytes; beyond it, nothing. */
	if (all_zero(p, 64) || all_zero(p + RNG_CHAIN_MAX - 64, 64) ||
	    !all_zero(p + RNG_CHAIN_MAX, 3 * RNG_CHAIN_MAX))
		goto out;
	if (request(&t, exact, RNG_CHAIN_MAX, &used) != 0 ||
	    used != RNG_CHAIN_MAX)
		goto out;
	p = vdrv_ptr(&t.env, exact, RNG_CHAIN_MAX);
	if (all_zero(p + RNG_CHAIN_MAX - 64, 64))
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* A chain of several writable segments (direct and indirect) is filled
 * across all of them. */
static int
test_chain_segments(void)
{
	static const uint32_t	lens[] = { 16, 100, 1, 4000, 24 };
	struct trng		t;
	struct vdrv_buf		b[ARRAY_SIZE(lens)];
	uint32_t		id, used, total = 0;
	unsigned		i, pass;
	int			head, rc = TAP_FAIL;

	TAP_CHECK(setup(&t) == 0);
	for (pass = 0; pass < 2; pass++) {
		total = 0;
		for (i = 0; i < ARRAY_SIZE(lens); i++) {
			b[i].gpa = vdrv_alloc(&t.env, lens[i], 1);
			b[i].len = lens[i];
			b[i].write = true;
			total += lens[i];
		}
		head = vdrv_add(&t.d, 0, b, ARRAY_SIZE(b), pass == 1);
		if (head < 0)
			goto out;
		vdrv_kick(&t.d, 0);
		if (!vdrv_wait_used(&t.d, 0, &id, &used, WAIT_MS) ||
		    id != (uint32_t)head || used != total) {
			tap_diag("pass %u: used %u of %u", pass, used, total);
			goto out;
		}
		for (i = 0; i < ARRAY_SIZE(lens); i++) {
			if (lens[i] >= 8 && all_zero(vdrv_ptr(&t.env,
			    b[i].gpa, lens[i]), lens[i])) {
				tap_diag("pass %u: segment %u empty", pass, i);
				goto out;
			}
		}
	}
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Many buffers, one kick: all come back, in order. */
static int
test_many_one_kick(void)
{
	struct trng	t;
	uint64_t	buf[16];
	int		head[16];
	uint32_t	id, used;
	unsigned	i;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t) == 0);
	for (i = 0; i < ARRAY_SIZE(buf); i++) {
		buf[i] = vdrv_alloc(&t.env, 128, 8);
		head[i] = vdrv_add1(&t.d, 0, buf[i], 128, true);
		if (head[i] < 0)
			goto out;
	}
	vdrv_kick(&t.d, 0);
	for (i = 0; i < ARRAY_SIZE(buf); i++) {
		if (!vdrv_wait_used(&t.d, 0, &id, &used, WAIT_MS) ||
		    id != (uint32_t)head[i] || used != 128)
			goto out;
	}
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* A chain with nothing writable is answered with 0 bytes, and the device
 * keeps working. */
static int
test_readable_only(void)
{
	struct trng	t;
	uint64_t	buf;
	uint32_t	used = 1;
	int		head, rc = TAP_FAIL;
	uint32_t	id;

	TAP_CHECK(setup(&t) == 0);
	buf = vdrv_alloc(&t.env, 64, 8);
	head = vdrv_add1(&t.d, 0, buf, 64, false);
	if (head < 0)
		goto out;
	vdrv_kick(&t.d, 0);
	if (!vdrv_wait_used(&t.d, 0, &id, &used, WAIT_MS) || used != 0)
		goto out;
	if (!all_zero(vdrv_ptr(&t.env, buf, 64), 64))
		goto out;	/* a readable buffer must stay untouched */
	if (request(&t, buf, 64, &used) != 0 || used != 64)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Reset and start again: the device serves the new queue. */
static int
test_reset_restart(void)
{
	struct trng	t;
	uint64_t	buf;
	uint32_t	used;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t) == 0);
	buf = vdrv_alloc(&t.env, 32, 8);
	if (request(&t, buf, 32, &used) != 0)
		goto out;
	if (vdrv_start(&t.d, ~0ULL, 16) != 0)
		goto out;
	if (request(&t, buf, 32, &used) != 0 || used != 32)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

static const struct tap_case cases[] = {
	{ "bytes arrive in a writable buffer, with an interrupt",
	    test_bytes_arrive },
	{ "two requests get different bytes", test_requests_differ },
	{ "a large buffer gets one chain's share", test_large_buffer },
	{ "a chain of several segments is filled (direct, indirect)",
	    test_chain_segments },
	{ "many buffers, one kick", test_many_one_kick },
	{ "a readable-only chain gets 0 bytes", test_readable_only },
	{ "reset and restart", test_reset_restart },
};

int
main(void)
{
	log_init("rng_test", LOG_NORMAL);
	return tap_run(cases, ARRAY_SIZE(cases), 60);
}
