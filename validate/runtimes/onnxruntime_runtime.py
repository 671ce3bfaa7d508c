"""ONNX Runtime with the CPU execution provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from validate.artifacts import ONNX
from validate.runtimes.base import Runtime, Session, TensorSpec

# ONNX Runtime's WARNING level reports graph optimizer details that are not errors.
_LOG_SEVERITY_ERROR = 3


class OnnxRuntime(Runtime):
    name = "ONNX Runtime"
    formats = frozenset({ONNX})

    def load(self, path: Path) -> Session:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = _LOG_SEVERITY_ERROR
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return OnnxRuntimeSession(session)


class OnnxRuntimeSession(Session):
    def __init__(self, session) -> None:
        self._session = session
        # Symbolic dimensions ("N") come as strings and unknown ones as None.
        inputs = [
            TensorSpec(value.name, tuple(dim if isinstance(dim, int) else None for dim in value.shape))
            for value in session.get_inputs()
        ]
        super().__init__(inputs, [value.name for value in session.get_outputs()])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._session.run(list(self.outputs), feeds)
        return dict(zip(self.outputs, results))
