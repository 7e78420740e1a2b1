"""What jaxfuse's XLA settings (jaxfuse.xla: no YNNPACK fusions) cost or save on XLA CPU.

    python bench/xla_settings.py [MODEL ...] [--rounds N] [--out bench/results/xla_settings]

Each model is compiled four times with jax.jit: with XLA's default options, without YNNPACK
(the checks' setting), with jaxfuse.xla's SAFE_COMPILER_OPTIONS (YNNPACK for single
convolutions and dots, no fusions), and with the defaults again as an A/A control; they are timed
interleaved (jaxfuse.benchmark.interleaved: fresh instances every round, fastest of the
round), and reported as ratios to the defaults with 95% bootstrap intervals. Each is also
compared with LiteRT's builtin kernels on the same input, since a setting that is faster
but wrong is no option. Runs with JAXFUSE_KEEP_XLA_FLAGS=1 so that "default" means XLA's.
"""
from __future__ import annotations

import os

os.environ["JAXFUSE_KEEP_XLA_FLAGS"] = "1"  # before jaxfuse is imported: measure XLA's own defaults too

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = [ROOT / "examples" / "models" / f"{name}.tflite"
                  for name in ("resnet50v2_tiny", "mobilenetv2_tiny", "densenet_tiny")]


def factory(model, options: dict):
    import jax

    from jaxfuse.lowering import lower
    from jaxfuse.numerics import random_inputs
    fn, params = lower(model)
    inputs = random_inputs(model.main, 1)[0]
    compiled = jax.jit(fn).lower(params, *inputs).compile(compiler_options=options or None)
    outputs = [np.asarray(y) for y in compiled(params, *inputs)]

    def make():
        return lambda: jax.block_until_ready(compiled(params, *inputs))
    return make, outputs, inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "xla_settings")
    args = parser.parse_args()
    import jaxfuse
    from jaxfuse.benchmark import interleaved, summarize
    from jaxfuse.engines import relative_error, run_litert
    from jaxfuse.xla import NO_YNNPACK, SAFE_COMPILER_OPTIONS
    rows = []
    for path in args.models:
        model = jaxfuse.load(path)
        variants, errors = {}, {}
        for name, options in (("default", {}), ("no YNNPACK", NO_YNNPACK), ("jaxfuse", SAFE_COMPILER_OPTIONS),
                              ("default again (A/A)", {})):
            make, outputs, inputs = factory(model, options)
            variants[name] = make
            reference = run_litert(path, inputs)
            errors[name] = max(relative_error(o, r) for o, r in zip(outputs, reference))
        timing = summarize(interleaved(variants, args.rounds), "default")
        row = {"model": path.name, "median_s_default": timing["default"].median_s,
               **{f"{k}_ratio": v.to_dict() for k, v in timing.items() if k != "default"},
               **{f"{k}_error_vs_litert": e for k, e in errors.items()}}
        print(json.dumps(row), flush=True)
        rows.append(row)
    lines = [f"# XLA CPU with and without jaxfuse's settings\n\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax "
             f"{__import__('jax').__version__}, {args.rounds} interleaved rounds. Time relative to XLA's defaults "
             "(median of per-round ratios, 95% bootstrap interval); error: worst output against LiteRT's builtin "
             "kernels, relative to its scale.\n",
             "| model | defaults: median ms | YNNPACK off (the checks') | jaxfuse: YNNPACK for single convolutions "
             "and dots | A/A control | error: defaults | YNNPACK off | jaxfuse |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratios = " | ".join(f"{x['ratio_median']:.3f} [{x['ratio_ci_low']:.3f}, {x['ratio_ci_high']:.3f}]"
                            for x in (r["no YNNPACK_ratio"], r["jaxfuse_ratio"], r["default again (A/A)_ratio"]))
        errors = " | ".join(f"{r[k + '_error_vs_litert']:.1e}" for k in ("default", "no YNNPACK", "jaxfuse"))
        lines.append(f"| {r['model']} | {1000 * r['median_s_default']:.2f} | {ratios} | {errors} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
