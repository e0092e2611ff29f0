/*
 * The host's client of smx-init, the guest agent (protocol in
 * core/agent_proto.h).  Blocking calls on plain sockets: they work from
 * any thread of any process that can reach a machine's hybrid vsock
 * socket (`smx exec`, `smx cp`, `smx kill` in processes of their own,
 * libsmx on a helper thread).  Never call them on a reactor thread
 * serving that machine's vsock: they would wait on themselves.
 *
 * Every request takes a fresh connection (one request per connection):
 * agent_connect(), then one of the calls below, then close the fd.
 * Writes use MSG_NOSIGNAL: a vanished peer is -EPIPE, never SIGPIPE.
 * Errors: 0 or -errno, and a one-line reason in err (may be NULL) for
 * calls that take one; an A_ERROR from the agent gives its err= number
 * (or -EIO) and its msg= text.
 */
#ifndef SMX_AGENT_H
#define SMX_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/agent_proto.h"

/* A connected socket to vsock_path (connect(2) only).  fd or -errno. */
int	agent_dial(const char *vsock_path);
/* Write "CONNECT <port>\n" on a dialed socket and read the "OK ...\n"
 * line.  -ECONNREFUSED when the guest has no listener there (the stream
 * is closed instead of answered). */
int	agent_handshake(int fd, uint32_t port);
/* Dial and handshake in one: an fd ready for one request, or -errno. */
int	agent_connect(const char *vsock_path, uint32_t port);

/* Flags of agent_exec. */
#define AGENT_EXEC_SIGNALS	0x1	/* forward SIGINT, SIGTERM, SIGHUP,
					 * SIGQUIT, SIGUSR1, SIGUSR2 (caught
					 * process-wide while it runs: one
					 * such exec at a time) */
#define AGENT_EXEC_WINCH	0x2	/* with tty: SIGWINCH -> A_RESIZE,
					 * the size read from winch_fd */

struct agent_exec {
	const char *const *argv;	/* NULL-terminated, at least argv[0] */
	const char *const *env;		/* NULL-terminated KEY=VALUE, or NULL */
	const char	*cwd;		/* NULL: the agent's default (/) */
	const char	*user;		/* NULL: root */
	bool		 tty;
	unsigned	 rows, cols;	/* 0: the agent's default */
	bool		 main;		/* the container's main process */
	uint64_t	 timeout_ms;	/* 0: none */
	/* stdin: copied from stdin_fd until EOF, or else stdin_data, or
	 * else empty.  stdout/stderr: written to the fds, or captured into
	 * the result when -1. */
	int		 stdin_fd;
	const void	*stdin_data;
	size_t		 stdin_len;
	int		 stdout_fd, stderr_fd;
	unsigned	 flags;		/* AGENT_EXEC_* */
	int		 winch_fd;	/* the terminal to read the size from */
	/* Called once the process runs (may be NULL). */
	void		(*started)(pid_t guest_pid, void *arg);
	void		*started_arg;
};

struct agent_exec_result {
	int	 status;	/* exit code, or 128 + signal */
	int	 signal;	/* killing signal, or 0 */
	pid_t	 pid;		/* in the guest */
	char	*out, *err;	/* captured, NUL-terminated, or NULL */
	size_t	 out_len, err_len;
};

/* Fill *x with defaults (no stdio, all fds -1). */
void	agent_exec_init(struct agent_exec *x);
/* Run a process and wait for its end, carrying stdio both ways.  0 when
 * it ran (status in *res), -errno when it could not start or the
 * connection broke. */
int	agent_exec(int fd, const struct agent_exec *, struct agent_exec_result *,
	    char *err, size_t errlen);
void	agent_exec_result_free(struct agent_exec_result *);

/* Write a file in the guest from memory or from src_fd (until EOF). */
int	agent_put_data(int fd, const char *path, unsigned mode,
	    const void *data, size_t len, char *err, size_t errlen);
int	agent_put_fd(int fd, const char *path, unsigned mode, int src_fd,
	    char *err, size_t errlen);
/* Read a file of the guest into a malloc'd buffer (NUL-terminated, at
 * most max bytes, else -EFBIG) or into dst_fd; *mode (may be NULL)
 * gets its permission bits. */
int	agent_get_data(int fd, const char *path, size_t max, void **data,
	    size_t *len, unsigned *mode, char *err, size_t errlen);
int	agent_get_fd(int fd, const char *path, int dst_fd, unsigned *mode,
	    char *err, size_t errlen);

/* Signal the main process (-ESRCH with the agent's reason when none). */
int	agent_kill(int fd, int sig, char *err, size_t errlen);
int	agent_ping(int fd, char *err, size_t errlen);
/* After a restore: wall clock, entropy (at most 256 bytes), hostname
 * (NULL: unchanged). */
int	agent_fixup(int fd, uint64_t time_ns, const void *entropy,
	    size_t entropy_len, const char *hostname, char *err,
	    size_t errlen);
/* Ask the guest to power off; 0 once the agent accepted. */
int	agent_poweroff(int fd, char *err, size_t errlen);
/* Connect the stream to guest TCP port on 127.0.0.1: after 0 the fd
 * carries raw bytes both ways. */
int	agent_open_port(int fd, uint16_t port, char *err, size_t errlen);

/*
 * Frames for callers that drive a connection themselves (the publish
 * bridge): a frame with a field list payload, written with MSG_NOSIGNAL.
 */
int	agent_send(int fd, uint32_t type, const void *payload, size_t len);

#endif /* SMX_AGENT_H */
