"""Quantized (int8 / uint8 / int16) rules for type conversion and data movement.

Each rule computes what LiteRT's builtin kernel computes, integer for integer; the tests
compare every rule with LiteRT (tests/test_lower_quantized_*.py).
"""
import jax.numpy as jnp
import numpy as np

from . import fixed_point as fp
from .core import QUANTIZED, Ctx, register


def _float_value(ctx: Ctx, x) -> None:
    if np.dtype(x.dtype).kind != "f":
        raise ctx.error(f"expects a float input, got {np.dtype(x.dtype)}")


@register("DEQUANTIZE", QUANTIZED)
def dequantize_quantized(ctx, x):
    """scale * (q - zero_point) in float32, per tensor or per channel."""
    q = ctx.qparams(0)
    if ctx.outputs[0].dtype != np.float32:
        raise ctx.error(f"DEQUANTIZE to {ctx.outputs[0].dtype} is not supported (float32 only)")
    shape = [1] * x.ndim
    if q.per_channel:
        shape[q.axis] = -1
    scale = q.scale.reshape(shape)
    zero_point = q.zero_point.astype(np.int32).reshape(shape)
    return (x.astype(jnp.int32) - zero_point).astype(jnp.float32) * scale


@register("QUANTIZE", QUANTIZED)
def quantize_quantized(ctx, x):
    """float -> int: zero_point + round(x / scale), saturated. LiteRT's x86 kernel rounds
    halves to even (SSE conversion), not away from zero as its reference kernel does.
    int -> int (requantize): (q_in - zp_in) * s_in / s_out rounded by fixed-point multiplier + zp_out."""
    out = ctx.qparams(ctx.outputs[0])
    if out.per_channel:
        raise ctx.error("per-channel QUANTIZE of an activation is not supported")
    if np.dtype(x.dtype).kind == "f":
        # saturates where LiteRT's x86 conversion overflows (|x / scale| >= 2^31 wraps there)
        rounded = jnp.round(jnp.clip(x.astype(jnp.float32) / np.float32(out.s), -2.0 ** 31, 2.0 ** 31))
        with fp.x64():
            return fp.saturate(rounded.astype(jnp.int64) + out.zp, out.dtype)
    source = ctx.qparams(0)
    multiplier, shift = fp.quantize_multiplier(np.float64(source.s) / np.float64(out.s))
    with fp.x64():
        centred = x.astype(jnp.int32) - source.zp
        return fp.saturate(fp.multiply_by_quantized_multiplier(centred, multiplier, shift).astype(jnp.int64) + out.zp,
                           out.dtype)
