"""Equivalence checks: whole models (every shared tensor) and single rewrites (a region).

Errors are reported relative to the scale of the reference tensor:
    rel = max|a - b| / max|a|
so one tolerance fits logits, probabilities and feature maps alike.
"""
from __future__ import annotations

import ctypes
from dataclasses import asdict, dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from .ir import Graph, Model, Tensor
from .lowering import lower_graph, tensor_keys
from .numerics import error_stats, random_input, relative_to_scale

DEFAULT_TOLERANCE = 1e-4        # whole model, relative to each output's scale
DEFAULT_LOCAL_TOLERANCE = 1e-5  # one rewrite, relative to each observed tensor's scale


class VerificationError(RuntimeError):
    """The optimized model does not match the original; `.report` says where."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


def random_inputs(graph: Graph, samples: int = 2, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[random_input(t, rng) for t in graph.inputs] for _ in range(samples)]


def release_free_memory() -> None:
    """Hand memory that is already freed back to the OS (glibc keeps it otherwise): whole-model
    runs free hundreds of MB of buffers, and keeping them would add up phase after phase."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def activation_statistics(graph: Graph, sample: list[np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tensor key: (mean, std) per channel (last axis)} of every float tensor of `graph` on
    one sample, computed inside one jit so that no activation is kept."""
    fn, params = lower_graph(graph, all_tensors=True)

    def stats(params, *xs):
        out = {}
        for key, value in fn(params, *xs).items():
            if jnp.issubdtype(value.dtype, jnp.floating) and value.ndim >= 1:
                axes = tuple(range(value.ndim - 1))
                v = value.astype(jnp.float32)
                out[key] = (jnp.mean(v, axis=axes), jnp.std(v, axis=axes))
        return out

    result = jax.tree_util.tree_map(np.asarray, jax.jit(stats)(params, *sample))
    del params
    release_free_memory()
    return result


@dataclass
class TensorDiff:
    name: str
    max_abs_error: float
    scale: float
    rel_error: float


@dataclass
class VerifyReport:
    ok: bool
    tolerance: float
    samples: int
    max_abs_error: float
    max_rel_error: float
    outputs: list[TensorDiff]
    compared_tensors: int
    first_divergent: TensorDiff | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = "equivalent" if self.ok else "NOT equivalent"
        line = (f"{verdict}: max error {self.max_abs_error:.3g} abs, {self.max_rel_error:.3g} of the output scale "
                f"(tolerance {self.tolerance:g}), {len(self.outputs)} output(s), {self.compared_tensors} shared "
                f"tensor(s), {self.samples} sample(s)")
        if self.first_divergent is not None:
            d = self.first_divergent
            line += f"; first divergent tensor '{d.name}' (error {d.rel_error:.3g} of its scale)"
        return "; ".join([line, *self.notes])


def compare(reference: Model, candidate: Model, samples: list[list[np.ndarray]] | None = None, *,
            tolerance: float = DEFAULT_TOLERANCE, seed: int = 0, num_samples: int = 2) -> VerifyReport:
    """Run both models through JAX and compare outputs (by position) and every tensor the
    two share by name. Both run inside one jit-compiled function that returns only error
    statistics, so no activation is kept and constants the two share are on the device once."""
    ga, gb = reference.main, candidate.main
    if [tuple(t.shape) for t in ga.inputs] != [tuple(t.shape) for t in gb.inputs]:
        raise ValueError("the models have different inputs: "
                         f"{[list(t.shape) for t in ga.inputs]} vs {[list(t.shape) for t in gb.inputs]}")
    if len(ga.outputs) != len(gb.outputs):
        raise ValueError(f"the models have {len(ga.outputs)} and {len(gb.outputs)} outputs")
    if samples is None:
        samples = random_inputs(ga, num_samples, seed)
    keys_a, keys_b = tensor_keys(ga), tensor_keys(gb)
    by_key_b = {keys_b[id(t)]: t for t in gb.tensors}
    order = [t for op in ga.ops for t in op.outputs]  # the reference's execution order
    shared = [(keys_a[id(t)], t) for t in order
              if keys_a[id(t)] in by_key_b and not by_key_b[keys_a[id(t)]].is_constant]
    mismatched = [name for name, t in shared if tuple(by_key_b[name].shape) != tuple(t.shape)]
    pairs = [(f"out{i}", keys_a[id(ta)], keys_b[id(tb)]) for i, (ta, tb) in enumerate(zip(ga.outputs, gb.outputs))]
    pairs += [(name, name, name) for name, _ in shared if name not in mismatched]

    cache: dict = {}
    fa, pa = lower_graph(ga, all_tensors=True, param_cache=cache)
    fb, pb = lower_graph(gb, all_tensors=True, param_cache=cache)

    def errors(pa, pb, *xs):
        va, vb = fa(pa, *xs), fb(pb, *xs)
        out = {}
        for label, ka, kb in pairs:
            a, b = va[ka].astype(jnp.float32), vb[kb].astype(jnp.float32)
            if a.shape == b.shape:
                # NaN where the reference has NaN (and equal infinities) is agreement; NaN on one side only is not
                agree = (jnp.isnan(a) & jnp.isnan(b)) | (a == b)
                diff = jnp.where(agree, 0.0, jnp.abs(a - b))
                diff = jnp.where(jnp.isnan(diff), jnp.inf, diff)
                scale = jnp.where(jnp.isfinite(a), jnp.abs(a), 0.0)
                out[label] = (jnp.max(diff, initial=0.0), jnp.max(scale, initial=0.0), jnp.sum(~jnp.isfinite(a)))
        return out

    jitted = jax.jit(errors)
    worst: dict[str, tuple[float, float, float]] = {}
    nonfinite_outputs: set[str] = set()
    for xs in samples:
        for label, (abs_err, scale, nonfinite) in jitted(pa, pb, *xs).items():
            if label.startswith("out") and int(nonfinite):
                nonfinite_outputs.add(label)
            abs_err, scale = float(abs_err), float(scale)
            rel = relative_to_scale(abs_err, scale)
            if label not in worst or rel > worst[label][2]:
                worst[label] = (abs_err, scale, rel)

    del pa, pb, cache, jitted
    release_free_memory()
    outputs = []
    for i, (ta, tb) in enumerate(zip(ga.outputs, gb.outputs)):
        abs_err, scale, rel = worst.get(f"out{i}", (float("inf"), 0.0, float("inf")))  # absent: shapes differ
        outputs.append(TensorDiff(ta.name, abs_err, scale, rel))
    first = None
    for name, t in shared:
        abs_err, scale, rel = worst.get(name, (float("inf"), 0.0, float("inf")))
        if rel > tolerance:
            first = TensorDiff(t.name, abs_err, scale, rel)
            break
    max_abs = max((o.max_abs_error for o in outputs), default=0.0)
    max_rel = max((o.rel_error for o in outputs), default=0.0)
    notes = [f"output '{ga.outputs[int(label[3:])].name}' of the reference holds NaN or infinity for these inputs: "
             "there only matching non-finite values were checked" for label in sorted(nonfinite_outputs)]
    return VerifyReport(ok=max_rel <= tolerance and first is None, tolerance=tolerance, samples=len(samples),
                        max_abs_error=max_abs, max_rel_error=max_rel, outputs=outputs,
                        compared_tensors=len(shared), first_divergent=first, notes=notes)


def check_region(before: Graph, after: Graph, frontier: list[Tensor], observed: list[Tensor],
                 samples: list[list[np.ndarray]]) -> float:
    """Largest relative error over `observed` between two versions of a region, each a
    Graph of ops reading `frontier`; both run in one jit-compiled function."""
    f_before, p_before = lower_graph(before, inputs=frontier, outputs=observed)
    f_after, p_after = lower_graph(after, inputs=frontier, outputs=observed)
    both = jax.jit(lambda pb, pa, *xs: (f_before(pb, *xs), f_after(pa, *xs)))
    worst = 0.0
    for xs in samples:
        out_before, out_after = both(p_before, p_after, *xs)
        for a, b in zip(out_before, out_after):
            worst = max(worst, error_stats(np.asarray(a), np.asarray(b))[2])
    return worst
