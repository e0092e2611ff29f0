/*
 * Unit test for image/registry.c and image/auth.c.  Two servers: a tiny
 * HTTP server in a thread that misbehaves on purpose, one repository per
 * fault (wrong blob or manifest digest, truncated blob, oversize,
 * malformed or unknown-type manifests and configs, 401 with and without
 * usable credentials, 404, 429 and 500 once or for good, a stall
 * mid-blob once or for good, bearer token services), and Debian's
 * docker-registry started by tests/registry/start, into which OCI
 * layouts written here are pushed with skopeo (single image,
 * multi-platform index, an htpasswd instance).  Each pull runs in a
 * reactor; every failure's one-line message is compared whole, and the
 * store is checked after it (no ref, no blob, no temp file).
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"
#include "reactor/reactor.h"
#include "tests/tap.h"

/* --- pulling ------------------------------------------------------------ */

struct result {
	struct reactor	*reactor;
	bool		 ended;
	int		 error;
	char		 msg[512];
	char		 digest[72];
	unsigned	 layers_done;
};

static void
pull_cb(const struct image_pull_event *ev, void *arg)
{
	struct result	*r = arg;

	switch (ev->kind) {
	case IMAGE_PULL_LAYER_DONE:
		r->layers_done++;
		break;
	case IMAGE_PULL_DONE:
	case IMAGE_PULL_FAILED:
		r->ended = true;
		r->error = ev->error;
		snprintf(r->msg, sizeof(r->msg), "%s",
		    ev->message != NULL ? ev->message : "");
		snprintf(r->digest, sizeof(r->digest), "%s",
		    ev->digest != NULL ? ev->digest : "");
		break;
	default:
		break;
	}
}

static char	 home[512], work[256];
static struct image_store *store;

/* Pull n refs at once (one reactor); results in res[]. */
static int
pull_many(const char *const *refs, size_t n, struct image_pull_opts *o,
    struct result *res)
{
	struct reactor		*reactor;
	struct image_pull	*pulls[4];
	struct image_ref	 ref;
	char			 err[256];
	size_t			 i;
	int			 rc = -1;

	if ((reactor = reactor_create()) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		memset(&res[i], 0, sizeof(res[i]));
		if (image_ref_parse(refs[i], &ref, err, sizeof(err)) != 0) {
			tap_diag("%s", err);
			goto out;
		}
		pulls[i] = image_pull_start(reactor, store, &ref, o, pull_cb,
		    &res[i]);
		if (pulls[i] == NULL) {
			tap_diag("image_pull_start: %s", strerror(errno));
			goto out;
		}
	}
	if (reactor_run(reactor) != 0)
		goto out;
	rc = 0;
	for (i = 0; i < n; i++) {
		if (!res[i].ended)
			rc = -1;
		image_pull_free(pulls[i]);
		if (res[i].error != 0)
			tap_diag("%s", res[i].msg);
	}
out:
	reactor_free(reactor);
	return rc;
}

static int
pull1(const char *refstr, struct image_pull_opts *o, struct result *res)
{
	return pull_many(&refstr, 1, o, res);
}

static const char *insecure[3];

static void
opts(struct image_pull_opts *o)
{
	image_pull_opts_init(o);
	o->insecure = insecure;
	o->retries = 3;
	o->stall_s = 1;
	o->auth_file = "/nonexistent/config.json";
}

/* Count *.partial files in the store's tmp dir (a failed pull may keep
 * the partials of other blobs it was fetching: they are resumable). */
static int
partials(void)
{
	DIR		*d;
	struct dirent	*e;
	int		 n = 0;

	if ((d = opendir(image_store_tmpdir(store))) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (strstr(e->d_name, ".partial") != NULL)
			n++;
	closedir(d);
	return n;
}

/* --- the misbehaving server ------------------------------------------ */

#define LAYER_LEN	(256u << 10)
#define B64_RIGHT	"c214OnJpZ2h0"	/* base64("smx:right") */

static int	 fake_port;
static char	 fake_host[64];
static uint8_t	 layer[LAYER_LEN];
static char	 layer_digest[72], config_digest[72], manifest_digest[72];
static char	*config_json, *manifest_json;
static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;
static char	 stall_range[64], token_query[256];
static uint64_t	 r429_at[8];

/* A repository that serves a manifest (and config) of its own instead
 * of the good image's: one per hostile case. */
struct variant {
	const char	*repo;
	const char	*ctype;		/* the manifest's Content-Type */
	char		*manifest, mdigest[72];
	char		*config, cdigest[72];	/* NULL: the good config */
	const char	*dcd;		/* Docker-Content-Digest; NULL: true */
};
static struct variant variants[8];
static size_t	 nvariants;

/* Requests counted per name (a repository, "blob:<repo>", "/token");
 * room for every name the fake cases use (about 35). */
static struct {
	char	name[64];
	int	n;
} hits[64];

/* Count a request for name; the count before it. */
static int
hit(const char *name)
{
	size_t	i;
	int	n = 0;

	pthread_mutex_lock(&fake_mu);
	for (i = 0; i < ARRAY_SIZE(hits); i++) {
		if (hits[i].name[0] == '\0')
			snprintf(hits[i].name, sizeof(hits[i].name), "%s",
			    name);
		if (strcmp(hits[i].name, name) == 0) {
			n = hits[i].n++;
			break;
		}
	}
	pthread_mutex_unlock(&fake_mu);
	return n;
}

static int
hits_of(const char *name)
{
	size_t	i;
	int	n = 0;

	pthread_mutex_lock(&fake_mu);
	for (i = 0; i < ARRAY_SIZE(hits); i++)
		if (strcmp(hits[i].name, name) == 0)
			n = hits[i].n;
	pthread_mutex_unlock(&fake_mu);
	return n;
}

static void
xsend(int fd, const void *buf, size_t len)
{
	const char	*p = buf;
	ssize_t		 n;

	while (len > 0 && (n = send(fd, p, len, MSG_NOSIGNAL)) > 0) {
		p += n;
		len -= n;
	}
}

static void
respond(int fd, int status, const char *extra, const void *body,
    size_t len, size_t claimed)
{
	char	hdr[1024];
	int	n;

	n = snprintf(hdr, sizeof(hdr), "HTTP/1.1 %d X\r\nContent-Length: "
	    "%zu\r\n%s\r\n", status, claimed, extra != NULL ? extra : "");
	xsend(fd, hdr, n);
	xsend(fd, body, len);
}

static void
respond_str(int fd, int status, const char *extra, const char *body)
{
	respond(fd, status, extra, body, strlen(body), strlen(body));
}

/* Serve the layer (or a fault); false when the connection is spent. */
static bool
serve_blob(int fd, const char *repo, const char *range)
{
	static uint8_t	bad[LAYER_LEN];
	char		hdr[128], key[80];
	unsigned long	from;
	int		n;

	snprintf(key, sizeof(key), "blob:%s", repo);
	n = hit(key);
	if (strcmp(repo, "wrongdigest") == 0) {
		memcpy(bad, layer, LAYER_LEN);
		bad[100] ^= 1;
		respond(fd, 200, NULL, bad, LAYER_LEN, LAYER_LEN);
		return true;
	}
	if (strcmp(repo, "truncated") == 0) {
		respond(fd, 200, NULL, layer, LAYER_LEN / 2, LAYER_LEN / 2);
		return true;
	}
	if (strcmp(repo, "stall") != 0 && strcmp(repo, "stallforever") != 0) {
		respond(fd, 200, NULL, layer, LAYER_LEN, LAYER_LEN);
		return true;
	}
	pthread_mutex_lock(&fake_mu);
	if (range != NULL)
		snprintf(stall_range, sizeof(stall_range), "%s", range);
	pthread_mutex_unlock(&fake_mu);
	if (n == 0) {
		/* Half, then silence longer than stall_s. */
		respond(fd, 200, NULL, layer, LAYER_LEN / 2, LAYER_LEN);
		sleep(3);
		return false;
	}
	if (range == NULL || sscanf(range, "bytes=%lu-", &from) != 1 ||
	    from > LAYER_LEN) {
		respond(fd, 200, NULL, layer, LAYER_LEN, LAYER_LEN);
		return true;
	}
	snprintf(hdr, sizeof(hdr), "Content-Range: bytes %lu-%u/%u\r\n",
	    from, LAYER_LEN - 1, LAYER_LEN);
	if (strcmp(repo, "stallforever") == 0) {
		/* The headers of the rest, then nothing at all. */
		respond(fd, 206, hdr, "", 0, LAYER_LEN - from);
		sleep(3);
		return false;
	}
	respond(fd, 206, hdr, layer + from, LAYER_LEN - from,
	    LAYER_LEN - from);
	return true;
}

static const struct variant *
variant_of(const char *repo)
{
	size_t	i;

	for (i = 0; i < nvariants; i++)
		if (strcmp(variants[i].repo, repo) == 0)
			return &variants[i];
	return NULL;
}

/* The WWW-Authenticate of a bearer challenge with the token at path. */
static void
bearer_challenge(char *hdr, size_t len, const char *path, const char *scope)
{
	snprintf(hdr, len, "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:"
	    "%d%s\",service=\"fake\"%s%s%s\r\n", fake_port, path,
	    scope != NULL ? ",scope=\"" : "", scope != NULL ? scope : "",
	    scope != NULL ? "\"" : "");
}

/* One request: route on the repository name (the fault to inject). */
static bool
serve_one(int fd, char *req)
{
	char	 method[8], path[512], repo[64], kind[16], ref[128], hdr[512];
	char	*range, *auth, *e;
	const struct variant *v;
	int	 n;

	if (sscanf(req, "%7s %511s", method, path) != 2)
		return false;
	range = strcasestr(req, "\r\nRange: ");
	auth = strcasestr(req, "\r\nAuthorization: ");
	if (range != NULL && (e = strstr(range += 2, "\r\n")) != NULL)
		*e = '\0', range += 7;
	if (auth != NULL && (e = strstr(auth += 2, "\r\n")) != NULL)
		*e = '\0', auth += 15;
	if (strcmp(path, "/v2/") == 0) {
		/* The API root, as a login checks it: bearer via /token2. */
		if (auth != NULL && strcmp(auth, "Bearer t0k") == 0) {
			respond_str(fd, 200, NULL, "{}");
			return true;
		}
		bearer_challenge(hdr, sizeof(hdr), "/token2", NULL);
		respond_str(fd, 401, hdr, "");
		return true;
	}
	if (strncmp(path, "/token", 6) == 0) {
		hit(path[6] == '2' ? "/token2" : "/token");
		if (path[6] == '2') {
			/* Only for smx:right. */
			pthread_mutex_lock(&fake_mu);
			snprintf(token_query, sizeof(token_query), "%s",
			    strchr(path, '?') != NULL ? strchr(path, '?') + 1 :
			    "");
			pthread_mutex_unlock(&fake_mu);
			if (auth == NULL || strcmp(auth, "Basic " B64_RIGHT)) {
				respond_str(fd, 401, NULL, "");
				return true;
			}
		}
		respond_str(fd, 200, NULL, "{\"token\":\"t0k\"}");
		return true;
	}
	if (sscanf(path, "/v2/%63[^/]/%15[^/]/%127s", repo, kind, ref) != 3) {
		respond_str(fd, 404, NULL, "");
		return true;
	}
	n = hit(repo);
	if (strcmp(repo, "noauth") == 0) {
		respond_str(fd, 401, NULL, "");
		return true;
	}
	if (strcmp(repo, "bearer") == 0 &&
	    (auth == NULL || strcmp(auth, "Bearer t0k") != 0)) {
		bearer_challenge(hdr, sizeof(hdr), "/token",
		    "repository:bearer:pull");
		respond_str(fd, 401, hdr, "");
		return true;
	}
	if (strcmp(repo, "bearerauth") == 0 &&
	    (auth == NULL || strcmp(auth, "Bearer t0k") != 0)) {
		bearer_challenge(hdr, sizeof(hdr), "/token2",
		    "repository:bearerauth:pull");
		respond_str(fd, 401, hdr, "");
		return true;
	}
	if (strcmp(repo, "basic") == 0 &&
	    (auth == NULL || strcmp(auth, "Basic " B64_RIGHT) != 0)) {
		respond_str(fd, 401, "WWW-Authenticate: Basic realm=\"fake\"\r\n",
		    "");
		return true;
	}
	if ((strcmp(repo, "flaky") == 0 && n == 0) ||
	    strcmp(repo, "r500") == 0) {
		respond_str(fd, 500, "Content-Type: application/json\r\n",
		    "{\"errors\":[{\"code\":\"UNKNOWN\",\"message\":\"boom\"}]}");
		return true;
	}
	if (strcmp(repo, "flaky") == 0 && n == 1) {
		respond_str(fd, 503, "Retry-After: 0\r\n", "");
		return true;
	}
	if ((strcmp(repo, "r429once") == 0 && n == 0) ||
	    strcmp(repo, "r429plain") == 0) {
		respond_str(fd, 429, NULL, "");
		return true;
	}
	if (strcmp(repo, "r429") == 0) {
		if (n < (int)ARRAY_SIZE(r429_at))
			r429_at[n] = now_ns();
		respond_str(fd, 429, "Retry-After: 1\r\n", "");
		return true;
	}
	if (strcmp(repo, "norepo") == 0) {
		respond_str(fd, 404, "Content-Type: application/json\r\n",
		    "{\"errors\":[{\"code\":\"NAME_UNKNOWN\",\"message\":"
		    "\"repository name not known to registry\"}]}");
		return true;
	}
	v = variant_of(repo);
	if (strcmp(kind, "manifests") == 0) {
		if (strcmp(ref, "latest") != 0 &&
		    strcmp(ref, v != NULL ? v->mdigest : manifest_digest)) {
			respond_str(fd, 404, NULL, "");
			return true;
		}
		snprintf(hdr, sizeof(hdr), "Content-Type: %s\r\n"
		    "Docker-Content-Digest: %s\r\n", v != NULL ? v->ctype :
		    "application/vnd.oci.image.manifest.v1+json",
		    v != NULL ? (v->dcd != NULL ? v->dcd : v->mdigest) :
		    manifest_digest);
		respond_str(fd, 200, hdr, v != NULL ? v->manifest :
		    manifest_json);
	} else if (strcmp(ref, config_digest) == 0)
		respond_str(fd, 200, NULL, config_json);
	else if (v != NULL && v->config != NULL &&
	    strcmp(ref, v->cdigest) == 0)
		respond_str(fd, 200, NULL, v->config);
	else if (strcmp(ref, layer_digest) == 0)
		return serve_blob(fd, repo, range);
	else
		respond_str(fd, 404, NULL, "");
	return true;
}

static void *
conn_thread(void *arg)
{
	int	 fd = (int)(intptr_t)arg;
	char	 buf[8192], *end;
	size_t	 len = 0;
	ssize_t	 n;

	buf[0] = '\0';
	for (;;) {
		while ((end = strstr(buf, "\r\n\r\n")) == NULL || len == 0) {
			if (len >= sizeof(buf) - 1 ||
			    (n = recv(fd, buf + len, sizeof(buf) - 1 - len,
			    0)) <= 0)
				goto out;
			len += n;
			buf[len] = '\0';
		}
		end[2] = '\0';
		if (!serve_one(fd, buf))
			break;
		len -= end + 4 - buf;
		memmove(buf, end + 4, len);
		buf[len] = '\0';
	}
out:
	close(fd);
	return NULL;
}

static void *
accept_thread(void *arg)
{
	int		 lfd = (int)(intptr_t)arg, fd;
	pthread_t	 t;

	while ((fd = accept(lfd, NULL, NULL)) != -1) {
		if (pthread_create(&t, NULL, conn_thread,
		    (void *)(intptr_t)fd) != 0) {
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
	return NULL;
}

static char *
descriptor(const char *mt, const char *digest, size_t size)
{
	char	*s;

	xasprintf(&s, "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu}",
	    mt, digest, size);
	return s;
}

static void
digest_of(const void *buf, size_t len, char out[72])
{
	char	hex[SHA256_HEX_LEN + 1];

	sha256_buf(buf, len, hex);
	snprintf(out, 72, "sha256:%s", hex);
}

#define MT_CONFIG	"application/vnd.oci.image.config.v1+json"
#define MT_LAYER	"application/vnd.oci.image.layer.v1.tar"
#define MT_MANIFEST	"application/vnd.oci.image.manifest.v1+json"

/* An OCI manifest of one config and the fake layer, plus extra JSON. */
static char *
fake_manifest(const char *ctype, const char *cdigest, size_t csize,
    const char *ltype, const char *extra)
{
	char	*cd, *ld, *m;

	cd = descriptor(ctype, cdigest, csize);
	ld = descriptor(ltype, layer_digest, LAYER_LEN);
	xasprintf(&m, "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST
	    "\",\"config\":%s,\"layers\":[%s]%s}", cd, ld, extra);
	free(cd);
	free(ld);
	return m;
}

/* Add a variant repository; manifest (taken) is hashed here. */
static struct variant *
variant_add(const char *repo, const char *ctype, char *manifest)
{
	struct variant	*v = &variants[nvariants++];

	v->repo = repo;
	v->ctype = ctype;
	v->manifest = manifest;
	digest_of(manifest, strlen(manifest), v->mdigest);
	return v;
}

static void
variants_make(void)
{
	struct variant	*v;
	char		*pad, *extra, *cfg;
	size_t		 n = (4u << 20) + 4096;

	variant_add("badjson", MT_MANIFEST,
	    xstrdup("{\"schemaVersion\":2,\"layers\":["));
	/* Valid JSON, but over the 4 MiB limit. */
	pad = xmalloc(n + 1);
	memset(pad, 'x', n);
	pad[n] = '\0';
	xasprintf(&extra, ",\"annotations\":{\"pad\":\"%s\"}", pad);
	free(pad);
	variant_add("huge", MT_MANIFEST, fake_manifest(MT_CONFIG,
	    config_digest, strlen(config_json), MT_LAYER, extra));
	free(extra);
	variant_add("mediatype", "application/vnd.example.thing.v1+json",
	    xstrdup("{\"schemaVersion\":2,\"mediaType\":"
	    "\"application/vnd.example.thing.v1+json\"}"));
	variant_add("layertype", MT_MANIFEST, fake_manifest(MT_CONFIG,
	    config_digest, strlen(config_json),
	    "application/vnd.cncf.helm.chart.content.v1.tar+gzip", ""));
	variant_add("configtype", MT_MANIFEST, fake_manifest(
	    "application/vnd.cncf.helm.config.v1+json", config_digest,
	    strlen(config_json), MT_LAYER, ""));
	cfg = xstrdup("{\"architecture\":\"amd64\",\"rootfs\":");
	v = variant_add("badconfig", MT_MANIFEST, xstrdup(""));
	v->config = cfg;
	digest_of(cfg, strlen(cfg), v->cdigest);
	free(v->manifest);
	v->manifest = fake_manifest(MT_CONFIG, v->cdigest, strlen(cfg),
	    MT_LAYER, "");
	digest_of(v->manifest, strlen(v->manifest), v->mdigest);
	v = variant_add("mdigest", MT_MANIFEST, xstrdup(manifest_json));
	v->dcd = "sha256:0000000000000000000000000000000000000000000000000000"
	    "000000000000";
}

static int
fake_start(void)
{
	struct sockaddr_in	 sin;
	socklen_t		 sl = sizeof(sin);
	pthread_t		 t;
	char			*cfg;
	int			 lfd;
	size_t			 i;
	uint32_t		 x = 12345;

	for (i = 0; i < LAYER_LEN; i++) {
		x = x * 1103515245 + 12345;
		layer[i] = x >> 16;
	}
	digest_of(layer, LAYER_LEN, layer_digest);
	/* The layer counts as an uncompressed tar: its diff id is its
	 * digest. */
	xasprintf(&cfg, "{\"architecture\":\"amd64\",\"os\":\"linux\","
	    "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"%s\"]}}",
	    layer_digest);
	config_json = cfg;
	digest_of(config_json, strlen(config_json), config_digest);
	manifest_json = fake_manifest(MT_CONFIG, config_digest,
	    strlen(config_json), MT_LAYER, "");
	digest_of(manifest_json, strlen(manifest_json), manifest_digest);
	variants_make();

	if ((lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(lfd, 64) == -1 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &sl) == -1)
		return -1;
	fake_port = ntohs(sin.sin_port);
	snprintf(fake_host, sizeof(fake_host), "127.0.0.1:%d", fake_port);
	insecure[0] = fake_host;
	return pthread_create(&t, NULL, accept_thread, (void *)(intptr_t)lfd);
}

static char	 last_name[256];

static int
fake_pull(const char *repo, const char *tag, struct result *res,
    struct image_pull_opts *o)
{
	snprintf(last_name, sizeof(last_name), "127.0.0.1:%d/%s%s%s",
	    fake_port, repo, tag[0] == '@' ? "" : ":", tag);
	return pull1(last_name, o, res);
}

/* The message of the last fake pull must be "<ref>: " + the rest. */
static bool PRINTF(2, 3)
msg_is(const struct result *r, const char *fmt, ...)
{
	char	want[1100], rest[768];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(rest, sizeof(rest), fmt, ap);
	va_end(ap);
	snprintf(want, sizeof(want), "%s: %s", last_name, rest);
	if (strcmp(r->msg, want) == 0)
		return true;
	tap_diag("message:  %s", r->msg);
	tap_diag("expected: %s", want);
	return false;
}

/* After a failed pull: no ref for it, and of blob (when not NULL)
 * neither a stored copy nor a partial; no temp file left in tmp/. */
static bool
store_clean(const char *blob)
{
	struct image_ref ir;
	char		 err[256], d[72], path[512];
	DIR		*dir;
	struct dirent	*e;
	bool		 ok = true;

	if (image_ref_parse(last_name, &ir, err, sizeof(err)) != 0 ||
	    image_store_get_ref(store, &ir, d, sizeof(d)) != -ENOENT) {
		tap_diag("a ref is set for %s", last_name);
		ok = false;
	}
	if (blob != NULL) {
		snprintf(path, sizeof(path), "%s/%s.partial",
		    image_store_tmpdir(store), blob + 7);
		if (image_store_has_blob(store, blob) ||
		    access(path, F_OK) == 0) {
			tap_diag("%s is in the store or partial", blob);
			ok = false;
		}
	}
	if ((dir = opendir(image_store_tmpdir(store))) == NULL)
		return false;
	while ((e = readdir(dir)) != NULL)
		if (strstr(e->d_name, ".tmp") != NULL) {
			tap_diag("left in tmp/: %s", e->d_name);
			ok = false;
		}
	closedir(dir);
	return ok;
}

static int
test_fake_ok_bearer(void)
{
	struct image_pull_opts	o;
	struct result		r;
	char			d[72];
	struct image_ref	ir;
	char			err[128];

	opts(&o);
	TAP_CHECK(fake_pull("bearer", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == 0);
	TAP_CHECK(strcmp(r.digest, manifest_digest) == 0);
	TAP_CHECK(hits_of("/token") >= 1);
	TAP_CHECK(image_store_has_blob(store, layer_digest));
	TAP_CHECK(image_store_has_blob(store, config_digest));
	TAP_CHECK(r.layers_done == 1);
	TAP_CHECK(image_ref_parse(last_name, &ir, err, sizeof(err)) == 0);
	TAP_CHECK(image_store_get_ref(store, &ir, d, sizeof(d)) == 0);
	TAP_CHECK(strcmp(d, manifest_digest) == 0);
	return TAP_PASS;
}

/* Drop the fake image's blobs (and partials) so the next case downloads
 * again. */
static void
forget_fake(void)
{
	char	path[512];

	if (image_store_blob_path(store, layer_digest, path,
	    sizeof(path)) == 0)
		unlink(path);
	if (image_store_blob_path(store, config_digest, path,
	    sizeof(path)) == 0)
		unlink(path);
	snprintf(path, sizeof(path), "%s/%s.partial",
	    image_store_tmpdir(store), layer_digest + 7);
	unlink(path);
}

static int
test_fake_wrong_digest(void)
{
	struct image_pull_opts	o;
	struct result		r;
	uint8_t			*bad = xmalloc(LAYER_LEN);
	char			 d[72];

	forget_fake();
	opts(&o);
	memcpy(bad, layer, LAYER_LEN);
	bad[100] ^= 1;
	digest_of(bad, LAYER_LEN, d);
	free(bad);
	TAP_CHECK(fake_pull("wrongdigest", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EBADMSG);
	TAP_CHECK(msg_is(&r, "blob %s does not match its digest (content is "
	    "%s)", layer_digest, d));
	TAP_CHECK(store_clean(layer_digest));
	return TAP_PASS;
}

static int
test_fake_manifest_digest(void)
{
	struct image_pull_opts	o;
	struct result		r;
	const struct variant	*v = variant_of("mdigest");

	opts(&o);
	TAP_CHECK(fake_pull("mdigest", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EBADMSG);
	TAP_CHECK(msg_is(&r, "manifest digest mismatch: registry says %s, "
	    "content is %s", v->dcd, manifest_digest));
	TAP_CHECK(store_clean(NULL));
	return TAP_PASS;
}

static int
test_fake_truncated(void)
{
	struct image_pull_opts	o;
	struct result		r;

	forget_fake();
	opts(&o);
	TAP_CHECK(fake_pull("truncated", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EBADMSG);
	TAP_CHECK(msg_is(&r, "blob %s is truncated (%u of %u bytes)",
	    layer_digest, LAYER_LEN / 2, LAYER_LEN));
	TAP_CHECK(store_clean(layer_digest));
	return TAP_PASS;
}

/* Manifests and configs that are no use: refused before any blob of
 * theirs is stored. */
static int
test_fake_bad_manifests(void)
{
	struct image_pull_opts	o;
	struct result		r;
	const struct variant	*v;

	forget_fake();
	opts(&o);
	v = variant_of("badjson");
	TAP_CHECK(fake_pull("badjson", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EBADMSG);
	TAP_CHECK(msg_is(&r, "manifest %s is not a JSON object", v->mdigest));
	TAP_CHECK(store_clean(v->mdigest));

	v = variant_of("huge");
	TAP_CHECK(fake_pull("huge", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EFBIG);
	TAP_CHECK(msg_is(&r, "manifest latest is larger than 4 MiB"));
	TAP_CHECK(store_clean(v->mdigest));

	v = variant_of("mediatype");
	TAP_CHECK(fake_pull("mediatype", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EPROTONOSUPPORT);
	TAP_CHECK(msg_is(&r, "unsupported manifest media type \"%s\" "
	    "(manifest %s)", v->ctype, v->mdigest));
	TAP_CHECK(store_clean(v->mdigest));

	v = variant_of("layertype");
	TAP_CHECK(fake_pull("layertype", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EPROTONOSUPPORT);
	TAP_CHECK(msg_is(&r, "manifest %s: unsupported layer media type "
	    "\"application/vnd.cncf.helm.chart.content.v1.tar+gzip\" "
	    "(layer 0)", v->mdigest));
	TAP_CHECK(store_clean(v->mdigest));
	TAP_CHECK(store_clean(layer_digest));

	v = variant_of("configtype");
	TAP_CHECK(fake_pull("configtype", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EPROTONOSUPPORT);
	TAP_CHECK(msg_is(&r, "manifest %s is not a container image (config "
	    "media type \"application/vnd.cncf.helm.config.v1+json\")",
	    v->mdigest));
	TAP_CHECK(store_clean(v->mdigest));

	/* A config that is not JSON: never stored, no ref. */
	v = variant_of("badconfig");
	TAP_CHECK(fake_pull("badconfig", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EBADMSG);
	TAP_CHECK(msg_is(&r, "config %s is not a JSON object", v->cdigest));
	TAP_CHECK(store_clean(v->cdigest));
	return TAP_PASS;
}

static int
test_fake_retry(void)
{
	struct image_pull_opts	o;
	struct result		r;

	forget_fake();
	opts(&o);
	TAP_CHECK(fake_pull("flaky", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == 0);
	TAP_CHECK(hits_of("flaky") >= 3);
	TAP_CHECK(image_store_has_blob(store, layer_digest));
	/* A 429 without Retry-After: backoff, then success. */
	forget_fake();
	TAP_CHECK(fake_pull("r429once", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == 0);
	TAP_CHECK(hits_of("r429once") >= 2);
	return TAP_PASS;
}

/* 429 and 500 that persist: every try is made, then one clear line. */
static int
test_fake_persistent(void)
{
	struct image_pull_opts	o;
	struct result		r;
	int			i;

	opts(&o);
	o.retries = 2;
	TAP_CHECK(fake_pull("r429", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EIO);
	TAP_CHECK(msg_is(&r, "cannot fetch manifest latest: HTTP 429 Too Many "
	    "Requests (gave up after 3 tries)"));
	TAP_CHECK(hits_of("r429") == 3);
	/* Retry-After: 1 was waited for (a lower bound: never flaky). */
	for (i = 1; i < 3; i++) {
		tap_diag("429 retry %d after %.0f ms", i,
		    (r429_at[i] - r429_at[i - 1]) / 1e6);
		TAP_CHECK(r429_at[i] - r429_at[i - 1] >= 900000000ull);
	}
	TAP_CHECK(store_clean(NULL));

	TAP_CHECK(fake_pull("r429plain", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EIO);
	TAP_CHECK(msg_is(&r, "cannot fetch manifest latest: HTTP 429 Too Many "
	    "Requests (gave up after 3 tries)"));
	TAP_CHECK(hits_of("r429plain") == 3);

	TAP_CHECK(fake_pull("r500", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EIO);
	TAP_CHECK(msg_is(&r, "cannot fetch manifest latest: HTTP 500 Internal "
	    "Server Error, UNKNOWN: boom (gave up after 3 tries)"));
	TAP_CHECK(hits_of("r500") == 3);
	TAP_CHECK(store_clean(NULL));
	return TAP_PASS;
}

static int
test_fake_stall_resume(void)
{
	struct image_pull_opts	o;
	struct result		r;
	char			want[64];

	forget_fake();
	opts(&o);
	TAP_CHECK(fake_pull("stall", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == 0);
	TAP_CHECK(hits_of("blob:stall") == 2);
	snprintf(want, sizeof(want), "bytes=%u-", LAYER_LEN / 2);
	tap_diag("resumed with Range: %s", stall_range);
	TAP_CHECK(strcmp(stall_range, want) == 0);
	TAP_CHECK(image_store_has_blob(store, layer_digest));
	TAP_CHECK(partials() == 0);
	return TAP_PASS;
}

/* A server that keeps stalling: a timeout error; what arrived stays as
 * a partial for the next pull (never as a blob). */
static int
test_fake_stall_forever(void)
{
	struct image_pull_opts	o;
	struct result		r;
	struct stat		st;
	char			path[512];

	forget_fake();
	opts(&o);
	o.retries = 2;
	TAP_CHECK(fake_pull("stallforever", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -ETIMEDOUT);
	TAP_CHECK(msg_is(&r, "blob %s stalled: no data for 1 s (gave up after "
	    "3 tries)", layer_digest));
	TAP_CHECK(hits_of("blob:stallforever") == 3);
	TAP_CHECK(!image_store_has_blob(store, layer_digest));
	snprintf(path, sizeof(path), "%s/%s.partial",
	    image_store_tmpdir(store), layer_digest + 7);
	TAP_CHECK(stat(path, &st) == 0 && st.st_size == LAYER_LEN / 2);
	forget_fake();
	TAP_CHECK(store_clean(layer_digest));
	return TAP_PASS;
}

/* Write an auth file for the fake registry with user:pass. */
static const char *
fake_auth_file(const char *user_pass)
{
	static char	 path[512];
	char		 cmd[1024];

	snprintf(path, sizeof(path), "%s/fake-auth.json", work);
	snprintf(cmd, sizeof(cmd), "printf '{\"auths\":{\"%s\":{\"auth\":"
	    "\"%%s\"}}}' \"$(printf %%s '%s' | base64)\" >%s", fake_host,
	    user_pass, path);
	if (system(cmd) != 0)
		return NULL;
	return path;
}

static int
test_fake_401(void)
{
	struct image_pull_opts	o;
	struct result		r;

	forget_fake();
	opts(&o);
	TAP_CHECK(fake_pull("noauth", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EACCES);
	TAP_CHECK(msg_is(&r, "%s answered 401 without a usable token endpoint "
	    "(WWW-Authenticate: none)", fake_host));
	TAP_CHECK(store_clean(layer_digest));

	/* Basic: no credentials, wrong ones, right ones. */
	TAP_CHECK(fake_pull("basic", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EACCES);
	TAP_CHECK(msg_is(&r, "%s requires a login (HTTP 401; no credentials "
	    "for it: smx login %s)", fake_host, fake_host));
	TAP_CHECK(store_clean(layer_digest));
	TAP_CHECK((o.auth_file = fake_auth_file("smx:wrong")) != NULL);
	TAP_CHECK(fake_pull("basic", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EACCES);
	TAP_CHECK(msg_is(&r, "%s rejected the credentials from %s (HTTP 401)",
	    fake_host, o.auth_file));
	TAP_CHECK(store_clean(layer_digest));

	/* Bearer whose token service checks the credentials. */
	TAP_CHECK(fake_pull("bearerauth", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EACCES);
	TAP_CHECK(msg_is(&r, "the token service of %s refused the credentials "
	    "from %s (HTTP 401)", fake_host, o.auth_file));
	TAP_CHECK(store_clean(layer_digest));

	TAP_CHECK((o.auth_file = fake_auth_file("smx:right")) != NULL);
	TAP_CHECK(fake_pull("basic", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == 0);
	forget_fake();
	TAP_CHECK(fake_pull("bearerauth", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == 0);
	return TAP_PASS;
}

static int
test_fake_404(void)
{
	struct image_pull_opts	o;
	struct result		r;

	opts(&o);
	TAP_CHECK(fake_pull("plain", "nosuchtag", &r, &o) == 0);
	TAP_CHECK(r.error == -ENOENT);
	TAP_CHECK(msg_is(&r, "manifest nosuchtag not found (HTTP 404)"));
	TAP_CHECK(store_clean(NULL));
	TAP_CHECK(fake_pull("norepo", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -ENOENT);
	TAP_CHECK(msg_is(&r, "repository norepo not found on %s (HTTP 404, "
	    "NAME_UNKNOWN: repository name not known to registry)",
	    fake_host));
	TAP_CHECK(store_clean(NULL));
	return TAP_PASS;
}

/* Run a login check to the end. */
static int
login1(const char *host, const char *user, const char *pass,
    struct image_pull_opts *o, struct result *res)
{
	struct reactor		*reactor;
	struct image_pull	*p;
	int			 rc = -1;

	memset(res, 0, sizeof(*res));
	if ((reactor = reactor_create()) == NULL)
		return -1;
	if ((p = image_login_start(reactor, host, user, pass, o, pull_cb,
	    res)) != NULL && reactor_run(reactor) == 0 && res->ended)
		rc = 0;
	image_pull_free(p);
	reactor_free(reactor);
	return rc;
}

/* A login through a bearer token service: no scope asked for. */
static int
test_fake_login(void)
{
	struct image_pull_opts	o;
	struct result		r;
	char			want[256];

	opts(&o);
	TAP_CHECK(login1(fake_host, "smx", "wrong", &o, &r) == 0);
	TAP_CHECK(r.error == -EACCES);
	snprintf(want, sizeof(want), "the token service of %s refused the "
	    "username or password (HTTP 401)", fake_host);
	tap_diag("%s", r.msg);
	TAP_CHECK(strcmp(r.msg, want) == 0);
	TAP_CHECK(login1(fake_host, "smx", "right", &o, &r) == 0);
	TAP_CHECK(r.error == 0);
	tap_diag("token query: %s", token_query);
	TAP_CHECK(strcmp(token_query, "service=fake") == 0);
	return TAP_PASS;
}

/* --- docker-registry -------------------------------------------------- */

static char	 reg[64], reg_auth[64];
static pid_t	 reg_pid[2];
static bool	 have_tools;

static void
stop_registries(void)
{
	int	i;

	for (i = 0; i < 2; i++)
		if (reg_pid[i] > 0) {
			kill(reg_pid[i], SIGTERM);
			waitpid(reg_pid[i], NULL, 0);
		}
}

/* Run tests/registry/start [args]; the address it prints goes to addr. */
static int
registry_start(int i, const char *auth, char *addr, size_t len)
{
	const char	*src = getenv("top_srcdir");
	char		 script[512];
	int		 p[2];
	FILE		*f;

	snprintf(script, sizeof(script), "%s/tests/registry/start",
	    src != NULL ? src : ".");
	if (pipe(p) == -1)
		return -1;
	if ((reg_pid[i] = fork()) == 0) {
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		if (auth != NULL)
			execl(script, script, "--auth", "smx", auth,
			    (char *)NULL);
		else
			execl(script, script, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	f = fdopen(p[0], "r");
	if (f == NULL || fgets(addr, len, f) == NULL) {
		if (f != NULL)
			fclose(f);
		return -1;
	}
	fclose(f);
	addr[strcspn(addr, "\n")] = '\0';
	return 0;
}

static int
run(const char *cmd)
{
	char	*full;
	int	 rc;

	xasprintf(&full, "%s >>%s/cmd.log 2>&1", cmd, work);
	rc = system(full);
	free(full);
	if (rc != 0)
		tap_diag("failed (see %s/cmd.log): %s", work, cmd);
	return rc == 0 ? 0 : -1;
}

/* Write a blob into the layout; its descriptor JSON goes to *desc. */
static void
layout_blob(const char *dir, const char *mt, const void *buf, size_t len,
    char **desc, char digest[72])
{
	char	 path[512];
	FILE	*f;

	digest_of(buf, len, digest);
	snprintf(path, sizeof(path), "%s/blobs/sha256/%s", dir, digest + 7);
	if ((f = fopen(path, "w")) != NULL) {
		fwrite(buf, 1, len, f);
		fclose(f);
	}
	*desc = descriptor(mt, digest, len);
}

/* An image manifest (for arch) with nlayers random layers of lsize. */
static char *
layout_image(const char *dir, const char *arch, unsigned nlayers,
    size_t lsize, uint32_t seed, char mdigest[72])
{
	char	*cfg, *cdesc, *ldescs = xstrdup(""), *ld, *m, *mdesc, *t;
	char	*ids = xstrdup(""), d[72];
	uint8_t	*buf = xmalloc(lsize);
	unsigned i;
	size_t	 j;

	for (i = 0; i < nlayers; i++) {
		for (j = 0; j < lsize; j++) {
			seed = seed * 1664525 + 1013904223;
			buf[j] = seed >> 24;
		}
		layout_blob(dir, "application/vnd.oci.image.layer.v1.tar",
		    buf, lsize, &ld, d);
		xasprintf(&t, "%s%s%s", ldescs, i > 0 ? "," : "", ld);
		free(ldescs);
		free(ld);
		ldescs = t;
		/* Uncompressed "tar": the diff id is the blob's digest. */
		xasprintf(&t, "%s%s\"%s\"", ids, i > 0 ? "," : "", d);
		free(ids);
		ids = t;
	}
	xasprintf(&cfg, "{\"architecture\":\"%s\",\"os\":\"linux\","
	    "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[%s]},"
	    "\"seed\":%u}", arch, ids, seed);
	free(ids);
	layout_blob(dir, "application/vnd.oci.image.config.v1+json", cfg,
	    strlen(cfg), &cdesc, d);
	xasprintf(&m, "{\"schemaVersion\":2,\"mediaType\":\"application/vnd."
	    "oci.image.manifest.v1+json\",\"config\":%s,\"layers\":[%s]}",
	    cdesc, ldescs);
	layout_blob(dir, "application/vnd.oci.image.manifest.v1+json", m,
	    strlen(m), &mdesc, mdigest);
	/* Add the platform for use in an index. */
	t = mdesc;
	mdesc[strlen(mdesc) - 1] = '\0';
	xasprintf(&mdesc, "%s,\"platform\":{\"architecture\":\"%s\","
	    "\"os\":\"linux\"}}", t, arch);
	free(t);
	free(cfg);
	free(cdesc);
	free(ldescs);
	free(m);
	free(buf);
	return mdesc;
}

static void
layout_index(const char *dir, const char *desc, const char *tag)
{
	char	 path[512], *d;
	FILE	*f;

	/* Tag it with the ref.name annotation skopeo's oci: transport uses. */
	d = xstrdup(desc);
	d[strlen(d) - 1] = '\0';
	snprintf(path, sizeof(path), "%s/index.json", dir);
	if ((f = fopen(path, "w")) != NULL) {
		fprintf(f, "{\"schemaVersion\":2,\"manifests\":[%s,"
		    "\"annotations\":{\"org.opencontainers.image.ref.name\":"
		    "\"%s\"}}]}", d, tag);
		fclose(f);
	}
	snprintf(path, sizeof(path), "%s/oci-layout", dir);
	if ((f = fopen(path, "w")) != NULL) {
		fputs("{\"imageLayoutVersion\":\"1.0.0\"}", f);
		fclose(f);
	}
	free(d);
}

static char	 single_digest[72], amd64_digest[72], arm64_digest[72];
static char	 index_digest[72];

static int
registry_setup(void)
{
	char	 cmd[1024], dir[512], *desc, *a, *b, *idx, *idesc;
	char	 conf[512];
	FILE	*f;

	if (reg[0] != '\0')
		return 0;
	if (!have_tools)
		return -1;
	if (registry_start(0, NULL, reg, sizeof(reg)) != 0 ||
	    registry_start(1, "s3cret", reg_auth, sizeof(reg_auth)) != 0) {
		tap_diag("tests/registry/start failed");
		return -1;
	}
	insecure[1] = reg;
	insecure[2] = NULL;

	/* A single-platform image of 4 x 4 MiB layers. */
	snprintf(dir, sizeof(dir), "%s/single", work);
	snprintf(cmd, sizeof(cmd), "mkdir -p %s/blobs/sha256", dir);
	if (run(cmd) != 0)
		return -1;
	desc = layout_image(dir, "amd64", 4, 4u << 20, 1, single_digest);
	layout_index(dir, desc, "v1");
	free(desc);
	snprintf(cmd, sizeof(cmd), "skopeo --insecure-policy copy -q --preserve-digests "
	    "--dest-tls-verify=false oci:%s:v1 docker://%s/single:v1", dir,
	    reg);
	if (run(cmd) != 0)
		return -1;
	snprintf(cmd, sizeof(cmd), "skopeo --insecure-policy copy -q --preserve-digests "
	    "--dest-tls-verify=false --dest-creds smx:s3cret oci:%s:v1 "
	    "docker://%s/private:v1", dir, reg_auth);
	if (run(cmd) != 0)
		return -1;

	/* A multi-platform index: amd64 and arm64. */
	snprintf(dir, sizeof(dir), "%s/multi", work);
	snprintf(cmd, sizeof(cmd), "mkdir -p %s/blobs/sha256", dir);
	if (run(cmd) != 0)
		return -1;
	a = layout_image(dir, "amd64", 1, 4096, 2, amd64_digest);
	b = layout_image(dir, "arm64", 1, 4096, 3, arm64_digest);
	xasprintf(&idx, "{\"schemaVersion\":2,\"mediaType\":\"application/"
	    "vnd.oci.image.index.v1+json\",\"manifests\":[%s,%s]}", a, b);
	layout_blob(dir, "application/vnd.oci.image.index.v1+json", idx,
	    strlen(idx), &idesc, index_digest);
	layout_index(dir, idesc, "multi");
	free(a);
	free(b);
	free(idx);
	free(idesc);
	snprintf(cmd, sizeof(cmd), "skopeo --insecure-policy copy -q --preserve-digests --all "
	    "--dest-tls-verify=false oci:%s:multi docker://%s/multi:v1", dir,
	    reg);
	if (run(cmd) != 0)
		return -1;

	/* Credentials for the auth instance, docker's format. */
	snprintf(conf, sizeof(conf), "%s/config.json", work);
	if ((f = fopen(conf, "w")) == NULL)
		return -1;
	/* base64("smx:s3cret") */
	fprintf(f, "{\"auths\":{\"%s\":{\"auth\":\"c214OnMzY3JldA==\"}}}\n",
	    reg_auth);
	fclose(f);
	return 0;
}

static bool
has_blobs_of(const char *mdigest)
{
	uint8_t		*buf;
	size_t		 len;
	bool		 ok = true;
	const char	*s;
	char		 d[72];

	if (image_store_get_blob(store, mdigest, 1 << 20, &buf, &len) != 0)
		return false;
	/* Every "sha256:..." in the manifest must be present. */
	for (s = (char *)buf; (s = strstr(s, "sha256:")) != NULL; s += 71) {
		snprintf(d, sizeof(d), "%.71s", s);
		if (!image_store_has_blob(store, d))
			ok = false;
	}
	free(buf);
	return ok;
}

static int
test_reg_single(void)
{
	struct image_pull_opts	o;
	struct result		r;
	char			ref[128];
	uint64_t		t0;

	if (registry_setup() != 0)
		return TAP_SKIP;
	opts(&o);
	snprintf(ref, sizeof(ref), "%s/single:v1", reg);
	t0 = now_ns();
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	tap_diag("pulled 4 x 4 MiB layers in %.0f ms",
	    (now_ns() - t0) / 1e6);
	TAP_CHECK(r.error == 0);
	TAP_CHECK(strcmp(r.digest, single_digest) == 0);
	TAP_CHECK(r.layers_done == 4);
	TAP_CHECK(has_blobs_of(single_digest));
	/* Again: everything is there, nothing is fetched. */
	t0 = now_ns();
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	tap_diag("pulled it again (all present) in %.0f ms",
	    (now_ns() - t0) / 1e6);
	TAP_CHECK(r.error == 0 && r.layers_done == 4);
	return TAP_PASS;
}

static int
test_reg_concurrent(void)
{
	struct image_pull_opts	o;
	struct result		r[2];
	char			a[256], b[256], path[512];
	const char		*refs[2] = { a, b };
	uint8_t			*buf;
	size_t			 len;
	const char		*s;
	char			 d[72];

	if (registry_setup() != 0)
		return TAP_SKIP;
	/* Drop the layers, keep the manifest, pull twice at once. */
	TAP_CHECK(image_store_get_blob(store, single_digest, 1 << 20, &buf,
	    &len) == 0);
	for (s = (char *)buf; (s = strstr(s, "sha256:")) != NULL; s += 71) {
		snprintf(d, sizeof(d), "%.71s", s);
		if (image_store_blob_path(store, d, path, sizeof(path)) == 0)
			unlink(path);
	}
	free(buf);
	opts(&o);
	snprintf(a, sizeof(a), "%s/single:v1", reg);
	snprintf(b, sizeof(b), "%s/single@%s", reg, single_digest);
	TAP_CHECK(pull_many(refs, 2, &o, r) == 0);
	TAP_CHECK(r[0].error == 0 && r[1].error == 0);
	TAP_CHECK(has_blobs_of(single_digest));
	return TAP_PASS;
}

static int
test_reg_index(void)
{
	struct image_pull_opts	o;
	struct result		r;
	char			ref[128];

	if (registry_setup() != 0)
		return TAP_SKIP;
	opts(&o);
	snprintf(ref, sizeof(ref), "%s/multi:v1", reg);
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	TAP_CHECK(r.error == 0);
	TAP_CHECK(strcmp(r.digest, amd64_digest) == 0);
	TAP_CHECK(has_blobs_of(amd64_digest));
	TAP_CHECK(image_store_has_blob(store, index_digest));

	o.platform = "linux/arm64";
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	TAP_CHECK(r.error == 0);
	TAP_CHECK(strcmp(r.digest, arm64_digest) == 0);
	TAP_CHECK(has_blobs_of(arm64_digest));

	o.platform = "linux/s390x";
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	TAP_CHECK(r.error == -ENOENT);
	TAP_CHECK(strstr(r.msg, "linux/amd64, linux/arm64") != NULL);
	return TAP_PASS;
}

static int
test_reg_digest(void)
{
	struct image_pull_opts	o;
	struct result		r;
	char			ref[256];

	if (registry_setup() != 0)
		return TAP_SKIP;
	opts(&o);
	snprintf(ref, sizeof(ref), "%s/multi@%s", reg, arm64_digest);
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	TAP_CHECK(r.error == 0);
	TAP_CHECK(strcmp(r.digest, arm64_digest) == 0);
	/* The index by digest resolves through the platform too. */
	snprintf(ref, sizeof(ref), "%s/multi@%s", reg, index_digest);
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	TAP_CHECK(r.error == 0);
	TAP_CHECK(strcmp(r.digest, amd64_digest) == 0);
	return TAP_PASS;
}

/* "<ref>: <rest>" exactly. */
static bool PRINTF(3, 4)
reg_msg_is(const struct result *r, const char *ref, const char *fmt, ...)
{
	char	want[1100], rest[768];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(rest, sizeof(rest), fmt, ap);
	va_end(ap);
	snprintf(want, sizeof(want), "%s: %s", ref, rest);
	if (strcmp(r->msg, want) == 0)
		return true;
	tap_diag("message:  %s", r->msg);
	tap_diag("expected: %s", want);
	return false;
}

static int
test_reg_auth(void)
{
	struct image_pull_opts	o;
	struct result		r;
	char			ref[128], conf[512], bad[512], cmd[1024];
	const char		*ins[3] = { reg_auth, NULL, NULL };

	if (registry_setup() != 0)
		return TAP_SKIP;
	opts(&o);
	o.insecure = ins;
	snprintf(ref, sizeof(ref), "%s/private:v1", reg_auth);
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	TAP_CHECK(r.error == -EACCES);
	TAP_CHECK(reg_msg_is(&r, ref, "%s requires a login (HTTP 401; no "
	    "credentials for it: smx login %s)", reg_auth, reg_auth));

	/* A wrong password (base64("smx:wrong")): refused, nothing set. */
	snprintf(bad, sizeof(bad), "%s/bad.json", work);
	snprintf(cmd, sizeof(cmd), "printf '{\"auths\":{\"%s\":{\"auth\":"
	    "\"c214Ondyb25n\"}}}' >%s", reg_auth, bad);
	TAP_CHECK(system(cmd) == 0);
	o.auth_file = bad;
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	TAP_CHECK(r.error == -EACCES);
	TAP_CHECK(reg_msg_is(&r, ref, "%s rejected the credentials from %s "
	    "(HTTP 401)", reg_auth, bad));

	snprintf(conf, sizeof(conf), "%s/config.json", work);
	o.auth_file = conf;
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	TAP_CHECK(r.error == 0);
	TAP_CHECK(strcmp(r.digest, single_digest) == 0);
	return TAP_PASS;
}

/* image_login_start against the htpasswd instance and the open one. */
static int
test_reg_login(void)
{
	struct image_pull_opts	o;
	struct result		r;
	char			want[256];
	const char		*ins[3] = { reg_auth, reg, NULL };

	if (registry_setup() != 0)
		return TAP_SKIP;
	opts(&o);
	o.insecure = ins;
	TAP_CHECK(login1(reg_auth, "smx", "wrong", &o, &r) == 0);
	TAP_CHECK(r.error == -EACCES);
	snprintf(want, sizeof(want), "%s rejected the username or password "
	    "(HTTP 401)", reg_auth);
	tap_diag("%s", r.msg);
	TAP_CHECK(strcmp(r.msg, want) == 0);
	TAP_CHECK(login1(reg_auth, "smx", "s3cret", &o, &r) == 0);
	TAP_CHECK(r.error == 0);
	TAP_CHECK(login1(reg, "anyone", "anything", &o, &r) == 0);
	TAP_CHECK(r.error == 0);
	/* Plain HTTP only when marked insecure. */
	o.insecure = NULL;
	TAP_CHECK(login1(reg_auth, "smx", "s3cret", &o, &r) == 0);
	TAP_CHECK(r.error == -EIO);
	tap_diag("%s", r.msg);
	return TAP_PASS;
}

static int
test_reg_404(void)
{
	struct image_pull_opts	o;
	struct result		r;
	char			ref[128];

	if (registry_setup() != 0)
		return TAP_SKIP;
	opts(&o);
	snprintf(ref, sizeof(ref), "%s/single:nope", reg);
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	TAP_CHECK(r.error == -ENOENT);
	TAP_CHECK(reg_msg_is(&r, ref, "manifest nope not found (HTTP 404, "
	    "MANIFEST_UNKNOWN: manifest unknown)"));
	/* This docker-registry says MANIFEST_UNKNOWN for an unknown
	 * repository too (newer ones say NAME_UNKNOWN: see test_fake_404). */
	snprintf(ref, sizeof(ref), "%s/nosuchrepo:v1", reg);
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	TAP_CHECK(r.error == -ENOENT);
	TAP_CHECK(strstr(r.msg, "not found (HTTP 404, ") != NULL);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "fake registry: bearer token, pull, ref set", test_fake_ok_bearer },
	{ "blob with a wrong digest: clean error", test_fake_wrong_digest },
	{ "manifest with a wrong digest: clean error",
	    test_fake_manifest_digest },
	{ "truncated blob: clean error", test_fake_truncated },
	{ "oversize, malformed, unknown-type manifests and configs",
	    test_fake_bad_manifests },
	{ "500, 503 and 429 then success: retried", test_fake_retry },
	{ "429 (with and without Retry-After) and 500 for good",
	    test_fake_persistent },
	{ "stall mid-blob: resumed with Range", test_fake_stall_resume },
	{ "stall for good: timed out, partial kept", test_fake_stall_forever },
	{ "401: no token endpoint, no or bad credentials",
	    test_fake_401 },
	{ "404: unknown tag, unknown repository", test_fake_404 },
	{ "login through a bearer token service", test_fake_login },
	{ "docker-registry: multi-layer image", test_reg_single },
	{ "docker-registry: two pulls of one image at once",
	    test_reg_concurrent },
	{ "docker-registry: index, platforms", test_reg_index },
	{ "docker-registry: pull by digest", test_reg_digest },
	{ "docker-registry: htpasswd auth", test_reg_auth },
	{ "docker-registry: login", test_reg_login },
	{ "docker-registry: unknown tag and repository", test_reg_404 },
};

int
main(void)
{
	char	err[256], cmd[512];
	int	rc;

	log_init("registry_test", getenv("SMX_DEBUG") != NULL ? LOG_DEBUG :
	    LOG_NORMAL);
	signal(SIGPIPE, SIG_IGN);
	snprintf(work, sizeof(work), "%s/smx-regtest.XXXXXX",
	    getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(work) == NULL) {
		printf("1..0 # SKIP no temp dir\n");
		return 77;
	}
	snprintf(home, sizeof(home), "%s/home", work);
	if (image_store_open(home, &store, err, sizeof(err)) != 0 ||
	    fake_start() != 0) {
		printf("Bail out! %s\n", err);
		return 1;
	}
	have_tools = system("command -v docker-registry skopeo htpasswd "
	    "python3 >/dev/null 2>&1") == 0;
	if (!have_tools)
		tap_diag("docker-registry, skopeo, htpasswd or python3 missing: "
		    "real-registry cases skip (tools/bootstrap installs them)");
	rc = tap_run(cases, sizeof(cases) / sizeof(cases[0]), 120);
	stop_registries();
	image_store_close(store);
	if (rc != 1) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", work);
		if (system(cmd) != 0)
			rc = 1;
	} else
		tap_diag("kept %s", work);
	return rc;
}
