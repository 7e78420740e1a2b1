"""Control flow between subgraphs: IF as lax.cond, WHILE as lax.while_loop, CALL_ONCE.

A subgraph runs as the pure function core.graph_function gives: (args, variable values) ->
(outputs, new variable values), so variables assigned inside a branch or a loop body come
out of it like any other result. Static inputs (known while tracing) stay static inside a
branch (only the traced ones become operands), and so do static loop values the body passes
through unchanged (shapes and axes a loop carries).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .core import QUANTIZED, graph_function, register


def _as_arrays(values) -> list:
    return [jnp.asarray(v) for v in values]


@register("IF")
@register("IF", QUANTIZED)
def if_(ctx, cond, *args):
    """The then subgraph's outputs when `cond` (a bool scalar) holds, else the else subgraph's."""
    frame = ctx.whole_model()
    then_index, else_index = int(ctx.opt("thenSubgraphIndex")), int(ctx.opt("elseSubgraphIndex"))
    if isinstance(cond, np.ndarray):  # known while tracing: only that branch is lowered
        return tuple(frame.run_graph(then_index if bool(cond.reshape(())) else else_index, args))
    traced = [i for i, a in enumerate(args) if not isinstance(a, np.ndarray)]

    def branch(index):
        run = graph_function(frame.model, index)

        def taken(operands):
            values, state = operands
            merged = list(args)
            for i, v in zip(traced, values):
                merged[i] = v
            outputs, state = run(merged, state)
            return _as_arrays(outputs), _as_arrays(state)
        return taken

    outputs, state = jax.lax.cond(jnp.reshape(cond, ()).astype(bool), branch(then_index), branch(else_index),
                                  ([args[i] for i in traced], _as_arrays(frame.state())))
    frame.set_state(state)
    return tuple(outputs)


@register("WHILE")
@register("WHILE", QUANTIZED)
def while_(ctx, *args):
    """Run the body subgraph on the loop values while the cond subgraph says so; the final values."""
    frame = ctx.whole_model()
    cond_index, body_index = int(ctx.opt("condSubgraphIndex")), int(ctx.opt("bodySubgraphIndex"))
    if any(op.type == "ASSIGN_VARIABLE" for op in frame.model.graphs[cond_index].ops):
        raise ctx.error(f"the loop condition (subgraph {cond_index}) assigns a variable, which is not supported")
    cond_run, body_run = graph_function(frame.model, cond_index), graph_function(frame.model, body_index)
    body = frame.model.graphs[body_index]
    # a static value the body passes through unchanged (a shape, an axis) stays static in every round
    carried = [k for k, a in enumerate(args) if not (isinstance(a, np.ndarray) and k < len(body.outputs)
                                                     and k < len(body.inputs) and body.outputs[k] is body.inputs[k])]
    types = {k: (jnp.shape(args[k]), jnp.result_type(args[k])) for k in carried}

    def merged(values) -> list:
        full = list(args)
        for k, v in zip(carried, values):
            full[k] = v
        return full

    def keep_going(carry):
        values, state = carry
        (flag,), _ = cond_run(merged(values), state)
        return jnp.reshape(flag, ()).astype(bool)

    def step(carry):
        values, state = carry
        outputs, state = body_run(merged(values), state)
        for k in carried:
            (shape, dtype), out = types[k], outputs[k]
            if jnp.shape(out) != shape or jnp.result_type(out) != dtype:
                raise ctx.error(f"loop value {k} changes from {dtype} {list(shape)} to {jnp.result_type(out)} "
                                f"{list(jnp.shape(out))} in the body (dynamic shapes are not supported in loops)")
        return _as_arrays(outputs[k] for k in carried), _as_arrays(state)

    values, state = jax.lax.while_loop(keep_going, step,
                                       (_as_arrays(args[k] for k in carried), _as_arrays(frame.state())))
    frame.set_state(state)
    return tuple(merged(values))


@register("CALL_ONCE")
def call_once(ctx):
    """Nothing in a step: LiteRT runs the init subgraph on the first invoke only, and the state a
    step takes already holds what it assigned (jaxfuse.lowering.stateful.init_state runs it)."""
    frame = ctx.whole_model()
    index = int(ctx.opt("initSubgraphIndex"))
    if not 0 <= index < len(frame.model.graphs):
        raise ctx.error(f"init subgraph {index} does not exist, the model has {len(frame.model.graphs)}")
    return ()
