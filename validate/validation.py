"""Check that every converted face-reidentification-retail-0095 artifact matches the OMZ IR.

Runs each artifact in build/<PRECISION>/ on every runtime that loads it, and the IR on OpenVINO as
the reference. Prints the cosine similarity of the base image to every target beside the model
card's published row, then the feature parity of every artifact against the reference.

Head models compute the similarity in their graph. The pair head gets every image as both
`base_images` and `target_images`. The gallery head gets its own embeddings of the images as
`gallery_features`, as an application that enrols faces with the same model would, so its rows
never mix in numbers from the reference.

Exit status: 0 when every row passes, 1 when any row fails, 2 for a usage or input error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as `python validate/validation.py`: Python put validate/ first on the import path, where
    # its modules would shadow top-level packages. The repository root belongs there instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from convert import models
from convert.assets import image_files
from convert.fetch import IMAGES_DIR, AssetError, fetch_images, fetch_model
from validate.artifacts import INT8, IR, Artifact, ArtifactError, ArtifactSet, find_artifacts, reference_artifact
from validate.compare import (
    MODEL_CARD_ROW,
    MODEL_CARD_TOLERANCE,
    TOLERANCES,
    RowResult,
    ValidationResult,
    compare_features,
    compare_similarity,
)
from validate.lfw_command import add_lfw_parser
from validate.images import FaceImage, ImageError, find_base, load_images, target_order
from validate.report import image_legend, parity_table, similarity_table, summary, write_report
from validate.runtimes import Runtime, runtimes_for

log = logging.getLogger("validate")

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2

# Messages of some runtimes end in the underlying cause after lines of source locations; longer
# ones are cut so that a table cell stays readable.
_MAX_ERROR_LENGTH = 200


class ReferenceRunError(Exception):
    """Raised when OpenVINO cannot run the reference IR."""


class UsageError(Exception):
    """Raised for a combination of options that cannot work."""


@dataclass(frozen=True)
class Plan:
    """The validated inputs of one run."""

    precision: str
    artifacts_folder: Path
    artifact_set: ArtifactSet
    images: list[FaceImage]
    base_index: int
    reference: Artifact


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that every subcommand shares. A subcommand's options go after its name."""
    parser.add_argument("--precision", default="FP16", choices=models.PRECISIONS,
                        help="precision of the OMZ IR that is the reference (default: FP16)")
    parser.add_argument("--artifacts", type=Path, default=None, metavar="DIR",
                        help="folder of converted models (default: build/PRECISION under --root)")
    parser.add_argument("--root", type=Path, default=Path("."), metavar="DIR",
                        help="folder that contains models/, data/ and build/ (default: the current folder)")
    parser.add_argument("--omz-mirror", type=Path, default=None, metavar="DIR",
                        help="copy a missing IR from this folder (laid out like OMZ: MODEL/PRECISION/FILE) "
                             "instead of downloading it")
    parser.add_argument("--images-mirror", type=Path, default=None, metavar="DIR",
                        help="copy missing validation crops from this folder instead of downloading them")
    parser.add_argument("--report", type=Path, default=None, metavar="DIR",
                        help="also write DIR/report.md with image thumbnails, the tables and a heatmap")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="validate/validation.py",
        description="Run every converted artifact on every runtime that loads it and compare it with the OMZ IR.",
        epilog="Exit status: 0 when every row passes, 1 when any row fails, 2 for a usage or input error.",
    )
    add_common_arguments(parser)
    parser.add_argument("--images", type=Path, default=None, metavar="DIR",
                        help="folder of face images, used in file name order "
                             "(default: data/wider-12-group under --root, fetched like `make convert` does)")
    parser.add_argument("--base", default=None, metavar="NAME",
                        help="file name or stem of the base image (default: the first image)")
    parser.set_defaults(handler=run_similarity_table)

    # Without a subcommand the parser runs the similarity table above.
    subparsers = parser.add_subparsers(dest="command", title="subcommands", metavar="COMMAND",
                                       help="optional. Without a COMMAND the similarity table runs")
    add_lfw_parser(subparsers, add_common_arguments)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return args.handler(args)


def run_similarity_table(args: argparse.Namespace) -> int:
    """Validate every artifact, print the tables and return the exit status."""
    started = time.perf_counter()
    try:
        plan = prepare(args)
        result = validate(plan)
    except (ArtifactError, ImageError, AssetError, ReferenceRunError, UsageError) as error:
        log.error("%s", error)
        return EXIT_USAGE

    tables = render_tables(result)
    print(image_legend(result))
    print()
    print(tables)
    print()
    print(summary(result))

    if args.report is not None:
        try:
            write_report(args.report, result, tables)
        except OSError as error:
            log.error("Cannot write the report to %s: %s. Pass --report with a writable folder.", args.report, error)
            return EXIT_USAGE

    log.info("Validation finished in %.1f s", time.perf_counter() - started)
    return EXIT_PASS if result.passed else EXIT_FAIL


def prepare(args: argparse.Namespace) -> Plan:
    """Find the artifacts, read the images and fetch the reference IR. Input errors raise."""
    root = args.root
    artifacts_folder = args.artifacts if args.artifacts is not None else root / "build" / args.precision
    _check_report_folder(args.report)
    artifact_set = find_artifacts(artifacts_folder, args.precision)
    for path, reason in artifact_set.skipped:
        log.info("Skipping %s: %s", path.name, reason)
    _warn_on_precision_mismatch(artifact_set.artifacts, args.precision)

    images = _load_validation_images(args)
    base_index = find_base(images, args.base)

    xml, _ = fetch_model(models.REIDENTIFICATION, args.precision, root, args.omz_mirror)
    return Plan(args.precision, artifacts_folder, artifact_set, images, base_index,
                reference_artifact(xml, args.precision))


def _load_validation_images(args: argparse.Namespace) -> list[FaceImage]:
    if args.images is not None:
        if args.images_mirror is not None:
            log.info("--images is set, so --images-mirror %s is not used", args.images_mirror)
        return load_images(args.images)

    fetch_images(args.root, args.images_mirror)
    return load_images(args.root / IMAGES_DIR)


def _check_report_folder(folder: Path | None) -> None:
    if folder is not None and folder.exists() and not folder.is_dir():
        raise UsageError(f"--report {folder} is a file, not a folder. Pass --report with a folder path.")


def _warn_on_precision_mismatch(artifacts: Sequence[Artifact], precision: str) -> None:
    sources: dict[str, list[str]] = {}
    for artifact in artifacts:
        if artifact.source_precision is not None and artifact.source_precision != precision:
            sources.setdefault(artifact.source_precision, []).append(artifact.name)

    for source, names in sources.items():
        log.warning("%s converted from the %s IR, but the reference is the %s IR. "
                    "Pass --precision %s to compare with their source.",
                    ", ".join(names), source, precision, source)


def validate(plan: Plan) -> ValidationResult:
    """Run the reference and every artifact on every runtime that loads it, and compare."""
    targets = target_order(len(plan.images), plan.base_index)
    reference = _run_reference(plan, targets)

    rows = []
    for artifact in plan.artifact_set.artifacts:
        for runtime in runtimes_for(artifact.format):
            row = measure(artifact, runtime, plan.images, plan.base_index, targets)
            check(row, reference)
            rows.append(row)

    published = None
    if uses_model_card_crops(plan.images, plan.base_index):
        published = compare_similarity(MODEL_CARD_ROW, reference.similarity_row, _model_card_limit(reference))
        log.info("Model card row vs %s on %s: %s", reference.artifact.name, reference.runtime, published.describe())
    return ValidationResult(plan.precision, plan.artifacts_folder, plan.images, plan.base_index, targets,
                            reference, rows, published)


def _run_reference(plan: Plan, targets: list[int]) -> RowResult:
    runtimes = runtimes_for(IR)
    if not runtimes:
        raise ReferenceRunError(f"No runtime in validate/runtimes/ loads {IR} files, so there is no reference.")

    reference = measure(plan.reference, runtimes[0], plan.images, plan.base_index, targets)
    if reference.error is not None:
        raise ReferenceRunError(
            f"The reference {plan.reference.path} failed on {reference.runtime}: {reference.error}. "
            f"Delete {plan.reference.path.parent} and run again to fetch the IR again."
        )
    return reference


def _model_card_limit(reference: RowResult) -> float:
    # The card prints three decimals of a float model, so a float reference must round to it.
    # An int8 reference is held to the int8 tolerance instead.
    if reference.artifact.precision_class == INT8:
        return TOLERANCES[INT8].similarity_max_abs
    return MODEL_CARD_TOLERANCE


def measure(artifact: Artifact, runtime: Runtime, images: list[FaceImage], base_index: int,
            targets: list[int]) -> RowResult:
    """Load `artifact` on `runtime` and compute the embeddings and the all-images similarity matrix.

    A failure to load or run becomes the row's `error`, so the other rows still run.
    """
    log.info("Running %s on %s", artifact.name, runtime.name)
    started = time.perf_counter()
    row = RowResult(artifact, runtime.name)
    try:
        session = runtime.load(artifact.path)
        row.features = session.embed(images)
        row.matrix = session.similarity(images, images)
    # Runtimes raise their own exception types for unreadable or unsupported models (RuntimeError,
    # onnxruntime's InvalidProtobuf, ValueError, TensorFlow's OpError), and each belongs in its row.
    except Exception as error:  # noqa: BLE001
        row.features = row.matrix = None
        row.error = _one_line(error)
        log.error("%s failed on %s: %s. If the file is truncated or corrupt, run `make convert` to rebuild it.",
                  artifact.path, runtime.name, row.error.rstrip("."))
        return row

    row.similarity_row = row.matrix[base_index, targets]
    row.seconds = time.perf_counter() - started
    return row


def check(row: RowResult, reference: RowResult) -> None:
    """Compare a row's similarity and features with the reference, within its class's tolerances."""
    if row.error is not None:
        return

    tolerance = TOLERANCES[row.artifact.precision_class]
    try:
        row.similarity_check = compare_similarity(row.similarity_row, reference.similarity_row,
                                                  tolerance.similarity_max_abs)
        row.parity = compare_features(row.features, reference.features, tolerance)
    except ValueError as error:
        row.error = str(error)
        log.error("%s on %s: %s", row.artifact.path, row.runtime, row.error)
        return

    details = "; ".join(statistic.describe() for statistic in (row.similarity_check, *row.parity))
    log.info("%s on %s (%s, %.2f s): %s -> %s", row.artifact.name, row.runtime, row.artifact.precision_class,
             row.seconds, details, "PASS" if row.passed else "FAIL")


def uses_model_card_crops(images: Sequence[FaceImage], base_index: int) -> bool:
    """Tell whether the images are the model card's ten crops, by name and SHA-256, with crop 0000 as the base."""
    crops = sorted(image_files(), key=lambda asset: asset.name)
    if base_index != 0 or len(images) != len(crops):
        return False
    return all(image.name == crop.name and image.sha256 == crop.digest for image, crop in zip(images, crops))


def render_tables(result: ValidationResult) -> str:
    """Return both Markdown tables with their headings, as printed and as written into the report."""
    base = result.base_index
    sections = [
        f"## Cosine similarity of base image {base} to each target (clipped to [0, 1])",
        similarity_table(result),
    ]
    if result.published is None:
        sections.append("The model card's row is left out: it applies only to the ten validation crops "
                        "with crop 0000 as the base.")
    sections += [
        f"## Feature parity against the reference ({len(result.images)} images, "
        f"{result.reference.features.shape[1]}-D embeddings)",
        parity_table(result),
    ]
    return "\n\n".join(sections)


def _one_line(error: Exception) -> str:
    """Return the exception type and the last non-empty line of its message, which carries the cause."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__
    if len(message) > _MAX_ERROR_LENGTH:
        message = message[: _MAX_ERROR_LENGTH - 3] + "..."
    return message


if __name__ == "__main__":
    sys.exit(main())
