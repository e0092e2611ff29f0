/*
 * Helper of tests/libsmx-image.test: smx_image_open() on the command
 * line.  Prints "ref REF" and "digest DIGEST", or "error -ERRNO: REASON"
 * and exits 1.
 *
 *	image_open [-n | -a] [-i] REF	(-n never pull, -a always pull,
 *					 -i plain HTTP allowed)
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/smx.h"

int
main(int argc, char **argv)
{
	struct smx_image_opts	 o;
	struct smx		*smx;
	struct smx_image	*img;
	char			 err[512] = "";
	int			 ch, error;

	smx_image_opts_init(&o);
	while ((ch = getopt(argc, argv, "ani")) != -1) {
		switch (ch) {
		case 'a':
			o.pull = SMX_PULL_ALWAYS;
			break;
		case 'n':
			o.pull = SMX_PULL_NEVER;
			break;
		case 'i':
			o.insecure = 1;
			break;
		default:
			return 2;
		}
	}
	if (optind + 1 != argc)
		return 2;
	if (smx_open(&smx, 0) != 0)
		return 1;
	if ((error = smx_image_open(smx, argv[optind], &o, &img, err,
	    sizeof err)) != 0) {
		printf("error %d: %s\n", error, err);
		smx_close(smx);
		return 1;
	}
	printf("ref %s\ndigest %s\n", smx_image_ref(img),
	    smx_image_digest(img));
	smx_image_close(img);
	smx_close(smx);
	return 0;
}
