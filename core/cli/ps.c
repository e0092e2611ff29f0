/*
 * smx ps: the containers of this host's run directory, as a table or
 * their ids.  A holder process that is gone without saying how its
 * container ended shows as "Dead".
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/cli/container.h"

void
cmd_ps_usage(FILE *f)
{
	fprintf(f, "usage: smx ps [-a] [-q]\n\n"
	    "List running containers: CONTAINER ID, IMAGE, COMMAND, CREATED,\n"
	    "STATUS, PORTS, NAMES.\n\n"
	    "  -a, --all     also the ones that ended (Exited, Dead)\n"
	    "  -q, --quiet   only their ids\n");
}

int
cmd_ps(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "all", no_argument, NULL, 'a' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct container	*v;
	size_t			 n, i;
	int			 ch, all = 0, quiet = 0, error;
	int64_t			 now = (int64_t)time(NULL);
	char			 age[64], status[96], cmd[32];
	const char		*st;

	while ((ch = getopt_long(argc, argv, "aqh", lopts, NULL)) != -1) {
		switch (ch) {
		case 'a':
			all = 1;
			break;
		case 'q':
			quiet = 1;
			break;
		case 'h':
			cmd_ps_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_ps_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		cmd_ps_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if ((error = container_list(&v, &n)) != 0) {
		fprintf(stderr, "smx: ps: %s: %s\n", container_rundir(),
		    strerror(-error));
		return CLI_EXIT_ERROR;
	}
	if (!quiet)
		printf("%-12s   %-20s %-22s %-16s %-24s %-28s %s\n",
		    "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
		    "PORTS", "NAMES");
	for (i = 0; i < n; i++) {
		st = container_state(&v[i]);
		if (!all && strcmp(st, "running") != 0 &&
		    strcmp(st, "created") != 0)
			continue;
		if (quiet) {
			printf("%.12s\n", v[i].id);
			continue;
		}
		if (strcmp(st, "running") == 0) {
			container_age(now - v[i].created, age, sizeof age);
			snprintf(status, sizeof status, "Up %s", age);
		} else if (strcmp(st, "exited") == 0) {
			container_age(now - v[i].finished, age, sizeof age);
			snprintf(status, sizeof status, "Exited (%d) %s ago",
			    v[i].exit_code, age);
		} else if (strcmp(st, "created") == 0) {
			snprintf(status, sizeof status, "Starting");
		} else {
			snprintf(status, sizeof status, "Dead");
		}
		container_age(now - v[i].created, age, sizeof age);
		snprintf(cmd, sizeof cmd, "\"%.18s%s\"", v[i].command,
		    strlen(v[i].command) > 18 ? "..." : "");
		printf("%.12s   %-20s %-22s %-16s %-24s %-28s %s\n", v[i].id,
		    v[i].image, *v[i].command ? cmd : "(image's)", strcat(age,
		    " ago"), status, v[i].ports, v[i].name);
	}
	container_list_free(v, n);
	return CLI_EXIT_OK;
}
