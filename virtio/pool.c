/*
 * The virtio worker pool (see pool_impl.h).  Hand-off follows the
 * enqueue + eventfd pattern: workers append finished requests to a list
 * under the lock and signal an eventfd; the reactor takes the whole
 * list at once and delivers it.  Each request carries a hidden list
 * link in front of the device's part.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "core/base/base.h"
#include "virtio/pool_impl.h"

#define POOL_WORKERS_MAX	16

/* The pool's header in front of each request; the union keeps the
 * device's part aligned for any type. */
union node {
	union node	*next;
	max_align_t	 align;
};

/* A FIFO of requests. */
struct list {
	union node	*head;
	union node	*tail;
};

struct vpool {
	size_t			 req_size;
	vpool_serve_fn		 serve;
	vpool_done_fn		 done_fn;
	void			*arg;
	struct reactor_eventfd	*done_ev;	/* workers -> reactor */
	struct list		 spare;		/* reactor only */
	pthread_t		 worker[POOL_WORKERS_MAX];
	unsigned		 nworkers;	/* started */
	pthread_mutex_t		 lock;		/* guards what follows */
	pthread_cond_t		 wake;		/* workers: todo or stop */
	pthread_cond_t		 idle;		/* inflight went to 0 */
	struct list		 todo;
	struct list		 done;
	unsigned		 inflight;	/* in todo or being served */
	bool			 stop;
};

static void
list_put(struct list *l, union node *n)
{
	n->next = NULL;
	if (l->tail != NULL)
		l->tail->next = n;
	else
		l->head = n;
	l->tail = n;
}

static union node *
list_take(struct list *l)
{
	union node	*n = l->head;

	if (n != NULL) {
		l->head = n->next;
		if (l->head == NULL)
			l->tail = NULL;
	}
	return n;
}

static void
list_free(struct list *l)
{
	union node	*n;

	while ((n = list_take(l)) != NULL)
		free(n);
}

/* A worker: serve queued requests until told to stop. */
static void *
worker(void *arg)
{
	struct vpool	*p = arg;
	union node	*n;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->stop && p->todo.head == NULL)
			pthread_cond_wait(&p->wake, &p->lock);
		if (p->stop)
			break;
		n = list_take(&p->todo);
		pthread_mutex_unlock(&p->lock);
		p->serve(p->arg, n + 1);
		pthread_mutex_lock(&p->lock);
		list_put(&p->done, n);
		if (--p->inflight == 0)
			pthread_cond_broadcast(&p->idle);
		if (reactor_eventfd_signal(p->done_ev) != 0)
			log_warnx("virtio pool: cannot signal completion");
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* Deliver every finished request to the device (reactor thread). */
static void
deliver(struct vpool *p)
{
	struct list	 done;
	union node	*n;
	bool		 any = false;

	pthread_mutex_lock(&p->lock);
	done = p->done;
	p->done.head = p->done.tail = NULL;
	pthread_mutex_unlock(&p->lock);
	while ((n = list_take(&done)) != NULL) {
		p->done_fn(p->arg, n + 1);
		list_put(&p->spare, n);
		any = true;
	}
	if (any)
		p->done_fn(p->arg, NULL);
}

static void
done_cb(uint64_t count, void *arg)
{
	(void)count;
	deliver(arg);
}

/* Wait for the workers to go idle (reactor thread). */
static void
wait_idle(struct vpool *p)
{
	pthread_mutex_lock(&p->lock);
	while (p->inflight > 0)
		pthread_cond_wait(&p->idle, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

/* Stop and join the workers started so far, then free everything. */
static void
destroy(struct vpool *p)
{
	unsigned	i;

	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
	for (i = 0; i < p->nworkers; i++)
		pthread_join(p->worker[i], NULL);
	if (p->done_ev != NULL)
		reactor_eventfd_free(p->done_ev);
	list_free(&p->todo);
	list_free(&p->done);
	list_free(&p->spare);
	pthread_cond_destroy(&p->idle);
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

struct vpool *
vpool_create(struct reactor *r, unsigned nworkers, size_t req_size,
    vpool_serve_fn serve, vpool_done_fn done, void *arg)
{
	struct vpool	*p;
	int		 rc;

	if (nworkers == 0 || nworkers > POOL_WORKERS_MAX ||
	    req_size > SIZE_MAX - sizeof(union node)) {
		errno = EINVAL;
		return NULL;
	}
	p = xcalloc(1, sizeof(*p));
	p->req_size = req_size;
	p->serve = serve;
	p->done_fn = done;
	p->arg = arg;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->idle, NULL);
	if ((p->done_ev = reactor_eventfd_create(r, done_cb, p)) == NULL) {
		rc = errno;
		goto err_destroy;
	}
	for (p->nworkers = 0; p->nworkers < nworkers; p->nworkers++) {
		rc = pthread_create(&p->worker[p->nworkers], NULL, worker, p);
		if (rc != 0)
			goto err_destroy;
	}
	return p;

err_destroy:
	destroy(p);
	errno = rc;
	return NULL;
}

void *
vpool_get(struct vpool *p)
{
	union node	*n;

	if ((n = list_take(&p->spare)) == NULL)
		n = xmalloc(sizeof(*n) + p->req_size);
	return n + 1;
}

void
vpool_put(struct vpool *p, void *req)
{
	list_put(&p->spare, (union node *)req - 1);
}

void
vpool_submit(struct vpool *p, void **reqs, unsigned n)
{
	unsigned	i;

	if (n == 0)
		return;
	pthread_mutex_lock(&p->lock);
	for (i = 0; i < n; i++)
		list_put(&p->todo, (union node *)reqs[i] - 1);
	p->inflight += n;
	if (n == 1)
		pthread_cond_signal(&p->wake);
	else
		pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
}

void
vpool_drain(struct vpool *p)
{
	wait_idle(p);
	deliver(p);
}

void
vpool_free(struct vpool *p)
{
	if (p == NULL)
		return;
	wait_idle(p);
	destroy(p);
}
