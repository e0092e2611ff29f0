/*
 * Boot-time setup of the guest: the filesystems smx-init and the
 * container need, the files docker-like containers expect in /etc, the
 * loopback interface, and the way out (power off).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "agent.h"

#define MAX_VOLS	64

void
say(int err, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (err > 0)
		fprintf(stderr, "smx-init: %s: %s\n", buf, strerror(err));
	else
		fprintf(stderr, "smx-init: %s\n", buf);
	fflush(stderr);
}

void
die(int err, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	say(err, "%s", buf);
	if (!agent.pid1)
		exit(1);
	power_off();
}

int
mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX], *p, c;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (p = buf + 1; ; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		c = *p;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = c;
		if (c == '\0')
			break;
	}
	return 0;
}

/* mkdir -p then mount; fatal on failure. */
static void
must_mount(const char *src, const char *dst, const char *type,
    unsigned long flags, const char *data)
{
	int rc;

	if ((rc = mkdir_p(dst, 0755)) < 0)
		die(-rc, "mkdir %s", dst);
	if (mount(src, dst, type, flags, data) < 0)
		die(errno, "mount %s (%s) on %s", src, type, dst);
}

/* The container root joined with an absolute guest path. */
static void
in_root(char *buf, size_t size, const char *path)
{
	snprintf(buf, size, "%s%s%s", agent.root, *path == '/' ? "" : "/",
	    path);
}

/* The value of " word=..." on /proc/cmdline, copied into buf. */
static const char *
cmdline_next(const char *cmd, const char *key, char *buf, size_t size,
    const char **resume)
{
	size_t klen = strlen(key), n;
	const char *p = *resume != NULL ? *resume : cmd;

	while (*p != '\0') {
		while (*p == ' ' || *p == '\n')
			p++;
		n = strcspn(p, " \n");
		if (n > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
			snprintf(buf, size, "%.*s", (int)(n - klen - 1),
			    p + klen + 1);
			*resume = p + n;
			return buf;
		}
		p += n;
	}
	*resume = p;
	return NULL;
}

/* Read /proc/cmdline into a static buffer ("" on failure). */
static const char *
read_cmdline(void)
{
	static char cmd[4096];
	ssize_t n;
	int fd;

	if ((fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC)) < 0)
		return "";
	n = read(fd, cmd, sizeof(cmd) - 1);
	close(fd);
	cmd[n > 0 ? n : 0] = '\0';
	return cmd;
}

/*
 * smx.vol=TAG:GUESTPATH[:ro][:file=NAME]: a virtio-fs share mounted at
 * GUESTPATH inside the root, or (file=) one file of the share
 * bind-mounted onto GUESTPATH.
 */
static void
mount_volume(const char *spec, int idx)
{
	char buf[1024], *tag, *gpath, *opt, *file = NULL, dst[PATH_MAX],
	    src[PATH_MAX], share[64], *c;
	unsigned long ro = 0;
	int fd;

	snprintf(buf, sizeof(buf), "%s", spec);
	tag = buf;
	if ((gpath = strchr(tag, ':')) == NULL || gpath[1] != '/')
		die(0, "smx.vol=%s: want TAG:/GUESTPATH[:ro][:file=NAME]",
		    spec);
	*gpath++ = '\0';
	for (opt = strchr(gpath, ':'); opt != NULL; opt = strchr(opt, ':')) {
		*opt++ = '\0';
		if (strncmp(opt, "ro", 2) == 0 && (opt[2] == ':' ||
		    opt[2] == '\0'))
			ro = MS_RDONLY;
		else if (strncmp(opt, "file=", 5) == 0)
			file = opt + 5;
	}
	if (file != NULL && (c = strchr(file, ':')) != NULL)
		*c = '\0';
	in_root(dst, sizeof(dst), gpath);
	if (file == NULL) {
		must_mount(tag, dst, "virtiofs", ro, NULL);
		return;
	}
	snprintf(share, sizeof(share), GUEST_VOLS "/%d", idx);
	must_mount(tag, share, "virtiofs", ro, NULL);
	snprintf(src, sizeof(src), "%s/%s", share, file);
	/* The mount point must exist as a file. */
	if ((c = strrchr(dst, '/')) != NULL) {
		*c = '\0';
		mkdir_p(dst, 0755);
		*c = '/';
	}
	if ((fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644)) >= 0)
		close(fd);
	if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
		die(errno, "bind %s on %s", src, dst);
	if (ro && mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY,
	    NULL) < 0)
		die(errno, "remount %s read-only", dst);
}

void
setup_guest(void)
{
	char tag[256], data[PATH_MAX * 3 + 64], vol[1024];
	const char *cmd, *resume = NULL;
	int fd, dax = 0, idx = 0;

	/* The kernel may have found no /dev/console in the initramfs. */
	mkdir("/dev", 0755);
	if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, NULL) < 0 &&
	    errno != EBUSY)
		die(errno, "mount devtmpfs on /dev");
	if ((fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC)) >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	must_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
	    NULL);
	must_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
	    NULL);
	cmd = read_cmdline();
	if (cmdline_next(cmd, "smx.root", tag, sizeof(tag), &resume) == NULL)
		snprintf(tag, sizeof(tag), "root");
	resume = NULL;
	if (cmdline_next(cmd, "smx.dax", vol, sizeof(vol), &resume) != NULL)
		dax = strcmp(vol, "1") == 0;

	/* The image root, shared read-only by every VM of the image. */
	if (mkdir_p(GUEST_LOWER, 0755) < 0)
		die(errno, "mkdir " GUEST_LOWER);
	if (dax && mount(tag, GUEST_LOWER, "virtiofs", MS_RDONLY, "dax") < 0) {
		say(errno, "mount %s with dax (going on without)", tag);
		dax = 0;
	}
	if (!dax)
		must_mount(tag, GUEST_LOWER, "virtiofs", MS_RDONLY, NULL);
	must_mount("tmpfs", GUEST_RW, "tmpfs", 0, "mode=0755");
	if (mkdir_p(GUEST_RW "/upper", 0755) < 0 ||
	    mkdir_p(GUEST_RW "/work", 0755) < 0)
		die(errno, "mkdir in " GUEST_RW);
	snprintf(data, sizeof(data), "lowerdir=%s,upperdir=%s,workdir=%s",
	    GUEST_LOWER, GUEST_RW "/upper", GUEST_RW "/work");
	must_mount("overlay", GUEST_ROOT, "overlay", 0, data);
	agent.root = GUEST_ROOT;
	if ((agent.rootfd = open(GUEST_ROOT, O_PATH | O_DIRECTORY |
	    O_CLOEXEC)) < 0)
		die(errno, "open " GUEST_ROOT);

	resume = NULL;
	while (cmdline_next(cmd, "smx.vol", vol, sizeof(vol), &resume) != NULL)
		mount_volume(vol, idx++);
	resume = NULL;
	if (cmdline_next(cmd, "smx.hostname", tag, sizeof(tag), &resume) ==
	    NULL || tag[0] == '\0')
		snprintf(tag, sizeof(tag), "smx");
	setup_root(tag);
}

/*
 * Replace (or, keep set, only create when absent) the file PATH of the
 * container root.  The image's own file may be a symlink pointing
 * anywhere: the link itself is replaced.
 */
static void
write_etc(const char *path, const char *text, int keep)
{
	char p[PATH_MAX], tmp[PATH_MAX + 16];
	struct open_how how = { .flags = O_RDONLY | O_CLOEXEC,
	    .resolve = RESOLVE_IN_ROOT };
	size_t len = strlen(text);
	int fd;

	if (keep) {
		fd = (int)syscall(SYS_openat2, agent.rootfd, path, &how,
		    sizeof(how));
		if (fd >= 0) {
			close(fd);
			return;
		}
	}
	in_root(p, sizeof(p), path);
	snprintf(tmp, sizeof(tmp), "%s.smx-init", p);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0644)) < 0) {
		say(errno, "create %s", tmp);
		return;
	}
	if (write(fd, text, len) != (ssize_t)len || close(fd) < 0 ||
	    rename(tmp, p) < 0) {
		say(errno, "write %s", p);
		unlink(tmp);
	}
}

int
set_hostname(const char *name)
{
	char text[1024];

	if (sethostname(name, strlen(name)) < 0)
		return -errno;
	snprintf(text, sizeof(text), "%s\n", name);
	write_etc("/etc/hostname", text, 0);
	snprintf(text, sizeof(text), "127.0.0.1\tlocalhost\n"
	    "::1\tlocalhost ip6-localhost ip6-loopback\n"
	    "127.0.1.1\t%s\n", name);
	write_etc("/etc/hosts", text, 0);
	return 0;
}

void
setup_root(const char *hostname)
{
	static const struct {
		const char	*src, *dst, *type;
		unsigned long	 flags;
		const char	*data;
	} mnt[] = {
		{ "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		    NULL },
		{ "sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		    NULL },
		{ "devtmpfs", "/dev", "devtmpfs", MS_NOSUID, NULL },
		{ "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		    "newinstance,ptmxmode=0666,mode=0620,gid=5" },
		{ "shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
		    "mode=1777" },
		{ "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777" },
	};
	static const char *links[][2] = {
		{ "/proc/self/fd", "/dev/fd" },
		{ "/proc/self/fd/0", "/dev/stdin" },
		{ "/proc/self/fd/1", "/dev/stdout" },
		{ "/proc/self/fd/2", "/dev/stderr" },
	};
	char dst[PATH_MAX];
	size_t i;

	for (i = 0; i < sizeof(mnt) / sizeof(mnt[0]); i++) {
		in_root(dst, sizeof(dst), mnt[i].dst);
		/*
		 * In test mode /dev is the host's: bind it rather than
		 * mount the host's devtmpfs, and never add links to it.
		 */
		if (agent.test && strcmp(mnt[i].dst, "/dev") == 0) {
			must_mount("/dev", dst, NULL, MS_BIND, NULL);
			continue;
		}
		must_mount(mnt[i].src, dst, mnt[i].type, mnt[i].flags,
		    mnt[i].data);
	}
	for (i = 0; !agent.test && i < sizeof(links) / sizeof(links[0]); i++) {
		in_root(dst, sizeof(dst), links[i][1]);
		if (symlink(links[i][0], dst) < 0 && errno != EEXIST)
			say(errno, "symlink %s", dst);
	}

	in_root(dst, sizeof(dst), "/etc");
	mkdir_p(dst, 0755);
	if (set_hostname(hostname) < 0)
		say(errno, "sethostname %s", hostname);
	/* No network device yet: only a local resolver could answer. */
	write_etc("/etc/resolv.conf", "nameserver 127.0.0.1\n", 1);
}

int
setup_loopback(void)
{
	struct ifreq ifr;
	int s, rc = 0;

	if ((s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		rc = -errno;
	else if (!(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
			rc = -errno;
	}
	close(s);
	return rc;
}

/* Give every process a moment after SIGTERM, reaping as they go. */
static void
terminate_all(void)
{
	struct timespec ts = { 0, 10 * 1000 * 1000 };
	int i;

	kill(-1, SIGTERM);
	/* Every process of the guest is a child of PID 1 or ends up as
	 * one: no children left (ECHILD) means all are gone.  kill(-1, 0)
	 * cannot tell: it reaches kernel threads too and always succeeds. */
	for (i = 0; i < 100; i++) {
		pid_t pid;

		while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
			;
		if (pid < 0 && errno == ECHILD)
			return;
		nanosleep(&ts, NULL);
	}
	kill(-1, SIGKILL);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

void
power_off(void)
{
	sync();
	if (!agent.pid1) {
		/* Test mode: our own children only; never kill(-1). */
		exit(0);
	}
	terminate_all();
	sync();
	reboot(RB_POWER_OFF);
	/* Without a way to power off, halting ends the VM too. */
	reboot(RB_HALT_SYSTEM);
	for (;;)
		pause();
}
