"""Trained models other people published (tests/real_models/, from PyPI wheels) through the
command line, against LiteRT: the defects of issue 18 on the models that showed them."""
import json
from pathlib import Path

import numpy as np

import jaxfuse
from jaxfuse import cli
from jaxfuse.numerics import random_inputs
from reference import relative_error, run_litert

REAL = Path(__file__).resolve().parent / "real_models"
BLAZEFACE = REAL / "mediapipe_face_detection_short_range.tflite"
SELFIE = REAL / "mediapipe_selfie_segmentation.tflite"
WAKEWORD = REAL / "pymicro_wakeword_okay_nabu.tflite"
TOL = 1e-5


def call(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_blazeface_runs_as_litert_computes_it(tmp_path, capsys):
    """The detector jit used to compute 0.87 of its output's scale off (jaxfuse.xla)."""
    model = jaxfuse.load(BLAZEFACE)
    x = random_inputs(model.main, 1, seed=3)[0]
    np.savez(tmp_path / "in.npz", **{t.name: a for t, a in zip(model.main.inputs, x)})
    code, out, err = call(capsys, "run", BLAZEFACE, "--inputs", tmp_path / "in.npz", "-o", tmp_path / "out.npz",
                          "--against", "litert")
    assert code == 0, err
    assert "against LiteRT (builtin kernels): agrees" in out
    with np.load(tmp_path / "out.npz") as got:
        ours = [got[t.name] for t in model.main.outputs]
    for a, e in zip(ours, run_litert(BLAZEFACE, x)):
        assert relative_error(a, e) <= TOL


def test_blazeface_optimizes_into_a_model_litert_runs_the_same(tmp_path, capsys):
    out_path = tmp_path / "fused.tflite"
    code, out, err = call(capsys, "optimize", BLAZEFACE, "-o", out_path, "--report", tmp_path / "r.json")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ops_before"] == 164 and report["ops_after"] < 164 and report["verification"]["ok"]
    x = random_inputs(jaxfuse.load(BLAZEFACE).main, 1, seed=4)[0]
    for a, e in zip(run_litert(out_path, x), run_litert(BLAZEFACE, x)):
        assert relative_error(a, e) <= TOL
    assert call(capsys, "verify", BLAZEFACE, out_path)[0] == 0


def test_a_custom_op_at_the_end_leaves_the_rewrites_before_it(tmp_path, capsys):
    """selfie_segmentation ends in MediaPipe's Convolution2DTransposeBias, which neither LiteRT's
    wheel nor jaxfuse runs: the RELU fusions before it are checked and applied (they were all
    rolled back), and the report names the output it could not check."""
    code, out, err = call(capsys, "optimize", SELFIE, "-o", tmp_path / "s.tflite", "--report", tmp_path / "r.json")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ops_after"] <= report["ops_before"] - 20
    assert report["verification"]["unchecked"] and "Convolution2DTransposeBias" in report["verification"]["unchecked"][0]
    code, out, err = call(capsys, "verify", SELFIE, SELFIE)
    assert code == 2 and "Convolution2DTransposeBias" in err and "\n" not in err.strip()


def _steps(model, count, seed=0):
    rng = np.random.default_rng(seed)
    (t,) = model.main.inputs
    return rng.integers(-128, 127, size=(count, *t.shape), endpoint=True).astype(np.int8)


def _litert_steps(path, steps):
    from jaxfuse.engines import litert_interpreter
    interp = litert_interpreter(path)
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    outputs = []
    for x in steps:
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        outputs.append(np.array(interp.get_tensor(out["index"])))
    return np.stack(outputs)


def _logits(tmp_path) -> Path:
    """The wake-word model with its FULLY_CONNECTED's int8 output as the model's output: on
    random features the probability after it is 0 at every step, which would show little."""
    model = jaxfuse.load(WAKEWORD)
    (fc,) = [op for op in model.main.ops if op.type == "FULLY_CONNECTED"]
    model.main.outputs = [fc.outputs[0]]
    for s in model.signatures:
        s.outputs = [(s.outputs[0][0], fc.outputs[0])]
    model.main.cleanup()
    jaxfuse.save(model, tmp_path / "logits.tflite")
    return tmp_path / "logits.tflite"


def test_streaming_wake_word_model_runs_step_by_step_like_litert(tmp_path, capsys):
    for path in (WAKEWORD, _logits(tmp_path)):
        model = jaxfuse.load(path)
        steps = _steps(model, 12)
        np.savez(tmp_path / "steps.npz", **{model.main.inputs[0].name: steps})
        code, out, err = call(capsys, "run", path, "--inputs", tmp_path / "steps.npz", "-o", tmp_path / "o.npz")
        assert code == 0, err
        with np.load(tmp_path / "o.npz") as got:
            ours = got[model.main.outputs[0].name].reshape(12, -1)
        theirs = _litert_steps(path, steps).reshape(12, -1)
        np.testing.assert_array_equal(ours, theirs)
    assert len(np.unique(theirs)) > 3  # the logits move from step to step


def test_streaming_wake_word_model_is_never_harmed(tmp_path, capsys):
    """optimize removed every ASSIGN_VARIABLE, the CALL_ONCE and what fed them (57 -> 44 ops on
    such models), and LiteRT then failed on the output."""
    out_path = tmp_path / "o.tflite"
    code, out, err = call(capsys, "optimize", WAKEWORD, "-o", out_path)
    assert code == 0, err
    before, after = jaxfuse.load(WAKEWORD), jaxfuse.load(out_path)
    assert after.op_histogram() == before.op_histogram()
    steps = _steps(before, 6, seed=1)
    np.testing.assert_array_equal(_litert_steps(out_path, steps), _litert_steps(WAKEWORD, steps))
    logits = _logits(tmp_path)
    assert call(capsys, "optimize", logits, "-o", tmp_path / "lo.tflite")[0] == 0
    np.testing.assert_array_equal(_litert_steps(tmp_path / "lo.tflite", steps), _litert_steps(logits, steps))
    circle = tmp_path / "m.circle"
    assert call(capsys, "convert", WAKEWORD, circle)[0] == 0
    assert call(capsys, "convert", circle, tmp_path / "back.tflite")[0] == 0
    np.testing.assert_array_equal(_litert_steps(tmp_path / "back.tflite", steps), _litert_steps(WAKEWORD, steps))
