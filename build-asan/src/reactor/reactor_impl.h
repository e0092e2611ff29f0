/*
 * reactor internals shared by reactor.c (event base, fds, timers,
 * signals, posts) and ring.c (rings, waiters).  Private to reactor/.
 */
#ifndef SMX_REACTOR_IMPL_H
#define SMX_REACTOR_IMPL_H

#include <linux/futex.h>
#include <sys/syscall.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "reactor/reactor.h"

struct event;
struct post_item;

struct reactor {
	struct event_base	*base;
	int			 stop;		/* reactor_stop() was called */

	/* reactor_post(): a mutex-protected FIFO plus an eventfd. */
	pthread_mutex_t		 post_mtx;
	struct post_item	*post_head;
	struct post_item	*post_tail;
	int			 post_efd;
	struct event		*post_ev;

	/* What callers still hold, so reactor_free() can name leftovers. */
	unsigned		 nfds;
	unsigned		 ntimers;
	unsigned		 nsignals;
	unsigned		 nrings;
};

/* Private futex calls: every futex word is process-private. */
static inline long
futex_wait(_Atomic uint32_t *word, uint32_t val)
{
	return syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, NULL, NULL,
	    0);
}

static inline long
futex_wake(_Atomic uint32_t *word, int n)
{
	return syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

#endif /* SMX_REACTOR_IMPL_H */
