/*
 * smx snapshot NAME -o DIR [--diff BASE]: snapshot a running container.
 * The machine lives in another process (the container's holder, see
 * core/cli/container.h); this one asks it through the control socket
 * "ctl" in the container's run directory (smx_vm_control: one JSON
 * line each way).  The machine goes on running.
 *
 * Also the container half of `smx restore DIR --name N [-p ...]`:
 * cli_restore_container() starts a detached holder that restores DIR
 * as container N and serves it until it is stopped.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/cli/container.h"
#include "core/smx.h"

#define CTL_TIMEOUT_MS	600000	/* a snapshot writes all of RAM */
#define MAX_PORTS	8

struct rport {
	char		ip[INET6_ADDRSTRLEN];
	uint16_t	host, guest;
};

static void
snapshot_vm_usage(FILE *f)
{
	fprintf(f, "usage: smx snapshot NAME -o DIR [--diff BASE]\n");
}

/* path made absolute against the current directory; malloc'd. */
static char *
absolute(const char *path)
{
	char	cwd[PATH_MAX], *p;

	if (path[0] == '/' || getcwd(cwd, sizeof cwd) == NULL)
		return xstrdup(path);
	xasprintf(&p, "%s/%s", cwd, path);
	return p;
}

/* Send one request line to a container's control socket and read the
 * answer: 0, or -errno with the reason in err. */
static int
ctl_call(const struct container *c, const char *line, char *err,
    size_t errlen)
{
	struct sockaddr_un	 sa;
	struct pollfd		 pfd;
	const cJSON		*ok, *why;
	cJSON			*m;
	char			*path, buf[1024];
	size_t			 n = 0;
	ssize_t			 k;
	int			 fd, error = 0;

	path = container_path(c->name, "ctl");
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof sa) == -1) {
		error = -errno;
		snprintf(err, errlen, "cannot reach %s's smx process at %s: "
		    "%s (is the container running?)", c->name, path,
		    strerror(errno));
		goto out;
	}
	if (send(fd, line, strlen(line), MSG_NOSIGNAL) == -1) {
		error = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	pfd.fd = fd;
	pfd.events = POLLIN;
	while (n < sizeof buf - 1 && memchr(buf, '\n', n) == NULL) {
		if (poll(&pfd, 1, CTL_TIMEOUT_MS) == 0) {
			error = -ETIMEDOUT;
			snprintf(err, errlen, "%s: no answer", path);
			goto out;
		}
		if ((k = read(fd, buf + n, sizeof buf - 1 - n)) <= 0) {
			if (k < 0 && errno == EINTR)
				continue;
			break;
		}
		n += (size_t)k;
	}
	buf[n] = '\0';
	m = cJSON_Parse(buf);
	ok = cJSON_GetObjectItemCaseSensitive(m, "ok");
	why = cJSON_GetObjectItemCaseSensitive(m, "error");
	if (!cJSON_IsTrue(ok)) {
		error = -EIO;
		snprintf(err, errlen, "%s", cJSON_IsString(why) ?
		    why->valuestring : "the container's smx process gave no "
		    "answer (it may have ended)");
	}
	cJSON_Delete(m);
out:
	if (fd != -1)
		close(fd);
	free(path);
	return error;
}

int
cmd_snapshot_vm(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "output",	required_argument, NULL, 'o' },
		{ "diff",	required_argument, NULL, 'D' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct container	 c;
	const char		*out = NULL, *base = NULL;
	char			 err[768], *line, *json;
	cJSON			*m;
	int			 ch, status = CLI_EXIT_ERROR;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'o':
			out = optarg;
			break;
		case 'D':
			base = optarg;
			break;
		case 'h':
			snapshot_vm_usage(stdout);
			return CLI_EXIT_OK;
		default:
			snapshot_vm_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || out == NULL) {
		snapshot_vm_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (container_find("snapshot", argv[optind], &c) != 0)
		return CLI_EXIT_ERROR;
	if (strcmp(container_state(&c), "running") != 0) {
		fprintf(stderr, "smx: snapshot: %s is not running (%s)\n",
		    c.name, container_state(&c));
		goto out;
	}
	m = cJSON_CreateObject();
	cJSON_AddStringToObject(m, "op", "snapshot");
	line = absolute(out);
	cJSON_AddStringToObject(m, "dir", line);
	free(line);
	if (base != NULL) {
		line = absolute(base);
		cJSON_AddStringToObject(m, "base", line);
		free(line);
	}
	json = cJSON_PrintUnformatted(m);
	cJSON_Delete(m);
	xasprintf(&line, "%s\n", json);
	free(json);
	if (ctl_call(&c, line, err, sizeof err) != 0)
		fprintf(stderr, "smx: snapshot: %s: %s\n", c.name, err);
	else {
		printf("%s\n", out);
		status = CLI_EXIT_OK;
	}
	free(line);
out:
	container_free(&c);
	return status;
}

/* -p [IP:]HPORT:GPORT */
static int
port_parse(const char *s, struct rport *p)
{
	char			 buf[128], *a, *b;
	unsigned long long	 h, g;

	snprintf(buf, sizeof buf, "%s", s);
	snprintf(p->ip, sizeof p->ip, "127.0.0.1");
	if ((b = strrchr(buf, ':')) == NULL)
		return -1;
	*b++ = '\0';
	if ((a = strrchr(buf, ':')) != NULL) {
		*a++ = '\0';
		if (strlen(buf) >= sizeof p->ip)
			return -1;
		memcpy(p->ip, buf, strlen(buf) + 1);
	} else
		a = buf;
	if (cli_number(a, 1, 65535, &h) != 0 || cli_number(b, 1, 65535,
	    &g) != 0)
		return -1;
	p->host = (uint16_t)h;
	p->guest = (uint16_t)g;
	return 0;
}

/* The holder: restore, publish, serve until the machine ends.  Writes
 * "CODE message\n" to notify once the container runs or failed. */
static int
restore_hold(const char *dir, struct container *c,
    const struct rport *ports, unsigned nports, int notify)
{
	struct smx_restore_opts	 ro;
	struct smx		*smx;
	struct smx_vm		*vm = NULL;
	char			 err[512], *vsock, *ctl;
	unsigned		 i;
	int			 error, status = CONTAINER_EXIT_SMX;

	err[0] = '\0';
	if ((error = smx_open(&smx, SMX_OPEN_SIGNALS)) != 0) {
		snprintf(err, sizeof err, "cannot create the runtime: %s",
		    strerror(-error));
		goto out;
	}
	vsock = container_path(c->name, "vsock");
	smx_restore_opts_init(&ro);
	ro.name = c->name;
	ro.vsock_path = vsock;
	error = smx_restore(smx, dir, &ro, &vm, err, sizeof err);
	free(vsock);
	if (error != 0)
		goto out_close;
	for (i = 0; i < nports; i++)
		if ((error = smx_vm_publish(vm, ports[i].ip, ports[i].host,
		    ports[i].guest, NULL, err, sizeof err)) != 0)
			goto out_vm;
	ctl = container_path(c->name, "ctl");
	error = smx_vm_control(vm, ctl, err, sizeof err);
	free(ctl);
	if (error != 0)
		goto out_vm;
	free(c->status);
	c->status = xstrdup("running");
	container_save(c);
	dprintf(notify, "0 restored\n");
	close(notify);
	notify = -1;
	(void)smx_run(smx);
	status = smx_stop_signal(smx) != 0 ? 128 + smx_stop_signal(smx) : 0;
	free(c->status);
	c->status = xstrdup("exited");
	c->exit_code = status;
	c->finished = (int64_t)time(NULL);
	container_save(c);
out_vm:
	if (smx_vm_end(vm) == SMX_END_RUNNING)
		smx_vm_shutdown(vm, 0);
	smx_vm_free(vm);
out_close:
	smx_close(smx);
out:
	if (notify != -1) {
		dprintf(notify, "%d %s\n", CONTAINER_EXIT_SMX, err[0] ? err :
		    strerror(-error));
		container_remove(c->name);
	}
	return status;
}

int
cli_restore_container(const char *dir, const char *name, char **ports,
    unsigned nports)
{
	struct rport		 pt[MAX_PORTS];
	struct container	 c;
	char			 id[65], buf[700], *msg, *adir;
	int			 fds[2], error, code;
	pid_t			 pid;

	if (nports > MAX_PORTS) {
		fprintf(stderr, "smx: restore: at most %d -p\n", MAX_PORTS);
		return CLI_EXIT_USAGE;
	}
	for (unsigned i = 0; i < nports; i++)
		if (port_parse(ports[i], &pt[i]) != 0) {
			fprintf(stderr, "smx: restore: -p %s: want "
			    "[IP:]HOSTPORT:GUESTPORT\n", ports[i]);
			return CLI_EXIT_USAGE;
		}
	if (container_name_valid(name) != 0) {
		fprintf(stderr, "smx: restore: --name %s: use letters, digits, "
		    "'.' and '-'\n", name);
		return CLI_EXIT_USAGE;
	}
	memset(&c, 0, sizeof c);
	container_id_new(id);
	c.name = (char *)name;
	c.id = id;
	adir = absolute(dir);
	xasprintf(&c.image, "snapshot:%s", adir);
	c.command = xstrdup("");
	c.ports = xstrdup("");
	c.created = (int64_t)time(NULL);
	c.status = xstrdup("created");
	container_set_holder(&c);
	if ((error = container_create(&c)) != 0) {
		fprintf(stderr, "smx: restore: %s\n", error == -EEXIST ?
		    "the name is in use by a container (smx rm it, or pick "
		    "another --name)" : strerror(-error));
		return CLI_EXIT_ERROR;
	}
	/* Fork before the runtime exists: its threads do not survive it. */
	if (pipe2(fds, O_CLOEXEC) == -1 || (pid = fork()) == -1) {
		fprintf(stderr, "smx: restore: cannot detach: %s\n",
		    strerror(errno));
		container_remove(name);
		return CLI_EXIT_ERROR;
	}
	if (pid == 0) {
		close(fds[0]);
		setsid();
		/* No log: the holder still runs, its output is lost. */
		(void)container_holder_stdio(name);
		container_set_holder(&c);
		container_save(&c);
		_exit(restore_hold(adir, &c, pt, nports, fds[1]));
	}
	close(fds[1]);
	free(adir);
	if (container_holder_word(fds[0], buf, sizeof buf, &code, &msg) != 0) {
		fprintf(stderr, "smx: restore: the smx process holding %s "
		    "ended first (see smx logs %s)\n", name, name);
		return CLI_EXIT_ERROR;
	}
	if (code != 0) {
		fprintf(stderr, "smx: restore: %s", msg + strspn(msg, " "));
		return CLI_EXIT_ERROR;
	}
	printf("%s\n", name);
	return CLI_EXIT_OK;
}
