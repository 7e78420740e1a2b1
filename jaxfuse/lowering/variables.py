"""Resource variables: VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE.

A whole-model lowering carries the variables' values in its Frame (lowering/core.py):
VAR_HANDLE gives a static handle (the variable's position in resource_variables(model), as
LiteRT's handle is the resource id), READ_VARIABLE returns the current value and
ASSIGN_VARIABLE replaces it, in graph order. The lowered function takes the values before
the step and returns them after it; the variable itself never lives inside JAX.
"""
from __future__ import annotations

import numpy as np

from .core import QUANTIZED, register, variable_key


def _variable(ctx, handle):
    frame = ctx.whole_model()
    index = int(ctx.static(handle, "the variable handle (input 0)").reshape(()))
    if not 0 <= index < len(frame.declared):
        raise ctx.error(f"handle {index} names no variable (the model has {len(frame.declared)})")
    return frame, frame.declared[index]


@register("VAR_HANDLE")
def var_handle(ctx):
    """The handle of the variable (container, shared_name) names: its index among the model's variables."""
    frame = ctx.whole_model()
    key = variable_key(ctx.op)
    keys = [v.key for v in frame.declared]
    if key not in keys:
        raise ctx.error(f"variable '{key}' is never read or assigned, so its type is unknown")
    return np.asarray(keys.index(key), np.int32)


@register("READ_VARIABLE")
@register("READ_VARIABLE", QUANTIZED)
def read_variable(ctx, handle):
    """The variable's current value."""
    frame, variable = _variable(ctx, handle)
    return frame.values[variable.key]


@register("ASSIGN_VARIABLE")
@register("ASSIGN_VARIABLE", QUANTIZED)
def assign_variable(ctx, handle, value):
    """The variable holds `value` from now on (no outputs). Its shape and dtype may not change:
    the state of a step function has one type."""
    frame, variable = _variable(ctx, handle)
    if tuple(value.shape) != variable.shape or np.dtype(value.dtype) != variable.dtype:
        raise ctx.error(f"assigns a {np.dtype(value.dtype)} value of shape {list(value.shape)} to variable "
                        f"'{variable.key}' of {variable.dtype} {list(variable.shape)}")
    frame.values[variable.key] = value
    return ()
