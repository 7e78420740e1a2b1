"""The `jaxfuse` command line: every bad input gives one clean line and exit 2; the good
paths (inspect, convert, run) report what the model holds and compute what JAX and LiteRT do.

Most cases call jaxfuse.cli.main(argv) in-process (fast); a handful go through
`python -m jaxfuse` in a subprocess to prove the real entry point end to end.
"""
from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import jaxfuse
import jaxfuse.summary
from jaxfuse import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "bad_inputs")
GOOD = os.path.join(CORPUS, "good.tflite")


def _import_make_corpus():
    spec = importlib.util.spec_from_file_location("make_corpus", os.path.join(CORPUS, "make_corpus.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_corpus = _import_make_corpus()


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    monkeypatch.delenv("JAXFUSE_DEBUG", raising=False)


def call(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith("jaxfuse: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment.lower() in err.lower(), (fragment, err)


def lower_or_skip():
    try:
        from jaxfuse.lowering import lower
    except ImportError:
        pytest.skip("jaxfuse.lowering is not available yet")
    return lower


# -- the bad-input corpus ------------------------------------------------------------------
def test_corpus_is_what_make_corpus_generates(tmp_path):
    make_corpus.main([str(tmp_path)])
    generated = sorted(os.listdir(tmp_path))
    committed = sorted(f for f in os.listdir(CORPUS) if f != "make_corpus.py" and not f.startswith(("_", ".")))
    assert generated == committed, "run tests/bad_inputs/make_corpus.py to regenerate the corpus"
    for name in generated:
        with open(tmp_path / name, "rb") as a, open(os.path.join(CORPUS, name), "rb") as b:
            assert a.read() == b.read(), f"{name} is stale: run tests/bad_inputs/make_corpus.py"


def _bad_model_path(name, tmp_path):
    if name == "missing.tflite":
        return str(tmp_path / "missing.tflite")
    if name == "a_directory.tflite":
        os.mkdir(tmp_path / name)
        return str(tmp_path / name)
    path = os.path.join(CORPUS, name)
    assert os.path.isfile(path), f"{name} missing from the corpus: run tests/bad_inputs/make_corpus.py"
    return path


BAD_CASES = [pytest.param(name, fragment, command, id=f"{command}-{name}")
             for name, (_, fragment, commands) in make_corpus.CASES.items() for command in commands]


@pytest.mark.parametrize("name, fragment, command", BAD_CASES)
def test_bad_model_gives_one_line_error_and_no_output(name, fragment, command, tmp_path, capsys):
    if command == "run" and name == "unsupported_op.tflite":
        lower_or_skip()
    model = _bad_model_path(name, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = {"inspect": ["inspect", model],
            "convert": ["convert", model, out_dir / "converted.circle"],
            "run": ["run", model, "-o", out_dir / "outputs.npz"]}[command]
    code, out, err = call(capsys, *argv)
    assert_one_line_error(code, err, fragment, name)
    assert out == ""
    assert os.listdir(out_dir) == []  # not even a temporary file


@pytest.mark.parametrize("name", [n for n, (_, _, commands) in make_corpus.CASES.items() if "inspect" not in commands])
def test_models_that_only_fail_to_run_still_inspect_and_convert(name, tmp_path, capsys):
    path = os.path.join(CORPUS, name)
    code, out, err = call(capsys, "inspect", "--json", path)
    assert code == 0, err
    assert "CUSTOM(JaxfuseNoSuchOp)" in json.loads(out)["op_histogram"]
    code, out, err = call(capsys, "convert", path, tmp_path / "copy.circle")
    assert code == 0, err


def test_bad_model_through_the_real_entry_point(tmp_path):
    path = os.path.join(CORPUS, "truncated_half.tflite")
    proc = subprocess.run([sys.executable, "-m", "jaxfuse", "convert", path, str(tmp_path / "x.circle")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (f"jaxfuse: error: {path}: truncated or corrupt model "
                           "(flatbuffer parse failed: an offset points past the end of the file)\n")
    assert os.listdir(tmp_path) == []


# -- inspect -------------------------------------------------------------------------------
def test_inspect_json_matches_the_model(capsys):
    code, out, err = call(capsys, "inspect", GOOD, "--json")
    assert code == 0 and err == ""
    info = json.loads(out)
    model = jaxfuse.load(GOOD)
    assert info["file"] == GOOD
    assert info["format"] == "tflite"
    assert info["op_histogram"] == model.op_histogram() == {"ADD": 2, "CONV_2D": 1}
    assert list(info["op_histogram"]) == ["ADD", "CONV_2D"]  # most frequent first
    assert info["subgraph_count"] == 1 and info["subgraphs"][0]["name"] == "main"
    assert info["tensor_count"] == len(model.main.tensors) == 8
    assert info["op_count"] == 3
    # w: 3*3*3*2 float32 = 216 bytes; b and c share one 12-byte buffer, counted once
    assert info["constant_parameter_bytes"] == 216 + 12 == model.parameter_bytes()
    assert info["constant_buffer_count"] == 2
    assert info["inputs"] == [
        {"name": "x", "shape": [1, 4, 4, 2], "shape_signature": None, "dtype": "float32", "quantized": False},
        {"name": "y", "shape": [1, 4, 4, 3], "shape_signature": None, "dtype": "float32", "quantized": False}]
    assert [(o["name"], o["shape"], o["dtype"]) for o in info["outputs"]] == [("out", [1, 4, 4, 3], "float32")]
    assert info["signature_defs"] == [{"key": "serving_default", "subgraph": 0,
                                       "inputs": {"x": "x", "y": "y"}, "outputs": {"output_0": "out"}}]
    assert info["metadata"] == [{"name": "min_runtime_version", "bytes": 16}]
    assert info["description"] == "jaxfuse test corpus: CONV_2D + 2 ADD"
    assert info["schema_version"] == 3
    # every key documented in --help is present, and nothing undocumented
    documented = {line.split()[0].rstrip(",") for line in cli.INSPECT_JSON_HELP.splitlines()[1:]
                  if line.startswith("  ") and not line.startswith("   ")}
    documented |= {"outputs"}
    assert set(info) == documented


def test_inspect_text(capsys):
    code, out, err = call(capsys, "inspect", GOOD)
    assert code == 0 and err == ""
    lines = [line.split() for line in out.splitlines()]
    assert ["format:", "tflite"] in lines
    assert ["ADD", "2"] in lines and ["CONV_2D", "1"] in lines
    assert ["x", "[1,", "4,", "4,", "2]", "float32"] in lines
    assert ["out", "[1,", "4,", "4,", "3]", "float32"] in lines
    assert "constants:    228 bytes in 2 distinct buffers" in out
    assert "serving_default (subgraph 0)" in out and "output_0 -> out" in out
    assert ["min_runtime_version", "16", "bytes"] in lines


def test_inspect_reports_circle_format(tmp_path, capsys):
    circle_path = tmp_path / "m.circle"
    assert call(capsys, "convert", GOOD, circle_path)[0] == 0
    code, out, _ = call(capsys, "inspect", "--json", circle_path)
    assert code == 0 and json.loads(out)["format"] == "circle"


# -- convert -------------------------------------------------------------------------------
def _structure(model):
    graphs = []
    for g in model.graphs:
        buffer_ids = {}
        graphs.append({
            "name": g.name,
            "tensors": [(t.name, t.shape, t.type, None if t.data is None else t.data.tobytes(),
                         None if t.buffer is None else buffer_ids.setdefault(id(t.buffer), len(buffer_ids)))
                        for t in g.tensors],
            "ops": [(op.type, [None if t is None else t.name for t in op.inputs], [t.name for t in op.outputs],
                     op.options_type, op.options) for op in g.ops],
            "inputs": [t.name for t in g.inputs], "outputs": [t.name for t in g.outputs]})
    return {"graphs": graphs, "version": model.version, "description": model.description,
            "metadata": model.metadata,
            "signatures": [(s.key, s.graph_index, [(k, t.name) for k, t in s.inputs],
                            [(k, t.name) for k, t in s.outputs]) for s in model.signatures]}


def test_convert_round_trip_keeps_the_structure(tmp_path, capsys):
    circle_path, back_path = tmp_path / "m.circle", tmp_path / "back.tflite"
    code, out, err = call(capsys, "convert", GOOD, circle_path)
    assert code == 0 and err == ""
    assert out == f"wrote {circle_path} (circle, {os.path.getsize(circle_path)} bytes) from {GOOD} (tflite)\n"
    assert circle_path.read_bytes()[4:8] == b"CIR0"
    code, out, err = call(capsys, "convert", circle_path, back_path)
    assert code == 0 and out.startswith(f"wrote {back_path} (tflite, ")
    assert back_path.read_bytes()[4:8] == b"TFL3"
    original, back = jaxfuse.load(GOOD), jaxfuse.load(back_path)
    assert _structure(back) == _structure(original)
    assert back.main.tensor("b").buffer is back.main.tensor("c").buffer  # sharing survives
    assert sorted(os.listdir(tmp_path)) == ["back.tflite", "m.circle"]  # no temporary files left


def test_convert_same_format_copy(tmp_path, capsys):
    copy = tmp_path / "copy.tflite"
    code, out, err = call(capsys, "convert", GOOD, copy)
    assert code == 0 and "(tflite, " in out
    assert _structure(jaxfuse.load(copy)) == _structure(jaxfuse.load(GOOD))


@pytest.mark.parametrize("target, fragments", [
    ("nodir/m.circle", ["does not exist", "nodir"]),
    ("m.onnx", ["extension", ".onnx"]),
    ("adir", ["is a directory", "adir"]),
])
def test_convert_bad_output_path(target, fragments, tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    code, out, err = call(capsys, "convert", GOOD, tmp_path / target)
    assert_one_line_error(code, err, *fragments)
    assert sorted(os.listdir(tmp_path)) == ["adir"] and os.listdir(tmp_path / "adir") == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_convert_into_read_only_directory(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        code, out, err = call(capsys, "convert", GOOD, locked / "m.circle")
        assert_one_line_error(code, err, "permission denied", "m.circle")
        assert os.listdir(locked) == []
    finally:
        locked.chmod(stat.S_IRWXU)


@pytest.mark.parametrize("command", ["convert", "run"])
def test_write_failure_leaves_nothing(command, tmp_path, capsys, monkeypatch):
    """A failure while the output is being written (disk full) leaves no partial file."""
    if command == "run":
        lower_or_skip()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", full_disk)  # the last step of both atomic writes
    out = tmp_path / ("m.circle" if command == "convert" else "o.npz")
    code, _, err = call(capsys, command, GOOD, *(["-o"] if command == "run" else []), out)
    assert_one_line_error(code, err, out.name, "no space left")
    assert os.listdir(tmp_path) == []


# -- run -----------------------------------------------------------------------------------
def _good_inputs(seed=1):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((1, 4, 4, 2)).astype(np.float32),
            "y": rng.standard_normal((1, 4, 4, 3)).astype(np.float32)}


def _reference(model_path, inputs):
    lower = lower_or_skip()
    model = jaxfuse.load(model_path)
    fn, params = lower(model)
    return [np.asarray(o) for o in fn(params, *[inputs[t.name] for t in model.main.inputs])]


def test_run_with_inputs_matches_lower_and_litert(tmp_path, capsys):
    lower_or_skip()
    inputs = _good_inputs()
    np.savez(tmp_path / "in.npz", **inputs)
    code, out, err = call(capsys, "run", GOOD, "--inputs", tmp_path / "in.npz", "-o", tmp_path / "out.npz")
    assert code == 0 and err == "", err
    with np.load(tmp_path / "out.npz") as saved:
        assert saved.files == ["out"]
        got = saved["out"]
    (want,) = _reference(GOOD, inputs)
    assert got.dtype == np.float32 and got.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=GOOD)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], inputs[detail["name"]])
    interpreter.invoke()
    litert = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, litert, rtol=1e-5, atol=1e-5)

    lines = out.splitlines()
    assert lines[0] == f"inputs: from {tmp_path / 'in.npz'}"
    assert lines[1].split()[:6] == ["out", "[1,", "4,", "4,", "3]", "float32"]
    assert f"min {got.min():.6g}  max {got.max():.6g}" in lines[1]
    assert lines[2] == f"wrote {tmp_path / 'out.npz'} (1 array)"
    assert sorted(os.listdir(tmp_path)) == ["in.npz", "out.npz"]


def test_run_random_inputs_are_seeded(tmp_path, capsys):
    lower_or_skip()
    model = jaxfuse.load(GOOD)
    for seed in (0, 7):
        code, out, err = call(capsys, "run", GOOD, "--seed", seed, "-o", tmp_path / f"s{seed}.npz")
        assert code == 0 and err == "", err
        assert out.startswith(f"inputs: random, seed {seed}\n")
        inputs = cli.random_inputs(model.main.inputs, seed)
        (want,) = _reference(GOOD, {t.name: a for t, a in zip(model.main.inputs, inputs)})
        with np.load(tmp_path / f"s{seed}.npz") as saved:
            np.testing.assert_allclose(saved["out"], want, rtol=1e-6, atol=1e-6)
    with np.load(tmp_path / "s0.npz") as a, np.load(tmp_path / "s7.npz") as b:
        assert not np.array_equal(a["out"], b["out"])
    code, out_again, _ = call(capsys, "run", GOOD)  # default seed 0, print only
    assert code == 0 and out_again.startswith("inputs: random, seed 0\n")
    assert sorted(os.listdir(tmp_path)) == ["s0.npz", "s7.npz"]


def test_random_inputs_by_dtype():
    shape = (2, 50)
    tensors = [jaxfuse.Tensor(f"t{code}", shape, code) for code in (0, 1, 2, 3, 6, 9)]  # f32 f16 i32 u8 bool i8
    arrays = cli.random_inputs(tensors, seed=3)
    assert [a.dtype for a in arrays] == [np.float32, np.float16, np.int32, np.uint8, np.bool_, np.int8]
    assert all(a.shape == shape for a in arrays)
    assert abs(float(arrays[0].mean())) < 0.5 and 0.5 < float(arrays[0].std()) < 1.5
    for a in arrays[2:4] + arrays[5:]:
        assert a.min() >= 0 and a.max() <= 9 and len(np.unique(a)) > 3
    assert arrays[4].any() and not arrays[4].all()
    again = cli.random_inputs(tensors, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(arrays, again))


def _npz_case(kind, path):
    good = _good_inputs()
    if kind == "missing_key":
        np.savez(path, x=good["x"])
    elif kind == "extra_key":
        np.savez(path, **good, z=good["x"])
    elif kind == "wrong_shape":
        np.savez(path, x=good["x"][..., :1], y=good["y"])
    elif kind == "wrong_dtype":
        np.savez(path, x=good["x"].astype(np.float64), y=good["y"])
    elif kind == "pickled":
        np.savez(path, x=np.array([object()], dtype=object), y=good["y"])
    elif kind == "npy":
        with open(path, "wb") as f:
            np.save(f, good["x"])
    elif kind == "text":
        path.write_text("x = 1\n")
    elif kind == "truncated":
        np.savez(path, **good)
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "missing_file":
        pass
    return path


NPZ_CASES = {
    "missing_key": ["missing input 'y'", "'x', 'y'"],
    "extra_key": ["unexpected array 'z'"],
    "wrong_shape": ["'x'", "shape [1, 4, 4, 1]", "expects [1, 4, 4, 2]"],
    "wrong_dtype": ["'x'", "dtype float64", "expects float32"],
    "pickled": ["'x'", "cannot be loaded"],
    "npy": [".npz"],
    "text": ["not a readable .npz"],
    "truncated": ["in.npz"],
    "missing_file": ["no such file"],
}


@pytest.mark.parametrize("kind", sorted(NPZ_CASES))
def test_run_bad_npz(kind, tmp_path, capsys):
    npz = _npz_case(kind, tmp_path / "in.npz")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = call(capsys, "run", GOOD, "--inputs", npz, "-o", out_dir / "out.npz")
    assert_one_line_error(code, err, "in.npz", *NPZ_CASES[kind])
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize("target, fragments", [
    ("nodir/out.npz", ["does not exist", "nodir"]),
    ("out.txt", ["extension '.txt'", ".npz"]),
    ("adir", ["is a directory"]),
])
def test_run_bad_output_path(target, fragments, tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    code, out, err = call(capsys, "run", GOOD, "-o", tmp_path / target)
    assert_one_line_error(code, err, *fragments)
    assert sorted(os.listdir(tmp_path)) == ["adir"] and os.listdir(tmp_path / "adir") == []


def test_write_npz_keeps_any_tensor_name(tmp_path):
    arrays = {"file": np.arange(3), "model/conv2d/Conv2D": np.ones((2, 2), np.float32), "allow_pickle": np.zeros(1)}
    cli.write_npz(str(tmp_path / "o.npz"), arrays)
    with np.load(tmp_path / "o.npz") as saved:
        assert sorted(saved.files) == sorted(arrays)
        for k, v in arrays.items():
            np.testing.assert_array_equal(saved[k], v)
    assert os.listdir(tmp_path) == ["o.npz"]


@pytest.mark.parametrize("command", [["optimize", "{bad}", "-o", "{out}"], ["verify", "{good}", "{bad}"],
                                     ["run", "{bad}"], ["optimize", "{corrupt}", "-o", "{out}"]])
def test_bad_model_through_the_real_entry_point_while_jax_starts(tmp_path, command):
    """optimize, verify and run start JAX on a thread while they read: a model that fails at
    once still ends in one line and status 2, however far that start has come."""
    paths = {"bad": str(tmp_path / "missing.tflite"), "good": GOOD, "out": str(tmp_path / "x.circle"),
             "corrupt": os.path.join(CORPUS, "truncated_half.tflite")}
    argv = [part.format(**paths) for part in command]
    for _ in range(3):  # the start is at a different point each time
        proc = subprocess.run([sys.executable, "-m", "jaxfuse", *argv], capture_output=True, text=True, cwd=ROOT,
                              timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("jaxfuse: error: "), proc.stderr
        assert os.listdir(tmp_path) == []


def test_run_end_to_end_subprocess(tmp_path):
    lower_or_skip()
    proc = subprocess.run([sys.executable, "-m", "jaxfuse", "run", GOOD, "-o", str(tmp_path / "o.npz")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].startswith("out  [1, 4, 4, 3]  float32  min ")
    with np.load(tmp_path / "o.npz") as saved:
        assert saved["out"].shape == (1, 4, 4, 3)


# -- help, version, usage, internal errors -------------------------------------------------
def test_version(capsys):
    code, out, _ = call(capsys, "--version")
    assert code == 0 and out == f"jaxfuse {jaxfuse.__version__}\n"


def test_version_and_help_subprocess():
    proc = subprocess.run([sys.executable, "-m", "jaxfuse", "--version"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout == f"jaxfuse {jaxfuse.__version__}\n"
    proc = subprocess.run([sys.executable, "-m", "jaxfuse", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0
    for text in ("inspect", "convert", "run", "exit status", "JAXFUSE_DEBUG"):
        assert text in proc.stdout


def test_top_level_help_documents_exit_codes(capsys):
    code, out, _ = call(capsys, "--help")
    assert code == 0
    for line in ("0  success", "1  verification failed", "2  bad input or usage", "3  internal error"):
        assert line in out


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_subcommand_help(command, capsys):
    code, out, err = call(capsys, command, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: jaxfuse {command} ")
    assert cli.COMMANDS[command].description.split("\n")[0] in out
    assert "exit status:" in out


def test_inspect_help_documents_json_keys(capsys):
    _, out, _ = call(capsys, "inspect", "--help")
    assert "constant_parameter_bytes" in out and "op_histogram" in out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["convert", GOOD], ["run", GOOD, "--seed", "x"],
                                  ["run", GOOD, "--seed", "1", "--inputs", "in.npz"]])
def test_usage_errors_exit_2(argv, capsys):
    code, out, err = call(capsys, *argv)
    assert code == 2
    assert "usage: jaxfuse" in err and "error:" in err and "Traceback" not in err


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        cli.register(cli.COMMANDS["inspect"])


def test_internal_error_exit_3(capsys, monkeypatch):
    def broken(*args):
        raise KeyError("oops")
    monkeypatch.setattr(jaxfuse.summary, "inspect", broken)  # the work behind `inspect`
    code, out, err = call(capsys, "inspect", GOOD)
    assert code == 3
    assert err.count("\n") == 1 and err.startswith("jaxfuse: internal error: KeyError: 'oops'")
    assert "JAXFUSE_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("JAXFUSE_DEBUG", "1")
    with pytest.raises(KeyError, match="oops"):
        cli.main(["inspect", GOOD])


def test_multiline_messages_are_joined(capsys, monkeypatch):
    def multiline(*args):
        raise jaxfuse.GraphError("first line\nsecond line")
    monkeypatch.setattr(jaxfuse.summary, "inspect", multiline)
    code, _, err = call(capsys, "inspect", GOOD)
    assert_one_line_error(code, err, "first line second line")


# -- data sets and scale-out arguments (tests/test_scale_out.py has the end-to-end checks) ------------------
@pytest.mark.parametrize("layout", ["stacked", "in place of batch"])
def test_run_over_samples_keeps_the_sample_axis(layout, tmp_path, capsys):
    lower_or_skip()
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((3, 1, 4, 4, 2)).astype(np.float32)
    ys = rng.standard_normal((3, 1, 4, 4, 3)).astype(np.float32)
    if layout == "stacked":
        np.savez(tmp_path / "in.npz", x=xs, y=ys)
    else:
        np.savez(tmp_path / "in.npz", x=xs[:, 0], y=ys[:, 0])
    code, out, err = call(capsys, "run", GOOD, "--inputs", tmp_path / "in.npz", "-o", tmp_path / "out.npz")
    assert code == 0 and err == "", err
    assert out.splitlines()[0] == f"inputs: from {tmp_path / 'in.npz'} (3 samples)"
    with np.load(tmp_path / "out.npz") as saved:
        got = saved["out"]
    assert got.shape == ((3, 1, 4, 4, 3) if layout == "stacked" else (3, 4, 4, 3))
    for i in range(3):
        (want,) = _reference(GOOD, {"x": xs[i], "y": ys[i]})
        np.testing.assert_allclose(got[i].reshape(want.shape), want, rtol=1e-5, atol=1e-6)


def test_verify_samples_option_and_bad_distributed_environment(tmp_path, capsys, monkeypatch):
    code, _, err = call(capsys, "verify", GOOD, GOOD, "--samples", "0")
    assert_one_line_error(code, err, "--samples")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    code, _, err = call(capsys, "verify", GOOD, GOOD, "--distributed")
    assert_one_line_error(code, err, "JAX_NUM_PROCESSES")


def test_verify_json_counts_the_samples_of_a_dataset(tmp_path, capsys):
    lower_or_skip()
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "in.npz", x=rng.standard_normal((5, 4, 4, 2)).astype(np.float32),
             y=rng.standard_normal((5, 4, 4, 3)).astype(np.float32))
    code, out, err = call(capsys, "verify", GOOD, GOOD, "--inputs", tmp_path / "in.npz", "--json")
    report = json.loads(out)
    assert code == 0 and report["samples"] == 5 and report["ok"] and report["devices"] >= 1
    assert {"p99_error", "worst_sample", "top1_agreement"} <= set(report["outputs"][0])


# -- the console script's exit -------------------------------------------------------------
TINY_RESNET = os.path.join(ROOT, "examples", "models", "resnet50v2_tiny.tflite")


def test_console_script_keeps_compiled_programs_between_runs(tmp_path):
    """`python -m jaxfuse` leaves without the interpreter's teardown (cli.leave): its output
    still arrives whole, and the programs it compiled are in the persistent cache, where
    a second run finds every one of them."""
    env = dict(os.environ, JAXFUSE_CACHE_DIR=str(tmp_path / "cache"), JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"))
    compilations = []
    for run in range(2):
        report = tmp_path / f"report{run}.json"
        proc = subprocess.run([sys.executable, "-m", "jaxfuse", "optimize", TINY_RESNET, "-o",
                               str(tmp_path / "fused.circle"), "--report", str(report)],
                              capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1].startswith("  time: read ")  # the last line was flushed
        compilations.append(json.loads(report.read_text())["compilation"])
    assert compilations[0]["compiled"] > 0 and compilations[0]["loaded"] == 0
    assert compilations[1]["loaded"] == compilations[1]["compiled"] == compilations[0]["compiled"]


def test_leave_flushes_output_waits_for_compilations_and_keeps_the_status(tmp_path):
    mark = tmp_path / "compiled"
    code = f"""
import numpy as np, jax.numpy as jnp
from jaxfuse import cli, programs
def f(x):
    for _ in range(300):
        x = jnp.sin(x) * 1.0001 + x
    return x
lowered, key = programs.PROGRAMS.lower(f, np.ones(8, np.float32))
programs.PROGRAMS.submit(lowered, key).add_done_callback(lambda done: open({str(mark)!r}, "w").close())
print("unflushed", end="")
cli.leave(5)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout to a pipe: block-buffered
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert proc.returncode == 5, proc.stderr
    assert proc.stdout == "unflushed"
    assert mark.exists()  # the compilation finished before the process ended
