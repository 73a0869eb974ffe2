/* The protocol's platform seam (firmware_templates/common/tinyml_port.h, its
 * non-Arduino branch: plain functions) for the bare-metal Cortex-M4F in QEMU's
 * mps2-an386:
 *
 *   bytes      UART0 of the board (ARM CMSDK APB UART at 0x40004000), which
 *              QEMU connects to a chardev (a pty in the tests);
 *   micros,    SysTick on the 25 MHz processor clock, extended past its 24
 *   millis     bits in software into one 64-bit count (read at least every
 *              0.67 s: the protocol polls the clock whenever it is idle);
 *   free RAM   between the end of .bss and the stack pointer.
 */
#include <stdint.h>

#include "tinyml_port.h"

#define UART0_DATA (*(volatile uint32_t *)0x40004000u)
#define UART0_STATE (*(volatile uint32_t *)0x40004004u)
#define UART0_CTRL (*(volatile uint32_t *)0x40004008u)
#define UART0_BAUDDIV (*(volatile uint32_t *)0x40004010u)
#define UART_STATE_TX_FULL 1u
#define UART_STATE_RX_FULL 2u

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define TICK_MASK 0x00FFFFFFu
#define TICKS_PER_US 25u

extern uint32_t __bss_end;

void arm_port_init(void)
{
    UART0_BAUDDIV = 25000000u / 115200u;
    UART0_CTRL = 3u; /* TX and RX enabled, no interrupts */
    SYST_RVR = TICK_MASK;
    SYST_CVR = 0u;
    SYST_CSR = 5u; /* enabled, processor clock, no interrupt */
}

int tinyml_port_read(void)
{
    if ((UART0_STATE & UART_STATE_RX_FULL) == 0u) {
        return -1;
    }
    return (int)(UART0_DATA & 0xFFu);
}

void tinyml_port_write(char c)
{
    while ((UART0_STATE & UART_STATE_TX_FULL) != 0u) {
    }
    UART0_DATA = (uint8_t)c;
}

static uint32_t last_ticks;
static uint64_t total_ticks;

static uint64_t ticks(void)
{
    const uint32_t now = SYST_CVR;
    total_ticks += (last_ticks - now) & TICK_MASK; /* SysTick counts down */
    last_ticks = now;
    return total_ticks;
}

uint32_t tinyml_port_micros(void)
{
    return (uint32_t)(ticks() / TICKS_PER_US);
}

uint32_t tinyml_port_millis(void)
{
    return (uint32_t)(ticks() / (TICKS_PER_US * 1000u)); /* polled while idle: no wrap unseen */
}

void tinyml_port_cycles_begin(void)
{
}

uint32_t tinyml_port_cycles_end(void)
{
    return 0u; /* TINYML_PORT_HAS_CYCLES is 0 here: timing is in microseconds */
}

uint16_t tinyml_port_free_ram(void)
{
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    const uint32_t gap = sp - (uint32_t)(uintptr_t)&__bss_end;
    return gap > 0xFFFFu ? (uint16_t)0xFFFFu : (uint16_t)gap;
}
