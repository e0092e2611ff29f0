/*
 * A hostile guest against every virtio device (rng, blk read-write and
 * read-only, vsock with live host peers, balloon, console with pipes,
 * fs with its FUSE server on a temporary share, without and with a DAX
 * window), through the real transport on the fake hypervisor.  Guest
 * RAM sits between PROT_NONE guard regions (vdrv_env_init_guarded), so
 * a host access past either end faults even where ASan does not look;
 * run it under ASan too (tools/check does).
 *
 * Each round: a bring-up with random features and queue sizes, then a
 * random mix of chains (plausible requests of the device's own protocol,
 * mutated ones, and raw random descriptors: any length or direction,
 * addresses at and past the end of RAM, indirect tables, loops, bogus
 * next), avail idx jumps, register writes (status flips, resets
 * mid-request, QueueReady toggles, notifies for queues that do not
 * exist), config accesses of every width, host-side traffic, and reactor
 * runs.  After the round the device is reset and brought up cleanly and
 * a known-good request must succeed.  blk images must keep their size,
 * and bytes past the capacity (and all bytes of the read-only image)
 * must stay as they were.  fs: the share's neighbourhood (a sentinel
 * file, no new entries beside the share) stays as it was; requests that
 * would create device nodes or allocate or copy gigabytes are tamed
 * (fs_tame), the rest is fair game.
 *
 * Deterministic per device: SMX_FUZZ_SEED picks the seed (default 1;
 * "random": the time), printed; SMX_FUZZ_ITERS the rounds per device (default 3000).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <linux/fuse.h>
#include <linux/virtio_balloon.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_vsock.h>

#include "fusefs/fusefs.h"
#include "hv/fake.h"
#include "tests/tap.h"
#include "tests/unit/vdrv.h"
#include "virtio/virtio.h"

#define RAM		(4 << 20)
#define RAM_END		(VDRV_RAM_GPA + RAM)
#define TABLES		(1 << 16)	/* bytes of indirect tables */
#define IND_N		32		/* entries per table */
#define MAXSEG		8
#define F(b)		(1ULL << (b))
#define D_NEXT		1
#define D_WRITE		2
#define D_IND		4
#define CID		3
#define IMG_SECTORS	2048
#define IMG_TAIL	100	/* bytes past the capacity */
#define NHOST		24	/* host-side fds kept open */

struct fdev {
	const char	*name;
	int		(*create)(void);
	void		(*destroy)(void);
	/* A plausible chain for queue q into b[0..*n). */
	void		(*payload)(unsigned q, struct vdrv_buf *b, unsigned *n);
	void		(*host)(void);		/* host-side traffic */
	/* A used element of a buffer posted with track set. */
	void		(*on_used)(unsigned q, uint64_t gpa, uint32_t len);
	int		(*good)(void);		/* after a clean start */
	int		(*check)(void);		/* invariants, each round */
};

static struct vdrv_env	 env;
static struct vdrv	 d;
static struct virtio_dev *dev;
static const struct fdev *cur;
static uint64_t		 rng_state, tables, data, data_cur;
static uint16_t		 slot[VIRTIO_MAX_QUEUES];
/* Which heads carry a tracked buffer (first writable gpa), 0: none. */
static uint64_t		 trk[VIRTIO_MAX_QUEUES][VDRV_QMAX];
static unsigned		 stat_reset, stat_rounds;

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
rb(uint64_t n)
{
	return n ? rnd() % n : 0;
}

/* Guest buffer of len bytes in the data area (rotating), random bytes
 * when fill. */
static uint64_t
dalloc(uint32_t len, bool fill)
{
	uint64_t	gpa, i;
	uint8_t		*p;

	if (len > RAM_END - data)
		return data;
	if (data_cur + len > RAM_END)
		data_cur = data;
	gpa = data_cur;
	data_cur = ALIGN_UP(data_cur + len, 8);
	if (fill && (p = vdrv_ptr(&env, gpa, len)) != NULL)
		for (i = 0; i < len; i++)
			p[i] = rnd();
	return gpa;
}

/* An address a hostile driver might use for len bytes. */
static uint64_t
evil_addr(uint32_t len)
{
	switch (rb(10)) {
	case 0:
		return RAM_END - len;		/* exactly the end */
	case 1:
		return RAM_END - len + 1 + rb(16);	/* straddles it */
	case 2:
		return RAM_END + rb(1 << 20);	/* past it */
	case 3:
		return VDRV_RAM_GPA - 1 - rb(4096);	/* before it */
	case 4:
		return ~0ULL - rb(1 << 16);	/* wraps */
	case 5:
		return rnd();
	case 6:
		return 0;
	default:
		return dalloc(MIN(len, 1u << 16), true);
	}
}

static uint32_t
evil_len(void)
{
	switch (rb(8)) {
	case 0:
		return 0;
	case 1:
		return ~0u - (uint32_t)rb(4);
	case 2:
		return RAM + (uint32_t)rb(4096);
	case 3:
		return (uint32_t)rb(1 << 20);
	default:
		return (uint32_t)rb(4097);
	}
}

static void
wdesc(uint64_t table, unsigned i, uint64_t addr, uint32_t len,
    uint16_t flags, uint16_t next)
{
	uint8_t	*p = vdrv_ptr(&env, table + 16ULL * i, 16);

	if (p == NULL)
		return;
	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

/* Our queue q (the driver's view), or NULL when not set up. */
static struct vdrv_queue *
dq(unsigned q)
{
	return q < VIRTIO_MAX_QUEUES && d.q[q].size != 0 ? &d.q[q] : NULL;
}

/* Publish head on q's avail ring, advancing idx by step. */
static void
publish(struct vdrv_queue *vq, uint16_t head, uint16_t step)
{
	uint16_t	*ring, *idx;

	ring = vdrv_ptr(&env, vq->avail + 4 + 2ULL *
	    (vq->avail_idx & (vq->size - 1)), 2);
	idx = vdrv_ptr(&env, vq->avail + 2, 2);
	if (ring == NULL || idx == NULL)
		return;
	*ring = head;
	vq->avail_idx += step;
	__atomic_store_n(idx, vq->avail_idx, __ATOMIC_RELEASE);
}

/* Post b[0..n) on q as consecutive descriptor slots (or one indirect
 * table), sometimes mutating one field; track: remember the first
 * writable buffer for on_used. */
static void
post(unsigned q, const struct vdrv_buf *b, unsigned n, bool track)
{
	struct vdrv_queue	*vq = dq(q);
	uint64_t		 tab, wgpa = 0;
	uint16_t		 head, s, flags;
	unsigned		 i, m;
	bool			 ind;

	if (vq == NULL || n == 0)
		return;
	ind = n <= IND_N && rb(4) == 0;
	head = s = slot[q] & (vq->size - 1);
	tab = tables + (rb(TABLES / (16 * IND_N))) * 16 * IND_N;
	for (i = 0; i < n; i++) {
		flags = (b[i].write ? D_WRITE : 0) | (i + 1 < n ? D_NEXT : 0);
		if (b[i].write && wgpa == 0)
			wgpa = b[i].gpa;
		if (ind)
			wdesc(tab, i, b[i].gpa, b[i].len, flags, i + 1);
		else {
			wdesc(vq->desc, s, b[i].gpa, b[i].len, flags,
			    (s + 1) & (vq->size - 1));
			s = (s + 1) & (vq->size - 1);
		}
	}
	if (ind) {
		wdesc(vq->desc, head, tab, 16 * n, D_IND, 0);
		s = (head + 1) & (vq->size - 1);
	}
	slot[q] = s;
	if (rb(8) == 0) {
		/* One hostile edit somewhere in what was just written. */
		m = (unsigned)rb(ind ? n : MIN(n, vq->size));
		wdesc(ind ? tab : vq->desc, ind ? m : (head + m) &
		    (vq->size - 1), evil_addr(64), evil_len(),
		    (uint16_t)rb(8), (uint16_t)rnd());
		track = false;
	}
	trk[q][head] = track ? wgpa : 0;
	publish(vq, head, rb(32) == 0 ? (uint16_t)rnd() : 1);
}

/* Raw random descriptors from a random head, and sometimes an indirect
 * table of random entries. */
static void
post_raw(unsigned q)
{
	struct vdrv_queue	*vq = dq(q);
	unsigned		 i, n;
	uint64_t		 tab = tables + rb(TABLES / 16 - IND_N) * 16;

	if (vq == NULL)
		return;
	n = 1 + (unsigned)rb(vq->size + 2);
	for (i = 0; i < n; i++)
		wdesc(vq->desc, (unsigned)rb(vq->size), evil_addr(256),
		    evil_len(), (uint16_t)(rb(4) ? rb(8) : rnd()),
		    (uint16_t)(rb(4) ? rb(vq->size) : rnd()));
	for (i = 0; rb(3) == 0 && i < IND_N; i++)
		wdesc(tab, i, evil_addr(256), evil_len(), (uint16_t)rb(8),
		    (uint16_t)rb(IND_N + 2));
	if (rb(3) == 0)
		wdesc(vq->desc, (unsigned)rb(vq->size), rb(4) ? tab :
		    evil_addr(512), rb(2) ? 16 * (uint32_t)rb(IND_N + 1) :
		    evil_len(), D_IND | (uint16_t)rb(8), (uint16_t)rb(4));
	i = (unsigned)rb(vq->size);
	trk[q][i] = 0;
	publish(vq, (uint16_t)(rb(16) ? i : rnd()), rb(16) ? 1 :
	    (uint16_t)rnd());
}

/* Take the used elements the device published on q. */
static void
drain_used(unsigned q)
{
	struct vdrv_queue	*vq = dq(q);
	uint32_t		*e;
	uint16_t		*idx, n;

	if (vq == NULL || (idx = vdrv_ptr(&env, vq->used + 2, 2)) == NULL)
		return;
	/* A zapped (ballooned) ring may claim anything: cap the walk. */
	for (n = 0; vq->last_used != __atomic_load_n(idx, __ATOMIC_ACQUIRE) &&
	    n < vq->size; n++, vq->last_used++) {
		e = vdrv_ptr(&env, vq->used + 4 + 8ULL * (vq->last_used &
		    (vq->size - 1)), 8);
		if (e[0] < vq->size && trk[q][e[0]] != 0 && cur->on_used) {
			cur->on_used(q, trk[q][e[0]], e[1]);
			trk[q][e[0]] = 0;
		}
	}
	vq->last_used = __atomic_load_n(idx, __ATOMIC_ACQUIRE);
}

static void
kick(unsigned q)
{
	vdrv_kick(&d, q);
}

/* A register or config access a hostile driver might make. */
static void
reg_fuzz(void)
{
	static const uint32_t regs[] = {
		VIRTIO_MMIO_DEVICE_FEATURES_SEL, VIRTIO_MMIO_DRIVER_FEATURES,
		VIRTIO_MMIO_DRIVER_FEATURES_SEL, VIRTIO_MMIO_QUEUE_SEL,
		VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_READY,
		VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_INTERRUPT_ACK,
		VIRTIO_MMIO_STATUS, VIRTIO_MMIO_QUEUE_DESC_LOW,
		VIRTIO_MMIO_QUEUE_DESC_HIGH, VIRTIO_MMIO_QUEUE_DRIVER_LOW,
		VIRTIO_MMIO_QUEUE_DRIVER_HIGH, VIRTIO_MMIO_QUEUE_DEVICE_LOW,
		VIRTIO_MMIO_QUEUE_DEVICE_HIGH, VIRTIO_MMIO_SHM_SEL,
	};
	uint8_t		buf[8];
	uint32_t	st, v;
	unsigned	i;

	for (i = 0; i < 8; i++)
		buf[i] = rnd();
	switch (rb(12)) {
	case 0:		/* status flips, reset mid-request */
		st = vdrv_read(&d, VIRTIO_MMIO_STATUS);
		v = rb(3) == 0 ? 0 : rb(2) ? st ^ (1u << rb(8)) : (uint32_t)rnd();
		vdrv_write(&d, VIRTIO_MMIO_STATUS, v);
		break;
	case 1:		/* QueueReady toggles */
		vdrv_write(&d, VIRTIO_MMIO_QUEUE_SEL, (uint32_t)rb(5));
		vdrv_write(&d, VIRTIO_MMIO_QUEUE_READY, rb(4) ? (uint32_t)rb(2) :
		    (uint32_t)rnd());
		break;
	case 2:		/* notify for any queue, existing or not */
		v = rb(2) ? (uint32_t)rb(12) : (uint32_t)rnd();
		if (!hv_fake_guest_write(env.hv, d.base +
		    VIRTIO_MMIO_QUEUE_NOTIFY, 4, v))
			vdrv_write(&d, VIRTIO_MMIO_QUEUE_NOTIFY, v);
		break;
	case 3:		/* ring addresses or size under a live queue */
		vdrv_write(&d, VIRTIO_MMIO_QUEUE_SEL, (uint32_t)rb(5));
		v = (uint32_t)evil_addr(64);
		vdrv_write(&d, VIRTIO_MMIO_QUEUE_NUM + 0x48 * (uint32_t)rb(2),
		    rb(2) ? v : (uint32_t)rb(512));
		break;
	case 4:		/* config space, every width, any offset */
	case 5:
		virtio_mmio_access(d.dev, VIRTIO_MMIO_CONFIG + rb(64), rb(2),
		    buf, 1 + (uint8_t)rb(8));
		break;
	case 6:		/* anywhere in the window, any width */
		virtio_mmio_access(d.dev, rb(VIRTIO_MMIO_WINDOW), rb(4) == 0,
		    buf, (uint8_t)rb(10));
		break;
	case 7:
		(void)vdrv_isr_ack(&d);
		vdrv_eoi(&d);
		break;
	default:	/* any known register, random value */
		vdrv_write(&d, regs[rb(ARRAY_SIZE(regs))], rb(2) ?
		    (uint32_t)rb(16) : (uint32_t)rnd());
		break;
	}
}

/* Bring-up with random features and queue sizes (may well fail). */
static void
fuzz_start(void)
{
	uint64_t	f = vdrv_device_features(&d);
	uint32_t	max;
	unsigned	q, lg;

	env.brk = VDRV_RAM_GPA;
	f &= rnd();
	if (rb(8))
		f |= F(VIRTIO_F_VERSION_1);
	if (rb(8) == 0)
		f |= rnd();
	(void)vdrv_negotiate(&d, f);
	for (q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		vdrv_write(&d, VIRTIO_MMIO_QUEUE_SEL, q);
		if ((max = vdrv_read(&d, VIRTIO_MMIO_QUEUE_NUM_MAX)) == 0)
			break;
		if (rb(16) == 0)
			continue;
		lg = (unsigned)rb(9);		/* 1..256, may exceed max */
		(void)vdrv_queue_setup(&d, q, 1u << lg);
	}
	tables = vdrv_alloc(&env, TABLES, 16);
	data = data_cur = vdrv_alloc(&env, 1 << 12, 16);
	memset(slot, 0, sizeof(slot));
	memset(trk, 0, sizeof(trk));
	if (rb(16))
		vdrv_driver_ok(&d);
}

/* One hostile round. */
static void
round_ops(void)
{
	struct vdrv_buf	b[MAXSEG];
	unsigned	i, nops, q, n;

	fuzz_start();
	nops = 1 + (unsigned)rb(24);
	for (i = 0; i < nops; i++) {
		q = (unsigned)rb(4);
		switch (rb(10)) {
		case 0:
		case 1:
		case 2:
		case 3:
			n = 0;
			cur->payload(q, b, &n);
			post(q, b, n, true);
			if (rb(3))
				kick(q);
			break;
		case 4:
			post_raw(q);
			kick(q);
			break;
		case 5:
			reg_fuzz();
			break;
		case 6:
			if (cur->host != NULL)
				cur->host();
			break;
		case 7:
			for (q = 0; q < VIRTIO_MAX_QUEUES; q++)
				drain_used(q);
			break;
		case 8:
			usleep(100);
			/* FALLTHROUGH */
		default:
			vdrv_env_poll(&env);
			break;
		}
	}
	vdrv_env_poll(&env);
	for (q = 0; q < VIRTIO_MAX_QUEUES; q++)
		drain_used(q);
}

/* Run one device: rounds, each followed by a clean known-good check. */
static int
fuzz_device(const struct fdev *fd, unsigned idx)
{
	const char	*s;
	uint64_t	 seed, iters, it;
	int		 rc = TAP_FAIL;

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
	iters = s != NULL ? strtoull(s, NULL, 0) : 3000;
	tap_diag("%s: seed %" PRIu64 " (SMX_FUZZ_SEED=%" PRIu64
	    " reproduces), %" PRIu64 " rounds", fd->name, seed, seed, iters);
	rng_state = (seed ^ (0x9e3779b97f4a7c15ULL * (idx + 1))) | 1;
	cur = fd;
	stat_reset = stat_rounds = 0;
	if (vdrv_env_init_guarded(&env, RAM) < 0 || fd->create() < 0) {
		tap_diag("%s: setup failed", fd->name);
		return TAP_FAIL;
	}
	vdrv_attach(&d, &env, dev, VDRV_BASE(0), VDRV_IRQ(0));
	for (it = 0; it < iters; it++) {
		round_ops();
		stat_rounds++;
		if (virtio_dev_needs_reset(dev))
			stat_reset++;
		/* Verdict: a clean bring-up and a known-good request work
		 * (the reset also recovers from NEEDS_RESET). */
		env.brk = VDRV_RAM_GPA;
		if (vdrv_start(&d, ~0ULL, 64) < 0 || fd->good() < 0) {
			tap_diag("%s: round %" PRIu64 ": device unusable "
			    "after reset (status %#x)", fd->name, it,
			    virtio_dev_status(dev));
			goto out;
		}
		if (fd->check != NULL && fd->check() < 0) {
			tap_diag("%s: round %" PRIu64 ": invariant broken",
			    fd->name, it);
			goto out;
		}
	}
	tap_diag("%s: %u rounds, %u ended NEEDS_RESET", fd->name,
	    stat_rounds, stat_reset);
	rc = TAP_PASS;
out:
	fd->destroy();
	vdrv_detach(&d);
	vdrv_env_fini(&env);
	return rc;
}

/* Config window sweep: every offset, every width, reads and writes. */
static int
sweep_device(const struct fdev *fd)
{
	uint8_t		buf[8];
	uint32_t	off;
	uint8_t		w;
	int		rc = TAP_FAIL;

	cur = fd;
	rng_state = 0x5eed;
	if (vdrv_env_init_guarded(&env, RAM) < 0 || fd->create() < 0)
		return TAP_FAIL;
	vdrv_attach(&d, &env, dev, VDRV_BASE(0), VDRV_IRQ(0));
	TAP_CHECK_GOTO(vdrv_start(&d, ~0ULL, 64) == 0, out);
	for (off = 0; off < VIRTIO_MMIO_WINDOW; off++)
		for (w = 0; w <= 9; w++)
			virtio_mmio_access(dev, off, false, buf, w);
	/* Writes only to config space (registers get their own fuzz). */
	for (off = VIRTIO_MMIO_CONFIG; off < VIRTIO_MMIO_CONFIG + 128; off++)
		for (w = 1; w <= 8; w++) {
			memset(buf, (int)rnd(), sizeof(buf));
			virtio_mmio_access(dev, off, true, buf, w);
		}
	env.brk = VDRV_RAM_GPA;
	TAP_CHECK_GOTO(vdrv_start(&d, ~0ULL, 64) == 0, out);
	TAP_CHECK_GOTO(fd->good() == 0, out);
	rc = TAP_PASS;
out:
	fd->destroy();
	vdrv_detach(&d);
	vdrv_env_fini(&env);
	return rc;
}

/* Wait up to ms for a used element on q; its len, or -1. */
static int64_t
wait_used(unsigned q, unsigned ms)
{
	uint32_t	len;

	if (!vdrv_wait_used(&d, q, NULL, &len, ms))
		return -1;
	return len;
}

/* --- rng ----------------------------------------------------------- */

static int
rng_create(void)
{
	dev = virtio_rng_create(&env.host, VDRV_BASE(0), VDRV_IRQ(0));
	return dev != NULL ? 0 : -1;
}

static void
dev_destroy(void)
{
	virtio_dev_free(dev);
	dev = NULL;
}

static void
rng_payload(unsigned q, struct vdrv_buf *b, unsigned *n)
{
	unsigned	i, k = 1 + (unsigned)rb(4);
	uint32_t	len;

	(void)q;
	for (i = 0; i < k; i++) {
		len = rb(4) == 0 ? (uint32_t)rb(2 << 20) : (uint32_t)rb(4096);
		b[i].gpa = rb(6) ? dalloc(len, false) : evil_addr(len);
		b[i].len = rb(16) ? len : evil_len();
		b[i].write = rb(16) != 0;
	}
	*n = k;
}

static int
rng_good(void)
{
	uint64_t	buf = vdrv_alloc(&env, 64, 8);

	vdrv_add1(&d, 0, buf, 64, true);
	vdrv_kick(&d, 0);
	return wait_used(0, 1000) > 0 ? 0 : -1;
}

static const struct fdev rng_dev = {
	"rng", rng_create, dev_destroy, rng_payload, NULL, NULL, rng_good,
	NULL,
};

/* --- blk ----------------------------------------------------------- */

static char	 img_path[64];
static int	 img_fd = -1;
static bool	 img_ro;
static uint8_t	 img_sum[32];	/* ro: a digest of the whole image */

/* A cheap digest of the whole image (FNV-1a in 4 lanes). */
static void
img_digest(uint8_t out[32])
{
	uint64_t	h[4] = { 14695981039346656037ULL, 1, 2, 3 };
	uint8_t		buf[4096];
	ssize_t		r, i;
	off_t		off = 0;

	while ((r = pread(img_fd, buf, sizeof(buf), off)) > 0) {
		for (i = 0; i < r; i++)
			h[i & 3] = (h[i & 3] ^ buf[i]) * 1099511628211ULL;
		off += r;
	}
	memcpy(out, h, 32);
}

static int
blk_create_common(bool ro)
{
	uint8_t	buf[512];
	char	err[256];
	int	i;

	img_ro = ro;
	snprintf(img_path, sizeof(img_path), "/tmp/smx-devfuzz.XXXXXX");
	if ((img_fd = mkstemp(img_path)) < 0)
		return -1;
	for (i = 0; i < IMG_SECTORS; i++) {
		memset(buf, i, sizeof(buf));
		if (write(img_fd, buf, sizeof(buf)) != sizeof(buf))
			return -1;
	}
	/* A tail shorter than a sector: past the capacity, never touched. */
	memset(buf, 0xa5, IMG_TAIL);
	if (write(img_fd, buf, IMG_TAIL) != IMG_TAIL)
		return -1;
	img_digest(img_sum);
	dev = virtio_blk_create(&env.host, VDRV_BASE(0), VDRV_IRQ(0), img_path,
	    ro, err, sizeof(err));
	if (dev == NULL)
		tap_diag("virtio_blk_create: %s", err);
	return dev != NULL ? 0 : -1;
}

static int
blk_rw_create(void)
{
	return blk_create_common(false);
}

static int
blk_ro_create(void)
{
	return blk_create_common(true);
}

static void
blk_destroy(void)
{
	dev_destroy();
	close(img_fd);
	unlink(img_path);
	img_fd = -1;
}

static uint64_t
evil_sector(void)
{
	switch (rb(8)) {
	case 0:
		return IMG_SECTORS - rb(3);
	case 1:
		return IMG_SECTORS + rb(3);
	case 2:
		return ~0ULL - rb(8);
	case 3:
		return 1ULL << (55 + rb(9));
	default:
		return rb(IMG_SECTORS);
	}
}

static void
blk_payload(unsigned q, struct vdrv_buf *b, unsigned *n)
{
	static const uint32_t types[] = {
		VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH,
		VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD,
		VIRTIO_BLK_T_WRITE_ZEROES,
	};
	struct virtio_blk_outhdr	 h;
	struct virtio_blk_discard_write_zeroes *r;
	unsigned			 i, k = 0, nr;
	uint32_t			 type, len;
	bool				 in;

	(void)q;
	type = rb(8) ? types[rb(ARRAY_SIZE(types))] : (uint32_t)rnd();
	h.type = htole32(type);
	h.ioprio = (uint32_t)rnd();
	h.sector = htole64(evil_sector());
	b[k].gpa = dalloc(sizeof(h), false);
	memcpy(vdrv_ptr(&env, b[k].gpa, sizeof(h)), &h, sizeof(h));
	b[k].len = rb(16) ? sizeof(h) : (uint32_t)rb(32);
	b[k++].write = false;
	if (type == VIRTIO_BLK_T_DISCARD || type == VIRTIO_BLK_T_WRITE_ZEROES) {
		nr = (unsigned)rb(5);
		b[k].gpa = dalloc(16 * nr + 16, false);
		r = vdrv_ptr(&env, b[k].gpa, 16 * nr + 16);
		for (i = 0; i < nr; i++) {
			r[i].sector = htole64(evil_sector());
			r[i].num_sectors = htole32(rb(2) ?
			    (uint32_t)rb(64) : (uint32_t)rnd());
			r[i].flags = htole32(rb(4) ? (uint32_t)rb(2) :
			    (uint32_t)rnd());
		}
		b[k].len = rb(8) ? 16 * nr : (uint32_t)rb(80);
		b[k++].write = false;
	} else {
		in = type != VIRTIO_BLK_T_OUT;
		for (i = (unsigned)rb(4); i > 0; i--) {
			len = rb(4) ? 512 * (uint32_t)(1 + rb(16)) :
			    (uint32_t)rb(9000);
			b[k].gpa = rb(8) ? dalloc(len, !in) : evil_addr(len);
			b[k].len = len;
			b[k++].write = rb(16) ? in : !in;
		}
	}
	if (rb(16)) {
		b[k].gpa = dalloc(1, false);
		b[k].len = rb(16) ? 1 : (uint32_t)rb(4);
		b[k++].write = rb(16) != 0;
	}
	*n = k;
}

static int
blk_good(void)
{
	struct virtio_blk_outhdr h = { htole32(VIRTIO_BLK_T_IN), 0,
	    htole64(7) };
	struct vdrv_buf		 b[3];
	uint8_t			*st, *p;

	b[0] = (struct vdrv_buf){ vdrv_alloc_data(&env, &h, sizeof(h)),
	    sizeof(h), false };
	b[1] = (struct vdrv_buf){ vdrv_alloc(&env, 512, 8), 512, true };
	b[2] = (struct vdrv_buf){ vdrv_alloc(&env, 1, 1), 1, true };
	st = vdrv_ptr(&env, b[2].gpa, 1);
	*st = 0xff;
	vdrv_add(&d, 0, b, 3, false);
	vdrv_kick(&d, 0);
	if (wait_used(0, 2000) < 0 || *st != VIRTIO_BLK_S_OK)
		return -1;
	/* Sector 7 is all 7s unless the rw fuzz wrote there. */
	p = vdrv_ptr(&env, b[1].gpa, 512);
	return img_ro && p[0] != 7 ? -1 : 0;
}

static int
blk_check(void)
{
	struct stat	st;
	uint8_t		tail[IMG_TAIL], sum[32];
	unsigned	i;

	if (fstat(img_fd, &st) != 0 ||
	    st.st_size != IMG_SECTORS * 512 + IMG_TAIL) {
		tap_diag("image size changed to %lld", (long long)st.st_size);
		return -1;
	}
	if (pread(img_fd, tail, IMG_TAIL, IMG_SECTORS * 512) != IMG_TAIL)
		return -1;
	for (i = 0; i < IMG_TAIL; i++)
		if (tail[i] != 0xa5) {
			tap_diag("byte %u past the capacity written", i);
			return -1;
		}
	if (img_ro && rb(16) == 0) {
		img_digest(sum);
		if (memcmp(sum, img_sum, sizeof(sum)) != 0) {
			tap_diag("read-only image modified");
			return -1;
		}
	}
	return 0;
}

static const struct fdev blk_rw_dev = {
	"blk rw", blk_rw_create, blk_destroy, blk_payload, NULL, NULL,
	blk_good, blk_check,
};
static const struct fdev blk_ro_dev = {
	"blk ro", blk_ro_create, blk_destroy, blk_payload, NULL, NULL,
	blk_good, blk_check,
};

/* --- vsock --------------------------------------------------------- */

static char	 vdir[32], uds[64];
static int	 lfd[2] = { -1, -1 };	/* host listeners, ports 1000/1001 */
static int	 hfd[NHOST];		/* accepted and connected host fds */
static uint32_t	 ports[16] = { 1000, 1001, 2000, 2001, 1024, 1025 };
static unsigned	 nports = 6;

static int
unix_fd(const char *path, bool listener)
{
	struct sockaddr_un	sa = { .sun_family = AF_UNIX };
	int			fd;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (listener ? bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    listen(fd, 64) != 0 :
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 &&
	    errno != EINPROGRESS && errno != EAGAIN) {
		close(fd);
		return -1;
	}
	return fd;
}

static void
hfd_put(int fd)
{
	unsigned	i = (unsigned)rb(NHOST);

	if (fd < 0)
		return;
	if (hfd[i] >= 0)
		close(hfd[i]);
	hfd[i] = fd;
}

static int
vsock_create(void)
{
	char		path[96];
	unsigned	i;

	for (i = 0; i < NHOST; i++)
		hfd[i] = -1;
	strcpy(vdir, "/tmp/smx-devfuzz.XXXXXX");
	if (mkdtemp(vdir) == NULL)
		return -1;
	snprintf(uds, sizeof(uds), "%s/v.sock", vdir);
	dev = virtio_vsock_create(&env.host, VDRV_BASE(0), VDRV_IRQ(0), CID,
	    uds);
	if (dev == NULL)
		return -1;
	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s_%u", uds, 1000 + i);
		if ((lfd[i] = unix_fd(path, true)) < 0)
			return -1;
	}
	return 0;
}

static void
vsock_destroy(void)
{
	char		path[96];
	unsigned	i;

	dev_destroy();
	for (i = 0; i < NHOST; i++)
		if (hfd[i] >= 0)
			close(hfd[i]);
	for (i = 0; i < 2; i++) {
		close(lfd[i]);
		snprintf(path, sizeof(path), "%s_%u", uds, 1000 + i);
		unlink(path);
	}
	unlink(uds);
	rmdir(vdir);
}

/* Host side: accept, connect with good and bad CONNECT lines, read,
 * write, close. */
static void
vsock_host(void)
{
	char		line[64], buf[4096];
	unsigned	i;
	int		fd;

	for (i = 0; i < 2; i++)
		while ((fd = accept4(lfd[i], NULL, NULL, SOCK_NONBLOCK |
		    SOCK_CLOEXEC)) >= 0)
			hfd_put(fd);
	switch (rb(4)) {
	case 0:
		if ((fd = unix_fd(uds, false)) < 0)
			break;
		if (rb(4))
			snprintf(line, sizeof(line), "CONNECT %u\n",
			    rb(2) ? ports[rb(nports)] : (uint32_t)rnd());
		else
			for (i = 0; i < sizeof(line); i++)
				line[i] = rb(2) ? 'A' + rb(26) : (char)rnd();
		(void)!write(fd, line, rb(8) ? strnlen(line, sizeof(line)) :
		    rb(sizeof(line)));
		hfd_put(fd);
		break;
	case 1:
		if ((fd = hfd[rb(NHOST)]) >= 0) {
			for (i = 0; i < sizeof(buf); i++)
				buf[i] = rnd();
			(void)!write(fd, buf, rb(sizeof(buf)));
		}
		break;
	case 2:
		i = (unsigned)rb(NHOST);
		if (hfd[i] >= 0 && rb(4) == 0) {
			close(hfd[i]);
			hfd[i] = -1;
		}
		break;
	default:
		for (i = 0; i < NHOST; i++)
			while (hfd[i] >= 0 && read(hfd[i], buf, sizeof(buf)) > 0)
				;
		break;
	}
}

static uint32_t
some_port(void)
{
	return rb(8) ? ports[rb(nports)] : (uint32_t)rnd();
}

/* A vsock header into a fresh guest buffer. */
static uint64_t
vsock_hdr(uint16_t op, uint32_t src, uint32_t dst, uint32_t len)
{
	struct virtio_vsock_hdr	h;
	uint64_t		gpa = dalloc(sizeof(h), false);

	memset(&h, 0, sizeof(h));
	h.src_cid = htole64(rb(16) ? CID : rnd());
	h.dst_cid = htole64(rb(16) ? 2 : rnd());
	h.src_port = htole32(src);
	h.dst_port = htole32(dst);
	h.len = htole32(len);
	h.type = htole16(rb(16) ? VIRTIO_VSOCK_TYPE_STREAM : (uint16_t)rnd());
	h.op = htole16(op);
	h.flags = htole32(rb(2) ? (uint32_t)rb(4) : (uint32_t)rnd());
	h.buf_alloc = htole32(rb(4) ? 256 * 1024 : (uint32_t)rnd());
	h.fwd_cnt = htole32(rb(4) ? (uint32_t)rb(1 << 20) : (uint32_t)rnd());
	memcpy(vdrv_ptr(&env, gpa, sizeof(h)), &h, sizeof(h));
	return gpa;
}

static void
vsock_payload(unsigned q, struct vdrv_buf *b, unsigned *n)
{
	uint32_t	len;
	uint16_t	op;

	if (q != 1) {
		/* rx and event queues take device-writable buffers. */
		len = rb(8) ? 4096 : (uint32_t)rb(200);
		b[0] = (struct vdrv_buf){ rb(16) ? dalloc(len, false) :
		    evil_addr(len), len, rb(16) != 0 };
		*n = 1;
		return;
	}
	op = rb(8) ? 1 + (uint16_t)rb(7) : (uint16_t)rnd();
	len = op == VIRTIO_VSOCK_OP_RW || rb(8) == 0 ?
	    (rb(8) ? (uint32_t)rb(8192) : (uint32_t)rnd()) : 0;
	b[0] = (struct vdrv_buf){ vsock_hdr(op, some_port(), some_port(),
	    len), rb(16) ? sizeof(struct virtio_vsock_hdr) : (uint32_t)rb(64),
	    false };
	*n = 1;
	if (len != 0 && rb(8)) {
		/* Payload, whole or short, sometimes split. */
		len = MIN(len, 8192) - (rb(4) ? 0 : (uint32_t)rb(64));
		b[1] = (struct vdrv_buf){ dalloc(len, true), len, false };
		*n = 2;
		if (rb(4) == 0 && len > 1) {
			b[1].len = len / 2;
			b[2] = (struct vdrv_buf){ b[1].gpa + len / 2,
			    len - len / 2, false };
			*n = 3;
		}
	}
}

/* What the device sent: learn ports, answer connection requests so
 * streams open. */
static void
vsock_on_used(unsigned q, uint64_t gpa, uint32_t len)
{
	struct virtio_vsock_hdr	*h;
	struct vdrv_buf		 b;

	if (q != 0 || len < sizeof(*h) ||
	    (h = vdrv_ptr(&env, gpa, sizeof(*h))) == NULL)
		return;
	if (nports < ARRAY_SIZE(ports))
		ports[nports++] = le32toh(h->src_port);
	else
		ports[6 + rb(ARRAY_SIZE(ports) - 6)] = le32toh(h->src_port);
	if (le16toh(h->op) == VIRTIO_VSOCK_OP_REQUEST && rb(4)) {
		b.gpa = vsock_hdr(VIRTIO_VSOCK_OP_RESPONSE,
		    le32toh(h->dst_port), le32toh(h->src_port), 0);
		b.len = sizeof(*h);
		b.write = false;
		post(1, &b, 1, false);
		kick(1);
	}
}

static int
vsock_good(void)
{
	struct virtio_vsock_hdr	 h, *r;
	uint64_t		 rx[4], end = now_ns() + 2000000000ULL;
	uint32_t		 id, len;
	unsigned		 i;

	for (i = 0; i < 4; i++) {
		rx[i] = vdrv_alloc(&env, 4096, 8);
		vdrv_add1(&d, 0, rx[i], 4096, true);
	}
	vdrv_kick(&d, 0);
	/* A request to a port nobody listens on is answered with RST. */
	memset(&h, 0, sizeof(h));
	h.src_cid = htole64(CID);
	h.dst_cid = htole64(2);
	h.src_port = htole32(5555);
	h.dst_port = htole32(3333);
	h.type = htole16(VIRTIO_VSOCK_TYPE_STREAM);
	h.op = htole16(VIRTIO_VSOCK_OP_REQUEST);
	h.buf_alloc = htole32(65536);
	vdrv_add1(&d, 1, vdrv_alloc_data(&env, &h, sizeof(h)), sizeof(h),
	    false);
	vdrv_kick(&d, 1);
	while (now_ns() < end) {
		if (!vdrv_wait_used(&d, 0, &id, &len, 100))
			continue;
		for (i = 0; i < 4; i++) {
			r = vdrv_ptr(&env, rx[i], sizeof(*r));
			if (le16toh(r->op) == VIRTIO_VSOCK_OP_RST &&
			    le32toh(r->dst_port) == 5555)
				return 0;
		}
		/* Something else (a host CONNECT left over): recycle. */
		if (id < d.q[0].size) {
			for (i = 0; i < 4; i++)
				memset(vdrv_ptr(&env, rx[i], 64), 0, 64);
			vdrv_add1(&d, 0, rx[id % 4], 4096, true);
			vdrv_kick(&d, 0);
		}
	}
	return -1;
}

static const struct fdev vsock_dev = {
	"vsock", vsock_create, vsock_destroy, vsock_payload, vsock_host,
	vsock_on_used, vsock_good, NULL,
};

/* --- balloon ------------------------------------------------------- */

static int
balloon_create(void)
{
	dev = virtio_balloon_create(&env.host, VDRV_BASE(0), VDRV_IRQ(0));
	return dev != NULL ? 0 : -1;
}

static void
balloon_destroy(void)
{
	(void)virtio_balloon_stats_interval(dev, 0);
	dev_destroy();
}

static uint32_t
evil_pfn(void)
{
	switch (rb(6)) {
	case 0:
		return (uint32_t)rnd();
	case 1:
		return (uint32_t)(RAM_END >> 12) + (uint32_t)rb(3) - 1;
	case 2:
		return (uint32_t)(VDRV_RAM_GPA >> 12) - (uint32_t)rb(2);
	default:
		/* Inside RAM, in the data area: rings stay mostly intact. */
		return (uint32_t)((data + rb(RAM_END - data)) >> 12);
	}
}

static void
balloon_payload(unsigned q, struct vdrv_buf *b, unsigned *n)
{
	uint32_t	len, i, *pfn;
	uint8_t		*st;
	uint16_t	tag;
	uint64_t	val;

	if (q <= 1 || rb(4) == 0) {
		len = 4 * (uint32_t)rb(300) + (rb(8) ? 0 : (uint32_t)rb(4));
		b[0] = (struct vdrv_buf){ dalloc(len, false), len, rb(16) == 0 };
		pfn = vdrv_ptr(&env, b[0].gpa, len);
		for (i = 0; pfn != NULL && i < len / 4; i++)
			pfn[i] = evil_pfn();
		*n = 1;
	} else if (q == 2 || rb(2)) {
		/* Stats: packed le16 tag + le64 value entries. */
		len = 10 * (uint32_t)rb(300) + (rb(8) ? 0 : (uint32_t)rb(10));
		b[0] = (struct vdrv_buf){ dalloc(len, false), len, rb(16) == 0 };
		st = vdrv_ptr(&env, b[0].gpa, len);
		for (i = 0; st != NULL && i + 10 <= len; i += 10) {
			tag = rb(4) ? (uint16_t)rb(12) : (uint16_t)rnd();
			val = rnd();
			memcpy(st + i, &tag, 2);
			memcpy(st + i + 2, &val, 8);
		}
		*n = 1;
	} else {
		/* Free page reports: page ranges, some not page-sized. */
		for (i = 0; i < 1 + rb(4); i++) {
			len = rb(4) ? 4096 * (uint32_t)(1 + rb(8)) :
			    evil_len();
			b[i].gpa = rb(4) ? ALIGN_UP(dalloc(MIN(len, 1u << 16) +
			    4096, false), 4096) : evil_addr(len);
			b[i].len = len;
			b[i].write = rb(8) != 0;
		}
		*n = i;
	}
}

static void
balloon_host(void)
{
	switch (rb(3)) {
	case 0:
		virtio_balloon_set_target(dev, (uint32_t)rnd());
		break;
	case 1:
		(void)virtio_balloon_request_stats(dev);
		break;
	default:
		(void)virtio_balloon_stats_interval(dev, rb(2) ?
		    (unsigned)rb(3) : 0);
		break;
	}
}

static int
balloon_good(void)
{
	uint32_t	pfn = (uint32_t)((RAM_END - 4096) >> 12);

	vdrv_add1(&d, 0, vdrv_alloc_data(&env, &pfn, 4), 4, false);
	vdrv_kick(&d, 0);
	return wait_used(0, 1000) >= 0 ? 0 : -1;
}

static const struct fdev balloon_dev = {
	"balloon", balloon_create, balloon_destroy, balloon_payload, balloon_host, NULL, balloon_good,
	NULL,
};

/* --- console ------------------------------------------------------- */

static int	cout[2] = { -1, -1 }, cin[2] = { -1, -1 };

static int
console_create(void)
{
	if (pipe2(cout, O_CLOEXEC | O_NONBLOCK) != 0 ||
	    pipe2(cin, O_CLOEXEC | O_NONBLOCK) != 0)
		return -1;
	dev = virtio_console_create(&env.host, VDRV_BASE(0), VDRV_IRQ(0),
	    cout[1], cin[0]);
	return dev != NULL ? 0 : -1;
}

static void
console_destroy(void)
{
	dev_destroy();
	close(cout[0]);
	close(cout[1]);
	close(cin[0]);
	close(cin[1]);
}

static void
console_payload(unsigned q, struct vdrv_buf *b, unsigned *n)
{
	unsigned	i, k = 1 + (unsigned)rb(4);
	uint32_t	len;

	for (i = 0; i < k; i++) {
		len = rb(8) ? (uint32_t)rb(2048) : (uint32_t)rb(70000);
		b[i].gpa = rb(8) ? dalloc(len, true) : evil_addr(len);
		b[i].len = len;
		b[i].write = rb(16) ? q % 2 == 0 : q % 2 != 0;
	}
	*n = k;
}

static void
console_host(void)
{
	uint8_t	buf[8192];
	size_t	i;

	if (rb(2)) {
		for (i = 0; i < sizeof(buf); i++)
			buf[i] = rnd();
		(void)!write(cin[1], buf, rb(sizeof(buf)));
	} else
		while (read(cout[0], buf, sizeof(buf)) > 0)
			;
}

static int
console_good(void)
{
	static const char	msg[] = "known-good line\n";
	char			buf[65536];
	size_t			have = 0;
	ssize_t			r;
	uint64_t		end = now_ns() + 1000000000ULL;

	while (read(cout[0], buf, sizeof(buf)) > 0)
		;
	vdrv_add1(&d, 1, vdrv_alloc_data(&env, msg, sizeof(msg) - 1),
	    sizeof(msg) - 1, false);
	vdrv_kick(&d, 1);
	while (now_ns() < end) {
		vdrv_env_poll(&env);
		if ((r = read(cout[0], buf + have, sizeof(buf) - 1 - have)) > 0)
			have += r;
		buf[have] = '\0';
		if (memmem(buf, have, msg, sizeof(msg) - 1) != NULL)
			return wait_used(1, 1000) >= 0 ? 0 : -1;
		if (have > sizeof(buf) / 2)
			have = 0;
		usleep(200);
	}
	return -1;
}

static const struct fdev console_dev = {
	"console", console_create, console_destroy, console_payload,
	console_host, NULL, console_good, NULL,
};

/* --- fs ------------------------------------------------------------ */

#define FS_DAX_SLOT	2
#define FS_DAX_GPA	0x4000000000ULL
#define FS_HELLO	"known-good content\n"
#define FS_NIDS		16

/* top/ holds the share and a sentinel beside it; nothing else may
 * appear in top/ and the sentinel must not change. */
static char	 fs_top[48], fs_share[64], fs_sent[64];
static uint64_t	 fs_dax_window;
static uint64_t	 fs_nid[FS_NIDS] = { 1, 1, 2, 3 }, fs_fh[FS_NIDS];
static uint64_t	 fs_unique;
static unsigned	 fs_round = ~0u, fs_ok;	/* successful replies seen */
static struct stat fs_sent_st;

static int
fs_put_file(const char *dir, const char *name, const char *text)
{
	char	path[160];
	int	fd;
	bool	ok;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW |
	    O_CLOEXEC, 0644)) < 0)
		return -1;
	ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
	close(fd);
	return ok ? 0 : -1;
}

static int
fs_create(void)
{
	struct fusefs_opts	opts;
	char			path[160], err[256];

	strcpy(fs_top, "/tmp/smx-fsfuzz.XXXXXX");
	if (mkdtemp(fs_top) == NULL)
		return -1;
	snprintf(fs_share, sizeof(fs_share), "%s/share", fs_top);
	snprintf(fs_sent, sizeof(fs_sent), "%s/sentinel", fs_top);
	snprintf(path, sizeof(path), "%s/sub", fs_share);
	if (mkdir(fs_share, 0755) != 0 || mkdir(path, 0755) != 0 ||
	    fs_put_file(fs_top, "sentinel", "do not touch\n") != 0 ||
	    fs_put_file(fs_share, "hello.txt", FS_HELLO) != 0 ||
	    fs_put_file(path, "inner", "inner file\n") != 0 ||
	    stat(fs_sent, &fs_sent_st) != 0)
		return -1;
	/* A way out the server must not follow. */
	snprintf(path, sizeof(path), "%s/esc", fs_share);
	if (symlink("../sentinel", path) != 0)
		return -1;
	fusefs_opts_init(&opts);
	opts.root = fs_share;
	opts.dax_window = fs_dax_window;
	err[0] = '\0';
	dev = virtio_fs_create(&env.host, VDRV_BASE(0), VDRV_IRQ(0), &opts,
	    "fuzz", FS_DAX_SLOT, FS_DAX_GPA, err, sizeof(err));
	if (dev == NULL)
		tap_diag("virtio_fs_create: %s", err);
	return dev != NULL ? 0 : -1;
}

static int
fs_nodax_create(void)
{
	fs_dax_window = 0;
	return fs_create();
}

static int
fs_dax_create(void)
{
	fs_dax_window = 2 << 20;
	return fs_create();
}

static void
fs_destroy(void)
{
	struct fusefs_stats	st;
	char			cmd[96];

	fusefs_get_stats(virtio_fs_server(dev), &st);
	tap_diag("%s: server saw %llu requests (%llu errors, %llu malformed);"
	    " %u successes seen by the driver", cur->name,
	    (unsigned long long)st.requests,
	    (unsigned long long)st.errors, (unsigned long long)st.malformed,
	    fs_ok);
	dev_destroy();
	fs_ok = 0;
	fs_round = ~0u;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fs_top);
	if (system(cmd) != 0)
		tap_diag("cannot remove %s", fs_top);
}

static uint64_t
fs_some_nid(void)
{
	switch (rb(8)) {
	case 0:
		return rnd();
	case 1:
		return rb(64);
	default:
		return fs_nid[rb(FS_NIDS)];
	}
}

static uint64_t
fs_some_fh(void)
{
	return rb(8) ? fs_fh[rb(FS_NIDS)] : rb(4) ? rb(64) : rnd();
}

/* A name (NUL-terminated unless nt) at p, its length with the NUL. */
static uint32_t
fs_name(char *p, uint32_t room, bool nt)
{
	static const char *const names[] = {
		"hello.txt", "sub", "esc", "..", ".", "/", "a/b", "new",
		"sub/inner", "../sentinel", "", "x\n", "esc/..",
	};
	uint32_t	len, i;

	switch (rb(6)) {
	case 0:		/* long: past NAME_MAX, sometimes past PATH_MAX */
		len = MIN(room - 1, rb(2) ? 256 + (uint32_t)rb(8) :
		    (uint32_t)rb(5000));
		memset(p, 'L', len);
		break;
	case 1:		/* random bytes */
		len = MIN(room - 1, (uint32_t)rb(40));
		for (i = 0; i < len; i++)
			p[i] = (char)(1 + rb(255));
		break;
	default:
		snprintf(p, room, "%s", names[rb(ARRAY_SIZE(names))]);
		len = (uint32_t)strlen(p);
		break;
	}
	if (nt)
		return len;
	p[len] = '\0';
	return len + 1;
}

/*
 * Keep the host safe from requests a real guest could make but this
 * test must not: device nodes (a guest that can write one owns the
 * host; whether the server should refuse them is a policy question)
 * and huge allocations or copies that would fill the disk.
 */
static void
fs_tame(uint32_t opcode, uint8_t *body, uint32_t blen)
{
	struct fuse_mknod_in		*mk = (void *)body;
	struct fuse_fallocate_in	*fa = (void *)body;
	struct fuse_setattr_in		*sa = (void *)body;
	struct fuse_write_in		*wr = (void *)body;
	struct fuse_copy_file_range_in	*cp = (void *)body;

	switch (opcode) {
	case FUSE_MKNOD:
		if (blen >= sizeof(*mk))
			mk->mode = (mk->mode & 07777) | (rb(2) ? S_IFREG :
			    S_IFIFO);
		break;
	case FUSE_CREATE:
	case FUSE_MKDIR:
		/* mode is the first field of both */
		if (blen >= 4)
			mk->mode &= 07777;
		break;
	case FUSE_FALLOCATE:
		if (blen >= sizeof(*fa)) {
			fa->offset %= 1 << 20;
			fa->length %= 1 << 20;
		}
		break;
	case FUSE_SETATTR:
		if (blen >= sizeof(*sa))
			sa->size %= 1 << 20;
		break;
	case FUSE_WRITE:
		if (blen >= sizeof(*wr))
			wr->offset %= 1 << 20;
		break;
	case FUSE_COPY_FILE_RANGE:
		if (blen >= sizeof(*cp))
			cp->len %= 1 << 20;
		break;
	}
}

/* A body for opcode into p (room bytes); its length. */
static uint32_t
fs_body(uint32_t opcode, uint8_t *p, uint32_t room)
{
	uint32_t	k, i, n;
	uint64_t	win = fs_dax_window ? fs_dax_window : 2 << 20;

	memset(p, 0, room);
	switch (opcode) {
	case FUSE_INIT: {
		struct fuse_init_in	*in = (void *)p;

		in->major = rb(16) ? FUSE_KERNEL_VERSION : (uint32_t)rb(10);
		in->minor = rb(8) ? FUSE_KERNEL_MINOR_VERSION : (uint32_t)rnd();
		in->max_readahead = (uint32_t)rnd();
		in->flags = rb(2) ? (uint32_t)rnd() : FUSE_INIT_EXT |
		    FUSE_MAP_ALIGNMENT;
		in->flags2 = (uint32_t)rnd();
		return rb(8) ? sizeof(*in) : (uint32_t)rb(sizeof(*in));
	}
	case FUSE_LOOKUP:
	case FUSE_UNLINK:
	case FUSE_RMDIR:
		return fs_name((char *)p, room, rb(8) == 0);
	case FUSE_GETATTR: {
		struct fuse_getattr_in	*in = (void *)p;

		in->getattr_flags = rb(2) ? FUSE_GETATTR_FH : 0;
		in->fh = fs_some_fh();
		return sizeof(*in);
	}
	case FUSE_OPEN:
	case FUSE_OPENDIR: {
		static const uint32_t	fl[] = { O_RDONLY, O_WRONLY, O_RDWR,
		    O_RDWR | O_TRUNC, O_DIRECTORY, O_PATH, O_CREAT | O_EXCL,
		    O_RDWR | O_APPEND, O_NOFOLLOW };
		struct fuse_open_in	*in = (void *)p;

		in->flags = rb(8) ? fl[rb(ARRAY_SIZE(fl))] : (uint32_t)rnd();
		return sizeof(*in);
	}
	case FUSE_READ:
	case FUSE_READDIR:
	case FUSE_READDIRPLUS: {
		struct fuse_read_in	*in = (void *)p;

		in->fh = fs_some_fh();
		in->offset = rb(2) ? rb(8192) : rnd();
		in->size = rb(4) ? (uint32_t)rb(16384) : (uint32_t)rnd();
		return sizeof(*in);
	}
	case FUSE_WRITE: {
		struct fuse_write_in	*in = (void *)p;

		in->fh = fs_some_fh();
		in->offset = rb(8192);
		n = MIN(room - sizeof(*in), (uint32_t)rb(8192));
		in->size = rb(4) ? n : (uint32_t)rnd();
		in->write_flags = (uint32_t)rb(8);
		for (i = 0; i < n; i++)
			p[sizeof(*in) + i] = 'w';
		return sizeof(*in) + n;
	}
	case FUSE_CREATE:
	case FUSE_MKDIR: {
		struct fuse_create_in	*in = (void *)p;

		in->flags = rb(2) ? O_RDWR | O_CREAT : (uint32_t)rnd();
		in->mode = 0644 | (opcode == FUSE_CREATE ? S_IFREG : 0);
		in->umask = 022;
		k = opcode == FUSE_CREATE ? sizeof(*in) :
		    sizeof(struct fuse_mkdir_in);
		return k + fs_name((char *)p + k, room - k, rb(8) == 0);
	}
	case FUSE_SETATTR: {
		struct fuse_setattr_in	*in = (void *)p;

		in->valid = rb(2) ? (uint32_t)rb(1024) : (uint32_t)rnd();
		in->fh = fs_some_fh();
		in->size = rb(4096);
		in->mode = (uint32_t)rnd() & 07777;
		in->uid = rb(2) ? 0 : (uint32_t)rnd();
		in->gid = rb(2) ? 0 : (uint32_t)rnd();
		in->atime = rnd();
		in->mtime = rnd();
		in->atimensec = (uint32_t)rnd();
		return sizeof(*in);
	}
	case FUSE_RENAME2:
	case FUSE_RENAME: {
		struct fuse_rename2_in	*in = (void *)p;

		in->newdir = fs_some_nid();
		in->flags = rb(2) ? 0 : rb(2) ? (uint32_t)rb(8) :
		    (uint32_t)rnd();
		k = opcode == FUSE_RENAME2 ? sizeof(*in) :
		    sizeof(struct fuse_rename_in);
		k += fs_name((char *)p + k, (room - k) / 2, false);
		return k + fs_name((char *)p + k, room - k, rb(8) == 0);
	}
	case FUSE_SETUPMAPPING: {
		struct fuse_setupmapping_in	*in = (void *)p;

		in->fh = fs_some_fh();
		in->foffset = rb(2) ? rb(4) * 4096 : rnd();
		in->len = rb(2) ? (1 + rb(4)) * (2 << 20) / 2 : rb(2) ?
		    rb(1 << 22) : rnd();
		in->flags = rb(4) ? (uint64_t)rb(4) : rnd();
		in->moffset = rb(2) ? rb(2) * (1 << 20) : rb(2) ?
		    win - rb(8192) : rnd();
		return sizeof(*in);
	}
	case FUSE_REMOVEMAPPING: {
		struct fuse_removemapping_in	*in = (void *)p;
		struct fuse_removemapping_one	 one;

		n = (uint32_t)rb(8);
		in->count = rb(4) ? n : (uint32_t)rnd();
		for (i = 0; i < n; i++) {
			one.moffset = rb(2) ? rb(2) * (1 << 20) : rnd();
			one.len = rb(2) ? 1 << 20 : rnd();
			memcpy(p + sizeof(*in) + i * sizeof(one), &one,
			    sizeof(one));
		}
		return sizeof(*in) + n * sizeof(one);
	}
	default:	/* random bytes, sometimes with a name */
		n = (uint32_t)rb(rb(8) ? 128 : 1024);
		for (i = 0; i < n; i++)
			p[i] = (uint8_t)rnd();
		if (rb(2) && n < room)
			n += fs_name((char *)p + n, room - n, rb(8) == 0);
		return n;
	}
}

/* Copy len bytes of src into b[*k..] as one or two readable segments. */
static void
fs_put_in(struct vdrv_buf *b, unsigned *k, const void *src, uint32_t len)
{
	uint64_t	gpa = dalloc(len + 1, false);
	uint32_t	cut;

	if (len > 0)
		memcpy(vdrv_ptr(&env, gpa, len), src, len);
	if (len > 1 && rb(6) == 0) {
		cut = 1 + (uint32_t)rb(len - 1);
		b[(*k)++] = (struct vdrv_buf){ gpa, cut, false };
		b[(*k)++] = (struct vdrv_buf){ gpa + cut, len - cut, false };
	} else
		b[(*k)++] = (struct vdrv_buf){ gpa, len, false };
}

static void
fs_payload(unsigned q, struct vdrv_buf *b, unsigned *n)
{
	static const uint32_t	ops[] = { FUSE_INIT, FUSE_LOOKUP,
	    FUSE_GETATTR, FUSE_OPEN, FUSE_READ, FUSE_WRITE, FUSE_READDIRPLUS,
	    FUSE_CREATE, FUSE_SETATTR, FUSE_RENAME2, FUSE_SETUPMAPPING,
	    FUSE_REMOVEMAPPING, FUSE_OPENDIR, FUSE_READDIR, FUSE_MKDIR,
	    FUSE_UNLINK, FUSE_RENAME };
	static uint8_t		msg[16384] __attribute__((aligned(16)));
	struct fuse_in_header	*h = (void *)msg;
	uint8_t			*body = msg + sizeof(*h);
	uint32_t		 blen, len, i, cnt, room = sizeof(msg) -
	    sizeof(*h);
	unsigned		 k = 0, nw;

	memset(h, 0, sizeof(*h));
	h->unique = ++fs_unique;
	h->nodeid = fs_some_nid();
	h->uid = rb(2) ? 0 : (uint32_t)rnd();
	h->gid = rb(2) ? 0 : (uint32_t)rnd();
	h->pid = (uint32_t)rnd();
	if (q == 0) {
		switch (rb(4)) {
		case 0: {
			struct fuse_forget_in	*f = (void *)body;

			h->opcode = FUSE_FORGET;
			f->nlookup = rb(2) ? 1 : rnd();
			blen = sizeof(*f);
			break;
		}
		case 1: {
			struct fuse_batch_forget_in	*bf = (void *)body;
			struct fuse_forget_one		 one;

			h->opcode = FUSE_BATCH_FORGET;
			cnt = (uint32_t)rb(40);
			bf->count = rb(4) ? cnt : (uint32_t)rnd();
			bf->dummy = 0;
			for (i = 0; i < cnt; i++) {
				one.nodeid = fs_some_nid();
				one.nlookup = rb(2) ? 1 : rnd();
				memcpy(body + sizeof(*bf) + i * sizeof(one),
				    &one, sizeof(one));
			}
			blen = sizeof(*bf) + cnt * sizeof(one);
			break;
		}
		case 2: {
			struct fuse_interrupt_in	*ii = (void *)body;

			h->opcode = FUSE_INTERRUPT;
			ii->unique = rb(2) ? fs_unique - rb(4) : rnd();
			blen = sizeof(*ii);
			break;
		}
		default:
			h->opcode = rb(2) ? (uint32_t)rb(61) : (uint32_t)rnd();
			blen = (uint32_t)rb(256);
			for (i = 0; i < blen; i++)
				body[i] = (uint8_t)rnd();
			break;
		}
	} else {
		if (fs_round != stat_rounds) {
			/* The round's first request: INIT, most times. */
			fs_round = stat_rounds;
			h->opcode = rb(8) ? FUSE_INIT :
			    ops[rb(ARRAY_SIZE(ops))];
		} else if (rb(6) == 0)
			h->opcode = FUSE_INIT;
		else if (rb(3))
			h->opcode = ops[rb(ARRAY_SIZE(ops))];
		else
			h->opcode = (uint32_t)rb(61);
		if (rb(32) == 0)
			h->opcode = (uint32_t)rnd();
		blen = fs_body(h->opcode, body, room);
	}
	fs_tame(h->opcode, body, blen);
	len = sizeof(*h) + blen;
	switch (rb(24)) {
	case 0:
		h->len = (uint32_t)rnd();
		break;
	case 1:
		h->len = len + (uint32_t)rb(64) - 32;
		break;
	default:
		h->len = len;
		break;
	}
	if (rb(32) == 0)	/* a short header */
		len = (uint32_t)rb(sizeof(*h));
	if (q <= 1 && rb(24) == 0) {
		/* Writable only: a reply buffer and no request. */
		nw = 1 + (unsigned)rb(3);
		goto writable;
	}
	fs_put_in(b, &k, msg, len);
	if (q == 0 || rb(12) == 0) {
		/* Readable only (right on hiprio, wrong on requests). */
		*n = k;
		return;
	}
	nw = rb(4) ? 1 : 1 + (unsigned)rb(3);
writable:
	for (; nw > 0 && k < MAXSEG; nw--) {
		switch (rb(12)) {
		case 0:		/* tiny */
			len = (uint32_t)rb(sizeof(struct fuse_out_header) + 2);
			break;
		case 1:
			len = (uint32_t)rb(70000);
			break;
		default:
			len = 4096 + (uint32_t)rb(4096);
			break;
		}
		b[k++] = (struct vdrv_buf){ rb(16) ? dalloc(len, false) :
		    evil_addr(len), len, true };
	}
	*n = k;
}

/* Learn node ids and handles from replies (by their sizes).  Reply
 * buffers sit anywhere in guest memory, unaligned too: copy out. */
static void
fs_on_used(unsigned q, uint64_t gpa, uint32_t len)
{
	const size_t		 oh = sizeof(struct fuse_out_header);
	const size_t		 eo = sizeof(struct fuse_entry_out);
	struct fuse_out_header	 h;
	struct fuse_entry_out	 e;
	struct fuse_open_out	 o;
	uint8_t			*p;

	if (q != 1 || len < oh || (p = vdrv_ptr(&env, gpa, len)) == NULL)
		return;
	memcpy(&h, p, oh);
	if (h.error != 0)
		return;
	fs_ok++;
	if (len == oh + eo || len == oh + eo + sizeof(o)) {
		memcpy(&e, p + oh, eo);
		fs_nid[rb(FS_NIDS)] = e.nodeid;
	}
	if (len == oh + sizeof(o)) {
		memcpy(&o, p + oh, sizeof(o));
		fs_fh[rb(FS_NIDS)] = o.fh;
	} else if (len == oh + eo + sizeof(o)) {
		memcpy(&o, p + oh + eo, sizeof(o));
		fs_fh[rb(FS_NIDS)] = o.fh;
	}
}

/* Give the worker pool a moment so replies land before the next reset
 * (most requests would otherwise be dropped by it). */
static void
fs_host(void)
{
	unsigned	i;

	for (i = 0; i < 4; i++) {
		usleep(50);
		vdrv_env_poll(&env);
	}
	drain_used(0);
	drain_used(1);
}

/* One request on the request queue; the reply's used length or -1. */
static int
fs_req(uint32_t opcode, uint64_t nodeid, const void *body, uint32_t blen,
    void *out, uint32_t outlen)
{
	struct fuse_in_header	h;
	struct vdrv_buf		b[2];
	uint8_t			*in;
	int64_t			 len;

	memset(&h, 0, sizeof(h));
	h.len = sizeof(h) + blen;
	h.opcode = opcode;
	h.unique = ++fs_unique;
	h.nodeid = nodeid;
	b[0] = (struct vdrv_buf){ vdrv_alloc(&env, h.len, 8), h.len, false };
	in = vdrv_ptr(&env, b[0].gpa, h.len);
	memcpy(in, &h, sizeof(h));
	memcpy(in + sizeof(h), body, blen);
	b[1] = (struct vdrv_buf){ vdrv_alloc(&env, outlen, 8), outlen, true };
	vdrv_add(&d, 1, b, 2, false);
	vdrv_kick(&d, 1);
	if ((len = wait_used(1, 5000)) < 0)
		return -1;
	memcpy(out, vdrv_ptr(&env, b[1].gpa, outlen), outlen);
	return (int)len;
}

/* Put hello.txt back as it was: the rounds may rename, truncate or
 * replace it (inside the share, which is theirs). */
static int
fs_restore(void)
{
	char	path[96], cmd[128];

	snprintf(path, sizeof(path), "%s/hello.txt", fs_share);
	if (unlink(path) != 0 && errno != ENOENT && rmdir(path) != 0) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
		if (system(cmd) != 0)
			return -1;
	}
	return fs_put_file(fs_share, "hello.txt", FS_HELLO);
}

static int
fs_good(void)
{
	struct fuse_init_in	ii = { .major = FUSE_KERNEL_VERSION,
	    .minor = FUSE_KERNEL_MINOR_VERSION, .flags = FUSE_INIT_EXT };
	struct fuse_open_in	oi = { .flags = O_RDONLY };
	struct fuse_read_in	ri = { .size = 64 };
	struct {
		struct fuse_out_header	h;
		union {
			struct fuse_init_out	i;
			struct fuse_entry_out	e;
			struct fuse_open_out	o;
			char			data[64];
		};
	} r;
	uint64_t	node;
	int		len, want = sizeof(r.h) + strlen(FS_HELLO);

	if (fs_restore() != 0)
		return -1;
	if ((len = fs_req(FUSE_INIT, 0, &ii, sizeof(ii), &r, sizeof(r))) <
	    (int)sizeof(r.h) || r.h.error != 0) {
		tap_diag("fs: INIT: %d, error %d", len, r.h.error);
		return -1;
	}
	if ((len = fs_req(FUSE_LOOKUP, FUSE_ROOT_ID, "hello.txt", 10, &r,
	    sizeof(r))) != (int)(sizeof(r.h) + sizeof(r.e)) ||
	    r.h.error != 0) {
		tap_diag("fs: LOOKUP: %d, error %d", len, r.h.error);
		return -1;
	}
	node = r.e.nodeid;
	if ((len = fs_req(FUSE_OPEN, node, &oi, sizeof(oi), &r, sizeof(r))) !=
	    (int)(sizeof(r.h) + sizeof(r.o)) || r.h.error != 0) {
		tap_diag("fs: OPEN: %d, error %d", len, r.h.error);
		return -1;
	}
	ri.fh = r.o.fh;
	if ((len = fs_req(FUSE_READ, node, &ri, sizeof(ri), &r, sizeof(r))) !=
	    want || r.h.error != 0 ||
	    memcmp(r.data, FS_HELLO, strlen(FS_HELLO)) != 0) {
		tap_diag("fs: READ: %d, error %d", len, r.h.error);
		return -1;
	}
	return 0;
}

/* Nothing outside the share changed: the sentinel as it was, no new
 * entries beside it. */
static int
fs_check(void)
{
	struct stat	 st;
	struct dirent	*e;
	DIR		*dp;
	char		 buf[64];
	int		 fd, n = 0, bad = 0;
	ssize_t		 r;

	if (lstat(fs_sent, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_size != fs_sent_st.st_size ||
	    st.st_mode != fs_sent_st.st_mode ||
	    st.st_uid != fs_sent_st.st_uid ||
	    st.st_mtim.tv_sec != fs_sent_st.st_mtim.tv_sec ||
	    st.st_mtim.tv_nsec != fs_sent_st.st_mtim.tv_nsec ||
	    st.st_ino != fs_sent_st.st_ino) {
		tap_diag("fs: the sentinel beside the share changed");
		return -1;
	}
	if ((fd = open(fs_sent, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	r = read(fd, buf, sizeof(buf));
	close(fd);
	if (r != 13 || memcmp(buf, "do not touch\n", 13) != 0) {
		tap_diag("fs: the sentinel's content changed");
		return -1;
	}
	if ((dp = opendir(fs_top)) == NULL)
		return -1;
	while ((e = readdir(dp)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		n++;
		if (strcmp(e->d_name, "share") != 0 &&
		    strcmp(e->d_name, "sentinel") != 0) {
			tap_diag("fs: new entry beside the share: %s",
			    e->d_name);
			bad = 1;
		}
	}
	closedir(dp);
	return bad || n != 2 ? -1 : 0;
}

static const struct fdev fs_dev = {
	"fs", fs_nodax_create, fs_destroy, fs_payload, fs_host, fs_on_used,
	fs_good, fs_check,
};
static const struct fdev fs_dax_dev = {
	"fs dax", fs_dax_create, fs_destroy, fs_payload, fs_host,
	fs_on_used,
	fs_good, fs_check,
};

/* --- cases --------------------------------------------------------- */

static const struct fdev *const devs[] = {
	&rng_dev, &blk_rw_dev, &blk_ro_dev, &vsock_dev, &balloon_dev,
	&console_dev, &fs_dev, &fs_dax_dev,
};

#define FUZZ_CASE(i)							\
static int fuzz_##i(void) { return fuzz_device(devs[i], i); }		\
static int sweep_##i(void) { return sweep_device(devs[i]); }
FUZZ_CASE(0)
FUZZ_CASE(1)
FUZZ_CASE(2)
FUZZ_CASE(3)
FUZZ_CASE(4)
FUZZ_CASE(5)
FUZZ_CASE(6)
FUZZ_CASE(7)

static const struct tap_case cases[] = {
	{ "rng: config window sweep", sweep_0 },
	{ "rng: hostile rounds", fuzz_0 },
	{ "blk rw: config window sweep", sweep_1 },
	{ "blk rw: hostile rounds, writes stay inside capacity", fuzz_1 },
	{ "blk ro: config window sweep", sweep_2 },
	{ "blk ro: hostile rounds, image untouched", fuzz_2 },
	{ "vsock: config window sweep", sweep_3 },
	{ "vsock: hostile rounds with live host peers", fuzz_3 },
	{ "balloon: config window sweep", sweep_4 },
	{ "balloon: hostile rounds", fuzz_4 },
	{ "console: config window sweep", sweep_5 },
	{ "console: hostile rounds with pipes", fuzz_5 },
	{ "fs: config window sweep", sweep_6 },
	{ "fs: hostile rounds, nothing outside the share changes", fuzz_6 },
	{ "fs dax: config window sweep", sweep_7 },
	{ "fs dax: hostile rounds with a 2 MiB DAX window", fuzz_7 },
};

int
main(void)
{
	/* Closed host peers must not kill us (the machine ignores it too). */
	signal(SIGPIPE, SIG_IGN);
	return tap_run(cases, ARRAY_SIZE(cases), 240);
}
