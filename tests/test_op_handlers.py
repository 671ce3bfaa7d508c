"""Op handlers on small IRs built with OpenVINO's opset API, checked against OpenVINO itself."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import openvino.opset1 as opset1
import openvino.opset13 as ops
import pytest
from conftest import compile_f32, ir_path

from convert import models
from convert.exporter import ExportSpec, translate
from convert.registry import UnsupportedOpError

TOLERANCE = 1e-5
RNG = np.random.default_rng(7)


def weights(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def assert_matches_openvino(result_node, parameter, batch: int | str = 1) -> onnx.ModelProto:
    ir = ov.Model([ops.result(result_node)], [parameter], "case")
    model = translate(ir, ExportSpec(("x",), ("y",), batch, flatten_outputs=False))
    onnx.checker.check_model(model, full_check=True)

    shape = list(parameter.get_partial_shape().to_shape())
    x = RNG.uniform(0, 255, shape).astype(np.float32)
    expected = compile_f32(ir)(x)[0]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"x": x})[0]
    scale = max(1.0, float(np.abs(expected).max()))
    max_rel = float(np.abs(actual - expected).max()) / scale

    assert actual.shape == expected.shape
    assert max_rel <= TOLERANCE, f"max |diff| / max |expected| = {max_rel:.3g} > {TOLERANCE}"
    return model


def image(channels: int = 4, size: int = 11) -> ov.Node:
    return ops.parameter([1, channels, size, size], np.float32, name="x")


@pytest.mark.parametrize("auto_pad, pads_begin, pads_end", [
    ("explicit", [0, 1], [2, 1]),
    ("explicit", [1, 1], [1, 1]),
    ("same_upper", [0, 0], [0, 0]),
    ("same_lower", [0, 0], [0, 0]),
    ("valid", [0, 0], [0, 0]),
])
@pytest.mark.parametrize("strides, dilations", [([1, 1], [1, 1]), ([2, 2], [1, 1]), ([1, 2], [2, 1])])
def test_convolution_padding(auto_pad, pads_begin, pads_end, strides, dilations):
    x = image()
    node = ops.convolution(x, ops.constant(weights(6, 4, 3, 3)), strides, pads_begin, pads_end, dilations, auto_pad)
    assert_matches_openvino(node, x)


@pytest.mark.parametrize("groups", [2, 4])
def test_group_convolution(groups):
    x = image()
    kernel = ops.constant(weights(groups, 8 // groups, 4 // groups, 3, 3))
    node = ops.group_convolution(x, kernel, [2, 2], [1, 0], [0, 1], [1, 1], "explicit")
    assert_matches_openvino(node, x)


def test_fp16_weights_fold_into_float32_initializer():
    x = image()
    compressed = ops.constant(weights(6, 4, 3, 3).astype(np.float16))
    node = ops.convolution(x, ops.convert(compressed, np.float32), [1, 1], [1, 1], [1, 1], [1, 1])
    model = assert_matches_openvino(node, x)

    assert [n.op_type for n in model.graph.node] == ["Conv", "Identity"]
    assert all(init.data_type == onnx.TensorProto.FLOAT for init in model.graph.initializer)


def test_conv_bias_add_is_fused():
    x = image()
    conv = ops.convolution(x, ops.constant(weights(6, 4, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1])
    node = ops.add(conv, ops.constant(weights(1, 6, 1, 1)))
    model = assert_matches_openvino(node, x)

    assert [n.op_type for n in model.graph.node] == ["Conv", "Identity"]
    assert len(model.graph.node[0].input) == 3


def test_spatial_add_after_conv_is_not_fused():
    x = image()
    conv = ops.convolution(x, ops.constant(weights(6, 4, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1])
    node = ops.add(conv, ops.constant(weights(1, 1, 11, 1)))
    model = assert_matches_openvino(node, x)

    assert "Add" in [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("exclude_pad", [True, False])
@pytest.mark.parametrize("rounding_type", ["floor", "ceil"])
@pytest.mark.parametrize("auto_pad", ["explicit", "same_upper", "valid"])
def test_avg_pool(exclude_pad, rounding_type, auto_pad):
    x = image(size=10)
    node = ops.avg_pool(x, [2, 2], [1, 0], [1, 1], [3, 3], exclude_pad, rounding_type, auto_pad)
    assert_matches_openvino(node, x)


@pytest.mark.parametrize("rounding_type", ["floor", "ceil"])
def test_max_pool_v1(rounding_type):
    x = image(size=10)
    node = opset1.max_pool(x, [2, 2], [1, 1], [0, 1], [3, 3], rounding_type, "explicit")
    assert_matches_openvino(node, x)


def test_max_pool_v8_with_unused_indices():
    x = image(size=9)
    node = ops.max_pool(x, [2, 2], [1, 1], [1, 1], [1, 1], [2, 2], "floor", "explicit")
    assert_matches_openvino(node.output(0), x)


@pytest.mark.parametrize("slope_shape", [[1], [4], []])
def test_prelu_slopes(slope_shape):
    x = image()
    centred = ops.add(x, ops.constant(np.float32(-128.0)))
    slope = ops.constant(RNG.uniform(0.05, 0.5, slope_shape).astype(np.float32))
    assert_matches_openvino(ops.prelu(centred, slope), x)


@pytest.mark.parametrize("operand_shape", [[1, 4, 1, 1], [4, 1, 1], [1, 1, 1, 11], [11], [], [1, 4, 11, 11]])
@pytest.mark.parametrize("operation", [ops.add, ops.multiply])
def test_binary_broadcasting(operation, operand_shape):
    x = image()
    node = operation(x, ops.constant(weights(*operand_shape)))
    assert_matches_openvino(node, x)


def test_binary_of_two_tensors_and_sigmoid():
    x = image()
    gate = ops.sigmoid(ops.multiply(x, ops.constant(np.float32(0.01))))
    assert_matches_openvino(ops.multiply(x, gate), x)


def test_reshape_runtime_tensor_dynamic_batch():
    x = image()
    node = ops.reshape(x, ops.constant(np.array([0, -1], dtype=np.int64)), special_zero=True)
    model = assert_matches_openvino(node, x)
    dynamic = translate(ov.Model([ops.result(node)], [x], "case"), ExportSpec(("x",), ("y",), "N", False))
    session = ort.InferenceSession(dynamic.SerializeToString(), providers=["CPUExecutionProvider"])

    assert session.run(None, {"x": np.ones([3, 4, 11, 11], np.float32)})[0].shape == (3, 484)
    assert model.graph.node[0].op_type == "Reshape"


def test_unsupported_ops_are_listed_with_node_names():
    x = image()
    erf = ops.erf(x)
    erf.set_friendly_name("my_erf")
    gelu = ops.gelu(erf, "erf")
    gelu.set_friendly_name("my_gelu")
    ir = ov.Model([ops.result(gelu)], [x], "case")

    with pytest.raises(UnsupportedOpError) as raised:
        translate(ir, ExportSpec(("x",), ("y",)), "case.xml")

    message = str(raised.value)
    assert "Erf: my_erf" in message
    assert "Gelu: my_gelu" in message
    assert "case.xml" in message


def test_fp16_int8_ir_names_fakequantize(build_folder, omz_mirror):
    xml = omz_mirror / models.REIDENTIFICATION / "FP16-INT8" / f"{models.REIDENTIFICATION}.xml"
    ir = ov.Core().read_model(xml)

    with pytest.raises(UnsupportedOpError) as raised:
        translate(ir, ExportSpec(("images",), ("features",)), str(xml))

    assert "FakeQuantize" in str(raised.value)
    assert "FakeQuantize" in raised.value.nodes_by_type
    assert len(raised.value.nodes_by_type["FakeQuantize"]) == 122
