/* ATmega328P test driver for the generated native runtime, run in simavr
 * (tests/test_codegen_native.py, benchmarks/bench_native_cycles.py).
 *
 * simavr's command line has no way to feed the UART, so the inputs are
 * compiled in: test_vectors.h (written by the test) defines TINYML_TEST_N and
 * tinyml_test_inputs[TINYML_TEST_N * TINYML_N_INPUTS] in flash. For each
 * vector the driver times one tinyml_model_invoke() with Timer1 (no
 * prescaler, overflows counted by an interrupt, the timing overhead measured
 * and subtracted) and prints over UART0
 *
 *     v <output 0> ... <output n-1> <cycles>
 *
 * then "done", and stops the simulation by sleeping with interrupts off.
 * simavr prints each UART line to its stdout.
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/pgmspace.h>
#include <avr/sleep.h>
#include <stdint.h>

#include "test_vectors.h"
#include "tinyml_model.h"

static volatile uint16_t timer_overflows;

ISR(TIMER1_OVF_vect)
{
    ++timer_overflows;
}

static uint32_t cycles_now(void)
{
    uint16_t low;
    uint16_t high;
    const uint8_t sreg = SREG;
    cli();
    low = TCNT1;
    high = timer_overflows;
    if ((TIFR1 & _BV(TOV1)) && low < 0x8000u) {
        ++high; /* an overflow is pending and not yet counted */
    }
    SREG = sreg;
    return ((uint32_t)high << 16) | low;
}

static void put_char(char c)
{
    while (!(UCSR0A & _BV(UDRE0))) {
    }
    UDR0 = (uint8_t)c;
}

static void put_int(int32_t value)
{
    char digits[11];
    uint8_t n = 0;
    uint32_t magnitude = value < 0 ? (uint32_t)0 - (uint32_t)value : (uint32_t)value;
    put_char(' ');
    if (value < 0) {
        put_char('-');
    }
    do {
        digits[n++] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude != 0);
    while (n != 0) {
        put_char(digits[--n]);
    }
}

int main(void)
{
    int8_t input[TINYML_N_INPUTS];
    int8_t output[TINYML_N_OUTPUTS];
    uint32_t overhead;
    uint16_t v;
    uint8_t i;

    UBRR0 = 0; /* 1 Mbaud at 16 MHz: simavr does not care, and it is quick */
    UCSR0B = _BV(TXEN0);
    TCCR1A = 0;
    TCCR1B = _BV(CS10); /* Timer1 counts CPU cycles */
    TIMSK1 = _BV(TOIE1);
    sei();

    {
        const uint32_t t0 = cycles_now();
        overhead = cycles_now() - t0;
    }
    for (v = 0; v < TINYML_TEST_N; ++v) {
        uint32_t t0;
        uint32_t elapsed;
        int status;
        for (i = 0; i < TINYML_N_INPUTS; ++i) {
            input[i] = (int8_t)pgm_read_byte(&tinyml_test_inputs[(uint32_t)v * TINYML_N_INPUTS + i]);
        }
        t0 = cycles_now();
        status = tinyml_model_invoke(input, output);
        elapsed = cycles_now() - t0 - overhead;
        if (status != TINYML_OK) {
            put_char('e');
            put_int(status);
            put_char('\n');
            continue;
        }
        put_char('v');
        for (i = 0; i < TINYML_N_OUTPUTS; ++i) {
            put_int(output[i]);
        }
        put_int((int32_t)elapsed);
        put_char('\n');
    }
    put_char('d');
    put_char('o');
    put_char('n');
    put_char('e');
    while (!(UCSR0A & _BV(UDRE0))) {
    }
    UCSR0A |= _BV(TXC0); /* clear "transmit complete", then send the last byte */
    put_char('\n');
    while (!(UCSR0A & _BV(TXC0))) {
    }
    cli();
    sleep_enable();
    sleep_cpu(); /* simavr stops when the CPU sleeps with interrupts off */
    return 0;
}
