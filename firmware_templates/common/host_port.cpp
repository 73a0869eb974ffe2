/*
 * host_port.cpp - tinyml_port.h on a POSIX host, for tests and host builds
 * of the protocol (never part of a sketch: the whole file is empty when
 * ARDUINO is defined, so copying it into a sketch folder by mistake is
 * harmless).
 *
 * The "serial port" is a pair of file descriptors set by the host program
 * (stdin/stdout, or the master side of a pseudo-terminal). Reads are
 * non-blocking; writes are buffered per line and block until written, like
 * Serial.write() with a full TX buffer. The cycle counter, when built with
 * -DTINYML_PORT_HAS_CYCLES=1, counts nanoseconds: a stand-in so the host
 * tests see the same answer format as an AVR board.
 */
#if !defined(ARDUINO)

#include "tinyml_port.h"

#include <errno.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "host_port.h"

int tinyml_host_fd_in = 0;
int tinyml_host_fd_out = 1;
int tinyml_host_hangup = 0;
long long tinyml_host_clock_ms = -1;

static unsigned char in_buf[256];
static int in_pos, in_len;
static char out_buf[512];
static int out_len;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int tinyml_port_read(void)
{
    if (in_pos == in_len) {
        ssize_t r = read(tinyml_host_fd_in, in_buf, sizeof in_buf);
        if (r <= 0) {
            if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                tinyml_host_hangup = 1;
            return -1;
        }
        in_pos = 0;
        in_len = (int)r;
    }
    return in_buf[in_pos++];
}

void tinyml_host_flush(void)
{
    int done = 0;
    while (done < out_len) {
        ssize_t w = write(tinyml_host_fd_out, out_buf + done, (size_t)(out_len - done));
        if (w > 0) {
            done += (int)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            struct pollfd p;
            p.fd = tinyml_host_fd_out;
            p.events = POLLOUT;
            p.revents = 0;
            poll(&p, 1, 100);
        } else {
            tinyml_host_hangup = 1;   /* nobody listens: the bytes are lost, as on a wire */
            break;
        }
    }
    out_len = 0;
}

void tinyml_port_write(char c)
{
    out_buf[out_len++] = c;
    if (c == '\n' || out_len == (int)sizeof out_buf)
        tinyml_host_flush();
}

uint32_t tinyml_port_micros(void) { return (uint32_t)(now_ns() / 1000u); }

/* Frozen once the far end has hung up: nobody reads answers any more, and a
 * partial line left at the end of a test's input then stays unanswered
 * whatever the scheduler does, instead of sometimes ending by silence. */
uint32_t tinyml_port_millis(void)
{
    static uint32_t last;
    if (tinyml_host_clock_ms >= 0)
        return (uint32_t)tinyml_host_clock_ms;
    if (!tinyml_host_hangup)
        last = (uint32_t)(now_ns() / 1000000u);
    return last;
}

static uint64_t cycles_start;

void tinyml_port_cycles_begin(void) { cycles_start = now_ns(); }

uint32_t tinyml_port_cycles_end(void) { return (uint32_t)(now_ns() - cycles_start); }

uint16_t tinyml_port_free_ram(void) { return 0; }

#endif /* !ARDUINO */
