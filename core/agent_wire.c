/*
 * Frame and field-list codec of the agent protocol (see agent_wire.h).
 * Kept free of the rest of the project: tools/smx-init links it
 * statically with nothing but libc.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_wire.h"

static void
put_le32(unsigned char *p, uint32_t v)
{
	p[0] = v & 0xff;
	p[1] = (v >> 8) & 0xff;
	p[2] = (v >> 16) & 0xff;
	p[3] = (v >> 24) & 0xff;
}

static uint32_t
get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

/* Write all of buf; 0 or -errno. */
static int
write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read exactly len bytes; returns bytes read (< len only at EOF) or -errno. */
static ssize_t
read_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		n = read(fd, p + got, len - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

int
agent_write_frame(int fd, uint32_t type, const void *payload, size_t len)
{
	unsigned char hdr[AGENT_HDR_LEN];
	int rc;

	if (len > AGENT_MAX_FRAME)
		return -EMSGSIZE;
	put_le32(hdr, type);
	put_le32(hdr + 4, (uint32_t)len);
	/* Two writes: small frames are the rare case worth merging. */
	if (len > 0 && len <= 4096) {
		unsigned char one[AGENT_HDR_LEN + 4096];

		memcpy(one, hdr, sizeof(hdr));
		memcpy(one + sizeof(hdr), payload, len);
		return write_all(fd, one, sizeof(hdr) + len);
	}
	if ((rc = write_all(fd, hdr, sizeof(hdr))) < 0)
		return rc;
	if (len > 0)
		return write_all(fd, payload, len);
	return 0;
}

int
agent_read_frame(int fd, uint32_t *type, void **payload, size_t *len)
{
	unsigned char hdr[AGENT_HDR_LEN];
	uint32_t n;
	ssize_t got;
	char *buf;

	got = read_all(fd, hdr, sizeof(hdr));
	if (got < 0)
		return (int)got;
	if (got == 0)
		return -EPIPE;
	if ((size_t)got < sizeof(hdr))
		return -EPROTO;
	n = get_le32(hdr + 4);
	if (n > AGENT_MAX_FRAME)
		return -EPROTO;
	if ((buf = malloc((size_t)n + 1)) == NULL)
		return -ENOMEM;
	got = read_all(fd, buf, n);
	if (got < 0 || (size_t)got < n) {
		free(buf);
		return got < 0 ? (int)got : -EPROTO;
	}
	buf[n] = '\0';
	*type = get_le32(hdr);
	*payload = buf;
	*len = n;
	return 0;
}

void
agent_fields_add(struct agent_fields *f, const char *key, const char *fmt,
    ...)
{
	va_list ap;
	size_t klen = strlen(key), need;
	int vlen;
	char *nb;

	va_start(ap, fmt);
	vlen = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (vlen < 0)
		abort();
	need = f->len + klen + 1 + (size_t)vlen + 1;
	if (need > f->cap) {
		size_t cap = f->cap ? f->cap : 256;

		while (cap < need)
			cap *= 2;
		if ((nb = realloc(f->buf, cap)) == NULL)
			abort();
		f->buf = nb;
		f->cap = cap;
	}
	memcpy(f->buf + f->len, key, klen);
	f->buf[f->len + klen] = '=';
	va_start(ap, fmt);
	vsnprintf(f->buf + f->len + klen + 1, (size_t)vlen + 1, fmt, ap);
	va_end(ap);
	f->len = need;
}

void
agent_fields_free(struct agent_fields *f)
{
	free(f->buf);
	f->buf = NULL;
	f->len = f->cap = 0;
}

const char *
agent_field_next(const void *payload, size_t len, const char *key,
    const char *prev)
{
	const char *p = payload, *end = p + len, *e;
	size_t klen = strlen(key);

	if (payload == NULL)
		return NULL;
	if (prev != NULL) {
		/* Resume after the field prev (a value) belongs to. */
		if (prev < p || prev > end)
			return NULL;
		e = memchr(prev, '\0', (size_t)(end - prev));
		if (e == NULL)
			return NULL;
		p = e + 1;
	}
	while (p < end) {
		e = memchr(p, '\0', (size_t)(end - p));
		/* A last field without its NUL: buf[len] is one. */
		if (e == NULL)
			e = end;
		if ((size_t)(e - p) > klen && memcmp(p, key, klen) == 0 &&
		    p[klen] == '=')
			return p + klen + 1;
		p = e + 1;
	}
	return NULL;
}

const char *
agent_field(const void *payload, size_t len, const char *key)
{
	return agent_field_next(payload, len, key, NULL);
}
