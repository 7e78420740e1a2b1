"""The post-activation folds (a per-channel MUL/ADD/SUB after CONV_2D, DEPTHWISE_CONV_2D,
TRANSPOSE_CONV, FULLY_CONNECTED) and fuse_activation_function.

Every positive case checks the op list before/after, the report, and the numbers: the
original and the optimized model run in LiteRT on the same random input (and in onert
where it can run the op). Every refusal case checks that the graph is left exactly as it
was and that the report says why.
"""
from __future__ import annotations

import numpy as np
import pytest

import jaxfuse
from jaxfuse.builder import ModelBuilder
from jaxfuse.ir import Quantization
from jaxfuse.passes import PASSES, optimize
from reference import relative_error, requires_onert, run_litert, run_onert

NONE, RELU, RELU_N1_TO_1, RELU6, TANH = 0, 1, 2, 3, 4
ACT_OPS = {RELU: "RELU", RELU6: "RELU6", RELU_N1_TO_1: "RELU_N1_TO_1", TANH: "TANH"}
TOL = 1e-5
X_SHAPE = [1, 6, 6, 3]


def f32(a):
    return np.asarray(a, np.float32)


# ----------------------------------------------------------------------------------------
# model construction
# ----------------------------------------------------------------------------------------
def producer(b: ModelBuilder, kind: str, x, rng, act: int = NONE, name: str = "p"):
    """Append a weighted op of `kind` reading x; returns (output, output channels)."""
    opts = {"fusedActivationFunction": act}
    if kind in ("conv", "conv_nobias"):
        w = b.const("w", f32(rng.standard_normal([4, 3, 3, 3])))
        bias = b.const("bias", f32(rng.standard_normal(4))) if kind == "conv" else None
        return b.op("CONV_2D", [x, w, bias], {"padding": 0, **opts}, name=name), 4
    if kind.startswith("dwconv"):  # dwconv1 / dwconv2: depth multiplier on 3 input channels
        m = int(kind[-1])
        w = b.const("w", f32(rng.standard_normal([1, 3, 3, 3 * m])))
        bias = b.const("bias", f32(rng.standard_normal(3 * m)))
        return b.op("DEPTHWISE_CONV_2D", [x, w, bias], {"padding": 0, "depthMultiplier": m, **opts}, name=name), 3 * m
    if kind in ("tconv", "tconv_nobias"):
        shape = b.const("output_shape", np.array([1, 12, 12, 4], np.int32))
        w = b.const("w", f32(rng.standard_normal([4, 3, 3, 3])))
        bias = b.const("bias", f32(rng.standard_normal(4))) if kind == "tconv" else None
        inputs = [shape, w, x] + ([bias] if bias is not None else [])
        return b.op("TRANSPOSE_CONV", inputs, {"padding": 0, "strideH": 2, "strideW": 2, **opts}, name=name), 4
    if kind in ("fc", "fc_nobias", "fc_keepdims"):
        columns = int(np.prod(x.shape)) // x.shape[0] if kind != "fc_keepdims" else x.shape[-1]
        w = b.const("w", f32(rng.standard_normal([5, columns]) / np.sqrt(columns)))
        bias = b.const("bias", f32(rng.standard_normal(5))) if kind != "fc_nobias" else None
        keep = {"keepNumDims": True} if kind == "fc_keepdims" else {}
        return b.op("FULLY_CONNECTED", [x, w, bias], {**keep, **opts}, name=name), 5
    raise ValueError(kind)


def input_shape(kind: str):
    return [1, 4, 7] if kind == "fc_keepdims" else X_SHAPE


CONST_SHAPES = {"C": lambda c: [c], "1C": lambda c: [1, c], "11C": lambda c: [1, 1, c],
                "111C": lambda c: [1, 1, 1, c], "1": lambda c: [1]}


def chain_const(b, rng, op_type, shape):
    if op_type == "MUL":  # scales of both signs, away from zero
        value = rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    else:
        value = rng.standard_normal(shape)
    return b.const(f"{op_type.lower()}_const", f32(value))


def chain_model(kind: str, chain, seed: int = 0):
    """x -> producer(kind) -> chain ops -> output. chain: (op type, const shape key, const first, act)."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.input("x", input_shape(kind))
    y, channels = producer(b, kind, x, rng)
    for k, (op_type, shape_key, const_first, act) in enumerate(chain):
        c = chain_const(b, rng, op_type, CONST_SHAPES[shape_key](channels))
        y = b.op(op_type, [c, y] if const_first else [y, c], {"fusedActivationFunction": act}, name=f"chain{k}")
    b.output(y)
    return b.build()


PRODUCER_TYPE = {"conv": "CONV_2D", "conv_nobias": "CONV_2D", "dwconv1": "DEPTHWISE_CONV_2D",
                 "dwconv2": "DEPTHWISE_CONV_2D", "tconv": "TRANSPOSE_CONV", "tconv_nobias": "TRANSPOSE_CONV",
                 "fc": "FULLY_CONNECTED", "fc_nobias": "FULLY_CONNECTED", "fc_keepdims": "FULLY_CONNECTED"}


def op_types(model):
    return [op.type for op in model.main.ops]


def graph_signature(model):
    """Everything a refused pass must leave alone: op order, wiring, options, constants."""
    g = model.main
    return [(op.type, sorted(op.options.items()),
             [None if t is None else (t.name, tuple(t.shape), t.data.tobytes() if t.is_constant else None)
              for t in op.inputs],
             [t.name for t in op.outputs]) for op in g.ops], [t.name for t in g.outputs]


def random_inputs(model, seed=1):
    rng = np.random.default_rng(seed)
    return [f32(rng.standard_normal(t.shape)) for t in model.main.inputs]


def assert_litert_equal(original, optimized, tmp_path, reference=None):
    """Both models in LiteRT on one random input; `reference` replaces the original's
    outputs where LiteRT cannot run the original (a CONV_2D without a bias)."""
    xs = random_inputs(original)
    jaxfuse.save(optimized, tmp_path / "optimized.tflite")
    got = run_litert(tmp_path / "optimized.tflite", xs)
    if reference is None:
        jaxfuse.save(original, tmp_path / "original.tflite")
        reference = run_litert(tmp_path / "original.tflite", xs)
    else:
        reference = reference(original, xs)
    assert len(got) == len(reference)
    for a, b in zip(got, reference):
        assert relative_error(a, b) <= TOL, relative_error(a, b)


def assert_refused(model, pass_name, reason):
    optimized, report = optimize(model, passes=[pass_name])
    assert graph_signature(optimized) == graph_signature(model)
    assert report.passes[pass_name].fused == 0
    assert not report.passes[pass_name].rolled_back
    refused = report.passes[pass_name].refused
    assert any(reason in r for r in refused), refused
    return report


# ----------------------------------------------------------------------------------------
# positive cases of the 8 folding passes
# ----------------------------------------------------------------------------------------
M, A, S = "MUL", "ADD", "SUB"
POSITIVE = [
    # (pass, producer kind, chain [(op, const shape, const first, fused act)])
    ("fuse_batchnorm_with_conv", "conv", [(M, "C", False, NONE), (A, "C", False, RELU)]),
    ("fuse_batchnorm_with_conv", "conv", [(M, "111C", True, NONE), (A, "1C", True, RELU6)]),
    ("fuse_batchnorm_with_conv", "conv", [(M, "1C", False, NONE), (S, "111C", False, NONE)]),
    ("fuse_batchnorm_with_conv", "conv_nobias", [(M, "C", False, NONE), (A, "C", False, RELU_N1_TO_1)]),
    ("fuse_batchnorm_with_dwconv", "dwconv1", [(M, "C", False, NONE), (A, "C", False, RELU)]),
    ("fuse_batchnorm_with_dwconv", "dwconv2", [(M, "111C", True, NONE), (A, "111C", False, RELU6)]),
    ("fuse_batchnorm_with_dwconv", "dwconv2", [(M, "C", False, NONE), (S, "1C", False, NONE)]),
    ("fuse_batchnorm_with_tconv", "tconv", [(M, "C", False, NONE), (A, "C", False, RELU)]),
    ("fuse_batchnorm_with_tconv", "tconv_nobias", [(M, "111C", True, NONE), (S, "C", False, NONE)]),
    ("fuse_mul_with_conv", "conv", [(M, "C", False, RELU)]),
    ("fuse_mul_with_conv", "conv", [(M, "111C", True, NONE)]),
    ("fuse_mul_with_conv", "conv", [(M, "1", False, RELU6)]),
    ("fuse_add_with_conv", "conv", [(A, "C", False, RELU)]),
    ("fuse_add_with_conv", "conv", [(A, "1C", True, NONE)]),
    ("fuse_add_with_conv", "conv", [(S, "111C", False, RELU6)]),
    ("fuse_add_with_conv", "conv_nobias", [(A, "C", False, NONE)]),
    ("fuse_add_with_tconv", "tconv", [(A, "C", False, RELU)]),
    ("fuse_add_with_tconv", "tconv_nobias", [(S, "111C", False, NONE)]),
    ("fuse_add_with_tconv", "tconv_nobias", [(A, "1C", True, RELU6)]),
    ("fuse_mul_with_fullyconnected", "fc", [(M, "C", False, RELU)]),
    ("fuse_mul_with_fullyconnected", "fc_nobias", [(M, "1C", True, NONE)]),
    ("fuse_mul_with_fullyconnected", "fc_keepdims", [(M, "11C", False, RELU6)]),
    ("fuse_add_with_fullyconnected", "fc", [(A, "C", False, RELU)]),
    ("fuse_add_with_fullyconnected", "fc_nobias", [(S, "1C", False, NONE)]),
    ("fuse_add_with_fullyconnected", "fc_keepdims", [(A, "11C", True, RELU_N1_TO_1)]),
]


def case_id(case):
    name, kind, chain = case
    ops = "-".join(f"{'c' if first else ''}{op}{shape}{'+a' + str(act) if act else ''}"
                   for op, shape, first, act in chain)
    return f"{name}:{kind}:{ops}"


def jax_reference(original, xs):
    from jaxfuse.lowering import lower
    import jax
    fn, params = lower(original)
    return [np.asarray(y) for y in jax.jit(fn)(params, *xs)]


@pytest.mark.parametrize("case", POSITIVE, ids=[case_id(c) for c in POSITIVE])
def test_fold_positive(case, tmp_path):
    name, kind, chain = case
    model = chain_model(kind, chain)
    optimized, report = optimize(model, passes=[name])

    assert op_types(model) == [PRODUCER_TYPE[kind]] + [op for op, *_ in chain]
    assert op_types(optimized) == [PRODUCER_TYPE[kind]]
    assert report.ops_before == 1 + len(chain) and report.ops_after == 1
    pr = report.passes[name]
    assert pr.fused == 1 and not pr.rolled_back and not pr.refused
    assert report.verification is not None and report.verification.ok
    (p,) = optimized.main.ops
    assert p.options["fusedActivationFunction"] == chain[-1][3]
    assert p.outputs[0].name == model.main.outputs[0].name  # the graph output keeps its name
    bias_index = 3 if p.type == "TRANSPOSE_CONV" else 2
    assert p.inputs[bias_index] is not None and p.inputs[bias_index].is_constant  # created when missing
    if all(op != M for op, *_ in chain):  # a shift alone never touches the weights
        np.testing.assert_array_equal(p.inputs[1].data, model.main.ops[0].inputs[1].data)
    # LiteRT cannot run a CONV_2D without its bias input: the original then runs in JAX
    assert_litert_equal(model, optimized, tmp_path, reference=jax_reference if kind == "conv_nobias" else None)


# onert runs in a child process (about a second per model): one case per producer variant
ONERT_CASES = [POSITIVE[i] for i in (0, 4, 5, 8, 9, 14, 20, 24)]


@requires_onert
@pytest.mark.parametrize("case", ONERT_CASES, ids=[case_id(c) for c in ONERT_CASES])
def test_fold_positive_onert(case, tmp_path):
    name, kind, chain = case
    if kind.startswith("tconv"):
        pytest.skip("onert 0.1.0's cpu backend cannot run TRANSPOSE_CONV")
    model = chain_model(kind, chain)
    optimized, _ = optimize(model, passes=[name])
    jaxfuse.save(model, tmp_path / "original.circle")
    jaxfuse.save(optimized, tmp_path / "optimized.circle")
    xs = random_inputs(model)
    (a,) = run_onert(tmp_path / "original.circle", xs)
    (b,) = run_onert(tmp_path / "optimized.circle", xs)
    if kind == "fc_keepdims":  # onert 0.1.0 drops keepNumDims from a FULLY_CONNECTED output's shape
        b = b.reshape(a.shape)
    assert relative_error(b, a) <= TOL


def test_two_batchnorms_in_a_row_fold_one_after_the_other(tmp_path):
    """conv -> MUL -> ADD -> MUL -> ADD: the pass applies twice and removes all four."""
    chain = [(M, "C", False, NONE), (A, "C", False, NONE), (M, "1C", False, NONE), (A, "C", False, RELU)]
    model = chain_model("conv", chain)
    optimized, report = optimize(model, passes=["fuse_batchnorm_with_conv"])
    assert op_types(optimized) == ["CONV_2D"]
    assert report.passes["fuse_batchnorm_with_conv"].fused == 2
    assert_litert_equal(model, optimized, tmp_path)


# ----------------------------------------------------------------------------------------
# shared parameters (the converter deduplicates identical constants)
# ----------------------------------------------------------------------------------------
def shared_parameter_model(chain_ops):
    """Two convs reading the SAME weight and bias tensors; only the first is followed by `chain_ops`."""
    rng = np.random.default_rng(3)
    b = ModelBuilder()
    x = b.input("x", X_SHAPE)
    w = b.const("w", f32(rng.standard_normal([4, 3, 3, 3])))
    bias = b.const("bias", f32(rng.standard_normal(4)))
    y1 = b.op("CONV_2D", [x, w, bias], {"padding": 0}, name="conv_a")
    y2 = b.op("CONV_2D", [x, w, bias], {"padding": 0}, name="conv_b")
    for op_type in chain_ops:
        y1 = b.op(op_type, [y1, chain_const(b, rng, op_type, [4])], name=f"{op_type.lower()}_a")
    b.output(y1, y2)
    return b.build()


@pytest.mark.parametrize("name,chain_ops", [("fuse_mul_with_conv", [M]), ("fuse_add_with_conv", [A]),
                                            ("fuse_batchnorm_with_conv", [M, A])])
def test_shared_parameters_are_not_edited_in_place(name, chain_ops, tmp_path):
    model = shared_parameter_model(chain_ops)
    w0, b0 = (t.data.copy() for t in model.main.ops[0].inputs[1:3])
    optimized, report = optimize(model, passes=[name])
    assert report.passes[name].fused == 1
    assert op_types(optimized) == ["CONV_2D", "CONV_2D"]
    conv_a, conv_b = sorted(optimized.main.ops, key=lambda op: op.outputs[0].name != optimized.main.outputs[0].name)
    assert conv_b.outputs[0].name == "conv_b"
    np.testing.assert_array_equal(conv_b.inputs[1].data, w0)  # the untouched conv keeps its parameters
    np.testing.assert_array_equal(conv_b.inputs[2].data, b0)
    assert conv_a.inputs[2] is not conv_b.inputs[2]
    if M in chain_ops:
        assert conv_a.inputs[1] is not conv_b.inputs[1]
        assert not np.array_equal(conv_a.inputs[1].data, w0)
    else:  # a shift alone does not copy the (shared) weights
        assert conv_a.inputs[1] is conv_b.inputs[1]
    # the input model itself is not changed
    np.testing.assert_array_equal(model.main.ops[0].inputs[1].data, w0)
    np.testing.assert_array_equal(model.main.ops[1].inputs[2].data, b0)
    assert_litert_equal(model, optimized, tmp_path)


# ----------------------------------------------------------------------------------------
# refusals: the graph stays exactly as it was, the report says why
# ----------------------------------------------------------------------------------------
def model_with(build, seed=0):
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.input("x", X_SHAPE)
    outputs = build(b, x, rng)
    b.output(*outputs)
    return b.build()


def _mul_by(shape, op_type=M, kind="conv"):
    def build(b, x, rng):
        y, _ = producer(b, kind, x, rng)
        return [b.op(op_type, [y, chain_const(b, rng, op_type, shape)])]
    return build


NOT_PER_CHANNEL = [
    ("fuse_mul_with_conv", _mul_by([1, 6, 6, 4])),             # one value per pixel and channel
    ("fuse_mul_with_conv", _mul_by([1, 6, 1, 4])),
    ("fuse_add_with_conv", _mul_by([1, 6, 6, 1], A)),           # per pixel, same for every channel
    ("fuse_mul_with_conv", _mul_by([6, 1, 1, 1])),              # broadcasts the output to [6,6,6,4]
    ("fuse_add_with_conv", _mul_by([1, 1, 1, 1, 4], A)),        # broadcasts the output to rank 5
    ("fuse_mul_with_fullyconnected", _mul_by([1, 1, 1, 5], M, "fc")),  # [1,5] -> [1,1,1,5]
    ("fuse_add_with_fullyconnected", _mul_by([3, 5], A, "fc")),        # [1,5] -> [3,5]
    ("fuse_mul_with_conv", _mul_by([6, 1], M)),                # [6,1] scales along W, not channels
]


@pytest.mark.parametrize("name,build", NOT_PER_CHANNEL, ids=[f"{n}-{i}" for i, (n, _) in enumerate(NOT_PER_CHANNEL)])
def test_refuses_constant_that_is_not_per_channel(name, build):
    assert_refused(model_with(build), name, "is not per-channel")


def test_mul_of_two_activations_is_not_a_candidate():
    def build(b, x, rng):
        y, _ = producer(b, "conv", x, rng)
        z, _ = producer(b, "conv", x, rng, name="q")
        return [b.op(M, [y, z])]
    model = model_with(build)
    optimized, report = optimize(model, passes=["fuse_mul_with_conv"])
    assert graph_signature(optimized) == graph_signature(model)
    assert report.passes["fuse_mul_with_conv"].fused == 0
    assert report.passes["fuse_mul_with_conv"].refused == {}  # not a match at all


def test_batchnorm_with_activation_addend_is_refused():
    def build(b, x, rng):
        y, _ = producer(b, "conv", x, rng)
        y = b.op(M, [y, chain_const(b, rng, M, [4])])
        z, _ = producer(b, "conv", x, rng, name="q")
        return [b.op(A, [y, z])]
    assert_refused(model_with(build), "fuse_batchnorm_with_conv", "the ADD's other operand is not a constant")


def _conv_output_also(where):
    def build(b, x, rng):
        y, _ = producer(b, "conv", x, rng)
        out = b.op(M, [y, chain_const(b, rng, M, [4])])
        if where == "graph output":
            return [out, y]
        return [out, b.op("RELU", [y])]
    return build


@pytest.mark.parametrize("where", ["graph output", "another op"])
def test_refuses_when_conv_output_has_another_reader(where):
    assert_refused(model_with(_conv_output_also(where)), "fuse_mul_with_conv", "the CONV_2D output has another reader")


@pytest.mark.parametrize("where", ["graph output", "another op"])
def test_refuses_when_mul_output_of_a_batchnorm_has_another_reader(where):
    def build(b, x, rng):
        y, _ = producer(b, "conv", x, rng)
        m = b.op(M, [y, chain_const(b, rng, M, [4])])
        out = b.op(A, [m, chain_const(b, rng, A, [4])])
        return [out, m] if where == "graph output" else [out, b.op("RELU", [m])]
    assert_refused(model_with(build), "fuse_batchnorm_with_conv", "the MUL is not followed by ADD/SUB alone")


@pytest.mark.parametrize("name,kind,op_type", [
    ("fuse_mul_with_conv", "conv", M), ("fuse_batchnorm_with_dwconv", "dwconv2", M),
    ("fuse_add_with_tconv", "tconv", A), ("fuse_add_with_fullyconnected", "fc", A)])
def test_refuses_producer_with_fused_activation(name, kind, op_type):
    def build(b, x, rng):
        y, c = producer(b, kind, x, rng, act=RELU)
        y = b.op(op_type, [y, chain_const(b, rng, op_type, [c])])
        if name.startswith("fuse_batchnorm"):
            y = b.op(A, [y, chain_const(b, rng, A, [c])])
        return [y]
    assert_refused(model_with(build), name, f"the {PRODUCER_TYPE[kind]} has a fused activation")


def test_refuses_activation_in_the_middle_of_a_batchnorm():
    model = chain_model("conv", [(M, "C", False, RELU), (A, "C", False, NONE)])
    assert_refused(model, "fuse_batchnorm_with_conv", "the MUL has a fused activation before the end of the chain")


def test_refuses_sub_with_the_constant_first():
    model = chain_model("conv", [(S, "C", True, NONE)])
    assert_refused(model, "fuse_add_with_conv", "SUB with the constant first is not a scale or shift")


def test_refuses_weights_that_are_not_constant():
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.input("x", X_SHAPE)
    w = b.input("w", [4, 3, 3, 3])
    y = b.op("CONV_2D", [x, w, b.const("bias", np.zeros(4, np.float32))], {"padding": 0})
    b.output(b.op(M, [y, chain_const(b, rng, M, [4])]))
    assert_refused(b.build(), "fuse_mul_with_conv", "the CONV_2D weights are not a float constant")


@pytest.mark.parametrize("quantized", ["x", "w", "mul_const"])
def test_quantized_models_are_left_untouched(quantized):
    model = chain_model("conv", [(M, "C", False, NONE)])
    model.main.tensor(quantized).quantization = Quantization(scale=np.array([0.05], np.float32),
                                                             zero_point=np.array([0], np.int64))
    optimized, report = optimize(model, passes=["fuse_mul_with_conv"])
    assert graph_signature(optimized) == graph_signature(model)
    assert report.ops_after == report.ops_before
    assert sum(pr.fused for pr in report.passes.values()) == 0
    assert any("quantized" in note for note in report.notes), report.notes


@pytest.mark.parametrize("quantized,reason", [("x", "a tensor is quantized"),
                                              ("w", "weights are not a float constant"),
                                              ("mul_const", "is not a float tensor")])
def test_pass_itself_declines_quantized_tensors(quantized, reason):
    """The manager skips quantized models before any pass runs; the pass guards on its own too."""
    model = chain_model("conv", [(M, "C", False, NONE)])
    model.main.tensor(quantized).quantization = Quantization(scale=np.array([0.05], np.float32))
    proposals = list(PASSES["fuse_mul_with_conv"].propose(model.main))
    assert len(proposals) == 1 and reason in proposals[0].reason, proposals


# ----------------------------------------------------------------------------------------
# fuse_activation_function
# ----------------------------------------------------------------------------------------
def act_producer(b, kind, x, rng, act=NONE):
    opts = {"fusedActivationFunction": act}
    if kind in ("conv", "dwconv2", "tconv", "fc"):
        return producer(b, kind, x, rng, act=act)[0]
    if kind in ("ADD", "MUL", "SUB", "DIV"):
        c = rng.uniform(0.5, 2.0, [3]) if kind == "DIV" else 3 * rng.standard_normal([3])
        return b.op(kind, [x, b.const("c", f32(c))], opts, name="p")
    if kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        return b.op(kind, [x], {"filterWidth": 2, "filterHeight": 2, "strideW": 2, "strideH": 2, **opts}, name="p")
    if kind == "CONCATENATION":
        return b.op(kind, [x, b.op("NEG", [x])], {"axis": -1, **opts}, name="p")
    if kind == "RESHAPE":
        return b.op(kind, [x, b.const("shape", np.array([1, 108], np.int32))], options_type="ReshapeOptions",
                    options={"newShape": [1, 108]}, name="p")
    if kind == "PAD":
        return b.op(kind, [x, b.const("pads", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32))], name="p")
    raise ValueError(kind)


def act_model(kind, act_ops, producer_act=NONE, extra_reader=None, seed=0):
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.input("x", X_SHAPE)
    p = act_producer(b, kind, x, rng, producer_act)
    y = p
    for k, a in enumerate(act_ops):
        y = b.op(ACT_OPS[a], [y], name=f"act{k}")
    outs = [y]
    if extra_reader == "graph output":
        outs.append(p)
    elif extra_reader == "another op":
        outs.append(b.op("NEG", [p]))
    b.output(*outs)
    # inputs scaled so that every clamp of every activation is exercised
    return b.build()


def assert_litert_equal_scaled(original, optimized, tmp_path):
    xs = [3 * x for x in random_inputs(original)]
    jaxfuse.save(original, tmp_path / "original.tflite")
    jaxfuse.save(optimized, tmp_path / "optimized.tflite")
    for a, b in zip(run_litert(tmp_path / "optimized.tflite", xs), run_litert(tmp_path / "original.tflite", xs)):
        assert relative_error(a, b) <= TOL


ACT_PRODUCERS = ["conv", "dwconv2", "fc", "tconv", "ADD", "MUL", "MAX_POOL_2D", "AVERAGE_POOL_2D"]
FAF = "fuse_activation_function"


@pytest.mark.parametrize("act", [RELU, RELU6, RELU_N1_TO_1], ids=lambda a: ACT_OPS[a])
@pytest.mark.parametrize("kind", ACT_PRODUCERS)
def test_activation_is_fused(kind, act, tmp_path):
    model = act_model(kind, [act])
    optimized, report = optimize(model, passes=[FAF])
    producer_type = op_types(model)[0]
    assert op_types(model) == [producer_type, ACT_OPS[act]]
    assert op_types(optimized) == [producer_type]
    assert report.passes[FAF].fused == 1 and not report.passes[FAF].rolled_back
    assert optimized.main.ops[0].options["fusedActivationFunction"] == act
    assert report.verification.ok
    assert_litert_equal_scaled(model, optimized, tmp_path)


@requires_onert
@pytest.mark.parametrize("kind", ["conv", "dwconv2", "MAX_POOL_2D"])
def test_activation_is_fused_onert(kind, tmp_path):
    model = act_model(kind, [RELU6])
    optimized, _ = optimize(model, passes=[FAF])
    assert op_types(optimized) == [op_types(model)[0]]
    jaxfuse.save(model, tmp_path / "original.circle")
    jaxfuse.save(optimized, tmp_path / "optimized.circle")
    xs = [3 * x for x in random_inputs(model)]
    (a,) = run_onert(tmp_path / "original.circle", xs)
    (b,) = run_onert(tmp_path / "optimized.circle", xs)
    assert relative_error(b, a) <= TOL


@pytest.mark.parametrize("kind", ["conv", "fc", "ADD", "MAX_POOL_2D"])
def test_tanh_is_never_fused(kind):
    """LiteRT's kernels ignore a fused TANH (FULLY_CONNECTED rejects it): keep the TANH op."""
    model = act_model(kind, [TANH])
    optimized, report = optimize(model, passes=[FAF])
    assert graph_signature(optimized) == graph_signature(model)
    assert "LiteRT kernels ignore a fused TANH" in report.passes[FAF].refused


def test_concatenation_takes_no_fused_activation():
    """LiteRT refuses to run a CONCATENATION with a fused activation (onert ignores it)."""
    assert_refused(act_model("CONCATENATION", [RELU]), FAF, "LiteRT rejects a fused activation on CONCATENATION")


COMPOSE = [  # (producer's fused activation, activation op, expected result or None)
    (RELU, RELU6, RELU6), (RELU6, RELU, RELU6), (RELU, RELU, RELU), (RELU6, RELU6, RELU6),
    (RELU_N1_TO_1, RELU_N1_TO_1, RELU_N1_TO_1),
    (RELU6, RELU_N1_TO_1, None), (RELU_N1_TO_1, RELU6, None), (RELU, RELU_N1_TO_1, None), (RELU_N1_TO_1, RELU, None),
]


@pytest.mark.parametrize("inner,outer,expected", COMPOSE,
                         ids=[f"{ACT_OPS[i]}-then-{ACT_OPS[o]}" for i, o, _ in COMPOSE])
def test_activations_compose(inner, outer, expected, tmp_path):
    model = act_model("conv", [outer], producer_act=inner)
    if expected is None:
        assert_refused(model, FAF, "do not compose into one")
        return
    optimized, report = optimize(model, passes=[FAF])
    assert op_types(optimized) == ["CONV_2D"]
    assert optimized.main.ops[0].options["fusedActivationFunction"] == expected
    assert_litert_equal_scaled(model, optimized, tmp_path)


def test_activation_chain_folds_step_by_step(tmp_path):
    model = act_model("dwconv2", [RELU, RELU6, RELU])
    optimized, report = optimize(model, passes=[FAF])
    assert op_types(optimized) == ["DEPTHWISE_CONV_2D"]
    assert report.passes[FAF].fused == 3
    assert optimized.main.ops[0].options["fusedActivationFunction"] == RELU6
    assert_litert_equal_scaled(model, optimized, tmp_path)


@pytest.mark.parametrize("extra_reader", ["graph output", "another op"])
def test_activation_refused_when_producer_output_has_another_reader(extra_reader):
    assert_refused(act_model("conv", [RELU], extra_reader=extra_reader), FAF, "the CONV_2D output has another reader")


@pytest.mark.parametrize("kind", ["RESHAPE", "PAD"])
def test_activation_refused_when_producer_has_no_fused_activation(kind):
    assert_refused(act_model(kind, [RELU]), FAF, f"{kind} has no fused activation")


def test_activation_on_a_graph_input_is_not_a_candidate():
    b = ModelBuilder()
    b.output(b.op("RELU", [b.input("x", X_SHAPE)]))
    model = b.build()
    optimized, report = optimize(model, passes=[FAF])
    assert op_types(optimized) == ["RELU"] and report.passes[FAF].refused == {}


# ----------------------------------------------------------------------------------------
# the default pipeline on a small post-activation network
# ----------------------------------------------------------------------------------------
def test_default_pipeline_removes_every_batchnorm(tmp_path):
    rng = np.random.default_rng(7)
    b = ModelBuilder()
    x = b.input("x", X_SHAPE)

    def bn(y, c, act=NONE):
        y = b.op(M, [y, b.const("gamma", f32(rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)))])
        return b.op(A, [y, b.const("beta", f32(rng.standard_normal(c)))], {"fusedActivationFunction": act})

    y = b.op("CONV_2D", [x, b.const("w1", f32(rng.standard_normal([4, 3, 3, 3]))),
                         b.const("b1", f32(rng.standard_normal(4)))], {"padding": 0})
    y = b.op("RELU", [bn(y, 4)])
    y = b.op("DEPTHWISE_CONV_2D", [y, b.const("w2", f32(rng.standard_normal([1, 3, 3, 8]))),
                                   b.const("b2", f32(rng.standard_normal(8)))], {"padding": 1, "depthMultiplier": 2})
    y = bn(y, 8, RELU6)
    y = b.op("FULLY_CONNECTED", [y, b.const("w3", f32(rng.standard_normal([5, 128]) / 10)), None])
    b.output(bn(y, 5))
    model = b.build()

    optimized, report = optimize(model)
    assert op_types(model).count(M) == 3 and op_types(model).count(A) == 3
    assert op_types(optimized) == ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"]
    assert [op.options["fusedActivationFunction"] for op in optimized.main.ops] == [RELU, RELU6, NONE]
    assert report.ops_before == 10 and report.ops_after == 3
    assert report.passes["fuse_batchnorm_with_conv"].fused == 1
    assert report.passes["fuse_batchnorm_with_dwconv"].fused == 1
    assert report.passes["fuse_activation_function"].fused == 1
    assert report.verification.ok
    assert_litert_equal(model, optimized, tmp_path)
