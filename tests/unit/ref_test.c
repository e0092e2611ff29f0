/*
 * Unit test for image/ref.c: a table of references, valid ones with
 * their normalized and familiar forms, invalid ones with the word their
 * one-line reason must contain; registry mapping; digest checks.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "image/image.h"
#include "tests/tap.h"

#define D64	"0123456789abcdef0123456789abcdef" \
		"0123456789abcdef0123456789abcdef"
#define DG	"sha256:" D64

static const struct {
	const char	*in;
	const char	*full;		/* NULL: must be refused */
	const char	*familiar;	/* or, when refused, a reason word */
} refs[] = {
	{ "alpine", "docker.io/library/alpine:latest", "alpine:latest" },
	{ "alpine:3.19", "docker.io/library/alpine:3.19", "alpine:3.19" },
	{ "user/app", "docker.io/user/app:latest", "user/app:latest" },
	{ "user/app:1", "docker.io/user/app:1", "user/app:1" },
	{ "docker.io/alpine", "docker.io/library/alpine:latest",
	    "alpine:latest" },
	{ "docker.io/library/alpine:edge", "docker.io/library/alpine:edge",
	    "alpine:edge" },
	{ "index.docker.io/library/busybox",
	    "docker.io/library/busybox:latest", "busybox:latest" },
	{ "index.docker.io/user/x:y", "docker.io/user/x:y", "user/x:y" },
	{ "docker.io/library/a/b", "docker.io/library/a/b:latest",
	    "library/a/b:latest" },
	{ "localhost/x", "localhost/x:latest", "localhost/x:latest" },
	{ "localhost:5000/x:t", "localhost:5000/x:t", "localhost:5000/x:t" },
	{ "localhost:5000/x@" DG, "localhost:5000/x@" DG,
	    "localhost:5000/x@" DG },
	{ "registry.example.com:443/a/b/c:t",
	    "registry.example.com:443/a/b/c:t",
	    "registry.example.com:443/a/b/c:t" },
	{ "127.0.0.1:5000/img", "127.0.0.1:5000/img:latest",
	    "127.0.0.1:5000/img:latest" },
	{ "[::1]:5000/img:v", "[::1]:5000/img:v", "[::1]:5000/img:v" },
	{ "Example.COM/app", "Example.COM/app:latest",
	    "Example.COM/app:latest" },
	{ "my-reg.io/a_b/c__d/e--f/g.h:T_1.x-y",
	    "my-reg.io/a_b/c__d/e--f/g.h:T_1.x-y",
	    "my-reg.io/a_b/c__d/e--f/g.h:T_1.x-y" },
	{ "x@" DG, "docker.io/library/x@" DG, "x@" DG },
	{ "x:t@" DG, "docker.io/library/x:t@" DG, "x:t@" DG },
	{ "ghcr.io/o/r:_underscore", "ghcr.io/o/r:_underscore",
	    "ghcr.io/o/r:_underscore" },
	{ "a", "docker.io/library/a:latest", "a:latest" },
	{ "localhost:5000", "docker.io/library/localhost:5000",
	    "localhost:5000" },
	{ "0/1", "docker.io/0/1:latest", "0/1:latest" },
	/* refused */
	{ "", NULL, "empty" },
	{ "Alpine", NULL, "lowercase" },
	{ "user/App", NULL, "lowercase" },
	{ "localhost:5000/X:t", NULL, "lowercase" },
	{ "a//b", NULL, "empty path component" },
	{ "/a", NULL, "empty" },
	{ "a/", NULL, "empty path component" },
	{ "example.com/", NULL, "empty path component" },
	{ ":tag", NULL, "empty repository" },
	{ "x:", NULL, "tag" },
	{ "x:.t", NULL, "tag" },
	{ "x:-t", NULL, "tag" },
	{ "x:t!", NULL, "tag" },
	{ "x:" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaa", NULL, "tag" },
	{ "x@", NULL, "digest" },
	{ "x@sha256:abc", NULL, "digest" },
	{ "x@sha256:" "0123456789ABCDEF0123456789abcdef"
	    "0123456789abcdef0123456789abcdef", NULL, "digest" },
	{ "x@sha512:" D64 D64, NULL, "sha256" },
	{ "x@" DG "0", NULL, "digest" },
	{ "a b", NULL, "path components" },
	{ "a..b", NULL, "path components" },
	{ "a___b", NULL, "path components" },
	{ "-a", NULL, "path components" },
	{ "a-", NULL, "path components" },
	{ "_a", NULL, "path components" },
	{ "a/../b", NULL, "path components" },
	{ "-bad.com/x", NULL, "registry" },
	{ "bad-.com/x", NULL, "registry" },
	{ "a..com/x", NULL, "registry" },
	{ "host:/x", NULL, "registry" },
	{ "host:12345678/x", NULL, "registry" },
	{ "[zz]:5/x", NULL, "registry" },
	{ D64, NULL, "64 hex" },
	{ "x:a:b", NULL, "path components" },
};

static int
t_table(void)
{
	struct image_ref	r;
	char			err[600], full[IMAGE_REF_MAX + 1], fam[600];
	size_t			i;
	int			rc, failed = 0;

	for (i = 0; i < ARRAY_SIZE(refs); i++) {
		err[0] = '\0';
		rc = image_ref_parse(refs[i].in, &r, err, sizeof(err));
		if (refs[i].full == NULL) {
			if (rc != -EINVAL || strstr(err, refs[i].familiar) ==
			    NULL || strchr(err, '\n') != NULL) {
				tap_diag("\"%s\": rc %d, err \"%s\"",
				    refs[i].in, rc, err);
				failed++;
			}
			continue;
		}
		if (rc != 0) {
			tap_diag("\"%s\": refused: %s", refs[i].in, err);
			failed++;
			continue;
		}
		if (image_ref_format(&r, full, sizeof(full)) != 0 ||
		    image_ref_familiar(&r, fam, sizeof(fam)) != 0 ||
		    strcmp(full, refs[i].full) != 0 ||
		    strcmp(fam, refs[i].familiar) != 0) {
			tap_diag("\"%s\": got %s / %s", refs[i].in, full, fam);
			failed++;
		}
	}
	tap_diag("%zu references checked", ARRAY_SIZE(refs));
	return failed ? TAP_FAIL : TAP_PASS;
}

/* Normalizing twice changes nothing. */
static int
t_idempotent(void)
{
	struct image_ref	r, r2;
	char			a[IMAGE_REF_MAX + 1], b[IMAGE_REF_MAX + 1];
	size_t			i;

	for (i = 0; i < ARRAY_SIZE(refs); i++) {
		if (refs[i].full == NULL)
			continue;
		TAP_CHECK(image_ref_parse(refs[i].in, &r, NULL, 0) == 0);
		TAP_CHECK(image_ref_format(&r, a, sizeof(a)) == 0);
		TAP_CHECK(image_ref_parse(a, &r2, NULL, 0) == 0);
		TAP_CHECK(image_ref_format(&r2, b, sizeof(b)) == 0);
		TAP_CHECK(strcmp(a, b) == 0);
		TAP_CHECK(memcmp(&r, &r2, sizeof(r)) == 0);
	}
	return TAP_PASS;
}

static int
t_fields_and_registry(void)
{
	struct image_ref	r;
	char			small[8];

	TAP_CHECK(image_ref_parse("alpine", &r, NULL, 0) == 0);
	TAP_CHECK(strcmp(r.domain, "docker.io") == 0);
	TAP_CHECK(strcmp(r.path, "library/alpine") == 0);
	TAP_CHECK(strcmp(r.tag, "latest") == 0 && r.digest[0] == '\0');
	TAP_CHECK(strcmp(image_ref_registry(&r), "registry-1.docker.io") == 0);
	TAP_CHECK(image_ref_format(&r, small, sizeof(small)) ==
	    -ENAMETOOLONG);

	TAP_CHECK(image_ref_parse("x@" DG, &r, NULL, 0) == 0);
	TAP_CHECK(r.tag[0] == '\0' && strcmp(r.digest, DG) == 0);

	TAP_CHECK(image_ref_parse("localhost:5000/a/b:c", &r, NULL, 0) == 0);
	TAP_CHECK(strcmp(image_ref_registry(&r), "localhost:5000") == 0);
	TAP_CHECK(strcmp(r.path, "a/b") == 0 && strcmp(r.tag, "c") == 0);
	return TAP_PASS;
}

/* Over-long input: the whole reference and the name alone. */
static int
t_lengths(void)
{
	struct image_ref	r;
	char			s[1024], err[256];

	memset(s, 'a', sizeof(s));
	s[IMAGE_REF_MAX + 1] = '\0';
	TAP_CHECK(image_ref_parse(s, &r, err, sizeof(err)) == -EINVAL);
	TAP_CHECK(strstr(err, "longer than") != NULL);
	/* 255 is the longest normalized name docker accepts:
	 * "docker.io/u/" is 12 characters. */
	memcpy(s, "u/", 2);
	s[255 - 10] = '\0';
	TAP_CHECK(image_ref_parse(s, &r, err, sizeof(err)) == 0);
	TAP_CHECK(strlen(r.path) == 245);
	s[245] = 'a';
	s[246] = '\0';
	TAP_CHECK(image_ref_parse(s, &r, err, sizeof(err)) == -EINVAL);
	TAP_CHECK(strstr(err, "name longer") != NULL);
	/* Without a '/', "library/" is added first. */
	s[2 + 238] = '\0';
	TAP_CHECK(image_ref_parse(s + 2, &r, err, sizeof(err)) == -EINVAL);
	s[2 + 237] = '\0';
	TAP_CHECK(image_ref_parse(s + 2, &r, err, sizeof(err)) == 0);
	return TAP_PASS;
}

static int
t_digest_valid(void)
{
	TAP_CHECK(image_digest_valid(DG));
	TAP_CHECK(!image_digest_valid(NULL));
	TAP_CHECK(!image_digest_valid(""));
	TAP_CHECK(!image_digest_valid(D64));
	TAP_CHECK(!image_digest_valid("sha256:" D64 "a"));
	TAP_CHECK(!image_digest_valid("sha256:0123"));
	TAP_CHECK(!image_digest_valid("SHA256:" D64));
	TAP_CHECK(!image_digest_valid("sha256:" "0123456789ABCDEF0123456789abcdef"
	    "0123456789abcdef0123456789abcdef"));
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "reference table (valid and invalid)", t_table },
	{ "normalization is idempotent", t_idempotent },
	{ "fields, registry host, short buffer", t_fields_and_registry },
	{ "length limits", t_lengths },
	{ "digest syntax", t_digest_valid },
};

int
main(void)
{
	return tap_run(cases, ARRAY_SIZE(cases), 30);
}
