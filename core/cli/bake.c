/*
 * smx bake IMAGE [-o DIR] [--warmup CMD]: boot the image to a ready
 * agent, optionally warm it up, and snapshot it, stored with the image
 * (what `smx run` restores) or into DIR.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/smx.h"

void
cmd_bake_usage(FILE *f)
{
	fprintf(f,
	    "usage: smx bake [-o DIR] [--warmup CMD] IMAGE\n\n"
	    "Boot IMAGE in its default shape (1 vCPU, 256 MiB) until its agent\n"
	    "is ready and snapshot it.  Without -o the snapshot is kept with\n"
	    "the image in $SMX_HOME/snapshots/, and `smx run IMAGE` restores it\n"
	    "instead of booting.\n\n"
	    "  -o, --output DIR   write the snapshot into DIR instead\n"
	    "  --warmup CMD       run `sh -c CMD` in the guest first, so clones\n"
	    "                     start with warm caches (a failure stops the bake)\n"
	    "  --console FILE     write the guest kernel log to FILE\n");
}

int
cmd_bake(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "output",	required_argument, NULL, 'o' },
		{ "warmup",	required_argument, NULL, 'W' },
		{ "console",	required_argument, NULL, 'c' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct smx_bake_opts	 bo;
	struct smx		*smx;
	struct smx_image	*img = NULL;
	char			 err[512], path[4096];
	uint64_t		 t0;
	int			 ch, error, status = CLI_EXIT_ERROR;
	FILE			*console = NULL;

	smx_bake_opts_init(&bo);
	optind = 1;
	while ((ch = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'o':
			bo.dir = optarg;
			break;
		case 'W':
			bo.warmup = optarg;
			break;
		case 'c':
			if ((console = fopen(optarg, "we")) == NULL) {
				fprintf(stderr, "smx bake: --console %s: %s\n",
				    optarg, strerror(errno));
				return CLI_EXIT_ERROR;
			}
			bo.console_fd = fileno(console);
			break;
		case 'h':
			cmd_bake_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_bake_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		cmd_bake_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if ((error = smx_open(&smx, SMX_OPEN_SIGNALS)) != 0) {
		fprintf(stderr, "smx bake: cannot create the runtime: %s\n",
		    strerror(-error));
		goto out;
	}
	t0 = now_ns();
	err[0] = '\0';
	if ((error = smx_image_open(smx, argv[optind], NULL, &img, err,
	    sizeof err)) != 0) {
		fprintf(stderr, "smx bake: %s\n", err[0] ? err :
		    strerror(-error));
		goto out_close;
	}
	err[0] = '\0';
	if ((error = smx_image_bake(smx, img, &bo, path, sizeof path, err,
	    sizeof err)) != 0) {
		fprintf(stderr, "smx bake: %s: %s\n", argv[optind], err[0] ?
		    err : strerror(-error));
		goto out_image;
	}
	log_info("baked %s in %.1f s", argv[optind],
	    (double)(now_ns() - t0) / 1e9);
	printf("%s\n", path);
	status = CLI_EXIT_OK;
out_image:
	smx_image_close(img);
out_close:
	smx_close(smx);
out:
	if (console != NULL)
		fclose(console);
	return status;
}
