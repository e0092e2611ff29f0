/*
 * smx snapshot: the command for snapshots as files.  `export` and
 * `import` (here) move a snapshot directory to and from one portable
 * file; every other form, `smx snapshot NAME -o DIR [--diff BASE]`, is
 * a running machine's and goes to cmd_snapshot_vm().
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "snapshot/snapshot.h"

void
cmd_snapshot_usage(FILE *f)
{
	fprintf(f,
	    "usage: smx snapshot NAME -o DIR [--diff BASE]\n"
	    "       smx snapshot export DIR FILE\n"
	    "       smx snapshot import FILE DIR\n\n"
	    "Snapshot the running machine NAME into directory DIR (with\n"
	    "--diff, only the pages that differ from snapshot BASE), or move\n"
	    "a snapshot between hosts:\n\n"
	    "  export DIR FILE   write snapshot directory DIR into FILE, one\n"
	    "                    zstd stream with a SHA-256 checksum (a\n"
	    "                    diff snapshot cannot be exported: export a\n"
	    "                    full one)\n"
	    "  import FILE DIR   check FILE's checksum, unpack it into DIR;\n"
	    "                    refused when the snapshot's guest saw CPU\n"
	    "                    features this host lacks\n\n"
	    "exit status: 0 done, 1 failed (the reason on stderr), 2 usage.\n");
}

/* export DIR FILE / import FILE DIR: argv[0] is the word. */
static int
export_import(int argc, char **argv)
{
	bool	exp = strcmp(argv[0], "export") == 0;
	char	err[512];
	int	rc;

	if (argc == 2 && (strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0)) {
		cmd_snapshot_usage(stdout);
		return CLI_EXIT_OK;
	}
	if (argc != 3 || argv[1][0] == '-' || argv[2][0] == '-') {
		fprintf(stderr, "usage: smx snapshot %s\n", exp ?
		    "export DIR FILE" : "import FILE DIR");
		return CLI_EXIT_USAGE;
	}
	rc = exp ? snapshot_export(argv[1], argv[2], err, sizeof(err)) :
	    snapshot_import(argv[1], argv[2], err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "smx snapshot %s: %s\n", argv[0], err);
		return CLI_EXIT_ERROR;
	}
	log_info("%s %s into %s", exp ? "exported" : "imported", argv[1],
	    argv[2]);
	return CLI_EXIT_OK;
}

int
cmd_snapshot(int argc, char **argv)
{
	if (argc >= 2 && (strcmp(argv[1], "export") == 0 ||
	    strcmp(argv[1], "import") == 0))
		return export_import(argc - 1, argv + 1);
	if (argc == 2 && (strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0)) {
		cmd_snapshot_usage(stdout);
		return CLI_EXIT_OK;
	}
	return cmd_snapshot_vm(argc, argv);
}
