"""LiteRT (`ai-edge-litert`) for TFLite files.

A model with a SignatureDef runs through its signature runner, which addresses tensors by the
signature's names. The runner resizes every input to the shape of the array it receives, so the
dynamic N and M of the heads need no `resize_tensor_input` call here. A model without a SignatureDef falls back to the
interpreter's tensor API: it resizes the inputs, allocates the tensors and reads the outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from validate.artifacts import TFLITE
from validate.runtimes.base import Runtime, Session, TensorSpec


class LiteRtRuntime(Runtime):
    name = "LiteRT"
    formats = frozenset({TFLITE})

    def load(self, path: Path) -> Session:
        from ai_edge_litert.interpreter import Interpreter

        # ai-edge-litert 2.1.0 memory-maps a `model_path` without running the flatbuffer verifier,
        # and a truncated file then crashes the process with a segmentation fault. A model passed
        # as `model_content` is verified first and fails with a ValueError.
        # LiteRT runs on one thread by default, while ONNX Runtime and OpenVINO use every core.
        interpreter = Interpreter(model_content=Path(path).read_bytes(), num_threads=os.cpu_count())
        signatures = interpreter.get_signature_list()
        if signatures:
            return SignatureSession(interpreter.get_signature_runner(next(iter(signatures))))
        return TensorSession(interpreter)


class SignatureSession(Session):
    """A model run through its first SignatureDef."""

    def __init__(self, runner) -> None:
        self._runner = runner
        self._input_details = runner.get_input_details()
        self._output_details = runner.get_output_details()
        inputs = [TensorSpec(name, _dims(detail)) for name, detail in self._input_details.items()]
        super().__init__(inputs, list(self._output_details))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        quantized = {name: _quantize(value, self._input_details[name]) for name, value in feeds.items()}
        results = self._runner(**quantized)
        return {name: _dequantize(value, self._output_details[name]) for name, value in results.items()}


class TensorSession(Session):
    """A model without a SignatureDef, run through the interpreter's tensor API and its tensor names."""

    def __init__(self, interpreter) -> None:
        self._interpreter = interpreter
        self._input_details = {detail["name"]: detail for detail in interpreter.get_input_details()}
        self._output_details = {detail["name"]: detail for detail in interpreter.get_output_details()}
        inputs = [TensorSpec(name, _dims(detail)) for name, detail in self._input_details.items()]
        super().__init__(inputs, list(self._output_details))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interpreter = self._interpreter
        for name, value in feeds.items():
            interpreter.resize_tensor_input(self._input_details[name]["index"], value.shape)
        interpreter.allocate_tensors()

        for name, value in feeds.items():
            detail = self._input_details[name]
            interpreter.set_tensor(detail["index"], _quantize(value, detail))
        interpreter.invoke()
        return {
            name: _dequantize(interpreter.get_tensor(detail["index"]), detail)
            for name, detail in self._output_details.items()
        }


def _dims(detail: dict) -> tuple[int | None, ...]:
    return tuple(None if dim < 0 else int(dim) for dim in detail["shape_signature"])


# NOTE: the two helpers below handle models with integer inputs or outputs (full integer
# quantization). No such artifact exists yet, so this path has not run on a real model.
def _quantize(value: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return value.astype(dtype, copy=False)
    scale, zero_point = detail["quantization"]
    limits = np.iinfo(dtype)
    return np.clip(np.round(value / scale + zero_point), limits.min, limits.max).astype(dtype)


def _dequantize(value: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(np.dtype(detail["dtype"]), np.integer):
        return value
    scale, zero_point = detail["quantization"]
    return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)
