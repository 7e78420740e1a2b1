"""Run passes to a fixed point, proving every single rewrite as it is applied.

For each Rewrite a pass proposes:
  1. snapshot the graph (op wiring, options, constants: cheap, buffers are immutable);
  2. copy the region's ops as they are (the BEFORE function);
  3. apply the surgery (the AFTER region = surviving region ops + ops it added);
  4. jit both regions into one function, feed the region's frontier tensors a
     standard-normal sample (negative values, every padding border of the real shapes)
     and one with the per-channel mean and spread the original model's activations had
     there, compare every tensor the region hands to the rest of the graph;
  5. keep it if the largest error is within tolerance, else restore the snapshot and
     report the rollback. Nothing half-applied survives.
While a rewrite's check (4) compiles and runs, the next ones (up to LOOK_AHEAD in all) are
matched and applied on top of it (1-3); if the check fails, restoring its snapshot undoes
them all, and matching resumes as if they had never been looked at, so every outcome is
that of checking one at a time.
After all passes, the whole optimized model is compared with the original.
"""
from __future__ import annotations

import copy
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np

from ..ir import Graph, Model, Op, Tensor
from ..lowering import LoweringError, resource_variables, tensor_keys
from .. import equivalence, whole_model
from ..whole_model import DEFAULT_STEPS, needs_whole_model
from ..progress import Silent, bar as progress_bar
from ..memory import release_free_memory
from ..numerics import random_input
from ..programs import STATS
from ..samples import as_sample_set
from ..segmented import SegmentedRun, evaluable_part, sample_bytes
from ..shapes import at_input_shapes, is_dynamic
from . import float16
from .base import PASSES, Pass, Refusal, Rewrite

MAX_ROUNDS = 10
LOOK_AHEAD = 3  # rewrites staged at once (run_pass)
HELD_VALUES_MIN_BYTES = 64 * 2**20  # the final check may reuse the statistics run's values up to this size, at least


@dataclass
class PassReport:
    fused: int = 0
    refused: dict[str, list[str]] = field(default_factory=dict)   # reason -> where
    rolled_back: list[dict] = field(default_factory=list)


@dataclass
class OptimizationReport:
    passes: dict[str, PassReport]
    ops_before: int
    ops_after: int
    histogram_before: dict[str, int]
    histogram_after: dict[str, int]
    rewrites: list[dict]
    max_rewrite_error: float
    verification: equivalence.VerifyReport | None
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)
    float16: dict | None = None   # float16 weights: what was restored, kept as float32, rounded (lossy)
    compilation: dict = field(default_factory=dict)  # XLA programs compiled / reused and seconds (programs.STATS)

    def to_dict(self) -> dict:
        return asdict(self)

    def format_text(self) -> str:
        lines = []
        idle = [name for name, pr in self.passes.items() if not (pr.fused or pr.refused or pr.rolled_back)]
        for name, pr in self.passes.items():
            if name in idle:
                continue
            refused = sum(len(w) for w in pr.refused.values())
            lines.append(f"  {name}: {pr.fused} fused, {refused} refused, {len(pr.rolled_back)} rolled back")
            for reason, where in sorted(pr.refused.items()):
                sample = ", ".join(f"'{w}'" for w in where[:2]) + (" ..." if len(where) > 2 else "")
                lines.append(f"      refused x{len(where)}: {reason} ({sample})")
            for rb in pr.rolled_back:
                lines.append(f"      rolled back at '{rb['where']}': {rb['error']}")
        if idle:
            lines.append(f"  nothing matched: {', '.join(idle)}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        if self.float16 and self.float16["materialized"]:
            f = self.float16
            lines.append(f"  float16 weights: {f['restored']} unchanged (float16 behind DEQUANTIZE), {f['kept_float32']} "
                         f"fused and stored as float32 (+{f['extra_bytes']} bytes)")
            if "lossy_max_rel_error" in f:
                lines.append(f"  LOSSY --lossy-float16-weights: {f['rounded_to_float16']} fused constant(s) rounded to "
                             f"float16: the outputs now differ from the original's by up to "
                             f"{f['lossy_max_rel_error']:.3g} of their scale ({f['lossy_max_abs_error']:.3g} abs, "
                             f"{f['lossy_samples']} sample(s))")
        lines.append(f"  ops: {self.ops_before} -> {self.ops_after}")
        lines.append(f"  largest error of any rewrite: {self.max_rewrite_error:.3g} of the tensor's scale")
        if self.compilation:
            c = self.compilation
            loaded = f" ({c['loaded']} from the persistent cache)" if c.get("loaded") else ""
            lines.append(f"  XLA programs: {c['compiled']} compiled{loaded} in {c['compile_seconds']:.2f}s, "
                         f"{c['reused'] + c['reused_unlowered']} reused; lowering {c['lower_seconds']:.2f}s")
        if self.verification is not None:
            lines.append(f"  whole model: {self.verification.summary()}")
        elif not self.rewrites:
            lines.append("  whole model: unchanged (no rewrite applied)")
        else:
            lines.append("  whole model: not verified (--no-verify)")
        return "\n".join(lines)


def resolve_passes(passes) -> list[Pass]:
    from . import DEFAULT_PIPELINE
    if passes is None:
        passes = DEFAULT_PIPELINE
    resolved = []
    for p in passes:
        if isinstance(p, Pass):
            resolved.append(p)
        elif p in PASSES:
            resolved.append(PASSES[p])
        else:
            raise ValueError(f"unknown pass '{p}' (known: {', '.join(sorted(PASSES))})")
    return resolved


def _quantized_tensor(model: Model) -> Tensor | None:
    for g in model.graphs:
        for t in g.tensors:
            if t.is_quantized:
                return t
    return None


def _copied(options: dict) -> dict:
    """A deep copy of an op's options: a new dict, its scalar values shared (a snapshot is
    taken before every rewrite, of every op, and deepcopy of each dict was most of its cost)."""
    return {k: v if isinstance(v, (int, float, str, bytes, type(None))) else copy.deepcopy(v)
            for k, v in options.items()}


class _Snapshot:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.lists = (list(graph.ops), list(graph.tensors), list(graph.inputs), list(graph.outputs))
        self.ops = [(op, list(op.inputs), list(op.outputs), op.options_type, _copied(op.options), op.opcode)
                    for op in graph.ops]
        self.tensors = [(t, t.buffer, t.shape, t.shape_signature, t.name, t.type) for t in graph.tensors]

    def restore(self) -> None:
        g = self.graph
        g.ops, g.tensors, g.inputs, g.outputs = (list(x) for x in self.lists)
        for op, inputs, outputs, options_type, options, opcode in self.ops:
            op.inputs, op.outputs, op.options_type, op.options, op.opcode = inputs, outputs, options_type, options, opcode
        for t, buffer, shape, signature, name, type_ in self.tensors:
            t.buffer, t.shape, t.shape_signature, t.name, t.type = buffer, shape, signature, name, type_


def _region_graph(ops: list[Op], freeze_constants: bool) -> Graph:
    """A Graph holding just `ops`; with freeze_constants, ops and constant tensors are
    copied so later surgery on the real graph cannot change this one."""
    if freeze_constants:
        clones: dict[int, Tensor] = {}

        def frozen(t):
            if t is None or not t.is_constant:
                return t
            if id(t) not in clones:
                clones[id(t)] = copy.copy(t)
            return clones[id(t)]

        ops = [Op(op.opcode, [frozen(t) for t in op.inputs], list(op.outputs), op.options_type,
                  copy.deepcopy(op.options), dict(op.extra)) for op in ops]
    tensors, seen = [], set()
    for op in ops:
        for t in [*op.inputs, *op.outputs]:
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                tensors.append(t)
    return Graph(tensors, ops).toposort()


def _boundary(region_ops: list[Op], graph: Graph) -> tuple[list[Tensor], list[Tensor]]:
    """(frontier, observed): activations the region reads from outside, and the tensors it
    produces that something outside the region (or the graph output list) reads."""
    in_region = {id(op) for op in region_ops}
    produced = {id(t): t for op in region_ops for t in op.outputs}
    frontier, seen = [], set()
    for op in region_ops:
        for t in op.inputs:
            if t is not None and not t.is_constant and id(t) not in produced and id(t) not in seen:
                seen.add(id(t))
                frontier.append(t)
    read_outside = {id(t) for op in graph.ops if id(op) not in in_region for t in op.inputs if t is not None}
    read_outside |= {id(t) for t in graph.outputs}
    observed = [t for k, t in produced.items() if k in read_outside]
    return frontier, observed


class _Optimizer:
    def __init__(self, model: Model, passes: list[Pass], local_tolerance: float,
                 statistics: Callable[[], dict[int, tuple[np.ndarray, np.ndarray] | None]], seed: int,
                 applied: Callable[[Graph], None] = lambda graph: None):
        """`applied(graph)` is called after each rewrite that passed its check."""
        self.model = model
        self._applied = applied
        self.passes = passes
        self.local_tolerance = local_tolerance
        self._statistics_source = statistics
        self._statistics: dict[int, tuple[np.ndarray, np.ndarray] | None] | None = None
        self.unsampled: list[str] = []  # tensors whose realistic sample could not be drawn
        self.unevaluated: set[int] = set()  # tensors the original cannot evaluate (after an op without a rule)
        self.unevaluated_read: list[str] = []  # those of them a check read
        self.rng = np.random.default_rng(seed)
        self.reports = {p.name: PassReport() for p in passes}
        self.checks_bar = Silent()  # a progress bar while run() runs
        self.rewrites: list[dict] = []
        self.max_error = 0.0

    def _realistic(self, frontier: list[Tensor]) -> bool:
        """Whether a check reading `frontier` gets a realistic sample besides the standard-
        normal one (the statistics exist for every tensor it reads)."""
        if self._statistics is None:
            self._statistics = self._statistics_source()
        return bool(frontier) and all(self._statistics.get(id(t)) is not None for t in frontier)

    def _samples(self, frontier: list[Tensor], as_staged: list[Tensor] | None = None) -> list[list[np.ndarray]]:
        """A standard-normal sample, and one drawn per channel with the mean and spread the
        original model's activations had there (so a check sees realistic magnitudes).
        `as_staged`: copies of the frontier tensors taken when the check was staged (their
        shapes and types then)."""
        samples = [[random_input(t, self.rng) for t in (as_staged or frontier)]]
        realistic = self._realistic(frontier)
        missing = [t.name for t in frontier if id(t) in self._statistics and self._statistics[id(t)] is None]
        self.unsampled += [name for name in missing if name not in self.unsampled]
        beyond = [t.name for t in frontier if id(t) in self.unevaluated]
        self.unevaluated_read += [name for name in beyond if name not in self.unevaluated_read]
        if realistic:
            drawn = []
            for t, noise in zip(frontier, samples[0]):
                mean, std = self._statistics[id(t)]
                drawn.append((mean + std * noise).astype(noise.dtype))
            samples.append(drawn)
        return samples

    def _stage(self, graph: Graph, rewrite: Rewrite) -> "_Staged":
        """Apply `rewrite` and start its check (lowered, compiling in the background); a
        rewrite whose surgery fails is undone at once and carries why."""
        snapshot = _Snapshot(graph)
        ops_before = {id(op) for op in graph.ops}
        region_ids = {id(op) for op in rewrite.region}
        before = _region_graph(rewrite.region, freeze_constants=True)
        frontier, observed = _boundary(rewrite.region, graph)
        try:
            rewrite.apply()
            after_ops = [op for op in graph.ops if id(op) in region_ids or id(op) not in ops_before]
            after = _region_graph(after_ops, freeze_constants=False)
            produced_after = {id(t) for op in after_ops for t in op.outputs}
            lost = [t for t in observed if id(t) not in produced_after]
            if lost:
                raise _RewriteInvalid(f"the rewrite no longer produces '{lost[0].name}', which other ops read")
            after_frontier, _ = _boundary(after_ops, graph)
            known = {id(t) for t in frontier}
            new_reads = [t for t in after_frontier if id(t) not in known]
            if new_reads:
                raise _RewriteInvalid(f"the rewrite reads '{new_reads[0].name}' from outside its region")
            graph.validate()
            check = equivalence.region_check(before, after, frontier, observed, 1 + self._realistic(frontier)) \
                if observed else None
        except _RewriteInvalid as e:
            snapshot.restore()
            return _Staged(rewrite, snapshot, frontier, [], None, str(e))
        except Exception as e:  # surgery or lowering of the region failed: never keep it
            snapshot.restore()
            return _Staged(rewrite, snapshot, frontier, [], None, f"{type(e).__name__}: {e}")
        return _Staged(rewrite, snapshot, frontier, [copy.copy(t) for t in frontier], check)

    def _start_check(self, staged: "_Staged") -> None:
        """Draw the samples of a staged rewrite's check and start it running: its values are
        computed while the next rewrite is staged. Checks start in the order they are
        finished, so they draw the same samples as when checking one at a time."""
        if staged.failure is not None or staged.check is None or staged.running is not None:
            return
        try:
            staged.running = staged.check.start(self._samples(staged.frontier, staged.frontier_as_staged))
        except Exception as e:  # compiling or running the region failed: never keep it
            staged.snapshot.restore()
            staged.failure = f"{type(e).__name__}: {e}"

    def _finish(self, staged: "_Staged") -> tuple[bool, float, str]:
        """A staged rewrite's check, to its end: (kept, error, why not). A rewrite that fails
        it is undone (with everything applied after it)."""
        self._start_check(staged)
        if staged.failure is not None:
            return False, float("inf"), staged.failure
        try:
            error = staged.running.error() if staged.running is not None else 0.0
        except Exception as e:  # running the region failed: never keep it
            staged.snapshot.restore()
            return False, float("inf"), f"{type(e).__name__}: {e}"
        if not error <= self.local_tolerance:
            staged.snapshot.restore()
            return False, error, (f"check failed: error {error:.3g} of the tensor's scale "
                                  f"> tolerance {self.local_tolerance:g}")
        return True, error, ""

    def _next_proposal(self, matching: "_Matching", p: Pass, failed: dict) -> Rewrite | None:
        """Pull from `matching` up to the next rewrite to try (None when it is exhausted),
        keeping the refusals met on the way and why matching crashed."""
        while True:
            try:
                proposal = next(matching.proposals)
            except StopIteration:
                return None
            except Exception as e:  # a matcher bug must not take the whole run down; matching edits nothing
                matching.crash = f"the pass failed while matching: {type(e).__name__}: {e}"
                return None
            if isinstance(proposal, Refusal):
                where = matching.refusals.setdefault(proposal.reason, [])
                if proposal.where not in where:
                    where.append(proposal.where)
            elif (p.name, proposal.key) not in failed:
                return proposal

    def run_pass(self, graph: Graph, p: Pass, failed: dict) -> int:
        """Apply `p` until it proposes nothing more, checking every rewrite. Up to LOOK_AHEAD
        rewrites are staged at once, each matched on the graph the ones before it leave, as
        if they passed (they almost always do): while the first one's check runs, the next
        ones' compile. Checks start in order, so they draw the same samples as one at a time.
        When a check fails, restoring its snapshot undoes it and everything staged after it,
        and matching goes on where it was before it, so the outcome is the same as checking
        one rewrite at a time."""
        report = self.reports[p.name]
        budget = 4 * len(graph.ops) + 100  # a pass that keeps proposing after success must not spin forever
        applied = 0
        matching: _Matching | None = _Matching(p.propose(graph))  # where the next rewrite comes from
        queue: deque[_Queued] = deque()  # staged, each on top of the one before
        while True:
            if not queue:
                matching = matching or _Matching(p.propose(graph))  # matched anew on the changed graph
                if not self._stage_next(graph, p, failed, matching, queue):
                    break
            self._start_check(queue[0].staged)  # (a start that fails undoes the queue: nothing goes on top)
            while len(queue) < LOOK_AHEAD and applied + len(queue) < budget and queue[0].staged.failure is None \
                    and queue[-1].staged.failure is None:
                tail = queue[-1]
                tail.after = tail.after or _Matching(p.propose(graph))  # the graph as `tail` leaves it
                if not self._stage_next(graph, p, failed, tail.after, queue):
                    break
            head = queue.popleft()
            ok, error, why = self._finish(head.staged)
            self.checks_bar.update(1)
            if not ok:  # undone with everything staged after it; matching goes on where it was
                failed[(p.name, head.staged.proposal.key)] = head.staged.proposal.region  # kept alive: ids never reused
                report.rolled_back.append({"where": head.staged.proposal.where,
                                           "summary": head.staged.proposal.summary, "error": why})
                queue.clear()
                matching = head.source
                continue
            applied += 1
            self.max_error = max(self.max_error, error)
            proposal = head.staged.proposal
            self.rewrites.append({"pass": p.name, "where": proposal.where, "summary": proposal.summary,
                                  "error": error, **proposal.details})
            self._applied(graph)
            matching = head.after
            if applied >= budget:
                break
        if matching is not None and matching.crash:
            report.rolled_back.append({"where": "(matching)", "summary": "", "error": matching.crash})
        report.fused += applied
        report.refused = matching.refusals if matching is not None else {}
        return applied

    def _stage_next(self, graph: Graph, p: Pass, failed: dict, matching: "_Matching", queue: deque) -> bool:
        """Stage the next rewrite `matching` proposes at the end of `queue`; False when it
        proposes nothing more."""
        proposal = self._next_proposal(matching, p, failed)
        if proposal is None:
            return False
        queue.append(_Queued(self._stage(graph, proposal), matching))
        return True

    def run(self) -> None:
        failed: dict = {}
        with progress_bar(None, "checking rewrites", "check") as self.checks_bar:
            for graph in self.model.graphs[:1]:  # passes work on the main graph (subgraphs are left as they are)
                for _ in range(MAX_ROUNDS):
                    if sum(self.run_pass(graph, p, failed) for p in self.passes) == 0:
                        break
                graph.cleanup().toposort()


def optimize(model: Model, passes=None, *, verify: bool = True, inputs: list[list[np.ndarray]] | None = None,
             tolerance: float = equivalence.DEFAULT_TOLERANCE,
             local_tolerance: float = equivalence.DEFAULT_LOCAL_TOLERANCE, seed: int = 0,
             lossy_float16: bool = False):
    """Return (optimized copy of `model`, OptimizationReport). The input model is not changed.

    passes: names or Pass instances, default: every exact pass (DEFAULT_PIPELINE).
    verify: compare the whole optimized model with the original at the end; a mismatch
    raises VerificationError (whose .report has the details).
    inputs: samples for the whole-model check (a list of samples or a jaxfuse.samples.SampleSet,
    any number; default: `2` seeded random samples); the statistics the rewrite checks draw
    their realistic samples from come from the first.
    float16 weights (DEQUANTIZE of float16 constants) are folded exactly, the fused ones
    stored as float32 (passes/float16.py); lossy_float16 rounds those to float16 after the
    exact check and measures what that changed (report.float16["lossy"]).
    """
    pass_list = resolve_passes(passes)
    compiled_before = STATS.to_dict()
    timings = {}
    given = model
    whole = needs_whole_model(model)  # several subgraphs or variables: statistics and final check run it whole
    default_count = DEFAULT_STEPS if whole and resource_variables(model) else 2
    samples = as_sample_set(inputs if inputs is not None else equivalence.random_inputs(model.main, default_count, seed),
                            model.main.inputs)
    notes = []
    quantized = _quantized_tensor(model)
    requested = pass_list
    if quantized is not None:
        notes.append(f"quantized model (tensor '{quantized.name}'): left untouched; jaxfuse folds float models only")
        pass_list = []
    # the checks evaluate what they can (an op without a lowering rule stops only what depends on it), at
    # the samples' shapes with every shape computed: the file's may be one instance of a dynamic shape, or wrong
    original = model
    if pass_list:
        try:
            original = at_input_shapes(model, samples.shapes, evaluable_part(model.main))
        except LoweringError as e:  # an op that fails while tracing: the checks will say where it matters
            if any(is_dynamic(t) for t in model.main.inputs):  # not at these input shapes: nothing can be checked
                raise
            notes.append(f"shapes not computed, the stored ones are used: {e}")
    evaluable = evaluable_part(original.main)
    model = original.copy()
    hist_before = model.op_histogram()
    ops_before = sum(hist_before.values())

    float16_origins = float16.materialize(model.main) if pass_list else {}

    # the statistics need every float tensor of the original, and so (on float models) does the final check:
    # one set of programs serves both
    reference_run = SegmentedRun(evaluable, keep=_float_activations(evaluable).__contains__)
    # the first chunk of the final check, which the statistics run computes too (it uses only the first
    # sample): then the check reuses the statistics run's programs, batch size included
    chunk = equivalence.chunk_size(len(samples), 2 * reference_run.bytes_per_sample(),
                                   reference_run.placement.devices[0].platform)
    # and the final check takes the statistics run's values for that chunk instead of computing them again
    # (see _holds_reference_values): each value is let go once a rewrite has replaced its tensor, so what is
    # left when the check starts is about what it compares
    reference_values = {} if verify and pass_list and not whole and _holds_reference_values(evaluable, reference_run,
                                                                              len(samples), chunk) else None

    def statistics() -> dict[int, tuple[np.ndarray, np.ndarray] | None]:
        """Per-channel activation statistics of the original, computed when a check first needs them."""
        t = time.perf_counter()
        try:
            by_key = whole_model.activation_statistics(original, samples[0]) if whole else \
                equivalence.activation_statistics(evaluable, samples[0], run=reference_run,
                                                  batch=samples.batch(0, chunk), values=reference_values)
        except LoweringError as e:  # the checks then draw standard-normal samples only
            notes.append(f"the original could not be run for activation statistics ({e}): every rewrite was "
                         "checked on standard-normal samples only")
            by_key = {}
        keys = tensor_keys(model.main)  # same names and order as the original: ids map to the copy
        timings["reference_run"] = time.perf_counter() - t
        return {id(t): by_key[k] for t in model.main.tensors if (k := keys.get(id(t))) in by_key}

    t = time.perf_counter()
    reference_outputs = {tensor_keys(original.main)[id(t)] for t in original.main.outputs}
    optimizer = _Optimizer(model, pass_list, local_tolerance, statistics, seed,
                           applied=lambda graph: _let_go_of_replaced(reference_values, graph, reference_outputs))
    if pass_list and evaluable is not original.main and not whole:
        # the copies of the tensors the original cannot evaluate: checks reading them draw standard-normal samples
        keys, copy_keys = tensor_keys(original.main), tensor_keys(model.main)
        beyond = {keys[id(t)] for t in original.main.tensors if not t.is_constant} - \
            {keys[id(t)] for t in [*evaluable.inputs, *(t for op in evaluable.ops for t in op.outputs)]}
        optimizer.unevaluated = {id(t) for t in model.main.tensors if copy_keys[id(t)] in beyond}
        i, op, why = evaluable.left_out[0]
        notes.append(f"op {i} ({op.type}) {why}: the checks evaluate the {len(evaluable.ops)} of "
                     f"{len(original.main.ops)} ops that do not depend on such an op")
    optimizer.run()
    weights16 = float16.restore(model.main, float16_origins) if float16_origins else None
    if not optimizer.rewrites:
        # nothing was rewritten: the model goes out as it came in (cleanup and the float16 round trip
        # may reorder ops, and no op may be dropped from a model the report calls unchanged)
        model = original.copy()
    reports = {p.name: optimizer.reports.get(p.name, PassReport()) for p in requested}
    release_free_memory()
    timings["passes"] = time.perf_counter() - t - timings.get("reference_run", 0.0)

    verification = None
    if verify and pass_list and optimizer.rewrites:
        t = time.perf_counter()
        verification = equivalence.compare(original, model, samples, tolerance=tolerance, chunk=chunk,
                                           reference_run=reference_run, reference_values=reference_values,
                                           partial=True)
        timings["whole_model_check"] = time.perf_counter() - t
    elif verify and pass_list:
        notes.append("no rewrite was applied: the model is unchanged, so there was nothing to compare")
    if optimizer.unsampled:
        names = ", ".join(f"'{name}'" for name in optimizer.unsampled[:3])
        more = f" and {len(optimizer.unsampled) - 3} more" if len(optimizer.unsampled) > 3 else ""
        notes.append(f"checks reading {names}{more} used standard-normal samples only: in the reference run a "
                     "channel there held no finite value below 1e30 to take statistics from")
    if optimizer.unevaluated_read:
        names = ", ".join(f"'{name}'" for name in optimizer.unevaluated_read[:3])
        more = f" and {len(optimizer.unevaluated_read) - 3} more" if len(optimizer.unevaluated_read) > 3 else ""
        notes.append(f"checks reading {names}{more} used standard-normal samples only: the original cannot be "
                     "evaluated up to there")
    float16_report = None if weights16 is None else weights16.to_dict()
    if lossy_float16 and weights16 is not None and weights16.changed and (verification is None or verification.ok):
        float16.round_to_float16(model.main, weights16)
        lossy = equivalence.compare(original, model, samples, tolerance=float("inf"), partial=True)
        float16_report = {**weights16.to_dict(), "lossy_max_rel_error": lossy.max_rel_error,
                          "lossy_max_abs_error": lossy.max_abs_error, "lossy_samples": lossy.samples}
    if not optimizer.rewrites and weights16 is None:
        model = given.copy()  # nothing rewritten: the model as it came (not even its shapes recomputed)
    hist_after = model.op_histogram()
    report = OptimizationReport(reports, ops_before, sum(hist_after.values()), hist_before, hist_after,
                                optimizer.rewrites, optimizer.max_error, verification, timings, notes, float16_report,
                                STATS.since(compiled_before))
    if verification is not None and not verification.ok:
        raise equivalence.VerificationError(f"optimized model does not match the original: {verification.summary()}",
                                        report)
    return model, report


@dataclass
class _Staged:
    """A rewrite applied to the graph, its check started (or why it was undone at once)."""
    proposal: Rewrite
    snapshot: "_Snapshot"
    frontier: list[Tensor]
    frontier_as_staged: list[Tensor]       # shallow copies: the frontier's shapes and types when staged
    check: equivalence.RegionCheck | None  # None: the region hands nothing to the rest of the graph
    failure: str | None = None
    running: equivalence.RunningCheck | None = None  # the check, once started


@dataclass
class _Matching:
    """One run of a pass's matcher, over the graph as it was when it started: the
    refusals it met so far and why it crashed, if it did."""
    proposals: Iterator
    refusals: dict[str, list[str]] = field(default_factory=dict)
    crash: str | None = None


@dataclass
class _Queued:
    """A staged rewrite, the matching it came from (where matching goes on if its check
    fails), and the matching over the graph it leaves (once the next rewrite is looked for)."""
    staged: _Staged
    source: _Matching
    after: _Matching | None = None


def _holds_reference_values(graph: Graph, reference_run: SegmentedRun, samples: int, chunk: int) -> bool:
    """Whether the statistics run keeps its values of the final check's first chunk for the
    check: where they take no more memory than the weights (or HELD_VALUES_MIN_BYTES), and
    where the check runs the reference with the statistics run's programs (one device, a set
    below equivalence.MANY_SAMPLES), so that they are the very numbers it would compute."""
    import jax
    activation_bytes = sum(sample_bytes(t) for t in graph.tensors if _is_float_activation(t))
    return chunk * activation_bytes <= max(reference_run.weight_bytes(), HELD_VALUES_MIN_BYTES) \
        and samples < equivalence.MANY_SAMPLES and (len(jax.local_devices()) == 1 or samples <= chunk)


def _let_go_of_replaced(held: dict[str, np.ndarray] | None, graph: Graph, outputs: set[str]) -> None:
    """Drop the held values whose tensor no op of `graph` reads or writes with that shape
    any more: the final check, which pairs tensors by key, will not compare them. It pairs
    the `outputs` (keys) by position: those stay. (A float16 weight's DEQUANTIZE output is a
    constant while the passes run: it stays too.)"""
    if not held:
        return
    keys = tensor_keys(graph)
    present = {keys[id(t)]: tuple(t.shape) for op in graph.ops for t in [*op.inputs, *op.outputs] if t is not None}
    for key in [key for key, value in held.items() if key not in outputs and present.get(key) != value.shape[1:]]:
        del held[key]


def _is_float_activation(t: Tensor) -> bool:
    return not t.is_constant and t.dtype is not None and t.dtype.kind == "f"


def _float_activations(graph: Graph) -> set[str]:
    keys = tensor_keys(graph)
    return {keys[id(t)] for t in graph.tensors if _is_float_activation(t)}


class _RewriteInvalid(Exception):
    pass
