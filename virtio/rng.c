/*
 * virtio-rng (virtio 1.2 section 5.4): one request queue; every buffer
 * the driver posts is device-writable and comes back filled with bytes
 * from the host kernel's CSPRNG.
 */
#include <sys/random.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "virtio/virtio.h"

/* Bytes given per chain: a driver asking for more gets a short answer
 * (the spec lets the device write fewer bytes than offered), which keeps
 * one kick from holding the reactor for long. */
#define RNG_CHAIN_MAX	(64 * 1024)
/* Retry delay while the host pool is not initialised (getrandom EAGAIN). */
#define RNG_RETRY_USEC	10000

struct rng {
	struct virtio_dev	*dev;
	struct reactor_timer	*retry;		/* pending EAGAIN retry */
	bool			 held;		/* `chain` awaits entropy */
	struct virtio_chain	 chain;
};

static void	rng_run(struct rng *);

/* Fill up to RNG_CHAIN_MAX bytes of c's writable segments.  Returns the
 * bytes written, or -EAGAIN when the pool had nothing yet. */
static ssize_t
rng_fill(struct virtio_chain *c)
{
	size_t		 done = 0, want, seg_off;
	ssize_t		 n;
	unsigned	 i;

	for (i = c->nread; i < c->nseg && done < RNG_CHAIN_MAX; i++) {
		want = MIN((size_t)c->seg[i].len, RNG_CHAIN_MAX - done);
		seg_off = 0;
		while (seg_off < want) {
			n = getrandom(c->seg[i].addr + seg_off, want - seg_off,
			    GRND_NONBLOCK);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN && done + seg_off == 0)
				return -EAGAIN;
			if (n <= 0) {
				/* Pool went dry mid-chain (or an odd error):
				 * answer with what we have. */
				return done + seg_off;
			}
			seg_off += n;
		}
		done += seg_off;
	}
	return done;
}

static void
rng_retry_cb(void *arg)
{
	struct rng	*s = arg;

	/* A fired one-shot timer is still the caller's to free. */
	reactor_del_timer(s->retry);
	s->retry = NULL;
	rng_run(s);
}

/* Serve chains until the queue is empty or the pool is not ready. */
static void
rng_run(struct rng *s)
{
	struct virtio_queue	*q = virtio_dev_queue(s->dev, 0);
	ssize_t			 n;
	bool			 pushed = false;
	int			 rc;

	if (s->retry != NULL)
		return;		/* waiting for entropy; the timer resumes */
	for (;;) {
		if (!s->held) {
			rc = virtio_queue_pop(q, &s->chain);
			if (rc <= 0)
				break;	/* empty, or NEEDS_RESET already set */
			s->held = true;
		}
		n = rng_fill(&s->chain);
		if (n == -EAGAIN) {
			s->retry = reactor_add_timer(virtio_dev_reactor(s->dev),
			    RNG_RETRY_USEC, false, rng_retry_cb, s);
			if (s->retry == NULL)
				log_warn("rng: retry timer");
			break;
		}
		virtio_queue_push(q, &s->chain, (uint32_t)n);
		s->held = false;
		pushed = true;
	}
	if (pushed)
		virtio_queue_notify_guest(q);
}

static void
rng_notify(struct virtio_dev *dev, void *priv, unsigned q)
{
	(void)dev;
	(void)q;
	rng_run(priv);
}

/* The core dropped the queues: forget a held chain and its retry. */
static void
rng_reset(struct virtio_dev *dev, void *priv)
{
	struct rng	*s = priv;

	(void)dev;
	if (s->retry != NULL)
		reactor_del_timer(s->retry);
	s->retry = NULL;
	s->held = false;
}

static void
rng_free(void *priv)
{
	struct rng	*s = priv;

	if (s->retry != NULL)
		reactor_del_timer(s->retry);
	free(s);
}

/* Nothing to save, except that a chain held for entropy has already left
 * the avail ring and would be lost: refuse to save in that (boot-time
 * only) window rather than drop a request silently. */
static int
rng_save(struct virtio_dev *dev, void *priv, uint8_t **buf, size_t *len)
{
	struct rng	*s = priv;

	(void)dev;
	(void)buf;
	(void)len;
	return s->held ? -EBUSY : 0;
}

static int
rng_load(struct virtio_dev *dev, void *priv, const uint8_t *buf, size_t len)
{
	(void)dev;
	(void)priv;
	(void)buf;
	return len == 0 ? 0 : -EINVAL;
}

static const struct virtio_dev_ops rng_ops = {
	.name = "rng",
	.device_id = VIRTIO_ID_RNG,
	.nqueues = 1,
	.queue_max = 256,
	.config_size = 0,
	.features = 0,
	.notify = rng_notify,
	.reset = rng_reset,
	.save = rng_save,
	.load = rng_load,
	.free = rng_free,
};

struct virtio_dev *
virtio_rng_create(const struct virtio_host *h, uint64_t base, uint32_t irq)
{
	struct rng	*s;

	s = xcalloc(1, sizeof(*s));
	s->dev = virtio_mmio_create(h, base, irq, &rng_ops, s);
	if (s->dev == NULL) {
		int	saved = errno;

		free(s);
		errno = saved;
		return NULL;
	}
	return s->dev;
}
