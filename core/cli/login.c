/*
 * smx login / smx logout: registry credentials in docker's config.json
 * (or its credential helper), shared with docker.  Login checks the
 * credentials against the registry before saving anything.  A password
 * on the command line is refused (docker only warns): it would show in
 * ps and in the shell's history.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "image/image.h"
#include "reactor/reactor.h"

#define SECRET_MAX	(64u << 10)

void
cmd_login_usage(FILE *f)
{
	fprintf(f, "usage: smx login [-u USER] [--password-stdin] [--insecure] "
	    "REGISTRY\n\n"
	    "Check USER's password with REGISTRY (\"host[:port]\", "
	    "\"docker.io\") and save\nthem for pulls, in docker's "
	    "config.json ($DOCKER_CONFIG, else ~/.docker)\nor with the "
	    "credential helper it names (credsStore, credHelpers).\n"
	    "On a terminal USER and the password are asked for (the "
	    "password\nwithout echo); otherwise give -u and the password on "
	    "stdin with\n--password-stdin.  A password on the command line "
	    "is refused.\n--insecure talks plain HTTP to REGISTRY.  Exits 1 "
	    "when the registry\nrefuses, 2 on a bad command line.\n");
}

void
cmd_logout_usage(FILE *f)
{
	fprintf(f, "usage: smx logout REGISTRY\n\n"
	    "Forget the credentials saved for REGISTRY (in config.json and "
	    "its\ncredential helper).\n");
}

static struct termios	saved_tio;
static volatile sig_atomic_t echo_off;

/* ^C at the password prompt: give the terminal its echo back. */
static void
restore_tty(int signo)
{
	if (echo_off)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
	signal(signo, SIG_DFL);
	raise(signo);
}

/* Ask for one line on the terminal (without echo when secret). */
static char *
prompt(const char *what, bool secret)
{
	struct termios	 tio;
	char		*line = NULL;
	size_t		 cap = 0;
	ssize_t		 n;

	/* Echo goes off before the prompt shows: what is typed after it
	 * is never echoed nor flushed. */
	if (secret && tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
		signal(SIGINT, restore_tty);
		signal(SIGTERM, restore_tty);
		tio = saved_tio;
		tio.c_lflag &= ~(ECHO | ECHONL);
		if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &tio) == 0)
			echo_off = 1;
	}
	fprintf(stderr, "%s: ", what);
	fflush(stderr);
	n = getline(&line, &cap, stdin);
	if (echo_off) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
		echo_off = 0;
		fputc('\n', stderr);
	}
	if (secret) {
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
	}
	if (n <= 0) {
		free(line);
		return NULL;
	}
	line[strcspn(line, "\r\n")] = '\0';
	return line;
}

/* The whole of stdin, less one trailing newline (as docker reads it). */
static char *
read_stdin(void)
{
	char	*buf = xmalloc(SECRET_MAX + 1);
	size_t	 len = 0;
	ssize_t	 n;

	while (len < SECRET_MAX && (n = read(STDIN_FILENO, buf + len,
	    SECRET_MAX - len)) != 0) {
		if (n == -1) {
			if (errno == EINTR)
				continue;
			free(buf);
			return NULL;
		}
		len += n;
	}
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	buf[len] = '\0';
	return buf;
}

struct login_state {
	bool	 ended;
	int	 error;
	char	*message;
	struct reactor *reactor;
};

static void
login_cb(const struct image_pull_event *ev, void *arg)
{
	struct login_state	*st = arg;

	if (ev->kind != IMAGE_PULL_DONE && ev->kind != IMAGE_PULL_FAILED)
		return;
	st->ended = true;
	st->error = ev->kind == IMAGE_PULL_DONE ? 0 :
	    (ev->error != 0 ? ev->error : -EIO);
	if (ev->message != NULL)
		st->message = xstrdup(ev->message);
	reactor_stop(st->reactor);
}

/* Ask the registry; 0 when it accepts user/pass. */
static int
verify(const char *host, const char *user, const char *pass,
    bool insecure)
{
	struct login_state	 st = { 0 };
	struct image_pull_opts	 o;
	struct image_pull	*p;
	const char		*ins[2] = { host, NULL };
	int			 rc = CLI_EXIT_ERROR;

	if ((st.reactor = reactor_create()) == NULL) {
		fprintf(stderr, "smx: login: cannot create the event loop\n");
		return CLI_EXIT_ERROR;
	}
	image_pull_opts_init(&o);
	o.insecure = insecure ? ins : NULL;
	o.retries = 2;
	if ((p = image_login_start(st.reactor, host, user, pass, &o,
	    login_cb, &st)) == NULL) {
		fprintf(stderr, "smx: login: cannot reach %s: %s\n", host,
		    strerror(errno));
		goto out;
	}
	while (!st.ended)
		if (reactor_run(st.reactor) != 0)
			break;
	image_pull_free(p);
	if (!st.ended || st.error != 0) {
		fprintf(stderr, "smx: login: %s\n", st.message != NULL ?
		    st.message : "the check stopped");
		goto out;
	}
	rc = CLI_EXIT_OK;
out:
	free(st.message);
	reactor_free(st.reactor);
	return rc;
}

int
cmd_login(int argc, char **argv)
{
	static const struct option	longopts[] = {
		{ "username", required_argument, NULL, 'u' },
		{ "password", required_argument, NULL, 'p' },
		{ "password-stdin", no_argument, NULL, 's' },
		{ "insecure", no_argument, NULL, 'i' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char		 host[256], err[512], where[PATH_MAX + 32];
	char		*user = NULL, *pass = NULL;
	int		 ch, error, rc = CLI_EXIT_USAGE;
	bool		 from_stdin = false, insecure = false, tty;

	while ((ch = getopt_long(argc, argv, "hu:p:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'u':
			free(user);
			user = xstrdup(optarg);
			break;
		case 'p':
			fprintf(stderr, "smx: login: a password on the command "
			    "line is refused (ps and shell history show it): "
			    "use --password-stdin or the prompt\n");
			goto out;
		case 's':
			from_stdin = true;
			break;
		case 'i':
			insecure = true;
			break;
		case 'h':
			cmd_login_usage(stdout);
			rc = CLI_EXIT_OK;
			goto out;
		default:
			cmd_login_usage(stderr);
			goto out;
		}
	}
	if (optind + 1 != argc) {
		cmd_login_usage(stderr);
		goto out;
	}
	if (image_auth_registry(argv[optind], host, sizeof(host), err,
	    sizeof(err)) != 0) {
		fprintf(stderr, "smx: login: %s\n", err);
		goto out;
	}
	tty = isatty(STDIN_FILENO);
	if (from_stdin && user == NULL) {
		fprintf(stderr, "smx: login: --password-stdin needs -u USER\n");
		goto out;
	}
	if (!from_stdin && !tty) {
		fprintf(stderr, "smx: login: stdin is not a terminal to ask "
		    "for the password: use -u USER --password-stdin\n");
		goto out;
	}
	if (user == NULL && (user = prompt("Username", false)) == NULL) {
		fprintf(stderr, "smx: login: no username given\n");
		goto out;
	}
	if (user[0] == '\0' || strchr(user, ':') != NULL) {
		fprintf(stderr, "smx: login: bad username \"%s\" (empty or "
		    "with a ':')\n", user);
		goto out;
	}
	pass = from_stdin ? read_stdin() : prompt("Password", true);
	if (pass == NULL || pass[0] == '\0') {
		fprintf(stderr, "smx: login: no password given\n");
		goto out;
	}
	if ((rc = verify(host, user, pass, insecure)) != CLI_EXIT_OK)
		goto out;
	rc = CLI_EXIT_ERROR;
	if ((error = image_auth_store(NULL, host, user, pass, where,
	    sizeof(where), err, sizeof(err))) != 0) {
		fprintf(stderr, "smx: login: credentials not saved: %s\n",
		    err);
		goto out;
	}
	if (strncmp(where, "docker-credential-", 18) != 0)
		fprintf(stderr, "smx: login: the password is stored "
		    "unencrypted in %s (a credsStore helper avoids that)\n",
		    where);
	printf("Login Succeeded\n");
	rc = CLI_EXIT_OK;
out:
	if (pass != NULL) {
		explicit_bzero(pass, strlen(pass));
		free(pass);
	}
	free(user);
	return rc;
}

int
cmd_logout(int argc, char **argv)
{
	char	host[256], err[512];
	int	ch, error;

	while ((ch = getopt(argc, argv, "h")) != -1) {
		if (ch == 'h') {
			cmd_logout_usage(stdout);
			return CLI_EXIT_OK;
		}
		cmd_logout_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (optind + 1 != argc) {
		cmd_logout_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (image_auth_registry(argv[optind], host, sizeof(host), err,
	    sizeof(err)) != 0) {
		fprintf(stderr, "smx: logout: %s\n", err);
		return CLI_EXIT_USAGE;
	}
	error = image_auth_erase(NULL, host, err, sizeof(err));
	if (error == -ENOENT) {
		printf("Not logged in to %s\n", host);
		return CLI_EXIT_OK;
	}
	if (error != 0) {
		fprintf(stderr, "smx: logout: %s\n", err);
		return CLI_EXIT_ERROR;
	}
	printf("Removing login credentials for %s\n", host);
	return CLI_EXIT_OK;
}
