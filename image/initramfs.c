/*
 * The guest's initramfs: a newc cpio (what the kernel's initramfs
 * unpacker reads) holding the agent as /init, /dev/console and the
 * mount points the agent uses, cached by the agent's digest.
 *
 * Uncompressed: the kernel always reads plain newc (CONFIG_RD_* only
 * adds decompressors), and a copy into guest memory is cheaper than
 * inflating there.
 */
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"

#define INIT_MAX	(64u << 20)	/* a static agent is ~1 MiB */

/* Directories of the initramfs root, made before /init runs. */
static const char *const dirs[] = {
	"dev", "proc", "sys", "run", "tmp", "mnt",
};

static int
add_entry(struct archive *a, const char *name, mode_t type, mode_t perm,
    dev_t rdev, const void *data, size_t len, time_t mtime)
{
	struct archive_entry	*e;
	int			 rc;

	if ((e = archive_entry_new()) == NULL)
		return -ENOMEM;
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, perm);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	archive_entry_set_nlink(e, type == AE_IFDIR ? 2 : 1);
	archive_entry_set_mtime(e, mtime, 0);
	archive_entry_set_size(e, type == AE_IFREG ? (la_int64_t)len : 0);
	if (type == AE_IFCHR)
		archive_entry_set_rdev(e, rdev);
	rc = archive_write_header(a, e);
	archive_entry_free(e);
	if (rc != ARCHIVE_OK)
		return -EIO;
	if (type == AE_IFREG && len > 0 &&
	    archive_write_data(a, data, len) != (la_ssize_t)len)
		return -EIO;
	return 0;
}

/* Write the archive to fd.  The mtime is fixed so the same agent always
 * gives the same bytes. */
static int
write_cpio(int fd, const uint8_t *init, size_t len, char *err,
    size_t errlen)
{
	struct archive	*a;
	size_t		 i;
	int		 error = 0;

	if ((a = archive_write_new()) == NULL)
		return -ENOMEM;
	if (archive_write_set_format_cpio_newc(a) != ARCHIVE_OK ||
	    archive_write_add_filter_none(a) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
	    archive_write_open_fd(a, fd) != ARCHIVE_OK) {
		snprintf(err, errlen, "initramfs: %s", archive_error_string(a));
		archive_write_free(a);
		return -EIO;
	}
	for (i = 0; i < ARRAY_SIZE(dirs) && error == 0; i++)
		error = add_entry(a, dirs[i], AE_IFDIR, 0755, 0, NULL, 0, 0);
	if (error == 0)
		error = add_entry(a, "dev/console", AE_IFCHR, 0600,
		    makedev(5, 1), NULL, 0, 0);
	if (error == 0)
		error = add_entry(a, "init", AE_IFREG, 0755, 0, init, len, 0);
	if (error != 0)
		snprintf(err, errlen, "initramfs: %s",
		    archive_error_string(a) != NULL ? archive_error_string(a) :
		    strerror(-error));
	if (archive_write_close(a) != ARCHIVE_OK && error == 0) {
		snprintf(err, errlen, "initramfs: %s", archive_error_string(a));
		error = -EIO;
	}
	archive_write_free(a);
	return error;
}

int
image_initramfs_get(const char *home, const char *init_path, char *path,
    size_t len, char *err, size_t errlen)
{
	char	 hex[SHA256_HEX_LEN + 1], *dir, *tmp;
	uint8_t	*init;
	size_t	 ilen;
	int	 fd, error;

	if ((error = read_file(init_path, INIT_MAX, &init, &ilen)) != 0) {
		snprintf(err, errlen, "cannot read the guest agent %s: %s",
		    init_path, strerror(-error));
		return error;
	}
	sha256_buf(init, ilen, hex);
	xasprintf(&dir, "%s/initramfs", home);
	if ((size_t)snprintf(path, len, "%s/%s.cpio", dir, hex) >= len) {
		snprintf(err, errlen, "initramfs path too long under %s", dir);
		error = -ENAMETOOLONG;
		goto out;
	}
	if (access(path, R_OK) == 0)
		goto out;
	if (mkdir(home, 0755) == -1 && errno != EEXIST) {
		error = -errno;
		snprintf(err, errlen, "cannot create %s: %s", home,
		    strerror(errno));
		goto out;
	}
	if (mkdir(dir, 0755) == -1 && errno != EEXIST) {
		error = -errno;
		snprintf(err, errlen, "cannot create %s: %s", dir,
		    strerror(errno));
		goto out;
	}
	/* Temp file + fsync + rename: a reader sees all of it or none. */
	xasprintf(&tmp, "%s/.%s.XXXXXX", dir, hex);
	if ((fd = mkstemp(tmp)) == -1) {
		error = -errno;
		snprintf(err, errlen, "cannot create a file in %s: %s", dir,
		    strerror(errno));
		free(tmp);
		goto out;
	}
	if ((error = write_cpio(fd, init, ilen, err, errlen)) == 0) {
		if (fchmod(fd, 0644) == -1 || fsync(fd) == -1 ||
		    rename(tmp, path) == -1) {
			error = -errno;
			snprintf(err, errlen, "cannot write %s: %s", path,
			    strerror(errno));
		}
	}
	close(fd);
	if (error != 0)
		unlink(tmp);
	free(tmp);
out:
	free(dir);
	free(init);
	return error;
}
