"""Quantized (int8 / uint8 / int16) rules for type conversion and data movement.

Each rule computes what LiteRT's builtin kernel computes, integer for integer; the tests
compare every rule with LiteRT (tests/test_lower_quantized_*.py).
"""
import jax.numpy as jnp
import numpy as np

from . import array
from . import fixed_point as fp
from .core import QUANTIZED, Ctx, register
from .quant import QuantParams


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
    int -> int (requantize): (q_in - zp_in) * s_in / s_out rounded by fixed-point multiplier + zp_out;
    8-bit to 8-bit runs LiteRT's vectorized loop (blocks of 16 elements, then the scalar rest)."""
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
        if source.dtype.itemsize == out.dtype.itemsize == 1:
            scaled = fp.multiply_in_vector_blocks(centred, multiplier, shift, 16, flat=True)
        else:
            scaled = fp.multiply_by_quantized_multiplier(centred, multiplier, shift)
        return fp.saturate(scaled.astype(jnp.int64) + out.zp, out.dtype)


# -- data movement and resizing -----------------------------------------------------------
# Apart from CONCATENATION's uint8 rescaling, LiteRT's kernels below work on the stored
# integers and never read the input's scale or zero point: an output quantized differently
# reinterprets the same integers, which is what these rules compute too.

def _same_storage_type(ctx: Ctx, *xs) -> None:
    """LiteRT's data-movement kernels require the output type to equal the input types."""
    out = ctx.outputs[0].dtype
    for x in xs:
        if np.dtype(x.dtype) != out:
            raise ctx.error(f"input type {np.dtype(x.dtype)} differs from output type {out} "
                            f"(LiteRT requires equal types)")


def _per_tensor(ctx: Ctx, index_or_tensor, what: str) -> QuantParams:
    q = ctx.qparams(index_or_tensor)
    if q.per_channel:
        raise ctx.error(f"{what} is quantized per channel; LiteRT's kernel reads one scale and zero point")
    return q


@register("RESHAPE", QUANTIZED)
def reshape_quantized(ctx, x, shape=None):
    """The stored integers with the new shape (as the float rule)."""
    _same_storage_type(ctx, x)
    return array.reshape(ctx, x, shape)


@register("SQUEEZE", QUANTIZED)
def squeeze_quantized(ctx, x):
    """The stored integers without the squeezed size-1 axes (as the float rule)."""
    _same_storage_type(ctx, x)
    return array.squeeze(ctx, x)


@register("TRANSPOSE", QUANTIZED)
def transpose_quantized(ctx, x, perm):
    """The stored integers with permuted axes (as the float rule)."""
    _same_storage_type(ctx, x)
    return array.transpose(ctx, x, perm)


@register("PAD", QUANTIZED)
def pad_quantized(ctx, x, paddings):
    """The stored integers padded with the output's zero point (the quantized 0.0)."""
    _same_storage_type(ctx, x)
    fill = np.asarray(_per_tensor(ctx, ctx.outputs[0], "the output").zp, x.dtype)
    return array.padv2(ctx, x, paddings, fill)


@register("PADV2", QUANTIZED)
def padv2_quantized(ctx, x, paddings, value):
    """The stored integers padded with the stored integer of input 2, whose scale and zero
    point LiteRT requires to equal the output's."""
    _same_storage_type(ctx, x, value)
    out = _per_tensor(ctx, ctx.outputs[0], "the output")
    fill = _per_tensor(ctx, 2, "the pad value (input 2)")
    if fill.s != out.s or fill.zp != out.zp:
        raise ctx.error(f"the pad value (input 2) is quantized with scale {fill.s:g}, zero point {fill.zp} but the "
                        f"output with scale {out.s:g}, zero point {out.zp}; LiteRT requires them equal")
    return array.padv2(ctx, x, paddings, value)


def _float32_step(value):
    """A float64 value (inside x64) rounded to float32 and widened again. A float32 + or *
    computed in float64 and rounded once equals the float32 operation (53 >= 2 * 24 + 2), and
    the rounding between steps keeps XLA from fusing them into an FMA, which LiteRT's x86
    kernels do not use."""
    return value.astype(jnp.float32).astype(jnp.float64)


def _requantize_uint8_like_litert(q, source: QuantParams, out: QuantParams):
    """ConcatenationWithScaling's float32 arithmetic for one uint8 input: with
    scale = s_in * (1 / s_out) and bias = -zp_in * scale, round(q * scale + bias) + zp_out
    (halves away from zero), clamped to [0, 255]."""
    scale = np.float32(source.s) * (np.float32(1) / np.float32(out.s))
    bias = np.float32(-source.zp) * scale
    with fp.x64():
        product = _float32_step(q.astype(jnp.float64) * np.float64(scale))
        total = _float32_step(product + np.float64(bias))
        rounded = jnp.sign(total) * jnp.floor(jnp.abs(total) + 0.5)
        return fp.saturate(rounded.astype(jnp.int64) + out.zp, np.uint8)


@register("CONCATENATION", QUANTIZED)
def concatenation_quantized(ctx, *xs):
    """Join the inputs along `axis`. int8 and int16 inputs are copied (LiteRT requires int8
    inputs quantized as the output, and zero points 0 for int16); uint8 inputs quantized
    differently are requantized with LiteRT's float32 formula."""
    _same_storage_type(ctx, *xs)
    out = _per_tensor(ctx, ctx.outputs[0], "the output")
    sources = [_per_tensor(ctx, i, f"input {i}") for i in range(len(xs))]
    if out.dtype == np.int8:
        for i, q in enumerate(sources):
            if q.s != out.s or q.zp != out.zp:
                raise ctx.error(f"int8 input {i} is quantized with scale {q.s:g}, zero point {q.zp} but the output "
                                f"with scale {out.s:g}, zero point {out.zp}; LiteRT's int8 kernel does not rescale")
    elif out.dtype == np.int16:
        for i, q in [*enumerate(sources), ("output", out)]:
            if q.zp != 0:
                name = "the output" if i == "output" else f"input {i}"
                raise ctx.error(f"int16 {name} has zero point {q.zp}; LiteRT requires 0")
    else:
        xs = [x if (q.s, q.zp) == (out.s, out.zp) else _requantize_uint8_like_litert(x, q, out)
              for x, q in zip(xs, sources)]
    return array.concatenation(ctx, *xs)


@register("RESIZE_NEAREST_NEIGHBOR", QUANTIZED)
def resize_nearest_neighbor_quantized(ctx, x, size):
    """The stored integers at the float rule's nearest source indices."""
    _same_storage_type(ctx, x)
    return array.resize_nearest_neighbor(ctx, x, size)


_POSITION_BITS = 10  # LiteRT's integer bilinear kernel: source positions in units of 1/1024 pixel


def _integer_bilinear_axis(in_size: int, out_size: int, align_corners: bool, half_pixel: bool):
    """ResizeBilinearInteger's per-axis source positions: lower/upper index and the weight
    of the upper one, in 1/1024 pixel (the scale rounded to that unit, halves up)."""
    one = 1 << _POSITION_BITS
    if align_corners and out_size > 1:
        scale = (one * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    else:
        scale = (one * in_size + out_size // 2) // out_size
    pos = np.arange(out_size, dtype=np.int64) * scale
    if half_pixel:
        pos += scale // 2 - one // 2
    # C's division truncates where // floors; they differ only for -512 < pos < 0, where both clamp to 0
    lower = np.maximum(pos // one, 0)
    upper = np.minimum((pos + one - 1) // one, in_size - 1)
    weight = pos - one * lower  # negative for a position left of pixel 0: lower == upper there
    # a scale rounded up can put the last position past the last pixel, where LiteRT reads out of
    # bounds; the last pixel is used instead
    return np.minimum(lower, in_size - 1), upper, weight


def _resize_bilinear_integer(x, hs, ws, align, half):
    """int8 / int16 (ResizeBilinearInteger): sum of the four pixels times their 1/1024
    weights, an exact integer in 1/2^20 units, divided by 2^20 rounding halves away from zero
    (the wheel is not a TFLITE_SINGLE_ROUNDING build, whose halves go toward +inf)."""
    y0, y1, wy = _integer_bilinear_axis(*hs, align, half)
    x0, x1, wx = _integer_bilinear_axis(*ws, align, half)
    one = 1 << _POSITION_BITS
    wy, wx = wy[None, :, None, None], wx[None, None, :, None]
    with fp.x64():
        v = x.astype(jnp.int64)
        top, bottom = jnp.take(v, y0, axis=1), jnp.take(v, y1, axis=1)
        total = ((jnp.take(top, x0, axis=2) * (one - wx) + jnp.take(top, x1, axis=2) * wx) * (one - wy)
                 + (jnp.take(bottom, x0, axis=2) * (one - wx) + jnp.take(bottom, x1, axis=2) * wx) * wy)
        bits = 2 * _POSITION_BITS
        return fp.rounding_divide_by_pot(total, bits).astype(x.dtype)


def _resize_bilinear_uint8(x, hs, ws, align, half):
    """uint8 (optimized ResizeBilinearGenericSmallChannel): float32 weights from the float
    rule's positions, v00*w00 + v01*w01 + v10*w10 + v11*w11 + 0.5 summed left to right in
    float32 and truncated (LiteRT's 8.8 fixed-point kernel for 8x upsampling with
    halfPixelCenters gives the same integers)."""
    y0, y1, dy = array._bilinear_axis(*hs, align, half)
    x0, x1, dx = array._bilinear_axis(*ws, align, half)
    one = np.float32(1)
    dy, dx = dy[None, :, None, None], dx[None, None, :, None]
    weights = [(one - dy) * (one - dx), (one - dy) * dx, dy * (one - dx), dy * dx]  # float32, static
    with fp.x64():
        v = x.astype(jnp.float64)
        top, bottom = jnp.take(v, y0, axis=1), jnp.take(v, y1, axis=1)
        pixels = [jnp.take(top, x0, axis=2), jnp.take(top, x1, axis=2),
                  jnp.take(bottom, x0, axis=2), jnp.take(bottom, x1, axis=2)]
        total = None
        for pixel, weight in zip(pixels, weights):
            term = _float32_step(pixel * weight.astype(np.float64))
            total = term if total is None else _float32_step(total + term)
        return jnp.floor(_float32_step(total + 0.5)).astype(jnp.uint8)


@register("RESIZE_BILINEAR", QUANTIZED)
def resize_bilinear_quantized(ctx, x, size):
    """Bilinear NHWC resize of the stored integers: int8 / int16 in LiteRT's 1/1024-pixel
    integer arithmetic, uint8 in its float32 arithmetic (see the two helpers)."""
    _same_storage_type(ctx, x)
    hs, ws, align, half = array._resize_options(ctx, x, size)
    if align and half:
        raise ctx.error("alignCorners and halfPixelCenters are both set; LiteRT refuses that combination")
    if x.dtype == jnp.uint8:
        return _resize_bilinear_uint8(x, hs, ws, align, half)
    return _resize_bilinear_integer(x, hs, ws, align, half)
