"""`make convert` as a user runs it: up-to-date detection and the errors a user meets."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import REPO


def make_convert(build_dir, omz_mirror, images_mirror, precision="FP16") -> subprocess.CompletedProcess:
    command = ["make", "-C", str(REPO), "convert", f"PYTHON={sys.executable}", f"BUILD_DIR={build_dir}",
               f"PRECISION={precision}", f"OMZ_MIRROR={omz_mirror}", f"IMAGES_MIRROR={images_mirror}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=1200)


def test_second_run_converts_nothing(omz_mirror, images_mirror, build_folder):
    # The build_folder fixture has just brought build/ up to date, so this is the second run.
    artifacts = sorted(p for p in build_folder.iterdir() if not p.name.startswith("."))
    stamps = {p.name: p.stat().st_mtime_ns for p in artifacts}

    second = make_convert(build_folder.parent, omz_mirror, images_mirror)

    assert second.returncode == 0, second.stderr
    assert len(artifacts) == 14  # 5 ONNX files, 8 TFLite files, 1 SavedModel
    assert "nothing to convert" in second.stderr
    assert "wrote " not in second.stderr
    assert {p.name: p.stat().st_mtime_ns for p in artifacts} == stamps


def test_changed_artifact_is_rebuilt(tmp_path, omz_mirror, images_mirror, build_folder):
    shutil.copytree(build_folder, tmp_path / "FP16")
    damaged = tmp_path / "FP16" / "landmarks-regression-retail-0009_Nx3x48x48.onnx"
    damaged.write_bytes(b"not a model")

    rerun = make_convert(tmp_path, omz_mirror, images_mirror)

    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stderr.count("wrote ") == 1
    assert f"wrote {damaged}" in rerun.stderr
    assert damaged.read_bytes() == (build_folder / damaged.name).read_bytes()


def test_fp32_missing_from_mirror(tmp_path, omz_mirror, images_mirror):
    result = make_convert(tmp_path, omz_mirror, images_mirror, precision="FP32")

    assert result.returncode != 0
    assert "face-reidentification-retail-0095.bin" in result.stderr
    assert "PRECISION=FP16" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "FP32").exists() or not any((tmp_path / "FP32").glob("*.onnx"))


def test_fp16_int8_reports_fakequantize(tmp_path, omz_mirror, images_mirror):
    result = make_convert(tmp_path, omz_mirror, images_mirror, precision="FP16-INT8")

    assert result.returncode != 0
    assert "FakeQuantize" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any((tmp_path / "FP16-INT8").glob("*.onnx"))
