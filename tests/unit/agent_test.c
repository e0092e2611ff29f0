/*
 * Host-side test of the guest agent (tools/smx-init) and its wire codec
 * (core/agent_wire.c).  The agent runs in its test mode, in a mount and
 * UTS namespace of its own, with a busybox tree built here as the
 * container root; cases speak the protocol to it over Unix streams (a
 * socketpair and a listening socket): exec with env, cwd, users and
 * groups, exit codes and signals, stdin, a pty and its window size,
 * concurrent execs, timeouts, PUT/GET, CONNECT, fix-ups, malformed
 * frames, and power off.  Needs root and Debian's busybox-static.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/agent_wire.h"
#include "tests/tap.h"

static char root[200];		/* the container root */
static char sockpath[216];	/* the agent's listening socket */
static pid_t agent_pid;
static int pair_fd = -1;	/* our end of the agent's --serve-fd */
static char hello_buf[256];	/* the A_HELLO payload */
static size_t hello_len;
static int hello_type;

/* What an exec came back with. */
struct result {
	int	 started;	/* A_STARTED seen */
	int	 exit_code;	/* -1 unless exit= */
	int	 sig;		/* 0 unless signal= */
	int	 err;		/* A_ERROR err=, else 0 */
	char	 msg[256];	/* A_ERROR msg= */
	char	*out, *errout;
	size_t	 out_len, err_len;
};

static void
result_free(struct result *r)
{
	free(r->out);
	free(r->errout);
}

static void
append(char **b, size_t *len, const void *p, size_t n)
{
	*b = realloc(*b, *len + n + 1);
	memcpy(*b + *len, p, n);
	*len += n;
	(*b)[*len] = '\0';
}

/* A new connection to the agent. */
static int
agent_connect(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tv = { 30, 0 };
	int fd;

	memcpy(sun.sun_path, sockpath, strlen(sockpath) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		close(fd);
		return -1;
	}
	/* A hung agent fails the case instead of the whole run. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static int
send_fields(int fd, uint32_t type, struct agent_fields *f)
{
	int rc = agent_write_frame(fd, type, f->buf, f->len);

	agent_fields_free(f);
	return rc;
}

/* Build an A_EXEC field list: args NULL-terminated, then extra "k=v". */
static void
exec_fields(struct agent_fields *f, const char *const *args,
    const char *const *extra)
{
	const char *eq;
	char key[64];

	for (; *args != NULL; args++)
		agent_fields_add(f, "arg", "%s", *args);
	for (; extra != NULL && *extra != NULL; extra++) {
		eq = strchr(*extra, '=');
		snprintf(key, sizeof(key), "%.*s", (int)(eq - *extra), *extra);
		agent_fields_add(f, key, "%s", eq + 1);
	}
}

/*
 * Read frames of a running exec until A_EXIT or A_ERROR; 0, or -1 on a
 * protocol failure.
 */
static int
collect(int fd, struct result *r)
{
	uint32_t type;
	void *p;
	size_t n;
	const char *v;
	int rc;

	for (;;) {
		if ((rc = agent_read_frame(fd, &type, &p, &n)) < 0) {
			tap_diag("read frame: %s", strerror(-rc));
			return -1;
		}
		switch (type) {
		case A_STARTED:
			r->started = agent_field(p, n, "pid") != NULL;
			break;
		case A_STDOUT:
			append(&r->out, &r->out_len, p, n);
			break;
		case A_STDERR:
			append(&r->errout, &r->err_len, p, n);
			break;
		case A_EXIT:
			if ((v = agent_field(p, n, "exit")) != NULL)
				r->exit_code = atoi(v);
			if ((v = agent_field(p, n, "signal")) != NULL)
				r->sig = atoi(v);
			free(p);
			return 0;
		case A_ERROR:
			if ((v = agent_field(p, n, "err")) != NULL)
				r->err = atoi(v);
			if ((v = agent_field(p, n, "msg")) != NULL)
				snprintf(r->msg, sizeof(r->msg), "%s", v);
			free(p);
			return 0;
		default:
			tap_diag("unexpected frame type %u", type);
			free(p);
			return -1;
		}
		free(p);
	}
}

/*
 * Run args with the extra fields, feed stdin (may be NULL) then EOF, and
 * collect the result.  0 or -1.
 */
static int
run(const char *const *args, const char *const *extra, const char *in,
    size_t in_len, struct result *r)
{
	struct agent_fields f = { 0 };
	int fd, rc = -1;

	memset(r, 0, sizeof(*r));
	r->exit_code = -1;
	if ((fd = agent_connect()) < 0)
		return -1;
	exec_fields(&f, args, extra);
	if (send_fields(fd, A_EXEC, &f) < 0)
		goto out;
	while (in != NULL && in_len > 0) {
		size_t n = in_len > 65536 ? 65536 : in_len;

		if (agent_write_frame(fd, A_STDIN, in, n) < 0)
			goto out;
		in += n;
		in_len -= n;
	}
	if (agent_write_frame(fd, A_STDIN_EOF, NULL, 0) < 0)
		goto out;
	rc = collect(fd, r);
	if (getenv("AGENT_TEST_DEBUG"))
		tap_diag("run %s: exit %d sig %d err %d msg '%s' out '%s' "
		    "errout '%s'", args[0], r->exit_code, r->sig, r->err,
		    r->msg, r->out ? r->out : "", r->errout ? r->errout : "");
	if (rc == 0 && r->err == 0 && r->msg[0] == '\0' && !r->started) {
		tap_diag("exit without A_STARTED");
		rc = -1;
	}
out:
	close(fd);
	return rc;
}

#define ARGS(...)	((const char *const[]){ __VA_ARGS__, NULL })

/* Read one frame of the given type; its payload (free it) or NULL. */
static void *
expect_frame(int fd, uint32_t want, size_t *len)
{
	uint32_t type;
	void *p;
	size_t n;
	int rc;

	if ((rc = agent_read_frame(fd, &type, &p, &n)) < 0) {
		tap_diag("read frame: %s", strerror(-rc));
		return NULL;
	}
	if (type != want) {
		tap_diag("frame type %u, want %u (%s)", type, want,
		    type == A_ERROR ? agent_field(p, n, "msg") : "");
		free(p);
		return NULL;
	}
	if (len != NULL)
		*len = n;
	return p;
}

/* 1 when the peer closed fd (EOF or reset) without sending anything. */
static int
closed_by_peer(int fd)
{
	char c;
	ssize_t n = read(fd, &c, 1);

	return n == 0 || (n < 0 && errno == ECONNRESET);
}

static int
t_hello(void)
{
	TAP_CHECK(hello_type == A_HELLO);
	TAP_CHECK(agent_field(hello_buf, hello_len, "version") != NULL);
	TAP_CHECK(atoi(agent_field(hello_buf, hello_len, "version")) ==
	    AGENT_VERSION);
	TAP_CHECK(agent_field(hello_buf, hello_len, "kernel") != NULL);
	return TAP_PASS;
}

/* The codec: repeated keys, empty values, missing keys, bounds. */
static int
t_fields(void)
{
	struct agent_fields f = { 0 };
	const char *v;
	int sv[2], n = 0;
	uint32_t type;
	void *p;
	size_t len;

	agent_fields_add(&f, "arg", "%s", "one");
	agent_fields_add(&f, "argx", "%d", 5);
	agent_fields_add(&f, "arg", "%s", "");
	agent_fields_add(&f, "arg", "t%s", "hree");
	TAP_CHECK(strcmp(agent_field(f.buf, f.len, "argx"), "5") == 0);
	TAP_CHECK(agent_field(f.buf, f.len, "ar") == NULL);
	for (v = NULL; (v = agent_field_next(f.buf, f.len, "arg", v)) != NULL;
	    n++)
		TAP_CHECK(strcmp(v, n == 0 ? "one" : n == 1 ? "" : "three") ==
		    0);
	TAP_CHECK(n == 3);
	TAP_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	TAP_CHECK(agent_write_frame(sv[0], A_PING, f.buf, f.len) == 0);
	TAP_CHECK(agent_write_frame(sv[0], A_OK, NULL, 0) == 0);
	TAP_CHECK(agent_write_frame(sv[0], 7, NULL, AGENT_MAX_FRAME + 1) ==
	    -EMSGSIZE);
	TAP_CHECK(agent_read_frame(sv[1], &type, &p, &len) == 0);
	TAP_CHECK(type == A_PING && len == f.len &&
	    memcmp(p, f.buf, len) == 0);
	free(p);
	TAP_CHECK(agent_read_frame(sv[1], &type, &p, &len) == 0);
	TAP_CHECK(type == A_OK && len == 0 && ((char *)p)[0] == '\0');
	free(p);
	/* A header announcing too much, then a truncated frame, then EOF. */
	TAP_CHECK(write(sv[0], "\x21\0\0\0\xff\xff\xff\x7f", 8) == 8);
	TAP_CHECK(agent_read_frame(sv[1], &type, &p, &len) == -EPROTO);
	TAP_CHECK(write(sv[0], "\x21\0\0\0\x10\0\0\0abc", 11) == 11);
	shutdown(sv[0], SHUT_WR);
	TAP_CHECK(agent_read_frame(sv[1], &type, &p, &len) == -EPROTO);
	TAP_CHECK(agent_read_frame(sv[1], &type, &p, &len) == -EPIPE);
	close(sv[0]);
	close(sv[1]);
	agent_fields_free(&f);
	return TAP_PASS;
}

/* The --serve-fd stream (a socketpair): one request on it. */
static int
t_socketpair_ping(void)
{
	void *p;

	TAP_CHECK(agent_write_frame(pair_fd, A_PING, NULL, 0) == 0);
	TAP_CHECK((p = expect_frame(pair_fd, A_OK, NULL)) != NULL);
	free(p);
	TAP_CHECK(closed_by_peer(pair_fd));
	return TAP_PASS;
}

static int
t_echo(void)
{
	struct result r;

	TAP_CHECK(run(ARGS("echo", "hi", "there"), NULL, NULL, 0, &r) == 0);
	TAP_CHECK(r.exit_code == 0 && r.sig == 0);
	TAP_CHECK(r.out != NULL && strcmp(r.out, "hi there\n") == 0);
	TAP_CHECK(r.errout == NULL);
	result_free(&r);
	TAP_CHECK(run(ARGS("sh", "-c", "echo out; echo err >&2; exit 7"),
	    NULL, NULL, 0, &r) == 0);
	TAP_CHECK(r.exit_code == 7);
	TAP_CHECK(r.out != NULL && strcmp(r.out, "out\n") == 0);
	TAP_CHECK(r.errout != NULL && strcmp(r.errout, "err\n") == 0);
	result_free(&r);
	return TAP_PASS;
}

static int
t_env_cwd(void)
{
	struct result r;

	TAP_CHECK(run(ARGS("sh", "-c", "echo \"$FOO|$EMPTY|$HOME|$PATH\"; "
	    "pwd"), ARGS("env=FOO=bar baz", "env=EMPTY=", "cwd=/data"), NULL,
	    0, &r) == 0);
	TAP_CHECK(r.exit_code == 0);
	TAP_CHECK(r.out != NULL && strcmp(r.out, "bar baz||/root|"
	    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
	    "/data\n") == 0);
	result_free(&r);
	/* The given PATH and HOME win over the defaults. */
	TAP_CHECK(run(ARGS("sh", "-c", "echo $HOME $PATH"),
	    ARGS("env=HOME=/x", "env=PATH=/bin"), NULL, 0, &r) == 0);
	TAP_CHECK(r.out != NULL && strcmp(r.out, "/x /bin\n") == 0);
	result_free(&r);
	/* A missing cwd is an error for exec, created for the main process. */
	TAP_CHECK(run(ARGS("pwd"), ARGS("cwd=/no/such"), NULL, 0, &r) == 0);
	TAP_CHECK(!r.started && r.err == ENOENT);
	result_free(&r);
	TAP_CHECK(run(ARGS("pwd"), ARGS("cwd=/made/here", "main=1"), NULL, 0,
	    &r) == 0);
	TAP_CHECK(r.exit_code == 0 && strcmp(r.out, "/made/here\n") == 0);
	result_free(&r);
	return TAP_PASS;
}

static int
t_user(void)
{
	struct result r;

	/* By name: passwd's uid, gid and home; group's memberships. */
	TAP_CHECK(run(ARGS("sh", "-c", "id -u; id -g; id -G; echo $HOME; "
	    "id -un"), ARGS("user=tester"), NULL, 0, &r) == 0);
	TAP_CHECK(r.exit_code == 0);
	TAP_CHECK(r.out != NULL && strcmp(r.out, "1234\n1234\n"
	    "1234 2000 2001\n/home/tester\ntester\n") == 0);
	result_free(&r);
	/* Numeric uid:gid. */
	TAP_CHECK(run(ARGS("sh", "-c", "id -u; id -g; id -G"),
	    ARGS("user=1234:2000"), NULL, 0, &r) == 0);
	TAP_CHECK(r.out != NULL && strncmp(r.out, "1234\n2000\n", 10) == 0);
	TAP_CHECK(strstr(r.out + 10, "2001") != NULL);
	result_free(&r);
	/* name:group. */
	TAP_CHECK(run(ARGS("sh", "-c", "id -u; id -g"),
	    ARGS("user=tester:extra"), NULL, 0, &r) == 0);
	TAP_CHECK(r.out != NULL && strcmp(r.out, "1234\n2000\n") == 0);
	result_free(&r);
	/* A uid not in passwd: gid 0, HOME /. */
	TAP_CHECK(run(ARGS("sh", "-c", "id -u; id -g; id -G; echo $HOME"),
	    ARGS("user=4321"), NULL, 0, &r) == 0);
	TAP_CHECK(r.out != NULL && strcmp(r.out, "4321\n0\n0\n/\n") == 0);
	result_free(&r);
	/* Default: root. */
	TAP_CHECK(run(ARGS("id", "-u"), NULL, NULL, 0, &r) == 0);
	TAP_CHECK(r.out != NULL && strcmp(r.out, "0\n") == 0);
	result_free(&r);
	/* Unknown names are errors, not guesses. */
	TAP_CHECK(run(ARGS("id"), ARGS("user=nosuchuser"), NULL, 0, &r) == 0);
	TAP_CHECK(!r.started && r.err != 0 && strstr(r.msg, "nosuchuser"));
	result_free(&r);
	TAP_CHECK(run(ARGS("id"), ARGS("user=tester:nosuchgroup"), NULL, 0,
	    &r) == 0);
	TAP_CHECK(!r.started && r.err != 0 && strstr(r.msg, "nosuchgroup"));
	result_free(&r);
	return TAP_PASS;
}

/* Missing program -> ENOENT (127), not executable -> EACCES (126). */
static int
t_exec_errors(void)
{
	struct result r;

	TAP_CHECK(run(ARGS("no-such-program"), NULL, NULL, 0, &r) == 0);
	TAP_CHECK(!r.started && r.err == ENOENT);
	TAP_CHECK(strstr(r.msg, "no-such-program") != NULL);
	result_free(&r);
	TAP_CHECK(run(ARGS("/bin/no-such-program"), NULL, NULL, 0, &r) == 0);
	TAP_CHECK(!r.started && r.err == ENOENT);
	result_free(&r);
	TAP_CHECK(run(ARGS("/bin/notexec"), NULL, NULL, 0, &r) == 0);
	TAP_CHECK(!r.started && r.err == EACCES);
	result_free(&r);
	/* Found in PATH but not executable. */
	TAP_CHECK(run(ARGS("notexec"), NULL, NULL, 0, &r) == 0);
	TAP_CHECK(!r.started && r.err == EACCES);
	result_free(&r);
	/* A directory is not executable either. */
	TAP_CHECK(run(ARGS("/data"), NULL, NULL, 0, &r) == 0);
	TAP_CHECK(!r.started && r.err == EACCES);
	result_free(&r);
	/* The shell's own 127 is an ordinary exit code. */
	TAP_CHECK(run(ARGS("sh", "-c", "no-such-program"), NULL, NULL, 0,
	    &r) == 0);
	TAP_CHECK(r.started && r.exit_code == 127);
	result_free(&r);
	return TAP_PASS;
}

/* A_SIGNAL reaches the process; its death is reported as signal=N. */
static int
t_signal(void)
{
	struct agent_fields f = { 0 };
	struct result r = { .exit_code = -1 };
	void *p;
	int fd;

	TAP_CHECK((fd = agent_connect()) >= 0);
	exec_fields(&f, ARGS("sleep", "1000"), NULL);
	TAP_CHECK(send_fields(fd, A_EXEC, &f) == 0);
	TAP_CHECK((p = expect_frame(fd, A_STARTED, NULL)) != NULL);
	free(p);
	agent_fields_add(&f, "signal", "%d", SIGTERM);
	TAP_CHECK(send_fields(fd, A_SIGNAL, &f) == 0);
	TAP_CHECK(collect(fd, &r) == 0);
	TAP_CHECK(r.sig == SIGTERM && r.exit_code == -1);
	close(fd);
	/* timeout_ms: SIGKILL once it passes. */
	TAP_CHECK(run(ARGS("sleep", "1000"), ARGS("timeout_ms=100"), NULL, 0,
	    &r) == 0);
	TAP_CHECK(r.sig == SIGKILL);
	result_free(&r);
	return TAP_PASS;
}

/* A_KILL reaches the main process only. */
static int
t_kill_main(void)
{
	struct agent_fields f = { 0 };
	struct result r = { .exit_code = -1 };
	void *p;
	int fd, k;

	TAP_CHECK((k = agent_connect()) >= 0);
	agent_fields_add(&f, "signal", "%d", SIGKILL);
	TAP_CHECK(send_fields(k, A_KILL, &f) == 0);
	TAP_CHECK((p = expect_frame(k, A_ERROR, NULL)) != NULL);
	free(p);
	close(k);

	TAP_CHECK((fd = agent_connect()) >= 0);
	exec_fields(&f, ARGS("sleep", "1000"), ARGS("main=1"));
	TAP_CHECK(send_fields(fd, A_EXEC, &f) == 0);
	TAP_CHECK((p = expect_frame(fd, A_STARTED, NULL)) != NULL);
	free(p);
	TAP_CHECK((k = agent_connect()) >= 0);
	agent_fields_add(&f, "signal", "%d", SIGUSR1);
	TAP_CHECK(send_fields(k, A_KILL, &f) == 0);
	TAP_CHECK((p = expect_frame(k, A_OK, NULL)) != NULL);
	free(p);
	close(k);
	TAP_CHECK(collect(fd, &r) == 0);
	TAP_CHECK(r.sig == SIGUSR1);
	close(fd);
	return TAP_PASS;
}

static int
t_stdin(void)
{
	struct result r;
	size_t big = 3 * 1024 * 1024 + 17, i;
	char *data;

	TAP_CHECK(run(ARGS("cat"), NULL, "piped through\n", 14, &r) == 0);
	TAP_CHECK(r.exit_code == 0 && r.out != NULL &&
	    strcmp(r.out, "piped through\n") == 0);
	result_free(&r);
	/* More than every buffer on the way, through backpressure. */
	TAP_CHECK((data = malloc(big)) != NULL);
	for (i = 0; i < big; i++)
		data[i] = (char)('a' + i % 26);
	TAP_CHECK(run(ARGS("wc", "-c"), NULL, data, big, &r) == 0);
	free(data);
	TAP_CHECK(r.exit_code == 0 && r.out != NULL &&
	    atol(r.out) == (long)big);
	result_free(&r);
	/* Output larger than the agent's buffers: nothing lost. */
	TAP_CHECK(run(ARGS("sh", "-c", "yes abcdefghi | head -c 2000000"),
	    NULL, NULL, 0, &r) == 0);
	TAP_CHECK(r.exit_code == 0 && r.out_len == 2000000);
	TAP_CHECK(memcmp(r.out + 1999990, "abcdefghi\n", 10) == 0);
	result_free(&r);
	/* No stdin at all: EOF right away. */
	TAP_CHECK(run(ARGS("cat"), NULL, NULL, 0, &r) == 0);
	TAP_CHECK(r.exit_code == 0 && r.out == NULL);
	result_free(&r);
	return TAP_PASS;
}

static int
t_pty(void)
{
	struct agent_fields f = { 0 };
	struct result r;
	const char *cmd = "stty size; exit 3\n";
	void *p;
	int fd;

	TAP_CHECK(run(ARGS("sh", "-c", "test -t 0 && test -t 1 && "
	    "test -t 2 && echo tty $TERM; stty size; echo e >&2"),
	    ARGS("tty=1", "rows=24", "cols=80"), NULL, 0, &r) == 0);
	TAP_CHECK(r.exit_code == 0 && r.out != NULL && r.errout == NULL);
	TAP_CHECK(strcmp(r.out, "tty xterm\r\n24 80\r\ne\r\n") == 0);
	result_free(&r);

	/* A_RESIZE then typed input: the shell sees the new size. */
	memset(&r, 0, sizeof(r));
	r.exit_code = -1;
	TAP_CHECK((fd = agent_connect()) >= 0);
	exec_fields(&f, ARGS("sh"), ARGS("tty=1", "rows=24", "cols=80"));
	TAP_CHECK(send_fields(fd, A_EXEC, &f) == 0);
	TAP_CHECK((p = expect_frame(fd, A_STARTED, NULL)) != NULL);
	free(p);
	agent_fields_add(&f, "rows", "%d", 33);
	agent_fields_add(&f, "cols", "%d", 111);
	TAP_CHECK(send_fields(fd, A_RESIZE, &f) == 0);
	TAP_CHECK(agent_write_frame(fd, A_STDIN, cmd, strlen(cmd)) == 0);
	TAP_CHECK(collect(fd, &r) == 0);
	close(fd);
	TAP_CHECK(r.exit_code == 3);
	TAP_CHECK(r.out != NULL && strstr(r.out, "33 111\r\n") != NULL);
	result_free(&r);
	return TAP_PASS;
}

/* Several execs alive at once, each answered on its own connection. */
static int
t_concurrent(void)
{
	enum { N = 6 };
	struct agent_fields f = { 0 };
	struct result r;
	char line[32], want[64];
	int fd[N], i;
	void *p;

	for (i = 0; i < N; i++) {
		TAP_CHECK((fd[i] = agent_connect()) >= 0);
		exec_fields(&f, ARGS("sh", "-c", "read x; echo got $x $$"),
		    NULL);
		TAP_CHECK(send_fields(fd[i], A_EXEC, &f) == 0);
		TAP_CHECK((p = expect_frame(fd[i], A_STARTED, NULL)) != NULL);
		free(p);
	}
	/* Every shell is waiting for its line: answer in reverse. */
	for (i = N - 1; i >= 0; i--) {
		snprintf(line, sizeof(line), "n%d\n", i);
		TAP_CHECK(agent_write_frame(fd[i], A_STDIN, line,
		    strlen(line)) == 0);
		memset(&r, 0, sizeof(r));
		TAP_CHECK(collect(fd[i], &r) == 0);
		snprintf(want, sizeof(want), "got n%d ", i);
		TAP_CHECK(r.exit_code == 0 && r.out != NULL &&
		    strncmp(r.out, want, strlen(want)) == 0);
		result_free(&r);
		close(fd[i]);
	}
	return TAP_PASS;
}

/* Closing the connection kills a non-main process. */
static int
t_host_close(void)
{
	struct agent_fields f = { 0 };
	struct result r;
	char path[PATH_MAX];
	void *p;
	int fd, i;

	TAP_CHECK((fd = agent_connect()) >= 0);
	exec_fields(&f, ARGS("sh", "-c", "echo $$ > /tmp/victim; exec sleep "
	    "1000"), NULL);
	TAP_CHECK(send_fields(fd, A_EXEC, &f) == 0);
	TAP_CHECK((p = expect_frame(fd, A_STARTED, NULL)) != NULL);
	free(p);
	/* Wait for the pid file (the agent's /tmp is its own tmpfs). */
	for (i = 0; i < 500; i++) {
		TAP_CHECK(run(ARGS("cat", "/tmp/victim"), NULL, NULL, 0,
		    &r) == 0);
		if (r.exit_code == 0 && r.out != NULL)
			break;
		result_free(&r);
		usleep(10000);
	}
	TAP_CHECK(r.out != NULL);
	snprintf(path, sizeof(path), "/proc/%d", atoi(r.out));
	result_free(&r);
	close(fd);
	for (i = 0; i < 1000 && access(path, F_OK) == 0; i++)
		usleep(10000);
	TAP_CHECK(access(path, F_OK) < 0);
	return TAP_PASS;
}

/* An orphan re-parented to the agent is reaped, not left a zombie. */
static int
t_reap(void)
{
	struct result r;
	char path[PATH_MAX];
	int i;

	TAP_CHECK(run(ARGS("sh", "-c", "sleep 0.1 & echo $!"), NULL, NULL, 0,
	    &r) == 0);
	TAP_CHECK(r.exit_code == 0 && r.out != NULL);
	snprintf(path, sizeof(path), "/proc/%d", atoi(r.out));
	result_free(&r);
	/* A zombie keeps its /proc entry; a reaped process has none. */
	for (i = 0; i < 1000 && access(path, F_OK) == 0; i++)
		usleep(10000);
	TAP_CHECK(access(path, F_OK) < 0);
	return TAP_PASS;
}

static int
t_root_setup(void)
{
	struct result r;

	TAP_CHECK(run(ARGS("sh", "-c", "test -r /proc/self/status && "
	    "test -c /dev/null && test -d /dev/pts && test -w /tmp && "
	    "test -w /dev/shm && test -d /sys/kernel && hostname && "
	    "cat /etc/hostname && grep -c smx-test /etc/hosts && "
	    "cat /etc/resolv.conf"), NULL, NULL, 0, &r) == 0);
	TAP_CHECK(r.exit_code == 0);
	TAP_CHECK(r.out != NULL && strcmp(r.out, "smx-test\nsmx-test\n1\n"
	    "nameserver 127.0.0.1\n") == 0);
	result_free(&r);
	return TAP_PASS;
}

/* Write a file with A_PUT; 0 when A_OK came back, else the err. */
static int
put(const char *path, const char *mode, const char *data, size_t len,
    int uid)
{
	struct agent_fields f = { 0 };
	uint32_t type;
	void *p;
	size_t n;
	int fd, rc;

	if ((fd = agent_connect()) < 0)
		return -1;
	agent_fields_add(&f, "path", "%s", path);
	agent_fields_add(&f, "mode", "%s", mode);
	agent_fields_add(&f, "uid", "%d", uid);
	agent_fields_add(&f, "gid", "%d", uid);
	if (send_fields(fd, A_PUT, &f) < 0)
		goto fail;
	while (len > 0) {
		n = len > 70000 ? 70000 : len;
		/* The agent may refuse early and close: stop sending then. */
		if (agent_write_frame(fd, A_DATA, data, n) < 0)
			break;
		data += n;
		len -= n;
	}
	(void)!agent_write_frame(fd, A_DATA_EOF, NULL, 0);
	if (agent_read_frame(fd, &type, &p, &n) < 0)
		goto fail;
	rc = type == A_OK ? 0 : agent_field(p, n, "err") ?
	    atoi(agent_field(p, n, "err")) : -1;
	free(p);
	close(fd);
	return rc;
fail:
	close(fd);
	return -1;
}

/* Read a file with A_GET into *out; 0 or the A_ERROR err. */
static int
get(const char *path, char **out, size_t *out_len, unsigned *mode)
{
	struct agent_fields f = { 0 };
	uint32_t type;
	void *p;
	size_t n;
	int fd, rc = -1;

	*out = NULL;
	*out_len = 0;
	if ((fd = agent_connect()) < 0)
		return -1;
	agent_fields_add(&f, "path", "%s", path);
	if (send_fields(fd, A_GET, &f) < 0 ||
	    agent_read_frame(fd, &type, &p, &n) < 0)
		goto out;
	if (type != A_OK) {
		rc = agent_field(p, n, "err") ? atoi(agent_field(p, n, "err")) :
		    -1;
		if (getenv("AGENT_TEST_DEBUG"))
			tap_diag("get %s: %s", path, agent_field(p, n, "msg"));
		free(p);
		goto out;
	}
	*mode = (unsigned)strtoul(agent_field(p, n, "mode"), NULL, 8);
	if (atol(agent_field(p, n, "size")) < 0)
		goto out;
	free(p);
	append(out, out_len, "", 0);
	for (;;) {
		if (agent_read_frame(fd, &type, &p, &n) < 0)
			goto out;
		if (type == A_DATA_EOF) {
			free(p);
			break;
		}
		if (type != A_DATA) {
			free(p);
			goto out;
		}
		append(out, out_len, p, n);
		free(p);
	}
	rc = 0;
out:
	close(fd);
	return rc;
}

static int
t_put_get(void)
{
	size_t len = 300000, got_len, i;
	char *data, *got, path[PATH_MAX + 32];
	unsigned mode;
	struct stat st;
	struct result r;

	TAP_CHECK((data = malloc(len)) != NULL);
	for (i = 0; i < len; i++)
		data[i] = (char)(i * 7 + i / 251);
	TAP_CHECK(put("/data/file.bin", "640", data, len, 1234) == 0);
	snprintf(path, sizeof(path), "%s/data/file.bin", root);
	TAP_CHECK(stat(path, &st) == 0);
	TAP_CHECK((st.st_mode & 07777) == 0640 && st.st_uid == 1234 &&
	    st.st_gid == 1234 && st.st_size == (off_t)len);
	TAP_CHECK(get("/data/file.bin", &got, &got_len, &mode) == 0);
	TAP_CHECK(mode == 0640 && got_len == len &&
	    memcmp(got, data, len) == 0);
	free(got);
	/* Overwrite with an empty file; the process inside sees it. */
	TAP_CHECK(put("/data/file.bin", "600", "", 0, 0) == 0);
	TAP_CHECK(run(ARGS("stat", "-c", "%s %a", "/data/file.bin"), NULL,
	    NULL, 0, &r) == 0);
	TAP_CHECK(r.out != NULL && strcmp(r.out, "0 600\n") == 0);
	result_free(&r);
	/* An absolute symlink resolves inside the container root. */
	TAP_CHECK(put("/data/target", "644", "inside\n", 7, 0) == 0);
	snprintf(path, sizeof(path), "%s/data/link", root);
	TAP_CHECK(symlink("/data/target", path) == 0);
	TAP_CHECK(get("/data/link", &got, &got_len, &mode) == 0);
	TAP_CHECK(got_len == 7 && memcmp(got, "inside\n", 7) == 0);
	free(got);
	/* Errors come back as errno values. */
	TAP_CHECK(get("/data/missing", &got, &got_len, &mode) == ENOENT);
	free(got);
	TAP_CHECK(get("/data", &got, &got_len, &mode) == EISDIR);
	free(got);
	TAP_CHECK(put("/no/such/dir/f", "644", data, len, 0) == ENOENT);
	TAP_CHECK(put("/data", "644", "x", 1, 0) != 0);
	free(data);
	return TAP_PASS;
}

static int
t_connect(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct agent_fields f = { 0 };
	socklen_t sl = sizeof(sin);
	char buf[64];
	int l, fd, s;
	void *p;
	size_t n;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	TAP_CHECK((l = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	TAP_CHECK(bind(l, (struct sockaddr *)&sin, sizeof(sin)) == 0);
	TAP_CHECK(listen(l, 1) == 0);
	TAP_CHECK(getsockname(l, (struct sockaddr *)&sin, &sl) == 0);

	TAP_CHECK((fd = agent_connect()) >= 0);
	agent_fields_add(&f, "port", "%d", ntohs(sin.sin_port));
	TAP_CHECK(send_fields(fd, A_CONNECT, &f) == 0);
	TAP_CHECK((p = expect_frame(fd, A_OK, NULL)) != NULL);
	free(p);
	TAP_CHECK((s = accept(l, NULL, NULL)) >= 0);
	/* Raw bytes both ways, then each half-close passed on. */
	TAP_CHECK(write(fd, "ping", 4) == 4);
	TAP_CHECK(read(s, buf, sizeof(buf)) == 4 && memcmp(buf, "ping", 4) ==
	    0);
	TAP_CHECK(write(s, "pong!", 5) == 5);
	TAP_CHECK(read(fd, buf, sizeof(buf)) == 5 &&
	    memcmp(buf, "pong!", 5) == 0);
	TAP_CHECK(shutdown(fd, SHUT_WR) == 0);
	TAP_CHECK(read(s, buf, sizeof(buf)) == 0);
	TAP_CHECK(write(s, "late", 4) == 4);
	close(s);
	TAP_CHECK(read(fd, buf, sizeof(buf)) == 4);
	TAP_CHECK(read(fd, buf, sizeof(buf)) == 0);
	close(fd);

	/* Nobody listening: A_ERROR with ECONNREFUSED. */
	close(l);
	TAP_CHECK((fd = agent_connect()) >= 0);
	agent_fields_add(&f, "port", "%d", ntohs(sin.sin_port));
	TAP_CHECK(send_fields(fd, A_CONNECT, &f) == 0);
	TAP_CHECK((p = expect_frame(fd, A_ERROR, &n)) != NULL);
	TAP_CHECK(agent_field(p, n, "err") != NULL &&
	    atoi(agent_field(p, n, "err")) == ECONNREFUSED);
	free(p);
	close(fd);
	return TAP_PASS;
}

static int
t_fixup(void)
{
	struct agent_fields f = { 0 };
	struct result r;
	void *p;
	int fd;

	TAP_CHECK((fd = agent_connect()) >= 0);
	agent_fields_add(&f, "hostname", "%s", "clone-7");
	agent_fields_add(&f, "entropy", "%s",
	    "00112233445566778899aabbccddeeff");
	agent_fields_add(&f, "time_ns", "%lld", (long long)time(NULL) *
	    1000000000LL);
	TAP_CHECK(send_fields(fd, A_FIXUP, &f) == 0);
	TAP_CHECK((p = expect_frame(fd, A_OK, NULL)) != NULL);
	free(p);
	close(fd);
	TAP_CHECK(run(ARGS("sh", "-c", "hostname; cat /etc/hostname"), NULL,
	    NULL, 0, &r) == 0);
	TAP_CHECK(r.out != NULL && strcmp(r.out, "clone-7\nclone-7\n") == 0);
	result_free(&r);
	/* Bad entropy is refused. */
	TAP_CHECK((fd = agent_connect()) >= 0);
	agent_fields_add(&f, "entropy", "%s", "xyz");
	TAP_CHECK(send_fields(fd, A_FIXUP, &f) == 0);
	TAP_CHECK((p = expect_frame(fd, A_ERROR, NULL)) != NULL);
	free(p);
	close(fd);
	return TAP_PASS;
}

/* Malformed input: the connection is closed, the agent lives on. */
static int
t_bad_frames(void)
{
	static const char *const bad[] = {
		"\x63\0\0\0\0\0\0\0",		/* unknown request type */
		"\x01\0\0\0\xff\xff\xff\xff",	/* length over the limit */
		"\x21\0\0\0\0\0\0\0",		/* a reply as a request */
	};
	struct agent_fields f = { 0 };
	char junk[4096];
	size_t i;
	void *p;
	int fd;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		TAP_CHECK((fd = agent_connect()) >= 0);
		TAP_CHECK(write(fd, bad[i], 8) == 8);
		TAP_CHECK(closed_by_peer(fd));
		close(fd);
	}
	/* A frame out of place during an exec. */
	TAP_CHECK((fd = agent_connect()) >= 0);
	exec_fields(&f, ARGS("sleep", "1000"), NULL);
	TAP_CHECK(send_fields(fd, A_EXEC, &f) == 0);
	TAP_CHECK((p = expect_frame(fd, A_STARTED, NULL)) != NULL);
	free(p);
	TAP_CHECK(agent_write_frame(fd, A_DATA, "x", 1) == 0);
	TAP_CHECK(closed_by_peer(fd));
	close(fd);
	/* Bad signal number, garbage, a truncated frame, an empty exec. */
	TAP_CHECK((fd = agent_connect()) >= 0);
	exec_fields(&f, ARGS("sleep", "1000"), NULL);
	TAP_CHECK(send_fields(fd, A_EXEC, &f) == 0);
	TAP_CHECK((p = expect_frame(fd, A_STARTED, NULL)) != NULL);
	free(p);
	agent_fields_add(&f, "signal", "%s", "99999");
	TAP_CHECK(send_fields(fd, A_SIGNAL, &f) == 0);
	TAP_CHECK(closed_by_peer(fd));
	close(fd);
	memset(junk, 0xa5, sizeof(junk));
	TAP_CHECK((fd = agent_connect()) >= 0);
	TAP_CHECK(write(fd, junk, sizeof(junk)) == sizeof(junk));
	TAP_CHECK(closed_by_peer(fd));
	close(fd);
	TAP_CHECK((fd = agent_connect()) >= 0);
	TAP_CHECK(write(fd, "\x01\0\0\0\x40\0\0\0abc", 11) == 11);
	close(fd);
	TAP_CHECK((fd = agent_connect()) >= 0);
	TAP_CHECK(agent_write_frame(fd, A_EXEC, "cwd=/", 6) == 0);
	TAP_CHECK((p = expect_frame(fd, A_ERROR, NULL)) != NULL);
	free(p);
	close(fd);
	/* Still serving. */
	TAP_CHECK((fd = agent_connect()) >= 0);
	TAP_CHECK(agent_write_frame(fd, A_PING, NULL, 0) == 0);
	TAP_CHECK((p = expect_frame(fd, A_OK, NULL)) != NULL);
	free(p);
	close(fd);
	return TAP_PASS;
}

/*
 * Seeded random frames and bytes on many connections; the agent must
 * answer or close each, and keep serving.  No main=, no CONNECT (it
 * would reach the host's ports) and no POWEROFF.
 */
static int
t_fuzz(void)
{
	static const uint32_t types[] = { A_EXEC, A_PUT, A_GET, A_KILL,
	    A_FIXUP, A_PING, A_STDIN, A_STDIN_EOF, A_SIGNAL, A_RESIZE, A_DATA,
	    A_DATA_EOF, A_OK, 0, 77 };
	static const char *const keys[] = { "arg", "env", "cwd", "user",
	    "tty", "rows", "cols", "timeout_ms", "path", "mode", "uid", "gid",
	    "signal", "entropy", "hostname", "arg=", "" };
	static const char *const vals[] = { "", "0", "1", "-1", "15",
	    "99999999999999999999", "sh", "/", "/data", "/data/fz", "tester",
	    "root:root", "1:2:3", "%s%n", "echo", "true", "cat", "00ff",
	    "../../..", "/dev/null/x", "644" };
	struct result r;
	unsigned seed = 12345, it, k, nf, nk;
	char p[2048], junk[512];
	uint32_t t;
	size_t len, i;
	int fd;
	void *q;

#define RND(n)	((seed = seed * 1103515245u + 12345u) >> 16) % (n)
	for (it = 0; it < 300; it++) {
		TAP_CHECK((fd = agent_connect()) >= 0);
		nf = 1 + RND(5);
		for (k = 0; k < nf; k++) {
			if (RND(8) == 0) {
				len = 1 + RND(sizeof(junk));
				for (i = 0; i < len; i++)
					junk[i] = (char)RND(256);
				if (write(fd, junk, len) < 0)
					break;
				continue;
			}
			len = 0;
			nk = RND(6);
			while (nk-- > 0 && len < sizeof(p) - 300) {
				const char *key = keys[RND(sizeof(keys) /
				    sizeof(keys[0]))];
				const char *val = vals[RND(sizeof(vals) /
				    sizeof(vals[0]))];

				len += (size_t)snprintf(p + len,
				    sizeof(p) - len, "%s=%s", key, val);
				/* Mostly NUL-terminated fields. */
				if (RND(10) != 0)
					len++;
			}
			t = types[RND(sizeof(types) / sizeof(types[0]))];
			if (agent_write_frame(fd, t, p, len) < 0)
				break;
		}
		/* Half-close: a running exec is killed, the rest answered. */
		shutdown(fd, SHUT_WR);
		while (read(fd, junk, sizeof(junk)) > 0)
			;
		close(fd);
	}
#undef RND
	TAP_CHECK((fd = agent_connect()) >= 0);
	TAP_CHECK(agent_write_frame(fd, A_PING, NULL, 0) == 0);
	TAP_CHECK((q = expect_frame(fd, A_OK, NULL)) != NULL);
	free(q);
	close(fd);
	TAP_CHECK(run(ARGS("echo", "alive"), NULL, NULL, 0, &r) == 0);
	TAP_CHECK(r.out != NULL && strcmp(r.out, "alive\n") == 0);
	result_free(&r);
	return TAP_PASS;
}

/* Last: A_POWEROFF answers, then the (test-mode) agent exits 0. */
static int
t_poweroff(void)
{
	void *p;
	int fd, st;

	TAP_CHECK((fd = agent_connect()) >= 0);
	TAP_CHECK(agent_write_frame(fd, A_POWEROFF, NULL, 0) == 0);
	TAP_CHECK((p = expect_frame(fd, A_OK, NULL)) != NULL);
	free(p);
	close(fd);
	TAP_CHECK(waitpid(agent_pid, &st, 0) == agent_pid);
	agent_pid = 0;
	TAP_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	return TAP_PASS;
}

/* 1 when path is an ELF executable without an interpreter (static). */
static int
is_static_elf(const char *path)
{
	Elf64_Ehdr eh;
	Elf64_Phdr ph;
	int fd, i, ok = 0;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	if (pread(fd, &eh, sizeof(eh), 0) != sizeof(eh) ||
	    memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64)
		goto out;
	ok = 1;
	for (i = 0; i < eh.e_phnum; i++) {
		if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff +
		    (size_t)i * eh.e_phentsize)) != sizeof(ph)) {
			ok = 0;
			break;
		}
		if (ph.p_type == PT_INTERP)
			ok = 0;
	}
out:
	close(fd);
	return ok;
}

static int
write_file(const char *rel, const char *text, mode_t mode)
{
	char path[PATH_MAX + 64];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	if ((fp = fopen(path, "w")) == NULL)
		return -1;
	fputs(text, fp);
	fclose(fp);
	return chmod(path, mode);
}

/* The container root: busybox and its applets, users, groups. */
static int
build_root(const char *busybox)
{
	static const char *const dirs[] = { "bin", "etc", "data", "root",
	    "home", "home/tester", "dev", "proc", "sys", "tmp" };
	char path[PATH_MAX + 64], cmd[PATH_MAX + 64], name[256];
	FILE *fp;
	size_t i;

	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", root, dirs[i]);
		if (mkdir(path, 0755) < 0)
			return -1;
	}
	snprintf(cmd, sizeof(cmd), "cp %s %s/bin/busybox", busybox, root);
	if (system(cmd) != 0)
		return -1;
	snprintf(cmd, sizeof(cmd), "%s --list", busybox);
	if ((fp = popen(cmd, "r")) == NULL)
		return -1;
	while (fgets(name, sizeof(name), fp) != NULL) {
		name[strcspn(name, "\n")] = '\0';
		if (name[0] == '\0' || strchr(name, '/') != NULL ||
		    strcmp(name, "busybox") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/bin/%s", root, name);
		if (symlink("busybox", path) < 0 && errno != EEXIST) {
			pclose(fp);
			return -1;
		}
	}
	if (pclose(fp) != 0)
		return -1;
	if (write_file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
	    "tester:x:1234:1234:A tester:/home/tester:/bin/sh\n"
	    "other:x:1500:1500::/:/bin/sh\n", 0644) < 0 ||
	    write_file("etc/group", "root:x:0:\ntester:x:1234:\n"
	    "extra:x:2000:tester\nmore:x:2001:other,tester\n"
	    "notmine:x:2002:other\n", 0644) < 0 ||
	    write_file("bin/notexec", "#!/bin/sh\necho no\n", 0644) < 0)
		return -1;
	return 0;
}

/* Start the agent on a listening socket and a socketpair. */
static int
start_agent(const char *exe)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int l, sv[2], ready[2], rc;
	char a[3][16];
	uint32_t type;
	void *p;
	size_t n;

	snprintf(sockpath, sizeof(sockpath), "%s.sock", root);
	if (strlen(sockpath) >= sizeof(sun.sun_path))
		return -1;
	memcpy(sun.sun_path, sockpath, strlen(sockpath) + 1);
	if ((l = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 ||
	    bind(l, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    listen(l, 16) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0 || pipe(ready) < 0)
		return -1;
	snprintf(a[0], sizeof(a[0]), "%d", l);
	snprintf(a[1], sizeof(a[1]), "%d", sv[1]);
	snprintf(a[2], sizeof(a[2]), "%d", ready[1]);
	if ((agent_pid = fork()) < 0)
		return -1;
	if (agent_pid == 0) {
		close(sv[0]);
		close(ready[0]);
		alarm(0);
		execl(exe, exe, "--test-root", root, "--listen-fd", a[0],
		    "--serve-fd", a[1], "--ready-fd", a[2], "--hostname",
		    "smx-test", (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", exe, strerror(errno));
		_exit(127);
	}
	close(l);
	close(sv[1]);
	close(ready[1]);
	pair_fd = sv[0];
	rc = agent_read_frame(ready[0], &type, &p, &n);
	close(ready[0]);
	if (rc < 0)
		return -1;
	hello_type = (int)type;
	hello_len = n < sizeof(hello_buf) - 1 ? n : sizeof(hello_buf) - 1;
	memcpy(hello_buf, p, hello_len);
	free(p);
	return 0;
}

static const struct tap_case cases[] = {
	{ "wire codec: fields and frames", t_fields },
	{ "A_HELLO on the ready fd", t_hello },
	{ "a request over a socketpair", t_socketpair_ping },
	{ "container root: mounts, hostname, /etc files", t_root_setup },
	{ "exec: stdout, stderr, exit code", t_echo },
	{ "exec: env, defaults, cwd", t_env_cwd },
	{ "exec: users and groups", t_user },
	{ "exec: not found 127 / not executable 126", t_exec_errors },
	{ "exec: signals and timeout", t_signal },
	{ "A_KILL reaches the main process", t_kill_main },
	{ "exec: stdin piped, large streams", t_stdin },
	{ "exec: pty and window size", t_pty },
	{ "concurrent execs", t_concurrent },
	{ "host closing kills the process", t_host_close },
	{ "orphans are reaped", t_reap },
	{ "PUT and GET", t_put_get },
	{ "CONNECT to a guest port", t_connect },
	{ "FIXUP: hostname, entropy", t_fixup },
	{ "bad frames close the connection only", t_bad_frames },
	{ "random frames: answered or closed, agent lives", t_fuzz },
	{ "POWEROFF", t_poweroff },
};

int
main(void)
{
	const char *bb = "/bin/busybox", *tb = getenv("top_builddir");
	char exe[PATH_MAX], cmd[PATH_MAX + 32];
	const char *tmp = getenv("TMPDIR");
	int rc;

	if (geteuid() != 0) {
		printf("1..0 # SKIP needs root (mount namespaces, chroot)\n");
		return 77;
	}
	if (!is_static_elf(bb)) {
		printf("1..0 # SKIP needs a static %s (apt-get install "
		    "busybox-static)\n", bb);
		return 77;
	}
	snprintf(exe, sizeof(exe), "%s/tools/smx-init/smx-init",
	    tb != NULL ? tb : ".");
	if (access(exe, X_OK) < 0) {
		fprintf(stderr, "agent_test: %s: %s (run make first)\n", exe,
		    strerror(errno));
		return 1;
	}
	snprintf(root, sizeof(root), "%s/agent_test.XXXXXX",
	    tmp != NULL ? tmp : "/tmp");
	if (mkdtemp(root) == NULL || chmod(root, 0755) < 0 ||
	    build_root(bb) < 0) {
		fprintf(stderr, "agent_test: building %s: %s\n", root,
		    strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	if (start_agent(exe) < 0) {
		fprintf(stderr, "agent_test: starting %s failed\n", exe);
		rc = 1;
	} else
		rc = tap_run(cases, sizeof(cases) / sizeof(cases[0]), 120);
	if (agent_pid > 0) {
		kill(agent_pid, SIGKILL);
		waitpid(agent_pid, NULL, 0);
	}
	unlink(sockpath);
	snprintf(cmd, sizeof(cmd), "rm -rf --one-file-system %s", root);
	if (system(cmd) != 0)
		rc = 1;
	return rc;
}
