"""The runtimes that run artifacts, one module each.

Every module in this package except `base` defines one `Runtime` subclass, and `RUNTIMES` contains one
instance of each, ordered by module name. Adding a runtime means adding a module. The runtime
libraries themselves are imported only when a runtime loads its first artifact.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from validate.runtimes.base import Runtime, Session


def _discover() -> tuple[Runtime, ...]:
    runtimes = []
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if module_info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Runtime) and cls is not Runtime and cls.__module__ == module.__name__:
                runtimes.append(cls())
    return tuple(runtimes)


RUNTIMES: tuple[Runtime, ...] = _discover()


def runtimes_for(artifact_format: str) -> list[Runtime]:
    """Return the runtimes that load `artifact_format`, in the order of RUNTIMES."""
    return [runtime for runtime in RUNTIMES if artifact_format in runtime.formats]


__all__ = ["RUNTIMES", "Runtime", "Session", "runtimes_for"]
