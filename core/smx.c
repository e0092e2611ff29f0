/*
 * libsmx: the public API over the VM object and the reactor.
 */
#include <sys/file.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "core/agent.h"
#include "core/agent_wire.h"
#include "core/kernel_key.h"
#include "core/smx.h"
#include "core/vm.h"
#include "image/image.h"
#include "snapshot/snapshot.h"

struct smx {
	struct reactor		*r;
	struct reactor_signal	*sigint, *sigterm;
	unsigned		 running;
	int			 stop_signal;
	struct smx_vm		*vms;	/* every live machine */
};

struct smx_vm {
	struct smx		*smx;
	struct vm		*vm;
	char			*rundir;	/* ours to remove, or NULL */
	char			*vsock;
	enum smx_end		 end;
	char			 detail[128];
	struct smx_vm		*next;

	/* Machines started from an image (smx_vm_start). */
	struct smx_image	*img;
	char			*name;
	struct hello		*hello;		/* the agent's ready port */
	bool			 ready;
	bool			 restored;	/* made from a snapshot */
	struct ctl		*ctl;		/* control socket, or NULL */
	LIST_HEAD(, publish)	 publishes;
	LIST_HEAD(, bridge)	 bridges;
};

static void	vm_agent_free(struct smx_vm *);
static void	ctl_free(struct ctl *);
static int	restore_vm(struct smx *, const char *, const char *,
		    const char *, int, uint64_t, struct smx_image *,
		    struct smx_vm **, char *, size_t);
static char	*bake_store_dir(const struct smx_image *);
static int	bake_usable(const char *, const char *, const char *,
		    uint32_t, uint64_t, const char **);
static int	bake_after_boot(struct smx_vm *, const char *, const char *,
		    const char *, const char *);

static const char default_cmdline[] =
    "console=ttyS0 reboot=k panic=-1";

const char *
smx_version(void)
{
	return PACKAGE_VERSION;
}

const char *
smx_end_name(enum smx_end end)
{
	return vm_end_name((enum vm_end)end);
}

enum smx_kvm
smx_kvm_probe(const char **why)
{
	switch (hv_probe(why)) {
	case HV_KIND_HARDWARE:
		return SMX_KVM_HARDWARE;
	case HV_KIND_PVM:
		return SMX_KVM_PVM;
	default:
		return SMX_KVM_ABSENT;
	}
}

/* SIGINT / SIGTERM: stop every machine; smx_run() returns once they
 * have all ended and their threads are joined. */
static void
smx_signal_cb(int signo, void *arg)
{
	struct smx	*smx = arg;
	struct smx_vm	*v;

	if (smx->stop_signal == 0)
		smx->stop_signal = signo;
	for (v = smx->vms; v != NULL; v = v->next)
		vm_stop(v->vm, VM_END_STOPPED);
	if (smx->running == 0)
		reactor_stop(smx->r);
}

int
smx_open(struct smx **out, unsigned flags)
{
	struct smx	*smx;

	smx = xcalloc(1, sizeof *smx);
	if ((smx->r = reactor_create()) == NULL) {
		free(smx);
		return -ENOMEM;
	}
	if (flags & SMX_OPEN_SIGNALS) {
		smx->sigint = reactor_add_signal(smx->r, SIGINT, smx_signal_cb,
		    smx);
		smx->sigterm = reactor_add_signal(smx->r, SIGTERM,
		    smx_signal_cb, smx);
		if (smx->sigint == NULL || smx->sigterm == NULL) {
			smx_close(smx);
			return -errno;
		}
	}
	*out = smx;
	return 0;
}

void
smx_close(struct smx *smx)
{
	if (smx == NULL)
		return;
	if (smx->vms != NULL)
		fatalx("smx_close with machines still allocated");
	if (smx->sigint != NULL)
		reactor_del_signal(smx->sigint);
	if (smx->sigterm != NULL)
		reactor_del_signal(smx->sigterm);
	reactor_free(smx->r);
	free(smx);
}

int
smx_run(struct smx *smx)
{
	if (smx->running == 0)
		return 0;
	return reactor_run(smx->r);
}

int
smx_stop_signal(const struct smx *smx)
{
	return smx->stop_signal;
}

void
smx_boot_opts_init(struct smx_boot_opts *o)
{
	memset(o, 0, sizeof *o);
	o->size = sizeof *o;
	o->cpus = 1;
	o->memory_mib = 256;
	o->console_fd = 1;
	o->console_in_fd = -1;
	o->devices = SMX_DEV_RNG | SMX_DEV_BALLOON | SMX_DEV_VSOCK;
}

/* Where machines keep their sockets: $SMX_RUNDIR, else /run/smx as root
 * (tmpfs, gone at reboot like the sockets' owners), else
 * $XDG_RUNTIME_DIR/smx, else $SMX_HOME/run.  Not $SMX_HOME itself as
 * root: it may sit on a filesystem without Unix sockets (9p, NFS). */
static char *
run_base(void)
{
	const char	*env;
	char		*base;

	if ((env = getenv("SMX_RUNDIR")) != NULL && *env != '\0')
		return xstrdup(env);
	if (geteuid() == 0)
		return xstrdup("/run/smx");
	if ((env = getenv("XDG_RUNTIME_DIR")) != NULL && *env != '\0')
		xasprintf(&base, "%s/smx", env);
	else
		xasprintf(&base, "%s/run", smx_home());
	return base;
}

/* A fresh private directory for one machine's sockets.  NULL + errno. */
static char *
make_rundir(void)
{
	static unsigned	 seq;
	char		*run, *dir = NULL;
	int		 saved;

	run = run_base();
	if (mkdir(run, 0755) == -1 && errno != EEXIST)
		goto out;
	xasprintf(&dir, "%s/vm-%ld-%u", run, (long)getpid(), seq++);
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		saved = errno;
		free(dir);
		dir = NULL;
		errno = saved;
	}
out:
	saved = errno;
	free(run);
	errno = saved;
	return dir;
}

/* Remove a run directory and the sockets left in it. */
static void
remove_rundir(const char *dir)
{
	DIR		*d;
	struct dirent	*e;

	if ((d = opendir(dir)) != NULL) {
		while ((e = readdir(d)) != NULL)
			if (e->d_name[0] != '.')
				unlinkat(dirfd(d), e->d_name, 0);
		closedir(d);
	}
	rmdir(dir);
}

const char *
smx_default_cmdline(void)
{
	return default_cmdline;
}

static void
smx_vm_end_cb(struct vm *vm, enum vm_end end, void *arg)
{
	struct smx_vm	*v = arg;
	struct smx	*smx = v->smx;

	v->end = (enum smx_end)end;
	snprintf(v->detail, sizeof v->detail, "%s", vm_end_detail(vm));
	/* Nothing reaches a guest that is gone: close its ports. */
	vm_agent_free(v);
	if (--smx->running == 0)
		reactor_stop(smx->r);
}

int
smx_boot(struct smx *smx, const struct smx_boot_opts *o, struct smx_vm **out,
    char *err, size_t errlen)
{
	struct smx_boot_opts	 opts;
	struct vm_config	 cfg;
	struct smx_vm		*v;
	char			 dummy[8];
	int			 error;

	if (err == NULL) {
		err = dummy;
		errlen = sizeof dummy;
	}
	/* Accept older, shorter option structs: what they lack keeps its
	 * default. */
	smx_boot_opts_init(&opts);
	if (o->size < offsetof(struct smx_boot_opts, kernel) ||
	    o->size > sizeof opts) {
		snprintf(err, errlen, "smx_boot: bad options size %zu", o->size);
		return -EINVAL;
	}
	memcpy(&opts, o, o->size);
	if (opts.kernel == NULL) {
		snprintf(err, errlen, "no kernel given");
		return -EINVAL;
	}
	if (opts.ndisks > VM_MAX_DISKS) {
		snprintf(err, errlen, "%u disks: at most %d", opts.ndisks,
		    VM_MAX_DISKS);
		return -EINVAL;
	}
	if (opts.nshares > VM_MAX_SHARES) {
		snprintf(err, errlen, "%u shares: at most %d", opts.nshares,
		    VM_MAX_SHARES);
		return -EINVAL;
	}
	if (opts.balloon_target_mib > opts.memory_mib) {
		snprintf(err, errlen, "balloon target %llu MiB: more than the "
		    "%llu MiB of memory",
		    (unsigned long long)opts.balloon_target_mib,
		    (unsigned long long)opts.memory_mib);
		return -EINVAL;
	}
	if (opts.balloon_target_mib != 0 &&
	    !(opts.devices & SMX_DEV_BALLOON)) {
		snprintf(err, errlen, "a balloon target needs the balloon");
		return -EINVAL;
	}
	v = xcalloc(1, sizeof *v);
	v->smx = smx;
	memset(&cfg, 0, sizeof cfg);
	cfg.rng = (opts.devices & SMX_DEV_RNG) != 0;
	cfg.balloon = (opts.devices & SMX_DEV_BALLOON) != 0;
	cfg.balloon_target_mib = opts.balloon_target_mib;
	cfg.hvc = (opts.devices & SMX_DEV_HVC) != 0;
	cfg.hvc_fd = opts.console_fd;
	if (opts.devices & SMX_DEV_VSOCK) {
		if (opts.vsock_path != NULL)
			v->vsock = xstrdup(opts.vsock_path);
		else if ((v->rundir = make_rundir()) != NULL)
			xasprintf(&v->vsock, "%s/vsock", v->rundir);
		else {
			snprintf(err, errlen, "cannot create the machine's run "
			    "directory (set SMX_RUNDIR?): %s", strerror(errno));
			error = -errno;
			goto err_free;
		}
		cfg.vsock_path = v->vsock;
		cfg.vsock_cid = opts.vsock_cid;
	}
	for (unsigned i = 0; i < opts.ndisks; i++) {
		cfg.disks[i].path = opts.disks[i].path;
		cfg.disks[i].readonly = opts.disks[i].readonly != 0;
	}
	cfg.ndisks = opts.ndisks;
	for (unsigned i = 0; i < opts.nshares; i++) {
		cfg.shares[i].path = opts.shares[i].path;
		cfg.shares[i].tag = opts.shares[i].tag;
		cfg.shares[i].readonly = opts.shares[i].readonly != 0;
		cfg.shares[i].dax = opts.shares[i].dax != 0;
		/* An overflowing size stays invalid (vm_create refuses it). */
		cfg.shares[i].dax_window = opts.shares[i].dax_window_mib >
		    (UINT64_MAX >> 20) ? UINT64_MAX :
		    opts.shares[i].dax_window_mib << 20;
	}
	cfg.nshares = opts.nshares;
	cfg.kernel = opts.kernel;
	cfg.initrd = opts.initrd;
	cfg.cmdline = opts.cmdline != NULL ? opts.cmdline : default_cmdline;
	cfg.ncpus = opts.cpus;
	cfg.memory_mib = opts.memory_mib;
	cfg.console_fd = opts.console_fd;
	cfg.console_in_fd = opts.console_in_fd;

	if ((v->vm = vm_create(smx->r, &cfg, err, errlen)) == NULL) {
		error = -EINVAL;
		goto err_free;
	}
	if ((error = vm_start(v->vm, smx_vm_end_cb, v)) != 0) {
		snprintf(err, errlen, "cannot start the machine: %s",
		    strerror(-error));
		goto err_free;
	}
	smx->running++;
	v->next = smx->vms;
	smx->vms = v;
	*out = v;
	return 0;

err_free:
	vm_free(v->vm);
	if (v->rundir != NULL)
		remove_rundir(v->rundir);
	free(v->rundir);
	free(v->vsock);
	free(v);
	return error;
}

const char *
smx_vm_vsock_path(const struct smx_vm *v)
{
	return v->vsock;
}

void
smx_vm_stop(struct smx_vm *v)
{
	vm_stop(v->vm, VM_END_STOPPED);
}

enum smx_end
smx_vm_end(const struct smx_vm *v)
{
	return v->end;
}

const char *
smx_vm_end_detail(const struct smx_vm *v)
{
	return v->detail;
}

void
smx_vm_free(struct smx_vm *v)
{
	struct smx_vm	**pp;

	if (v == NULL)
		return;
	if (v->end == SMX_END_RUNNING)
		fatalx("smx_vm_free of a running machine");
	for (pp = &v->smx->vms; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == v) {
			*pp = v->next;
			break;
		}
	}
	vm_agent_free(v);
	vm_free(v->vm);
	if (v->rundir != NULL)
		remove_rundir(v->rundir);
	free(v->rundir);
	free(v->vsock);
	free(v->name);
	smx_image_close(v->img);
	free(v);
}

/*
 * Images and containers.
 *
 * Every wait below (a pull, an unpack, the agent's HELLO, a request to
 * the agent) runs this runtime's reactor until the awaited thing is
 * done: the machine's vsock device is served by this very reactor, so
 * blocking the thread would wait forever.  Blocking work (unpacking, the
 * agent client) runs on a helper thread that posts its end back.
 */

#define WAIT_TICK_US	50000	/* how often a wait looks at its clock */
#define AGENT_MAX_FILE	(256u << 20)
#define META_MAX	(4u << 20)
#define DEFAULT_READY_MS 60000
#define BRIDGE_HIGH	(256 * 1024)	/* stop reading past this backlog */

struct smx_image {
	unsigned	 refs;
	char		*ref;		/* normalized */
	char		 digest[72];	/* manifest */
	char		*rootfs;	/* unpacked tree, shared read-only */
	char		**entrypoint, **cmd, **env;	/* NULL-terminated */
	char		*workdir, *user;
};

/* The agent's HELLO listener ("<vsock>_1025") and its connections. */
struct hello {
	struct smx_vm		*v;
	char			*path;
	int			 fd;
	struct reactor_fd	*rfd;
	bool			 waited;	/* smx_vm_start waits */
	struct hello_conn {
		struct hello		*h;
		int			 fd;
		struct reactor_fd	*rfd;
		uint8_t			 buf[512 + 1];	/* + a NUL */
		size_t			 len;
	}			 conns[4];
};

/* A published port and the connections bridged through it. */
struct publish {
	struct smx_vm		*v;
	struct evconnlistener	*l;
	uint16_t		 guest_port;
	LIST_ENTRY(publish)	 entry;
};

enum bridge_state { B_LINE, B_REPLY, B_OPEN };

struct bridge {
	struct smx_vm		*v;
	struct bufferevent	*tcp, *vs;
	enum bridge_state	 state;
	bool			 eof_tcp, eof_vs;	/* read side ended */
	bool			 shut_tcp, shut_vs;	/* we shut its write */
	LIST_ENTRY(bridge)	 entry;
};

/* Run the reactor until *done, the machine v (may be NULL) ended, or
 * deadline_ns (0: none) passed.  A periodic tick makes the loop look at
 * its conditions even when nothing else happens. */
static void
wait_tick_cb(void *arg)
{
	reactor_stop(arg);
}

#define WAIT_SIGNAL	0x1	/* also end on a stop signal: -EINTR */

static int
smx_wait(struct smx *smx, const volatile bool *done, struct smx_vm *v,
    uint64_t deadline_ns, unsigned flags)
{
	struct reactor_timer	*t;
	int			 error = 0;

	if ((t = reactor_add_timer(smx->r, WAIT_TICK_US, true, wait_tick_cb,
	    smx->r)) == NULL)
		return -errno;
	while (!*done) {
		if (v != NULL && v->end != SMX_END_RUNNING)
			break;
		if ((flags & WAIT_SIGNAL) && smx->stop_signal != 0) {
			error = -EINTR;
			break;
		}
		if (deadline_ns != 0 && now_ns() >= deadline_ns) {
			error = -ETIMEDOUT;
			break;
		}
		if ((error = reactor_run(smx->r)) != 0)
			break;
	}
	reactor_del_timer(t);
	return error;
}

/* Connect to a Unix socket without waiting: its listener may be
 * served by this very thread (the vsock), so a full backlog must fail,
 * not block. */
static int
dial_nonblock(const char *path)
{
	struct sockaddr_un	sa;
	int			fd, error;

	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == -1) {
		error = -errno;
		close(fd);
		return error;
	}
	return fd;
}

static char **
strv_dup_json(const cJSON *a)
{
	const cJSON	*e;
	char		**v;
	size_t		 n = 0;

	if (!cJSON_IsArray(a))
		return NULL;
	v = xcalloc((size_t)cJSON_GetArraySize(a) + 1, sizeof *v);
	cJSON_ArrayForEach(e, a)
		if (cJSON_IsString(e))
			v[n++] = xstrdup(e->valuestring);
	return v;
}

static void
strv_free(char **v)
{
	for (size_t i = 0; v != NULL && v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

static size_t
strv_len(const char *const *v)
{
	size_t	n = 0;

	while (v != NULL && v[n] != NULL)
		n++;
	return n;
}

/* Entrypoint, Cmd, Env, WorkingDir and User of the image's config. */
static int
image_read_config(struct image_store *s, struct smx_image *img, char *err,
    size_t errlen)
{
	uint8_t		*buf;
	size_t		 len;
	cJSON		*m, *c;
	const cJSON	*cd, *cfg, *x;
	int		 error;

	if ((error = image_store_get_blob(s, img->digest, META_MAX, &buf,
	    &len)) != 0) {
		snprintf(err, errlen, "%s: manifest %s: %s", img->ref,
		    img->digest, strerror(-error));
		return error;
	}
	m = cJSON_ParseWithLength((const char *)buf, len);
	free(buf);
	cd = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(m, "config"), "digest");
	if (!cJSON_IsString(cd) || !image_digest_valid(cd->valuestring)) {
		cJSON_Delete(m);
		snprintf(err, errlen, "%s: the manifest names no config",
		    img->ref);
		return -EINVAL;
	}
	error = image_store_get_blob(s, cd->valuestring, META_MAX, &buf, &len);
	cJSON_Delete(m);
	if (error != 0) {
		snprintf(err, errlen, "%s: config: %s (pull it again)",
		    img->ref, strerror(-error));
		return error;
	}
	c = cJSON_ParseWithLength((const char *)buf, len);
	free(buf);
	if (c == NULL) {
		snprintf(err, errlen, "%s: the config is not JSON", img->ref);
		return -EINVAL;
	}
	cfg = cJSON_GetObjectItemCaseSensitive(c, "config");
	img->entrypoint = strv_dup_json(
	    cJSON_GetObjectItemCaseSensitive(cfg, "Entrypoint"));
	img->cmd = strv_dup_json(cJSON_GetObjectItemCaseSensitive(cfg, "Cmd"));
	img->env = strv_dup_json(cJSON_GetObjectItemCaseSensitive(cfg, "Env"));
	x = cJSON_GetObjectItemCaseSensitive(cfg, "WorkingDir");
	if (cJSON_IsString(x) && x->valuestring[0] != '\0')
		img->workdir = xstrdup(x->valuestring);
	x = cJSON_GetObjectItemCaseSensitive(cfg, "User");
	if (cJSON_IsString(x) && x->valuestring[0] != '\0')
		img->user = xstrdup(x->valuestring);
	cJSON_Delete(c);
	return 0;
}

/* Take a caller's versioned option struct (its first member is its
 * size) over the defaults in dst: older, shorter structs keep the
 * defaults of the fields they lack.  NULL keeps every default. */
static int
opts_take(void *dst, size_t dsize, const void *src, const char *who,
    char *err, size_t errlen)
{
	size_t	size;

	if (src == NULL)
		return 0;
	memcpy(&size, src, sizeof size);
	if (size < sizeof(size_t) || size > dsize) {
		snprintf(err, errlen, "%s: bad options size %zu", who, size);
		return -EINVAL;
	}
	memcpy(dst, src, size);
	return 0;
}

void
smx_image_opts_init(struct smx_image_opts *o)
{
	memset(o, 0, sizeof *o);
	o->size = sizeof *o;
	o->pull = SMX_PULL_MISSING;
	o->progress_fd = -1;
}

struct pull_wait {
	struct smx	*smx;
	int		 progress_fd;
	bool		 done;
	int		 error;
	char		 message[256];
	char		 digest[72];
};

static void
pull_cb(const struct image_pull_event *ev, void *arg)
{
	struct pull_wait	*w = arg;

	switch (ev->kind) {
	case IMAGE_PULL_RESOLVED:
		if (w->progress_fd >= 0)
			dprintf(w->progress_fd, "resolved %s\n", ev->digest);
		break;
	case IMAGE_PULL_LAYER_DONE:
		if (w->progress_fd >= 0)
			dprintf(w->progress_fd, "layer %.19s done (%llu bytes)\n",
			    ev->digest, (unsigned long long)ev->total);
		break;
	case IMAGE_PULL_DONE:
	case IMAGE_PULL_FAILED:
		w->error = ev->kind == IMAGE_PULL_DONE ? 0 :
		    (ev->error != 0 ? ev->error : -EIO);
		snprintf(w->message, sizeof w->message, "%s",
		    ev->message != NULL ? ev->message : "the pull stopped");
		if (ev->digest != NULL)
			snprintf(w->digest, sizeof w->digest, "%s", ev->digest);
		w->done = true;
		reactor_stop(w->smx->r);
		break;
	default:
		break;
	}
}

/* Pull ref into s on this runtime's reactor. */
static int
image_pull_wait(struct smx *smx, struct image_store *s,
    const struct image_ref *ref, const char *name,
    const struct smx_image_opts *o, char *err, size_t errlen)
{
	struct image_pull_opts	 po;
	struct image_pull	*p;
	struct pull_wait	 w;
	const char		*insecure[2] = { NULL, NULL };
	int			 error;

	memset(&w, 0, sizeof w);
	w.smx = smx;
	w.progress_fd = o->progress_fd;
	image_pull_opts_init(&po);
	if (o->platform != NULL)
		po.platform = o->platform;
	if (o->insecure) {
		insecure[0] = ref->domain;
		po.insecure = insecure;
	}
	if (w.progress_fd >= 0)
		dprintf(w.progress_fd, "pulling %s\n", name);
	if ((p = image_pull_start(smx->r, s, ref, &po, pull_cb, &w)) == NULL) {
		error = -errno;
		snprintf(err, errlen, "cannot pull %s: %s", name,
		    errno == EINVAL ? "bad platform (want os/arch[/variant])" :
		    strerror(errno));
		return error;
	}
	/* Until it ends, or a signal (SMX_OPEN_SIGNALS) cancels it. */
	error = smx_wait(smx, &w.done, NULL, 0, WAIT_SIGNAL);
	if (!w.done) {
		/* A signal or a broken loop: cancel, and let it report. */
		image_pull_free(p);
		snprintf(err, errlen, "pulling %s was interrupted", name);
		return error != 0 ? error : -EINTR;
	}
	image_pull_free(p);
	if (w.error != 0) {
		if (strncmp(w.message, name, strlen(name)) == 0)
			snprintf(err, errlen, "%s", w.message);
		else
			snprintf(err, errlen, "cannot pull %s: %s", name,
			    w.message);
		return w.error;
	}
	return 0;
}

/* The rootfs unpack, on a helper thread. */
struct rootfs_job {
	struct smx		*smx;
	struct image_store	*s;
	const char		*digest;
	char			 path[4096];
	char			 err[256];
	int			 error;
	volatile bool		 done;
};

static void
rootfs_done_cb(void *arg)
{
	struct rootfs_job	*j = arg;

	j->done = true;
	reactor_stop(j->smx->r);
}

static void *
rootfs_main(void *arg)
{
	struct rootfs_job	*j = arg;

	j->error = image_rootfs_get(j->s, j->digest, j->path, sizeof j->path,
	    NULL, j->err, sizeof j->err);
	if (reactor_post(j->smx->r, rootfs_done_cb, j) != 0)
		fatalx("cannot post the end of an unpack");
	return NULL;
}

/* Start a helper thread with every signal blocked: signals belong to
 * the reactor. */
static int
helper_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t	all, old;
	int		error;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	error = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -error;
}

int
smx_image_open(struct smx *smx, const char *refstr,
    const struct smx_image_opts *oin, struct smx_image **out, char *err,
    size_t errlen)
{
	struct smx_image_opts	 o;
	struct image_ref	 ref;
	struct image_store	*s;
	struct smx_image	*img;
	struct rootfs_job	 j;
	pthread_t		 t;
	char			 name[IMAGE_REF_MAX], full[IMAGE_REF_MAX];
	char			 dummy[8];
	int			 error;

	if (err == NULL) {
		err = dummy;
		errlen = sizeof dummy;
	}
	smx_image_opts_init(&o);
	if (opts_take(&o, sizeof o, oin, "smx_image_open", err, errlen) != 0)
		return -EINVAL;
	if (image_ref_parse(refstr, &ref, err, errlen) != 0)
		return -EINVAL;
	image_ref_familiar(&ref, name, sizeof name);
	image_ref_format(&ref, full, sizeof full);
	if ((error = image_store_open(smx_home(), &s, err, errlen)) != 0)
		return error;
	img = xcalloc(1, sizeof *img);
	img->refs = 1;
	img->ref = xstrdup(full);

	error = -ENOENT;
	if (o.pull != SMX_PULL_ALWAYS) {
		if (ref.digest[0] != '\0' &&
		    image_store_has_blob(s, ref.digest)) {
			snprintf(img->digest, sizeof img->digest, "%s",
			    ref.digest);
			error = 0;
		} else
			error = image_store_get_ref(s, &ref, img->digest,
			    sizeof img->digest);
	}
	if (error != 0 && o.pull == SMX_PULL_NEVER) {
		snprintf(err, errlen, "image %s is not in the store (smx pull "
		    "%s, or smx import / smx load it)", name, name);
		error = -ENOENT;
		goto err_free;
	}
	if (error != 0) {
		if ((error = image_pull_wait(smx, s, &ref, name, &o, err,
		    errlen)) != 0)
			goto err_free;
		if ((error = image_store_get_ref(s, &ref, img->digest,
		    sizeof img->digest)) != 0 && ref.digest[0] != '\0') {
			snprintf(img->digest, sizeof img->digest, "%s",
			    ref.digest);
			error = 0;
		}
		if (error != 0) {
			snprintf(err, errlen, "%s: pulled but not in the store: "
			    "%s", name, strerror(-error));
			goto err_free;
		}
	}
	if ((error = image_read_config(s, img, err, errlen)) != 0)
		goto err_free;

	/* Unpacking can take seconds: keep the reactor serving. */
	memset(&j, 0, sizeof j);
	j.smx = smx;
	j.s = s;
	j.digest = img->digest;
	if ((error = helper_start(&t, rootfs_main, &j)) != 0) {
		snprintf(err, errlen, "cannot start a thread: %s",
		    strerror(-error));
		goto err_free;
	}
	while (!j.done)
		(void)smx_wait(smx, &j.done, NULL, 0, 0);
	pthread_join(t, NULL);
	if (smx->stop_signal != 0) {
		snprintf(err, errlen, "stopped by signal %d", smx->stop_signal);
		error = -EINTR;
		goto err_free;
	}
	if (j.error != 0) {
		snprintf(err, errlen, "%s: %s", name, j.err);
		error = j.error;
		goto err_free;
	}
	img->rootfs = xstrdup(j.path);
	image_store_close(s);
	*out = img;
	return 0;

err_free:
	image_store_close(s);
	smx_image_close(img);
	return error;
}

const char *
smx_image_ref(const struct smx_image *img)
{
	return img->ref;
}

const char *
smx_image_digest(const struct smx_image *img)
{
	return img->digest;
}

void
smx_image_close(struct smx_image *img)
{
	if (img == NULL || --img->refs > 0)
		return;
	free(img->ref);
	free(img->rootfs);
	strv_free(img->entrypoint);
	strv_free(img->cmd);
	strv_free(img->env);
	free(img->workdir);
	free(img->user);
	free(img);
}

/*
 * The agent's HELLO: it connects to host port AGENT_READY_PORT, which
 * the vsock device turns into a connection to "<vsock>_1025".
 */
static void
hello_conn_close(struct hello_conn *c)
{
	if (c->rfd != NULL)
		reactor_del_fd(c->rfd);
	if (c->fd != -1)
		close(c->fd);
	c->rfd = NULL;
	c->fd = -1;
	c->len = 0;
}

static void
hello_read_cb(int fd, short what, void *arg)
{
	struct hello_conn	*c = arg;
	struct hello		*h;
	const char		*v;
	uint32_t		 type, len;
	ssize_t			 n;

	(void)what;
	h = c->h;
	n = read(fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		hello_conn_close(c);
		return;
	}
	c->len += n;
	if (c->len < AGENT_HDR_LEN)
		return;
	type = c->buf[0] | c->buf[1] << 8 | c->buf[2] << 16 |
	    (uint32_t)c->buf[3] << 24;
	len = c->buf[4] | c->buf[5] << 8 | c->buf[6] << 16 |
	    (uint32_t)c->buf[7] << 24;
	if (type != A_HELLO || len > sizeof c->buf - 1 - AGENT_HDR_LEN) {
		log_debug("agent: unexpected frame %u on the ready port",
		    type);
		hello_conn_close(c);
		return;
	}
	if (c->len < AGENT_HDR_LEN + len)
		return;
	c->buf[AGENT_HDR_LEN + len] = '\0';
	v = agent_field(c->buf + AGENT_HDR_LEN, len, "version");
	if (v == NULL || atoi(v) != AGENT_VERSION)
		log_warnx("%s: the guest agent speaks protocol version %s, "
		    "not %d (rebuild smx-init with this smx)", h->v->name,
		    v != NULL ? v : "?", AGENT_VERSION);
	hello_conn_close(c);
	log_debug("agent of %s ready", h->v->name);
	h->v->ready = true;
	if (h->waited)
		reactor_stop(h->v->smx->r);
}

static void
hello_accept_cb(int fd, short what, void *arg)
{
	struct hello		*h = arg;
	struct hello_conn	*c = NULL;
	int			 s;

	(void)what;
	if ((s = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) == -1)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(h->conns); i++)
		if (h->conns[i].fd == -1) {
			c = &h->conns[i];
			break;
		}
	if (c == NULL) {
		close(s);
		return;
	}
	c->fd = s;
	c->len = 0;
	if ((c->rfd = reactor_add_fd(h->v->smx->r, s, REACTOR_READ,
	    hello_read_cb, c)) == NULL)
		hello_conn_close(c);
}

static struct hello *
hello_create(struct smx_vm *v, char *err, size_t errlen)
{
	struct sockaddr_un	 sa;
	struct hello		*h;

	h = xcalloc(1, sizeof *h);
	h->v = v;
	h->fd = -1;
	for (size_t i = 0; i < ARRAY_SIZE(h->conns); i++) {
		h->conns[i].h = h;
		h->conns[i].fd = -1;
	}
	xasprintf(&h->path, "%s_%u", v->vsock, AGENT_READY_PORT);
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if (strlen(h->path) >= sizeof sa.sun_path) {
		snprintf(err, errlen, "%s: path too long for a Unix socket "
		    "(set SMX_RUNDIR to a shorter directory)", h->path);
		goto err_free;
	}
	strcpy(sa.sun_path, h->path);
	unlink(h->path);
	if ((h->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0)) == -1 ||
	    bind(h->fd, (struct sockaddr *)&sa, sizeof sa) == -1 ||
	    listen(h->fd, 4) == -1) {
		snprintf(err, errlen, "cannot listen on %s: %s", h->path,
		    strerror(errno));
		goto err_free;
	}
	if ((h->rfd = reactor_add_fd(v->smx->r, h->fd, REACTOR_READ,
	    hello_accept_cb, h)) == NULL) {
		snprintf(err, errlen, "cannot watch %s: %s", h->path,
		    strerror(errno));
		goto err_free;
	}
	return h;

err_free:
	if (h->fd != -1) {
		close(h->fd);
		unlink(h->path);
	}
	free(h->path);
	free(h);
	return NULL;
}

static void
hello_free(struct hello *h)
{
	if (h == NULL)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(h->conns); i++)
		hello_conn_close(&h->conns[i]);
	if (h->rfd != NULL)
		reactor_del_fd(h->rfd);
	if (h->fd != -1) {
		close(h->fd);
		unlink(h->path);
	}
	free(h->path);
	free(h);
}

static void	bridge_free(struct bridge *);

/* Close what talks to the agent: HELLO listener, ports, bridges. */
static void
vm_agent_free(struct smx_vm *v)
{
	struct publish	*p;

	hello_free(v->hello);
	v->hello = NULL;
	ctl_free(v->ctl);
	v->ctl = NULL;
	while ((p = LIST_FIRST(&v->publishes)) != NULL) {
		LIST_REMOVE(p, entry);
		evconnlistener_free(p->l);
		free(p);
	}
	while (!LIST_EMPTY(&v->bridges))
		bridge_free(LIST_FIRST(&v->bridges));
}

void
smx_vm_opts_init(struct smx_vm_opts *o)
{
	memset(o, 0, sizeof *o);
	o->size = sizeof *o;
	o->cpus = 1;
	o->memory_mib = 256;
	o->console_fd = -1;
	o->ready_timeout_ms = DEFAULT_READY_MS;
}

/* The guest agent: $SMX_INIT, this build tree's, the installed one. */
static char *
find_agent(void)
{
	static const char *const dirs[] = {
		SMX_BUILDDIR "/tools/smx-init/smx-init",
		SMX_PKGLIBEXECDIR "/smx-init",
	};
	const char	*env;

	if ((env = getenv("SMX_INIT")) != NULL && *env != '\0')
		return access(env, R_OK) == 0 ? xstrdup(env) : NULL;
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
		if (access(dirs[i], R_OK) == 0)
			return xstrdup(dirs[i]);
	return NULL;
}

/* Hostnames: letters, digits, '-' and '.', at most 63 bytes. */
static bool
hostname_ok(const char *s)
{
	size_t	n = strlen(s);

	if (n == 0 || n > 63 || s[0] == '-' || s[0] == '.')
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789-.") == n;
}

/* A word of the kernel command line may hold no space and no quote. */
static bool
cmdline_safe(const char *s)
{
	for (; *s != '\0'; s++)
		if (*s <= ' ' || *s == '"' || *s == 0x7f)
			return false;
	return true;
}

/* One volume: its share (a directory, or a file's parent) and its
 * smx.vol word.  paths[] keeps the strings the share points at. */
static int
volume_setup(const struct smx_volume *vol, unsigned i, struct smx_share *sh,
    char **path, char **tag, char **word, char *err, size_t errlen)
{
	struct stat	 st;
	char		*real, *slash, *file = NULL;

	if (vol->host == NULL || vol->guest == NULL || vol->guest[0] != '/') {
		snprintf(err, errlen, "volume %u: give a host path and an "
		    "absolute guest path", i + 1);
		return -EINVAL;
	}
	if (!cmdline_safe(vol->guest) || strchr(vol->guest, ':') != NULL) {
		snprintf(err, errlen, "volume %s: the guest path may hold no "
		    "space, quote or ':'", vol->guest);
		return -EINVAL;
	}
	if ((real = realpath(vol->host, NULL)) == NULL ||
	    stat(real, &st) == -1) {
		snprintf(err, errlen, "volume source %s: %s%s", vol->host,
		    strerror(errno), errno == ENOENT ?
		    " (create it, or fix the path)" : "");
		free(real);
		return -ENOENT;
	}
	if (!S_ISDIR(st.st_mode)) {
		if (!S_ISREG(st.st_mode)) {
			snprintf(err, errlen, "volume source %s: neither a "
			    "directory nor a regular file", vol->host);
			free(real);
			return -EINVAL;
		}
		slash = strrchr(real, '/');
		file = xstrdup(slash + 1);
		if (slash == real)
			slash[1] = '\0';
		else
			*slash = '\0';
		if (!cmdline_safe(file) || strchr(file, ':') != NULL) {
			snprintf(err, errlen, "volume source %s: the file name "
			    "may hold no space, quote or ':'", vol->host);
			free(file);
			free(real);
			return -EINVAL;
		}
	}
	*path = real;
	xasprintf(tag, "vol%u", i);
	xasprintf(word, " smx.vol=%s:%s%s%s%s", *tag, vol->guest,
	    vol->readonly ? ":ro" : "", file != NULL ? ":file=" : "",
	    file != NULL ? file : "");
	free(file);
	memset(sh, 0, sizeof *sh);
	sh->path = *path;
	sh->tag = *tag;
	sh->readonly = vol->readonly;
	return 0;
}

/* End a machine that failed to come up and free it. */
static void
vm_abandon(struct smx_vm *v)
{
	static const bool	never = false;

	if (v->end == SMX_END_RUNNING) {
		vm_stop(v->vm, VM_END_STOPPED);
		while (v->end == SMX_END_RUNNING)
			if (smx_wait(v->smx, &never, v, 0, 0) != 0)
				break;
	}
	smx_vm_free(v);
}

int
smx_vm_start(struct smx *smx, struct smx_image *img,
    const struct smx_vm_opts *oin, struct smx_vm **out, char *err,
    size_t errlen)
{
	struct smx_vm_opts	 o;
	struct smx_boot_opts	 bo;
	struct smx_share	 shares[1 + SMX_MAX_VOLUMES];
	char			*vpath[SMX_MAX_VOLUMES] = { NULL };
	char			*vtag[SMX_MAX_VOLUMES] = { NULL };
	char			*vword[SMX_MAX_VOLUMES] = { NULL };
	char			 initrd[4096], dummy[8], name[32];
	char			*kernel = NULL, *agent = NULL, *cmdline = NULL;
	char			*rundir = NULL, *vsock = NULL, *t;
	char			*bakedir = NULL;
	const char		*why = NULL, *snapwhy = NULL;
	struct smx_vm		*v = NULL;
	uint64_t		 deadline;
	unsigned		 i;
	int			 error = -EINVAL;
	bool			 bake = false;

	if (err == NULL) {
		err = dummy;
		errlen = sizeof dummy;
	}
	smx_vm_opts_init(&o);
	if (opts_take(&o, sizeof o, oin, "smx_vm_start", err, errlen) != 0)
		return -EINVAL;
	if (o.nvolumes > SMX_MAX_VOLUMES) {
		snprintf(err, errlen, "%u volumes: at most %d", o.nvolumes,
		    SMX_MAX_VOLUMES);
		return -EINVAL;
	}
	if (o.name != NULL && !hostname_ok(o.name)) {
		snprintf(err, errlen, "name '%s': use letters, digits, '-' and "
		    "'.' (at most 63)", o.name);
		return -EINVAL;
	}
	if (smx->stop_signal != 0) {
		snprintf(err, errlen, "stopped by signal %d", smx->stop_signal);
		return -EINTR;
	}
	switch (smx_kvm_probe(&why)) {
	case SMX_KVM_ABSENT:
		snprintf(err, errlen, "KVM is not available (%s): smx needs "
		    "/dev/kvm (load kvm_intel or kvm_amd, or run where "
		    "virtualization is enabled)", why != NULL ? why :
		    "no /dev/kvm");
		return -ENODEV;
	case SMX_KVM_PVM:
		snprintf(err, errlen, "this host's /dev/kvm is PVM (KVM without "
		    "hardware virtualization), which cannot run a Linux guest "
		    "kernel; run smx under tools/kvm-harness (a nested-KVM VM) "
		    "or on a host with VT-x/AMD-V");
		return -ENOTSUP;
	default:
		break;
	}
	if (o.kernel != NULL)
		kernel = xstrdup(o.kernel);
	else
		xasprintf(&kernel, "%s/kernel/vmlinux-%s", smx_home(),
		    SMX_KERNEL_KEY);
	if (access(kernel, R_OK) != 0) {
		error = -errno;
		if (o.kernel != NULL)
			snprintf(err, errlen, "kernel %s: %s", kernel,
			    strerror(errno));
		else
			snprintf(err, errlen, "the smx guest kernel is not built "
			    "(%s): run tools/bootstrap or tools/kernel/build",
			    kernel);
		goto out;
	}
	if ((agent = find_agent()) == NULL) {
		error = -ENOENT;
		snprintf(err, errlen, "the guest agent smx-init is missing "
		    "(%s): build it with make, install smx, or set SMX_INIT",
		    getenv("SMX_INIT") != NULL ? getenv("SMX_INIT") :
		    SMX_BUILDDIR "/tools/smx-init/smx-init");
		goto out;
	}
	if ((error = image_initramfs_get(smx_home(), agent, initrd,
	    sizeof initrd, err, errlen)) != 0)
		goto out;

	/* The name: given, else smx-<8 hex>. */
	if (o.name == NULL) {
		uint32_t	rnd;

		if (getentropy(&rnd, sizeof rnd) != 0)
			rnd = (uint32_t)now_ns() ^ (uint32_t)getpid();
		snprintf(name, sizeof name, "smx-%08x", rnd);
		o.name = name;
	}
	/* The image's baked snapshot instead of a boot, when it can give
	 * what this machine asks for; else boot and bake this one when it
	 * has the default shape (the bake's). */
	if (o.snapshot == SMX_SNAPSHOT_AUTO) {
		if (o.nvolumes != 0)
			snapwhy = "volumes are added at boot";
		else if (o.dax)
			snapwhy = "snapshots carry no DAX mappings";
		else if (o.kernel != NULL)
			snapwhy = "another kernel was given";
		else {
			bakedir = bake_store_dir(img);
			error = bake_usable(bakedir, initrd, kernel, o.cpus,
			    o.memory_mib, &snapwhy);
			if (error == 0) {
				error = restore_vm(smx, bakedir, o.name,
				    o.vsock_path, o.console_fd,
				    o.ready_timeout_ms, img, &v, err, errlen);
				if (error == 0) {
					*out = v;
					goto out;
				}
				log_warnx("%s: cannot restore the baked snapshot "
				    "%s: %s; booting", o.name, bakedir, err);
				snapwhy = "its restore failed";
				err[0] = '\0';
			}
			bake = error != -ERANGE && o.cpus == 1 &&
			    o.memory_mib == 256;
		}
		log_info("%s: cold boot: %s%s", o.name, snapwhy,
		    bake ? " (baking one now)" : "");
	}
	/* Shares: the image root, then the volumes. */
	memset(shares, 0, sizeof shares);
	shares[0].path = img->rootfs;
	shares[0].tag = "root";
	shares[0].readonly = 1;
	shares[0].dax = o.dax != 0;
	xasprintf(&cmdline, "console=ttyS0 reboot=k panic=-1 quiet "
	    "rdinit=/init smx.root=root smx.hostname=%s%s", o.name,
	    o.dax ? " smx.dax=1" : "");
	for (i = 0; i < o.nvolumes; i++) {
		if ((error = volume_setup(&o.volumes[i], i, &shares[1 + i],
		    &vpath[i], &vtag[i], &vword[i], err, errlen)) != 0)
			goto out;
		xasprintf(&t, "%s%s", cmdline, vword[i]);
		free(cmdline);
		cmdline = t;
	}

	if (o.vsock_path != NULL)
		vsock = xstrdup(o.vsock_path);
	else if ((rundir = make_rundir()) != NULL)
		xasprintf(&vsock, "%s/vsock", rundir);
	else {
		error = -errno;
		snprintf(err, errlen, "cannot create the machine's run "
		    "directory (set SMX_RUNDIR?): %s", strerror(errno));
		goto out;
	}

	smx_boot_opts_init(&bo);
	bo.kernel = kernel;
	bo.initrd = initrd;
	bo.cmdline = cmdline;
	bo.cpus = o.cpus;
	bo.memory_mib = o.memory_mib;
	bo.console_fd = o.console_fd;
	bo.devices = SMX_DEV_RNG | SMX_DEV_VSOCK;
	bo.vsock_path = vsock;
	bo.shares = shares;
	bo.nshares = 1 + o.nvolumes;
	/* The vCPUs start inside smx_boot, but the guest reaches nothing
	 * on the host until this thread runs the reactor: the HELLO
	 * listener made right after is in time. */
	if ((error = smx_boot(smx, &bo, &v, err, errlen)) != 0)
		goto out;
	v->rundir = rundir;
	rundir = NULL;
	v->name = xstrdup(o.name);
	v->img = img;
	img->refs++;
	if ((v->hello = hello_create(v, err, errlen)) == NULL) {
		error = -EIO;
		vm_abandon(v);
		goto out;
	}

	v->hello->waited = true;
	deadline = now_ns() + (o.ready_timeout_ms != 0 ? o.ready_timeout_ms :
	    DEFAULT_READY_MS) * 1000000ULL;
	error = smx_wait(smx, (const volatile bool *)&v->ready, v, deadline,
	    0);
	if (v->hello != NULL)
		v->hello->waited = false;
	if (!v->ready) {
		if (smx->stop_signal != 0) {
			snprintf(err, errlen, "stopped by signal %d while "
			    "booting", smx->stop_signal);
			error = -EINTR;
		} else if (v->end != SMX_END_RUNNING) {
			snprintf(err, errlen, "the guest ended before its agent "
			    "was ready (%s: %s)%s", smx_end_name(v->end),
			    v->detail, o.console_fd < 0 ?
			    "; its kernel log shows why (console_fd)" : "");
			error = -EIO;
		} else if (error == -ETIMEDOUT)
			snprintf(err, errlen, "the guest agent was not ready "
			    "after %llu ms", (unsigned long long)
			    (o.ready_timeout_ms != 0 ? o.ready_timeout_ms :
			    DEFAULT_READY_MS));
		else
			snprintf(err, errlen, "event loop: %s",
			    strerror(-error));
		vm_abandon(v);
		goto out;
	}
	if (bake)
		(void)bake_after_boot(v, bakedir, initrd, kernel, NULL);
	*out = v;
	error = 0;

out:
	free(bakedir);
	for (i = 0; i < SMX_MAX_VOLUMES; i++) {
		free(vpath[i]);
		free(vtag[i]);
		free(vword[i]);
	}
	if (rundir != NULL)
		remove_rundir(rundir);
	free(rundir);
	free(vsock);
	free(kernel);
	free(agent);
	free(cmdline);
	return error;
}

const char *
smx_vm_name(const struct smx_vm *v)
{
	return v->name;
}

/*
 * Requests to the agent, each on a helper thread with a connection of
 * its own.  The connection is made here (a Unix connect to the vsock
 * listener completes at once); should the machine end meanwhile, the
 * socket is shut down, which wakes the helper.
 */
struct job {
	struct smx_vm	*v;
	int		 fd;
	int		(*fn)(struct job *);
	volatile bool	 done;
	int		 rc;
	char		 err[512];
	uint64_t	 deadline_ns;	/* 0: wait as long as it takes */

	/* arguments and results */
	struct agent_exec		 x;
	struct agent_exec_result	 xr;
	void		(*started_fn)(void *, int);
	void		*started_arg;
	int		 started_pid;
	const char	*path;
	const void	*data;
	size_t		 len;
	unsigned	 mode;
	void		*out;
	int		 sig;
};

static void
job_done_cb(void *arg)
{
	struct job	*j = arg;

	j->done = true;
	reactor_stop(j->v->smx->r);
}

static void *
job_main(void *arg)
{
	struct job	*j = arg;
	int		 error;

	if ((error = agent_handshake(j->fd, AGENT_PORT)) != 0) {
		j->rc = error;
		snprintf(j->err, sizeof j->err, "cannot reach the guest agent: "
		    "%s", error == -ECONNREFUSED ? "not listening" :
		    strerror(-error));
	} else
		j->rc = j->fn(j);
	if (reactor_post(j->v->smx->r, job_done_cb, j) != 0)
		fatalx("cannot post the end of an agent request");
	return NULL;
}

static int
job_run(struct smx_vm *v, struct job *j, char *err, size_t errlen)
{
	pthread_t	t;
	int		error;

	j->v = v;
	j->done = false;
	if (v->end != SMX_END_RUNNING || !v->ready) {
		snprintf(err, errlen, "machine %s is not running (%s)",
		    v->name != NULL ? v->name : "?", smx_end_name(v->end));
		return -ESRCH;
	}
	if ((j->fd = dial_nonblock(v->vsock)) < 0) {
		error = j->fd;
		snprintf(err, errlen, "cannot connect to %s: %s", v->vsock,
		    strerror(-error));
		return error;
	}
	/* The agent client blocks (on the helper thread). */
	fcntl(j->fd, F_SETFL, fcntl(j->fd, F_GETFL) & ~O_NONBLOCK);
	if ((error = helper_start(&t, job_main, j)) != 0) {
		close(j->fd);
		snprintf(err, errlen, "cannot start a thread: %s",
		    strerror(-error));
		return error;
	}
	error = smx_wait(v->smx, &j->done, v, j->deadline_ns, 0);
	if (!j->done) {
		/* The machine ended (or the loop failed): unblock it. */
		shutdown(j->fd, SHUT_RDWR);
		while (!j->done)
			(void)smx_wait(v->smx, &j->done, NULL, 0, 0);
		if (error == -ETIMEDOUT) {
			j->rc = -ETIMEDOUT;
			snprintf(j->err, sizeof j->err, "the guest agent did "
			    "not answer in time");
		}
		if (j->rc == 0)
			j->rc = -ECONNRESET;
		if (v->end != SMX_END_RUNNING)
			snprintf(j->err, sizeof j->err, "the machine ended (%s: "
			    "%s)", smx_end_name(v->end), v->detail);
	}
	pthread_join(t, NULL);
	close(j->fd);
	j->fd = -1;
	if (j->rc != 0)
		snprintf(err, errlen, "%s", j->err);
	return j->rc;
}

void
smx_exec_opts_init(struct smx_exec_opts *o)
{
	memset(o, 0, sizeof *o);
	o->size = sizeof *o;
	o->stdin_fd = o->stdout_fd = o->stderr_fd = o->winch_fd = -1;
}

void
smx_exec_result_free(struct smx_exec_result *r)
{
	if (r == NULL)
		return;
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
	r->out_len = r->err_len = 0;
}

/* On the runtime's thread: the process runs. */
static void
exec_started_post_cb(void *arg)
{
	struct job	*j = arg;

	if (j->started_fn != NULL)
		j->started_fn(j->started_arg, j->started_pid);
}

/* On the helper thread. */
static void
exec_started_cb(pid_t pid, void *arg)
{
	struct job	*j = arg;

	j->started_pid = (int)pid;
	if (j->started_fn != NULL &&
	    reactor_post(j->v->smx->r, exec_started_post_cb, j) != 0)
		log_warnx("cannot report a started process");
}

static int
job_exec(struct job *j)
{
	return agent_exec(j->fd, &j->x, &j->xr, j->err, sizeof j->err);
}

/* The image's Env with every KEY of over replaced or added. */
static char **
env_merge(char *const *base, const char *const *over)
{
	char		**v;
	size_t		  n = 0, nb, no, i, k, kl;

	nb = strv_len((const char *const *)base);
	no = strv_len(over);
	v = xcalloc(nb + no + 1, sizeof *v);
	for (i = 0; i < nb; i++)
		v[n++] = base[i];
	for (i = 0; i < no; i++) {
		kl = strcspn(over[i], "=");
		for (k = 0; k < nb; k++)
			if (strncmp(v[k], over[i], kl) == 0 &&
			    (v[k][kl] == '=' || v[k][kl] == '\0'))
				break;
		if (k < nb)
			v[k] = (char *)over[i];
		else
			v[n++] = (char *)over[i];
	}
	v[n] = NULL;
	return v;
}

int
smx_exec(struct smx_vm *v, const struct smx_exec_opts *oin,
    struct smx_exec_result *res, char *err, size_t errlen)
{
	struct smx_exec_opts	 o;
	struct smx_image	*img = v->img;
	struct job		*j;
	const char		**argv = NULL;
	char			**env = NULL, dummy[8];
	size_t			 n = 0, i;
	int			 error;

	if (err == NULL) {
		err = dummy;
		errlen = sizeof dummy;
	}
	memset(res, 0, sizeof *res);
	smx_exec_opts_init(&o);
	if (opts_take(&o, sizeof o, oin, "smx_exec", err, errlen) != 0)
		return -EINVAL;
	if (img == NULL && (o.argv == NULL || o.argv[0] == NULL)) {
		snprintf(err, errlen, "smx_exec: give a command: the machine "
		    "has no image to take one from");
		return -EINVAL;
	}
	if (o.argv != NULL && o.argv[0] != NULL)
		argv = (const char **)o.argv;
	else {
		argv = xcalloc(strv_len((const char *const *)img->entrypoint) +
		    strv_len((const char *const *)img->cmd) + 1, sizeof *argv);
		for (i = 0; img->entrypoint != NULL && img->entrypoint[i]; i++)
			argv[n++] = img->entrypoint[i];
		for (i = 0; img->cmd != NULL && img->cmd[i]; i++)
			argv[n++] = img->cmd[i];
		if (n == 0) {
			free(argv);
			snprintf(err, errlen, "no command given and the image %s "
			    "has no Entrypoint or Cmd", img->ref);
			return -EINVAL;
		}
	}
	env = env_merge(img != NULL ? img->env : NULL, o.env);

	j = xcalloc(1, sizeof *j);
	agent_exec_init(&j->x);
	j->x.argv = argv;
	j->x.env = (const char *const *)env;
	j->x.cwd = o.cwd != NULL || img == NULL ? o.cwd : img->workdir;
	j->x.user = o.user != NULL || img == NULL ? o.user : img->user;
	j->x.tty = o.tty != 0;
	j->x.rows = o.rows;
	j->x.cols = o.cols;
	j->x.main = o.main != 0;
	j->x.timeout_ms = o.timeout_ms;
	j->x.stdin_fd = o.stdin_fd;
	j->x.stdin_data = o.stdin_data;
	j->x.stdin_len = o.stdin_len;
	j->x.stdout_fd = o.stdout_fd;
	j->x.stderr_fd = o.stderr_fd;
	if (o.tty && o.winch_fd >= 0) {
		j->x.flags |= AGENT_EXEC_WINCH;
		j->x.winch_fd = o.winch_fd;
	}
	j->x.started = exec_started_cb;
	j->x.started_arg = j;
	j->started_fn = o.started_fn;
	j->started_arg = o.started_arg;
	j->fn = job_exec;
	if ((error = job_run(v, j, err, errlen)) == 0) {
		res->status = j->xr.status;
		res->signal = j->xr.signal;
		res->out = j->xr.out;
		res->out_len = j->xr.out_len;
		res->err = j->xr.err;
		res->err_len = j->xr.err_len;
	}
	free(j);
	free(env);
	if (argv != (const char **)o.argv)
		free(argv);
	return error;
}

static int
job_put(struct job *j)
{
	return agent_put_data(j->fd, j->path, j->mode, j->data, j->len,
	    j->err, sizeof j->err);
}

int
smx_vm_write_file(struct smx_vm *v, const char *path, const void *data,
    size_t len, unsigned mode)
{
	struct job	j;
	char		err[512];
	int		error;

	memset(&j, 0, sizeof j);
	j.fn = job_put;
	j.path = path;
	j.data = data;
	j.len = len;
	j.mode = mode != 0 ? mode : 0644;
	if ((error = job_run(v, &j, err, sizeof err)) != 0)
		log_debug("write %s: %s", path, err);
	return error;
}

static int
job_get(struct job *j)
{
	return agent_get_data(j->fd, j->path, AGENT_MAX_FILE, &j->out,
	    &j->len, NULL, j->err, sizeof j->err);
}

int
smx_vm_read_file(struct smx_vm *v, const char *path, void **data,
    size_t *len)
{
	struct job	j;
	char		err[512];
	int		error;

	memset(&j, 0, sizeof j);
	j.fn = job_get;
	j.path = path;
	if ((error = job_run(v, &j, err, sizeof err)) != 0) {
		log_debug("read %s: %s", path, err);
		return error;
	}
	*data = j.out;
	*len = j.len;
	return 0;
}

static int
job_kill(struct job *j)
{
	return agent_kill(j->fd, j->sig, j->err, sizeof j->err);
}

int
smx_vm_kill(struct smx_vm *v, int sig)
{
	struct job	j;
	char		err[512];
	int		error;

	memset(&j, 0, sizeof j);
	j.fn = job_kill;
	j.sig = sig;
	if ((error = job_run(v, &j, err, sizeof err)) != 0)
		log_debug("kill %d: %s", sig, err);
	return error;
}

static int
job_poweroff(struct job *j)
{
	return agent_poweroff(j->fd, j->err, sizeof j->err);
}

int
smx_vm_shutdown(struct smx_vm *v, uint64_t timeout_ms)
{
	static const bool	never = false;
	struct job		j;
	char			err[512];
	uint64_t		deadline;

	if (v->end != SMX_END_RUNNING)
		return 0;
	deadline = now_ns() + (timeout_ms != 0 ? timeout_ms : 10000) *
	    1000000ULL;
	memset(&j, 0, sizeof j);
	j.fn = job_poweroff;
	/* A guest already going down may close the connection first. */
	if (v->ready && job_run(v, &j, err, sizeof err) != 0)
		log_debug("poweroff: %s", err);
	while (v->end == SMX_END_RUNNING)
		if (smx_wait(v->smx, &never, v, deadline, 0) != 0)
			break;
	if (v->end == SMX_END_RUNNING) {
		vm_stop(v->vm, VM_END_STOPPED);
		while (v->end == SMX_END_RUNNING)
			if (smx_wait(v->smx, &never, v, 0, 0) != 0)
				break;
		return -ETIMEDOUT;
	}
	return 0;
}

/*
 * Published ports: a TCP listener in the reactor; each connection gets
 * a vsock stream of its own to the agent ("CONNECT 1024", then
 * A_CONNECT port=N, then A_OK) and from there bytes go both ways through
 * two bufferevents.  An end of file on one side becomes a shutdown of
 * the other's write side once what was read before it is delivered.
 */
static void
bridge_free(struct bridge *b)
{
	LIST_REMOVE(b, entry);
	if (b->tcp != NULL)
		bufferevent_free(b->tcp);
	if (b->vs != NULL)
		bufferevent_free(b->vs);
	free(b);
}

/* Both ways ended and delivered: done. */
static void
bridge_check_done(struct bridge *b)
{
	if (b->shut_tcp && b->shut_vs)
		bridge_free(b);
}

/* from's read side ended: shut to's write side once its output is out. */
static void
bridge_maybe_shut(struct bridge *b, struct bufferevent *to)
{
	bool	*shut = to == b->tcp ? &b->shut_tcp : &b->shut_vs;
	bool	 eof = to == b->tcp ? b->eof_vs : b->eof_tcp;

	if (!eof || *shut ||
	    evbuffer_get_length(bufferevent_get_output(to)) != 0)
		return;
	shutdown(bufferevent_getfd(to), SHUT_WR);
	*shut = true;
	bridge_check_done(b);
}

static void
bridge_forward(struct bridge *b, struct bufferevent *from)
{
	struct bufferevent	*to = from == b->tcp ? b->vs : b->tcp;
	struct evbuffer		*out = bufferevent_get_output(to);

	evbuffer_add_buffer(out, bufferevent_get_input(from));
	/* Back-pressure: a slow reader stops the other side's reads
	 * until its backlog is written (the write callback). */
	if (evbuffer_get_length(out) > BRIDGE_HIGH)
		bufferevent_disable(from, EV_READ);
}

/* The vsock side during the handshake: "OK <port>\n", then A_OK. */
static int
bridge_handshake(struct bridge *b)
{
	struct evbuffer	*in = bufferevent_get_input(b->vs);
	uint8_t		 h[AGENT_HDR_LEN];
	uint32_t	 type, len;
	char		*line;

	if (b->state == B_LINE) {
		if ((line = evbuffer_readln(in, NULL,
		    EVBUFFER_EOL_LF)) == NULL)
			return evbuffer_get_length(in) > 64 ? -1 : 0;
		type = strncmp(line, "OK", 2) == 0;
		free(line);
		if (!type)
			return -1;
		b->state = B_REPLY;
	}
	if (evbuffer_copyout(in, h, sizeof h) != (ev_ssize_t)sizeof h)
		return 0;
	type = h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24;
	len = h[4] | h[5] << 8 | h[6] << 16 | (uint32_t)h[7] << 24;
	if (len > 4096)
		return -1;
	if (evbuffer_get_length(in) < sizeof h + len)
		return 0;
	evbuffer_drain(in, sizeof h + len);
	if (type != A_OK) {
		log_debug("publish: the agent refused the connection");
		return -1;
	}
	b->state = B_OPEN;
	bufferevent_enable(b->tcp, EV_READ);
	return 0;
}

static void
bridge_read_cb(struct bufferevent *bev, void *arg)
{
	struct bridge	*b = arg;

	if (bev == b->vs && b->state != B_OPEN) {
		if (bridge_handshake(b) != 0) {
			bridge_free(b);
			return;
		}
		if (b->state != B_OPEN)
			return;
	}
	bridge_forward(b, bev);
}

/* A side's output drained: resume the other side, finish a close. */
static void
bridge_write_cb(struct bufferevent *bev, void *arg)
{
	struct bridge		*b = arg;
	struct bufferevent	*other = bev == b->tcp ? b->vs : b->tcp;
	bool			 other_eof = bev == b->tcp ? b->eof_vs :
				    b->eof_tcp;

	if (b->state == B_OPEN && !other_eof)
		bufferevent_enable(other, EV_READ);
	bridge_maybe_shut(b, bev);
}

static void
bridge_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct bridge		*b = arg;
	struct bufferevent	*other = bev == b->tcp ? b->vs : b->tcp;

	if ((what & BEV_EVENT_ERROR) ||
	    ((what & BEV_EVENT_EOF) && b->state != B_OPEN)) {
		bridge_free(b);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		/* Whatever came before the end goes on first. */
		if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
			bridge_forward(b, bev);
		if (bev == b->tcp)
			b->eof_tcp = true;
		else
			b->eof_vs = true;
		bridge_maybe_shut(b, other);
	}
}

static void
publish_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct publish		*p = arg;
	struct smx_vm		*v = p->v;
	struct event_base	*base = evconnlistener_get_base(l);
	struct agent_fields	 f = { 0 };
	struct bridge		*b;
	uint8_t			 h[AGENT_HDR_LEN];
	int			 s;

	(void)sa;
	(void)salen;
	if ((s = dial_nonblock(v->vsock)) < 0) {
		log_warnx("publish: cannot reach %s: %s", v->vsock,
		    strerror(-s));
		close(fd);
		return;
	}
	b = xcalloc(1, sizeof *b);
	b->v = v;
	LIST_INSERT_HEAD(&v->bridges, b, entry);
	b->tcp = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (b->tcp == NULL)
		close(fd);
	b->vs = bufferevent_socket_new(base, s, BEV_OPT_CLOSE_ON_FREE);
	if (b->vs == NULL)
		close(s);
	if (b->tcp == NULL || b->vs == NULL) {
		bridge_free(b);
		return;
	}
	bufferevent_setcb(b->tcp, bridge_read_cb, bridge_write_cb,
	    bridge_event_cb, b);
	bufferevent_setcb(b->vs, bridge_read_cb, bridge_write_cb,
	    bridge_event_cb, b);
	/* The request follows the CONNECT line at once: the vsock device
	 * leaves what comes after the line in the stream. */
	evbuffer_add_printf(bufferevent_get_output(b->vs), "CONNECT %u\n",
	    AGENT_PORT);
	agent_fields_add(&f, "port", "%u", p->guest_port);
	for (int i = 0; i < 4; i++) {
		h[i] = (uint8_t)((uint32_t)A_CONNECT >> (8 * i));
		h[4 + i] = (uint8_t)(f.len >> (8 * i));
	}
	evbuffer_add(bufferevent_get_output(b->vs), h, sizeof h);
	evbuffer_add(bufferevent_get_output(b->vs), f.buf, f.len);
	agent_fields_free(&f);
	/* TCP bytes wait in the kernel until the guest side is open. */
	bufferevent_disable(b->tcp, EV_READ);
	bufferevent_enable(b->vs, EV_READ);
}

int
smx_vm_publish(struct smx_vm *v, const char *host_ip, uint16_t host_port,
    uint16_t guest_port, uint16_t *bound, char *err, size_t errlen)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t		 sl;
	struct publish		*p;
	struct sigaction	 sa;
	char			 dummy[8];
	int			 error;

	if (err == NULL) {
		err = dummy;
		errlen = sizeof dummy;
	}
	if (host_ip == NULL)
		host_ip = "127.0.0.1";
	if (v->img == NULL || v->end != SMX_END_RUNNING) {
		snprintf(err, errlen, "the machine is not running from an "
		    "image");
		return -ESRCH;
	}
	if (guest_port == 0) {
		snprintf(err, errlen, "guest port 0: give a port from 1 to "
		    "65535");
		return -EINVAL;
	}
	memset(&ss, 0, sizeof ss);
	if (inet_pton(AF_INET, host_ip, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(host_port);
		sl = sizeof *sin;
	} else if (inet_pton(AF_INET6, host_ip, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(host_port);
		sl = sizeof *sin6;
	} else {
		snprintf(err, errlen, "'%s' is not an IP address", host_ip);
		return -EINVAL;
	}
	/* bufferevents write to peers that may have gone: EPIPE, not a
	 * process-killing SIGPIPE (a caller's own handler is kept). */
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
		signal(SIGPIPE, SIG_IGN);
	p = xcalloc(1, sizeof *p);
	p->v = v;
	p->guest_port = guest_port;
	p->l = evconnlistener_new_bind(reactor_base(v->smx->r),
	    publish_accept_cb, p, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
	    LEV_OPT_CLOSE_ON_EXEC, 64, (struct sockaddr *)&ss, (int)sl);
	if (p->l == NULL) {
		error = errno != 0 ? -errno : -EIO;
		if (error == -EADDRINUSE)
			snprintf(err, errlen, "port %u on %s is already in use "
			    "(pick another host port, or stop what holds it)",
			    host_port, host_ip);
		else
			snprintf(err, errlen, "cannot listen on %s:%u: %s",
			    host_ip, host_port, strerror(-error));
		free(p);
		return error;
	}
	LIST_INSERT_HEAD(&v->publishes, p, entry);
	if (bound != NULL) {
		sl = sizeof ss;
		if (getsockname(evconnlistener_get_fd(p->l),
		    (struct sockaddr *)&ss, &sl) == 0)
			*bound = ntohs(ss.ss_family == AF_INET ? sin->sin_port :
			    sin6->sin6_port);
		else
			*bound = host_port;
	}
	return 0;
}

/*
 * Snapshots of machines, restores with the agent's fix-ups, and bakes:
 * an image's snapshot kept in $SMX_HOME/snapshots/<manifest hex>/.
 */
struct snap_wait {
	struct smx	*smx;
	struct vm	*vm;
	char		*dir;
	char		*base;		/* a diff's base, or NULL */
	unsigned	 flags;		/* SMX_SNAPSHOT_* */
	volatile bool	 paused;	/* captured (or failed), going on */
	volatile bool	 done;		/* on disk (or failed) */
	int		 error;
	char		 reason[256];
	/* Called (on the reactor thread) once done, or NULL: a waiter
	 * looks at done. */
	void		(*done_fn)(struct snap_wait *);
	void		*arg;
};

static void
snap_finish(struct snap_wait *w)
{
	w->done = true;
	if (w->done_fn != NULL)
		w->done_fn(w);
	else
		reactor_stop(w->smx->r);
}

static void
snap_done_cb(int error, const char *reason, void *arg)
{
	struct snap_wait	*w = arg;

	w->error = error;
	snprintf(w->reason, sizeof w->reason, "%s", reason);
	snap_finish(w);
}

static void
snap_paused_cb(struct vm *vm, void *arg)
{
	struct snap_wait	*w = arg;
	int			 error;

	if (w->base != NULL)
		error = snapshot_capture_diff(vm, w->smx->r, w->base, w->dir,
		    snap_done_cb, w, w->reason, sizeof w->reason);
	else
		error = snapshot_capture(vm, w->smx->r, w->dir, snap_done_cb,
		    w, w->reason, sizeof w->reason);
	/* Memory is frozen in the writer: the machine may go on now. */
	w->paused = true;
	vm_resume(vm);
	if (w->flags & SMX_SNAPSHOT_STOP)
		vm_stop(vm, VM_END_STOPPED);
	if (error != 0) {
		w->error = error;
		snap_finish(w);
	} else if (w->done_fn == NULL)
		reactor_stop(w->smx->r);
}

/* Start a snapshot of v into dir: 0 (w->done_fn or done follow) or
 * -errno with the reason in err. */
static int
snap_start(struct smx_vm *v, struct snap_wait *w, char *err, size_t errlen)
{
	const struct vm_config	*cfg;
	int			 error;

	if (v->end != SMX_END_RUNNING) {
		snprintf(err, errlen, "machine %s is not running",
		    v->name != NULL ? v->name : "?");
		return -ESRCH;
	}
	cfg = vm_get_config(v->vm);
	for (unsigned i = 0; i < cfg->nshares; i++)
		if (cfg->shares[i].dax) {
			snprintf(err, errlen, "share %s is mapped with DAX, "
			    "which a snapshot cannot carry (run without --dax)",
			    cfg->shares[i].tag);
			return -ENOTSUP;
		}
	w->smx = v->smx;
	w->vm = v->vm;
	if ((error = vm_pause(v->vm, snap_paused_cb, w)) != 0) {
		snprintf(err, errlen, "cannot pause the machine: %s",
		    strerror(-error));
		return error;
	}
	return 0;
}

int
smx_vm_snapshot(struct smx_vm *v, const char *dir, unsigned flags, char *err,
    size_t errlen)
{
	static const bool	 never = false;
	struct snap_wait	 w;
	char			 dummy[8];
	int			 error;

	if (err == NULL) {
		err = dummy;
		errlen = sizeof dummy;
	}
	memset(&w, 0, sizeof w);
	w.dir = (char *)dir;
	w.flags = flags;
	if ((error = snap_start(v, &w, err, errlen)) != 0)
		return error;
	while (!w.paused && v->end == SMX_END_RUNNING)
		(void)smx_wait(v->smx, &w.paused, v, 0, 0);
	if (!w.paused) {
		snprintf(err, errlen, "the machine ended before it paused");
		return -ESRCH;
	}
	while (!w.done)
		(void)smx_wait(v->smx, &w.done, NULL, 0, 0);
	if (flags & SMX_SNAPSHOT_STOP)
		while (v->end == SMX_END_RUNNING)
			if (smx_wait(v->smx, &never, v, 0, 0) != 0)
				break;
	if (w.error != 0) {
		snprintf(err, errlen, "snapshot into %s: %s", dir, w.reason);
		return w.error;
	}
	return 0;
}

int
smx_vm_restored(const struct smx_vm *v)
{
	return v->restored;
}

void
smx_restore_opts_init(struct smx_restore_opts *o)
{
	memset(o, 0, sizeof *o);
	o->size = sizeof *o;
	o->console_fd = -1;
	o->ready_timeout_ms = DEFAULT_READY_MS;
}

/* A_FIXUP: the host's wall clock read as late as possible (after the
 * handshake), fresh entropy, the clone's hostname. */
static int
job_fixup(struct job *j)
{
	struct timespec	ts;
	uint8_t		rnd[64];

	if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
		snprintf(j->err, sizeof j->err, "getrandom: %s",
		    strerror(errno));
		return -EIO;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	return agent_fixup(j->fd, (uint64_t)ts.tv_sec * 1000000000ULL +
	    (uint64_t)ts.tv_nsec, rnd, sizeof rnd, j->path, j->err,
	    sizeof j->err);
}

/* Restore dir, start it and fix the guest up (see smx_restore). */
static int
restore_vm(struct smx *smx, const char *dir, const char *name,
    const char *vsock_path, int console_fd, uint64_t timeout_ms,
    struct smx_image *img, struct smx_vm **out, char *err, size_t errlen)
{
	struct snapshot_restore_opts	 ro;
	struct smx_vm			*v;
	struct job			 j;
	char				 gen[32];
	uint64_t			 t0 = now_ns(), deadline;
	uint32_t			 rnd;
	unsigned			 tries;
	int				 error;

	if (name != NULL && !hostname_ok(name)) {
		snprintf(err, errlen, "name '%s': use letters, digits, '-' and "
		    "'.' (at most 63)", name);
		return -EINVAL;
	}
	if (name == NULL) {
		if (getentropy(&rnd, sizeof rnd) != 0)
			rnd = (uint32_t)now_ns() ^ (uint32_t)getpid();
		snprintf(gen, sizeof gen, "smx-%08x", rnd);
		name = gen;
	}
	v = xcalloc(1, sizeof *v);
	v->smx = smx;
	if (vsock_path != NULL)
		v->vsock = xstrdup(vsock_path);
	else if ((v->rundir = make_rundir()) != NULL)
		xasprintf(&v->vsock, "%s/vsock", v->rundir);
	else {
		error = -errno;
		snprintf(err, errlen, "cannot create the machine's run "
		    "directory (set SMX_RUNDIR?): %s", strerror(errno));
		free(v);
		return error;
	}
	snapshot_restore_opts_init(&ro);
	ro.console_fd = console_fd;
	ro.vsock_path = v->vsock;
	if ((v->vm = snapshot_restore(smx->r, dir, &ro, err, errlen)) == NULL) {
		error = -EINVAL;
		goto err_free;
	}
	if ((error = vm_start(v->vm, smx_vm_end_cb, v)) != 0) {
		snprintf(err, errlen, "cannot start the machine: %s",
		    strerror(-error));
		goto err_free;
	}
	smx->running++;
	v->next = smx->vms;
	smx->vms = v;
	v->name = xstrdup(name);
	if (img != NULL) {
		v->img = img;
		img->refs++;
	}
	v->restored = true;
	/* The agent was listening when the snapshot was taken and still
	 * is (listeners survive the vsock transport reset): reaching it
	 * is the readiness check. */
	v->ready = true;
	/* The guest's driver resets every connected stream when it takes
	 * the TRANSPORT_RESET event, which may come after our connection:
	 * try again until the deadline (A_FIXUP may safely run twice). */
	deadline = now_ns() + (timeout_ms != 0 ? timeout_ms :
	    DEFAULT_READY_MS) * 1000000ULL;
	for (tries = 1;; tries++) {
		static const bool	never = false;

		memset(&j, 0, sizeof j);
		j.fn = job_fixup;
		j.path = v->name;
		j.deadline_ns = deadline;
		if ((error = job_run(v, &j, err, errlen)) == 0)
			break;
		log_debug("%s: fixup, try %u: %s", v->name, tries, err);
		if (v->end != SMX_END_RUNNING || error == -ETIMEDOUT ||
		    now_ns() >= deadline || smx->stop_signal != 0) {
			vm_abandon(v);
			return error;
		}
		(void)smx_wait(smx, &never, v, now_ns() + 10000000ULL, 0);
	}
	log_info("%s: restored from snapshot %s, agent fixed up after "
	    "%.1f ms (%u tries)", v->name, dir, (double)(now_ns() - t0) / 1e6,
	    tries);
	*out = v;
	return 0;

err_free:
	vm_free(v->vm);
	if (v->rundir != NULL)
		remove_rundir(v->rundir);
	free(v->rundir);
	free(v->vsock);
	free(v);
	return error;
}

int
smx_restore(struct smx *smx, const char *dir, const struct smx_restore_opts *oin,
    struct smx_vm **out, char *err, size_t errlen)
{
	struct smx_restore_opts	o;
	char			dummy[8];

	if (err == NULL) {
		err = dummy;
		errlen = sizeof dummy;
	}
	smx_restore_opts_init(&o);
	if (opts_take(&o, sizeof o, oin, "smx_restore", err, errlen) != 0)
		return -EINVAL;
	if (smx->stop_signal != 0) {
		snprintf(err, errlen, "stopped by signal %d", smx->stop_signal);
		return -EINTR;
	}
	switch (smx_kvm_probe(NULL)) {
	case SMX_KVM_ABSENT:
		snprintf(err, errlen, "KVM is not available: smx needs /dev/kvm "
		    "(load kvm_intel or kvm_amd, or run where virtualization "
		    "is enabled)");
		return -ENODEV;
	case SMX_KVM_PVM:
		snprintf(err, errlen, "this host's /dev/kvm is PVM (KVM without "
		    "hardware virtualization), which cannot run a Linux guest "
		    "kernel; run smx under tools/kvm-harness (a nested-KVM VM) "
		    "or on a host with VT-x/AMD-V");
		return -ENOTSUP;
	default:
		break;
	}
	return restore_vm(smx, dir, o.name, o.vsock_path, o.console_fd,
	    o.ready_timeout_ms, o.image, out, err, errlen);
}

void
smx_bake_opts_init(struct smx_bake_opts *o)
{
	memset(o, 0, sizeof *o);
	o->size = sizeof *o;
	o->console_fd = -1;
}

#define BAKE_META	"bake.json"

/* $SMX_HOME/snapshots/<manifest digest hex>. */
static char *
bake_store_dir(const struct smx_image *img)
{
	const char	*hex = strchr(img->digest, ':');
	char		*p;

	xasprintf(&p, "%s/snapshots/%s", smx_home(),
	    hex != NULL ? hex + 1 : img->digest);
	return p;
}

/*
 * Whether the bake in dir can stand in for booting this machine: 0, or
 * -ENOENT (none), -ESTALE (made with another agent, kernel or rootfs, or
 * damaged), -ERANGE (another shape); *why says which.
 */
static int
bake_usable(const char *dir, const char *initrd, const char *kernel,
    uint32_t cpus, uint64_t memory_mib, const char **why)
{
	const cJSON	*x;
	cJSON		*m;
	char		*path, *buf = NULL, err[256];
	size_t		 len = 0;
	uint64_t	 mib;
	unsigned	 ncpus;
	FILE		*f;
	int		 error = -ESTALE;

	xasprintf(&path, "%s/" BAKE_META, dir);
	f = fopen(path, "re");
	free(path);
	if (f == NULL) {
		*why = "the image has no baked snapshot yet";
		return -ENOENT;
	}
	buf = xmalloc(META_MAX);
	len = fread(buf, 1, META_MAX - 1, f);
	fclose(f);
	buf[len] = '\0';
	m = cJSON_Parse(buf);
	free(buf);
	*why = "the baked snapshot was made with another agent, kernel or "
	    "rootfs";
#define META_IS(k, want) \
	((x = cJSON_GetObjectItemCaseSensitive(m, k)) != NULL && \
	    cJSON_IsString(x) && strcmp(x->valuestring, (want)) == 0)
	if (m == NULL || !META_IS("initrd", initrd) ||
	    !META_IS("kernel", kernel))
		goto out;
#undef META_IS
	if (snapshot_check(dir, false, &mib, &ncpus, err, sizeof err) != 0) {
		log_debug("baked snapshot %s: %s", dir, err);
		*why = "the baked snapshot is damaged";
		goto out;
	}
	if (ncpus != cpus || mib != memory_mib) {
		*why = "the machine's cpus or memory differ from the bake's";
		error = -ERANGE;
		goto out;
	}
	error = 0;
out:
	cJSON_Delete(m);
	return error;
}

/* Take the bake lock of final ("<final>.lock"); wait for it or not.
 * The fd, -EBUSY when another bake holds it, or -errno. */
static int
bake_lock(struct smx *smx, const char *final, bool wait)
{
	char	*path;
	int	 fd, error;

	xasprintf(&path, "%s.lock", final);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	free(path);
	if (fd == -1)
		return -errno;
	while (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		static const bool	never = false;

		error = errno == EWOULDBLOCK ? -EBUSY : -errno;
		if (!wait || error != -EBUSY || smx->stop_signal != 0) {
			close(fd);
			return error;
		}
		(void)smx_wait(smx, &never, NULL, now_ns() + 100000000ULL, 0);
	}
	return fd;
}

/*
 * Snapshot v into final: into "<final>.tmp-<pid>" first, with its
 * bake.json, then renamed in (an older bake moved aside and removed:
 * machines restored from it keep their private mapping).
 */
static int
bake_into(struct smx_vm *v, const char *final, const char *initrd,
    const char *kernel, const char *warmup, unsigned flags, bool wait,
    char *err, size_t errlen)
{
	const struct vm_config	*cfg = vm_get_config(v->vm);
	cJSON			*m;
	char			*tmp, *old, *meta, *text;
	FILE			*f;
	int			 lock, error;

	if ((lock = bake_lock(v->smx, final, wait)) < 0) {
		snprintf(err, errlen, "%s: %s", final, lock == -EBUSY ?
		    "another bake of it is running" : strerror(-lock));
		return lock;
	}
	xasprintf(&tmp, "%s.tmp-%ld", final, (long)getpid());
	xasprintf(&old, "%s.old-%ld", final, (long)getpid());
	(void)rm_tree_at(AT_FDCWD, tmp, NULL);
	if ((error = smx_vm_snapshot(v, tmp, flags, err, errlen)) != 0)
		goto out;
	m = cJSON_CreateObject();
	cJSON_AddStringToObject(m, "image", v->img != NULL ? v->img->ref : "");
	cJSON_AddStringToObject(m, "initrd", initrd);
	cJSON_AddStringToObject(m, "kernel", kernel);
	cJSON_AddNumberToObject(m, "cpus", cfg->ncpus);
	cJSON_AddNumberToObject(m, "memory_mib", (double)cfg->memory_mib);
	if (warmup != NULL)
		cJSON_AddStringToObject(m, "warmup", warmup);
	text = cJSON_Print(m);
	cJSON_Delete(m);
	xasprintf(&meta, "%s/" BAKE_META, tmp);
	error = 0;
	if ((f = fopen(meta, "we")) == NULL || fputs(text, f) == EOF ||
	    fflush(f) == EOF || fsync(fileno(f)) == -1)
		error = -errno;
	if (f != NULL && fclose(f) == EOF && error == 0)
		error = -errno;
	free(meta);
	free(text);
	if (error != 0) {
		snprintf(err, errlen, "%s: %s", meta, strerror(-error));
		goto out_rm;
	}
	if (rename(tmp, final) == -1) {
		if (errno != ENOTEMPTY && errno != EEXIST) {
			error = -errno;
			snprintf(err, errlen, "rename to %s: %s", final,
			    strerror(errno));
			goto out_rm;
		}
		if (rename(final, old) == -1 || rename(tmp, final) == -1) {
			error = -errno;
			snprintf(err, errlen, "replace %s: %s", final,
			    strerror(errno));
			goto out_rm;
		}
		(void)rm_tree_at(AT_FDCWD, old, NULL);
	}
	goto out;

out_rm:
	(void)rm_tree_at(AT_FDCWD, tmp, NULL);
out:
	close(lock);
	free(tmp);
	free(old);
	return error;
}

/* The machine just booted is the image's bake: snapshot it and let it
 * go on.  A failure only costs the next run a boot. */
static int
bake_after_boot(struct smx_vm *v, const char *final, const char *initrd,
    const char *kernel, const char *warmup)
{
	char		err[512];
	char		*parent;
	uint64_t	t0 = now_ns();
	int		error;

	xasprintf(&parent, "%s/snapshots", smx_home());
	(void)mkdir(parent, 0755);
	free(parent);
	if ((error = bake_into(v, final, initrd, kernel, warmup, 0, false,
	    err, sizeof err)) != 0)
		log_info("%s: not baked: %s", v->name, err);
	else
		log_info("%s: baked into %s in %.1f ms", v->name, final,
		    (double)(now_ns() - t0) / 1e6);
	return error;
}

int
smx_image_bake(struct smx *smx, struct smx_image *img,
    const struct smx_bake_opts *oin, char *path, size_t pathlen, char *err,
    size_t errlen)
{
	struct smx_bake_opts	 o;
	struct smx_vm_opts	 vo;
	struct smx_exec_opts	 eo;
	struct smx_exec_result	 res;
	struct smx_vm		*v = NULL;
	const char		*argv[4];
	char			 initrd[4096], dummy[8];
	char			*final = NULL, *kernel = NULL, *agent = NULL;
	char			*parent;
	int			 error;

	if (err == NULL) {
		err = dummy;
		errlen = sizeof dummy;
	}
	smx_bake_opts_init(&o);
	if (opts_take(&o, sizeof o, oin, "smx_image_bake", err, errlen) != 0)
		return -EINVAL;
	if (o.dir != NULL)
		final = xstrdup(o.dir);
	else {
		final = bake_store_dir(img);
		xasprintf(&parent, "%s/snapshots", smx_home());
		(void)mkdir(parent, 0755);
		free(parent);
	}
	smx_vm_opts_init(&vo);
	vo.console_fd = o.console_fd;
	if ((error = smx_vm_start(smx, img, &vo, &v, err, errlen)) != 0)
		goto out;
	/* What bake.json records (smx_vm_start found them just now). */
	xasprintf(&kernel, "%s/kernel/vmlinux-%s", smx_home(),
	    SMX_KERNEL_KEY);
	if ((agent = find_agent()) == NULL ||
	    (error = image_initramfs_get(smx_home(), agent, initrd,
	    sizeof initrd, err, errlen)) != 0) {
		if (agent == NULL) {
			snprintf(err, errlen, "the guest agent vanished");
			error = -ENOENT;
		}
		goto out_vm;
	}
	if (o.warmup != NULL) {
		argv[0] = "/bin/sh";
		argv[1] = "-c";
		argv[2] = o.warmup;
		argv[3] = NULL;
		smx_exec_opts_init(&eo);
		eo.argv = argv;
		eo.stdin_fd = eo.stdout_fd = eo.stderr_fd = -1;
		if ((error = smx_exec(v, &eo, &res, err, errlen)) != 0)
			goto out_vm;
		if (res.status != 0) {
			snprintf(err, errlen, "the warmup command exited %d: "
			    "%.200s", res.status, res.err != NULL ? res.err :
			    "");
			smx_exec_result_free(&res);
			error = -ECANCELED;
			goto out_vm;
		}
		smx_exec_result_free(&res);
	}
	error = bake_into(v, final, initrd, kernel, o.warmup,
	    SMX_SNAPSHOT_STOP, true, err, errlen);
	if (error == 0 && path != NULL)
		snprintf(path, pathlen, "%s", final);
out_vm:
	vm_abandon(v);
out:
	free(final);
	free(kernel);
	free(agent);
	return error;
}

/*
 * The control socket: one JSON line in, one out, per connection.  A
 * snapshot runs asynchronously (no wait may run inside a reactor
 * callback); a connection whose machine goes away meanwhile is orphaned
 * and freed when the snapshot ends.
 */
struct ctl {
	struct smx_vm		*v;
	char			*path;
	int			 fd;
	struct reactor_fd	*rfd;
	LIST_HEAD(, ctl_conn)	 conns;
};

struct ctl_conn {
	struct ctl		*ctl;		/* NULL once orphaned */
	int			 fd;
	struct reactor_fd	*rfd;
	struct snap_wait	*snap;		/* running, or NULL */
	char			 buf[4096];
	size_t			 len;
	LIST_ENTRY(ctl_conn)	 entry;
};

static void
ctl_conn_free(struct ctl_conn *c)
{
	if (c->rfd != NULL)
		reactor_del_fd(c->rfd);
	c->rfd = NULL;
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
	if (c->ctl != NULL)
		LIST_REMOVE(c, entry);
	c->ctl = NULL;
	if (c->snap != NULL)
		return;		/* freed by ctl_snap_done */
	free(c);
}

/* Answer and close. */
static void
ctl_reply(struct ctl_conn *c, const char *error)
{
	cJSON	*m = cJSON_CreateObject();
	char	*text;

	cJSON_AddBoolToObject(m, "ok", error == NULL);
	if (error != NULL)
		cJSON_AddStringToObject(m, "error", error);
	text = cJSON_PrintUnformatted(m);
	cJSON_Delete(m);
	if (c->fd != -1) {
		/* A short line to a fresh socket: its buffer takes it. */
		(void)send(c->fd, text, strlen(text), MSG_NOSIGNAL);
		(void)send(c->fd, "\n", 1, MSG_NOSIGNAL);
	}
	free(text);
	ctl_conn_free(c);
}

static void
ctl_snap_done(struct snap_wait *w)
{
	struct ctl_conn	*c = w->arg;
	char		 msg[512];
	bool		 failed;

	c->snap = NULL;
	failed = w->error != 0;
	if (failed)
		snprintf(msg, sizeof msg, "snapshot into %s: %s", w->dir,
		    w->reason);
	else if (c->ctl != NULL)
		log_info("%s: snapshot written to %s", c->ctl->v->name, w->dir);
	free(w->dir);
	free(w->base);
	free(w);
	if (c->fd == -1 && c->ctl == NULL) {
		free(c);	/* orphaned */
		return;
	}
	ctl_reply(c, failed ? msg : NULL);
}

static void
ctl_request(struct ctl_conn *c, const char *line)
{
	struct snap_wait	*w;
	const cJSON		*op, *dir, *base;
	cJSON			*m;
	char			 err[512];

	if ((m = cJSON_Parse(line)) == NULL) {
		ctl_reply(c, "the request is not JSON");
		return;
	}
	op = cJSON_GetObjectItemCaseSensitive(m, "op");
	dir = cJSON_GetObjectItemCaseSensitive(m, "dir");
	base = cJSON_GetObjectItemCaseSensitive(m, "base");
	if (!cJSON_IsString(op)) {
		ctl_reply(c, "the request has no \"op\"");
	} else if (strcmp(op->valuestring, "ping") == 0) {
		ctl_reply(c, NULL);
	} else if (strcmp(op->valuestring, "snapshot") == 0) {
		if (!cJSON_IsString(dir) || dir->valuestring[0] != '/') {
			ctl_reply(c, "snapshot: give \"dir\", an absolute path");
			goto out;
		}
		if (base != NULL && (!cJSON_IsString(base) ||
		    base->valuestring[0] != '/')) {
			ctl_reply(c, "snapshot: \"base\" must be an absolute "
			    "path");
			goto out;
		}
		w = xcalloc(1, sizeof *w);
		w->dir = xstrdup(dir->valuestring);
		if (base != NULL)
			w->base = xstrdup(base->valuestring);
		w->done_fn = ctl_snap_done;
		w->arg = c;
		if (snap_start(c->ctl->v, w, err, sizeof err) != 0) {
			free(w->base);
			free(w->dir);
			free(w);
			ctl_reply(c, err);
			goto out;
		}
		c->snap = w;
		/* Nothing more to read from this connection. */
		reactor_del_fd(c->rfd);
		c->rfd = NULL;
	} else {
		snprintf(err, sizeof err, "unknown op \"%.64s\"",
		    op->valuestring);
		ctl_reply(c, err);
	}
out:
	cJSON_Delete(m);
}

static void
ctl_read_cb(int fd, short what, void *arg)
{
	struct ctl_conn	*c = arg;
	char		*nl;
	ssize_t		 n;

	(void)what;
	n = read(fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		ctl_conn_free(c);
		return;
	}
	c->len += n;
	c->buf[c->len] = '\0';
	if ((nl = strchr(c->buf, '\n')) == NULL) {
		if (c->len == sizeof c->buf - 1)
			ctl_reply(c, "request line too long");
		return;
	}
	*nl = '\0';
	ctl_request(c, c->buf);
}

static void
ctl_accept_cb(int fd, short what, void *arg)
{
	struct ctl	*ctl = arg;
	struct ctl_conn	*c;
	int		 s;

	(void)what;
	if ((s = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) == -1)
		return;
	c = xcalloc(1, sizeof *c);
	c->ctl = ctl;
	c->fd = s;
	LIST_INSERT_HEAD(&ctl->conns, c, entry);
	if ((c->rfd = reactor_add_fd(ctl->v->smx->r, s, REACTOR_READ,
	    ctl_read_cb, c)) == NULL)
		ctl_conn_free(c);
}

static void
ctl_free(struct ctl *ctl)
{
	if (ctl == NULL)
		return;
	while (!LIST_EMPTY(&ctl->conns))
		ctl_conn_free(LIST_FIRST(&ctl->conns));
	if (ctl->rfd != NULL)
		reactor_del_fd(ctl->rfd);
	if (ctl->fd != -1) {
		close(ctl->fd);
		unlink(ctl->path);
	}
	free(ctl->path);
	free(ctl);
}

int
smx_vm_control(struct smx_vm *v, const char *path, char *err, size_t errlen)
{
	struct sockaddr_un	 sa;
	struct ctl		*ctl;
	char			 dummy[8];
	int			 error;

	if (err == NULL) {
		err = dummy;
		errlen = sizeof dummy;
	}
	if (v->ctl != NULL) {
		snprintf(err, errlen, "the machine has a control socket already");
		return -EEXIST;
	}
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sa.sun_path) {
		snprintf(err, errlen, "%s: path too long for a Unix socket",
		    path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	ctl = xcalloc(1, sizeof *ctl);
	ctl->v = v;
	ctl->path = xstrdup(path);
	LIST_INIT(&ctl->conns);
	unlink(path);
	if ((ctl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0)) == -1 ||
	    bind(ctl->fd, (struct sockaddr *)&sa, sizeof sa) == -1 ||
	    listen(ctl->fd, 8) == -1 ||
	    (ctl->rfd = reactor_add_fd(v->smx->r, ctl->fd, REACTOR_READ,
	    ctl_accept_cb, ctl)) == NULL) {
		error = -errno;
		snprintf(err, errlen, "cannot listen on %s: %s", path,
		    strerror(errno));
		if (ctl->fd != -1) {
			close(ctl->fd);
			unlink(path);
		}
		free(ctl->path);
		free(ctl);
		return error;
	}
	v->ctl = ctl;
	return 0;
}
