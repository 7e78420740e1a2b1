"""canonicalize_scale_shift: chains of per-channel elementwise ops become MUL -> ADD.

Generated graphs for every op and operand order, chains of 2 to 4 ops, scalar and
per-channel constants and each refusal guard; the rewritten files run in LiteRT and onert
against the originals; fold.compose_scale_shift against float64 evaluation, under jit and
grad; and the committed litert-torch fixtures, whose batch norms are SUB -> MUL -> MUL -> ADD.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfuse
from jaxfuse import fold
from jaxfuse.builder import ModelBuilder, quantization
from jaxfuse.numerics import random_inputs
from jaxfuse.passes import DEFAULT_PIPELINE, PASSES, Refusal, optimize
from reference import relative_error, requires_onert, run_litert, run_onert
from test_passes_post import graph_signature, op_types
from test_passes_post import random_inputs as inputs_for

NAME = "canonicalize_scale_shift"
NONE, RELU, RELU_N1_TO_1, RELU6, TANH = 0, 1, 2, 3, 4
C = 4
X_SHAPE = [1, 5, 5, C]
TOL = 1e-5
MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"


def f32(a):
    return np.asarray(a, np.float32)


# ----------------------------------------------------------------------------------------
# model construction
# ----------------------------------------------------------------------------------------
#: a chain step: (op, constant shape, constant first, fused activation); op "RSUB" is SUB(c, x)
SHAPES = {"C": [C], "1C": [1, C], "111C": [1, 1, 1, C], "1": [1], "scalar": [], "11": [1, 1]}


def constant_value(rng, op, shape):
    if op in ("MUL", "DIV"):  # both signs, away from zero
        return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    return rng.standard_normal(shape)


def add_step(b, y, rng, k, op, shape, first=False, act=NONE, value=None):
    c = b.const(f"c{k}", f32(constant_value(rng, op, SHAPES[shape]) if value is None else value))
    op_type = "SUB" if op == "RSUB" else op
    inputs = [c, y] if first or op == "RSUB" else [y, c]
    return b.op(op_type, inputs, {"fusedActivationFunction": act}, name=f"op{k}")


def chain_model(steps, *, seed=0, after=None, conv_first=False):
    """x -> [CONV_2D] -> steps -> [after op] -> output."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    y = b.input("x", X_SHAPE)
    if conv_first:
        w = b.const("w", f32(rng.standard_normal([C, 3, 3, C]) / 3))
        y = b.op("CONV_2D", [y, w, b.const("bias", f32(rng.standard_normal(C)))], {"padding": 0}, name="conv")
    for k, step in enumerate(steps):
        y = add_step(b, y, rng, k, *step)
    if after is not None:
        y = b.op(after, [y], name="after")
    b.output(y)
    return b.build()


def assert_same_in_litert(original, optimized, tmp_path):
    xs = inputs_for(original)
    jaxfuse.save(original, tmp_path / "original.tflite")
    jaxfuse.save(optimized, tmp_path / "optimized.tflite")
    want = run_litert(tmp_path / "original.tflite", xs)
    got = run_litert(tmp_path / "optimized.tflite", xs)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert relative_error(a, b) <= TOL, relative_error(a, b)


def reference_affine(model):
    """(scale, shift) of the model's chain, composed from its constants in float64 here."""
    s, t = np.ones(C), np.zeros(C)
    for op in model.main.ops:
        if op.type not in ("ADD", "SUB", "MUL", "DIV"):
            continue
        first = op.inputs[0].is_constant
        c = np.broadcast_to(op.inputs[0 if first else 1].data.astype(np.float64).reshape(-1), (C,))
        if op.type == "ADD":
            t = t + c
        elif op.type == "MUL":
            s, t = s * c, t * c
        elif op.type == "DIV":
            s, t = s / c, t / c
        elif first:
            s, t = -s, c - t
        else:
            t = t - c
    return s, t


def assert_refused(model, reason):
    optimized, report = optimize(model, passes=[NAME])
    assert graph_signature(optimized) == graph_signature(model)
    pr = report.passes[NAME]
    assert pr.fused == 0 and not pr.rolled_back
    assert any(reason in r for r in pr.refused), pr.refused
    return pr.refused


# ----------------------------------------------------------------------------------------
# positive cases
# ----------------------------------------------------------------------------------------
M, A, S, D, R = "MUL", "ADD", "SUB", "DIV", "RSUB"
POSITIVE = [
    # (steps, the op types after)
    ([(S, "111C"), (M, "111C")], [M, A]),                    # x - c, then scale
    ([(A, "C"), (M, "C")], [M, A]),
    ([(A, "C", True), (M, "1C", True)], [M, A]),             # c + x, c * x
    ([(R, "C"), (M, "C")], [M, A]),                          # c - x
    ([(M, "C"), (S, "C", False, RELU)], [M, A]),             # MUL -> SUB: same count, canonical order
    ([(D, "C"), (A, "C", True, RELU6)], [M, A]),             # DIV by c -> MUL by 1/c
    ([(M, "C"), (D, "111C", False, RELU)], [M]),             # scales only: one MUL
    ([(A, "C"), (S, "1C")], [A]),                            # shifts only: one ADD
    ([(R, "C"), (R, "C", False, RELU_N1_TO_1)], [A]),        # c2 - (c1 - x) = x + (c2 - c1)
    ([(S, "111C"), (M, "111C"), (M, "111C"), (A, "111C", False, RELU)], [M, A]),  # litert-torch batch norm
    ([(A, "C"), (D, "1C"), (R, "111C")], [M, A]),
    ([(D, "C"), (M, "1"), (A, "C"), (S, "scalar", False, RELU6)], [M, A]),
    ([(M, "1"), (A, "scalar"), (S, "11")], [M, A]),          # single values only: [1]-shaped result
    ([(M, "scalar"), (D, "1", False, RELU)], [M]),
    ([(M, "C"), (A, "C"), (M, "C"), (A, "C")], [M, A]),      # two batch norms in a row
]


def case_id(case):
    steps, _ = case
    return "-".join(f"{'c' if len(s) > 2 and s[2] else ''}{s[0]}{s[1]}{'+a' + str(s[3]) if len(s) > 3 and s[3] else ''}"
                    for s in steps)


@pytest.mark.parametrize("case", POSITIVE, ids=[case_id(c) for c in POSITIVE])
def test_chain_becomes_mul_add(case, tmp_path):
    steps, expected = case
    model = chain_model(steps, conv_first=len(steps) % 2 == 0)  # the start: an op output or the graph input
    optimized, report = optimize(model, passes=[NAME])
    chain_start = 1 if len(steps) % 2 == 0 else 0
    assert op_types(optimized)[chain_start:] == expected
    pr = report.passes[NAME]
    assert pr.fused == 1 and not pr.rolled_back and not pr.refused
    assert report.verification is not None and report.verification.ok
    g = optimized.main
    last = g.ops[-1]
    assert last.outputs[0] is g.outputs[0] and g.outputs[0].name == model.main.outputs[0].name
    assert last.options["fusedActivationFunction"] == (steps[-1][3] if len(steps[-1]) > 3 else NONE)
    assert all(op.options.get("fusedActivationFunction", NONE) == NONE for op in g.ops[:-1])
    # the new constants are the float64 composition rounded once to float32
    s, t = reference_affine(model)
    consts = {op.type: op.inputs[1] for op in g.ops[chain_start:]}
    assert all(op.inputs[0] is not None and not op.inputs[0].is_constant for op in g.ops[chain_start:])
    if M in consts:
        assert consts[M].dtype == np.float32
        np.testing.assert_array_equal(np.broadcast_to(consts[M].data.reshape(-1), (C,)), s.astype(np.float32))
    else:
        np.testing.assert_allclose(s, 1, rtol=1e-6)
    if A in consts:
        np.testing.assert_array_equal(np.broadcast_to(consts[A].data.reshape(-1), (C,)), t.astype(np.float32))
    else:
        np.testing.assert_allclose(t, 0, atol=1e-6)
    if all(SHAPES[step[1]] in ([1], [], [1, 1]) for step in steps):
        assert all(c.shape == (1,) for c in consts.values())
    assert_same_in_litert(model, optimized, tmp_path)


def test_constants_keep_the_converters_layout():
    model = chain_model([(S, "111C"), (M, "111C"), (M, "111C"), (A, "111C", False, RELU)])
    optimized, _ = optimize(model, passes=[NAME])
    mul, add = optimized.main.ops
    assert mul.inputs[1].shape == add.inputs[1].shape == (1, 1, 1, C)
    assert mul.outputs[0] is add.inputs[0] and mul.outputs[0].name.endswith("/jaxfuse_scaled")
    # no tensor of the optimized graph carries an original name with a changed value
    original_names = {t.name for t in model.main.tensors}
    assert mul.outputs[0].name not in original_names
    assert {mul.inputs[1].name, add.inputs[1].name}.isdisjoint(original_names)


def test_identity_chain_is_removed_and_its_readers_read_the_start():
    halves = [(M, "C", False, NONE, np.full(C, 2.0)), (M, "C", False, NONE, np.full(C, 0.5))]
    model = chain_model([(op, shape, first, act) for op, shape, first, act, _ in halves], after="TANH")
    for op, (*_, value) in zip(model.main.ops, halves):
        op.inputs[1].set_data(f32(value))
    optimized, report = optimize(model, passes=[NAME])
    assert op_types(optimized) == ["TANH"]
    assert optimized.main.ops[0].inputs[0] is optimized.main.inputs[0]
    assert report.passes[NAME].fused == 1 and report.verification.ok


def test_single_add_of_zeros_is_removed():
    model = chain_model([(A, "111C")], conv_first=True, after="RELU")
    model.main.ops[1].inputs[1].set_data(f32(np.zeros([1, 1, 1, C])))
    optimized, report = optimize(model, passes=[NAME])
    assert op_types(optimized) == ["CONV_2D", "RELU"]
    conv, relu = optimized.main.ops
    assert relu.inputs[0] is conv.outputs[0] and relu.outputs[0] is optimized.main.outputs[0]
    assert report.passes[NAME].fused == 1 and report.verification.ok


def test_identity_chain_with_an_activation_becomes_the_activation_op(tmp_path):
    rng = np.random.default_rng(0)
    shift = f32(rng.standard_normal(C))
    b = ModelBuilder()
    x = b.input("x", X_SHAPE)
    y = b.op("ADD", [x, b.const("c", shift)], name="plus")
    y = b.op("SUB", [y, b.const("c2", shift)], {"fusedActivationFunction": RELU6}, name="minus")
    b.output(y)
    model = b.build()
    optimized, report = optimize(model, passes=[NAME])
    assert op_types(optimized) == ["RELU6"]
    assert optimized.main.outputs[0].name == "minus"
    assert report.passes[NAME].fused == 1 and report.verification.ok
    assert_same_in_litert(model, optimized, tmp_path)  # (x + c) - c == x only up to rounding


def test_identity_chain_at_a_graph_output_is_refused():
    model = chain_model([(M, "C"), (M, "C")])
    for op, value in zip(model.main.ops, (2.0, 0.5)):
        op.inputs[1].set_data(f32(np.full(C, value)))
    assert_refused(model, "is the identity but its output 'op1' is a graph output")


def test_single_ops_and_canonical_pairs_are_left_alone():
    for steps in ([(S, "C")], [(D, "C")], [(R, "C")], [(M, "C"), (A, "C", False, RELU)],
                  [(M, "C", True), (A, "1C", True)]):
        model = chain_model(steps)
        optimized, report = optimize(model, passes=[NAME])
        assert graph_signature(optimized) == graph_signature(model), steps
        assert report.passes[NAME].fused == 0 and not report.passes[NAME].refused


@pytest.mark.parametrize("case", POSITIVE[::3], ids=[case_id(c) for c in POSITIVE[::3]])
def test_running_twice_changes_nothing_the_second_time(case):
    once, _ = optimize(chain_model(case[0]), passes=[NAME])
    twice, report = optimize(once, passes=[NAME])
    assert graph_signature(twice) == graph_signature(once)
    assert report.passes[NAME].fused == 0 and not report.passes[NAME].refused


# onert runs in a child process (about a second per model): a few representative chains
ONERT_CASES = [POSITIVE[i] for i in (3, 5, 9, 11)]


@requires_onert
@pytest.mark.parametrize("case", ONERT_CASES, ids=[case_id(c) for c in ONERT_CASES])
def test_chain_in_onert(case, tmp_path):
    model = chain_model(case[0], conv_first=True)
    optimized, _ = optimize(model, passes=[NAME])
    jaxfuse.save(model, tmp_path / "original.circle")
    jaxfuse.save(optimized, tmp_path / "optimized.circle")
    xs = inputs_for(model)
    (a,) = run_onert(tmp_path / "original.circle", xs)
    (b,) = run_onert(tmp_path / "optimized.circle", xs)
    assert relative_error(b, a) <= TOL


# ----------------------------------------------------------------------------------------
# refusal guards: the graph stays exactly as it was, the report names the blocker
# ----------------------------------------------------------------------------------------
def test_intermediate_with_another_reader_is_refused():
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.input("x", X_SHAPE)
    y = add_step(b, x, rng, 0, S, "C")
    other = b.op("RELU", [y], name="other")
    z = add_step(b, y, rng, 1, M, "C")
    b.output(add_step(b, z, rng, 2, A, "C", act=RELU), other)
    model = b.build()
    assert_refused(model, "the SUB output 'op0' has another reader (RELU 'other')")


def test_graph_output_in_the_middle_is_refused():
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    y = add_step(b, b.input("x", X_SHAPE), rng, 0, A, "C")
    z = add_step(b, y, rng, 1, M, "C")
    b.output(z, y)
    assert_refused(b.build(), "the ADD output 'op0' is a graph output")


def test_fused_activation_mid_chain_is_refused():
    model = chain_model([(S, "C", False, RELU), (M, "C"), (A, "C")])
    assert_refused(model, "the SUB output 'op0' passes a fused RELU before the chain ends")


def test_constant_that_is_not_per_channel_is_refused():
    model = chain_model([(A, "C"), (M, "C")])
    model.main.ops[0].inputs[1].set_data(f32(np.ones([1, 5, 5, C])))
    assert_refused(model, "ADD 'op0': the constant 'c0' of shape [1, 5, 5, 4] is not per-channel")


def test_constant_divided_by_the_tensor_is_refused():
    model = chain_model([(D, "C", True), (M, "C")])
    assert_refused(model, "the DIV 'op0' divides the constant 'c0' by the tensor (c / x is not affine)")


def test_broadcast_to_a_bigger_shape_is_refused():
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    y = add_step(b, b.input("x", [1, 5, 5, 1]), rng, 0, A, "C")   # [1,5,5,1] + [4] -> [1,5,5,4]
    b.output(add_step(b, y, rng, 1, M, "C"))
    assert_refused(b.build(), "the ADD 'op0' broadcasts 'x' [1, 5, 5, 1] to [1, 5, 5, 4]")


def test_division_by_a_zero_constant_is_refused():
    model = chain_model([(D, "C"), (A, "C")])
    model.main.ops[0].inputs[1].set_data(f32([1.0, 0.0, 2.0, 3.0]))
    assert_refused(model, "the DIV 'op0' divides by a zero in 'c0'")


def test_fused_tanh_at_the_end_is_refused():
    """LiteRT skips a fused TANH on MUL/ADD and onert rejects it (jaxfuse cannot even lower it)."""
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    y = add_step(b, b.input("x", X_SHAPE), rng, 0, S, "C")
    b.output(b.op("MUL", [y, b.const("c1", f32(rng.uniform(0.5, 2, C)))], {"fusedActivationFunction": TANH},
                  output_shape=X_SHAPE, name="op1"))
    assert_refused(b.build(), "the MUL 'op1' has a fused TANH, which LiteRT's kernels ignore")


def test_float16_constants_behind_dequantize_fold_exactly():
    """optimize() turns DEQUANTIZE of float16 constants into float32 constants while the passes
    run (passes/float16.py), so a float16 chain collapses like any other."""
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    y = b.input("x", X_SHAPE)
    for k, op in enumerate((S, M, A)):
        half = b.const(f"h{k}", rng.standard_normal(C).astype(np.float16))
        y = b.op(op, [y, b.op("DEQUANTIZE", [half], name=f"deq{k}")], name=f"op{k}")
    b.output(y)
    model = b.build()
    optimized, report = optimize(model, passes=[NAME])
    assert report.passes[NAME].fused == 1
    assert [op.type for op in optimized.main.ops] == ["MUL", "ADD"]
    x = [rng.standard_normal(X_SHAPE).astype(np.float32)]
    assert relative_error(run_jax_once(optimized, x), run_jax_once(model, x)) < 1e-6


def test_int8_constants_behind_dequantize_are_refused():
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    y = b.input("x", X_SHAPE)
    for k, op in enumerate((S, M, A)):
        stored = b.const(f"q{k}", rng.integers(-100, 100, C).astype(np.int8), quant=quantization(0.02, 0))
        y = b.op(op, [y, b.op("DEQUANTIZE", [stored], dtype=np.float32, name=f"deq{k}")], name=f"op{k}")
    b.output(y)
    # optimize() leaves a model with quantized tensors alone before any pass runs; the matcher refuses too
    proposals = list(PASSES[NAME].propose(b.build().main))
    assert [p.reason for p in proposals if isinstance(p, Refusal)] == [
        "the SUB 'op0' reads 'q0', a int8 constant behind DEQUANTIZE (dequantized weights are not folded)"]


def run_jax_once(model, x):
    fn, params = jaxfuse.lower(model)
    return np.asarray(jax.jit(fn)(params, *x)[0])


def test_quantized_chain_is_refused_by_the_matcher():
    """optimize() leaves quantized models alone before any pass runs; the matcher refuses too."""
    b = ModelBuilder()
    q = quantization(0.05, 3)
    y = b.input("x", X_SHAPE, np.int8, quant=q)
    for k, op in enumerate((S, M, A)):
        c = b.const(f"c{k}", np.full(C, 7, np.int8), quant=quantization(0.1, 0))
        y = b.op(op, [y, c], dtype=np.int8, quant=q, output_shape=X_SHAPE, version=2, name=f"op{k}")
    b.output(y)
    model = b.build()
    proposals = list(PASSES[NAME].propose(model.main))
    assert proposals and all(isinstance(p, Refusal) for p in proposals)
    assert any("the SUB 'op0' works on quantized tensors" in p.reason for p in proposals)
    optimized, report = optimize(model, passes=[NAME])
    assert graph_signature(optimized) == graph_signature(model)
    assert any("quantized model" in note for note in report.notes)


def test_blocked_chain_still_collapses_the_part_it_can():
    """SUB -> MUL | -> ADD -> MUL with the first MUL's output read elsewhere: each half becomes MUL -> ADD."""
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.input("x", X_SHAPE)
    y = add_step(b, add_step(b, x, rng, 0, S, "C"), rng, 1, M, "C")
    side = b.op("RELU", [y], name="side")
    z = add_step(b, add_step(b, y, rng, 2, A, "C"), rng, 3, M, "C", act=RELU)
    b.output(z, side)
    model = b.build()
    optimized, report = optimize(model, passes=[NAME])
    assert op_types(optimized) == [M, A, "RELU", M, A]
    pr = report.passes[NAME]
    assert pr.fused == 2 and report.verification.ok
    # what remains refused: the first half's ADD (now producing 'op1') feeding the second half
    assert any("the ADD output 'op1' has another reader (RELU 'side')" in r for r in pr.refused)


def test_pass_is_first_in_the_default_pipeline():
    assert DEFAULT_PIPELINE[0] == NAME
    assert DEFAULT_PIPELINE.index(NAME) < DEFAULT_PIPELINE.index("fuse_preactivation_batchnorm")


def test_default_pipeline_folds_a_canonicalized_batch_norm_into_its_conv(tmp_path):
    """conv -> SUB -> MUL -> MUL -> ADD(RELU): canonicalized, then fuse_batchnorm_with_conv."""
    model = chain_model([(S, "111C"), (M, "111C"), (M, "111C"), (A, "111C", False, RELU)], conv_first=True)
    optimized, report = optimize(model)
    assert op_types(optimized) == ["CONV_2D"]
    assert report.passes[NAME].fused == 1 and report.passes["fuse_batchnorm_with_conv"].fused == 1
    assert_same_in_litert(model, optimized, tmp_path)


# ----------------------------------------------------------------------------------------
# the pure rule: fold.compose_scale_shift
# ----------------------------------------------------------------------------------------
KINDS = ["ADD", "SUB", "RSUB", "MUL", "DIV"]


def apply_steps(x, steps):
    for kind, c in steps:
        x = {"ADD": lambda: x + c, "SUB": lambda: x - c, "RSUB": lambda: c - x,
             "MUL": lambda: x * c, "DIV": lambda: x / c}[kind]()
    return x


def random_steps(rng, n, shape=(C,)):
    kinds = rng.choice(KINDS, n)
    return [(str(k), rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape) if k in ("MUL", "DIV")
             else rng.standard_normal(shape)) for k in kinds]


@pytest.mark.parametrize("seed", range(6))
def test_compose_scale_shift_matches_the_chain_in_float64(seed):
    rng = np.random.default_rng(seed)
    steps = random_steps(rng, 1 + seed % 5)
    x = rng.standard_normal((2, 3, 3, C))
    s, t = fold.compose_scale_shift(steps)
    assert s.dtype == t.dtype == np.float64 and s.shape == t.shape == (C,)
    np.testing.assert_allclose(x * s + t, apply_steps(x, steps), rtol=1e-12, atol=1e-12)


def test_compose_scale_shift_each_step():
    c = np.array([2.0, -4.0])
    for kind, (s, t) in {"ADD": ([1, 1], [2, -4]), "SUB": ([1, 1], [-2, 4]), "RSUB": ([-1, -1], [2, -4]),
                         "MUL": ([2, -4], [0, 0]), "DIV": ([0.5, -0.25], [0, 0])}.items():
        got = fold.compose_scale_shift([(kind, c)])
        np.testing.assert_array_equal(got[0], s)
        np.testing.assert_array_equal(got[1], t)


def test_compose_scale_shift_broadcasts_single_values():
    s, t = fold.compose_scale_shift([("MUL", np.array([3.0])), ("ADD", np.arange(C, dtype=np.float64))])
    np.testing.assert_array_equal(s, np.full(C, 3.0))
    np.testing.assert_array_equal(t, np.arange(C))
    with pytest.raises(ValueError, match="unknown chain step 'POW'"):
        fold.compose_scale_shift([("POW", np.ones(C))])


def test_compose_scale_shift_jits_and_differentiates():
    rng = np.random.default_rng(7)
    steps = [("SUB", rng.standard_normal(C)), ("MUL", rng.uniform(0.5, 2, C)), ("DIV", rng.uniform(0.5, 2, C)),
             ("RSUB", rng.standard_normal(C)), ("ADD", rng.standard_normal(C))]
    kinds = [k for k, _ in steps]
    consts = [jnp.asarray(c, jnp.float32) for _, c in steps]
    x = jnp.asarray(rng.standard_normal((3, C)), jnp.float32)

    @jax.jit
    def composed(cs):
        s, t = fold.compose_scale_shift(list(zip(kinds, cs)))
        return s, t

    s, t = composed(consts)
    ref_s, ref_t = fold.compose_scale_shift(steps)
    np.testing.assert_allclose(s, ref_s, rtol=1e-6)
    np.testing.assert_allclose(t, ref_t, rtol=1e-5, atol=1e-6)

    def loss_composed(cs):
        s, t = fold.compose_scale_shift(list(zip(kinds, cs)))
        return jnp.sum(jnp.tanh(x * s + t))

    def loss_chain(cs):
        return jnp.sum(jnp.tanh(apply_steps(x, list(zip(kinds, cs)))))

    g_composed = jax.grad(loss_composed)(consts)
    g_chain = jax.grad(loss_chain)(consts)
    for a, b in zip(g_composed, g_chain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert np.any(np.asarray(a) != 0)


# ----------------------------------------------------------------------------------------
# the committed litert-torch fixtures: every batch norm is SUB -> MUL -> MUL -> ADD(RELU)
# ----------------------------------------------------------------------------------------
#: stem -> batch norms (litert-torch chains SUB -> MUL -> MUL -> ADD)
FIXTURES = {
    "resnetv2_50_tiny_litert": 17,
    "resnetv2_50_tiny_litert_mixed": 17,
    "preact3_tiny_litert_mixed": 4,
}


def chained_pairs(graph):
    """(producer, reader) pairs of elementwise ops with a constant operand, the reader alone
    reading the producer's output: what the pass would still merge or reorder."""
    uses = graph.consumer_map()

    def const_op(op):
        return op.type in ("ADD", "SUB", "MUL", "DIV") and sum(t is not None and t.is_constant for t in op.inputs) == 1

    pairs = []
    for op in graph.ops:
        readers = uses.get(id(op.outputs[0]), [])
        if const_op(op) and len(readers) == 1 and const_op(readers[0]) and not graph.is_graph_output(op.outputs[0]):
            pairs.append((op.type, readers[0].type))
    return pairs


@pytest.mark.parametrize("stem", FIXTURES)
def test_fixture_chains_collapse(stem, tmp_path):
    n = FIXTURES[stem]
    path = MODELS / f"{stem}.tflite"
    model = jaxfuse.load(path)
    before = model.op_histogram()
    optimized, report = optimize(model, passes=[NAME])
    after = optimized.op_histogram()
    assert report.passes[NAME].fused == n and not report.passes[NAME].refused
    assert not report.passes[NAME].rolled_back
    assert "SUB" not in after
    assert after["MUL"] == before["MUL"] - n and after["ADD"] == before["ADD"]
    assert sum(after.values()) == sum(before.values()) - 2 * n
    assert sorted(set(chained_pairs(optimized.main))) == [("MUL", "ADD")]
    assert len(chained_pairs(optimized.main)) == n
    assert report.max_rewrite_error <= 1e-6
    assert report.verification.ok and report.verification.max_rel_error <= 1e-6
    # the rewritten file against LiteRT and the original file
    jaxfuse.save(optimized, tmp_path / "optimized.tflite")
    for seed in (0, 1):
        x = random_inputs(model.main, 1, seed)[0]
        for got, want in zip(run_litert(tmp_path / "optimized.tflite", x), run_litert(path, x)):
            assert relative_error(got, want) <= TOL


@requires_onert
@pytest.mark.parametrize("stem", ["resnetv2_50_tiny_litert_mixed", "preact3_tiny_litert_mixed"])
def test_fixture_chains_collapse_onert(stem, tmp_path):
    path = MODELS / f"{stem}.tflite"
    model = jaxfuse.load(path)
    optimized, _ = optimize(model, passes=[NAME])
    jaxfuse.save(model, tmp_path / "original.circle")
    jaxfuse.save(optimized, tmp_path / "optimized.circle")
    x = random_inputs(model.main, 1, 0)[0]
    (a,) = run_onert(tmp_path / "original.circle", x)
    (b,) = run_onert(tmp_path / "optimized.circle", x)
    assert relative_error(b, a) <= TOL


@pytest.mark.parametrize("stem", FIXTURES)
def test_fixture_default_pipeline_starts_from_canonical_batch_norms(stem):
    """In the whole default pipeline the canonicalization applies to every batch norm, no SUB
    is left, and the whole model still matches (what the batch-norm passes make of the
    MUL -> ADD pairs afterwards is theirs to assert)."""
    model = jaxfuse.load(MODELS / f"{stem}.tflite")
    optimized, report = optimize(model)
    assert report.passes[NAME].fused == FIXTURES[stem] and not report.passes[NAME].rolled_back
    assert "SUB" not in optimized.op_histogram()
    assert not [p for p in chained_pairs(optimized.main) if p != ("MUL", "ADD")]
    assert report.verification.ok and report.verification.max_rel_error <= 1e-5
