/*
 * smx load: add the images of a `docker save` archive or an OCI image
 * layout to the store.
 */
#include <sys/file.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "image/image.h"

void
cmd_load_usage(FILE *f)
{
	fprintf(f, "usage: smx load [-i FILE|DIR] [NAME[:TAG]]\n\n"
	    "Add the images of a `docker save` tar or an OCI image layout\n"
	    "(a directory, or a tar of one) to $SMX_HOME, verifying every\n"
	    "digest.  Reads FILE, or standard input without -i.  Names come\n"
	    "from the archive (RepoTags, or OCI ref.name annotations); NAME\n"
	    "names images that carry none (a bare OCI tag is applied to it).\n"
	    "Prints each name and its manifest digest.\n\n"
	    "  -i, --input PATH   the archive or layout (default: stdin)\n");
}

static void
print_cb(const char *ref, const char *digest, void *arg)
{
	(void)arg;
	printf("%s %s\n", ref, digest);
}

/* Standard input into a temp file, since a tar is read more than once. */
static int
spool_stdin(struct image_store *s, char **pathp)
{
	char	*path, buf[65536];
	size_t	 n;
	FILE	*f;
	int	 fd;

	/* A flocked *.tmp: the store's crash cleanup takes it if we die,
	 * and leaves it alone while we live. */
	xasprintf(&path, "%s/stdin-XXXXXX.tmp", image_store_tmpdir(s));
	if ((fd = mkstemps(path, 4)) == -1 || flock(fd, LOCK_EX) == -1 ||
	    (f = fdopen(fd, "w")) == NULL) {
		fprintf(stderr, "smx load: cannot spool stdin into %s\n",
		    path);
		free(path);
		return -1;
	}
	while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
		if (fwrite(buf, 1, n, f) != n)
			break;
	if (!ferror(stdin) && ftell(f) == 0) {
		fprintf(stderr, "smx load: standard input is empty; give "
		    "-i FILE or pipe an archive in\n");
		fclose(f);
		unlink(path);
		free(path);
		return -1;
	}
	if (ferror(stdin) || fclose(f) != 0) {
		fprintf(stderr, "smx load: cannot spool stdin into %s\n",
		    path);
		unlink(path);
		free(path);
		return -1;
	}
	*pathp = path;
	return 0;
}

int
cmd_load(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "input", required_argument, NULL, 'i' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct image_store	*s;
	struct image_ref	 r;
	const char		*input = NULL, *name = NULL;
	char			 err[512], *spool = NULL;
	int			 ch, rc = CLI_EXIT_ERROR;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "hi:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'i':
			input = optarg;
			break;
		case 'h':
			cmd_load_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_load_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (argc - optind > 1) {
		cmd_load_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (argc - optind == 1) {
		name = argv[optind];
		if (image_ref_parse(name, &r, err, sizeof(err)) != 0) {
			fprintf(stderr, "smx load: %s\n", err);
			return CLI_EXIT_USAGE;
		}
	}
	if (input == NULL && isatty(0)) {
		fprintf(stderr, "smx load: give -i FILE or pipe an archive "
		    "into standard input\n");
		return CLI_EXIT_USAGE;
	}
	if (image_store_open(smx_home(), &s, err, sizeof(err)) != 0) {
		fprintf(stderr, "smx load: %s\n", err);
		return CLI_EXIT_ERROR;
	}
	if (input == NULL) {
		if (spool_stdin(s, &spool) != 0)
			goto out;
		input = spool;
	}
	if (image_load(s, input, name, print_cb, NULL, err, sizeof(err)) != 0)
		fprintf(stderr, "smx load: %s\n", err);
	else
		rc = CLI_EXIT_OK;
out:
	if (spool != NULL) {
		unlink(spool);
		free(spool);
	}
	image_store_close(s);
	return rc;
}
