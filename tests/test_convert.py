"""Real Keras models through the real TFLite converter, read back and run by real interpreters."""
import numpy as np
import pytest

from ipytinyml.convert import check_full_integer, convert
from ipytinyml.errors import ConvertError
from ipytinyml.reference import micro_arena_bytes, run_litert, run_micro
from ipytinyml.tflite_file import read_tflite


def _weights(model):
    """The weight tensor of each FULLY_CONNECTED op, in execution order."""
    return [model.tensors[op.inputs[1]] for op in model.operators if op.opcode == "FULLY_CONNECTED"]


def test_int8_per_tensor_float_io(tflite_models):
    model = read_tflite(tflite_models["int8"])
    assert model.op_names == ("QUANTIZE", "FULLY_CONNECTED", "FULLY_CONNECTED", "DEQUANTIZE")
    assert [op.fused_activation for op in model.operators if op.opcode == "FULLY_CONNECTED"] == ["RELU", "NONE"]
    weights = _weights(model)
    assert [w.shape for w in weights] == [(64, 1), (1, 64)]
    assert all(len(w.quantization.scales) == 1 for w in weights)  # per-tensor: one scale each
    assert [model.tensors[i].dtype for i in (*model.inputs, *model.outputs)] == ["float32", "float32"]
    inner = {t.dtype for op in model.operators[1:-1] for i in (*op.inputs, *op.outputs) if i >= 0
             for t in [model.tensors[i]]}
    assert inner == {"int8", "int32"}


def test_int8_per_channel_and_int8_io(tflite_models):
    per_channel = read_tflite(tflite_models["int8_pc"])
    assert [len(w.quantization.scales) for w in _weights(per_channel)] == [64, 1]
    int8_io = read_tflite(tflite_models["int8_io"])
    assert int8_io.op_names == ("FULLY_CONNECTED", "FULLY_CONNECTED")
    assert [int8_io.tensors[i].dtype for i in (*int8_io.inputs, *int8_io.outputs)] == ["int8", "int8"]


def test_int8_accuracy_close_to_float32(tflite_models, autompg_split):
    _, _, test_x, test_y = autompg_split
    mae = {k: float(np.mean(np.abs(run_litert(tflite_models[k], test_x) - test_y)))
           for k in ("float32", "int8", "int8_io", "int8_pc")}
    assert mae["float32"] < 3.5  # a short test training; the full recipe is measured in benchmarks/
    for key in ("int8", "int8_io", "int8_pc"):
        assert abs(mae[key] - mae["float32"]) <= 0.05, mae


def test_litert_and_tflite_micro_agree_on_int8(tflite_models, autompg_split):
    # The int8 outputs agree exactly. The float32 outputs may not: LiteRT's DEQUANTIZE
    # multiplies in float32, TFLM's in double (1 ulp apart on ~14 % of the test set).
    from ipytinyml.quant import plan_from_model, quantize
    test_x = autompg_split[2]
    for key in ("int8", "int8_io", "int8_pc"):
        out = plan_from_model(read_tflite(tflite_models[key])).output
        litert, micro = run_litert(tflite_models[key], test_x), run_micro(tflite_models[key], test_x)
        np.testing.assert_array_equal(quantize(litert, out), quantize(micro, out))
        np.testing.assert_allclose(litert, micro, rtol=2e-7)


def test_other_variants(keras_models, autompg_split):
    train_x, _, test_x, _ = autompg_split
    keras_pred = np.asarray(keras_models["default"](test_x))
    for variant in ("float16", "dynamic"):
        flatbuffer = convert(keras_models["default"], variant, train_x)
        np.testing.assert_allclose(run_litert(flatbuffer, test_x), keras_pred, atol=0.2)


def test_silent_float_fallback_is_refused(tflite_models):
    with pytest.raises(ConvertError, match="not fully int8|expected int8"):
        check_full_integer(tflite_models["float32"].read_bytes(), int8_io=True)
    with pytest.raises(ConvertError, match="FULLY_CONNECTED kept a float32"):
        check_full_integer(tflite_models["float32"].read_bytes(), int8_io=False)


def test_op_without_int8_kernel_is_named_not_a_crash(autompg_split):
    # TF 2.21's int8 calibration segfaults on EXP; convert() must refuse it first.
    import keras
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(4, activation="softplus"),
                              keras.layers.Dense(1)])
    with pytest.raises(ConvertError, match="EXP") as info:
        convert(model, "int8", autompg_split[0])
    assert "\n" not in str(info.value)


def test_bad_arguments(keras_models, autompg_split):
    with pytest.raises(ConvertError, match="unknown variant"):
        convert(keras_models["default"], "int4", autompg_split[0])
    with pytest.raises(ConvertError, match="int8 variant only"):
        convert(keras_models["default"], "float32", per_channel=True)
    with pytest.raises(ConvertError, match="representative"):
        convert(keras_models["default"], "int8", None)


def test_micro_arena_measured(tflite_models):
    float_io, int8_io = micro_arena_bytes(tflite_models["int8"]), micro_arena_bytes(tflite_models["int8_io"])
    assert 500 < int8_io < float_io < 4096  # the brief measured ~1.3 KB and ~1.49 KB


def test_multi_feature_normalization_is_folded_into_the_first_dense():
    """With several features Keras' Normalization would leave SUB and MUL ops that the board
    runtimes do not run; convert() folds it into the first Dense, numerically the same model."""
    import keras

    from ipytinyml.convert import fold_normalization
    from ipytinyml.quant import plan_from_model
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(200, 2)) * [10, 800] + [100, 3000]).astype(np.float32)
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(x)
    model = keras.Sequential([keras.Input((2,)), norm, keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    folded = fold_normalization(model)
    assert not any(isinstance(layer, keras.layers.Normalization) for layer in folded.layers)
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x)), rtol=1e-4, atol=1e-4)
    int8 = read_tflite(convert(model, "int8", x))
    assert int8.op_names == ("QUANTIZE", "FULLY_CONNECTED", "FULLY_CONNECTED", "DEQUANTIZE")
    assert plan_from_model(int8).n_inputs == 2
    np.testing.assert_allclose(run_litert(convert(model, "float32"), x), np.asarray(model(x)), atol=1e-4)
