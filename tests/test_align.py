"""Face alignment: the similarity fit, and the aligner on real LFW images with the real OMZ IRs."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from validate import align

SHARED_DIR = Path(os.environ.get("SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))
OMZ_DIR = SHARED_DIR / "omz"
LFW_IMAGES = SHARED_DIR / "lfw" / "lfw-deepfunneled"

DETECTOR_XML = OMZ_DIR / "face-detection-retail-0004" / "FP16" / "face-detection-retail-0004.xml"
LANDMARKS_XML = OMZ_DIR / "landmarks-regression-retail-0009" / "FP16" / "landmarks-regression-retail-0009.xml"

# LFW images of different people, poses and lighting, all named by pairs.txt.
SAMPLE_IMAGES = [
    "Abel_Pacheco/Abel_Pacheco_0001.jpg",
    "Akhmed_Zakayev/Akhmed_Zakayev_0003.jpg",
    "George_W_Bush/George_W_Bush_0016.jpg",
    "Serena_Williams/Serena_Williams_0003.jpg",
    "Tony_Blair/Tony_Blair_0032.jpg",
    "Zico/Zico_0003.jpg",
]


def rotation_scale(matrix: np.ndarray) -> tuple[float, float]:
    """Return (angle in degrees, uniform scale) of a 2x3 similarity matrix."""
    linear = matrix[:, :2]
    return float(np.degrees(np.arctan2(linear[1, 0], linear[0, 0]))), float(np.sqrt(np.linalg.det(linear)))


# ---------------------------------------------------------------------------------------------
# Similarity transform


def test_fit_similarity_recovers_rotation_scale_translation():
    angle = np.radians(23.0)
    scale = 1.7
    translation = np.array([12.5, -4.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = align.REFERENCE_LANDMARKS * 100
    target = source @ (scale * rotation).T + translation

    matrix = align.fit_similarity(source, target)

    fitted_angle, fitted_scale = rotation_scale(matrix)
    assert fitted_angle == pytest.approx(23.0, abs=1e-9)
    assert fitted_scale == pytest.approx(1.7, abs=1e-12)
    np.testing.assert_allclose(matrix[:, 2], translation, atol=1e-9)


def test_fit_similarity_least_squares_with_noise():
    rng = np.random.default_rng(0)
    angle = np.radians(-40.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = rng.uniform(0, 100, size=(50, 2))
    target = source @ (0.5 * rotation).T + [3.0, 7.0] + rng.normal(0, 0.05, size=(50, 2))

    fitted_angle, fitted_scale = rotation_scale(align.fit_similarity(source, target))

    assert fitted_angle == pytest.approx(-40.0, abs=0.05)
    assert fitted_scale == pytest.approx(0.5, abs=1e-3)


def test_fit_similarity_rejects_reflection():
    # A mirrored copy of the points: the best proper similarity has positive determinant.
    source = align.REFERENCE_LANDMARKS * 100
    target = source * [-1.0, 1.0]

    matrix = align.fit_similarity(source, target)

    assert np.linalg.det(matrix[:, :2]) > 0


def test_fit_similarity_invalid_points():
    with pytest.raises(ValueError, match="coincide"):
        align.fit_similarity(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        align.fit_similarity(np.zeros((5, 3)), np.zeros((5, 3)))


def test_warp_to_reference_places_points():
    # Draw dots at known points, warp them onto the reference layout, find them again.
    image = np.zeros((250, 250, 3), dtype=np.uint8)
    angle = np.radians(10.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (align.REFERENCE_LANDMARKS - 0.5) * 110 @ rotation.T + [125.0, 120.0]
    for x, y in points:
        cv2.circle(image, (int(round(x)), int(round(y))), 2, (255, 255, 255), -1)

    crop = align.warp_to_reference(image, points)

    assert crop.shape == (128, 128, 3)
    for x, y in align.reference_points():
        patch = crop[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2, 0]
        assert patch.max() > 200, f"no dot near reference point ({x:.1f}, {y:.1f})"


def test_centre_crop_geometry():
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    image[75:125, 75:125] = 255  # a 50-pixel square centred in the image

    centred = align.centre_crop(image, fraction=0.5, centre_y=0.5, size=100)
    raised = align.centre_crop(image, fraction=0.5, centre_y=0.4, size=100)

    # A 100-pixel window at scale 1: rows and columns 50..149 of the image.
    assert centred.shape == (100, 100, 3)
    assert np.flatnonzero(centred[50, :, 0] > 127).tolist() == list(range(25, 75))
    assert np.flatnonzero(centred[:, 50, 0] > 127).tolist() == list(range(25, 75))
    # Centred at 0.4 x 200 = 80, the window starts at row 30, so the square moves down 20 rows.
    assert np.flatnonzero(raised[:, 50, 0] > 127).tolist() == list(range(45, 95))


# ---------------------------------------------------------------------------------------------
# Aligner on real images


@pytest.fixture(scope="module")
def aligner():
    return align.Aligner(DETECTOR_XML, LANDMARKS_XML, batch_size=4)


@pytest.fixture(scope="module")
def sample_images():
    images = [cv2.imread(str(LFW_IMAGES / name)) for name in SAMPLE_IMAGES]
    assert all(image is not None for image in images), f"LFW sample images missing under {LFW_IMAGES}"
    return images


def test_aligner_finds_faces(aligner, sample_images):
    alignments = aligner.align(sample_images)

    assert len(alignments) == len(sample_images)
    for name, alignment in zip(SAMPLE_IMAGES, alignments):
        assert not alignment.fallback, f"no face found in {name}"
        assert alignment.crop.shape == (128, 128, 3)
        assert alignment.crop.dtype == np.uint8
        assert alignment.confidence >= 0.5
        # LFW faces are centred: the eyes lie in the middle third of the 250x250 image.
        eyes = alignment.landmarks[:2]
        assert np.all((eyes > 250 / 3) & (eyes < 2 * 250 / 3)), f"{name}: eyes at {eyes.tolist()}"


def test_aligned_landmarks_near_reference(aligner, sample_images):
    """Re-detected landmarks on the aligned face lie near the reference points.

    Each face is warped onto the reference layout inside a 250x250 canvas (the 128x128 crop
    window sits where LFW's faces sit), so the detector and landmarks model see the same framing
    as before. The remaining distance to the reference is mostly the fit residual: five points of
    a real face cannot all land exactly on the reference with four degrees of freedom.
    """
    offset = np.array([125 - 63.5, 116 - 63.5])
    alignments = aligner.align(sample_images)
    canvases = []
    expected = []
    for image, alignment in zip(sample_images, alignments):
        matrix = align.fit_similarity(alignment.landmarks, align.reference_points())
        expected.append(alignment.landmarks @ matrix[:, :2].T + matrix[:, 2])
        matrix[:, 2] += offset
        canvases.append(cv2.warpAffine(image, matrix, (250, 250)))

    realigned = aligner.align(canvases)

    # Distances in pixels of the 128x128 crop. Over 309 LFW images the per-image mean distance
    # to the reference had a median of about 3.4 px, and these six images range from 2.5 to 5.6 px.
    image_means = []
    for name, alignment, warped_points in zip(SAMPLE_IMAGES, realigned, expected):
        assert not alignment.fallback, f"no face found in the aligned {name}"
        points = alignment.landmarks - offset
        to_reference = np.linalg.norm(points - align.reference_points(), axis=1)
        to_warped = np.linalg.norm(points - warped_points, axis=1)
        image_means.append(to_reference.mean())
        assert to_reference.mean() < 8.0, f"{name}: mean distance to reference {to_reference.mean():.2f} px"
        assert to_reference.max() < 12.0, f"{name}: max distance to reference {to_reference.max():.2f} px"
        # The landmarks model agrees with itself after warping.
        assert to_warped.mean() < 2.5, f"{name}: mean distance to warped landmarks {to_warped.mean():.2f} px"
    assert np.mean(image_means) < 5.0, f"mean distance to reference {np.mean(image_means):.2f} px"


def test_aligner_falls_back_to_centre_crop(aligner):
    blank = np.full((250, 250, 3), 127, dtype=np.uint8)

    alignment = aligner.align([blank])[0]

    assert alignment.fallback
    assert alignment.box is None
    assert alignment.crop.shape == (128, 128, 3)


def test_align_files_cache(tmp_path):
    paths = [LFW_IMAGES / name for name in SAMPLE_IMAGES[:3]]
    cached_aligner = align.Aligner(DETECTOR_XML, LANDMARKS_XML, batch_size=4, cache_dir=tmp_path)

    first = cached_aligner.align_files(paths)
    second = cached_aligner.align_files(paths)

    assert first.cache_hits == 0
    assert second.cache_hits == 3
    for path in paths:
        np.testing.assert_array_equal(first.crops[path], second.crops[path])
        np.testing.assert_allclose(first.alignments[path].landmarks, second.alignments[path].landmarks)
    entries = list(tmp_path.rglob("*.npz"))
    assert len(entries) == 3
    assert not list(tmp_path.rglob("*.tmp"))


def test_cache_key_includes_settings(tmp_path):
    paths = [LFW_IMAGES / SAMPLE_IMAGES[0]]
    align.Aligner(DETECTOR_XML, LANDMARKS_XML, cache_dir=tmp_path).align_files(paths)

    wider_box = align.Aligner(DETECTOR_XML, LANDMARKS_XML, cache_dir=tmp_path, box_scale=1.3)
    result = wider_box.align_files(paths)

    assert result.cache_hits == 0
    assert len(list(tmp_path.glob("*/settings.json"))) == 2


def test_aligner_missing_model(tmp_path):
    with pytest.raises(align.AlignmentError, match="not found"):
        align.Aligner(tmp_path / "missing.xml", LANDMARKS_XML)


def test_cache_recovers_from_corrupt_entry(tmp_path):
    paths = [LFW_IMAGES / SAMPLE_IMAGES[0]]
    cached_aligner = align.Aligner(DETECTOR_XML, LANDMARKS_XML, cache_dir=tmp_path)
    first = cached_aligner.align_files(paths)
    entry = next(tmp_path.rglob("*.npz"))
    entry.write_bytes(b"not an npz file")

    second = cached_aligner.align_files(paths)

    assert second.cache_hits == 0
    np.testing.assert_array_equal(first.crops[paths[0]], second.crops[paths[0]])
    assert np.load(entry)["crop"].shape == (128, 128, 3)


def test_aligner_from_models_dir():
    direct = align.Aligner(DETECTOR_XML, LANDMARKS_XML)

    from_dir = align.Aligner.from_models_dir(OMZ_DIR, "FP16")

    assert from_dir.settings_digest == direct.settings_digest
