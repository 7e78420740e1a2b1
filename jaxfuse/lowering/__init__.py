"""Lowering of jaxfuse IR graphs to pure, jit-able JAX functions with TFLite semantics.

    fn, params = lower(model)          # main subgraph
    outputs = jax.jit(fn)(params, x)   # tuple in graph-output order

One rule per builtin op and type family, registered with `@register("OP")` (float) or
`@register("OP", QUANTIZED)` (int8 / uint8 / int16 tensors with scales) in the modules below.
"""
from . import (array, elementwise, nn, quantized_array, quantized_elementwise, quantized_nn,  # noqa: F401 (they register)
               quantized_reduce, quantized_transformer, reduce)
from .activation import apply_activation
from .core import (FLOAT, QUANTIZED, RULES, Ctx, LoweringError, lower, lower_graph, op_family, register, rule_for,
                   supported_ops, tensor_keys)

__all__ = ["FLOAT", "QUANTIZED", "RULES", "Ctx", "LoweringError", "apply_activation", "lower", "lower_graph",
           "op_family", "register", "rule_for", "supported_ops", "tensor_keys"]

