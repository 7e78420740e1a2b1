"""Quantized (int8 / uint8 / int16) comparisons, as LiteRT's comparison kernels compute them.

int8 / uint8 inputs, and int16 inputs of EQUAL and NOT_EQUAL, compare rescaled values: each
input becomes ((q - zero_point) * 2^8) * scale with the scale as a quantized multiplier
(gemmlowp rounding), and those integers are compared. That is coarse for small scales (with
scale 0.001, q = 2 and q = 3 both become 1 and compare equal) and LiteRT does exactly that.
A scale of 1 or more is refused: LiteRT aborts on 1 and shifts by a negative amount above it.
The int16 kernels of GREATER, GREATER_EQUAL, LESS and LESS_EQUAL compare the stored integers,
scales and zero points unread (the ai-edge-litert 2.3 wheel; its sources list int16 kernels
for only some of these ops).
"""
import jax.numpy as jnp
import numpy as np

from . import comparison
from . import fixed_point as fp
from .core import QUANTIZED, Ctx, register

_LEFT_SHIFT = 8  # LiteRT's ComparisonParams.left_shift for 8-bit inputs
_INT16_RESCALED = {"EQUAL", "NOT_EQUAL"}


def _rescaled(ctx: Ctx, index: int, q):
    """Input `index`'s real value in the kernel's common unit (int32)."""
    params = ctx.qparams(index)
    if params.per_channel:
        raise ctx.error(f"input {index} is quantized per channel; LiteRT's {ctx.op.type} takes one scale per tensor")
    if params.s >= 1:  # the kernel shifts by a negative amount there (undefined in C)
        raise ctx.error(f"input {index} has scale {params.s:g}; LiteRT's quantized {ctx.op.type} is defined for "
                        f"scales below 1 only")
    multiplier, shift = fp.quantize_multiplier(params.s)
    centred = (q.astype(jnp.int32) - params.zp) * (1 << _LEFT_SHIFT)
    return fp.multiply_by_quantized_multiplier(centred, multiplier, shift)


def _compare_real_values(float_rule):
    def rule(ctx, a, b):
        types = {np.dtype(a.dtype), np.dtype(b.dtype)}
        if len(types) != 1:
            raise ctx.error(f"inputs of types {', '.join(sorted(map(str, types)))}; LiteRT compares one type")
        if types == {np.dtype(np.int16)} and ctx.op.type not in _INT16_RESCALED:
            return float_rule(ctx, a, b)
        return float_rule(ctx, _rescaled(ctx, 0, a), _rescaled(ctx, 1, b))
    rule.__name__ = rule.__qualname__ = f"{float_rule.__name__}_quantized"
    rule.__doc__ = f"{float_rule.__name__} of the inputs' real values (module docstring)."
    return rule


for _op, _rule in {"GREATER": comparison.greater, "GREATER_EQUAL": comparison.greater_equal,
                   "LESS": comparison.less, "LESS_EQUAL": comparison.less_equal,
                   "EQUAL": comparison.equal, "NOT_EQUAL": comparison.not_equal}.items():
    register(_op, QUANTIZED)(_compare_real_values(_rule))
