"""The interface every runtime implements, and the embedding and similarity calls built on it.

A runtime module defines a `Runtime` that loads an artifact into a `Session`. A session lists its
inputs (name and shape, None for a dynamic dimension) and its output names, and runs a dict of
named arrays. `Session.embed` and `Session.similarity` turn images into those runs for each of the
three model interfaces, the same way on every runtime:

- plain model: one image input, one embedding output. The similarity is computed here.
- pair head: `base_images` and `target_images` in, `base_features` and `similarity` out.
- gallery head: `images` and `gallery_features` in, `features` and `similarity` out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from convert import models
from postprocess.heads import GALLERY_HEAD, PAIR_HEAD
from validate.compare import cosine_similarity
from validate.images import NCHW, NHWC, FaceImage, to_tensor

PLAIN = "plain"
PAIR = "pair head"
GALLERY = "gallery head"


class InterfaceError(ValueError):
    """Raised when a model's inputs and outputs match none of the three interfaces."""


@dataclass(frozen=True)
class TensorSpec:
    """A model input: its name and shape, with None for a dynamic dimension."""

    name: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class Interface:
    """The names of the inputs and outputs that carry a model's images, embeddings and similarity."""

    kind: str
    image_input: str
    features_output: str
    second_input: str | None = None
    similarity_output: str | None = None


class Runtime(ABC):
    """A runtime that can load artifacts of the formats it lists."""

    name: ClassVar[str]
    formats: ClassVar[frozenset[str]]

    @abstractmethod
    def load(self, path: Path) -> Session:
        """Load and compile the artifact at `path` for float32 inference on the CPU."""


class Session(ABC):
    """One artifact loaded on one runtime."""

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[str]) -> None:
        self.inputs = {spec.name: spec for spec in inputs}
        self.outputs = tuple(outputs)
        self.interface = detect_interface(self.inputs, self.outputs)

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on named float32 arrays and return every output by name."""

    def embed(self, images: Sequence[FaceImage]) -> np.ndarray:
        """Return the embedding of each image as [len(images), D]."""
        return self.embed_tensor(self._image_tensor(self.interface.image_input, images), self.interface_layout())

    def embed_tensor(self, tensor: np.ndarray, layout: str = NCHW) -> np.ndarray:
        """Return the embeddings [B, D] of a float32 batch already at the model's input size.

        `tensor` is NCHW unless `layout` names another layout. It is transposed to the layout of the
        model's image input, so callers can preprocess once for every runtime.
        """
        interface = self.interface
        model_layout, height, width = image_layout(self.inputs[interface.image_input])
        if layout != model_layout:
            tensor = np.ascontiguousarray(tensor.transpose(0, 2, 3, 1) if layout == NCHW else tensor.transpose(0, 3, 1, 2))
        spatial = tensor.shape[2:] if model_layout == NCHW else tensor.shape[1:3]
        if tuple(spatial) != (height, width):
            raise InterfaceError(f"input {interface.image_input} takes {height}x{width} images, got {tuple(spatial)}")
        if interface.kind == PLAIN:
            return self._run_tensor(tensor, {}, interface.features_output)

        if interface.kind == PAIR:
            # The pair head needs target images to run, and `base_features` does not depend on them.
            target_count = self._fixed_batch(interface.second_input) or 1
            second = tensor[:target_count]
            if len(second) < target_count:
                second = np.repeat(tensor[:1], target_count, axis=0)
        else:
            second = self._placeholder_gallery()
        return self._run_tensor(tensor, {interface.second_input: second}, interface.features_output)

    def interface_layout(self) -> str:
        """Layout (NCHW or NHWC) of the model's image input."""
        return image_layout(self.inputs[self.interface.image_input])[0]

    def similarity(self, base_images: Sequence[FaceImage], target_images: Sequence[FaceImage]) -> np.ndarray:
        """Return the cosine similarity, clipped to [0, 1], of every base image to every target as [N, M].

        A plain model's embeddings are compared here. A head computes the similarity in its graph.
        The gallery head gets its own embeddings of the targets as the gallery, as an application
        that enrols faces with the same model would.
        """
        interface = self.interface
        if interface.kind == PLAIN:
            return cosine_similarity(self.embed(base_images), self.embed(target_images))

        if interface.kind == PAIR:
            second = self._image_tensor(interface.second_input, target_images)
        else:
            second = self.embed(target_images).astype(np.float32)
        self._check_second_batch(second)
        similarity = self._run_images(base_images, {interface.second_input: second}, interface.similarity_output)
        # A head built with --unclipped returns [-1, 1]; the table compares clipped values, like the model card.
        return np.clip(similarity, 0.0, 1.0)

    def _run_images(self, images: Sequence[FaceImage], extra: dict[str, np.ndarray], output: str) -> np.ndarray:
        return self._run_tensor(self._image_tensor(self.interface.image_input, images), extra, output)

    def _run_tensor(self, tensor: np.ndarray, extra: dict[str, np.ndarray], output: str) -> np.ndarray:
        """Feed `tensor` to the image input, in batches its shape allows, and stack `output`."""
        name = self.interface.image_input
        batch = self._fixed_batch(name) or len(tensor)

        results = []
        for start in range(0, len(tensor), batch):
            chunk = tensor[start:start + batch]
            if len(chunk) < batch:
                raise InterfaceError(f"input {name} takes batches of exactly {batch}, got {len(chunk)} images")
            outputs = self.run({name: chunk, **extra})
            results.append(np.asarray(outputs[output], dtype=np.float32).reshape(len(chunk), -1))
        return np.concatenate(results)

    def _image_tensor(self, name: str, images: Sequence[FaceImage]) -> np.ndarray:
        layout, height, width = image_layout(self.inputs[name])
        return to_tensor(images, height, width, layout)

    def _fixed_batch(self, name: str) -> int | None:
        return self.inputs[name].shape[0]

    def _placeholder_gallery(self) -> np.ndarray:
        # Ones instead of zeros: a zero embedding has no direction, and a head without an epsilon
        # in its L2 norm would divide by zero. Only the `features` output is read afterwards.
        spec = self.inputs[self.interface.second_input]
        rows = spec.shape[0] or 1
        size = spec.shape[1] or models.EMBEDDING_SIZE
        return np.ones((rows, size), dtype=np.float32)

    def _check_second_batch(self, second: np.ndarray) -> None:
        expected = self._fixed_batch(self.interface.second_input)
        if expected is not None and expected != len(second):
            raise InterfaceError(
                f"input {self.interface.second_input} takes exactly {expected} rows, got {len(second)}"
            )


def detect_interface(inputs: dict[str, TensorSpec], outputs: Sequence[str]) -> Interface:
    """Tell a plain model, a pair head and a gallery head apart by their input and output names."""
    for kind, head in ((PAIR, PAIR_HEAD), (GALLERY, GALLERY_HEAD)):
        if set(inputs) == {head.first_input, head.second_input} and {head.features, head.similarity} <= set(outputs):
            return Interface(kind, head.first_input, head.features, head.second_input, head.similarity)

    if len(inputs) == 1:
        (image_input,) = inputs
        if len(outputs) == 1:
            return Interface(PLAIN, image_input, outputs[0])
        if "features" in outputs:
            return Interface(PLAIN, image_input, "features")

    raise InterfaceError(
        f"unrecognised model interface: inputs {sorted(inputs)}, outputs {list(outputs)}. Expected one image "
        f"input, or the inputs of the pair head ({PAIR_HEAD.first_input}, {PAIR_HEAD.second_input}) "
        f"or of the gallery head ({GALLERY_HEAD.first_input}, {GALLERY_HEAD.second_input})"
    )


def image_layout(spec: TensorSpec) -> tuple[str, int, int]:
    """Return (layout, height, width) of an image input shaped [N,3,H,W] or [N,H,W,3]."""
    shape = spec.shape
    if len(shape) == 4 and shape[1] == 3 and shape[2] and shape[3]:
        return NCHW, shape[2], shape[3]
    if len(shape) == 4 and shape[3] == 3 and shape[1] and shape[2]:
        return NHWC, shape[1], shape[2]
    printable = ["?" if dim is None else dim for dim in shape]
    raise InterfaceError(
        f"input {spec.name} has shape {printable}; expected [N,3,H,W] (NCHW) or [N,H,W,3] (NHWC) with fixed H and W"
    )
