"""tflite_file: the reader against LiteRT's generated schema, and against bad bytes.

The oracle is ``ai_edge_litert.schema_py_generated`` (the flatc-generated object
API shipped in the LiteRT wheel), read independently of our reader. All models
are the session fixtures: real Keras models converted by the real converter.
"""
from __future__ import annotations

import hashlib

import flatbuffers
import numpy as np
import pytest

from ipytinyml.errors import ConvertError
from ipytinyml.tflite_file import (
    ACTIVATIONS,
    BUILTIN_OPERATORS,
    TENSOR_TYPES,
    opcode_name,
    read_tflite,
)

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")

MODEL_KEYS = ["float32", "int8", "int8_pc", "int8_io", "int8_pc_io", "relu6", "two_hidden"]


def _enum(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _model_t(data: bytes):
    return schema.ModelT.InitFromPackedBuf(data, 0)


def _pack(model_t) -> bytes:
    builder = flatbuffers.Builder(4096)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _as_str(v):
    return v.decode() if isinstance(v, (bytes, bytearray)) else v


# ---------------------------------------------------------------------------
# tables


def test_builtin_operator_table_matches_schema():
    names = _enum(schema.BuiltinOperator)
    for code, name in BUILTIN_OPERATORS.items():
        assert names[code] == name, code
    for name in ["ADD", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "FULLY_CONNECTED", "QUANTIZE",
                 "RESHAPE", "SOFTMAX", "LOGISTIC", "TANH", "RELU", "RELU6", "MUL", "MEAN"]:
        assert name in BUILTIN_OPERATORS.values()
    assert opcode_name(9) == "FULLY_CONNECTED"
    assert opcode_name(100000) == "BUILTIN_100000"


def test_type_and_activation_tables_match_schema():
    types = _enum(schema.TensorType)
    for code, (name, _) in TENSOR_TYPES.items():
        assert types[code].lower() == name
    acts = _enum(schema.ActivationFunctionType)
    for code, name in ACTIVATIONS.items():
        assert acts[code] == name


# ---------------------------------------------------------------------------
# every fixture model, field by field


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_reader_matches_schema_object_api(tflite_models, key):
    path = tflite_models[key]
    data = path.read_bytes()
    ours = read_tflite(path)
    ref = _model_t(data)

    assert ours.version == ref.version == 3
    assert ours.description == _as_str(ref.description)
    assert ours.n_subgraphs == len(ref.subgraphs) == 1
    assert ours.buffers == len(ref.buffers)
    assert ours.sha256 == hashlib.sha256(data).hexdigest()
    assert ours.model_hash == ours.sha256[:12] and len(ours.model_hash) == 12
    assert ours.size == len(data)

    sg = ref.subgraphs[0]
    assert ours.inputs == tuple(int(i) for i in sg.inputs)
    assert ours.outputs == tuple(int(i) for i in sg.outputs)

    op_names = _enum(schema.BuiltinOperator)
    act_names = _enum(schema.ActivationFunctionType)
    type_names = _enum(schema.TensorType)
    assert len(ours.operators) == len(sg.operators)
    for op, rop in zip(ours.operators, sg.operators):
        oc = ref.operatorCodes[rop.opcodeIndex]
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        assert op.builtin_code == code
        assert op.opcode == op_names[code]
        assert op.version == oc.version
        assert op.inputs == tuple(int(i) for i in rop.inputs)
        assert op.outputs == tuple(int(i) for i in rop.outputs)
        if rop.builtinOptionsType == schema.BuiltinOptions.FullyConnectedOptions:
            fc = rop.builtinOptions
            assert op.fused_activation == act_names[fc.fusedActivationFunction]
            assert op.options == {
                "fused_activation_function": act_names[fc.fusedActivationFunction],
                "weights_format": {0: "DEFAULT", 1: "SHUFFLED4x16INT8"}[fc.weightsFormat],
                "keep_num_dims": bool(fc.keepNumDims),
                "asymmetric_quantize_inputs": bool(fc.asymmetricQuantizeInputs),
                "quantized_bias_type": type_names[fc.quantizedBiasType].lower(),
            }
        else:
            assert op.fused_activation is None and op.options == {}

    assert len(ours.tensors) == len(sg.tensors)
    for t, rt in zip(ours.tensors, sg.tensors):
        assert t.name == _as_str(rt.name)
        assert t.shape == tuple(int(d) for d in (rt.shape if rt.shape is not None else []))
        assert t.dtype == type_names[rt.type].lower()
        assert t.buffer == rt.buffer
        rbuf = ref.buffers[rt.buffer].data
        if rbuf is None or len(rbuf) == 0:
            assert t.data is None
        else:
            assert t.data is not None
            assert t.data.shape == t.shape
            assert t.data.dtype == np.dtype(TENSOR_TYPES[rt.type][1])
            assert t.data.tobytes() == np.asarray(rbuf, dtype=np.uint8).tobytes()
            assert not t.data.flags.writeable
        rq = rt.quantization
        if rq is None or rq.scale is None or len(rq.scale) == 0:
            assert t.quantization is None
        else:
            assert t.quantization.scales.dtype == np.float32
            assert t.quantization.zero_points.dtype == np.int64
            np.testing.assert_array_equal(t.quantization.scales, np.asarray(rq.scale, np.float32))
            np.testing.assert_array_equal(t.quantization.zero_points, np.asarray(rq.zeroPoint, np.int64))
            assert t.quantization.quantized_dimension == rq.quantizedDimension


def test_expected_structure_of_the_fixture_models(tflite_models):
    """What the rest of ipytinyml relies on (brief 1.1): ops, per-channel scales, int8 I/O."""
    m = read_tflite(tflite_models["int8"])
    assert m.op_names == ("QUANTIZE", "FULLY_CONNECTED", "FULLY_CONNECTED", "DEQUANTIZE")
    assert [op.fused_activation for op in m.operators] == [None, "RELU", "NONE", None]
    weights = m.tensors[m.operators[1].inputs[1]]
    assert weights.dtype == "int8" and weights.shape == (64, 1) and weights.quantization.scales.size == 1

    pc = read_tflite(tflite_models["int8_pc"])
    w = pc.tensors[pc.operators[1].inputs[1]]
    assert w.quantization.scales.size == 64 and w.quantization.quantized_dimension == 0
    bias = pc.tensors[pc.operators[1].inputs[2]]
    assert bias.dtype == "int32" and bias.data.dtype == np.dtype("<i4")

    io = read_tflite(tflite_models["int8_io"])
    assert io.op_names == ("FULLY_CONNECTED", "FULLY_CONNECTED")
    assert io.input_tensors[0].dtype == "int8" and io.output_tensors[0].dtype == "int8"

    relu6 = read_tflite(tflite_models["relu6"])
    assert [op.fused_activation for op in relu6.operators if op.opcode == "FULLY_CONNECTED"] == ["RELU6", "NONE"]
    assert read_tflite(tflite_models["two_hidden"]).op_names.count("FULLY_CONNECTED") == 3
    f = read_tflite(tflite_models["float32"])
    assert f.input_tensors[0].dtype == "float32" and f.input_tensors[0].quantization is None


def test_path_str_and_bytes_agree(tflite_models):
    path = tflite_models["int8"]
    data = path.read_bytes()
    a, b, c, d = read_tflite(path), read_tflite(str(path)), read_tflite(data), read_tflite(bytearray(data))
    assert a.sha256 == b.sha256 == c.sha256 == d.sha256
    assert a.op_names == b.op_names == c.op_names == d.op_names
    for t1, t2 in zip(a.tensors, c.tensors):
        assert t1.shape == t2.shape and t1.dtype == t2.dtype
        if t1.data is not None:
            np.testing.assert_array_equal(t1.data, t2.data)


def test_unknown_opcode_and_extra_subgraphs(tflite_models):
    ref = _model_t(tflite_models["int8"].read_bytes())
    ref.operatorCodes[0].builtinCode = 250
    ref.operatorCodes[0].deprecatedBuiltinCode = 127  # PLACEHOLDER_FOR_GREATER_OP_CODES
    ref.subgraphs.append(ref.subgraphs[0])
    m = read_tflite(_pack(ref))
    assert m.op_names[0] == "BUILTIN_250" and m.operators[0].builtin_code == 250
    assert m.n_subgraphs == 2
    assert m.op_names[1:] == ("FULLY_CONNECTED", "FULLY_CONNECTED", "DEQUANTIZE")


# ---------------------------------------------------------------------------
# bad input: always one ConvertError line, never another exception type


def _assert_one_line(exc: ConvertError):
    text = str(exc)
    assert text and "\n" not in text


def test_missing_file(tmp_path):
    with pytest.raises(ConvertError, match="no such") as e:
        read_tflite(tmp_path / "nope.tflite")
    _assert_one_line(e.value)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(ConvertError, match="folder"):
        read_tflite(tmp_path)


def test_empty(tmp_path):
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(ConvertError, match="empty"):
        read_tflite(tmp_path / "empty.tflite")
    with pytest.raises(ConvertError, match="empty"):
        read_tflite(b"")


@pytest.mark.parametrize(
    "garbage",
    [b"x", b"1234567", b"not a tflite model at all", b"\x89PNG\r\n\x1a\n" + bytes(100),
     b'{"json": true}', bytes(64), b"\xff" * 64],
)
def test_not_tflite(garbage):
    with pytest.raises(ConvertError, match="not a TFLite model") as e:
        read_tflite(garbage)
    _assert_one_line(e.value)


def test_wrong_identifier(tflite_models):
    data = bytearray(tflite_models["int8"].read_bytes())
    data[4:8] = b"TFL2"
    with pytest.raises(ConvertError, match="identifier"):
        read_tflite(bytes(data))


def test_external_buffers_rejected(tflite_models):
    ref = _model_t(tflite_models["int8"].read_bytes())
    ref.buffers[2].data = None
    ref.buffers[2].offset = 4096
    ref.buffers[2].size = 4
    with pytest.raises(ConvertError, match="outside the flatbuffer") as e:
        read_tflite(_pack(ref))
    _assert_one_line(e.value)


def test_repacked_model_reads_the_same(tflite_models):
    """Sanity check of the packing helper used to build the bad models above."""
    data = tflite_models["int8_pc"].read_bytes()
    a, b = read_tflite(data), read_tflite(_pack(_model_t(data)))
    assert a.op_names == b.op_names
    for t1, t2 in zip(a.tensors, b.tensors):
        assert t1.name == t2.name and t1.shape == t2.shape
        if t1.data is not None:
            np.testing.assert_array_equal(t1.data, t2.data)


@pytest.mark.parametrize("key", ["int8", "two_hidden"])
def test_every_truncation_is_a_convert_error(tflite_models, key):
    data = tflite_models[key].read_bytes()
    for n in range(len(data)):
        with pytest.raises(ConvertError):
            read_tflite(data[:n])


@pytest.mark.parametrize("key", ["int8", "int8_pc_io", "two_hidden"])
def test_random_corruption_never_escapes_as_another_exception(tflite_models, key):
    data = tflite_models[key].read_bytes()
    rng = np.random.default_rng(20261124)
    parsed = rejected = 0
    for _ in range(1500):
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 5))):
            buf[int(rng.integers(8, len(buf)))] ^= int(rng.integers(1, 256))
        try:
            read_tflite(bytes(buf))
            parsed += 1
        except ConvertError as exc:
            _assert_one_line(exc)
            rejected += 1
    assert rejected > 100  # the flips do reach the structure, not just weight bytes


def test_random_bytes_with_the_right_identifier():
    rng = np.random.default_rng(7)
    for size in [8, 9, 12, 16, 33, 100, 1000, 5000]:
        for _ in range(20):
            buf = bytearray(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            buf[4:8] = b"TFL3"
            with pytest.raises(ConvertError):
                read_tflite(bytes(buf))
