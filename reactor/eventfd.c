/*
 * eventfds for ioeventfd (watched, drained, calls back) and irqfd
 * (signalled only).
 */
#include <sys/eventfd.h>

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "reactor/reactor.h"

struct reactor_eventfd {
	int			 fd;
	struct reactor_fd	*watch;
	reactor_eventfd_fn	 cb;
	void			*arg;
};

/* Drain first, then call back: a signal that arrives while the callback
 * runs makes the fd readable again, so none is lost. */
static void
eventfd_cb(int fd, short what, void *arg)
{
	struct reactor_eventfd	*e = arg;
	uint64_t		 count;
	ssize_t			 n;

	n = read(fd, &count, sizeof count);
	if (n != sizeof count) {
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		log_warn("eventfd %d read", fd);
		return;
	}
	e->cb(count, e->arg);
}

struct reactor_eventfd *
reactor_eventfd_create(struct reactor *r, reactor_eventfd_fn cb, void *arg)
{
	struct reactor_eventfd	*e;
	int			 saved;

	e = xcalloc(1, sizeof *e);
	e->cb = cb;
	e->arg = arg;
	if ((e->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
		goto err_free;
	if (cb != NULL) {
		e->watch = reactor_add_fd(r, e->fd, REACTOR_READ, eventfd_cb, e);
		if (e->watch == NULL)
			goto err_close;
	}
	return e;

err_close:
	saved = errno;
	close(e->fd);
	errno = saved;
err_free:
	saved = errno;
	free(e);
	errno = saved;
	return NULL;
}

int
reactor_eventfd_fd(const struct reactor_eventfd *e)
{
	return e->fd;
}

int
reactor_eventfd_signal(struct reactor_eventfd *e)
{
	uint64_t	one = 1;

	/* Only fails when the counter would overflow (EAGAIN): the
	 * interrupt is pending anyway. */
	if (write(e->fd, &one, sizeof one) == sizeof one || errno == EAGAIN)
		return 0;
	return -errno;
}

void
reactor_eventfd_free(struct reactor_eventfd *e)
{
	if (e == NULL)
		return;
	if (e->watch != NULL)
		reactor_del_fd(e->watch);
	close(e->fd);
	free(e);
}
