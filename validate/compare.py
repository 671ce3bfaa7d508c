"""Cosine similarity, the tolerances per precision class, and the result of each comparison.

Every check is a `Statistic`: its name, the measured value and the limit, so that a table or a log
line can show all three beside PASS or FAIL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from validate.artifacts import FLOAT16, FLOAT32, INT8, Artifact
from convert.models import MODEL_CARD_SIMILARITY
from validate.images import FaceImage

# Row "0" of the similarity table in the face-reidentification-retail-0095 model card (PINTO model
# zoo, folder 432_face-reidentification-retail-0095).
MODEL_CARD_ROW = MODEL_CARD_SIMILARITY

# A value printed with three decimals is within half a unit of the last decimal of the exact value.
MODEL_CARD_TOLERANCE = 0.0005


@dataclass(frozen=True)
class Tolerance:
    """Limits for one precision class. None means the statistic is reported but not checked."""

    similarity_max_abs: float
    feature_max_abs: float | None
    feature_mean_abs: float | None
    feature_min_cosine: float


# Measured on the FP16 IR and the ten validation crops (ONNX Runtime, OpenVINO, LiteRT and
# TensorFlow on one x86 CPU): the embeddings reach |3.4| with L2 norms of 10 to 15, and float32
# artifacts differ from the IR by at most 5e-6 (mean 9e-7, cosine 0.9999999) because runtimes sum
# in different orders. The float32 limits are about 20 and 10 times those differences.
# float16 weights round every weight of an FP32 IR to 11 significant bits, so the absolute error
# grows with the embedding's scale and only the scale-free cosine is checked.
# NOTE: the int8 limits are a chosen bound (cosine 0.99, similarity 0.02), not yet measured on an
# int8 artifact of this model.
TOLERANCES = {
    FLOAT32: Tolerance(similarity_max_abs=0.001, feature_max_abs=1e-4, feature_mean_abs=1e-5,
                       feature_min_cosine=0.99999),
    FLOAT16: Tolerance(similarity_max_abs=0.001, feature_max_abs=None, feature_mean_abs=None,
                       feature_min_cosine=0.9999),
    INT8: Tolerance(similarity_max_abs=0.02, feature_max_abs=None, feature_mean_abs=None,
                    feature_min_cosine=0.99),
}


@dataclass(frozen=True)
class Statistic:
    """A measured value and its limit: an upper limit, or a lower one when `lower_limit` is set."""

    name: str
    value: float
    limit: float | None
    lower_limit: bool = False

    @property
    def passed(self) -> bool:
        # NaN compares false both ways, so a NaN value fails.
        if self.limit is None:
            return not np.isnan(self.value)
        return self.value >= self.limit if self.lower_limit else self.value <= self.limit

    def describe(self) -> str:
        """Return the statistic, its limit and the verdict.

        For example "max |Δ| similarity 2.10e-07 (tolerance <= 0.001) PASS".
        """
        relation = ">=" if self.lower_limit else "<="
        limit = "not checked" if self.limit is None else f"tolerance {relation} {self.limit:g}"
        return f"{self.name} {self.formatted_value()} ({limit}) {'PASS' if self.passed else 'FAIL'}"

    def formatted_value(self) -> str:
        # A cosine needs all its leading nines. A difference reads best in scientific notation.
        return f"{self.value:.8f}" if self.lower_limit else f"{self.value:.2e}"


@dataclass
class RowResult:
    """The outcome of one artifact on one runtime.

    `similarity_row` is the base image against the targets, `matrix` every image against every
    image, `features` the embedding of every image. `error` is set when the runtime could not load
    or run the artifact, and then the arrays stay None.
    """

    artifact: Artifact
    runtime: str
    similarity_row: np.ndarray | None = None
    matrix: np.ndarray | None = None
    features: np.ndarray | None = None
    similarity_check: Statistic | None = None
    parity: tuple[Statistic, ...] = field(default=())
    error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        if self.error is not None or self.similarity_check is None:
            return False
        return self.similarity_check.passed and all(statistic.passed for statistic in self.parity)


@dataclass
class ValidationResult:
    """Everything one validation run measured: the reference, every row, and the model card check.

    `published` compares the model card's row with the reference row. It is None unless the images
    are the ten validation crops with crop 0000 as the base, the only set the card's row describes.
    """

    precision: str
    artifacts_folder: Path
    images: list[FaceImage]
    base_index: int
    targets: list[int]
    reference: RowResult
    rows: list[RowResult]
    published: Statistic | None = None

    @property
    def failed_rows(self) -> list[RowResult]:
        return [row for row in self.rows if not row.passed]

    @property
    def passed(self) -> bool:
        published_ok = self.published is None or self.published.passed
        return published_ok and not self.failed_rows


def cosine_similarity(first: np.ndarray, second: np.ndarray, clip: bool = True) -> np.ndarray:
    """Return the [N, M] cosine similarity of the rows of `first` [N, D] and `second` [M, D].

    With `clip` the values are clipped to [0, 1] like the model card's table and the ONNX heads.
    """
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    first_unit = first / np.linalg.norm(first, axis=1, keepdims=True)
    second_unit = second / np.linalg.norm(second, axis=1, keepdims=True)
    similarity = first_unit @ second_unit.T
    return np.clip(similarity, 0.0, 1.0) if clip else similarity


def compare_similarity(candidate: np.ndarray, reference: np.ndarray, limit: float) -> Statistic:
    """Return the maximum absolute difference of two similarity rows against `limit`."""
    candidate = np.asarray(candidate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if candidate.shape != reference.shape:
        raise ValueError(f"similarity has shape {list(candidate.shape)}, expected {list(reference.shape)}")
    return Statistic("max |Δ| similarity", float(np.max(np.abs(candidate - reference))), limit)


def compare_features(candidate: np.ndarray, reference: np.ndarray, tolerance: Tolerance) -> tuple[Statistic, ...]:
    """Compare embeddings [N, D] with the reference: max and mean |Δ|, and the minimum row-wise cosine."""
    candidate = np.asarray(candidate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if candidate.shape != reference.shape:
        raise ValueError(f"features have shape {list(candidate.shape)}, expected {list(reference.shape)}")

    difference = np.abs(candidate - reference)
    cosine = np.sum(candidate * reference, axis=1) / (
        np.linalg.norm(candidate, axis=1) * np.linalg.norm(reference, axis=1)
    )
    return (
        Statistic("max |Δ| features", float(np.max(difference)), tolerance.feature_max_abs),
        Statistic("mean |Δ| features", float(np.mean(difference)), tolerance.feature_mean_abs),
        Statistic("min cosine features", float(np.min(cosine)), tolerance.feature_min_cosine, lower_limit=True),
    )
