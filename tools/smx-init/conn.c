/*
 * The agent's event loop: one poll(2) over every host connection, every
 * exec'd process's stdio, forwarded TCP sockets and a signalfd.  Each
 * host connection carries one request (core/agent_proto.h) and is a
 * small state machine.  Nothing here blocks on the host: its streams
 * are nonblocking, frames are bounded, and output is read from a child
 * only while the host keeps up (backpressure instead of buffering).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <linux/openat2.h>
#include <linux/random.h>

#include "agent.h"

#define CHUNK		(64 * 1024)	/* one read from a child or file */
#define HIGH_WATER	(256 * 1024)	/* stop reading above this */
#define QUIET_MS	250		/* after exit: wait this for output */

/* A growable byte queue. */
struct buf {
	char	*data;
	size_t	 off, len, cap;	/* bytes data[off .. off+len) pending */
};

enum state {
	S_REQ,		/* waiting for the request frame */
	S_EXEC,
	S_PUT,
	S_GET,
	S_CONNECTING,
	S_SPLICE,	/* raw bytes both ways */
	S_DONE,		/* flush out, then close */
};

struct conn {
	struct conn	*next;
	int		 fd;		/* the host stream */
	enum state	 state;
	struct buf	 in;		/* bytes from the host */
	struct buf	 out;		/* bytes for the host */
	int		 host_eof;	/* the host closed its side */
	int		 host_dead;	/* cannot write to the host any more */

	/* S_EXEC */
	pid_t		 pid;		/* 0 once reaped */
	int		 status, exited, started, is_main, tty;
	int		 errpipe;	/* spawn report, -1 once read */
	char		 errmsg[1024];
	size_t		 errlen;
	int		 in_fd;		/* child's stdin (or pty master) */
	int		 out_fd, err_fd;	/* -1 at EOF */
	struct buf	 stdin_q;
	int		 stdin_eof;	/* host sent A_STDIN_EOF */
	int64_t		 kill_at;	/* timeout_ms deadline, or 0 */
	int64_t		 quiet_at;	/* after exit: give up waiting */

	/* S_PUT / S_GET */
	int		 file_fd, dir_fd;
	char		 tmp[NAME_MAX + 1], base[NAME_MAX + 1];

	/* S_CONNECTING / S_SPLICE */
	int		 sock;
	struct buf	 to_sock;
	int		 sock_eof;	/* the TCP peer closed */
	int		 sock_wr_shut, host_wr_shut;
};

static struct conn *conns;

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void
buf_add(struct buf *b, const void *p, size_t n)
{
	char *nd;
	size_t cap;

	if (b->off > 0 && b->off + b->len + n > b->cap) {
		memmove(b->data, b->data + b->off, b->len);
		b->off = 0;
	}
	if (b->len + n > b->cap) {
		cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n)
			cap *= 2;
		if ((nd = realloc(b->data, cap)) == NULL)
			die(ENOMEM, "out of memory");
		b->data = nd;
		b->cap = cap;
	}
	memcpy(b->data + b->off + b->len, p, n);
	b->len += n;
}

static void
buf_drop(struct buf *b, size_t n)
{
	b->off += n;
	b->len -= n;
	if (b->len == 0)
		b->off = 0;
}

static void
buf_free(struct buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

static void
close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Queue one frame for the host. */
static void
send_frame(struct conn *c, uint32_t type, const void *p, size_t n)
{
	unsigned char h[AGENT_HDR_LEN];
	uint32_t v[2] = { type, (uint32_t)n };
	int i, j;

	if (c->host_dead)
		return;
	for (i = 0; i < 2; i++)
		for (j = 0; j < 4; j++)
			h[i * 4 + j] = (v[i] >> (8 * j)) & 0xff;
	buf_add(&c->out, h, sizeof(h));
	if (n > 0)
		buf_add(&c->out, p, n);
}

static void
send_fields(struct conn *c, uint32_t type, struct agent_fields *f)
{
	send_frame(c, type, f->buf, f->len);
	agent_fields_free(f);
}

/* Answer A_ERROR (msg=, err=) and end the connection. */
static void __attribute__((format(printf, 3, 4)))
send_error(struct conn *c, int err, const char *fmt, ...)
{
	struct agent_fields f = { 0 };
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	agent_fields_add(&f, "msg", "%s", msg);
	if (err > 0)
		agent_fields_add(&f, "err", "%d", err);
	send_fields(c, A_ERROR, &f);
	c->state = S_DONE;
}

static void
send_ok(struct conn *c)
{
	send_frame(c, A_OK, NULL, 0);
	c->state = S_DONE;
}

void
conn_add(int fd)
{
	struct conn *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		die(ENOMEM, "out of memory");
	set_nonblock(fd);
	c->fd = fd;
	c->in_fd = c->out_fd = c->err_fd = c->errpipe = -1;
	c->file_fd = c->dir_fd = c->sock = -1;
	c->next = conns;
	conns = c;
}

static void
conn_free(struct conn *c)
{
	struct conn **pp;

	for (pp = &conns; *pp != c; pp = &(*pp)->next)
		;
	*pp = c->next;
	close_fd(&c->fd);
	close_fd(&c->in_fd);
	close_fd(&c->out_fd);
	close_fd(&c->err_fd);
	close_fd(&c->errpipe);
	close_fd(&c->sock);
	close_fd(&c->file_fd);
	if (c->tmp[0] != '\0' && c->dir_fd >= 0)
		unlinkat(c->dir_fd, c->tmp, 0);
	close_fd(&c->dir_fd);
	buf_free(&c->in);
	buf_free(&c->out);
	buf_free(&c->stdin_q);
	buf_free(&c->to_sock);
	free(c);
}

/* The host is gone: an exec'd process dies with it unless it is main. */
static void
host_lost(struct conn *c)
{
	c->host_dead = 1;
	c->host_eof = 1;
	buf_free(&c->out);
	if (c->state == S_EXEC && c->pid > 0 && !c->is_main && !c->exited)
		kill(-c->pid, SIGKILL);
}

/* Write what we can of c->out; the host not reading is no error. */
static void
flush_out(struct conn *c)
{
	ssize_t n;

	while (c->out.len > 0 && !c->host_dead) {
		n = write(c->fd, c->out.data + c->out.off, c->out.len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				host_lost(c);
			return;
		}
		buf_drop(&c->out, (size_t)n);
	}
}

/* Parse an unsigned decimal field in [lo, hi]; -1 when absent or bad. */
static long
field_num(const void *p, size_t n, const char *key, long lo, long hi)
{
	const char *v = agent_field(p, n, key);
	char *end;
	long x;

	if (v == NULL || *v == '\0')
		return -1;
	errno = 0;
	x = strtol(v, &end, 10);
	if (*end != '\0' || errno != 0 || x < lo || x > hi)
		return -1;
	return x;
}

/* NULL-terminated array of every value of a repeated key. */
static char **
field_list(const void *p, size_t n, const char *key, size_t *count)
{
	const char *v = NULL;
	char **a;
	size_t k = 0;

	while ((v = agent_field_next(p, n, key, v)) != NULL)
		k++;
	if ((a = calloc(k + 1, sizeof(*a))) == NULL)
		die(ENOMEM, "out of memory");
	k = 0;
	while ((v = agent_field_next(p, n, key, v)) != NULL)
		a[k++] = (char *)v;
	*count = k;
	return a;
}

static void
set_winsize(int fd, const void *p, size_t n)
{
	struct winsize ws = { 0 };
	long r = field_num(p, n, "rows", 1, 65535);
	long cl = field_num(p, n, "cols", 1, 65535);

	if (r < 0 || cl < 0)
		return;
	ws.ws_row = (unsigned short)r;
	ws.ws_col = (unsigned short)cl;
	ioctl(fd, TIOCSWINSZ, &ws);
}

/* Open a pty inside the container's devpts; master and slave fds. */
static int
open_pty(int *master, int *slave)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/dev/pts/ptmx", agent.root);
	if ((*master = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0)
		return -errno;
	if (unlockpt(*master) < 0 ||
	    (*slave = ioctl(*master, TIOCGPTPEER, O_RDWR | O_NOCTTY |
	    O_CLOEXEC)) < 0) {
		int e = errno;

		close(*master);
		return -e;
	}
	return 0;
}

static void
start_exec(struct conn *c, const char *p, size_t n)
{
	struct spawn_req req = { 0 };
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 };
	int ep[2], fds[3], master = -1, slave = -1, rc;
	size_t argc, envc;
	long t;
	pid_t pid;

	req.argv = field_list(p, n, "arg", &argc);
	req.envp = field_list(p, n, "env", &envc);
	req.cwd = agent_field(p, n, "cwd");
	req.user = agent_field(p, n, "user");
	req.tty = field_num(p, n, "tty", 0, 1) == 1;
	c->is_main = field_num(p, n, "main", 0, 1) == 1;
	req.mkcwd = c->is_main;
	if (argc == 0 || *req.argv[0] == '\0') {
		send_error(c, EINVAL, "exec: no command given");
		goto out;
	}
	if (c->is_main && agent.main_pid > 0) {
		send_error(c, EBUSY, "exec: a main process is already running "
		    "(pid %d)", (int)agent.main_pid);
		goto out;
	}
	if (req.tty) {
		if ((rc = open_pty(&master, &slave)) < 0) {
			send_error(c, -rc, "exec: open pty: %s", strerror(-rc));
			goto out;
		}
		set_winsize(master, p, n);
		fds[0] = fds[1] = fds[2] = slave;
	} else {
		if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 ||
		    pipe2(err, O_CLOEXEC) < 0) {
			send_error(c, errno, "exec: pipe: %s", strerror(errno));
			goto err_close;
		}
		fds[0] = in[0];
		fds[1] = out[1];
		fds[2] = err[1];
	}
	if (pipe2(ep, O_CLOEXEC) < 0) {
		send_error(c, errno, "exec: pipe: %s", strerror(errno));
		goto err_close;
	}
	if ((pid = fork()) < 0) {
		send_error(c, errno, "exec: fork: %s", strerror(errno));
		close(ep[0]);
		close(ep[1]);
		goto err_close;
	}
	if (pid == 0) {
		close(ep[0]);
		spawn_child(&req, fds, ep[1]);
	}
	close(ep[1]);
	c->errpipe = ep[0];
	set_nonblock(c->errpipe);
	c->pid = pid;
	c->state = S_EXEC;
	c->tty = req.tty;
	if (req.tty) {
		close(slave);
		c->in_fd = c->out_fd = master;
		set_nonblock(master);
	} else {
		close(in[0]);
		close(out[1]);
		close(err[1]);
		c->in_fd = in[1];
		c->out_fd = out[0];
		c->err_fd = err[0];
		set_nonblock(c->in_fd);
		set_nonblock(c->out_fd);
		set_nonblock(c->err_fd);
	}
	if ((t = field_num(p, n, "timeout_ms", 1, LONG_MAX)) > 0)
		c->kill_at = now_ms() + t;
	if (c->is_main)
		agent.main_pid = pid;
	goto out;

err_close:
	close_fd(&in[0]);
	close_fd(&in[1]);
	close_fd(&out[0]);
	close_fd(&out[1]);
	close_fd(&err[0]);
	close_fd(&err[1]);
	close_fd(&master);
	close_fd(&slave);
out:
	free(req.argv);
	free(req.envp);
}

/* Open path's parent inside the root; the last component in base. */
static int
open_parent(const char *path, char *base, size_t bsize)
{
	struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
	    .resolve = RESOLVE_IN_ROOT };
	char dir[PATH_MAX];
	const char *slash;
	size_t len = strlen(path);
	int fd;

	while (len > 1 && path[len - 1] == '/')
		len--;
	if (len >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, path, len);
	dir[len] = '\0';
	slash = strrchr(dir, '/');
	if (snprintf(base, bsize, "%s", slash ? slash + 1 : dir) >=
	    (int)bsize)
		return -ENAMETOOLONG;
	if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return -EISDIR;
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		dir[slash - dir] = '\0';
	fd = (int)syscall(SYS_openat2, agent.rootfd, dir, &how, sizeof(how));
	return fd < 0 ? -errno : fd;
}

static void
start_put(struct conn *c, const char *p, size_t n)
{
	const char *path = agent_field(p, n, "path"), *ms;
	long uid = field_num(p, n, "uid", 0, INT_MAX);
	long gid = field_num(p, n, "gid", 0, INT_MAX);
	unsigned long mode = 0644;
	char *end;
	int fd;

	if (path == NULL || *path == '\0') {
		send_error(c, EINVAL, "put: no path given");
		return;
	}
	if ((ms = agent_field(p, n, "mode")) != NULL && *ms != '\0') {
		mode = strtoul(ms, &end, 8);
		if (*end != '\0' || mode > 07777) {
			send_error(c, EINVAL, "put %s: bad mode %s", path, ms);
			return;
		}
	}
	if ((fd = open_parent(path, c->base, sizeof(c->base))) < 0) {
		send_error(c, -fd, "put %s: %s", path, strerror(-fd));
		return;
	}
	c->dir_fd = fd;
	snprintf(c->tmp, sizeof(c->tmp), ".smx-put.%d.%.200s", (int)getpid(),
	    c->base);
	c->file_fd = openat(fd, c->tmp, O_WRONLY | O_CREAT | O_TRUNC |
	    O_CLOEXEC | O_NOFOLLOW, 0600);
	if (c->file_fd < 0) {
		c->tmp[0] = '\0';
		send_error(c, errno, "put %s: %s", path, strerror(errno));
		return;
	}
	if (fchown(c->file_fd, uid < 0 ? 0 : (uid_t)uid,
	    gid < 0 ? 0 : (gid_t)gid) < 0 ||
	    fchmod(c->file_fd, (mode_t)mode) < 0) {
		send_error(c, errno, "put %s: %s", path, strerror(errno));
		return;
	}
	c->state = S_PUT;
}

static void
put_frame(struct conn *c, uint32_t type, const char *p, size_t n)
{
	size_t done = 0;
	ssize_t w;

	if (type == A_DATA) {
		while (done < n) {
			w = write(c->file_fd, p + done, n - done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				send_error(c, errno, "put %s: write: %s",
				    c->base, strerror(errno));
				return;
			}
			done += (size_t)w;
		}
		return;
	}
	/* A_DATA_EOF */
	if (close(c->file_fd) < 0) {
		c->file_fd = -1;
		send_error(c, errno, "put %s: %s", c->base, strerror(errno));
		return;
	}
	c->file_fd = -1;
	if (renameat(c->dir_fd, c->tmp, c->dir_fd, c->base) < 0) {
		send_error(c, errno, "put %s: %s", c->base, strerror(errno));
		return;
	}
	c->tmp[0] = '\0';
	send_ok(c);
}

static void
start_get(struct conn *c, const char *p, size_t n)
{
	struct open_how how = { .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY |
	    O_NONBLOCK, .resolve = RESOLVE_IN_ROOT };
	const char *path = agent_field(p, n, "path");
	struct agent_fields f = { 0 };
	struct stat st;

	if (path == NULL || *path == '\0') {
		send_error(c, EINVAL, "get: no path given");
		return;
	}
	c->file_fd = (int)syscall(SYS_openat2, agent.rootfd, path, &how,
	    sizeof(how));
	if (c->file_fd < 0) {
		send_error(c, errno, "get %s: %s", path, strerror(errno));
		return;
	}
	if (fstat(c->file_fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		int e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;

		send_error(c, e, "get %s: %s", path, S_ISDIR(st.st_mode) ?
		    "is a directory" : "not a regular file");
		return;
	}
	agent_fields_add(&f, "mode", "%o", (unsigned)(st.st_mode & 07777));
	agent_fields_add(&f, "size", "%lld", (long long)st.st_size);
	send_fields(c, A_OK, &f);
	c->state = S_GET;
}

/* S_GET: move one chunk of the file into the output queue. */
static void
get_more(struct conn *c)
{
	char b[CHUNK];
	ssize_t n;

	n = read(c->file_fd, b, sizeof(b));
	if (n < 0 && errno == EINTR)
		return;
	if (n < 0) {
		send_error(c, errno, "get: read: %s", strerror(errno));
		return;
	}
	if (n == 0) {
		send_frame(c, A_DATA_EOF, NULL, 0);
		c->state = S_DONE;
		return;
	}
	send_frame(c, A_DATA, b, (size_t)n);
}

static void
start_connect(struct conn *c, const char *p, size_t n)
{
	long port = field_num(p, n, "port", 1, 65535);
	struct sockaddr_in sin = { .sin_family = AF_INET };

	if (port < 0) {
		send_error(c, EINVAL, "connect: want port=1..65535");
		return;
	}
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->sock = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (c->sock < 0) {
		send_error(c, errno, "connect: socket: %s", strerror(errno));
		return;
	}
	if (connect(c->sock, (struct sockaddr *)&sin, sizeof(sin)) < 0 &&
	    errno != EINPROGRESS) {
		send_error(c, errno, "connect to 127.0.0.1:%ld: %s", port,
		    strerror(errno));
		return;
	}
	c->state = S_CONNECTING;
}

static int
parse_hex(const char *s, unsigned char *out, size_t max, size_t *len)
{
	size_t n = strlen(s), i;
	unsigned int v;

	if (n % 2 != 0 || n / 2 > max)
		return -1;
	for (i = 0; i < n / 2; i++) {
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	*len = n / 2;
	return 0;
}

static void
do_fixup(struct conn *c, const char *p, size_t n)
{
	const char *t = agent_field(p, n, "time_ns");
	const char *e = agent_field(p, n, "entropy");
	const char *h = agent_field(p, n, "hostname");
	struct {
		struct rand_pool_info	info;
		unsigned char		b[256];
	} pool;
	struct timespec ts;
	unsigned long long ns;
	size_t len;
	char *end;
	int fd, rc;

	if (t != NULL && *t != '\0') {
		errno = 0;
		ns = strtoull(t, &end, 10);
		if (*end != '\0' || errno != 0) {
			send_error(c, EINVAL, "fixup: bad time_ns %s", t);
			return;
		}
		ts.tv_sec = (time_t)(ns / 1000000000ULL);
		ts.tv_nsec = (long)(ns % 1000000000ULL);
		/* Test mode runs on the host: its clock is not ours. */
		if (!agent.test && clock_settime(CLOCK_REALTIME, &ts) < 0) {
			send_error(c, errno, "fixup: set clock: %s",
			    strerror(errno));
			return;
		}
	}
	if (e != NULL && *e != '\0') {
		if (parse_hex(e, pool.b, sizeof(pool.b), &len) < 0) {
			send_error(c, EINVAL, "fixup: bad entropy (want at "
			    "most 256 hex bytes)");
			return;
		}
		/* On the host (test mode) credit nothing to its pool. */
		pool.info.entropy_count = agent.test ? 0 : (int)(len * 8);
		pool.info.buf_size = (int)len;
		if ((fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC)) < 0 ||
		    ioctl(fd, RNDADDENTROPY, &pool.info) < 0 ||
		    ioctl(fd, RNDRESEEDCRNG) < 0) {
			rc = errno;
			if (fd >= 0)
				close(fd);
			send_error(c, rc, "fixup: reseed rng: %s",
			    strerror(rc));
			return;
		}
		close(fd);
	}
	if (h != NULL && *h != '\0' && (rc = set_hostname(h)) < 0) {
		send_error(c, -rc, "fixup: hostname %s: %s", h, strerror(-rc));
		return;
	}
	send_ok(c);
}

static void
do_poweroff(struct conn *c)
{
	struct conn *k;

	send_frame(c, A_OK, NULL, 0);
	/* The answer is a few bytes: it fits the socket buffer. */
	flush_out(c);
	for (k = conns; k != NULL; k = k->next)
		if (k->state == S_EXEC && k->pid > 0 && !k->exited)
			kill(-k->pid, SIGKILL);
	power_off();
}

/* The first frame of a connection. */
static void
request(struct conn *c, uint32_t type, const char *p, size_t n)
{
	long sig;

	switch (type) {
	case A_EXEC:
		start_exec(c, p, n);
		break;
	case A_PUT:
		start_put(c, p, n);
		break;
	case A_GET:
		start_get(c, p, n);
		break;
	case A_CONNECT:
		start_connect(c, p, n);
		break;
	case A_KILL:
		if ((sig = field_num(p, n, "signal", 1, NSIG - 1)) < 0)
			send_error(c, EINVAL, "kill: want signal=1..%d",
			    NSIG - 1);
		else if (agent.main_pid <= 0)
			send_error(c, ESRCH, "kill: no main process runs");
		else if (kill(agent.main_pid, (int)sig) < 0)
			send_error(c, errno, "kill: %s", strerror(errno));
		else
			send_ok(c);
		break;
	case A_FIXUP:
		do_fixup(c, p, n);
		break;
	case A_POWEROFF:
		do_poweroff(c);
		break;
	case A_PING:
		send_ok(c);
		break;
	default:
		/* Unknown request: the protocol says close. */
		host_lost(c);
		c->state = S_DONE;
		break;
	}
}

/* A frame after the request, while an exec runs. */
static int
exec_frame(struct conn *c, uint32_t type, const char *p, size_t n)
{
	long sig;

	switch (type) {
	case A_STDIN:
		if (!c->stdin_eof && c->in_fd >= 0)
			buf_add(&c->stdin_q, p, n);
		return 0;
	case A_STDIN_EOF:
		c->stdin_eof = 1;
		return 0;
	case A_SIGNAL:
		sig = field_num(p, n, "signal", 1, NSIG - 1);
		if (sig < 0)
			return -1;
		if (c->pid > 0 && !c->exited)
			kill(c->pid, (int)sig);
		return 0;
	case A_RESIZE:
		if (c->tty && c->in_fd >= 0)
			set_winsize(c->in_fd, p, n);
		return 0;
	default:
		return -1;
	}
}

/* Parse and act on every complete frame in c->in. */
static void
parse_frames(struct conn *c)
{
	const unsigned char *h;
	uint32_t type, len;
	char *p;

	while (c->in.len >= AGENT_HDR_LEN && !c->host_dead &&
	    c->state != S_DONE && c->state != S_CONNECTING &&
	    c->state != S_SPLICE && c->state != S_GET) {
		h = (const unsigned char *)c->in.data + c->in.off;
		type = h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24;
		len = h[4] | h[5] << 8 | h[6] << 16 | (uint32_t)h[7] << 24;
		if (len > AGENT_MAX_FRAME)
			goto bad;
		if (c->in.len < AGENT_HDR_LEN + (size_t)len)
			return;
		/* A NUL-terminated copy: field lookups stay in bounds. */
		if ((p = malloc((size_t)len + 1)) == NULL)
			die(ENOMEM, "out of memory");
		memcpy(p, h + AGENT_HDR_LEN, len);
		p[len] = '\0';
		buf_drop(&c->in, AGENT_HDR_LEN + (size_t)len);
		if (c->state == S_REQ)
			request(c, type, p, len);
		else if (c->state == S_EXEC) {
			if (exec_frame(c, type, p, len) < 0) {
				free(p);
				goto bad;
			}
		} else if (c->state == S_PUT) {
			if (type != A_DATA && type != A_DATA_EOF) {
				free(p);
				goto bad;
			}
			put_frame(c, type, p, len);
		}
		free(p);
	}
	return;
bad:
	/* A frame out of place or malformed: the protocol says close. */
	host_lost(c);
	if (c->state != S_EXEC)
		c->state = S_DONE;
}

/* Read from the host stream into c->in (or, splicing, c->to_sock). */
static void
read_host(struct conn *c)
{
	struct buf *b = c->state == S_SPLICE ? &c->to_sock : &c->in;
	char tmp[CHUNK];
	ssize_t n;

	n = read(c->fd, tmp, sizeof(tmp));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n < 0) {
		host_lost(c);
		if (c->state != S_EXEC)
			c->state = S_DONE;
		return;
	}
	if (n == 0) {
		/*
		 * The host closed (at least) its sending side: an exec'd
		 * process dies with it unless it is main; a half-done
		 * request is dropped; answers still go out while the host
		 * reads them.
		 */
		c->host_eof = 1;
		if (c->state == S_EXEC && c->pid > 0 && !c->is_main &&
		    !c->exited)
			kill(-c->pid, SIGKILL);
		else if (c->state == S_REQ || c->state == S_PUT)
			c->state = S_DONE;
		return;
	}
	buf_add(b, tmp, (size_t)n);
	if (c->state != S_SPLICE)
		parse_frames(c);
}

/* Read one chunk of a child's output into a frame; EOF closes *fd. */
static void
read_child(struct conn *c, int *fd, uint32_t type)
{
	char b[CHUNK];
	ssize_t n;

	n = read(*fd, b, sizeof(b));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		/* EOF, or EIO from a pty master once the slave is gone. */
		if (*fd == c->in_fd)
			c->in_fd = -1;
		close_fd(fd);
		return;
	}
	if (c->exited)
		c->quiet_at = now_ms() + QUIET_MS;
	send_frame(c, type, b, (size_t)n);
}

/* Feed queued stdin to the child; close it after A_STDIN_EOF. */
static void
write_stdin(struct conn *c)
{
	ssize_t n;

	while (c->stdin_q.len > 0 && c->in_fd >= 0) {
		n = write(c->in_fd, c->stdin_q.data + c->stdin_q.off,
		    c->stdin_q.len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0) {
			/* The child closed its stdin: drop the rest. */
			buf_free(&c->stdin_q);
			break;
		}
		buf_drop(&c->stdin_q, (size_t)n);
	}
	if (c->stdin_eof && c->stdin_q.len == 0 && c->in_fd >= 0) {
		if (!c->tty) {
			close_fd(&c->in_fd);
		} else {
			/* A terminal has no EOF: type the EOF character. */
			struct termios t;

			if (tcgetattr(c->in_fd, &t) == 0 &&
			    (t.c_lflag & ICANON))
				(void)!write(c->in_fd, &t.c_cc[VEOF], 1);
			c->stdin_eof = 2;
		}
	}
}

/* The exec's end: the exit status once output is drained. */
static void
exec_check_done(struct conn *c)
{
	struct agent_fields f = { 0 };

	if (c->errpipe >= 0 || !c->exited)
		return;
	if (!c->started)
		return;
	if (c->out_fd >= 0 || c->err_fd >= 0) {
		/* A slow host is no reason to cut the output short. */
		if (!c->host_dead && c->out.len >= HIGH_WATER)
			c->quiet_at = now_ms() + QUIET_MS;
		if (now_ms() < c->quiet_at)
			return;
	}
	if (WIFSIGNALED(c->status))
		agent_fields_add(&f, "signal", "%d", WTERMSIG(c->status));
	else
		agent_fields_add(&f, "exit", "%d", WEXITSTATUS(c->status));
	send_fields(c, A_EXIT, &f);
	if (c->in_fd == c->out_fd)
		c->in_fd = -1;
	close_fd(&c->in_fd);
	close_fd(&c->out_fd);
	close_fd(&c->err_fd);
	c->state = S_DONE;
}

/* The spawn report: EOF alone means execve succeeded. */
static void
read_errpipe(struct conn *c)
{
	struct agent_fields f = { 0 };
	ssize_t n;
	char *sp;
	int err;

	n = read(c->errpipe, c->errmsg + c->errlen,
	    sizeof(c->errmsg) - 1 - c->errlen);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n > 0) {
		c->errlen += (size_t)n;
		if (c->errlen < sizeof(c->errmsg) - 1)
			return;
	}
	close_fd(&c->errpipe);
	if (c->errlen == 0) {
		c->started = 1;
		agent_fields_add(&f, "pid", "%d", (int)c->pid);
		send_fields(c, A_STARTED, &f);
		return;
	}
	c->errmsg[c->errlen] = '\0';
	err = (int)strtol(c->errmsg, &sp, 10);
	if (*sp == ' ')
		sp++;
	if (c->is_main && agent.main_pid == c->pid)
		agent.main_pid = 0;
	send_error(c, err > 0 ? err : EINVAL, "%s", sp);
}

/* Reap every child (PID 1 adopts the orphans of the whole guest). */
static void
reap(void)
{
	struct conn *c;
	int st;
	pid_t pid;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if (pid == agent.main_pid)
			agent.main_pid = 0;
		for (c = conns; c != NULL; c = c->next) {
			if (c->pid != pid)
				continue;
			c->exited = 1;
			c->status = st;
			c->quiet_at = now_ms() + QUIET_MS;
			break;
		}
	}
}

static void
handle_signals(int sfd)
{
	struct signalfd_siginfo si;

	while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGCHLD)
			reap();
		else if (agent.main_pid > 0)
			/* PID 1 passes what it is sent on to main. */
			kill(agent.main_pid, (int)si.ssi_signo);
	}
}

/* S_CONNECTING: the TCP connect finished one way or the other. */
static void
connect_done(struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->sock, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == EINPROGRESS)
		return;
	if (err != 0) {
		send_error(c, err, "connect to 127.0.0.1: %s", strerror(err));
		return;
	}
	send_frame(c, A_OK, NULL, 0);
	c->state = S_SPLICE;
	/* Bytes the host sent after its request belong to the stream. */
	if (c->in.len > 0)
		buf_add(&c->to_sock, c->in.data + c->in.off, c->in.len);
	buf_free(&c->in);
}

/* S_SPLICE: move bytes both ways and pass each half-close on. */
static void
splice_step(struct conn *c, short sev)
{
	char b[CHUNK];
	ssize_t n;

	if ((sev & (POLLIN | POLLHUP | POLLERR)) && !c->sock_eof) {
		n = read(c->sock, b, sizeof(b));
		if (n > 0)
			buf_add(&c->out, b, (size_t)n);
		else if (n == 0 || (errno != EAGAIN && errno != EINTR))
			c->sock_eof = 1;
	}
	while (c->to_sock.len > 0) {
		n = write(c->sock, c->to_sock.data + c->to_sock.off,
		    c->to_sock.len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN) {
			c->state = S_DONE;	/* the peer reset */
			return;
		}
		if (n < 0)
			break;
		buf_drop(&c->to_sock, (size_t)n);
	}
	if (c->host_eof && c->to_sock.len == 0 && !c->sock_wr_shut) {
		shutdown(c->sock, SHUT_WR);
		c->sock_wr_shut = 1;
	}
	if (c->sock_eof && c->out.len == 0 && !c->host_wr_shut) {
		shutdown(c->fd, SHUT_WR);
		c->host_wr_shut = 1;
	}
	if (c->sock_wr_shut && c->host_wr_shut)
		c->state = S_DONE;
}

/* Where each pollfd came from. */
enum role { R_LISTEN, R_SIG, R_HOST, R_ERRPIPE, R_STDIN, R_STDOUT,
	R_STDERR, R_SOCK };

struct slot {
	struct conn	*c;
	enum role	 role;
};

#define MAX_FDS		4096

void
loop_run(int listenfd, int exit_when_idle)
{
	static struct pollfd pfd[MAX_FDS];
	static struct slot slot[MAX_FDS];
	struct conn *c, *next;
	sigset_t mask;
	int sfd, nfd, i, timeout, fd, room;
	int64_t now, soonest, accept_pause = 0;
	short ev, re;

	/* SIGCHLD (and, as PID 1, what init is sent) comes in by signalfd. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	if (agent.pid1) {
		sigaddset(&mask, SIGTERM);
		sigaddset(&mask, SIGINT);
		sigaddset(&mask, SIGHUP);
		sigaddset(&mask, SIGQUIT);
		sigaddset(&mask, SIGUSR1);
		sigaddset(&mask, SIGUSR2);
	}
	sigprocmask(SIG_BLOCK, &mask, NULL);
	if ((sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0)
		die(errno, "signalfd");
	signal(SIGPIPE, SIG_IGN);
	reap();

	for (;;) {
		nfd = 0;
		now = now_ms();
		soonest = -1;
#define ADD(f, ev, cc, r) do {						\
		if (nfd < MAX_FDS) {					\
			pfd[nfd].fd = (f);				\
			pfd[nfd].events = (ev);				\
			slot[nfd].c = (cc);				\
			slot[nfd].role = (r);				\
			nfd++;						\
		}							\
	} while (0)
		ADD(sfd, POLLIN, NULL, R_SIG);
		/* Out of descriptors: stop accepting for a moment rather
		 * than spin on a listener that stays readable. */
		if (listenfd >= 0 && now >= accept_pause)
			ADD(listenfd, POLLIN, NULL, R_LISTEN);
		else if (listenfd >= 0)
			soonest = accept_pause;
		for (c = conns; c != NULL; c = next) {
			next = c->next;
			/* Time-driven transitions first. */
			if (c->state == S_EXEC) {
				if (c->kill_at > 0 && now >= c->kill_at &&
				    !c->exited) {
					kill(-c->pid, SIGKILL);
					c->kill_at = 0;
				}
				write_stdin(c);
				exec_check_done(c);
			}
			while (c->state == S_GET && !c->host_dead &&
			    c->out.len < HIGH_WATER)
				get_more(c);
			flush_out(c);
			if (c->state == S_DONE && (c->out.len == 0 ||
			    c->host_dead)) {
				conn_free(c);
				continue;
			}
			if (c->state == S_EXEC && c->host_dead && c->exited &&
			    c->errpipe < 0 && c->out_fd < 0 && c->err_fd < 0) {
				conn_free(c);
				continue;
			}
			/* The host: read unless backpressured. */
			ev = 0;
			if (!c->host_dead && !c->host_eof &&
			    c->stdin_q.len < HIGH_WATER &&
			    c->to_sock.len < HIGH_WATER &&
			    c->state != S_DONE && c->state != S_GET)
				ev |= POLLIN;
			/* S_GET reads more whenever the host can take it. */
			if ((c->out.len > 0 || c->state == S_GET) &&
			    !c->host_dead)
				ev |= POLLOUT;
			if (ev != 0)
				ADD(c->fd, ev, c, R_HOST);
			if (c->state == S_EXEC) {
				room = c->host_dead || c->out.len < HIGH_WATER;
				if (c->errpipe >= 0)
					ADD(c->errpipe, POLLIN, c, R_ERRPIPE);
				if (c->stdin_q.len > 0 && c->in_fd >= 0 &&
				    c->in_fd != c->out_fd)
					ADD(c->in_fd, POLLOUT, c, R_STDIN);
				if (c->out_fd >= 0 && room && c->started)
					ADD(c->out_fd, POLLIN |
					    (c->tty && c->stdin_q.len > 0 ?
					    POLLOUT : 0), c, R_STDOUT);
				else if (c->tty && c->stdin_q.len > 0 &&
				    c->in_fd >= 0)
					ADD(c->in_fd, POLLOUT, c, R_STDIN);
				if (c->err_fd >= 0 && room && c->started)
					ADD(c->err_fd, POLLIN, c, R_STDERR);
				if (c->kill_at > 0 && (soonest < 0 ||
				    c->kill_at < soonest))
					soonest = c->kill_at;
				if (c->exited && (soonest < 0 ||
				    c->quiet_at < soonest))
					soonest = c->quiet_at;
			}
			if (c->state == S_CONNECTING)
				ADD(c->sock, POLLOUT, c, R_SOCK);
			if (c->state == S_SPLICE) {
				ev = 0;
				if (!c->sock_eof && c->out.len < HIGH_WATER)
					ev |= POLLIN;
				if (c->to_sock.len > 0)
					ev |= POLLOUT;
				ADD(c->sock, ev, c, R_SOCK);
			}
		}
#undef ADD
		if (exit_when_idle && conns == NULL && listenfd < 0)
			return;
		timeout = soonest < 0 ? -1 : soonest <= now ? 0 :
		    (int)(soonest - now);
		if (poll(pfd, (nfds_t)nfd, timeout) < 0) {
			if (errno == EINTR)
				continue;
			die(errno, "poll");
		}
		for (i = 0; i < nfd; i++) {
			if ((re = pfd[i].revents) == 0)
				continue;
			/* Conns are only freed at the top of the loop. */
			c = slot[i].c;
			switch (slot[i].role) {
			case R_SIG:
				handle_signals(sfd);
				break;
			case R_LISTEN:
				fd = accept4(listenfd, NULL, NULL,
				    SOCK_CLOEXEC | SOCK_NONBLOCK);
				if (fd >= 0)
					conn_add(fd);
				else if (errno == EMFILE || errno == ENFILE ||
				    errno == ENOBUFS || errno == ENOMEM)
					accept_pause = now_ms() + 100;
				break;
			case R_HOST:
				if (re & POLLOUT)
					flush_out(c);
				if (re & (POLLIN | POLLHUP | POLLERR))
					read_host(c);
				if (c->state == S_SPLICE)
					splice_step(c, 0);
				break;
			case R_ERRPIPE:
				read_errpipe(c);
				break;
			case R_STDIN:
				write_stdin(c);
				break;
			case R_STDOUT:
				if (re & POLLOUT)
					write_stdin(c);
				if (re & (POLLIN | POLLHUP | POLLERR) &&
				    c->out_fd >= 0)
					read_child(c, &c->out_fd, A_STDOUT);
				break;
			case R_STDERR:
				read_child(c, &c->err_fd, A_STDERR);
				break;
			case R_SOCK:
				if (c->state == S_CONNECTING)
					connect_done(c);
				else if (c->state == S_SPLICE)
					splice_step(c, re);
				break;
			}
		}
	}
}
