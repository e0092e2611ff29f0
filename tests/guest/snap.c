/*
 * snap-loop=P: the guest side of the snapshot tests.  Opens virtio-fs
 * (INIT, LOOKUP + OPEN of hello.txt, one READ kept as the reference) and
 * virtio-vsock (listening on port P) together, then loops forever:
 *
 *   - counts; every SNAP_PRINT_EVERY rounds prints
 *     "snap: counter N fs-reads R echoes E";
 *   - READs hello.txt through the handle opened at the start and fails
 *     unless the bytes are the reference (a FUSE session that survived);
 *   - serves vsock without blocking: accepts a REQUEST to port P, echoes
 *     data, answers SHUTDOWN with RST, and on a TRANSPORT_RESET event
 *     (sent after a restore) forgets its connection and prints
 *     "snap: vsock transport reset".
 *
 * The loop never ends by itself: the host stops the machine.  A snapshot
 * taken at any point resumes mid-loop, so a restored clone goes on
 * counting from where the snapshot was taken.
 */
#include <linux/fuse.h>

#include "testguest.h"

#define ID_VSOCK		19
#define ID_FS			26
#define FS_REQUEST		1
#define FS_IO_MAX		4096
#define REF_MAX			64
#define WAIT			(5 * TSC_SECOND)

#define VQ_RX			0
#define VQ_TX			1
#define VQ_EV			2
#define CFG_CID			0
#define OP_REQUEST		1
#define OP_RESPONSE		2
#define OP_RST			3
#define OP_SHUTDOWN		4
#define OP_RW			5
#define OP_CREDIT_UPDATE	6
#define OP_CREDIT_REQUEST	7
#define TYPE_STREAM		1
#define EVENT_TRANSPORT_RESET	0
#define RX_BUFS			4
#define PAYLOAD			1024
#define BUF_ALLOC		(64 * 1024)

#define SNAP_PRINT_EVERY	4

static struct {
	struct vdev	 d;
	struct vq	*rq;
	uint8_t		*in, *out;
	uint64_t	 unique, node, fh;
	uint8_t		 ref[REF_MAX];
	uint32_t	 reflen;
} fs;

static struct {
	struct vdev	 d;
	struct vq	*rx, *tx, *ev;
	uint64_t	 cid, peer_cid;
	uint32_t	 port, peer_port;	/* peer_port 0: no connection */
	uint32_t	 fwd_cnt;
	struct vsock_hdr *thdr;
	uint8_t		*tpay;
	uint32_t	*event;
} vs;

/* One FUSE request on the request queue, waited for.  Returns the reply
 * error; *body / *blen the reply body. */
static int32_t
fuse_call(uint32_t opcode, uint64_t node, const void *a, uint32_t alen,
    const uint8_t **body, uint32_t *blen)
{
	struct fuse_in_header	*h = (struct fuse_in_header *)fs.in;
	struct fuse_out_header	*oh = (struct fuse_out_header *)fs.out;
	struct vseg		 s[2];
	uint32_t		 len;

	memset(h, 0, sizeof(*h));
	h->len = sizeof(*h) + alen;
	h->opcode = opcode;
	h->unique = ++fs.unique;
	h->nodeid = node;
	memcpy(fs.in + sizeof(*h), a, alen);
	s[0].addr = fs.in;
	s[0].len = h->len;
	s[0].write = 0;
	s[1].addr = fs.out;
	s[1].len = FS_IO_MAX;
	s[1].write = 1;
	if (vq_add(fs.rq, s, 2, 0, NULL) < 0)
		tg_fail("snap: fs request queue full");
	vq_kick(&fs.d, fs.rq);
	(void)vq_wait(&fs.d, fs.rq, &len, WAIT, "on a FUSE request");
	if (len < sizeof(*oh) || oh->len != len || oh->unique != fs.unique)
		tg_fail("snap: bad FUSE reply (len %u, unique %lu for %lu)",
		    len, oh->unique, fs.unique);
	*body = fs.out + sizeof(*oh);
	*blen = len - (uint32_t)sizeof(*oh);
	return oh->error;
}

/* READ hello.txt from offset 0 through the open handle. */
static void
fs_read(uint8_t *dst, uint32_t *n)
{
	struct fuse_read_in	 ri;
	const uint8_t		*body;
	uint32_t		 blen;
	int32_t			 e;

	memset(&ri, 0, sizeof(ri));
	ri.fh = fs.fh;
	ri.size = REF_MAX;
	if ((e = fuse_call(FUSE_READ, fs.node, &ri, sizeof(ri), &body,
	    &blen)) != 0)
		tg_fail("snap: READ of hello.txt: error %d", e);
	if (blen > REF_MAX)
		tg_fail("snap: READ returned %u bytes for %u", blen, REF_MAX);
	memcpy(dst, body, blen);
	*n = blen;
}

static void
fs_setup(void)
{
	struct fuse_init_in	 ii;
	struct fuse_open_in	 oi;
	const uint8_t		*body;
	uint32_t		 blen;
	int32_t			 e;

	vdev_open(&fs.d, ID_FS, "snap-fs", 0);
	(void)vdev_queue(&fs.d, 0);		/* hiprio: unused */
	fs.rq = vdev_queue(&fs.d, FS_REQUEST);
	fs.in = vmem_alloc(FS_IO_MAX, 64);
	fs.out = vmem_alloc(FS_IO_MAX, 64);
	vdev_driver_ok(&fs.d);
	memset(&ii, 0, sizeof(ii));
	ii.major = FUSE_KERNEL_VERSION;
	ii.minor = 31;
	if ((e = fuse_call(FUSE_INIT, 0, &ii, sizeof(ii), &body, &blen)) != 0)
		tg_fail("snap: INIT: error %d", e);
	if ((e = fuse_call(FUSE_LOOKUP, FUSE_ROOT_ID, "hello.txt", 10, &body,
	    &blen)) != 0 || blen < sizeof(struct fuse_entry_out))
		tg_fail("snap: LOOKUP hello.txt: error %d", e);
	fs.node = ((const struct fuse_entry_out *)(const void *)body)->nodeid;
	memset(&oi, 0, sizeof(oi));
	if ((e = fuse_call(FUSE_OPEN, fs.node, &oi, sizeof(oi), &body,
	    &blen)) != 0 || blen < sizeof(struct fuse_open_out))
		tg_fail("snap: OPEN hello.txt: error %d", e);
	fs.fh = ((const struct fuse_open_out *)(const void *)body)->fh;
	fs_read(fs.ref, &fs.reflen);
	if (fs.reflen == 0)
		tg_fail("snap: hello.txt is empty");
}

/* Send one packet to the peer and wait for the device to take it. */
static void
vs_send(uint16_t op, const void *data, uint32_t len)
{
	struct vseg	s[2];
	uint32_t	used;

	memset(vs.thdr, 0, sizeof(*vs.thdr));
	vs.thdr->src_cid = vs.cid;
	vs.thdr->dst_cid = vs.peer_cid;
	vs.thdr->src_port = vs.port;
	vs.thdr->dst_port = vs.peer_port;
	vs.thdr->len = len;
	vs.thdr->type = TYPE_STREAM;
	vs.thdr->op = op;
	vs.thdr->buf_alloc = BUF_ALLOC;
	vs.thdr->fwd_cnt = vs.fwd_cnt;
	s[0].addr = vs.thdr;
	s[0].len = sizeof(*vs.thdr);
	s[0].write = 0;
	if (len > 0) {
		memcpy(vs.tpay, data, len);
		s[1].addr = vs.tpay;
		s[1].len = len;
		s[1].write = 0;
	}
	if (vq_add(vs.tx, s, len > 0 ? 2 : 1, 0, NULL) < 0)
		tg_fail("snap: vsock tx queue full");
	vq_kick(&vs.d, vs.tx);
	(void)vq_wait(&vs.d, vs.tx, &used, WAIT, "on the vsock tx queue");
}

static void
vs_post(void *buf, uint32_t len, struct vq *q)
{
	struct vseg	s = { buf, len, 1 };

	if (vq_add(q, &s, 1, 0, buf) < 0)
		tg_fail("snap: vsock queue %u full", q->index);
}

static void
vs_setup(uint32_t port)
{
	unsigned	i;

	vdev_open(&vs.d, ID_VSOCK, "snap-vsock", 0);
	vs.rx = vdev_queue(&vs.d, VQ_RX);
	vs.tx = vdev_queue(&vs.d, VQ_TX);
	vs.ev = vdev_queue(&vs.d, VQ_EV);
	vs.cid = vdev_cfg64(&vs.d, CFG_CID);
	vs.port = port;
	vs.thdr = vmem_alloc(sizeof(*vs.thdr), 64);
	vs.tpay = vmem_alloc(PAYLOAD, 64);
	vdev_driver_ok(&vs.d);
	for (i = 0; i < RX_BUFS; i++)
		vs_post(vmem_alloc(sizeof(struct vsock_hdr) + PAYLOAD, 64),
		    sizeof(struct vsock_hdr) + PAYLOAD, vs.rx);
	vq_kick(&vs.d, vs.rx);
	vs.event = vmem_alloc(8, 8);
	vs_post(vs.event, 8, vs.ev);
	vq_kick(&vs.d, vs.ev);
}

/* Handle whatever the device has returned, without waiting. */
static unsigned
vs_poll(void)
{
	struct vsock_hdr h;
	void		*cookie;
	uint8_t		*buf;
	uint32_t	 len;
	unsigned	 echoes = 0;

	if (vq_poll(vs.ev, &cookie, &len) == 1) {
		(void)vdev_irq_ack(&vs.d);
		if (len >= 4 && *vs.event == EVENT_TRANSPORT_RESET) {
			tg_printf("snap: vsock transport reset\n");
			vs.peer_port = 0;
			vs.fwd_cnt = 0;
			vs.cid = vdev_cfg64(&vs.d, CFG_CID);
		}
		vs_post(vs.event, 8, vs.ev);
		vq_kick(&vs.d, vs.ev);
	}
	while (vq_poll(vs.rx, &cookie, &len) == 1) {
		(void)vdev_irq_ack(&vs.d);
		buf = cookie;
		if (len < sizeof(h))
			tg_fail("snap: vsock packet of %u bytes", len);
		memcpy(&h, buf, sizeof(h));
		if (h.len != len - sizeof(h) || h.len > PAYLOAD)
			tg_fail("snap: vsock header says %u bytes, used %u",
			    h.len, len);
		if (h.op == OP_REQUEST && h.dst_port == vs.port) {
			vs.peer_cid = h.src_cid;
			vs.peer_port = h.src_port;
			vs.fwd_cnt = 0;
			vs_send(OP_RESPONSE, NULL, 0);
			tg_printf("snap: vsock accepted port %u\n", h.src_port);
		} else if (vs.peer_port == 0 || h.src_port != vs.peer_port) {
			/* Not our connection: refuse it. */
			if (h.op != OP_RST) {
				uint32_t pp = vs.peer_port;
				uint64_t pc = vs.peer_cid;

				vs.peer_port = h.src_port;
				vs.peer_cid = h.src_cid;
				vs_send(OP_RST, NULL, 0);
				vs.peer_port = pp;
				vs.peer_cid = pc;
			}
		} else if (h.op == OP_RW) {
			vs.fwd_cnt += h.len;
			vs_send(OP_RW, buf + sizeof(h), h.len);
			echoes++;
		} else if (h.op == OP_SHUTDOWN) {
			vs_send(OP_RST, NULL, 0);
			vs.peer_port = 0;
		} else if (h.op == OP_RST) {
			vs.peer_port = 0;
		} else if (h.op == OP_CREDIT_REQUEST) {
			vs_send(OP_CREDIT_UPDATE, NULL, 0);
		}
		vs_post(buf, sizeof(struct vsock_hdr) + PAYLOAD, vs.rx);
		vq_kick(&vs.d, vs.rx);
	}
	return echoes;
}

void
test_snap_loop(const char *arg)
{
	uint8_t		 got[REF_MAX];
	uint64_t	 port, counter = 0, reads = 0, echoes = 0;
	uint32_t	 n;

	if (parse_u64(arg, &port) != 0 || port == 0 || port > UINT32_MAX)
		tg_fail("snap: bad port '%s'", arg);
	/* Both devices stay open: their rings share the buffer pool. */
	vmem_keep();
	fs_setup();
	vs_setup((uint32_t)port);
	tg_printf("snap: ready, vsock cid %lu port %lu, hello.txt %u bytes\n",
	    vs.cid, port, fs.reflen);
	for (;;) {
		counter++;
		fs_read(got, &n);
		if (n != fs.reflen || memcmp(got, fs.ref, n) != 0)
			tg_fail("snap: READ %lu of hello.txt returned other "
			    "bytes", reads + 1);
		reads++;
		echoes += vs_poll();
		if (counter % SNAP_PRINT_EVERY == 0)
			tg_printf("snap: counter %lu fs-reads %lu echoes %lu\n",
			    counter, reads, echoes);
	}
}
