// Test stub: tflite::Model as far as a generated sketch uses it.
#ifndef IPYTINYML_STUB_SCHEMA_GENERATED_H
#define IPYTINYML_STUB_SCHEMA_GENERATED_H

#include <stdint.h>

namespace tflite {

class Model {
 public:
  uint32_t version() const;
};

const Model *GetModel(const void *buf);

}  // namespace tflite

#endif
