/*
 * The reactor: one libevent event_base and the registration wrappers
 * around it (fds, timers, signals), plus reactor_post(), the way any
 * thread hands a function to the reactor thread.  Rings and waiters are
 * in ring.c.
 *
 * libevent is used without its thread support (no
 * evthread_use_pthreads()): only the reactor thread ever calls into it.
 * Foreign threads touch nothing but the post queue (a mutex-protected
 * FIFO) and an eventfd, which is how the reactor learns there is work.
 */
#include <sys/eventfd.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "reactor/reactor_impl.h"

struct post_item {
	struct post_item	*next;
	reactor_post_fn		 fn;
	void			*arg;
};

struct reactor_fd {
	struct reactor	*r;
	struct event	*ev;
	int		 fd;
	reactor_fd_fn	 cb;
	void		*arg;
};

struct reactor_timer {
	struct reactor	 *r;
	struct event	 *ev;
	reactor_timer_fn  cb;
	void		 *arg;
};

struct reactor_signal {
	struct reactor	  *r;
	struct event	  *ev;
	reactor_signal_fn  cb;
	void		  *arg;
};

/* Route libevent's own diagnostics through our logger. */
static void
evlog_cb(int severity, const char *msg)
{
	switch (severity) {
	case EVENT_LOG_DEBUG:
		log_debug("libevent: %s", msg);
		break;
	case EVENT_LOG_MSG:
		log_info("libevent: %s", msg);
		break;
	default:
		log_warnx("libevent: %s", msg);
		break;
	}
}

/* libevent calls this on a broken internal invariant; it must not return. */
static void
evfatal_cb(int err)
{
	fatalx("libevent fatal error %d", err);
}

/* Wake the reactor's poll through an eventfd; it cannot fail short of
 * 2^64 - 1 unread wakeups, which the readers prevent by draining. */
static void
efd_kick(int efd)
{
	uint64_t	one = 1;

	while (write(efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

/* Put a batch of posts back at the front of the queue, ahead of anything
 * posted meanwhile, so per-thread order survives a reactor_stop(). */
static void
post_requeue(struct reactor *r, struct post_item *first, struct post_item *last)
{
	pthread_mutex_lock(&r->post_mtx);
	last->next = r->post_head;
	if (r->post_head == NULL)
		r->post_tail = last;
	r->post_head = first;
	pthread_mutex_unlock(&r->post_mtx);
	efd_kick(r->post_efd);
}

/*
 * The post eventfd is readable: run what is queued.  The eventfd is
 * reset before the queue is taken, so a post that lands after the take
 * finds an empty queue and kicks again: no wakeup is lost.  Posts made
 * while this batch runs wait for the next loop iteration, which bounds
 * the work done here.
 */
static void
post_cb(evutil_socket_t fd, short what, void *arg)
{
	struct reactor		*r = arg;
	struct post_item	*it, *next, *last;
	uint64_t		 cnt;

	(void)what;
	if (read(fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		log_warn("%s: read post eventfd", __func__);
	pthread_mutex_lock(&r->post_mtx);
	it = r->post_head;
	last = r->post_tail;
	r->post_head = r->post_tail = NULL;
	pthread_mutex_unlock(&r->post_mtx);
	for (; it != NULL; it = next) {
		if (r->stop) {
			post_requeue(r, it, last);
			return;
		}
		next = it->next;
		it->fn(it->arg);
		free(it);
	}
}

/* Create the base and the post eventfd. */
struct reactor *
reactor_create(void)
{
	struct reactor		*r;
	struct event_config	*cfg;
	int			 saved;

	event_set_log_callback(evlog_cb);
	event_set_fatal_callback(evfatal_cb);

	r = xcalloc(1, sizeof(*r));
	pthread_mutex_init(&r->post_mtx, NULL);
	/* PRECISE_TIMER: libevent otherwise reads CLOCK_MONOTONIC_COARSE,
	 * whose ticks of several ms make short timers fire early or late. */
	if ((cfg = event_config_new()) == NULL) {
		errno = ENOMEM;
		goto err_free;
	}
	event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	r->base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (r->base == NULL) {
		errno = ENOMEM;
		goto err_free;
	}
	r->post_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (r->post_efd < 0)
		goto err_free_base;
	r->post_ev = event_new(r->base, r->post_efd, EV_READ | EV_PERSIST,
	    post_cb, r);
	if (r->post_ev == NULL) {
		errno = ENOMEM;
		goto err_close_efd;
	}
	if (event_add(r->post_ev, NULL) < 0) {
		errno = EIO;
		goto err_free_ev;
	}
	return r;

err_free_ev:
	event_free(r->post_ev);
err_close_efd:
	saved = errno;
	close(r->post_efd);
	errno = saved;
err_free_base:
	event_base_free(r->base);
err_free:
	pthread_mutex_destroy(&r->post_mtx);
	free(r);
	return NULL;
}

/* Free the base; leftovers are reported, not freed (their owners hold
 * the pointers), so a forgotten registration is a leak, not a crash. */
void
reactor_free(struct reactor *r)
{
	struct post_item	*it, *next;
	unsigned		 nposts = 0;

	if (r == NULL)
		return;
	if (r->nfds || r->ntimers || r->nsignals || r->nrings)
		log_warnx("reactor freed with %u fds, %u timers, %u signals, "
		    "%u rings still registered", r->nfds, r->ntimers,
		    r->nsignals, r->nrings);
	for (it = r->post_head; it != NULL; it = next) {
		next = it->next;
		free(it);
		nposts++;
	}
	if (nposts)
		log_warnx("reactor freed with %u posted functions not run",
		    nposts);
	event_free(r->post_ev);
	close(r->post_efd);
	event_base_free(r->base);
	pthread_mutex_destroy(&r->post_mtx);
	free(r);
}

struct event_base *
reactor_base(struct reactor *r)
{
	return r->base;
}

/* True while something can still make a callback run: a registered
 * event besides our own post event, or a queued post. */
static bool
reactor_has_work(struct reactor *r)
{
	bool	queued;

	if (event_base_get_num_events(r->base, EVENT_BASE_COUNT_ADDED |
	    EVENT_BASE_COUNT_ACTIVE | EVENT_BASE_COUNT_VIRTUAL) > 1)
		return true;
	pthread_mutex_lock(&r->post_mtx);
	queued = r->post_head != NULL;
	pthread_mutex_unlock(&r->post_mtx);
	return queued;
}

/*
 * One loop iteration at a time, so "nothing registered" can ignore the
 * post event, which is always there.
 */
int
reactor_run(struct reactor *r)
{
	int	rc = 0;

	r->stop = 0;
	while (!r->stop && reactor_has_work(r)) {
		if (event_base_loop(r->base, EVLOOP_ONCE) < 0) {
			rc = errno ? -errno : -EIO;
			log_warnx("event loop failed");
			break;
		}
	}
	r->stop = 0;
	return rc;
}

void
reactor_stop(struct reactor *r)
{
	r->stop = 1;
	event_base_loopbreak(r->base);
}

/* Trampoline: keep libevent's flag bits (EV_PERSIST...) from callers. */
static void
fd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct reactor_fd	*rf = arg;

	rf->cb(fd, what & (REACTOR_READ | REACTOR_WRITE), rf->arg);
}

struct reactor_fd *
reactor_add_fd(struct reactor *r, int fd, short what, reactor_fd_fn cb,
    void *arg)
{
	struct reactor_fd	*rf;

	if (fd < 0 || cb == NULL || (what & ~(REACTOR_READ | REACTOR_WRITE))) {
		errno = EINVAL;
		return NULL;
	}
	rf = xcalloc(1, sizeof(*rf));
	rf->r = r;
	rf->fd = fd;
	rf->cb = cb;
	rf->arg = arg;
	rf->ev = event_new(r->base, fd, what | EV_PERSIST, fd_cb, rf);
	if (rf->ev == NULL) {
		errno = ENOMEM;
		goto err_free;
	}
	if (what && event_add(rf->ev, NULL) < 0) {
		errno = EIO;
		goto err_free_ev;
	}
	r->nfds++;
	return rf;

err_free_ev:
	event_free(rf->ev);
err_free:
	free(rf);
	return NULL;
}

/* event_assign() needs the event not pending, hence the del first; it is
 * also fine from the fd's own callback (libevent no longer touches the
 * event after calling us). */
int
reactor_mod_fd(struct reactor_fd *rf, short what)
{
	if (what & ~(REACTOR_READ | REACTOR_WRITE))
		return -EINVAL;
	event_del(rf->ev);
	if (event_assign(rf->ev, rf->r->base, rf->fd, what | EV_PERSIST, fd_cb,
	    rf) < 0)
		return -EINVAL;
	if (what && event_add(rf->ev, NULL) < 0)
		return -EIO;
	return 0;
}

/* Without thread support in libevent, event_free() of the running event
 * from its own callback is safe: del removes it from the active queue and
 * the loop does not read the event after its callback returns. */
void
reactor_del_fd(struct reactor_fd *rf)
{
	if (rf == NULL)
		return;
	event_free(rf->ev);
	rf->r->nfds--;
	free(rf);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct reactor_timer	*t = arg;

	(void)fd;
	(void)what;
	t->cb(t->arg);
}

struct reactor_timer *
reactor_add_timer(struct reactor *r, uint64_t usec, bool periodic,
    reactor_timer_fn cb, void *arg)
{
	struct reactor_timer	*t;
	struct timeval		 tv;

	if (cb == NULL) {
		errno = EINVAL;
		return NULL;
	}
	t = xcalloc(1, sizeof(*t));
	t->r = r;
	t->cb = cb;
	t->arg = arg;
	t->ev = event_new(r->base, -1, periodic ? EV_PERSIST : 0, timer_cb, t);
	if (t->ev == NULL) {
		errno = ENOMEM;
		goto err_free;
	}
	tv.tv_sec = usec / 1000000;
	tv.tv_usec = usec % 1000000;
	if (event_add(t->ev, &tv) < 0) {
		errno = EIO;
		goto err_free_ev;
	}
	r->ntimers++;
	return t;

err_free_ev:
	event_free(t->ev);
err_free:
	free(t);
	return NULL;
}

/* Safe from the timer's own callback, as for fds. */
void
reactor_del_timer(struct reactor_timer *t)
{
	if (t == NULL)
		return;
	event_free(t->ev);
	t->r->ntimers--;
	free(t);
}

static void
signal_cb(evutil_socket_t signo, short what, void *arg)
{
	struct reactor_signal	*s = arg;

	(void)what;
	s->cb(signo, s->arg);
}

struct reactor_signal *
reactor_add_signal(struct reactor *r, int signo, reactor_signal_fn cb,
    void *arg)
{
	struct reactor_signal	*s;

	if (cb == NULL || signo <= 0) {
		errno = EINVAL;
		return NULL;
	}
	s = xcalloc(1, sizeof(*s));
	s->r = r;
	s->cb = cb;
	s->arg = arg;
	s->ev = evsignal_new(r->base, signo, signal_cb, s);
	if (s->ev == NULL) {
		errno = ENOMEM;
		goto err_free;
	}
	if (event_add(s->ev, NULL) < 0) {
		errno = EINVAL;
		goto err_free_ev;
	}
	r->nsignals++;
	return s;

err_free_ev:
	event_free(s->ev);
err_free:
	free(s);
	return NULL;
}

void
reactor_del_signal(struct reactor_signal *s)
{
	if (s == NULL)
		return;
	event_free(s->ev);
	s->r->nsignals--;
	free(s);
}

/*
 * Append under the mutex; kick the eventfd only when the queue was empty
 * (a non-empty queue has a kick outstanding that post_cb has not yet
 * consumed with its take).  The mutex gives the ordering: what the
 * poster wrote before posting is visible to fn.
 */
int
reactor_post(struct reactor *r, reactor_post_fn fn, void *arg)
{
	struct post_item	*it;
	bool			 was_empty;

	if (fn == NULL)
		return -EINVAL;
	it = xmalloc(sizeof(*it));
	it->next = NULL;
	it->fn = fn;
	it->arg = arg;
	pthread_mutex_lock(&r->post_mtx);
	was_empty = r->post_head == NULL;
	if (was_empty)
		r->post_head = it;
	else
		r->post_tail->next = it;
	r->post_tail = it;
	pthread_mutex_unlock(&r->post_mtx);
	if (was_empty)
		efd_kick(r->post_efd);
	return 0;
}
