"""Whole-graph evaluation in segments, so that checking a big model never holds all of
its weights on the device or compiles it as one XLA program.

A graph (in topological order) is cut into consecutive runs of ops. Each segment is
compiled on its own, reads the activations that cross the cut in front of it, and returns
the ones later segments still need, plus every tensor it computes (to reduce to
per-channel statistics, or to compare). Its constants are put on the device for that
segment only and freed with it, so peak memory is one segment's weights and activations
instead of the whole model's.

Cuts are made only where every activation crossing them is floating point, quantized
(an integer tensor with a scale) or a graph input: another integer tensor computed inside
may be a static value (a shape, an axis) that the next ops need at trace time. Among the
clean cuts, the planner prefers those where one computed tensor crosses (between the
blocks of a network) and starts a new segment where a block repeats the one the current
segment began with, so the repeated blocks of a stage become segments with the same
program: with weights passed as arguments (jaxfuse.programs) they share one executable.

Samples are evaluated in batches: every segment program is vmapped over a leading sample
axis, and with several devices the batch is sharded over them (a jax.sharding.Mesh with
one axis, "samples"; parameters replicated). A batch is a number of fixed-size chunks of
samples; each device computes whole chunks, so what a sample's values are does not
depend on how many devices share the work.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .ir import Graph, Op, Tensor
from .lowering import LoweringError, lower_graph, rule_for, tensor_keys
from .lowering.core import WHOLE_MODEL_OPS
from .lowering.quant import is_quantized_integer
from .memory import release_free_memory
from .programs import CHECK_COMPILER_OPTIONS, MAX_PROGRAMS, PROGRAMS, STATS, compile_for_check  # noqa: F401

SEGMENT_MAX_OPS = 16
SEGMENT_MAX_WEIGHT_BYTES = 16 * 2**20
SAMPLE_AXIS = "samples"


@dataclass
class Segment:
    ops: list[Op]
    inputs: list[Tensor]   # activations read from in front of the segment (or the graph inputs)
    carry: list[Tensor]    # activations it computes (or passes on) that later segments read


def _op_signature(op: Op) -> tuple:
    """What an op looks like for planning (never for caching: jaxfuse.programs keys on the
    lowered program itself)."""
    def tensor(t):
        return None if t is None else (tuple(t.shape), t.type, t.is_constant)
    return (op.type, repr(sorted(op.options.items())), tuple(tensor(t) for t in op.inputs),
            tuple(tensor(t) for t in op.outputs))


def _buffers(op: Op) -> dict[int, int]:
    return {id(t.buffer): t.buffer.nbytes for t in op.inputs if t is not None and t.is_constant}


def plan_segments(graph: Graph, max_ops: int | None = None, max_weight_bytes: int | None = None) -> list[Segment]:
    """Consecutive runs of graph.ops, each within both budgets (default: SEGMENT_MAX_OPS,
    SEGMENT_MAX_WEIGHT_BYTES) where a clean cut allows, aligned with repeated blocks."""
    max_ops = SEGMENT_MAX_OPS if max_ops is None else max_ops
    max_weight_bytes = SEGMENT_MAX_WEIGHT_BYTES if max_weight_bytes is None else max_weight_bytes
    ops = graph.ops
    n = len(ops)
    if not n:
        return []
    graph_inputs = {id(t) for t in graph.inputs}
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
    live: list[list[Tensor]] = [[] for _ in range(n + 1)]  # live[c]: computed before op c, read at or after it
    for k, t in tensors.items():
        if k in produced_at:
            for cut in range(produced_at[k] + 1, last_read.get(k, -2) + 1):
                live[cut].append(t)

    def clean(cut: int) -> bool:
        return all(t.dtype is not None and t.dtype.kind == "f" or is_quantized_integer(t) or id(t) in graph_inputs
                   for t in live[cut])

    # units: runs of ops between clean cuts that only one computed tensor crosses
    bounds = [0] + [c for c in range(1, n) if clean(c) and sum(id(t) not in graph_inputs for t in live[c]) <= 1]
    units = list(zip(bounds, bounds[1:] + [n]))
    signatures = [tuple(_op_signature(op) for op in ops[a:b]) for a, b in units]

    cuts = [0]

    def split(a: int, b: int) -> None:
        """Op by op within [a, b), as far as the budgets and clean cuts allow."""
        start, weight, seen = a, 0, set()
        for i in range(a, b):
            constants = {k: v for k, v in _buffers(ops[i]).items() if k not in seen}
            if i > start and (i - start >= max_ops or weight + sum(constants.values()) > max_weight_bytes) \
                    and clean(i):
                cuts.append(i)
                start, weight, seen = i, 0, set()
                constants = _buffers(ops[i])
            weight += sum(constants.values())
            seen.update(constants)

    current: list[int] = []      # indices of the units in the open segment
    seen_buffers: dict[int, int] = {}
    for u, (a, b) in enumerate(units):
        buffers = {k: v for op in ops[a:b] for k, v in _buffers(op).items()}
        if b - a > max_ops or sum(buffers.values()) > max_weight_bytes:  # a unit over budget: split it
            cuts.append(a)
            split(a, b)
            cuts.append(b)
            current, seen_buffers = [], {}
            continue
        if current:
            start = units[current[0]][0]
            merged = {**seen_buffers, **buffers}
            if b - start > max_ops or sum(merged.values()) > max_weight_bytes \
                    or signatures[u] == signatures[current[0]]:
                cuts.append(a)
                current, seen_buffers = [], {}
        current.append(u)
        seen_buffers.update(buffers)
    cuts = sorted(set(c for c in cuts if 0 <= c < n)) + [n]
    return [Segment(ops[a:b], live[a], live[b]) for a, b in zip(cuts, cuts[1:])]


class EvaluablePart(Graph):
    """The ops of `whole` that the checks can evaluate, sharing its tensors (so tensor keys
    are the same): `left_out` holds (op index, op, why) for the others. Its outputs are the
    whole graph's outputs that it computes."""

    def __init__(self, whole: Graph, ops: list[Op], left_out: list[tuple[int, Op, str]]):
        computed = {id(t) for op in ops for t in op.outputs} | {id(t) for t in whole.inputs}
        super().__init__(whole.tensors, ops, whole.inputs, [t for t in whole.outputs if id(t) in computed],
                         whole.name, whole.extra)
        self.whole = whole
        self.left_out = left_out

    def why_not(self, tensor: Tensor) -> str:
        """Why `tensor` (not computed here) is not evaluated: the first left-out op it depends on."""
        producer = self.whole.producers()
        stack, seen = [tensor], set()
        reasons = {id(op): (i, op, why) for i, op, why in self.left_out}
        first = None
        while stack:
            t = stack.pop()
            op = producer.get(id(t))
            if op is None or id(op) in seen:
                continue
            seen.add(id(op))
            if id(op) in reasons and reasons[id(op)][2] != _UPSTREAM:
                first = min(first, reasons[id(op)], key=lambda r: r[0]) if first else reasons[id(op)]
            stack.extend(x for x in op.inputs if x is not None and not x.is_constant)
        if first is None:
            return "it is not evaluated"
        i, op, why = first
        return f"op {i} ({op.type}) {why}"


_UPSTREAM = "reads a tensor that is not evaluated"


def evaluable_part(graph: Graph) -> Graph:
    """`graph` itself when the checks can evaluate all of it, else its EvaluablePart: every
    op with a lowering rule and outputs whose activation inputs are graph inputs or
    computed by such ops. (An op without outputs acts by side effect, which evaluating a
    graph by its outputs cannot do; control flow and resource variables need the model's
    other subgraphs and its state, which the checks' one-graph programs do not run.)"""
    if isinstance(graph, EvaluablePart):
        return graph
    available = {id(t) for t in graph.inputs}
    kept, left_out = [], []
    for i, op in enumerate(graph.ops):
        why = None
        if not op.outputs:
            why = "has no outputs (it acts by side effect)"
        elif op.type in WHOLE_MODEL_OPS:
            why = "needs the whole model (other subgraphs or resource variables)"
        else:
            try:
                rule_for(op, i)
            except LoweringError:
                why = "has no lowering rule"
        if why is None and any(t is not None and not t.is_constant and id(t) not in available for t in op.inputs):
            why = _UPSTREAM
        if why is None:
            kept.append(op)
            available.update(id(t) for t in op.outputs)
        else:
            left_out.append((i, op, why))
    return graph if not left_out else EvaluablePart(graph, kept, left_out)


def whole_graph(graph: Graph) -> Graph:
    """The graph an evaluable part was taken from (a whole graph is its own)."""
    return graph.whole if isinstance(graph, EvaluablePart) else graph


class Placement:
    """Where a batch runs: one device, or a mesh over several with the sample axis sharded
    (each device computes an equal, contiguous share of the batch) and parameters
    replicated."""

    def __init__(self, devices=None):
        import jax
        self.devices = list(devices) if devices else [jax.devices()[0]]
        if len(self.devices) > 1:
            from jax.sharding import Mesh, NamedSharding, PartitionSpec
            self.mesh = Mesh(np.array(self.devices), (SAMPLE_AXIS,))
            self.batch_sharding = NamedSharding(self.mesh, PartitionSpec(SAMPLE_AXIS))
            self.replicated = NamedSharding(self.mesh, PartitionSpec())
        else:
            self.mesh = None
            self.batch_sharding = self.replicated = None

    def __len__(self) -> int:
        return len(self.devices)

    def put_batch(self, array):
        import jax
        return jax.device_put(array, self.batch_sharding if self.mesh is not None else self.devices[0])

    def put_params(self, arrays: list) -> list:
        import jax
        return jax.device_put(list(arrays), self.replicated if self.mesh is not None else self.devices[0])

    def description(self) -> str:
        return ",".join(f"{d.platform}:{d.id}" for d in self.devices)

    def shardings(self, args) -> dict:
        """jax.jit's in_shardings / out_shardings for (params, *batch) arguments (none on one device)."""
        if self.mesh is None:
            return {}
        params, *xs = args
        return {"in_shardings": ([self.replicated] * len(params), *[self.batch_sharding] * len(xs)),
                "out_shardings": self.batch_sharding}

    def lower(self, fn, *args, options: dict | None = None):
        """(lowered, program key) of fn for these arguments, placed here, for compiler
        `options` (default programs.CHECK_COMPILER_OPTIONS)."""
        return PROGRAMS.lower(fn, *args, options=options, **self.shardings(args))

    def compile(self, fn, *args):
        return PROGRAMS.compile(fn, *args, **self.shardings(args))


def _canonical(value) -> bytes:
    """A byte string standing for an option value, a quantization field or an extra dict."""
    if isinstance(value, np.ndarray):
        return b"nd" + value.dtype.str.encode() + repr(value.shape).encode() + value.tobytes()
    if isinstance(value, dict):
        return b"{" + b",".join(repr(k).encode() + b":" + _canonical(v) for k, v in sorted(value.items(),
                                                                                     key=lambda kv: repr(kv[0]))) + b"}"
    if isinstance(value, (list, tuple)):
        return b"[" + b",".join(_canonical(v) for v in value) + b"]"
    if isinstance(value, (bytes, bytearray)):
        return b"b" + bytes(value)
    if hasattr(value, "__dataclass_fields__"):
        return type(value).__name__.encode() + _canonical(vars(value))
    return repr(value).encode()


def structure_key(ops: list[Op], inputs: list[Tensor], outputs: list[Tensor], extra=()) -> tuple[str, list[Tensor]] | None:
    """A digest of everything that lowering `ops` from `inputs` to `outputs` depends on,
    except tensor names and the values of float constants, which lowering passes to the
    program as arguments; and the tensors in the order the digest numbers them. Two parts
    of a model with the same digest lower to the same program (up to those arguments), so
    the second can reuse the first's executable without being traced at all.

    In the digest: per op its rule (the registered function), opcode, options and extra
    fields; per tensor its place in the wiring, shape, shape signature, type, quantization,
    flags and extra fields; the values of every constant lowering bakes in (integer
    constants without a scale: shapes, axes, paddings) and of every constant a quantized
    op reads (quantized rules compute multipliers, tables and bounds from them while
    tracing) or a float rule registered with reads_constant_values reads. Other float rules
    never read a float constant's value while tracing: it arrives as a traced parameter
    (tests/test_programs.py checks the rules for that).
    None when an op has no rule (lowering will say so)."""
    import jax
    from .lowering.core import READS_CONSTANT_VALUES, LoweringError, _is_parameter, op_family, rule_for
    position: dict[int, int] = {}
    order: list[Tensor] = []
    value_readers: set[int] = set()
    for op in ops:
        try:
            reads_values = op_family(op) == "quantized" or rule_for(op, 0) in READS_CONSTANT_VALUES
        except LoweringError:
            return None
        if reads_values:
            value_readers.update(id(t) for t in op.inputs if t is not None)
    h = hashlib.blake2b(digest_size=20)

    def tensor(t: Tensor | None) -> None:
        if t is None:
            h.update(b"-")
            return
        if id(t) in position:
            h.update(b"@%d" % position[id(t)])
            return
        position[id(t)] = len(order)
        order.append(t)
        q = t.quantization
        h.update(b"T" + repr((tuple(t.shape), t.shape_signature, t.type, t.is_variable, t.has_rank,
                              t.is_constant)).encode())
        h.update(_canonical(t.extra))
        if q is not None:
            h.update(_canonical([q.scale, q.zero_point, q.min, q.max, q.quantized_dimension, q.details,
                                 q.details_type]))
        if t.is_constant and (not _is_parameter(t) or id(t) in value_readers):
            h.update(b"D" + hashlib.blake2b(t.buffer.data, digest_size=20).digest())

    for t in inputs:
        tensor(t)
    for op in ops:
        try:
            rule = rule_for(op, 0)
        except LoweringError:
            return None
        h.update(b"O" + f"{rule.__module__}.{rule.__qualname__}#{id(rule)}".encode())
        h.update(_canonical([op.opcode.builtin, op.opcode.version, op.opcode.custom_code, op.options_type,
                             op.options, op.extra]))
        for t in op.inputs:
            tensor(t)
        h.update(b">")
        for t in op.outputs:
            tensor(t)
    h.update(b"=")
    for t in outputs:
        tensor(t)
    h.update(_canonical([extra, bool(jax.config.jax_enable_x64)]))
    return h.hexdigest(), order


@dataclass
class _Layout:
    """How a lowered segment program maps onto a segment's tensors, by structure position."""
    program_key: str
    params: list[int]    # parameters, in argument order
    inputs: list[int]
    carry: list[int]
    kept: list[int]      # produced tensors the program returns (traced ones), in order


_LAYOUTS: "OrderedDict[str, _Layout]" = OrderedDict()


class _SegmentProgram:
    """One segment's program: its parameter tensors (flat arguments), which tensors it
    reads, passes on and returns, and its executable (a Future while compiling)."""

    def __init__(self, layout: _Layout, order: list[Tensor], keys: dict[int, str], executable):
        self.param_tensors = [order[p] for p in layout.params]
        self.input_ids = [id(order[p]) for p in layout.inputs]
        self.carry_ids = [id(order[p]) for p in layout.carry]
        self.kept_keys = [keys[id(order[p])] for p in layout.kept]
        self.executable = executable

    def compiled(self):
        if hasattr(self.executable, "result"):
            self.executable = self.executable.result()
        return self.executable


def _lower_segment(graph: Graph, segment: Segment, keys: dict[int, str], order: list[Tensor], size: int,
                   placement: "Placement", wanted: list[Tensor], options: dict | None = None):
    """Lower one segment (vmapped over `size` samples) returning its carry and the `wanted`
    tensors it computes, and start compiling it: (layout, Future)."""
    import jax
    position = {id(t): i for i, t in enumerate(order)}
    produced = wanted
    outputs = list({id(t): t for t in [*wanted, *segment.carry]}.values())
    fn, params = lower_graph(graph, inputs=segment.inputs, outputs=outputs, all_tensors=True, on_device=False)
    param_keys = list(params)  # in order of first use: the same for the same structure
    del params  # put on the devices each time the segment runs
    by_key = {keys[id(t)]: t for t in graph.tensors}
    param_tensors = [by_key[k] for k in param_keys]
    carry_keys = [keys[id(t)] for t in segment.carry]
    produced_keys = list(dict.fromkeys(keys[id(t)] for t in produced))
    traced_keys: list[str] = []

    def step(flat_params, *xs):
        values = fn(dict(zip(param_keys, flat_params)), *xs)
        traced_keys[:] = [k for k in produced_keys if not isinstance(values[k], np.ndarray)]  # static ones stay out
        return tuple(values[k] for k in carry_keys), tuple(values[k] for k in traced_keys)

    vstep = jax.vmap(step, in_axes=(None,) + (0,) * len(segment.inputs),
                     axis_size=size)  # (a segment computing from constants only reads no batch)
    avals = ([jax.ShapeDtypeStruct(tuple(t.shape), jax.dtypes.canonicalize_dtype(t.dtype)) for t in param_tensors],
             *[jax.ShapeDtypeStruct((size, *t.shape), jax.dtypes.canonicalize_dtype(t.dtype)) for t in segment.inputs])
    lowered, key = placement.lower(vstep, *avals, options=options)
    by_produced_key = {keys[id(t)]: t for t in produced}
    layout = _Layout(key, [position[id(t)] for t in param_tensors], [position[id(t)] for t in segment.inputs],
                     [position[id(t)] for t in segment.carry], [position[id(by_produced_key[k])] for k in traced_keys])
    return layout, PROGRAMS.submit(lowered, key, options)


class SegmentedRun:
    """A graph planned into segments, ready to evaluate batches of samples. Each segment's
    program is found by structure (a repeated block: no tracing at all), or lowered and
    compiled on a background thread while the next segments are lowered, then reused for
    every later batch of the same size."""

    def __init__(self, graph: Graph, placement: Placement | None = None, keep: Callable[[str], bool] | None = None,
                 **budget):
        """`keep`: the tensors (by key) the programs return besides what they pass on (all
        by default); fewer is less memory to fill per batch."""
        self.graph = graph
        self.keys = tensor_keys(graph)
        self.segments = plan_segments(graph, **budget)
        self.placement = placement or Placement()
        self.keep = keep or (lambda key: True)
        self._programs: dict[tuple, list[_SegmentProgram]] = {}
        self.resident = False  # keep each segment's weights on the devices between batches
        self.options: dict | None = None  # compiler options (default: programs.CHECK_COMPILER_OPTIONS)
        self._params: dict[int, list] = {}

    def prepare(self, size: int) -> list[_SegmentProgram]:
        """The segment programs for batches of `size` samples (lowered, compiling)."""
        programs = self._programs.get((size, id(self.placement), repr(self.options)))
        if programs is not None:
            return programs
        side_effect = next(((i, op) for i, op in enumerate(self.graph.ops) if not op.outputs), None)
        if side_effect is not None:  # evaluating only what the outputs need would silently skip it
            i, op = side_effect
            raise LoweringError(f"op {i} ({op.type}) has no outputs (it acts by side effect): the checks evaluate "
                                "a graph by its outputs and cannot run it")
        programs = []
        for segment in self.segments:
            produced = [t for op in segment.ops for t in op.outputs if self.keep(self.keys[id(t)])]
            found = structure_key(segment.ops, segment.inputs, produced + segment.carry,
                                  extra=("segment", size, self.placement.description(), repr(self.options)))
            if found is None:  # no rule for some op: rule_for raises the error that says so
                for op in segment.ops:
                    rule_for(op, self.graph.ops.index(op))
            skey, order = found
            layout = _LAYOUTS.get(skey)
            executable = PROGRAMS.find(layout.program_key) if layout is not None else None
            if executable is not None:
                _LAYOUTS.move_to_end(skey)
                STATS.reused_unlowered += 1
            else:
                layout, executable = _lower_segment(self.graph, segment, self.keys, order, size, self.placement,
                                                    produced, self.options)
                _LAYOUTS[skey] = layout
                while len(_LAYOUTS) > MAX_PROGRAMS:
                    _LAYOUTS.popitem(last=False)
            programs.append(_SegmentProgram(layout, order, self.keys, executable))
        self._programs = {(size, id(self.placement), repr(self.options)): programs}
        return programs

    def run(self, batch: list, keep: Callable[[str], bool] | None = None) -> Iterator[dict]:
        """Evaluate the graph on `batch` (per graph input an array with a leading sample
        axis, all of one length), segment by segment. For each segment, yield {tensor key:
        array with the leading sample axis} of the tensors it computes whose key `keep`
        and the run's own `keep` accept (the first segment's may also hold graph inputs). Values are
        jax arrays (sharded like the batch); the caller brings what it needs to the host. A
        segment's values are yielded after the next segment is dispatched, so the devices
        compute while the caller works on them."""
        keep = keep or (lambda key: True)
        graph, keys, placement = self.graph, self.keys, self.placement
        placed = [placement.put_batch(x) for x in batch]
        env = dict(zip((id(t) for t in graph.inputs), placed))
        inputs_kept = {keys[id(t)]: x for t, x in zip(graph.inputs, placed) if keep(keys[id(t)])}
        if not self.segments:  # no ops: the outputs are inputs
            yield inputs_kept
            return
        programs = self.prepare(len(batch[0]) if batch else 1)
        ready = None
        for index, program in enumerate(programs):
            flat = self._params.get(index) if self.resident else None
            if flat is None:
                flat = placement.put_params([t.data for t in program.param_tensors])
                if self.resident:
                    self._params[index] = flat
            carried, kept = program.compiled()(flat, *[env[k] for k in program.input_ids])
            env.clear()
            env.update(zip(program.carry_ids, carried))
            result = {k: v for k, v in zip(program.kept_keys, kept) if keep(k)}
            if index == 0:
                result = {**inputs_kept, **result}
            del flat, kept
            if ready is not None:  # yielded once the next segment is dispatched: its work overlaps the caller's
                yield ready
            ready = result
        del result
        yield ready
        env.clear()
        release_free_memory()

    def weight_bytes(self) -> int:
        """Bytes of the constants the segments read (each buffer once)."""
        return sum({id(t.buffer): t.buffer.nbytes for s in self.segments for op in s.ops for t in op.inputs
                    if t is not None and t.is_constant}.values())

    def release(self) -> None:
        """Drop the weights kept on the devices (see `resident`)."""
        self._params.clear()

    def bytes_per_sample(self) -> int:
        """The most bytes one sample's activations take in one segment (its inputs and every
        tensor it computes): what a batch costs per sample."""
        return max((sum(map(sample_bytes, segment.inputs))
                    + sum(sample_bytes(t) for op in segment.ops for t in op.outputs) for segment in self.segments),
                   default=sum(map(sample_bytes, self.graph.inputs)))


def sample_bytes(t: Tensor) -> int:
    """Bytes of one sample's value of activation `t` (a dynamic dimension counted as 1)."""
    return int(np.prod([max(int(d), 1) for d in t.shape])) * (t.dtype.itemsize if t.dtype is not None else 4)


def stack_samples(samples: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Per graph input, the samples' arrays stacked on a leading axis."""
    return [np.stack([np.asarray(s[i]) for s in samples]) for i in range(len(samples[0]))] if samples else []


def evaluate_in_segments(graph: Graph, samples: list[list[np.ndarray]], keep: Callable[[str], bool],
                         **budget) -> Iterator[list[dict[str, np.ndarray]]]:
    """Run `graph` on every sample (as one batch), segment by segment. For each segment,
    yield one {tensor key: value} per sample, holding the tensors the segment computes
    whose key `keep` accepts (the first segment's may also hold graph inputs)."""
    run = SegmentedRun(graph, **budget)
    for values in run.run(stack_samples(samples), keep):
        host = {k: np.asarray(v) for k, v in values.items()}
        yield [{k: v[i] for k, v in host.items()} for i in range(len(samples))]
