/*
 * Containers of the smx command: run directories and their state.json
 * (see container.h).
 */
#include <sys/random.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <termios.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/agent.h"
#include "core/base/base.h"
#include "core/cli/container.h"

#define STATE_MAX	(64u << 10)

const char *
container_rundir(void)
{
	static char	*base;
	const char	*env;

	if (base != NULL)
		return base;
	if ((env = getenv("SMX_RUNDIR")) != NULL && *env != '\0')
		base = xstrdup(env);
	else if (geteuid() == 0)
		base = xstrdup("/run/smx");
	else if ((env = getenv("XDG_RUNTIME_DIR")) != NULL && *env != '\0')
		xasprintf(&base, "%s/smx", env);
	else
		xasprintf(&base, "%s/run", smx_home());
	return base;
}

char *
container_path(const char *name, const char *file)
{
	char	*p;

	if (file == NULL)
		xasprintf(&p, "%s/%s", container_rundir(), name);
	else
		xasprintf(&p, "%s/%s/%s", container_rundir(), name, file);
	return p;
}

int
container_name_valid(const char *s)
{
	size_t	i, n = strlen(s);

	if (n == 0 || n > CONTAINER_NAME_MAX)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9'))
			continue;
		if (i > 0 && (c == '.' || c == '-'))
			continue;
		return -EINVAL;
	}
	return 0;
}

static uint32_t
random32(void)
{
	uint32_t	v;

	if (getrandom(&v, sizeof v, 0) != sizeof v)
		v = (uint32_t)now_ns() ^ (uint32_t)getpid();
	return v;
}

void
container_id_new(char id[65])
{
	uint8_t	b[32];
	size_t	i;

	for (i = 0; i < sizeof b; i += 4) {
		uint32_t v = random32();

		memcpy(b + i, &v, 4);
	}
	for (i = 0; i < sizeof b; i++)
		snprintf(id + 2 * i, 3, "%02x", b[i]);
}

char *
container_name_new(void)
{
	static const char *const adj[] = {
		"brave", "calm", "eager", "fancy", "gentle", "happy", "jolly",
		"keen", "lively", "merry", "nimble", "proud", "quick", "silly",
		"sunny", "tidy", "vivid", "witty", "zesty", "bold",
	};
	static const char *const noun[] = {
		"otter", "falcon", "badger", "heron", "lynx", "marten", "osprey",
		"panda", "quokka", "raven", "seal", "tapir", "walrus", "yak",
		"bison", "crane", "dingo", "gecko", "ibis", "koala",
	};
	char		*name, *dir;
	struct stat	 st;
	int		 tries;

	for (tries = 0;; tries++) {
		uint32_t r = random32();

		if (tries < 20)
			xasprintf(&name, "%s-%s", adj[r % ARRAY_SIZE(adj)],
			    noun[(r >> 8) % ARRAY_SIZE(noun)]);
		else
			xasprintf(&name, "%s-%s-%u", adj[r % ARRAY_SIZE(adj)],
			    noun[(r >> 8) % ARRAY_SIZE(noun)], r >> 16);
		dir = container_path(name, NULL);
		if (lstat(dir, &st) == -1 && errno == ENOENT) {
			free(dir);
			return name;
		}
		free(dir);
		free(name);
	}
}

/* Field 22 of /proc/PID/stat: the process's start time in clock ticks
 * (tells a live holder from a later process that reused its pid). */
static uint64_t
proc_start(long pid)
{
	char			 path[64], buf[1024], *p;
	unsigned long long	 v;
	FILE			*f;
	size_t			 n;
	int			 field;

	snprintf(path, sizeof path, "/proc/%ld/stat", pid);
	if ((f = fopen(path, "re")) == NULL)
		return 0;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: skip past the
	 * last ')', which ends field 2. */
	if ((p = strrchr(buf, ')')) == NULL)
		return 0;
	p++;
	for (field = 3; field < 22 && p != NULL; field++)
		p = strchr(p + 1, ' ');
	if (p == NULL || sscanf(p, " %llu", &v) != 1)
		return 0;
	return v;
}

void
container_set_holder(struct container *c)
{
	c->pid = getpid();
	c->pid_start = proc_start(c->pid);
}

int
container_save(const struct container *c)
{
	cJSON	*o, *a;
	char	*text, *path, *tmp;
	int	 fd, error = 0;
	size_t	 len, i;

	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", c->name);
	cJSON_AddStringToObject(o, "id", c->id);
	cJSON_AddStringToObject(o, "image", c->image ? c->image : "");
	cJSON_AddStringToObject(o, "command", c->command ? c->command : "");
	cJSON_AddStringToObject(o, "ports", c->ports ? c->ports : "");
	cJSON_AddNumberToObject(o, "pid", (double)c->pid);
	cJSON_AddNumberToObject(o, "pid_start", (double)c->pid_start);
	cJSON_AddNumberToObject(o, "created", (double)c->created);
	cJSON_AddNumberToObject(o, "finished", (double)c->finished);
	cJSON_AddStringToObject(o, "status", c->status ? c->status : "created");
	cJSON_AddNumberToObject(o, "exit_code", c->exit_code);
	cJSON_AddStringToObject(o, "workdir", c->workdir ? c->workdir : "");
	cJSON_AddStringToObject(o, "user", c->user ? c->user : "");
	a = cJSON_AddArrayToObject(o, "env");
	for (i = 0; c->env != NULL && c->env[i] != NULL; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(c->env[i]));
	text = cJSON_Print(o);
	cJSON_Delete(o);
	if (text == NULL)
		return -ENOMEM;
	path = container_path(c->name, "state.json");
	xasprintf(&tmp, "%s.tmp%ld", path, (long)getpid());
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0644)) == -1) {
		error = -errno;
		goto out;
	}
	len = strlen(text);
	text[len++] = '\n';	/* cJSON_Print leaves room: we drop the NUL */
	if (write(fd, text, len) != (ssize_t)len) {
		error = errno ? -errno : -EIO;
		close(fd);
		unlink(tmp);
		goto out;
	}
	close(fd);
	if (rename(tmp, path) == -1) {
		error = -errno;
		unlink(tmp);
	}
out:
	free(text);
	free(tmp);
	free(path);
	return error;
}

int
container_create(struct container *c)
{
	char	*dir;
	int	 error;

	if (mkdir(container_rundir(), 0755) == -1 && errno != EEXIST)
		return -errno;
	dir = container_path(c->name, NULL);
	error = mkdir(dir, 0700) == -1 ? -errno : 0;
	free(dir);
	if (error != 0)
		return error;
	if ((error = container_save(c)) != 0)
		container_remove(c->name);
	return error;
}

static char *
jstr(const cJSON *o, const char *key)
{
	const cJSON	*v = cJSON_GetObjectItemCaseSensitive(o, key);

	return xstrdup(cJSON_IsString(v) ? v->valuestring : "");
}

static double
jnum(const cJSON *o, const char *key)
{
	const cJSON	*v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

int
container_load(const char *name, struct container *c)
{
	uint8_t	*buf;
	size_t	 len;
	char	*path;
	cJSON	*o;
	const cJSON *a, *e;
	size_t	 n = 0;
	int	 error;

	memset(c, 0, sizeof *c);
	if (container_name_valid(name) != 0)
		return -ENOENT;
	path = container_path(name, "state.json");
	error = read_file(path, STATE_MAX, &buf, &len);
	free(path);
	if (error != 0)
		return error;
	o = cJSON_ParseWithLength((const char *)buf, len);
	free(buf);
	if (o == NULL)
		return -EBADMSG;
	c->name = xstrdup(name);
	c->id = jstr(o, "id");
	c->image = jstr(o, "image");
	c->command = jstr(o, "command");
	c->ports = jstr(o, "ports");
	c->status = jstr(o, "status");
	c->pid = (long)jnum(o, "pid");
	c->pid_start = (uint64_t)jnum(o, "pid_start");
	c->created = (int64_t)jnum(o, "created");
	c->finished = (int64_t)jnum(o, "finished");
	c->exit_code = (int)jnum(o, "exit_code");
	c->workdir = jstr(o, "workdir");
	c->user = jstr(o, "user");
	a = cJSON_GetObjectItemCaseSensitive(o, "env");
	c->env = xcalloc((size_t)cJSON_GetArraySize(a) + 1, sizeof *c->env);
	cJSON_ArrayForEach(e, a)
		if (cJSON_IsString(e))
			c->env[n++] = xstrdup(e->valuestring);
	cJSON_Delete(o);
	return 0;
}

void
container_free(struct container *c)
{
	free(c->name);
	free(c->id);
	free(c->image);
	free(c->command);
	free(c->ports);
	free(c->status);
	free(c->workdir);
	free(c->user);
	for (size_t i = 0; c->env != NULL && c->env[i] != NULL; i++)
		free(c->env[i]);
	free(c->env);
	memset(c, 0, sizeof *c);
}

static int
newest_first(const void *a, const void *b)
{
	const struct container *x = a, *y = b;

	if (x->created != y->created)
		return x->created > y->created ? -1 : 1;
	return strcmp(x->name, y->name);
}

int
container_list(struct container **out, size_t *nout)
{
	struct container	*v = NULL;
	size_t			 n = 0;
	struct dirent		*e;
	DIR			*d;

	*out = NULL;
	*nout = 0;
	if ((d = opendir(container_rundir())) == NULL)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d)) != NULL) {
		struct container c;

		if (e->d_name[0] == '.' || container_load(e->d_name, &c) != 0)
			continue;
		v = xreallocarray(v, n + 1, sizeof *v);
		v[n++] = c;
	}
	closedir(d);
	if (n > 0)
		qsort(v, n, sizeof *v, newest_first);
	*out = v;
	*nout = n;
	return 0;
}

void
container_list_free(struct container *v, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		container_free(&v[i]);
	free(v);
}

int
container_find(const char *cmd, const char *s, struct container *c)
{
	struct container	*v;
	size_t			 n, i, hit = 0, hits = 0;
	int			 error;

	if ((error = container_load(s, c)) == 0)
		return 0;
	if (error != -ENOENT) {
		fprintf(stderr, "smx: %s: container %s: unreadable state: %s\n",
		    cmd, s, strerror(-error));
		return error;
	}
	/* Not a name: a unique prefix of an id? */
	if (strlen(s) >= 3 && container_list(&v, &n) == 0) {
		for (i = 0; i < n; i++)
			if (strncmp(v[i].id, s, strlen(s)) == 0) {
				hit = i;
				hits++;
			}
		if (hits == 1) {
			*c = v[hit];
			memset(&v[hit], 0, sizeof v[hit]);
		}
		container_list_free(v, n);
		if (hits == 1)
			return 0;
		if (hits > 1) {
			fprintf(stderr, "smx: %s: %s: more than one container "
			    "id starts so: give more of it, or the name\n",
			    cmd, s);
			return -ENOENT;
		}
	}
	fprintf(stderr, "smx: %s: no container %s (see smx ps -a)\n", cmd, s);
	return -ENOENT;
}

int
container_alive(const struct container *c)
{
	if (c->pid <= 0)
		return 0;
	if (kill((pid_t)c->pid, 0) == -1 && errno == ESRCH)
		return 0;
	/* A zombie holder (our own child not yet reaped) has ended too. */
	return c->pid_start == 0 || proc_start(c->pid) == c->pid_start;
}

const char *
container_state(const struct container *c)
{
	if (strcmp(c->status, "exited") == 0)
		return "exited";
	if (container_alive(c))
		return strcmp(c->status, "running") == 0 ? "running" : "created";
	return "dead";
}

int
container_wait(const struct container *c, uint64_t timeout_ms)
{
	uint64_t	end = now_ns() + timeout_ms * 1000000ull;

	for (;;) {
		if (!container_alive(c))
			return 0;
		if (now_ns() >= end)
			return -ETIMEDOUT;
		usleep(20000);
	}
}

int
container_remove(const char *name)
{
	int	dfd, error;

	if (container_name_valid(name) != 0)
		return -EINVAL;
	if ((dfd = open(container_rundir(), O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) == -1)
		return -errno;
	error = rm_tree_at(dfd, name, NULL);
	close(dfd);
	return error;
}

int
container_agent_connect(const char *cmd, const struct container *c)
{
	char	*path;
	int	 fd;

	path = container_path(c->name, "vsock");
	if ((fd = agent_connect(path, AGENT_PORT)) < 0)
		fprintf(stderr, "smx: %s: cannot reach the agent of container "
		    "%s (%s): is it running? (smx ps -a)\n", cmd, c->name,
		    strerror(-fd));
	free(path);
	return fd;
}

void
container_age(int64_t s, char *buf, size_t len)
{
	if (s < 0)
		s = 0;
	if (s < 2)
		snprintf(buf, len, "Less than a second");
	else if (s < 60)
		snprintf(buf, len, "%lld seconds", (long long)s);
	else if (s < 120)
		snprintf(buf, len, "About a minute");
	else if (s < 3600)
		snprintf(buf, len, "%lld minutes", (long long)s / 60);
	else if (s < 7200)
		snprintf(buf, len, "About an hour");
	else if (s < 48 * 3600)
		snprintf(buf, len, "%lld hours", (long long)s / 3600);
	else
		snprintf(buf, len, "%lld days", (long long)s / 86400);
}

/* The terminal's settings while it is raw. */
static struct termios	saved_tio;
static int		tio_saved;

void
container_tty_restore(void)
{
	if (tio_saved) {
		tcsetattr(0, TCSADRAIN, &saved_tio);
		tio_saved = 0;
	}
}

void
container_tty_raw(void)
{
	struct termios	t;

	if (tcgetattr(0, &saved_tio) == -1)
		return;
	t = saved_tio;
	cfmakeraw(&t);
	if (tcsetattr(0, TCSADRAIN, &t) == 0) {
		tio_saved = 1;
		atexit(container_tty_restore);
	}
}

int
container_start_status(int error)
{
	switch (-error) {
	case ENOENT:
		return CONTAINER_EXIT_NOTFOUND;
	case EACCES:
	case ENOEXEC:
	case EPERM:
	case EISDIR:
	case ENOTDIR:
		return CONTAINER_EXIT_NOEXEC;
	default:
		return CONTAINER_EXIT_SMX;
	}
}

int
container_holder_stdio(const char *name)
{
	char	*log = container_path(name, "log");
	int	 fd, error = 0;

	if ((fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
	    0644)) == -1)
		error = -errno;
	free(log);
	if (fd == -1)
		return error;
	dup2(fd, 1);
	dup2(fd, 2);
	close(fd);
	if ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) != -1) {
		dup2(fd, 0);
		close(fd);
	}
	return 0;
}

int
container_holder_word(int fd, char *buf, size_t len, int *code, char **msg)
{
	size_t	n = 0;
	ssize_t	k;

	while (n < len - 1 && (k = read(fd, buf + n, len - 1 - n)) != 0) {
		if (k < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		n += (size_t)k;
		if (memchr(buf, '\n', n) != NULL)
			break;
	}
	buf[n] = '\0';
	close(fd);
	if (n == 0)
		return -1;
	*code = (int)strtol(buf, msg, 10);
	return *msg == buf ? -1 : 0;
}
