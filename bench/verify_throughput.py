"""Throughput of a whole-model comparison (jaxfuse.verify over a data set) on 1, 2 and 4
devices: samples per second through both models, every shared tensor compared.

    python bench/verify_throughput.py [--models tiny ResNet50V2] [--devices 1 2 4]
                                      [--samples N] [--out bench/results]

Each device count runs in its own child process: on CPU the devices are forced host
devices (XLA_FLAGS=--xla_force_host_platform_device_count=D, which shares the machine's
cores between them); where JAX sees accelerators, D of them are used. The child fuses the
model with `jaxfuse optimize` (untimed), then times the comparison of original and fused
over the whole set twice and keeps the faster (the second reuses the first's compiled
programs). The table also says whether each report is identical to the first row's: the
per-sample values do not depend on how many devices compute them, but XLA:CPU's
convolutions can round differently (by ~1e-6) in processes started with some forced device
counts, which then shows in the last digits.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from optimize_profile import resolve_model, write_results  # noqa: E402

CHILD = r"""
import json, sys, time
import numpy as np
import jax
import jaxfuse
from jaxfuse.equivalence import compare
from jaxfuse.samples import open_samples
reference, candidate, data, devices = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
a, b = jaxfuse.load(reference), jaxfuse.load(candidate)
samples = open_samples(data, a.main.inputs)
local = jax.local_devices()[:devices]
assert len(local) == devices, (jax.local_devices(), devices)
times = []  # the first run compiles, the second reuses its programs
for _ in range(2):
    t = time.perf_counter()
    report = compare(a, b, samples, devices=local)
    times.append(time.perf_counter() - t)
out = report.to_dict()
print("RESULT", json.dumps({"seconds": min(times), "samples": len(samples), "devices": report.devices,
                            "platform": local[0].platform, "report": {k: v for k, v in out.items() if k != "devices"}}))
"""


def run(reference: str, candidate: str, data: str, devices: int) -> dict:
    env = dict(os.environ)
    import jax  # only to ask which platform the children will see
    if jax.devices()[0].platform == "cpu":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
    proc = subprocess.run([sys.executable, "-c", CHILD, reference, candidate, data, str(devices)],
                          capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["tiny", "ResNet50V2"])
    p.add_argument("--model-dir", default="/work/models")
    p.add_argument("--devices", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--samples", type=int, default=None,
                   help="samples per model (default: 512 for models under 2 MB, else 128)")
    p.add_argument("--out", metavar="DIR", help="write verify_throughput.{json,md} here")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            path = resolve_model(name, args.model_dir)
            fused = os.path.join(tmp, "fused.circle")
            subprocess.run([sys.executable, "-m", "jaxfuse", "optimize", path, "-o", fused], check=True,
                           capture_output=True)
            import numpy as np

            import jaxfuse
            graph = jaxfuse.load(path).main
            count = args.samples or (512 if os.path.getsize(path) < 2 * 2**20 else 128)
            rng = np.random.default_rng(0)
            data = os.path.join(tmp, "samples.npz")
            np.savez(data, **{t.name: rng.standard_normal((count, *t.shape[1:])).astype(t.dtype)
                              for t in graph.inputs})
            reports = []
            for d in args.devices:
                r = run(path, fused, data, d)
                reports.append(r["report"])
                rows.append({"model": os.path.basename(path), "devices": d, "platform": r["platform"],
                             "samples": r["samples"], "seconds": r["seconds"],
                             "samples_per_s": r["samples"] / r["seconds"]})
                print(json.dumps(rows[-1]), flush=True)
            for row, rep in zip(rows[-len(args.devices):], reports):
                row["same_report_as_first"] = rep == reports[0]
                row["output_rel_error"] = rep["outputs"][0]["rel_error"]
    lines = ["| model | platform | devices | samples | seconds | samples/s | speed-up | output error (report identical to the "
             "first row's?) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(x for x in rows if x["model"] == r["model"] and x["devices"] == args.devices[0])
        lines.append(f"| {r['model']} | {r['platform']} | {r['devices']} | {r['samples']} | {r['seconds']:.2f} | "
                     f"{r['samples_per_s']:.1f} | {r['samples_per_s'] / base['samples_per_s']:.2f}x | "
                     f"{r['output_rel_error']:.4g} ({'identical' if r['same_report_as_first'] else 'differs'}) |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        write_results(args.out, "verify_throughput", table, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
