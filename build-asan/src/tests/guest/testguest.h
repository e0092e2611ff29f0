/*
 * testguest: a freestanding 64-bit guest used by the KVM-tier tests.
 *
 * Runs in ring 0 with identity-mapped memory (first 4 GiB, 2 MiB pages),
 * general-purpose registers only, no interrupts.  Talks to the host over
 * the 8250 UART at port 0x3f8.
 *
 * Physical layout (keep a VMM's boot data clear of these):
 *   0x8000 - 0x8fff   AP real-mode trampoline (copied there by smp.c)
 *   0x100000 - _end   the image: text, data, bss, page tables, stacks
 */
#ifndef TESTGUEST_H
#define TESTGUEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define TG_LOAD_ADDR	0x100000UL
#define TG_TRAMPOLINE	0x8000UL	/* must match start.S */
#define TG_MAX_CPUS	32		/* must match start.S */

/* Xen PVH start_info (xen/include/public/arch-x86/hvm/start_info.h). */
#define HVM_START_MAGIC	0x336ec578U

struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	/* version >= 1 */
	uint64_t memmap_paddr;
	uint32_t memmap_entries;
	uint32_t reserved;
};

struct hvm_memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;		/* 1 = RAM, as in e820 */
	uint32_t reserved;
};

#define HVM_MEMMAP_RAM	1

/* Symbols from testguest.ld / start.S. */
extern char _start_image[], _end_image[];
extern char tramp_start[], tramp_end[];
extern volatile uint32_t ap_next_slot;

/* Port and MMIO access. */
static inline void
outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t
inb(uint16_t port)
{
	uint8_t v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint32_t
mmio_read32(uint64_t addr)
{
	return *(volatile uint32_t *)addr;
}

static inline void
mmio_write32(uint64_t addr, uint32_t v)
{
	*(volatile uint32_t *)addr = v;
}

static inline uint64_t
rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static inline void
cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

/* uart.c: polled 8250 output. */
void	uart_putc(char c);
void	uart_puts(const char *s);

/* lib.c */
void	*memset(void *d, int c, size_t n);
void	*memcpy(void *d, const void *s, size_t n);
int	 memcmp(const void *a, const void *b, size_t n);
size_t	 strlen(const char *s);
int	 strcmp(const char *a, const char *b);
int	 strncmp(const char *a, const char *b, size_t n);
/* Parses a whole decimal string; 0 on success, -1 if empty/garbage/overflow. */
int	 parse_u64(const char *s, uint64_t *out);
/* printf subset: %s %c %d %u %x %p, with l/ll, width and 0 flag. */
void	 tg_vprintf(const char *fmt, va_list ap);
void	 tg_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Identity-mapped physical address to pointer.  The asm hides the
 * constant from GCC, which otherwise warns about low addresses. */
static inline void *
phys(uint64_t addr)
{
	__asm__("" : "+r"(addr));
	return (void *)addr;
}

/* main.c: print "TESTGUEST FAIL <reason>" and leave as exit= says. */
void	 tg_fail(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

/*
 * Tests, selected by a command-line word; arg is the text after '=' (or
 * NULL).  A test prints its own lines prefixed "<word>: " and calls
 * tg_fail() on failure.
 */
void	 test_smp(const char *arg);

/* start.S */
void	 halt_forever(void) __attribute__((noreturn));
/* smp.c: called by start.S on each AP in long mode, with its stack slot. */
void	 ap_main(uint32_t slot) __attribute__((noreturn));

#endif
