/*
 * Round-trip time of a ring message that needs an answer (a producer
 * thread pushes with a waiter, the reactor's drain callback wakes it),
 * against the same exchange over two pipes between two threads, measured
 * in the same run.  Prints
 *   ring_rtt_median_ns=N pipe_rtt_median_ns=N ratio=X
 *   ring_rtt_p99_ns=N pipe_rtt_p99_ns=N
 * Usage: ring_bench [rounds]   (default 100000, after 10000 warmup)
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "reactor/reactor.h"

#define WARMUP	10000

struct req {
	struct reactor_waiter	*w;
	int			 last;
};

struct bench {
	struct reactor		*r;
	struct reactor_ring	*rg;
	uint64_t		*samples;
	unsigned		 rounds;
	int			 rc;
	int			 p1[2], p2[2];	/* pipe peer: ping, pong */
};

/* Reactor side of the ring exchange: answer at once. */
static void
req_drain(void *msg, void *arg)
{
	struct req	*m = msg;
	struct bench	*b = arg;

	reactor_waiter_wake(m->w);
	if (m->last)
		reactor_stop(b->r);
}

static void *
ring_client(void *arg)
{
	struct bench		*b = arg;
	struct reactor_waiter	 w;
	struct req		 m = { .w = &w };
	unsigned		 i, n = WARMUP + b->rounds;
	uint64_t		 t0;

	for (i = 0; i < n; i++) {
		m.last = i == n - 1;
		reactor_waiter_init(&w);
		t0 = now_ns();
		if ((b->rc = reactor_ring_push(b->rg, &m)) != 0)
			return NULL;
		reactor_waiter_wait(&w);
		if (i >= WARMUP)
			b->samples[i - WARMUP] = now_ns() - t0;
	}
	return NULL;
}

/* The pipe peer's server: echo each byte until the ping pipe closes. */
static void *
pipe_server(void *arg)
{
	struct bench	*b = arg;
	char		 c;

	while (read(b->p1[0], &c, 1) == 1)
		if (write(b->p2[1], &c, 1) != 1)
			break;
	return NULL;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t	x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorts the samples; returns the value at fraction q. */
static uint64_t
quantile(uint64_t *s, unsigned n, double q)
{
	qsort(s, n, sizeof(*s), cmp_u64);
	return s[(unsigned)(q * (n - 1))];
}

static void
run_ring(struct bench *b, uint64_t *median, uint64_t *p99)
{
	pthread_t	th;

	if ((b->r = reactor_create()) == NULL)
		fatal("reactor_create");
	if ((b->rg = reactor_ring_create(b->r, sizeof(struct req), 64,
	    req_drain, b)) == NULL)
		fatal("reactor_ring_create");
	if (pthread_create(&th, NULL, ring_client, b) != 0)
		fatalx("pthread_create failed");
	if (reactor_run(b->r) != 0)
		fatalx("reactor_run failed");
	pthread_join(th, NULL);
	if (b->rc != 0)
		fatalx("ring push failed: %d", b->rc);
	reactor_ring_free(b->rg);
	reactor_free(b->r);
	*median = quantile(b->samples, b->rounds, 0.5);
	*p99 = quantile(b->samples, b->rounds, 0.99);
}

static void
run_pipe(struct bench *b, uint64_t *median, uint64_t *p99)
{
	pthread_t	th;
	unsigned	i, n = WARMUP + b->rounds;
	uint64_t	t0;
	char		c = 'x';

	if (pipe(b->p1) != 0 || pipe(b->p2) != 0)
		fatal("pipe");
	if (pthread_create(&th, NULL, pipe_server, b) != 0)
		fatalx("pthread_create failed");
	for (i = 0; i < n; i++) {
		t0 = now_ns();
		if (write(b->p1[1], &c, 1) != 1 || read(b->p2[0], &c, 1) != 1)
			fatal("pipe round trip");
		if (i >= WARMUP)
			b->samples[i - WARMUP] = now_ns() - t0;
	}
	close(b->p1[1]);
	pthread_join(th, NULL);
	close(b->p1[0]);
	close(b->p2[0]);
	close(b->p2[1]);
	*median = quantile(b->samples, b->rounds, 0.5);
	*p99 = quantile(b->samples, b->rounds, 0.99);
}

int
main(int argc, char **argv)
{
	struct bench	b = { .rounds = 100000 };
	uint64_t	rmed, rp99, pmed, pp99;

	log_init("ring_bench", LOG_NORMAL);
	if (argc > 1 && (b.rounds = strtoul(argv[1], NULL, 10)) == 0)
		fatalx("usage: ring_bench [rounds > 0]");
	b.samples = xcalloc(b.rounds, sizeof(*b.samples));
	run_ring(&b, &rmed, &rp99);
	run_pipe(&b, &pmed, &pp99);
	printf("ring_rtt_median_ns=%llu pipe_rtt_median_ns=%llu ratio=%.2f\n",
	    (unsigned long long)rmed, (unsigned long long)pmed,
	    (double)rmed / (double)pmed);
	printf("ring_rtt_p99_ns=%llu pipe_rtt_p99_ns=%llu\n",
	    (unsigned long long)rp99, (unsigned long long)pp99);
	free(b.samples);
	return 0;
}
