"""Quantized (int8 / uint8 / int16) CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED.

All four compute acc = sum((x - zp_x) * (w - zp_w)) + bias exactly (the op's float rule run
on the centred integers through fixed_point.exact_integer_product, so padding, strides,
dilation and groups are the float rule's), then requantize acc per output channel by
input_scale * weight_scale[c] / output_scale, add the output zero point and clamp to the
fused activation's range.

How the requantization rounds depends on the kernel LiteRT's x86 build dispatches to; each
path is a `_Kernel` below, measured against LiteRT with exact ties (tests/test_lower_quantized_nn.py):
- "ruy" (ruy's output stage: ungrouped CONV_2D, FULLY_CONNECTED, uint8 TRANSPOSE_CONV, and
  their 16x8 forms with int32 accumulators): fixed_point's "vector" rounding (halves up at
  both steps);
- "blocks_of_8" (TFLite's vectorized output stage: int8 DEPTHWISE_CONV_2D, int8 and int32-bias
  16x8 TRANSPOSE_CONV): ruy's rounding for whole blocks of 8 channels (NEON code run
  through NEON_2_SSE), gemmlowp's for the channels left over;
- "gemmlowp" (reference kernels: grouped CONV_2D; uint8 DEPTHWISE_CONV_2D): the right shift
  rounds halves away from zero (fixed_point's "double");
- "wide" (16x8 kernels with int64 accumulators): fixed_point.multiply_by_quantized_multiplier_wide;
- "float" (the 16x8 FULLY_CONNECTED reference kernel): acc * multiplier rounded in double precision.
"""
import dataclasses

import jax.numpy as jnp
import numpy as np

from . import fixed_point as fp
from . import nn
from .core import QUANTIZED, Ctx, register
from .quant import QuantParams, activation_range, type_name

INT8, UINT8, INT16 = np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)
INT32, INT64 = np.dtype(np.int32), np.dtype(np.int64)
BIAS_TYPE_CODES = {2: INT32, 4: INT64}  # the quantizedBiasType option (tensor type codes); 0 means unset
SIMD_CHANNELS = 8  # channels per block of TFLite's vectorized output stage


@dataclasses.dataclass(frozen=True)
class _Kernel:
    """How one LiteRT kernel path turns its accumulators into outputs."""

    rounding: str            # "ruy", "blocks_of_8", "gemmlowp", "wide" or "float" (module docstring)
    accumulator: np.dtype    # an int32 accumulator wraps as the kernel's does
    float_product: bool = False  # multiplier from float32(input_scale * weight_scale) (legacy per-tensor Prepare)


RUY = _Kernel("ruy", INT32)
BLOCKS_OF_8 = _Kernel("blocks_of_8", INT32)
GEMMLOWP = _Kernel("gemmlowp", INT32)
WIDE_16X8 = _Kernel("wide", INT64)


def _round_half_away(x):
    """std::round of float64 values, exactly."""
    whole = jnp.trunc(x)
    return whole + jnp.where(jnp.abs(x - whole) >= 0.5, jnp.sign(x), 0.0)


def _scale(acc, kernel: _Kernel, real, multiplier, shift):
    """The requantized accumulator (int32), per output channel along the last axis."""
    if kernel.rounding == "wide":
        return fp.multiply_by_quantized_multiplier_wide(acc, multiplier, shift)
    if kernel.rounding == "float":
        with fp.x64():
            rounded = _round_half_away(acc.astype(jnp.float64) * real)
            return jnp.clip(rounded, -2.0 ** 31, 2.0 ** 31 - 1).astype(jnp.int32)
    if kernel.rounding == "ruy":
        return fp.multiply_by_quantized_multiplier(acc, multiplier, shift, "vector")
    if kernel.rounding == "gemmlowp":
        return fp.multiply_by_quantized_multiplier(acc, multiplier, shift, "double")
    return fp.multiply_in_vector_blocks(acc, multiplier, shift, SIMD_CHANNELS)


def _multipliers(x_q: QuantParams, w_q: QuantParams, out_q: QuantParams, kernel: _Kernel, channels: int):
    """(real multipliers in double, M, shift), one per output channel, as the kernel's Prepare computes them."""
    if kernel.float_product:
        real = np.full(channels, np.float64(np.float32(x_q.s) * np.float32(w_q.s)) / np.float64(out_q.s))
    else:
        weight_scales = np.broadcast_to(w_q.scale.astype(np.float64), (channels,))
        real = np.float64(x_q.s) * weight_scales / np.float64(out_q.s)
    multiplier, shift = fp.quantize_multiplier(real)
    return real, multiplier, shift


def _product_bound(ctx: Ctx, channel_axis: int, x_q: QuantParams, w_zp: int) -> float:
    """A bound of sum |x_i * w_j| over one output element: the largest centred input times
    the largest per-channel sum of |centred weights| (from the weight dtype when not constant)."""
    x_span = max(x_q.zp - x_q.qmin, x_q.qmax - x_q.zp)
    w_t = ctx.inputs[1]
    if w_t.data is None:
        info = np.iinfo(w_t.dtype)
        taps = int(np.prod(w_t.shape)) // max(int(w_t.shape[channel_axis]), 1)
        return float(x_span) * max(w_zp - int(info.min), int(info.max) - w_zp) * taps
    centred = np.abs(np.moveaxis(w_t.data.astype(np.int64) - w_zp, channel_axis, 0))
    return float(x_span) * float(centred.reshape(centred.shape[0], -1).sum(axis=1).max(initial=0))


def _without_activation(ctx: Ctx) -> Ctx:
    """The op's context with fused activation NONE, so its float rule is a pure product."""
    return Ctx(dataclasses.replace(ctx.op, options={**ctx.op.options, "fusedActivationFunction": 0}), ctx.index)


def _requantized_product(ctx: Ctx, product, x, w, bias, x_q, w_q, out_q, kernel: _Kernel, channel_axis: int):
    """product(x - zp_x, w - zp_w) + bias, requantized per output channel (the last axis of
    the result), plus the output zero point, clamped to the fused activation's range."""
    channels = ctx.inputs[1].shape[channel_axis]
    real, multiplier, shift = _multipliers(x_q, w_q, out_q, kernel, channels)
    low, high = activation_range(ctx.opt("fusedActivationFunction"), out_q)
    bound = _product_bound(ctx, channel_axis, x_q, w_q.zp)
    with fp.x64():
        acc = fp.exact_integer_product(product, x.astype(jnp.int32) - x_q.zp, w.astype(jnp.int32) - w_q.zp, bound)
        if bias is not None:
            acc = acc + jnp.asarray(bias).astype(jnp.int64)
        if kernel.accumulator == INT32:  # wraps as the kernel's int32 sum does
            acc = acc.astype(jnp.int32).astype(jnp.int64)
        scaled = _scale(acc, kernel, real, multiplier, shift)
        return fp.saturate(scaled.astype(jnp.int64) + out_q.zp, out_q.dtype, low, high)


def _check_types(ctx: Ctx, x: int, bias: int, weight_axis: int, asymmetric_int8_weights: bool = False):
    """(input, weight, output) QuantParams of input `x` and the weights (input 1) after the checks
    LiteRT's four kernels share: int8 / uint8 / int16 activations with an output of the same
    type; uint8 weights for uint8 activations, else int8 ones, per channel along `weight_axis`
    and symmetric (LiteRT refuses or ignores their zero point) unless `asymmetric_int8_weights`
    allows it per tensor; int16 activations symmetric; the bias type. Refuses hybrid models."""
    x_t, w_t, out_t = ctx.inputs[x], ctx.inputs[1], ctx.outputs[0]
    if x_t.dtype.kind == "f":
        raise ctx.error("hybrid quantization (float activations with quantized weights) is not supported; "
                        "only fully quantized int8 / uint8 / int16 activations are")
    if x_t.dtype not in (INT8, UINT8, INT16):
        raise ctx.error(f"{type_name(x_t)} activations are not supported (int8, uint8 or int16)")
    if out_t.dtype != x_t.dtype:
        raise ctx.error(f"{type_name(x_t)} input with {type_name(out_t)} output is not supported (same type only)")
    weight_type = UINT8 if x_t.dtype == UINT8 else INT8
    if w_t.dtype != weight_type:
        raise ctx.error(f"{type_name(w_t)} weights with {type_name(x_t)} activations are not supported "
                        f"(LiteRT's kernel reads {weight_type} weights)")
    x_q, w_q, out_q = ctx.qparams(x), ctx.qparams(1), ctx.qparams(out_t)
    if x_q.per_channel or out_q.per_channel:
        raise ctx.error("per-channel quantized activations are not supported")
    if x_t.dtype == INT16 and (x_q.zp or out_q.zp):
        raise ctx.error("int16 activations must have zero point 0 (LiteRT's 16x8 kernels are symmetric)")
    if w_q.per_channel and x_t.dtype == UINT8:
        raise ctx.error("per-channel weights with uint8 activations are not supported (LiteRT uses one scale)")
    if w_q.per_channel and w_q.axis != weight_axis:
        raise ctx.error(f"per-channel weights must be quantized along axis {weight_axis}, not {w_q.axis}")
    if weight_type == INT8 and np.any(w_q.zero_point) and (w_q.per_channel or not asymmetric_int8_weights):
        raise ctx.error(f"int8 weights of {ctx.op.type} must have zero point 0 (LiteRT refuses or ignores others)")
    bias_t = _bias(ctx, bias)
    allowed = (INT32,) if x_t.dtype != INT16 else (INT64,) if ctx.op.type == "DEPTHWISE_CONV_2D" else (INT32, INT64)
    if bias_t is not None and bias_t.dtype not in allowed:
        raise ctx.error(f"bias '{bias_t.name}' is {type_name(bias_t)}; {x_t.dtype} activations need an "
                        f"{' or '.join(map(str, allowed))} bias")
    return x_q, w_q, out_q


def _bias(ctx: Ctx, index: int):
    """The bias Tensor, None when omitted."""
    return ctx.inputs[index] if len(ctx.inputs) > index else None


def _requested_bias_type(ctx: Ctx, bias_index: int) -> np.dtype | None:
    """The quantizedBiasType option of a 16x8 op (None when unset), checked against the bias."""
    code = ctx.opt("quantizedBiasType")
    if code not in (0, *BIAS_TYPE_CODES):
        raise ctx.error(f"quantizedBiasType {code} is neither INT32 (2) nor INT64 (4)")
    requested, bias = BIAS_TYPE_CODES.get(code), _bias(ctx, bias_index)
    if bias is not None and requested is not None and bias.dtype != requested:
        raise ctx.error(f"the bias is {type_name(bias)} but quantizedBiasType asks for {requested}")
    return requested


def _kernel_16x8(ctx: Ctx, bias_index: int, int32_kernel: _Kernel, int64_kernel: _Kernel) -> _Kernel:
    """The 16x8 kernel quantizedBiasType selects: LiteRT runs the int32 one only when the option
    asks for an int32 bias, else reads the bias as int64 (so it refuses an int32 bias then)."""
    if _requested_bias_type(ctx, bias_index) == INT32:
        return int32_kernel
    bias = _bias(ctx, bias_index)
    if bias is not None and bias.dtype == INT32:
        raise ctx.error("an int32 bias with int16 activations needs quantizedBiasType INT32 "
                        "(LiteRT reads the bias as int64 otherwise)")
    return int64_kernel


@register("CONV_2D", QUANTIZED)
def conv_2d_quantized(ctx, x, w, bias=None):
    """acc[c] = sum over the window of (x - zp_x) * (w[c] - zp_w) + bias[c] (SAME pads with zp_x);
    out = zp_out + round(acc * s_x * s_w[c] / s_out), clamped to the fused activation."""
    x_q, w_q, out_q = _check_types(ctx, 0, 2, 0)
    grouped = ctx.inputs[0].shape[3] != ctx.inputs[1].shape[3]  # LiteRT runs grouped convolutions on reference kernels
    if x_q.dtype == INT16:
        kernel = _kernel_16x8(ctx, 2, GEMMLOWP if grouped else RUY, WIDE_16X8)
    else:
        kernel = dataclasses.replace(GEMMLOWP if grouped else RUY, float_product=x_q.dtype == UINT8)
    linear = _without_activation(ctx)
    return _requantized_product(ctx, lambda a, b: nn.conv_2d(linear, a, b), x, w, bias, x_q, w_q, out_q, kernel, 0)


@register("DEPTHWISE_CONV_2D", QUANTIZED)
def depthwise_conv_2d_quantized(ctx, x, w, bias=None):
    """acc[c*M+m] = sum over the window of (x[c] - zp_x) * (w[c*M+m] - zp_w) + bias (M from shapes);
    out = zp_out + round(acc * s_x * s_w / s_out), clamped to the fused activation."""
    x_q, w_q, out_q = _check_types(ctx, 0, 2, 3)
    channels, out_channels = ctx.inputs[0].shape[3], ctx.inputs[1].shape[3]
    if x_q.dtype == INT16 and channels and ctx.opt("depthMultiplier") * channels != out_channels:
        raise ctx.error(f"depthMultiplier {ctx.opt('depthMultiplier')} disagrees with the shapes ({channels} input, "
                        f"{out_channels} filter channels), and LiteRT's 16x8 kernel trusts the option")
    kernel = {INT8: BLOCKS_OF_8, UINT8: dataclasses.replace(GEMMLOWP, float_product=True), INT16: WIDE_16X8}[x_q.dtype]
    linear = _without_activation(ctx)
    return _requantized_product(ctx, lambda a, b: nn.depthwise_conv_2d(linear, a, b), x, w, bias,
                                x_q, w_q, out_q, kernel, 3)


@register("TRANSPOSE_CONV", QUANTIZED)
def transpose_conv_quantized(ctx, output_shape, w, x, bias=None):
    """acc[o] = sum of (x - zp_x) * (w[o] - zp_w) scattered to out[i*s - pad + k] + bias[o];
    out = zp_out + round(acc * s_x * s_w[o] / s_out), clamped to the fused activation."""
    x_q, w_q, out_q = _check_types(ctx, 2, 3, 0)
    if x_q.dtype == INT16:
        kernel = _kernel_16x8(ctx, 3, BLOCKS_OF_8, WIDE_16X8)
    else:
        kernel = dataclasses.replace(BLOCKS_OF_8 if x_q.dtype == INT8 else RUY, float_product=x_q.dtype == UINT8)
    linear = _without_activation(ctx)
    shape = ctx.static(output_shape, "output_shape (input 0)")
    return _requantized_product(ctx, lambda a, b: nn.transpose_conv(linear, shape, b, a), x, w, bias,
                                x_q, w_q, out_q, kernel, 0)


@register("FULLY_CONNECTED", QUANTIZED)
def fully_connected_quantized(ctx, x, w, bias=None):
    """acc[b, o] = sum_i (x[b, i] - zp_x) * (w[o, i] - zp_w) + bias[o];
    out = zp_out + round(acc * s_x * s_w[o] / s_out), clamped to the fused activation."""
    x_q, w_q, out_q = _check_types(ctx, 0, 2, 0, asymmetric_int8_weights=True)
    kernel = RUY
    if x_q.dtype == INT16:
        # the int32-accumulator 16x8 kernel needs symmetric weights and no int64 bias
        bias_t = _bias(ctx, 2)
        int64_bias = _requested_bias_type(ctx, 2) == INT64 or (bias_t is not None and bias_t.dtype == INT64)
        if w_q.zp or int64_bias:
            kernel = _kernel_16x8(ctx, 2, _Kernel("float", INT32), _Kernel("float", INT64))
    kernel = dataclasses.replace(kernel, float_product=not w_q.per_channel and kernel.rounding != "float")
    linear = _without_activation(ctx)
    return _requantized_product(ctx, lambda a, b: nn.fully_connected(linear, a, b), x, w, bias,
                                x_q, w_q, out_q, kernel, 0)
