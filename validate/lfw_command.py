"""`validation.py lfw`: LFW verification accuracy of the IR and of every artifact on every runtime.

Each image named by pairs.txt is aligned once (face-detection-retail-0004, then five landmarks from
landmarks-regression-retail-0009, then a similarity transform to the model card's reference points)
and cached. Every artifact then embeds the same crops, and the 10-fold protocol scores the pairs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from convert import models
from convert.fetch import AssetError, fetch_model
from validate import lfw
from validate.align import Aligner, AlignmentError, centre_crop_files
from validate.artifacts import Artifact, ArtifactError, find_artifacts, reference_artifact
from validate.runtimes import RUNTIMES

log = logging.getLogger("validate.lfw")

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

# OMZ's published LFW accuracy of face-reidentification-retail-0095, measured by its accuracy checker
# on the original LFW images (not the deep-funneled ones).
PUBLISHED_ACCURACY = 0.9947
# A float artifact must score the IR's accuracy within this margin on the same pairs and folds.
ACCURACY_TOLERANCE = {"float32": 0.001, "float16": 0.001, "int8": 0.005}
LANDMARKS_ONNX = f"{models.LANDMARKS}_Nx3x48x48.onnx"


@dataclass
class LfwRow:
    """One artifact on one runtime, or a failure to run it."""

    artifact: Artifact
    runtime: str
    result: lfw.LfwResult | None = None
    error: str | None = None
    seconds: float = 0.0


def add_lfw_parser(subparsers, add_common_arguments) -> None:
    parser = subparsers.add_parser(
        "lfw", help="LFW verification accuracy of the IR and every artifact",
        description="Score the IR and every converted artifact on the LFW verification protocol "
                    "(pairs.txt, 10 folds, cosine-similarity threshold chosen on the other nine folds).",
    )
    add_common_arguments(parser)
    parser.add_argument("--lfw-dir", type=Path, required=True, metavar="DIR",
                        help="folder with pairs.txt and lfw-deepfunneled/<Name>/<Name>_<NNNN>.jpg (or lfw/...)")
    parser.add_argument("--folds", type=int, default=10, choices=range(1, 11), metavar="K",
                        help="use only the first K folds of pairs.txt, 600 pairs each (default: 10)")
    parser.add_argument("--aligner", choices=("openvino", "onnx"), default="openvino",
                        help="run the landmarks model from its IR on OpenVINO (default) or from the converted "
                             f"{LANDMARKS_ONNX} on ONNX Runtime")
    parser.add_argument("--aligner-precision", default="FP16", choices=models.PRECISIONS,
                        help="precision of the detector and landmarks IRs used for alignment (default: FP16)")
    parser.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                        help="aligned-crop cache (default: build/lfw-cache under --root)")
    parser.add_argument("--only", default=None, metavar="NAMES",
                        help="comma-separated artifact file names to evaluate besides the IR (default: all)")
    parser.add_argument("--runtimes", default=None, metavar="NAMES",
                        help="comma-separated runtimes to use for the artifacts, e.g. onnxruntime,litert "
                             "(default: every runtime that loads each artifact)")
    parser.add_argument("--mistakes", action="store_true",
                        help="also score the IR with RGB input, with pixels scaled to 0..1 and without alignment")
    parser.set_defaults(handler=run_lfw)


def _runtime_key(name: str) -> str:
    return name.lower().replace(" ", "")


def _selected_artifacts(args: argparse.Namespace, folder: Path) -> list[Artifact]:
    artifacts = list(find_artifacts(folder, args.precision).artifacts)
    if args.only:
        requested = [name.strip() for name in args.only.split(",") if name.strip()]
        known = {artifact.path.name for artifact in artifacts}
        unknown = [name for name in requested if name not in known]
        if unknown:
            raise ArtifactError(f"--only names {', '.join(unknown)}, which {folder} does not contain; "
                                "run `make convert` or check the names")
        artifacts = [artifact for artifact in artifacts if artifact.path.name in requested]
    return artifacts


def _selected_runtimes(args: argparse.Namespace):
    if not args.runtimes:
        return list(RUNTIMES)
    requested = {_runtime_key(name) for name in args.runtimes.split(",") if name.strip()}
    chosen = [runtime for runtime in RUNTIMES if _runtime_key(runtime.name) in requested]
    if len(chosen) != len(requested):
        names = ", ".join(_runtime_key(runtime.name) for runtime in RUNTIMES)
        raise ArtifactError(f"--runtimes {args.runtimes!r} names an unknown runtime; choose from {names}")
    return chosen


def _build_aligner(args: argparse.Namespace, artifacts_folder: Path) -> Aligner:
    detector_xml, _ = fetch_model(models.DETECTOR, args.aligner_precision, args.root, args.omz_mirror)
    landmarks_xml, _ = fetch_model(models.LANDMARKS, args.aligner_precision, args.root, args.omz_mirror)
    cache_dir = args.cache_dir or args.root / "build" / "lfw-cache"
    if args.aligner == "onnx":
        landmarks_onnx = artifacts_folder / LANDMARKS_ONNX
        if not landmarks_onnx.is_file():
            raise ArtifactError(f"{landmarks_onnx} not found: run `make convert` first, or use --aligner openvino")
        return Aligner(detector_xml, landmarks_onnx, landmarks_backend="onnxruntime", cache_dir=cache_dir)
    return Aligner(detector_xml, landmarks_xml, cache_dir=cache_dir)


def _evaluate(artifact: Artifact, runtime, crops, pairs: lfw.LfwPairs) -> LfwRow:
    row = LfwRow(artifact, runtime.name)
    started = time.perf_counter()
    try:
        session = runtime.load(artifact.path)
        row.result = lfw.evaluate(session.embed_tensor, crops, pairs, name=f"{artifact.path.name} on {runtime.name}")
    except Exception as error:  # noqa: BLE001 - one broken artifact must not stop the other rows
        row.error = f"{type(error).__name__}: {error}".splitlines()[0]
        log.error("%s on %s failed: %s", artifact.path.name, runtime.name, row.error)
    row.seconds = time.perf_counter() - started
    if row.result is not None:
        log.info("%s on %s: accuracy %.4f ± %.4f, TAR %.4f at FAR %g, %.1f s", artifact.path.name, runtime.name,
                 row.result.mean_accuracy, row.result.std_accuracy, row.result.tar, row.result.far, row.seconds)
    return row


def _passes(row: LfwRow, reference: lfw.LfwResult) -> tuple[float | None, float, bool]:
    tolerance = ACCURACY_TOLERANCE[row.artifact.precision_class]
    if row.result is None:
        return None, tolerance, False
    delta = abs(row.result.mean_accuracy - reference.mean_accuracy)
    return delta, tolerance, delta <= tolerance


def format_accuracy_table(rows: Sequence[LfwRow], reference: LfwRow, folds: int) -> tuple[str, bool]:
    """Render the Markdown accuracy table and return it with the overall verdict."""
    far = reference.result.far
    header = (f"|Model|Runtime|Class|accuracy (mean ± std, {folds} fold{'s' if folds > 1 else ''})|"
              f"TAR @ FAR={far:g}|abs Δ vs IR|Tolerance|Embed s|Result|")
    lines = [header, "|:-|:-|:-|-:|-:|-:|-:|-:|:-:|",
             f"|published (OMZ, original LFW images)|—|—|{PUBLISHED_ACCURACY:.4f}|—|—|—|—|—|"]
    ref = reference.result
    lines.append(f"|{reference.artifact.path.name} (reference)|{reference.runtime}|{reference.artifact.precision_class}|"
                 f"{ref.mean_accuracy:.4f} ± {ref.std_accuracy:.4f}|{ref.tar:.4f}|—|—|{ref.embed_seconds:.1f}|reference|")
    passed = True
    for row in rows:
        delta, tolerance, ok = _passes(row, ref)
        passed &= ok
        if row.result is None:
            lines.append(f"|{row.artifact.path.name}|{row.runtime}|{row.artifact.precision_class}|"
                         f"failed: {row.error}|—|—|≤ {tolerance}|—|FAIL|")
            continue
        result = row.result
        lines.append(f"|{row.artifact.path.name}|{row.runtime}|{row.artifact.precision_class}|"
                     f"{result.mean_accuracy:.4f} ± {result.std_accuracy:.4f}|{result.tar:.4f}|{delta:.4f}|"
                     f"≤ {tolerance}|{result.embed_seconds:.1f}|{'PASS' if ok else 'FAIL'}|")
    return "\n".join(lines), passed


def format_mistakes_table(results: dict[str, lfw.LfwResult], reference: lfw.LfwResult) -> str:
    lines = ["|IR preprocessing|accuracy (mean ± std)|TAR @ FAR|change vs correct input|",
             "|:-|-:|-:|-:|",
             f"|correct: aligned, BGR, 0..255|{reference.mean_accuracy:.4f} ± {reference.std_accuracy:.4f}|"
             f"{reference.tar:.4f}|—|"]
    for name, result in results.items():
        lines.append(f"|{name}|{result.mean_accuracy:.4f} ± {result.std_accuracy:.4f}|{result.tar:.4f}|"
                     f"{result.mean_accuracy - reference.mean_accuracy:+.4f}|")
    return "\n".join(lines)


def _write_report(folder: Path, text: str, rows: Sequence[LfwRow], reference: LfwRow, folds_note: str) -> None:
    from convert.finalize import write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    curves = {f"{row.artifact.path.name} ({row.runtime})": row.result for row in [reference, *rows] if row.result}
    lfw.write_roc_png(folder / "roc.png", curves, title=f"LFW ROC ({folds_note})")
    report = f"# LFW verification\n\n{text}\n\n![ROC curves](roc.png)\n"
    write_atomic(folder / "lfw.md", report.encode())
    data = {"reference": reference.result.to_dict(),
            "artifacts": [{"artifact": row.artifact.path.name, "runtime": row.runtime, "error": row.error,
                           **(row.result.to_dict() if row.result else {})} for row in rows]}
    write_atomic(folder / "lfw.json", json.dumps(data, indent=1).encode())
    log.info("wrote %s, %s and %s", folder / "lfw.md", folder / "roc.png", folder / "lfw.json")


def run_lfw(args: argparse.Namespace) -> int:
    """Align, embed with every artifact and runtime, print the tables; return the exit status."""
    started = time.perf_counter()
    artifacts_folder = args.artifacts if args.artifacts is not None else args.root / "build" / args.precision
    try:
        pairs = lfw.read_pairs(args.lfw_dir)
        if args.folds < 10:
            pairs = pairs.first_folds(args.folds)
        artifacts = _selected_artifacts(args, artifacts_folder)
        runtimes = _selected_runtimes(args)
        xml, _ = fetch_model(models.REIDENTIFICATION, args.precision, args.root, args.omz_mirror)
        reference = reference_artifact(xml, args.precision)
        aligner = _build_aligner(args, artifacts_folder)
        if not any(artifact.format in runtime.formats for artifact in artifacts for runtime in runtimes):
            raise ArtifactError(f"no runtime among --runtimes {args.runtimes} loads the selected artifacts "
                                f"({', '.join(a.path.name for a in artifacts)}); choose matching --only and --runtimes")
        aligned = aligner.align_files(pairs.image_paths)
        centre = centre_crop_files(pairs.image_paths) if args.mistakes else None
    except (lfw.LfwDataError, ArtifactError, AssetError, AlignmentError) as error:
        log.error("%s", error)
        return EXIT_USAGE

    fallbacks = aligned.fallback_paths
    log.info("alignment: %d images in %.1f s (%d from the cache), %d without a detected face used a centre crop",
             len(aligned.alignments), aligned.seconds, aligned.cache_hits, len(fallbacks))
    crops = aligned.crops

    reference_runtime = next(runtime for runtime in RUNTIMES if reference.format in runtime.formats)
    reference_row = _evaluate(reference, reference_runtime, crops, pairs)
    if reference_row.result is None:
        log.error("the reference IR %s failed on %s: %s", xml, reference_runtime.name, reference_row.error)
        return EXIT_USAGE

    rows = [_evaluate(artifact, runtime, crops, pairs)
            for artifact in artifacts for runtime in runtimes if artifact.format in runtime.formats]
    folds_note = f"{len(pairs)} pairs in {args.folds} fold{'s' if args.folds > 1 else ''}"
    table, passed = format_accuracy_table(rows, reference_row, args.folds)
    text = (f"LFW verification, {folds_note}, {len(aligned.alignments)} images from {args.lfw_dir}; "
            f"{len(fallbacks)} without a detected face used a centre crop.\n"
            "The published 0.9947 was measured by OMZ on the original LFW images; deep-funneled images give "
            "close but not strictly comparable figures.\n\n" + table)
    if args.folds == 1:
        text += ("\n\nWith one fold there are no other folds to choose the threshold on, so the fold's own best "
                 "threshold is used: the accuracy is optimistic.")

    if args.mistakes:
        session = reference_runtime.load(reference.path)
        mistakes = lfw.evaluate_mistakes(session.embed_tensor, pairs, crops, centre)
        text += "\n\nWhat preprocessing mistakes cost (the IR on OpenVINO):\n\n" + format_mistakes_table(
            mistakes, reference_row.result)

    print(text)
    print()
    print(f"{'PASSED' if passed else 'FAILED'}: {sum(_passes(r, reference_row.result)[2] for r in rows)} of "
          f"{len(rows)} rows within tolerance of the IR's accuracy")
    print(f"timings: alignment {aligned.seconds:.1f} s for {len(aligned.alignments)} images "
          f"({aligned.cache_hits} cached); embedding "
          + ", ".join(f"{row.artifact.path.name} on {row.runtime} {row.seconds:.1f} s" for row in [reference_row, *rows]))
    if args.report is not None:
        _write_report(args.report, text, rows, reference_row, folds_note)
    log.info("LFW evaluation finished in %.1f s", time.perf_counter() - started)
    return EXIT_PASS if passed else EXIT_FAIL
