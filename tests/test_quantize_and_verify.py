"""`jaxfuse quantize` (ai-edge-quantizer, then jaxfuse's own check) and `jaxfuse verify` on
quantized models: SQNR between a float model and its quantized version, LSBs between two
quantized ones."""
import json
from pathlib import Path
from importlib.util import find_spec

import numpy as np
import pytest

import jaxfuse
from jaxfuse import cli
from jaxfuse.builder import ModelBuilder
from jaxfuse.equivalence import MIXED, QUANTIZED, compare
from jaxfuse.numerics import random_inputs

requires_quantizer = pytest.mark.skipif(find_spec("ai_edge_quantizer") is None,
                                        reason="ai-edge-quantizer is not installed (pip install 'jaxfuse[quantize]')")


def small_float_model(seed=0):
    """conv(+ReLU) -> batch-norm-like MUL/ADD(+ReLU) -> spatial MEAN -> FC -> SOFTMAX."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.input("image", [1, 8, 8, 3])
    y = b.op("CONV_2D", [x, b.const("w", rng.standard_normal([8, 3, 3, 3]).astype(np.float32) * 0.3),
                         b.const("b", rng.standard_normal(8).astype(np.float32) * 0.1)],
             {"padding": 0, "fusedActivationFunction": 1})
    y = b.op("MUL", [y, b.const("gamma", rng.uniform(0.5, 1.5, 8).astype(np.float32))])
    y = b.op("ADD", [y, b.const("beta", rng.normal(0, 0.5, 8).astype(np.float32))], {"fusedActivationFunction": 1})
    y = b.op("MEAN", [y, b.const("axes", np.array([1, 2], np.int32))])
    y = b.op("FULLY_CONNECTED", [y, b.const("fc", rng.standard_normal([5, 8]).astype(np.float32) * 0.5),
                                 b.const("fc_b", np.zeros(5, np.float32))])
    b.output(b.op("SOFTMAX", [y], name="probs"))
    return b.build()


def call(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(float path, int8 path) of the small model quantized by `jaxfuse quantize`."""
    if find_spec("ai_edge_quantizer") is None:
        pytest.skip("ai-edge-quantizer is not installed (pip install 'jaxfuse[quantize]')")
    from jaxfuse.quantization import quantize
    folder = tmp_path_factory.mktemp("q")
    float_path, int8_path = folder / "float.tflite", folder / "int8.tflite"
    model = small_float_model()
    jaxfuse.save(model, float_path)
    rng = np.random.default_rng(1)
    calibration = [[rng.standard_normal([1, 8, 8, 3]).astype(np.float32)] for _ in range(16)]
    int8_path.write_bytes(quantize(model, calibration).tflite_bytes)
    return float_path, int8_path


@requires_quantizer
@pytest.mark.parametrize("suffix", [".tflite", ".circle"])
def test_quantize_writes_a_checked_int8_model(tmp_path, capsys, suffix, models):
    float_path, _ = models
    out, report = tmp_path / f"q{suffix}", tmp_path / "r.json"
    code, text, err = call(capsys, "quantize", float_path, "-o", out, "--samples", 6, "--report", report)
    assert code == 0, err
    assert err == ""  # the quantizer's own prints, progress bars and log lines stay out
    assert "6 seeded random sample(s)" in text and "--calibration" in text
    assert "SQNR" in text and "through LiteRT" in text
    quantized = jaxfuse.load(out)
    assert quantized.file_format == suffix[1:]
    assert quantized.main.inputs[0].dtype == np.int8 and quantized.main.inputs[0].is_quantized
    data = json.loads(report.read_text())
    assert data["scheme"] == "int8" and data["calibration_samples"] == 6
    check = data["check"]
    assert check["ok"] and check["samples"] == 6
    (output,) = check["outputs"]
    assert output["sqnr_db"] > 20 and abs(output["sqnr_db"] - output["litert_sqnr_db"]) < 0.5
    assert output["jaxfuse_vs_litert_max_lsb"] <= 1


@requires_quantizer
def test_quantize_calibration_file_with_a_sample_axis(tmp_path, capsys, models):
    float_path, _ = models
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "cal.npz", image=rng.standard_normal([5, 8, 8, 3]).astype(np.float32))
    code, text, err = call(capsys, "quantize", float_path, "-o", tmp_path / "q.tflite",
                           "--calibration", tmp_path / "cal.npz", "--scheme", "int16x8")
    assert code == 0, err
    assert f"5 sample(s) from {tmp_path / 'cal.npz'}" in text
    assert jaxfuse.load(tmp_path / "q.tflite").main.inputs[0].dtype == np.int16


@requires_quantizer
def test_quantize_below_min_sqnr_writes_nothing(tmp_path, capsys, models):
    float_path, _ = models
    code, text, err = call(capsys, "quantize", float_path, "-o", tmp_path / "q.tflite", "--samples", 4,
                           "--min-sqnr", 200)
    assert code == 1
    assert "below 200 dB" in err and not (tmp_path / "q.tflite").exists()
    assert "(nothing written)" in text


@requires_quantizer
@pytest.mark.parametrize("which,fragment", [("int8", "is already quantized"), ("bad_npz", "missing input 'image'")])
def test_quantize_bad_input(tmp_path, capsys, models, which, fragment):
    float_path, int8_path = models
    np.savez(tmp_path / "bad.npz", other=np.zeros(3))
    argv = ([int8_path] if which == "int8" else [float_path, "--calibration", tmp_path / "bad.npz"])
    code, _, err = call(capsys, "quantize", *argv, "-o", tmp_path / "q.tflite")
    assert code == 2 and err.count("\n") == 1 and fragment in err and "Traceback" not in err
    assert not (tmp_path / "q.tflite").exists()


@requires_quantizer
def test_verify_float_against_its_quantized_version(capsys, models):
    float_path, int8_path = models
    report = compare(jaxfuse.load(float_path), jaxfuse.load(int8_path), num_samples=3)
    assert report.mode == MIXED and report.ok and report.min_sqnr == 20
    (output,) = report.outputs
    assert output.kind == MIXED and 20 < output.sqnr_db < 80
    assert report.worst_tensors and report.worst_tensors == sorted(report.worst_tensors, key=lambda d: d.sqnr_db)
    code, text, _ = call(capsys, "verify", float_path, int8_path)
    assert code == 0 and "SQNR" in text and "lowest SQNR" in text
    code, _, _ = call(capsys, "verify", float_path, int8_path, "--min-sqnr", 150)
    assert code == 1


@requires_quantizer
def test_verify_two_quantized_models_in_lsb(tmp_path, capsys, models):
    _, int8_path = models
    model = jaxfuse.load(int8_path)
    code, text, _ = call(capsys, "verify", int8_path, int8_path, "--json")
    data = json.loads(text)
    assert code == 0 and data["mode"] == QUANTIZED and data["max_lsb"] == 1
    assert data["outputs"][0]["lsb_error"] == 0 and data["outputs"][0]["sqnr_db"] == "inf"
    # one conv weight moved by 40 steps: the conv output diverges first
    weights = model.main.tensor("w")
    changed = weights.data.copy()
    changed[0, 1, 1, 0] = np.clip(int(changed[0, 1, 1, 0]) + 40, -127, 127)
    weights.set_data(changed)
    jaxfuse.save(model, tmp_path / "perturbed.tflite")
    code, text, _ = call(capsys, "verify", int8_path, tmp_path / "perturbed.tflite", "--json")
    data = json.loads(text)
    assert code == 1 and not data["ok"]
    assert data["first_divergent"]["kind"] == QUANTIZED and data["first_divergent"]["lsb_error"] > 1
    code, _, _ = call(capsys, "verify", int8_path, tmp_path / "perturbed.tflite", "--max-lsb", 1000)
    assert code == 0


@requires_quantizer
def test_quantized_samples_carry_the_same_real_values(models):
    """verify feeds the candidate the reference's real values in its own input type."""
    float_path, int8_path = models
    a, b = jaxfuse.load(float_path), jaxfuse.load(int8_path)
    from jaxfuse.numerics import convert_sample, dequantize
    (x,) = random_inputs(a.main, 1, seed=4)[0]
    (q,) = convert_sample([x], a.main.inputs, b.main.inputs)
    assert q.dtype == np.int8
    step = float(b.main.inputs[0].quantization.scale[0])
    inside = np.abs(x) < 100 * step
    assert np.max(np.abs(dequantize(q, b.main.inputs[0]) - x)[inside]) <= step / 2 + 1e-7


def test_float_islands_of_a_quantized_model_are_judged_by_its_outputs():
    """ai-edge-quantizer leaves some ops float (the ViT's NEG) behind a DEQUANTIZE: against the
    float model those tensors carry the quantization's error, so they are no divergence; the
    outputs' SQNR judges the model. A float tensor computed before any quantized value still
    is not an island."""
    from jaxfuse.equivalence import _after_quantized
    models = Path(__file__).resolve().parents[1] / "examples" / "models"
    float_model = jaxfuse.load(models / "vit_tiny_mixed_logits.tflite")
    int8_model = jaxfuse.load(models / "vit_tiny_mixed_logits_int8.tflite")
    report = jaxfuse.verify(float_model, int8_model, min_sqnr=10)
    assert report.ok and report.first_divergent is None
    assert report.mode == "float-vs-quantized" and report.outputs[0].sqnr_db > 10
    islands = _after_quantized(int8_model.main)
    floats = [t for t in int8_model.main.tensors if id(t) in islands and t.dtype.kind == "f"]
    assert any(t.name.endswith("Neg") for t in floats)
    assert not any(id(t) in islands for t in int8_model.main.inputs)


@requires_quantizer
@pytest.mark.parametrize("scheme", ["int8", "int16x8"])
@pytest.mark.parametrize("stem", ["vit_tiny_timm_onnx2tf_mixed", "decoder_rms_tiny_litert_mixed"])
def test_quantized_transformers_run_as_litert_computes_them(stem, scheme):
    """timm's ViT (GELU, LayerNorm) and a LLaMA-style decoder (SiLU, RMSNorm, causal attention)
    quantized by ai-edge-quantizer: jaxfuse computes every output and every tensor as LiteRT's
    builtin kernels do (0 LSB; the int16 GELU and SiLU tables were one step off before)."""
    from jaxfuse.crosscheck import crosscheck
    from jaxfuse.quantizing import quantize
    model = jaxfuse.load(Path(__file__).resolve().parent.parent / "examples" / "models" / f"{stem}.tflite")
    quantized, _ = quantize(model, random_inputs(model.main, 8, 0), scheme=scheme)
    for seed in (0, 1):
        report = crosscheck(quantized, random_inputs(quantized.main, 1, seed)[0], max_lsb=0)
        assert report.agrees and not report.diverging, [c.name for c in report.diverging][:3]
