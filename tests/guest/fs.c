/*
 * virtio-fs (virtio 1.2 section 5.11): the test guest speaks FUSE to the
 * device's server, the way Linux's fs/fuse/virtio_fs.c frames requests:
 * one chain per request, the request readable, room for the reply
 * writable; FORGET on the hiprio queue with no reply.  The share must
 * hold hello.txt (its first line is printed) and a symlink "escape"
 * pointing out of the share (/etc).  Protocol structs come from the FUSE
 * kernel header.
 */
#include <linux/fuse.h>

#include "testguest.h"

#define ID_FS		26
#define FS_HIPRIO	0
#define FS_REQUEST	1
#define FS_TAG_MAX	36
#define FS_WAIT		(5 * TSC_SECOND)
#define FS_IN_MAX	512
#define FS_OUT_MAX	4096

/* virtio-mmio shared memory region registers (section 4.2.2). */
#define MMIO_SHM_SEL		0x0ac
#define MMIO_SHM_LEN_LOW	0x0b0
#define MMIO_SHM_LEN_HIGH	0x0b4
#define MMIO_SHM_BASE_LOW	0x0b8
#define MMIO_SHM_BASE_HIGH	0x0bc

/* Linux's open flags and mode bits (the server takes them as is). */
#define L_O_RDONLY	0
#define L_O_WRONLY	01
#define L_O_CREAT	0100
#define L_O_TRUNC	01000
#define L_S_IFMT	0170000
#define L_S_IFDIR	0040000
#define L_S_IFREG	0100000
#define L_S_IFLNK	0120000

#define GUEST_TEXT	"written by the test guest\n"

struct fs {
	struct vdev	 d;
	struct vq	*hq, *rq;
	uint8_t		*in, *out;
	uint64_t	 unique;
};

/*
 * Send opcode for nodeid with body a then b (either may be empty) on the
 * request queue; wait for the reply (at most outlen bytes of room).
 * Returns the reply's error (0 or -errno); *body points at what follows
 * the reply header and *blen says how many bytes that is.
 */
static int32_t
fs_call(struct fs *f, uint32_t opcode, uint64_t nodeid, const void *a,
    uint32_t alen, const void *b, uint32_t blen, uint32_t outlen,
    const uint8_t **body, uint32_t *bodylen, const char *what)
{
	struct fuse_in_header *h = (struct fuse_in_header *)f->in;
	struct fuse_out_header *oh = (struct fuse_out_header *)f->out;
	struct vseg s[2];
	uint32_t len;

	if (sizeof(*h) + alen + blen > FS_IN_MAX || outlen > FS_OUT_MAX)
		tg_fail("fs: %s: request too large", what);
	memset(h, 0, sizeof(*h));
	h->len = sizeof(*h) + alen + blen;
	h->opcode = opcode;
	h->unique = ++f->unique;
	h->nodeid = nodeid;
	if (alen > 0)
		memcpy(f->in + sizeof(*h), a, alen);
	if (blen > 0)
		memcpy(f->in + sizeof(*h) + alen, b, blen);
	memset(f->out, 0xa5, outlen);
	s[0].addr = f->in;
	s[0].len = h->len;
	s[0].write = 0;
	s[1].addr = f->out;
	s[1].len = outlen;
	s[1].write = 1;
	if (vq_add(f->rq, s, 2, 0, NULL) < 0)
		tg_fail("fs: %s: request queue full", what);
	vq_kick(&f->d, f->rq);
	(void)vq_wait(&f->d, f->rq, &len, FS_WAIT, what);
	if (len < sizeof(*oh) || len > outlen || oh->len != len ||
	    oh->unique != f->unique)
		tg_fail("fs: %s: bad reply (used %u, header len %u, unique "
		    "%lu for %lu)", what, len, oh->len, oh->unique, f->unique);
	if (oh->error > 0 || oh->error < -4095)
		tg_fail("fs: %s: reply error %d out of range", what,
		    oh->error);
	if (oh->error != 0 && len != sizeof(*oh))
		tg_fail("fs: %s: error %d with a body", what, oh->error);
	if (body != NULL)
		*body = f->out + sizeof(*oh);
	if (bodylen != NULL)
		*bodylen = len - sizeof(*oh);
	return oh->error;
}

/* A call that must succeed with a body of at least min bytes. */
static const uint8_t *
fs_ok(struct fs *f, uint32_t opcode, uint64_t nodeid, const void *a,
    uint32_t alen, const void *b, uint32_t blen, uint32_t min,
    uint32_t *bodylen, const char *what)
{
	const uint8_t *body;
	uint32_t n;
	int32_t e;

	e = fs_call(f, opcode, nodeid, a, alen, b, blen, FS_OUT_MAX, &body,
	    &n, what);
	if (e != 0)
		tg_fail("fs: %s: error %d", what, e);
	if (n < min)
		tg_fail("fs: %s: reply body %u bytes, want %u", what, n, min);
	if (bodylen != NULL)
		*bodylen = n;
	return body;
}

static void
entry_copy(struct fuse_entry_out *e, const uint8_t *body)
{
	memcpy(e, body, sizeof(*e));
}

/* LOOKUP name under parent: 0 or -errno; *e filled on success. */
static int32_t
fs_lookup(struct fs *f, uint64_t parent, const char *name,
    struct fuse_entry_out *e)
{
	const uint8_t *body;
	uint32_t n;
	int32_t err;

	err = fs_call(f, FUSE_LOOKUP, parent, name, strlen(name) + 1, NULL, 0,
	    FS_OUT_MAX, &body, &n, "LOOKUP");
	if (err == 0) {
		if (n < sizeof(*e))
			tg_fail("fs: LOOKUP %s: short entry (%u bytes)", name, n);
		entry_copy(e, body);
	}
	return err;
}

/* FORGET on the hiprio queue: readable only, used length 0. */
static void
fs_forget(struct fs *f, uint64_t nodeid, uint64_t nlookup)
{
	struct fuse_in_header *h = (struct fuse_in_header *)f->in;
	struct fuse_forget_in *fi = (struct fuse_forget_in *)(h + 1);
	struct vseg s;
	uint32_t len;

	memset(h, 0, sizeof(*h) + sizeof(*fi));
	h->len = sizeof(*h) + sizeof(*fi);
	h->opcode = FUSE_FORGET;
	h->unique = ++f->unique;
	h->nodeid = nodeid;
	fi->nlookup = nlookup;
	s.addr = f->in;
	s.len = h->len;
	s.write = 0;
	if (vq_add(f->hq, &s, 1, 0, NULL) < 0)
		tg_fail("fs: hiprio queue full");
	vq_kick(&f->d, f->hq);
	(void)vq_wait(&f->d, f->hq, &len, FS_WAIT, "FORGET on hiprio");
	if (len != 0)
		tg_fail("fs: FORGET answered with %u bytes", len);
}

static void
fs_release(struct fs *f, uint32_t opcode, uint64_t nodeid, uint64_t fh)
{
	struct fuse_release_in ri;

	memset(&ri, 0, sizeof(ri));
	ri.fh = fh;
	(void)fs_ok(f, opcode, nodeid, &ri, sizeof(ri), NULL, 0, 0, NULL,
	    opcode == FUSE_RELEASE ? "RELEASE" : "RELEASEDIR");
}

/* Tag from config space, shared memory region 0 from the registers. */
static void
fs_config(struct fs *f)
{
	char tag[FS_TAG_MAX + 1];
	uint64_t len, base;
	unsigned i;

	for (i = 0; i < FS_TAG_MAX; i++)
		tag[i] = (char)vdev_cfg8(&f->d, i);
	tag[FS_TAG_MAX] = '\0';
	tg_printf("fs: tag %s, %u request queue(s)\n", tag,
	    vdev_cfg32(&f->d, FS_TAG_MAX));
	mmio_write32(f->d.base + MMIO_SHM_SEL, 0);
	len = mmio_read32(f->d.base + MMIO_SHM_LEN_LOW) |
	    (uint64_t)mmio_read32(f->d.base + MMIO_SHM_LEN_HIGH) << 32;
	base = mmio_read32(f->d.base + MMIO_SHM_BASE_LOW) |
	    (uint64_t)mmio_read32(f->d.base + MMIO_SHM_BASE_HIGH) << 32;
	if (len == ~0ULL)
		tg_printf("fs: no DAX window\n");
	else
		tg_printf("fs: DAX window 0x%lx bytes at 0x%lx\n", len, base);
}

static void
fs_init(struct fs *f)
{
	struct fuse_init_in in;
	struct fuse_init_out out;
	const uint8_t *body;

	memset(&in, 0, sizeof(in));
	in.major = FUSE_KERNEL_VERSION;
	in.minor = 31;
	in.max_readahead = 65536;
	in.flags = FUSE_DO_READDIRPLUS | FUSE_BIG_WRITES | FUSE_MAX_PAGES;
	body = fs_ok(f, FUSE_INIT, 0, &in, sizeof(in), NULL, 0, 24, NULL,
	    "INIT");
	memset(&out, 0, sizeof(out));
	memcpy(&out, body, 24);		/* up to max_write: every minor */
	if (out.major != FUSE_KERNEL_VERSION || out.minor < 31)
		tg_fail("fs: INIT answered %u.%u", out.major, out.minor);
	tg_printf("fs: init %u.%u, max_write %u\n", out.major, out.minor,
	    out.max_write);
}

/* READDIRPLUS of the root: count entries, find hello.txt; forget the
 * lookups the entries carried. */
static void
fs_readdirplus(struct fs *f, uint64_t hello_ino)
{
	struct fuse_open_in oi;
	struct fuse_open_out oo;
	struct fuse_read_in ri;
	struct fuse_direntplus dp;
	const uint8_t *body;
	uint32_t n, off, rec;
	unsigned count = 0, found = 0;
	uint64_t fh;

	memset(&oi, 0, sizeof(oi));
	oi.flags = L_O_RDONLY;
	body = fs_ok(f, FUSE_OPENDIR, FUSE_ROOT_ID, &oi, sizeof(oi), NULL, 0,
	    sizeof(oo), NULL, "OPENDIR");
	memcpy(&oo, body, sizeof(oo));
	fh = oo.fh;
	memset(&ri, 0, sizeof(ri));
	ri.fh = fh;
	ri.size = FS_OUT_MAX - sizeof(struct fuse_out_header);
	for (;;) {
		body = fs_ok(f, FUSE_READDIRPLUS, FUSE_ROOT_ID, &ri, sizeof(ri),
		    NULL, 0, 0, &n, "READDIRPLUS");
		if (n == 0)
			break;
		for (off = 0; off + FUSE_NAME_OFFSET_DIRENTPLUS <= n;
		    off += rec) {
			memcpy(&dp, body + off, sizeof(dp));
			rec = FUSE_DIRENTPLUS_SIZE(&dp);
			if (dp.dirent.namelen == 0 || off + rec > n)
				tg_fail("fs: READDIRPLUS: bad record at %u",
				    off);
			count++;
			if (dp.dirent.namelen == 9 && memcmp(body + off +
			    FUSE_NAME_OFFSET_DIRENTPLUS, "hello.txt", 9) == 0 &&
			    dp.entry_out.attr.ino == hello_ino)
				found = 1;
			ri.offset = dp.dirent.off;
			if (dp.entry_out.nodeid != 0)
				fs_forget(f, dp.entry_out.nodeid, 1);
			/* fs_forget reused the request buffer only. */
		}
		if (count > 64)
			tg_fail("fs: READDIRPLUS does not end");
	}
	fs_release(f, FUSE_RELEASEDIR, FUSE_ROOT_ID, fh);
	if (!found)
		tg_fail("fs: READDIRPLUS: no hello.txt among %u entries",
		    count);
	tg_printf("fs: readdirplus: %u entries, hello.txt found\n", count);
}

/* Things a hostile guest tries to get out of the share. */
static void
fs_escapes(struct fs *f, uint64_t root_ino)
{
	struct fuse_entry_out e, esc;
	struct fuse_open_in oi;
	int32_t err;

	/* ".." of the root is the root (or refused), never its parent. */
	err = fs_lookup(f, FUSE_ROOT_ID, "..", &e);
	if (err == 0) {
		if (e.attr.ino != root_ino)
			tg_fail("fs: LOOKUP .. of the root left the share");
		fs_forget(f, e.nodeid, 1);
	}
	/* A name with a slash is not a name. */
	if (fs_lookup(f, FUSE_ROOT_ID, "../etc", &e) == 0)
		tg_fail("fs: LOOKUP ../etc succeeded");
	if (fs_lookup(f, FUSE_ROOT_ID, "escape/passwd", &e) == 0)
		tg_fail("fs: LOOKUP escape/passwd succeeded");
	/* The symlink is a node, but never a directory to walk through or
	 * a file to open. */
	err = fs_lookup(f, FUSE_ROOT_ID, "escape", &esc);
	if (err != 0)
		tg_fail("fs: LOOKUP escape: error %d (make the symlink)", err);
	if ((esc.attr.mode & L_S_IFMT) != L_S_IFLNK)
		tg_fail("fs: escape is not a symlink (mode 0x%x)",
		    esc.attr.mode);
	if (fs_lookup(f, esc.nodeid, "passwd", &e) == 0)
		tg_fail("fs: LOOKUP passwd under a symlink to /etc succeeded");
	memset(&oi, 0, sizeof(oi));
	oi.flags = L_O_RDONLY;
	if (fs_call(f, FUSE_OPEN, esc.nodeid, &oi, sizeof(oi), NULL, 0,
	    FS_OUT_MAX, NULL, NULL, "OPEN escape") == 0)
		tg_fail("fs: OPEN of a symlink succeeded");
	fs_forget(f, esc.nodeid, 1);
	/* A node id the server never gave out. */
	if (fs_lookup(f, 0x7fff0000ULL, "passwd", &e) == 0)
		tg_fail("fs: LOOKUP under a made-up node id succeeded");
	tg_printf("fs: escapes refused: .., slashes, symlink as directory "
	    "and as file, made-up node id\n");
}

void
test_virtio_fs(const char *arg)
{
	struct fs f;
	struct fuse_entry_out e, ce;
	struct fuse_getattr_in gi;
	struct fuse_attr_out ao;
	struct fuse_open_in oi;
	struct fuse_open_out oo;
	struct fuse_read_in ri;
	struct fuse_write_in wi;
	struct fuse_write_out wo;
	struct fuse_create_in ci;
	struct fuse_rename_in rn;
	static const char rename_names[] = "guest.txt\0renamed.txt";
	const uint8_t *body;
	uint64_t root_ino, hello;
	uint32_t n, i;
	char text[128];
	int32_t err;

	(void)arg;
	memset(&f, 0, sizeof(f));
	vdev_open(&f.d, ID_FS, "fs", 0);
	f.hq = vdev_queue(&f.d, FS_HIPRIO);
	f.rq = vdev_queue(&f.d, FS_REQUEST);
	vdev_driver_ok(&f.d);
	f.in = vmem_alloc(FS_IN_MAX, 64);
	f.out = vmem_alloc(FS_OUT_MAX, 64);
	fs_config(&f);
	fs_init(&f);

	/* GETATTR of the root, LOOKUP + GETATTR of hello.txt. */
	memset(&gi, 0, sizeof(gi));
	body = fs_ok(&f, FUSE_GETATTR, FUSE_ROOT_ID, &gi, sizeof(gi), NULL, 0,
	    sizeof(ao), NULL, "GETATTR root");
	memcpy(&ao, body, sizeof(ao));
	if ((ao.attr.mode & L_S_IFMT) != L_S_IFDIR)
		tg_fail("fs: the root is not a directory (mode 0x%x)",
		    ao.attr.mode);
	root_ino = ao.attr.ino;
	if ((err = fs_lookup(&f, FUSE_ROOT_ID, "hello.txt", &e)) != 0)
		tg_fail("fs: LOOKUP hello.txt: error %d", err);
	hello = e.nodeid;
	body = fs_ok(&f, FUSE_GETATTR, hello, &gi, sizeof(gi), NULL, 0,
	    sizeof(ao), NULL, "GETATTR hello.txt");
	memcpy(&ao, body, sizeof(ao));
	if (ao.attr.size != e.attr.size || ao.attr.ino != e.attr.ino)
		tg_fail("fs: GETATTR and LOOKUP disagree about hello.txt");
	tg_printf("fs: hello.txt: node %lu, %lu bytes\n", hello,
	    ao.attr.size);
	if (fs_lookup(&f, FUSE_ROOT_ID, "no-such-file", &ce) != -2)
		tg_fail("fs: LOOKUP no-such-file: not ENOENT");

	/* OPEN + READ hello.txt: its first line goes to the host. */
	memset(&oi, 0, sizeof(oi));
	oi.flags = L_O_RDONLY;
	body = fs_ok(&f, FUSE_OPEN, hello, &oi, sizeof(oi), NULL, 0,
	    sizeof(oo), NULL, "OPEN hello.txt");
	memcpy(&oo, body, sizeof(oo));
	memset(&ri, 0, sizeof(ri));
	ri.fh = oo.fh;
	ri.size = sizeof(text) - 1;
	body = fs_ok(&f, FUSE_READ, hello, &ri, sizeof(ri), NULL, 0, 0, &n,
	    "READ hello.txt");
	if (n != ao.attr.size && n != ri.size)
		tg_fail("fs: READ gave %u of %lu bytes", n, ao.attr.size);
	for (i = 0; i < n && body[i] != '\n'; i++)
		text[i] = (char)body[i];
	text[i] = '\0';
	tg_printf("fs: read: %s\n", text);
	fs_release(&f, FUSE_RELEASE, hello, oo.fh);

	fs_readdirplus(&f, e.attr.ino);

	/* CREATE + WRITE guest.txt, then RENAME it. */
	memset(&ci, 0, sizeof(ci));
	ci.flags = L_O_WRONLY | L_O_CREAT | L_O_TRUNC;
	ci.mode = L_S_IFREG | 0644;
	ci.umask = 022;
	body = fs_ok(&f, FUSE_CREATE, FUSE_ROOT_ID, &ci, sizeof(ci),
	    "guest.txt", sizeof("guest.txt"), sizeof(ce) + sizeof(oo), NULL,
	    "CREATE guest.txt");
	entry_copy(&ce, body);
	memcpy(&oo, body + sizeof(ce), sizeof(oo));
	memset(&wi, 0, sizeof(wi));
	wi.fh = oo.fh;
	wi.size = sizeof(GUEST_TEXT) - 1;
	body = fs_ok(&f, FUSE_WRITE, ce.nodeid, &wi, sizeof(wi), GUEST_TEXT,
	    wi.size, sizeof(wo), NULL, "WRITE guest.txt");
	memcpy(&wo, body, sizeof(wo));
	if (wo.size != wi.size)
		tg_fail("fs: WRITE wrote %u of %u bytes", wo.size, wi.size);
	fs_release(&f, FUSE_RELEASE, ce.nodeid, oo.fh);
	memset(&rn, 0, sizeof(rn));
	rn.newdir = FUSE_ROOT_ID;
	(void)fs_ok(&f, FUSE_RENAME, FUSE_ROOT_ID, &rn, sizeof(rn),
	    rename_names, sizeof(rename_names), 0, NULL, "RENAME");
	if (fs_lookup(&f, FUSE_ROOT_ID, "guest.txt", &e) == 0)
		tg_fail("fs: guest.txt still there after RENAME");
	if ((err = fs_lookup(&f, FUSE_ROOT_ID, "renamed.txt", &e)) != 0 ||
	    e.nodeid != ce.nodeid)
		tg_fail("fs: renamed.txt: error %d or another node", err);
	tg_printf("fs: created guest.txt, wrote %u bytes, renamed it to "
	    "renamed.txt\n", wo.size);
	fs_forget(&f, ce.nodeid, 2);	/* CREATE and LOOKUP */

	fs_escapes(&f, root_ino);
	fs_forget(&f, hello, 2);	/* the two LOOKUPs */
	tg_printf("fs: FORGET on hiprio: ok\n");
	vdev_close(&f.d);
}
