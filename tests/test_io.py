"""Lossless reading and writing of .tflite / .circle, on the converter-made fixtures."""
import os
from pathlib import Path

import numpy as np
import pytest

import jaxfuse
from jaxfuse.io import ModelError, read_bytes, to_bytes
from jaxfuse.numerics import random_inputs
from multigraph_models import (accumulator, gated_accumulator, if_model, sparse_model, while_model,
                               zero_element_reshape)
from reference import litert_interpreter, requires_onert, run_litert, run_onert, run_onert_or_skip

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"
FIXTURES = sorted(MODELS.glob("*.tflite"))


def quantization_tuple(q):
    if q is None:
        return None
    arrays = [None if a is None else np.asarray(a).tolist() for a in (q.scale, q.zero_point, q.min, q.max)]
    return (*arrays, q.quantized_dimension)


def sparsity_tuple(s):
    if s is None:
        return None
    vector = (lambda a: None if a is None else (a.dtype.str, a.tolist()))
    return (s.traversal_order, s.block_map, [(d.format, d.dense_size, vector(d.array_segments), vector(d.array_indices))
                                             for d in s.dim_metadata])


def structure(model):
    """Everything a round trip must keep, as comparable plain data."""
    graphs = []
    for g in model.graphs:
        tensors = [(t.name, tuple(t.shape), t.type, t.shape_signature, t.is_variable,
                    quantization_tuple(t.quantization), None if not t.is_constant else t.buffer.data.tobytes(), sparsity_tuple(t.sparsity))
                   for t in g.tensors]
        index = {id(t): i for i, t in enumerate(g.tensors)}
        ops = [(op.type, op.opcode.version, op.options_type, op.options,
                [index[id(t)] if t is not None else -1 for t in op.inputs], [index[id(t)] for t in op.outputs])
               for op in g.ops]
        graphs.append((g.name, tensors, ops, [index[id(t)] for t in g.inputs], [index[id(t)] for t in g.outputs]))
    signatures = [(s.key, s.graph_index, [(k, t.name) for k, t in s.inputs], [(k, t.name) for k, t in s.outputs])
                  for s in model.signatures]
    return graphs, signatures, sorted(model.metadata), model.description, model.version


def sharing(model):
    """Which tensors share a buffer, as sets of tensor indices."""
    groups = {}
    for i, t in enumerate(model.main.tensors):
        if t.is_constant:
            groups.setdefault(id(t.buffer), []).append(i)
    return sorted(tuple(v) for v in groups.values())


def test_fixtures_exist():
    names = {p.stem for p in FIXTURES}
    assert {"resnet50v2_tiny", "resnet50v2_tiny_mixed", "resnet50v2_tiny_f16", "resnet50v2_tiny_offsets",
            "densenet_tiny", "mobilenetv2_tiny", "misc_ops_tiny"} <= names
    assert sum(p.stat().st_size for p in MODELS.iterdir()) < 5_000_000  # 4.7 MB with the transformer fixtures


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
@pytest.mark.parametrize("ext", [".tflite", ".circle"])
def test_round_trip_keeps_structure_and_constants(path, ext, tmp_path):
    original = jaxfuse.load(path)
    out = tmp_path / f"copy{ext}"
    jaxfuse.save(original, out)
    data = out.read_bytes()
    assert data[4:8] == (b"CIR0" if ext == ".circle" else b"TFL3")
    copy = jaxfuse.load(out)
    assert copy.file_format == ext[1:]
    assert structure(copy) == structure(original)
    assert sharing(copy) == sharing(original)
    # written twice, the bytes are identical (a deterministic writer)
    jaxfuse.save(copy, tmp_path / f"again{ext}")
    assert (tmp_path / f"again{ext}").read_bytes() == data


def test_offset_fixture_really_uses_offsets():
    from circle_schema.v0_10 import circle
    data = (MODELS / "resnet50v2_tiny_offsets.tflite").read_bytes()
    raw = circle.Model.Model.GetRootAs(data, 0)
    offsets = [raw.Buffers(i).Offset() for i in range(raw.BuffersLength())]
    assert sum(o > 1 for o in offsets) > 50
    # the same network as resnet50v2_tiny (layer names differ: keras numbers them per process)
    def constants(model):
        return sorted(t.buffer.data.tobytes() for t in model.main.tensors if t.is_constant)
    assert constants(jaxfuse.load(MODELS / "resnet50v2_tiny_offsets.tflite")) == \
        constants(jaxfuse.load(MODELS / "resnet50v2_tiny.tflite"))


def test_unused_buffers_are_dropped(tmp_path):
    model = jaxfuse.load(MODELS / "resnet50v2_tiny.tflite")
    g = model.main
    g.outputs = [g.ops[-2].outputs[0]]  # cut the softmax: its input tensors stay, the FC weights stay used
    model.signatures = []                # they name the softmax output, which is gone
    fc = g.ops[-2]
    g.cleanup()
    before = len(read_bytes(to_bytes(jaxfuse.load(MODELS / "resnet50v2_tiny.tflite"))).main.tensors)
    smaller = read_bytes(to_bytes(model))
    assert len(smaller.main.tensors) == before - 1 and fc.type == "FULLY_CONNECTED"
    # dropping an op whose weights nothing else reads removes those bytes
    g.outputs = [fc.inputs[0]]
    g.cleanup()
    assert len(to_bytes(model)) < (MODELS / "resnet50v2_tiny.tflite").stat().st_size - fc.inputs[1].buffer.nbytes + 1024


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_written_tflite_runs_in_litert_like_the_original(path, tmp_path):
    model = jaxfuse.load(path)
    x = random_inputs(model.main, 1, 3)[0]
    expected = run_litert(path, x)
    jaxfuse.save(model, tmp_path / "copy.tflite")
    for a, b in zip(run_litert(tmp_path / "copy.tflite", x), expected):
        np.testing.assert_array_equal(a, b)
    jaxfuse.save(model, tmp_path / "copy.circle")  # LiteRT runs circle files through a TFL3 copy
    for a, b in zip(run_litert(tmp_path / "copy.circle", x), expected):
        np.testing.assert_array_equal(a, b)


@requires_onert
@pytest.mark.parametrize("path", [p for p in FIXTURES if "offsets" not in p.stem], ids=lambda p: p.stem)
def test_written_files_run_in_onert_like_the_original(path, tmp_path):
    model = jaxfuse.load(path)
    x = random_inputs(model.main, 1, 3)[0]
    expected = run_onert_or_skip(path, x, f"the converter's original either ({model.op_histogram()})")
    for ext in (".circle", ".tflite"):
        jaxfuse.save(model, tmp_path / f"copy{ext}")
        for a, b in zip(run_onert(tmp_path / f"copy{ext}", x), expected):
            np.testing.assert_array_equal(a, b)


def test_writer_can_store_constants_after_the_flatbuffer(tmp_path):
    model = jaxfuse.load(MODELS / "resnet50v2_tiny.tflite")
    data = to_bytes(model, "tflite", buffer_offsets=True)
    again = read_bytes(data)
    assert structure(again)[0] == structure(model)[0]
    x = random_inputs(model.main, 1, 3)[0]
    for a, b in zip(run_litert(data, x), run_litert(MODELS / "resnet50v2_tiny.tflite", x)):
        np.testing.assert_array_equal(a, b)


def test_writer_output_does_not_depend_on_its_buffer_estimate(monkeypatch):
    """Constants are streamed into the layout, not copied into the builder; when the room
    reserved for the tables is too small the builder grows and the bytes stay the same."""
    import sys
    write = sys.modules["jaxfuse.io.write"]
    model = jaxfuse.load(MODELS / "misc_ops_tiny.tflite")
    expected = {(fmt, offsets): to_bytes(model, fmt, buffer_offsets=offsets)
                for fmt in ("tflite", "circle") for offsets in (False, True)}
    monkeypatch.setattr(write, "_TABLE_ROOM", 0)
    for fmt in ("tflite", "circle"):
        for offsets in (False, True):
            assert to_bytes(model, fmt, buffer_offsets=offsets) == expected[fmt, offsets]
    assert read_bytes(expected["tflite", False]).main.ops


def test_offset_buffer_past_the_end_is_a_clear_error():
    data = (MODELS / "resnet50v2_tiny_offsets.tflite").read_bytes()
    with pytest.raises(ModelError, match="past the end of the file"):
        read_bytes(data[: len(data) - 1000])


def test_save_is_atomic(tmp_path, monkeypatch):
    model = jaxfuse.load(MODELS / "mobilenetv2_tiny.tflite")
    target = tmp_path / "out.circle"

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        jaxfuse.save(model, target)
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_unknown_extension(tmp_path):
    model = jaxfuse.load(MODELS / "mobilenetv2_tiny.tflite")
    with pytest.raises(ValueError, match="unknown output extension"):
        jaxfuse.save(model, tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        jaxfuse.load(tmp_path / "missing.tflite")
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(ModelError, match="empty file"):
        jaxfuse.load(tmp_path / "empty.tflite")
    (tmp_path / "junk.circle").write_bytes(b"\x00" * 4 + b"ONNX" + b"\x00" * 100)
    with pytest.raises(ModelError, match="file identifier"):
        jaxfuse.load(tmp_path / "junk.circle")


MULTIGRAPH = {"accumulator": accumulator, "gated_accumulator": gated_accumulator, "if": if_model,
              "while": while_model, "sparse_csr": sparse_model,
              "sparse_block_f16": lambda: sparse_model(block=True, float16=True), "zero_element": zero_element_reshape}


def litert_steps(path, steps: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """The outputs of each step, invoked one after the other on one interpreter (variables persist)."""
    interp = litert_interpreter(path)
    results = []
    for inputs in steps:
        for d, x in zip(interp.get_input_details(), inputs):
            interp.set_tensor(d["index"], np.asarray(x, d["dtype"]))
        interp.invoke()
        results.append([np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()])
    return results


@pytest.mark.parametrize("name", MULTIGRAPH)
def test_convert_to_circle_and_back_keeps_subgraphs_variables_sparsity(name, tmp_path):
    """`jaxfuse convert` A.tflite -> B.circle -> C.tflite: the same subgraphs, ops, tensors, buffers,
    sparsity and variables, and LiteRT computes the same outputs from C, step after step."""
    from jaxfuse.cli import main
    a, b, c = tmp_path / "a.tflite", tmp_path / "b.circle", tmp_path / "c.tflite"
    jaxfuse.save(MULTIGRAPH[name](), a)
    assert main(["convert", str(a), str(b)]) == 0
    assert main(["convert", str(b), str(c)]) == 0
    original, via_circle, back = (jaxfuse.load(p) for p in (a, b, c))
    assert structure(via_circle) == structure(original) == structure(back)
    assert len(original.graphs) == {"if": 3, "while": 3, "accumulator": 2, "gated_accumulator": 4}.get(name, 1)
    rng = np.random.default_rng(1)
    steps = [[(rng.standard_normal(t.shape) * 3).astype(t.dtype) if t.dtype.kind == "f"
              else np.array(k % 2 == 0, t.dtype) for t in original.main.inputs] for k in range(4)]
    for want, got in zip(litert_steps(a, steps), litert_steps(c, steps)):
        for w, g in zip(want, got):
            np.testing.assert_array_equal(g, w)
