"""The pure rules of jaxfuse/fold.py against direct evaluation.

The references below are plain NumPy float64 implementations of the four weighted ops
(VALID padding, TFLite layouts); one test pins them to jaxfuse's lowering (itself checked
against LiteRT elsewhere), so a layout mistake shared by a rule and a reference would show.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from jaxfuse import fold
from jaxfuse.builder import ModelBuilder
from jaxfuse.lowering import lower

KINDS = ["CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED"]
C_IN, MULT, C_OUT, STRIDE = 3, 2, 4, 2


# ----------------------------------------------------------------------------------------
# float64 references (VALID padding)
# ----------------------------------------------------------------------------------------
def conv_ref(x, w, b):
    """x [N,H,W,I], w [O,KH,KW,I] -> [N,H-KH+1,W-KW+1,O]."""
    win = sliding_window_view(x, w.shape[1:3], axis=(1, 2))            # [N,H',W',I,KH,KW]
    return np.einsum("nhwikl,okli->nhwo", win, w) + b


def dwconv_ref(x, w, b):
    """x [N,H,W,C], w [1,KH,KW,C*M]: output channel c*M+m = input channel c with filter c*M+m."""
    kh, kw, cm = w.shape[1:]
    c = x.shape[3]
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))               # [N,H',W',C,KH,KW]
    y = np.einsum("nhwckl,klcm->nhwcm", win, w[0].reshape(kh, kw, c, cm // c))
    return y.reshape(*y.shape[:3], cm) + b


def tconv_ref(x, w, b, stride=STRIDE):
    """Scatter form: out[n, h*s+k, w*s+l, o] += x[n,h,w,i] * w[o,k,l,i] (full VALID output)."""
    n, h, wd, _ = x.shape
    o, kh, kw, _ = w.shape
    out = np.zeros((n, (h - 1) * stride + kh, (wd - 1) * stride + kw, o))
    for k in range(kh):
        for l in range(kw):
            out[:, k:k + (h - 1) * stride + 1:stride, l:l + (wd - 1) * stride + 1:stride, :] += \
                np.einsum("nhwi,oi->nhwo", x, w[:, k, l, :])
    return out + b


def fc_ref(x, w, b):
    return x.reshape(-1, w.shape[1]) @ w.T + b


REF = {"CONV_2D": conv_ref, "DEPTHWISE_CONV_2D": dwconv_ref, "TRANSPOSE_CONV": tconv_ref, "FULLY_CONNECTED": fc_ref}
X_SHAPE = (2, 5, 6, C_IN)


def weights_shape(kind):
    return {"CONV_2D": (C_OUT, 3, 2, C_IN), "DEPTHWISE_CONV_2D": (1, 3, 2, C_IN * MULT),
            "TRANSPOSE_CONV": (C_OUT, 3, 2, C_IN), "FULLY_CONNECTED": (C_OUT, int(np.prod(X_SHAPE[1:])))}[kind]


def out_channels(kind):
    return C_IN * MULT if kind == "DEPTHWISE_CONV_2D" else C_OUT


def setup(kind, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(X_SHAPE)
    w = rng.standard_normal(weights_shape(kind))
    b = rng.standard_normal(out_channels(kind))
    return rng, x, w, b


def close(a, b, rtol=1e-12):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= rtol * max(np.max(np.abs(b)), 1.0), np.max(np.abs(a - b))


@pytest.mark.parametrize("kind", KINDS)
def test_references_match_the_jaxfuse_lowering(kind):
    _, x, w, b = setup(kind)
    mb = ModelBuilder()
    xt = mb.input("x", X_SHAPE)
    wt, bt = mb.const("w", w.astype(np.float32)), mb.const("b", b.astype(np.float32))
    if kind == "TRANSPOSE_CONV":
        ref = tconv_ref(x, w, b)
        shape = mb.const("shape", np.array(ref.shape, np.int32))
        y = mb.op(kind, [shape, wt, xt, bt], {"padding": 1, "strideH": STRIDE, "strideW": STRIDE})
    else:
        ref = REF[kind](x, w, b)
        opts = {} if kind == "FULLY_CONNECTED" else {"padding": 1}
        if kind == "DEPTHWISE_CONV_2D":
            opts["depthMultiplier"] = MULT
        y = mb.op(kind, [xt, wt, bt], opts)
    mb.output(y)
    fn, params = lower(mb.build())
    (got,) = jax.jit(fn)(params, x.astype(np.float32))
    close(got, ref, rtol=1e-5)


# ----------------------------------------------------------------------------------------
# fold_output_affine: op(x) * s + t == op'(x)
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_bias,with_scale,with_shift",
                         [p for p in itertools.product([True, False], repeat=3) if p[1] or p[2]])
@pytest.mark.parametrize("kind", KINDS)
def test_fold_output_affine(kind, with_bias, with_scale, with_shift):
    rng, x, w, b = setup(kind)
    c = out_channels(kind)
    s = rng.uniform(-2, 2, c) if with_scale else None
    t = rng.standard_normal(c) if with_shift else None
    bias = b if with_bias else None
    w2, b2 = fold.fold_output_affine(kind, w, bias, s, t)
    assert w2.shape == w.shape and b2.shape == (c,) and w2.dtype == b2.dtype == np.float64
    expected = REF[kind](x, w, b if with_bias else 0.0)
    if with_scale:
        expected = expected * s
    if with_shift:
        expected = expected + t
    close(REF[kind](x, w2, b2), expected)
    if not with_scale:
        np.testing.assert_array_equal(w2, w)
    # the inputs are not modified
    np.testing.assert_array_equal(w, setup(kind)[2])


def test_fold_output_affine_scales_depthwise_channel_c_times_m_plus_m():
    w = np.ones((1, 1, 1, C_IN * MULT))
    s = np.arange(1.0, C_IN * MULT + 1)
    w2, _ = fold.fold_output_affine("DEPTHWISE_CONV_2D", w, None, s, None)
    np.testing.assert_array_equal(w2.reshape(-1), s)


# ----------------------------------------------------------------------------------------
# scale_input_channels: op(x * s) == op'(x)
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_scale_input_channels(kind):
    rng, x, w, b = setup(kind)
    s = rng.uniform(-2, 2, C_IN)
    w2 = fold.scale_input_channels(kind, w, s, X_SHAPE)
    assert w2.shape == w.shape
    close(REF[kind](x, w2, b), REF[kind](x * s, w, b))


@pytest.mark.parametrize("mult", [1, 2, 3])
def test_scale_input_channels_depthwise_multipliers(mult):
    rng = np.random.default_rng(mult)
    x = rng.standard_normal((1, 4, 4, C_IN))
    w = rng.standard_normal((1, 2, 2, C_IN * mult))
    s = rng.uniform(-2, 2, C_IN)
    close(dwconv_ref(x, fold.scale_input_channels("DEPTHWISE_CONV_2D", w, s), 0.0), dwconv_ref(x * s, w, 0.0))


def test_scale_input_channels_fc_on_a_2d_input():
    rng = np.random.default_rng(1)
    x, w, s = rng.standard_normal((3, 7)), rng.standard_normal((5, 7)), rng.uniform(-2, 2, 7)
    close(fc_ref(x, fold.scale_input_channels("FULLY_CONNECTED", w, s), 0.0), fc_ref(x * s, w, 0.0))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("exact_scale", [True, False])
def test_scale_input_channels_float32_is_the_float64_product_rounded_once(kind, exact_scale):
    """Bit for bit what rounding the float64 product gives, for float32 scales (the float32
    product) and for scales float32 cannot hold, across magnitudes: subnormal results,
    overflow to infinity, zeros and signs."""
    rng = np.random.default_rng(7)
    shape = {"CONV_2D": (6, 3, 3, 8), "DEPTHWISE_CONV_2D": (1, 3, 3, 16), "TRANSPOSE_CONV": (6, 3, 3, 8),
             "FULLY_CONNECTED": (6, 8)}[kind]
    weights = (rng.standard_normal(shape) * 10.0 ** rng.integers(-40, 39, shape)).astype(np.float32)
    weights.flat[:4] = [0.0, -0.0, 3e38, 1e-45]
    scale = rng.standard_normal(8) * 10.0 ** rng.integers(-6, 6, 8)
    scale[:3] = [0.0, -1e6, 2.5e-7]
    scale = scale.astype(np.float32).astype(np.float64)  # float32 values (|gamma| of a float32 model)
    if not exact_scale:
        scale = scale * (1 + 2.0 ** -26)  # more significant bits than float32 has
        assert not np.array_equal(scale.astype(np.float32), scale)
    with np.errstate(over="ignore"):
        expected = fold.scale_input_channels(kind, weights.astype(np.float64), scale).astype(np.float32)
        got = fold.scale_input_channels_float32(kind, weights, scale)
    assert got.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert np.isinf(got).any() and (np.abs(got[(got != 0) & np.isfinite(got)]) < 1.2e-38).any()


# ----------------------------------------------------------------------------------------
# input_shift_to_bias: op(x + d) == op(x) with b' (no padding)
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("kind", ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"])
def test_input_shift_to_bias(kind, with_bias):
    rng, x, w, b = setup(kind)
    d = rng.standard_normal(C_IN)
    bias = b if with_bias else None
    b2 = fold.input_shift_to_bias(kind, w, bias, d)
    assert b2.shape == (out_channels(kind),)
    close(REF[kind](x, w, b2), REF[kind](x + d, w, b if with_bias else 0.0))


def test_input_shift_to_bias_fc_on_a_2d_input():
    rng = np.random.default_rng(2)
    x, w, b, d = rng.standard_normal((3, 7)), rng.standard_normal((5, 7)), rng.standard_normal(5), \
        rng.standard_normal(7)
    close(fc_ref(x, w, fold.input_shift_to_bias("FULLY_CONNECTED", w, b, d)), fc_ref(x + d, w, b))


# ----------------------------------------------------------------------------------------
# preactivation_split: act(g*x + b) == k * act(m*(x + d) + a)  (+ act(b) where `constant`)
# ----------------------------------------------------------------------------------------
GAMMA = np.array([1.5, 0.3, -0.7, -2.5, 0.0, 0.0, 1e-7, -1e-7, 4.0, -1.0, 0.0, 2.0])
BETA = np.array([0.4, -1.2, 0.8, -0.3, 0.9, -0.6, 0.5, -0.25, 0.0, 2.0, 0.0, -3.0])
KEEP = np.array([False, True, False, True, False, False, False, True, False, False, True, False])
CONSTANT = (GAMMA == 0) & np.array([False] * 4 + [True, True] + [False] * 6)   # zero gammas only
X_GRID = np.concatenate([np.linspace(-6, 6, 241), [-1e3, -0.0, 1e-9, 1e3]])[:, None]
MASKS = {"none": (None, None), "keep": (KEEP, None), "constant": (None, CONSTANT), "both": (KEEP, CONSTANT)}


def relu(v):
    return np.maximum(v, 0.0)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("shift_backward,scale_forward,through_relu", list(itertools.product([True, False], repeat=3)))
def test_preactivation_split_identity(shift_backward, scale_forward, through_relu, mask):
    keep, constant = MASKS[mask]
    k, d, m, a = fold.preactivation_split(GAMMA, BETA, shift_backward=shift_backward, scale_forward=scale_forward,
                                          through_relu=through_relu, keep=keep, constant=constant)
    act = relu if through_relu else (lambda v: v)
    lhs = act(GAMMA * X_GRID + BETA)
    rhs = k * act(m * (X_GRID + d) + a)
    if constant is not None:
        rhs = rhs + np.where(constant, act(BETA), 0.0)  # the caller's share: act(beta) into consumer biases
    np.testing.assert_allclose(rhs, lhs, rtol=1e-12, atol=1e-12)

    keep_mask = np.zeros_like(GAMMA, bool) if keep is None else keep
    const_mask = np.zeros_like(GAMMA, bool) if constant is None else constant
    folded = (GAMMA != 0) & ~keep_mask & ~const_mask
    if scale_forward and through_relu:
        assert np.all(np.abs(m[folded]) == 1.0) and np.all(np.sign(m[folded]) == np.sign(GAMMA[folded]))
        assert np.all(k[folded] == np.abs(GAMMA[folded]))
    elif scale_forward:
        assert np.all(m[folded] == 1.0) and np.all(k[folded] == GAMMA[folded])
    else:
        assert np.all(k[~const_mask] == 1.0) and np.all(m[~const_mask] == GAMMA[~const_mask])
    if through_relu:
        assert np.all(k >= 0)
    if shift_backward:
        assert np.all(a[folded] == 0.0)
        np.testing.assert_allclose(d[folded], BETA[folded] / GAMMA[folded], rtol=1e-15)
    else:
        assert np.all(d == 0.0)
    # channels that are not folded keep the op exactly as it was
    untouched = ~folded & ~const_mask
    assert np.all(k[untouched] == 1) and np.all(d[untouched] == 0)
    assert np.all(m[untouched] == GAMMA[untouched]) and np.all(a[untouched] == BETA[untouched])
    if constant is not None:
        assert np.all(k[constant] == 0) and np.all(m[constant] == 1) and np.all(a[constant] == 0)
        assert np.all(d[constant] == 0)


@pytest.mark.parametrize("seed", range(5))
def test_preactivation_split_random(seed):
    rng = np.random.default_rng(seed)
    n = 64
    gamma = rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 2, n)
    gamma[rng.random(n) < 0.15] = 0.0
    beta = rng.standard_normal(n) * 3
    keep = rng.random(n) < 0.2
    x = np.linspace(-10, 10, 81)[:, None]
    for shift_backward, scale_forward in itertools.product([True, False], repeat=2):
        k, d, m, a = fold.preactivation_split(gamma, beta, shift_backward=shift_backward,
                                              scale_forward=scale_forward, through_relu=True, keep=keep)
        lhs, rhs = relu(gamma * x + beta), k * relu(m * (x + d) + a)
        # float64: |k*(x+d)| loses at most ~1e-16 of |b| for any gamma, tiny ones included
        np.testing.assert_allclose(rhs, lhs, rtol=1e-12, atol=1e-12 * (1 + np.abs(beta).max()))


# ----------------------------------------------------------------------------------------
# JAX: the rules jit, vmap and differentiate
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_fold_output_affine_jits_and_matches_numpy(kind):
    rng, _, w, b = setup(kind)
    c = out_channels(kind)
    s, t = rng.uniform(-2, 2, c), rng.standard_normal(c)
    jitted = jax.jit(lambda *args: fold.fold_output_affine(kind, *args))
    w2, b2 = jitted(*(jnp.asarray(v, jnp.float32) for v in (w, b, s, t)))
    assert isinstance(w2, jax.Array)
    w_np, b_np = fold.fold_output_affine(kind, w, b, s, t)
    np.testing.assert_allclose(w2, w_np, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b2, b_np, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_grad_of_fold_output_affine(kind):
    """d/ds [sum W' + sum b'] = (sum of W over everything but the output axis) + b; d/dt = 1."""
    rng, _, w, b = setup(kind)
    c = out_channels(kind)
    s, t = rng.uniform(-2, 2, c), rng.standard_normal(c)
    w32, b32 = jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)

    def loss(s, t):
        w2, b2 = fold.fold_output_affine(kind, w32, b32, s, t)
        return w2.sum() + b2.sum()

    gs, gt = jax.grad(loss, argnums=(0, 1))(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32))
    axis = fold.OUTPUT_AXIS[kind]
    expected = w.sum(axis=tuple(i for i in range(w.ndim) if i != axis)) + b
    np.testing.assert_allclose(gs, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gt, np.ones(c), rtol=0, atol=0)


def test_other_rules_jit_and_vmap():
    rng, _, w, b = setup("DEPTHWISE_CONV_2D")
    s = jnp.asarray(rng.uniform(-2, 2, (4, C_IN)), jnp.float32)            # a batch of 4 scales
    scaled = jax.jit(jax.vmap(lambda v: fold.scale_input_channels("DEPTHWISE_CONV_2D", jnp.asarray(w), v)))(s)
    for i in range(4):
        np.testing.assert_allclose(scaled[i], fold.scale_input_channels("DEPTHWISE_CONV_2D", w, np.asarray(s[i])),
                                   rtol=1e-6)
    d = rng.standard_normal(C_IN)
    shifted = jax.jit(lambda w, b, d: fold.input_shift_to_bias("DEPTHWISE_CONV_2D", w, b, d))(
        jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32), jnp.asarray(d, jnp.float32))
    np.testing.assert_allclose(shifted, fold.input_shift_to_bias("DEPTHWISE_CONV_2D", w, b, d), rtol=1e-5, atol=1e-5)

    split = jax.jit(lambda g, be, keep: fold.preactivation_split(g, be, shift_backward=True, scale_forward=True,
                                                                 through_relu=True, keep=keep))
    got = split(jnp.asarray(GAMMA, jnp.float32), jnp.asarray(BETA, jnp.float32), jnp.asarray(KEEP))
    want = fold.preactivation_split(GAMMA.astype(np.float32), BETA.astype(np.float32), shift_backward=True,
                                    scale_forward=True, through_relu=True, keep=KEEP)
    for g, w_ in zip(got, want):
        np.testing.assert_allclose(g, w_, rtol=1e-6)
    # k = |gamma| where folded: its derivative is sign(gamma) there, 0 on kept / zero channels
    dk = jax.grad(lambda g: fold.preactivation_split(g, jnp.asarray(BETA, jnp.float32), shift_backward=True,
                                                     scale_forward=True, through_relu=True,
                                                     keep=jnp.asarray(KEEP))[0].sum())(jnp.asarray(GAMMA, jnp.float32))
    folded = (GAMMA != 0) & ~KEEP
    np.testing.assert_array_equal(np.asarray(dk), np.where(folded, np.sign(GAMMA), 0.0))
