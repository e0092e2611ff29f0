/*
 * Unit test for the virtio core (virtio/mmio.c, virtio/queue.c): the
 * transport registers, feature negotiation, reset, config generation,
 * queue validation, split-ring pop/push (direct and indirect), EVENT_IDX
 * and NO_INTERRUPT suppression, level-interrupt resampling and the
 * snapshot record.  The device is an "echo" device defined here: each
 * chain's readable bytes are copied into its writable bytes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hv/fake.h"
#include "tests/tap.h"
#include "tests/unit/vdrv.h"
#include "virtio/virtio.h"

#define ECHO_ID		0x7e57
#define ECHO_F_TEST	3		/* a device feature bit */
#define ECHO_QMAX	64
#define F(b)		(1ULL << (b))
#define CORE_F		(F(VIRTIO_F_VERSION_1) | F(VIRTIO_F_INDIRECT_DESC) | \
			 F(VIRTIO_F_EVENT_IDX))

struct echo {
	unsigned	notifies, resets, driver_oks, echoed, bad;
	uint8_t		config[12];
	uint32_t	saved_state;
	/* hold: keep the first chain popped, as a device with requests in
	 * flight does; save completes it (as fs/blk drain their pools). */
	bool		hold;
	struct virtio_chain *held;
	unsigned	held_q;
};

/* Echo every available chain back. */
static void
echo_notify(struct virtio_dev *dev, void *priv, unsigned q)
{
	struct echo		*e = priv;
	struct virtio_queue	*vq = virtio_dev_queue(dev, q);
	struct virtio_chain	*c;
	uint8_t			 buf[4096];
	size_t			 n;
	int			 rc;

	e->notifies++;
	c = xmalloc(sizeof(*c));
	if (e->hold && e->held == NULL && virtio_queue_pop(vq, c) == 1) {
		e->held = c;
		e->held_q = q;
		return;
	}
	while ((rc = virtio_queue_pop(vq, c)) == 1) {
		n = virtio_chain_read(c, 0, buf, MIN(sizeof(buf),
		    c->write_len));
		n = virtio_chain_write(c, 0, buf, n);
		virtio_queue_push(vq, c, n);
		e->echoed++;
	}
	if (rc < 0)
		e->bad++;
	free(c);
	virtio_queue_notify_guest(vq);
}

static void
echo_reset(struct virtio_dev *dev, void *priv)
{
	((struct echo *)priv)->resets++;
}

static void
echo_driver_ok(struct virtio_dev *dev, void *priv)
{
	((struct echo *)priv)->driver_oks++;
}

static void
echo_config_read(struct virtio_dev *dev, void *priv, uint32_t off,
    void *data, uint32_t len)
{
	memcpy(data, ((struct echo *)priv)->config + off, len);
}

static void
echo_config_write(struct virtio_dev *dev, void *priv, uint32_t off,
    const void *data, uint32_t len)
{
	memcpy(((struct echo *)priv)->config + off, data, len);
}

static int
echo_save(struct virtio_dev *dev, void *priv, uint8_t **buf, size_t *len)
{
	struct echo	*e = priv;
	struct virtio_queue *vq;

	if (e->held != NULL) {
		vq = virtio_dev_queue(dev, e->held_q);
		virtio_queue_push(vq, e->held, 0);
		virtio_queue_notify_guest(vq);
		free(e->held);
		e->held = NULL;
		e->echoed++;
	}
	*buf = xreallocarray(*buf, *len + 4, 1);
	memcpy(*buf + *len, &e->echoed, 4);
	*len += 4;
	return 0;
}

static int
echo_load(struct virtio_dev *dev, void *priv, const uint8_t *buf, size_t len)
{
	struct echo	*e = priv;

	if (len != 4)
		return -EINVAL;
	memcpy(&e->saved_state, buf, 4);
	return 0;
}

static const struct virtio_dev_ops echo_ops = {
	.name = "echo",
	.device_id = ECHO_ID,
	.nqueues = 2,
	.queue_max = ECHO_QMAX,
	.config_size = sizeof(((struct echo *)0)->config),
	.features = F(ECHO_F_TEST),
	.notify = echo_notify,
	.reset = echo_reset,
	.driver_ok = echo_driver_ok,
	.config_read = echo_config_read,
	.config_write = echo_config_write,
	.save = echo_save,
	.load = echo_load,
};

/* One echo device on a fresh test machine. */
static struct vdrv_env	 env;
static struct vdrv	 d;
static struct echo	 E;
static struct virtio_dev *dev;

static int
setup(void)
{
	memset(&E, 0, sizeof(E));
	memcpy(E.config, "ECHOCONFIG!", 12);
	if (vdrv_env_init(&env, 4 << 20) < 0)
		return -1;
	dev = virtio_mmio_create(&env.host, VDRV_BASE(0), VDRV_IRQ(0),
	    &echo_ops, &E);
	if (dev == NULL)
		return -1;
	vdrv_attach(&d, &env, dev, VDRV_BASE(0), VDRV_IRQ(0));
	return 0;
}

static void
teardown(void)
{
	virtio_dev_free(dev);
	vdrv_detach(&d);
	vdrv_env_fini(&env);
	dev = NULL;
}

#define SETUP()	do { if (setup() < 0) { tap_diag("setup failed"); \
	return TAP_FAIL; } } while (0)
#define CHECK(c) do { if (!(c)) { tap_diag("%s:%d: check failed: %s", \
	__FILE__, __LINE__, #c); teardown(); return TAP_FAIL; } } while (0)

/* Echo "hello world" through chain b (n buffers), answer in out. */
static int
echo_once(unsigned q, bool indirect, char *out, uint32_t *len)
{
	uint64_t	in1 = vdrv_alloc_data(&env, "hello ", 6);
	uint64_t	in2 = vdrv_alloc_data(&env, "world", 5);
	uint64_t	o1 = vdrv_alloc(&env, 4, 1), o2 = vdrv_alloc(&env, 60, 1);
	struct vdrv_buf	b[4] = { { in1, 6, false }, { in2, 5, false },
			    { o1, 4, true }, { o2, 60, true } };
	uint32_t	id;
	int		head;

	if ((head = vdrv_add(&d, q, b, 4, indirect)) < 0)
		return -1;
	vdrv_kick(&d, q);
	if (!vdrv_wait_used(&d, q, &id, len, 1000) || id != (uint32_t)head)
		return -1;
	memcpy(out, vdrv_ptr(&env, o1, 4), 4);
	memcpy(out + 4, vdrv_ptr(&env, o2, 60), 60);
	return 0;
}

static int
t_registers(void)
{
	uint8_t		b[8];
	char		line[128];
	int		v;

	SETUP();
	CHECK(vdrv_read(&d, VIRTIO_MMIO_MAGIC_VALUE) == 0x74726976);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_VERSION) == 2);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_DEVICE_ID) == ECHO_ID);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_VENDOR_ID) == VIRTIO_MMIO_VENDOR);
	CHECK(vdrv_device_features(&d) == (CORE_F | F(ECHO_F_TEST)));
	vdrv_write(&d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 7);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_DEVICE_FEATURES) == 0);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_SEL, 1);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_QUEUE_NUM_MAX) == ECHO_QMAX);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_SEL, 2);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_QUEUE_NUM_MAX) == 0);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_READY, 1);	/* no such queue */
	CHECK(vdrv_read(&d, VIRTIO_MMIO_QUEUE_READY) == 0);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_SHM_LEN_LOW) == 0xffffffff);
	/* Unknown and write-only registers read 0; writes are ignored. */
	CHECK(vdrv_read(&d, 0x0f0) == 0);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_QUEUE_NOTIFY) == 0);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_INTERRUPT_ACK) == 0);
	vdrv_write(&d, 0x0f0, 0xdeadbeef);
	vdrv_write(&d, VIRTIO_MMIO_MAGIC_VALUE, 0);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_MAGIC_VALUE) == 0x74726976);
	/* Registers only at 32 bits, aligned. */
	memset(b, 0xaa, sizeof(b));
	virtio_mmio_access(dev, VIRTIO_MMIO_MAGIC_VALUE, false, b, 2);
	CHECK(b[0] == 0 && b[1] == 0);
	virtio_mmio_access(dev, VIRTIO_MMIO_MAGIC_VALUE + 1, false, b, 4);
	CHECK(b[0] == 0 && b[3] == 0);
	virtio_mmio_access(dev, 0xfff, false, b, 8);
	/* Config space at any width, zero out of range. */
	memset(b, 0, sizeof(b));
	vdrv_config_read(&d, 0, b, 4);
	CHECK(memcmp(b, "ECHO", 4) == 0);
	virtio_mmio_access(dev, VIRTIO_MMIO_CONFIG + 1, false, b, 1);
	CHECK(b[0] == 'C');
	virtio_mmio_access(dev, VIRTIO_MMIO_CONFIG + 2, false, b, 2);
	CHECK(memcmp(b, "HO", 2) == 0);
	virtio_mmio_access(dev, VIRTIO_MMIO_CONFIG + 4, false, b, 8);
	CHECK(memcmp(b, "CONFIG!", 8) == 0);
	memset(b, 0xaa, sizeof(b));
	virtio_mmio_access(dev, VIRTIO_MMIO_CONFIG + 8, false, b, 8);
	CHECK(b[0] == 0 && b[7] == 0);	/* straddles the end */
	virtio_mmio_access(dev, VIRTIO_MMIO_CONFIG + 12, false, b, 1);
	CHECK(b[0] == 0);
	vdrv_config_write(&d, 4, "conf", 4);
	vdrv_config_read(&d, 4, b, 4);
	CHECK(memcmp(b, "conf", 4) == 0);
	virtio_mmio_access(dev, VIRTIO_MMIO_CONFIG + 10, true,
	    (uint8_t *)"xxxx", 4);		/* out of range: ignored */
	CHECK(E.config[10] == '!');
	v = virtio_mmio_cmdline(dev, line, sizeof(line));
	CHECK(v == (int)strlen(line) &&
	    strcmp(line, "virtio_mmio.device=4K@0xd0000000:16") == 0);
	teardown();
	return TAP_PASS;
}

static int
t_negotiate(void)
{
	SETUP();
	/* Unoffered bit: refused. */
	CHECK(vdrv_negotiate(&d, F(VIRTIO_F_VERSION_1) | F(5)) == -EPROTO);
	CHECK(!(vdrv_read(&d, VIRTIO_MMIO_STATUS) &
	    VIRTIO_STATUS_FEATURES_OK));
	/* No VERSION_1 (a legacy driver): refused. */
	CHECK(vdrv_negotiate(&d, F(ECHO_F_TEST)) == -EPROTO);
	/* A subset with VERSION_1: accepted, and visible to the device. */
	CHECK(vdrv_negotiate(&d, F(VIRTIO_F_VERSION_1) | F(ECHO_F_TEST)) ==
	    0);
	CHECK(virtio_dev_has(dev, ECHO_F_TEST));
	CHECK(!virtio_dev_has(dev, VIRTIO_F_EVENT_IDX));
	CHECK(!virtio_dev_has(dev, 200));
	/* Features are frozen after FEATURES_OK. */
	vdrv_write(&d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	vdrv_write(&d, VIRTIO_MMIO_DRIVER_FEATURES, 0);
	CHECK(virtio_dev_has(dev, ECHO_F_TEST));
	/* The driver cannot set NEEDS_RESET itself. */
	vdrv_write(&d, VIRTIO_MMIO_STATUS, vdrv_read(&d, VIRTIO_MMIO_STATUS) |
	    VIRTIO_STATUS_NEEDS_RESET);
	CHECK(!virtio_dev_needs_reset(dev));
	/* DRIVER_OK without FEATURES_OK is nonsense. */
	vdrv_write(&d, VIRTIO_MMIO_STATUS, 0);
	vdrv_write(&d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE |
	    VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK);
	CHECK(virtio_dev_needs_reset(dev));
	CHECK(!(virtio_dev_status(dev) & VIRTIO_STATUS_DRIVER_OK));
	CHECK(vdrv_start(&d, ~0ULL, 16) == 0);
	CHECK(E.driver_oks == 1);
	CHECK(virtio_dev_has(dev, VIRTIO_F_EVENT_IDX));
	teardown();
	return TAP_PASS;
}

static int
t_reset(void)
{
	char		out[64];
	uint32_t	len;
	unsigned	resets;

	SETUP();
	CHECK(vdrv_start(&d, 0, 16) == 0);
	CHECK(echo_once(0, false, out, &len) == 0);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_INTERRUPT_STATUS) == VIRTIO_ISR_USED);
	resets = E.resets;
	vdrv_write(&d, VIRTIO_MMIO_STATUS, 0);
	CHECK(E.resets == resets + 1);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_STATUS) == 0);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_INTERRUPT_STATUS) == 0);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_SEL, 0);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_QUEUE_READY) == 0);
	CHECK(!virtio_queue_ready(virtio_dev_queue(dev, 0)));
	CHECK(!virtio_dev_has(dev, VIRTIO_F_VERSION_1));
	/* A kick now reaches nothing. */
	resets = E.notifies;
	vdrv_kick(&d, 0);
	CHECK(E.notifies == resets);
	/* And the device comes back. */
	CHECK(vdrv_start(&d, 0, 16) == 0);
	CHECK(echo_once(1, false, out, &len) == 0);
	CHECK(len == 11 && memcmp(out, "hello world", 11) == 0);
	teardown();
	return TAP_PASS;
}

static int
t_config_generation(void)
{
	uint32_t	gen;

	SETUP();
	gen = vdrv_read(&d, VIRTIO_MMIO_CONFIG_GENERATION);
	virtio_dev_config_changed(dev);		/* before DRIVER_OK */
	CHECK(vdrv_read(&d, VIRTIO_MMIO_CONFIG_GENERATION) == gen + 1);
	CHECK(vdrv_irq_fired(&d) == 0);
	CHECK(vdrv_start(&d, 0, 16) == 0);
	virtio_dev_config_changed(dev);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_CONFIG_GENERATION) == gen + 2);
	CHECK(vdrv_irq_fired(&d) != 0);
	CHECK(vdrv_isr_ack(&d) == VIRTIO_ISR_CONFIG);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_INTERRUPT_STATUS) == 0);
	teardown();
	return TAP_PASS;
}

/* Program queue 0 by hand and write QueueReady. */
static bool
try_queue(uint32_t num, uint64_t desc, uint64_t avail, uint64_t used)
{
	if (vdrv_negotiate(&d, F(VIRTIO_F_VERSION_1)) < 0)
		return false;
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_SEL, 0);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_NUM, num);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_DESC_HIGH, desc >> 32);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)avail);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, avail >> 32);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)used);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, used >> 32);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_READY, 1);
	return vdrv_read(&d, VIRTIO_MMIO_QUEUE_READY) == 1 &&
	    !virtio_dev_needs_reset(dev);
}

static int
t_queue_validation(void)
{
	uint64_t	r = VDRV_RAM_GPA, end = VDRV_RAM_GPA + (4 << 20);

	SETUP();
	CHECK(try_queue(16, r, r + 0x1000, r + 0x2000));
	CHECK(vdrv_irq_fired(&d) == 0);
	/* While ready, queue registers are frozen. */
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_NUM, 3);
	CHECK(virtio_queue_size(virtio_dev_queue(dev, 0)) == 16);
	CHECK(!try_queue(12, r, r + 0x1000, r + 0x2000));	/* not 2^n */
	CHECK(virtio_dev_needs_reset(dev));
	CHECK(vdrv_irq_fired(&d) != 0);
	CHECK(vdrv_read(&d, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_ISR_CONFIG);
	CHECK(!try_queue(0, r, r + 0x1000, r + 0x2000));
	CHECK(!try_queue(128, r, r + 0x1000, r + 0x2000));	/* > max */
	CHECK(!try_queue(0x10000, r, r + 0x1000, r + 0x2000));
	CHECK(!try_queue(16, r + 8, r + 0x1000, r + 0x2000));	/* align */
	CHECK(!try_queue(16, r, r + 0x1001, r + 0x2000));
	CHECK(!try_queue(16, r, r + 0x1000, r + 0x2002));
	CHECK(!try_queue(16, 0, r + 0x1000, r + 0x2000));	/* no RAM */
	CHECK(!try_queue(16, r, r + 0x1000, end - 16));	/* runs off */
	CHECK(!try_queue(16, r, end - 32, r + 0x2000));
	CHECK(!try_queue(16, r, r + 0x1000, 0xfffffffffffffff0ULL));
	CHECK(try_queue(16, r, r + 0x1000, end - (6 + 8 * 16 + 2)));
	teardown();
	return TAP_PASS;
}

static int
t_direct(void)
{
	char		out[64];
	uint32_t	len;

	SETUP();
	CHECK(vdrv_start(&d, 0, 16) == 0);
	CHECK(!virtio_dev_has(dev, VIRTIO_F_INDIRECT_DESC));
	CHECK(echo_once(0, false, out, &len) == 0);
	CHECK(len == 11);
	CHECK(memcmp(out, "hello world", 11) == 0);
	CHECK(vdrv_irq_fired(&d) != 0);
	CHECK(vdrv_isr_ack(&d) == VIRTIO_ISR_USED);
	/* Many rounds wrap the 16-entry ring and the descriptor list. */
	for (int i = 0; i < 100; i++) {
		CHECK(echo_once(i & 1, false, out, &len) == 0);
		CHECK(len == 11);
	}
	CHECK(E.echoed == 101 && E.bad == 0);
	/* A kick that missed the ioeventfd (trapped write) also works. */
	CHECK(vdrv_add1(&d, 0, vdrv_alloc(&env, 8, 8), 8, true) >= 0);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	CHECK(vdrv_used(&d, 0, NULL, &len) && len == 0);
	vdrv_write(&d, VIRTIO_MMIO_QUEUE_NOTIFY, 99);	/* no such queue */
	teardown();
	return TAP_PASS;
}

static int
t_indirect(void)
{
	char		out[64];
	uint32_t	len;

	SETUP();
	CHECK(vdrv_start(&d, F(VIRTIO_F_INDIRECT_DESC), 16) == 0);
	for (int i = 0; i < 40; i++) {
		CHECK(echo_once(0, true, out, &len) == 0);
		CHECK(len == 11 && memcmp(out, "hello world", 11) == 0);
	}
	CHECK(echo_once(0, false, out, &len) == 0);
	CHECK(!virtio_dev_needs_reset(dev));
	teardown();
	/* Without the feature an indirect chain is malformed. */
	SETUP();
	CHECK(vdrv_start(&d, 0, 16) == 0);
	CHECK(echo_once(0, true, out, &len) < 0);
	CHECK(virtio_dev_needs_reset(dev) && E.bad == 1);
	teardown();
	return TAP_PASS;
}

static int
t_before_driver_ok(void)
{
	uint32_t	len;

	SETUP();
	CHECK(vdrv_negotiate(&d, F(VIRTIO_F_VERSION_1)) == 0);
	CHECK(vdrv_queue_setup(&d, 0, 8) == 0);
	CHECK(vdrv_add1(&d, 0, vdrv_alloc(&env, 8, 8), 8, true) >= 0);
	vdrv_kick(&d, 0);
	CHECK(E.notifies == 0);		/* ignored before DRIVER_OK */
	vdrv_driver_ok(&d);
	CHECK(E.driver_oks == 1);
	CHECK(vdrv_used(&d, 0, NULL, &len));	/* replayed at DRIVER_OK */
	teardown();
	return TAP_PASS;
}

static int
t_event_idx(void)
{
	char		out[64];
	uint32_t	len;

	SETUP();
	CHECK(vdrv_start(&d, F(VIRTIO_F_EVENT_IDX), 16) == 0);
	/* First interrupt always goes out (nothing signalled yet). */
	CHECK(echo_once(0, false, out, &len) == 0);
	CHECK(vdrv_irq_fired(&d) != 0);
	CHECK(vdrv_avail_event(&d, 0) == 1);
	vdrv_isr_ack(&d);
	/* used_event = 5: entries 1..4 stay quiet, entry 5 (idx 5 -> 6)
	 * interrupts. */
	vdrv_set_used_event(&d, 0, 5);
	for (int i = 1; i < 5; i++) {
		CHECK(echo_once(0, false, out, &len) == 0);
		CHECK(vdrv_irq_fired(&d) == 0);
	}
	CHECK(echo_once(0, false, out, &len) == 0);
	CHECK(vdrv_irq_fired(&d) != 0);
	CHECK(vdrv_avail_event(&d, 0) == 6);
	teardown();

	/* Without EVENT_IDX, NO_INTERRUPT suppresses. */
	SETUP();
	CHECK(vdrv_start(&d, 0, 16) == 0);
	vdrv_set_no_interrupt(&d, 0, true);
	CHECK(echo_once(0, false, out, &len) == 0);
	CHECK(vdrv_irq_fired(&d) == 0);
	vdrv_set_no_interrupt(&d, 0, false);
	CHECK(echo_once(0, false, out, &len) == 0);
	CHECK(vdrv_irq_fired(&d) != 0);
	teardown();
	return TAP_PASS;
}

static int
t_resample(void)
{
	char		out[64];
	uint32_t	len;

	SETUP();
	CHECK(vdrv_start(&d, 0, 16) == 0);
	CHECK(echo_once(0, false, out, &len) == 0);
	CHECK(vdrv_irq_fired(&d) != 0);
	/* EOI without acknowledging: the line is still "high". */
	vdrv_eoi(&d);
	CHECK(vdrv_irq_fired(&d) != 0);
	vdrv_eoi(&d);
	CHECK(vdrv_irq_fired(&d) != 0);
	/* Acknowledged, EOI: quiet. */
	CHECK(vdrv_isr_ack(&d) == VIRTIO_ISR_USED);
	vdrv_eoi(&d);
	CHECK(vdrv_irq_fired(&d) == 0);
	teardown();
	return TAP_PASS;
}

static int
t_malformed(void)
{
	char		out[64];
	uint32_t	len;
	uint16_t	*idx;

	SETUP();
	CHECK(vdrv_start(&d, 0, 16) == 0);
	vdrv_irq_fired(&d);
	/* avail idx jumps by more than the queue size. */
	idx = vdrv_ptr(&env, d.q[0].avail + 2, 2);
	*idx = 100;
	vdrv_kick(&d, 0);
	CHECK(virtio_dev_needs_reset(dev));
	CHECK(vdrv_read(&d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	CHECK(vdrv_irq_fired(&d) != 0);
	CHECK(vdrv_isr_ack(&d) & VIRTIO_ISR_CONFIG);
	/* Stays dead until reset... */
	*idx = 0;
	vdrv_kick(&d, 0);
	CHECK(E.echoed == 0);
	/* ... and works after it. */
	CHECK(vdrv_start(&d, 0, 16) == 0);
	CHECK(!virtio_dev_needs_reset(dev));
	CHECK(echo_once(0, false, out, &len) == 0 && len == 11);
	teardown();
	return TAP_PASS;
}

static int
t_save_load(void)
{
	struct virtio_dev	*dev2;
	struct echo		 E2;
	struct vdrv		 d2;
	uint8_t			*buf = NULL;
	size_t			 len = 0, i;
	char			 out[64];
	uint32_t		 n;

	SETUP();
	CHECK(vdrv_start(&d, F(VIRTIO_F_EVENT_IDX) | F(ECHO_F_TEST), 16) == 0);
	for (i = 0; i < 3; i++)
		CHECK(echo_once(0, false, out, &n) == 0);
	virtio_dev_config_changed(dev);
	CHECK(virtio_dev_save(dev, &buf, &len) == 0);

	memset(&E2, 0, sizeof(E2));
	dev2 = virtio_mmio_create(&env.host, VDRV_BASE(1), VDRV_IRQ(1),
	    &echo_ops, &E2);
	CHECK(dev2 != NULL);
	/* Malformed records are refused: every truncation, bad magic. */
	for (i = 0; i < len; i++)
		CHECK(virtio_dev_load(dev2, buf, i) == -EINVAL);
	buf[0] ^= 1;
	CHECK(virtio_dev_load(dev2, buf, len) == -EINVAL);
	buf[0] ^= 1;
	CHECK(virtio_dev_status(dev2) == 0);
	CHECK(virtio_dev_load(dev2, buf, len) == 0);
	CHECK(E2.saved_state == 3);
	CHECK(virtio_dev_status(dev2) == virtio_dev_status(dev));
	CHECK(virtio_dev_has(dev2, VIRTIO_F_EVENT_IDX));
	CHECK(virtio_dev_has(dev2, ECHO_F_TEST));
	CHECK(hv_fake_irqfd_fired(env.hv, VDRV_IRQ(1)) != 0);	/* pending */

	/* The restored device continues the same rings. */
	d2 = d;
	d2.dev = dev2;
	d2.base = VDRV_BASE(1);
	d2.irq = VDRV_IRQ(1);
	CHECK(vdrv_read(&d2, VIRTIO_MMIO_INTERRUPT_STATUS) ==
	    (VIRTIO_ISR_USED | VIRTIO_ISR_CONFIG));
	CHECK(vdrv_read(&d2, VIRTIO_MMIO_CONFIG_GENERATION) ==
	    vdrv_read(&d, VIRTIO_MMIO_CONFIG_GENERATION));
	vdrv_write(&d2, VIRTIO_MMIO_QUEUE_SEL, 0);
	CHECK(vdrv_read(&d2, VIRTIO_MMIO_QUEUE_READY) == 1);
	{
		struct vdrv	save = d;

		d = d2;
		CHECK(echo_once(0, false, out, &n) == 0);
		CHECK(n == 11 && memcmp(out, "hello world", 11) == 0);
		d = save;
	}
	CHECK(E2.echoed == 1 && E2.bad == 0);
	free(buf);
	virtio_dev_free(dev2);
	teardown();
	return TAP_PASS;
}

/* A request the device completes while saving is in the record: the
 * clone's used index and pending interrupt include it (else the guest
 * of a restored machine waits for it forever). */
static int
t_save_completes(void)
{
	struct virtio_dev	*dev2;
	struct echo		 E2;
	struct vdrv		 d2, save;
	uint8_t			*buf = NULL;
	size_t			 len = 0;
	uint64_t		 o = 0;
	uint32_t		 id, n;
	char			 out[64];
	int			 head;
	struct vdrv_buf		 b[1];

	SETUP();
	CHECK(vdrv_start(&d, F(ECHO_F_TEST), 16) == 0);
	CHECK(echo_once(0, false, out, &n) == 0);
	vdrv_write(&d, VIRTIO_MMIO_INTERRUPT_ACK,
	    vdrv_read(&d, VIRTIO_MMIO_INTERRUPT_STATUS));
	E.hold = true;
	o = vdrv_alloc(&env, 16, 1);
	b[0].gpa = o;
	b[0].len = 16;
	b[0].write = true;
	CHECK((head = vdrv_add(&d, 0, b, 1, false)) >= 0);
	vdrv_kick(&d, 0);
	CHECK(E.held != NULL);
	CHECK(!vdrv_wait_used(&d, 0, &id, &n, 50));
	CHECK(virtio_dev_save(dev, &buf, &len) == 0);
	CHECK(E.held == NULL);

	memset(&E2, 0, sizeof(E2));
	dev2 = virtio_mmio_create(&env.host, VDRV_BASE(1), VDRV_IRQ(1),
	    &echo_ops, &E2);
	CHECK(dev2 != NULL);
	CHECK(virtio_dev_load(dev2, buf, len) == 0);
	d2 = d;
	d2.dev = dev2;
	d2.base = VDRV_BASE(1);
	d2.irq = VDRV_IRQ(1);
	/* The completion's interrupt is pending in the clone... */
	CHECK(vdrv_read(&d2, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_ISR_USED);
	save = d;
	d = d2;
	/* ...its used entry is there, and the next one follows it. */
	if (!vdrv_wait_used(&d, 0, &id, &n, 1000) || id != (uint32_t)head) {
		d = save;
		CHECK(!"the completed request is in the clone's used ring");
	}
	if (echo_once(0, false, out, &n) != 0 || n != 11) {
		d = save;
		CHECK(!"the clone echoes after the completed request");
	}
	d = save;
	free(buf);
	virtio_dev_free(dev2);
	teardown();
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "registers, widths, config space", t_registers },
	{ "feature negotiation and refused FEATURES_OK", t_negotiate },
	{ "device reset", t_reset },
	{ "config generation and config interrupt", t_config_generation },
	{ "queue setup validated at QueueReady", t_queue_validation },
	{ "direct chains, ring wrap, trapped notify", t_direct },
	{ "indirect chains", t_indirect },
	{ "kicks before DRIVER_OK are replayed", t_before_driver_ok },
	{ "EVENT_IDX and NO_INTERRUPT suppression", t_event_idx },
	{ "level interrupt re-raised on resample", t_resample },
	{ "malformed ring: NEEDS_RESET until reset", t_malformed },
	{ "save/load round trip", t_save_load },
	{ "a request completed by save is in the record", t_save_completes },
};

int
main(void)
{
	log_init("virtio_test", LOG_QUIET);
	return tap_run(cases, ARRAY_SIZE(cases), 60);
}
