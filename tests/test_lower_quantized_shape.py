"""Quantized data movement (jaxfuse/lowering/quantized_shape.py), comparisons
(quantized_comparison.py) and ARG_MAX / ARG_MIN against LiteRT's builtin kernels, bit for bit,
and against onert where onert 0.1.0 runs the op."""
import jax
import numpy as np
import pytest

import jaxfuse
from jaxfuse.lowering import LoweringError, lower
from quantized import QConst, QIn, assert_matches_litert, quantized_op, random_q
from reference import requires_onert, run_onert_or_skip
from test_lower_quantized_array import QUANTIZED_TYPES, refused_by_both, with_edges


def i32(value):
    return np.array(value, np.int32)


# op -> (input shape, the other operands after the data input, options, number of outputs)
MOVEMENT = {
    "STRIDED_SLICE": ((2, 4, 6), [i32([0, 1, 5]), i32([2, 4, 0]), i32([1, 2, -2])], {"shrinkAxisMask": 0}, 1),
    "SLICE": ((2, 4, 6), [i32([1, 1, 0]), i32([1, -1, 4])], {}, 1),
    "SPLIT": ((2, 4, 6), None, {"numSplits": 3}, 3),  # axis first: built below
    "SPLIT_V": ((2, 4, 6), [i32([1, -1, 2]), i32(2)], {"numSplits": 3}, 3),
    "GATHER": ((2, 4, 6), [i32([[3, 0], [1, 1]])], {"axis": 1}, 1),
    "GATHER_ND": ((2, 4, 6), [i32([[1, 2], [0, 3], [1, 0]])], {}, 1),
    "PACK": ((2, 4, 6), "twice", {"valuesCount": 2, "axis": 1}, 1),
    "UNPACK": ((2, 4, 6), [], {"num": 4, "axis": 1}, 4),
    "EXPAND_DIMS": ((2, 4, 6), [i32(-1)], {}, 1),
    "TILE": ((2, 4, 6), [i32([2, 1, 2])], {}, 1),
    "BROADCAST_TO": ((4, 1), [i32([2, 4, 3])], {}, 1),
    "REVERSE_V2": ((2, 4, 6), [i32([-1])], {}, 1),
    "DEPTH_TO_SPACE": ((1, 2, 3, 8), [], {"blockSize": 2}, 1),
    "SPACE_TO_DEPTH": ((1, 4, 6, 3), [], {"blockSize": 2}, 1),
    "SPACE_TO_BATCH_ND": ((1, 5, 4, 2), [i32([2, 3]), i32([[1, 0], [0, 2]])], {}, 1),  # pads with the zero point
    "BATCH_TO_SPACE_ND": ((6, 3, 2, 2), [i32([2, 3]), i32([[1, 0], [0, 2]])], {}, 1),
}
NO_INT16 = {"DEPTH_TO_SPACE", "SPACE_TO_DEPTH"}


def movement_model(op_type, x: QIn, out_scale, out_zero_point, **kwargs):
    shape, rest, options, outputs = MOVEMENT[op_type]
    if op_type == "SPLIT":
        operands = [i32(2), x]
    elif rest == "twice":
        operands = [x, x]
    else:
        operands = [x, *rest]
    return quantized_op(op_type, operands, options, out_dtype=x.value.dtype, out_scale=out_scale,
                        out_zero_point=out_zero_point, num_outputs=outputs,
                        version=2 if op_type == "BROADCAST_TO" else 1, **kwargs)


@pytest.mark.parametrize("op_type", sorted(MOVEMENT))
@pytest.mark.parametrize("dtype,scale,zero_point", QUANTIZED_TYPES)
def test_data_movement(save_model, rng, op_type, dtype, scale, zero_point):
    if dtype == np.int16 and op_type in NO_INT16:
        pytest.skip("LiteRT has no int16 kernel (test_int16_refused_where_litert_has_no_kernel)")
    x = QIn(with_edges(random_q(rng, MOVEMENT[op_type][0], dtype)), scale, zero_point)
    model, feeds = movement_model(op_type, x, scale, zero_point)
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("op_type", ["STRIDED_SLICE", "SPLIT_V", "GATHER", "TILE", "DEPTH_TO_SPACE", "REVERSE_V2"])
def test_data_movement_reinterprets_when_output_quantization_differs(save_model, rng, op_type):
    """These kernels copy the integers and never read the scales (LiteRT checks nothing)."""
    x = QIn(random_q(rng, MOVEMENT[op_type][0], np.int8), 0.05, -3)
    model, feeds = movement_model(op_type, x, 0.2, 7)
    outputs = assert_matches_litert(save_model(model), feeds, exact=True)
    assert set(np.unique(outputs[0])) <= set(np.unique(x.value))


@pytest.mark.parametrize("op_type", ["PACK", "UNPACK", "EXPAND_DIMS"])
@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_same_quantization_required_where_litert_requires_it(save_model, rng, op_type, dtype):
    x = QIn(random_q(rng, MOVEMENT[op_type][0], dtype), 0.05, 0)
    shape = {"PACK": (2, 2, 4, 6), "UNPACK": (2, 6), "EXPAND_DIMS": (2, 4, 6, 1)}[op_type]
    model, feeds = movement_model(op_type, x, 0.1, 0, output_shape=shape)
    refused_by_both(save_model, model, feeds, r"op 0 \(%s.*quantized with scale 0.1, zero point 0 but 'in0' with "
                                              r"scale 0.05, zero point 0; LiteRT's %s requires them equal"
                    % (op_type, op_type))


@pytest.mark.parametrize("op_type", ["DEPTH_TO_SPACE", "SPACE_TO_DEPTH"])
def test_int16_refused_where_litert_has_no_kernel(save_model, rng, op_type):
    x = QIn(random_q(rng, MOVEMENT[op_type][0], np.int16), 0.001, 0)
    shape = {"DEPTH_TO_SPACE": (1, 4, 6, 2), "SPACE_TO_DEPTH": (1, 2, 3, 12)}[op_type]
    model, feeds = movement_model(op_type, x, 0.001, 0, output_shape=shape)
    refused_by_both(save_model, model, feeds, f"LiteRT's {op_type} has no int16 kernel")


@pytest.mark.parametrize("dtype,scale,zero_point", QUANTIZED_TYPES)
@pytest.mark.parametrize("condition_shape", [(3, 1), (4,)])
def test_select_v2(save_model, rng, dtype, scale, zero_point, condition_shape):
    from test_lower_ops import In
    condition = rng.random(condition_shape) < 0.5
    x, y = QIn(random_q(rng, (3, 4), dtype), scale, zero_point), QIn(random_q(rng, (1, 4), dtype), scale, zero_point)
    model, feeds = quantized_op("SELECT_V2", [In(condition), x, y], out_dtype=dtype, out_scale=scale,
                                out_zero_point=zero_point)
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("dtype,scale,zero_point", QUANTIZED_TYPES)
@pytest.mark.parametrize("condition_shape", [(3, 4), (3,)])
def test_select(save_model, rng, dtype, scale, zero_point, condition_shape):
    """SELECT: a condition of the inputs' shape, or a rank-1 one picking rows."""
    from test_lower_ops import In
    x, y = QIn(random_q(rng, (3, 4), dtype), scale, zero_point), QIn(random_q(rng, (3, 4), dtype), scale, zero_point)
    model, feeds = quantized_op("SELECT", [In(rng.random(condition_shape) < 0.5), x, y], out_dtype=dtype,
                                out_scale=scale, out_zero_point=zero_point)
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("op_type", ["ARG_MAX", "ARG_MIN"])
@pytest.mark.parametrize("dtype,scale,zero_point", QUANTIZED_TYPES[:2])
def test_arg_max_min(save_model, rng, op_type, dtype, scale, zero_point):
    x = QIn(rng.integers(0, 6, (3, 5, 7)).astype(dtype), scale, zero_point)  # ties: the first index wins
    model, feeds = quantized_op(op_type, [x, i32([-1])], {"outputType": 2}, out_dtype=np.int32, out_scale=None)
    assert_matches_litert(save_model(model), feeds, exact=True)


def test_arg_max_int16_refused_as_by_litert(save_model, rng):
    x = QIn(random_q(rng, (3, 5), np.int16), 0.001, 0)
    model, feeds = quantized_op("ARG_MAX", [x, i32([1])], {"outputType": 2}, out_dtype=np.int32, out_scale=None,
                                output_shape=(3,))
    refused_by_both(save_model, model, feeds, "LiteRT's ARG_MAX has no int16 kernel")


# -- comparisons ------------------------------------------------------------------------------

COMPARISONS = ["GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "EQUAL", "NOT_EQUAL"]


@pytest.mark.parametrize("op_type", COMPARISONS)
@pytest.mark.parametrize("dtype,zero_point", [(np.int8, -3), (np.uint8, 128)])
@pytest.mark.parametrize("second", [(0.05, None), (0.03, 5), (0.1, 0)])  # alike, finer, coarser
def test_comparison_of_real_values(save_model, rng, op_type, dtype, zero_point, second):
    """Inputs quantized alike or not; the second input holds values that land on, just above and
    just below the first's real values, so the rescaling's rounding decides some of them."""
    a = random_q(rng, (4, 30), dtype)
    b_scale, b_zero_point = second[0], zero_point if second[1] is None else second[1]
    real = (a.astype(np.float64) - zero_point) * 0.05
    info = np.iinfo(dtype)
    b = np.clip(np.round(real / b_scale) + b_zero_point + rng.integers(-1, 2, a.shape), info.min, info.max)
    model, feeds = quantized_op(op_type, [QIn(a, 0.05, zero_point), QIn(b.astype(dtype), b_scale, b_zero_point)],
                                out_dtype=np.bool_, out_scale=None)
    (y,) = assert_matches_litert(save_model(model), feeds, exact=True)
    assert 0 < y.sum() < y.size


@pytest.mark.parametrize("op_type", ["GREATER", "EQUAL"])
def test_comparison_broadcasts_against_a_constant(save_model, rng, op_type):
    a = QIn(random_q(rng, (2, 3, 8)), 0.02, 4)
    model, feeds = quantized_op(op_type, [a, QConst(np.array([3], np.int8), 0.1, -2)], out_dtype=np.bool_,
                                out_scale=None)
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("op_type", COMPARISONS)
@pytest.mark.parametrize("second", [(0.001, 0), (0.003, 0), (0.001, -3)])
def test_int16_comparison(save_model, rng, op_type, second):
    """LiteRT's int16 EQUAL / NOT_EQUAL rescale as the 8-bit kernels do (coarsely: with scale
    0.001, 2 and 3 compare equal); its int16 GREATER, LESS, ... compare the stored integers."""
    a = random_q(rng, (3, 40), np.int16) // 256
    b = np.where(rng.random(a.shape) < 0.3, a, random_q(rng, a.shape, np.int16) // 256)
    model, feeds = quantized_op(op_type, [QIn(a, 0.001), QIn(b, *second)], out_dtype=np.bool_, out_scale=None)
    (y,) = assert_matches_litert(save_model(model), feeds, exact=True)
    if op_type == "GREATER" and second[0] != 0.001:
        assert not np.array_equal(y, (a - 0.0) * 0.001 > (b - second[1]) * second[0])  # stored, not real, values


def test_comparison_refuses_a_scale_of_one_or_more(rng):
    model, feeds = quantized_op("GREATER", [QIn(random_q(rng, (2, 4)), 1.5), QIn(random_q(rng, (2, 4)), 0.5)],
                                out_dtype=np.bool_, out_scale=None, output_shape=(2, 4))
    fn, params = lower(model)
    with pytest.raises(LoweringError, match=r"op 0 \(GREATER.*input 0 has scale 1.5; LiteRT's quantized GREATER is "
                                            "defined for scales below 1 only"):
        fn(params, *feeds)


# -- onert ------------------------------------------------------------------------------------

ONERT_CASES = {  # int8 models; onert 0.1.0 runs some (the test skips in onert's words where it does not)
    "STRIDED_SLICE": lambda rng: movement_model("STRIDED_SLICE", QIn(random_q(rng, (2, 4, 6)), 0.05, -3), 0.05, -3),
    "DEPTH_TO_SPACE": lambda rng: movement_model("DEPTH_TO_SPACE", QIn(random_q(rng, (1, 2, 3, 8)), 0.05, -3),
                                                 0.05, -3),
    "GREATER": lambda rng: quantized_op("GREATER", [QIn(random_q(rng, (3, 8)), 0.05, -3),
                                                    QIn(random_q(rng, (3, 8)), 0.03, 2)],
                                        out_dtype=np.bool_, out_scale=None),
}


@requires_onert
@pytest.mark.parametrize("op_type", sorted(ONERT_CASES))
def test_int8_matches_onert(op_type, save_model, rng):
    model, feeds = ONERT_CASES[op_type](rng)
    path = save_model(model, "model.circle")
    theirs = run_onert_or_skip(path, feeds, f"int8 {op_type}")
    fn, params = lower(jaxfuse.load(path))
    ours = [np.asarray(y) for y in jax.jit(fn)(params, *feeds)]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
