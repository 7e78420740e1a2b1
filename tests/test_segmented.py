"""Segment-by-segment evaluation (jaxfuse.segmented): the same values as the whole graph
in one jit, cuts only where they are safe, and the whole-model checks built on it."""
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxfuse
from jaxfuse import segmented
from jaxfuse.builder import ModelBuilder
from jaxfuse.equivalence import activation_statistics, compare, random_inputs
from jaxfuse.lowering import lower_graph, tensor_keys

MODELS = Path(__file__).parent.parent / "examples" / "models"


def whole_graph_values(graph, sample):
    fn, params = lower_graph(graph, all_tensors=True)
    return {k: np.asarray(v) for k, v in jax.jit(fn)(params, *sample).items()}


@pytest.mark.parametrize("name, max_ops", [("misc_ops_tiny", 1), ("densenet_tiny", 9), ("resnet50v2_tiny", 5)])
def test_segments_compute_every_tensor_the_whole_graph_does(name, max_ops):
    graph = jaxfuse.load(MODELS / f"{name}.tflite").main
    samples = random_inputs(graph, 2, seed=3)
    segments = segmented.plan_segments(graph, max_ops=max_ops)
    assert len(segments) > 1
    assert [op for s in segments for op in s.ops] == graph.ops
    got = [{}, {}]
    for per_sample in segmented.evaluate_in_segments(graph, samples, lambda key: True, max_ops=max_ops):
        for acc, values in zip(got, per_sample):
            assert not set(acc) & set(values)  # each tensor comes from exactly one segment
            acc.update(values)
    for sample, values in zip(samples, got):
        expected = whole_graph_values(graph, sample)
        assert set(values) == set(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(values[key], value, rtol=2e-5, atol=2e-6, err_msg=key)


def test_weight_budget_splits_segments_and_op_budget_is_respected():
    graph = jaxfuse.load(MODELS / "resnet50v2_tiny.tflite").main
    by_ops = segmented.plan_segments(graph, max_ops=10, max_weight_bytes=2**40)
    assert all(len(s.ops) <= 10 for s in by_ops)
    by_weight = segmented.plan_segments(graph, max_ops=10**6, max_weight_bytes=64 * 1024)
    for s in by_weight:
        weights = {id(t.buffer): t.buffer.nbytes for op in s.ops for t in op.inputs if t is not None and t.is_constant}
        assert len(s.ops) == 1 or sum(weights.values()) <= 64 * 1024
    assert len(by_weight) > 1


def reshape_by_computed_shape_model():
    """An integer tensor (a SHAPE result the RESHAPE needs at trace time) is alive across
    three ops: no cut may fall there."""
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.input("x", [1, 4, 4, 3])
    shape = b.op("SHAPE", [x], name="shape")
    w = b.const("w", rng.standard_normal((3, 1, 1, 3)).astype(np.float32))
    h = b.op("CONV_2D", [x, w, b.const("bias", np.zeros(3, np.float32))], name="h")
    h = b.op("RELU", [h], name="relu")
    h = b.op("FLOOR", [h], name="floor")
    y = b.op("RESHAPE", [h, shape], name="y")
    b.output(y)
    return b.build()


def test_no_cut_where_an_integer_tensor_is_alive():
    model = reshape_by_computed_shape_model()
    graph = model.main
    segments = segmented.plan_segments(graph, max_ops=1)
    keys = tensor_keys(graph)
    for s in segments:
        assert all(t.dtype.kind == "f" for t in s.inputs if t not in graph.inputs), [keys[id(t)] for t in s.inputs]
    # SHAPE..RESHAPE is one segment; the values still match the whole graph
    assert any({op.type for op in s.ops} >= {"SHAPE", "RESHAPE"} for s in segments)
    sample = random_inputs(graph, 1)[0]
    (got,), = [list(r) for r in segmented.evaluate_in_segments(graph, [sample], {"y"}.__contains__, max_ops=1)][-1:]
    np.testing.assert_allclose(got["y"], whole_graph_values(graph, sample)["y"], rtol=1e-6)


def test_integer_graph_input_read_late_does_not_stop_the_cuts():
    """Graph inputs are traced arguments, never static, so they may cross any cut."""
    rng = np.random.default_rng(1)
    b = ModelBuilder()
    x = b.input("x", [1, 4, 4, 3])
    index = b.input("index", [2], dtype=np.int32)
    h = x
    for i in range(4):
        w = b.const(f"w{i}", rng.standard_normal((3, 1, 1, 3)).astype(np.float32))
        h = b.op("CONV_2D", [h, w, b.const(f"b{i}", np.zeros(3, np.float32))], name=f"h{i}")
    y = b.op("GATHER", [h, index], {"axis": 3}, name="y")
    b.output(y)
    graph = b.build().main
    segments = segmented.plan_segments(graph, max_ops=1)
    assert len(segments) == len(graph.ops)
    sample = [rng.standard_normal((1, 4, 4, 3)).astype(np.float32), np.array([2, 0], np.int32)]
    last = list(segmented.evaluate_in_segments(graph, [sample], {"y"}.__contains__, max_ops=1))[-1]
    np.testing.assert_allclose(last[0]["y"], whole_graph_values(graph, sample)["y"], rtol=1e-6)


def test_graph_without_ops_yields_its_inputs():
    b = ModelBuilder()
    x = b.input("x", [1, 3])
    b.output(x)
    graph = b.build().main
    sample = [np.arange(3, dtype=np.float32).reshape(1, 3)]
    (result,) = list(segmented.evaluate_in_segments(graph, [sample], lambda key: True))
    np.testing.assert_array_equal(result[0]["x"], sample[0])


def test_statistics_match_the_whole_graph(monkeypatch):
    graph = jaxfuse.load(MODELS / "mobilenetv2_tiny.tflite").main
    sample = random_inputs(graph, 1, seed=1)[0]
    monkeypatch.setattr(segmented, "SEGMENT_MAX_OPS", 3)
    stats = activation_statistics(graph, sample)
    expected = whole_graph_values(graph, sample)
    float_tensors = {k for k, v in expected.items() if v.dtype.kind == "f" and v.ndim >= 1}
    assert set(stats) == float_tensors
    for key in float_tensors:
        v = expected[key].reshape(-1, expected[key].shape[-1])
        np.testing.assert_allclose(stats[key][0], v.mean(axis=0), rtol=1e-4, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(stats[key][1], v.std(axis=0), rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("max_ops", [3, 1000])
def test_compare_in_segments_finds_the_first_divergent_tensor(monkeypatch, max_ops):
    """A model and a copy whose fifth conv filter is perturbed: whatever the segment size,
    the report names that conv's output as the first divergent tensor."""
    monkeypatch.setattr(segmented, "SEGMENT_MAX_OPS", max_ops)
    model = jaxfuse.load(MODELS / "resnet50v2_tiny.tflite")
    same = compare(model, model.copy(), num_samples=2)
    assert same.ok and same.max_rel_error == 0.0 and same.compared_tensors > 100

    other = model.copy()
    convs = [op for op in other.main.ops if op.type == "CONV_2D"]
    target = convs[4]
    target.inputs[1].set_data(target.inputs[1].data * 1.01)
    differs = compare(model, other, num_samples=2)
    assert not differs.ok
    assert differs.first_divergent.name == target.outputs[0].name
    assert differs.outputs[0].rel_error > 1e-4


def test_compare_pairs_tensors_across_differently_ordered_graphs(monkeypatch):
    """The candidate computes the same tensors in another order (two independent branches
    swapped), so the lockstep run holds values from one side while the other catches up."""
    monkeypatch.setattr(segmented, "SEGMENT_MAX_OPS", 1)
    rng = np.random.default_rng(0)

    def build(swap):
        b = ModelBuilder()
        x = b.input("x", [1, 5, 5, 2])
        ws = [b.const(f"w{i}", rng.standard_normal((2, 1, 1, 2)).astype(np.float32)) for i in range(4)]
        zero = b.const("zero", np.zeros(2, np.float32))
        branches = {}
        for name in (["b", "a"] if swap else ["a", "b"]):
            i = 0 if name == "a" else 2
            h = b.op("CONV_2D", [x, ws[i], zero], name=f"{name}1")
            branches[name] = b.op("CONV_2D", [h, ws[i + 1], zero], name=f"{name}2")
        b.output(b.op("ADD", [branches["a"], branches["b"]], name="y"))
        return b.build()

    rng_state = rng.bit_generator.state
    a = build(swap=False)
    rng.bit_generator.state = rng_state
    b = build(swap=True)
    assert [op.outputs[0].name for op in a.main.ops] != [op.outputs[0].name for op in b.main.ops]
    report = compare(a, b, num_samples=2)
    assert report.ok and report.compared_tensors == 5 and report.max_rel_error < 1e-6


def test_repeated_blocks_become_segments_of_the_same_structure():
    """Cuts fall between residual blocks and a segment restarts where a block repeats, so a
    stage's middle blocks are segments with one structure (one program for all of them)."""
    graph = jaxfuse.load(MODELS / "resnet50v2_tiny.tflite").main
    segments = segmented.plan_segments(graph)
    assert [op for s in segments for op in s.ops] == graph.ops
    assert all(len(s.ops) <= segmented.SEGMENT_MAX_OPS for s in segments)
    keys = [segmented.structure_key(s.ops, s.inputs, [t for op in s.ops for t in op.outputs] + s.carry)[0]
            for s in segments]
    assert len(set(keys)) < len(keys)
    for s in segments[1:]:
        assert len([t for t in s.inputs if t not in graph.inputs]) == 1  # one tensor crosses each cut


def test_batches_are_sharded_over_devices_when_there_are_several():
    """A Placement over several devices shards the sample axis; over one it is plain."""
    devices = jax.devices()
    single = segmented.Placement(devices[:1])
    assert single.mesh is None and len(single) == 1
    x = single.put_batch(np.zeros((4, 2), np.float32))
    assert x.devices() == {devices[0]}
