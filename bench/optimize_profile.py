"""Wall time and peak memory of one `jaxfuse optimize`, split into its phases; run in a
fresh process per model so that peak RSS belongs to that model alone.

    python bench/optimize_profile.py MODEL.tflite OUT.circle   # prints one JSON object
"""
import json
import os
import sys
import time


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """VmHWM: this process's own peak (ru_maxrss would include a parent's from before exec)."""
    return _status_mb("VmHWM")


def main(model_path: str, out_path: str) -> dict:
    t = time.perf_counter()
    import jax  # noqa: F401  (imported first so the baseline includes the runtime)

    import jaxfuse
    import jaxfuse.passes
    import_s = time.perf_counter() - t
    baseline = rss_mb()
    t = time.perf_counter()
    model = jaxfuse.load(model_path)
    read_s = time.perf_counter() - t
    fused, report = jaxfuse.optimize(model)
    t = time.perf_counter()
    jaxfuse.save(fused, out_path)
    write_s = time.perf_counter() - t
    peak = peak_rss_mb()
    timings = {"read": read_s, **report.timings, "write": write_s}
    return {
        "model": os.path.basename(model_path), "file_mb": os.path.getsize(model_path) / 2**20,
        "import_s": import_s, "timings_s": timings, "total_s": sum(timings.values()),
        "baseline_rss_mb": baseline, "peak_rss_mb": peak, "peak_above_baseline_mb": peak - baseline,
        "ops": [report.ops_before, report.ops_after], "rewrites": len(report.rewrites),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
