/*
 * smx cp: copy a regular file into or out of a running container,
 * through its agent.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/agent.h"
#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/cli/container.h"

void
cmd_cp_usage(FILE *f)
{
	fprintf(f, "usage: smx cp HOSTFILE NAME:PATH\n"
	    "       smx cp NAME:PATH HOSTPATH\n\n"
	    "Copy a regular file into or out of running container NAME.  A\n"
	    "PATH ending in '/' or naming a directory gets the file's own\n"
	    "name inside it; so does a HOSTPATH that is a directory.\n");
}

/* "NAME:PATH" with NAME a container: split it (1), else 0. */
static int
container_arg(const char *s, char **name, char **path)
{
	const char	*colon = strchr(s, ':');

	if (colon == NULL || colon == s || colon[1] != '/')
		return 0;
	*name = xstrdup(s);
	(*name)[colon - s] = '\0';
	if (container_name_valid(*name) != 0) {
		free(*name);
		return 0;
	}
	*path = xstrdup(colon + 1);
	return 1;
}

static int
put(struct container *c, const char *host, const char *guest)
{
	struct stat	 st;
	char		 err[512], *base, *tmp, *dst;
	int		 src, fd, error;

	if ((src = open(host, O_RDONLY | O_CLOEXEC)) == -1 ||
	    fstat(src, &st) == -1) {
		fprintf(stderr, "smx: cp: %s: %s\n", host, strerror(errno));
		if (src != -1)
			close(src);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		fprintf(stderr, "smx: cp: %s: not a regular file (smx cp "
		    "copies files)\n", host);
		close(src);
		return -1;
	}
	tmp = xstrdup(host);
	base = basename(tmp);
	if (guest[strlen(guest) - 1] == '/')
		xasprintf(&dst, "%s%s", guest, base);
	else
		dst = xstrdup(guest);
	for (int tries = 0;; tries++) {
		if ((fd = container_agent_connect("cp", c)) < 0) {
			error = fd;
			break;
		}
		err[0] = '\0';
		error = agent_put_fd(fd, dst, st.st_mode & 07777, src, err,
		    sizeof err);
		close(fd);
		/* A directory there: the file goes inside it. */
		if (error == -EISDIR && tries == 0 &&
		    lseek(src, 0, SEEK_SET) == 0) {
			char *d;

			xasprintf(&d, "%s/%s", dst, base);
			free(dst);
			dst = d;
			continue;
		}
		if (error != 0)
			fprintf(stderr, "smx: cp: %s:%s: %s\n", c->name, dst,
			    err[0] ? err : strerror(-error));
		break;
	}
	close(src);
	free(dst);
	free(tmp);
	return error ? -1 : 0;
}

static int
get(struct container *c, const char *guest, const char *host)
{
	struct stat	 st;
	char		 err[512], *tmp, *dst, *part;
	unsigned	 mode = 0644;
	int		 out, fd, error;

	if (stat(host, &st) == 0 && S_ISDIR(st.st_mode)) {
		tmp = xstrdup(guest);
		xasprintf(&dst, "%s/%s", host, basename(tmp));
		free(tmp);
	} else {
		dst = xstrdup(host);
	}
	/* Into a temporary beside it: a failed copy leaves nothing. */
	xasprintf(&part, "%s.smx-cp%ld", dst, (long)getpid());
	if ((out = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1) {
		fprintf(stderr, "smx: cp: %s: %s\n", part, strerror(errno));
		free(part);
		free(dst);
		return -1;
	}
	if ((fd = container_agent_connect("cp", c)) < 0) {
		error = fd;
	} else {
		err[0] = '\0';
		error = agent_get_fd(fd, guest, out, &mode, err, sizeof err);
		close(fd);
		if (error != 0)
			fprintf(stderr, "smx: cp: %s:%s: %s\n", c->name, guest,
			    err[0] ? err : strerror(-error));
	}
	if (error == 0 && (fchmod(out, mode & 07777) == -1 ||
	    close(out) == -1 || rename(part, dst) == -1)) {
		fprintf(stderr, "smx: cp: %s: %s\n", dst, strerror(errno));
		error = -1;
		out = -1;
	} else if (error == 0) {
		out = -1;
	}
	if (error != 0) {
		if (out != -1)
			close(out);
		unlink(part);
	}
	free(part);
	free(dst);
	return error ? -1 : 0;
}

int
cmd_cp(int argc, char **argv)
{
	struct container	 c;
	char			*name, *path;
	int			 rc, into;

	if (argc == 2 && (strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0)) {
		cmd_cp_usage(stdout);
		return CLI_EXIT_OK;
	}
	if (argc != 3) {
		cmd_cp_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (container_arg(argv[2], &name, &path))
		into = 1;
	else if (container_arg(argv[1], &name, &path))
		into = 0;
	else {
		fprintf(stderr, "smx: cp: one side must be NAME:/PATH (a "
		    "container and an absolute path in it)\n");
		return CLI_EXIT_USAGE;
	}
	if (container_find("cp", name, &c) != 0) {
		free(name);
		free(path);
		return CLI_EXIT_ERROR;
	}
	if (strcmp(container_state(&c), "running") != 0) {
		fprintf(stderr, "smx: cp: container %s is not running\n",
		    c.name);
		rc = -1;
	} else if (into) {
		rc = put(&c, argv[1], path);
	} else {
		rc = get(&c, path, argv[2]);
	}
	container_free(&c);
	free(name);
	free(path);
	return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}
