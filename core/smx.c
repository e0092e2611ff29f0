/*
 * libsmx: the public API over the VM object and the reactor.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "core/smx.h"
#include "core/vm.h"

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
};

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
	vm_free(v->vm);
	if (v->rundir != NULL)
		remove_rundir(v->rundir);
	free(v->rundir);
	free(v->vsock);
	free(v);
}
