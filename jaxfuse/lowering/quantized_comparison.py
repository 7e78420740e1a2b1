"""Quantized (int8 / uint8 / int16) comparisons, as LiteRT's comparison kernels compute them.

int8 / uint8 compare real values: each input is rescaled to a common fixed-point unit,
((q - zero_point) * 2^8) * scale as a quantized multiplier (gemmlowp rounding), and the
integers are compared. Two inputs quantized alike thus compare exactly as their stored
integers; inputs quantized differently compare within that rescaling's rounding.
int16 inputs are compared as stored integers, scales unread, and only EQUAL, GREATER_EQUAL and
LESS have int16 kernels (as in LiteRT).
"""
import jax.numpy as jnp
import numpy as np

from . import comparison
from . import fixed_point as fp
from .core import QUANTIZED, Ctx, register

_LEFT_SHIFT = 8  # LiteRT's ComparisonParams.left_shift for 8-bit inputs
_INT16_KERNELS = {"EQUAL", "GREATER_EQUAL", "LESS"}


def _rescaled(ctx: Ctx, index: int, q):
    """Input `index`'s real value in the kernel's common unit (int32)."""
    params = ctx.qparams(index)
    if params.per_channel:
        raise ctx.error(f"input {index} is quantized per channel; LiteRT's {ctx.op.type} takes one scale per tensor")
    if params.s >= 1:  # the kernel shifts by a negative amount there (undefined in C)
        raise ctx.error(f"input {index} has scale {params.s:g}; LiteRT's 8-bit {ctx.op.type} is defined for scales "
                        f"below 1 only")
    multiplier, shift = fp.quantize_multiplier(params.s)
    centred = (q.astype(jnp.int32) - params.zp) * (1 << _LEFT_SHIFT)
    return fp.multiply_by_quantized_multiplier(centred, multiplier, shift)


def _compare_real_values(float_rule):
    def rule(ctx, a, b):
        types = {np.dtype(a.dtype), np.dtype(b.dtype)}
        if len(types) != 1:
            raise ctx.error(f"inputs of types {', '.join(sorted(map(str, types)))}; LiteRT compares one type")
        if types == {np.dtype(np.int16)}:
            if ctx.op.type not in _INT16_KERNELS:
                raise ctx.error(f"LiteRT's {ctx.op.type} has no int16 kernel")
            return float_rule(ctx, a, b)
        return float_rule(ctx, _rescaled(ctx, 0, a), _rescaled(ctx, 1, b))
    rule.__name__ = rule.__qualname__ = f"{float_rule.__name__}_quantized"
    rule.__doc__ = f"{float_rule.__name__} of the inputs' real values (module docstring)."
    return rule


for _op, _rule in {"GREATER": comparison.greater, "GREATER_EQUAL": comparison.greater_equal,
                   "LESS": comparison.less, "LESS_EQUAL": comparison.less_equal,
                   "EQUAL": comparison.equal, "NOT_EQUAL": comparison.not_equal}.items():
    register(_op, QUANTIZED)(_compare_real_values(_rule))
