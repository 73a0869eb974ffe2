// Test stub: tflite::MicroMutableOpResolver<N> with every builtin Add...()
// method the Arduino TFLM ports have (the names, listed from their
// micro_mutable_op_resolver.h; the real ones take an optional registration
// argument, which generated sketches never pass). The stub checks what the
// real class checks: an op registered twice, or more ops than N, fails.
#ifndef IPYTINYML_STUB_MICRO_MUTABLE_OP_RESOLVER_H
#define IPYTINYML_STUB_MICRO_MUTABLE_OP_RESOLVER_H

#include <string.h>

#include "tensorflow/lite/c/common.h"

namespace tflite {

class MicroOpResolver {
 public:
  virtual ~MicroOpResolver() {}
  virtual unsigned int registered() const = 0;
};

template <unsigned int tOpCount>
class MicroMutableOpResolver : public MicroOpResolver {
 public:
  MicroMutableOpResolver() : count_(0) {}
  unsigned int registered() const override { return count_; }

#define IPYTINYML_STUB_OP(method) \
  TfLiteStatus method() { return Register(#method); }
  IPYTINYML_STUB_OP(AddAbs)
  IPYTINYML_STUB_OP(AddAdd)
  IPYTINYML_STUB_OP(AddAddN)
  IPYTINYML_STUB_OP(AddArgMax)
  IPYTINYML_STUB_OP(AddArgMin)
  IPYTINYML_STUB_OP(AddAssignVariable)
  IPYTINYML_STUB_OP(AddAveragePool2D)
  IPYTINYML_STUB_OP(AddBatchToSpaceNd)
  IPYTINYML_STUB_OP(AddBroadcastArgs)
  IPYTINYML_STUB_OP(AddBroadcastTo)
  IPYTINYML_STUB_OP(AddCallOnce)
  IPYTINYML_STUB_OP(AddCast)
  IPYTINYML_STUB_OP(AddCeil)
  IPYTINYML_STUB_OP(AddCircularBuffer)
  IPYTINYML_STUB_OP(AddConcatenation)
  IPYTINYML_STUB_OP(AddConv2D)
  IPYTINYML_STUB_OP(AddCos)
  IPYTINYML_STUB_OP(AddCumSum)
  IPYTINYML_STUB_OP(AddDepthToSpace)
  IPYTINYML_STUB_OP(AddDepthwiseConv2D)
  IPYTINYML_STUB_OP(AddDequantize)
  IPYTINYML_STUB_OP(AddDetectionPostprocess)
  IPYTINYML_STUB_OP(AddDiv)
  IPYTINYML_STUB_OP(AddElu)
  IPYTINYML_STUB_OP(AddEqual)
  IPYTINYML_STUB_OP(AddEthosU)
  IPYTINYML_STUB_OP(AddExp)
  IPYTINYML_STUB_OP(AddExpandDims)
  IPYTINYML_STUB_OP(AddFill)
  IPYTINYML_STUB_OP(AddFloor)
  IPYTINYML_STUB_OP(AddFloorDiv)
  IPYTINYML_STUB_OP(AddFloorMod)
  IPYTINYML_STUB_OP(AddFullyConnected)
  IPYTINYML_STUB_OP(AddGather)
  IPYTINYML_STUB_OP(AddGatherNd)
  IPYTINYML_STUB_OP(AddGreater)
  IPYTINYML_STUB_OP(AddGreaterEqual)
  IPYTINYML_STUB_OP(AddHardSwish)
  IPYTINYML_STUB_OP(AddIf)
  IPYTINYML_STUB_OP(AddL2Normalization)
  IPYTINYML_STUB_OP(AddL2Pool2D)
  IPYTINYML_STUB_OP(AddLeakyRelu)
  IPYTINYML_STUB_OP(AddLess)
  IPYTINYML_STUB_OP(AddLessEqual)
  IPYTINYML_STUB_OP(AddLog)
  IPYTINYML_STUB_OP(AddLogicalAnd)
  IPYTINYML_STUB_OP(AddLogicalNot)
  IPYTINYML_STUB_OP(AddLogicalOr)
  IPYTINYML_STUB_OP(AddLogistic)
  IPYTINYML_STUB_OP(AddLogSoftmax)
  IPYTINYML_STUB_OP(AddMaximum)
  IPYTINYML_STUB_OP(AddMaxPool2D)
  IPYTINYML_STUB_OP(AddMirrorPad)
  IPYTINYML_STUB_OP(AddMean)
  IPYTINYML_STUB_OP(AddMinimum)
  IPYTINYML_STUB_OP(AddMul)
  IPYTINYML_STUB_OP(AddNeg)
  IPYTINYML_STUB_OP(AddNotEqual)
  IPYTINYML_STUB_OP(AddPack)
  IPYTINYML_STUB_OP(AddPad)
  IPYTINYML_STUB_OP(AddPadV2)
  IPYTINYML_STUB_OP(AddPrelu)
  IPYTINYML_STUB_OP(AddQuantize)
  IPYTINYML_STUB_OP(AddReadVariable)
  IPYTINYML_STUB_OP(AddReduceMax)
  IPYTINYML_STUB_OP(AddRelu)
  IPYTINYML_STUB_OP(AddRelu6)
  IPYTINYML_STUB_OP(AddReshape)
  IPYTINYML_STUB_OP(AddResizeBilinear)
  IPYTINYML_STUB_OP(AddResizeNearestNeighbor)
  IPYTINYML_STUB_OP(AddRound)
  IPYTINYML_STUB_OP(AddRsqrt)
  IPYTINYML_STUB_OP(AddSelectV2)
  IPYTINYML_STUB_OP(AddShape)
  IPYTINYML_STUB_OP(AddSin)
  IPYTINYML_STUB_OP(AddSlice)
  IPYTINYML_STUB_OP(AddSoftmax)
  IPYTINYML_STUB_OP(AddSpaceToBatchNd)
  IPYTINYML_STUB_OP(AddSpaceToDepth)
  IPYTINYML_STUB_OP(AddSplit)
  IPYTINYML_STUB_OP(AddSplitV)
  IPYTINYML_STUB_OP(AddSqueeze)
  IPYTINYML_STUB_OP(AddSqrt)
  IPYTINYML_STUB_OP(AddSquare)
  IPYTINYML_STUB_OP(AddSquaredDifference)
  IPYTINYML_STUB_OP(AddStridedSlice)
  IPYTINYML_STUB_OP(AddSub)
  IPYTINYML_STUB_OP(AddSum)
  IPYTINYML_STUB_OP(AddSvdf)
  IPYTINYML_STUB_OP(AddTanh)
  IPYTINYML_STUB_OP(AddTransposeConv)
  IPYTINYML_STUB_OP(AddTranspose)
  IPYTINYML_STUB_OP(AddUnpack)
  IPYTINYML_STUB_OP(AddUnidirectionalSequenceLSTM)
  IPYTINYML_STUB_OP(AddVarHandle)
  IPYTINYML_STUB_OP(AddWhile)
  IPYTINYML_STUB_OP(AddZerosLike)
#undef IPYTINYML_STUB_OP

 private:
  TfLiteStatus Register(const char *name) {
    for (unsigned int i = 0; i < count_; i++)
      if (strcmp(names_[i], name) == 0) return kTfLiteError;  // already registered
    if (count_ >= tOpCount) return kTfLiteError;              // resolver full
    names_[count_++] = name;
    return kTfLiteOk;
  }
  const char *names_[tOpCount > 0 ? tOpCount : 1];
  unsigned int count_;
};

}  // namespace tflite

#endif
