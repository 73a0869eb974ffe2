/* tinyml_model.cpp - the fake model of tinyml_model.h (tests only). */
#include "tinyml_model.h"

int tinyml_model_invoke(const int8_t *input, int8_t *output)
{
    if (input[0] == FAKE_FAIL_INPUT)
        return 1;
    for (int j = 0; j < TINYML_N_OUTPUTS; j++) {
        int y = input[j % TINYML_N_INPUTS] + FAKE_STEP * j;
        output[j] = (int8_t)(y > 127 ? 127 : y < -128 ? -128 : y);
    }
    return 0;
}
