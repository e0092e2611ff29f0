/*
 * smx kill: send a signal to containers' main processes, through their
 * agents.  Also the helpers smx stop shares.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/agent.h"
#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/cli/container.h"

static const struct {
	const char	*name;
	int		 sig;
} signames[] = {
	{ "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT },
	{ "KILL", SIGKILL }, { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 },
	{ "TERM", SIGTERM }, { "CONT", SIGCONT }, { "STOP", SIGSTOP },
	{ "ALRM", SIGALRM }, { "WINCH", SIGWINCH },
};

void
cmd_kill_usage(FILE *f)
{
	fprintf(f, "usage: smx kill [-s SIGNAL] NAME...\n\n"
	    "Send SIGNAL (default KILL) to the main process of running\n"
	    "containers.  SIGNAL is a number or a name (TERM, SIGTERM).\n");
}

/* "TERM", "SIGTERM", "15" -> 15; -1 when unknown. */
int
container_signal_parse(const char *s)
{
	unsigned long long	v;
	size_t			i;

	if (cli_number(s, 1, 64, &v) == 0)
		return (int)v;
	if (strncasecmp(s, "SIG", 3) == 0)
		s += 3;
	for (i = 0; i < ARRAY_SIZE(signames); i++)
		if (strcasecmp(s, signames[i].name) == 0)
			return signames[i].sig;
	return -1;
}

int
container_signal(const char *cmd, const struct container *c, int sig)
{
	char	err[256];
	int	fd, error;

	if ((fd = container_agent_connect(cmd, c)) < 0)
		return fd;
	err[0] = '\0';
	error = agent_kill(fd, sig, err, sizeof err);
	close(fd);
	if (error != 0)
		fprintf(stderr, "smx: %s: %s: %s\n", cmd, c->name,
		    err[0] ? err : strerror(-error));
	return error;
}

int
cmd_kill(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "signal", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct container	c;
	int			ch, sig = SIGKILL, rc = CLI_EXIT_OK;

	while ((ch = getopt_long(argc, argv, "s:h", lopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			if ((sig = container_signal_parse(optarg)) < 0) {
				fprintf(stderr, "smx: kill: unknown signal "
				    "%s\n", optarg);
				return CLI_EXIT_USAGE;
			}
			break;
		case 'h':
			cmd_kill_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_kill_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind == argc) {
		cmd_kill_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	for (; optind < argc; optind++) {
		if (container_find("kill", argv[optind], &c) != 0) {
			rc = CLI_EXIT_ERROR;
			continue;
		}
		if (strcmp(container_state(&c), "running") != 0) {
			fprintf(stderr, "smx: kill: container %s is not "
			    "running\n", c.name);
			rc = CLI_EXIT_ERROR;
		} else if (container_signal("kill", &c, sig) != 0) {
			rc = CLI_EXIT_ERROR;
		} else {
			printf("%s\n", c.name);
		}
		container_free(&c);
	}
	return rc;
}
