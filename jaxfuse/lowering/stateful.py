"""Stateful models (resource variables) as pure step functions.

    fn, params = jaxfuse.lower(model)            # fn(params, *inputs, *state) -> (*outputs, *new_state)
    state = init_state(model)                    # what the model's CALL_ONCE init subgraphs assign
    outputs, state = run_steps(model, steps)     # each input with a leading step axis, fed in order

`state` is a tuple in resource_variables(model) order. A model without variables has an empty
state, and run_steps then simply maps the model over the steps.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..ir import Model
from .core import LoweringError, Variable, graph_function, lower, resource_variables


def state_variables(model: Model) -> list[Variable]:
    """The variables a step takes and returns, in order (key, shape, dtype)."""
    return resource_variables(model)


def init_state(model: Model) -> tuple[np.ndarray, ...]:
    """The variables' values before the first step: zeros, then whatever the init subgraphs of the
    main graph's CALL_ONCE ops assign (in op order), as LiteRT's first invoke does."""
    variables = resource_variables(model)
    state = [np.zeros(v.shape, v.dtype) for v in variables]
    for op in model.main.ops:
        if op.type == "CALL_ONCE":
            index = int(op.options.get("initSubgraphIndex", 0))
            if not 0 <= index < len(model.graphs):
                raise LoweringError(f"CALL_ONCE names init subgraph {index}, the model has {len(model.graphs)}")
            init = model.graphs[index]
            if init.inputs:
                raise LoweringError(f"init subgraph {index} takes {len(init.inputs)} inputs; CALL_ONCE gives none")
            _, state = graph_function(model, index)([], state)
    return tuple(np.asarray(v) for v in state)


def run_steps(model: Model, steps: Sequence, state: Sequence | None = None, jit: bool = True,
              every_state: bool = False):
    """Run the main graph once per step, carrying the variables from one step to the next.

    steps: one array per graph input, each with a leading step axis (the same length for all).
    state: the variables before the first step (default: init_state(model)).
    Returns (outputs, final state): per graph output an array with a leading step axis; with
    every_state, the state after each step instead of the final one (per variable, a step axis)."""
    import jax
    from ..programs import RUN_COMPILER_OPTIONS, compile_with_options

    graph = model.main
    steps = [np.asarray(s) for s in steps]
    if len(steps) != len(graph.inputs):
        raise ValueError(f"expected {len(graph.inputs)} input arrays ({', '.join(t.name for t in graph.inputs)}), "
                         f"got {len(steps)}")
    lengths = {s.shape[0] if s.ndim else None for s in steps}
    if len(lengths) > 1 or None in lengths:
        raise ValueError(f"every input needs the same leading step axis; got shapes {[list(s.shape) for s in steps]}")
    fn, params = lower(model)
    count = len(graph.outputs)
    state = tuple(init_state(model) if state is None else (np.asarray(v) for v in state))

    def scan(params, state, steps):
        def step(carry, xs):
            results = fn(params, *xs, *carry)
            new_state = tuple(results[count:])
            return new_state, (tuple(results[:count]), new_state if every_state else ())
        return jax.lax.scan(step, state, steps)

    if jit:
        compiled = compile_with_options(jax.jit(scan).lower(params, state, tuple(steps)), RUN_COMPILER_OPTIONS)
        final, (outputs, states) = compiled(params, state, tuple(steps))
    else:
        final, (outputs, states) = scan(params, state, tuple(steps))
    if every_state:
        final = states
    return [np.asarray(o) for o in outputs], tuple(np.asarray(v) for v in final)
