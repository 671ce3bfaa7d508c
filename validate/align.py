"""Align faces to the 128x128 layout that face-reidentification-retail-0095 expects.

The pipeline follows Open Model Zoo's face recognition demo: face-detection-retail-0004 finds the
face box, landmarks-regression-retail-0009 finds five points inside it, and a similarity transform
(rotation, uniform scale, translation) maps those points onto the reference landmarks of the
re-identification model card. Aligned crops are cached on disk, keyed by the image bytes and by
every setting that changes the result, so evaluating another artifact does not align again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
from tqdm import tqdm

from convert import models
from convert.finalize import write_atomic

logger = logging.getLogger(__name__)

# The model card's five reference landmarks in normalised [0,1]x[0,1] coordinates of the aligned crop.
REFERENCE_LANDMARKS = np.array(models.REFERENCE_LANDMARKS, dtype=np.float64)

CROP_SIZE = 128

DETECTOR_MODEL = models.DETECTOR
LANDMARKS_MODEL = models.LANDMARKS

# Part of the cache key: bump it whenever a code change alters the aligned crops.
ALIGNMENT_VERSION = 1

# OMZ's face recognition demo (Python, -exp_r_fd defaults to 1.15) enlarges the detected box by
# 1.15 about its centre, clips it to the image and runs the landmarks model on that crop. The
# aligner does the same, so its landmarks match the demo's. On 309 deep-funneled LFW images,
# boxes scaled by 1.0 and by 1.15 put the re-detected landmarks equally close to the reference.
DEFAULT_BOX_SCALE = 1.15

DEFAULT_CONFIDENCE_THRESHOLD = 0.5

# The fallback centre crop: a square of CENTRE_CROP_FRACTION times the shorter image side whose
# centre sits at CENTRE_CROP_Y times the image height. On deep-funneled LFW (250x250) the mean
# alignment transform over 309 images maps a 126-pixel square centred at (125, 116) onto the
# 128x128 reference layout, so this crop matches the aligned layout on average.
CENTRE_CROP_FRACTION = 0.50
CENTRE_CROP_Y = 0.465

LANDMARK_BACKENDS = ("openvino", "onnxruntime")

# OpenVINO's CPU plugin (2026.4) computes in bfloat16 by default on CPUs with AVX512_BF16 or AMX,
# so crops would depend on the machine. float32 keeps them reproducible. On 384 LFW images the
# landmarks moved by 0.28 px on average (2.3 px at most) between the two precisions.
DEFAULT_INFERENCE_PRECISION = "f32"

# A clipped face box narrower than this many pixels counts as no face.
MIN_FACE_SIZE = 8


class AlignmentError(RuntimeError):
    """A model or image that the aligner cannot use."""


# ---------------------------------------------------------------------------------------------
# Geometry


def fit_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Fit the least-squares similarity transform that maps `source` points onto `target` points.

    Umeyama's method: the rotation comes from the SVD of the cross-covariance, with a sign flip
    that rules out reflections, and the uniform scale and translation follow in closed form.
    Both arrays are [N, 2] with N >= 2. Returns a 2x3 float64 matrix for cv2.warpAffine.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.ndim != 2 or source.shape[1] != 2 or source.shape != target.shape or len(source) < 2:
        raise ValueError(
            f"expected two [N, 2] point arrays with N >= 2, got {source.shape} and {target.shape}"
        )

    source_mean = source.mean(axis=0)
    target_mean = target.mean(axis=0)
    source_centred = source - source_mean
    target_centred = target - target_mean
    source_variance = np.mean(np.sum(source_centred**2, axis=1))
    if source_variance <= 1e-12:
        raise ValueError("the source points coincide, so no similarity transform fits them")

    covariance = target_centred.T @ source_centred / len(source)
    u, singular_values, vt = np.linalg.svd(covariance)
    reflection = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        reflection[1] = -1.0
    rotation = u @ np.diag(reflection) @ vt
    scale = float(np.sum(singular_values * reflection)) / source_variance

    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = target_mean - scale * rotation @ source_mean
    return matrix


def reference_points(size: int = CROP_SIZE) -> np.ndarray:
    """Return the reference landmarks in pixel coordinates of a size x size crop."""
    # Normalised 0 is the left edge of pixel 0, whose centre is pixel coordinate 0.
    return REFERENCE_LANDMARKS * size - 0.5


def warp_to_reference(image: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Warp `image` so that its five `landmarks` (pixel coordinates) land on the reference points."""
    matrix = fit_similarity(landmarks, reference_points(size))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR)


def centre_crop(image: np.ndarray, fraction: float = CENTRE_CROP_FRACTION, centre_y: float = CENTRE_CROP_Y,
                size: int = CROP_SIZE) -> np.ndarray:
    """Cut a square of `fraction` times the shorter image side, centred horizontally and at
    `centre_y` times the height, and resize it to size x size. Parts outside the image are black.
    """
    height, width = image.shape[:2]
    side = max(1.0, fraction * min(height, width))
    scale = size / side
    # Map the square's top-left corner to crop pixel (0, 0); -0.5 terms convert between pixel
    # centres and edges so that the square's edges land on the crop's edges.
    left = width / 2 - side / 2
    top = centre_y * height - side / 2
    matrix = np.array([[scale, 0.0, -left * scale + 0.5 * scale - 0.5],
                       [0.0, scale, -top * scale + 0.5 * scale - 0.5]])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR)


def enlarge_box(box: np.ndarray, scale: float, width: int, height: int) -> np.ndarray:
    """Scale a pixel box [x_min, y_min, x_max, y_max] about its centre and clip it to the image."""
    centre = (box[:2] + box[2:]) / 2
    half_size = (box[2:] - box[:2]) * scale / 2
    enlarged = np.concatenate([centre - half_size, centre + half_size])
    return np.clip(enlarged, 0, [width, height, width, height])


# ---------------------------------------------------------------------------------------------
# Inference backends


def file_sha256(*paths: Path) -> str:
    """Return the SHA-256 of the concatenated contents of `paths`."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _pad_batch(piece: np.ndarray, batch_size: int) -> np.ndarray:
    """Pad `piece` with zero images up to `batch_size` and return it as contiguous float32."""
    if len(piece) < batch_size:
        padding = np.zeros((batch_size - len(piece), *piece.shape[1:]), dtype=piece.dtype)
        piece = np.concatenate([piece, padding])
    return np.ascontiguousarray(piece, dtype=np.float32)


def _require_file(path: Path, description: str) -> None:
    if not path.is_file():
        raise AlignmentError(
            f"{description} not found: {path}. Fetch the model first, or pass the path of an existing file."
        )


class OpenVinoBatchRunner:
    """One single-input, single-output IR compiled for a fixed batch size on OpenVINO.

    Batches are run through an AsyncInferQueue. With `jobs=1` and the LATENCY hint this is one
    request at a time that uses every core. With `jobs=2` and the THROUGHPUT hint two requests
    run side by side. Both ways took about 4.7 ms per LFW image for detection, landmarks and warp
    (batch 16 with one request, batch 4 with two requests). That was measured with bfloat16
    inference on a 2-core AMD EPYC VM, so the Aligner uses the simpler first one.
    """

    def __init__(self, core: ov.Core, xml_path: Path, batch_size: int, device: str = "CPU",
                 jobs: int = 1, hint: str = "LATENCY", inference_precision: str = "f32"):
        _require_file(xml_path, "OpenVINO IR")
        _require_file(xml_path.with_suffix(".bin"), "OpenVINO IR weights")
        self.path = xml_path
        self.batch_size = batch_size
        self.digest = file_sha256(xml_path, xml_path.with_suffix(".bin"))

        model = core.read_model(xml_path)
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise AlignmentError(
                f"{xml_path}: expected one input and one output, got {len(model.inputs)} and {len(model.outputs)}"
            )
        input_shape = model.inputs[0].get_partial_shape()
        if input_shape.rank.get_length() != 4 or not all(dim.is_static for dim in list(input_shape)[1:]):
            raise AlignmentError(f"{xml_path}: expected an NCHW input with static C, H, W, got {input_shape}")
        channels, height, width = (dim.get_length() for dim in list(input_shape)[1:])
        model.reshape({model.inputs[0]: [batch_size, channels, height, width]})

        self.input_hw = (height, width)
        self.output_shape = [dim.get_length() for dim in model.outputs[0].get_partial_shape()]
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": inference_precision}
        self._compiled = core.compile_model(model, device, config)
        self._queue = ov.AsyncInferQueue(self._compiled, jobs)
        self._results: dict[int, np.ndarray] = {}
        self._queue.set_callback(self._store_result)

    def _store_result(self, request: ov.InferRequest, index: int) -> None:
        self._results[index] = request.get_output_tensor(0).data.copy()

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run `batch` [N, C, H, W] in fixed-size pieces; returns each piece's raw output in order.

        The last piece is padded with zeros, so callers drop the padded rows from its output.
        """
        self._results = {}
        pieces = range(0, len(batch), self.batch_size)
        for index, start in enumerate(pieces):
            piece = _pad_batch(batch[start : start + self.batch_size], self.batch_size)
            self._queue.start_async({0: piece}, index)
        self._queue.wait_all()
        return [self._results[index] for index in range(len(pieces))]


class OnnxLandmarksRunner:
    """landmarks-regression-retail-0009 exported to ONNX, run on ONNX Runtime (CPU).

    Expects one input [N, 3, 48, 48] and one output [N, 10] (or [N, 10, 1, 1]). A fixed batch
    dimension is honoured by running fixed-size, zero-padded pieces.
    """

    def __init__(self, onnx_path: Path, batch_size: int):
        import onnxruntime

        _require_file(onnx_path, "ONNX landmarks model")
        self.path = onnx_path
        self.digest = file_sha256(onnx_path)
        self._session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise AlignmentError(f"{onnx_path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self._input_name = inputs[0].name
        shape = inputs[0].shape
        if len(shape) != 4 or not all(isinstance(dim, int) for dim in shape[1:]):
            raise AlignmentError(f"{onnx_path}: expected an NCHW input with static C, H, W, got {shape}")
        self.input_hw = (shape[2], shape[3])
        self.output_shape = outputs[0].shape
        # A symbolic or missing batch dimension accepts any batch, so run `batch_size` images a call.
        self.batch_size = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else batch_size
        logger.info("ONNX landmarks model %s: input %s %s, output %s, batch %d",
                    onnx_path, self._input_name, shape, outputs[0].name, self.batch_size)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run `batch` [N, C, H, W] in fixed-size, zero-padded pieces; returns each piece's output."""
        results = []
        for start in range(0, len(batch), self.batch_size):
            piece = _pad_batch(batch[start : start + self.batch_size], self.batch_size)
            results.append(self._session.run(None, {self._input_name: piece})[0])
        return results


def to_nchw(images: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Resize BGR uint8 HWC images to height x width and stack them as float32 NCHW, 0..255."""
    resized = [cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) for image in images]
    return np.stack(resized).transpose(0, 3, 1, 2).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Aligner


@dataclasses.dataclass
class Alignment:
    """The aligned crop of one image and how it was made.

    `box` is the enlarged face box and `landmarks` the five points, both in pixel coordinates of
    the source image. Both are None when no face was found, and `crop` is then a centre crop.
    """

    crop: np.ndarray
    box: np.ndarray | None
    landmarks: np.ndarray | None
    confidence: float

    @property
    def fallback(self) -> bool:
        return self.landmarks is None


@dataclasses.dataclass
class AlignedImages:
    """Aligned crops of a set of image files, with counts for the log and the report."""

    alignments: dict[Path, Alignment]
    cache_hits: int
    seconds: float

    @property
    def crops(self) -> dict[Path, np.ndarray]:
        return {path: alignment.crop for path, alignment in self.alignments.items()}

    @property
    def fallback_paths(self) -> list[Path]:
        return [path for path, alignment in self.alignments.items() if alignment.fallback]


class Aligner:
    """Detect, landmark and align faces; optionally cache the crops under `cache_dir`.

    The detector always runs on OpenVINO. The landmarks model runs on OpenVINO from its IR
    (`landmarks_backend="openvino"`, an .xml path) or on ONNX Runtime from an ONNX export
    (`landmarks_backend="onnxruntime"`, an .onnx path).
    """

    def __init__(
        self,
        detector_xml: Path,
        landmarks_model: Path,
        *,
        landmarks_backend: str = "openvino",
        cache_dir: Path | None = None,
        batch_size: int = 16,
        box_scale: float = DEFAULT_BOX_SCALE,
        confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD,
        centre_fraction: float = CENTRE_CROP_FRACTION,
        centre_y: float = CENTRE_CROP_Y,
        crop_size: int = CROP_SIZE,
        device: str = "CPU",
        inference_precision: str = DEFAULT_INFERENCE_PRECISION,
    ):
        if landmarks_backend not in LANDMARK_BACKENDS:
            raise ValueError(f"landmarks_backend must be one of {LANDMARK_BACKENDS}, got {landmarks_backend!r}")
        if box_scale <= 0 or not 0 <= confidence_threshold <= 1 or not 0 < centre_fraction <= 1 or not 0 <= centre_y <= 1:
            raise ValueError(
                f"invalid aligner settings: box_scale={box_scale} (> 0), confidence_threshold="
                f"{confidence_threshold} (0..1), centre_fraction={centre_fraction} (0..1], centre_y={centre_y} (0..1)"
            )
        self.box_scale = box_scale
        self.confidence_threshold = confidence_threshold
        self.centre_fraction = centre_fraction
        self.centre_y = centre_y
        self.crop_size = crop_size
        self.batch_size = batch_size

        core = ov.Core()
        self._detector = OpenVinoBatchRunner(core, Path(detector_xml), batch_size, device,
                                             inference_precision=inference_precision)
        if landmarks_backend == "openvino":
            self._landmarks = OpenVinoBatchRunner(core, Path(landmarks_model), batch_size, device,
                                                  inference_precision=inference_precision)
        else:
            self._landmarks = OnnxLandmarksRunner(Path(landmarks_model), batch_size)
        if self._detector.output_shape[-1] != 7:
            raise AlignmentError(
                f"{detector_xml}: expected an SSD output [1, 1, N, 7] like face-detection-retail-0004, "
                f"got {self._detector.output_shape}"
            )
        if list(self._landmarks.output_shape[1:]) not in ([10], [10, 1, 1]):
            raise AlignmentError(
                f"{landmarks_model}: expected an output [N, 10] or [N, 10, 1, 1] like "
                f"landmarks-regression-retail-0009, got {self._landmarks.output_shape}"
            )

        self.settings = {
            "alignment_version": ALIGNMENT_VERSION,
            "detector_sha256": self._detector.digest,
            "landmarks_sha256": self._landmarks.digest,
            "landmarks_backend": landmarks_backend,
            "device": device,
            "inference_precision": inference_precision,
            "box_scale": box_scale,
            "confidence_threshold": confidence_threshold,
            "centre_fraction": centre_fraction,
            "centre_y": centre_y,
            "crop_size": crop_size,
            "reference_landmarks": REFERENCE_LANDMARKS.tolist(),
        }
        self.settings_digest = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()
        self.cache = CropCache(Path(cache_dir), self.settings_digest, self.settings) if cache_dir else None

    @classmethod
    def from_models_dir(cls, models_dir: Path, precision: str = "FP16", landmarks_onnx: Path | None = None,
                        **options) -> Aligner:
        """Build an Aligner from OMZ IRs laid out as `<models_dir>/<model>/<precision>/<model>.xml`.

        With `landmarks_onnx`, the landmarks model runs from that file on ONNX Runtime.
        """
        models_dir = Path(models_dir)
        detector_xml = models_dir / DETECTOR_MODEL / precision / f"{DETECTOR_MODEL}.xml"
        if landmarks_onnx is not None:
            return cls(detector_xml, landmarks_onnx, landmarks_backend="onnxruntime", **options)
        landmarks_xml = models_dir / LANDMARKS_MODEL / precision / f"{LANDMARKS_MODEL}.xml"
        return cls(detector_xml, landmarks_xml, **options)

    # -- per-batch work ------------------------------------------------------------------------

    def detect(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, float] | None]:
        """Return the chosen face box (pixels, before enlarging) and its confidence per image, or None."""
        height, width = self._detector.input_hw
        outputs = self._detector.run(to_nchw(images, height, width))

        # Each row is [image_id, label, confidence, x_min, y_min, x_max, y_max], coordinates
        # normalised to the image, and image_id -1 ends the list of one batch.
        per_image: list[list[np.ndarray]] = [[] for _ in images]
        for piece_index, output in enumerate(outputs):
            for row in output.reshape(-1, 7):
                if row[0] < 0:
                    break
                image_index = piece_index * self._detector.batch_size + int(row[0])
                if image_index < len(images) and row[2] >= self.confidence_threshold:
                    per_image[image_index].append(row)

        return [self._choose_face(rows, image) for rows, image in zip(per_image, images)]

    def _choose_face(self, rows: list[np.ndarray], image: np.ndarray) -> tuple[np.ndarray, float] | None:
        if not rows:
            return None
        height, width = image.shape[:2]
        image_centre = np.array([width / 2, height / 2])
        boxes = np.array([row[3:7] for row in rows]) * [width, height, width, height]
        box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        # Several confident faces: the subject of an LFW image is the one nearest the centre.
        nearest = int(np.argmin(np.linalg.norm(box_centres - image_centre, axis=1)))
        return boxes[nearest], float(rows[nearest][2])

    def find_landmarks(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return five landmarks in image pixel coordinates for each integer pixel box."""
        if not images:
            return []
        faces = [image[box[1] : box[3], box[0] : box[2]] for image, box in zip(images, boxes)]
        height, width = self._landmarks.input_hw
        outputs = self._landmarks.run(to_nchw(faces, height, width))
        normalised = np.concatenate([output.reshape(len(output), 10) for output in outputs])[: len(faces)]

        landmarks = []
        for points, box in zip(normalised.reshape(-1, 5, 2), boxes):
            size = np.array([box[2] - box[0], box[3] - box[1]], dtype=np.float64)
            landmarks.append(box[:2] + points * size - 0.5)
        return landmarks

    def face_boxes(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, float] | None]:
        """Return the enlarged integer pixel box and confidence of each image's face, or None."""
        boxes = []
        for image, face in zip(images, self.detect(images)):
            if face is None:
                boxes.append(None)
                continue
            height, width = image.shape[:2]
            box = np.round(enlarge_box(face[0], self.box_scale, width, height)).astype(int)
            too_small = min(box[2] - box[0], box[3] - box[1]) < MIN_FACE_SIZE
            boxes.append(None if too_small else (box, face[1]))
        return boxes

    def align(self, images: Sequence[np.ndarray]) -> list[Alignment]:
        """Align BGR uint8 images; an image without a confident face gets a centre crop."""
        if not images:
            return []
        faces = self.face_boxes(images)
        found = [index for index, face in enumerate(faces) if face is not None]
        landmarks = self.find_landmarks([images[index] for index in found], [faces[index][0] for index in found])

        alignments: list[Alignment | None] = [None] * len(images)
        for index, points in zip(found, landmarks):
            box, confidence = faces[index]
            crop = warp_to_reference(images[index], points, self.crop_size)
            alignments[index] = Alignment(crop, box.astype(np.float64), points, confidence)
        for index, image in enumerate(images):
            if alignments[index] is None:
                crop = centre_crop(image, self.centre_fraction, self.centre_y, self.crop_size)
                alignments[index] = Alignment(crop, None, None, 0.0)
        return alignments

    # -- files and cache -----------------------------------------------------------------------

    def align_files(self, paths: Sequence[Path], description: str = "aligning faces") -> AlignedImages:
        """Align image files, reading crops from the cache where they exist and storing new ones."""
        start = time.perf_counter()
        unique_paths = list(dict.fromkeys(Path(path) for path in paths))
        logger.info("Aligning %d images (settings %s, cache %s)", len(unique_paths),
                    self.settings_digest[:12], self.cache.directory if self.cache else "off")

        alignments: dict[Path, Alignment] = {}
        cache_hits = 0
        chunk_size = 8 * self.batch_size
        with tqdm(total=len(unique_paths), desc=description, unit="img", disable=None) as progress:
            for chunk_start in range(0, len(unique_paths), chunk_size):
                chunk = unique_paths[chunk_start : chunk_start + chunk_size]
                cache_hits += self._align_chunk(chunk, alignments)
                progress.update(len(chunk))

        seconds = time.perf_counter() - start
        result = AlignedImages(alignments, cache_hits, seconds)
        logger.info("Aligned %d images in %.1f s: %d from cache, %d without a face (centre crop)",
                    len(alignments), seconds, cache_hits, len(result.fallback_paths))
        return result

    def _align_chunk(self, paths: Sequence[Path], alignments: dict[Path, Alignment]) -> int:
        missing_paths, missing_images, missing_keys = [], [], []
        for path in paths:
            data = path.read_bytes()
            key = hashlib.sha256(data).hexdigest()
            cached = self.cache.load(key) if self.cache else None
            if cached is not None:
                alignments[path] = cached
                continue
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise AlignmentError(f"{path}: not a readable image. Replace it with an intact copy.")
            missing_paths.append(path)
            missing_images.append(image)
            missing_keys.append(key)

        for path, key, alignment in zip(missing_paths, missing_keys, self.align(missing_images)):
            alignments[path] = alignment
            if self.cache:
                self.cache.store(key, alignment)
        return len(paths) - len(missing_paths)


def centre_crop_files(paths: Sequence[Path], fraction: float = CENTRE_CROP_FRACTION,
                      centre_y: float = CENTRE_CROP_Y, size: int = CROP_SIZE) -> dict[Path, np.ndarray]:
    """Centre-crop image files without alignment, the baseline for the "no alignment" mistake."""
    start = time.perf_counter()
    unique_paths = list(dict.fromkeys(Path(path) for path in paths))
    crops = {}
    for path in tqdm(unique_paths, desc="centre crops", unit="img", disable=None):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise AlignmentError(f"{path}: not a readable image. Replace it with an intact copy.")
        crops[path] = centre_crop(image, fraction, centre_y, size)
    logger.info("Centre-cropped %d images in %.1f s", len(crops), time.perf_counter() - start)
    return crops


# ---------------------------------------------------------------------------------------------
# Cache


class CropCache:
    """Aligned crops on disk: `<directory>/<settings digest[:16]>/<sha256[:2]>/<image sha256>.npz`.

    A different model, backend or parameter gives a different settings digest, so crops made
    with other settings are not read. A code change that alters crops must bump
    ALIGNMENT_VERSION for the same reason. Entries are written to a temporary file and renamed.
    """

    def __init__(self, directory: Path, settings_digest: str, settings: dict):
        self.directory = directory / settings_digest[:16]
        self.directory.mkdir(parents=True, exist_ok=True)
        settings_path = self.directory / "settings.json"
        if not settings_path.exists():
            write_atomic(settings_path, json.dumps(settings, indent=2, sort_keys=True).encode())

    def _entry_path(self, image_digest: str) -> Path:
        return self.directory / image_digest[:2] / f"{image_digest}.npz"

    def load(self, image_digest: str) -> Alignment | None:
        path = self._entry_path(image_digest)
        if not path.exists():
            return None
        try:
            with np.load(path) as entry:
                fallback = bool(entry["fallback"])
                return Alignment(
                    crop=entry["crop"],
                    box=None if fallback else entry["box"],
                    landmarks=None if fallback else entry["landmarks"],
                    confidence=float(entry["confidence"]),
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            logger.warning("Ignoring unreadable cache entry %s (%s); aligning the image again", path, error)
            return None

    def store(self, image_digest: str, alignment: Alignment) -> None:
        path = self._entry_path(image_digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "crop": alignment.crop,
            "box": alignment.box if alignment.box is not None else np.zeros(4),
            "landmarks": alignment.landmarks if alignment.landmarks is not None else np.zeros((5, 2)),
            "confidence": np.float64(alignment.confidence),
            "fallback": np.bool_(alignment.fallback),
        }
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_atomic(path, buffer.getvalue())
