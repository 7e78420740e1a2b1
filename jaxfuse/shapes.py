"""Shapes are computed, never taken on trust from the file.

A tensor's `shape` in a .tflite/.circle file is one instance: where `shape_signature`
holds -1 the dimension is dynamic (LiteRT resizes the inputs and recomputes every shape;
the stored instance can even make an intermediate empty), and converters also write
plainly wrong shapes (a PAD whose paddings give another size than the one stored). jaxfuse
runs a graph at the shapes of the data it is given (a new shape is a new program):
`computed_shapes` traces the lowered graph with jax.eval_shape (nothing is computed) and
`at_input_shapes` gives a copy of the model whose tensors carry the computed shapes, so
the segmented checks, the region checks and the samples drawn for them all see the real
shapes. The stored shapes serve as the default input shapes, and wherever they agree.
"""
from __future__ import annotations

from typing import Sequence

from .ir import Graph, Model, Tensor


def signature(tensor: Tensor) -> tuple[int, ...]:
    """The tensor's shape with -1 where a dimension is dynamic."""
    if tensor.shape_signature is not None and len(tensor.shape_signature) == len(tensor.shape):
        return tuple(int(d) for d in tensor.shape_signature)
    return tuple(int(d) for d in tensor.shape)


def is_dynamic(tensor: Tensor) -> bool:
    return any(d < 0 for d in signature(tensor))


def fits(tensor: Tensor, shape: Sequence[int]) -> bool:
    """Whether an array of `shape` can feed graph input `tensor`: same rank, and the stored
    size in every dimension that is not dynamic."""
    expected = signature(tensor)
    return len(shape) == len(expected) and all(e < 0 or int(d) == e for d, e in zip(shape, expected))


def describe(tensor: Tensor) -> str:
    """'[1, 16000]' or, for a dynamic tensor, '[-1, 16000] (stored as [1, 16000])'."""
    stored = [int(d) for d in tensor.shape]
    return f"{list(signature(tensor))} (stored as {stored})" if is_dynamic(tensor) else str(stored)


def computed_shapes(graph: Graph, input_shapes: Sequence[Sequence[int]] | None = None) -> dict[int, tuple[int, ...]]:
    """id(tensor) -> shape of every tensor that evaluating `graph` computes (its inputs
    included), with the inputs at `input_shapes` (default: their stored shapes). A shape
    that does not fit an input, and a graph that cannot be evaluated at these shapes, raise
    LoweringError."""
    import jax

    from .lowering import LoweringError, lower_graph, tensor_keys
    shapes = [tuple(int(d) for d in t.shape) for t in graph.inputs] if input_shapes is None \
        else [tuple(int(d) for d in s) for s in input_shapes]
    for t, shape in zip(graph.inputs, shapes):
        if not fits(t, shape):
            raise LoweringError(f"input '{t.name}' is given shape {list(shape)}; the model's is {describe(t)}")
    from .segmented import structure_key
    found = structure_key(graph.ops, graph.inputs, graph.outputs, extra=("shapes", shapes))
    if found is not None and found[0] in _COMPUTED:  # the same structure at the same input shapes
        return {id(t): shape for t, shape in zip(found[1], _COMPUTED[found[0]]) if shape is not None}
    fn, params = lower_graph(graph, all_tensors=True, on_device=False)
    param_avals = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in params.items()}
    input_avals = [jax.ShapeDtypeStruct(s, t.dtype) for t, s in zip(graph.inputs, shapes)]
    try:
        values = jax.eval_shape(fn, param_avals, *input_avals)
    except LoweringError as e:
        dynamic = [t for t in graph.inputs if is_dynamic(t)]
        stored = [tuple(int(d) for d in t.shape) for t in graph.inputs]
        if dynamic and shapes == stored:
            names = ", ".join(f"'{t.name}' {describe(t)}" for t in dynamic)
            raise LoweringError(f"at the stored shapes of its dynamic inputs ({names}) the model cannot run: {e}; "
                                "give inputs of the shape to check") from None
        raise
    keys = tensor_keys(graph)
    result = {id(t): tuple(values[keys[id(t)]].shape) for t in graph.tensors if keys[id(t)] in values}
    if found is not None:
        _COMPUTED[found[0]] = [result.get(id(t)) for t in found[1]]
        while len(_COMPUTED) > 64:
            _COMPUTED.pop(next(iter(_COMPUTED)))
    return result


_COMPUTED: dict[str, list] = {}  # structure digest -> computed shapes, by the digest's tensor order


def disagreeing(graph: Graph, shapes: dict[int, tuple[int, ...]]) -> list[Tensor]:
    """The tensors whose stored shape differs from the computed one."""
    return [t for t in graph.tensors if id(t) in shapes and tuple(int(d) for d in t.shape) != shapes[id(t)]]


def apply_shapes(graph: Graph, shapes: dict[int, tuple[int, ...]]) -> None:
    """Give each tensor of `graph` its computed shape (its signature keeps -1 where a
    dimension is dynamic)."""
    for t in disagreeing(graph, shapes):
        shape = shapes[id(t)]
        old = signature(t)
        t.shape = shape
        if t.shape_signature is not None:
            t.shape_signature = tuple(-1 if len(old) == len(shape) and o < 0 else d for o, d in zip(old, shape)) \
                if len(old) == len(shape) else shape


def at_input_shapes(model: Model, input_shapes: Sequence[Sequence[int]] | None = None,
                    graph: Graph | None = None) -> Model:
    """`model` itself when every shape its main graph stores is the computed one at
    `input_shapes` (default: the stored input shapes), else a copy whose main-graph tensors
    carry the computed shapes. `graph`: the part of the main graph to evaluate (a
    segmented.EvaluablePart of it; default: all of it); tensors outside it keep their
    stored shapes."""
    shapes = computed_shapes(graph if graph is not None else model.main, input_shapes)
    if not disagreeing(model.main, shapes):
        return model
    copied = model.copy()
    by_old = {id(old): new for old, new in zip(model.main.tensors, copied.main.tensors)}
    apply_shapes(copied.main, {id(by_old[k]): s for k, s in shapes.items() if k in by_old})
    return copied
