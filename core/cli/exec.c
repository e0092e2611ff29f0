/*
 * smx exec: run a further process in a running container, from this
 * process through the machine's vsock socket.  It starts with the
 * container's environment, working directory and user (smx run's, over
 * the image's); its exit status is ours, docker's way.
 */
#include <sys/ioctl.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/agent.h"
#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/cli/container.h"

void
cmd_exec_usage(FILE *f)
{
	fprintf(f, "usage: smx exec [OPTIONS] NAME CMD [ARGS...]\n\n"
	    "Run CMD in running container NAME; exit with its status (126:\n"
	    "it cannot be executed, 127: not found, 125: smx failed).\n\n"
	    "  -i, --interactive   pipe stdin to CMD (else it is empty)\n"
	    "  -t, --tty           a terminal (this one is put in raw mode)\n"
	    "  -e, --env K=V       set a variable\n"
	    "  -w, --workdir DIR   working directory\n"
	    "  -u, --user USER     user[:group], names or numbers\n");
}

/* env with the KEY=VALUE kv set (replacing its KEY); returns env. */
static char **
env_set(char **env, const char *kv)
{
	size_t	n, k = strcspn(kv, "=");

	for (n = 0; env[n] != NULL; n++)
		if (strncmp(env[n], kv, k) == 0 && env[n][k] == '=') {
			free(env[n]);
			env[n] = xstrdup(kv);
			return env;
		}
	env = xreallocarray(env, n + 2, sizeof *env);
	env[n] = xstrdup(kv);
	env[n + 1] = NULL;
	return env;
}

int
cmd_exec(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "interactive", no_argument, NULL, 'i' },
		{ "tty", no_argument, NULL, 't' },
		{ "env", required_argument, NULL, 'e' },
		{ "workdir", required_argument, NULL, 'w' },
		{ "user", required_argument, NULL, 'u' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct container	 c;
	struct agent_exec	 x;
	struct agent_exec_result res;
	struct winsize		 ws;
	const char		*workdir = NULL, *user = NULL;
	char			 err[512], *kv;
	int			 ch, interactive = 0, tty = 0, fd, error, status;
	char			**setenv_v = NULL;
	size_t			 nset = 0, i;

	while ((ch = getopt_long(argc, argv, "+ite:w:u:h", lopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'i':
			interactive = 1;
			break;
		case 't':
			tty = 1;
			break;
		case 'e':
			if (strchr(optarg, '=') != NULL)
				kv = xstrdup(optarg);
			else if (getenv(optarg) != NULL)
				xasprintf(&kv, "%s=%s", optarg, getenv(optarg));
			else
				break;
			setenv_v = xreallocarray(setenv_v, nset + 1,
			    sizeof *setenv_v);
			setenv_v[nset++] = kv;
			break;
		case 'w':
			workdir = optarg;
			break;
		case 'u':
			user = optarg;
			break;
		case 'h':
			cmd_exec_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_exec_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (argc - optind < 2) {
		cmd_exec_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (container_find("exec", argv[optind], &c) != 0)
		return CONTAINER_EXIT_SMX;
	if (strcmp(container_state(&c), "running") != 0) {
		fprintf(stderr, "smx: exec: container %s is not running (smx "
		    "ps -a)\n", c.name);
		container_free(&c);
		return CONTAINER_EXIT_SMX;
	}
	for (i = 0; i < nset; i++) {
		c.env = env_set(c.env, setenv_v[i]);
		free(setenv_v[i]);
	}
	free(setenv_v);
	if ((fd = container_agent_connect("exec", &c)) < 0) {
		container_free(&c);
		return CONTAINER_EXIT_SMX;
	}
	agent_exec_init(&x);
	x.argv = (const char *const *)(argv + optind + 1);
	x.env = (const char *const *)c.env;
	x.cwd = workdir ? workdir : (*c.workdir ? c.workdir : NULL);
	x.user = user ? user : (*c.user ? c.user : NULL);
	x.tty = tty;
	x.stdin_fd = interactive ? 0 : -1;
	x.stdout_fd = 1;
	x.stderr_fd = 2;
	x.flags = AGENT_EXEC_SIGNALS;
	if (tty && isatty(0)) {
		if (ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0) {
			x.rows = ws.ws_row;
			x.cols = ws.ws_col;
		}
		x.flags |= AGENT_EXEC_WINCH;
		x.winch_fd = 0;
		container_tty_raw();
	}
	memset(&res, 0, sizeof res);
	err[0] = '\0';
	error = agent_exec(fd, &x, &res, err, sizeof err);
	container_tty_restore();
	close(fd);
	if (error == 0) {
		status = res.status;
		agent_exec_result_free(&res);
	} else {
		if (err[0] != '\0')
			fprintf(stderr, "smx: exec: %s\n", err);
		else
			fprintf(stderr, "smx: exec: %s: %s\n", argv[optind + 1],
			    strerror(-error));
		status = container_start_status(error);
	}
	container_free(&c);
	return status;
}
