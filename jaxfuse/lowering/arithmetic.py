"""Trigonometric, rounding, sign, floor-division and summing ops on float and plain integer tensors."""
import jax.numpy as jnp
import numpy as np
from jax import lax

from .core import register


@register("SIN")
def sin(ctx, x):
    """Sine (radians)."""
    return jnp.sin(x)


@register("COS")
def cos(ctx, x):
    """Cosine (radians)."""
    return jnp.cos(x)


def _is_integer(x) -> bool:
    return np.dtype(x.dtype).kind in "iu"


def _no_integer_zero_divisor(ctx, b) -> None:
    """LiteRT's integer kernels fail on a zero divisor; a constant one is refused here (one known
    only at run time gives XLA's value)."""
    if isinstance(b, np.ndarray) and _is_integer(b) and np.any(b == 0):
        raise ctx.error("the divisor (input 1) has a zero element; LiteRT fails with 'Division by 0'")


@register("FLOOR_DIV")
def floor_div(ctx, a, b):
    """floor(a / b), broadcasting: integers round toward -inf (-7 // 2 == -4) as LiteRT's
    floor(double(a) / b), floats are floor of the float32 quotient."""
    if _is_integer(a):
        _no_integer_zero_divisor(ctx, b)
        return jnp.floor_divide(a, b)
    return jnp.floor(a / b)


@register("FLOOR_MOD")
def floor_mod(ctx, a, b):
    """a - floor(a / b) * b with the sign of b, broadcasting: LiteRT's truncated remainder
    (C's % for integers, fmod for floats) plus b where it is non-zero and its sign differs from b's."""
    if _is_integer(a):
        _no_integer_zero_divisor(ctx, b)
        return jnp.remainder(a, b)
    truncated = jnp.fmod(a, b)
    return jnp.where((truncated != 0) & ((b < 0) != (truncated < 0)), truncated + b, truncated)


@register("CUMSUM")
def cumsum(ctx, x, axis):
    """Running sum along the scalar axis input; `exclusive` leaves out the element itself
    (starts at 0), `reverse` sums from the end."""
    (a,) = [int(v) for v in ctx.static(axis, "axis (input 1)").reshape(-1)]
    a %= x.ndim
    if ctx.opt("reverse"):
        x = jnp.flip(x, a)
    total = jnp.cumsum(x, axis=a, dtype=x.dtype)
    if ctx.opt("exclusive"):  # shifted by one, not total - x: the sums of the elements before, as LiteRT adds them
        zero = jnp.zeros_like(lax.slice_in_dim(x, 0, 1, axis=a))
        total = jnp.concatenate([zero, lax.slice_in_dim(total, 0, x.shape[a] - 1, axis=a)], axis=a)
    return jnp.flip(total, a) if ctx.opt("reverse") else total


@register("CEIL")
def ceil(ctx, x):
    """Round toward +inf."""
    return jnp.ceil(x)


@register("ROUND")
def round_(ctx, x):
    """Round to the nearest integer, halves to even (LiteRT's RoundToNearest)."""
    return jnp.round(x)


@register("SIGN")
def sign(ctx, x):
    """-1, 0 or 1 by the sign of x (0 for -0.0 and 0; NaN stays NaN)."""
    return jnp.sign(x)


@register("ADD_N")
def add_n(ctx, *xs):
    """The sum of all inputs (one shape), added left to right."""
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total
