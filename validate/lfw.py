"""LFW face verification: pairs.txt, the 10-fold protocol, TAR at a fixed FAR, and ROC plots.

The protocol is the one published with LFW (View 2): pairs.txt lists 10 folds of 300 matched and
300 mismatched pairs. For each fold the cosine similarity threshold that maximises accuracy on
the other nine folds is applied to it, and the report gives the mean and standard deviation of
the ten fold accuracies.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from convert.finalize import write_atomic

logger = logging.getLogger(__name__)

# Image folders that an LFW directory may contain, in order of preference: the deep-funneled
# release (lfw-deepfunneled.tgz) and the original one (lfw.tgz).
IMAGE_LAYOUTS = ("lfw-deepfunneled", "lfw")

DEFAULT_FAR = 1e-3

Embed = Callable[[np.ndarray], np.ndarray]


class LfwDataError(ValueError):
    """Invalid or incomplete LFW data; names the file and, where it applies, the line."""

    def __init__(self, path: Path, message: str, line: int | None = None):
        self.path = path
        self.line = line
        location = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{location}: {message}")


# ---------------------------------------------------------------------------------------------
# pairs.txt


@dataclasses.dataclass(frozen=True)
class Pair:
    """One verification pair: two image paths, whether they show the same person, and its fold."""

    first: Path
    second: Path
    same: bool
    fold: int
    line: int


@dataclasses.dataclass
class LfwPairs:
    """The pairs of pairs.txt with resolved image paths."""

    pairs: list[Pair]
    folds: int
    pairs_file: Path
    image_dir: Path

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def image_paths(self) -> list[Path]:
        """Every image named by a pair, once, in order of first use."""
        return list(dict.fromkeys(path for pair in self.pairs for path in (pair.first, pair.second)))

    @property
    def same(self) -> np.ndarray:
        return np.array([pair.same for pair in self.pairs], dtype=bool)

    @property
    def fold_ids(self) -> np.ndarray:
        return np.array([pair.fold for pair in self.pairs], dtype=np.int64)

    def first_folds(self, count: int) -> LfwPairs:
        """Return the pairs of the first `count` folds, for example 1 for the first 600 pairs."""
        pairs = [pair for pair in self.pairs if pair.fold < count]
        return LfwPairs(pairs, min(count, self.folds), self.pairs_file, self.image_dir)


def find_image_dir(lfw_dir: Path) -> Path:
    """Return the image folder of `lfw_dir`: lfw-deepfunneled/ if present, else lfw/."""
    for layout in IMAGE_LAYOUTS:
        candidate = lfw_dir / layout
        if candidate.is_dir():
            return candidate
    expected = " or ".join(f"{lfw_dir / layout}/<Name>/<Name>_<NNNN>.jpg" for layout in IMAGE_LAYOUTS)
    raise LfwDataError(lfw_dir, f"no LFW image folder found; expected {expected}. Extract the LFW images there.")


def image_path(image_dir: Path, name: str, number: int) -> Path:
    return image_dir / name / f"{name}_{number:04d}.jpg"


def read_pairs(lfw_dir: Path, pairs_file: Path | None = None) -> LfwPairs:
    """Parse `lfw_dir`/pairs.txt and check that every image it names exists.

    Raises LfwDataError, naming the file and line, for a missing pairs.txt, a malformed line,
    a pair in the wrong place for its fold, or a missing image.
    """
    lfw_dir = Path(lfw_dir)
    pairs_file = Path(pairs_file) if pairs_file else lfw_dir / "pairs.txt"
    if not pairs_file.is_file():
        raise LfwDataError(pairs_file, "pairs.txt not found. Download it from the LFW site into the LFW directory.")
    image_dir = find_image_dir(lfw_dir)

    try:
        lines = pairs_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise LfwDataError(pairs_file, f"not a UTF-8 text file ({error}). Replace it with the LFW pairs.txt.") from error
    while lines and not lines[-1].strip():
        lines.pop()
    folds, pairs_per_class = _parse_header(pairs_file, lines)
    expected_lines = 1 + folds * 2 * pairs_per_class
    if len(lines) != expected_lines:
        raise LfwDataError(
            pairs_file,
            f"the header promises {folds} folds of {pairs_per_class} matched and {pairs_per_class} "
            f"mismatched pairs ({expected_lines} lines with the header), but the file has {len(lines)} lines",
            line=min(len(lines), expected_lines + 1),
        )

    pairs = []
    for index, text in enumerate(lines[1:]):
        fold, position = divmod(index, 2 * pairs_per_class)
        same = position < pairs_per_class
        pairs.append(_parse_pair(pairs_file, index + 2, text, same, fold, image_dir))

    _check_images_exist(pairs_file, pairs)
    logger.info("Read %d pairs in %d folds from %s (images in %s)", len(pairs), folds, pairs_file, image_dir)
    return LfwPairs(pairs, folds, pairs_file, image_dir)


def _parse_header(pairs_file: Path, lines: list[str]) -> tuple[int, int]:
    if not lines:
        raise LfwDataError(pairs_file, "the file is empty; expected a header line '<folds> <pairs per fold>'", line=1)
    fields = lines[0].split()
    if len(fields) != 2 or not all(field.isdigit() and int(field) > 0 for field in fields):
        raise LfwDataError(
            pairs_file, f"invalid header {lines[0]!r}; expected two positive integers '<folds> <pairs per fold>'", line=1
        )
    return int(fields[0]), int(fields[1])


def _parse_pair(pairs_file: Path, line: int, text: str, same: bool, fold: int, image_dir: Path) -> Pair:
    fields = text.split()
    if same:
        expected = "a matched pair '<name> <n1> <n2>'"
        valid = len(fields) == 3 and _is_image_number(fields[1]) and _is_image_number(fields[2])
    else:
        expected = "a mismatched pair '<name1> <n1> <name2> <n2>'"
        valid = len(fields) == 4 and _is_image_number(fields[1]) and _is_image_number(fields[3])
    if not valid:
        raise LfwDataError(pairs_file, f"invalid line {text!r}; fold {fold + 1} expects {expected} here", line=line)

    if same:
        first = image_path(image_dir, fields[0], int(fields[1]))
        second = image_path(image_dir, fields[0], int(fields[2]))
    else:
        first = image_path(image_dir, fields[0], int(fields[1]))
        second = image_path(image_dir, fields[2], int(fields[3]))
    return Pair(first, second, same, fold, line)


def _is_image_number(field: str) -> bool:
    return field.isdigit() and int(field) > 0


def _check_images_exist(pairs_file: Path, pairs: list[Pair]) -> None:
    missing = [(pair.line, path) for pair in pairs for path in (pair.first, pair.second) if not path.is_file()]
    if not missing:
        return
    line, path = missing[0]
    others = len({path for _, path in missing}) - 1
    more = f" ({others} more images named by pairs.txt are missing too)" if others else ""
    raise LfwDataError(pairs_file, f"image not found: {path}{more}. Check the LFW directory and its layout.", line=line)


# ---------------------------------------------------------------------------------------------
# Thresholds and metrics


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Return the threshold that maximises accuracy of the rule `same = score > threshold`.

    Candidates are the midpoints between consecutive distinct scores plus one value below the
    lowest and one above the highest score. When several candidates reach the best accuracy,
    the middle one (by rank) is returned, so ties do not favour either end.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order].astype(np.float64)
    sorted_same = same[order]

    # Cut i rejects the i lowest scores: correct = impostors among them + genuine pairs above.
    rejected_impostors = np.concatenate([[0], np.cumsum(~sorted_same)])
    accepted_genuine = np.concatenate([np.cumsum(sorted_same[::-1])[::-1], [0]])
    correct = rejected_impostors + accepted_genuine

    # A cut between two equal scores cannot be realised by any threshold.
    valid = np.ones(len(correct), dtype=bool)
    valid[1:-1] = sorted_scores[1:] > sorted_scores[:-1]
    best_cuts = np.flatnonzero(valid & (correct == correct[valid].max()))
    cut = int(best_cuts[len(best_cuts) // 2])

    if cut == 0:
        return float(np.nextafter(sorted_scores[0], -np.inf))
    if cut == len(sorted_scores):
        return float(np.nextafter(sorted_scores[-1], np.inf))
    return float((sorted_scores[cut - 1] + sorted_scores[cut]) / 2)


def accuracy(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(np.mean((scores > threshold) == same))


def k_fold_accuracy(scores: np.ndarray, same: np.ndarray, fold_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Return per-fold accuracies and thresholds, and whether they are cross-validated.

    With two or more folds each fold is scored with the best threshold of the other folds.
    With a single fold there is nothing to train on, so the fold is scored with its own best
    threshold, an optimistic number (the flag is then False).
    """
    folds = np.unique(fold_ids)
    accuracies = np.empty(len(folds))
    thresholds = np.empty(len(folds))
    for index, fold in enumerate(folds):
        test = fold_ids == fold
        train = ~test if len(folds) > 1 else test
        thresholds[index] = best_threshold(scores[train], same[train])
        accuracies[index] = accuracy(scores[test], same[test], thresholds[index])
    return accuracies, thresholds, len(folds) > 1


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float = DEFAULT_FAR) -> tuple[float, float, float]:
    """Return (TAR, threshold, achieved FAR) at a target false accept rate over all given pairs.

    With N impostor (mismatched) pairs, k = floor(far * N) of them may be accepted. The
    threshold is the (k+1)-th highest impostor score and a pair is accepted when its score is
    strictly greater, so at most k impostors pass (fewer when scores tie) and the achieved FAR
    never exceeds the target. TAR is the fraction of genuine (matched) pairs accepted. The
    threshold is chosen on the same pairs it is applied to, as for a ROC curve. With the 3,000
    LFW impostor pairs, a FAR of 1e-3 rests on the 3 highest impostor scores.
    """
    impostor = np.sort(scores[~same])[::-1]
    genuine = scores[same]
    if len(impostor) == 0 or len(genuine) == 0:
        raise ValueError("TAR at FAR needs both matched and mismatched pairs")

    allowed = min(int(math.floor(far * len(impostor) + 1e-9)), len(impostor) - 1)
    threshold = float(impostor[allowed])
    achieved_far = float(np.mean(impostor > threshold))
    return float(np.mean(genuine > threshold)), threshold, achieved_far


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (FAR, TAR) arrays for every distinct threshold, from accept-none to accept-all."""
    thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1]])
    genuine = np.sort(scores[same])
    impostor = np.sort(scores[~same])
    # Pairs with score >= t are accepted at each distinct score t.
    tar = 1 - np.searchsorted(genuine, thresholds, side="left") / len(genuine)
    far = 1 - np.searchsorted(impostor, thresholds, side="left") / len(impostor)
    return far, tar


# ---------------------------------------------------------------------------------------------
# Result


@dataclasses.dataclass
class ScoreSet:
    """Cosine similarities of verification pairs with their labels and folds."""

    scores: np.ndarray
    same: np.ndarray
    fold_ids: np.ndarray


@dataclasses.dataclass
class LfwResult:
    """LFW verification accuracy of one embedding function under one preprocessing."""

    name: str
    score_set: ScoreSet
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray
    cross_validated: bool
    far: float
    tar: float
    tar_threshold: float
    achieved_far: float
    images: int
    embed_seconds: float

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(self.fold_accuracies))

    @property
    def std_accuracy(self) -> float:
        """Sample standard deviation of the fold accuracies, with n - 1 in the denominator as the LFW protocol specifies."""
        if len(self.fold_accuracies) < 2:
            return 0.0
        return float(np.std(self.fold_accuracies, ddof=1))

    @property
    def standard_error(self) -> float:
        return self.std_accuracy / math.sqrt(len(self.fold_accuracies))

    def summary(self) -> str:
        protocol = f"{len(self.fold_accuracies)}-fold" if self.cross_validated else "1 fold, own threshold"
        return (
            f"{self.name}: accuracy {self.mean_accuracy:.4f} ± {self.std_accuracy:.4f} ({protocol}, "
            f"{len(self.score_set.scores)} pairs), TAR {self.tar:.4f} at FAR {self.far:g} "
            f"(threshold {self.tar_threshold:.4f}), {self.images} images embedded in {self.embed_seconds:.1f} s"
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "pairs": int(len(self.score_set.scores)),
            "folds": int(len(self.fold_accuracies)),
            "cross_validated": self.cross_validated,
            "accuracy_mean": self.mean_accuracy,
            "accuracy_std": self.std_accuracy,
            "accuracy_standard_error": self.standard_error,
            "fold_accuracies": self.fold_accuracies.tolist(),
            "fold_thresholds": self.fold_thresholds.tolist(),
            "far": self.far,
            "tar": self.tar,
            "tar_threshold": self.tar_threshold,
            "achieved_far": self.achieved_far,
            "images": self.images,
            "embed_seconds": self.embed_seconds,
        }


def score_result(name: str, score_set: ScoreSet, far: float = DEFAULT_FAR, images: int = 0,
                 embed_seconds: float = 0.0) -> LfwResult:
    """Apply the k-fold protocol and TAR at FAR to a set of pair scores."""
    accuracies, thresholds, cross_validated = k_fold_accuracy(score_set.scores, score_set.same, score_set.fold_ids)
    tar, tar_threshold, achieved_far = tar_at_far(score_set.scores, score_set.same, far)
    return LfwResult(name, score_set, accuracies, thresholds, cross_validated, far, tar, tar_threshold,
                     achieved_far, images, embed_seconds)


# ---------------------------------------------------------------------------------------------
# Preprocessing and embedding


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Preprocessing of crops into model input: channel order, pixel scale, and aligned or centre crops."""

    name: str
    channel_order: str = "BGR"
    pixel_scale: float = 1.0
    aligned: bool = True


# The input the model expects: aligned crops, BGR, float 0..255, NCHW.
REFERENCE_PREPROCESSING = Preprocessing("aligned BGR 0..255")

# Common preprocessing mistakes, each changing one thing from the reference.
PREPROCESSING_MISTAKES = (
    Preprocessing("RGB instead of BGR", channel_order="RGB"),
    Preprocessing("pixels scaled to 0..1", pixel_scale=1 / 255),
    Preprocessing("no alignment (centre crop)", aligned=False),
)


def to_model_input(crops: Sequence[np.ndarray], preprocessing: Preprocessing = REFERENCE_PREPROCESSING) -> np.ndarray:
    """Turn BGR uint8 HWC crops into float32 NCHW model input under `preprocessing`."""
    batch = np.stack(crops)
    if preprocessing.channel_order == "RGB":
        batch = batch[..., ::-1]
    elif preprocessing.channel_order != "BGR":
        raise ValueError(f"channel_order must be 'BGR' or 'RGB', got {preprocessing.channel_order!r}")
    batch = batch.transpose(0, 3, 1, 2).astype(np.float32)
    if preprocessing.pixel_scale != 1.0:
        batch *= np.float32(preprocessing.pixel_scale)
    return np.ascontiguousarray(batch)


def embed_crops(embed: Embed, crops: Mapping[Path, np.ndarray], paths: Sequence[Path],
                preprocessing: Preprocessing = REFERENCE_PREPROCESSING, batch_size: int = 32,
                description: str = "embedding") -> np.ndarray:
    """Embed the crops of `paths` in batches; returns L2-normalised embeddings [len(paths), D]."""
    missing = [path for path in paths if path not in crops]
    if missing:
        raise ValueError(f"no crop for {len(missing)} images, for example {missing[0]}. Align these images first.")

    embeddings = []
    with tqdm(total=len(paths), desc=description, unit="img", disable=None) as progress:
        for start in range(0, len(paths), batch_size):
            batch_paths = paths[start : start + batch_size]
            batch = to_model_input([crops[path] for path in batch_paths], preprocessing)
            output = np.asarray(embed(batch), dtype=np.float32)
            if output.shape[0] != len(batch_paths):
                raise ValueError(f"embed returned {output.shape[0]} embeddings for a batch of {len(batch_paths)} images")
            embeddings.append(output.reshape(len(batch_paths), -1))
            progress.update(len(batch_paths))

    embeddings = np.concatenate(embeddings)
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("embed returned NaN or infinite values")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("embed returned an all-zero embedding, whose cosine similarity is undefined")
    return embeddings / norms


def evaluate(embed: Embed, crops: Mapping[Path, np.ndarray], pairs: LfwPairs,
             preprocessing: Preprocessing = REFERENCE_PREPROCESSING, name: str | None = None,
             batch_size: int = 32, far: float = DEFAULT_FAR) -> LfwResult:
    """Embed each image of `pairs` once, score every pair by cosine similarity, and apply the protocol.

    `embed` maps a float32 NCHW batch [B, 3, 128, 128] to embeddings [B, D] (or [B, D, 1, 1]).
    `crops` maps image paths to BGR uint8 128x128 crops: aligned crops for an aligned
    preprocessing, centre crops for `aligned=False`.
    """
    name = name or preprocessing.name
    paths = pairs.image_paths
    logger.info("LFW %s: embedding %d images for %d pairs", name, len(paths), len(pairs))

    start = time.perf_counter()
    embeddings = embed_crops(embed, crops, paths, preprocessing, batch_size, description=f"embedding ({name})")
    seconds = time.perf_counter() - start

    row = {path: index for index, path in enumerate(paths)}
    first = embeddings[[row[pair.first] for pair in pairs.pairs]]
    second = embeddings[[row[pair.second] for pair in pairs.pairs]]
    score_set = ScoreSet(np.sum(first * second, axis=1), pairs.same, pairs.fold_ids)

    result = score_result(name, score_set, far, len(paths), seconds)
    logger.info("LFW %s", result.summary())
    return result


def evaluate_mistakes(embed: Embed, pairs: LfwPairs, aligned_crops: Mapping[Path, np.ndarray],
                      centre_crops: Mapping[Path, np.ndarray], batch_size: int = 32,
                      mistakes: Sequence[Preprocessing] = PREPROCESSING_MISTAKES) -> dict[str, LfwResult]:
    """Evaluate `embed` under each preprocessing mistake, picking aligned or centre crops as each needs."""
    results = {}
    for mistake in mistakes:
        crops = aligned_crops if mistake.aligned else centre_crops
        results[mistake.name] = evaluate(embed, crops, pairs, mistake, batch_size=batch_size)
    return results


# ---------------------------------------------------------------------------------------------
# Report output


def format_table(results: Mapping[str, LfwResult]) -> str:
    """Format results as a plain-text table, one row per named result."""
    header = f"{'model / preprocessing':<40} {'accuracy':>8} {'std':>7} {'TAR@FAR':>8} {'pairs':>6} {'embed s':>8}"
    rows = [header, "-" * len(header)]
    for name, result in results.items():
        rows.append(
            f"{name:<40} {result.mean_accuracy:>8.4f} {result.std_accuracy:>7.4f} {result.tar:>8.4f} "
            f"{len(result.score_set.scores):>6d} {result.embed_seconds:>8.1f}"
        )
    return "\n".join(rows)


def write_roc_png(path: Path, score_sets: Mapping[str, ScoreSet | LfwResult], title: str = "LFW ROC") -> Path:
    """Plot TAR against FAR (log scale) for each named score set and write a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = pyplot.subplots(figsize=(7, 5), dpi=120)
    smallest_far = 1.0
    for name, item in score_sets.items():
        score_set = item.score_set if isinstance(item, LfwResult) else item
        far, tar = roc_curve(score_set.scores, score_set.same)
        label = name
        if isinstance(item, LfwResult):
            label = f"{name} (acc {item.mean_accuracy:.4f}, TAR {item.tar:.3f} @ FAR {item.far:g})"
        axes.step(far, tar, where="post", label=label)
        smallest_far = min(smallest_far, 1 / max(1, int(np.sum(~score_set.same))))

    axes.set_xscale("log")
    axes.set_xlim(smallest_far / 2, 1.0)
    axes.set_ylim(0.0, 1.005)
    axes.set_xlabel("false accept rate (FAR)")
    axes.set_ylabel("true accept rate (TAR)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()

    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png")
    finally:
        pyplot.close(figure)
    write_atomic(path, buffer.getvalue())
    logger.info("Wrote ROC curves of %d score sets to %s", len(score_sets), path)
    return path
