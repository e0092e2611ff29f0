/*
 * core/base: the ground floor of smx.  Logging, allocation that cannot
 * fail, and the one bounds-checked accessor through which every guest
 * physical address is turned into a host pointer.
 */
#ifndef SMX_BASE_H
#define SMX_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define WUR	__attribute__((warn_unused_result))
#define PRINTF(f, a) __attribute__((format(printf, f, a)))

#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#define MIN(a, b)	((a) < (b) ? (a) : (b))
#define MAX(a, b)	((a) > (b) ? (a) : (b))
#define ALIGN_UP(x, a)	(((x) + ((a) - 1)) & ~((typeof(x))(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((typeof(x))(a) - 1))

/*
 * Logging.  Messages go to stderr prefixed with the program name.
 * log_warn() appends strerror(errno); log_warnx() does not.  fatal() and
 * fatalx() exit(1) and are only for host setup failures and broken
 * invariants, never for anything a guest can cause.  Thread-safe.
 */
enum log_level { LOG_QUIET = -1, LOG_NORMAL = 0, LOG_VERBOSE = 1, LOG_DEBUG = 2 };

void	log_init(const char *progname, int level);
int	log_get_level(void);
void	log_warn(const char *, ...) PRINTF(1, 2);
void	log_warnx(const char *, ...) PRINTF(1, 2);
void	log_info(const char *, ...) PRINTF(1, 2);
void	log_debug(const char *, ...) PRINTF(1, 2);
void	fatal(const char *, ...) PRINTF(1, 2) __attribute__((noreturn));
void	fatalx(const char *, ...) PRINTF(1, 2) __attribute__((noreturn));

/* Allocation: these never return NULL; running out of memory is fatal. */
void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xreallocarray(void *, size_t, size_t);
char	*xstrdup(const char *);
int	 xasprintf(char **, const char *, ...) PRINTF(2, 3);

/*
 * Guest physical memory.  A guest's RAM (and later other windows) is a
 * small set of regions, each a contiguous host mapping.  gmem_ptr() is
 * the only way to turn a guest-supplied address into a host pointer: it
 * returns NULL unless [gpa, gpa + len) lies entirely inside one region,
 * and it cannot be fooled by wrap-around.  Callable from any thread; the
 * region table is fixed once the VM runs.
 */
#define GMEM_MAX_REGIONS	8

struct gmem_region {
	uint64_t	 gpa;
	uint64_t	 size;
	uint8_t		*hva;
};

struct gmem {
	struct gmem_region	 r[GMEM_MAX_REGIONS];
	unsigned		 nr;
};

int	 gmem_add(struct gmem *, uint64_t gpa, uint64_t size, void *hva) WUR;
void	*gmem_ptr(const struct gmem *, uint64_t gpa, uint64_t len);
int	 gmem_read(const struct gmem *, uint64_t gpa, void *dst, size_t len) WUR;
int	 gmem_write(const struct gmem *, uint64_t gpa, const void *src,
	     size_t len) WUR;

/*
 * Files.  read_file() reads a whole regular file (at most maxlen bytes,
 * else -EFBIG) into a fresh buffer.  Returns 0 or -errno.
 */
int	 read_file(const char *path, size_t maxlen, uint8_t **buf,
	     size_t *len) WUR;
/* Write all len bytes (retrying short writes and EINTR).  0 or -errno. */
int	 write_all(int fd, const void *buf, size_t len) WUR;
/* The same at offset off (pwrite), for files.  0 or -errno. */
int	 pwrite_all(int fd, const void *buf, size_t len, uint64_t off) WUR;
/* Read exactly len bytes at offset off (pread).  0, -EIO when the file
 * ends first, or -errno. */
int	 pread_all(int fd, void *buf, size_t len, uint64_t off) WUR;

/*
 * Remove dfd/name and everything below it, never following symlinks
 * (read-only directories are made writable first: unpacked trees have
 * them).  A missing name is not an error.  Adds the sizes of removed
 * regular files to *bytes when bytes is not NULL.  0 or -errno.
 */
int	 rm_tree_at(int dfd, const char *name, uint64_t *bytes);

/* The state directory: $SMX_HOME, else /var/lib/smx as root, else
 * ~/.local/share/smx.  The string is owned by base. */
const char *smx_home(void);

/* Monotonic clock in nanoseconds. */
uint64_t now_ns(void);

/*
 * SHA-256 (core/base/sha256.c).  init, update any number of times, final
 * (which wipes the context).  sha256_hex() writes 64 lowercase hex digits
 * and a NUL; sha256_buf() hashes one buffer straight to hex.
 */
#define SHA256_LEN	32
#define SHA256_HEX_LEN	64

struct sha256_ctx {
	uint32_t	h[8];
	uint64_t	len;
	uint8_t		buf[64];
	size_t		nbuf;
};

void	sha256_init(struct sha256_ctx *);
void	sha256_update(struct sha256_ctx *, const void *, size_t);
void	sha256_final(struct sha256_ctx *, uint8_t out[SHA256_LEN]);
void	sha256_hex(const uint8_t d[SHA256_LEN], char out[SHA256_HEX_LEN + 1]);
void	sha256_buf(const void *, size_t, char out[SHA256_HEX_LEN + 1]);

#endif /* SMX_BASE_H */
