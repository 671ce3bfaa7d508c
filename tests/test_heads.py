"""The cosine-similarity heads in ONNX against the plain backbone plus NumPy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import REPO, three_decimals

from convert import models
from postprocess.build import cosine_matrix

REID = models.REIDENTIFICATION
PAIR = f"{REID}_NMx3x128x128_post.onnx"
GALLERY = f"{REID}_Nx3x128x128_gallery_post.onnx"
PLAIN = f"{REID}_Nx3x128x128.onnx"
SHAPES = [(1, 10), (3, 5), (10, 1)]
TOLERANCE = 1e-5


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def plain_features(build_folder, crops) -> np.ndarray:
    return session(build_folder / PLAIN).run(None, {"images": crops})[0]


def card_targets(crops: np.ndarray) -> np.ndarray:
    """Crops 1..9 followed by crop 0, the model card's column order."""
    return np.concatenate([crops[1:], crops[:1]])


def test_pair_head_reproduces_model_card(build_folder, crops, plain_features):
    features, similarity = session(build_folder / PAIR).run(
        None, {"base_images": crops[:1], "target_images": card_targets(crops)})
    print("pair head row:", three_decimals(similarity[0]))

    assert similarity.shape == (1, 10)
    assert three_decimals(similarity[0]) == list(models.MODEL_CARD_SIMILARITY)
    assert float(np.abs(features - plain_features[:1]).max()) <= TOLERANCE


def test_gallery_head_reproduces_model_card(build_folder, crops, plain_features):
    features, similarity = session(build_folder / GALLERY).run(
        None, {"images": crops[:1], "gallery_features": card_targets(plain_features)})
    print("gallery head row:", three_decimals(similarity[0]))

    assert three_decimals(similarity[0]) == list(models.MODEL_CARD_SIMILARITY)
    assert float(np.abs(features - plain_features[:1]).max()) <= TOLERANCE


@pytest.mark.parametrize("n, m", SHAPES)
def test_heads_independent_batches(n, m, build_folder, crops, plain_features):
    base, target = crops[:n], crops[-m:]
    expected = cosine_matrix(plain_features[:n], plain_features[-m:], clip=True)

    pair_features, pair_similarity = session(build_folder / PAIR).run(
        None, {"base_images": base, "target_images": target})
    gallery_features, gallery_similarity = session(build_folder / GALLERY).run(
        None, {"images": base, "gallery_features": plain_features[-m:]})
    pair_error = float(np.abs(pair_similarity - expected).max())
    gallery_error = float(np.abs(gallery_similarity - expected).max())
    print(f"N={n} M={m}: pair max |diff| {pair_error:.3g}, gallery max |diff| {gallery_error:.3g} "
          f"(tolerance {TOLERANCE})")

    assert pair_similarity.shape == (n, m)
    assert gallery_similarity.shape == (n, m)
    assert pair_features.shape == (n, 256)
    assert gallery_features.shape == (n, 256)
    assert pair_error <= TOLERANCE
    assert gallery_error <= TOLERANCE


@pytest.mark.parametrize("name", [PAIR, GALLERY])
def test_head_stores_weights_once(name, build_folder):
    head = onnx.load(build_folder / name)
    backbone = onnx.load(build_folder / PLAIN)
    head_weights = sum(len(init.raw_data) for init in head.graph.initializer)
    backbone_weights = sum(len(init.raw_data) for init in backbone.graph.initializer)

    assert backbone_weights > 4_000_000
    assert head_weights - backbone_weights < 1024
    assert (build_folder / name).stat().st_size < 1.01 * (build_folder / PLAIN).stat().st_size


def test_unclipped_head_flag(tmp_path, build_folder, crops, plain_features):
    output = tmp_path / "unclipped.onnx"
    command = [sys.executable, "-m", "postprocess", str(build_folder / PLAIN), "--head", "pair", "--unclipped",
               "--images", str(REPO / "data" / "wider-12-group"), "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr

    _, similarity = session(output).run(None, {"base_images": crops, "target_images": crops})
    expected = cosine_matrix(plain_features, plain_features, clip=False)
    metadata = {p.key: p.value for p in onnx.load(output).metadata_props}

    assert float(similarity.min()) < 0.0
    assert float(np.abs(similarity - expected).max()) <= TOLERANCE
    assert metadata["similarity_range"] == "-1..1 (unclipped)"


def test_default_head_name_marks_unclipped(tmp_path, build_folder):
    backbone = tmp_path / PLAIN
    backbone.write_bytes((build_folder / PLAIN).read_bytes())
    command = [sys.executable, "-m", "postprocess", str(backbone), "--head", "gallery", "--unclipped",
               "--images", str(REPO / "data" / "wider-12-group")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"{REID}_Nx3x128x128_gallery_post_unclipped.onnx").is_file()


@pytest.mark.parametrize("case", ["truncated", "landmarks model", "head model"])
def test_bad_backbone_rejected(case, tmp_path, build_folder):
    if case == "truncated":
        backbone = tmp_path / PLAIN
        backbone.write_bytes((build_folder / PLAIN).read_bytes()[:1_000_000])
    elif case == "landmarks model":
        backbone = build_folder / f"{models.LANDMARKS}_Nx3x48x48.onnx"
    else:
        backbone = build_folder / PAIR
    command = [sys.executable, "-m", "postprocess", str(backbone), "--images", str(REPO / "data" / "wider-12-group"),
               "--output", str(tmp_path / "head.onnx")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)

    assert result.returncode == 2
    assert str(backbone) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "head.onnx").exists()
