/*
 * One test per virtio device, on top of the polled driver in virtio.c.
 * Device facts are from virtio 1.2 section 5 (rng 5.4, blk 5.2, console
 * 5.3, balloon 5.5, vsock 5.10).  Each test prints what it checks,
 * prefixed with the device's short name, and fails with a reason.
 */
#include "testguest.h"

#define ID_BLOCK		2
#define ID_CONSOLE		3
#define ID_RNG			4
#define ID_BALLOON		5
#define ID_VSOCK		19

#define IO_WAIT			(5 * TSC_SECOND)

/* rng */
#define RNG_BYTES		64

/* blk */
#define BLK_F_RO		5
#define BLK_F_BLK_SIZE		6
#define BLK_F_FLUSH		9
#define BLK_T_IN		0
#define BLK_T_OUT		1
#define BLK_T_FLUSH		4
#define BLK_T_GET_ID		8
#define BLK_S_OK		0
#define BLK_S_IOERR		1
#define BLK_S_UNSUPP		2
#define BLK_SECTOR		512
#define BLK_ID_BYTES		20
#define BLK_CFG_CAPACITY	0
#define BLK_CFG_BLK_SIZE	20
#define BLK_WRITE_SECTOR	1

/* console */
#define CONSOLE_F_SIZE		0
#define CONSOLE_RXQ		0
#define CONSOLE_TXQ		1
#define CONSOLE_TEXT		"hvc: hello from the test guest\n"

/* balloon */
#define BALLOON_INFLATEQ	0
#define BALLOON_DEFLATEQ	1
#define BALLOON_CFG_NUM_PAGES	0
#define BALLOON_CFG_ACTUAL	4
#define BALLOON_PFN_SHIFT	12
#define BALLOON_BATCH		256		/* PFNs per chain, as Linux */
#define BALLOON_FLOOR		(64ULL << 20)	/* pages handed out from here */
#define BALLOON_MAX		(1U << 20)	/* 4 GiB of pages */

/* vsock */
#define VSOCK_RXQ		0
#define VSOCK_TXQ		1
#define VSOCK_EVQ		2
#define VSOCK_CFG_CID		0
#define VSOCK_HOST_CID		2
#define VSOCK_TYPE_STREAM	1
#define VSOCK_OP_REQUEST	1
#define VSOCK_OP_RESPONSE	2
#define VSOCK_OP_RST		3
#define VSOCK_OP_SHUTDOWN	4
#define VSOCK_OP_RW		5
#define VSOCK_OP_CREDIT_UPDATE	6
#define VSOCK_OP_CREDIT_REQUEST	7
#define VSOCK_SHUTDOWN_BOTH	3
#define VSOCK_BUF_ALLOC		(64 * 1024)
#define VSOCK_PAYLOAD		4096	/* per rx buffer after the header */
#define VSOCK_RX_BUFS		4
#define VSOCK_GUEST_PORT	50000
#define VSOCK_DEFAULT_PORT	1234
#define VSOCK_MAX_PACKETS	64
#define VSOCK_TEXT		"ping from guest\n"
#define VSOCK_LISTEN_WAIT	(30 * TSC_SECOND)

static uint64_t vsock_port = VSOCK_DEFAULT_PORT;
static uint64_t balloon_wait = 1;	/* seconds */

int
vdev_option(const char *word)
{
	if (strncmp(word, "virtio_mmio.device=", 19) == 0) {
		vdev_declare(word + 19);
		return 1;
	}
	if (strncmp(word, "vsock-port=", 11) == 0) {
		if (parse_u64(word + 11, &vsock_port) != 0 ||
		    vsock_port > UINT32_MAX)
			tg_fail("bad port in '%s'", word);
		return 1;
	}
	if (strncmp(word, "balloon-wait=", 13) == 0) {
		if (parse_u64(word + 13, &balloon_wait) != 0 ||
		    balloon_wait > 600)
			tg_fail("bad seconds in '%s' (0-600)", word);
		return 1;
	}
	return 0;
}

/* Prints up to 200 bytes of device text, '.' for anything unprintable
 * and without the trailing newline. */
static void
print_text(const char *prefix, const uint8_t *p, uint32_t len)
{
	uint32_t i;

	if (len > 0 && p[len - 1] == '\n')
		len--;
	tg_printf("%s", prefix);
	for (i = 0; i < len && i < 200; i++)
		uart_putc(p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '.');
	uart_putc('\n');
}

/*
 * virtio-rng: two reads of 64 bytes (the second through an indirect
 * table when the device offers one); the bytes must look random enough to
 * catch a device that returns nothing, zeroes or a constant.
 */
static void
rng_read(struct vdev *d, struct vq *q, uint8_t *buf, int indirect,
    const char *what)
{
	struct vseg s;
	uint32_t got = 0, len;
	unsigned tries;

	for (tries = 0; got < RNG_BYTES && tries < RNG_BYTES; tries++) {
		s.addr = buf + got;
		s.len = RNG_BYTES - got;
		s.write = 1;
		if (vq_add(q, &s, 1, indirect, NULL) < 0)
			tg_fail("rng: queue full");
		vq_kick(d, q);
		(void)vq_wait(d, q, &len, IO_WAIT, what);
		if (len > RNG_BYTES - got)
			tg_fail("rng: device wrote %u bytes into a %u-byte "
			    "buffer", len, RNG_BYTES - got);
		got += len;
	}
	if (got < RNG_BYTES)
		tg_fail("rng: only %u of %u bytes after %u requests", got,
		    RNG_BYTES, tries);
	tg_printf("rng: %s: %u bytes in %u request(s)%s, first 8: "
	    "%02x%02x%02x%02x%02x%02x%02x%02x\n", what, got, tries,
	    indirect ? " (indirect)" : "", buf[0], buf[1], buf[2], buf[3],
	    buf[4], buf[5], buf[6], buf[7]);
}

static void
rng_check(const uint8_t *b, const char *what)
{
	unsigned i, same = 1, zero = 1;

	for (i = 0; i < RNG_BYTES; i++) {
		same &= b[i] == b[0];
		zero &= b[i] == 0;
	}
	if (zero)
		tg_fail("rng: %s is all zero", what);
	if (same)
		tg_fail("rng: %s is 64 times 0x%02x", what, b[0]);
}

void
test_virtio_rng(const char *arg)
{
	struct vdev d;
	struct vq *q;
	uint8_t *a, *b;

	(void)arg;
	vdev_open(&d, ID_RNG, "rng", VBIT(VIRTIO_F_INDIRECT_DESC));
	q = vdev_queue(&d, 0);
	vdev_driver_ok(&d);
	a = vmem_alloc(RNG_BYTES, 64);
	b = vmem_alloc(RNG_BYTES, 64);
	rng_read(&d, q, a, 0, "first read");
	rng_read(&d, q, b, vdev_has(&d, VIRTIO_F_INDIRECT_DESC),
	    "second read");
	rng_check(a, "first read");
	rng_check(b, "second read");
	if (memcmp(a, b, RNG_BYTES) == 0)
		tg_fail("rng: the two reads returned the same 64 bytes");
	tg_printf("rng: reads differ, not zero, not constant: ok\n");
	vdev_close(&d);
}

/*
 * virtio-blk: capacity, GET_ID, checksums of the first and last sector
 * for the host to compare with the file, then a write/flush/read-back of
 * sector 1 (or, read-only, a write that must fail with IOERR).
 */
struct blk {
	struct vdev	 d;
	struct vq	*q;
	struct {
		uint32_t	type;
		uint32_t	reserved;
		uint64_t	sector;
	}		*hdr;
	uint8_t		*status;
	int		 indirect;
};

/* One request; returns the status byte, *written the used length. */
static uint8_t
blk_req(struct blk *b, uint32_t type, uint64_t sector, void *buf,
    uint32_t len, int indirect, uint32_t *written, const char *what)
{
	struct vseg s[3];
	unsigned n = 0;

	b->hdr->type = type;
	b->hdr->reserved = 0;
	b->hdr->sector = sector;
	*b->status = 0xff;	/* not a status: shows an unwritten byte */
	s[n].addr = b->hdr;
	s[n].len = sizeof(*b->hdr);
	s[n++].write = 0;
	if (len > 0) {
		s[n].addr = buf;
		s[n].len = len;
		s[n++].write = type != BLK_T_OUT;
	}
	s[n].addr = b->status;
	s[n].len = 1;
	s[n++].write = 1;
	if (vq_add(b->q, s, n, indirect && b->indirect, NULL) < 0)
		tg_fail("blk: queue full");
	vq_kick(&b->d, b->q);
	(void)vq_wait(&b->d, b->q, written, IO_WAIT, what);
	if (*b->status == 0xff)
		tg_fail("blk: device did not write the status byte %s", what);
	return *b->status;
}

/* Position-weighted byte sum: sum of byte[i] * (i + 1), i from 0.  The
 * host computes the same with od + awk (README.md). */
static uint32_t
blk_sum(const uint8_t *p)
{
	uint32_t s = 0, i;

	for (i = 0; i < BLK_SECTOR; i++)
		s += (uint32_t)p[i] * (i + 1);
	return s;
}

static void
blk_read(struct blk *b, uint64_t sector, uint8_t *buf, int indirect)
{
	uint32_t written;
	uint8_t st;

	st = blk_req(b, BLK_T_IN, sector, buf, BLK_SECTOR, indirect, &written,
	    "reading a sector");
	if (st != BLK_S_OK)
		tg_fail("blk: read of sector %lu: status %u", sector, st);
	if (written < BLK_SECTOR + 1)
		tg_fail("blk: read of sector %lu: used length %u, want %u "
		    "(data + status)", sector, written, BLK_SECTOR + 1);
}

static void
blk_test(int ro)
{
	struct blk b;
	uint8_t *buf, *pat, *id, st;
	uint64_t cap, last;
	uint32_t written, i;

	memset(&b, 0, sizeof(b));
	vdev_open(&b.d, ID_BLOCK, "blk", VBIT(BLK_F_RO) | VBIT(BLK_F_FLUSH) |
	    VBIT(BLK_F_BLK_SIZE) | VBIT(VIRTIO_F_INDIRECT_DESC));
	b.q = vdev_queue(&b.d, 0);
	vdev_driver_ok(&b.d);
	b.indirect = vdev_has(&b.d, VIRTIO_F_INDIRECT_DESC);
	b.hdr = vmem_alloc(sizeof(*b.hdr), 16);
	b.status = vmem_alloc(1, 1);
	buf = vmem_alloc(BLK_SECTOR, 512);
	pat = vmem_alloc(BLK_SECTOR, 512);
	id = vmem_alloc(BLK_ID_BYTES + 1, 8);

	cap = vdev_cfg64(&b.d, BLK_CFG_CAPACITY);
	tg_printf("blk: capacity %lu sectors, %s, flush %s", cap,
	    vdev_has(&b.d, BLK_F_RO) ? "read-only" : "writable",
	    vdev_has(&b.d, BLK_F_FLUSH) ? "yes" : "no");
	if (vdev_has(&b.d, BLK_F_BLK_SIZE))
		tg_printf(", blk_size %u", vdev_cfg32(&b.d, BLK_CFG_BLK_SIZE));
	uart_putc('\n');
	if (cap < 2)
		tg_fail("blk: capacity %lu sectors, need at least 2", cap);

	st = blk_req(&b, BLK_T_GET_ID, 0, id, BLK_ID_BYTES, 0, &written,
	    "on GET_ID");
	if (st != BLK_S_OK)
		tg_fail("blk: GET_ID status %u", st);
	if (id[0] == '\0')
		tg_printf("blk: id (empty)\n");
	else
		print_text("blk: id ", id, (uint32_t)strlen((char *)id));

	blk_read(&b, 0, buf, 0);
	tg_printf("blk: sector0 sum=0x%08x\n", blk_sum(buf));
	last = cap - 1;
	blk_read(&b, last, buf, 1);
	tg_printf("blk: sector%lu sum=0x%08x%s\n", last, blk_sum(buf),
	    b.indirect ? " (indirect)" : "");

	/* "blk-write 1\n" then zeroes. */
	memcpy(pat, "blk-write 1\n", 12);
	if (ro) {
		if (!vdev_has(&b.d, BLK_F_RO))
			tg_fail("blk: device does not offer VIRTIO_BLK_F_RO");
		blk_read(&b, BLK_WRITE_SECTOR, buf, 0);
		st = blk_req(&b, BLK_T_OUT, BLK_WRITE_SECTOR, pat, BLK_SECTOR,
		    0, &written, "on a write");
		if (st != BLK_S_IOERR)
			tg_fail("blk: write to a read-only disk: status %u, "
			    "want IOERR (%u)", st, BLK_S_IOERR);
		blk_read(&b, BLK_WRITE_SECTOR, pat, 0);
		if (memcmp(buf, pat, BLK_SECTOR) != 0)
			tg_fail("blk: sector 1 changed after a refused write");
		tg_printf("blk: write refused with IOERR, sector 1 "
		    "unchanged: ok\n");
		vdev_close(&b.d);
		return;
	}
	if (vdev_has(&b.d, BLK_F_RO))
		tg_fail("blk: device is read-only (VIRTIO_BLK_F_RO); "
		    "use virtio-blk-ro");
	st = blk_req(&b, BLK_T_OUT, BLK_WRITE_SECTOR, pat, BLK_SECTOR, 1,
	    &written, "on a write");
	if (st != BLK_S_OK)
		tg_fail("blk: write of sector 1: status %u", st);
	if (vdev_has(&b.d, BLK_F_FLUSH)) {
		st = blk_req(&b, BLK_T_FLUSH, 0, NULL, 0, 0, &written,
		    "on FLUSH");
		if (st != BLK_S_OK)
			tg_fail("blk: FLUSH status %u", st);
	}
	blk_read(&b, BLK_WRITE_SECTOR, buf, 0);
	for (i = 0; i < BLK_SECTOR && buf[i] == pat[i]; i++)
		;
	if (i < BLK_SECTOR)
		tg_fail("blk: sector 1 reads back 0x%02x at byte %u, wrote "
		    "0x%02x", buf[i], i, pat[i]);
	tg_printf("blk: wrote sector 1%s, read back: ok\n",
	    vdev_has(&b.d, BLK_F_FLUSH) ? ", flushed" : " (no FLUSH feature)");
	vdev_close(&b.d);
}

void
test_virtio_blk(const char *arg)
{
	(void)arg;
	blk_test(0);
}

void
test_virtio_blk_ro(const char *arg)
{
	(void)arg;
	blk_test(1);
}

/* virtio-console: one line on port 0's transmit queue (no MULTIPORT). */
void
test_virtio_console(const char *arg)
{
	struct vdev d;
	struct vq *tx;
	struct vseg s;
	uint32_t len;
	char *text;

	(void)arg;
	vdev_open(&d, ID_CONSOLE, "console", VBIT(CONSOLE_F_SIZE));
	(void)vdev_queue(&d, CONSOLE_RXQ);
	tx = vdev_queue(&d, CONSOLE_TXQ);
	vdev_driver_ok(&d);
	if (vdev_has(&d, CONSOLE_F_SIZE))
		tg_printf("console: %u columns, %u rows\n", vdev_cfg16(&d, 0),
		    vdev_cfg16(&d, 2));
	text = vmem_alloc(sizeof(CONSOLE_TEXT), 8);
	memcpy(text, CONSOLE_TEXT, sizeof(CONSOLE_TEXT));
	s.addr = text;
	s.len = sizeof(CONSOLE_TEXT) - 1;
	s.write = 0;
	if (vq_add(tx, &s, 1, 0, NULL) < 0)
		tg_fail("console: queue full");
	vq_kick(&d, tx);
	(void)vq_wait(&d, tx, &len, IO_WAIT, "on the transmit queue");
	tg_printf("console: sent %u bytes on the transmit queue: ok\n", s.len);
	vdev_close(&d);
}

/*
 * virtio-balloon: hand the device as many free pages as it asks for (the
 * PFNs of RAM from 64 MiB up), report them in `actual`, then watch the
 * target for a while and follow one change.
 */
struct balloon {
	struct vdev	 d;
	struct vq	*inflate, *deflate;
	uint32_t	*pfns;
	uint32_t	 actual;
};

/* The n-th free page from BALLOON_FLOOR up, in RAM; 0 if beyond RAM. */
static uint64_t
balloon_pfn(uint32_t n)
{
	const struct hvm_start_info *si = tg_start_info();
	const struct hvm_memmap_entry *e = phys(si->memmap_paddr);
	uint64_t start, end, pages, left = n;
	uint32_t i;

	for (i = 0; i < si->memmap_entries; i++) {
		if (e[i].type != HVM_MEMMAP_RAM)
			continue;
		start = e[i].addr;
		end = e[i].addr + e[i].size;
		if (start < BALLOON_FLOOR)
			start = BALLOON_FLOOR;
		if (end > 0x100000000ULL)
			end = 0x100000000ULL;
		start = (start + 4095) >> BALLOON_PFN_SHIFT;
		end >>= BALLOON_PFN_SHIFT;
		if (end <= start)
			continue;
		pages = end - start;
		if (left < pages)
			return start + left;
		left -= pages;
	}
	return 0;
}

/* Sends pages [from, to) on q, BALLOON_BATCH PFNs per chain. */
static void
balloon_send(struct balloon *b, struct vq *q, uint32_t from, uint32_t to,
    const char *what)
{
	struct vseg s;
	uint32_t n, len;
	uint64_t pfn;

	while (from < to) {
		for (n = 0; n < BALLOON_BATCH && from < to; n++, from++) {
			pfn = balloon_pfn(from);
			if (pfn == 0 || pfn > UINT32_MAX)
				tg_fail("balloon: the target needs page %u "
				    "above 64 MiB and there is no such RAM",
				    from);
			b->pfns[n] = (uint32_t)pfn;
		}
		s.addr = b->pfns;
		s.len = n * sizeof(uint32_t);
		s.write = 0;
		if (vq_add(q, &s, 1, 0, NULL) < 0)
			tg_fail("balloon: queue full");
		vq_kick(&b->d, q);
		(void)vq_wait(&b->d, q, &len, IO_WAIT, what);
	}
}

static void
balloon_follow(struct balloon *b, uint32_t target)
{
	if (target > BALLOON_MAX)
		tg_fail("balloon: target %u pages is beyond 4 GiB", target);
	if (target > b->actual)
		balloon_send(b, b->inflate, b->actual, target,
		    "on the inflate queue");
	else if (target < b->actual)
		balloon_send(b, b->deflate, target, b->actual,
		    "on the deflate queue");
	b->actual = target;
	vdev_cfg_write32(&b->d, BALLOON_CFG_ACTUAL, target);
}

void
test_virtio_balloon(const char *arg)
{
	struct balloon b;
	uint64_t start;
	uint32_t target, now;
	unsigned long spins = 0;


	(void)arg;
	memset(&b, 0, sizeof(b));
	vdev_open(&b.d, ID_BALLOON, "balloon", 0);
	b.inflate = vdev_queue(&b.d, BALLOON_INFLATEQ);
	b.deflate = vdev_queue(&b.d, BALLOON_DEFLATEQ);
	vdev_driver_ok(&b.d);
	b.pfns = vmem_alloc(BALLOON_BATCH * sizeof(uint32_t), 64);

	target = vdev_cfg32(&b.d, BALLOON_CFG_NUM_PAGES);
	tg_printf("balloon: target %u pages, actual %u\n", target,
	    vdev_cfg32(&b.d, BALLOON_CFG_ACTUAL));
	balloon_follow(&b, target);
	if (vdev_cfg32(&b.d, BALLOON_CFG_ACTUAL) != target)
		tg_fail("balloon: actual reads %u after writing %u",
		    vdev_cfg32(&b.d, BALLOON_CFG_ACTUAL), target);
	tg_printf("balloon: inflated %u pages\n", target);
	now = target;

	/* Config reads are exits: look only every few thousand spins. */
	start = rdtsc();
	while (rdtsc() - start < balloon_wait * TSC_SECOND) {
		cpu_relax();
		if (++spins % 4096 != 0)
			continue;
		now = vdev_cfg32(&b.d, BALLOON_CFG_NUM_PAGES);
		if (now == target)
			continue;
		b.d.isr_seen |= vdev_irq_ack(&b.d);
		tg_printf("balloon: new target %u pages\n", now);
		balloon_follow(&b, now);
		tg_printf("balloon: actual %u pages%s\n", now,
		    b.d.isr_seen & VIRTIO_INT_CONFIG ?
		    " (config interrupt seen)" : "");
		break;
	}
	if (now == target)
		tg_printf("balloon: no new target within %lu s\n",
		    balloon_wait);
	vdev_close(&b.d);
}

/*
 * virtio-vsock: a stream connection to the host, one packet at a time.
 * Every packet we send carries our receive credit (buf_alloc, fwd_cnt,
 * section 5.10.6.3); we answer CREDIT_REQUEST and ignore packets for
 * other connections.
 */

struct vsock {
	struct vdev	 d;
	struct vq	*rx, *tx;
	uint64_t	 cid, peer_cid;
	uint32_t	 port, peer_port;
	uint32_t	 fwd_cnt;	/* payload bytes we consumed */
	uint32_t	 tx_cnt;	/* payload bytes we sent */
	uint32_t	 peer_buf_alloc, peer_fwd_cnt;
	int		 indirect;
	struct vsock_hdr *thdr;
	uint8_t		*tpay;
	/* The last packet received, copied out of its rx buffer. */
	struct vsock_hdr rhdr;
	uint8_t		 rpay[VSOCK_PAYLOAD];
	uint32_t	 rlen;
};

/* Static: the copied-out packet makes it too big for the stack. */
static struct vsock vsock_state;

static void
vsock_post_rx(struct vsock *v, uint8_t *buf)
{
	struct vseg s;

	s.addr = buf;
	s.len = sizeof(struct vsock_hdr) + VSOCK_PAYLOAD;
	s.write = 1;
	if (vq_add(v->rx, &s, 1, 0, buf) < 0)
		tg_fail("vsock: rx queue full");
}

static void
vsock_send(struct vsock *v, uint16_t op, uint32_t flags, const void *data,
    uint32_t len)
{
	struct vseg s[2];
	uint32_t used;

	memset(v->thdr, 0, sizeof(*v->thdr));
	v->thdr->src_cid = v->cid;
	v->thdr->dst_cid = v->peer_cid;
	v->thdr->src_port = v->port;
	v->thdr->dst_port = v->peer_port;
	v->thdr->len = len;
	v->thdr->type = VSOCK_TYPE_STREAM;
	v->thdr->op = op;
	v->thdr->flags = flags;
	v->thdr->buf_alloc = VSOCK_BUF_ALLOC;
	v->thdr->fwd_cnt = v->fwd_cnt;
	s[0].addr = v->thdr;
	s[0].len = sizeof(*v->thdr);
	s[0].write = 0;
	if (len > 0) {
		memcpy(v->tpay, data, len);
		s[1].addr = v->tpay;
		s[1].len = len;
		s[1].write = 0;
	}
	/* Data packets go through an indirect table when we have one. */
	if (vq_add(v->tx, s, len > 0 ? 2 : 1, len > 0 && v->indirect,
	    NULL) < 0)
		tg_fail("vsock: tx queue full");
	vq_kick(&v->d, v->tx);
	(void)vq_wait(&v->d, v->tx, &used, IO_WAIT, "on the tx queue");
	v->tx_cnt += len;
}

/* Waits for the next packet of our connection into v->rhdr/rpay. */
static void
vsock_recv(struct vsock *v, uint64_t cycles, const char *what)
{
	uint8_t *buf;
	uint32_t len;
	unsigned n;

	for (n = 0; n < VSOCK_MAX_PACKETS; n++) {
		buf = vq_wait(&v->d, v->rx, &len, cycles, what);
		if (len < sizeof(struct vsock_hdr))
			tg_fail("vsock: rx packet of %u bytes, shorter than "
			    "the header", len);
		memcpy(&v->rhdr, buf, sizeof(v->rhdr));
		v->rlen = len - (uint32_t)sizeof(struct vsock_hdr);
		if (v->rhdr.len != v->rlen)
			tg_fail("vsock: header says %u payload bytes, used "
			    "length says %u", v->rhdr.len, v->rlen);
		memcpy(v->rpay, buf + sizeof(struct vsock_hdr), v->rlen);
		vsock_post_rx(v, buf);
		vq_kick(&v->d, v->rx);
		if (v->rhdr.dst_cid != v->cid)
			tg_fail("vsock: packet for cid %lu, we are %lu",
			    v->rhdr.dst_cid, v->cid);
		if (v->rhdr.type != VSOCK_TYPE_STREAM)
			tg_fail("vsock: packet type %u, want STREAM",
			    v->rhdr.type);
		/* A listener learns its peer from the REQUEST. */
		if (v->peer_port != 0 && (v->rhdr.src_cid != v->peer_cid ||
		    v->rhdr.src_port != v->peer_port ||
		    v->rhdr.dst_port != v->port)) {
			tg_printf("vsock: ignoring op %u from %lu:%u to "
			    "port %u\n", v->rhdr.op, v->rhdr.src_cid,
			    v->rhdr.src_port, v->rhdr.dst_port);
			continue;
		}
		v->peer_buf_alloc = v->rhdr.buf_alloc;
		v->peer_fwd_cnt = v->rhdr.fwd_cnt;
		if (v->rhdr.op == VSOCK_OP_CREDIT_UPDATE)
			continue;
		if (v->rhdr.op == VSOCK_OP_CREDIT_REQUEST) {
			vsock_send(v, VSOCK_OP_CREDIT_UPDATE, 0, NULL, 0);
			continue;
		}
		return;
	}
	tg_fail("vsock: %u packets without progress %s", n, what);
}

static void
vsock_open(struct vsock *v, uint32_t port)
{
	uint8_t *buf;
	uint32_t *ev;
	struct vseg s;
	unsigned i;

	memset(v, 0, sizeof(*v));
	vdev_open(&v->d, ID_VSOCK, "vsock", VBIT(VIRTIO_F_INDIRECT_DESC));
	v->rx = vdev_queue(&v->d, VSOCK_RXQ);
	v->tx = vdev_queue(&v->d, VSOCK_TXQ);
	(void)vdev_queue(&v->d, VSOCK_EVQ);
	v->indirect = vdev_has(&v->d, VIRTIO_F_INDIRECT_DESC);
	v->cid = vdev_cfg64(&v->d, VSOCK_CFG_CID);
	v->port = port;
	v->thdr = vmem_alloc(sizeof(*v->thdr), 64);
	v->tpay = vmem_alloc(VSOCK_PAYLOAD, 64);
	vdev_driver_ok(&v->d);
	/* Linux posts receive and event buffers before anything else. */
	for (i = 0; i < VSOCK_RX_BUFS; i++) {
		buf = vmem_alloc(sizeof(struct vsock_hdr) + VSOCK_PAYLOAD, 64);
		vsock_post_rx(v, buf);
	}
	vq_kick(&v->d, v->rx);
	ev = vmem_alloc(sizeof(*ev), 8);
	s.addr = ev;
	s.len = sizeof(*ev);
	s.write = 1;
	if (vq_add(&v->d.q[VSOCK_EVQ], &s, 1, 0, NULL) < 0)
		tg_fail("vsock: event queue full");
	vq_kick(&v->d, &v->d.q[VSOCK_EVQ]);
	tg_printf("vsock: guest cid %lu, %u rx buffers posted\n", v->cid,
	    VSOCK_RX_BUFS);
	if (v->cid < 3 || v->cid > UINT32_MAX)
		tg_fail("vsock: guest cid %lu is reserved or too large",
		    v->cid);
}

/* Connects to the host's vsock-port=P, exchanges one line, shuts down. */
void
test_virtio_vsock(const char *arg)
{
	struct vsock *v = &vsock_state;

	(void)arg;
	vsock_open(v, VSOCK_GUEST_PORT);
	v->peer_cid = VSOCK_HOST_CID;
	v->peer_port = (uint32_t)vsock_port;
	tg_printf("vsock: connecting %lu:%u -> %u:%u\n", v->cid, v->port,
	    VSOCK_HOST_CID, v->peer_port);
	vsock_send(v, VSOCK_OP_REQUEST, 0, NULL, 0);
	vsock_recv(v, IO_WAIT, "waiting for RESPONSE");
	if (v->rhdr.op == VSOCK_OP_RST)
		tg_fail("vsock: connection to host port %u refused (RST)",
		    v->peer_port);
	if (v->rhdr.op != VSOCK_OP_RESPONSE)
		tg_fail("vsock: op %u in answer to REQUEST, want RESPONSE",
		    v->rhdr.op);
	tg_printf("vsock: connected, host buf_alloc %u\n", v->peer_buf_alloc);

	vsock_send(v, VSOCK_OP_RW, 0, VSOCK_TEXT, sizeof(VSOCK_TEXT) - 1);
	tg_printf("vsock: sent %u bytes%s\n", (unsigned)sizeof(VSOCK_TEXT) - 1,
	    v->indirect ? " (indirect)" : "");
	vsock_recv(v, IO_WAIT, "waiting for the host's reply");
	if (v->rhdr.op != VSOCK_OP_RW)
		tg_fail("vsock: op %u (flags 0x%x) while waiting for data",
		    v->rhdr.op, v->rhdr.flags);
	v->fwd_cnt += v->rlen;
	print_text("vsock: got ", v->rpay, v->rlen);

	vsock_send(v, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_BOTH, NULL, 0);
	do {
		vsock_recv(v, IO_WAIT, "waiting for RST after SHUTDOWN");
		v->fwd_cnt += v->rlen;
	} while (v->rhdr.op != VSOCK_OP_RST);
	tg_printf("vsock: SHUTDOWN answered by RST: ok\n");
	vdev_close(&v->d);
}

/* Waits for the host to connect to port P, echoes data until it closes. */
void
test_vsock_listen(const char *arg)
{
	struct vsock *v = &vsock_state;
	uint64_t port;
	uint32_t bytes = 0, packets = 0, credit;

	if (parse_u64(arg, &port) != 0 || port > UINT32_MAX)
		tg_fail("vsock-listen: bad port '%s'", arg);
	vsock_open(v, (uint32_t)port);
	tg_printf("vsock-listen: waiting for a connection to port %u\n",
	    v->port);
	for (;;) {
		vsock_recv(v, VSOCK_LISTEN_WAIT, "waiting for REQUEST");
		if (v->rhdr.op == VSOCK_OP_REQUEST &&
		    v->rhdr.dst_port == v->port)
			break;
		tg_printf("vsock-listen: ignoring op %u to port %u\n",
		    v->rhdr.op, v->rhdr.dst_port);
	}
	v->peer_cid = v->rhdr.src_cid;
	v->peer_port = v->rhdr.src_port;
	vsock_send(v, VSOCK_OP_RESPONSE, 0, NULL, 0);
	tg_printf("vsock-listen: accepted %lu:%u\n", v->peer_cid, v->peer_port);

	while (packets < VSOCK_MAX_PACKETS) {
		vsock_recv(v, VSOCK_LISTEN_WAIT, "waiting for data");
		if (v->rhdr.op == VSOCK_OP_SHUTDOWN) {
			vsock_send(v, VSOCK_OP_RST, 0, NULL, 0);
			break;
		}
		if (v->rhdr.op == VSOCK_OP_RST)
			break;
		if (v->rhdr.op != VSOCK_OP_RW)
			tg_fail("vsock-listen: unexpected op %u", v->rhdr.op);
		v->fwd_cnt += v->rlen;
		print_text("vsock-listen: got ", v->rpay, v->rlen);
		credit = v->peer_buf_alloc - (v->tx_cnt - v->peer_fwd_cnt);
		if (credit < v->rlen)
			tg_fail("vsock-listen: host gives %u bytes of credit, "
			    "echo needs %u", credit, v->rlen);
		vsock_send(v, VSOCK_OP_RW, 0, v->rpay, v->rlen);
		bytes += v->rlen;
		packets++;
	}
	tg_printf("vsock-listen: echoed %u bytes in %u packets, peer %s\n",
	    bytes, packets, packets == VSOCK_MAX_PACKETS ? "still open" :
	    v->rhdr.op == VSOCK_OP_RST ? "reset" : "shut down");
	if (packets == VSOCK_MAX_PACKETS)
		vsock_send(v, VSOCK_OP_RST, 0, NULL, 0);
	vdev_close(&v->d);
}
