/* Freestanding string helpers and a small printf for testguest. */
#include "testguest.h"

/* GCC may emit calls to memset/memcpy/memcmp even when freestanding. */
void *
memset(void *d, int c, size_t n)
{
	unsigned char *p = d;

	while (n-- > 0)
		*p++ = (unsigned char)c;
	return d;
}

void *
memcpy(void *d, const void *s, size_t n)
{
	unsigned char *dp = d;
	const unsigned char *sp = s;

	while (n-- > 0)
		*dp++ = *sp++;
	return d;
}

int
memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *ap = a, *bp = b;

	for (; n > 0; n--, ap++, bp++)
		if (*ap != *bp)
			return *ap - *bp;
	return 0;
}

size_t
strlen(const char *s)
{
	size_t n = 0;

	while (s[n] != '\0')
		n++;
	return n;
}

int
strcmp(const char *a, const char *b)
{
	while (*a != '\0' && *a == *b) {
		a++;
		b++;
	}
	return (unsigned char)*a - (unsigned char)*b;
}

int
strncmp(const char *a, const char *b, size_t n)
{
	for (; n > 0; n--, a++, b++) {
		if (*a != *b)
			return (unsigned char)*a - (unsigned char)*b;
		if (*a == '\0')
			break;
	}
	return 0;
}

int
parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

static void
put_num(uint64_t v, unsigned base, int neg, int width, char pad)
{
	char buf[24];
	int n = 0;

	do {
		buf[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v != 0);
	if (neg)
		buf[n++] = '-';
	for (; width > n; width--)
		uart_putc(pad);
	while (n > 0)
		uart_putc(buf[--n]);
}

void
tg_vprintf(const char *fmt, va_list ap)
{
	const char *s;
	int64_t sv;
	uint64_t uv;
	int lng, width;
	char pad;

	for (; *fmt != '\0'; fmt++) {
		if (*fmt != '%') {
			uart_putc(*fmt);
			continue;
		}
		fmt++;
		pad = ' ';
		width = 0;
		lng = 0;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l') {
			lng = 1;
			fmt++;
		}
		switch (*fmt) {
		case 's':
			s = va_arg(ap, const char *);
			uart_puts(s != NULL ? s : "(null)");
			break;
		case 'c':
			uart_putc((char)va_arg(ap, int));
			break;
		case 'd':
			sv = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			uv = sv < 0 ? -(uint64_t)sv : (uint64_t)sv;
			put_num(uv, 10, sv < 0, width, pad);
			break;
		case 'u':
		case 'x':
			uv = lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
			put_num(uv, *fmt == 'u' ? 10 : 16, 0, width, pad);
			break;
		case 'p':
			uart_puts("0x");
			put_num((uint64_t)va_arg(ap, void *), 16, 0, width, pad);
			break;
		case '%':
			uart_putc('%');
			break;
		case '\0':
			return;
		default:
			uart_putc('%');
			uart_putc(*fmt);
			break;
		}
	}
}

void
tg_printf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tg_vprintf(fmt, ap);
	va_end(ap);
}
