/*
 * reactor: the one libevent event_base of a process.  Every fd of every
 * VM (ioeventfds, sockets, inotify, timers, signals) is registered here
 * and every callback runs on the reactor thread, the thread that called
 * reactor_run().  Other threads reach the reactor in two ways only:
 * reactor_post() (any thread, a function to run on the reactor thread)
 * and a reactor_ring (one producer thread, e.g. a vCPU, fixed-size
 * messages, lock-free).  Nothing but the reactor thread touches libevent.
 */
#ifndef SMX_REACTOR_H
#define SMX_REACTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/base.h"

struct event_base;
struct reactor;
struct reactor_fd;
struct reactor_timer;
struct reactor_signal;
struct reactor_ring;

/* Create the reactor.  One per process is the intended use. */
struct reactor	*reactor_create(void);
/* Free the reactor; every fd, timer, signal and ring must be gone
 * (leftovers are reported with log_warnx() and leaked, not freed).
 * Posts not yet run are dropped.  Not from inside a callback. */
void		 reactor_free(struct reactor *);
/* The libevent base, for code that drives libevent itself (libcurl
 * multi, bufferevents).  Reactor thread only. */
struct event_base *reactor_base(struct reactor *);

/*
 * Run callbacks until reactor_stop() is called or nothing is registered
 * (no fd, pending timer, signal, ring or event added on reactor_base(),
 * and no queued post).  A reactor fed only by reactor_post() from other
 * threads therefore needs something registered (e.g. a periodic timer)
 * to keep running.  Returns 0, or -errno if the event loop failed.
 */
int	reactor_run(struct reactor *) WUR;
/* Make reactor_run() return after the current callback.  Reactor thread
 * only (from another thread, reactor_post() a function that calls it). */
void	reactor_stop(struct reactor *);

#define REACTOR_READ	0x02	/* same values as EV_READ, EV_WRITE */
#define REACTOR_WRITE	0x04

typedef void (*reactor_fd_fn)(int fd, short what, void *arg);
typedef void (*reactor_timer_fn)(void *arg);
typedef void (*reactor_signal_fn)(int signo, void *arg);
typedef void (*reactor_post_fn)(void *arg);
typedef void (*reactor_ring_fn)(void *msg, void *arg);

/*
 * Watch fd for `what` (REACTOR_READ | REACTOR_WRITE), persistently: cb
 * runs each time the fd is ready until reactor_del_fd().  NULL + errno
 * on failure.
 */
struct reactor_fd *reactor_add_fd(struct reactor *, int fd, short what,
	    reactor_fd_fn, void *arg);
/* Change the events watched. */
int	reactor_mod_fd(struct reactor_fd *, short what);
/* Stop watching and free; the fd itself is not closed.  Safe from inside
 * the fd's own callback. */
void	reactor_del_fd(struct reactor_fd *);

/*
 * A timer firing after usec microseconds, once or every usec.  A one-shot
 * timer stays allocated after it fires: free it with reactor_del_timer(),
 * which is safe from inside its own callback.
 */
struct reactor_timer *reactor_add_timer(struct reactor *, uint64_t usec,
	    bool periodic, reactor_timer_fn, void *arg);
void	reactor_del_timer(struct reactor_timer *);

/* Deliver signal signo to cb on the reactor thread (libevent signal
 * handling: the signal is caught process-wide). */
struct reactor_signal *reactor_add_signal(struct reactor *, int signo,
	    reactor_signal_fn, void *arg);
void	reactor_del_signal(struct reactor_signal *);

/*
 * Run fn(arg) on the reactor thread soon.  Any thread, including the
 * reactor thread itself (then it runs on a later loop iteration).
 * Functions posted from one thread run in the order posted.  Returns 0
 * or -errno.
 */
int	reactor_post(struct reactor *, reactor_post_fn, void *arg) WUR;

/*
 * A single-producer single-consumer ring of fixed-size messages from one
 * thread (a vCPU) into the reactor.  drain(msg, arg) runs on the reactor
 * thread for every message, in order.  nslots is a power of two.
 */
struct reactor_ring *reactor_ring_create(struct reactor *, size_t msg_size,
	    unsigned nslots, reactor_ring_fn drain, void *arg);
/* Producer thread only.  Copies msg into the ring and wakes the reactor;
 * blocks while the ring is full.  Returns 0, or -EPIPE once the ring is
 * being freed. */
int	reactor_ring_push(struct reactor_ring *, const void *msg);
/*
 * Reactor thread (also from the ring's own drain callback).  Queued
 * messages are dropped without being drained.  A push that is under way
 * or blocked on a full ring returns -EPIPE, and free waits for it to
 * leave before releasing memory; a push begun after free returned is a
 * use after free.  Shutdown: stop the producer from pushing again (it
 * sees -EPIPE, or checks its own stop flag), free the ring, then join
 * the producer thread.  A producer waiting on a reactor_waiter for a
 * dropped message is not woken: the owner must wake it.
 */
void	reactor_ring_free(struct reactor_ring *);

/*
 * A one-shot wait: a producer thread that needs an answer (an MMIO read)
 * pushes its message with a pointer to a reactor_waiter, then sleeps in
 * reactor_waiter_wait() until the reactor thread calls
 * reactor_waiter_wake().  Initialise with reactor_waiter_init() before
 * each use.  Wake has release semantics and wait acquire semantics: what
 * the waker wrote before waking is visible after the wait.
 */
struct reactor_waiter {
	uint32_t	state;	/* futex word; accessed atomically */
};
void	reactor_waiter_init(struct reactor_waiter *);
void	reactor_waiter_wait(struct reactor_waiter *);
void	reactor_waiter_wake(struct reactor_waiter *);

/*
 * eventfds for the hypervisor's fast paths.  An ioeventfd (a guest write
 * that KVM turns into an eventfd signal: a virtqueue kick) is created
 * with a callback: the reactor watches it, drains the counter and calls
 * cb(count, arg) on the reactor thread.  An irqfd (an eventfd KVM turns
 * into a guest interrupt) is created without a callback and is only
 * signalled.  Register the fd with the hypervisor (hv_ioeventfd,
 * hv_irqfd) yourself: the reactor knows nothing of VMs.
 */
struct reactor_eventfd;
typedef void (*reactor_eventfd_fn)(uint64_t count, void *arg);

/* Create an eventfd (non-blocking, close-on-exec), watched when cb is
 * not NULL.  NULL + errno on failure.  Reactor thread. */
struct reactor_eventfd *reactor_eventfd_create(struct reactor *,
	    reactor_eventfd_fn cb, void *arg);
/* The file descriptor, to hand to the hypervisor. */
int	reactor_eventfd_fd(const struct reactor_eventfd *);
/* Add one to the counter (raise the irqfd's interrupt).  Any thread.
 * Returns 0 or -errno. */
int	reactor_eventfd_signal(struct reactor_eventfd *);
/* Stop watching and close.  Reactor thread; unregister it from the
 * hypervisor first. */
void	reactor_eventfd_free(struct reactor_eventfd *);

#endif /* SMX_REACTOR_H */
