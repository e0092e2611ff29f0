/*
 * Snapshot capture and copy-on-write restore (see snapshot.h for the
 * files).  The state file:
 *
 *   header  magic "SMXSNAP\0", u32 version, u32 header size, u64 body
 *           length, u32 CRC32 of the body, u32 CRC32 of the header
 *           before this field
 *   body    sections: u32 type, u32 index, u64 length, payload
 *
 * Section order is fixed (config, cpu, memory, vm, vCPUs, devices) and
 * each is checked before it is used: a snapshot is input like any other.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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
		default:
			goto malformed;
		}
	}
	if (!st->have_config || !st->have_cpu || !st->have_mem || nvm != 1 ||
	    st->nvcpu != st->config.cfg.ncpus ||
	    st->mem.size != st->config.cfg.memory_mib << 20)
		goto malformed;
	st->buf = buf;
	free(path);
	return 0;

malformed:
	snprintf(err, errlen, "%s: malformed section at byte %zu", path, off);
fail:
	snap_config_free(&st->config);
	free(buf);
	free(path);
	return rc;
}

void
snap_state_free(struct snap_state *st)
{
	snap_config_free(&st->config);
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
	uint8_t			*state = NULL;
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

/* Wait for the child writing memory, then write the state.  The worker
 * thread of snapshot_capture(). */
static void *
capture_thread(void *arg)
{
	struct capture	*c = arg;
	struct snap_mem	 m;
	uint8_t		 res[sizeof(int32_t) + SHA256_LEN];
	size_t		 got = 0;
	ssize_t		 n;
	int32_t		 rc = -EIO;
	int		 status;

	while (got < sizeof(res) && ((n = read(c->result_fd, res + got,
	    sizeof(res) - got)) > 0 || (n == -1 && errno == EINTR)))
		got += n > 0 ? (size_t)n : 0;
	while (waitpid(c->child, &status, 0) == -1 && errno == EINTR)
		;
	memset(&m, 0, sizeof(m));
	m.size = c->ram_size;
	if (got == sizeof(res)) {
		memcpy(&rc, res, sizeof(rc));
		memcpy(m.sha256, res + sizeof(rc), SHA256_LEN);
	} else
		snprintf(c->reason, sizeof(c->reason), "the process writing "
		    "%s died", c->mtmp);
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

/* Common start of a capture: checks, directory, gathered state. */
static struct capture *
capture_begin(struct vm *vm, const char *dir, char *err, size_t errlen,
    int *rc)
{
	struct capture	*c;

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
	c = xcalloc(1, sizeof(*c));
	c->result_fd = -1;
	c->dir = xstrdup(dir);
	xasprintf(&c->mtmp, "%s/%s.tmp", dir, SNAPSHOT_MEMORY_FILE);
	xasprintf(&c->mpath, "%s/%s", dir, SNAPSHOT_MEMORY_FILE);
	xasprintf(&c->stmp, "%s/%s.tmp", dir, SNAPSHOT_STATE_FILE);
	xasprintf(&c->spath, "%s/%s", dir, SNAPSHOT_STATE_FILE);
	c->ram = vm_ram(vm, &c->ram_size);
	if ((*rc = gather(vm, c, err, errlen)) != 0) {
		capture_free(c);
		return NULL;
	}
	return c;
}

/*
 * The memory is written by a forked child, from the copy-on-write image
 * of this process that fork() takes: RAM exactly as it is now, while the
 * machine (and every device of every machine on the reactor) goes on in
 * the parent.  The child only hashes and writes (no allocation, no
 * locks: other threads' locks are not its to take), sends its result
 * down a pipe and leaves with _exit().  A worker thread waits for it
 * and writes the state file, so the reactor never blocks on the disk.
 */
int
snapshot_capture(struct vm *vm, struct reactor *r, const char *dir,
    snapshot_done_fn done_cb, void *arg, char *err, size_t errlen)
{
	struct capture	*c;
	pthread_attr_t	 attr;
	pthread_t	 t;
	uint8_t		 res[sizeof(int32_t) + SHA256_LEN];
	int32_t		 wrc;
	int		 fd, p[2], rc;

	if ((c = capture_begin(vm, dir, err, errlen, &rc)) == NULL)
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
		wrc = write_memory(fd, c->ram, c->ram_size,
		    res + sizeof(wrc));
		if (wrc == 0 && close(fd) == -1)
			wrc = -errno;
		memcpy(res, &wrc, sizeof(wrc));
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
snapshot_save(struct vm *vm, const char *dir, char *err, size_t errlen)
{
	struct capture	*c;
	struct snap_mem	 m;
	int		 fd, rc;

	if ((c = capture_begin(vm, dir, err, errlen, &rc)) == NULL)
		return rc;
	memset(&m, 0, sizeof(m));
	m.size = c->ram_size;
	if ((fd = open_memory_tmp(c)) < 0)
		rc = fd;
	else {
		rc = write_memory(fd, c->ram, c->ram_size, m.sha256);
		if (close(fd) == -1 && rc == 0)
			rc = -errno;
	}
	finish_files(c, rc, &m);
	if ((rc = c->error) != 0)
		snprintf(err, errlen, "%s", c->reason);
	capture_free(c);
	return rc;
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

int
snapshot_check(const char *dir, bool memory, uint64_t *memory_mib,
    unsigned *ncpus, char *err, size_t errlen)
{
	struct snap_state	st;
	int			rc;

	if ((rc = snap_state_read(dir, &st, err, errlen)) != 0)
		return rc;
	if ((rc = check_memory(dir, &st, memory, err, errlen)) == 0) {
		if (memory_mib != NULL)
			*memory_mib = st.config.cfg.memory_mib;
		if (ncpus != NULL)
			*ncpus = st.config.cfg.ncpus;
	}
	snap_state_free(&st);
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
	if (check_memory(dir, &st, o->verify_memory, err, errlen) != 0)
		goto out;
	xasprintf(&mpath, "%s/%s", dir, SNAPSHOT_MEMORY_FILE);
	cfg = st.config.cfg;
	cfg.ram_file = mpath;
	cfg.console_fd = o->console_fd;
	cfg.console_in_fd = o->console_in_fd;
	cfg.hvc_fd = o->hvc_fd;
	if (o->vsock_path != NULL && cfg.vsock_path != NULL)
		cfg.vsock_path = o->vsock_path;
	if ((vm = vm_create(r, &cfg, err, errlen)) == NULL)
		goto out;
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
	goto out;
fail:
	vm_free(vm);
	vm = NULL;
out:
	free(mpath);
	snap_state_free(&st);
	return vm;
}
