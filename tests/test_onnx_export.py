"""The exported ONNX graphs against OpenVINO running the IR they came from."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import pytest
from conftest import REPO, compile_f32, cosine, ir_path

from convert import models
from convert.exporter import count_ir_ops
from convert.pipeline import convert_all, load_crops

REID = models.REIDENTIFICATION
FEATURE_MAX_ABS = 1e-4
FEATURE_MIN_COSINE = 0.99999
LANDMARKS_MAX_ABS = 1e-5


def run(path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


@pytest.mark.parametrize("name", [f"{REID}_1x3x128x128.onnx", f"{REID}_Nx3x128x128.onnx"])
def test_features_match_ir(name, build_folder, crops, reference_features):
    features = np.concatenate([run(build_folder / name, crop[None]) for crop in crops])
    max_abs = float(np.abs(features - reference_features).max())
    min_cosine = float(cosine(features, reference_features).min())
    print(f"{name} vs OpenVINO IR: max |diff| {max_abs:.3g} (tolerance {FEATURE_MAX_ABS}), "
          f"min cosine {min_cosine:.7f} (tolerance {FEATURE_MIN_COSINE})")

    assert features.shape == (10, 256)
    assert max_abs <= FEATURE_MAX_ABS
    assert min_cosine >= FEATURE_MIN_COSINE


@pytest.mark.parametrize("batch", [1, 3, 10])
def test_dynamic_batch_sizes(batch, build_folder, crops, reference_features):
    features = run(build_folder / f"{REID}_Nx3x128x128.onnx", crops[:batch])
    max_abs = float(np.abs(features - reference_features[:batch]).max())
    print(f"batch {batch}: max |diff| {max_abs:.3g} (tolerance {FEATURE_MAX_ABS})")

    assert features.shape == (batch, 256)
    assert max_abs <= FEATURE_MAX_ABS


def test_landmarks_match_ir(build_folder, precision, crop_paths):
    images = load_crops(crop_paths, models.LANDMARKS_SIZE)
    compiled = compile_f32(ov.Core().read_model(ir_path(precision, models.LANDMARKS)))
    expected = np.concatenate([compiled(image[None])[0].reshape(1, -1) for image in images])
    landmarks = run(build_folder / f"{models.LANDMARKS}_Nx3x48x48.onnx", images)
    max_abs = float(np.abs(landmarks - expected).max())
    print(f"landmarks vs OpenVINO IR: max |diff| {max_abs:.3g} (tolerance {LANDMARKS_MAX_ABS})")

    assert landmarks.shape == (10, 10)
    assert max_abs <= LANDMARKS_MAX_ABS


def test_graph_boundary_and_metadata(build_folder, precision):
    static = onnx.load(build_folder / f"{REID}_1x3x128x128.onnx")
    dynamic = onnx.load(build_folder / f"{REID}_Nx3x128x128.onnx")

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [i.name for i in static.graph.input] == ["images"]
    assert [o.name for o in static.graph.output] == ["features"]
    assert dims(static.graph.input[0]) == [1, 3, 128, 128]
    assert dims(static.graph.output[0]) == [1, 256]
    assert dims(dynamic.graph.input[0]) == ["N", 3, 128, 128]
    assert dims(dynamic.graph.output[0]) == ["N", 256]
    assert static.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT

    metadata = {p.key: p.value for p in static.metadata_props}
    assert metadata["source_model"] == REID
    assert metadata["source_precision"] == precision
    assert metadata["color_order"] == "BGR"
    assert metadata["pixel_range"] == "0..255"
    assert metadata["layout"] == "NCHW"
    assert len(metadata["source_bin_sha384"]) == 96
    assert "0.3155687" in metadata["reference_landmarks"]


@pytest.mark.parametrize("model_name, file_name", [
    (REID, f"{REID}_Nx3x128x128.onnx"),
    (models.LANDMARKS, f"{models.LANDMARKS}_Nx3x48x48.onnx"),
])
def test_graph_is_folded(model_name, file_name, build_folder, precision):
    graph = onnx.load(build_folder / file_name).graph
    ir = ov.Core().read_model(ir_path(precision, model_name))
    counts = count_ir_ops(ir)
    op_types = collections.Counter(node.op_type for node in graph.node)
    ir_adds = sum(op.get_type_name() == "Add" for op in ir.get_ordered_ops())
    print(f"{file_name}: {len(graph.node)} ONNX nodes, IR has {counts['non_constant']} non-constant ops; "
          f"ONNX op types {dict(op_types)}")

    assert "Cast" not in op_types
    assert len(graph.node) <= counts["non_constant"]
    # Every constant Add that followed a Convolution or GroupConvolution in the IR is a Conv bias now.
    conv_outputs = {node.output[0] for node in graph.node if node.op_type == "Conv"}
    initializers = {init.name for init in graph.initializer}
    bias_adds = [node.name for node in graph.node
                 if node.op_type == "Add" and set(node.input) & conv_outputs and set(node.input) & initializers]
    assert bias_adds == []
    assert op_types["Add"] < ir_adds
    assert sum(len(node.input) == 3 for node in graph.node if node.op_type == "Conv") >= op_types["Conv"] - 1
    assert all(init.data_type == onnx.TensorProto.FLOAT for init in graph.initializer)


def test_conversion_is_byte_identical(tmp_path, build_folder, precision, omz_mirror, images_mirror):
    convert_all(precision, tmp_path / "build", REPO, omz_mirror, images_mirror, tflite=False)
    names = sorted(p.name for p in build_folder.glob("*.onnx"))

    assert names
    for name in names:
        assert (tmp_path / "build" / precision / name).read_bytes() == (build_folder / name).read_bytes(), name
