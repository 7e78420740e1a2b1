"""Shape, layout, indexing, padding, type and resize ops."""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .activation import no_fused_activation
from .core import Ctx, register


def _axis(axis: int, ndim: int) -> int:
    return int(axis) % ndim


def _ints(ctx: Ctx, value, what: str) -> list[int]:
    return [int(v) for v in ctx.static(value, what).reshape(-1)]


def _cast(x, dtype):
    """x as `dtype` (a numpy value stays numpy; JAX narrows 64-bit types when x64 is off);
    complex to real keeps the real part, as LiteRT's CAST does."""
    if np.dtype(x.dtype).kind == "c" and np.dtype(dtype).kind != "c":
        x = x.real
    if isinstance(x, np.ndarray):
        return x.astype(dtype)
    return x.astype(jax.dtypes.canonicalize_dtype(dtype))


@register("RESHAPE")
def reshape(ctx, x, shape=None):
    """x with the shape from input 1 when present, else from the newShape option (one -1 inferred)."""
    if shape is not None:
        target = _ints(ctx, shape, "shape (input 1)")
    elif ctx.op.options.get("newShape") is not None:
        target = [int(d) for d in ctx.op.options["newShape"]]
    else:
        raise ctx.error("no shape input and no newShape option")
    return jnp.reshape(x, target)


@register("SQUEEZE")
def squeeze(ctx, x):
    """Drop the size-1 axes listed in squeezeDims (negative allowed), or all size-1 axes when it is empty."""
    dims = ctx.opt("squeezeDims") or [i for i, d in enumerate(x.shape) if d == 1]
    return jnp.squeeze(x, tuple(_axis(d, x.ndim) for d in dims))


@register("EXPAND_DIMS")
def expand_dims(ctx, x, axis):
    """Insert a size-1 axis at the axis input (negative counts from the end of the result)."""
    (a,) = _ints(ctx, axis, "axis (input 1)")
    return jnp.expand_dims(x, _axis(a, x.ndim + 1))


@register("TRANSPOSE")
def transpose(ctx, x, perm):
    """Permute axes: output axis i is input axis perm[i]."""
    return jnp.transpose(x, _ints(ctx, perm, "perm (input 1)"))


@register("CONCATENATION")
def concatenation(ctx, *xs):
    """Join the inputs along `axis` (negative allowed); a fused activation is refused (see no_fused_activation)."""
    no_fused_activation(ctx)
    return jnp.concatenate(xs, axis=_axis(ctx.opt("axis"), xs[0].ndim))


@register("PACK")
def pack(ctx, *xs):
    """Stack the inputs along a new axis `axis` (negative counts from the end of the result)."""
    return jnp.stack(xs, axis=_axis(ctx.opt("axis"), xs[0].ndim + 1))


@register("UNPACK")
def unpack(ctx, x):
    """Split x into its slices along `axis`, dropping that axis."""
    a = _axis(ctx.opt("axis"), x.ndim)
    return tuple(lax.index_in_dim(x, i, a, keepdims=False) for i in range(x.shape[a]))


@register("SPLIT")
def split(ctx, axis, x):
    """Inputs (axis, x): numSplits equal parts along the axis."""
    (a,) = _ints(ctx, axis, "axis (input 0)")
    return tuple(jnp.split(x, ctx.opt("numSplits"), axis=_axis(a, x.ndim)))


@register("SPLIT_V")
def split_v(ctx, x, size_splits, axis):
    """Inputs (x, size_splits, axis): parts of the given sizes along the axis (one size may be -1)."""
    (a,) = _ints(ctx, axis, "axis (input 2)")
    a = _axis(a, x.ndim)
    sizes = _ints(ctx, size_splits, "size_splits (input 1)")
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[a] - (sum(sizes) + 1)
    return tuple(jnp.split(x, np.cumsum(sizes)[:-1], axis=a))


@register("SLICE")
def slice_(ctx, x, begin, size):
    """x[begin : begin + size] per axis; size -1 means to the end."""
    begin = _ints(ctx, begin, "begin (input 1)")
    size = _ints(ctx, size, "size (input 2)")
    return x[tuple(slice(b, d if s == -1 else b + s) for b, s, d in zip(begin, size, x.shape))]


@register("STRIDED_SLICE")
def strided_slice(ctx, x, begin, end, strides):
    """Python-style x[b:e:s, ...] per axis with begin/end/ellipsis/new-axis/shrink-axis bit masks."""
    begin = _ints(ctx, begin, "begin (input 1)")
    end = _ints(ctx, end, "end (input 2)")
    strides = _ints(ctx, strides, "strides (input 3)")
    if ctx.opt("offset"):
        end = [b + e for b, e in zip(begin, end)]
    masks = {name: ctx.opt(name) for name in ("beginMask", "endMask", "ellipsisMask", "newAxisMask",
                                                 "shrinkAxisMask")}
    index = []
    for i, (b, e, s) in enumerate(zip(begin, end, strides)):
        bit = 1 << i
        if masks["ellipsisMask"] & bit:
            index.append(Ellipsis)
        elif masks["newAxisMask"] & bit:
            index.append(None)
        elif masks["shrinkAxisMask"] & bit:
            index.append(b)
        else:
            index.append(slice(None if masks["beginMask"] & bit else b, None if masks["endMask"] & bit else e, s))
    return x[tuple(index)]


@register("GATHER")
def gather(ctx, x, indices):
    """x.take(indices, axis), with the first batchDims axes of x and indices matched one to one."""
    batch = ctx.opt("batchDims")
    batch = batch + np.ndim(indices) if batch < 0 else batch
    axis = _axis(ctx.opt("axis"), x.ndim)

    def take(params, idx):
        return jnp.take(params, idx, axis=axis - batch)

    for _ in range(batch):
        take = jax.vmap(take)
    return take(x, indices)


def _paddings(ctx: Ctx, x, paddings) -> list[tuple[int, int]]:
    p = ctx.static(paddings, "paddings (input 1)").reshape(x.ndim, 2)
    return [(int(lo), int(hi)) for lo, hi in p]


@register("PAD")
def pad(ctx, x, paddings):
    """Zero padding: paddings[i] = (before, after) for axis i."""
    return lax.pad(x, np.zeros((), x.dtype), [(lo, hi, 0) for lo, hi in _paddings(ctx, x, paddings)])


@register("PADV2")
def padv2(ctx, x, paddings, value):
    """Constant padding with the scalar input 2: paddings[i] = (before, after) for axis i."""
    value = jnp.reshape(value, ()).astype(x.dtype)
    return lax.pad(x, value, [(lo, hi, 0) for lo, hi in _paddings(ctx, x, paddings)])


@register("MIRROR_PAD")
def mirror_pad(ctx, x, paddings):
    """Mirror padding: mode 0 REFLECT (edge not repeated), 1 SYMMETRIC (edge repeated)."""
    mode = {0: "reflect", 1: "symmetric"}.get(ctx.opt("mode"))
    if mode is None:
        raise ctx.error(f"unknown mirror pad mode {ctx.opt('mode')}")
    return jnp.pad(x, _paddings(ctx, x, paddings), mode=mode)


@register("SHAPE")
def shape(ctx, x):
    """The (static) shape of x as a 1-D array of the output tensor's integer type."""
    return np.asarray(x.shape, dtype=ctx.outputs[0].dtype)


@register("CAST")
def cast(ctx, x):
    """x converted to the output tensor's type (float to int truncates toward zero, complex to
    real keeps the real part)."""
    return _cast(x, ctx.outputs[0].dtype)


@register("DEQUANTIZE")
def dequantize(ctx, x):
    """float16 (weights) to float32; quantized integer inputs are refused before lowering."""
    if np.dtype(x.dtype).kind != "f":
        raise ctx.error(f"DEQUANTIZE of {np.dtype(x.dtype)} input without quantization parameters")
    return _cast(x, ctx.outputs[0].dtype)


def _resize_scale(in_size: int, out_size: int, align_corners: bool) -> np.float32:
    if align_corners and out_size > 1:
        return np.float32(in_size - 1) / np.float32(out_size - 1)
    return np.float32(in_size) / np.float32(out_size)


def _bilinear_axis(in_size: int, out_size: int, align_corners: bool, half_pixel: bool):
    """TFLite's per-axis source positions: lower/upper index and the fraction (in float32)."""
    scale = _resize_scale(in_size, out_size, align_corners)
    pos = np.arange(out_size, dtype=np.float32)
    src = (pos + np.float32(0.5)) * scale - np.float32(0.5) if half_pixel else pos * scale
    lower = np.maximum(np.floor(src), 0).astype(np.int32)
    upper = np.minimum(np.ceil(src), in_size - 1).astype(np.int32)
    return lower, upper, (src - lower).astype(np.float32)


def _resize_options(ctx: Ctx, x, size):
    out_h, out_w = _ints(ctx, size, "size (input 1)")
    return (x.shape[1], out_h), (x.shape[2], out_w), bool(ctx.opt("alignCorners")), bool(ctx.opt("halfPixelCenters"))


@register("RESIZE_BILINEAR")
def resize_bilinear(ctx, x, size):
    """Bilinear NHWC resize to size (H, W) with TFLite's alignCorners / halfPixelCenters source positions."""
    hs, ws, align, half = _resize_options(ctx, x, size)
    y0, y1, dy = _bilinear_axis(*hs, align, half)
    x0, x1, dx = _bilinear_axis(*ws, align, half)
    dy, dx = dy[None, :, None, None].astype(x.dtype), dx[None, None, :, None].astype(x.dtype)
    top, bottom = jnp.take(x, y0, axis=1), jnp.take(x, y1, axis=1)
    return (jnp.take(top, x0, axis=2) * (1 - dy) * (1 - dx) + jnp.take(bottom, x0, axis=2) * dy * (1 - dx)
            + jnp.take(top, x1, axis=2) * (1 - dy) * dx + jnp.take(bottom, x1, axis=2) * dy * dx)


def _nearest_axis(in_size: int, out_size: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """TFLite's nearest source index: floor (round half away from zero with alignCorners) of (i + offset) * scale."""
    scale = _resize_scale(in_size, out_size, align_corners)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5 if half_pixel else 0.0)) * scale
    index = np.sign(src) * np.floor(np.abs(src) + np.float32(0.5)) if align_corners else np.floor(src)
    index = np.minimum(index.astype(np.int32), in_size - 1)
    return np.maximum(index, 0) if half_pixel else index


@register("RESIZE_NEAREST_NEIGHBOR")
def resize_nearest_neighbor(ctx, x, size):
    """Nearest-neighbour NHWC resize to size (H, W) with TFLite's alignCorners / halfPixelCenters indexing."""
    hs, ws, align, half = _resize_options(ctx, x, size)
    return jnp.take(jnp.take(x, _nearest_axis(*hs, align, half), axis=1), _nearest_axis(*ws, align, half), axis=2)
