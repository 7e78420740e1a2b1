"""Quantized CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED against LiteRT's
builtin kernels, bit for bit: random inputs over the full integer range, and power-of-two
scale ratios with small weights, whose many exact ties (negative ones too) tell the
roundings of LiteRT's kernel paths apart."""
from dataclasses import dataclass

import numpy as np
import pytest

from jaxfuse.builder import ModelBuilder, quantization
from jaxfuse.lowering import LoweringError, lower
from quantized import QConst, QIn, assert_matches_litert, quantized_op, random_q
from test_lower_ops import In

SAME, VALID = 0, 1
NONE, RELU, RELU_N1_TO_1, RELU6 = 0, 1, 2, 3
INT32_BIAS = 2  # the quantizedBiasType option's code for INT32


@dataclass(frozen=True)
class Family:
    """The types and zero points of one quantization scheme."""

    x: type            # activation dtype (input and output)
    x_zp: int
    out_zp: int
    w: type            # weight dtype
    w_zp: int
    per_channel: bool
    bias: type
    options: tuple = ()  # extra op options, as (name, value) pairs

    @property
    def typical(self) -> float:
        """The standard deviation of values drawn uniformly over the activation range."""
        return (np.iinfo(self.x).max - np.iinfo(self.x).min) / 12 ** 0.5


FAMILIES = {
    "int8": Family(np.int8, -3, 5, np.int8, 0, True, np.int32),
    "int8_per_tensor": Family(np.int8, 17, -9, np.int8, 0, False, np.int32),
    "uint8": Family(np.uint8, 131, 124, np.uint8, 119, False, np.int32),
    "int16": Family(np.int16, 0, 0, np.int8, 0, True, np.int64),
    "int16_int32_bias": Family(np.int16, 0, 0, np.int8, 0, True, np.int32, (("quantizedBiasType", INT32_BIAS),)),
    "int8_asymmetric_weights": Family(np.int8, 4, -2, np.int8, 3, False, np.int32),    # FULLY_CONNECTED only
    "int16_asymmetric_weights": Family(np.int16, 0, 0, np.int8, -2, False, np.int64),  # FULLY_CONNECTED only
}
CONV_FAMILIES = ["int8", "int8_per_tensor", "uint8", "int16", "int16_int32_bias"]
DEPTHWISE_FAMILIES = ["int8", "int8_per_tensor", "uint8", "int16"]  # LiteRT's 16x8 depthwise takes int64 biases only
FC_FAMILIES = list(FAMILIES)


def _scales(fam: Family, channels: int, ties: bool):
    if ties:  # powers of two: multipliers 2^-k make ties
        scales = 0.25 * 0.5 ** (np.arange(channels) % 3)
    else:
        scales = 0.004 + 0.012 * np.linspace(0, 1, channels)
    return scales.astype(np.float32) if fam.per_channel else np.float32(scales[0])


def layer(op, rng, fam: Family, x_shape, w_shape, channel_axis, options=None, *, ties=False, bias=True,
          output_shape=None):
    """A one-op model of `op` with random int inputs and weights in family `fam` and a random
    bias (none if `bias` is False, zeros if "zeros"); the output scale spreads the outputs over
    the output type (a power of two when `ties`)."""
    channels = w_shape[channel_axis]
    x_scale = 0.5 if ties else (0.02 if fam.x != np.int16 else 2e-4)
    w_scale = _scales(fam, channels, ties)
    w = (rng.integers(-3, 4, w_shape) + fam.w_zp).astype(fam.w) if ties else random_q(rng, w_shape, fam.w)
    x = random_q(rng, x_shape, fam.x)
    acc_typical = fam.typical * (2 if ties else 74) * (np.prod(w_shape) / channels) ** 0.5
    out_scale = x_scale * float(np.mean(w_scale)) * acc_typical / (40 if fam.x != np.int16 else 8000)
    if ties:
        out_scale = 2.0 ** np.round(np.log2(out_scale))
    b = rng.integers(-acc_typical, acc_typical, channels).astype(fam.bias) * (bias != "zeros")
    operands = [QIn(x, x_scale, fam.x_zp), QConst(w, w_scale, fam.w_zp, channel_axis),
                QConst(b, x_scale * np.asarray(w_scale, np.float64), 0) if bias else None]
    opts = {**dict(fam.options), **(options or {})}
    if op == "TRANSPOSE_CONV":
        operands = [np.asarray(output_shape, np.int32), operands[1], operands[0], operands[2]]
        output_shape = None
    return quantized_op(op, operands, opts, out_dtype=fam.x, out_scale=out_scale, out_zero_point=fam.out_zp,
                        output_shape=output_shape)


# -- CONV_2D ---------------------------------------------------------------------------------

@pytest.mark.parametrize("family", CONV_FAMILIES)
@pytest.mark.parametrize("padding,stride,dilation,act", [(SAME, (1, 1), 1, NONE), (VALID, (2, 1), 1, RELU),
                                                         (SAME, (2, 3), 2, RELU6), (SAME, (1, 2), 1, RELU_N1_TO_1)])
def test_conv_2d(save_model, rng, family, padding, stride, dilation, act):
    options = {"padding": padding, "strideH": stride[0], "strideW": stride[1], "dilationHFactor": dilation,
               "dilationWFactor": dilation, "fusedActivationFunction": act}
    model, feeds = layer("CONV_2D", rng, FAMILIES[family], (2, 9, 8, 3), (5, 3, 2, 3), 0, options)
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("family", CONV_FAMILIES)
@pytest.mark.parametrize("grouped", [False, True])
def test_conv_2d_ties(save_model, rng, family, grouped):
    model, feeds = layer("CONV_2D", rng, FAMILIES[family], (1, 8, 8, 4), (6, 3, 3, 2 if grouped else 4), 0,
                         {"padding": SAME}, ties=True)
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("family", CONV_FAMILIES)
def test_conv_2d_grouped(save_model, rng, family):
    model, feeds = layer("CONV_2D", rng, FAMILIES[family], (1, 6, 6, 6), (4, 3, 3, 3), 0,
                         {"padding": SAME, "fusedActivationFunction": RELU})
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("family", ["int8", "int16"])
def test_conv_2d_without_bias_is_a_zero_bias(save_model, run_jax, family):
    """LiteRT's CONV_2D refuses an omitted bias; jaxfuse reads it as zeros (as the float rule does)."""
    def model(bias):
        return layer("CONV_2D", np.random.default_rng(1), FAMILIES[family], (1, 5, 5, 3), (4, 3, 3, 3), 0,
                     {"padding": SAME}, bias=bias)
    (without, feeds), (zeros, _) = model(False), model("zeros")
    expected = assert_matches_litert(save_model(zeros), feeds, exact=True)
    np.testing.assert_array_equal(run_jax(without, feeds)[0], expected[0])


# -- DEPTHWISE_CONV_2D -----------------------------------------------------------------------

@pytest.mark.parametrize("family", DEPTHWISE_FAMILIES)
@pytest.mark.parametrize("channels,multiplier,padding,stride,dilation,act", [
    (12, 1, SAME, 1, 1, NONE),     # one block of 8 channels and a tail of 4 in LiteRT's output stage
    (3, 2, VALID, 2, 1, RELU6),
    (8, 2, SAME, 1, 2, RELU),
    (5, 1, SAME, 2, 1, RELU_N1_TO_1)])
def test_depthwise_conv_2d(save_model, rng, family, channels, multiplier, padding, stride, dilation, act):
    options = {"padding": padding, "strideH": stride, "strideW": stride, "dilationHFactor": dilation,
               "dilationWFactor": dilation, "depthMultiplier": multiplier, "fusedActivationFunction": act}
    model, feeds = layer("DEPTHWISE_CONV_2D", rng, FAMILIES[family], (2, 7, 6, channels),
                         (1, 3, 3, channels * multiplier), 3, options)
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("family", DEPTHWISE_FAMILIES)
@pytest.mark.parametrize("channels,multiplier", [(20, 1), (6, 2)])
def test_depthwise_conv_2d_ties(save_model, rng, family, channels, multiplier):
    model, feeds = layer("DEPTHWISE_CONV_2D", rng, FAMILIES[family], (1, 8, 8, channels),
                         (1, 3, 3, channels * multiplier), 3, {"padding": SAME, "depthMultiplier": multiplier},
                         ties=True)
    assert_matches_litert(save_model(model), feeds, exact=True)


# -- TRANSPOSE_CONV --------------------------------------------------------------------------

@pytest.mark.parametrize("family", CONV_FAMILIES)
@pytest.mark.parametrize("padding,stride,out_hw,bias,act", [(SAME, 2, (10, 12), True, RELU),
                                                            (SAME, 1, (5, 6), False, NONE),
                                                            (VALID, 2, (11, 12), True, RELU6),
                                                            (SAME, 3, (15, 17), True, RELU_N1_TO_1)])
def test_transpose_conv(save_model, rng, family, padding, stride, out_hw, bias, act):
    model, feeds = layer("TRANSPOSE_CONV", rng, FAMILIES[family], (1, 5, 6, 3), (4, 3, 2, 3), 0,
                         {"padding": padding, "strideH": stride, "strideW": stride, "fusedActivationFunction": act},
                         bias=bias, output_shape=[1, *out_hw, 4])
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("family", CONV_FAMILIES)
def test_transpose_conv_ties(save_model, rng, family):
    model, feeds = layer("TRANSPOSE_CONV", rng, FAMILIES[family], (1, 6, 6, 3), (12, 3, 3, 3), 0,
                         {"padding": SAME, "strideH": 2, "strideW": 2}, ties=True, output_shape=[1, 12, 12, 12])
    assert_matches_litert(save_model(model), feeds, exact=True)


# -- FULLY_CONNECTED -------------------------------------------------------------------------

@pytest.mark.parametrize("family", FC_FAMILIES)
@pytest.mark.parametrize("keep_num_dims,bias,act", [(False, True, NONE), (True, False, RELU),
                                                    (False, False, RELU_N1_TO_1), (True, True, RELU6)])
def test_fully_connected(save_model, rng, family, keep_num_dims, bias, act):
    model, feeds = layer("FULLY_CONNECTED", rng, FAMILIES[family], (2, 3, 40), (7, 40), 0,
                         {"keepNumDims": keep_num_dims, "fusedActivationFunction": act}, bias=bias)
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("family", FC_FAMILIES)
def test_fully_connected_ties(save_model, rng, family):
    model, feeds = layer("FULLY_CONNECTED", rng, FAMILIES[family], (64, 24), (12, 24), 0, ties=True)
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("dtype,zero_point", [(np.int8, -4), (np.uint8, 140)])
def test_fully_connected_with_weights_computed_at_run_time(save_model, rng, dtype, zero_point):
    x, w = QIn(random_q(rng, (5, 30), dtype), 0.02, zero_point), QIn(random_q(rng, (6, 30), dtype), 0.01, zero_point)
    model, feeds = quantized_op("FULLY_CONNECTED", [x, w, None], out_dtype=dtype, out_scale=0.3, out_zero_point=3)
    assert_matches_litert(save_model(model), feeds, exact=True)


# -- refusals --------------------------------------------------------------------------------

def _refused(model, feeds, match):
    fn, params = lower(model)
    with pytest.raises(LoweringError, match=match):
        fn(params, *feeds)


@pytest.mark.parametrize("op,x_shape,w_shape", [("CONV_2D", (1, 4, 4, 3), (2, 1, 1, 3)),
                                               ("FULLY_CONNECTED", (4, 3), (2, 3))])
def test_hybrid_is_refused(rng, op, x_shape, w_shape):
    x = rng.standard_normal(x_shape).astype(np.float32)
    model, feeds = quantized_op(op, [In(x), QConst(random_q(rng, w_shape), 0.1), None], out_dtype=np.float32,
                                output_shape=[*x_shape[:-1], 2])
    _refused(model, feeds, rf"{op}.*hybrid quantization \(float activations with quantized weights\)")


@pytest.mark.parametrize("op,w_shape,axis", [("CONV_2D", (2, 1, 1, 3), 0), ("DEPTHWISE_CONV_2D", (1, 1, 1, 3), 3),
                                             ("TRANSPOSE_CONV", (2, 1, 1, 3), 0), ("FULLY_CONNECTED", (2, 3), 0)])
def test_int64_bias_with_int8_activations_is_refused(rng, op, w_shape, axis):
    x_shape = (1, 4, 4, 3) if op != "FULLY_CONNECTED" else (4, 3)
    out_shape = [*x_shape[:-1], w_shape[axis]]
    x, w = QIn(random_q(rng, x_shape), 0.1), QConst(random_q(rng, w_shape), 0.1, 0, axis)
    bias = QConst(np.zeros(w_shape[axis], np.int64), 0.01)
    operands = [np.array(out_shape, np.int32), w, x, bias] if op == "TRANSPOSE_CONV" else [x, w, bias]
    model, feeds = quantized_op(op, operands, out_scale=0.5, output_shape=out_shape)
    _refused(model, feeds, rf"{op}.*bias 'c{len(operands) - 1}' is int64; int8 activations need an int32 bias")


def test_depthwise_int16_needs_an_int64_bias(rng):
    model, feeds = quantized_op("DEPTHWISE_CONV_2D", [QIn(random_q(rng, (1, 4, 4, 2), np.int16), 1e-3),
                                                      QConst(random_q(rng, (1, 1, 1, 2)), 0.1, 0, 3),
                                                      QConst(np.zeros(2, np.int32), 1e-4)],
                                out_dtype=np.int16, out_scale=0.01, output_shape=[1, 4, 4, 2])
    _refused(model, feeds, "int16 activations need an int64 bias")


def test_bias_type_must_match_the_quantized_bias_type_option(rng):
    model, feeds = quantized_op("FULLY_CONNECTED", [QIn(random_q(rng, (4, 3), np.int16), 1e-3),
                                                    QConst(random_q(rng, (2, 3)), 0.1),
                                                    QConst(np.zeros(2, np.int64), 1e-4)],
                                {"quantizedBiasType": INT32_BIAS}, out_dtype=np.int16, out_scale=0.01,
                                output_shape=[4, 2])
    _refused(model, feeds, "the bias is int64 but quantizedBiasType asks for int32")


def test_int32_bias_with_int16_needs_the_option(rng):
    model, feeds = quantized_op("CONV_2D", [QIn(random_q(rng, (1, 4, 4, 3), np.int16), 1e-3),
                                            QConst(random_q(rng, (2, 1, 1, 3)), 0.1),
                                            QConst(np.zeros(2, np.int32), 1e-4)],
                                out_dtype=np.int16, out_scale=0.01, output_shape=[1, 4, 4, 2])
    _refused(model, feeds, r"int32 bias with int16 activations needs quantizedBiasType INT32")


@pytest.mark.parametrize("problem,x_dtype,x_zp,w_dtype,w_scale,w_zp,out_dtype,match", [
    ("asymmetric int16", np.int16, 3, np.int8, 0.1, 0, np.int16, "int16 activations must have zero point 0"),
    ("uint8 per channel", np.uint8, 128, np.uint8, [0.1, 0.2], 128, np.uint8, "per-channel weights with uint8"),
    ("int8 weight zero point", np.int8, 0, np.int8, 0.1, 4, np.int8, "int8 weights of CONV_2D must have zero point 0"),
    ("mixed weights", np.int8, 0, np.uint8, 0.1, 128, np.int8, "uint8 weights with int8 activations"),
    ("mixed output", np.int8, 0, np.int8, 0.1, 0, np.int16, "int8 input with int16 output"),
    ("zero scale", np.int8, 0, np.int8, 0.0, 0, np.int8, "invalid quantization scale 0")])
def test_conv_2d_refusals(rng, problem, x_dtype, x_zp, w_dtype, w_scale, w_zp, out_dtype, match):
    model, feeds = quantized_op("CONV_2D", [QIn(random_q(rng, (1, 4, 4, 3), x_dtype), 0.1, x_zp),
                                            QConst(random_q(rng, (2, 1, 1, 3), w_dtype), w_scale, w_zp), None],
                                out_dtype=out_dtype, out_scale=0.5, output_shape=[1, 4, 4, 2])
    _refused(model, feeds, match)


def test_depthwise_int16_depth_multiplier_must_match_the_shapes(rng):
    model, feeds = quantized_op("DEPTHWISE_CONV_2D", [QIn(random_q(rng, (1, 4, 4, 2), np.int16), 1e-3),
                                                      QConst(random_q(rng, (1, 3, 3, 4)), 0.1, 0, 3), None],
                                {"padding": SAME, "depthMultiplier": 1}, out_dtype=np.int16, out_scale=0.01,
                                output_shape=[1, 4, 4, 4])
    _refused(model, feeds, "depthMultiplier 1 disagrees with the shapes")


def test_per_channel_weights_along_the_wrong_axis_are_refused(rng):
    model, feeds = quantized_op("CONV_2D", [QIn(random_q(rng, (1, 4, 4, 3)), 0.1),
                                            QConst(random_q(rng, (3, 1, 1, 3)), [0.1, 0.2, 0.3], 0, 3), None],
                                out_scale=0.5, output_shape=[1, 4, 4, 3])
    _refused(model, feeds, "per-channel weights must be quantized along axis 0, not 3")


def test_quantized_network(save_model, rng):
    """QUANTIZE -> CONV_2D -> DEPTHWISE_CONV_2D -> TRANSPOSE_CONV -> FULLY_CONNECTED -> DEQUANTIZE, int8."""
    b = ModelBuilder()

    def weights(name, shape, axis):
        scales = (0.004 + 0.01 * rng.random(shape[axis])).astype(np.float32)
        return b.const(name, random_q(rng, shape), quant=quantization(scales, 0, axis)), scales

    def bias(name, scales, x_scale):
        return b.const(name, rng.integers(-3000, 3000, scales.size).astype(np.int32),
                       quant=quantization(x_scale * scales, 0))

    x = b.input("x", [1, 8, 8, 3])
    q = b.op("QUANTIZE", [x], dtype=np.int8, quant=quantization(0.03, -2))
    w, s = weights("w1", (8, 3, 3, 3), 0)
    y = b.op("CONV_2D", [q, w, bias("b1", s, 0.03)], {"padding": SAME, "fusedActivationFunction": RELU6},
             dtype=np.int8, quant=quantization(0.025, -128))
    w, s = weights("w2", (1, 3, 3, 16), 3)
    y = b.op("DEPTHWISE_CONV_2D", [y, w, bias("b2", s, 0.025)],
             {"padding": VALID, "strideH": 2, "strideW": 2, "depthMultiplier": 2, "fusedActivationFunction": RELU},
             dtype=np.int8, quant=quantization(0.04, -128))
    w, s = weights("w3", (6, 2, 2, 16), 0)
    y = b.op("TRANSPOSE_CONV", [b.const("shape", np.array([1, 6, 6, 6], np.int32)), w, y, bias("b3", s, 0.04)],
             {"padding": SAME, "strideH": 2, "strideW": 2}, dtype=np.int8, quant=quantization(0.05, 3))
    w, s = weights("w4", (10, 216), 0)
    y = b.op("FULLY_CONNECTED", [y, w, bias("b4", s, 0.05)], dtype=np.int8, quant=quantization(1.0, 0))  # flattens y
    b.output(b.op("DEQUANTIZE", [y], dtype=np.float32))
    feeds = [rng.standard_normal((1, 8, 8, 3)).astype(np.float32) * 2]
    assert_matches_litert(save_model(b.build()), feeds, exact=True)
