/*
 * The host's client of the guest agent: blocking request/reply calls
 * and an exec that pumps stdio with poll(2).
 */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/agent.h"
#include "core/agent_wire.h"
#include "core/base/base.h"

#define CHUNK		(64 * 1024)	/* stdin / file data per frame */
#define OUTQ_MAX	(256 * 1024)	/* stop reading stdin above this */
#define LINE_MAX_LEN	64

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list	ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int
agent_dial(const char *path)
{
	struct sockaddr_un	sa;
	int			fd, error;

	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == -1) {
		error = -errno;
		close(fd);
		return error;
	}
	return fd;
}

/* Send all of buf; EINTR and short writes are retried. */
static int
send_all(int fd, const void *buf, size_t len)
{
	const uint8_t	*p = buf;
	ssize_t		 n;

	while (len > 0) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -errno;
		p += n;
		len -= n;
	}
	return 0;
}

int
agent_handshake(int fd, uint32_t port)
{
	char	line[LINE_MAX_LEN];
	size_t	n = 0;
	ssize_t	r;
	int	error;

	snprintf(line, sizeof line, "CONNECT %u\n", port);
	if ((error = send_all(fd, line, strlen(line))) != 0)
		return error;
	/* Byte by byte: what follows the line is the agent's. */
	for (;;) {
		r = read(fd, line + n, 1);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			return errno == ECONNRESET ? -ECONNREFUSED : -errno;
		if (r == 0)
			return -ECONNREFUSED;
		if (line[n] == '\n')
			break;
		if (++n == sizeof line - 1)
			return -EPROTO;
	}
	line[n] = '\0';
	return strncmp(line, "OK", 2) == 0 ? 0 : -EPROTO;
}

int
agent_connect(const char *path, uint32_t port)
{
	int	fd, error;

	if ((fd = agent_dial(path)) < 0)
		return fd;
	if ((error = agent_handshake(fd, port)) != 0) {
		close(fd);
		return error;
	}
	return fd;
}

int
agent_send(int fd, uint32_t type, const void *payload, size_t len)
{
	uint8_t	hdr[AGENT_HDR_LEN];
	int	error;

	if (len > AGENT_MAX_FRAME)
		return -EMSGSIZE;
	for (int i = 0; i < 4; i++) {
		hdr[i] = (uint8_t)(type >> (8 * i));
		hdr[4 + i] = (uint8_t)(len >> (8 * i));
	}
	if ((error = send_all(fd, hdr, sizeof hdr)) != 0)
		return error;
	return len > 0 ? send_all(fd, payload, len) : 0;
}

/* An A_ERROR payload as -errno plus its message. */
static int
agent_error(const void *p, size_t len, const char *what, char *err,
    size_t errlen)
{
	const char	*msg = agent_field(p, len, "msg");
	const char	*no = agent_field(p, len, "err");
	int		 e = no != NULL ? atoi(no) : 0;

	set_err(err, errlen, "%s: %s", what, msg != NULL ? msg :
	    (e > 0 ? strerror(e) : "the agent refused"));
	return e > 0 ? -e : -EIO;
}

/* Read one reply; A_OK gives 0 (payload kept when p is not NULL). */
static int
read_reply(int fd, const char *what, void **p, size_t *plen, char *err,
    size_t errlen)
{
	uint32_t	 type;
	void		*payload;
	size_t		 len;
	int		 error;

	if ((error = agent_read_frame(fd, &type, &payload, &len)) != 0) {
		set_err(err, errlen, "%s: %s", what, error == -EPIPE ?
		    "the agent closed the connection" : strerror(-error));
		return error;
	}
	if (type == A_ERROR) {
		error = agent_error(payload, len, what, err, errlen);
		free(payload);
		return error;
	}
	if (type != A_OK) {
		free(payload);
		set_err(err, errlen, "%s: unexpected frame %u", what, type);
		return -EPROTO;
	}
	if (p != NULL) {
		*p = payload;
		*plen = len;
	} else
		free(payload);
	return 0;
}

/* Send a request, expect A_OK. */
static int
request(int fd, uint32_t type, struct agent_fields *f, const char *what,
    char *err, size_t errlen)
{
	int	error;

	error = agent_send(fd, type, f->buf, f->len);
	agent_fields_free(f);
	if (error != 0) {
		set_err(err, errlen, "%s: %s", what, strerror(-error));
		return error;
	}
	return read_reply(fd, what, NULL, NULL, err, errlen);
}

int
agent_kill(int fd, int sig, char *err, size_t errlen)
{
	struct agent_fields	f = { 0 };

	agent_fields_add(&f, "signal", "%d", sig);
	return request(fd, A_KILL, &f, "kill", err, errlen);
}

int
agent_ping(int fd, char *err, size_t errlen)
{
	struct agent_fields	f = { 0 };

	return request(fd, A_PING, &f, "ping", err, errlen);
}

int
agent_poweroff(int fd, char *err, size_t errlen)
{
	struct agent_fields	f = { 0 };

	return request(fd, A_POWEROFF, &f, "poweroff", err, errlen);
}

int
agent_open_port(int fd, uint16_t port, char *err, size_t errlen)
{
	struct agent_fields	f = { 0 };
	char			what[32];

	snprintf(what, sizeof what, "guest port %u", port);
	agent_fields_add(&f, "port", "%u", port);
	return request(fd, A_CONNECT, &f, what, err, errlen);
}

int
agent_fixup(int fd, uint64_t time_ns, const void *entropy, size_t elen,
    const char *hostname, char *err, size_t errlen)
{
	struct agent_fields	 f = { 0 };
	const uint8_t		*e = entropy;
	char			 hex[2 * 256 + 1];

	if (elen > 256)
		return -EINVAL;
	agent_fields_add(&f, "time_ns", "%llu", (unsigned long long)time_ns);
	if (elen > 0) {
		for (size_t i = 0; i < elen; i++)
			snprintf(hex + 2 * i, 3, "%02x", e[i]);
		agent_fields_add(&f, "entropy", "%s", hex);
	}
	if (hostname != NULL)
		agent_fields_add(&f, "hostname", "%s", hostname);
	return request(fd, A_FIXUP, &f, "fixup", err, errlen);
}

/*
 * Files.
 */

/* After a failed send during A_PUT: the agent may have refused and said
 * why before closing; prefer its reason. */
static int
put_failed(int fd, int error, const char *path, char *err, size_t errlen)
{
	int	e;

	e = read_reply(fd, path, NULL, NULL, err, errlen);
	if (e != 0 && e != -EPIPE && e != -EPROTO)
		return e;
	set_err(err, errlen, "%s: %s", path, strerror(-error));
	return error;
}

static int
put_begin(int fd, const char *path, unsigned mode, char *err, size_t errlen)
{
	struct agent_fields	f = { 0 };
	int			error;

	agent_fields_add(&f, "path", "%s", path);
	agent_fields_add(&f, "mode", "%o", mode & 07777);
	error = agent_send(fd, A_PUT, f.buf, f.len);
	agent_fields_free(&f);
	if (error != 0)
		set_err(err, errlen, "%s: %s", path, strerror(-error));
	return error;
}

int
agent_put_data(int fd, const char *path, unsigned mode, const void *data,
    size_t len, char *err, size_t errlen)
{
	const uint8_t	*p = data;
	size_t		 n;
	int		 error;

	if ((error = put_begin(fd, path, mode, err, errlen)) != 0)
		return error;
	while (len > 0) {
		n = MIN(len, CHUNK);
		if ((error = agent_send(fd, A_DATA, p, n)) != 0)
			return put_failed(fd, error, path, err, errlen);
		p += n;
		len -= n;
	}
	if ((error = agent_send(fd, A_DATA_EOF, NULL, 0)) != 0)
		return put_failed(fd, error, path, err, errlen);
	return read_reply(fd, path, NULL, NULL, err, errlen);
}

int
agent_put_fd(int fd, const char *path, unsigned mode, int src, char *err,
    size_t errlen)
{
	uint8_t	*buf;
	ssize_t	 n;
	int	 error;

	if ((error = put_begin(fd, path, mode, err, errlen)) != 0)
		return error;
	buf = xmalloc(CHUNK);
	for (;;) {
		n = read(src, buf, CHUNK);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			error = -errno;
			set_err(err, errlen, "reading the source of %s: %s",
			    path, strerror(errno));
			free(buf);
			return error;
		}
		if ((error = agent_send(fd, n == 0 ? A_DATA_EOF : A_DATA, buf,
		    n)) != 0) {
			free(buf);
			return put_failed(fd, error, path, err, errlen);
		}
		if (n == 0)
			break;
	}
	free(buf);
	return read_reply(fd, path, NULL, NULL, err, errlen);
}

/* A_GET up to the A_OK; *mode from its fields. */
static int
get_begin(int fd, const char *path, unsigned *mode, char *err,
    size_t errlen)
{
	struct agent_fields	 f = { 0 };
	void			*p;
	size_t			 len;
	const char		*m;
	int			 error;

	agent_fields_add(&f, "path", "%s", path);
	error = agent_send(fd, A_GET, f.buf, f.len);
	agent_fields_free(&f);
	if (error != 0) {
		set_err(err, errlen, "%s: %s", path, strerror(-error));
		return error;
	}
	if ((error = read_reply(fd, path, &p, &len, err, errlen)) != 0)
		return error;
	m = agent_field(p, len, "mode");
	if (mode != NULL)
		*mode = m != NULL ? (unsigned)strtoul(m, NULL, 8) : 0644;
	free(p);
	return 0;
}

/* The next A_DATA of a get: 1 with data, 0 at A_DATA_EOF. */
static int
get_next(int fd, const char *path, void **p, size_t *len, char *err,
    size_t errlen)
{
	uint32_t	type;
	int		error;

	if ((error = agent_read_frame(fd, &type, p, len)) != 0) {
		set_err(err, errlen, "%s: %s", path, error == -EPIPE ?
		    "the agent closed the connection" : strerror(-error));
		return error;
	}
	if (type == A_DATA)
		return 1;
	if (type == A_DATA_EOF) {
		free(*p);
		return 0;
	}
	if (type == A_ERROR) {
		error = agent_error(*p, *len, path, err, errlen);
		free(*p);
		return error;
	}
	free(*p);
	set_err(err, errlen, "%s: unexpected frame %u", path, type);
	return -EPROTO;
}

int
agent_get_data(int fd, const char *path, size_t max, void **data,
    size_t *len, unsigned *mode, char *err, size_t errlen)
{
	uint8_t	*buf = NULL;
	size_t	 n = 0, plen;
	void	*p;
	int	 rc;

	if ((rc = get_begin(fd, path, mode, err, errlen)) != 0)
		return rc;
	while ((rc = get_next(fd, path, &p, &plen, err, errlen)) == 1) {
		if (plen > max - n) {
			free(p);
			free(buf);
			set_err(err, errlen, "%s: larger than %zu bytes", path,
			    max);
			return -EFBIG;
		}
		buf = xreallocarray(buf, 1, n + plen + 1);
		memcpy(buf + n, p, plen);
		n += plen;
		free(p);
	}
	if (rc != 0) {
		free(buf);
		return rc;
	}
	if (buf == NULL)
		buf = xmalloc(1);
	buf[n] = '\0';
	*data = buf;
	*len = n;
	return 0;
}

int
agent_get_fd(int fd, const char *path, int dst, unsigned *mode, char *err,
    size_t errlen)
{
	void	*p;
	size_t	 plen;
	int	 rc, error;

	if ((rc = get_begin(fd, path, mode, err, errlen)) != 0)
		return rc;
	while ((rc = get_next(fd, path, &p, &plen, err, errlen)) == 1) {
		error = write_all(dst, p, plen);
		free(p);
		if (error != 0) {
			set_err(err, errlen, "writing %s: %s", path,
			    strerror(-error));
			return error;
		}
	}
	return rc;
}

/*
 * exec.
 */

void
agent_exec_init(struct agent_exec *x)
{
	memset(x, 0, sizeof *x);
	x->stdin_fd = x->stdout_fd = x->stderr_fd = x->winch_fd = -1;
}

void
agent_exec_result_free(struct agent_exec_result *r)
{
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
	r->out_len = r->err_len = 0;
}

/* A growing byte buffer. */
struct buf {
	uint8_t	*p;
	size_t	 len, cap, off;	/* off: already consumed (queues) */
};

static void
buf_add(struct buf *b, const void *data, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		b->cap = MAX(b->cap * 2, b->len + len + 1);
		b->p = xreallocarray(b->p, 1, b->cap);
	}
	memcpy(b->p + b->len, data, len);
	b->len += len;
	b->p[b->len] = '\0';
}

/* Queue a frame for sending. */
static void
queue_frame(struct buf *q, uint32_t type, const void *payload, size_t len)
{
	uint8_t	hdr[AGENT_HDR_LEN];

	for (int i = 0; i < 4; i++) {
		hdr[i] = (uint8_t)(type >> (8 * i));
		hdr[4 + i] = (uint8_t)(len >> (8 * i));
	}
	buf_add(q, hdr, sizeof hdr);
	if (len > 0)
		buf_add(q, payload, len);
}

static void
queue_fields(struct buf *q, uint32_t type, struct agent_fields *f)
{
	queue_frame(q, type, f->buf, f->len);
	agent_fields_free(f);
}

/* Signals caught while an exec forwards them: their numbers go through
 * a pipe into the poll loop. */
static int	sig_pipe[2] = { -1, -1 };

static void
forward_sig_cb(int sig)
{
	int		saved = errno;
	unsigned char	c = (unsigned char)sig;

	if (write(sig_pipe[1], &c, 1) == -1) {
		/* full: the signal is dropped, the process goes on */
	}
	errno = saved;
}

static const int forwarded[] = {
	SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH,
};

static void
signals_catch(unsigned flags, struct sigaction *old)
{
	struct sigaction	sa;
	size_t			i;

	if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) == -1) {
		sig_pipe[0] = sig_pipe[1] = -1;
		return;
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = forward_sig_cb;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < ARRAY_SIZE(forwarded); i++) {
		if (forwarded[i] == SIGWINCH ? !(flags & AGENT_EXEC_WINCH) :
		    !(flags & AGENT_EXEC_SIGNALS))
			continue;
		sigaction(forwarded[i], &sa, &old[i]);
	}
}

static void
signals_release(unsigned flags, const struct sigaction *old)
{
	size_t	i;

	if (sig_pipe[0] == -1)
		return;
	for (i = 0; i < ARRAY_SIZE(forwarded); i++) {
		if (forwarded[i] == SIGWINCH ? !(flags & AGENT_EXEC_WINCH) :
		    !(flags & AGENT_EXEC_SIGNALS))
			continue;
		sigaction(forwarded[i], &old[i], NULL);
	}
	close(sig_pipe[0]);
	close(sig_pipe[1]);
	sig_pipe[0] = sig_pipe[1] = -1;
}

static void
queue_resize(struct buf *q, int tty_fd)
{
	struct winsize		ws;
	struct agent_fields	f = { 0 };

	if (tty_fd < 0 || ioctl(tty_fd, TIOCGWINSZ, &ws) == -1 ||
	    ws.ws_row == 0 || ws.ws_col == 0)
		return;
	agent_fields_add(&f, "rows", "%u", ws.ws_row);
	agent_fields_add(&f, "cols", "%u", ws.ws_col);
	queue_fields(q, A_RESIZE, &f);
}

struct exec_state {
	const struct agent_exec		*x;
	struct agent_exec_result	*res;
	struct buf			 in;	/* bytes from the agent */
	struct buf			 outq;	/* frames to the agent */
	struct buf			 out, err;	/* captures */
	bool				 started, ended;
	bool				 stdin_open;	/* reading stdin_fd */
	size_t				 stdin_off;	/* into stdin_data */
	bool				 eof_sent;
};

/* One frame from the agent.  0, 1 when the exec ended, or -errno. */
static int
exec_frame(struct exec_state *s, uint32_t type, const uint8_t *p,
    size_t len, char *err, size_t errlen)
{
	const struct agent_exec	*x = s->x;
	const char		*v;
	int			 fd, error;

	switch (type) {
	case A_STARTED:
		if (s->started)
			break;
		s->started = true;
		if ((v = agent_field(p, len, "pid")) != NULL)
			s->res->pid = (pid_t)atoi(v);
		if (x->started != NULL)
			x->started(s->res->pid, x->started_arg);
		return 0;
	case A_STDOUT:
	case A_STDERR:
		if (!s->started)
			break;
		fd = type == A_STDOUT ? x->stdout_fd : x->stderr_fd;
		if (fd < 0) {
			buf_add(type == A_STDOUT ? &s->out : &s->err, p, len);
			return 0;
		}
		/* A reader that went away (EPIPE) does not stop the
		 * process: its output is dropped, like a closed pipe's. */
		if ((error = write_all(fd, p, len)) != 0 && error != -EPIPE) {
			set_err(err, errlen, "writing the process's output: %s",
			    strerror(-error));
			return error;
		}
		return 0;
	case A_EXIT:
		if ((v = agent_field(p, len, "signal")) != NULL) {
			s->res->signal = atoi(v);
			s->res->status = 128 + s->res->signal;
		} else if ((v = agent_field(p, len, "exit")) != NULL)
			s->res->status = atoi(v);
		else
			break;
		s->ended = true;
		return 1;
	case A_ERROR:
		return agent_error(p, len, x->argv[0], err, errlen);
	}
	set_err(err, errlen, "exec: unexpected frame %u from the agent", type);
	return -EPROTO;
}

/* Parse whole frames out of s->in. */
static int
exec_parse(struct exec_state *s, char *err, size_t errlen)
{
	const uint8_t	*h;
	uint32_t	 type, len;
	int		 rc;

	while (s->in.len - s->in.off >= AGENT_HDR_LEN) {
		h = s->in.p + s->in.off;
		type = h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24;
		len = h[4] | h[5] << 8 | h[6] << 16 | (uint32_t)h[7] << 24;
		if (len > AGENT_MAX_FRAME) {
			set_err(err, errlen, "exec: oversize frame from the "
			    "agent");
			return -EPROTO;
		}
		if (s->in.len - s->in.off - AGENT_HDR_LEN < len)
			break;
		/* Field lookups need a NUL after the payload: copy. */
		{
			uint8_t	*p = xmalloc(len + 1);

			memcpy(p, h + AGENT_HDR_LEN, len);
			p[len] = '\0';
			s->in.off += AGENT_HDR_LEN + len;
			rc = exec_frame(s, type, p, len, err, errlen);
			free(p);
		}
		if (rc != 0)
			return rc;
	}
	/* Compact. */
	memmove(s->in.p, s->in.p + s->in.off, s->in.len - s->in.off);
	s->in.len -= s->in.off;
	s->in.off = 0;
	return 0;
}

/* Feed stdin_data / the end of stdin into the queue as room allows. */
static void
exec_feed_stdin(struct exec_state *s)
{
	const struct agent_exec	*x = s->x;
	size_t			 n;

	if (!s->started || s->eof_sent || s->stdin_open)
		return;
	while (x->stdin_data != NULL && s->stdin_off < x->stdin_len &&
	    s->outq.len - s->outq.off < OUTQ_MAX) {
		n = MIN(x->stdin_len - s->stdin_off, CHUNK);
		queue_frame(&s->outq, A_STDIN,
		    (const uint8_t *)x->stdin_data + s->stdin_off, n);
		s->stdin_off += n;
	}
	if (x->stdin_data == NULL || s->stdin_off == x->stdin_len) {
		queue_frame(&s->outq, A_STDIN_EOF, NULL, 0);
		s->eof_sent = true;
	}
}

static void
exec_request(struct exec_state *s)
{
	const struct agent_exec	*x = s->x;
	struct agent_fields	 f = { 0 };
	size_t			 i;

	for (i = 0; x->argv[i] != NULL; i++)
		agent_fields_add(&f, "arg", "%s", x->argv[i]);
	for (i = 0; x->env != NULL && x->env[i] != NULL; i++)
		agent_fields_add(&f, "env", "%s", x->env[i]);
	if (x->cwd != NULL)
		agent_fields_add(&f, "cwd", "%s", x->cwd);
	if (x->user != NULL)
		agent_fields_add(&f, "user", "%s", x->user);
	if (x->tty) {
		agent_fields_add(&f, "tty", "1");
		if (x->rows != 0 && x->cols != 0) {
			agent_fields_add(&f, "rows", "%u", x->rows);
			agent_fields_add(&f, "cols", "%u", x->cols);
		}
	}
	if (x->main)
		agent_fields_add(&f, "main", "1");
	if (x->timeout_ms != 0)
		agent_fields_add(&f, "timeout_ms", "%llu",
		    (unsigned long long)x->timeout_ms);
	queue_fields(&s->outq, A_EXEC, &f);
}

static int
exec_loop(int fd, struct exec_state *s, char *err, size_t errlen)
{
	const struct agent_exec	*x = s->x;
	struct pollfd		 pfd[3];
	struct agent_fields	 f;
	unsigned char		 sigs[16];
	uint8_t			*chunk = xmalloc(CHUNK);
	ssize_t			 n;
	int			 rc = 0, np, i_stdin, i_sig;

	while (!s->ended) {
		exec_feed_stdin(s);
		np = 0;
		pfd[np].fd = fd;
		pfd[np].events = POLLIN;
		if (s->outq.len > s->outq.off)
			pfd[np].events |= POLLOUT;
		np++;
		i_stdin = i_sig = -1;
		if (s->started && s->stdin_open &&
		    s->outq.len - s->outq.off < OUTQ_MAX) {
			i_stdin = np;
			pfd[np].fd = x->stdin_fd;
			pfd[np++].events = POLLIN;
		}
		/* Signals wait in the pipe until there is a process. */
		if ((x->flags & (AGENT_EXEC_SIGNALS | AGENT_EXEC_WINCH)) &&
		    s->started && sig_pipe[0] != -1) {
			i_sig = np;
			pfd[np].fd = sig_pipe[0];
			pfd[np++].events = POLLIN;
		}
		if (poll(pfd, np, -1) == -1) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			set_err(err, errlen, "exec: poll: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents & POLLOUT) {
			n = send(fd, s->outq.p + s->outq.off,
			    s->outq.len - s->outq.off,
			    MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0) {
				s->outq.off += n;
				if (s->outq.off == s->outq.len)
					s->outq.off = s->outq.len = 0;
			} else if (n == -1 && errno != EAGAIN &&
			    errno != EINTR) {
				/* The agent may have said why: keep reading
				 * but send nothing more. */
				s->outq.off = s->outq.len = 0;
				s->stdin_open = false;
				s->eof_sent = true;
			}
		}
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			n = recv(fd, chunk, CHUNK, MSG_DONTWAIT);
			if (n == -1 && (errno == EAGAIN || errno == EINTR))
				continue;
			/* A reset is a close with our bytes unread. */
			if (n <= 0) {
				bool closed = n == 0 || errno == ECONNRESET;

				rc = closed ? -EPIPE : -errno;
				set_err(err, errlen, "exec: the connection to "
				    "the agent %s", closed ? "closed" :
				    strerror(errno));
				break;
			}
			buf_add(&s->in, chunk, n);
			if ((rc = exec_parse(s, err, errlen)) != 0)
				break;
		}
		if (i_stdin >= 0 && pfd[i_stdin].revents) {
			n = read(x->stdin_fd, chunk, CHUNK);
			if (n > 0)
				queue_frame(&s->outq, A_STDIN, chunk, n);
			else if (n == 0 || (errno != EINTR &&
			    errno != EAGAIN)) {
				queue_frame(&s->outq, A_STDIN_EOF, NULL, 0);
				s->stdin_open = false;
				s->eof_sent = true;
			}
		}
		if (i_sig >= 0 && (pfd[i_sig].revents & POLLIN) &&
		    (n = read(sig_pipe[0], sigs, sizeof sigs)) > 0) {
			for (ssize_t k = 0; k < n; k++) {
				if (sigs[k] == SIGWINCH) {
					queue_resize(&s->outq, x->winch_fd);
					continue;
				}
				memset(&f, 0, sizeof f);
				agent_fields_add(&f, "signal", "%d", sigs[k]);
				queue_fields(&s->outq, A_SIGNAL, &f);
			}
		}
	}
	free(chunk);
	return rc < 0 ? rc : 0;
}

int
agent_exec(int fd, const struct agent_exec *x, struct agent_exec_result *res,
    char *err, size_t errlen)
{
	struct exec_state	s;
	struct sigaction	old[ARRAY_SIZE(forwarded)];
	int			rc;

	memset(res, 0, sizeof *res);
	if (x->argv == NULL || x->argv[0] == NULL) {
		set_err(err, errlen, "exec: no command given");
		return -EINVAL;
	}
	memset(&s, 0, sizeof s);
	s.x = x;
	s.res = res;
	s.stdin_open = x->stdin_fd >= 0;
	exec_request(&s);
	if (x->flags & (AGENT_EXEC_SIGNALS | AGENT_EXEC_WINCH))
		signals_catch(x->flags, old);
	rc = exec_loop(fd, &s, err, errlen);
	if (x->flags & (AGENT_EXEC_SIGNALS | AGENT_EXEC_WINCH))
		signals_release(x->flags, old);
	free(s.in.p);
	free(s.outq.p);
	if (rc != 0) {
		free(s.out.p);
		free(s.err.p);
		return rc;
	}
	if (x->stdout_fd < 0) {
		res->out = s.out.p != NULL ? (char *)s.out.p : xstrdup("");
		res->out_len = s.out.len;
	} else
		free(s.out.p);
	if (x->stderr_fd < 0) {
		res->err = s.err.p != NULL ? (char *)s.err.p : xstrdup("");
		res->err_len = s.err.len;
	} else
		free(s.err.p);
	return 0;
}
