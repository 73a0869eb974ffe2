// Test stub: a behaviour for the TFLM declarations in this folder, so a
// generated tflm sketch runs on the host (tests/test_tflm_sketch.py).
//
// The "model" is the identity on int8 codes, wrapped in what TFLM does at
// the float ends of a float-I/O model:
//   input tensor float32 (FAKE_IN_FLOAT=1): QUANTIZE, q = clamp(round(x / s) + zp),
//     float32 division, rounded half away from zero;
//   output tensor float32 (FAKE_OUT_FLOAT=1): DEQUANTIZE, y = (float)((double)s * (q - zp)).
// So the int8 the protocol gets back must equal the int8 it sent, whatever
// the scales: exactly what the sketch's glue has to preserve.
//
// Configured with -D: FAKE_N_IN, FAKE_N_OUT (output j copies input j % N_IN),
// FAKE_IN_FLOAT, FAKE_OUT_FLOAT, FAKE_IN_SCALE_BITS, FAKE_IN_ZP,
// FAKE_OUT_SCALE_BITS, FAKE_OUT_ZP (the model's tensor quantization),
// FAKE_ARENA_NEED (AllocateTensors fails with a smaller arena; also what
// arena_used_bytes() reports), FAKE_FAIL_CODE (Invoke fails on that int8 code).
#include <math.h>
#include <string.h>

#include "tensorflow/lite/micro/micro_interpreter.h"

namespace {
float in_f[FAKE_N_IN];
int8_t in_q[FAKE_N_IN];
float out_f[FAKE_N_OUT];
int8_t out_q[FAKE_N_OUT];

float from_bits(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
}  // namespace

namespace tflite {

// Model.version: field 0 of the root table (vtable slot 4) of the flatbuffer.
uint32_t Model::version() const {
  const uint8_t *buf = reinterpret_cast<const uint8_t *>(this);
  uint32_t table = le32(buf);
  uint32_t vtable = table - (uint32_t)(int32_t)le32(buf + table);
  uint16_t vt_len = (uint16_t)(buf[vtable] | buf[vtable + 1] << 8);
  if (vt_len <= 4) return 0;
  uint16_t off = (uint16_t)(buf[vtable + 4] | buf[vtable + 5] << 8);
  return off ? le32(buf + table + off) : 0;
}

const Model *GetModel(const void *buf) { return reinterpret_cast<const Model *>(buf); }

MicroInterpreter::MicroInterpreter(const Model *, const MicroOpResolver &op_resolver,
                                   uint8_t *tensor_arena, size_t tensor_arena_size,
                                   MicroResourceVariables *, MicroProfilerInterface *)
    : used_(0) {
  memset(tensors_, 0, sizeof tensors_);
  // Remember the arena size in used_ until AllocateTensors().
  used_ = (tensor_arena != nullptr && op_resolver.registered() > 0) ? tensor_arena_size : 0;
}

MicroInterpreter::~MicroInterpreter() {}

TfLiteStatus MicroInterpreter::initialization_status() const {
  return used_ ? kTfLiteOk : kTfLiteError;
}

TfLiteStatus MicroInterpreter::AllocateTensors() {
  if (used_ < (size_t)FAKE_ARENA_NEED) return kTfLiteError;
  used_ = FAKE_ARENA_NEED;
  TfLiteTensor &in = tensors_[0];
  TfLiteTensor &out = tensors_[1];
  in.type = FAKE_IN_FLOAT ? kTfLiteFloat32 : kTfLiteInt8;
  in.bytes = FAKE_N_IN * (FAKE_IN_FLOAT ? sizeof(float) : 1);
  if (FAKE_IN_FLOAT) in.data.f = in_f;
  else in.data.int8 = in_q;
  in.params.scale = FAKE_IN_FLOAT ? 0.0f : from_bits(FAKE_IN_SCALE_BITS);
  in.params.zero_point = FAKE_IN_FLOAT ? 0 : FAKE_IN_ZP;
  out.type = FAKE_OUT_FLOAT ? kTfLiteFloat32 : kTfLiteInt8;
  out.bytes = FAKE_N_OUT * (FAKE_OUT_FLOAT ? sizeof(float) : 1);
  if (FAKE_OUT_FLOAT) out.data.f = out_f;
  else out.data.int8 = out_q;
  out.params.scale = FAKE_OUT_FLOAT ? 0.0f : from_bits(FAKE_OUT_SCALE_BITS);
  out.params.zero_point = FAKE_OUT_FLOAT ? 0 : FAKE_OUT_ZP;
  return kTfLiteOk;
}

TfLiteStatus MicroInterpreter::Invoke() {
  int8_t codes[FAKE_N_IN];
  for (int i = 0; i < FAKE_N_IN; i++) {
    if (FAKE_IN_FLOAT) {
      float t = in_f[i] / from_bits(FAKE_IN_SCALE_BITS);  // float32 division
      long q = lroundf(t) + FAKE_IN_ZP;                    // half away from zero
      codes[i] = (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q);
    } else {
      codes[i] = in_q[i];
    }
#ifdef FAKE_FAIL_CODE
    if (codes[i] == FAKE_FAIL_CODE) return kTfLiteError;
#endif
  }
  for (int j = 0; j < FAKE_N_OUT; j++) {
    int8_t q = codes[j % FAKE_N_IN];
    if (FAKE_OUT_FLOAT)
      out_f[j] = (float)((double)from_bits(FAKE_OUT_SCALE_BITS) * (double)(q - FAKE_OUT_ZP));
    else
      out_q[j] = q;
  }
  return kTfLiteOk;
}

TfLiteTensor *MicroInterpreter::input(size_t index) { return index == 0 ? &tensors_[0] : nullptr; }
TfLiteTensor *MicroInterpreter::output(size_t index) { return index == 0 ? &tensors_[1] : nullptr; }
size_t MicroInterpreter::inputs_size() const { return 1; }
size_t MicroInterpreter::outputs_size() const { return 1; }
size_t MicroInterpreter::arena_used_bytes() const { return used_; }

}  // namespace tflite
