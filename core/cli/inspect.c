/*
 * smx inspect: an image's manifest and config as one JSON document.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "image/image.h"

#define META_MAX	(4u << 20)

void
cmd_inspect_usage(FILE *f)
{
	fprintf(f, "usage: smx inspect [--rootfs] REF\n\n"
	    "Print {\"ref\", \"digest\", \"manifest\", \"config\"} of a stored "
	    "image as\nJSON.  --rootfs instead prints the directory of the "
	    "image's unpacked\nroot tree, unpacking its layers first when "
	    "needed.  Exits 1 when the\nimage is not stored, 2 on a "
	    "malformed REF.\n");
}

/* A blob of the store parsed as JSON; NULL with a message. */
static cJSON *
load(struct image_store *s, const char *digest, const char *what)
{
	cJSON	*j;
	uint8_t	*buf;
	size_t	 len;
	int	 error;

	if ((error = image_store_get_blob(s, digest, META_MAX, &buf,
	    &len)) != 0) {
		fprintf(stderr, "smx: inspect: %s %s: %s (pull the image "
		    "again)\n", what, digest, strerror(-error));
		return NULL;
	}
	j = cJSON_ParseWithLength((const char *)buf, len);
	free(buf);
	if (j == NULL)
		fprintf(stderr, "smx: inspect: %s %s is not JSON\n", what,
		    digest);
	return j;
}

/* --rootfs: unpack the image's layers (or find them unpacked) and print
 * the tree's directory. */
static int
inspect_rootfs(const char *str)
{
	struct image_store	*s;
	struct image_ref	 ref;
	char			 digest[72], path[PATH_MAX], err[512];
	int			 rc;

	if (str[0] == '-') {
		cmd_inspect_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if ((s = cli_store_open("inspect")) == NULL)
		return CLI_EXIT_ERROR;
	if ((rc = cli_image_resolve(s, "inspect", str, &ref, digest)) !=
	    CLI_EXIT_OK)
		goto out;
	if (image_rootfs_get(s, digest, path, sizeof(path), NULL, err,
	    sizeof(err)) != 0) {
		fprintf(stderr, "smx: inspect: %s: %s\n", str, err);
		rc = CLI_EXIT_ERROR;
		goto out;
	}
	printf("%s\n", path);
out:
	image_store_close(s);
	return rc;
}

int
cmd_inspect(int argc, char **argv)
{
	struct image_store	*s;
	struct image_ref	 ref;
	const cJSON		*cd;
	cJSON			*doc, *m, *c = NULL;
	char			 digest[72], name[IMAGE_REF_MAX], *out;
	int			 rc;

	if (argc == 2 && (strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0)) {
		cmd_inspect_usage(stdout);
		return CLI_EXIT_OK;
	}
	if (argc == 3 && strcmp(argv[1], "--rootfs") == 0)
		return inspect_rootfs(argv[2]);
	if (argc != 2 || argv[1][0] == '-') {
		cmd_inspect_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if ((s = cli_store_open("inspect")) == NULL)
		return CLI_EXIT_ERROR;
	if ((rc = cli_image_resolve(s, "inspect", argv[1], &ref, digest)) !=
	    CLI_EXIT_OK)
		goto out;
	rc = CLI_EXIT_ERROR;
	if ((m = load(s, digest, "manifest")) == NULL)
		goto out;
	cd = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(m, "config"), "digest");
	/* An index has no config: print the manifest alone. */
	if (cJSON_IsString(cd) && image_digest_valid(cd->valuestring) &&
	    (c = load(s, cd->valuestring, "config")) == NULL) {
		cJSON_Delete(m);
		goto out;
	}
	image_ref_format(&ref, name, sizeof(name));
	doc = cJSON_CreateObject();
	cJSON_AddStringToObject(doc, "ref", name);
	cJSON_AddStringToObject(doc, "digest", digest);
	cJSON_AddItemToObject(doc, "manifest", m);
	if (c != NULL)
		cJSON_AddItemToObject(doc, "config", c);
	if ((out = cJSON_Print(doc)) != NULL) {
		printf("%s\n", out);
		free(out);
		rc = CLI_EXIT_OK;
	}
	cJSON_Delete(doc);
out:
	image_store_close(s);
	return rc;
}
