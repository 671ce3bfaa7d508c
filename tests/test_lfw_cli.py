"""`validate/validation.py lfw` as a user runs it, on the real LFW images and models."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

REID = "face-reidentification-retail-0095"
CI_ARTIFACTS = [f"{REID}_Nx3x128x128.onnx", f"{REID}_Nx3x128x128_float32.tflite"]
AGREEMENT = 0.002
MINIMUM_ACCURACY = 0.98


@pytest.fixture(scope="session")
def lfw_dir(shared_dir) -> Path:
    path = Path(os.environ.get("LFW_DIR") or shared_dir / "lfw")
    if not (path / "pairs.txt").is_file():
        pytest.fail(f"{path}/pairs.txt not found: set LFW_DIR to the LFW folder")
    return path


def run_lfw(*arguments, omz_mirror, cwd=REPO) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "validate" / "validation.py"), "lfw", *map(str, arguments),
               "--omz-mirror", str(omz_mirror), "--root", str(REPO)]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=1800)


def small_lfw(tmp_path: Path, lfw_dir: Path, lines: list[str], header: str = "1 2") -> Path:
    """An LFW folder whose pairs.txt contains `lines`, with links to the real image folders."""
    folder = tmp_path / "lfw"
    (folder / "lfw-deepfunneled").mkdir(parents=True)
    for name in {line.split()[0] for line in lines} | {line.split()[2] for line in lines if len(line.split()) == 4}:
        source = lfw_dir / "lfw-deepfunneled" / name
        if source.is_dir():
            (folder / "lfw-deepfunneled" / name).symlink_to(source)
    (folder / "pairs.txt").write_text("\n".join([header, *lines]) + "\n")
    return folder


def real_lines(lfw_dir: Path) -> tuple[list[str], list[str]]:
    lines = (lfw_dir / "pairs.txt").read_text().splitlines()
    return lines[1:3], lines[301:303]


def test_one_fold_three_formats_agree(tmp_path, lfw_dir, omz_mirror, build_folder):
    result = run_lfw("--lfw-dir", lfw_dir, "--folds", 1, "--only", ",".join(CI_ARTIFACTS),
                     "--runtimes", "onnxruntime,litert", "--cache-dir", tmp_path / "cache",
                     "--report", tmp_path / "report", omz_mirror=omz_mirror)
    print(result.stdout)
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads((tmp_path / "report" / "lfw.json").read_text())
    accuracies = {"IR": report["reference"]["accuracy_mean"]}
    accuracies |= {row["artifact"]: row["accuracy_mean"] for row in report["artifacts"]}
    print("one-fold accuracies:", accuracies)

    assert report["reference"]["pairs"] == 600
    assert sorted(accuracies) == sorted(["IR", *CI_ARTIFACTS])
    assert min(accuracies.values()) > MINIMUM_ACCURACY
    assert max(accuracies.values()) - min(accuracies.values()) <= AGREEMENT
    assert (tmp_path / "report" / "roc.png").stat().st_size > 10_000
    assert "![ROC curves](roc.png)" in (tmp_path / "report" / "lfw.md").read_text()
    assert "|published (OMZ, original LFW images)|" in result.stdout


def test_aligner_onnx_and_cache(tmp_path, lfw_dir, omz_mirror, build_folder):
    matched, mismatched = real_lines(lfw_dir)
    folder = small_lfw(tmp_path, lfw_dir, matched + mismatched)
    arguments = ["--lfw-dir", folder, "--folds", 1, "--only", CI_ARTIFACTS[0], "--runtimes", "onnxruntime",
                 "--cache-dir", tmp_path / "cache", "--artifacts", build_folder]

    first = run_lfw(*arguments, "--aligner", "onnx", omz_mirror=omz_mirror)
    second = run_lfw(*arguments, "--aligner", "onnx", omz_mirror=omz_mirror)

    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    pattern = r"alignment: (\d+) images in [\d.]+ s \((\d+) from the cache\)"
    first_count, first_cached = map(int, re.search(pattern, first.stderr).groups())
    second_count, second_cached = map(int, re.search(pattern, second.stderr).groups())
    assert first_count >= 6
    assert first_cached == 0
    assert second_cached == second_count == first_count


@pytest.mark.parametrize("case, expected", [
    ("missing pairs", "pairs.txt not found"),
    ("malformed line", "line 2"),
    ("missing image", "image not found"),
    ("unreadable image", "not a readable image"),
])
def test_lfw_input_errors(case, expected, tmp_path, lfw_dir, omz_mirror):
    matched, mismatched = real_lines(lfw_dir)
    if case == "unreadable image":
        folder = small_lfw(tmp_path, lfw_dir, matched + mismatched)
        name, number = matched[0].split()[:2]
        person = folder / "lfw-deepfunneled" / name
        person.unlink()
        person.mkdir()
        for image in (lfw_dir / "lfw-deepfunneled" / name).iterdir():
            (person / image.name).symlink_to(image)
        broken = person / f"{name}_{int(number):04d}.jpg"
        broken.unlink()
        broken.write_text("not a JPEG")
    elif case == "malformed line":
        folder = small_lfw(tmp_path, lfw_dir, ["Aaron_Peirsol one 2", *matched[1:], *mismatched])
    elif case == "missing image":
        folder = small_lfw(tmp_path, lfw_dir, [f"{matched[0].split()[0]} 9999 1", *matched[1:], *mismatched])
    else:
        folder = small_lfw(tmp_path, lfw_dir, matched + mismatched)
        (folder / "pairs.txt").unlink()

    result = run_lfw("--lfw-dir", folder, omz_mirror=omz_mirror)

    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    if case != "unreadable image":
        assert "pairs.txt" in result.stderr


def test_lfw_unknown_artifact_name(tmp_path, lfw_dir, omz_mirror, build_folder):
    result = run_lfw("--lfw-dir", lfw_dir, "--only", "no-such-model.onnx", omz_mirror=omz_mirror)

    assert result.returncode == 2
    assert "no-such-model.onnx" in result.stderr
    assert "Traceback" not in result.stderr


def test_lfw_no_matching_runtime(lfw_dir, omz_mirror, build_folder):
    result = run_lfw("--lfw-dir", lfw_dir, "--folds", 1, "--only", CI_ARTIFACTS[1], "--runtimes", "onnxruntime",
                     omz_mirror=omz_mirror)

    assert result.returncode == 2
    assert "no runtime among --runtimes" in result.stderr
    assert "Traceback" not in result.stderr
