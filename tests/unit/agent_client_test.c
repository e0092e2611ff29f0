/*
 * core/agent.c, the host's agent client, against a scripted fake agent
 * on the other end of a socketpair (a thread): the CONNECT handshake,
 * exec with stdio both ways, exit codes and signals, signal forwarding,
 * errors, files both ways, the small requests and their fields.
 */
#include <sys/socket.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/agent.h"
#include "core/agent_wire.h"
#include "core/base/base.h"
#include "tests/tap.h"

/* A fake agent: fn runs on a thread with the far end of the pair. */
struct fake {
	int		 fd;
	int		(*fn)(struct fake *);
	pthread_t	 t;
	int		 rc;	/* 0: the fake saw what it expected */
	char		 note[256];
	void		*arg;
};

static void *
fake_main(void *arg)
{
	struct fake	*f = arg;

	f->rc = f->fn(f);
	close(f->fd);
	return NULL;
}

static int
fake_start(struct fake *f, int (*fn)(struct fake *), void *arg)
{
	int	sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		return -1;
	memset(f, 0, sizeof *f);
	f->fd = sv[1];
	f->fn = fn;
	f->arg = arg;
	if (pthread_create(&f->t, NULL, fake_main, f) != 0)
		return -1;
	return sv[0];
}

static int
fake_join(struct fake *f)
{
	pthread_join(f->t, NULL);
	if (f->rc != 0)
		tap_diag("fake agent: %s", f->note);
	return f->rc;
}

#define FAKE_CHECK(f, cond) do {					\
	if (!(cond)) {							\
		snprintf((f)->note, sizeof (f)->note, "line %d: %s",	\
		    __LINE__, #cond);					\
		return -1;						\
	}								\
} while (0)

/* Read one frame of the expected type (payload kept in *p). */
static int
expect(struct fake *f, uint32_t want, void **p, size_t *len)
{
	uint32_t	type;

	if (agent_read_frame(f->fd, &type, p, len) != 0)
		return -1;
	if (type != want) {
		free(*p);
		snprintf(f->note, sizeof f->note, "frame %u, wanted %u", type,
		    want);
		return -1;
	}
	return 0;
}

static void
send_fields(struct fake *f, uint32_t type, const char *k1, const char *v1,
    const char *k2, const char *v2)
{
	struct agent_fields	fl = { 0 };

	if (k1 != NULL)
		agent_fields_add(&fl, k1, "%s", v1);
	if (k2 != NULL)
		agent_fields_add(&fl, k2, "%s", v2);
	if (agent_write_frame(f->fd, type, fl.buf, fl.len) != 0)
		snprintf(f->note, sizeof f->note, "write failed");
	agent_fields_free(&fl);
}

/* The vsock side of the handshake: answer OK and a frame at once. */
static int
fake_handshake(struct fake *f)
{
	char	line[32] = "";

	FAKE_CHECK(f, read(f->fd, line, 13) == 13);
	FAKE_CHECK(f, memcmp(line, "CONNECT 1024\n", 13) == 0);
	/* The line and a frame in one write: the client must leave the
	 * frame in the socket. */
	FAKE_CHECK(f, write(f->fd, "OK 5000\n\x21\0\0\0\0\0\0\0", 16) == 16);
	return 0;
}

static int
t_handshake(void)
{
	struct fake	 f;
	uint32_t	 type;
	void		*p;
	size_t		 len;
	int		 fd;

	TAP_CHECK((fd = fake_start(&f, fake_handshake, NULL)) >= 0);
	TAP_CHECK(agent_handshake(fd, AGENT_PORT) == 0);
	TAP_CHECK(agent_read_frame(fd, &type, &p, &len) == 0);
	TAP_CHECK(type == A_OK && len == 0);
	free(p);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	return TAP_PASS;
}

static int
fake_refuse(struct fake *f)
{
	char	line[16];

	FAKE_CHECK(f, read(f->fd, line, 13) == 13);
	return 0;	/* closed without an answer: no listener */
}

static int
t_handshake_refused(void)
{
	struct fake	f;
	int		fd;

	TAP_CHECK((fd = fake_start(&f, fake_refuse, NULL)) >= 0);
	TAP_CHECK(agent_handshake(fd, 4000) == -ECONNREFUSED);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	return TAP_PASS;
}

/* exec: checks the request, echoes stdin to stdout, one stderr line. */
static int
fake_exec_echo(struct fake *f)
{
	const char	*v;
	void		*p;
	size_t		 len, total = 0;
	uint32_t	 type;
	int		 n = 0;

	FAKE_CHECK(f, expect(f, A_EXEC, &p, &len) == 0);
	for (v = NULL; (v = agent_field_next(p, len, "arg", v)) != NULL; n++)
		FAKE_CHECK(f, strcmp(v, n == 0 ? "cat" : "-u") == 0);
	FAKE_CHECK(f, n == 2);
	v = agent_field(p, len, "env");
	FAKE_CHECK(f, v != NULL && strcmp(v, "A=1") == 0);
	v = agent_field_next(p, len, "env", v);
	FAKE_CHECK(f, v != NULL && strcmp(v, "B=two words") == 0);
	FAKE_CHECK(f, strcmp(agent_field(p, len, "cwd"), "/w") == 0);
	FAKE_CHECK(f, strcmp(agent_field(p, len, "user"), "1:2") == 0);
	FAKE_CHECK(f, strcmp(agent_field(p, len, "main"), "1") == 0);
	FAKE_CHECK(f, strcmp(agent_field(p, len, "timeout_ms"), "5000") == 0);
	FAKE_CHECK(f, agent_field(p, len, "tty") == NULL);
	free(p);
	send_fields(f, A_STARTED, "pid", "42", NULL, NULL);
	for (;;) {
		FAKE_CHECK(f, agent_read_frame(f->fd, &type, &p, &len) == 0);
		if (type == A_STDIN_EOF) {
			free(p);
			break;
		}
		FAKE_CHECK(f, type == A_STDIN);
		total += len;
		FAKE_CHECK(f, agent_write_frame(f->fd, A_STDOUT, p, len) == 0);
		free(p);
	}
	FAKE_CHECK(f, agent_write_frame(f->fd, A_STDERR, "warn\n", 5) == 0);
	send_fields(f, A_EXIT, "exit", "3", NULL, NULL);
	FAKE_CHECK(f, total == *(size_t *)f->arg);
	return 0;
}

static pid_t	started_pid;

static void
started(pid_t pid, void *arg)
{
	(void)arg;
	started_pid = pid;
}

static int
t_exec_capture(void)
{
	static const char *const argv[] = { "cat", "-u", NULL };
	static const char *const env[] = { "A=1", "B=two words", NULL };
	struct agent_exec		x;
	struct agent_exec_result	r;
	struct fake			f;
	size_t				n = 700 * 1024, i;
	char				*big = xmalloc(n), err[256];
	int				fd;

	for (i = 0; i < n; i++)
		big[i] = (char)(i * 7);
	TAP_CHECK((fd = fake_start(&f, fake_exec_echo, &n)) >= 0);
	agent_exec_init(&x);
	x.argv = argv;
	x.env = env;
	x.cwd = "/w";
	x.user = "1:2";
	x.main = true;
	x.timeout_ms = 5000;
	x.stdin_data = big;
	x.stdin_len = n;
	x.started = started;
	TAP_CHECK(agent_exec(fd, &x, &r, err, sizeof err) == 0);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	TAP_CHECK(started_pid == 42 && r.pid == 42);
	TAP_CHECK(r.status == 3 && r.signal == 0);
	TAP_CHECK(r.out_len == n && memcmp(r.out, big, n) == 0);
	TAP_CHECK(r.err_len == 5 && strcmp(r.err, "warn\n") == 0);
	agent_exec_result_free(&r);
	free(big);
	return TAP_PASS;
}

/* stdin from a pipe, stdout into a pipe; the exit is a signal. */
static int
fake_exec_fds(struct fake *f)
{
	void		*p;
	size_t		 len;
	uint32_t	 type;

	FAKE_CHECK(f, expect(f, A_EXEC, &p, &len) == 0);
	FAKE_CHECK(f, strcmp(agent_field(p, len, "tty"), "1") == 0);
	FAKE_CHECK(f, strcmp(agent_field(p, len, "rows"), "30") == 0);
	FAKE_CHECK(f, strcmp(agent_field(p, len, "cols"), "90") == 0);
	free(p);
	send_fields(f, A_STARTED, "pid", "7", NULL, NULL);
	FAKE_CHECK(f, agent_read_frame(f->fd, &type, &p, &len) == 0);
	FAKE_CHECK(f, type == A_STDIN && len == 6 && memcmp(p, "input\n",
	    6) == 0);
	free(p);
	FAKE_CHECK(f, expect(f, A_STDIN_EOF, &p, &len) == 0);
	free(p);
	FAKE_CHECK(f, agent_write_frame(f->fd, A_STDOUT, "output\n", 7) == 0);
	send_fields(f, A_EXIT, "signal", "9", NULL, NULL);
	return 0;
}

static int
t_exec_fds(void)
{
	static const char *const argv[] = { "sh", NULL };
	struct agent_exec		x;
	struct agent_exec_result	r;
	struct fake			f;
	char				buf[32] = "", err[256];
	int				fd, in[2], out[2];

	TAP_CHECK(pipe(in) == 0 && pipe(out) == 0);
	TAP_CHECK(write(in[1], "input\n", 6) == 6);
	close(in[1]);
	TAP_CHECK((fd = fake_start(&f, fake_exec_fds, NULL)) >= 0);
	agent_exec_init(&x);
	x.argv = argv;
	x.tty = true;
	x.rows = 30;
	x.cols = 90;
	x.stdin_fd = in[0];
	x.stdout_fd = out[1];
	TAP_CHECK(agent_exec(fd, &x, &r, err, sizeof err) == 0);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	TAP_CHECK(r.signal == 9 && r.status == 137);
	TAP_CHECK(r.out == NULL && r.err != NULL && r.err_len == 0);
	close(out[1]);
	TAP_CHECK(read(out[0], buf, sizeof buf) == 7);
	TAP_CHECK(strcmp(buf, "output\n") == 0);
	close(in[0]);
	close(out[0]);
	agent_exec_result_free(&r);
	return TAP_PASS;
}

/* Signals: SIGUSR1 raised here reaches the agent as A_SIGNAL. */
static int
fake_exec_signal(struct fake *f)
{
	void	*p;
	size_t	 len;

	FAKE_CHECK(f, expect(f, A_EXEC, &p, &len) == 0);
	free(p);
	send_fields(f, A_STARTED, "pid", "9", NULL, NULL);
	/* The client catches it (its handlers are in place before the
	 * request is sent) and forwards it once the process runs. */
	kill(getpid(), SIGUSR1);
	FAKE_CHECK(f, expect(f, A_STDIN_EOF, &p, &len) == 0);
	free(p);
	FAKE_CHECK(f, expect(f, A_SIGNAL, &p, &len) == 0);
	FAKE_CHECK(f, atoi(agent_field(p, len, "signal")) == SIGUSR1);
	free(p);
	send_fields(f, A_EXIT, "signal", "10", NULL, NULL);
	return 0;
}

static int
t_exec_signal(void)
{
	static const char *const argv[] = { "sleep", NULL };
	struct agent_exec		x;
	struct agent_exec_result	r;
	struct fake			f;
	struct sigaction		sa;
	char				err[256];
	int				fd;

	TAP_CHECK((fd = fake_start(&f, fake_exec_signal, NULL)) >= 0);
	agent_exec_init(&x);
	x.argv = argv;
	x.flags = AGENT_EXEC_SIGNALS;
	TAP_CHECK(agent_exec(fd, &x, &r, err, sizeof err) == 0);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	TAP_CHECK(r.signal == SIGUSR1 && r.status == 128 + SIGUSR1);
	agent_exec_result_free(&r);
	/* The old disposition is back. */
	TAP_CHECK(sigaction(SIGUSR1, NULL, &sa) == 0);
	TAP_CHECK(sa.sa_handler == SIG_DFL);
	return TAP_PASS;
}

static int
fake_exec_error(struct fake *f)
{
	void	*p;
	size_t	 len;

	FAKE_CHECK(f, expect(f, A_EXEC, &p, &len) == 0);
	free(p);
	send_fields(f, A_ERROR, "msg", "exec \"nope\": No such file",
	    "err", "2");
	return 0;
}

static int
fake_exec_eof(struct fake *f)
{
	void	*p;
	size_t	 len;

	FAKE_CHECK(f, expect(f, A_EXEC, &p, &len) == 0);
	free(p);
	send_fields(f, A_STARTED, "pid", "1", NULL, NULL);
	return 0;	/* and the connection ends without A_EXIT */
}

static int
t_exec_errors(void)
{
	static const char *const argv[] = { "nope", NULL };
	struct agent_exec		x;
	struct agent_exec_result	r;
	struct fake			f;
	char				err[256] = "";
	int				fd;

	TAP_CHECK((fd = fake_start(&f, fake_exec_error, NULL)) >= 0);
	agent_exec_init(&x);
	x.argv = argv;
	TAP_CHECK(agent_exec(fd, &x, &r, err, sizeof err) == -ENOENT);
	TAP_CHECK(strstr(err, "No such file") != NULL);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);

	TAP_CHECK((fd = fake_start(&f, fake_exec_eof, NULL)) >= 0);
	TAP_CHECK(agent_exec(fd, &x, &r, err, sizeof err) == -EPIPE);
	TAP_CHECK(strstr(err, "closed") != NULL);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);

	x.argv = NULL;
	TAP_CHECK(agent_exec(-1, &x, &r, err, sizeof err) == -EINVAL);
	return TAP_PASS;
}

/* put: the bytes arrive in order with path and mode. */
static int
fake_put(struct fake *f)
{
	size_t		 want = *(size_t *)f->arg, got = 0;
	uint32_t	 type;
	void		*p;
	size_t		 len;

	FAKE_CHECK(f, expect(f, A_PUT, &p, &len) == 0);
	FAKE_CHECK(f, strcmp(agent_field(p, len, "path"), "/etc/x") == 0);
	FAKE_CHECK(f, strcmp(agent_field(p, len, "mode"), "640") == 0);
	free(p);
	for (;;) {
		FAKE_CHECK(f, agent_read_frame(f->fd, &type, &p, &len) == 0);
		if (type == A_DATA_EOF) {
			free(p);
			break;
		}
		FAKE_CHECK(f, type == A_DATA);
		for (size_t i = 0; i < len; i++)
			FAKE_CHECK(f, ((uint8_t *)p)[i] ==
			    (uint8_t)(got + i));
		got += len;
		free(p);
	}
	FAKE_CHECK(f, got == want);
	send_fields(f, A_OK, NULL, NULL, NULL, NULL);
	return 0;
}

/* A refusal before any data is read. */
static int
fake_put_refused(struct fake *f)
{
	void	*p;
	size_t	 len;

	FAKE_CHECK(f, expect(f, A_PUT, &p, &len) == 0);
	free(p);
	send_fields(f, A_ERROR, "msg", "put /ro/x: Read-only file system",
	    "err", "30");
	shutdown(f->fd, SHUT_RDWR);
	return 0;
}

static int
t_put(void)
{
	struct fake	 f;
	size_t		 n = 200 * 1024;
	uint8_t		*data = xmalloc(n);
	char		 err[256] = "";
	int		 fd, pfd[2];

	for (size_t i = 0; i < n; i++)
		data[i] = (uint8_t)i;
	TAP_CHECK((fd = fake_start(&f, fake_put, &n)) >= 0);
	TAP_CHECK(agent_put_data(fd, "/etc/x", 0640, data, n, err,
	    sizeof err) == 0);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);

	/* From an fd: the same bytes through a pipe. */
	n = 1000;
	TAP_CHECK(pipe(pfd) == 0);
	TAP_CHECK(write(pfd[1], data, n) == (ssize_t)n);
	close(pfd[1]);
	TAP_CHECK((fd = fake_start(&f, fake_put, &n)) >= 0);
	TAP_CHECK(agent_put_fd(fd, "/etc/x", 0640, pfd[0], err,
	    sizeof err) == 0);
	close(fd);
	close(pfd[0]);
	TAP_CHECK(fake_join(&f) == 0);

	n = 2 * 1024 * 1024;
	data = xreallocarray(data, 1, n);
	TAP_CHECK((fd = fake_start(&f, fake_put_refused, NULL)) >= 0);
	TAP_CHECK(agent_put_data(fd, "/ro/x", 0644, data, n, err,
	    sizeof err) == -EROFS);
	TAP_CHECK(strstr(err, "Read-only") != NULL);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	free(data);
	return TAP_PASS;
}

/* get: OK with the mode, the data in two frames, the end. */
static int
fake_get(struct fake *f)
{
	void	*p;
	size_t	 len;
	int	 rc;

	FAKE_CHECK(f, expect(f, A_GET, &p, &len) == 0);
	FAKE_CHECK(f, strcmp(agent_field(p, len, "path"), "/etc/y") == 0);
	free(p);
	send_fields(f, A_OK, "mode", "600", "size", "11");
	/* Unchecked: a client over its size cap hangs up midway; what it
	 * received is checked on its side. */
	rc = agent_write_frame(f->fd, A_DATA, "hello ", 6);
	if (rc == 0)
		rc = agent_write_frame(f->fd, A_DATA, "world", 5);
	if (rc == 0)
		rc = agent_write_frame(f->fd, A_DATA_EOF, NULL, 0);
	(void)rc;
	return 0;
}

static int
fake_get_missing(struct fake *f)
{
	void	*p;
	size_t	 len;

	FAKE_CHECK(f, expect(f, A_GET, &p, &len) == 0);
	free(p);
	send_fields(f, A_ERROR, "msg", "get /etc/y: No such file", "err",
	    "2");
	return 0;
}

static int
t_get(void)
{
	struct fake	 f;
	void		*data;
	size_t		 len;
	unsigned	 mode = 0;
	char		 err[256], buf[32] = "";
	int		 fd, pfd[2];

	TAP_CHECK((fd = fake_start(&f, fake_get, NULL)) >= 0);
	TAP_CHECK(agent_get_data(fd, "/etc/y", 1024, &data, &len, &mode, err,
	    sizeof err) == 0);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	TAP_CHECK(len == 11 && strcmp(data, "hello world") == 0);
	TAP_CHECK(mode == 0600);
	free(data);

	TAP_CHECK((fd = fake_start(&f, fake_get, NULL)) >= 0);
	TAP_CHECK(agent_get_data(fd, "/etc/y", 8, &data, &len, NULL, err,
	    sizeof err) == -EFBIG);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);

	TAP_CHECK(pipe(pfd) == 0);
	TAP_CHECK((fd = fake_start(&f, fake_get, NULL)) >= 0);
	TAP_CHECK(agent_get_fd(fd, "/etc/y", pfd[1], NULL, err,
	    sizeof err) == 0);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	close(pfd[1]);
	TAP_CHECK(read(pfd[0], buf, sizeof buf) == 11);
	close(pfd[0]);
	TAP_CHECK(strcmp(buf, "hello world") == 0);

	TAP_CHECK((fd = fake_start(&f, fake_get_missing, NULL)) >= 0);
	TAP_CHECK(agent_get_data(fd, "/etc/y", 1024, &data, &len, NULL, err,
	    sizeof err) == -ENOENT);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	return TAP_PASS;
}

/* The small requests: one frame each with its fields, A_OK back. */
static int
fake_small(struct fake *f)
{
	uint32_t	 type;
	void		*p;
	size_t		 len;
	const char	*want = f->arg;

	FAKE_CHECK(f, agent_read_frame(f->fd, &type, &p, &len) == 0);
	switch (type) {
	case A_KILL:
		FAKE_CHECK(f, strcmp(want, "kill") == 0);
		FAKE_CHECK(f, strcmp(agent_field(p, len, "signal"), "15") == 0);
		break;
	case A_PING:
		FAKE_CHECK(f, strcmp(want, "ping") == 0);
		break;
	case A_POWEROFF:
		FAKE_CHECK(f, strcmp(want, "poweroff") == 0);
		break;
	case A_CONNECT:
		FAKE_CHECK(f, strcmp(want, "connect") == 0);
		FAKE_CHECK(f, strcmp(agent_field(p, len, "port"), "8080") == 0);
		break;
	case A_FIXUP:
		FAKE_CHECK(f, strcmp(want, "fixup") == 0);
		FAKE_CHECK(f, strcmp(agent_field(p, len, "time_ns"),
		    "1234567890123") == 0);
		FAKE_CHECK(f, strcmp(agent_field(p, len, "entropy"),
		    "00ff10") == 0);
		FAKE_CHECK(f, strcmp(agent_field(p, len, "hostname"),
		    "h1") == 0);
		break;
	default:
		FAKE_CHECK(f, !"an unexpected request");
	}
	free(p);
	if (type == A_KILL)
		send_fields(f, A_ERROR, "msg", "kill: no main process runs",
		    "err", "3");
	else
		send_fields(f, A_OK, NULL, NULL, NULL, NULL);
	if (type == A_CONNECT)
		FAKE_CHECK(f, write(f->fd, "raw", 3) == 3);
	return 0;
}

static int
t_small(void)
{
	static const uint8_t	ent[] = { 0x00, 0xff, 0x10 };
	struct fake		f;
	char			err[256], buf[4] = "";
	int			fd;

	TAP_CHECK((fd = fake_start(&f, fake_small, "kill")) >= 0);
	TAP_CHECK(agent_kill(fd, 15, err, sizeof err) == -ESRCH);
	TAP_CHECK(strstr(err, "no main process") != NULL);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	TAP_CHECK((fd = fake_start(&f, fake_small, "ping")) >= 0);
	TAP_CHECK(agent_ping(fd, err, sizeof err) == 0);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	TAP_CHECK((fd = fake_start(&f, fake_small, "poweroff")) >= 0);
	TAP_CHECK(agent_poweroff(fd, err, sizeof err) == 0);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	TAP_CHECK((fd = fake_start(&f, fake_small, "fixup")) >= 0);
	TAP_CHECK(agent_fixup(fd, 1234567890123ULL, ent, sizeof ent, "h1",
	    err, sizeof err) == 0);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	/* After A_OK the stream is raw. */
	TAP_CHECK((fd = fake_start(&f, fake_small, "connect")) >= 0);
	TAP_CHECK(agent_open_port(fd, 8080, err, sizeof err) == 0);
	TAP_CHECK(read(fd, buf, 3) == 3 && strcmp(buf, "raw") == 0);
	close(fd);
	TAP_CHECK(fake_join(&f) == 0);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "handshake leaves the agent's bytes in the socket", t_handshake },
	{ "handshake without a listener is -ECONNREFUSED",
	    t_handshake_refused },
	{ "exec: request fields, 700 KiB stdin echoed, capture, status",
	    t_exec_capture },
	{ "exec: stdin and stdout fds, tty size, killed by 9",
	    t_exec_fds },
	{ "exec: a caught signal is forwarded as A_SIGNAL", t_exec_signal },
	{ "exec: agent errors and a broken connection", t_exec_errors },
	{ "put from memory and from an fd; a refusal keeps its reason",
	    t_put },
	{ "get into memory and into an fd; size cap; missing file", t_get },
	{ "kill, ping, poweroff, fixup and connect fields", t_small },
};

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	return tap_run(cases, ARRAY_SIZE(cases), 60);
}
