/*
 * smx-init internals: the guest agent (PID 1 of every smx microVM).
 * Private to tools/smx-init; libc only (the binary is static).
 */
#ifndef SMX_INIT_AGENT_H
#define SMX_INIT_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/agent_wire.h"

/* Where the guest assembles the container's root. */
#define GUEST_LOWER	"/run/smx/lower"
#define GUEST_RW	"/run/smx/rw"
#define GUEST_ROOT	"/run/smx/root"
#define GUEST_VOLS	"/run/smx/vol"

#define DEFAULT_PATH \
	"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Process-wide agent state (one per process, set up by main). */
struct agent {
	const char	*root;		/* the container root, absolute */
	int		 rootfd;	/* O_PATH directory of root */
	int		 test;		/* --test-root: never touch the host */
	int		 pid1;		/* running as the guest's init */
	pid_t		 main_pid;	/* the main=1 process, or 0 */
};

extern struct agent agent;

/* setup.c */

/* Print "smx-init: MSG" (plus strerror when err > 0) to stderr. */
void	say(int err, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/*
 * A fatal setup error: in the guest print one line and power off (the
 * host sees the VM end); in test mode exit(1).  Never returns.
 */
void	die(int err, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3), noreturn));
/*
 * Guest boot: devtmpfs/proc/sys, the overlay root, volumes, then
 * setup_root with the hostname of the command line.  Sets agent.root.
 */
void	setup_guest(void);
/*
 * Mounts and files inside the container root (both modes): /proc /sys
 * /dev /dev/pts /dev/shm /tmp, /etc/hostname, /etc/hosts, resolv.conf.
 */
void	setup_root(const char *hostname);
/* sethostname plus /etc/hostname and /etc/hosts; 0 or -errno. */
int	set_hostname(const char *name);
/* Bring lo up; 0 or -errno. */
int	setup_loopback(void);
/* sync, end every process (guest only: kill(-1)), power off. */
void	power_off(void) __attribute__((noreturn));
/* mkdir -p; 0 or -errno. */
int	mkdir_p(const char *path, mode_t mode);

/* spawn.c */

/* What a child needs to become the requested process. */
struct spawn_req {
	char		**argv;		/* NULL-terminated, argv[0] first */
	char		**envp;		/* NULL-terminated */
	const char	*cwd;		/* NULL: the user's home, else "/" */
	const char	*user;		/* NULL: 0:0 */
	int		 mkcwd;		/* create cwd when missing */
	int		 tty;		/* slave fd given */
};

/*
 * In a freshly forked child: chroot into the container root, apply the
 * user, chdir, set up stdio from fds[0..2] and exec.  On failure write
 * "errno\0message" to errfd (close-on-exec) and _exit(127).  Never
 * returns.
 */
void	spawn_child(const struct spawn_req *req, int fds[3], int errfd)
	    __attribute__((noreturn));

/* conn.c */

/* Adopt a connected stream (the first frame is a request). */
void	conn_add(int fd);
/* Run the event loop forever (guest) or until no work is left (test). */
void	loop_run(int listenfd, int exit_when_idle);

#endif /* SMX_INIT_AGENT_H */
