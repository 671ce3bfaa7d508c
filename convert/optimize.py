"""Graph rewrites applied to the translated ONNX graph before simplification."""

import logging

import numpy as np
import onnx
from onnx import numpy_helper

log = logging.getLogger(__name__)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _channel_bias(value: np.ndarray, channels: int, output_rank: int) -> np.ndarray | None:
    """Return `value` as a [C] bias when adding it to an [N, C, ...] tensor changes each channel uniformly.

    NumPy broadcasting aligns shapes from the right, so the addend is left-padded with 1s to the output
    rank. Every axis except the channel axis (axis 1) must then be 1.
    """
    if value.ndim > output_rank:
        return None
    shape = [1] * (output_rank - value.ndim) + list(value.shape)
    if shape[0] != 1 or any(d != 1 for d in shape[2:]) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1), (channels,)).astype(np.float32)


def fuse_conv_bias(model: onnx.ModelProto) -> int:
    """Move a constant per-channel Add that follows a bias-free Conv into the Conv's bias input.

    Returns the number of Add nodes removed.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    graph_outputs = {out.name for out in graph.output}
    removed: list[onnx.NodeProto] = []

    for add in graph.node:
        if add.op_type != "Add":
            continue
        for data_index, const_index in ((0, 1), (1, 0)):
            conv = producers.get(add.input[data_index])
            bias_init = initializers.get(add.input[const_index])
            if conv is None or bias_init is None or conv.op_type != "Conv" or len(conv.input) > 2:
                continue
            if conv.output[0] in graph_outputs or len(consumers.get(conv.output[0], [])) != 1:
                continue
            weights = initializers.get(conv.input[1])
            if weights is None:
                continue
            bias = _channel_bias(numpy_helper.to_array(bias_init), weights.dims[0], len(weights.dims))
            if bias is None:
                continue
            bias_name = f"{conv.name}/bias"
            graph.initializer.append(numpy_helper.from_array(bias, bias_name))
            conv.input.append(bias_name)
            conv.output[0] = add.output[0]
            removed.append(add)
            break

    for node in removed:
        graph.node.remove(node)
    remove_unused_initializers(model)
    log.debug("fused %d Add nodes into Conv biases", len(removed))
    return len(removed)


def remove_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used |= {out.name for out in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
