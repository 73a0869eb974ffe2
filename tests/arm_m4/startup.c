/* Minimal startup for the bare-metal Cortex-M4F test programs run in QEMU
 * (mps2-an386), with semihosting for output and exit.
 *
 * The vector table holds the initial stack pointer and the reset handler;
 * every fault goes to one handler that reports it and exits with status 70.
 * The reset handler copies .data from its load address, clears .bss, turns on
 * the FPU (CP10/CP11 full access, needed before any floating-point
 * instruction with -mfloat-abi=hard), runs main() and exits with its result.
 */
#include <stdint.h>

#include "semihost.h"

extern uint32_t __data_start, __data_end, __data_load, __bss_start, __bss_end, __stack_top;
extern int main(void);

void tinyml_reset(void);
static void tinyml_fault(void);

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

/* ARM semihosting: operation in r0, parameter block address in r1, BKPT 0xAB */
static uint32_t semihost_call(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void semihost_write(const char *text)
{
    semihost_call(0x04u, text); /* SYS_WRITE0: a NUL-terminated string to the console */
}

void semihost_exit(int status)
{
    /* SYS_EXIT with ADS_ApplicationExit: the 32-bit form carries no status, so a
     * non-zero status is reported as a run-time error instead. */
    const uint32_t reason = status == 0 ? 0x20026u : 0x20023u;
    semihost_call(0x18u, (const void *)reason);
    for (;;) {
    }
}

static void tinyml_fault(void)
{
    semihost_write("\nfault\n");
    semihost_exit(70);
}

typedef void (*vector_t)(void);

__attribute__((section(".vectors"), used)) static const vector_t vectors[16] = {
    (vector_t)(uintptr_t)&__stack_top,
    tinyml_reset,
    tinyml_fault, /* NMI */
    tinyml_fault, /* HardFault */
    tinyml_fault, /* MemManage */
    tinyml_fault, /* BusFault */
    tinyml_fault, /* UsageFault */
    0, 0, 0, 0,
    tinyml_fault, /* SVCall */
    tinyml_fault, /* DebugMonitor */
    0,
    tinyml_fault, /* PendSV */
    tinyml_fault, /* SysTick (never enabled as an interrupt) */
};

void tinyml_reset(void)
{
    uint32_t *dst = &__data_start;
    const uint32_t *src = &__data_load;
    while (dst < &__data_end) {
        *dst++ = *src++;
    }
    for (dst = &__bss_start; dst < &__bss_end; ++dst) {
        *dst = 0;
    }
    SCB_CPACR |= (uint32_t)0xF << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    semihost_exit(main());
}
