"""jaxfuse.crosscheck: jaxfuse's values against LiteRT's, per output and per tensor."""
from pathlib import Path

import numpy as np
import pytest

import jaxfuse
from jaxfuse.builder import ModelBuilder
from jaxfuse.crosscheck import CrosscheckError, crosscheck
from jaxfuse.lowering import RULES
from jaxfuse.numerics import random_inputs

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


def chain(rng):
    b = ModelBuilder()
    x = b.input("x", [1, 6, 6, 4])
    w = b.const("w", rng.standard_normal([4, 3, 3, 4]).astype(np.float32))
    bias = b.const("bias", rng.standard_normal([4]).astype(np.float32))
    c = b.op("CONV_2D", [x, w, bias], {"padding": 0}, name="conv")
    r = b.op("RELU", [c], name="relu")
    y = b.op("MUL", [r, b.const("two", np.full([4], 2.0, np.float32))], name="scaled")
    b.output(b.op("LOGISTIC", [y], name="out"))
    return b.build()


def test_agrees_on_a_float_model(rng):
    model = chain(rng)
    report = crosscheck(model, random_inputs(model.main, 1)[0])
    assert report.agrees
    assert report.tensors_compared == 4 and report.diverging == []
    (out,) = report.outputs
    assert out.name == "out" and out.rel_error <= 1e-6 and out.litert_spread is not None
    assert report.to_dict()["agrees"] is True and "agrees" in report.format_text()


def test_a_wrong_rule_is_found_and_localized(rng, monkeypatch):
    """A lowering that is wrong (as a miscompile would make it) is reported, and the first tensor
    where the engines part is named, though later ops hide part of the error."""
    model = chain(rng)
    right = RULES[("RELU", "float")]
    monkeypatch.setitem(RULES, ("RELU", "float"), lambda ctx, x: right(ctx, x) * 1.01)
    report = crosscheck(model, random_inputs(model.main, 1)[0])
    assert not report.agrees
    assert report.first_divergence.name == "relu"
    assert [t.name for t in report.diverging] == ["relu", "scaled"]
    assert "DISAGREES" in report.format_text() and "'relu'" in report.format_text()


def test_quantized_model_agrees_to_the_lsb():
    model = jaxfuse.load(MODELS / "mobilenetv2_tiny_int8.tflite")
    report = crosscheck(model, random_inputs(model.main, 1)[0])
    assert report.agrees
    assert all(o.quantized and o.max_abs_error <= 1 for o in report.outputs)
    assert report.tensors_compared == len(model.main.ops)


def test_a_model_litert_cannot_run_is_a_clear_error(rng):
    b = ModelBuilder()
    x = b.input("x", [1, 4])
    y = b.op("CUSTOM", [x], output_shape=[1, 4])
    b.output(y)
    model = b.build()
    model.main.ops[0].opcode.custom_code = "NoSuchOp"
    with pytest.raises(CrosscheckError, match="LiteRT cannot run the model"):
        crosscheck(model, [np.zeros([1, 4], np.float32)])


# -- the command line: run / verify --against litert ---------------------------------------------

def _cli(capsys, *argv):
    from jaxfuse import cli
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_run_against_litert(rng, save_model, tmp_path, capsys, monkeypatch):
    path = save_model(chain(rng))
    np.savez(tmp_path / "set.npz", x=rng.standard_normal([3, 1, 6, 6, 4]).astype(np.float32))
    code, out, err = _cli(capsys, "run", path, "--inputs", tmp_path / "set.npz", "--against", "litert",
                          "-o", tmp_path / "out.npz")
    assert code == 0, err
    assert "against LiteRT (builtin kernels): agrees (outputs of 3 samples, 4 tensors compared" in out
    assert (tmp_path / "out.npz").exists()
    right = RULES[("LOGISTIC", "float")]
    monkeypatch.setitem(RULES, ("LOGISTIC", "float"), lambda ctx, x: right(ctx, x) + 0.01)
    code, out, err = _cli(capsys, "run", path, "--against", "litert")
    assert code == 1 and "output 'out'" in out and "DISAGREES" in out


def test_verify_against_litert(capsys):
    import json
    model = MODELS / "mobilenetv2_tiny.tflite"
    code, out, err = _cli(capsys, "verify", model, MODELS / "mobilenetv2_tiny_int8.tflite", "--against", "litert",
                          "--json")
    assert code == 0, err
    against = json.loads(out)["against_litert"]
    assert list(against) == [str(model), str(MODELS / "mobilenetv2_tiny_int8.tflite")]
    assert all(report["agrees"] for report in against.values())


def test_against_names_an_engine(rng, save_model, capsys):
    code, out, err = _cli(capsys, "run", save_model(chain(rng)), "--against", "nothing")
    assert code == 2 and "invalid choice: 'nothing'" in err
