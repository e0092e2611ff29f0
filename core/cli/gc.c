/*
 * smx gc: remove the blobs and unpacked trees no image reference reaches.
 */
#include <errno.h>
#include <string.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "image/image.h"

void
cmd_gc_usage(FILE *f)
{
	fprintf(f, "usage: smx gc\n\n"
	    "Remove blobs and unpacked root trees that no reference uses,\n"
	    "then print what was freed.  Exits 1 while a pull is running.\n");
}

int
cmd_gc(int argc, char **argv)
{
	struct image_store	*s;
	uint64_t		 bytes = 0;
	unsigned		 blobs = 0;
	char			 size[16];
	int			 error;

	if (argc == 2 && (strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0)) {
		cmd_gc_usage(stdout);
		return CLI_EXIT_OK;
	}
	if (argc != 1) {
		cmd_gc_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if ((s = cli_store_open("gc")) == NULL)
		return CLI_EXIT_ERROR;
	error = image_store_gc(s, &bytes, &blobs);
	image_store_close(s);
	if (error == -EBUSY) {
		fprintf(stderr, "smx: gc: a pull or unpack is using the "
		    "store; run smx gc again when it ends\n");
		return CLI_EXIT_ERROR;
	}
	cli_human_size(bytes, size, sizeof(size));
	printf("freed %u blob%s, %s\n", blobs, blobs == 1 ? "" : "s", size);
	if (error != 0) {
		fprintf(stderr, "smx: gc: incomplete: %s\n", strerror(-error));
		return CLI_EXIT_ERROR;
	}
	return CLI_EXIT_OK;
}
