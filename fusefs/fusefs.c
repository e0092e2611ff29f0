/*
 * fusefs: the FUSE server core.  A passthrough file system rooted at one
 * host directory: every node is an O_PATH fd (closed when unused and over
 * the fd budget, re-opened by file handle), every name a single
 * component resolved beneath its parent's fd, every request checked for
 * size before its payload is read.  The transports (virtio/fs.c,
 * fusefs/devfuse.c) hand requests to fusefs_handle() from worker threads.
 *
 * Locking: fs->lock guards the node, handle, watch, mapping and LRU
 * tables and the counters; it is never held across file I/O.  A node
 * some node's child names, or in use, holds a reference (node->refs),
 * so it outlives the lock being dropped; a node whose fd is in use (by a
 * request or a handle) is pinned too (node->pins), so the fd stays open.
 * A directory handle has its own lock (seek + getdents must not
 * interleave).
 */
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <sys/xattr.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/fuse.h>
#include <linux/openat2.h>

#include "fusefs/fusefs.h"
#include "reactor/reactor.h"

#define FUSEFS_MINOR_MIN	31
#define FUSEFS_NAME_MAX		255
#define FUSEFS_PAGE		4096u
#define FUSEFS_XATTR_MAX	65536u
/* A non-WRITE request is copied whole; nothing legitimate is bigger
 * than a SETXATTR (name + 64 KiB value) or a BATCH_FORGET page. */
#define FUSEFS_REQ_MAX		(FUSEFS_XATTR_MAX + 2 * FUSEFS_PAGE)
#define FUSEFS_OFFSET_MAX	0x7fffffffffffffffULL
#define ROOT_ID			FUSE_ROOT_ID

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE	(1 << 0)
#define RENAME_EXCHANGE		(1 << 1)
#define RENAME_WHITEOUT		(1 << 2)
#endif

/* A chained hash keyed by a 64-bit value; entries are embedded. */
struct hent {
	uint64_t	 key;
	struct hent	*next;
};

struct htab {
	struct hent	**b;
	size_t		  nb;	/* power of two */
	size_t		  n;
};

struct node {
	struct hent	 by_id;		/* key: nodeid */
	struct hent	 by_ino;	/* key: ino ^ dev mix */
	struct hent	 by_wd;		/* key: inotify wd, when watched */
	uint64_t	 nodeid;
	uint64_t	 generation;
	uint64_t	 nlookup;
	unsigned	 refs;		/* requests, handles, children */
	unsigned	 pins;		/* users of fd (part of refs) */
	int		 fd;		/* O_PATH; -1: closed or stale */
	/* Re-opens fd after an eviction (NULL: never evicted, and fd -1
	 * means stale).  Set at creation, constant after. */
	struct file_handle *fhandle;
	struct node	*lru_prev;	/* on fs->lru: fd open, no pins */
	struct node	*lru_next;
	bool		 on_lru;
	int		 wd;		/* inotify watch, -1 none */
	bool		 in_ino;	/* present in the ino table */
	bool		 hashed;	/* present in the id table */
	size_t		 mark;		/* fusefs_save: index + 1 */
	dev_t		 dev;
	ino_t		 ino;
	mode_t		 type;		/* S_IFMT bits */
	struct node	*parent;	/* NULL for the root */
	char		*name;		/* within parent; NULL for the root */
};

struct handle {
	struct hent	 by_fh;
	uint64_t	 fh;
	int		 fd;		/* -1: stale after load */
	uint32_t	 flags;		/* open flags as the client gave them */
	bool		 dir;
	struct node	*node;		/* holds a reference */
	pthread_mutex_t	 dlock;		/* directory position */
	unsigned	 refs;		/* requests in flight + 1 while open */
	bool		 released;
};

struct mapping {
	uint64_t	woff;
	uint64_t	len;
	uint64_t	fh;		/* the handle it came through, or ~0 */
};

struct fusefs {
	struct fusefs_opts	 opts;
	char			*root;
	struct fusefs_transport	 tp;
	struct reactor		*r;
	pthread_mutex_t		 lock;
	struct htab		 nodes;	/* by nodeid */
	struct htab		 inos;	/* by (dev, ino) */
	struct htab		 wds;	/* by inotify wd */
	struct htab		 handles;
	struct node		*rootn;
	int			 root_dfd;	/* O_RDONLY dir, for syncfs */
	uint64_t		 next_id;
	uint64_t		 next_fh;
	uint64_t		 generation;
	struct mapping		*maps;
	size_t			 nmaps;
	bool			 initialized;
	/* The client drops a file's cached pages when it sees the file's
	 * mtime or size change (FUSE_AUTO_INVAL_DATA): opens may then keep
	 * them (FOPEN_KEEP_CACHE) and a host edit still shows once the
	 * attributes' lifetime ends or an inotify invalidation arrives. */
	bool			 auto_inval;
	uint32_t		 minor;
	uint32_t		 max_write;
	struct fusefs_stats	 st;
	int			 ifd;		/* inotify, -1 none */
	struct reactor_fd	*ifd_ev;
	bool			 notify_dead;	/* transport said ENOSYS */
	/* Node fd budget: unpinned nodes with a file handle sit on an LRU
	 * list, oldest first, and lose their fd when over budget. */
	struct node		*lru_head, *lru_tail;
	size_t			 nfds;		/* node fds open, root aside */
	size_t			 max_fds;
	bool			 can_reopen;	/* handles work here */
	int			 mount_id;	/* the root's */
	bool			 fd_warned;
};

/* One request being handled. */
struct req {
	struct fusefs		*fs;
	struct fuse_in_header	 h;
	const uint8_t		*body;	/* after the header */
	size_t			 blen;
	const struct iovec	*in;	/* for a WRITE payload */
	unsigned		 nin;
	const struct iovec	*out;
	unsigned		 nout;
	size_t			 outcap;
	struct node		*node;	/* h.nodeid, referenced */
	bool			 malformed;
	bool			 noreply;
};

/* --- small helpers ------------------------------------------------- */

static uint64_t
mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static void
ht_init(struct htab *t)
{
	t->nb = 64;
	t->n = 0;
	t->b = xcalloc(t->nb, sizeof(*t->b));
}

static void
ht_insert(struct htab *t, struct hent *e)
{
	struct hent	**nb, *p, *nx;
	size_t		  i, nnb;

	if (t->n >= t->nb) {
		nnb = t->nb * 2;
		nb = xcalloc(nnb, sizeof(*nb));
		for (i = 0; i < t->nb; i++)
			for (p = t->b[i]; p != NULL; p = nx) {
				nx = p->next;
				p->next = nb[mix64(p->key) & (nnb - 1)];
				nb[mix64(p->key) & (nnb - 1)] = p;
			}
		free(t->b);
		t->b = nb;
		t->nb = nnb;
	}
	i = mix64(e->key) & (t->nb - 1);
	e->next = t->b[i];
	t->b[i] = e;
	t->n++;
}

static void
ht_remove(struct htab *t, struct hent *e)
{
	struct hent	**pp;

	for (pp = &t->b[mix64(e->key) & (t->nb - 1)]; *pp != NULL;
	    pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			t->n--;
			return;
		}
}

/* The first entry of key's chain (walk ->next and compare keys). */
static struct hent *
ht_chain(const struct htab *t, uint64_t key)
{
	return t->b[mix64(key) & (t->nb - 1)];
}

#define CONTAINER(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

static uint64_t
ino_key(dev_t dev, ino_t ino)
{
	return (uint64_t)ino ^ mix64((uint64_t)dev);
}

static void
fd_path(char *buf, size_t len, int fd)
{
	snprintf(buf, len, "/proc/self/fd/%d", fd);
}

/* Open one name beneath dirfd without following anything. */
static int
open_beneath(int dirfd, const char *name, int flags, mode_t mode)
{
	struct open_how	how;
	long		rc;

	memset(&how, 0, sizeof(how));
	how.flags = (uint64_t)flags | O_NOFOLLOW | O_CLOEXEC;
	if (flags & O_CREAT)
		how.mode = mode;
	how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS |
	    RESOLVE_NO_SYMLINKS;
	rc = syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
	if (rc < 0 && errno == ENOSYS)
		/* Pre-5.6 kernel: the name is one component without '/',
		 * so O_NOFOLLOW alone cannot be led elsewhere. */
		rc = openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode);
	return (int)rc;
}

/* Run this worker thread with the caller's file-system identity and a
 * private umask of 0 (the client has applied its own). */
static void
creds_enter(const struct fuse_in_header *h)
{
	static __thread bool	own_fs;

	if (!own_fs) {
		/* CLONE_FS makes umask per thread, as it is per process. */
		if (unshare(CLONE_FS) == 0)
			umask(0);
		own_fs = true;
	}
	setfsgid(h->gid);
	setfsuid(h->uid);
}

static void
creds_leave(void)
{
	setfsuid(geteuid());
	setfsgid(getegid());
}

/* --- iovec access -------------------------------------------------- */

static size_t
iov_total(const struct iovec *v, unsigned n)
{
	size_t	t = 0;
	unsigned i;

	for (i = 0; i < n; i++) {
		if (t + v[i].iov_len < t)
			return SIZE_MAX;
		t += v[i].iov_len;
	}
	return t;
}

/* Copy len bytes at off out of (in) or into (out) an iovec list. */
static void
iov_copy(const struct iovec *v, unsigned n, size_t off, void *buf,
    size_t len, bool into)
{
	uint8_t	*p = buf;
	size_t	 c;
	unsigned i;

	for (i = 0; i < n && len > 0; i++) {
		if (off >= v[i].iov_len) {
			off -= v[i].iov_len;
			continue;
		}
		c = MIN(len, v[i].iov_len - off);
		if (into)
			memcpy((uint8_t *)v[i].iov_base + off, p, c);
		else
			memcpy(p, (uint8_t *)v[i].iov_base + off, c);
		p += c;
		len -= c;
		off = 0;
	}
}

/* The sub-list covering [off, off + len); *cnt entries in a fresh array. */
static struct iovec *
iov_slice(const struct iovec *v, unsigned n, size_t off, size_t len,
    unsigned *cnt)
{
	struct iovec	*s;
	unsigned	 i, k = 0;
	size_t		 c;

	s = xcalloc(n + 1, sizeof(*s));
	for (i = 0; i < n && len > 0; i++) {
		if (off >= v[i].iov_len) {
			off -= v[i].iov_len;
			continue;
		}
		c = MIN(len, v[i].iov_len - off);
		s[k].iov_base = (uint8_t *)v[i].iov_base + off;
		s[k].iov_len = c;
		k++;
		len -= c;
		off = 0;
	}
	*cnt = k;
	return s;
}

/* --- replies ------------------------------------------------------- */

/* Header + up to two body parts; -EINVAL (malformed) when it won't fit. */
static ssize_t
reply2(struct req *rq, const void *a, size_t alen, const void *b, size_t blen)
{
	struct fuse_out_header	oh;
	size_t			len = sizeof(oh) + alen + blen;

	if (len > rq->outcap) {
		rq->malformed = true;
		return -EINVAL;
	}
	oh.len = (uint32_t)len;
	oh.error = 0;
	oh.unique = rq->h.unique;
	iov_copy(rq->out, rq->nout, 0, &oh, sizeof(oh), true);
	if (alen)
		iov_copy(rq->out, rq->nout, sizeof(oh), (void *)a, alen, true);
	if (blen)
		iov_copy(rq->out, rq->nout, sizeof(oh) + alen, (void *)b, blen,
		    true);
	return (ssize_t)len;
}

static ssize_t
reply(struct req *rq, const void *a, size_t alen)
{
	return reply2(rq, a, alen, NULL, 0);
}

/* --- nodes --------------------------------------------------------- */

static struct node *
node_find(struct fusefs *fs, uint64_t id)
{
	struct hent	*e;

	for (e = ht_chain(&fs->nodes, id); e != NULL; e = e->next)
		if (e->key == id)
			return CONTAINER(e, struct node, by_id);
	return NULL;
}

static struct node *
node_find_ino(struct fusefs *fs, dev_t dev, ino_t ino)
{
	struct hent	*e;
	struct node	*n;
	uint64_t	 k = ino_key(dev, ino);

	for (e = ht_chain(&fs->inos, k); e != NULL; e = e->next) {
		n = CONTAINER(e, struct node, by_ino);
		if (e->key == k && n->dev == dev && n->ino == ino)
			return n;
	}
	return NULL;
}

static void
node_unino(struct fusefs *fs, struct node *n)
{
	if (n->in_ino) {
		ht_remove(&fs->inos, &n->by_ino);
		n->in_ino = false;
	}
}

/* The nodeid is dead to the client (the object may live on as a
 * parent or under a request).  Lock held. */
static void
node_unhash(struct fusefs *fs, struct node *n)
{
	if (n->hashed) {
		ht_remove(&fs->nodes, &n->by_id);
		n->hashed = false;
		fs->st.nodes--;
	}
	node_unino(fs, n);
}

/* --- node fd budget ------------------------------------------------ */

/*
 * Every looked-up node holds an O_PATH fd, and a guest walking a big tree
 * looks up more inodes than a process may hold fds.  A node nobody uses
 * (no request, no open handle) keeps its fd on an LRU list; over budget
 * the oldest are closed and re-opened on demand from the file handle
 * saved at lookup (open_by_handle_at(2), which needs CAP_DAC_READ_SEARCH;
 * without it nodes keep their fds as before).  A re-opened fd is decoded
 * on the share's mount and must be the very inode looked up (st_dev,
 * st_ino), so a handle never leads anywhere a lookup did not.  The fd
 * table is the process's: besides each server's own budget, the node fds
 * of all servers together stay under 3/4 of RLIMIT_NOFILE.
 */
static _Atomic size_t	fds_total;	/* node fds, every server */
static _Atomic size_t	fds_total_max = SIZE_MAX;

static void
lru_del(struct fusefs *fs, struct node *n)
{
	if (!n->on_lru)
		return;
	if (n->lru_prev != NULL)
		n->lru_prev->lru_next = n->lru_next;
	else
		fs->lru_head = n->lru_next;
	if (n->lru_next != NULL)
		n->lru_next->lru_prev = n->lru_prev;
	else
		fs->lru_tail = n->lru_prev;
	n->lru_prev = n->lru_next = NULL;
	n->on_lru = false;
}

/* Make n the most recently used, if it may be evicted at all. */
static void
lru_touch(struct fusefs *fs, struct node *n)
{
	lru_del(fs, n);
	if (n->pins > 0 || n->fd < 0 || n->fhandle == NULL || n == fs->rootn)
		return;
	n->lru_prev = fs->lru_tail;
	if (fs->lru_tail != NULL)
		fs->lru_tail->lru_next = n;
	else
		fs->lru_head = n;
	fs->lru_tail = n;
	n->on_lru = true;
}

/* Give n (fd closed) the fd.  Lock held. */
static void
node_setfd(struct fusefs *fs, struct node *n, int fd)
{
	n->fd = fd;
	if (fd < 0 || n == fs->rootn)
		return;
	fs->nfds++;
	fs->st.node_fds++;
	fds_total++;
	lru_touch(fs, n);
}

static void
node_closefd(struct fusefs *fs, struct node *n)
{
	lru_del(fs, n);
	if (n->fd < 0)
		return;
	close(n->fd);
	n->fd = -1;
	fs->nfds--;
	fs->st.node_fds--;
	fds_total--;
}

/* Close the least recently used fds while over budget, or at least
 * `more` of them.  Returns how many.  Lock held. */
static size_t
fds_trim(struct fusefs *fs, size_t more)
{
	size_t	n = 0;

	while (fs->lru_head != NULL && (n < more || fs->nfds > fs->max_fds ||
	    fds_total > fds_total_max)) {
		node_closefd(fs, fs->lru_head);
		fs->st.evictions++;
		n++;
	}
	return n;
}

/*
 * An open() of ours failed with errno: when the process is out of fds,
 * close an eighth of our evictable node fds so the caller can retry
 * (true), else warn once and turn EMFILE into ENFILE (false).
 */
static bool
fds_shed(struct fusefs *fs)
{
	size_t	n;

	if (errno != EMFILE && errno != ENFILE)
		return false;
	pthread_mutex_lock(&fs->lock);
	n = fds_trim(fs, MAX(fs->nfds / 8, (size_t)1));
	if (n == 0 && !fs->fd_warned) {
		fs->fd_warned = true;
		log_warnx("fusefs %s: out of file descriptors with %zu nodes "
		    "open%s", fs->root, fs->nfds, fs->can_reopen ? "" :
		    " (re-opening by file handle needs CAP_DAC_READ_SEARCH: "
		    "run as root, or raise the open-file limit)");
	}
	pthread_mutex_unlock(&fs->lock);
	if (n == 0)
		errno = ENFILE;
	return n > 0;
}

/* The file handle of O_PATH fd, when it can re-open fd later: NULL when
 * handles do not work here or fd is on another mount than the root. */
static struct file_handle *
fhandle_of(struct fusefs *fs, int fd)
{
	struct file_handle	*fh;
	int			 mid;

	if (!fs->can_reopen)
		return NULL;
	fh = xmalloc(sizeof(*fh) + MAX_HANDLE_SZ);
	fh->handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(fd, "", fh, &mid, AT_EMPTY_PATH) != 0 ||
	    mid != fs->mount_id) {
		free(fh);
		return NULL;
	}
	return fh;
}

/*
 * Pin n: its fd stays open until node_unpin().  Takes a reference too.
 * Lock held.  True when the fd was evicted: the caller then runs
 * node_reopen() unlocked.
 */
static bool
node_pin(struct fusefs *fs, struct node *n)
{
	n->refs++;
	n->pins++;
	lru_del(fs, n);
	return n->fd < 0 && n->fhandle != NULL;
}

/* Re-open pinned n's evicted fd from its file handle (unlocked).  As the
 * server's own identity: a worker's client fsuid has no capabilities.
 * Leaves n->fd -1 (stale) when the inode is gone. */
static void
node_reopen(struct fusefs *fs, struct node *n)
{
	struct stat	st;
	uid_t		fsuid;
	gid_t		fsgid;
	int		fd;

	fsuid = (uid_t)setfsuid(geteuid());
	fsgid = (gid_t)setfsgid(getegid());
	while ((fd = open_by_handle_at(fs->root_dfd, n->fhandle,
	    O_PATH | O_NOFOLLOW | O_CLOEXEC)) < 0 && fds_shed(fs))
		;
	setfsgid(fsgid);
	setfsuid(fsuid);
	if (fd < 0)
		return;
	if (fstat(fd, &st) != 0 || st.st_dev != n->dev ||
	    st.st_ino != n->ino) {
		close(fd);
		return;
	}
	pthread_mutex_lock(&fs->lock);
	if (n->fd < 0) {
		node_setfd(fs, n, fd);
		fs->st.reopens++;
		fd = -1;
	}
	pthread_mutex_unlock(&fs->lock);
	if (fd >= 0)
		close(fd);	/* another worker was first */
}

static void node_maybe_free(struct fusefs *, struct node *);

/* Undo node_pin().  Lock held. */
static void
node_unpin(struct fusefs *fs, struct node *n)
{
	n->pins--;
	n->refs--;
	if (n->pins == 0)
		lru_touch(fs, n);
	node_maybe_free(fs, n);
	fds_trim(fs, 0);
}

/* Drop n (and then its parents) if nothing holds it.  Lock held. */
static void
node_maybe_free(struct fusefs *fs, struct node *n)
{
	struct node	*p;

	while (n != NULL && n != fs->rootn && n->nlookup == 0 &&
	    n->refs == 0) {
		node_unhash(fs, n);
		if (n->wd >= 0) {
			ht_remove(&fs->wds, &n->by_wd);
			if (fs->ifd >= 0)
				inotify_rm_watch(fs->ifd, n->wd);
		}
		node_closefd(fs, n);
		p = n->parent;
		free(n->fhandle);
		free(n->name);
		free(n);
		if (p == NULL)
			break;
		p->refs--;
		n = p;
	}
}

static struct node *
node_get(struct fusefs *fs, uint64_t id)
{
	struct node	*n;
	bool		 evicted = false;

	pthread_mutex_lock(&fs->lock);
	n = node_find(fs, id);
	if (n != NULL)
		evicted = node_pin(fs, n);
	pthread_mutex_unlock(&fs->lock);
	if (evicted)
		node_reopen(fs, n);
	return n;
}

/* Undo node_get() (or node_pin() + node_reopen()). */
static void
node_put(struct fusefs *fs, struct node *n)
{
	if (n == NULL)
		return;
	pthread_mutex_lock(&fs->lock);
	node_unpin(fs, n);
	pthread_mutex_unlock(&fs->lock);
}

/*
 * Point n at (parent, name).  Lock held.  Our parent links can be stale
 * (the host renames behind our back): a link that would make n its own
 * ancestor is not made, so parent chains never loop.
 */
static void
node_rename(struct fusefs *fs, struct node *n, struct node *parent,
    const char *name)
{
	struct node	*old = n->parent, *a;

	if (old == parent && n->name != NULL && strcmp(n->name, name) == 0)
		return;
	for (a = parent; a != NULL; a = a->parent)
		if (a == n)
			return;
	parent->refs++;
	n->parent = parent;
	free(n->name);
	n->name = xstrdup(name);
	if (old != NULL) {
		old->refs--;
		node_maybe_free(fs, old);
	}
}

static struct node *
node_new(struct fusefs *fs, uint64_t id, int fd, const struct stat *st,
    struct file_handle *fh)
{
	struct node	*n;

	n = xcalloc(1, sizeof(*n));
	n->nodeid = id;
	n->generation = fs->generation;
	n->fd = -1;
	n->fhandle = fh;
	n->wd = -1;
	n->dev = st->st_dev;
	n->ino = st->st_ino;
	n->type = st->st_mode & S_IFMT;
	n->by_id.key = id;
	ht_insert(&fs->nodes, &n->by_id);
	n->hashed = true;
	if (node_find_ino(fs, st->st_dev, st->st_ino) == NULL) {
		n->by_ino.key = ino_key(st->st_dev, st->st_ino);
		ht_insert(&fs->inos, &n->by_ino);
		n->in_ino = true;
	}
	fs->st.nodes++;
	if (id == ROOT_ID)
		n->fd = fd;	/* never evicted, not counted */
	else
		node_setfd(fs, n, fd);
	return n;
}

static void
attr_fill(struct fuse_attr *a, const struct stat *st)
{
	memset(a, 0, sizeof(*a));
	a->ino = st->st_ino;
	a->size = st->st_size;
	a->blocks = st->st_blocks;
	a->atime = st->st_atim.tv_sec;
	a->mtime = st->st_mtim.tv_sec;
	a->ctime = st->st_ctim.tv_sec;
	a->atimensec = st->st_atim.tv_nsec;
	a->mtimensec = st->st_mtim.tv_nsec;
	a->ctimensec = st->st_ctim.tv_nsec;
	a->mode = st->st_mode;
	a->nlink = st->st_nlink;
	a->uid = st->st_uid;
	a->gid = st->st_gid;
	a->rdev = st->st_rdev;
	a->blksize = st->st_blksize;
}

static void
entry_fill(struct fusefs *fs, struct fuse_entry_out *eo, uint64_t id,
    uint64_t gen, const struct stat *st)
{
	memset(eo, 0, sizeof(*eo));
	eo->nodeid = id;
	eo->generation = gen;
	eo->entry_valid = fs->opts.entry_timeout_ms / 1000;
	eo->entry_valid_nsec = (fs->opts.entry_timeout_ms % 1000) * 1000000;
	eo->attr_valid = fs->opts.attr_timeout_ms / 1000;
	eo->attr_valid_nsec = (fs->opts.attr_timeout_ms % 1000) * 1000000;
	attr_fill(&eo->attr, st);
}

static int
node_stat(int fd, struct stat *st)
{
	if (fd < 0)
		return -ESTALE;
	if (fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0)
		return -errno;
	return 0;
}

/* Watch directory n for host edits (once). */
static void
node_watch(struct fusefs *fs, struct node *n)
{
	char	p[64];
	int	wd;

	if (fs->ifd < 0 || n->wd >= 0 || n->type != S_IFDIR || n->fd < 0)
		return;
	fd_path(p, sizeof(p), n->fd);
	wd = inotify_add_watch(fs->ifd, p, IN_CREATE | IN_DELETE |
	    IN_MOVED_FROM | IN_MOVED_TO | IN_MODIFY | IN_ATTRIB |
	    IN_CLOSE_WRITE | IN_DELETE_SELF | IN_ONLYDIR);
	if (wd < 0)
		return;
	pthread_mutex_lock(&fs->lock);
	if (n->wd < 0) {
		n->wd = wd;
		n->by_wd.key = (uint64_t)wd;
		ht_insert(&fs->wds, &n->by_wd);
	}
	pthread_mutex_unlock(&fs->lock);
}

/*
 * Look name up beneath parent and count one lookup on the result (the
 * same host inode keeps its nodeid).  fd: an already open O_PATH fd for
 * the name (consumed), or -1 to open it here.  0 or -errno.
 */
static int
do_lookup(struct fusefs *fs, struct node *parent, const char *name, int fd,
    struct fuse_entry_out *eo)
{
	struct stat		 st;
	struct node		*n;
	struct file_handle	*fh;
	int			 rc;

	if (parent->fd < 0)
		return -ESTALE;
	if (fd < 0) {
		while ((fd = open_beneath(parent->fd, name, O_PATH, 0)) < 0 &&
		    fds_shed(fs))
			;
		if (fd < 0)
			return -errno;
	}
	if ((rc = node_stat(fd, &st)) != 0) {
		close(fd);
		return rc;
	}
	fh = fhandle_of(fs, fd);
	pthread_mutex_lock(&fs->lock);
	n = node_find_ino(fs, st.st_dev, st.st_ino);
	if (n != NULL && n->hashed) {
		if (n->fd < 0) {
			node_setfd(fs, n, fd);
			fd = -1;
		} else
			lru_touch(fs, n);
		node_rename(fs, n, parent, name);
	} else {
		n = node_new(fs, fs->next_id++, fd, &st, fh);
		fh = NULL;
		fd = -1;
		node_rename(fs, n, parent, name);
	}
	n->nlookup++;
	entry_fill(fs, eo, n->nodeid, n->generation, &st);
	fds_trim(fs, 0);
	pthread_mutex_unlock(&fs->lock);
	free(fh);
	if (fd >= 0)
		close(fd);
	return 0;
}

/* --- handles ------------------------------------------------------- */

static struct handle *
handle_new(struct fusefs *fs, struct node *n, int fd, uint32_t flags, bool dir)
{
	struct handle	*h;

	h = xcalloc(1, sizeof(*h));
	h->fd = fd;
	h->flags = flags;
	h->dir = dir;
	h->refs = 1;
	pthread_mutex_init(&h->dlock, NULL);
	pthread_mutex_lock(&fs->lock);
	(void)node_pin(fs, n);	/* fd stays open while the handle is */
	h->node = n;
	h->fh = fs->next_fh++;
	h->by_fh.key = h->fh;
	ht_insert(&fs->handles, &h->by_fh);
	fs->st.handles++;
	pthread_mutex_unlock(&fs->lock);
	return h;
}

/* Lock held.  Frees h when nothing uses it any more. */
static void
handle_unref_locked(struct fusefs *fs, struct handle *h)
{
	if (--h->refs > 0)
		return;
	if (h->fd >= 0)
		close(h->fd);
	node_unpin(fs, h->node);
	pthread_mutex_destroy(&h->dlock);
	free(h);
}

static struct handle *
handle_get(struct fusefs *fs, uint64_t fh, bool dir)
{
	struct hent	*e;
	struct handle	*h;

	pthread_mutex_lock(&fs->lock);
	for (e = ht_chain(&fs->handles, fh); e != NULL; e = e->next) {
		h = CONTAINER(e, struct handle, by_fh);
		if (e->key == fh && h->dir == dir && !h->released) {
			h->refs++;
			pthread_mutex_unlock(&fs->lock);
			return h;
		}
	}
	pthread_mutex_unlock(&fs->lock);
	return NULL;
}

static void
handle_put(struct fusefs *fs, struct handle *h)
{
	pthread_mutex_lock(&fs->lock);
	handle_unref_locked(fs, h);
	pthread_mutex_unlock(&fs->lock);
}

/* Remove and unmap every DAX mapping overlapping [woff, woff + len) (or
 * made through fh when fh != 0).  Lock held on entry and exit. */
static void
maps_drop(struct fusefs *fs, uint64_t woff, uint64_t len, uint64_t fh,
    bool call)
{
	size_t	i = 0;

	while (i < fs->nmaps) {
		struct mapping	m = fs->maps[i];
		bool		hit;

		if (fh != 0)
			hit = m.fh == fh;
		else
			hit = m.woff < woff + len && woff < m.woff + m.len;
		if (!hit) {
			i++;
			continue;
		}
		fs->maps[i] = fs->maps[--fs->nmaps];
		if (call && fs->tp.dax_unmap != NULL)
			fs->tp.dax_unmap(fs->tp.arg, m.woff, m.len);
	}
}

static void
handle_release(struct fusefs *fs, struct handle *h)
{
	pthread_mutex_lock(&fs->lock);
	if (!h->released) {
		h->released = true;
		ht_remove(&fs->handles, &h->by_fh);
		fs->st.handles--;
		maps_drop(fs, 0, 0, h->fh, true);
		handle_unref_locked(fs, h);	/* the open reference */
	}
	pthread_mutex_unlock(&fs->lock);
}

/* --- parsing ------------------------------------------------------- */

/*
 * Take a NUL-terminated name off the body.  Malformed (no NUL within
 * bounds): -EINVAL with rq->malformed.  A name that is not one component
 * ('/', ".", "..", empty, too long): -EINVAL / -ENAMETOOLONG reply.
 */
static int
take_name(struct req *rq, size_t *off, const char **name)
{
	const char	*s = (const char *)rq->body + *off;
	const void	*nul;
	size_t		 n;

	if (*off >= rq->blen ||
	    (nul = memchr(s, '\0', rq->blen - *off)) == NULL) {
		rq->malformed = true;
		return -EINVAL;
	}
	n = (size_t)((const char *)nul - s);
	*off += n + 1;
	*name = s;
	if (n > FUSEFS_NAME_MAX)
		return -ENAMETOOLONG;
	if (n == 0 || memchr(s, '/', n) != NULL || strcmp(s, ".") == 0 ||
	    strcmp(s, "..") == 0)
		return -EINVAL;
	return 0;
}

/* A string that is data, not a name (symlink target, xattr name). */
static int
take_str(struct req *rq, size_t *off, const char **s)
{
	const char	*p = (const char *)rq->body + *off;
	const void	*nul;

	if (*off >= rq->blen ||
	    (nul = memchr(p, '\0', rq->blen - *off)) == NULL) {
		rq->malformed = true;
		return -EINVAL;
	}
	*off += (size_t)((const char *)nul - p) + 1;
	*s = p;
	return 0;
}

/* --- operations ---------------------------------------------------- */

typedef ssize_t (*op_fn)(struct req *);

static ssize_t
op_init(struct req *rq)
{
	struct fusefs		*fs = rq->fs;
	struct fuse_init_in	 in;
	struct fuse_init_out	 out;
	uint64_t		 want, kflags;
	uint32_t		 pages;

	memset(&in, 0, sizeof(in));
	memcpy(&in, rq->body, MIN(rq->blen, sizeof(in)));
	memset(&out, 0, sizeof(out));
	out.major = FUSE_KERNEL_VERSION;
	out.minor = FUSE_KERNEL_MINOR_VERSION;
	if (in.major > FUSE_KERNEL_VERSION)
		/* The client retries with our major. */
		return reply(rq, &out, sizeof(out));
	if (in.major < FUSE_KERNEL_VERSION || in.minor < FUSEFS_MINOR_MIN)
		return -EPROTO;
	kflags = in.flags;
	if ((in.flags & FUSE_INIT_EXT) && rq->blen >= 20)
		kflags |= (uint64_t)in.flags2 << 32;
	want = FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_ATOMIC_O_TRUNC |
	    FUSE_BIG_WRITES | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO |
	    FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES | FUSE_CACHE_SYMLINKS |
	    FUSE_AUTO_INVAL_DATA | FUSE_ASYNC_DIO;
	if (fs->opts.dax_window > 0)
		want |= FUSE_MAP_ALIGNMENT;
	want &= kflags;
	out.minor = MIN(in.minor, FUSE_KERNEL_MINOR_VERSION);
	out.flags = (uint32_t)want;
	out.max_readahead = MIN(in.max_readahead, fs->max_write);
	out.max_background = 64;
	out.congestion_threshold = 48;
	out.max_write = fs->max_write;
	out.time_gran = 1;
	pages = fs->max_write / FUSEFS_PAGE;
	out.max_pages = (uint16_t)MIN(MAX(pages, 1u), 256u);
	if (want & FUSE_MAP_ALIGNMENT)
		out.map_alignment = 12;	/* log2 of the 4 KiB page */
	pthread_mutex_lock(&fs->lock);
	fs->initialized = true;
	fs->auto_inval = (want & FUSE_AUTO_INVAL_DATA) != 0;
	fs->minor = out.minor;
	pthread_mutex_unlock(&fs->lock);
	return reply(rq, &out, sizeof(out));
}

static ssize_t
op_lookup(struct req *rq)
{
	struct fuse_entry_out	 eo;
	const char		*name;
	size_t			 off = 0;
	int			 rc;

	if ((rc = take_name(rq, &off, &name)) != 0)
		return rc;
	node_watch(rq->fs, rq->node);
	if ((rc = do_lookup(rq->fs, rq->node, name, -1, &eo)) != 0)
		return rc;
	return reply(rq, &eo, sizeof(eo));
}

static void
forget_one(struct fusefs *fs, uint64_t id, uint64_t count)
{
	struct node	*n;

	n = node_find(fs, id);
	if (n == NULL || n == fs->rootn)
		return;
	n->nlookup = count >= n->nlookup ? 0 : n->nlookup - count;
	if (n->nlookup == 0)
		/* Still somebody's parent or handle maybe: the object lives
		 * on for its children's paths, the nodeid does not. */
		node_unhash(fs, n);
	node_maybe_free(fs, n);
}

static ssize_t
op_forget(struct req *rq)
{
	struct fuse_forget_in	in;

	memcpy(&in, rq->body, sizeof(in));
	pthread_mutex_lock(&rq->fs->lock);
	forget_one(rq->fs, rq->h.nodeid, in.nlookup);
	pthread_mutex_unlock(&rq->fs->lock);
	rq->noreply = true;
	return 0;
}

static ssize_t
op_batch_forget(struct req *rq)
{
	struct fuse_batch_forget_in	in;
	struct fuse_forget_one		one;
	size_t				i;

	memcpy(&in, rq->body, sizeof(in));
	if (in.count > (rq->blen - sizeof(in)) / sizeof(one)) {
		rq->malformed = true;
		return -EINVAL;
	}
	pthread_mutex_lock(&rq->fs->lock);
	for (i = 0; i < in.count; i++) {
		memcpy(&one, rq->body + sizeof(in) + i * sizeof(one),
		    sizeof(one));
		forget_one(rq->fs, one.nodeid, one.nlookup);
	}
	pthread_mutex_unlock(&rq->fs->lock);
	rq->noreply = true;
	return 0;
}

static ssize_t
attr_reply(struct req *rq, int fd)
{
	struct fuse_attr_out	ao;
	struct stat		st;
	int			rc;

	if (fd >= 0) {
		if (fstat(fd, &st) != 0)
			return -errno;
	} else if ((rc = node_stat(rq->node->fd, &st)) != 0)
		return rc;
	memset(&ao, 0, sizeof(ao));
	ao.attr_valid = rq->fs->opts.attr_timeout_ms / 1000;
	ao.attr_valid_nsec = (rq->fs->opts.attr_timeout_ms % 1000) * 1000000;
	attr_fill(&ao.attr, &st);
	return reply(rq, &ao, sizeof(ao));
}

static ssize_t
op_getattr(struct req *rq)
{
	struct fuse_getattr_in	 in;
	struct handle		*h;
	ssize_t			 rc;

	memcpy(&in, rq->body, sizeof(in));
	if ((in.getattr_flags & FUSE_GETATTR_FH) &&
	    (h = handle_get(rq->fs, in.fh, false)) != NULL) {
		rc = attr_reply(rq, h->fd);
		handle_put(rq->fs, h);
		return rc;
	}
	return attr_reply(rq, -1);
}

static ssize_t
op_setattr(struct req *rq)
{
	struct fuse_setattr_in	 in;
	struct handle		*h = NULL;
	struct timespec		 ts[2];
	char			 p[64];
	int			 fd = rq->node->fd;
	ssize_t			 rc = 0;

	memcpy(&in, rq->body, sizeof(in));
	if (fd < 0)
		return -ESTALE;
	if ((in.valid & FATTR_FH) &&
	    (h = handle_get(rq->fs, in.fh, false)) == NULL)
		return -EBADF;
	fd_path(p, sizeof(p), fd);
	if (in.valid & (FATTR_UID | FATTR_GID)) {
		uid_t	u = (in.valid & FATTR_UID) ? in.uid : (uid_t)-1;
		gid_t	g = (in.valid & FATTR_GID) ? in.gid : (gid_t)-1;

		if (fchownat(fd, "", u, g, AT_EMPTY_PATH |
		    AT_SYMLINK_NOFOLLOW) != 0) {
			rc = -errno;
			goto out;
		}
	}
	if (in.valid & FATTR_MODE) {
		if (h != NULL ? fchmod(h->fd, in.mode & 07777) :
		    chmod(p, in.mode & 07777)) {
			rc = -errno;
			goto out;
		}
	}
	if (in.valid & FATTR_SIZE) {
		if (in.size > FUSEFS_OFFSET_MAX) {
			rc = -EFBIG;
			goto out;
		}
		if (h != NULL ? ftruncate(h->fd, (off_t)in.size) :
		    truncate(p, (off_t)in.size)) {
			rc = -errno;
			goto out;
		}
	}
	if (in.valid & (FATTR_ATIME | FATTR_MTIME)) {
		ts[0].tv_nsec = ts[1].tv_nsec = UTIME_OMIT;
		ts[0].tv_sec = ts[1].tv_sec = 0;
		if (in.valid & FATTR_ATIME_NOW)
			ts[0].tv_nsec = UTIME_NOW;
		else if (in.valid & FATTR_ATIME) {
			ts[0].tv_sec = (time_t)in.atime;
			ts[0].tv_nsec = in.atimensec % 1000000000;
		}
		if (in.valid & FATTR_MTIME_NOW)
			ts[1].tv_nsec = UTIME_NOW;
		else if (in.valid & FATTR_MTIME) {
			ts[1].tv_sec = (time_t)in.mtime;
			ts[1].tv_nsec = in.mtimensec % 1000000000;
		}
		if (utimensat(fd, "", ts, AT_EMPTY_PATH) != 0 &&
		    (errno != EINVAL || utimensat(AT_FDCWD, p, ts, 0) != 0)) {
			rc = -errno;
			goto out;
		}
	}
	/* FATTR_CTIME: any change above already moved ctime. */
	rc = attr_reply(rq, h != NULL ? h->fd : -1);
out:
	if (h != NULL)
		handle_put(rq->fs, h);
	return rc;
}

static ssize_t
op_readlink(struct req *rq)
{
	char	buf[PATH_MAX];
	ssize_t	n;

	if (rq->node->fd < 0)
		return -ESTALE;
	n = readlinkat(rq->node->fd, "", buf, sizeof(buf));
	if (n < 0)
		return -errno;
	return reply(rq, buf, (size_t)n);
}

/* Reply with the entry for name after a creating call succeeded. */
static ssize_t
entry_reply(struct req *rq, const char *name, int fd)
{
	struct fuse_entry_out	eo;
	int			rc;

	if ((rc = do_lookup(rq->fs, rq->node, name, fd, &eo)) != 0)
		return rc;
	return reply(rq, &eo, sizeof(eo));
}

static ssize_t
op_mknod(struct req *rq)
{
	struct fuse_mknod_in	 in;
	const char		*name;
	size_t			 off = sizeof(in);
	int			 rc;

	memcpy(&in, rq->body, sizeof(in));
	if ((rc = take_name(rq, &off, &name)) != 0)
		return rc;
	/* A device node made in the share could be opened through us, as
	 * root, on the host: the guest would reach host devices. */
	if (S_ISBLK(in.mode) || S_ISCHR(in.mode))
		return -EPERM;
	if (mknodat(rq->node->fd, name, in.mode, in.rdev) != 0)
		return -errno;
	return entry_reply(rq, name, -1);
}

static ssize_t
op_mkdir(struct req *rq)
{
	struct fuse_mkdir_in	 in;
	const char		*name;
	size_t			 off = sizeof(in);
	int			 rc;

	memcpy(&in, rq->body, sizeof(in));
	if ((rc = take_name(rq, &off, &name)) != 0)
		return rc;
	if (mkdirat(rq->node->fd, name, in.mode & 07777) != 0)
		return -errno;
	return entry_reply(rq, name, -1);
}

static ssize_t
op_symlink(struct req *rq)
{
	const char	*name, *target;
	size_t		 off = 0;
	int		 rc;

	if ((rc = take_name(rq, &off, &name)) != 0)
		return rc;
	if ((rc = take_str(rq, &off, &target)) != 0)
		return rc;
	if (strlen(target) >= PATH_MAX)
		return -ENAMETOOLONG;
	/* The target is data: stored verbatim, never resolved by us. */
	if (symlinkat(target, rq->node->fd, name) != 0)
		return -errno;
	return entry_reply(rq, name, -1);
}

static ssize_t
op_unlink(struct req *rq)
{
	const char	*name;
	size_t		 off = 0;
	int		 rc;

	if ((rc = take_name(rq, &off, &name)) != 0)
		return rc;
	if (unlinkat(rq->node->fd, name,
	    rq->h.opcode == FUSE_RMDIR ? AT_REMOVEDIR : 0) != 0)
		return -errno;
	return reply(rq, NULL, 0);
}

/* What name beneath dirfd is now (st_ino 0: nothing).  No lock. */
static void
name_stat(int dirfd, const char *name, struct stat *st)
{
	if (fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW) != 0)
		memset(st, 0, sizeof(*st));
}

/* The node for what name_stat() found, if any.  Lock held. */
static struct node *
node_by_stat(struct fusefs *fs, const struct stat *st)
{
	if (st->st_ino == 0)
		return NULL;
	return node_find_ino(fs, st->st_dev, st->st_ino);
}

static ssize_t
do_rename(struct req *rq, uint64_t newdir, uint32_t flags, size_t off)
{
	struct fusefs	*fs = rq->fs;
	struct node	*nd, *a, *b;
	struct stat	 sa, sb;
	const char	*oldname, *newname;
	int		 rc;

	if ((rc = take_name(rq, &off, &oldname)) != 0)
		return rc;
	if ((rc = take_name(rq, &off, &newname)) != 0)
		return rc;
	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT))
		return -EINVAL;
	if ((nd = node_get(fs, newdir)) == NULL)
		return -ESTALE;
	if (nd->fd < 0) {
		rc = -ESTALE;
		goto out;
	}
	if (syscall(SYS_renameat2, rq->node->fd, oldname, nd->fd, newname,
	    flags) != 0) {
		rc = -errno;
		goto out;
	}
	/* Keep the saved paths right: the moved nodes' names follow. */
	name_stat(nd->fd, newname, &sa);
	memset(&sb, 0, sizeof(sb));
	if (flags & RENAME_EXCHANGE)
		name_stat(rq->node->fd, oldname, &sb);
	pthread_mutex_lock(&fs->lock);
	a = node_by_stat(fs, &sa);
	b = node_by_stat(fs, &sb);
	if (a != NULL && a->parent != NULL)
		node_rename(fs, a, nd, newname);
	if (b != NULL && b->parent != NULL)
		node_rename(fs, b, rq->node, oldname);
	pthread_mutex_unlock(&fs->lock);
	rc = 0;
out:
	node_put(fs, nd);
	return rc != 0 ? rc : reply(rq, NULL, 0);
}

static ssize_t
op_rename(struct req *rq)
{
	struct fuse_rename_in	in;

	memcpy(&in, rq->body, sizeof(in));
	return do_rename(rq, in.newdir, 0, sizeof(in));
}

static ssize_t
op_rename2(struct req *rq)
{
	struct fuse_rename2_in	in;

	memcpy(&in, rq->body, sizeof(in));
	return do_rename(rq, in.newdir, in.flags, sizeof(in));
}

static ssize_t
op_link(struct req *rq)
{
	struct fuse_link_in	 in;
	struct node		*old;
	const char		*name;
	char			 p[64];
	size_t			 off = sizeof(in);
	int			 rc;

	memcpy(&in, rq->body, sizeof(in));
	if ((rc = take_name(rq, &off, &name)) != 0)
		return rc;
	if ((old = node_get(rq->fs, in.oldnodeid)) == NULL)
		return -ESTALE;
	if (old->fd < 0 || old->type == S_IFDIR) {
		rc = old->fd < 0 ? -ESTALE : -EPERM;
		goto out;
	}
	/* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH, which a non-root fsuid
	 * lacks; the /proc link works for everybody. */
	if (linkat(old->fd, "", rq->node->fd, name, AT_EMPTY_PATH) != 0) {
		fd_path(p, sizeof(p), old->fd);
		if (errno != ENOENT && errno != EPERM) {
			rc = -errno;
			goto out;
		}
		if (linkat(AT_FDCWD, p, rq->node->fd, name,
		    AT_SYMLINK_FOLLOW) != 0) {
			rc = -errno;
			goto out;
		}
	}
	rc = 0;
out:
	node_put(rq->fs, old);
	return rc != 0 ? rc : entry_reply(rq, name, -1);
}

static bool
writes(uint32_t flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

/* Open flags we pass on: the client's, minus what only it may decide. */
static int
open_flags(uint32_t f)
{
	f &= ~(uint32_t)(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW | O_PATH |
	    (O_TMPFILE & ~O_DIRECTORY));
	return (int)(f | O_CLOEXEC);
}

/* OPEN's answer on the page cache: keep a file's pages across opens when
 * the client drops them on a change it sees (a host edit shows when the
 * attributes expire, within 1 s, or at once with inotify). */
static uint32_t
keep_cache(struct fusefs *fs)
{
	bool	keep;

	pthread_mutex_lock(&fs->lock);
	keep = fs->auto_inval;
	pthread_mutex_unlock(&fs->lock);
	return keep ? FOPEN_KEEP_CACHE : 0;
}

static ssize_t
op_open(struct req *rq)
{
	struct fuse_open_in	 in;
	struct fuse_open_out	 oo;
	struct handle		*h;
	char			 p[64];
	int			 fd;

	memcpy(&in, rq->body, sizeof(in));
	if (rq->fs->opts.readonly && writes(in.flags))
		return -EROFS;
	if (rq->node->fd < 0)
		return -ESTALE;
	if (rq->node->type == S_IFLNK)
		return -ELOOP;
	/* A client kernel opens device nodes and FIFOs itself and never
	 * asks: an OPEN of one is a lie that would have us open a host
	 * device (or block on a FIFO) as root. */
	if (rq->node->type != S_IFREG && rq->node->type != S_IFDIR)
		return -EPERM;
	fd_path(p, sizeof(p), rq->node->fd);
	while ((fd = open(p, open_flags(in.flags))) < 0 && fds_shed(rq->fs))
		;
	if (fd < 0)
		return -errno;
	h = handle_new(rq->fs, rq->node, fd, in.flags, false);
	memset(&oo, 0, sizeof(oo));
	oo.fh = h->fh;
	oo.open_flags = keep_cache(rq->fs);
	return reply(rq, &oo, sizeof(oo));
}

static ssize_t
op_create(struct req *rq)
{
	struct fuse_create_in	 in;
	struct fuse_entry_out	 eo;
	struct fuse_open_out	 oo;
	struct handle		*h;
	struct node		*n;
	const char		*name;
	char			 p[64];
	size_t			 off = sizeof(in);
	int			 fd, pfd, rc;

	memcpy(&in, rq->body, sizeof(in));
	if ((rc = take_name(rq, &off, &name)) != 0)
		return rc;
	if (rq->node->fd < 0)
		return -ESTALE;
	/* EMFILE comes before the file is made: a retry creates once. */
	while ((fd = open_beneath(rq->node->fd, name, open_flags(in.flags) |
	    O_CREAT | (int)(in.flags & O_EXCL), in.mode & 07777)) < 0 &&
	    fds_shed(rq->fs))
		;
	if (fd < 0)
		return -errno;
	fd_path(p, sizeof(p), fd);
	if ((pfd = open(p, O_PATH | O_CLOEXEC)) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if ((rc = do_lookup(rq->fs, rq->node, name, pfd, &eo)) != 0) {
		close(fd);
		return rc;
	}
	/* A racing FORGET (a lying client) may have dropped it already. */
	if ((n = node_get(rq->fs, eo.nodeid)) == NULL) {
		close(fd);
		return -ESTALE;
	}
	h = handle_new(rq->fs, n, fd, in.flags, false);
	node_put(rq->fs, n);
	memset(&oo, 0, sizeof(oo));
	oo.fh = h->fh;
	oo.open_flags = keep_cache(rq->fs);
	return reply2(rq, &eo, sizeof(eo), &oo, sizeof(oo));
}

static ssize_t
op_read(struct req *rq)
{
	struct fuse_read_in	 in;
	struct fuse_out_header	 oh;
	struct handle		*h;
	struct iovec		*s;
	unsigned		 ns;
	size_t			 want;
	ssize_t			 n;

	memcpy(&in, rq->body, sizeof(in));
	if (rq->outcap < sizeof(oh) || in.offset > FUSEFS_OFFSET_MAX) {
		rq->malformed = rq->outcap < sizeof(oh);
		return -EINVAL;
	}
	if ((h = handle_get(rq->fs, in.fh, false)) == NULL)
		return -EBADF;
	if (h->fd < 0) {
		handle_put(rq->fs, h);
		return -ESTALE;
	}
	want = MIN((size_t)in.size, rq->outcap - sizeof(oh));
	s = iov_slice(rq->out, rq->nout, sizeof(oh), want, &ns);
	n = ns > 0 ? preadv(h->fd, s, (int)ns, (off_t)in.offset) : 0;
	if (n < 0)
		n = -errno;
	free(s);
	handle_put(rq->fs, h);
	if (n < 0)
		return n;
	oh.len = (uint32_t)(sizeof(oh) + (size_t)n);
	oh.error = 0;
	oh.unique = rq->h.unique;
	iov_copy(rq->out, rq->nout, 0, &oh, sizeof(oh), true);
	return (ssize_t)oh.len;
}

static ssize_t
op_write(struct req *rq)
{
	struct fuse_write_in	 in;
	struct fuse_write_out	 wo;
	struct handle		*h;
	struct iovec		*s;
	unsigned		 ns;
	ssize_t			 n;

	memcpy(&in, rq->body, sizeof(in));
	if (in.size != rq->h.len - sizeof(rq->h) - sizeof(in)) {
		rq->malformed = true;
		return -EINVAL;
	}
	if (in.offset > FUSEFS_OFFSET_MAX)
		return -EFBIG;
	if ((h = handle_get(rq->fs, in.fh, false)) == NULL)
		return -EBADF;
	if (h->fd < 0) {
		handle_put(rq->fs, h);
		return -ESTALE;
	}
	s = iov_slice(rq->in, rq->nin, sizeof(rq->h) + sizeof(in), in.size,
	    &ns);
	n = ns > 0 ? pwritev(h->fd, s, (int)ns, (off_t)in.offset) : 0;
	if (n < 0)
		n = -errno;
	free(s);
	handle_put(rq->fs, h);
	if (n < 0)
		return n;
	memset(&wo, 0, sizeof(wo));
	wo.size = (uint32_t)n;
	return reply(rq, &wo, sizeof(wo));
}

static ssize_t
op_statfs(struct req *rq)
{
	struct fuse_statfs_out	so;
	struct statfs		sf;
	int			fd = rq->node->fd >= 0 ? rq->node->fd :
				    rq->fs->rootn->fd;

	if (fstatfs(fd, &sf) != 0)
		return -errno;
	memset(&so, 0, sizeof(so));
	so.st.blocks = sf.f_blocks;
	so.st.bfree = sf.f_bfree;
	so.st.bavail = sf.f_bavail;
	so.st.files = sf.f_files;
	so.st.ffree = sf.f_ffree;
	so.st.bsize = (uint32_t)sf.f_bsize;
	so.st.namelen = (uint32_t)sf.f_namelen;
	so.st.frsize = (uint32_t)sf.f_frsize;
	return reply(rq, &so, sizeof(so));
}

static ssize_t
op_release(struct req *rq)
{
	struct fuse_release_in	 in;
	struct handle		*h;

	memcpy(&in, rq->body, sizeof(in));
	h = handle_get(rq->fs, in.fh, rq->h.opcode == FUSE_RELEASEDIR);
	if (h != NULL) {
		handle_release(rq->fs, h);
		handle_put(rq->fs, h);
	}
	return reply(rq, NULL, 0);
}

static ssize_t
op_fsync(struct req *rq)
{
	struct fuse_fsync_in	 in;
	struct handle		*h;
	int			 rc = 0;

	memcpy(&in, rq->body, sizeof(in));
	h = handle_get(rq->fs, in.fh, rq->h.opcode == FUSE_FSYNCDIR);
	if (h == NULL)
		return -EBADF;
	if (h->fd < 0)
		rc = -ESTALE;
	else if (((in.fsync_flags & FUSE_FSYNC_FDATASYNC) ?
	    fdatasync(h->fd) : fsync(h->fd)) != 0)
		rc = -errno;
	handle_put(rq->fs, h);
	return rc != 0 ? rc : reply(rq, NULL, 0);
}

static ssize_t
op_flush(struct req *rq)
{
	/* Locks are OFD locks on the handle: nothing to drop per close. */
	return reply(rq, NULL, 0);
}

/*
 * Where the xattr calls go: the f*xattr calls refuse O_PATH fds, so a
 * file or directory is reached through the /proc link of its fd, and a
 * symlink (whose link /proc would follow) as its name beneath the /proc
 * link of its parent's fd, with the l*xattr calls.  *par: a parent
 * reference to put after the call.
 */
struct xpath {
	char		 p[64 + FUSEFS_NAME_MAX + 2];
	char		 name[FUSEFS_NAME_MAX + 1];
	bool		 nofollow;
	struct node	*par;
};

static int
xattr_path(struct req *rq, struct xpath *x)
{
	struct fusefs	*fs = rq->fs;
	struct node	*n = rq->node;
	bool		 evicted = false;
	int		 rc = 0;

	x->par = NULL;
	x->nofollow = false;
	if (n->fd < 0)
		return -ESTALE;
	if (n->type != S_IFLNK) {
		fd_path(x->p, sizeof(x->p), n->fd);
		return 0;
	}
	pthread_mutex_lock(&fs->lock);
	if (n->parent != NULL) {
		x->par = n->parent;
		evicted = node_pin(fs, x->par);
		/* Our copy: n's name may change under a rename. */
		snprintf(x->name, sizeof(x->name), "%s", n->name);
	}
	pthread_mutex_unlock(&fs->lock);
	if (x->par == NULL)
		return -ENOTSUP;
	if (evicted)
		node_reopen(fs, x->par);
	if (x->par->fd < 0) {
		node_put(fs, x->par);
		x->par = NULL;
		return -ENOTSUP;
	}
	snprintf(x->p, sizeof(x->p), "/proc/self/fd/%d/%s", x->par->fd,
	    x->name);
	x->nofollow = true;
	return rc;
}

static ssize_t
xattr_reply(struct req *rq, uint32_t size, bool list, const char *name)
{
	struct fuse_getxattr_out	 go;
	struct xpath			 x;
	uint8_t				*buf = NULL;
	ssize_t				 n;
	int				 rc;

	if ((rc = xattr_path(rq, &x)) != 0)
		return rc;
	if (size > 0) {
		size = MIN(size, FUSEFS_XATTR_MAX);
		buf = xmalloc(size);
	}
	if (list)
		n = x.nofollow ? llistxattr(x.p, (char *)buf, size) :
		    listxattr(x.p, (char *)buf, size);
	else
		n = x.nofollow ? lgetxattr(x.p, name, buf, size) :
		    getxattr(x.p, name, buf, size);
	rc = n < 0 ? -errno : 0;
	node_put(rq->fs, x.par);
	if (rc != 0) {
		free(buf);
		return rc;
	}
	if (size == 0) {
		memset(&go, 0, sizeof(go));
		go.size = (uint32_t)n;
		return reply(rq, &go, sizeof(go));
	}
	n = reply(rq, buf, (size_t)n);
	free(buf);
	return n;
}

static ssize_t
op_getxattr(struct req *rq)
{
	struct fuse_getxattr_in	 in;
	const char		*name;
	size_t			 off = sizeof(in);
	int			 rc;

	memcpy(&in, rq->body, sizeof(in));
	if ((rc = take_str(rq, &off, &name)) != 0)
		return rc;
	return xattr_reply(rq, in.size, false, name);
}

static ssize_t
op_listxattr(struct req *rq)
{
	struct fuse_getxattr_in	in;

	memcpy(&in, rq->body, sizeof(in));
	return xattr_reply(rq, in.size, true, NULL);
}

static ssize_t
op_setxattr(struct req *rq)
{
	struct fuse_setxattr_in	 in;
	struct xpath		 x;
	const char		*name;
	size_t			 off = FUSE_COMPAT_SETXATTR_IN_SIZE;
	int			 rc;

	memset(&in, 0, sizeof(in));
	memcpy(&in, rq->body, FUSE_COMPAT_SETXATTR_IN_SIZE);
	if ((rc = take_str(rq, &off, &name)) != 0)
		return rc;
	if (in.size > rq->blen - off || in.size > FUSEFS_XATTR_MAX) {
		rq->malformed = true;
		return -EINVAL;
	}
	if ((rc = xattr_path(rq, &x)) != 0)
		return rc;
	if ((x.nofollow ? lsetxattr : setxattr)(x.p, name, rq->body + off,
	    in.size, (int)in.flags) != 0)
		rc = -errno;
	node_put(rq->fs, x.par);
	return rc != 0 ? rc : reply(rq, NULL, 0);
}

static ssize_t
op_removexattr(struct req *rq)
{
	struct xpath	 x;
	const char	*name;
	size_t		 off = 0;
	int		 rc;

	if ((rc = take_str(rq, &off, &name)) != 0)
		return rc;
	if ((rc = xattr_path(rq, &x)) != 0)
		return rc;
	if ((x.nofollow ? lremovexattr : removexattr)(x.p, name) != 0)
		rc = -errno;
	node_put(rq->fs, x.par);
	return rc != 0 ? rc : reply(rq, NULL, 0);
}

static ssize_t
op_opendir(struct req *rq)
{
	struct fuse_open_out	 oo;
	struct handle		*h;
	int			 fd;

	if (rq->node->fd < 0)
		return -ESTALE;
	while ((fd = openat(rq->node->fd, ".", O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) < 0 && fds_shed(rq->fs))
		;
	if (fd < 0)
		return -errno;
	node_watch(rq->fs, rq->node);
	h = handle_new(rq->fs, rq->node, fd, O_RDONLY, true);
	memset(&oo, 0, sizeof(oo));
	oo.fh = h->fh;
	return reply(rq, &oo, sizeof(oo));
}

struct linux_dirent64 {
	uint64_t	d_ino;
	int64_t		d_off;
	unsigned short	d_reclen;
	unsigned char	d_type;
	char		d_name[];
};

static ssize_t
op_readdir(struct req *rq)
{
	struct fuse_read_in	 in;
	struct fuse_out_header	 oh;
	struct handle		*h;
	uint8_t			*obuf, *dbuf;
	size_t			 cap, used = 0, pos, dlen;
	bool			 plus = rq->h.opcode == FUSE_READDIRPLUS;
	ssize_t			 n, rc = 0;

	memcpy(&in, rq->body, sizeof(in));
	if (rq->outcap < sizeof(oh)) {
		rq->malformed = true;
		return -EINVAL;
	}
	if ((h = handle_get(rq->fs, in.fh, true)) == NULL)
		return -EBADF;
	if (h->fd < 0) {
		handle_put(rq->fs, h);
		return -ESTALE;
	}
	cap = MIN((size_t)in.size, rq->outcap - sizeof(oh));
	cap = MIN(cap, (size_t)1 << 20);
	obuf = xmalloc(cap + 1);
	dlen = MAX(cap, (size_t)4096);
	dbuf = xmalloc(dlen);
	pthread_mutex_lock(&h->dlock);
	if (lseek(h->fd, (off_t)in.offset, SEEK_SET) < 0) {
		rc = -errno;
		goto out;
	}
	for (;;) {
		n = syscall(SYS_getdents64, h->fd, dbuf, dlen);
		if (n < 0) {
			rc = used > 0 ? 0 : -errno;
			break;
		}
		if (n == 0)
			break;
		for (pos = 0; pos < (size_t)n;) {
			struct linux_dirent64	*d = (void *)(dbuf + pos);
			struct fuse_dirent	 fd;
			struct fuse_entry_out	 eo;
			size_t			 nl = strlen(d->d_name);
			size_t			 rec, hdr;
			bool			 dot;

			hdr = plus ? sizeof(eo) + FUSE_NAME_OFFSET :
			    FUSE_NAME_OFFSET;
			rec = FUSE_DIRENT_ALIGN(hdr + nl);
			if (used + rec > cap)
				goto full;
			dot = strcmp(d->d_name, ".") == 0 ||
			    strcmp(d->d_name, "..") == 0;
			memset(&eo, 0, sizeof(eo));
			if (plus && !dot &&
			    do_lookup(rq->fs, h->node, d->d_name, -1, &eo) != 0)
				memset(&eo, 0, sizeof(eo));	/* gone: skip */
			fd.ino = d->d_ino;
			fd.off = (uint64_t)d->d_off;
			fd.namelen = (uint32_t)nl;
			fd.type = d->d_type;
			memset(obuf + used, 0, rec);
			if (plus)
				memcpy(obuf + used, &eo, sizeof(eo));
			memcpy(obuf + used + hdr - FUSE_NAME_OFFSET, &fd,
			    FUSE_NAME_OFFSET);
			memcpy(obuf + used + hdr, d->d_name, nl);
			used += rec;
			pos += d->d_reclen;
		}
	}
full:
	if (rc == 0)
		rc = reply(rq, obuf, used);
out:
	pthread_mutex_unlock(&h->dlock);
	handle_put(rq->fs, h);
	free(dbuf);
	free(obuf);
	return rc;
}

static ssize_t
op_access(struct req *rq)
{
	struct fuse_access_in	in;
	char			p[64];

	memcpy(&in, rq->body, sizeof(in));
	if (rq->node->fd < 0)
		return -ESTALE;
	if (rq->fs->opts.readonly && (in.mask & W_OK))
		return -EROFS;
	fd_path(p, sizeof(p), rq->node->fd);
	if (rq->node->type == S_IFLNK)
		return reply(rq, NULL, 0);
	if (faccessat(AT_FDCWD, p, (int)(in.mask & 7), AT_EACCESS) != 0)
		return -errno;
	return reply(rq, NULL, 0);
}

/* A file handle op's fd; fills *hp (put it after). */
static int
fh_fd(struct req *rq, uint64_t fh, struct handle **hp)
{
	struct handle	*h;

	if ((h = handle_get(rq->fs, fh, false)) == NULL)
		return -EBADF;
	if (h->fd < 0) {
		handle_put(rq->fs, h);
		return -ESTALE;
	}
	*hp = h;
	return h->fd;
}

static ssize_t
op_fallocate(struct req *rq)
{
	struct fuse_fallocate_in	 in;
	struct handle			*h;
	int				 fd, rc = 0;

	memcpy(&in, rq->body, sizeof(in));
	if ((fd = fh_fd(rq, in.fh, &h)) < 0)
		return fd;
	if (in.offset > FUSEFS_OFFSET_MAX || in.length > FUSEFS_OFFSET_MAX)
		rc = -EINVAL;
	else if (fallocate(fd, (int)in.mode, (off_t)in.offset,
	    (off_t)in.length) != 0)
		rc = -errno;
	handle_put(rq->fs, h);
	return rc != 0 ? rc : reply(rq, NULL, 0);
}

static ssize_t
op_lseek(struct req *rq)
{
	struct fuse_lseek_in	 in;
	struct fuse_lseek_out	 lo;
	struct handle		*h;
	off_t			 r;
	int			 fd, rc = 0;

	memcpy(&in, rq->body, sizeof(in));
	if (in.whence != SEEK_SET && in.whence != SEEK_CUR &&
	    in.whence != SEEK_END && in.whence != SEEK_DATA &&
	    in.whence != SEEK_HOLE)
		return -EINVAL;
	if ((fd = fh_fd(rq, in.fh, &h)) < 0)
		return fd;
	r = lseek(fd, (off_t)in.offset, (int)in.whence);
	if (r < 0)
		rc = -errno;
	handle_put(rq->fs, h);
	if (rc != 0)
		return rc;
	lo.offset = (uint64_t)r;
	return reply(rq, &lo, sizeof(lo));
}

static ssize_t
op_copy_file_range(struct req *rq)
{
	struct fuse_copy_file_range_in	 in;
	struct fuse_write_out		 wo;
	struct handle			*hi = NULL, *ho = NULL;
	loff_t				 oi, oo;
	ssize_t				 n;
	int				 fi, fo;

	memcpy(&in, rq->body, sizeof(in));
	if (in.flags != 0 || in.off_in > FUSEFS_OFFSET_MAX ||
	    in.off_out > FUSEFS_OFFSET_MAX)
		return -EINVAL;
	if ((fi = fh_fd(rq, in.fh_in, &hi)) < 0)
		return fi;
	if ((fo = fh_fd(rq, in.fh_out, &ho)) < 0) {
		handle_put(rq->fs, hi);
		return fo;
	}
	oi = (loff_t)in.off_in;
	oo = (loff_t)in.off_out;
	n = copy_file_range(fi, &oi, fo, &oo, MIN(in.len, (uint64_t)1 << 30),
	    0);
	if (n < 0)
		n = -errno;
	handle_put(rq->fs, hi);
	handle_put(rq->fs, ho);
	if (n < 0)
		return n;
	memset(&wo, 0, sizeof(wo));
	wo.size = (uint32_t)n;
	return reply(rq, &wo, sizeof(wo));
}

static ssize_t
op_lk(struct req *rq)
{
	struct fuse_lk_in	 in;
	struct fuse_lk_out	 lo;
	struct handle		*h;
	struct flock		 fl;
	int			 fd, cmd, rc = 0;

	memcpy(&in, rq->body, sizeof(in));
	if (in.lk_flags & FUSE_LK_FLOCK)
		return -ENOSYS;	/* not negotiated: the client emulates */
	if (in.lk.type != F_RDLCK && in.lk.type != F_WRLCK &&
	    in.lk.type != F_UNLCK)
		return -EINVAL;
	if (in.lk.start > FUSEFS_OFFSET_MAX || in.lk.end < in.lk.start)
		return -EINVAL;
	if ((fd = fh_fd(rq, in.fh, &h)) < 0)
		return fd;
	memset(&fl, 0, sizeof(fl));
	fl.l_type = (short)in.lk.type;
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)in.lk.start;
	fl.l_len = in.lk.end >= FUSEFS_OFFSET_MAX ? 0 :
	    (off_t)(in.lk.end - in.lk.start + 1);
	cmd = rq->h.opcode == FUSE_GETLK ? F_OFD_GETLK :
	    rq->h.opcode == FUSE_SETLKW ? F_OFD_SETLKW : F_OFD_SETLK;
	if (fcntl(fd, cmd, &fl) != 0)
		rc = -errno;
	handle_put(rq->fs, h);
	if (rc != 0)
		return rc;
	if (rq->h.opcode != FUSE_GETLK)
		return reply(rq, NULL, 0);
	memset(&lo, 0, sizeof(lo));
	lo.lk.type = (uint32_t)fl.l_type;
	if (fl.l_type != F_UNLCK) {
		lo.lk.start = (uint64_t)fl.l_start;
		lo.lk.end = fl.l_len == 0 ? FUSEFS_OFFSET_MAX :
		    (uint64_t)(fl.l_start + fl.l_len - 1);
		lo.lk.pid = 0;
	}
	return reply(rq, &lo, sizeof(lo));
}

static ssize_t
op_interrupt(struct req *rq)
{
	/* Requests are not cancellable once running; the answer comes. */
	rq->noreply = true;
	return 0;
}

static ssize_t
op_destroy(struct req *rq)
{
	ssize_t	rc;

	/* The client is done with every nodeid and handle. */
	rc = reply(rq, NULL, 0);
	fusefs_reset(rq->fs);
	return rc;
}

static ssize_t
op_syncfs(struct req *rq)
{
	if (syncfs(rq->fs->root_dfd) != 0)
		return -errno;
	return reply(rq, NULL, 0);
}

static bool
dax_range_ok(struct fusefs *fs, uint64_t woff, uint64_t len)
{
	return len > 0 && woff % FUSEFS_PAGE == 0 && len % FUSEFS_PAGE == 0 &&
	    woff <= fs->opts.dax_window && len <= fs->opts.dax_window - woff;
}

static ssize_t
op_setupmapping(struct req *rq)
{
	struct fusefs			*fs = rq->fs;
	struct fuse_setupmapping_in	 in;
	struct handle			*h = NULL;
	struct mapping			 m;
	char				 p[64];
	bool				 wr;
	int				 fd, rc;

	memcpy(&in, rq->body, sizeof(in));
	if (fs->opts.dax_window == 0 || fs->tp.dax_map == NULL)
		return -ENOSYS;
	wr = (in.flags & FUSE_SETUPMAPPING_FLAG_WRITE) != 0;
	if (wr && fs->opts.readonly)
		return -EROFS;
	if (!dax_range_ok(fs, in.moffset, in.len) ||
	    in.foffset % FUSEFS_PAGE != 0 ||
	    in.foffset > FUSEFS_OFFSET_MAX - in.len)
		return -EINVAL;
	if (in.fh != UINT64_MAX) {
		if ((h = handle_get(fs, in.fh, false)) == NULL)
			return -EBADF;
		fd = dup(h->fd);
	} else {
		/* Linux sends no handle: map the node itself. */
		if (rq->node->fd < 0)
			return -ESTALE;
		if (rq->node->type != S_IFREG)
			return -EINVAL;
		fd_path(p, sizeof(p), rq->node->fd);
		fd = open(p, (wr ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	}
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	pthread_mutex_lock(&fs->lock);
	maps_drop(fs, in.moffset, in.len, 0, false);
	pthread_mutex_unlock(&fs->lock);
	rc = fs->tp.dax_map(fs->tp.arg, in.moffset, fd, in.foffset, in.len,
	    wr);
	close(fd);
	if (rc == 0) {
		m.woff = in.moffset;
		m.len = in.len;
		m.fh = h != NULL ? h->fh : 0;
		pthread_mutex_lock(&fs->lock);
		fs->maps = xreallocarray(fs->maps, fs->nmaps + 1,
		    sizeof(*fs->maps));
		fs->maps[fs->nmaps++] = m;
		pthread_mutex_unlock(&fs->lock);
	}
out:
	if (h != NULL)
		handle_put(fs, h);
	return rc != 0 ? rc : reply(rq, NULL, 0);
}

static ssize_t
op_removemapping(struct req *rq)
{
	struct fusefs			*fs = rq->fs;
	struct fuse_removemapping_in	 in;
	struct fuse_removemapping_one	 one;
	size_t				 i;
	int				 rc = 0;

	memcpy(&in, rq->body, sizeof(in));
	if (in.count > (rq->blen - sizeof(in)) / sizeof(one)) {
		rq->malformed = true;
		return -EINVAL;
	}
	if (fs->opts.dax_window == 0 || fs->tp.dax_unmap == NULL)
		return -ENOSYS;
	for (i = 0; i < in.count; i++) {
		memcpy(&one, rq->body + sizeof(in) + i * sizeof(one),
		    sizeof(one));
		if (!dax_range_ok(fs, one.moffset, one.len)) {
			rc = -EINVAL;
			continue;
		}
		pthread_mutex_lock(&fs->lock);
		maps_drop(fs, one.moffset, one.len, 0, false);
		pthread_mutex_unlock(&fs->lock);
		if (fs->tp.dax_unmap(fs->tp.arg, one.moffset, one.len) != 0)
			rc = -EIO;
	}
	return rc != 0 ? rc : reply(rq, NULL, 0);
}

#define F_NODE		0x1	/* needs a live h.nodeid */
#define F_MUTATES	0x2	/* EROFS on a read-only share */
/* Run as the caller: new files are the caller's, ACCESS answers for
 * the caller.  Everything else runs as the server (root): the client
 * kernel has checked permissions already, with supplementary groups we
 * never see. */
#define F_CREDS		0x4

struct op {
	op_fn		fn;
	size_t		min;	/* fixed body size */
	unsigned	flags;
};

static const struct op ops[] = {
	[FUSE_LOOKUP] = { op_lookup, 0, F_NODE },
	[FUSE_FORGET] = { op_forget, sizeof(struct fuse_forget_in), 0 },
	[FUSE_GETATTR] = { op_getattr, sizeof(struct fuse_getattr_in),
	    F_NODE },
	[FUSE_SETATTR] = { op_setattr, sizeof(struct fuse_setattr_in),
	    F_NODE | F_MUTATES },
	[FUSE_READLINK] = { op_readlink, 0, F_NODE },
	[FUSE_SYMLINK] = { op_symlink, 0, F_NODE | F_MUTATES | F_CREDS },
	[FUSE_MKNOD] = { op_mknod, sizeof(struct fuse_mknod_in),
	    F_NODE | F_MUTATES | F_CREDS },
	[FUSE_MKDIR] = { op_mkdir, sizeof(struct fuse_mkdir_in),
	    F_NODE | F_MUTATES | F_CREDS },
	[FUSE_UNLINK] = { op_unlink, 0, F_NODE | F_MUTATES },
	[FUSE_RMDIR] = { op_unlink, 0, F_NODE | F_MUTATES },
	[FUSE_RENAME] = { op_rename, sizeof(struct fuse_rename_in),
	    F_NODE | F_MUTATES },
	[FUSE_RENAME2] = { op_rename2, sizeof(struct fuse_rename2_in),
	    F_NODE | F_MUTATES },
	[FUSE_LINK] = { op_link, sizeof(struct fuse_link_in),
	    F_NODE | F_MUTATES },
	[FUSE_OPEN] = { op_open, sizeof(struct fuse_open_in),
	    F_NODE },
	[FUSE_READ] = { op_read, sizeof(struct fuse_read_in), 0 },
	[FUSE_WRITE] = { op_write, sizeof(struct fuse_write_in),
	    F_MUTATES },
	[FUSE_STATFS] = { op_statfs, 0, F_NODE },
	[FUSE_RELEASE] = { op_release, sizeof(struct fuse_release_in), 0 },
	[FUSE_FSYNC] = { op_fsync, sizeof(struct fuse_fsync_in), 0 },
	[FUSE_SETXATTR] = { op_setxattr, FUSE_COMPAT_SETXATTR_IN_SIZE,
	    F_NODE | F_MUTATES },
	[FUSE_GETXATTR] = { op_getxattr, sizeof(struct fuse_getxattr_in),
	    F_NODE },
	[FUSE_LISTXATTR] = { op_listxattr, sizeof(struct fuse_getxattr_in),
	    F_NODE },
	[FUSE_REMOVEXATTR] = { op_removexattr, 0,
	    F_NODE | F_MUTATES },
	[FUSE_FLUSH] = { op_flush, sizeof(struct fuse_flush_in), 0 },
	[FUSE_OPENDIR] = { op_opendir, sizeof(struct fuse_open_in),
	    F_NODE },
	[FUSE_READDIR] = { op_readdir, sizeof(struct fuse_read_in), 0 },
	[FUSE_RELEASEDIR] = { op_release, sizeof(struct fuse_release_in), 0 },
	[FUSE_FSYNCDIR] = { op_fsync, sizeof(struct fuse_fsync_in), 0 },
	[FUSE_GETLK] = { op_lk, sizeof(struct fuse_lk_in), 0 },
	[FUSE_SETLK] = { op_lk, sizeof(struct fuse_lk_in), 0 },
	[FUSE_SETLKW] = { op_lk, sizeof(struct fuse_lk_in), 0 },
	[FUSE_ACCESS] = { op_access, sizeof(struct fuse_access_in),
	    F_NODE | F_CREDS },
	[FUSE_CREATE] = { op_create, sizeof(struct fuse_create_in),
	    F_NODE | F_MUTATES | F_CREDS },
	[FUSE_INTERRUPT] = { op_interrupt, sizeof(struct fuse_interrupt_in),
	    0 },
	[FUSE_DESTROY] = { op_destroy, 0, 0 },
	[FUSE_BATCH_FORGET] = { op_batch_forget,
	    sizeof(struct fuse_batch_forget_in), 0 },
	[FUSE_FALLOCATE] = { op_fallocate, sizeof(struct fuse_fallocate_in),
	    F_MUTATES },
	[FUSE_READDIRPLUS] = { op_readdir, sizeof(struct fuse_read_in), 0 },
	[FUSE_LSEEK] = { op_lseek, sizeof(struct fuse_lseek_in), 0 },
	[FUSE_COPY_FILE_RANGE] = { op_copy_file_range,
	    sizeof(struct fuse_copy_file_range_in), F_MUTATES },
	[FUSE_SETUPMAPPING] = { op_setupmapping,
	    sizeof(struct fuse_setupmapping_in), F_NODE },
	[FUSE_REMOVEMAPPING] = { op_removemapping,
	    sizeof(struct fuse_removemapping_in), 0 },
	[FUSE_SYNCFS] = { op_syncfs, 0, 0 },
};

ssize_t
fusefs_handle(struct fusefs *fs, const struct iovec *in, unsigned nin,
    const struct iovec *out, unsigned nout)
{
	struct req	 rq;
	const struct op	*op = NULL;
	uint8_t		*buf = NULL;
	size_t		 total, copy;
	ssize_t		 rc;
	bool		 creds = false, initialized;

	memset(&rq, 0, sizeof(rq));
	rq.fs = fs;
	rq.in = in;
	rq.nin = nin;
	rq.out = out;
	rq.nout = nout;
	rq.outcap = iov_total(out, nout);
	total = iov_total(in, nin);
	if (total < sizeof(rq.h))
		goto malformed;
	iov_copy(in, nin, 0, &rq.h, sizeof(rq.h), false);
	if (rq.h.len < sizeof(rq.h) || rq.h.len > total)
		goto malformed;
	rq.blen = rq.h.len - sizeof(rq.h);
	if (rq.h.total_extlen * 8u > rq.blen)
		goto malformed;
	rq.blen -= rq.h.total_extlen * 8u;	/* extensions: not negotiated */
	if (rq.h.opcode < ARRAY_SIZE(ops) && ops[rq.h.opcode].fn != NULL)
		op = &ops[rq.h.opcode];
	else if (rq.h.opcode == FUSE_INIT)
		op = NULL;
	if (rq.h.opcode == FUSE_WRITE) {
		if (rq.blen < sizeof(struct fuse_write_in))
			goto malformed;
		copy = sizeof(struct fuse_write_in);
	} else {
		if (rq.blen > FUSEFS_REQ_MAX)
			goto malformed;
		copy = rq.blen;
	}
	buf = xmalloc(copy + 1);
	iov_copy(in, nin, sizeof(rq.h), buf, copy, false);
	buf[copy] = 0;
	rq.body = buf;
	/* FORGET, BATCH_FORGET and INTERRUPT have no reply: virtio-fs sends
	 * them on hiprio with no writable buffer at all. */
	if (rq.outcap < sizeof(struct fuse_out_header) &&
	    rq.h.opcode != FUSE_FORGET && rq.h.opcode != FUSE_BATCH_FORGET &&
	    rq.h.opcode != FUSE_INTERRUPT)
		goto malformed;

	pthread_mutex_lock(&fs->lock);
	fs->st.requests++;
	initialized = fs->initialized;
	pthread_mutex_unlock(&fs->lock);

	if (rq.h.opcode == FUSE_INIT) {
		if (rq.blen < 16)	/* major, minor, readahead, flags */
			goto malformed;
		rc = op_init(&rq);
		goto done;
	}
	if (op == NULL) {
		rc = -ENOSYS;
		goto done;
	}
	if (rq.blen < op->min)
		goto malformed;
	if (!initialized) {
		rc = -EIO;
		rq.noreply = rq.h.opcode == FUSE_FORGET ||
		    rq.h.opcode == FUSE_BATCH_FORGET ||
		    rq.h.opcode == FUSE_INTERRUPT;
		goto done;
	}
	if (fs->opts.readonly && (op->flags & F_MUTATES)) {
		rc = -EROFS;
		goto done;
	}
	if (op->flags & F_NODE) {
		rq.node = node_get(fs, rq.h.nodeid);
		if (rq.node == NULL || rq.node->fd < 0) {
			rc = -ESTALE;
			goto done;
		}
	}
	if (op->flags & F_CREDS) {
		creds_enter(&rq.h);
		creds = true;
	}
	rc = op->fn(&rq);
done:
	if (creds)
		creds_leave();
	if (rq.node != NULL)
		node_put(fs, rq.node);
	if (rq.malformed)
		goto malformed;
	free(buf);
	if (rq.noreply)
		return 0;
	if (rc < 0) {
		struct fuse_out_header	oh;

		oh.len = sizeof(oh);
		oh.error = (int32_t)rc;
		oh.unique = rq.h.unique;
		iov_copy(out, nout, 0, &oh, sizeof(oh), true);
		pthread_mutex_lock(&fs->lock);
		fs->st.errors++;
		pthread_mutex_unlock(&fs->lock);
		return sizeof(oh);
	}
	return rc;
malformed:
	free(buf);
	pthread_mutex_lock(&fs->lock);
	fs->st.malformed++;
	pthread_mutex_unlock(&fs->lock);
	return -EINVAL;
}

/* --- host changes -------------------------------------------------- */

static int
send_notify(struct fusefs *fs, int code, const void *a, size_t alen,
    const char *name)
{
	struct fuse_out_header	oh;
	struct iovec		v[4];
	unsigned		n = 2;
	int			rc;
	static const char	nul;

	if (fs->tp.notify == NULL || fs->notify_dead)
		return -ENOSYS;
	oh.len = (uint32_t)(sizeof(oh) + alen);
	oh.error = code;
	oh.unique = 0;
	v[0].iov_base = &oh;
	v[0].iov_len = sizeof(oh);
	v[1].iov_base = (void *)a;
	v[1].iov_len = alen;
	if (name != NULL) {
		v[2].iov_base = (void *)name;
		v[2].iov_len = strlen(name);
		v[3].iov_base = (void *)&nul;
		v[3].iov_len = 1;
		oh.len += (uint32_t)(v[2].iov_len + 1);
		n = 4;
	}
	rc = fs->tp.notify(fs->tp.arg, v, n);
	if (rc == -ENOSYS)
		fs->notify_dead = true;
	else if (rc == 0) {
		pthread_mutex_lock(&fs->lock);
		fs->st.invalidations++;
		pthread_mutex_unlock(&fs->lock);
	}
	return rc;
}

static void
inval_inode(struct fusefs *fs, uint64_t id)
{
	struct fuse_notify_inval_inode_out	o;

	memset(&o, 0, sizeof(o));
	o.ino = id;
	o.off = 0;
	o.len = 0;	/* attributes and every cached page */
	send_notify(fs, FUSE_NOTIFY_INVAL_INODE, &o, sizeof(o), NULL);
}

static void
inotify_cb(int fd, short what, void *arg)
{
	struct fusefs		*fs = arg;
	union {
		struct inotify_event	ev;
		char			b[8192];
	}			 u;
	struct inotify_event	*ev;
	struct hent		*e;
	struct node		*dir, *child;
	struct stat		 st;
	uint64_t		 dirid, childid;
	ssize_t			 n, pos;

	for (;;) {
		n = read(fd, u.b, sizeof(u.b));
		if (n <= 0)
			return;
		for (pos = 0; pos + (ssize_t)sizeof(*ev) <= n;
		    pos += (ssize_t)(sizeof(*ev) + ev->len)) {
			ev = (void *)(u.b + pos);
			dirid = childid = 0;
			pthread_mutex_lock(&fs->lock);
			dir = NULL;
			for (e = ht_chain(&fs->wds, (uint64_t)ev->wd); e != NULL;
			    e = e->next)
				if (e->key == (uint64_t)ev->wd)
					dir = CONTAINER(e, struct node, by_wd);
			if (dir != NULL && (ev->mask & IN_IGNORED)) {
				ht_remove(&fs->wds, &dir->by_wd);
				dir->wd = -1;
				dir = NULL;
			}
			if (dir != NULL && dir->hashed)
				dirid = dir->nodeid;
			if (dirid != 0 && ev->len > 0 &&
			    (dir->fd >= 0 || dir->fhandle != NULL)) {
				/* Pin the dir so its fd outlives the stat. */
				if (node_pin(fs, dir)) {
					pthread_mutex_unlock(&fs->lock);
					node_reopen(fs, dir);
				} else
					pthread_mutex_unlock(&fs->lock);
				memset(&st, 0, sizeof(st));
				if (dir->fd >= 0)
					name_stat(dir->fd, ev->name, &st);
				pthread_mutex_lock(&fs->lock);
				child = node_by_stat(fs, &st);
				if (child != NULL && child->hashed)
					childid = child->nodeid;
				node_unpin(fs, dir);
			}
			pthread_mutex_unlock(&fs->lock);
			if (dirid == 0 || fs->notify_dead)
				continue;
			if (ev->len > 0 && ev->name[0] != '\0') {
				struct fuse_notify_inval_entry_out	o;

				memset(&o, 0, sizeof(o));
				o.parent = dirid;
				o.namelen = (uint32_t)strlen(ev->name);
				send_notify(fs, FUSE_NOTIFY_INVAL_ENTRY, &o,
				    sizeof(o), ev->name);
				if (childid != 0)
					inval_inode(fs, childid);
			}
			inval_inode(fs, dirid);
		}
	}
}

/* --- life cycle ---------------------------------------------------- */

void
fusefs_opts_init(struct fusefs_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->entry_timeout_ms = 1000;
	o->attr_timeout_ms = 1000;
	o->max_write = 1 << 20;
}

/*
 * Set the node fd budget, and whether evicted fds can be re-opened: a
 * handle of the root must decode (open_by_handle_at needs
 * CAP_DAC_READ_SEARCH, and the file system must export handles).
 */
static void
fd_budget(struct fusefs *fs)
{
	struct file_handle	*fh;
	struct rlimit		 rl;
	int			 fd;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		fds_total_max = MAX(rl.rlim_cur / 4 * 3, (rlim_t)64);
	fs->max_fds = fs->opts.max_node_fds ? MAX(fs->opts.max_node_fds,
	    (size_t)4) : SIZE_MAX;
	if (fs->root_dfd < 0)
		return;
	fh = xmalloc(sizeof(*fh) + MAX_HANDLE_SZ);
	fh->handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(fs->rootn->fd, "", fh, &fs->mount_id,
	    AT_EMPTY_PATH) == 0 && (fd = open_by_handle_at(fs->root_dfd, fh,
	    O_PATH | O_CLOEXEC)) >= 0) {
		fs->can_reopen = true;
		close(fd);
	} else
		log_debug("fusefs %s: no file handles (%s): every looked-up "
		    "node keeps its fd", fs->root, strerror(errno));
	free(fh);
}

struct fusefs *
fusefs_create(struct reactor *r, const struct fusefs_opts *opts,
    const struct fusefs_transport *tp, char *err, size_t errlen)
{
	struct fusefs	*fs;
	struct stat	 st;
	int		 fd, saved;

	if (opts == NULL || opts->size < sizeof(*opts) || opts->root == NULL) {
		snprintf(err, errlen, "fusefs: bad options");
		errno = EINVAL;
		return NULL;
	}
	fd = open(opts->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		saved = errno;
		snprintf(err, errlen, "cannot open share root %s: %s",
		    opts->root, strerror(saved));
		if (fd >= 0)
			close(fd);
		errno = saved;
		return NULL;
	}
	fs = xcalloc(1, sizeof(*fs));
	fs->opts = *opts;
	fs->root = xstrdup(opts->root);
	fs->opts.root = fs->root;
	if (tp != NULL)
		fs->tp = *tp;
	fs->r = r;
	pthread_mutex_init(&fs->lock, NULL);
	ht_init(&fs->nodes);
	ht_init(&fs->inos);
	ht_init(&fs->wds);
	ht_init(&fs->handles);
	fs->max_write = opts->max_write ? opts->max_write : 1 << 20;
	fs->max_write = MAX(MIN(fs->max_write, 1u << 20), FUSEFS_PAGE);
	fs->next_id = ROOT_ID + 1;
	fs->next_fh = 1;
	fs->generation = (uint64_t)time(NULL);
	fs->ifd = -1;
	fs->rootn = node_new(fs, ROOT_ID, fd, &st, NULL);
	fs->rootn->nlookup = 1;
	fs->root_dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	fd_budget(fs);
	if (opts->watch && r != NULL) {
		fs->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
		if (fs->ifd >= 0)
			fs->ifd_ev = reactor_add_fd(r, fs->ifd, REACTOR_READ,
			    inotify_cb, fs);
		if (fs->ifd_ev == NULL) {
			log_warn("fusefs: inotify on %s: host edits show "
			    "after the cache timeouts", opts->root);
			if (fs->ifd >= 0)
				close(fs->ifd);
			fs->ifd = -1;
		}
	}
	return fs;
}

/* Forget everything but the root.  Lock held. */
static void
drop_all(struct fusefs *fs)
{
	struct handle	*h;
	struct node	*n, **all;
	struct hent	*e;
	size_t		 i, k = 0;

	maps_drop(fs, 0, UINT64_MAX, 0, true);
	for (i = 0; i < fs->handles.nb; i++)
		while (fs->handles.b[i] != NULL) {
			h = CONTAINER(fs->handles.b[i], struct handle, by_fh);
			h->released = true;
			ht_remove(&fs->handles, &h->by_fh);
			fs->st.handles--;
			handle_unref_locked(fs, h);
		}
	/* Pin every node and kill its nodeid, then unpin: a node goes
	 * when its last child has gone, never while still to be visited. */
	all = xcalloc(fs->nodes.n + 1, sizeof(*all));
	for (i = 0; i < fs->nodes.nb; i++)
		for (e = fs->nodes.b[i]; e != NULL; e = e->next) {
			n = CONTAINER(e, struct node, by_id);
			if (n != fs->rootn)
				all[k++] = n;
		}
	for (i = 0; i < k; i++) {
		all[i]->refs++;
		all[i]->nlookup = 0;
		node_unhash(fs, all[i]);
	}
	for (i = 0; i < k; i++) {
		all[i]->refs--;
		node_maybe_free(fs, all[i]);
	}
	free(all);
	fs->initialized = false;
	fs->auto_inval = false;
	fs->notify_dead = false;
}

void
fusefs_reset(struct fusefs *fs)
{
	pthread_mutex_lock(&fs->lock);
	drop_all(fs);
	pthread_mutex_unlock(&fs->lock);
}

void
fusefs_free(struct fusefs *fs)
{
	if (fs == NULL)
		return;
	if (fs->ifd_ev != NULL)
		reactor_del_fd(fs->ifd_ev);
	pthread_mutex_lock(&fs->lock);
	drop_all(fs);
	if (fs->rootn->wd >= 0)
		ht_remove(&fs->wds, &fs->rootn->by_wd);
	pthread_mutex_unlock(&fs->lock);
	if (fs->ifd >= 0)
		close(fs->ifd);
	close(fs->rootn->fd);
	free(fs->rootn);
	if (fs->root_dfd >= 0)
		close(fs->root_dfd);
	free(fs->nodes.b);
	free(fs->inos.b);
	free(fs->wds.b);
	free(fs->handles.b);
	free(fs->maps);
	pthread_mutex_destroy(&fs->lock);
	free(fs->root);
	free(fs);
}

void
fusefs_get_stats(struct fusefs *fs, struct fusefs_stats *st)
{
	pthread_mutex_lock(&fs->lock);
	*st = fs->st;
	pthread_mutex_unlock(&fs->lock);
}

/* --- snapshot state -------------------------------------------------- */

/*
 * Format (little-endian, as the host): "SMXFUSE1", u32 version (1),
 * u64 next_id, u64 next_fh, u32 initialized, u32 minor, u32 nnodes,
 * then per node u64 nodeid, u64 parent (0: root itself), u64 nlookup,
 * u64 generation, u16 namelen, name; u32 nhandles, then per handle u64 fh,
 * u64 nodeid, u32 flags, u8 dir.  Nodes whose nodeid the client no longer
 * holds but which are some node's parent are saved with nodeid 0 and a
 * private id in the parent fields (ids above next_id).
 */
#define SAVE_MAGIC	"SMXFUSE1"

struct wbuf {
	uint8_t	*b;
	size_t	 n, cap;
};

static void
wput(struct wbuf *w, const void *p, size_t n)
{
	if (w->n + n > w->cap) {
		w->cap = MAX(w->cap * 2, w->n + n + 256);
		w->b = realloc(w->b, w->cap);
		if (w->b == NULL)
			fatal("fusefs save");
	}
	memcpy(w->b + w->n, p, n);
	w->n += n;
}

#define WPUT(w, v) wput((w), &(v), sizeof(v))

int
fusefs_save(struct fusefs *fs, uint8_t **buf, size_t *len)
{
	struct wbuf	 w;
	struct node	**all = NULL, *n;
	struct hent	*e;
	size_t		 i, k, nall = 0, cap = 0;
	uint32_t	 v32;
	uint64_t	 v64;
	uint16_t	 v16;
	uint8_t		 v8;

	w.b = *buf;
	w.n = *len;
	w.cap = *len;
	pthread_mutex_lock(&fs->lock);
	/* Every node reachable from a hashed node through the parent
	 * chain (handles' nodes are hashed or some hashed node's parent
	 * chain... or neither: walk them too), parents before children. */
	for (i = 0; i < fs->nodes.nb + fs->handles.nb; i++) {
		e = i < fs->nodes.nb ? fs->nodes.b[i] :
		    fs->handles.b[i - fs->nodes.nb];
		for (; e != NULL; e = e->next) {
			struct node	*top;

			top = i < fs->nodes.nb ?
			    CONTAINER(e, struct node, by_id) :
			    CONTAINER(e, struct handle, by_fh)->node;
			/* Add the oldest unmarked ancestor first, repeat. */
			while (top->mark == 0) {
				for (n = top; n->parent != NULL &&
				    n->parent->mark == 0; n = n->parent)
					;
				if (nall == cap) {
					cap = MAX(cap * 2, 64);
					all = xreallocarray(all, cap,
					    sizeof(*all));
				}
				all[nall++] = n;
				n->mark = nall;
			}
		}
	}
	wput(&w, SAVE_MAGIC, 8);
	v32 = 1;
	WPUT(&w, v32);
	WPUT(&w, fs->next_id);
	WPUT(&w, fs->next_fh);
	/* Bit 0: INIT done; bit 1: the client invalidates on change. */
	v32 = (fs->initialized ? 1 : 0) | (fs->auto_inval ? 2 : 0);
	WPUT(&w, v32);
	WPUT(&w, fs->minor);
	v32 = (uint32_t)nall;
	WPUT(&w, v32);
	for (i = 0; i < nall; i++) {
		n = all[i];
		/* Unhashed parents get ids past next_id, by position. */
		v64 = n->hashed ? n->nodeid : fs->next_id + 1 + i;
		WPUT(&w, v64);
		v64 = 0;
		if (n->parent != NULL) {
			k = n->parent->mark - 1;
			v64 = n->parent->hashed ? n->parent->nodeid :
			    fs->next_id + 1 + k;
		}
		WPUT(&w, v64);
		v64 = n->hashed ? n->nlookup : 0;
		WPUT(&w, v64);
		WPUT(&w, n->generation);
		v16 = n->name != NULL ? (uint16_t)strlen(n->name) : 0;
		WPUT(&w, v16);
		if (v16)
			wput(&w, n->name, v16);
	}
	v32 = (uint32_t)fs->handles.n;
	WPUT(&w, v32);
	for (i = 0; i < fs->handles.nb; i++)
		for (e = fs->handles.b[i]; e != NULL; e = e->next) {
			struct handle *h = CONTAINER(e, struct handle, by_fh);

			WPUT(&w, h->fh);
			k = h->node->mark - 1;
			v64 = h->node->hashed ? h->node->nodeid :
			    fs->next_id + 1 + k;
			WPUT(&w, v64);
			WPUT(&w, h->flags);
			v8 = h->dir;
			WPUT(&w, v8);
		}
	for (i = 0; i < nall; i++)
		all[i]->mark = 0;
	pthread_mutex_unlock(&fs->lock);
	free(all);
	*buf = w.b;
	*len = w.n;
	return 0;
}

struct rbuf {
	const uint8_t	*p;
	size_t		 n;
	bool		 bad;
};

static void
rget(struct rbuf *r, void *dst, size_t n)
{
	if (r->bad || n > r->n) {
		r->bad = true;
		memset(dst, 0, n);
		return;
	}
	memcpy(dst, r->p, n);
	r->p += n;
	r->n -= n;
}

#define RGET(r, v) rget((r), &(v), sizeof(v))

struct lnode {
	uint64_t	 id, parent, nlookup, gen;
	char		 name[FUSEFS_NAME_MAX + 1];
	struct node	*n;
};

struct lhandle {
	uint64_t	fh;
	uint32_t	flags;
	uint32_t	node;	/* index into the lnode array */
	uint8_t		dir;
};

int
fusefs_load(struct fusefs *fs, const uint8_t *buf, size_t len)
{
	struct rbuf	 r = { buf, len, false };
	struct lnode	*ln = NULL;
	struct lhandle	*lh = NULL;
	char		 magic[8], p[64];
	uint32_t	 ver, init, minor, nn, nh, i, k, flags;
	uint64_t	 next_id, next_fh, fh, id;
	uint16_t	 nl;
	uint8_t		 dir;
	struct stat	 st;
	bool		 evicted;
	int		 fd;

	rget(&r, magic, sizeof(magic));
	RGET(&r, ver);
	RGET(&r, next_id);
	RGET(&r, next_fh);
	RGET(&r, init);
	RGET(&r, minor);
	RGET(&r, nn);
	if (r.bad || memcmp(magic, SAVE_MAGIC, 8) != 0 || ver != 1 ||
	    nn > r.n / 34)
		return -EINVAL;
	ln = xcalloc(nn + 1, sizeof(*ln));
	for (i = 0; i < nn; i++) {
		RGET(&r, ln[i].id);
		RGET(&r, ln[i].parent);
		RGET(&r, ln[i].nlookup);
		RGET(&r, ln[i].gen);
		RGET(&r, nl);
		if (nl > FUSEFS_NAME_MAX) {
			r.bad = true;
			break;
		}
		rget(&r, ln[i].name, nl);
		ln[i].name[nl] = '\0';
		if (ln[i].id == 0 || (ln[i].id != ROOT_ID && (nl == 0 ||
		    strchr(ln[i].name, '/') != NULL ||
		    strcmp(ln[i].name, ".") == 0 ||
		    strcmp(ln[i].name, "..") == 0)))
			r.bad = true;
		/* Parents come first. */
		if (ln[i].id != ROOT_ID) {
			for (k = 0; k < i && ln[k].id != ln[i].parent; k++)
				;
			if (k == i)
				r.bad = true;
		}
		for (k = 0; k < i; k++)
			if (ln[k].id == ln[i].id)
				r.bad = true;
	}
	/* The handles too are checked before anything is replaced. */
	RGET(&r, nh);
	if (r.bad || nh > r.n / 21) {
		free(ln);
		return -EINVAL;
	}
	lh = xcalloc(nh + 1, sizeof(*lh));
	for (i = 0; i < nh && !r.bad; i++) {
		RGET(&r, lh[i].fh);
		RGET(&r, id);
		RGET(&r, lh[i].flags);
		RGET(&r, lh[i].dir);
		for (k = 0; k < nn && ln[k].id != id; k++)
			;
		if (k == nn || lh[i].fh == 0 || lh[i].fh == UINT64_MAX)
			r.bad = true;
		lh[i].node = k;
	}
	if (r.bad || r.n != 0) {
		free(lh);
		free(ln);
		return -EINVAL;
	}
	pthread_mutex_lock(&fs->lock);
	drop_all(fs);
	fs->next_id = MAX(next_id, fs->next_id);
	pthread_mutex_unlock(&fs->lock);
	/* Paths are re-resolved beneath the root, parents first; a parent
	 * is pinned while its children open, so within the fd budget a
	 * big table loads as a big walk does. */
	for (i = 0; i < nn; i++) {
		struct node		*par = NULL;
		struct file_handle	*fhd = NULL;

		if (ln[i].id == ROOT_ID) {
			ln[i].n = fs->rootn;
			continue;
		}
		for (k = 0; k < i; k++)
			if (ln[k].id == ln[i].parent)
				par = ln[k].n;
		fd = -1;
		if (par != NULL) {
			pthread_mutex_lock(&fs->lock);
			evicted = node_pin(fs, par);
			pthread_mutex_unlock(&fs->lock);
			if (evicted)
				node_reopen(fs, par);
			while (par->fd >= 0 && (fd = open_beneath(par->fd,
			    ln[i].name, O_PATH, 0)) < 0 && fds_shed(fs))
				;
		}
		memset(&st, 0, sizeof(st));
		if (fd >= 0 && fstat(fd, &st) != 0) {
			close(fd);
			fd = -1;
		}
		if (fd < 0) {
			/* Gone: the nodeid stays, answering ESTALE. */
			st.st_dev = 0;
			st.st_ino = 0;
		} else
			fhd = fhandle_of(fs, fd);
		pthread_mutex_lock(&fs->lock);
		ln[i].n = node_new(fs, ln[i].id, fd, &st, fhd);
		if (fd < 0)
			node_unino(fs, ln[i].n);
		ln[i].n->generation = ln[i].gen;
		ln[i].n->nlookup = ln[i].nlookup;
		ln[i].n->refs++;	/* held until the end of the load */
		if (par != NULL) {
			node_rename(fs, ln[i].n, par, ln[i].name);
			node_unpin(fs, par);
		}
		if (ln[i].id >= fs->next_id)
			fs->next_id = ln[i].id + 1;
		pthread_mutex_unlock(&fs->lock);
	}

	for (i = 0; i < nh; i++) {
		struct node	*n = ln[lh[i].node].n;
		struct handle	*h;

		fh = lh[i].fh;
		flags = lh[i].flags;
		dir = lh[i].dir;
		fd = -1;
		pthread_mutex_lock(&fs->lock);
		evicted = node_pin(fs, n);
		pthread_mutex_unlock(&fs->lock);
		if (evicted)
			node_reopen(fs, n);
		if (n->fd >= 0 && !(fs->opts.readonly && writes(flags))) {
			fd_path(p, sizeof(p), n->fd);
			fd = dir ? openat(n->fd, ".", O_RDONLY | O_DIRECTORY |
			    O_CLOEXEC) : open(p, open_flags(flags & ~O_TRUNC));
		}
		h = handle_new(fs, n, fd, flags, dir != 0);
		pthread_mutex_lock(&fs->lock);
		ht_remove(&fs->handles, &h->by_fh);
		h->fh = fh;
		h->by_fh.key = fh;
		ht_insert(&fs->handles, &h->by_fh);
		if (fh >= fs->next_fh)
			fs->next_fh = fh + 1;
		node_unpin(fs, n);	/* the handle has its own pin */
		pthread_mutex_unlock(&fs->lock);
	}
	pthread_mutex_lock(&fs->lock);
	fs->next_fh = MAX(fs->next_fh, next_fh);
	fs->initialized = (init & 1) != 0;
	fs->auto_inval = (init & 2) != 0;
	fs->minor = minor;
	for (i = nn; i-- > 0;) {
		if (ln[i].n == fs->rootn || ln[i].n == NULL)
			continue;
		ln[i].n->refs--;
		if (ln[i].n->nlookup == 0 && ln[i].n->hashed) {
			/* A saved parent-only node: keep it off the id table
			 * while children hold it. */
			forget_one(fs, ln[i].id, 0);
		} else
			node_maybe_free(fs, ln[i].n);
	}
	pthread_mutex_unlock(&fs->lock);
	free(lh);
	free(ln);
	return 0;
}
