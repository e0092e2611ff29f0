/*
 * Snapshot capture and copy-on-write restore (see snapshot.h for the
 * files).  The state file:
 *
 *   header  magic "SMXSNAP\0", u32 version, u32 header size, u64 body
 *           length, u32 CRC32 of the body, u32 CRC32 of the header
 *           before this field
 *   body    sections: u32 type, u32 index, u64 length, payload
 *
 * Section order is fixed (config, cpu, memory, a diff's base, vm,
 * vCPUs, devices, UART, CMOS) and each is checked before it is used: a
 * snapshot is input like any other.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/vm.h"
#include "hv/hv.h"
#include "snapshot/snapshot.h"
#include "snapshot/snapshot_impl.h"
#include "virtio/virtio.h"

#define PAGE		4096U
/* Memory is written in runs of non-zero pages of at most this size. */
#define WRITE_RUN	(4U << 20)

void
snapshot_restore_opts_init(struct snapshot_restore_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->console_fd = -1;
	o->console_in_fd = -1;
	o->hvc_fd = -1;
}

/* Append a section. */
static void
put_section(uint8_t **buf, size_t *len, uint32_t type, uint32_t index,
    const void *p, size_t plen)
{
	struct snap_section	s = { type, index, plen };

	*buf = xreallocarray(*buf, 1, *len + sizeof(s) + plen);
	memcpy(*buf + *len, &s, sizeof(s));
	if (plen != 0)
		memcpy(*buf + *len + sizeof(s), p, plen);
	*len += sizeof(s) + plen;
}

/* The configuration as "key=value" lines; -EINVAL for a value holding a
 * newline (cannot be written). */
static int
config_text(const struct vm_config *c, char **out)
{
	char		*t = NULL, *line;
	size_t		 n = 0;
	unsigned	 i;
	int		 rc = 0;

#define ADD(...) do {							\
	xasprintf(&line, __VA_ARGS__);					\
	if (strchr(line, '\n') != strrchr(line, '\n') ||		\
	    line[strlen(line) - 1] != '\n')				\
		rc = -EINVAL;						\
	t = xreallocarray(t, 1, n + strlen(line) + 1);			\
	memcpy(t + n, line, strlen(line) + 1);				\
	n += strlen(line);						\
	free(line);							\
} while (0)
	ADD("ncpus=%u\n", c->ncpus);
	ADD("memory_mib=%" PRIu64 "\n", c->memory_mib);
	ADD("cmdline=%s\n", c->cmdline != NULL ? c->cmdline : "");
	ADD("rng=%d\n", c->rng);
	ADD("balloon=%d\n", c->balloon);
	ADD("balloon_target_mib=%" PRIu64 "\n", c->balloon_target_mib);
	if (c->vsock_path != NULL)
		ADD("vsock=%s\n", c->vsock_path);
	ADD("vsock_cid=%" PRIu64 "\n", c->vsock_cid);
	ADD("hvc=%d\n", c->hvc);
	for (i = 0; i < c->ndisks; i++)
		ADD("disk=%d:%s\n", c->disks[i].readonly, c->disks[i].path);
	for (i = 0; i < c->nshares; i++) {
		if (strchr(c->shares[i].tag, ':') != NULL)
			rc = -EINVAL;
		ADD("share=%d:%d:%s:%s\n", c->shares[i].readonly,
		    c->shares[i].dax, c->shares[i].tag, c->shares[i].path);
		/* Applies to the share line before it. */
		if (c->shares[i].dax_window != 0)
			ADD("share_dax_window=%" PRIu64 "\n",
			    c->shares[i].dax_window);
	}
#undef ADD
	*out = t;
	return rc;
}

/* A flag value "0" / "1". */
static int
parse_flag(const char *v, bool *out)
{
	if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
		return -EINVAL;
	*out = v[0] == '1';
	return 0;
}

static int
parse_u64(const char *v, uint64_t *out)
{
	char	*end;

	errno = 0;
	*out = strtoull(v, &end, 10);
	return errno != 0 || end == v || *end != '\0' ? -EINVAL : 0;
}

void
snap_config_free(struct snap_config *sc)
{
	free(sc->text);
	memset(sc, 0, sizeof(*sc));
}

/* Parse the config section into sc (strings point into sc->text). */
static int
config_parse(const uint8_t *p, size_t len, struct snap_config *sc)
{
	struct vm_config	*c = &sc->cfg;
	char			*line, *next, *v, *f[4];
	uint64_t		 n;
	bool			 b, b2;
	unsigned		 i;

	memset(sc, 0, sizeof(*sc));
	sc->text = xmalloc(len + 1);
	memcpy(sc->text, p, len);
	sc->text[len] = '\0';
	if (strlen(sc->text) != len)
		return -EINVAL;
	for (line = sc->text; *line != '\0'; line = next) {
		if ((next = strchr(line, '\n')) == NULL)
			return -EINVAL;
		*next++ = '\0';
		if ((v = strchr(line, '=')) == NULL)
			return -EINVAL;
		*v++ = '\0';
		if (strcmp(line, "ncpus") == 0) {
			if (parse_u64(v, &n) != 0 || n < 1 || n > HV_MAX_VCPUS)
				return -EINVAL;
			c->ncpus = (unsigned)n;
		} else if (strcmp(line, "memory_mib") == 0) {
			if (parse_u64(v, &c->memory_mib) != 0)
				return -EINVAL;
		} else if (strcmp(line, "cmdline") == 0) {
			c->cmdline = v;
		} else if (strcmp(line, "rng") == 0) {
			if (parse_flag(v, &c->rng) != 0)
				return -EINVAL;
		} else if (strcmp(line, "balloon") == 0) {
			if (parse_flag(v, &c->balloon) != 0)
				return -EINVAL;
		} else if (strcmp(line, "balloon_target_mib") == 0) {
			if (parse_u64(v, &c->balloon_target_mib) != 0)
				return -EINVAL;
		} else if (strcmp(line, "vsock") == 0) {
			c->vsock_path = v;
		} else if (strcmp(line, "vsock_cid") == 0) {
			if (parse_u64(v, &c->vsock_cid) != 0)
				return -EINVAL;
		} else if (strcmp(line, "hvc") == 0) {
			if (parse_flag(v, &c->hvc) != 0)
				return -EINVAL;
		} else if (strcmp(line, "disk") == 0) {
			if (c->ndisks == VM_MAX_DISKS || v[0] == '\0' ||
			    v[1] != ':')
				return -EINVAL;
			v[1] = '\0';
			if (parse_flag(v, &b) != 0)
				return -EINVAL;
			c->disks[c->ndisks].readonly = b;
			c->disks[c->ndisks++].path = v + 2;
		} else if (strcmp(line, "share") == 0) {
			if (c->nshares == VM_MAX_SHARES)
				return -EINVAL;
			/* ro:dax:tag:path; the path may hold colons. */
			f[0] = v;
			for (i = 1; i < 4; i++) {
				if ((f[i] = strchr(f[i - 1], ':')) == NULL)
					return -EINVAL;
				*f[i]++ = '\0';
			}
			if (parse_flag(f[0], &b) != 0 ||
			    parse_flag(f[1], &b2) != 0)
				return -EINVAL;
			c->shares[c->nshares].readonly = b;
			c->shares[c->nshares].dax = b2;
			c->shares[c->nshares].tag = f[2];
			c->shares[c->nshares++].path = f[3];
		} else if (strcmp(line, "share_dax_window") == 0) {
			if (c->nshares == 0 || parse_u64(v, &n) != 0)
				return -EINVAL;
			c->shares[c->nshares - 1].dax_window = n;
		}
		/* Unknown keys are from a newer smx of the same version:
		 * additions that an older one may ignore. */
	}
	if (c->ncpus == 0 || c->memory_mib < 16 || c->memory_mib > (1ULL << 20))
		return -EINVAL;
	return 0;
}

/*
 * Read and check dir's state file into *st.  Every way it can be wrong
 * gets its own reason.
 */
int
snap_state_read(const char *dir, struct snap_state *st, char *err,
    size_t errlen)
{
	struct snap_header	 h;
	struct snap_section	 s;
	char			*path;
	uint8_t			*buf = NULL;
	size_t			 len = 0, off;
	uint32_t		 crc;
	unsigned		 nvm = 0;
	int			 rc;

	memset(st, 0, sizeof(*st));
	xasprintf(&path, "%s/%s", dir, SNAPSHOT_STATE_FILE);
	if ((rc = read_file(path, SNAP_STATE_MAX, &buf, &len)) != 0) {
		snprintf(err, errlen, "%s: %s", path, rc == -EFBIG ?
		    "too large for a snapshot state file" : strerror(-rc));
		goto fail;
	}
	rc = -EINVAL;
	if (len < sizeof(h)) {
		snprintf(err, errlen, "%s: truncated (%zu bytes, shorter than "
		    "the header)", path, len);
		goto fail;
	}
	memcpy(&h, buf, sizeof(h));
	if (memcmp(h.magic, SNAP_MAGIC, sizeof(h.magic)) != 0) {
		snprintf(err, errlen, "%s: not an smx snapshot (bad magic)",
		    path);
		goto fail;
	}
	if (h.hdr_crc != crc32(0, (const uint8_t *)&h,
	    offsetof(struct snap_header, hdr_crc))) {
		snprintf(err, errlen, "%s: header checksum mismatch: the file "
		    "is corrupted", path);
		goto fail;
	}
	if (h.version != SNAPSHOT_VERSION) {
		snprintf(err, errlen, "%s: snapshot format version %u, this smx "
		    "reads version %u: take the snapshot again", path,
		    h.version, SNAPSHOT_VERSION);
		rc = -EPROTO;
		goto fail;
	}
	if (h.hdr_size != sizeof(h) || h.body_len != len - sizeof(h)) {
		snprintf(err, errlen, "%s: truncated or padded (%zu bytes, the "
		    "header says %llu)", path, len,
		    (unsigned long long)(h.body_len + sizeof(h)));
		goto fail;
	}
	crc = crc32(0, buf + sizeof(h), (uInt)h.body_len);
	if (crc != h.body_crc) {
		snprintf(err, errlen, "%s: checksum mismatch (CRC32 %08x, "
		    "recorded %08x): the file is corrupted", path, crc,
		    h.body_crc);
		goto fail;
	}
	/* The CRC matched: a malformed section now is a writer's bug, but
	 * is still refused rather than trusted. */
	for (off = sizeof(h); off < len; off += s.len) {
		if (len - off < sizeof(s))
			goto malformed;
		memcpy(&s, buf + off, sizeof(s));
		off += sizeof(s);
		if (s.len > len - off)
			goto malformed;
		switch (s.type) {
		case SEC_CONFIG:
			if (st->have_config || config_parse(buf + off, s.len,
			    &st->config) != 0)
				goto malformed;
			st->have_config = true;
			break;
		case SEC_CPU:
			if (s.len != sizeof(st->cpu))
				goto malformed;
			memcpy(st->cpu, buf + off, sizeof(st->cpu));
			st->have_cpu = true;
			break;
		case SEC_MEMORY:
			if (s.len != sizeof(st->mem))
				goto malformed;
			memcpy(&st->mem, buf + off, sizeof(st->mem));
			st->have_mem = true;
			break;
		case SEC_VM:
			st->vm = buf + off;
			st->vm_len = s.len;
			nvm++;
			break;
		case SEC_VCPU:
			if (s.index != st->nvcpu || s.index >= HV_MAX_VCPUS)
				goto malformed;
			st->vcpu[st->nvcpu] = buf + off;
			st->vcpu_len[st->nvcpu++] = s.len;
			break;
		case SEC_DEVICE:
			if (s.index != st->ndev || st->ndev >= VM_MAX_VIRTIO ||
			    s.len < sizeof(uint32_t))
				goto malformed;
			memcpy(&st->dev_id[st->ndev], buf + off,
			    sizeof(uint32_t));
			st->dev[st->ndev] = buf + off + sizeof(uint32_t);
			st->dev_len[st->ndev++] = s.len - sizeof(uint32_t);
			break;
		case SEC_UART:
			if (st->uart != NULL)
				goto malformed;
			st->uart = buf + off;
			st->uart_len = s.len;
			break;
		case SEC_LEGACY:
			if (st->legacy != NULL)
				goto malformed;
			st->legacy = buf + off;
			st->legacy_len = s.len;
			break;
		case SEC_DIFF:
			/* A path of 1..PATH_MAX bytes, absolute, no NUL. */
			if (st->have_diff || s.len <= sizeof(st->diff) ||
			    s.len > sizeof(st->diff) + PATH_MAX ||
			    buf[off + sizeof(st->diff)] != '/' ||
			    memchr(buf + off + sizeof(st->diff), '\0',
			    s.len - sizeof(st->diff)) != NULL)
				goto malformed;
			memcpy(&st->diff, buf + off, sizeof(st->diff));
			st->diff_base = xmalloc(s.len - sizeof(st->diff) + 1);
			memcpy(st->diff_base, buf + off + sizeof(st->diff),
			    s.len - sizeof(st->diff));
			st->diff_base[s.len - sizeof(st->diff)] = '\0';
			st->have_diff = true;
			break;
		default:
			goto malformed;
		}
	}
	if (!st->have_config || !st->have_cpu || !st->have_mem || nvm != 1 ||
	    st->nvcpu != st->config.cfg.ncpus || st->uart == NULL ||
	    st->legacy == NULL ||
	    st->mem.size != st->config.cfg.memory_mib << 20 ||
	    (st->have_diff && st->diff.npages > st->mem.size / PAGE))
		goto malformed;
	st->buf = buf;
	st->len = len;
	free(path);
	return 0;

malformed:
	snprintf(err, errlen, "%s: malformed section at byte %zu", path, off);
fail:
	snap_config_free(&st->config);
	free(st->diff_base);
	free(buf);
	free(path);
	return rc;
}

void
snap_state_free(struct snap_state *st)
{
	snap_config_free(&st->config);
	free(st->diff_base);
	free(st->buf);
	memset(st, 0, sizeof(*st));
}

/* Is this page all zero? */
static bool
page_zero(const uint8_t *p)
{
	const uint64_t	*w = (const uint64_t *)(const void *)p;
	unsigned	 i;

	for (i = 0; i < PAGE / 8; i++)
		if (w[i] != 0)
			return false;
	return true;
}

/*
 * The memory digest: SHA-256 over the file's bytes, zero pages included
 * (so that anyone can check it with sha256sum).  Zero pages are hashed
 * from one static page.
 */
static const uint8_t	zero_page[PAGE];

/* Write ram into fd as a sparse file, hashing it. */
static int
write_memory(int fd, const uint8_t *ram, uint64_t size,
    uint8_t digest[SHA256_LEN])
{
	struct sha256_ctx	ctx;
	uint64_t		off, run;
	ssize_t			n;

	if (ftruncate(fd, (off_t)size) == -1)
		return -errno;
	sha256_init(&ctx);
	for (off = 0; off < size; ) {
		if (page_zero(ram + off)) {
			sha256_update(&ctx, zero_page, PAGE);
			off += PAGE;
			continue;
		}
		for (run = PAGE; off + run < size && run < WRITE_RUN &&
		    !page_zero(ram + off + run); run += PAGE)
			;
		sha256_update(&ctx, ram + off, run);
		for (uint64_t done = 0; done < run; done += (uint64_t)n) {
			n = pwrite(fd, ram + off + done, run - done,
			    (off_t)(off + done));
			if (n == -1 && errno == EINTR) {
				n = 0;
				continue;
			}
			if (n <= 0)
				return n == 0 ? -EIO : -errno;
		}
		off += run;
	}
	sha256_final(&ctx, digest);
	return 0;
}

/* Hash a memory file as write_memory() did. */
int
snap_memory_digest(const char *path, uint64_t size,
    uint8_t digest[SHA256_LEN])
{
	struct sha256_ctx	 ctx;
	struct stat		 st;
	uint8_t			*p;
	int			 fd, rc = 0;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -errno;
	if (fstat(fd, &st) == -1 || (uint64_t)st.st_size != size) {
		close(fd);
		return -EINVAL;
	}
	p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return -errno;
	sha256_init(&ctx);
	sha256_update(&ctx, p, size);
	sha256_final(&ctx, digest);
	munmap(p, size);
	return rc;
}

/* What a capture hands its worker. */
struct capture {
	struct reactor		*r;
	char			*dir;
	char			*mtmp, *mpath, *stmp, *spath;
	const uint8_t		*ram;
	uint64_t		 ram_size;
	uint8_t			*head;		/* sections before memory */
	size_t			 head_len;
	uint8_t			*tail;		/* sections after it */
	size_t			 tail_len;
	pid_t			 child;		/* writing the memory file */
	int			 result_fd;	/* its rc and digest */
	snapshot_done_fn	 done_cb;
	void			*arg;
	int			 error;
	char			 reason[256];

	/* A diff: the base's memory mapped read-only, the pages that may
	 * differ from it (one bit each), room for the page numbers that
	 * do, and the SEC_DIFF to write. */
	bool			 diff;
	const uint8_t		*base_ram;
	uint64_t		*cand;
	uint64_t		*idx;
	struct snap_diff	 dh;
	char			*base_real;
	char			*other;		/* the other payload file */
};

/* Gather everything but memory into c->head / c->tail. */
static int
gather(struct vm *vm, struct capture *c, char *err, size_t errlen)
{
	const struct vm_config	*cfg = vm_get_config(vm);
	struct virtio_dev	*dev;
	uint32_t		 words[HV_CPU_FEATURE_WORDS], id;
	uint8_t			*b = NULL;
	size_t			 n = 0;
	char			*text;
	unsigned		 i;
	int			 rc;

	if ((rc = config_text(cfg, &text)) != 0) {
		snprintf(err, errlen, "the machine's configuration holds a "
		    "newline or a share tag with ':': cannot be saved");
		free(text);
		return rc;
	}
	put_section(&c->head, &c->head_len, SEC_CONFIG, 0, text, strlen(text));
	free(text);
	hv_cpu_features(vm_hv(vm), words);
	put_section(&c->head, &c->head_len, SEC_CPU, 0, words, sizeof(words));

	if ((rc = hv_save(vm_hv(vm), &b, &n)) != 0) {
		snprintf(err, errlen, "saving the VM state: %s", strerror(-rc));
		goto out;
	}
	put_section(&c->tail, &c->tail_len, SEC_VM, 0, b, n);
	for (i = 0; i < vm_ncpus(vm); i++) {
		n = 0;
		if ((rc = hv_vcpu_save(vm_vcpu_hv(vm, i), &b, &n)) != 0) {
			snprintf(err, errlen, "saving vCPU %u: %s", i,
			    strerror(-rc));
			goto out;
		}
		put_section(&c->tail, &c->tail_len, SEC_VCPU, i, b, n);
	}
	for (i = 0; i < vm_nvdev(vm); i++) {
		dev = vm_vdev(vm, i, &id);
		b = xreallocarray(b, 1, sizeof(id));
		memcpy(b, &id, sizeof(id));
		n = sizeof(id);
		if ((rc = virtio_dev_save(dev, &b, &n)) != 0) {
			snprintf(err, errlen, "saving virtio device %u (ID %u): "
			    "%s", i, id, strerror(-rc));
			goto out;
		}
		put_section(&c->tail, &c->tail_len, SEC_DEVICE, i, b, n);
	}
	n = 0;
	if ((rc = uart_save(vm_uart(vm), &b, &n)) != 0) {
		snprintf(err, errlen, "saving the serial console: %s",
		    strerror(-rc));
		goto out;
	}
	put_section(&c->tail, &c->tail_len, SEC_UART, 0, b, n);
	n = 0;
	if ((rc = legacy_save(vm_legacy(vm), &b, &n)) != 0) {
		snprintf(err, errlen, "saving the CMOS: %s", strerror(-rc));
		goto out;
	}
	put_section(&c->tail, &c->tail_len, SEC_LEGACY, 0, b, n);
	rc = 0;
out:
	free(b);
	return rc;
}

/* Write a whole buffer to path. */
static int
write_whole(const char *path, const void *p, size_t len)
{
	ssize_t	n;
	size_t	done = 0;
	int	fd;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0644)) == -1)
		return -errno;
	while (done < len) {
		n = write(fd, (const uint8_t *)p + done, len - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			return n == 0 ? -EIO : -errno;
		}
		done += (size_t)n;
	}
	if (close(fd) == -1)
		return -errno;
	return 0;
}

/* A fresh memory file under the temporary name: a new inode, so clones
 * mapping the old memory file keep theirs.  The fd, or -errno. */
static int
open_memory_tmp(struct capture *c)
{
	int	fd;

	unlink(c->mtmp);
	if ((fd = open(c->mtmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0644)) == -1) {
		snprintf(c->reason, sizeof(c->reason), "%s: %s", c->mtmp,
		    strerror(errno));
		return -errno;
	}
	return fd;
}

/* With the memory file written (digest in m), write the state file and
 * rename both into place.  Any thread. */
static void
finish_files(struct capture *c, int rc, const struct snap_mem *m)
{
	struct snap_header	 h;
	uint8_t			*state = NULL, *dsec;
	size_t			 len;

	if (rc != 0) {
		if (c->reason[0] == '\0')
			snprintf(c->reason, sizeof(c->reason), "writing %s: %s",
			    c->mtmp, strerror(-rc));
		goto out;
	}
	memset(&h, 0, sizeof(h));
	len = sizeof(h);
	state = xmalloc(len + c->head_len);
	memcpy(state + len, c->head, c->head_len);
	len += c->head_len;
	put_section(&state, &len, SEC_MEMORY, 0, m, sizeof(*m));
	if (c->diff) {
		dsec = xmalloc(sizeof(c->dh) + strlen(c->base_real));
		memcpy(dsec, &c->dh, sizeof(c->dh));
		memcpy(dsec + sizeof(c->dh), c->base_real,
		    strlen(c->base_real));
		put_section(&state, &len, SEC_DIFF, 0, dsec,
		    sizeof(c->dh) + strlen(c->base_real));
		free(dsec);
	}
	state = xreallocarray(state, 1, len + c->tail_len);
	memcpy(state + len, c->tail, c->tail_len);
	len += c->tail_len;
	memcpy(h.magic, SNAP_MAGIC, sizeof(h.magic));
	h.version = SNAPSHOT_VERSION;
	h.hdr_size = sizeof(h);
	h.body_len = len - sizeof(h);
	h.body_crc = crc32(0, state + sizeof(h), (uInt)h.body_len);
	h.hdr_crc = crc32(0, (const uint8_t *)&h,
	    offsetof(struct snap_header, hdr_crc));
	memcpy(state, &h, sizeof(h));
	if ((rc = write_whole(c->stmp, state, len)) != 0) {
		snprintf(c->reason, sizeof(c->reason), "writing %s: %s",
		    c->stmp, strerror(-rc));
		goto out;
	}
	/* Memory first: a state file always names a complete memory. */
	if (rename(c->mtmp, c->mpath) == -1 ||
	    rename(c->stmp, c->spath) == -1) {
		rc = -errno;
		snprintf(c->reason, sizeof(c->reason), "renaming into %s: %s",
		    c->dir, strerror(errno));
		goto out;
	}
	/* A full snapshot replaced by a diff (or the other way round):
	 * the state no longer names the old payload. */
	unlink(c->other);
	rc = 0;
out:
	if (rc != 0) {
		unlink(c->mtmp);
		unlink(c->stmp);
	}
	c->error = rc;
	free(state);
}

static void
capture_free(struct capture *c)
{
	if (c->result_fd != -1)
		close(c->result_fd);
	free(c->dir);
	free(c->mtmp);
	free(c->mpath);
	free(c->stmp);
	free(c->spath);
	free(c->head);
	free(c->tail);
	if (c->base_ram != NULL)
		munmap((void *)c->base_ram, c->ram_size);
	free(c->cand);
	free(c->idx);
	free(c->base_real);
	free(c->other);
	free(c);
}

/* Back on the reactor thread: tell the owner. */
static void
capture_done_cb(void *arg)
{
	struct capture	*c = arg;

	c->done_cb(c->error, c->reason, c->arg);
	capture_free(c);
}

/*
 * A diff's pages file (format in snapshot_impl.h): the candidate pages
 * that differ from the base, compared byte for byte, so a page written
 * back to what it was costs nothing.  Runs in the forked child: c->idx
 * was allocated by the parent, large enough for every candidate.
 */
static int
write_diff(struct capture *c, int fd, uint8_t digest[SHA256_LEN],
    uint64_t *npages)
{
	struct sha256_ctx	ctx;
	uint64_t		p, n = 0, i, run, data;
	uint8_t			head[16];
	int			rc;

	for (p = 0; p < c->ram_size / PAGE; p++) {
		if ((c->cand[p / 64] & (1ULL << (p % 64))) == 0 ||
		    memcmp(c->ram + p * PAGE, c->base_ram + p * PAGE,
		    PAGE) == 0)
			continue;
		c->idx[n++] = p;
	}
	memcpy(head, SNAP_DIFF_MAGIC, 8);
	memcpy(head + 8, &n, 8);
	sha256_init(&ctx);
	sha256_update(&ctx, head, sizeof(head));
	sha256_update(&ctx, c->idx, n * 8);
	if ((rc = pwrite_all(fd, head, sizeof(head), 0)) != 0 ||
	    (rc = pwrite_all(fd, c->idx, n * 8, sizeof(head))) != 0)
		return rc;
	data = sizeof(head) + n * 8;
	/* Consecutive pages go out in one write. */
	for (i = 0; i < n; i += run) {
		for (run = 1; i + run < n && run < WRITE_RUN / PAGE &&
		    c->idx[i + run] == c->idx[i] + run; run++)
			;
		sha256_update(&ctx, c->ram + c->idx[i] * PAGE, run * PAGE);
		if ((rc = pwrite_all(fd, c->ram + c->idx[i] * PAGE,
		    run * PAGE, data + i * PAGE)) != 0)
			return rc;
	}
	sha256_final(&ctx, digest);
	*npages = n;
	return 0;
}

/* The payload of a capture: memory, or a diff's pages.  Child. */
static int
write_payload(struct capture *c, int fd, uint8_t digest[SHA256_LEN],
    uint64_t *npages)
{
	*npages = 0;
	if (c->diff)
		return write_diff(c, fd, digest, npages);
	return write_memory(fd, c->ram, c->ram_size, digest);
}

/* What the child sends back: i32 rc, digest, u64 page count. */
#define RESULT_LEN	(sizeof(int32_t) + SHA256_LEN + sizeof(uint64_t))

/* The memory section of the state, and the diff's, from a payload's
 * result.  A diff's memory section gives the size only. */
static void
payload_done(struct capture *c, struct snap_mem *m,
    const uint8_t digest[SHA256_LEN], uint64_t npages)
{
	memset(m, 0, sizeof(*m));
	m->size = c->ram_size;
	if (c->diff) {
		memcpy(c->dh.pages_sha256, digest, SHA256_LEN);
		c->dh.npages = npages;
	} else
		memcpy(m->sha256, digest, SHA256_LEN);
}

/* Wait for the child writing memory, then write the state.  The worker
 * thread of snapshot_capture(). */
static void *
capture_thread(void *arg)
{
	struct capture	*c = arg;
	struct snap_mem	 m;
	uint8_t		 res[RESULT_LEN];
	uint64_t	 npages = 0;
	size_t		 got = 0;
	ssize_t		 n;
	int32_t		 rc = -EIO;
	int		 status;

	while (got < sizeof(res) && ((n = read(c->result_fd, res + got,
	    sizeof(res) - got)) > 0 || (n == -1 && errno == EINTR)))
		got += n > 0 ? (size_t)n : 0;
	while (waitpid(c->child, &status, 0) == -1 && errno == EINTR)
		;
	if (got == sizeof(res)) {
		memcpy(&rc, res, sizeof(rc));
		memcpy(&npages, res + sizeof(rc) + SHA256_LEN,
		    sizeof(npages));
	} else
		snprintf(c->reason, sizeof(c->reason), "the process writing "
		    "%s died", c->mtmp);
	payload_done(c, &m, res + sizeof(rc), npages);
	finish_files(c, rc, &m);
	if (reactor_post(c->r, capture_done_cb, c) != 0)
		fatalx("cannot post the end of a snapshot write");
	return NULL;
}

/* Close every fd of this (child) process but a and b. */
static void
close_all_but(int a, int b)
{
	int	lo = MIN(a, b), hi = MAX(a, b);

	if (lo > 3)
		close_range(3, (unsigned)lo - 1, 0);
	if (hi > lo + 1)
		close_range((unsigned)lo + 1, (unsigned)hi - 1, 0);
	close_range((unsigned)hi + 1, ~0U, 0);
}

/*
 * The pages of [ram, ram + size) this process holds a private copy of,
 * ORed into bitmap: present and anonymous, or swapped out
 * (/proc/self/pagemap, Documentation/admin-guide/mm/pagemap.rst).  In
 * a MAP_PRIVATE file mapping that is exactly the pages someone wrote.
 */
#define PM_PRESENT	(1ULL << 63)
#define PM_SWAP		(1ULL << 62)
#define PM_FILE		(1ULL << 61)

static int
private_pages(const uint8_t *ram, uint64_t size, uint64_t *bitmap)
{
	uint64_t	e[512], p, i, npg = size / PAGE;
	size_t		want;
	ssize_t		n;
	int		fd, rc = 0;

	if ((fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)) == -1)
		return -errno;
	for (p = 0; p < npg; p += (uint64_t)n / 8) {
		want = MIN(npg - p, 512) * 8;
		n = pread(fd, e, want,
		    (off_t)(((uintptr_t)ram / PAGE + p) * 8));
		if (n == -1 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n <= 0 || n % 8 != 0) {
			rc = n == -1 ? -errno : -EIO;
			break;
		}
		for (i = 0; i < (uint64_t)n / 8; i++)
			if ((e[i] & PM_SWAP) ||
			    (e[i] & (PM_PRESENT | PM_FILE)) == PM_PRESENT)
				bitmap[(p + i) / 64] |= 1ULL << ((p + i) % 64);
	}
	close(fd);
	return rc;
}

/*
 * Prepare a diff against base_dir: the base checked, its memory mapped,
 * the candidate pages found.
 *
 * Which pages can differ from the base?  When the machine's RAM is the
 * base's memory file mapped MAP_PRIVATE (restored from the base, or
 * from a diff of it), the pages the guest wrote are in the hypervisor's
 * dirty log (with cfg.dirty_log), but the pages the host wrote for the
 * guest are not: virtio used rings, and the buffers devices fill (vsock
 * and FUSE replies, rng bytes, block reads), written through gmem_ptr()
 * by the device model.  Every write to such a mapping, the host's or
 * the guest's, leaves a private copy of the page in this process, which
 * /proc/self/pagemap shows; so the candidates are the dirty log plus
 * the private copies.  The dirty log alone would lose device writes;
 * the private copies alone would be enough on Linux, and are what keep
 * a second diff complete after the log was restarted by the first.
 * Any other machine (booted, or mapped from another file) has every
 * page as a candidate.  Either way candidates are compared with the
 * base, so only pages that differ are written.
 */
static int
diff_prepare(struct vm *vm, struct capture *c, const char *base_dir,
    char *err, size_t errlen)
{
	struct snap_state	 bst;
	struct sha256_ctx	 ctx;
	struct stat		 bs, ds;
	dev_t			 rdev;
	ino_t			 rino;
	char			*bmem = NULL, real[PATH_MAX];
	uint64_t		 words = (c->ram_size / PAGE + 63) / 64, i, n;
	void			*map;
	int			 fd = -1, rc;

	if (realpath(base_dir, real) == NULL) {
		snprintf(err, errlen, "%s: %s", base_dir, strerror(errno));
		return -errno;
	}
	if (stat(real, &bs) == 0 && stat(c->dir, &ds) == 0 &&
	    bs.st_dev == ds.st_dev && bs.st_ino == ds.st_ino) {
		snprintf(err, errlen, "%s: a diff cannot be written into its "
		    "own base", c->dir);
		return -EINVAL;
	}
	if ((rc = snap_state_read(real, &bst, err, errlen)) != 0)
		return rc;
	rc = -EINVAL;
	if (bst.have_diff) {
		snprintf(err, errlen, "%s is a diff snapshot itself: take the "
		    "diff against its base %s", base_dir, bst.diff_base);
		goto out;
	}
	if (bst.mem.size != c->ram_size) {
		snprintf(err, errlen, "%s holds %llu MiB of memory, the "
		    "machine has %llu MiB: not its base", base_dir,
		    (unsigned long long)(bst.mem.size >> 20),
		    (unsigned long long)(c->ram_size >> 20));
		goto out;
	}
	sha256_init(&ctx);
	sha256_update(&ctx, bst.buf, bst.len);
	sha256_final(&ctx, c->dh.base_state_sha256);
	xasprintf(&bmem, "%s/%s", real, SNAPSHOT_MEMORY_FILE);
	if ((fd = open(bmem, O_RDONLY | O_CLOEXEC)) == -1 ||
	    fstat(fd, &bs) == -1) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", bmem, strerror(errno));
		goto out;
	}
	if ((uint64_t)bs.st_size != c->ram_size) {
		snprintf(err, errlen, "%s: %llu bytes, its state says %llu: "
		    "truncated", bmem, (unsigned long long)bs.st_size,
		    (unsigned long long)c->ram_size);
		goto out;
	}
	map = mmap(NULL, c->ram_size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", bmem, strerror(errno));
		goto out;
	}
	c->base_ram = map;
	c->cand = xcalloc(words, sizeof(uint64_t));
	/* The very file (not a newer one under its name) the machine's
	 * RAM is mapped from. */
	if (vm_ram_file_id(vm, &rdev, &rino) == 0 && rdev == bs.st_dev &&
	    rino == bs.st_ino) {
		if ((rc = vm_dirty_log(vm, c->cand)) != 0 && rc != -ENOENT) {
			snprintf(err, errlen, "reading the dirty log: %s",
			    strerror(-rc));
			goto out;
		}
		for (i = n = 0; i < words; i++)
			n += (uint64_t)__builtin_popcountll(c->cand[i]);
		log_debug("diff: %llu pages in the dirty log%s",
		    (unsigned long long)n, rc == -ENOENT ? " (not kept)" : "");
		if ((rc = private_pages(c->ram, c->ram_size, c->cand)) != 0) {
			snprintf(err, errlen, "/proc/self/pagemap: %s",
			    strerror(-rc));
			goto out;
		}
	} else
		memset(c->cand, 0xff, words * sizeof(uint64_t));
	for (i = n = 0; i < words; i++)
		n += (uint64_t)__builtin_popcountll(c->cand[i]);
	log_debug("diff: %llu candidate pages of %llu", (unsigned long long)n,
	    (unsigned long long)(c->ram_size / PAGE));
	c->idx = xcalloc(MAX(n, 1), sizeof(uint64_t));
	c->base_real = xstrdup(real);
	c->diff = true;
	rc = 0;
out:
	if (fd != -1)
		close(fd);
	free(bmem);
	snap_state_free(&bst);
	return rc;
}

/* Common start of a capture: checks, directory, gathered state, and
 * with base_dir the diff's preparation. */
static struct capture *
capture_begin(struct vm *vm, const char *base_dir, const char *dir,
    char *err, size_t errlen, int *rc)
{
	struct capture	*c;
	const char	*payload, *other;

	if (!vm_paused(vm)) {
		snprintf(err, errlen, "the machine is not paused");
		*rc = -EBUSY;
		return NULL;
	}
	if (mkdir(dir, 0755) == -1 && errno != EEXIST) {
		*rc = -errno;
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return NULL;
	}
	payload = base_dir != NULL ? SNAPSHOT_PAGES_FILE : SNAPSHOT_MEMORY_FILE;
	other = base_dir != NULL ? SNAPSHOT_MEMORY_FILE : SNAPSHOT_PAGES_FILE;
	c = xcalloc(1, sizeof(*c));
	c->result_fd = -1;
	c->dir = xstrdup(dir);
	xasprintf(&c->mtmp, "%s/%s.tmp", dir, payload);
	xasprintf(&c->mpath, "%s/%s", dir, payload);
	xasprintf(&c->other, "%s/%s", dir, other);
	xasprintf(&c->stmp, "%s/%s.tmp", dir, SNAPSHOT_STATE_FILE);
	xasprintf(&c->spath, "%s/%s", dir, SNAPSHOT_STATE_FILE);
	c->ram = vm_ram(vm, &c->ram_size);
	if ((*rc = gather(vm, c, err, errlen)) != 0 || (base_dir != NULL &&
	    (*rc = diff_prepare(vm, c, base_dir, err, errlen)) != 0)) {
		capture_free(c);
		return NULL;
	}
	return c;
}

/*
 * The payload is written by a forked child, from the copy-on-write
 * image of this process that fork() takes: RAM exactly as it is now,
 * while the machine (and every device of every machine on the reactor)
 * goes on in the parent.  The child only compares, hashes and writes
 * (no allocation, no locks: other threads' locks are not its to take),
 * sends its result down a pipe and leaves with _exit().  A worker
 * thread waits for it and writes the state file, so the reactor never
 * blocks on the disk.
 */
static int
capture_start(struct vm *vm, struct reactor *r, const char *base_dir,
    const char *dir, snapshot_done_fn done_cb, void *arg, char *err,
    size_t errlen)
{
	struct capture	*c;
	pthread_attr_t	 attr;
	pthread_t	 t;
	uint8_t		 res[RESULT_LEN];
	uint64_t	 npages;
	int32_t		 wrc;
	int		 fd, p[2], rc;

	if ((c = capture_begin(vm, base_dir, dir, err, errlen, &rc)) == NULL)
		return rc;
	c->r = r;
	c->done_cb = done_cb;
	c->arg = arg;
	if ((fd = open_memory_tmp(c)) < 0) {
		snprintf(err, errlen, "%s", c->reason);
		capture_free(c);
		return fd;
	}
	if (pipe2(p, O_CLOEXEC) == -1) {
		rc = -errno;
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto err_fd;
	}
	if ((c->child = fork()) == -1) {
		rc = -errno;
		snprintf(err, errlen, "cannot fork the snapshot writer: %s",
		    strerror(errno));
		close(p[0]);
		close(p[1]);
		goto err_fd;
	}
	if (c->child == 0) {
		close_all_but(fd, p[1]);
		wrc = write_payload(c, fd, res + sizeof(wrc), &npages);
		if (wrc == 0 && close(fd) == -1)
			wrc = -errno;
		memcpy(res, &wrc, sizeof(wrc));
		memcpy(res + sizeof(wrc) + SHA256_LEN, &npages,
		    sizeof(npages));
		_exit(write(p[1], res, sizeof(res)) == sizeof(res) ? 0 : 1);
	}
	close(fd);
	close(p[1]);
	c->result_fd = p[0];
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &attr, capture_thread, c);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		/* The child finishes on its own; reap it here. */
		waitpid(c->child, NULL, 0);
		unlink(c->mtmp);
		snprintf(err, errlen, "cannot start the snapshot writer: %s",
		    strerror(rc));
		capture_free(c);
		return -rc;
	}
	return 0;

err_fd:
	close(fd);
	unlink(c->mtmp);
	capture_free(c);
	return rc;
}

int
snapshot_capture(struct vm *vm, struct reactor *r, const char *dir,
    snapshot_done_fn done_cb, void *arg, char *err, size_t errlen)
{
	return capture_start(vm, r, NULL, dir, done_cb, arg, err, errlen);
}

int
snapshot_capture_diff(struct vm *vm, struct reactor *r, const char *base_dir,
    const char *dir, snapshot_done_fn done_cb, void *arg, char *err,
    size_t errlen)
{
	return capture_start(vm, r, base_dir, dir, done_cb, arg, err, errlen);
}

/* The synchronous capture: the payload written on this thread. */
static int
save_sync(struct vm *vm, const char *base_dir, const char *dir, char *err,
    size_t errlen)
{
	struct capture	*c;
	struct snap_mem	 m;
	uint8_t		 digest[SHA256_LEN];
	uint64_t	 npages = 0;
	int		 fd, rc;

	if ((c = capture_begin(vm, base_dir, dir, err, errlen, &rc)) == NULL)
		return rc;
	memset(digest, 0, sizeof(digest));
	if ((fd = open_memory_tmp(c)) < 0)
		rc = fd;
	else {
		rc = write_payload(c, fd, digest, &npages);
		if (close(fd) == -1 && rc == 0)
			rc = -errno;
	}
	payload_done(c, &m, digest, npages);
	finish_files(c, rc, &m);
	if ((rc = c->error) != 0)
		snprintf(err, errlen, "%s", c->reason);
	capture_free(c);
	return rc;
}

int
snapshot_save(struct vm *vm, const char *dir, char *err, size_t errlen)
{
	return save_sync(vm, NULL, dir, err, errlen);
}

int
snapshot_save_diff(struct vm *vm, const char *base_dir, const char *dir,
    char *err, size_t errlen)
{
	return save_sync(vm, base_dir, dir, err, errlen);
}

/* The memory file of dir: size (and digest) as the state says. */
static int
check_memory(const char *dir, const struct snap_state *st, bool digest,
    char *err, size_t errlen)
{
	struct stat	 sb;
	uint8_t		 d[SHA256_LEN];
	char		*path;
	int		 rc = 0;

	xasprintf(&path, "%s/%s", dir, SNAPSHOT_MEMORY_FILE);
	if (stat(path, &sb) == -1) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
	} else if ((uint64_t)sb.st_size != st->mem.size) {
		rc = -EINVAL;
		snprintf(err, errlen, "%s: %llu bytes, the state says %llu: "
		    "not this snapshot's memory (or truncated)", path,
		    (unsigned long long)sb.st_size,
		    (unsigned long long)st->mem.size);
	} else if (digest) {
		if ((rc = snap_memory_digest(path, st->mem.size, d)) != 0)
			snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		else if (memcmp(d, st->mem.sha256, SHA256_LEN) != 0) {
			rc = -EINVAL;
			snprintf(err, errlen, "%s: SHA-256 mismatch: the memory "
			    "file is corrupted", path);
		}
	}
	free(path);
	return rc;
}

/*
 * A diff's files: its base is the snapshot it was taken against (the
 * SHA-256 of the base's state file matches) and is whole; its pages
 * file has the size the page count makes (and the digest, with
 * digest).  base: the base directory to use, NULL for the recorded one.
 * On success *mpath is the base's memory file.
 */
static int
check_diff(const char *dir, const struct snap_state *st, const char *base,
    bool digest, char **mpath, char *err, size_t errlen)
{
	struct snap_state	 bst;
	struct sha256_ctx	 ctx;
	struct stat		 sb;
	uint8_t			 d[SHA256_LEN];
	uint64_t		 want;
	char			*path, why[384];
	int			 rc;

	if (base == NULL)
		base = st->diff_base;
	if ((rc = snap_state_read(base, &bst, why, sizeof(why))) != 0) {
		snprintf(err, errlen, "%s is a diff of %s: %s", dir, base, why);
		return rc;
	}
	sha256_init(&ctx);
	sha256_update(&ctx, bst.buf, bst.len);
	sha256_final(&ctx, d);
	rc = -EINVAL;
	if (bst.have_diff || bst.mem.size != st->mem.size ||
	    memcmp(d, st->diff.base_state_sha256, SHA256_LEN) != 0) {
		snprintf(err, errlen, "%s is a diff of another snapshot than "
		    "%s (the base's state differs): restore it with the base "
		    "it was taken against", dir, base);
		goto out;
	}
	if ((rc = check_memory(base, &bst, digest, why, sizeof(why))) != 0) {
		snprintf(err, errlen, "base of %s: %s", dir, why);
		goto out;
	}
	xasprintf(&path, "%s/%s", dir, SNAPSHOT_PAGES_FILE);
	want = 16 + st->diff.npages * (8 + PAGE);
	if (stat(path, &sb) == -1) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
	} else if ((uint64_t)sb.st_size != want) {
		rc = -EINVAL;
		snprintf(err, errlen, "%s: %llu bytes, %llu pages make %llu: "
		    "truncated or not this diff's pages", path,
		    (unsigned long long)sb.st_size,
		    (unsigned long long)st->diff.npages,
		    (unsigned long long)want);
	} else if (digest) {
		if ((rc = snap_memory_digest(path, want, d)) != 0)
			snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		else if (memcmp(d, st->diff.pages_sha256, SHA256_LEN) != 0) {
			rc = -EINVAL;
			snprintf(err, errlen, "%s: SHA-256 mismatch: the pages "
			    "file is corrupted", path);
		}
	}
	free(path);
	if (rc == 0)
		xasprintf(mpath, "%s/%s", base, SNAPSHOT_MEMORY_FILE);
out:
	snap_state_free(&bst);
	return rc;
}

/* The files a snapshot's state names; *mpath: the memory to map. */
static int
check_files(const char *dir, const struct snap_state *st, const char *base,
    bool digest, char **mpath, char *err, size_t errlen)
{
	int	rc;

	if (st->have_diff)
		return check_diff(dir, st, base, digest, mpath, err, errlen);
	if ((rc = check_memory(dir, st, digest, err, errlen)) == 0)
		xasprintf(mpath, "%s/%s", dir, SNAPSHOT_MEMORY_FILE);
	return rc;
}

int
snapshot_check(const char *dir, bool memory, uint64_t *memory_mib,
    unsigned *ncpus, char *err, size_t errlen)
{
	struct snap_state	 st;
	char			*mpath = NULL;
	int			 rc;

	if ((rc = snap_state_read(dir, &st, err, errlen)) != 0)
		return rc;
	if ((rc = check_files(dir, &st, NULL, memory, &mpath, err,
	    errlen)) == 0) {
		if (memory_mib != NULL)
			*memory_mib = st.config.cfg.memory_mib;
		if (ncpus != NULL)
			*ncpus = st.config.cfg.ncpus;
	}
	free(mpath);
	snap_state_free(&st);
	return rc;
}

/*
 * Lay a diff's pages over the machine's RAM (the base's memory, mapped
 * MAP_PRIVATE: the pages read in become the machine's private copies).
 * The page list is checked before any page is read.
 */
static int
overlay_diff(struct vm *vm, const char *dir, const struct snap_state *st,
    char *err, size_t errlen)
{
	uint8_t		 head[16], *ram;
	uint64_t	*idx = NULL, n, i, run, size, data;
	char		*path;
	int		 fd, rc;

	ram = vm_ram(vm, &size);
	xasprintf(&path, "%s/%s", dir, SNAPSHOT_PAGES_FILE);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		free(path);
		return rc;
	}
	n = st->diff.npages;
	if ((rc = pread_all(fd, head, sizeof(head), 0)) != 0)
		goto fail;
	rc = -EINVAL;
	if (memcmp(head, SNAP_DIFF_MAGIC, 8) != 0 ||
	    memcmp(head + 8, &n, 8) != 0)
		goto malformed;
	idx = xcalloc(MAX(n, 1), sizeof(*idx));
	if ((rc = pread_all(fd, idx, n * 8, sizeof(head))) != 0)
		goto fail;
	rc = -EINVAL;
	for (i = 0; i < n; i++)
		if (idx[i] >= size / PAGE || (i > 0 && idx[i] <= idx[i - 1]))
			goto malformed;
	data = sizeof(head) + n * 8;
	for (i = 0; i < n; i += run) {
		for (run = 1; i + run < n && run < WRITE_RUN / PAGE &&
		    idx[i + run] == idx[i] + run; run++)
			;
		if ((rc = pread_all(fd, ram + idx[i] * PAGE, run * PAGE,
		    data + i * PAGE)) != 0)
			goto fail;
	}
	rc = 0;
	goto out;
malformed:
	snprintf(err, errlen, "%s: malformed page list: the file is "
	    "corrupted", path);
	goto out;
fail:
	snprintf(err, errlen, "%s: %s", path, strerror(-rc));
out:
	free(idx);
	close(fd);
	free(path);
	return rc;
}

struct vm *
snapshot_restore(struct reactor *r, const char *dir,
    const struct snapshot_restore_opts *o, char *err, size_t errlen)
{
	struct snap_state	 st;
	struct vm_config	 cfg;
	struct vm		*vm = NULL;
	struct virtio_dev	*dev;
	char			*mpath = NULL, why[200];
	uint32_t		 id;
	unsigned		 i;
	int			 rc;

	if (o == NULL || o->size != sizeof(*o)) {
		snprintf(err, errlen, "snapshot_restore: bad options");
		return NULL;
	}
	if (snap_state_read(dir, &st, err, errlen) != 0)
		return NULL;
	if (check_files(dir, &st, o->base_dir, o->verify_memory, &mpath, err,
	    errlen) != 0)
		goto out;
	cfg = st.config.cfg;
	cfg.ram_file = mpath;
	cfg.dirty_log = o->track_dirty;
	cfg.console_fd = o->console_fd;
	cfg.console_in_fd = o->console_in_fd;
	cfg.hvc_fd = o->hvc_fd;
	if (o->vsock_path != NULL && cfg.vsock_path != NULL)
		cfg.vsock_path = o->vsock_path;
	if ((vm = vm_create(r, &cfg, err, errlen)) == NULL)
		goto out;
	if (st.have_diff && overlay_diff(vm, dir, &st, err, errlen) != 0)
		goto fail;
	if (hv_cpu_compatible(vm_hv(vm), st.cpu, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "%s: %s", dir, why);
		goto fail;
	}
	if (vm_nvdev(vm) != st.ndev) {
		snprintf(err, errlen, "%s: %u devices saved, the configuration "
		    "makes %u", dir, st.ndev, vm_nvdev(vm));
		goto fail;
	}
	/* The VM's irqchip, PIT and clock, then each vCPU, then devices
	 * (whose load may raise an interrupt into the restored irqchip). */
	if ((rc = hv_restore(vm_hv(vm), st.vm, st.vm_len)) != 0) {
		snprintf(err, errlen, "%s: restoring the VM state: %s", dir,
		    rc == -EPROTO ? "saved by another hypervisor backend" :
		    strerror(-rc));
		goto fail;
	}
	for (i = 0; i < st.nvcpu; i++) {
		if ((rc = hv_vcpu_restore(vm_vcpu_hv(vm, i), st.vcpu[i],
		    st.vcpu_len[i])) != 0) {
			snprintf(err, errlen, "%s: restoring vCPU %u: %s", dir,
			    i, rc == -EPROTO ? "saved by another hypervisor "
			    "backend" : strerror(-rc));
			goto fail;
		}
	}
	for (i = 0; i < st.ndev; i++) {
		dev = vm_vdev(vm, i, &id);
		if (id != st.dev_id[i] || (rc = virtio_dev_load(dev, st.dev[i],
		    st.dev_len[i])) != 0) {
			snprintf(err, errlen, "%s: virtio device %u (ID %u) does "
			    "not load its saved state", dir, i, id);
			goto fail;
		}
	}
	if ((rc = uart_load(vm_uart(vm), st.uart, st.uart_len)) != 0) {
		snprintf(err, errlen, "%s: the serial console's saved state "
		    "does not load: %s", dir, rc == -EPROTO ?
		    "another version" : "malformed");
		goto fail;
	}
	if ((rc = legacy_load(vm_legacy(vm), st.legacy, st.legacy_len)) != 0) {
		snprintf(err, errlen, "%s: the CMOS's saved state does not "
		    "load: %s", dir, rc == -EPROTO ? "another version" :
		    "malformed");
		goto fail;
	}
	goto out;
fail:
	vm_free(vm);
	vm = NULL;
out:
	free(mpath);
	snap_state_free(&st);
	return vm;
}
