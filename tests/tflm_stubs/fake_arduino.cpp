// Test stub: Serial on stdin/stdout and the sketch's main(), so a generated
// sketch runs on the host. read() blocks for the next byte and ends the
// program (exit 0) at the end of stdin. When stdin is a pty master whose
// slave side nobody has open yet (EIO), it waits for a host instead.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "Arduino.h"

StubSerial Serial;

void StubSerial::begin(unsigned long) {}
StubSerial::operator bool() const { return true; }
int StubSerial::available() { return 0; }

int StubSerial::read() {
  unsigned char c;
  fflush(stdout);
  for (;;) {
    ssize_t n = ::read(0, &c, 1);
    if (n == 1) return c;
    if (n < 0 && (errno == EIO || errno == EINTR)) {
      usleep(10000);
      continue;
    }
    exit(0);
  }
}

size_t StubSerial::write(uint8_t c) { return fputc(c, stdout) == EOF ? 0 : 1; }
size_t StubSerial::print(const char *s) { return (size_t)fputs(s, stdout); }
size_t StubSerial::print(long n) { return (size_t)printf("%ld", n); }
size_t StubSerial::println(const char *s) { return print(s) + print("\r\n"); }

static unsigned long long now_us() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
}

unsigned long millis(void) { return (unsigned long)(now_us() / 1000ULL); }
unsigned long micros(void) { return (unsigned long)now_us(); }

void setup();
void loop();

int main() {
  setup();
  for (;;) loop();
}
