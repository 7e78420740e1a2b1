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

Whole models (`lower(model)`, or `lower_graph(..., model=model)`) may hold several subgraphs
and resource variables. Rules of control-flow ops run other subgraphs through `ctx.frame`
(graph_function), and a model's resource variables are threaded through as explicit state:
the lowered function takes their values after the graph inputs and returns their new values
after the graph outputs (resource_variables(model) gives their order), so a stateful model is
still a pure function, one call per step.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import jax
import numpy as np

from ..ir import Graph, Model, Op, Tensor, has_side_effect
from ..schema import option_defaults
from .quant import QuantParams, is_quantized_integer, quant_params, type_name


class LoweringError(ValueError):
    """The graph (or the requested part of it) cannot be lowered to JAX."""


class WholeModelNeeded(LoweringError):
    """An op runs other subgraphs or resource variables, and only one graph (or a region) was lowered."""


# The ops whose rules run other subgraphs or resource variables (Ctx.whole_model)
WHOLE_MODEL_OPS = frozenset({"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE", "CALL", "IF", "WHILE"})


Rule = Callable[..., object]
FLOAT, QUANTIZED = "float", "quantized"
FAMILIES = (FLOAT, QUANTIZED)
# (op type, type family) -> rule. The family of an op is QUANTIZED when one of its
# tensors is a quantized integer (int8/uint8/int16 with a scale), else FLOAT (which also
# covers plain integer and bool arithmetic on shapes, indices and masks).
RULES: dict[tuple[str, str], Rule] = {}
# Float rules that read their constant inputs' values while tracing (RANGE: they fix the output's
# length). Elsewhere float constants are traced parameters, left out of segmented.structure_key.
READS_CONSTANT_VALUES: set[Rule] = set()


def register(op_type: str, family: str = FLOAT, reads_constant_values: bool = False) -> Callable[[Rule], Rule]:
    """Decorator: make `fn` the lowering rule of builtin `op_type` for one type family; a
    second rule for the same op and family is an error. A float rule that reads a float
    constant's value while tracing must say so (`reads_constant_values`), so that programs
    are told apart by those values."""
    if family not in FAMILIES:
        raise ValueError(f"unknown type family {family!r} (known: {', '.join(FAMILIES)})")

    def decorate(fn: Rule) -> Rule:
        key = (op_type, family)
        if key in RULES:
            raise ValueError(f"a {family} lowering rule for {op_type} is already registered "
                             f"({RULES[key].__qualname__})")
        RULES[key] = fn
        if reads_constant_values:
            READS_CONSTANT_VALUES.add(fn)
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
class Variable:
    """A resource variable: VAR_HANDLE's (container, shared_name), and the shape and dtype the
    values read from it or assigned to it have."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype


def variable_key(op: Op) -> str:
    """The variable a VAR_HANDLE op names: its shared_name, after its container when it has one."""
    def text(v):
        return v.decode(errors="replace") if isinstance(v, bytes) else (v or "")
    container, name = text(op.options.get("container")), text(op.options.get("sharedName"))
    return f"{container}/{name}" if container else name


def resource_variables(model: Model) -> list[Variable]:
    """The model's resource variables (in order of their first VAR_HANDLE, subgraph by
    subgraph), each typed by the first READ_VARIABLE or ASSIGN_VARIABLE of it."""
    typed: dict[str, Variable | None] = {}
    for graph in model.graphs:
        handles = {}
        for op in graph.ops:
            if op.type == "VAR_HANDLE" and op.outputs:
                key = variable_key(op)
                handles[id(op.outputs[0])] = key
                typed.setdefault(key, None)
            elif op.type in ("READ_VARIABLE", "ASSIGN_VARIABLE") and op.inputs and op.inputs[0] is not None:
                key = handles.get(id(op.inputs[0]))
                value = op.outputs[0] if op.type == "READ_VARIABLE" else op.inputs[1]
                if key is not None and typed.get(key) is None and value is not None and value.dtype is not None:
                    typed[key] = Variable(key, tuple(value.shape), value.dtype)
    return [v for v in typed.values() if v is not None]


class Frame:
    """One run of a whole-model lowering: the model (for the subgraphs control flow runs)
    and the current values of its resource variables, which VAR_HANDLE / READ_VARIABLE /
    ASSIGN_VARIABLE use and change in graph order."""

    def __init__(self, model: Model, variables: list[Variable], values: Sequence):
        self.model = model
        self.declared = variables
        self.values = {v.key: value for v, value in zip(variables, values)}

    def state(self) -> list:
        return [self.values[v.key] for v in self.declared]

    def set_state(self, state: Sequence) -> None:
        self.values = {v.key: value for v, value in zip(self.declared, state)}

    def run_graph(self, index: int, args: Sequence) -> list:
        """Run subgraph `index` on `args` with the current variables (which it may change)."""
        outputs, state = graph_function(self.model, index)(list(args), self.state())
        self.set_state(state)
        return outputs


def graph_function(model: Model, index: int) -> Callable[[list, list], tuple[list, list]]:
    """Subgraph `index` as a pure function (args, variable values) -> (outputs, new variable
    values), its constants closed over: what lax.cond / lax.while_loop take."""
    if not 0 <= index < len(model.graphs):
        raise LoweringError(f"subgraph {index} is named by an op, the model has {len(model.graphs)}")
    graph = model.graphs[index]
    fn, params = lower_graph(graph, model=model, on_device=False, static_inputs=True)
    count = len(graph.outputs)

    def run(args: list, state: list) -> tuple[list, list]:
        results = fn(params, *args, *state)
        return list(results[:count]), list(results[count:])
    return run


@dataclass(frozen=True)
class Ctx:
    """What a rule may know about its op besides the input values."""

    op: Op
    index: int  # position of the op in graph.ops
    frame: Frame | None = None  # while a whole model runs: its subgraphs and variables

    def whole_model(self) -> Frame:
        """The run of the whole model this op is part of; an error when only a graph was lowered."""
        if self.frame is None:
            raise WholeModelNeeded(f"{self.where}: needs the whole model (its other subgraphs or resource "
                                   "variables), which a lowering of one graph or region does not run "
                                   "(jaxfuse.lower(model) does)")
        return self.frame

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


def _needed_ops(graph: Graph, inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                 side_effects: bool = False) -> list[tuple[int, Op]]:
    """The ops that compute `outputs` from `inputs` and constants (and with side_effects,
    every op with side effects and what it reads), in graph order."""
    producer = graph.producers()
    given = {id(t) for t in inputs}
    needed: set[int] = set()
    stack = list(outputs)
    if side_effects:
        for op in graph.ops:
            if has_side_effect(op):
                needed.add(id(op))
                stack.extend(x for x in op.inputs if x is not None)
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


def _plan(graph: Graph, inputs: list[Tensor], outputs: list[Tensor],
          side_effects: bool = False) -> list[tuple[Ctx, Rule]]:
    """(ctx, rule) for each op needed for `outputs`, in graph order, after checking that
    every op has a rule and every op's inputs are available in time."""
    ops = _needed_ops(graph, inputs, outputs, side_effects)
    plan = [(Ctx(op, index), rule_for(op, index)) for index, op in ops]
    available = {id(t) for t in inputs}
    for ctx, _ in plan:
        for t in ctx.inputs:
            if t is not None and not t.is_constant and id(t) not in available:
                raise ctx.error(f"reads '{t.name}' before the op computing it (ops out of order: toposort the graph)")
        available.update(id(t) for t in ctx.outputs)
    return plan


def _static(value):
    """A result of static inputs as numpy, unless it came from elsewhere (a variable's value,
    a subgraph's traced output)."""
    return value if isinstance(value, jax.core.Tracer) else np.asarray(value)


def apply_rule(ctx: Ctx, rule: Rule, values: list) -> tuple:
    """Run one rule inside the op's named scope; all-static inputs give static (numpy) results."""
    with jax.named_scope(f"{ctx.op.type}_{ctx.index}"):
        try:
            if all(v is None or isinstance(v, np.ndarray) for v in values):
                with jax.ensure_compile_time_eval():
                    result = rule(ctx, *values)
                result = tuple(_static(r) for r in result) if isinstance(result, (tuple, list)) \
                    else _static(result)
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
                all_tensors: bool = False, on_device: bool = True, model: Model | None = None,
                static_inputs: bool = False):
    """Lower `graph` (or the region between `inputs` and `outputs`) to `(fn, params)`.

    `fn(params, *input_arrays)` is pure and jit-able. It returns a tuple of arrays in
    `outputs` order, or with all_tensors=True a dict {tensor key: array} of every
    evaluated non-constant tensor. `params` holds every floating-point constant the
    lowered ops read, keyed as in `tensor_keys(graph)`: device copies, or with
    on_device=False the tensors' own host arrays (no copy, for a caller that places
    them itself).

    With `model` (the model `graph` belongs to), the graph runs as part of the whole model:
    control flow runs the model's other subgraphs, ops with side effects run although
    nothing reads them, and when the model has resource variables, `fn(params, *inputs,
    *variables)` also takes their values (in resource_variables(model) order) and returns
    their new values after the outputs (all_tensors: after the dict). With static_inputs, numpy
    input arrays stay static (what a subgraph is called with: shapes stay known inside it).
    """
    inputs = list(graph.inputs if inputs is None else inputs)
    outputs = list(graph.outputs if outputs is None else outputs)
    keys = tensor_keys(graph)
    for role, lst in (("input", inputs), ("output", outputs)):
        for t in lst:
            if id(t) not in keys:
                raise LoweringError(f"{role} tensor '{t.name}' is not a tensor of this graph")
    variables = resource_variables(model) if model is not None else []
    plan = _plan(graph, inputs, outputs, side_effects=model is not None)
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
        if len(args) != len(inputs) + len(variables):
            state = f" and {len(variables)} variable values ({', '.join(v.key for v in variables)})" \
                if variables else ""
            raise TypeError(f"expected {len(inputs)} input arrays ({', '.join(t.name for t in inputs)}){state}, "
                            f"got {len(args)}")
        for t, a in zip(inputs, args):
            if id(t) in graph_inputs:
                _check_input(t, a)
        env = {id(t): a if static_inputs and isinstance(a, np.ndarray) else jax.numpy.asarray(a)
               for t, a in zip(inputs, args)}
        frame = None if model is None else \
            Frame(model, variables, [jax.numpy.asarray(a) for a in args[len(inputs):]])

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
            if frame is not None:
                ctx = dataclasses.replace(ctx, frame=frame)
            results = apply_rule(ctx, rule, [read(t) for t in ctx.inputs])
            for t, v in zip(ctx.outputs, results):
                _check_result(ctx, t, v)
                env[id(t)] = v
        state = tuple(frame.state()) if variables else ()
        if all_tensors:
            tensors = {keys[id(t)]: env[id(t)] for t in inputs + [t for ctx, _ in plan for t in ctx.outputs]}
            return (tensors, *state) if variables else tensors
        return tuple(read(t) for t in outputs) + state

    return fn, params


def lower(model: Model, graph_index: int = 0):
    """Lower subgraph `graph_index` (the main one by default) as part of the whole model:
    `(fn, params)` as in `lower_graph(..., model=model)`. A model without resource variables
    gives fn(params, *inputs) -> outputs; one with them fn(params, *inputs, *variables) ->
    (*outputs, *new variables), in resource_variables(model) order (jaxfuse.lowering.stateful
    has init_state and run_steps)."""
    if not 0 <= graph_index < len(model.graphs):
        raise LoweringError(f"subgraph {graph_index} does not exist, the model has {len(model.graphs)}")
    return lower_graph(model.graphs[graph_index], model=model)
