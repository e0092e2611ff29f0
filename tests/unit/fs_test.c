/*
 * Unit test for virtio-fs (virtio/fs.c) with the real FUSE server
 * (fusefs/) on a temporary directory, driven from the guest side by
 * tests/unit/vdrv on the fake hypervisor: config space, the DAX shared
 * memory region, requests on both queues, a malformed request, reset.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <linux/virtio_fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fusefs/fusefs.h"
#include "hv/fake.h"
#include "tests/tap.h"
#include "tests/unit/vdrv.h"
#include "virtio/virtio.h"

#define WAIT_MS		5000
#define DAX_SLOT	2
#define DAX_GPA		0x4000000000ULL
#define DAX_WINDOW	(4ULL << 20)
#define HELLO		"hello, virtio-fs\n"

struct tfs {
	struct vdrv_env		 env;
	struct vdrv		 d;
	struct virtio_dev	*dev;
	char			 dir[64];
	uint64_t		 unique;
};

/* A share holding hello.txt, a device on it (with a DAX window of
 * window bytes unless 0; asking for entry and attribute lifetimes of
 * cache_ms unless 0), started. */
static int
setup_opts(struct tfs *t, uint64_t window, unsigned cache_ms)
{
	struct fusefs_opts	opts;
	char			path[96], err[256];
	int			fd;

	memset(t, 0, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "/tmp/fs_test.XXXXXX");
	if (mkdtemp(t->dir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/hello.txt", t->dir);
	if ((fd = open(path, O_WRONLY | O_CREAT, 0644)) < 0)
		return -1;
	if (write(fd, HELLO, strlen(HELLO)) != (ssize_t)strlen(HELLO)) {
		close(fd);
		return -1;
	}
	close(fd);
	if (vdrv_env_init(&t->env, 16 << 20) != 0)
		return -1;
	fusefs_opts_init(&opts);
	opts.root = t->dir;
	opts.dax_window = window;
	if (cache_ms != 0)
		opts.entry_timeout_ms = opts.attr_timeout_ms = cache_ms;
	err[0] = '\0';
	t->dev = virtio_fs_create(&t->env.host, VDRV_BASE(0), VDRV_IRQ(0),
	    &opts, "share", DAX_SLOT, DAX_GPA, err, sizeof(err));
	if (t->dev == NULL) {
		tap_diag("virtio_fs_create: %s", err);
		vdrv_env_fini(&t->env);
		return -1;
	}
	vdrv_attach(&t->d, &t->env, t->dev, VDRV_BASE(0), VDRV_IRQ(0));
	if (vdrv_start(&t->d, ~0ULL, 64) != 0) {
		virtio_dev_free(t->dev);
		vdrv_detach(&t->d);
		vdrv_env_fini(&t->env);
		return -1;
	}
	return 0;
}

static int
setup(struct tfs *t, bool dax)
{
	return setup_opts(t, dax ? DAX_WINDOW : 0, 0);
}

static void
teardown(struct tfs *t)
{
	char	cmd[128];

	virtio_dev_free(t->dev);
	vdrv_detach(&t->d);
	vdrv_env_fini(&t->env);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
	if (system(cmd) != 0)
		tap_diag("cannot remove %s", t->dir);
}

/*
 * Send opcode with body (blen bytes) for nodeid on queue q; the reply
 * (up to outlen bytes, none when outlen is 0) is copied to out.  Returns
 * the used length, or -1 when the device gave no used element.
 */
static int
request(struct tfs *t, unsigned q, uint32_t opcode, uint64_t nodeid,
    const void *body, uint32_t blen, void *out, uint32_t outlen)
{
	struct fuse_in_header	h;
	struct vdrv_buf		b[2];
	uint64_t		in_gpa, out_gpa = 0;
	uint8_t			*in;
	uint32_t		id, len;

	memset(&h, 0, sizeof(h));
	h.len = sizeof(h) + blen;
	h.opcode = opcode;
	h.unique = ++t->unique;
	h.nodeid = nodeid;
	in_gpa = vdrv_alloc(&t->env, h.len, 8);
	in = vdrv_ptr(&t->env, in_gpa, h.len);
	memcpy(in, &h, sizeof(h));
	if (blen > 0)
		memcpy(in + sizeof(h), body, blen);
	b[0] = (struct vdrv_buf){ in_gpa, h.len, false };
	if (outlen > 0) {
		out_gpa = vdrv_alloc(&t->env, outlen, 8);
		b[1] = (struct vdrv_buf){ out_gpa, outlen, true };
	}
	if (vdrv_add(&t->d, q, b, outlen > 0 ? 2 : 1, false) < 0)
		return -1;
	vdrv_kick(&t->d, q);
	if (!vdrv_wait_used(&t->d, q, &id, &len, WAIT_MS))
		return -1;
	if (outlen > 0)
		memcpy(out, vdrv_ptr(&t->env, out_gpa, outlen), outlen);
	return (int)len;
}

/* INIT with flags; 0 when the reply says success. */
static int
fuse_init(struct tfs *t, uint32_t flags, struct fuse_init_out *io)
{
	struct fuse_init_in	in;
	struct {
		struct fuse_out_header	h;
		struct fuse_init_out	o;
	} r;
	int	len;

	memset(&in, 0, sizeof(in));
	in.major = FUSE_KERNEL_VERSION;
	in.minor = FUSE_KERNEL_MINOR_VERSION;
	in.max_readahead = 128 * 1024;
	in.flags = flags | FUSE_INIT_EXT;
	memset(&r, 0, sizeof(r));
	len = request(t, 1, FUSE_INIT, 0, &in, sizeof(in), &r, sizeof(r));
	if (len < (int)sizeof(r.h) || r.h.error != 0 ||
	    r.h.unique != t->unique || r.h.len != (uint32_t)len) {
		tap_diag("INIT: used %d, error %d", len, r.h.error);
		return -1;
	}
	if (io != NULL)
		*io = r.o;
	return 0;
}

/* LOOKUP name under the root: its nodeid (0 on failure) and size. */
static uint64_t
lookup(struct tfs *t, const char *name, uint64_t *size)
{
	struct {
		struct fuse_out_header	h;
		struct fuse_entry_out	e;
	} r;
	int	len;

	memset(&r, 0, sizeof(r));
	len = request(t, 1, FUSE_LOOKUP, FUSE_ROOT_ID, name, strlen(name) + 1,
	    &r, sizeof(r));
	if (len != (int)sizeof(r) || r.h.error != 0)
		return 0;
	if (size != NULL)
		*size = r.e.attr.size;
	return r.e.nodeid;
}

static int
test_config(void)
{
	struct tfs		t;
	struct virtio_fs_config	cfg;
	int			rc = TAP_FAIL;

	TAP_CHECK(setup(&t, false) == 0);
	TAP_CHECK_GOTO(vdrv_read(&t.d, VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_FS,
	    out);
	vdrv_config_read(&t.d, 0, &cfg, sizeof(cfg));
	TAP_CHECK_GOTO(memcmp(cfg.tag, "share", 6) == 0, out);
	TAP_CHECK_GOTO(le32toh(cfg.num_request_queues) == 1, out);
	/* No DAX window: region 0 does not exist. */
	vdrv_write(&t.d, VIRTIO_MMIO_SHM_SEL, 0);
	TAP_CHECK_GOTO(vdrv_read(&t.d, VIRTIO_MMIO_SHM_LEN_LOW) == 0xffffffff,
	    out);
	TAP_CHECK_GOTO(vdrv_read(&t.d, VIRTIO_MMIO_SHM_LEN_HIGH) ==
	    0xffffffff, out);
	TAP_CHECK_GOTO(!hv_fake_slot(t.env.hv, DAX_SLOT, NULL, NULL, NULL,
	    NULL), out);
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

static int
test_shm_region(void)
{
	struct tfs	t;
	uint64_t	gpa, size;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup(&t, true) == 0);
	vdrv_write(&t.d, VIRTIO_MMIO_SHM_SEL, VIRTIO_FS_SHMCAP_ID_CACHE);
	TAP_CHECK_GOTO(vdrv_read(&t.d, VIRTIO_MMIO_SHM_LEN_LOW) ==
	    (uint32_t)DAX_WINDOW, out);
	TAP_CHECK_GOTO(vdrv_read(&t.d, VIRTIO_MMIO_SHM_LEN_HIGH) == 0, out);
	TAP_CHECK_GOTO(vdrv_read(&t.d, VIRTIO_MMIO_SHM_BASE_LOW) ==
	    (uint32_t)DAX_GPA, out);
	TAP_CHECK_GOTO(vdrv_read(&t.d, VIRTIO_MMIO_SHM_BASE_HIGH) ==
	    (uint32_t)(DAX_GPA >> 32), out);
	vdrv_write(&t.d, VIRTIO_MMIO_SHM_SEL, 1);
	TAP_CHECK_GOTO(vdrv_read(&t.d, VIRTIO_MMIO_SHM_LEN_LOW) == 0xffffffff,
	    out);
	/* The window is a memory slot of its own. */
	TAP_CHECK_GOTO(hv_fake_slot(t.env.hv, DAX_SLOT, &gpa, &size, NULL,
	    NULL), out);
	TAP_CHECK_GOTO(gpa == DAX_GPA && size == DAX_WINDOW, out);
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* A window of another size (above 4 GiB: both halves of SHMLen) is
 * what the device advertises and maps. */
static int
test_shm_region_size(void)
{
	struct tfs	t;
	uint64_t	gpa, size, win = 8ULL << 30;
	int		rc = TAP_FAIL;

	TAP_CHECK(setup_opts(&t, win, 0) == 0);
	vdrv_write(&t.d, VIRTIO_MMIO_SHM_SEL, VIRTIO_FS_SHMCAP_ID_CACHE);
	TAP_CHECK_GOTO(vdrv_read(&t.d, VIRTIO_MMIO_SHM_LEN_LOW) ==
	    (uint32_t)win, out);
	TAP_CHECK_GOTO(vdrv_read(&t.d, VIRTIO_MMIO_SHM_LEN_HIGH) ==
	    (uint32_t)(win >> 32), out);
	TAP_CHECK_GOTO(hv_fake_slot(t.env.hv, DAX_SLOT, &gpa, &size, NULL,
	    NULL), out);
	TAP_CHECK_GOTO(gpa == DAX_GPA && size == win, out);
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* Lifetime of valid + nsec, in ms. */
static uint64_t
valid_ms(uint64_t valid, uint32_t nsec)
{
	return valid * 1000 + nsec / 1000000;
}

/* No notification queue carries invalidations, so whatever the server
 * was asked for, the guest caches entries and attributes at most 1 s:
 * host edits show within a second. */
static int
test_cache_lifetimes(void)
{
	struct tfs		t;
	struct fuse_getattr_in	gi;
	struct {
		struct fuse_out_header	h;
		struct fuse_entry_out	e;
	} er;
	struct {
		struct fuse_out_header	h;
		struct fuse_attr_out	a;
	} ar;
	int			len, rc = TAP_FAIL;

	TAP_CHECK(setup_opts(&t, 0, 60000) == 0);
	TAP_CHECK_GOTO(fuse_init(&t, 0, NULL) == 0, out);
	memset(&er, 0, sizeof(er));
	len = request(&t, 1, FUSE_LOOKUP, FUSE_ROOT_ID, "hello.txt",
	    sizeof("hello.txt"), &er, sizeof(er));
	TAP_CHECK_GOTO(len == (int)sizeof(er) && er.h.error == 0, out);
	tap_diag("LOOKUP: entry %llu ms, attr %llu ms",
	    (unsigned long long)valid_ms(er.e.entry_valid,
	    er.e.entry_valid_nsec), (unsigned long long)valid_ms(
	    er.e.attr_valid, er.e.attr_valid_nsec));
	TAP_CHECK_GOTO(valid_ms(er.e.entry_valid, er.e.entry_valid_nsec) <=
	    1000, out);
	TAP_CHECK_GOTO(valid_ms(er.e.attr_valid, er.e.attr_valid_nsec) <=
	    1000, out);
	memset(&gi, 0, sizeof(gi));
	memset(&ar, 0, sizeof(ar));
	len = request(&t, 1, FUSE_GETATTR, er.e.nodeid, &gi, sizeof(gi), &ar,
	    sizeof(ar));
	TAP_CHECK_GOTO(len == (int)sizeof(ar) && ar.h.error == 0, out);
	TAP_CHECK_GOTO(valid_ms(ar.a.attr_valid, ar.a.attr_valid_nsec) <=
	    1000, out);
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

static int
test_bad_args(void)
{
	struct vdrv_env		env;
	struct fusefs_opts	opts;
	char			err[256], dir[] = "/tmp/fs_test.XXXXXX";
	static const char	*tags[] = { "", "0123456789012345678901234567890123456" };
	size_t			i;
	int			rc = TAP_FAIL;

	TAP_CHECK(mkdtemp(dir) != NULL);
	TAP_CHECK_GOTO(vdrv_env_init(&env, 1 << 20) == 0, out_dir);
	fusefs_opts_init(&opts);
	opts.root = dir;
	for (i = 0; i < ARRAY_SIZE(tags); i++) {
		errno = 0;
		TAP_CHECK_GOTO(virtio_fs_create(&env.host, VDRV_BASE(0),
		    VDRV_IRQ(0), &opts, tags[i], DAX_SLOT, DAX_GPA, err,
		    sizeof(err)) == NULL && errno == EINVAL, out);
	}
	opts.dax_window = 3 << 20;	/* not whole 2 MiB ranges */
	TAP_CHECK_GOTO(virtio_fs_create(&env.host, VDRV_BASE(0), VDRV_IRQ(0),
	    &opts, "share", DAX_SLOT, DAX_GPA, err, sizeof(err)) == NULL, out);
	opts.dax_window = 0;
	opts.root = "/nonexistent/fs_test";
	TAP_CHECK_GOTO(virtio_fs_create(&env.host, VDRV_BASE(0), VDRV_IRQ(0),
	    &opts, "share", DAX_SLOT, DAX_GPA, err, sizeof(err)) == NULL, out);
	TAP_CHECK_GOTO(err[0] != '\0', out);
	rc = TAP_PASS;
out:
	vdrv_env_fini(&env);
out_dir:
	rmdir(dir);
	return rc;
}

/* INIT, LOOKUP, GETATTR, READ through the request queue. */
static int
test_requests(void)
{
	struct tfs		 t;
	struct fuse_open_in	 oi;
	struct fuse_read_in	 ri;
	struct fuse_getattr_in	 gi;
	struct {
		struct fuse_out_header	h;
		struct fuse_attr_out	a;
	} ar;
	struct {
		struct fuse_out_header	h;
		struct fuse_open_out	o;
	} orr;
	struct {
		struct fuse_out_header	h;
		char			data[64];
	} rr;
	uint64_t	node, size = 0;
	int		len, rc = TAP_FAIL;

	TAP_CHECK(setup(&t, false) == 0);
	TAP_CHECK_GOTO(fuse_init(&t, 0, NULL) == 0, out);
	node = lookup(&t, "hello.txt", &size);
	TAP_CHECK_GOTO(node != 0 && size == strlen(HELLO), out);
	TAP_CHECK_GOTO(lookup(&t, "missing", NULL) == 0, out);
	memset(&gi, 0, sizeof(gi));
	len = request(&t, 1, FUSE_GETATTR, FUSE_ROOT_ID, &gi, sizeof(gi), &ar,
	    sizeof(ar));
	TAP_CHECK_GOTO(len == (int)sizeof(ar) && ar.h.error == 0 &&
	    S_ISDIR(ar.a.attr.mode), out);
	memset(&oi, 0, sizeof(oi));
	oi.flags = O_RDONLY;
	len = request(&t, 1, FUSE_OPEN, node, &oi, sizeof(oi), &orr,
	    sizeof(orr));
	TAP_CHECK_GOTO(len == (int)sizeof(orr) && orr.h.error == 0, out);
	memset(&ri, 0, sizeof(ri));
	ri.fh = orr.o.fh;
	ri.size = sizeof(rr.data);
	memset(&rr, 0, sizeof(rr));
	len = request(&t, 1, FUSE_READ, node, &ri, sizeof(ri), &rr,
	    sizeof(rr));
	TAP_CHECK_GOTO(len == (int)(sizeof(rr.h) + strlen(HELLO)) &&
	    rr.h.error == 0 && memcmp(rr.data, HELLO, strlen(HELLO)) == 0,
	    out);
	/* FORGET on hiprio: no reply, pushed with length 0. */
	{
		struct fuse_forget_in	fi = { .nlookup = 1 };

		TAP_CHECK_GOTO(request(&t, 0, FUSE_FORGET, node, &fi,
		    sizeof(fi), NULL, 0) == 0, out);
	}
	TAP_CHECK_GOTO(!virtio_dev_needs_reset(t.dev), out);
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

static bool
needs_reset(void *dev)
{
	return virtio_dev_needs_reset(dev);
}

/* A request whose header claims more bytes than the chain holds: the
 * device stops serving (NEEDS_RESET); after a reset it serves again. */
static int
test_malformed_then_reset(void)
{
	struct tfs		t;
	struct fuse_in_header	h;
	struct vdrv_buf		b[2];
	uint64_t		in_gpa, out_gpa;
	int			rc = TAP_FAIL;

	TAP_CHECK(setup(&t, false) == 0);
	TAP_CHECK_GOTO(fuse_init(&t, 0, NULL) == 0, out);
	memset(&h, 0, sizeof(h));
	h.len = 4096;
	h.opcode = FUSE_GETATTR;
	h.unique = 99;
	h.nodeid = FUSE_ROOT_ID;
	in_gpa = vdrv_alloc_data(&t.env, &h, sizeof(h));
	out_gpa = vdrv_alloc(&t.env, 256, 8);
	b[0] = (struct vdrv_buf){ in_gpa, sizeof(h), false };
	b[1] = (struct vdrv_buf){ out_gpa, 256, true };
	TAP_CHECK_GOTO(vdrv_add(&t.d, 1, b, 2, false) >= 0, out);
	vdrv_kick(&t.d, 1);
	vdrv_env_run_until(&t.env, needs_reset, t.dev, WAIT_MS);
	TAP_CHECK_GOTO(virtio_dev_needs_reset(t.dev), out);
	TAP_CHECK_GOTO(vdrv_read(&t.d, VIRTIO_MMIO_STATUS) &
	    VIRTIO_STATUS_NEEDS_RESET, out);
	/* The driver resets and starts over. */
	TAP_CHECK_GOTO(vdrv_start(&t.d, ~0ULL, 64) == 0, out);
	TAP_CHECK_GOTO(!virtio_dev_needs_reset(t.dev), out);
	TAP_CHECK_GOTO(fuse_init(&t, 0, NULL) == 0, out);
	TAP_CHECK_GOTO(lookup(&t, "hello.txt", NULL) != 0, out);
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

/* SETUPMAPPING puts the file's pages into the window, REMOVEMAPPING
 * puts zeroes back. */
static int
test_dax_mapping(void)
{
	struct tfs		t;
	struct fuse_init_out	io;
	struct fuse_open_in	oi;
	struct fuse_setupmapping_in sm;
	/* fuse_removemapping_in then the ranges, unpadded (as Linux). */
	uint8_t			rm[sizeof(struct fuse_removemapping_in) +
				    sizeof(struct fuse_removemapping_one)];
	struct fuse_removemapping_in	rin = { .count = 1 };
	struct fuse_removemapping_one	one = { 2 << 20, 2 << 20 };
	struct {
		struct fuse_out_header	h;
		struct fuse_open_out	o;
	} orr;
	struct fuse_out_header	oh;
	uint8_t			*win;
	void			*hva;
	uint64_t		node;
	int			len, rc = TAP_FAIL;

	TAP_CHECK(setup(&t, true) == 0);
	TAP_CHECK_GOTO(hv_fake_slot(t.env.hv, DAX_SLOT, NULL, NULL, &hva,
	    NULL), out);
	win = hva;
	TAP_CHECK_GOTO(fuse_init(&t, FUSE_MAP_ALIGNMENT, &io) == 0, out);
	node = lookup(&t, "hello.txt", NULL);
	TAP_CHECK_GOTO(node != 0, out);
	memset(&oi, 0, sizeof(oi));
	oi.flags = O_RDWR;
	len = request(&t, 1, FUSE_OPEN, node, &oi, sizeof(oi), &orr,
	    sizeof(orr));
	TAP_CHECK_GOTO(len == (int)sizeof(orr) && orr.h.error == 0, out);
	memset(&sm, 0, sizeof(sm));
	sm.fh = orr.o.fh;
	sm.foffset = 0;
	sm.len = 2 << 20;
	sm.flags = FUSE_SETUPMAPPING_FLAG_READ | FUSE_SETUPMAPPING_FLAG_WRITE;
	sm.moffset = 2 << 20;
	len = request(&t, 1, FUSE_SETUPMAPPING, node, &sm, sizeof(sm), &oh,
	    sizeof(oh));
	if (len == (int)sizeof(oh) && oh.error == -ENOSYS) {
		teardown(&t);
		tap_diag("the server has no SETUPMAPPING yet");
		return TAP_SKIP;
	}
	if (len != (int)sizeof(oh) || oh.error != 0)
		tap_diag("SETUPMAPPING: used %d, error %d", len, oh.error);
	TAP_CHECK_GOTO(len == (int)sizeof(oh) && oh.error == 0, out);
	TAP_CHECK_GOTO(memcmp(win + (2 << 20), HELLO, strlen(HELLO)) == 0,
	    out);
	TAP_CHECK_GOTO(win[0] == 0, out);	/* the rest stays zero */
	memcpy(rm, &rin, sizeof(rin));
	memcpy(rm + sizeof(rin), &one, sizeof(one));
	len = request(&t, 1, FUSE_REMOVEMAPPING, node, rm, sizeof(rm), &oh,
	    sizeof(oh));
	TAP_CHECK_GOTO(len == (int)sizeof(oh) && oh.error == 0, out);
	TAP_CHECK_GOTO(win[2 << 20] == 0, out);
	/* Outside the window: refused, the device goes on. */
	sm.moffset = DAX_WINDOW;
	len = request(&t, 1, FUSE_SETUPMAPPING, node, &sm, sizeof(sm), &oh,
	    sizeof(oh));
	TAP_CHECK_GOTO(len == (int)sizeof(oh) && oh.error != 0, out);
	TAP_CHECK_GOTO(!virtio_dev_needs_reset(t.dev), out);
	rc = TAP_PASS;
out:
	teardown(&t);
	return rc;
}

static const struct tap_case cases[] = {
	{ "config space: tag, one request queue, no region without DAX",
	    test_config },
	{ "DAX: shared memory region 0 at the window, a memory slot",
	    test_shm_region },
	{ "DAX: an 8 GiB window is what region 0 advertises and maps",
	    test_shm_region_size },
	{ "entry and attribute lifetimes at most 1 s (no invalidations)",
	    test_cache_lifetimes },
	{ "bad tag, window size or root refused", test_bad_args },
	{ "INIT, LOOKUP, GETATTR, OPEN, READ, FORGET on hiprio",
	    test_requests },
	{ "malformed request: NEEDS_RESET, then reset and INIT again",
	    test_malformed_then_reset },
	{ "DAX: SETUPMAPPING maps the file, REMOVEMAPPING zeroes",
	    test_dax_mapping },
};

int
main(void)
{
	log_init("fs_test", LOG_NORMAL);
	return tap_run(cases, ARRAY_SIZE(cases), 60);
}
