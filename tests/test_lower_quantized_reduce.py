"""Quantized MAX_POOL_2D / AVERAGE_POOL_2D / MEAN / SOFTMAX rules against LiteRT's builtin
kernels: all bit-exact (exact=True)."""
import jax
import numpy as np
import pytest

from jaxfuse.lowering import LoweringError, lower
from jaxfuse.lowering.quantized_reduce import _round_non_negative
from quantized import QIn, assert_matches_litert, quantized_op, random_q
from reference import run_litert

SAME, VALID = 0, 1
# (dtype, zero point): zero points away from the middle so that clamps and offsets matter
FAMILIES = [(np.int8, -5), (np.uint8, 131), (np.int16, 0)]


def with_extremes(x):
    """x with whole rows at the type's minimum and maximum (saturation, clamps)."""
    info = np.iinfo(x.dtype)
    x = x.copy()
    x.reshape(-1, x.shape[-1])[:2] = info.min
    x.reshape(-1, x.shape[-1])[-2:] = info.max
    return x


def assert_refused(save_model, model, feeds, message, litert_refuses):
    """The rule refuses the op with `message`; LiteRT refuses it too when `litert_refuses`."""
    fn, params = lower(model)
    with pytest.raises(LoweringError, match=message):
        fn(params, *feeds)
    if litert_refuses:
        with pytest.raises(RuntimeError):
            run_litert(save_model(model), feeds)


# -- pooling --------------------------------------------------------------------------------

def pool_options(padding, filter_hw, stride, activation=0):
    return {"padding": padding, "strideH": stride[0], "strideW": stride[1], "filterHeight": filter_hw[0],
            "filterWidth": filter_hw[1], "fusedActivationFunction": activation}


@pytest.mark.parametrize("op_type", ["MAX_POOL_2D", "AVERAGE_POOL_2D"])
@pytest.mark.parametrize("dtype,zero_point", FAMILIES)
@pytest.mark.parametrize("padding,filter_hw,stride,activation", [
    (SAME, (3, 3), (2, 2), 0), (VALID, (3, 2), (1, 2), 0), (SAME, (2, 3), (1, 1), 1),
    (VALID, (2, 2), (2, 2), 2), (SAME, (3, 2), (2, 1), 3), (VALID, (1, 3), (3, 1), 3)])
def test_pool_2d(save_model, rng, op_type, dtype, zero_point, padding, filter_hw, stride, activation):
    x = with_extremes(random_q(rng, (2, 7, 8, 5), dtype))
    options = pool_options(padding, filter_hw, stride, activation)
    model, feeds = quantized_op(op_type, [QIn(x, 0.04, zero_point)], options, out_dtype=dtype, out_scale=0.04,
                                out_zero_point=zero_point)
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_average_pool_rounds_halves_away_from_zero(save_model, dtype):
    # window sums -1, 1, -3, 3, -5 over 2 cells and sums over 4 cells (one padded row): all ties
    x = np.array([[-1, 0, -2, 1, 1], [0, 1, -1, 2, -4], [-2, 2, -3, 2, 0]], dtype).reshape(1, 3, 5, 1)
    x = np.concatenate([x, -x], axis=3)
    model, feeds = quantized_op("AVERAGE_POOL_2D", [QIn(x, 0.1, 0)], pool_options(SAME, (2, 1), (1, 1)),
                                out_dtype=dtype, out_scale=0.1, out_zero_point=0)
    out = assert_matches_litert(save_model(model), feeds, exact=True)[0]
    assert out[0, 0, 0, 0] == -1 and out[0, 0, 0, 1] == 1  # (-1 + 0) / 2 -> -1, (1 + 0) / 2 -> 1


@pytest.mark.parametrize("op_type", ["MAX_POOL_2D", "AVERAGE_POOL_2D"])
def test_pool_refusals(save_model, rng, op_type):
    x = random_q(rng, (1, 4, 4, 3))
    options = pool_options(SAME, (2, 2), (1, 1))
    shape = [1, 4, 4, 3]
    # LiteRT only asserts equal parameters in debug builds and otherwise reinterprets the integers
    model, feeds = quantized_op(op_type, [QIn(x, 0.05, 0)], options, out_scale=0.1, out_zero_point=3,
                                output_shape=shape)
    assert_refused(save_model, model, feeds, "needs equal input and output quantization", litert_refuses=False)
    model, feeds = quantized_op(op_type, [QIn(x, 0.05, 0)], options, out_dtype=np.uint8, out_scale=0.05,
                                output_shape=shape)
    assert_refused(save_model, model, feeds, "from int8 to uint8 is not supported", litert_refuses=True)
    # LiteRT ignores the failed activation range of TANH and clamps to uninitialized bounds
    model, feeds = quantized_op(op_type, [QIn(x, 0.05, 0)], {**options, "fusedActivationFunction": 4},
                                out_scale=0.05, output_shape=shape)
    assert_refused(save_model, model, feeds, "fused activation 4 has no quantized form", litert_refuses=False)


# -- MEAN -------------------------------------------------------------------------------------

MEAN_CASES = [
    # (shape, axes, keepDims, (in scale, in zero point), (out scale, out zero point))
    ((2, 5, 6, 40), [1, 2], True, (0.0371, 7), (0.0213, -5)),   # 4-D height-width kernel, depth 40 = 2 * 16 + 8
    ((1, 2, 2, 37), [2, -3], True, (0.05, 0), (0.05, 0)),       # same, count 4: ties in both roundings
    ((2, 3, 7, 6), [1, 2], False, (0.0371, 7), (0.0213, -5)),   # keepDims false: general kernel
    ((3, 5, 4), [-1], False, (0.05, 0), (0.05, 0)),             # count 4, equal parameters: ties
    ((2, 3, 5, 6), [0, 2], True, (0.02, -50), (0.0333, 20)),
    ((4, 6), [0, 1], False, (0.1, 3), (0.004, -1)),             # output saturates
    ((2, 3, 3, 20), [1, 2], True, (0.1, -60), (0.004, 2)),       # height-width kernel saturating
]


@pytest.mark.parametrize("dtype,offset", [(np.int8, 0), (np.uint8, 128), (np.int16, None)])
@pytest.mark.parametrize("shape,axes,keep_dims,source,target", MEAN_CASES)
def test_mean(save_model, rng, dtype, offset, shape, axes, keep_dims, source, target):
    # int16 keeps the scales and takes zero points 0 (LiteRT's requirement)
    zero_in, zero_out = (0, 0) if offset is None else (source[1] + offset, target[1] + offset)
    x = with_extremes(random_q(rng, shape, dtype))
    model, feeds = quantized_op("MEAN", [QIn(x, source[0], zero_in), np.array(axes, np.int32)], {"keepDims": keep_dims},
                                out_dtype=dtype, out_scale=target[0], out_zero_point=zero_out)
    assert_matches_litert(save_model(model), feeds, exact=True)


def test_mean_refusals(save_model, rng):
    x = random_q(rng, (1, 4, 4, 3), np.int16)
    axes = np.array([1, 2], np.int32)
    model, feeds = quantized_op("MEAN", [QIn(x, 0.05, 3), axes], {"keepDims": True}, out_dtype=np.int16,
                                out_scale=0.05, output_shape=[1, 1, 1, 3])
    assert_refused(save_model, model, feeds, "int16 MEAN needs zero points 0", litert_refuses=True)
    # LiteRT runs this one, writing int8 results into the uint8 output
    model, feeds = quantized_op("MEAN", [QIn(x.astype(np.int8), 0.05, 0), axes], {"keepDims": True},
                                out_dtype=np.uint8, out_scale=0.05, output_shape=[1, 1, 1, 3])
    assert_refused(save_model, model, feeds, "MEAN from int8 to uint8 is not supported", litert_refuses=False)


# -- SOFTMAX ----------------------------------------------------------------------------------

SOFTMAX_CASES = [
    # (input dtype, scale, zero point), (output dtype, scale, zero point)
    ((np.int8, 0.1, -3), (np.int8, 1 / 256, -128)),
    ((np.int8, 0.0371, 5), (np.int8, 1 / 256, -128)),
    ((np.uint8, 0.02, 100), (np.uint8, 1 / 256, 0)),
    ((np.uint8, 0.05, 128), (np.uint8, 1 / 200, 0)),   # LiteRT takes any uint8 output scale
    ((np.int8, 0.1, -3), (np.int16, 1 / 32768, 0)),
    ((np.int8, 0.1, -3), (np.int16, 1 / 30000, 7)),    # and any int16 output parameters from 8 bits
    ((np.uint8, 0.1, 128), (np.int16, 1 / 32768, 0)),
    ((np.int16, 1 / 4096, 0), (np.int16, 1 / 32768, 0)),
    ((np.int16, 0.0007, 0), (np.int16, 1 / 32768, 0)),
]


@pytest.mark.parametrize("source,target", SOFTMAX_CASES)
@pytest.mark.parametrize("beta", [1.0, 0.3])
@pytest.mark.parametrize("shape", [(4, 6, 33), (1, 1001), (2, 1, 2, 3, 5)])
def test_softmax(save_model, rng, source, target, beta, shape):
    dtype, scale, zero_point = source
    x = random_q(rng, shape, dtype)
    rows = x.reshape(-1, shape[-1])
    rows[0] = zero_point  # a uniform row
    rows[-1] = np.iinfo(dtype).min
    rows[-1, -1] = np.iinfo(dtype).max  # one dominating element
    model, feeds = quantized_op("SOFTMAX", [QIn(x, scale, zero_point)], {"beta": beta}, out_dtype=target[0],
                                out_scale=target[1], out_zero_point=target[2])
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("source,target,message,litert_refuses", [
    ((np.int8, 0), (np.int8, 1 / 256, 0), "int8 SOFTMAX needs output scale 1/256 and zero point -128", True),
    ((np.int8, 0), (np.int8, 1 / 255, -128), "int8 SOFTMAX needs output scale 1/256", True),
    ((np.int16, 0), (np.int16, 1 / 30000, 0), "int16 SOFTMAX needs output scale 1/32768", True),
    ((np.int16, 3), (np.int16, 1 / 32768, 0), "int16 SOFTMAX needs input zero point 0", True),
    ((np.uint8, 0), (np.int8, 1 / 256, -128), "SOFTMAX from uint8 to int8 is not supported", True),
    ((np.int8, 0), (np.uint8, 1 / 256, 0), "SOFTMAX from int8 to uint8 is not supported", True),
    # LiteRT runs these two, the first writing int16 results into the int8 buffer
    ((np.int16, 0), (np.int8, 1 / 256, 0), "SOFTMAX from int16 to int8 is not supported", False),
    ((np.uint8, 0), (np.uint8, 1 / 256, 10), "uint8 SOFTMAX needs output zero point 0", False),
])
def test_softmax_refusals(save_model, rng, source, target, message, litert_refuses):
    x = random_q(rng, (2, 7), source[0])
    model, feeds = quantized_op("SOFTMAX", [QIn(x, 0.01, source[1])], {}, out_dtype=target[0], out_scale=target[1],
                                out_zero_point=target[2], output_shape=[2, 7])
    assert_refused(save_model, model, feeds, message, litert_refuses)


def test_round_non_negative_matches_float32_arithmetic():
    """The bit-level std::round of the softmax rule, and its uint8 form trunc(p + 0.5f), against
    NumPy's float32 arithmetic on ties, their neighbours and the float just below 0.5."""
    whole = np.arange(0, 70000, dtype=np.float32)
    near = np.concatenate([whole + 0.5, whole + 0.25, np.float32(1e-30) + whole, whole])
    values = np.concatenate([near, np.nextafter(near, np.float32(0)), np.nextafter(near, np.float32(np.inf)),
                             np.float32([0.0, 1e-45, 0.49999997, 8388607.5, 8388608.0])]).astype(np.float32)
    rounded = np.asarray(jax.jit(_round_non_negative)(values))
    expected = np.where(values >= 2 ** 23, 2 ** 23, np.floor(values.astype(np.float64) + 0.5))
    np.testing.assert_array_equal(rounded, expected)
    truncated = rounded + (values == np.float32(0.49999997))
    expected_trunc = np.where(values >= 2 ** 23, 2 ** 23, np.trunc(values + np.float32(0.5)))
    np.testing.assert_array_equal(truncated, expected_trunc)
