/*
 * smx rm: remove containers' run directories; -f stops running ones
 * first (SIGTERM to the smx process holding the machine, then SIGKILL).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/cli/container.h"

void
cmd_rm_usage(FILE *f)
{
	fprintf(f, "usage: smx rm [-f] NAME...\n\n"
	    "Remove containers that have ended (name or id prefix).\n\n"
	    "  -f, --force   stop running ones first (their machines end\n"
	    "                at once)\n");
}

int
cmd_rm(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct container	 c;
	int			 ch, force = 0, rc = CLI_EXIT_OK, error;

	while ((ch = getopt_long(argc, argv, "fh", lopts, NULL)) != -1) {
		switch (ch) {
		case 'f':
			force = 1;
			break;
		case 'h':
			cmd_rm_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_rm_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind == argc) {
		cmd_rm_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	for (; optind < argc; optind++) {
		if (container_find("rm", argv[optind], &c) != 0) {
			rc = CLI_EXIT_ERROR;
			continue;
		}
		if (container_alive(&c)) {
			if (!force) {
				fprintf(stderr, "smx: rm: %s is running: smx "
				    "stop %s first, or smx rm -f\n", c.name,
				    c.name);
				rc = CLI_EXIT_ERROR;
				container_free(&c);
				continue;
			}
			/* The holder stops its machine on SIGTERM. */
			kill((pid_t)c.pid, SIGTERM);
			if (container_wait(&c, 10000) != 0) {
				kill((pid_t)c.pid, SIGKILL);
				container_wait(&c, 5000);
			}
		}
		if ((error = container_remove(c.name)) != 0) {
			fprintf(stderr, "smx: rm: %s: %s\n", c.name,
			    strerror(-error));
			rc = CLI_EXIT_ERROR;
		} else {
			printf("%s\n", c.name);
		}
		container_free(&c);
	}
	return rc;
}
