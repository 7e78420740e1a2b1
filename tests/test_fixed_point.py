"""The fixed-point arithmetic of quantized kernels against exact Python-integer references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxfuse.lowering import fixed_point as fp

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def ref_high(x: int, m: int, shift: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul of x << max(shift, 0) (Python ints: exact)."""
    a = x * (1 << max(shift, 0))
    if a == m == INT32_MIN:
        return INT32_MAX
    product = a * m
    nudge = (1 << 30) if product >= 0 else 1 - (1 << 30)
    v = product + nudge
    return v // (1 << 31) if v >= 0 else -((-v) // (1 << 31))  # C division truncates


def ref_vector(x: int, m: int, shift: int) -> int:
    right = max(-shift, 0)
    return (ref_high(x, m, shift) + ((1 << right) >> 1)) >> right  # >> floors: ties go up


def ref_double(x: int, m: int, shift: int) -> int:
    right = max(-shift, 0)
    high = ref_high(x, m, shift)
    mask = (1 << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if remainder > threshold else 0)


def sample_accumulators(rng, n):
    edge = np.array([0, 1, -1, 2, -2, 3, -3, 127, -128, 2 ** 20 + 1, -(2 ** 20) - 1, 2 ** 24, -(2 ** 24)], np.int64)
    wide = rng.integers(-(2 ** 26), 2 ** 26, size=n, dtype=np.int64)
    small = rng.integers(-5000, 5000, size=n, dtype=np.int64)
    return np.concatenate([edge, wide, small]).astype(np.int32)


@pytest.mark.parametrize("real", [0.5, 1.0, 0.25, 0.75, 1 / 3, 2.5e-3, 7.9e-8, 1.7, 12.0])
def test_quantize_multiplier_reconstructs_the_real_multiplier(real):
    m, shift = fp.quantize_multiplier(real)
    assert 2 ** 30 <= int(m) < 2 ** 31
    assert abs(int(m) * 2.0 ** (int(shift) - 31) - real) <= real * 2.0 ** -30


def test_quantize_multiplier_special_cases():
    assert [int(v) for v in fp.quantize_multiplier(0.5)] == [2 ** 30, 0]
    assert [int(v) for v in fp.quantize_multiplier(1.0)] == [2 ** 30, 1]
    assert [int(v) for v in fp.quantize_multiplier(0.0)] == [0, 0]
    assert [int(v) for v in fp.quantize_multiplier(2.0 ** -40)] == [0, 0]          # below 2^-31: zero
    # a significand that rounds up to 2^31 is halved and the exponent grows
    m, shift = fp.quantize_multiplier(np.nextafter(1.0, 0.0))
    assert (int(m), int(shift)) == (2 ** 30, 1)
    assert [int(v) for v in fp.quantize_multiplier(2.0 ** 40)] == [2 ** 31 - 1, 30]  # saturated shift
    m, shift = fp.quantize_multiplier(np.array([0.5, 0.25]))
    assert m.tolist() == [2 ** 30, 2 ** 30] and shift.tolist() == [0, -1]
    with pytest.raises(ValueError, match="non-negative"):
        fp.quantize_multiplier(-0.5)


def test_round_half_away_from_zero():
    assert fp.round_half_away([0.5, 1.5, 2.5, -0.5, -2.5, 0.49]).tolist() == [1, 2, 3, -1, -3, 0]


@pytest.mark.parametrize("rounding,reference", [("vector", ref_vector), ("double", ref_double)])
@pytest.mark.parametrize("real", [0.5, 0.0123, 3.1e-5, 0.9999, 1.5, 7.25])
def test_multiply_by_quantized_multiplier_matches_the_integer_reference(rng, rounding, reference, real):
    m, shift = fp.quantize_multiplier(real)
    xs = sample_accumulators(rng, 2000)
    if real > 1:  # the kernels keep x * (1 << left_shift) within int32
        xs = (xs // 8).astype(np.int32)
    got = np.asarray(jax.jit(lambda x: fp.multiply_by_quantized_multiplier(x, m, shift, rounding))(xs))
    assert got.dtype == np.int32
    want = [reference(int(x), int(m), int(shift)) for x in xs]
    np.testing.assert_array_equal(got, np.array(want))


def test_roundings_differ_only_on_ties():
    # 6 * 0.25 = 1.5 -> 2 both ways; -1.5: "vector" gives -1 (ties toward +inf), "double"
    # -2 (its final RoundingDivideByPOT rounds ties away from zero); -7 * 0.25 = -1.75: both
    # round twice (-3.5 -> -3 first), and "vector" ends at -1
    m, shift = fp.quantize_multiplier(0.25)
    xs = np.array([6, -6, 10, -10, 7, -7], np.int32)
    assert np.asarray(fp.multiply_by_quantized_multiplier(xs, m, shift, "vector")).tolist() == [2, -1, 3, -2, 2, -1]
    assert np.asarray(fp.multiply_by_quantized_multiplier(xs, m, shift, "double")).tolist() == [2, -2, 3, -3, 2, -2]
    with pytest.raises(ValueError, match="rounding must be one of"):
        fp.multiply_by_quantized_multiplier(xs, m, shift, "single")


@pytest.mark.parametrize("flat", [False, True])
def test_vector_blocks_then_scalar_rest(flat):
    m, shift = fp.quantize_multiplier(0.25)
    xs = np.full((2, 19), -6, np.int32)  # every value a negative tie
    got = np.asarray(fp.multiply_in_vector_blocks(xs, m, shift, 8, flat=flat))
    if flat:  # 38 values: 32 in blocks (-1), 6 left (-2)
        assert got.reshape(-1).tolist() == [-1] * 32 + [-2] * 6
    else:  # per row of 19: 16 in blocks, 3 left
        assert got.tolist() == [[-1] * 16 + [-2] * 3] * 2


def test_per_channel_multipliers_broadcast_over_the_last_axis(rng):
    reals = np.array([0.01, 0.2, 0.75])
    m, shift = fp.quantize_multiplier(reals)
    xs = rng.integers(-100000, 100000, size=(4, 3)).astype(np.int32)
    got = np.asarray(fp.multiply_by_quantized_multiplier(xs, m, shift))
    want = [[ref_double(int(x), int(m[c]), int(shift[c])) for c, x in enumerate(row)] for row in xs]
    np.testing.assert_array_equal(got, want)


def test_wide_multiplier_for_int64_accumulators(rng):
    m, shift = fp.quantize_multiplier(0.00037)
    xs = rng.integers(-(2 ** 40), 2 ** 40, size=500, dtype=np.int64)
    with fp.x64():
        got = np.asarray(jax.jit(lambda x: fp.multiply_by_quantized_multiplier_wide(x, m, shift))(xs))
    reduced = (int(m) + (1 << 15)) >> 16
    total = 15 - int(shift)
    want = [(int(x) * reduced + (1 << (total - 1))) >> total for x in xs]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bound", [1000.0, 2.0 ** 30])  # the float32 path and the float64 path
def test_exact_integer_product_of_a_convolution(rng, bound):
    x = rng.integers(-255, 256, size=(1, 9, 9, 64)).astype(np.int32)
    w = rng.integers(-127, 128, size=(8, 3, 3, 64)).astype(np.int32)

    def conv(a, b):
        return lax.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "OHWI", "NHWC"),
                                        precision=lax.Precision.HIGHEST)
    exact = np.asarray(lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "OHWI", "NHWC")))
    true_bound = 255.0 * np.abs(w).reshape(8, -1).sum(axis=1).max()
    with fp.x64():
        got = np.asarray(jax.jit(lambda a, b: fp.exact_integer_product(conv, a, b, max(bound, true_bound)))(x, w))
    np.testing.assert_array_equal(got, exact)


def test_x64_stays_local():
    with fp.x64():
        assert jnp.asarray(np.int64(2) ** 40).dtype == jnp.int64
    assert jnp.asarray(np.int64(5)).dtype == jnp.int32  # the global flag is untouched


def test_saturate_clamps_into_the_type_and_a_range():
    got = fp.saturate(jnp.asarray([-1000, -5, 0, 5, 1000], jnp.int32), np.int8, low=-3)
    assert np.asarray(got).tolist() == [-3, -3, 0, 5, 127] and np.asarray(got).dtype == np.int8
