/*
 * host_port.h - the knobs of host_port.cpp for a host program (tests).
 * Not part of any sketch.
 */
#ifndef TINYML_HOST_PORT_H
#define TINYML_HOST_PORT_H

#ifdef __cplusplus
extern "C" {
#endif

extern int tinyml_host_fd_in;   /* read side of the "serial port" (non-blocking) */
extern int tinyml_host_fd_out;  /* write side */
extern int tinyml_host_hangup;  /* set when a read saw EOF/EIO or a write failed */
/* >= 0: tinyml_port_millis() returns this instead of the wall clock, so a
 * test decides every silence to the millisecond */
extern long long tinyml_host_clock_ms;

void tinyml_host_flush(void);   /* write out buffered output now */

#ifdef __cplusplus
}
#endif

#endif
