"""Quantized elementwise arithmetic and activation rules against LiteRT's builtin kernels.

Every rule here matches LiteRT bit for bit (exact=True). Scales are chosen so that the
requantized values stay inside int16 before saturation: beyond that LiteRT's x86 int8/uint8
ADD and MUL wrap in their vectorized lanes (see quantized_elementwise.py)."""
import jax
import numpy as np
import pytest

import jaxfuse
from jaxfuse.builder import ModelBuilder, quantization
from jaxfuse.lowering import LoweringError, lower
from quantized import QConst, QIn, assert_matches_litert, quantized_op, random_q, run_both
from test_fixed_point import ref_double, ref_vector

NONE, RELU, RELU_N1_TO_1, RELU6, TANH = 0, 1, 2, 3, 4
# (dtype, zero points of input 1, input 2, output); LiteRT's int16 kernels are symmetric
TYPES = [(np.int8, (-3, 11, -7)), (np.uint8, (120, 131, 128)), (np.int16, (0, 0, 0))]
TYPE_IDS = ["int8", "uint8", "int16"]
BROADCASTS = [((2, 3, 5, 8), (2, 3, 5, 8)), ((2, 3, 5, 8), (8,)), ((2, 1, 5, 1), (3, 1, 8)), ((2, 3, 5, 8), ())]


def q_values(rng, shape, dtype, zero_point=0):
    """Random integers over the whole type, the first ones set to the edge values."""
    info = np.iinfo(dtype)
    x = random_q(rng, shape, dtype)
    edges = [info.min, info.max, zero_point, info.min + 1, info.max - 1]
    x.reshape(-1)[:min(x.size, len(edges))] = edges[:x.size]
    return x


def all_values(dtype):
    info = np.iinfo(dtype)
    return np.arange(info.min, info.max + 1).astype(dtype)


def check(save_model, op, operands, options=None, exact=True, **kwargs):
    model, feeds = quantized_op(op, operands, options, **kwargs)
    return assert_matches_litert(save_model(model), feeds, exact=exact)


def lowering_error(save_model, op, operands, options=None, **kwargs) -> str:
    """The LoweringError message of a one-op model (built without running the rule)."""
    shape = next(o.value.shape for o in operands if isinstance(o, QIn))
    model, feeds = quantized_op(op, operands, options, output_shape=shape, **kwargs)
    fn, params = lower(jaxfuse.load(save_model(model)))
    with pytest.raises(LoweringError) as info:
        jax.eval_shape(fn, params, *feeds)
    return str(info.value)


# -- ADD / SUB -----------------------------------------------------------------------------------

@pytest.mark.parametrize("act", [NONE, RELU, RELU_N1_TO_1, RELU6])
@pytest.mark.parametrize("dtype,zps", TYPES, ids=TYPE_IDS)
@pytest.mark.parametrize("op", ["ADD", "SUB"])
def test_add_sub(save_model, rng, op, dtype, zps, act):
    shape1, shape2 = BROADCASTS[act]
    scale = 1.0 if dtype != np.int16 else 1 / 256
    a = QIn(q_values(rng, shape1, dtype, zps[0]), 0.037 * scale, zps[0])
    b = QIn(q_values(rng, shape2, dtype, zps[1]), 0.011 * scale, zps[1])
    options = {"fusedActivationFunction": act, "potScaleInt16": False}
    check(save_model, op, [a, b], options, out_dtype=dtype, out_scale=0.023 * scale, out_zero_point=zps[2])


@pytest.mark.parametrize("dtype,zps", TYPES, ids=TYPE_IDS)
@pytest.mark.parametrize("op", ["ADD", "SUB"])
def test_add_sub_round_ties_like_gemmlowp(save_model, op, dtype, zps):
    # equal scales, output scale 4x: (a +- b) / 4 exactly, every other value a tie;
    # LiteRT rounds them away from zero (gemmlowp's RoundingDivideByPOT), negative ones included
    info = np.iinfo(dtype)
    a = np.arange(max(info.min, -600), min(info.max, 600) + 1).astype(dtype)
    b = np.full_like(a, zps[1])
    out = check(save_model, op, [QIn(a, 0.5, zps[0]), QIn(b, 0.5, zps[1])], {"potScaleInt16": False},
                out_dtype=dtype, out_scale=2.0, out_zero_point=zps[2])[0]
    ties = (a.astype(int) - zps[0]) % 4 == 2
    assert np.any(ties & (a.astype(int) < zps[0]))
    expected = zps[2] + np.sign(a.astype(int) - zps[0]) * ((np.abs(a.astype(int) - zps[0]) + 2) // 4)
    np.testing.assert_array_equal(out[ties], np.clip(expected, info.min, info.max)[ties])


def test_add_saturates_where_litert_x86_wraps(save_model, rng):
    """An output scale far finer than the inputs need: the requantized sums leave int16. LiteRT's
    x86 int8 kernel wraps them in its 16-wide vectorized lanes and saturates them in the scalar
    tail; the rule saturates everywhere."""
    a = rng.integers(60, 128, 17).astype(np.int8)
    b = random_q(rng, (17,), np.int8)
    model, feeds = quantized_op("ADD", [QIn(a, 7.0, -119), QIn(b, 0.19, -102)], out_scale=0.0026, out_zero_point=79)
    actual, expected = run_both(save_model(model), feeds)
    np.testing.assert_array_equal(actual[0], np.full(17, 127, np.int8))
    assert expected[0][16] == 127 and np.any(expected[0][:16] != 127)


@pytest.mark.parametrize("log2_scales", [(-10, -10, -10), (-12, -10, -10), (-10, -13, -10)])
@pytest.mark.parametrize("op", ["ADD", "SUB"])
def test_int16_power_of_two_scales(save_model, rng, op, log2_scales):
    """LiteRT's potScaleInt16 path: rounding shifts onto the output scale, no multipliers."""
    s1, s2, so = (2.0 ** e for e in log2_scales)
    a = QIn(q_values(rng, (3, 40), np.int16), s1)
    b = QIn(q_values(rng, (3, 40), np.int16), s2)
    check(save_model, op, [a, b], {"fusedActivationFunction": RELU6}, out_dtype=np.int16, out_scale=so)


def test_int16_power_of_two_scales_sub_broadcasts(save_model, rng):
    a = QIn(q_values(rng, (3, 40), np.int16), 2.0 ** -12)
    b = QIn(q_values(rng, (40,), np.int16), 2.0 ** -10)
    check(save_model, "SUB", [a, b], out_dtype=np.int16, out_scale=2.0 ** -10)


def test_int16_power_of_two_scales_refusals(save_model, rng):
    x = q_values(rng, (3, 8), np.int16)
    message = lowering_error(save_model, "ADD", [QIn(x, 2.0 ** -11), QIn(x, 2.0 ** -12)], out_dtype=np.int16,
                             out_scale=2.0 ** -10)
    assert "one input on the output's scale" in message
    message = lowering_error(save_model, "ADD", [QIn(x, 2.0 ** -10), QIn(x[0], 2.0 ** -10)], out_dtype=np.int16,
                             out_scale=2.0 ** -10)
    assert "does not broadcast" in message


@pytest.mark.parametrize("op", ["ADD", "MUL"])
@pytest.mark.parametrize("constant_shape", [(6,), (1, 1, 1, 6)])
def test_per_channel_constant_operand(save_model, rng, op, constant_shape):
    """The batch norms of quantized ResNet V2: a [C] or [1, 1, 1, C] int8 constant with one scale."""
    x = QIn(q_values(rng, (1, 4, 4, 6), np.int8, -5), 0.05, -5)
    c = QConst(random_q(rng, constant_shape, np.int8), 0.013, 3)
    check(save_model, op, [x, c], {"fusedActivationFunction": RELU}, out_dtype=np.int8, out_scale=0.04,
          out_zero_point=-128)


# -- MUL ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("act", [NONE, RELU, RELU_N1_TO_1, RELU6])
@pytest.mark.parametrize("dtype,zps", TYPES, ids=TYPE_IDS)
def test_mul(save_model, rng, dtype, zps, act):
    shape1, shape2 = BROADCASTS[act]
    s1, s2, so = (0.02, 0.03, 0.05) if dtype != np.int16 else (1e-3, 2e-3, 3e-2)
    a = QIn(q_values(rng, shape1, dtype, zps[0]), s1, zps[0])
    b = QIn(q_values(rng, shape2, dtype, zps[1]), s2, zps[1])
    check(save_model, "MUL", [a, b], {"fusedActivationFunction": act}, out_dtype=dtype, out_scale=so,
          out_zero_point=zps[2])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16])
def test_mul_rounds_twice_like_gemmlowp(save_model, dtype):
    # multiplier 0.25 = 2^30 * 2^(-1 - 31): x / 2 rounded half up, then / 2 rounded half away
    # from zero ("double"); the "vector" rounding (ties up at both steps) differs on a quarter
    zero_point = 128 if dtype == np.uint8 else 0
    a = np.arange(-128, 128) + zero_point
    ones = np.full_like(a, zero_point + 1)
    out = check(save_model, "MUL", [QIn(a.astype(dtype), 1.0, zero_point), QIn(ones.astype(dtype), 0.25, zero_point)],
                out_dtype=dtype, out_scale=1.0, out_zero_point=zero_point)[0].astype(int) - zero_point
    centred = a - zero_point
    np.testing.assert_array_equal(out, [ref_double(int(v), 2 ** 30, -1) for v in centred])
    assert sum(o != ref_vector(int(v), 2 ** 30, -1) for o, v in zip(out, centred)) == 64


# -- MAXIMUM / MINIMUM ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,zps", TYPES, ids=TYPE_IDS)
@pytest.mark.parametrize("op", ["MAXIMUM", "MINIMUM"])
def test_maximum_minimum(save_model, rng, op, dtype, zps):
    a = QIn(q_values(rng, (2, 5, 8), dtype, zps[0]), 0.1, zps[0])
    b = QIn(q_values(rng, (5, 1), dtype, zps[0]), 0.1, zps[0])
    check(save_model, op, [a, b], out_dtype=dtype, out_scale=0.1, out_zero_point=zps[0])


def test_maximum_refuses_different_quantizations(save_model, rng):
    x = q_values(rng, (4,), np.int8)
    message = lowering_error(save_model, "MAXIMUM", [QIn(x, 0.1), QIn(x, 0.2)], out_scale=0.1)
    assert "needs one scale and zero point" in message and "ignoring the scales" in message


# -- RELU family, LEAKY_RELU ----------------------------------------------------------------------

RELU_CASES = [(op, t) for op in ["RELU", "RELU6", "RELU_N1_TO_1"] for t in TYPES
              if not (op == "RELU_N1_TO_1" and t[0] == np.int16)]


@pytest.mark.parametrize("op,dtype,zps", [(op, *t) for op, t in RELU_CASES],
                         ids=[f"{op}-{np.dtype(t[0]).name}" for op, t in RELU_CASES])
def test_relu_family(save_model, rng, op, dtype, zps):
    scale = 1.0 if dtype != np.int16 else 1 / 1000
    x = all_values(dtype) if dtype != np.int16 else q_values(rng, (2000,), dtype)
    check(save_model, op, [QIn(x, 0.031 * scale, zps[0])], out_dtype=dtype, out_scale=0.027 * scale,
          out_zero_point=zps[2])


@pytest.mark.parametrize("dtype,zps", TYPES, ids=TYPE_IDS)
def test_relu_requantizes_with_ties(save_model, dtype, zps):
    x = all_values(dtype) if dtype != np.int16 else np.arange(-3000, 3000).astype(dtype)
    check(save_model, "RELU", [QIn(x, 0.25, zps[0])], out_dtype=dtype, out_scale=1.0, out_zero_point=zps[2])


@pytest.mark.parametrize("alpha", [0.2, -0.5, 1.7])
@pytest.mark.parametrize("dtype,zps", TYPES, ids=TYPE_IDS)
def test_leaky_relu(save_model, rng, dtype, zps, alpha):
    x = all_values(dtype) if dtype != np.int16 else q_values(rng, (3000,), dtype)
    scale = 0.05 if dtype != np.int16 else 1e-3
    # alpha -0.5 on equal scales makes every odd negative input a tie: LiteRT's 8-bit kernel rounds
    # |alpha| x and negates, its int16 kernel multiplies by the negative fixed-point multiplier
    out_scale = scale if alpha == -0.5 else 0.7 * scale
    check(save_model, "LEAKY_RELU", [QIn(x, scale, zps[0])], {"alpha": alpha}, out_dtype=dtype,
          out_scale=out_scale, out_zero_point=zps[2])


# -- HARD_SWISH, LOGISTIC, TANH ----------------------------------------------------------------------

@pytest.mark.parametrize("scales", [(0.05, 0.03), (0.004, 0.0031), (0.8, 0.02)])
@pytest.mark.parametrize("dtype,zps", TYPES[:2], ids=TYPE_IDS[:2])
def test_hard_swish(save_model, dtype, zps, scales):
    check(save_model, "HARD_SWISH", [QIn(all_values(dtype), scales[0], zps[0])], out_dtype=dtype,
          out_scale=scales[1], out_zero_point=zps[2])


def test_hard_swish_on_a_much_coarser_output(save_model):
    # the output shift exceeds 15 bits: LiteRT's int16 RoundingDivideByPOT then gives +-1, not 0
    check(save_model, "HARD_SWISH", [QIn(all_values(np.int8), 0.00375, -102)], out_dtype=np.int8, out_scale=5.2,
          out_zero_point=55)


@pytest.mark.parametrize("input_quant", [(0.06, -10), (0.19, 7)])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("op", ["LOGISTIC", "TANH"])
def test_logistic_tanh_8bit(save_model, op, dtype, input_quant):
    info = np.iinfo(dtype)
    scale, zero_point = input_quant[0], input_quant[1] + (128 if dtype == np.uint8 else 0)
    out_scale, out_zero_point = (1 / 256, info.min) if op == "LOGISTIC" else (1 / 128, 0 if dtype == np.int8 else 128)
    check(save_model, op, [QIn(all_values(dtype), scale, zero_point)], out_dtype=dtype, out_scale=out_scale,
          out_zero_point=out_zero_point)


def test_tanh_8bit_any_output_quantization(save_model):
    check(save_model, "TANH", [QIn(all_values(np.int8), 0.021, 5)], out_dtype=np.int8, out_scale=0.0093,
          out_zero_point=-20)


@pytest.mark.parametrize("input_scale", [2.0 ** -12, 2.0 ** -11, 3e-4, 2.1e-4])
@pytest.mark.parametrize("op", ["LOGISTIC", "TANH"])
def test_logistic_tanh_int16(save_model, op, input_scale):
    """2^-12 (both) and 2^-11 (TANH): gemmlowp's fixed-point functions; other scales: LiteRT's
    interpolated sigmoid table. Every int16 input value, bit for bit."""
    check(save_model, op, [QIn(all_values(np.int16), input_scale)], out_dtype=np.int16, out_scale=2.0 ** -15)


# -- refusals ------------------------------------------------------------------------------------------

def test_refusals(save_model, rng):
    x8, x16 = q_values(rng, (2, 4), np.int8), q_values(rng, (2, 4), np.int16)
    cases = [
        (("LOGISTIC", [QIn(x8, 0.1)]), {"out_scale": 0.01}, "needs the output scale 1/256"),
        (("LOGISTIC", [QIn(x16, 1e-3)]), {"out_dtype": np.int16, "out_scale": 1e-3}, "output scale 1/32768"),
        (("ADD", [QIn(x16, 1e-3, 3), QIn(x16, 1e-3)]), {"out_dtype": np.int16, "out_scale": 1e-3},
         "zero points of 0"),
        (("HARD_SWISH", [QIn(x16, 1e-3)]), {"out_dtype": np.int16, "out_scale": 1e-3}, "int16 HARD_SWISH"),
        (("RELU_N1_TO_1", [QIn(x16, 1e-3)]), {"out_dtype": np.int16, "out_scale": 1e-3}, "int16 RELU_N1_TO_1"),
        (("MUL", [QIn(x16, 1e-3), QIn(x16, 1e-3)]), {"out_dtype": np.int8, "out_scale": 0.1},
         "needs inputs and output of one type"),
        (("ADD", [QIn(x8, 0.1), QIn(x8, 0.1)], {"fusedActivationFunction": TANH}), {"out_scale": 0.1},
         "has no quantized form"),
        (("ADD", [QIn(x8, 1.0), QIn(x8, 1.0)]), {"out_scale": 1e-7}, "too small for the input scales"),
        (("HARD_SWISH", [QIn(x8, 6.75)]), {"out_scale": 0.0064}, "too fine for input scale"),
    ]
    for args, kwargs, expected in cases:
        assert expected in lowering_error(save_model, *args, **kwargs), expected


def test_per_channel_operand_is_refused(save_model, rng):
    c = QConst(random_q(rng, (4,), np.int8), [0.1, 0.2, 0.3, 0.4], 0, axis=0)
    message = lowering_error(save_model, "ADD", [QIn(q_values(rng, (2, 4), np.int8), 0.1), c], out_scale=0.1)
    assert "quantized per channel" in message


def test_bad_quantized_file_is_refused(save_model, rng):
    b = ModelBuilder()
    x = b.input("x", (2, 4), np.int8, quant=quantization(0.0, 0))
    b.output(b.op("RELU", [x], dtype=np.int8, quant=quantization(0.1, 0), output_shape=(2, 4)))
    fn, params = lower(jaxfuse.load(save_model(b.build())))
    with pytest.raises(LoweringError, match=r"op 0 \(RELU.*tensor 'x' \(int8\) has an invalid quantization scale 0"):
        jax.eval_shape(fn, params, q_values(rng, (2, 4), np.int8))
