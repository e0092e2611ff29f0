/*
 * The record framing of hv state blobs, shared by the backends: a header
 * (magic, version, reserved) then records of u32 tag, u32 length and the
 * payload, all little-endian host order (x86 only).  Private to hv/.
 */
#ifndef SMX_HV_STATE_IMPL_H
#define SMX_HV_STATE_IMPL_H

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "core/base/base.h"

struct hv_blob_hdr {
	uint32_t	magic;
	uint16_t	version;
	uint16_t	reserved;
};

struct hv_rec_hdr {
	uint32_t	tag;
	uint32_t	len;
};

/* Append len bytes to *buf (*n used). */
static inline void
hv_blob_put(uint8_t **buf, size_t *n, const void *p, size_t len)
{
	*buf = xreallocarray(*buf, 1, *n + len);
	memcpy(*buf + *n, p, len);
	*n += len;
}

/* Append a blob header. */
static inline void
hv_blob_begin(uint8_t **buf, size_t *n, uint32_t magic, uint16_t version)
{
	struct hv_blob_hdr	h = { magic, version, 0 };

	hv_blob_put(buf, n, &h, sizeof h);
}

/* Append record `tag` with len bytes of p. */
static inline void
hv_blob_rec(uint8_t **buf, size_t *n, uint32_t tag, const void *p,
    size_t len)
{
	struct hv_rec_hdr	r = { tag, (uint32_t)len };

	hv_blob_put(buf, n, &r, sizeof r);
	hv_blob_put(buf, n, p, len);
}

/* Check the header: 0, -EPROTO for another magic or version, -EINVAL
 * when too short. */
static inline int
hv_blob_check(const uint8_t *buf, size_t len, uint32_t magic,
    uint16_t version)
{
	struct hv_blob_hdr	h;

	if (len < sizeof h)
		return -EINVAL;
	memcpy(&h, buf, sizeof h);
	if (h.magic != magic || h.version != version)
		return -EPROTO;
	return 0;
}

/*
 * Find record `tag`: its payload and length, or NULL.  -EINVAL in *err
 * when the framing is broken anywhere (a record running past the end).
 */
static inline const uint8_t *
hv_blob_find(const uint8_t *buf, size_t len, uint32_t tag, size_t *rlen,
    int *err)
{
	struct hv_rec_hdr	r;
	size_t			off = sizeof(struct hv_blob_hdr);
	const uint8_t		*found = NULL;

	*err = 0;
	while (off < len) {
		if (len - off < sizeof r) {
			*err = -EINVAL;
			return NULL;
		}
		memcpy(&r, buf + off, sizeof r);
		off += sizeof r;
		if (r.len > len - off) {
			*err = -EINVAL;
			return NULL;
		}
		if (r.tag == tag && found == NULL) {
			found = buf + off;
			*rlen = r.len;
		}
		off += r.len;
	}
	return found;
}

/* Copy record `tag` of exactly size bytes into out: 0, -ENOENT when
 * absent, -EINVAL when framed badly or of another size. */
static inline int
hv_blob_get(const uint8_t *buf, size_t len, uint32_t tag, void *out,
    size_t size)
{
	const uint8_t	*p;
	size_t		 rlen = 0;
	int		 err;

	p = hv_blob_find(buf, len, tag, &rlen, &err);
	if (err != 0)
		return err;
	if (p == NULL)
		return -ENOENT;
	if (rlen != size)
		return -EINVAL;
	memcpy(out, p, size);
	return 0;
}

#endif /* SMX_HV_STATE_IMPL_H */
