"""Markdown tables of a validation run, and the `--report` folder with thumbnails and a heatmap."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import cv2
import numpy as np

from convert.finalize import write_atomic
from validate.compare import MODEL_CARD_ROW, RowResult, Statistic, ValidationResult

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"
HEATMAP_FILE = "similarity_heatmap.png"
THUMBNAIL_FOLDER = "thumbnails"
THUMBNAIL_SIZE = 96  # pixels, longer side

_MISSING = "—"


def image_legend(result: ValidationResult) -> str:
    """List the images by index, mark the base, and state every grayscale or RGBA conversion."""
    lines = [f"Images in {result.images[0].path.parent} (sorted by name):", ""]
    for index, image in enumerate(result.images):
        notes = []
        if index == result.base_index:
            notes.append("base")
        if image.conversion is not None:
            notes.append(f"{image.conversion}, converted to 3-channel BGR")
        suffix = f" ({'; '.join(notes)})" if notes else ""
        lines.append(f"- {index}: {image.name}{suffix}")
    return "\n".join(lines)


def similarity_table(result: ValidationResult) -> str:
    """Return the similarity table: the model card's row, the reference, then one row per artifact and runtime."""
    labels = [str(index) for index in result.targets]
    header = ["Model", "Runtime", "Class", *labels, "max abs Δ vs reference", "Tolerance", "Result"]
    lines = [_row(header), _row([":-", ":-", ":-", *["-:"] * len(labels), "-:", "-:", ":-:"])]

    if result.published is not None:
        lines.append(_row(["model card (published)", _MISSING, _MISSING,
                           *_similarities(np.array(MODEL_CARD_ROW)), *_check_cells(result.published)]))
    reference = result.reference
    lines.append(_row([f"{reference.artifact.name} (reference)", reference.runtime, reference.artifact.precision_class,
                       *_similarities(reference.similarity_row), _MISSING, _MISSING, "reference"]))

    for row in result.rows:
        if row.error is not None:
            cells = [_MISSING] * len(labels) + [f"error: {row.error}", _MISSING, "FAIL"]
        else:
            cells = [*_similarities(row.similarity_row), *_check_cells(row.similarity_check)]
        lines.append(_row([row.artifact.name, row.runtime, row.artifact.precision_class, *cells]))
    return "\n".join(lines)


def parity_table(result: ValidationResult) -> str:
    """Return the feature parity table: max and mean |Δ| and min cosine, each beside its tolerance."""
    header = ["Model", "Runtime", "Class", "max abs Δ", "Tolerance", "mean abs Δ", "Tolerance",
              "min cosine", "Tolerance", "Result"]
    lines = [_row(header), _row([":-", ":-", ":-", "-:", "-:", "-:", "-:", "-:", "-:", ":-:"])]
    for row in result.rows:
        if row.error is not None:
            cells = [f"error: {row.error}"] + [_MISSING] * 5 + ["FAIL"]
        else:
            cells = []
            for statistic in row.parity:
                cells += [statistic.formatted_value(), _format_limit(statistic)]
            cells.append(_result(all(statistic.passed for statistic in row.parity)))
        lines.append(_row([row.artifact.name, row.runtime, row.artifact.precision_class, *cells]))
    return "\n".join(lines)


def summary(result: ValidationResult) -> str:
    """Return the closing PASSED or FAILED line, naming every failed row."""
    checks = len(result.rows) + (result.published is not None)
    failures = [f"{row.artifact.name} on {row.runtime}" for row in result.failed_rows]
    if result.published is not None and not result.published.passed:
        failures.insert(0, "model card row against the reference")
    if not failures:
        return f"PASSED: all {checks} rows are within tolerance of the {result.reference.artifact.name} reference"
    return f"FAILED: {len(failures)} of {checks} rows: " + "; ".join(failures)


def write_report(folder: Path, result: ValidationResult, tables: str) -> Path:
    """Write `report.md`, the image thumbnails and the similarity heatmap into `folder`."""
    folder = Path(folder)
    (folder / THUMBNAIL_FOLDER).mkdir(parents=True, exist_ok=True)
    thumbnails = [_write_thumbnail(folder, index, image) for index, image in enumerate(result.images)]
    heatmap_caption = _write_heatmap(folder / HEATMAP_FILE, result)

    sections = [
        "# face-reidentification-retail-0095 validation",
        f"Artifacts: `{result.artifacts_folder.as_posix()}` (precision {result.precision}). Reference: "
        f"`{result.reference.artifact.path.as_posix()}` on {result.reference.runtime}.",
        "## Image pairs",
        _pairs_table(result, thumbnails),
        tables,
        "## Similarity matrices",
        f"![Similarity matrices]({HEATMAP_FILE})",
        heatmap_caption,
        summary(result),
    ]
    path = folder / REPORT_FILE
    write_atomic(path, ("\n\n".join(sections) + "\n").encode("utf-8"))
    logger.info("Wrote %s", path)
    return path


def _row(cells: list[str]) -> str:
    return "|" + "|".join(str(cell).replace("|", "\\|") for cell in cells) + "|"


def _similarities(values: np.ndarray) -> list[str]:
    return [f"{value:.3f}" for value in values]


def _check_cells(statistic: Statistic) -> list[str]:
    return [statistic.formatted_value(), _format_limit(statistic), _result(statistic.passed)]


def _format_limit(statistic: Statistic) -> str:
    if statistic.limit is None:
        return "not checked"
    return f"{'≥' if statistic.lower_limit else '≤'} {statistic.limit:g}"


def _result(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def _pairs_table(result: ValidationResult, thumbnails: list[str]) -> str:
    base = result.base_index
    lines = [_row(["Pattern", "Base image", "Target image"]), _row([":-:", ":-:", ":-:"])]
    for target in result.targets:
        lines.append(_row([
            f"{base} vs {target}",
            f"![{result.images[base].name}]({thumbnails[base]})",
            f"![{result.images[target].name}]({thumbnails[target]})",
        ]))
    return "\n".join(lines)


def _write_thumbnail(folder: Path, index: int, image) -> str:
    """Write a PNG copy of the image, at most THUMBNAIL_SIZE pixels on its longer side; return its relative path."""
    height, width = image.pixels.shape[:2]
    scale = min(1.0, THUMBNAIL_SIZE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    pixels = cv2.resize(image.pixels, size, interpolation=cv2.INTER_AREA)

    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError(f"OpenCV could not encode a thumbnail of {image.path}")
    relative = f"{THUMBNAIL_FOLDER}/{index}_{image.path.stem}.png"
    write_atomic(folder / relative, encoded.tobytes())
    return relative


def _largest_deviation(result: ValidationResult) -> tuple[RowResult, np.ndarray] | None:
    """Return the row whose all-images similarity matrix differs most from the reference, with the difference."""
    candidates = [row for row in result.rows if row.matrix is not None]
    if not candidates:
        return None
    differences = [row.matrix - result.reference.matrix for row in candidates]
    index = int(np.argmax([np.max(np.abs(difference)) for difference in differences]))
    return candidates[index], differences[index]


def _write_heatmap(path: Path, result: ValidationResult) -> str:
    """Draw the reference similarity matrix beside the largest deviation; return the caption."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    labels = [str(index) for index in range(len(result.images))]
    deviation = _largest_deviation(result)
    figure, axes = pyplot.subplots(1, 2 if deviation else 1, figsize=(11 if deviation else 5.5, 4.8), squeeze=False)

    reference_axes = axes[0][0]
    image = reference_axes.imshow(result.reference.matrix, cmap="viridis", vmin=0.0, vmax=1.0)
    reference_axes.set_title(f"Reference ({result.reference.runtime}, {result.precision} IR)")
    figure.colorbar(image, ax=reference_axes, label="cosine similarity, clipped to [0, 1]")
    caption = (f"Left: cosine similarity of every image to every image from the reference "
               f"{result.reference.artifact.name}.")

    if deviation:
        row, difference = deviation
        largest = float(np.max(np.abs(difference)))
        # A symmetric range keeps zero at the middle of the colour map, and the floor avoids a
        # zero-width range when the artifact matches the reference exactly.
        limit = max(largest, 1e-9)
        difference_axes = axes[0][1]
        image = difference_axes.imshow(difference, cmap="RdBu_r", vmin=-limit, vmax=limit)
        difference_axes.set_title(f"{row.artifact.name}\non {row.runtime} minus reference", fontsize=9)
        # Explicit tick labels: matplotlib's shared exponent label would overlap the title.
        figure.colorbar(image, ax=difference_axes, label="difference of cosine similarity", format="%.1e")
        caption += (f" Right: {row.artifact.name} on {row.runtime} minus the reference, the largest "
                    f"deviation of all rows (max |Δ| {largest:.1e}).")

    for axis in axes[0]:
        axis.set_xticks(range(len(labels)), labels)
        axis.set_yticks(range(len(labels)), labels)
        axis.set_xlabel("image")
        axis.set_ylabel("image")
    figure.tight_layout()

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    write_atomic(path, buffer.getvalue())
    return caption
