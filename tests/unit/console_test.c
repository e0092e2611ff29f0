/*
 * Unit test for virtio-console (virtio/console.c), driven from the guest
 * side by tests/unit/vdrv on the fake hypervisor, with pipes for the
 * console's output and input.
 */
#include <sys/ioctl.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/virtio_console.h>

#include "hv/fake.h"
#include "tests/tap.h"
#include "tests/unit/vdrv.h"
#include "virtio/virtio.h"

#define WAIT_MS		2000
#define RXQ		0
#define TXQ		1

struct tc {
	struct vdrv_env		 env;
	struct vdrv		 d;
	struct virtio_dev	*dev;
	int			 out[2];
	int			 in[2];
};

static void
close_pipes(struct tc *t)
{
	int	i;

	for (i = 0; i < 2; i++) {
		if (t->out[i] >= 0)
			close(t->out[i]);
		if (t->in[i] >= 0)
			close(t->in[i]);
	}
}

/* A started console writing to a pipe and (with_in) reading one. */
static int
setup(struct tc *t, bool with_in, uint64_t want)
{
	memset(t, 0, sizeof(*t));
	t->out[0] = t->out[1] = t->in[0] = t->in[1] = -1;
	if (pipe2(t->out, O_CLOEXEC) != 0 ||
	    (with_in && pipe2(t->in, O_CLOEXEC) != 0))
		goto err_pipes;
	if (vdrv_env_init(&t->env, 16 << 20) != 0)
		goto err_pipes;
	t->dev = virtio_console_create(&t->env.host, VDRV_BASE(0),
	    VDRV_IRQ(0), t->out[1], t->in[0]);
	if (t->dev == NULL)
		goto err_env;
	vdrv_attach(&t->d, &t->env, t->dev, VDRV_BASE(0), VDRV_IRQ(0));
	if (vdrv_start(&t->d, want, 64) != 0)
		goto err_dev;
	return 0;
err_dev:
	virtio_dev_free(t->dev);
	vdrv_detach(&t->d);
err_env:
	vdrv_env_fini(&t->env);
err_pipes:
	close_pipes(t);
	return -1;
}

static void
teardown(struct tc *t)
{
	virtio_dev_free(t->dev);
	vdrv_detach(&t->d);
	vdrv_env_fini(&t->env);
	close_pipes(t);
}

/* Bytes waiting in a pipe. */
static int
pending(int fd)
{
	int	n = -1;

	return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

/* Post a transmit chain of the given strings as separate segments. */
static int
tx(struct tc *t, const char *const *s, unsigned n)
{
	struct vdrv_buf	b[8];
	unsigned	i;

	for (i = 0; i < n; i++) {
		b[i].gpa = vdrv_alloc_data(&t->env, s[i], strlen(s[i]));
		b[i].len = strlen(s[i]);
		b[i].write = false;
	}
	return vdrv_add(&t->d, TXQ, b, n, false);
}

static bool
never(void *arg)
{
	(void)arg;
	return false;
}

/* Several chains, one of two segments, reach the pipe in order. */
static int
test_output_order(void)
{
	static const char *const a[] = { "hello " };
	static const char *const b[] = { "wor", "ld" };
	static const char *const c[] = { "!\n" };
	struct tc	t;
	char		buf[64];
	ssize_t		n;
	unsigned	used = 0;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, false, ~0ULL) == 0);
	if (tx(&t, a, 1) < 0 || tx(&t, b, 2) < 0 || tx(&t, c, 1) < 0)
		goto out;
	vdrv_kick(&t.d, TXQ);
	while (used < 3 && vdrv_wait_used(&t.d, TXQ, NULL, NULL, WAIT_MS))
		used++;
	if (used != 3)
		goto out;
	n = read(t.out[0], buf, sizeof(buf) - 1);
	if (n != 13)
		goto out;
	buf[n] = '\0';
	if (strcmp(buf, "hello world!\n") != 0)
		goto out;
	if (vdrv_irq_fired(&t.d) == 0)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Input from the pipe lands in the posted receive buffer. */
static int
test_input(void)
{
	struct tc	t;
	uint64_t	buf;
	uint32_t	len;
	int		head, rc = TAP_FAIL;

	TAP_CHECK(setup(&t, true, ~0ULL) == 0);
	buf = vdrv_alloc(&t.env, 64, 8);
	if ((head = vdrv_add1(&t.d, RXQ, buf, 64, true)) < 0)
		goto out;
	vdrv_kick(&t.d, RXQ);
	if (write(t.in[1], "abc", 3) != 3)
		goto out;
	if (!vdrv_wait_used(&t.d, RXQ, NULL, &len, WAIT_MS) || len != 3 ||
	    memcmp(vdrv_ptr(&t.env, buf, 3), "abc", 3) != 0)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* With no receive buffer, input stays in the pipe until one comes;
 * one buffer takes what fits, the rest waits for the next. */
static int
test_input_waits(void)
{
	struct tc	t;
	uint64_t	a, b;
	uint32_t	len;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, true, ~0ULL) == 0);
	if (write(t.in[1], "xyz12", 5) != 5)
		goto out;
	(void)vdrv_env_run_until(&t.env, never, NULL, 100);
	if (pending(t.in[0]) != 5)
		goto out;
	a = vdrv_alloc(&t.env, 3, 8);
	if (vdrv_add1(&t.d, RXQ, a, 3, true) < 0)
		goto out;
	vdrv_kick(&t.d, RXQ);
	if (!vdrv_wait_used(&t.d, RXQ, NULL, &len, WAIT_MS) || len != 3 ||
	    memcmp(vdrv_ptr(&t.env, a, 3), "xyz", 3) != 0)
		goto out;
	(void)vdrv_env_run_until(&t.env, never, NULL, 50);
	if (pending(t.in[0]) != 2)
		goto out;
	b = vdrv_alloc(&t.env, 16, 8);
	if (vdrv_add1(&t.d, RXQ, b, 16, true) < 0)
		goto out;
	vdrv_kick(&t.d, RXQ);
	if (!vdrv_wait_used(&t.d, RXQ, NULL, &len, WAIT_MS) || len != 2 ||
	    memcmp(vdrv_ptr(&t.env, b, 2), "12", 2) != 0)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* A full non-blocking output holds the chain (nothing lost, order
 * kept) until the reader drains it. */
static int
test_output_backpressure(void)
{
	struct tc	 t;
	struct vdrv_buf	 b[2];
	uint8_t		*big, got[20480];
	size_t		 total = 0, i;
	ssize_t		 n;
	unsigned	 used = 0, tries;
	int		 rc = TAP_FAIL;

	TAP_CHECK(setup(&t, false, ~0ULL) == 0);
	if (fcntl(t.out[1], F_SETFL, O_NONBLOCK) != 0 ||
	    fcntl(t.out[1], F_SETPIPE_SZ, 4096) < 0)
		goto out;
	big = xmalloc(12000);
	for (i = 0; i < 12000; i++)
		big[i] = (uint8_t)(i * 7);
	b[0].gpa = vdrv_alloc_data(&t.env, big, 8000);
	b[0].len = 8000;
	b[0].write = false;
	b[1].gpa = vdrv_alloc_data(&t.env, big + 8000, 4000);
	b[1].len = 4000;
	b[1].write = false;
	free(big);
	if (vdrv_add(&t.d, TXQ, b, 2, false) < 0 ||
	    vdrv_add(&t.d, TXQ, b, 1, false) < 0)
		goto out;
	vdrv_kick(&t.d, TXQ);
	(void)vdrv_env_run_until(&t.env, never, NULL, 50);
	if (vdrv_used_pending(&t.d, TXQ) != 0) {
		tap_diag("chain returned before it was written");
		goto out;
	}
	for (tries = 0; total < 20000 && tries < 200; tries++) {
		n = read(t.out[0], got + total, sizeof(got) - total);
		if (n > 0)
			total += n;
		(void)vdrv_env_run_until(&t.env, never, NULL, 5);
	}
	while (vdrv_used(&t.d, TXQ, NULL, NULL))
		used++;
	if (total != 20000 || used != 2) {
		tap_diag("read %zu, used %u", total, used);
		goto out;
	}
	for (i = 0; i < 20000; i++)
		if (got[i] != (uint8_t)((i < 12000 ? i : i - 12000) * 7))
			goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* The reader went away: output is dropped, the guest goes on. */
static int
test_output_gone(void)
{
	static const char *const a[] = { "into the void\n" };
	struct tc	t;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, false, ~0ULL) == 0);
	close(t.out[0]);
	t.out[0] = -1;
	if (tx(&t, a, 1) < 0)
		goto out;
	vdrv_kick(&t.d, TXQ);
	if (!vdrv_wait_used(&t.d, TXQ, NULL, NULL, WAIT_MS))
		goto out;
	if (tx(&t, a, 1) < 0)
		goto out;
	vdrv_kick(&t.d, TXQ);
	if (!vdrv_wait_used(&t.d, TXQ, NULL, NULL, WAIT_MS))
		goto out;
	if (vdrv_read(&t.d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Emergency write: only once negotiated. */
static int
test_emerg_write(void)
{
	struct tc	t;
	uint32_t	v = 'Z';
	char		c;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, 0, 0) == 0);
	vdrv_config_write(&t.d, 8, &v, 4);
	if (pending(t.out[0]) != 0)
		goto out;
	teardown(&t);
	TAP_CHECK(setup(&t, 0,
	    1ULL << VIRTIO_CONSOLE_F_EMERG_WRITE) == 0);
	vdrv_config_write(&t.d, 8, &v, 4);
	if (read(t.out[0], &c, 1) != 1 || c != 'Z')
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* The device and its config. */
static int
test_identity(void)
{
	struct tc	t;
	uint64_t	f;
	uint32_t	ports;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, false, ~0ULL) == 0);
	f = vdrv_device_features(&t.d);
	if (vdrv_read(&t.d, VIRTIO_MMIO_DEVICE_ID) != VIRTIO_ID_CONSOLE ||
	    (f & (1ULL << VIRTIO_CONSOLE_F_MULTIPORT)) ||
	    (f & (1ULL << VIRTIO_CONSOLE_F_SIZE)))
		goto out;
	vdrv_config_read(&t.d, 4, &ports, 4);
	if (ports != 1)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* A device reset while a receive buffer is held: input is no longer
 * read (the buffer went with the queue), and a restart works again. */
static int
test_reset_with_held_rx(void)
{
	struct tc	t;
	uint64_t	buf;
	uint32_t	len;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, true, ~0ULL) == 0);
	buf = vdrv_alloc(&t.env, 16, 8);
	if (vdrv_add1(&t.d, RXQ, buf, 16, true) < 0)
		goto out;
	vdrv_kick(&t.d, RXQ);
	vdrv_write(&t.d, VIRTIO_MMIO_STATUS, 0);
	if (write(t.in[1], "late", 4) != 4)
		goto out;
	(void)vdrv_env_run_until(&t.env, never, NULL, 50);
	if (pending(t.in[0]) != 4)
		goto out;
	if (vdrv_start(&t.d, ~0ULL, 64) != 0)
		goto out;
	buf = vdrv_alloc(&t.env, 16, 8);
	if (vdrv_add1(&t.d, RXQ, buf, 16, true) < 0)
		goto out;
	vdrv_kick(&t.d, RXQ);
	if (!vdrv_wait_used(&t.d, RXQ, NULL, &len, WAIT_MS) || len != 4 ||
	    memcmp(vdrv_ptr(&t.env, buf, 4), "late", 4) != 0)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

static const struct tap_case cases[] = {
	{ "device id, features, config", test_identity },
	{ "output reaches the fd in order", test_output_order },
	{ "input reaches a receive buffer", test_input },
	{ "input waits for receive buffers", test_input_waits },
	{ "full output holds the chain", test_output_backpressure },
	{ "vanished output is dropped", test_output_gone },
	{ "emergency write", test_emerg_write },
	{ "reset with a held receive buffer", test_reset_with_held_rx },
};

int
main(void)
{
	/* A closed console pipe must not kill us (the machine does the
	 * same). */
	signal(SIGPIPE, SIG_IGN);
	log_init("console_test", LOG_NORMAL);
	return tap_run(cases, ARRAY_SIZE(cases), 60);
}
