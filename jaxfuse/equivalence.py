"""Equivalence checks: whole models (every shared tensor) and single rewrites (a region).

Float errors are reported relative to the scale of the reference tensor:
    rel = max|a - b| / max|a|
so one tolerance fits logits, probabilities and feature maps alike. Two quantized models
are compared in LSBs (quantization steps of the reference tensor), a float model and a
quantized one by the SQNR of the quantized side's dequantized values, in dB:
    sqnr = 10 log10(sum x_float^2 / sum (x_float - x_dequantized)^2)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .ir import Graph, Model, Tensor
from .lowering import lower_graph, tensor_keys
from .numerics import (convert_sample, dequantize, error_stats, is_quantized_integer, json_safe, random_inputs,
                       relative_to_scale, short_name, sqnr_db)
from .memory import release_free_memory
from .segmented import compile_for_check, evaluate_in_segments

DEFAULT_TOLERANCE = 1e-4        # whole model, relative to each output's scale
DEFAULT_LOCAL_TOLERANCE = 1e-5  # one rewrite, relative to each observed tensor's scale
DEFAULT_MAX_LSB = 1.0           # two quantized models: outputs within one quantization step
DEFAULT_MIN_SQNR = 20.0         # a float model against its quantized version: dB on every output
FLOAT, QUANTIZED, MIXED = "float", "quantized", "float-vs-quantized"


class VerificationError(RuntimeError):
    """The optimized model does not match the original; `.report` says where."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


HUGE_ACTIVATION = 1e30  # beyond this a value is a sentinel (padding with -inf or -3.4e38), not a signal


def channel_statistics(value: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) per channel (last axis) over the finite values below HUGE_ACTIVATION, in
    float32; None when some channel has no such value (nothing meaningful to sample from)."""
    flat = value.reshape(-1, value.shape[-1]).astype(np.float64)
    usable = np.isfinite(flat) & (np.abs(np.nan_to_num(flat)) < HUGE_ACTIVATION)
    count = usable.sum(axis=0)
    if not np.all(count):
        return None
    kept = np.where(usable, flat, 0.0)
    mean = kept.sum(axis=0) / count
    spread = np.sqrt(np.where(usable, (kept - mean) ** 2, 0.0).sum(axis=0) / count)
    return mean.astype(np.float32), spread.astype(np.float32)


def activation_statistics(graph: Graph, sample: list[np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray] | None]:
    """{tensor key: (mean, std) per channel (last axis), or None} of every float tensor of
    `graph` on one sample (see channel_statistics). The model runs segment by segment, so
    only one segment's activations exist at a time."""
    keys = tensor_keys(graph)
    floating = {keys[id(t)] for t in graph.tensors
                if not t.is_constant and t.dtype is not None and t.dtype.kind == "f" and len(t.shape) >= 1}
    result = {}
    for (values,) in evaluate_in_segments(graph, [sample], floating.__contains__):
        for key, value in values.items():
            if value.ndim >= 1 and value.size:
                result[key] = channel_statistics(value)
    release_free_memory()
    return result


@dataclass
class TensorDiff:
    """How far the candidate's tensor is from the reference's, over all samples. Errors are
    in real units (quantized values dequantized). `kind` says what was compared: "float"
    (both float), "quantized" (both quantized: lsb_error / within_1_lsb count in units of
    the reference's scale) or "float-vs-quantized" (sqnr_db: the float side is the signal)."""
    name: str
    max_abs_error: float
    scale: float
    rel_error: float
    kind: str = FLOAT
    sqnr_db: float | None = None
    lsb_error: float | None = None
    within_1_lsb: float | None = None


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
    mode: str = FLOAT                     # the kind of the output comparisons (mixed outputs: float-vs-quantized)
    max_lsb: float | None = None          # the limit applied to quantized pairs
    min_sqnr: float | None = None         # the limit applied to float-vs-quantized pairs (and quantized ones if set)
    worst_tensors: list[TensorDiff] = field(default_factory=list)  # lowest SQNR first

    def to_dict(self) -> dict:
        return json_safe(asdict(self))

    def summary(self) -> str:
        verdict = "equivalent" if self.ok else "NOT equivalent"
        if self.mode == FLOAT:
            line = (f"{verdict}: max error {self.max_abs_error:.3g} abs, {self.max_rel_error:.3g} of the output scale "
                    f"(tolerance {self.tolerance:g})")
        elif self.mode == QUANTIZED:
            worst = max((o.lsb_error for o in self.outputs if o.lsb_error is not None), default=0.0)
            share = min((o.within_1_lsb for o in self.outputs if o.within_1_lsb is not None), default=1.0)
            line = (f"{verdict}: outputs within {worst:.3g} LSB (limit {self.max_lsb:g}), {share:.2%} of elements "
                    f"within 1 LSB, SQNR {_sqnr_text(self.outputs)}")
        else:
            line = (f"{'acceptable' if self.ok else 'NOT acceptable'}: SQNR of the quantized outputs "
                    f"{_sqnr_text(self.outputs)} (minimum {self.min_sqnr:g} dB)")
        line += (f", {len(self.outputs)} output(s), {self.compared_tensors} shared tensor(s), "
                 f"{self.samples} sample(s)")
        if self.first_divergent is not None:
            d = self.first_divergent
            size = f"{d.lsb_error:.3g} LSB" if d.kind == QUANTIZED else f"error {d.rel_error:.3g} of its scale"
            line += f"; first divergent tensor '{d.name}' ({size})"
        if self.worst_tensors and self.mode != FLOAT:
            line += "; lowest SQNR: " + ", ".join(f"'{short_name(t.name)}' {t.sqnr_db:.1f} dB"
                                                  for t in self.worst_tensors[:3])
        return "; ".join([line, *self.notes])


def _sqnr_text(diffs: list[TensorDiff]) -> str:
    return ", ".join(f"{d.sqnr_db:.2f} dB" for d in diffs if d.sqnr_db is not None) or "n/a"


def pair_kind(a: Tensor, b: Tensor) -> str:
    quantized = is_quantized_integer(a) + is_quantized_integer(b)
    return (FLOAT, MIXED, QUANTIZED)[quantized]


class _Accumulated:
    """One compared pair's statistics over the samples."""

    def __init__(self, a: Tensor, b: Tensor):
        self.a, self.b, self.kind = a, b, pair_kind(a, b)
        self.abs_err = self.scale = self.rel = 0.0
        self.nonfinite = 0
        self.signal = self.noise = 0.0
        self.lsb = 0.0
        self.within = self.count = 0

    def add(self, value_a: np.ndarray, value_b: np.ndarray) -> None:
        real_a, real_b = dequantize(value_a, self.a), dequantize(value_b, self.b)
        abs_err, scale, nonfinite = _nan_aware_error(real_a, real_b)
        rel = relative_to_scale(abs_err, scale)
        if rel > self.rel or (self.rel == 0 and abs_err > self.abs_err):
            self.abs_err, self.scale, self.rel = abs_err, scale, rel
        self.nonfinite += nonfinite
        if self.kind == FLOAT:
            return
        signal = real_b if self.kind == MIXED and is_quantized_integer(self.a) else real_a
        finite = np.isfinite(real_a) & np.isfinite(real_b)
        self.signal += float(np.sum(np.where(finite, signal, 0.0) ** 2))
        self.noise += float(np.sum(np.subtract(real_a, real_b, out=np.zeros_like(real_a), where=finite) ** 2))
        if self.kind == QUANTIZED:
            lsb = np.abs(real_a - real_b) / dequantize_scale(self.a, real_a.ndim)
            self.lsb = max(self.lsb, float(np.max(lsb, initial=0.0)))
            self.within += int(np.sum(lsb <= 1.0 + 1e-9))
            self.count += lsb.size

    def diff(self, name: str) -> TensorDiff:
        sqnr = sqnr_db(self.signal, self.noise) if self.kind != FLOAT else None
        lsb = self.lsb if self.kind == QUANTIZED else None
        within = (self.within / self.count if self.count else 1.0) if self.kind == QUANTIZED else None
        return TensorDiff(name, self.abs_err, self.scale, self.rel, self.kind, sqnr, lsb, within)


def dequantize_scale(tensor: Tensor, ndim: int) -> np.ndarray:
    """The tensor's scale shaped to broadcast against its values (one LSB in real units)."""
    scale = np.asarray(tensor.quantization.scale, np.float64).reshape(-1)
    if scale.size == 1:
        return scale[0]
    shape = [1] * ndim
    shape[tensor.quantization.quantized_dimension] = -1
    return scale.reshape(shape)


def _acceptable(d: TensorDiff, tolerance: float, max_lsb: float, min_sqnr: float | None) -> bool:
    if d.kind == FLOAT:
        return d.rel_error <= tolerance
    if d.kind == QUANTIZED:
        return d.lsb_error <= max_lsb and (min_sqnr is None or d.sqnr_db >= min_sqnr)
    return d.sqnr_db >= min_sqnr


def compare(reference: Model, candidate: Model, samples: list[list[np.ndarray]] | None = None, *,
            tolerance: float = DEFAULT_TOLERANCE, seed: int = 0, num_samples: int = 2,
            max_lsb: float = DEFAULT_MAX_LSB, min_sqnr: float | None = None) -> VerifyReport:
    """Run both models through JAX and compare outputs (by position) and every tensor the
    two share by name. Both run segment by segment in lockstep (jaxfuse.segmented), so
    peak memory is a few segments' weights and activations, not two whole models'.

    Float pairs must agree within `tolerance` of the reference's scale; quantized pairs
    within `max_lsb` LSB (and `min_sqnr` dB when given); a float output against a quantized
    one must reach `min_sqnr` dB (default DEFAULT_MIN_SQNR). `samples` are in the
    reference's input types; the candidate gets the same real values in its own types
    (quantized or dequantized)."""
    ga, gb = reference.main, candidate.main
    if [tuple(t.shape) for t in ga.inputs] != [tuple(t.shape) for t in gb.inputs]:
        raise ValueError("the models have different inputs: "
                         f"{[list(t.shape) for t in ga.inputs]} vs {[list(t.shape) for t in gb.inputs]}")
    if len(ga.outputs) != len(gb.outputs):
        raise ValueError(f"the models have {len(ga.outputs)} and {len(gb.outputs)} outputs")
    if samples is None:
        samples = random_inputs(ga, num_samples, seed)
    samples_b = [convert_sample(sample, ga.inputs, gb.inputs) for sample in samples]
    keys_a, keys_b = tensor_keys(ga), tensor_keys(gb)
    by_key_b = {keys_b[id(t)]: t for t in gb.tensors}
    order = [t for op in ga.ops for t in op.outputs]  # the reference's execution order
    shared = [(keys_a[id(t)], t) for t in order
              if keys_a[id(t)] in by_key_b and not by_key_b[keys_a[id(t)]].is_constant]
    mismatched = [name for name, t in shared if tuple(by_key_b[name].shape) != tuple(t.shape)]
    pairs = [(f"out{i}", keys_a[id(ta)], keys_b[id(tb)]) for i, (ta, tb) in enumerate(zip(ga.outputs, gb.outputs))]
    pairs += [(name, name, name) for name, _ in shared if name not in mismatched]
    tensors_a = {keys_a[id(t)]: t for t in ga.tensors}
    stats = {label: _Accumulated(tensors_a[ka], by_key_b[kb]) for label, ka, kb in pairs}

    labels_a: dict[str, list[str]] = {}
    labels_b: dict[str, list[str]] = {}
    for label, ka, kb in pairs:
        labels_a.setdefault(ka, []).append(label)
        labels_b.setdefault(kb, []).append(label)
    seen: set[str] = set()
    for label, per_sample in _paired_values(ga, gb, samples, samples_b, labels_a, labels_b):
        for a, b in per_sample:
            if a.shape == b.shape:
                stats[label].add(a, b)
                seen.add(label)
    release_free_memory()
    missing = TensorDiff("", float("inf"), 0.0, float("inf"))  # never compared: shapes differ
    outputs = []
    for i, ta in enumerate(ga.outputs):
        label = f"out{i}"
        outputs.append(stats[label].diff(ta.name) if label in seen else replace(missing, name=ta.name))
    mode = MIXED if any(o.kind == MIXED for o in outputs) else (
        QUANTIZED if outputs and all(o.kind == QUANTIZED for o in outputs) else FLOAT)
    sqnr_limit = min_sqnr if min_sqnr is not None or mode != MIXED else DEFAULT_MIN_SQNR
    first = None
    shared_diffs = []
    for name, t in shared:
        d = stats[name].diff(t.name) if name in seen else replace(missing, name=t.name)
        shared_diffs.append(d)
        if first is None and d.kind != MIXED and not _acceptable(d, tolerance, max_lsb, None):
            first = d
    worst = sorted((d for d in outputs + shared_diffs if d.sqnr_db is not None), key=lambda d: d.sqnr_db)[:5]
    max_abs = max((o.max_abs_error for o in outputs), default=0.0)
    max_rel = max((o.rel_error for o in outputs), default=0.0)
    notes = [f"output '{ga.outputs[int(label[3:])].name}' of the reference holds NaN or infinity for these inputs: "
             "there only matching non-finite values were checked"
             for label in sorted(label for label in seen if label.startswith("out") and stats[label].nonfinite)]
    ok = all(_acceptable(o, tolerance, max_lsb, sqnr_limit) for o in outputs) and first is None
    return VerifyReport(ok=ok, tolerance=tolerance, samples=len(samples), max_abs_error=max_abs,
                        max_rel_error=max_rel, outputs=outputs, compared_tensors=len(shared), first_divergent=first,
                        notes=notes, mode=mode, max_lsb=max_lsb if mode == QUANTIZED else None,
                        min_sqnr=sqnr_limit, worst_tensors=worst)


def _paired_values(ga: Graph, gb: Graph, samples_a, samples_b, labels_a: dict[str, list[str]],
                   labels_b: dict[str, list[str]]):
    """Yield (label, [(value in a, value in b) per sample]) as soon as both graphs have
    computed a label's tensors. The two run segment by segment in lockstep, the one
    behind advancing first, so only the few tensors computed by one and not yet by the
    other are held at a time."""
    runs = [evaluate_in_segments(ga, samples_a, labels_a.__contains__),
            evaluate_in_segments(gb, samples_b, labels_b.__contains__)]
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
