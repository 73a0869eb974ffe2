/* The ipytinyml protocol firmware for the Cortex-M4F in QEMU (mps2-an386):
 * what the generated sketch's setup() and loop() do, over UART0 (arm_port.c). */
#include "tinyml_protocol.h"

void arm_port_init(void);

int main(void)
{
    arm_port_init();
    tinyml_protocol_begin(TINYML_FLASH("mps2-an386"));
    for (;;) {
        tinyml_protocol_poll();
    }
}
