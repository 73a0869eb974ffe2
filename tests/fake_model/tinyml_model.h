/*
 * tinyml_model.h - a hand-written stand-in for the generated model, for the
 * protocol tests (tests/test_protocol_host.py, tests/test_link.py) and the
 * AVR size check. Same interface as the generated file (docs/internals.md).
 *
 * y[j] = clamp(x[j % N_IN] + FAKE_STEP * j, -128, 127) in int8, FAKE_STEP 3
 * unless overridden (so y[0] is the quantized input itself, which lets the
 * tests check QUANTIZE bit for bit; with FAKE_STEP 0 and N_OUT = N_IN the
 * whole int8 input row comes back, which shows every feature's pre-stage),
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
/* The input pre-stage: per feature {mean, divisor} as float32 bits. Default:
 * the identity stage (mean 0, divisor the input scale) of a one-input model;
 * tests with more inputs define it. */
#ifndef TINYML_INPUT_STAGE_BITS
#if TINYML_N_INPUTS != 1
#error "define TINYML_INPUT_STAGE_BITS for more than one input"
#endif
#define TINYML_INPUT_STAGE_BITS {{0x00000000UL, TINYML_INPUT_SCALE_BITS}}
#endif
#ifndef FAKE_STEP
#define FAKE_STEP 3
#endif
#ifndef FAKE_FAIL_INPUT
#define FAKE_FAIL_INPUT (-77)
#endif

int tinyml_model_invoke(const int8_t *input, int8_t *output);

#endif
