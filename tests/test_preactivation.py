"""fuse_preactivation_batchnorm on generated residual blocks: every shape of the problem
the pass claims to handle, each refusal, and numerics against LiteRT and onert."""
import numpy as np
import pytest

from jaxfuse.builder import ModelBuilder
from jaxfuse.passes import optimize
from reference import relative_error, requires_onert, run_litert, run_onert

PASS = "fuse_preactivation_batchnorm"
C = 4


def conv(b, x, cout, k=1, stride=1, padding=0, act=0, rng=None, name=None):
    cin = x.shape[-1]
    w = b.const("w", (rng.standard_normal((cout, k, k, cin)) * 0.5).astype(np.float32))
    bias = b.const("bias", (rng.standard_normal(cout) * 0.1).astype(np.float32))
    return b.op("CONV_2D", [x, w, bias], {"padding": padding, "strideH": stride, "strideW": stride,
                                          "fusedActivationFunction": act}, name=name)


def batchnorm(b, x, gamma, beta, act=1, shape=None):
    shape = shape or (len(gamma),)
    g = b.const("bn_gamma", np.asarray(gamma, np.float32).reshape(shape))
    t = b.const("bn_beta", np.asarray(beta, np.float32).reshape(shape))
    m = b.op("MUL", [x, g])
    return b.op("ADD", [m, t], {"fusedActivationFunction": act}, name="bn_out")


def residual_block_model(gamma, beta, *, seed=0, consumer_kernel=3, shortcut="identity", act=1, tail=False,
                         stem="conv", const_shape=None, shared_bias=False, graph_output_y=False,
                         pool_before_consumer=False):
    """x -> conv_p -> ADD(conv_s(x)) -> BN(gamma, beta, act) -> conv_a(k) -> conv_q -> ADD(shortcut)."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    inp = b.input("input", [1, 8, 8, 3])
    if stem == "pad_maxpool":
        c0 = conv(b, inp, C, k=3, rng=rng)
        padded = b.op("PAD", [c0, b.const("pads", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32))])
        x = b.op("MAX_POOL_2D", [padded], {"filterHeight": 3, "filterWidth": 3, "strideH": 1, "strideW": 1,
                                           "padding": 1})
    else:
        c = conv(b, inp, C, rng=rng, name="conv_p")
        s = conv(b, inp, C, rng=rng, name="conv_s")
        if shared_bias:  # the converter deduplicates equal constants: one bias tensor read by two convs
            s_op = b.graph.ops[-1]
            s_op.inputs[2] = b.graph.ops[-2].inputs[2]
        x = b.op("ADD", [c, s], name="residual")
    y = batchnorm(b, x, gamma, beta, act, const_shape)
    stride = 2 if shortcut == "maxpool" else 1
    if pool_before_consumer:
        y = b.op("MAX_POOL_2D", [y], {"filterHeight": 3, "filterWidth": 3, "padding": 0})
    a = conv(b, y, C, k=consumer_kernel, stride=stride, act=1, rng=rng, name="conv_a")
    q = conv(b, a, C, rng=rng, name="conv_q")
    if shortcut == "identity":
        out = b.op("ADD", [q, x], name="residual2")
    elif shortcut == "maxpool":
        pooled = b.op("MAX_POOL_2D", [x], {"filterHeight": 1, "filterWidth": 1, "strideH": 2, "strideW": 2})
        out = b.op("ADD", [q, pooled], name="residual2")
    else:
        out = q
    if tail:  # post-activation BN -> ReLU -> global average -> dense, as keras ResNet V2 ends
        z = batchnorm(b, out, np.linspace(0.5, 1.5, C), np.linspace(-0.5, 0.5, C))
        mean = b.op("MEAN", [z, b.const("axes", np.array([1, 2], np.int32))])
        w = b.const("fc_w", rng.standard_normal((5, C)).astype(np.float32))
        out = b.op("FULLY_CONNECTED", [mean, w, None])
    b.output(out)
    if graph_output_y:
        b.output(y)
    return b.build()


def op_types(model):
    return [op.type for op in model.main.ops]


def assert_same_outputs(original, optimized, save_model, tol=1e-5, onert=False):
    x = [np.random.default_rng(7).standard_normal(tuple(t.shape)).astype(np.float32) for t in original.main.inputs]
    a = run_litert(save_model(original, "a.tflite"), x)
    b = run_litert(save_model(optimized, "b.tflite"), x)
    for ra, rb in zip(a, b):
        assert relative_error(rb, ra) <= tol
    if onert:
        oa = run_onert(save_model(original, "a.circle"), x)
        ob = run_onert(save_model(optimized, "b.circle"), x)
        for ra, rb in zip(oa, ob):
            assert relative_error(rb, ra) <= tol


GAMMA = np.array([1.5, 0.7, 1.1, 0.9])
BETA = np.array([0.3, -0.4, 0.2, 0.5])


@pytest.mark.parametrize("shortcut", ["identity", "maxpool", "none"])
@pytest.mark.parametrize("const_shape", [None, (1, 1, 1, C)])
def test_positive_gammas_fold_completely(save_model, shortcut, const_shape):
    model = residual_block_model(GAMMA, BETA, shortcut=shortcut, const_shape=const_shape)
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 1
    types = op_types(optimized)
    assert types.count("MUL") == 0 and types.count("RELU") == 1
    assert len(types) == len(op_types(model)) - 1
    assert report.verification.ok and report.max_rewrite_error <= 1e-5
    assert_same_outputs(model, optimized, save_model)


@requires_onert
def test_positive_gammas_match_onert(save_model):
    model = residual_block_model(GAMMA, BETA, tail=True)
    optimized, _ = optimize(model)
    assert "MUL" not in op_types(optimized)
    assert_same_outputs(model, optimized, save_model, onert=True)


def test_negative_gammas_keep_one_sign_mul(save_model):
    gamma = GAMMA * np.array([1, -1, 1, -1])
    model = residual_block_model(gamma, BETA)
    optimized, report = optimize(model, [PASS])
    types = op_types(optimized)
    assert report.passes[PASS].fused == 1
    assert len(types) == len(op_types(model)) - 1
    sign_mul = next(op for op in optimized.main.ops if op.type == "MUL")
    assert sorted(np.unique(sign_mul.inputs[1].data)) == [-1.0, 1.0]
    assert sign_mul.options["fusedActivationFunction"] == 1
    assert_same_outputs(model, optimized, save_model)


def test_zero_gamma_folds_into_unpadded_consumer(save_model):
    gamma = np.array([1.5, 0.0, 1.1, 0.0])
    beta = np.array([0.3, 0.8, 0.2, -0.5])  # relu(0.8) > 0 becomes a bias, relu(-0.5) == 0 vanishes
    model = residual_block_model(gamma, beta, consumer_kernel=1)
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 1 and "MUL" not in op_types(optimized)
    assert_same_outputs(model, optimized, save_model)


def test_zero_gamma_with_padded_consumer_is_refused():
    gamma = np.array([1.5, 0.0, 1.1, 0.9])
    beta = np.array([0.3, 0.8, 0.2, 0.5])
    model = residual_block_model(gamma, beta, consumer_kernel=3)
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 0
    reasons = " ".join(report.passes[PASS].refused)
    assert "zero gamma" in reasons and "padding" in reasons
    assert op_types(optimized) == op_types(model)


def test_zero_gamma_whose_constant_is_zero_folds_even_with_padding(save_model):
    gamma = np.array([1.5, 0.0, 1.1, 0.9])
    beta = np.array([0.3, -0.8, 0.2, 0.5])  # relu(-0.8) == 0: the channel is zero everywhere
    model = residual_block_model(gamma, beta, consumer_kernel=3)
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 1
    assert_same_outputs(model, optimized, save_model)


def test_tiny_gamma_rolls_back_the_shift_and_keeps_the_add(save_model):
    gamma = np.array([1.5, 1e-6, 1.1, 0.9])
    beta = np.array([0.3, 2.0, 0.2, 0.5])   # b/g = 2e6 would swamp the residual stream
    model = residual_block_model(gamma, beta)
    optimized, report = optimize(model, [PASS])
    pr = report.passes[PASS]
    assert pr.fused == 1
    assert len(pr.rolled_back) == 1 and "check failed" in pr.rolled_back[0]["error"]
    types = op_types(optimized)
    assert "MUL" not in types and types.count("ADD") == op_types(model).count("ADD")
    assert report.rewrites[0]["mode"] == "scale only"
    assert_same_outputs(model, optimized, save_model)


def test_shift_never_crosses_a_zero_pad(save_model):
    model = residual_block_model(GAMMA, BETA, stem="pad_maxpool", shortcut="none")
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 1
    assert report.rewrites[0]["mode"] == "scale only"
    types = op_types(optimized)
    assert "MUL" not in types and "PAD" in types
    assert_same_outputs(model, optimized, save_model)


def test_negative_gammas_behind_a_pad_are_refused():
    model = residual_block_model(GAMMA * np.array([1, -1, 1, 1]), BETA, stem="pad_maxpool", shortcut="none")
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 0
    reasons = " ".join(report.passes[PASS].refused)
    # the reason names the real blocker: the zero PAD in front of the max pool
    assert "negative gammas" in reasons and "PAD 'pad_1' pads with zeros" in reasons
    assert op_types(optimized) == op_types(model)


def test_mean_fully_connected_tail_takes_the_scale(save_model):
    model = residual_block_model(GAMMA, BETA, tail=True)
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 2
    assert "MUL" not in op_types(optimized)
    assert_same_outputs(model, optimized, save_model)


def test_unabsorbable_reader_keeps_the_scale_but_moves_the_shift(save_model):
    model = residual_block_model(GAMMA, BETA, graph_output_y=True)
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 1
    mul = [op for op in optimized.main.ops if op.type == "MUL"]
    assert len(mul) == 1 and np.allclose(mul[0].inputs[1].data, GAMMA.astype(np.float32))
    assert [t.name for t in optimized.main.outputs] == [t.name for t in model.main.outputs]
    assert_same_outputs(model, optimized, save_model)


def test_shared_bias_is_cloned_not_edited(save_model):
    model = residual_block_model(GAMMA, BETA, shared_bias=True)
    conv_s = next(op for op in model.main.ops if op.outputs[0].name == "conv_s")
    before = conv_s.inputs[2].data.copy()
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 1
    conv_s2 = next(op for op in optimized.main.ops if op.outputs[0].name == "conv_s")
    conv_p2 = next(op for op in optimized.main.ops if op.outputs[0].name.startswith("conv_p"))
    np.testing.assert_array_equal(conv_s2.inputs[2].data, before)
    assert conv_p2.inputs[2] is not conv_s2.inputs[2]
    assert_same_outputs(model, optimized, save_model)


def test_shifted_tensors_get_new_names():
    model = residual_block_model(GAMMA, BETA)
    optimized, _ = optimize(model, [PASS])
    names = {t.name for t in optimized.main.tensors}
    assert "residual" not in names and any(n.startswith("residual/jaxfuse_shifted") for n in names)
    assert "residual2" in names  # the compensated sum holds what it held before


def test_original_model_is_not_modified():
    model = residual_block_model(GAMMA, BETA)
    types, weights = op_types(model), [t.data.copy() for t in model.main.tensors if t.is_constant]
    optimize(model)
    assert op_types(model) == types
    assert all(np.array_equal(a, t.data) for a, t in zip(weights, [t for t in model.main.tensors if t.is_constant]))


def test_fold_is_idempotent():
    model = residual_block_model(GAMMA, BETA, tail=True)
    once, _ = optimize(model)
    twice, report = optimize(once)
    assert op_types(twice) == op_types(once)
    assert sum(p.fused for p in report.passes.values()) == 0


def test_linear_batchnorm_folds_its_sign_into_the_consumer(save_model):
    gamma = GAMMA * np.array([1, -1, 1, -1])
    model = residual_block_model(gamma, BETA, act=0)
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 1 and not report.passes[PASS].rolled_back
    assert len(op_types(optimized)) == len(op_types(model)) - 2  # no ReLU to keep: both ops go
    assert_same_outputs(model, optimized, save_model)


def test_negative_scale_never_goes_through_a_max_pool(save_model):
    gamma = GAMMA * np.array([1, -1, 1, -1])
    model = residual_block_model(gamma, BETA, act=0, pool_before_consumer=True)
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 1 and not report.passes[PASS].rolled_back
    sign = next(op for op in optimized.main.ops if op.type == "MUL")
    assert sorted(np.unique(sign.inputs[1].data)) == [-1.0, 1.0]
    assert_same_outputs(model, optimized, save_model)
