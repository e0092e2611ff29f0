/*
 * VM create -> first guest output, against peers measured in the same run.
 *
 *   smx      in process: vm_create() + vm_start() of the test guest
 *            (cmdline "count=0 exit=triple") until its first console line
 *            ("testguest: hello", the guest's first action; smx's UART
 *            writes out whole lines) reaches a pipe, and until the end.
 *   raw      the KVM floor: KVM_CREATE_VM, one memory slot, KVM_CREATE_VCPU,
 *            KVM_RUN of a 4-instruction 32-bit guest (out to 0x3f8; hlt)
 *            until the port write, then until the hlt.
 *   smx-proc `smx boot` of the same guest as a process, to its first line.
 *   qemu     `qemu-system-x86_64 -M microvm -accel kvm` of the same guest,
 *            to its first line, when QEMU can use this /dev/kvm.
 *
 * Prints key=value lines (microseconds, medians and p90 over n runs):
 *   vm_create_to_first_insn_median_us=N vm_create_to_first_insn_p90_us=N
 *   raw_kvm_median_us=N ratio=X ...
 * Usage: vm_bench [-n N] [-s SMX] [-q QEMU] TESTGUEST
 * Exit 77 when /dev/kvm is unusable.
 */
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/vm.h"
#include "hv/hv.h"
#include "reactor/reactor.h"

#define WARMUP		3
#define MEMORY_MIB	128
#define GUEST_CMDLINE	"count=0 exit=triple"
#define HELLO		"testguest: hello"

extern char **environ;

struct stats {
	uint64_t	median, p90;
};

/* One in-process smx run. */
struct run {
	struct reactor	*r;
	int		 fd;
	uint64_t	 t_first, t_end;
	enum vm_end	 end;
	char		 out[4096];
	size_t		 len;
};

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t	x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Median and p90 of n samples (ns), in us; sorts the array. */
static struct stats
stats_of(uint64_t *s, unsigned n)
{
	struct stats	st;

	qsort(s, n, sizeof *s, cmp_u64);
	st.median = s[n / 2] / 1000;
	st.p90 = s[(n * 9) / 10 < n ? (n * 9) / 10 : n - 1] / 1000;
	return st;
}

static void
drain(struct run *rn)
{
	ssize_t	n;

	while ((n = read(rn->fd, rn->out + rn->len,
	    sizeof rn->out - 1 - rn->len)) > 0)
		rn->len += n;
	rn->out[rn->len] = '\0';
}

static void
console_cb(int fd, short what, void *arg)
{
	struct run	*rn = arg;

	if (rn->t_first == 0)
		rn->t_first = now_ns();
	drain(rn);
}

static void
end_cb(struct vm *vm, enum vm_end end, void *arg)
{
	struct run	*rn = arg;

	rn->t_end = now_ns();
	rn->end = end;
	reactor_stop(rn->r);
}

/* Boot the test guest once in this process; 0 or -1 (message printed). */
static int
smx_once(struct reactor *r, const char *guest, uint64_t *created,
    uint64_t *first, uint64_t *end)
{
	struct vm_config	 cfg;
	struct reactor_fd	*ev;
	struct run		 rn;
	struct vm		*vm;
	char			 err[256];
	int			 p[2], rc = -1;
	uint64_t		 t0;

	if (pipe2(p, O_CLOEXEC) == -1) {
		perror("vm_bench: pipe");
		return -1;
	}
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	memset(&rn, 0, sizeof rn);
	rn.r = r;
	rn.fd = p[0];
	memset(&cfg, 0, sizeof cfg);
	cfg.kernel = guest;
	cfg.cmdline = GUEST_CMDLINE;
	cfg.ncpus = 1;
	cfg.memory_mib = MEMORY_MIB;
	cfg.console_fd = p[1];
	cfg.console_in_fd = -1;
	if ((ev = reactor_add_fd(r, p[0], REACTOR_READ, console_cb,
	    &rn)) == NULL) {
		perror("vm_bench: reactor_add_fd");
		goto out;
	}

	t0 = now_ns();
	if ((vm = vm_create(r, &cfg, err, sizeof err)) == NULL) {
		fprintf(stderr, "vm_bench: vm_create %s: %s\n", guest, err);
		goto out_ev;
	}
	*created = now_ns() - t0;
	if (vm_start(vm, end_cb, &rn) != 0 || reactor_run(r) != 0) {
		fprintf(stderr, "vm_bench: cannot run the test guest\n");
		vm_free(vm);
		goto out_ev;
	}
	vm_free(vm);
	drain(&rn);
	/* The line may have been written in the reactor turn that ended. */
	if (rn.t_first == 0)
		rn.t_first = rn.t_end;
	if (strncmp(rn.out, HELLO, strlen(HELLO)) != 0 ||
	    rn.end != VM_END_TRIPLE_FAULT) {
		fprintf(stderr, "vm_bench: test guest ended %s with output "
		    "\"%.200s\"\n", vm_end_name(rn.end), rn.out);
		goto out_ev;
	}
	*first = rn.t_first - t0;
	*end = rn.t_end - t0;
	rc = 0;
out_ev:
	reactor_del_fd(ev);
out:
	close(p[0]);
	close(p[1]);
	return rc;
}

/*
 * The raw KVM floor: the least a VMM must do to run one guest
 * instruction.  32-bit protected mode, paging off, flat segments (the
 * state PVH entry uses, which PVM also runs).
 */
static const uint8_t raw_code[] = {
	0xb0, 'h',		/* mov $'h', %al */
	0x66, 0xba, 0xf8, 0x03,	/* mov $0x3f8, %dx */
	0xee,			/* out %al, (%dx) */
	0xf4,			/* hlt */
};
#define RAW_ENTRY	0x100000

static void
flat_seg(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	memset(s, 0, sizeof *s);
	s->base = 0;
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->db = 1;
	s->s = 1;
	s->g = 1;
}

static int
raw_once(uint64_t *first, uint64_t *end)
{
	struct kvm_userspace_memory_region	 mr;
	struct kvm_sregs			 sregs;
	struct kvm_regs				 regs;
	struct kvm_run				*run = MAP_FAILED;
	size_t					 size = (size_t)MEMORY_MIB << 20;
	uint8_t					*mem;
	uint64_t				 t0;
	int					 kvm, vmfd = -1, vcpu = -1;
	int					 runsz = 0, rc = -1;
	const char				*what = "open /dev/kvm";

	t0 = now_ns();
	if ((kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC)) == -1)
		goto fail;
	what = "KVM_CREATE_VM";
	if ((vmfd = ioctl(kvm, KVM_CREATE_VM, 0)) == -1)
		goto fail;
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	what = "mmap";
	if (mem == MAP_FAILED)
		goto fail;
	memcpy(mem + RAW_ENTRY, raw_code, sizeof raw_code);
	memset(&mr, 0, sizeof mr);
	mr.memory_size = size;
	mr.userspace_addr = (uintptr_t)mem;
	what = "KVM_SET_USER_MEMORY_REGION";
	if (ioctl(vmfd, KVM_SET_USER_MEMORY_REGION, &mr) == -1)
		goto fail_mem;
	what = "KVM_CREATE_VCPU";
	if ((vcpu = ioctl(vmfd, KVM_CREATE_VCPU, 0)) == -1)
		goto fail_mem;
	what = "KVM_GET_VCPU_MMAP_SIZE";
	if ((runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0)) <= 0)
		goto fail_mem;
	run = mmap(NULL, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	what = "mmap kvm_run";
	if (run == MAP_FAILED)
		goto fail_mem;
	what = "KVM_GET_SREGS";
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) == -1)
		goto fail_run;
	flat_seg(&sregs.cs, 0x10, 0xb);		/* execute/read, accessed */
	flat_seg(&sregs.ds, 0x18, 0x3);		/* read/write, accessed */
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.cr0 = 0x11;			/* PE | ET */
	sregs.cr4 = 0;
	sregs.efer = 0;
	what = "KVM_SET_SREGS";
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) == -1)
		goto fail_run;
	memset(&regs, 0, sizeof regs);
	regs.rip = RAW_ENTRY;
	regs.rflags = 0x2;
	what = "KVM_SET_REGS";
	if (ioctl(vcpu, KVM_SET_REGS, &regs) == -1)
		goto fail_run;

	what = "KVM_RUN";
	while (ioctl(vcpu, KVM_RUN, 0) == -1)
		if (errno != EINTR)
			goto fail_run;
	if (run->exit_reason != KVM_EXIT_IO || run->io.port != 0x3f8) {
		fprintf(stderr, "vm_bench: raw guest: exit %u, not the port "
		    "write\n", run->exit_reason);
		goto out;
	}
	*first = now_ns() - t0;
	while (ioctl(vcpu, KVM_RUN, 0) == -1)
		if (errno != EINTR)
			goto fail_run;
	if (run->exit_reason != KVM_EXIT_HLT) {
		fprintf(stderr, "vm_bench: raw guest: exit %u, not hlt\n",
		    run->exit_reason);
		goto out;
	}
	munmap(run, runsz);
	close(vcpu);
	munmap(mem, size);
	close(vmfd);
	close(kvm);
	*end = now_ns() - t0;
	return 0;

fail_run:
	fprintf(stderr, "vm_bench: raw guest: %s: %s\n", what, strerror(errno));
out:
	munmap(run, runsz);
	goto out_mem;
fail_mem:
	fprintf(stderr, "vm_bench: raw guest: %s: %s\n", what, strerror(errno));
out_mem:
	if (vcpu != -1)
		close(vcpu);
	munmap(mem, size);
	goto out_vm;
fail:
	fprintf(stderr, "vm_bench: raw guest: %s: %s\n", what, strerror(errno));
out_vm:
	if (vmfd != -1)
		close(vmfd);
	if (kvm != -1)
		close(kvm);
	return rc;
}

/*
 * Start argv with its stdout on a pipe; time until the first line of
 * output has arrived (*first) and until the process has exited (*end).
 * Its exit status goes to *status.  stdin and stderr are /dev/null.
 */
static int
proc_once(char *const argv[], uint64_t *first, uint64_t *end, int *status,
    char *out, size_t outlen)
{
	posix_spawn_file_actions_t	 fa;
	struct pollfd			 pfd;
	uint64_t			 t0, t_first = 0;
	size_t				 len = 0;
	ssize_t				 n;
	pid_t				 pid;
	int				 p[2], error;

	if (pipe2(p, O_CLOEXEC) == -1) {
		perror("vm_bench: pipe");
		return -1;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	t0 = now_ns();
	error = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (error != 0) {
		fprintf(stderr, "vm_bench: %s: %s\n", argv[0], strerror(error));
		close(p[0]);
		return -1;
	}
	pfd.fd = p[0];
	pfd.events = POLLIN;
	for (;;) {
		if (poll(&pfd, 1, 10000) != 1) {
			fprintf(stderr, "vm_bench: %s: no output for 10 s\n",
			    argv[0]);
			kill(pid, SIGKILL);
			break;
		}
		if ((n = read(p[0], out + len, outlen - 1 - len)) <= 0)
			break;
		len += n;
		if (t_first == 0 && memchr(out, '\n', len) != NULL)
			t_first = now_ns();
	}
	out[len] = '\0';
	close(p[0]);
	while (waitpid(pid, status, 0) == -1 && errno == EINTR)
		;
	*end = now_ns() - t0;
	if (t_first == 0)
		return -1;
	*first = t_first - t0;
	return 0;
}

/* QEMU's argv for the test guest with CPU model `cpu`. */
static void
qemu_argv(char **argv, const char *qemu, const char *cpu, const char *guest)
{
	int	i = 0;

	argv[i++] = (char *)qemu;
	argv[i++] = "-M";
	argv[i++] = "microvm,x-option-roms=off,rtc=off";
	argv[i++] = "-accel";
	argv[i++] = "kvm";
	argv[i++] = "-cpu";
	argv[i++] = (char *)cpu;
	argv[i++] = "-m";
	argv[i++] = "128";
	argv[i++] = "-nodefaults";
	argv[i++] = "-no-user-config";
	argv[i++] = "-display";
	argv[i++] = "none";
	argv[i++] = "-serial";
	argv[i++] = "stdio";
	argv[i++] = "-no-reboot";
	argv[i++] = "-kernel";
	argv[i++] = (char *)guest;
	argv[i++] = "-append";
	argv[i++] = GUEST_CMDLINE;
	argv[i] = NULL;
}

/* n runs of a process-level peer; 0, or -1 when it does not work here. */
static int
proc_series(char *const argv[], unsigned n, uint64_t *first, uint64_t *end,
    const char *name)
{
	char		out[4096];
	uint64_t	f, e;
	unsigned	i;
	int		status;

	for (i = 0; i < WARMUP + n; i++) {
		if (proc_once(argv, &f, &e, &status, out, sizeof out) != 0 ||
		    strncmp(out, HELLO, strlen(HELLO)) != 0) {
			fprintf(stderr, "vm_bench: %s: no \"%s\" line (exit "
			    "status 0x%x, output \"%.200s\")\n", name, HELLO,
			    status, out);
			return -1;
		}
		if (i >= WARMUP) {
			first[i - WARMUP] = f;
			end[i - WARMUP] = e;
		}
	}
	return 0;
}

static double
ratio(uint64_t a, uint64_t b)
{
	return b == 0 ? 0 : (double)a / (double)b;
}

static void
usage(void)
{
	fprintf(stderr, "usage: vm_bench [-n N] [-s SMX] [-q QEMU] TESTGUEST\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const char *cpus[] = { "host", "host,-arch-capabilities" };
	struct reactor	*r;
	struct stats	 sc, sf, se, rf, re, pf = { 0, 0 }, qf = { 0, 0 };
	const char	*smx = NULL, *qemu = NULL, *guest, *why;
	char		*av[32], out[4096];
	uint64_t	*first, *end, *created, c, f, e;
	unsigned	 n = 100, i;
	int		 ch, status, have_proc = 0, have_qemu = 0;

	while ((ch = getopt(argc, argv, "n:s:q:")) != -1) {
		switch (ch) {
		case 'n':
			n = strtoul(optarg, NULL, 10);
			if (n < 1 || n > 100000)
				usage();
			break;
		case 's':
			smx = optarg;
			break;
		case 'q':
			qemu = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind + 1 != argc)
		usage();
	guest = argv[optind];
	log_init("vm_bench", LOG_NORMAL);
	if (hv_probe(&why) == HV_KIND_ABSENT) {
		printf("SKIP vm_bench: no usable /dev/kvm (%s)\n", why);
		return 77;
	}
	first = xcalloc(n, sizeof *first);
	end = xcalloc(n, sizeof *end);
	created = xcalloc(n, sizeof *created);
	if ((r = reactor_create()) == NULL)
		fatal("reactor_create");

	for (i = 0; i < WARMUP + n; i++) {
		if (smx_once(r, guest, &c, &f, &e) != 0)
			return 1;
		if (i >= WARMUP) {
			created[i - WARMUP] = c;
			first[i - WARMUP] = f;
			end[i - WARMUP] = e;
		}
	}
	sf = stats_of(first, n);
	se = stats_of(end, n);
	sc = stats_of(created, n);

	for (i = 0; i < WARMUP + n; i++) {
		if (raw_once(&f, &e) != 0)
			return 1;
		if (i >= WARMUP) {
			first[i - WARMUP] = f;
			end[i - WARMUP] = e;
		}
	}
	rf = stats_of(first, n);
	re = stats_of(end, n);

	if (smx != NULL) {
		av[0] = (char *)smx;
		av[1] = "boot";
		av[2] = "--kernel";
		av[3] = (char *)guest;
		av[4] = "--cmdline";
		av[5] = GUEST_CMDLINE;
		av[6] = "--memory";
		av[7] = "128";
		av[8] = NULL;
		if (proc_series(av, n, first, end, "smx boot") == 0) {
			pf = stats_of(first, n);
			have_proc = 1;
		}
	}
	if (qemu != NULL) {
		/* Some KVMs (PVM) refuse an MSR that -cpu host sets. */
		for (i = 0; i < sizeof cpus / sizeof cpus[0]; i++) {
			qemu_argv(av, qemu, cpus[i], guest);
			if (proc_once(av, &f, &e, &status, out, sizeof out) ==
			    0 && strncmp(out, HELLO, strlen(HELLO)) == 0)
				break;
		}
		if (i == sizeof cpus / sizeof cpus[0])
			printf("SKIP qemu peer: qemu -accel kvm does not boot "
			    "the test guest on this /dev/kvm\n");
		else if (proc_series(av, n, first, end, "qemu") == 0) {
			qf = stats_of(first, n);
			have_qemu = 1;
		}
	}

	printf("vm_create_to_first_insn_median_us=%llu "
	    "vm_create_to_first_insn_p90_us=%llu raw_kvm_median_us=%llu "
	    "raw_kvm_p90_us=%llu ratio=%.1f n=%u\n",
	    (unsigned long long)sf.median, (unsigned long long)sf.p90,
	    (unsigned long long)rf.median, (unsigned long long)rf.p90,
	    ratio(sf.median, rf.median), n);
	printf("vm_create_only_median_us=%llu vm_create_only_p90_us=%llu\n",
	    (unsigned long long)sc.median, (unsigned long long)sc.p90);
	printf("vm_create_to_end_median_us=%llu vm_create_to_end_p90_us=%llu "
	    "raw_kvm_end_median_us=%llu raw_kvm_end_p90_us=%llu\n",
	    (unsigned long long)se.median, (unsigned long long)se.p90,
	    (unsigned long long)re.median, (unsigned long long)re.p90);
	if (have_proc && have_qemu)
		printf("proc_first_line_smx_median_us=%llu "
		    "proc_first_line_smx_p90_us=%llu "
		    "proc_first_line_qemu_median_us=%llu "
		    "proc_first_line_qemu_p90_us=%llu ratio=%.2f\n",
		    (unsigned long long)pf.median, (unsigned long long)pf.p90,
		    (unsigned long long)qf.median, (unsigned long long)qf.p90,
		    ratio(pf.median, qf.median));
	else if (have_proc)
		printf("proc_first_line_smx_median_us=%llu "
		    "proc_first_line_smx_p90_us=%llu\n",
		    (unsigned long long)pf.median, (unsigned long long)pf.p90);
	reactor_free(r);
	free(first);
	free(end);
	free(created);
	return 0;
}
