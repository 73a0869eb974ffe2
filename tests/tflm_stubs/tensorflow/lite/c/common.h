// Test stub: the parts of TFLM's C API types a generated sketch uses.
#ifndef IPYTINYML_STUB_TFLITE_COMMON_H
#define IPYTINYML_STUB_TFLITE_COMMON_H

#include <stddef.h>
#include <stdint.h>

typedef enum TfLiteStatus { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;

typedef enum {
  kTfLiteNoType = 0,
  kTfLiteFloat32 = 1,
  kTfLiteInt32 = 2,
  kTfLiteUInt8 = 3,
  kTfLiteInt8 = 9,
} TfLiteType;

typedef struct TfLiteQuantizationParams {
  float scale;
  int32_t zero_point;
} TfLiteQuantizationParams;

typedef union TfLitePtrUnion {
  int32_t *i32;
  float *f;
  char *raw;
  const char *raw_const;
  uint8_t *uint8;
  int8_t *int8;
  void *data;
} TfLitePtrUnion;

typedef struct TfLiteIntArray {
  int size;
  int data[4];
} TfLiteIntArray;

typedef struct TfLiteTensor {
  TfLiteType type;
  TfLitePtrUnion data;
  TfLiteIntArray *dims;
  TfLiteQuantizationParams params;
  size_t bytes;
} TfLiteTensor;

#endif
