"""Shared fixtures: the local mirror of the public assets, and the artifacts of `make convert`.

The tests never reach the internet: they copy the IRs and crops from the mirror folder named by SHARED_DIR
(default: ../shared beside the repository), or from OMZ_MIRROR and IMAGES_MIRROR when those are set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from convert import models
from convert.pipeline import convert_all, load_crops

REPO = Path(__file__).resolve().parent.parent


def _shared_dir() -> Path:
    return Path(os.environ.get("SHARED_DIR", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
    if not path.is_dir():
        pytest.fail(f"mirror folder {path} not found: set SHARED_DIR to a copy of the shared assets")
    return path


@pytest.fixture(scope="session")
def omz_mirror(shared_dir) -> Path:
    return Path(os.environ.get("OMZ_MIRROR") or shared_dir / "omz").resolve()


@pytest.fixture(scope="session")
def images_mirror(shared_dir) -> Path:
    return Path(os.environ.get("IMAGES_MIRROR") or shared_dir / "images" / "wider-12-group").resolve()


@pytest.fixture(scope="session")
def precision() -> str:
    return os.environ.get("PRECISION") or "FP16"


@pytest.fixture(scope="session")
def build_folder(precision, omz_mirror, images_mirror) -> Path:
    """The artifacts of `make convert` for PRECISION, built here when they are missing or stale."""
    convert_all(precision, REPO / "build", REPO, omz_mirror, images_mirror)
    return REPO / "build" / precision


@pytest.fixture(scope="session")
def crop_paths(build_folder) -> list[Path]:
    return sorted((REPO / "data" / "wider-12-group").glob("*.jpg"))


@pytest.fixture(scope="session")
def crops(crop_paths) -> np.ndarray:
    """The ten validation crops: plain resize to 128x128, BGR, float32 0..255, NCHW."""
    return load_crops(crop_paths, models.REIDENTIFICATION_SIZE)


def ir_path(precision: str, model: str) -> Path:
    return REPO / "models" / model / precision / f"{model}.xml"


def compile_f32(model) -> ov.CompiledModel:
    """Compile on the CPU in float32: OpenVINO otherwise picks bfloat16 on CPUs that support it."""
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


@pytest.fixture(scope="session")
def reference_features(precision, crops, build_folder) -> np.ndarray:
    """OpenVINO's float32 features of the crops from the IR, one image at a time, as [10, 256]."""
    compiled = compile_f32(ov.Core().read_model(ir_path(precision, models.REIDENTIFICATION)))
    return np.concatenate([compiled(crop[None])[0].reshape(1, -1) for crop in crops])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays."""
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def three_decimals(row: np.ndarray) -> list[float]:
    """Round a similarity row to the model card's three decimals."""
    return [round(float(value), 3) for value in row]


def run_tflite(tflite_path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Resize every input to its feed's shape with resize_tensor_input, then invoke once."""
    from ai_edge_litert.interpreter import Interpreter

    # A signature runner keeps references into the interpreter that forbid resizing, so the
    # name-to-index map comes from a separate interpreter of the same file.
    signature = Interpreter(model_path=str(tflite_path)).get_signature_runner()
    input_indices = {name: detail["index"] for name, detail in signature.get_input_details().items()}
    output_indices = {name: detail["index"] for name, detail in signature.get_output_details().items()}

    interpreter = Interpreter(model_path=str(tflite_path), num_threads=1)
    for name, array in feeds.items():
        interpreter.resize_tensor_input(input_indices[name], list(array.shape), strict=True)
    interpreter.allocate_tensors()
    for name, array in feeds.items():
        interpreter.set_tensor(input_indices[name], array)
    interpreter.invoke()
    return {name: interpreter.get_tensor(index).copy() for name, index in output_indices.items()}
