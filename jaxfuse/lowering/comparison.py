"""Comparison, logical and select ops on float, plain integer and bool tensors.

Comparisons broadcast their two inputs (numpy rules) and give bool; LiteRT compares the
stored values, so int32 / int64 inputs compare exactly and float32 ones as IEEE floats
(NaN compares unequal to everything). The quantized (int8 / uint8 / int16) forms, which
rescale their inputs first, are in quantized_shape.py.
"""
import jax.numpy as jnp

from .core import register


@register("GREATER")
def greater(ctx, a, b):
    """a > b, broadcasting."""
    return jnp.greater(a, b)


@register("GREATER_EQUAL")
def greater_equal(ctx, a, b):
    """a >= b, broadcasting."""
    return jnp.greater_equal(a, b)


@register("LESS")
def less(ctx, a, b):
    """a < b, broadcasting."""
    return jnp.less(a, b)


@register("LESS_EQUAL")
def less_equal(ctx, a, b):
    """a <= b, broadcasting."""
    return jnp.less_equal(a, b)


@register("EQUAL")
def equal(ctx, a, b):
    """a == b, broadcasting."""
    return jnp.equal(a, b)


@register("NOT_EQUAL")
def not_equal(ctx, a, b):
    """a != b, broadcasting."""
    return jnp.not_equal(a, b)


@register("LOGICAL_AND")
def logical_and(ctx, a, b):
    """a and b of bool tensors, broadcasting."""
    return jnp.logical_and(a, b)


@register("LOGICAL_OR")
def logical_or(ctx, a, b):
    """a or b of bool tensors, broadcasting."""
    return jnp.logical_or(a, b)


@register("LOGICAL_NOT")
def logical_not(ctx, x):
    """not x of a bool tensor."""
    return jnp.logical_not(x)


@register("SELECT")
def select(ctx, condition, x, y):
    """x where condition else y, all of one shape; a rank-1 condition with x of higher rank
    picks whole slices along x's first axis (TF 1's Select, as LiteRT's SELECT kernel)."""
    if condition.ndim == 1 and x.ndim > 1:
        if condition.shape[0] != x.shape[0]:
            raise ctx.error(f"rank-1 condition of {condition.shape[0]} elements for inputs whose first axis "
                            f"has {x.shape[0]}")
        condition = condition.reshape(condition.shape + (1,) * (x.ndim - 1))
    elif condition.shape != x.shape or x.shape != y.shape:
        raise ctx.error(f"SELECT needs condition and inputs of one shape (got {list(condition.shape)}, "
                        f"{list(x.shape)}, {list(y.shape)}); broadcasting is SELECT_V2's")
    return jnp.where(condition, x, y)


@register("SELECT_V2")
def select_v2(ctx, condition, x, y):
    """x where condition else y, the three broadcast against each other."""
    return jnp.where(condition, x, y)
