/*
 * Unit test for virtio-vsock (virtio/vsock.c) on the fake hypervisor.
 * The vdrv driver plays the guest's transport and this file plays a
 * small guest socket layer on top of it (accepts REQUESTs on listening
 * ports, consumes RW data, advertises credit like Linux: a small
 * buf_alloc and a CREDIT_UPDATE once half of it was consumed).  Host
 * programs are plain Unix sockets in a temporary directory.  Everything
 * runs on this thread: waits run the reactor and pump the guest.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/virtio_vsock.h>

#include "hv/fake.h"
#include "tests/tap.h"
#include "tests/unit/vdrv.h"
#include "virtio/virtio.h"

#define CID		3
#define RXQ		0
#define TXQ		1
#define EVQ		2
#define HDR		44
#define RX_PAYLOAD	4096
#define NRX		64
#define NTX		32
#define TX_SLOT		(HDR + 65536)
#define G_BUF_ALLOC	(16 * 1024)	/* the guest's small buffer */
#define MAXS		64

/* One stream as the test guest sees it. */
struct gs {
	bool		 used;
	uint32_t	 gport, hport;
	bool		 open, rst, resp;
	uint32_t	 shut;
	uint8_t		*data;		/* received payload */
	size_t		 dlen, dcap;
	uint32_t	 rx_cnt, fwd_cnt, fwd_sent;
	uint32_t	 peer_buf, peer_fwd, tx_cnt;
	bool		 violated;	/* device overran our credit */
};

static struct t {
	struct vdrv_env	 env;
	struct vdrv	 d;
	struct virtio_dev *dev;
	char		 dir[32], uds[48];
	uint64_t	 rxbuf[VDRV_QMAX];	/* by head: GPA of the header */
	uint64_t	 txslot[NTX];
	int		 txhead[NTX];		/* head using the slot or -1 */
	uint64_t	 evbuf;
	bool		 listening[65536];	/* guest ports accepting */
	bool		 blackhole;		/* ignore REQUESTs */
	unsigned	 requests, events, rsts_nostream;
	struct gs	 s[MAXS];
} T;

static void
tx_reap(void)
{
	uint32_t	id;
	unsigned	i;

	while (vdrv_used(&T.d, TXQ, &id, NULL))
		for (i = 0; i < NTX; i++)
			if (T.txhead[i] == (int)id)
				T.txhead[i] = -1;
}

/* Guest sends a raw packet (header fields given) with payload. */
static int
g_send_raw(const struct virtio_vsock_hdr *h, const void *p, uint32_t len)
{
	struct vdrv_buf	b[2];
	unsigned	i;
	int		head;

	tx_reap();
	for (i = 0; i < NTX && T.txhead[i] != -1; i++)
		;
	if (i == NTX)
		return -ENOSPC;
	memcpy(vdrv_ptr(&T.env, T.txslot[i], HDR), h, HDR);
	if (len)
		memcpy(vdrv_ptr(&T.env, T.txslot[i] + HDR, len), p, len);
	b[0] = (struct vdrv_buf){ T.txslot[i], HDR, false };
	b[1] = (struct vdrv_buf){ T.txslot[i] + HDR, len, false };
	head = vdrv_add(&T.d, TXQ, b, len ? 2 : 1, false);
	if (head < 0)
		return head;
	T.txhead[i] = head;
	vdrv_kick(&T.d, TXQ);
	tx_reap();
	return 0;
}

static void
g_hdr(struct virtio_vsock_hdr *h, uint32_t src, uint32_t dst, uint16_t op,
    uint32_t len)
{
	memset(h, 0, sizeof(*h));
	h->src_cid = htole64(CID);
	h->dst_cid = htole64(2);
	h->src_port = htole32(src);
	h->dst_port = htole32(dst);
	h->len = htole32(len);
	h->type = htole16(VIRTIO_VSOCK_TYPE_STREAM);
	h->op = htole16(op);
	h->buf_alloc = htole32(G_BUF_ALLOC);
}

static int
g_send(struct gs *s, uint16_t op, uint32_t flags, const void *p,
    uint32_t len)
{
	struct virtio_vsock_hdr	h;

	g_hdr(&h, s->gport, s->hport, op, len);
	h.flags = htole32(flags);
	h.fwd_cnt = htole32(s->fwd_cnt);
	s->fwd_sent = s->fwd_cnt;
	return g_send_raw(&h, p, len);
}

static struct gs *
gs_find(uint32_t gport, uint32_t hport)
{
	unsigned	i;

	for (i = 0; i < MAXS; i++)
		if (T.s[i].used && T.s[i].gport == gport &&
		    T.s[i].hport == hport)
			return &T.s[i];
	return NULL;
}

static struct gs *
gs_new(uint32_t gport, uint32_t hport)
{
	unsigned	i;

	for (i = 0; i < MAXS; i++)
		if (!T.s[i].used) {
			free(T.s[i].data);
			memset(&T.s[i], 0, sizeof(T.s[i]));
			T.s[i].used = true;
			T.s[i].gport = gport;
			T.s[i].hport = hport;
			return &T.s[i];
		}
	return NULL;
}

static void
rx_post(void)
{
	struct vdrv_buf	b[2];
	uint64_t	gpa;
	int		head;

	gpa = vdrv_alloc(&T.env, HDR + RX_PAYLOAD, 8);
	b[0] = (struct vdrv_buf){ gpa, HDR, true };
	b[1] = (struct vdrv_buf){ gpa + HDR, RX_PAYLOAD, true };
	head = vdrv_add(&T.d, RXQ, b, 2, false);
	if (head >= 0)
		T.rxbuf[head] = gpa;
}

/* Handle one packet the device sent the guest. */
static void
g_packet(const struct virtio_vsock_hdr *h, const uint8_t *p)
{
	uint32_t	 src = le32toh(h->src_port), dst = le32toh(h->dst_port);
	uint32_t	 len = le32toh(h->len);
	uint16_t	 op = le16toh(h->op);
	struct gs	*s = gs_find(dst, src);

	if (s != NULL) {
		s->peer_buf = le32toh(h->buf_alloc);
		s->peer_fwd = le32toh(h->fwd_cnt);
	}
	switch (op) {
	case VIRTIO_VSOCK_OP_REQUEST:
		T.requests++;
		if (T.blackhole)
			break;
		if (s != NULL || !T.listening[dst & 0xffff] ||
		    (s = gs_new(dst, src)) == NULL) {
			struct virtio_vsock_hdr r;

			g_hdr(&r, dst, src, VIRTIO_VSOCK_OP_RST, 0);
			(void)g_send_raw(&r, NULL, 0);
			break;
		}
		s->peer_buf = le32toh(h->buf_alloc);
		s->peer_fwd = le32toh(h->fwd_cnt);
		s->open = true;
		(void)g_send(s, VIRTIO_VSOCK_OP_RESPONSE, 0, NULL, 0);
		break;
	case VIRTIO_VSOCK_OP_RESPONSE:
		if (s != NULL)
			s->resp = s->open = true;
		break;
	case VIRTIO_VSOCK_OP_RST:
		if (s != NULL) {
			s->rst = true;
			s->open = false;
		} else
			T.rsts_nostream++;
		break;
	case VIRTIO_VSOCK_OP_SHUTDOWN:
		if (s != NULL)
			s->shut |= le32toh(h->flags);
		break;
	case VIRTIO_VSOCK_OP_RW:
		if (s == NULL)
			break;
		if (s->rx_cnt + len - s->fwd_sent > G_BUF_ALLOC)
			s->violated = true;
		if (s->dlen + len > s->dcap) {
			s->dcap = MAX(s->dcap * 2, s->dlen + len + 4096);
			s->data = xreallocarray(s->data, s->dcap, 1);
		}
		memcpy(s->data + s->dlen, p, len);
		s->dlen += len;
		s->rx_cnt += len;
		/* The application reads at once; tell the device as Linux
		 * does once free space runs low. */
		s->fwd_cnt += len;
		if (s->fwd_cnt - s->fwd_sent >= G_BUF_ALLOC / 2)
			(void)g_send(s, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 0,
			    NULL, 0);
		break;
	case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
		if (s != NULL)
			(void)g_send(s, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 0,
			    NULL, 0);
		break;
	}
}

/* Take what the device put in the rx and event queues. */
static void
pump(void)
{
	uint32_t	id, len;
	unsigned	n = 0;
	uint8_t		*p;
	struct virtio_vsock_hdr h;

	vdrv_env_poll(&T.env);
	while (vdrv_used(&T.d, RXQ, &id, &len)) {
		if (len >= HDR) {
			p = vdrv_ptr(&T.env, T.rxbuf[id], HDR + RX_PAYLOAD);
			memcpy(&h, p, HDR);
			if (le32toh(h.len) <= len - HDR)
				g_packet(&h, p + HDR);
		}
		rx_post();
		n++;
	}
	if (n)
		vdrv_kick(&T.d, RXQ);
	while (vdrv_used(&T.d, EVQ, &id, &len)) {
		T.events++;
		vdrv_add1(&T.d, EVQ, T.evbuf, 4, true);
	}
	tx_reap();
}

static bool
cond_pump(void *arg)
{
	bool	(*fn)(void) = arg;

	pump();
	return fn();
}

/* Run until fn() holds (pumping the guest meanwhile). */
static bool
wait_for(bool (*fn)(void), unsigned ms)
{
	return vdrv_env_run_until(&T.env, cond_pump, (void *)fn, ms);
}

static int
t_setup(void)
{
	unsigned	i;

	memset(&T, 0, sizeof(T));
	for (i = 0; i < NTX; i++)
		T.txhead[i] = -1;
	if (vdrv_env_init(&T.env, 64 << 20) != 0)
		return -1;
	strcpy(T.dir, "/tmp/vsock_test.XXXXXX");
	if (mkdtemp(T.dir) == NULL)
		return -1;
	snprintf(T.uds, sizeof(T.uds), "%s/v.sock", T.dir);
	T.dev = virtio_vsock_create(&T.env.host, VDRV_BASE(0), VDRV_IRQ(0),
	    CID, T.uds);
	if (T.dev == NULL)
		return -1;
	vdrv_attach(&T.d, &T.env, T.dev, VDRV_BASE(0), VDRV_IRQ(0));
	if (vdrv_start(&T.d, ~0ULL, 128) != 0)
		return -1;
	for (i = 0; i < NTX; i++)
		T.txslot[i] = vdrv_alloc(&T.env, TX_SLOT, 8);
	for (i = 0; i < NRX; i++)
		rx_post();
	vdrv_kick(&T.d, RXQ);
	T.evbuf = vdrv_alloc(&T.env, 4, 4);
	vdrv_add1(&T.d, EVQ, T.evbuf, 4, true);
	vdrv_kick(&T.d, EVQ);
	return 0;
}

static void
t_teardown(void)
{
	char		path[160];
	unsigned	i;

	virtio_dev_free(T.dev);
	vdrv_detach(&T.d);
	vdrv_env_fini(&T.env);
	for (i = 0; i < MAXS; i++)
		free(T.s[i].data);
	for (i = 6000; i < 6010; i++) {
		snprintf(path, sizeof(path), "%s_%u", T.uds, i);
		(void)unlink(path);
	}
	(void)unlink(T.uds);
	(void)rmdir(T.dir);
}

/* --- host side ---------------------------------------------------------- */

static int
host_connect(const char *path)
{
	struct sockaddr_un	sa = { .sun_family = AF_UNIX };
	int			fd;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, O_NONBLOCK);
	return fd;
}

static int
host_listen(unsigned port)
{
	struct sockaddr_un	sa = { .sun_family = AF_UNIX };
	int			fd;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", T.uds, port);
	(void)unlink(sa.sun_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, 8) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Reading host sockets while the reactor runs. */
static struct {
	int	 fd;
	uint8_t	*buf;
	size_t	 want, got;
	bool	 eof;
} H;

static bool
host_read_step(void)
{
	ssize_t	n;

	while (H.got < H.want) {
		n = recv(H.fd, H.buf + H.got, H.want - H.got, MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN)) {
			H.eof = true;
			return true;
		}
		if (n < 0)
			return false;
		H.got += n;
	}
	return true;
}

/* Read exactly want bytes (or to EOF): the count read. */
static size_t
host_read(int fd, void *buf, size_t want, unsigned ms)
{
	H.fd = fd;
	H.buf = buf;
	H.want = want;
	H.got = 0;
	H.eof = false;
	wait_for(host_read_step, ms);
	return H.got;
}

/* Read up to "\n" (one byte at a time: no bytes of the stream taken). */
static int
host_line(int fd, char *line, size_t cap, unsigned ms)
{
	size_t	i;

	for (i = 0; i + 1 < cap; i++) {
		if (host_read(fd, line + i, 1, ms) != 1)
			return -1;
		if (line[i] == '\n') {
			line[i + 1] = '\0';
			return 0;
		}
	}
	return -1;
}

static bool
host_eof_step(void)
{
	char	b;
	ssize_t	n = recv(H.fd, &b, 1, MSG_DONTWAIT);

	return n == 0 || (n < 0 && errno != EAGAIN);
}

static bool
host_sees_eof(int fd, unsigned ms)
{
	H.fd = fd;
	return wait_for(host_eof_step, ms);
}

/* Host program: connect through the device's socket to guest port;
 * returns the fd after "OK", *hport the host-side port. */
static int
host_dial(unsigned port, uint32_t *hport)
{
	char	line[64];
	int	fd;

	if ((fd = host_connect(T.uds)) < 0)
		return -1;
	snprintf(line, sizeof(line), "CONNECT %u\n", port);
	if (write(fd, line, strlen(line)) != (ssize_t)strlen(line) ||
	    host_line(fd, line, sizeof(line), 2000) < 0 ||
	    sscanf(line, "OK %u", hport) != 1) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Guest writes len bytes on s, respecting the device's credit. */
static struct gs *W;
static bool
credit_avail(void)
{
	return W->peer_buf - (W->tx_cnt - W->peer_fwd) > 0 || W->rst;
}

static int
g_write(struct gs *s, const uint8_t *p, size_t len)
{
	uint32_t	credit, n;

	while (len > 0) {
		credit = s->peer_buf - (s->tx_cnt - s->peer_fwd);
		if (credit == 0 || credit > s->peer_buf) {
			W = s;
			if (!wait_for(credit_avail, 3000) || s->rst)
				return -1;
			continue;
		}
		n = MIN(MIN((size_t)credit, len), 16384);
		if (g_send(s, VIRTIO_VSOCK_OP_RW, 0, p, n) < 0)
			return -1;
		s->tx_cnt += n;
		p += n;
		len -= n;
	}
	return 0;
}

static struct gs *Wd;
static size_t Wlen;
static bool
data_arrived(void)
{
	return Wd->dlen >= Wlen || Wd->rst;
}

static bool
g_wait_data(struct gs *s, size_t len, unsigned ms)
{
	Wd = s;
	Wlen = len;
	return wait_for(data_arrived, ms) && s->dlen >= len;
}

static struct gs *Wf;
static bool
flag_rst(void)
{
	return Wf->rst;
}

static bool
flag_resp(void)
{
	return Wf->resp || Wf->rst;
}

/* The stream the guest accepted for host port hport. */
static struct gs *
gs_by_hport(uint32_t hport)
{
	unsigned	i;

	for (i = 0; i < MAXS; i++)
		if (T.s[i].used && T.s[i].hport == hport)
			return &T.s[i];
	return NULL;
}

/* --- cases -------------------------------------------------------------- */

static int
test_host_connect(void)
{
	struct stat	 st;
	struct gs	*s;
	uint32_t	 hport;
	char		 buf[16];
	int		 fd, rc = TAP_FAIL;

	TAP_CHECK(t_setup() == 0);
	TAP_CHECK(stat(T.uds, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    (st.st_mode & 0777) == 0600);
	T.listening[5000] = true;
	fd = host_dial(5000, &hport);
	TAP_CHECK(fd >= 0);
	TAP_CHECK(T.requests == 1 && hport >= 1024);
	s = gs_by_hport(hport);
	TAP_CHECK(s != NULL && s->gport == 5000 && s->open);
	TAP_CHECK(write(fd, "ping", 4) == 4);
	TAP_CHECK(g_wait_data(s, 4, 2000) && memcmp(s->data, "ping", 4) == 0);
	TAP_CHECK(g_write(s, (const uint8_t *)"pong!", 5) == 0);
	TAP_CHECK(host_read(fd, buf, 5, 2000) == 5 &&
	    memcmp(buf, "pong!", 5) == 0);
	/* Host closes: the guest sees the stream end (SHUTDOWN + RST). */
	close(fd);
	Wf = s;
	TAP_CHECK(wait_for(flag_rst, 2000));
	TAP_CHECK(s->shut == (VIRTIO_VSOCK_SHUTDOWN_RCV |
	    VIRTIO_VSOCK_SHUTDOWN_SEND));
	rc = TAP_PASS;
	t_teardown();
	return rc;
}

static bool
flag_shut(void)
{
	return Wf->shut != 0 || Wf->rst;
}

/* Host half-close: the guest hears SHUTDOWN SEND only and can still
 * answer; then the guest's full shutdown closes the host socket. */
static int
test_half_close(void)
{
	struct gs	*s;
	uint32_t	 hport;
	char		 buf[8];
	int		 fd;

	TAP_CHECK(t_setup() == 0);
	T.listening[5000] = true;
	TAP_CHECK((fd = host_dial(5000, &hport)) >= 0);
	s = gs_by_hport(hport);
	TAP_CHECK(s != NULL && write(fd, "req", 3) == 3);
	TAP_CHECK(shutdown(fd, SHUT_WR) == 0);
	Wf = s;
	TAP_CHECK(wait_for(flag_shut, 2000) && !s->rst);
	TAP_CHECK(s->shut == VIRTIO_VSOCK_SHUTDOWN_SEND && s->dlen == 3);
	TAP_CHECK(g_write(s, (const uint8_t *)"reply", 5) == 0);
	TAP_CHECK(g_send(s, VIRTIO_VSOCK_OP_SHUTDOWN, 3, NULL, 0) == 0);
	TAP_CHECK(host_read(fd, buf, 8, 2000) == 5 && H.eof &&
	    memcmp(buf, "reply", 5) == 0);
	TAP_CHECK(wait_for(flag_rst, 2000));
	close(fd);
	t_teardown();
	return TAP_PASS;
}

static void
pattern(uint8_t *p, size_t len, unsigned seed)
{
	size_t	i;

	for (i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 7 + seed + (i >> 12));
}

static int
test_bulk(void)
{
	const size_t	 MB = 1 << 20;
	uint8_t		*src = xmalloc(MB), *dst = xmalloc(MB);
	struct gs	*s;
	uint32_t	 hport;
	size_t		 off = 0;
	ssize_t		 n;
	int		 fd;

	TAP_CHECK(t_setup() == 0);
	T.listening[5001] = true;
	fd = host_dial(5001, &hport);
	TAP_CHECK(fd >= 0 && (s = gs_by_hport(hport)) != NULL);

	/* Host -> guest: 1 MiB through the guest's 16 KiB credit. */
	pattern(src, MB, 1);
	while (off < MB) {
		n = send(fd, src + off, MB - off, MSG_DONTWAIT);
		if (n > 0)
			off += n;
		pump();
	}
	TAP_CHECK(g_wait_data(s, MB, 10000));
	TAP_CHECK(s->dlen == MB && memcmp(s->data, src, MB) == 0);
	TAP_CHECK(!s->violated);

	/* Guest -> host: 1 MiB while the host does not read, so the
	 * device must buffer and then withhold credit. */
	pattern(src, MB, 2);
	{
		size_t	sent = 0, got = 0;

		while (sent < MB) {
			uint32_t c = s->peer_buf - (s->tx_cnt - s->peer_fwd);
			uint32_t k;

			pump();
			if (c == 0 || c > s->peer_buf) {
				/* Credit exhausted: now the host reads. */
				n = recv(fd, dst + got, MB - got,
				    MSG_DONTWAIT);
				if (n > 0)
					got += n;
				continue;
			}
			k = MIN(MIN((size_t)c, MB - sent), 16384);
			TAP_CHECK(g_send(s, VIRTIO_VSOCK_OP_RW, 0,
			    src + sent, k) == 0);
			s->tx_cnt += k;
			sent += k;
			TAP_CHECK(!s->rst);
		}
		TAP_CHECK(host_read(fd, dst + got, MB - got, 10000) ==
		    MB - got);
		TAP_CHECK(memcmp(dst, src, MB) == 0);
	}
	close(fd);
	free(src);
	free(dst);
	t_teardown();
	return TAP_PASS;
}

static int
test_guest_connect(void)
{
	struct gs	*s, *s2;
	char		 buf[16];
	int		 lfd, fd;

	TAP_CHECK(t_setup() == 0);
	TAP_CHECK((lfd = host_listen(6000)) >= 0);
	s = gs_new(40000, 6000);
	TAP_CHECK(g_send(s, VIRTIO_VSOCK_OP_REQUEST, 0, NULL, 0) == 0);
	Wf = s;
	TAP_CHECK(wait_for(flag_resp, 2000) && s->resp && !s->rst);
	TAP_CHECK((fd = accept(lfd, NULL, NULL)) >= 0);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	TAP_CHECK(g_write(s, (const uint8_t *)"hello", 5) == 0);
	TAP_CHECK(host_read(fd, buf, 5, 2000) == 5 &&
	    memcmp(buf, "hello", 5) == 0);
	TAP_CHECK(write(fd, "world", 5) == 5);
	TAP_CHECK(g_wait_data(s, 5, 2000) && memcmp(s->data, "world", 5) == 0);
	/* Guest closes both ways: host sees EOF, guest gets RST. */
	TAP_CHECK(g_send(s, VIRTIO_VSOCK_OP_SHUTDOWN, 3, NULL, 0) == 0);
	TAP_CHECK(host_sees_eof(fd, 2000));
	Wf = s;
	TAP_CHECK(wait_for(flag_rst, 2000));
	close(fd);

	/* Nobody listens on 6001: RST. */
	s2 = gs_new(40001, 6001);
	TAP_CHECK(g_send(s2, VIRTIO_VSOCK_OP_REQUEST, 0, NULL, 0) == 0);
	Wf = s2;
	TAP_CHECK(wait_for(flag_resp, 2000) && s2->rst && !s2->resp);

	/* Guest RST on an open stream: the host socket closes. */
	s = gs_new(40002, 6000);
	TAP_CHECK(g_send(s, VIRTIO_VSOCK_OP_REQUEST, 0, NULL, 0) == 0);
	Wf = s;
	TAP_CHECK(wait_for(flag_resp, 2000) && s->resp);
	TAP_CHECK((fd = accept(lfd, NULL, NULL)) >= 0);
	TAP_CHECK(g_send(s, VIRTIO_VSOCK_OP_RST, 0, NULL, 0) == 0);
	TAP_CHECK(host_sees_eof(fd, 2000));
	close(fd);
	close(lfd);
	t_teardown();
	return TAP_PASS;
}

static int
test_many_streams(void)
{
	enum { N = 20, LEN = 100000 };
	int		 fd[N];
	uint32_t	 hp[N];
	struct gs	*s[N];
	uint8_t		*buf = xmalloc(LEN), *got = xmalloc(LEN);
	unsigned	 i;
	size_t		 off[N] = { 0 };
	bool		 more = true;
	ssize_t		 n;

	TAP_CHECK(t_setup() == 0);
	T.listening[7000] = true;
	for (i = 0; i < N; i++) {
		TAP_CHECK((fd[i] = host_dial(7000, &hp[i])) >= 0);
		TAP_CHECK((s[i] = gs_by_hport(hp[i])) != NULL);
	}
	for (i = 1; i < N; i++)
		TAP_CHECK(hp[i] != hp[0]);
	/* Every host writes its own pattern at once. */
	while (more) {
		more = false;
		for (i = 0; i < N; i++) {
			if (off[i] == LEN)
				continue;
			pattern(buf, LEN, i);
			n = send(fd[i], buf + off[i], LEN - off[i],
			    MSG_DONTWAIT);
			if (n > 0)
				off[i] += n;
			more = more || off[i] < LEN;
		}
		pump();
	}
	for (i = 0; i < N; i++) {
		TAP_CHECK(g_wait_data(s[i], LEN, 5000));
		pattern(buf, LEN, i);
		TAP_CHECK(memcmp(s[i]->data, buf, LEN) == 0 &&
		    !s[i]->violated);
	}
	/* And back, stream by stream. */
	for (i = 0; i < N; i++) {
		pattern(buf, 1000, 100 + i);
		TAP_CHECK(g_write(s[i], buf, 1000) == 0);
	}
	for (i = 0; i < N; i++) {
		pattern(buf, 1000, 100 + i);
		TAP_CHECK(host_read(fd[i], got, 1000, 2000) == 1000 &&
		    memcmp(got, buf, 1000) == 0);
		close(fd[i]);
	}
	free(buf);
	free(got);
	t_teardown();
	return TAP_PASS;
}

static int
test_bad_connect_line(void)
{
	char	 line[64];
	int	 fd;

	TAP_CHECK(t_setup() == 0);
	T.listening[5000] = true;
	/* Malformed line: closed, no OK, no REQUEST. */
	TAP_CHECK((fd = host_connect(T.uds)) >= 0);
	TAP_CHECK(write(fd, "CONNECT x1\n", 11) == 11);
	TAP_CHECK(host_sees_eof(fd, 2000));
	close(fd);
	TAP_CHECK((fd = host_connect(T.uds)) >= 0);
	memset(line, 'A', sizeof(line));
	TAP_CHECK(write(fd, line, sizeof(line)) == sizeof(line));
	TAP_CHECK(host_sees_eof(fd, 2000));
	close(fd);
	TAP_CHECK(T.requests == 0);
	/* Guest not listening: it answers RST, host closed without OK. */
	TAP_CHECK((fd = host_connect(T.uds)) >= 0);
	TAP_CHECK(write(fd, "CONNECT 5999\n", 13) == 13);
	TAP_CHECK(host_line(fd, line, sizeof(line), 2000) < 0 && H.eof);
	close(fd);
	/* Guest silent: closed after the timeout, guest told RST. */
	T.blackhole = true;
	TAP_CHECK((fd = host_connect(T.uds)) >= 0);
	TAP_CHECK(write(fd, "CONNECT 5000\n", 13) == 13);
	TAP_CHECK(host_line(fd, line, sizeof(line), 8000) < 0 && H.eof);
	close(fd);
	TAP_CHECK(T.rsts_nostream >= 1);
	t_teardown();
	return TAP_PASS;
}

static int
test_hostile(void)
{
	struct virtio_vsock_hdr	 h;
	struct gs		*s;
	uint32_t		 hport;
	uint8_t			 junk[16] = { 0 };
	int			 fd, i;

	TAP_CHECK(t_setup() == 0);
	T.listening[5000] = true;
	/* Each kind of nonsense on an open stream: RST, host closed. */
	for (i = 0; i < 5; i++) {
		TAP_CHECK((fd = host_dial(5000, &hport)) >= 0);
		s = gs_by_hport(hport);
		TAP_CHECK(s != NULL);
		g_hdr(&h, s->gport, s->hport, VIRTIO_VSOCK_OP_RW, 0);
		switch (i) {
		case 0:
			h.src_cid = htole64(99);
			break;
		case 1:
			h.dst_cid = htole64(7);
			break;
		case 2:
			h.type = htole16(2);
			break;
		case 3:
			h.len = htole32(100000);	/* more than sent */
			break;
		case 4:
			h.op = htole16(42);
			break;
		}
		TAP_CHECK(g_send_raw(&h, junk, i == 3 ? sizeof(junk) : 0) ==
		    0);
		Wf = s;
		TAP_CHECK(wait_for(flag_rst, 2000));
		TAP_CHECK(host_sees_eof(fd, 2000));
		close(fd);
		s->used = false;
	}
	/* Credit overrun: more than our buf_alloc in flight. */
	TAP_CHECK((fd = host_dial(5000, &hport)) >= 0);
	s = gs_by_hport(hport);
	{
		uint8_t	*big = xcalloc(1, 65536);
		int	 k;

		for (k = 0; k < 8 && !s->rst; k++) {
			(void)g_send(s, VIRTIO_VSOCK_OP_RW, 0, big, 65536);
			pump();
		}
		free(big);
	}
	TAP_CHECK(s->rst);
	close(fd);
	TAP_CHECK(!virtio_dev_needs_reset(T.dev));

	/* A chain too short for a header: the device needs a reset. */
	{
		int	head;

		memset(vdrv_ptr(&T.env, T.txslot[0], 8), 0, 8);
		head = vdrv_add1(&T.d, TXQ, T.txslot[0], 8, false);
		TAP_CHECK(head >= 0);
		vdrv_kick(&T.d, TXQ);
		TAP_CHECK(virtio_dev_needs_reset(T.dev));
	}
	/* Reset and bring up again: the device serves new streams. */
	for (i = 0; i < MAXS; i++)
		T.s[i].used = false;
	for (i = 0; i < NTX; i++)
		T.txhead[i] = -1;
	TAP_CHECK(vdrv_start(&T.d, ~0ULL, 128) == 0);
	for (i = 0; i < NRX; i++)
		rx_post();
	vdrv_kick(&T.d, RXQ);
	TAP_CHECK((fd = host_dial(5000, &hport)) >= 0);
	s = gs_by_hport(hport);
	TAP_CHECK(s != NULL && write(fd, "ok", 2) == 2);
	TAP_CHECK(g_wait_data(s, 2, 2000));
	close(fd);
	t_teardown();
	return TAP_PASS;
}

static bool
event_seen(void)
{
	return T.events > 0;
}

static int
test_save_load(void)
{
	uint8_t		*buf = NULL;
	size_t		 len = 0;
	uint64_t	 cid = 0;
	uint32_t	 hport;
	struct gs	*s;
	int		 fd, fd2;

	TAP_CHECK(t_setup() == 0);
	vdrv_config_read(&T.d, 0, &cid, 8);
	TAP_CHECK(le64toh(cid) == CID);
	T.listening[5000] = true;
	TAP_CHECK((fd = host_dial(5000, &hport)) >= 0);
	TAP_CHECK(virtio_dev_save(T.dev, &buf, &len) == 0);
	TAP_CHECK(virtio_dev_load(T.dev, buf, len) == 0);
	free(buf);
	/* Open streams are dropped; the driver hears TRANSPORT_RESET. */
	TAP_CHECK(wait_for(event_seen, 2000));
	TAP_CHECK(le32toh(*(uint32_t *)vdrv_ptr(&T.env, T.evbuf, 4)) ==
	    VIRTIO_VSOCK_EVENT_TRANSPORT_RESET);
	TAP_CHECK(host_sees_eof(fd, 2000));
	close(fd);
	/* The listener survived. */
	TAP_CHECK((fd2 = host_dial(5000, &hport)) >= 0);
	s = gs_by_hport(hport);
	TAP_CHECK(s != NULL && write(fd2, "x", 1) == 1);
	TAP_CHECK(g_wait_data(s, 1, 2000));
	close(fd2);
	/* A truncated record is refused. */
	buf = NULL;
	len = 0;
	TAP_CHECK(virtio_dev_save(T.dev, &buf, &len) == 0);
	TAP_CHECK(virtio_dev_load(T.dev, buf, len - 1) < 0);
	free(buf);
	t_teardown();
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "host CONNECT, OK, data both ways, host close", test_host_connect },
	{ "host half-close, guest replies, guest shutdown", test_half_close },
	{ "1 MiB each way through credit limits", test_bulk },
	{ "guest connects to <uds>_P, refused port, RST", test_guest_connect },
	{ "20 concurrent streams", test_many_streams },
	{ "bad CONNECT line, refusal, timeout", test_bad_connect_line },
	{ "hostile headers: RST, NEEDS_RESET, recovery", test_hostile },
	{ "save/load: TRANSPORT_RESET, listener kept", test_save_load },
};

int
main(void)
{
	log_init("vsock_test", LOG_QUIET);
	return tap_run(cases, ARRAY_SIZE(cases), 60);
}
