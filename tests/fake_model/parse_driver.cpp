/*
 * parse_driver.cpp - white-box test driver for the number code of
 * firmware_templates/common/tinyml_protocol.cpp (it includes the .cpp to
 * reach its static functions). For each stdin line (one value token) it
 * prints "<code> <float32 bits in hex> <quantized int8>".
 */
#include "tinyml_protocol.cpp"

#include <stdio.h>

int main(void)
{
    char buf[256];
    while (fgets(buf, sizeof buf, stdin)) {
        size_t n = strlen(buf);
        while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
            buf[--n] = 0;
        if (n > TINYML_LINE_MAX)
            n = TINYML_LINE_MAX;
        memcpy(line, buf, n);
        line[n] = 0;
        line_len = (uint8_t)n;
        cur = line;
        int8_t q = 0;
        uint8_t rc = parse_value('p', &q);
        uint32_t bits = 0;
        int quantized = 0;
        if (!rc) {
            if (f_mant)
                bits = ((uint32_t)(f_exp + 127) << 23) | (f_mant & 0x7fffffUL);
            if (f_neg)
                bits |= 0x80000000UL;
            sub_f32(input_stage[0][0]);
            quantized = quantize(input_stage[0][1]);
        }
        printf("%u %08x %d\n", rc, (unsigned)bits, quantized);
    }
    return 0;
}
