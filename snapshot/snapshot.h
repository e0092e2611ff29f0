/*
 * snapshot: the state of a paused machine in a directory, and machines
 * made again from it with copy-on-write memory.
 *
 * A snapshot directory holds two files:
 *   state   a versioned header (magic, version, sizes, CRC32 of the
 *           header and of the body) and a body of sections: the machine
 *           configuration, the CPU features the guest saw, the memory
 *           file's size and SHA-256, the hypervisor's VM state (PIC,
 *           IOAPIC, PIT, KVM clock), one section per vCPU, one per
 *           virtio device (virtio_dev_save(), in window order), the 8250
 *           UART (registers, pending interrupt, RX FIFO) and the CMOS;
 *   memory  guest RAM as a raw file, sparse: all-zero pages are holes.
 * Both are written under temporary names and renamed into place, state
 * last: a machine restored from an older snapshot keeps its (private)
 * mapping of the file it was made from.
 *
 * A diff snapshot holds a state file and, instead of memory,
 *   pages   the pages of RAM that differ from its base's memory
 * and its state names the base (absolute path, and the SHA-256 of the
 * base's state file, so a base taken again is not mistaken for it).
 * It restores as the base's memory mapped copy-on-write with the pages
 * read over it.  A base is always a full snapshot.
 *
 * What a snapshot does not carry: open vsock streams (the guest's driver
 * gets a TRANSPORT_RESET event on restore), console output the host had
 * not written out yet (it is flushed at capture), DAX mappings of
 * virtio-fs windows.
 *
 * Threads: everything on the reactor thread unless said otherwise.
 * Errors: 0 / -errno with a one-line reason in err.
 */
#ifndef SMX_SNAPSHOT_H
#define SMX_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/base.h"
#include "core/vm.h"
#include "reactor/reactor.h"

/* 2: UART and CMOS sections, diff snapshots. */
#define SNAPSHOT_VERSION	2
#define SNAPSHOT_STATE_FILE	"state"
#define SNAPSHOT_MEMORY_FILE	"memory"
#define SNAPSHOT_PAGES_FILE	"pages"

/*
 * Capture the state of a paused machine (vm_pause() called and its
 * callback seen) into directory dir (created if missing).  Device, vCPU
 * and VM state are gathered now and guest RAM is frozen as it is now
 * (a forked child writes it from its copy-on-write image of the
 * process), so the machine may be resumed or stopped as soon as this
 * returns.  The files are written off the reactor thread, and
 * done_cb(error, reason, arg) runs on the reactor thread when they are
 * on disk (reason is "" on success).  An error found before the writing
 * starts is returned here (and done_cb is not called).
 */
typedef void (*snapshot_done_fn)(int error, const char *reason, void *arg);
int	snapshot_capture(struct vm *, struct reactor *, const char *dir,
	    snapshot_done_fn done_cb, void *arg, char *err, size_t errlen)
	    WUR;
/* The same, writing on the calling thread before returning (no fork:
 * for tests and tools; it blocks the reactor meanwhile). */
int	snapshot_save(struct vm *, const char *dir, char *err, size_t errlen)
	    WUR;

/*
 * A diff snapshot of a paused machine against base_dir (a full
 * snapshot, checked here): the same as snapshot_capture() /
 * snapshot_save(), writing into dir only the pages of RAM that differ
 * from the base's memory.  Cheap for a machine restored from base_dir
 * (or from a diff of it): only the pages written since are looked at
 * (the dirty log, with snapshot_restore_opts.track_dirty, and the
 * pages this process holds private copies of: see snapshot.c).  Any
 * other machine is compared page by page with the base.  Restarts the
 * machine's dirty log.  dir must not be base_dir.
 */
int	snapshot_capture_diff(struct vm *, struct reactor *,
	    const char *base_dir, const char *dir, snapshot_done_fn done_cb,
	    void *arg, char *err, size_t errlen) WUR;
int	snapshot_save_diff(struct vm *, const char *base_dir, const char *dir,
	    char *err, size_t errlen) WUR;

/* What a restore may change about the machine; the rest is the
 * snapshot's configuration. */
struct snapshot_restore_opts {
	size_t		 size;		/* sizeof(struct snapshot_restore_opts) */
	int		 console_fd;	/* UART output, -1: none */
	int		 console_in_fd;	/* -1: none */
	int		 hvc_fd;	/* virtio-console output, -1: none */
	const char	*vsock_path;	/* NULL: the snapshot's (one machine
					 * at a time can listen there) */
	bool		 verify_memory;	/* check the memory file's SHA-256
					 * (reads it all: slow) */
	const char	*base_dir;	/* a diff's base, NULL: the one it
					 * records */
	bool		 track_dirty;	/* log guest writes, for a later
					 * snapshot_capture_diff() */
};
void	snapshot_restore_opts_init(struct snapshot_restore_opts *);

/*
 * Make a machine from snapshot dir: RAM mapped MAP_PRIVATE from its
 * memory file (a diff: its base's, with the diff's pages read over it),
 * devices created and loaded, VM, vCPU, UART and CMOS state set.
 * Returns the machine ready for vm_start(), or NULL with the reason in
 * err: a missing, truncated or corrupted state file, another format
 * version, a memory file of the wrong size (or digest, with
 * verify_memory), a host CPU lacking features the guest saw; for a
 * diff, a missing base, a base other than the one it was taken against,
 * a truncated pages file.
 */
struct vm *snapshot_restore(struct reactor *, const char *dir,
	    const struct snapshot_restore_opts *, char *err, size_t errlen);

/*
 * Check a snapshot without making a machine: the state file's header
 * and CRC, its sections, the memory file's size and (with memory) its
 * SHA-256 (a diff: its base and its pages file likewise).  On success
 * fills what is not NULL: memory size in MiB and
 * vCPU count.
 */
int	snapshot_check(const char *dir, bool memory, uint64_t *memory_mib,
	    unsigned *ncpus, char *err, size_t errlen) WUR;

/*
 * Portability: one file holding state and memory, zstd-compressed, with
 * a SHA-256 of the uncompressed stream at its end.  snapshot_import()
 * checks that checksum and the snapshot itself, and refuses a snapshot
 * whose guest saw CPU features this host lacks.  A diff snapshot is not
 * exported (export a full one).
 */
int	snapshot_export(const char *dir, const char *file, char *err,
	    size_t errlen) WUR;
int	snapshot_import(const char *file, const char *dir, char *err,
	    size_t errlen) WUR;

#endif /* SMX_SNAPSHOT_H */
