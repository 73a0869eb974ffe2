/* Semihosting console and exit for the QEMU test programs (startup.c). */
#ifndef TINYML_SEMIHOST_H
#define TINYML_SEMIHOST_H

#ifdef __cplusplus
extern "C" {
#endif

void semihost_write(const char *text);
void semihost_exit(int status) __attribute__((noreturn));

#ifdef __cplusplus
}
#endif

#endif
