/*
 * Containers of the smx command (core/cli/container.c): each one a run
 * directory $RUNDIR/<name>/ holding
 *   state.json  name, id, image, command, ports, the pid of the smx
 *               process holding the machine, created/finished times,
 *               status ("created", "running", "exited") and exit code;
 *   vsock       the machine's hybrid vsock socket ("CONNECT 1024\n"
 *               reaches the agent), while it runs;
 *   log         the main process's output of a detached container.
 * RUNDIR is $SMX_RUNDIR, else /run/smx as root, else
 * $XDG_RUNTIME_DIR/smx, else $SMX_HOME/run (as core/smx.h describes).
 * Only the holder process writes state.json; other commands read it.
 */
#ifndef SMX_CLI_CONTAINER_H
#define SMX_CLI_CONTAINER_H

#include <stddef.h>
#include <stdint.h>

#define CONTAINER_NAME_MAX	63

struct container {
	char		*name;
	char		*id;		/* 64 hex digits */
	char		*image;		/* the reference as given */
	char		*command;	/* argv joined with spaces */
	char		*ports;		/* "127.0.0.1:8080->80/tcp, ..." or "" */
	long		 pid;		/* the holder; 0 before it runs */
	uint64_t	 pid_start;	/* its start time (/proc/PID/stat) */
	int64_t		 created;	/* Unix seconds */
	int64_t		 finished;	/* Unix seconds, 0 while running */
	char		*status;	/* "created", "running", "exited" */
	int		 exit_code;
	/* What smx exec starts with: the image's Env with run's -e over
	 * it (NULL-terminated), its working directory and user ("" for the
	 * agent's defaults). */
	char		**env;
	char		*workdir;
	char		*user;
};

/* The base run directory (owned by this module). */
const char *container_rundir(void);
/* $RUNDIR/<name>/<file> (file may be NULL: the directory); malloc'd. */
char	*container_path(const char *name, const char *file);

/* 0 when s is a usable name and hostname ([A-Za-z0-9][A-Za-z0-9.-]*, at most
 * CONTAINER_NAME_MAX), else -EINVAL. */
int	container_name_valid(const char *s);
/* A fresh name, "adjective_noun" style, not in use; malloc'd. */
char	*container_name_new(void);
/* 64 random hex digits into id[65]. */
void	container_id_new(char id[65]);

/*
 * Claim the name: create its run directory (-EEXIST when a container of
 * that name exists) and write c's state.  0 or -errno.
 */
int	container_create(struct container *c) __attribute__((warn_unused_result));
/* Write c's state.json atomically.  0 or -errno. */
int	container_save(const struct container *c);
/* Set the holder to this process (pid and start time). */
void	container_set_holder(struct container *c);
/* Read the state of container `name`.  0, -ENOENT, or -errno. */
int	container_load(const char *name, struct container *c);
/*
 * Find a container by name or by a unique prefix of its id.  Prints
 * "smx: <cmd>: ..." and returns -ENOENT when there is none (or the id
 * prefix is ambiguous).
 */
int	container_find(const char *cmd, const char *s, struct container *c);
/* Every container (sorted newest first); free with container_list_free. */
int	container_list(struct container **v, size_t *n);
void	container_list_free(struct container *v, size_t n);
void	container_free(struct container *c);

/* 1 when the holder process still runs. */
int	container_alive(const struct container *c);
/* "running", "exited", or "dead" (the holder ended without saying how
 * the container did), or "created". */
const char *container_state(const struct container *c);
/* Wait up to timeout_ms for the holder to end; 0 when it has, else
 * -ETIMEDOUT. */
int	container_wait(const struct container *c, uint64_t timeout_ms);
/* Remove the run directory.  0 or -errno. */
int	container_remove(const char *name);

/*
 * Connect to the container's agent through its vsock socket (the
 * "CONNECT 1024\n" handshake done).  The fd or -errno; prints why as
 * "smx: <cmd>: ..." on failure.
 */
int	container_agent_connect(const char *cmd, const struct container *c);

/* Signals (core/cli/kill.c): "TERM", "SIGTERM", "15" -> 15, else -1;
 * send one to the main process through the agent (0 or -errno, why
 * printed as "smx: <cmd>: ..."). */
int	container_signal_parse(const char *s);
int	container_signal(const char *cmd, const struct container *c, int sig);

/* docker's own exit statuses. */
#define CONTAINER_EXIT_SMX	125	/* smx itself failed */
#define CONTAINER_EXIT_NOEXEC	126	/* the command cannot be executed */
#define CONTAINER_EXIT_NOTFOUND	127	/* the command was not found */

/*
 * Detaching: the holder (the forked smx process that keeps the machine)
 * sends its parent one word, "CODE message\n" (0 once the container
 * runs).  container_holder_stdio() points the holder's stdout/stderr at
 * the container's log and its stdin at /dev/null (-errno when the log
 * cannot be opened: stdio is left alone).  container_holder_word()
 * reads the word in the parent and closes fd: 0 with *code and *msg
 * (pointing into buf), or -1 when the holder ended without one.
 */
int	container_holder_stdio(const char *name);
int	container_holder_word(int fd, char *buf, size_t len, int *code,
	    char **msg);

/* The exit status for a process that could not be started (-errno). */
int	container_start_status(int error);

/* Put terminal 0 in raw mode (for -t); restored by
 * container_tty_restore(), which also runs at exit. */
void	container_tty_raw(void);
void	container_tty_restore(void);

/* "3 seconds", "2 minutes", ... for an age in seconds. */
void	container_age(int64_t secs, char *buf, size_t len);

#endif /* SMX_CLI_CONTAINER_H */
