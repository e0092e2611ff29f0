/*
 * smx restore DIR: make a machine from a snapshot directory (or a diff
 * snapshot and its base) and run it until it ends, with the serial
 * console on stdout.  Also the machine behind `smx boot --snapshot-after
 * MS --snapshot-dir DIR [--diff BASE]`: boot, run MS milliseconds,
 * snapshot (all of it, or what differs from BASE), stop.
 *
 * Both drive the VM object and snapshot/ directly with their own
 * reactor; the libsmx API for snapshots (smx snapshot NAME, restore
 * --name) is still to come and will take their place.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/smx.h"
#include "core/vm.h"
#include "snapshot/snapshot.h"

/* A machine run by this file, until it ends. */
struct runner {
	struct reactor		*r;
	struct vm		*vm;
	const char		*snap_dir;	/* snapshot to take, or NULL */
	const char		*diff_base;	/* ...as a diff against this */
	uint64_t		 snap_after_ms;
	struct reactor_timer	*timer;
	struct reactor_signal	*sigs[2];
	bool			 ended;
	enum vm_end		 end;
	int			 signo;
	int			 snap_error;	/* -1: none taken */
};

static void
runner_end_cb(struct vm *vm, enum vm_end end, void *arg)
{
	struct runner	*ru = arg;

	ru->ended = true;
	ru->end = end;
	reactor_stop(ru->r);
}

static void
runner_signal_cb(int signo, void *arg)
{
	struct runner	*ru = arg;

	ru->signo = signo;
	vm_stop(ru->vm, VM_END_STOPPED);
}

/* The snapshot is on disk (or failed): stop the machine either way. */
static void
runner_snap_done_cb(int error, const char *reason, void *arg)
{
	struct runner	*ru = arg;

	ru->snap_error = error;
	if (error != 0)
		fprintf(stderr, "smx: snapshot: %s\n", reason);
	else
		log_info("snapshot written to %s", ru->snap_dir);
	vm_resume(ru->vm);
	vm_stop(ru->vm, VM_END_STOPPED);
}

static void
runner_paused_cb(struct vm *vm, void *arg)
{
	struct runner	*ru = arg;
	char		 err[256];
	int		 rc;

	if (ru->diff_base != NULL)
		rc = snapshot_capture_diff(vm, ru->r, ru->diff_base,
		    ru->snap_dir, runner_snap_done_cb, ru, err, sizeof(err));
	else
		rc = snapshot_capture(vm, ru->r, ru->snap_dir,
		    runner_snap_done_cb, ru, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "smx: snapshot: %s\n", err);
		ru->snap_error = rc;
		vm_resume(vm);
		vm_stop(vm, VM_END_STOPPED);
	}
}

static void
runner_timer_cb(void *arg)
{
	struct runner	*ru = arg;
	int		 rc;

	if ((rc = vm_pause(ru->vm, runner_paused_cb, ru)) != 0) {
		fprintf(stderr, "smx: snapshot: cannot pause the machine: %s\n",
		    strerror(-rc));
		ru->snap_error = rc;
		vm_stop(ru->vm, VM_END_STOPPED);
	}
}

/* Start ru->vm and run until it ends; the exit status. */
static int
runner_run(struct runner *ru)
{
	int	status, i;

	ru->snap_error = -1;
	ru->sigs[0] = reactor_add_signal(ru->r, SIGINT, runner_signal_cb, ru);
	ru->sigs[1] = reactor_add_signal(ru->r, SIGTERM, runner_signal_cb, ru);
	if (ru->snap_dir != NULL)
		ru->timer = reactor_add_timer(ru->r, ru->snap_after_ms * 1000,
		    false, runner_timer_cb, ru);
	if (vm_start(ru->vm, runner_end_cb, ru) != 0) {
		fprintf(stderr, "smx: cannot start the machine's vCPUs\n");
		status = CLI_EXIT_ERROR;
		goto out;
	}
	while (!ru->ended)
		if (reactor_run(ru->r) != 0)
			fatalx("event loop");
	log_info("guest ended: %s (%s)", vm_end_name(ru->end),
	    vm_end_detail(ru->vm));
	if (ru->snap_dir != NULL)
		status = ru->snap_error == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
	else if (ru->signo != 0)
		status = 128 + ru->signo;
	else
		status = ru->end == VM_END_POWEROFF ? CLI_EXIT_OK :
		    ru->end == VM_END_REBOOT ? 3 :
		    ru->end == VM_END_TRIPLE_FAULT ? 4 : 5;
out:
	if (ru->timer != NULL)
		reactor_del_timer(ru->timer);
	for (i = 0; i < 2; i++)
		if (ru->sigs[i] != NULL)
			reactor_del_signal(ru->sigs[i]);
	return status;
}

/*
 * `smx boot --snapshot-after MS --snapshot-dir DIR`: the boot options
 * as a machine configuration, run MS ms, snapshot, stop.
 */
int
cli_boot_snapshot(const struct smx_boot_opts *o, uint64_t after_ms,
    const char *dir, const char *diff_base)
{
	struct vm_config	 c;
	struct runner		 ru;
	char			 err[256], tmp[] = "/tmp/smx-boot.XXXXXX";
	char			*vsock = NULL;
	unsigned		 i;
	int			 status = CLI_EXIT_ERROR;

	memset(&c, 0, sizeof(c));
	c.kernel = o->kernel;
	c.initrd = o->initrd;
	c.cmdline = o->cmdline;
	c.ncpus = o->cpus;
	c.memory_mib = o->memory_mib;
	c.console_fd = o->console_fd;
	c.console_in_fd = o->console_in_fd;
	c.rng = (o->devices & SMX_DEV_RNG) != 0;
	c.balloon = (o->devices & SMX_DEV_BALLOON) != 0;
	c.balloon_target_mib = o->balloon_target_mib;
	c.hvc = (o->devices & SMX_DEV_HVC) != 0;
	c.hvc_fd = o->console_fd;
	c.vsock_cid = o->vsock_cid;
	if (o->devices & SMX_DEV_VSOCK) {
		if (o->vsock_path != NULL)
			vsock = xstrdup(o->vsock_path);
		else if (mkdtemp(tmp) != NULL)
			xasprintf(&vsock, "%s/vsock", tmp);
		else {
			fprintf(stderr, "smx boot: %s: %s\n", tmp,
			    strerror(errno));
			return CLI_EXIT_ERROR;
		}
		c.vsock_path = vsock;
	}
	for (i = 0; i < o->ndisks && i < VM_MAX_DISKS; i++) {
		c.disks[i].path = o->disks[i].path;
		c.disks[i].readonly = o->disks[i].readonly;
	}
	c.ndisks = o->ndisks;
	for (i = 0; i < o->nshares && i < VM_MAX_SHARES; i++) {
		c.shares[i].path = o->shares[i].path;
		c.shares[i].tag = o->shares[i].tag;
		c.shares[i].readonly = o->shares[i].readonly;
		c.shares[i].dax = o->shares[i].dax;
		c.shares[i].dax_window = o->shares[i].dax_window_mib << 20;
	}
	c.nshares = o->nshares;
	memset(&ru, 0, sizeof(ru));
	ru.snap_dir = dir;
	ru.diff_base = diff_base;
	ru.snap_after_ms = after_ms;
	if ((ru.r = reactor_create()) == NULL)
		fatal("reactor");
	if ((ru.vm = vm_create(ru.r, &c, err, sizeof(err))) == NULL) {
		fprintf(stderr, "smx boot: %s\n", err);
		goto out;
	}
	if (vsock != NULL)
		log_info("vsock: %s", vsock);
	status = runner_run(&ru);
	vm_free(ru.vm);
out:
	reactor_free(ru.r);
	if (vsock != NULL && o->vsock_path == NULL) {
		unlink(vsock);
		rmdir(tmp);
	}
	free(vsock);
	return status;
}

/* Guest console input, as smx boot takes it: stdin when it is a pipe or
 * a socket (a terminal stays the user's). */
static int
console_input(void)
{
	struct stat	st;

	if (fstat(STDIN_FILENO, &st) == -1)
		return -1;
	return S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) ? STDIN_FILENO :
	    -1;
}

void
cmd_restore_usage(FILE *f)
{
	fprintf(f,
	    "usage: smx restore DIR [--console FILE] [--vsock PATH] [--verify]\n"
	    "                   [--base BASE]\n"
	    "                   [--snapshot-after MS --snapshot-dir DIR2]\n"
	    "                   [--diff BASE2]\n"
	    "       smx restore DIR --name N [-p [IP:]HPORT:GPORT]...\n\n"
	    "Make a machine from snapshot directory DIR (taken by smx boot\n"
	    "--snapshot-after) and run it from where the snapshot was taken,\n"
	    "its memory mapped copy-on-write from DIR/memory (a diff\n"
	    "snapshot: from its base's, with the diff's pages over it).  The\n"
	    "serial console goes to stdout; stdin, when it is a pipe or a\n"
	    "socket, is the console's input.\n\n"
	    "  --console FILE    write the console to FILE instead\n"
	    "  --vsock PATH      the vsock's host Unix socket (default: the\n"
	    "                    snapshot's own path)\n"
	    "  --verify          check the memory file's SHA-256 first (slow)\n"
	    "  --base BASE       DIR is a diff whose base is now at BASE (it\n"
	    "                    must still be the snapshot the diff was\n"
	    "                    taken against)\n"
	    "  --snapshot-after MS, --snapshot-dir DIR2\n"
	    "                    after MS milliseconds snapshot the machine\n"
	    "                    into DIR2 and stop it\n"
	    "  --diff BASE2      ...writing only the pages that differ from\n"
	    "                    snapshot BASE2 (DIR itself, or DIR's base:\n"
	    "                    then only pages written since are looked at)\n"
	    "  --name N          restore a snapshot of a container (smx bake,\n"
	    "                    smx snapshot NAME) as container N, detached,\n"
	    "                    with its agent fixed up (clock, entropy, name)\n"
	    "  -p, --publish [IP:]HPORT:GPORT\n"
	    "                    with --name: publish a guest TCP port\n\n"
	    "exit status: as smx boot; 1 when the snapshot cannot be restored\n"
	    "(the reason on stderr).\n");
}

int
cmd_restore(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "console",	required_argument, NULL, 'o' },
		{ "vsock",	required_argument, NULL, 'V' },
		{ "verify",	no_argument,	   NULL, 'v' },
		{ "snapshot-after", required_argument, NULL, 'A' },
		{ "snapshot-dir", required_argument, NULL, 'D' },
		{ "diff",	required_argument, NULL, 'X' },
		{ "base",	required_argument, NULL, 'B' },
		{ "name",	required_argument, NULL, 'N' },
		{ "publish",	required_argument, NULL, 'p' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct snapshot_restore_opts o;
	struct runner		 ru;
	unsigned long long	 ms = 0;
	const char		*dir, *name = NULL;
	char			 err[512], *ports[8];
	unsigned		 nports = 0;
	int			 ch, status, fd = -1;

	memset(&ru, 0, sizeof(ru));
	snapshot_restore_opts_init(&o);
	o.console_fd = 1;
	o.console_in_fd = console_input();
	optind = 1;
	while ((ch = getopt_long(argc, argv, "hp:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'N':
			name = optarg;
			break;
		case 'p':
			if (nports == 8) {
				fprintf(stderr, "smx restore: at most 8 -p\n");
				return CLI_EXIT_USAGE;
			}
			ports[nports++] = optarg;
			break;
		case 'o':
			if ((fd = open(optarg, O_WRONLY | O_CREAT | O_TRUNC |
			    O_CLOEXEC, 0644)) == -1) {
				fprintf(stderr, "smx restore: --console %s: "
				    "%s\n", optarg, strerror(errno));
				return CLI_EXIT_ERROR;
			}
			o.console_fd = fd;
			break;
		case 'V':
			o.vsock_path = optarg;
			break;
		case 'v':
			o.verify_memory = true;
			break;
		case 'A':
			if (cli_number(optarg, 0, 86400000, &ms) != 0) {
				fprintf(stderr, "smx restore: --snapshot-after "
				    "%s: give milliseconds\n", optarg);
				return CLI_EXIT_USAGE;
			}
			ru.snap_after_ms = ms;
			break;
		case 'D':
			ru.snap_dir = optarg;
			break;
		case 'X':
			ru.diff_base = optarg;
			o.track_dirty = true;
			break;
		case 'B':
			o.base_dir = optarg;
			break;
		case 'h':
			cmd_restore_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_restore_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		cmd_restore_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	dir = argv[optind];
	/* A named container of an image's snapshot (smx bake, smx snapshot
	 * NAME): detached, served like smx run -d (core/cli/snapshot_vm.c). */
	if (name != NULL)
		return cli_restore_container(dir, name, ports, nports);
	if (nports != 0) {
		fprintf(stderr, "smx restore: -p needs --name\n");
		return CLI_EXIT_USAGE;
	}
	if ((ru.snap_dir != NULL) != (ms != 0)) {
		fprintf(stderr, "smx restore: give --snapshot-after and "
		    "--snapshot-dir together\n");
		return CLI_EXIT_USAGE;
	}
	if (ru.diff_base != NULL && ru.snap_dir == NULL) {
		fprintf(stderr, "smx restore: --diff goes with "
		    "--snapshot-dir\n");
		return CLI_EXIT_USAGE;
	}
	if ((ru.r = reactor_create()) == NULL)
		fatal("reactor");
	if ((ru.vm = snapshot_restore(ru.r, dir, &o, err,
	    sizeof(err))) == NULL) {
		fprintf(stderr, "smx restore: %s\n", err);
		status = CLI_EXIT_ERROR;
	} else {
		status = runner_run(&ru);
		vm_free(ru.vm);
	}
	reactor_free(ru.r);
	if (fd != -1)
		close(fd);
	return status;
}
