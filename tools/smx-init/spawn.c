/*
 * The child half of an exec: become the requested process inside the
 * container root.  Runs between fork and execve, so it keeps to plain
 * syscalls and stdio-free string handling; every failure is reported to
 * the agent through the error pipe as "errno message".
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

#define MAX_GROUPS	64

/* What /etc/passwd says about the user, if anything. */
struct user {
	uid_t	uid;
	gid_t	gid;
	char	name[256];
	char	home[1024];
	int	found;		/* an /etc/passwd entry matched */
	gid_t	groups[MAX_GROUPS];
	int	ngroups;
};

static int errfd_g = -1;

/* Report errno err and a one-line message to the agent, then exit. */
static void __attribute__((noreturn, format(printf, 2, 3)))
fail(int err, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	n = snprintf(buf, sizeof(buf), "%d ", err);
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
	va_end(ap);
	if (write(errfd_g, buf, strlen(buf)) < 0) {
		/* nothing left to tell anybody */
	}
	_exit(127);
}

/* All-digit string to an id; -1 when not a number. */
static long
parse_id(const char *s)
{
	char *end;
	long v;

	if (*s == '\0' || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (*end != '\0' || errno != 0 || v < 0 || v > 0x7fffffff)
		return -1;
	return v;
}

/* Split a colon-separated line in place into at most n fields. */
static int
split(char *line, char **f, int n)
{
	int i = 0;

	f[i++] = line;
	for (; *line != '\0'; line++) {
		if (*line == ':') {
			*line = '\0';
			if (i == n)
				break;
			f[i++] = line + 1;
		}
	}
	return i;
}

/*
 * Find the passwd entry whose name is name (or, name NULL, whose uid is
 * uid).  Fills u and returns 1 when found.
 */
static int
passwd_lookup(const char *name, uid_t uid, struct user *u)
{
	char line[2048], *f[7];
	FILE *fp;
	long id, gid;

	if ((fp = fopen("/etc/passwd", "re")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), fp) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if (split(line, f, 7) < 7)
			continue;
		id = parse_id(f[2]);
		gid = parse_id(f[3]);
		if (id < 0 || gid < 0)
			continue;
		if (name != NULL ? strcmp(f[0], name) != 0 : (uid_t)id != uid)
			continue;
		u->uid = (uid_t)id;
		u->gid = (gid_t)gid;
		snprintf(u->name, sizeof(u->name), "%s", f[0]);
		snprintf(u->home, sizeof(u->home), "%s",
		    *f[5] != '\0' ? f[5] : "/");
		u->found = 1;
		fclose(fp);
		return 1;
	}
	fclose(fp);
	return 0;
}

/*
 * Walk /etc/group: resolve the group named gname (if not NULL) into *gid
 * and collect the groups listing user as a member (if not NULL).
 * Returns 1 when gname was found.
 */
static int
group_scan(const char *gname, gid_t *gid, const char *user, struct user *u)
{
	char line[8192], *f[4], *m, *save;
	int found = 0;
	FILE *fp;
	long id;

	if ((fp = fopen("/etc/group", "re")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), fp) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if (split(line, f, 4) < 4 || (id = parse_id(f[2])) < 0)
			continue;
		if (gname != NULL && !found && strcmp(f[0], gname) == 0) {
			*gid = (gid_t)id;
			found = 1;
		}
		if (user == NULL)
			continue;
		for (m = strtok_r(f[3], ",", &save); m != NULL;
		    m = strtok_r(NULL, ",", &save)) {
			if (strcmp(m, user) == 0 && u->ngroups < MAX_GROUPS) {
				u->groups[u->ngroups++] = (gid_t)id;
				break;
			}
		}
	}
	fclose(fp);
	return found;
}

/*
 * Resolve "uid[:gid]" or "name[:group]" (either part numeric or a name)
 * against the container's /etc/passwd and /etc/group, like docker's -u.
 */
static void
resolve_user(const char *spec, struct user *u)
{
	char us[512], *gs;
	long id;
	gid_t gid;
	int i;

	memset(u, 0, sizeof(*u));
	snprintf(u->home, sizeof(u->home), "/");
	if (spec == NULL || *spec == '\0')
		spec = "0";
	if (strlen(spec) >= sizeof(us))
		fail(EINVAL, "user \"%s\": too long", spec);
	strcpy(us, spec);
	if ((gs = strchr(us, ':')) != NULL)
		*gs++ = '\0';

	if ((id = parse_id(us)) >= 0) {
		u->uid = (uid_t)id;
		passwd_lookup(NULL, u->uid, u);
	} else if (!passwd_lookup(us, 0, u)) {
		fail(EINVAL, "unable to find user %s: no matching entries "
		    "in /etc/passwd", us);
	}
	if (gs != NULL && *gs != '\0') {
		if ((id = parse_id(gs)) >= 0)
			u->gid = (gid_t)id;
		else if (group_scan(gs, &gid, NULL, NULL))
			u->gid = gid;
		else
			fail(EINVAL, "unable to find group %s: no matching "
			    "entries in /etc/group", gs);
	}
	/* Supplementary groups as initgroups(3) would set them. */
	u->groups[u->ngroups++] = u->gid;
	if (u->found)
		group_scan(NULL, NULL, u->name, u);
	for (i = 1; i < u->ngroups; i++) {
		if (u->groups[i] == u->gid) {
			u->groups[i] = u->groups[--u->ngroups];
			i--;
		}
	}
}

/* The value of NAME in a NULL-terminated environment, or NULL. */
static const char *
env_get(char **envp, const char *name)
{
	size_t n = strlen(name);

	for (; *envp != NULL; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

/* envp plus the defaults a container process expects (PATH, HOME, TERM). */
static char **
complete_env(char **envp, const struct user *u, int tty)
{
	static char home[1100];
	size_t n = 0, i;
	char **e;

	while (envp[n] != NULL)
		n++;
	if ((e = calloc(n + 4, sizeof(*e))) == NULL)
		fail(ENOMEM, "out of memory");
	for (i = 0; i < n; i++)
		e[i] = envp[i];
	if (env_get(envp, "PATH") == NULL)
		e[n++] = "PATH=" DEFAULT_PATH;
	if (env_get(envp, "HOME") == NULL) {
		snprintf(home, sizeof(home), "HOME=%s", u->home);
		e[n++] = home;
	}
	if (tty && env_get(envp, "TERM") == NULL)
		e[n++] = "TERM=xterm";
	e[n] = NULL;
	return e;
}

/*
 * execve argv[0] found in PATH (inside the new root), with execvp's
 * error rules: EACCES from any candidate wins over "not found".
 */
static void __attribute__((noreturn))
exec_path(char **argv, char **envp)
{
	const char *path, *p, *end;
	char buf[4096];
	int eacces = 0;
	size_t len;

	if (strchr(argv[0], '/') != NULL) {
		execve(argv[0], argv, envp);
		fail(errno, "exec \"%s\": %s", argv[0], strerror(errno));
	}
	if ((path = env_get(envp, "PATH")) == NULL)
		path = DEFAULT_PATH;
	for (p = path; ; p = end + 1) {
		end = strchr(p, ':');
		len = end != NULL ? (size_t)(end - p) : strlen(p);
		/* An empty element means the current directory. */
		if (snprintf(buf, sizeof(buf), "%.*s%s%s", (int)len, p,
		    len > 0 ? "/" : "", argv[0]) < (int)sizeof(buf)) {
			execve(buf, argv, envp);
			switch (errno) {
			case EACCES:
				eacces = 1;
				/* FALLTHROUGH */
			case ENOENT:
			case ENOTDIR:
			case ELOOP:
			case ENAMETOOLONG:
				break;
			default:
				fail(errno, "exec \"%s\": %s", buf,
				    strerror(errno));
			}
		}
		if (end == NULL)
			break;
	}
	if (eacces)
		fail(EACCES, "exec \"%s\": permission denied", argv[0]);
	fail(ENOENT, "exec \"%s\": executable file not found in $PATH",
	    argv[0]);
}

void
spawn_child(const struct spawn_req *req, int fds[3], int errfd)
{
	const char *cwd = req->cwd != NULL && *req->cwd != '\0' ?
	    req->cwd : "/";
	struct user u;
	sigset_t all;
	int i, hi[3];

	errfd_g = errfd;
	/* The agent blocks signals for its signalfd and ignores SIGPIPE. */
	sigfillset(&all);
	sigprocmask(SIG_UNBLOCK, &all, NULL);
	for (i = 1; i < NSIG; i++)
		signal(i, SIG_DFL);
	if (setsid() < 0)
		fail(errno, "setsid: %s", strerror(errno));

	/* Move the stdio fds clear of 0..2 first, then into place. */
	for (i = 0; i < 3; i++)
		if ((hi[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 10)) < 0)
			fail(errno, "dup: %s", strerror(errno));
	for (i = 0; i < 3; i++)
		if (dup2(hi[i], i) < 0)
			fail(errno, "dup2: %s", strerror(errno));
	if (req->tty && ioctl(0, TIOCSCTTY, 0) < 0)
		fail(errno, "controlling tty: %s", strerror(errno));

	if (fchdir(agent.rootfd) < 0 || chroot(".") < 0)
		fail(errno, "chroot %s: %s", agent.root, strerror(errno));
	resolve_user(req->user, &u);
	if (req->mkcwd && mkdir_p(cwd, 0755) < 0)
		fail(errno, "mkdir %s: %s", cwd, strerror(errno));
	if (chdir(cwd) < 0)
		fail(errno, "chdir to cwd \"%s\": %s", cwd, strerror(errno));
	if (setgroups((size_t)u.ngroups, u.groups) < 0 || setgid(u.gid) < 0 ||
	    setuid(u.uid) < 0)
		fail(errno, "set user %u:%u: %s", (unsigned)u.uid,
		    (unsigned)u.gid, strerror(errno));
	exec_path(req->argv, complete_env(req->envp, &u, req->tty));
}
