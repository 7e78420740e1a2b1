"""Quantized (int8 / int16) rules for the ops ai-edge-quantizer leaves in transformers:
BATCH_MATMUL of two activations, SQUARED_DIFFERENCE and RSQRT (LayerNorm / RMSNorm
statistics), GELU. Each computes what LiteRT's builtin kernel computes, integer for integer;
tests/test_lower_quantized_transformer.py compares them with LiteRT.

- BATCH_MATMUL: LiteRT's reference kernel (its registered one): int32 sums of centred int8
  products requantized with the gemmlowp double rounding; int16 (zero points 0) sums in int64
  requantized by the wide 16x8 multiply. The multiplier comes from float32(s_lhs * s_rhs) / s_out.
- SQUARED_DIFFERENCE (int8 only in LiteRT): both inputs shifted left by 7 and brought onto
  twice the larger input scale, the difference squared, requantized by (2 max s)^2 / (2^14 s_out).
- RSQRT: int8 through gemmlowp's fixed-point inverse square root (5 Newton steps in 3.28),
  int16 through LiteRT's 513-entry interpolated table of 1 / sqrt(x); both tabulated here over
  every input value.
- GELU: int8 / uint8 a table of the float32 erf (or tanh) formula, int16 the interpolated table
  (the installed LiteRT wheel runs int16 GELU; LiteRT's public sources of the time do not show it).
"""
import math

import jax.numpy as jnp
import numpy as np

from . import fixed_point as fp
from . import libm
from .core import QUANTIZED, register
from .nn import batch_matmul
from .quant import QuantParams
from .quantized_elementwise import _all_values, _float_table, _lookup, _operands, _symmetric_int16
from .quantized_nn import GEMMLOWP, WIDE_16X8, _Kernel, _multipliers, _scale
from .quantized_reduce import _int16_lookup

INT8 = np.dtype(np.int8)
INT16 = np.dtype(np.int16)
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


# -- gemmlowp's int32 fixed point, on NumPy int64 arrays holding int32 values (for tables) ----------

def _wrap32(x):
    return ((np.asarray(x, np.int64) + 2 ** 31) & 0xFFFFFFFF) - 2 ** 31


def _high_mul(a, b):
    """SaturatingRoundingDoublingHighMul (C's truncating division)."""
    product = np.asarray(a, np.int64) * np.asarray(b, np.int64)  # |product| <= 2^62
    nudged = product + np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    result = np.where(nudged >= 0, nudged >> 31, -((-nudged) >> 31))
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, result)


def _divide_by_pot(x, exponent):
    """RoundingDivideByPOT: ties away from zero."""
    x = np.asarray(x, np.int64)
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def _multiply_by_pot(x, exponent: int):
    """SaturatingRoundingMultiplyByPOT on int32."""
    if exponent <= 0:
        return _divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def _multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite's MultiplyByQuantizedMultiplier (double rounding), the shifted input wrapping as int32."""
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    return _divide_by_pot(_high_mul(_wrap32(np.asarray(x, np.int64) << left), multiplier), right)


def _inv_sqrt_multiplier(values):
    """GetInvSqrtQuantizedMultiplierExp(value, reverse_shift=-1) for int32 values >= 0:
    (multiplier, shift) with 1 / sqrt(value) ~ multiplier * 2^(shift - 31)."""
    values = np.asarray(values, np.int64)
    multipliers, shifts = np.full(values.shape, INT32_MAX, np.int64), np.zeros(values.shape, np.int64)
    for index, value in np.ndenumerate(values):
        if value <= 1:
            continue
        shift = 11
        while value >= (1 << 29):
            value //= 4
            shift += 1
        leading_zeros = 32 - int(value).bit_length()
        pairs = (leading_zeros - 1) // 2 - 1
        shift -= pairs
        value <<= 2 * pairs
        half_input = _multiply_by_pot(np.int64(value >> 1), -1)
        half_three = (1 << 28) + (1 << 27)
        x = np.int64(1 << 28)  # F3 one
        for _ in range(5):
            x3 = _multiply_by_pot(_high_mul(_high_mul(x, x), x), 6)  # F9 -> F3
            difference = _wrap32(_high_mul(half_three, x) - _high_mul(half_input, x3))
            x = _multiply_by_pot(difference, 3)  # F6 -> F3
        x = _high_mul(x, 1518500250)  # times sqrt(2) / 2 (F0)
        if shift < 0:
            x = _wrap32(x << -shift)
            shift = 0
        multipliers[index], shifts[index] = x, -shift
    return multipliers, shifts


# -- BATCH_MATMUL ---------------------------------------------------------------------------------

@register("BATCH_MATMUL", QUANTIZED)
def batch_matmul_quantized(ctx, a, b):
    """acc = sum_k (a - zp_a)(b - zp_b) over the contracted axis (int32 for int8, int64 for int16);
    out = zp_out + requantize(acc, float32(s_a * s_b) / s_out), clamped to the type."""
    q_a, q_b, out = _operands(ctx, 2)
    _symmetric_int16(ctx, [q_a, q_b, out])
    if q_a.dtype not in (INT8, INT16):
        raise ctx.error(f"{q_a.dtype} BATCH_MATMUL is not supported by LiteRT (int8 and int16 only)")
    kernel = _Kernel(GEMMLOWP.rounding, GEMMLOWP.accumulator, float_product=True) if q_a.dtype == INT8 \
        else _Kernel(WIDE_16X8.rounding, WIDE_16X8.accumulator, float_product=True)
    depth = int(ctx.inputs[0].shape[-2 if ctx.opt("adjointLhs") else -1])
    span = lambda q: max(q.zp - q.qmin, q.qmax - q.zp)  # noqa: E731
    real, multiplier, shift = _multipliers(q_a, q_b, out, kernel, 1)
    with fp.x64():
        acc = fp.exact_integer_product(lambda x, y: batch_matmul(ctx, x, y), a.astype(jnp.int32) - q_a.zp,
                                       b.astype(jnp.int32) - q_b.zp, float(span(q_a)) * span(q_b) * depth)
        if kernel.accumulator == np.dtype(np.int32):  # wraps as the kernel's int32 sum does
            acc = acc.astype(jnp.int32).astype(jnp.int64)
        scaled = _scale(acc, kernel, real, multiplier, shift)
        return fp.saturate(scaled.astype(jnp.int64) + out.zp, out.dtype)


# -- SQUARED_DIFFERENCE -----------------------------------------------------------------------------

@register("SQUARED_DIFFERENCE", QUANTIZED)
def squared_difference_quantized(ctx, a, b):
    """int8: each input (q - zp) << 7 rescaled onto twice the larger input scale (double
    rounding), the difference squared, requantized by (2 max s)^2 / (2^14 s_out) plus zp_out."""
    q1, q2, out = _operands(ctx, 2)
    if out.dtype != INT8:
        raise ctx.error(f"{out.dtype} SQUARED_DIFFERENCE is not supported by LiteRT (int8 only)")
    left_shift = 7
    twice_max = 2.0 * max(np.float64(q1.s), np.float64(q2.s))
    real_output = twice_max * twice_max / (np.float64(1 << (2 * left_shift)) * np.float64(out.s))
    if real_output >= 1.0:
        raise ctx.error(f"output scale {out.s:g} is too small for the input scales {q1.s:g}, {q2.s:g} (LiteRT's "
                        "kernel needs (2 max(input scales))^2 < 2^14 output scale)")
    m1, s1 = fp.quantize_multiplier(np.float64(q1.s) / twice_max)
    m2, s2 = fp.quantize_multiplier(np.float64(q2.s) / twice_max)
    mo, so = fp.quantize_multiplier(real_output)
    with fp.x64():
        x1 = fp.multiply_by_quantized_multiplier((a.astype(jnp.int32) - q1.zp) << left_shift, m1, s1)
        x2 = fp.multiply_by_quantized_multiplier((b.astype(jnp.int32) - q2.zp) << left_shift, m2, s2)
        diff = (x1 - x2).astype(jnp.int32)
        y = fp.multiply_by_quantized_multiplier(diff * diff, mo, so) + out.zp
        return fp.saturate(y, out.dtype)


# -- RSQRT -------------------------------------------------------------------------------------------

def _float32_rsqrt_or_max(scale: float):
    """LiteRT's int16 RSQRT table function: 1 / sqrt(v) in float32, and 32767 * s_out for v <= 0."""
    def transform(v):
        v32 = np.asarray(v, np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.float32(1) / np.sqrt(v32)
        return np.where(v32 <= 0, np.float32(32767) * np.float32(scale), value).astype(np.float64)
    return transform


def _int16_table_float32(transform, q: QuantParams, out: QuantParams) -> np.ndarray:
    """LiteRT's LUTPopulate<int16_t> with a float function: the same 512 samples plus the end
    point as quantized_reduce's double version, each step in float32."""
    f32 = np.float32
    lo, hi = -32768, 32767
    input_min = f32(q.s) * f32(lo - q.zp)
    input_max = f32(q.s) * f32(hi - q.zp)
    step = (input_max - input_min) / f32(512)
    # output_max - output_min as the kernel computes it: each end rounded to float32 first
    scaling = f32(65536) / (f32(out.s) * f32(hi - out.zp) - f32(out.s) * f32(lo - out.zp))
    i = np.arange(512, dtype=np.float32)
    position = input_min + i * step
    value = f32(1) * transform(position).astype(np.float32)
    midpoint = transform(position + step / f32(2)).astype(np.float32)
    following = transform(input_min + (i + f32(1)) * step).astype(np.float32)
    sample = fp.round_half_away(value * scaling).astype(np.float32)
    interpolated = fp.round_half_away((following * scaling + sample) / f32(2)).astype(np.float32)
    bias = fp.round_half_away((interpolated - fp.round_half_away(midpoint * scaling)) / f32(2))
    end = fp.round_half_away(np.float32(transform(np.float32(input_max))) * scaling)
    return np.clip(np.append(sample - bias, end), lo, hi).astype(np.int32)


@register("RSQRT", QUANTIZED)
def rsqrt_quantized(ctx, x):
    """int8: value = q - zp_in (0 gives 127), 1 / sqrt(value) from gemmlowp's fixed-point
    inverse square root at 2^20, requantized by 1 / (sqrt(s_in) s_out), plus zp_out; int16:
    LiteRT's interpolated table of 1 / sqrt(x). Tabulated over every input value."""
    q, out = _operands(ctx, 1)
    if out.dtype == INT16:
        _symmetric_int16(ctx, [q, out])
        table = _int16_table_float32(_float32_rsqrt_or_max(out.s), q, out)
        with fp.x64():
            return jnp.clip(_int16_lookup(table, x.astype(jnp.int32)), -32768, 32767).astype(jnp.int16)
    if out.dtype != INT8:
        raise ctx.error(f"{out.dtype} RSQRT is not supported by LiteRT (int8 and int16 only)")
    multiplier, shift = (int(v) for v in fp.quantize_multiplier(1.0 / (math.sqrt(np.float32(q.s)) * np.float32(out.s))))
    values = np.maximum(_all_values(INT8) - q.zp, 0)  # LiteRT refuses inputs below the zero point
    inv_multiplier, inv_shift = _inv_sqrt_multiplier(values)
    k_shift = 20
    data = _multiply_by_quantized_multiplier(np.ones_like(values), inv_multiplier, inv_shift + k_shift)
    y = _multiply_by_quantized_multiplier(data, multiplier, shift - k_shift) + out.zp
    table = np.where(values == 0, 127, np.clip(y, -128, 127)).astype(np.int8)
    return _lookup(x, table, -128)


# -- GELU --------------------------------------------------------------------------------------------

def _gelu_float32(approximate: bool):
    """reference_ops::GeluTransform(Approximate) in float32 steps, erfcf / tanhf as the C
    library computes them (libm.py): 0.5 x erfc(-x / sqrt(2)) as the LiteRT 2.3 wheel writes
    it (its older 0.5 x (1 + erf(x / sqrt(2))) moves some int16 table entries by one)."""
    f32 = np.float32

    def transform(v):
        x = np.asarray(v, np.float32)
        if approximate:
            inner = f32(math.sqrt(2 / math.pi)) * (x + f32(0.044715) * x * x * x)
            cdf = f32(1) + libm.tanhf(inner)
        else:
            cdf = libm.erfcf(x * f32(-math.sqrt(0.5)))
        return (f32(0.5) * x * cdf).astype(np.float64)
    return transform


@register("GELU", QUANTIZED)
def gelu_quantized(ctx, x):
    """int8 / uint8: a table of round(gelu(s_in (v - zp_in)) / s_out) + zp_out with the float32
    formula (erf, or tanh when approximate); int16: LiteRT's interpolated 513-entry table of it."""
    q, out = _operands(ctx, 1)
    transform = _gelu_float32(bool(ctx.opt("approximate")))
    if out.dtype == INT16:
        _symmetric_int16(ctx, [q, out])
        with fp.x64():
            table = _int16_table_float32(transform, q, out)
            return jnp.clip(_int16_lookup(table, x.astype(jnp.int32)), -32768, 32767).astype(jnp.int16)
    return _lookup(x, _float_table(q, out, transform), q.qmin)
