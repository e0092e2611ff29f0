/*
 * The state file's layout and its parsed form, shared by the snapshot
 * files (capture/restore, export/import).  Private to snapshot/.
 */
#ifndef SMX_SNAPSHOT_IMPL_H
#define SMX_SNAPSHOT_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/vm.h"
#include "hv/hv.h"

#define SNAP_MAGIC	"SMXSNAP"	/* 8 bytes with its NUL */
/* A state file is small (devices, vCPUs): anything larger is not one. */
#define SNAP_STATE_MAX	(64U << 20)

struct snap_header {
	char		magic[8];
	uint32_t	version;
	uint32_t	hdr_size;
	uint64_t	body_len;
	uint32_t	body_crc;	/* CRC32 of the body */
	uint32_t	hdr_crc;	/* CRC32 of the fields above */
};

enum snap_section_type {
	SEC_CONFIG = 1,		/* "key=value\n" lines */
	SEC_CPU,		/* u32[HV_CPU_FEATURE_WORDS] */
	SEC_MEMORY,		/* struct snap_mem */
	SEC_VM,			/* hv_save() blob */
	SEC_VCPU,		/* index = vCPU id; hv_vcpu_save() blob */
	SEC_DEVICE,		/* index = window; u32 device ID + save */
	SEC_UART,		/* uart_save() blob (version 2) */
	SEC_LEGACY,		/* legacy_save() blob (version 2) */
	SEC_DIFF,		/* struct snap_diff + base path: a diff */
};

struct snap_section {
	uint32_t	type;
	uint32_t	index;
	uint64_t	len;
};

struct snap_mem {
	uint64_t	size;
	uint8_t		sha256[32];
};

/*
 * A diff snapshot's SEC_DIFF: what its base must be, and its pages
 * file.  The base directory's path (absolute, no NUL) follows.  The
 * pages file is: magic "SMXDIFF\0", u64 page count n, n u64 page
 * numbers (RAM offset / 4096, strictly increasing), then the n pages.
 */
#define SNAP_DIFF_MAGIC	"SMXDIFF"
struct snap_diff {
	uint8_t		base_state_sha256[32];	/* the base's state file */
	uint8_t		pages_sha256[32];	/* the whole pages file */
	uint64_t	npages;
};

/* The configuration section parsed; its strings point into text. */
struct snap_config {
	struct vm_config cfg;
	char		*text;
};

/* A state file read and checked; the pointers point into buf. */
struct snap_state {
	uint8_t		*buf;
	size_t		 len;		/* of the whole file */
	struct snap_config config;
	bool		 have_config, have_cpu, have_mem;
	uint32_t	 cpu[HV_CPU_FEATURE_WORDS];
	struct snap_mem	 mem;
	const uint8_t	*vm;
	size_t		 vm_len;
	const uint8_t	*vcpu[HV_MAX_VCPUS];
	size_t		 vcpu_len[HV_MAX_VCPUS];
	unsigned	 nvcpu;
	const uint8_t	*dev[VM_MAX_VIRTIO];
	size_t		 dev_len[VM_MAX_VIRTIO];
	uint32_t	 dev_id[VM_MAX_VIRTIO];
	unsigned	 ndev;
	const uint8_t	*uart, *legacy;
	size_t		 uart_len, legacy_len;
	bool		 have_diff;
	struct snap_diff diff;
	char		*diff_base;	/* allocated */
};

int	snap_state_read(const char *dir, struct snap_state *, char *err,
	    size_t errlen);
void	snap_state_free(struct snap_state *);
void	snap_config_free(struct snap_config *);
int	snap_memory_digest(const char *path, uint64_t size,
	    uint8_t digest[SHA256_LEN]);

#endif /* SMX_SNAPSHOT_IMPL_H */
