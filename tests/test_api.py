"""The Python API does what each command does, with the same figures: per command, the
function's report `to_dict()` against the command's --json / --report output, and its
`format_text()` against what the command prints."""
from __future__ import annotations

import json
import os
from importlib.util import find_spec

import numpy as np
import pytest

import jaxfuse

from test_cli_pins import GOOD, ROOT, call, requires_quantizer

MODELS = os.path.join(ROOT, "examples", "models")


def test_api_needs_no_jax_to_import_or_inspect():
    import subprocess
    import sys
    code = ("import sys, jaxfuse; s = jaxfuse.inspect(sys.argv[1]); "
            "assert 'jax' not in sys.modules, 'jax imported'; print(s.op_count)")
    proc = subprocess.run([sys.executable, "-c", code, GOOD], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "3\n", proc.stderr


def test_inspect_matches_the_command(capsys):
    report = jaxfuse.inspect(GOOD)
    code, out, _ = call(capsys, "inspect", GOOD, "--json")
    assert code == 0 and report.to_dict() == json.loads(out)
    code, out, _ = call(capsys, "inspect", GOOD)
    assert out == report.format_text() + "\n"
    assert jaxfuse.inspect(jaxfuse.load(GOOD), GOOD) == report  # a Model named by the caller


def test_run_matches_the_command(tmp_path, capsys):
    code, out, _ = call(capsys, "run", GOOD, "--seed", 4, "-o", tmp_path / "o.npz")
    assert code == 0
    (output,) = jaxfuse.run(GOOD, seed=4)
    with np.load(tmp_path / "o.npz") as saved:
        np.testing.assert_array_equal(saved["out"], output)
    from jaxfuse.running import run_report
    report = run_report(GOOD, seed=4)
    assert out.splitlines()[:2] == report.format_text().splitlines()
    (stats,) = report.to_dict()["outputs"]
    assert stats["min"] == pytest.approx(float(output.min())) and stats["shape"] == [1, 4, 4, 3]


def test_run_takes_one_sample_a_dict_or_several():
    from jaxfuse.samples import SampleError
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 4, 2)).astype(np.float32)
    y = rng.standard_normal((1, 4, 4, 3)).astype(np.float32)
    (one,) = jaxfuse.run(GOOD, [x, y])
    with pytest.raises(SampleError, match="1 array"):
        jaxfuse.run(GOOD, x)  # a bare array is the one input of a one-input model
    (named,) = jaxfuse.run(GOOD, {"y": y, "x": x})
    (both,) = jaxfuse.run(GOOD, [[x, y], [x * 2, y]])
    np.testing.assert_array_equal(one, named)
    assert both.shape == (2, 1, 4, 4, 3)
    np.testing.assert_allclose(both[0], one, rtol=1e-6, atol=1e-6)
    from jaxfuse.samples import SampleError
    with pytest.raises(SampleError, match="input 'x' has shape"):
        jaxfuse.run(GOOD, [x[0], y])
    with pytest.raises(SampleError, match="has dtype float64"):
        jaxfuse.run(GOOD, [x.astype(np.float64), y])


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory):
    """(float path, int8 path) of a 6-op model and its int8 version made by ai-edge-quantizer
    (quick to compile, unlike the int8 fixtures)."""
    if find_spec("ai_edge_quantizer") is None:
        pytest.skip("ai-edge-quantizer is not installed (pip install 'jaxfuse[quantize]')")
    from jaxfuse.quantization import quantize
    from test_quantize_and_verify import small_float_model
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("int8")
    jaxfuse.save(small_float_model(), folder / "small.tflite")
    (folder / "small_int8.tflite").write_bytes(quantize(small_float_model(), [
        [rng.standard_normal([1, 8, 8, 3]).astype(np.float32)] for _ in range(8)]).tflite_bytes)
    return str(folder / "small.tflite"), str(folder / "small_int8.tflite")


def test_run_quantizes_float_inputs_of_a_quantized_model(tmp_path, capsys, small_pair):
    from jaxfuse.numerics import quantize
    from reference import run_litert
    INT8 = small_pair[1]
    model = jaxfuse.load(INT8)
    tensor = model.main.inputs[0]
    real = np.random.default_rng(1).standard_normal(tuple(tensor.shape)).astype(np.float32)
    (out,) = jaxfuse.run(model, [real])
    (raw,) = jaxfuse.run(model, [quantize(real, tensor)], raw=True)
    (litert,) = run_litert(INT8, [quantize(real, tensor)])
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, raw)
    np.testing.assert_array_equal(out, litert)
    from jaxfuse.samples import SampleError
    with pytest.raises(SampleError, match="has dtype float32, the model expects int8"):
        jaxfuse.run(model, [real], raw=True)
    np.savez(tmp_path / "x.npz", **{tensor.name: real[None]})  # with a sample axis: the batched path
    code, text, err = call(capsys, "run", INT8, "--inputs", tmp_path / "x.npz", "-o", tmp_path / "y.npz")
    assert code == 0, err
    assert "(1 samples) (float values quantized with each input's scale and zero point)" in text.splitlines()[0]
    with np.load(tmp_path / "y.npz") as saved:
        np.testing.assert_array_equal(saved[model.main.outputs[0].name][0], out)


def test_verify_matches_the_command(capsys, small_pair):
    a, INT8 = small_pair
    report = jaxfuse.verify(a, INT8, num_samples=2)
    code, out, _ = call(capsys, "verify", a, INT8, "--json")
    assert code == (0 if report.ok else 1) and report.to_dict() == json.loads(out)
    code, out, _ = call(capsys, "verify", a, INT8)
    assert out == report.format_text(a, INT8) + "\n"


def _without_times(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("timings", "compilation")}


def test_optimize_matches_the_command(tmp_path, capsys):
    from test_preactivation import BETA, GAMMA, residual_block_model
    path = tmp_path / "m.tflite"
    jaxfuse.save(residual_block_model(GAMMA, BETA), path)
    optimized, report = jaxfuse.optimize(str(path))
    code, out, _ = call(capsys, "optimize", path, "-o", tmp_path / "f.tflite", "--report", tmp_path / "r.json")
    assert code == 0
    from jaxfuse.numerics import json_safe
    data = json.loads((tmp_path / "r.json").read_text())
    assert _without_times(json.loads(json.dumps(json_safe(report.to_dict())))) == _without_times(data)
    assert report.notes and report.notes[-1].startswith("1 ReLU(s) are now RELU ops of their own")
    printed = [line for line in out.splitlines() if not line.startswith("  XLA programs:")]  # compile counts vary
    assert [line for line in report.format_text().splitlines() if not line.startswith("  XLA programs:")] == \
        printed[1:-1]
    assert optimized.op_histogram() == jaxfuse.load(tmp_path / "f.tflite").op_histogram()


@requires_quantizer
def test_quantize_matches_the_command(tmp_path, capsys):
    from test_quantize_and_verify import small_float_model
    path = tmp_path / "f.tflite"
    jaxfuse.save(small_float_model(), path)
    quantized, report = jaxfuse.quantize(str(path), samples=3)
    code, out, _ = call(capsys, "quantize", path, "-o", tmp_path / "q.tflite", "--samples", 3,
                        "--report", tmp_path / "r.json")
    assert code == 0 and report.ok
    data = json.loads((tmp_path / "r.json").read_text())
    mine = report.to_dict()
    assert mine["output"] is None and data["output"] == str(tmp_path / "q.tflite")
    assert {k: v for k, v in mine.items() if k not in ("output", "timings")} == \
           {k: v for k, v in data.items() if k not in ("output", "timings")}
    assert out.splitlines()[1:-1] == report.format_text().splitlines()[1:-1]  # all but the paths and times
    assert quantized.op_histogram() == jaxfuse.load(tmp_path / "q.tflite").op_histogram()
    with pytest.raises(ValueError, match="is already quantized"):
        jaxfuse.quantize(quantized)


@requires_quantizer
def test_optimize_for_int8_matches_the_command(tmp_path, capsys):
    from test_preactivation import BETA, GAMMA, residual_block_model
    path = tmp_path / "m.tflite"
    jaxfuse.save(residual_block_model(GAMMA, BETA, tail=True), path)
    _, report = jaxfuse.optimize(str(path), target="int8", samples=4)
    code, out, _ = call(capsys, "optimize", path, "-o", tmp_path / "f.tflite", "--for", "int8", "--samples", 4,
                        "--report", tmp_path / "r.json")
    assert code == 0
    data = json.loads((tmp_path / "r.json").read_text())
    mine = report.to_dict()

    def figures(selection):
        return selection["chosen"], [(c["name"], c["ops"], c["sqnr_db"]) for c in selection["candidates"]]
    assert figures(mine["for"]) == figures(data["for"])
    assert mine["ops_after"] == data["ops_after"] and mine["passes"] == data["passes"]
    assert report.selection.format_text() in out


def test_bench_matches_the_command(capsys):
    report = jaxfuse.bench([GOOD, GOOD], rounds=2, warmup=0, min_seconds=0)
    code, out, _ = call(capsys, "bench", GOOD, GOOD, "--rounds", 2, "--warmup", 0, "--min-seconds", 0, "--json")
    assert code == 0
    data, mine = json.loads(out), report.to_dict()
    assert (mine["device"], mine["rounds"], list(mine["models"])) == (data["device"], data["rounds"],
                                                                     list(data["models"]))
    baseline = mine["models"][f"A:{GOOD}"]
    assert baseline["ratio_median"] == 1.0 and baseline["median_s"] > 0
    assert report.format_text().splitlines()[0] == (f"XLA on {mine['device']} ({report.platform}), 2 interleaved "
                                                    "rounds, each on fresh instances after 0 warm-up inference(s)")
