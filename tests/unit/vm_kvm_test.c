/*
 * kvm tier: the VM object on the real hypervisor with the test guest.
 * Pause and resume of a running guest (what snapshots stand on), several
 * machines in one reactor, and stop joining every thread.  Skips when
 * /dev/kvm is missing.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/vm.h"
#include "tests/tap.h"

#define NVMS	4

struct tvm {
	struct vm		*vm;
	int			 out[2];
	struct reactor_fd	*out_ev;
	size_t			 bytes;
	bool			 ended;
	enum vm_end		 end;
	unsigned		 paused;
};

static struct reactor	*R;
static char		 guest[4096];
static unsigned		 live;

static void
out_cb(int fd, short what, void *arg)
{
	struct tvm	*t = arg;
	char		 buf[4096];
	ssize_t		 n;

	if ((n = read(fd, buf, sizeof buf)) > 0)
		t->bytes += n;
}

static void
end_cb(struct vm *vm, enum vm_end end, void *arg)
{
	struct tvm	*t = arg;

	t->ended = true;
	t->end = end;
	if (--live == 0)
		reactor_stop(R);
}

static void
paused_cb(struct vm *vm, void *arg)
{
	struct tvm	*t = arg;

	t->paused++;
	reactor_stop(R);
}

static void
stop_cb(void *arg)
{
	reactor_stop(arg);
}

/* Run the reactor for usec, or until something stops it first. */
static void
run_for(uint64_t usec)
{
	struct reactor_timer	*g;

	g = reactor_add_timer(R, usec, false, stop_cb, R);
	if (g == NULL || reactor_run(R) != 0)
		fatalx("reactor");
	reactor_del_timer(g);
}

static int
threads(void)
{
	DIR		*d;
	struct dirent	*e;
	int		 n = 0;

	if ((d = opendir("/proc/self/task")) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static int
tvm_start(struct tvm *t, unsigned ncpus, const char *cmdline)
{
	struct vm_config	cfg;
	char			err[256];

	memset(t, 0, sizeof *t);
	if (pipe2(t->out, O_CLOEXEC | O_NONBLOCK) != 0)
		return -1;
	memset(&cfg, 0, sizeof cfg);
	cfg.kernel = guest;
	cfg.cmdline = cmdline;
	cfg.ncpus = ncpus;
	cfg.memory_mib = 64;
	cfg.console_fd = t->out[1];
	cfg.console_in_fd = -1;
	if ((t->vm = vm_create(R, &cfg, err, sizeof err)) == NULL) {
		tap_diag("vm_create: %s", err);
		return -1;
	}
	t->out_ev = reactor_add_fd(R, t->out[0], REACTOR_READ, out_cb, t);
	if (t->out_ev == NULL || vm_start(t->vm, end_cb, t) != 0)
		return -1;
	live++;
	return 0;
}

static void
tvm_free(struct tvm *t)
{
	if (t->out_ev != NULL)
		reactor_del_fd(t->out_ev);
	vm_free(t->vm);
	close(t->out[0]);
	close(t->out[1]);
	memset(t, 0, sizeof *t);
}

/* A guest printing a counter is paused (every vCPU parked, console
 * quiet), resumed (the counter goes on), then stopped. */
static int
t_pause_resume(void)
{
	struct tvm	t;
	size_t		at_pause;
	int		before = threads(), i;

	if (tvm_start(&t, 2, "count=100000000") != 0)
		return TAP_FAIL;
	run_for(300000);
	TAP_CHECK(t.bytes > 0 && !t.ended);
	for (i = 0; i < 3; i++) {
		TAP_CHECK(vm_pause(t.vm, paused_cb, &t) == 0);
		run_for(5000000);
		TAP_CHECK(t.paused == (unsigned)i + 1 && vm_paused(t.vm));
		/* What was printed before the pause drains, then nothing. */
		run_for(50000);
		at_pause = t.bytes;
		run_for(300000);
		if (t.bytes != at_pause)
			tap_diag("paused guest printed %zu bytes",
			    t.bytes - at_pause);
		TAP_CHECK(t.bytes == at_pause);
		vm_resume(t.vm);
		TAP_CHECK(!vm_paused(t.vm));
		run_for(300000);
		TAP_CHECK(t.bytes > at_pause);
	}
	vm_stop(t.vm, VM_END_STOPPED);
	run_for(5000000);
	TAP_CHECK(t.ended && t.end == VM_END_STOPPED);
	/* After the VM fd is closed: KVM may own a worker thread in the
	 * process for as long as the VM exists. */
	tvm_free(&t);
	TAP_CHECK(threads() == before);
	return TAP_PASS;
}

/* Pausing works when every vCPU sleeps in the kernel's HLT, and a
 * machine stopped while paused ends cleanly. */
static int
t_pause_halted(void)
{
	struct tvm	t;

	if (tvm_start(&t, 4, "smp exit=idle") != 0)
		return TAP_FAIL;
	run_for(1000000);
	TAP_CHECK(!t.ended);
	TAP_CHECK(vm_pause(t.vm, paused_cb, &t) == 0);
	run_for(5000000);
	TAP_CHECK(t.paused == 1);
	vm_stop(t.vm, VM_END_STOPPED);
	run_for(5000000);
	TAP_CHECK(t.ended && t.end == VM_END_STOPPED);
	tvm_free(&t);
	return TAP_PASS;
}

/* Several machines share one reactor; each ends its own way. */
static int
t_many(void)
{
	static const char *const lines[NVMS] = {
		"", "exit=reboot", "exit=triple", "smp",
	};
	static const enum vm_end want[NVMS] = {
		VM_END_POWEROFF, VM_END_REBOOT, VM_END_TRIPLE_FAULT,
		VM_END_POWEROFF,
	};
	struct tvm	t[NVMS];
	int		i, before = threads();

	for (i = 0; i < NVMS; i++)
		if (tvm_start(&t[i], i == 3 ? 2 : 1, lines[i]) != 0)
			return TAP_FAIL;
	for (i = 0; i < 100 && live > 0; i++)
		run_for(100000);
	for (i = 0; i < NVMS; i++) {
		if (!t[i].ended || t[i].end != want[i])
			tap_diag("vm %d: ended %d as %s", i, t[i].ended,
			    vm_end_name(t[i].end));
		TAP_CHECK(t[i].ended && t[i].end == want[i]);
		TAP_CHECK(t[i].bytes > 0);
		tvm_free(&t[i]);
	}
	TAP_CHECK(threads() == before);
	return TAP_PASS;
}

static const struct tap_case cases[] = {
	{ "pause and resume a running guest, 3 times", t_pause_resume },
	{ "pause 4 vCPUs idling in HLT, stop while paused", t_pause_halted },
	{ "4 machines in one reactor end their own ways", t_many },
};

int
main(void)
{
	const char	*top = getenv("top_builddir");
	int		 rc;

	log_init("vm_kvm_test", LOG_NORMAL);
	if (access("/dev/kvm", R_OK | W_OK) != 0) {
		printf("1..0 # SKIP /dev/kvm: %s\n", strerror(errno));
		return 77;
	}
	snprintf(guest, sizeof guest, "%s/tests/guest/testguest",
	    top != NULL ? top : ".");
	if (access(guest, R_OK) != 0) {
		printf("Bail out! %s: %s\n", guest, strerror(errno));
		return 1;
	}
	if ((R = reactor_create()) == NULL)
		fatal("reactor");
	rc = tap_run(cases, ARRAY_SIZE(cases), 120);
	reactor_free(R);
	return rc;
}
