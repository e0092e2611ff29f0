/*
 * libsmx: run microVMs from your own program.
 *
 * A struct smx is a runtime: one reactor (event loop) serving any number
 * of machines; call smx_run() on the thread that should own it.  Every
 * function returns 0 or a negative errno unless it says otherwise.
 * Option structs carry their own size so they can grow without breaking
 * callers: always fill them with the matching *_init() function first.
 *
 * Threads: every function is called on the thread that calls smx_run(),
 * or before smx_run() is called.
 */
#ifndef SMX_H
#define SMX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SMX_API_VERSION	1

struct smx;
struct smx_vm;

/* How a machine ended. */
enum smx_end {
	SMX_END_RUNNING = 0,	/* not ended yet */
	SMX_END_POWEROFF,	/* the guest powered off or halted */
	SMX_END_REBOOT,		/* the guest asked for a reset */
	SMX_END_TRIPLE_FAULT,	/* the guest triple-faulted */
	SMX_END_CRASH,		/* the hypervisor could not go on */
	SMX_END_STOPPED,	/* the host stopped it */
};

/* What kind of KVM this host has. */
enum smx_kvm {
	SMX_KVM_ABSENT = 0,
	SMX_KVM_HARDWARE,	/* VT-x / AMD-V */
	SMX_KVM_PVM,		/* KVM without hardware virtualization */
};

/* The library's version string, e.g. "0.1.0". */
const char	*smx_version(void);
/* A short lowercase name for an end ("poweroff", "reboot", ...). */
const char	*smx_end_name(enum smx_end);
/* The host's KVM; *why (optional) says what is missing when absent. */
enum smx_kvm	 smx_kvm_probe(const char **why);

#define SMX_OPEN_SIGNALS	0x1	/* SIGINT/SIGTERM stop every VM */

/* Create a runtime. */
int	smx_open(struct smx **, unsigned flags);
/* Free a runtime; every machine must have been freed. */
void	smx_close(struct smx *);
/* Run until every machine started in this runtime has ended (or until
 * none was started).  Returns 0 or -errno. */
int	smx_run(struct smx *);
/* The signal that stopped the machines (SMX_OPEN_SIGNALS), or 0. */
int	smx_stop_signal(const struct smx *);

struct smx_boot_opts {
	size_t		 size;		/* sizeof(struct smx_boot_opts) */
	const char	*kernel;	/* vmlinux (PVH) or bzImage */
	const char	*initrd;	/* NULL for none */
	const char	*cmdline;	/* NULL: console=ttyS0 and friends */
	uint32_t	 cpus;		/* 1..8, default 1 */
	uint64_t	 memory_mib;	/* default 256 */
	int		 console_fd;	/* serial output; default 1 (stdout) */
	int		 console_in_fd;	/* serial input or -1 (default) */
	/* virtio devices (SMX_DEV_*); default RNG | BALLOON | VSOCK. */
	unsigned	 devices;
	/* The vsock's host Unix socket; NULL: "vsock" in the machine's
	 * run directory (removed with the machine) under $SMX_RUNDIR, or
	 * /run/smx as root, or $XDG_RUNTIME_DIR/smx, or $SMX_HOME/run. */
	const char	*vsock_path;
	uint64_t	 vsock_cid;	/* guest CID, default 3 */
	const struct smx_disk *disks;	/* virtio-blk disks, in order */
	unsigned	 ndisks;	/* at most 4 */
	/* The balloon's initial target in MiB (0: none), at most
	 * memory_mib; needs SMX_DEV_BALLOON. */
	uint64_t	 balloon_target_mib;
	/* virtio-fs shares of host directories, after the disks. */
	const struct smx_share *shares;
	unsigned	 nshares;	/* at most 4 */
};

#define SMX_DEV_RNG	0x1	/* virtio-rng fed by getrandom() */
#define SMX_DEV_BALLOON	0x2	/* virtio-balloon */
#define SMX_DEV_VSOCK	0x4	/* virtio-vsock, hybrid Unix socket */
#define SMX_DEV_HVC	0x8	/* virtio-console (hvc0) on console_fd */

struct smx_disk {
	const char	*path;		/* raw image or block device */
	int		 readonly;
};

/* A host directory the guest mounts with `mount -t virtiofs TAG DIR`
 * (or boots from: rootfstype=virtiofs root=TAG). */
struct smx_share {
	const char	*path;		/* the host directory */
	const char	*tag;		/* 1 to 36 bytes */
	int		 readonly;	/* every change fails with EROFS */
	int		 dax;		/* a DAX window (mount -o dax) */
	/* Its size in MiB: a power of two from 2 to 65536; 0: 1024. */
	uint64_t	 dax_window_mib;
};

/* Fill *o with defaults. */
void	smx_boot_opts_init(struct smx_boot_opts *o);
/* The command line used when opts->cmdline is NULL. */
const char *smx_default_cmdline(void);

/*
 * Create and start a machine booting a Linux kernel (or any ELF with a
 * PVH entry note).  On failure returns -errno and, when err is not NULL,
 * a one-line reason in err.
 */
int	smx_boot(struct smx *, const struct smx_boot_opts *,
	    struct smx_vm **, char *err, size_t errlen);
/* The machine's vsock Unix socket, or NULL without one.  Connect and
 * write "CONNECT <port>\n" to reach a guest listener. */
const char	*smx_vm_vsock_path(const struct smx_vm *);
/* Ask a machine to stop; it ends with SMX_END_STOPPED. */
void	smx_vm_stop(struct smx_vm *);
/* How the machine ended (SMX_END_RUNNING while it runs). */
enum smx_end	 smx_vm_end(const struct smx_vm *);
/* A one-line detail of the end ("i8042 reset", "triple fault"). */
const char	*smx_vm_end_detail(const struct smx_vm *);
/* Free a machine that has ended. */
void	smx_vm_free(struct smx_vm *);

/*
 * Images and containers.  An image is opened by reference (pulled into
 * $SMX_HOME when missing, its rootfs unpacked once per chain id); a
 * machine started from it boots the project kernel with the smx-init
 * agent as PID 1, which mounts the image read-only under a tmpfs
 * overlay.  The calls below that wait (smx_image_open, smx_vm_start,
 * smx_exec, the file calls, smx_vm_shutdown) run the runtime's event
 * loop while they wait, so other machines keep being served.
 */
struct smx_image;

struct smx_image_opts {
	size_t		 size;		/* sizeof(struct smx_image_opts) */
	int		 pull;		/* SMX_PULL_* (default MISSING) */
	const char	*platform;	/* "os/arch[/variant]", default linux/amd64 */
	int		 insecure;	/* plain HTTP allowed for this registry */
	int		 progress_fd;	/* pull progress (-1: none, default) */
};
#define SMX_PULL_MISSING	0	/* pull when not in the store */
#define SMX_PULL_NEVER		1	/* -ENOENT when not in the store */
#define SMX_PULL_ALWAYS		2

void	smx_image_opts_init(struct smx_image_opts *);
int	smx_image_open(struct smx *, const char *ref,
	    const struct smx_image_opts *, struct smx_image **,
	    char *err, size_t errlen);
/* The normalized reference and the manifest digest. */
const char	*smx_image_ref(const struct smx_image *);
const char	*smx_image_digest(const struct smx_image *);
void	smx_image_close(struct smx_image *);

/* A host directory (or file) mounted into the guest. */
struct smx_volume {
	const char	*host;		/* absolute or relative host path */
	const char	*guest;		/* absolute guest path */
	int		 readonly;
};

struct smx_vm_opts {
	size_t		 size;		/* sizeof(struct smx_vm_opts) */
	const char	*name;		/* hostname; NULL: generated */
	uint32_t	 cpus;		/* default 1 */
	uint64_t	 memory_mib;	/* default 256 */
	const char	*kernel;	/* NULL: the project kernel */
	int		 dax;		/* map the image root with DAX */
	const struct smx_volume *volumes;
	unsigned	 nvolumes;	/* at most SMX_MAX_VOLUMES */
	int		 console_fd;	/* guest kernel log; -1 (default): none */
	uint64_t	 ready_timeout_ms; /* agent ready, default 60000 */
	/* The vsock's host Unix socket (so other processes can reach the
	 * agent); NULL: one in a private run directory, as smx_boot. */
	const char	*vsock_path;
	/* SMX_SNAPSHOT_AUTO: restore the image's baked snapshot (see
	 * smx_image_bake) instead of booting when the machine asks for
	 * nothing it cannot give (volumes, DAX, another kernel, cpus or
	 * memory other than the bake's); without a usable one, boot, and
	 * when the machine has the default shape (1 vCPU, 256 MiB) bake
	 * it right after its agent is ready.  -v (log_info) says which. */
	int		 snapshot;
};
#define SMX_MAX_VOLUMES	3
#define SMX_SNAPSHOT_NONE	0	/* always boot (default) */
#define SMX_SNAPSHOT_AUTO	1

void	smx_vm_opts_init(struct smx_vm_opts *);
/*
 * Boot a machine from an image and wait until its agent is ready.  The
 * image must stay open until then (the machine keeps its own reference
 * afterwards).  Errors say what to do: -ENODEV no /dev/kvm, -ENOTSUP a
 * PVM host (no Linux guest runs there: use tools/kvm-harness), -ENOENT
 * the project kernel, the agent (smx-init; $SMX_INIT overrides) or a
 * volume source is missing, -EIO the guest ended first, -ETIMEDOUT not
 * ready in time, -EINTR a stop signal came (SMX_OPEN_SIGNALS).
 */
int	smx_vm_start(struct smx *, struct smx_image *,
	    const struct smx_vm_opts *, struct smx_vm **,
	    char *err, size_t errlen);

struct smx_exec_opts {
	size_t		 size;		/* sizeof(struct smx_exec_opts) */
	const char *const *argv;	/* NULL-terminated; NULL: the image's
					 * Entrypoint + Cmd */
	const char *const *env;		/* NULL-terminated KEY=VALUE, over
					 * the image's Env */
	const char	*cwd;		/* NULL: the image's WorkingDir or / */
	const char	*user;		/* NULL: the image's User or root */
	int		 tty;		/* a pty (stderr merged into stdout) */
	unsigned	 rows, cols;	/* pty size, default 24x80 */
	/* stdio: fds of the caller, or -1: stdin empty (or stdin_data),
	 * stdout/stderr captured into the result. */
	int		 stdin_fd, stdout_fd, stderr_fd;
	const void	*stdin_data;
	size_t		 stdin_len;
	uint64_t	 timeout_ms;	/* 0: none; SIGKILL when it expires */
	int		 main;		/* the container's main process */
	/* Called once on the runtime's thread when the process has
	 * started in the guest (pid in the guest), before it ends.  It
	 * runs inside smx_exec's wait: it must not call a function of
	 * this API that waits. */
	void		(*started_fn)(void *arg, int pid);
	void		*started_arg;
	/* With tty: a terminal whose size follows the process: each
	 * SIGWINCH (caught process-wide while the exec runs) resizes the
	 * guest's pty to it.  -1 (default): none. */
	int		 winch_fd;
};

struct smx_exec_result {
	int		 status;	/* exit code, or 128 + signal */
	int		 signal;	/* the killing signal, or 0 */
	char		*out;		/* captured stdout (NUL-terminated) */
	size_t		 out_len;
	char		*err;		/* captured stderr (NUL-terminated) */
	size_t		 err_len;
};

void	smx_exec_opts_init(struct smx_exec_opts *);
/* Run a process in the guest and wait for it.  0 when it ran (its
 * status is in *res), -errno when it could not be started. */
int	smx_exec(struct smx_vm *, const struct smx_exec_opts *,
	    struct smx_exec_result *res, char *err, size_t errlen);
void	smx_exec_result_free(struct smx_exec_result *);

/* Files in the guest (paths inside the container's root). */
int	smx_vm_write_file(struct smx_vm *, const char *path,
	    const void *data, size_t len, unsigned mode);
/* *data is malloc'd and NUL-terminated (not counted in *len). */
int	smx_vm_read_file(struct smx_vm *, const char *path, void **data,
	    size_t *len);

/* Publish guest TCP port guest_port on host_ip:host_port (host_ip NULL:
 * 127.0.0.1, IPv6 accepted; host_port 0: any, the bound port is returned
 * in *bound).  -EADDRINUSE when the host port is taken.  Connections are
 * served while the runtime's loop runs (smx_run() or a waiting call)
 * and closed when the machine ends.  SIGPIPE is set to SIG_IGN when it
 * still has its default action. */
int	smx_vm_publish(struct smx_vm *, const char *host_ip,
	    uint16_t host_port, uint16_t guest_port, uint16_t *bound,
	    char *err, size_t errlen);

/* Send a signal to the main process (-ESRCH when none runs). */
int	smx_vm_kill(struct smx_vm *, int sig);
/* Ask the agent to power the guest off and wait for the machine to
 * end (smx_vm_stop() after timeout_ms, default 10000 when 0). */
int	smx_vm_shutdown(struct smx_vm *, uint64_t timeout_ms);
/* The machine's name (hostname). */
const char	*smx_vm_name(const struct smx_vm *);

/*
 * Snapshots.  A snapshot is a directory (state + memory, see
 * snapshot/snapshot.h).  A machine restored from one runs on from the
 * moment it was taken, its memory shared copy-on-write with every other
 * clone; before smx_restore returns, the agent sets the guest's wall
 * clock to the host's, reseeds the kernel RNG from host entropy and
 * takes the new hostname (A_FIXUP).  What a snapshot cannot carry: DAX
 * mappings (machines started from an image with dax refuse), volumes
 * added later, open connections to the agent.
 */
#define SMX_SNAPSHOT_STOP	0x1	/* stop the machine once captured */

/* Pause the machine, capture it into dir (created; files written under
 * temporary names, state last), then resume it (or stop it with
 * SMX_SNAPSHOT_STOP).  Waits until the files are on disk. */
int	smx_vm_snapshot(struct smx_vm *, const char *dir, unsigned flags,
	    char *err, size_t errlen);
/* 1 when the machine was made from a snapshot rather than booted. */
int	smx_vm_restored(const struct smx_vm *);
/*
 * Serve a control socket for the machine at path (a Unix stream socket,
 * closed and removed when the machine ends), so other processes can
 * reach the one holding it.  Each connection sends one JSON line and
 * gets one back: {"op":"snapshot","dir":"/absolute/dir"} snapshots the
 * running machine (as smx_vm_snapshot, resuming it; with
 * "base":"/absolute/full-snapshot", a diff against it); {"op":"ping"}.
 * Answers are {"ok":true} or {"ok":false,"error":"one-line reason"}.
 * Served while the runtime's loop runs (smx_run() or a waiting call).
 */
int	smx_vm_control(struct smx_vm *, const char *path, char *err,
	    size_t errlen);

struct smx_restore_opts {
	size_t		 size;		/* sizeof(struct smx_restore_opts) */
	const char	*name;		/* new hostname; NULL: generated */
	const char	*vsock_path;	/* NULL: a private run directory's */
	int		 console_fd;	/* guest serial output, -1: none */
	uint64_t	 ready_timeout_ms; /* agent answer, default 60000 */
	/* The image the snapshot was made from (exec takes its defaults:
	 * Entrypoint, Cmd, Env, ...), or NULL: exec needs an argv. */
	struct smx_image *image;
};
void	smx_restore_opts_init(struct smx_restore_opts *);
/* Make a machine from snapshot dir, start it and apply the agent's
 * fix-ups; errors as smx_vm_start (plus a bad or missing snapshot). */
int	smx_restore(struct smx *, const char *dir,
	    const struct smx_restore_opts *, struct smx_vm **,
	    char *err, size_t errlen);

struct smx_bake_opts {
	size_t		 size;		/* sizeof(struct smx_bake_opts) */
	const char	*warmup;	/* run with /bin/sh -c first, or NULL */
	const char	*dir;		/* NULL: with the image, in $SMX_HOME
					 * (what SMX_SNAPSHOT_AUTO restores) */
	int		 console_fd;	/* guest kernel log, -1: none */
};
void	smx_bake_opts_init(struct smx_bake_opts *);
/* Boot the image in its default shape (1 vCPU, 256 MiB, no DAX) to an
 * agent ready, run the warmup (a non-zero exit fails the bake), and
 * snapshot it: atomically (a temporary directory renamed in) and under
 * a lock, so concurrent bakes of one image do not collide.  The
 * snapshot's directory goes into path (may be NULL). */
int	smx_image_bake(struct smx *, struct smx_image *,
	    const struct smx_bake_opts *, char *path, size_t pathlen,
	    char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* SMX_H */
