"""fuse_preactivation_batchnorm's shift moving backward through max pools, average pools
and -inf / lowest-float pads (the stems of litert-torch, onnx2tf and TF-Slim models), its
other readers compensated; and the pass's forms (shift only, scale only, ReLU as MUL by 1)."""
import numpy as np
import pytest

from jaxfuse.builder import ModelBuilder
from jaxfuse.ir import Op, OpCode, Tensor
from jaxfuse.schema import BUILTIN_CODES, TENSOR_TYPES
from jaxfuse.passes import optimize
from jaxfuse.passes.fuse_preactivation_batchnorm import FusePreactivationBatchnorm, Form
from reference import requires_onert
from test_preactivation import BETA, GAMMA, C, assert_same_outputs, batchnorm, conv, op_types, residual_block_model

PASS = "fuse_preactivation_batchnorm"
MIXED = GAMMA * np.array([1, -1, 1, -1])
LOWEST = float(np.finfo(np.float32).min)


def stem_model(stem: str, gamma=MIXED, shortcut=False, seed=0):
    """conv -> <stem> -> x -> BN -> conv_a -> conv_q (-> ADD(x) with shortcut), where <stem> is
    one of: "padv2_-inf", "padv2_lowest", "padv2_zero" (PADV2 then a VALID 3x3/2 max pool),
    "same_maxpool" (TF-Slim), "avgpool_same", "avgpool_valid", "pad_zero" (PAD then max pool)."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    c0 = conv(b, b.input("input", [1, 9, 9, 3]), C, k=3, rng=rng, name="stem_conv")
    pads = b.const("pads", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32))
    pool = {"filterHeight": 3, "filterWidth": 3, "strideH": 2, "strideW": 2, "padding": 1}
    if stem.startswith("padv2"):
        value = {"padv2_-inf": -np.inf, "padv2_lowest": LOWEST, "padv2_zero": 0.0}[stem]
        padded = b.op("PADV2", [c0, pads, b.const("pad_value", np.array(value, np.float32))], name="stem_pad")
        x = b.op("MAX_POOL_2D", [padded], pool, name="stem_pool")
    elif stem == "pad_zero":
        x = b.op("MAX_POOL_2D", [b.op("PAD", [c0, pads], name="stem_pad")], pool, name="stem_pool")
    elif stem == "same_maxpool":
        x = b.op("MAX_POOL_2D", [c0], {**pool, "padding": 0}, name="stem_pool")
    else:
        x = b.op("AVERAGE_POOL_2D", [c0], {**pool, "padding": 0 if stem == "avgpool_same" else 1}, name="stem_pool")
    y = batchnorm(b, x, gamma, BETA)
    q = conv(b, conv(b, y, C, k=3, act=1, rng=rng, name="conv_a"), C, rng=rng, name="conv_q")
    b.output(b.op("ADD", [q, x], name="residual") if shortcut else q)
    return b.build()


@pytest.mark.parametrize("stem", ["padv2_-inf", "padv2_lowest", "same_maxpool", "avgpool_same", "avgpool_valid"])
@pytest.mark.parametrize("shortcut", [False, True])
def test_shift_moves_back_through_pools_and_lowest_pads(save_model, stem, shortcut):
    """Negative gammas need the shift moved backward: it reaches the stem conv's bias through
    the pool (and pad); with a shortcut, conv_q's bias gives it back before the residual ADD."""
    model = stem_model(stem, shortcut=shortcut)
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 1, report.passes[PASS].refused
    rewrite = report.rewrites[0]
    assert rewrite["shift_backward"] and rewrite["mode"] == "full"
    types = op_types(optimized)
    assert types.count("ADD") == int(shortcut) and types.count("MUL") == 1  # the +-1 sign MUL with the ReLU
    assert report.verification.ok
    assert_same_outputs(model, optimized, save_model)


@requires_onert
@pytest.mark.parametrize("stem", ["padv2_lowest", "same_maxpool", "avgpool_same"])
def test_shifted_pools_agree_in_onert(save_model, stem):
    """onert too averages only a window's real cells and lets no pad value win a max."""
    model = stem_model(stem, shortcut=True)
    optimized, _ = optimize(model, [PASS])
    assert op_types(optimized).count("ADD") == 1
    assert_same_outputs(model, optimized, save_model, onert=True)


@pytest.mark.parametrize("stem,blocker", [("pad_zero", "PAD 'stem_pad' pads with zeros"),
                                          ("padv2_zero", "PADV2 'stem_pad' pads with a constant that is not -inf")])
def test_zero_padding_stops_the_shift_and_is_named(stem, blocker):
    model = stem_model(stem)
    optimized, report = optimize(model, [PASS])
    assert report.passes[PASS].fused == 0
    reasons = " ".join(report.passes[PASS].refused)
    assert blocker in reasons
    assert op_types(optimized) == op_types(model)


def test_a_lowest_pad_read_by_something_else_stops_the_shift():
    """A REDUCE_MAX of the padded tensor would see -inf + d... it reads -inf either way, but
    the pass accepts only max pools after the pad, and says which op stops it."""
    model = stem_model("padv2_-inf")
    g = model.main
    axes = Tensor("axes", (2,), TENSOR_TYPES["INT32"]).set_data(np.array([1, 2], np.int32))
    out = Tensor("pad_mean", (1, C), TENSOR_TYPES["FLOAT32"])
    g.tensors += [axes, out]
    g.ops.append(Op(OpCode(BUILTIN_CODES["MEAN"]), [g.tensor("stem_pad"), axes], [out], "ReducerOptions",
                    {"keepDims": False}))
    g.outputs.append(out)
    optimized, report = optimize(model.validate(), [PASS])
    assert report.passes[PASS].fused == 0
    assert "PADV2 'stem_pad'" in " ".join(report.passes[PASS].refused)


def pipeline_with(form):
    return [FusePreactivationBatchnorm(form), "fuse_activation_function"]


def test_shift_only_form_keeps_the_scale_as_a_mul_with_the_relu(save_model):
    model = residual_block_model(MIXED, BETA)
    optimized, report = optimize(model, pipeline_with(Form("shift")))
    assert report.rewrites[0]["mode"] == "shift only" and not report.rewrites[0]["scale_forward"]
    types = op_types(optimized)
    assert types.count("MUL") == 1 and types.count("ADD") == op_types(model).count("ADD") - 1  # the BN's ADD
    mul = next(op for op in optimized.main.ops if op.type == "MUL")
    assert mul.options["fusedActivationFunction"] == 1
    np.testing.assert_array_equal(next(t for t in mul.inputs if t.is_constant).data, MIXED.astype(np.float32))
    # the consumer's weights are untouched
    conv_a = lambda m: next(op for op in m.main.ops if op.outputs[0].name.startswith("conv_a"))  # noqa: E731
    np.testing.assert_array_equal(conv_a(optimized).inputs[1].data, conv_a(model).inputs[1].data)
    assert_same_outputs(model, optimized, save_model)


def test_shift_only_form_folds_zero_gammas_into_the_consumers(save_model):
    gamma = GAMMA * np.array([1, 0, -1, 1])
    model = residual_block_model(gamma, BETA, consumer_kernel=1)  # 1x1 consumer: no padding to see the constant
    optimized, report = optimize(model, pipeline_with(Form("shift")))
    assert report.passes[PASS].fused == 1
    assert_same_outputs(model, optimized, save_model)


def test_scale_only_form_keeps_the_shift_as_an_add(save_model):
    model = residual_block_model(GAMMA, BETA)
    optimized, report = optimize(model, pipeline_with(Form("scale")))
    assert report.rewrites[0]["mode"] == "scale only" and not report.rewrites[0]["shift_backward"]
    assert "MUL" not in op_types(optimized)
    assert_same_outputs(model, optimized, save_model)


@pytest.mark.parametrize("relu", ["op", "mul"])
def test_a_relu_left_alone_is_a_relu_op_or_a_mul_by_one(save_model, relu):
    """The residual stream feeds the BN and the shortcut, so the ReLU cannot fuse into the ADD."""
    model = residual_block_model(GAMMA, BETA)
    optimized, _ = optimize(model, pipeline_with(Form("full", relu)))
    types = op_types(optimized)
    if relu == "op":
        assert types.count("RELU") == 1 and "MUL" not in types
    else:
        mul = next(op for op in optimized.main.ops if op.type == "MUL")
        assert "RELU" not in types and mul.options["fusedActivationFunction"] == 1
        assert next(t for t in mul.inputs if t.is_constant).data.tolist() == [1.0]
    assert_same_outputs(model, optimized, save_model)


def test_a_relu_that_can_fuse_is_not_written_as_a_mul():
    model = residual_block_model(GAMMA, BETA, shortcut="none")  # x is read by the BN alone
    optimized, _ = optimize(model, pipeline_with(Form("full", "mul")))
    assert "MUL" not in op_types(optimized) and "RELU" not in op_types(optimized)
    residual = next(op for op in optimized.main.ops if op.type == "ADD")
    assert residual.options["fusedActivationFunction"] == 1


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="unknown form"):
        Form("half")
