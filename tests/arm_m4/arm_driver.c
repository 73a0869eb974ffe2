/* Cortex-M4F test driver for the generated native runtime, run bare-metal in
 * QEMU's mps2-an386 with -icount (tests/test_native_arm.py,
 * benchmarks/bench_arm_icount.py).
 *
 * The inputs are compiled in: test_vectors.h (written by the harness) defines
 * TINYML_TEST_N and tinyml_test_inputs[TINYML_TEST_N * TINYML_N_INPUTS]. The
 * program prints over semihosting
 *
 *     cal <ticks of an empty interval> <ticks of 4000 nops> <ticks of 8000 nops>
 *     v <output 0> ... <output n-1> <ticks of this tinyml_model_invoke()>
 *     ...
 *     sweep <ticks of all TINYML_TEST_N invokes in one loop> <ticks of the same loop without them>
 *     done
 *
 * Ticks are SysTick periods on the processor clock. Under -icount, QEMU's
 * virtual time advances a fixed 2^shift ns per instruction, so ticks are
 * proportional to instructions executed; the "cal" line gives the ratio.
 */
#include <stdint.h>

#include "semihost.h"
#include "test_vectors.h"
#include "tinyml_model.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define TICK_MASK 0x00FFFFFFu

static uint32_t ticks_now(void)
{
    return SYST_CVR; /* counts down */
}

static uint32_t ticks_since(uint32_t start)
{
    return (start - ticks_now()) & TICK_MASK;
}

static char line[16 * (TINYML_N_OUTPUTS + 4)];
static unsigned line_len;

static void put_char(char c)
{
    line[line_len++] = c;
}

static void put_uint(uint32_t magnitude)
{
    char digits[11];
    unsigned n = 0;
    do {
        digits[n++] = (char)('0' + magnitude % 10u);
        magnitude /= 10u;
    } while (magnitude != 0u);
    while (n != 0u) {
        put_char(digits[--n]);
    }
}

static void put_int(int32_t value)
{
    put_char(' ');
    if (value < 0) {
        put_char('-');
        put_uint((uint32_t)0 - (uint32_t)value);
    } else {
        put_uint((uint32_t)value);
    }
}

static void put_word(const char *word)
{
    while (*word != '\0') {
        put_char(*word++);
    }
}

static void end_line(void)
{
    put_char('\n');
    put_char('\0');
    semihost_write(line);
    line_len = 0;
}

static __attribute__((noinline)) void nops_4000(void)
{
    __asm__ volatile(".rept 4000\n\tnop\n\t.endr" ::: "memory");
}

static volatile int8_t sink;

int main(void)
{
    int8_t output[TINYML_N_OUTPUTS];
    uint32_t start;
    uint32_t empty;
    uint32_t total;
    uint32_t baseline;
    unsigned v;
    unsigned i;

    SYST_RVR = TICK_MASK;
    SYST_CVR = 0u;
    SYST_CSR = 5u; /* enabled, processor clock, no interrupt */

    start = ticks_now();
    empty = ticks_since(start);
    put_word("cal");
    put_int((int32_t)empty);
    start = ticks_now();
    nops_4000();
    put_int((int32_t)ticks_since(start));
    start = ticks_now();
    nops_4000();
    nops_4000();
    put_int((int32_t)ticks_since(start));
    end_line();

    for (v = 0; v < TINYML_TEST_N; ++v) {
        const int8_t *input = &tinyml_test_inputs[v * TINYML_N_INPUTS];
        uint32_t ticks;
        int status;
        start = ticks_now();
        status = tinyml_model_invoke(input, output);
        ticks = ticks_since(start);
        if (status != TINYML_OK) {
            put_word("e");
            put_int(status);
            end_line();
            return 1;
        }
        put_word("v");
        for (i = 0; i < TINYML_N_OUTPUTS; ++i) {
            put_int(output[i]);
        }
        put_int((int32_t)ticks);
        end_line();
    }

    start = ticks_now();
    for (v = 0; v < TINYML_TEST_N; ++v) {
        tinyml_model_invoke(&tinyml_test_inputs[v * TINYML_N_INPUTS], output);
        sink = output[0];
    }
    total = ticks_since(start);
    start = ticks_now();
    for (v = 0; v < TINYML_TEST_N; ++v) {
        output[0] = tinyml_test_inputs[v * TINYML_N_INPUTS];
        sink = output[0];
    }
    baseline = ticks_since(start);
    put_word("sweep");
    put_int((int32_t)total);
    put_int((int32_t)baseline);
    end_line();
    put_word("done");
    end_line();
    return 0;
}
