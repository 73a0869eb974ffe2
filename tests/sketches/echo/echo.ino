// Test fixture for ipytinyml's virtual board (tests/test_sim.py).
// Prints a banner once at boot, echoes each received line back uppercased,
// and sleeps in SLEEP_MODE_IDLE while no serial input is pending (UART RX and
// Timer0 interrupts wake it), like the real ipytinyml sketches do.
#include <avr/sleep.h>
#include <avr/interrupt.h>

static char line[80];
static uint8_t len = 0;

void setup() {
  Serial.begin(115200);
  Serial.println(F("#echo ready"));
}

static void idle_until_input() {
  // Check and sleep with interrupts off so an RX interrupt that arrives
  // between the check and the SLEEP instruction still wakes us up.
  set_sleep_mode(SLEEP_MODE_IDLE);
  cli();
  if (Serial.available() == 0) {
    sleep_enable();
    sei();
    sleep_cpu();
    sleep_disable();
  }
  sei();
}

void loop() {
  while (Serial.available() > 0) {
    int c = Serial.read();
    if (c == '\r') continue;
    if (c == '\n') {
      line[len] = '\0';
      for (uint8_t i = 0; i < len; i++) {
        if (line[i] >= 'a' && line[i] <= 'z') line[i] -= 'a' - 'A';
      }
      Serial.println(line);
      len = 0;
    } else if (len < sizeof(line) - 1) {
      line[len++] = (char)c;
    }
  }
  Serial.flush();  // let TX drain before sleeping (TX interrupt wakes us anyway)
  idle_until_input();
}
