"""The rule registry and the graph walker that turns an ir.Graph into a JAX function.

A rule is `rule(ctx, *values) -> array | tuple of arrays`: `ctx` describes the op (its
options, input and output Tensors, where it sits in the graph) and `values` are the
op's inputs in order (None for an omitted optional input). A value is either
- a JAX array (or tracer): graph inputs, floating-point and quantized constants (read from
  `params`, so floats can be differentiated) and everything computed from them; or
- a numpy array: *static*, known while tracing. Integer and bool constants without a
  quantization scale (shapes, axes, paddings, permutations) are static, and an op whose
  inputs are all static is evaluated while tracing, so shape arithmetic (SHAPE ->
  STRIDED_SLICE -> PACK -> RESHAPE) stays static under jit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import jax
import numpy as np

from ..ir import Graph, Model, Op, Tensor
from ..schema import option_defaults
from .quant import QuantParams, is_quantized_integer, quant_params, type_name


class LoweringError(ValueError):
    """The graph (or the requested part of it) cannot be lowered to JAX."""


Rule = Callable[..., object]
FLOAT, QUANTIZED = "float", "quantized"
FAMILIES = (FLOAT, QUANTIZED)
# (op type, type family) -> rule. The family of an op is QUANTIZED when one of its
# tensors is a quantized integer (int8/uint8/int16 with a scale), else FLOAT (which also
# covers plain integer and bool arithmetic on shapes, indices and masks).
RULES: dict[tuple[str, str], Rule] = {}


def register(op_type: str, family: str = FLOAT) -> Callable[[Rule], Rule]:
    """Decorator: make `fn` the lowering rule of builtin `op_type` for one type family; a
    second rule for the same op and family is an error."""
    if family not in FAMILIES:
        raise ValueError(f"unknown type family {family!r} (known: {', '.join(FAMILIES)})")

    def decorate(fn: Rule) -> Rule:
        key = (op_type, family)
        if key in RULES:
            raise ValueError(f"a {family} lowering rule for {op_type} is already registered "
                             f"({RULES[key].__qualname__})")
        RULES[key] = fn
        return fn
    return decorate


def supported_ops(family: str = FLOAT) -> list[str]:
    """The builtin op types that have a lowering rule for `family`, sorted."""
    return sorted(op for op, fam in RULES if fam == family)


def op_family(op: Op) -> str:
    """QUANTIZED if any input or output of `op` is a quantized integer tensor, else FLOAT."""
    return QUANTIZED if any(is_quantized_integer(t) for t in [*op.inputs, *op.outputs]) else FLOAT


def _type_signature(op: Op) -> str:
    ins = ", ".join("none" if t is None else type_name(t) + ("" if t.is_quantized else " (not quantized)")
                    for t in op.inputs)
    outs = ", ".join(type_name(t) for t in op.outputs)
    return f"inputs {ins or 'none'} -> outputs {outs or 'none'}"


def rule_for(op: Op, index: int) -> Rule:
    """The rule lowering `op` (the op_family decides which); LoweringError naming the op,
    its types and what is supported when there is none."""
    family = op_family(op)
    rule = RULES.get((op.type, family))
    if rule is not None:
        return rule
    out = op.outputs[0].name if op.outputs else "?"
    names = supported_ops(family)
    short = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    if family == QUANTIZED:
        raise LoweringError(f"op {index} ({op.type}, output '{out}') has no lowering rule for quantized tensors "
                            f"({_type_signature(op)}); quantized ops supported: {short}")
    raise LoweringError(f"op {index} ({op.type}, output '{out}') has no lowering rule; supported: {short}")


@dataclass(frozen=True)
class Ctx:
    """What a rule may know about its op besides the input values."""

    op: Op
    index: int  # position of the op in graph.ops

    @property
    def inputs(self) -> list[Tensor | None]:
        return self.op.inputs

    @property
    def outputs(self) -> list[Tensor]:
        return self.op.outputs

    @property
    def where(self) -> str:
        out = self.op.outputs[0].name if self.op.outputs else "?"
        return f"op {self.index} ({self.op.type}, output '{out}')"

    def error(self, message: str) -> LoweringError:
        return LoweringError(f"{self.where}: {message}")

    def opt(self, name: str):
        """Option `name` of the op; absent fields take the schema default of the op's options table."""
        if name in self.op.options:
            return self.op.options[name]
        if self.op.options_type is not None:
            defaults = option_defaults(self.op.options_type)
            if name in defaults:
                return defaults[name]
        raise self.error(f"option '{name}' is missing (options table: {self.op.options_type})")

    def qparams(self, tensor: Tensor | int) -> QuantParams:
        """The checked quantization parameters of `tensor` (or of input number `tensor`)."""
        if isinstance(tensor, int):
            tensor = self.op.inputs[tensor]
        if tensor is None:
            raise self.error("a quantized operand is missing")
        try:
            return quant_params(tensor)
        except ValueError as e:
            raise self.error(str(e)) from None

    def static(self, value, what: str) -> np.ndarray:
        """`value` as a numpy array; a value only known at run time is an error naming `what`."""
        if value is None:
            raise self.error(f"{what} is missing")
        if not isinstance(value, np.ndarray):
            raise self.error(f"{what} must be a constant (or computed from constants only)")
        return value


def tensor_keys(graph: Graph) -> dict[int, str]:
    """id(tensor) -> the key used in `params` and in all_tensors dicts: the tensor's name, or
    f"{name}#{index}" for the second and later tensors of graph.tensors sharing a name."""
    seen: set[str] = set()
    keys: dict[int, str] = {}
    for i, t in enumerate(graph.tensors):
        keys[id(t)] = t.name if t.name not in seen else f"{t.name}#{i}"
        seen.add(t.name)
    return keys


def _is_float(t: Tensor) -> bool:
    return t.dtype is not None and t.dtype.kind == "f"


def _is_parameter(t: Tensor) -> bool:
    """Constants that go to `params` (traced, differentiable for floats); the other
    constants (shapes, axes, paddings) are static numpy values."""
    return _is_float(t) or is_quantized_integer(t)


def _needed_ops(graph: Graph, inputs: Sequence[Tensor], outputs: Sequence[Tensor]) -> list[tuple[int, Op]]:
    """The ops that compute `outputs` from `inputs` and constants, in graph order."""
    producer = graph.producers()
    given = {id(t) for t in inputs}
    needed: set[int] = set()
    stack = list(outputs)
    visited: set[int] = set()
    while stack:
        t = stack.pop()
        if id(t) in visited or id(t) in given or t.is_constant:
            continue
        visited.add(id(t))
        op = producer.get(id(t))
        if op is None:
            raise LoweringError(f"tensor '{t.name}' is needed but is neither an input nor computed by an op")
        needed.add(id(op))
        stack.extend(x for x in op.inputs if x is not None)
    return [(i, op) for i, op in enumerate(graph.ops) if id(op) in needed]


def _check_input(tensor: Tensor, value) -> None:
    """A graph input's value must fit its shape signature (-1: any size); intermediate
    shapes are computed, not checked: the ones a file stores can be one instance of a
    dynamic shape, or wrong (jaxfuse.shapes)."""
    shape = tuple(getattr(value, "shape", ()))
    signature = tuple(tensor.shape_signature or ()) if len(tensor.shape_signature or ()) == len(tensor.shape) \
        else tuple(tensor.shape)
    if not signature and not tensor.has_rank:  # shape () in the file may also mean "unknown"
        return
    if len(shape) != len(signature) or any(s >= 0 and d != s for d, s in zip(shape, signature)):
        raise LoweringError(f"input '{tensor.name}' has shape {list(shape)}, the model's is {list(signature)}")


def _check_result(ctx: Ctx, tensor: Tensor, value) -> None:
    dtype = np.dtype(value.dtype)
    if (_is_float(tensor) or is_quantized_integer(tensor)) and dtype != tensor.dtype:
        raise ctx.error(f"lowered dtype {dtype} of '{tensor.name}' differs from the model's {tensor.dtype}")


def _plan(graph: Graph, inputs: list[Tensor], outputs: list[Tensor]) -> list[tuple[Ctx, Rule]]:
    """(ctx, rule) for each op needed for `outputs`, in graph order, after checking that
    every op has a rule and every op's inputs are available in time."""
    ops = _needed_ops(graph, inputs, outputs)
    plan = [(Ctx(op, index), rule_for(op, index)) for index, op in ops]
    available = {id(t) for t in inputs}
    for ctx, _ in plan:
        for t in ctx.inputs:
            if t is not None and not t.is_constant and id(t) not in available:
                raise ctx.error(f"reads '{t.name}' before the op computing it (ops out of order: toposort the graph)")
        available.update(id(t) for t in ctx.outputs)
    return plan


def apply_rule(ctx: Ctx, rule: Rule, values: list) -> tuple:
    """Run one rule inside the op's named scope; all-static inputs give static (numpy) results."""
    with jax.named_scope(f"{ctx.op.type}_{ctx.index}"):
        try:
            if all(v is None or isinstance(v, np.ndarray) for v in values):
                with jax.ensure_compile_time_eval():
                    result = rule(ctx, *values)
                result = tuple(np.asarray(r) for r in result) if isinstance(result, (tuple, list)) \
                    else np.asarray(result)
            else:
                result = rule(ctx, *values)
        except LoweringError:
            raise
        except Exception as e:
            raise ctx.error(f"{type(e).__name__}: {e}") from e
    results = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    if len(results) != len(ctx.outputs):
        raise ctx.error(f"rule returned {len(results)} values for {len(ctx.outputs)} outputs")
    return results


def lower_graph(graph: Graph, inputs: Sequence[Tensor] | None = None, outputs: Sequence[Tensor] | None = None,
                all_tensors: bool = False, on_device: bool = True):
    """Lower `graph` (or the region between `inputs` and `outputs`) to `(fn, params)`.

    `fn(params, *input_arrays)` is pure and jit-able. It returns a tuple of arrays in
    `outputs` order, or with all_tensors=True a dict {tensor key: array} of every
    evaluated non-constant tensor. `params` holds every floating-point constant the
    lowered ops read, keyed as in `tensor_keys(graph)`: device copies, or with
    on_device=False the tensors' own host arrays (no copy, for a caller that places
    them itself).
    """
    inputs = list(graph.inputs if inputs is None else inputs)
    outputs = list(graph.outputs if outputs is None else outputs)
    keys = tensor_keys(graph)
    for role, lst in (("input", inputs), ("output", outputs)):
        for t in lst:
            if id(t) not in keys:
                raise LoweringError(f"{role} tensor '{t.name}' is not a tensor of this graph")
    plan = _plan(graph, inputs, outputs)
    given = {id(t) for t in inputs}
    graph_inputs = {id(t) for t in graph.inputs}
    params: dict[str, jax.Array] = {}
    static: dict[int, np.ndarray] = {}
    for t in [t for ctx, _ in plan for t in ctx.inputs] + outputs:
        if t is None or not t.is_constant or id(t) in given:
            continue
        if _is_parameter(t):
            if keys[id(t)] not in params:  # device_put: one copy (jnp.asarray makes two of a read-only view)
                params[keys[id(t)]] = jax.device_put(t.data) if on_device else t.data
        else:
            static[id(t)] = t.data

    def fn(params, *args):
        if len(args) != len(inputs):
            raise TypeError(f"expected {len(inputs)} input arrays ({', '.join(t.name for t in inputs)}), "
                            f"got {len(args)}")
        for t, a in zip(inputs, args):
            if id(t) in graph_inputs:
                _check_input(t, a)
        env = {id(t): jax.numpy.asarray(a) for t, a in zip(inputs, args)}

        def read(t: Tensor | None):
            if t is None:
                return None
            key = id(t)
            if key in env:
                return env[key]
            if key in static:
                return static[key]
            return jax.numpy.asarray(params[keys[key]])

        for ctx, rule in plan:
            results = apply_rule(ctx, rule, [read(t) for t in ctx.inputs])
            for t, v in zip(ctx.outputs, results):
                _check_result(ctx, t, v)
                env[id(t)] = v
        if all_tensors:
            return {keys[id(t)]: env[id(t)] for t in inputs + [t for ctx, _ in plan for t in ctx.outputs]}
        return tuple(read(t) for t in outputs)

    return fn, params


def lower(model: Model, graph_index: int = 0):
    """Lower subgraph `graph_index` (the main one by default): `(fn, params)` as in `lower_graph`."""
    return lower_graph(model.graphs[graph_index])
