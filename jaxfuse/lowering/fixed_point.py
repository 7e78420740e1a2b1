"""The integer arithmetic of TFLite's quantized kernels, as pure JAX functions.

Quantized kernels never multiply by a float at run time. A real multiplier m > 0 (say
input_scale * filter_scale / output_scale) is stored as a 31-bit fixed-point significand
M in [2^30, 2^31) and a power-of-two exponent: m ~= M * 2^(shift - 31)
(`quantize_multiplier`, computed here with NumPy while lowering, as the kernels compute it
while preparing). At run time an int32 accumulator x becomes about x * M / 2^(31 - shift)
(`multiply_by_quantized_multiplier`), in two roundings: a doubling high multiply
(x*M / 2^31) and a right shift by -shift. The x86 LiteRT wheel (not a
TFLITE_SINGLE_ROUNDING build) does that two ways, measured per op in the tests:

- "double": gemmlowp's SaturatingRoundingDoublingHighMul (ties toward +inf) and
  RoundingDivideByPOT (ties away from zero): the scalar code of most kernels;
- "vector": the high multiply as before, and a right shift rounding ties toward +inf too:
  ruy's output stage, and NEON's vqrdmulh + vrshl in the vectorized kernels (run on x86
  through NEON_2_SSE). Those kernels take whole blocks of 8 or 16 values through the
  vector code and the rest through the scalar one (`multiply_in_vector_blocks`).

The products need 64 bits. JAX keeps 64-bit types off by default and jaxfuse does not
change that global flag: every function here switches them on only inside its own body
(`jax.enable_x64` as a context manager, which also works while an outer jit traces), and
hands back int32 (or the caller's dtype), so a caller never sees an int64 array.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ROUNDINGS = ("double", "vector")
EXACT_FLOAT32_LIMIT = 2 ** 24  # integers below this magnitude, and their sums, are exact in float32


def x64():
    """Context in which JAX creates 64-bit integers (local: the global flag is untouched)."""
    return jax.enable_x64(True)


# -- static (NumPy, while lowering) --------------------------------------------------------

def round_half_away(value) -> np.ndarray:
    """C's std::round (TfLiteRound): halves away from zero (NumPy's round goes to even)."""
    value = np.asarray(value, np.float64)
    return np.sign(value) * np.floor(np.abs(value) + 0.5)


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """(M, shift) as int64 arrays with real ~= M * 2^(shift - 31), M in [2^30, 2^31) (0 for 0).

    TFLite's QuantizeMultiplier: frexp, significand rounded half away from zero to 31 bits,
    a significand that rounds up to 2^31 is halved (shift + 1), a multiplier below 2^-31
    becomes 0, a shift above 30 saturates.
    """
    real = np.asarray(real, np.float64)
    if np.any(real < 0) or not np.all(np.isfinite(real)):
        raise ValueError(f"a quantized multiplier must be finite and non-negative, got {real}")
    significand, shift = np.frexp(real)
    fixed = round_half_away(significand * 2.0 ** 31).astype(np.int64)
    overflow = fixed == 2 ** 31
    fixed = np.where(overflow, fixed // 2, fixed)
    shift = np.where(overflow, shift + 1, shift).astype(np.int64)
    tiny = shift < -31
    fixed, shift = np.where(tiny, 0, fixed), np.where(tiny, 0, shift)
    big = shift > 30
    fixed, shift = np.where(big, 2 ** 31 - 1, fixed), np.where(big, 30, shift)
    zero = real == 0
    return np.where(zero, 0, fixed).astype(np.int64), np.where(zero, 0, shift).astype(np.int64)


# -- traced (JAX) ------------------------------------------------------------------------

def _truncating_shift(value, bits: int):
    """value / 2^bits rounded toward zero (C's integer division), for int64 `value`."""
    return jnp.where(value >= 0, value >> bits, -((-value) >> bits))


def rounding_divide_by_pot(x, exponent):
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent, ties away from zero (int64 in, int64 out)."""
    with x64():
        x = jnp.asarray(x, jnp.int64)
        exponent = jnp.asarray(exponent, jnp.int64)
        mask = (jnp.int64(1) << exponent) - 1
        remainder = x & mask
        threshold = (mask >> 1) + (x < 0).astype(jnp.int64)
        return (x >> exponent) + (remainder > threshold).astype(jnp.int64)


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp's SaturatingRoundingDoublingHighMul of int32 values: (a*b + nudge) / 2^31 with
    C's truncating division, which rounds ties toward +inf (-692.5 gives -692), and
    INT32_MIN * INT32_MIN saturating to INT32_MAX (int64 in, int64 out)."""
    with x64():
        a = jnp.asarray(a, jnp.int64)
        b = jnp.asarray(b, jnp.int64)
        product = a * b
        nudge = jnp.where(product >= 0, jnp.int64(1 << 30), jnp.int64(1 - (1 << 30)))
        result = _truncating_shift(product + nudge, 31)
        int_min = jnp.int64(-(2 ** 31))
        return jnp.where((a == int_min) & (b == int_min), jnp.int64(2 ** 31 - 1), result)


def multiply_by_quantized_multiplier(x, multiplier, shift, rounding: str = "double"):
    """About x * M * 2^(shift - 31) for an int32-valued accumulator x, as int32, rounded as
    `rounding` says (module docstring). multiplier and shift are the (NumPy) output of
    quantize_multiplier, scalars or arrays broadcasting against x (per channel: one value per
    last-axis channel)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    multiplier = np.asarray(multiplier, np.int64)
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    with x64():
        # x * (1 << left) is an int32 product in the kernels (wraps there; never does in practice)
        shifted = lax.convert_element_type((jnp.asarray(x).astype(jnp.int64) << left).astype(jnp.int32), jnp.int64)
        high = saturating_rounding_doubling_high_mul(shifted, multiplier)
        if rounding == "double":
            result = rounding_divide_by_pot(high, right)
        else:
            result = (high + ((np.int64(1) << right) >> 1)) >> right
        return result.astype(jnp.int32)


def multiply_in_vector_blocks(x, multiplier, shift, block: int, flat: bool = False):
    """multiply_by_quantized_multiplier as a vectorized kernel runs it: along the last axis
    (or the flattened array with `flat`), the elements in whole blocks of `block` are
    rounded the "vector" way, the remainder the "double" way."""
    values = jnp.asarray(x).reshape(-1) if flat else jnp.asarray(x)
    length = values.shape[-1]
    vectorized = np.arange(length) < length - length % block
    result = jnp.where(vectorized, multiply_by_quantized_multiplier(values, multiplier, shift, "vector"),
                       multiply_by_quantized_multiplier(values, multiplier, shift, "double"))
    return result.reshape(jnp.shape(x)) if flat else result


def multiply_by_quantized_multiplier_wide(x, multiplier, shift):
    """TFLite's MultiplyByQuantizedMultiplier for int64 accumulators (16x8 kernels): the
    multiplier is first reduced to 15 bits (rounded), then (x*m + 2^(s-1)) >> s with
    s = 15 - shift. x: int64-valued, |x| < 2^47."""
    multiplier = np.asarray(multiplier, np.int64)
    shift = np.asarray(shift, np.int64)
    reduced = np.where(multiplier < 0x7FFF0000, (multiplier + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - shift
    with x64():
        x = jnp.asarray(x).astype(jnp.int64)
        return ((x * reduced + (np.int64(1) << (total - 1))) >> total).astype(jnp.int32)


def exact_integer_product(fn, a, b, bound: float):
    """fn(a, b) for integer-valued a and b, exactly, as int64 (call it inside x64()).

    fn is bilinear with integer coefficients (a convolution, a matrix product), so its
    result is a sum of products a_i * b_j. XLA computes integer convolutions with slow
    generic loops on CPU, so this evaluates fn in floating point instead: float32 when
    `bound` (an upper bound of the sum of |a_i * b_j| over any output element, which the
    caller computes from the static weights) is below 2^24, where every partial sum is an
    exactly representable integer whatever the summation order, else float64 (exact below
    2^53). The result is rounded, so an inexact algorithm (Winograd on a GPU) that lands
    within 0.5 of the integer still gives it.
    """
    if bound < EXACT_FLOAT32_LIMIT:
        result = fn(jnp.asarray(a).astype(jnp.float32), jnp.asarray(b).astype(jnp.float32))
        with x64():
            return jnp.round(result).astype(jnp.int64)
    if bound >= 2.0 ** 53:
        raise ValueError(f"integer product bound {bound:.3g} exceeds what float64 holds exactly")
    with x64():
        result = fn(jnp.asarray(a).astype(jnp.float64), jnp.asarray(b).astype(jnp.float64))
        return jnp.round(result).astype(jnp.int64)


def saturate(x, dtype, low=None, high=None):
    """x clamped to [low, high] (default: dtype's range) and cast to dtype."""
    info = np.iinfo(dtype)
    low = info.min if low is None else max(int(low), info.min)
    high = info.max if high is None else min(int(high), info.max)
    with x64():
        return jnp.clip(jnp.asarray(x), low, high).astype(dtype)

