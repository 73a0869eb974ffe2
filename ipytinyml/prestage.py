"""The input pre-stage: typed numbers -> the int8 input of a model's int8 graph.

Every int8 graph ipytinyml deploys takes *standardized* features, so features
of different ranges share one int8 input scale well (a raw 4-feature AutoMPG
input under one scale loses 3x accuracy). The standardization is not in the
graph: it is this pre-stage, which the notebook and every firmware compute
identically from the typed decimal. Per feature ``i``::

    q_i = clamp(round_half_away(fl32(fl32(x_i - mean_i) / div_i)) + zero_point, -128, 127)

- ``x_i``: the float32 nearest the typed decimal (ties to even); values below
  2**-126 (float32 subnormals) are flushed to zero, as the board's parser does;
- ``mean_i``, ``div_i``: float32 constants; ``div_i`` is the feature's standard
  deviation times the graph's input scale, rounded once to float32;
- ``fl32(.)``: one IEEE-754 float32 operation, rounded to nearest even; a
  difference beyond the float32 range is infinite and saturates;
- ``zero_point``: the graph input's zero point.

With ``mean = 0`` and ``div = input scale`` this is exactly TFLite's QUANTIZE
(``x - 0`` is ``x``), the pre-stage of a model without standardization.
``div_i`` lies in [2**-100, 2**100]: a difference that came out subnormal (which
the board flushes to zero) then quantizes to the zero point either way.

numpy's float32 arithmetic is IEEE, so :meth:`InputStage.quantize` is the
reference; the firmware reproduces it with integers only
(``firmware_templates/common/tinyml_protocol.cpp``).
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np

from .errors import ConvertError

DIV_MIN = 2.0 ** -100
DIV_MAX = 2.0 ** 100
_SUBNORMAL = np.float32(2.0 ** -126)


def f32_bits(value: float) -> int:
    """The IEEE-754 bits of ``value`` as float32."""
    return struct.unpack("<I", struct.pack("<f", float(np.float32(value))))[0]


def f32_from_bits(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", int(bits) & 0xFFFFFFFF))[0])


@dataclass(frozen=True)
class InputStage:
    """Per-feature ``mean`` and ``div`` (float32 values) and the graph input's zero point."""

    mean: tuple[float, ...]
    div: tuple[float, ...]
    zero_point: int

    def __post_init__(self):
        if len(self.mean) != len(self.div) or not self.mean:
            raise ConvertError("the input pre-stage needs one mean and one divisor per feature")
        for m, d in zip(self.mean, self.div):
            if float(np.float32(m)) != m or float(np.float32(d)) != d:
                raise ConvertError("the input pre-stage constants must be float32 values")
            if not np.isfinite(m) or not DIV_MIN <= d <= DIV_MAX:
                raise ConvertError(f"input pre-stage constants out of range (mean {m:g}, divisor {d:g}); "
                                   "a feature's scale is degenerate: rescale it")
        if not -128 <= int(self.zero_point) <= 127:
            raise ConvertError(f"input zero point {self.zero_point} is outside int8")

    @property
    def n_inputs(self) -> int:
        return len(self.mean)

    @classmethod
    def identity(cls, scale: float, zero_point: int, n_inputs: int) -> "InputStage":
        """Plain QUANTIZE with the graph input's scale: raw features straight into the graph."""
        s = float(np.float32(scale))
        return cls(mean=(0.0,) * n_inputs, div=(s,) * n_inputs, zero_point=int(zero_point))

    @classmethod
    def standardize(cls, mean, std, scale: float, zero_point: int) -> "InputStage":
        """Standardize with ``mean``/``std`` per feature, then QUANTIZE with the graph input's scale."""
        mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        std = np.asarray(std, dtype=np.float64).reshape(-1)
        div = np.float32(std * float(np.float32(scale)))
        return cls(mean=tuple(float(v) for v in np.float32(mean)), div=tuple(float(v) for v in div),
                   zero_point=int(zero_point))

    def quantize(self, x) -> np.ndarray:
        """Float features ``[n, n_inputs]`` (or a flat list read row by row) -> int8 ``[n, n_inputs]``."""
        return np.clip(self._rounded(x), -128, 127).astype(np.int8)

    def clamped(self, x) -> np.ndarray:
        """Which values lie outside what the int8 input holds (they saturate): bool ``[n, n_inputs]``."""
        r = self._rounded(x)
        return (r < -128) | (r > 127)

    def _rounded(self, x) -> np.ndarray:
        """``round_half_away(t) + zero_point`` before the clamp, float64 (inf where t overflowed)."""
        x = np.asarray(x, dtype=np.float32)
        if x.size % self.n_inputs:
            raise ValueError(f"{x.size} values cannot be split into rows of {self.n_inputs} inputs")
        x = x.reshape(-1, self.n_inputs)
        if np.isnan(x).any():
            raise ValueError("cannot quantize NaN")
        x = np.where(np.abs(x) < _SUBNORMAL, np.float32(0), x)
        with np.errstate(over="ignore"):
            diff = x - np.asarray(self.mean, dtype=np.float32)
            t = (diff / np.asarray(self.div, dtype=np.float32)).astype(np.float64)
        r = np.floor(np.abs(t) + 0.5)  # exact for float32 values; inf stays inf
        return np.where(t < 0, -r, r) + int(self.zero_point)

    def dequantize(self, q) -> np.ndarray:
        """The feature values int8 inputs stand for: ``mean + div * (q - zero_point)`` (float64)."""
        q = np.asarray(q, dtype=np.float64).reshape(-1, self.n_inputs)
        return np.asarray(self.mean, np.float64) + np.asarray(self.div, np.float64) * (q - self.zero_point)

    # -- saving -----------------------------------------------------------------------------
    def to_json(self) -> dict:
        """Exact: the float32 bits of every constant."""
        return {"mean_bits": [f"{f32_bits(v):08x}" for v in self.mean],
                "div_bits": [f"{f32_bits(v):08x}" for v in self.div],
                "zero_point": int(self.zero_point)}

    @classmethod
    def from_json(cls, entry: dict) -> "InputStage":
        try:
            return cls(mean=tuple(f32_from_bits(int(b, 16)) for b in entry["mean_bits"]),
                       div=tuple(f32_from_bits(int(b, 16)) for b in entry["div_bits"]),
                       zero_point=int(entry["zero_point"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConvertError("the saved input pre-stage is damaged; re-run %tinyml_quantize") from exc

    def digest_bytes(self) -> bytes:
        """Canonical bytes of the pre-stage, for the model hash."""
        words = [f32_bits(v) for v in self.mean] + [f32_bits(v) for v in self.div]
        return struct.pack(f"<{len(words)}Ib", *words, int(self.zero_point))


def graph_input_quant(model) -> tuple[float, int]:
    """``(scale, zero point)`` of the int8 tensor the graph's first op computes on."""
    tensor = model.tensors[model.inputs[0]]
    if tensor.dtype == "float32":
        first = next((op for op in model.operators if op.opcode == "QUANTIZE"
                      and op.inputs and op.inputs[0] == model.inputs[0]), None)
        if first is None:
            raise ConvertError("the int8 model does not quantize its float input")
        tensor = model.tensors[first.outputs[0]]
    if tensor.quantization is None or tensor.quantization.scales.size != 1:
        raise ConvertError("the int8 model's input has no single scale")
    return float(tensor.quantization.scales[0]), int(tensor.quantization.zero_points[0])


def graph_input(q, scale: float, zero_point: int) -> np.ndarray:
    """Float32 values that a graph's own QUANTIZE (``scale``, ``zero_point``) turns back into exactly
    the int8 ``q``: ``fl32(scale * (q - zero_point))``, whose quotient by ``scale`` is within
    ``255 * 2**-23`` of the integer ``q - zero_point``."""
    k = np.asarray(q, dtype=np.float64) - int(zero_point)
    return (float(np.float32(scale)) * k).astype(np.float32)


def model_hash(flatbuffer: bytes, stage: InputStage) -> str:
    """The 12 hex digits a board reports: the int8 graph and its pre-stage together."""
    return hashlib.sha256(bytes(flatbuffer) + b"ipytinyml-prestage" + stage.digest_bytes()).hexdigest()[:12]
