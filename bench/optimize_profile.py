"""Wall time, XLA compilations and peak memory of one `jaxfuse optimize` (the real command,
all checks on), split into its phases.

    python bench/optimize_profile.py MODEL.tflite OUT.circle   # prints one JSON object
    python bench/optimize_profile.py --models tiny ResNet50V2 ResNet101V2 \\
        --model-dir /work/models --tree before=/tmp/jaxfuse-before --out bench/results
    python bench/optimize_profile.py --models ResNet50V2 --rounds 7 \\
        --tree before=/tmp/jaxfuse-before --tree control=/tmp/jaxfuse-before   # ratios, A/A control

The command runs in a child process (jaxfuse.cli.main and its exit, what the console script runs),
which reports its own peak RSS (VmHWM; wait4's ru_maxrss would also count the parent's
pages from before exec). The baseline is the peak of a child that only imports jaxfuse
and starts jax's CPU backend, which every run pays whatever the model; "above the
baseline" is what the model costs. Phase times come from the command's own --report.

Each child starts with an empty persistent compilation cache (JAX_COMPILATION_CACHE_DIR
and JAXFUSE_CACHE_DIR point at a new temporary directory), so the figures are a first
run's. The child counts XLA compilations itself, through jax.monitoring: every backend
compilation (jit programs, checks, and the small programs eager operations compile) with
its seconds, the seconds spent tracing to jaxprs and lowering to MLIR, and persistent-cache
hits. This works on any version of jaxfuse, so `--tree NAME=DIR` profiles another source
tree (e.g. `git archive HEAD | tar -x -C DIR` before a change) in the same run, on the same
models, alternating with the current tree. With --rounds, every round runs each tree once
(in an order that rotates from round to round), and a second table gives each tree's
median wall time and the median of its per-round ratios to the first tree, with a 95%
bootstrap interval: naming one tree twice is the A/A control that shows the noise.

Every tree runs from bytecode compiled beforehand (under a temporary PYTHONPYCACHEPREFIX),
as an installed package does, so no run pays for compiling jaxfuse's Python source.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "examples", "models", "resnet50v2_tiny.tflite")

REPORT_PEAK = "print('VmHWM', next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
BASELINE = ("import jax, jaxfuse.cli, jaxfuse.passes, jaxfuse.equivalence; "
            "jaxfuse.memory.map_large_allocations(); jax.numpy.zeros(1).block_until_ready(); " + REPORT_PEAK)
# Counts compilations through jax.monitoring (what jax itself reports), then runs the CLI. The
# listeners are registered as jax's dispatch module loads, whenever and on whichever thread the
# command imports jax, so the child starts as the console script does (jax not imported yet).
COMMAND = """
import importlib.abc, importlib.machinery, json, sys, time
start = time.perf_counter()
counts = {}
def listen(dispatch):
    from jax._src import monitoring
    names = {dispatch.BACKEND_COMPILE_EVENT: "compile", dispatch.JAXPR_TRACE_EVENT: "trace",
             dispatch.JAXPR_TO_MLIR_MODULE_EVENT: "lower"}
    def on_duration(event, seconds, **kw):
        name = names.get(event)
        if name:
            n, s = counts.get(name, (0, 0.0))
            counts[name] = (n + 1, s + seconds)
    def on_event(event, **kw):
        if event == "/jax/compilation_cache/cache_hits":
            n, s = counts.get("cache_hits", (0, 0.0))
            counts["cache_hits"] = (n + 1, 0.0)
    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)
class ListenOnceLoaded(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "jax._src.dispatch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            listen(module)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, ListenOnceLoaded())
import jaxfuse.cli
sys.argv = ["jaxfuse", *sys.argv[1:]]
code = jaxfuse.cli.main()  # as the console script runs it (persistent compilation cache included)
import os
times = os.times()
print("PROFILE", json.dumps({"counts": counts, "in_process_s": time.perf_counter() - start,
                             "cpu_s": times.user + times.system}))
""" + REPORT_PEAK + "\ngetattr(jaxfuse.cli, 'leave', sys.exit)(code)  # and exits as the console script does"


def _child_env(tree: str | None, cache_dir: str | None, extra_env: dict | None = None) -> dict:
    env = dict(os.environ)
    if extra_env:
        env.update(extra_env)
        if "PYTHONPYCACHEPREFIX" in extra_env:  # read (and write) the bytecode there
            env.pop("PYTHONDONTWRITEBYTECODE", None)
    if tree is not None:
        env["PYTHONPATH"] = tree + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if cache_dir is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
        env["JAXFUSE_CACHE_DIR"] = cache_dir
    return env


def run_child(code: str, *args: str, tree: str | None = None, cache_dir: str | None = None,
              extra_env: dict | None = None) -> tuple[str, float]:
    """Run `python -c code args` to completion (it must exit 0): (stdout, wall seconds)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=_child_env(tree, cache_dir, extra_env), cwd=tree or None)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args) or code} failed: {proc.stderr[-2000:]}")
    return proc.stdout, wall


def _peak_mb(stdout: str) -> float:
    return int(stdout.split("VmHWM")[-1]) / 1024  # kB


def peak_rss_mb(code: str, *args: str, tree: str | None = None, extra_env: dict | None = None) -> float:
    """Run `python -c code args` to completion (it must exit 0); its peak resident set in MB."""
    return _peak_mb(run_child(code, *args, tree=tree, extra_env=extra_env)[0])


def main(model_path: str, out_path: str, tree: str | None = None, baseline: float | None = None,
         extra_env: dict | None = None) -> dict:
    """Profile one `jaxfuse optimize MODEL -o OUT` with an empty compilation cache; `tree`
    is the source tree to import jaxfuse from (default: the installed one)."""
    baseline = peak_rss_mb(BASELINE, tree=tree, extra_env=extra_env) if baseline is None else baseline
    with tempfile.TemporaryDirectory() as tmp:
        report_path = os.path.join(tmp, "report.json")
        cache_dir = os.path.join(tmp, "cache")
        stdout, wall = run_child(COMMAND, "optimize", os.path.abspath(model_path), "-o", os.path.abspath(out_path),
                                 "--report", report_path, tree=tree, cache_dir=cache_dir, extra_env=extra_env)
        with open(report_path) as f:
            report = json.load(f)
    peak = _peak_mb(stdout)
    child = json.loads(stdout.split("PROFILE", 1)[1].splitlines()[0])
    counts = {k: {"count": n, "seconds": s} for k, (n, s) in child["counts"].items()}
    timings = dict(report["timings"])
    total = timings.pop("total")
    file_mb = os.path.getsize(model_path) / 2**20
    return {
        "model": os.path.basename(model_path), "file_mb": file_mb,
        "timings_s": timings, "total_s": total, "wall_s": wall, "in_process_s": child["in_process_s"],
        "cpu_s": child["cpu_s"],
        "compilations": counts.get("compile", {"count": 0, "seconds": 0.0})["count"],
        "compile_s": counts.get("compile", {"count": 0, "seconds": 0.0})["seconds"],
        "trace_s": counts.get("trace", {"seconds": 0.0})["seconds"],
        "lower_s": counts.get("lower", {"seconds": 0.0})["seconds"],
        "persistent_cache_hits": counts.get("cache_hits", {"count": 0})["count"],
        "report_compilation": report.get("compilation"),
        "baseline_rss_mb": baseline, "peak_rss_mb": peak, "peak_above_baseline_mb": peak - baseline,
        "peak_above_baseline_per_file_size": (peak - baseline) / file_mb,
        "ops": [report["ops_before"], report["ops_after"]], "rewrites": len(report["rewrites"]),
    }


def resolve_model(name: str, model_dir: str) -> str:
    if name == "tiny":
        return TINY
    if os.path.exists(name):
        return name
    return os.path.join(model_dir, name if name.endswith((".tflite", ".circle")) else f"{name}.tflite")


PHASES = ["read", "import", "reference_run", "passes", "whole_model_check", "write"]


def table(results: list[dict], trees: list[str]) -> str:
    lines = ["| model | file MB | tree | compilations | compile s (trace + lower s) | "
             + " / ".join(PHASES) + " = optimize total s | command wall s (CPU s) | peak RSS MB (above baseline) "
             "| above baseline / file size |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r["timings_s"]
        phases = " / ".join(f"{t.get(p, 0.0):.2f}" for p in PHASES)
        lines.append(f"| {r['model']} | {r['file_mb']:.1f} | {r['tree']} | {r['compilations']} | "
                     f"{r['compile_s']:.2f} ({r['trace_s'] + r['lower_s']:.2f}) | {phases} = {r['total_s']:.2f} | "
                     f"{r['wall_s']:.2f} ({r['cpu_s']:.1f}) | {r['peak_rss_mb']:.0f} ({r['peak_above_baseline_mb']:.0f}) | "
                     f"{r['peak_above_baseline_per_file_size']:.1f}x |")
    # ratios within each tree, against its ResNet50V2 when present
    extra = []
    for tree in trees:
        rows = {r["model"]: r for r in results if r["tree"] == tree}
        base = rows.get("ResNet50V2.tflite")
        if base:
            ratios = ", ".join(f"{m.split('.')[0]} {r['total_s'] / base['total_s']:.2f}x"
                               for m, r in rows.items() if m.startswith("ResNet") and m != "ResNet50V2.tflite")
            if ratios:
                extra.append(f"- {tree}: optimize total relative to ResNet50V2: {ratios}")
    return "\n".join(lines + ([""] + extra if extra else []))


def ratio_table(results: list[dict], trees: list[str], baseline: str) -> str:
    """Per model and tree: the median command wall time over the rounds and its ratio to
    `baseline`'s (median of the per-round ratios, 95% bootstrap interval)."""
    from jaxfuse.benchmark import summarize
    lines = [f"| model | tree | rounds | median wall s | ratio to {baseline} [95% interval] |", "|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in results):
        walls = {tree: [r["wall_s"] for r in results if r["model"] == model and r["tree"] == tree] for tree in trees}
        summary = summarize(walls, baseline)
        for tree in trees:
            t = summary[tree]
            lines.append(f"| {model} | {tree} | {len(walls[tree])} | {t.median_s:.2f} | "
                         f"{t.ratio_median:.3f} [{t.ratio_ci_low:.3f}, {t.ratio_ci_high:.3f}] |")
    return "\n".join(lines)


def median_run(runs: list[dict]) -> dict:
    """The run with the median command wall time (the lower of the two middle ones)."""
    return sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2]


def compile_bytecode(tree: str | None, prefix: str) -> None:
    """Compile the tree's modules to bytecode under `prefix`, as `pip install` does for an
    installed package, so no run pays for compiling Python source (the children read it
    from PYTHONPYCACHEPREFIX=prefix, whatever PYTHONDONTWRITEBYTECODE says here)."""
    source = os.path.join(tree, "jaxfuse") if tree else os.path.dirname(importlib.util.find_spec("jaxfuse").origin)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", source], check=True, stdout=subprocess.DEVNULL,
                   env={**env, "PYTHONPYCACHEPREFIX": prefix})


def cli(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="one model (prints one JSON object)")
    p.add_argument("out", nargs="?", help="where the one model's fused copy goes")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help="'tiny' (examples/models/resnet50v2_tiny.tflite), names in --model-dir, or paths")
    p.add_argument("--model-dir", default="/work/models")
    p.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                   help="also profile the jaxfuse source tree DIR under NAME (repeatable; the same DIR under "
                        "two names is an A/A control). The first is the baseline of the ratios")
    p.add_argument("--rounds", type=int, default=1,
                   help="runs per model and tree; each round runs every tree once, in an order that rotates "
                        "from round to round. The tables show the median run; ratios are per round")
    p.add_argument("--out", dest="out_dir", metavar="DIR", help="write optimize_profile.{json,md} here")
    args = p.parse_args(argv)
    if args.model:
        print(json.dumps(main(args.model, args.out)))
        return 0
    trees = [tuple(t.split("=", 1)) for t in args.tree] + [("after", None)]
    names = [name for name, _ in trees]
    if len(set(names)) != len(names):
        p.error("each --tree needs its own NAME")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, tree in trees:
            compile_bytecode(tree, os.path.join(tmp, "pycache", name))
        env = {name: {"PYTHONPYCACHEPREFIX": os.path.join(tmp, "pycache", name)} for name, _ in trees}
        baselines = {name: peak_rss_mb(BASELINE, tree=tree, extra_env=env[name]) for name, tree in trees}
        for model in args.models:
            path = resolve_model(model, args.model_dir)
            for r in range(args.rounds):
                for name, tree in trees[r % len(trees):] + trees[:r % len(trees)]:
                    result = main(path, os.path.join(tmp, "fused.circle"), tree=tree, baseline=baselines[name],
                                  extra_env=env[name])
                    result.update(tree=name, round=r)
                    results.append(result)
                    print(json.dumps(result), flush=True)
    medians = [median_run([r for r in results if r["model"] == m and r["tree"] == t])
               for m in dict.fromkeys(r["model"] for r in results) for t in names]
    md = table(medians, names)
    if args.rounds > 1 and len(trees) > 1:
        md += "\n\n" + ratio_table(results, names, names[0])
    print(md)
    if args.out_dir:
        write_results(args.out_dir, "optimize_profile", md, rounds=args.rounds, results=results)
    return 0


def write_results(out_dir: str, name: str, table_md: str, **fields) -> None:
    """out_dir/NAME.md (the table) and out_dir/NAME.json (`fields`, with the machine and the date)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump({"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **fields}, f, indent=1)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(table_md + "\n")


if __name__ == "__main__":
    sys.exit(cli())
