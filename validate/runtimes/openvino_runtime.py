"""OpenVINO on the CPU: the OMZ IR (the reference), ONNX files and TFLite files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from validate.artifacts import IR, ONNX, TFLITE, tflite_signature_names
from validate.runtimes.base import Runtime, Session, TensorSpec

# Without this hint OpenVINO's CPU plugin computes in bfloat16 on CPUs with AVX512_BF16 or AMX,
# which moves the model card's 0.243 to 0.246.
COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


class OpenVinoRuntime(Runtime):
    name = "OpenVINO"
    formats = frozenset({IR, ONNX, TFLITE})

    def __init__(self) -> None:
        self._core = None

    def load(self, path: Path) -> Session:
        import openvino as ov

        # One Core serves every artifact, because creating one loads the device plugins again.
        if self._core is None:
            self._core = ov.Core()
        core = self._core
        model = core.read_model(str(path))
        # read_model has verified the TFLite flatbuffer by now, so parsing its signature is safe.
        aliases = tflite_signature_names(path) if path.suffix.lower() == ".tflite" else {}
        # Names come from the model as read: compiling can add the names of folded tensors to a
        # port ("base/features" beside "base_features"). Compiling keeps the order of the ports.
        input_names = [_port_name(port, aliases) for port in model.inputs]
        output_names = [_port_name(port, aliases) for port in model.outputs]
        inputs = [TensorSpec(name, _static_dims(port)) for name, port in zip(input_names, model.inputs)]

        compiled = core.compile_model(model, "CPU", COMPILE_CONFIG)
        return OpenVinoSession(compiled, inputs, output_names)


class OpenVinoSession(Session):
    def __init__(self, compiled, inputs: list[TensorSpec], output_names: list[str]) -> None:
        self._compiled = compiled
        self._input_index = {spec.name: index for index, spec in enumerate(inputs)}
        super().__init__(inputs, output_names)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._compiled({self._input_index[name]: value for name, value in feeds.items()})
        return {name: np.asarray(results[index]) for index, name in enumerate(self.outputs)}


def _port_name(port, aliases: dict[str, str]) -> str:
    """Return the signature name of a port when `aliases` maps one of its tensor names, else its name."""
    for tensor_name in sorted(port.get_names()):
        if tensor_name in aliases:
            return aliases[tensor_name]
    return port.get_any_name()


def _static_dims(port) -> tuple[int | None, ...]:
    return tuple(None if dim.is_dynamic else dim.get_length() for dim in port.get_partial_shape())
