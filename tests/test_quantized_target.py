"""`optimize --for int8`: candidates measured after quantization, the choice, the CLI, and the
note a float-target optimize gives when its output would run slower in int8."""
import json
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

import jaxfuse
from jaxfuse import cli
from jaxfuse.builder import ModelBuilder
from jaxfuse.quantized_target import Candidate, choose, optimize_for_quantization
from test_preactivation import BETA, GAMMA, batchnorm, conv, residual_block_model

requires_quantizer = pytest.mark.skipif(find_spec("ai_edge_quantizer") is None,
                                        reason="ai-edge-quantizer is not installed (pip install 'jaxfuse[quantize]')")


def candidate(name, ops, sqnr):
    return Candidate(name, ops, sqnr, 0, 0.0, 0.0)


@pytest.mark.parametrize("sqnrs,max_loss,chosen", [
    ({"full": 30.0, "shift": 31.0, "scale": 30.5}, 0.3, "full"),     # all within: fewest ops
    ({"full": 29.0, "shift": 31.2, "scale": 30.5}, 0.3, "scale"),    # full loses 1 dB
    ({"full": 29.0, "shift": 31.2, "scale": 30.0}, 0.0, "shift"),    # only shift is not worse
    ({"full": 20.0, "shift": 20.0, "scale": 20.0}, 0.3, "none"),     # every fold loses too much
])
def test_choose_takes_the_fewest_ops_within_the_loss(sqnrs, max_loss, chosen):
    ops = {"full": 90, "shift": 99, "scale": 97, "none": 115}
    candidates = [candidate(n, ops[n], s) for n, s in {**sqnrs, "none": 30.1}.items()]
    name, reason = choose(candidates, max_loss)
    assert name == chosen
    assert (chosen == "none") == ("every fold loses" in reason)


def test_choose_breaks_op_ties_by_sqnr():
    candidates = [candidate("full", 90, 30.0), candidate("shift", 90, 30.4), candidate("none", 100, 30.2)]
    assert choose(candidates, 0.5)[0] == "shift"


def calibration(model, count=8):
    rng = np.random.default_rng(5)
    return [[rng.standard_normal(tuple(model.main.inputs[0].shape)).astype(np.float32)] for _ in range(count)]


@requires_quantizer
def test_candidates_are_exact_folds_measured_after_quantization():
    model = residual_block_model(GAMMA * np.array([1, -1, 1, 1]), BETA, tail=True)
    samples = calibration(model)
    optimized, report, selection = optimize_for_quantization(model, samples, samples, max_loss=0.3)
    by_name = {c.name: c for c in selection.candidates}
    assert set(by_name) == {"full", "shift", "scale", "none"}
    assert by_name["none"].preactivation_fused == 0 and by_name["full"].preactivation_fused >= 1
    assert selection.chosen == choose(selection.candidates, 0.3)[0]
    assert sum(optimized.op_histogram().values()) == by_name[selection.chosen].ops
    assert report.verification.ok  # whichever was chosen, it is the exact, checked fold
    assert all(np.isfinite(c.sqnr_db) and c.sqnr_db > 10 for c in selection.candidates)


@requires_quantizer
def test_a_model_without_preactivation_batch_norms_is_not_quantized_four_times():
    model = jaxfuse.load(str(Path(__file__).parent.parent / "examples" / "models" / "mobilenetv2_tiny.tflite"))
    samples = calibration(model, 2)
    _, _, selection = optimize_for_quantization(model, samples, samples)
    assert selection.chosen == "none" and selection.candidates == []
    assert "no pre-activation batch norm" in selection.format_text()


@requires_quantizer
def test_cli_for_int8_reports_the_choice(tmp_path, capsys, save_model):
    path = save_model(residual_block_model(GAMMA, BETA, tail=True))
    out, report = tmp_path / "o.tflite", tmp_path / "r.json"
    code = cli.main(["optimize", str(path), "-o", str(out), "--for", "int8", "--samples", "6", "--report", str(report)])
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "6 seeded random sample(s)" in text and "for int8: chose" in text
    data = json.loads(report.read_text())
    assert data["for"]["scheme"] == "int8" and data["for"]["chosen"] in {"full", "shift", "scale", "none"}
    assert len(data["for"]["candidates"]) == 4
    assert out.exists()


def test_cli_for_int8_without_the_quantizer_is_a_clean_error(tmp_path, capsys, save_model, monkeypatch):
    import jaxfuse.quantization as quantization

    def missing():
        raise quantization.QuantizerUnavailable("ai-edge-quantizer is not installed: pip install 'jaxfuse[quantize]'")
    monkeypatch.setattr(quantization, "quantizer_version", missing)
    path = save_model(residual_block_model(GAMMA, BETA))
    code = cli.main(["optimize", str(path), "-o", str(tmp_path / "o.tflite"), "--for", "int8"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--for int8: ai-edge-quantizer is not installed" in err
    assert not (tmp_path / "o.tflite").exists()


def test_float_target_says_when_its_relu_ops_would_slow_int8(tmp_path, capsys, save_model):
    path = save_model(residual_block_model(GAMMA, BETA))  # the residual stream feeds the BN and the shortcut
    assert cli.main(["optimize", str(path), "-o", str(tmp_path / "o.tflite")]) == 0
    text = capsys.readouterr().out
    assert "1 ReLU(s) are now RELU ops of their own" in text and "--for int8" in text
    nothing = save_model(residual_block_model(GAMMA, BETA, shortcut="none"), "n.tflite")  # the ReLU fuses
    assert cli.main(["optimize", str(nothing), "-o", str(tmp_path / "n.tflite")]) == 0
    assert "RELU ops of their own" not in capsys.readouterr().out


def concatenated_block_model():
    """x -> two convs -> CONCATENATION -> BN -> ReLU -> conv -> MEAN -> FC: a DenseNet-style pre-activation
    batch norm whose shift cannot move backward (it stops at the concatenation), whose scale can."""
    rng = np.random.default_rng(3)
    b = ModelBuilder()
    x = b.input("input", [1, 8, 8, 3])
    left, right = conv(b, x, 4, rng=rng, name="left"), conv(b, x, 4, rng=rng, name="right")
    joined = b.op("CONCATENATION", [left, right], {"axis": 3})
    y = batchnorm(b, joined, np.linspace(0.5, 1.5, 8), np.linspace(-0.4, 0.4, 8), 1)
    z = conv(b, y, 6, k=3, act=1, rng=rng, name="after")
    mean = b.op("MEAN", [z, b.const("axes", np.array([1, 2], np.int32))])
    b.output(b.op("FULLY_CONNECTED", [mean, b.const("fc_w", rng.standard_normal((5, 6)).astype(np.float32)), None]))
    return b.build()


@requires_quantizer
def test_a_fold_that_moves_nothing_is_not_a_candidate_of_its_own():
    model = concatenated_block_model()
    samples = calibration(model)
    _, _, selection = optimize_for_quantization(model, samples, samples, max_loss=0.3)
    by_name = {c.name: c for c in selection.candidates}
    assert "shift" not in by_name  # the shift-only fold is the unfused model here
    assert {"full", "scale", "none"} <= set(by_name)
    assert by_name["scale"].preactivation_fused == 1 and by_name["scale"].ops < by_name["none"].ops
    assert selection.chosen in by_name
