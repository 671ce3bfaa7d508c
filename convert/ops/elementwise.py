"""Binary element-wise arithmetic with NumPy-style broadcasting."""

import numpy as np

from convert.registry import ExportContext, UnsupportedAttributeError, register

_NUMPY_FUNCTIONS = {"Add": np.add, "Multiply": np.multiply, "Subtract": np.subtract, "Divide": np.divide}
_ONNX_OP_TYPES = {"Add": "Add", "Multiply": "Mul", "Subtract": "Sub", "Divide": "Div"}


@register("Add", "Multiply", "Subtract", "Divide")
def binary(node, ctx: ExportContext) -> None:
    op_type = node.get_type_name()
    attributes = node.get_attributes()
    # "none" requires equal shapes, which ONNX accepts as a special case of NumPy broadcasting.
    # "pdpd" (PaddlePaddle's axis-aligned broadcasting) has no ONNX equivalent.
    if attributes.get("auto_broadcast", "numpy") not in ("numpy", "none"):
        raise UnsupportedAttributeError(node, "auto_broadcast", attributes["auto_broadcast"])
    if op_type == "Divide" and attributes.get("m_pythondiv", False):
        if node.get_output_element_type(0).is_integral():
            raise UnsupportedAttributeError(node, "m_pythondiv", True)

    if ctx.all_inputs_constant(node):
        left, right = ctx.constant(node, 0), ctx.constant(node, 1)
        folded = _NUMPY_FUNCTIONS[op_type](left, right).astype(np.result_type(left, right))
        ctx.set_constant(node, folded)
        return

    ctx.add_node(
        _ONNX_OP_TYPES[op_type],
        [ctx.tensor(node, 0), ctx.tensor(node, 1)],
        [ctx.output_name(node)],
        node.get_friendly_name(),
    )
