// Test stub: tflite::MicroInterpreter (the constructor without ErrorReporter,
// as in both Arduino ports since 2022) and TFLITE_SCHEMA_VERSION.
#ifndef IPYTINYML_STUB_MICRO_INTERPRETER_H
#define IPYTINYML_STUB_MICRO_INTERPRETER_H

#include <stddef.h>
#include <stdint.h>

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

#ifndef TFLITE_SCHEMA_VERSION
#define TFLITE_SCHEMA_VERSION (3)
#endif

namespace tflite {

class MicroResourceVariables;
class MicroProfilerInterface;

class MicroInterpreter {
 public:
  MicroInterpreter(const Model *model, const MicroOpResolver &op_resolver, uint8_t *tensor_arena,
                   size_t tensor_arena_size, MicroResourceVariables *resource_variables = nullptr,
                   MicroProfilerInterface *profiler = nullptr);
  ~MicroInterpreter();
  TfLiteStatus AllocateTensors();
  TfLiteStatus Invoke();
  TfLiteTensor *input(size_t index);
  TfLiteTensor *output(size_t index);
  size_t inputs_size() const;
  size_t outputs_size() const;
  TfLiteStatus initialization_status() const;
  size_t arena_used_bytes() const;

 private:
  MicroInterpreter(const MicroInterpreter &);
  MicroInterpreter &operator=(const MicroInterpreter &);
  TfLiteTensor tensors_[2];
  size_t used_;
};

}  // namespace tflite

#endif
