"""The pass manager's guarantees: a wrong rewrite is rolled back, nothing half-applied
survives, and whole-model verification names where two models diverge."""
import numpy as np
import pytest

import jaxfuse
import jaxfuse.schema
from jaxfuse.builder import ModelBuilder
from jaxfuse.equivalence import VerificationError, compare
from jaxfuse.passes import PASSES, Pass, Rewrite, optimize, register_pass


def conv_chain_model():
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.input("x", [1, 6, 6, 3])
    w1 = b.const("w1", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    h = b.op("CONV_2D", [x, w1, b.const("b1", np.zeros(4, np.float32))], {"fusedActivationFunction": 1}, name="h")
    w2 = b.const("w2", rng.standard_normal((2, 1, 1, 4)).astype(np.float32))
    y = b.op("CONV_2D", [h, w2, b.const("b2", np.ones(2, np.float32))], name="y")
    b.output(y)
    return b.build()


class DoubleTheWeights(Pass):
    """A deliberately wrong rewrite: scales the first conv's filter by 2."""
    name = "test_double_the_weights"

    def __init__(self):
        self.applied = False  # only reachable when the check is disabled

    def propose(self, graph):
        conv = graph.ops[0]
        if self.applied:
            return

        def apply():
            graph.private_input(conv, 1).set_data(conv.inputs[1].data * 2)
            self.applied = True

        yield Rewrite(key=("double",), where=conv.outputs[0].name, region=[conv], apply=apply, summary="x2")


class BreakTheWiring(Pass):
    """A rewrite whose surgery leaves the graph invalid (an op reads a tensor nothing makes)."""
    name = "test_break_the_wiring"

    def propose(self, graph):
        conv = graph.ops[1]

        def apply():
            graph.remove_op(graph.ops[0])

        yield Rewrite(key=("break",), where="y", region=[conv], apply=apply)


@pytest.mark.parametrize("bad_pass", [DoubleTheWeights(), BreakTheWiring()])
def test_wrong_rewrite_is_rolled_back(bad_pass):
    model = conv_chain_model()
    optimized, report = optimize(model, [bad_pass])
    rolled = report.passes[bad_pass.name].rolled_back
    assert report.passes[bad_pass.name].fused == 0 and len(rolled) == 1
    assert [op.type for op in optimized.main.ops] == ["CONV_2D", "CONV_2D"]
    for t0, t1 in zip(model.main.tensors, optimized.main.tensors):
        assert t0.name == t1.name
        if t0.is_constant:
            np.testing.assert_array_equal(t0.data, t1.data)
    assert report.verification is None and report.rewrites == []
    assert any("unchanged" in note for note in report.notes)
    assert jaxfuse.verify(model, optimized).max_rel_error == 0.0


class PoisonTheWeights(DoubleTheWeights):
    """A wrong rewrite whose region computes NaN: the check must see an infinite error."""
    name = "test_poison_the_weights"

    def propose(self, graph):
        for rewrite in super().propose(graph):
            conv = graph.ops[0]
            yield Rewrite(key=("poison",), where=rewrite.where, region=[conv], summary="NaN",
                          apply=lambda: graph.private_input(conv, 1).set_data(np.full(conv.inputs[1].shape, np.nan,
                                                                                       np.float32)))


def test_a_rewrite_that_computes_nan_fails_its_own_check():
    _, report = optimize(conv_chain_model(), [PoisonTheWeights()])
    rolled = report.passes["test_poison_the_weights"].rolled_back
    assert len(rolled) == 1 and "error inf" in rolled[0]["error"]


def relu_conv_chain_model(length: int = 4):
    rng = np.random.default_rng(1)
    b = ModelBuilder()
    h = b.input("x", [1, 5, 5, 3])
    channels = 3
    for i in range(length):
        w = b.const(f"w{i}", rng.standard_normal((4, 1, 1, channels)).astype(np.float32))
        h = b.op("CONV_2D", [h, w, b.const(f"b{i}", rng.standard_normal(4).astype(np.float32))],
                 {"fusedActivationFunction": 1}, name=f"h{i}")
        channels = 4
    b.output(h)
    return b.build()


class MoveAFactorAcross(Pass):
    """Scale conv j-1's outputs by `factors[j]` (after its ReLU, which commutes with a
    positive factor) and conv j's input channels by 1/2: exact where the factor is 2. Each
    rewrite edits the conv the previous one's check reads, so checking a rewrite after the
    next one is applied would see the next one's weights."""
    name = "test_move_a_factor_across"

    def __init__(self, factors: dict[int, float]):
        self.factors = factors

    def propose(self, graph):
        convs = [op for op in graph.ops if op.type == "CONV_2D"]
        for j in range(1, len(convs)):
            first, second = convs[j - 1], convs[j]
            if "+moved" in second.outputs[0].name:
                continue

            def apply(first=first, second=second, factor=self.factors.get(j, 2.0)):
                graph.private_input(first, 1).set_data(first.inputs[1].data * factor)
                graph.private_input(first, 2).set_data(first.inputs[2].data * factor)
                graph.private_input(second, 1).set_data(second.inputs[1].data * 0.5)
                first.outputs[0].name += "*f"  # another value: the whole-model check must not compare it
                second.outputs[0].name += "+moved"

            yield Rewrite(key=("move", j), where=second.outputs[0].name, region=[first, second], apply=apply)


def test_checks_see_each_rewrite_as_applied_even_when_the_next_is_already_staged():
    model = relu_conv_chain_model()
    optimized, report = optimize(model, [MoveAFactorAcross({})])
    assert report.passes["test_move_a_factor_across"].fused == 3 and report.max_rewrite_error < 1e-6
    assert report.verification.ok


def test_a_failed_check_undoes_its_rewrite_and_the_one_staged_on_top_and_matching_goes_on():
    model = relu_conv_chain_model()
    optimized, report = optimize(model, [MoveAFactorAcross({2: 3.0})])  # the second rewrite is wrong
    result = report.passes["test_move_a_factor_across"]
    assert result.fused == 2 and [r["where"] for r in result.rolled_back] == ["h2"]
    assert "check failed" in result.rolled_back[0]["error"]
    assert [r["where"] for r in report.rewrites] == ["h1", "h3"]
    names = [op.outputs[0].name for op in optimized.main.ops]
    assert names == ["h0*f", "h1+moved", "h2*f", "h3+moved"]
    original = {t.name: t for t in model.main.tensors}
    np.testing.assert_array_equal(optimized.main.ops[1].inputs[2].data, original["b1"].data)  # untouched by h2's
    np.testing.assert_array_equal(optimized.main.ops[2].inputs[2].data, original["b2"].data * 2)
    assert report.verification.ok


@pytest.mark.parametrize("wrong", [{1: 3.0}, {3: 3.0}, {5: 3.0}, {2: 3.0, 3: 3.0}, {2: 3.0, 4: 3.0}, {1: 3.0, 5: -1.0}])
def test_any_look_ahead_gives_the_outcome_of_checking_one_rewrite_at_a_time(monkeypatch, wrong):
    """With several rewrites staged on top of the first, whichever check fails (the first
    of the queue, one behind it, two in a row) the model, the report and every error are
    those of checking one rewrite at a time (LOOK_AHEAD = 1)."""
    import jaxfuse.passes.manager as manager
    outcomes = []
    for depth in (1, 2, 3, 5):
        monkeypatch.setattr(manager, "LOOK_AHEAD", depth)
        optimized, report = optimize(relu_conv_chain_model(6), [MoveAFactorAcross(wrong)])
        result = report.passes["test_move_a_factor_across"]
        outcomes.append((report.rewrites, result.rolled_back, result.fused, report.max_rewrite_error,
                         [op.outputs[0].name for op in optimized.main.ops],
                         [t.data.tobytes() for t in optimized.main.tensors if t.is_constant]))
        assert report.verification.ok
    assert outcomes[0][2] == 5 - len(wrong) and len(outcomes[0][1]) == len(wrong)
    for other in outcomes[1:]:
        assert other == outcomes[0]


def test_sample_errors_are_exact_where_the_arrays_own_type_overflows():
    from jaxfuse.numerics import sample_errors
    a = np.array([[3e38, 1.0], [1.0, 2.0]], np.float32)
    b = np.array([[-3e38, 1.0], [1.0, 2.5]], np.float32)
    error, scale, nonfinite = sample_errors(a, b)
    np.testing.assert_allclose(error, [6e38, 0.5], rtol=1e-6)
    np.testing.assert_allclose(scale, [3e38, 2.0], rtol=1e-6)
    assert list(nonfinite) == [0, 0]
    half = np.array([[60000.0, -1.0]], np.float16)
    assert sample_errors(half, -half)[0][0] == 120000.0  # beyond float16's range: computed in float64
    error, _, nonfinite = sample_errors(np.array([[np.nan, np.inf]], np.float32), np.array([[np.nan, 1.0]], np.float32))
    assert error[0] == np.inf and nonfinite[0] == 2


def test_wrong_rewrite_error_is_reported():
    _, report = optimize(conv_chain_model(), [DoubleTheWeights()])
    assert "check failed" in report.passes["test_double_the_weights"].rolled_back[0]["error"]


def test_verify_names_first_divergent_tensor():
    a = conv_chain_model()
    b = a.copy()
    conv = b.main.ops[0]
    b.main.private_input(conv, 2).set_data(np.full(4, 0.5, np.float32))
    report = compare(a, b)
    assert not report.ok
    assert report.first_divergent.name == "h"
    assert report.max_rel_error > 1e-3
    assert jaxfuse.verify(a, a.copy()).ok


def test_whole_model_failure_raises_with_report(monkeypatch):
    # Make the local check blind, so only the final whole-model check can catch the bad rewrite.
    import jaxfuse.equivalence as eq
    monkeypatch.setattr(eq.RunningCheck, "error", lambda *args, **kw: 0.0)
    with pytest.raises(VerificationError) as info:
        optimize(conv_chain_model(), [DoubleTheWeights()])
    assert info.value.report.verification.first_divergent.name == "h"


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="registered twice"):
        @register_pass
        class Again(Pass):
            name = "fuse_preactivation_batchnorm"
    with pytest.raises(ValueError, match="unknown pass 'no_such_pass'"):
        optimize(conv_chain_model(), ["no_such_pass"])
    assert "fuse_preactivation_batchnorm" in PASSES


def test_quantized_models_are_left_untouched():
    model = conv_chain_model()
    model.main.tensors[1].quantization = jaxfuse.Quantization(scale=np.array([0.1], np.float32),
                                                              zero_point=np.array([0]))
    optimized, report = optimize(model)
    assert report.ops_after == report.ops_before
    assert any("quantized" in note for note in report.notes)


class CrashWhileMatching(Pass):
    """A matcher with a bug: it raises before proposing anything."""
    name = "test_crash_while_matching"

    def propose(self, graph):
        raise RuntimeError("matcher bug")
        yield  # pragma: no cover  (makes this a generator)


def test_matcher_crash_is_reported_and_other_passes_still_run():
    model = conv_chain_model()
    optimized, report = optimize(model, [CrashWhileMatching(), DoubleTheWeights()])
    crash = report.passes["test_crash_while_matching"].rolled_back
    assert len(crash) == 1 and "matcher bug" in crash[0]["error"]
    assert len(report.passes["test_double_the_weights"].rolled_back) == 1  # it still ran (and was caught)
    assert [op.type for op in optimized.main.ops] == ["CONV_2D", "CONV_2D"]


def test_verify_treats_nan_on_both_sides_as_agreement_and_on_one_side_as_divergence():
    b = ModelBuilder()
    x = b.input("x", [1, 4])
    y = b.op("SQRT", [x], name="y")  # NaN wherever x < 0
    b.output(y)
    model = b.build()
    same = compare(model, model.copy(), num_samples=1)
    assert same.ok and same.max_rel_error == 0.0
    assert "NaN" in same.summary()
    other = model.copy()
    other.main.ops[0].opcode = jaxfuse.OpCode(jaxfuse.schema.BUILTIN_CODES["ABS"], 1)
    other.main.ops[0].options_type, other.main.ops[0].options = None, {}
    differs = compare(model, other, num_samples=1)
    assert not differs.ok and differs.max_rel_error == float("inf")


def test_channel_statistics_ignore_padding_sentinels_and_overflow():
    from jaxfuse.equivalence import channel_statistics
    x = np.array([[1.0, -np.inf], [3.0, 2.0], [-3.4e38, 4.0], [np.nan, np.inf]], np.float32)
    mean, std = channel_statistics(x)
    np.testing.assert_allclose(mean, [2.0, 3.0])
    np.testing.assert_allclose(std, [1.0, 1.0])
    assert channel_statistics(np.array([[1.0, -np.inf], [2.0, np.nan]], np.float32)) is None


def test_statistics_of_a_minus_infinity_pad_warn_nothing_and_feed_the_checks(recwarn):
    """PADV2(-inf) -> MAX_POOL_2D (litert-torch's stem): the padded tensor's statistics come
    from its finite cells, so every check still gets a realistic sample and numpy is quiet."""
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.input("x", [1, 6, 6, 3])
    y = b.op("CONV_2D", [x, b.const("w", rng.standard_normal([4, 1, 1, 3]).astype(np.float32)),
                         b.const("b", np.zeros(4, np.float32))])
    y = b.op("PADV2", [y, b.const("p", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32)),
                       b.const("v", np.array(-np.inf, np.float32))], name="padded")
    y = b.op("MAX_POOL_2D", [y], {"filterHeight": 3, "filterWidth": 3, "strideH": 2, "strideW": 2, "padding": 1})
    y = b.op("MUL", [y, b.const("g", rng.uniform(0.5, 1.5, 4).astype(np.float32))])
    y = b.op("ADD", [y, b.const("beta", rng.normal(size=4).astype(np.float32))], {"fusedActivationFunction": 1})
    b.output(b.op("CONV_2D", [y, b.const("w2", rng.standard_normal([2, 1, 1, 4]).astype(np.float32)),
                              b.const("b2", np.zeros(2, np.float32))]))
    _, report = optimize(b.build())
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert not [n for n in report.notes if "standard-normal samples only" in n]


def _count_reference_runs(monkeypatch):
    """How often compare runs the reference, and whether it took values computed before."""
    import jaxfuse.equivalence as eq
    calls = []
    paired = eq._paired_values

    def counting(run_a, run_b, batch_a, batch_b, labels_a, labels_b, known_a=None):
        calls.append(known_a is not None)
        return paired(run_a, run_b, batch_a, batch_b, labels_a, labels_b, known_a)
    monkeypatch.setattr(eq, "_paired_values", counting)
    return calls


@pytest.mark.parametrize("fixture", ["resnet50v2_tiny", "resnet50v2_tiny_f16"])
def test_the_final_check_takes_the_statistics_runs_values_with_the_same_outcome(monkeypatch, fixture):
    """The statistics run computes the reference on the final check's first chunk: the check
    takes those values instead of running the reference again, and reports what running it
    reports, number for number, with the same model written."""
    import os
    import jaxfuse.passes.manager as manager
    model = jaxfuse.load(os.path.join(os.path.dirname(__file__), "..", "examples", "models", f"{fixture}.tflite"))
    calls = _count_reference_runs(monkeypatch)
    optimized, report = optimize(model)
    assert calls == [True] and report.rewrites
    monkeypatch.setattr(manager, "HELD_VALUES_MIN_BYTES", -1)  # this fixture's activations outweigh its weights
    calls.clear()
    again, report_again = optimize(model)
    assert calls == [False]
    assert report.verification.to_dict() == report_again.verification.to_dict()
    assert report.rewrites == report_again.rewrites
    assert [t.data.tobytes() for t in optimized.main.tensors if t.is_constant] == \
        [t.data.tobytes() for t in again.main.tensors if t.is_constant]


def test_a_wrong_rewrite_is_caught_by_the_final_check_with_the_statistics_runs_values(monkeypatch):
    import jaxfuse.equivalence as eq
    monkeypatch.setattr(eq.RunningCheck, "error", lambda *args, **kw: 0.0)  # the local checks see nothing
    calls = _count_reference_runs(monkeypatch)
    with pytest.raises(VerificationError) as info:
        optimize(conv_chain_model(), [DoubleTheWeights()])
    assert calls == [True]
    assert info.value.report.verification.first_divergent.name == "h"


def test_compare_runs_the_reference_where_a_value_it_needs_was_let_go(monkeypatch):
    from jaxfuse.equivalence import activation_statistics
    from jaxfuse.lowering import tensor_keys
    from jaxfuse.samples import as_sample_set
    from jaxfuse.segmented import SegmentedRun
    model = conv_chain_model()
    candidate = model.copy()
    candidate.main.private_input(candidate.main.ops[1], 2).set_data(np.full(2, 1.5, np.float32))  # y differs
    samples = as_sample_set(jaxfuse.equivalence.random_inputs(model.main, 2), model.main.inputs)
    calls = _count_reference_runs(monkeypatch)
    expected = compare(model, candidate, samples, chunk=2).to_dict()
    assert calls == [False]
    for drop in (None, "h", "y"):
        run = SegmentedRun(model.main)
        values: dict = {}
        activation_statistics(model.main, samples[0], run=run, batch=samples.batch(0, 2), values=values)
        assert set(values) == set(tensor_keys(model.main)[id(t)] for t in model.main.tensors if not t.is_constant)
        if drop:
            del values[drop]
        calls.clear()
        assert compare(model, candidate, samples, chunk=2, reference_run=run, reference_values=values).to_dict() \
            == expected
        assert calls == [drop is None] and values == {}


def test_held_values_are_let_go_once_no_op_reads_or_writes_their_tensor():
    from jaxfuse.passes.manager import _let_go_of_replaced
    model = relu_conv_chain_model(3)
    graph = model.main
    held = {name: np.zeros((1, *t.shape), np.float32) for name, t in
            ((t.name, t) for t in graph.tensors if not t.is_constant)}
    graph.ops[1].outputs[0].name += "+moved"   # h1 replaced
    graph.ops[2].outputs[0].name += "+moved"   # h2 replaced, but it is the output: compared by position
    held["h0"] = np.zeros((1, 9), np.float32)  # another shape: not the same tensor
    _let_go_of_replaced(held, graph, {"h2"})
    assert sorted(held) == ["h2", "x"]
    _let_go_of_replaced(None, graph, set())  # nothing held: nothing to do


def test_values_are_held_only_where_the_final_check_would_compute_the_same_numbers(monkeypatch):
    """Only on one device and below MANY_SAMPLES does the final check run the reference with
    the statistics run's own programs; and only within the memory budget."""
    import jax
    import jaxfuse.passes.manager as manager
    from jaxfuse.equivalence import MANY_SAMPLES
    from jaxfuse.segmented import SegmentedRun
    graph = conv_chain_model().main
    run = SegmentedRun(graph)
    assert manager._holds_reference_values(graph, run, 2, 2)
    assert not manager._holds_reference_values(graph, run, MANY_SAMPLES, 2)
    monkeypatch.setattr(manager, "HELD_VALUES_MIN_BYTES", 0)  # its activations outweigh its weights
    assert not manager._holds_reference_values(graph, run, 2, 2)
    monkeypatch.undo()
    devices = jax.local_devices()
    monkeypatch.setattr(jax, "local_devices", lambda: devices * 2)
    assert not manager._holds_reference_values(graph, run, 2, 1)  # two chunks: two devices share them
    assert manager._holds_reference_values(graph, run, 2, 2)       # one chunk: one device computes it


class EditTheOptionsInPlace(Pass):
    """A wrong rewrite that edits the first conv's options dict in place, a nested list
    included: the rollback must give back the options as they were."""
    name = "test_edit_the_options_in_place"

    def propose(self, graph):
        conv = graph.ops[0]
        if conv.options.get("strideW") != 1:
            return

        def apply():
            conv.options["strideW"] = 2
            conv.options["strideH"] = 2
            conv.options["extra"].append(9)

        yield Rewrite(key=("edit",), where=conv.outputs[0].name, region=[conv], apply=apply, summary="stride 2")


def test_a_rolled_back_rewrite_gives_back_options_it_edited_in_place():
    model = conv_chain_model()
    model.main.ops[0].options["extra"] = [1, 2]
    before = {k: (list(v) if isinstance(v, list) else v) for k, v in model.main.ops[0].options.items()}
    optimized, report = optimize(model, [EditTheOptionsInPlace()])
    assert report.passes["test_edit_the_options_in_place"].rolled_back
    assert optimized.main.ops[0].options == before
