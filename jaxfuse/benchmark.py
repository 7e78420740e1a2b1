"""Interleaved timing of models on XLA (jax.jit), LiteRT and onert.

Machines are shared and noisy, so variants are measured A B C A B C ..., each round on a
fresh instance of each variant and keeping its fastest of a few inferences, and a
variant's speed is reported as the median over rounds of its time divided by the
baseline's time in the same round, with the interquartile range of those ratios.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from .ir import Model
from .numerics import random_inputs

Runner = Callable[[], None]
Factory = Callable[[], Runner]  # makes a fresh instance of a model on a runtime


def xla_factory(model: Model, device: str = "cpu") -> Factory:
    """jax.jit (jaxfuse.xla.jit) on `device` ("cpu" or "gpu"), compiled once; each instance places the weights
    and inputs on the device anew. An instance runs one blocking inference."""
    import jax

    from .lowering import lower
    from .xla import jit

    target = jax.devices(device)[0]
    fn, host_params = lower(model)
    host_params = {k: np.asarray(v) for k, v in host_params.items()}
    host_inputs = random_inputs(model.main, 1)[0]
    placed = jax.device_put((host_params, host_inputs), target)  # compiles for `target`
    compiled = jit(fn).lower(placed[0], *placed[1]).compile()  # jaxfuse.xla's settings: LiteRT's answers
    del placed

    def make() -> Runner:
        params = jax.device_put(host_params, target)
        inputs = [jax.device_put(x, target) for x in host_inputs]

        def run():
            jax.block_until_ready(compiled(params, *inputs))
        return run
    return make


def litert_factory(path: str, threads: int) -> Factory:
    """LiteRT with its default delegates (XNNPACK on CPU), as an application would run it;
    each instance is a new Interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    from .io import read, to_bytes
    model = read(path)
    content = to_bytes(model, "tflite")
    inputs = random_inputs(model.main, 1)[0]

    def make() -> Runner:
        interp = Interpreter(model_content=content, num_threads=threads)
        interp.allocate_tensors()
        for d, x in zip(interp.get_input_details(), inputs):
            interp.set_tensor(d["index"], x)
        return interp.invoke
    return make


def onert_factory(path: str, threads: int = 1) -> Factory:
    """onert's cpu backend (thread count from NUM_THREADS, read when a session is made);
    each instance is a new session."""
    from onert.infer import session

    from .io import read
    inputs = random_inputs(read(path).main, 1)[0]

    def make() -> Runner:
        os.environ["NUM_THREADS"] = str(threads)
        sess = session(path, "cpu")
        sess.infer(inputs)  # prepares the session
        return lambda: sess.infer(inputs)
    return make


def interleaved(factories: dict[str, Factory], rounds: int, warmup: int = 2, reps: int | None = None,
                min_seconds: float = 0.02) -> dict[str, list[float]]:
    """Seconds per inference of each variant, one entry per round; the order of the variants
    rotates from round to round so none always runs first.

    Every round makes a fresh instance of each variant (after freeing the last one) and
    runs `warmup` untimed inferences: where an instance's buffers land in memory changes
    its speed by up to 1.5% for its whole life (measured with LiteRT on ResNet50V2), so
    keeping one instance per variant would pass that off as a difference between models.
    Then the variant runs `reps` single inferences and the round keeps the fastest: other
    processes only ever add time. Without `reps`, enough to last about `min_seconds`."""
    names = list(factories)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            run = factories[name]()
            for _ in range(warmup):
                run()
            if reps is None:
                start = time.perf_counter()
                run()
                reps = max(1, int(np.ceil(min_seconds / max(time.perf_counter() - start, 1e-9))))
            fastest = float("inf")
            for _ in range(reps):
                start = time.perf_counter()
                run()
                fastest = min(fastest, time.perf_counter() - start)
            times[name].append(fastest)
            del run  # the next instance must not share memory with this one
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


@dataclass
class BenchReport:
    """What `jaxfuse bench` measured: per model (by label, the baseline first) its Timing."""
    device: str
    platform: str
    rounds: int
    warmup: int
    models: dict[str, Timing]

    def to_dict(self) -> dict:
        """What `jaxfuse bench --json` prints."""
        return {"device": self.device, "rounds": self.rounds, "models": {n: t.to_dict() for n, t in self.models.items()}}

    def format_text(self) -> str:
        """What `jaxfuse bench` prints."""
        baseline = next(iter(self.models), None)
        lines = [f"XLA on {self.device} ({self.platform}), {self.rounds} interleaved rounds, each on fresh instances "
                 f"after {self.warmup} warm-up inference(s)"]
        for name, t in self.models.items():
            line = f"  {name}: median {t.median_s * 1e3:.3f} ms"
            if name != baseline:
                line += (f"; B/A per-round ratio median {t.ratio_median:.4f} "
                         f"[95% interval {t.ratio_ci_low:.4f}, {t.ratio_ci_high:.4f}] "
                         f"(IQR {t.ratio_q1:.4f}-{t.ratio_q3:.4f})")
            lines.append(line)
        return "\n".join(lines)


def bench(models: list, rounds: int = 30, warmup: int = 2, min_seconds: float = 0.1, device: str = "cpu",
          labels: list[str] | None = None) -> BenchReport:
    """`jaxfuse bench` as a function: the models (Models or paths; the first is the baseline)
    jit-compiled on `device` and timed interleaved over `rounds` (interleaved, summarize);
    labels default to "A:path", "B:path", ... (or "A", "B", ... for Models).

    >>> import jaxfuse
    >>> report = jaxfuse.bench(["examples/models/misc_ops_tiny.tflite"], rounds=2, warmup=0, min_seconds=0)
    >>> list(report.to_dict()["models"]), report.models["A:examples/models/misc_ops_tiny.tflite"].ratio_median
    (['A:examples/models/misc_ops_tiny.tflite'], 1.0)
    >>> print(report.format_text().splitlines()[1])  # doctest: +ELLIPSIS
      A:examples/models/misc_ops_tiny.tflite: median ... ms
    """
    import jax

    from .io import read

    if labels is None:
        labels = [f"{chr(ord('A') + i)}" + (f":{os.fspath(m)}" if isinstance(m, (str, os.PathLike)) else "")
                  for i, m in enumerate(models)]
    models = [read(os.fspath(m)).validate() if isinstance(m, (str, os.PathLike)) else m for m in models]
    try:
        target = jax.devices(device)[0]
    except RuntimeError:
        raise ValueError(f"JAX sees no {device} device") from None
    factories = {label: xla_factory(model, device) for label, model in zip(labels, models)}
    times = interleaved(factories, rounds, warmup, min_seconds=min_seconds)
    return BenchReport(str(target), target.platform, rounds, warmup, summarize(times, labels[0]))
