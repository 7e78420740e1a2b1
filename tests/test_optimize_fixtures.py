"""`jaxfuse optimize` end to end on converter-made ResNet V2 fixtures: the fused files run
in LiteRT (.tflite) and onert (.circle) with the original's logits."""
import json
from pathlib import Path

import numpy as np
import pytest

import jaxfuse
from jaxfuse.cli import main
from reference import logits_copy, relative_error, requires_onert, run_litert, run_onert

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"


@pytest.fixture(scope="module")
def fused_mixed(tmp_path_factory):
    """resnet50v2_tiny_mixed (negative and zero gammas) through the CLI, as .tflite and .circle."""
    out = tmp_path_factory.mktemp("fused")
    src = MODELS / "resnet50v2_tiny_mixed.tflite"
    assert main(["optimize", str(src), "-o", str(out / "fused.circle"), "--report", str(out / "report.json")]) == 0
    jaxfuse.save(jaxfuse.load(out / "fused.circle"), out / "fused.tflite")
    return src, out


def test_report_counts_every_batch_norm(fused_mixed):
    _, out = fused_mixed
    report = json.loads((out / "report.json").read_text())
    pre = report["passes"]["fuse_preactivation_batchnorm"]
    refused = sum(len(v) for v in pre["refused"].values())
    assert pre["fused"] + refused == 17
    assert report["ops_before"] == 115 and report["ops_after"] <= 99
    assert report["histogram_after"].get("MUL", 0) <= refused + sum(
        1 for r in report["rewrites"] if r["pass"] == "fuse_preactivation_batchnorm" and r["negative_gammas"])
    assert report["verification"]["ok"] and report["verification"]["max_rel_error"] < 1e-5


def test_fused_tflite_matches_original_in_litert(fused_mixed, tmp_path):
    src, out = fused_mixed
    original = jaxfuse.load(src)
    x = [np.random.default_rng(5).standard_normal(tuple(original.main.inputs[0].shape)).astype(np.float32)]
    jaxfuse.save(logits_copy(original), tmp_path / "a.tflite")
    jaxfuse.save(logits_copy(jaxfuse.load(out / "fused.tflite")), tmp_path / "b.tflite")
    assert relative_error(run_litert(tmp_path / "b.tflite", x)[0], run_litert(tmp_path / "a.tflite", x)[0]) < 1e-5


@requires_onert
def test_fused_circle_matches_original_in_onert(fused_mixed, tmp_path):
    src, out = fused_mixed
    original = jaxfuse.load(src)
    x = [np.random.default_rng(5).standard_normal(tuple(original.main.inputs[0].shape)).astype(np.float32)]
    jaxfuse.save(logits_copy(original), tmp_path / "a.circle")
    jaxfuse.save(logits_copy(jaxfuse.load(out / "fused.circle")), tmp_path / "b.circle")
    assert relative_error(run_onert(tmp_path / "b.circle", x)[0], run_onert(tmp_path / "a.circle", x)[0]) < 1e-5


def test_failed_verification_exits_1_and_writes_no_model(tmp_path, capsys):
    out = tmp_path / "fused.tflite"
    code = main(["optimize", str(MODELS / "resnet50v2_tiny.tflite"), "-o", str(out), "--tolerance", "1e-12",
                 "--pass", "fuse_preactivation_batchnorm"])
    assert code == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert "verification failed" in capsys.readouterr().err


def test_verify_cli_exit_codes(fused_mixed, capsys):
    src, out = fused_mixed
    assert main(["verify", str(src), str(out / "fused.circle")]) == 0
    assert main(["verify", str(src), str(MODELS / "resnet50v2_tiny.tflite")]) == 1  # other gammas: differs
    assert "NOT equivalent" in capsys.readouterr().out


def test_optimize_rejects_unknown_pass_and_bad_output(tmp_path, capsys):
    src = str(MODELS / "resnet50v2_tiny.tflite")
    assert main(["optimize", src, "-o", str(tmp_path / "x.circle"), "--pass", "fold_everything"]) == 2
    assert main(["optimize", src, "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("jaxfuse: error: ") for line in err)
    assert list(tmp_path.iterdir()) == []


def test_float16_weight_model_folds_and_says_what_it_stored(tmp_path, capsys):
    assert main(["optimize", str(MODELS / "resnet50v2_tiny_f16.tflite"), "-o", str(tmp_path / "f16.tflite")]) == 0
    out = capsys.readouterr().out
    assert "fuse_preactivation_batchnorm: 17 fused, 0 refused" in out
    assert "fused and stored as float32 (+" in out and "ops: 240 -> 164" in out


FIXTURES = sorted(p.name for p in MODELS.glob("*.tflite"))


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_optimizes_into_a_model_litert_runs_alike(name, tmp_path):
    """Every model `optimize` writes runs on LiteRT wherever the original does, with the same
    outputs: fused float models within 1e-5 of each output's scale (the folds only reorder
    float rounding), models it leaves untouched with the same graph and the same values.
    (verify=False: here LiteRT is the whole-model check; every rewrite is still checked.)"""
    from jaxfuse.numerics import random_input
    original = jaxfuse.load(MODELS / name)
    rng = np.random.default_rng(11)
    x = [random_input(t, rng) for t in original.main.inputs]
    try:
        expected = run_litert(MODELS / name, x)
    except Exception as e:  # noqa: BLE001 (whatever LiteRT raises: then there is nothing to hold optimize to)
        pytest.skip(f"LiteRT cannot run {name}: {e}")
    optimized, report = jaxfuse.optimize(original, verify=False)
    jaxfuse.save(optimized, tmp_path / "optimized.tflite")
    got = run_litert(tmp_path / "optimized.tflite", x)
    assert len(got) == len(expected)
    if not report.rewrites:
        assert optimized.op_histogram() == original.op_histogram()
        assert [op.type for op in optimized.main.ops] == [op.type for op in original.main.ops]
    for a, b in zip(got, expected):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert relative_error(a.astype(np.float64), b.astype(np.float64)) <= (1e-5 if report.rewrites else 0.0)
