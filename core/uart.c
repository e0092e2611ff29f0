/*
 * An 8250/16550A UART: the machine's console.  Transmission is instant
 * (the THR is always empty), so the model is small: register file,
 * loopback for the kernel's probe, a receive FIFO fed from a host fd,
 * and the interrupt identification logic the Linux 8250 driver relies
 * on for interrupt-driven output.  Runs on the reactor thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/vm.h"

/* Register offsets (PC16550D data sheet, table 2). */
#define UART_RBR	0	/* read, DLAB=0 */
#define UART_THR	0	/* write, DLAB=0 */
#define UART_DLL	0	/* DLAB=1 */
#define UART_IER	1
#define UART_DLM	1	/* DLAB=1 */
#define UART_IIR	2	/* read */
#define UART_FCR	2	/* write */
#define UART_LCR	3
#define UART_MCR	4
#define UART_LSR	5
#define UART_MSR	6
#define UART_SCR	7

#define IER_RDI		0x01
#define IER_THRI	0x02
#define IER_RLSI	0x04
#define IER_MSI		0x08

#define IIR_NO_INT	0x01
#define IIR_THRI	0x02
#define IIR_RDI		0x04
#define IIR_FIFO	0xc0	/* FIFOs enabled: a 16550A */

#define FCR_ENABLE	0x01
#define FCR_CLEAR_RX	0x02

#define LCR_DLAB	0x80

#define MCR_DTR		0x01
#define MCR_RTS		0x02
#define MCR_OUT1	0x04
#define MCR_OUT2	0x08
#define MCR_LOOP	0x10

#define LSR_DR		0x01
#define LSR_THRE	0x20
#define LSR_TEMT	0x40

#define MSR_CTS		0x10
#define MSR_DSR		0x20
#define MSR_RI		0x40
#define MSR_DCD		0x80

#define UART_RX_SIZE	256
#define UART_TX_SIZE	4096

struct uart {
	struct vm		*vm;
	struct reactor		*r;
	uint16_t		 base;
	unsigned		 irq;
	int			 out_fd;
	int			 in_fd;
	struct reactor_fd	*in_ev;
	struct reactor_timer	*settle;
	bool			 settled;	/* listening long enough */
	bool			 in_eof;

	uint8_t			 ier, lcr, mcr, scr, fcr, dll, dlm;
	bool			 thre_pending;
	bool			 irq_level;

	uint8_t			 rx[UART_RX_SIZE];
	unsigned		 rx_head, rx_len;

	uint8_t			 tx[UART_TX_SIZE];
	size_t			 tx_len;
	bool			 flush_posted;
};

static void	uart_in_cb(int, short, void *);
static void	uart_in_watch(struct uart *);

/* Drive the IRQ line from the current interrupt state.  ISA IRQs are
 * edge triggered: a new interrupt is a new rising edge, so the line is
 * lowered whenever nothing is pending. */
static void
uart_update_irq(struct uart *u)
{
	bool	level;

	level = ((u->ier & IER_RDI) && u->rx_len > 0) ||
	    ((u->ier & IER_THRI) && u->thre_pending);
	if (level == u->irq_level)
		return;
	u->irq_level = level;
	log_debug("uart: irq %u %s (ier 0x%02x, rx %u, thre %d)", u->irq,
	    level ? "up" : "down", u->ier, u->rx_len, u->thre_pending);
	hv_irq_line(vm_hv(u->vm), u->irq, level);
}

/* Write out what the guest sent.  A console that went away (closed pipe)
 * does not stop the guest: the output is dropped. */
void
uart_flush(struct uart *u)
{
	size_t	done = 0;
	ssize_t	n;

	while (done < u->tx_len && u->out_fd >= 0) {
		n = write(u->out_fd, u->tx + done, u->tx_len - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN) {
			/* Nonblocking console: wait for it rather than drop
			 * bytes; the console is the log of record. */
			usleep(1000);
			continue;
		}
		if (n <= 0) {
			log_warn("console output");
			u->out_fd = -1;
			break;
		}
		done += n;
	}
	u->tx_len = 0;
}

static void
uart_flush_cb(void *arg)
{
	struct uart	*u = arg;

	u->flush_posted = false;
	uart_flush(u);
}

/* Buffer a byte; write out at a newline, when full, or once the current
 * batch of exits has been handled. */
static void
uart_tx(struct uart *u, uint8_t c)
{
	u->tx[u->tx_len++] = c;
	if (c == '\n' || u->tx_len == UART_TX_SIZE) {
		uart_flush(u);
		return;
	}
	if (!u->flush_posted && reactor_post(u->r, uart_flush_cb, u) == 0)
		u->flush_posted = true;
}

static void
uart_rx_push(struct uart *u, uint8_t c)
{
	if (u->rx_len == UART_RX_SIZE)
		return;		/* overrun: dropped, as hardware would */
	u->rx[(u->rx_head + u->rx_len) % UART_RX_SIZE] = c;
	u->rx_len++;
}

/*
 * Watch the input fd only while the guest listens and the FIFO has room
 * (back-pressure instead of dropping what the host sends).  Listening
 * means what it means to a modem: the terminal raised DTR, which Linux
 * does when a tty on the port is opened, after the FIFO reset of the
 * driver's start-up, and the receive interrupt is on.  That state must
 * also last a moment: the driver's IRQ probe raises DTR and turns every
 * interrupt on for a few accesses, reading RBR on the way, and bytes
 * taken then would be lost.
 */
#define UART_LISTEN_SETTLE_US	20000

static bool
uart_listening(const struct uart *u)
{
	return u->in_fd >= 0 && !u->in_eof && (u->ier & IER_RDI) &&
	    (u->mcr & MCR_DTR);
}

static void
uart_settle_cb(void *arg)
{
	struct uart	*u = arg;

	reactor_del_timer(u->settle);
	u->settle = NULL;
	u->settled = uart_listening(u);
	uart_in_watch(u);
}

static void
uart_in_watch(struct uart *u)
{
	bool	want;

	if (!uart_listening(u))
		u->settled = false;
	else if (!u->settled && u->settle == NULL) {
		u->settle = reactor_add_timer(u->r, UART_LISTEN_SETTLE_US,
		    false, uart_settle_cb, u);
		if (u->settle == NULL)
			log_warn("console input timer");
	}
	want = u->settled && u->rx_len < UART_RX_SIZE;
	if (want && u->in_ev == NULL) {
		u->in_ev = reactor_add_fd(u->r, u->in_fd, REACTOR_READ,
		    uart_in_cb, u);
		if (u->in_ev == NULL)
			log_warn("console input");
	} else if (!want && u->in_ev != NULL) {
		reactor_del_fd(u->in_ev);
		u->in_ev = NULL;
	}
}

static void
uart_in_cb(int fd, short what, void *arg)
{
	struct uart	*u = arg;
	uint8_t		 buf[UART_RX_SIZE];
	ssize_t		 n, i;

	n = read(fd, buf, UART_RX_SIZE - u->rx_len);
	if (n == -1 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0)
		u->in_eof = true;
	for (i = 0; i < n; i++)
		uart_rx_push(u, buf[i]);
	uart_in_watch(u);
	uart_update_irq(u);
}

static uint8_t
uart_read(struct uart *u, unsigned reg)
{
	uint8_t	v = 0;

	switch (reg) {
	case UART_RBR:
		if (u->lcr & LCR_DLAB)
			return u->dll;
		if (u->rx_len > 0) {
			v = u->rx[u->rx_head];
			u->rx_head = (u->rx_head + 1) % UART_RX_SIZE;
			u->rx_len--;
			uart_in_watch(u);
		}
		break;
	case UART_IER:
		if (u->lcr & LCR_DLAB)
			return u->dlm;
		return u->ier;
	case UART_IIR:
		/* Highest priority first: received data, then THRE.
		 * Reading IIR while it reports THRE clears THRE. */
		if ((u->ier & IER_RDI) && u->rx_len > 0)
			v = IIR_RDI;
		else if ((u->ier & IER_THRI) && u->thre_pending) {
			v = IIR_THRI;
			u->thre_pending = false;
		} else
			v = IIR_NO_INT;
		if (u->fcr & FCR_ENABLE)
			v |= IIR_FIFO;
		break;
	case UART_LCR:
		return u->lcr;
	case UART_MCR:
		return u->mcr;
	case UART_LSR:
		v = LSR_THRE | LSR_TEMT;
		if (u->rx_len > 0)
			v |= LSR_DR;
		break;
	case UART_MSR:
		if (u->mcr & MCR_LOOP) {
			/* Loopback wires the modem outputs to the inputs;
			 * the kernel's probe checks exactly this. */
			if (u->mcr & MCR_RTS)
				v |= MSR_CTS;
			if (u->mcr & MCR_DTR)
				v |= MSR_DSR;
			if (u->mcr & MCR_OUT1)
				v |= MSR_RI;
			if (u->mcr & MCR_OUT2)
				v |= MSR_DCD;
		} else
			v = MSR_DCD | MSR_DSR | MSR_CTS;
		break;
	case UART_SCR:
		return u->scr;
	}
	return v;
}

static void
uart_write(struct uart *u, unsigned reg, uint8_t v)
{
	switch (reg) {
	case UART_THR:
		if (u->lcr & LCR_DLAB) {
			u->dll = v;
			return;
		}
		if (u->mcr & MCR_LOOP)
			uart_rx_push(u, v);
		else
			uart_tx(u, v);
		/* Sent at once: the holding register is empty again. */
		u->thre_pending = true;
		break;
	case UART_IER:
		if (u->lcr & LCR_DLAB) {
			u->dlm = v;
			return;
		}
		/* Enabling THRI while the THR is empty raises THRE. */
		if (!(u->ier & IER_THRI) && (v & IER_THRI))
			u->thre_pending = true;
		u->ier = v & 0x0f;
		uart_in_watch(u);
		break;
	case UART_FCR:
		u->fcr = v & FCR_ENABLE;
		if (v & FCR_CLEAR_RX) {
			u->rx_head = u->rx_len = 0;
			uart_in_watch(u);
		}
		break;
	case UART_LCR:
		u->lcr = v;
		break;
	case UART_MCR:
		u->mcr = v & 0x1f;
		uart_in_watch(u);
		break;
	case UART_SCR:
		u->scr = v;
		break;
	default:
		break;	/* LSR and MSR are read-only */
	}
}

static void
uart_pio(void *opaque, uint16_t port, bool write, uint8_t *data,
    uint8_t size)
{
	struct uart	*u = opaque;
	unsigned	 reg = port - u->base;

	/* The UART is a byte device; wider accesses touch the first
	 * register only and read back ones in the rest. */
	if (!write && size > 1)
		memset(data + 1, 0xff, size - 1);
	if (write)
		uart_write(u, reg, data[0]);
	else
		data[0] = uart_read(u, reg);
	uart_update_irq(u);
}

struct uart *
uart_create(struct vm *vm, struct reactor *r, uint16_t base, unsigned irq,
    int out_fd, int in_fd)
{
	struct uart	*u;

	u = xcalloc(1, sizeof *u);
	u->vm = vm;
	u->r = r;
	u->base = base;
	u->irq = irq;
	u->out_fd = out_fd;
	u->in_fd = in_fd;
	u->mcr = MCR_OUT2;
	if (vm_pio_register(vm, base, 8, uart_pio, u) != 0) {
		free(u);
		return NULL;
	}
	uart_in_watch(u);
	return u;
}

/*
 * Snapshot blob: magic "UART", u32 version, then the register file
 * (IER LCR MCR SCR FCR DLL DLM), the pending THRE flag and the IRQ line
 * level, then u16 RX FIFO length and its bytes oldest first.  What the
 * host has not yet written out of the TX buffer is flushed, not saved.
 */
#define UART_SAVE_MAGIC		0x54524155	/* "UART" little-endian */
#define UART_SAVE_VERSION	1
#define UART_SAVE_FIXED		(4 + 4 + 7 + 2 + 2)

int
uart_save(struct uart *u, uint8_t **buf, size_t *len)
{
	uint8_t		*p;
	unsigned	 i;
	uint32_t	 w;

	uart_flush(u);
	*buf = xreallocarray(*buf, 1, *len + UART_SAVE_FIXED + u->rx_len);
	p = *buf + *len;
	w = UART_SAVE_MAGIC;
	memcpy(p, &w, 4);
	w = UART_SAVE_VERSION;
	memcpy(p + 4, &w, 4);
	p += 8;
	*p++ = u->ier;
	*p++ = u->lcr;
	*p++ = u->mcr;
	*p++ = u->scr;
	*p++ = u->fcr;
	*p++ = u->dll;
	*p++ = u->dlm;
	*p++ = u->thre_pending;
	*p++ = u->irq_level;
	*p++ = (uint8_t)(u->rx_len & 0xff);
	*p++ = (uint8_t)(u->rx_len >> 8);
	for (i = 0; i < u->rx_len; i++)
		*p++ = u->rx[(u->rx_head + i) % UART_RX_SIZE];
	*len += UART_SAVE_FIXED + u->rx_len;
	return 0;
}

/*
 * Every field is checked against what the guest could have written, so
 * a blob can only produce a register state the guest could have made.
 * The IRQ line is driven to its saved level again: the irqchip state
 * restored beside it keeps whether the edge was already taken, and KVM
 * ignores a rising edge on a line whose request is still pending.
 */
int
uart_load(struct uart *u, const uint8_t *buf, size_t len)
{
	const uint8_t	*p = buf;
	uint32_t	 magic, version;
	unsigned	 rx_len;

	if (len < 8)
		return -EINVAL;
	memcpy(&magic, p, 4);
	memcpy(&version, p + 4, 4);
	if (magic != UART_SAVE_MAGIC)
		return -EINVAL;
	if (version != UART_SAVE_VERSION)
		return -EPROTO;
	if (len < UART_SAVE_FIXED)
		return -EINVAL;
	p += 8;
	rx_len = p[9] | (unsigned)p[10] << 8;
	if (rx_len > UART_RX_SIZE || len != UART_SAVE_FIXED + rx_len ||
	    (p[0] & ~0x0f) != 0 || (p[2] & ~0x1f) != 0 ||
	    (p[4] & ~FCR_ENABLE) != 0 || p[7] > 1 || p[8] > 1)
		return -EINVAL;
	u->ier = p[0];
	u->lcr = p[1];
	u->mcr = p[2];
	u->scr = p[3];
	u->fcr = p[4];
	u->dll = p[5];
	u->dlm = p[6];
	u->thre_pending = p[7];
	u->irq_level = p[8];
	memcpy(u->rx, p + UART_SAVE_FIXED - 8, rx_len);
	u->rx_head = 0;
	u->rx_len = rx_len;
	u->settled = false;
	if (u->irq_level)
		hv_irq_line(vm_hv(u->vm), u->irq, 1);
	uart_update_irq(u);
	uart_in_watch(u);
	return 0;
}

void
uart_free(struct uart *u)
{
	if (u == NULL)
		return;
	uart_flush(u);
	if (u->in_ev != NULL)
		reactor_del_fd(u->in_ev);
	/* A posted flush may still be queued: it must not find freed
	 * memory, so the reactor drains posts before anything is freed
	 * (vm_free runs from the owner's end callback or before start). */
	free(u);
}
