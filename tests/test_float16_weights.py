"""float16-weight models (DEQUANTIZE of float16 constants): folded exactly with the fused
constants stored as float32, the unchanged ones float16 again; the opt-in lossy mode rounds
the fused ones to float16 and reports the error."""
import os

import numpy as np
import pytest

import jaxfuse
from jaxfuse import cli
from jaxfuse.builder import ModelBuilder
from jaxfuse.passes import optimize
from reference import relative_error, run_litert
from test_preactivation import BETA, GAMMA, C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F16 = os.path.join(ROOT, "examples", "models", "resnet50v2_tiny_f16.tflite")


def inputs(model, seed=3):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(t.shape)).astype(np.float32) for t in model.main.inputs]


def test_resnet50v2_float16_batch_norms_fold_exactly(tmp_path):
    model = jaxfuse.load(F16)
    optimized, report = optimize(model)
    hist = optimized.op_histogram()
    assert report.passes["fuse_preactivation_batchnorm"].fused == 17
    assert "MUL" not in hist and hist["ADD"] == 17  # every batch norm gone; the residual ADDs stay
    f16 = report.float16
    assert f16["materialized"] == model.op_histogram()["DEQUANTIZE"] == 125
    assert f16["restored"] == hist["DEQUANTIZE"] and f16["restored"] + f16["kept_float32"] <= 125
    weights32 = [t for t in optimized.main.tensors if t.is_constant and t.dtype == np.float32 and t.data.size > 16]
    assert weights32 and f16["extra_bytes"] > 0
    assert report.verification.ok and report.verification.max_rel_error < 1e-6
    path = tmp_path / "fused.tflite"
    jaxfuse.save(optimized, path)
    x = inputs(model)
    assert relative_error(run_litert(str(path), x)[0], run_litert(F16, x)[0]) < 1e-5
    # the file grows by the fused weights' second halves, no more
    assert os.path.getsize(path) - os.path.getsize(F16) < f16["extra_bytes"] + 16 * 1024


def test_an_unfusable_float16_model_comes_back_unchanged():
    b = ModelBuilder()
    x = b.input("x", [1, 4, 4, C])
    w16 = b.const("w16", np.random.default_rng(0).standard_normal([C, 1, 1, C]).astype(np.float16))
    w = b.op("DEQUANTIZE", [w16], name="w")
    y = b.op("CONV_2D", [x, w, b.const("bias", np.zeros(C, np.float32))], {"fusedActivationFunction": 1})
    b.output(b.op("CONV_2D", [y, w, b.const("bias2", np.ones(C, np.float32))]))
    model = b.build()
    optimized, report = optimize(model)
    assert [op.type for op in optimized.main.ops] == [op.type for op in model.main.ops]
    assert report.float16["restored"] == 1 and report.float16["kept_float32"] == 0
    dequantize = optimized.main.ops[0]
    assert dequantize.type == "DEQUANTIZE" and dequantize.inputs[0].dtype == np.float16


def test_lossy_float16_rounds_the_fused_weights_and_reports_the_error(tmp_path, capsys):
    out = tmp_path / "lossy.tflite"
    assert cli.main(["optimize", F16, "-o", str(out), "--lossy-float16-weights"]) == 0
    text = capsys.readouterr().out
    assert "LOSSY --lossy-float16-weights" in text and "of their scale" in text
    lossy = jaxfuse.load(out)
    assert not [t for t in lossy.main.tensors if t.is_constant and t.dtype == np.float32 and t.data.size > 16]
    assert os.path.getsize(out) < os.path.getsize(F16)  # the batch norms' own constants are gone
    x = inputs(lossy)
    error = relative_error(run_litert(str(out), x)[0], run_litert(F16, x)[0])
    assert 0 < error < 1e-2  # float16 rounding of the fused weights: not exact, but close
