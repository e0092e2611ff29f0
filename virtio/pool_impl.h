/*
 * A worker pool for virtio devices whose requests block (disk I/O,
 * file-system calls): the reactor hands popped requests to worker
 * threads and gets the finished ones back on the reactor thread.
 * virtio/-internal: device files include it, virtio.h does not.
 *
 * A request is a buffer of the size given at create, owned by the
 * device's code except while submitted.  Its life: vpool_get (reactor)
 * -> vpool_submit (reactor) -> serve (a worker) -> done (reactor) ->
 * back to the pool's spares.  With one worker requests are served in
 * submission order; with more they run in parallel and finish in any
 * order.
 */
#ifndef SMX_VIRTIO_POOL_IMPL_H
#define SMX_VIRTIO_POOL_IMPL_H

#include <stddef.h>

#include "reactor/reactor.h"

struct vpool;

/* Serve one request on a worker thread.  Must touch only the request,
 * guest memory and what the device keeps fixed or locks itself. */
typedef void (*vpool_serve_fn)(void *arg, void *req);
/* A finished request, on the reactor thread, in order of completion:
 * the device pushes it or drops it; the pool recycles the buffer when
 * done returns.  After each batch of one or more, done(arg, NULL) is
 * called once (to notify the guest for what was pushed). */
typedef void (*vpool_done_fn)(void *arg, void *req);

/* A pool of nworkers (>= 1) threads and req_size-byte requests.  NULL +
 * errno on failure.  Reactor thread. */
struct vpool	*vpool_create(struct reactor *, unsigned nworkers,
		    size_t req_size, vpool_serve_fn serve, vpool_done_fn done,
		    void *arg) __attribute__((warn_unused_result));
/* A request buffer (a spare one or a new one; contents undefined,
 * suitably aligned for any type).  Reactor thread. */
void		*vpool_get(struct vpool *);
/* Give back a buffer from vpool_get that was not submitted. */
void		 vpool_put(struct vpool *, void *req);
/* Queue n requests for the workers, in this order.  Reactor thread. */
void		 vpool_submit(struct vpool *, void **reqs, unsigned n);
/* Wait until no request is queued or being served (blocks the reactor
 * for the work in flight), then call done for every finished one.
 * Reactor thread: reset and save use it to quiesce the device. */
void		 vpool_drain(struct vpool *);
/* Let the workers finish what was submitted, stop and join them, and
 * free every request (done is not called for those not yet delivered).
 * Reactor thread; NULL is a no-op. */
void		 vpool_free(struct vpool *);

#endif
