/* Checks the fast requantization building blocks of tinyml_kernels.h against
 * the reference MultiplyByQuantizedMultiplier over whole accumulator windows
 * (tests/test_codegen_native.py::test_window_requantization_sweep).
 *
 * stdin: one window per line, the constants the generator computed for the
 * accumulators lo..hi a channel can reach:
 *   lo hi multiplier shift zero_point act_min act_max base u_max mult2 rem2 g_rem h_neg y0
 *   lshift rshift wide_v has_affine a b affine_y0
 * For the accumulators from base - 3 to base + u_max + 3 (sampled when the
 * window is wider than 2^22) and the 64 at each end of lo..hi, it computes
 * the clamped output both ways, with
 * every high-product variant whose input range allows it (16-, 24-, 32-bit u)
 * and, if given, the affine form, and prints per window
 *   ok <accumulators checked>     or     bad <acc> <reference> <fast> <variant>
 */
#include <stdio.h>

#include "tinyml_kernels.h"

static int32_t reference_output(int32_t acc, int32_t multiplier, int shift, int32_t zero_point,
                                int32_t act_min, int32_t act_max)
{
    int32_t y = tinyml_multiply_by_quantized_multiplier(acc, multiplier, shift);
    y = (int32_t)((uint32_t)y + (uint32_t)zero_point);
    y = y > act_min ? y : act_min;
    return y < act_max ? y : act_max;
}

int main(void)
{
    long long lo, hi, multiplier, shift, zero_point, act_min, act_max, base, u_max;
    unsigned long long mult2, rem2, g_rem, h_neg;
    long long y0, lshift, rshift, wide_v, has_affine, affine_y0;
    unsigned long long a, b;
    while (scanf("%lld %lld %lld %lld %lld %lld %lld %lld %lld %llu %llu %llu %llu %lld %lld %lld %lld %lld "
                 "%llu %llu %lld", &lo, &hi, &multiplier, &shift, &zero_point, &act_min, &act_max, &base, &u_max, &mult2, &rem2,
                 &g_rem, &h_neg, &y0, &lshift, &rshift, &wide_v, &has_affine, &a, &b, &affine_y0) == 21) {
        const unsigned long long u_top = (unsigned long long)(u_max > 0 ? u_max : 0) << lshift;
        /* three segments of lo..hi: its start, the window and its edges, its end */
        const long long seg_from[3] = {lo, base - 3, hi - 63};
        const long long seg_to[3] = {lo + 63, base + (u_max > 0 ? u_max : 0) + 3, hi};
        unsigned long long checked = 0;
        int bad = 0;
        int seg;
        for (seg = 0; seg < 3 && !bad; ++seg) {
        const long long from = seg_from[seg] > lo ? seg_from[seg] : lo;
        const long long to = seg_to[seg] < hi ? seg_to[seg] : hi;
        const long long span = to - from + 1;
        const long long step = span > (1LL << 22) ? span / (1LL << 22) + 1 : 1;
        long long i;
        for (i = 0; i < span && !bad; i += (i < 64 || span - i < 64) ? 1 : step) {
            const long long acc = from + i;
            const long long u = acc - base;
            int variant;
            int32_t ref;
            ref = reference_output((int32_t)acc, (int32_t)multiplier, (int)shift, (int32_t)zero_point,
                                   (int32_t)act_min, (int32_t)act_max);
            for (variant = 0; variant < 4 && !bad; ++variant) {
                int32_t fast;
                if (u < 0) {
                    fast = (int32_t)act_min;
                } else if (u > u_max) {
                    fast = (int32_t)act_max;
                } else if (variant == 3) {
                    if (!has_affine) {
                        continue;
                    }
                    fast = (int32_t)(affine_y0 + tinyml_affine24_u16((uint16_t)u, (uint16_t)a, (uint8_t)(a >> 16), (uint32_t)b));
                } else {
                    const uint32_t us = (uint32_t)((uint64_t)u << lshift);
                    uint32_t h;
                    uint32_t r;
                    if (variant == 0) {
                        if (u_top >= 1u << 16) {
                            continue;
                        }
                        h = tinyml_high32_u16((uint16_t)us, (uint32_t)mult2, (uint32_t)rem2);
                    } else if (variant == 1) {
                        if (u_top >= 1u << 24) {
                            continue;
                        }
                        h = tinyml_high32_u24(us, (uint32_t)mult2, (uint32_t)rem2);
                    } else {
                        h = tinyml_high32_u32(us, (uint32_t)mult2, (uint32_t)rem2);
                    }
                    if (!wide_v) { /* the generator's choice for the whole window */
                        r = tinyml_round_pot16((uint16_t)h, (uint16_t)g_rem, (uint16_t)h_neg, (uint8_t)rshift);
                    } else {
                        r = tinyml_round_pot32(h, (uint32_t)g_rem, (uint32_t)h_neg, (uint8_t)rshift);
                    }
                    fast = (int32_t)(y0 + (long long)r);
                }
                ++checked;
                if (fast != ref) {
                    printf("bad %lld %ld %ld %d\n", acc, (long)ref, (long)fast, variant);
                    bad = 1;
                }
            }
        }
        }
        if (!bad) {
            printf("ok %llu\n", checked);
        }
        fflush(stdout);
    }
    return 0;
}
