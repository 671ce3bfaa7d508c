"""The `make convert` pipeline: fetch the IRs and images, then build every artifact that is out of date."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import openvino as ov

from convert import models
from convert.buildstate import Target, run_targets
from convert.exporter import ExportSpec, count_ir_ops, set_metadata, translate
from convert.fetch import fetch_images, fetch_model, file_digest
from convert.finalize import save_onnx, simplify_and_verify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sources:
    """Local paths of everything a conversion reads."""

    precision: str
    reid_xml: Path
    reid_bin: Path
    landmarks_xml: Path
    landmarks_bin: Path
    images: tuple[Path, ...]


def load_crops(images: tuple[Path, ...] | list[Path], size: int) -> np.ndarray:
    """Read images as the OMZ models expect them: plain resize, BGR, float32 0..255, NCHW."""
    crops = []
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path}: not a readable image")
        crops.append(cv2.resize(image, (size, size)).transpose(2, 0, 1))
    return np.stack(crops).astype(np.float32)


def onnx_metadata(model_name: str, precision: str, xml: Path, weights: Path) -> tuple[tuple[str, str], ...]:
    metadata = [
        ("source_model", model_name),
        ("source_precision", precision),
        ("source_xml_sha384", file_digest(xml, "sha384")),
        ("source_bin_sha384", file_digest(weights, "sha384")),
        ("color_order", models.COLOR_ORDER),
        ("pixel_range", models.PIXEL_RANGE),
        ("layout", models.LAYOUT),
        ("openvino_version", ov.get_version().split("-")[0]),
    ]
    if model_name == models.REIDENTIFICATION:
        metadata.append(("reference_landmarks", json.dumps([list(p) for p in models.REFERENCE_LANDMARKS])))
    return tuple(metadata)


def export_onnx(xml: Path, weights: Path, spec: ExportSpec, feeds: dict[str, np.ndarray], path: Path) -> None:
    """Read the IR with OpenVINO, translate, simplify, verify and write it to `path`."""
    ir = ov.Core().read_model(xml, weights)
    ir_counts = count_ir_ops(ir)
    model = translate(ir, spec, str(xml))
    model = simplify_and_verify(model, feeds)
    set_metadata(model, spec.metadata)
    log.info("%s: IR has %d ops (%d non-constant), ONNX graph has %d nodes",
             path.name, ir_counts["all"], ir_counts["non_constant"], len(model.graph.node))
    onnx.checker.check_model(model, full_check=True)
    save_onnx(model, path)


def onnx_targets(sources: Sources, folder: Path) -> list[Target]:
    reid = models.REIDENTIFICATION
    reid_meta = onnx_metadata(reid, sources.precision, sources.reid_xml, sources.reid_bin)
    landmarks_meta = onnx_metadata(models.LANDMARKS, sources.precision, sources.landmarks_xml,
                                   sources.landmarks_bin)
    reid_crops = load_crops(sources.images, models.REIDENTIFICATION_SIZE)
    landmark_crops = load_crops(sources.images, models.LANDMARKS_SIZE)

    def reid_target(name: str, batch: int | str, crops: np.ndarray) -> Target:
        spec = ExportSpec(("images",), ("features",), batch, True, reid_meta)
        return Target(
            description=f"{name} from the {sources.precision} IR",
            outputs=(name,),
            sources=(sources.reid_xml, sources.reid_bin),
            settings={"spec": repr(spec)},
            run=lambda: export_onnx(sources.reid_xml, sources.reid_bin, spec, {"images": crops}, folder / name),
        )

    landmarks_name = f"{models.LANDMARKS}_Nx3x48x48.onnx"
    landmarks_spec = ExportSpec(("images",), ("landmarks",), "N", True, landmarks_meta)
    return [
        reid_target(f"{reid}_1x3x128x128.onnx", 1, reid_crops[:1]),
        reid_target(f"{reid}_Nx3x128x128.onnx", "N", reid_crops),
        Target(
            description=f"{landmarks_name} from the {sources.precision} IR",
            outputs=(landmarks_name,),
            sources=(sources.landmarks_xml, sources.landmarks_bin),
            settings={"spec": repr(landmarks_spec)},
            run=lambda: export_onnx(sources.landmarks_xml, sources.landmarks_bin, landmarks_spec,
                                    {"images": landmark_crops}, folder / landmarks_name),
        ),
    ]


def head_targets(folder: Path, crops: np.ndarray) -> list[Target]:
    """Return the targets that graft the pair and gallery heads onto the dynamic-batch backbone."""
    from postprocess.build import export_head, head_file_name

    backbone = folder / f"{models.REIDENTIFICATION}_Nx3x128x128.onnx"
    targets = []
    for kind in ("pair", "gallery"):
        name = head_file_name(backbone.stem, kind, clip=True)
        targets.append(Target(
            description=f"{name} ({kind} head on {backbone.name})",
            outputs=(name,),
            sources=(backbone,),
            settings={"head": kind, "clip": True},
            run=lambda kind=kind, name=name: export_head(backbone, kind, True, crops, folder / name),
        ))
    return targets


def tflite_targets(folder: Path, images: tuple[Path, ...]) -> list[Target]:
    """float32 and float16 TFLite files of the plain models and both heads, and the Nx3 SavedModel."""
    from convert.tflite import export_tflite

    reid = models.REIDENTIFICATION
    sources = [f"{reid}_1x3x128x128.onnx", f"{reid}_Nx3x128x128.onnx",
               f"{reid}_NMx3x128x128_post.onnx", f"{reid}_Nx3x128x128_gallery_post.onnx"]
    targets = []
    for source in sources:
        stem = source.removesuffix(".onnx")
        saved_model = source == f"{reid}_Nx3x128x128.onnx"
        outputs = (f"{stem}_float32.tflite", f"{stem}_float16.tflite") + ((f"{stem}_saved_model",) if saved_model else ())
        targets.append(Target(
            description=f"TFLite{' and SavedModel' if saved_model else ''} from {source} with onnx2tf (offline)",
            outputs=outputs,
            sources=(folder / source,),
            settings={"tflite": True, "saved_model": saved_model},
            run=lambda source=source, stem=stem, saved_model=saved_model: export_tflite(
                folder / source, folder, stem, list(images), saved_model=saved_model),
        ))
    return targets


def fetch_sources(precision: str, root: Path, omz_mirror: Path | None, images_mirror: Path | None) -> Sources:
    reid_xml, reid_bin = fetch_model(models.REIDENTIFICATION, precision, root, omz_mirror)
    landmarks_xml, landmarks_bin = fetch_model(models.LANDMARKS, precision, root, omz_mirror)
    images = fetch_images(root, images_mirror)
    return Sources(precision, reid_xml, reid_bin, landmarks_xml, landmarks_bin, tuple(images))


def convert_all(precision: str, build_dir: Path, root: Path, omz_mirror: Path | None = None,
                images_mirror: Path | None = None, tflite: bool = True) -> list[str]:
    """Fetch the sources and build every artifact of `precision`; return the names written.

    With `tflite=False` only the ONNX files are built, which takes seconds instead of minutes.
    """
    sources = fetch_sources(precision, root, omz_mirror, images_mirror)
    folder = build_dir / precision
    crops = load_crops(sources.images, models.REIDENTIFICATION_SIZE)
    targets = onnx_targets(sources, folder) + head_targets(folder, crops)
    if tflite:
        targets += tflite_targets(folder, sources.images)
    return run_targets(folder, targets)
