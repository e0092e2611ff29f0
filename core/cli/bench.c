/*
 * smx bench restore: how fast a snapshot becomes a running machine.
 *
 * With --testguest it first makes its own snapshot of the test guest
 * (word snap-loop: counter, virtio-fs reads, vsock echo) so it runs on
 * any host with /dev/kvm.  Each of N rounds restores a clone and times
 * the restore call to the vCPU running (snapshot_restore + vm_start) and
 * to the guest's first answer over vsock (a connection accepted and a
 * line echoed), reads the clone's private memory (Private_Dirty of its
 * RAM mapping), and stops it.  Then QEMU, in the same run, restores a
 * guest of the same memory size from a file (migrate to "exec:cat >
 * FILE", then -incoming "exec:cat FILE"), timed from its start to the
 * migration completed.  The last line is
 *   restore_p50_us=N restore_p99_us=N qemu_p50_us=N
 *
 * This drives the VM object and snapshot/ directly, with its own
 * reactor; the libsmx API for snapshots is still to come.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/base/base.h"
#include "core/cli/cli.h"
#include "core/vm.h"
#include "snapshot/snapshot.h"

#define GUEST_PORT	5000
#define QEMU_MAX_RUNS	20
#define HELLO		"hello from the bench share\n"

static struct reactor	*R;

void
cmd_bench_usage(FILE *f)
{
	fprintf(f,
	    "usage: smx bench restore (--testguest | SNAPSHOT-DIR) [-n N]\n"
	    "                 [--memory MiB] [--guest FILE] [--qemu PATH | "
	    "--no-qemu]\n\n"
	    "Restore a snapshot N times (default 200) and report the latency\n"
	    "from the restore call to the vCPU running and, for the test\n"
	    "guest, to its first answer over vsock (p50, p99, max), the\n"
	    "private memory of each clone, and QEMU restoring a guest of the\n"
	    "same memory size from a file in the same run.\n\n"
	    "  --testguest     snapshot the test guest first (--memory MiB,\n"
	    "                  default 128; --guest FILE, default\n"
	    "                  tests/guest/testguest)\n"
	    "  -n N            restores (1 to 100000)\n"
	    "  --qemu PATH     the QEMU to compare with (default: from PATH)\n"
	    "  --no-qemu       leave QEMU out\n\n"
	    "The last line reads restore_p50_us=N restore_p99_us=N "
	    "qemu_p50_us=N\n(qemu_p50_us=0 without QEMU).\n");
}

static uint64_t
now_us(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void
stop_cb(void *arg)
{
	reactor_stop(R);
}

static void
run_for(uint64_t usec)
{
	struct reactor_timer	*g;

	if ((g = reactor_add_timer(R, usec, false, stop_cb, NULL)) == NULL ||
	    reactor_run(R) != 0)
		fatalx("reactor");
	reactor_del_timer(g);
}

static void
flag_end_cb(struct vm *vm, enum vm_end end, void *arg)
{
	*(bool *)arg = true;
	reactor_stop(R);
}

static void
flag_paused_cb(struct vm *vm, void *arg)
{
	*(bool *)arg = true;
	reactor_stop(R);
}

/* Stop a machine and wait for its end. */
static void
end_machine(struct vm *vm, bool *ended)
{
	if (!*ended)
		vm_stop(vm, VM_END_STOPPED);
	while (!*ended)
		run_for(10000);
	vm_free(vm);
}

/* The guest's vsock answer, asked for on a thread while the reactor
 * runs: connect, CONNECT <port>, send a line, read it back. */
struct ask {
	char		 path[108];
	atomic_bool	 done;
	bool		 ok;
};

static int
read_line(int fd, char *buf, size_t cap)
{
	struct pollfd	p = { fd, POLLIN, 0 };
	size_t		n = 0;

	while (n < cap - 1) {
		if (poll(&p, 1, 10000) != 1 || read(fd, buf + n, 1) != 1)
			return -1;
		if (buf[n++] == '\n')
			break;
	}
	buf[n] = '\0';
	return 0;
}

static void *
ask_thread(void *arg)
{
	struct ask		*a = arg;
	struct sockaddr_un	 sa;
	char			 line[64];
	static const char	 ping[] = "ping\n";
	int			 fd;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, a->path, sizeof(a->path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) != -1 &&
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		snprintf(line, sizeof(line), "CONNECT %d\n", GUEST_PORT);
		a->ok = write(fd, line, strlen(line)) ==
		    (ssize_t)strlen(line) &&
		    read_line(fd, line, sizeof(line)) == 0 &&
		    strncmp(line, "OK ", 3) == 0 &&
		    write(fd, ping, sizeof(ping) - 1) == sizeof(ping) - 1 &&
		    read_line(fd, line, sizeof(line)) == 0 &&
		    strcmp(line, ping) == 0;
	}
	if (fd != -1)
		close(fd);
	atomic_store(&a->done, true);
	return NULL;
}

/* Ask the guest behind vsock path for an echo; the time it took, or 0. */
static uint64_t
ask_guest(const char *path, uint64_t t0)
{
	struct ask	a;
	pthread_t	t;
	uint64_t	t1;

	memset(&a, 0, sizeof(a));
	snprintf(a.path, sizeof(a.path), "%s", path);
	atomic_init(&a.done, false);
	if (pthread_create(&t, NULL, ask_thread, &a) != 0)
		return 0;
	while (!atomic_load(&a.done))
		run_for(200);
	t1 = now_us();
	pthread_join(t, NULL);
	return a.ok ? t1 - t0 : 0;
}

/* Private_Dirty (kB) of the mapping of file `path` in this process. */
static unsigned long
private_kib(const char *path)
{
	FILE		*f;
	char		 line[4096];
	bool		 in = false;
	unsigned long	 v, sum = 0;
	size_t		 n, pl = strlen(path);

	if ((f = fopen("/proc/self/smaps", "re")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		n = strcspn(line, "\n");
		line[n] = '\0';
		if (strstr(line, " kB") == NULL && strchr(line, '-') != NULL &&
		    line[0] != ' ' && strchr(line, ':') != NULL) {
			in = n >= pl && strcmp(line + n - pl, path) == 0;
			continue;
		}
		if (in && sscanf(line, "Private_Dirty: %lu kB", &v) == 1)
			sum += v;
	}
	fclose(f);
	return sum;
}

/* Console output of the snapshot's source machine, to see it counting. */
struct source {
	char		 text[65536];
	size_t		 len;
};

static void
source_out_cb(int fd, short what, void *arg)
{
	struct source	*s = arg;
	ssize_t		 n;

	while (s->len < sizeof(s->text) - 1 && (n = read(fd, s->text + s->len,
	    sizeof(s->text) - 1 - s->len)) > 0) {
		s->len += (size_t)n;
		s->text[s->len] = '\0';
	}
}

/* Boot the test guest, let it count, snapshot it into dir. */
static int
make_testguest_snapshot(const char *guest, uint64_t mib, const char *work,
    const char *dir, uint64_t *capture_us)
{
	struct vm_config	 c;
	struct source		*src;
	struct reactor_fd	*ev = NULL;
	struct vm		*vm;
	char			*share, *hello, *vs, err[256];
	uint64_t		 t0;
	bool			 ended = false, paused = false;
	int			 out[2], rc = -1;
	FILE			*f;

	xasprintf(&share, "%s/share", work);
	xasprintf(&hello, "%s/hello.txt", share);
	xasprintf(&vs, "%s/vsock-source", work);
	src = xcalloc(1, sizeof(*src));
	if (mkdir(share, 0755) != 0 || (f = fopen(hello, "w")) == NULL ||
	    fputs(HELLO, f) == EOF || fclose(f) != 0 ||
	    pipe2(out, O_CLOEXEC | O_NONBLOCK) != 0) {
		fprintf(stderr, "smx bench: %s: %s\n", share, strerror(errno));
		goto out_free;
	}
	memset(&c, 0, sizeof(c));
	c.kernel = guest;
	c.cmdline = "snap-loop=5000";
	c.ncpus = 1;
	c.memory_mib = mib;
	c.console_fd = out[1];
	c.console_in_fd = -1;
	c.hvc_fd = -1;
	c.vsock_path = vs;
	c.shares[0].path = share;
	c.shares[0].tag = "benchfs";
	c.shares[0].readonly = true;
	c.nshares = 1;
	if ((vm = vm_create(R, &c, err, sizeof(err))) == NULL) {
		fprintf(stderr, "smx bench: the test guest: %s\n", err);
		goto out_pipe;
	}
	ev = reactor_add_fd(R, out[0], REACTOR_READ, source_out_cb, src);
	if (ev == NULL || vm_start(vm, flag_end_cb, &ended) != 0) {
		fprintf(stderr, "smx bench: cannot start the test guest\n");
		vm_free(vm);
		goto out_pipe;
	}
	t0 = now_us();
	while (!ended && strstr(src->text, "snap: counter 8 ") == NULL &&
	    now_us() - t0 < 60000000)
		run_for(20000);
	if (ended || strstr(src->text, "snap: counter 8 ") == NULL) {
		fprintf(stderr, "smx bench: the test guest did not start "
		    "counting; its output:\n%s\n", src->text);
		goto out_vm;
	}
	if (vm_pause(vm, flag_paused_cb, &paused) != 0)
		goto out_vm;
	while (!paused && !ended)
		run_for(10000);
	t0 = now_us();
	if (snapshot_save(vm, dir, err, sizeof(err)) != 0) {
		fprintf(stderr, "smx bench: snapshot: %s\n", err);
		goto out_vm;
	}
	*capture_us = now_us() - t0;
	rc = 0;
out_vm:
	end_machine(vm, &ended);
out_pipe:
	if (ev != NULL)
		reactor_del_fd(ev);
	close(out[0]);
	close(out[1]);
out_free:
	free(src);
	free(share);
	free(hello);
	free(vs);
	return rc;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t	x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

struct stats {
	uint64_t	p50, p99, max;
};

static struct stats
stats_of(uint64_t *v, unsigned n)
{
	struct stats	s = { 0, 0, 0 };

	if (n == 0)
		return s;
	qsort(v, n, sizeof(*v), cmp_u64);
	s.p50 = v[n / 2];
	s.p99 = v[MIN(n - 1, (n * 99) / 100)];
	s.max = v[n - 1];
	return s;
}

/*
 * QEMU's side.  A minimal QMP client: one command, wait for its
 * "return" (events are skipped), the reply in buf.
 */
static int
qmp(int fd, const char *cmd, char *buf, size_t cap)
{
	struct pollfd	p = { fd, POLLIN, 0 };
	size_t		n = 0;
	ssize_t		r;

	if (cmd != NULL && write(fd, cmd, strlen(cmd)) != (ssize_t)strlen(cmd))
		return -1;
	for (;;) {
		if (poll(&p, 1, 30000) != 1)
			return -1;
		if ((r = read(fd, buf + n, 1)) != 1)
			return -1;
		if (buf[n] != '\n' && n < cap - 2) {
			n++;
			continue;
		}
		buf[n] = '\0';
		if (cmd == NULL || strstr(buf, "\"return\"") != NULL ||
		    strstr(buf, "\"error\"") != NULL)
			return strstr(buf, "\"error\"") != NULL ? -1 : 0;
		n = 0;
	}
}

/* Connect to QEMU's QMP socket (retrying while QEMU starts) and leave
 * capabilities negotiation done. */
static int
qmp_open(const char *path, pid_t pid)
{
	struct sockaddr_un	sa;
	char			buf[4096];
	int			fd, i;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	for (i = 0; i < 20000; i++) {
		if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
			return -1;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		close(fd);
		fd = -1;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -1;
		usleep(200);
	}
	if (fd == -1 || qmp(fd, NULL, buf, sizeof(buf)) != 0 ||
	    qmp(fd, "{\"execute\":\"qmp_capabilities\"}\n", buf,
	    sizeof(buf)) != 0) {
		if (fd != -1)
			close(fd);
		return -1;
	}
	return fd;
}

/* Start QEMU with the test guest (or restoring from `incoming`). */
static pid_t
qemu_start(const char *qemu, const char *accel, const char *guest,
    uint64_t mib, const char *qmp_path, const char *incoming)
{
	char	 mem[32], qmpopt[256], inc[300];
	char	*av[40];
	int	 i = 0, nul;
	pid_t	 pid;

	snprintf(mem, sizeof(mem), "%llu", (unsigned long long)mib);
	snprintf(qmpopt, sizeof(qmpopt), "unix:%s,server=on,wait=off",
	    qmp_path);
	av[i++] = (char *)qemu;
	av[i++] = "-M";
	av[i++] = "microvm,x-option-roms=off,rtc=off";
	av[i++] = "-accel";
	av[i++] = (char *)accel;
	if (strcmp(accel, "kvm") == 0) {
		/* PVM refuses an MSR that plain -cpu host sets. */
		av[i++] = "-cpu";
		av[i++] = "host,-arch-capabilities";
	}
	av[i++] = "-m";
	av[i++] = mem;
	av[i++] = "-nodefaults";
	av[i++] = "-no-user-config";
	av[i++] = "-display";
	av[i++] = "none";
	av[i++] = "-serial";
	av[i++] = "null";
	av[i++] = "-kernel";
	av[i++] = (char *)guest;
	av[i++] = "-append";
	av[i++] = "count=1 exit=idle";
	av[i++] = "-qmp";
	av[i++] = qmpopt;
	if (incoming != NULL) {
		snprintf(inc, sizeof(inc), "exec:cat '%s'", incoming);
		av[i++] = "-incoming";
		av[i++] = inc;
	}
	av[i] = NULL;
	unlink(qmp_path);
	if ((pid = fork()) == -1)
		return -1;
	if (pid == 0) {
		if ((nul = open("/dev/null", O_RDWR)) != -1) {
			dup2(nul, 0);
			dup2(nul, 1);
			dup2(nul, 2);
		}
		execv(qemu, av);
		_exit(127);
	}
	return pid;
}

static void
qemu_end(pid_t pid, int fd)
{
	char	buf[4096];

	if (fd != -1) {
		(void)qmp(fd, "{\"execute\":\"quit\"}\n", buf, sizeof(buf));
		close(fd);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* Poll query-migrate until completed (1), failed (-1). */
static int
migrate_wait(int fd)
{
	char	buf[8192];
	int	i;

	for (i = 0; i < 300000; i++) {
		if (qmp(fd, "{\"execute\":\"query-migrate\"}\n", buf,
		    sizeof(buf)) != 0)
			return -1;
		if (strstr(buf, "\"completed\"") != NULL)
			return 1;
		if (strstr(buf, "\"failed\"") != NULL)
			return -1;
		usleep(100);
	}
	return -1;
}

/* QEMU: save a guest of mib MiB to a file, restore it runs times. */
static int
qemu_bench(const char *qemu, const char *guest, uint64_t mib,
    const char *work, unsigned runs, uint64_t *lat, unsigned *nlat,
    const char **accel_used)
{
	static const char	*accels[] = { "kvm", "tcg" };
	char			*sock, *file, cmd[512], buf[4096];
	unsigned		 a, i;
	uint64_t		 t0;
	pid_t			 pid;
	int			 fd = -1, rc = -1;

	xasprintf(&sock, "%s/qmp.sock", work);
	xasprintf(&file, "%s/qemu-state", work);
	*nlat = 0;
	for (a = 0; a < ARRAY_SIZE(accels); a++) {
		if ((pid = qemu_start(qemu, accels[a], guest, mib, sock,
		    NULL)) == -1)
			break;
		if ((fd = qmp_open(sock, pid)) == -1) {
			qemu_end(pid, -1);
			continue;
		}
		usleep(300000);		/* let the guest boot and idle */
		snprintf(cmd, sizeof(cmd), "{\"execute\":\"migrate\",\""
		    "arguments\":{\"uri\":\"exec:cat > '%s'\"}}\n", file);
		if (waitpid(pid, NULL, WNOHANG) == 0 &&
		    qmp(fd, "{\"execute\":\"stop\"}\n", buf, sizeof(buf)) == 0 &&
		    qmp(fd, cmd, buf, sizeof(buf)) == 0 &&
		    migrate_wait(fd) == 1) {
			qemu_end(pid, fd);
			*accel_used = accels[a];
			break;
		}
		qemu_end(pid, fd);
	}
	if (a == ARRAY_SIZE(accels))
		goto out;
	for (i = 0; i < runs; i++) {
		t0 = now_us();
		if ((pid = qemu_start(qemu, *accel_used, guest, mib, sock,
		    file)) == -1)
			goto out;
		if ((fd = qmp_open(sock, pid)) == -1 || migrate_wait(fd) != 1) {
			qemu_end(pid, fd);
			goto out;
		}
		lat[(*nlat)++] = now_us() - t0;
		qemu_end(pid, fd);
	}
	rc = 0;
out:
	free(sock);
	free(file);
	return rc;
}

static int
bench_restore(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "testguest",	no_argument,	   NULL, 't' },
		{ "memory",	required_argument, NULL, 'm' },
		{ "guest",	required_argument, NULL, 'g' },
		{ "qemu",	required_argument, NULL, 'q' },
		{ "no-qemu",	no_argument,	   NULL, 'Q' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct snapshot_restore_opts o;
	struct stats	 rs, as, ps, qs = { 0, 0, 0 };
	unsigned long long v;
	uint64_t	 mib = 128, n = 200, capture_us = 0, t0, *rlat, *alat;
	uint64_t	*priv, *qlat;
	unsigned	 i, nans = 0, nq = 0;
	const char	*guest = "tests/guest/testguest", *snap = NULL;
	const char	*qemu = NULL, *accel = "none";
	char		 work[] = "/tmp/smx-bench.XXXXXX", *dir = NULL, *mem;
	char		*vs, err[256];
	bool		 testguest = false, noqemu = false, ended;
	struct vm	*vm;
	int		 ch, status = CLI_EXIT_ERROR;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 't':
			testguest = true;
			break;
		case 'm':
			if (cli_number(optarg, 16, 1ULL << 16, &v) != 0) {
				fprintf(stderr, "smx bench: --memory %s: give "
				    "MiB from 16 to 65536\n", optarg);
				return CLI_EXIT_USAGE;
			}
			mib = v;
			break;
		case 'n':
			if (cli_number(optarg, 1, 100000, &v) != 0) {
				fprintf(stderr, "smx bench: -n %s: give 1 to "
				    "100000\n", optarg);
				return CLI_EXIT_USAGE;
			}
			n = v;
			break;
		case 'g':
			guest = optarg;
			break;
		case 'q':
			qemu = optarg;
			break;
		case 'Q':
			noqemu = true;
			break;
		case 'h':
			cmd_bench_usage(stdout);
			return CLI_EXIT_OK;
		default:
			cmd_bench_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind < argc)
		snap = argv[optind++];
	if (optind != argc || (snap == NULL) == !testguest) {
		fprintf(stderr, "smx bench restore: give --testguest or one "
		    "snapshot directory\n");
		return CLI_EXIT_USAGE;
	}
	if (access("/dev/kvm", R_OK | W_OK) != 0) {
		fprintf(stderr, "smx bench: /dev/kvm: %s\n", strerror(errno));
		return 77;
	}
	if (testguest && access(guest, R_OK) != 0) {
		fprintf(stderr, "smx bench: %s: %s (build it, or give --guest "
		    "FILE)\n", guest, strerror(errno));
		return CLI_EXIT_ERROR;
	}
	if (!noqemu && qemu == NULL && access("/usr/bin/qemu-system-x86_64",
	    X_OK) == 0)
		qemu = "/usr/bin/qemu-system-x86_64";
	if (mkdtemp(work) == NULL || (R = reactor_create()) == NULL) {
		fprintf(stderr, "smx bench: %s: %s\n", work, strerror(errno));
		return CLI_EXIT_ERROR;
	}
	rlat = xcalloc(n, sizeof(*rlat));
	alat = xcalloc(n, sizeof(*alat));
	priv = xcalloc(n, sizeof(*priv));
	qlat = xcalloc(QEMU_MAX_RUNS, sizeof(*qlat));
	if (testguest) {
		xasprintf(&dir, "%s/snap", work);
		if (make_testguest_snapshot(guest, mib, work, dir,
		    &capture_us) != 0)
			goto out;
	} else {
		dir = xstrdup(snap);
		if (snapshot_check(dir, false, &mib, NULL, err,
		    sizeof(err)) != 0) {
			fprintf(stderr, "smx bench: %s\n", err);
			goto out;
		}
	}
	xasprintf(&mem, "%s/%s", dir, SNAPSHOT_MEMORY_FILE);
	xasprintf(&vs, "%s/vsock-clone", work);
	printf("restore: %llu MiB %s, n=%llu%s\n", (unsigned long long)mib,
	    testguest ? "test guest" : dir, (unsigned long long)n,
	    testguest ? "" : " (no guest answer: not the test guest)");
	if (testguest)
		printf("capture (pause -> files written): %.1f ms\n",
		    capture_us / 1e3);
	for (i = 0; i < n; i++) {
		snapshot_restore_opts_init(&o);
		o.vsock_path = vs;
		ended = false;
		t0 = now_us();
		if ((vm = snapshot_restore(R, dir, &o, err,
		    sizeof(err))) == NULL) {
			fprintf(stderr, "smx bench: restore %u: %s\n", i, err);
			free(mem);
			free(vs);
			goto out;
		}
		if (vm_start(vm, flag_end_cb, &ended) != 0) {
			fprintf(stderr, "smx bench: restore %u: cannot start "
			    "its vCPUs\n", i);
			vm_free(vm);
			free(mem);
			free(vs);
			goto out;
		}
		rlat[i] = now_us() - t0;
		if (testguest && (alat[nans] = ask_guest(vs, t0)) != 0)
			nans++;
		priv[i] = private_kib(mem);
		end_machine(vm, &ended);
	}
	free(vs);
	free(mem);
	rs = stats_of(rlat, (unsigned)n);
	as = stats_of(alat, nans);
	ps = stats_of(priv, (unsigned)n);
	printf("restore call -> vCPU running: p50 %llu us, p99 %llu us, max "
	    "%llu us\n", (unsigned long long)rs.p50,
	    (unsigned long long)rs.p99, (unsigned long long)rs.max);
	if (testguest)
		printf("restore call -> guest answer over vsock: p50 %llu us, "
		    "p99 %llu us, max %llu us (%u of %llu answered)\n",
		    (unsigned long long)as.p50, (unsigned long long)as.p99,
		    (unsigned long long)as.max, nans, (unsigned long long)n);
	printf("private memory per clone (Private_Dirty of its RAM): p50 %llu "
	    "KiB, max %llu KiB of %llu MiB\n", (unsigned long long)ps.p50,
	    (unsigned long long)ps.max, (unsigned long long)mib);
	if (testguest && qemu != NULL && !noqemu) {
		if (qemu_bench(qemu, guest, mib, work, MIN(n, QEMU_MAX_RUNS),
		    qlat, &nq, &accel) != 0 || nq == 0)
			printf("SKIP qemu peer: %s could not save and restore "
			    "the test guest\n", qemu);
		else {
			qs = stats_of(qlat, nq);
			printf("qemu -accel %s, -incoming \"exec:cat FILE\", "
			    "process start -> migration completed, n=%u: p50 "
			    "%llu us, p99 %llu us, max %llu us (%.1fx smx's "
			    "p50)\n", accel, nq, (unsigned long long)qs.p50,
			    (unsigned long long)qs.p99,
			    (unsigned long long)qs.max,
			    rs.p50 ? (double)qs.p50 / rs.p50 : 0.0);
		}
	}
	printf("restore_p50_us=%llu restore_p99_us=%llu qemu_p50_us=%llu\n",
	    (unsigned long long)rs.p50, (unsigned long long)rs.p99,
	    (unsigned long long)qs.p50);
	status = nans == n || !testguest ? CLI_EXIT_OK : CLI_EXIT_ERROR;
	if (status != CLI_EXIT_OK)
		fprintf(stderr, "smx bench: %llu clone(s) did not answer over "
		    "vsock\n", (unsigned long long)(n - nans));
out:
	snprintf(err, sizeof(err), "rm -rf '%s'", work);
	if (system(err) != 0)
		log_warnx("cannot remove %s", work);
	reactor_free(R);
	free(dir);
	free(rlat);
	free(alat);
	free(priv);
	free(qlat);
	return status;
}

int
cmd_bench(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0) {
		cmd_bench_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
	}
	if (strcmp(argv[1], "restore") == 0)
		return bench_restore(argc - 1, argv + 1);
	fprintf(stderr, "smx bench: unknown bench '%s' (known: restore)\n",
	    argv[1]);
	return CLI_EXIT_USAGE;
}
