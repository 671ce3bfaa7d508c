"""TensorFlow for SavedModel folders, through their serving signature."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from validate.artifacts import SAVED_MODEL
from validate.runtimes.base import Runtime, Session, TensorSpec

SERVING_SIGNATURE = "serving_default"


class TensorFlowRuntime(Runtime):
    name = "TensorFlow"
    formats = frozenset({SAVED_MODEL})

    def load(self, path: Path) -> Session:
        # TensorFlow 2.19 logs its failed CUDA probing on a CPU-only machine at ERROR level, a dozen
        # lines that would bury the tables. Errors that matter here surface as Python exceptions.
        # The variable is read when TensorFlow is first imported, and a value the user set wins.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        signatures = dict(loaded.signatures)
        if not signatures:
            raise ValueError(f"{path} has no signature; export it with a {SERVING_SIGNATURE} signature")
        signature = signatures.get(SERVING_SIGNATURE) or next(iter(signatures.values()))
        # The loaded object owns the variables that the signature reads, so the session keeps it.
        return TensorFlowSession(loaded, signature)


class TensorFlowSession(Session):
    def __init__(self, loaded, signature) -> None:
        self._loaded = loaded
        self._signature = signature
        _, input_specs = signature.structured_input_signature
        inputs = [TensorSpec(name, tuple(spec.shape.as_list())) for name, spec in input_specs.items()]
        super().__init__(inputs, list(signature.structured_outputs))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        results = self._signature(**{name: tf.constant(value) for name, value in feeds.items()})
        return {name: value.numpy() for name, value in results.items()}
