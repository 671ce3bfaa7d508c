"""Convolution and pooling ops."""

import numpy as np

from convert.registry import ExportContext, ExportError, UnsupportedAttributeError, register

# OpenVINO auto_pad value -> ONNX auto_pad value. "explicit" and "notset" use pads_begin/pads_end.
_AUTO_PAD = {"explicit": "NOTSET", "notset": "NOTSET", "same_upper": "SAME_UPPER", "same_lower": "SAME_LOWER",
             "valid": "VALID"}


def _padding(node, attributes: dict) -> dict:
    auto_pad = attributes.get("auto_pad", "explicit").lower()
    if auto_pad not in _AUTO_PAD:
        raise UnsupportedAttributeError(node, "auto_pad", auto_pad)

    # With static spatial dimensions OpenVINO has already resolved every auto_pad mode into
    # pads_begin/pads_end, so explicit pads reproduce it exactly. This also avoids ONNX Runtime's
    # lack of support for SAME_UPPER/SAME_LOWER with dilations > 1.
    spatial = node.get_input_partial_shape(0)[2:]
    if _AUTO_PAD[auto_pad] == "NOTSET" or spatial.is_static:
        # ONNX lists all begin pads, then all end pads.
        return {"pads": list(attributes["pads_begin"]) + list(attributes["pads_end"])}
    return {"auto_pad": _AUTO_PAD[auto_pad]}


@register("Convolution", "GroupConvolution")
def convolution(node, ctx: ExportContext) -> None:
    attributes = node.get_attributes()
    weights = ctx.constant(node, 1)
    onnx_attributes = {
        "strides": list(attributes["strides"]),
        "dilations": list(attributes["dilations"]),
        **_padding(node, attributes),
    }

    if node.get_type_name() == "GroupConvolution":
        if weights is None:
            raise ExportError(
                f"GroupConvolution '{node.get_friendly_name()}': run-time weights are not supported"
            )
        # OpenVINO: [G, C_out/G, C_in/G, k...]; ONNX: [C_out, C_in/G, k...] with group=G.
        groups = weights.shape[0]
        weights = weights.reshape((groups * weights.shape[1],) + weights.shape[2:])
        onnx_attributes["group"] = int(groups)

    if weights is not None:
        onnx_attributes["kernel_shape"] = list(weights.shape[2:])
        weights_name = ctx.add_initializer(f"{node.get_friendly_name()}/weights", weights.astype(np.float32))
    else:
        weights_name = ctx.tensor(node, 1)

    ctx.add_node("Conv", [ctx.tensor(node, 0), weights_name], [ctx.output_name(node)], node.get_friendly_name(),
                 **onnx_attributes)


def _ceil_mode(node, attributes: dict) -> int:
    rounding = attributes.get("rounding_type", "floor").lower()
    if rounding not in ("floor", "ceil"):
        raise UnsupportedAttributeError(node, "rounding_type", rounding)
    return int(rounding == "ceil")


@register("AvgPool")
def avg_pool(node, ctx: ExportContext) -> None:
    attributes = node.get_attributes()
    ceil_mode = _ceil_mode(node, attributes)
    padding = _padding(node, attributes)
    data = ctx.tensor(node, 0)
    count_include_pad = 0 if attributes["exclude-pad"] else 1

    # In ceil mode the last window can run past the padded input. OpenVINO divides such a window by
    # the elements inside the padded input, ONNX Runtime by the whole kernel. Padding with zeros first
    # and then averaging only over elements that exist reproduces OpenVINO.
    if ceil_mode and count_include_pad and "pads" in padding:
        pads = padding.pop("pads")
        if any(pads):
            rank = node.get_input_partial_shape(0).rank.get_length()
            half = len(pads) // 2
            full_pads = [0, 0] + pads[:half] + [0, 0] + pads[half:]
            pads_name = ctx.add_initializer(f"{node.get_friendly_name()}/pads", np.array(full_pads, np.int64))
            padded = ctx.unique_name(f"{node.get_friendly_name()}/padded")
            ctx.add_node("Pad", [data, pads_name], [padded], f"{node.get_friendly_name()}/pad", mode="constant")
            data = padded
        count_include_pad = 0

    ctx.add_node(
        "AveragePool",
        [data],
        [ctx.output_name(node)],
        node.get_friendly_name(),
        kernel_shape=list(attributes["kernel"]),
        strides=list(attributes["strides"]),
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        **padding,
    )


@register("MaxPool")
def max_pool(node, ctx: ExportContext) -> None:
    attributes = node.get_attributes()
    # MaxPool-8 and later also return argmax indices; their layout differs from ONNX's, so they are
    # translated only when nothing consumes them.
    if node.get_output_size() > 1 and node.output(1).get_target_inputs():
        raise UnsupportedAttributeError(node, "indices output", "consumed")

    onnx_attributes = {
        "kernel_shape": list(attributes["kernel"]),
        "strides": list(attributes["strides"]),
        "ceil_mode": _ceil_mode(node, attributes),
        **_padding(node, attributes),
    }
    if "dilations" in attributes:
        onnx_attributes["dilations"] = list(attributes["dilations"])
    ctx.add_node("MaxPool", [ctx.tensor(node, 0)], [ctx.output_name(node, 0)], node.get_friendly_name(),
                 **onnx_attributes)
