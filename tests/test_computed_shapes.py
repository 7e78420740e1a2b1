"""Shapes are computed at the data's shapes, not read from the file (jaxfuse.shapes): a
dynamic input (-1 in its shape signature) runs, verifies and optimizes at the shape of the
data given, and a tensor whose stored shape is wrong (a PAD whose paddings give another
size) gets its real shape, as LiteRT computes it."""
import numpy as np
import pytest

import jaxfuse
from jaxfuse.builder import ModelBuilder
from jaxfuse.cli import main
from jaxfuse.equivalence import compare
from jaxfuse.passes import optimize
from jaxfuse.shapes import at_input_shapes
from reference import relative_error, run_litert

VALID = 1


def _dynamic_model(rng) -> jaxfuse.Model:
    """x [-1, -1] (stored [1, 1], as a converter writes a dynamic input) -> framing conv
    (width 4, stride 2, VALID: at the stored width 1 the frames are empty) -> RELU ->
    REDUCE_MAX over the frames. Built at width 16, then the shapes are stored as the file
    from the issue has them: one instance that does not even run."""
    b = ModelBuilder()
    x = b.input("x", [1, 16])
    e = b.op("RESHAPE", [x, b.const("to", np.array([1, 1, -1, 1], np.int32))], name="framed_in")
    w = b.const("w", rng.standard_normal((8, 1, 4, 1)).astype(np.float32))
    c = b.op("CONV_2D", [e, w, b.const("bias", rng.standard_normal(8).astype(np.float32))],
             {"padding": VALID, "strideW": 2}, name="frames")
    r = b.op("RELU", [c], name="relu")
    b.output(b.op("REDUCE_MAX", [r, b.const("axes", np.array([2], np.int32))], name="peak"))
    model = b.build()
    for t in model.main.tensors:
        if not t.is_constant:
            t.shape_signature = tuple(-1 if t.name == "x" or d not in (1, 8) else d for d in t.shape)
    x = model.main.inputs[0]
    x.shape, x.shape_signature = (1, 1), (-1, -1)
    for name, stored in (("framed_in", (1, 1, 1, 1)), ("frames", (1, 1, 1, 8)), ("relu", (1, 1, 1, 8))):
        t = model.main.tensor(name)
        t.shape = stored
        t.shape_signature = (-1, 1, -1, 8) if name != "framed_in" else (-1, 1, -1, 1)
    return model


@pytest.fixture
def dynamic(tmp_path, rng):
    path = tmp_path / "dynamic.tflite"
    jaxfuse.save(_dynamic_model(rng), path)
    x = rng.standard_normal((1, 40)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    return path, tmp_path / "x.npz", x


def test_dynamic_input_runs_at_the_datas_shape_as_litert_does(dynamic, tmp_path, capsys):
    path, npz, x = dynamic
    expected = run_litert(path, [x])[0]  # resize_tensor_input, then LiteRT recomputes every shape
    assert expected.shape == (1, 1, 8)
    assert main(["run", str(path), "--inputs", str(npz), "-o", str(tmp_path / "out.npz")]) == 0
    assert relative_error(np.load(tmp_path / "out.npz")["peak"], expected) < 1e-6
    shaped = at_input_shapes(jaxfuse.load(path), [(1, 40)]).main
    assert shaped.tensor("frames").shape == (1, 1, 19, 8) and shaped.tensor("frames").shape_signature == (-1, 1, -1, 8)
    assert shaped.inputs[0].shape_signature == (-1, -1)


def test_dynamic_input_verifies_and_optimizes_at_the_datas_shape(dynamic, tmp_path, capsys):
    path, npz, x = dynamic
    assert main(["verify", str(path), str(path), "--inputs", str(npz)]) == 0
    assert "equivalent" in capsys.readouterr().out
    out = tmp_path / "fused.tflite"
    assert main(["optimize", str(path), "-o", str(out), "--inputs", str(npz)]) == 0
    fused = jaxfuse.load(out)
    assert "RELU" not in fused.op_histogram()  # fused into the conv, checked at the data's shape
    assert fused.main.inputs[0].shape_signature == (-1, -1)
    assert relative_error(run_litert(out, [x])[0], run_litert(path, [x])[0]) < 1e-6
    # written at the data's instance of the dynamic shape: it still verifies against the original
    assert main(["verify", str(path), str(out), "--inputs", str(npz)]) == 0
    np.savez(tmp_path / "other.npz", x=x[:, :24])
    assert main(["verify", str(path), str(out), "--inputs", str(tmp_path / "other.npz")]) == 0


def test_dynamic_input_at_a_stored_shape_that_cannot_run_is_refused_in_one_line(dynamic, capsys):
    path, _, _ = dynamic
    assert main(["verify", str(path), str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "dynamic inputs ('x' [-1, -1] (stored as [1, 1]))" in err and "give inputs of the shape" in err
    assert "REDUCE_MAX" in err  # where it breaks
    assert main(["run", str(path)]) == 2  # random inputs take the stored [1, 1] too
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "REDUCE_MAX" in err
    assert "dynamic input(s) x: give --inputs of a size the model runs at" in err


def test_samples_of_another_size_only_in_a_dynamic_dimension(dynamic, tmp_path, capsys):
    path, _, x = dynamic
    np.savez(tmp_path / "stacked.npz", x=np.stack([x, x]))  # [N, 1, 40]: two samples of [1, 40]
    assert main(["verify", str(path), str(path), "--inputs", str(tmp_path / "stacked.npz")]) == 0
    assert "2 sample(s)" in capsys.readouterr().out
    np.savez(tmp_path / "rank.npz", x=x[0])  # rank 1: no dimension of the model takes that
    assert main(["verify", str(path), str(path), "--inputs", str(tmp_path / "rank.npz")]) == 2
    assert "the model expects [-1, -1] (-1: any size)" in capsys.readouterr().err


def _padded_model(rng, stored=(1, 5, 5, 2)) -> jaxfuse.Model:
    """x [1, 4, 4, 2] -> PAD 1 on each side of H and W (real shape [1, 6, 6, 2], stored as
    `stored`) -> conv 3x3 VALID -> RELU -> output [1, 4, 4, 3] (stored [1, 3, 3, 3])."""
    b = ModelBuilder()
    x = b.input("x", [1, 4, 4, 2])
    p = b.op("PAD", [x, b.const("paddings", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32))], name="padded")
    w = b.const("w", rng.standard_normal((3, 3, 3, 2)).astype(np.float32))
    c = b.op("CONV_2D", [p, w, b.const("bias", rng.standard_normal(3).astype(np.float32))], {"padding": VALID},
             name="conv")
    b.output(b.op("RELU", [c], name="relu"))
    model = b.build()
    model.main.tensor("padded").shape = stored
    for name in ("conv", "relu"):
        model.main.tensor(name).shape = (1, 3, 3, 3)
    return model


@pytest.mark.parametrize("stored", [(1, 5, 5, 2), ()], ids=["wrong", "unknown"])
def test_wrongly_stored_shapes_are_computed(stored, tmp_path, rng, capsys):
    path = tmp_path / "pad.tflite"
    jaxfuse.save(_padded_model(rng, stored), path)
    x = rng.standard_normal((1, 4, 4, 2)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    expected = run_litert(path, [x])[0]
    assert expected.shape == (1, 4, 4, 3)
    assert main(["run", str(path), "--inputs", str(tmp_path / "x.npz"), "-o", str(tmp_path / "o.npz")]) == 0
    assert relative_error(np.load(tmp_path / "o.npz")["relu"], expected) < 1e-6
    assert main(["verify", str(path), str(path)]) == 0
    out = tmp_path / "fused.tflite"
    assert main(["optimize", str(path), "-o", str(out)]) == 0
    assert "1 fused" in capsys.readouterr().out
    fused = jaxfuse.load(out)
    assert fused.main.tensor("padded").shape == (1, 6, 6, 2)  # written with the real shape
    assert relative_error(run_litert(out, [x])[0], expected) < 1e-6


def test_compare_and_optimize_leave_the_callers_model_alone(rng):
    model = _padded_model(rng)
    assert compare(model, model).ok
    _, report = optimize(model)
    assert report.rewrites and model.main.tensor("padded").shape == (1, 5, 5, 2)


def test_a_shape_known_while_tracing_is_no_divergence(rng):
    """A SHAPE of an activation is known while tracing, so no program computes it: the whole-model
    check compares the tensors the runs compute and leaves such values out (it reported them as an
    infinite error, and optimize of BirdNET's STFT front end failed)."""
    b = ModelBuilder()
    x = b.input("x", [1, 6, 6, 3])
    w = b.const("w", rng.standard_normal([4, 1, 1, 3]).astype(np.float32))
    c = b.op("CONV_2D", [x, w, b.const("bias", np.zeros([4], np.float32))], {"padding": 1})
    m = b.op("MUL", [c, b.const("s", rng.uniform(0.5, 2, [4]).astype(np.float32))])
    shape = b.op("SHAPE", [m], dtype=np.int32)
    b.output(b.op("RESHAPE", [m, shape]))
    model = b.build()
    fused, report = jaxfuse.optimize(model)
    assert report.ops_after == report.ops_before - 1 and report.verification.ok
    assert report.verification.first_divergent is None
