/*
 * The few legacy PC ports a kernel without ACPI touches: the CMOS RTC
 * (read for the wall clock at boot), the i8042 controller and port 0xcf9
 * (the ways Linux resets a PC) and port 0x92, and the POST port 0x80
 * (used for I/O delays).  Runs on the reactor thread.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/vm.h"

#define CMOS_INDEX	0x70
#define CMOS_DATA	0x71
#define CMOS_SIZE	128

/* MC146818 registers. */
#define RTC_SEC		0x00
#define RTC_MIN		0x02
#define RTC_HOUR	0x04
#define RTC_WDAY	0x06
#define RTC_MDAY	0x07
#define RTC_MON		0x08
#define RTC_YEAR	0x09
#define RTC_REG_A	0x0a
#define RTC_REG_B	0x0b
#define RTC_REG_C	0x0c
#define RTC_REG_D	0x0d
#define RTC_CENTURY	0x32

struct legacy {
	struct vm	*vm;
	uint8_t		 cmos_index;
	uint8_t		 cmos[CMOS_SIZE];
};

static uint8_t
bcd(int v)
{
	return (uint8_t)(((v / 10) << 4) | (v % 10));
}

/* The clock registers always show the host's UTC time; the update-in-
 * progress bit is never set, so a reader never has to wait. */
static uint8_t
cmos_read(struct legacy *l, uint8_t reg)
{
	struct tm	tm;
	time_t		t;

	t = time(NULL);
	gmtime_r(&t, &tm);
	switch (reg) {
	case RTC_SEC:
		return bcd(tm.tm_sec);
	case RTC_MIN:
		return bcd(tm.tm_min);
	case RTC_HOUR:
		return bcd(tm.tm_hour);
	case RTC_WDAY:
		return bcd(tm.tm_wday + 1);
	case RTC_MDAY:
		return bcd(tm.tm_mday);
	case RTC_MON:
		return bcd(tm.tm_mon + 1);
	case RTC_YEAR:
		return bcd(tm.tm_year % 100);
	case RTC_CENTURY:
		return bcd((tm.tm_year + 1900) / 100);
	case RTC_REG_A:
		return 0x26;	/* 32.768 kHz time base, 1024 Hz, UIP clear */
	case RTC_REG_B:
		return 0x02;	/* 24-hour, BCD, no interrupts */
	case RTC_REG_C:
		return 0x00;
	case RTC_REG_D:
		return 0x80;	/* valid RAM and time */
	default:
		return l->cmos[reg];
	}
}

static void
legacy_pio(void *opaque, uint16_t port, bool write, uint8_t *data,
    uint8_t size)
{
	struct legacy	*l = opaque;

	if (!write)
		memset(data, 0, size);
	switch (port) {
	case CMOS_INDEX:
		if (write)
			l->cmos_index = data[0] & 0x7f;	/* bit 7: NMI mask */
		break;
	case CMOS_DATA:
		if (write)
			l->cmos[l->cmos_index] = data[0];
		else
			data[0] = cmos_read(l, l->cmos_index);
		break;
	case 0x60:
		break;		/* no keyboard: data reads as 0 */
	case 0x64:
		/* Status 0: input buffer empty, so a reset sequence never
		 * waits; command 0xfe pulses the CPU reset line. */
		if (write && data[0] == 0xfe)
			vm_request_end(l->vm, VM_END_REBOOT,
			    "i8042 reset");
		break;
	case 0x92:
		if (write && (data[0] & 0x01))
			vm_request_end(l->vm, VM_END_REBOOT,
			    "port 0x92 fast reset");
		break;
	case 0xcf9:
		/* Reset control register: bit 2 starts the reset. */
		if (write && (data[0] & 0x04))
			vm_request_end(l->vm, VM_END_REBOOT,
			    "port 0xcf9 reset");
		break;
	default:
		break;		/* 0x80: POST codes and I/O delays */
	}
}

struct legacy *
legacy_create(struct vm *vm)
{
	struct legacy	*l;
	int		 error;

	l = xcalloc(1, sizeof *l);
	l->vm = vm;
	if ((error = vm_pio_register(vm, CMOS_INDEX, 2, legacy_pio, l)) != 0 ||
	    (error = vm_pio_register(vm, 0x60, 1, legacy_pio, l)) != 0 ||
	    (error = vm_pio_register(vm, 0x64, 1, legacy_pio, l)) != 0 ||
	    (error = vm_pio_register(vm, 0x80, 1, legacy_pio, l)) != 0 ||
	    (error = vm_pio_register(vm, 0x92, 1, legacy_pio, l)) != 0 ||
	    (error = vm_pio_register(vm, 0xcf9, 1, legacy_pio, l)) != 0) {
		free(l);
		errno = -error;
		return NULL;
	}
	return l;
}

/*
 * Snapshot blob: magic "LGCY", u32 version, the CMOS index register and
 * the 128 bytes of CMOS RAM (the clock registers in it are never read
 * back: they always show the host's time, which is what a restored
 * guest wants).
 */
#define LEGACY_SAVE_MAGIC	0x5943474c	/* "LGCY" little-endian */
#define LEGACY_SAVE_VERSION	1
#define LEGACY_SAVE_LEN		(4 + 4 + 1 + CMOS_SIZE)

int
legacy_save(struct legacy *l, uint8_t **buf, size_t *len)
{
	uint8_t		*p;
	uint32_t	 w;

	*buf = xreallocarray(*buf, 1, *len + LEGACY_SAVE_LEN);
	p = *buf + *len;
	w = LEGACY_SAVE_MAGIC;
	memcpy(p, &w, 4);
	w = LEGACY_SAVE_VERSION;
	memcpy(p + 4, &w, 4);
	p[8] = l->cmos_index;
	memcpy(p + 9, l->cmos, CMOS_SIZE);
	*len += LEGACY_SAVE_LEN;
	return 0;
}

int
legacy_load(struct legacy *l, const uint8_t *buf, size_t len)
{
	uint32_t	magic, version;

	if (len < 8)
		return -EINVAL;
	memcpy(&magic, buf, 4);
	memcpy(&version, buf + 4, 4);
	if (magic != LEGACY_SAVE_MAGIC)
		return -EINVAL;
	if (version != LEGACY_SAVE_VERSION)
		return -EPROTO;
	if (len != LEGACY_SAVE_LEN || buf[8] >= CMOS_SIZE)
		return -EINVAL;
	l->cmos_index = buf[8];
	memcpy(l->cmos, buf + 9, CMOS_SIZE);
	return 0;
}

void
legacy_free(struct legacy *l)
{
	free(l);
}
