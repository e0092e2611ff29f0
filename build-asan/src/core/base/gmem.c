/*
 * The guest-memory accessor.  Every guest physical address that comes
 * from the guest (descriptors, boot tables, FUSE requests) is turned into
 * a host pointer here and nowhere else.
 */
#include <errno.h>
#include <string.h>

#include "core/base/base.h"

int
gmem_add(struct gmem *m, uint64_t gpa, uint64_t size, void *hva)
{
	unsigned	i;

	if (size == 0 || hva == NULL || gpa + size < gpa)
		return -EINVAL;
	if (m->nr == GMEM_MAX_REGIONS)
		return -ENOSPC;
	for (i = 0; i < m->nr; i++) {
		/* Regions must not overlap. */
		if (gpa < m->r[i].gpa + m->r[i].size &&
		    m->r[i].gpa < gpa + size)
			return -EEXIST;
	}
	m->r[m->nr].gpa = gpa;
	m->r[m->nr].size = size;
	m->r[m->nr].hva = hva;
	m->nr++;
	return 0;
}

void *
gmem_ptr(const struct gmem *m, uint64_t gpa, uint64_t len)
{
	const struct gmem_region	*r;
	unsigned			 i;
	uint64_t			 off;

	for (i = 0; i < m->nr; i++) {
		r = &m->r[i];
		if (gpa < r->gpa)
			continue;
		off = gpa - r->gpa;
		/* Written so that no sum can wrap: off < size, then the
		 * remaining room is size - off. */
		if (off >= r->size)
			continue;
		if (len > r->size - off)
			return NULL;
		return r->hva + off;
	}
	return NULL;
}

int
gmem_read(const struct gmem *m, uint64_t gpa, void *dst, size_t len)
{
	void	*p;

	if ((p = gmem_ptr(m, gpa, len)) == NULL)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}

int
gmem_write(const struct gmem *m, uint64_t gpa, const void *src, size_t len)
{
	void	*p;

	if ((p = gmem_ptr(m, gpa, len)) == NULL)
		return -EFAULT;
	memcpy(p, src, len);
	return 0;
}
