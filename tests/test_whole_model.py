"""verify and crosscheck on models that only run whole (several subgraphs, resource variables):
stateful ones step by step from their initial state, against LiteRT where it decides."""
import json

import numpy as np
import pytest

import jaxfuse
from jaxfuse.cli import main
from jaxfuse.crosscheck import crosscheck
from jaxfuse.equivalence import compare
from jaxfuse.lowering import RULES
from multigraph_models import accumulator, gated_accumulator, if_model
from test_multigraph import stream


def verify(capsys, a, b, *extra):
    code = main(["verify", str(a), str(b), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_verify_a_stateful_model_against_itself_and_its_optimized_copy(tmp_path, capsys):
    path, out = tmp_path / "acc.tflite", tmp_path / "acc_opt.tflite"
    jaxfuse.save(accumulator(projected=True), path)
    assert main(["optimize", str(path), "-o", str(out)]) == 0
    assert len(jaxfuse.load(out).main.ops) < len(jaxfuse.load(path).main.ops)  # the rewrite was kept
    capsys.readouterr()
    code, text, _ = verify(capsys, path, path)
    assert code == 0 and "equivalent: max error 0 abs" in text and "8 sample(s)" in text
    assert "8 consecutive steps" in text and "2 variable(s)" in text
    code, text, _ = verify(capsys, path, out, "--json")
    report = json.loads(text)
    assert code == 0 and report["ok"] and report["samples"] == 8 and report["compared_tensors"] == 2
    assert 0 < report["max_rel_error"] <= 1e-5  # the folded weights round differently, within float32
    assert report["outputs"][0]["name"] == "y" and report["outputs"][0]["p99_error"] is not None


def test_verify_tells_stateful_models_apart(tmp_path, capsys):
    """A changed initial value shows only in the state (the output follows it); a changed output
    scale only in the output."""
    a, b, c = tmp_path / "a.tflite", tmp_path / "b.tflite", tmp_path / "c.tflite"
    jaxfuse.save(accumulator(), a)
    jaxfuse.save(accumulator(initial=0.6), b)
    jaxfuse.save(accumulator(scale=2.5), c)
    code, text, _ = verify(capsys, a, b)
    assert code == 1 and "NOT equivalent" in text and "first divergent tensor 'state 'acc''" in text
    code, text, _ = verify(capsys, a, c)
    assert code == 1 and "NOT equivalent" in text and "first divergent" not in text


def test_the_given_samples_are_the_steps_in_order():
    """The samples given are the steps: all of them run in order, and the figures are per step (an
    initial value off by 1e-3 weighs most at the first step, before the sums grow)."""
    model = accumulator()
    steps = stream(model, 5)
    report = compare(model, accumulator(), steps)
    assert report.ok and report.samples == 5
    step_of = compare(model, accumulator(initial=0.5 + 1e-3), steps).outputs[0]
    assert step_of.worst_sample == 0  # the relative difference is largest before the sums grow


def test_verify_a_model_with_control_flow_per_sample(tmp_path, capsys):
    path = tmp_path / "gated.tflite"
    jaxfuse.save(gated_accumulator(), path)
    code, text, _ = verify(capsys, path, path)
    assert code == 0 and "equivalent" in text
    other = tmp_path / "if.tflite"
    jaxfuse.save(if_model(), other)
    code, text, _ = verify(capsys, other, other, "--samples", "3")
    assert code == 0 and "3 subgraphs" in text and "3 sample(s)" in text


def test_crosscheck_runs_the_steps_on_one_interpreter():
    model = accumulator()
    steps = stream(model, 5)
    report = crosscheck(model, steps=steps)
    assert report.agrees and report.steps == 5
    (out,) = report.outputs
    assert out.name == "y" and out.shape == [1, 4] and out.rel_error <= 1e-6
    assert report.tensors_compared >= 4 and report.diverging == []  # READ_VARIABLE, ADDs, MUL at the last step
    assert "5 steps in order" in report.format_text()
    # one step only is not the same as five: LiteRT's state after five steps is what jaxfuse carried
    assert crosscheck(model, steps[0]).outputs[0].rel_error <= 1e-6


def test_crosscheck_finds_a_wrong_rule_in_a_stateful_model(monkeypatch):
    model = accumulator()
    right = RULES[("ADD", "float")]

    def wrong(ctx, *xs):  # float sums off by 0.1% (the int32 step counter stays right)
        result = right(ctx, *xs)
        return result * 1.001 if np.dtype(result.dtype).kind == "f" else result
    monkeypatch.setitem(RULES, ("ADD", "float"), wrong)
    report = crosscheck(model, steps=stream(model, 3))
    assert not report.agrees and "DISAGREES" in report.format_text()
    # at the last step the sum read from the variable is already off: the error was carried over
    assert [t.name for t in report.diverging][:2] == ["acc_value", "acc_next"]


def test_crosscheck_of_if_model_agrees():
    model = if_model()
    rng = np.random.default_rng(1)
    for flag in (True, False):
        report = crosscheck(model, [rng.standard_normal((2, 3)).astype(np.float32), np.array(flag)])
        assert report.agrees and report.outputs[0].rel_error <= 1e-6
