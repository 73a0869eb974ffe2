/* Host test driver for the generated native runtime (tests/test_codegen_native.py).
 *
 * Reads whitespace-separated int8 values from stdin, TINYML_N_INPUTS per
 * inference, and prints the TINYML_N_OUTPUTS int8 outputs of each inference on
 * one line. Exits 2 on malformed input, 3 if the model reports an error.
 * Built as C or C++ together with the generated tinyml_model.cpp.
 */
#include <stdio.h>

#include "tinyml_model.h"

int main(void)
{
    int8_t input[TINYML_N_INPUTS];
    int8_t output[TINYML_N_OUTPUTS];
    for (;;) {
        int i;
        for (i = 0; i < TINYML_N_INPUTS; ++i) {
            int value;
            const int got = scanf("%d", &value);
            if (got == EOF && i == 0) {
                return 0;
            }
            if (got != 1 || value < -128 || value > 127) {
                fprintf(stderr, "bad input value\n");
                return 2;
            }
            input[i] = (int8_t)value;
        }
        if (tinyml_model_invoke(input, output) != TINYML_OK) {
            fprintf(stderr, "model error\n");
            return 3;
        }
        for (i = 0; i < TINYML_N_OUTPUTS; ++i) {
            printf(i ? " %d" : "%d", (int)output[i]);
        }
        printf("\n");
    }
}
