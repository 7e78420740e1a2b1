"""Reductions over constant axes (MEAN, SUM, ...) and ARG_MAX / ARG_MIN."""
import jax
import jax.numpy as jnp

from .core import Ctx, register


def _axes(ctx: Ctx, x, axes) -> tuple[int, ...]:
    """The static axes input (scalar or 1-D, negative allowed, repeats ignored) as sorted positive axes."""
    values = ctx.static(axes, "axes (input 1)").reshape(-1)
    return tuple(sorted({int(a) % x.ndim for a in values}))


@register("MEAN")
def mean(ctx, x, axes):
    """Mean over the axes input; keepDims keeps them as size 1."""
    return jnp.mean(x, axis=_axes(ctx, x, axes), keepdims=bool(ctx.opt("keepDims")))


@register("SUM")
def sum_(ctx, x, axes):
    """Sum over the axes input; keepDims keeps them as size 1."""
    return jnp.sum(x, axis=_axes(ctx, x, axes), keepdims=bool(ctx.opt("keepDims")))


@register("REDUCE_MAX")
def reduce_max(ctx, x, axes):
    """Maximum over the axes input; keepDims keeps them as size 1."""
    return jnp.max(x, axis=_axes(ctx, x, axes), keepdims=bool(ctx.opt("keepDims")))


@register("REDUCE_MIN")
def reduce_min(ctx, x, axes):
    """Minimum over the axes input; keepDims keeps them as size 1."""
    return jnp.min(x, axis=_axes(ctx, x, axes), keepdims=bool(ctx.opt("keepDims")))


@register("REDUCE_PROD")
def reduce_prod(ctx, x, axes):
    """Product over the axes input; keepDims keeps them as size 1."""
    return jnp.prod(x, axis=_axes(ctx, x, axes), keepdims=bool(ctx.opt("keepDims")))


def _index_dtype(ctx: Ctx):
    return jax.dtypes.canonicalize_dtype(ctx.outputs[0].dtype)


@register("ARG_MAX")
def arg_max(ctx, x, axis):
    """Index of the first maximum along the (single) axis input, in the output tensor's integer type."""
    (a,) = _axes(ctx, x, axis)
    return jnp.argmax(x, axis=a).astype(_index_dtype(ctx))


@register("ARG_MIN")
def arg_min(ctx, x, axis):
    """Index of the first minimum along the (single) axis input, in the output tensor's integer type."""
    (a,) = _axes(ctx, x, axis)
    return jnp.argmin(x, axis=a).astype(_index_dtype(ctx))
