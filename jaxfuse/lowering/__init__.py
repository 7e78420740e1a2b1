"""Lowering of jaxfuse IR graphs to pure, jit-able JAX functions with TFLite semantics.

    fn, params = lower(model)          # main subgraph
    outputs = jaxfuse.jit(fn)(params, x)   # tuple in graph-output order (jaxfuse.xla's settings)

One rule per builtin op and type family, registered with `@register("OP")` (float) or
`@register("OP", QUANTIZED)` (int8 / uint8 / int16 tensors with scales) in the modules below.
"""
from . import (arithmetic, array, comparison, control_flow, elementwise, layout, nn,  # noqa: F401 (they register)
               quantized_array, quantized_comparison, quantized_elementwise, quantized_nn, quantized_reduce,
               quantized_shape, quantized_transformer, reduce, signal, sparse, variables)
from .activation import apply_activation
from .core import (FLOAT, QUANTIZED, RULES, Ctx, LoweringError, Variable, WholeModelNeeded, lower, lower_graph,
                   op_family, register, resource_variables, rule_for, supported_ops, tensor_keys)
from .stateful import init_state, run_steps, state_variables

__all__ = ["FLOAT", "QUANTIZED", "RULES", "Ctx", "LoweringError", "Variable", "apply_activation", "init_state",
           "lower", "lower_graph", "op_family", "register", "resource_variables", "rule_for", "run_steps",
           "state_variables", "supported_ops", "tensor_keys", "WholeModelNeeded"]

