/*
 * tinyml_model.h - a hand-written stand-in for the generated model, for the
 * protocol tests (tests/test_protocol_host.py, tests/test_link.py) and the
 * AVR size check. Same interface as the generated file (docs/internals.md).
 *
 * y[j] = clamp(x[j % N_IN] + 3 * j, -128, 127) in int8 (so y[0] is the
 * quantized input itself, which lets the tests check QUANTIZE bit for bit),
 * and tinyml_model_invoke() fails (returns 1) when x[0] == FAKE_FAIL_INPUT,
 * so the "model failed" error can be tested. Every constant can be overridden
 * with -D on the compiler command line.
 */
#ifndef TINYML_MODEL_H
#define TINYML_MODEL_H

#include <stdint.h>

#ifndef TINYML_N_INPUTS
#define TINYML_N_INPUTS 1
#endif
#ifndef TINYML_N_OUTPUTS
#define TINYML_N_OUTPUTS 1
#endif
#ifndef TINYML_MODEL_HASH
#define TINYML_MODEL_HASH "0123456789ab"
#endif
#ifndef TINYML_RUNTIME
#define TINYML_RUNTIME "native"
#endif
#ifndef TINYML_INPUT_SCALE_BITS
#define TINYML_INPUT_SCALE_BITS 0x3cc99f2aUL    /* 0.024612... */
#endif
#ifndef TINYML_INPUT_ZERO_POINT
#define TINYML_INPUT_ZERO_POINT (-128)
#endif
#ifndef TINYML_OUTPUT_SCALE_BITS
#define TINYML_OUTPUT_SCALE_BITS 0x3e1c8f11UL   /* 0.152889... */
#endif
#ifndef TINYML_OUTPUT_ZERO_POINT
#define TINYML_OUTPUT_ZERO_POINT (-23)
#endif
#ifndef TINYML_INPUT_LABEL
#define TINYML_INPUT_LABEL "horsepower"
#endif
#ifndef TINYML_OUTPUT_LABEL
#define TINYML_OUTPUT_LABEL "mpg"
#endif
#ifndef TINYML_ARENA_BYTES
#define TINYML_ARENA_BYTES 65
#endif
#ifndef FAKE_FAIL_INPUT
#define FAKE_FAIL_INPUT (-77)
#endif

int tinyml_model_invoke(const int8_t *input, int8_t *output);

#endif
