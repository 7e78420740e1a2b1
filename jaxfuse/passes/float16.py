"""float16 weights (DEQUANTIZE of float16 constants) through the fusion passes, exactly.

BEFORE (converter's float16 model)       WHILE THE PASSES RUN               AFTER
  w16 -> DEQUANTIZE -> w --.               w (float32 constant) --.          w16 -> DEQUANTIZE -> w --.   (w unchanged)
  x ----------------- CONV_2D              x ------------ CONV_2D           w' (float32, fused) ----.    (w changed)
                                                                             x ---------------- CONV_2D

float16 -> float32 is exact, so `materialize` turns every DEQUANTIZE of a float16 constant
into a float32 constant with the same values, and the folds work on ordinary constants and
stay exact. `restore` then puts every such constant a fold left unchanged back as its
float16 constant behind a DEQUANTIZE; one a fold changed keeps its fused values in float32
(the file grows by 2 bytes per element of those). `round_to_float16`, the opt-in lossy
alternative, stores those as float16 too; the caller measures and reports what that costs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir import Buffer, Graph, Op, Tensor
from ..schema import TENSOR_TYPES
from .common import make_op, new_constant

FLOAT16, FLOAT32 = TENSOR_TYPES["FLOAT16"], TENSOR_TYPES["FLOAT32"]
_ORIGIN = "jaxfuse_float16_origin"  # Tensor.extra key while the passes run (private_input clones copy it)


@dataclass
class Float16Weights:
    """What restore did: counts, bytes, and the changed tensors (for round_to_float16)."""
    materialized: int = 0
    restored: int = 0
    kept_float32: int = 0
    extra_bytes: int = 0
    rounded_to_float16: int = 0
    changed: list[Tensor] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "changed"}


def _float16_dequantize(op: Op) -> bool:
    source = op.inputs[0] if op.inputs else None
    return (op.type == "DEQUANTIZE" and source is not None and source.is_constant and source.type == FLOAT16
            and len(op.outputs) == 1 and op.outputs[0].type == FLOAT32)


def materialize(graph: Graph) -> dict[int, tuple[Buffer, Op]]:
    """Replace each DEQUANTIZE of a float16 constant by a float32 constant of its output
    tensor; returns {id(the float32 buffer): (that buffer, the DEQUANTIZE op)} for restore
    (holding the buffer keeps its id from being reused by another one)."""
    origins: dict[int, tuple[Buffer, Op]] = {}
    for op in [op for op in graph.ops if _float16_dequantize(op)]:
        out = op.outputs[0]
        out.set_data(op.inputs[0].data.astype(np.float32))
        out.extra[_ORIGIN] = True
        origins[id(out.buffer)] = (out.buffer, op)
        graph.remove_op(op)
    return origins


def _first_readers(graph: Graph) -> dict[int, Op]:
    readers: dict[int, Op] = {}
    for op in graph.ops:
        for t in op.inputs:
            if t is not None:
                readers.setdefault(id(t), op)
    return readers


def _dequantize_into(graph: Graph, source: Tensor, target: Tensor, before: Op, like: Op | None = None) -> None:
    """target (a constant until now) becomes the output of DEQUANTIZE(source)."""
    if not any(t is source for t in graph.tensors):
        graph.add_tensor(source)
    target.buffer = None
    op = make_op(graph, "DEQUANTIZE", [source], [target], before=before)
    if like is not None:
        op.opcode, op.options_type, op.options = like.opcode, like.options_type, dict(like.options)


def restore(graph: Graph, origins: dict[int, tuple[Buffer, Op]]) -> Float16Weights:
    """Unchanged materialized constants become DEQUANTIZE of their float16 constant again;
    changed ones stay float32 (listed in .changed)."""
    summary = Float16Weights(materialized=len(origins))
    first_reader = _first_readers(graph)
    for t in list(graph.tensors):
        if not t.extra.pop(_ORIGIN, False):
            continue
        reader = first_reader.get(id(t))
        if reader is None:
            continue  # no longer used: cleanup drops it
        buffer, original = origins.get(id(t.buffer), (None, None))
        if buffer is not t.buffer:
            summary.kept_float32 += 1
            summary.extra_bytes += t.buffer.nbytes // 2
            summary.changed.append(t)
            continue
        _dequantize_into(graph, original.inputs[0], t, reader, like=original)
        summary.restored += 1
    graph.cleanup().toposort()
    return summary


def round_to_float16(graph: Graph, summary: Float16Weights) -> None:
    """LOSSY: store each changed constant as float16 behind a DEQUANTIZE, like the others."""
    first_reader = _first_readers(graph)
    for t in summary.changed:
        reader = first_reader.get(id(t))
        if reader is None:
            continue
        half = new_constant(graph, t.name + "/jaxfuse_float16", t.data.astype(np.float16))
        _dequantize_into(graph, half, t, reader)
        summary.rounded_to_float16 += 1
        summary.kept_float32 -= 1
        summary.extra_bytes -= half.buffer.nbytes
    graph.toposort()
