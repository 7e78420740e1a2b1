"""fold_norm_affine: LayerNorm / RMSNorm affines folded into the linear layers that read them,
on the converter-made ViT fixtures and on hand-built norms (each consumer kind, each refusal),
with numerics against LiteRT (and onert where it runs the model)."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfuse
from jaxfuse import fold
from jaxfuse.builder import ModelBuilder
from jaxfuse.numerics import random_inputs
from jaxfuse.passes import optimize
from reference import relative_error, requires_onert, run_litert, run_onert_or_skip

PASS = "fold_norm_affine"
MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"
C = 8
GAMMA = np.array([1.3, -0.7, 0.0, 0.9, -1.2, 0.5, 0.0, 1.1])  # either sign, some zero
BETA = np.array([0.3, -0.4, 0.8, 0.1, -0.6, 0.2, -0.9, 0.5])


def op_types(model):
    return [op.type for op in model.main.ops]


def refusals(report) -> list[str]:
    return list(report.passes[PASS].refused)


def assert_litert_matches(original, optimized, save_model, tol=1e-5):
    for seed in (0, 1):
        x = random_inputs(original.main, 1, seed)[0]
        ref = run_litert(save_model(original, "a.tflite"), x)
        got = run_litert(save_model(optimized, "b.tflite"), x)
        for a, b in zip(ref, got):
            assert relative_error(b, a) <= tol


def layer_norm_tf(b, x, gamma=GAMMA, beta=BETA):
    """keras LayerNormalization as the TF 2.21 converter writes it (11 ops)."""
    shape = (1,) * (len(x.shape) - 1) + (x.shape[-1],)
    axis = b.const("axis", np.array([-1], np.int32))
    mu = b.op("MEAN", [x, axis], {"keepDims": True})
    neg = b.op("NEG", [mu])
    var = b.op("MEAN", [b.op("SQUARED_DIFFERENCE", [x, mu]), axis], {"keepDims": True})
    r = b.op("RSQRT", [b.op("ADD", [var, b.const("eps", np.array(1e-3, np.float32))])])
    m = r if gamma is None else b.op("MUL", [r, b.const("gamma", np.asarray(gamma, np.float32).reshape(shape))])
    shift = b.op("MUL", [neg, m])
    if beta is not None:
        shift = b.op("ADD", [shift, b.const("beta", np.asarray(beta, np.float32).reshape(shape))])
    return b.op("ADD", [b.op("MUL", [x, m]), shift], name="norm_out")


def rms_norm(b, x, gamma=GAMMA):
    """keras RMSNormalization's final norm as the converter leaves it: x * rsqrt(mean(x^2) + eps) * gamma."""
    axis = b.const("axis", np.array([-1], np.int32))
    var = b.op("MEAN", [b.op("SQUARE", [x]), axis], {"keepDims": True})
    r = b.op("RSQRT", [b.op("ADD", [var, b.const("eps", np.array(1e-6, np.float32))])])
    return b.op("MUL", [b.op("MUL", [x, r]), b.const("gamma", np.asarray(gamma, np.float32))], name="norm_out")


def fc(b, x, out, rng, keep=True, bias=True):
    w = b.const("fc_w", rng.standard_normal((out, x.shape[-1])).astype(np.float32))
    bb = b.const("fc_b", rng.standard_normal(out).astype(np.float32)) if bias else None
    return b.op("FULLY_CONNECTED", [x, w, bb], {"keepNumDims": keep})


def norm_model(consumers, norm=layer_norm_tf, shape=(1, 6, C), seed=0, extra_output=False):
    """input -> ADD(position table) -> norm -> each of `consumers`(b, y, rng) -> outputs."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.input("x", list(shape))
    x = b.op("ADD", [x, b.const("pos", rng.standard_normal(shape).astype(np.float32))])
    y = norm(b, x)
    for consumer in consumers:
        b.output(consumer(b, y, rng))
    if extra_output:
        b.output(y)
    return b.build()


def check_folded(model, save_model, ops_removed):
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 1, report.format_text()
    assert len(op_types(optimized)) == len(op_types(model)) - ops_removed
    assert report.verification.ok
    assert_litert_matches(model, optimized, save_model)
    return optimized, report


# -- the fold rule ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,shape,adjoint", [("FULLY_CONNECTED", (5, C), False), ("CONV_2D", (5, 1, 1, C), False),
                                                ("BATCH_MATMUL", (C, 5), False), ("BATCH_MATMUL", (5, C), True)])
def test_fold_input_affine_equals_the_affine_then_the_op(kind, shape, adjoint):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(shape)
    bias = rng.standard_normal(5)
    x = rng.standard_normal((3, C))

    def apply(weights, x):
        if kind == "BATCH_MATMUL":
            return x @ (weights.T if adjoint else weights)
        return x @ weights.reshape(5, C).T

    new_w, new_b = fold.fold_input_affine(kind, w, bias, GAMMA, BETA, adjoint=adjoint)
    np.testing.assert_allclose(apply(new_w, x) + new_b, apply(w, x * GAMMA + BETA) + bias, rtol=1e-12, atol=1e-12)
    # the same rule on JAX arrays, differentiable in gamma
    grad = jax.grad(lambda g: fold.fold_input_affine(kind, jnp.asarray(w), None, g, None, adjoint=adjoint)[0].sum())
    assert np.all(np.isfinite(np.asarray(grad(jnp.asarray(GAMMA)))))


# -- the converter-made fixtures ----------------------------------------------------------------


FIXTURES = {  # stem: (norms, norms folded, ops before, ops after)
    "vit_tiny_mixed_logits": (5, 5, 102, 82),
    "vit_rms_tiny_mixed_logits": (1, 1, 73, 72),       # the converter folded the block norms' gammas itself
    "vit_postln_tiny_mixed_logits": (4, 1, 91, 81),    # 3 affines stay: the residual reads them
    "vit_cls_tiny_mixed_logits": (5, 5, 150, 130),     # class token, dynamic batch (Tensordot reshapes)
    # litert-torch and onnx2tf (examples/make_torch_models.py): timm's ViT and a LLaMA-style decoder
    "vit_tiny_timm_litert_mixed": (5, 5, 135, 125),
    "vit_tiny_timm_onnx2tf_mixed": (5, 5, 104, 89),
    "decoder_rms_tiny_litert_mixed": (5, 5, 102, 97),
    # onnx2tf reads the [1, 8, 32] input as NCW: the first norm's statistics run over axis 1
    # and a TRANSPOSE brings the channels last before its projection (its gamma folds too)
    "decoder_rms_tiny_onnx2tf_mixed": (5, 5, 92, 87),
}


@pytest.mark.parametrize("stem", sorted(FIXTURES))
def test_vit_fixtures(stem, save_model):
    norms, folded, before, after = FIXTURES[stem]
    model = jaxfuse.load(MODELS / f"{stem}.tflite")
    optimized, report = optimize(model, [PASS])
    assert (report.ops_before, report.ops_after) == (before, after)
    assert [r["folded"] for r in report.rewrites].count(True) == folded
    assert report.passes[PASS].fused == norms
    kept = refusals(report)
    assert len(kept) == norms - folded
    assert all("residual ADD" in reason for reason in kept)
    h0, h1 = model.op_histogram(), optimized.op_histogram()
    assert (h1["FULLY_CONNECTED"], h1["BATCH_MATMUL"]) == (h0["FULLY_CONNECTED"], h0["BATCH_MATMUL"])
    assert h1.get("NEG", 0) == 0 and h1.get("SQUARED_DIFFERENCE", 0) == h0.get("SQUARED_DIFFERENCE", 0)
    assert report.verification.ok
    assert_litert_matches(model, optimized, save_model)


def test_dynamic_batch_vit_folds_and_runs_at_another_batch(save_model):
    """The class-token ViT with a dynamic batch: folded, it still runs at batch 3 on LiteRT."""
    from ai_edge_litert.interpreter import Interpreter
    model = jaxfuse.load(MODELS / "vit_cls_tiny_mixed_logits.tflite")
    assert model.main.inputs[0].shape_signature[0] == -1
    optimized, _ = optimize(model, [PASS])
    x = np.random.default_rng(0).standard_normal((3, 16, 16, 3)).astype(np.float32)
    outputs = []
    for path in (save_model(model, "a.tflite"), save_model(optimized, "b.tflite")):
        interpreter = Interpreter(model_path=str(path))
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    assert outputs[0].shape == (3, 10)
    assert relative_error(outputs[1], outputs[0]) <= 1e-5


@requires_onert
@pytest.mark.parametrize("stem", ["vit_tiny_mixed_logits", "vit_tiny_timm_onnx2tf_mixed"])
def test_vit_fixture_matches_onert(save_model, stem):
    model = jaxfuse.load(MODELS / f"{stem}.tflite")
    optimized, _ = optimize(model, [PASS])
    x = random_inputs(model.main, 1, 0)[0]
    ref = run_onert_or_skip(save_model(model, "a.circle"), x, stem)
    got = run_onert_or_skip(save_model(optimized, "b.circle"), x, f"folded {stem}")
    for a, b in zip(ref, got):
        assert relative_error(b, a) <= 1e-5


# -- each consumer kind ---------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [True, False])
def test_layer_norm_folds_into_fully_connected(save_model, keep):
    model = norm_model([lambda b, y, rng: fc(b, y, 5, rng, keep=keep), lambda b, y, rng: fc(b, y, 3, rng, bias=False)])
    optimized, _ = check_folded(model, save_model, 4)
    assert {"NEG", "SQUARED_DIFFERENCE", "SUB"} & set(op_types(optimized)) == {"SQUARED_DIFFERENCE", "SUB"}


@pytest.mark.parametrize("gamma,beta,removed", [(None, BETA, 3), (GAMMA, None, 3), (None, None, 2)],
                         ids=["no_gamma", "no_beta", "neither"])
def test_layer_norm_without_gamma_or_beta(save_model, gamma, beta, removed):
    """keras LayerNormalization(scale=False / center=False / both) as the converter writes it."""
    model = norm_model([lambda b, y, rng: fc(b, y, 5, rng), residual],
                       norm=lambda b, x: layer_norm_tf(b, x, gamma, beta))
    if gamma is None and beta is None:  # nothing to fold: only the cheaper normalization
        optimized, report = optimize(model, [PASS])
        assert report.passes[PASS].fused == 1 and not refusals(report)
        assert len(op_types(optimized)) == len(op_types(model)) - removed
        assert_litert_matches(model, optimized, save_model)
        return
    model = norm_model([lambda b, y, rng: fc(b, y, 5, rng)], norm=lambda b, x: layer_norm_tf(b, x, gamma, beta))
    check_folded(model, save_model, removed)


def test_layer_norm_folds_through_token_mean_into_the_head(save_model):
    def head(b, y, rng):
        pooled = b.op("MEAN", [y, b.const("tokens", np.array(1, np.int32))])
        return fc(b, pooled, 4, rng, keep=False)
    check_folded(norm_model([head]), save_model, 4)


def test_rms_norm_scale_folds_through_the_mean_pool(save_model):
    def head(b, y, rng):
        pooled = b.op("MEAN", [y, b.const("tokens", np.array(1, np.int32))])
        return fc(b, pooled, 4, rng, keep=False)
    optimized, _ = check_folded(norm_model([head], norm=rms_norm), save_model, 1)
    assert op_types(optimized).count("MUL") == 1  # x * rsqrt only


def test_layer_norm_folds_into_batch_matmul_with_its_bias_add(save_model):
    def matmul(adjoint):
        def consumer(b, y, rng):
            rhs = rng.standard_normal((5, C) if adjoint else (C, 5)).astype(np.float32)
            out = b.op("BATCH_MATMUL", [y, b.const("rhs", rhs)], {"adjointRhs": adjoint})
            return b.op("ADD", [out, b.const("mm_bias", rng.standard_normal(5).astype(np.float32))])
        return consumer
    check_folded(norm_model([matmul(False), matmul(True)]), save_model, 4)


def test_layer_norm_folds_into_1x1_conv(save_model):
    def conv(b, y, rng):
        w = b.const("w", rng.standard_normal((5, 1, 1, C)).astype(np.float32))
        return b.op("CONV_2D", [y, w, b.const("cb", np.zeros(5, np.float32))], {"padding": 0})
    check_folded(norm_model([conv], shape=(1, 3, 3, C)), save_model, 4)


# -- the other converters' forms ------------------------------------------------------------------


def _affine(b, n, gamma=GAMMA, beta=BETA):
    """n * gamma + beta as litert-torch and the TF converter write a norm's affine: [C] constants."""
    y = b.op("MUL", [n, b.const("gamma", np.asarray(gamma, np.float32))])
    return y if beta is None else b.op("ADD", [y, b.const("beta", np.asarray(beta, np.float32))], name="norm_out")


def layer_norm_litert(b, x):
    """nn.LayerNorm as litert-torch 0.10 writes it: statistics without keep_dims (over the
    batch axis too) reshaped back, n = x * r + (-mean * r), then MUL(gamma), ADD(beta)."""
    t = x.shape[1]
    axes = b.const("axes", np.array([0, 2], np.int32))
    back = b.const("back", np.array([1, t, 1], np.int32))
    mu = b.op("MEAN", [x, axes])
    var = b.op("MEAN", [b.op("SQUARED_DIFFERENCE", [x, b.op("RESHAPE", [mu, back])]), axes])
    r = b.op("RSQRT", [b.op("ADD", [var, b.const("eps", np.array(1e-5, np.float32))])])
    shift = b.op("SUB", [b.const("zero", np.array(0.0, np.float32)), b.op("MUL", [r, mu])])
    n = b.op("ADD", [b.op("MUL", [x, b.op("RESHAPE", [r, back])]), b.op("RESHAPE", [shift, back])])
    return _affine(b, n)


def layer_norm_batchnorm_form(b, x):
    """LayerNormalization as tf.nn.batch_normalization writes it (onnx2tf, tf_keras):
    m = rsqrt(var + eps) * gamma, y = x * m + (beta - mean * m)."""
    axis = b.const("axis", np.array([-1], np.int32))
    mu = b.op("MEAN", [x, axis], {"keepDims": True})
    var = b.op("MEAN", [b.op("SQUARED_DIFFERENCE", [x, mu]), axis], {"keepDims": True})
    r = b.op("RSQRT", [b.op("ADD", [var, b.const("eps", np.array(1e-3, np.float32))])])
    m = b.op("MUL", [r, b.const("gamma", GAMMA.astype(np.float32))])
    shift = b.op("SUB", [b.const("beta", BETA.astype(np.float32)), b.op("MUL", [mu, m])])
    return b.op("ADD", [b.op("MUL", [x, m]), shift], name="norm_out")


def rms_norm_sqrt_reciprocal(b, x):
    """RMSNorm as onnx2tf writes torch's: x * (1 / SQRT(MEAN(x * x) + eps)) * gamma."""
    axis = b.const("axis", np.array([-1], np.int32))
    var = b.op("MEAN", [b.op("MUL", [x, x]), axis], {"keepDims": True})
    root = b.op("SQRT", [b.op("ADD", [var, b.const("eps", np.array(1e-6, np.float32))])])
    return _affine(b, b.op("MUL", [x, b.op("DIV", [b.const("one", np.array(1.0, np.float32)), root])]), beta=None)


def rms_scaling_norm(b, x):
    """keras LayerNormalization(rms_scaling=True): x * rsqrt(variance + eps) * gamma (the
    variance is centered, x is not)."""
    axis = b.const("axis", np.array([-1], np.int32))
    mu = b.op("MEAN", [x, axis], {"keepDims": True})
    var = b.op("MEAN", [b.op("SQUARED_DIFFERENCE", [x, mu]), axis], {"keepDims": True})
    r = b.op("RSQRT", [b.op("ADD", [var, b.const("eps", np.array(1e-3, np.float32))])])
    return _affine(b, b.op("MUL", [x, r]), beta=None)


def rms_norm_without_epsilon(b, x):
    """A float16 model whose epsilon (1e-12) rounded to 0 and whose ADD of it was removed."""
    axis = b.const("axis", np.array([-1], np.int32))
    r = b.op("RSQRT", [b.op("MEAN", [b.op("SQUARE", [x]), axis], {"keepDims": True})])
    return _affine(b, b.op("MUL", [x, r]))


@pytest.mark.parametrize("norm,kind,removed", [
    (layer_norm_litert, "LayerNorm", 2), (layer_norm_batchnorm_form, "LayerNorm", 3),
    (rms_norm_sqrt_reciprocal, "RMSNorm", 1), (rms_scaling_norm, "LayerNorm", 1),
    (rms_norm_without_epsilon, "RMSNorm", 2)],
    ids=["litert_torch_layer_norm", "batchnorm_form", "sqrt_reciprocal", "rms_scaling", "no_epsilon"])
def test_converter_forms_fold(norm, kind, removed, save_model):
    model = norm_model([lambda b, y, rng: fc(b, y, 5, rng), lambda b, y, rng: fc(b, y, 3, rng, bias=False)], norm=norm)
    _, report = check_folded(model, save_model, removed)
    assert [r["norm"] for r in report.rewrites] == [kind]


def channels_first_model(transpose: bool):
    """onnx2tf's form for a [1, C, T] input read as NCW: RMSNorm over axis 1, gamma [1, C, 1],
    then (transpose=True) a TRANSPOSE bringing the channels last before the projection."""
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.input("x", [1, C, 6])
    var = b.op("MEAN", [b.op("MUL", [x, x]), b.const("axis", np.array([1], np.int32))], {"keepDims": True})
    root = b.op("SQRT", [b.op("ADD", [var, b.const("eps", np.array(1e-6, np.float32))])])
    n = b.op("MUL", [x, b.op("DIV", [b.const("one", np.array(1.0, np.float32)), root])])
    y = b.op("MUL", [n, b.const("gamma", GAMMA.astype(np.float32).reshape(1, C, 1))])
    if transpose:
        y = b.op("TRANSPOSE", [y, b.const("perm", np.array([0, 2, 1], np.int32))])
    b.output(fc(b, y, 5, rng))
    return b.build()


def test_channels_first_affine_folds_through_the_transpose_that_brings_channels_last(save_model):
    check_folded(channels_first_model(transpose=True), save_model, 1)


def test_channels_first_affine_read_along_another_axis_stays():
    model = channels_first_model(transpose=False)  # the FULLY_CONNECTED contracts T, not the channels
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 0 and op_types(optimized) == op_types(model)


# -- what the affine passes through --------------------------------------------------------------


def class_token(b, y, rng):
    """y[:, 0] -> the head (a class-token ViT)."""
    token = b.op("STRIDED_SLICE", [y, b.const("begin", np.array([0, 0, 0], np.int32)),
                                   b.const("end", np.array([1, 1, C], np.int32)),
                                   b.const("strides", np.array([1, 1, 1], np.int32))],
                 {"beginMask": 6, "endMask": 6, "shrinkAxisMask": 2})
    return fc(b, token, 4, rng, keep=False)


def gathered_rows(b, y, rng):
    return fc(b, b.op("GATHER", [y, b.const("rows", np.array([0, 5, 2], np.int32))], {"axis": 1}), 4, rng)


def transposed_tokens(b, y, rng):
    swapped = b.op("TRANSPOSE", [b.op("RESHAPE", [y, b.const("s4", np.array([1, 2, 3, C], np.int32))]),
                                 b.const("perm", np.array([0, 2, 1, 3], np.int32))])
    return fc(b, swapped, 4, rng)


def run_time_reshape(b, y, rng):
    """keras Dense on a dynamic batch (Tensordot): RESHAPE(y, a shape computed from SHAPE(y))."""
    shape = b.op("SHAPE", [y], {"outType": 2}, dtype=np.int32)
    rows = b.op("REDUCE_PROD", [b.op("GATHER", [shape, b.const("lead", np.array([0, 1], np.int32))]),
                                b.const("ax0", np.array([0], np.int32))], dtype=np.int32)
    flat = b.op("PACK", [rows, b.const("width", np.array(C, np.int32))], {"valuesCount": 2, "axis": 0},
                dtype=np.int32)
    return fc(b, b.op("RESHAPE", [y, flat], output_shape=[6, C]), 4, rng)


@pytest.mark.parametrize("consumer", [class_token, gathered_rows, transposed_tokens, run_time_reshape],
                         ids=["class_token", "gather", "transpose", "run_time_reshape"])
def test_affine_passes_through_ops_that_move_whole_rows(consumer, save_model):
    check_folded(norm_model([consumer]), save_model, 4)


def test_a_per_channel_chain_behind_no_norm_folds_silently(save_model):
    """x * s + t -> FULLY_CONNECTED folds like a norm's affine; a chain that cannot fold and
    stands behind no norm is not reported."""
    def model_with(consumer):
        rng = np.random.default_rng(0)
        b = ModelBuilder()
        x = b.input("x", [1, 6, C])
        y = _affine(b, b.op("RELU", [x]))
        b.output(consumer(b, y, rng))
        return b.build()
    model = model_with(lambda b, y, rng: fc(b, y, 5, rng))
    _, report = check_folded(model, save_model, 2)
    assert report.rewrites[0]["norm"] == "per-channel affine"
    _, report = optimize(model_with(lambda b, y, rng: b.op("TANH", [y])), [PASS])
    assert report.passes[PASS].fused == 0 and not refusals(report)


# -- each refusal ---------------------------------------------------------------------------------


def residual(b, y, rng):
    return b.op("ADD", [y, b.op("RELU", [fc(b, y, C, rng)])])


def test_post_norm_residual_keeps_the_affine_as_one_mul_and_one_add(save_model):
    model = norm_model([residual])
    optimized, report = optimize(model, [PASS])
    assert any("residual ADD" in r and "post-norm" in r for r in refusals(report))
    assert len(op_types(optimized)) == len(op_types(model)) - 2   # 11 ops -> 9, the affine kept
    assert "NEG" not in op_types(optimized)
    assert report.verification.ok
    assert_litert_matches(model, optimized, save_model)


def test_kept_post_norm_affines_are_not_reported_as_batch_norms():
    """With every pass, the MUL -> ADD a post-LN keeps is reported once, as the norm's affine
    (the batch-norm pass leaves a norm's own affine without ReLU alone)."""
    model = jaxfuse.load(MODELS / "vit_postln_tiny_mixed_logits.tflite")
    _, report = optimize(model)
    assert not report.passes["fuse_preactivation_batchnorm"].refused
    assert len(refusals(report)) == 3 and report.verification.ok


@pytest.mark.parametrize("consumer,reason", [
    (lambda b, y, rng: b.op("FULLY_CONNECTED", [y, b.op("RELU", [b.const("act_w", np.ones((C, C), np.float32))])],
                            {"keepNumDims": True}), "weights are not a float constant"),
    (lambda b, y, rng: b.op("CONV_2D", [y, b.const("w3", rng.standard_normal((4, 3, 3, C)).astype(np.float32)),
                                        None], {"padding": 0}), "sees padding"),
    (lambda b, y, rng: b.op("BATCH_MATMUL", [y, b.const("rhs", np.ones((C, 4), np.float32))]), "no bias"),
    (lambda b, y, rng: b.op("BATCH_MATMUL", [b.const("lhs", np.ones((1, 3, 4, 3), np.float32)), y]),
     "left-hand side"),
    (lambda b, y, rng: b.op("MEAN", [y, b.const("ch", np.array([3], np.int32))]), "reduces over the channel axis"),
    (lambda b, y, rng: b.op("RESHAPE", [y, b.const("shp", np.array([1, 3, 3 * C], np.int32))]),
     "moves the channel axis"),
    (lambda b, y, rng: b.op("TANH", [y]), "cannot absorb"),
    (lambda b, y, rng: b.op("STRIDED_SLICE", [y, b.const("b0", np.zeros(4, np.int32)),
                                              b.const("e0", np.array([1, 3, 3, C], np.int32)),
                                              b.const("s0", np.array([1, 1, 1, 2], np.int32))]), "channel"),
    (lambda b, y, rng: b.op("GATHER", [y, b.const("ch", np.array([0, 2, 1, 3, 4, 5, 6, 7], np.int32))],
                            {"axis": 3}), "gathers channels"),
    (lambda b, y, rng: b.op("TRANSPOSE", [y, b.const("perm", np.array([0, 1, 3, 2], np.int32))]),
     "moves the channel axis"),
], ids=["fc_activation_weights", "conv_padding", "bmm_no_bias", "bmm_rhs", "mean_channels", "reshape_channels",
        "other_op", "strided_channels", "gather_channels", "transpose_channels"])
def test_refusals(consumer, reason):
    model = norm_model([consumer], shape=(1, 3, 3, C))
    optimized, report = optimize(model, [PASS])
    assert any(reason in r for r in refusals(report)), refusals(report)
    assert not any(r["folded"] for r in report.rewrites)


def test_graph_output_refused():
    model = norm_model([lambda b, y, rng: fc(b, y, 5, rng)], extra_output=True)
    _, report = optimize(model, [PASS])
    assert any("is a graph output" in r for r in refusals(report))


def test_intermediate_read_elsewhere_refused():
    def norm(b, x):
        y = layer_norm_tf(b, x)
        b.output(b.graph.ops[-2].outputs[0])  # MUL(x, gamma * rsqrt) is also a graph output
        return y
    model = norm_model([lambda b, y, rng: fc(b, y, 5, rng)], norm=norm)
    optimized, report = optimize(model, [PASS])
    assert any("read outside the norm" in r for r in refusals(report))
    assert len(op_types(optimized)) == len(op_types(model))


def test_scale_that_is_not_per_channel_refused():
    def layer_norm_full_gamma(b, x):
        axis = b.const("axis", np.array([-1], np.int32))
        mu = b.op("MEAN", [x, axis], {"keepDims": True})
        neg = b.op("NEG", [mu])
        var = b.op("MEAN", [b.op("SQUARED_DIFFERENCE", [x, mu]), axis], {"keepDims": True})
        r = b.op("RSQRT", [b.op("ADD", [var, b.const("eps", np.array(1e-3, np.float32))])])
        m = b.op("MUL", [r, b.const("gamma", np.linspace(0.5, 1.5, 6 * C).astype(np.float32).reshape(1, 6, C))])
        shift = b.op("ADD", [b.op("MUL", [neg, m]), b.const("beta", BETA.astype(np.float32))])
        return b.op("ADD", [b.op("MUL", [x, m]), shift])
    model = norm_model([lambda b, y, rng: fc(b, y, 5, rng)], norm=layer_norm_full_gamma)
    optimized, report = optimize(model, [PASS])
    assert any("not per-channel" in r for r in refusals(report))
    assert len(op_types(optimized)) == len(op_types(model))


# -- the int8 target ---------------------------------------------------------------------------------


def test_keeping_the_affine_is_the_cheapest_normalization_plus_one_mul_and_add(save_model):
    from jaxfuse.passes.fold_norm_affine import FoldNormAffine
    model = norm_model([lambda b, y, rng: fc(b, y, 5, rng)])
    optimized, report = optimize(model, [FoldNormAffine(fold_affine=False)])
    assert any("affine is kept" in r for r in refusals(report))
    assert len(op_types(optimized)) == len(op_types(model)) - 2
    assert_litert_matches(model, optimized, save_model)


def test_for_int8_measures_the_norm_fold():
    pytest.importorskip("ai_edge_quantizer")
    from jaxfuse.quantized_target import choose, optimize_for_quantization

    def head(b, y, rng):
        return fc(b, b.op("MEAN", [fc(b, y, C, rng), b.const("tokens", np.array(1, np.int32))]), 4, rng, keep=False)
    model = norm_model([head])
    samples = random_inputs(model.main, 8, 3)
    optimized, report, selection = optimize_for_quantization(model, samples, samples, max_loss=0.3)
    by_name = {c.name: c for c in selection.candidates}
    assert set(by_name) == {"norms", "norms-kept", "none"}  # no batch norm: its candidates are not measured
    assert by_name["none"].norms_rewritten == 0 and by_name["norms"].norms_rewritten == 1
    assert by_name["norms"].ops == by_name["none"].ops - 4 and by_name["norms-kept"].ops == by_name["none"].ops - 2
    assert selection.chosen == choose(selection.candidates, 0.3)[0]
    assert sum(optimized.op_histogram().values()) == by_name[selection.chosen].ops
    assert all(np.isfinite(c.sqnr_db) for c in selection.candidates)
