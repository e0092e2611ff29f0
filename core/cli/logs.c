/*
 * smx logs: the output of a detached container's main process (its run
 * directory's log), once or followed while the container runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/cli/container.h"

void
cmd_logs_usage(FILE *f)
{
	fprintf(f, "usage: smx logs [-f] NAME\n\n"
	    "Print the output (stdout and stderr) of container NAME's main\n"
	    "process, kept for containers started with smx run -d.\n\n"
	    "  -f, --follow   keep printing until the container ends\n");
}

/* Copy what fd holds from here to its end to stdout.  0 or -errno. */
static int
drain(int fd)
{
	char	buf[65536];
	ssize_t	n;

	while ((n = read(fd, buf, sizeof buf)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n)
			return -EIO;
	}
	fflush(stdout);
	return 0;
}

int
cmd_logs(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "follow", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct container	 c;
	char			*path;
	int			 ch, follow = 0, fd, error, alive;

	while ((ch = getopt_long(argc, argv, "fh", lopts, NULL)) != -1) {
		switch (ch) {
		case 'f':
			follow = 1;
			break;
		case 'h':
			cmd_logs_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_logs_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		cmd_logs_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (container_find("logs", argv[optind], &c) != 0)
		return CLI_EXIT_ERROR;
	path = container_path(c.name, "log");
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		error = errno;
		if (error == ENOENT)
			fprintf(stderr, "smx: logs: %s keeps no log (only "
			    "containers started with smx run -d do)\n",
			    c.name);
		else
			fprintf(stderr, "smx: logs: %s: %s\n", path,
			    strerror(error));
		free(path);
		container_free(&c);
		return CLI_EXIT_ERROR;
	}
	free(path);
	for (;;) {
		/* Look before reading: what a dead holder wrote is all. */
		alive = follow && container_alive(&c);
		if ((error = drain(fd)) != 0) {
			fprintf(stderr, "smx: logs: %s\n", strerror(-error));
			break;
		}
		if (!alive)
			break;
		usleep(100000);
	}
	close(fd);
	container_free(&c);
	return error ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}
