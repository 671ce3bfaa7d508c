"""`python validate/validation.py` as a user runs it: the tables, the runtimes and the errors a user meets.

Every run is a subprocess on the real IR, the real crops and the artifacts of `make convert`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from conftest import REPO

REIDENTIFICATION = "face-reidentification-retail-0095"
SCRIPT = REPO / "validate" / "validation.py"

# Row "0" of the model card's similarity table, targets 1..9 then 0.
MODEL_CARD_ROW = ["0.243", "0.029", "0.000", "0.000", "0.000", "0.047", "0.337", "0.181", "0.022", "1.000"]
TARGET_LABELS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"]

# Which runtimes must run each kind of artifact. Written out here, apart from the harness's
# registry, so that a runtime the harness omits shows up as a missing row.
EXPECTED_RUNTIMES = {
    ".onnx": {"ONNX Runtime", "OpenVINO"},
    ".tflite": {"LiteRT", "OpenVINO"},
    "saved_model": {"TensorFlow"},
}

SIMILARITY_HEADING = "## Cosine similarity"
PARITY_HEADING = "## Feature parity"


def run_validation(*arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), *arguments]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)


def artifact_kind(path: Path) -> str | None:
    if path.is_dir():
        return "saved_model" if (path / "saved_model.pb").is_file() else None
    return path.suffix if path.suffix in EXPECTED_RUNTIMES else None


def expected_rows(folder: Path) -> set[tuple[str, str]]:
    """(artifact, runtime) pairs that a run on `folder` must print, from a plain listing of the folder."""
    rows = set()
    for path in folder.iterdir():
        kind = artifact_kind(path)
        if kind is not None and path.name.startswith(REIDENTIFICATION):
            rows |= {(path.name, runtime) for runtime in EXPECTED_RUNTIMES[kind]}
    return rows


def parse_table(stdout: str, heading: str) -> list[dict[str, str]]:
    """Return the rows of the Markdown table below the heading that starts with `heading`."""
    lines = stdout.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(heading))
    table = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break

    split = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table]
    header, rows = split[0], split[2:]
    return [dict(zip(header, row)) for row in rows]


def artifact_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [row for row in rows if row["Model"].startswith(REIDENTIFICATION) and "(reference)" not in row["Model"]]


def targets(row: dict[str, str]) -> list[str]:
    return [row[label] for label in TARGET_LABELS]


def copy_artifacts(source: Path, destination: Path, suffixes: tuple[str, ...]) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix in suffixes and not path.name.startswith("."):
            shutil.copy2(path, destination / path.name)
    return destination


@pytest.fixture(scope="module")
def mirror_arguments(omz_mirror, images_mirror) -> list[str]:
    return ["--omz-mirror", str(omz_mirror), "--images-mirror", str(images_mirror)]


@pytest.fixture(scope="module")
def default_run(build_folder, precision, mirror_arguments) -> subprocess.CompletedProcess:
    """The command `make validate` runs, minus the explicit --artifacts, which defaults to build/PRECISION."""
    return run_validation("--precision", precision, *mirror_arguments)


@pytest.fixture(scope="module")
def similarity_rows(default_run) -> list[dict[str, str]]:
    return parse_table(default_run.stdout, SIMILARITY_HEADING)


def test_default_run_passes(default_run):
    assert default_run.returncode == 0, default_run.stdout + default_run.stderr
    assert "Traceback" not in default_run.stderr
    assert "PASSED" in default_run.stdout


def test_reference_row_matches_model_card(similarity_rows):
    (reference,) = [row for row in similarity_rows if "(reference)" in row["Model"]]
    assert reference["Runtime"] == "OpenVINO"
    assert targets(reference) == MODEL_CARD_ROW


def test_published_row_comes_first(similarity_rows):
    first, second = similarity_rows[:2]
    assert first["Model"] == "model card (published)"
    assert targets(first) == MODEL_CARD_ROW
    assert first["Result"] == "PASS"
    assert "(reference)" in second["Model"]


def test_float_rows_match_model_card(similarity_rows):
    float_rows = [row for row in artifact_rows(similarity_rows) if row["Class"] in ("float32", "float16")]
    assert float_rows, "no float32 or float16 artifact rows in the table"
    for row in float_rows:
        assert targets(row) == MODEL_CARD_ROW, f"{row['Model']} on {row['Runtime']}"
        assert row["Result"] == "PASS", f"{row['Model']} on {row['Runtime']}"


def test_every_artifact_runs_on_every_runtime(similarity_rows, build_folder):
    expected = expected_rows(build_folder)
    printed = {(row["Model"], row["Runtime"]) for row in artifact_rows(similarity_rows)}

    # The two plain ONNX models that `make convert` always writes, on two runtimes each.
    assert len([name for name, _ in expected if name.endswith(".onnx")]) >= 4
    assert printed == expected


def test_tflite_and_saved_model_rows_present(similarity_rows, build_folder):
    runtimes = {row["Runtime"] for row in artifact_rows(similarity_rows)}
    assert {"ONNX Runtime", "OpenVINO"} <= runtimes

    tflite_files = sorted(build_folder.glob(f"{REIDENTIFICATION}*.tflite"))
    saved_models = [path for path in build_folder.glob(f"{REIDENTIFICATION}*") if artifact_kind(path) == "saved_model"]
    if tflite_files:
        assert "LiteRT" in runtimes, f"{len(tflite_files)} .tflite files in {build_folder}, no LiteRT row"
        printed_tflite = {row["Model"] for row in artifact_rows(similarity_rows) if row["Model"].endswith(".tflite")}
        assert printed_tflite == {path.name for path in tflite_files}
    if saved_models:
        assert "TensorFlow" in runtimes, f"SavedModels {saved_models} in {build_folder}, no TensorFlow row"


def test_parity_rows_match_similarity_rows(default_run, similarity_rows):
    parity = parse_table(default_run.stdout, PARITY_HEADING)
    assert {(row["Model"], row["Runtime"]) for row in parity} == {
        (row["Model"], row["Runtime"]) for row in artifact_rows(similarity_rows)
    }
    for row in parity:
        assert row["Result"] == "PASS", row


def test_landmarks_model_skipped_once(default_run, build_folder):
    landmarks = sorted(build_folder.glob("landmarks-regression-retail-0009*.onnx"))
    assert landmarks, f"make convert wrote no landmarks model into {build_folder}"
    for path in landmarks:
        assert default_run.stderr.count(f"Skipping {path.name}") == 1
        assert path.name not in default_run.stdout


# --- LiteRT and TensorFlow on real exported artifacts ------------------------------------------


@pytest.fixture(scope="module")
def four_runtime_folder(build_folder, tmp_path_factory, crop_paths) -> Path:
    """A folder with ONNX, TFLite and SavedModel artifacts: the build folder when it has all three.

    Otherwise the 1x3 ONNX model is exported here with the project's onnx2tf exporter, so that the
    LiteRT and TensorFlow runtimes run on real converted files before `make convert` writes them.
    """
    has_tflite = any(build_folder.glob("*.tflite"))
    has_saved_model = any(artifact_kind(path) == "saved_model" for path in build_folder.iterdir())
    if has_tflite and has_saved_model:
        return build_folder

    from convert.tflite import export_tflite

    folder = tmp_path_factory.mktemp("four-runtimes")
    stem = f"{REIDENTIFICATION}_1x3x128x128"
    shutil.copy2(build_folder / f"{stem}.onnx", folder / f"{stem}.onnx")
    export_tflite(folder / f"{stem}.onnx", folder, stem, crop_paths, saved_model=True)
    return folder


def test_all_four_runtimes_appear(four_runtime_folder, precision, mirror_arguments):
    result = run_validation("--artifacts", str(four_runtime_folder), "--precision", precision, *mirror_arguments)

    assert result.returncode == 0, result.stdout + result.stderr
    rows = artifact_rows(parse_table(result.stdout, SIMILARITY_HEADING))
    assert {row["Runtime"] for row in rows} == {"ONNX Runtime", "OpenVINO", "LiteRT", "TensorFlow"}
    assert {(row["Model"], row["Runtime"]) for row in rows} == expected_rows(four_runtime_folder)
    for row in rows:
        assert targets(row) == MODEL_CARD_ROW, f"{row['Model']} on {row['Runtime']}"


# --- errors a user meets -------------------------------------------------------------------------


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_empty_artifacts_folder(tmp_path, mirror_arguments):
    result = run_validation("--artifacts", str(tmp_path), *mirror_arguments)
    assert_one_line_error(result, str(tmp_path), "make convert")


def test_missing_artifacts_folder(tmp_path, mirror_arguments):
    missing = tmp_path / "FP16"
    result = run_validation("--artifacts", str(missing), *mirror_arguments)
    assert_one_line_error(result, str(missing), "does not exist", "make convert")


def test_missing_images_folder(tmp_path, build_folder, mirror_arguments):
    missing = tmp_path / "no-such-images"
    result = run_validation("--artifacts", str(build_folder), "--images", str(missing), *mirror_arguments)
    assert_one_line_error(result, str(missing), "not found", "--images")


def test_empty_images_folder(tmp_path, build_folder, mirror_arguments):
    (tmp_path / "notes.txt").write_text("no images here\n")
    result = run_validation("--artifacts", str(build_folder), "--images", str(tmp_path), *mirror_arguments)
    assert_one_line_error(result, f"No images in {tmp_path}")


def test_unreadable_image(tmp_path, build_folder, crop_paths, mirror_arguments):
    for path in crop_paths[:2]:
        shutil.copy2(path, tmp_path / path.name)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a JPEG file")

    result = run_validation("--artifacts", str(build_folder), "--images", str(tmp_path), *mirror_arguments)

    assert_one_line_error(result, str(broken), "not a readable image")


def test_unknown_base_image(build_folder, mirror_arguments):
    result = run_validation("--artifacts", str(build_folder), "--base", "no-such-crop.jpg", *mirror_arguments)
    assert_one_line_error(result, "no-such-crop.jpg", "12_Group_Group_12_Group_Group_12_10_0000.jpg")


def test_unknown_option_is_usage_error():
    result = subprocess.run([sys.executable, str(SCRIPT), "--no-such-option"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--no-such-option" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_artifact_fails_only_its_rows(tmp_path, build_folder, precision, mirror_arguments):
    folder = copy_artifacts(build_folder, tmp_path / "artifacts", (".onnx", ".tflite"))
    corrupt = folder / f"{REIDENTIFICATION}_1x3x128x128.onnx"
    with open(corrupt, "r+b") as stream:
        stream.truncate(corrupt.stat().st_size // 3)

    result = run_validation("--artifacts", str(folder), "--precision", precision, *mirror_arguments)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    rows = artifact_rows(parse_table(result.stdout, SIMILARITY_HEADING))
    assert {(row["Model"], row["Runtime"]) for row in rows} == expected_rows(folder)
    for row in rows:
        if row["Model"] == corrupt.name:
            assert row["Result"] == "FAIL"
            assert row["max abs Δ vs reference"].startswith("error:")
        else:
            assert row["Result"] == "PASS", row
            assert targets(row) == MODEL_CARD_ROW
    assert f"{corrupt} failed on ONNX Runtime" in result.stderr
    assert f"{corrupt} failed on OpenVINO" in result.stderr
    assert "FAILED: 2 of" in result.stdout


def test_grayscale_and_rgba_converted(tmp_path, build_folder, crop_paths, precision, mirror_arguments):
    images = tmp_path / "images"
    images.mkdir()
    first, second, third = (cv2.imread(str(path)) for path in crop_paths[:3])
    cv2.imwrite(str(images / "a_gray.png"), cv2.cvtColor(first, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(images / "b_rgba.png"), cv2.cvtColor(second, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(images / "c_color.png"), third)
    artifacts = copy_artifacts(build_folder, tmp_path / "artifacts", (".onnx",))

    result = run_validation("--artifacts", str(artifacts), "--images", str(images), "--precision", precision,
                            *mirror_arguments)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "a_gray.png (base; grayscale, converted to 3-channel BGR)" in result.stdout
    assert "b_rgba.png (BGRA (alpha channel dropped), converted to 3-channel BGR)" in result.stdout
    assert "- 2: c_color.png\n" in result.stdout
    assert "a_gray.png is grayscale: converted to 3-channel BGR" in result.stderr
    rows = parse_table(result.stdout, SIMILARITY_HEADING)
    assert all(row["Model"] != "model card (published)" for row in rows)
    assert "left out" in result.stdout


def test_base_option_reorders_targets(tmp_path, build_folder, precision, mirror_arguments):
    artifacts = copy_artifacts(build_folder, tmp_path / "artifacts", (".onnx",))
    result = run_validation("--artifacts", str(artifacts), "--precision", precision,
                            "--base", "12_Group_Group_12_Group_Group_12_10_0003", *mirror_arguments)

    assert result.returncode == 0, result.stdout + result.stderr
    rows = parse_table(result.stdout, SIMILARITY_HEADING)
    assert list(rows[0])[3:13] == ["0", "1", "2", "4", "5", "6", "7", "8", "9", "3"]
    assert rows[0]["3"] == "1.000"
    assert all(row["Model"] != "model card (published)" for row in rows)


# --- the report folder -----------------------------------------------------------------------------


def test_report_links_resolve(tmp_path, build_folder, precision, mirror_arguments):
    artifacts = copy_artifacts(build_folder, tmp_path / "artifacts", (".onnx",))
    report = tmp_path / "report"

    result = run_validation("--artifacts", str(artifacts), "--precision", precision, "--report", str(report),
                            *mirror_arguments)

    assert result.returncode == 0, result.stdout + result.stderr
    text = (report / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "similarity_heatmap.png" in links
    thumbnails = {link for link in links if link.startswith("thumbnails/")}
    assert len(thumbnails) == 10
    for link in links:
        target = report / link
        assert target.is_file(), link
        assert cv2.imread(str(target)) is not None, link
    assert "|0 vs 1|" in text
    assert "|0 vs 0|" in text
    assert parse_table(text, SIMILARITY_HEADING) == parse_table(result.stdout, SIMILARITY_HEADING)


def test_report_path_is_a_file(tmp_path, build_folder, mirror_arguments):
    not_a_folder = tmp_path / "report.md"
    not_a_folder.write_text("")
    result = run_validation("--artifacts", str(build_folder), "--report", str(not_a_folder), *mirror_arguments)
    assert_one_line_error(result, str(not_a_folder), "not a folder")


def test_unclipped_head_compared_clipped(tmp_path, build_folder, precision, mirror_arguments):
    folder = tmp_path / "artifacts"
    folder.mkdir()
    backbone = folder / f"{REIDENTIFICATION}_Nx3x128x128.onnx"
    shutil.copy2(build_folder / backbone.name, backbone)
    built = subprocess.run([sys.executable, "-m", "postprocess", str(backbone), "--head", "pair", "--unclipped"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr

    result = run_validation("--artifacts", str(folder), "--precision", precision, *mirror_arguments)

    assert result.returncode == 0, result.stdout + result.stderr
    rows = artifact_rows(parse_table(result.stdout, SIMILARITY_HEADING))
    unclipped = [row for row in rows if row["Model"].endswith("_post_unclipped.onnx")]
    assert len(unclipped) == 2
    for row in unclipped:
        assert targets(row) == MODEL_CARD_ROW
