"""Cosine-similarity heads grafted onto the exported backbone ONNX graph.

Two heads exist:

- the pair head: `base_images` [N,3,128,128] and `target_images` [M,3,128,128] in; `base_features`
  [N,256] and `similarity` [N,M] out. The backbone's nodes appear twice, once per input, but both
  copies read the same initializers, so the weights are stored once and N and M stay independent.
- the gallery head: `images` [N,3,128,128] and `gallery_features` [M,256] (raw embeddings saved
  from the plain model) in; `features` [N,256] and `similarity` [N,M] out.

`similarity` is the cosine similarity of every pair of embeddings. With `clip=True` it is clipped to
[0, 1] as in the model card's table; with `clip=False` it stays in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Added to the squared norm before the square root, so that an all-zero embedding gives a similarity
# of 0 instead of NaN. Real embeddings of this model have norms far above 1.
NORM_EPSILON = 1e-12


@dataclass(frozen=True)
class HeadNames:
    """Tensor names of a head's graph boundary."""

    first_input: str
    second_input: str
    features: str
    similarity: str = "similarity"


PAIR_HEAD = HeadNames("base_images", "target_images", "base_features")
GALLERY_HEAD = HeadNames("images", "gallery_features", "features")


def _backbone_copy(backbone: onnx.GraphProto, input_name: str, prefix: str) -> tuple[list[onnx.NodeProto], str]:
    """Return the backbone's nodes with their tensors renamed under `prefix`, reading `input_name`.

    Initializer names are kept, so every copy shares the same weights.
    """
    initializers = {init.name for init in backbone.initializer}
    (graph_input,) = backbone.input
    (graph_output,) = backbone.output

    def rename(name: str) -> str:
        if name in initializers or name == "":
            return name
        if name == graph_input.name:
            return input_name
        return f"{prefix}{name}"

    nodes = []
    for node in backbone.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"{prefix}{node.name}"
        copy.input[:] = [rename(name) for name in node.input]
        copy.output[:] = [rename(name) for name in node.output]
        nodes.append(copy)
    return nodes, rename(graph_output.name)


def _normalize(embedding: str, prefix: str) -> tuple[list[onnx.NodeProto], str]:
    """L2-normalise each row of an [B, D] embedding: x / sqrt(sum(x^2) + eps)."""
    squared = f"{prefix}squared"
    sum_squares = f"{prefix}sum_squares"
    stabilised = f"{prefix}sum_squares_eps"
    norm = f"{prefix}norm"
    unit = f"{prefix}unit"
    nodes = [
        helper.make_node("Mul", [embedding, embedding], [squared], name=f"{prefix}square"),
        helper.make_node("ReduceSum", [squared, "head/axis_1"], [sum_squares], name=f"{prefix}reduce_sum",
                         keepdims=1),
        helper.make_node("Add", [sum_squares, "head/epsilon"], [stabilised], name=f"{prefix}add_epsilon"),
        helper.make_node("Sqrt", [stabilised], [norm], name=f"{prefix}sqrt"),
        helper.make_node("Div", [embedding, norm], [unit], name=f"{prefix}divide"),
    ]
    return nodes, unit


def _similarity(base_unit: str, target_unit: str, output: str, clip: bool) -> list[onnx.NodeProto]:
    transposed = "head/target_unit_transposed"
    product = "head/cosine" if clip else output
    nodes = [
        helper.make_node("Transpose", [target_unit], [transposed], name="head/transpose", perm=[1, 0]),
        helper.make_node("MatMul", [base_unit, transposed], [product], name="head/matmul"),
    ]
    if clip:
        nodes.append(helper.make_node("Clip", [product, "head/zero", "head/one"], [output], name="head/clip"))
    return nodes


def _head_constants() -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "head/axis_1"),
        numpy_helper.from_array(np.array(NORM_EPSILON, dtype=np.float32), "head/epsilon"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "head/zero"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "head/one"),
    ]


def _input_dims(backbone: onnx.GraphProto, batch: str) -> list[int | str]:
    dims = [d.dim_value for d in backbone.input[0].type.tensor_type.shape.dim]
    return [batch] + dims[1:]


def _finish(backbone_model: onnx.ModelProto, graph: onnx.GraphProto, clip: bool) -> onnx.ModelProto:
    model = helper.make_model(graph, producer_name=backbone_model.producer_name,
                              opset_imports=list(backbone_model.opset_import))
    model.ir_version = backbone_model.ir_version
    for entry in backbone_model.metadata_props:
        model.metadata_props.add().CopyFrom(entry)
    extra = {"similarity": "cosine similarity of L2-normalised embeddings",
             "similarity_range": "0..1 (clipped)" if clip else "-1..1 (unclipped)"}
    for key, value in extra.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    return model


def build_pair_head(backbone_model: onnx.ModelProto, clip: bool = True) -> onnx.ModelProto:
    """Graft the base/target head onto a backbone with one input [N,3,H,W] and one output [N,D]."""
    backbone = backbone_model.graph
    names = PAIR_HEAD
    base_nodes, base_embedding = _backbone_copy(backbone, names.first_input, "base/")
    target_nodes, target_embedding = _backbone_copy(backbone, names.second_input, "target/")
    base_norm_nodes, base_unit = _normalize(base_embedding, "head/base_")
    target_norm_nodes, target_unit = _normalize(target_embedding, "head/target_")
    features_node = helper.make_node("Identity", [base_embedding], [names.features], name="head/base_features")

    feature_size = backbone.output[0].type.tensor_type.shape.dim[1].dim_value
    graph = helper.make_graph(
        base_nodes + target_nodes + base_norm_nodes + target_norm_nodes
        + _similarity(base_unit, target_unit, names.similarity, clip) + [features_node],
        f"{backbone.name}_pair_head",
        [helper.make_tensor_value_info(names.first_input, TensorProto.FLOAT, _input_dims(backbone, "N")),
         helper.make_tensor_value_info(names.second_input, TensorProto.FLOAT, _input_dims(backbone, "M"))],
        [helper.make_tensor_value_info(names.features, TensorProto.FLOAT, ["N", feature_size]),
         helper.make_tensor_value_info(names.similarity, TensorProto.FLOAT, ["N", "M"])],
        initializer=list(backbone.initializer) + _head_constants(),
    )
    return _finish(backbone_model, graph, clip)


def build_gallery_head(backbone_model: onnx.ModelProto, clip: bool = True) -> onnx.ModelProto:
    """Graft the live-images-against-gallery head onto the backbone."""
    backbone = backbone_model.graph
    names = GALLERY_HEAD
    nodes, embedding = _backbone_copy(backbone, names.first_input, "backbone/")
    image_norm_nodes, image_unit = _normalize(embedding, "head/image_")
    gallery_norm_nodes, gallery_unit = _normalize(names.second_input, "head/gallery_")
    features_node = helper.make_node("Identity", [embedding], [names.features], name="head/features")

    feature_size = backbone.output[0].type.tensor_type.shape.dim[1].dim_value
    graph = helper.make_graph(
        nodes + image_norm_nodes + gallery_norm_nodes
        + _similarity(image_unit, gallery_unit, names.similarity, clip) + [features_node],
        f"{backbone.name}_gallery_head",
        [helper.make_tensor_value_info(names.first_input, TensorProto.FLOAT, _input_dims(backbone, "N")),
         helper.make_tensor_value_info(names.second_input, TensorProto.FLOAT, ["M", feature_size])],
        [helper.make_tensor_value_info(names.features, TensorProto.FLOAT, ["N", feature_size]),
         helper.make_tensor_value_info(names.similarity, TensorProto.FLOAT, ["N", "M"])],
        initializer=list(backbone.initializer) + _head_constants(),
    )
    return _finish(backbone_model, graph, clip)
