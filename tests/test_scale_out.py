"""Checks over data sets, devices and hosts: verify / run / optimize --inputs with a leading
sample axis, the same report on 1 and on 4 (forced host) devices, and the same report from
two jax.distributed processes as from one."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxfuse
from jaxfuse import cli, progress
from jaxfuse.equivalence import compare

ROOT = Path(__file__).parent.parent
TINY = ROOT / "examples" / "models" / "resnet50v2_tiny.tflite"
SAMPLES = 16


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The tiny ResNet50V2, a copy with a weight nudged within the tolerance (small, nonzero
    errors) and one nudged beyond it, and 16 samples in place of the batch dimension."""
    tmp = tmp_path_factory.mktemp("scale_out")
    model = jaxfuse.load(TINY)
    paths = {"a": TINY}
    for name, factor in (("close", 1 + 2e-6), ("perturbed", 1.001)):
        other = model.copy()
        conv = [op for op in other.main.ops if op.type == "CONV_2D"][5]
        conv.inputs[1].set_data(conv.inputs[1].data * np.float32(factor))
        paths[name] = tmp / f"{name}.circle"
        jaxfuse.save(other, paths[name])
    x = model.main.inputs[0]
    data = np.random.default_rng(0).standard_normal((SAMPLES, *x.shape[1:])).astype(np.float32)
    paths["samples"] = tmp / "samples.npz"
    np.savez(paths["samples"], **{x.name: data})
    return paths


def verify_json(capsys, *argv):
    code = cli.main(["verify", *map(str, argv), "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def without_placement(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("devices", "processes")}


def test_verify_over_a_dataset_reports_every_sample(models, capsys):
    code, report, err = verify_json(capsys, models["a"], models["close"], "--inputs", models["samples"])
    assert code == 0 and err == "" and report["ok"]
    assert report["samples"] == SAMPLES and report["devices"] == 1
    (out,) = report["outputs"]
    assert 0 < out["p99_error"] <= out["rel_error"] < 1e-4
    assert 0 <= out["worst_sample"] < SAMPLES and out["top1_agreement"] == 1.0
    code, report, _ = verify_json(capsys, models["a"], models["perturbed"], "--inputs", models["samples"])
    assert code == 1 and not report["ok"] and report["samples"] == SAMPLES
    code, report, _ = verify_json(capsys, models["a"], models["perturbed"], "--inputs", models["samples"],
                                  "--samples", 3)
    assert report["samples"] == 3


def test_verify_text_names_the_worst_sample(models, capsys):
    code = cli.main(["verify", str(models["a"]), str(models["close"]), "--inputs", str(models["samples"])])
    out, _ = capsys.readouterr()
    assert code == 0 and f"over {SAMPLES} samples: 99th percentile" in out and "top-1 agreement 100.00%" in out


def test_the_per_sample_figures_are_those_of_single_samples(models):
    """Chunked, batched evaluation gives each sample the error it has alone, up to float32
    rounding (a batch's convolutions may sum in another order: ~1e-6 of the scale)."""
    a, b = jaxfuse.load(models["a"]), jaxfuse.load(models["perturbed"])
    data = np.load(models["samples"])
    x = next(iter(data.values()))[:4, None]
    together = compare(a, b, [[s] for s in x], chunk=2)
    alone = [compare(a, b, [[s]]).outputs[0].rel_error for s in x]
    assert together.outputs[0].rel_error == pytest.approx(max(alone), abs=2e-6)
    assert alone[together.outputs[0].worst_sample] == pytest.approx(max(alone), abs=2e-6)


def test_one_sample_files_and_directories_still_work(models, tmp_path, capsys):
    x = jaxfuse.load(TINY).main.inputs[0]
    data = np.load(models["samples"])[x.name]
    np.savez(tmp_path / "one.npz", **{x.name: data[:1]})           # exactly the input's shape
    (tmp_path / "dir").mkdir()
    np.savez(tmp_path / "dir" / "a.npz", **{x.name: data[:3]})
    np.savez_compressed(tmp_path / "dir" / "b.npz", **{x.name: data[3:5, None]})  # [N, 1, ...], compressed
    for path, count in ((tmp_path / "one.npz", 1), (tmp_path / "dir", 5)):
        code, report, _ = verify_json(capsys, models["a"], models["close"], "--inputs", path)
        assert code == 0 and report["samples"] == count


def test_run_over_a_dataset_matches_single_runs(models, tmp_path, capsys):
    x = jaxfuse.load(TINY).main.inputs[0]
    data = np.load(models["samples"])[x.name][:5]
    np.savez(tmp_path / "in.npz", **{x.name: data})
    code = cli.main(["run", str(TINY), "--inputs", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz")])
    out, err = capsys.readouterr()
    assert code == 0 and err == "" and "(5 samples)" in out.splitlines()[0]
    with np.load(tmp_path / "out.npz") as saved:
        (name,) = saved.files
        batched = saved[name]
    assert batched.shape == (5, *jaxfuse.load(TINY).main.outputs[0].shape[1:])  # in place of the batch of 1
    for i in (0, 4):
        np.savez(tmp_path / "one.npz", **{x.name: data[i:i + 1]})
        cli.main(["run", str(TINY), "--inputs", str(tmp_path / "one.npz"), "-o", str(tmp_path / "one_out.npz")])
        with np.load(tmp_path / "one_out.npz") as single:
            np.testing.assert_allclose(batched[i], single[name][0], rtol=1e-4, atol=1e-6)
    capsys.readouterr()


def test_optimize_checks_the_whole_dataset(models, tmp_path, capsys):
    code = cli.main(["optimize", str(TINY), "-o", str(tmp_path / "f.circle"), "--inputs", str(models["samples"]),
                     "--report", str(tmp_path / "r.json")])
    out, _ = capsys.readouterr()
    assert code == 0, out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["verification"]["samples"] == SAMPLES and report["verification"]["ok"]
    c = report["compilation"]  # (programs compiled by earlier tests in this process are reused)
    assert c["compiled"] + c["reused"] + c["reused_unlowered"] > 0


def _subprocess_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "XLA_FLAGS"}
    env.update(JAXFUSE_CACHE_DIR=str(tmp_path / "xla-cache"), PYTHONPATH=str(ROOT), **extra)
    return env


def test_verify_on_four_forced_host_devices_gives_the_one_device_report(models, tmp_path, capsys):
    _, one, _ = verify_json(capsys, models["a"], models["close"], "--inputs", models["samples"])
    proc = subprocess.run([sys.executable, "-m", "jaxfuse", "verify", str(models["a"]), str(models["close"]),
                           "--inputs", str(models["samples"]), "--json"], capture_output=True, text=True,
                          timeout=600, env=_subprocess_env(tmp_path, XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    assert proc.returncode == 0, proc.stderr
    four = json.loads(proc.stdout)
    assert four["devices"] == 4 and one["devices"] == 1
    assert without_placement(four) == without_placement(one)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_verify_in_two_local_processes_gives_the_single_process_report(models, tmp_path, capsys):
    _, single, _ = verify_json(capsys, models["a"], models["close"], "--inputs", models["samples"])
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "jaxfuse", "verify", str(models["a"]), str(models["close"]),
                               "--inputs", str(models["samples"]), "--json", "--distributed"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_subprocess_env(tmp_path, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                                  JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    results = []
    try:
        for p in procs:
            results.append(p.communicate(timeout=600))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    # jaxfuse itself must join before anything starts JAX's backend (the command reads its models
    # while JAX starts in the background: without the backend, in a distributed run)
    assert not any("before any JAX calls" in err for _, err in results), [err[-2000:] for _, err in results]
    if any("cannot start jax.distributed" in err for _, err in results):
        pytest.skip("jax.distributed cannot start here: " + " / ".join(err.strip()[-300:] for _, err in results))
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    assert results[1][0] == ""  # only the first process prints
    report = json.loads(results[0][0])
    assert report["processes"] == 2 and report["devices"] == 2
    assert without_placement(report) == without_placement(single)


def test_progress_bars_only_when_enabled(capsys):
    assert not progress.enabled()  # the command line turns them on for a terminal only
    with progress.bar(3, "quiet") as bar:
        bar.update(3)
    progress.enable(True)
    try:
        with progress.bar(3, "quick") as bar:  # shorter than the delay: nothing drawn
            bar.update(3)
    finally:
        progress.enable(False)
    assert capsys.readouterr().err == ""
