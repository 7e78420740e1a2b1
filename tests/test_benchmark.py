"""The timing machinery (jaxfuse.benchmark), `jaxfuse bench`, and the bench/ helpers:
what they compute, not how fast anything is (speed targets live in bench/ only)."""
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

import jaxfuse
from jaxfuse import benchmark, cli

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "models" / "resnet50v2_tiny.tflite"


def load_bench_module(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeClock:
    """time.perf_counter for runners whose duration is scripted."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def scripted_factory(clock, log, name, durations):
    """Instances of one variant whose inferences take the scripted durations in turn."""
    durations = iter(durations)

    def make():
        log.append(f"new {name}")

        def run():
            log.append(name)
            clock.now += next(durations)
        return run
    return make


def test_interleaved_rotates_makes_fresh_instances_and_keeps_the_fastest(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(benchmark.time, "perf_counter", clock)
    log = []
    # per round and variant: 1 warm-up inference, then 2 timed; A's second timed one is disturbed
    a = scripted_factory(clock, log, "A", [1, 1.0, 5.0, 1, 2.0, 9.0, 1, 3.0, 7.0])
    b = scripted_factory(clock, log, "B", [1, 0.5, 0.5, 1, 0.75, 0.625, 1, 0.875, 0.8125])  # exact in binary
    times = benchmark.interleaved({"A": a, "B": b}, rounds=3, warmup=1, reps=2)
    assert times == {"A": [1.0, 2.0, 3.0], "B": [0.5, 0.625, 0.8125]}
    one = ["new A", "A", "A", "A"], ["new B", "B", "B", "B"]
    assert log == one[0] + one[1] + one[1] + one[0] + one[0] + one[1]  # the first variant rotates


def test_interleaved_sizes_reps_to_min_seconds(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(benchmark.time, "perf_counter", clock)
    log = []
    a = scripted_factory(clock, log, "A", [2.0**-6] * 100)
    times = benchmark.interleaved({"A": a}, rounds=2, warmup=0, min_seconds=5 * 2.0**-6)
    # the first round's sizing inference, then 5 timed inferences per round
    assert log.count("A") == 1 + 2 * 5 and log.count("new A") == 2 and times["A"] == [2.0**-6, 2.0**-6]


def test_runtime_factories_make_independent_instances():
    model = jaxfuse.load(TINY)
    make = benchmark.xla_factory(model, "cpu")
    first, second = make(), make()
    first(), second()  # both run; each holds its own copy of the weights


def test_summarize_ratios_quartiles_and_interval():
    base = [1.0] * 9
    other = [0.90, 0.92, 0.94, 0.96, 0.98, 1.00, 1.02, 1.04, 1.06]
    summary = benchmark.summarize({"base": base, "other": other}, "base")
    assert summary["base"].ratio_median == 1.0 and summary["base"].ratio_iqr == 0.0
    t = summary["other"]
    assert t.median_s == pytest.approx(0.98)
    assert t.ratio_median == pytest.approx(0.98)
    assert (t.ratio_q1, t.ratio_q3) == (pytest.approx(0.94), pytest.approx(1.02))
    assert 0.90 <= t.ratio_ci_low <= t.ratio_median <= t.ratio_ci_high <= 1.06
    assert t.to_dict()["ratio_iqr"] == pytest.approx(0.08)


def test_bench_command_times_a_model_against_itself(capsys):
    code = cli.main(["bench", str(TINY), str(TINY), "--rounds", "3", "--warmup", "1", "--min-seconds", "0",
                     "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["rounds"] == 3 and len(report["models"]) == 2
    a, b = report["models"].values()
    assert a["ratio_median"] == 1.0 and a["median_s"] > 0 and b["median_s"] > 0
    assert b["ratio_ci_low"] <= b["ratio_median"] <= b["ratio_ci_high"]


def test_bench_command_text_output(capsys):
    code = cli.main(["bench", str(TINY), "--rounds", "2", "--warmup", "0"])
    out, _ = capsys.readouterr()
    assert code == 0 and "2 interleaved rounds" in out and "median" in out


@pytest.mark.parametrize("argv, fragment", [
    (["--rounds", "0"], "--rounds"), (["--min-seconds", "-1"], "--min-seconds"), (["--device", "gpu"], "gpu")])
def test_bench_command_bad_arguments(argv, fragment, capsys):
    import jax
    if argv[-1] == "gpu" and any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this machine has a GPU")
    code = cli.main(["bench", str(TINY), *argv])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and fragment in err


def test_ceilings_delete_every_batchnorm_pair():
    inference = load_bench_module("inference")
    model = jaxfuse.load(TINY)
    hist = model.op_histogram()
    ceiling, removed = inference.delete_batchnorms(model, keep_activation=False)
    kept, removed_kept = inference.delete_batchnorms(model, keep_activation=True)
    assert removed == removed_kept == 17
    assert model.op_histogram() == hist  # the input model is not changed
    assert ceiling.op_histogram().get("MUL", 0) == hist["MUL"] - 17 == 0
    assert ceiling.op_histogram()["ADD"] == hist["ADD"] - 17
    assert kept.op_histogram().get("RELU", 0) == hist.get("RELU", 0) + 17
    assert sum(kept.op_histogram().values()) == sum(hist.values()) - 17


def test_optimize_profile_measures_the_real_command(tmp_path):
    profile = load_bench_module("optimize_profile")
    result = profile.main(str(TINY), str(tmp_path / "fused.circle"))
    assert (tmp_path / "fused.circle").exists()
    assert result["ops"] == [115, 94] and result["rewrites"] > 0
    assert set(result["timings_s"]) >= {"read", "import", "reference_run", "passes", "whole_model_check", "write"}
    assert result["total_s"] >= sum(result["timings_s"].values()) * 0.99
    assert result["peak_rss_mb"] > result["baseline_rss_mb"] > 0
    assert result["peak_above_baseline_per_file_size"] == pytest.approx(
        result["peak_above_baseline_mb"] / (os.path.getsize(TINY) / 2**20))
    assert np.isfinite(result["peak_above_baseline_mb"])
