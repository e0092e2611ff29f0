/*
 * virtio-console (virtio 1.2 section 5.3) as a plain console (Linux's
 * hvc0): no MULTIPORT, so receiveq 0 and transmitq 1 carry port 0's
 * bytes.  EMERG_WRITE is offered: a driver may write a character to
 * config offset 8 before its queues are up.
 *
 * Output: each transmit chain is written to out_fd in order, straight
 * from guest memory.  When out_fd is full the chain is held (not
 * returned) until the fd is writable again: the guest waits, nothing is
 * lost.  An output that fails for good (closed pipe) is dropped, as
 * core/uart.c does: a vanished console never stops the guest.
 *
 * Input: in_fd is read only while the driver has posted a receive
 * buffer (one is taken off the queue and held); with no buffers we stop
 * watching the fd and the host's bytes wait in it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <endian.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/virtio_console.h>

#include "virtio/virtio.h"

#define CONS_RXQ		0
#define CONS_TXQ		1
#define CONS_QUEUE_MAX		128
#define CONS_CONFIG_SIZE	12	/* cols, rows, max_nr_ports, emerg_wr */
#define CONS_EMERG_OFF		8
#define CONS_IOV_MAX		64	/* segments per readv/writev */

struct console {
	struct virtio_dev	*dev;
	struct reactor		*r;
	int			 out_fd;
	int			 in_fd;
	struct reactor_fd	*out_ev;
	struct reactor_fd	*in_ev;
	bool			 in_eof;

	/* Transmit chain written only in part (out_fd was full). */
	bool			 tx_held;
	size_t			 tx_off;
	struct virtio_chain	 tx;

	/* Receive buffer waiting for input. */
	bool			 rx_held;
	struct virtio_chain	 rx;
};

static void	rx_fill(struct console *);
static void	tx_run(struct console *);

/* Output failed for good: drop it from now on. */
static void
out_gone(struct console *c)
{
	log_warn("virtio-console output");
	if (c->out_ev != NULL) {
		reactor_del_fd(c->out_ev);
		c->out_ev = NULL;
	}
	c->out_fd = -1;
}

static void
out_writable_cb(int fd, short what, void *arg)
{
	struct console	*c = arg;

	(void)fd;
	(void)what;
	reactor_del_fd(c->out_ev);
	c->out_ev = NULL;
	tx_run(c);
}

/*
 * Write the held transmit chain from tx_off on.  Returns 0 when all of
 * it is out (or dropped), -EAGAIN when out_fd is full.
 */
static int
tx_write(struct console *c)
{
	struct iovec	 iov[CONS_IOV_MAX];
	const struct virtio_chain *t = &c->tx;
	size_t		 skip, pos;
	unsigned	 i, n;
	ssize_t		 w;

	while (c->out_fd >= 0 && c->tx_off < t->read_len) {
		/* Gather the readable segments from tx_off on. */
		n = 0;
		pos = 0;
		for (i = 0; i < t->nread && n < CONS_IOV_MAX; i++) {
			if (pos + t->seg[i].len <= c->tx_off) {
				pos += t->seg[i].len;
				continue;
			}
			skip = c->tx_off > pos ? c->tx_off - pos : 0;
			iov[n].iov_base = t->seg[i].addr + skip;
			iov[n].iov_len = t->seg[i].len - skip;
			pos += t->seg[i].len;
			n++;
		}
		if (n == 0)
			break;
		w = writev(c->out_fd, iov, n);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && errno == EAGAIN)
			return -EAGAIN;
		if (w <= 0) {
			out_gone(c);
			break;
		}
		c->tx_off += w;
	}
	return 0;
}

/* Send every pending transmit chain, in order, returning each once
 * written.  Stops (holding the chain) while out_fd is full. */
static void
tx_run(struct console *c)
{
	struct virtio_queue	*vq = virtio_dev_queue(c->dev, CONS_TXQ);
	bool			 pushed = false;
	int			 rc;

	if (vq == NULL)
		return;
	for (;;) {
		if (!c->tx_held) {
			if ((rc = virtio_queue_pop(vq, &c->tx)) != 1)
				break;
			c->tx_held = true;
			c->tx_off = 0;
		}
		if (tx_write(c) == -EAGAIN) {
			if (c->out_ev == NULL) {
				c->out_ev = reactor_add_fd(c->r, c->out_fd,
				    REACTOR_WRITE, out_writable_cb, c);
				if (c->out_ev == NULL)
					out_gone(c);
				else
					break;
			} else
				break;
			continue;	/* output dropped: finish the chain */
		}
		virtio_queue_push(vq, &c->tx, 0);
		c->tx_held = false;
		pushed = true;
	}
	if (pushed)
		virtio_queue_notify_guest(vq);
}

static void
in_cb(int fd, short what, void *arg)
{
	struct console		*c = arg;
	struct virtio_queue	*vq = virtio_dev_queue(c->dev, CONS_RXQ);
	struct iovec		 iov[CONS_IOV_MAX];
	unsigned		 i, n = 0;
	ssize_t			 got;

	(void)what;
	if (virtio_dev_needs_reset(c->dev)) {
		/* Broken device: leave the input in the fd until reset. */
		reactor_del_fd(c->in_ev);
		c->in_ev = NULL;
		return;
	}
	if (!c->rx_held || vq == NULL) {
		rx_fill(c);
		return;
	}
	for (i = c->rx.nread; i < c->rx.nseg && n < CONS_IOV_MAX; i++) {
		iov[n].iov_base = c->rx.seg[i].addr;
		iov[n].iov_len = c->rx.seg[i].len;
		n++;
	}
	got = readv(fd, iov, n);
	if (got == -1 && (errno == EINTR || errno == EAGAIN))
		return;
	if (got <= 0) {
		/* End of input (or an error): the buffer stays ours until
		 * reset, the guest just sees no more bytes. */
		if (got == -1)
			log_warn("virtio-console input");
		c->in_eof = true;
		rx_fill(c);
		return;
	}
	virtio_queue_push(vq, &c->rx, (uint32_t)got);
	virtio_queue_notify_guest(vq);
	c->rx_held = false;
	rx_fill(c);
}

/* Hold a receive buffer if the driver posted one, and watch in_fd only
 * while we do (back-pressure). */
static void
rx_fill(struct console *c)
{
	struct virtio_queue	*vq = virtio_dev_queue(c->dev, CONS_RXQ);
	bool			 want, pushed = false;

	while (!c->rx_held && vq != NULL && c->in_fd >= 0 && !c->in_eof) {
		if (virtio_queue_pop(vq, &c->rx) != 1)
			break;
		if (c->rx.write_len == 0) {
			/* Nothing we can write into: give it back. */
			virtio_queue_push(vq, &c->rx, 0);
			pushed = true;
			continue;
		}
		c->rx_held = true;
	}
	if (pushed)
		virtio_queue_notify_guest(vq);
	want = c->rx_held && c->in_fd >= 0 && !c->in_eof;
	if (want && c->in_ev == NULL) {
		c->in_ev = reactor_add_fd(c->r, c->in_fd, REACTOR_READ, in_cb,
		    c);
		if (c->in_ev == NULL)
			log_warn("virtio-console input");
	} else if (!want && c->in_ev != NULL) {
		reactor_del_fd(c->in_ev);
		c->in_ev = NULL;
	}
}

static void
console_notify(struct virtio_dev *dev, void *priv, unsigned q)
{
	struct console	*c = priv;

	(void)dev;
	if (q == CONS_RXQ)
		rx_fill(c);
	else if (q == CONS_TXQ)
		tx_run(c);
}

static void
console_reset(struct virtio_dev *dev, void *priv)
{
	struct console	*c = priv;

	(void)dev;
	/* Held chains went with the queues. */
	c->tx_held = false;
	c->rx_held = false;
	if (c->out_ev != NULL) {
		reactor_del_fd(c->out_ev);
		c->out_ev = NULL;
	}
	if (c->in_ev != NULL) {
		reactor_del_fd(c->in_ev);
		c->in_ev = NULL;
	}
}

static void
console_config_read(struct virtio_dev *dev, void *priv, uint32_t off,
    void *data, uint32_t len)
{
	uint8_t		img[CONS_CONFIG_SIZE];
	uint32_t	ports = htole32(1);

	(void)dev;
	(void)priv;
	/* cols = rows = 0 (no F_SIZE); emerg_wr reads as zero. */
	memset(img, 0, sizeof(img));
	memcpy(img + 4, &ports, 4);
	memcpy(data, img + off, len);
}

/* Emergency write (5.3.4): the low byte written to emerg_wr is output. */
static void
console_config_write(struct virtio_dev *dev, void *priv, uint32_t off,
    const void *data, uint32_t len)
{
	struct console	*c = priv;
	uint8_t		 ch;
	ssize_t		 w;

	if (off != CONS_EMERG_OFF || len == 0 || c->out_fd < 0 ||
	    !virtio_dev_has(dev, VIRTIO_CONSOLE_F_EMERG_WRITE))
		return;
	ch = *(const uint8_t *)data;
	do
		w = write(c->out_fd, &ch, 1);
	while (w == -1 && errno == EINTR);
	if (w == -1 && errno != EAGAIN)
		out_gone(c);
}

/* Snapshot record: which chains were held, by head.  A restored device
 * cannot keep them (their segments belong to the old process's view), so
 * load hands them back to the driver empty: the guest re-posts the
 * receive buffer, and only output still stuck in a full out_fd at the
 * snapshot is lost. */
#define CONS_SAVE_VERSION	1

struct console_record {
	uint32_t	version;
	uint16_t	rx_held, rx_head;
	uint16_t	tx_held, tx_head;
};

static int
console_save(struct virtio_dev *dev, void *priv, uint8_t **buf, size_t *len)
{
	struct console		*c = priv;
	struct console_record	 rec = {
		.version = CONS_SAVE_VERSION,
		.rx_held = c->rx_held,
		.rx_head = c->rx_held ? c->rx.head : 0,
		.tx_held = c->tx_held,
		.tx_head = c->tx_held ? c->tx.head : 0,
	};

	(void)dev;
	*buf = xreallocarray(*buf, *len + sizeof(rec), 1);
	memcpy(*buf + *len, &rec, sizeof(rec));
	*len += sizeof(rec);
	return 0;
}

static void
give_back(struct virtio_dev *dev, unsigned q, uint16_t head)
{
	struct virtio_queue	*vq = virtio_dev_queue(dev, q);
	struct virtio_chain	*ch;

	if (vq == NULL || !virtio_queue_ready(vq))
		return;
	ch = xcalloc(1, sizeof(*ch));
	ch->head = head;
	virtio_queue_push(vq, ch, 0);
	virtio_queue_notify_guest(vq);
	free(ch);
}

static int
console_load(struct virtio_dev *dev, void *priv, const uint8_t *buf,
    size_t len)
{
	struct console		*c = priv;
	struct console_record	 rec;

	if (len != sizeof(rec))
		return -EINVAL;
	memcpy(&rec, buf, sizeof(rec));
	if (rec.version != CONS_SAVE_VERSION || rec.rx_held > 1 ||
	    rec.tx_held > 1)
		return -EINVAL;
	console_reset(dev, c);
	if (rec.rx_held)
		give_back(dev, CONS_RXQ, rec.rx_head);
	if (rec.tx_held)
		give_back(dev, CONS_TXQ, rec.tx_head);
	return 0;
}

static void
console_free(void *priv)
{
	struct console	*c = priv;

	if (c->out_ev != NULL)
		reactor_del_fd(c->out_ev);
	if (c->in_ev != NULL)
		reactor_del_fd(c->in_ev);
	free(c);
}

static const struct virtio_dev_ops console_ops = {
	.name = "console",
	.device_id = VIRTIO_ID_CONSOLE,
	.nqueues = 2,
	.queue_max = CONS_QUEUE_MAX,
	.config_size = CONS_CONFIG_SIZE,
	.features = 1ULL << VIRTIO_CONSOLE_F_EMERG_WRITE,
	.notify = console_notify,
	.reset = console_reset,
	.config_read = console_config_read,
	.config_write = console_config_write,
	.save = console_save,
	.load = console_load,
	.free = console_free,
};

struct virtio_dev *
virtio_console_create(const struct virtio_host *h, uint64_t base,
    uint32_t irq, int out_fd, int in_fd)
{
	struct console		*c;
	struct virtio_dev	*dev;

	c = xcalloc(1, sizeof(*c));
	c->r = h->r;
	c->out_fd = out_fd;
	c->in_fd = in_fd;
	if ((dev = virtio_mmio_create(h, base, irq, &console_ops, c)) ==
	    NULL) {
		free(c);
		return NULL;
	}
	c->dev = dev;
	return dev;
}
