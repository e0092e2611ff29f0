/*
 * Small host helpers: whole-file reads, the state directory, the clock.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/base/base.h"

int
read_file(const char *path, size_t maxlen, uint8_t **bufp, size_t *lenp)
{
	struct stat	 st;
	uint8_t		*buf;
	size_t		 done = 0;
	ssize_t		 n;
	int		 fd, error;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -errno;
	if (fstat(fd, &st) == -1) {
		error = -errno;
		goto err_close;
	}
	if (!S_ISREG(st.st_mode)) {
		error = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		goto err_close;
	}
	if ((uint64_t)st.st_size > maxlen) {
		error = -EFBIG;
		goto err_close;
	}
	buf = xmalloc(st.st_size + 1);
	while (done < (size_t)st.st_size) {
		n = read(fd, buf + done, st.st_size - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			error = n == 0 ? -EIO : -errno;
			free(buf);
			goto err_close;
		}
		done += n;
	}
	buf[done] = '\0';
	close(fd);
	*bufp = buf;
	*lenp = done;
	return 0;

err_close:
	close(fd);
	return error;
}

int
write_all(int fd, const void *buf, size_t len)
{
	const uint8_t	*p = buf;
	ssize_t		 n;

	while (len > 0) {
		if ((n = write(fd, p, len)) == -1) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t	done = 0;
	ssize_t	n;

	while (done < len) {
		n = pwrite(fd, (const uint8_t *)buf + done, len - done,
		    (off_t)(off + done));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? -EIO : -errno;
		done += (size_t)n;
	}
	return 0;
}

int
pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	size_t	done = 0;
	ssize_t	n;

	while (done < len) {
		n = pread(fd, (uint8_t *)buf + done, len - done,
		    (off_t)(off + done));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? -EIO : -errno;
		done += (size_t)n;
	}
	return 0;
}

const char *
smx_home(void)
{
	static char	*home;
	const char	*env, *h;
	struct passwd	*pw;

	if (home != NULL)
		return home;
	if ((env = getenv("SMX_HOME")) != NULL && *env != '\0')
		home = xstrdup(env);
	else if (geteuid() == 0)
		home = xstrdup("/var/lib/smx");
	else {
		if ((h = getenv("HOME")) == NULL || *h == '\0') {
			pw = getpwuid(geteuid());
			h = pw != NULL ? pw->pw_dir : "/tmp";
		}
		xasprintf(&home, "%s/.local/share/smx", h);
	}
	return home;
}

uint64_t
now_ns(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

int
rm_tree_at(int dfd, const char *name, uint64_t *bytes)
{
	struct dirent	*de;
	struct stat	 st;
	DIR		*d;
	int		 fd, error = 0;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(dfd, name, 0) == -1)
			return errno == ENOENT ? 0 : -errno;
		if (bytes != NULL && S_ISREG(st.st_mode))
			*bytes += (uint64_t)st.st_size;
		return 0;
	}
	fchmodat(dfd, name, 0700, 0);
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (fd == -1 || (d = fdopendir(fd)) == NULL) {
		error = -errno;
		if (fd != -1)
			close(fd);
		return error;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if ((error = rm_tree_at(dirfd(d), de->d_name, bytes)) != 0)
			break;
	}
	closedir(d);
	if (error == 0 && unlinkat(dfd, name, AT_REMOVEDIR) == -1 &&
	    errno != ENOENT)
		error = -errno;
	return error;
}
