/*
 * Unit test for virtio-blk (virtio/blk.c), driven from the guest side by
 * tests/unit/vdrv on the fake hypervisor, over a scratch image file that
 * the test reads and writes itself (pread/pwrite) to check the device.
 */
#include <sys/stat.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/virtio_blk.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hv/fake.h"
#include "tests/tap.h"
#include "tests/unit/vdrv.h"
#include "virtio/virtio.h"

#define WAIT_MS		2000
#define SECTOR		512
#define IMG_SIZE	(1024 * 1024 + 300)	/* not a sector multiple */
#define IMG_SECTORS	(IMG_SIZE / SECTOR)
#define ST_NONE		0xee	/* status byte before the device answers */

static char	tmpdir[256];

/* The machine of one case: a started blk device over `path`. */
struct tblk {
	struct vdrv_env		 env;
	struct vdrv		 d;
	struct virtio_dev	*dev;
	char			 path[320];
	int			 fd;	/* the test's own view of the image */
};

/* The image: IMG_SIZE bytes, byte i = (i * 7 + 3) & 0xff, so nothing in
 * it is zero-filled and every offset is distinguishable. */
static int
make_image(const char *path, size_t size)
{
	uint8_t	*buf = xmalloc(size);
	size_t	 i;
	int	 fd, ok;

	for (i = 0; i < size; i++)
		buf[i] = (uint8_t)(i * 7 + 3) | 1;
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ok = fd >= 0 && pwrite(fd, buf, size, 0) == (ssize_t)size &&
	    fsync(fd) == 0;
	free(buf);
	if (fd >= 0)
		close(fd);
	return ok ? 0 : -1;
}

/* Build the machine; want = driver features to accept (~0 = all). */
static int
setup_want(struct tblk *t, const char *name, bool ro, uint64_t want)
{
	char	err[256];

	memset(t, 0, sizeof(*t));
	t->fd = -1;
	snprintf(t->path, sizeof(t->path), "%s/%s", tmpdir, name);
	if (access(t->path, F_OK) != 0 && make_image(t->path, IMG_SIZE) != 0)
		return -1;
	t->fd = open(t->path, O_RDWR | O_CLOEXEC);
	if (t->fd < 0)
		return -1;
	if (vdrv_env_init(&t->env, 32 << 20) != 0)
		goto err_close;
	t->dev = virtio_blk_create(&t->env.host, VDRV_BASE(0), VDRV_IRQ(0),
	    t->path, ro, err, sizeof(err));
	if (t->dev == NULL) {
		tap_diag("virtio_blk_create: %s", err);
		goto err_env;
	}
	vdrv_attach(&t->d, &t->env, t->dev, VDRV_BASE(0), VDRV_IRQ(0));
	if (vdrv_start(&t->d, want, 128) != 0) {
		tap_diag("vdrv_start failed");
		virtio_dev_free(t->dev);
		vdrv_detach(&t->d);
		goto err_env;
	}
	return 0;
err_env:
	vdrv_env_fini(&t->env);
err_close:
	close(t->fd);
	return -1;
}

static int
setup(struct tblk *t, const char *name, bool ro)
{
	return setup_want(t, name, ro, ~0ULL);
}

static void
teardown(struct tblk *t)
{
	virtio_dev_free(t->dev);
	vdrv_detach(&t->d);
	vdrv_env_fini(&t->env);
	close(t->fd);
}

/* A request header in guest memory. */
static uint64_t
hdr(struct tblk *t, uint32_t type, uint64_t sector)
{
	struct virtio_blk_outhdr	h;

	h.type = htole32(type);
	h.ioprio = 0;
	h.sector = htole64(sector);
	return vdrv_alloc_data(&t->env, &h, sizeof(h));
}

/*
 * Send a chain of n buffers whose last is a fresh 1-byte status buffer
 * (appended here when status_gpa is not NULL), kick and wait.  Returns
 * the status byte (ST_NONE if untouched), or -1 when nothing came back;
 * *used gets the used length.
 */
static int
send(struct tblk *t, struct vdrv_buf *b, unsigned n, bool indirect,
    uint32_t *used)
{
	uint64_t	st = vdrv_alloc(&t->env, 1, 1);
	uint32_t	id, len;
	int		head;

	*(uint8_t *)vdrv_ptr(&t->env, st, 1) = ST_NONE;
	b[n].gpa = st;
	b[n].len = 1;
	b[n].write = true;
	head = vdrv_add(&t->d, 0, b, n + 1, indirect);
	if (head < 0)
		return -1;
	vdrv_kick(&t->d, 0);
	if (!vdrv_wait_used(&t->d, 0, &id, &len, WAIT_MS) ||
	    id != (uint32_t)head)
		return -1;
	if (used != NULL)
		*used = len;
	return *(uint8_t *)vdrv_ptr(&t->env, st, 1);
}

/* header + one data buffer + status. */
static int
req1(struct tblk *t, uint32_t type, uint64_t sector, uint64_t data,
    uint32_t len, bool write, uint32_t *used)
{
	struct vdrv_buf	b[3];
	unsigned	n = 0;

	b[n++] = (struct vdrv_buf){ hdr(t, type, sector), 16, false };
	if (len > 0)
		b[n++] = (struct vdrv_buf){ data, len, write };
	return send(t, b, n, false, used);
}

/* DISCARD / WRITE_ZEROES with one range. */
static int
range_req(struct tblk *t, uint32_t type, uint64_t sector, uint32_t nsect,
    uint32_t flags)
{
	struct virtio_blk_discard_write_zeroes	r;

	r.sector = htole64(sector);
	r.num_sectors = htole32(nsect);
	r.flags = htole32(flags);
	return req1(t, type, 0, vdrv_alloc_data(&t->env, &r, sizeof(r)),
	    sizeof(r), false, NULL);
}

/* Whether the image at off holds what make_image put there. */
static bool
host_is_pattern(struct tblk *t, off_t off, size_t len)
{
	uint8_t	*buf = xmalloc(len);
	size_t	 i;
	bool	 ok;

	ok = pread(t->fd, buf, len, off) == (ssize_t)len;
	for (i = 0; ok && i < len; i++)
		ok = buf[i] == ((uint8_t)((off + i) * 7 + 3) | 1);
	free(buf);
	return ok;
}

static bool
host_is_zero(struct tblk *t, off_t off, size_t len)
{
	uint8_t	*buf = xmalloc(len);
	size_t	 i;
	bool	 ok;

	ok = pread(t->fd, buf, len, off) == (ssize_t)len;
	for (i = 0; ok && i < len; i++)
		ok = buf[i] == 0;
	free(buf);
	return ok;
}

static bool
needs_reset(struct tblk *t)
{
	return (vdrv_read(&t->d, VIRTIO_MMIO_STATUS) &
	    VIRTIO_STATUS_NEEDS_RESET) != 0;
}

static int
test_config(void)
{
	struct tblk	t;
	struct virtio_blk_config c;
	uint64_t	f;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "config.img", false) == 0);
	f = vdrv_device_features(&t.d);
	memset(&c, 0, sizeof(c));
	vdrv_config_read(&t.d, 0, &c,
	    offsetof(struct virtio_blk_config, max_secure_erase_sectors));
	if (vdrv_read(&t.d, VIRTIO_MMIO_DEVICE_ID) != VIRTIO_ID_BLOCK)
		goto out;
	if (le64toh(c.capacity) != IMG_SECTORS) {
		tap_diag("capacity %llu, want %u",
		    (unsigned long long)le64toh(c.capacity), IMG_SECTORS);
		goto out;
	}
	if (le32toh(c.blk_size) != SECTOR || le32toh(c.seg_max) == 0 ||
	    le32toh(c.seg_max) > VIRTIO_MAX_CHAIN - 2 ||
	    le32toh(c.size_max) < 4096)
		goto out;
	if (le32toh(c.max_discard_seg) == 0 ||
	    le32toh(c.max_discard_sectors) == 0 ||
	    le32toh(c.max_write_zeroes_sectors) == 0 ||
	    le32toh(c.max_write_zeroes_seg) == 0)
		goto out;
	if (!(f & (1ULL << VIRTIO_BLK_F_FLUSH)) ||
	    !(f & (1ULL << VIRTIO_BLK_F_BLK_SIZE)) ||
	    !(f & (1ULL << VIRTIO_BLK_F_SEG_MAX)) ||
	    !(f & (1ULL << VIRTIO_BLK_F_DISCARD)) ||
	    !(f & (1ULL << VIRTIO_BLK_F_WRITE_ZEROES)) ||
	    (f & (1ULL << VIRTIO_BLK_F_RO)) ||
	    !(f & (1ULL << VIRTIO_F_VERSION_1)))
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

static int
test_write_read(void)
{
	struct tblk	t;
	uint8_t		data[3 * SECTOR], back[3 * SECTOR];
	uint64_t	out, in;
	uint32_t	used;
	size_t		i;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "rw.img", false) == 0);
	for (i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i ^ 0x5a);
	out = vdrv_alloc_data(&t.env, data, sizeof(data));
	if (req1(&t, VIRTIO_BLK_T_OUT, 5, out, sizeof(data), false, &used) !=
	    VIRTIO_BLK_S_OK)
		goto out;
	if (pread(t.fd, back, sizeof(back), 5 * SECTOR) != sizeof(back) ||
	    memcmp(back, data, sizeof(data)) != 0)
		goto out;
	/* Neighbours untouched. */
	if (!host_is_pattern(&t, 4 * SECTOR, SECTOR) ||
	    !host_is_pattern(&t, 8 * SECTOR, SECTOR))
		goto out;
	/* Read back what the host has at sector 20 (the pattern), and the
	 * sectors just written. */
	in = vdrv_alloc(&t.env, 2 * SECTOR, 8);
	if (req1(&t, VIRTIO_BLK_T_IN, 20, in, 2 * SECTOR, true, &used) !=
	    VIRTIO_BLK_S_OK || used != 2 * SECTOR + 1)
		goto out;
	if (pread(t.fd, back, 2 * SECTOR, 20 * SECTOR) != 2 * SECTOR ||
	    memcmp(back, vdrv_ptr(&t.env, in, 2 * SECTOR), 2 * SECTOR) != 0)
		goto out;
	in = vdrv_alloc(&t.env, sizeof(data), 8);
	if (req1(&t, VIRTIO_BLK_T_IN, 5, in, sizeof(data), true, NULL) !=
	    VIRTIO_BLK_S_OK ||
	    memcmp(vdrv_ptr(&t.env, in, sizeof(data)), data, sizeof(data)))
		goto out;
	/* The very last sector is readable. */
	if (req1(&t, VIRTIO_BLK_T_IN, IMG_SECTORS - 1, in, SECTOR, true,
	    NULL) != VIRTIO_BLK_S_OK)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Data spread over several segments of odd sizes (summing to whole
 * sectors), direct and through an indirect table; the status byte shares
 * nothing with data. */
static int
test_segments(void)
{
	static const uint32_t	lens[] = { 100, 412, 1024, 7, 505 };
	struct tblk		t;
	struct vdrv_buf		b[ARRAY_SIZE(lens) + 2];
	uint8_t			data[2048], back[2048];
	unsigned		i, pass;
	size_t			off;
	int			rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "seg.img", false) == 0);
	for (i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 13 + 1);
	for (pass = 0; pass < 2; pass++) {
		/* OUT at sector 40 + 8 * pass. */
		b[0] = (struct vdrv_buf){ hdr(&t, VIRTIO_BLK_T_OUT,
		    40 + 8 * pass), 16, false };
		for (i = 0, off = 0; i < ARRAY_SIZE(lens); off += lens[i], i++)
			b[i + 1] = (struct vdrv_buf){ vdrv_alloc_data(&t.env,
			    data + off, lens[i]), lens[i], false };
		if (send(&t, b, ARRAY_SIZE(lens) + 1, pass == 1, NULL) !=
		    VIRTIO_BLK_S_OK)
			goto out;
		if (pread(t.fd, back, sizeof(back), (40 + 8 * pass) * SECTOR)
		    != sizeof(back) || memcmp(back, data, sizeof(data)) != 0)
			goto out;
		/* IN of the same sectors into scattered buffers. */
		b[0] = (struct vdrv_buf){ hdr(&t, VIRTIO_BLK_T_IN,
		    40 + 8 * pass), 16, false };
		for (i = 0; i < ARRAY_SIZE(lens); i++)
			b[i + 1] = (struct vdrv_buf){ vdrv_alloc(&t.env,
			    lens[i], 1), lens[i], true };
		if (send(&t, b, ARRAY_SIZE(lens) + 1, pass == 1, NULL) !=
		    VIRTIO_BLK_S_OK)
			goto out;
		for (i = 0, off = 0; i < ARRAY_SIZE(lens); off += lens[i], i++)
			if (memcmp(vdrv_ptr(&t.env, b[i + 1].gpa, lens[i]),
			    data + off, lens[i]) != 0)
				goto out;
	}
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* The status byte at the end of the last data segment (no separate
 * status buffer). */
static int
test_status_shares_segment(void)
{
	struct tblk	t;
	struct vdrv_buf	b[2];
	uint64_t	buf;
	uint32_t	id, len;
	uint8_t		*p, want[SECTOR];
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "share.img", false) == 0);
	buf = vdrv_alloc(&t.env, SECTOR + 1, 8);
	p = vdrv_ptr(&t.env, buf, SECTOR + 1);
	p[SECTOR] = ST_NONE;
	b[0] = (struct vdrv_buf){ hdr(&t, VIRTIO_BLK_T_IN, 3), 16, false };
	b[1] = (struct vdrv_buf){ buf, SECTOR + 1, true };
	if (vdrv_add(&t.d, 0, b, 2, false) < 0)
		goto out;
	vdrv_kick(&t.d, 0);
	if (!vdrv_wait_used(&t.d, 0, &id, &len, WAIT_MS))
		goto out;
	if (p[SECTOR] != VIRTIO_BLK_S_OK || len != SECTOR + 1)
		goto out;
	if (pread(t.fd, want, SECTOR, 3 * SECTOR) != SECTOR ||
	    memcmp(want, p, SECTOR) != 0)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

static int
test_flush(void)
{
	struct tblk	t;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "flush.img", false) == 0);
	if (req1(&t, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false, NULL) !=
	    VIRTIO_BLK_S_OK)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* GET_ID: 20 bytes, the same from a second device on the same file,
 * different for another file. */
static int
get_id(struct tblk *t, char id[VIRTIO_BLK_ID_BYTES])
{
	uint64_t	buf = vdrv_alloc(&t->env, VIRTIO_BLK_ID_BYTES, 1);
	uint32_t	used;

	if (req1(t, VIRTIO_BLK_T_GET_ID, 0, buf, VIRTIO_BLK_ID_BYTES, true,
	    &used) != VIRTIO_BLK_S_OK || used != VIRTIO_BLK_ID_BYTES + 1)
		return -1;
	memcpy(id, vdrv_ptr(&t->env, buf, VIRTIO_BLK_ID_BYTES),
	    VIRTIO_BLK_ID_BYTES);
	return 0;
}

static int
test_get_id(void)
{
	struct tblk	t;
	char		a[20], b[20], c[20];
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "id.img", false) == 0);
	if (get_id(&t, a) != 0 || get_id(&t, b) != 0 || memcmp(a, b, 20))
		goto out;
	teardown(&t);
	TAP_CHECK(setup(&t, "id.img", true) == 0);
	if (get_id(&t, b) != 0 || memcmp(a, b, 20) != 0)
		goto out;
	teardown(&t);
	TAP_CHECK(setup(&t, "id2.img", false) == 0);
	if (get_id(&t, c) != 0 || memcmp(a, c, 20) == 0)
		goto out;
	tap_diag("id %.20s", a);
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Allocated 512-byte blocks of the image. */
static long long
blocks(struct tblk *t)
{
	struct stat	st;

	return fstat(t->fd, &st) == 0 ? (long long)st.st_blocks : -1;
}

static int
test_discard(void)
{
	struct tblk	t;
	long long	before, after;
	off_t		hole;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "discard.img", false) == 0);
	before = blocks(&t);
	/* 256 KiB from 128 KiB: whole file-system blocks. */
	if (range_req(&t, VIRTIO_BLK_T_DISCARD, 256, 512, 0) !=
	    VIRTIO_BLK_S_OK)
		goto out;
	after = blocks(&t);
	hole = lseek(t.fd, 0, SEEK_HOLE);
	tap_diag("blocks %lld -> %lld, first hole at %lld", before, after,
	    (long long)hole);
	if (after > before - 512 || hole != 256 * SECTOR)
		goto out;
	/* Outside the range nothing changed; the size stayed. */
	if (!host_is_pattern(&t, 255 * SECTOR, SECTOR) ||
	    !host_is_pattern(&t, 768 * SECTOR, SECTOR) ||
	    lseek(t.fd, 0, SEEK_END) != IMG_SIZE)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

static int
test_write_zeroes(void)
{
	struct tblk	t;
	uint64_t	in;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "wz.img", false) == 0);
	/* Without unmap (zero range), then with (a hole); odd offsets. */
	if (range_req(&t, VIRTIO_BLK_T_WRITE_ZEROES, 3, 5, 0) !=
	    VIRTIO_BLK_S_OK ||
	    range_req(&t, VIRTIO_BLK_T_WRITE_ZEROES, 100, 33,
	    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) != VIRTIO_BLK_S_OK)
		goto out;
	if (!host_is_zero(&t, 3 * SECTOR, 5 * SECTOR) ||
	    !host_is_zero(&t, 100 * SECTOR, 33 * SECTOR) ||
	    !host_is_pattern(&t, 2 * SECTOR, SECTOR) ||
	    !host_is_pattern(&t, 8 * SECTOR, SECTOR) ||
	    !host_is_pattern(&t, 99 * SECTOR, SECTOR) ||
	    !host_is_pattern(&t, 133 * SECTOR, SECTOR))
		goto out;
	/* And the guest reads zeroes back. */
	in = vdrv_alloc(&t.env, 5 * SECTOR, 8);
	if (req1(&t, VIRTIO_BLK_T_IN, 3, in, 5 * SECTOR, true, NULL) !=
	    VIRTIO_BLK_S_OK)
		goto out;
	for (size_t i = 0; i < 5 * SECTOR; i++)
		if (((uint8_t *)vdrv_ptr(&t.env, in, 5 * SECTOR))[i] != 0)
			goto out;
	/* Up to the last sector is fine, and the size never changes. */
	if (range_req(&t, VIRTIO_BLK_T_WRITE_ZEROES, IMG_SECTORS - 1, 1,
	    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) != VIRTIO_BLK_S_OK ||
	    lseek(t.fd, 0, SEEK_END) != IMG_SIZE ||
	    !host_is_pattern(&t, IMG_SECTORS * SECTOR, IMG_SIZE % SECTOR))
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Anything reaching past the last whole sector is an I/O error, however
 * large the numbers. */
static int
test_out_of_range(void)
{
	static const struct {
		uint64_t	sector;
		uint32_t	nsect;
	} bad[] = {
		{ IMG_SECTORS, 1 },
		{ IMG_SECTORS - 1, 2 },
		{ UINT64_MAX, 1 },
		{ UINT64_MAX - 1, 4 },
		{ 1ULL << 55, 1 },	/* sector << 9 overflows */
	};
	struct tblk	t;
	uint64_t	buf;
	unsigned	i;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "range.img", false) == 0);
	buf = vdrv_alloc(&t.env, 4 * SECTOR, 8);
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		if (req1(&t, VIRTIO_BLK_T_IN, bad[i].sector, buf,
		    bad[i].nsect * SECTOR, true, NULL) != VIRTIO_BLK_S_IOERR ||
		    req1(&t, VIRTIO_BLK_T_OUT, bad[i].sector, buf,
		    bad[i].nsect * SECTOR, false, NULL) != VIRTIO_BLK_S_IOERR ||
		    range_req(&t, VIRTIO_BLK_T_DISCARD, bad[i].sector,
		    bad[i].nsect, 0) != VIRTIO_BLK_S_IOERR ||
		    range_req(&t, VIRTIO_BLK_T_WRITE_ZEROES, bad[i].sector,
		    bad[i].nsect, 0) != VIRTIO_BLK_S_IOERR) {
			tap_diag("case %u accepted", i);
			goto out;
		}
	}
	if (lseek(t.fd, 0, SEEK_END) != IMG_SIZE || needs_reset(&t))
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

static int
test_readonly(void)
{
	struct tblk	t;
	uint64_t	buf;
	uint8_t		data[SECTOR];
	int		st, rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "ro.img", true) == 0);
	if (!(vdrv_device_features(&t.d) & (1ULL << VIRTIO_BLK_F_RO)))
		goto out;
	memset(data, 0, sizeof(data));
	buf = vdrv_alloc_data(&t.env, data, sizeof(data));
	if (req1(&t, VIRTIO_BLK_T_OUT, 0, buf, SECTOR, false, NULL) !=
	    VIRTIO_BLK_S_IOERR)
		goto out;
	st = range_req(&t, VIRTIO_BLK_T_DISCARD, 0, 8, 0);
	if (st != VIRTIO_BLK_S_IOERR && st != VIRTIO_BLK_S_UNSUPP)
		goto out;
	st = range_req(&t, VIRTIO_BLK_T_WRITE_ZEROES, 0, 8, 0);
	if (st != VIRTIO_BLK_S_IOERR && st != VIRTIO_BLK_S_UNSUPP)
		goto out;
	if (!host_is_pattern(&t, 0, 8 * SECTOR))
		goto out;
	/* Reads and flushes still work. */
	if (req1(&t, VIRTIO_BLK_T_IN, 0, buf, SECTOR, true, NULL) !=
	    VIRTIO_BLK_S_OK || req1(&t, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false,
	    NULL) != VIRTIO_BLK_S_OK)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Requests the device can answer but must refuse. */
static int
test_bad_requests(void)
{
	struct virtio_blk_discard_write_zeroes	r[17];
	struct tblk	t;
	struct vdrv_buf	b[4];
	uint64_t	buf, h;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "bad.img", false) == 0);
	buf = vdrv_alloc(&t.env, 4 * SECTOR, 8);
	/* Unknown type; SCSI; a legacy barrier. */
	if (req1(&t, 99, 0, 0, 0, false, NULL) != VIRTIO_BLK_S_UNSUPP ||
	    req1(&t, VIRTIO_BLK_T_SCSI_CMD, 0, buf, 64, false, NULL) !=
	    VIRTIO_BLK_S_UNSUPP || req1(&t, VIRTIO_BLK_T_OUT |
	    VIRTIO_BLK_T_BARRIER, 0, buf, SECTOR, false, NULL) !=
	    VIRTIO_BLK_S_UNSUPP) {
		tap_diag("unknown types");
		goto out;
	}
	/* Data that is not whole sectors. */
	if (req1(&t, VIRTIO_BLK_T_IN, 0, buf, 100, true, NULL) !=
	    VIRTIO_BLK_S_IOERR || req1(&t, VIRTIO_BLK_T_OUT, 0, buf,
	    SECTOR + 1, false, NULL) != VIRTIO_BLK_S_IOERR) {
		tap_diag("partial sectors");
		goto out;
	}
	/* Wrong directions: IN into readable data, OUT from writable. */
	if (req1(&t, VIRTIO_BLK_T_IN, 0, buf, SECTOR, false, NULL) !=
	    VIRTIO_BLK_S_IOERR || req1(&t, VIRTIO_BLK_T_OUT, 0, buf, SECTOR,
	    true, NULL) != VIRTIO_BLK_S_IOERR) {
		tap_diag("directions");
		goto out;
	}
	if (!host_is_pattern(&t, 0, 2 * SECTOR))
		goto out;
	/* Short header (8 bytes), and a header split over two buffers
	 * (which is fine). */
	h = hdr(&t, VIRTIO_BLK_T_IN, 0);
	b[0] = (struct vdrv_buf){ h, 8, false };
	b[1] = (struct vdrv_buf){ buf, SECTOR, true };
	if (send(&t, b, 2, false, NULL) != VIRTIO_BLK_S_IOERR) {
		tap_diag("short header");
		goto out;
	}
	b[0] = (struct vdrv_buf){ h, 8, false };
	b[1] = (struct vdrv_buf){ h + 8, 8, false };
	b[2] = (struct vdrv_buf){ buf, SECTOR, true };
	if (send(&t, b, 3, false, NULL) != VIRTIO_BLK_S_OK) {
		tap_diag("split header");
		goto out;
	}
	/* Tiny chain: the status byte alone. */
	if (send(&t, b, 0, false, NULL) != VIRTIO_BLK_S_IOERR) {
		tap_diag("status only");
		goto out;
	}
	/* Discard: unmap flag, unknown flags, too many ranges, ragged
	 * range array, no range at all. */
	if (range_req(&t, VIRTIO_BLK_T_DISCARD, 0, 8,
	    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) != VIRTIO_BLK_S_UNSUPP ||
	    range_req(&t, VIRTIO_BLK_T_WRITE_ZEROES, 0, 8, 0x80) !=
	    VIRTIO_BLK_S_UNSUPP) {
		tap_diag("range flags");
		goto out;
	}
	memset(r, 0, sizeof(r));
	for (unsigned i = 0; i < ARRAY_SIZE(r); i++)
		r[i].num_sectors = htole32(8);
	if (req1(&t, VIRTIO_BLK_T_DISCARD, 0, vdrv_alloc_data(&t.env, r,
	    sizeof(r)), sizeof(r), false, NULL) != VIRTIO_BLK_S_IOERR ||
	    req1(&t, VIRTIO_BLK_T_DISCARD, 0, vdrv_alloc_data(&t.env, r,
	    sizeof(r[0]) + 4), sizeof(r[0]) + 4, false, NULL) !=
	    VIRTIO_BLK_S_IOERR ||
	    req1(&t, VIRTIO_BLK_T_DISCARD, 0, 0, 0, false, NULL) !=
	    VIRTIO_BLK_S_IOERR) {
		tap_diag("range counts");
		goto out;
	}
	/* Two ranges at once are fine. */
	r[1].sector = htole64(64);
	if (req1(&t, VIRTIO_BLK_T_WRITE_ZEROES, 0, vdrv_alloc_data(&t.env, r,
	    2 * sizeof(r[0])), 2 * sizeof(r[0]), false, NULL) !=
	    VIRTIO_BLK_S_OK || !host_is_zero(&t, 0, 8 * SECTOR) ||
	    !host_is_zero(&t, 64 * SECTOR, 8 * SECTOR) ||
	    !host_is_pattern(&t, 8 * SECTOR, SECTOR)) {
		tap_diag("two ranges");
		goto out;
	}
	if (needs_reset(&t))
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* A chain without a writable byte cannot carry a status: the device
 * goes NEEDS_RESET, and works again after a reset. */
static int
test_no_status(void)
{
	struct tblk	t;
	struct vdrv_buf	b[2];
	uint32_t	id, len;
	uint64_t	buf;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "nostatus.img", false) == 0);
	buf = vdrv_alloc(&t.env, SECTOR, 8);
	memset(vdrv_ptr(&t.env, buf, SECTOR), 'x', SECTOR);
	b[0] = (struct vdrv_buf){ hdr(&t, VIRTIO_BLK_T_OUT, 0), 16, false };
	b[1] = (struct vdrv_buf){ buf, SECTOR, false };
	if (vdrv_add(&t.d, 0, b, 2, false) < 0)
		goto out;
	vdrv_kick(&t.d, 0);
	vdrv_env_poll(&t.env);
	if (!needs_reset(&t) || vdrv_used(&t.d, 0, &id, &len))
		goto out;
	if (!host_is_pattern(&t, 0, SECTOR))
		goto out;
	/* A config interrupt told the driver. */
	if (!(vdrv_isr_ack(&t.d) & VIRTIO_ISR_CONFIG))
		goto out;
	if (vdrv_start(&t.d, ~0ULL, 64) != 0 || needs_reset(&t) ||
	    req1(&t, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false, NULL) !=
	    VIRTIO_BLK_S_OK)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Features the driver did not take are unsupported requests. */
static int
test_not_negotiated(void)
{
	struct tblk	t;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup_want(&t, "noneg.img", false,
	    ~((1ULL << VIRTIO_BLK_F_DISCARD) |
	    (1ULL << VIRTIO_BLK_F_WRITE_ZEROES))) == 0);
	if (range_req(&t, VIRTIO_BLK_T_DISCARD, 0, 8, 0) !=
	    VIRTIO_BLK_S_UNSUPP ||
	    range_req(&t, VIRTIO_BLK_T_WRITE_ZEROES, 0, 8, 0) !=
	    VIRTIO_BLK_S_UNSUPP || !host_is_pattern(&t, 0, 8 * SECTOR))
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Many requests in one kick, and a large read. */
static int
test_batch(void)
{
	struct tblk	t;
	struct vdrv_buf	b[3];
	uint64_t	st[32], big;
	uint8_t		*want;
	uint32_t	id, len;
	unsigned	i;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "batch.img", false) == 0);
	for (i = 0; i < ARRAY_SIZE(st); i++) {
		st[i] = vdrv_alloc(&t.env, 1, 1);
		b[0] = (struct vdrv_buf){ hdr(&t, VIRTIO_BLK_T_IN, i), 16,
		    false };
		b[1] = (struct vdrv_buf){ vdrv_alloc(&t.env, SECTOR, 8),
		    SECTOR, true };
		b[2] = (struct vdrv_buf){ st[i], 1, true };
		if (vdrv_add(&t.d, 0, b, 3, false) < 0)
			goto out;
	}
	vdrv_kick(&t.d, 0);
	for (i = 0; i < ARRAY_SIZE(st); i++) {
		if (!vdrv_wait_used(&t.d, 0, &id, &len, WAIT_MS) ||
		    len != SECTOR + 1 ||
		    *(uint8_t *)vdrv_ptr(&t.env, st[i], 1) != VIRTIO_BLK_S_OK)
			goto out;
	}
	big = vdrv_alloc(&t.env, IMG_SECTORS * SECTOR, 4096);
	if (req1(&t, VIRTIO_BLK_T_IN, 0, big, IMG_SECTORS * SECTOR, true,
	    NULL) != VIRTIO_BLK_S_OK)
		goto out;
	want = xmalloc(IMG_SECTORS * SECTOR);
	if (pread(t.fd, want, IMG_SECTORS * SECTOR, 0) !=
	    IMG_SECTORS * SECTOR || memcmp(want, vdrv_ptr(&t.env, big,
	    IMG_SECTORS * SECTOR), IMG_SECTORS * SECTOR) != 0) {
		free(want);
		goto out;
	}
	free(want);
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Save and load through the core; creation errors name the path. */
static int
test_save_create_errors(void)
{
	struct tblk	t;
	struct virtio_dev *dev;
	uint8_t		*buf = NULL;
	size_t		 len = 0;
	char		 err[512], path[320];
	int		 rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "save.img", false) == 0);
	if (virtio_dev_save(t.dev, &buf, &len) != 0 || len == 0)
		goto out;
	if (virtio_dev_load(t.dev, buf, len) != 0)
		goto out;
	if (req1(&t, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false, NULL) !=
	    VIRTIO_BLK_S_OK)
		goto out;
	snprintf(path, sizeof(path), "%s/missing.img", tmpdir);
	err[0] = '\0';
	dev = virtio_blk_create(&t.env.host, VDRV_BASE(1), VDRV_IRQ(1), path,
	    false, err, sizeof(err));
	if (dev != NULL || errno != ENOENT || strstr(err, path) == NULL)
		goto out;
	dev = virtio_blk_create(&t.env.host, VDRV_BASE(1), VDRV_IRQ(1), tmpdir,
	    true, err, sizeof(err));
	if (dev != NULL)
		goto out;
	rc = TAP_PASS;
out:
	free(buf);
	teardown(&t);
	return rc;
}

/* Queue many requests (reads of 8 sectors and writes of zeroes). */
static int
queue_many(struct tblk *t, unsigned n)
{
	struct vdrv_buf	b[3];
	unsigned	i;
	bool		out;

	for (i = 0; i < n; i++) {
		out = i % 2 == 1;
		b[0] = (struct vdrv_buf){ hdr(t, out ? VIRTIO_BLK_T_OUT :
		    VIRTIO_BLK_T_IN, 8 * i), 16, false };
		b[1] = (struct vdrv_buf){ vdrv_alloc(&t->env, 8 * SECTOR, 8),
		    8 * SECTOR, !out };
		b[2] = (struct vdrv_buf){ vdrv_alloc(&t->env, 1, 1), 1, true };
		if (vdrv_add(&t->d, 0, b, 3, false) < 0)
			return -1;
	}
	vdrv_kick(&t->d, 0);
	return 0;
}

/* A reset while the worker has requests in flight: they are dropped,
 * nothing is pushed into the new queue, the device serves again. */
static int
test_reset_inflight(void)
{
	struct tblk	t;
	uint32_t	id, len;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, "reset.img", false) == 0);
	if (queue_many(&t, 40) != 0)
		goto out;
	if (vdrv_start(&t.d, ~0ULL, 64) != 0)
		goto out;
	vdrv_env_poll(&t.env);
	if (vdrv_used(&t.d, 0, &id, &len))
		goto out;	/* a stale completion reached the new ring */
	if (req1(&t, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false, NULL) !=
	    VIRTIO_BLK_S_OK)
		goto out;
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Freeing the device with requests in flight (run under ASan). */
static int
test_free_inflight(void)
{
	struct tblk	t;

	TAP_CHECK(setup(&t, "free.img", false) == 0);
	TAP_CHECK(queue_many(&t, 40) == 0);
	teardown(&t);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "config: capacity rounds down, limits, features", test_config },
	{ "write, then read back (host pread agrees)", test_write_read },
	{ "odd-sized segments, direct and indirect", test_segments },
	{ "status byte at the end of the data segment",
	    test_status_shares_segment },
	{ "flush", test_flush },
	{ "GET_ID is 20 bytes and stable per file", test_get_id },
	{ "discard punches a hole", test_discard },
	{ "write zeroes, with and without unmap", test_write_zeroes },
	{ "out-of-range sectors are IOERR (overflow-safe)",
	    test_out_of_range },
	{ "read-only disk refuses writes", test_readonly },
	{ "malformed requests get an error status", test_bad_requests },
	{ "no status byte: NEEDS_RESET, then reset works", test_no_status },
	{ "features not negotiated are UNSUPP", test_not_negotiated },
	{ "a batch in one kick, a large read", test_batch },
	{ "save/load; create errors", test_save_create_errors },
	{ "reset with requests in flight", test_reset_inflight },
	{ "free with requests in flight", test_free_inflight },
};

static void
cleanup(void)
{
	char	cmd[300];

	if (tmpdir[0] != '\0') {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "blk_test: could not remove %s\n",
			    tmpdir);
	}
}

int
main(void)
{
	const char	*t = getenv("TMPDIR");

	log_init("blk_test", LOG_NORMAL);
	snprintf(tmpdir, sizeof(tmpdir), "%s/blk_test.XXXXXX",
	    t != NULL && *t != '\0' ? t : "/tmp");
	if (mkdtemp(tmpdir) == NULL) {
		printf("1..0 # SKIP no scratch directory %s\n", tmpdir);
		return 77;
	}
	atexit(cleanup);
	return tap_run(cases, ARRAY_SIZE(cases), 120);
}
