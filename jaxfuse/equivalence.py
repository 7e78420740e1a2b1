"""Equivalence checks: whole models (every shared tensor) and single rewrites (a region).

Float errors are reported relative to the scale of the reference tensor:
    rel = max|a - b| / max|a|
so one tolerance fits logits, probabilities and feature maps alike. Two quantized models
are compared in LSBs (quantization steps of the reference tensor), a float model and a
quantized one by the SQNR of the quantized side's dequantized values, in dB:
    sqnr = 10 log10(sum x_float^2 / sum (x_float - x_dequantized)^2)

A whole-model comparison runs over a sample set of any size: the samples are cut into
fixed-size chunks, evaluated in batches sharded over the local devices (and, in a
jax.distributed run, over the processes, each reading its share), and the per-sample
figures are gathered and combined in sample order, so the report does not depend on how
many devices or hosts computed it. Per output it also gives the 99th percentile of the
per-sample errors, the worst sample's index and, for a classifier, the top-1 agreement.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .ir import Graph, Model, Tensor
from .lowering import lower_graph, tensor_keys
from .numerics import (convert_sample, dequantize, is_quantized_integer, json_safe, random_inputs, relative_to_scale,
                       sample_errors, short_name, sqnr_db)
from .memory import release_free_memory
from .programs import PROGRAMS, RUN_COMPILER_OPTIONS
from .samples import as_sample_set
from .segmented import Placement, SegmentedRun, evaluable_part, stack_samples, whole_graph
from .shapes import at_input_shapes, signature
from . import progress

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
    if value.size and max(float(value.max()), -float(value.min())) < HUGE_ACTIVATION:  # all usable (NaN fails)
        flat = value.reshape(-1, value.shape[-1])
        mean = flat.sum(axis=0, dtype=np.float64) / flat.shape[0]  # float64 sums, without a float64 copy
        centered = np.subtract(flat, mean.astype(flat.dtype), dtype=np.float32)
        spread = np.sqrt(np.square(centered, out=centered).sum(axis=0, dtype=np.float64) / flat.shape[0])
        return mean.astype(np.float32), spread.astype(np.float32)
    flat = value.reshape(-1, value.shape[-1]).astype(np.float64)
    usable = np.isfinite(flat) & (np.abs(np.nan_to_num(flat)) < HUGE_ACTIVATION)
    count = usable.sum(axis=0)
    if not np.all(count):
        return None
    kept = np.where(usable, flat, 0.0)
    mean = kept.sum(axis=0) / count
    spread = np.sqrt(np.where(usable, (kept - mean) ** 2, 0.0).sum(axis=0) / count)
    return mean.astype(np.float32), spread.astype(np.float32)


def activation_statistics(graph: Graph, sample: list[np.ndarray], run: SegmentedRun | None = None,
                          batch: list[np.ndarray] | None = None,
                          values: dict[str, np.ndarray] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray] | None]:
    """{tensor key: (mean, std) per channel (last axis), or None} of every float tensor of
    `graph` on one sample (see channel_statistics). The model runs segment by segment, so
    only one segment's activations exist at a time; `run` (a SegmentedRun of `graph` on one
    device) lets a later comparison reuse its programs, and `batch` (arrays with a leading
    sample axis whose first sample is `sample`) makes them programs for that batch size.
    `values`, when given, receives every value the run computes ({key: array with the
    sample axis}), which a comparison on the same batch can take instead of computing
    them again (compare's reference_values): then they all exist at once."""
    keys = tensor_keys(graph)
    floating = {keys[id(t)] for t in graph.tensors
                if not t.is_constant and t.dtype is not None and t.dtype.kind == "f" and len(t.shape) >= 1}
    run = run or SegmentedRun(graph, keep=floating.__contains__)
    result = {}
    batch = [np.asarray(x)[None] for x in sample] if batch is None else batch
    for computed in run.run(batch, None if values is not None else floating.__contains__):
        for key, value in computed.items():
            value = np.asarray(value)
            if values is not None:
                values[key] = value
            if key in floating and value[0].size:
                result[key] = channel_statistics(value[0])
    release_free_memory()
    return result


@dataclass
class TensorDiff:
    """How far the candidate's tensor is from the reference's, over all samples. Errors are
    in real units (quantized values dequantized). `kind` says what was compared: "float"
    (both float), "quantized" (both quantized: lsb_error / within_1_lsb count in units of
    the reference's scale) or "float-vs-quantized" (sqnr_db: the float side is the signal).
    Per sample, the error is rel_error's measure (lsb_error's for "quantized"):
    p99_error is its 99th percentile over the samples (the sample value at or above the
    99% rank, no interpolation), worst_sample the first sample where
    it is largest; top1_agreement (classifier outputs only: one axis longer than 1) is the
    share of samples whose largest entry is at the same index in both."""
    name: str
    max_abs_error: float
    scale: float
    rel_error: float
    kind: str = FLOAT
    sqnr_db: float | None = None
    lsb_error: float | None = None
    within_1_lsb: float | None = None
    p99_error: float | None = None
    worst_sample: int | None = None
    top1_agreement: float | None = None


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
    devices: int = 1                      # devices that computed it (all processes together)
    processes: int = 1
    unchecked: list[str] = field(default_factory=list)  # outputs that could not be evaluated, and why

    def to_dict(self) -> dict:
        return json_safe(asdict(self))

    def format_text(self, reference: str = "reference", candidate: str = "candidate") -> str:
        """What `jaxfuse verify` prints (jaxfuse.verifying.format_verify_text)."""
        from .verifying import format_verify_text
        return format_verify_text(self, reference, candidate)

    def summary(self) -> str:
        verdict = ("equivalent" if self.ok else "NOT equivalent") + (" where evaluated" if self.unchecked else "")
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
        if self.unchecked:
            line += f"; NOT checked (only what can be evaluated was compared): {'; '.join(self.unchecked)}"
        return "; ".join([line, *self.notes])


def _sqnr_text(diffs: list[TensorDiff]) -> str:
    return ", ".join(f"{d.sqnr_db:.2f} dB" for d in diffs if d.sqnr_db is not None) or "n/a"


def pair_kind(a: Tensor, b: Tensor) -> str:
    quantized = is_quantized_integer(a) + is_quantized_integer(b)
    return (FLOAT, MIXED, QUANTIZED)[quantized]


def is_classifier(tensor: Tensor) -> bool:
    """One axis longer than 1, every other of length 1: a vector of class scores."""
    long = [int(d) for d in tensor.shape if int(d) != 1]
    return len(long) == 1 and long[0] >= 2


# per-sample figures of one compared pair, one row per sample
_ABS, _SCALE, _NONFINITE, _SIGNAL, _NOISE, _LSB, _WITHIN, _COUNT, _TOP1 = range(9)
_FIGURES = 9


class _Accumulated:
    """One compared pair's per-sample figures, combined in sample order by `diff`."""

    def __init__(self, a: Tensor, b: Tensor, top1: bool = False):
        self.a, self.b, self.kind = a, b, pair_kind(a, b)
        self.top1 = top1
        self.indices: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []

    def add(self, indices: np.ndarray, values_a: np.ndarray, values_b: np.ndarray) -> None:
        """The samples `indices` (values with a leading sample axis)."""
        n = len(indices)
        rows = np.zeros((n, _FIGURES))
        rows[:, _TOP1] = np.nan
        if self.kind == FLOAT:
            real_a, real_b = values_a, values_b
            rows[:, _ABS], rows[:, _SCALE], rows[:, _NONFINITE] = sample_errors(values_a, values_b)
        else:
            real_a = np.stack([dequantize(values_a[i], self.a) for i in range(n)])
            real_b = np.stack([dequantize(values_b[i], self.b) for i in range(n)])
            rows[:, _ABS], rows[:, _SCALE], rows[:, _NONFINITE] = sample_errors(real_a, real_b)
            for i in range(n):
                ra, rb = real_a[i], real_b[i]
                signal = rb if self.kind == MIXED and is_quantized_integer(self.a) else ra
                finite = np.isfinite(ra) & np.isfinite(rb)
                rows[i, _SIGNAL] = float(np.sum(np.where(finite, signal, 0.0) ** 2))
                rows[i, _NOISE] = float(np.sum(np.subtract(ra, rb, out=np.zeros_like(ra), where=finite) ** 2))
                if self.kind == QUANTIZED:
                    lsb = np.abs(ra - rb) / dequantize_scale(self.a, ra.ndim)
                    rows[i, _LSB] = float(np.max(lsb, initial=0.0))
                    rows[i, _WITHIN] = int(np.sum(lsb <= 1.0 + 1e-9))
                    rows[i, _COUNT] = lsb.size
        if self.top1 and n:
            rows[:, _TOP1] = (np.argmax(np.asarray(real_a).reshape(n, -1), axis=1)
                              == np.argmax(np.asarray(real_b).reshape(n, -1), axis=1))
        self.indices.append(np.asarray(indices, np.int64))
        self.rows.append(rows)

    def local(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.rows:
            return np.zeros(0, np.int64), np.zeros((0, _FIGURES))
        return np.concatenate(self.indices), np.concatenate(self.rows)

    def diff(self, name: str, rows: np.ndarray) -> TensorDiff:
        """The pair's figures from `rows` (every sample's, in sample order): the same as
        adding the samples one by one."""
        abs_err, scale = rows[:, _ABS], rows[:, _SCALE]
        rel = np.array([relative_to_scale(e, s) for e, s in zip(abs_err, scale)])
        worst = int(np.argmax(rel)) if len(rel) and rel.max() > 0 else None
        best_abs, best_scale, best_rel = (abs_err[worst], scale[worst], rel[worst]) if worst is not None \
            else (0.0, 0.0, 0.0)
        per_sample = rows[:, _LSB] if self.kind == QUANTIZED else rel
        if self.kind == QUANTIZED:
            worst = int(np.argmax(per_sample)) if len(per_sample) else None
        p99 = float(np.percentile(per_sample, 99, method="higher")) if len(per_sample) else None
        sqnr = lsb = within = None
        if self.kind != FLOAT:
            sqnr = sqnr_db(_sequential_sum(rows[:, _SIGNAL]), _sequential_sum(rows[:, _NOISE]))
        if self.kind == QUANTIZED:
            lsb = float(np.max(rows[:, _LSB], initial=0.0))
            count = int(rows[:, _COUNT].sum())
            within = int(rows[:, _WITHIN].sum()) / count if count else 1.0
        top1 = float(np.mean(rows[:, _TOP1])) if self.top1 and len(rows) else None
        return TensorDiff(name, float(best_abs), float(best_scale), float(best_rel), self.kind, sqnr, lsb, within,
                          p99, worst if worst is not None else (0 if len(rows) else None), top1)


def _sequential_sum(values: np.ndarray) -> float:
    """Left to right, as adding one sample at a time does."""
    return float(np.cumsum(values)[-1]) if len(values) else 0.0


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


CHUNK_BYTES_CPU = 64 * 2**20           # activations of one batch, both models, on a CPU
CHUNK_BYTES_ACCELERATOR = 1024 * 2**20  # on a GPU/TPU
RESIDENT_WEIGHT_BYTES = {"cpu": 512 * 2**20, "other": 4 * 2**30}  # both models' weights kept between batches
MANY_SAMPLES = 64   # from this many samples on, comparisons compile for run time (programs.RUN_COMPILER_OPTIONS)
PARALLEL_CHUNKS = 8                     # small sets are cut into at least this many chunks (devices to feed)
MAX_CHUNK = 256


def chunk_size(samples: int, bytes_per_sample: int, platform: str = "cpu") -> int:
    """Samples per chunk: what the activation budget allows, and about samples / 8 so a
    set gives several devices work (two samples, the default check, go together). It
    depends on the set and the models only, never on the device count: a sample's values
    depend on the chunk it is computed in."""
    budget = CHUNK_BYTES_CPU if platform == "cpu" else CHUNK_BYTES_ACCELERATOR
    wanted = max(math.ceil(samples / PARALLEL_CHUNKS), min(samples, 2))
    return int(max(1, min(MAX_CHUNK, budget // max(bytes_per_sample, 1), wanted)))


def compare(reference: Model, candidate: Model, samples=None, *,
            tolerance: float = DEFAULT_TOLERANCE, seed: int = 0, num_samples: int = 2,
            max_lsb: float = DEFAULT_MAX_LSB, min_sqnr: float | None = None, devices=None,
            chunk: int | None = None, reference_run: SegmentedRun | None = None,
            reference_values: dict[str, np.ndarray] | None = None, partial: bool = False) -> VerifyReport:
    """Run both models through JAX and compare outputs (by position) and every tensor the
    two share by name. Both run segment by segment in lockstep (jaxfuse.segmented), so
    peak memory is a few segments' weights and activations, not two whole models'.

    Float pairs must agree within `tolerance` of the reference's scale; quantized pairs
    within `max_lsb` LSB (and `min_sqnr` dB when given); a float output against a quantized
    one must reach `min_sqnr` dB (default DEFAULT_MIN_SQNR). `samples` (a list of samples,
    each a list of arrays, or a jaxfuse.samples.SampleSet; default `num_samples` seeded
    random ones) are in the reference's input types; the candidate gets the same real
    values in its own types (quantized or dequantized).

    The samples go in chunks of `chunk` (default: chunk_size) over `devices` (default:
    every local device); in a jax.distributed run each process computes its share of the
    chunks and every process returns the whole report. `reference_run`: a SegmentedRun of
    the reference on one device whose compiled programs to reuse. `reference_values`: what
    those programs computed on the first chunk's samples ({tensor key: array with the
    sample axis}, see activation_statistics), taken instead of running the reference on
    that chunk again when they hold every tensor it compares there; the dict is emptied.

    Every shape is computed at the samples' input shapes (jaxfuse.shapes). `partial`: where
    an op cannot be evaluated (no lowering rule, or no outputs), compare what both models
    can evaluate (segmented.evaluable_part) and list the outputs that could not be checked
    in the report's `unchecked`; without it, such an op raises LoweringError."""
    import jax
    ga, gb = reference.main, candidate.main
    if [signature(t) for t in ga.inputs] != [signature(t) for t in gb.inputs]:  # -1: a dynamic dimension
        raise ValueError("the models have different inputs: "
                         f"{[list(signature(t)) for t in ga.inputs]} vs {[list(signature(t)) for t in gb.inputs]}")
    if len(ga.outputs) != len(gb.outputs):
        raise ValueError(f"the models have {len(ga.outputs)} and {len(gb.outputs)} outputs")
    from .whole_model import compare_whole, needs_whole_model
    if needs_whole_model(reference) or needs_whole_model(candidate):  # control flow or variables: one graph is not enough
        return compare_whole(reference, candidate, samples, tolerance=tolerance, seed=seed, num_samples=num_samples,
                             max_lsb=max_lsb, min_sqnr=min_sqnr)
    sample_set = as_sample_set(random_inputs(ga, num_samples, seed) if samples is None else samples, ga.inputs)
    total = len(sample_set)
    if total == 0:
        raise ValueError("no samples to compare on")
    # both at the shapes of the samples, every other shape computed (the stored ones may be one instance
    # of a dynamic shape, or wrong): the same models when they agree
    ga, view_a = _shaped(reference, sample_set.shapes, partial)
    gb, view_b = _shaped(candidate, sample_set.shapes, partial)
    keys_a, keys_b = tensor_keys(ga), tensor_keys(gb)
    computed_b = _computed(view_b)
    by_key_b = {keys_b[id(t)]: t for t in gb.tensors if id(t) in computed_b}
    order = [t for op in view_a.ops for t in op.outputs]  # the reference's execution order
    shared = [(keys_a[id(t)], t) for t in order
              if keys_a[id(t)] in by_key_b and not by_key_b[keys_a[id(t)]].is_constant]
    mismatched = [name for name, t in shared if tuple(by_key_b[name].shape) != tuple(t.shape)]
    computed_a = _computed(view_a)
    checked = [i for i, (ta, tb) in enumerate(zip(ga.outputs, gb.outputs))
               if id(ta) in computed_a and id(tb) in computed_b]
    unchecked = [f"output '{ta.name}': " + (view_a.why_not(ta) if id(ta) not in computed_a else
                                            f"in the candidate, {view_b.why_not(tb)}")
                 for i, (ta, tb) in enumerate(zip(ga.outputs, gb.outputs)) if i not in checked]
    pairs = [(f"out{i}", keys_a[id(ga.outputs[i])], keys_b[id(gb.outputs[i])]) for i in checked]
    pairs += [(name, name, name) for name, _ in shared if name not in mismatched]
    tensors_a = {keys_a[id(t)]: t for t in ga.tensors}
    stats = {label: _Accumulated(tensors_a[ka], by_key_b[kb], top1=label.startswith("out")
                                 and is_classifier(tensors_a[ka]))
             for label, ka, kb in pairs}
    labels_a: dict[str, list[str]] = {}
    labels_b: dict[str, list[str]] = {}
    for label, ka, kb in pairs:
        labels_a.setdefault(ka, []).append(label)
        labels_b.setdefault(kb, []).append(label)

    from .distributed import allgather_rows, chunk_groups, process_count, share
    local_devices = list(devices) if devices else jax.local_devices()
    run_a = SegmentedRun(view_a, keep=labels_a.__contains__)
    run_b = SegmentedRun(view_b, keep=labels_b.__contains__)
    size = chunk or chunk_size(total, run_a.bytes_per_sample() + run_b.bytes_per_sample(),
                               local_devices[0].platform)
    chunks = share(math.ceil(total / size))
    used = max(1, min(len(local_devices), len(chunks)))
    placement = Placement(local_devices[:used])
    if used == 1 and reference_run is not None and whole_graph(reference_run.graph) is ga \
            and reference_run.placement.devices == placement.devices and all(map(reference_run.keep, labels_a)):
        run_a = reference_run
    else:
        run_a.placement = placement
    run_b.placement = placement
    steps = math.ceil(len(chunks) / used)
    # many batches: keep the weights on the devices instead of copying them for each batch (not for the
    # two of optimize's default check, where the copy costs less than holding both models' weights)
    resident = steps > 2 and run_a.weight_bytes() + run_b.weight_bytes() <= RESIDENT_WEIGHT_BYTES.get(
        local_devices[0].platform, RESIDENT_WEIGHT_BYTES["other"])
    # a large set runs each program many times: XLA's optimizations pay for their compile time (the
    # choice depends on the set only, so every device count computes the same values)
    options = RUN_COMPILER_OPTIONS if total >= MANY_SAMPLES else None
    if options is not None and run_a is reference_run:
        run_a = SegmentedRun(view_a, keep=labels_a.__contains__, placement=placement)
    for run in (run_a, run_b):
        run.resident = resident
        run.options = options
    # what these very programs computed on the first chunk before: the same numbers, not computed again
    held = dict(reference_values or {})
    if reference_values:
        reference_values.clear()
    if run_a is not reference_run or options is not None or not all(key in held for key in labels_a):
        held = {}
    seen: set[str] = set()      # compared: the two values had one shape
    produced: set[str] = set()  # computed by the runs (a value known while tracing, a SHAPE's, is not)
    with progress.bar(total // process_count() or None, "comparing", "sample") as bar:
        for indices, valid in chunk_groups(chunks, used, size, total):
            batch_a = sample_set.take(indices)
            batch_b = _converted(batch_a, ga.inputs, gb.inputs)
            known = None
            if held and valid.all() and np.array_equal(indices, np.arange(len(next(iter(held.values()))))):
                known = {key: held[key] for key in labels_a}
            held = {}
            for label, value_a, value_b in _paired_values(run_a, run_b, batch_a, batch_b, labels_a, labels_b,
                                                          known):
                produced.add(label)
                a, b = np.asarray(value_a), np.asarray(value_b)
                if a.shape == b.shape:
                    if valid.all():  # no padding samples in this chunk: no copies
                        stats[label].add(indices, a, b)
                    else:
                        stats[label].add(indices[valid], a[valid], b[valid])
                    seen.add(label)
            bar.update(int(valid.sum()))
    for run in (run_a, run_b):
        run.release()
        run.resident, run.options = False, None
    release_free_memory()

    processes = process_count()
    rows_by_label: dict[str, np.ndarray] = {}
    labels = [label for label, _, _ in pairs]
    local = [stats[label].local() for label in labels]
    if processes > 1:
        seen, produced = _seen_everywhere(seen, labels), _seen_everywhere(produced, labels)
    for label, (indices, rows) in zip(labels, local):
        if label in seen:
            indices, rows = allgather_rows(indices, rows) if processes > 1 else (indices, rows)
            rows_by_label[label] = rows[np.argsort(indices, kind="stable")]

    missing = TensorDiff("", float("inf"), 0.0, float("inf"))  # never compared: shapes differ
    outputs = []
    for i in checked:
        ta, label = ga.outputs[i], f"out{i}"
        outputs.append(stats[label].diff(ta.name, rows_by_label[label]) if label in seen
                       else replace(missing, name=ta.name))
    mode = MIXED if any(o.kind == MIXED for o in outputs) else (
        QUANTIZED if outputs and all(o.kind == QUANTIZED for o in outputs) else FLOAT)
    sqnr_limit = min_sqnr if min_sqnr is not None or mode != MIXED else DEFAULT_MIN_SQNR
    first = None
    shared_diffs = []
    noisy = _after_quantized(gb) if mode == MIXED else set()
    shared = [(name, t) for name, t in shared if name in produced or name in mismatched]
    for name, t in shared:
        d = stats[name].diff(t.name, rows_by_label[name]) if name in seen else replace(missing, name=t.name)
        shared_diffs.append(d)
        if first is None and d.kind != MIXED and id(by_key_b[name]) not in noisy \
                and not _acceptable(d, tolerance, max_lsb, None):
            first = d
    worst = sorted((d for d in outputs + shared_diffs if d.sqnr_db is not None), key=lambda d: d.sqnr_db)[:5]
    max_abs = max((o.max_abs_error for o in outputs), default=0.0)
    max_rel = max((o.rel_error for o in outputs), default=0.0)
    notes = [f"output '{ga.outputs[int(label[3:])].name}' of the reference holds NaN or infinity for these inputs: "
             "there only matching non-finite values were checked"
             for label in sorted(label for label in seen if label.startswith("out")
                                 and rows_by_label[label][:, _NONFINITE].sum())]
    ok = all(_acceptable(o, tolerance, max_lsb, sqnr_limit) for o in outputs) and first is None
    return VerifyReport(ok=ok, tolerance=tolerance, samples=total, max_abs_error=max_abs,
                        max_rel_error=max_rel, outputs=outputs, compared_tensors=len(shared), first_divergent=first,
                        notes=notes, mode=mode, max_lsb=max_lsb if mode == QUANTIZED else None,
                        min_sqnr=sqnr_limit, worst_tensors=worst, devices=_total_devices(used), processes=processes,
                        unchecked=unchecked)


def _after_quantized(graph: Graph) -> set[int]:
    """ids of the float tensors of a quantized model computed from quantized values (the float
    islands ai-edge-quantizer leaves, behind a DEQUANTIZE): against the float model they carry
    the quantization's error, so only the outputs' SQNR judges them."""
    tainted: set[int] = set()
    for op in graph.ops:
        if any(t is not None and (id(t) in tainted or (is_quantized_integer(t) and not t.is_constant))
               for t in op.inputs):
            tainted.update(id(t) for t in op.outputs)
    return tainted


def _computed(graph: Graph) -> set[int]:
    """ids of the tensors evaluating `graph` gives: inputs, constants, what its ops compute."""
    return ({id(t) for t in graph.inputs} | {id(t) for t in graph.tensors if t.is_constant}
            | {id(t) for op in graph.ops for t in op.outputs})


def _shaped(model: Model, input_shapes, partial: bool) -> tuple[Graph, Graph]:
    """(main graph at `input_shapes`, the part of it to evaluate: all of it, or with
    `partial` its segmented.evaluable_part)."""
    part = evaluable_part(model.main) if partial else None
    shaped = at_input_shapes(model, input_shapes, part).main
    if part is not None and shaped is not model.main:
        part = evaluable_part(shaped)
    return shaped, part if part is not None else shaped


def _total_devices(used: int) -> int:
    from .distributed import allgather_int, process_count
    return used if process_count() == 1 else sum(allgather_int(used))


def _seen_everywhere(seen: set[str], labels: list[str]) -> set[str]:
    """Labels some process compared (a process without chunks compares none)."""
    from .distributed import allgather_bytes
    flags = np.array([label in seen for label in labels], np.uint8).tobytes()
    gathered = np.stack([np.frombuffer(p, np.uint8) for p in allgather_bytes(flags)])
    return {label for label, any_seen in zip(labels, gathered.max(axis=0)) if any_seen}


def _converted(batch: list[np.ndarray], source: list[Tensor], target: list[Tensor]) -> list[np.ndarray]:
    """convert_sample on every sample of a batch."""
    if not batch:
        return []
    samples = [convert_sample([x[i] for x in batch], source, target) for i in range(len(batch[0]))]
    return stack_samples(samples)


def _paired_values(run_a: SegmentedRun, run_b: SegmentedRun, batch_a, batch_b, labels_a: dict[str, list[str]],
                   labels_b: dict[str, list[str]], known_a: dict | None = None):
    """Yield (label, value in a, value in b) as soon as both graphs have computed a label's
    tensors. The two run segment by segment in lockstep, the one behind advancing first,
    so only the few tensors computed by one and not yet by the other are held at a time.
    `known_a`: a's values for this batch, computed before (a does not run)."""
    runs = [iter([known_a]) if known_a is not None else run_a.run(batch_a, labels_a.__contains__),
            run_b.run(batch_b, labels_b.__contains__)]
    labels = [labels_a, labels_b]
    pending: list[dict[str, object]] = [{}, {}]
    done = [False, False]
    while not all(done):
        side = 1 if pending[0] and not done[1] or done[0] else 0  # a ahead: let b catch up
        other = 1 - side
        try:
            segment = next(runs[side])
        except StopIteration:
            done[side] = True
            continue
        for key, value in segment.items():
            for label in labels[side][key]:
                if label in pending[other]:
                    theirs = pending[other].pop(label)
                    yield (label, value, theirs) if side == 0 else (label, theirs, value)
                else:
                    pending[side][label] = value


def check_region(before: Graph, after: Graph, frontier: list[Tensor], observed: list[Tensor],
                 samples: list[list[np.ndarray]]) -> float:
    """Largest relative error over `observed` between two versions of a region, each a
    Graph of ops reading `frontier`, on `samples` (see RegionCheck): region_check and
    RegionCheck.error in one call."""
    return region_check(before, after, frontier, observed, len(samples)).error(samples)


class RegionCheck:
    """Both versions of a region in one compiled program, vmapped over the samples.
    Parameters are flat arguments, so the same region elsewhere in the model (another block
    of the stage) reuses the program, found by structure without tracing it again
    (jaxfuse.segmented.structure_key)."""

    def __init__(self, tensors: tuple[list[Tensor], list[Tensor]], executable):
        # the values as they are now (buffers are immutable): a later rewrite that gives one of
        # these tensors new data does not change what this check compares
        self.arrays = ([t.data for t in tensors[0]], [t.data for t in tensors[1]])
        self.executable = executable  # a Future while compiling

    def compiled(self):
        if hasattr(self.executable, "result"):
            self.executable = self.executable.result()
        return self.executable

    def start(self, samples: list[list[np.ndarray]]) -> "RunningCheck":
        """Run the check on `samples` (as many as it was made for). The program runs in the
        background: the caller can go on until it asks for the error."""
        import jax
        args = (jax.device_put(self.arrays[0]), jax.device_put(self.arrays[1]), *stack_samples(samples))
        return RunningCheck(self.compiled()(*args))

    def error(self, samples: list[list[np.ndarray]]) -> float:
        """start(samples).error()."""
        return self.start(samples).error()


class RunningCheck:
    """A region check on its way: the two versions' outputs, being computed."""

    def __init__(self, outputs):
        self.outputs = outputs

    def error(self) -> float:
        """Largest relative error over the observed tensors (waits for the values); NaN on
        one side only is an infinite error (see numerics.sample_errors)."""
        out_before, out_after = self.outputs
        self.outputs = None
        worst = 0.0
        for a, b in zip(out_before, out_after):
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape:
                return float("inf")
            errors, scales, _ = sample_errors(a, b)
            worst = max([worst, *(relative_to_scale(e, s) for e, s in zip(errors, scales))])
        del out_before, out_after
        release_free_memory()
        return worst


_REGION_LAYOUTS: dict[str, tuple[str, list[int], list[int]]] = {}


def region_check(before: Graph, after: Graph, frontier: list[Tensor], observed: list[Tensor],
                 size: int) -> RegionCheck:
    """The check of a region's two versions on batches of `size` samples: its program found
    by structure, or lowered now and compiling in the background (the caller can prepare
    the next rewrite meanwhile)."""
    import jax
    from .programs import STATS
    from .segmented import structure_key
    found = [structure_key(g.ops, frontier, observed, extra=("region", size)) for g in (before, after)]
    key = None if None in found else found[0][0] + found[1][0]
    layout = _REGION_LAYOUTS.get(key) if key else None
    executable = PROGRAMS.find(layout[0]) if layout else None
    if executable is not None:
        STATS.reused_unlowered += 1
        return RegionCheck(([found[0][1][p] for p in layout[1]], [found[1][1][p] for p in layout[2]]), executable)
    f_before, p_before = lower_graph(before, inputs=frontier, outputs=observed, on_device=False)
    f_after, p_after = lower_graph(after, inputs=frontier, outputs=observed, on_device=False)
    keys_before, keys_after = list(p_before), list(p_after)
    del p_before, p_after
    tensors = []
    for g, param_keys in ((before, keys_before), (after, keys_after)):
        by_key = {k: t for t, k in zip(g.tensors, _keys(g))}
        tensors.append([by_key[k] for k in param_keys])

    def both(flat_before, flat_after, *xs):
        return (f_before(dict(zip(keys_before, flat_before)), *xs),
                f_after(dict(zip(keys_after, flat_after)), *xs))

    def aval(t: Tensor, batch: tuple = ()):
        return jax.ShapeDtypeStruct((*batch, *t.shape), jax.dtypes.canonicalize_dtype(t.dtype))

    avals = ([aval(t) for t in tensors[0]], [aval(t) for t in tensors[1]], *[aval(t, (size,)) for t in frontier])
    lowered, program_key = PROGRAMS.lower(jax.vmap(both, in_axes=(None, None) + (0,) * len(frontier)), *avals)
    if key:
        positions = [{id(t): i for i, t in enumerate(found[side][1])} for side in (0, 1)]
        _REGION_LAYOUTS[key] = (program_key, [positions[0][id(t)] for t in tensors[0]],
                                [positions[1][id(t)] for t in tensors[1]])
        if len(_REGION_LAYOUTS) > 4 * MAX_REGION_LAYOUTS:
            _REGION_LAYOUTS.pop(next(iter(_REGION_LAYOUTS)))
    return RegionCheck((tensors[0], tensors[1]), PROGRAMS.submit(lowered, program_key))


MAX_REGION_LAYOUTS = 512


def _keys(graph: Graph) -> list[str]:
    keys = tensor_keys(graph)
    return [keys[id(t)] for t in graph.tensors]
