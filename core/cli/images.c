/*
 * smx images: the stored images as a table (REPOSITORY TAG DIGEST SIZE
 * CREATED) or JSON lines.  Also the store helpers the image commands
 * share.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "image/image.h"

#define META_MAX	(4u << 20)

struct image_store *
cli_store_open(const char *cmd)
{
	struct image_store	*s;
	char			 err[512];

	if (image_store_open(NULL, &s, err, sizeof(err)) != 0) {
		fprintf(stderr, "smx: %s: %s\n", cmd, err);
		return NULL;
	}
	return s;
}

int
cli_image_resolve(struct image_store *s, const char *cmd, const char *str,
    struct image_ref *ref, char digest[72])
{
	char	err[256];

	if (image_ref_parse(str, ref, err, sizeof(err)) != 0) {
		fprintf(stderr, "smx: %s: %s\n", cmd, err);
		return CLI_EXIT_USAGE;
	}
	if (image_store_get_ref(s, ref, digest, 72) == 0)
		return CLI_EXIT_OK;
	/* name@digest pulled under a tag: the manifest is still here. */
	if (ref->digest[0] != '\0' && image_store_has_blob(s, ref->digest)) {
		snprintf(digest, 72, "%s", ref->digest);
		return CLI_EXIT_OK;
	}
	fprintf(stderr, "smx: %s: no image %s (see smx images; smx pull "
	    "fetches it)\n", cmd, str);
	return CLI_EXIT_ERROR;
}

void
cmd_images_usage(FILE *f)
{
	fprintf(f, "usage: smx images [--json]\n\n"
	    "List the stored images: REPOSITORY TAG DIGEST SIZE CREATED.\n"
	    "DIGEST is the start of the manifest digest, SIZE the compressed\n"
	    "size of config and layers.  --json prints one object per line\n"
	    "with the full digest, the size in bytes and the created time.\n");
}

struct row {
	char		 repo[IMAGE_REF_MAX];
	char		 tag[160];
	char		 digest[72];
	uint64_t	 size;
	char		 created[64];	/* RFC 3339 from the config, or "" */
};

struct rows {
	struct image_store	*s;
	struct row		*v;
	size_t			 n;
};

static const char *
json_str(const cJSON *o, const char *key)
{
	const cJSON	*v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Size and creation time from the manifest and its config. */
static void
row_details(struct image_store *s, struct row *r)
{
	const cJSON	*cfg, *l, *sz;
	const char	*cd, *created;
	cJSON		*m = NULL, *c = NULL;
	uint8_t		*buf;
	size_t		 len;

	if (image_store_get_blob(s, r->digest, META_MAX, &buf, &len) == 0) {
		m = cJSON_ParseWithLength((const char *)buf, len);
		free(buf);
	}
	cfg = cJSON_GetObjectItemCaseSensitive(m, "config");
	sz = cJSON_GetObjectItemCaseSensitive(cfg, "size");
	if (cJSON_IsNumber(sz))
		r->size += (uint64_t)sz->valuedouble;
	cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(m, "layers")) {
		sz = cJSON_GetObjectItemCaseSensitive(l, "size");
		if (cJSON_IsNumber(sz))
			r->size += (uint64_t)sz->valuedouble;
	}
	if ((cd = json_str(cfg, "digest")) != NULL &&
	    image_digest_valid(cd) &&
	    image_store_get_blob(s, cd, META_MAX, &buf, &len) == 0) {
		c = cJSON_ParseWithLength((const char *)buf, len);
		free(buf);
		if ((created = json_str(c, "created")) != NULL)
			snprintf(r->created, sizeof(r->created), "%s",
			    created);
	}
	cJSON_Delete(c);
	cJSON_Delete(m);
}

static int
list_cb(const char *refstr, const char *digest, void *arg)
{
	struct rows		*rs = arg;
	struct image_ref	 ref;
	struct row		*r;
	char			 err[128], fam[IMAGE_REF_MAX], *p;

	if (image_ref_parse(refstr, &ref, err, sizeof(err)) != 0)
		return 0;
	rs->v = xreallocarray(rs->v, rs->n + 1, sizeof(*rs->v));
	r = &rs->v[rs->n++];
	memset(r, 0, sizeof(*r));
	/* The familiar name without its tag or digest. */
	ref.tag[0] = '\0';
	ref.digest[0] = '\0';
	image_ref_familiar(&ref, fam, sizeof(fam));
	if ((p = strchr(fam, '@')) != NULL)
		*p = '\0';
	snprintf(r->repo, sizeof(r->repo), "%s", fam);
	if (image_ref_parse(refstr, &ref, err, sizeof(err)) != 0)
		return 0;
	snprintf(r->tag, sizeof(r->tag), "%s", ref.tag[0] != '\0' ?
	    ref.tag : "<none>");
	snprintf(r->digest, sizeof(r->digest), "%s", digest);
	row_details(rs->s, r);
	return 0;
}

static int
row_cmp(const void *a, const void *b)
{
	const struct row	*x = a, *y = b;
	int			 c;

	if ((c = strcmp(x->repo, y->repo)) != 0)
		return c;
	return strcmp(x->tag, y->tag);
}

/* "2 hours ago", as docker says it; "" when unknown. */
static void
ago(const char *rfc3339, char *buf, size_t len)
{
	static const struct { uint64_t secs; const char *unit; } u[] = {
		{ 365 * 86400, "year" }, { 30 * 86400, "month" },
		{ 7 * 86400, "week" }, { 86400, "day" }, { 3600, "hour" },
		{ 60, "minute" }, { 1, "second" },
	};
	struct tm	tm;
	time_t		t, now = time(NULL);
	uint64_t	d, n;
	size_t		i;

	memset(&tm, 0, sizeof(tm));
	snprintf(buf, len, "N/A");
	/* Fractions and zone offsets do not matter at this precision. */
	if (rfc3339[0] == '\0' ||
	    strptime(rfc3339, "%Y-%m-%dT%H:%M:%S", &tm) == NULL ||
	    (t = timegm(&tm)) == (time_t)-1)
		return;
	if (t > now) {
		snprintf(buf, len, "Less than a second ago");
		return;
	}
	d = now - t;
	for (i = 0; i < ARRAY_SIZE(u); i++) {
		if (d < u[i].secs)
			continue;
		n = d / u[i].secs;
		if (n == 1)
			snprintf(buf, len, "%s %s ago", u[i].secs == 3600 ?
			    "About an" : "About a", u[i].unit);
		else
			snprintf(buf, len, "%llu %ss ago",
			    (unsigned long long)n, u[i].unit);
		return;
	}
	snprintf(buf, len, "Less than a second ago");
}

int
cmd_images(int argc, char **argv)
{
	static const struct option	longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct rows	 rs = { 0 };
	struct row	*r;
	cJSON		*o;
	char		 size[16], when[64], *line;
	bool		 json = false;
	int		 ch, wrepo = 10, wtag = 3, error;
	size_t		 i;

	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'j':
			json = true;
			break;
		case 'h':
			cmd_images_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_images_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		cmd_images_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if ((rs.s = cli_store_open("images")) == NULL)
		return CLI_EXIT_ERROR;
	error = image_store_list_refs(rs.s, list_cb, &rs);
	image_store_close(rs.s);
	if (error != 0) {
		fprintf(stderr, "smx: images: cannot list the refs of %s: "
		    "%s\n", smx_home(), strerror(-error));
		free(rs.v);
		return CLI_EXIT_ERROR;
	}
	if (rs.n > 0)
		qsort(rs.v, rs.n, sizeof(*rs.v), row_cmp);
	for (i = 0; i < rs.n; i++) {
		if ((int)strlen(rs.v[i].repo) > wrepo)
			wrepo = strlen(rs.v[i].repo);
		if ((int)strlen(rs.v[i].tag) > wtag)
			wtag = strlen(rs.v[i].tag);
	}
	if (!json)
		printf("%-*s   %-*s   %-12s   %-8s   %s\n", wrepo,
		    "REPOSITORY", wtag, "TAG", "DIGEST", "SIZE", "CREATED");
	for (i = 0; i < rs.n; i++) {
		r = &rs.v[i];
		if (json) {
			o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "repository", r->repo);
			cJSON_AddStringToObject(o, "tag", r->tag);
			cJSON_AddStringToObject(o, "digest", r->digest);
			cJSON_AddNumberToObject(o, "size", (double)r->size);
			cJSON_AddStringToObject(o, "created", r->created);
			if ((line = cJSON_PrintUnformatted(o)) != NULL)
				printf("%s\n", line);
			free(line);
			cJSON_Delete(o);
			continue;
		}
		cli_human_size(r->size, size, sizeof(size));
		ago(r->created, when, sizeof(when));
		printf("%-*s   %-*s   %.12s   %-8s   %s\n", wrepo, r->repo,
		    wtag, r->tag, r->digest + 7, size, when);
	}
	free(rs.v);
	return CLI_EXIT_OK;
}
