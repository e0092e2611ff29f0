/*
 * smx boot: boot a kernel in a microVM with the serial console on stdout
 * (or a file), and exit with a status that says how the guest ended.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/smx.h"

/* Exit statuses for the ways a guest ends. */
#define BOOT_EXIT_POWEROFF	0
#define BOOT_EXIT_REBOOT	3
#define BOOT_EXIT_TRIPLE_FAULT	4
#define BOOT_EXIT_CRASH		5

void
cmd_boot_usage(FILE *f)
{
	fprintf(f,
	    "usage: smx boot [--kernel FILE] [--initrd FILE] [--cmdline STRING]\n"
	    "                [--append STRING] [--memory MiB] [--cpus N]\n"
	    "                [--console FILE] [--disk FILE[:ro]]... [--vsock PATH]\n"
	    "                [--no-vsock] [--no-rng] [--no-balloon] [--hvc]\n"
	    "                [--balloon-target MiB]\n"
	    "                [--share DIR:TAG[:ro][:dax[=SIZE]]]...\n"
	    "                [--snapshot-after MS --snapshot-dir DIR]\n"
	    "                [--diff BASE]\n\n"
	    "Boot a Linux kernel (an uncompressed vmlinux through its PVH entry,\n"
	    "or a bzImage) in a microVM.  The serial console (ttyS0) is\n"
	    "connected to stdout and, when stdin is not a terminal, stdin.\n\n"
	    "  --kernel FILE     kernel to boot (default: the smx guest kernel,\n"
	    "                    %s)\n"
	    "  --initrd FILE     initial ramdisk\n"
	    "  --cmdline STRING  kernel command line (default: \"%s\")\n"
	    "  --append STRING   add to the command line\n"
	    "  --memory MiB      guest memory, 16 to 1048576 (default 256)\n"
	    "  --cpus N          vCPUs, 1 to 8 (default 1)\n"
	    "  --console FILE    write the console to FILE instead of stdout\n"
	    "  --disk FILE[:ro]  a virtio-blk disk from a raw image (read-only\n"
	    "                    with :ro); up to 4, /dev/vda first\n"
	    "  --vsock PATH      the vsock's host Unix socket (default: in a run\n"
	    "                    directory under /run/smx as root, else\n"
	    "                    $XDG_RUNTIME_DIR/smx; $SMX_RUNDIR overrides); connect and send\n"
	    "                    \"CONNECT <port>\\n\" to reach a guest port, and\n"
	    "                    guest connections to port P reach PATH_P\n"
	    "  --no-vsock, --no-rng, --no-balloon\n"
	    "                    leave out a default virtio device\n"
	    "  --balloon-target MiB\n"
	    "                    memory the balloon asks the guest to give back\n"
	    "                    from the start (default 0)\n"
	    "  --hvc             add a virtio-console (hvc0) on the console too\n"
	    "  --share DIR:TAG[:ro][:dax[=SIZE]]\n"
	    "                    share host directory DIR over virtio-fs; the\n"
	    "                    guest mounts it with mount -t virtiofs TAG\n"
	    "                    (read-only with :ro; a DAX window for mount\n"
	    "                    -o dax with :dax, of SIZE (a power of two from\n"
	    "                    2M to 64G, default 1G; the guest spends 1/64\n"
	    "                    of it on page structures); up to 4; boot from\n"
	    "                    it with --append \"rootfstype=virtiofs root=TAG\"\n"
	    "  --snapshot-after MS, --snapshot-dir DIR\n"
	    "                    after MS milliseconds snapshot the machine into\n"
	    "                    DIR (for smx restore DIR) and stop it; exit 0\n"
	    "                    when the snapshot was written\n"
	    "  --diff BASE       write only the pages that differ from snapshot\n"
	    "                    BASE (compared page by page for a booted\n"
	    "                    machine); restores as BASE + the diff\n\n"
	    "Devices are virtio-mmio, declared on the kernel command line.\n\n"
	    "exit status: 0 the guest powered off or halted, 3 it rebooted,\n"
	    "4 it triple-faulted, 5 the hypervisor failed, 128+N stopped by\n"
	    "signal N, 1 smx could not start it, 2 bad usage.\n",
	    cli_kernel_path(), smx_default_cmdline());
}

/* A DAX window size: a power of two from 2 MiB to 64 GiB, as a number
 * of MiB with an optional unit (M, MiB, G, GiB).  0, or -1. */
static int
parse_dax_size(const char *s, uint64_t *mib)
{
	unsigned long long	 n;
	char			*end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno != 0 || n == 0 || n > 65536)
		return -1;
	if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gib") == 0)
		n *= 1024;
	else if (*end != '\0' && strcasecmp(end, "m") != 0 &&
	    strcasecmp(end, "mib") != 0)
		return -1;
	if (n < 2 || n > 65536 || (n & (n - 1)) != 0)
		return -1;
	*mib = n;
	return 0;
}

/* Parse arg, DIR:TAG[:ro][:dax[=SIZE]], into sh; spec is a copy of arg
 * that is split in place (sh points into it).  0, or -1 after a one-line
 * message. */
static int
parse_share(const char *arg, char *spec, struct smx_share *sh)
{
	char	*colon;
	bool	 more = true;

	memset(sh, 0, sizeof(*sh));
	/* Flags come off the end, in either order. */
	while (more && (colon = strrchr(spec, ':')) != NULL) {
		more = false;
		if (strcmp(colon, ":ro") == 0 && !sh->readonly)
			sh->readonly = more = true;
		else if (strcmp(colon, ":dax") == 0 && !sh->dax)
			sh->dax = more = true;
		else if (strncmp(colon, ":dax=", 5) == 0 && !sh->dax) {
			if (parse_dax_size(colon + 5, &sh->dax_window_mib) != 0) {
				fprintf(stderr, "smx boot: --share '%s': DAX "
				    "window '%s': give a power of two from 2M "
				    "to 64G\n", arg, colon + 5);
				return -1;
			}
			sh->dax = more = true;
		}
		if (more)
			*colon = '\0';
	}
	if ((colon = strrchr(spec, ':')) == NULL || colon == spec ||
	    colon[1] == '\0' || strlen(colon + 1) > 36) {
		fprintf(stderr, "smx boot: --share '%s': give "
		    "DIR:TAG[:ro][:dax[=SIZE]] with a tag of 1 to 36 bytes\n",
		    arg);
		return -1;
	}
	*colon = '\0';
	sh->path = spec;
	sh->tag = colon + 1;
	return 0;
}

/* Guest console input: stdin when it is a pipe or socket.  A terminal
 * stays the user's (the guest's console is output-only there) and a
 * regular file or /dev/null cannot be polled. */
static int
console_input(void)
{
	struct stat	st;

	if (fstat(STDIN_FILENO, &st) == -1)
		return -1;
	if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))
		return STDIN_FILENO;
	return -1;
}

int
cmd_boot(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "kernel",	required_argument, NULL, 'k' },
		{ "initrd",	required_argument, NULL, 'i' },
		{ "cmdline",	required_argument, NULL, 'c' },
		{ "append",	required_argument, NULL, 'a' },
		{ "memory",	required_argument, NULL, 'm' },
		{ "cpus",	required_argument, NULL, 'n' },
		{ "console",	required_argument, NULL, 'o' },
		{ "disk",	required_argument, NULL, 'd' },
		{ "vsock",	required_argument, NULL, 'V' },
		{ "no-vsock",	no_argument,	   NULL, 'S' },
		{ "no-rng",	no_argument,	   NULL, 'R' },
		{ "no-balloon",	no_argument,	   NULL, 'B' },
		{ "hvc",	no_argument,	   NULL, 'H' },
		{ "balloon-target", required_argument, NULL, 'T' },
		{ "share",	required_argument, NULL, 'F' },
		{ "snapshot-after", required_argument, NULL, 'A' },
		{ "snapshot-dir", required_argument, NULL, 'D' },
		{ "diff",	required_argument, NULL, 'X' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct smx_boot_opts	 o;
	struct smx_disk		 disks[4];
	char			*disk_paths[4] = { NULL };
	struct smx_share	 shares[4];
	char			*share_specs[4] = { NULL };
	unsigned		 nshares = 0;
	unsigned		 ndisks = 0, i;
	size_t			 plen;
	struct smx		*smx;
	struct smx_vm		*vm;
	unsigned long long	 n;
	const char		*cmdline = NULL, *append = NULL, *why;
	const char		*snap_dir = NULL, *snap_base = NULL;
	unsigned long long	 snap_ms = 0;
	char			*full = NULL, err[256];
	int			 ch, error, status, console_fd = -1, sig;
	enum smx_end		 end;

	smx_boot_opts_init(&o);
	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'k':
			o.kernel = optarg;
			break;
		case 'i':
			o.initrd = optarg;
			break;
		case 'c':
			cmdline = optarg;
			break;
		case 'a':
			append = optarg;
			break;
		case 'm':
			if (cli_number(optarg, 16, 1ULL << 20, &n) != 0) {
				fprintf(stderr, "smx boot: --memory %s: "
				    "give MiB from 16 to 1048576\n", optarg);
				status = CLI_EXIT_USAGE;
				goto out;
			}
			o.memory_mib = n;
			break;
		case 'n':
			if (cli_number(optarg, 1, 8, &n) != 0) {
				fprintf(stderr, "smx boot: --cpus %s: give 1 "
				    "to 8\n", optarg);
				status = CLI_EXIT_USAGE;
				goto out;
			}
			o.cpus = (uint32_t)n;
			break;
		case 'o':
			console_fd = open(optarg, O_WRONLY | O_CREAT | O_TRUNC |
			    O_CLOEXEC, 0644);
			if (console_fd == -1) {
				fprintf(stderr, "smx boot: --console %s: %s\n",
				    optarg, strerror(errno));
				status = CLI_EXIT_ERROR;
				goto out;
			}
			o.console_fd = console_fd;
			break;
		case 'd':
			if (ndisks == ARRAY_SIZE(disks)) {
				fprintf(stderr, "smx boot: at most %zu --disk\n",
				    ARRAY_SIZE(disks));
				status = CLI_EXIT_USAGE;
				goto out;
			}
			disk_paths[ndisks] = xstrdup(optarg);
			plen = strlen(optarg);
			disks[ndisks].readonly = plen > 3 &&
			    strcmp(optarg + plen - 3, ":ro") == 0;
			if (disks[ndisks].readonly)
				disk_paths[ndisks][plen - 3] = '\0';
			disks[ndisks].path = disk_paths[ndisks];
			ndisks++;
			break;
		case 'F':
			if (nshares == ARRAY_SIZE(shares)) {
				fprintf(stderr, "smx boot: at most %zu "
				    "--share\n", ARRAY_SIZE(shares));
				status = CLI_EXIT_USAGE;
				goto out;
			}
			share_specs[nshares] = xstrdup(optarg);
			if (parse_share(optarg, share_specs[nshares],
			    &shares[nshares]) != 0) {
				nshares++;
				status = CLI_EXIT_USAGE;
				goto out;
			}
			nshares++;
			break;
		case 'V':
			o.vsock_path = optarg;
			break;
		case 'S':
			o.devices &= ~SMX_DEV_VSOCK;
			break;
		case 'R':
			o.devices &= ~SMX_DEV_RNG;
			break;
		case 'B':
			o.devices &= ~SMX_DEV_BALLOON;
			break;
		case 'H':
			o.devices |= SMX_DEV_HVC;
			break;
		case 'T':
			if (cli_number(optarg, 0, 1ULL << 20, &n) != 0) {
				fprintf(stderr, "smx boot: --balloon-target "
				    "%s: give MiB from 0 to 1048576\n", optarg);
				status = CLI_EXIT_USAGE;
				goto out;
			}
			o.balloon_target_mib = n;
			break;
		case 'A':
			if (cli_number(optarg, 1, 86400000, &snap_ms) != 0) {
				fprintf(stderr, "smx boot: --snapshot-after "
				    "%s: give milliseconds\n", optarg);
				status = CLI_EXIT_USAGE;
				goto out;
			}
			break;
		case 'D':
			snap_dir = optarg;
			break;
		case 'X':
			snap_base = optarg;
			break;
		case 'h':
			cmd_boot_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_boot_usage(stderr);
			status = CLI_EXIT_USAGE;
			goto out;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "smx boot: unexpected argument '%s'\n",
		    argv[optind]);
		status = CLI_EXIT_USAGE;
		goto out;
	}
	o.disks = disks;
	o.ndisks = ndisks;
	o.shares = shares;
	o.nshares = nshares;
	if (o.kernel == NULL) {
		o.kernel = cli_kernel_path();
		if (access(o.kernel, R_OK) != 0) {
			fprintf(stderr, "smx boot: no --kernel given and the "
			    "smx guest kernel is not built (%s): run "
			    "tools/bootstrap\n", o.kernel);
			status = CLI_EXIT_ERROR;
			goto out;
		}
	}
	if (cmdline == NULL)
		cmdline = smx_default_cmdline();
	if (append != NULL)
		xasprintf(&full, "%s %s", cmdline, append);
	o.cmdline = full != NULL ? full : cmdline;
	o.console_in_fd = console_input();

	if (smx_kvm_probe(&why) == SMX_KVM_ABSENT) {
		fprintf(stderr, "smx boot: KVM is not available: %s\n", why);
		status = CLI_EXIT_ERROR;
		goto out;
	}
	if ((snap_dir != NULL) != (snap_ms != 0)) {
		fprintf(stderr, "smx boot: give --snapshot-after and "
		    "--snapshot-dir together\n");
		status = CLI_EXIT_USAGE;
		goto out;
	}
	if (snap_base != NULL && snap_dir == NULL) {
		fprintf(stderr, "smx boot: --diff goes with --snapshot-dir\n");
		status = CLI_EXIT_USAGE;
		goto out;
	}
	if (snap_dir != NULL) {
		status = cli_boot_snapshot(&o, snap_ms, snap_dir, snap_base);
		goto out;
	}
	if ((error = smx_open(&smx, SMX_OPEN_SIGNALS)) != 0) {
		fprintf(stderr, "smx boot: %s\n", strerror(-error));
		status = CLI_EXIT_ERROR;
		goto out;
	}
	if ((error = smx_boot(smx, &o, &vm, err, sizeof err)) != 0) {
		fprintf(stderr, "smx boot: %s\n", err);
		smx_close(smx);
		status = CLI_EXIT_ERROR;
		goto out;
	}
	if (smx_vm_vsock_path(vm) != NULL)
		log_info("vsock: %s", smx_vm_vsock_path(vm));
	if ((error = smx_run(smx)) != 0)
		fprintf(stderr, "smx boot: event loop: %s\n", strerror(-error));
	end = smx_vm_end(vm);
	log_info("guest ended: %s (%s)", smx_end_name(end),
	    smx_vm_end_detail(vm));
	switch (end) {
	case SMX_END_POWEROFF:
		status = BOOT_EXIT_POWEROFF;
		break;
	case SMX_END_REBOOT:
		status = BOOT_EXIT_REBOOT;
		break;
	case SMX_END_TRIPLE_FAULT:
		status = BOOT_EXIT_TRIPLE_FAULT;
		break;
	case SMX_END_STOPPED:
		sig = smx_stop_signal(smx);
		status = sig != 0 ? 128 + sig : CLI_EXIT_ERROR;
		break;
	default:
		fprintf(stderr, "smx boot: the guest could not go on: %s\n",
		    smx_vm_end_detail(vm));
		if (smx_kvm_probe(NULL) == SMX_KVM_PVM)
			fprintf(stderr, "smx boot: this host's KVM is PVM, "
			    "which cannot run a Linux kernel; run it under "
			    "tools/kvm-harness\n");
		status = BOOT_EXIT_CRASH;
		break;
	}
	smx_vm_free(vm);
	smx_close(smx);
out:
	if (console_fd != -1)
		close(console_fd);
	for (i = 0; i < ndisks; i++)
		free(disk_paths[i]);
	for (i = 0; i < nshares; i++)
		free(share_specs[i]);
	free(full);
	return status;
}
