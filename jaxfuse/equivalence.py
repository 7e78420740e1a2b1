"""Equivalence checks: whole models (every shared tensor) and single rewrites (a region).

Errors are reported relative to the scale of the reference tensor:
    rel = max|a - b| / max|a|
so one tolerance fits logits, probabilities and feature maps alike.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .ir import Graph, Model, Tensor
from .lowering import lower_graph, tensor_keys
from .numerics import error_stats, random_inputs, relative_to_scale
from .memory import release_free_memory
from .segmented import compile_for_check, evaluate_in_segments

DEFAULT_TOLERANCE = 1e-4        # whole model, relative to each output's scale
DEFAULT_LOCAL_TOLERANCE = 1e-5  # one rewrite, relative to each observed tensor's scale


class VerificationError(RuntimeError):
    """The optimized model does not match the original; `.report` says where."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


def activation_statistics(graph: Graph, sample: list[np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tensor key: (mean, std) per channel (last axis)} of every float tensor of `graph` on
    one sample. The model runs segment by segment, so only one segment's activations exist
    at a time."""
    keys = tensor_keys(graph)
    floating = {keys[id(t)] for t in graph.tensors
                if not t.is_constant and t.dtype is not None and t.dtype.kind == "f" and len(t.shape) >= 1}
    result = {}
    for (values,) in evaluate_in_segments(graph, [sample], floating.__contains__):
        for key, value in values.items():
            if value.ndim >= 1:
                flat = value.reshape(-1, value.shape[-1]).astype(np.float32, copy=False)
                result[key] = (flat.mean(axis=0), flat.std(axis=0))
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
    two share by name. Both run segment by segment in lockstep (jaxfuse.segmented), so
    peak memory is a few segments' weights and activations, not two whole models'."""
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

    labels_a: dict[str, list[str]] = {}
    labels_b: dict[str, list[str]] = {}
    for label, ka, kb in pairs:
        labels_a.setdefault(ka, []).append(label)
        labels_b.setdefault(kb, []).append(label)
    worst: dict[str, tuple[float, float, float]] = {}
    nonfinite_outputs: set[str] = set()
    for label, per_sample in _paired_values(ga, gb, samples, labels_a, labels_b):
        for a, b in per_sample:
            if a.shape != b.shape:
                continue
            abs_err, scale, nonfinite = _nan_aware_error(a, b)
            if label.startswith("out") and nonfinite:
                nonfinite_outputs.add(label)
            rel = relative_to_scale(abs_err, scale)
            if label not in worst or rel > worst[label][2]:
                worst[label] = (abs_err, scale, rel)
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


def _paired_values(ga: Graph, gb: Graph, samples, labels_a: dict[str, list[str]], labels_b: dict[str, list[str]]):
    """Yield (label, [(value in a, value in b) per sample]) as soon as both graphs have
    computed a label's tensors. The two run segment by segment in lockstep, the one
    behind advancing first, so only the few tensors computed by one and not yet by the
    other are held at a time."""
    runs = [evaluate_in_segments(ga, samples, labels_a.__contains__),
            evaluate_in_segments(gb, samples, labels_b.__contains__)]
    labels = [labels_a, labels_b]
    pending: list[dict[str, list]] = [{}, {}]
    done = [False, False]
    while not all(done):
        side = 1 if pending[0] and not done[1] or done[0] else 0  # a ahead: let b catch up
        other = 1 - side
        try:
            segment = next(runs[side])
        except StopIteration:
            done[side] = True
            continue
        for key in segment[0]:
            values = [kept[key] for kept in segment]
            for label in labels[side][key]:
                if label in pending[other]:
                    theirs = pending[other].pop(label)
                    yield label, list(zip(values, theirs) if side == 0 else zip(theirs, values))
                else:
                    pending[side][label] = values


def _nan_aware_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    """(max |a - b|, max finite |a|, count of non-finite values in a); NaN on both sides and
    equal infinities are agreement, NaN on one side only is an infinite error."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore"):
        agree = (np.isnan(a) & np.isnan(b)) | (a == b)
        diff = np.where(agree, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)
    finite = np.isfinite(a)
    scale = np.where(finite, np.abs(a), 0.0)
    return float(np.max(diff, initial=0.0)), float(np.max(scale, initial=0.0)), int(np.sum(~finite))


def check_region(before: Graph, after: Graph, frontier: list[Tensor], observed: list[Tensor],
                 samples: list[list[np.ndarray]]) -> float:
    """Largest relative error over `observed` between two versions of a region, each a
    Graph of ops reading `frontier`; both run in one jit-compiled function."""
    f_before, p_before = lower_graph(before, inputs=frontier, outputs=observed)
    f_after, p_after = lower_graph(after, inputs=frontier, outputs=observed)
    both = None
    worst = 0.0
    for xs in samples:
        if both is None:
            both = compile_for_check(lambda pb, pa, *xs: (f_before(pb, *xs), f_after(pa, *xs)), p_before, p_after, *xs)
        out_before, out_after = both(p_before, p_after, *xs)
        for a, b in zip(out_before, out_after):
            worst = max(worst, error_stats(np.asarray(a), np.asarray(b))[2])
    del both, p_before, p_after
    release_free_memory()
    return worst
