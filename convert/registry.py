"""Handler registry and the translation context that OpenVINO op handlers write into.

Each OpenVINO op type maps to one handler function. A handler reads one IR node and either records a
constant value for its outputs (constant folding) or appends one or more ONNX nodes to the context.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

Handler = Callable[["openvino.Node", "ExportContext"], None]  # noqa: F821

HANDLERS: dict[str, Handler] = {}


class ExportError(Exception):
    """Base class of the errors raised while translating an IR to ONNX."""


class UnsupportedOpError(ExportError):
    """The IR contains op types that have no handler."""

    def __init__(self, model_name: str, nodes_by_type: dict[str, list[str]]):
        self.nodes_by_type = nodes_by_type
        lines = [f"{model_name}: {len(nodes_by_type)} op type(s) have no ONNX handler:"]
        for op_type in sorted(nodes_by_type):
            names = nodes_by_type[op_type]
            listed = ", ".join(names[:5]) + (f", ... ({len(names)} nodes)" if len(names) > 5 else "")
            lines.append(f"  {op_type}: {listed}")
        lines.append("Convert an IR without these ops (for example PRECISION=FP16), or add a handler in convert/ops/.")
        super().__init__("\n".join(lines))


class UnsupportedAttributeError(ExportError):
    """An op attribute value that the handler cannot translate."""

    def __init__(self, node, attribute: str, value):
        super().__init__(
            f"{node.get_type_name()} node '{node.get_friendly_name()}': "
            f"attribute {attribute}={value!r} is not supported by the ONNX exporter"
        )


def register(*op_types: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of the given OpenVINO op types."""

    def decorate(function: Handler) -> Handler:
        for op_type in op_types:
            if op_type in HANDLERS:
                raise ValueError(f"duplicate handler for OpenVINO op type {op_type}")
            HANDLERS[op_type] = function
        return function

    return decorate


def find_unsupported(ops: Iterable) -> dict[str, list[str]]:
    """Map each op type without a handler to the friendly names of its nodes."""
    missing: dict[str, list[str]] = {}
    for op in ops:
        if op.get_type_name() not in HANDLERS:
            missing.setdefault(op.get_type_name(), []).append(op.get_friendly_name())
    return missing


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:/-]", "_", name) or "node"


@dataclass
class ExportContext:
    """Translation state: ONNX nodes and initializers written so far, and what each IR output became.

    An IR output is either a known constant (a NumPy array, folded at export time) or an ONNX tensor name.
    """

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    graph_outputs: list[tuple[str, object]] = field(default_factory=list)
    _constants: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    _tensors: dict[tuple[int, int], str] = field(default_factory=dict)
    _used_names: set[str] = field(default_factory=set)
    _used_node_names: set[str] = field(default_factory=set)

    @staticmethod
    def _key(output) -> tuple[int, int]:
        # Node instance ids are stable for the lifetime of the ov.Model that owns them.
        return (output.get_node().get_instance_id(), output.get_index())

    def unique_name(self, base: str, used: set[str] | None = None) -> str:
        """Return `base` made safe and unique among tensor names (or among the names in `used`)."""
        used = self._used_names if used is None else used
        name = _sanitize(base)
        candidate, suffix = name, 1
        while candidate in used:
            candidate = f"{name}_{suffix}"
            suffix += 1
        used.add(candidate)
        return candidate

    # Constants ---------------------------------------------------------------------------------

    def constant(self, node, port: int = 0) -> np.ndarray | None:
        """Return the folded value feeding input `port` of `node`, or None when it is computed at run time."""
        return self._constants.get(self._key(node.input(port).get_source_output()))

    def set_constant(self, node, value: np.ndarray, port: int = 0) -> None:
        self._constants[self._key(node.output(port))] = np.asarray(value)

    def all_inputs_constant(self, node) -> bool:
        return all(self.constant(node, i) is not None for i in range(node.get_input_size()))

    # Tensors ------------------------------------------------------------------------------------

    def tensor(self, node, port: int = 0) -> str:
        """Return the ONNX tensor name of input `port` of `node`, writing an initializer for a constant."""
        source = node.input(port).get_source_output()
        key = self._key(source)
        if key in self._tensors:
            return self._tensors[key]
        value = self._constants.get(key)
        if value is None:
            producer = source.get_node()
            raise ExportError(
                f"input {port} of '{node.get_friendly_name()}' comes from "
                f"'{producer.get_friendly_name()}' ({producer.get_type_name()}), which was not translated"
            )
        name = self.add_initializer(source.get_node().get_friendly_name(), value)
        self._tensors[key] = name
        return name

    def add_initializer(self, base_name: str, value: np.ndarray) -> str:
        name = self.unique_name(base_name)
        self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def output_name(self, node, port: int = 0) -> str:
        """Allocate (once) the ONNX tensor name for output `port` of `node`."""
        key = self._key(node.output(port))
        if key not in self._tensors:
            base = node.get_friendly_name() if node.get_output_size() == 1 else f"{node.get_friendly_name()}:{port}"
            self._tensors[key] = self.unique_name(base)
        return self._tensors[key]

    def alias(self, node, tensor_name: str, port: int = 0) -> None:
        """Make output `port` of `node` refer to an existing ONNX tensor (for ops that are identities)."""
        self._tensors[self._key(node.output(port))] = tensor_name

    def add_node(self, op_type: str, inputs: list[str], outputs: list[str], name: str, **attributes) -> None:
        self.nodes.append(
            helper.make_node(op_type, inputs, outputs, name=self.unique_name(name, self._used_node_names), **attributes)
        )
