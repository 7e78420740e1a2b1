"""Quantized (int8 / uint8 / int16) elementwise arithmetic and activations.

Each rule computes what LiteRT's builtin kernel (the x86 wheel's kGenericOptimized one)
computes, integer for integer; tests/test_lower_quantized_elementwise.py compares them.

- Every fixed-point multiply of these kernels rounds the gemmlowp way ("double":
  SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT); the tests pin that with ties.
- LOGISTIC, TANH and HARD_SWISH are functions of one small integer: their value for every
  possible input (256, or 65536 for int16) is computed with NumPy while lowering, the way the
  kernel computes it, and the input indexes that table.
- One known difference: LiteRT's x86 ADD and MUL for int8 / uint8 narrow the requantized value
  to int16 without saturating in their vectorized lanes (NEON code run through NEON_2_SSE), so
  where that value leaves the int16 range (an output scale hundreds of times finer than the
  inputs need) LiteRT's output wraps, depending on the element's position; these rules saturate.
- int16 ADD without broadcast runs LiteRT's vectorized AddElementwiseInt16 on whole blocks of 16
  elements, which rescales each input with one rounding instead of two; the rule does the same
  (`_int16_add_vector_blocks`). int16 SUB and broadcasting ADD run the scalar code.
"""
import jax.numpy as jnp
import numpy as np

from . import fixed_point as fp
from . import libm
from .core import QUANTIZED, register
from .elementwise import maximum, minimum
from .quant import QuantParams, activation_range

ROUNDING = "double"
INT16 = np.dtype(np.int16)


# -- shared checks and pieces ----------------------------------------------------------------

def _operands(ctx, count: int) -> list[QuantParams]:
    """Per-tensor parameters of the first `count` inputs and of the output, all of one type."""
    tensors = [*ctx.inputs[:count], ctx.outputs[0]]
    params = [ctx.qparams(t) for t in tensors]
    dtypes = {np.dtype(q.dtype) for q in params}
    if len(dtypes) != 1:
        names = ", ".join(str(q.dtype) for q in params)
        raise ctx.error(f"quantized {ctx.op.type} needs inputs and output of one type (got {names})")
    for t, q in zip(tensors, params):
        if q.per_channel:
            raise ctx.error(f"'{t.name}' is quantized per channel; LiteRT's {ctx.op.type} takes one scale per tensor")
    return params


def _symmetric_int16(ctx, params: list[QuantParams]) -> None:
    """LiteRT's int16 kernels of these ops need zero points of 0."""
    if params[0].dtype == INT16 and any(q.zp != 0 for q in params):
        raise ctx.error(f"int16 {ctx.op.type} needs zero points of 0 (LiteRT's kernel rejects others)")


def _fused_range(ctx, out: QuantParams) -> tuple[int, int]:
    try:
        return activation_range(ctx.opt("fusedActivationFunction"), out)
    except ValueError as e:
        raise ctx.error(str(e)) from None


def _rescale(x, multiplier, shift):
    return fp.multiply_by_quantized_multiplier(x, multiplier, shift, ROUNDING)


def _checked_log2(scale: float) -> tuple[bool, int]:
    """TFLite's CheckedLog2: (scale is a power of two within 1e-3 in log2, rounded log2)."""
    log2 = np.float32(np.log(np.float32(scale))) * np.float32(1.0 / np.log(2.0))
    rounded = np.round(log2)
    return bool(abs(log2 - rounded) < 1e-3), int(rounded)


def _lookup(x, table: np.ndarray, qmin: int):
    """table[x - qmin] for integer x (table covers the whole input type)."""
    return jnp.take(jnp.asarray(table), x.astype(jnp.int32) - qmin)


def _all_values(dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.arange(info.min, info.max + 1, dtype=np.int64)


# -- ADD / SUB ---------------------------------------------------------------------------------

def _add_sub(ctx, a, b, sign: int):
    q1, q2, out = _operands(ctx, 2)
    low, high = _fused_range(ctx, out)
    _symmetric_int16(ctx, [q1, q2, out])
    if out.dtype == INT16:
        logs = [_checked_log2(q.s) for q in (q1, q2, out)]
        if ctx.opt("potScaleInt16") and all(pot for pot, _ in logs):
            return _add_sub_pot_int16(ctx, a, b, sign, [q1, q2, out], [e for _, e in logs], low, high)
    left_shift = 15 if out.dtype == INT16 else 20
    twice_max = 2.0 * max(np.float64(q1.s), np.float64(q2.s))
    real_output = twice_max / (np.float64(1 << left_shift) * np.float64(out.s))
    if real_output >= 1.0:
        raise ctx.error(f"output scale {out.s:g} is too small for the input scales {q1.s:g}, {q2.s:g} "
                        f"(LiteRT's kernel needs 2 * max(input scales) < 2^{left_shift} * output scale)")
    m1, s1 = fp.quantize_multiplier(np.float64(q1.s) / twice_max)
    m2, s2 = fp.quantize_multiplier(np.float64(q2.s) / twice_max)
    mo, so = fp.quantize_multiplier(real_output)
    with fp.x64():
        x1 = _rescale((a.astype(jnp.int32) - q1.zp) << left_shift, m1, s1)
        x2 = _rescale((b.astype(jnp.int32) - q2.zp) << left_shift, m2, s2)
        if out.dtype == INT16 and ctx.op.type == "ADD" and a.shape == b.shape:
            x1, x2 = _int16_add_vector_blocks(a, x1, m1, s1), _int16_add_vector_blocks(b, x2, m2, s2)
        y = _rescale(x1 + sign * x2, mo, so) + out.zp
        return fp.saturate(y, out.dtype, low, high)


def _int16_add_vector_blocks(x, scalar, multiplier, shift):
    """An int16 ADD input rescaled as LiteRT's x86 AddElementwiseInt16 does without broadcast
    (NEON code through NEON_2_SSE): in whole blocks of 16 elements of the flattened array the
    input's right shift is folded into the left shift of 15 before one rounding high multiply
    (vqrdmulh), where the scalar code (`scalar`, the remaining elements) rounds twice."""
    size = int(np.prod(x.shape))
    vectorized = (np.arange(size) < size - size % 16).reshape(x.shape)
    total = 15 + int(shift)
    centred = x.astype(jnp.int64)  # int16 zero points are 0
    shifted = centred << total if total >= 0 else centred >> -total
    vector = fp.saturating_rounding_doubling_high_mul(shifted, multiplier)
    return jnp.where(vectorized, vector, scalar.astype(jnp.int64))


def _add_sub_pot_int16(ctx, a, b, sign, params, log2s, low, high):
    """LiteRT's int16 path for power-of-two scales (its LSTM case): an input on a finer scale than
    the output is rounding-shifted right onto it, the other must already be on it."""
    shifts = [log2s[0] - log2s[2], log2s[1] - log2s[2]]
    if max(shifts) > 0 or 0 not in shifts:
        raise ctx.error(f"int16 {ctx.op.type} with power-of-two scales (potScaleInt16) needs one input on the "
                        "output's scale and the other on a finer one (LiteRT's kernel rejects these scales)")
    if ctx.op.type == "ADD" and a.shape != b.shape:
        raise ctx.error("int16 ADD with power-of-two scales (potScaleInt16) does not broadcast in LiteRT "
                        f"(its kernel aborts on shapes {list(a.shape)} and {list(b.shape)})")
    with fp.x64():
        x1 = fp.rounding_divide_by_pot(a.astype(jnp.int64), -shifts[0])
        x2 = fp.rounding_divide_by_pot(b.astype(jnp.int64), -shifts[1])
        return fp.saturate(x1 + sign * x2, INT16, low, high)


@register("ADD", QUANTIZED)
def add_quantized(ctx, a, b):
    """Both inputs onto twice the larger input scale after a left shift (20 bits, int16 15), summed,
    requantized to the output, fused activation as a clamp; int16 power-of-two scales: shifts only."""
    return _add_sub(ctx, a, b, 1)


@register("SUB", QUANTIZED)
def sub_quantized(ctx, a, b):
    """As ADD with the second input negated after rescaling."""
    return _add_sub(ctx, a, b, -1)


# -- MUL, MAXIMUM, MINIMUM -----------------------------------------------------------------------

@register("MUL", QUANTIZED)
def mul_quantized(ctx, a, b):
    """(x1 - zp1) * (x2 - zp2) requantized once by s1 * s2 / s_out (float32, as LiteRT's
    Prepare computes it), plus zp_out, fused activation as a clamp."""
    q1, q2, out = _operands(ctx, 2)
    _symmetric_int16(ctx, [q1, q2, out])
    low, high = _fused_range(ctx, out)
    multiplier, shift = fp.quantize_multiplier(np.float32(q1.scale[0] * q2.scale[0]) / out.scale[0])
    with fp.x64():
        product = (a.astype(jnp.int32) - q1.zp) * (b.astype(jnp.int32) - q2.zp)
        return fp.saturate(_rescale(product, multiplier, shift) + out.zp, out.dtype, low, high)


def _same_quantization(ctx):
    params = _operands(ctx, 2)
    if len({(q.s, q.zp) for q in params}) != 1:
        described = ", ".join(f"{q.s:g}/{q.zp}" for q in params)
        raise ctx.error(f"quantized {ctx.op.type} needs one scale and zero point for both inputs and the output "
                        f"(got {described}); LiteRT compares the stored integers, ignoring the scales")


@register("MAXIMUM", QUANTIZED)
def maximum_quantized(ctx, a, b):
    """max(x1, x2) of the stored integers: inputs and output share one quantization."""
    _same_quantization(ctx)
    return maximum(ctx, a, b)


@register("MINIMUM", QUANTIZED)
def minimum_quantized(ctx, a, b):
    """min(x1, x2) of the stored integers: inputs and output share one quantization."""
    _same_quantization(ctx)
    return minimum(ctx, a, b)


# -- RELU family, LEAKY_RELU -----------------------------------------------------------------------

def _relu_x(ctx, x, low: float | None, high: float | None, int16: bool = True):
    """LiteRT's quantized ReluX: the input requantized to the output scale (multiplier
    s_in / s_out in float32), then clamped to [q(low), q(high)] of the output."""
    q, out = _operands(ctx, 1)
    if out.dtype == INT16 and not int16:
        raise ctx.error(f"int16 {ctx.op.type} is not supported by LiteRT (int8 and uint8 only)")
    _symmetric_int16(ctx, [q, out])
    multiplier, shift = fp.quantize_multiplier(np.float32(q.scale[0] / out.scale[0]))
    clamp_low = out.qmin if low is None else max(out.qmin, out.quantize_float(low))
    clamp_high = out.qmax if high is None else min(out.qmax, out.quantize_float(high))
    with fp.x64():
        y = _rescale(x.astype(jnp.int32) - q.zp, multiplier, shift) + out.zp
        return fp.saturate(y, out.dtype, clamp_low, clamp_high)


@register("RELU", QUANTIZED)
def relu_quantized(ctx, x):
    """Requantize to the output, clamp below at q(0)."""
    return _relu_x(ctx, x, 0.0, None)


@register("RELU6", QUANTIZED)
def relu6_quantized(ctx, x):
    """Requantize to the output, clamp to [q(0), q(6)]."""
    return _relu_x(ctx, x, 0.0, 6.0)


@register("RELU_N1_TO_1", QUANTIZED)
def relu_n1_to_1_quantized(ctx, x):
    """Requantize to the output, clamp to [q(-1), q(1)] (int8 and uint8)."""
    return _relu_x(ctx, x, -1.0, 1.0, int16=False)


@register("LEAKY_RELU", QUANTIZED)
def leaky_relu_quantized(ctx, x):
    """x - zp_in requantized by s_in / s_out where it is >= 0, by alpha * s_in / s_out below
    (float32 as LiteRT's Prepare computes them), plus zp_out, saturated."""
    q, out = _operands(ctx, 1)
    _symmetric_int16(ctx, [q, out])
    alpha = np.float32(ctx.opt("alpha"))
    identity = fp.quantize_multiplier(np.float32(q.scale[0] / out.scale[0]))
    multiplier, shift = fp.quantize_multiplier(np.float32(q.scale[0] * abs(alpha) / out.scale[0]))
    with fp.x64():
        centred = x.astype(jnp.int32) - q.zp
        if alpha >= 0:
            below = _rescale(centred, multiplier, shift)
        elif out.dtype == INT16:  # the int16 kernel multiplies by the negative fixed-point multiplier
            below = _rescale(centred, -multiplier, shift)
        else:  # the 8-bit kernel scales by |alpha| and negates the rounded result
            below = -_rescale(centred, multiplier, shift)
        y = jnp.where(centred >= 0, _rescale(centred, *identity), below)
        return fp.saturate(y + out.zp, out.dtype)


# -- LOGISTIC, TANH, HARD_SWISH: tables over every input value -----------------------------------

def _float_table(q: QuantParams, out: QuantParams, fn) -> np.ndarray:
    """LiteRT's LUTPopulate for 8-bit types, in float32: for every input value v,
    round(fn(s_in * (v - zp_in)) / s_out) + zp_out, saturated. fn maps float64 to float64 and
    its result is rounded to float32 once (what a correctly rounded libm call returns)."""
    values = _all_values(q.dtype)
    dequantized = np.float32(q.s) * (values - q.zp).astype(np.float32)
    transformed = fn(dequantized.astype(np.float64)).astype(np.float32)
    rescaled = fp.round_half_away(transformed * (np.float32(1) / np.float32(out.s)))
    return np.clip(rescaled + out.zp, out.qmin, out.qmax).astype(out.dtype)


def _sigmoid_float32(x: np.ndarray) -> np.ndarray:
    """1.0f / (1.0f + expf(-x)) in float32 steps (expf: the C library's, libm.py)."""
    with np.errstate(over="ignore"):  # exp overflows to inf, and 1 / (1 + inf) = 0 as in C
        e = libm.expf(-np.asarray(x, np.float32))
    return (np.float32(1) / (np.float32(1) + e)).astype(np.float64)


def _tanh_float32(x: np.ndarray) -> np.ndarray:
    """tanhf(x), the C library's (libm.py)."""
    return libm.tanhf(x).astype(np.float64)


#: sigmoid(i / 24) for i in 0..255 in unsigned 0.16 fixed point, as LiteRT stores it for its
#: int16 LOGISTIC and TANH (reference_integer_ops; no rounding rule reproduces these values:
#: rounding sigmoid(i / 24) * 65536 in double or float32 differs at 44 entries, which moved
#: int16 outputs by 1 LSB).
_SIGMOID_TABLE = np.array([
    32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149, 40794, 41432, 42064, 42688,
    43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369, 47911, 48443, 48964, 49475, 49975, 50464, 50942, 51409,
    51865, 52311, 52745, 53169, 53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174, 56503, 56823, 57133, 57433,
    57724, 58007, 58280, 58544, 58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370, 60565, 60753, 60935, 61110,
    61279, 61441, 61599, 61750, 61896, 62036, 62172, 62302, 62428, 62549, 62666, 62778, 62886, 62990, 63090, 63186,
    63279, 63368, 63454, 63536, 63615, 63691, 63765, 63835, 63903, 63968, 64030, 64090, 64148, 64204, 64257, 64308,
    64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652, 64687, 64721, 64754, 64786, 64816, 64845, 64873, 64900,
    64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079, 65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208,
    65221, 65234, 65246, 65258, 65269, 65280, 65291, 65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360, 65367,
    65374, 65381, 65387, 65393, 65399, 65404, 65410, 65415, 65420, 65425, 65429, 65433, 65438, 65442, 65445, 65449,
    65453, 65456, 65459, 65462, 65465, 65468, 65471, 65474, 65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491,
    65493, 65495, 65497, 65498, 65500, 65501, 65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513,
    65514, 65515, 65516, 65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522, 65523, 65523, 65524, 65524,
    65525, 65525, 65526, 65526, 65526, 65527, 65527, 65528, 65528, 65528, 65529, 65529, 65529, 65529, 65530, 65530,
    65530, 65530, 65531, 65531, 65531, 65531, 65531, 65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533,
    65533, 65533, 65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65535,
], dtype=np.int64)


def _int16_table_interpolated(scale: float, logistic: bool) -> np.ndarray:
    """LiteRT's int16 LOGISTIC / TANH for a general input scale (reference_integer_ops): the
    input rescaled to 1/(3 * 4096) units (x * M >> shift, M and shift as its Prepare finds
    them), then interpolated in _SIGMOID_TABLE (tanh(x) = 2 sigmoid(2x) - 1)."""
    multiplier = np.float64(np.float32(scale)) * 4096.0 * 3.0
    shift = 0
    while multiplier <= 32767.0 / 2.0 and shift <= 30:
        shift += 1
        multiplier *= 2.0
    x = _all_values(np.int16)
    rounding = (1 << (shift - 1)) if shift > 0 else 0
    scaled = (x * int(multiplier) + rounding).astype(np.int32).astype(np.int64) >> shift
    magnitude = np.abs(scaled)
    fraction_bits = 9 if logistic else 8
    index = magnitude >> fraction_bits
    low = _SIGMOID_TABLE[np.minimum(index, 254)]
    high = _SIGMOID_TABLE[np.minimum(index, 254) + 1]
    interpolated = (low << fraction_bits) + (magnitude & ((1 << fraction_bits) - 1)) * (high - low)
    if logistic:
        interpolated = np.where(index >= 255, 0x7FFF << 10, interpolated)
        y = np.where(scaled >= 0, interpolated + (1 << 9), (1 << 25) - interpolated + (1 << 9) - 1) >> 10
    else:
        interpolated = np.where(index >= 255, 0xFFFF << 8, interpolated)
        y = np.where(scaled >= 0, interpolated - (1 << 23) + (1 << 7), (1 << 23) - interpolated + (1 << 7) - 1) >> 8
    return y.astype(np.int16)


class _Gemmlowp16:
    """gemmlowp's int16 fixed-point logistic and tanh (LiteRT's int16 kernels for power-of-two
    input scales), on NumPy int64 arrays holding int16 values; wrap() is C's int16 overflow."""

    @staticmethod
    def wrap(x):
        return ((x + 32768) & 0xFFFF) - 32768

    @staticmethod
    def constant(raw32: int) -> int:
        """A 32-bit fixed-point constant rounded to 16 bits, ties away from zero (RescaleConstantInitializer)."""
        return (raw32 >> 16) + int((raw32 & 0xFFFF) > 0x7FFF + (raw32 < 0))

    @staticmethod
    def mul(a, b):
        """SaturatingRoundingDoublingHighMul on int16."""
        product = a * b
        nudge = np.where(product >= 0, 1 << 14, 1 - (1 << 14))
        result = np.trunc((product + nudge) / 32768).astype(np.int64)  # C division truncates
        return np.where((a == -32768) & (b == -32768), 32767, result)

    @classmethod
    def divide_by_pot(cls, x, exponent: int):
        """RoundingDivideByPOT on int16: ties away from zero. Its mask is an int16 too, so an
        exponent of 16 or more gives +-1 instead of 0 (as in C; HARD_SWISH can get there)."""
        mask = cls.wrap(np.int64((1 << exponent) - 1))
        threshold = cls.wrap((mask >> 1) + (x < 0))
        return (x >> exponent) + ((x & mask) > threshold)

    @classmethod
    def multiply_by_pot(cls, x, exponent: int):
        """SaturatingRoundingMultiplyByPOT: saturating left shift, or rounding right shift."""
        if exponent < 0:
            return cls.divide_by_pot(x, -exponent)
        return np.clip(x << exponent, -32768, 32767)

    @classmethod
    def exp_on_negative_values(cls, a, integer_bits: int):
        """exp(a) for a <= 0 given with `integer_bits`, as 0.15 fixed point."""
        fractional_bits = 15 - integer_bits
        quarter = 1 << (fractional_bits - 2)
        a_mod_quarter_minus_quarter = cls.wrap((a & (quarter - 1)) - quarter)
        # exp on [-1/4, 0): Taylor expansion around -1/8
        x = cls.wrap(cls.multiply_by_pot(a_mod_quarter_minus_quarter, integer_bits) + (1 << 12))
        x2 = cls.mul(x, x)
        x3 = cls.mul(x2, x)
        x4 = cls.mul(x2, x2)
        x4_over_4 = cls.multiply_by_pot(x4, -2)
        polynomial = cls.multiply_by_pot(
            cls.wrap(cls.mul(cls.wrap(x4_over_4 + x3), cls.constant(715827883)) + x2), -1)
        exp_1_8 = cls.constant(1895147668)
        result = np.clip(exp_1_8 + cls.mul(exp_1_8, cls.wrap(x + polynomial)), -32768, 32767)
        remainder = cls.wrap(a_mod_quarter_minus_quarter - a)
        # exp(-2^k) factors for the bits of the remainder above the quarter
        for exponent, multiplier in [(-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                                     (2, 39332535), (3, 720401), (4, 242)]:
            if integer_bits > exponent:
                bit = cls.wrap(np.int64(1) << (fractional_bits + exponent))
                result = np.where(remainder & bit != 0, cls.mul(result, cls.constant(multiplier)), result)
        return np.where(a == 0, 32767, result)

    @classmethod
    def _newton_reciprocal(cls, a):
        """x ~ 1 / ((1 + a) / 2) in 2.13 fixed point for a in 0.15 (three Newton-Raphson steps)."""
        half_denominator = np.trunc((a + 32767 + np.where(a + 32767 >= 0, 1, -1)) / 2).astype(np.int64)
        x = cls.wrap(cls.constant(1515870810) + cls.mul(half_denominator, cls.constant(-1010580540)))
        for _ in range(3):
            one_minus = cls.wrap((1 << 13) - cls.mul(half_denominator, x))
            x = cls.wrap(x + cls.multiply_by_pot(cls.mul(x, one_minus), 2))
        return x

    @classmethod
    def logistic(cls, a):
        """gemmlowp::logistic of a 3.12 input, as 0.15."""
        positive = a > 0
        magnitude = np.where(positive, a, cls.wrap(-a))
        exp = cls.exp_on_negative_values(cls.wrap(-magnitude), 3)
        if_positive = cls.multiply_by_pot(cls._newton_reciprocal(exp), 1)
        result = np.where(positive, if_positive, cls.wrap(32767 - if_positive))
        return np.where(a == 0, cls.constant(1 << 30), result)

    @classmethod
    def tanh(cls, a):
        """gemmlowp::tanh of a 3.12 input, as 0.15."""
        negative = a < 0
        n = np.where(negative, a, cls.wrap(-a))
        exp = cls.exp_on_negative_values(n, 4)  # exp(2n): n read with one more integer bit
        t = cls.multiply_by_pot(cls.wrap(cls._newton_reciprocal(exp) - (1 << 13)), 2)
        return np.where(a == 0, 0, np.where(negative, cls.wrap(-t), t))


def _int16_table(q: QuantParams, logistic: bool) -> np.ndarray:
    """The int16 kernel LiteRT picks: gemmlowp's fixed point for a 3.12 input (power-of-two
    scale 2^-12; TANH also 2^-11, doubled first), else the interpolated sigmoid table."""
    pot, log2 = _checked_log2(q.s)
    left_shift = 12 + log2
    if pot and (left_shift == 0 or not logistic and left_shift == 1):
        x = _all_values(np.int16)
        if left_shift == 1:
            x = _Gemmlowp16.multiply_by_pot(x, 1)
        return (_Gemmlowp16.logistic(x) if logistic else _Gemmlowp16.tanh(x)).astype(np.int16)
    return _int16_table_interpolated(q.s, logistic)


def _sigmoid_like(ctx, x, logistic: bool):
    q, out = _operands(ctx, 1)
    if out.dtype == INT16:
        _symmetric_int16(ctx, [q, out])
        exact = np.float32(out.s) == np.float32(2.0 ** -15)
        if not (exact if logistic else _checked_log2(out.s) == (True, -15)):
            raise ctx.error(f"int16 {ctx.op.type} needs the output scale 1/32768 (got {out.s:g})")
        return _lookup(x, _int16_table(q, logistic), q.qmin)
    if logistic and np.float32(out.s) != np.float32(1 / 256):
        raise ctx.error(f"{out.dtype} LOGISTIC needs the output scale 1/256 (got {out.s:g}); LiteRT rejects others")
    table = _float_table(q, out, _sigmoid_float32 if logistic else _tanh_float32)
    return _lookup(x, table, q.qmin)


@register("LOGISTIC", QUANTIZED)
def logistic_quantized(ctx, x):
    """8-bit: a table of round(sigmoid(s_in (v - zp_in)) / s_out) + zp_out built in float32
    (output scale 1/256); int16: LiteRT's fixed-point sigmoid, tabulated over all inputs."""
    return _sigmoid_like(ctx, x, logistic=True)


@register("TANH", QUANTIZED)
def tanh_quantized(ctx, x):
    """8-bit: a table of round(tanh(s_in (v - zp_in)) / s_out) + zp_out built in float32;
    int16: LiteRT's fixed-point tanh (output scale 2^-15), tabulated over all inputs."""
    return _sigmoid_like(ctx, x, logistic=False)


def _int16_multiplier(real) -> tuple[int, int]:
    """QuantizeMultiplier, then the significand rounded to 16 bits (DownScaleInt32ToInt16Multiplier)."""
    multiplier, shift = (int(v) for v in fp.quantize_multiplier(np.float64(real)))
    if multiplier >= 2 ** 31 - 1 - (1 << 15):
        return 32767, shift
    return (multiplier + (1 << 15)) >> 16, shift


def _hard_swish_table(ctx, q: QuantParams, out: QuantParams) -> np.ndarray:
    """LiteRT's 8-bit hard swish, for every input value: the input on a 2^7 finer scale; a
    'relu-ish' factor min(max(x + 3, 0), 6) / 6 in 0.15 fixed point; their product (rounding
    toward zero) shifted onto the output scale. Multipliers in float32 as its Prepare."""
    hires_scale = np.float32(1 / 128) * np.float32(q.s)
    output_multiplier, output_shift = _int16_multiplier(hires_scale / np.float32(out.s))
    if output_shift > 0:
        raise ctx.error(f"output scale {out.s:g} is too fine for input scale {q.s:g} (LiteRT's HARD_SWISH "
                        "needs s_in / 128 <= s_out)")
    reluish_multiplier, reluish_shift = _int16_multiplier(hires_scale / np.float32(3 / 32768))
    g = _Gemmlowp16
    hires = (_all_values(q.dtype) - q.zp) * 128
    on_output_scale = g.mul(hires, output_multiplier)
    reluish = hires
    if reluish_shift > 0:
        # saturating shift by all but one bit, multiply, then the last bit (saturation there wins)
        reluish = np.clip(reluish << (reluish_shift - 1), -32768, 32767)
    reluish = g.mul(reluish, reluish_multiplier)
    if reluish_shift > 0:
        reluish = np.clip(reluish << 1, -32768, 32767)
    elif reluish_shift < 0:
        reluish = g.divide_by_pot(reluish, -reluish_shift)
    reluish = (reluish + (1 << 15)) >> 1
    product = reluish * on_output_scale
    preshift = np.where((reluish == -32768) & (on_output_scale == -32768), 32767,
                        np.trunc(product / 32768).astype(np.int64))
    y = g.wrap(g.divide_by_pot(preshift, -output_shift) + out.zp)
    return np.clip(y, out.qmin, out.qmax).astype(out.dtype)


@register("HARD_SWISH", QUANTIZED)
def hard_swish_quantized(ctx, x):
    """x * relu6(x + 3) / 6 in LiteRT's 16-bit fixed point (int8 and uint8), tabulated over all inputs."""
    q, out = _operands(ctx, 1)
    if out.dtype == INT16:
        raise ctx.error("int16 HARD_SWISH is not supported by LiteRT (int8 and uint8 only)")
    return _lookup(x, _hard_swish_table(ctx, q, out), q.qmin)
