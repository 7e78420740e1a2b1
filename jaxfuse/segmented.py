"""Whole-graph evaluation in segments, so that checking a big model never holds all of
its weights on the device or compiles it as one XLA program.

A graph (in topological order) is cut into consecutive runs of ops. Each segment is
jit-compiled on its own, reads the activations that cross the cut in front of it, and
returns the ones later segments still need, plus the tensors the caller keeps (to reduce
to per-channel statistics, or to compare). Its constants are put on the device for that
segment only and freed with it, so peak memory is one segment's weights and one
segment's compilation instead of the whole model's.

Cuts are made only where every activation crossing them is floating point, quantized
(an integer tensor with a scale) or a graph input: another integer tensor computed inside
may be a static value (a shape, an axis) that the next ops need at trace time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import jax
import numpy as np

from .ir import Graph, Op, Tensor
from .lowering import lower_graph, tensor_keys
from .lowering.quant import is_quantized_integer
from .memory import release_free_memory

SEGMENT_MAX_OPS = 16
SEGMENT_MAX_WEIGHT_BYTES = 16 * 2**20
# Checks run each program once or twice, so compile time is what counts: LLVM's -O0 cuts
# XLA CPU compile time by about a third (ResNet50V2: 1.9 s -> 1.2 s) and costs 0.1 s of run time.
CHECK_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def compile_for_check(fn, *args):
    """jit-compile fn for these arguments, ahead of time and outside jax's caches (a check's
    program runs once or twice and is then dropped with everything it holds)."""
    return jax.jit(fn).lower(*args).compile(compiler_options=CHECK_COMPILER_OPTIONS)


@dataclass
class Segment:
    ops: list[Op]
    inputs: list[Tensor]   # activations read from in front of the segment (or the graph inputs)
    carry: list[Tensor]    # activations it computes (or passes on) that later segments read


def plan_segments(graph: Graph, max_ops: int | None = None, max_weight_bytes: int | None = None) -> list[Segment]:
    """Consecutive runs of graph.ops, each within both budgets (default: SEGMENT_MAX_OPS,
    SEGMENT_MAX_WEIGHT_BYTES) where a clean cut allows."""
    max_ops = SEGMENT_MAX_OPS if max_ops is None else max_ops
    max_weight_bytes = SEGMENT_MAX_WEIGHT_BYTES if max_weight_bytes is None else max_weight_bytes
    ops = graph.ops
    if not ops:
        return []
    produced_at = {id(t): -1 for t in graph.inputs}
    last_read = {}
    for i, op in enumerate(ops):
        for t in op.outputs:
            produced_at[id(t)] = i
        for t in op.inputs:
            if t is not None and not t.is_constant:
                last_read[id(t)] = i
    tensors = {id(t): t for op in ops for t in [*op.inputs, *op.outputs] if t is not None and not t.is_constant}
    tensors.update({id(t): t for t in graph.inputs})

    def live_at(cut: int) -> list[Tensor]:
        """Activations computed before op `cut` and read at or after it."""
        return [t for k, t in tensors.items() if produced_at.get(k, cut) < cut and last_read.get(k, -2) >= cut]

    graph_inputs = {id(t) for t in graph.inputs}

    def clean(cut: int) -> bool:
        return all(t.dtype is not None and t.dtype.kind == "f" or is_quantized_integer(t) or id(t) in graph_inputs
                   for t in live_at(cut))

    bounds, start, weight, seen = [0], 0, 0, set()
    for i, op in enumerate(ops):
        constants = {id(t.buffer): t.buffer.nbytes for t in op.inputs
                     if t is not None and t.is_constant and id(t.buffer) not in seen}
        if i > start and (i - start >= max_ops or weight + sum(constants.values()) > max_weight_bytes) and clean(i):
            bounds.append(i)
            start, weight, seen = i, 0, set()
            constants = {id(t.buffer): t.buffer.nbytes for t in op.inputs if t is not None and t.is_constant}
        weight += sum(constants.values())
        seen.update(constants)
    bounds.append(len(ops))
    return [Segment(ops[a:b], live_at(a), live_at(b)) for a, b in zip(bounds, bounds[1:])]


def evaluate_in_segments(graph: Graph, samples: list[list[np.ndarray]], keep: Callable[[str], bool],
                         **budget) -> Iterator[list[dict[str, np.ndarray]]]:
    """Run `graph` on every sample, segment by segment. For each segment, yield one
    {tensor key: value} per sample, holding the tensors the segment computes whose key
    `keep` accepts (the first segment's may also hold graph inputs). Values are returned
    as they are, not reduced inside the jit: a reduction per tensor costs more to compile
    than the whole model does to run."""
    keys = tensor_keys(graph)
    envs = [{id(t): x for t, x in zip(graph.inputs, sample)} for sample in samples]
    inputs_kept = [{keys[id(t)]: np.asarray(x) for t, x in zip(graph.inputs, sample) if keep(keys[id(t)])}
                   for sample in samples]
    segments = plan_segments(graph, **budget)
    if not segments:  # no ops: the outputs are inputs
        yield inputs_kept
        return
    for index, segment in enumerate(segments):
        produced = [t for op in segment.ops for t in op.outputs]
        fn, params = lower_graph(graph, inputs=segment.inputs, outputs=produced, all_tensors=True)
        kept_keys = [k for k in dict.fromkeys(keys[id(t)] for t in produced) if keep(k)]
        carry_keys = [keys[id(t)] for t in segment.carry]

        def step(params, *xs, fn=fn, kept_keys=kept_keys, carry_keys=carry_keys):
            values = fn(params, *xs)
            return tuple(values[k] for k in carry_keys), {k: values[k] for k in kept_keys}

        compiled = None
        results = []
        for env in envs:
            args = (params, *[env[id(t)] for t in segment.inputs])
            if compiled is None:
                compiled = compile_for_check(step, *args)
            carried, kept = compiled(*args)
            env.clear()
            env.update(zip((id(t) for t in segment.carry), carried))
            results.append({k: np.asarray(v) for k, v in kept.items()})
        if index == 0:
            results = [{**given, **computed} for given, computed in zip(inputs_kept, results)]
        del fn, params, compiled, step, args, kept  # this segment's weights and executable go now
        release_free_memory()
        yield results
