"""Translate an OpenVINO model, read through OpenVINO's own API, into an ONNX graph."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
import openvino as ov
from onnx import TensorProto, helper

import convert.ops  # noqa: F401  (registers the handlers)
from convert.optimize import fuse_conv_bias
from convert.registry import HANDLERS, ExportContext, ExportError, UnsupportedOpError, find_unsupported

log = logging.getLogger(__name__)

OPSET = 17
# IR version 8 is the one that goes with opset 17, so older runtimes can load the files.
IR_VERSION = 8
PRODUCER_NAME = "ir-export-toolkit"


@dataclass(frozen=True)
class ExportSpec:
    """Names and shapes of the exported graph's boundary.

    `batch` is an int for a static batch or a symbol such as "N" for a dynamic one. With
    `flatten_outputs`, an IR output such as [1, 256, 1, 1] becomes [batch, 256].
    """

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    batch: int | str = 1
    flatten_outputs: bool = True
    metadata: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def count_ir_ops(model: ov.Model) -> dict[str, int]:
    """Count the IR's ops: all of them, and those that are not Constant."""
    ops = model.get_ordered_ops()
    return {"all": len(ops), "non_constant": sum(op.get_type_name() != "Constant" for op in ops)}


def check_supported(model: ov.Model, source_name: str | None = None) -> None:
    """Raise UnsupportedOpError listing every op type without a handler, with its node names."""
    missing = find_unsupported(model.get_ordered_ops())
    if missing:
        raise UnsupportedOpError(source_name or model.get_friendly_name(), missing)


def _graph_input(name: str, parameter, batch: int | str) -> onnx.ValueInfoProto:
    shape = parameter.get_partial_shape()
    if shape.is_dynamic:
        raise ExportError(f"Parameter '{parameter.get_friendly_name()}' has a dynamic shape {shape}; "
                          "the exporter expects the static shape of an OMZ IR")
    dims: list[int | str] = [int(d) for d in shape.to_shape()]
    dims[0] = batch
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _add_graph_outputs(ctx: ExportContext, spec: ExportSpec) -> list[onnx.ValueInfoProto]:
    if len(ctx.graph_outputs) != len(spec.output_names):
        raise ExportError(f"the IR has {len(ctx.graph_outputs)} outputs but the export names "
                          f"{len(spec.output_names)}: {', '.join(spec.output_names)}")
    outputs = []
    for (tensor_name, result_node), output_name in zip(ctx.graph_outputs, spec.output_names):
        ir_shape = [int(d) for d in result_node.get_input_partial_shape(0).to_shape()]
        if spec.flatten_outputs:
            ctx.add_node("Flatten", [tensor_name], [output_name], f"{output_name}/flatten", axis=1)
            dims = [spec.batch, int(np.prod(ir_shape[1:]))]
        else:
            ctx.add_node("Identity", [tensor_name], [output_name], f"{output_name}/identity")
            dims = [spec.batch] + ir_shape[1:]
        outputs.append(helper.make_tensor_value_info(output_name, TensorProto.FLOAT, dims))
    return outputs


def translate(model: ov.Model, spec: ExportSpec, source_name: str | None = None) -> onnx.ModelProto:
    """Walk the IR in topological order and build the raw ONNX model through the op handlers.

    Raises UnsupportedOpError before translating anything when any op type lacks a handler.
    """
    check_supported(model, source_name)
    parameters = list(model.get_parameters())
    if len(parameters) != len(spec.input_names):
        raise ExportError(f"the IR has {len(parameters)} inputs but the export names {len(spec.input_names)}")

    ctx = ExportContext()
    inputs = []
    for parameter, name in zip(parameters, spec.input_names):
        ctx.unique_name(name)
        ctx.alias(parameter, name)
        inputs.append(_graph_input(name, parameter, spec.batch))
    for output_name in spec.output_names:
        ctx.unique_name(output_name)

    for node in model.get_ordered_ops():
        HANDLERS[node.get_type_name()](node, ctx)

    outputs = _add_graph_outputs(ctx, spec)
    graph = helper.make_graph(ctx.nodes, model.get_friendly_name(), inputs, outputs,
                              initializer=list(ctx.initializers.values()))
    onnx_model = helper.make_model(graph, producer_name=PRODUCER_NAME,
                                   opset_imports=[helper.make_opsetid("", OPSET)])
    onnx_model.ir_version = IR_VERSION
    fuse_conv_bias(onnx_model)
    return onnx_model


def set_metadata(model: onnx.ModelProto, metadata: tuple[tuple[str, str], ...]) -> None:
    del model.metadata_props[:]
    for key, value in metadata:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
