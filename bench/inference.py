"""How much faster the fused models run, and how close that is to the limit.

For each model: the converter's original, jaxfuse's fused model, and the CEILINGS (the
original with every batch-norm MUL/ADD simply deleted, with or without its ReLU: not
equivalent, they only bound what any fusion could gain) are timed interleaved (A B C,
rotating, fresh instances every round) on XLA (jax.jit, CPU and GPU when JAX sees one),
onert's cpu backend and LiteRT with 1 and 2 threads, with the original timed a second time as an A/A control (its ratio shows the
noise floor). Reported per runtime: medians, and the median, 95% interval and
interquartile range of the per-round ratios to the original; the share of the available
gain that fusion gets is (1 - fused) / (1 - ceiling).

    python bench/inference.py [--models ResNet50V2 ...] [--model-dir DIR] [--rounds N]
                              [--make-models-python PYTHON] [--out bench/results]

Models missing from --model-dir are generated with examples/make_models.py (needs
tensorflow: the `convert` extra, or --make-models-python naming an interpreter that has it).
Results: OUT/inference.json, OUT/inference.md and OUT/inference.png (matplotlib: `bench` extra).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

import jaxfuse
from jaxfuse.benchmark import interleaved, litert_factory, onert_factory, summarize, xla_factory
from jaxfuse.engines import ONERT_AVAILABLE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARMUP = 1  # untimed inferences of each fresh instance
DEFAULT_MODELS = ["ResNet50V2", "ResNet101V2", "DenseNet121", "MobileNetV2", "ResNet50"]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def ensure_model(name: str, model_dir: str, python: str) -> str:
    path = os.path.join(model_dir, f"{name}.tflite")
    if not os.path.exists(path):
        os.makedirs(model_dir, exist_ok=True)
        cmd = [python, os.path.join(ROOT, "examples", "make_models.py"), name, "--out-dir", model_dir]
        print("generating:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return path


def delete_batchnorms(model, keep_activation: bool):
    """A ceiling: every per-channel MUL -> ADD pair (a batch norm the converter left) removed.
    Not equivalent to the model; it bounds the gain. With keep_activation, an ADD's fused
    ReLU stays as a RELU op: the bound for any EXACT fusion, which cannot drop the ReLU."""
    from jaxfuse.passes.common import ACT_NONE, ACT_RELU, activation, constant_operand, make_op, mul_add_pair
    model = model.copy()
    g = model.main
    uses = g.consumer_map()
    removed = 0
    for mul in list(g.ops):
        add = mul_add_pair(g, mul, uses)
        if add is None or constant_operand(mul) is None or constant_operand(add) is None:
            continue
        x = mul.inputs[constant_operand(mul)[0]]
        if keep_activation and activation(add) == ACT_RELU:
            make_op(g, "RELU", [x], [add.outputs[0]], before=add)
        elif keep_activation and activation(add) != ACT_NONE:
            continue
        else:
            g.replace_all_uses(add.outputs[0], x)
        g.remove_op(mul).remove_op(add)
        removed += 1
    g.cleanup()
    return model, removed


def profile_optimize(path: str, out: str) -> dict:
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "optimize_profile.py"), path, out],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_model(name: str, path: str, rounds: int, min_seconds: float, tmp: str) -> dict:
    fused_path = os.path.join(tmp, f"{name}_fused.circle")
    profile = profile_optimize(path, fused_path)
    original = jaxfuse.load(path)
    fused = jaxfuse.load(fused_path)
    ceiling, removed = delete_batchnorms(original, keep_activation=False)
    exact_ceiling, _ = delete_batchnorms(original, keep_activation=True)
    # "original_again" is the original once more: an A/A control whose ratio shows the noise floor
    variants = {"original": original, "original_again": original, "fused": fused, "ceiling": ceiling,
                "ceiling_relu_kept": exact_ceiling}
    files = {}
    for key, model in variants.items():
        for ext in (".tflite", ".circle"):
            files[key + ext] = os.path.join(tmp, f"{name}_{key}{ext}")
            jaxfuse.save(model, files[key + ext])

    import jax
    engines = {"XLA CPU": lambda key: xla_factory(variants[key], "cpu")}
    if any(d.platform == "gpu" for d in jax.devices()):
        engines["XLA GPU"] = lambda key: xla_factory(variants[key], "gpu")
    if ONERT_AVAILABLE:
        engines["onert cpu (1 thread)"] = lambda key: onert_factory(files[key + ".circle"], 1)
    engines["LiteRT 1 thread"] = lambda key: litert_factory(files[key + ".tflite"], 1)
    engines["LiteRT 2 threads"] = lambda key: litert_factory(files[key + ".tflite"], 2)

    result = {"model": name, "ops": {k: sum(v.op_histogram().values()) for k, v in variants.items()},
              "batchnorms_deleted_in_ceiling": removed, "optimize": profile, "engines": {}}
    for engine, make in engines.items():
        print(f"  {name} / {engine}: timing {rounds} rounds", flush=True)
        try:
            factories = {key: make(key) for key in variants}
            for factory in factories.values():
                factory()()  # an op the runtime lacks shows here, not in the middle of the timing
        except Exception as e:  # say so in the table
            result["engines"][engine] = {"error": f"{type(e).__name__}: {e}"}
            continue
        times = interleaved(factories, rounds, warmup=WARMUP, min_seconds=min_seconds)
        summary = summarize(times, "original")
        f = summary["fused"].ratio_median
        result["engines"][engine] = {
            **{k: t.to_dict() for k, t in summary.items()},
            **{f"share_of_{c}_gain": (1 - f) / (1 - summary[c].ratio_median) if summary[c].ratio_median < 1 else None
               for c in ("ceiling", "ceiling_relu_kept")},
        }
    return result


def _ratio(t: dict, iqr: bool = True) -> str:
    text = f"{t['ratio_median']:.4f} [{t['ratio_ci_low']:.4f}, {t['ratio_ci_high']:.4f}]"
    return text + (f" ({t['ratio_q1']:.4f}-{t['ratio_q3']:.4f})" if iqr else "")


def _share(e: dict, ceiling: str) -> str:
    """Share of a ceiling's gain, or why it is not meaningful: a ceiling whose interval
    includes 1.0 has no gain that the noise does not explain."""
    if e[ceiling]["ratio_ci_high"] >= 1.0:
        return "n/a: ceiling gain within noise"
    note = "" if e["fused"]["ratio_ci_high"] < 1.0 else " (fused gain within noise)"
    return f"{e[f'share_of_{ceiling}_gain']:.0%}{note}"


def table(results: list[dict]) -> str:
    lines = ["| model | runtime | original ms | A/A control: original again / original [95% CI] | "
             "fused/original [95% CI] (IQR) | ceiling/original [95% CI] (IQR) | "
             "share of the ceiling's gain | ceiling with ReLU kept / original [95% CI] | share of its gain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for engine, e in r["engines"].items():
            if "error" in e:
                lines.append(f"| {r['model']} | {engine} | failed: {e['error'][:60]} | | | |")
                continue
            o, f, c, k = e["original"], e["fused"], e["ceiling"], e["ceiling_relu_kept"]
            lines.append(f"| {r['model']} | {engine} | {o['median_s'] * 1e3:.2f} | "
                         f"{_ratio(e['original_again'], iqr=False)} | {_ratio(f)} | {_ratio(c)} | "
                         f"{_share(e, 'ceiling')} | {_ratio(k, iqr=False)} | {_share(e, 'ceiling_relu_kept')} |")
    lines += ["", "| model | file MB | ops orig -> fused (ceiling, ceiling with ReLU kept) | optimize s: read / reference run / passes / "
              "whole-model check / write = total | peak RSS MB (above the jax baseline) | above baseline / file size |",
              "|---|---|---|---|---|---|"]
    for r in results:
        p = r["optimize"]
        t = p["timings_s"]
        lines.append(f"| {r['model']} | {p['file_mb']:.1f} | {r['ops']['original']} -> {r['ops']['fused']} "
                     f"({r['ops']['ceiling']}, {r['ops']['ceiling_relu_kept']}) | "
                     f"{t['read']:.2f} / {t.get('reference_run', 0):.2f} / "
                     f"{t['passes']:.2f} / {t.get('whole_model_check', 0):.2f} / {t['write']:.2f} = "
                     f"{p['total_s']:.1f} | {p['peak_rss_mb']:.0f} ({_above(p)}) | {_above(p, p['file_mb'])} |")
    return "\n".join(lines)


def _above(p: dict, per: float | None = None) -> str:
    above = p["peak_above_baseline_mb"]
    if above <= 0:
        return "none: no check ran, JAX never started"
    return f"{above:.0f}" if per is None else f"{above / per:.1f}x"


def summary_table(results: list[dict]) -> str:
    """The README's compact view: median ratio and its 95% interval per model and runtime."""
    engines = list(dict.fromkeys(e for r in results for e in r["engines"]))
    lines = ["| model | variant | " + " | ".join(engines) + " |", "|---|---|" + "---|" * len(engines)]
    for r in results:
        for key, label in (("fused", "**fused (jaxfuse)**"), ("ceiling_relu_kept", "ceiling, ReLU kept"),
                           ("ceiling", "ceiling, BN deleted"), ("original_again", "A/A control (original again)")):
            cells = []
            for engine in engines:
                e = r["engines"].get(engine, {})
                t = e.get(key)
                cells.append("failed" if t is None else
                             f"{t['ratio_median']:.3f} [{t['ratio_ci_low']:.3f}, {t['ratio_ci_high']:.3f}]")
            lines.append(f"| {r['model']} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(r["model"], engine, e) for r in results for engine, e in r["engines"].items() if "error" not in e]
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(rows) + 1.5))
    y = np.arange(len(rows))
    bars = ((-0.3, "fused", "tab:blue", "fused"), (-0.1, "ceiling_relu_kept", "tab:green", "ceiling, ReLU kept"),
            (0.1, "ceiling", "tab:gray", "ceiling (BN deleted)"), (0.3, "original_again", "tab:orange", "A/A control"))
    for offset, key, color, label in bars:
        med = np.array([e[key]["ratio_median"] for _, _, e in rows])
        err = np.array([[e[key]["ratio_median"] - e[key]["ratio_ci_low"], e[key]["ratio_ci_high"] - e[key]["ratio_median"]]
                        for _, _, e in rows]).T
        ax.barh(y + offset, med - 1, left=1, height=0.2, xerr=err, color=color, label=f"{label} / original")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(y, [f"{m} / {eng}" for m, eng, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("time relative to the original (median of per-round ratios, 95% CI bars); < 1 is faster")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, metavar="NAME")
    parser.add_argument("--model-dir", default=os.path.join(tempfile.gettempdir(), "jaxfuse-bench-models"))
    parser.add_argument("--make-models-python", default=sys.executable, metavar="PYTHON")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--min-seconds", type=float, default=0.25,
                        help="per round, each variant runs single inferences for about this long and its fastest "
                             "is kept (default 0.25)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    results = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="jaxfuse-bench-") as tmp:
        for name in args.models:
            path = ensure_model(name, args.model_dir, args.make_models_python)
            results.append(bench_model(name, path, args.rounds, args.min_seconds, tmp))
            print(table(results[-1:]), flush=True)
    header = (f"Taken {started} on {machine()}; jax {__import__('jax').__version__}, {args.rounds} interleaved "
              f"rounds per runtime, each on a fresh instance of every variant ({WARMUP} untimed inference, "
              f"then the fastest of the inferences that fill {args.min_seconds:g} s); onert with NUM_THREADS=1; "
              f"LiteRT with its default XNNPACK delegate.")
    with open(os.path.join(args.out, "inference.json"), "w") as f:
        json.dump({"machine": machine(), "taken": started, "rounds": args.rounds, "results": results}, f, indent=2)
    with open(os.path.join(args.out, "inference.md"), "w") as f:
        f.write(header + "\n\n" + table(results) + "\n\nCompact view (time / original, median [95% interval]):\n\n"
                + summary_table(results) + "\n")
    plot(results, os.path.join(args.out, "inference.png"))
    print(header)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
