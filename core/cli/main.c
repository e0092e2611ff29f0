/*
 * smx: the command-line client of libsmx.
 */
#include <sys/resource.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/kernel_key.h"
#include "core/smx.h"

static const struct cli_cmd cmds[] = {
	{ "run", cmd_run, cmd_run_usage,
	    "run an image's command in a new microVM" },
	{ "exec", cmd_exec, cmd_exec_usage,
	    "run a command in a running container" },
	{ "ps", cmd_ps, cmd_ps_usage, "list containers" },
	{ "logs", cmd_logs, cmd_logs_usage,
	    "print a detached container's output" },
	{ "stop", cmd_stop, cmd_stop_usage, "stop running containers" },
	{ "kill", cmd_kill, cmd_kill_usage,
	    "send a signal to containers' main processes" },
	{ "rm", cmd_rm, cmd_rm_usage, "remove containers" },
	{ "cp", cmd_cp, cmd_cp_usage,
	    "copy a file into or out of a container" },
	{ "boot", cmd_boot, cmd_boot_usage,
	    "boot a kernel (and initrd) in a microVM" },
	{ "restore", cmd_restore, cmd_restore_usage,
	    "run a machine from a snapshot directory" },
	{ "snapshot", cmd_snapshot, cmd_snapshot_usage,
	    "snapshot a machine; export or import a snapshot" },
	{ "bake", cmd_bake, cmd_bake_usage,
	    "boot an image and keep a snapshot for fast runs" },
	{ "bench", cmd_bench, cmd_bench_usage,
	    "measure snapshot restore against QEMU" },
	{ "doctor", cmd_doctor, cmd_doctor_usage,
	    "show what this host offers smx and what is missing" },
	{ "import", cmd_import, cmd_import_usage,
	    "make an image of a directory" },
	{ "load", cmd_load, cmd_load_usage,
	    "add images from a docker save archive or an OCI layout" },
	{ "pull", cmd_pull, cmd_pull_usage,
	    "download an image from a registry" },
	{ "login", cmd_login, cmd_login_usage,
	    "check and save credentials for a registry" },
	{ "logout", cmd_logout, cmd_logout_usage,
	    "forget the credentials for a registry" },
	{ "images", cmd_images, cmd_images_usage, "list stored images" },
	{ "inspect", cmd_inspect, cmd_inspect_usage,
	    "print an image's manifest and config as JSON" },
	{ "rmi", cmd_rmi, cmd_rmi_usage, "remove image references" },
	{ "gc", cmd_gc, cmd_gc_usage,
	    "remove blobs and trees no image uses" },
	{ "mount", cmd_mount, cmd_mount_usage,
	    "mount a host directory through smx's FUSE server" },
};

static void
usage(FILE *f)
{
	size_t	i;

	fprintf(f, "usage: smx [-v | -q] COMMAND [ARGS...]\n"
	    "       smx --help | --version\n\n"
	    "Run Linux guests as KVM microVMs.\n\ncommands:\n");
	for (i = 0; i < ARRAY_SIZE(cmds); i++)
		fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].summary);
	fprintf(f, "\nglobal options:\n"
	    "  -v, --verbose   more messages (twice: debug)\n"
	    "  -q, --quiet     errors only\n\n"
	    "'smx COMMAND --help' describes a command.  State lives in\n"
	    "$SMX_HOME (default /var/lib/smx as root, else ~/.local/share/smx).\n");
}

static const struct cli_cmd *
find_cmd(const char *name)
{
	size_t	i;

	for (i = 0; i < ARRAY_SIZE(cmds); i++)
		if (strcmp(cmds[i].name, name) == 0)
			return &cmds[i];
	return NULL;
}

const char *
cli_kernel_path(void)
{
	static char	*path;

	if (path == NULL)
		xasprintf(&path, "%s/kernel/vmlinux-%s", smx_home(),
		    SMX_KERNEL_KEY);
	return path;
}

int
cli_number(const char *s, unsigned long long min, unsigned long long max,
    unsigned long long *out)
{
	unsigned long long	 v;
	char			*end;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/*
 * A FUSE server (smx mount, a VM's virtio-fs shares) holds an O_PATH
 * descriptor for every inode its client has looked up, tens of thousands
 * after a big `tar x`, and a process hosting many VMs holds many more:
 * raise the descriptor limit as far as the system allows, once, here.
 */
static void
raise_nofile(void)
{
	struct rlimit	 rl;
	unsigned long long max = 0;
	FILE		*f;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	/* /proc files have no size: read_file() would see them empty. */
	if ((f = fopen("/proc/sys/fs/nr_open", "re")) != NULL) {
		if (fscanf(f, "%llu", &max) != 1)
			max = 0;
		fclose(f);
	}
	if (max > rl.rlim_max) {
		rl.rlim_max = rl.rlim_cur = max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			return;
		if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
			return;
	}
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		log_warn("raise the open-file limit");
}

int
main(int argc, char **argv)
{
	const struct cli_cmd	*cmd;
	int			 level = LOG_NORMAL, i;

	log_init("smx", LOG_NORMAL);
	/* A console or socket peer that goes away is an error on that
	 * descriptor, not the end of every machine in the process. */
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "-v") == 0 ||
		    strcmp(argv[i], "--verbose") == 0)
			level++;
		else if (strcmp(argv[i], "-vv") == 0)
			level += 2;
		else if (strcmp(argv[i], "-q") == 0 ||
		    strcmp(argv[i], "--quiet") == 0)
			level = LOG_QUIET;
		else if (strcmp(argv[i], "-h") == 0 ||
		    strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("smx %s\n", PACKAGE_VERSION);
			return CLI_EXIT_OK;
		} else {
			fprintf(stderr, "smx: unknown option %s\n", argv[i]);
			usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	log_init("smx", level);
	if (i == argc) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (strcmp(argv[i], "help") == 0) {
		if (i + 1 < argc && (cmd = find_cmd(argv[i + 1])) != NULL) {
			cmd->usage(stdout);
			return CLI_EXIT_OK;
		}
		usage(stdout);
		return CLI_EXIT_OK;
	}
	if ((cmd = find_cmd(argv[i])) == NULL) {
		fprintf(stderr, "smx: unknown command '%s' (see smx --help)\n",
		    argv[i]);
		return CLI_EXIT_USAGE;
	}
	return cmd->main(argc - i, argv + i);
}
