"""OpenVINO op handlers, one per op type, grouped by family.

Importing this package registers every handler in `convert.registry.HANDLERS`.
"""

from convert.ops import activation, elementwise, nn, tensor  # noqa: F401
