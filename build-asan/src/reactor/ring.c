/*
 * vCPU -> reactor rings and one-shot waiters.
 *
 * A ring is a single-producer single-consumer array of nslots fixed-size
 * slots indexed by free-running 32-bit counters: the producer owns
 * `tail`, the consumer (the reactor thread) owns `head`, tail - head is
 * the number of queued messages.
 *
 * Wakeup protocol (consumer asleep in the event loop):
 *   producer: write slot; store tail (seq_cst); load head (seq_cst);
 *             if head == old tail, the consumer had drained everything
 *             and may be asleep: write the eventfd.
 *   consumer: on finding head == tail: republish head with a seq_cst
 *             read-modify-write; reload tail (seq_cst); sleep in the
 *             event loop only if still equal.
 * This is a store-buffering (Dekker) pair: in the single total order of
 * seq_cst operations, either the producer's load of head comes after the
 * consumer's republish (it sees the final head and writes the eventfd)
 * or the consumer's reload comes after the producer's store (it sees the
 * new tail and goes on draining).  So no message is left with nobody
 * awake.  seq_cst operations rather than fences: the same instructions on
 * x86 (xchg / lock xadd vs mfence), and ThreadSanitizer understands them.
 *
 * Full ring (producer asleep on a futex):
 *   producer: seq = wait_seq; waiting = 1; load head, all seq_cst;
 *             if still full, futex_wait(wait_seq, seq).
 *   consumer: after a batch: republish head; if exchange(waiting, 0):
 *             bump wait_seq, futex_wake(wait_seq).
 * Same Dekker argument on (head, waiting); the futex compare on wait_seq
 * covers the gap between the producer's check and its sleep.
 *
 * Shutdown: `state` holds RING_BUSY while the producer is inside
 * reactor_ring_push() and RING_CLOSED once reactor_ring_free() started.
 * Both sides change it with read-modify-writes, which are totally
 * ordered, so either the producer sees CLOSED on entry (and returns
 * -EPIPE) or free sees BUSY and waits for the producer to leave.  A
 * producer asleep on a full ring is woken through wait_seq and returns
 * -EPIPE.  Calling push after free returned is a use after free.
 */
#include <sys/eventfd.h>

#include <errno.h>
#include <limits.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "reactor/reactor_impl.h"

#define RING_BUSY	0x1u
#define RING_CLOSED	0x2u

#define CACHELINE	64

struct reactor_ring {
	/* Producer side: written on every push. */
	alignas(CACHELINE) _Atomic uint32_t tail;
	_Atomic uint32_t	 state;		/* RING_BUSY | RING_CLOSED */
	_Atomic uint32_t	 waiting;	/* producer asleep on a full ring */
	uint32_t		 head_cache;	/* producer's last view of head */

	/* Consumer side: written once per message drained. */
	alignas(CACHELINE) _Atomic uint32_t head;
	_Atomic uint32_t	 wait_seq;	/* futex word for a full ring */

	/* Fixed at creation, read by both. */
	alignas(CACHELINE) uint8_t *slots;
	size_t			 slot_size;
	size_t			 msg_size;
	uint32_t		 nslots;
	struct reactor		*r;
	reactor_ring_fn		 drain;
	void			*arg;
	int			 efd;
	struct event		*ev;
	bool			 draining;	/* inside ring_cb's loop */
	bool			 dead;		/* freed from inside drain */
};

static inline void *
ring_slot(struct reactor_ring *rg, uint32_t idx)
{
	return rg->slots + (size_t)(idx & (rg->nslots - 1)) * rg->slot_size;
}

/* Kick an eventfd; only fails with 2^64 - 1 unread kicks. */
static void
ring_kick(struct reactor_ring *rg)
{
	uint64_t	one = 1;

	while (write(rg->efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

/* Release what the ring owns; the event is already gone. */
static void
ring_release(struct reactor_ring *rg)
{
	free(rg->slots);
	free(rg);
}

/* Consumer side: put our latest head into the seq_cst total order, so
 * that the load that follows cannot be ordered before it (the per-message
 * stores of head are only release). */
static inline void
ring_publish_head(struct reactor_ring *rg)
{
	atomic_fetch_add_explicit(&rg->head, 0, memory_order_seq_cst);
}

/* Consumer side: after a batch, wake a producer asleep on a full ring.
 * The caller has just published head: Dekker with ring_wait_space(),
 * either it sees our head or we see its `waiting`. */
static void
ring_wake_producer(struct reactor_ring *rg)
{
	/* seq_cst includes acquire: the producer's load of wait_seq happens
	 * before our bump, so its futex_wait sees the new value or gets our
	 * wake. */
	if (atomic_exchange_explicit(&rg->waiting, 0, memory_order_seq_cst)) {
		atomic_fetch_add_explicit(&rg->wait_seq, 1,
		    memory_order_relaxed);
		futex_wake(&rg->wait_seq, 1);
	}
}

/*
 * The ring's eventfd was written: drain at most nslots messages, then
 * give the loop back so other rings and fds get their turn; if we stop
 * early, kick our own eventfd so the next poll brings us back.
 */
static void
ring_cb(evutil_socket_t fd, short what, void *arg)
{
	struct reactor_ring	*rg = arg;
	uint32_t		 h, t, n;
	bool			 more = false;

	(void)fd;
	(void)what;
	/* Only we store head. */
	h = atomic_load_explicit(&rg->head, memory_order_relaxed);
	/* Acquire pairs with the producer's release store of tail: the
	 * slots below it are fully written. */
	t = atomic_load_explicit(&rg->tail, memory_order_acquire);
	rg->draining = true;
	for (n = 0;; n++) {
		if (h == t) {
			/* Dekker with the producer's publish: either we
			 * see its new tail here, or it sees our final head
			 * and kicks the eventfd. */
			ring_publish_head(rg);
			t = atomic_load_explicit(&rg->tail,
			    memory_order_seq_cst);
			if (h == t)
				break;
		}
		if (n == rg->nslots || rg->r->stop) {
			more = true;
			break;
		}
		rg->drain(ring_slot(rg, h), rg->arg);
		if (rg->dead)
			break;
		/* Release: our reads of the slot happen before the
		 * producer's acquire load of head lets it reuse the slot. */
		atomic_store_explicit(&rg->head, ++h, memory_order_release);
	}
	rg->draining = false;
	if (rg->dead) {
		ring_release(rg);
		return;
	}
	if (more) {
		ring_kick(rg);
		ring_publish_head(rg);
	}
	/* Otherwise the empty check above published the final head. */
	ring_wake_producer(rg);
}

struct reactor_ring *
reactor_ring_create(struct reactor *r, size_t msg_size, unsigned nslots,
    reactor_ring_fn drain, void *arg)
{
	struct reactor_ring	*rg;
	void			*p;
	int			 saved;

	if (drain == NULL || msg_size == 0 || msg_size > (1u << 20) ||
	    nslots == 0 || (nslots & (nslots - 1)) || nslots > (1u << 20)) {
		errno = EINVAL;
		return NULL;
	}
	if (posix_memalign(&p, CACHELINE, sizeof(*rg)) != 0) {
		errno = ENOMEM;
		return NULL;
	}
	rg = p;
	memset(rg, 0, sizeof(*rg));
	/* Slots keep the alignment malloc gives, so drain may cast msg to
	 * any struct. */
	rg->slot_size = ALIGN_UP(msg_size, alignof(max_align_t));
	rg->msg_size = msg_size;
	rg->nslots = nslots;
	rg->r = r;
	rg->drain = drain;
	rg->arg = arg;
	if (posix_memalign(&p, CACHELINE, rg->slot_size * nslots) != 0) {
		errno = ENOMEM;
		goto err_free;
	}
	rg->slots = p;
	rg->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (rg->efd < 0)
		goto err_free_slots;
	/*
	 * Edge-triggered: every eventfd write is a new edge that epoll
	 * reports once, so ring_cb never needs to read the counter back (one
	 * system call less per wakeup); it cannot overflow, as it grows by
	 * at most one per message.
	 */
	rg->ev = event_new(r->base, rg->efd, EV_READ | EV_PERSIST | EV_ET,
	    ring_cb, rg);
	if (rg->ev == NULL) {
		errno = ENOMEM;
		goto err_close_efd;
	}
	if (event_add(rg->ev, NULL) < 0) {
		errno = EIO;
		goto err_free_ev;
	}
	r->nrings++;
	return rg;

err_free_ev:
	event_free(rg->ev);
err_close_efd:
	saved = errno;
	close(rg->efd);
	errno = saved;
err_free_slots:
	free(rg->slots);
err_free:
	free(rg);
	return NULL;
}

/* Producer, ring full: sleep until the consumer frees a slot or the ring
 * is closed.  Returns 0 (recheck) or -EPIPE. */
static int
ring_wait_space(struct reactor_ring *rg, uint32_t t)
{
	uint32_t	seq;

	/* Read before announcing ourselves: a wake after this point
	 * changes wait_seq and makes futex_wait return at once. */
	seq = atomic_load_explicit(&rg->wait_seq, memory_order_seq_cst);
	/* Dekker with ring_wake_producer(); the load of head also acquires
	 * the consumer's reads of the slot we will reuse. */
	atomic_store_explicit(&rg->waiting, 1, memory_order_seq_cst);
	rg->head_cache = atomic_load_explicit(&rg->head, memory_order_seq_cst);
	/* seq_cst against free's fetch_or(CLOSED) then bump of wait_seq:
	 * if CLOSED is not seen here, the bump comes after our read of
	 * wait_seq and the futex_wait below cannot miss it. */
	if (atomic_load_explicit(&rg->state, memory_order_seq_cst) &
	    RING_CLOSED)
		return -EPIPE;
	if (t - rg->head_cache != rg->nslots)
		return 0;
	futex_wait(&rg->wait_seq, seq);
	rg->head_cache = atomic_load_explicit(&rg->head, memory_order_acquire);
	return 0;
}

int
reactor_ring_push(struct reactor_ring *rg, const void *msg)
{
	uint32_t	t, h, old;
	int		rc = 0;

	/* Totally ordered with free's fetch_or(CLOSED); see the top. */
	old = atomic_fetch_or_explicit(&rg->state, RING_BUSY,
	    memory_order_seq_cst);
	if (old & RING_CLOSED) {
		rc = -EPIPE;
		goto out;
	}
	/* Only we store tail. */
	t = atomic_load_explicit(&rg->tail, memory_order_relaxed);
	if (t - rg->head_cache == rg->nslots) {
		/* Acquire pairs with the consumer's release of head: it has
		 * finished reading the slot we are about to overwrite. */
		rg->head_cache = atomic_load_explicit(&rg->head,
		    memory_order_acquire);
		while (t - rg->head_cache == rg->nslots)
			if ((rc = ring_wait_space(rg, t)) != 0)
				goto out;
	}
	memcpy(ring_slot(rg, t), msg, rg->msg_size);
	/* seq_cst includes release: the slot contents are visible to the
	 * consumer's acquire load of tail.  seq_cst for the Dekker pair with
	 * the consumer's empty check (see the top). */
	atomic_store_explicit(&rg->tail, t + 1, memory_order_seq_cst);
	h = atomic_load_explicit(&rg->head, memory_order_seq_cst);
	rg->head_cache = h;
	if (h == t)
		ring_kick(rg);
out:
	old = atomic_fetch_and_explicit(&rg->state, ~RING_BUSY,
	    memory_order_seq_cst);
	if (old & RING_CLOSED)
		futex_wake(&rg->state, INT_MAX);
	return rc;
}

/*
 * Close, make a producer inside push leave with -EPIPE, wait until it has
 * left, then free.  Messages still queued are dropped.  From inside the
 * ring's own drain callback the memory is released when the callback
 * returns.
 */
void
reactor_ring_free(struct reactor_ring *rg)
{
	uint32_t	s;

	if (rg == NULL)
		return;
	atomic_fetch_or_explicit(&rg->state, RING_CLOSED, memory_order_seq_cst);
	atomic_fetch_add_explicit(&rg->wait_seq, 1, memory_order_seq_cst);
	futex_wake(&rg->wait_seq, INT_MAX);
	/* Acquire: the producer's last accesses to the ring happen before
	 * we free it. */
	while ((s = atomic_load_explicit(&rg->state, memory_order_acquire)) &
	    RING_BUSY)
		futex_wait(&rg->state, s);

	event_free(rg->ev);
	close(rg->efd);
	rg->r->nrings--;
	if (rg->draining)
		rg->dead = true;
	else
		ring_release(rg);
}

/*
 * Waiter states.  SLEEPING tells the waker a futex_wake is needed, so a
 * wake that comes before the waiter sleeps costs no system call.
 */
#define WAITER_PENDING	0u
#define WAITER_SLEEPING	1u
#define WAITER_DONE	2u

/* The public struct declares a plain uint32_t (the header stays free of
 * <stdatomic.h>); it is only ever accessed as this atomic. */
static inline _Atomic uint32_t *
waiter_word(struct reactor_waiter *w)
{
	return (_Atomic uint32_t *)&w->state;
}

void
reactor_waiter_init(struct reactor_waiter *w)
{
	/* Relaxed: the push that hands w to the reactor publishes it. */
	atomic_store_explicit(waiter_word(w), WAITER_PENDING,
	    memory_order_relaxed);
}

void
reactor_waiter_wait(struct reactor_waiter *w)
{
	_Atomic uint32_t	*word = waiter_word(w);
	uint32_t		 s;

	/* Acquire on every load that can see DONE: pairs with the waker's
	 * release exchange.  A failed CAS means the wake came first. */
	s = atomic_load_explicit(word, memory_order_acquire);
	if (s == WAITER_PENDING && atomic_compare_exchange_strong_explicit(word,
	    &s, WAITER_SLEEPING, memory_order_acquire, memory_order_acquire))
		s = WAITER_SLEEPING;
	while (s != WAITER_DONE) {
		/* Returns at once if the state is no longer SLEEPING;
		 * spurious wakeups just loop. */
		futex_wait(word, WAITER_SLEEPING);
		s = atomic_load_explicit(word, memory_order_acquire);
	}
}

/*
 * The waiter may return (and its memory be reused) between the exchange
 * and the futex_wake: waking a private futex at a stale address can at
 * worst cause a spurious wakeup elsewhere, which every futex loop
 * tolerates.
 */
void
reactor_waiter_wake(struct reactor_waiter *w)
{
	_Atomic uint32_t	*word = waiter_word(w);

	/* Release: what we wrote before waking is visible after the wait. */
	if (atomic_exchange_explicit(word, WAITER_DONE, memory_order_release) ==
	    WAITER_SLEEPING)
		futex_wake(word, 1);
}
