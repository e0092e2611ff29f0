/*
 * testguest main: validates the PVH start_info, runs the tests its
 * command line selects, prints "TESTGUEST OK" or "TESTGUEST FAIL <reason>"
 * and leaves the way exit= says.
 *
 * Command-line words (space separated, unknown words fail):
 *   basic           memory map + sparse memory test + count loop
 *                   (the default when no test word is given)
 *   smp             MP table, start every AP, wait for all to check in
 *   count=N         print "count: i" for i in 1..N
 *   fill=MIB        write a byte into every page of MIB MiB from 64 MiB
 *   pause=S         spin S seconds of TSC (the host samples meanwhile)
 *   exit=halt       cli; hlt forever (default)
 *   exit=reboot     i8042 reset (0xfe to port 0x64)
 *   exit=triple     empty IDT + ud2: triple fault
 *   exit=idle       interrupts on, halted until the host stops it (the
 *                   8259s masked, so nothing ever wakes it)
 *   virtio-rng, virtio-blk, virtio-blk-ro, virtio-console, virtio-balloon,
 *   virtio-vsock, vsock-listen=P, virtio-fs
 *                   drive a virtio-mmio device (vdev.c, fs.c), found through
 *   virtio_mmio.device=<size>@<base>:<irq>  (as Linux takes it)
 *   vsock-port=P, balloon-wait=S  options of those tests
 */
#include "testguest.h"

#define CMDLINE_MAX	1024
#define MAX_SELECTED	16
#define LOW_MEM		0x100000UL	/* below this: BIOS data, trampoline */
#define IDENT_LIMIT	0x100000000UL	/* start.S maps the first 4 GiB */
#define MEMTEST_STRIDE	0x10000UL	/* one word per 64 KiB */
#define MEMTEST_CHUNK	256
#define COUNT_LOOP	10000
#define FILL_START	0x4000000UL	/* 64 MiB: where virtio-balloon starts */
#define FILL_PAGE	4096UL

enum exit_mode { EXIT_HALT, EXIT_REBOOT, EXIT_TRIPLE, EXIT_IDLE };

struct test {
	const char	*word;
	int		 has_arg;	/* word is "name=arg" */
	void		(*fn)(const char *arg);
};

struct selected {
	const struct test	*test;
	const char		*arg;
};

static void test_basic(const char *arg);
static void test_count(const char *arg);
static void test_fill(const char *arg);
static void test_pause(const char *arg);

static const struct test tests[] = {
	{ "basic", 0, test_basic },
	{ "smp", 0, test_smp },
	{ "count", 1, test_count },
	{ "fill", 1, test_fill },
	{ "pause", 1, test_pause },
	{ "virtio-rng", 0, test_virtio_rng },
	{ "virtio-blk", 0, test_virtio_blk },
	{ "virtio-blk-ro", 0, test_virtio_blk_ro },
	{ "virtio-console", 0, test_virtio_console },
	{ "virtio-balloon", 0, test_virtio_balloon },
	{ "virtio-vsock", 0, test_virtio_vsock },
	{ "vsock-listen", 1, test_vsock_listen },
	{ "vsock-echo", 1, test_vsock_echo },
	{ "blk-randread", 1, test_blk_randread },
	{ "virtio-fs", 0, test_virtio_fs },
	{ "snap-loop", 1, test_snap_loop },
};

static enum exit_mode exit_mode = EXIT_HALT;
static const struct hvm_start_info *start_info;
static char cmdline[CMDLINE_MAX];

static volatile uint64_t *memtest_addr[MEMTEST_CHUNK];
static uint64_t memtest_saved[MEMTEST_CHUNK];
static unsigned memtest_n;

void tg_main(uint32_t start_info_paddr) __attribute__((noreturn));

const struct hvm_start_info *
tg_start_info(void)
{
	return start_info;
}

static void __attribute__((noreturn))
leave(void)
{
	static const struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) empty_idt = { 0, 0 };

	switch (exit_mode) {
	case EXIT_REBOOT:
		outb(0x64, 0xfe);
		break;
	case EXIT_TRIPLE:
		/* #UD cannot be delivered, nor the #DF that follows. */
		__asm__ volatile("lidt %0; ud2" : : "m"(empty_idt));
		break;
	case EXIT_IDLE:
		/* Not "halted for good" (IF=1), so the VMM must not take it
		 * for a power-off; with both PICs masked and no LAPIC timer
		 * no interrupt can arrive, so no IDT is needed. */
		outb(0x21, 0xff);
		outb(0xa1, 0xff);
		for (;;)
			__asm__ volatile("sti; hlt; cli");
	case EXIT_HALT:
		break;
	}
	halt_forever();
}

void
tg_fail(const char *fmt, ...)
{
	va_list ap;

	uart_puts("TESTGUEST FAIL ");
	va_start(ap, fmt);
	tg_vprintf(fmt, ap);
	va_end(ap);
	uart_putc('\n');
	leave();
}

/* Address-dependent so that aliased words are caught. */
static uint64_t
pattern(const volatile uint64_t *p)
{
	return (uint64_t)(uintptr_t)p ^ 0xa5a55a5a0ff0f00fULL;
}

/*
 * Save, write, verify and restore the batched words.  Restoring keeps the
 * test harmless to whatever the VMM or firmware left in RAM.
 */
static void
memtest_flush(void)
{
	volatile uint64_t *bad = NULL;
	uint64_t got = 0;
	unsigned i;

	for (i = 0; i < memtest_n; i++)
		memtest_saved[i] = *memtest_addr[i];
	for (i = 0; i < memtest_n; i++)
		*memtest_addr[i] = pattern(memtest_addr[i]);
	for (i = 0; i < memtest_n; i++)
		if (bad == NULL && *memtest_addr[i] != pattern(memtest_addr[i])) {
			bad = memtest_addr[i];
			got = *bad;
		}
	for (i = 0; i < memtest_n; i++)
		*memtest_addr[i] = memtest_saved[i];
	memtest_n = 0;
	if (bad != NULL)
		tg_fail("basic: memory at %p reads 0x%lx, wrote 0x%lx",
		    (void *)bad, got, pattern(bad));
}

/* Tests one word per stride of [start, end), minus low memory and us. */
static uint64_t
memtest_range(uint64_t start, uint64_t end)
{
	uint64_t a, n = 0;

	if (end > IDENT_LIMIT)
		end = IDENT_LIMIT;
	if (start < LOW_MEM)
		start = LOW_MEM;
	a = (start + MEMTEST_STRIDE - 1) & ~(MEMTEST_STRIDE - 1);
	for (; a + 8 <= end; a += MEMTEST_STRIDE) {
		if (a + 8 > (uintptr_t)_start_image &&
		    a < (uintptr_t)_end_image)
			continue;
		memtest_addr[memtest_n++] = phys(a);
		n++;
		if (memtest_n == MEMTEST_CHUNK)
			memtest_flush();
	}
	memtest_flush();
	return n;
}

static void
test_basic(const char *arg)
{
	const struct hvm_memmap_entry *e;
	uint64_t ram = 0, words = 0, above = 0, end;
	volatile uint64_t sum = 0;
	uint32_t i, nram = 0;

	(void)arg;
	if (start_info->version < 1 || start_info->memmap_paddr == 0 ||
	    start_info->memmap_entries == 0)
		tg_fail("basic: no memory map in start_info (version %u)",
		    start_info->version);
	e = phys(start_info->memmap_paddr);
	for (i = 0; i < start_info->memmap_entries; i++) {
		tg_printf("basic: memmap 0x%lx-0x%lx type %u\n", e[i].addr,
		    e[i].addr + e[i].size, e[i].type);
		if (e[i].type != HVM_MEMMAP_RAM)
			continue;
		nram++;
		ram += e[i].size;
		end = e[i].addr + e[i].size;
		if (end > IDENT_LIMIT)
			above += end - (e[i].addr > IDENT_LIMIT ?
			    e[i].addr : IDENT_LIMIT);
		words += memtest_range(e[i].addr, end);
	}
	if (nram == 0)
		tg_fail("basic: no RAM (type 1) entry in memory map");
	tg_printf("basic: %u RAM entries, %lu KiB, %lu words tested ok",
	    nram, ram >> 10, words);
	if (above != 0)
		tg_printf(" (%lu KiB above 4 GiB not tested)", above >> 10);
	uart_putc('\n');

	for (i = 0; i < COUNT_LOOP; i++)
		sum += i;
	if (sum != (uint64_t)COUNT_LOOP * (COUNT_LOOP - 1) / 2)
		tg_fail("basic: count loop summed to %lu", (uint64_t)sum);
	tg_printf("basic: count loop ok\n");
}

static void
test_count(const char *arg)
{
	uint64_t i, n;

	if (parse_u64(arg, &n) != 0)
		tg_fail("count: bad number '%s'", arg);
	for (i = 1; i <= n; i++)
		tg_printf("count: %lu\n", i);
}

/*
 * Touches every page of [64 MiB, 64 MiB + arg MiB) so the host backs it:
 * the range virtio-balloon hands out first, for the host to see its
 * memory come and go.  The range must be RAM in the memory map.
 */
static void
test_fill(const char *arg)
{
	const struct hvm_memmap_entry *e;
	uint64_t mib, end, a, n = 0;
	uint32_t i;

	if (parse_u64(arg, &mib) != 0 || mib == 0 || mib > 4096)
		tg_fail("fill: bad MiB '%s'", arg);
	end = FILL_START + (mib << 20);
	e = phys(start_info->memmap_paddr);
	for (i = 0; i < start_info->memmap_entries; i++)
		if (e[i].type == HVM_MEMMAP_RAM && e[i].addr <= FILL_START &&
		    e[i].addr + e[i].size >= end)
			break;
	if (i == start_info->memmap_entries || end > IDENT_LIMIT)
		tg_fail("fill: 0x%lx-0x%lx is not RAM", FILL_START, end);
	for (a = FILL_START; a < end; a += FILL_PAGE, n++)
		*(volatile uint8_t *)phys(a) = (uint8_t)(n | 1);
	tg_printf("fill: %lu pages touched\n", n);
}

/* Spins about arg seconds (TSC_SECOND is approximate). */
static void
test_pause(const char *arg)
{
	uint64_t s, start;

	if (parse_u64(arg, &s) != 0 || s > 600)
		tg_fail("pause: bad seconds '%s' (0-600)", arg);
	tg_printf("pause: %lu s\n", s);
	start = rdtsc();
	while (rdtsc() - start < s * TSC_SECOND)
		cpu_relax();
}

/* Splits cmdline in place into words; returns the number found. */
static unsigned
split_words(char *s, char **words, unsigned max)
{
	unsigned n = 0;

	for (;;) {
		while (*s == ' ' || *s == '\t' || *s == '\n')
			s++;
		if (*s == '\0')
			return n;
		if (n == max)
			tg_fail("too many words on the command line");
		words[n++] = s;
		while (*s != '\0' && *s != ' ' && *s != '\t' && *s != '\n')
			s++;
		if (*s != '\0')
			*s++ = '\0';
	}
}

static int
parse_exit(const char *word)
{
	if (strcmp(word, "exit=halt") == 0)
		exit_mode = EXIT_HALT;
	else if (strcmp(word, "exit=reboot") == 0)
		exit_mode = EXIT_REBOOT;
	else if (strcmp(word, "exit=triple") == 0)
		exit_mode = EXIT_TRIPLE;
	else if (strcmp(word, "exit=idle") == 0)
		exit_mode = EXIT_IDLE;
	else
		return strncmp(word, "exit=", 5) == 0 ? -1 : 0;
	return 1;
}

static const struct test *
find_test(const char *word, const char **arg)
{
	size_t len;
	unsigned i;

	for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		len = strlen(tests[i].word);
		if (strncmp(word, tests[i].word, len) != 0)
			continue;
		if (!tests[i].has_arg && word[len] == '\0') {
			*arg = NULL;
			return &tests[i];
		}
		if (tests[i].has_arg && word[len] == '=') {
			*arg = word + len + 1;
			return &tests[i];
		}
	}
	return NULL;
}

void
tg_main(uint32_t start_info_paddr)
{
	struct selected sel[MAX_SELECTED];
	char *words[MAX_SELECTED * 2];
	const char *src;
	unsigned i, nwords, nsel = 0;
	size_t len;

	uart_puts("testguest: hello\n");
	start_info = phys(start_info_paddr);
	if (start_info_paddr == 0 || start_info->magic != HVM_START_MAGIC)
		tg_fail("no valid hvm_start_info at 0x%x", start_info_paddr);
	tg_printf("testguest: start_info 0x%x version %u cmdline 0x%lx "
	    "memmap 0x%lx/%u\n", start_info_paddr, start_info->version,
	    start_info->cmdline_paddr, start_info->memmap_paddr,
	    start_info->version >= 1 ? start_info->memmap_entries : 0);

	if (start_info->cmdline_paddr != 0) {
		src = phys(start_info->cmdline_paddr);
		for (len = 0; len < CMDLINE_MAX && src[len] != '\0'; len++)
			;
		if (len == CMDLINE_MAX)
			tg_fail("command line longer than %u bytes",
			    CMDLINE_MAX - 1);
		memcpy(cmdline, src, len + 1);
	}
	tg_printf("testguest: cmdline \"%s\"\n", cmdline);
	nwords = split_words(cmdline, words, MAX_SELECTED * 2);

	/* exit= first, so a later failure already leaves the chosen way;
	 * then options (devices, ports), which tests read wherever they
	 * stand on the line. */
	for (i = 0; i < nwords; i++)
		if (parse_exit(words[i]) < 0)
			tg_fail("unknown word '%s'", words[i]);
	for (i = 0; i < nwords; i++) {
		if (parse_exit(words[i]) > 0 || vdev_option(words[i]))
			continue;
		if (nsel == MAX_SELECTED)
			tg_fail("too many tests on the command line");
		sel[nsel].test = find_test(words[i], &sel[nsel].arg);
		if (sel[nsel].test == NULL)
			tg_fail("unknown word '%s'", words[i]);
		nsel++;
	}
	if (nsel == 0) {
		sel[0].test = &tests[0];
		sel[0].arg = NULL;
		nsel = 1;
	}

	for (i = 0; i < nsel; i++)
		sel[i].test->fn(sel[i].arg);
	uart_puts("TESTGUEST OK\n");
	leave();
}
