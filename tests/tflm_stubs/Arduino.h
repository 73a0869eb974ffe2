// Test stub of the Arduino core API used by ipytinyml sketches (declarations only).
#ifndef IPYTINYML_STUB_ARDUINO_H
#define IPYTINYML_STUB_ARDUINO_H

#include <stddef.h>
#include <stdint.h>

class StubSerial {
 public:
  void begin(unsigned long baud);
  explicit operator bool() const;
  int available();
  int read();
  size_t write(uint8_t c);
  size_t print(const char *s);
  size_t print(long n);
  size_t println(const char *s);
};

extern StubSerial Serial;

unsigned long millis(void);
unsigned long micros(void);

#endif
