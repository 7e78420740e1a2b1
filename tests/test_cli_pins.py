"""Pins of every command's output as it stood before the command line became a package
(jaxfuse/cli/): exit codes, the keys of --json / --report, and the text's key lines. The
numbers are checked elsewhere (test_cli, test_quantize_and_verify, ...); here the shape of
what each command prints must not move."""
from __future__ import annotations

import json
import os
import re
from importlib.util import find_spec

import pytest

from jaxfuse import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = os.path.join(ROOT, "tests", "bad_inputs", "good.tflite")
NUMBER = r"-?[0-9.e+-]+|nan|inf"

requires_quantizer = pytest.mark.skipif(find_spec("ai_edge_quantizer") is None,
                                        reason="ai-edge-quantizer is not installed (pip install 'jaxfuse[quantize]')")


def call(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


INSPECT_TEXT = """\
file:         {path}
format:       tflite
schema:       version 3
description:  jaxfuse test corpus: CONV_2D + 2 ADD
subgraphs:    1
tensors:      8
ops:          3
constants:    228 bytes in 2 distinct buffers
quantization: float
inputs:
  x  [1, 4, 4, 2]  float32
  y  [1, 4, 4, 3]  float32
outputs:
  out  [1, 4, 4, 3]  float32
op histogram:
  ADD      2
  CONV_2D  1
signature defs:
  serving_default (subgraph 0)
    inputs: x -> x, y -> y
    outputs: output_0 -> out
metadata:
  min_runtime_version  16 bytes
"""


def test_inspect_text_is_pinned(capsys):
    assert call(capsys, "inspect", GOOD) == (0, INSPECT_TEXT.format(path=GOOD), "")


def test_inspect_json_keys_are_pinned(capsys):
    code, out, err = call(capsys, "inspect", GOOD, "--json")
    assert code == 0 and err == ""
    info = json.loads(out)
    assert list(info) == ["file", "format", "schema_version", "description", "subgraph_count", "subgraphs",
                          "tensor_count", "op_count", "op_histogram", "inputs", "outputs", "quantization",
                          "constant_parameter_bytes", "constant_buffer_count", "signature_defs", "metadata"]
    assert list(info["quantization"]) == ["scheme", "quantized_tensors", "per_channel_tensors", "quantized_types"]
    assert out.startswith('{\n  "file": ') and out.endswith("}\n")  # indent 2


def test_convert_line_is_pinned(tmp_path, capsys):
    out_path = tmp_path / "m.circle"
    code, out, err = call(capsys, "convert", GOOD, out_path)
    assert code == 0 and err == ""
    assert out == f"wrote {out_path} (circle, {os.path.getsize(out_path)} bytes) from {GOOD} (tflite)\n"


def test_run_lines_are_pinned(tmp_path, capsys):
    code, out, err = call(capsys, "run", GOOD, "--seed", 2, "-o", tmp_path / "o.npz")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "inputs: random, seed 2"
    assert re.fullmatch(rf"out  \[1, 4, 4, 3\]  float32  min ({NUMBER})  max ({NUMBER})  mean ({NUMBER})", lines[1])
    assert lines[2:] == [f"wrote {tmp_path / 'o.npz'} (1 array)"]
    code, out, _ = call(capsys, "run", GOOD)
    assert code == 0 and out.splitlines()[0] == "inputs: random, seed 0" and len(out.splitlines()) == 2


OPTIMIZE_REPORT_KEYS = ["passes", "ops_before", "ops_after", "histogram_before", "histogram_after", "rewrites",
                        "max_rewrite_error", "verification", "timings", "notes", "float16", "compilation"]


def test_optimize_lines_and_report_keys_are_pinned(tmp_path, capsys):
    import jaxfuse
    from test_preactivation import BETA, GAMMA, residual_block_model

    model_path, out_path, report = tmp_path / "m.tflite", tmp_path / "f.circle", tmp_path / "r.json"
    jaxfuse.save(residual_block_model(GAMMA, BETA), model_path)
    code, out, err = call(capsys, "optimize", model_path, "-o", out_path, "--report", report)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"{model_path} -> {out_path}"
    assert any(re.fullmatch(r"  fuse_preactivation_batchnorm: 1 fused, 0 refused, 0 rolled back", line)
               for line in lines)
    assert any(line.startswith("  note: 1 ReLU(s) are now RELU ops of their own") for line in lines)
    assert any(re.fullmatch(r"  ops: \d+ -> \d+", line) for line in lines)
    assert any(line.startswith("  whole model: equivalent: max error ") for line in lines)
    assert any(line.startswith("  nothing matched: ") for line in lines)
    assert re.fullmatch(r"  time: read [0-9.]+s, import [0-9.]+s, .*, write [0-9.]+s, total [0-9.]+s", lines[-1])
    data = json.loads(report.read_text())
    assert list(data) == OPTIMIZE_REPORT_KEYS
    assert list(data["timings"])[:2] == ["read", "import"] and list(data["timings"])[-2:] == ["write", "total"]
    assert set(data["verification"]) == set(VERIFY_KEYS)


VERIFY_KEYS = ["ok", "tolerance", "samples", "max_abs_error", "max_rel_error", "outputs", "compared_tensors",
               "first_divergent", "notes", "mode", "max_lsb", "min_sqnr", "worst_tensors", "devices", "processes",
               "unchecked"]  # the outputs a partial check (optimize of a model it cannot evaluate whole) left out
TENSOR_KEYS = ["name", "max_abs_error", "scale", "rel_error", "kind", "sqnr_db", "lsb_error", "within_1_lsb",
               "p99_error", "worst_sample", "top1_agreement"]


def test_verify_lines_and_json_keys_are_pinned(capsys):
    code, out, err = call(capsys, "verify", GOOD, GOOD)
    assert code == 0 and err == ""
    assert out == (f"{GOOD} vs {GOOD}: equivalent: max error 0 abs, 0 of the output scale (tolerance 0.0001), "
                   "1 output(s), 3 shared tensor(s), 2 sample(s)\n"
                   "  output 'out': max abs error 0, scale 0, relative 0; over 2 samples: 99th percentile 0 of the "
                   "scale, worst sample 0\n")
    code, out, err = call(capsys, "verify", GOOD, GOOD, "--json", "--samples", 1)
    assert code == 0 and err == ""
    data = json.loads(out)
    assert list(data) == VERIFY_KEYS and list(data["outputs"][0]) == TENSOR_KEYS
    assert data["samples"] == 1 and data["outputs"][0]["worst_sample"] == 0


def test_bench_lines_and_json_keys_are_pinned(capsys):
    code, out, err = call(capsys, "bench", GOOD, GOOD, "--rounds", 2, "--warmup", 0, "--min-seconds", 0, "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert list(data) == ["device", "rounds", "models"] and data["rounds"] == 2
    assert list(data["models"]) == [f"A:{GOOD}", f"B:{GOOD}"]
    assert list(data["models"][f"A:{GOOD}"]) == ["median_s", "ratio_median", "ratio_q1", "ratio_q3", "ratio_ci_low",
                                                 "ratio_ci_high", "ratio_iqr"]
    code, out, err = call(capsys, "bench", GOOD, GOOD, "--rounds", 2, "--warmup", 0, "--min-seconds", 0)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert re.fullmatch(r"XLA on \S+ \(\w+\), 2 interleaved rounds, each on fresh instances after 0 warm-up "
                        r"inference\(s\)", lines[0])
    assert re.fullmatch(rf"  A:{re.escape(GOOD)}: median [0-9.]+ ms", lines[1])
    assert re.fullmatch(rf"  B:{re.escape(GOOD)}: median [0-9.]+ ms; B/A per-round ratio median [0-9.]+ "
                        r"\[95% interval [0-9.]+, [0-9.]+\] \(IQR [0-9.]+-[0-9.]+\)", lines[2])


@requires_quantizer
def test_quantize_lines_and_report_keys_are_pinned(tmp_path, capsys):
    from test_quantize_and_verify import small_float_model

    import jaxfuse
    float_path, out_path, report = tmp_path / "f.tflite", tmp_path / "q.tflite", tmp_path / "r.json"
    jaxfuse.save(small_float_model(), float_path)
    code, out, err = call(capsys, "quantize", float_path, "-o", out_path, "--samples", 3, "--report", report)
    assert code == 0 and err == ""
    data = json.loads(report.read_text())
    assert list(data) == ["input", "output", "scheme", "scheme_description", "quantizer", "calibration",
                          "calibration_samples", "ops", "bytes", "check", "timings"]
    assert list(data["check"]) == ["ok", "samples", "min_sqnr", "outputs", "worst_tensors", "litert"]
    assert list(data["check"]["outputs"][0]) == ["name", "sqnr_db", "litert_sqnr_db", "jaxfuse_vs_litert_max_lsb",
                                                 "jaxfuse_vs_litert_within_1_lsb"]
    assert list(data["timings"]) == ["read", "quantize", "check", "write", "total"]
    lines = out.splitlines()
    assert lines[0] == (f"{float_path} -> {out_path}: int8 ({data['scheme_description']}), {data['quantizer']}")
    assert lines[1] == f"  calibration: {data['calibration']}"
    assert lines[2] == (f"  ops {data['ops']['before']} -> {data['ops']['after']}, constants "
                        f"{data['bytes']['before']} -> {data['bytes']['after']} bytes")
    assert lines[3] == "  check on 3 calibration sample(s), float model vs quantized model:"
    assert re.fullmatch(r"    output 'probs': SQNR [0-9.-]+ dB through jaxfuse, [0-9.-]+ dB through LiteRT; jaxfuse "
                        r"vs LiteRT: max \S+ LSB, [0-9.]+% within 1 LSB", lines[4])
    assert lines[5].startswith("  lowest SQNR tensors: '")
    assert re.fullmatch(r"  time: read [0-9.]+s, quantize [0-9.]+s, check [0-9.]+s, write [0-9.]+s, total [0-9.]+s",
                        lines[6])
    assert len(lines) == 7
