/*
 * image/unpack.c: apply one OCI layer (a tar stream, maybe gzip or zstd
 * compressed) onto a root directory.
 *
 * The layer is hostile input.  Every entry is created relative to a
 * directory fd that was reached from rootfs_fd one component at a time
 * without following any symlink (openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS, or O_NOFOLLOW on kernels without it), and the
 * last component is always created or touched with a call that does not
 * follow it either.  Names with "..", absolute names and hardlinks
 * leaving the root are refused before anything is looked up.  Symlinks
 * are stored verbatim: we never follow one, so their targets don't
 * matter.
 *
 * OCI image-spec "Representing Changes": ".wh.NAME" deletes NAME of the
 * lower layers, ".wh..wh..opq" empties a directory of everything the
 * lower layers put there.  Both apply to lower layers only, so we keep
 * the set of paths this layer created and spare them.
 *
 * Directory times come from the archive only: a directory of a lower
 * layer keeps its times when this layer adds or removes entries in it
 * (as umoci does), so a tree depends on its layers, not on when it was
 * unpacked.
 */
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/xattr.h>

#include <linux/openat2.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"

#define WH_PREFIX	".wh."
#define WH_OPAQUE	".wh..wh..opq"
#define PATH_LIMIT	4096
/* uid/gid (uint32_t)-1 means "unchanged" to chown; refuse it and above. */
#define ID_MAX		0xfffffffeLL

/* A directory whose mode and times are set once its contents are in. */
struct dir_meta {
	char		*path;
	mode_t		 mode;
	struct timespec	 ts[2];
};

/* The set of paths this layer created (open addressing, FNV-1a). */
struct pathset {
	char	**slot;
	size_t	  cap;
	size_t	  n;
};

struct unpacker {
	int			 root;
	unsigned		 flags;
	struct image_unpack_stats *st;
	char			*err;
	size_t			 errlen;
	const char		*entry;		/* name for messages */
	bool			 no_openat2;
	struct pathset		 created;
	struct dir_meta		*dirs;
	size_t			 ndirs, capdirs;
	/* Lower-layer directories this layer changes, with the times they
	 * had before (mode unused): restored at the end. */
	struct pathset		 noted;
	struct dir_meta		*old;
	size_t			 nold, capold;
	/* The last parent directory resolved, reused by its siblings; any
	 * removal drops it, since it may have been the one removed. */
	char			*cache_path;
	int			 cache_fd;
};

/* Record the first failure as "entry NAME: reason" and return rc. */
static int PRINTF(3, 4)
fail(struct unpacker *u, int rc, const char *fmt, ...)
{
	va_list	ap;
	char	msg[512];

	if (u->err != NULL && u->errlen > 0 && u->err[0] == '\0') {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		if (u->entry != NULL)
			snprintf(u->err, u->errlen, "layer entry \"%s\": %s",
			    u->entry, msg);
		else
			snprintf(u->err, u->errlen, "layer: %s", msg);
	}
	return rc;
}

static uint64_t
fnv1a(const char *s)
{
	uint64_t	h = 0xcbf29ce484222325ULL;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

static bool
pathset_has(const struct pathset *ps, const char *p)
{
	size_t	i;

	if (ps->cap == 0)
		return false;
	for (i = fnv1a(p) & (ps->cap - 1); ps->slot[i] != NULL;
	    i = (i + 1) & (ps->cap - 1))
		if (strcmp(ps->slot[i], p) == 0)
			return true;
	return false;
}

/* Insert a copy of p (kept at most half full so probes stay short). */
static void
pathset_add(struct pathset *ps, const char *p)
{
	char	**old = ps->slot;
	size_t	  oldcap = ps->cap, i, j;

	if (pathset_has(ps, p))
		return;
	if (2 * (ps->n + 1) > ps->cap) {
		ps->cap = oldcap ? 2 * oldcap : 256;
		ps->slot = xcalloc(ps->cap, sizeof(*ps->slot));
		for (j = 0; j < oldcap; j++) {
			if (old[j] == NULL)
				continue;
			for (i = fnv1a(old[j]) & (ps->cap - 1);
			    ps->slot[i] != NULL; i = (i + 1) & (ps->cap - 1))
				;
			ps->slot[i] = old[j];
		}
		free(old);
	}
	for (i = fnv1a(p) & (ps->cap - 1); ps->slot[i] != NULL;
	    i = (i + 1) & (ps->cap - 1))
		;
	ps->slot[i] = xstrdup(p);
	ps->n++;
}

static void
pathset_free(struct pathset *ps)
{
	size_t	i;

	for (i = 0; i < ps->cap; i++)
		free(ps->slot[i]);
	free(ps->slot);
	memset(ps, 0, sizeof(*ps));
}

/*
 * Normalize an archive name into out: drop "./" and empty components
 * and a trailing '/'.  Refuses absolute names, "..", empty names and
 * over-long ones.  The root itself normalizes to "".
 */
static int
normalize(struct unpacker *u, const char *what, const char *in, char *out,
    size_t outlen)
{
	const char	*p = in, *e;
	size_t		 n = 0, len;

	if (in == NULL || *in == '\0')
		return fail(u, -EINVAL, "empty %s", what);
	if (*in == '/')
		return fail(u, -EINVAL, "absolute %s refused", what);
	while (*p != '\0') {
		e = strchrnul(p, '/');
		len = e - p;
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return fail(u, -EINVAL, "%s with \"..\" refused", what);
		if (len > 0 && !(len == 1 && p[0] == '.')) {
			if (n + (n > 0) + len + 1 > outlen)
				return fail(u, -EINVAL, "%s too long", what);
			if (n > 0)
				out[n++] = '/';
			memcpy(out + n, p, len);
			n += len;
		}
		p = *e == '/' ? e + 1 : e;
	}
	out[n] = '\0';
	return 0;
}

/* Split a normalized path in place: *dir gets "" for a top-level name. */
static void
split(char *path, const char **dir, const char **name)
{
	char	*s = strrchr(path, '/');

	if (s == NULL) {
		*dir = "";
		*name = path;
	} else {
		*s = '\0';
		*dir = path;
		*name = s + 1;
	}
}

/*
 * Open one directory component below dirfd without following a symlink
 * and without leaving dirfd (name never contains '/', "." or "..").
 */
static int
open_component(struct unpacker *u, int dirfd, const char *name)
{
	struct open_how	how;
	int		fd;

	if (!u->no_openat2) {
		memset(&how, 0, sizeof(how));
		how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
		how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS |
		    RESOLVE_NO_SYMLINKS;
		fd = syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
		if (fd >= 0 || errno != ENOSYS)
			return fd >= 0 ? fd : -errno;
		u->no_openat2 = true;
	}
	/* O_PATH|O_NOFOLLOW would hand back the symlink itself; a plain
	 * read-only open with O_NOFOLLOW fails with ELOOP on one. */
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	return fd >= 0 ? fd : -errno;
}

static void
cache_drop(struct unpacker *u)
{
	if (u->cache_fd >= 0)
		close(u->cache_fd);
	u->cache_fd = -1;
	free(u->cache_path);
	u->cache_path = NULL;
}

static struct dir_meta *
dir_meta_push(struct dir_meta **v, size_t *n, size_t *cap)
{
	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 64;
		*v = xreallocarray(*v, *cap, sizeof(**v));
	}
	return &(*v)[(*n)++];
}

/*
 * About to add or remove an entry in directory path (open as fd): keep
 * its times to restore them at the end, unless this layer made it (its
 * own entry, if any, sets them) or they are kept already.
 */
static void
note_dir(struct unpacker *u, const char *path, int fd)
{
	struct dir_meta	*dm;
	struct stat	 sb;

	if (pathset_has(&u->created, path) || pathset_has(&u->noted, path))
		return;
	pathset_add(&u->noted, path);
	if (fstat(fd, &sb) != 0)
		return;
	dm = dir_meta_push(&u->old, &u->nold, &u->capold);
	dm->path = xstrdup(path);
	dm->mode = 0;
	dm->ts[0] = sb.st_atim;
	dm->ts[1] = sb.st_mtim;
}

/*
 * Resolve the directory path dir ("" is the root) to a new fd, walking
 * it one component at a time.  With create, missing components are made
 * (root-owned 0755, recorded as created by this layer).  A symlink or a
 * non-directory on the way is refused (-EINVAL); a missing component
 * without create gives -ENOENT and no message.
 */
static int
resolve_dir(struct unpacker *u, const char *dir, bool create, int *out)
{
	char		 sofar[PATH_LIMIT], comp[PATH_MAX];
	const char	*p, *e;
	size_t		 n = 0, len;
	int		 cur, fd, rc;
	struct stat	 sb;

	if (u->cache_path != NULL && strcmp(u->cache_path, dir) == 0) {
		fd = fcntl(u->cache_fd, F_DUPFD_CLOEXEC, 3);
		if (fd < 0)
			return fail(u, -errno, "dup: %s", strerror(errno));
		*out = fd;
		return 0;
	}
	cur = fcntl(u->root, F_DUPFD_CLOEXEC, 3);
	if (cur < 0)
		return fail(u, -errno, "dup: %s", strerror(errno));
	for (p = dir; *p != '\0'; p = *e == '/' ? e + 1 : e) {
		e = strchrnul(p, '/');
		len = e - p;
		if (len >= sizeof(comp) || n + len + 2 > sizeof(sofar)) {
			rc = fail(u, -EINVAL, "name too long");
			goto err_close;
		}
		memcpy(comp, p, len);
		comp[len] = '\0';
		fd = open_component(u, cur, comp);
		if (fd == -ENOENT && create) {
			sofar[n] = '\0';
			note_dir(u, sofar, cur);
		}
		/* sofar: the path of this component, for the created set. */
		if (n > 0)
			sofar[n++] = '/';
		memcpy(sofar + n, comp, len + 1);
		n += len;
		if (fd == -ENOENT && create) {
			if (mkdirat(cur, comp, 0755) != 0 && errno != EEXIST) {
				rc = fail(u, -errno, "mkdir %s: %s", sofar,
				    strerror(errno));
				goto err_close;
			}
			pathset_add(&u->created, sofar);
			/* Whatever the umask, parents made up are 0755. */
			(void)fchmodat(cur, comp, 0755, 0);
			fd = open_component(u, cur, comp);
		}
		if (fd < 0) {
			rc = fd;
			if (rc == -ENOENT && !create)
				goto err_close;
			if (rc == -ELOOP || rc == -ENOTDIR || rc == -EXDEV) {
				if (fstatat(cur, comp, &sb,
				    AT_SYMLINK_NOFOLLOW) == 0 &&
				    S_ISLNK(sb.st_mode))
					rc = fail(u, -EINVAL, "parent \"%s\" "
					    "is a symlink: refused", sofar);
				else
					rc = fail(u, -EINVAL, "parent \"%s\" "
					    "is not a directory", sofar);
			} else
				rc = fail(u, rc, "open %s: %s", sofar,
				    strerror(-rc));
			goto err_close;
		}
		close(cur);
		cur = fd;
	}
	cache_drop(u);
	u->cache_fd = fcntl(cur, F_DUPFD_CLOEXEC, 3);
	if (u->cache_fd >= 0)
		u->cache_path = xstrdup(dir);
	*out = cur;
	return 0;

err_close:
	close(cur);
	return rc;
}

static int	remove_at(struct unpacker *, int, const char *);

/* Remove everything inside the open directory dfd. */
static int
empty_dir(struct unpacker *u, int dfd)
{
	DIR		*d;
	struct dirent	*de;
	int		 fd, rc = 0;

	/* dfd may be O_PATH, which cannot be read: open it afresh. */
	fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if ((d = fdopendir(fd)) == NULL) {
		rc = -errno;
		close(fd);
		return rc;
	}
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL) {
			rc = -errno;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if ((rc = remove_at(u, dfd, de->d_name)) != 0)
			break;
	}
	closedir(d);
	return rc;
}

/* Remove name below dirfd, recursively if it is a directory (never
 * following a symlink).  A missing name is not an error. */
static int
remove_at(struct unpacker *u, int dirfd, const char *name)
{
	struct stat	sb;
	int		fd, rc;

	cache_drop(u);
	if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(sb.st_mode))
		return unlinkat(dirfd, name, 0) == 0 || errno == ENOENT ?
		    0 : -errno;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = empty_dir(u, fd);
	close(fd);
	if (rc == 0 && unlinkat(dirfd, name, AT_REMOVEDIR) != 0 &&
	    errno != ENOENT)
		rc = -errno;
	return rc;
}

/*
 * Opaque directory: remove what lower layers left below path (the open
 * directory dfd), keeping what this layer created, and descending into
 * directories this layer created since they may be merged with lower
 * ones.
 */
static int
opaque_dir(struct unpacker *u, int dfd, const char *path)
{
	DIR		*d;
	struct dirent	*de;
	struct stat	 sb;
	char		*child;
	int		 fd, sub, rc = 0;

	/* dfd may be O_PATH, which cannot be read: open it afresh. */
	fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if ((d = fdopendir(fd)) == NULL) {
		rc = -errno;
		close(fd);
		return rc;
	}
	while (rc == 0) {
		errno = 0;
		if ((de = readdir(d)) == NULL) {
			rc = -errno;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (*path != '\0')
			xasprintf(&child, "%s/%s", path, de->d_name);
		else
			child = xstrdup(de->d_name);
		if (!pathset_has(&u->created, child))
			rc = remove_at(u, dfd, de->d_name);
		else if (fstatat(dfd, de->d_name, &sb,
		    AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(sb.st_mode)) {
			sub = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY |
			    O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0)
				rc = -errno;
			else {
				rc = opaque_dir(u, sub, child);
				close(sub);
			}
		}
		free(child);
	}
	closedir(d);
	return rc;
}

/* A whiteout entry: path is the normalized name of the ".wh." file. */
static int
whiteout(struct unpacker *u, char *path)
{
	const char	*dir, *name, *victim;
	char		*full;
	int		 dfd, rc;

	split(path, &dir, &name);
	if (strcmp(name, WH_OPAQUE) == 0) {
		rc = resolve_dir(u, dir, false, &dfd);
		if (rc == -ENOENT)
			return 0;
		if (rc != 0)
			return rc;
		note_dir(u, dir, dfd);
		rc = opaque_dir(u, dfd, dir);
		close(dfd);
		if (rc != 0)
			return fail(u, rc, "opaque directory: %s",
			    strerror(-rc));
		u->st->whiteouts++;
		return 0;
	}
	victim = name + strlen(WH_PREFIX);
	if (strncmp(victim, WH_PREFIX, strlen(WH_PREFIX)) == 0) {
		/* Other ".wh..wh." names are aufs bookkeeping. */
		u->st->skipped++;
		return 0;
	}
	if (*victim == '\0' || strcmp(victim, ".") == 0 ||
	    strcmp(victim, "..") == 0)
		return fail(u, -EINVAL, "whiteout of \"%s\" refused", victim);
	if (*dir != '\0')
		xasprintf(&full, "%s/%s", dir, victim);
	else
		full = xstrdup(victim);
	/* Whiteouts hide lower layers only (image-spec). */
	if (pathset_has(&u->created, full)) {
		free(full);
		return 0;
	}
	free(full);
	rc = resolve_dir(u, dir, false, &dfd);
	if (rc == -ENOENT)
		return 0;
	if (rc != 0)
		return rc;
	note_dir(u, dir, dfd);
	rc = remove_at(u, dfd, victim);
	close(dfd);
	if (rc != 0)
		return fail(u, rc, "whiteout: %s", strerror(-rc));
	u->st->whiteouts++;
	return 0;
}

/* Make room for a new entry: remove what is there, except a directory
 * when a directory comes (*keep is then set). */
static int
make_room(struct unpacker *u, int dfd, const char *name, bool is_dir,
    bool *keep)
{
	struct stat	sb;
	int		rc;

	*keep = false;
	if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
		if (errno == ENOENT)
			return 0;
		return fail(u, -errno, "stat: %s", strerror(errno));
	}
	if (is_dir && S_ISDIR(sb.st_mode)) {
		*keep = true;
		return 0;
	}
	if ((rc = remove_at(u, dfd, name)) != 0)
		return fail(u, rc, "replacing the existing entry: %s",
		    strerror(-rc));
	return 0;
}

/* Copy the entry's data into fd.  libarchive hands sparse files over as
 * blocks at offsets; the gaps are left as holes and the final size set
 * with ftruncate, so trailing holes count too. */
static int
write_data(struct unpacker *u, struct archive *a, struct archive_entry *e,
    int fd)
{
	const void	*buf;
	size_t		 len;
	la_int64_t	 off;
	int		 r, rc;

	for (;;) {
		r = archive_read_data_block(a, &buf, &len, &off);
		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
			return fail(u, -EINVAL, "corrupt data: %s",
			    archive_error_string(a));
		if (off < 0)
			return fail(u, -EINVAL, "negative data offset");
		if ((rc = pwrite_all(fd, buf, len, off)) != 0)
			return fail(u, rc, "write: %s", strerror(-rc));
		u->st->bytes += len;
	}
	if (archive_entry_size_is_set(e) && archive_entry_size(e) >= 0 &&
	    ftruncate(fd, archive_entry_size(e)) != 0)
		return fail(u, -errno, "truncate: %s", strerror(errno));
	return 0;
}

/* Set the entry's xattrs on fd, or through /proc/self/fd for an O_PATH
 * fd (symlinks, device nodes) which fsetxattr refuses.  A failure to set
 * one is logged, not fatal: the filesystem may not support it. */
static void
apply_xattrs(struct unpacker *u, struct archive_entry *e, int fd,
    bool opath)
{
	const char	*name;
	const void	*val;
	size_t		 len;
	char		 proc[64];
	int		 r;

	if (!(u->flags & IMAGE_UNPACK_XATTRS) ||
	    archive_entry_xattr_reset(e) == 0)
		return;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	while (archive_entry_xattr_next(e, &name, &val, &len) == ARCHIVE_OK) {
		/* overlayfs control xattrs would steer the guest's overlay
		 * mount that stacks on this tree. */
		if (strncmp(name, "trusted.overlay.", 16) == 0) {
			log_warnx("layer entry \"%s\": xattr %s ignored",
			    u->entry, name);
			continue;
		}
		if (opath)
			r = setxattr(proc, name, val, len, 0);
		else
			r = fsetxattr(fd, name, val, len, 0);
		if (r != 0)
			log_warn("layer entry \"%s\": xattr %s", u->entry,
			    name);
	}
}

/* The entry's atime (mtime when the archive has none) and mtime. */
static void
entry_times(struct archive_entry *e, struct timespec ts[2])
{
	ts[1].tv_sec = archive_entry_mtime(e);
	ts[1].tv_nsec = archive_entry_mtime_nsec(e);
	if (archive_entry_atime_is_set(e)) {
		ts[0].tv_sec = archive_entry_atime(e);
		ts[0].tv_nsec = archive_entry_atime_nsec(e);
	} else
		ts[0] = ts[1];
	if (ts[0].tv_nsec < 0 || ts[0].tv_nsec >= 1000000000)
		ts[0].tv_nsec = 0;
	if (ts[1].tv_nsec < 0 || ts[1].tv_nsec >= 1000000000)
		ts[1].tv_nsec = 0;
}

/* chown an entry (when asked to) without following it. */
static int
apply_owner(struct unpacker *u, struct archive_entry *e, int dfd,
    const char *name)
{
	if (!(u->flags & IMAGE_UNPACK_OWNERS))
		return 0;
	if (fchownat(dfd, name, archive_entry_uid(e), archive_entry_gid(e),
	    AT_SYMLINK_NOFOLLOW) != 0)
		return fail(u, -errno, "chown: %s", strerror(errno));
	return 0;
}

/* A regular file: created exclusively, filled, then owner, mode (after
 * chown, which clears setuid), xattrs, times. */
static int
make_file(struct unpacker *u, struct archive *a, struct archive_entry *e,
    int dfd, const char *name)
{
	struct timespec	ts[2];
	int		fd, rc;

	fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, 0600);
	if (fd < 0)
		return fail(u, -errno, "create: %s", strerror(errno));
	if ((rc = write_data(u, a, e, fd)) != 0)
		goto out;
	if ((u->flags & IMAGE_UNPACK_OWNERS) &&
	    fchown(fd, archive_entry_uid(e), archive_entry_gid(e)) != 0) {
		rc = fail(u, -errno, "chown: %s", strerror(errno));
		goto out;
	}
	if (fchmod(fd, archive_entry_perm(e) & 07777) != 0) {
		rc = fail(u, -errno, "chmod: %s", strerror(errno));
		goto out;
	}
	apply_xattrs(u, e, fd, false);
	entry_times(e, ts);
	if (futimens(fd, ts) != 0)
		rc = fail(u, -errno, "utimens: %s", strerror(errno));
out:
	close(fd);
	return rc;
}

/* A directory: made or kept; its mode and times wait for the end. */
static int
make_dir(struct unpacker *u, struct archive_entry *e, int dfd,
    const char *name, const char *path, bool keep)
{
	struct dir_meta	*dm;
	int		 fd, rc;

	if (!keep && mkdirat(dfd, name, 0700) != 0)
		return fail(u, -errno, "mkdir: %s", strerror(errno));
	if ((rc = apply_owner(u, e, dfd, name)) != 0)
		return rc;
	if (u->flags & IMAGE_UNPACK_XATTRS) {
		fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
		if (fd < 0)
			return fail(u, -errno, "open: %s", strerror(errno));
		apply_xattrs(u, e, fd, false);
		close(fd);
	}
	dm = dir_meta_push(&u->dirs, &u->ndirs, &u->capdirs);
	dm->path = xstrdup(path);
	dm->mode = archive_entry_perm(e) & 07777;
	entry_times(e, dm->ts);
	return 0;
}

/* Symlinks, fifos and device nodes: created, then owner, mode (not for
 * symlinks), xattrs through an O_PATH fd, times, none following. */
static int
make_special(struct unpacker *u, struct archive_entry *e, int dfd,
    const char *name, mode_t type)
{
	struct timespec	ts[2];
	int		fd, rc;

	if (type == S_IFLNK) {
		if (archive_entry_symlink(e) == NULL)
			return fail(u, -EINVAL, "symlink without a target");
		if (symlinkat(archive_entry_symlink(e), dfd, name) != 0)
			return fail(u, -errno, "symlink: %s",
			    strerror(errno));
	} else if (mknodat(dfd, name, type | 0600,
	    type == S_IFIFO ? 0 : archive_entry_rdev(e)) != 0)
		return fail(u, -errno, "mknod: %s", strerror(errno));
	if ((rc = apply_owner(u, e, dfd, name)) != 0)
		return rc;
	/* We just made this node and nothing else writes the tree, so the
	 * name is not a symlink: following it is harmless (and Linux has
	 * no lchmod). */
	if (type != S_IFLNK &&
	    fchmodat(dfd, name, archive_entry_perm(e) & 07777, 0) != 0)
		return fail(u, -errno, "chmod: %s", strerror(errno));
	if (u->flags & IMAGE_UNPACK_XATTRS) {
		fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return fail(u, -errno, "open: %s", strerror(errno));
		apply_xattrs(u, e, fd, true);
		close(fd);
	}
	entry_times(e, ts);
	if (utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW) != 0)
		return fail(u, -errno, "utimens: %s", strerror(errno));
	return 0;
}

/* A hardlink: its target is named from the root, must stay in it and
 * must exist already. */
static int
make_hardlink(struct unpacker *u, const char *target, const char *path,
    int dfd, const char *name)
{
	char		 tpath[PATH_LIMIT];
	const char	*tdir, *tname;
	int		 tfd, rc;

	if ((rc = normalize(u, "hardlink target", target, tpath,
	    sizeof(tpath))) != 0)
		return rc;
	if (tpath[0] == '\0' || strcmp(tpath, path) == 0)
		return fail(u, -EINVAL, "hardlink to \"%s\" refused", target);
	split(tpath, &tdir, &tname);
	rc = resolve_dir(u, tdir, false, &tfd);
	if (rc == -ENOENT)
		return fail(u, -EINVAL, "hardlink target \"%s\" missing",
		    target);
	if (rc != 0)
		return rc;
	rc = 0;
	if (linkat(tfd, tname, dfd, name, 0) != 0) {
		rc = -errno;
		if (rc == -ENOENT || rc == -EPERM)
			rc = fail(u, -EINVAL, "hardlink target \"%s\": %s",
			    target, strerror(-rc));
		else
			rc = fail(u, rc, "link: %s", strerror(-rc));
	}
	close(tfd);
	return rc;
}

/* Check ids before anything is created: (uid_t)-1 means "no change" to
 * chown and bigger ones do not fit, so either is a broken layer. */
static int
check_ids(struct unpacker *u, struct archive_entry *e)
{
	la_int64_t	uid = archive_entry_uid(e), gid = archive_entry_gid(e);

	if (uid < 0 || uid > ID_MAX || gid < 0 || gid > ID_MAX)
		return fail(u, -EINVAL, "uid/gid %lld/%lld out of range",
		    (long long)uid, (long long)gid);
	return 0;
}

/* Apply one archive entry. */
static int
apply_entry(struct unpacker *u, struct archive *a, struct archive_entry *e)
{
	char		 path[PATH_LIMIT], parent[PATH_LIMIT];
	const char	*dir, *name, *link;
	mode_t		 type;
	bool		 keep;
	int		 dfd, rc;

	if ((rc = normalize(u, "name", u->entry, path, sizeof(path))) != 0)
		return rc;
	if ((rc = check_ids(u, e)) != 0)
		return rc;
	link = archive_entry_hardlink(e);
	type = archive_entry_filetype(e);
	strcpy(parent, path);
	split(parent, &dir, &name);

	if (strncmp(name, WH_PREFIX, strlen(WH_PREFIX)) == 0)
		return whiteout(u, path);

	if (path[0] == '\0') {
		/* "./": the root itself; only its metadata can change. */
		if (link != NULL || type != AE_IFDIR)
			return fail(u, -EINVAL, "the root must be a directory");
		return make_dir(u, e, u->root, ".", "", true);
	}
	if (link == NULL && (type == AE_IFCHR || type == AE_IFBLK ||
	    type == AE_IFIFO) && !(u->flags & IMAGE_UNPACK_DEVICES)) {
		log_debug("layer entry \"%s\": device node skipped", u->entry);
		u->st->skipped++;
		return 0;
	}
	if (link == NULL && type != AE_IFREG && type != AE_IFDIR &&
	    type != AE_IFLNK && type != AE_IFCHR && type != AE_IFBLK &&
	    type != AE_IFIFO) {
		log_warnx("layer entry \"%s\": file type %o skipped", u->entry,
		    (unsigned)type);
		u->st->skipped++;
		return 0;
	}

	if ((rc = resolve_dir(u, dir, true, &dfd)) != 0)
		return rc;
	note_dir(u, dir, dfd);
	if ((rc = make_room(u, dfd, name,
	    link == NULL && type == AE_IFDIR, &keep)) != 0)
		goto out;
	if (link != NULL)
		rc = make_hardlink(u, link, path, dfd, name);
	else if (type == AE_IFREG)
		rc = make_file(u, a, e, dfd, name);
	else if (type == AE_IFDIR)
		rc = make_dir(u, e, dfd, name, path, keep);
	else
		rc = make_special(u, e, dfd, name, type);
	if (rc == 0)
		pathset_add(&u->created, path);
out:
	close(dfd);
	return rc;
}

/* Give directories their mode (with mode) and times now that nothing
 * more will be written into them.  One that a later entry replaced or
 * removed is passed over. */
static int
finish_dirs(struct unpacker *u, struct dir_meta *dirs, size_t ndirs,
    bool mode)
{
	struct dir_meta	*dm;
	char		 buf[PATH_LIMIT];
	const char	*dir, *name;
	size_t		 i;
	int		 dfd, fd, rc;

	for (i = 0; i < ndirs; i++) {
		dm = &dirs[i];
		u->entry = dm->path;
		if (dm->path[0] == '\0') {
			dfd = fcntl(u->root, F_DUPFD_CLOEXEC, 3);
			name = ".";
		} else {
			strcpy(buf, dm->path);
			split(buf, &dir, &name);
			if ((rc = resolve_dir(u, dir, false, &dfd)) != 0) {
				if (rc != -ENOENT && rc != -EINVAL)
					return rc;
				/* Gone, or a later entry made a parent a
				 * symlink or file: nothing to set.  No
				 * failure happened before this point. */
				if (u->err != NULL && u->errlen > 0)
					u->err[0] = '\0';
				continue;
			}
		}
		if (dfd < 0)
			return fail(u, -errno, "dup: %s", strerror(errno));
		fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
		close(dfd);
		if (fd < 0)
			continue;
		rc = 0;
		if (mode && fchmod(fd, dm->mode) != 0)
			rc = fail(u, -errno, "chmod: %s", strerror(errno));
		else if (futimens(fd, dm->ts) != 0)
			rc = fail(u, -errno, "utimens: %s", strerror(errno));
		close(fd);
		if (rc != 0)
			return rc;
	}
	u->entry = NULL;
	return 0;
}

int
image_layer_unpack(int rootfs_fd, const char *layer_path, unsigned flags,
    struct image_unpack_stats *stats, char *err, size_t errlen)
{
	struct image_unpack_stats dummy;
	struct unpacker	 u;
	struct archive	*a;
	struct archive_entry *e;
	size_t		 i;
	int		 r, rc = 0;

	memset(&u, 0, sizeof(u));
	u.root = rootfs_fd;
	u.flags = flags;
	u.st = stats != NULL ? stats : &dummy;
	memset(u.st, 0, sizeof(*u.st));
	u.err = err;
	u.errlen = errlen;
	u.cache_fd = -1;
	if (err != NULL && errlen > 0)
		err[0] = '\0';

	if ((a = archive_read_new()) == NULL)
		return fail(&u, -ENOMEM, "out of memory");
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	archive_read_support_filter_none(a);
	archive_read_support_format_tar(a);
	/* A zero-byte layer holds nothing; accept it as such. */
	archive_read_support_format_empty(a);
	if (archive_read_open_filename(a, layer_path, 1 << 16) != ARCHIVE_OK) {
		rc = fail(&u, archive_errno(a) == ENOENT ? -ENOENT : -EINVAL,
		    "%s: %s", layer_path, archive_error_string(a));
		goto out;
	}
	for (;;) {
		u.entry = NULL;
		r = archive_read_next_header(a, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r == ARCHIVE_RETRY)
			continue;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
			rc = fail(&u, -EINVAL, "%s: %s", layer_path,
			    archive_error_string(a));
			goto out;
		}
		u.entry = archive_entry_pathname(e);
		if (u.entry == NULL) {
			rc = fail(&u, -EINVAL, "%s: entry %llu has no "
			    "usable name", layer_path,
			    (unsigned long long)u.st->entries);
			goto out;
		}
		u.st->entries++;
		if ((rc = apply_entry(&u, a, e)) != 0)
			goto out;
	}
	u.entry = NULL;
	/* Lower-layer times first: this layer's own entries win. */
	if ((rc = finish_dirs(&u, u.old, u.nold, false)) == 0)
		rc = finish_dirs(&u, u.dirs, u.ndirs, true);
out:
	archive_read_free(a);
	cache_drop(&u);
	pathset_free(&u.created);
	pathset_free(&u.noted);
	for (i = 0; i < u.ndirs; i++)
		free(u.dirs[i].path);
	free(u.dirs);
	for (i = 0; i < u.nold; i++)
		free(u.old[i].path);
	free(u.old);
	return rc;
}
