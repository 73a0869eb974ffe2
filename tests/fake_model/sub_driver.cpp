/*
 * sub_driver.cpp - white-box test driver for the pre-stage's float32
 * subtraction, sub_f32() in firmware_templates/common/tinyml_protocol.cpp
 * (it includes the .cpp to reach its static functions). For each stdin line
 * "<x bits> <m bits>" (hex float32 bits; x normal or zero, as the parser
 * makes them) it prints the bits of fl32(x - m) as the board holds it:
 * "inf" or "-inf" beyond float32 range, a signed zero when flushed.
 */
#include "tinyml_protocol.cpp"

#include <stdio.h>

int main(void)
{
    unsigned long x, m;
    while (scanf("%lx %lx", &x, &m) == 2) {
        f_neg = (uint8_t)(x >> 31);
        f_exp = (int16_t)(((x >> 23) & 0xff) - 127);
        f_mant = (x & 0x7fffffffUL) ? F32_MANT(x) : 0;
        if (!f_mant)
            f_exp = 0;  /* what parse_value() leaves for a zero */
        sub_f32((uint32_t)m);
        if (f_mant && f_exp > 127) {
            printf("%sinf\n", f_neg ? "-" : "");
            continue;
        }
        uint32_t bits = f_mant ? ((uint32_t)(f_exp + 127) << 23) | (f_mant & 0x7fffffUL) : 0;
        if (f_neg)
            bits |= 0x80000000UL;
        printf("%08lx\n", (unsigned long)bits);
    }
    return 0;
}
