/*
 * Unit test for image/registry.c.  Two servers: a tiny HTTP server in a
 * thread that misbehaves on purpose (wrong digest, truncated blob, 500
 * then success, a stall mid-blob, 401 without a token endpoint, a bearer
 * token service), and Debian's docker-registry started by
 * tests/registry/start, into which OCI layouts written here are pushed
 * with skopeo (single image, multi-platform index, an htpasswd
 * instance).  Each pull runs in a reactor; the store is checked after.
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

static char	 home[512];
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

static int	 fake_port;
static uint8_t	 layer[LAYER_LEN];
static char	 layer_digest[72], config_digest[72], manifest_digest[72];
static char	*config_json, *manifest_json;
static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;
static int	 flaky_hits, stall_hits, token_hits;
static char	 stall_range[64];

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
serve_blob(int fd, const char *repo, const char *range)
{
	static uint8_t	bad[LAYER_LEN];
	char		hdr[128];
	unsigned long	from;
	int		hit;

	if (strcmp(repo, "wrongdigest") == 0) {
		memcpy(bad, layer, LAYER_LEN);
		bad[100] ^= 1;
		respond(fd, 200, NULL, bad, LAYER_LEN, LAYER_LEN);
	} else if (strcmp(repo, "truncated") == 0)
		respond(fd, 200, NULL, layer, LAYER_LEN / 2, LAYER_LEN / 2);
	else if (strcmp(repo, "stall") == 0) {
		pthread_mutex_lock(&fake_mu);
		hit = stall_hits++;
		if (range != NULL)
			snprintf(stall_range, sizeof(stall_range), "%s", range);
		pthread_mutex_unlock(&fake_mu);
		if (hit == 0) {
			/* Half, then silence longer than stall_s. */
			respond(fd, 200, NULL, layer, LAYER_LEN / 2,
			    LAYER_LEN);
			sleep(3);
			return;
		}
		if (range == NULL || sscanf(range, "bytes=%lu-", &from) != 1 ||
		    from > LAYER_LEN) {
			respond(fd, 200, NULL, layer, LAYER_LEN, LAYER_LEN);
			return;
		}
		snprintf(hdr, sizeof(hdr), "Content-Range: bytes %lu-%u/%u\r\n",
		    from, LAYER_LEN - 1, LAYER_LEN);
		respond(fd, 206, hdr, layer + from, LAYER_LEN - from,
		    LAYER_LEN - from);
	} else
		respond(fd, 200, NULL, layer, LAYER_LEN, LAYER_LEN);
}

/* One request: route on the repository name (the fault to inject). */
static bool
serve_one(int fd, char *req)
{
	char	 method[8], path[512], repo[64], kind[16], ref[128], hdr[512];
	char	*range, *auth, *e;
	const char *body;
	int	 hit;

	if (sscanf(req, "%7s %511s", method, path) != 2)
		return false;
	range = strcasestr(req, "\r\nRange: ");
	auth = strcasestr(req, "\r\nAuthorization: ");
	if (range != NULL && (e = strstr(range += 2, "\r\n")) != NULL)
		*e = '\0', range += 7;
	if (auth != NULL && (e = strstr(auth += 2, "\r\n")) != NULL)
		*e = '\0', auth += 15;
	if (strncmp(path, "/token", 6) == 0) {
		pthread_mutex_lock(&fake_mu);
		token_hits++;
		pthread_mutex_unlock(&fake_mu);
		body = "{\"token\":\"t0k\"}";
		respond(fd, 200, NULL, body, strlen(body), strlen(body));
		return true;
	}
	if (sscanf(path, "/v2/%63[^/]/%15[^/]/%127s", repo, kind, ref) != 3) {
		respond(fd, 404, NULL, "", 0, 0);
		return true;
	}
	if (strcmp(repo, "noauth") == 0) {
		respond(fd, 401, NULL, "", 0, 0);
		return true;
	}
	if (strcmp(repo, "bearer") == 0 &&
	    (auth == NULL || strcmp(auth, "Bearer t0k") != 0)) {
		snprintf(hdr, sizeof(hdr), "WWW-Authenticate: Bearer realm="
		    "\"http://127.0.0.1:%d/token\",service=\"fake\",scope="
		    "\"repository:bearer:pull\"\r\n", fake_port);
		respond(fd, 401, hdr, "", 0, 0);
		return true;
	}
	if (strcmp(repo, "flaky") == 0) {
		pthread_mutex_lock(&fake_mu);
		hit = flaky_hits++;
		pthread_mutex_unlock(&fake_mu);
		if (hit == 0) {
			respond(fd, 500, NULL, "oops", 4, 4);
			return true;
		}
		if (hit == 1) {
			respond(fd, 503, "Retry-After: 0\r\n", "", 0, 0);
			return true;
		}
	}
	if (strcmp(kind, "manifests") == 0) {
		if (strcmp(ref, "latest") != 0 &&
		    strcmp(ref, manifest_digest) != 0) {
			respond(fd, 404, NULL, "", 0, 0);
			return true;
		}
		snprintf(hdr, sizeof(hdr), "Content-Type: application/vnd.oci."
		    "image.manifest.v1+json\r\nDocker-Content-Digest: %s\r\n",
		    manifest_digest);
		respond(fd, 200, hdr, manifest_json, strlen(manifest_json),
		    strlen(manifest_json));
	} else if (strcmp(ref, config_digest) == 0)
		respond(fd, 200, NULL, config_json, strlen(config_json),
		    strlen(config_json));
	else if (strcmp(ref, layer_digest) == 0)
		serve_blob(fd, repo, range);
	else
		respond(fd, 404, NULL, "", 0, 0);
	return strcmp(repo, "stall") != 0 || stall_hits > 1;
}

static void *
conn_thread(void *arg)
{
	int	 fd = (int)(intptr_t)arg;
	char	 buf[8192], *end;
	size_t	 len = 0;
	ssize_t	 n;

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

static int
fake_start(void)
{
	struct sockaddr_in	 sin;
	socklen_t		 sl = sizeof(sin);
	pthread_t		 t;
	char			*cd, *ld;
	int			 lfd;
	static char		 host[64];
	size_t			 i;
	uint32_t		 x = 12345;

	for (i = 0; i < LAYER_LEN; i++) {
		x = x * 1103515245 + 12345;
		layer[i] = x >> 16;
	}
	digest_of(layer, LAYER_LEN, layer_digest);
	config_json = xstrdup("{\"architecture\":\"amd64\",\"os\":\"linux\","
	    "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}");
	digest_of(config_json, strlen(config_json), config_digest);
	cd = descriptor("application/vnd.oci.image.config.v1+json",
	    config_digest, strlen(config_json));
	ld = descriptor("application/vnd.oci.image.layer.v1.tar",
	    layer_digest, LAYER_LEN);
	xasprintf(&manifest_json, "{\"schemaVersion\":2,\"mediaType\":"
	    "\"application/vnd.oci.image.manifest.v1+json\",\"config\":%s,"
	    "\"layers\":[%s]}", cd, ld);
	free(cd);
	free(ld);
	digest_of(manifest_json, strlen(manifest_json), manifest_digest);

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
	snprintf(host, sizeof(host), "127.0.0.1:%d", fake_port);
	insecure[0] = host;
	return pthread_create(&t, NULL, accept_thread, (void *)(intptr_t)lfd);
}

static int
fake_pull(const char *repo, const char *tag, struct result *res,
    struct image_pull_opts *o)
{
	char	ref[256];

	snprintf(ref, sizeof(ref), "127.0.0.1:%d/%s%s%s", fake_port, repo,
	    tag[0] == '@' ? "" : ":", tag);
	return pull1(ref, o, res);
}

/* Nothing of the fake layer may be in the store after a failure. */
static bool
layer_left_nothing(void)
{
	char	path[512];

	snprintf(path, sizeof(path), "%s/%s.partial",
	    image_store_tmpdir(store), layer_digest + 7);
	return !image_store_has_blob(store, layer_digest) &&
	    access(path, F_OK) == -1;
}

static int
test_fake_ok_bearer(void)
{
	struct image_pull_opts	o;
	struct result		r;
	char			ref[256], d[72];

	opts(&o);
	TAP_CHECK(fake_pull("bearer", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == 0);
	TAP_CHECK(strcmp(r.digest, manifest_digest) == 0);
	TAP_CHECK(token_hits >= 1);
	TAP_CHECK(image_store_has_blob(store, layer_digest));
	TAP_CHECK(image_store_has_blob(store, config_digest));
	TAP_CHECK(r.layers_done == 1);
	snprintf(ref, sizeof(ref), "127.0.0.1:%d/bearer:latest", fake_port);
	{
		struct image_ref ir;
		char err[128];
		TAP_CHECK(image_ref_parse(ref, &ir, err, sizeof(err)) == 0);
		TAP_CHECK(image_store_get_ref(store, &ir, d, sizeof(d)) == 0);
		TAP_CHECK(strcmp(d, manifest_digest) == 0);
	}
	return TAP_PASS;
}

/* Drop the fake image's blobs so the next case downloads again. */
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
}

static int
test_fake_wrong_digest(void)
{
	struct image_pull_opts	o;
	struct result		r;

	forget_fake();
	opts(&o);
	TAP_CHECK(fake_pull("wrongdigest", "latest", &r, &o) == 0);
	TAP_CHECK(r.error == -EBADMSG);
	TAP_CHECK(strstr(r.msg, layer_digest) != NULL);
	TAP_CHECK(strstr(r.msg, "does not match") != NULL);
	TAP_CHECK(strchr(r.msg, '\n') == NULL);
	TAP_CHECK(layer_left_nothing());
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
	TAP_CHECK(strstr(r.msg, "truncated") != NULL);
	TAP_CHECK(strstr(r.msg, layer_digest) != NULL);
	TAP_CHECK(layer_left_nothing());
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
	TAP_CHECK(flaky_hits >= 3);
	TAP_CHECK(image_store_has_blob(store, layer_digest));
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
	TAP_CHECK(stall_hits == 2);
	snprintf(want, sizeof(want), "bytes=%u-", LAYER_LEN / 2);
	tap_diag("resumed with Range: %s", stall_range);
	TAP_CHECK(strcmp(stall_range, want) == 0);
	TAP_CHECK(image_store_has_blob(store, layer_digest));
	TAP_CHECK(partials() == 0);
	return TAP_PASS;
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
	TAP_CHECK(strstr(r.msg, "401") != NULL);
	TAP_CHECK(strstr(r.msg, "noauth") != NULL);
	TAP_CHECK(layer_left_nothing());
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
	TAP_CHECK(strstr(r.msg, "nosuchtag") != NULL);
	TAP_CHECK(strstr(r.msg, "not found") != NULL);
	return TAP_PASS;
}

/* --- docker-registry -------------------------------------------------- */

static char	 reg[64], reg_auth[64];
static pid_t	 reg_pid[2];
static char	 work[256];
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
	char	 d[72];
	uint8_t	*buf = xmalloc(lsize);
	unsigned i;
	size_t	 j;

	xasprintf(&cfg, "{\"architecture\":\"%s\",\"os\":\"linux\","
	    "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]},\"seed\":%u}",
	    arch, seed);
	layout_blob(dir, "application/vnd.oci.image.config.v1+json", cfg,
	    strlen(cfg), &cdesc, d);
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
	}
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

static int
test_reg_auth(void)
{
	struct image_pull_opts	o;
	struct result		r;
	char			ref[128], conf[512];
	const char		*ins[3] = { reg_auth, NULL, NULL };

	if (registry_setup() != 0)
		return TAP_SKIP;
	opts(&o);
	o.insecure = ins;
	snprintf(ref, sizeof(ref), "%s/private:v1", reg_auth);
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	TAP_CHECK(r.error == -EACCES);
	TAP_CHECK(strstr(r.msg, "credentials") != NULL);

	snprintf(conf, sizeof(conf), "%s/config.json", work);
	o.auth_file = conf;
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	TAP_CHECK(r.error == 0);
	TAP_CHECK(strcmp(r.digest, single_digest) == 0);
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
	TAP_CHECK(strstr(r.msg, "nope") != NULL);
	snprintf(ref, sizeof(ref), "%s/nosuchrepo:v1", reg);
	TAP_CHECK(pull1(ref, &o, &r) == 0);
	TAP_CHECK(r.error == -ENOENT);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "fake registry: bearer token, pull, ref set", test_fake_ok_bearer },
	{ "blob with a wrong digest: clean error", test_fake_wrong_digest },
	{ "truncated blob: clean error", test_fake_truncated },
	{ "500 and 503 then success: retried", test_fake_retry },
	{ "stall mid-blob: resumed with Range", test_fake_stall_resume },
	{ "401 without a token endpoint: clean error", test_fake_401 },
	{ "unknown tag: clean error", test_fake_404 },
	{ "docker-registry: multi-layer image", test_reg_single },
	{ "docker-registry: two pulls of one image at once",
	    test_reg_concurrent },
	{ "docker-registry: index, platforms", test_reg_index },
	{ "docker-registry: pull by digest", test_reg_digest },
	{ "docker-registry: htpasswd auth", test_reg_auth },
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
