"""The TFLite files and the SavedModel that `make convert` writes, against OpenVINO running the IR."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cosine, run_tflite, three_decimals

from convert import models
from postprocess.build import cosine_matrix

REID = models.REIDENTIFICATION
PLAIN_STEMS = [f"{REID}_1x3x128x128", f"{REID}_Nx3x128x128"]
PAIR_STEM = f"{REID}_NMx3x128x128_post"
GALLERY_STEM = f"{REID}_Nx3x128x128_gallery_post"
# Features: float32 artifacts within max |diff| 1e-4 and cosine 0.99999 of the IR, float16 cosine 0.9999.
FLOAT32_MAX_ABS = 1e-4
FLOAT32_MIN_COSINE = 0.99999
FLOAT16_MIN_COSINE = 0.9999
SIMILARITY_TOLERANCE = 1e-4
SHAPES = [(1, 10), (3, 5), (10, 1)]


def nhwc(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


def card_order(array: np.ndarray) -> np.ndarray:
    return np.concatenate([array[1:], array[:1]])


def features_of(path, crops: np.ndarray) -> np.ndarray:
    """Features of each crop, one image per call for a batch-1 model and one call otherwise."""
    if "_1x3x" in path.name:
        return np.concatenate([run_tflite(path, {"images": nhwc(crop[None])})["features"] for crop in crops])
    return run_tflite(path, {"images": nhwc(crops)})["features"]


def check_features(name: str, features: np.ndarray, reference: np.ndarray) -> None:
    max_abs = float(np.abs(features - reference).max())
    min_cosine = float(cosine(features, reference).min())
    if "float16" in name:
        print(f"{name}: min cosine {min_cosine:.7f} (tolerance {FLOAT16_MIN_COSINE}), max |diff| {max_abs:.3g}")
        assert min_cosine >= FLOAT16_MIN_COSINE
    else:
        print(f"{name}: max |diff| {max_abs:.3g} (tolerance {FLOAT32_MAX_ABS}), "
              f"min cosine {min_cosine:.7f} (tolerance {FLOAT32_MIN_COSINE})")
        assert max_abs <= FLOAT32_MAX_ABS
        assert min_cosine >= FLOAT32_MIN_COSINE


@pytest.mark.parametrize("precision_name", ["float32", "float16"])
@pytest.mark.parametrize("stem", PLAIN_STEMS)
def test_plain_tflite_features(stem, precision_name, build_folder, crops, reference_features):
    path = build_folder / f"{stem}_{precision_name}.tflite"
    check_features(path.name, features_of(path, crops), reference_features)


@pytest.mark.parametrize("precision_name", ["float32", "float16"])
@pytest.mark.parametrize("stem", [PAIR_STEM, GALLERY_STEM])
def test_head_tflite_reproduces_model_card(stem, precision_name, build_folder, crops, reference_features):
    path = build_folder / f"{stem}_{precision_name}.tflite"
    if stem == PAIR_STEM:
        outputs = run_tflite(path, {"base_images": nhwc(crops[:1]), "target_images": nhwc(card_order(crops))})
        features = outputs["base_features"]
    else:
        outputs = run_tflite(path, {"images": nhwc(crops[:1]), "gallery_features": card_order(reference_features)})
        features = outputs["features"]
    row = three_decimals(outputs["similarity"][0])
    print(f"{path.name}: {row}")

    assert outputs["similarity"].shape == (1, 10)
    assert row == list(models.MODEL_CARD_SIMILARITY)
    check_features(path.name, features, reference_features[:1])


@pytest.mark.parametrize("n, m", SHAPES)
@pytest.mark.parametrize("stem", [PAIR_STEM, GALLERY_STEM])
def test_head_tflite_independent_batches(stem, n, m, build_folder, crops, reference_features):
    path = build_folder / f"{stem}_float32.tflite"
    expected = cosine_matrix(reference_features[:n], reference_features[-m:], clip=True)
    if stem == PAIR_STEM:
        outputs = run_tflite(path, {"base_images": nhwc(crops[:n]), "target_images": nhwc(crops[-m:])})
        features = outputs["base_features"]
    else:
        outputs = run_tflite(path, {"images": nhwc(crops[:n]), "gallery_features": reference_features[-m:]})
        features = outputs["features"]
    error = float(np.abs(outputs["similarity"] - expected).max())
    print(f"{path.name} N={n} M={m}: similarity max |diff| {error:.3g} (tolerance {SIMILARITY_TOLERANCE})")

    assert outputs["similarity"].shape == (n, m)
    assert features.shape == (n, 256)
    assert error <= SIMILARITY_TOLERANCE


def test_saved_model_features(build_folder, crops, reference_features):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(build_folder / f"{REID}_Nx3x128x128_saved_model"))
    signature = loaded.signatures["serving_default"]
    outputs = signature(images=tf.constant(nhwc(crops)))

    assert list(signature.structured_input_signature[1]) == ["images"]
    assert list(outputs) == ["features"]
    check_features("saved_model", outputs["features"].numpy(), reference_features)
