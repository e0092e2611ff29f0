/*
 * smx stop: SIGTERM to a container's main process, SIGKILL after a
 * grace period; the machine ends with it (its holder powers it off).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/cli/container.h"

void
cmd_stop_usage(FILE *f)
{
	fprintf(f, "usage: smx stop [-t SECS] NAME...\n\n"
	    "Stop running containers: SIGTERM to the main process, SIGKILL\n"
	    "after SECS (default 10); the machine ends with it.\n\n"
	    "  -t, --time SECS   the grace period\n");
}

/* Stop one container; 0 or -1. */
static int
stop(struct container *c, unsigned long long secs)
{
	const char	*st = container_state(c);

	if (strcmp(st, "running") != 0 && strcmp(st, "created") != 0)
		return 0;	/* docker: stopping a stopped one is fine */
	if (strcmp(st, "running") == 0 &&
	    container_signal("stop", c, SIGTERM) == 0 &&
	    container_wait(c, secs * 1000) == 0)
		return 0;
	if (container_alive(c) && strcmp(st, "running") == 0)
		container_signal("stop", c, SIGKILL);
	if (container_wait(c, 5000) == 0)
		return 0;
	/* The agent does not answer: end the machine from the host (the
	 * holder stops its machines on SIGTERM). */
	kill((pid_t)c->pid, SIGTERM);
	if (container_wait(c, 5000) == 0)
		return 0;
	kill((pid_t)c->pid, SIGKILL);
	if (container_wait(c, 2000) == 0)
		return 0;
	fprintf(stderr, "smx: stop: %s: its smx process %ld does not end\n",
	    c->name, c->pid);
	return -1;
}

int
cmd_stop(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "time", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct container	c;
	unsigned long long	secs = 10;
	int			ch, rc = CLI_EXIT_OK;

	while ((ch = getopt_long(argc, argv, "t:h", lopts, NULL)) != -1) {
		switch (ch) {
		case 't':
			if (cli_number(optarg, 0, 86400, &secs) != 0) {
				fprintf(stderr, "smx: stop: -t %s: want "
				    "seconds\n", optarg);
				return CLI_EXIT_USAGE;
			}
			break;
		case 'h':
			cmd_stop_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_stop_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind == argc) {
		cmd_stop_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	for (; optind < argc; optind++) {
		if (container_find("stop", argv[optind], &c) != 0) {
			rc = CLI_EXIT_ERROR;
			continue;
		}
		if (stop(&c, secs) != 0)
			rc = CLI_EXIT_ERROR;
		else
			printf("%s\n", c.name);
		container_free(&c);
	}
	return rc;
}
