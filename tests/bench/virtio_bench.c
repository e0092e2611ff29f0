/*
 * virtio device benchmarks, each against a host peer measured in the same
 * run.  Boots the test guest with `smx boot` and one of its bench words
 * (tests/guest/bench.c).
 *
 *   virtio_bench vsock [-n RTTS] [-b MIB] -s SMX TESTGUEST
 *     The guest echoes on vsock port 6000 (vsock-echo=6000); we reach it
 *     through smx's Unix socket and "CONNECT 6000".  Round trips of 64-byte
 *     messages (median, p99 over RTTS after a warm-up) and the rate of an
 *     echoed bulk transfer of MIB MiB (one thread writes, one reads).  Peer:
 *     the same over an AF_UNIX socketpair echoed by a second host thread.
 *   virtio_bench blk [-n READS] -s SMX TESTGUEST
 *     blk-randread=READS on a 64 MiB disk file: 4 KiB random reads, 16 in
 *     flight, timed between the guest's "go" and "end" console lines.
 *     Peer: the same offsets (same LCG) read with pread(2) from the same
 *     file, one at a time, buffered (the page cache is warm for both).
 *
 * Prints key=value lines; exit 77 when /dev/kvm is unusable.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GUEST_PORT	6000
#define MSG_SIZE	64
#define WARMUP		100
#define CHUNK		(64 * 1024)
#define DISK_MIB	64
#define BLOCK		4096
#define SEED		0x2545f4914f6cdd1dULL	/* as tests/guest/bench.c */
#define LINE_WAIT_MS	60000

extern char **environ;

struct guest {
	pid_t	 pid;
	int	 out;		/* its console */
	char	 buf[8192];
	size_t	 len;
};

static char tmpdir[] = "/tmp/virtio_bench.XXXXXX";
static const char *vsock_path;

static void
die(const char *what)
{
	fprintf(stderr, "virtio_bench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void
diex(const char *what)
{
	fprintf(stderr, "virtio_bench: %s\n", what);
	exit(1);
}

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void
cleanup(void)
{
	char path[PATH_MAX];

	if (vsock_path != NULL)
		unlink(vsock_path);
	snprintf(path, sizeof(path), "%s/disk.img", tmpdir);
	unlink(path);
	rmdir(tmpdir);
}

/* Starts `smx boot` of the test guest with its console on a pipe. */
static void
guest_start(struct guest *g, char *const argv[])
{
	posix_spawn_file_actions_t fa;
	int p[2];

	if (pipe(p) < 0)
		die("pipe");
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_addclose(&fa, p[0]);
	posix_spawn_file_actions_addclose(&fa, p[1]);
	if ((errno = posix_spawn(&g->pid, argv[0], &fa, NULL, argv,
	    environ)) != 0)
		die(argv[0]);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	g->out = p[0];
	g->len = 0;
}

/*
 * Reads console lines until one starts with `want`; returns the time its
 * line arrived (smx writes whole lines).  A TESTGUEST FAIL line, the end
 * of the console or LINE_WAIT_MS without it are fatal.
 */
static uint64_t
guest_wait(struct guest *g, const char *want, char *line, size_t max)
{
	struct pollfd pfd = { g->out, POLLIN, 0 };
	uint64_t t, deadline = now_ns() + LINE_WAIT_MS * 1000000ULL;
	char *nl;
	ssize_t r;
	size_t n;

	for (;;) {
		while ((nl = memchr(g->buf, '\n', g->len)) != NULL) {
			n = (size_t)(nl - g->buf);
			t = now_ns();
			if (strncmp(g->buf, "TESTGUEST FAIL", 14) == 0) {
				fprintf(stderr, "virtio_bench: guest: %.*s\n",
				    (int)n, g->buf);
				exit(1);
			}
			if (strncmp(g->buf, want, strlen(want)) == 0) {
				if (line != NULL) {
					n = n < max - 1 ? n : max - 1;
					memcpy(line, g->buf, n);
					line[n] = '\0';
				}
				g->len -= (size_t)(nl + 1 - g->buf);
				memmove(g->buf, nl + 1, g->len);
				return t;
			}
			g->len -= (size_t)(nl + 1 - g->buf);
			memmove(g->buf, nl + 1, g->len);
		}
		if (g->len == sizeof(g->buf))
			g->len = 0;	/* an overlong line: drop it */
		t = now_ns();
		if (t >= deadline ||
		    poll(&pfd, 1, (int)((deadline - t) / 1000000) + 1) == 0) {
			fprintf(stderr, "virtio_bench: no '%s' from the guest "
			    "within %d s\n", want, LINE_WAIT_MS / 1000);
			exit(1);
		}
		r = read(g->out, g->buf + g->len, sizeof(g->buf) - g->len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fprintf(stderr, "virtio_bench: the guest ended before "
			    "'%s'\n", want);
			exit(1);
		}
		g->len += (size_t)r;
	}
}

static void
guest_end(struct guest *g)
{
	int st;

	if (waitpid(g->pid, &st, 0) < 0)
		die("waitpid");
	close(g->out);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "virtio_bench: smx boot ended with status "
		    "0x%x\n", st);
		exit(1);
	}
}

static void
write_all(int fd, const void *p, size_t len)
{
	ssize_t r;

	while (len > 0) {
		if ((r = write(fd, p, len)) < 0) {
			if (errno == EINTR)
				continue;
			die("write");
		}
		p = (const char *)p + r;
		len -= (size_t)r;
	}
}

static void
read_all(int fd, void *p, size_t len)
{
	ssize_t r;

	while (len > 0) {
		if ((r = read(fd, p, len)) < 0) {
			if (errno == EINTR)
				continue;
			die("read");
		}
		if (r == 0)
			diex("read: the echo peer closed early");
		p = (char *)p + r;
		len -= (size_t)r;
	}
}

/* The peer's echo: everything read is written back until EOF. */
static void *
echo_thread(void *arg)
{
	int fd = *(int *)arg;
	static char buf[CHUNK];
	ssize_t r;

	while ((r = read(fd, buf, sizeof(buf))) > 0)
		write_all(fd, buf, (size_t)r);
	close(fd);
	return NULL;
}

struct bulk {
	int	 fd;
	size_t	 total;
};

static void *
bulk_writer(void *arg)
{
	struct bulk *b = arg;
	static char buf[CHUNK];
	size_t left, n;

	memset(buf, 0x5a, sizeof(buf));
	for (left = b->total; left > 0; left -= n) {
		n = left < sizeof(buf) ? left : sizeof(buf);
		write_all(b->fd, buf, n);
	}
	return NULL;
}

struct echo_result {
	uint64_t	median_ns, p99_ns;
	double		mbps;
};

/* Round trips then a bulk echo over fd, whose other end echoes. */
static struct echo_result
measure(int fd, unsigned rtts, size_t bulk_bytes)
{
	struct echo_result res;
	struct bulk b = { fd, bulk_bytes };
	char msg[MSG_SIZE], back[MSG_SIZE];
	static char sink[CHUNK];
	uint64_t *s, t0;
	pthread_t th;
	size_t left, n;
	unsigned i;

	if ((s = calloc(rtts, sizeof(*s))) == NULL)
		die("calloc");
	memset(msg, 'r', sizeof(msg));
	for (i = 0; i < WARMUP + rtts; i++) {
		t0 = now_ns();
		write_all(fd, msg, sizeof(msg));
		read_all(fd, back, sizeof(back));
		if (i >= WARMUP)
			s[i - WARMUP] = now_ns() - t0;
	}
	qsort(s, rtts, sizeof(*s), cmp_u64);
	res.median_ns = s[rtts / 2];
	res.p99_ns = s[(size_t)rtts * 99 / 100];
	free(s);

	t0 = now_ns();
	if ((errno = pthread_create(&th, NULL, bulk_writer, &b)) != 0)
		die("pthread_create");
	for (left = bulk_bytes; left > 0; left -= n) {
		n = left < sizeof(sink) ? left : sizeof(sink);
		read_all(fd, sink, n);
	}
	res.mbps = (double)bulk_bytes / 1e6 / ((double)(now_ns() - t0) / 1e9);
	pthread_join(th, NULL);
	return res;
}

static const char *
guest_kind(void)
{
	return access("/sys/module/kvm_pvm", F_OK) == 0 ? " guest=emulated" :
	    "";
}

static int
vsock_connect(const char *path, unsigned port)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char line[64];
	size_t n = 0;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		diex("vsock socket path too long");
	strcpy(sa.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0)
		die("socket");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die(path);
	n = (size_t)snprintf(line, sizeof(line), "CONNECT %u\n", port);
	write_all(fd, line, n);
	/* "OK <port>\n", read a byte at a time: the stream follows it. */
	for (n = 0; n < sizeof(line) - 1; n++) {
		read_all(fd, &line[n], 1);
		if (line[n] == '\n')
			break;
	}
	line[n] = '\0';
	if (strncmp(line, "OK ", 3) != 0) {
		fprintf(stderr, "virtio_bench: CONNECT %u answered '%s'\n",
		    port, line);
		exit(1);
	}
	return fd;
}

static void
bench_vsock(const char *smx, const char *guestimg, unsigned rtts,
    unsigned mib)
{
	struct guest g;
	struct echo_result v, u;
	char path[PATH_MAX], cmd[64], line[256];
	char *argv[] = { (char *)smx, "boot", "--kernel", (char *)guestimg,
	    "--memory", "64", "--no-rng", "--no-balloon", "--vsock", path,
	    "--cmdline", cmd, NULL };
	pthread_t th;
	int fd, sp[2];
	char c;

	snprintf(path, sizeof(path), "%s/vsock", tmpdir);
	vsock_path = path;
	snprintf(cmd, sizeof(cmd), "vsock-echo=%u", GUEST_PORT);
	guest_start(&g, argv);
	guest_wait(&g, "vsock-echo: listening", NULL, 0);
	fd = vsock_connect(path, GUEST_PORT);
	v = measure(fd, rtts, (size_t)mib << 20);
	/* SHUTDOWN to the guest, which answers RST: smx closes us. */
	shutdown(fd, SHUT_WR);
	while (read(fd, &c, 1) > 0)
		;
	close(fd);
	guest_wait(&g, "vsock-echo: echoed", line, sizeof(line));
	guest_wait(&g, "TESTGUEST OK", NULL, 0);
	guest_end(&g);
	unlink(path);
	vsock_path = NULL;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
		die("socketpair");
	if ((errno = pthread_create(&th, NULL, echo_thread, &sp[1])) != 0)
		die("pthread_create");
	u = measure(sp[0], rtts, (size_t)mib << 20);
	shutdown(sp[0], SHUT_WR);
	pthread_join(th, NULL);
	close(sp[0]);

	printf("# %s\n", line);
	printf("vsock_rtt_median_us=%.1f vsock_rtt_p99_us=%.1f "
	    "uds_rtt_median_us=%.1f uds_rtt_p99_us=%.1f ratio=%.0f "
	    "msg=%u n=%u%s\n", v.median_ns / 1e3, v.p99_ns / 1e3,
	    u.median_ns / 1e3, u.p99_ns / 1e3,
	    (double)v.median_ns / (double)u.median_ns, MSG_SIZE, rtts,
	    guest_kind());
	printf("vsock_echo_MBps=%.1f uds_echo_MBps=%.1f ratio=%.3f "
	    "bytes=%u%s\n", v.mbps, u.mbps, v.mbps / u.mbps, mib << 20,
	    guest_kind());
}

static uint64_t
lcg_next(uint64_t *x)
{
	*x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
	return *x >> 33;
}

static void
bench_blk(const char *smx, const char *guestimg, unsigned reads)
{
	struct guest g;
	char path[PATH_MAX], cmd[64];
	char *argv[] = { (char *)smx, "boot", "--kernel", (char *)guestimg,
	    "--memory", "64", "--no-rng", "--no-balloon", "--no-vsock",
	    "--disk", path, "--cmdline", cmd, NULL };
	static char buf[BLOCK];
	uint64_t t_go, t_end, t0, t1, x = SEED, blocks;
	double giops, hiops;
	unsigned i;
	int fd;

	snprintf(path, sizeof(path), "%s/disk.img", tmpdir);
	if ((fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600)) < 0)
		die(path);
	/* Real data, not a hole: both sides read allocated blocks. */
	for (i = 0; i < DISK_MIB * 1024 * 1024 / BLOCK; i++) {
		memset(buf, (int)(i * 31), sizeof(buf));
		write_all(fd, buf, sizeof(buf));
	}
	blocks = DISK_MIB * 1024 * 1024 / BLOCK;

	snprintf(cmd, sizeof(cmd), "blk-randread=%u", reads);
	guest_start(&g, argv);
	t_go = guest_wait(&g, "blk-randread: go", NULL, 0);
	t_end = guest_wait(&g, "blk-randread: end", NULL, 0);
	guest_wait(&g, "TESTGUEST OK", NULL, 0);
	guest_end(&g);

	t0 = now_ns();
	for (i = 0; i < reads; i++)
		if (pread(fd, buf, BLOCK, (off_t)(lcg_next(&x) % blocks) *
		    BLOCK) != BLOCK)
			die("pread");
	t1 = now_ns();
	close(fd);
	unlink(path);

	giops = reads / ((double)(t_end - t_go) / 1e9);
	hiops = reads / ((double)(t1 - t0) / 1e9);
	printf("blk_randread_iops=%.0f host_pread_iops=%.0f ratio=%.4f "
	    "reads=%u depth=16 host=buffered-pread-depth1%s\n", giops, hiops,
	    giops / hiops, reads, guest_kind());
}

static void
usage(void)
{
	fprintf(stderr, "usage: virtio_bench vsock [-n RTTS] [-b MIB] -s SMX "
	    "TESTGUEST\n       virtio_bench blk [-n READS] -s SMX "
	    "TESTGUEST\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *smx = NULL, *mode;
	unsigned n = 0, mib = 8;
	int c;

	if (argc < 2)
		usage();
	mode = argv[1];
	optind = 2;
	while ((c = getopt(argc, argv, "n:b:s:")) != -1) {
		switch (c) {
		case 'n':
			n = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'b':
			mib = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 's':
			smx = optarg;
			break;
		default:
			usage();
		}
	}
	if (smx == NULL || optind != argc - 1 || mib == 0)
		usage();
	if (access("/dev/kvm", R_OK | W_OK) != 0) {
		printf("SKIP: no usable /dev/kvm\n");
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (mkdtemp(tmpdir) == NULL)
		die("mkdtemp");
	atexit(cleanup);
	if (strcmp(mode, "vsock") == 0)
		bench_vsock(smx, argv[optind], n ? n : 1000, mib);
	else if (strcmp(mode, "blk") == 0)
		bench_blk(smx, argv[optind], n ? n : 4000);
	else
		usage();
	return 0;
}
