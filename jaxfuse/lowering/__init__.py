"""Lowering of jaxfuse IR graphs to pure, jit-able JAX functions with TFLite semantics.

    fn, params = lower(model)          # main subgraph
    outputs = jax.jit(fn)(params, x)   # tuple in graph-output order

One rule per builtin op, registered with `@register("OP")` in the modules below.
"""
from . import array, elementwise, nn, reduce  # noqa: F401  (the rule modules register themselves)
from .activation import apply_activation
from .core import RULES, Ctx, LoweringError, lower, lower_graph, register, supported_ops, tensor_keys

__all__ = ["RULES", "Ctx", "LoweringError", "apply_activation", "lower", "lower_graph", "register",
           "supported_ops", "tensor_keys"]

