"""TFLite export runs with the network blocked and matches onnxruntime on real face crops.

The tests that take the `exported` fixture run twice: on a small ONNX model built here with
onnx.helper, and on the face-reidentification-retail-0095 Nx3 ONNX file that `make convert` builds
(the `build_folder` fixture builds it when it is missing).

A second audit hook, the fuse, backs up the guard under test. While armed, it raises for any
connection or name lookup outside loopback that the guard let through. A broken guard then fails
its test without a packet leaving the machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import cosine, run_tflite

from convert.netguard import NetworkBlockedError, no_network
from convert.tflite import FLOAT16, FLOAT32, SAVED_MODEL, TFLiteExportError, export_tflite

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))
CROPS_DIR = SHARED_DIR / "images" / "wider-12-group"
BUILD_MODEL_NAME = "face-reidentification-retail-0095_Nx3x128x128.onnx"

FLOAT32_MAX_ABS_DIFF = 1e-4
FLOAT16_MIN_COSINE = 0.9999
# TEST-NET-1 (RFC 5737): reserved for documentation and never routed.
UNROUTED_ADDRESS = ("192.0.2.1", 9)


# --- fuse: a second audit hook that stops traffic the guard under test misses ---------------

class FuseTripped(AssertionError):
    """Raised by the fuse when the guard let a non-loopback connection or lookup through."""


_fuse_armed = False
_fuse_lock = threading.Lock()
_fuse_installed = False


def _is_loopback(host: object) -> bool:
    return host in (None, "localhost", "127.0.0.1", "::1") or (isinstance(host, str) and host.startswith("127."))


def _fuse(event: str, args: tuple) -> None:
    if not _fuse_armed:
        return
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        address = args[1] if len(args) > 1 else None
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            raise FuseTripped(f"the guard let {event} to {address} through")
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex"):
        if not _is_loopback(args[0] if args else None):
            raise FuseTripped(f"the guard let {event} of {args[0]!r} through")


@contextlib.contextmanager
def fuse_armed():
    global _fuse_armed, _fuse_installed
    with _fuse_lock:
        if not _fuse_installed:
            # Audit hooks run in the order they were added. The guard's hook comes first, so the
            # fuse only receives the events that the guard let through.
            with no_network():
                pass
            sys.addaudithook(_fuse)
            _fuse_installed = True
    _fuse_armed = True
    try:
        yield
    finally:
        _fuse_armed = False


@pytest.fixture()
def loopback_server():
    """Yield the port of a TCP listener that this test opens on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


# --- guard ------------------------------------------------------------------------------

def test_guard_blocks_outbound_connect():
    with fuse_armed(), pytest.raises(NetworkBlockedError) as caught:
        with no_network():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.connect(UNROUTED_ADDRESS)

    assert "192.0.2.1:9" in str(caught.value)
    assert caught.value.event == "socket.connect"


def test_guard_blocks_name_lookup():
    with fuse_armed(), pytest.raises(NetworkBlockedError) as caught:
        with no_network():
            socket.getaddrinfo("example.com", 443)

    assert "example.com" in str(caught.value)


def test_guard_blocks_loopback_by_default(loopback_server):
    with pytest.raises(NetworkBlockedError):
        with no_network():
            socket.create_connection(("127.0.0.1", loopback_server), timeout=5).close()


def test_guard_allows_loopback_on_request(loopback_server):
    with no_network(allow_loopback=True) as guard:
        socket.create_connection(("127.0.0.1", loopback_server), timeout=5).close()

    assert guard.blocked == []


def test_guard_ends_with_block(loopback_server):
    with no_network():
        pass

    socket.create_connection(("127.0.0.1", loopback_server), timeout=5).close()


def test_guard_blocks_process_launch():
    with pytest.raises(NetworkBlockedError) as caught:
        with no_network():
            subprocess.run([sys.executable, "-c", "pass"], check=True)

    assert caught.value.event == "subprocess.Popen"


def test_guard_records_swallowed_attempt():
    with fuse_armed(), no_network() as guard:
        try:
            socket.create_connection(UNROUTED_ADDRESS, timeout=1)
        except NetworkBlockedError:
            pass  # what a library that catches every exception would do

    assert len(guard.blocked) == 1


def test_guard_covers_other_threads():
    errors: list[BaseException] = []

    def connect() -> None:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.connect(UNROUTED_ADDRESS)
        except BaseException as error:  # noqa: BLE001 - the test inspects whatever was raised
            errors.append(error)

    with fuse_armed(), no_network():
        thread = threading.Thread(target=connect)
        thread.start()
        thread.join()

    assert len(errors) == 1
    assert isinstance(errors[0], NetworkBlockedError)


# --- models and data --------------------------------------------------------------------

def build_small_reid_onnx(path: Path, batch: int | str = "N") -> Path:
    """Write a small stand-in for the re-identification backbone with the same interface.

    images [batch,3,128,128] (BGR 0..255) -> per-channel scale and shift [1,3,1,1] -> Conv ->
    PRelu with a [C,1,1] slope -> x * Sigmoid(x) -> AveragePool -> Flatten -> features [N,C].
    """
    rng = np.random.default_rng(0)
    channels = 16
    initializers = {
        "input_scale": np.full((1, 3, 1, 1), 1 / 128, dtype=np.float32),
        "input_shift": np.array([-0.9, -1.0, -1.1], dtype=np.float32).reshape(1, 3, 1, 1),
        "conv_weight": (rng.standard_normal((channels, 3, 3, 3)) * 0.3).astype(np.float32),
        "conv_bias": (rng.standard_normal(channels) * 0.1).astype(np.float32),
        "prelu_slope": rng.uniform(0.05, 0.3, (channels, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Mul", ["images", "input_scale"], ["scaled"], name="input_scale_mul"),
        helper.make_node("Add", ["scaled", "input_shift"], ["shifted"], name="input_shift_add"),
        helper.make_node(
            "Conv", ["shifted", "conv_weight", "conv_bias"], ["conv"],
            name="conv", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
        ),
        helper.make_node("PRelu", ["conv", "prelu_slope"], ["prelu"], name="prelu"),
        helper.make_node("Sigmoid", ["prelu"], ["gate"], name="gate"),
        helper.make_node("Mul", ["prelu", "gate"], ["swish"], name="swish"),
        helper.make_node("AveragePool", ["swish"], ["pool"], name="pool", kernel_shape=[64, 64], strides=[64, 64]),
        helper.make_node("Flatten", ["pool"], ["features"], name="flatten", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "small_reid",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 128, 128])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, channels])],
        [numpy_helper.from_array(array, name) for name, array in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test_tflite_offline")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def build_similarity_head_onnx(path: Path) -> Path:
    """Write a head with two independent dynamic batches: a [N,256], b [M,256] -> similarity [N,M].

    similarity = (a / |a|) @ (b / |b|)^T, the cosine similarity of every row pair.
    """
    nodes = []
    for name in ("a", "b"):
        nodes += [
            helper.make_node("Mul", [name, name], [f"{name}_squared"], name=f"{name}_squared"),
            helper.make_node("ReduceSum", [f"{name}_squared", "axes"], [f"{name}_sum"], name=f"{name}_sum", keepdims=1),
            helper.make_node("Sqrt", [f"{name}_sum"], [f"{name}_norm"], name=f"{name}_norm"),
            helper.make_node("Div", [name, f"{name}_norm"], [f"{name}_unit"], name=f"{name}_unit"),
        ]
    nodes += [
        helper.make_node("Transpose", ["b_unit"], ["b_unit_t"], name="b_unit_t", perm=[1, 0]),
        helper.make_node("MatMul", ["a_unit", "b_unit_t"], ["similarity"], name="similarity"),
    ]
    graph = helper.make_graph(
        nodes,
        "similarity_head",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 256]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["M", 256]),
        ],
        [helper.make_tensor_value_info("similarity", TensorProto.FLOAT, ["N", "M"])],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test_tflite_offline")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def crop_files() -> list[Path]:
    paths = sorted(CROPS_DIR.glob("*.jpg"))
    if len(paths) != 10:
        pytest.fail(f"expected the 10 face crops in {CROPS_DIR}, found {len(paths)}; set SHARED_DIR to the shared data folder")
    return paths


@pytest.fixture(scope="module")
def crops_nhwc(crop_files) -> np.ndarray:
    """The crops as the model is fed: cv2.resize to 128x128, BGR, float32 0..255, NHWC."""
    images = [cv2.resize(cv2.imread(str(path)), (128, 128)) for path in crop_files]
    return np.stack(images).astype(np.float32)


@dataclass
class Export:
    kind: str
    onnx_path: Path
    written: dict[str, Path]
    seconds: float


def export_offline(onnx_path: Path, out_dir: Path, stem: str, images: list[Path] | None, **options) -> tuple[dict[str, Path], float]:
    """Run export_tflite with the guard and the fuse active for the whole call."""
    started = time.monotonic()
    with fuse_armed(), no_network() as guard:
        written = export_tflite(onnx_path, out_dir, stem, images, **options)
    seconds = time.monotonic() - started

    assert guard.blocked == [], f"blocked attempts during the export: {guard.blocked}"
    return written, seconds


@pytest.fixture(scope="module")
def small_export(tmp_path_factory, crop_files) -> Export:
    onnx_path = build_small_reid_onnx(tmp_path_factory.mktemp("small_onnx") / "small_reid.onnx")
    out_dir = tmp_path_factory.mktemp("tflite_small")
    written, seconds = export_offline(onnx_path, out_dir, "reid", crop_files, saved_model=True)
    logger.info("Conversion of %s took %.1f s", onnx_path.name, seconds)
    return Export("small", onnx_path, written, seconds)


@pytest.fixture(scope="module")
def build_export(tmp_path_factory, crop_files, build_folder) -> Export:
    onnx_path = build_folder / BUILD_MODEL_NAME
    out_dir = tmp_path_factory.mktemp("tflite_build")
    stem = onnx_path.name.removesuffix(".onnx")
    written, seconds = export_offline(onnx_path, out_dir, stem, crop_files, saved_model=True)
    logger.info("Conversion of %s took %.1f s", onnx_path.name, seconds)
    return Export("build", onnx_path, written, seconds)


@pytest.fixture(params=["small", "build"])
def exported(request) -> Export:
    return request.getfixturevalue(f"{request.param}_export")


# --- running the artifacts ----------------------------------------------------------------

def run_onnxruntime(onnx_path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def cosine_similarity_rows(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    return cosine(first.reshape(len(first), -1), second.reshape(len(second), -1))


# --- export -------------------------------------------------------------------------------

def test_export_writes_artifacts(exported):
    stem = "reid" if exported.kind == "small" else BUILD_MODEL_NAME.removesuffix(".onnx")
    assert exported.written[FLOAT32].name == f"{stem}_float32.tflite"
    assert exported.written[FLOAT16].name == f"{stem}_float16.tflite"
    for path in exported.written.values():
        assert path.exists(), path
    hidden = [path.name for path in exported.written[FLOAT32].parent.iterdir() if path.name.startswith(".")]
    assert hidden == [], "the export left its working directory behind"


def test_signature_keeps_onnx_names(exported):
    from ai_edge_litert.interpreter import Interpreter

    model = onnx.load(str(exported.onnx_path))
    for key in (FLOAT32, FLOAT16):
        signature = Interpreter(model_path=str(exported.written[key])).get_signature_runner()
        assert list(signature.get_input_details()) == [graph_input.name for graph_input in model.graph.input]
        assert list(signature.get_output_details()) == [graph_output.name for graph_output in model.graph.output]


def test_float32_matches_onnxruntime(exported, crops_nhwc):
    reference = run_onnxruntime(exported.onnx_path, {"images": crops_nhwc.transpose(0, 3, 1, 2)})["features"]
    candidate = run_tflite(exported.written[FLOAT32], {"images": crops_nhwc})["features"]

    max_abs_diff = float(np.max(np.abs(candidate.reshape(reference.shape) - reference)))
    logger.info("%s float32: max |diff| %.3e (tolerance %.0e)", exported.kind, max_abs_diff, FLOAT32_MAX_ABS_DIFF)
    assert max_abs_diff <= FLOAT32_MAX_ABS_DIFF


def test_float16_cosine_matches_onnxruntime(exported, crops_nhwc):
    reference = run_onnxruntime(exported.onnx_path, {"images": crops_nhwc.transpose(0, 3, 1, 2)})["features"]
    candidate = run_tflite(exported.written[FLOAT16], {"images": crops_nhwc})["features"]

    min_cosine = float(np.min(cosine_similarity_rows(candidate, reference)))
    max_abs_diff = float(np.max(np.abs(candidate.reshape(reference.shape) - reference)))
    logger.info(
        "%s float16: min cosine similarity %.7f (tolerance %.4f), max |diff| %.3e",
        exported.kind, min_cosine, FLOAT16_MIN_COSINE, max_abs_diff,
    )
    assert min_cosine >= FLOAT16_MIN_COSINE


@pytest.mark.parametrize("batch", [1, 3, 10])
def test_resize_to_batch(exported, crops_nhwc, batch):
    images = crops_nhwc[:batch]
    reference = run_onnxruntime(exported.onnx_path, {"images": images.transpose(0, 3, 1, 2)})["features"]
    candidate = run_tflite(exported.written[FLOAT32], {"images": images})["features"]

    assert candidate.shape == reference.shape
    assert float(np.max(np.abs(candidate - reference))) <= FLOAT32_MAX_ABS_DIFF


def test_saved_model_signature(small_export):
    import tensorflow as tf

    serving = tf.saved_model.load(str(small_export.written[SAVED_MODEL])).signatures["serving_default"]
    inputs = serving.structured_input_signature[1]
    outputs = serving.structured_outputs

    assert list(inputs) == ["images"]
    assert inputs["images"].shape.as_list() == [None, 128, 128, 3]
    assert list(outputs) == ["features"]
    assert outputs["features"].shape.as_list()[0] is None


def test_export_is_deterministic(small_export, tmp_path, crop_files):
    """A second export in the same process writes byte-identical files (checked on the small model)."""
    again, _ = export_offline(small_export.onnx_path, tmp_path, "reid", crop_files)

    for key in (FLOAT32, FLOAT16):
        assert again[key].read_bytes() == small_export.written[key].read_bytes(), key


def test_export_matches_build_bytes(build_export, build_folder):
    """A conversion in another process and folder gives the same bytes as `make convert` did."""
    for key in (FLOAT32, FLOAT16, SAVED_MODEL):
        written = build_export.written[key]
        built = build_folder / written.name
        files = sorted(p.relative_to(written) for p in written.rglob("*") if p.is_file()) if written.is_dir() else [None]

        assert built.exists(), built
        for relative in files:
            mine = written / relative if relative else written
            theirs = built / relative if relative else built
            assert mine.read_bytes() == theirs.read_bytes(), f"{written.name}/{relative or ''}"


@pytest.mark.parametrize("with_images", [True, False], ids=["crops", "no_images"])
def test_fixed_batch_exports_offline(tmp_path, crop_files, crops_nhwc, with_images):
    """A fixed batch of at most 20 is the case where onnx2tf 1.29.24 downloads sample images."""
    onnx_path = build_small_reid_onnx(tmp_path / "small_reid_b2.onnx", batch=2)
    written, _ = export_offline(onnx_path, tmp_path / "out", "reid", crop_files if with_images else None)

    reference = run_onnxruntime(onnx_path, {"images": crops_nhwc[:2].transpose(0, 3, 1, 2)})["features"]
    candidate = run_tflite(written[FLOAT32], {"images": crops_nhwc[:2]})["features"]
    assert float(np.max(np.abs(candidate - reference))) <= FLOAT32_MAX_ABS_DIFF


def test_two_dynamic_batches(tmp_path):
    onnx_path = build_similarity_head_onnx(tmp_path / "head.onnx")
    written, _ = export_offline(onnx_path, tmp_path / "out", "head", None)

    rng = np.random.default_rng(1)
    for rows, columns in [(1, 10), (3, 5), (10, 1)]:
        feeds = {
            "a": rng.standard_normal((rows, 256)).astype(np.float32),
            "b": rng.standard_normal((columns, 256)).astype(np.float32),
        }
        reference = run_onnxruntime(onnx_path, feeds)["similarity"]
        candidate = run_tflite(written[FLOAT32], feeds)["similarity"]

        assert candidate.shape == (rows, columns)
        assert float(np.max(np.abs(candidate - reference))) <= 1e-5


# --- input errors ---------------------------------------------------------------------------

def test_missing_onnx_is_reported(tmp_path):
    missing = tmp_path / "absent.onnx"

    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        export_tflite(missing, tmp_path / "out", "reid")


def test_corrupt_onnx_is_reported(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf")

    with pytest.raises(ValueError, match="corrupt.onnx"):
        export_tflite(corrupt, tmp_path / "out", "reid")


def test_unreadable_image_is_reported(tmp_path):
    onnx_path = build_small_reid_onnx(tmp_path / "small_reid.onnx")
    not_an_image = tmp_path / "crop.jpg"
    not_an_image.write_bytes(b"not a jpeg")

    with pytest.raises(ValueError, match="crop.jpg"):
        export_tflite(onnx_path, tmp_path / "out", "reid", [not_an_image])


def test_stem_with_directory_is_rejected(tmp_path):
    onnx_path = build_small_reid_onnx(tmp_path / "small_reid.onnx")

    with pytest.raises(ValueError, match="stem"):
        export_tflite(onnx_path, tmp_path / "out", "sub/reid")


def test_failed_conversion_raises(tmp_path):
    """A model onnx2tf cannot convert raises TFLiteExportError and leaves out_dir clean."""
    # onnx2tf 1.29.24 has no converter for CastLike.
    graph = helper.make_graph(
        [helper.make_node("CastLike", ["x", "like"], ["y"], name="cast_like")],
        "unsupported",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("like", TensorProto.INT32, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx_path = tmp_path / "unsupported.onnx"
    onnx.save(model, onnx_path)
    out_dir = tmp_path / "out"

    with pytest.raises(TFLiteExportError):
        export_offline(onnx_path, out_dir, "unsupported", None)

    assert list(out_dir.iterdir()) == []
