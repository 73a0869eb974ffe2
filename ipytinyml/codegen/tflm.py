"""The ``tflm`` runtime: an Arduino sketch that runs the int8 model with TensorFlow Lite Micro.

For 32-bit boards with an Arduino TFLM library (the Nano 33 BLE / Sense is
the reference). The sketch folder gets:

``<sketch>.ino``
    ``setup()`` opens Serial, builds the interpreter, prints the protocol
    banner (and one ``#err 8 model failed: ...`` line if the interpreter could
    not be built); ``loop()`` serves the protocol.
``model.h`` / ``model.cpp``
    the ``.tflite`` file as ``alignas(16) const unsigned char
    tinyml_model_data[]`` (16-byte alignment: the schema's ``force_align: 16``
    buffers and CMSIS-NN's loads rely on it; ``const`` keeps it in flash on
    ARM, and ``PROGMEM`` must not be used with TFLM) and its size
    ``tinyml_model_data_len``.
``tinyml_model.h`` / ``tinyml_model.cpp``
    the seam the shared protocol uses (docs/internals.md): the quantization
    constants of the int8 input and output and ``tinyml_model_invoke()``,
    implemented with a ``MicroMutableOpResolver`` registering exactly the
    model's ops, a static arena and a ``MicroInterpreter``.
``tinyml_protocol.h/.cpp``, ``tinyml_port.h``
    copied unchanged from ``firmware_templates/common/``.

Arena size
----------
``tflite-micro`` (the PyPI package, same allocator as the board) measures the
arena the model needs, but on the 64-bit host. On a 32-bit Cortex-M the
persistent structures are smaller (pointers and ``size_t`` are 4 bytes
instead of 8: ``TfLiteEvalTensor``, ``TfLiteTensor``, node and registration
tables), so the measurement is an upper bound for those. What the host does
not see: CMSIS-NN kernels (the Arduino ports build them for Cortex-M) may ask
for scratch buffers the reference kernels don't need; for FULLY_CONNECTED
that is at most one int32 per output unit (kernel sums), bounded here by
``4 * n_out`` bytes per layer, each rounded up to 16; each buffer is 16-byte
aligned; and the Arduino ports are older TFLM snapshots whose allocator may
differ slightly. So::

    arena = align16(measured + cmsis_scratch + max(1024, measured // 4))

i.e. the measurement, the scratch bound, and a margin of a quarter (at least
1 KB) for the rest. The Nano 33 BLE has 256 KB of RAM, so the margin costs
nothing that matters; running out would cost a failed ``AllocateTensors()``.
The board reports what it really used (``interpreter.arena_used_bytes()``) as
``arena=`` in the info answer. Without tflite-micro (it has Linux x86-64
wheels only) the arena falls back to 10 x the model size, at least 8 KB:
tflite-micro's own default, stated as such in the generated file.

Exactness with float-I/O models
-------------------------------
The protocol hands ``tinyml_model_invoke()`` int8 values (quantized on the
board exactly as QUANTIZE does, or raw). A float-I/O model starts with
QUANTIZE and ends with DEQUANTIZE, so the glue dequantizes into the float
input tensor and re-quantizes the float output; both round trips give back
the very int8 values (proof in the generated ``tinyml_model.cpp``), so the
board's int8 answers are bit-identical to the int8-I/O model's.

Per-channel Dense weights are refused: the Arduino TFLM ports only implement
per-tensor FULLY_CONNECTED and compute wrong outputs without any error for
per-channel weights (brief 0.1). ``--runtime native`` runs both layouts.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConvertError, ToolchainError
from ..quant import ModelPlan

__all__ = [
    "DEFAULT_HEADER",
    "HEADERS",
    "OP_REGISTRATIONS",
    "ArenaPlan",
    "arena_plan",
    "op_registrations",
    "c_byte_array",
    "generate_tflm",
    "render_tflm_sketch",
    "library_for_header",
]

# Header a sketch includes -> Library Manager name of the library that provides it.
# (The Chirale library's registry name really is spelt "TensorFLowLite".)
HEADERS = {
    "Chirale_TensorFlowLite.h": "Chirale_TensorFLowLite",
    "TensorFlowLite.h": "Arduino_TensorFlowLite",
}
DEFAULT_HEADER = "Chirale_TensorFlowLite.h"

# Builtin operator (schema name, as tflite_file reports it) -> the
# MicroMutableOpResolver method that registers it. The same 96 builtin
# methods exist in both Arduino ports (Chirale_TensorFLowLite 2.0.0 and
# tflite-micro-arduino-examples 2.4.0-ALPHA); an op not listed here cannot
# be registered by name and is refused at generation time.
OP_REGISTRATIONS = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin", "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs", "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce", "CAST": "AddCast", "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D", "COS": "AddCos",
    "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "ELU": "AddElu", "EQUAL": "AddEqual", "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill", "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather", "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual", "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization", "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual", "LOG": "AddLog",
    "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D", "MIRROR_PAD": "AddMirrorPad", "MEAN": "AddMean",
    "MINIMUM": "AddMinimum", "MUL": "AddMul", "NEG": "AddNeg", "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2", "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable", "REDUCE_MAX": "AddReduceMax",
    "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear", "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "ROUND": "AddRound", "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape",
    "SIN": "AddSin", "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQUEEZE": "AddSqueeze", "SQRT": "AddSqrt",
    "SQUARE": "AddSquare", "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf",
    "TANH": "AddTanh", "TRANSPOSE_CONV": "AddTransposeConv", "TRANSPOSE": "AddTranspose",
    "UNPACK": "AddUnpack", "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}

SCHEMA_VERSION = 3  # TFLITE_SCHEMA_VERSION in micro_interpreter.h, both ports
ARENA_MARGIN_MIN = 1024
ARENA_MARGIN_DIVISOR = 4  # margin = max(1 KB, a quarter of the measurement)
FALLBACK_ARENA_FACTOR = 10  # tflite-micro's default arena: 10 x the model size
FALLBACK_ARENA_MIN = 8192
BYTES_PER_LINE = 12  # model array: fixed width, so the output is deterministic

_SKETCH_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


def library_for_header(header: str) -> str:
    """Library Manager name of the TFLM library that provides ``header``.

    >>> library_for_header("Chirale_TensorFlowLite.h")
    'Chirale_TensorFLowLite'
    """
    try:
        return HEADERS[header]
    except KeyError:
        raise ConvertError(f"unknown TFLM header {header!r}",
                           hint=f"use one of {', '.join(HEADERS)}") from None


# ---------------------------------------------------------------------------
# pure helpers


def _align16(n: int) -> int:
    return (int(n) + 15) // 16 * 16


def c_byte_array(data: bytes, *, per_line: int = BYTES_PER_LINE, indent: str = "    ") -> str:
    """The body of an ``unsigned char`` initializer: lowercase hex, ``per_line`` bytes a line.

    >>> print(c_byte_array(bytes(range(14)), per_line=6))
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
        0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
        0x0c, 0x0d
    """
    data = bytes(data)
    lines = []
    for start in range(0, len(data), per_line):
        chunk = data[start:start + per_line]
        lines.append(indent + ", ".join(f"0x{b:02x}" for b in chunk))
    return ",\n".join(lines)


def _c_string(text: str) -> str:
    """A C string literal: printable ASCII kept, anything else as 3-digit octal escapes.

    >>> print(_c_string('mpg "x"?'))
    "mpg \\"x\\"\\077"
    """
    out = []
    for byte in str(text).encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= byte < 0x7F and ch != "?":  # '?': no trigraphs
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _float32_bits(value: float) -> str:
    """The float32 bits of ``value`` as an exact C literal.

    >>> _float32_bits(1.0)
    '0x3f800000UL'
    """
    (bits,) = struct.unpack("<I", struct.pack("<f", float(value)))
    return f"0x{bits:08x}UL"


def _int_literal(value: int) -> str:
    value = int(value)
    return f"({value})" if value < 0 else str(value)


def op_registrations(op_names) -> list[tuple[str, str]]:
    """``(opcode, resolver method)`` for each distinct op, in order of first use.

    >>> op_registrations(["QUANTIZE", "FULLY_CONNECTED", "FULLY_CONNECTED", "DEQUANTIZE"])
    [('QUANTIZE', 'AddQuantize'), ('FULLY_CONNECTED', 'AddFullyConnected'), ('DEQUANTIZE', 'AddDequantize')]
    """
    seen: dict[str, str] = {}
    for name in op_names:
        if name in seen:
            continue
        method = OP_REGISTRATIONS.get(name)
        if method is None:
            raise ConvertError(
                f"the model uses op {name}, which the tflm sketch cannot register with "
                "MicroMutableOpResolver",
                hint="use --runtime native for Dense models, or a model made of ops the Arduino "
                     "TFLM library provides")
        seen[name] = method
    return list(seen.items())


@dataclass(frozen=True)
class ArenaPlan:
    """How the static arena of the sketch was sized (all in bytes)."""

    size: int  # the arena in the sketch: a multiple of 16
    measured: int | None  # tflite-micro's use on the 64-bit host, None when not measured
    scratch: int  # bound on CMSIS-NN scratch buffers
    margin: int
    source: str  # one line for the generated comment

    def to_dict(self) -> dict:
        return {"size": self.size, "measured": self.measured, "scratch": self.scratch,
                "margin": self.margin, "source": self.source}


def arena_plan(measured: int | None, plan: ModelPlan, model_size: int) -> ArenaPlan:
    """Size the arena from a host measurement (or the fallback) plus the margin (module docstring)."""
    scratch = sum(_align16(4 * layer.n_out) for layer in plan.layers)
    if measured is None:
        size = _align16(max(FALLBACK_ARENA_MIN, FALLBACK_ARENA_FACTOR * int(model_size)))
        return ArenaPlan(size=size, measured=None, scratch=scratch, margin=0,
                         source=f"not measured (tflite-micro is not installed): "
                                f"{FALLBACK_ARENA_FACTOR} x the model size, at least {FALLBACK_ARENA_MIN}")
    measured = int(measured)
    if measured <= 0:
        raise ConvertError(f"tflite-micro reported an arena of {measured} bytes; check the model")
    margin = max(ARENA_MARGIN_MIN, measured // ARENA_MARGIN_DIVISOR)
    size = _align16(measured + scratch + margin)
    return ArenaPlan(size=size, measured=measured, scratch=scratch, margin=margin,
                     source=f"tflite-micro measured {measured} on the 64-bit host, + {scratch} CMSIS-NN "
                            f"scratch bound + {margin} margin, rounded up to 16")


def _measure_arena(model_bytes: bytes) -> int | None:
    """tflite-micro's arena use for the model; None when tflite-micro is not installed."""
    from ..reference import micro_arena_bytes
    try:
        return micro_arena_bytes(model_bytes)
    except ToolchainError:  # tflite-micro missing (non-Linux-x86 hosts)
        return None


# ---------------------------------------------------------------------------
# checks


def _check_model(model, plan: ModelPlan) -> None:
    if model.version != SCHEMA_VERSION:
        raise ConvertError(f"the model has schema version {model.version}; the Arduino TFLM "
                           f"libraries run version {SCHEMA_VERSION}",
                           hint="re-convert with a current TFLite converter")
    for i, layer in enumerate(plan.layers):
        if layer.per_channel:
            raise ConvertError(
                f"Dense layer {i} has per-channel weights ({layer.n_out} scales): the Arduino TFLM "
                "libraries only run per-tensor FULLY_CONNECTED and would silently compute wrong "
                "outputs",
                hint="re-quantize with per-tensor weights (the default: convert(..., per_channel=False)) "
                     "or flash with --runtime native")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConvertError("the tflm sketch needs a model with one input and one output tensor")
    t_in, t_out = model.input_tensors[0], model.output_tensors[0]
    want_in = "float32" if plan.float_input else "int8"
    want_out = "float32" if plan.float_output else "int8"
    if t_in.dtype != want_in or t_out.dtype != want_out:
        raise ConvertError(f"the model's input/output are {t_in.dtype}/{t_out.dtype} but its plan "
                           f"expects {want_in}/{want_out}; the plan was made from another model")


# ---------------------------------------------------------------------------
# rendering


def _templates() -> Path:
    from . import template_root
    return template_root() / "tflm"


def _environment(folder: Path):
    import jinja2
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True,
                              loader=jinja2.FileSystemLoader(str(folder)))


def _version() -> str:
    from .. import __version__
    return __version__


def generate_tflm(model_bytes: bytes, plan: ModelPlan, out_dir, *, model_hash: str,
                  header: str = DEFAULT_HEADER, input_label: str, output_label: str,
                  board_name: str, sketch_name: str | None = None,
                  arena_bytes: int | None = None, stage=None, classes=None) -> list[Path]:
    """Write a complete TFLM sketch for ``model_bytes`` into ``out_dir``.

    Parameters
    ----------
    model_bytes : the int8 ``.tflite`` file (embedded byte for byte)
    plan : its ``quant.plan_from_model`` plan (quantization of the int8 ends)
    out_dir : folder to write into (created if missing); existing files of the
        same names are overwritten
    model_hash : first 12 hex digits of the file's SHA-256, for the banner
    header : ``"Chirale_TensorFlowLite.h"`` (Library Manager ``Chirale_TensorFLowLite``)
        or ``"TensorFlowLite.h"`` (tflite-micro-arduino-examples)
    input_label, output_label : names in the protocol's human answers
    board_name : board name in the banner (``"nano33ble"``)
    sketch_name : name of the ``.ino`` (default: the folder's name; arduino-cli
        requires the two to match)
    arena_bytes : measured arena use to size from instead of measuring with tflite-micro
    stage : the input pre-stage (``ipytinyml.prestage.InputStage``) the board applies to
        typed values; None: the identity stage (plain QUANTIZE with the input scale)
    classes : a classifier's class names in index order (report.json ``classes``): the
        human answer then names the class (``codegen.classes``); None for a regression

    Returns
    -------
    list of Path : the files written, ``.ino`` first

    Raises
    ------
    ConvertError
        Per-channel weights, an op the resolver cannot register, a schema
        version other than 3, an unknown header, or a ``stage`` that does not
        fit the plan.
    """
    from ..tflite_file import read_tflite

    model_bytes = bytes(model_bytes)
    out_dir = Path(out_dir)
    sketch_name = sketch_name or out_dir.name
    if not _SKETCH_NAME.match(sketch_name):
        raise ConvertError(f"sketch name {sketch_name!r} is not a plain identifier")
    if not re.fullmatch(r"[0-9a-f]{1,64}", str(model_hash)):
        raise ConvertError(f"model hash {model_hash!r} is not lowercase hex")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,32}", str(board_name)):
        raise ConvertError(f"board name {board_name!r} must be 1-32 letters, digits or _.:-")
    from . import cgen, input_stage_for
    from .classes import header_context

    stage = input_stage_for(plan, stage)
    library = library_for_header(header)
    model = read_tflite(model_bytes)
    _check_model(model, plan)
    ops = op_registrations(model.op_names)
    measured = arena_bytes if arena_bytes is not None else _measure_arena(model_bytes)
    arena = arena_plan(measured, plan, len(model_bytes))

    values = dict(
        version=_version(), model_hash=model_hash, board_name=board_name, header=header,
        library=library, sketch_name=sketch_name,
        model_len=len(model_bytes), model_array=c_byte_array(model_bytes),
        ops=ops, n_inputs=plan.n_inputs, n_outputs=plan.n_outputs,
        input_scale_bits=_float32_bits(plan.input.scale), input_scale=repr(plan.input.scale),
        input_zero_point=_int_literal(plan.input.zero_point),
        input_stage_rows=cgen.stage_table(stage.mean, stage.div),
        output_scale_bits=_float32_bits(plan.output.scale), output_scale=repr(plan.output.scale),
        output_zero_point=_int_literal(plan.output.zero_point),
        input_label=_c_string(input_label), output_label=_c_string(output_label),
        float_input=int(plan.float_input), float_output=int(plan.float_output),
        arena=arena, schema_version=SCHEMA_VERSION,
        **header_context(classes, plan.output, plan.n_outputs),
    )
    env = _environment(_templates())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for template, name in (("sketch.ino.j2", f"{sketch_name}.ino"), ("model.h.j2", "model.h"),
                           ("model.cpp.j2", "model.cpp"), ("tinyml_model.h.j2", "tinyml_model.h"),
                           ("tinyml_model.cpp.j2", "tinyml_model.cpp")):
        path = out_dir / name
        path.write_text(env.get_template(template).render(**values))
        written.append(path)
    from .sketch import copy_common
    return written + copy_common(out_dir)


def render_tflm_sketch(model_bytes: bytes, plan: ModelPlan, folder, *, sketch_name: str,
                       board_name: str, model_hash: str, input_label: str, output_label: str,
                       header: str = DEFAULT_HEADER, arena_bytes: int | None = None,
                       stage=None, classes=None) -> Path:
    """Write ``folder/<sketch_name>/`` (replacing it whole, never half-written) and return it.

    The TFLM twin of ``sketch.render_native_sketch``: the sketch is generated
    in a staging folder beside the target and swapped in when complete.
    ``stage``: the input pre-stage (None: the identity stage) and ``classes``, as in ``generate_tflm``.
    """
    from . import input_stage_for
    from .sketch import write_sketch_folder

    stage = input_stage_for(plan, stage)  # refused before anything is written

    def fill(staging: Path) -> None:
        generate_tflm(model_bytes, plan, staging, sketch_name=sketch_name, board_name=board_name,
                      model_hash=model_hash, input_label=input_label, output_label=output_label,
                      header=header, arena_bytes=arena_bytes, stage=stage, classes=classes)

    return write_sketch_folder(folder, sketch_name, fill)
