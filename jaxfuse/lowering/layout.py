"""Block rearrangement (DEPTH_TO_SPACE, SPACE_TO_BATCH_ND, ...), reversal, tiling,
broadcasting, gather by index tuples, and the ops that make new tensors (RANGE, FILL,
ZEROS_LIKE, WHERE of a constant condition), on float, plain integer and
bool tensors. Their int8 / int16 forms are in quantized_shape.py."""
import jax.numpy as jnp
import numpy as np

from .core import Ctx, register


def _ints(ctx: Ctx, value, what: str) -> list[int]:
    return [int(v) for v in ctx.static(value, what).reshape(-1)]


def _block_size(ctx: Ctx, x) -> int:
    block = int(ctx.opt("blockSize"))
    if block < 1:
        raise ctx.error(f"blockSize {block} must be at least 1")
    if x.ndim != 4:
        raise ctx.error(f"input of rank {x.ndim}; {ctx.op.type} takes NHWC tensors of rank 4")
    return block


@register("DEPTH_TO_SPACE")
def depth_to_space(ctx, x):
    """NHWC [N, H, W, C * b * b] -> [N, H * b, W * b, C]: channel (i * b + j) * C + c goes to
    row h * b + i, column w * b + j (TensorFlow's DCR order)."""
    b = _block_size(ctx, x)
    n, h, w, c = x.shape
    if c % (b * b):
        raise ctx.error(f"{c} channels are not a multiple of blockSize^2 = {b * b}")
    y = x.reshape(n, h, w, b, b, c // (b * b)).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h * b, w * b, c // (b * b))


@register("SPACE_TO_DEPTH")
def space_to_depth(ctx, x):
    """NHWC [N, H * b, W * b, C] -> [N, H, W, C * b * b], the inverse of DEPTH_TO_SPACE."""
    b = _block_size(ctx, x)
    n, h, w, c = x.shape
    if h % b or w % b:
        raise ctx.error(f"height {h} and width {w} must be multiples of blockSize {b}")
    y = x.reshape(n, h // b, b, w // b, b, c).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h // b, w // b, b * b * c)


def _block_shape(ctx: Ctx, x, block_shape) -> list[int]:
    block = _ints(ctx, block_shape, "block_shape (input 1)")
    if any(b < 1 for b in block):
        raise ctx.error(f"block_shape {block} must be positive")
    if len(block) > x.ndim - 1:
        raise ctx.error(f"{len(block)} block sizes for an input of rank {x.ndim}")
    return block


@register("SPACE_TO_BATCH_ND")
def space_to_batch_nd(ctx, x, block_shape, paddings, pad_value=0):
    """Pad the M spatial axes after the batch (paddings [M, 2]), cut each into block_shape
    blocks and stack the block offsets in front of the batch: output batch (i * b_w + j) * N + n.
    The padding is pad_value (0; the quantized rule passes the zero point)."""
    block = _block_shape(ctx, x, block_shape)
    m = len(block)
    pads = ctx.static(paddings, "paddings (input 2)").reshape(m, 2)
    widths = [(0, 0)] + [(int(lo), int(hi)) for lo, hi in pads] + [(0, 0)] * (x.ndim - 1 - m)
    x = jnp.pad(x, widths, constant_values=pad_value)
    n, spatial, rest = x.shape[0], x.shape[1:1 + m], x.shape[1 + m:]
    if any(d % b for d, b in zip(spatial, block)):
        raise ctx.error(f"padded spatial shape {list(spatial)} is not a multiple of block_shape {block}")
    split = [n] + [v for d, b in zip(spatial, block) for v in (d // b, b)] + list(rest)
    order = [2 + 2 * i for i in range(m)] + [0] + [1 + 2 * i for i in range(m)] + list(range(1 + 2 * m, len(split)))
    return x.reshape(split).transpose(order).reshape([n * int(np.prod(block))] + [d // b for d, b in
                                                                                 zip(spatial, block)] + list(rest))


@register("BATCH_TO_SPACE_ND")
def batch_to_space_nd(ctx, x, block_shape, crops):
    """The inverse of SPACE_TO_BATCH_ND: batch (i * b_w + j) * N + n goes back to block offset
    (i, j) of image n, then crops [M, 2] are cut off the M spatial axes."""
    block = _block_shape(ctx, x, block_shape)
    m = len(block)
    crop = ctx.static(crops, "crops (input 2)").reshape(m, 2)
    total = int(np.prod(block))
    if x.shape[0] % total:
        raise ctx.error(f"batch {x.shape[0]} is not a multiple of the block count {total}")
    n, spatial, rest = x.shape[0] // total, x.shape[1:1 + m], x.shape[1 + m:]
    y = x.reshape(block + [n] + list(spatial) + list(rest))
    order = [m] + [v for i in range(m) for v in (m + 1 + i, i)] + list(range(2 * m + 1, y.ndim))
    y = y.transpose(order).reshape([n] + [d * b for d, b in zip(spatial, block)] + list(rest))
    index = [slice(None)] + [slice(int(lo), d * b - int(hi)) for (lo, hi), d, b in zip(crop, spatial, block)]
    return y[tuple(index)]


@register("WHERE")
def where(ctx, condition):
    """The coordinates of the true elements, [count, rank] in row-major order, for a condition
    known while lowering (computed from constants): the output's shape depends on the values."""
    values = ctx.static(condition, "condition (input 0), which decides WHERE's output shape,")
    return np.argwhere(values.astype(bool)).astype(ctx.outputs[0].dtype)


@register("REVERSE_V2")
def reverse_v2(ctx, x, axis):
    """x reversed along each axis of the axis input (negative allowed)."""
    return jnp.flip(x, tuple(sorted({a % x.ndim for a in _ints(ctx, axis, "axis (input 1)")})))


@register("TILE")
def tile(ctx, x, multiples):
    """x repeated multiples[i] times along axis i."""
    reps = _ints(ctx, multiples, "multiples (input 1)")
    if len(reps) != x.ndim:
        raise ctx.error(f"{len(reps)} multiples for an input of rank {x.ndim}")
    return jnp.tile(x, reps)


@register("BROADCAST_TO")
def broadcast_to(ctx, x, shape):
    """x broadcast (numpy rules) to the shape input."""
    return jnp.broadcast_to(x, _ints(ctx, shape, "shape (input 1)"))


@register("GATHER_ND")
def gather_nd(ctx, params, indices):
    """params[tuple(index)] for each index vector along the last axis of indices: an index of
    length k picks a slice of params' trailing rank - k axes."""
    depth = indices.shape[-1]
    if depth > params.ndim:
        raise ctx.error(f"index vectors of length {depth} into params of rank {params.ndim}")
    if isinstance(indices, np.ndarray):  # LiteRT fails on an index out of range; XLA would clamp it
        bounds = np.asarray(params.shape[:depth])
        bad = np.argwhere(np.any((indices < 0) | (indices >= bounds), axis=-1))
        if bad.size:
            raise ctx.error(f"index {indices[tuple(bad[0])].tolist()} is out of range for params of shape "
                            f"{list(params.shape)}")
    return params[tuple(jnp.moveaxis(jnp.asarray(indices), -1, 0))]


@register("FILL")
def fill(ctx, dims, value):
    """A tensor of the shape input filled with the scalar value input."""
    return jnp.full(_ints(ctx, dims, "dims (input 0)"), jnp.reshape(value, ()), dtype=value.dtype)


@register("ZEROS_LIKE")
def zeros_like(ctx, x):
    """Zeros of x's shape and type."""
    return jnp.zeros_like(x)


@register("RANGE", reads_constant_values=True)
def range_(ctx, start, limit, delta):
    """[start, start + delta, ...) up to limit (exclusive), from static scalars: the length is
    ceil(|limit - start| / |delta|) and each value the previous one plus delta (LiteRT's running
    sum, so float32 values round as its loop does). Float constants, which are parameters
    elsewhere, are read from the file here: they fix the output's length."""
    def scalar(value, i: int, what: str) -> np.ndarray:
        tensor = ctx.inputs[i]
        if not isinstance(value, np.ndarray) and tensor is not None and tensor.is_constant:
            value = tensor.data
        return ctx.static(value, f"{what} (input {i})").reshape(())
    start, limit, delta = scalar(start, 0, "start"), scalar(limit, 1, "limit"), scalar(delta, 2, "delta")
    if delta == 0:
        raise ctx.error("delta is 0")
    if (limit > start and delta < 0) or (limit < start and delta > 0):
        raise ctx.error(f"delta {delta} moves away from limit {limit} (start {start})")
    dtype = np.result_type(start, limit, delta)
    if dtype.kind in "iu":
        count = (abs(int(limit) - int(start)) + abs(int(delta)) - 1) // abs(int(delta))
    else:
        count = int(np.ceil(np.abs((limit - start) / delta)))
    steps = np.full(count, delta, dtype)
    if count:
        steps[0] = start
    return np.add.accumulate(steps, dtype=dtype)
