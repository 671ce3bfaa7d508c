"""Export an ONNX model to float32 and float16 TFLite, and optionally a SavedModel, with onnx2tf.

onnx2tf 1.29.24 can reach the network or depend on the caller's environment in these places, and
`export_tflite` sidesteps each of them:

- `download_test_image_data()` (onnx2tf/utils/common_functions.py) fetches 20 MS-COCO sample images
  with `requests` unless `calibration_image_sample_data_20x128x128x3_float32.npy` exists in the
  current directory. `convert()` calls it when every input is a 4D image with a fixed batch of at
  most 20 (even when `custom_input_op_name_np_data_path` is given), and for INT8 calibration when
  `custom_input_op_name_np_data_path` is not given. The export writes that file from the caller's
  images into its own working directory and runs onnx2tf there.
- `rewrite_tflite_inout_opname()` runs `flatc` and then `curl` to download schema.fbs. It runs only
  with `copy_onnx_input_output_names_to_tflite`, which the export leaves off: the TFLite signature
  already carries the ONNX input and output names.
- onnxsim runs as a subprocess found on PATH, and its absence is only a warning. The export runs
  onnxsim in-process instead and passes `not_use_onnxsim`.

The conversion runs inside `no_network()`, which also rejects process launches, so a new download
path in a later onnx2tf release fails the export instead of silently going online.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import logging
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnx.numpy_helper
import onnx.shape_inference
from google.protobuf.message import DecodeError

from convert.netguard import no_network

logger = logging.getLogger(__name__)

FLOAT32 = "float32"
FLOAT16 = "float16"
SAVED_MODEL = "saved_model"

# File name that onnx2tf 1.29.24 `download_test_image_data()` reads from the current directory
# before it tries to download; the array is NHWC float32 in 0..1.
_ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
_ONNX2TF_SAMPLE_SHAPE = (20, 128, 128, 3)

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class TFLiteExportError(RuntimeError):
    """Raised when onnx2tf fails or its output does not keep the ONNX model's interface."""


@dataclass(frozen=True)
class _ImageInput:
    """A graph input shaped [batch, 3, height, width] that onnx2tf turns into NHWC."""

    name: str
    batch: int | None
    height: int
    width: int


def export_tflite(
    onnx_path: Path,
    out_dir: Path,
    stem: str,
    calibration_images: list[Path] | None = None,
    *,
    saved_model: bool = False,
    strict_mode: bool = False,
) -> dict[str, Path]:
    """Convert `onnx_path` with onnx2tf, offline, and move the results into `out_dir`.

    Writes `<stem>_float32.tflite` and `<stem>_float16.tflite` (float16 weights, float32 compute),
    and `<stem>_saved_model/` when `saved_model` is true. The TFLite inputs are NHWC and keep the
    ONNX input and output names in the `serving_default` signature. A symbolic batch dimension
    stays dynamic, so LiteRT's `resize_tensor_input` accepts any batch size.

    calibration_images: BGR image files that onnx2tf runs through the ONNX and TensorFlow graphs
        to check its layout decisions. They are resized to each image input with `cv2.resize`
        and fed as float32 0..255. Without them onnx2tf uses constant inputs.
    strict_mode: enables onnx2tf's strict mode, which brute-forces transposes against a batch-1
        dummy inference. In onnx2tf 1.29.24 that can turn a Flatten under a dynamic batch into a
        reshape to [1, -1] (seen without calibration images), so it is off by default. The
        interface check after conversion rejects such a result.

    Returns the paths written, keyed by "float32", "float16" and, if requested, "saved_model".
    Raises FileNotFoundError for a missing model or image, ValueError for an unusable input and
    TFLiteExportError when onnx2tf fails or its output loses the ONNX names or dynamic batch.
    """
    # Absolute paths, because onnx2tf runs with the working directory changed to a temporary folder.
    onnx_path = Path(onnx_path).resolve()
    out_dir = Path(out_dir).resolve()
    _check_stem(stem)
    model = _load_onnx(onnx_path)
    image_inputs = _image_inputs(model)
    samples = _load_samples(calibration_images, image_inputs)

    logger.info("TFLite export of %s started (stem %s)", onnx_path, stem)
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    # The working directory sits inside out_dir so that the final moves are renames on one
    # file system.
    work_dir = Path(tempfile.mkdtemp(prefix=f".{stem}-export-", dir=out_dir))
    try:
        work_onnx = work_dir / f"{stem}.onnx"
        prepared = _simplify(model, onnx_path)
        _squeeze_channel_constants(prepared)
        onnx.save(prepared, work_onnx)
        all_inputs_are_images = len(image_inputs) == len(_graph_inputs(model))
        sample_arguments = _write_samples(work_dir, samples, image_inputs, all_inputs_are_images)

        converted_dir = work_dir / f"{stem}_saved_model"
        _run_in_fresh_process(_run_onnx2tf, work_onnx, converted_dir, work_dir, sample_arguments, strict_mode)

        converted = {
            FLOAT32: converted_dir / f"{stem}_float32.tflite",
            FLOAT16: converted_dir / f"{stem}_float16.tflite",
        }
        for path in converted.values():
            _check_tflite_interface(path, model)

        written = _move_outputs(converted, converted_dir, out_dir, saved_model)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    duration = time.monotonic() - started
    sizes = ", ".join(f"{path.name} {_size_of(path) / 1024:.1f} KiB" for path in written.values())
    logger.info("TFLite export of %s finished in %.1f s: %s", onnx_path, duration, sizes)
    return written


def _check_stem(stem: str) -> None:
    if not stem or stem in {".", ".."} or "/" in stem or os.sep in stem:
        raise ValueError(f"invalid output stem {stem!r}: expected a plain file name without a directory part")


def _load_onnx(onnx_path: Path) -> onnx.ModelProto:
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}. Run the ONNX export first or pass the right path.")
    try:
        model = onnx.load(str(onnx_path))
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError) as error:
        raise ValueError(f"invalid ONNX model {onnx_path}: {error}. Re-export the model.") from error
    return model


def _image_inputs(model: onnx.ModelProto) -> list[_ImageInput]:
    """Return the float32 inputs shaped [batch, 3, H, W] with a fixed H and W."""
    initializer_names = {initializer.name for initializer in model.graph.initializer}
    image_inputs = []
    for graph_input in model.graph.input:
        if graph_input.name in initializer_names:
            continue
        tensor_type = graph_input.type.tensor_type
        dims = tensor_type.shape.dim
        if tensor_type.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4:
            continue
        batch, channels, height, width = (dim.dim_value if dim.HasField("dim_value") else None for dim in dims)
        if channels == 3 and height and width:
            image_inputs.append(_ImageInput(graph_input.name, batch, height, width))
    return image_inputs


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializer_names = {initializer.name for initializer in model.graph.initializer}
    return [graph_input for graph_input in model.graph.input if graph_input.name not in initializer_names]


def _load_samples(
    calibration_images: Sequence[Path] | None, image_inputs: list[_ImageInput]
) -> list[np.ndarray] | None:
    """Read each image as BGR uint8, unresized, so each input can resize to its own size."""
    if not calibration_images:
        return None
    if not image_inputs:
        logger.warning("Calibration images ignored: the model has no [N, 3, H, W] float32 input")
        return None

    images = []
    for image_path in calibration_images:
        image_path = Path(image_path)
        if not image_path.is_file():
            raise FileNotFoundError(f"calibration image not found: {image_path}")
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot decode calibration image {image_path}: pass a JPEG or PNG file that OpenCV can read")
        images.append(image)
    return images


def _resize_batch(images: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Return NHWC float32 0..255 BGR, resized the way the toolkit feeds the model."""
    resized = [cv2.resize(image, (width, height)) for image in images]
    return np.stack(resized).astype(np.float32)


def _write_samples(
    work_dir: Path,
    samples: list[np.ndarray] | None,
    image_inputs: list[_ImageInput],
    all_inputs_are_images: bool,
) -> list[list[str]] | None:
    """Write the sample arrays onnx2tf reads and return its `custom_input_op_name_np_data_path`.

    Always writes the file that stops `download_test_image_data()` from downloading, into
    work_dir, which is the current directory while onnx2tf runs.
    """
    if samples is None:
        # Mid-grey replaces real images when the caller passes none.
        fallback = np.full(_ONNX2TF_SAMPLE_SHAPE, 0.5, dtype=np.float32)
        np.save(work_dir / _ONNX2TF_SAMPLE_FILE, fallback)
        return None

    count, height, width, _ = _ONNX2TF_SAMPLE_SHAPE
    repeated = [samples[index % len(samples)] for index in range(count)]
    # onnx2tf multiplies this file by 255 under check_onnx_tf_outputs_sample_data_normalization="denorm".
    np.save(work_dir / _ONNX2TF_SAMPLE_FILE, _resize_batch(repeated, height, width) / 255.0)

    # onnx2tf feeds only the inputs listed here and gives the others nothing, so the list is
    # passed only when every graph input is an image input.
    if not all_inputs_are_images:
        return None
    arguments = []
    for image_input in image_inputs:
        array_path = work_dir / f"sample_{len(arguments)}.npy"
        batch = _sample_batch(image_input)
        repeated = [samples[index % len(samples)] for index in range(batch)]
        np.save(array_path, _resize_batch(repeated, image_input.height, image_input.width))
        arguments.append([image_input.name, str(array_path)])
    return arguments


def _sample_batch(image_input: _ImageInput) -> int:
    """Return the batch size of the array onnx2tf expects for this input.

    onnx2tf 1.29.24 transposes the NHWC array to NCHW for its ONNX dummy inference only when the
    shapes match exactly, batch included, and it runs a dynamic batch as batch 1. A longer array
    reaches onnxruntime untransposed and the dummy inference fails.
    """
    return image_input.batch if image_input.batch is not None else 1


def _simplify(model: onnx.ModelProto, onnx_path: Path) -> onnx.ModelProto:
    """Run onnx-simplifier in-process, as onnx2tf would in a subprocess.

    onnx2tf needs the inferred intermediate shapes that onnxsim adds: without them its PRelu
    converter fails on a per-channel slope of shape [C, 1, 1].
    """
    import onnxsim

    try:
        simplified, _ = onnxsim.simplify(model, check_n=0)
    except Exception as error:  # onnxsim 0.4.36 documents no exception types for its C++ core
        raise TFLiteExportError(f"onnx-simplifier failed on {onnx_path}: {error}") from error
    return simplified


def _squeeze_channel_constants(model: onnx.ModelProto) -> None:
    """Reshape [1, C, 1, 1] initializers of elementwise arithmetic to [C, 1, 1], in place.

    onnx2tf 1.29.24 transposes such a constant twice when the other operand is an NCHW input with
    a dynamic batch, so Mul(images[N,3,128,128], scale[1,3,1,1]) fails to convert with
    "Dimensions must be equal". A [C, 1, 1] constant broadcasts to the same result against a 4D
    operand and converts correctly. Only constants whose every use is such an operation change.
    """
    ranks = _tensor_ranks(model)
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, position))

    for initializer in model.graph.initializer:
        dims = list(initializer.dims)
        if len(dims) != 4 or dims[0] != 1 or dims[2:] != [1, 1]:
            continue
        node_uses = uses.get(initializer.name, [])
        if not node_uses or not all(_is_broadcast_to_rank4(node, position, ranks) for node, position in node_uses):
            continue
        array = onnx.numpy_helper.to_array(initializer).reshape(dims[1:])
        initializer.CopyFrom(onnx.numpy_helper.from_array(array, initializer.name))
        logger.debug("Reshaped initializer %s from %s to %s for onnx2tf", initializer.name, dims, dims[1:])


def _tensor_ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {
        value.name: len(value.type.tensor_type.shape.dim)
        for value in values
        if value.type.tensor_type.HasField("shape")
    }


def _is_broadcast_to_rank4(node: onnx.NodeProto, position: int, ranks: dict[str, int]) -> bool:
    if node.op_type not in {"Add", "Sub", "Mul", "Div"} or len(node.input) != 2:
        return False
    other = node.input[1 - position]
    return ranks.get(other) == 4


def _run_in_fresh_process(function, *arguments) -> None:
    """Run `function(*arguments)` in a new Python process and re-raise its exception here.

    TensorFlow numbers the functions it traces per process, and those numbers end up in the
    SavedModel, so a conversion is byte-reproducible only in a process that converted nothing
    before. A fresh process also keeps onnx2tf's process-wide changes (working directory,
    environment variables, warning filters) out of the caller.
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        executor.submit(function, *arguments).result()


def _onnx2tf_module():
    """Import onnx2tf and undo the process-wide settings its import changes.

    onnx2tf 1.29.24 silences every Python warning and raises the recursion limit to 2**31-1 when
    imported. It also sets TF_CPP_MIN_LOG_LEVEL=3 and TF_USE_LEGACY_KERAS=1 and enables
    TensorFlow op determinism, which stay in effect.
    """
    recursion_limit = sys.getrecursionlimit()
    with warnings.catch_warnings():
        import onnx2tf
    sys.setrecursionlimit(recursion_limit)
    return onnx2tf


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    # os.chdir is process-wide; the export runs in a process of its own, so no caller sees it.
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _run_onnx2tf(
    work_onnx: Path,
    converted_dir: Path,
    work_dir: Path,
    sample_arguments: list[list[str]] | None,
    strict_mode: bool,
) -> None:
    onnx2tf = _onnx2tf_module()
    import tf_keras

    # Keras numbers layer names per process (tf.math.multiply_1, ...), and those names end up in
    # the .tflite file. Resetting the counters makes a second export in the same process
    # byte-identical to the first. It does not touch models that already exist.
    tf_keras.backend.clear_session()

    console = io.StringIO()
    try:
        with no_network() as guard, _working_directory(work_dir), contextlib.redirect_stdout(console):
            onnx2tf.convert(
                input_onnx_file_path=str(work_onnx),
                output_folder_path=str(converted_dir),
                not_use_onnxsim=True,
                disable_strict_mode=not strict_mode,
                custom_input_op_name_np_data_path=sample_arguments,
                check_onnx_tf_outputs_sample_data_normalization="denorm",
                copy_onnx_input_output_names_to_tflite=False,
                verbosity="warn",
            )
    except (Exception, SystemExit) as error:
        # onnx2tf reports most failures by printing them and calling sys.exit(1).
        raise TFLiteExportError(
            f"onnx2tf failed to convert {work_onnx.name}: {error!r}\n{_console_text(console)}"
        ) from error
    finally:
        _log_console(console)

    if guard.blocked:
        attempts = "; ".join(str(blocked.target) for blocked in guard.blocked)
        raise TFLiteExportError(
            f"onnx2tf tried to go online or start a process during the conversion of {work_onnx.name} "
            f"and carried on after the attempt was blocked ({attempts}); its output may be incomplete"
        )


def _console_text(console: io.StringIO) -> str:
    return _ANSI_ESCAPE.sub("", console.getvalue()).strip()


def _log_console(console: io.StringIO) -> None:
    text = _console_text(console)
    if text:
        logger.debug("onnx2tf console output:\n%s", text)


def _check_tflite_interface(tflite_path: Path, model: onnx.ModelProto) -> None:
    """Check that the TFLite signature keeps the ONNX names and dynamic dimensions."""
    from ai_edge_litert.interpreter import Interpreter

    if not tflite_path.is_file():
        raise TFLiteExportError(f"onnx2tf did not write {tflite_path.name}")

    interpreter = Interpreter(model_path=str(tflite_path))
    signature = interpreter.get_signature_runner()
    input_details = signature.get_input_details()
    output_details = signature.get_output_details()

    expected_inputs = [graph_input.name for graph_input in _graph_inputs(model)]
    expected_outputs = [graph_output.name for graph_output in model.graph.output]
    if sorted(input_details) != sorted(expected_inputs) or sorted(output_details) != sorted(expected_outputs):
        raise TFLiteExportError(
            f"{tflite_path.name} signature has inputs {sorted(input_details)} and outputs "
            f"{sorted(output_details)}, expected the ONNX names {sorted(expected_inputs)} and "
            f"{sorted(expected_outputs)}"
        )

    onnx_values = {value.name: value for value in [*_graph_inputs(model), *model.graph.output]}
    tflite_details = {**input_details, **output_details}
    for name, detail in tflite_details.items():
        onnx_dims = onnx_values[name].type.tensor_type.shape.dim
        symbolic = [index for index, dim in enumerate(onnx_dims) if not dim.HasField("dim_value")]
        tflite_shape = list(detail["shape_signature"])
        # onnx2tf moves channels last, so only the batch dimension keeps its position; for the
        # others the count of dynamic dimensions has to match.
        batch_fixed = 0 in symbolic and tflite_shape[0] != -1
        if batch_fixed or tflite_shape.count(-1) < len(symbolic):
            onnx_shape = [dim.dim_value if dim.HasField("dim_value") else dim.dim_param or "?" for dim in onnx_dims]
            raise TFLiteExportError(
                f"{tflite_path.name}: {name} has shape {tflite_shape} (-1 is dynamic), but its ONNX shape "
                f"{onnx_shape} has {len(symbolic)} dynamic dimension(s); onnx2tf made them static"
            )


def _move_outputs(
    converted: dict[str, Path], converted_dir: Path, out_dir: Path, saved_model: bool
) -> dict[str, Path]:
    written = {}
    for key, source in converted.items():
        target = out_dir / source.name
        os.replace(source, target)
        written[key] = target

    if saved_model:
        _pin_fingerprint_uuid(converted_dir)
        target = out_dir / converted_dir.name
        _replace_directory(converted_dir, target)
        written[SAVED_MODEL] = target
    return written


def _pin_fingerprint_uuid(saved_model_dir: Path) -> None:
    """Replace the random `uuid` of the SavedModel's fingerprint.pb with one derived from its hashes.

    TensorFlow 2.19 writes a random uuid on every save, the only byte that differs between two
    conversions of the same ONNX file. The fingerprint's content hashes are deterministic, so a uuid
    derived from them identifies the same model the same way.
    """
    from tensorflow.core.protobuf import fingerprint_pb2

    path = saved_model_dir / "fingerprint.pb"
    if not path.is_file():
        return
    fingerprint = fingerprint_pb2.FingerprintDef()
    fingerprint.ParseFromString(path.read_bytes())
    fingerprint.ClearField("uuid")
    digest = hashlib.sha256(fingerprint.SerializeToString(deterministic=True)).digest()
    fingerprint.uuid = str(int.from_bytes(digest[:8], "big"))
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))


def _replace_directory(source: Path, target: Path) -> None:
    """Rename source to target, replacing an existing target directory.

    NOTE: a directory cannot be replaced in one rename, so for a moment between the two renames
    target does not exist. Readers never see a partly written directory.
    """
    if not target.exists():
        os.rename(source, target)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
    os.replace(target, backup / target.name)
    os.rename(source, target)
    shutil.rmtree(backup, ignore_errors=True)


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    return path.stat().st_size
