"""A small, strict reader for ``.tflite`` files (brief section 2).

Built on the pure-Python ``flatbuffers`` runtime only (``flatbuffers.table.Table``
and ``flatbuffers.util``), with the schema's vtable slots written out below: no
generated schema module and no TensorFlow import, so it loads instantly and does
not break when TensorFlow drops ``tf.lite``. The flatbuffers schema only ever
appends fields, so these slots are stable.

Every position read from the file is bounds-checked before it is used, so a
truncated or corrupt file gives :class:`~ipytinyml.errors.ConvertError` with one
line, never an ``IndexError`` or ``struct.error``.

Only subgraph 0 (the main graph) is read. ``TFLiteModel.n_subgraphs`` says how
many the file has; models with control flow (``WHILE``, ``IF``, ``CALL_ONCE``)
keep their bodies in the other subgraphs, which this reader does not decode.
"""
from __future__ import annotations

import hashlib
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flatbuffers import encode as _encode
from flatbuffers import number_types as _N
from flatbuffers import table as _table
from flatbuffers import util as _util

from .errors import ConvertError

__all__ = [
    "BUILTIN_OPERATORS",
    "TENSOR_TYPES",
    "ACTIVATIONS",
    "Quantization",
    "Tensor",
    "Operator",
    "TFLiteModel",
    "read_tflite",
    "opcode_name",
]

FILE_IDENTIFIER = b"TFL3"

# BuiltinOperator enum of schema.fbs, by code. Checked against
# ai_edge_litert.schema_py_generated.BuiltinOperator in tests/test_tflite_file.py.
_BUILTIN_NAMES = (
    "ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE "
    "DEQUANTIZE EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP "
    "L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC "
    "LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE "
    "RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS "
    "SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN "
    "GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE "
    "UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP "
    "TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU "
    "MAXIMUM ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL "
    "SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL "
    "NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD "
    "REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN "
    "FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE "
    "RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V "
    "UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE "
    "MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE "
    "NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY "
    "SEGMENT_SUM BATCH_MATMUL PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE "
    "BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS HASHTABLE HASHTABLE_FIND "
    "HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE "
    "READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS RANDOM_STANDARD_NORMAL BUCKETIZE "
    "RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE RELU_0_TO_1 "
    "UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2 "
    "UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT"
).split()
BUILTIN_OPERATORS: dict[int, str] = dict(enumerate(_BUILTIN_NAMES))

# TensorType enum: name and little-endian numpy dtype (None: no fixed-width
# element, the data is given as raw uint8 bytes).
TENSOR_TYPES: dict[int, tuple[str, str | None]] = {
    0: ("float32", "<f4"),
    1: ("float16", "<f2"),
    2: ("int32", "<i4"),
    3: ("uint8", "u1"),
    4: ("int64", "<i8"),
    5: ("string", None),
    6: ("bool", "?"),
    7: ("int16", "<i2"),
    8: ("complex64", "<c8"),
    9: ("int8", "i1"),
    10: ("float64", "<f8"),
    11: ("complex128", "<c16"),
    12: ("uint64", "<u8"),
    13: ("resource", None),
    14: ("variant", None),
    15: ("uint32", "<u4"),
    16: ("uint16", "<u2"),
    17: ("int4", None),  # packed two per byte
    18: ("bfloat16", None),
    19: ("int2", None),
    20: ("uint4", None),
}

# ActivationFunctionType enum.
ACTIVATIONS: dict[int, str] = {
    0: "NONE",
    1: "RELU",
    2: "RELU_N1_TO_1",
    3: "RELU6",
    4: "TANH",
    5: "SIGN_BIT",
}

# BuiltinOptions union member -> vtable slot of its fused_activation_function.
_FUSED_ACTIVATION_SLOT = {
    1: 10,  # Conv2DOptions
    2: 12,  # DepthwiseConv2DOptions
    5: 14,  # Pool2DOptions
    6: 6,  # SVDFOptions
    7: 4,  # RNNOptions
    8: 4,  # FullyConnectedOptions
    10: 6,  # ConcatenationOptions
    11: 4,  # AddOptions
    12: 4,  # L2NormOptions
    14: 4,  # LSTMOptions
    21: 4,  # MulOptions
    28: 4,  # SubOptions
    29: 4,  # DivOptions
    31: 6,  # SequenceRNNOptions
    49: 10,  # TransposeConvOptions
    69: 4,  # BidirectionalSequenceLSTMOptions
    70: 6,  # BidirectionalSequenceRNNOptions
    71: 4,  # UnidirectionalSequenceLSTMOptions
    106: 12,  # Conv3DOptions
}
_FULLY_CONNECTED_OPTIONS = 8
_SOFTMAX_OPTIONS = 9  # SoftmaxOptions { beta: float (slot 4, default 0.0) }
_SOFTMAX_BETA = 4
_WEIGHTS_FORMATS = {0: "DEFAULT", 1: "SHUFFLED4x16INT8"}

# vtable slots (brief section 2)
_MODEL_VERSION, _MODEL_OPCODES, _MODEL_SUBGRAPHS, _MODEL_DESCRIPTION, _MODEL_BUFFERS = 4, 6, 8, 10, 12
_SG_TENSORS, _SG_INPUTS, _SG_OUTPUTS, _SG_OPERATORS = 4, 6, 8, 10
_T_SHAPE, _T_TYPE, _T_BUFFER, _T_NAME, _T_QUANT = 4, 6, 8, 10, 12
_Q_SCALE, _Q_ZERO_POINT, _Q_DIM = 8, 10, 16
_B_DATA, _B_OFFSET, _B_SIZE = 4, 6, 8
_OC_DEPRECATED_CODE, _OC_CUSTOM, _OC_VERSION, _OC_BUILTIN_CODE = 4, 6, 8, 10
_OP_OPCODE_INDEX, _OP_INPUTS, _OP_OUTPUTS, _OP_OPTIONS_TYPE, _OP_OPTIONS = 4, 6, 8, 10, 12
_FC_ACT, _FC_WEIGHTS_FORMAT, _FC_KEEP_DIMS, _FC_ASYM, _FC_BIAS_TYPE = 4, 6, 8, 10, 12


def opcode_name(code: int) -> str:
    """Name of a builtin operator code; ``"BUILTIN_<n>"`` for codes we don't know."""
    return BUILTIN_OPERATORS.get(int(code), f"BUILTIN_{int(code)}")


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------
# public dataclasses


@dataclass(frozen=True, eq=False)
class Quantization:
    """Affine quantization of a tensor: real = scales[c] * (q - zero_points[c])."""

    scales: np.ndarray  # float32 [n]
    zero_points: np.ndarray  # int64 [n]
    quantized_dimension: int

    @property
    def per_channel(self) -> bool:
        return self.scales.size > 1


@dataclass(frozen=True, eq=False)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8", "int32", "float32", ... ("type_<n>" for unknown codes)
    buffer: int
    data: np.ndarray | None  # constant data (read-only), None for activations
    quantization: Quantization | None  # None when the file has no scales


@dataclass(frozen=True)
class Operator:
    index: int
    opcode: str  # "FULLY_CONNECTED", ..., "CUSTOM", "BUILTIN_<n>"
    builtin_code: int  # max(builtin_code, deprecated_builtin_code)
    version: int
    inputs: tuple[int, ...]  # tensor indices, -1 for an absent optional input
    outputs: tuple[int, ...]
    fused_activation: str | None  # None when the op's options have no such field
    options: dict[str, Any] = field(default_factory=dict)  # FullyConnectedOptions fields; SOFTMAX: beta
    custom_code: str | None = None


@dataclass(frozen=True, eq=False)
class TFLiteModel:
    """Subgraph 0 of a ``.tflite`` file, decoded."""

    version: int  # schema version (3 for every current converter; TFLM requires 3)
    description: str
    operators: tuple[Operator, ...]
    tensors: tuple[Tensor, ...]
    inputs: tuple[int, ...]  # subgraph 0 input tensor indices
    outputs: tuple[int, ...]
    buffers: int  # number of entries in Model.buffers
    n_subgraphs: int  # only subgraph 0 is decoded
    sha256: str  # of the whole file
    size: int  # file size in bytes

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(op.opcode for op in self.operators)

    @property
    def model_hash(self) -> str:
        """First 12 hex digits of the file's SHA-256 (a deployed model's hash also covers its input
        pre-stage: ``prestage.model_hash``)."""
        return self.sha256[:12]

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    @property
    def input_tensors(self) -> tuple[Tensor, ...]:
        return tuple(self.tensors[i] for i in self.inputs)

    @property
    def output_tensors(self) -> tuple[Tensor, ...]:
        return tuple(self.tensors[i] for i in self.outputs)


# --------------------------------------------------------------------------
# checked flatbuffer access


class _Corrupt(Exception):
    """Internal: an offset or length points outside the file."""


class _Reader:
    """Bounds-checked access to one table of the flatbuffer.

    ``flatbuffers.table.Table`` does the decoding; every position is checked
    against the buffer length first (the runtime itself does not check, and
    ``struct.unpack_from`` accepts negative offsets).
    """

    __slots__ = ("buf", "n", "tab", "vt_len")

    def __init__(self, buf: bytes, pos: int):
        self.buf = buf
        self.n = len(buf)
        self._need(pos, 4, "table")
        self.tab = _table.Table(buf, pos)
        vtable = pos - self.tab.Get(_N.SOffsetTFlags, pos)
        self._need(vtable, 4, "vtable")
        self.vt_len = self.tab.Get(_N.VOffsetTFlags, vtable)
        if self.vt_len < 4 or self.vt_len % 2:
            raise _Corrupt(f"bad vtable length {self.vt_len}")
        self._need(vtable, self.vt_len, "vtable")

    def _need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or size < 0 or pos + size > self.n:
            raise _Corrupt(f"{what} at {pos}+{size} outside a {self.n}-byte file")

    def _field(self, slot: int, size: int) -> int:
        if slot >= self.vt_len:
            return 0
        off = self.tab.Offset(slot)
        if off:
            self._need(self.tab.Pos + off, size, "field")
        return off

    def scalar(self, slot: int, flags, default):
        off = self._field(slot, flags.bytewidth)
        return default if off == 0 else self.tab.Get(flags, self.tab.Pos + off)

    def has(self, slot: int) -> bool:
        return self._field(slot, 4) != 0

    def table(self, slot: int) -> _Reader | None:
        off = self._field(slot, 4)
        if off == 0:
            return None
        return _Reader(self.buf, self.tab.Indirect(self.tab.Pos + off))

    def _vector(self, slot: int, elem: int) -> tuple[int, int] | None:
        """(start, length) of a vector field, checked; None when absent."""
        off = self._field(slot, 4)
        if off == 0:
            return None
        vec = self.tab.Indirect(self.tab.Pos + off)
        self._need(vec, 4, "vector length")
        length = self.tab.Get(_N.UOffsetTFlags, vec)
        start = vec + 4
        self._need(start, length * elem, "vector")
        return start, length

    def array(self, slot: int, dtype: str) -> np.ndarray | None:
        dt = np.dtype(dtype)
        vec = self._vector(slot, dt.itemsize)
        if vec is None:
            return None
        start, length = vec
        return np.frombuffer(self.buf, dtype=dt, count=length, offset=start).copy()

    def string(self, slot: int) -> str | None:
        raw = self.array(slot, "u1")
        return None if raw is None else raw.tobytes().decode("utf-8", errors="replace")

    def tables(self, slot: int) -> list[_Reader]:
        vec = self._vector(slot, 4)
        if vec is None:
            return []
        start, length = vec
        return [_Reader(self.buf, self.tab.Indirect(start + 4 * i)) for i in range(length)]


# --------------------------------------------------------------------------
# decoding


def _load(source) -> tuple[bytes, str]:
    """Bytes and a label for messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "the model bytes"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            return path.read_bytes(), str(path)
        except FileNotFoundError as exc:
            raise ConvertError(
                f"no such .tflite file: {path}",
                hint="check the path, or run %tinyml_quantize to create it",
            ) from exc
        except IsADirectoryError as exc:
            raise ConvertError(f"{path} is a folder, not a .tflite file", hint="give the path of the .tflite file") from exc
        except OSError as exc:
            raise ConvertError(f"cannot read {path}: {exc.strerror or exc}", hint="check the file's permissions") from exc
    raise TypeError(f"read_tflite expects a path or bytes, not {type(source).__name__}")


def read_tflite(source: str | os.PathLike | bytes | bytearray | memoryview) -> TFLiteModel:
    """Read a ``.tflite`` file (path) or its bytes.

    Raises :class:`ConvertError` (one line: what is wrong, what to do) for a
    missing or empty file, bytes that are not a TFLite flatbuffer, a file
    identifier other than ``TFL3``, buffers stored outside the flatbuffer
    (models over 2 GB), and truncated or corrupt files.
    """
    buf, label = _load(source)
    if not buf:
        raise ConvertError(f"{label} is empty (0 bytes)", hint="re-run the conversion to write a .tflite file")
    if len(buf) < 8:
        raise ConvertError(
            f"{label} is not a TFLite model ({len(buf)} bytes, too short for a flatbuffer)",
            hint="give a .tflite file written by the TFLite converter",
        )
    ident = bytes(_util.GetBufferIdentifier(buf, 0))
    if ident != FILE_IDENTIFIER:
        raise ConvertError(
            f"{label} is not a TFLite model (file identifier {ident!r}, expected b'TFL3')",
            hint="give a .tflite file written by the TFLite converter",
        )
    try:
        return _decode(buf)
    except ConvertError:
        raise
    except (_Corrupt, struct.error, IndexError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise ConvertError(
            f"{label} is truncated or corrupt ({exc})",
            hint="re-run the conversion; the file may have been cut short while copying",
        ) from exc


def _decode(buf: bytes) -> TFLiteModel:
    root = _Reader(buf, _encode.Get(_N.UOffsetTFlags.packer_type, buf, 0))
    schema_version = root.scalar(_MODEL_VERSION, _N.Uint32Flags, 0)
    description = root.string(_MODEL_DESCRIPTION) or ""

    buffers = root.tables(_MODEL_BUFFERS)
    for i, b in enumerate(buffers):
        offset = b.scalar(_B_OFFSET, _N.Uint64Flags, 0)
        if offset != 0:
            raise ConvertError(
                f"buffer {i} of the model is stored outside the flatbuffer (offset {offset}); "
                "external buffers (models over 2 GB) are not supported",
                hint="convert a smaller model; microcontroller models must fit in flash anyway",
            )

    subgraphs = root.tables(_MODEL_SUBGRAPHS)
    if not subgraphs:
        raise _Corrupt("the model has no subgraph")
    sg = subgraphs[0]

    tensors = tuple(_decode_tensor(i, t, buffers) for i, t in enumerate(sg.tables(_SG_TENSORS)))
    n_t = len(tensors)

    def indices(reader: _Reader, slot: int, what: str, optional: bool) -> tuple[int, ...]:
        arr = reader.array(slot, "<i4")
        out = () if arr is None else tuple(int(v) for v in arr)
        for v in out:
            if not (0 <= v < n_t or (optional and v == -1)):
                raise _Corrupt(f"{what} refers to tensor {v}, but there are {n_t}")
        return out

    opcodes = [_decode_opcode(oc) for oc in root.tables(_MODEL_OPCODES)]
    operators = []
    for k, op in enumerate(sg.tables(_SG_OPERATORS)):
        idx = op.scalar(_OP_OPCODE_INDEX, _N.Uint32Flags, 0)
        if idx >= len(opcodes):
            raise _Corrupt(f"operator {k} uses opcode {idx}, but there are {len(opcodes)}")
        code, op_version, custom = opcodes[idx]
        act, options = _decode_options(op)
        operators.append(
            Operator(
                index=k,
                opcode=opcode_name(code),
                builtin_code=code,
                version=op_version,
                inputs=indices(op, _OP_INPUTS, f"operator {k} input", True),
                outputs=indices(op, _OP_OUTPUTS, f"operator {k} output", True),
                fused_activation=act,
                options=options,
                custom_code=custom,
            )
        )

    return TFLiteModel(
        version=int(schema_version),
        description=description,
        operators=tuple(operators),
        tensors=tensors,
        inputs=indices(sg, _SG_INPUTS, "subgraph input", False),
        outputs=indices(sg, _SG_OUTPUTS, "subgraph output", False),
        buffers=len(buffers),
        n_subgraphs=len(subgraphs),
        sha256=hashlib.sha256(buf).hexdigest(),
        size=len(buf),
    )


def _decode_opcode(oc: _Reader) -> tuple[int, int, str | None]:
    deprecated = oc.scalar(_OC_DEPRECATED_CODE, _N.Int8Flags, 0)
    builtin = oc.scalar(_OC_BUILTIN_CODE, _N.Int32Flags, 0)
    version = oc.scalar(_OC_VERSION, _N.Int32Flags, 1)
    return max(int(builtin), int(deprecated)), int(version), oc.string(_OC_CUSTOM)


def _decode_options(op: _Reader) -> tuple[str | None, dict[str, Any]]:
    kind = op.scalar(_OP_OPTIONS_TYPE, _N.Uint8Flags, 0)
    if kind == _SOFTMAX_OPTIONS:
        opts = op.table(_OP_OPTIONS)
        beta = 0.0 if opts is None else float(opts.scalar(_SOFTMAX_BETA, _N.Float32Flags, 0.0))
        return None, {"beta": beta}
    slot = _FUSED_ACTIVATION_SLOT.get(kind)
    if slot is None:
        return None, {}
    opts = op.table(_OP_OPTIONS)
    act_code = 0 if opts is None else opts.scalar(slot, _N.Int8Flags, 0)
    act = ACTIVATIONS.get(act_code, f"ACTIVATION_{act_code}")
    if kind != _FULLY_CONNECTED_OPTIONS:
        return act, {}
    if opts is None:
        wf = keep = asym = bias_type = 0
    else:
        wf = opts.scalar(_FC_WEIGHTS_FORMAT, _N.Int8Flags, 0)
        keep = opts.scalar(_FC_KEEP_DIMS, _N.BoolFlags, False)
        asym = opts.scalar(_FC_ASYM, _N.BoolFlags, False)
        bias_type = opts.scalar(_FC_BIAS_TYPE, _N.Int8Flags, 0)
    return act, {
        "fused_activation_function": act,
        "weights_format": _WEIGHTS_FORMATS.get(wf, f"FORMAT_{wf}"),
        "keep_num_dims": bool(keep),
        "asymmetric_quantize_inputs": bool(asym),
        "quantized_bias_type": _type_name(bias_type),
    }


def _type_name(code: int) -> str:
    entry = TENSOR_TYPES.get(int(code))
    return entry[0] if entry else f"type_{int(code)}"


def _decode_tensor(index: int, t: _Reader, buffers: list[_Reader]) -> Tensor:
    shape_arr = t.array(_T_SHAPE, "<i4")
    shape = () if shape_arr is None else tuple(int(v) for v in shape_arr)
    type_code = t.scalar(_T_TYPE, _N.Int8Flags, 0)
    dtype_name = _type_name(type_code)
    np_dtype = TENSOR_TYPES.get(int(type_code), (None, None))[1]
    name = t.string(_T_NAME) or ""
    buffer = int(t.scalar(_T_BUFFER, _N.Uint32Flags, 0))
    if buffer >= len(buffers):
        raise _Corrupt(f"tensor {index} ({name}) uses buffer {buffer}, but there are {len(buffers)}")

    data = None
    raw = buffers[buffer].array(_B_DATA, "u1")
    if raw is not None and raw.size:
        if np_dtype is None:
            data = raw  # strings, packed int4, ...: raw bytes
        else:
            dt = np.dtype(np_dtype)
            count = math.prod(shape)
            if any(d < 0 for d in shape) or count * dt.itemsize != raw.size:
                raise _Corrupt(
                    f"tensor {index} ({name}) has shape {shape} {dtype_name} "
                    f"but its buffer holds {raw.size} bytes"
                )
            data = raw.view(dt).reshape(shape)
        data = _frozen(data)

    quant = None
    q = t.table(_T_QUANT)
    if q is not None:
        scales = q.array(_Q_SCALE, "<f4")
        if scales is not None and scales.size:
            zps = q.array(_Q_ZERO_POINT, "<i8")
            if zps is None or zps.size == 0:
                zps = np.zeros(scales.size, np.int64)
            if zps.size != scales.size:
                raise _Corrupt(
                    f"tensor {index} ({name}) has {scales.size} scales but {zps.size} zero points"
                )
            qdim = int(q.scalar(_Q_DIM, _N.Int32Flags, 0))
            quant = Quantization(
                scales=_frozen(scales.astype(np.float32)),
                zero_points=_frozen(zps.astype(np.int64)),
                quantized_dimension=qdim,
            )
    return Tensor(
        index=index,
        name=name,
        shape=shape,
        dtype=dtype_name,
        buffer=buffer,
        data=data,
        quantization=quant,
    )
