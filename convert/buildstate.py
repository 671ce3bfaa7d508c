"""Build targets and the record that lets a second `make convert` skip what is already up to date.

A target is up to date when its key (settings, the content digests of its sources and of the
converter's own code) matches the key recorded when it was built, and every output still has the
content digest recorded then.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from convert.finalize import write_atomic

log = logging.getLogger(__name__)

STATE_FILE = ".build-state.json"
_CODE_DIRS = ("convert", "postprocess")
_TOOL_PACKAGES = ("openvino", "onnx", "onnxsim", "onnxruntime", "onnx2tf", "tensorflow", "tf_keras")


@dataclass
class Target:
    """One conversion step: the outputs it writes into the build folder and what they depend on."""

    description: str
    outputs: tuple[str, ...]
    sources: tuple[Path, ...]
    settings: dict
    run: Callable[[], None]
    extra_key: str = field(default="")


def digest_path(path: Path) -> str:
    """SHA-256 of a file, or of a folder's relative file names and contents."""
    sha = hashlib.sha256()
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            sha.update(child.relative_to(path).as_posix().encode())
            sha.update(hashlib.sha256(child.read_bytes()).digest())
    else:
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()


def code_digest() -> str:
    """Digest of the converter's Python sources and the versions of the tools it drives.

    A change to either rebuilds the artifacts.
    """
    root = Path(__file__).resolve().parent.parent
    sha = hashlib.sha256()
    for package in _TOOL_PACKAGES:
        sha.update(f"{package}=={importlib.metadata.version(package)}".encode())
    for directory in _CODE_DIRS:
        for source in sorted((root / directory).rglob("*.py")):
            sha.update(source.relative_to(root).as_posix().encode())
            sha.update(source.read_bytes())
    return sha.hexdigest()


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


class BuildState:
    """The per-folder record of built targets, stored as JSON next to the artifacts."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / STATE_FILE
        try:
            self.entries: dict = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.entries = {}
        self._code = code_digest()

    def key(self, target: Target) -> str:
        sha = hashlib.sha256()
        sha.update(json.dumps(target.settings, sort_keys=True).encode())
        for source in target.sources:
            sha.update(digest_path(source).encode())
        sha.update(self._code.encode())
        sha.update(target.extra_key.encode())
        return sha.hexdigest()

    def is_current(self, target: Target, key: str) -> bool:
        entry = self.entries.get(target.outputs[0])
        if entry is None or entry.get("key") != key:
            return False
        for name in target.outputs:
            path = self.folder / name
            if not path.exists() or self.entries.get(name, {}).get("digest") != digest_path(path):
                return False
        return True

    def record(self, target: Target, key: str) -> None:
        for name in target.outputs:
            self.entries[name] = {"key": key, "digest": digest_path(self.folder / name)}
        write_atomic(self.path, json.dumps(self.entries, indent=1, sort_keys=True).encode())


def run_targets(folder: Path, targets: list[Target]) -> list[str]:
    """Build every target that is not up to date; return the names of the outputs written."""
    state = BuildState(folder)
    written: list[str] = []

    for target in targets:
        key = state.key(target)
        if state.is_current(target, key):
            log.info("up to date: %s", ", ".join(target.outputs))
            continue

        log.info("building %s", target.description)
        started = time.perf_counter()
        target.run()
        elapsed = time.perf_counter() - started
        for name in target.outputs:
            log.info("wrote %s (%.1f KiB) in %.1f s", folder / name, size_of(folder / name) / 1024, elapsed)
        state.record(target, key)
        written.extend(target.outputs)

    if written:
        log.info("%d artifact(s) written to %s", len(written), folder)
    else:
        log.info("nothing to convert: all %d artifact(s) in %s are up to date",
                 sum(len(t.outputs) for t in targets), folder)
    return written
