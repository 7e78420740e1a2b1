"""Interleaved timing of models on XLA (jax.jit), LiteRT and onert.

Machines are shared and noisy, so variants are measured A B C A B C ... after a warm-up,
each round keeping a variant's fastest of a few inferences, and a variant's speed is
reported as the median over rounds of its time divided by the baseline's time in the
same round, with the interquartile range of those ratios.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from .ir import Model

Runner = Callable[[], None]


def seeded_inputs(model: Model, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(t.shape)).astype(t.dtype) for t in model.main.inputs]


def xla_runner(model: Model, device: str = "cpu") -> Runner:
    """One blocking inference through jax.jit on `device` ("cpu" or "gpu"), compiled up front."""
    import jax

    from .lowering import lower

    target = jax.devices(device)[0]
    fn, params = lower(model)
    params = jax.device_put(params, target)
    inputs = [jax.device_put(x, target) for x in seeded_inputs(model)]
    compiled = jax.jit(fn).lower(params, *inputs).compile()

    def run():
        jax.block_until_ready(compiled(params, *inputs))
    return run


def litert_runner(path: str, threads: int) -> Runner:
    """LiteRT with its default delegates (XNNPACK on CPU), as an application would run it."""
    from ai_edge_litert.interpreter import Interpreter

    from .io import read, to_bytes
    model = read(path)
    interp = Interpreter(model_content=to_bytes(model, "tflite"), num_threads=threads)
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), seeded_inputs(model)):
        interp.set_tensor(d["index"], x)
    return interp.invoke


def onert_runner(path: str, threads: int = 1) -> Runner:
    """onert's cpu backend (thread count from NUM_THREADS, read when the session is made)."""
    os.environ["NUM_THREADS"] = str(threads)
    from onert.infer import session

    from .io import read
    sess = session(path, "cpu")
    inputs = seeded_inputs(read(path))
    sess.infer(inputs)  # prepares the session
    return lambda: sess.infer(inputs)


def interleaved(runners: dict[str, Runner], rounds: int, warmup: int = 3, reps: int | None = None,
                min_seconds: float = 0.02) -> dict[str, list[float]]:
    """Seconds per inference of each runner, one entry per round; the order of the runners
    rotates from round to round so none always runs first. In a round each runner runs
    `reps` single inferences and the round keeps the fastest: other processes only ever
    add time, so the minimum is the least disturbed figure. Without `reps`, enough to last
    about `min_seconds`."""
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    if reps is None:
        start = time.perf_counter()
        runners[names[0]]()
        reps = max(1, int(np.ceil(min_seconds / max(time.perf_counter() - start, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fastest = float("inf")
            for _ in range(reps):
                start = time.perf_counter()
                runners[name]()
                fastest = min(fastest, time.perf_counter() - start)
            times[name].append(fastest)
    return times


@dataclass
class Timing:
    median_s: float
    ratio_median: float      # median over rounds of time / baseline time (1.0 for the baseline)
    ratio_q1: float          # interquartile range of the per-round ratios: the machine's noise
    ratio_q3: float
    ratio_ci_low: float      # 95% bootstrap interval of the median ratio: how well it is known
    ratio_ci_high: float

    @property
    def ratio_iqr(self) -> float:
        return self.ratio_q3 - self.ratio_q1

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio_iqr": self.ratio_iqr}


def summarize(times: dict[str, list[float]], baseline: str) -> dict[str, Timing]:
    base = np.asarray(times[baseline])
    rng = np.random.default_rng(0)
    out = {}
    for name, values in times.items():
        ratios = np.asarray(values) / base
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        medians = np.median(rng.choice(ratios, size=(2000, ratios.size)), axis=1)
        low, high = np.percentile(medians, [2.5, 97.5])
        out[name] = Timing(float(np.median(values)), float(med), float(q1), float(q3), float(low), float(high))
    return out
