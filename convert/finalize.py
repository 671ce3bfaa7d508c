"""Check, simplify and verify an exported ONNX model, then write it atomically."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxsim

from convert.registry import ExportError

log = logging.getLogger(__name__)

# The simplifier folds and reorders float32 arithmetic only, so its output must agree with its input
# to within float32 rounding of a few hundred accumulations.
SIMPLIFY_TOLERANCE = 1e-4


def run_onnx(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def simplify_and_verify(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Simplify with onnxsim, then check that the simplified graph computes what the original did.

    Both graphs pass `onnx.checker.check_model(full_check=True)`, and ONNX Runtime runs both on `feeds`;
    a maximum absolute difference above SIMPLIFY_TOLERANCE on any output raises ExportError.
    """
    onnx.checker.check_model(model, full_check=True)
    simplified, converged = onnxsim.simplify(model, check_n=0)
    if not converged:
        raise ExportError(f"onnxsim did not converge on graph '{model.graph.name}'")
    simplified.ir_version = model.ir_version
    onnx.checker.check_model(simplified, full_check=True)

    expected = run_onnx(model, feeds)
    actual = run_onnx(simplified, feeds)
    for output, want, got in zip(model.graph.output, expected, actual):
        max_abs = float(np.max(np.abs(want - got)))
        status = "PASS" if max_abs <= SIMPLIFY_TOLERANCE else "FAIL"
        log.info("simplified vs original '%s' %s: max |diff| %.3g (tolerance %.0e) %s",
                 output.name, list(got.shape), max_abs, SIMPLIFY_TOLERANCE, status)
        if status == "FAIL":
            raise ExportError(f"the simplified graph of '{model.graph.name}' differs on output '{output.name}': "
                              f"max |diff| {max_abs:.3g} > {SIMPLIFY_TOLERANCE:.0e}")
    log.info("nodes: %d before onnxsim, %d after", len(model.graph.node), len(simplified.graph.node))
    return simplified


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        # mkstemp creates the file as 0600; artifacts get the usual permissions instead.
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    # Protobuf serialisation of a message built in the same order is byte-stable, which makes the
    # artifacts reproducible.
    write_atomic(path, model.SerializeToString())
