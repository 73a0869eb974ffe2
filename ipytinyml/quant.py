"""TFLM's int8 arithmetic, reimplemented exactly in Python (brief section 1).

This module is the contract between the model reader and the C generator:
``plan_from_model`` turns a parsed int8 ``.tflite`` into a ``ModelPlan`` whose
integer tables are exactly what TFLM's Prepare step computes, and
``evaluate_plan`` runs it bit-exactly as TFLM's reference kernels do. The C
generator emits the same tables, and its output is checked against both this
module and tflite-micro.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorQuant:
    """Affine int8 quantization of one tensor: real = scale * (q - zero_point)."""

    scale: float  # exactly the float32 value stored in the model
    zero_point: int


@dataclass(frozen=True)
class DenseLayer:
    """One FULLY_CONNECTED op after TFLM's Prepare: integers only.

    Field names follow TFLM (``input_offset`` is the negated input zero point,
    ``output_offset`` the output zero point, ``output_shift`` > 0 shifts left).
    """

    weights: np.ndarray  # int8 [out, in], zero point 0
    bias: np.ndarray  # int32 [out]; zeros when the op has no bias
    input_offset: int
    output_offset: int
    output_multiplier: np.ndarray  # int32 [out]; all equal when per-tensor
    output_shift: np.ndarray  # int32 [out]
    activation_min: int
    activation_max: int
    activation: str  # "NONE" | "RELU" | "RELU6" | "RELU_N1_TO_1"
    per_channel: bool

    @property
    def n_in(self) -> int:
        return int(self.weights.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weights.shape[0])


@dataclass(frozen=True)
class ModelPlan:
    """A chain of Dense layers with the quantization of its two ends."""

    layers: tuple[DenseLayer, ...]
    input: TensorQuant  # the int8 tensor fed to the first layer
    output: TensorQuant  # the int8 tensor produced by the last layer
    float_input: bool  # the model starts with QUANTIZE (float32 input)
    float_output: bool  # the model ends with DEQUANTIZE (float32 output)

    @property
    def n_inputs(self) -> int:
        return self.layers[0].n_in

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out
