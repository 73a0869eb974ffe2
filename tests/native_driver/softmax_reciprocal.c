/* Host check of the fast softmax helpers (tests/test_native_activations.py): over every
 * sum a softmax row of up to TINYML_MAX_CLASSES classes can produce (2^19 .. classes * 2^19,
 * each exp term contributing at most 2^19), tinyml_one_over_one_plus_x_fast must give the
 * bits of the reference port tinyml_one_over_one_plus_x; then tinyml_srdhm_no_min against
 * tinyml_saturating_rounding_doubling_high_mul on pseudo-random pairs (no INT32_MIN).
 * Prints "checked <n> mismatches <m>". */
#include <stdio.h>

#include "tinyml_kernels.h"

#ifndef TINYML_MAX_CLASSES
#define TINYML_MAX_CLASSES 10
#endif
#ifndef TINYML_BEND /* negative control: 1 feeds the fast versions a neighbouring input */
#define TINYML_BEND 0
#endif

int main(void)
{
    unsigned long checked = 0;
    unsigned long mismatches = 0;
    uint32_t sum;
    uint32_t state = 12345u;
    unsigned long k;
    for (sum = (uint32_t)1 << 19; sum <= (uint32_t)TINYML_MAX_CLASSES << 19; ++sum) {
        const uint8_t headroom = tinyml_clz32(sum);
        const int32_t shifted = (int32_t)((sum << headroom) - ((uint32_t)1 << 31));
        mismatches += tinyml_one_over_one_plus_x(shifted) != tinyml_one_over_one_plus_x_fast(shifted ^ TINYML_BEND);
        ++checked;
    }
    for (k = 0; k < 4000000ul; ++k) {
        int32_t a;
        int32_t b;
        state = state * 1664525u + 1013904223u;
        a = (int32_t)state;
        state = state * 1664525u + 1013904223u;
        b = (int32_t)(state >> (k % 31));
        if (k & 1) {
            b = -b;
        }
        if (a == TINYML_INT32_MIN || b == TINYML_INT32_MIN) {
            continue;
        }
        mismatches += tinyml_saturating_rounding_doubling_high_mul(a, b) != tinyml_srdhm_no_min(a, b ^ TINYML_BEND);
        ++checked;
    }
    printf("checked %lu mismatches %lu\n", checked, mismatches);
    return 0;
}
