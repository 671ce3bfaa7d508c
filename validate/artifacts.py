"""Find the converted models in a build folder and classify each by format and numeric precision.

`make convert` names every artifact after its source model, so the file name prefix distinguishes
a face re-identification model from the landmarks model in the same folder. The precision class
(float32, float16, int8) selects the tolerances in `validate.compare`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from convert import models

logger = logging.getLogger(__name__)

IR = "OpenVINO IR"
ONNX = "ONNX"
TFLITE = "TFLite"
SAVED_MODEL = "SavedModel"

FLOAT32 = "float32"
FLOAT16 = "float16"
INT8 = "int8"

_SUFFIX_FORMATS = {".onnx": ONNX, ".tflite": TFLITE}

# Name parts of quantized files: "int8" from this toolkit, "quant" from onnx2tf's
# "_integer_quant", "_full_integer_quant" and "_dynamic_range_quant" outputs.
_INT8_NAME_PARTS = ("int8", "quant")
_FLOAT16_NAME_PARTS = ("float16", "fp16")


class ArtifactError(Exception):
    """Raised when a build folder is missing or contains no artifact that the harness can validate."""


@dataclass(frozen=True)
class Artifact:
    """One model file or SavedModel folder, with its format and precision class.

    `source_precision` is the IR precision that the ONNX metadata records, when it records one.
    """

    path: Path
    format: str
    precision_class: str
    source_precision: str | None = None

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class ArtifactSet:
    """The artifacts to validate, sorted by name, and the files skipped with the reason."""

    artifacts: tuple[Artifact, ...]
    skipped: tuple[tuple[Path, str], ...] = field(default=())


def find_artifacts(folder: Path, precision: str, model: str = models.REIDENTIFICATION) -> ArtifactSet:
    """List the ONNX, TFLite and SavedModel artifacts of `model` in `folder`.

    Raises ArtifactError, with the command that builds them for `precision`, when the folder is
    missing or contains none of them.
    """
    folder = Path(folder)
    build_hint = (f"Run `make convert PRECISION={precision}` to build them, "
                  f"or pass --artifacts DIR with a folder of converted models.")
    if not folder.is_dir():
        raise ArtifactError(f"No artifacts found: folder {folder} does not exist. {build_hint}")

    artifacts = []
    skipped = []
    for path in sorted(folder.iterdir()):
        artifact_format = artifact_format_of(path)
        if artifact_format is None or path.name.startswith("."):
            continue
        if not path.name.startswith(model):
            skipped.append((path, f"not a {model} model"))
            continue
        metadata = read_metadata(path, artifact_format)
        artifacts.append(Artifact(path, artifact_format, precision_class(path.name, metadata),
                                  metadata.get("source_precision")))

    if not artifacts:
        raise ArtifactError(f"No {model} artifacts found in {folder}. {build_hint}")
    return ArtifactSet(tuple(artifacts), tuple(skipped))


def reference_artifact(xml: Path, precision: str) -> Artifact:
    """Describe the OMZ IR that every artifact is compared against.

    OpenVINO decompresses FP16 weights to float32, and the harness compiles with float32 inference,
    so the FP32 and FP16 IRs are float32 references. The FP16-INT8 IR is an int8 one.
    """
    reference_class = INT8 if "INT8" in precision.upper() else FLOAT32
    return Artifact(Path(xml), IR, reference_class)


def artifact_format_of(path: Path) -> str | None:
    """Return the artifact format of a path, or None for files that are no model."""
    if path.is_dir():
        return SAVED_MODEL if (path / "saved_model.pb").is_file() else None
    return _SUFFIX_FORMATS.get(path.suffix.lower())


def precision_class(name: str, metadata: Mapping[str, str]) -> str:
    """Classify an artifact as int8, float16 or float32 from its file name and metadata.

    int8: "int8" or "quant" in the name, a metadata key that mentions quantization, or a metadata
    value that mentions int8 (an ONNX model exported from the FP16-INT8 IR records
    source_precision=FP16-INT8). float16: "float16" or "fp16" in the name. Anything else is float32.
    """
    lowered = name.lower()
    if any(part in lowered for part in _INT8_NAME_PARTS):
        return INT8
    for key, value in metadata.items():
        if "quantiz" in key.lower() or "int8" in value.lower():
            return INT8
    if any(part in lowered for part in _FLOAT16_NAME_PARTS):
        return FLOAT16
    return FLOAT32


def read_metadata(path: Path, artifact_format: str) -> dict[str, str]:
    """Return an artifact's metadata as text: ONNX metadata_props, or TFLite metadata entries.

    A file that cannot be parsed gives an empty dict. The runtimes then report it in their rows.
    SavedModels carry no such metadata and also give an empty dict.
    """
    try:
        if artifact_format == ONNX:
            return _onnx_metadata(path)
        if artifact_format == TFLITE:
            return _tflite_metadata(path)
    # The flatbuffers reader does no bounds checks, so a truncated TFLite file surfaces as any of
    # several Python errors. Each of them only means that the metadata is unreadable.
    except Exception as error:  # noqa: BLE001
        logger.debug("Cannot read the metadata of %s: %s", path, error)
    return {}


def _onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {entry.key: entry.value for entry in model.metadata_props}


def _tflite_model(path: Path):
    from ai_edge_litert import schema_py_generated as schema

    return schema.Model.GetRootAs(path.read_bytes(), 0)


def _tflite_metadata(path: Path) -> dict[str, str]:
    model = _tflite_model(path)
    metadata = {}
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        data = model.Buffers(entry.Buffer()).DataAsNumpy()
        raw = bytes(data) if not isinstance(data, int) else b""
        # Text entries such as min_runtime_version are NUL-padded strings. Binary entries such as
        # CONVERSION_METADATA are kept by name only.
        try:
            value = raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            value = ""
        metadata[entry.Name().decode("utf-8")] = value
    return metadata


def tflite_signature_names(path: Path) -> dict[str, str]:
    """Map the tensor names of a TFLite model's first SignatureDef to the signature's input and output names.

    OpenVINO's TFLite frontend names ports after tensors ("serving_default_images:0",
    "PartitionedCall:1"), while LiteRT and the ONNX models use the signature names ("images",
    "similarity"). Returns an empty dict for a model without a SignatureDef.
    """
    model = _tflite_model(path)
    if model.SignatureDefsLength() == 0:
        return {}

    signature = model.SignatureDefs(0)
    subgraph = model.Subgraphs(signature.SubgraphIndex())
    names = {}
    entries = [signature.Inputs(i) for i in range(signature.InputsLength())]
    entries += [signature.Outputs(i) for i in range(signature.OutputsLength())]
    for entry in entries:
        tensor_name = subgraph.Tensors(entry.TensorIndex()).Name().decode("utf-8")
        names[tensor_name] = entry.Name().decode("utf-8")
    return names
