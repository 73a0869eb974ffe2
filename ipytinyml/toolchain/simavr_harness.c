/*
 * simavr_harness.c - the ipytinyml virtual board.
 *
 * Runs an AVR ELF (an Arduino Uno sketch) in simavr with UART0 on a
 * pseudo-terminal, paced to real time.  Built and started by
 * ipytinyml/toolchain/sim.py; usable by hand too:
 *
 *   simavr_harness [options] [firmware.elf]
 *     --bootloader HEX    load this Intel HEX (the Uno's optiboot) where it
 *                         says, at the top of flash, and start there, as the
 *                         BOOTRST fuse does; the ELF is then optional (an
 *                         empty chip takes its sketch through the bootloader)
 *     --reset-on-open     every open of the pty resets the AVR, as DTR does
 *                         on an Uno; the AVR is held until the first open
 *     --mcu NAME          AVR part (default atmega328p)
 *     --freq HZ           clock (default 16000000)
 *     --speed X           sim time / wall time; 1 = real time (default),
 *                         0 = as fast as the host allows
 *     --wait-open         hold the AVR until the pty is first opened, then
 *                         wait --start-delay-ms and start it, so the first
 *                         opener sees the boot banner (pyserial discards
 *                         pending input when it opens a port)
 *     --start-delay-ms N  see --wait-open (default 200)
 *     --parent-pid PID    exit when PID is no longer our parent
 *     --pdeathsig         also ask Linux for SIGTERM when the parent dies
 *                         (PR_SET_PDEATHSIG fires when the *thread* that
 *                         forked us exits, so the caller decides)
 *
 * stdout is a line protocol for the owner; anything simavr itself prints
 * goes to stderr:
 *   PTY <path>            first line, once the pty exists
 *   RUN                   the AVR started executing
 *   CYCLES <n>            answer to "cycles"
 *   RESET <n>             answer to "reset" (cycle count at the reset)
 *   BOOT <why> <n>        the AVR was reset: open (the port was opened, with
 *                         --reset-on-open), command ("reset"), watchdog
 *   IDLE empty            the bootloader jumped to an empty application
 *                         section: the AVR waits for the next reset
 *   ERR <text>            bad command
 *   EXIT <reason> ...     last line: eof | quit | signal N | parent |
 *                         crashed pc=.. cycle=.. | done pc=.. cycle=..
 * stdin takes one command a line: cycles, reset, quit.  EOF on stdin (the
 * owner died or closed the pipe), SIGTERM, SIGINT and SIGHUP end the
 * harness cleanly.  Exit status: 0 clean, 1 setup error, 2 the AVR crashed,
 * 3 the AVR stopped (sleep with interrupts off).
 *
 * Design notes:
 * - One thread.  UART0 is bridged to the pty here rather than with
 *   libsimavrparts' uart_pty, whose helper thread wakes every 500 us
 *   (about 4% of a core with nothing to do) and hands input to the AVR
 *   only from a 1 kHz timer.  Here everything waits in one ppoll() on
 *   stdin, a signalfd, the pty and (with --wait-open) an inotify watch.
 * - Pacing: when the sketch sleeps (SLEEP_MODE_IDLE), simavr calls our
 *   sleep hook with the cycles until its next timer event and we block
 *   until the wall clock gets there, or until input arrives: then the sleep
 *   ends early, at the current wall time.  When the sketch runs, every 0.1
 *   ms of sim time we read pending host input and compare sim time with
 *   wall time, blocking while it is ahead.  So sim time is never more than
 *   about 0.3 ms (SLEEP_SLACK_NS plus one check) ahead of wall time; if the
 *   host falls behind by more than MAX_LAG_NS (machine suspended or
 *   overloaded) the lag is dropped, not caught up.
 * - The pty slave stays open in here, so the AVR's output is kept while no
 *   one has the port open (up to the kernel's buffer plus TX_RING bytes;
 *   then it is dropped, as a real USB-serial bridge would), and a host
 *   closing and reopening the port does not hang up the line.
 * - Reset on open (--reset-on-open): a real Uno resets when the host opens
 *   its port (DTR, through a capacitor on RESET).  A pty carries no DTR, so
 *   the open itself is the signal: an inotify IN_OPEN watch on the slave
 *   device, read in the same ppoll().  The reset sets MCUSR.EXTRF, as the
 *   RESET pin does; the Uno's optiboot only stays in the bootloader after
 *   an external reset (without EXTRF it jumps straight to the sketch).
 *   Without the option an open does not reset the AVR; "reset" on stdin
 *   does, also with EXTRF (the reset button).
 * - Bootloader (--bootloader): the HEX goes where its records say (0x7E00
 *   for optiboot on the ATmega328P) and reset_pc points there.  SPM writes
 *   from the bootloader program simavr's flash array, which lives as long as
 *   this process: uploads persist across resets, not across restarts.  A
 *   jump to an erased application section (word 0 is 0xFFFF) parks the AVR
 *   until the next reset instead of letting simavr crash on the 0xFFFF
 *   opcode (a real chip would slide through erased flash into the
 *   bootloader, which jumps to the empty application again: nothing
 *   observable happens until the next reset there either).
 * - Watchdog: ours, not simavr's; see the comment above wdt_write().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_irq.h"
#include "sim_time.h"
#include "avr_timer.h"
#include "avr_uart.h"
#include "avr_watchdog.h"

#define MAX_LAG_NS (100ull * 1000 * 1000)   /* drop lag beyond 100 ms */
#define SLEEP_SLACK_NS (200ull * 1000)      /* block only when >= 0.2 ms ahead */
#define TX_RING 65536                       /* AVR -> host bytes kept */
#define RX_BUF 4096                         /* host -> AVR bytes read at once */

/* owner protocol and control */
static FILE *g_proto;                       /* the real stdout */
static int g_signal;                        /* SIGTERM/SIGINT/SIGHUP received */
static int g_signal_fd = -1;
static int g_stdin_open = 1;
static char g_cmd[128];
static size_t g_cmd_len;
static int g_cmd_overflow;
static int g_quit;                          /* "quit" or stdin EOF */
static int g_parent_gone;
static int g_reset_pending;
static pid_t g_parent_pid;
static int g_inotify_fd = -1;               /* --wait-open, --reset-on-open */
static int g_open_seen;                     /* an IN_OPEN event arrived */
static int g_reset_on_open;

/* the chip around the program: bootloader, held state, resets */
static int g_boot_mode;                     /* --bootloader: reset_pc is the boot section */
static int g_held;                          /* not executing: before the first open, or parked */
static int g_started;                       /* RUN was printed */

/* the AVR and its clock */
static avr_t *g_avr;
static double g_speed = 1.0;
static uint64_t g_base_wall_ns;             /* wall time at g_base_cycle */
static avr_cycle_count_t g_base_cycle;

/* UART0 <-> pty */
static int g_pty_master = -1, g_pty_slave = -1;
static char g_pty_name[PATH_MAX];
static avr_irq_t *g_uart_input;             /* raise a byte here to send it to the AVR */
static int g_uart_xon;                      /* the UART has room for input */
static uint8_t g_rx[RX_BUF];                /* read from the host, not yet given */
static size_t g_rx_pos, g_rx_len;
static uint8_t g_tx[TX_RING];               /* from the AVR, not yet written */
static size_t g_tx_head, g_tx_len;
static unsigned long long g_tx_dropped;

/* ------------------------------------------------------------------ */

static uint64_t wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void proto(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(g_proto, fmt, ap);
	va_end(ap);
	fputc('\n', g_proto);
	fflush(g_proto);
}

static void logger(avr_t *avr, const int level, const char *fmt, va_list ap)
{
	if (!avr || avr->log >= level)
		vfprintf(stderr, fmt, ap);
}

/* Sim time (ns since the base) of cycle c, at the configured speed. */
static uint64_t sim_ns(avr_cycle_count_t c)
{
	double cycles = (double)(c - g_base_cycle);
	return (uint64_t)(cycles * 1e9 / ((double)g_avr->frequency * g_speed));
}

static avr_cycle_count_t ns_to_cycles(uint64_t ns)
{
	return (avr_cycle_count_t)((double)ns * (double)g_avr->frequency * g_speed / 1e9);
}

static void rebase(void)
{
	g_base_wall_ns = wall_ns();
	g_base_cycle = g_avr->cycle;
}

/* ---------------------------- UART bridge ------------------------- */

static void uart_output_hook(struct avr_irq_t *irq, uint32_t value, void *param)
{
	(void)irq;
	(void)param;
	if (g_tx_len == TX_RING) {
		g_tx_dropped++;
		return;
	}
	g_tx[(g_tx_head + g_tx_len) % TX_RING] = (uint8_t)value;
	g_tx_len++;
}

/* Give the AVR what the host sent, as long as its UART has room. */
static void pump_rx(void)
{
	while (g_uart_xon && g_rx_pos < g_rx_len) {
		uint8_t byte = g_rx[g_rx_pos++];
		avr_raise_irq(g_uart_input, byte);   /* may call the XOFF hook */
	}
	if (g_rx_pos == g_rx_len)
		g_rx_pos = g_rx_len = 0;
}

static void uart_xon_hook(struct avr_irq_t *irq, uint32_t value, void *param)
{
	(void)irq;
	(void)value;
	(void)param;
	g_uart_xon = 1;
	pump_rx();
}

static void uart_xoff_hook(struct avr_irq_t *irq, uint32_t value, void *param)
{
	(void)irq;
	(void)value;
	(void)param;
	g_uart_xon = 0;
}

static int rx_pending(void)
{
	return g_uart_xon && g_rx_pos < g_rx_len;
}

static void pty_read(void)
{
	if (g_rx_len != 0)
		return;
	ssize_t r = read(g_pty_master, g_rx, sizeof(g_rx));
	if (r > 0) {
		g_rx_pos = 0;
		g_rx_len = (size_t)r;
	}
}

static void pty_flush(void)
{
	while (g_tx_len) {
		size_t chunk = TX_RING - g_tx_head;
		if (chunk > g_tx_len)
			chunk = g_tx_len;
		ssize_t w = write(g_pty_master, g_tx + g_tx_head, chunk);
		if (w <= 0)
			return;     /* EAGAIN: the line is full, keep it for later */
		g_tx_head = (g_tx_head + (size_t)w) % TX_RING;
		g_tx_len -= (size_t)w;
	}
	g_tx_head = 0;
}

static int uart_bridge_init(avr_t *avr)
{
	if (openpty(&g_pty_master, &g_pty_slave, g_pty_name, NULL, NULL) < 0) {
		fprintf(stderr, "simavr_harness: cannot create a pseudo-terminal: %s\n", strerror(errno));
		return -1;
	}
	struct termios tio;
	if (tcgetattr(g_pty_slave, &tio) == 0) {
		cfmakeraw(&tio);
		cfsetspeed(&tio, B115200);
		tcsetattr(g_pty_slave, TCSANOW, &tio);
	}
	fcntl(g_pty_master, F_SETFL, fcntl(g_pty_master, F_GETFL) | O_NONBLOCK);
	fcntl(g_pty_master, F_SETFD, FD_CLOEXEC);
	fcntl(g_pty_slave, F_SETFD, FD_CLOEXEC);

	/* No console echo of UART bytes, and no usleep() on every read of
	 * UCSR0A with nothing pending ("poll sleep"): Serial.flush() spins on
	 * UCSR0A, which would run far below real time.  We pace ourselves. */
	uint32_t flags = 0;
	avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
	flags &= ~(uint32_t)(AVR_UART_FLAG_POLL_SLEEP | AVR_UART_FLAG_STDIO);
	avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);

	avr_irq_t *out = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT);
	g_uart_input = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
	avr_irq_t *xon = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON);
	avr_irq_t *xoff = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF);
	if (!out || !g_uart_input || !xon || !xoff) {
		fprintf(stderr, "simavr_harness: this AVR has no UART0\n");
		return -1;
	}
	avr_irq_register_notify(out, uart_output_hook, NULL);
	avr_irq_register_notify(xon, uart_xon_hook, NULL);
	avr_irq_register_notify(xoff, uart_xoff_hook, NULL);
	return 0;
}

/* --------------------------- owner commands ----------------------- */

static void handle_command(char *line)
{
	size_t n = strlen(line);
	while (n && (line[n - 1] == '\r' || line[n - 1] == ' '))
		line[--n] = '\0';
	if (n == 0)
		return;
	if (strcmp(line, "cycles") == 0)
		proto("CYCLES %llu", (unsigned long long)g_avr->cycle);
	else if (strcmp(line, "reset") == 0)
		g_reset_pending = 1;
	else if (strcmp(line, "quit") == 0)
		g_quit = 1;
	else
		proto("ERR unknown command (cycles, reset, quit)");
}

static void read_stdin(void)
{
	char buf[256];
	ssize_t r = read(STDIN_FILENO, buf, sizeof(buf));
	if (r < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return;
		r = 0;
	}
	if (r == 0) {
		g_stdin_open = 0;
		g_quit = 1;
		return;
	}
	for (ssize_t i = 0; i < r; i++) {
		if (buf[i] == '\n') {
			g_cmd[g_cmd_len] = '\0';
			if (g_cmd_overflow)
				proto("ERR command too long");
			else
				handle_command(g_cmd);
			g_cmd_len = 0;
			g_cmd_overflow = 0;
		} else if (g_cmd_len < sizeof(g_cmd) - 1) {
			g_cmd[g_cmd_len++] = buf[i];
		} else {
			g_cmd_overflow = 1;
		}
	}
}

/* Drain the inotify watch on the pty slave; any IN_OPEN counts. */
static void read_opens(void)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;
	while ((n = read(g_inotify_fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			if (ev->mask & IN_OPEN)
				g_open_seen = 1;
			p += sizeof(*ev) + ev->len;
		}
	}
}

static int must_stop(void)
{
	return g_signal || g_quit || g_parent_gone || g_reset_pending
		|| (g_reset_on_open && g_open_seen);
}

/* ------------------------------ waiting --------------------------- */

/*
 * Wait up to timeout_ns (< 0: no limit) for something to do, and do it:
 * owner commands, signals, pty input and output.  Returns early on any
 * event; the callers loop.
 */
static void wait_events(int64_t timeout_ns)
{
	pty_flush();

	struct pollfd fds[4];
	nfds_t n = 0;
	fds[n].fd = g_signal_fd;
	fds[n].events = POLLIN;
	n++;
	fds[n].fd = g_pty_master;
	fds[n].events = (short)((g_rx_len == 0 ? POLLIN : 0) | (g_tx_len ? POLLOUT : 0));
	n++;
	nfds_t stdin_at = n;
	if (g_stdin_open) {
		fds[n].fd = STDIN_FILENO;
		fds[n].events = POLLIN;
		n++;
	}
	if (g_inotify_fd >= 0) {
		fds[n].fd = g_inotify_fd;
		fds[n].events = POLLIN;
		n++;
	}
	struct timespec ts, *tsp = NULL;
	if (timeout_ns >= 0) {
		ts.tv_sec = (time_t)(timeout_ns / 1000000000ll);
		ts.tv_nsec = (long)(timeout_ns % 1000000000ll);
		tsp = &ts;
	}
	if (ppoll(fds, n, tsp, NULL) <= 0)
		return;
	if (fds[0].revents) {
		struct signalfd_siginfo si;
		if (read(g_signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			g_signal = (int)si.ssi_signo;
	}
	if (fds[1].revents & POLLIN)
		pty_read();
	if (fds[1].revents & POLLOUT)
		pty_flush();
	if (g_stdin_open && fds[stdin_at].revents)
		read_stdin();
	if (g_inotify_fd >= 0 && fds[n - 1].fd == g_inotify_fd && fds[n - 1].revents)
		read_opens();
}

/* Non-blocking check, about once per simulated millisecond. */
static void service(void)
{
	wait_events(0);
	if (g_parent_pid && getppid() != g_parent_pid)
		g_parent_gone = 1;
}

/*
 * Block (serving events) until the wall clock reaches the sim time of cycle
 * c.  Returns 1 if it returned early because host input is waiting for the
 * AVR, 0 otherwise.
 */
static int pace_to(avr_cycle_count_t c)
{
	if (g_speed <= 0)
		return 0;
	for (;;) {
		uint64_t target = sim_ns(c);
		uint64_t now = wall_ns() - g_base_wall_ns;
		if (now + SLEEP_SLACK_NS >= target) {
			/* close enough: shorter sleeps cost more than they are worth,
			 * and deadlines are absolute, so the next one catches up */
			if (now > target + MAX_LAG_NS)
				g_base_wall_ns += now - target;   /* forget a long stall */
			return 0;
		}
		wait_events((int64_t)(target - now));
		if (must_stop())
			return 0;
		if (rx_pending())
			return 1;
	}
}

/*
 * simavr's sleep hook: the AVR sleeps for how_long cycles (until its next
 * timer event); the core adds how_long + 1 to avr->cycle when we return.
 * If host input arrives first, end the sleep at the current wall time by
 * taking back the cycles not slept.  Output waiting for the host is written
 * first (otherwise it goes out once per simulated millisecond).
 */
static void sleep_hook(avr_t *avr, avr_cycle_count_t how_long)
{
	avr_cycle_count_t entry = avr->cycle;
	if (g_tx_len)
		pty_flush();    /* the sketch is idle: hand over what it wrote now */
	if (pace_to(entry + how_long)) {
		/* wake at the wall clock's cycle, or at once if sim time is ahead */
		avr_cycle_count_t now = g_base_cycle + ns_to_cycles(wall_ns() - g_base_wall_ns);
		if (now < entry)
			now = entry;
		if (now < entry + how_long)
			avr->cycle -= entry + how_long - now;
	}
}

/* ------------------------------ timers ---------------------------- */

/*
 * simavr 1.6 has no phase-correct PWM modes for the ATmega328P timers
 * (buserror/simavr#442), and the Arduino core's init() puts Timer1 and
 * Timer2 in exactly that mode (WGM=1, for analogWrite).  An unknown mode
 * gets TOP=0: a spurious overflow event every 64 cycles on each timer,
 * ~500,000 events per second that keep waking a sleeping sketch and cost
 * a quarter of a core.  Map the missing phase-correct modes to simavr's
 * "fc_pwm" kind with the right TOP, so those timers tick once per period.
 * (fc_pwm counts up only, so that overflow comes twice as often as on the
 * chip; the Arduino core does not use it.)
 */
static void patch_timer_modes(avr_t *avr)
{
	for (avr_io_t *io = avr->io_port; io; io = io->next) {
		if (!io->kind || strcmp(io->kind, "timer") != 0)
			continue;
		avr_timer_t *t = (avr_timer_t *)io;
		int sixteen_bit = t->r_tcnth != 0;
		/* WGM 1 (8-bit), and on 16-bit timers WGM 2 and 3 (9/10-bit) */
		for (int mode = 1; mode <= (sixteen_bit ? 3 : 1); mode++) {
			if (t->wgm_op[mode].kind != avr_timer_wgm_none)
				continue;
			t->wgm_op[mode].kind = avr_timer_wgm_fc_pwm;
			t->wgm_op[mode].size = (uint32_t)(7 + mode);
		}
	}
}

/* ----------------------------- watchdog --------------------------- */

/*
 * The watchdog is modelled here, on simavr's registers but not with its
 * code.  The Uno's bootloader starts the sketch through the watchdog: after
 * an upload optiboot arms it at 16 ms and waits; the timeout resets the chip
 * with MCUSR.WDRF set, which on the chip also forces WDE on (prescaler 0,
 * 16 ms); optiboot sees WDRF, clears MCUSR, turns the watchdog off with the
 * timed sequence (WDTCSR = WDCE|WDE, then within 4 cycles WDTCSR = 0) and
 * jumps to the sketch, which then runs until the next reset.
 *
 * The reset loop seen in a first prototype (~100 banners/s after an upload)
 * was not simavr's doing: it came from Debian 12's optiboot_atmega328.hex,
 * whose version word at 0x7FFE overwrites the first "st" of
 * watchdogConfig() and whose appStart() lies past the end of flash, so the
 * timed sequence never runs and the watchdog keeps resetting the sketch.
 * Measured: that hex, loaded leniently, loops with this model too; a
 * correct build of the same source (optiboot.py) boots once with either.
 * The loader above now refuses such a hex.
 *
 * We still take WDTCSR writes, the WDR instruction and the watchdog's part
 * of a reset away from simavr 1.6's module, so that the chip's rules hold
 * whatever the program does, and so the harness sees each watchdog reset:
 * simavr resets from inside its own run callback, invisible to us (no BOOT
 * line to count resets by, and our UART bridge would keep feeding a UART
 * that was just reset); and its WDTCSR handler reads the "old" prescaler
 * after storing the new value, so changing the timeout while the watchdog
 * stays on keeps the old one (its WDCE handling has a history of fixes:
 * simavr PR #110, issue #551).  What we do, from the ATmega328P datasheet
 * ("Watchdog Timer", safety level 1: WDTON unprogrammed, as on the Uno):
 *
 * - WDE can be set at any time; it is cleared, and WDP changed, only by a
 *   write with WDCE clear within 4 cycles of a write of WDCE|WDE.  While
 *   MCUSR.WDRF is set, WDE stays set.
 * - WDIE is freely writable; WDIF is cleared by writing one to it.
 * - A timeout with WDIE set raises the WDT interrupt (with WDE also set,
 *   the next timeout resets unless software sets WDIE again: the hardware
 *   clears WDIE when the interrupt runs; we count from the raise).  With
 *   WDE alone it resets the chip: flagged here, and done by the main loop
 *   between instructions (not from inside simavr's timer processing).
 * - After a watchdog reset: MCUSR.WDRF set, WDE on, prescaler 0 (16 ms).
 *   After any other reset the watchdog is off.
 * - WDR restarts the count.
 */
static avr_watchdog_t *g_wdt;
static int g_wdce_open;                     /* a WDCE|WDE write opened the window */
static avr_cycle_count_t g_wdce_until;      /* ... which closes after this cycle */
static avr_cycle_count_t g_wdt_period;      /* cycles per timeout; 0 = stopped */
static int g_wdt_irq_raised;                /* interrupt-and-reset mode: next timeout resets */
static int g_wdt_reset_pending;             /* a timeout in reset mode */
static int g_wdt_resetting;                 /* inside that reset */
static unsigned long long g_wdt_resets;

#define RB_MASK(rb) ((uint8_t)((rb).mask << (rb).bit))

static avr_cycle_count_t wdt_period_cycles(avr_t *avr)
{
	unsigned wdp = avr_regbit_get_array(avr, g_wdt->wdp, 4);
	if (wdp > 9)
		wdp = 9;    /* reserved prescaler values */
	return ((avr_cycle_count_t)2048 << wdp) * avr->frequency / 128000;
}

static avr_cycle_count_t wdt_timeout(avr_t *avr, avr_cycle_count_t when, void *param)
{
	(void)param;
	int wde = avr_regbit_get(avr, g_wdt->wde);
	if (avr_regbit_get(avr, g_wdt->watchdog.enable) && !(wde && g_wdt_irq_raised)) {
		g_wdt_irq_raised = wde;
		avr_raise_interrupt(avr, &g_wdt->watchdog);
		return when + g_wdt_period;
	}
	if (wde) {
		g_wdt_reset_pending = 1;
		return 0;
	}
	g_wdt_period = 0;
	return 0;
}

static void wdt_start(avr_t *avr)
{
	g_wdt_period = wdt_period_cycles(avr);
	avr_cycle_timer_register(avr, g_wdt_period, wdt_timeout, NULL);
}

static void wdt_stop(avr_t *avr)
{
	g_wdt_period = 0;
	avr_cycle_timer_cancel(avr, wdt_timeout, NULL);
}

static void wdt_write(avr_t *avr, avr_io_addr_t addr, uint8_t v, void *param)
{
	(void)param;
	avr_watchdog_t *w = g_wdt;
	const uint8_t wde = RB_MASK(w->wde), wdce = RB_MASK(w->wdce);
	const uint8_t wdie = RB_MASK(w->watchdog.enable), wdif = RB_MASK(w->watchdog.raised);
	uint8_t wdp = 0;
	for (int i = 0; i < 4; i++)
		wdp |= RB_MASK(w->wdp[i]);

	uint8_t old = avr->data[addr];
	int was_on = (old & (wde | wdie)) != 0;
	avr_cycle_count_t old_period = wdt_period_cycles(avr);
	int timed = g_wdce_open && avr->cycle <= g_wdce_until;
	g_wdce_open = 0;

	uint8_t now = old & (wde | wdp);                /* WDE and WDP stay ... */
	if ((v & (wdce | wde)) == (wdce | wde)) {
		now |= wde | wdce;                          /* ... open the window (WDE may be set) */
		g_wdce_open = 1;
		g_wdce_until = avr->cycle + 4;
	} else if (timed && !(v & wdce)) {
		now = v & (wde | wdp);                      /* ... change as asked in the window */
	} else {
		now |= v & wde;                             /* ... WDE can always be set */
	}
	if (avr_regbit_get(avr, w->wdrf))
		now |= wde;                                 /* WDRF overrides WDE */
	now |= v & wdie;
	if ((old & wdif) && !(v & wdif))
		now |= wdif;                                /* write one to clear */
	if (v & wdie)
		g_wdt_irq_raised = 0;
	avr_core_watch_write(avr, addr, now);

	int is_on = (now & (wde | wdie)) != 0;
	if (!is_on)
		wdt_stop(avr);
	else if (!was_on || wdt_period_cycles(avr) != old_period)
		wdt_start(avr);
}

/* The WDR instruction (simavr asks every module's ioctl until one answers). */
static int wdt_ioctl(avr_io_t *io, uint32_t ctl, void *io_param)
{
	(void)io;
	(void)io_param;
	if (ctl != AVR_IOCTL_WATCHDOG_RESET)
		return -1;
	if (g_wdt_period)
		wdt_start(g_avr);
	return 0;
}

/* The watchdog's part of a reset (after simavr cleared the registers and timers). */
static void wdt_reset(avr_io_t *io)
{
	(void)io;
	g_wdce_open = 0;
	g_wdt_irq_raised = 0;
	g_wdt_period = 0;
	if (g_wdt_resetting) {
		avr_regbit_set(g_avr, g_wdt->wdrf);
		avr_regbit_set(g_avr, g_wdt->wde);
		wdt_start(g_avr);
	}
}

static int wdt_take_over(avr_t *avr)
{
	for (avr_io_t *io = avr->io_port; io; io = io->next) {
		if (io->kind && strcmp(io->kind, "watchdog") == 0) {
			g_wdt = (avr_watchdog_t *)io;   /* the avr_io_t is its first member */
			break;
		}
	}
	if (!g_wdt || !g_wdt->wdce.reg) {
		fprintf(stderr, "simavr_harness: this AVR has no watchdog we can model\n");
		return -1;
	}
	/* replace, not add: avr_register_io_write() would chain simavr's handler */
	avr->io[AVR_DATA_TO_IO(g_wdt->wdce.reg)].w.c = wdt_write;
	avr->io[AVR_DATA_TO_IO(g_wdt->wdce.reg)].w.param = NULL;
	g_wdt->io.ioctl = wdt_ioctl;
	g_wdt->io.reset = wdt_reset;
	avr_cycle_timer_cancel(avr, wdt_timeout, NULL);
	return 0;
}

/* --------------------------- resets, boot --------------------------- */

#define MCUSR_EXTRF 0x02                    /* bit 1 on every ATmega */

/* After any reset: the UART starts over (bytes in flight are lost). */
static void after_reset(const char *why)
{
	g_uart_xon = 0;              /* until the program enables RX */
	g_rx_pos = g_rx_len = 0;
	rebase();
	proto("BOOT %s %llu", why, (unsigned long long)g_avr->cycle);
}

/* An external reset (the RESET pin: DTR on open, or the button). */
static void external_reset(const char *why)
{
	avr_reset(g_avr);
	g_avr->data[g_wdt->wdrf.reg] |= MCUSR_EXTRF;
	g_held = 0;
	after_reset(why);
}

static void watchdog_reset(void)
{
	g_wdt_reset_pending = 0;
	g_wdt_resetting = 1;
	avr_reset(g_avr);
	g_wdt_resetting = 0;
	g_wdt_resets++;
	after_reset("watchdog");
}

static int hex_byte(const char *p)
{
	int v = 0;
	for (int k = 0; k < 2; k++) {
		char c = p[k];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
			: c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/*
 * Put an Intel HEX (the bootloader) into flash; the lowest address becomes
 * reset_pc.  Our own reader: simavr 1.6's read_ihex_chunks() refuses the
 * start-address record (type 03) that Debian's optiboot hex ends with.
 * Records: 00 data, 01 end, 02/04 segment/linear base, 03/05 start address
 * (ignored: the reset vector is the BOOTRST address).  Strict, as avrdude
 * is when it writes a chip: data past the end of flash or two records for
 * one address are errors (Debian 12's optiboot_atmega328.hex has both; see
 * ipytinyml/toolchain/optiboot.py).
 */
static int load_bootloader(avr_t *avr, const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "simavr_harness: cannot read the bootloader %s: %s\n", path, strerror(errno));
		return -1;
	}
	char line[600];
	uint8_t *seen = calloc((size_t)avr->flashend + 1, 1);     /* no record may overlap another */
	if (!seen) {
		fclose(f);
		return -1;
	}
	uint32_t base = 0, lowest = UINT32_MAX;
	int lineno = 0, ended = 0, bad = 0;
	while (!ended && !bad && fgets(line, sizeof(line), f)) {
		lineno++;
		size_t len = strcspn(line, "\r\n");
		line[len] = '\0';
		if (len == 0)
			continue;
		uint8_t rec[260];
		size_t nbytes = (len - 1) / 2;
		if (line[0] != ':' || len % 2 == 0 || nbytes < 5 || nbytes > sizeof(rec)) {
			bad = 1;
			break;
		}
		uint8_t sum = 0;
		for (size_t k = 0; k < nbytes; k++) {
			int v = hex_byte(line + 1 + 2 * k);
			if (v < 0) {
				bad = 1;
				break;
			}
			rec[k] = (uint8_t)v;
			sum = (uint8_t)(sum + v);
		}
		if (bad || sum != 0 || rec[0] + 5u != nbytes) {
			bad = 1;
			break;
		}
		uint32_t addr = ((uint32_t)rec[1] << 8) | rec[2];
		switch (rec[3]) {
		case 0x00: {
			uint32_t at = base + addr;
			if ((uint64_t)at + rec[0] > (uint64_t)avr->flashend + 1) {
				fprintf(stderr, "simavr_harness: the bootloader %s does not fit in the flash of %s "
					"(line %d writes up to 0x%x)\n", path, avr->mmcu, lineno, at + rec[0] - 1);
				free(seen);
				fclose(f);
				return -1;
			}
			for (uint32_t k = at; k < at + rec[0]; k++) {
				if (seen[k]) {
					fprintf(stderr, "simavr_harness: the bootloader %s writes flash address 0x%x "
						"twice (line %d)\n", path, k, lineno);
					free(seen);
					fclose(f);
					return -1;
				}
				seen[k] = 1;
			}
			memcpy(avr->flash + at, rec + 4, rec[0]);
			if (rec[0] && at < lowest)
				lowest = at;
			break;
		}
		case 0x01:
			ended = 1;
			break;
		case 0x02:
			base = (((uint32_t)rec[4] << 8) | rec[5]) << 4;
			break;
		case 0x04:
			base = (((uint32_t)rec[4] << 8) | rec[5]) << 16;
			break;
		case 0x03:
		case 0x05:
			break;
		default:
			bad = 1;
		}
	}
	fclose(f);
	free(seen);
	if (bad || lowest == UINT32_MAX) {
		fprintf(stderr, "simavr_harness: %s is not an Intel HEX bootloader (line %d)\n", path, lineno);
		return -1;
	}
	avr->reset_pc = lowest;
	avr->pc = lowest;
	return 0;
}

/* The bootloader jumped to an application section that is erased. */
static int jumped_to_empty_flash(void)
{
	return g_boot_mode && g_avr->pc == 0 && g_avr->flash[0] == 0xff && g_avr->flash[1] == 0xff;
}

/* --------------------------- first open --------------------------- */

/* Watch the pty slave for opens; done before printing PTY so that an open
 * right after the PTY line is not missed. */
static int watch_opens(void)
{
	g_inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (g_inotify_fd < 0 || inotify_add_watch(g_inotify_fd, g_pty_name, IN_OPEN) < 0) {
		fprintf(stderr, "simavr_harness: cannot watch %s: %s\n", g_pty_name, strerror(errno));
		return -1;
	}
	return 0;
}

static void wait_first_open(int delay_ms)
{
	while (!g_open_seen && !g_signal && !g_quit && !g_parent_gone) {
		wait_events(g_parent_pid ? 500000000ll : -1);
		if (g_parent_pid && getppid() != g_parent_pid)
			g_parent_gone = 1;
	}
	int opened = g_open_seen;
	close(g_inotify_fd);
	g_inotify_fd = -1;
	/* let the opener finish configuring (and flushing) the port */
	uint64_t end = wall_ns() + (uint64_t)(delay_ms > 0 ? delay_ms : 0) * 1000000ull;
	uint64_t now;
	while (opened && !g_signal && !g_quit && (now = wall_ns()) < end)
		wait_events((int64_t)(end - now));
}

/* ------------------------------- main ----------------------------- */

static void usage(void)
{
	fprintf(stderr,
		"usage: simavr_harness [--mcu NAME] [--freq HZ] [--speed X] [--wait-open]\n"
		"                      [--start-delay-ms N] [--parent-pid PID] [--pdeathsig]\n"
		"                      [--bootloader HEX] [--reset-on-open] [firmware.elf]\n"
		"       (firmware.elf is required without --bootloader)\n");
}

/* The owner's "reset", or an open with --reset-on-open; returns 1 if one was done. */
static int take_external_reset(void)
{
	if (g_reset_pending) {
		g_reset_pending = 0;
		g_open_seen = 0;    /* one reset for both */
		proto("RESET %llu", (unsigned long long)g_avr->cycle);
		external_reset("command");
		return 1;
	}
	if (g_reset_on_open && g_open_seen) {
		g_open_seen = 0;
		external_reset("open");
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *mcu = "atmega328p";
	unsigned long freq = 16000000ul;
	int wait_open = 0, start_delay_ms = 200, pdeathsig = 0;
	const char *elf = NULL, *bootloader = NULL;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int has_value = i + 1 < argc;
		if (!strcmp(a, "--mcu") && has_value)
			mcu = argv[++i];
		else if (!strcmp(a, "--freq") && has_value)
			freq = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(a, "--speed") && has_value)
			g_speed = strtod(argv[++i], NULL);
		else if (!strcmp(a, "--wait-open"))
			wait_open = 1;
		else if (!strcmp(a, "--start-delay-ms") && has_value)
			start_delay_ms = atoi(argv[++i]);
		else if (!strcmp(a, "--parent-pid") && has_value)
			g_parent_pid = (pid_t)atoi(argv[++i]);
		else if (!strcmp(a, "--pdeathsig"))
			pdeathsig = 1;
		else if (!strcmp(a, "--bootloader") && has_value)
			bootloader = argv[++i];
		else if (!strcmp(a, "--reset-on-open"))
			g_reset_on_open = 1;
		else if (a[0] == '-' || elf) {
			usage();
			return 1;
		} else
			elf = a;
	}
	if ((!elf && !bootloader) || freq == 0 || freq > UINT32_MAX || !(g_speed >= 0)) {
		usage();
		return 1;
	}

	/* The owner's death ends us: stdin EOF always, PR_SET_PDEATHSIG and a
	 * parent check when asked. */
	if (pdeathsig)
		prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (g_parent_pid && getppid() != g_parent_pid)
		return 0;   /* the owner died before we got here */

	/* SIGTERM/SIGINT/SIGHUP are blocked and read from a signalfd in our
	 * poll loop: no handler, no race between a flag and going to sleep. */
	signal(SIGPIPE, SIG_IGN);
	sigset_t ours;
	sigemptyset(&ours);
	sigaddset(&ours, SIGTERM);
	sigaddset(&ours, SIGINT);
	sigaddset(&ours, SIGHUP);
	sigprocmask(SIG_BLOCK, &ours, NULL);
	g_signal_fd = signalfd(-1, &ours, SFD_NONBLOCK | SFD_CLOEXEC);
	if (g_signal_fd < 0) {
		perror("simavr_harness: signalfd");
		return 1;
	}

	/* Keep the real stdout for our protocol; whatever simavr prints with
	 * printf() goes to stderr. */
	int proto_fd = dup(STDOUT_FILENO);
	if (proto_fd < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
		perror("simavr_harness: dup");
		return 1;
	}
	fcntl(proto_fd, F_SETFD, FD_CLOEXEC);
	g_proto = fdopen(proto_fd, "w");
	if (!g_proto) {
		perror("simavr_harness: fdopen");
		return 1;
	}
	avr_global_logger_set(logger);

	elf_firmware_t fw;
	memset(&fw, 0, sizeof(fw));
	if (elf && (access(elf, R_OK) != 0 || elf_read_firmware(elf, &fw) != 0)) {
		fprintf(stderr, "simavr_harness: cannot read ELF firmware %s\n", elf);
		return 1;
	}
	g_avr = avr_make_mcu_by_name(mcu);
	if (!g_avr) {
		fprintf(stderr, "simavr_harness: unknown AVR part '%s'\n", mcu);
		return 1;
	}
	avr_init(g_avr);
	g_avr->log = LOG_ERROR;     /* simavr 1.6 defaults to LOG_OUTPUT: crash reasons are errors */
	patch_timer_modes(g_avr);
	if (wdt_take_over(g_avr) != 0)
		return 1;
	if (elf) {
		fw.frequency = (uint32_t)freq;
		avr_load_firmware(g_avr, &fw);
	}
	if (bootloader) {
		if (load_bootloader(g_avr, bootloader) != 0)
			return 1;
		g_boot_mode = 1;
	}
	g_avr->frequency = (uint32_t)freq;
	g_avr->sleep = sleep_hook;

	if (uart_bridge_init(g_avr) != 0)
		return 1;
	if ((wait_open || g_reset_on_open) && watch_opens() != 0)
		return 1;
	proto("PTY %s", g_pty_name);
	if (g_reset_on_open)
		g_held = 1;             /* powered, held in reset until the first open */
	else if (wait_open)
		wait_first_open(start_delay_ms);

	int exit_code = 0;
	if (!g_signal && !g_quit && !g_parent_gone) {
		if (!g_held) {
			proto("RUN");
			g_started = 1;
			rebase();
		}
		/* While the AVR runs: every 0.1 ms of sim time (about a byte time at
		 * 115200 baud) look for host input and hold the sim back if it got
		 * ahead of the wall clock; everything else every 1 ms. */
		const avr_cycle_count_t input_every = g_avr->frequency / 10000;
		const avr_cycle_count_t service_every = g_avr->frequency / 1000;
		avr_cycle_count_t next_input = 0, next_service = 0;
		for (;;) {
			if (g_held) {
				/* nothing executes: wait for a reset (or the end) */
				wait_events(g_parent_pid ? 500000000ll : -1);
				if (g_parent_pid && getppid() != g_parent_pid)
					g_parent_gone = 1;
				if (g_signal || g_quit || g_parent_gone)
					break;
				if (take_external_reset()) {
					next_input = next_service = 0;
					if (!g_started) {
						proto("RUN");
						g_started = 1;
					}
				}
				continue;
			}
			int state = avr_run(g_avr);
			if (state == cpu_Done || state == cpu_Crashed)
				break;
			if (g_wdt_reset_pending) {
				watchdog_reset();
				next_input = next_service = 0;
				continue;
			}
			if (jumped_to_empty_flash()) {
				g_held = 1;
				proto("IDLE empty");
				continue;
			}
			if (rx_pending())
				pump_rx();
			if (g_avr->cycle < next_input)
				continue;
			next_input = g_avr->cycle + input_every;
			if (g_rx_len == 0 && g_uart_xon)
				pty_read();         /* non-blocking */
			if (g_speed > 0 && sim_ns(g_avr->cycle) > wall_ns() - g_base_wall_ns + SLEEP_SLACK_NS)
				pace_to(g_avr->cycle);
			if (g_avr->cycle < next_service)
				continue;
			next_service = g_avr->cycle + service_every;
			service();
			if (take_external_reset())
				next_input = next_service = 0;
			if (g_signal || g_quit || g_parent_gone)
				break;
		}
		pty_flush();
		if (g_avr->state == cpu_Crashed || g_avr->state == cpu_Done) {
			int crashed = g_avr->state == cpu_Crashed;
			fprintf(stderr, "simavr_harness: the AVR %s at pc=0x%04x after %llu cycles\n",
				crashed ? "crashed" : "stopped (sleep with interrupts off)",
				(unsigned)g_avr->pc, (unsigned long long)g_avr->cycle);
			proto("EXIT %s pc=0x%04x cycle=%llu", crashed ? "crashed" : "done",
				(unsigned)g_avr->pc, (unsigned long long)g_avr->cycle);
			exit_code = crashed ? 2 : 3;
		}
	}
	if (g_tx_dropped)
		fprintf(stderr, "simavr_harness: %llu output bytes dropped (nobody was reading the port)\n",
			g_tx_dropped);
	if (exit_code == 0) {
		if (g_signal)
			proto("EXIT signal %d", g_signal);
		else if (g_parent_gone)
			proto("EXIT parent");
		else if (!g_stdin_open)
			proto("EXIT eof");
		else
			proto("EXIT quit");
	}
	return exit_code;
}
