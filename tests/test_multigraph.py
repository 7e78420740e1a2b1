"""What LiteRT loads, jaxfuse loads and runs: resource variables (a stateful model as a pure step
function), IF / WHILE / CALL_ONCE across subgraphs, sparse constants (DENSIFY) and constants with
zero elements; and no optimize or cleanup ever drops an op with side effects."""
import flatbuffers
import jax
import numpy as np
import pytest
from circle_schema.v0_10 import circle

import jaxfuse
from jaxfuse.builder import ModelBuilder
from jaxfuse.cli import main
from jaxfuse.ir import GraphError
from jaxfuse.io import read_bytes, to_bytes
from jaxfuse.lowering import LoweringError, init_state, lower, lower_graph, resource_variables, run_steps
from jaxfuse.sparsity import DENSE, SPARSE_CSR, densify, sparsify
from multigraph_models import accumulator, if_model, sparse_model, while_model, zero_element_reshape
from reference import run_litert
from test_io import litert_steps


def stream(model, count, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(t.shape).astype(np.float32) for t in model.main.inputs] for _ in range(count)]


def test_stateful_model_runs_step_by_step_like_litert(tmp_path):
    model = accumulator()
    path = tmp_path / "acc.tflite"
    jaxfuse.save(model, path)
    steps = stream(model, 6)
    want = [out[0] for out in litert_steps(path, steps)]
    assert [v.key for v in resource_variables(model)] == ["acc", "steps"]
    initial = init_state(model)
    np.testing.assert_array_equal(initial[0], np.full((1, 4), 0.5, np.float32))  # what CALL_ONCE's subgraph assigns
    outputs, final = run_steps(model, [np.stack([s[0] for s in steps])])
    np.testing.assert_allclose(outputs[0], np.stack(want), rtol=1e-6, atol=1e-6)
    assert final[1].tolist() == [6]  # the int32 step counter
    # the lowered function itself: state in, state out, one call per step, under jit
    fn, params = lower(model)
    step = jax.jit(fn)
    state = initial
    for inputs, expected in zip(steps, want):
        y, *state = step(params, *inputs, *state)
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def test_stateful_step_function_vmaps_over_independent_streams():
    model = accumulator()
    fn, params = lower(model)
    streams = np.stack([np.stack([s[0] for s in stream(model, 3, seed)]) for seed in range(4)])  # [stream, step, ...]
    state = tuple(np.broadcast_to(v, (4, *v.shape)) for v in init_state(model))
    batched = jax.jit(jax.vmap(fn, in_axes=(None, 0, 0, 0)))
    for k in range(3):
        y, *state = batched(params, streams[:, k], *state)
    for i in range(4):
        alone, _ = run_steps(model, [streams[i]])
        np.testing.assert_allclose(y[i], alone[0][-1], rtol=1e-6)


def test_stateless_model_keeps_its_signature():
    fn, params = lower(sparse_model())
    (y,) = fn(params, np.ones((2, 6), np.float32))
    assert y.shape == (2, 8)


def test_run_feeds_the_samples_as_steps_in_order(tmp_path, capsys):
    model = accumulator()
    path, feeds, out = tmp_path / "acc.tflite", tmp_path / "steps.npz", tmp_path / "out.npz"
    jaxfuse.save(model, path)
    steps = stream(model, 5)
    np.savez(feeds, x=np.stack([s[0] for s in steps]))
    assert main(["run", str(path), "--inputs", str(feeds), "-o", str(out)]) == 0
    want = np.stack([o[0] for o in litert_steps(path, steps)])
    np.testing.assert_allclose(np.load(out)["y"], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("flag", [True, False])
def test_if_runs_the_branch_litert_runs(flag):
    model = if_model()
    x = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)
    want = run_litert(to_bytes(model), [x, np.array(flag)])
    fn, params = lower(model)
    np.testing.assert_allclose(jax.jit(fn)(params, x, np.array(flag))[0], want[0], rtol=1e-6)
    np.testing.assert_allclose(fn(params, x, np.array(flag))[0], want[0], rtol=1e-6)  # cond known: one branch


def test_while_loops_like_litert():
    model = while_model()
    x = np.array([[0.3, 1.5, 0.2]], np.float32)
    want = run_litert(to_bytes(model), [x])
    fn, params = lower(model)
    got = jax.jit(fn)(params, x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    assert int(got[1][0]) == int(want[1][0]) == 6


def test_a_graph_lowered_alone_refuses_control_flow_in_one_line():
    with pytest.raises(LoweringError, match=r"op 0 \(IF, output 'y'\): needs the whole model"):
        fn, params = lower_graph(if_model().main)
        fn(params, np.ones((2, 3), np.float32), np.array(True))


@pytest.mark.parametrize("kind", [{}, {"block": True}, {"float16": True}])
def test_sparse_weights_densify_like_litert(kind):
    model = sparse_model(**kind)
    stored = model.main.tensor("w_sparse")
    assert stored.buffer.nbytes < np.prod(stored.shape) * stored.dtype.itemsize  # only the non-zeros are stored
    x = np.random.default_rng(4).standard_normal((2, 6)).astype(np.float32)
    want = run_litert(to_bytes(model), [x])[0]
    fn, params = lower(model)
    got = np.asarray(jax.jit(fn)(params, x)[0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_sparsify_and_densify_are_inverse_in_every_layout():
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((4, 6, 8)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.7] = 0
    for formats in ([DENSE, DENSE, SPARSE_CSR], [SPARSE_CSR, DENSE, SPARSE_CSR], [SPARSE_CSR] * 3):
        for order in (None, [2, 0, 1]):
            values, sparsity = sparsify(dense, formats, traversal_order=order)
            assert values.size < dense.size
            np.testing.assert_array_equal(densify(values, dense.shape, sparsity), dense)
    blocks = np.kron(rng.random((3, 2)) < 0.5, np.ones((2, 4))) * rng.standard_normal((6, 8))
    values, sparsity = sparsify(blocks, [DENSE, SPARSE_CSR, DENSE, DENSE], block_map=[0, 1], block_sizes=[2, 4])
    np.testing.assert_array_equal(densify(values, blocks.shape, sparsity), blocks)


def test_sparse_constant_is_sized_by_its_stored_values():
    model = sparse_model()
    data = to_bytes(model)
    assert read_bytes(data).main.tensor("w_sparse").data.shape == (8, 6)
    stored = model.main.tensor("w_sparse")
    count = stored.stored_elements
    stored.buffer = jaxfuse.Buffer(np.zeros(count + 1, np.float32))
    with pytest.raises(GraphError, match=rf"'w_sparse' of shape \[8, 6\] \({count} stored values\) needs "
                                         rf"{4 * count} bytes, its buffer has {4 * count + 4}"):
        model.validate()
    broken = read_bytes(data)
    level = broken.main.tensor("w_sparse").sparsity.dim_metadata[1]
    level.array_indices = level.array_indices.copy()
    level.array_indices[0] = 200
    with pytest.raises(GraphError, match="'w_sparse': sparsity: level 1: an index lies outside 0..5"):
        broken.validate()


def test_zero_element_constant_is_a_constant_not_a_missing_activation():
    model = read_bytes(to_bytes(zero_element_reshape()))
    target = model.main.tensor("shape_empty")
    assert target.is_constant and target.buffer.nbytes == 0 and target.data.shape == (0,)
    model.validate()
    x = np.array([1.5], np.float32)
    fn, params = lower(model)
    np.testing.assert_array_equal(fn(params, x)[0], run_litert(to_bytes(model), [x])[0])


def test_cleanup_keeps_side_effects():
    model = accumulator()
    before = [op.type for g in model.graphs for op in g.ops]
    for g in model.graphs:
        g.cleanup()
    assert [op.type for g in model.graphs for op in g.ops] == before
    assert before.count("ASSIGN_VARIABLE") == 4 and "CALL_ONCE" in before


@pytest.mark.parametrize("projected", [False, True])
def test_optimize_never_harms_a_stateful_model(projected, tmp_path):
    """`jaxfuse optimize` on a model with resource variables keeps every op with a side effect
    (ASSIGN_VARIABLE, CALL_ONCE) and the init subgraph; a rewrite before the variables
    (FULLY_CONNECTED -> MUL by a constant) is checked on its own and applied, one without
    any leaves the model as it was; LiteRT computes the same outputs over several steps."""
    path, out = tmp_path / "acc.tflite", tmp_path / "acc_opt.tflite"
    model = accumulator(projected=projected)
    jaxfuse.save(model, path)
    assert main(["optimize", str(path), "-o", str(out)]) == 0
    optimized = jaxfuse.load(out)

    def wiring(m):
        return [[(op.type, [t.name if t else None for t in op.inputs], [t.name for t in op.outputs]) for op in g.ops]
                for g in m.graphs]
    before, after = wiring(model), wiring(optimized)
    if projected:  # the MUL folded into the FULLY_CONNECTED, which now writes the MUL's output
        assert [op for op in before[0] if op[0] != "MUL" or op[2] != ["x_scaled"]][1:] == after[0][1:]
        assert after[0][0] == ("FULLY_CONNECTED", ["x", after[0][0][1][1], after[0][0][1][2]], ["x_scaled"])
        assert before[1:] == after[1:]
    else:
        assert after == before
    steps = stream(model, 4)
    for want, got in zip(litert_steps(path, steps), litert_steps(out, steps)):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5 * np.abs(want[0]).max())


def test_a_variable_assigned_inside_a_branch_carries_over_like_litert(tmp_path):
    from multigraph_models import gated_accumulator
    model = gated_accumulator()
    path = tmp_path / "gated.tflite"
    jaxfuse.save(model, path)
    rng = np.random.default_rng(7)
    flags = [True, False, True, True, False, True]
    steps = [[rng.standard_normal((1, 4)).astype(np.float32), np.array(f)] for f in flags]
    want = np.stack([o[0] for o in litert_steps(path, steps)])
    outputs, (acc,) = run_steps(model, [np.stack([s[0] for s in steps]), np.array(flags)])
    np.testing.assert_allclose(outputs[0], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(acc, 1 + sum(s[0] for s, f in zip(steps, flags) if f), rtol=1e-6)


def test_sparse_weights_read_directly_by_fully_connected_like_litert():
    """LiteRT's FULLY_CONNECTED reads 1x4 block-sparse weights without a DENSIFY; so does the lowering
    (Tensor.data of a sparse constant is its dense value)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 16)).astype(np.float32)
    w[:, 4:8] = 0
    w[2:5, 8:16] = 0
    values, sparsity = sparsify(w, [DENSE, SPARSE_CSR, DENSE], block_map=[1], block_sizes=[4])
    b = ModelBuilder()
    x = b.input("x", [2, 16])
    weights = b.const("w", values)
    weights.shape, weights.sparsity = (8, 16), sparsity
    b.output(b.op("FULLY_CONNECTED", [x, weights, None], output_shape=(2, 8), dtype=np.float32, name="y"))
    model = read_bytes(to_bytes(b.build()))
    xs = rng.standard_normal((2, 16)).astype(np.float32)
    want = run_litert(to_bytes(model), [xs])[0]
    fn, params = lower(model)
    np.testing.assert_allclose(fn(params, xs)[0], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(want, xs @ w.T, rtol=1e-5, atol=1e-5)


def test_zero_element_tensor_on_buffer_0_is_read_as_a_constant_too():
    """Some writers leave an empty RESHAPE target on the shared empty buffer 0; LiteRT runs it, so it loads."""
    data = to_bytes(zero_element_reshape())
    raw = circle.Model.ModelT.InitFromPackedBuf(data, 0)
    names = [t.name.decode() for t in raw.subgraphs[0].tensors]
    raw.subgraphs[0].tensors[names.index("shape_empty")].buffer = 0
    builder = flatbuffers.Builder(0)
    builder.Finish(raw.Pack(builder), file_identifier=b"TFL3")
    moved = bytes(builder.Output())
    model = read_bytes(moved)
    assert model.main.tensor("shape_empty").is_constant
    x = np.array([2.5], np.float32)
    fn, params = lower(model.validate())
    np.testing.assert_array_equal(fn(params, x)[0], run_litert(moved, [x])[0])
