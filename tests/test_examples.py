"""The examples run, so they never rot."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fold_aware_gradients_and_refold_match():
    grad_gap, out_gap, split_gap = load("fold_aware").main()
    assert grad_gap < 1e-5 and out_gap < 1e-4 and split_gap < 1e-5


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="tensorflow is installed here")
def test_make_models_without_tensorflow_says_what_to_install():
    proc = subprocess.run([sys.executable, str(EXAMPLES / "make_models.py"), "ResNet50V2", "--out-dir", "/tmp/x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "pip install .[convert]" in proc.stderr and "Traceback" not in proc.stderr


def test_fuse_and_verify_over_a_data_set(tmp_path):
    report, verdict, outputs = load("fuse_and_verify").main(str(EXAMPLES / "models" / "misc_ops_tiny.tflite"),
                                                          samples=3, out=str(tmp_path / "fused.circle"),
                                                          folder=str(tmp_path))
    assert report.ops_after < report.ops_before and report.verification.ok and report.verification.samples == 3
    assert verdict.ok and verdict.samples == 3 and verdict.outputs[0].worst_sample is not None
    assert [o.shape for o in outputs] == [(3, 1, 10)]
    assert (tmp_path / "fused.circle").exists()


@pytest.mark.skipif(importlib.util.find_spec("ai_edge_quantizer") is None, reason="ai-edge-quantizer is not installed")
def test_quantize_and_compare(tmp_path):
    import jaxfuse
    from test_preactivation import BETA, GAMMA, residual_block_model
    jaxfuse.save(residual_block_model(GAMMA, BETA, tail=True), tmp_path / "m.tflite")
    report, sqnr = load("quantize_and_compare").main(str(tmp_path / "m.tflite"), samples=4)
    assert report.selection.chosen in {"full", "shift", "scale", "none"} and len(report.selection.candidates) == 4
    assert sqnr["unfused"] > 20 and sqnr["fused"] > 20
    chosen = next(c for c in report.selection.candidates if c.name == report.selection.chosen)
    assert abs(chosen.sqnr_db - sqnr["fused"]) < 3  # measured before the final SOFTMAX there, after it here
