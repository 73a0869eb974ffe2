// Test fixture for the virtual Uno's watchdog (tests/test_upload.py).
// Prints "#watchdog ready <MCUSR as optiboot left it>" at boot. Commands, one a line:
//   hang    enable the watchdog (15 ms) and stop serving: the watchdog resets the chip
//   change  enable it at 2 s, then change it to 15 ms with the timed sequence, and hang
//   off     enable it at 15 ms, turn it off with the timed sequence, answer "off" 100 ms later
//   late    enable it at 15 ms, then try to turn it off without the timed sequence
//           (the chip ignores that): the watchdog resets the chip
#include <avr/wdt.h>

static char line[16];
static uint8_t len = 0;

void setup() {
  uint8_t flags = MCUSR;
  Serial.begin(115200);
  Serial.print(F("#watchdog ready "));
  Serial.println(flags);
}

static void run(const char *cmd) {
  if (!strcmp(cmd, "hang")) {
    Serial.println(F("hanging"));
    Serial.flush();
    wdt_enable(WDTO_15MS);
    for (;;) {}
  } else if (!strcmp(cmd, "change")) {
    wdt_enable(WDTO_2S);
    wdt_enable(WDTO_15MS);  // wdt_enable writes WDCE|WDE, then the new prescaler
    Serial.println(F("changed"));
    Serial.flush();
    for (;;) {}
  } else if (!strcmp(cmd, "off")) {
    wdt_enable(WDTO_15MS);
    wdt_disable();
    delay(100);
    Serial.println(F("off"));
  } else if (!strcmp(cmd, "late")) {
    wdt_enable(WDTO_15MS);
    WDTCSR = 0;             // no WDCE first: WDE stays set
    delay(100);
    Serial.println(F("still running"));
  }
}

void loop() {
  while (Serial.available() > 0) {
    int c = Serial.read();
    if (c == '\r') continue;
    if (c == '\n') {
      line[len] = '\0';
      run(line);
      len = 0;
    } else if (len < sizeof(line) - 1) {
      line[len++] = (char)c;
    }
  }
}
