"""The in-memory model: Model -> Graph (one per subgraph) -> Op / Tensor.

Ops point at Tensor objects, not indices, so graph surgery never renumbers anything;
indices exist only in the file and are assigned by the writer.

Constants live in `Buffer` objects; a tensor is a constant exactly when it has one (a
constant may have zero elements: shape [0], an empty Buffer). Several tensors may share one Buffer (the TFLite
converter deduplicates identical constants); the writer keeps that sharing. Buffers are
immutable (their arrays are read-only): `Tensor.set_data` gives the tensor a fresh Buffer,
so editing one tensor's constant can never change another tensor that shared it.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .schema import BUILTIN_CUSTOM, BUILTIN_NAMES, TENSOR_TYPE_NAMES, TENSOR_TYPE_TO_DTYPE
from .sparsity import Sparsity, SparsityError, densify, stored_count


# Ops that act beyond their outputs (they write a resource variable or run other subgraphs,
# which may): never dead, even with no reader. Any op with no outputs is kept too.
SIDE_EFFECT_OPS = frozenset({"ASSIGN_VARIABLE", "CALL_ONCE", "CALL", "IF", "WHILE"})


def has_side_effect(op: "Op") -> bool:
    """Whether `op` must run although nothing reads its outputs."""
    return not op.outputs or op.type in SIDE_EFFECT_OPS or bool(op.extra.get("has_side_effect"))


class GraphError(ValueError):
    """A structural problem in a model (what `validate` reports)."""


BUFFER_ALIGNMENT = 64  # XLA's CPU client uses a host array aligned to this in place instead of copying it


def _aligned_frozen(data: np.ndarray) -> np.ndarray:
    """Flat uint8 `data` as a read-only array at a BUFFER_ALIGNMENT boundary: itself when it
    already is one in memory NumPy owns, else a copy (a writeable array is always copied,
    and so is a view of bytes, which would keep a whole file alive)."""
    owner = data
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    if not data.flags.writeable and data.ctypes.data % BUFFER_ALIGNMENT == 0 and owner.base is None:
        return data
    storage = np.empty(data.size + BUFFER_ALIGNMENT, np.uint8)
    start = -storage.ctypes.data % BUFFER_ALIGNMENT
    aligned = storage[start:start + data.size]
    aligned[...] = data
    aligned.flags.writeable = False
    return aligned


class Buffer:
    """Immutable raw constant bytes; identity is what makes a buffer shared."""

    __slots__ = ("data",)

    def __init__(self, data: np.ndarray):
        # Kept as flat uint8 so any element type (and odd ones like int4) round-trips; aligned, so
        # that every check passes the weights to XLA without copying them (a file's own layout
        # aligns them to 16 bytes at most)
        self.data = _aligned_frozen(np.ascontiguousarray(data).reshape(-1).view(np.uint8))

    @property
    def nbytes(self) -> int:
        return int(self.data.size)


@dataclass
class Quantization:
    """Per-tensor or per-axis quantization parameters (all fields optional)."""

    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    min: np.ndarray | None = None
    max: np.ndarray | None = None
    quantized_dimension: int = 0
    details: Any = None  # opaque custom/MX/blockwise details, passed through untouched
    details_type: int = 0

    def is_quantized(self) -> bool:
        return self.scale is not None and len(self.scale) > 0


@dataclass(eq=False)
class Tensor:
    name: str
    shape: tuple[int, ...]
    type: int  # circle/tflite TensorType code
    buffer: Buffer | None = None
    quantization: Quantization | None = None
    shape_signature: tuple[int, ...] | None = None
    is_variable: bool = False
    has_rank: bool = False
    # schema fields jaxfuse does not interpret (variant types, compression)
    extra: dict = field(default_factory=dict)
    # a constant that stores only some of its values (jaxfuse.sparsity); `data` is the dense value
    sparsity: Sparsity | None = None

    @property
    def dtype(self) -> np.dtype | None:
        return TENSOR_TYPE_TO_DTYPE.get(self.type)

    @property
    def is_constant(self) -> bool:
        return self.buffer is not None

    @property
    def stored_elements(self) -> int:
        """How many elements a constant's buffer must hold: its non-zeros when it is sparse."""
        if self.sparsity is None:
            return math.prod(self.shape)
        try:
            return stored_count(self.shape, self.sparsity)
        except SparsityError as e:
            raise GraphError(f"tensor '{self.name}': sparsity: {e}") from None

    @property
    def is_quantized(self) -> bool:
        return self.quantization is not None and self.quantization.is_quantized()

    @property
    def data(self) -> np.ndarray | None:
        """The constant value as a read-only array of the tensor's shape, or None."""
        if not self.is_constant:
            return None
        dtype = self.dtype
        if dtype is None:
            raise GraphError(f"tensor '{self.name}': constants of type "
                             f"{TENSOR_TYPE_NAMES.get(self.type, self.type)} cannot be viewed as an array")
        stored = self.buffer.data.view(dtype)
        if self.sparsity is None:
            return stored.reshape(self.shape)
        try:
            dense = densify(stored, self.shape, self.sparsity)
        except SparsityError as e:
            raise GraphError(f"tensor '{self.name}': sparsity: {e}") from None
        dense.flags.writeable = False
        return dense

    def set_data(self, value: np.ndarray) -> "Tensor":
        """Copy-on-write: give this tensor a new private buffer holding `value`."""
        value = np.asarray(value)
        dtype = self.dtype
        if dtype is None or value.dtype != dtype:
            raise GraphError(f"tensor '{self.name}': new constant has dtype {value.dtype}, expected {dtype}")
        self.shape = tuple(int(d) for d in value.shape)
        if self.shape_signature is not None:
            self.shape_signature = self.shape
        self.buffer = Buffer(value)
        self.sparsity = None  # the new value is stored dense
        return self

    def __repr__(self) -> str:
        kind = "const" if self.is_constant else "act"
        return f"Tensor({self.name!r}, {list(self.shape)}, {TENSOR_TYPE_NAMES.get(self.type, self.type)}, {kind})"


@dataclass(eq=False)
class OpCode:
    builtin: int            # resolved code: max(builtin_code, deprecated_builtin_code), or negative circle ops
    version: int = 1
    custom_code: str | None = None

    @property
    def name(self) -> str:
        if self.custom_code is not None and self.builtin == BUILTIN_CUSTOM:
            return f"CUSTOM({self.custom_code})"
        return BUILTIN_NAMES.get(self.builtin, f"BUILTIN_{self.builtin}")


@dataclass(eq=False)
class Op:
    opcode: OpCode
    inputs: list[Tensor | None]  # None marks an omitted optional input (index -1 in the file)
    outputs: list[Tensor]
    options_type: str | None = None  # e.g. "Conv2DOptions"; None when the op has no options
    options: dict = field(default_factory=dict)  # the option table's fields by schema name
    # schema fields jaxfuse does not interpret (custom options, intermediates, options2, ...)
    extra: dict = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.opcode.name

    def __repr__(self) -> str:
        return (f"Op({self.type}, in={[t.name if t else None for t in self.inputs]}, "
                f"out={[t.name for t in self.outputs]})")


class Graph:
    """One subgraph: tensors, ops in execution order, graph inputs and outputs."""

    def __init__(self, tensors=None, ops=None, inputs=None, outputs=None, name=None, extra=None):
        self.tensors: list[Tensor] = list(tensors or [])
        self.ops: list[Op] = list(ops or [])
        self.inputs: list[Tensor] = list(inputs or [])
        self.outputs: list[Tensor] = list(outputs or [])
        self.name: str | None = name
        self.extra: dict = dict(extra or {})

    # -- queries ---------------------------------------------------------------------
    def producer(self, tensor: Tensor) -> Op | None:
        for op in self.ops:
            if any(out is tensor for out in op.outputs):
                return op
        return None

    def consumers(self, tensor: Tensor) -> list[Op]:
        return [op for op in self.ops if any(t is tensor for t in op.inputs)]

    def producers(self) -> dict[int, Op]:
        """id(tensor) -> producing op, for every op output (one pass, for hot loops)."""
        return {id(t): op for op in self.ops for t in op.outputs}

    def consumer_map(self) -> dict[int, list[Op]]:
        """id(tensor) -> ops reading it, in op order (one pass, for hot loops)."""
        uses: dict[int, list[Op]] = {}
        for op in self.ops:
            for t in op.inputs:
                if t is not None:
                    lst = uses.setdefault(id(t), [])
                    if not lst or lst[-1] is not op:
                        lst.append(op)
        return uses

    def is_graph_output(self, tensor: Tensor) -> bool:
        return any(t is tensor for t in self.outputs)

    def tensor(self, name: str) -> Tensor:
        found = [t for t in self.tensors if t.name == name]
        if not found:
            raise KeyError(f"no tensor named {name!r}")
        if len(found) > 1:
            raise KeyError(f"{len(found)} tensors are named {name!r}")
        return found[0]

    # -- edits -----------------------------------------------------------------------
    def add_tensor(self, tensor: Tensor) -> Tensor:
        self.tensors.append(tensor)
        return tensor

    def unique_name(self, base: str) -> str:
        taken = {t.name for t in self.tensors}
        if base not in taken:
            return base
        for i in itertools.count(1):
            candidate = f"{base}_{i}"
            if candidate not in taken:
                return candidate
        raise AssertionError("unreachable")

    def replace_all_uses(self, old: Tensor, new: Tensor, *, except_ops: Iterable[Op] = ()) -> "Graph":
        """Make every reader of `old` (ops and graph outputs) read `new` instead."""
        skip = {id(op) for op in except_ops}
        for op in self.ops:
            if id(op) in skip:
                continue
            op.inputs = [new if t is old else t for t in op.inputs]
        self.outputs = [new if t is old else t for t in self.outputs]
        return self

    def remove_op(self, op: Op) -> "Graph":
        self.ops = [o for o in self.ops if o is not op]
        return self

    def remove_dead_ops(self) -> "Graph":
        """Drop ops none of whose outputs reach a graph output or an op with side effects
        (has_side_effect: ASSIGN_VARIABLE, control flow, an op without outputs)."""
        live = {id(t) for t in self.outputs}
        kept = []
        for op in reversed(self.ops):
            if any(id(t) in live for t in op.outputs) or has_side_effect(op):
                kept.append(op)
                live.update(id(t) for t in op.inputs if t is not None)
        self.ops = kept[::-1]
        return self

    def remove_dead_tensors(self) -> "Graph":
        """Drop tensors that no op, graph input or graph output refers to."""
        used = {id(t) for t in self.inputs} | {id(t) for t in self.outputs}
        for op in self.ops:
            used.update(id(t) for t in op.inputs if t is not None)
            used.update(id(t) for t in op.outputs)
            used.update(id(t) for t in op.extra.get("intermediates", ()) if t is not None)
        self.tensors = [t for t in self.tensors if id(t) in used]
        return self

    def cleanup(self) -> "Graph":
        return self.remove_dead_ops().remove_dead_tensors()

    def toposort(self) -> "Graph":
        """Order ops so every op comes after the producers of its inputs (stable)."""
        producer = self.producers()
        order: list[Op] = []
        state: dict[int, int] = {}  # 1 = visiting, 2 = done
        for root in self.ops:
            stack = [(root, False)]
            while stack:
                op, expanded = stack.pop()
                key = id(op)
                if expanded:
                    state[key] = 2
                    order.append(op)
                    continue
                if state.get(key) == 2:
                    continue
                if state.get(key) == 1:
                    raise GraphError(f"cycle through op {op.type} producing '{op.outputs[0].name}'")
                state[key] = 1
                stack.append((op, True))
                for t in reversed([t for t in op.inputs if t is not None]):
                    dep = producer.get(id(t))
                    if dep is not None and state.get(id(dep)) != 2:
                        if state.get(id(dep)) == 1:
                            raise GraphError(f"cycle through op {dep.type} producing '{dep.outputs[0].name}'")
                        stack.append((dep, False))
        self.ops = order
        return self

    def copy(self, tensor_map: dict | None = None) -> "Graph":
        """Structural copy: new Graph/Op/Tensor objects, the same immutable Buffers.

        `tensor_map` (id(old) -> new) is filled in so callers can remap references."""
        tensor_map = {} if tensor_map is None else tensor_map
        for t in self.tensors:
            tensor_map[id(t)] = copy.copy(t)
            tensor_map[id(t)].extra = dict(t.extra)

        def m(t):
            return None if t is None else tensor_map[id(t)]

        ops = []
        for op in self.ops:
            extra = dict(op.extra)
            if "intermediates" in extra:
                extra["intermediates"] = [m(t) for t in extra["intermediates"]]
            ops.append(Op(op.opcode, [m(t) for t in op.inputs], [m(t) for t in op.outputs],
                          op.options_type, copy.deepcopy(op.options), extra))
        return Graph([tensor_map[id(t)] for t in self.tensors], ops, [m(t) for t in self.inputs],
                     [m(t) for t in self.outputs], self.name, self.extra)

    def private_input(self, op: Op, index: int) -> Tensor:
        """The constant `op.inputs[index]`, cloned first if anything else reads it, so that
        editing it (set_data) changes this op only."""
        tensor = op.inputs[index]
        readers = sum(t is tensor for o in self.ops for t in o.inputs)
        if readers > 1 or self.is_graph_output(tensor):
            clone = copy.copy(tensor)
            clone.extra = dict(tensor.extra)
            clone.name = self.unique_name(tensor.name)
            self.add_tensor(clone)
            op.inputs[index] = clone
            tensor = clone
        return tensor

    # -- checks ----------------------------------------------------------------------
    def validate(self) -> "Graph":
        """Raise GraphError naming the first structural problem found."""
        known = {id(t) for t in self.tensors}
        where = f"subgraph {self.name!r}" if self.name else "subgraph"
        for role, lst in (("input", self.inputs), ("output", self.outputs)):
            for t in lst:
                if id(t) not in known:
                    raise GraphError(f"{where}: graph {role} '{t.name}' is not one of its tensors")
        produced: dict[int, Op] = {}
        for i, op in enumerate(self.ops):
            for t in op.inputs:
                if t is not None and id(t) not in known:
                    raise GraphError(f"{where}: op {i} ({op.type}) reads tensor '{t.name}' that is not in the graph")
            for t in op.outputs:
                if id(t) not in known:
                    raise GraphError(f"{where}: op {i} ({op.type}) writes tensor '{t.name}' that is not in the graph")
                if id(t) in produced:
                    raise GraphError(f"{where}: tensor '{t.name}' is produced by two ops")
                if t.is_constant:
                    raise GraphError(f"{where}: op {i} ({op.type}) writes constant tensor '{t.name}'")
                produced[id(t)] = op
        for t in self.tensors:
            if t.is_constant and t.dtype is not None:
                expected = t.stored_elements * t.dtype.itemsize
                if expected != t.buffer.nbytes:
                    stored = f" ({t.stored_elements} stored values)" if t.sparsity is not None else ""
                    raise GraphError(f"{where}: constant '{t.name}' of shape {list(t.shape)}{stored} needs "
                                     f"{expected} bytes, its buffer has {t.buffer.nbytes}")
        # inputs must be available before use: graph inputs, constants, or earlier outputs
        available = {id(t) for t in self.inputs} | {id(t) for t in self.tensors if t.is_constant or t.is_variable}
        for i, op in enumerate(self.ops):
            for t in op.inputs:
                if t is not None and id(t) not in available:
                    if id(t) in produced:
                        self.toposort()  # raises GraphError on a cycle; else the order was just off
                        return self.validate()
                    raise GraphError(f"{where}: op {i} ({op.type}) reads '{t.name}', which nothing produces")
            available.update(id(t) for t in op.outputs)
        for t in self.outputs:
            if id(t) not in available:
                raise GraphError(f"{where}: graph output '{t.name}' is never produced")
        return self


@dataclass(eq=False)
class SignatureDef:
    key: str | None
    graph_index: int
    inputs: list[tuple[str, Tensor]]
    outputs: list[tuple[str, Tensor]]


@dataclass(eq=False)
class Model:
    graphs: list[Graph]
    version: int = 3
    description: str | None = None
    metadata: list[tuple[str, bytes]] = field(default_factory=list)
    signatures: list[SignatureDef] = field(default_factory=list)
    file_format: str = "tflite"  # the identifier the model was read with: "tflite" or "circle"
    # schema fields jaxfuse does not interpret (deprecated metadata_buffer list, ...)
    extra: dict = field(default_factory=dict)

    @property
    def main(self) -> Graph:
        return self.graphs[0]

    def validate(self) -> "Model":
        if not self.graphs:
            raise GraphError("model has no subgraphs")
        for g in self.graphs:
            g.validate()
        for s in self.signatures:
            if not 0 <= s.graph_index < len(self.graphs):
                raise GraphError(f"signature {s.key!r} refers to subgraph {s.graph_index}, "
                                 f"model has {len(self.graphs)}")
        return self

    def copy(self) -> "Model":
        """Structural copy sharing the immutable constant buffers (cheap for big models)."""
        maps: list[dict] = []
        graphs = []
        for g in self.graphs:
            maps.append({})
            graphs.append(g.copy(maps[-1]))
        signatures = [SignatureDef(s.key, s.graph_index,
                                   [(k, maps[s.graph_index][id(t)]) for k, t in s.inputs],
                                   [(k, maps[s.graph_index][id(t)]) for k, t in s.outputs])
                      for s in self.signatures]
        return Model(graphs, self.version, self.description, list(self.metadata), signatures,
                     self.file_format, copy.deepcopy(self.extra))

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for g in self.graphs:
            for op in g.ops:
                hist[op.type] = hist.get(op.type, 0) + 1
        return hist

    def parameter_bytes(self) -> int:
        seen: dict[int, int] = {}
        for g in self.graphs:
            for t in g.tensors:
                if t.is_constant:
                    seen[id(t.buffer)] = t.buffer.nbytes
        return sum(seen.values())
