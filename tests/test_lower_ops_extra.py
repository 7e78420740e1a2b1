"""Comparison, logical, select, trigonometric, floor-division, running-sum, spectral and layout
rules (jaxfuse/lowering/{comparison,arithmetic,signal,layout}.py) against LiteRT's builtin
kernels on single-op graphs, and against onert where onert 0.1.0 runs the op."""
import jax
import numpy as np
import pytest

import jaxfuse
from jaxfuse.builder import ModelBuilder
from jaxfuse.lowering import LoweringError, lower
from reference import relative_error, requires_onert, run_litert, run_onert_or_skip
from test_lower_ops import TOL, In, check, f32, single_op  # noqa: F401 (check is a fixture)

COMPARISONS = ["GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "EQUAL", "NOT_EQUAL"]
PAIRS = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3))]


def ties(rng, shape, dtype):
    """Small integers (as `dtype`): comparisons meet equal pairs often."""
    return rng.integers(-3, 4, size=shape).astype(dtype)


# -- comparisons, logic, select -------------------------------------------------------------

@pytest.mark.parametrize("op_type", COMPARISONS)
@pytest.mark.parametrize("shapes", PAIRS)
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_comparison(check, rng, op_type, shapes, dtype):
    a, b = ties(rng, shapes[0], dtype), ties(rng, shapes[1], dtype)
    (y,) = check(*single_op(op_type, [In(a), In(b)]))
    assert y.dtype == np.bool_


def test_comparison_of_int64_and_nan(check, rng):
    check(*single_op("LESS", [In(ties(rng, (5, 6), np.int64)), In(ties(rng, (6,), np.int64))]))
    a = np.array([np.nan, 1.0, np.nan, -0.0], np.float32)
    b = np.array([np.nan, np.nan, 2.0, 0.0], np.float32)
    for op_type in ("EQUAL", "NOT_EQUAL", "GREATER_EQUAL"):
        check(*single_op(op_type, [In(a), In(b)]))


@pytest.mark.parametrize("op_type", ["LOGICAL_AND", "LOGICAL_OR"])
@pytest.mark.parametrize("shapes", PAIRS[:3])
def test_logical_binary(check, rng, op_type, shapes):
    a, b = rng.random(shapes[0]) < 0.5, rng.random(shapes[1]) < 0.5
    check(*single_op(op_type, [In(a), In(b)]))


def test_logical_not(check, rng):
    check(*single_op("LOGICAL_NOT", [In(rng.random((3, 5)) < 0.5)]))


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("condition_shape", [(3, 4, 2), (3,)])
def test_select(check, rng, dtype, condition_shape):
    x, y = ties(rng, (3, 4, 2), dtype), ties(rng, (3, 4, 2), dtype) + 10
    check(*single_op("SELECT", [In(rng.random(condition_shape) < 0.5), In(x), In(y)]))


@pytest.mark.parametrize("shapes", [((2, 3, 4), (2, 3, 4), (2, 3, 4)), ((3, 1), (1, 4), ()),
                                    ((1,), (2, 3), (3,)), ((2, 1, 4), (), (3, 1))])
def test_select_v2_broadcasts(check, rng, shapes):
    condition = rng.random(shapes[0]) < 0.5
    check(*single_op("SELECT_V2", [In(condition), In(f32(rng, *shapes[1])), In(f32(rng, *shapes[2]) + 10)]))


def test_select_refuses_what_only_select_v2_broadcasts(rng):
    model, feeds = single_op("SELECT", [In(rng.random((3, 1)) < 0.5), In(f32(rng, 3, 4)), In(f32(rng, 3, 4))],
                             output_shape=[3, 4])
    fn, params = lower(model)
    with pytest.raises(LoweringError, match=r"op 0 \(SELECT.*broadcasting is SELECT_V2's"):
        fn(params, *feeds)


# -- arithmetic -----------------------------------------------------------------------------

@pytest.mark.parametrize("op_type", ["SIN", "COS"])
def test_sin_cos(check, rng, op_type):
    x = 6 * f32(rng, 4, 50)
    x[0, :4] = [0, np.pi, -np.pi / 2, 100.0]
    check(*single_op(op_type, [In(x)]))


@pytest.mark.parametrize("op_type", ["CEIL", "ROUND", "SIGN"])
def test_rounding_and_sign(check, rng, op_type):
    x = 3 * f32(rng, 3, 20)
    x[0, :8] = [0.5, 1.5, 2.5, -0.5, -1.5, 0.0, -0.0, 2.0]  # halves round to even
    check(*single_op(op_type, [In(x)]))


def test_sign_of_integers(check, rng):
    check(*single_op("SIGN", [In(ties(rng, (4, 5), np.int32))]))


@pytest.mark.parametrize("count", [2, 4])
def test_add_n(check, rng, count):
    check(*single_op("ADD_N", [In(f32(rng, 3, 5)) for _ in range(count)]))


SIGNED_PAIRS = [(7, 2), (-7, 2), (7, -2), (-7, -2), (6, 3), (-6, 3), (0, -5), (-1, 4)]


@pytest.mark.parametrize("op_type", ["FLOOR_DIV", "FLOOR_MOD"])
@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_floor_div_mod(check, rng, op_type, dtype):
    """Every sign combination, exact multiples and zero numerators, then broadcasting."""
    a = np.array([p[0] for p in SIGNED_PAIRS], dtype)
    b = np.array([p[1] for p in SIGNED_PAIRS], dtype)
    (y,) = check(*single_op(op_type, [In(a), In(b)]))
    expected = np.floor_divide(a, b) if op_type == "FLOOR_DIV" else np.mod(a, b)
    np.testing.assert_array_equal(y, expected)  # -7 // 2 == -4, -7 mod 2 == 1, 7 mod -2 == -1
    if dtype == np.float32:
        a, b = 5 * f32(rng, 3, 4), np.sign(f32(rng, 4)) * (np.abs(f32(rng, 4)) + 0.5)
    else:
        a, b = rng.integers(-50, 50, (3, 4)).astype(dtype), np.array([3, -4, 7, -1], dtype)
    check(*single_op(op_type, [In(a), b]))


@pytest.mark.parametrize("op_type", ["FLOOR_DIV", "FLOOR_MOD"])
def test_integer_division_by_a_constant_zero_is_refused(save_model, op_type):
    model, feeds = single_op(op_type, [In(np.array([3, 4], np.int32)), np.array([2, 0], np.int32)], output_shape=[2])
    with pytest.raises(RuntimeError, match="Division by 0"):
        run_litert(save_model(model), feeds)
    fn, params = lower(model)
    with pytest.raises(LoweringError, match=r"op 0 \(%s.*divisor \(input 1\) has a zero element" % op_type):
        fn(params, *feeds)


@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_cumsum(check, rng, exclusive, reverse, axis, dtype):
    x = ties(rng, (2, 5, 7), dtype) if dtype == np.int32 else f32(rng, 2, 5, 7)
    (y,) = check(*single_op("CUMSUM", [In(x), np.array(axis, np.int32)], {"exclusive": exclusive, "reverse": reverse}))
    if exclusive:
        edge = -1 if reverse else 0
        np.testing.assert_array_equal(np.take(y, edge, axis=axis), 0)


# -- spectral ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,fft_length", [((1, 1, 1, 64), (1, 64)), ((2, 8, 16), (8, 16)),
                                              ((3, 6, 20), (8, 16)), ((1, 4, 4), (2, 4))])
def test_rfft2d(check, rng, shape, fft_length):
    """Exact lengths, zero padding of both axes and cropping of both (LiteRT's kernel does each)."""
    (y,) = check(*single_op("RFFT2D", [In(f32(rng, *shape)), np.array(fft_length, np.int32)]))
    assert y.dtype == np.complex64 and y.shape == (*shape[:-2], fft_length[0], fft_length[1] // 2 + 1)


def test_rfft2d_then_cast_keeps_the_real_part(check, rng):
    """tf.signal.stft as TF converts it: RFFT2D -> SQUEEZE -> CAST to float32 (LiteRT's CAST of
    complex values keeps their real part)."""
    b = ModelBuilder()
    x = b.input("x", [1, 1, 1, 64])
    spectrum = b.op("SQUEEZE", [b.op("RFFT2D", [x, b.const("n", np.array([1, 64], np.int32))])], {"squeezeDims": [1]})
    b.output(b.op("CAST", [spectrum], dtype=np.float32, options_type="CastOptions"))
    value = f32(rng, 1, 1, 1, 64)
    (y,) = check(b.build(), [value])
    np.testing.assert_allclose(y, np.fft.rfft(value[0, 0])[None].real, atol=1e-4)


@pytest.mark.parametrize("op_type", ["COMPLEX_ABS", "REAL", "IMAG"])
def test_complex_parts_of_a_spectrum(check, rng, op_type):
    b = ModelBuilder()
    x = b.input("x", [2, 4, 16])
    b.output(b.op(op_type, [b.op("RFFT2D", [x, b.const("n", np.array([4, 16], np.int32))])]))
    (y,) = check(b.build(), [f32(rng, 2, 4, 16)])
    assert y.dtype == np.float32


def test_relative_error_of_complex_values_counts_both_parts():
    reference = np.array([1 + 1j, 2 - 2j], np.complex64)
    assert relative_error(reference + 0.5j, reference) == 0.25  # an error in the imaginary part alone
    assert relative_error(reference, reference) == 0.0


def test_rfft2d_refuses_a_length_that_is_not_a_power_of_two(rng):
    model, feeds = single_op("RFFT2D", [In(f32(rng, 4, 12)), np.array([4, 12], np.int32)], output_shape=[4, 7])
    fn, params = lower(model)
    with pytest.raises(LoweringError, match="fft_length width 12 is not a power of two"):
        fn(params, *feeds)


# -- layout -----------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [2, 3])
def test_depth_to_space(check, rng, block):
    x = f32(rng, 2, 3, 4, 2 * block * block)
    (y,) = check(*single_op("DEPTH_TO_SPACE", [In(x)], {"blockSize": block}))
    # channel (i * b + j) * C + c of pixel (h, w) lands on (h * b + i, w * b + j), channel c
    assert y[1, 2 * block + 1, 3 * block + 0, 1] == x[1, 2, 3, (1 * block + 0) * 2 + 1]


@pytest.mark.parametrize("block", [2, 3])
def test_space_to_depth(check, rng, block):
    check(*single_op("SPACE_TO_DEPTH", [In(f32(rng, 2, 2 * block, 3 * block, 3))], {"blockSize": block}))


def test_depth_to_space_inverts_space_to_depth(rng, run_jax):
    b = ModelBuilder()
    x = b.input("x", [1, 6, 4, 5])
    b.output(b.op("DEPTH_TO_SPACE", [b.op("SPACE_TO_DEPTH", [x])]))
    value = f32(rng, 1, 6, 4, 5)
    np.testing.assert_array_equal(run_jax(b.build(), [value])[0], value)


SPACE_TO_BATCH = [  # input shape, block shape, paddings (SPACE_TO_BATCH_ND) = crops (BATCH_TO_SPACE_ND)
    ((2, 4, 6, 3), [2, 2], [[0, 0], [0, 0]]),
    ((1, 5, 4, 2), [2, 3], [[1, 0], [0, 2]]),
    ((2, 6, 3), [3], [[1, 2]]),
]


@pytest.mark.parametrize("shape,block,paddings", SPACE_TO_BATCH)
def test_space_to_batch_nd(check, rng, shape, block, paddings):
    check(*single_op("SPACE_TO_BATCH_ND", [In(f32(rng, *shape)), np.array(block, np.int32),
                                           np.array(paddings, np.int32)]))


@pytest.mark.parametrize("shape,block,crops", SPACE_TO_BATCH)
def test_batch_to_space_nd(check, rng, shape, block, crops):
    blocks = int(np.prod(block))
    spatial = [(d + lo + hi) // b for d, b, (lo, hi) in zip(shape[1:], block, crops)]
    x = f32(rng, shape[0] * blocks, *spatial, *shape[1 + len(block):])
    check(*single_op("BATCH_TO_SPACE_ND", [In(x), np.array(block, np.int32), np.array(crops, np.int32)]))


def test_batch_to_space_inverts_space_to_batch(rng, run_jax):
    """The dilated-convolution wrapper TF 1 converters wrote: SPACE_TO_BATCH_ND -> op -> BATCH_TO_SPACE_ND."""
    b = ModelBuilder()
    x = b.input("x", [2, 5, 4, 3])
    block, pads = b.const("block", np.array([2, 2], np.int32)), b.const("pads", np.array([[1, 0], [0, 2]], np.int32))
    b.output(b.op("BATCH_TO_SPACE_ND", [b.op("SPACE_TO_BATCH_ND", [x, block, pads]), block, pads]))
    value = f32(rng, 2, 5, 4, 3)
    np.testing.assert_array_equal(run_jax(b.build(), [value])[0], value)


def test_where_of_a_constant_condition(check, rng):
    """WHERE's output shape is that of its values: a constant condition is evaluated while lowering."""
    condition = rng.random((3, 4)) < 0.5
    b = ModelBuilder()
    coordinates = b.op("WHERE", [b.const("condition", condition)])
    offset = b.input("offset", [], np.int64)
    b.output(b.op("ADD", [coordinates, offset]))
    (y,) = check(b.build(), [np.array(0, np.int64)])
    np.testing.assert_array_equal(y, np.argwhere(condition))


def test_where_of_a_runtime_condition_is_refused(rng):
    model, feeds = single_op("WHERE", [In(rng.random((3, 4)) < 0.5)], output_shape=[5, 2])
    fn, params = lower(model)
    with pytest.raises(LoweringError, match=r"op 0 \(WHERE.*condition \(input 0\), which decides WHERE's output "
                                            "shape, must be a constant"):
        fn(params, *feeds)


@pytest.mark.parametrize("axis", [[0], [-1], [1]])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_reverse_v2(check, rng, axis, dtype):
    check(*single_op("REVERSE_V2", [In(ties(rng, (3, 4, 5), dtype)), np.array(axis, np.int32)]))


@pytest.mark.parametrize("multiples", [[1, 2, 3], [2, 1, 1]])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_])
def test_tile(check, rng, multiples, dtype):
    check(*single_op("TILE", [In(ties(rng, (2, 3, 4), dtype)), np.array(multiples, np.int32)]))


@pytest.mark.parametrize("shape,target", [((1, 4), [3, 4]), ((3, 1, 2), [2, 3, 5, 2]), ((), [2, 2])])
def test_broadcast_to(check, rng, shape, target):
    check(*single_op("BROADCAST_TO", [In(f32(rng, *shape)), np.array(target, np.int32)], version=2))


@pytest.mark.parametrize("params_shape,indices", [((4, 5), [[1, 2], [3, 0], [0, 4]]), ((4, 5, 3), [[2], [0]]),
                                                  ((3, 4, 2), [[[0, 1], [2, 3]], [[1, 1], [0, 0]]])])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_gather_nd(check, rng, params_shape, indices, dtype):
    check(*single_op("GATHER_ND", [In(ties(rng, params_shape, dtype) * 3 + f32(rng, *params_shape).astype(dtype)),
                                   np.array(indices, np.int32)]))


def test_gather_nd_index_out_of_range_is_refused(save_model, rng):
    model, feeds = single_op("GATHER_ND", [In(f32(rng, 4, 5)), np.array([[1, 2], [4, 0]], np.int32)], output_shape=[2])
    with pytest.raises(RuntimeError):
        run_litert(save_model(model), feeds)
    fn, params = lower(model)
    with pytest.raises(LoweringError, match=r"op 0 \(GATHER_ND.*index \[4, 0\] is out of range for params of shape "
                                            r"\[4, 5\]"):
        fn(params, *feeds)


def test_gather_nd_of_runtime_indices(check, rng):
    check(*single_op("GATHER_ND", [f32(rng, 4, 3, 2), In(np.array([[3, 1], [0, 2]], np.int32))]))


@pytest.mark.parametrize("value", [np.array(2.5, np.float32), np.array(-3, np.int32)])
def test_fill(check, value):
    b = ModelBuilder()
    v = b.input("v", [], value.dtype)
    b.output(b.op("FILL", [b.const("dims", np.array([2, 3], np.int32)), v]))
    (y,) = check(b.build(), [value])
    assert y.shape == (2, 3) and np.all(y == value)


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_zeros_like(check, rng, dtype):
    # a computed input (x + x) so the op's input is not a graph input LiteRT may alias
    b = ModelBuilder()
    x = b.input("x", [2, 3], dtype)
    b.output(b.op("ZEROS_LIKE", [b.op("ADD", [x, x])]))
    check(b.build(), [ties(rng, (2, 3), dtype)])


@pytest.mark.parametrize("start,limit,delta", [(0, 10, 3), (5, -4, -2), (2, 3, 5), (0.5, 3.2, 0.3),
                                               (1.0, -1.0, -0.1)])
def test_range(check, start, limit, delta):
    """RANGE of constants, as TF's converter writes for tf.range inside a shape computation
    (its result feeds a graph output through an ADD so LiteRT evaluates it)."""
    dtype = np.float32 if isinstance(start, float) else np.int32
    b = ModelBuilder()
    r = b.op("RANGE", [b.const(name, np.array(v, dtype)) for name, v in
                       (("start", start), ("limit", limit), ("delta", delta))])
    offset = b.input("offset", [], dtype)
    b.output(b.op("ADD", [r, offset]))
    (y,) = check(b.build(), [np.array(0, dtype)])
    # the length as LiteRT computes it, in the inputs' type: (3.2 - 0.5) / 0.3 is 9 in float32
    length = np.ceil(np.abs((dtype(limit) - dtype(start)) / dtype(delta)))
    assert y.shape == (int(length),) and y[0] == dtype(start) and np.all(np.diff(y) * delta > 0)


def test_range_of_a_runtime_value_is_refused(rng):
    model, feeds = single_op("RANGE", [np.array(0, np.int32), In(np.array(5, np.int32)), np.array(1, np.int32)],
                             output_shape=[5])
    fn, params = lower(model)
    with pytest.raises(LoweringError, match=r"op 0 \(RANGE.*limit \(input 1\) must be a constant"):
        fn(params, *feeds)


# -- onert ------------------------------------------------------------------------------------

BLOCK_2X2, CROP_TOP = np.array([2, 2], np.int32), np.array([[1, 0], [0, 0]], np.int32)
ONERT_CASES = {  # one model per op family; onert 0.1.0 runs some and refuses others (the test skips in its words)
    "comparison": lambda rng: single_op("GREATER", [In(f32(rng, 3, 4)), In(f32(rng, 4))]),
    "select_v2": lambda rng: single_op("SELECT_V2", [In(rng.random((3, 1)) < 0.5), In(f32(rng, 3, 4)),
                                                     In(f32(rng, 4))]),
    "logical_and": lambda rng: single_op("LOGICAL_AND", [In(rng.random((3, 4)) < .5), In(rng.random(4) < .5)]),
    "sin": lambda rng: single_op("SIN", [In(4 * f32(rng, 3, 7))]),
    "cos": lambda rng: single_op("COS", [In(4 * f32(rng, 3, 7))]),
    "floor_div": lambda rng: single_op("FLOOR_DIV", [In(5 * f32(rng, 3, 4)), np.full(4, -1.5, np.float32)]),
    "floor_mod": lambda rng: single_op("FLOOR_MOD", [In(5 * f32(rng, 3, 4)), np.full(4, -1.5, np.float32)]),
    "depth_to_space": lambda rng: single_op("DEPTH_TO_SPACE", [In(f32(rng, 1, 3, 4, 8))]),
    "space_to_depth": lambda rng: single_op("SPACE_TO_DEPTH", [In(f32(rng, 1, 4, 6, 3))]),
    "reverse_v2": lambda rng: single_op("REVERSE_V2", [In(f32(rng, 3, 4, 5)), np.array([1], np.int32)]),
    "tile": lambda rng: single_op("TILE", [In(f32(rng, 2, 3)), np.array([2, 2], np.int32)]),
    "gather_nd": lambda rng: single_op("GATHER_ND", [In(f32(rng, 4, 5)), np.array([[1, 2], [3, 0]], np.int32)]),
    "cumsum": lambda rng: single_op("CUMSUM", [In(f32(rng, 3, 6)), np.array(1, np.int32)]),
    "rfft2d": lambda rng: single_op("RFFT2D", [In(f32(rng, 2, 8, 16)), np.array([8, 16], np.int32)]),
    "space_to_batch_nd": lambda rng: single_op("SPACE_TO_BATCH_ND", [In(f32(rng, 1, 5, 4, 2)), BLOCK_2X2, CROP_TOP]),
    "batch_to_space_nd": lambda rng: single_op("BATCH_TO_SPACE_ND", [In(f32(rng, 4, 3, 2, 2)), BLOCK_2X2, CROP_TOP]),
    "round": lambda rng: single_op("ROUND", [In(4 * f32(rng, 3, 7))]),
    "sign": lambda rng: single_op("SIGN", [In(f32(rng, 3, 7))]),
    "add_n": lambda rng: single_op("ADD_N", [In(f32(rng, 3, 7)), In(f32(rng, 3, 7)), In(f32(rng, 3, 7))]),
}


@requires_onert
@pytest.mark.parametrize("case", sorted(ONERT_CASES))
def test_matches_onert(case, save_model, rng):
    model, feeds = ONERT_CASES[case](rng)
    path = save_model(model, "model.circle")
    theirs = run_onert_or_skip(path, feeds, case.upper())
    fn, params = lower(jaxfuse.load(path))
    ours = [np.asarray(y) for y in jax.jit(fn)(params, *feeds)]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype.kind == b.dtype.kind
        assert relative_error(a, b) <= TOL, relative_error(a, b)


def test_litert_agrees_with_the_numpy_meaning_of_floor_division(save_model):
    """Pins the semantics the rules follow, on LiteRT alone: floor, not truncation."""
    model, feeds = single_op("FLOOR_DIV", [In(np.array([-7, 7], np.int32)), np.array([2, -2], np.int32)])
    np.testing.assert_array_equal(run_litert(save_model(model), feeds)[0], [-4, -4])
