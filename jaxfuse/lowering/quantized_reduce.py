"""Quantized (int8 / uint8 / int16) pooling, MEAN and SOFTMAX rules: see quantized_array.py
for the conventions. Each follows the kernel LiteRT's x86 build runs (its optimized kernel
where one exists, else the reference), integer for integer."""
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import fixed_point as fp
from .core import QUANTIZED, Ctx, register
from .nn import _pool_window, _valid_cells
from .quant import QuantParams, activation_range
from .reduce import _axes

# The x86 wheel's scalar MultiplyByQuantizedMultiplier rounds the gemmlowp way; the MEAN and
# int16 SOFTMAX tie tests fail with "vector".
ROUNDING = "double"


def _same_type(ctx: Ctx) -> tuple[QuantParams, QuantParams]:
    """(input, output) parameters of a one-input op whose kernel needs equal storage types."""
    source, out = ctx.qparams(0), ctx.qparams(ctx.outputs[0])
    if source.dtype != out.dtype:
        raise ctx.error(f"{ctx.op.type} from {source.dtype} to {out.dtype} is not supported by LiteRT "
                        "(input and output types must match)")
    if source.per_channel or out.per_channel:
        raise ctx.error(f"{ctx.op.type} needs per-tensor quantization")
    return source, out


def _pool_params(ctx: Ctx, x) -> tuple[QuantParams, tuple[int, int]]:
    """Checks shared by the pools: 4-D, equal input and output parameters (the kernels copy
    integers without rescaling; LiteRT only asserts this in debug builds); the fused activation
    as a clamp."""
    source, out = _same_type(ctx)
    if x.ndim != 4:
        raise ctx.error(f"{ctx.op.type} needs a 4-D input, got {x.ndim}-D")
    if abs(source.s - out.s) > 1e-6 or source.zp != out.zp:
        raise ctx.error(f"{ctx.op.type} needs equal input and output quantization (LiteRT's kernel does not "
                        f"rescale), got scale {source.s:g} / zero point {source.zp} in and {out.s:g} / {out.zp} out")
    try:
        return out, activation_range(ctx.opt("fusedActivationFunction"), out)
    except ValueError as e:
        raise ctx.error(str(e)) from None


@register("MAX_POOL_2D", QUANTIZED)
def max_pool_2d_quantized(ctx, x):
    """clamp(window max of q, activation range); SAME padding cells never win."""
    out, (low, high) = _pool_params(ctx, x)
    window, strides, pads = _pool_window(ctx, x)
    y = lax.reduce_window(x.astype(jnp.int32), np.int32(out.qmin), lax.max, window, strides, pads)
    return jnp.clip(y, low, high).astype(out.dtype)


@register("AVERAGE_POOL_2D", QUANTIZED)
def average_pool_2d_quantized(ctx, x):
    """sign(s) * ((|s| + n/2) // n) for the window sum s of q over its n valid cells (halves
    away from zero, the kernels' integer rounding), clamped to the activation range."""
    out, (low, high) = _pool_params(ctx, x)
    window, strides, pads = _pool_window(ctx, x)
    total = lax.reduce_window(x.astype(jnp.int32), np.int32(0), lax.add, window, strides, pads)
    counts = [_valid_cells(n, k, s, pad, o) for n, k, s, pad, o in
              zip(x.shape[1:3], window[1:3], strides[1:3], pads[1:3], total.shape[1:3])]
    count = np.outer(*counts).astype(np.int32)[None, :, :, None]
    mean = jnp.sign(total) * ((jnp.abs(total) + count // 2) // count)
    return jnp.clip(mean, low, high).astype(out.dtype)


@register("MEAN", QUANTIZED)
def mean_quantized(ctx, x, axes):
    """zp_out + round((sum(q) - n*zp_in) * s_in / (n * s_out)) by a fixed-point multiplier,
    saturated. int8/uint8 with keepDims over axes (1, 2) of a 4-D input take LiteRT's
    dedicated kernel: round(sum(q) * M) + (zp_out - round(zp_in * s_in / s_out)), float32 setup."""
    source, out = _same_type(ctx)
    if out.dtype == np.int16 and (source.zp != 0 or out.zp != 0):
        raise ctx.error(f"int16 MEAN needs zero points 0 (LiteRT refuses {source.zp} in, {out.zp} out)")
    reduced = _axes(ctx, x, axes)
    keep_dims = bool(ctx.opt("keepDims"))
    count = int(np.prod([x.shape[a] for a in reduced], dtype=np.int64))
    with fp.x64():
        total = jnp.sum(x.astype(jnp.int32), axis=reduced, keepdims=keep_dims)
        if out.dtype != np.int16 and keep_dims and x.ndim == 4 and reduced == (1, 2):
            multiplier, shift, bias = _spatial_mean_scaling(source, out, count)
            rescaled = _spatial_rescale(total, multiplier, shift)
        else:
            multiplier, shift = _mean_scaling(source, out, count)
            rescaled = fp.multiply_by_quantized_multiplier(total - source.zp * count, multiplier, shift, ROUNDING)
            bias = out.zp
        return fp.saturate(rescaled.astype(jnp.int64) + bias, out.dtype)


def _spatial_mean_scaling(source: QuantParams, out: QuantParams, count: int) -> tuple[int, int, int]:
    """(M, shift, bias) as the 4-D height-width kernel computes them, in float32."""
    s_in, s_out = np.float32(source.s), np.float32(out.s)
    offset = np.float32(source.zp) * s_in / s_out
    offset = offset + np.float32(0.5) if offset > 0 else offset - np.float32(0.5)
    bias = out.zp - int(offset)  # C's float -> int conversion truncates
    multiplier, shift = fp.quantize_multiplier(np.float64(s_in / (np.float32(count) * s_out)))
    return int(multiplier), int(shift), bias


def _spatial_rescale(total, multiplier: int, shift: int):
    """The height-width kernel's rescaling of the channel sums: x86 LiteRT runs its NEON code
    through NEON_2_SSE on whole blocks of 16 channels and the scalar code on the rest. This is
    the single-threaded split (LiteRT's default); with more threads each thread's share of
    channels splits this way, which moves some ties by 1."""
    return fp.multiply_in_vector_blocks(total, multiplier, shift, 16)


def _mean_scaling(source: QuantParams, out: QuantParams, count: int) -> tuple[int, int]:
    """(M, shift) of s_in / (count * s_out): the multiplier of s_in / s_out (double precision)
    with 1/count folded into it by an integer division, as the reference kernel does."""
    multiplier, shift = (int(v) for v in fp.quantize_multiplier(np.float64(source.s) / np.float64(out.s)))
    headroom = min(count.bit_length() - 1, 32, 31 + shift)
    return (multiplier << headroom) // count, shift - headroom


def _round_non_negative(p):
    """std::round of non-negative float32 values, as int32 (2^23 standing for anything larger).
    Done on the bits: XLA on CPU fuses a float product with a following add or subtract into
    an FMA, which would round a product that the kernel rounds first."""
    bits = lax.bitcast_convert_type(p, jnp.int32)
    exponent = bits >> 23
    mantissa = (bits & 0x7FFFFF) | jnp.where(exponent > 0, 0x800000, 0)
    shift = 150 - jnp.maximum(exponent, 1)  # p = mantissa / 2^shift
    right = jnp.clip(shift, 1, 25)  # shifting further leaves 0 all the same
    return jnp.where(shift <= 0, 1 << 23, (mantissa + (1 << (right - 1))) >> right)


def _sequential_sum(values):
    """Sum over the last axis in index order, as the kernel's float32 loop adds."""
    total, _ = lax.scan(lambda acc, v: (acc + v, None), jnp.zeros(values.shape[:-1], values.dtype),
                        jnp.moveaxis(values, -1, 0), unroll=8)
    return total[..., None]


@register("SOFTMAX", QUANTIZED)
def softmax_quantized(ctx, x):
    """int8/uint8 input: e = exp(beta * s_in * (q - max q)) from a float32 table, then
    round(e / (sum(e) * s_out)) + zp_out in float32. int16: LiteRT's integer algorithm with
    its two 513-entry interpolated tables (exp and 1 / (1 + x))."""
    source, out = ctx.qparams(0), ctx.qparams(ctx.outputs[0])
    beta = np.float32(ctx.opt("beta"))
    if x.ndim == 0:
        raise ctx.error("SOFTMAX needs an input of at least 1 dimension (LiteRT refuses a scalar)")
    if source.dtype == np.int16:
        _check_softmax_output(ctx, out, np.int16, 1 / 32768, 0)
        if source.zp != 0:
            raise ctx.error(f"int16 SOFTMAX needs input zero point 0, got {source.zp}")
        return _softmax_int16(x, source, beta)
    if out.dtype == np.int8:
        _check_softmax_output(ctx, out, np.int8, 1 / 256, -128)
    elif out.dtype == np.uint8 and out.zp != 0:
        raise ctx.error(f"uint8 SOFTMAX needs output zero point 0 (LiteRT's kernel ignores it), got {out.zp}")
    if out.dtype not in (source.dtype, np.dtype(np.int16)):
        raise ctx.error(f"SOFTMAX from {source.dtype} to {out.dtype} is not supported by LiteRT "
                        f"(only {source.dtype} or int16 outputs)")
    # table[k] = exp(-s_in * beta * (255 - k)); row lookups are table[255 - max + q]
    steps = np.arange(255, -1, -1, dtype=np.float32) * (np.float32(-source.s) * beta)
    table = np.exp(steps.astype(np.float64)).astype(np.float32)
    q = x.astype(jnp.int32)
    e = jnp.take(table, 255 - jnp.max(q, axis=-1, keepdims=True) + q)
    inverse = np.float32(1) / (_sequential_sum(e) * np.float32(out.s))
    prob = e * inverse
    if out.dtype == np.uint8:
        # x86 builds truncate prob + 0.5f (skipping the zero point): that is std::round but for
        # the float just below 0.5, whose sum rounds up to 1
        quantized = _round_non_negative(prob) + (prob == np.nextafter(np.float32(0.5), np.float32(0)))
    else:
        quantized = _round_non_negative(prob) + out.zp
    return jnp.clip(quantized, out.qmin, out.qmax).astype(out.dtype)


def _check_softmax_output(ctx: Ctx, out: QuantParams, dtype, scale: float, zero_point: int) -> None:
    if out.dtype != dtype:
        raise ctx.error(f"SOFTMAX from {np.dtype(dtype)} to {out.dtype} is not supported by LiteRT")
    if out.zp != zero_point or abs(out.s - scale) > 0.001 * scale:
        raise ctx.error(f"{np.dtype(dtype)} SOFTMAX needs output scale 1/{round(1 / scale)} and zero point "
                        f"{zero_point}, got {out.s:g} and {out.zp}")


def _int16_table(transform, input_scale: float, input_zero_point: int, output_scale: float) -> np.ndarray:
    """LiteRT's LUTPopulate<int16_t> in double: 512 samples of `transform` over the input
    range plus the end point, each biased by half the interpolation error at its midpoint."""
    lo, hi = np.iinfo(np.int16).min, np.iinfo(np.int16).max
    input_min = input_scale * (lo - input_zero_point)
    input_max = input_scale * (hi - input_zero_point)
    step = (input_max - input_min) / 512
    scaling = 65536.0 / (output_scale * (hi - lo))
    i = np.arange(512, dtype=np.float64)
    value = transform(input_min + i * step)
    midpoint = transform(input_min + i * step + step / 2)
    following = transform(input_min + (i + 1) * step)
    sample = fp.round_half_away(value * scaling)
    interpolated = fp.round_half_away((following * scaling + sample) / 2)
    bias = fp.round_half_away((interpolated - fp.round_half_away(midpoint * scaling)) / 2)
    end = fp.round_half_away(transform(np.float64(input_max)) * scaling)
    return np.clip(np.append(sample - bias, end), lo, hi).astype(np.int32)


def _int16_lookup(table: np.ndarray, value):
    """LiteRT's LUTLookup: entry value >> 7 (offset by 256) interpolated linearly by the low 7 bits."""
    index = 256 + (value >> 7)
    base = jnp.take(table, index)
    slope = jnp.take(table, index + 1) - base
    return base + ((slope * (value & 0x7F) + 64) >> 7)


def _softmax_int16(x, source: QuantParams, beta: np.float32):
    """reference_ops::SoftmaxInt16: exp table over [-10, 0], Q0.15 sum, reciprocal table."""
    span = 65535.0
    exp_table = _int16_table(np.exp, 10.0 / span, 32767, 2.0 / span)
    reciprocal_table = _int16_table(lambda v: 1.0 / (1.0 + v), 1.0 / span, -32768, 2.0 / span)
    # the kernel multiplies scale and beta in float32 before dividing in double
    multiplier, shift = fp.quantize_multiplier(np.float64(np.float32(source.s) * beta) / (10.0 / span))
    with fp.x64():
        q = x.astype(jnp.int32)
        diff = q - jnp.max(q, axis=-1, keepdims=True)
        scaled = fp.multiply_by_quantized_multiplier(diff, multiplier, shift, ROUNDING)
        exps = _int16_lookup(exp_table, jnp.clip(scaled + 32767, -32768, 32767))
        total = jnp.sum(exps, axis=-1, keepdims=True, dtype=jnp.int32)
        headroom_plus_one = lax.clz(total)
        shifted = ((total.astype(jnp.int64) << (headroom_plus_one - 1)) + (1 << 13)) >> 14
        reciprocal = _int16_lookup(reciprocal_table, jnp.clip(shifted - (3 << 15), -32768, 32767).astype(jnp.int32))
        right_shift = (31 - headroom_plus_one).astype(jnp.int64)
        result = (exps.astype(jnp.int64) * reciprocal + (jnp.int64(1) << (right_shift - 1))) >> right_shift
        return jnp.clip(result, 0, 32767).astype(jnp.int16)
