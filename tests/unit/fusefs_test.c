/*
 * Unit test for the FUSE server core (fusefs/fusefs.c): hand-built
 * requests straight into fusefs_handle() against a temporary directory,
 * no kernel involved.  Covers INIT negotiation, the node and handle
 * tables, every escape we know of, read-only shares, malformed sizes (and
 * a random-request loop), DAX mapping bookkeeping, inotify invalidation
 * and the snapshot round trip.
 */
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/capability.h>
#include <linux/fuse.h>

#include "fusefs/fusefs.h"
#include "reactor/reactor.h"
#include "tests/tap.h"

#define OUTSZ	(1 << 17)

static char	 dir[64];
/* Per thread: requests may come from several threads at once. */
static __thread uint8_t	 obuf[OUTSZ] __attribute__((aligned(16)));
static _Atomic uint64_t	 uniq = 1;

struct rep {
	ssize_t		 rc;	/* fusefs_handle's return */
	int		 err;	/* the reply's error */
	uint8_t		*body;
	size_t		 len;	/* body length */
};

/* Send opcode on nodeid with body a + b (b may be NULL). */
static struct rep
req2(struct fusefs *fs, uint32_t op, uint64_t nodeid, const void *a,
    size_t alen, const void *b, size_t blen)
{
	struct fuse_in_header	 h;
	struct fuse_out_header	 oh;
	struct iovec		 in[3], out[2];
	struct rep		 r;

	memset(&h, 0, sizeof(h));
	h.len = (uint32_t)(sizeof(h) + alen + blen);
	h.opcode = op;
	h.unique = uniq++;
	h.nodeid = nodeid;
	in[0].iov_base = &h;
	in[0].iov_len = sizeof(h);
	in[1].iov_base = (void *)a;
	in[1].iov_len = alen;
	in[2].iov_base = (void *)b;
	in[2].iov_len = blen;
	/* Split the reply buffer to exercise the scatter path. */
	out[0].iov_base = obuf;
	out[0].iov_len = 24;
	out[1].iov_base = obuf + 24;
	out[1].iov_len = OUTSZ - 24;
	memset(&r, 0, sizeof(r));
	memset(obuf, 0xa5, 64);
	r.rc = fusefs_handle(fs, in, 3, out, 2);
	if (r.rc >= (ssize_t)sizeof(oh)) {
		memcpy(&oh, obuf, sizeof(oh));
		r.err = oh.error;
		r.body = obuf + sizeof(oh);
		r.len = (size_t)r.rc - sizeof(oh);
		if (oh.len != r.rc || oh.unique != h.unique)
			r.err = 12345;
	}
	return r;
}

static struct rep
req(struct fusefs *fs, uint32_t op, uint64_t nodeid, const void *a,
    size_t alen)
{
	return req2(fs, op, nodeid, a, alen, NULL, 0);
}

static struct rep
req_name(struct fusefs *fs, uint32_t op, uint64_t nodeid, const void *a,
    size_t alen, const char *name)
{
	return req2(fs, op, nodeid, a, alen, name, strlen(name) + 1);
}

static int
do_init(struct fusefs *fs, uint32_t minor, uint32_t flags,
    struct fuse_init_out *o)
{
	struct fuse_init_in	in;
	struct rep		r;

	memset(&in, 0, sizeof(in));
	in.major = 7;
	in.minor = minor;
	in.max_readahead = 1 << 17;
	in.flags = flags;
	r = req(fs, FUSE_INIT, 0, &in, sizeof(in));
	if (r.err == 0 && o != NULL && r.len >= sizeof(*o))
		memcpy(o, r.body, sizeof(*o));
	return r.err;
}

static int
unlink_made(void)
{
	char	p[256];

	snprintf(p, sizeof(p), "%s/made", dir);
	return unlink(p);
}

static void
rm_tree(void)
{
	char	cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		tap_diag("cleanup of %s failed", dir);
}

static struct fusefs *
mkfs(bool ro, uint64_t dax, const struct fusefs_transport *tp)
{
	struct fusefs_opts	 o;
	struct fusefs		*fs;
	char			 err[256];

	fusefs_opts_init(&o);
	o.root = dir;
	o.readonly = ro;
	o.dax_window = dax;
	fs = fusefs_create(NULL, &o, tp, err, sizeof(err));
	if (fs == NULL)
		tap_diag("fusefs_create: %s", err);
	else if (do_init(fs, 31, 0xffffffff, NULL) != 0) {
		fusefs_free(fs);
		return NULL;
	}
	return fs;
}

static void
put_file(const char *rel, const char *data)
{
	char	p[256];
	FILE	*f;

	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	if ((f = fopen(p, "w")) != NULL) {
		fputs(data, f);
		fclose(f);
	}
}

static uint64_t
lookup(struct fusefs *fs, uint64_t parent, const char *name,
    struct fuse_entry_out *eo)
{
	struct fuse_entry_out	e;
	struct rep		r;

	r = req_name(fs, FUSE_LOOKUP, parent, NULL, 0, name);
	if (r.err != 0 || r.len != sizeof(e))
		return 0;
	memcpy(&e, r.body, sizeof(e));
	if (eo != NULL)
		*eo = e;
	return e.nodeid;
}

static uint64_t
open_fh(struct fusefs *fs, uint64_t node, uint32_t flags, uint32_t op)
{
	struct fuse_open_in	in = { .flags = flags };
	struct fuse_open_out	oo;
	struct rep		r;

	r = req(fs, op, node, &in, sizeof(in));
	if (r.err != 0 || r.len != sizeof(oo))
		return 0;
	memcpy(&oo, r.body, sizeof(oo));
	return oo.fh;
}

static int
forget(struct fusefs *fs, uint64_t node, uint64_t n)
{
	struct fuse_forget_in	in = { .nlookup = n };

	return (int)req(fs, FUSE_FORGET, node, &in, sizeof(in)).rc;
}

static uint64_t
nodes(struct fusefs *fs)
{
	struct fusefs_stats	st;

	fusefs_get_stats(fs, &st);
	return st.nodes;
}

static int
setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/fusefs_test.XXXXXX");
	return mkdtemp(dir) != NULL ? 0 : -1;
}

/* --- cases --------------------------------------------------------- */

static int
t_init(void)
{
	struct fusefs_opts	 o;
	struct fuse_init_out	 io;
	struct fuse_init_in	 in;
	struct fusefs		*fs;
	struct rep		 r;
	char			 err[128];
	int			 rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	fusefs_opts_init(&o);
	o.root = dir;
	o.dax_window = 1 << 21;
	fs = fusefs_create(NULL, &o, NULL, err, sizeof(err));
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	/* Before INIT nothing else works. */
	r = req_name(fs, FUSE_LOOKUP, 1, NULL, 0, "x");
	TAP_CHECK_GOTO(r.err == -EIO, out);
	/* Too old. */
	TAP_CHECK_GOTO(do_init(fs, 30, 0, NULL) == -EPROTO, out);
	/* A newer major: we answer with ours and wait for a retry. */
	memset(&in, 0, sizeof(in));
	in.major = 8;
	r = req(fs, FUSE_INIT, 0, &in, sizeof(in));
	TAP_CHECK_GOTO(r.err == 0 && r.len >= 8, out);
	memcpy(&io, r.body, 8);
	TAP_CHECK_GOTO(io.major == 7, out);
	/* A short (pre-7.36) INIT body is fine. */
	memset(&in, 0, sizeof(in));
	in.major = 7;
	in.minor = 31;
	in.flags = FUSE_DO_READDIRPLUS | FUSE_MAP_ALIGNMENT | FUSE_MAX_PAGES |
	    FUSE_EXPORT_SUPPORT | FUSE_WRITEBACK_CACHE | FUSE_SPLICE_READ |
	    FUSE_PARALLEL_DIROPS | FUSE_POSIX_LOCKS;
	r = req(fs, FUSE_INIT, 0, &in, 16);
	TAP_CHECK_GOTO(r.err == 0 && r.len == sizeof(io), out);
	memcpy(&io, r.body, sizeof(io));
	TAP_CHECK_GOTO(io.major == 7 && io.minor == 31, out);
	TAP_CHECK_GOTO((io.flags & ~in.flags) == 0, out);
	TAP_CHECK_GOTO(io.flags & FUSE_DO_READDIRPLUS, out);
	TAP_CHECK_GOTO(io.flags & FUSE_PARALLEL_DIROPS, out);
	TAP_CHECK_GOTO(io.flags & FUSE_POSIX_LOCKS, out);
	TAP_CHECK_GOTO(!(io.flags & (FUSE_EXPORT_SUPPORT |
	    FUSE_WRITEBACK_CACHE | FUSE_SPLICE_READ)), out);
	TAP_CHECK_GOTO(io.flags & FUSE_MAP_ALIGNMENT, out);
	TAP_CHECK_GOTO(io.map_alignment == 12, out);
	TAP_CHECK_GOTO(io.max_write == 1 << 20 && io.max_pages == 256, out);
	/* A newer minor is accepted and answered with ours at most. */
	TAP_CHECK_GOTO(do_init(fs, 99, 0, &io) == 0, out);
	TAP_CHECK_GOTO(io.minor == FUSE_KERNEL_MINOR_VERSION, out);
	/* Unknown opcode: ENOSYS, not a failure of the transport. */
	r = req(fs, 4000, 1, NULL, 0);
	TAP_CHECK_GOTO(r.err == -ENOSYS, out);
	r = req(fs, FUSE_IOCTL, 1, NULL, 0);
	TAP_CHECK_GOTO(r.err == -ENOSYS, out);
	rc = TAP_PASS;
out:
	fusefs_free(fs);
out_rm:
	rm_tree();
	return rc;
}

static int
t_lookup(void)
{
	struct fusefs		*fs;
	struct fuse_entry_out	 e1, e2;
	struct fuse_getattr_in	 gi;
	struct fuse_attr_out	 ao;
	struct rep		 r;
	char			 a[256], b[256];
	int			 rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	put_file("f", "12345");
	snprintf(a, sizeof(a), "%s/f", dir);
	snprintf(b, sizeof(b), "%s/hard", dir);
	TAP_CHECK_GOTO(link(a, b) == 0, out_rm);
	fs = mkfs(false, 0, NULL);
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	TAP_CHECK_GOTO(lookup(fs, 1, "f", &e1) > 1, out);
	TAP_CHECK_GOTO(e1.attr.size == 5 && S_ISREG(e1.attr.mode), out);
	TAP_CHECK_GOTO(e1.entry_valid == 1 && e1.attr_valid == 1, out);
	/* A hard link is the same node. */
	TAP_CHECK_GOTO(lookup(fs, 1, "hard", &e2) == e1.nodeid, out);
	TAP_CHECK_GOTO(nodes(fs) == 2, out);
	memset(&gi, 0, sizeof(gi));
	r = req(fs, FUSE_GETATTR, e1.nodeid, &gi, sizeof(gi));
	TAP_CHECK_GOTO(r.err == 0 && r.len == sizeof(ao), out);
	memcpy(&ao, r.body, sizeof(ao));
	TAP_CHECK_GOTO(ao.attr.ino == e1.attr.ino && ao.attr.nlink == 2, out);
	r = req_name(fs, FUSE_LOOKUP, 1, NULL, 0, "missing");
	TAP_CHECK_GOTO(r.err == -ENOENT, out);
	/* Unknown nodeids are stale, not a crash. */
	r = req(fs, FUSE_GETATTR, 999999, &gi, sizeof(gi));
	TAP_CHECK_GOTO(r.err == -ESTALE, out);
	/* Two lookups: one forget leaves it, the second prunes it. */
	TAP_CHECK_GOTO(forget(fs, e1.nodeid, 1) == 0, out);
	TAP_CHECK_GOTO(nodes(fs) == 2, out);
	TAP_CHECK_GOTO(forget(fs, e1.nodeid, 1) == 0, out);
	TAP_CHECK_GOTO(nodes(fs) == 1, out);
	r = req(fs, FUSE_GETATTR, e1.nodeid, &gi, sizeof(gi));
	TAP_CHECK_GOTO(r.err == -ESTALE, out);
	/* The root is never pruned. */
	TAP_CHECK_GOTO(forget(fs, 1, 100) == 0, out);
	r = req(fs, FUSE_GETATTR, 1, &gi, sizeof(gi));
	TAP_CHECK_GOTO(r.err == 0, out);
	rc = TAP_PASS;
out:
	fusefs_free(fs);
out_rm:
	rm_tree();
	return rc;
}

static int
t_io(void)
{
	struct fusefs			*fs;
	struct fuse_create_in		 ci;
	struct fuse_entry_out		 eo;
	struct fuse_open_out		 oo;
	struct fuse_write_in		 wi;
	struct fuse_read_in		 ri;
	struct fuse_setattr_in		 si;
	struct fuse_mkdir_in		 mi;
	struct fuse_lseek_in		 li;
	struct fuse_copy_file_range_in	 cr;
	struct fuse_fallocate_in	 fa;
	struct fuse_lk_in		 lk;
	struct fuse_release_in		 rl;
	struct fuse_access_in		 ac;
	struct fuse_link_in		 ln;
	struct fuse_getxattr_in		 gx;
	struct fuse_setxattr_in		 sx;
	struct stat			 st;
	struct rep			 r;
	char				 p[256], xb[64];
	uint64_t			 f, fh, d, fh2, g, fhg;
	int				 rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	fs = mkfs(false, 0, NULL);
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	memset(&ci, 0, sizeof(ci));
	ci.flags = O_RDWR | O_CREAT;
	ci.mode = S_IFREG | 0640;
	r = req_name(fs, FUSE_CREATE, 1, &ci, sizeof(ci), "new");
	TAP_CHECK_GOTO(r.err == 0 && r.len == sizeof(eo) + sizeof(oo), out);
	memcpy(&eo, r.body, sizeof(eo));
	memcpy(&oo, r.body + sizeof(eo), sizeof(oo));
	f = eo.nodeid;
	fh = oo.fh;
	snprintf(p, sizeof(p), "%s/new", dir);
	TAP_CHECK_GOTO(stat(p, &st) == 0 && (st.st_mode & 07777) == 0640, out);
	/* Write with the payload split over two iovecs. */
	memset(&wi, 0, sizeof(wi));
	wi.fh = fh;
	wi.offset = 2;
	wi.size = 11;
	r = req2(fs, FUSE_WRITE, f, &wi, sizeof(wi), "hello world", 11);
	TAP_CHECK_GOTO(r.err == 0 && r.len == 8 && *(uint32_t *)r.body == 11,
	    out);
	memset(&ri, 0, sizeof(ri));
	ri.fh = fh;
	ri.size = 100;
	r = req(fs, FUSE_READ, f, &ri, sizeof(ri));
	TAP_CHECK_GOTO(r.err == 0 && r.len == 13, out);
	TAP_CHECK_GOTO(memcmp(r.body, "\0\0hello world", 13) == 0, out);
	/* Truncate through the handle, chmod, utimes. */
	memset(&si, 0, sizeof(si));
	si.valid = FATTR_SIZE | FATTR_FH | FATTR_MODE | FATTR_MTIME;
	si.fh = fh;
	si.size = 7;
	si.mode = 0600;
	si.mtime = 1000000;
	r = req(fs, FUSE_SETATTR, f, &si, sizeof(si));
	TAP_CHECK_GOTO(r.err == 0, out);
	TAP_CHECK_GOTO(stat(p, &st) == 0 && st.st_size == 7 &&
	    (st.st_mode & 07777) == 0600 && st.st_mtime == 1000000, out);
	si.valid = FATTR_ATIME_NOW | FATTR_ATIME | FATTR_SIZE;
	si.size = 1 << 20;
	r = req(fs, FUSE_SETATTR, f, &si, sizeof(si));
	TAP_CHECK_GOTO(r.err == 0, out);
	TAP_CHECK_GOTO(stat(p, &st) == 0 && st.st_size == 1 << 20 &&
	    st.st_atime > 1000000, out);
	/* A hole after the data. */
	memset(&li, 0, sizeof(li));
	li.fh = fh;
	li.whence = SEEK_HOLE;
	r = req(fs, FUSE_LSEEK, f, &li, sizeof(li));
	TAP_CHECK_GOTO(r.err == 0 && *(uint64_t *)r.body <= 1 << 20, out);
	li.whence = 77;
	TAP_CHECK_GOTO(req(fs, FUSE_LSEEK, f, &li, sizeof(li)).err == -EINVAL,
	    out);
	memset(&fa, 0, sizeof(fa));
	fa.fh = fh;
	fa.length = 4096;
	TAP_CHECK_GOTO(req(fs, FUSE_FALLOCATE, f, &fa, sizeof(fa)).err == 0,
	    out);
	/* copy_file_range into a second file. */
	ci.flags = O_RDWR;
	r = req_name(fs, FUSE_CREATE, 1, &ci, sizeof(ci), "copy");
	TAP_CHECK_GOTO(r.err == 0, out);
	memcpy(&eo, r.body, sizeof(eo));
	memcpy(&oo, r.body + sizeof(eo), sizeof(oo));
	fh2 = oo.fh;
	memset(&cr, 0, sizeof(cr));
	cr.fh_in = fh;
	cr.off_in = 2;
	cr.fh_out = fh2;
	cr.nodeid_out = eo.nodeid;
	cr.len = 5;
	r = req(fs, FUSE_COPY_FILE_RANGE, f, &cr, sizeof(cr));
	TAP_CHECK_GOTO(r.err == 0 && *(uint32_t *)r.body == 5, out);
	ri.fh = fh2;
	r = req(fs, FUSE_READ, eo.nodeid, &ri, sizeof(ri));
	TAP_CHECK_GOTO(r.len == 5 && memcmp(r.body, "hello", 5) == 0, out);
	/* Locks: a write lock on one handle shows in GETLK from another. */
	memset(&lk, 0, sizeof(lk));
	lk.fh = fh;
	lk.lk.type = F_WRLCK;
	lk.lk.start = 0;
	lk.lk.end = 0x7fffffffffffffffULL;
	TAP_CHECK_GOTO(req(fs, FUSE_SETLK, f, &lk, sizeof(lk)).err == 0, out);
	fhg = open_fh(fs, f, O_RDWR, FUSE_OPEN);
	TAP_CHECK_GOTO(fhg != 0, out);
	lk.fh = fhg;
	r = req(fs, FUSE_GETLK, f, &lk, sizeof(lk));
	TAP_CHECK_GOTO(r.err == 0 &&
	    ((struct fuse_lk_out *)(void *)r.body)->lk.type == F_WRLCK, out);
	TAP_CHECK_GOTO(req(fs, FUSE_SETLK, f, &lk, sizeof(lk)).err == -EAGAIN,
	    out);
	memset(&rl, 0, sizeof(rl));
	rl.fh = fhg;
	TAP_CHECK_GOTO(req(fs, FUSE_RELEASE, f, &rl, sizeof(rl)).err == 0, out);
	/* mkdir, symlink, readlink, link, access, statfs. */
	memset(&mi, 0, sizeof(mi));
	mi.mode = 0755;
	r = req_name(fs, FUSE_MKDIR, 1, &mi, sizeof(mi), "sub");
	TAP_CHECK_GOTO(r.err == 0, out);
	d = ((struct fuse_entry_out *)(void *)r.body)->nodeid;
	r = req2(fs, FUSE_SYMLINK, d, "ln", 3, "../new", 7);
	TAP_CHECK_GOTO(r.err == 0, out);
	g = ((struct fuse_entry_out *)(void *)r.body)->nodeid;
	r = req(fs, FUSE_READLINK, g, NULL, 0);
	TAP_CHECK_GOTO(r.err == 0 && r.len == 6 &&
	    memcmp(r.body, "../new", 6) == 0, out);
	memset(&ln, 0, sizeof(ln));
	ln.oldnodeid = f;
	r = req_name(fs, FUSE_LINK, d, &ln, sizeof(ln), "hl");
	TAP_CHECK_GOTO(r.err == 0 &&
	    ((struct fuse_entry_out *)(void *)r.body)->nodeid == f, out);
	memset(&ac, 0, sizeof(ac));
	ac.mask = R_OK | W_OK;
	TAP_CHECK_GOTO(req(fs, FUSE_ACCESS, f, &ac, sizeof(ac)).err == 0, out);
	r = req(fs, FUSE_STATFS, 1, NULL, 0);
	TAP_CHECK_GOTO(r.err == 0 && r.len == sizeof(struct fuse_statfs_out),
	    out);
	/* xattrs, where the host file system has user xattrs. */
	if (setxattr(p, "user.probe", "1", 1, 0) == 0) {
		memset(&sx, 0, sizeof(sx));
		sx.size = 3;
		r = req2(fs, FUSE_SETXATTR, f, &sx, 8, "user.k\0abc", 10);
		TAP_CHECK_GOTO(r.err == 0, out);
		memset(&gx, 0, sizeof(gx));
		r = req_name(fs, FUSE_GETXATTR, f, &gx, sizeof(gx), "user.k");
		TAP_CHECK_GOTO(r.err == 0 && *(uint32_t *)r.body == 3, out);
		gx.size = 64;
		r = req_name(fs, FUSE_GETXATTR, f, &gx, sizeof(gx), "user.k");
		TAP_CHECK_GOTO(r.err == 0 && r.len == 3 &&
		    memcmp(r.body, "abc", 3) == 0, out);
		gx.size = 1;
		r = req_name(fs, FUSE_GETXATTR, f, &gx, sizeof(gx), "user.k");
		TAP_CHECK_GOTO(r.err == -ERANGE, out);
		gx.size = sizeof(xb);
		r = req(fs, FUSE_LISTXATTR, f, &gx, sizeof(gx));
		TAP_CHECK_GOTO(r.err == 0 && r.len > 0, out);
		r = req_name(fs, FUSE_REMOVEXATTR, f, NULL, 0, "user.k");
		TAP_CHECK_GOTO(r.err == 0, out);
		gx.size = 0;
		r = req_name(fs, FUSE_GETXATTR, f, &gx, sizeof(gx), "user.k");
		TAP_CHECK_GOTO(r.err == -ENODATA, out);
	} else
		tap_diag("no user xattrs on %s: xattr part skipped", dir);
	/* unlink, rmdir. */
	TAP_CHECK_GOTO(req_name(fs, FUSE_UNLINK, d, NULL, 0, "hl").err == 0,
	    out);
	TAP_CHECK_GOTO(req_name(fs, FUSE_RMDIR, 1, NULL, 0, "sub").err ==
	    -ENOTEMPTY, out);
	TAP_CHECK_GOTO(req_name(fs, FUSE_UNLINK, d, NULL, 0, "ln").err == 0,
	    out);
	TAP_CHECK_GOTO(req_name(fs, FUSE_RMDIR, 1, NULL, 0, "sub").err == 0,
	    out);
	rl.fh = fh;
	TAP_CHECK_GOTO(req(fs, FUSE_FLUSH, f, &rl, sizeof(rl)).err == 0, out);
	TAP_CHECK_GOTO(req(fs, FUSE_RELEASE, f, &rl, sizeof(rl)).err == 0, out);
	r = req(fs, FUSE_READ, f, &(struct fuse_read_in){ .fh = fh, .size = 1 },
	    sizeof(struct fuse_read_in));
	TAP_CHECK_GOTO(r.err == -EBADF, out);
	rc = TAP_PASS;
out:
	fusefs_free(fs);
out_rm:
	rm_tree();
	return rc;
}

static int
t_readdirplus(void)
{
	struct fusefs		*fs;
	struct fuse_read_in	 ri;
	struct fuse_release_in	 rl;
	struct {
		struct fuse_batch_forget_in	h;
		struct fuse_forget_one		o[8];
	}			 bf;
	struct rep		 r;
	uint64_t		 fh, ids[8], root0;
	size_t			 pos, n = 0, names = 0;
	int			 rc = TAP_FAIL, pass;

	TAP_CHECK(setup() == 0);
	put_file("a", "1");
	put_file("b", "2");
	put_file("c", "3");
	fs = mkfs(false, 0, NULL);
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	root0 = nodes(fs);
	fh = open_fh(fs, 1, O_RDONLY, FUSE_OPENDIR);
	TAP_CHECK_GOTO(fh != 0, out);
	for (pass = 0; pass < 2; pass++) {
		memset(&ri, 0, sizeof(ri));
		ri.fh = fh;
		ri.size = 4096;
		n = names = 0;
		r = req(fs, FUSE_READDIRPLUS, 1, &ri, sizeof(ri));
		TAP_CHECK_GOTO(r.err == 0 && r.len > 0, out);
		for (pos = 0; pos < r.len;) {
			struct fuse_direntplus	*d = (void *)(r.body + pos);
			bool			 dot;

			dot = (d->dirent.namelen == 1 &&
			    d->dirent.name[0] == '.') ||
			    (d->dirent.namelen == 2 &&
			    memcmp(d->dirent.name, "..", 2) == 0);
			if (dot)
				TAP_CHECK_GOTO(d->entry_out.nodeid == 0, out);
			else {
				TAP_CHECK_GOTO(d->entry_out.nodeid > 1 &&
				    d->entry_out.attr.size == 1, out);
				ids[n++] = d->entry_out.nodeid;
			}
			names++;
			pos += FUSE_DIRENTPLUS_SIZE(d);
		}
		TAP_CHECK_GOTO(names == 5 && n == 3, out);
	}
	/* Small buffer: entries come a few at a time, offsets continue. */
	ri.size = 200;
	ri.offset = 0;
	names = 0;
	for (pass = 0; pass < 10; pass++) {
		r = req(fs, FUSE_READDIR, 1, &ri, sizeof(ri));
		TAP_CHECK_GOTO(r.err == 0, out);
		if (r.len == 0)
			break;
		for (pos = 0; pos < r.len;) {
			struct fuse_dirent *d = (void *)(r.body + pos);

			names++;
			ri.offset = d->off;
			pos += FUSE_DIRENT_SIZE(d);
		}
	}
	TAP_CHECK_GOTO(names == 5, out);
	TAP_CHECK_GOTO(nodes(fs) == root0 + 3, out);
	/* Two readdirplus passes = two lookups each: one batch of 1 keeps
	 * them, a second batch prunes them. */
	memset(&bf, 0, sizeof(bf));
	bf.h.count = 3;
	for (pos = 0; pos < 3; pos++) {
		bf.o[pos].nodeid = ids[pos];
		bf.o[pos].nlookup = 1;
	}
	r = req(fs, FUSE_BATCH_FORGET, 0, &bf, sizeof(bf.h) +
	    3 * sizeof(bf.o[0]));
	TAP_CHECK_GOTO(r.rc == 0 && nodes(fs) == root0 + 3, out);
	r = req(fs, FUSE_BATCH_FORGET, 0, &bf, sizeof(bf.h) +
	    3 * sizeof(bf.o[0]));
	TAP_CHECK_GOTO(r.rc == 0 && nodes(fs) == root0, out);
	memset(&rl, 0, sizeof(rl));
	rl.fh = fh;
	TAP_CHECK_GOTO(req(fs, FUSE_RELEASEDIR, 1, &rl, sizeof(rl)).err == 0,
	    out);
	rc = TAP_PASS;
out:
	fusefs_free(fs);
out_rm:
	rm_tree();
	return rc;
}

static bool
content_is(const char *rel, const char *want)
{
	char	p[256], buf[64];
	ssize_t	n;
	int	fd;

	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	if ((fd = open(p, O_RDONLY)) < 0)
		return false;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	return n == (ssize_t)strlen(want) && memcmp(buf, want, n) == 0;
}

static int
t_rename(void)
{
	struct fusefs		*fs;
	struct fuse_rename2_in	 r2;
	struct fuse_rename_in	 r1;
	struct rep		 r;
	int			 rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	put_file("a", "A");
	put_file("b", "B");
	fs = mkfs(false, 0, NULL);
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	memset(&r2, 0, sizeof(r2));
	r2.newdir = 1;
	r2.flags = RENAME_NOREPLACE;
	r = req2(fs, FUSE_RENAME2, 1, &r2, sizeof(r2), "a\0b", 4);
	TAP_CHECK_GOTO(r.err == -EEXIST, out);
	r2.flags = RENAME_EXCHANGE;
	r = req2(fs, FUSE_RENAME2, 1, &r2, sizeof(r2), "a\0b", 4);
	TAP_CHECK_GOTO(r.err == 0, out);
	TAP_CHECK_GOTO(content_is("a", "B") && content_is("b", "A"), out);
	r2.flags = 0x80;
	r = req2(fs, FUSE_RENAME2, 1, &r2, sizeof(r2), "a\0b", 4);
	TAP_CHECK_GOTO(r.err == -EINVAL, out);
	r1.newdir = 1;
	r = req2(fs, FUSE_RENAME, 1, &r1, sizeof(r1), "a\0c", 4);
	TAP_CHECK_GOTO(r.err == 0 && content_is("c", "B"), out);
	/* Names that are not one component. */
	r = req2(fs, FUSE_RENAME, 1, &r1, sizeof(r1), "c\0../x", 7);
	TAP_CHECK_GOTO(r.err == -EINVAL, out);
	r1.newdir = 424242;
	r = req2(fs, FUSE_RENAME, 1, &r1, sizeof(r1), "c\0d", 4);
	TAP_CHECK_GOTO(r.err == -ESTALE, out);
	rc = TAP_PASS;
out:
	fusefs_free(fs);
out_rm:
	rm_tree();
	return rc;
}

static int
t_escape(void)
{
	struct fusefs		*fs;
	struct fuse_entry_out	 eo;
	struct fuse_create_in	 ci;
	struct fuse_mkdir_in	 mi;
	struct rep		 r;
	char			 p[256];
	uint64_t		 esc, rel;
	int			 rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	snprintf(p, sizeof(p), "%s/esc", dir);
	TAP_CHECK_GOTO(symlink("/etc", p) == 0, out_rm);
	snprintf(p, sizeof(p), "%s/rel", dir);
	TAP_CHECK_GOTO(symlink("../../../../etc/passwd", p) == 0, out_rm);
	fs = mkfs(false, 0, NULL);
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	TAP_CHECK_GOTO(req_name(fs, FUSE_LOOKUP, 1, NULL, 0, "..").err ==
	    -EINVAL, out);
	TAP_CHECK_GOTO(req_name(fs, FUSE_LOOKUP, 1, NULL, 0, ".").err ==
	    -EINVAL, out);
	TAP_CHECK_GOTO(req_name(fs, FUSE_LOOKUP, 1, NULL, 0, "esc/passwd").err
	    == -EINVAL, out);
	TAP_CHECK_GOTO(req_name(fs, FUSE_LOOKUP, 1, NULL, 0, "/etc").err ==
	    -EINVAL, out);
	TAP_CHECK_GOTO(req_name(fs, FUSE_LOOKUP, 1, NULL, 0, "").err ==
	    -EINVAL, out);
	/* The symlink is a symlink: not followed, target read verbatim. */
	esc = lookup(fs, 1, "esc", &eo);
	TAP_CHECK_GOTO(esc > 1 && S_ISLNK(eo.attr.mode), out);
	r = req(fs, FUSE_READLINK, esc, NULL, 0);
	TAP_CHECK_GOTO(r.err == 0 && r.len == 4 && memcmp(r.body, "/etc", 4)
	    == 0, out);
	/* Using it as a directory goes nowhere. */
	r = req_name(fs, FUSE_LOOKUP, esc, NULL, 0, "passwd");
	TAP_CHECK_GOTO(r.err != 0, out);
	r = req(fs, FUSE_OPENDIR, esc, &(struct fuse_open_in){ 0 },
	    sizeof(struct fuse_open_in));
	TAP_CHECK_GOTO(r.err != 0, out);
	r = req(fs, FUSE_OPEN, esc, &(struct fuse_open_in){ 0 },
	    sizeof(struct fuse_open_in));
	TAP_CHECK_GOTO(r.err != 0, out);
	memset(&mi, 0, sizeof(mi));
	mi.mode = 0755;
	r = req_name(fs, FUSE_MKDIR, esc, &mi, sizeof(mi), "smx-escape");
	TAP_CHECK_GOTO(r.err != 0 && access("/etc/smx-escape", F_OK) != 0,
	    out);
	/* Creating over the symlink does not write through it. */
	memset(&ci, 0, sizeof(ci));
	ci.flags = O_WRONLY | O_TRUNC;
	ci.mode = 0644;
	r = req_name(fs, FUSE_CREATE, 1, &ci, sizeof(ci), "rel");
	TAP_CHECK_GOTO(r.err != 0, out);
	rel = lookup(fs, 1, "rel", &eo);
	TAP_CHECK_GOTO(rel > 1 && S_ISLNK(eo.attr.mode), out);
	r = req(fs, FUSE_READLINK, rel, NULL, 0);
	TAP_CHECK_GOTO(r.err == 0 && r.len == 22, out);
	rc = TAP_PASS;
out:
	fusefs_free(fs);
out_rm:
	rm_tree();
	return rc;
}

static int
t_readonly(void)
{
	static const uint32_t	 mut[] = { FUSE_SETATTR, FUSE_SYMLINK,
	    FUSE_MKNOD, FUSE_MKDIR, FUSE_UNLINK, FUSE_RMDIR, FUSE_RENAME,
	    FUSE_RENAME2, FUSE_LINK, FUSE_WRITE, FUSE_SETXATTR,
	    FUSE_REMOVEXATTR, FUSE_CREATE, FUSE_FALLOCATE,
	    FUSE_COPY_FILE_RANGE };
	struct fusefs		*fs;
	struct fuse_open_in	 oi;
	struct fuse_access_in	 ai;
	struct fuse_setupmapping_in sm;
	struct fuse_write_in	 wi;
	uint8_t			 body[256];
	uint64_t		 f;
	struct rep		 r;
	size_t			 i;
	int			 rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	put_file("f", "data");
	fs = mkfs(true, 1 << 21, &(struct fusefs_transport){ 0 });
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	f = lookup(fs, 1, "f", NULL);
	TAP_CHECK_GOTO(f > 1, out);
	/* Bodies big enough for every fixed part, names after them. */
	memset(body, 0, sizeof(body));
	for (i = 0; i < 200; i++)
		body[i] = (i % 2) ? 'x' : 0;
	for (i = 0; i < ARRAY_SIZE(mut); i++) {
		if (mut[i] == FUSE_WRITE) {
			memset(&wi, 0, sizeof(wi));
			r = req(fs, FUSE_WRITE, f, &wi, sizeof(wi));
		} else
			r = req(fs, mut[i], f, body, sizeof(body));
		if (r.err != -EROFS) {
			tap_diag("opcode %u: %d", mut[i], r.err);
			goto out;
		}
	}
	memset(&oi, 0, sizeof(oi));
	oi.flags = O_RDWR;
	TAP_CHECK_GOTO(req(fs, FUSE_OPEN, f, &oi, sizeof(oi)).err == -EROFS,
	    out);
	oi.flags = O_RDONLY | O_TRUNC;
	TAP_CHECK_GOTO(req(fs, FUSE_OPEN, f, &oi, sizeof(oi)).err == -EROFS,
	    out);
	oi.flags = O_RDONLY;
	TAP_CHECK_GOTO(req(fs, FUSE_OPEN, f, &oi, sizeof(oi)).err == 0, out);
	ai.mask = W_OK;
	TAP_CHECK_GOTO(req(fs, FUSE_ACCESS, f, &ai, sizeof(ai)).err == -EROFS,
	    out);
	memset(&sm, 0, sizeof(sm));
	sm.fh = UINT64_MAX;
	sm.len = 4096;
	sm.flags = FUSE_SETUPMAPPING_FLAG_WRITE;
	r = req(fs, FUSE_SETUPMAPPING, f, &sm, sizeof(sm));
	TAP_CHECK_GOTO(r.err == -EROFS || r.err == -ENOSYS, out);
	TAP_CHECK_GOTO(content_is("f", "data"), out);
	rc = TAP_PASS;
out:
	fusefs_free(fs);
out_rm:
	rm_tree();
	return rc;
}

/* A request from raw bytes (no header fix-up). */
static ssize_t
raw(struct fusefs *fs, const void *in, size_t inlen, size_t outlen)
{
	struct iovec	vi = { (void *)in, inlen }, vo = { obuf, outlen };

	return fusefs_handle(fs, &vi, 1, &vo, 1);
}

/*
 * iters random requests (random opcode, nodeid among the first few
 * dozen, bytes, lengths, reply room); 0 when every answer was a reply
 * within bounds, nothing, or -EINVAL.  Opcodes that could block forever
 * or touch devices are left out.  Thread-safe (own buffers).
 */
static int
fuzz(struct fusefs *fs, unsigned seed, unsigned iters)
{
	static const uint32_t	 skip[] = { FUSE_SETLKW, FUSE_MKNOD,
	    FUSE_FALLOCATE, FUSE_INIT, FUSE_DESTROY };
	struct fuse_in_header	*h;
	struct iovec		 vi, vo;
	uint8_t			 b[512], *out;
	size_t			 len, k, outlen;
	ssize_t			 n;
	unsigned		 i;
	int			 rc = 0;

	out = xmalloc(OUTSZ);
	h = (void *)b;
	memset(b, 0, sizeof(b));
	for (i = 0; i < iters && rc == 0; i++) {
		for (k = sizeof(*h); k < sizeof(b); k++) {
			seed = seed * 1103515245 + 12345;
			b[k] = (seed >> 16) % 5 == 0 ? 0 : (uint8_t)(seed >> 8);
		}
		seed = seed * 1103515245 + 12345;
		h->opcode = (seed >> 16) % 56;
		for (k = 0; k < ARRAY_SIZE(skip); k++)
			if (h->opcode == skip[k])
				h->opcode = FUSE_GETATTR;
		seed = seed * 1103515245 + 12345;
		h->nodeid = (seed >> 16) % 40;
		seed = seed * 1103515245 + 12345;
		len = sizeof(*h) + (seed >> 16) % (sizeof(b) - sizeof(*h));
		h->len = (uint32_t)len;
		h->unique = i;
		h->total_extlen = 0;
		seed = seed * 1103515245 + 12345;
		if ((seed >> 16) % 50 == 0)
			h->len = (uint32_t)(seed >> 3);
		outlen = (seed >> 16) % 7 == 0 ? (seed >> 20) % 200 : OUTSZ;
		vi.iov_base = b;
		vi.iov_len = len;
		vo.iov_base = out;
		vo.iov_len = outlen;
		n = fusefs_handle(fs, &vi, 1, &vo, 1);
		if (n > (ssize_t)outlen || (n < 0 && n != -EINVAL) ||
		    (n > 0 && n < 16)) {
			tap_diag("request %u (opcode %u): %zd", i, h->opcode,
			    n);
			rc = -1;
		}
	}
	free(out);
	return rc;
}

struct fuzz_arg {
	struct fusefs	*fs;
	unsigned	 seed;
	int		 rc;
};

static void *
fuzz_thread(void *arg)
{
	struct fuzz_arg	*a = arg;

	a->rc = fuzz(a->fs, a->seed, 15000);
	return NULL;
}

/* The same from three threads at once: the tables under contention. */
static int
t_fuzz_threads(void)
{
	struct fusefs		*fs;
	struct fuzz_arg		 a[3];
	pthread_t		 t[3];
	int			 i, rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	put_file("f", "data");
	fs = mkfs(false, 0, NULL);
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	for (i = 0; i < 3; i++) {
		a[i].fs = fs;
		a[i].seed = 1000 + (unsigned)i;
		TAP_CHECK_GOTO(pthread_create(&t[i], NULL, fuzz_thread,
		    &a[i]) == 0, out);
	}
	for (i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	TAP_CHECK_GOTO(a[0].rc == 0 && a[1].rc == 0 && a[2].rc == 0, out);
	rc = TAP_PASS;
out:
	fusefs_free(fs);
out_rm:
	rm_tree();
	return rc;
}

static int
t_malformed(void)
{
	struct fusefs		*fs;
	struct fuse_in_header	*h;
	struct fusefs_stats	 st;
	uint8_t			 b[512];
	int			 rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	put_file("f", "data");
	fs = mkfs(false, 0, NULL);
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	h = (void *)b;
	memset(b, 0, sizeof(b));
	/* Shorter than a header; a header claiming more than was sent. */
	TAP_CHECK_GOTO(raw(fs, b, 10, OUTSZ) == -EINVAL, out);
	h->len = 200;
	h->opcode = FUSE_GETATTR;
	h->nodeid = 1;
	TAP_CHECK_GOTO(raw(fs, b, 100, OUTSZ) == -EINVAL, out);
	h->len = 10;
	TAP_CHECK_GOTO(raw(fs, b, 100, OUTSZ) == -EINVAL, out);
	/* Body shorter than the opcode's struct. */
	h->len = sizeof(*h) + 4;
	TAP_CHECK_GOTO(raw(fs, b, h->len, OUTSZ) == -EINVAL, out);
	/* A name without its NUL. */
	h->opcode = FUSE_LOOKUP;
	h->len = sizeof(*h) + 1;
	b[sizeof(*h)] = 'f';
	TAP_CHECK_GOTO(raw(fs, b, h->len, OUTSZ) == -EINVAL, out);
	/* A write whose size does not match its payload. */
	h->opcode = FUSE_WRITE;
	h->len = sizeof(*h) + sizeof(struct fuse_write_in) + 4;
	((struct fuse_write_in *)(void *)(b + sizeof(*h)))->size = 100;
	TAP_CHECK_GOTO(raw(fs, b, h->len, OUTSZ) == -EINVAL, out);
	/* BATCH_FORGET counting past its body. */
	h->opcode = FUSE_BATCH_FORGET;
	h->len = sizeof(*h) + 8 + 16;
	((struct fuse_batch_forget_in *)(void *)(b + sizeof(*h)))->count = 2;
	TAP_CHECK_GOTO(raw(fs, b, h->len, OUTSZ) == -EINVAL, out);
	/* Nowhere to put the reply. */
	h->opcode = FUSE_GETATTR;
	h->len = sizeof(*h) + sizeof(struct fuse_getattr_in);
	TAP_CHECK_GOTO(raw(fs, b, h->len, 8) == -EINVAL, out);
	TAP_CHECK_GOTO(raw(fs, b, h->len, 40) == -EINVAL, out);
	/* Extension length past the body. */
	h->total_extlen = 100;
	TAP_CHECK_GOTO(raw(fs, b, h->len, OUTSZ) == -EINVAL, out);
	h->total_extlen = 0;
	TAP_CHECK_GOTO(raw(fs, b, h->len, OUTSZ) > 0, out);
	fusefs_get_stats(fs, &st);
	TAP_CHECK_GOTO(st.malformed == 10, out);

	/* Random requests: never a crash, never a reply longer than the
	 * buffer, always a reply or -EINVAL or nothing. */
	TAP_CHECK_GOTO(lookup(fs, 1, "f", NULL) > 1, out);
	TAP_CHECK_GOTO(fuzz(fs, 12345, 30000) == 0, out);
	rc = TAP_PASS;
out:
	fusefs_free(fs);
out_rm:
	rm_tree();
	return rc;
}

struct fake_tp {
	unsigned	maps, unmaps;
	uint64_t	last_woff, last_len;
	unsigned	inval_entry, inval_inode;
	char		last_name[64];
};

static int
fake_dax_map(void *arg, uint64_t woff, int fd, uint64_t foff, uint64_t len,
    bool wr)
{
	struct fake_tp	*t = arg;

	if (fcntl(fd, F_GETFD) < 0)
		return -EBADF;
	t->maps++;
	t->last_woff = woff;
	t->last_len = len;
	return 0;
}

static int
fake_dax_unmap(void *arg, uint64_t woff, uint64_t len)
{
	struct fake_tp	*t = arg;

	t->unmaps++;
	return 0;
}

static int
fake_notify(void *arg, const struct iovec *v, unsigned n)
{
	struct fake_tp		*t = arg;
	struct fuse_out_header	 oh;
	uint8_t			 buf[512];
	size_t			 len = 0;
	unsigned		 i;

	for (i = 0; i < n; i++) {
		if (len + v[i].iov_len > sizeof(buf))
			return -EINVAL;
		memcpy(buf + len, v[i].iov_base, v[i].iov_len);
		len += v[i].iov_len;
	}
	memcpy(&oh, buf, sizeof(oh));
	if (oh.len != len || oh.unique != 0)
		return -EINVAL;
	if (oh.error == FUSE_NOTIFY_INVAL_ENTRY) {
		struct fuse_notify_inval_entry_out	o;

		memcpy(&o, buf + sizeof(oh), sizeof(o));
		if (o.namelen < sizeof(t->last_name) &&
		    len == sizeof(oh) + sizeof(o) + o.namelen + 1) {
			memcpy(t->last_name, buf + sizeof(oh) + sizeof(o),
			    o.namelen + 1);
			t->inval_entry++;
		}
	} else if (oh.error == FUSE_NOTIFY_INVAL_INODE)
		t->inval_inode++;
	return 0;
}

static int
t_dax(void)
{
	struct fake_tp			 t;
	struct fusefs_transport		 tp;
	struct fusefs			*fs;
	struct fuse_setupmapping_in	 sm;
	struct {
		struct fuse_removemapping_in	h;
		struct fuse_removemapping_one	o;
	} __attribute__((packed))	 rmm;
	struct fuse_release_in		 rl;
	uint64_t			 f, fh;
	int				 rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	put_file("f", "data");
	memset(&t, 0, sizeof(t));
	memset(&tp, 0, sizeof(tp));
	tp.dax_map = fake_dax_map;
	tp.dax_unmap = fake_dax_unmap;
	tp.arg = &t;
	fs = mkfs(false, 1 << 22, &tp);
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	f = lookup(fs, 1, "f", NULL);
	fh = open_fh(fs, f, O_RDWR, FUSE_OPEN);
	TAP_CHECK_GOTO(f > 1 && fh != 0, out);
	memset(&sm, 0, sizeof(sm));
	sm.fh = UINT64_MAX;
	sm.len = 1 << 21;
	sm.moffset = 1 << 21;
	sm.flags = FUSE_SETUPMAPPING_FLAG_READ | FUSE_SETUPMAPPING_FLAG_WRITE;
	TAP_CHECK_GOTO(req(fs, FUSE_SETUPMAPPING, f, &sm, sizeof(sm)).err == 0,
	    out);
	TAP_CHECK_GOTO(t.maps == 1 && t.last_woff == 1 << 21, out);
	sm.moffset = 100;	/* misaligned */
	TAP_CHECK_GOTO(req(fs, FUSE_SETUPMAPPING, f, &sm, sizeof(sm)).err ==
	    -EINVAL, out);
	sm.moffset = 1 << 22;	/* past the window */
	TAP_CHECK_GOTO(req(fs, FUSE_SETUPMAPPING, f, &sm, sizeof(sm)).err ==
	    -EINVAL, out);
	sm.moffset = (1 << 22) - 4096;
	sm.len = UINT64_MAX - 4095;	/* wraps */
	TAP_CHECK_GOTO(req(fs, FUSE_SETUPMAPPING, f, &sm, sizeof(sm)).err ==
	    -EINVAL, out);
	/* Through a handle: released with it. */
	sm.fh = fh;
	sm.moffset = 0;
	sm.len = 4096;
	TAP_CHECK_GOTO(req(fs, FUSE_SETUPMAPPING, f, &sm, sizeof(sm)).err == 0,
	    out);
	memset(&rl, 0, sizeof(rl));
	rl.fh = fh;
	TAP_CHECK_GOTO(req(fs, FUSE_RELEASE, f, &rl, sizeof(rl)).err == 0, out);
	TAP_CHECK_GOTO(t.unmaps == 1, out);
	sm.fh = 777;
	TAP_CHECK_GOTO(req(fs, FUSE_SETUPMAPPING, f, &sm, sizeof(sm)).err ==
	    -EBADF, out);
	memset(&rmm, 0, sizeof(rmm));
	rmm.h.count = 1;
	rmm.o.moffset = 1 << 21;
	rmm.o.len = 1 << 21;
	TAP_CHECK_GOTO(req(fs, FUSE_REMOVEMAPPING, 1, &rmm, sizeof(rmm)).err ==
	    0 && t.unmaps == 2, out);
	/* Reset tears down what is left. */
	sm.fh = UINT64_MAX;
	TAP_CHECK_GOTO(req(fs, FUSE_SETUPMAPPING, f, &sm, sizeof(sm)).err == 0,
	    out);
	fusefs_reset(fs);
	TAP_CHECK_GOTO(t.unmaps == 3 && nodes(fs) == 1, out);
	rc = TAP_PASS;
out:
	fusefs_free(fs);
out_rm:
	rm_tree();
	return rc;
}

static void
stop_cb(void *arg)
{
	reactor_stop(arg);
}

static int
t_watch(void)
{
	struct fake_tp			 t;
	struct fusefs_transport		 tp;
	struct fusefs_opts		 o;
	struct reactor			*r;
	struct reactor_timer		*tm;
	struct fusefs			*fs;
	struct fusefs_stats		 st;
	char				 err[128];
	int				 rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	put_file("x", "1");
	memset(&t, 0, sizeof(t));
	memset(&tp, 0, sizeof(tp));
	tp.notify = fake_notify;
	tp.arg = &t;
	r = reactor_create();
	TAP_CHECK_GOTO(r != NULL, out_rm);
	fusefs_opts_init(&o);
	o.root = dir;
	o.watch = true;
	fs = fusefs_create(r, &o, &tp, err, sizeof(err));
	TAP_CHECK_GOTO(fs != NULL, out_r);
	TAP_CHECK_GOTO(do_init(fs, 31, 0, NULL) == 0, out);
	TAP_CHECK_GOTO(lookup(fs, 1, "x", NULL) > 1, out);
	put_file("x", "22");	/* a host edit of a looked-up file */
	put_file("y", "new");	/* and a new name in a watched dir */
	tm = reactor_add_timer(r, 200000, false, stop_cb, r);
	TAP_CHECK_GOTO(tm != NULL, out);
	TAP_CHECK_GOTO(reactor_run(r) == 0, out);
	reactor_del_timer(tm);
	fusefs_get_stats(fs, &st);
	TAP_CHECK_GOTO(t.inval_entry >= 2 && t.inval_inode >= 2, out);
	TAP_CHECK_GOTO(strcmp(t.last_name, "y") == 0, out);
	TAP_CHECK_GOTO(st.invalidations == t.inval_entry + t.inval_inode, out);
	rc = TAP_PASS;
out:
	fusefs_free(fs);
out_r:
	reactor_free(r);
out_rm:
	rm_tree();
	return rc;
}

/* OPEN's and CREATE's open_flags (FOPEN_*), or ~0u on error. */
static uint32_t
open_flags_of(struct fusefs *fs, uint64_t node, uint32_t op)
{
	struct fuse_create_in	in = { .flags = O_RDWR, .mode = S_IFREG | 0644 };
	struct fuse_entry_out	eo;
	struct fuse_open_out	oo;
	struct rep		r;

	if (op == FUSE_CREATE) {
		r = req_name(fs, op, node, &in, sizeof(in), "made");
		if (r.err != 0 || r.len != sizeof(eo) + sizeof(oo))
			return ~0u;
		memcpy(&oo, r.body + sizeof(eo), sizeof(oo));
	} else {
		r = req(fs, op, node, &in, sizeof(struct fuse_open_in));
		if (r.err != 0 || r.len != sizeof(oo))
			return ~0u;
		memcpy(&oo, r.body, sizeof(oo));
	}
	return oo.open_flags;
}

/* Pages are kept across opens only for a client that drops them when it
 * sees a file change (FUSE_AUTO_INVAL_DATA); a snapshot keeps the
 * choice. */
static int
t_keep_cache(void)
{
	struct fusefs		*fs = NULL, *fs2 = NULL;
	struct fusefs_opts	 o;
	uint8_t			*buf = NULL;
	size_t			 len = 0;
	char			 err[128];
	uint64_t		 f;
	int			 rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	put_file("f", "data");
	fusefs_opts_init(&o);
	o.root = dir;
	/* A client without AUTO_INVAL_DATA: every open drops the pages. */
	fs = fusefs_create(NULL, &o, NULL, err, sizeof(err));
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	TAP_CHECK_GOTO(do_init(fs, 31, FUSE_ASYNC_READ, NULL) == 0, out);
	TAP_CHECK_GOTO((f = lookup(fs, 1, "f", NULL)) > 1, out);
	TAP_CHECK_GOTO(open_flags_of(fs, f, FUSE_OPEN) == 0, out);
	TAP_CHECK_GOTO(open_flags_of(fs, 1, FUSE_CREATE) == 0, out);
	TAP_CHECK_GOTO(fusefs_save(fs, &buf, &len) == 0, out);
	fs2 = fusefs_create(NULL, &o, NULL, err, sizeof(err));
	TAP_CHECK_GOTO(fs2 != NULL && fusefs_load(fs2, buf, len) == 0, out);
	TAP_CHECK_GOTO(open_flags_of(fs2, f, FUSE_OPEN) == 0, out);
	fusefs_free(fs2);
	fusefs_free(fs);
	free(buf);
	buf = NULL;	/* fusefs_save appends */
	len = 0;
	fs2 = NULL;

	/* With it: kept, after a save and load too, and not after a new
	 * INIT that leaves it out. */
	fs = fusefs_create(NULL, &o, NULL, err, sizeof(err));
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	TAP_CHECK_GOTO(do_init(fs, 31, FUSE_ASYNC_READ | FUSE_AUTO_INVAL_DATA,
	    NULL) == 0, out);
	TAP_CHECK_GOTO((f = lookup(fs, 1, "f", NULL)) > 1, out);
	TAP_CHECK_GOTO(open_flags_of(fs, f, FUSE_OPEN) == FOPEN_KEEP_CACHE,
	    out);
	TAP_CHECK_GOTO(unlink_made() == 0, out);
	TAP_CHECK_GOTO(open_flags_of(fs, 1, FUSE_CREATE) == FOPEN_KEEP_CACHE,
	    out);
	TAP_CHECK_GOTO(fusefs_save(fs, &buf, &len) == 0, out);
	fs2 = fusefs_create(NULL, &o, NULL, err, sizeof(err));
	TAP_CHECK_GOTO(fs2 != NULL && fusefs_load(fs2, buf, len) == 0, out);
	TAP_CHECK_GOTO(open_flags_of(fs2, f, FUSE_OPEN) == FOPEN_KEEP_CACHE,
	    out);
	fusefs_reset(fs2);
	TAP_CHECK_GOTO(do_init(fs2, 31, FUSE_ASYNC_READ, NULL) == 0, out);
	TAP_CHECK_GOTO((f = lookup(fs2, 1, "f", NULL)) > 1, out);
	TAP_CHECK_GOTO(open_flags_of(fs2, f, FUSE_OPEN) == 0, out);
	rc = TAP_PASS;
out:
	fusefs_free(fs2);
	fusefs_free(fs);
	free(buf);
out_rm:
	rm_tree();
	return rc;
}

static int
t_snapshot(void)
{
	struct fusefs		*fs, *fs2 = NULL;
	struct fuse_getattr_in	 gi;
	struct fuse_read_in	 ri;
	struct fuse_rename_in	 rn;
	struct rep		 r;
	uint8_t			*buf = NULL;
	size_t			 len = 0;
	char			 p[256];
	uint64_t		 d, f, g, fh, dfh;
	uint8_t			*copy;
	unsigned		 i, seed = 777;
	int			 rc = TAP_FAIL, lrc;

	TAP_CHECK(setup() == 0);
	snprintf(p, sizeof(p), "%s/d", dir);
	TAP_CHECK_GOTO(mkdir(p, 0755) == 0, out_rm);
	put_file("d/f", "payload");
	put_file("gone", "x");
	fs = mkfs(false, 0, NULL);
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	d = lookup(fs, 1, "d", NULL);
	f = lookup(fs, d, "f", NULL);
	g = lookup(fs, 1, "gone", NULL);
	TAP_CHECK_GOTO(d > 1 && f > 1 && g > 1, out);
	fh = open_fh(fs, f, O_RDONLY, FUSE_OPEN);
	dfh = open_fh(fs, d, O_RDONLY, FUSE_OPENDIR);
	TAP_CHECK_GOTO(fh != 0 && dfh != 0, out);
	/* A rename through the server moves the saved path along. */
	rn.newdir = 1;
	r = req2(fs, FUSE_RENAME, 1, &rn, sizeof(rn), "d\0d2", 5);
	TAP_CHECK_GOTO(r.err == 0, out);
	/* The parent forgotten while its child lives: still saved. */
	TAP_CHECK_GOTO(forget(fs, d, 1) == 0, out);
	TAP_CHECK_GOTO(fusefs_save(fs, &buf, &len) == 0 && len > 8, out);
	snprintf(p, sizeof(p), "%s/gone", dir);
	TAP_CHECK_GOTO(unlink(p) == 0, out);

	fs2 = fusefs_create(NULL, &(struct fusefs_opts){ .size =
	    sizeof(struct fusefs_opts), .root = dir, .entry_timeout_ms = 1000,
	    .attr_timeout_ms = 1000 }, NULL, p, sizeof(p));
	TAP_CHECK_GOTO(fs2 != NULL, out);
	TAP_CHECK_GOTO(fusefs_load(fs2, buf, len) == 0, out);
	memset(&gi, 0, sizeof(gi));
	r = req(fs2, FUSE_GETATTR, f, &gi, sizeof(gi));
	TAP_CHECK_GOTO(r.err == 0, out);
	TAP_CHECK_GOTO(req(fs2, FUSE_GETATTR, g, &gi, sizeof(gi)).err ==
	    -ESTALE, out);
	TAP_CHECK_GOTO(req(fs2, FUSE_GETATTR, d, &gi, sizeof(gi)).err ==
	    -ESTALE, out);	/* forgotten before the save */
	memset(&ri, 0, sizeof(ri));
	ri.fh = fh;
	ri.size = 64;
	r = req(fs2, FUSE_READ, f, &ri, sizeof(ri));
	TAP_CHECK_GOTO(r.err == 0 && r.len == 7 &&
	    memcmp(r.body, "payload", 7) == 0, out);
	ri.fh = dfh;
	r = req(fs2, FUSE_READDIR, f, &ri, sizeof(ri));
	TAP_CHECK_GOTO(r.err == 0 && r.len > 0, out);
	/* New nodeids and handles do not collide with loaded ones. */
	TAP_CHECK_GOTO(lookup(fs2, 1, "d2", NULL) > g, out);
	TAP_CHECK_GOTO(open_fh(fs2, f, O_RDONLY, FUSE_OPEN) > dfh, out);
	/* Damaged state is refused, not trusted; random damage is
	 * refused or loaded, never a crash. */
	TAP_CHECK_GOTO(fusefs_load(fs2, buf, len / 2) == -EINVAL, out);
	copy = xmalloc(len);
	for (i = 0; i < 3000; i++) {
		memcpy(copy, buf, len);
		seed = seed * 1103515245 + 12345;
		copy[(seed >> 8) % len] ^= (uint8_t)(1u << ((seed >> 4) % 8));
		seed = seed * 1103515245 + 12345;
		if (i % 3 == 0)
			copy[(seed >> 8) % len] = (uint8_t)seed;
		lrc = fusefs_load(fs2, copy, len - (i % 5 == 0 ? i % len : 0));
		if (lrc != 0 && lrc != -EINVAL) {
			free(copy);
			goto out;
		}
	}
	free(copy);
	buf[0] ^= 1;
	TAP_CHECK_GOTO(fusefs_load(fs2, buf, len) == -EINVAL, out);
	rc = TAP_PASS;
out:
	free(buf);
	fusefs_free(fs2);
	fusefs_free(fs);
out_rm:
	rm_tree();
	return rc;
}

/* No way to the host's devices: MKNOD of a block or character device is
 * refused, and OPEN of a FIFO or device node already in the share (a
 * client kernel never sends one) is refused instead of opened as root. */
static int
t_devices(void)
{
	struct fusefs		*fs;
	struct fuse_mknod_in	 mi;
	struct fuse_open_in	 oi;
	struct rep		 r;
	struct stat		 st;
	char			 p[256];
	uint64_t		 fifo;
	int			 rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	snprintf(p, sizeof(p), "%s/fifo", dir);
	TAP_CHECK_GOTO(mkfifo(p, 0666) == 0, out_rm);
	fs = mkfs(false, 0, NULL);
	TAP_CHECK_GOTO(fs != NULL, out_rm);
	memset(&mi, 0, sizeof(mi));
	mi.mode = S_IFCHR | 0666;
	mi.rdev = makedev(1, 3);
	r = req_name(fs, FUSE_MKNOD, 1, &mi, sizeof(mi), "null");
	TAP_CHECK_GOTO(r.err == -EPERM, out);
	mi.mode = S_IFBLK | 0666;
	mi.rdev = makedev(8, 0);
	r = req_name(fs, FUSE_MKNOD, 1, &mi, sizeof(mi), "sda");
	TAP_CHECK_GOTO(r.err == -EPERM, out);
	snprintf(p, sizeof(p), "%s/sda", dir);
	TAP_CHECK_GOTO(lstat(p, &st) == -1 && errno == ENOENT, out);
	/* A FIFO may be made (the client kernel serves it)... */
	mi.mode = S_IFIFO | 0644;
	mi.rdev = 0;
	r = req_name(fs, FUSE_MKNOD, 1, &mi, sizeof(mi), "fifo2");
	TAP_CHECK_GOTO(r.err == 0, out);
	/* ...but not opened through the server. */
	TAP_CHECK_GOTO((fifo = lookup(fs, 1, "fifo", NULL)) > 1, out);
	memset(&oi, 0, sizeof(oi));
	oi.flags = O_RDONLY | O_NONBLOCK;
	r = req(fs, FUSE_OPEN, fifo, &oi, sizeof(oi));
	TAP_CHECK_GOTO(r.err == -EPERM, out);
	rc = TAP_PASS;
out:
	fusefs_free(fs);
out_rm:
	rm_tree();
	return rc;
}

/* Read node's file through OPEN + READ + RELEASE into buf (NUL-ended);
 * 0 or the failing reply's error. */
static int
read_node(struct fusefs *fs, uint64_t node, char *buf, size_t len)
{
	struct fuse_read_in	 ri;
	struct fuse_release_in	 rl;
	struct rep		 r;
	uint64_t		 fh;

	if ((fh = open_fh(fs, node, O_RDONLY, FUSE_OPEN)) == 0)
		return -EBADF;
	memset(&ri, 0, sizeof(ri));
	ri.fh = fh;
	ri.size = (uint32_t)len - 1;
	r = req(fs, FUSE_READ, node, &ri, sizeof(ri));
	if (r.err == 0) {
		memcpy(buf, r.body, r.len);
		buf[r.len] = '\0';
	}
	memset(&rl, 0, sizeof(rl));
	rl.fh = fh;
	req(fs, FUSE_RELEASE, node, &rl, sizeof(rl));
	return r.err;
}

#define FDB_DIRS	6
#define FDB_FILES	50
#define FDB_BUDGET	16

struct walk_arg {
	struct fusefs	*fs;
	uint64_t	(*files)[FDB_FILES];
	unsigned	 seed;
	int		 bad;	/* wrong answers */
};

/* Read and stat every file in a random order, checking contents. */
static void *
walk_thread(void *arg)
{
	struct walk_arg		*a = arg;
	struct fuse_getattr_in	 gi;
	char			 want[64], got[256];
	unsigned		 k, i, j, seed = a->seed;

	memset(&gi, 0, sizeof(gi));
	for (k = 0; k < 2 * FDB_DIRS * FDB_FILES; k++) {
		seed = seed * 1103515245 + 12345;
		i = (seed >> 16) % FDB_DIRS;
		j = (seed >> 4) % FDB_FILES;
		snprintf(want, sizeof(want), "%u/f%u", i, j);
		if (read_node(a->fs, a->files[i][j], got, sizeof(got)) != 0 ||
		    strcmp(got, want) != 0 ||
		    req(a->fs, FUSE_GETATTR, a->files[i][j], &gi,
		    sizeof(gi)).err != 0)
			a->bad++;
	}
	return NULL;
}

/*
 * The node fd budget: a walk that looks up far more inodes than the
 * budget keeps at most the budget of node fds open; every node is then
 * read, stat'ed and readlink'ed correctly through fds re-opened by file
 * handle (also after a rename on the host, and with many handles open
 * at once); a file deleted on the host is stale, not something else; a
 * saved table loads under the same budget.
 */
static int
t_fd_budget(void)
{
	struct fusefs_opts	 o;
	struct fusefs		*fs = NULL, *fs2 = NULL;
	struct fusefs_stats	 st;
	struct fuse_getattr_in	 gi;
	struct fuse_attr_out	 ao;
	struct fuse_read_in	 ri;
	struct fuse_release_in	 rl;
	struct rep		 r;
	uint64_t		 dirs[FDB_DIRS], files[FDB_DIRS][FDB_FILES];
	uint64_t		 links[FDB_DIRS], fhs[40];
	struct walk_arg		 wa[4];
	pthread_t		 wt[4];
	uint8_t			*buf = NULL;
	size_t			 len = 0, pos, seen;
	char			 p[256], want[64], got[256], err[256];
	int			 i, j, rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	for (i = 0; i < FDB_DIRS; i++) {
		snprintf(p, sizeof(p), "%s/d%d", dir, i);
		TAP_CHECK_GOTO(mkdir(p, 0755) == 0, out);
		for (j = 0; j < FDB_FILES; j++) {
			snprintf(want, sizeof(want), "d%d/f%d", i, j);
			put_file(want, want + 1);
		}
		snprintf(p, sizeof(p), "%s/d%d/link", dir, i);
		snprintf(want, sizeof(want), "target-%d", i);
		TAP_CHECK_GOTO(symlink(want, p) == 0, out);
	}
	fusefs_opts_init(&o);
	o.root = dir;
	o.max_node_fds = FDB_BUDGET;
	fs = fusefs_create(NULL, &o, NULL, err, sizeof(err));
	TAP_CHECK_GOTO(fs != NULL && do_init(fs, 31, 0xffffffff, NULL) == 0,
	    out);
	/* The walk, as find(1) would: every directory, every name. */
	for (i = 0; i < FDB_DIRS; i++) {
		snprintf(p, sizeof(p), "d%d", i);
		TAP_CHECK_GOTO((dirs[i] = lookup(fs, 1, p, NULL)) > 1, out);
		for (j = 0; j < FDB_FILES; j++) {
			snprintf(p, sizeof(p), "f%d", j);
			files[i][j] = lookup(fs, dirs[i], p, NULL);
			TAP_CHECK_GOTO(files[i][j] > 1, out);
		}
		TAP_CHECK_GOTO((links[i] = lookup(fs, dirs[i], "link", NULL)) >
		    1, out);
		fusefs_get_stats(fs, &st);
		TAP_CHECK_GOTO(st.node_fds <= FDB_BUDGET, out);
	}
	fusefs_get_stats(fs, &st);
	TAP_CHECK_GOTO(st.nodes >= FDB_DIRS * (FDB_FILES + 2), out);
	TAP_CHECK_GOTO(st.evictions > 0, out);
	/* Everything reads back right, in an order unlike the walk's. */
	for (j = FDB_FILES - 1; j >= 0; j--)
		for (i = 0; i < FDB_DIRS; i++) {
			snprintf(want, sizeof(want), "%d/f%d", i, j);
			TAP_CHECK_GOTO(read_node(fs, files[i][j], got,
			    sizeof(got)) == 0 && strcmp(got, want) == 0, out);
			memset(&gi, 0, sizeof(gi));
			r = req(fs, FUSE_GETATTR, files[i][j], &gi, sizeof(gi));
			TAP_CHECK_GOTO(r.err == 0 && r.len == sizeof(ao), out);
			memcpy(&ao, r.body, sizeof(ao));
			TAP_CHECK_GOTO(ao.attr.size == strlen(want) &&
			    S_ISREG(ao.attr.mode), out);
		}
	for (i = 0; i < FDB_DIRS; i++) {
		snprintf(want, sizeof(want), "target-%d", i);
		r = req(fs, FUSE_READLINK, links[i], NULL, 0);
		TAP_CHECK_GOTO(r.err == 0 && r.len == strlen(want) &&
		    memcmp(r.body, want, r.len) == 0, out);
	}
	/* Four threads at once: evictions racing re-opens. */
	for (i = 0; i < 4; i++) {
		wa[i].fs = fs;
		wa[i].files = files;
		wa[i].seed = 7 + (unsigned)i;
		wa[i].bad = 0;
		TAP_CHECK_GOTO(pthread_create(&wt[i], NULL, walk_thread,
		    &wa[i]) == 0, out);
	}
	for (i = 0; i < 4; i++)
		pthread_join(wt[i], NULL);
	TAP_CHECK_GOTO(wa[0].bad + wa[1].bad + wa[2].bad + wa[3].bad == 0,
	    out);
	fusefs_get_stats(fs, &st);
	TAP_CHECK_GOTO(st.reopens > 0 && st.node_fds <= FDB_BUDGET, out);
	tap_diag("%llu nodes, %llu node fds, %llu evictions, %llu re-opens",
	    (unsigned long long)st.nodes, (unsigned long long)st.node_fds,
	    (unsigned long long)st.evictions, (unsigned long long)st.reopens);
	/* READDIRPLUS of a directory bigger than the budget. */
	fhs[0] = open_fh(fs, dirs[0], O_RDONLY, FUSE_OPENDIR);
	TAP_CHECK_GOTO(fhs[0] != 0, out);
	memset(&ri, 0, sizeof(ri));
	ri.fh = fhs[0];
	ri.size = 1 << 16;
	r = req(fs, FUSE_READDIRPLUS, dirs[0], &ri, sizeof(ri));
	TAP_CHECK_GOTO(r.err == 0, out);
	for (pos = 0, seen = 0; pos < r.len; seen++) {
		struct fuse_direntplus	*d = (void *)(r.body + pos);

		if (d->dirent.namelen == 2 && memcmp(d->dirent.name, "f7",
		    2) == 0)
			TAP_CHECK_GOTO(d->entry_out.nodeid == files[0][7], out);
		pos += FUSE_DIRENTPLUS_SIZE(d);
	}
	TAP_CHECK_GOTO(seen == FDB_FILES + 3, out);
	memset(&rl, 0, sizeof(rl));
	rl.fh = fhs[0];
	TAP_CHECK_GOTO(req(fs, FUSE_RELEASEDIR, dirs[0], &rl,
	    sizeof(rl)).err == 0, out);
	/* Open handles pin their nodes past the budget, then let go. */
	for (j = 0; j < 40; j++)
		TAP_CHECK_GOTO((fhs[j] = open_fh(fs, files[1][j], O_RDONLY,
		    FUSE_OPEN)) != 0, out);
	for (j = 0; j < 40; j++) {
		memset(&gi, 0, sizeof(gi));
		TAP_CHECK_GOTO(req(fs, FUSE_GETATTR, files[1][j], &gi,
		    sizeof(gi)).err == 0, out);
	}
	fusefs_get_stats(fs, &st);
	TAP_CHECK_GOTO(st.node_fds >= 40, out);
	for (j = 0; j < 40; j++) {
		rl.fh = fhs[j];
		TAP_CHECK_GOTO(req(fs, FUSE_RELEASE, files[1][j], &rl,
		    sizeof(rl)).err == 0, out);
	}
	fusefs_get_stats(fs, &st);
	TAP_CHECK_GOTO(st.node_fds <= FDB_BUDGET, out);
	/* Renamed on the host while evicted: the handle follows the inode.
	 * Deleted: stale, never some other file. */
	snprintf(p, sizeof(p), "%s/d2/f3", dir);
	snprintf(got, sizeof(got), "%s/d3/moved", dir);
	TAP_CHECK_GOTO(rename(p, got) == 0, out);
	TAP_CHECK_GOTO(read_node(fs, files[2][3], got, sizeof(got)) == 0 &&
	    strcmp(got, "2/f3") == 0, out);
	snprintf(p, sizeof(p), "%s/d2/f4", dir);
	TAP_CHECK_GOTO(unlink(p) == 0, out);
	put_file("d2/f4", "a new file");
	for (i = 0; i < FDB_DIRS; i++)	/* make sure f4 was evicted */
		for (j = 0; j < FDB_FILES; j++)
			if (i != 2)
				req(fs, FUSE_GETATTR, files[i][j], &gi,
				    sizeof(gi));
	r = req(fs, FUSE_GETATTR, files[2][4], &gi, sizeof(gi));
	TAP_CHECK_GOTO(r.err == -ESTALE, out);
	/* Saved and loaded under the same budget. */
	TAP_CHECK_GOTO(fusefs_save(fs, &buf, &len) == 0, out);
	fs2 = fusefs_create(NULL, &o, NULL, err, sizeof(err));
	TAP_CHECK_GOTO(fs2 != NULL && fusefs_load(fs2, buf, len) == 0, out);
	fusefs_get_stats(fs2, &st);
	TAP_CHECK_GOTO(st.node_fds <= FDB_BUDGET, out);
	for (i = 0; i < FDB_DIRS; i++)
		for (j = 0; j < FDB_FILES; j++) {
			if (i == 2 && (j == 3 || j == 4))
				continue;	/* moved, replaced */
			snprintf(want, sizeof(want), "%d/f%d", i, j);
			TAP_CHECK_GOTO(read_node(fs2, files[i][j], got,
			    sizeof(got)) == 0 && strcmp(got, want) == 0, out);
		}
	fusefs_get_stats(fs2, &st);
	TAP_CHECK_GOTO(st.node_fds <= FDB_BUDGET, out);
	rc = TAP_PASS;
out:
	free(buf);
	fusefs_free(fs2);
	fusefs_free(fs);
	rm_tree();
	return rc;
}

/* In a child: the effective capability set without cap. */
static int
drop_cap(int cap)
{
	struct __user_cap_header_struct	hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct	data[2];

	if (syscall(SYS_capget, &hdr, data) != 0)
		return -1;
	data[cap / 32].effective &= ~(1u << (cap % 32));
	return (int)syscall(SYS_capset, &hdr, data);
}

/* The child of t_fd_fallback; exit status 0 when all went as said. */
static int
fallback_child(void)
{
	struct fusefs_opts	 o;
	struct fusefs		*fs;
	struct fusefs_stats	 st;
	struct rlimit		 rl;
	char			 name[32], want[32], got[64], err[256];
	uint64_t		 ids[100];
	int			 i, e = 0;

	if (drop_cap(CAP_DAC_READ_SEARCH) != 0)
		return 10;
	fusefs_opts_init(&o);
	o.root = dir;
	o.max_node_fds = 8;
	if ((fs = fusefs_create(NULL, &o, NULL, err, sizeof(err))) == NULL ||
	    do_init(fs, 31, 0xffffffff, NULL) != 0)
		return 11;
	/* No handles: over budget, nodes keep their fds and work. */
	for (i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		if ((ids[i] = lookup(fs, 1, name, NULL)) == 0)
			return 12;
	}
	for (i = 0; i < 40; i++) {
		snprintf(want, sizeof(want), "%d", i);
		if (read_node(fs, ids[i], got, sizeof(got)) != 0 ||
		    strcmp(got, want) != 0)
			return 13;
	}
	fusefs_get_stats(fs, &st);
	if (st.node_fds != 40 || st.evictions != 0)
		return 14;
	/* Out of fds: a clear ENFILE, not a crash or a wrong node. */
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 15;
	rl.rlim_cur = 64;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 15;
	for (i = 40; i < 100 && e == 0; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		e = req_name(fs, FUSE_LOOKUP, 1, NULL, 0, name).err;
	}
	return e == -ENFILE ? 0 : 16;
}

/*
 * Without CAP_DAC_READ_SEARCH (file handles cannot re-open): nodes keep
 * their fds past the budget and everything works until the process is
 * out of fds, where a lookup fails with ENFILE.
 */
static int
t_fd_fallback(void)
{
	char	rel[32], data[32];
	pid_t	pid;
	int	i, status, rc = TAP_FAIL;

	TAP_CHECK(setup() == 0);
	for (i = 0; i < 100; i++) {
		snprintf(rel, sizeof(rel), "f%d", i);
		snprintf(data, sizeof(data), "%d", i);
		put_file(rel, data);
	}
	fflush(stdout);
	if ((pid = fork()) == 0)
		_exit(fallback_child());
	TAP_CHECK_GOTO(pid > 0 && waitpid(pid, &status, 0) == pid, out);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		tap_diag("child: status %#x", status);
	TAP_CHECK_GOTO(WIFEXITED(status) && WEXITSTATUS(status) == 0, out);
	rc = TAP_PASS;
out:
	rm_tree();
	return rc;
}

static const struct tap_case cases[] = {
	{ "INIT negotiation", t_init },
	{ "lookup, getattr, hard links, forget", t_lookup },
	{ "no device nodes, no OPEN of special files", t_devices },
	{ "create, write, read, setattr and friends", t_io },
	{ "readdirplus lookup counting and pruning", t_readdirplus },
	{ "rename and rename2 flags", t_rename },
	{ "escape attempts", t_escape },
	{ "read-only share refuses every mutation", t_readonly },
	{ "malformed sizes and random requests", t_malformed },
	{ "random requests from three threads", t_fuzz_threads },
	{ "DAX mapping bookkeeping", t_dax },
	{ "inotify invalidations", t_watch },
	{ "save and load", t_snapshot },
	{ "page cache kept across opens with AUTO_INVAL_DATA", t_keep_cache },
	{ "node fd budget: eviction, re-open by file handle",
	    t_fd_budget },
	{ "node fd budget without file handles: ENFILE at the limit",
	    t_fd_fallback },
};

int
main(void)
{
	log_init("fusefs_test", LOG_QUIET);
	if (geteuid() != 0) {
		/* Ownership, link and lock semantics are tested as root. */
		printf("1..0 # SKIP needs root\n");
		return 77;
	}
	return tap_run(cases, ARRAY_SIZE(cases), 60);
}
