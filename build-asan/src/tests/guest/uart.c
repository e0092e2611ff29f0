/*
 * Polled output on the 8250 UART at COM1.  The UART is not programmed: a
 * VMM's 8250 starts usable, and writing the divisor latch to a VMM that
 * does not model DLAB would print junk.
 */
#include "testguest.h"

#define COM1		0x3f8
#define COM1_LSR	(COM1 + 5)
#define LSR_THRE	0x20
/* Bound the wait so a VMM that never sets THRE cannot hang the guest. */
#define THRE_SPINS	100000

void
uart_putc(char c)
{
	int i;

	for (i = 0; i < THRE_SPINS; i++)
		if (inb(COM1_LSR) & LSR_THRE)
			break;
	outb(COM1, (uint8_t)c);
}

void
uart_puts(const char *s)
{
	while (*s != '\0')
		uart_putc(*s++);
}
