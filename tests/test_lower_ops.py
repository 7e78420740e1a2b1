"""Every lowering rule against LiteRT on small generated graphs, plus the lowering API."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfuse
from jaxfuse.builder import ModelBuilder
from jaxfuse.lowering import (RULES, LoweringError, apply_activation, lower, lower_graph, register, supported_ops,
                           tensor_keys)
from reference import relative_error, requires_onert, run_litert, run_onert

SAME, VALID = 0, 1
TOL = 1e-5  # max error relative to the output's scale; the largest seen is ~1e-6 (transcendental ops included)


class In:
    """Marks an operand as a graph input whose test value is `value`."""

    def __init__(self, value):
        self.value = np.asarray(value)


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def single_op(op_type, operands, options=None, **kwargs):
    """A model of one op: In(...) operands become graph inputs, arrays constants, None omitted inputs."""
    b = ModelBuilder()
    tensors, feeds = [], []
    for i, v in enumerate(operands):
        if v is None:
            tensors.append(None)
        elif isinstance(v, In):
            tensors.append(b.input(f"in{i}", v.value.shape, v.value.dtype))
            feeds.append(v.value)
        else:
            tensors.append(b.const(f"c{i}", v))
    out = b.op(op_type, tensors, options, **kwargs)
    b.output(*(out if isinstance(out, list) else [out]))
    return b.build(), feeds


@pytest.fixture
def check(save_model):
    """check(model, feeds) -> JAX outputs, after asserting they match LiteRT's within TOL (both read the saved file)."""
    def run(model, feeds):
        path = save_model(model)
        expected = run_litert(path, feeds)
        fn, params = lower(jaxfuse.load(path))
        actual = [np.asarray(y) for y in jax.jit(fn)(params, *feeds)]
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert a.shape == e.shape
            assert a.dtype.kind == e.dtype.kind
            assert relative_error(a, e) <= TOL, relative_error(a, e)
        return actual
    return run


# -- convolutions -------------------------------------------------------------------------

@pytest.mark.parametrize("padding", [SAME, VALID])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (2, 3)])
@pytest.mark.parametrize("dilation", [1, 2])
def test_conv_2d(check, rng, padding, stride, dilation):
    act = (padding + stride[1] + dilation) % 4  # cycle NONE, RELU, RELU_N1_TO_1, RELU6 over the grid
    model, feeds = single_op("CONV_2D", [In(f32(rng, 2, 9, 8, 3)), f32(rng, 4, 3, 2, 3), f32(rng, 4)],
                             {"padding": padding, "strideH": stride[0], "strideW": stride[1],
                              "dilationHFactor": dilation, "dilationWFactor": dilation, "fusedActivationFunction": act})
    check(model, feeds)


@pytest.mark.parametrize("padding", [SAME, VALID])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (2, 3)])
@pytest.mark.parametrize("dilation", [1, 2])
def test_conv_2d_pointwise(check, rng, padding, stride, dilation):
    """1x1 filters take the product path (nn._pointwise_conv): odd sizes with strides, both paddings."""
    model, feeds = single_op("CONV_2D", [In(f32(rng, 2, 9, 7, 5)), f32(rng, 6, 1, 1, 5), f32(rng, 6)],
                             {"padding": padding, "strideH": stride[0], "strideW": stride[1],
                              "dilationHFactor": dilation, "dilationWFactor": dilation, "fusedActivationFunction": 1})
    check(model, feeds)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_2d_pointwise_is_bit_identical_to_the_convolution(rng, stride):
    """The product path computes the convolution's very sums: same bits as lax.conv_general_dilated
    under the checks' compiler options, so switching paths changes no check's numbers."""
    from jax import lax

    from jaxfuse.programs import CHECK_COMPILER_OPTIONS
    model, feeds = single_op("CONV_2D", [In(f32(rng, 2, 14, 14, 96)), f32(rng, 160, 1, 1, 96)],
                             {"padding": SAME, "strideH": stride, "strideW": stride})
    fn, params = lower(model)

    def as_convolution(x, w):  # 14 is a multiple of the stride: SAME pads nothing
        return lax.conv_general_dilated(x, w, (stride, stride), [(0, 0), (0, 0)],
                                        dimension_numbers=("NHWC", "OHWI", "NHWC"), precision=lax.Precision.HIGHEST)
    x, w = feeds[0], model.main.ops[0].inputs[1].data
    lowered = jax.jit(fn).lower(params, x)
    assert "dot_general" in lowered.as_text() and "convolution" not in lowered.as_text()
    product = lowered.compile(compiler_options=CHECK_COMPILER_OPTIONS)(params, x)[0]
    convolution = jax.jit(as_convolution).lower(x, w).compile(compiler_options=CHECK_COMPILER_OPTIONS)(x, w)
    assert product.shape == convolution.shape == (2, 14 // stride, 14 // stride, 160)
    np.testing.assert_array_equal(np.asarray(product), np.asarray(convolution))
    assert np.abs(np.asarray(product)).max() > 0


def test_conv_2d_grouped(check, rng):
    model, feeds = single_op("CONV_2D", [In(f32(rng, 1, 6, 6, 4)), f32(rng, 6, 3, 3, 2), f32(rng, 6)])
    check(model, feeds)


def test_conv_2d_without_bias_equals_zero_bias(rng, run_jax):
    x, w = f32(rng, 1, 5, 5, 3), f32(rng, 4, 3, 3, 3)
    without, _ = single_op("CONV_2D", [In(x), w, None])
    with_zero, _ = single_op("CONV_2D", [In(x), w, np.zeros(4, np.float32)])
    np.testing.assert_array_equal(run_jax(without, [x])[0], run_jax(with_zero, [x])[0])


@pytest.mark.parametrize("padding", [SAME, VALID])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("multiplier", [1, 3])
def test_depthwise_conv_2d(check, rng, padding, stride, dilation, multiplier):
    model, feeds = single_op(
        "DEPTHWISE_CONV_2D", [In(f32(rng, 1, 8, 7, 2)), f32(rng, 1, 3, 3, 2 * multiplier), f32(rng, 2 * multiplier)],
        {"padding": padding, "strideH": stride, "strideW": stride, "dilationHFactor": dilation,
         "dilationWFactor": dilation, "depthMultiplier": multiplier, "fusedActivationFunction": 3})
    check(model, feeds)


def test_depthwise_multiplier_comes_from_shapes(rng, run_jax):
    x, w, bias = f32(rng, 1, 5, 5, 2), f32(rng, 1, 3, 3, 4), f32(rng, 4)
    right, _ = single_op("DEPTHWISE_CONV_2D", [In(x), w, bias], {"depthMultiplier": 2})
    wrong, _ = single_op("DEPTHWISE_CONV_2D", [In(x), w, bias], {"depthMultiplier": 7})
    np.testing.assert_array_equal(run_jax(right, [x])[0], run_jax(wrong, [x])[0])


@pytest.mark.parametrize("padding", [SAME, VALID])
@pytest.mark.parametrize("stride,out_hw", [(1, (5, 6)), (2, (10, 12)), (2, (9, 11)), (3, (15, 17))])
@pytest.mark.parametrize("with_bias", [True, False])
def test_transpose_conv(check, rng, padding, stride, out_hw, with_bias):
    act = stride % 4 if with_bias else 0
    kernel = (3, 2)
    if padding == VALID:  # VALID's output must be (in - 1) * stride + kernel
        out_hw = tuple((n - 1) * stride + k for n, k in zip((5, 6), kernel))
    operands = [np.array([1, *out_hw, 4], np.int32), f32(rng, 4, *kernel, 3), In(f32(rng, 1, 5, 6, 3))]
    model, feeds = single_op("TRANSPOSE_CONV", operands + ([f32(rng, 4)] if with_bias else []),
                             {"padding": padding, "strideH": stride, "strideW": stride,
                              "fusedActivationFunction": act})
    check(model, feeds)


@pytest.mark.parametrize("keep_num_dims", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
def test_fully_connected(check, rng, keep_num_dims, with_bias):
    bias = f32(rng, 5) if with_bias else None
    model, feeds = single_op("FULLY_CONNECTED", [In(f32(rng, 2, 3, 6)), f32(rng, 5, 6), bias],
                             {"keepNumDims": keep_num_dims, "fusedActivationFunction": 1})
    check(model, feeds)


def test_fully_connected_dequantized_float16_weights(check, rng):
    b = ModelBuilder()
    x = b.input("x", [1, 6])
    w = b.op("DEQUANTIZE", [b.const("w16", f32(rng, 4, 6).astype(np.float16))])
    b.output(b.op("FULLY_CONNECTED", [x, w, b.const("bias", f32(rng, 4))]))
    (y,) = check(b.build(), [f32(rng, 1, 6)])
    assert w.dtype == np.float32 and y.dtype == np.float32


# -- pooling ------------------------------------------------------------------------------

@pytest.mark.parametrize("op_type", ["MAX_POOL_2D", "AVERAGE_POOL_2D"])
@pytest.mark.parametrize("padding", [SAME, VALID])
@pytest.mark.parametrize("filter_hw,stride", [((3, 3), 2), ((2, 3), 1), ((3, 2), 3)])
def test_pool_2d(check, rng, op_type, padding, filter_hw, stride):
    # negative inputs: a padded zero cell would win a SAME max pool and dilute an average pool
    x = -np.abs(f32(rng, 2, 7, 8, 3)) - 1
    model, feeds = single_op(op_type, [In(x)], {"padding": padding, "strideH": stride, "strideW": stride,
                                                "filterHeight": filter_hw[0], "filterWidth": filter_hw[1],
                                                "fusedActivationFunction": 0 if padding == SAME else 2})
    check(model, feeds)


# -- elementwise --------------------------------------------------------------------------

BROADCASTS = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3, 4)), ((), (2, 3))]


@pytest.mark.parametrize("op_type", ["ADD", "SUB", "MUL", "DIV"])
@pytest.mark.parametrize("shapes", BROADCASTS)
def test_arithmetic(check, rng, op_type, shapes):
    a, b = f32(rng, *shapes[0]), f32(rng, *shapes[1])
    if op_type == "DIV":
        b = np.sign(b) * (np.abs(b) + 0.5)
    act = len(shapes[0]) % 4
    model, feeds = single_op(op_type, [In(a), b], {"fusedActivationFunction": act})
    check(model, feeds)


@pytest.mark.parametrize("op_type", ["MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "POW"])
@pytest.mark.parametrize("shapes", BROADCASTS[:3])
def test_binary(check, rng, op_type, shapes):
    a, b = f32(rng, *shapes[0]), f32(rng, *shapes[1])
    if op_type == "POW":
        a = np.abs(a) + 0.1
    model, feeds = single_op(op_type, [In(a), In(b)])
    check(model, feeds)


@pytest.mark.parametrize("act", [4, 5])
@pytest.mark.parametrize("op_type", ["ADD", "CONV_2D"])
def test_fused_tanh_and_sign_bit_are_refused(rng, op_type, act):
    operands = [In(f32(rng, 1, 4, 4, 3)), f32(rng, 1, 4, 4, 3)] if op_type == "ADD" else \
        [In(f32(rng, 1, 4, 4, 3)), f32(rng, 2, 1, 1, 3), f32(rng, 2)]
    model, feeds = single_op(op_type, operands, {"fusedActivationFunction": act}, output_shape=[1, 4, 4, 3])
    fn, params = lower(model)
    with pytest.raises(LoweringError, match=r"op 0 \(%s, output .*\): fused activation (TANH|SIGN_BIT)" % op_type):
        fn(params, *feeds)


def test_apply_activation_codes():
    x = jnp.array([-2.0, -0.5, 0.0, 0.5, 7.0], jnp.float32)
    expected = {0: x, 1: [0, 0, 0, 0.5, 7], 2: [-1, -0.5, 0, 0.5, 1], 3: [0, 0, 0, 0.5, 6], 4: np.tanh(x),
                5: [1, 1, 0, 0, 0]}
    for code, want in expected.items():
        np.testing.assert_allclose(apply_activation(x, code), np.asarray(want, np.float32), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown fused activation code 6"):
        apply_activation(x, 6)


UNARY = {  # op -> input transform keeping it in the op's domain or range of interest
    "ABS": None, "NEG": None, "EXP": None, "LOG": lambda x: np.abs(x) + 0.1, "SQRT": np.abs,
    "RSQRT": lambda x: np.abs(x) + 0.1, "SQUARE": None, "FLOOR": None, "LOGISTIC": None, "TANH": None,
    "RELU": None, "RELU6": lambda x: 4 * x, "RELU_N1_TO_1": None, "RELU_0_TO_1": None, "ELU": None,
    "HARD_SWISH": lambda x: 3 * x,
}


@pytest.mark.parametrize("op_type", sorted(UNARY))
def test_unary(check, rng, op_type):
    x = 2 * f32(rng, 2, 5, 7)
    check(*single_op(op_type, [In(UNARY[op_type](x) if UNARY[op_type] else x)]))


@pytest.mark.parametrize("alpha", [0.2, 1.5])
def test_leaky_relu(check, rng, alpha):
    check(*single_op("LEAKY_RELU", [In(f32(rng, 3, 4))], {"alpha": alpha}))


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu(check, rng, approximate):
    check(*single_op("GELU", [In(3 * f32(rng, 4, 5))], {"approximate": approximate}))


@pytest.mark.parametrize("alpha_shape", [(3,), (1, 1, 3), (4, 1, 3)])
def test_prelu(check, rng, alpha_shape):
    check(*single_op("PRELU", [In(f32(rng, 2, 4, 5, 3)), f32(rng, *alpha_shape)]))


# -- reductions, softmax, normalization -----------------------------------------------------

@pytest.mark.parametrize("op_type", ["MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"])
@pytest.mark.parametrize("axes,keep_dims", [([1, 2], True), ([1, 2], False), ([-1], False), ([0, -3], True),
                                            ([2], True)])
def test_reduce(check, rng, op_type, axes, keep_dims):
    model, feeds = single_op(op_type, [In(f32(rng, 2, 3, 4, 5)), np.array(axes, np.int32)], {"keepDims": keep_dims})
    check(model, feeds)


@pytest.mark.parametrize("op_type", ["ARG_MAX", "ARG_MIN"])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("index_type", [np.int32, np.int64])
def test_arg_max_min(check, rng, op_type, axis, index_type):
    x = np.round(f32(rng, 3, 4, 5))  # ties: both must pick the first
    options = {"outputType": jaxfuse.schema.DTYPE_TO_TENSOR_TYPE[np.dtype(index_type)]}
    check(*single_op(op_type, [In(x), np.array([axis], np.int32)], options, dtype=index_type))


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_softmax(check, rng, beta):
    check(*single_op("SOFTMAX", [In(4 * f32(rng, 2, 3, 10))], {"beta": beta}))


def test_log_softmax(check, rng):
    check(*single_op("LOG_SOFTMAX", [In(4 * f32(rng, 2, 10))]))


def test_l2_normalization(check, rng):
    check(*single_op("L2_NORMALIZATION", [In(f32(rng, 2, 3, 8))]))


# -- shapes and layout --------------------------------------------------------------------

@pytest.mark.parametrize("shape_input,new_shape", [([3, -1], None), (None, [2, 12]), ([-1], [24])])
def test_reshape(check, rng, shape_input, new_shape):
    operands = [In(f32(rng, 2, 3, 4))] + ([np.array(shape_input, np.int32)] if shape_input else [])
    check(*single_op("RESHAPE", operands, {"newShape": new_shape} if new_shape else None,
                     options_type="ReshapeOptions" if new_shape else None))


def test_reshape_of_a_computed_shape(check, rng):
    """SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE, as the converter emits for keras Flatten/Reshape."""
    b = ModelBuilder()
    x = b.input("x", [2, 1, 1, 6])
    shape = b.op("SHAPE", [x])
    batch = b.op("STRIDED_SLICE", [shape, b.const("b", np.array([0], np.int32)), b.const("e", np.array([1], np.int32)),
                                   b.const("s", np.array([1], np.int32))], {"shrinkAxisMask": 1})
    target = b.op("PACK", [batch, b.const("three", np.array(3, np.int32)), b.const("two", np.array(2, np.int32))],
                  {"valuesCount": 3})
    b.output(b.op("RESHAPE", [x, target]))
    fn, params = lower(b.build())
    # the shape arithmetic is done while tracing: only the reshape itself is staged out
    assert [e.primitive.name for e in jax.make_jaxpr(fn)(params, f32(rng, 2, 1, 1, 6)).eqns] == ["reshape"]
    check(b.build(), [f32(rng, 2, 1, 1, 6)])


@pytest.mark.parametrize("dims", [[], [1], [-2, 1]])
def test_squeeze(check, rng, dims):
    check(*single_op("SQUEEZE", [In(f32(rng, 3, 1, 1, 4))], {"squeezeDims": dims}))


@pytest.mark.parametrize("axis", [0, 2, -1, -4])
def test_expand_dims(check, rng, axis):
    check(*single_op("EXPAND_DIMS", [In(f32(rng, 3, 4, 5)), np.array(axis, np.int32)]))


@pytest.mark.parametrize("perm", [[0, 3, 1, 2], [3, 2, 1, 0]])
def test_transpose(check, rng, perm):
    check(*single_op("TRANSPOSE", [In(f32(rng, 2, 3, 4, 5)), np.array(perm, np.int32)]))


@pytest.mark.parametrize("axis", [3, -1, 1, -3])
def test_concatenation(check, rng, axis):
    a, b = f32(rng, 1, 4, 5, 3), f32(rng, 1, 4, 5, 3)
    check(*single_op("CONCATENATION", [In(a), In(b), 2 * a], {"axis": axis}))


@pytest.mark.parametrize("op_type,shape", [("CONCATENATION", [4, 3]), ("L2_NORMALIZATION", [2, 3])])
def test_fused_activation_rejected_by_litert_and_ignored_by_onert_is_refused(rng, op_type, shape):
    operands = [In(f32(rng, 2, 3)), In(f32(rng, 2, 3))] if op_type == "CONCATENATION" else [In(f32(rng, 2, 3))]
    model, feeds = single_op(op_type, operands, {"fusedActivationFunction": 1}, output_shape=shape)
    fn, params = lower(model)
    with pytest.raises(LoweringError, match=r"op 0 \(%s.*RELU on %s is rejected by LiteRT and ignored by onert"
                       % (op_type, op_type)):
        fn(params, *feeds)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_pack(check, rng, axis):
    check(*single_op("PACK", [In(f32(rng, 3, 4)), In(f32(rng, 3, 4))], {"valuesCount": 2, "axis": axis}))


@pytest.mark.parametrize("axis", [0, -1])
def test_unpack(check, rng, axis):
    x = f32(rng, 3, 4, 2)
    num = x.shape[axis]
    check(*single_op("UNPACK", [In(x)], {"num": num, "axis": axis}, num_outputs=num))


@pytest.mark.parametrize("axis", [1, -1])
def test_split(check, rng, axis):
    check(*single_op("SPLIT", [np.array(axis, np.int32), In(f32(rng, 2, 6, 6))], {"numSplits": 3}, num_outputs=3))


@pytest.mark.parametrize("sizes", [[1, 2, 3], [2, -1, 1]])
def test_split_v(check, rng, sizes):
    check(*single_op("SPLIT_V", [In(f32(rng, 2, 6, 3)), np.array(sizes, np.int32), np.array(-2, np.int32)],
                     {"numSplits": 3}, num_outputs=3))


@pytest.mark.parametrize("begin,size", [([0, 1, 0], [2, 2, 5]), ([1, 0, 2], [-1, 3, -1])])
def test_slice(check, rng, begin, size):
    check(*single_op("SLICE", [In(f32(rng, 2, 4, 5)), np.array(begin, np.int32), np.array(size, np.int32)]))


STRIDED_SLICES = [  # begin, end, strides, options
    ([0, 1, 0], [2, 3, 5], [1, 1, 2], {}),
    ([1, -3, 4], [0, -1, 0], [1, 1, -1], {"beginMask": 0, "endMask": 1}),
    ([0, 0, 0], [0, 0, 0], [1, 1, 1], {"beginMask": 7, "endMask": 7}),
    ([0, 1, 0], [0, 2, 0], [1, 1, 1], {"beginMask": 5, "endMask": 5, "shrinkAxisMask": 2}),
    ([-1, 0, 0], [0, 0, 0], [1, 1, 1], {"endMask": 6, "beginMask": 6, "shrinkAxisMask": 1}),
    ([4, 3, 1], [0, 0, 0], [-1, -2, 1], {"endMask": 3}),
    ([0, 1], [0, 3], [1, 1], {"ellipsisMask": 1}),
    ([0, 0, 1], [0, 0, 3], [1, 1, 1], {"beginMask": 1, "endMask": 1, "newAxisMask": 2}),
    ([1, 0, 1], [1, 4, 3], [1, 1, 1], {"offset": True}),
]


@pytest.mark.parametrize("begin,end,strides,options", STRIDED_SLICES)
def test_strided_slice(check, rng, begin, end, strides, options):
    operands = [In(f32(rng, 3, 4, 5))] + [np.array(v, np.int32) for v in (begin, end, strides)]
    check(*single_op("STRIDED_SLICE", operands, options))


@pytest.mark.parametrize("axis,batch_dims,indices", [(0, 0, [1, 0, 1]), (1, 0, [[1, 0], [3, 3]]),
                                                     (-1, 0, [4, 1]), (1, 1, [[0, 3], [2, 1]]),
                                                     (2, -1, [[0, 3], [2, 1]])])
def test_gather(check, rng, axis, batch_dims, indices):
    model, feeds = single_op("GATHER", [In(f32(rng, 2, 4, 5)), np.array(indices, np.int32)],
                             {"axis": axis, "batchDims": batch_dims})
    check(model, feeds)


def test_gather_of_runtime_indices(check, rng):
    check(*single_op("GATHER", [f32(rng, 6, 3), In(np.array([[5, 0], [2, 2]], np.int32))]))


@pytest.mark.parametrize("op_type,extra", [("PAD", []), ("PADV2", [np.array(-1.5, np.float32)])])
def test_pad(check, rng, op_type, extra):
    paddings = np.array([[0, 0], [1, 2], [0, 3], [1, 0]], np.int32)
    check(*single_op(op_type, [In(f32(rng, 1, 3, 4, 2)), paddings, *extra]))


@pytest.mark.parametrize("mode", [0, 1])
def test_mirror_pad(check, rng, mode):
    paddings = np.array([[0, 0], [2, 1], [1, 2]], np.int32)
    check(*single_op("MIRROR_PAD", [In(f32(rng, 1, 4, 5)), paddings], {"mode": mode}))


@pytest.mark.parametrize("to_type", [np.int32, np.float32])
def test_cast(check, rng, to_type):
    x = 5 * f32(rng, 3, 4) if to_type == np.int32 else rng.integers(-9, 9, (3, 4)).astype(np.int32)
    check(*single_op("CAST", [In(x)], dtype=to_type))


@pytest.mark.parametrize("adj_a,adj_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("shapes", [((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 5))])
def test_batch_matmul(check, rng, adj_a, adj_b, shapes):
    a, b = f32(rng, *shapes[0]), f32(rng, *shapes[1])
    a = np.swapaxes(a, -1, -2) if adj_a else a
    b = np.swapaxes(b, -1, -2) if adj_b else b
    check(*single_op("BATCH_MATMUL", [In(a), In(b)], {"adjointLhs": adj_a, "adjointRhs": adj_b}))


@pytest.mark.parametrize("op_type", ["RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"])
@pytest.mark.parametrize("size", [(8, 10), (3, 2), (7, 5)])
@pytest.mark.parametrize("align_corners,half_pixel", [(False, False), (True, False), (False, True)])
def test_resize(check, rng, op_type, size, align_corners, half_pixel):
    model, feeds = single_op(op_type, [In(f32(rng, 1, 4, 5, 2)), np.array(size, np.int32)],
                             {"alignCorners": align_corners, "halfPixelCenters": half_pixel})
    check(model, feeds)


# -- reference engines --------------------------------------------------------------------

def _small_cnn(rng):
    b = ModelBuilder()
    x = b.input("x", [1, 12, 12, 3])
    y = b.op("CONV_2D", [x, b.const("w1", f32(rng, 8, 3, 3, 3)), b.const("b1", f32(rng, 8))],
             {"strideH": 2, "strideW": 2, "fusedActivationFunction": 3})
    y = b.op("DEPTHWISE_CONV_2D", [y, b.const("w2", f32(rng, 1, 3, 3, 8)), b.const("b2", f32(rng, 8))],
             {"fusedActivationFunction": 1})
    y = b.op("MUL", [y, b.const("scale", f32(rng, 8))])
    y = b.op("ADD", [y, b.const("shift", f32(rng, 8))], {"fusedActivationFunction": 1})
    y = b.op("MAX_POOL_2D", [y], {"filterHeight": 2, "filterWidth": 2, "strideH": 2, "strideW": 2})
    y = b.op("MEAN", [y, b.const("axes", np.array([1, 2], np.int32))])
    y = b.op("FULLY_CONNECTED", [y, b.const("fc_w", f32(rng, 10, 8)), b.const("fc_b", f32(rng, 10))])
    b.output(b.op("SOFTMAX", [y], name="probs"))
    return b.build()


@requires_onert
@pytest.mark.parametrize("fmt", ["tflite", "circle"])
def test_small_cnn_matches_onert(save_model, run_jax, rng, fmt):
    model = _small_cnn(rng)
    path = save_model(model, f"cnn.{fmt}")
    x = f32(rng, 1, 12, 12, 3)
    (expected,) = run_onert(path, [x])
    assert relative_error(run_jax(model, [x])[0], expected) <= TOL
    assert relative_error(run_litert(path, [x])[0], expected) <= TOL


# -- the lowering API ---------------------------------------------------------------------

def test_registry_rejects_duplicates_and_lists_ops():
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "DEQUANTIZE"} <= set(supported_ops())
    with pytest.raises(ValueError, match="already registered"):
        register("CONV_2D")(lambda ctx, x: x)
    assert RULES[("CONV_2D", "float")].__name__ == "conv_2d"


def test_unsupported_op_names_type_index_and_output(rng):
    b = ModelBuilder()
    x = b.input("x", [4])
    y = b.op("RELU", [x])
    b.output(b.op("SEGMENT_SUM", [y, b.const("ids", np.array([0, 0, 1, 1], np.int32))],
                  options_type="SegmentSumOptions", output_shape=[2], name="x_sums"))
    with pytest.raises(LoweringError, match=r"^op 1 \(SEGMENT_SUM, output 'x_sums'\) has no lowering rule; "
                                            r"supported: ABS, ADD, .*\(\d+ in all\)$"):
        lower(b.build())


def test_quantized_op_without_rule_names_its_types():
    b = ModelBuilder()
    q = jaxfuse.Quantization(scale=np.array([0.1], np.float32), zero_point=np.array([3]))
    x = b.input("x", [1, 4], np.int8, quant=q)
    b.output(b.op("EXP", [x], output_shape=[1, 4], dtype=np.int8, quant=q, name="e"))
    with pytest.raises(LoweringError, match=r"^op 0 \(EXP, output 'e'\) has no lowering rule for quantized tensors "
                                            r"\(inputs int8 -> outputs int8\); quantized ops supported: "):
        lower(b.build())
    assert issubclass(LoweringError, ValueError)


def test_float16_weights_with_quantization_fields_are_accepted(rng, run_jax):
    b = ModelBuilder()
    x = b.input("x", [1, 3])
    w16 = b.const("w16", f32(rng, 2, 3).astype(np.float16))
    w16.quantization = jaxfuse.Quantization(scale=np.array([1.0], np.float32), zero_point=np.array([0]))
    b.output(b.op("FULLY_CONNECTED", [x, b.op("DEQUANTIZE", [w16]), None]))
    x_value = f32(rng, 1, 3)
    np.testing.assert_allclose(run_jax(b.build(), [x_value])[0], x_value @ w16.data.astype(np.float32).T, rtol=1e-6)


def _conv_model(rng):
    b = ModelBuilder()
    x = b.input("x", [1, 6, 6, 2])
    y = b.op("CONV_2D", [x, b.const("w", f32(rng, 3, 3, 3, 2)), b.const("bias", f32(rng, 3))], name="conv")
    z = b.op("MUL", [y, b.const("w", f32(rng, 3))], name="scaled")  # the builder names it "w_1"
    b.output(b.op("MEAN", [z, b.const("axes", np.array([1, 2], np.int32))], name="pooled"))
    b.graph.tensor("w_1").name = "w"  # two tensors named "w", as files may have
    return b.build()


def test_params_hold_float_constants_only_with_unique_keys(rng):
    model = _conv_model(rng)
    g = model.main
    keys = tensor_keys(g)
    second_w = [t for t in g.tensors if t.name == "w"][1]
    assert keys[id(second_w)] == f"w#{g.tensors.index(second_w)}"
    _, params = lower(model)
    assert sorted(params) == sorted(["w", "bias", keys[id(second_w)]])
    np.testing.assert_array_equal(params[keys[id(second_w)]], second_w.data)


def test_jit_grad_vmap_through_params(rng):
    model = _conv_model(rng)
    fn, params = lower(model)
    x = f32(rng, 1, 6, 6, 2)

    def loss(p):
        return jnp.sum(fn(p, x)[0])

    grad = jax.jit(jax.grad(loss))(params)
    # loss = sum_o s[o] * mean_hw(conv(x, w)[..., o] + bias[o]); d/dbias[o] = s[o]
    second_w = [k for k in params if k.startswith("w#")][0]
    np.testing.assert_allclose(grad["bias"], params[second_w], rtol=1e-5)
    # a filter entry against a central difference (exact up to rounding: the loss is linear in w)
    eps = 1e-2
    bump = jnp.zeros_like(params["w"]).at[1, 0, 2, 1].set(eps)
    numeric = (loss({**params, "w": params["w"] + bump}) - loss({**params, "w": params["w"] - bump})) / (2 * eps)
    np.testing.assert_allclose(grad["w"][1, 0, 2, 1], numeric, rtol=1e-3)
    # vmap over a batch of weight sets equals the per-set results
    ws = jnp.stack([params["w"], 2 * params["w"]])
    batched = jax.jit(jax.vmap(lambda w: fn({**params, "w": w}, x)[0]))(ws)
    np.testing.assert_allclose(batched[1], fn({**params, "w": ws[1]}, x)[0], rtol=1e-6)


def test_named_scopes_follow_op_type_and_index(rng):
    fn, params = lower(_conv_model(rng))
    text = jax.jit(fn).lower(params, f32(rng, 1, 6, 6, 2)).as_text(debug_info=True)
    assert all(s in text for s in ("CONV_2D_0", "MUL_1", "MEAN_2"))


def test_sub_region_and_all_tensors(rng, run_jax):
    model = _conv_model(rng)
    g = model.main
    conv_out, scaled, pooled = (g.tensor(n) for n in ("conv", "scaled", "pooled"))
    x = f32(rng, 1, 6, 6, 2)
    everything = jax.jit(lower_graph(g, all_tensors=True)[0])(lower(model)[1], x)
    assert sorted(everything) == ["conv", "pooled", "scaled", "x"]
    np.testing.assert_allclose(everything["pooled"], run_jax(model, [x])[0], rtol=1e-6)
    # only the MUL -> MEAN region, fed with the recorded conv output
    fn, params = lower_graph(g, inputs=[conv_out], outputs=[pooled, scaled])
    assert "bias" not in params
    got_pooled, got_scaled = fn(params, everything["conv"])
    np.testing.assert_allclose(got_pooled, everything["pooled"], rtol=1e-6)
    np.testing.assert_allclose(got_scaled, everything["scaled"], rtol=1e-6)
    with pytest.raises(LoweringError, match="tensor 'conv' is needed but is neither an input nor computed"):
        lower_graph(jaxfuse.Graph(g.tensors, g.ops[1:], g.inputs, [pooled]))


def test_params_left_on_the_host(rng):
    """on_device=False hands back the tensors' own arrays (no copy) under the same keys and
    order, and fn computes the same values from them."""
    model = _conv_model(rng)
    fn, on_device = lower(model)
    _, on_host = lower_graph(model.main, on_device=False)
    assert list(on_host) == list(on_device)
    keys = tensor_keys(model.main)
    by_key = {keys[id(t)]: t for t in model.main.tensors}
    assert all(isinstance(value, np.ndarray) and np.shares_memory(value, by_key[key].buffer.data)
               for key, value in on_host.items())
    x = f32(rng, 1, 6, 6, 2)
    np.testing.assert_array_equal(jax.jit(fn)(on_host, x)[0], jax.jit(fn)(on_device, x)[0])


def test_wrong_input_shape_is_reported(rng):
    fn, params = lower(_conv_model(rng))
    with pytest.raises(LoweringError, match=r"input 'x' has shape \[1, 7, 7, 2\], the model's is \[1, 6, 6, 2\]"):
        fn(params, f32(rng, 1, 7, 7, 2))


def test_ops_out_of_order_are_reported(rng):
    g = _conv_model(rng).main
    with pytest.raises(LoweringError, match=r"op 0 \(MEAN, output 'pooled'\): reads 'scaled' before the op computing"):
        lower_graph(jaxfuse.Graph(g.tensors, g.ops[::-1], g.inputs, g.outputs))


def test_dynamic_batch_follows_shape_signature(check, rng):
    model = _small_cnn(rng)
    for t in model.main.tensors:
        if not t.is_constant and t.shape:
            t.shape_signature = (-1, *t.shape[1:])
    check(model, [f32(rng, 3, 12, 12, 3)])


def test_builder_checks_options_and_needs_a_shape_without_rule():
    b = ModelBuilder()
    x = b.input("x", [1, 4, 4, 2])
    with pytest.raises(ValueError, match=r"Conv2DOptions has no field\(s\) \['stride'\]"):
        b.op("CONV_2D", [x, b.const("w", np.ones([1, 1, 1, 2], np.float32)), None], {"stride": 2})
    with pytest.raises(ValueError, match="SEGMENT_SUM has no lowering rule to infer its output shape: give "
                                         "output_shape"):
        b.op("SEGMENT_SUM", [x, b.const("ids", np.array([0, 0, 1, 1], np.int32))], options_type="SegmentSumOptions")


def test_conformance_example_runs(save_model, rng, capsys):
    import runpy
    path = save_model(_small_cnn(rng))
    script = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "check_keras_conformance.py"))
    assert script["main"]([str(path), "--seeds", "1"]) == 0
    assert "model.tflite" in capsys.readouterr().out


def test_jaxfuse_lower_stays_the_function_after_the_package_is_imported(rng):
    import jaxfuse.lowering  # noqa: F401  (a package named like the function would rebind jaxfuse.lower)
    model = _conv_model(rng)
    assert jaxfuse.lower(model)[1].keys() == lower(model)[1].keys() == jaxfuse.lower(model)[1].keys()
