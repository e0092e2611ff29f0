/*
 * Image references, parsed and normalized the way docker does (the
 * grammar of distribution/reference: reference.go and normalize.go), so
 * that "alpine", "docker.io/library/alpine:latest" and
 * "index.docker.io/library/alpine" name one image.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "image/image.h"

#define DEFAULT_DOMAIN	"docker.io"
#define LEGACY_DOMAIN	"index.docker.io"
#define DEFAULT_REPO	"library/"
#define DEFAULT_TAG	"latest"
#define NAME_MAX_TOTAL	255	/* docker's NameTotalLengthMax */

static bool
is_lower_alnum(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool
is_alnum(int c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool
is_hex(int c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Write "bad reference "s": <why>" into err; always -EINVAL. */
static int PRINTF(4, 5)
bad(char *err, size_t errlen, const char *s, const char *fmt, ...)
{
	char	why[160];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "bad image reference \"%.80s%s\": %s",
		    s, strlen(s) > 80 ? "..." : "", why);
	return -EINVAL;
}

/* dst = a + b when it fits (lengths are checked by the caller). */
static void
join(char *dst, size_t size, const char *a, const char *b)
{
	size_t	la = strlen(a), lb = strlen(b);

	if (la + lb >= size)
		la = lb = 0;
	memcpy(dst, a, la);
	memcpy(dst + la, b, lb);
	dst[la + lb] = '\0';
}

bool
image_digest_valid(const char *d)
{
	size_t	i;

	if (d == NULL || strncmp(d, "sha256:", 7) != 0)
		return false;
	for (i = 0; i < 64; i++)
		if (!is_hex(d[7 + i]))
			return false;
	return d[7 + 64] == '\0';
}

/* A path component: [a-z0-9]+ joined by '.', '_', '__' or '-'+.  Returns
 * NULL when good, else what is wrong. */
static const char *
component_error(const char *c, size_t len)
{
	size_t	i = 0, n;

	if (len == 0)
		return "empty path component";
	for (n = 0; n < len; n++)
		if (c[n] >= 'A' && c[n] <= 'Z')
			return "repository name must be lowercase";
	for (;;) {
		if (i >= len || !is_lower_alnum(c[i]))
			goto bad;
		while (i < len && is_lower_alnum(c[i]))
			i++;
		if (i == len)
			return NULL;
		if (c[i] == '.')
			i++;
		else if (c[i] == '_')
			i += i + 1 < len && c[i + 1] == '_' ? 2 : 1;
		else if (c[i] == '-')
			while (i < len && c[i] == '-')
				i++;
		else
			goto bad;
	}
bad:
	return "path components are lowercase letters and digits joined by "
	    "'.', '_', '__' or '-'";
}

/* A registry host: DNS-like labels or a bracketed IPv6 address, then an
 * optional :port. */
static bool
domain_valid(const char *d)
{
	const char	*p = d, *start;

	if (*p == '[') {
		for (p++, start = p; is_hex(*p) || *p == ':' ||
		    (*p >= 'A' && *p <= 'F'); p++)
			;
		if (p == start || *p++ != ']')
			return false;
	} else {
		for (;;) {
			if (!is_alnum(*p))
				return false;
			while (is_alnum(*p) || *p == '-')
				p++;
			if (p[-1] == '-')
				return false;
			if (*p != '.')
				break;
			p++;
		}
	}
	if (*p == ':') {
		for (start = ++p; *p >= '0' && *p <= '9'; p++)
			;
		if (p == start || p - start > 5)
			return false;
	}
	return *p == '\0';
}

/* [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} */
static bool
tag_valid(const char *t)
{
	size_t	i;

	if (!is_alnum(t[0]) && t[0] != '_')
		return false;
	for (i = 1; t[i] != '\0'; i++)
		if ((!is_alnum(t[i]) && t[i] != '_' && t[i] != '.' &&
		    t[i] != '-') || i >= 128)
			return false;
	return true;
}

int
image_ref_parse(const char *s, struct image_ref *r, char *err, size_t errlen)
{
	char		 buf[IMAGE_REF_MAX + 1], *name, *at, *colon, *slash;
	char		*rest, *tag = NULL, *digest = NULL;
	const char	*why, *c, *e;
	size_t		 len;

	memset(r, 0, sizeof(*r));
	if (s == NULL || *s == '\0')
		return bad(err, errlen, "", "empty reference");
	if ((len = strlen(s)) > IMAGE_REF_MAX)
		return bad(err, errlen, s, "longer than %d characters",
		    IMAGE_REF_MAX);
	memcpy(buf, s, len + 1);
	name = buf;

	if ((at = strchr(buf, '@')) != NULL) {
		*at = '\0';
		digest = at + 1;
		if (strchr(digest, ':') != NULL &&
		    strncmp(digest, "sha256:", 7) != 0)
			return bad(err, errlen, s,
			    "only sha256 digests are supported");
		if (!image_digest_valid(digest))
			return bad(err, errlen, s,
			    "digest must be sha256: and 64 lowercase hex "
			    "digits");
	}
	/* The tag is after the last ':' that follows the last '/', so a
	 * registry port is never taken for a tag. */
	slash = strrchr(name, '/');
	if ((colon = strrchr(slash != NULL ? slash : name, ':')) != NULL) {
		*colon = '\0';
		tag = colon + 1;
		if (!tag_valid(tag))
			return bad(err, errlen, s, "tag must match "
			    "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
	}
	if (*name == '\0')
		return bad(err, errlen, s, "empty repository name");
	if (strlen(name) > NAME_MAX_TOTAL)
		return bad(err, errlen, s, "name longer than %d characters",
		    NAME_MAX_TOTAL);

	/* A first component with '.' or ':', or "localhost", is a
	 * registry; anything else is a docker.io repository. */
	slash = strchr(name, '/');
	if (slash != NULL && (memchr(name, '.', slash - name) != NULL ||
	    memchr(name, ':', slash - name) != NULL ||
	    (slash - name == 9 && strncmp(name, "localhost", 9) == 0))) {
		*slash = '\0';
		if (!domain_valid(name))
			return bad(err, errlen, s, "registry \"%s\" is not "
			    "a host name or [ipv6] with an optional :port",
			    name);
		if (strcmp(name, LEGACY_DOMAIN) == 0)
			name = DEFAULT_DOMAIN;
		join(r->domain, sizeof(r->domain), name, "");
		rest = slash + 1;
	} else {
		snprintf(r->domain, sizeof(r->domain), "%s", DEFAULT_DOMAIN);
		rest = name;
	}

	for (c = rest;; c = e + 1) {
		e = strchrnul(c, '/');
		if ((why = component_error(c, e - c)) != NULL)
			return bad(err, errlen, s, "%s", why);
		if (*e == '\0')
			break;
	}
	len = strlen(rest);
	if (len == 64 && strspn(rest, "0123456789abcdef") == 64)
		return bad(err, errlen, s, "a repository name cannot be 64 "
		    "hex digits (use name@sha256:<hex> for a digest)");
	if (strcmp(r->domain, DEFAULT_DOMAIN) == 0 &&
	    strchr(rest, '/') == NULL) {
		if (strlen(DEFAULT_REPO) + len >= sizeof(r->path))
			return bad(err, errlen, s, "name longer than %d "
			    "characters", NAME_MAX_TOTAL);
		join(r->path, sizeof(r->path), DEFAULT_REPO, rest);
	} else
		join(r->path, sizeof(r->path), rest, "");

	/* docker limits the normalized name (domain/path). */
	if (strlen(r->domain) + 1 + strlen(r->path) > NAME_MAX_TOTAL)
		return bad(err, errlen, s, "name longer than %d characters "
		    "once normalized", NAME_MAX_TOTAL);
	if (tag != NULL)
		snprintf(r->tag, sizeof(r->tag), "%s", tag);
	else if (digest == NULL)
		snprintf(r->tag, sizeof(r->tag), "%s", DEFAULT_TAG);
	if (digest != NULL)
		snprintf(r->digest, sizeof(r->digest), "%s", digest);
	return 0;
}

/* Print prefix, path and the tag/digest suffixes; -ENAMETOOLONG when
 * buf is too small. */
static int
format(const struct image_ref *r, const char *domain, const char *path,
    char *buf, size_t len)
{
	int	n;

	n = snprintf(buf, len, "%s%s%s%s%s", domain, *domain ? "/" : "",
	    path, *r->tag ? ":" : "", r->tag);
	if (n >= 0 && (size_t)n < len && *r->digest)
		n += snprintf(buf + n, len - n, "@%s", r->digest);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

int
image_ref_format(const struct image_ref *r, char *buf, size_t len)
{
	return format(r, r->domain, r->path, buf, len);
}

int
image_ref_familiar(const struct image_ref *r, char *buf, size_t len)
{
	const char	*path = r->path;

	if (strcmp(r->domain, DEFAULT_DOMAIN) != 0)
		return format(r, r->domain, path, buf, len);
	if (strncmp(path, DEFAULT_REPO, strlen(DEFAULT_REPO)) == 0 &&
	    strchr(path + strlen(DEFAULT_REPO), '/') == NULL)
		path += strlen(DEFAULT_REPO);
	return format(r, "", path, buf, len);
}

const char *
image_ref_registry(const struct image_ref *r)
{
	if (strcmp(r->domain, DEFAULT_DOMAIN) == 0)
		return "registry-1.docker.io";
	return r->domain;
}
