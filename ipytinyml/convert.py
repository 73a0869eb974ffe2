"""Keras -> TFLite variants, behind one function.

``convert`` is the only place that touches TensorFlow's converter, so a
future LiteRT converter can replace ``tf.lite.TFLiteConverter`` here alone.
Every full-integer model is read back and checked: a converter that silently
kept a float op (a known behaviour) is a ConvertError, not a surprise on the
board.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import ConvertError
from .prestage import InputStage, graph_input_quant

VARIANTS = ("float32", "float16", "dynamic", "int8")
REPRESENTATIVE_SAMPLES = 200

# Builtin ops TensorFlow Lite Micro can run with int8 tensors (the ones we expect in
# small dense/conv models; others are refused before they reach a board).
TFLM_INT8_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE",
    "FULLY_CONNECTED", "LOGISTIC", "MAX_POOL_2D", "MEAN", "MUL", "PAD", "QUANTIZE", "RELU",
    "RELU6", "RESHAPE", "SOFTMAX", "SUB", "TANH", "SHAPE", "STRIDED_SLICE", "PACK", "SQUEEZE",
})


@contextlib.contextmanager
def _quiet():
    """Silence the converter: C++ logging on fd 2, Keras' export summary on stdout, warnings."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # int8 I/O: "Statistics for quantized inputs" is expected
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def fold_normalization(model):
    """A copy of ``model`` with a leading ``Normalization`` folded into the ``Dense`` after it.

    ``Dense(W, b)`` applied to ``(x - mean) / std`` is ``Dense(W / std, b - (mean / std) @ W)``
    applied to ``x``. With more than one feature the converter would otherwise keep
    SUB and MUL ops that the microcontroller runtimes do not need; other models are
    returned unchanged.
    """
    import keras

    layers = getattr(model, "layers", [])
    if (not isinstance(model, keras.Sequential) or len(layers) < 2
            or not isinstance(layers[0], keras.layers.Normalization) or layers[0].invert
            or not isinstance(layers[1], keras.layers.Dense)):
        return model
    norm, dense = layers[0], layers[1]
    mean = np.asarray(norm.mean, dtype=np.float64).reshape(-1)
    std = np.maximum(np.sqrt(np.asarray(norm.variance, dtype=np.float64).reshape(-1)),
                     keras.config.epsilon())
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in dense.get_weights())
    if kernel.shape[0] != mean.size:  # a Normalization over another axis: leave it alone
        return model
    folded = keras.layers.Dense.from_config({**dense.get_config(), "name": dense.name + "_folded"})
    rest = [type(layer).from_config(layer.get_config()) for layer in layers[2:]]
    copy = keras.Sequential([keras.Input((mean.size,)), folded, *rest], name=model.name)
    folded.set_weights([(kernel / std[:, None]).astype(np.float32),
                        (bias - (mean / std) @ kernel).astype(np.float32)])
    for new, old in zip(rest, layers[2:]):
        new.set_weights(old.get_weights())
    return copy


# Layers that are the identity when a model predicts: skipped on the way to the first Dense.
_INFERENCE_NO_OPS = ("Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout",
                     "ActivityRegularization", "Flatten")
# A feature whose training values spread less than this, relative to their size, is constant.
CONSTANT_SPREAD = 1e-6


@dataclass(frozen=True)
class Int8Model:
    """A full-integer model and the input pre-stage that feeds it (see ``prestage``)."""

    flatbuffer: bytes
    stage: InputStage
    standardized: bool  # False: the graph takes the raw features (a model it could not rewrite)
    constant: tuple[bool, ...]  # per feature: constant in the training data, so ignored


def constant_features(train_x: np.ndarray) -> np.ndarray:
    """Per feature: does it (almost) never change in the training data?"""
    x = np.asarray(train_x, dtype=np.float64)
    spread = x.max(axis=0) - x.min(axis=0)
    return spread <= CONSTANT_SPREAD * np.maximum(np.abs(x).max(axis=0), np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class FirstDense:
    """Where a model's first Dense sits and what it sees: ``u = (x - offset) / divisor``, from a
    leading Normalization, Rescaling or BatchNormalization (``preprocessing``), else ``x`` itself."""

    index: int  # of the Dense in model.layers
    offset: np.ndarray
    divisor: np.ndarray
    preprocessing: bool


def first_dense(model, n_features: int) -> FirstDense | None:
    """The first Dense of a Sequential model whose first computing layer is a Dense (after one
    optional Normalization, Rescaling or BatchNormalization, and layers that do nothing at
    inference), else None."""
    import keras

    layers = list(getattr(model, "layers", []))
    if not isinstance(model, keras.Sequential) or not layers:
        return None
    offset, divisor, i = np.zeros(n_features), np.ones(n_features), 0
    first = layers[0]
    preprocessing = isinstance(first, (keras.layers.Normalization, keras.layers.Rescaling,
                                       keras.layers.BatchNormalization))
    if isinstance(first, keras.layers.Normalization):
        mean = np.asarray(first.mean, dtype=np.float64).reshape(-1)
        if first.invert or mean.size != n_features:
            return None
        variance = np.asarray(first.variance, dtype=np.float64).reshape(-1)
        offset = mean
        divisor = np.maximum(np.sqrt(variance), keras.config.epsilon())  # what Normalization divides by
        i = 1
    elif isinstance(first, keras.layers.BatchNormalization):
        # at inference: gamma * (x - mean) / sqrt(var + eps) + beta == (x - a) / c
        if first.axis not in (-1, 1):
            return None
        mean = np.asarray(first.moving_mean, dtype=np.float64).reshape(-1)
        root = np.sqrt(np.asarray(first.moving_variance, dtype=np.float64).reshape(-1) + first.epsilon)
        gamma = np.asarray(first.gamma, dtype=np.float64).reshape(-1) if first.scale else np.ones_like(mean)
        beta = np.asarray(first.beta, dtype=np.float64).reshape(-1) if first.center else np.zeros_like(mean)
        if mean.size != n_features or not np.all(gamma != 0):
            return None
        divisor = root / gamma
        offset, i = mean - beta * divisor, 1
    elif isinstance(first, keras.layers.Rescaling):
        scale = np.broadcast_to(np.asarray(first.scale, dtype=np.float64), (n_features,))
        shift = np.broadcast_to(np.asarray(first.offset, dtype=np.float64), (n_features,))
        if not np.all(scale != 0):
            return None
        offset, divisor, i = -shift / scale, 1.0 / scale, 1  # x * s + o == (x + o / s) / (1 / s)
    while i < len(layers) and (type(layers[i]).__name__ in _INFERENCE_NO_OPS or (
            isinstance(layers[i], keras.layers.Reshape) and tuple(layers[i].target_shape) == (n_features,))):
        i += 1
    if i == len(layers) or not isinstance(layers[i], keras.layers.Dense):
        return None
    if np.asarray(layers[i].get_weights()[0]).shape[0] != n_features:
        return None
    return FirstDense(index=i, offset=offset, divisor=divisor, preprocessing=preprocessing)


def standardization(train_x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, std, constant)`` per feature of the training data; ``std`` is 1 where constant."""
    x = np.asarray(train_x, dtype=np.float64)
    constant = constant_features(x)
    return x.mean(axis=0), np.where(constant, 1.0, x.std(axis=0)), constant


def absorbed(kernel, bias, first: FirstDense, mean, std, constant) -> tuple[np.ndarray, np.ndarray]:
    """``(W', b')`` of a first Dense fed ``z = (x - mean) / std`` instead of ``u = (x - a) / c``:
    with ``x = std * z + mean``, ``W' = W * std / c`` and ``b' = b + ((mean - a) / c) @ W``
    (exact in float); a constant feature's weights become 0."""
    kernel = np.asarray(kernel, dtype=np.float64)
    bias = np.zeros(kernel.shape[1]) if bias is None else np.asarray(bias, dtype=np.float64)
    a, c = first.offset, first.divisor
    new_kernel = np.where(np.asarray(constant)[:, None], 0.0, kernel * (std / c)[:, None])
    return new_kernel, bias + ((mean - a) / c) @ kernel


def standardized_graph(model, train_x: np.ndarray):
    """The int8 graph's float model: ``model`` taking standardized features.

    Returns ``(graph, mean, std, constant)`` with ``graph(z) == model(x)`` for ``z = (x - mean) / std``
    (``std`` is 1 for a constant feature, whose weights become 0: a value it never had in
    training contributes nothing instead of exploding), or ``None`` when the model does not
    start with a Dense (after an optional Normalization or Rescaling) that can absorb the
    standardization (``absorbed``).
    """
    import keras

    n = np.asarray(train_x).shape[1]
    found = first_dense(model, n)
    if found is None:
        return None
    layers = list(model.layers)
    i = found.index
    dense = layers[i]
    mean, std, constant = standardization(train_x)
    weights = dense.get_weights()
    new_kernel, new_bias = absorbed(weights[0], weights[1] if dense.use_bias else None, found,
                                    mean, std, constant)
    config = {**dense.get_config(), "name": dense.name + "_standardized", "use_bias": True}
    first = keras.layers.Dense.from_config(config)
    rest = [type(layer).from_config(layer.get_config()) for layer in layers[i + 1:]]
    graph = keras.Sequential([keras.Input((n,)), first, *rest], name=model.name)
    first.set_weights([new_kernel.astype(np.float32), new_bias.astype(np.float32)])
    for new, old in zip(rest, layers[i + 1:]):
        new.set_weights(old.get_weights())
    return graph, mean, std, constant


def to_int8(model, train_x: np.ndarray, *, per_channel: bool = False, int8_io: bool = False) -> Int8Model:
    """The full-integer model a board runs, with its input pre-stage.

    The graph takes standardized features (``standardized_graph``), calibrated on the
    standardized training set; the pre-stage maps typed values to its int8 input. A model
    that cannot be rewritten keeps its raw input and gets plain QUANTIZE as its pre-stage.
    """
    from .tflite_file import read_tflite

    if train_x is None or len(train_x) == 0:
        raise ConvertError("the int8 variant needs training features for its representative dataset")
    train_x = np.asarray(train_x, dtype=np.float32)
    try:
        rewritten = standardized_graph(model, train_x)
    except (ValueError, TypeError, KeyError) as exc:  # a layer Keras cannot rebuild from its config
        raise ConvertError(f"cannot rewrite the model to take standardized features: {exc}".splitlines()[0][:300],
                           hint="start the model with a plain Dense layer") from exc
    if rewritten is None:
        graph, mean, std = model, np.zeros(train_x.shape[1]), np.ones(train_x.shape[1])
        constant = np.zeros(train_x.shape[1], dtype=bool)
    else:
        graph, mean, std, constant = rewritten
    z = ((train_x - mean) / std).astype(np.float32)
    flatbuffer = convert(graph, "int8", z, per_channel=per_channel, int8_io=int8_io)
    _check_biases(read_tflite(flatbuffer))
    scale, zero_point = graph_input_quant(read_tflite(flatbuffer))
    if rewritten is None:
        stage = InputStage.identity(scale, zero_point, train_x.shape[1])
    else:
        stage = InputStage.standardize(mean, std, scale, zero_point)
    return Int8Model(flatbuffer=flatbuffer, stage=stage, standardized=rewritten is not None,
                     constant=tuple(bool(c) for c in constant))


BIAS_SATURATED = 2**30  # the converter clamps an int32 bias it cannot represent here


def _check_biases(model) -> None:
    """Refuse a layer whose int32 bias the converter clamped: its input barely varied on the
    training data (dead ReLU units), so the bias scale is tiny and TFLite refuses the layer."""
    fully_connected = [op for op in model.operators if op.opcode == "FULLY_CONNECTED"]
    for n, op in enumerate(fully_connected, start=1):
        if len(op.inputs) < 3 or op.inputs[2] < 0:
            continue
        bias = model.tensors[op.inputs[2]].data
        if bias is not None and bias.size and int(np.abs(bias.astype(np.int64)).max()) >= BIAS_SATURATED:
            raise ConvertError(f"Dense layer {n} cannot be quantized: the layer before it gives (almost) "
                               "the same output for every training row (dead ReLU units?)",
                               hint="retrain with another seed, more epochs or standardized features")


def _converter_for(model):
    """``from_keras_model``, or the brief's fallback through a SavedModel export."""
    import tensorflow as tf
    try:
        return tf.lite.TFLiteConverter.from_keras_model(model), None
    except Exception:  # noqa: BLE001 - any failure here means "try the documented fallback"
        export_dir = tempfile.mkdtemp(prefix="ipytinyml-export-")
        model.export(export_dir, format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(export_dir), export_dir


def _representative(train_x: np.ndarray):
    rows = np.asarray(train_x, dtype=np.float32)[:REPRESENTATIVE_SAMPLES]

    def generate():
        for row in rows:
            yield [row[np.newaxis, :]]
    return generate


def convert(model, variant: str, train_x: np.ndarray | None = None, *,
            per_channel: bool = False, int8_io: bool = False) -> bytes:
    """Convert a Keras model to one TFLite variant and return the flatbuffer bytes.

    Parameters
    ----------
    model : keras.Model with a fixed input shape
    variant : "float32", "float16", "dynamic" (int8 weights) or "int8" (full integer)
    train_x : training features; the int8 representative dataset is drawn from them
    per_channel : int8 only; one weight scale per Dense unit. Off by default because the
        Arduino TFLM ports silently compute wrong results with it (brief 0.1).
    int8_io : int8 only; int8 model input and output instead of float32

    Raises
    ------
    ConvertError
        Unknown variant, a conversion failure, an op TFLM cannot run, or a model that
        did not come out fully int8.
    """
    if variant not in VARIANTS:
        raise ConvertError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if variant != "int8" and (per_channel or int8_io):
        raise ConvertError("per_channel and int8_io apply to the int8 variant only")
    if variant == "int8" and (train_x is None or len(train_x) == 0):
        raise ConvertError("the int8 variant needs training features for its representative dataset")
    if variant == "int8":
        model = fold_normalization(model)
        # TF's int8 calibration crashes the whole process (SIGSEGV, seen with TF 2.21) on ops
        # that have no int8 kernel, such as EXP in softplus: refuse those from the float graph.
        _check_ops(_convert_once(model, "float32", None, False, False))
    flatbuffer = _convert_once(model, variant, train_x, per_channel, int8_io)
    if variant == "int8":
        check_full_integer(flatbuffer, int8_io=int8_io)
    return flatbuffer


def _convert_once(model, variant, train_x, per_channel, int8_io) -> bytes:
    import tensorflow as tf

    converter, export_dir = _converter_for(model)
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(train_x)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        with _quiet():
            return bytes(converter.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises many unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvertError(f"TFLite conversion to {variant} failed: {first[:300]}") from exc
    finally:
        if export_dir:
            shutil.rmtree(export_dir, ignore_errors=True)


def _check_ops(flatbuffer: bytes) -> None:
    from .tflite_file import read_tflite

    unsupported = sorted({op.opcode for op in read_tflite(flatbuffer).operators} - TFLM_INT8_OPS)
    if unsupported:
        raise ConvertError(f"the model uses {', '.join(unsupported)}, which TensorFlow Lite Micro "
                           "cannot run as int8; use Dense layers with relu, relu6, tanh or sigmoid")


def check_full_integer(flatbuffer: bytes, *, int8_io: bool) -> None:
    """Refuse a model that kept float math inside or an op TFLM cannot run."""
    from .tflite_file import read_tflite

    _check_ops(flatbuffer)
    model = read_tflite(flatbuffer)
    io_tensors = set(model.inputs) | set(model.outputs)
    for op in model.operators:
        boundary = op.opcode in ("QUANTIZE", "DEQUANTIZE")
        for index in (*op.inputs, *op.outputs):
            if index < 0:
                continue
            tensor = model.tensors[index]
            if tensor.dtype in ("int8", "int32"):
                continue
            if tensor.dtype == "float32" and boundary and index in io_tensors and not int8_io:
                continue
            raise ConvertError(f"op {op.opcode} kept a {tensor.dtype} tensor {tensor.name!r}: the "
                               "model is not fully int8; replace the layer that cannot be quantized")
    expected = "int8" if int8_io else "float32"
    for index in io_tensors:
        if model.tensors[index].dtype != expected:
            raise ConvertError(f"model input/output {model.tensors[index].name!r} is "
                               f"{model.tensors[index].dtype}, expected {expected}")
