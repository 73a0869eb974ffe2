// Test fixture for ipytinyml's virtual board (tests/test_sim.py): a sketch
// that breaks on request, to check the harness reports it and exits.
//   "crash\n" -> store to an address beyond the ATmega328P's RAM (simavr
//               treats that as a crash)
//   "stop\n"  -> sleep with interrupts off (the CPU can never wake again)
#include <avr/interrupt.h>
#include <avr/sleep.h>

static char line[16];
static uint8_t len = 0;

void setup() {
  Serial.begin(115200);
  Serial.println(F("#crashy ready"));
}

void loop() {
  if (Serial.available() == 0) return;
  int c = Serial.read();
  if (c != '\n') {
    if (len < sizeof(line) - 1) line[len++] = (char)c;
    return;
  }
  line[len] = '\0';
  len = 0;
  Serial.println(line);
  Serial.flush();
  if (strcmp(line, "crash") == 0) {
    volatile uint8_t *beyond_ram = (volatile uint8_t *)(RAMEND + 0x100);
    *beyond_ram = 1;
  } else if (strcmp(line, "stop") == 0) {
    cli();
    set_sleep_mode(SLEEP_MODE_PWR_DOWN);
    sleep_enable();
    sleep_cpu();
  }
}
