"""Fused models after int8 quantization: as fast as the quantized original, and as accurate?

For each model (its logits: the final SOFTMAX removed, since int8 probabilities in steps of
1/256 hide differences) the float original, jaxfuse's default float fusion and its
`--for int8` choice are quantized with ai-edge-quantizer (static_wi8_ai8) on the same
calibration samples, then:

- timed interleaved (fresh instances every round, the int8 original timed twice as an A/A
  control) on LiteRT with its default XNNPACK delegate, 1 and 2 threads, and on XLA CPU
  (jax.jit of jaxfuse's quantized lowering);
- their SQNR against the float original's logits measured on held-out samples, in
  LiteRT with XNNPACK (what a deployment runs) and through jaxfuse's quantized lowering.

    python bench/quantized.py [--models ResNet50V2 ResNet50V2_mixed ...] [--model-dir DIR]
                              [--rounds N] [--calibration N] [--eval N] [--out bench/results]

Models missing from --model-dir are generated with examples/make_models.py (a name ending in
_mixed gets --negative-gamma-fraction 0.05). Results: OUT/quantized.json and OUT/quantized.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import jaxfuse
from jaxfuse.benchmark import interleaved, litert_factory, summarize, xla_factory
from jaxfuse.engines import logits_copy
from jaxfuse.equivalence import compare
from jaxfuse.numerics import dequantize, quantize as quantize_array, sqnr_db
from jaxfuse.passes import optimize
from jaxfuse.quantization import quantize
from jaxfuse.quantized_target import optimize_for_quantization

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from inference import machine  # noqa: E402

DEFAULT_MODELS = ["ResNet50V2", "ResNet50V2_mixed", "ResNet101V2", "DenseNet121", "MobileNetV2"]
VARIANTS = ("original", "fused_float", "fused_int8")
LABELS = {"original": "int8 original", "original_again": "A/A control (int8 original again)",
          "fused_float": "int8 of the default (float) fusion", "fused_int8": "int8 of `--for int8`"}


def ensure_model(name: str, model_dir: str, python: str) -> str:
    path = os.path.join(model_dir, f"{name}.tflite")
    if not os.path.exists(path):
        base, mixed = (name[:-len("_mixed")], True) if name.endswith("_mixed") else (name, False)
        cmd = [python, os.path.join(ROOT, "examples", "make_models.py"), base, "--out-dir", model_dir, "--name", name]
        cmd += ["--negative-gamma-fraction", "0.05"] if mixed else []
        print("generating:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return path


def samples(model, count: int, seed: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(tuple(t.shape)).astype(np.float32) for t in model.main.inputs] for _ in range(count)]


def litert_sqnr(float_bytes: bytes, quantized_bytes: bytes, quantized_model, evaluation) -> float:
    from ai_edge_litert.interpreter import Interpreter

    def run(content, xs):
        interp = Interpreter(model_content=content, num_threads=2)
        interp.allocate_tensors()
        i, o = interp.get_input_details()[0], interp.get_output_details()[0]
        outs = []
        for x in xs:
            interp.set_tensor(i["index"], x)
            interp.invoke()
            outs.append(np.array(interp.get_tensor(o["index"])))
        return outs
    tin, tout = quantized_model.main.inputs[0], quantized_model.main.outputs[0]
    reference = run(float_bytes, [s[0] for s in evaluation])
    quantized = run(quantized_bytes, [quantize_array(s[0], tin) for s in evaluation])
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in reference)
    noise = sum(float(np.sum((r.astype(np.float64) - dequantize(q, tout)) ** 2)) for r, q in zip(reference, quantized))
    return sqnr_db(signal, noise)


def bench_model(name: str, path: str, args, tmp: str) -> dict:
    model = logits_copy(jaxfuse.load(path))
    calibration = samples(model, args.calibration, 0)
    evaluation = samples(model, args.eval, 1)
    t = time.perf_counter()
    fused_float, _ = optimize(model)
    float_seconds = time.perf_counter() - t
    t = time.perf_counter()
    fused_int8, _, selection = optimize_for_quantization(model, calibration, calibration)
    int8_seconds = time.perf_counter() - t
    floats = {"original": model, "fused_float": fused_float, "fused_int8": fused_int8}
    quantized, files = {}, {}
    float_bytes = jaxfuse.io.to_bytes(model, "tflite")
    result = {"model": name, "ops": {}, "sqnr_litert_db": {}, "sqnr_jaxfuse_db": {},
              "selection": selection.to_dict(), "optimize_seconds": {"float": float_seconds, "for_int8": int8_seconds},
              "engines": {}}
    for key, m in floats.items():
        q = quantize(m, calibration)
        quantized[key] = q.model
        files[key] = os.path.join(tmp, f"{name}_{key}_int8.tflite")
        with open(files[key], "wb") as f:
            f.write(q.tflite_bytes)
        result["ops"][key] = sum(q.model.op_histogram().values())
        result["sqnr_litert_db"][key] = litert_sqnr(float_bytes, q.tflite_bytes, q.model, evaluation)
        result["sqnr_jaxfuse_db"][key] = min(o.sqnr_db for o in compare(model, q.model, evaluation[:8],
                                                                         min_sqnr=-np.inf).outputs)
        print(f"  {name} {key}: {result['ops'][key]} ops, SQNR {result['sqnr_litert_db'][key]:.2f} dB (LiteRT)",
              flush=True)
    files["original_again"] = files["original"]
    quantized["original_again"] = quantized["original"]
    engines = {"LiteRT 1 thread": lambda key: litert_factory(files[key], 1),
               "LiteRT 2 threads": lambda key: litert_factory(files[key], 2),
               "XLA CPU (quantized lowering)": lambda key: xla_factory(quantized[key], "cpu")}
    for engine, make in engines.items():
        print(f"  {name} / {engine}: timing {args.rounds} rounds", flush=True)
        factories = {key: make(key) for key in ("original", "original_again", "fused_float", "fused_int8")}
        times = interleaved(factories, args.rounds, warmup=1, min_seconds=args.min_seconds)
        result["engines"][engine] = {k: v.to_dict() for k, v in summarize(times, "original").items()}
    return result


def _ratio(t: dict) -> str:
    return f"{t['ratio_median']:.3f} [{t['ratio_ci_low']:.3f}, {t['ratio_ci_high']:.3f}]"


def tables(results: list[dict]) -> str:
    engines = list(dict.fromkeys(e for r in results for e in r["engines"]))
    lines = ["Time relative to the int8 original (median of per-round ratios [95% bootstrap interval]):", "",
             "| model | variant | ops | " + " | ".join(engines) + " |", "|---|---|---|" + "---|" * len(engines)]
    for r in results:
        for key in ("fused_int8", "fused_float", "original_again"):
            ops = r["ops"]["original" if key == "original_again" else key]
            cells = [_ratio(r["engines"][e][key]) for e in engines]
            lines.append(f"| {r['model']} | {LABELS[key]} | {ops} | " + " | ".join(cells) + " |")
        cells = [f"{r['engines'][e]['original']['median_s'] * 1e3:.2f} ms" for e in engines]
        lines.append(f"| {r['model']} | (int8 original, median time) | {r['ops']['original']} | " + " | ".join(cells)
                     + " |")
    lines += ["", "SQNR of the int8 logits against the float original's (dB; LiteRT with XNNPACK on the held-out "
              "samples / jaxfuse's quantized lowering on 8 of them), and what `--for int8` chose:", "",
              "| model | int8 original | int8 of the default fusion | int8 of `--for int8` | `--for int8` chose "
              "(candidates: SQNR vs unfused on the calibration samples) |", "|---|---|---|---|---|"]
    for r in results:
        s, j = r["sqnr_litert_db"], r["sqnr_jaxfuse_db"]
        sel = r["selection"]
        choice = sel["chosen"]
        if sel["candidates"]:
            reference = next(c for c in sel["candidates"] if c["name"] == "none")["sqnr_db"]
            choice += " (" + ", ".join(f"{c['name']} {c['sqnr_db'] - reference:+.2f}" for c in sel["candidates"]
                                       if c["name"] != "none") + ")"
        lines.append(f"| {r['model']} | {s['original']:.2f} / {j['original']:.2f} | "
                     f"{s['fused_float']:.2f} / {j['fused_float']:.2f} ({s['fused_float'] - s['original']:+.2f}) | "
                     f"{s['fused_int8']:.2f} / {j['fused_int8']:.2f} ({s['fused_int8'] - s['original']:+.2f}) | "
                     f"{choice} |")
    return "\n".join(lines)


def write_results(out_dir, header, results, args):
    with open(os.path.join(out_dir, "quantized.json"), "w") as f:
        json.dump({"machine": machine(), "header": header, "args": vars(args), "results": results}, f, indent=2)
    with open(os.path.join(out_dir, "quantized.md"), "w") as f:
        f.write(header + "\n\n" + tables(results) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, metavar="NAME")
    parser.add_argument("--model-dir", default=os.path.join(tempfile.gettempdir(), "jaxfuse-bench-models"))
    parser.add_argument("--make-models-python", default=sys.executable, metavar="PYTHON")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--min-seconds", type=float, default=0.25)
    parser.add_argument("--calibration", type=int, default=32, metavar="N", help="calibration samples (default 32)")
    parser.add_argument("--eval", type=int, default=32, metavar="N", help="held-out samples for SQNR (default 32)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = (f"Taken {started} on {machine()}; jax {__import__('jax').__version__}, ai-edge-quantizer static_wi8_ai8 "
              f"calibrated on {args.calibration} seeded standard-normal samples, SQNR on {args.eval} others; "
              f"{args.rounds} interleaved rounds per runtime on fresh instances (1 untimed inference, then the "
              f"fastest of those filling {args.min_seconds:g} s); LiteRT with its default XNNPACK delegate.")
    results = []
    with tempfile.TemporaryDirectory(prefix="jaxfuse-qbench-") as tmp:
        for name in args.models:
            results.append(bench_model(name, ensure_model(name, args.model_dir, args.make_models_python), args, tmp))
            print(tables(results[-1:]), flush=True)
            write_results(args.out, header, results, args)  # after every model: a long run interrupted keeps its tables
    print(header)
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
