/*
 * tinyml_port.h - the platform seam of the ipytinyml serial protocol.
 *
 * Hand-written template: ipytinyml copies this file unchanged into every
 * generated sketch, next to tinyml_protocol.h/.cpp. Edit it here, in
 * firmware_templates/common/, never in a sketch folder.
 *
 * Everything the protocol needs from the platform is here and nowhere else:
 *
 *   TINYML_FLASH("text")       a string literal kept in flash on AVR (PSTR)
 *   TINYML_PROGMEM             attribute for constant tables in flash on AVR
 *   TINYML_FLASH_BYTE(p)       read one char of such a string or table
 *   TINYML_FLASH_U32(p)        read one uint32_t of such a table
 *   tinyml_port_read()         next received byte (0..255), or -1 if none is pending
 *   tinyml_port_write(c)       send one byte (may block while the TX buffer is full)
 *   tinyml_port_micros()       microsecond clock (wraps; only differences are
 *                              used); only when TINYML_PORT_HAS_CYCLES is 0
 *   tinyml_port_millis()       millisecond clock (wraps; only differences are
 *                              used): a silence on the line ends a line
 *   tinyml_port_cycles_begin() / tinyml_port_cycles_end()
 *                              CPU cycles of the code between them, when
 *                              TINYML_PORT_HAS_CYCLES is 1; the protocol then
 *                              reports us = cycles / TINYML_PORT_CYCLES_PER_US
 *                              (exact, where micros() ticks by 4 us on an Uno)
 *   tinyml_port_free_ram()     bytes between the heap (or the end of static
 *                              data) and the stack pointer (0 where unknown)
 *
 * Arduino builds get inline implementations below (Serial, micros(); Timer1
 * and the stack pointer on AVR). Host builds (gcc/g++ on Linux, for tests)
 * get declarations only; host_port.cpp implements them on a file descriptor.
 *
 * Cycle counting on AVR: Timer1 runs in normal mode at clk/1 while an
 * inference is measured, and its overflow interrupt counts the 65536-cycle
 * wraps, so any length up to 2^32 cycles is measured. Timer1 is the only
 * 16-bit timer of the ATmega328P and it is clocked from the CPU clock, so
 * the count is the same on a real Uno and in simavr. The count includes the
 * interrupts serviced meanwhile (Timer0's millis tick, UART bytes) and about
 * 20 cycles of the measurement itself. Side effect: analogWrite() on pins 9
 * and 10 (Timer1 PWM) stops working once the first inference has run.
 */
#ifndef TINYML_PORT_H
#define TINYML_PORT_H

#include <stdint.h>

#if defined(__AVR__)
#include <avr/pgmspace.h>
#define TINYML_FLASH(s) PSTR(s)
#define TINYML_PROGMEM PROGMEM
#define TINYML_FLASH_BYTE(p) ((char)pgm_read_byte(p))
#define TINYML_FLASH_U32(p) ((uint32_t)pgm_read_dword(p))
#else
#define TINYML_FLASH(s) (s)
#define TINYML_PROGMEM
#define TINYML_FLASH_BYTE(p) (*(const char *)(p))
#define TINYML_FLASH_U32(p) (*(const uint32_t *)(p))
#endif

#if defined(ARDUINO)
/* ------------------------------------------------------------ Arduino */
#include <Arduino.h>

static inline int tinyml_port_read(void) { return Serial.read(); }
static inline void tinyml_port_write(char c) { Serial.write((uint8_t)c); }
static inline uint32_t tinyml_port_micros(void) { return micros(); }
static inline uint32_t tinyml_port_millis(void) { return millis(); }

#if defined(__AVR__)
#include <avr/interrupt.h>
#include <avr/io.h>

#define TINYML_PORT_HAS_CYCLES 1
#define TINYML_PORT_CYCLES_PER_US (F_CPU / 1000000UL)

#ifdef __cplusplus
extern "C" {
#endif
extern volatile uint16_t tinyml_port_t1_overflows;
extern char __heap_start;
/* weak: referring to it must not pull avr-libc's malloc into the sketch */
extern char *__brkval __attribute__((weak));
#ifdef __cplusplus
}
#endif

static inline void tinyml_port_cycles_begin(void)
{
    uint8_t sreg = SREG;
    cli();
    TCCR1A = 0;             /* normal mode (the core set up 8-bit PWM) */
    TCCR1B = _BV(CS10);     /* clk/1 */
    tinyml_port_t1_overflows = 0;
    TIFR1 = _BV(TOV1);      /* clear a stale overflow flag */
    TIMSK1 = _BV(TOIE1);
    TCNT1 = 0;
    SREG = sreg;
}

static inline uint32_t tinyml_port_cycles_end(void)
{
    uint8_t sreg = SREG;
    cli();
    uint16_t t = TCNT1;
    uint16_t wraps = tinyml_port_t1_overflows;
    if ((TIFR1 & _BV(TOV1)) && t < 0x8000u)
        wraps++;            /* wrapped after cli(), interrupt still pending */
    TIMSK1 = 0;             /* no overflow interrupts while idle */
    SREG = sreg;
    return ((uint32_t)wraps << 16) | t;
}

static inline uint16_t tinyml_port_free_ram(void)
{
    char top;
    char *heap_end = (&__brkval && __brkval) ? __brkval : &__heap_start;
    return (uint16_t)(&top - heap_end);
}

/* Defined once, by tinyml_protocol.cpp (the only file that sets this). */
#if defined(TINYML_PORT_IMPLEMENTATION)
volatile uint16_t tinyml_port_t1_overflows;
ISR(TIMER1_OVF_vect) { tinyml_port_t1_overflows++; }
#endif

#else /* Arduino, not AVR */
#define TINYML_PORT_HAS_CYCLES 0
static inline uint16_t tinyml_port_free_ram(void) { return 0; }
#endif

#else
/* --------------------------------------------------------------- host */
#ifndef TINYML_PORT_HAS_CYCLES
#define TINYML_PORT_HAS_CYCLES 0  /* host tests may build with -DTINYML_PORT_HAS_CYCLES=1 */
#endif
#define TINYML_PORT_CYCLES_PER_US 1000UL  /* host_port.cpp counts nanoseconds */

#ifdef __cplusplus
extern "C" {
#endif
int tinyml_port_read(void);
void tinyml_port_write(char c);
uint32_t tinyml_port_micros(void);
uint32_t tinyml_port_millis(void);
void tinyml_port_cycles_begin(void);
uint32_t tinyml_port_cycles_end(void);
uint16_t tinyml_port_free_ram(void);
#ifdef __cplusplus
}
#endif
#endif

#endif /* TINYML_PORT_H */
