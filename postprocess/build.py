"""Build a head model from a backbone ONNX file, verify it against the backbone, and write it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from convert.finalize import run_onnx, save_onnx
from convert.registry import ExportError
from postprocess.heads import build_gallery_head, build_pair_head

log = logging.getLogger(__name__)

HEAD_KINDS = ("pair", "gallery")
# The head reuses the backbone's float32 ops unchanged and adds a few more, so its outputs must equal
# the backbone plus NumPy to within float32 rounding.
HEAD_TOLERANCE = 1e-5


def head_file_name(stem: str, kind: str, clip: bool) -> str:
    """File name of a head model built on the backbone `stem` (the name without .onnx)."""
    suffix = "_post.onnx" if clip else "_post_unclipped.onnx"
    if kind == "pair":
        return stem.replace("_Nx3x", "_NMx3x") + suffix
    return stem + "_gallery" + suffix


def cosine_matrix(base: np.ndarray, target: np.ndarray, clip: bool) -> np.ndarray:
    """Cosine similarity of every row of `base` [N,D] with every row of `target` [M,D], as [N,M]."""
    base_unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    target_unit = target / np.linalg.norm(target, axis=1, keepdims=True)
    similarity = base_unit @ target_unit.T
    return np.clip(similarity, 0.0, 1.0) if clip else similarity


def verify_head(head: onnx.ModelProto, backbone: onnx.ModelProto, kind: str, clip: bool,
                images: np.ndarray) -> None:
    """Run head and backbone on `images` (first image as base, the others as targets) and compare."""
    plain = run_onnx(backbone, {"images": images})[0]
    base, targets = images[:1], images[1:]
    if kind == "pair":
        features, similarity = run_onnx(head, {"base_images": base, "target_images": targets})
    else:
        features, similarity = run_onnx(head, {"images": base, "gallery_features": plain[1:]})
    expected = cosine_matrix(plain[:1], plain[1:], clip)

    checks = {"features": (features, plain[:1]), "similarity": (similarity, expected)}
    for name, (actual, wanted) in checks.items():
        max_abs = float(np.abs(actual - wanted).max())
        status = "PASS" if max_abs <= HEAD_TOLERANCE else "FAIL"
        log.info("%s head %s vs backbone + NumPy: max |diff| %.3g (tolerance %.0e) %s",
                 kind, name, max_abs, HEAD_TOLERANCE, status)
        if status == "FAIL":
            raise ExportError(f"the {kind} head's {name} differ from the backbone's by {max_abs:.3g}")


def load_backbone(path: Path) -> onnx.ModelProto:
    """Load a backbone ONNX file and check that it has one image input and one [N, D] output."""
    try:
        backbone = onnx.load(path)
    except (OSError, DecodeError) as error:
        raise ExportError(f"{path}: not a readable ONNX file ({error}); rebuild it with `make convert`") from error

    graph = backbone.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    input_dims = [len(value.type.tensor_type.shape.dim) for value in inputs]
    output_dims = [len(value.type.tensor_type.shape.dim) for value in graph.output]
    input_channels = inputs[0].type.tensor_type.shape.dim[1].dim_value if input_dims == [4] else None
    if input_dims != [4] or input_channels != 3 or output_dims != [2]:
        raise ExportError(
            f"{path}: not a plain embedding backbone. Expected one input [N,3,H,W] and one output [N,D], "
            f"found inputs {[value.name for value in inputs]} and outputs {[value.name for value in graph.output]}; "
            f"pass face-reidentification-retail-0095_Nx3x128x128.onnx"
        )
    return backbone


def export_head(backbone_path: Path, kind: str, clip: bool, images: np.ndarray, path: Path) -> None:
    """Graft a `kind` head onto the backbone ONNX file, verify it on `images`, and write it to `path`."""
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head kind {kind!r}: expected one of {', '.join(HEAD_KINDS)}")
    backbone = load_backbone(backbone_path)
    input_hw = tuple(dim.dim_value for dim in backbone.graph.input[0].type.tensor_type.shape.dim[2:])
    if input_hw != images.shape[2:]:
        raise ExportError(f"{backbone_path}: input is {input_hw[0]}x{input_hw[1]}, but the heads are built for "
                          f"the {images.shape[2]}x{images.shape[3]} face-reidentification-retail-0095 backbone")
    head = build_pair_head(backbone, clip) if kind == "pair" else build_gallery_head(backbone, clip)
    verify_head(head, backbone, kind, clip, images)
    save_onnx(head, path)
