"""DENSIFY: a sparse constant (Tensor.sparsity) as its dense tensor.

The value of a sparse constant, as the IR gives it, already is the dense one (jaxfuse.sparsity.densify, in
numpy while the model is lowered), so the rule passes it on; the lowering reads the values the
file stores and places them where the dimension metadata says.
"""
from __future__ import annotations

from .core import QUANTIZED, register


@register("DENSIFY")
@register("DENSIFY", QUANTIZED)
def densify(ctx, x):
    """The dense value of the constant input."""
    source = ctx.inputs[0]
    if source is None or not source.is_constant:
        raise ctx.error("the input is not a constant (DENSIFY reads a sparse constant)")
    return x
