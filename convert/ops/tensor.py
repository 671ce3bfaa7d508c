"""Graph boundary, constant, type-conversion and shape ops."""

import numpy as np
import openvino as ov

from convert.registry import ExportContext, ExportError, register


@register("Parameter")
def parameter(node, ctx: ExportContext) -> None:
    # The exporter names graph inputs before the walk; the handler only checks the element type.
    if node.get_output_element_type(0) != ov.Type.f32:
        raise ExportError(
            f"Parameter '{node.get_friendly_name()}' has element type {node.get_output_element_type(0)}; "
            "the exporter writes float32 graph inputs only"
        )


@register("Result")
def result(node, ctx: ExportContext) -> None:
    ctx.graph_outputs.append((ctx.tensor(node, 0), node))


@register("Constant")
def constant(node, ctx: ExportContext) -> None:
    ctx.set_constant(node, node.get_data().copy())


@register("Convert")
def convert(node, ctx: ExportContext) -> None:
    target = np.dtype(node.get_output_element_type(0).to_dtype())
    value = ctx.constant(node, 0)
    if value is not None:
        # Weight decompression (f16 Constant -> Convert f32) folds into a float32 initializer here.
        ctx.set_constant(node, value.astype(target))
        return

    from onnx import helper

    ctx.add_node(
        "Cast",
        [ctx.tensor(node, 0)],
        [ctx.output_name(node)],
        node.get_friendly_name(),
        to=helper.np_dtype_to_tensor_dtype(target),
    )


def _reshape_target(node, data_shape, pattern: np.ndarray) -> np.ndarray:
    """Resolve a Reshape pattern the way OpenVINO does, for folding a constant input."""
    special_zero = node.get_attributes()["special_zero"]
    target = [int(v) for v in pattern.reshape(-1)]
    if special_zero:
        target = [data_shape[i] if v == 0 else v for i, v in enumerate(target)]
    return np.array(target, dtype=np.int64)


@register("Reshape")
def reshape(node, ctx: ExportContext) -> None:
    data, pattern = ctx.constant(node, 0), ctx.constant(node, 1)
    if data is not None and pattern is not None:
        ctx.set_constant(node, data.reshape(_reshape_target(node, data.shape, pattern)))
        return

    if pattern is None:
        raise ExportError(f"Reshape '{node.get_friendly_name()}': a run-time target shape is not supported")

    special_zero = node.get_attributes()["special_zero"]
    target = pattern.astype(np.int64).reshape(-1)
    attributes = {}
    if not special_zero and 0 in target:
        # OpenVINO's special_zero=false means a literal 0 dimension, which is ONNX's allowzero=1.
        attributes["allowzero"] = 1
    shape_name = ctx.add_initializer(f"{node.get_friendly_name()}/shape", target)
    ctx.add_node(
        "Reshape",
        [ctx.tensor(node, 0), shape_name],
        [ctx.output_name(node)],
        node.get_friendly_name(),
        **attributes,
    )
