/*
 * virtio-vsock (virtio 1.2 section 5.10), stream sockets, with a hybrid
 * AF_UNIX host side in the manner of Firecracker: host programs reach
 * the guest through one listening Unix socket and a "CONNECT <port>"
 * line; guest connections to port P land on the Unix socket
 * "<uds_path>_P".
 *
 * Queues: 0 rx (device -> driver packets), 1 tx (driver -> device), 2
 * event.  Every packet is a 44-byte header plus payload.  Flow control
 * is the spec's credit scheme (5.10.6.3): we never send a stream more
 * payload than buf_alloc - (tx_cnt - fwd_cnt) the driver last told us,
 * and we tell the driver our own buffer (VSOCK_BUF_ALLOC per stream) and
 * how much of it we have forwarded to the host socket.
 *
 * Back-pressure: a host socket that will not take data keeps the
 * driver's bytes in the stream's buffer and fwd_cnt stops, so the driver
 * stops sending; a driver without rx buffers (or credit) leaves host
 * sockets unread until the next rx kick (or credit update).  The device
 * never pops an rx chain it cannot fill at once, so no chain is ever
 * held across callbacks (nothing to lose in a snapshot).
 *
 * Everything the driver sends is checked: a chain too short for a header
 * or carrying device-writable segments on tx is malformed (NEEDS_RESET);
 * a header that is nonsense for its stream (wrong cid, type, length,
 * credit overrun, unexpected op) resets that stream with RST.
 */
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/virtio_vsock.h>

#include "virtio/virtio.h"

#define VSOCK_RXQ		0
#define VSOCK_TXQ		1
#define VSOCK_EVQ		2

#define VSOCK_HOST_CID		2
#define VSOCK_HDR_LEN		44
#define VSOCK_MAX_PKT		(64 * 1024)	/* payload of one packet */
#define VSOCK_BUF_ALLOC		(256 * 1024)	/* our buffer per stream */
/* Tell the driver about forwarded bytes once this many piled up (it also
 * learns fwd_cnt from every packet we send). */
#define VSOCK_CREDIT_SLACK	(VSOCK_BUF_ALLOC / 4)
#define VSOCK_TIMEOUT_USEC	(5 * 1000 * 1000)
#define VSOCK_MAX_CONNS		4096
#define VSOCK_LINE_MAX		32		/* "CONNECT 4294967295\r\n" fits */
/* The stream buffer also holds our "OK <port>" line. */
#define VSOCK_OBUF_SIZE		(VSOCK_BUF_ALLOC + VSOCK_LINE_MAX)
/* RSTs owed to the driver for streams that no longer exist; when full,
 * tx processing pauses until rx drains it (a driver that floods us with
 * nonsense and posts no rx buffers only stalls itself). */
#define VSOCK_RST_MAX		256
#define VSOCK_HASH		256
#define VSOCK_PORT_FIRST	1024u
#define VSOCK_PORT_LAST		0x7fffffffu

/* Control packets a stream owes the driver (bits of conn->ctl). */
#define CTL_REQUEST		0x01
#define CTL_RESPONSE		0x02
#define CTL_CREDIT		0x04
#define CTL_SHUTDOWN		0x08

enum conn_state {
	C_LINE,		/* host program connected, reading CONNECT line */
	C_REQUEST,	/* REQUEST owed/sent to the driver, awaiting answer */
	C_CONNECTING,	/* driver's REQUEST: host connect() in progress */
	C_OPEN,		/* established */
	C_DRAINING,	/* RST sent; flushing buffered bytes to the host */
};

struct vsock;

struct conn {
	struct vsock		*vs;
	enum conn_state		 state;
	uint32_t		 local_port;	/* our (host) port */
	uint32_t		 peer_port;	/* the driver's port */
	int			 fd;
	struct reactor_fd	*rfd;
	short			 watching;
	struct reactor_timer	*timer;

	unsigned		 ctl;		/* CTL_* owed */
	uint32_t		 shut_flags;	/* for CTL_SHUTDOWN */
	bool			 in_pending;
	bool			 data_ready;	/* host fd known readable */
	bool			 host_eof;	/* nothing more from the host */
	bool			 peer_no_rcv;	/* driver: SHUTDOWN RCV */
	bool			 peer_no_send;	/* driver: SHUTDOWN SEND */
	bool			 host_shut_wr;	/* we did shutdown(SHUT_WR) */
	/* C_LINE: bytes of the CONNECT line already taken off the socket
	 * (a line arriving in pieces must be consumed, or the readable fd
	 * would wake the reactor again and again). */
	char			 line[VSOCK_LINE_MAX];
	size_t			 line_len;

	/* Credit (5.10.6.3): what the driver told us, what we sent. */
	uint32_t		 peer_buf_alloc;
	uint32_t		 peer_fwd_cnt;
	uint32_t		 tx_cnt;	/* payload bytes sent to driver */
	uint32_t		 fwd_cnt;	/* driver bytes written to host */
	uint32_t		 fwd_cnt_sent;	/* fwd_cnt last advertised */

	/* Bytes for the host socket not yet written: [ohead, ohead+olen). */
	uint8_t			*obuf;
	size_t			 ohead, olen;
	size_t			 oskip;		/* head bytes not the driver's */

	LIST_ENTRY(conn)	 hlink;		/* hash (or loose list) */
	TAILQ_ENTRY(conn)	 plink;		/* pending */
	bool			 hashed;
};

LIST_HEAD(conn_list, conn);

struct vsock {
	struct virtio_dev	*dev;
	struct reactor		*r;
	uint64_t		 guest_cid;
	char			*uds_path;
	int			 lfd;
	struct reactor_fd	*lrfd;

	struct conn_list	 hash[VSOCK_HASH];
	struct conn_list	 loose;		/* C_LINE and C_DRAINING */
	TAILQ_HEAD(, conn)	 pending;	/* owe the driver a packet */
	unsigned		 nconns;
	uint32_t		 next_port;

	struct {
		uint32_t	 src, dst;
	}			 rst[VSOCK_RST_MAX];
	unsigned		 rst_head, rst_n;

	bool			 in_rx, rx_again;
	bool			 in_tx, tx_again;
	bool			 tx_stalled;
	bool			 event_reset;	/* TRANSPORT_RESET owed */
	struct virtio_chain	 chain;		/* scratch */
};

static void	vsock_rx(struct vsock *);
static void	vsock_tx(struct vsock *);
static void	conn_arm(struct conn *);
static void	conn_io_cb(int, short, void *);

static unsigned
hash_key(uint32_t local, uint32_t peer)
{
	return (local * 2654435761u ^ peer * 40503u) % VSOCK_HASH;
}

static struct conn *
conn_find(struct vsock *vs, uint32_t local, uint32_t peer)
{
	struct conn	*c;

	LIST_FOREACH(c, &vs->hash[hash_key(local, peer)], hlink)
		if (c->local_port == local && c->peer_port == peer)
			return c;
	return NULL;
}

static void
conn_hash(struct conn *c)
{
	LIST_REMOVE(c, hlink);
	LIST_INSERT_HEAD(&c->vs->hash[hash_key(c->local_port, c->peer_port)],
	    c, hlink);
	c->hashed = true;
}

static void
conn_unhash(struct conn *c)
{
	LIST_REMOVE(c, hlink);
	LIST_INSERT_HEAD(&c->vs->loose, c, hlink);
	c->hashed = false;
}

static void
conn_timer_stop(struct conn *c)
{
	if (c->timer != NULL)
		reactor_del_timer(c->timer);
	c->timer = NULL;
}

static void
conn_unpend(struct conn *c)
{
	if (c->in_pending)
		TAILQ_REMOVE(&c->vs->pending, c, plink);
	c->in_pending = false;
}

/* Put c on the list of streams that owe the driver a packet. */
static void
conn_pend(struct conn *c)
{
	if (!c->in_pending)
		TAILQ_INSERT_TAIL(&c->vs->pending, c, plink);
	c->in_pending = true;
}

static void
conn_free(struct conn *c)
{
	struct vsock	*vs = c->vs;

	conn_unpend(c);
	conn_timer_stop(c);
	LIST_REMOVE(c, hlink);
	reactor_del_fd(c->rfd);
	close(c->fd);
	free(c->obuf);
	free(c);
	vs->nconns--;
}

/* Owe the driver an RST from our port src to its port dst. */
static void
rst_queue(struct vsock *vs, uint32_t src, uint32_t dst)
{
	unsigned	i;

	if (vs->rst_n == VSOCK_RST_MAX) {
		log_warnx("vsock: RST backlog full, dropping %u -> %u", src,
		    dst);
		return;
	}
	i = (vs->rst_head + vs->rst_n++) % VSOCK_RST_MAX;
	vs->rst[i].src = src;
	vs->rst[i].dst = dst;
}

/* Tear the stream down on both sides: RST to the driver, close host. */
static void
conn_reset(struct conn *c)
{
	if (c->state != C_LINE && c->state != C_DRAINING)
		rst_queue(c->vs, c->local_port, c->peer_port);
	conn_free(c);
}

static struct conn *
conn_new(struct vsock *vs, int fd, enum conn_state st)
{
	struct conn	*c = xcalloc(1, sizeof(*c));

	c->vs = vs;
	c->fd = fd;
	c->state = st;
	c->rfd = reactor_add_fd(vs->r, fd, 0, conn_io_cb, c);
	if (c->rfd == NULL) {
		log_warn("vsock: watch stream socket");
		close(fd);
		free(c);
		return NULL;
	}
	LIST_INSERT_HEAD(&vs->loose, c, hlink);
	vs->nconns++;
	return c;
}

static void
conn_timeout_cb(void *arg)
{
	struct conn	*c = arg;
	struct vsock	*vs = c->vs;

	conn_timer_stop(c);	/* a fired one-shot still needs freeing */
	if (c->state == C_DRAINING)
		log_debug("vsock: port %u: host socket never drained",
		    c->local_port);
	else
		log_info("vsock: port %u: no answer in time, closing",
		    c->peer_port);
	conn_reset(c);
	vsock_rx(vs);
}

static void
conn_timer_start(struct conn *c)
{
	conn_timer_stop(c);
	c->timer = reactor_add_timer(c->vs->r, VSOCK_TIMEOUT_USEC, false,
	    conn_timeout_cb, c);
	if (c->timer == NULL)
		log_warn("vsock: stream timer");
}

/* Payload bytes the driver can still take on this stream. */
static uint32_t
peer_credit(const struct conn *c)
{
	uint32_t	inflight = c->tx_cnt - c->peer_fwd_cnt;

	if (inflight >= c->peer_buf_alloc)
		return 0;
	return c->peer_buf_alloc - inflight;
}

static bool
conn_wants_read(const struct conn *c)
{
	if (c->state == C_LINE)
		return true;
	return c->state == C_OPEN && !c->host_eof && !c->peer_no_rcv &&
	    peer_credit(c) > 0;
}

/*
 * Bring the stream's watches and pending-list membership in line with
 * its state.  While a stream is pending (owes the driver something) its
 * socket is not watched for reading: the rx loop reads it when the
 * driver has a buffer.
 */
static void
conn_arm(struct conn *c)
{
	short	w = 0;

	if (c->ctl != 0 || (c->data_ready && conn_wants_read(c)))
		conn_pend(c);
	else
		conn_unpend(c);
	if (!c->in_pending && !c->data_ready && conn_wants_read(c))
		w |= REACTOR_READ;
	if (c->olen > 0 || c->state == C_CONNECTING)
		w |= REACTOR_WRITE;
	if (w != c->watching && reactor_mod_fd(c->rfd, w) == 0)
		c->watching = w;
}

/* Queue a CREDIT_UPDATE if the driver's view of our buffer is stale. */
static void
conn_credit_check(struct conn *c)
{
	if (c->fwd_cnt - c->fwd_cnt_sent >= VSOCK_CREDIT_SLACK)
		c->ctl |= CTL_CREDIT;
}

/*
 * Write buffered bytes to the host socket.  Returns 0, or -errno when
 * the host side is gone (the caller resets the stream).
 */
static int
conn_flush(struct conn *c)
{
	ssize_t	n;
	size_t	k;

	while (c->olen > 0) {
		n = send(c->fd, c->obuf + c->ohead, c->olen,
		    MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0)
			return -errno;
		c->ohead += n;
		c->olen -= n;
		/* The OK line we wrote ourselves is not the driver's. */
		if (c->oskip > 0) {
			k = MIN(c->oskip, (size_t)n);
			c->oskip -= k;
			n -= k;
		}
		c->fwd_cnt += n;
	}
	if (c->olen == 0)
		c->ohead = 0;
	if (c->olen == 0 && c->peer_no_send && !c->host_shut_wr &&
	    c->state == C_OPEN) {
		/* The driver will send no more: pass the EOF on. */
		(void)shutdown(c->fd, SHUT_WR);
		c->host_shut_wr = true;
	}
	return 0;
}

/* Append to the host-bound buffer (room was checked by the caller). */
static void
conn_buffer(struct conn *c, const void *p, size_t len)
{
	if (c->obuf == NULL)
		c->obuf = xmalloc(VSOCK_OBUF_SIZE);
	if (c->ohead + c->olen + len > VSOCK_OBUF_SIZE) {
		memmove(c->obuf, c->obuf + c->ohead, c->olen);
		c->ohead = 0;
	}
	memcpy(c->obuf + c->ohead + c->olen, p, len);
	c->olen += len;
}

/* Fill iov with the chain's readable (or writable) bytes [off, off+len). */
static int
chain_iov(const struct virtio_chain *ch, bool writable, size_t off,
    size_t len, struct iovec *iov)
{
	unsigned	i, first = writable ? ch->nread : 0;
	unsigned	end = writable ? ch->nseg : ch->nread;
	int		n = 0;
	size_t		take;

	for (i = first; i < end && len > 0; i++) {
		if (off >= ch->seg[i].len) {
			off -= ch->seg[i].len;
			continue;
		}
		take = MIN(ch->seg[i].len - off, len);
		iov[n].iov_base = ch->seg[i].addr + off;
		iov[n].iov_len = take;
		n++;
		len -= take;
		off = 0;
	}
	return n;
}

/*
 * RW payload from the driver: straight to the host socket when nothing
 * is queued before it, the rest into the stream buffer.  Returns 0 or
 * -errno (host gone).
 */
static int
conn_take(struct conn *c, const struct virtio_chain *ch, uint32_t len)
{
	struct iovec	 iov[VIRTIO_MAX_CHAIN];
	struct msghdr	 msg;
	size_t		 done = 0, off;
	ssize_t		 n;
	uint8_t		 tmp[4096];
	size_t		 k;

	if (len == 0)
		return 0;
	if (c->olen == 0) {
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = iov;
		msg.msg_iovlen = chain_iov(ch, false, VSOCK_HDR_LEN, len, iov);
		do {
			n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		} while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if (n > 0) {
			done = n;
			c->fwd_cnt += n;
		}
	}
	/* Copy what the host did not take yet. */
	for (off = done; off < len; off += k) {
		k = virtio_chain_read(ch, VSOCK_HDR_LEN + off, tmp,
		    MIN(sizeof(tmp), len - off));
		if (k == 0)
			break;
		conn_buffer(c, tmp, k);
	}
	return 0;
}

static void
hdr_fill(struct vsock *vs, struct virtio_vsock_hdr *h, uint32_t src,
    uint32_t dst, uint16_t op)
{
	memset(h, 0, sizeof(*h));
	h->src_cid = htole64(VSOCK_HOST_CID);
	h->dst_cid = htole64(vs->guest_cid);
	h->src_port = htole32(src);
	h->dst_port = htole32(dst);
	h->type = htole16(VIRTIO_VSOCK_TYPE_STREAM);
	h->op = htole16(op);
}

/* Stamp our credit into a stream's outgoing header. */
static void
hdr_credit(struct conn *c, struct virtio_vsock_hdr *h)
{
	h->buf_alloc = htole32(VSOCK_BUF_ALLOC);
	h->fwd_cnt = htole32(c->fwd_cnt);
	c->fwd_cnt_sent = c->fwd_cnt;
}

/* Whether the host peer closed both ways (not just shut its writes). */
static bool
host_hung_up(int fd)
{
	struct pollfd	p = { .fd = fd, .events = POLLIN | POLLRDHUP };

	return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

/*
 * Fill chain ch with the stream's next packet.  Returns the bytes
 * written (header included), 0 when the stream had nothing after all.
 * *gone is set when the stream was torn down (it queued an RST).
 */
static int
conn_emit(struct conn *c, struct virtio_chain *ch, bool *gone)
{
	struct vsock		*vs = c->vs;
	struct virtio_vsock_hdr	 h;
	struct iovec		 iov[VIRTIO_MAX_CHAIN];
	struct msghdr		 msg;
	uint32_t		 room;
	ssize_t			 n;
	uint16_t		 op;

	if (c->ctl != 0) {
		if (c->ctl & CTL_REQUEST) {
			c->ctl &= ~CTL_REQUEST;
			op = VIRTIO_VSOCK_OP_REQUEST;
		} else if (c->ctl & CTL_RESPONSE) {
			c->ctl &= ~CTL_RESPONSE;
			op = VIRTIO_VSOCK_OP_RESPONSE;
		} else if (c->ctl & CTL_CREDIT) {
			c->ctl &= ~CTL_CREDIT;
			op = VIRTIO_VSOCK_OP_CREDIT_UPDATE;
		} else {
			c->ctl &= ~CTL_SHUTDOWN;
			op = VIRTIO_VSOCK_OP_SHUTDOWN;
		}
		hdr_fill(vs, &h, c->local_port, c->peer_port, op);
		if (op == VIRTIO_VSOCK_OP_SHUTDOWN)
			h.flags = htole32(c->shut_flags);
		hdr_credit(c, &h);
		virtio_chain_write(ch, 0, &h, sizeof(h));
		return sizeof(h);
	}
	if (!c->data_ready || !conn_wants_read(c))
		return 0;

	room = MIN(peer_credit(c), ch->write_len - VSOCK_HDR_LEN);
	room = MIN(room, VSOCK_MAX_PKT);
	if (room == 0) {
		/* A header-only buffer: nothing read, say our credit. */
		hdr_fill(vs, &h, c->local_port, c->peer_port,
		    VIRTIO_VSOCK_OP_CREDIT_UPDATE);
		hdr_credit(c, &h);
		virtio_chain_write(ch, 0, &h, sizeof(h));
		return sizeof(h);
	}
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = iov;
	msg.msg_iovlen = chain_iov(ch, true, VSOCK_HDR_LEN, room, iov);
	do {
		n = recvmsg(c->fd, &msg, MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		c->data_ready = false;
		return 0;
	}
	if (n < 0) {
		conn_reset(c);
		*gone = true;
		return 0;
	}
	if (n == 0) {
		/*
		 * EOF.  A full close ends the stream (SHUTDOWN both ways,
		 * then RST: Linux keeps data already queued readable); a
		 * half close only says we will send no more.
		 */
		c->host_eof = true;
		c->data_ready = false;
		hdr_fill(vs, &h, c->local_port, c->peer_port,
		    VIRTIO_VSOCK_OP_SHUTDOWN);
		if (host_hung_up(c->fd)) {
			h.flags = htole32(VIRTIO_VSOCK_SHUTDOWN_RCV |
			    VIRTIO_VSOCK_SHUTDOWN_SEND);
			hdr_credit(c, &h);
			virtio_chain_write(ch, 0, &h, sizeof(h));
			conn_reset(c);
			*gone = true;
			return sizeof(h);
		}
		h.flags = htole32(VIRTIO_VSOCK_SHUTDOWN_SEND);
		hdr_credit(c, &h);
		virtio_chain_write(ch, 0, &h, sizeof(h));
		return sizeof(h);
	}
	hdr_fill(vs, &h, c->local_port, c->peer_port, VIRTIO_VSOCK_OP_RW);
	h.len = htole32((uint32_t)n);
	hdr_credit(c, &h);
	virtio_chain_write(ch, 0, &h, sizeof(h));
	c->tx_cnt += (uint32_t)n;
	return VSOCK_HDR_LEN + (int)n;
}

/* Whether c could put a packet in an rx buffer right now (a peek at the
 * host socket, so a popped chain is always filled). */
static bool
conn_has_packet(struct conn *c)
{
	char	b;
	ssize_t	n;

	if (c->ctl != 0)
		return true;
	if (!c->data_ready || !conn_wants_read(c))
		return false;
	n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR)) {
		c->data_ready = false;
		return false;
	}
	return true;	/* data, EOF or an error: all make a packet */
}

/* Deliver the TRANSPORT_RESET event owed after a restore. */
static void
vsock_event(struct vsock *vs)
{
	struct virtio_queue		*q = virtio_dev_queue(vs->dev,
					    VSOCK_EVQ);
	struct virtio_vsock_event	 ev;
	int				 rc;

	if (!vs->event_reset || !virtio_queue_ready(q))
		return;
	if ((rc = virtio_queue_pop(q, &vs->chain)) <= 0)
		return;
	if (vs->chain.write_len < sizeof(ev)) {
		virtio_dev_fail(vs->dev, "event buffer of %u bytes",
		    vs->chain.write_len);
		return;
	}
	ev.id = htole32(VIRTIO_VSOCK_EVENT_TRANSPORT_RESET);
	virtio_chain_write(&vs->chain, 0, &ev, sizeof(ev));
	virtio_queue_push(q, &vs->chain, sizeof(ev));
	virtio_queue_notify_guest(q);
	vs->event_reset = false;
}

/* One pass of the rx loop: owed RSTs first, then streams round-robin. */
static void
vsock_rx_once(struct vsock *vs)
{
	struct virtio_queue	*q = virtio_dev_queue(vs->dev, VSOCK_RXQ);
	struct virtio_chain	*ch = &vs->chain;
	struct virtio_vsock_hdr	 h;
	struct conn		*c;
	bool			 pushed = false, gone;
	int			 n, rc;

	if (!virtio_queue_ready(q) || virtio_dev_needs_reset(vs->dev))
		return;
	for (;;) {
		/* Find work before taking a buffer. */
		c = NULL;
		if (vs->rst_n == 0) {
			while ((c = TAILQ_FIRST(&vs->pending)) != NULL &&
			    !conn_has_packet(c))
				conn_arm(c);	/* drops it off the list */
			if (c == NULL)
				break;
		}
		if ((rc = virtio_queue_pop(q, ch)) <= 0)
			break;		/* no buffer (or NEEDS_RESET) */
		if (ch->write_len < VSOCK_HDR_LEN) {
			virtio_dev_fail(vs->dev, "rx buffer of %u bytes",
			    ch->write_len);
			return;
		}
		if (c == NULL) {
			hdr_fill(vs, &h, vs->rst[vs->rst_head].src,
			    vs->rst[vs->rst_head].dst, VIRTIO_VSOCK_OP_RST);
			vs->rst_head = (vs->rst_head + 1) % VSOCK_RST_MAX;
			vs->rst_n--;
			virtio_chain_write(ch, 0, &h, sizeof(h));
			n = sizeof(h);
		} else {
			gone = false;
			n = conn_emit(c, ch, &gone);
			if (!gone) {
				/* Round-robin: to the back of the line. */
				conn_unpend(c);
				conn_arm(c);
			}
			if (n == 0 && vs->rst_n > 0) {
				/* Torn down: the RST it queued goes in
				 * this buffer. */
				hdr_fill(vs, &h, vs->rst[vs->rst_head].src,
				    vs->rst[vs->rst_head].dst,
				    VIRTIO_VSOCK_OP_RST);
				vs->rst_head = (vs->rst_head + 1) %
				    VSOCK_RST_MAX;
				vs->rst_n--;
				virtio_chain_write(ch, 0, &h, sizeof(h));
				n = sizeof(h);
			}
			/* n == 0 (nothing after all) cannot happen: we
			 * peeked first.  An empty used buffer is harmless. */
		}
		virtio_queue_push(q, ch, (uint32_t)n);
		pushed = true;
	}
	if (pushed)
		virtio_queue_notify_guest(q);
}

static void
vsock_rx(struct vsock *vs)
{
	if (vs->in_rx) {
		vs->rx_again = true;
		return;
	}
	vs->in_rx = true;
	do {
		vs->rx_again = false;
		vsock_rx_once(vs);
	} while (vs->rx_again);
	vs->in_rx = false;
	if (vs->tx_stalled && vs->rst_n < VSOCK_RST_MAX / 2)
		vsock_tx(vs);
}

/* A host connect() for the driver's REQUEST finished (or failed). */
static void
conn_connected(struct conn *c)
{
	int		err = 0;
	socklen_t	len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY)
		return;
	if (err != 0) {
		conn_reset(c);
		return;
	}
	c->state = C_OPEN;
	c->ctl |= CTL_RESPONSE;
	c->data_ready = true;
	conn_arm(c);
}

/* Parse the host program's "CONNECT <port>\n". */
static void
conn_read_line(struct conn *c)
{
	struct vsock	*vs = c->vs;
	char		 line[VSOCK_LINE_MAX + 1], *nl, *end;
	unsigned long	 port;
	ssize_t		 n;
	size_t		 len;

	/* Peek what may still belong to the line (bytes after the newline
	 * are the stream's and stay in the socket). */
	memcpy(line, c->line, c->line_len);
	n = recv(c->fd, line + c->line_len, VSOCK_LINE_MAX - c->line_len,
	    MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	if (n <= 0)
		goto bad;
	if ((nl = memchr(line + c->line_len, '\n', n)) == NULL) {
		if (c->line_len + n == VSOCK_LINE_MAX)
			goto bad;
		/* No newline yet: every peeked byte is the line's; take
		 * them so the fd stops being readable until more come. */
		if (recv(c->fd, c->line + c->line_len, n, MSG_DONTWAIT) != n)
			goto bad;
		c->line_len += n;
		return;
	}
	len = nl - line + 1;
	/* Consume exactly the rest of the line. */
	if (recv(c->fd, line + c->line_len, len - c->line_len, MSG_DONTWAIT) !=
	    (ssize_t)(len - c->line_len))
		goto bad;
	line[len - 1] = '\0';
	if (len >= 2 && line[len - 2] == '\r')
		line[len - 2] = '\0';
	if (strncmp(line, "CONNECT ", 8) != 0 || line[8] < '0' ||
	    line[8] > '9')
		goto bad;
	errno = 0;
	port = strtoul(line + 8, &end, 10);
	if (*end != '\0' || errno != 0 || port > UINT32_MAX)
		goto bad;

	/* A fresh local port for this stream. */
	do {
		c->local_port = vs->next_port;
		vs->next_port = vs->next_port == VSOCK_PORT_LAST ?
		    VSOCK_PORT_FIRST : vs->next_port + 1;
	} while (conn_find(vs, c->local_port, (uint32_t)port) != NULL);
	c->peer_port = (uint32_t)port;
	c->state = C_REQUEST;
	c->ctl |= CTL_REQUEST;
	conn_hash(c);
	conn_arm(c);
	vsock_rx(vs);
	return;
bad:
	log_debug("vsock: bad CONNECT line from host, closing");
	conn_free(c);
}

static void
conn_io_cb(int fd, short what, void *arg)
{
	struct conn	*c = arg;
	struct vsock	*vs = c->vs;

	(void)fd;
	if ((what & REACTOR_WRITE) && c->state == C_CONNECTING) {
		conn_connected(c);
		vsock_rx(vs);
		return;
	}
	if (what & REACTOR_WRITE) {
		if (conn_flush(c) < 0) {
			conn_reset(c);
			vsock_rx(vs);
			return;
		}
		if (c->state == C_DRAINING && c->olen == 0) {
			conn_free(c);
			return;
		}
		conn_credit_check(c);
		conn_arm(c);
	}
	if (what & REACTOR_READ) {
		if (c->state == C_LINE) {
			conn_read_line(c);
			return;
		}
		c->data_ready = true;
		conn_arm(c);
	}
	vsock_rx(vs);
}

static void
vsock_accept_cb(int fd, short what, void *arg)
{
	struct vsock	*vs = arg;
	struct conn	*c;
	int		 s;

	(void)what;
	while ((s = accept4(fd, NULL, NULL,
	    SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		if (vs->nconns >= VSOCK_MAX_CONNS) {
			log_warnx("vsock: %u streams open, refusing another",
			    vs->nconns);
			close(s);
			continue;
		}
		if ((c = conn_new(vs, s, C_LINE)) == NULL)
			continue;
		conn_timer_start(c);
		conn_arm(c);
	}
	if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
		log_warn("vsock: accept on %s", vs->uds_path);
}

/* The driver's REQUEST for our port hdr.dst_port. */
static void
guest_connect(struct vsock *vs, uint32_t local, uint32_t peer,
    uint32_t buf_alloc, uint32_t fwd_cnt)
{
	struct sockaddr_un	 sa;
	struct conn		*c;
	int			 s, n;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", vs->uds_path,
	    local);
	if (vs->nconns >= VSOCK_MAX_CONNS || n < 0 ||
	    (size_t)n >= sizeof(sa.sun_path)) {
		rst_queue(vs, local, peer);
		return;
	}
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0) {
		log_warn("vsock: socket");
		rst_queue(vs, local, peer);
		return;
	}
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
	    errno != EINPROGRESS && errno != EAGAIN) {
		log_debug("vsock: guest to port %u: %s: %s", local,
		    sa.sun_path, strerror(errno));
		close(s);
		rst_queue(vs, local, peer);
		return;
	}
	if ((c = conn_new(vs, s, C_CONNECTING)) == NULL) {
		rst_queue(vs, local, peer);
		return;
	}
	c->local_port = local;
	c->peer_port = peer;
	c->peer_buf_alloc = buf_alloc;
	c->peer_fwd_cnt = fwd_cnt;
	conn_hash(c);
	/* A Unix connect either completes at once or (backlog full) waits
	 * for writability; check which. */
	conn_connected(c);
	if (c->state == C_CONNECTING)
		conn_arm(c);
}

/* The driver closed its side (SHUTDOWN both ways) or the stream died:
 * RST now, keep flushing what it sent us, then close. */
static void
conn_drain(struct conn *c)
{
	struct vsock	*vs = c->vs;

	rst_queue(vs, c->local_port, c->peer_port);
	if (c->olen == 0 || c->state != C_OPEN) {
		c->state = C_DRAINING;
		conn_free(c);
		return;
	}
	c->state = C_DRAINING;
	c->ctl = 0;
	c->data_ready = false;
	conn_unhash(c);
	conn_timer_start(c);
	conn_arm(c);
}

/* One packet from the driver.  Returns false when the device failed. */
static bool
vsock_tx_packet(struct vsock *vs, const struct virtio_chain *ch)
{
	struct virtio_vsock_hdr	 h;
	struct conn		*c;
	uint32_t		 src, dst, len, flags;
	uint16_t		 op;

	if (ch->nread != ch->nseg || ch->read_len < VSOCK_HDR_LEN) {
		virtio_dev_fail(vs->dev, "tx chain of %u bytes, %u writable "
		    "segments", ch->read_len, ch->nseg - ch->nread);
		return false;
	}
	virtio_chain_read(ch, 0, &h, sizeof(h));
	src = le32toh(h.src_port);
	dst = le32toh(h.dst_port);
	len = le32toh(h.len);
	op = le16toh(h.op);
	flags = le32toh(h.flags);

	/* Nonsense for the stream: reset it (never answer an RST). */
	if (le64toh(h.src_cid) != vs->guest_cid ||
	    le64toh(h.dst_cid) != VSOCK_HOST_CID ||
	    le16toh(h.type) != VIRTIO_VSOCK_TYPE_STREAM ||
	    len > VSOCK_MAX_PKT || len > ch->read_len - VSOCK_HDR_LEN ||
	    (len != 0 && op != VIRTIO_VSOCK_OP_RW)) {
		log_debug("vsock: bad packet %u -> %u (op %u len %u)", src,
		    dst, op, len);
		if ((c = conn_find(vs, dst, src)) != NULL)
			conn_reset(c);
		else if (op != VIRTIO_VSOCK_OP_RST)
			rst_queue(vs, dst, src);
		return true;
	}

	c = conn_find(vs, dst, src);
	if (c == NULL) {
		if (op == VIRTIO_VSOCK_OP_REQUEST)
			guest_connect(vs, dst, src, le32toh(h.buf_alloc),
			    le32toh(h.fwd_cnt));
		else if (op != VIRTIO_VSOCK_OP_RST)
			rst_queue(vs, dst, src);
		return true;
	}
	/* Every packet carries the driver's credit. */
	c->peer_buf_alloc = le32toh(h.buf_alloc);
	c->peer_fwd_cnt = le32toh(h.fwd_cnt);

	switch (op) {
	case VIRTIO_VSOCK_OP_RESPONSE:
		if (c->state != C_REQUEST) {
			conn_reset(c);
			break;
		}
		c->state = C_OPEN;
		conn_timer_stop(c);
		{
			char	ok[24];
			int	k = snprintf(ok, sizeof(ok), "OK %u\n",
				    c->local_port);

			conn_buffer(c, ok, (size_t)k);
			c->oskip = (size_t)k;
		}
		if (conn_flush(c) < 0) {
			conn_reset(c);
			break;
		}
		c->data_ready = true;
		conn_arm(c);
		break;
	case VIRTIO_VSOCK_OP_RST:
		/* No answer to an RST. */
		if (c->state == C_OPEN && c->olen > 0) {
			c->state = C_DRAINING;
			c->ctl = 0;
			conn_unhash(c);
			conn_timer_start(c);
			conn_arm(c);
		} else
			conn_free(c);
		break;
	case VIRTIO_VSOCK_OP_SHUTDOWN:
		if (c->state != C_OPEN) {
			conn_reset(c);
			break;
		}
		if (flags & VIRTIO_VSOCK_SHUTDOWN_RCV)
			c->peer_no_rcv = true;
		if (flags & VIRTIO_VSOCK_SHUTDOWN_SEND)
			c->peer_no_send = true;
		if (c->peer_no_rcv && c->peer_no_send) {
			conn_drain(c);
			break;
		}
		if (conn_flush(c) < 0) {
			conn_reset(c);
			break;
		}
		conn_arm(c);
		break;
	case VIRTIO_VSOCK_OP_RW:
		if (c->state != C_OPEN || c->peer_no_send ||
		    c->olen - c->oskip + len > VSOCK_BUF_ALLOC) {
			/* Not open, or it overran the credit we gave. */
			conn_reset(c);
			break;
		}
		if (conn_take(c, ch, len) < 0) {
			conn_reset(c);
			break;
		}
		conn_credit_check(c);
		conn_arm(c);
		break;
	case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
		conn_arm(c);	/* more credit may wake a reader */
		break;
	case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
		c->ctl |= CTL_CREDIT;
		conn_arm(c);
		break;
	default:
		/* REQUEST on a live stream, unknown ops. */
		conn_reset(c);
		break;
	}
	return true;
}

static void
vsock_tx_once(struct vsock *vs)
{
	struct virtio_queue	*q = virtio_dev_queue(vs->dev, VSOCK_TXQ);
	bool			 pushed = false;

	vs->tx_stalled = false;
	if (!virtio_queue_ready(q))
		return;
	while (!virtio_dev_needs_reset(vs->dev)) {
		if (vs->rst_n >= VSOCK_RST_MAX - 1) {
			/* Owe too many RSTs: let rx catch up first. */
			vs->tx_stalled = true;
			break;
		}
		if (virtio_queue_pop(q, &vs->chain) <= 0)
			break;
		if (!vsock_tx_packet(vs, &vs->chain))
			break;
		virtio_queue_push(q, &vs->chain, 0);
		pushed = true;
	}
	if (pushed)
		virtio_queue_notify_guest(q);
}

static void
vsock_tx(struct vsock *vs)
{
	if (vs->in_tx) {
		vs->tx_again = true;
		return;
	}
	vs->in_tx = true;
	do {
		vs->tx_again = false;
		vsock_tx_once(vs);
	} while (vs->tx_again);
	vs->in_tx = false;
	vsock_rx(vs);
}

static void
vsock_notify(struct virtio_dev *dev, void *priv, unsigned q)
{
	struct vsock	*vs = priv;

	(void)dev;
	switch (q) {
	case VSOCK_RXQ:
		vsock_rx(vs);
		break;
	case VSOCK_TXQ:
		vsock_tx(vs);
		break;
	case VSOCK_EVQ:
		vsock_event(vs);
		break;
	}
}

/* Close every stream (their host sockets too); the listener stays. */
static void
vsock_drop_all(struct vsock *vs)
{
	struct conn	*c;
	unsigned	 i;

	for (i = 0; i < VSOCK_HASH; i++)
		while ((c = LIST_FIRST(&vs->hash[i])) != NULL)
			conn_free(c);
	while ((c = LIST_FIRST(&vs->loose)) != NULL)
		conn_free(c);
	vs->rst_n = vs->rst_head = 0;
	vs->tx_stalled = false;
}

static void
vsock_reset(struct virtio_dev *dev, void *priv)
{
	struct vsock	*vs = priv;

	(void)dev;
	vsock_drop_all(vs);
	vs->event_reset = false;
}

static void
vsock_driver_ok(struct virtio_dev *dev, void *priv)
{
	(void)dev;
	vsock_event(priv);
}

static void
vsock_config_read(struct virtio_dev *dev, void *priv, uint32_t off,
    void *data, uint32_t len)
{
	struct vsock	*vs = priv;
	uint64_t	 cid = htole64(vs->guest_cid);

	(void)dev;
	if (off < sizeof(cid))
		memcpy(data, (uint8_t *)&cid + off,
		    MIN(len, sizeof(cid) - off));
}

#define VSOCK_SAVE_MAGIC	0x314b5356u	/* "VSK1" */

static void
put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

/* The record: magic, cid.  Streams are not saved (see load). */
static int
vsock_save(struct virtio_dev *dev, void *priv, uint8_t **buf, size_t *len)
{
	struct vsock	*vs = priv;
	uint8_t		*p;

	(void)dev;
	*buf = xreallocarray(*buf, *len + 12, 1);
	p = *buf + *len;
	put_le32(p, VSOCK_SAVE_MAGIC);
	put_le32(p + 4, (uint32_t)vs->guest_cid);
	put_le32(p + 8, (uint32_t)(vs->guest_cid >> 32));
	*len += 12;
	return 0;
}

/*
 * Open streams do not survive (their host sockets belong to the saving
 * process): tell the driver with TRANSPORT_RESET (5.10.6.7), which also
 * makes Linux re-read guest_cid, so a clone may run under a new cid.
 */
static int
vsock_load(struct virtio_dev *dev, void *priv, const uint8_t *buf,
    size_t len)
{
	struct vsock	*vs = priv;
	uint32_t	 magic, rnd;

	(void)dev;
	if (len != 12)
		return -EINVAL;
	memcpy(&magic, buf, 4);
	if (le32toh(magic) != VSOCK_SAVE_MAGIC)
		return -EINVAL;
	vsock_drop_all(vs);
	/* The guest may hold streams of the saving machine open a while
	 * after the reset (an application that has not closed them yet):
	 * new host ports must not meet them, and next_port is not in the
	 * record, so start anywhere in the (2^31-wide) range. */
	if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		rnd = (uint32_t)now_ns();
	vs->next_port = VSOCK_PORT_FIRST + rnd % (VSOCK_PORT_LAST -
	    VSOCK_PORT_FIRST);
	vs->event_reset = true;
	vsock_event(vs);
	return 0;
}

static void
vsock_free(void *priv)
{
	struct vsock	*vs = priv;

	vsock_drop_all(vs);
	reactor_del_fd(vs->lrfd);
	close(vs->lfd);
	(void)unlink(vs->uds_path);
	free(vs->uds_path);
	free(vs);
}

static const struct virtio_dev_ops vsock_ops = {
	.name = "vsock",
	.device_id = VIRTIO_ID_VSOCK,
	.nqueues = 3,
	.queue_max = 256,
	.config_size = sizeof(struct virtio_vsock_config),
	.features = 0,		/* stream only: no feature bit needed */
	.notify = vsock_notify,
	.reset = vsock_reset,
	.driver_ok = vsock_driver_ok,
	.config_read = vsock_config_read,
	.save = vsock_save,
	.load = vsock_load,
	.free = vsock_free,
};

/* Listen on path, replacing a stale socket, mode 0600. */
static int
vsock_listen(const char *path)
{
	struct sockaddr_un	sa;
	struct stat		st;
	int			fd, e;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	/* Room for "_<port>" too: guest connections go to path_P. */
	if (strlen(path) + 11 >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sa.sun_path, path);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			errno = EEXIST;
			return -1;
		}
		if (unlink(path) < 0)
			return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* Linux gives the socket file the socket inode's mode: no window
	 * in which others could connect. */
	if (fchmod(fd, 0600) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto err_close;
	if (chmod(path, 0600) < 0 || listen(fd, 128) < 0)
		goto err_unlink;
	return fd;

err_unlink:
	e = errno;
	(void)unlink(path);
	errno = e;
err_close:
	e = errno;
	close(fd);
	errno = e;
	return -1;
}

struct virtio_dev *
virtio_vsock_create(const struct virtio_host *host, uint64_t base,
    uint32_t irq, uint64_t guest_cid, const char *uds_path)
{
	struct vsock	*vs;
	unsigned	 i;
	int		 e;

	if (guest_cid < 3 || guest_cid > 0xfffffffeULL || uds_path == NULL ||
	    *uds_path == '\0') {
		errno = EINVAL;
		return NULL;
	}
	vs = xcalloc(1, sizeof(*vs));
	vs->r = host->r;
	vs->guest_cid = guest_cid;
	vs->next_port = VSOCK_PORT_FIRST;
	vs->uds_path = xstrdup(uds_path);
	for (i = 0; i < VSOCK_HASH; i++)
		LIST_INIT(&vs->hash[i]);
	LIST_INIT(&vs->loose);
	TAILQ_INIT(&vs->pending);

	if ((vs->lfd = vsock_listen(uds_path)) < 0) {
		e = errno;
		log_warn("vsock: listen on %s", uds_path);
		errno = e;
		goto err_free;
	}
	vs->lrfd = reactor_add_fd(host->r, vs->lfd, REACTOR_READ,
	    vsock_accept_cb, vs);
	if (vs->lrfd == NULL)
		goto err_close;
	vs->dev = virtio_mmio_create(host, base, irq, &vsock_ops, vs);
	if (vs->dev == NULL)
		goto err_del;
	return vs->dev;

err_del:
	e = errno;
	reactor_del_fd(vs->lrfd);
	errno = e;
err_close:
	e = errno;
	close(vs->lfd);
	(void)unlink(uds_path);
	errno = e;
err_free:
	free(vs->uds_path);
	free(vs);
	return NULL;
}
