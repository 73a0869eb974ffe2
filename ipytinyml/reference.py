"""Run a .tflite model on the host.

Two interpreters:

- LiteRT (``ai_edge_litert``) with ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``: runs
  every variant; without the XNNPACK delegate its int8 results match TFLM.
- tflite-micro (``tflite_micro``, optional extra ``oracle``): TensorFlow Lite
  Micro's own reference kernels. What the boards compute, with one known
  exception: the wheel takes a per-tensor layer's ``s_in * s_w`` in double
  where every compiled TFLM (the boards' included) takes it in float32, so an
  output can be 1 LSB off near a rounding boundary; ``ipytinyml.quant``
  follows the boards (see ``quant.plan_from_model``). Also measures the arena
  a model needs.

Both take and return float32 arrays shaped [samples, features]; int8-I/O
models are fed with TFLite's exact QUANTIZE formula and read back with
DEQUANTIZE, so callers never handle the difference.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import numpy as np

from .errors import ConvertError, ToolchainError
from .quant import TensorQuant, dequantize, quantize

ORACLE_INSTALL = "pip install 'ipytinyml[oracle]' (tflite-micro, Linux x86-64 only)"


def _bytes(model) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    return Path(model).read_bytes()


def _flush_c_stdio() -> None:
    import ctypes
    ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def _output_captured():
    """tflite-micro prints from C++ straight to fds 1 and 2: divert both, and keep the text."""
    import sys
    import tempfile
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    captured: list[str] = []
    with tempfile.TemporaryFile() as sink:
        for fd in saved:
            os.dup2(sink.fileno(), fd)
        try:
            yield captured
        finally:
            _flush_c_stdio()  # printf output sits in libc's buffer until flushed
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def _tensor_quant(details: dict) -> TensorQuant:
    scale, zero_point = details["quantization"]
    return TensorQuant(scale=float(np.float32(scale)), zero_point=int(zero_point))


def _to_input(x: np.ndarray, details: dict) -> np.ndarray:
    if details["dtype"] == np.int8:
        return quantize(x, _tensor_quant(details))
    return np.asarray(x, dtype=details["dtype"])


def _from_output(y: np.ndarray, details: dict) -> np.ndarray:
    if details["dtype"] == np.int8:
        return dequantize(y, _tensor_quant(details))
    return np.asarray(y, dtype=np.float32)


def run_litert(model, x: np.ndarray) -> np.ndarray:
    """Float predictions of any variant with LiteRT, delegates off."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    x = np.asarray(x, dtype=np.float32)
    try:
        interpreter = Interpreter(model_content=_bytes(model),
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        inp = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ConvertError(f"LiteRT cannot load the model: {exc}") from exc
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    try:
        interpreter.set_tensor(inp["index"], _to_input(x, inp))
        interpreter.invoke()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvertError(f"LiteRT cannot run the model: {first[:200]}") from exc
    return _from_output(interpreter.get_tensor(out["index"]), out)


def run_staged(model, stage, x: np.ndarray, runner=None) -> np.ndarray:
    """An int8 graph behind its input pre-stage (``prestage.InputStage``): float features ->
    float outputs. The graph gets exactly the int8 input a board's pre-stage computes."""
    from .prestage import graph_input, graph_input_quant
    from .tflite_file import read_tflite

    scale, zero_point = graph_input_quant(read_tflite(_bytes(model)))
    return (runner or run_litert)(model, graph_input(stage.quantize(x), scale, zero_point))


def _micro_runtime():
    try:
        from tflite_micro import runtime
    except ImportError as exc:
        raise ToolchainError(f"tflite-micro is not installed; {ORACLE_INSTALL}") from exc
    return runtime


def micro_interpreter(model, arena_size: int | None = None):
    """A tflite-micro interpreter (allocation recording on), stdout kept clean."""
    runtime = _micro_runtime()
    with _output_captured() as printed:
        try:
            interpreter, failure = runtime.Interpreter.from_bytes(
                _bytes(model), arena_size=arena_size,
                intrepreter_config=runtime.InterpreterConfig.kAllocationRecording), None
        except RuntimeError as exc:
            failure = exc
    if failure is None:
        return interpreter
    detail = next((line for line in "".join(printed).splitlines() if line.strip()), str(failure))
    raise ConvertError(f"TensorFlow Lite Micro cannot load the model: {detail}") from failure


def _micro_details(details: dict) -> dict:
    q = details["quantization_parameters"]
    scales, zero_points = q["scales"], q["zero_points"]
    scale = float(scales[0]) if len(scales) else 0.0
    zero_point = int(zero_points[0]) if len(zero_points) else 0
    return {"dtype": details["dtype"], "quantization": (scale, zero_point)}


def run_micro(model, x: np.ndarray, interpreter=None) -> np.ndarray:
    """Float predictions with TensorFlow Lite Micro's reference kernels (one sample a call)."""
    interpreter = interpreter or micro_interpreter(model)
    inp = _micro_details(interpreter.get_input_details(0))
    out = _micro_details(interpreter.get_output_details(0))
    rows = []
    for row in np.asarray(x, dtype=np.float32):
        interpreter.set_input(_to_input(row[np.newaxis, :], inp), 0)
        interpreter.invoke()
        rows.append(_from_output(interpreter.get_output(0), out)[0])
    return np.asarray(rows, dtype=np.float32)


def micro_arena_bytes(model) -> int:
    """Arena bytes TFLM's recording allocator used for the model on this (64-bit) host."""
    interpreter = micro_interpreter(model)
    with _output_captured() as printed:
        interpreter.print_allocations()
    found = re.search(r"Arena allocation total (\d+) bytes", "".join(printed))
    if not found:
        raise ConvertError("tflite-micro did not report its arena use; check the tflite-micro version")
    return int(found.group(1))
