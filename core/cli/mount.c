/*
 * smx mount: serve a host directory, or a stored image's unpacked root
 * tree (read-only), through fusefs on a host mount point (/dev/fuse), in
 * the foreground until a signal or an outside unmount.
 */
#include <sys/resource.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "fusefs/fusefs.h"
#include "image/image.h"
#include "reactor/reactor.h"

/* Exit status when the host cannot mount FUSE (no /dev/fuse, not root):
 * distinct so scripts can tell "cannot here" from "failed". */
#define MOUNT_EXIT_UNSUPPORTED	3

void
cmd_mount_usage(FILE *f)
{
	fprintf(f,
	    "usage: smx mount [--ro] [--threads N] [--watch] [--max-fds N]\n"
	    "                 [--daemon] DIR|IMAGE MOUNTPOINT\n\n"
	    "Mount host directory DIR on MOUNTPOINT through smx's FUSE server\n"
	    "(the one guests reach over virtio-fs), for tests and inspection.\n"
	    "An argument that is not a directory names a stored image: its\n"
	    "unpacked root tree is mounted, always read-only.  Runs until\n"
	    "SIGINT or SIGTERM (then unmounts) or until MOUNTPOINT is\n"
	    "unmounted.  Needs root and /dev/fuse.\n\n"
	    "  --ro           refuse every change (EROFS)\n"
	    "  --threads N    worker threads reading /dev/fuse, 1 to 64\n"
	    "                 (default 4)\n"
	    "  --watch        invalidate the kernel's caches on host edits\n"
	    "                 (inotify; else they show within 1 s)\n"
	    "  --max-fds N    descriptors held for looked-up files before the\n"
	    "                 least recently used are closed (re-opened by\n"
	    "                 file handle when needed); default: 3/4 of the\n"
	    "                 open-file limit\n"
	    "  -d, --daemon   go to the background once mounted\n\n"
	    "exit status: 0 unmounted cleanly, 1 failure, 2 bad command line,\n"
	    "3 this host cannot mount FUSE (no /dev/fuse or not root).\n");
}

/* Reactor thread: a signal or the end of the mount stops the loop. */
static void
stop_cb(void *arg)
{
	reactor_stop(arg);
}

static void
signal_cb(int signo, void *arg)
{
	log_info("%s: unmounting", strsignal(signo));
	reactor_stop(arg);
}

/* Worker thread: the kernel ended the mount; hand over to the reactor. */
static void
gone_cb(void *arg)
{
	if (reactor_post(arg, stop_cb, arg) != 0)
		fatalx("cannot stop the reactor");
}

/*
 * --daemon: fork before any thread exists; the parent waits for the
 * child's one-byte verdict (its exit status) so it fails as the child
 * would.  Returns the write end in the child, exits in the parent.
 */
static int
daemonize(void)
{
	int	p[2];
	char	c = CLI_EXIT_ERROR;
	pid_t	pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		fatal("pipe");
	if ((pid = fork()) < 0)
		fatal("fork");
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &c, 1) != 1)
			c = CLI_EXIT_ERROR;
		exit(c);
	}
	close(p[0]);
	if (setsid() < 0)
		log_warn("setsid");
	return p[1];
}

/* Child of --daemon: report status to the waiting parent, drop stdio. */
static void
daemon_ready(int *fdp, char status)
{
	int	null, fd = *fdp;

	if (fd < 0)
		return;
	*fdp = -1;
	if (write(fd, &status, 1) != 1)
		log_warn("daemon: report");
	close(fd);
	if (status != 0 || (null = open("/dev/null", O_RDWR)) < 0)
		return;
	dup2(null, 0);
	dup2(null, 1);
	dup2(null, 2);
	if (null > 2)
		close(null);
}

/*
 * The unpacked root tree of stored image ref (unpacking it first when
 * needed) into path.  CLI_EXIT_OK, or the exit status after a message.
 */
static int
image_tree(const char *ref, char *path, size_t len)
{
	struct image_store	*s;
	struct image_ref	 r;
	char			 digest[72], err[512];
	int			 rc;

	if ((s = cli_store_open("mount")) == NULL)
		return CLI_EXIT_ERROR;
	if ((rc = cli_image_resolve(s, "mount", ref, &r, digest)) ==
	    CLI_EXIT_OK && image_rootfs_get(s, digest, path, len, NULL, err,
	    sizeof(err)) != 0) {
		fprintf(stderr, "smx mount: %s: %s\n", ref, err);
		rc = CLI_EXIT_ERROR;
	}
	image_store_close(s);
	return rc;
}

int
cmd_mount(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "ro", no_argument, NULL, 'r' },
		{ "threads", required_argument, NULL, 't' },
		{ "daemon", no_argument, NULL, 'd' },
		{ "watch", no_argument, NULL, 'w' },
		{ "max-fds", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct fusefs_opts	 opts;
	struct fusefs_mount	*m;
	struct reactor		*r;
	struct reactor_signal	*sigs[3];
	struct stat		 st;
	unsigned long long	 nthreads = 4, maxfds = 0;
	const char		*dir, *mp;
	char			 err[512], *dirabs = NULL, *mpabs = NULL;
	char			 tree[PATH_MAX];
	bool			 readonly = false, daemon = false;
	int			 ch, i, readyfd = -1, rc;

	fusefs_opts_init(&opts);
	optind = 1;
	while ((ch = getopt_long(argc, argv, "dh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'r':
			readonly = true;
			break;
		case 't':
			if (cli_number(optarg, 1, 64, &nthreads) < 0) {
				fprintf(stderr, "smx mount: --threads takes "
				    "1 to 64, not '%s'\n", optarg);
				return CLI_EXIT_USAGE;
			}
			break;
		case 'd':
			daemon = true;
			break;
		case 'w':
			opts.watch = true;
			break;
		case 'm':
			if (cli_number(optarg, 4, 1ULL << 30, &maxfds) < 0) {
				fprintf(stderr, "smx mount: --max-fds takes "
				    "4 to 2^30, not '%s'\n", optarg);
				return CLI_EXIT_USAGE;
			}
			opts.max_node_fds = (size_t)maxfds;
			break;
		case 'h':
			cmd_mount_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_mount_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (argc - optind != 2) {
		cmd_mount_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	dir = argv[optind];
	mp = argv[optind + 1];

	if ((rc = stat(dir, &st) < 0 ? errno : 0) != 0 ||
	    !S_ISDIR(st.st_mode)) {
		/* Not a directory: an image, unless it can only be a path. */
		if (dir[0] == '/' || dir[0] == '.') {
			fprintf(stderr, "smx mount: %s: %s\n", dir,
			    rc != 0 ? strerror(rc) : "not a directory");
			return CLI_EXIT_ERROR;
		}
		if ((rc = image_tree(dir, tree, sizeof(tree))) != CLI_EXIT_OK)
			return rc;
		dir = tree;
		readonly = true;
	}
	if (stat(mp, &st) < 0) {
		fprintf(stderr, "smx mount: mount point %s: %s (create it "
		    "first)\n", mp, strerror(errno));
		return CLI_EXIT_ERROR;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "smx mount: mount point %s is not a "
		    "directory\n", mp);
		return CLI_EXIT_ERROR;
	}
	if (access("/dev/fuse", F_OK) < 0) {
		fprintf(stderr, "smx mount: /dev/fuse is absent (modprobe "
		    "fuse, or give the container the device)\n");
		return MOUNT_EXIT_UNSUPPORTED;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "smx mount: mounting FUSE needs root\n");
		return MOUNT_EXIT_UNSUPPORTED;
	}
	/* Absolute paths: --daemon and the unmount must not depend on the
	 * working directory. */
	if ((dirabs = realpath(dir, NULL)) == NULL ||
	    (mpabs = realpath(mp, NULL)) == NULL) {
		fprintf(stderr, "smx mount: %s: %s\n", dirabs == NULL ? dir :
		    mp, strerror(errno));
		free(dirabs);
		return CLI_EXIT_ERROR;
	}
	dir = dirabs;
	mp = mpabs;
	opts.root = dir;
	opts.readonly = readonly;
	/* The client has applied the caller's umask already; ours must not
	 * strip the modes it sends a second time. */
	umask(0);

	if (daemon)
		readyfd = daemonize();
	if ((r = reactor_create()) == NULL) {
		log_warn("reactor");
		daemon_ready(&readyfd, CLI_EXIT_ERROR);
		return CLI_EXIT_ERROR;
	}
	/* Signals first: one arriving right after the mount must unmount. */
	sigs[0] = reactor_add_signal(r, SIGINT, signal_cb, r);
	sigs[1] = reactor_add_signal(r, SIGTERM, signal_cb, r);
	sigs[2] = reactor_add_signal(r, SIGHUP, signal_cb, r);
	if ((m = fusefs_mount(r, &opts, mp, (unsigned)nthreads, err,
	    sizeof(err))) == NULL) {
		fprintf(stderr, "smx mount: %s\n", err);
		rc = CLI_EXIT_ERROR;
		goto out;
	}
	fusefs_mount_set_gone_cb(m, gone_cb, r);
	log_info("mounted %s on %s%s", dir, mp, readonly ? " read-only" : "");
	daemon_ready(&readyfd, CLI_EXIT_OK);

	rc = reactor_run(r) == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
	fusefs_unmount(m);
out:
	for (i = 0; i < 3; i++)
		if (sigs[i] != NULL)
			reactor_del_signal(sigs[i]);
	reactor_free(r);
	daemon_ready(&readyfd, (char)rc);
	free(dirabs);
	free(mpabs);
	return rc;
}
