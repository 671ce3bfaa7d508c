"""Activation functions."""

import numpy as np

from convert.registry import ExportContext, ExportError, register

_UNARY = {"Sigmoid": "Sigmoid", "Relu": "Relu", "Tanh": "Tanh", "Exp": "Exp"}


@register(*_UNARY)
def unary(node, ctx: ExportContext) -> None:
    ctx.add_node(_UNARY[node.get_type_name()], [ctx.tensor(node, 0)], [ctx.output_name(node)], node.get_friendly_name())


@register("PRelu")
def prelu(node, ctx: ExportContext) -> None:
    slope = ctx.constant(node, 1)
    if slope is None:
        raise ExportError(f"PRelu '{node.get_friendly_name()}': a run-time slope tensor is not supported")

    data_rank = node.get_input_partial_shape(0).rank.get_length()
    # OpenVINO applies a 1-D slope of length C along the channel axis (axis 1). ONNX broadcasts the
    # slope from the trailing axes, so a per-channel slope becomes [C, 1, ..., 1].
    if slope.ndim == 1 and slope.size > 1 and data_rank > 2:
        slope = slope.reshape([slope.size] + [1] * (data_rank - 2))
    elif slope.size == 1:
        slope = slope.reshape([1])

    slope_name = ctx.add_initializer(f"{node.get_friendly_name()}/slope", slope.astype(np.float32))
    ctx.add_node("PRelu", [ctx.tensor(node, 0), slope_name], [ctx.output_name(node)], node.get_friendly_name())
