/*
 * Snapshot export and import: one zstd stream holding
 *
 *   magic "SMXEXPT\0", u32 version, u32 reserved, u64 state length,
 *   u64 memory length, the state file, the memory file, and the SHA-256
 *   of everything before it (32 bytes)
 *
 * Import writes the memory sparse again, checks the SHA-256, then checks
 * the snapshot as a restore would and refuses one whose guest saw CPU
 * features this host lacks.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "hv/hv.h"
#include "snapshot/snapshot.h"
#include "snapshot/snapshot_impl.h"

#define EXPORT_MAGIC	"SMXEXPT"
#define EXPORT_VERSION	1
#define IO_CHUNK	(1U << 20)
#define PAGE		4096U

struct export_hdr {
	char		magic[8];
	uint32_t	version;
	uint32_t	reserved;
	uint64_t	state_len;
	uint64_t	mem_len;
};

/* Compress [p, p + len) into f (end: finish the frame). */
static int
zwrite(ZSTD_CCtx *z, FILE *f, const void *p, size_t len, bool end,
    struct sha256_ctx *h)
{
	uint8_t		out[64 << 10];
	ZSTD_inBuffer	in = { p, len, 0 };
	ZSTD_outBuffer	ob;
	size_t		left;

	if (h != NULL)
		sha256_update(h, p, len);
	do {
		ob.dst = out;
		ob.size = sizeof(out);
		ob.pos = 0;
		left = ZSTD_compressStream2(z, &ob, &in, end ? ZSTD_e_end :
		    ZSTD_e_continue);
		if (ZSTD_isError(left))
			return -EIO;
		if (ob.pos != 0 && fwrite(out, 1, ob.pos, f) != ob.pos)
			return -errno;
	} while (in.pos < in.size || (end && left != 0));
	return 0;
}

int
snapshot_export(const char *dir, const char *file, char *err, size_t errlen)
{
	struct export_hdr	 h;
	struct sha256_ctx	 sha;
	uint8_t			 digest[SHA256_LEN];
	uint8_t			*state = NULL, *mem = MAP_FAILED;
	size_t			 slen = 0;
	uint64_t		 mib, off, n;
	char			*path;
	ZSTD_CCtx		*z = NULL;
	FILE			*f = NULL;
	struct snap_state	 st;
	bool			 diff;
	int			 fd, rc;

	if ((rc = snapshot_check(dir, false, &mib, NULL, err, errlen)) != 0)
		return rc;
	/* A diff's pages mean nothing without its base on the other
	 * host, so only full snapshots travel. */
	if ((rc = snap_state_read(dir, &st, err, errlen)) != 0)
		return rc;
	diff = st.have_diff;
	snap_state_free(&st);
	if (diff) {
		snprintf(err, errlen, "%s is a diff snapshot: export a full "
		    "snapshot (restore the diff, snapshot it without --diff)",
		    dir);
		return -EINVAL;
	}
	xasprintf(&path, "%s/%s", dir, SNAPSHOT_STATE_FILE);
	rc = read_file(path, SNAP_STATE_MAX, &state, &slen);
	free(path);
	if (rc != 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(-rc));
		return rc;
	}
	xasprintf(&path, "%s/%s", dir, SNAPSHOT_MEMORY_FILE);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) != -1) {
		mem = mmap(NULL, mib << 20, PROT_READ, MAP_PRIVATE, fd, 0);
		close(fd);
	}
	if (mem == MAP_FAILED) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if ((f = fopen(file, "we")) == NULL) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", file, strerror(errno));
		goto out;
	}
	z = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, 3);
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, EXPORT_MAGIC, sizeof(h.magic));
	h.version = EXPORT_VERSION;
	h.state_len = slen;
	h.mem_len = mib << 20;
	sha256_init(&sha);
	if ((rc = zwrite(z, f, &h, sizeof(h), false, &sha)) != 0 ||
	    (rc = zwrite(z, f, state, slen, false, &sha)) != 0)
		goto werr;
	for (off = 0; off < h.mem_len; off += n) {
		n = MIN(IO_CHUNK, h.mem_len - off);
		if ((rc = zwrite(z, f, mem + off, n, false, &sha)) != 0)
			goto werr;
	}
	sha256_final(&sha, digest);
	if ((rc = zwrite(z, f, digest, sizeof(digest), true, NULL)) != 0)
		goto werr;
	if (fclose(f) != 0) {
		f = NULL;
		rc = -errno;
		goto werr;
	}
	f = NULL;
	rc = 0;
	goto out;
werr:
	snprintf(err, errlen, "writing %s: %s", file, strerror(-rc));
	unlink(file);
out:
	if (f != NULL)
		fclose(f);
	ZSTD_freeCCtx(z);
	if (mem != MAP_FAILED)
		munmap(mem, mib << 20);
	free(path);
	free(state);
	return rc;
}

/* The import's parser: bytes routed to header, state, memory, trailer. */
struct importer {
	struct export_hdr	 h;
	uint64_t		 pos;		/* stream offset */
	uint8_t			*state;
	int			 mem_fd;
	uint8_t			 page[PAGE];
	uint8_t			 trailer[SHA256_LEN];
	struct sha256_ctx	 sha;
	bool			 bad;
};

static bool
all_zero(const uint8_t *p, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/* Route n bytes; -EINVAL when the stream is not an export. */
static int
import_bytes(struct importer *im, const uint8_t *p, size_t n)
{
	uint64_t	hs = sizeof(im->h), ms, me, te, off, take, po;

	while (n > 0) {
		if (im->pos < hs) {
			take = MIN(n, hs - im->pos);
			memcpy((uint8_t *)&im->h + im->pos, p, take);
			sha256_update(&im->sha, p, take);
			im->pos += take;
			p += take;
			n -= take;
			if (im->pos == hs) {
				if (memcmp(im->h.magic, EXPORT_MAGIC, 8) != 0 ||
				    im->h.version != EXPORT_VERSION ||
				    im->h.state_len > SNAP_STATE_MAX ||
				    im->h.mem_len > (1ULL << 40) ||
				    im->h.mem_len % PAGE != 0)
					return -EINVAL;
				im->state = xmalloc(im->h.state_len + 1);
				if (ftruncate(im->mem_fd, (off_t)im->h.mem_len)
				    == -1)
					return -errno;
			}
			continue;
		}
		ms = hs + im->h.state_len;
		me = ms + im->h.mem_len;
		te = me + SHA256_LEN;
		if (im->pos < ms) {
			take = MIN(n, ms - im->pos);
			memcpy(im->state + (im->pos - hs), p, take);
		} else if (im->pos < me) {
			off = im->pos - ms;
			po = off % PAGE;
			take = MIN(n, PAGE - po);
			memcpy(im->page + po, p, take);
			/* A whole page gathered: written unless zero. */
			if (po + take == PAGE && !all_zero(im->page, PAGE) &&
			    pwrite(im->mem_fd, im->page, PAGE,
			    (off_t)(off - po)) != PAGE)
				return errno != 0 ? -errno : -EIO;
		} else if (im->pos < te) {
			take = MIN(n, te - im->pos);
			memcpy(im->trailer + (im->pos - me), p, take);
			im->pos += take;
			p += take;
			n -= take;
			continue;
		} else
			return -EINVAL;		/* bytes after the end */
		sha256_update(&im->sha, p, take);
		im->pos += take;
		p += take;
		n -= take;
	}
	return 0;
}

int
snapshot_import(const char *file, const char *dir, char *err, size_t errlen)
{
	uint8_t			*in, *out;
	struct importer		 im;
	struct snap_state	 st;
	ZSTD_DCtx		*z;
	ZSTD_inBuffer		 ib;
	ZSTD_outBuffer		 ob;
	struct hv		*hv = NULL;
	uint8_t			 digest[SHA256_LEN];
	char			*mtmp, *stmp, *mpath, *spath, why[200];
	FILE			*sf;
	size_t			 got, left = 1;
	FILE			*f;
	int			 rc;

	if ((f = fopen(file, "re")) == NULL) {
		snprintf(err, errlen, "%s: %s", file, strerror(errno));
		return -errno;
	}
	if (mkdir(dir, 0755) == -1 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		fclose(f);
		return rc;
	}
	xasprintf(&mtmp, "%s/%s.tmp", dir, SNAPSHOT_MEMORY_FILE);
	xasprintf(&stmp, "%s/%s.tmp", dir, SNAPSHOT_STATE_FILE);
	xasprintf(&mpath, "%s/%s", dir, SNAPSHOT_MEMORY_FILE);
	xasprintf(&spath, "%s/%s", dir, SNAPSHOT_STATE_FILE);
	in = xmalloc(IO_CHUNK);
	out = xmalloc(IO_CHUNK);
	memset(&im, 0, sizeof(im));
	sha256_init(&im.sha);
	unlink(mtmp);
	im.mem_fd = open(mtmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	z = ZSTD_createDCtx();
	rc = im.mem_fd == -1 ? -errno : 0;
	while (rc == 0 && (got = fread(in, 1, IO_CHUNK, f)) > 0) {
		ib.src = in;
		ib.size = got;
		ib.pos = 0;
		while (rc == 0 && ib.pos < ib.size) {
			ob.dst = out;
			ob.size = IO_CHUNK;
			ob.pos = 0;
			left = ZSTD_decompressStream(z, &ob, &ib);
			if (ZSTD_isError(left))
				rc = -EINVAL;
			else
				rc = import_bytes(&im, out, ob.pos);
		}
	}
	if (rc == 0 && ferror(f))
		rc = -EIO;
	if (rc == 0 && (left != 0 || im.pos < sizeof(im.h) ||
	    im.pos != sizeof(im.h) + im.h.state_len + im.h.mem_len +
	    SHA256_LEN)) {
		snprintf(err, errlen, "%s: truncated export", file);
		rc = -EINVAL;
		goto out;
	}
	if (rc != 0) {
		snprintf(err, errlen, "%s: %s", file, rc == -EINVAL ?
		    "not an smx snapshot export, or corrupted" : strerror(-rc));
		goto out;
	}
	sha256_final(&im.sha, digest);
	if (memcmp(digest, im.trailer, SHA256_LEN) != 0) {
		snprintf(err, errlen, "%s: checksum mismatch: the export is "
		    "corrupted", file);
		rc = -EINVAL;
		goto out;
	}
	if (close(im.mem_fd) == -1) {
		im.mem_fd = -1;
		rc = -errno;
		snprintf(err, errlen, "%s: %s", mtmp, strerror(errno));
		goto out;
	}
	im.mem_fd = -1;
	sf = fopen(stmp, "we");
	if (sf == NULL || fwrite(im.state, 1, im.h.state_len, sf) !=
	    im.h.state_len || fclose(sf) != 0) {
		rc = -EIO;
		snprintf(err, errlen, "writing %s failed", stmp);
		goto out;
	}
	if (rename(mtmp, mpath) == -1 || rename(stmp, spath) == -1) {
		rc = -errno;
		snprintf(err, errlen, "renaming into %s: %s", dir,
		    strerror(errno));
		goto out;
	}
	/* Now a snapshot directory: check it like a restore, and its CPU. */
	if ((rc = snap_state_read(dir, &st, err, errlen)) != 0)
		goto out;
	if ((rc = hv_create(&hv, 1)) != 0)
		snprintf(err, errlen, "cannot check this host's CPU: %s",
		    strerror(-rc));
	else if ((rc = hv_cpu_compatible(hv, st.cpu, why, sizeof(why))) != 0)
		snprintf(err, errlen, "%s: %s", file, why);
	hv_destroy(hv);
	snap_state_free(&st);
	if (rc != 0) {
		unlink(spath);
		unlink(mpath);
	}
out:
	if (im.mem_fd != -1)
		close(im.mem_fd);
	if (rc != 0) {
		unlink(mtmp);
		unlink(stmp);
	}
	ZSTD_freeDCtx(z);
	fclose(f);
	free(in);
	free(out);
	free(im.state);
	free(mtmp);
	free(stmp);
	free(mpath);
	free(spath);
	return rc;
}
