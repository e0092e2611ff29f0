/*
 * e2e tier: the libsmx image/VM/exec API against a real guest (run by
 * tests/e2e/example.test where real KVM is, inside tools/kvm-harness
 * otherwise).  One machine from IMAGE serves every case: exec capture,
 * exit codes and signals, stdin, env/cwd/user, a tty, files both ways,
 * volumes, a published port (with a half-closing client), kill of the
 * main process from another process through core/agent.c, shutdown.
 *
 *	usage: api IMAGE		TAP on stdout
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/agent.h"
#include "core/base/base.h"
#include "core/smx.h"
#include "tests/tap.h"

static struct smx	*smx;
static struct smx_vm	*vm;
static char		 voldir[] = "/tmp/smx-api-vol.XXXXXX";
static char		 volfile[256];
static uint16_t		 http_port;

/* Run argv in the guest with its output captured. */
static int
run(const char *const *argv, struct smx_exec_opts *o,
    struct smx_exec_result *r)
{
	struct smx_exec_opts	def;
	char			err[512];
	int			error;

	if (o == NULL) {
		smx_exec_opts_init(&def);
		o = &def;
	}
	o->argv = argv;
	if (o->timeout_ms == 0)
		o->timeout_ms = 60000;
	if ((error = smx_exec(vm, o, r, err, sizeof err)) != 0)
		tap_diag("exec %s: %s", argv[0], err);
	return error;
}

static int
t_echo(void)
{
	static const char *const argv[] = { "echo", "hi", NULL };
	struct smx_exec_result	 r;

	TAP_CHECK(run(argv, NULL, &r) == 0);
	TAP_CHECK(r.status == 0 && r.signal == 0);
	TAP_CHECK(r.out_len == 3 && strcmp(r.out, "hi\n") == 0);
	TAP_CHECK(r.err_len == 0);
	smx_exec_result_free(&r);
	return TAP_PASS;
}

static int
t_status(void)
{
	static const char *const a7[] = { "sh", "-c", "echo out; echo err >&2; "
	    "exit 7", NULL };
	static const char *const a9[] = { "sh", "-c", "kill -9 $$", NULL };
	struct smx_exec_result	 r;

	TAP_CHECK(run(a7, NULL, &r) == 0);
	TAP_CHECK(r.status == 7 && r.signal == 0);
	TAP_CHECK(strcmp(r.out, "out\n") == 0 && strcmp(r.err, "err\n") == 0);
	smx_exec_result_free(&r);
	TAP_CHECK(run(a9, NULL, &r) == 0);
	TAP_CHECK(r.signal == 9 && r.status == 128 + 9);
	smx_exec_result_free(&r);
	return TAP_PASS;
}

static int
t_missing_command(void)
{
	static const char *const argv[] = { "/no/such/program", NULL };
	struct smx_exec_opts	 o;
	struct smx_exec_result	 r;
	char			 err[512] = "";

	smx_exec_opts_init(&o);
	o.argv = argv;
	TAP_CHECK(smx_exec(vm, &o, &r, err, sizeof err) == -ENOENT);
	TAP_CHECK(strstr(err, "no/such/program") != NULL);
	tap_diag("%s", err);
	return TAP_PASS;
}

static int
t_stdin(void)
{
	static const char *const argv[] = { "sh", "-c", "cat; echo end", NULL };
	struct smx_exec_opts	 o;
	struct smx_exec_result	 r;
	size_t			 n = 300 * 1024, i;
	char			*big = xmalloc(n);

	/* More than the vsock's window, so flow control is exercised. */
	for (i = 0; i < n; i++)
		big[i] = 'a' + i % 26;
	smx_exec_opts_init(&o);
	o.stdin_data = big;
	o.stdin_len = n;
	TAP_CHECK(run(argv, &o, &r) == 0);
	TAP_CHECK(r.status == 0);
	TAP_CHECK(r.out_len == n + 4);
	TAP_CHECK(memcmp(r.out, big, n) == 0);
	TAP_CHECK(strcmp(r.out + n, "end\n") == 0);
	smx_exec_result_free(&r);
	free(big);
	return TAP_PASS;
}

static int
t_env_cwd_user(void)
{
	static const char *const argv[] = { "sh", "-c",
	    "echo \"$FOO\"; pwd; id -u; hostname", NULL };
	static const char *const env[] = { "FOO=bar baz", NULL };
	struct smx_exec_opts	 o;
	struct smx_exec_result	 r;
	char			 want[256];

	smx_exec_opts_init(&o);
	o.env = env;
	o.cwd = "/tmp";
	o.user = "nobody";
	TAP_CHECK(run(argv, &o, &r) == 0);
	snprintf(want, sizeof want, "bar baz\n/tmp\n65534\n%s\n",
	    smx_vm_name(vm));
	if (strcmp(r.out, want) != 0)
		tap_diag("got '%s' err '%s'", r.out, r.err);
	TAP_CHECK(strcmp(r.out, want) == 0);
	TAP_CHECK(r.status == 0);
	smx_exec_result_free(&r);
	return TAP_PASS;
}

static int
t_tty(void)
{
	static const char *const argv[] = { "sh", "-c",
	    "tty; stty size; echo e >&2", NULL };
	struct smx_exec_opts	 o;
	struct smx_exec_result	 r;

	smx_exec_opts_init(&o);
	o.tty = 1;
	o.rows = 33;
	o.cols = 101;
	TAP_CHECK(run(argv, &o, &r) == 0);
	TAP_CHECK(r.status == 0);
	if (strstr(r.out, "/dev/pts/") == NULL ||
	    strstr(r.out, "33 101") == NULL)
		tap_diag("got '%s'", r.out);
	TAP_CHECK(strstr(r.out, "/dev/pts/") != NULL);
	TAP_CHECK(strstr(r.out, "33 101") != NULL);
	/* stderr is the terminal too */
	TAP_CHECK(strstr(r.out, "e\r\n") != NULL && r.err_len == 0);
	smx_exec_result_free(&r);
	return TAP_PASS;
}

static int
t_files(void)
{
	static const char *const argv[] = { "sh", "-c",
	    "cat /root/in.txt; stat -c %a /root/in.txt; "
	    "printf guest-made > /tmp/out.txt", NULL };
	struct smx_exec_result	 r;
	void			*data;
	size_t			 len;

	TAP_CHECK(smx_vm_write_file(vm, "/root/in.txt", "host-made\n", 10,
	    0600) == 0);
	TAP_CHECK(run(argv, NULL, &r) == 0);
	TAP_CHECK(strcmp(r.out, "host-made\n600\n") == 0);
	smx_exec_result_free(&r);
	TAP_CHECK(smx_vm_read_file(vm, "/tmp/out.txt", &data, &len) == 0);
	TAP_CHECK(len == 10 && memcmp(data, "guest-made", 10) == 0);
	free(data);
	TAP_CHECK(smx_vm_read_file(vm, "/no/such/file", &data, &len) ==
	    -ENOENT);
	return TAP_PASS;
}

static int
t_volumes(void)
{
	static const char *const argv[] = { "sh", "-c",
	    "cat /mnt/file.txt; echo from-guest > /mnt/dir/g.txt; "
	    "echo x > /mnt/file.txt || echo read-only", NULL };
	struct smx_exec_result	 r;
	char			 path[512], buf[64] = "";
	int			 fd;
	ssize_t			 n;

	TAP_CHECK(run(argv, NULL, &r) == 0);
	if (strcmp(r.out, "host-file\nread-only\n") != 0)
		tap_diag("got '%s' err '%s'", r.out, r.err);
	TAP_CHECK(strcmp(r.out, "host-file\nread-only\n") == 0);
	smx_exec_result_free(&r);
	snprintf(path, sizeof path, "%s/g.txt", voldir);
	TAP_CHECK((fd = open(path, O_RDONLY)) >= 0);
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	TAP_CHECK(n == 11 && strcmp(buf, "from-guest\n") == 0);
	return TAP_PASS;
}

/* The client of the published port, in a child process (the parent's
 * thread must run the reactor): GET /, half-close, read to the end,
 * write what came into out_fd. */
static void
http_client(int out_fd, uint16_t port)
{
	static const char	req[] = "GET / HTTP/1.0\r\nHost: x\r\n\r\n";
	struct sockaddr_in	sin;
	char			buf[4096];
	ssize_t			n;
	int			s;

	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons(port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((s = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    connect(s, (struct sockaddr *)&sin, sizeof sin) == -1) {
		dprintf(out_fd, "connect: %s\n", strerror(errno));
		_exit(1);
	}
	if (write(s, req, sizeof req - 1) != (ssize_t)sizeof req - 1)
		_exit(1);
	shutdown(s, SHUT_WR);
	while ((n = read(s, buf, sizeof buf)) > 0)
		if (write(out_fd, buf, n) != n)
			_exit(1);
	_exit(0);
}

static int
t_publish(void)
{
	static const char *const httpd[] = { "httpd", "-p", "127.0.0.1:8080",
	    "-h", "/var/www", NULL };
	static const char *const cat[] = { "cat", NULL };
	struct smx_exec_opts	 o;
	struct smx_exec_result	 r;
	char			 err[512] = "";
	uint16_t		 again;
	int			 p[2], st;
	pid_t			 pid;

	TAP_CHECK(run(httpd, NULL, &r) == 0);
	TAP_CHECK(r.status == 0);
	smx_exec_result_free(&r);
	TAP_CHECK(smx_vm_publish(vm, NULL, 0, 8080, &http_port, err,
	    sizeof err) == 0);
	TAP_CHECK(http_port != 0);
	/* The host port taken: a clear error. */
	TAP_CHECK(smx_vm_publish(vm, "127.0.0.1", http_port, 8080, &again,
	    err, sizeof err) == -EADDRINUSE);
	tap_diag("%s", err);
	TAP_CHECK(strstr(err, "in use") != NULL);

	/* The child's response comes back through the guest's cat, so
	 * this thread runs the reactor (inside smx_exec) meanwhile. */
	TAP_CHECK(pipe(p) == 0);
	if ((pid = fork()) == 0) {
		close(p[0]);
		http_client(p[1], http_port);
	}
	close(p[1]);
	smx_exec_opts_init(&o);
	o.stdin_fd = p[0];
	TAP_CHECK(run(cat, &o, &r) == 0);
	close(p[0]);
	TAP_CHECK(waitpid(pid, &st, 0) == pid);
	if (strstr(r.out, "<h1>smx-demo</h1>") == NULL)
		tap_diag("got '%s'", r.out);
	TAP_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	TAP_CHECK(strncmp(r.out, "HTTP/1.", 7) == 0);
	TAP_CHECK(strstr(r.out, "<h1>smx-demo</h1>") != NULL);
	smx_exec_result_free(&r);
	return TAP_PASS;
}

/* kill: the main process gets SIGTERM from another process speaking to
 * the agent on the machine's vsock socket, as `smx kill` does. */
static int	kill_pipe[2];

static void
started_cb(void *arg, int pid)
{
	(void)arg;
	(void)pid;
	if (write(kill_pipe[1], "s", 1) != 1)
		tap_diag("started: cannot tell the killer");
}

static int
t_kill(void)
{
	static const char *const argv[] = { "sleep", "100", NULL };
	struct smx_exec_opts	 o;
	struct smx_exec_result	 r;
	char			 c, err[256];
	pid_t			 pid;
	int			 fd, st;

	/* No main process yet: an error, not a hang. */
	TAP_CHECK(smx_vm_kill(vm, SIGTERM) == -ESRCH);
	TAP_CHECK(pipe(kill_pipe) == 0);
	if ((pid = fork()) == 0) {
		close(kill_pipe[1]);
		if (read(kill_pipe[0], &c, 1) != 1)
			_exit(2);
		if ((fd = agent_connect(smx_vm_vsock_path(vm),
		    AGENT_PORT)) < 0)
			_exit(3);
		_exit(agent_kill(fd, SIGTERM, err, sizeof err) == 0 ? 0 : 4);
	}
	close(kill_pipe[0]);
	smx_exec_opts_init(&o);
	o.main = 1;
	o.started_fn = started_cb;
	TAP_CHECK(run(argv, &o, &r) == 0);
	close(kill_pipe[1]);
	TAP_CHECK(waitpid(pid, &st, 0) == pid);
	TAP_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	TAP_CHECK(r.signal == SIGTERM && r.status == 128 + SIGTERM);
	smx_exec_result_free(&r);
	return TAP_PASS;
}

static int
t_shutdown(void)
{
	TAP_CHECK(smx_vm_shutdown(vm, 30000) == 0);
	tap_diag("ended: %s (%s)", smx_end_name(smx_vm_end(vm)),
	    smx_vm_end_detail(vm));
	TAP_CHECK(smx_vm_end(vm) == SMX_END_POWEROFF);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "exec captures stdout, status 0", t_echo },
	{ "exit code 7 and stderr apart; killed by 9 is 137", t_status },
	{ "a missing program is -ENOENT with a reason", t_missing_command },
	{ "stdin data larger than the vsock window", t_stdin },
	{ "env, cwd, user (nobody) and hostname", t_env_cwd_user },
	{ "a tty with its size, stderr merged", t_tty },
	{ "write and read files in the guest", t_files },
	{ "a directory volume (rw) and a file volume (ro)", t_volumes },
	{ "a published port reaches httpd; port in use is refused",
	    t_publish },
	{ "kill from another process through the agent socket", t_kill },
	{ "shutdown powers the guest off", t_shutdown },
};

int
main(int argc, char **argv)
{
	struct smx_image	*img;
	struct smx_vm_opts	 vo;
	struct smx_volume	 vols[2];
	char			 err[512];
	int			 fd, rc;

	if (argc != 2) {
		fprintf(stderr, "usage: api IMAGE\n");
		return 2;
	}
	if (mkdtemp(voldir) == NULL)
		fatal("mkdtemp");
	snprintf(volfile, sizeof volfile, "%s.file", voldir);
	if ((fd = open(volfile, O_WRONLY | O_CREAT | O_TRUNC, 0644)) == -1 ||
	    write(fd, "host-file\n", 10) != 10)
		fatal("%s", volfile);
	close(fd);
	if (smx_open(&smx, 0) != 0)
		fatalx("smx_open");
	if (smx_image_open(smx, argv[1], NULL, &img, err, sizeof err) != 0) {
		printf("Bail out! %s\n", err);
		return 1;
	}
	smx_vm_opts_init(&vo);
	vo.dax = 1;
	vols[0].host = voldir;
	vols[0].guest = "/mnt/dir";
	vols[0].readonly = 0;
	vols[1].host = volfile;
	vols[1].guest = "/mnt/file.txt";
	vols[1].readonly = 1;
	vo.volumes = vols;
	vo.nvolumes = 2;
	vo.console_fd = getenv("SMX_API_CONSOLE") != NULL ? 2 : -1;
	if (smx_vm_start(smx, img, &vo, &vm, err, sizeof err) != 0) {
		printf("Bail out! %s\n", err);
		return 1;
	}
	rc = tap_run(cases, ARRAY_SIZE(cases), 300);
	if (smx_vm_end(vm) == SMX_END_RUNNING)
		smx_vm_shutdown(vm, 0);
	smx_vm_free(vm);
	smx_image_close(img);
	smx_close(smx);
	unlink(volfile);
	rm_tree_at(AT_FDCWD, voldir, NULL);
	return rc;
}
