"""Wall time and peak memory of one `jaxfuse optimize` (the real command, all checks on),
split into its phases.

    python bench/optimize_profile.py MODEL.tflite OUT.circle   # prints one JSON object

The command runs in a child process (jaxfuse.cli.main, what the console script runs),
which reports its own peak RSS (VmHWM; wait4's ru_maxrss would also count the parent's
pages from before exec). The baseline is the peak of a child that only imports jaxfuse
and starts jax's CPU backend, which every run pays whatever the model; "above the
baseline" is what the model costs. Phase times come from the command's own --report.
"""
import json
import os
import subprocess
import sys
import tempfile

REPORT_PEAK = "print('VmHWM', next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
BASELINE = ("import jax, jaxfuse.cli, jaxfuse.passes, jaxfuse.equivalence; "
            "jaxfuse.memory.map_large_allocations(); jax.numpy.zeros(1).block_until_ready(); " + REPORT_PEAK)
COMMAND = "import sys, jaxfuse.cli; code = jaxfuse.cli.main(sys.argv[1:]); " + REPORT_PEAK + "; sys.exit(code)"


def peak_rss_mb(code: str, *args: str) -> float:
    """Run `python -c code args` to completion (it must exit 0); its peak resident set in MB."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args) or code} failed: {proc.stderr[-2000:]}")
    return int(proc.stdout.split("VmHWM")[-1]) / 1024  # kB


def main(model_path: str, out_path: str) -> dict:
    baseline = peak_rss_mb(BASELINE)
    with tempfile.TemporaryDirectory() as tmp:
        report_path = os.path.join(tmp, "report.json")
        peak = peak_rss_mb(COMMAND, "optimize", model_path, "-o", out_path, "--report", report_path)
        with open(report_path) as f:
            report = json.load(f)
    timings = dict(report["timings"])
    total = timings.pop("total")
    file_mb = os.path.getsize(model_path) / 2**20
    return {
        "model": os.path.basename(model_path), "file_mb": file_mb,
        "timings_s": timings, "total_s": total,
        "baseline_rss_mb": baseline, "peak_rss_mb": peak, "peak_above_baseline_mb": peak - baseline,
        "peak_above_baseline_per_file_size": (peak - baseline) / file_mb,
        "ops": [report["ops_before"], report["ops_after"]], "rewrites": len(report["rewrites"]),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
