/*
 * Registry credentials, kept the way docker keeps them so that `docker
 * login` and `smx login` share one file: config.json in $DOCKER_CONFIG or
 * ~/.docker, "auths": {"host": {"auth": base64(user:password)}}, or a
 * credential helper named by "credHelpers" (per registry) or "credsStore"
 * (every registry).  A helper is the program docker-credential-NAME on
 * PATH speaking docker-credential-helpers' protocol: the verb (get, store,
 * erase) as its argument, the server URL (or, for store, a JSON object
 * {"ServerURL","Username","Secret"}) on stdin, the answer on stdout;
 * errors are a message on stdout and a non-zero exit.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "image/image.h"

#define CONFIG_MAX	(1u << 20)
#define HELPER_OUT_MAX	(64u << 10)
/* The key docker uses for Docker Hub in "auths" and with helpers. */
#define HUB_KEY		"https://index.docker.io/v1/"

/* --- base64 ------------------------------------------------------------- */

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *
b64encode(const char *s)
{
	size_t		 n = strlen(s), i, o = 0;
	char		*out = xmalloc((n + 2) / 3 * 4 + 1);
	const uint8_t	*u = (const uint8_t *)s;
	uint32_t	 v;

	for (i = 0; i < n; i += 3) {
		v = (uint32_t)u[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)u[i + 1] << 8;
		if (i + 2 < n)
			v |= u[i + 2];
		out[o++] = b64chars[v >> 18 & 63];
		out[o++] = b64chars[v >> 12 & 63];
		out[o++] = i + 1 < n ? b64chars[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? b64chars[v & 63] : '=';
	}
	out[o] = '\0';
	return out;
}

static int
b64val(int c)
{
	const char	*p;

	if (c == '-')		/* the URL-safe alphabet too */
		return 62;
	if (c == '_')
		return 63;
	if (c == '\0' || (p = strchr(b64chars, c)) == NULL)
		return -1;
	return p - b64chars;
}

/* Decode base64 (padding optional); NULL on bad input or a NUL byte. */
static char *
b64decode(const char *s)
{
	size_t		 n = strlen(s), o = 0;
	char		*out = xmalloc(n * 3 / 4 + 4);
	uint32_t	 acc = 0;
	int		 bits = 0, v;

	for (; *s != '\0' && *s != '='; s++) {
		if ((v = b64val((unsigned char)*s)) < 0)
			goto bad;
		acc = acc << 6 | v;
		if ((bits += 6) >= 8) {
			bits -= 8;
			if ((out[o++] = (char)(acc >> bits)) == '\0')
				goto bad;
		}
	}
	out[o] = '\0';
	return out;
bad:
	free(out);
	return NULL;
}

/* --- registry names ------------------------------------------------------ */

int
image_auth_registry(const char *s, char *host, size_t len, char *err,
    size_t errlen)
{
	const char	*p;
	size_t		 n;

	if (strncmp(s, "https://", 8) == 0)
		s += 8;
	else if (strncmp(s, "http://", 7) == 0)
		s += 7;
	n = strcspn(s, "/");
	if (n == 0 || n >= len) {
		snprintf(err, errlen, "\"%s\" is not a registry host", s);
		return -EINVAL;
	}
	for (p = s; p < s + n; p++)
		if (!isalnum((unsigned char)*p) && strchr(".-:[]", *p) ==
		    NULL) {
			snprintf(err, errlen, "\"%.*s\" is not a registry "
			    "host", (int)n, s);
			return -EINVAL;
		}
	memcpy(host, s, n);
	host[n] = '\0';
	for (p = host; *p != '\0'; p++)
		host[p - host] = tolower((unsigned char)*p);
	if (!strcmp(host, "index.docker.io") ||
	    !strcmp(host, "registry-1.docker.io"))
		snprintf(host, len, "docker.io");
	return 0;
}

/* The name docker gives a registry in config.json and to helpers. */
static const char *
server_key(const char *registry)
{
	return strcmp(registry, "docker.io") == 0 ? HUB_KEY : registry;
}

/* Does a config key ("https://host/v1/", "host:port") name registry? */
static bool
key_matches(const char *key, const char *registry)
{
	char	host[256], err[128];

	if (image_auth_registry(key, host, sizeof(host), err,
	    sizeof(err)) != 0)
		return false;
	return strcmp(host, registry) == 0;
}

/* --- config.json ----------------------------------------------------------- */

int
image_auth_path(char *buf, size_t len)
{
	const char	*env;
	int		 n;

	if ((env = getenv("DOCKER_CONFIG")) != NULL && env[0] != '\0')
		n = snprintf(buf, len, "%s/config.json", env);
	else if ((env = getenv("HOME")) != NULL && env[0] != '\0')
		n = snprintf(buf, len, "%s/.docker/config.json", env);
	else
		return -ENOENT;
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Parse the file (an empty object when it does not exist). */
static int
config_load(const char *file, cJSON **out, char *err, size_t errlen)
{
	uint8_t	*buf;
	size_t	 len;
	int	 error;

	*out = NULL;
	if ((error = read_file(file, CONFIG_MAX, &buf, &len)) == -ENOENT) {
		*out = cJSON_CreateObject();
		return 0;
	}
	if (error != 0) {
		snprintf(err, errlen, "cannot read %s: %s", file,
		    strerror(-error));
		return error;
	}
	*out = cJSON_ParseWithLength((const char *)buf, len);
	free(buf);
	if (!cJSON_IsObject(*out)) {
		cJSON_Delete(*out);
		*out = NULL;
		snprintf(err, errlen, "%s is not a JSON object (fix or remove "
		    "it)", file);
		return -EINVAL;
	}
	return 0;
}

/* Write the file atomically, mode 0600: temp file in the same directory,
 * fsync, rename (through a symlink to its target, as docker does). */
static int
config_save(const char *file, const cJSON *j, char *err, size_t errlen)
{
	char		*text, *dir, *slash, *tmp = NULL, real[PATH_MAX];
	const char	*dst = file;
	struct stat	 st;
	size_t		 len;
	int		 fd, error = 0;

	if (lstat(file, &st) == 0 && S_ISLNK(st.st_mode) &&
	    realpath(file, real) != NULL)
		dst = real;
	dir = xstrdup(dst);
	if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
			error = -errno;
			snprintf(err, errlen, "cannot create %s: %s", dir,
			    strerror(errno));
			goto out;
		}
	}
	if ((text = cJSON_Print(j)) == NULL) {
		error = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	xasprintf(&tmp, "%s.XXXXXX", dst);
	if ((fd = mkostemp(tmp, O_CLOEXEC)) == -1) {
		error = -errno;
		snprintf(err, errlen, "cannot write in the directory of %s: "
		    "%s", dst, strerror(errno));
		free(text);
		free(tmp);
		tmp = NULL;
		goto out;
	}
	len = strlen(text);
	text[len] = '\n';	/* the terminating NUL becomes a newline */
	if (fchmod(fd, 0600) == -1 || write(fd, text, len + 1) !=
	    (ssize_t)(len + 1) || fsync(fd) == -1) {
		error = errno != 0 ? -errno : -EIO;
		snprintf(err, errlen, "cannot write %s: %s", tmp,
		    strerror(-error));
	}
	free(text);
	if (close(fd) == -1 && error == 0) {
		error = -errno;
		snprintf(err, errlen, "cannot write %s: %s", tmp,
		    strerror(errno));
	}
	if (error == 0 && rename(tmp, dst) == -1) {
		error = -errno;
		snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, dst,
		    strerror(errno));
	}
	if (error != 0)
		unlink(tmp);
out:
	free(tmp);
	free(dir);
	return error;
}

/* The helper configured for registry ("credHelpers" first), or NULL. */
static const char *
config_helper(const cJSON *j, const char *registry, const char **from)
{
	const cJSON	*e, *s;

	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j,
	    "credHelpers")) {
		if (e->string != NULL && cJSON_IsString(e) &&
		    e->valuestring[0] != '\0' &&
		    key_matches(e->string, registry)) {
			*from = "credHelpers";
			return e->valuestring;
		}
	}
	s = cJSON_GetObjectItemCaseSensitive(j, "credsStore");
	if (cJSON_IsString(s) && s->valuestring[0] != '\0') {
		*from = "credsStore";
		return s->valuestring;
	}
	return NULL;
}

/* --- helpers --------------------------------------------------------------- */

/*
 * Run docker-credential-NAME VERB with input on stdin; its stdout goes
 * into *out (NUL-terminated).  0 when it exits 0; -ENOENT when there is
 * no such program; -EPROTO when it fails (its output in *out).
 */
static int
helper_run(const char *name, const char *verb, const char *input,
    char **out)
{
	char	 prog[128], *buf = NULL;
	int	 in[2], outp[2], status = 0, error = 0;
	size_t	 len = 0, cap = 0;
	ssize_t	 n;
	pid_t	 pid;
	const char *p;

	*out = NULL;
	for (p = name; *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && strchr("._-", *p) == NULL)
			return -EINVAL;
	snprintf(prog, sizeof(prog), "docker-credential-%s", name);
	if (pipe2(in, O_CLOEXEC) == -1)
		return -errno;
	if (pipe2(outp, O_CLOEXEC) == -1) {
		error = -errno;
		goto err_in;
	}
	if ((pid = fork()) == -1) {
		error = -errno;
		goto err_out;
	}
	if (pid == 0) {
		if (dup2(in[0], 0) == -1 || dup2(outp[1], 1) == -1)
			_exit(126);
		execlp(prog, prog, verb, (char *)NULL);
		_exit(errno == ENOENT ? 127 : 126);
	}
	close(in[0]);
	close(outp[1]);
	in[0] = outp[1] = -1;
	/* The input is far below a pipe's capacity: write it all first.  A
	 * helper that exits without reading it must not kill us: SIGPIPE
	 * is blocked in this thread only, and a pending one consumed. */
	{
		sigset_t	 pipe_set, old_set;
		struct timespec	 zero = { 0, 0 };
		size_t		 left = strlen(input);

		sigemptyset(&pipe_set);
		sigaddset(&pipe_set, SIGPIPE);
		pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
		p = input;
		while (left > 0 && (n = write(in[1], p, left)) > 0) {
			p += n;
			left -= n;
		}
		if (left > 0)
			sigtimedwait(&pipe_set, NULL, &zero);
		pthread_sigmask(SIG_SETMASK, &old_set, NULL);
	}
	close(in[1]);
	in[1] = -1;
	for (;;) {
		if (len + 4096 + 1 > cap) {
			cap = cap == 0 ? 8192 : cap * 2;
			buf = xreallocarray(buf, 1, cap);
		}
		if ((n = read(outp[0], buf + len, cap - len - 1)) == 0)
			break;
		if (n == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		if ((len += n) > HELPER_OUT_MAX)
			break;
	}
	close(outp[0]);
	outp[0] = -1;
	/* (Should a SIGCHLD handler reap it first, status stays 0 and the
	 * output decides.) */
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	buf = buf != NULL ? buf : xmalloc(1);
	buf[len] = '\0';
	*out = buf;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && len == 0)
		error = -ENOENT;
	else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		error = -EPROTO;
	return error;
err_out:
	close(outp[0]);
	close(outp[1]);
err_in:
	close(in[0]);
	close(in[1]);
	return error;
}

/* The first line of a helper's output, for a message. */
static const char *
first_line(char *s)
{
	char	*e;

	while (isspace((unsigned char)*s))
		s++;
	if ((e = strchr(s, '\n')) != NULL)
		*e = '\0';
	if (strlen(s) > 200)
		s[200] = '\0';
	return s[0] != '\0' ? s : "no message";
}

/* Explain a failed helper run in err. */
static int
helper_error(int error, const char *name, const char *verb,
    const char *from, const char *file, char *out, char *err,
    size_t errlen)
{
	if (error == -ENOENT)
		snprintf(err, errlen, "credential helper docker-credential-%s "
		    "not found on PATH (%s in %s)", name, from, file);
	else if (error == -EINVAL)
		snprintf(err, errlen, "bad credential helper name \"%s\" (%s "
		    "in %s)", name, from, file);
	else if (error == -EPROTO)
		snprintf(err, errlen, "credential helper docker-credential-%s "
		    "%s failed: %s", name, verb, first_line(out));
	else
		snprintf(err, errlen, "cannot run docker-credential-%s: %s",
		    name, strerror(-error));
	return error == -ENOENT || error == -EINVAL ? -ENOEXEC : -EIO;
}

/* --- the API --------------------------------------------------------------- */

static int
default_file(const char **file, char *buf, size_t len, char *err,
    size_t errlen)
{
	if (*file != NULL)
		return 0;
	if (image_auth_path(buf, len) != 0) {
		snprintf(err, errlen, "no credentials file: neither "
		    "$DOCKER_CONFIG nor $HOME is set");
		return -ENOENT;
	}
	*file = buf;
	return 0;
}

int
image_auth_get(const char *file, const char *registry, char **user,
    char **pass, char *source, size_t slen, char *err, size_t errlen)
{
	char		 path[PATH_MAX], *out = NULL, *up, *colon;
	const char	*helper, *from, *key = server_key(registry);
	const cJSON	*e, *a, *u, *pw;
	cJSON		*j, *r = NULL;
	int		 error;

	*user = *pass = NULL;
	if (source != NULL && slen > 0)
		source[0] = '\0';
	if ((error = default_file(&file, path, sizeof(path), err,
	    errlen)) != 0)
		return error;
	if ((error = config_load(file, &j, err, errlen)) != 0)
		return error;
	if ((helper = config_helper(j, registry, &from)) != NULL) {
		error = helper_run(helper, "get", key, &out);
		if (error == -EPROTO && strstr(out, "credentials not found") !=
		    NULL) {
			error = -ENOENT;	/* the helper knows nothing */
			snprintf(err, errlen, "no credentials for %s in "
			    "docker-credential-%s", registry, helper);
			goto out;
		}
		if (error != 0) {
			error = helper_error(error, helper, "get", from, file,
			    out, err, errlen);
			goto out;
		}
		r = cJSON_Parse(out);
		u = cJSON_GetObjectItemCaseSensitive(r, "Username");
		pw = cJSON_GetObjectItemCaseSensitive(r, "Secret");
		if (!cJSON_IsString(u) || !cJSON_IsString(pw)) {
			error = -EPROTO;
			snprintf(err, errlen, "credential helper docker-"
			    "credential-%s get: no Username and Secret in "
			    "its answer", helper);
			goto out;
		}
		if (strcmp(u->valuestring, "<token>") == 0) {
			error = -EPROTO;
			snprintf(err, errlen, "credential helper docker-"
			    "credential-%s gave an identity token for %s "
			    "(not supported: store a username and password)",
			    helper, registry);
			goto out;
		}
		*user = xstrdup(u->valuestring);
		*pass = xstrdup(pw->valuestring);
		if (source != NULL)
			snprintf(source, slen, "docker-credential-%s", helper);
		goto out;
	}
	error = -ENOENT;
	snprintf(err, errlen, "no credentials for %s in %s", registry, file);
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "auths")) {
		if (e->string == NULL || !key_matches(e->string, registry))
			continue;
		a = cJSON_GetObjectItemCaseSensitive(e, "auth");
		u = cJSON_GetObjectItemCaseSensitive(e, "username");
		pw = cJSON_GetObjectItemCaseSensitive(e, "password");
		if (cJSON_IsString(a) && (up = b64decode(a->valuestring)) !=
		    NULL) {
			if ((colon = strchr(up, ':')) != NULL) {
				*colon = '\0';
				*user = xstrdup(up);
				*pass = xstrdup(colon + 1);
			}
			free(up);
		} else if (cJSON_IsString(u) && cJSON_IsString(pw)) {
			*user = xstrdup(u->valuestring);
			*pass = xstrdup(pw->valuestring);
		}
		if (*user != NULL) {
			error = 0;
			if (source != NULL)
				snprintf(source, slen, "%s", file);
			break;
		}
		if (cJSON_IsString(a)) {
			error = -EINVAL;
			snprintf(err, errlen, "%s: the \"auth\" of %s is not "
			    "base64 of user:password", file, e->string);
			break;
		}
	}
out:
	cJSON_Delete(r);
	cJSON_Delete(j);
	free(out);
	return error;
}

int
image_auth_store(const char *file, const char *registry, const char *user,
    const char *pass, char *where, size_t wlen, char *err, size_t errlen)
{
	char		 path[PATH_MAX], *up, *b64, *in, *out = NULL;
	const char	*helper, *from, *key = server_key(registry);
	cJSON		*j, *auths, *e, *c, *rq;
	int		 error;

	if ((error = default_file(&file, path, sizeof(path), err,
	    errlen)) != 0)
		return error;
	if ((error = config_load(file, &j, err, errlen)) != 0)
		return error;
	if ((helper = config_helper(j, registry, &from)) != NULL) {
		rq = cJSON_CreateObject();
		cJSON_AddStringToObject(rq, "ServerURL", key);
		cJSON_AddStringToObject(rq, "Username", user);
		cJSON_AddStringToObject(rq, "Secret", pass);
		in = cJSON_PrintUnformatted(rq);
		cJSON_Delete(rq);
		error = helper_run(helper, "store", in != NULL ? in : "",
		    &out);
		free(in);
		if (error != 0)
			error = helper_error(error, helper, "store", from,
			    file, out, err, errlen);
		else
			snprintf(where, wlen, "docker-credential-%s", helper);
		free(out);
		cJSON_Delete(j);
		return error;
	}
	if (!cJSON_IsObject(auths = cJSON_GetObjectItemCaseSensitive(j,
	    "auths"))) {
		cJSON_DeleteItemFromObjectCaseSensitive(j, "auths");
		auths = cJSON_AddObjectToObject(j, "auths");
	}
	/* One entry per registry: drop other spellings of it. */
	for (e = auths->child; e != NULL; e = c) {
		c = e->next;
		if (e->string != NULL && key_matches(e->string, registry))
			cJSON_Delete(cJSON_DetachItemViaPointer(auths, e));
	}
	xasprintf(&up, "%s:%s", user, pass);
	b64 = b64encode(up);
	explicit_bzero(up, strlen(up));
	free(up);
	e = cJSON_AddObjectToObject(auths, key);
	cJSON_AddStringToObject(e, "auth", b64);
	free(b64);
	if ((error = config_save(file, j, err, errlen)) == 0)
		snprintf(where, wlen, "%s", file);
	cJSON_Delete(j);
	return error;
}

int
image_auth_erase(const char *file, const char *registry, char *err,
    size_t errlen)
{
	char		 path[PATH_MAX], *out = NULL;
	const char	*helper, *from;
	cJSON		*j, *auths, *e, *c;
	bool		 found = false, changed = false;
	int		 error;

	if ((error = default_file(&file, path, sizeof(path), err,
	    errlen)) != 0)
		return error;
	if ((error = config_load(file, &j, err, errlen)) != 0)
		return error;
	if ((helper = config_helper(j, registry, &from)) != NULL) {
		error = helper_run(helper, "erase", server_key(registry),
		    &out);
		if (error == -EPROTO && strstr(out, "credentials not found") !=
		    NULL)
			error = -ENOENT;
		else if (error != 0)
			error = helper_error(error, helper, "erase", from,
			    file, out, err, errlen);
		else
			found = true;
		free(out);
		if (error != 0 && error != -ENOENT)
			goto out;
	}
	/* Entries in "auths" go too (docker leaves empty ones beside a
	 * helper). */
	auths = cJSON_GetObjectItemCaseSensitive(j, "auths");
	for (e = cJSON_IsObject(auths) ? auths->child : NULL; e != NULL;
	    e = c) {
		c = e->next;
		if (e->string != NULL && key_matches(e->string, registry)) {
			if (cJSON_GetObjectItemCaseSensitive(e, "auth") !=
			    NULL || helper == NULL)
				found = true;
			cJSON_Delete(cJSON_DetachItemViaPointer(auths, e));
			changed = true;
		}
	}
	if (changed && (error = config_save(file, j, err, errlen)) != 0)
		goto out;
	error = found ? 0 : -ENOENT;
	if (error == -ENOENT)
		snprintf(err, errlen, "not logged in to %s", registry);
out:
	cJSON_Delete(j);
	return error;
}
