/*
 * reactor unit tests: fds, timers, signals, posts, rings and waiters,
 * each case on a fresh reactor run on the test's main thread.
 */
#include <sys/socket.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reactor/reactor.h"
#include "tests/tap.h"

static struct reactor	*R;
static uint64_t		 guard_usec = 10000000;	/* a case this slow failed */
static pthread_t	 reactor_thread;
static int		 timed_out;

/* A stuck case stops its loop instead of hanging until alarm(). */
static void
guard_cb(void *arg)
{
	(void)arg;
	timed_out = 1;
	reactor_stop(R);
}

/* Fresh reactor; returns the guard timer (also keeps the loop alive). */
static struct reactor_timer *
setup(void)
{
	if ((R = reactor_create()) == NULL)
		fatal("reactor_create");
	reactor_thread = pthread_self();
	timed_out = 0;
	return reactor_add_timer(R, guard_usec, false, guard_cb, NULL);
}

static void
teardown(struct reactor_timer *guard)
{
	reactor_del_timer(guard);
	reactor_free(R);
	R = NULL;
}

static int
test_run_empty(void)
{
	TAP_CHECK((R = reactor_create()) != NULL);
	TAP_CHECK(reactor_base(R) != NULL);
	TAP_CHECK(reactor_run(R) == 0);	/* nothing registered: returns */
	reactor_free(R);
	return TAP_PASS;
}

static int	fd_calls, fd_bad;

static void
fd_read_cb(int fd, short what, void *arg)
{
	char	buf[16];

	(void)arg;
	fd_calls++;
	if (what != REACTOR_READ || read(fd, buf, sizeof(buf)) != 3 ||
	    !pthread_equal(pthread_self(), reactor_thread))
		fd_bad++;
	reactor_stop(R);
}

static int
test_fd_read(void)
{
	struct reactor_timer	*g = setup();
	struct reactor_fd	*rf;
	int			 p[2];

	fd_calls = fd_bad = 0;
	TAP_CHECK(pipe(p) == 0);
	TAP_CHECK((rf = reactor_add_fd(R, p[0], REACTOR_READ, fd_read_cb,
	    NULL)) != NULL);
	TAP_CHECK(write(p[1], "abc", 3) == 3);
	TAP_CHECK(reactor_run(R) == 0);
	TAP_CHECK(!timed_out && fd_calls == 1 && fd_bad == 0);
	reactor_del_fd(rf);
	close(p[0]);
	close(p[1]);
	teardown(g);
	return TAP_PASS;
}

static struct reactor_fd	*mod_rf;
static int			 mod_done;

/* Writable fires only after the timer switched the watch to WRITE. */
static void
mod_fd_cb(int fd, short what, void *arg)
{
	(void)fd;
	(void)arg;
	fd_calls++;
	if (!mod_done || what != REACTOR_WRITE)
		fd_bad++;
	reactor_stop(R);
}

static void
mod_timer_cb(void *arg)
{
	(void)arg;
	mod_done = 1;
	if (reactor_mod_fd(mod_rf, REACTOR_WRITE) != 0)
		fd_bad++;
}

static int
test_mod_fd(void)
{
	struct reactor_timer	*g = setup(), *t;
	int			 sv[2];

	fd_calls = fd_bad = mod_done = 0;
	TAP_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	/* No data will arrive: READ never fires, the socket is writable. */
	TAP_CHECK((mod_rf = reactor_add_fd(R, sv[0], REACTOR_READ, mod_fd_cb,
	    NULL)) != NULL);
	TAP_CHECK((t = reactor_add_timer(R, 20000, false, mod_timer_cb,
	    NULL)) != NULL);
	TAP_CHECK(reactor_run(R) == 0);
	TAP_CHECK(!timed_out && fd_calls == 1 && fd_bad == 0);
	TAP_CHECK(reactor_mod_fd(mod_rf, 0x100) == -EINVAL);
	reactor_del_fd(mod_rf);
	reactor_del_timer(t);
	close(sv[0]);
	close(sv[1]);
	teardown(g);
	return TAP_PASS;
}

/* The pipe stays readable: only the deletion stops further calls. */
static void
del_self_cb(int fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	fd_calls++;
	reactor_del_fd(*(struct reactor_fd **)arg);
}

static int
test_del_fd_in_cb(void)
{
	struct reactor_fd	*rf;
	int			 p[2];

	fd_calls = 0;
	TAP_CHECK((R = reactor_create()) != NULL);
	TAP_CHECK(pipe(p) == 0);
	TAP_CHECK(write(p[1], "x", 1) == 1);
	TAP_CHECK((rf = reactor_add_fd(R, p[0], REACTOR_READ, del_self_cb,
	    &rf)) != NULL);
	/* Returns once the callback removed the only registration. */
	TAP_CHECK(reactor_run(R) == 0);
	TAP_CHECK(fd_calls == 1);
	close(p[0]);
	close(p[1]);
	reactor_free(R);
	return TAP_PASS;
}

static int	timer_calls;

static void
once_cb(void *arg)
{
	(void)arg;
	timer_calls++;
}

static int
test_timer_once(void)
{
	struct reactor_timer	*t;
	uint64_t		 t0, dt;

	timer_calls = 0;
	TAP_CHECK((R = reactor_create()) != NULL);
	t0 = now_ns();
	TAP_CHECK((t = reactor_add_timer(R, 20000, false, once_cb, NULL)) !=
	    NULL);
	/* After firing a one-shot timer is no longer pending: run returns. */
	TAP_CHECK(reactor_run(R) == 0);
	dt = now_ns() - t0;
	TAP_CHECK(timer_calls == 1);
	TAP_CHECK(dt >= 20000000);
	reactor_del_timer(t);
	reactor_free(R);
	return TAP_PASS;
}

static void
periodic_cb(void *arg)
{
	if (++timer_calls == 5)
		reactor_del_timer(*(struct reactor_timer **)arg);
}

static int
test_timer_periodic(void)
{
	struct reactor_timer	*t;
	uint64_t		 t0, dt;

	timer_calls = 0;
	TAP_CHECK((R = reactor_create()) != NULL);
	t0 = now_ns();
	TAP_CHECK((t = reactor_add_timer(R, 5000, true, periodic_cb, &t)) !=
	    NULL);
	TAP_CHECK(reactor_run(R) == 0);
	dt = now_ns() - t0;
	TAP_CHECK(timer_calls == 5);
	TAP_CHECK(dt >= 25000000);
	reactor_free(R);
	return TAP_PASS;
}

static int	sig_calls, sig_bad;

static void
sig_cb(int signo, void *arg)
{
	(void)arg;
	sig_calls++;
	if (signo != SIGUSR1 || !pthread_equal(pthread_self(), reactor_thread))
		sig_bad++;
	reactor_stop(R);
}

static void *
sig_thread(void *arg)
{
	(void)arg;
	usleep(10000);
	kill(getpid(), SIGUSR1);
	return NULL;
}

static int
test_signal(void)
{
	struct reactor_timer	*g = setup();
	struct reactor_signal	*s;
	pthread_t		 th;

	sig_calls = sig_bad = 0;
	TAP_CHECK((s = reactor_add_signal(R, SIGUSR1, sig_cb, NULL)) != NULL);
	TAP_CHECK(pthread_create(&th, NULL, sig_thread, NULL) == 0);
	TAP_CHECK(reactor_run(R) == 0);
	pthread_join(th, NULL);
	TAP_CHECK(!timed_out && sig_calls == 1 && sig_bad == 0);
	reactor_del_signal(s);
	teardown(g);
	return TAP_PASS;
}

#define POST_THREADS	4
#define POST_EACH	10000

static uint32_t	post_next[POST_THREADS];
static unsigned	post_total, post_bad;

/* arg carries (thread << 32 | sequence). */
static void
post_fn(void *arg)
{
	uintptr_t	v = (uintptr_t)arg;
	unsigned	tid = v >> 32;
	uint32_t	seq = (uint32_t)v;

	if (tid >= POST_THREADS || post_next[tid] != seq ||
	    !pthread_equal(pthread_self(), reactor_thread))
		post_bad++;
	else
		post_next[tid]++;
	if (++post_total == POST_THREADS * POST_EACH)
		reactor_stop(R);
}

static void *
post_thread(void *arg)
{
	uintptr_t	tid = (uintptr_t)arg, i;

	for (i = 0; i < POST_EACH; i++)
		if (reactor_post(R, post_fn, (void *)(tid << 32 | i)) != 0)
			__atomic_fetch_add(&post_bad, 1, __ATOMIC_RELAXED);
	return NULL;
}

static int
test_post_threads(void)
{
	struct reactor_timer	*g = setup();
	pthread_t		 th[POST_THREADS];
	uintptr_t		 i;

	post_total = post_bad = 0;
	memset(post_next, 0, sizeof(post_next));
	for (i = 0; i < POST_THREADS; i++)
		TAP_CHECK(pthread_create(&th[i], NULL, post_thread,
		    (void *)i) == 0);
	TAP_CHECK(reactor_run(R) == 0);
	for (i = 0; i < POST_THREADS; i++)
		pthread_join(th[i], NULL);
	if (post_bad || post_total != POST_THREADS * POST_EACH)
		tap_diag("posts run %u, out of order or failed %u", post_total,
		    post_bad);
	TAP_CHECK(!timed_out);
	TAP_CHECK(post_bad == 0 && post_total == POST_THREADS * POST_EACH);
	teardown(g);
	return TAP_PASS;
}

static char	order[8];
static size_t	norder;

static void
post_b(void *arg)
{
	(void)arg;
	order[norder++] = 'b';
}

static void
post_a(void *arg)
{
	(void)arg;
	if (reactor_post(R, post_b, NULL) != 0)
		post_bad++;
	order[norder++] = 'a';
}

/* Stops the loop in the middle of a batch of posts. */
static void
post_stop(void *arg)
{
	(void)arg;
	order[norder++] = 's';
	reactor_stop(R);
}

static int
test_post_self(void)
{
	norder = 0;
	post_bad = 0;
	memset(order, 0, sizeof(order));
	TAP_CHECK((R = reactor_create()) != NULL);
	reactor_thread = pthread_self();
	/* A post from the reactor thread runs after the current one. */
	TAP_CHECK(reactor_post(R, post_a, NULL) == 0);
	TAP_CHECK(reactor_run(R) == 0);	/* queue empty: returns */
	TAP_CHECK(post_bad == 0 && strcmp(order, "ab") == 0);
	/* Stop inside a batch: the rest stays queued, in order. */
	TAP_CHECK(reactor_post(R, post_stop, NULL) == 0);
	TAP_CHECK(reactor_post(R, post_b, NULL) == 0);
	TAP_CHECK(reactor_run(R) == 0);
	TAP_CHECK(strcmp(order, "abs") == 0);
	TAP_CHECK(reactor_run(R) == 0);
	TAP_CHECK(strcmp(order, "absb") == 0);
	reactor_free(R);
	return TAP_PASS;
}

struct seq_msg {
	uint64_t	seq;
};

#define RING_MSGS	1000000

struct producer {
	struct reactor_ring	*rg;
	uint64_t		 n;
	uint64_t		 got;	/* drained, reactor thread */
	int			 rc;	/* first push failure */
	pthread_t		 th;
};

static void *
seq_producer(void *arg)
{
	struct producer	*p = arg;
	struct seq_msg	 m;
	uint64_t	 i;

	for (i = 0; i < p->n; i++) {
		m.seq = i;
		if ((p->rc = reactor_ring_push(p->rg, &m)) != 0)
			break;
	}
	return NULL;
}

static unsigned	ring_bad;

static void
seq_drain(void *msg, void *arg)
{
	struct producer	*p = arg;
	struct seq_msg	*m = msg;

	if (m->seq != p->got || !pthread_equal(pthread_self(), reactor_thread))
		ring_bad++;
	if (++p->got == p->n)
		reactor_stop(R);
}

static int
test_ring_order(void)
{
	struct reactor_timer	*g = setup();
	struct producer		 p = { .n = RING_MSGS };

	ring_bad = 0;
	TAP_CHECK((p.rg = reactor_ring_create(R, sizeof(struct seq_msg), 64,
	    seq_drain, &p)) != NULL);
	TAP_CHECK(pthread_create(&p.th, NULL, seq_producer, &p) == 0);
	TAP_CHECK(reactor_run(R) == 0);
	pthread_join(p.th, NULL);
	reactor_ring_free(p.rg);
	if (p.got != RING_MSGS || ring_bad)
		tap_diag("received %llu, out of order %u",
		    (unsigned long long)p.got, ring_bad);
	TAP_CHECK(!timed_out && p.rc == 0);
	TAP_CHECK(p.got == RING_MSGS && ring_bad == 0);
	teardown(g);
	return TAP_PASS;
}

#define FAIR_RINGS	8
#define FAIR_MSGS	100000

static struct producer	fair[FAIR_RINGS];
static unsigned		fair_done;
static uint64_t		fair_min_at_first;	/* least progress when one finished */

static void
fair_drain(void *msg, void *arg)
{
	struct producer	*p = arg;
	uint64_t	 min = UINT64_MAX;
	unsigned	 i;

	seq_drain(msg, arg);
	if (p->got != p->n)
		return;
	if (fair_done++ == 0) {
		for (i = 0; i < FAIR_RINGS; i++)
			min = MIN(min, fair[i].got);
		fair_min_at_first = min;
	}
}

/* seq_drain stops the loop at each finished ring; run until all are. */
static int
test_ring_fair(void)
{
	struct reactor_timer	*g = setup();
	unsigned		 i;

	ring_bad = fair_done = 0;
	memset(fair, 0, sizeof(fair));
	for (i = 0; i < FAIR_RINGS; i++) {
		fair[i].n = FAIR_MSGS;
		TAP_CHECK((fair[i].rg = reactor_ring_create(R,
		    sizeof(struct seq_msg), 16, fair_drain, &fair[i])) != NULL);
	}
	for (i = 0; i < FAIR_RINGS; i++)
		TAP_CHECK(pthread_create(&fair[i].th, NULL, seq_producer,
		    &fair[i]) == 0);
	while (fair_done < FAIR_RINGS && !timed_out)
		TAP_CHECK(reactor_run(R) == 0);
	for (i = 0; i < FAIR_RINGS; i++) {
		pthread_join(fair[i].th, NULL);
		reactor_ring_free(fair[i].rg);
		TAP_CHECK(fair[i].rc == 0 && fair[i].got == FAIR_MSGS);
	}
	tap_diag("least progress when the first ring finished: %llu of %u",
	    (unsigned long long)fair_min_at_first, FAIR_MSGS);
	TAP_CHECK(!timed_out && ring_bad == 0);
	TAP_CHECK(fair_min_at_first > 0);
	teardown(g);
	return TAP_PASS;
}

#define RTT_ROUNDS	100000

struct req_msg {
	uint64_t		 seq;
	uint64_t		*reply;
	struct reactor_waiter	*w;
};

static uint64_t	rtt_served;

static void
req_drain(void *msg, void *arg)
{
	struct req_msg	*m = msg;

	(void)arg;
	/* Written before the wake, read by the producer after its wait. */
	*m->reply = m->seq * 3 + 1;
	reactor_waiter_wake(m->w);
	if (++rtt_served == RTT_ROUNDS)
		reactor_stop(R);
}

static void *
req_producer(void *arg)
{
	struct producer		*p = arg;
	struct reactor_waiter	 w;
	struct req_msg		 m;
	uint64_t		 i, reply;

	for (i = 0; i < p->n; i++) {
		reactor_waiter_init(&w);
		reply = 0;
		m.seq = i;
		m.reply = &reply;
		m.w = &w;
		if ((p->rc = reactor_ring_push(p->rg, &m)) != 0)
			break;
		reactor_waiter_wait(&w);
		if (reply != i * 3 + 1) {
			p->rc = -EBADMSG;
			break;
		}
		p->got++;
	}
	return NULL;
}

static int
test_waiter_rtt(void)
{
	struct reactor_timer	*g = setup();
	struct producer		 p = { .n = RTT_ROUNDS };

	rtt_served = 0;
	TAP_CHECK((p.rg = reactor_ring_create(R, sizeof(struct req_msg), 8,
	    req_drain, NULL)) != NULL);
	TAP_CHECK(pthread_create(&p.th, NULL, req_producer, &p) == 0);
	TAP_CHECK(reactor_run(R) == 0);
	pthread_join(p.th, NULL);
	reactor_ring_free(p.rg);
	TAP_CHECK(!timed_out && p.rc == 0);
	TAP_CHECK(p.got == RTT_ROUNDS && rtt_served == RTT_ROUNDS);
	teardown(g);
	return TAP_PASS;
}

static void
never_drain(void *msg, void *arg)
{
	(void)msg;
	(void)arg;
	ring_bad++;
}

/* The reactor never runs: the fifth push must block until the free. */
static int
test_ring_free_blocked(void)
{
	struct producer	p = { .n = 5 };

	ring_bad = 0;
	TAP_CHECK((R = reactor_create()) != NULL);
	TAP_CHECK((p.rg = reactor_ring_create(R, sizeof(struct seq_msg), 4,
	    never_drain, NULL)) != NULL);
	TAP_CHECK(pthread_create(&p.th, NULL, seq_producer, &p) == 0);
	usleep(100000);
	reactor_ring_free(p.rg);
	pthread_join(p.th, NULL);
	TAP_CHECK(p.rc == -EPIPE);
	TAP_CHECK(ring_bad == 0);
	reactor_free(R);
	return TAP_PASS;
}

static struct reactor_ring	*self_rg;

static void
free_self_drain(void *msg, void *arg)
{
	(void)msg;
	(void)arg;
	ring_bad++;
	reactor_ring_free(self_rg);
}

/* Freeing a ring from its own drain drops the rest and stops draining. */
static int
test_ring_free_in_drain(void)
{
	struct seq_msg	m = { 0 };
	int		i;

	ring_bad = 0;
	TAP_CHECK((R = reactor_create()) != NULL);
	TAP_CHECK((self_rg = reactor_ring_create(R, sizeof(m), 8,
	    free_self_drain, NULL)) != NULL);
	for (i = 0; i < 3; i++)
		TAP_CHECK(reactor_ring_push(self_rg, &m) == 0);
	TAP_CHECK(reactor_run(R) == 0);	/* the ring was the only thing */
	TAP_CHECK(ring_bad == 1);
	reactor_free(R);
	return TAP_PASS;
}

static void
stop_cb(void *arg)
{
	(void)arg;
	timer_calls++;
	reactor_stop(R);
}

static int
test_stop_in_cb(void)
{
	struct reactor_timer	*t;

	timer_calls = 0;
	TAP_CHECK((R = reactor_create()) != NULL);
	TAP_CHECK((t = reactor_add_timer(R, 1000, true, stop_cb, NULL)) !=
	    NULL);
	TAP_CHECK(reactor_run(R) == 0);	/* the timer is still registered */
	TAP_CHECK(timer_calls == 1);
	TAP_CHECK(reactor_run(R) == 0);	/* and a second run works */
	TAP_CHECK(timer_calls == 2);
	reactor_del_timer(t);
	reactor_free(R);
	return TAP_PASS;
}

static int
test_bad_args(void)
{
	TAP_CHECK((R = reactor_create()) != NULL);
	TAP_CHECK(reactor_ring_create(R, 8, 3, never_drain, NULL) == NULL &&
	    errno == EINVAL);
	TAP_CHECK(reactor_ring_create(R, 0, 4, never_drain, NULL) == NULL &&
	    errno == EINVAL);
	TAP_CHECK(reactor_add_fd(R, -1, REACTOR_READ, fd_read_cb, NULL) ==
	    NULL && errno == EINVAL);
	TAP_CHECK(reactor_post(R, NULL, NULL) == -EINVAL);
	reactor_free(R);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "run returns with nothing registered", test_run_empty },
	{ "fd readiness callback", test_fd_read },
	{ "mod_fd switches READ to WRITE", test_mod_fd },
	{ "del_fd from inside its callback", test_del_fd_in_cb },
	{ "one-shot timer", test_timer_once },
	{ "periodic timer deleted from its callback", test_timer_periodic },
	{ "signal delivered on the reactor thread", test_signal },
	{ "post: 4 threads x 10000, order kept", test_post_threads },
	{ "post from the reactor thread, stop mid-batch", test_post_self },
	{ "ring: 1M messages through 64 slots in order", test_ring_order },
	{ "ring: 8 producers all progress", test_ring_fair },
	{ "waiter: 100000 round trips", test_waiter_rtt },
	{ "ring_free makes a blocked push return -EPIPE",
	    test_ring_free_blocked },
	{ "ring_free from its own drain callback", test_ring_free_in_drain },
	{ "reactor_stop from a callback returns reactor_run", test_stop_in_cb },
	{ "invalid arguments", test_bad_args },
};

int
main(void)
{
	const char	*env = getenv("REACTOR_TEST_TIMEOUT");
	unsigned	 timeout = 120;

	log_init("reactor_test", LOG_NORMAL);
	/* Slow checkers (valgrind) need longer guards than the default. */
	if (env != NULL && atoi(env) > 0) {
		timeout = atoi(env);
		guard_usec = (uint64_t)timeout * 1000000 / 4;
	}
	return tap_run(cases, ARRAY_SIZE(cases), timeout);
}
