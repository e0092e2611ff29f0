/*
 * smx-init: the guest agent, PID 1 of every smx microVM.
 *
 * In the guest (no arguments, PID 1): mount the container root (see
 * setup.c), listen on vsock port AGENT_PORT, tell the host it is ready
 * (A_HELLO to host port AGENT_READY_PORT) and serve requests forever.
 *
 * On the host, for tests: smx-init --test-root DIR [--listen-fd FD]
 * [--serve-fd FD]... [--ready-fd FD] [--hostname NAME] runs the same
 * request handling with DIR as the container root, inside a mount and
 * UTS namespace of its own (root only), never touching the host: no
 * clock setting, power off = exit.  It serves the given connected
 * stream(s) and/or accepts on the listening socket, writes A_HELLO to
 * --ready-fd, and exits once nothing is left to serve (no --listen-fd).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "agent.h"

struct agent agent = { .rootfd = -1 };

/* Write A_HELLO to fd. */
static int
hello(int fd)
{
	struct agent_fields f = { 0 };
	struct utsname u;
	int rc;

	uname(&u);
	agent_fields_add(&f, "version", "%d", AGENT_VERSION);
	agent_fields_add(&f, "kernel", "%s", u.release);
	rc = agent_write_frame(fd, A_HELLO, f.buf, f.len);
	agent_fields_free(&f);
	return rc;
}

/* Guest: the listening vsock socket and the ready message. */
static int
guest_listen(void)
{
	struct sockaddr_vm sa = { .svm_family = AF_VSOCK,
	    .svm_cid = VMADDR_CID_ANY, .svm_port = AGENT_PORT };
	int fd, rc;

	fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		die(errno, "vsock socket");
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, 64) < 0)
		die(errno, "listen on vsock port %d", AGENT_PORT);

	sa.svm_cid = VMADDR_CID_HOST;
	sa.svm_port = AGENT_READY_PORT;
	rc = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (rc < 0 || connect(rc, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    hello(rc) < 0)
		say(errno, "ready message to host port %d",
		    AGENT_READY_PORT);
	if (rc >= 0)
		close(rc);
	return fd;
}

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr, "usage: smx-init (as PID 1 in the guest)\n"
	    "       smx-init --test-root DIR [--listen-fd FD] "
	    "[--serve-fd FD]... [--ready-fd FD] [--hostname NAME]\n");
	exit(2);
}

static int
fd_arg(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < 0 || v > INT_MAX ||
	    fcntl((int)v, F_GETFD) < 0) {
		fprintf(stderr, "smx-init: %s: not an open file descriptor\n",
		    s);
		exit(2);
	}
	fcntl((int)v, F_SETFD, FD_CLOEXEC);
	return (int)v;
}

int
main(int argc, char **argv)
{
	static char root[PATH_MAX];
	const char *troot = NULL, *hostname = "smx";
	int listenfd = -1, readyfd = -1, serve[16], nserve = 0, i;
	struct rlimit nofile;

	if (argc == 1 && getpid() == 1) {
		agent.pid1 = 1;
		/* The kernel starts init with 1024/4096 descriptors; the
		 * agent and the container get what docker gives. */
		nofile.rlim_cur = nofile.rlim_max = 1048576;
		if (setrlimit(RLIMIT_NOFILE, &nofile) < 0)
			say(errno, "raise the open-file limit");
		setup_guest();
		if ((i = setup_loopback()) < 0)
			say(-i, "bring lo up");
		listenfd = guest_listen();
		loop_run(listenfd, 0);
		die(0, "event loop ended");
	}

	for (i = 1; i < argc; i++) {
		if (i + 1 >= argc)
			usage();
		if (strcmp(argv[i], "--test-root") == 0)
			troot = argv[++i];
		else if (strcmp(argv[i], "--listen-fd") == 0)
			listenfd = fd_arg(argv[++i]);
		else if (strcmp(argv[i], "--serve-fd") == 0 && nserve < 16)
			serve[nserve++] = fd_arg(argv[++i]);
		else if (strcmp(argv[i], "--ready-fd") == 0)
			readyfd = fd_arg(argv[++i]);
		else if (strcmp(argv[i], "--hostname") == 0)
			hostname = argv[++i];
		else
			usage();
	}
	if (troot == NULL || (listenfd < 0 && nserve == 0))
		usage();

	agent.test = 1;
	if (realpath(troot, root) == NULL)
		die(errno, "test root %s", troot);
	agent.root = root;
	/* Mounts and the hostname stay in namespaces of our own. */
	if (unshare(CLONE_NEWNS | CLONE_NEWUTS) < 0)
		die(errno, "unshare mount and UTS namespaces (root needed)");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die(errno, "make / private");
	/* Opened in the new namespace: it must see the mounts made there. */
	if ((agent.rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		die(errno, "open %s", root);
	/* Orphans of exec'd processes come back to us, as to PID 1. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	setup_root(hostname);
	for (i = 0; i < nserve; i++)
		conn_add(serve[i]);
	if (listenfd >= 0) {
		int fl = fcntl(listenfd, F_GETFL);

		fcntl(listenfd, F_SETFL, fl | O_NONBLOCK);
	}
	if (readyfd >= 0) {
		if (hello(readyfd) < 0)
			say(errno, "ready message");
		close(readyfd);
	}
	loop_run(listenfd, 1);
	return 0;
}
