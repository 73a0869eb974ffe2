"""Timer1 as a 32-bit CPU-cycle clock on the ATmega328P, for the benchmark drivers.

Timer1 runs at clk/1; an overflow interrupt counts the high word, and a pending
overflow not yet served is folded in, so ``now()`` is exact at any moment.
"""

TIMER1_NOW = r"""
static volatile uint16_t t1_wraps;
ISR(TIMER1_OVF_vect) { ++t1_wraps; }

static uint32_t now(void)
{
    uint16_t low, high;
    const uint8_t sreg = SREG;
    cli();
    low = TCNT1;
    high = t1_wraps;
    if ((TIFR1 & _BV(TOV1)) && low < 0x8000u)
        ++high;
    SREG = sreg;
    return ((uint32_t)high << 16) | low;
}
"""
