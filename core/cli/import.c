/*
 * smx import: make a one-layer image of a directory.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "image/image.h"

void
cmd_import_usage(FILE *f)
{
	fprintf(f, "usage: smx import [--cmd CMD] [--env K=V]... "
	    "[--workdir DIR]\n"
	    "                  [--owner UID:GID] DIR NAME[:TAG]\n\n"
	    "Make an image of the directory DIR (one layer, owners, modes,\n"
	    "xattrs and hardlinks kept; the same tree gives the same digest)\n"
	    "and name it NAME[:TAG] in $SMX_HOME.  Prints the name and the\n"
	    "manifest digest.\n\n"
	    "  --cmd CMD        the command (run by /bin/sh -c when it has\n"
	    "                   spaces; default /bin/sh)\n"
	    "  --env K=V        an environment variable (repeatable)\n"
	    "  --workdir DIR    the working directory (default /)\n"
	    "  --owner UID:GID  own every entry by UID:GID (default: as on\n"
	    "                   disk)\n");
}

/* "UID:GID" (numbers) into o. */
static int
parse_owner(const char *s, struct image_import_opts *o)
{
	unsigned long long	 uid, gid;
	char			*copy, *colon;
	int			 rc = -1;

	copy = xstrdup(s);
	if ((colon = strchr(copy, ':')) != NULL) {
		*colon = '\0';
		if (cli_number(copy, 0, 0xfffffffeULL, &uid) == 0 &&
		    cli_number(colon + 1, 0, 0xfffffffeULL, &gid) == 0) {
			o->uid = (long long)uid;
			o->gid = (long long)gid;
			rc = 0;
		}
	}
	free(copy);
	return rc;
}

int
cmd_import(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "cmd", required_argument, NULL, 'c' },
		{ "env", required_argument, NULL, 'e' },
		{ "workdir", required_argument, NULL, 'w' },
		{ "owner", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct image_import_opts o;
	struct image_store	*s;
	struct image_ref	 r;
	const char		*cmd[4] = { NULL };
	const char		**env;
	char			 err[512], digest[72], name[IMAGE_REF_MAX];
	size_t			 nenv = 0;
	int			 ch, rc = CLI_EXIT_ERROR;

	image_import_opts_init(&o);
	env = xcalloc((size_t)argc + 1, sizeof(*env));
	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			/* A plain path runs as is; anything with spaces
			 * goes through the shell. */
			if (strpbrk(optarg, " \t") != NULL) {
				cmd[0] = "/bin/sh";
				cmd[1] = "-c";
				cmd[2] = optarg;
			} else
				cmd[0] = optarg;
			o.cmd = cmd;
			break;
		case 'e':
			if (strchr(optarg, '=') == NULL ||
			    optarg[0] == '=') {
				fprintf(stderr, "smx import: --env wants "
				    "K=V, not '%s'\n", optarg);
				goto usage;
			}
			env[nenv++] = optarg;
			break;
		case 'w':
			o.workdir = optarg;
			break;
		case 'o':
			if (parse_owner(optarg, &o) != 0) {
				fprintf(stderr, "smx import: --owner wants "
				    "UID:GID, not '%s'\n", optarg);
				goto usage;
			}
			break;
		case 'h':
			cmd_import_usage(stdout);
			free(env);
			return CLI_EXIT_OK;
		default:
			goto usage;
		}
	}
	if (argc - optind != 2)
		goto usage;
	o.env = nenv > 0 ? env : NULL;
	if (image_ref_parse(argv[optind + 1], &r, err, sizeof(err)) != 0) {
		fprintf(stderr, "smx import: %s\n", err);
		goto usage_quiet;
	}
	if (image_store_open(smx_home(), &s, err, sizeof(err)) != 0) {
		fprintf(stderr, "smx import: %s\n", err);
		goto out;
	}
	if (image_import_dir(s, argv[optind], &r, &o, digest, err,
	    sizeof(err)) != 0)
		fprintf(stderr, "smx import: %s\n", err);
	else {
		if (image_ref_familiar(&r, name, sizeof(name)) < 0)
			snprintf(name, sizeof(name), "%s", argv[optind + 1]);
		printf("%s %s\n", name, digest);
		rc = CLI_EXIT_OK;
	}
	image_store_close(s);
out:
	free(env);
	return rc;
usage:
	cmd_import_usage(stderr);
usage_quiet:
	free(env);
	return CLI_EXIT_USAGE;
}
