/*
 * kvm tier: snapshots of a running test guest on this host's /dev/kvm.
 * The guest (word snap-loop) counts, reads a file over virtio-fs through
 * a handle it opened at the start, and echoes vsock data.  It is
 * snapshotted mid-run with a host vsock connection open; then 20 clones
 * are restored from that snapshot, one after the other, each checked to
 * go on from the snapshot point (the counter continues, the FUSE handle
 * still reads, the open connection was reset and a new one echoes) and
 * paused; with all 20 alive, their copy-on-write mappings of the memory
 * file must share pages (PSS well below RSS).  A clone with dirty
 * logging then takes a diff snapshot, which restores and counts on.
 * TAP; skips without /dev/kvm.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/vm.h"
#include "hv/hv.h"
#include "snapshot/snapshot.h"
#include "tests/tap.h"

#define NCLONES		20
#define PORT		5000
#define PRINT_EVERY	4		/* the guest's SNAP_PRINT_EVERY */
#define OUT_MAX		(256 * 1024)
#define HELLO		"hello from the snapshot share\n"

struct tvm {
	struct vm		*vm;
	int			 out[2];
	struct reactor_fd	*out_ev;
	char			*text;		/* console output so far */
	size_t			 len;
	bool			 paused, ended;
	char			*vsock;
};

static struct reactor	*R;
static char		 guest[4096], tmpdir[] = "/tmp/snapshot_kvm.XXXXXX";
static char		*share, *snapdir;
static struct tvm	 orig, clones[NCLONES];
static uint64_t		 snap_counter;	/* last counter before the snapshot */
static bool		 captured;

static void
out_cb(int fd, short what, void *arg)
{
	struct tvm	*t = arg;
	ssize_t		 n;

	while (t->len < OUT_MAX - 1 && (n = read(fd, t->text + t->len,
	    OUT_MAX - 1 - t->len)) > 0) {
		t->len += (size_t)n;
		t->text[t->len] = '\0';
	}
}

static void
stop_cb(void *arg)
{
	reactor_stop(R);
}

static void
run_for(uint64_t usec)
{
	struct reactor_timer	*g;

	g = reactor_add_timer(R, usec, false, stop_cb, NULL);
	if (g == NULL || reactor_run(R) != 0)
		fatalx("reactor");
	reactor_del_timer(g);
}

static void
ended_cb(struct vm *vm, enum vm_end end, void *arg)
{
	((struct tvm *)arg)->ended = true;
	reactor_stop(R);
}

static void
paused_cb(struct vm *vm, void *arg)
{
	((struct tvm *)arg)->paused = true;
	reactor_stop(R);
}

/* The last complete "snap: counter N fs-reads R echoes E" line at or
 * after `from`; false if none. */
static bool
last_counter(const struct tvm *t, size_t from, uint64_t *n, uint64_t *reads,
    uint64_t *echoes)
{
	const char		*p = t->text + from, *q;
	unsigned long long	 a, b, c;
	bool			 found = false;

	while ((q = strstr(p, "snap: counter ")) != NULL) {
		if (strchr(q, '\n') == NULL)
			break;
		if (sscanf(q, "snap: counter %llu fs-reads %llu echoes %llu",
		    &a, &b, &c) == 3) {
			*n = a;
			*reads = b;
			*echoes = c;
			found = true;
		}
		p = q + 1;
	}
	return found;
}

/* Run the reactor until cond(t) or `sec` seconds pass. */
static bool
wait_for(struct tvm *t, bool (*cond)(struct tvm *), unsigned sec)
{
	struct timespec	a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (;;) {
		if (cond(t))
			return true;
		if (strstr(t->text, "TESTGUEST FAIL") != NULL || t->ended)
			return false;
		clock_gettime(CLOCK_MONOTONIC, &b);
		if (b.tv_sec - a.tv_sec >= sec)
			return false;
		run_for(20000);
	}
}

static bool
is_paused(struct tvm *t)
{
	return t->paused;
}

static bool
counting(struct tvm *t)
{
	uint64_t	n, r, e;

	return last_counter(t, 0, &n, &r, &e) && n >= 3 * PRINT_EVERY;
}

static uint64_t	want_echoes;

static bool
echoed(struct tvm *t)
{
	uint64_t	n, r, e;

	return last_counter(t, 0, &n, &r, &e) && e >= want_echoes;
}

/* A host connection through the hybrid vsock socket, on a thread (the
 * reactor must keep running meanwhile). */
struct conn {
	const char	*path;
	char		 msg[64];
	int		 fd;
	int		 error;		/* 0 ok, else errno-like */
	char		 why[128];
	atomic_bool	 done;
};

static int
read_line(int fd, char *buf, size_t cap)
{
	struct pollfd	p = { fd, POLLIN, 0 };
	size_t		n = 0;
	ssize_t		r;

	while (n < cap - 1) {
		if (poll(&p, 1, 20000) != 1)
			return -ETIMEDOUT;
		if ((r = read(fd, buf + n, 1)) != 1)
			return r == 0 ? -EPIPE : -errno;
		if (buf[n++] == '\n')
			break;
	}
	buf[n] = '\0';
	return 0;
}

static void *
conn_thread(void *arg)
{
	struct conn		*c = arg;
	struct sockaddr_un	 sa;
	char			 line[128];
	size_t			 len = strlen(c->msg);
	int			 rc;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", c->path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd == -1 || connect(c->fd, (struct sockaddr *)&sa,
	    sizeof(sa)) == -1) {
		snprintf(c->why, sizeof(c->why), "connect %s: %s", c->path,
		    strerror(errno));
		goto fail;
	}
	snprintf(line, sizeof(line), "CONNECT %d\n", PORT);
	if (write(c->fd, line, strlen(line)) != (ssize_t)strlen(line) ||
	    (rc = read_line(c->fd, line, sizeof(line))) != 0 ||
	    strncmp(line, "OK ", 3) != 0) {
		snprintf(c->why, sizeof(c->why), "CONNECT %d: no OK", PORT);
		goto fail;
	}
	if (write(c->fd, c->msg, len) != (ssize_t)len ||
	    (rc = read_line(c->fd, line, sizeof(line))) != 0 ||
	    strcmp(line, c->msg) != 0) {
		snprintf(c->why, sizeof(c->why), "no echo of '%.*s'",
		    (int)len - 1, c->msg);
		goto fail;
	}
	atomic_store(&c->done, true);
	return NULL;
fail:
	c->error = 1;
	atomic_store(&c->done, true);
	return NULL;
}

/* Connect, send msg, get it back; keeps the connection open in c->fd. */
static int
echo(struct conn *c, const char *path, const char *msg)
{
	pthread_t	t;
	time_t		start = time(NULL);

	memset(c, 0, sizeof(*c));
	c->path = path;
	c->fd = -1;
	snprintf(c->msg, sizeof(c->msg), "%s\n", msg);
	atomic_init(&c->done, false);
	if (pthread_create(&t, NULL, conn_thread, c) != 0)
		return -1;
	while (!atomic_load(&c->done) && time(NULL) - start < 30)
		run_for(10000);
	if (!atomic_load(&c->done))
		fatalx("vsock helper thread stuck");
	pthread_join(t, NULL);
	if (c->error != 0)
		tap_diag("vsock %s: %s", path, c->why);
	return c->error != 0 ? -1 : 0;
}

static int
tvm_init(struct tvm *t, const char *name)
{
	memset(t, 0, sizeof(*t));
	t->text = xcalloc(1, OUT_MAX);
	xasprintf(&t->vsock, "%s/%s", tmpdir, name);
	if (pipe2(t->out, O_CLOEXEC | O_NONBLOCK) != 0)
		return -1;
	t->out_ev = reactor_add_fd(R, t->out[0], REACTOR_READ, out_cb, t);
	return t->out_ev == NULL ? -1 : 0;
}

static void
tvm_end(struct tvm *t)
{
	if (t->vm != NULL && vm_paused(t->vm))
		vm_resume(t->vm);
	if (t->vm != NULL && !t->ended) {
		vm_stop(t->vm, VM_END_STOPPED);
		while (!t->ended)
			run_for(20000);
	}
	vm_free(t->vm);
	t->vm = NULL;
	if (t->out_ev != NULL) {
		reactor_del_fd(t->out_ev);
		close(t->out[0]);
		close(t->out[1]);
		t->out_ev = NULL;
	}
	free(t->text);
	free(t->vsock);
	t->text = t->vsock = NULL;
}

static void
snap_done_cb(int error, const char *reason, void *arg)
{
	if (error != 0)
		tap_diag("snapshot write: %s", reason);
	captured = error == 0;
	*(bool *)arg = true;
	reactor_stop(R);
}

static bool
past_snapshot(struct tvm *t)
{
	uint64_t	n, r, e;

	return last_counter(t, 0, &n, &r, &e) && n > snap_counter;
}

/* Boot the guest, let it count, open a vsock connection, snapshot it. */
static int
t_capture(void)
{
	struct vm_config	 c;
	struct conn		 conn;
	struct timespec		 a, b;
	uint64_t		 r, e;
	char			 err[256];
	bool			 written = false;
	int			 rc = TAP_FAIL;

	conn.fd = -1;
	if (tvm_init(&orig, "vsock-orig") != 0)
		return TAP_FAIL;
	memset(&c, 0, sizeof(c));
	c.kernel = guest;
	c.cmdline = "snap-loop=5000";
	c.ncpus = 1;
	c.memory_mib = 64;
	c.console_fd = orig.out[1];
	c.console_in_fd = -1;
	c.hvc_fd = -1;
	c.vsock_path = orig.vsock;
	c.shares[0].path = share;
	c.shares[0].tag = "snapfs";
	c.shares[0].readonly = true;
	c.nshares = 1;
	if ((orig.vm = vm_create(R, &c, err, sizeof(err))) == NULL) {
		tap_diag("vm_create: %s", err);
		return TAP_FAIL;
	}
	TAP_CHECK_GOTO(vm_start(orig.vm, ended_cb, &orig) == 0, out);
	if (!wait_for(&orig, counting, 60)) {
		tap_diag("the guest did not start counting: %s", orig.text);
		goto out;
	}
	/* An open connection at snapshot time: clones must see it reset. */
	if (echo(&conn, orig.vsock, "before the snapshot") != 0)
		goto out;
	want_echoes = 1;
	if (!wait_for(&orig, echoed, 30)) {
		tap_diag("the echo is not counted: %s", orig.text);
		goto out;
	}
	TAP_CHECK_GOTO(vm_pause(orig.vm, paused_cb, &orig) == 0, out);
	TAP_CHECK_GOTO(wait_for(&orig, is_paused, 20), out);
	run_for(10000);			/* drain the console pipe */
	TAP_CHECK_GOTO(last_counter(&orig, 0, &snap_counter, &r, &e), out);
	tap_diag("snapshot at counter %llu (fs-reads %llu, echoes %llu)",
	    (unsigned long long)snap_counter, (unsigned long long)r,
	    (unsigned long long)e);
	TAP_CHECK_GOTO(e >= 1, out);
	clock_gettime(CLOCK_MONOTONIC, &a);
	if (snapshot_capture(orig.vm, R, snapdir, snap_done_cb, &written, err,
	    sizeof(err)) != 0) {
		tap_diag("snapshot_capture: %s", err);
		goto out;
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	/* RAM is frozen at the capture call: the original goes on (and
	 * writes its RAM) while the files are written. */
	vm_resume(orig.vm);
	tap_diag("capture call (the machine paused): %.1f ms",
	    (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6);
	while (!written)
		run_for(20000);
	clock_gettime(CLOCK_MONOTONIC, &b);
	tap_diag("capture of 64 MiB on disk: %.1f ms", (b.tv_sec - a.tv_sec) *
	    1e3 + (b.tv_nsec - a.tv_nsec) / 1e6);
	TAP_CHECK_GOTO(captured, out);
	/* The original goes on counting. */
	TAP_CHECK_GOTO(wait_for(&orig, past_snapshot, 30), out);
	rc = TAP_PASS;
out:
	if (conn.fd != -1)
		close(conn.fd);
	tvm_end(&orig);
	return rc;
}

/* The clone printed two complete counter lines of its own. */
static bool
clone_counting(struct tvm *t)
{
	const char	*nl = strchr(t->text, '\n');
	uint64_t	 n, r, e;

	return nl != NULL && last_counter(t, (size_t)(nl + 1 - t->text), &n,
	    &r, &e) && n >= snap_counter + 2 * PRINT_EVERY &&
	    strstr(t->text, "snap: vsock transport reset") != NULL;
}

/* Restore one clone, check it goes on from the snapshot, pause it. */
static int
one_clone(unsigned i)
{
	struct snapshot_restore_opts	 o;
	struct tvm			*t = &clones[i];
	struct conn			 conn;
	const char			*nl, *p;
	uint64_t			 n, r, e, first;
	unsigned long long		 a, b, c;
	char				 name[32], err[256];
	int				 rc = TAP_FAIL;

	conn.fd = -1;
	snprintf(name, sizeof(name), "vsock-%u", i);
	if (tvm_init(t, name) != 0)
		return TAP_FAIL;
	snapshot_restore_opts_init(&o);
	o.console_fd = t->out[1];
	o.vsock_path = t->vsock;
	if ((t->vm = snapshot_restore(R, snapdir, &o, err,
	    sizeof(err))) == NULL) {
		tap_diag("clone %u: %s", i, err);
		return TAP_FAIL;
	}
	if (vm_start(t->vm, ended_cb, t) != 0)
		return TAP_FAIL;
	if (!wait_for(t, clone_counting, 60)) {
		tap_diag("clone %u did not go on: %s", i, t->text);
		return TAP_FAIL;
	}
	/* Not a new boot, and no failure. */
	TAP_CHECK(strstr(t->text, "testguest: hello") == NULL);
	TAP_CHECK(strstr(t->text, "snap: ready") == NULL);
	/* The first complete counter line follows the snapshot's. */
	nl = strchr(t->text, '\n');
	p = strstr(nl + 1, "snap: counter ");
	TAP_CHECK(p != NULL && sscanf(p, "snap: counter %llu fs-reads %llu "
	    "echoes %llu", &a, &b, &c) == 3);
	first = a;
	if (first <= snap_counter || first > snap_counter + 2 * PRINT_EVERY ||
	    b != a) {
		tap_diag("clone %u: first counter %llu (fs-reads %llu) after a "
		    "snapshot at %llu", i, a, b,
		    (unsigned long long)snap_counter);
		return TAP_FAIL;
	}
	/* A new connection echoes. */
	TAP_CHECK(last_counter(t, 0, &n, &r, &e));
	snprintf(name, sizeof(name), "hello clone %u", i);
	if (echo(&conn, t->vsock, name) != 0)
		goto out;
	want_echoes = e + 1;
	if (!wait_for(t, echoed, 30)) {
		tap_diag("clone %u: echo not counted: %s", i, t->text);
		goto out;
	}
	TAP_CHECK_GOTO(vm_pause(t->vm, paused_cb, t) == 0, out);
	TAP_CHECK_GOTO(wait_for(t, is_paused, 20), out);
	rc = TAP_PASS;
out:
	if (conn.fd != -1)
		close(conn.fd);
	return rc;
}

static int
t_clones(void)
{
	unsigned	i;
	struct timespec	a, b;

	if (!captured)
		return TAP_FAIL;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (i = 0; i < NCLONES; i++)
		if (one_clone(i) != TAP_PASS)
			return TAP_FAIL;
	clock_gettime(CLOCK_MONOTONIC, &b);
	tap_diag("%d clones restored and checked in %.1f s", NCLONES,
	    (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
	return TAP_PASS;
}

/* Sum the smaps fields of every mapping of the memory file. */
static int
t_pss(void)
{
	FILE		*f;
	char		 line[4096], *mem;
	bool		 in = false;
	unsigned long	 v, rss = 0, pss = 0, shared = 0, priv = 0;
	unsigned	 maps = 0;

	if (!captured)
		return TAP_FAIL;
	xasprintf(&mem, "%s/memory", snapdir);
	if ((f = fopen("/proc/self/smaps", "re")) == NULL)
		return TAP_FAIL;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strchr(line, '-') != NULL && strchr(line, ':') != NULL &&
		    line[0] != ' ' && strstr(line, " kB") == NULL) {
			line[strcspn(line, "\n")] = '\0';
			in = strlen(line) >= strlen(mem) && strcmp(line +
			    strlen(line) - strlen(mem), mem) == 0;
			maps += in;
			continue;
		}
		if (!in)
			continue;
		if (sscanf(line, "Rss: %lu kB", &v) == 1)
			rss += v;
		else if (sscanf(line, "Pss: %lu kB", &v) == 1)
			pss += v;
		/* Shared_Dirty too: pages written by the capture may not be
		 * written back yet; they are shared all the same. */
		else if (sscanf(line, "Shared_Clean: %lu kB", &v) == 1 ||
		    sscanf(line, "Shared_Dirty: %lu kB", &v) == 1)
			shared += v;
		else if (sscanf(line, "Private_Dirty: %lu kB", &v) == 1)
			priv += v;
	}
	fclose(f);
	free(mem);
	tap_diag("%u mappings of the memory file: Rss %lu kB, Pss %lu kB, "
	    "shared %lu kB, Private_Dirty %lu kB (%lu kB per clone)",
	    maps, rss, pss, shared, priv, priv / (maps ? maps : 1));
	TAP_CHECK(maps == NCLONES);
	/* Pages no clone wrote are shared by all: each counts 1/20th. */
	TAP_CHECK(shared > 0);
	TAP_CHECK(pss * 2 < rss);
	return TAP_PASS;
}

/*
 * The hv layer alone: a vCPU's and a VM's state saved on one KVM VM and
 * restored on another reads back the same; broken blobs are refused.
 */
static int
t_hv_roundtrip(void)
{
	struct hv	*a = NULL, *b = NULL;
	struct hv_vcpu	*va = NULL, *vb = NULL;
	struct hv_regs	 r, got;
	struct hv_sregs	 sr, sgot;
	uint8_t		*vbuf = NULL, *mbuf = NULL, *again = NULL;
	size_t		 vlen = 0, mlen = 0, alen = 0;
	int		 rc = TAP_FAIL;

	TAP_CHECK_GOTO(hv_create(&a, 1) == 0 && hv_create(&b, 1) == 0, out);
	TAP_CHECK_GOTO(hv_vcpu_create(a, 0, &va) == 0, out);
	TAP_CHECK_GOTO(hv_vcpu_create(b, 0, &vb) == 0, out);
	TAP_CHECK_GOTO(hv_vcpu_get_regs(va, &r) == 0, out);
	TAP_CHECK_GOTO(hv_vcpu_get_sregs(va, &sr) == 0, out);
	r.rax = 0x1122334455667788ULL;
	r.r13 = 0x13;
	r.rip = 0x4321;
	sr.cr2 = 0xdead000;
	TAP_CHECK_GOTO(hv_vcpu_set_sregs(va, &sr) == 0, out);
	TAP_CHECK_GOTO(hv_vcpu_set_regs(va, &r) == 0, out);
	TAP_CHECK_GOTO(hv_vcpu_save(va, &vbuf, &vlen) == 0, out);
	TAP_CHECK_GOTO(hv_save(a, &mbuf, &mlen) == 0, out);
	tap_diag("vCPU state %zu bytes, VM state %zu bytes", vlen, mlen);
	TAP_CHECK_GOTO(hv_restore(b, mbuf, mlen) == 0, out);
	TAP_CHECK_GOTO(hv_vcpu_restore(vb, vbuf, vlen) == 0, out);
	TAP_CHECK_GOTO(hv_vcpu_get_regs(vb, &got) == 0, out);
	TAP_CHECK_GOTO(hv_vcpu_get_sregs(vb, &sgot) == 0, out);
	TAP_CHECK_GOTO(memcmp(&got, &r, sizeof(r)) == 0, out);
	TAP_CHECK_GOTO(sgot.cr2 == sr.cr2 && sgot.cr0 == sr.cr0 &&
	    sgot.efer == sr.efer && sgot.apic_base == sr.apic_base, out);
	/* Saved again, the restored vCPU gives a blob of the same shape. */
	TAP_CHECK_GOTO(hv_vcpu_save(vb, &again, &alen) == 0 && alen == vlen,
	    out);
	/* Broken blobs: truncated (bad framing), another magic. */
	TAP_CHECK_GOTO(hv_vcpu_restore(vb, vbuf, vlen - 3) == -EINVAL, out);
	TAP_CHECK_GOTO(hv_vcpu_restore(vb, vbuf, 4) == -EINVAL, out);
	TAP_CHECK_GOTO(hv_restore(b, vbuf, vlen) == -EPROTO, out);
	TAP_CHECK_GOTO(hv_vcpu_restore(vb, mbuf, mlen) == -EPROTO, out);
	rc = TAP_PASS;
out:
	free(vbuf);
	free(mbuf);
	free(again);
	hv_vcpu_destroy(va);
	hv_vcpu_destroy(vb);
	hv_destroy(a);
	hv_destroy(b);
	return rc;
}

static uint64_t	diff_counter;	/* last counter before the diff */

/* Two complete counter lines past diff_counter. */
static bool
past_diff(struct tvm *t)
{
	uint64_t	n, r, e;

	return last_counter(t, 0, &n, &r, &e) &&
	    n >= diff_counter + 2 * PRINT_EVERY;
}

/* Pages set in a bitmap of npages bits. */
static uint64_t
popcount(const uint64_t *bm, uint64_t npages)
{
	uint64_t	i, n = 0;

	for (i = 0; i < (npages + 63) / 64; i++)
		n += (uint64_t)__builtin_popcountll(bm[i]);
	return n;
}

/*
 * Diff snapshots on KVM: a clone restored with dirty logging counts;
 * KVM's log names the pages it wrote (a few), and nothing once read
 * while paused; a diff against the snapshot holds far fewer pages than
 * RAM, and BASE + diff goes on counting from the diff point.
 */
static int
t_diff(void)
{
	struct snapshot_restore_opts	 o;
	struct tvm			 a, b;
	struct stat			 st;
	uint64_t			*bm = NULL, size, n, r, e, logged;
	const char			*nl, *p;
	unsigned long long		 first;
	char				*ddir, *pages, err[256];
	int				 rc = TAP_FAIL;

	if (!captured)
		return TAP_FAIL;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	xasprintf(&ddir, "%s/diff", tmpdir);
	xasprintf(&pages, "%s/pages", ddir);
	if (tvm_init(&a, "vsock-da") != 0 || tvm_init(&b, "vsock-db") != 0)
		goto out;
	snapshot_restore_opts_init(&o);
	o.console_fd = a.out[1];
	o.vsock_path = a.vsock;
	o.track_dirty = true;
	if ((a.vm = snapshot_restore(R, snapdir, &o, err,
	    sizeof(err))) == NULL) {
		tap_diag("restore: %s", err);
		goto out;
	}
	vm_ram(a.vm, &size);
	bm = xcalloc((size / 4096 + 63) / 64, sizeof(*bm));
	TAP_CHECK_GOTO(vm_start(a.vm, ended_cb, &a) == 0, out);
	TAP_CHECK_GOTO(wait_for(&a, clone_counting, 60), out);
	TAP_CHECK_GOTO(vm_pause(a.vm, paused_cb, &a) == 0, out);
	TAP_CHECK_GOTO(wait_for(&a, is_paused, 20), out);
	TAP_CHECK_GOTO(vm_dirty_log(a.vm, bm) == 0, out);
	logged = popcount(bm, size / 4096);
	memset(bm, 0, (size / 4096 + 63) / 64 * sizeof(*bm));
	TAP_CHECK_GOTO(vm_dirty_log(a.vm, bm) == 0, out);
	tap_diag("dirty log: %llu of %llu pages, then %llu",
	    (unsigned long long)logged, (unsigned long long)(size / 4096),
	    (unsigned long long)popcount(bm, size / 4096));
	TAP_CHECK_GOTO(logged > 0 && logged < size / 4096 / 16 &&
	    popcount(bm, size / 4096) == 0, out);
	TAP_CHECK_GOTO(last_counter(&a, 0, &n, &r, &e), out);
	diff_counter = n;
	if (snapshot_save_diff(a.vm, snapdir, ddir, err, sizeof(err)) != 0) {
		tap_diag("diff: %s", err);
		goto out;
	}
	TAP_CHECK_GOTO(stat(pages, &st) == 0, out);
	tap_diag("diff at counter %llu: %lld bytes of pages, RAM %llu",
	    (unsigned long long)n, (long long)st.st_size,
	    (unsigned long long)size);
	TAP_CHECK_GOTO((uint64_t)st.st_size < size / 16, out);
	tvm_end(&a);
	snapshot_restore_opts_init(&o);
	o.console_fd = b.out[1];
	o.vsock_path = b.vsock;
	if ((b.vm = snapshot_restore(R, ddir, &o, err, sizeof(err))) == NULL) {
		tap_diag("restore the diff: %s", err);
		goto out;
	}
	TAP_CHECK_GOTO(vm_start(b.vm, ended_cb, &b) == 0, out);
	if (!wait_for(&b, past_diff, 60)) {
		tap_diag("BASE + diff did not go on: %s", b.text);
		goto out;
	}
	nl = strchr(b.text, '\n');
	p = nl != NULL ? strstr(nl + 1, "snap: counter ") : NULL;
	TAP_CHECK_GOTO(p != NULL && sscanf(p, "snap: counter %llu",
	    &first) == 1, out);
	tap_diag("BASE + diff: first counter %llu after %llu", first,
	    (unsigned long long)diff_counter);
	TAP_CHECK_GOTO(first > diff_counter &&
	    first <= diff_counter + 2 * PRINT_EVERY, out);
	TAP_CHECK_GOTO(strstr(b.text, "snap: ready") == NULL &&
	    strstr(b.text, "TESTGUEST FAIL") == NULL, out);
	rc = TAP_PASS;
out:
	tvm_end(&a);
	tvm_end(&b);
	free(bm);
	free(ddir);
	free(pages);
	return rc;
}

static const struct tap_case cases[] = {
	{ "hv: vCPU and VM state round trip between two VMs", t_hv_roundtrip },
	{ "snapshot a counting guest with vsock and FUSE open", t_capture },
	{ "20 clones go on from the snapshot with working devices",
	    t_clones },
	{ "the clones share their clean pages (PSS)", t_pss },
	{ "diff snapshot: KVM dirty log, BASE + diff goes on", t_diff },
};

int
main(void)
{
	const char	*top = getenv("top_builddir");
	char		*path, *cmd;
	FILE		*f;
	unsigned	 i;
	int		 rc;

	log_init("snapshot_test", LOG_NORMAL);
	if (access("/dev/kvm", R_OK | W_OK) != 0) {
		printf("1..0 # SKIP /dev/kvm: %s\n", strerror(errno));
		return 77;
	}
	snprintf(guest, sizeof(guest), "%s/tests/guest/testguest",
	    top != NULL ? top : ".");
	if (access(guest, R_OK) != 0) {
		printf("Bail out! %s: %s\n", guest, strerror(errno));
		return 1;
	}
	if (mkdtemp(tmpdir) == NULL)
		fatal("mkdtemp");
	xasprintf(&share, "%s/share", tmpdir);
	xasprintf(&snapdir, "%s/snap", tmpdir);
	xasprintf(&path, "%s/hello.txt", share);
	if (mkdir(share, 0755) != 0 || (f = fopen(path, "w")) == NULL ||
	    fputs(HELLO, f) == EOF || fclose(f) != 0)
		fatal("%s", path);
	free(path);
	if ((R = reactor_create()) == NULL)
		fatal("reactor");
	rc = tap_run(cases, ARRAY_SIZE(cases), 600);
	for (i = 0; i < NCLONES; i++)
		tvm_end(&clones[i]);
	reactor_free(R);
	xasprintf(&cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		rc = 1;
	free(cmd);
	return rc;
}
