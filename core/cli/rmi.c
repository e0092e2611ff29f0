/*
 * smx rmi: remove image references.  Blobs and trees stay until smx gc.
 */
#include <errno.h>
#include <string.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "image/image.h"

void
cmd_rmi_usage(FILE *f)
{
	fprintf(f, "usage: smx rmi REF...\n\n"
	    "Remove each reference (\"Untagged: REF\").  The content stays\n"
	    "until smx gc.  Every REF is tried; exits 1 when one is not\n"
	    "stored, 2 when one is malformed.\n");
}

int
cmd_rmi(int argc, char **argv)
{
	struct image_store	*s;
	struct image_ref	 ref;
	char			 err[256], name[IMAGE_REF_MAX];
	int			 i, error, rc = CLI_EXIT_OK;

	if (argc == 2 && (strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0)) {
		cmd_rmi_usage(stdout);
		return CLI_EXIT_OK;
	}
	if (argc < 2) {
		cmd_rmi_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if ((s = cli_store_open("rmi")) == NULL)
		return CLI_EXIT_ERROR;
	for (i = 1; i < argc; i++) {
		if (image_ref_parse(argv[i], &ref, err, sizeof(err)) != 0) {
			fprintf(stderr, "smx: rmi: %s\n", err);
			rc = CLI_EXIT_USAGE;
			continue;
		}
		image_ref_familiar(&ref, name, sizeof(name));
		if ((error = image_store_del_ref(s, &ref)) != 0) {
			if (error == -ENOENT)
				fprintf(stderr, "smx: rmi: no image %s (see "
				    "smx images)\n", argv[i]);
			else
				fprintf(stderr, "smx: rmi: %s: %s\n", name,
				    strerror(-error));
			if (rc == CLI_EXIT_OK)
				rc = CLI_EXIT_ERROR;
			continue;
		}
		printf("Untagged: %s\n", name);
	}
	image_store_close(s);
	return rc;
}
