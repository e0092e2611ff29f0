/*
 * Benchmark words for `make bench` (tests/bench/virtio_bench drives them):
 *
 *   vsock-echo=P     listen on vsock port P and echo every data packet back
 *                    until the host shuts down.  Zero-copy: the echo sends
 *                    the payload straight out of the rx buffer it arrived
 *                    in, and that buffer is posted again once the device
 *                    has taken the echo.  Prints nothing per packet.
 *   blk-randread=N   N random 4 KiB reads from the first virtio-blk disk,
 *                    up to BENCH_DEPTH in flight.  The host times the run
 *                    between the "blk-randread: go" and "blk-randread: end"
 *                    console lines (the TSC is not calibrated here).
 *
 * Both poll with VRING_AVAIL_F_NO_INTERRUPT set: nothing here takes
 * interrupts, so the device need not raise any (virtio 1.2 2.7.7).
 */
#include "testguest.h"

#define ID_BLOCK		2
#define ID_VSOCK		19

#define AVAIL_F_NO_INTERRUPT	1
#define STALL_WAIT		(30 * TSC_SECOND)

/* vsock (virtio 1.2 5.10) */
#define VSOCK_RXQ		0
#define VSOCK_TXQ		1
#define VSOCK_EVQ		2
#define VSOCK_CFG_CID		0
#define VSOCK_TYPE_STREAM	1
#define VSOCK_OP_REQUEST	1
#define VSOCK_OP_RESPONSE	2
#define VSOCK_OP_RST		3
#define VSOCK_OP_SHUTDOWN	4
#define VSOCK_OP_RW		5
#define VSOCK_OP_CREDIT_UPDATE	6
#define VSOCK_OP_CREDIT_REQUEST	7
#define ECHO_BUF_ALLOC		(256 * 1024)	/* credit we advertise */
#define ECHO_BUFS		8
#define ECHO_BUF_SIZE		4096		/* header + payload */

/* blk (virtio 1.2 5.2) */
#define BLK_T_IN		0
#define BLK_S_OK		0
#define BLK_CFG_CAPACITY	0
#define BENCH_DEPTH		16
#define BENCH_BLOCK		4096
#define BENCH_SEED		0x2545f4914f6cdd1dULL


struct echo {
	struct vdev	 d;
	struct vq	*rx, *tx;
	uint64_t	 cid, peer_cid;
	uint32_t	 port, peer_port;
	int		 connected, done;
	uint32_t	 fwd_cnt, tx_cnt;
	uint32_t	 peer_buf_alloc, peer_fwd_cnt;
	int		 ctl_busy;
	unsigned	 rx_posted, tx_added;	/* since the last kick */
	/* Received data packets waiting for send credit, in order. */
	uint8_t		*pending[ECHO_BUFS];
	unsigned	 pend_head, pend_n;
	uint64_t	 bytes, packets;
};

/* Outside the virtio.c pool (48 KiB): the rx buffers alone take 32 KiB. */
static uint8_t echo_rx[ECHO_BUFS][ECHO_BUF_SIZE] __attribute__((aligned(64)));
static struct vsock_hdr echo_txh[ECHO_BUFS] __attribute__((aligned(64)));
static struct vsock_hdr echo_ctl __attribute__((aligned(64)));
static struct echo echo_state;

static uint8_t blk_data[BENCH_DEPTH][BENCH_BLOCK] __attribute__((aligned(4096)));

static void
echo_post(struct echo *e, uint8_t *buf)
{
	struct vseg s = { buf, ECHO_BUF_SIZE, 1 };

	if (vq_add(e->rx, &s, 1, 0, buf) < 0)
		tg_fail("vsock-echo: rx queue full");
	e->rx_posted++;
}

static void
hdr_fill(const struct echo *e, struct vsock_hdr *h, uint16_t op, uint32_t len)
{
	h->src_cid = e->cid;
	h->dst_cid = e->peer_cid;
	h->src_port = e->port;
	h->dst_port = e->peer_port;
	h->len = len;
	h->type = VSOCK_TYPE_STREAM;
	h->op = op;
	h->flags = 0;
	h->buf_alloc = ECHO_BUF_ALLOC;
	h->fwd_cnt = e->fwd_cnt;
}

static void
echo_kick(struct echo *e)
{
	if (e->rx_posted) {
		vq_kick(&e->d, e->rx);
		e->rx_posted = 0;
	}
	if (e->tx_added) {
		vq_kick(&e->d, e->tx);
		e->tx_added = 0;
	}
}

/* Finished transmissions: a data echo gives its rx buffer back. */
static int
echo_tx_done(struct echo *e)
{
	void *cookie;
	uint32_t len;
	int n = 0;

	while (vq_poll(e->tx, &cookie, &len)) {
		if (cookie == &echo_ctl)
			e->ctl_busy = 0;
		else
			echo_post(e, cookie);
		n++;
	}
	return n;
}

/* A header-only packet (RESPONSE, RST, CREDIT_UPDATE); one at a time. */
static void
echo_ctl_send(struct echo *e, uint16_t op)
{
	struct vseg s = { &echo_ctl, sizeof(echo_ctl), 0 };
	uint64_t start = rdtsc();

	while (e->ctl_busy || e->tx->nfree == 0) {
		echo_kick(e);
		if (!echo_tx_done(e) && rdtsc() - start > STALL_WAIT)
			tg_fail("vsock-echo: tx queue stalled");
	}
	hdr_fill(e, &echo_ctl, op, 0);
	if (vq_add(e->tx, &s, 1, 0, &echo_ctl) < 0)
		tg_fail("vsock-echo: tx queue full");
	e->ctl_busy = 1;
	e->tx_added++;
}

/* Echoes pending packets while the host's credit lasts. */
static void
echo_flush(struct echo *e)
{
	struct vseg s[2];
	struct vsock_hdr *rh;
	uint8_t *buf;
	uint32_t credit;
	unsigned slot;

	while (e->pend_n > 0) {
		buf = e->pending[e->pend_head];
		rh = (struct vsock_hdr *)buf;
		credit = e->peer_buf_alloc - (e->tx_cnt - e->peer_fwd_cnt);
		if (credit < rh->len)
			return;		/* the host's next packet says more */
		slot = (unsigned)((buf - echo_rx[0]) / ECHO_BUF_SIZE);
		hdr_fill(e, &echo_txh[slot], VSOCK_OP_RW, rh->len);
		s[0].addr = &echo_txh[slot];
		s[0].len = sizeof(struct vsock_hdr);
		s[0].write = 0;
		s[1].addr = buf + sizeof(struct vsock_hdr);
		s[1].len = rh->len;
		s[1].write = 0;
		if (vq_add(e->tx, s, 2, 0, buf) < 0)
			return;		/* ring full: after completions */
		e->tx_cnt += rh->len;
		e->tx_added++;
		e->pend_head = (e->pend_head + 1) % ECHO_BUFS;
		e->pend_n--;
	}
}

static void
echo_rx_one(struct echo *e, uint8_t *buf, uint32_t len)
{
	struct vsock_hdr *h = (struct vsock_hdr *)buf;

	if (len < sizeof(*h) || h->len != len - sizeof(*h))
		tg_fail("vsock-echo: rx packet of %u bytes, header says %u "
		    "payload", len, h->len);
	if (!e->connected) {
		if (h->op == VSOCK_OP_REQUEST && h->dst_port == e->port &&
		    h->type == VSOCK_TYPE_STREAM) {
			e->peer_cid = h->src_cid;
			e->peer_port = h->src_port;
			e->peer_buf_alloc = h->buf_alloc;
			e->peer_fwd_cnt = h->fwd_cnt;
			e->connected = 1;
			echo_ctl_send(e, VSOCK_OP_RESPONSE);
		}
		echo_post(e, buf);
		return;
	}
	if (h->src_cid != e->peer_cid || h->src_port != e->peer_port ||
	    h->dst_port != e->port) {
		echo_post(e, buf);	/* not our stream */
		return;
	}
	e->peer_buf_alloc = h->buf_alloc;
	e->peer_fwd_cnt = h->fwd_cnt;
	switch (h->op) {
	case VSOCK_OP_RW:
		if (h->len == 0)
			break;
		/* Consumed as far as credit goes: it is ours until echoed. */
		e->fwd_cnt += h->len;
		e->bytes += h->len;
		e->packets++;
		e->pending[(e->pend_head + e->pend_n) % ECHO_BUFS] = buf;
		e->pend_n++;
		return;
	case VSOCK_OP_SHUTDOWN:
		echo_ctl_send(e, VSOCK_OP_RST);
		e->done = 1;
		break;
	case VSOCK_OP_RST:
		e->done = 1;
		break;
	case VSOCK_OP_CREDIT_REQUEST:
		echo_ctl_send(e, VSOCK_OP_CREDIT_UPDATE);
		break;
	case VSOCK_OP_CREDIT_UPDATE:
		break;
	default:
		tg_fail("vsock-echo: unexpected op %u", h->op);
	}
	echo_post(e, buf);
}

void
test_vsock_echo(const char *arg)
{
	struct echo *e = &echo_state;
	struct vseg s;
	uint64_t port, last;
	uint32_t *ev, len;
	void *cookie;
	unsigned i;
	int progress;

	if (parse_u64(arg, &port) != 0 || port > UINT32_MAX)
		tg_fail("vsock-echo: bad port '%s'", arg);
	memset(e, 0, sizeof(*e));
	e->port = (uint32_t)port;
	vdev_open(&e->d, ID_VSOCK, "vsock-echo", 0);
	e->rx = vdev_queue(&e->d, VSOCK_RXQ);
	e->tx = vdev_queue(&e->d, VSOCK_TXQ);
	(void)vdev_queue(&e->d, VSOCK_EVQ);
	e->rx->avail->flags = AVAIL_F_NO_INTERRUPT;
	e->tx->avail->flags = AVAIL_F_NO_INTERRUPT;
	e->cid = vdev_cfg64(&e->d, VSOCK_CFG_CID);
	vdev_driver_ok(&e->d);
	for (i = 0; i < ECHO_BUFS; i++)
		echo_post(e, echo_rx[i]);
	ev = vmem_alloc(sizeof(*ev), 8);
	s.addr = ev;
	s.len = sizeof(*ev);
	s.write = 1;
	if (vq_add(&e->d.q[VSOCK_EVQ], &s, 1, 0, NULL) < 0)
		tg_fail("vsock-echo: event queue full");
	vq_kick(&e->d, &e->d.q[VSOCK_EVQ]);
	echo_kick(e);
	tg_printf("vsock-echo: listening on cid %lu port %u\n", e->cid,
	    e->port);

	last = rdtsc();
	while (!e->done) {
		progress = 0;
		while (!e->done && vq_poll(e->rx, &cookie, &len)) {
			echo_rx_one(e, cookie, len);
			progress = 1;
		}
		progress |= echo_tx_done(e);
		echo_flush(e);
		echo_kick(e);
		if (progress)
			last = rdtsc();
		else if (rdtsc() - last > STALL_WAIT)
			tg_fail("vsock-echo: nothing for 30 s (%s, %lu packets "
			    "echoed)", e->connected ? "connected" :
			    "no connection", e->packets);
	}
	/* Let the last echoes and the RST leave before the reset. */
	last = rdtsc();
	while (e->ctl_busy || e->tx->nfree < e->tx->size) {
		echo_kick(e);
		if (!echo_tx_done(e) && rdtsc() - last > STALL_WAIT)
			tg_fail("vsock-echo: tx queue stalled at the end");
	}
	tg_printf("vsock-echo: echoed %lu bytes in %lu packets\n", e->bytes,
	    e->packets);
	vdev_close(&e->d);
}

struct blk_req_hdr {
	uint32_t	type;
	uint32_t	reserved;
	uint64_t	sector;
};

static uint64_t
lcg_next(uint64_t *x)
{
	*x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
	return *x >> 33;
}

static void
blk_issue(struct vq *q, struct blk_req_hdr *hdr, uint8_t *status,
    unsigned slot, uint64_t block, int indirect)
{
	struct vseg s[3];

	hdr[slot].type = BLK_T_IN;
	hdr[slot].reserved = 0;
	hdr[slot].sector = block * (BENCH_BLOCK / 512);
	status[slot] = 0xff;
	s[0] = (struct vseg){ &hdr[slot], sizeof(*hdr), 0 };
	s[1] = (struct vseg){ blk_data[slot], BENCH_BLOCK, 1 };
	s[2] = (struct vseg){ &status[slot], 1, 1 };
	if (vq_add(q, s, 3, indirect, &status[slot]) < 0)
		tg_fail("blk-randread: queue full");
}

void
test_blk_randread(const char *arg)
{
	struct vdev d;
	struct vq *q;
	struct blk_req_hdr *hdr;
	uint8_t *status;
	uint64_t n, cap, blocks, issued = 0, done = 0, x = BENCH_SEED;
	uint64_t t0, t1, last;
	uint32_t len;
	void *cookie;
	unsigned depth, slot, nq;
	int indirect, progress;

	if (parse_u64(arg, &n) != 0 || n == 0)
		tg_fail("blk-randread: bad count '%s'", arg);
	vdev_open(&d, ID_BLOCK, "blk-randread", VBIT(VIRTIO_F_INDIRECT_DESC));
	q = vdev_queue(&d, 0);
	q->avail->flags = AVAIL_F_NO_INTERRUPT;
	vdev_driver_ok(&d);
	indirect = vdev_has(&d, VIRTIO_F_INDIRECT_DESC);
	/* Three descriptors a request without indirect tables. */
	depth = indirect ? q->size : q->size / 3;
	if (depth > BENCH_DEPTH)
		depth = BENCH_DEPTH;
	hdr = vmem_alloc(BENCH_DEPTH * sizeof(*hdr), 16);
	status = vmem_alloc(BENCH_DEPTH, 1);
	cap = vdev_cfg64(&d, BLK_CFG_CAPACITY);
	blocks = cap / (BENCH_BLOCK / 512);
	if (blocks == 0)
		tg_fail("blk-randread: disk of %lu sectors, need 8", cap);
	tg_printf("blk-randread: %lu reads of 4 KiB over %lu blocks, depth "
	    "%u%s\n", n, blocks, depth, indirect ? " (indirect)" : "");

	uart_puts("blk-randread: go\n");
	t0 = rdtsc();
	/* Fill the queue, then refill each slot as its read completes. */
	for (slot = 0; slot < depth && issued < n; slot++, issued++)
		blk_issue(q, hdr, status, slot, lcg_next(&x) % blocks,
		    indirect);
	vq_kick(&d, q);
	last = t0;
	while (done < n) {
		nq = 0;
		progress = 0;
		while (vq_poll(q, &cookie, &len)) {
			slot = (unsigned)((uint8_t *)cookie - status);
			if (status[slot] != BLK_S_OK)
				tg_fail("blk-randread: read of sector %lu: "
				    "status %u", hdr[slot].sector,
				    status[slot]);
			done++;
			progress = 1;
			if (issued == n)
				continue;
			blk_issue(q, hdr, status, slot, lcg_next(&x) % blocks,
			    indirect);
			issued++;
			nq++;
		}
		if (nq > 0)
			vq_kick(&d, q);
		if (progress)
			last = rdtsc();
		else if (rdtsc() - last > STALL_WAIT)
			tg_fail("blk-randread: stalled after %lu of %lu reads",
			    done, n);
	}
	t1 = rdtsc();
	uart_puts("blk-randread: end\n");
	tg_printf("blk-randread: %lu reads in %lu TSC cycles\n", n, t1 - t0);
	vdev_irq_ack(&d);
	vdev_close(&d);
}
