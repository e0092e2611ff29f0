/*
 * smx run: an image as a microVM, its command as the container's main
 * process, with docker's exit codes.  This process holds the machine for
 * as long as the main process runs; -d forks that holder off (before
 * any thread exists: the runtime's threads do not survive fork()) and
 * returns once the main process has started.
 */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/cli/container.h"
#include "core/smx.h"
#include "image/image.h"

#define EXIT_SMX	CONTAINER_EXIT_SMX

#define MAX_PORTS	16
#define META_MAX	(4u << 20)

struct port {
	char		 ip[INET_ADDRSTRLEN];
	uint16_t	 host, guest;
};

struct run {
	int		 rm, interactive, tty, detach, dax, no_snapshot;
	const char	*name, *workdir, *user, *entrypoint, *image;
	char		**env;
	size_t		 nenv;
	struct smx_volume vols[SMX_MAX_VOLUMES];
	char		*volhost[SMX_MAX_VOLUMES];
	unsigned	 nvols;
	struct port	 ports[MAX_PORTS];
	unsigned	 nports;
	unsigned long long cpus, memory;
	char		**args;		/* CMD ARGS... (may be empty) */
	int		 nargs;
	int		 notify_fd;	/* -d: the waiting parent, or -1 */
};

void
cmd_run_usage(FILE *f)
{
	fprintf(f, "usage: smx run [OPTIONS] IMAGE [CMD [ARGS...]]\n\n"
	    "Run IMAGE's command (or CMD) in a new microVM, pulling the image\n"
	    "when missing.  smx's exit status is the command's (128+N when\n"
	    "signal N killed it); 125: smx failed, 126: CMD cannot be\n"
	    "executed, 127: CMD not found.  SIGINT, SIGTERM, SIGHUP, SIGQUIT,\n"
	    "SIGUSR1 and SIGUSR2 sent to smx go to the command.\n\n"
	    "options:\n"
	    "  --rm                  remove the container when it ends\n"
	    "  -i, --interactive     pipe stdin to the command (else it is empty)\n"
	    "  -t, --tty             a terminal (this one is put in raw mode)\n"
	    "  -d, --detach          run in the background; print the name\n"
	    "                        (output goes to smx logs NAME)\n"
	    "  --name NAME           the container's name (and hostname)\n"
	    "  -e, --env K=V         set a variable (K alone: take this one's)\n"
	    "  --env-file FILE       K=V lines (# comments)\n"
	    "  -w, --workdir DIR     working directory in the guest\n"
	    "  -u, --user USER       user[:group], names or numbers\n"
	    "  --entrypoint CMD      replace the image's entrypoint\n"
	    "  -v, --volume HOST:GUEST[:ro]\n"
	    "                        a host directory or file in the guest (at\n"
	    "                        most %d)\n"
	    "  -p, --publish [IP:]HPORT:GPORT\n"
	    "                        guest TCP port GPORT on host IP:HPORT\n"
	    "                        (IP default 127.0.0.1)\n"
	    "  --cpus N              vCPUs (default 1)\n"
	    "  --memory MIB          memory in MiB (default 256)\n"
	    "  --dax                 map the image's files with virtio-fs DAX\n"
	    "  --no-snapshot         boot, even when the image has a baked\n"
	    "                        snapshot (smx bake; run restores it and\n"
	    "                        bakes one on first use; -v says which)\n",
	    SMX_MAX_VOLUMES);
}

/* Report an error before the main process started: on stderr, and to
 * the parent waiting for a detached holder.  Returns code. */
static int PRINTF(3, 4)
fail(struct run *r, int code, const char *fmt, ...)
{
	char	 msg[1024];
	va_list	 ap;
	ssize_t	 n;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(stderr, "smx: run: %s\n", msg);
	if (r->notify_fd != -1) {
		char	line[1100];

		snprintf(line, sizeof line, "%d %s\n", code, msg);
		n = write(r->notify_fd, line, strlen(line));
		(void)n;
		close(r->notify_fd);
		r->notify_fd = -1;
	}
	return code;
}

static void
env_add(struct run *r, const char *kv)
{
	r->env = xreallocarray(r->env, r->nenv + 2, sizeof *r->env);
	r->env[r->nenv++] = xstrdup(kv);
	r->env[r->nenv] = NULL;
}

/* -e K=V, or -e K: this process's K when it has one (docker). */
static int
env_opt(struct run *r, const char *s)
{
	const char	*v;
	char		*kv;

	if (*s == '=' || *s == '\0') {
		fprintf(stderr, "smx: run: bad variable '%s': want KEY=VALUE\n",
		    s);
		return -1;
	}
	if (strchr(s, '=') != NULL) {
		env_add(r, s);
		return 0;
	}
	if ((v = getenv(s)) != NULL) {
		xasprintf(&kv, "%s=%s", s, v);
		env_add(r, kv);
		free(kv);
	}
	return 0;
}

static int
env_file(struct run *r, const char *path)
{
	char	*line = NULL, *s;
	size_t	 cap = 0;
	ssize_t	 n;
	FILE	*f;
	int	 rc = 0;

	if ((f = fopen(path, "re")) == NULL) {
		fprintf(stderr, "smx: run: --env-file %s: %s\n", path,
		    strerror(errno));
		return -1;
	}
	while ((n = getline(&line, &cap, f)) != -1) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		for (s = line; *s == ' ' || *s == '\t'; s++)
			;
		if (*s == '\0' || *s == '#')
			continue;
		if ((rc = env_opt(r, s)) != 0)
			break;
	}
	free(line);
	fclose(f);
	return rc;
}

/* HOST:GUEST[:ro|:rw]; the host path must exist. */
static int
volume_opt(struct run *r, const char *s)
{
	char		*spec, *guest, *mode, *host;
	struct stat	 st;
	int		 rc = -1;

	if (r->nvols == SMX_MAX_VOLUMES) {
		fprintf(stderr, "smx: run: -v %s: at most %d volumes\n", s,
		    SMX_MAX_VOLUMES);
		return -1;
	}
	spec = xstrdup(s);
	if ((guest = strchr(spec, ':')) == NULL || guest == spec) {
		fprintf(stderr, "smx: run: -v %s: want HOST:GUEST[:ro]\n", s);
		goto out;
	}
	*guest++ = '\0';
	if ((mode = strchr(guest, ':')) != NULL)
		*mode++ = '\0';
	if (*guest != '/' || (mode != NULL && strcmp(mode, "ro") != 0 &&
	    strcmp(mode, "rw") != 0)) {
		fprintf(stderr, "smx: run: -v %s: want HOST:GUEST[:ro] with an "
		    "absolute GUEST path\n", s);
		goto out;
	}
	if (stat(spec, &st) == -1 || (host = realpath(spec, NULL)) == NULL) {
		fprintf(stderr, "smx: run: volume source %s: %s (create it or "
		    "fix the path)\n", spec, strerror(errno));
		goto out;
	}
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
		fprintf(stderr, "smx: run: volume source %s: not a directory "
		    "or a regular file\n", spec);
		free(host);
		goto out;
	}
	r->volhost[r->nvols] = host;
	r->vols[r->nvols].host = host;
	r->vols[r->nvols].guest = xstrdup(guest);
	r->vols[r->nvols].readonly = mode != NULL && strcmp(mode, "ro") == 0;
	r->nvols++;
	rc = 0;
out:
	free(spec);
	return rc;
}

/* [IP:]HPORT:GPORT[/tcp] */
static int
port_opt(struct run *r, const char *s)
{
	char			*spec, *a, *b, *c, *p;
	unsigned long long	 hp, gp;
	struct in_addr		 in;
	struct port		*pt;
	int			 rc = -1;

	if (r->nports == MAX_PORTS) {
		fprintf(stderr, "smx: run: -p %s: at most %d ports\n", s,
		    MAX_PORTS);
		return -1;
	}
	spec = xstrdup(s);
	if ((p = strchr(spec, '/')) != NULL) {
		if (strcmp(p, "/tcp") != 0) {
			fprintf(stderr, "smx: run: -p %s: only TCP ports can be "
			    "published\n", s);
			goto out;
		}
		*p = '\0';
	}
	a = spec;
	if ((b = strchr(a, ':')) == NULL)
		goto bad;
	*b++ = '\0';
	if ((c = strchr(b, ':')) != NULL) {
		*c++ = '\0';
	} else {
		c = b;
		b = a;
		a = NULL;
	}
	if (cli_number(b, 1, 65535, &hp) != 0 ||
	    cli_number(c, 1, 65535, &gp) != 0)
		goto bad;
	pt = &r->ports[r->nports];
	if (a == NULL || *a == '\0')
		snprintf(pt->ip, sizeof pt->ip, "127.0.0.1");
	else if (inet_pton(AF_INET, a, &in) == 1)
		snprintf(pt->ip, sizeof pt->ip, "%s", a);
	else
		goto bad;
	pt->host = (uint16_t)hp;
	pt->guest = (uint16_t)gp;
	r->nports++;
	rc = 0;
	goto out;
bad:
	fprintf(stderr, "smx: run: -p %s: want [IP:]HPORT:GPORT (IPv4, ports "
	    "1-65535)\n", s);
out:
	free(spec);
	return rc;
}

/* Fail early (before a boot of seconds) when a host port is taken. */
static int
port_free(const struct port *p)
{
	struct sockaddr_in	sin;
	int			fd, one = 1, rc = 0;

	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return 0;
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons(p->host);
	inet_pton(AF_INET, p->ip, &sin.sin_addr);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&sin, sizeof sin) == -1)
		rc = -errno;
	close(fd);
	return rc;
}

static int
parse(struct run *r, int argc, char **argv)
{
	enum { O_RM = 256, O_NAME, O_ENVFILE, O_ENTRY, O_CPUS, O_MEM, O_DAX,
	    O_NOSNAP };
	static const struct option lopts[] = {
		{ "rm", no_argument, NULL, O_RM },
		{ "interactive", no_argument, NULL, 'i' },
		{ "tty", no_argument, NULL, 't' },
		{ "detach", no_argument, NULL, 'd' },
		{ "name", required_argument, NULL, O_NAME },
		{ "env", required_argument, NULL, 'e' },
		{ "env-file", required_argument, NULL, O_ENVFILE },
		{ "workdir", required_argument, NULL, 'w' },
		{ "user", required_argument, NULL, 'u' },
		{ "entrypoint", required_argument, NULL, O_ENTRY },
		{ "volume", required_argument, NULL, 'v' },
		{ "publish", required_argument, NULL, 'p' },
		{ "cpus", required_argument, NULL, O_CPUS },
		{ "memory", required_argument, NULL, O_MEM },
		{ "dax", no_argument, NULL, O_DAX },
		{ "no-snapshot", no_argument, NULL, O_NOSNAP },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int	ch;

	/* '+': options end at IMAGE; what follows is the command's. */
	while ((ch = getopt_long(argc, argv, "+itde:w:u:v:p:h", lopts,
	    NULL)) != -1) {
		switch (ch) {
		case O_RM:
			r->rm = 1;
			break;
		case 'i':
			r->interactive = 1;
			break;
		case 't':
			r->tty = 1;
			break;
		case 'd':
			r->detach = 1;
			break;
		case O_NAME:
			if (container_name_valid(optarg) != 0) {
				fprintf(stderr, "smx: run: --name %s: use 1-%d "
				    "letters, digits, '.', '-' (starting "
				    "with a letter or digit)\n", optarg,
				    CONTAINER_NAME_MAX);
				return -1;
			}
			r->name = optarg;
			break;
		case 'e':
			if (env_opt(r, optarg) != 0)
				return -1;
			break;
		case O_ENVFILE:
			if (env_file(r, optarg) != 0)
				return -1;
			break;
		case 'w':
			r->workdir = optarg;
			break;
		case 'u':
			r->user = optarg;
			break;
		case O_ENTRY:
			r->entrypoint = optarg;
			break;
		case 'v':
			if (volume_opt(r, optarg) != 0)
				return -1;
			break;
		case 'p':
			if (port_opt(r, optarg) != 0)
				return -1;
			break;
		case O_CPUS:
			if (cli_number(optarg, 1, 8, &r->cpus) != 0) {
				fprintf(stderr, "smx: run: --cpus %s: want 1 to "
				    "8\n", optarg);
				return -1;
			}
			break;
		case O_MEM:
			if (cli_number(optarg, 64, 65536, &r->memory) != 0) {
				fprintf(stderr, "smx: run: --memory %s: want "
				    "64 to 65536 (MiB)\n", optarg);
				return -1;
			}
			break;
		case O_DAX:
			r->dax = 1;
			break;
		case O_NOSNAP:
			r->no_snapshot = 1;
			break;
		case 'h':
			cmd_run_usage(stdout);
			exit(CLI_EXIT_OK);
		default:
			cmd_run_usage(stderr);
			return -1;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "smx: run: no image given\n");
		cmd_run_usage(stderr);
		return -1;
	}
	r->image = argv[optind++];
	r->args = argv + optind;
	r->nargs = argc - optind;
	return 0;
}

/* The image's config ("config" of the config blob), or NULL. */
static cJSON *
image_config(const char *digest)
{
	struct image_store	*s;
	uint8_t			*buf;
	size_t			 len;
	cJSON			*m = NULL, *c = NULL, *cc;
	const cJSON		*d;
	char			 err[256];

	if (image_store_open(NULL, &s, err, sizeof err) != 0)
		return NULL;
	if (image_store_get_blob(s, digest, META_MAX, &buf, &len) == 0) {
		m = cJSON_ParseWithLength((const char *)buf, len);
		free(buf);
	}
	d = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(m, "config"), "digest");
	if (cJSON_IsString(d) && image_store_get_blob(s, d->valuestring,
	    META_MAX, &buf, &len) == 0) {
		c = cJSON_ParseWithLength((const char *)buf, len);
		free(buf);
	}
	cJSON_Delete(m);
	image_store_close(s);
	cc = cJSON_DetachItemFromObjectCaseSensitive(c, "config");
	cJSON_Delete(c);
	return cc;
}

/* A config's string array `key` as a NULL-terminated vector, or NULL. */
static char **
config_strv(const cJSON *cfg, const char *key)
{
	const cJSON	*a, *e;
	char		**v;
	size_t		 n = 0;

	a = cJSON_GetObjectItemCaseSensitive(cfg, key);
	if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) == 0)
		return NULL;
	v = xcalloc((size_t)cJSON_GetArraySize(a) + 1, sizeof *v);
	cJSON_ArrayForEach(e, a)
		if (cJSON_IsString(e))
			v[n++] = xstrdup(e->valuestring);
	return v;
}

static const char *
config_str(const cJSON *cfg, const char *key)
{
	const cJSON	*v = cJSON_GetObjectItemCaseSensitive(cfg, key);

	return cJSON_IsString(v) ? v->valuestring : "";
}

static void
strv_free(char **v)
{
	size_t	i;

	for (i = 0; v != NULL && v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

/*
 * The main process's argv, docker's way: --entrypoint replaces the
 * image's Entrypoint and drops its Cmd; CMD ARGS replace the Cmd.  NULL:
 * the image's own Entrypoint + Cmd (the library's default).
 */
static char **
main_argv(const struct run *r, const cJSON *cfg)
{
	char	**v, **ep = NULL;
	size_t	  n = 0, i;

	if (r->entrypoint == NULL && r->nargs == 0)
		return NULL;
	if (r->entrypoint == NULL)
		ep = config_strv(cfg, "Entrypoint");
	v = xcalloc((size_t)r->nargs + 2, sizeof *v);
	if (r->entrypoint != NULL && *r->entrypoint != '\0')
		v[n++] = xstrdup(r->entrypoint);
	for (i = 0; ep != NULL && ep[i] != NULL; i++) {
		v = xreallocarray(v, n + (size_t)r->nargs + 2, sizeof *v);
		v[n++] = xstrdup(ep[i]);
	}
	strv_free(ep);
	for (i = 0; i < (size_t)r->nargs; i++)
		v[n++] = xstrdup(r->args[i]);
	v[n] = NULL;
	if (n == 0) {
		free(v);
		return NULL;
	}
	return v;
}

static char *
command_string(const struct run *r)
{
	char	*s = xstrdup(""), *t;
	int	 i;

	if (r->entrypoint != NULL) {
		free(s);
		s = xstrdup(r->entrypoint);
	}
	for (i = 0; i < r->nargs; i++) {
		xasprintf(&t, "%s%s%s", s, *s ? " " : "", r->args[i]);
		free(s);
		s = t;
	}
	return s;
}

static char *
ports_string(const struct run *r)
{
	char		*s = xstrdup(""), *t;
	unsigned	 i;

	for (i = 0; i < r->nports; i++) {
		xasprintf(&t, "%s%s%s:%u->%u/tcp", s, *s ? ", " : "",
		    r->ports[i].ip, r->ports[i].host, r->ports[i].guest);
		free(s);
		s = t;
	}
	return s;
}

/*
 * docker's sig-proxy: SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and
 * SIGUSR2 sent to smx go to the main process, through its agent.  They
 * are blocked in every thread (the runtime's threads inherit the mask)
 * and taken by a thread of their own with sigwait(); it may block on
 * the agent client because the vsock device it talks to is served by
 * the runtime on the main thread.  Before the main process runs, after
 * it ended, or when the agent cannot be reached, a signal gets its
 * default action: smx ends, and its machine with it.
 */
struct proxy {
	struct run		*r;
	const char		*name;
	sigset_t		 set;
	pthread_t		 thread;
	_Atomic int		 phase;	/* 0 starting, 1 running, 2 ended */
};

static void *
proxy_main(void *arg)
{
	struct proxy	*p = arg;
	struct container c;
	sigset_t	 one;
	int		 sig;

	for (;;) {
		if (sigwait(&p->set, &sig) != 0)
			continue;
		if (p->phase == 1) {
			memset(&c, 0, sizeof c);
			c.name = (char *)p->name;
			if (container_signal("run", &c, sig) == 0)
				continue;
		}
		/* Default action: what never ran, or --rm, leaves nothing. */
		container_tty_restore();
		if (p->phase == 0 || p->r->rm)
			container_remove(p->name);
		signal(sig, SIG_DFL);
		sigemptyset(&one);
		sigaddset(&one, sig);
		pthread_sigmask(SIG_UNBLOCK, &one, NULL);
		raise(sig);
	}
	return NULL;
}

static void
started_cb(void *arg, int pid)
{
	struct proxy	*p = arg;
	struct run	*r = p->r;
	ssize_t		 n;

	(void)pid;
	p->phase = 1;
	if (r->notify_fd != -1) {
		n = write(r->notify_fd, "0 started\n", 10);
		(void)n;
		close(r->notify_fd);
		r->notify_fd = -1;
	}
}

/* The image's Env with the -e/--env-file values over it. */
static char **
merge_env(const cJSON *cfg, char **env)
{
	char	**v;
	size_t	  n, i, j, k;

	if ((v = config_strv(cfg, "Env")) == NULL)
		v = xcalloc(1, sizeof *v);
	for (n = 0; v[n] != NULL; n++)
		;
	for (i = 0; env != NULL && env[i] != NULL; i++) {
		k = strcspn(env[i], "=");
		for (j = 0; j < n; j++)
			if (strncmp(v[j], env[i], k) == 0 && v[j][k] == '=')
				break;
		if (j == n) {
			v = xreallocarray(v, n + 2, sizeof *v);
			v[n++] = NULL;
			v[n] = NULL;
		}
		free(v[j]);
		v[j] = xstrdup(env[i]);
	}
	return v;
}

/* End the proxy thread; signals get their old disposition back. */
static void
proxy_stop(struct proxy *p, const sigset_t *oldmask)
{
	pthread_cancel(p->thread);
	pthread_join(p->thread, NULL);
	pthread_sigmask(SIG_SETMASK, oldmask, NULL);
}

/* The holder: image, machine, ports, main process; state.json kept. */
static int
hold(struct run *r, struct container *c)
{
	struct smx_image_opts	 io;
	struct smx_vm_opts	 vo;
	struct smx_exec_opts	 eo;
	struct smx_exec_result	 res;
	struct smx		*smx;
	struct smx_image	*img = NULL;
	struct smx_vm		*vm = NULL;
	struct winsize		 ws;
	struct proxy		 proxy;
	sigset_t		 oldmask;
	static const int	 proxied[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT,
	    SIGUSR1, SIGUSR2 };
	char			 err[512], **argv = NULL, *vsock, *ctl;
	cJSON			*cfg;
	unsigned		 i;
	int			 error, status;

	/* Before any thread exists: they all inherit the mask. */
	memset(&proxy, 0, sizeof proxy);
	proxy.r = r;
	proxy.name = c->name;
	sigemptyset(&proxy.set);
	for (i = 0; i < ARRAY_SIZE(proxied); i++)
		sigaddset(&proxy.set, proxied[i]);
	pthread_sigmask(SIG_BLOCK, &proxy.set, &oldmask);
	if ((error = pthread_create(&proxy.thread, NULL, proxy_main,
	    &proxy)) != 0) {
		status = fail(r, EXIT_SMX, "cannot start a thread: %s",
		    strerror(error));
		goto out_remove;
	}
	if ((error = smx_open(&smx, 0)) != 0) {
		status = fail(r, EXIT_SMX, "cannot create the runtime: %s",
		    strerror(-error));
		goto out_proxy;
	}
	smx_image_opts_init(&io);
	io.pull = SMX_PULL_MISSING;
	io.progress_fd = r->detach ? -1 : 2;
	err[0] = '\0';
	if ((error = smx_image_open(smx, r->image, &io, &img, err,
	    sizeof err)) != 0) {
		status = fail(r, EXIT_SMX, "%s", err[0] ? err :
		    strerror(-error));
		goto out_close;
	}
	/* What smx exec needs to start processes as this one does. */
	cfg = image_config(smx_image_digest(img));
	argv = main_argv(r, cfg);
	c->env = merge_env(cfg, r->env);
	c->workdir = xstrdup(r->workdir ? r->workdir :
	    config_str(cfg, "WorkingDir"));
	c->user = xstrdup(r->user ? r->user : config_str(cfg, "User"));
	cJSON_Delete(cfg);

	vsock = container_path(c->name, "vsock");
	smx_vm_opts_init(&vo);
	vo.name = c->name;
	if (r->cpus)
		vo.cpus = (uint32_t)r->cpus;
	if (r->memory)
		vo.memory_mib = r->memory;
	vo.dax = r->dax;
	vo.volumes = r->vols;
	vo.nvolumes = r->nvols;
	vo.vsock_path = vsock;
	vo.snapshot = r->no_snapshot ? SMX_SNAPSHOT_NONE : SMX_SNAPSHOT_AUTO;
	err[0] = '\0';
	error = smx_vm_start(smx, img, &vo, &vm, err, sizeof err);
	free(vsock);
	if (error != 0) {
		status = fail(r, EXIT_SMX, "%s", err[0] ? err :
		    strerror(-error));
		goto out_image;
	}
	/* smx snapshot NAME reaches this process here. */
	ctl = container_path(c->name, "ctl");
	if (smx_vm_control(vm, ctl, err, sizeof err) != 0)
		log_warnx("%s: no control socket: %s", c->name, err);
	free(ctl);
	for (i = 0; i < r->nports; i++) {
		err[0] = '\0';
		if ((error = smx_vm_publish(vm, r->ports[i].ip,
		    r->ports[i].host, r->ports[i].guest, NULL, err,
		    sizeof err)) != 0) {
			status = fail(r, EXIT_SMX, "-p %s:%u:%u: %s",
			    r->ports[i].ip, r->ports[i].host,
			    r->ports[i].guest, err[0] ? err : strerror(-error));
			goto out_vm;
		}
	}
	free(c->status);
	c->status = xstrdup("running");
	container_save(c);

	smx_exec_opts_init(&eo);
	eo.argv = (const char *const *)argv;
	eo.env = (const char *const *)r->env;
	eo.cwd = r->workdir;
	eo.user = r->user;
	eo.main = 1;
	eo.tty = r->tty;
	eo.stdin_fd = r->interactive ? 0 : -1;
	eo.stdout_fd = 1;
	eo.stderr_fd = 2;
	eo.started_fn = started_cb;
	eo.started_arg = &proxy;
	if (r->tty && isatty(0) && ioctl(0, TIOCGWINSZ, &ws) == 0 &&
	    ws.ws_row > 0) {
		eo.rows = ws.ws_row;
		eo.cols = ws.ws_col;
	}
	if (r->tty && !r->detach && isatty(0)) {
		eo.winch_fd = 0;
		container_tty_raw();
	}
	memset(&res, 0, sizeof res);
	err[0] = '\0';
	error = smx_exec(vm, &eo, &res, err, sizeof err);
	container_tty_restore();
	if (error == 0) {
		status = res.status;
		smx_exec_result_free(&res);
	} else {
		status = fail(r, container_start_status(error), "%s", err[0] ? err :
		    strerror(-error));
	}
	proxy.phase = 2;
	free(c->status);
	c->status = xstrdup("exited");
	c->exit_code = status;
	c->finished = (int64_t)time(NULL);
	container_save(c);
out_vm:
	/* The guest may be gone already (poweroff, signal). */
	if (smx_vm_end(vm) == SMX_END_RUNNING)
		smx_vm_shutdown(vm, 0);
	smx_vm_free(vm);
	/* --rm, or it never ran (then it never existed, as with docker). */
	if (r->rm || strcmp(c->status, "exited") != 0)
		container_remove(c->name);
	strv_free(argv);
	smx_image_close(img);
	smx_close(smx);
	proxy_stop(&proxy, &oldmask);
	return status;
out_image:
	strv_free(argv);
	smx_image_close(img);
out_close:
	smx_close(smx);
out_proxy:
	proxy_stop(&proxy, &oldmask);
out_remove:
	/* It never ran: it never existed (docker leaves nothing either). */
	container_remove(c->name);
	return status;
}

/* -d: wait for the holder's word ("CODE message\n"), print the name. */
static int
detach_parent(struct run *r, int fd, pid_t child, const char *name)
{
	char	 buf[1200], *msg;
	int	 code;

	(void)r;
	if (container_holder_word(fd, buf, sizeof buf, &code, &msg) != 0) {
		char *log = container_path(name, "log");

		fprintf(stderr, "smx: run: the detached smx process (pid %ld) "
		    "ended before the container started; see %s\n",
		    (long)child, log);
		free(log);
		return EXIT_SMX;
	}
	if (code != 0) {
		fprintf(stderr, "smx: run: %s", msg + strspn(msg, " "));
		return code;
	}
	printf("%s\n", name);
	return CLI_EXIT_OK;
}

int
cmd_run(int argc, char **argv)
{
	struct run		 r;
	struct container	 c;
	struct image_ref	 ref;
	const char		*why;
	char			 id[65], *name, msg[256];
	unsigned		 i;
	int			 error, status, fds[2];
	pid_t			 pid;

	memset(&r, 0, sizeof r);
	r.notify_fd = -1;
	if (parse(&r, argc, argv) != 0)
		return EXIT_SMX;	/* docker's status for a bad command line */
	for (i = 0; i < r.nports; i++)
		if ((error = port_free(&r.ports[i])) != 0) {
			fprintf(stderr, "smx: run: -p: %s:%u: %s (pick another "
			    "host port)\n", r.ports[i].ip, r.ports[i].host,
			    error == -EADDRINUSE ? "port already in use" :
			    strerror(-error));
			return EXIT_SMX;
		}
	/* A bad reference is said before anything else is tried. */
	if (image_ref_parse(r.image, &ref, msg, sizeof msg) != 0) {
		fprintf(stderr, "smx: run: %s\n", msg);
		return EXIT_SMX;
	}
	switch (smx_kvm_probe(&why)) {
	case SMX_KVM_ABSENT:
		fprintf(stderr, "smx: run: no usable /dev/kvm%s%s (smx doctor "
		    "says what this host lacks)\n", why ? ": " : "",
		    why ? why : "");
		return EXIT_SMX;
	case SMX_KVM_PVM:
		fprintf(stderr, "smx: run: this host's /dev/kvm is PVM (KVM "
		    "without hardware virtualization), which cannot run a "
		    "Linux guest kernel; run it inside tools/kvm-harness "
		    "(QEMU with nested KVM): tools/kvm-harness smx run ...\n");
		return EXIT_SMX;
	default:
		break;
	}

	name = r.name ? xstrdup(r.name) : container_name_new();
	memset(&c, 0, sizeof c);
	container_id_new(id);
	c.name = name;
	c.id = id;
	c.image = (char *)r.image;
	c.command = command_string(&r);
	c.ports = ports_string(&r);
	c.created = (int64_t)time(NULL);
	c.status = xstrdup("created");
	container_set_holder(&c);
	if ((error = container_create(&c)) != 0) {
		if (error == -EEXIST)
			fprintf(stderr, "smx: run: the name %s is in use by a "
			    "container (smx rm %s, or pick another --name)\n",
			    name, name);
		else
			fprintf(stderr, "smx: run: cannot create the run "
			    "directory under %s: %s (set SMX_RUNDIR?)\n",
			    container_rundir(), strerror(-error));
		return EXIT_SMX;
	}

	if (r.detach) {
		if (pipe2(fds, O_CLOEXEC) == -1 || (pid = fork()) == -1) {
			fprintf(stderr, "smx: run: cannot detach: %s\n",
			    strerror(errno));
			container_remove(name);
			return EXIT_SMX;
		}
		if (pid > 0) {
			close(fds[1]);
			return detach_parent(&r, fds[0], pid, name);
		}
		/* The holder: its own session, stdio to the log (errors
		 * before the start also go to the parent, through fail()). */
		close(fds[0]);
		r.notify_fd = fds[1];
		setsid();
		if ((error = container_holder_stdio(name)) != 0)
			_exit(fail(&r, EXIT_SMX, "cannot open the log: %s",
			    strerror(-error)));
		container_set_holder(&c);
		container_save(&c);
		_exit(hold(&r, &c));
	}
	status = hold(&r, &c);
	free(c.command);
	free(c.ports);
	free(c.status);
	free(name);
	return status;
}
