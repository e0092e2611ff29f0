/*
 * fusefs over /dev/fuse: mount the server on the host and serve the
 * kernel's requests from worker threads.
 *
 * Workers poll the /dev/fuse fd (non-blocking, so a request wakes every
 * poller but only one read gets it; the rest see EAGAIN) together with
 * an eventfd that fusefs_unmount() signals.  The kernel ends a
 * connection with ENODEV on read (and POLLERR) when the file system is
 * unmounted or the connection aborted.
 */
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/base.h"
#include "fusefs/fusefs.h"

/* Replies of GETXATTR/LISTXATTR carry up to 64 KiB whatever max_write is. */
#define DEVFUSE_MIN_PAYLOAD	(128 * 1024)
#define DEVFUSE_HDR_ROOM	4096

struct fusefs_mount {
	struct fusefs		*fs;
	char			*mountpoint;
	int			 fd;		/* /dev/fuse */
	int			 stopfd;	/* eventfd: workers exit */
	size_t			 bufsize;
	unsigned		 nthreads;
	pthread_t		*threads;
	atomic_uint		 running;	/* workers not yet exited */
	bool			 mounted;

	/* The kernel ended the connection: gone_fn runs once, when the
	 * last worker leaves. */
	pthread_mutex_t		 lock;
	bool			 gone;
	bool			 gone_called;
	void			(*gone_fn)(void *);
	void			*gone_arg;
};

/* The transport's notify: a complete notification message, one write. */
static int
devfuse_notify(void *arg, const struct iovec *iov, unsigned n)
{
	struct fusefs_mount	*m = arg;

	if (writev(m->fd, iov, (int)n) < 0)
		return -errno;
	return 0;
}

/* Run gone_fn once both the connection is gone and a callback is set.
 * Called with m->lock held, on the last worker or the setter's thread. */
static void
maybe_call_gone(struct fusefs_mount *m)
{
	if (!m->gone || m->gone_called || m->gone_fn == NULL)
		return;
	m->gone_called = true;
	m->gone_fn(m->gone_arg);
}

/* Send an error reply for a request the server called malformed. */
static void
reply_error(struct fusefs_mount *m, const uint8_t *req, size_t len, int err)
{
	struct fuse_out_header	 oh;
	const struct fuse_in_header *ih = (const void *)req;

	if (len < sizeof(*ih))
		return;
	oh.len = sizeof(oh);
	oh.error = -err;
	oh.unique = ih->unique;
	if (write(m->fd, &oh, sizeof(oh)) < 0 && errno != ENOENT)
		log_warn("fuse: reply to a malformed request");
}

/* One worker: read a request, handle it, write the reply. */
static void *
worker(void *arg)
{
	struct fusefs_mount	*m = arg;
	struct pollfd		 pfd[2];
	struct iovec		 in, out;
	uint8_t			*req, *rep;
	ssize_t			 n, len;
	bool			 conn_gone = false;

	req = xmalloc(m->bufsize);
	rep = xmalloc(m->bufsize);
	pfd[0].fd = m->fd;
	pfd[0].events = POLLIN;
	pfd[1].fd = m->stopfd;
	pfd[1].events = POLLIN;
	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_warn("fuse: poll");
			break;
		}
		if (pfd[1].revents != 0)
			break;
		/* POLLERR without data means the connection is gone; the
		 * read below says so with ENODEV. */
		if ((n = read(m->fd, req, m->bufsize)) < 0) {
			if (errno == EAGAIN || errno == EINTR ||
			    errno == ENOENT)	/* interrupted before read */
				continue;
			if (errno == ENODEV) {
				conn_gone = true;
				break;
			}
			log_warn("fuse: read /dev/fuse");
			conn_gone = true;
			break;
		}
		in.iov_base = req;
		in.iov_len = (size_t)n;
		out.iov_base = rep;
		out.iov_len = m->bufsize;
		len = fusefs_handle(m->fs, &in, 1, &out, 1);
		if (len < 0) {
			reply_error(m, req, (size_t)n, EIO);
			continue;
		}
		if (len == 0)
			continue;
		/* ENOENT: the request was interrupted and already answered
		 * by the kernel; nothing to do. */
		if (write(m->fd, rep, (size_t)len) < 0 && errno != ENOENT) {
			if (errno == ENODEV) {
				conn_gone = true;
				break;
			}
			log_warn("fuse: write reply");
		}
	}
	free(req);
	free(rep);
	pthread_mutex_lock(&m->lock);
	if (conn_gone)
		m->gone = true;
	if (atomic_fetch_sub(&m->running, 1) == 1)
		maybe_call_gone(m);
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

struct fusefs_mount *
fusefs_mount(struct reactor *r, const struct fusefs_opts *opts,
    const char *mountpoint, unsigned nthreads, char *err, size_t errlen)
{
	struct fusefs_mount	*m;
	struct fusefs_transport	 t;
	struct stat		 st;
	char			 data[256];
	uint32_t		 maxw;
	unsigned		 i;
	int			 e;

	if (nthreads == 0)
		nthreads = 1;
	if (stat(mountpoint, &st) < 0) {
		e = errno;
		snprintf(err, errlen, "mount point %s: %s", mountpoint,
		    strerror(e));
		errno = e;
		return NULL;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "mount point %s is not a directory",
		    mountpoint);
		errno = ENOTDIR;
		return NULL;
	}
	m = xcalloc(1, sizeof(*m));
	m->mountpoint = xstrdup(mountpoint);
	m->stopfd = -1;
	pthread_mutex_init(&m->lock, NULL);
	maxw = opts->max_write != 0 ? opts->max_write : 1024 * 1024;
	/* The kernel refuses reads smaller than FUSE_MIN_READ_BUFFER or
	 * than a WRITE request of max_write bytes with its headers. */
	m->bufsize = (maxw > DEVFUSE_MIN_PAYLOAD ? maxw : DEVFUSE_MIN_PAYLOAD) +
	    DEVFUSE_HDR_ROOM;
	if (m->bufsize < FUSE_MIN_READ_BUFFER)
		m->bufsize = FUSE_MIN_READ_BUFFER;

	if ((m->fd = open("/dev/fuse", O_RDWR | O_CLOEXEC | O_NONBLOCK)) < 0) {
		e = errno;
		snprintf(err, errlen, "/dev/fuse: %s%s", strerror(e),
		    e == ENOENT ? " (load the fuse module: modprobe fuse)" :
		    "");
		goto err_free;
	}
	if ((m->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		e = errno;
		snprintf(err, errlen, "eventfd: %s", strerror(e));
		goto err_close_fd;
	}
	memset(&t, 0, sizeof(t));
	t.notify = devfuse_notify;
	t.arg = m;
	if ((m->fs = fusefs_create(r, opts, &t, err, errlen)) == NULL) {
		e = errno;
		goto err_close_stop;
	}
	/* default_permissions: the kernel checks modes as on any file
	 * system, as the virtio-fs client does.  Without it the kernel asks
	 * the server only about open and access, never about searching a
	 * directory whose entries it has cached. */
	snprintf(data, sizeof(data), "fd=%d,rootmode=%o,user_id=%u,"
	    "group_id=%u,allow_other,default_permissions,max_read=%u", m->fd, S_IFDIR,
	    (unsigned)getuid(), (unsigned)getgid(), maxw);
	if (mount("smx", mountpoint, "fuse.smx",
	    MS_NOSUID | MS_NODEV | (opts->readonly ? MS_RDONLY : 0),
	    data) < 0) {
		e = errno;
		snprintf(err, errlen, "mount %s: %s%s", mountpoint, strerror(e),
		    e == EPERM ? " (mounting FUSE needs root)" : "");
		goto err_free_fs;
	}
	m->mounted = true;
	m->threads = xcalloc(nthreads, sizeof(*m->threads));
	for (i = 0; i < nthreads; i++) {
		atomic_fetch_add(&m->running, 1);
		if ((e = pthread_create(&m->threads[i], NULL, worker, m)) != 0) {
			atomic_fetch_sub(&m->running, 1);
			snprintf(err, errlen, "worker thread: %s", strerror(e));
			m->nthreads = i;
			fusefs_unmount(m);
			errno = e;
			return NULL;
		}
		m->nthreads = i + 1;
	}
	return m;

err_free_fs:
	fusefs_free(m->fs);
err_close_stop:
	close(m->stopfd);
err_close_fd:
	close(m->fd);
err_free:
	pthread_mutex_destroy(&m->lock);
	free(m->mountpoint);
	free(m);
	errno = e;
	return NULL;
}

void
fusefs_mount_set_gone_cb(struct fusefs_mount *m, void (*fn)(void *),
    void *arg)
{
	pthread_mutex_lock(&m->lock);
	m->gone_fn = fn;
	m->gone_arg = arg;
	if (atomic_load(&m->running) == 0)
		maybe_call_gone(m);
	pthread_mutex_unlock(&m->lock);
}

void
fusefs_unmount(struct fusefs_mount *m)
{
	uint64_t	one = 1;
	unsigned	i;
	bool		gone;

	if (m == NULL)
		return;
	/* A deliberate unmount is not news to the owner. */
	pthread_mutex_lock(&m->lock);
	m->gone_fn = NULL;
	gone = m->gone;
	pthread_mutex_unlock(&m->lock);
	/* Lazy: the mount leaves the namespace now even if busy.  EINVAL:
	 * someone unmounted it already.  Once the kernel has ended the
	 * connection the path may hold somebody else's newer mount: leave
	 * it alone. */
	if (m->mounted && !gone && umount2(m->mountpoint, MNT_DETACH) < 0 &&
	    errno != EINVAL && errno != ENOENT)
		log_warn("fuse: unmount %s", m->mountpoint);
	if (write(m->stopfd, &one, sizeof(one)) < 0)
		log_warn("fuse: stop workers");
	for (i = 0; i < m->nthreads; i++)
		pthread_join(m->threads[i], NULL);
	/* Closing the last /dev/fuse fd aborts the connection: processes
	 * still inside a detached mount get ENOTCONN, not a hang. */
	close(m->fd);
	close(m->stopfd);
	fusefs_free(m->fs);
	pthread_mutex_destroy(&m->lock);
	free(m->threads);
	free(m->mountpoint);
	free(m);
}

struct fusefs *
fusefs_mount_fs(struct fusefs_mount *m)
{
	return m->fs;
}
