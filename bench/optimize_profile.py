"""Wall time and peak memory of one `jaxfuse optimize` (the real command, all checks on),
split into its phases.

    python bench/optimize_profile.py MODEL.tflite OUT.circle   # prints one JSON object

The command runs in a child process; its peak RSS comes from the kernel (wait4's
ru_maxrss). The baseline is the peak of a child that only imports jaxfuse and starts
jax's CPU backend, which every run pays whatever the model; "above the baseline" is what
the model costs. Phase times come from the command's own --report.
"""
import json
import os
import subprocess
import sys
import tempfile

BASELINE = ("import jax, jaxfuse.cli, jaxfuse.passes, jaxfuse.equivalence; "
            "jaxfuse.memory.map_large_allocations(); jax.numpy.zeros(1).block_until_ready()")


def peak_rss_mb(argv: list[str]) -> float:
    """Run argv to completion; its peak resident set in MB (it must exit 0)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {stderr.decode(errors='replace')[-2000:]}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def main(model_path: str, out_path: str) -> dict:
    baseline = peak_rss_mb([sys.executable, "-c", BASELINE])
    with tempfile.TemporaryDirectory() as tmp:
        report_path = os.path.join(tmp, "report.json")
        peak = peak_rss_mb([sys.executable, "-m", "jaxfuse", "optimize", model_path, "-o", out_path,
                            "--report", report_path])
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
