"""jaxfuse: exact batch-norm / scale-shift fusion for TFLite and circle models, proven in JAX.

    m = jaxfuse.load("model.tflite")
    fn, params = jaxfuse.lower(m)              # pure JAX: fn(params, *inputs)
    m2, report = jaxfuse.optimize(m)           # every rewrite checked, then the whole model
    jaxfuse.verify(m, m2)                      # VerifyReport: errors, first divergent tensor
    jaxfuse.save(m2, "model_fused.circle")     # format by extension
"""
from . import xla as _xla

_xla.apply_to_environment()  # before JAX's backend starts: see jaxfuse.xla

from .io import ModelError, read as load, write as save
from .ir import Buffer, Graph, GraphError, Model, Op, OpCode, Quantization, Tensor

__version__ = "0.1.0"


def lower(model, graph_index: int = 0):
    """(fn, params): the model's subgraph as a pure, jit-able JAX function fn(params, *inputs).

    A model with resource variables gives fn(params, *inputs, *state) -> (*outputs, *new_state),
    state in jaxfuse.lowering.resource_variables(model) order (init_state / run_steps there)."""
    from .lowering import lower as _lower
    return _lower(model, graph_index)


def jit(fn, **jit_options):
    """jax.jit with the compiler settings under which jaxfuse's programs give LiteRT's answers
    (jaxfuse.xla): use it for programs of lowered models."""
    return _xla.jit(fn, **jit_options)


def optimize(model, passes=None, **options):
    """(optimized copy, OptimizationReport); see jaxfuse.passes.manager.optimize."""
    from .passes import optimize as _optimize
    return _optimize(model, passes, **options)


def verify(reference, candidate, inputs=None, **options):
    """Compare two models through JAX (outputs and every shared tensor): a VerifyReport.

    inputs: a list of samples (each a list of arrays in graph-input order); default: seeded
    random samples. See jaxfuse.equivalence.compare for the options."""
    from .equivalence import compare
    return compare(reference, candidate, inputs, **options)


__all__ = ["Buffer", "Graph", "GraphError", "Model", "ModelError", "Op", "OpCode", "Quantization", "Tensor",
           "jit", "load", "lower", "optimize", "save", "verify", "__version__"]
