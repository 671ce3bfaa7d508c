"""Read a folder of face images and turn them into model input tensors.

Preprocessing is the one the model card's similarity table was computed with: `cv2.resize` to the
model's input size (bilinear, no alignment), BGR colour order, float32 pixel values 0..255, laid out
as the model's input declares (NCHW or NHWC).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# File name extensions that OpenCV 4.11 decodes in the opencv-python-headless wheel. Other files in
# the folder (notes, checksum lists) are ignored.
IMAGE_SUFFIXES = frozenset({
    ".bmp", ".dib", ".jpg", ".jpeg", ".jpe", ".jp2", ".png", ".webp", ".tif", ".tiff",
    ".pbm", ".pgm", ".ppm", ".pnm", ".sr", ".ras", ".exr", ".hdr", ".pic",
})

_MAX_NAMES_SHOWN = 12

NCHW = "NCHW"
NHWC = "NHWC"


class ImageError(Exception):
    """Raised for an images folder that is missing or empty, or for a file that is not a readable image."""


@dataclass(frozen=True)
class FaceImage:
    """One input image as BGR uint8 pixels [H, W, 3].

    `conversion` describes how the file was turned into 3-channel BGR ("grayscale", "BGRA (alpha
    channel dropped)", ...), or is None when the file already was 8-bit BGR.
    """

    path: Path
    pixels: np.ndarray
    sha256: str
    conversion: str | None = None

    @property
    def name(self) -> str:
        return self.path.name


def load_images(folder: Path) -> list[FaceImage]:
    """Read every image file in `folder`, sorted by file name.

    Raises ImageError when the folder is missing or contains no image files, or when a file with
    an image extension cannot be decoded by OpenCV.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(
            f"Images folder not found: {folder}. Pass --images DIR with a folder of face crops, "
            f"or run `make convert` to fetch the ten validation crops into data/wider-12-group/."
        )

    paths = sorted(
        path for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )
    if not paths:
        suffixes = ", ".join(sorted({".jpg", ".png", ".bmp", ".webp", ".tif"}))
        raise ImageError(
            f"No images in {folder}: expected files such as {suffixes}. "
            f"Put face crops there or pass --images DIR with another folder."
        )

    images = [read_image(path) for path in paths]
    for image in images:
        if image.conversion is not None:
            logger.warning("%s is %s: converted to 3-channel BGR", image.path, image.conversion)
    return images


def read_image(path: Path) -> FaceImage:
    """Decode one file as OpenCV's `imread` does with IMREAD_COLOR, and describe any conversion."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageError(f"{path} cannot be read ({error.strerror}). Check that the file is readable.") from error
    buffer = np.frombuffer(data, dtype=np.uint8)

    # IMREAD_UNCHANGED shows what the file holds. IMREAD_COLOR gives the pixels that the model card's
    # table was computed from: 8-bit BGR, EXIF orientation applied.
    original = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if original is None:
        raise ImageError(
            f"{path} is not a readable image. Remove it from the folder or replace it with a valid image file."
        )
    pixels = cv2.imdecode(buffer, cv2.IMREAD_COLOR)

    return FaceImage(path, pixels, hashlib.sha256(data).hexdigest(), describe_conversion(original))


def describe_conversion(original: np.ndarray) -> str | None:
    """Describe how a decoded array differs from 8-bit 3-channel BGR, or return None if it does not."""
    channels = 1 if original.ndim == 2 else original.shape[2]
    notes = []
    if channels == 1:
        notes.append("grayscale")
    elif channels == 4:
        notes.append("BGRA (alpha channel dropped)")
    elif channels != 3:
        notes.append(f"{channels}-channel")
    if original.dtype != np.uint8:
        notes.append(f"{original.dtype} (scaled to 8 bits)")
    return ", ".join(notes) if notes else None


def to_tensor(images: Sequence[FaceImage], height: int, width: int, layout: str) -> np.ndarray:
    """Resize each image with `cv2.resize` and stack them as float32 0..255 in `layout` (NCHW or NHWC)."""
    resized = np.stack([cv2.resize(image.pixels, (width, height)) for image in images]).astype(np.float32)
    if layout == NCHW:
        return np.ascontiguousarray(resized.transpose(0, 3, 1, 2))
    if layout == NHWC:
        return resized
    raise ValueError(f"unknown layout {layout!r}: expected {NCHW} or {NHWC}")


def target_order(count: int, base_index: int) -> list[int]:
    """Return the target indices: every other image in order, then the base itself (1..9, 0 for base 0)."""
    return [index for index in range(count) if index != base_index] + [base_index]


def find_base(images: Sequence[FaceImage], name: str | None) -> int:
    """Return the index of the image called `name` (file name or stem), or 0 when `name` is None."""
    if name is None:
        return 0
    for index, image in enumerate(images):
        if name in (image.path.name, image.path.stem):
            return index

    listed_names = ", ".join(image.path.name for image in images[:_MAX_NAMES_SHOWN])
    more = f" and {len(images) - _MAX_NAMES_SHOWN} more" if len(images) > _MAX_NAMES_SHOWN else ""
    raise ImageError(f"--base {name} is not among the images in {images[0].path.parent}: {listed_names}{more}. "
                     f"Pass one of these names.")
