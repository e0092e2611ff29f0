/*
 * The registry client: pulls over the OCI distribution spec
 * (distribution-spec/spec.md, "Pulling manifests", "Pulling blobs") on
 * libcurl's multi interface.  curl says which sockets and which timeout
 * it wants watched (CURLMOPT_SOCKETFUNCTION, CURLMOPT_TIMERFUNCTION); we
 * watch them with events on the reactor's event_base and hand readiness
 * back with curl_multi_socket_action().  Nothing blocks on the network.
 *
 * A pull: GET the manifest (index/list -> GET the platform's manifest by
 * digest), store it, then fetch config and layers, max_parallel at once,
 * each streamed into tmp/<hex>.partial while hashed, verified and moved
 * into the store.  A partial survives an interruption and the next try
 * asks for the rest with Range.  The per-blob store lock (taken on a
 * helper thread because flock blocks) makes two pulls of one image, in
 * this process or another, download each blob once.
 */
#include <sys/queue.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "image/image.h"
#include "reactor/reactor.h"

#define MANIFEST_MAX	(4u << 20)	/* as the distribution spec suggests */
#define CONFIG_MAX	(4u << 20)	/* what image/rootfs.c reads */
#define TOKEN_MAX	(1u << 20)
#define ERRBODY_MAX	4096u
#define BACKOFF_MS	200u		/* first retry; doubles each time */
#define BACKOFF_MAX_MS	10000u
#define RETRY_AFTER_MAX	60		/* seconds we honour at most */
#define PROGRESS_STEP	(1u << 20)	/* bytes between progress events */

#define MT_OCI_INDEX	"application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST	"application/vnd.oci.image.manifest.v1+json"
#define MT_DOCKER_LIST	"application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_V2	"application/vnd.docker.distribution.manifest.v2+json"

/* Configs and layers we can use (image-spec manifest.md, config.md,
 * layer.md; Docker's image manifest v2 schema 2). */
static const char *const config_types[] = {
	"application/vnd.oci.image.config.v1+json",
	"application/vnd.docker.container.image.v1+json",
	NULL,
};
static const char *const layer_types[] = {
	"application/vnd.oci.image.layer.v1.tar",
	"application/vnd.oci.image.layer.v1.tar+gzip",
	"application/vnd.oci.image.layer.v1.tar+zstd",
	"application/vnd.oci.image.layer.nondistributable.v1.tar",
	"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
	"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
	"application/vnd.docker.image.rootfs.diff.tar",
	"application/vnd.docker.image.rootfs.diff.tar.gzip",
	"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
	NULL,
};

/* REQ_PING: GET /v2/ to check credentials (image_login_start). */
enum req_kind { REQ_MANIFEST, REQ_BLOB, REQ_TOKEN, REQ_PING };

struct blob;

/* One HTTP request, retried in place (a fresh easy handle per try). */
struct req {
	struct image_pull	*pull;
	enum req_kind		 kind;
	struct blob		*blob;		/* REQ_BLOB */
	char			*url;
	char			 want[72];	/* REQ_MANIFEST by digest */
	CURL			*easy;
	struct curl_slist	*hdrs;
	char			 errbuf[CURL_ERROR_SIZE];
	unsigned		 attempt;	/* tries that failed */
	unsigned		 auth_tries;
	struct event		*retry_ev;
	TAILQ_ENTRY(req)	 wait_entry;	/* waiting for a token */
	bool			 waiting;

	/* The response being received (reset at each status line). */
	long			 status;
	bool			 body_started, to_file;
	char			 ctype[128], dcd[80], www_auth[1024];
	char			 crange[96];
	long			 retry_after;
	uint8_t			*buf;
	size_t			 len, max;
	char			*bad;		/* fatal reason found in a cb */
	int			 bad_error;
	bool			 bad_unlink;	/* the partial is garbage */
};

enum blob_state { B_QUEUED, B_LOCKING, B_FETCHING, B_DONE };

/*
 * A blob in B_LOCKING is shared with its lock thread, which may outlive
 * the pull, the reactor and the caller's patience (flock waits for
 * another pull).  lock_mu orders the hand-off: the thread either finds
 * pull == NULL (the pull let go: it drops the lock and frees the blob
 * itself, touching no reactor) or posts blob_lock_done_cb and sets
 * posted, after which the reactor thread alone owns the blob.
 */
static pthread_mutex_t lock_mu = PTHREAD_MUTEX_INITIALIZER;

struct blob {
	struct image_pull	*pull;		/* NULL: orphaned while locking */
	bool			 posted;	/* the lock thread is done */
	TAILQ_ENTRY(blob)	 entry;
	char			 digest[72];
	uint64_t		 size;
	bool			 config;
	enum blob_state		 state;
	int			 lockfd, lock_error;
	char			 lockpath[PATH_MAX];
	int			 lockpath_error;
	struct reactor		*reactor;	/* for the lock thread */
	struct image_store	*store;
	int			 fd;		/* the partial file */
	char			*part;
	uint64_t		 have;		/* bytes hashed before this try */
	uint64_t		 got;		/* bytes of this try */
	uint64_t		 reported;
	struct sha256_ctx	 sha;
	struct req		*req;
};

struct image_pull {
	struct reactor		*reactor;
	struct event_base	*base;
	struct image_store	*store;
	struct image_ref	 ref;
	char			 name[IMAGE_REF_MAX];	/* for messages */
	char			*v2;		/* scheme://host/v2/<path> */
	const char		*host;
	bool			 insecure;
	char			 os[32], arch[32], variant[32];
	unsigned		 max_parallel, retries, stall_s;
	bool			 login;		/* image_login_start() */
	char			*user, *pass;
	char			 creds[PATH_MAX + 32];	/* for messages */
	char			*token;
	bool			 basic;
	struct req		*token_req;
	TAILQ_HEAD(, req)	 waiters;
	CURLM			*multi;
	struct event		*timer;		/* curl's timeout */
	struct event		*keep;		/* keeps reactor_run() going */
	struct event		*finish;	/* delivers DONE / FAILED */
	int			 holdfd;
	struct req		*manifest;
	bool			 nested;	/* followed an index already */
	char			 digest[72];	/* the platform manifest */
	size_t			 layers;	/* in that manifest */
	TAILQ_HEAD(, blob)	 blobs;
	unsigned		 active, remaining;
	bool			 ended, delivered;
	int			 error;
	char			*message;
	image_pull_fn		 cb;
	void			*arg;
};

static void	req_start(struct req *);
static void	req_free(struct req *);
static void	schedule(struct image_pull *);
static void	pull_fail(struct image_pull *, int, const char *, ...)
		    PRINTF(3, 4);

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void
curl_init_once(void)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		fatalx("registry: curl_global_init failed");
}

void
image_pull_opts_init(struct image_pull_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->platform = "linux/amd64";
	o->max_parallel = 3;
	o->retries = 5;
	o->stall_s = 30;
}

/* --- events ------------------------------------------------------------ */

static void
emit(struct image_pull *p, enum image_pull_event_kind kind,
    const char *digest, uint64_t done, uint64_t total)
{
	struct image_pull_event	ev;

	memset(&ev, 0, sizeof(ev));
	ev.kind = kind;
	ev.digest = digest;
	ev.done = done;
	ev.total = total;
	if (p->cb != NULL)
		p->cb(&ev, p->arg);
}

/* The final event runs from its own libevent callback, never from inside
 * curl, so the callee may free the pull. */
static void
finish_cb(evutil_socket_t fd, short what, void *arg)
{
	struct image_pull	*p = arg;
	struct image_pull_event	 ev;

	(void)fd;
	(void)what;
	memset(&ev, 0, sizeof(ev));
	ev.kind = p->error == 0 ? IMAGE_PULL_DONE : IMAGE_PULL_FAILED;
	ev.digest = p->digest[0] != '\0' ? p->digest : NULL;
	ev.error = p->error;
	ev.message = p->message;
	p->delivered = true;
	if (p->cb != NULL)
		p->cb(&ev, p->arg);	/* may free p: touch nothing after */
}

/* --- teardown ------------------------------------------------------------ */

static void
blob_close(struct blob *b, bool drop_partial)
{
	if (b->fd != -1) {
		close(b->fd);
		b->fd = -1;
	}
	if (b->part != NULL && drop_partial)
		unlink(b->part);
	if (b->lockfd != -1) {
		image_store_unlock_blob(b->store, b->digest, b->lockfd);
		b->lockfd = -1;
	}
}

/*
 * Let go of a blob whose lock thread was started: the thread frees it
 * when it is still waiting, blob_lock_done_cb when it has posted.  A
 * posted lock is dropped now, so it never outlives the pull even if
 * the reactor is freed before that callback runs.
 */
static void
blob_orphan(struct blob *b)
{
	bool	posted;

	pthread_mutex_lock(&lock_mu);
	b->pull = NULL;
	posted = b->posted;
	pthread_mutex_unlock(&lock_mu);
	if (posted)
		blob_close(b, false);
}

/* Stop every transfer, drop locks and the gc hold.  Partials stay for
 * the next pull.  Idempotent. */
static void
teardown(struct image_pull *p)
{
	struct blob	*b;

	if (p->token_req != NULL) {
		req_free(p->token_req);
		p->token_req = NULL;
	}
	if (p->manifest != NULL) {
		req_free(p->manifest);
		p->manifest = NULL;
	}
	while (!TAILQ_EMPTY(&p->waiters)) {
		struct req *r = TAILQ_FIRST(&p->waiters);
		TAILQ_REMOVE(&p->waiters, r, wait_entry);
		r->waiting = false;
	}
	while ((b = TAILQ_FIRST(&p->blobs)) != NULL) {
		TAILQ_REMOVE(&p->blobs, b, entry);
		if (b->req != NULL)
			req_free(b->req);
		if (b->state == B_LOCKING) {
			blob_orphan(b);
			continue;
		}
		blob_close(b, false);
		free(b->part);
		free(b);
	}
	if (p->holdfd != -1) {
		image_store_release(p->holdfd);
		p->holdfd = -1;
	}
	if (p->timer != NULL)
		evtimer_del(p->timer);
	if (p->keep != NULL)
		evtimer_del(p->keep);
}

static void
pull_end(struct image_pull *p, int error, char *message)
{
	struct timeval	tv = { 0, 0 };

	if (p->ended) {
		free(message);
		return;
	}
	p->ended = true;
	p->error = error;
	p->message = message;
	teardown(p);
	evtimer_add(p->finish, &tv);
}

/* Fail the pull with a one-line message (the first failure wins). */
static void
pull_fail(struct image_pull *p, int error, const char *fmt, ...)
{
	va_list	 ap;
	char	*msg;

	if (p->ended)
		return;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		msg = xstrdup("image pull failed");
	va_end(ap);
	/* A login names no image: drop the "<registry>: " prefix. */
	if (p->login && strncmp(msg, p->name, strlen(p->name)) == 0 &&
	    strncmp(msg + strlen(p->name), ": ", 2) == 0)
		memmove(msg, msg + strlen(p->name) + 2,
		    strlen(msg + strlen(p->name) + 2) + 1);
	log_debug("registry: %s", msg);
	pull_end(p, error, msg);
}

/* --- curl on libevent ------------------------------------------------- */

static void	check_done(struct image_pull *);

static void
sock_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct image_pull	*p = arg;
	int			 action = 0, running;

	if (what & EV_READ)
		action |= CURL_CSELECT_IN;
	if (what & EV_WRITE)
		action |= CURL_CSELECT_OUT;
	curl_multi_socket_action(p->multi, fd, action, &running);
	check_done(p);
}

static int
sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *sockp)
{
	struct image_pull	*p = userp;
	struct event		*ev = sockp;
	short			 kind = EV_PERSIST;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (ev != NULL) {
			event_free(ev);
			curl_multi_assign(p->multi, s, NULL);
		}
		return 0;
	}
	if (what & CURL_POLL_IN)
		kind |= EV_READ;
	if (what & CURL_POLL_OUT)
		kind |= EV_WRITE;
	if (ev != NULL) {
		event_del(ev);
		event_assign(ev, p->base, s, kind, sock_event_cb, p);
	} else {
		if ((ev = event_new(p->base, s, kind, sock_event_cb, p)) ==
		    NULL)
			return -1;
		curl_multi_assign(p->multi, s, ev);
	}
	return event_add(ev, NULL) == 0 ? 0 : -1;
}

static void
timeout_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct image_pull	*p = arg;
	int			 running;

	(void)fd;
	(void)what;
	curl_multi_socket_action(p->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(p);
}

static int
timer_cb(CURLM *multi, long ms, void *userp)
{
	struct image_pull	*p = userp;
	struct timeval		 tv;

	(void)multi;
	if (ms < 0)
		return evtimer_del(p->timer) == 0 ? 0 : -1;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	return evtimer_add(p->timer, &tv) == 0 ? 0 : -1;
}

static void
keep_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* --- requests --------------------------------------------------------- */

static void
req_reset_response(struct req *r)
{
	r->status = 0;
	r->body_started = r->to_file = false;
	r->ctype[0] = r->dcd[0] = r->www_auth[0] = r->crange[0] = '\0';
	r->retry_after = -1;
	r->len = 0;
}

static void
req_stop(struct req *r)
{
	if (r->easy != NULL) {
		curl_multi_remove_handle(r->pull->multi, r->easy);
		curl_easy_cleanup(r->easy);
		r->easy = NULL;
	}
	curl_slist_free_all(r->hdrs);
	r->hdrs = NULL;
}

static void
req_free(struct req *r)
{
	if (r == NULL)
		return;
	req_stop(r);
	if (r->waiting)
		TAILQ_REMOVE(&r->pull->waiters, r, wait_entry);
	if (r->retry_ev != NULL)
		event_free(r->retry_ev);
	if (r->blob != NULL)
		r->blob->req = NULL;
	free(r->url);
	free(r->buf);
	free(r->bad);
	free(r);
}

static struct req *
req_new(struct image_pull *p, enum req_kind kind, char *url)
{
	struct req	*r;

	r = xcalloc(1, sizeof(*r));
	r->pull = p;
	r->kind = kind;
	r->url = url;
	r->max = kind == REQ_TOKEN ? TOKEN_MAX : MANIFEST_MAX;
	return r;
}

/* Decide a request's fate from a callback; curl aborts the transfer. */
static void PRINTF(4, 5)
req_bad(struct req *r, int error, bool unlink_partial, const char *fmt, ...)
{
	va_list	ap;

	if (r->bad != NULL)
		return;
	va_start(ap, fmt);
	if (vasprintf(&r->bad, fmt, ap) == -1)
		r->bad = xstrdup("bad response");
	va_end(ap);
	r->bad_error = error;
	r->bad_unlink = unlink_partial;
}

static void
copy_value(char *dst, size_t len, const char *v, size_t vlen)
{
	if (vlen >= len)
		vlen = len - 1;
	memcpy(dst, v, vlen);
	dst[vlen] = '\0';
}

static size_t
header_cb(char *data, size_t size, size_t n, void *arg)
{
	struct req	*r = arg;
	size_t		 len = size * n, nlen;
	const char	*colon, *v, *end;

	end = data + len;
	while (end > data && (end[-1] == '\n' || end[-1] == '\r'))
		end--;
	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		/* A new response (after a redirect or a 401 ...). */
		req_reset_response(r);
		if ((v = memchr(data, ' ', end - data)) != NULL)
			r->status = strtol(v + 1, NULL, 10);
		return len;
	}
	if ((colon = memchr(data, ':', end - data)) == NULL)
		return len;
	nlen = colon - data;
	for (v = colon + 1; v < end && (*v == ' ' || *v == '\t'); v++)
		;
#define IS(name) (nlen == strlen(name) && strncasecmp(data, name, nlen) == 0)
	if (IS("Content-Type"))
		copy_value(r->ctype, sizeof(r->ctype), v, end - v);
	else if (IS("Docker-Content-Digest"))
		copy_value(r->dcd, sizeof(r->dcd), v, end - v);
	else if (IS("Content-Range"))
		copy_value(r->crange, sizeof(r->crange), v, end - v);
	else if (IS("Retry-After"))
		r->retry_after = strtol(v, NULL, 10);	/* dates: ignored */
	else if (IS("WWW-Authenticate") && (r->www_auth[0] == '\0' ||
	    strncasecmp(v, "Bearer", 6) == 0))
		copy_value(r->www_auth, sizeof(r->www_auth), v, end - v);
#undef IS
	return len;
}

/* Keep a body in memory up to r->max (error bodies: a little). */
static size_t
mem_write(struct req *r, const char *data, size_t len)
{
	size_t	max = r->status >= 200 && r->status < 300 ? r->max :
		    ERRBODY_MAX;

	if (r->len + len > max) {
		if (max == ERRBODY_MAX)
			return len;	/* only for messages: drop the rest */
		if (r->kind == REQ_MANIFEST)
			req_bad(r, -EFBIG, false, "%s: manifest %s is larger "
			    "than %u MiB", r->pull->name, r->want[0] != '\0' ?
			    r->want : r->pull->ref.digest[0] != '\0' ?
			    r->pull->ref.digest : r->pull->ref.tag,
			    MANIFEST_MAX >> 20);
		else
			req_bad(r, -EFBIG, false, "%s: token response is too "
			    "large", r->pull->host);
		return 0;
	}
	r->buf = xreallocarray(r->buf, 1, r->len + len + 1);
	memcpy(r->buf + r->len, data, len);
	r->len += len;
	r->buf[r->len] = '\0';
	return len;
}

static void
blob_rewind(struct blob *b)
{
	if (ftruncate(b->fd, 0) == -1 || lseek(b->fd, 0, SEEK_SET) == -1)
		log_warn("registry: %s", b->part);
	sha256_init(&b->sha);
	b->have = b->got = b->reported = 0;
}

/* First body byte of a blob response: decide where the bytes go. */
static bool
blob_body_start(struct req *r)
{
	struct blob	*b = r->blob;
	unsigned long long start;

	if (r->status == 206) {
		/* "bytes <first>-<last>/<total>": must continue our file. */
		if (sscanf(r->crange, "bytes %llu-", &start) != 1 ||
		    start != b->have) {
			blob_rewind(b);
			req_bad(r, -EPROTO, true, "%s: registry answered a "
			    "range request for %s with the wrong range (%s)",
			    r->pull->name, b->digest, r->crange);
			return false;
		}
		r->to_file = true;
	} else if (r->status == 200) {
		if (b->have > 0)	/* Range ignored: start over */
			blob_rewind(b);
		r->to_file = true;
	}
	return true;
}

static size_t
blob_write(struct req *r, const char *data, size_t len)
{
	struct blob	*b = r->blob;
	const char	*s = data;
	size_t		 left = len;
	ssize_t		 w;

	if (b->have + b->got + len > b->size) {
		req_bad(r, -EBADMSG, true, "%s: blob %s is larger than the "
		    "%" PRIu64 " bytes the manifest says", r->pull->name,
		    b->digest, b->size);
		return 0;
	}
	while (left > 0) {
		if ((w = write(b->fd, s, left)) == -1) {
			if (errno == EINTR)
				continue;
			req_bad(r, -errno, false, "%s: cannot write %s: %s",
			    r->pull->name, b->part, strerror(errno));
			return 0;
		}
		s += w;
		left -= w;
	}
	sha256_update(&b->sha, data, len);
	b->got += len;
	if (!b->config && (b->have + b->got - b->reported >= PROGRESS_STEP ||
	    b->have + b->got == b->size)) {
		b->reported = b->have + b->got;
		emit(r->pull, IMAGE_PULL_LAYER_PROGRESS, b->digest,
		    b->reported, b->size);
	}
	return len;
}

static size_t
write_cb(char *data, size_t size, size_t n, void *arg)
{
	struct req	*r = arg;
	size_t		 len = size * n;

	if (r->bad != NULL)
		return 0;
	if (!r->body_started) {
		r->body_started = true;
		if (r->kind == REQ_BLOB && !blob_body_start(r))
			return 0;
	}
	if (r->to_file)
		return blob_write(r, data, len);
	return mem_write(r, data, len);
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	req_start(arg);
}

static void
req_start(struct req *r)
{
	struct image_pull	*p = r->pull;
	char			 range[32];
	CURL			*e;

	req_stop(r);
	req_reset_response(r);
	free(r->bad);
	r->bad = NULL;
	if ((e = r->easy = curl_easy_init()) == NULL) {
		pull_fail(p, -ENOMEM, "%s: out of memory", p->name);
		return;
	}
	curl_easy_setopt(e, CURLOPT_URL, r->url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "smx/" PACKAGE_VERSION);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
	/* Blob GETs redirect to storage hosts; the Authorization we set is
	 * for the registry only, and curl keeps it there unless
	 * CURLOPT_UNRESTRICTED_AUTH is set (it is not). */
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR,
	    p->insecure ? "http,https" : "https");
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)p->stall_s);
	/* A stall: under 1 byte/s for stall_s seconds. */
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)p->stall_s);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	if (r->kind == REQ_TOKEN) {
		if (p->user != NULL) {
			curl_easy_setopt(e, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
			curl_easy_setopt(e, CURLOPT_USERNAME, p->user);
			curl_easy_setopt(e, CURLOPT_PASSWORD, p->pass);
		}
	} else if (p->token != NULL) {
		curl_easy_setopt(e, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
		curl_easy_setopt(e, CURLOPT_XOAUTH2_BEARER, p->token);
	} else if (p->basic) {
		curl_easy_setopt(e, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
		curl_easy_setopt(e, CURLOPT_USERNAME, p->user);
		curl_easy_setopt(e, CURLOPT_PASSWORD, p->pass);
	}
	if (r->kind == REQ_MANIFEST) {
		/* Always every type we read: docker-registry answers 404 for
		 * an OCI manifest when Accept does not list it. */
		r->hdrs = curl_slist_append(NULL, "Accept: " MT_OCI_INDEX
		    ", " MT_OCI_MANIFEST ", " MT_DOCKER_LIST ", "
		    MT_DOCKER_V2);
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
	} else if (r->kind == REQ_BLOB) {
		/* Blobs are stored as sent: no transparent decoding. */
		curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, NULL);
		curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
		if (r->blob->have > 0) {
			snprintf(range, sizeof(range), "%" PRIu64 "-",
			    r->blob->have);
			curl_easy_setopt(e, CURLOPT_RANGE, range);
		}
	}
	if (curl_multi_add_handle(p->multi, e) != CURLM_OK)
		pull_fail(p, -ENOMEM, "%s: cannot start a transfer", p->name);
}

/* Schedule another try after a backoff; false when out of tries. */
static bool
req_retry(struct req *r)
{
	struct image_pull	*p = r->pull;
	struct timeval		 tv;
	uint64_t		 ms;

	if (r->attempt >= p->retries)
		return false;
	ms = (uint64_t)BACKOFF_MS << (r->attempt < 16 ? r->attempt : 16);
	if (ms > BACKOFF_MAX_MS)
		ms = BACKOFF_MAX_MS;
	if ((r->status == 429 || r->status == 503) && r->retry_after >= 0)
		ms = (uint64_t)(r->retry_after < RETRY_AFTER_MAX ?
		    r->retry_after : RETRY_AFTER_MAX) * 1000;
	r->attempt++;
	if (r->kind == REQ_BLOB) {
		/* What arrived stays: the next try asks for the rest. */
		r->blob->have += r->blob->got;
		r->blob->got = 0;
	}
	if (r->retry_ev == NULL)
		r->retry_ev = evtimer_new(p->base, retry_cb, r);
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(r->retry_ev, &tv);
	log_debug("registry: retrying %s in %" PRIu64 " ms", r->url, ms);
	return true;
}

/* --- auth ------------------------------------------------------------- */

/* Find key="value" (or key=value) in a challenge's parameters. */
static char *
challenge_param(const char *s, const char *key)
{
	size_t		 klen = strlen(key);
	const char	*v, *e;

	while (*s != '\0') {
		while (*s == ' ' || *s == ',')
			s++;
		if (strncasecmp(s, key, klen) == 0 && s[klen] == '=') {
			v = s + klen + 1;
			if (*v == '"') {
				v++;
				e = strchr(v, '"');
			} else
				e = v + strcspn(v, ", ");
			if (e == NULL)
				e = v + strlen(v);
			return strndup(v, e - v);
		}
		/* Skip this parameter, quotes included. */
		while (*s != '\0' && *s != ',') {
			if (*s++ == '"') {
				while (*s != '\0' && *s != '"')
					s++;
				if (*s == '"')
					s++;
			}
		}
	}
	return NULL;
}

static void
token_start(struct image_pull *p, const char *challenge)
{
	char	*realm, *service, *scope, *url, *es = NULL, *ec = NULL;
	CURL	*e;

	realm = challenge_param(challenge, "realm");
	service = challenge_param(challenge, "service");
	scope = challenge_param(challenge, "scope");
	/* A login asks for no scope: a token proves the credentials. */
	if (scope == NULL && !p->login)
		xasprintf(&scope, "repository:%s:pull", p->ref.path);
	if ((e = curl_easy_init()) != NULL) {
		if (service != NULL)
			es = curl_easy_escape(e, service, 0);
		if (scope != NULL)
			ec = curl_easy_escape(e, scope, 0);
		curl_easy_cleanup(e);
	}
	xasprintf(&url, "%s%s%s%s%s%s", realm,
	    strchr(realm, '?') != NULL ? "&" : "?",
	    ec != NULL ? "scope=" : "", ec != NULL ? ec : "",
	    es != NULL ? (ec != NULL ? "&service=" : "service=") : "",
	    es != NULL ? es : "");
	curl_free(es);
	curl_free(ec);
	free(realm);
	free(service);
	free(scope);
	p->token_req = req_new(p, REQ_TOKEN, url);
	req_start(p->token_req);
}

/* A 401: find out how to authenticate and retry, or fail. */
static void
req_auth(struct req *r)
{
	struct image_pull	*p = r->pull;
	const char		*c = r->www_auth;
	char			*realm;

	if (r->auth_tries++ >= 2) {
		if (p->user == NULL)
			pull_fail(p, -EACCES, "%s: %s refused access (HTTP 401;"
			    " no credentials for it: smx login %s)", p->name,
			    p->host, p->ref.domain);
		else
			pull_fail(p, -EACCES, "%s: %s rejected %s (HTTP 401)",
			    p->name, p->host, p->creds);
		return;
	}
	if (strncasecmp(c, "Bearer", 6) == 0 &&
	    (realm = challenge_param(c + 6, "realm")) != NULL) {
		bool ok = strncmp(realm, "https://", 8) == 0 ||
		    (p->insecure && strncmp(realm, "http://", 7) == 0);
		free(realm);
		if (!ok) {
			pull_fail(p, -EACCES, "%s: token service of %s is not "
			    "https (mark the registry insecure to allow it)",
			    p->name, p->host);
			return;
		}
		r->waiting = true;
		TAILQ_INSERT_TAIL(&p->waiters, r, wait_entry);
		if (p->token_req == NULL)
			token_start(p, c + 6);
		return;
	}
	if (strncasecmp(c, "Basic", 5) == 0) {
		if (p->user == NULL) {
			pull_fail(p, -EACCES, "%s: %s requires a login (HTTP "
			    "401; no credentials for it: smx login %s)",
			    p->name, p->host, p->ref.domain);
			return;
		}
		if (p->basic && r->auth_tries > 1) {
			pull_fail(p, -EACCES, "%s: %s rejected %s (HTTP 401)",
			    p->name, p->host, p->creds);
			return;
		}
		p->basic = true;
		req_start(r);
		return;
	}
	pull_fail(p, -EACCES, "%s: %s answered 401 without a usable "
	    "token endpoint (WWW-Authenticate: %s)", p->name, p->host,
	    c[0] != '\0' ? c : "none");
}

static void
token_done(struct image_pull *p, struct req *r)
{
	cJSON		*j;
	const cJSON	*t;
	struct req	*w;

	j = cJSON_ParseWithLength((const char *)r->buf, r->len);
	t = cJSON_GetObjectItemCaseSensitive(j, "token");
	if (!cJSON_IsString(t))
		t = cJSON_GetObjectItemCaseSensitive(j, "access_token");
	if (!cJSON_IsString(t) || t->valuestring[0] == '\0') {
		cJSON_Delete(j);
		pull_fail(p, -EPROTO, "%s: token service of %s sent no token",
		    p->name, p->host);
		return;
	}
	free(p->token);
	p->token = xstrdup(t->valuestring);
	cJSON_Delete(j);
	p->token_req = NULL;
	req_free(r);
	while ((w = TAILQ_FIRST(&p->waiters)) != NULL) {
		TAILQ_REMOVE(&p->waiters, w, wait_entry);
		w->waiting = false;
		req_start(w);
	}
}

/* --- manifests -------------------------------------------------------- */

static void
manifest_get(struct image_pull *p, const char *reference, const char *want)
{
	char		*url;
	struct req	*r;

	xasprintf(&url, "%s/manifests/%s", p->v2, reference);
	r = req_new(p, REQ_MANIFEST, url);
	if (want != NULL)
		snprintf(r->want, sizeof(r->want), "%s", want);
	p->manifest = r;
	req_start(r);
}

static bool
platform_matches(struct image_pull *p, const cJSON *plat)
{
	const cJSON	*os, *arch, *var;

	os = cJSON_GetObjectItemCaseSensitive(plat, "os");
	arch = cJSON_GetObjectItemCaseSensitive(plat, "architecture");
	var = cJSON_GetObjectItemCaseSensitive(plat, "variant");
	if (!cJSON_IsString(os) || !cJSON_IsString(arch) ||
	    strcmp(os->valuestring, p->os) != 0 ||
	    strcmp(arch->valuestring, p->arch) != 0)
		return false;
	if (p->variant[0] == '\0')
		return true;
	return cJSON_IsString(var) && strcmp(var->valuestring,
	    p->variant) == 0;
}

static void
index_select(struct image_pull *p, const cJSON *j)
{
	const cJSON	*list, *m, *plat, *d, *os, *arch, *var;
	char		 avail[512] = "", want[100];
	size_t		 n;

	list = cJSON_GetObjectItemCaseSensitive(j, "manifests");
	cJSON_ArrayForEach(m, list) {
		plat = cJSON_GetObjectItemCaseSensitive(m, "platform");
		d = cJSON_GetObjectItemCaseSensitive(m, "digest");
		if (!cJSON_IsString(d) || !image_digest_valid(d->valuestring))
			continue;
		if (platform_matches(p, plat)) {
			p->nested = true;
			manifest_get(p, d->valuestring, d->valuestring);
			return;
		}
		os = cJSON_GetObjectItemCaseSensitive(plat, "os");
		arch = cJSON_GetObjectItemCaseSensitive(plat, "architecture");
		var = cJSON_GetObjectItemCaseSensitive(plat, "variant");
		if (!cJSON_IsString(os) || !cJSON_IsString(arch))
			continue;
		n = strlen(avail);
		snprintf(avail + n, sizeof(avail) - n, "%s%s/%s%s%s",
		    n > 0 ? ", " : "", os->valuestring, arch->valuestring,
		    cJSON_IsString(var) ? "/" : "",
		    cJSON_IsString(var) ? var->valuestring : "");
	}
	snprintf(want, sizeof(want), "%s/%s%s%s", p->os, p->arch,
	    p->variant[0] != '\0' ? "/" : "", p->variant);
	pull_fail(p, -ENOENT, "%s: no image for platform %s (available: %s)",
	    p->name, want, avail[0] != '\0' ? avail : "none");
}

static bool
type_known(const char *const *types, const char *mt)
{
	for (; *types != NULL; types++)
		if (strcmp(*types, mt) == 0)
			return true;
	return false;
}

/*
 * Check a config or layer descriptor of manifest digest: a sha256
 * digest, a sane size, a media type we can use (absent is accepted: the
 * content is sniffed when unpacked).  false after failing the pull.
 */
static bool
desc_check(struct image_pull *p, const char *digest, const cJSON *desc,
    bool config, size_t i)
{
	const cJSON	*d, *s, *mt;
	char		 what[32];

	if (config)
		snprintf(what, sizeof(what), "config");
	else
		snprintf(what, sizeof(what), "layer %zu", i);
	d = cJSON_GetObjectItemCaseSensitive(desc, "digest");
	s = cJSON_GetObjectItemCaseSensitive(desc, "size");
	mt = cJSON_GetObjectItemCaseSensitive(desc, "mediaType");
	if (!cJSON_IsObject(desc) || !cJSON_IsString(d) ||
	    !image_digest_valid(d->valuestring) || !cJSON_IsNumber(s) ||
	    s->valuedouble < 0 || s->valuedouble > 1e15 ||
	    s->valuedouble != (double)(uint64_t)s->valuedouble) {
		pull_fail(p, -EBADMSG, "%s: manifest %s has a malformed %s "
		    "descriptor (want a sha256 digest and a size)", p->name,
		    digest, what);
		return false;
	}
	if (mt != NULL && (!cJSON_IsString(mt) || !type_known(config ?
	    config_types : layer_types, mt->valuestring))) {
		if (config)
			pull_fail(p, -EPROTONOSUPPORT, "%s: manifest %s is not "
			    "a container image (config media type \"%s\")",
			    p->name, digest, cJSON_IsString(mt) ?
			    mt->valuestring : "?");
		else
			pull_fail(p, -EPROTONOSUPPORT, "%s: manifest %s: "
			    "unsupported layer media type \"%s\" (layer %zu)",
			    p->name, digest, cJSON_IsString(mt) ?
			    mt->valuestring : "?", i);
		return false;
	}
	if (config && s->valuedouble > CONFIG_MAX) {
		pull_fail(p, -EFBIG, "%s: config %s is larger than %u MiB",
		    p->name, d->valuestring, CONFIG_MAX >> 20);
		return false;
	}
	return true;
}

/* Queue a checked descriptor's blob (once per digest). */
static void
blob_add(struct image_pull *p, const cJSON *desc, bool config)
{
	const cJSON	*d, *s;
	struct blob	*b;

	d = cJSON_GetObjectItemCaseSensitive(desc, "digest");
	s = cJSON_GetObjectItemCaseSensitive(desc, "size");
	TAILQ_FOREACH(b, &p->blobs, entry)
		if (strcmp(b->digest, d->valuestring) == 0)
			return;	/* one download for a repeated layer */
	b = xcalloc(1, sizeof(*b));
	b->pull = p;
	snprintf(b->digest, sizeof(b->digest), "%s", d->valuestring);
	b->size = (uint64_t)s->valuedouble;
	b->config = config;
	b->fd = b->lockfd = -1;
	b->reactor = p->reactor;
	b->store = p->store;
	TAILQ_INSERT_TAIL(&p->blobs, b, entry);
	p->remaining++;
}

static void
manifest_done(struct image_pull *p, struct req *r)
{
	char		 hex[SHA256_HEX_LEN + 1], digest[72], mt[128];
	const cJSON	*f, *l, *cfg;
	cJSON		*j;
	size_t		 i;
	int		 error;
	bool		 index;

	sha256_buf(r->buf, r->len, hex);
	snprintf(digest, sizeof(digest), "sha256:%s", hex);
	if (r->want[0] != '\0' && strcmp(r->want, digest) != 0) {
		pull_fail(p, -EBADMSG, "%s: manifest %s does not match its "
		    "digest (content is %s)", p->name, r->want, digest);
		return;
	}
	if (strncmp(r->dcd, "sha256:", 7) == 0 && strcmp(r->dcd, digest) != 0) {
		pull_fail(p, -EBADMSG, "%s: manifest digest mismatch: "
		    "registry says %s, content is %s", p->name, r->dcd, digest);
		return;
	}
	if ((j = cJSON_ParseWithLength((const char *)r->buf, r->len)) ==
	    NULL || !cJSON_IsObject(j)) {
		cJSON_Delete(j);
		pull_fail(p, -EBADMSG, "%s: manifest %s is not a JSON object",
		    p->name, digest);
		return;
	}
	/* The media type: Content-Type, else the body's mediaType. */
	copy_value(mt, sizeof(mt), r->ctype, strcspn(r->ctype, "; "));
	f = cJSON_GetObjectItemCaseSensitive(j, "mediaType");
	if (strcmp(mt, MT_OCI_INDEX) && strcmp(mt, MT_DOCKER_LIST) &&
	    strcmp(mt, MT_OCI_MANIFEST) && strcmp(mt, MT_DOCKER_V2) &&
	    cJSON_IsString(f))
		snprintf(mt, sizeof(mt), "%s", f->valuestring);
	if (strcmp(mt, MT_OCI_INDEX) && strcmp(mt, MT_DOCKER_LIST) &&
	    strcmp(mt, MT_OCI_MANIFEST) && strcmp(mt, MT_DOCKER_V2)) {
		pull_fail(p, -EPROTONOSUPPORT, "%s: unsupported manifest "
		    "media type \"%s\" (manifest %s)", p->name,
		    mt[0] != '\0' ? mt : "none", digest);
		goto out;
	}
	index = !strcmp(mt, MT_OCI_INDEX) || !strcmp(mt, MT_DOCKER_LIST);
	if (index && p->nested) {
		pull_fail(p, -EBADMSG, "%s: index %s points at another index",
		    p->name, digest);
		goto out;
	}
	/* Check the whole manifest before anything is stored. */
	f = cJSON_GetObjectItemCaseSensitive(j, index ? "manifests" :
	    "layers");
	if (!cJSON_IsArray(f) || cJSON_GetArraySize(f) == 0) {
		pull_fail(p, -EBADMSG, "%s: %s %s has no %s", p->name,
		    index ? "index" : "manifest", digest, index ?
		    "manifests" : "layers");
		goto out;
	}
	cfg = cJSON_GetObjectItemCaseSensitive(j, "config");
	if (!index && !desc_check(p, digest, cfg, true, 0))
		goto out;
	i = 0;
	cJSON_ArrayForEach(l, f)
		if (!index && !desc_check(p, digest, l, false, i++))
			goto out;
	if ((error = image_store_put_blob(p->store, digest, r->buf,
	    r->len)) != 0) {
		pull_fail(p, error, "%s: cannot store manifest %s: %s",
		    p->name, digest, strerror(-error));
		goto out;
	}
	p->manifest = NULL;
	req_free(r);
	if (index) {
		index_select(p, j);
		goto out;
	}
	snprintf(p->digest, sizeof(p->digest), "%s", digest);
	p->layers = cJSON_GetArraySize(f);
	emit(p, IMAGE_PULL_RESOLVED, p->digest, 0, 0);
	if (p->ended)
		goto out;
	blob_add(p, cfg, true);
	cJSON_ArrayForEach(l, f)
		blob_add(p, l, false);
	schedule(p);
out:
	cJSON_Delete(j);
}

/* --- blobs ------------------------------------------------------------ */

static void	blob_lock_done_cb(void *);

/* Take the blob's store lock (flock blocks) and hand it to the pull,
 * or drop it when the pull is gone: see lock_mu. */
static void *
lock_thread(void *arg)
{
	struct blob	*b = arg;
	int		 fd = -1, error;
	bool		 orphan;

	/* The path was taken on the reactor thread: an orphaned thread
	 * must not touch the store, which may be closed by now. */
	error = b->lockpath_error != 0 ? b->lockpath_error :
	    image_lock_path(b->lockpath, &fd);
	pthread_mutex_lock(&lock_mu);
	b->lock_error = error;
	b->lockfd = error == 0 ? fd : -1;
	if (!(orphan = b->pull == NULL)) {
		if (reactor_post(b->reactor, blob_lock_done_cb, b) != 0)
			fatalx("registry: cannot post to the reactor");
		b->posted = true;
	}
	pthread_mutex_unlock(&lock_mu);
	if (orphan) {
		if (error == 0)
			close(fd);
		free(b);
	}
	return NULL;
}

static void
blob_done(struct image_pull *p, struct blob *b)
{
	b->state = B_DONE;
	p->active--;
	p->remaining--;
	if (!b->config)
		emit(p, IMAGE_PULL_LAYER_DONE, b->digest, b->size, b->size);
	if (!p->ended)
		schedule(p);
}

/*
 * A config must be what image/rootfs.c will read: a JSON object whose
 * rootfs.diff_ids has one sha256 digest per layer.  Checked before it
 * is stored; NULL or a reason (free it).
 */
static char *
config_check(struct image_pull *p, struct blob *b)
{
	uint8_t		*buf;
	size_t		 len;
	cJSON		*j;
	const cJSON	*ids, *it;
	char		*why = NULL;
	int		 error;

	if ((error = read_file(b->part, CONFIG_MAX, &buf, &len)) != 0) {
		xasprintf(&why, "%s: cannot read %s: %s", p->name, b->part,
		    strerror(-error));
		return why;
	}
	j = cJSON_ParseWithLength((const char *)buf, len);
	free(buf);
	ids = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(j, "rootfs"), "diff_ids");
	if (!cJSON_IsObject(j))
		xasprintf(&why, "%s: config %s is not a JSON object", p->name,
		    b->digest);
	else if (!cJSON_IsArray(ids))
		xasprintf(&why, "%s: config %s has no rootfs.diff_ids list",
		    p->name, b->digest);
	else if ((size_t)cJSON_GetArraySize(ids) != p->layers)
		xasprintf(&why, "%s: config %s: rootfs.diff_ids has %d "
		    "entries for the %zu layers of manifest %s", p->name,
		    b->digest, cJSON_GetArraySize(ids), p->layers, p->digest);
	else
		cJSON_ArrayForEach(it, ids)
			if (!cJSON_IsString(it) ||
			    !image_digest_valid(it->valuestring)) {
				xasprintf(&why, "%s: config %s: rootfs.diff_ids "
				    "holds something that is no sha256 digest",
				    p->name, b->digest);
				break;
			}
	cJSON_Delete(j);
	return why;
}

/* Verify a complete partial and move it into the store. */
static void
blob_install(struct image_pull *p, struct blob *b)
{
	uint8_t	 d[SHA256_LEN];
	char	 hex[SHA256_HEX_LEN + 1], *why;
	int	 error;
	uint64_t total = b->have + b->got;

	if (total != b->size) {
		blob_close(b, true);
		pull_fail(p, -EBADMSG, "%s: blob %s is truncated (%" PRIu64
		    " of %" PRIu64 " bytes)", p->name, b->digest, total,
		    b->size);
		return;
	}
	sha256_final(&b->sha, d);
	sha256_hex(d, hex);
	if (strcmp(hex, b->digest + 7) != 0) {
		blob_close(b, true);
		pull_fail(p, -EBADMSG, "%s: blob %s does not match its digest "
		    "(content is sha256:%s)", p->name, b->digest, hex);
		return;
	}
	close(b->fd);
	b->fd = -1;
	if (b->config && (why = config_check(p, b)) != NULL) {
		blob_close(b, true);
		pull_fail(p, -EBADMSG, "%s", why);
		free(why);
		return;
	}
	if ((error = image_store_put_blob_file(p->store, b->digest,
	    b->part)) != 0) {
		blob_close(b, true);
		pull_fail(p, error, "%s: cannot store blob %s: %s", p->name,
		    b->digest, strerror(-error));
		return;
	}
	blob_close(b, false);
	blob_done(p, b);
}

/* Open (or continue) tmp/<hex>.partial, hashing what is already there. */
static int
blob_open_partial(struct image_pull *p, struct blob *b)
{
	struct stat	st;
	uint8_t		buf[65536];
	ssize_t		n;

	xasprintf(&b->part, "%s/%s.partial", image_store_tmpdir(p->store),
	    b->digest + 7);
	if ((b->fd = open(b->part, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) ==
	    -1 || fstat(b->fd, &st) == -1)
		return -errno;
	sha256_init(&b->sha);
	b->have = b->got = 0;
	if ((uint64_t)st.st_size > b->size) {
		blob_rewind(b);
		return 0;
	}
	while ((n = read(b->fd, buf, sizeof(buf))) > 0) {
		sha256_update(&b->sha, buf, n);
		b->have += n;
	}
	if (n == -1)
		return -errno;
	if (b->have > 0)
		log_debug("registry: resuming %s at %" PRIu64, b->digest,
		    b->have);
	return 0;
}

static void
blob_lock_done_cb(void *arg)
{
	struct blob		*b = arg;
	struct image_pull	*p = b->pull;
	char			*url;
	int			 error;

	if (p == NULL) {	/* orphaned after posting: lock dropped */
		free(b);
		return;
	}
	b->state = B_FETCHING;
	if (b->lock_error != 0) {
		pull_fail(p, b->lock_error, "%s: cannot lock blob %s: %s",
		    p->name, b->digest, strerror(-b->lock_error));
		return;
	}
	if (!b->config)
		emit(p, IMAGE_PULL_LAYER_START, b->digest, 0, b->size);
	if (p->ended)
		return;
	/* Another pull may have fetched it while we waited. */
	if (image_store_has_blob(p->store, b->digest)) {
		blob_close(b, false);
		blob_done(p, b);
		return;
	}
	if ((error = blob_open_partial(p, b)) != 0) {
		pull_fail(p, error, "%s: cannot open %s: %s", p->name,
		    b->part, strerror(-error));
		return;
	}
	if (b->have == b->size) {	/* a previous pull got it all */
		blob_install(p, b);
		return;
	}
	xasprintf(&url, "%s/blobs/%s", p->v2, b->digest);
	b->req = req_new(p, REQ_BLOB, url);
	b->req->blob = b;
	req_start(b->req);
}

/* Start queued blobs while slots are free; finish when none is left. */
static void
schedule(struct image_pull *p)
{
	struct blob	*b;
	pthread_t	 t;
	pthread_attr_t	 attr;
	int		 error;

	TAILQ_FOREACH(b, &p->blobs, entry) {
		if (p->active >= p->max_parallel || p->ended)
			break;
		if (b->state != B_QUEUED)
			continue;
		b->state = B_LOCKING;
		p->active++;
		b->lockpath_error = image_store_blob_lock_path(b->store,
		    b->digest, b->lockpath, sizeof(b->lockpath));
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		error = pthread_create(&t, &attr, lock_thread, b);
		pthread_attr_destroy(&attr);
		if (error != 0) {
			b->state = B_QUEUED;
			pull_fail(p, -error, "%s: cannot start a thread: %s",
			    p->name, strerror(error));
			return;
		}
	}
	if (p->remaining == 0 && p->digest[0] != '\0' && !p->ended) {
		if ((error = image_store_set_ref(p->store, &p->ref,
		    p->digest)) != 0) {
			pull_fail(p, error, "%s: cannot set the ref: %s",
			    p->name, strerror(-error));
			return;
		}
		pull_end(p, 0, NULL);
	}
}

/* --- completion --------------------------------------------------------- */

static bool
curl_retryable(CURLcode rc)
{
	switch (rc) {
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_TOO_MANY_REDIRECTS:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_OUT_OF_MEMORY:
	case CURLE_WRITE_ERROR:
		return false;
	default:
		return true;
	}
}

static const char *
req_what(struct req *r, char *buf, size_t len)
{
	if (r->kind == REQ_PING)
		snprintf(buf, len, "%s", r->url);
	else if (r->kind == REQ_BLOB)
		snprintf(buf, len, "blob %s", r->blob->digest);
	else if (r->kind == REQ_MANIFEST)
		snprintf(buf, len, "manifest %s", r->want[0] != '\0' ?
		    r->want : (r->pull->ref.tag[0] != '\0' ?
		    r->pull->ref.tag : r->pull->ref.digest));
	else
		snprintf(buf, len, "token from %s", r->url);
	return buf;
}

/* The distribution spec's error body {"errors":[{"code","message"}]}:
 * ", CODE: message" of its first error, or "". */
static const char *
errbody(struct req *r, char *buf, size_t len)
{
	cJSON		*j;
	const cJSON	*e, *c, *m;
	size_t		 i;

	buf[0] = '\0';
	if (r->buf == NULL || r->len == 0)
		return buf;
	j = cJSON_ParseWithLength((const char *)r->buf, r->len);
	e = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "errors"),
	    0);
	c = cJSON_GetObjectItemCaseSensitive(e, "code");
	m = cJSON_GetObjectItemCaseSensitive(e, "message");
	if (cJSON_IsString(c))
		snprintf(buf, len, ", %s%s%s", c->valuestring,
		    cJSON_IsString(m) ? ": " : "",
		    cJSON_IsString(m) ? m->valuestring : "");
	cJSON_Delete(j);
	for (i = 0; buf[i] != '\0'; i++)	/* one line, printable */
		if ((unsigned char)buf[i] < ' ')
			buf[i] = ' ';
	return buf;
}

/* The reason phrase of the statuses we retry. */
static const char *
status_text(long status)
{
	switch (status) {
	case 408:
		return " Request Timeout";
	case 429:
		return " Too Many Requests";
	case 500:
		return " Internal Server Error";
	case 502:
		return " Bad Gateway";
	case 503:
		return " Service Unavailable";
	case 504:
		return " Gateway Timeout";
	default:
		return "";
	}
}

static void
req_done(struct req *r, CURLcode rc)
{
	struct image_pull	*p = r->pull;
	char			 what[160], why[CURL_ERROR_SIZE + 64];
	char			 eb[256];
	long			 status = 0;

	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	r->status = status;
	req_stop(r);
	req_what(r, what, sizeof(what));
	if (r->bad != NULL) {
		if (r->kind == REQ_BLOB)
			blob_close(r->blob, r->bad_unlink);
		pull_fail(p, r->bad_error, "%s", r->bad);
		return;
	}
	if (rc != CURLE_OK) {
		snprintf(why, sizeof(why), "%s", r->errbuf[0] != '\0' ?
		    r->errbuf : curl_easy_strerror(rc));
		if (curl_retryable(rc) && req_retry(r))
			return;
		if (rc == CURLE_OPERATION_TIMEDOUT &&
		    strstr(why, "too slow") != NULL)
			pull_fail(p, -ETIMEDOUT, "%s: %s stalled: no data for %u"
			    " s (gave up after %u tries)", p->name, what,
			    p->stall_s, r->attempt + 1);
		else if (curl_retryable(rc))
			pull_fail(p, -EIO, "%s: cannot fetch %s: %s (gave up "
			    "after %u tries%s)", p->name, what, why,
			    r->attempt + 1, rc == CURLE_SSL_CONNECT_ERROR &&
			    !p->insecure ? "; a plain-HTTP registry must be "
			    "marked insecure" : "");
		else
			pull_fail(p, -EIO, "%s: cannot fetch %s: %s", p->name,
			    what, why);
		return;
	}
	if (r->kind == REQ_TOKEN && (status == 401 || status == 403)) {
		pull_fail(p, -EACCES, "%s: the token service of %s refused "
		    "%s (HTTP %ld)", p->name, p->host, p->user != NULL ?
		    p->creds : "an anonymous token", status);
		return;
	}
	if (status == 401) {
		req_auth(r);
		return;
	}
	if (status == 408 || status == 429 || status >= 500) {
		if (req_retry(r))
			return;
		pull_fail(p, -EIO, "%s: cannot fetch %s: HTTP %ld%s%s (gave "
		    "up after %u tries)", p->name, what, status,
		    status_text(status), errbody(r, eb, sizeof(eb)),
		    r->attempt + 1);
		return;
	}
	if (status == 416 && r->kind == REQ_BLOB) {
		/* Our partial is bad for the server: start it over. */
		blob_rewind(r->blob);
		if (req_retry(r))
			return;
	}
	if (status == 404 && r->kind != REQ_TOKEN) {
		errbody(r, eb, sizeof(eb));
		if (strncmp(eb, ", NAME_UNKNOWN", 14) == 0)
			pull_fail(p, -ENOENT, "%s: repository %s not found on "
			    "%s (HTTP 404%s)", p->name, p->ref.path, p->host,
			    eb);
		else
			pull_fail(p, -ENOENT, "%s: %s not found (HTTP 404%s)",
			    p->name, what, eb);
		return;
	}
	if (status < 200 || status >= 300) {
		pull_fail(p, status == 403 ? -EACCES : -EIO, "%s: %s refused "
		    "(HTTP %ld%s)", p->name, what, status,
		    errbody(r, eb, sizeof(eb)));
		return;
	}
	switch (r->kind) {
	case REQ_PING:
		pull_end(p, 0, NULL);	/* the credentials passed */
		break;
	case REQ_MANIFEST:
		manifest_done(p, r);
		break;
	case REQ_TOKEN:
		token_done(p, r);
		break;
	case REQ_BLOB: {
		struct blob *b = r->blob;

		req_free(r);
		blob_install(p, b);
		break;
	}
	}
}

static void
check_done(struct image_pull *p)
{
	CURLMsg	*m;
	int	 left;
	struct req *r;

	while (!p->ended && (m = curl_multi_info_read(p->multi, &left)) !=
	    NULL) {
		if (m->msg != CURLMSG_DONE)
			continue;
		r = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &r);
		if (r != NULL)
			req_done(r, m->data.result);
	}
}

/* --- setup ------------------------------------------------------------ */

/*
 * Credentials for the registry: from the auth file or its credential
 * helper.  None found: anonymous.  A broken file or a failing helper
 * fails the pull (once it has started, so the message reaches cb).
 */
static int
load_auth(struct image_pull *p, const char *file, char **why)
{
	char	err[512], src[PATH_MAX];
	int	error;

	error = image_auth_get(file, p->ref.domain, &p->user, &p->pass,
	    src, sizeof(src), err, sizeof(err));
	if (error == 0) {
		snprintf(p->creds, sizeof(p->creds), "the credentials from %s",
		    src);
		return 0;
	}
	if (error == -ENOENT)
		return 0;
	xasprintf(why, "%s: %s", p->name, err);
	return error;
}

static int
parse_platform(struct image_pull *p, const char *s)
{
	if (s == NULL)
		s = "linux/amd64";
	if (sscanf(s, "%31[^/]/%31[^/]/%31s", p->os, p->arch, p->variant) <
	    2)
		return -EINVAL;
	return 0;
}

/* What a pull and a login share: options, curl multi on the reactor's
 * event_base, the keep and finish events.  NULL + errno. */
static struct image_pull *
pull_new(struct reactor *reactor, struct image_store *store,
    const struct image_ref *ref, const struct image_pull_opts *o,
    image_pull_fn cb, void *arg)
{
	struct image_pull_opts	 def;
	struct image_pull	*p;
	const char *const	*h;
	struct timeval		 tv = { 3600, 0 };
	int			 error;

	if (o == NULL || o->size < sizeof(*o)) {
		image_pull_opts_init(&def);
		if (o != NULL)
			memcpy(&def, o, o->size < sizeof(def) ? o->size :
			    sizeof(def));
		def.size = sizeof(def);
		o = &def;
	}
	pthread_once(&curl_once, curl_init_once);
	p = xcalloc(1, sizeof(*p));
	p->reactor = reactor;
	p->base = reactor_base(reactor);
	p->store = store;
	p->ref = *ref;
	p->cb = cb;
	p->arg = arg;
	p->holdfd = -1;
	TAILQ_INIT(&p->waiters);
	TAILQ_INIT(&p->blobs);
	image_ref_familiar(ref, p->name, sizeof(p->name));
	if ((error = parse_platform(p, o->platform)) != 0) {
		log_warnx("registry: bad platform \"%s\" (want os/arch"
		    "[/variant])", o->platform);
		goto err_free;
	}
	p->max_parallel = o->max_parallel > 0 ? o->max_parallel : 3;
	p->retries = o->retries;
	p->stall_s = o->stall_s > 0 ? o->stall_s : 30;
	p->host = image_ref_registry(&p->ref);
	for (h = o->insecure; h != NULL && *h != NULL; h++)
		if (strcmp(*h, p->ref.domain) == 0 || strcmp(*h, p->host) == 0)
			p->insecure = true;
	xasprintf(&p->v2, "%s://%s/v2/%s", p->insecure ? "http" : "https",
	    p->host, p->ref.path);

	if ((p->multi = curl_multi_init()) == NULL) {
		error = -ENOMEM;
		goto err_free;
	}
	curl_multi_setopt(p->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(p->multi, CURLMOPT_SOCKETDATA, p);
	curl_multi_setopt(p->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(p->multi, CURLMOPT_TIMERDATA, p);
	p->timer = evtimer_new(p->base, timeout_event_cb, p);
	p->finish = evtimer_new(p->base, finish_cb, p);
	p->keep = event_new(p->base, -1, EV_PERSIST, keep_cb, p);
	if (p->timer == NULL || p->finish == NULL || p->keep == NULL) {
		error = -ENOMEM;
		goto err_free;
	}
	/* A lock wait on a helper thread registers nothing; this keeps
	 * reactor_run() from returning under it. */
	evtimer_add(p->keep, &tv);
	return p;

err_free:
	p->ended = p->delivered = true;
	p->cb = NULL;
	image_pull_free(p);
	errno = -error;
	return NULL;
}

struct image_pull *
image_pull_start(struct reactor *reactor, struct image_store *store,
    const struct image_ref *ref, const struct image_pull_opts *o,
    image_pull_fn cb, void *arg)
{
	struct image_pull	*p;
	char			*why = NULL;
	int			 error;

	if ((p = pull_new(reactor, store, ref, o, cb, arg)) == NULL)
		return NULL;
	if ((error = image_store_hold(store, &p->holdfd)) != 0) {
		p->ended = p->delivered = true;
		p->cb = NULL;
		image_pull_free(p);
		errno = -error;
		return NULL;
	}
	if ((error = load_auth(p, o != NULL && o->size >= sizeof(*o) ?
	    o->auth_file : NULL, &why)) != 0) {
		pull_fail(p, error, "%s", why);
		free(why);
		return p;
	}
	manifest_get(p, ref->digest[0] != '\0' ? ref->digest : ref->tag,
	    ref->digest[0] != '\0' ? ref->digest : NULL);
	return p;
}

struct image_pull *
image_login_start(struct reactor *reactor, const char *registry,
    const char *user, const char *pass, const struct image_pull_opts *o,
    image_pull_fn cb, void *arg)
{
	struct image_ref	 ref;
	struct image_pull	*p;
	struct req		*r;
	char			*url;

	memset(&ref, 0, sizeof(ref));
	if (snprintf(ref.domain, sizeof(ref.domain), "%s", registry) >=
	    (int)sizeof(ref.domain) || registry[0] == '\0') {
		errno = EINVAL;
		return NULL;
	}
	if ((p = pull_new(reactor, NULL, &ref, o, cb, arg)) == NULL)
		return NULL;
	p->login = true;
	snprintf(p->name, sizeof(p->name), "%s", registry);
	if (user != NULL) {
		p->user = xstrdup(user);
		p->pass = xstrdup(pass != NULL ? pass : "");
		snprintf(p->creds, sizeof(p->creds), "the username or "
		    "password");
	}
	/* p->v2 ends in "/v2/" here: the API root docker login checks. */
	url = xstrdup(p->v2);
	r = req_new(p, REQ_PING, url);
	p->manifest = r;
	req_start(r);
	return p;
}

void
image_pull_free(struct image_pull *p)
{
	struct image_pull_event	ev;

	if (p == NULL)
		return;
	if (!p->ended)
		pull_end(p, -ECANCELED, xstrdup("pull cancelled"));
	if (!p->delivered && p->cb != NULL) {
		/* The final event was not out yet: deliver it now. */
		memset(&ev, 0, sizeof(ev));
		ev.kind = p->error == 0 ? IMAGE_PULL_DONE : IMAGE_PULL_FAILED;
		ev.digest = p->digest[0] != '\0' ? p->digest : NULL;
		ev.error = p->error;
		ev.message = p->message;
		p->delivered = true;
		p->cb(&ev, p->arg);
	}
	teardown(p);
	if (p->multi != NULL)
		curl_multi_cleanup(p->multi);
	if (p->timer != NULL)
		event_free(p->timer);
	if (p->finish != NULL)
		event_free(p->finish);
	if (p->keep != NULL)
		event_free(p->keep);
	free(p->v2);
	free(p->user);
	free(p->pass);
	free(p->token);
	free(p->message);
	free(p);
}
