"""Fuse converter-made models and measure what it did: batch norms found / fused / partly
fused / refused, op counts, the error of the fused model against the original on JAX,
LiteRT and onert (logits, relative to their scale), and how long `optimize` took.

    python bench/fusion_report.py MODEL.tflite [MODEL.tflite ...] [--json OUT.json] [--markdown OUT.md]

Models come from examples/make_models.py (full keras.applications models are generated on
demand: they are too big to commit).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

import jaxfuse
from jaxfuse.engines import OnertCrash, logits_copy, relative_error, run_litert, run_onert
from jaxfuse.passes import optimize

PASS = "fuse_preactivation_batchnorm"


def measure(path: str) -> dict:
    model = jaxfuse.load(path)
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fused, report = optimize(model)
    seconds = time.perf_counter() - t
    pre = report.passes[PASS]
    rewrites = [r for r in report.rewrites if r["pass"] == PASS]
    full = sum(1 for r in rewrites if r["scale_forward"] and r["shift_backward"])
    refused = sum(len(w) for w in pre.refused.values())
    row = {
        "model": os.path.basename(path), "ops_before": report.ops_before, "ops_after": report.ops_after,
        "bn_found": len(rewrites) + refused, "bn_fused_fully": full, "bn_fused_partly": len(rewrites) - full,
        "bn_refused": refused, "refusal_reasons": pre.refused, "rolled_back": len(pre.rolled_back),
        "ops_left": {k: v for k, v in report.histogram_after.items() if k in ("SUB", "MUL", "ADD", "RELU")},
        "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
        "float16": report.float16,
        "max_rewrite_error": report.max_rewrite_error,
        "jax_error": None if report.verification is None else report.verification.max_rel_error,
        "optimize_seconds": seconds, "timings": report.timings,
    }
    x = [np.random.default_rng(1).standard_normal(tuple(t.shape)).astype(np.float32) for t in model.main.inputs]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, m in (("original", logits_copy(model)), ("fused", logits_copy(fused))):
            for ext in (".tflite", ".circle"):
                paths[name + ext] = os.path.join(tmp, name + ext)
                jaxfuse.save(m, paths[name + ext])
        lite_a, lite_b = run_litert(paths["original.tflite"], x)[0], run_litert(paths["fused.tflite"], x)[0]
        row["litert_error"] = relative_error(lite_b, lite_a)
        try:
            on_a, on_b = run_onert(paths["original.circle"], x)[0], run_onert(paths["fused.circle"], x)[0]
            row["onert_error"] = relative_error(on_b, on_a)
            row["litert_vs_onert_original"] = relative_error(on_a, lite_a)
        except OnertCrash as e:
            row["onert_error"] = None
            row["onert_note"] = str(e)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| model | ops | SUB / MUL left | BN found | fused fully | partly | refused | max rewrite err | "
             "err JAX | err LiteRT | err onert | LiteRT vs onert (orig.) | optimize s | warnings |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        onert = "n/a" if r.get("onert_error") is None else f"{r['onert_error']:.1e}"
        base = "n/a" if r.get("litert_vs_onert_original") is None else f"{r['litert_vs_onert_original']:.1e}"
        left = f"{r['ops_left'].get('SUB', 0)} / {r['ops_left'].get('MUL', 0)}"
        jax_error = "n/a" if r["jax_error"] is None else f"{r['jax_error']:.1e}"
        lines.append(f"| {r['model']} | {r['ops_before']} -> {r['ops_after']} | {left} | {r['bn_found']} | "
                     f"{r['bn_fused_fully']} | {r['bn_fused_partly']} | {r['bn_refused']} | "
                     f"{r['max_rewrite_error']:.1e} | {jax_error} | {r['litert_error']:.1e} | {onert} | {base} | "
                     f"{r['optimize_seconds']:.1f} | {len(r['warnings']) or 'none'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="MODEL")
    parser.add_argument("--json", metavar="OUT.json")
    parser.add_argument("--markdown", metavar="OUT.md")
    args = parser.parse_args(argv)
    rows = []
    for path in args.models:
        rows.append(measure(path))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    table = markdown(rows)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
