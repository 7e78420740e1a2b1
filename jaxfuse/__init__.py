"""jaxfuse: exact batch-norm / scale-shift fusion for TFLite and circle models, proven in JAX.

    m = jaxfuse.load("model.tflite")
    fn, params = jaxfuse.lower(m)              # pure JAX: fn(params, *inputs)
    m2, report = jaxfuse.optimize(m)           # every rewrite checked, then the whole model
    jaxfuse.verify(m, m2)                      # VerifyReport: errors, first divergent tensor
    jaxfuse.save(m2, "model_fused.circle")     # format by extension

Every command has its function: inspect, run, optimize, verify, quantize, bench (reports
with to_dict(), what --json / --report print, and format_text(), what the terminal shows).
JAX is imported only when a function needs it.
"""
from . import xla as _xla

_xla.apply_to_environment()  # before JAX's backend starts: see jaxfuse.xla

from .io import ModelError, read as load, write as save
from .ir import Buffer, Graph, GraphError, Model, Op, OpCode, Quantization, Tensor

__version__ = "0.1.0"


def lower(model, graph_index: int = 0):
    """(fn, params): the model's subgraph as a pure, jit-able JAX function fn(params, *inputs).

    A model with resource variables gives fn(params, *inputs, *state) -> (*outputs, *new_state),
    state in jaxfuse.lowering.resource_variables(model) order (init_state / run_steps there).

    >>> import numpy as np, jax, jaxfuse
    >>> fn, params = jaxfuse.lower(jaxfuse.load("examples/models/resnet50v2_tiny.tflite"))
    >>> (probs,) = jaxfuse.jit(fn)(params, np.zeros((1, 64, 64, 3), np.float32))
    >>> probs.shape
    (1, 10)
    """
    from .lowering import lower as _lower
    return _lower(model, graph_index)


def jit(fn, **jit_options):
    """jax.jit with the compiler settings under which jaxfuse's programs give LiteRT's answers
    (jaxfuse.xla): use it for programs of lowered models."""
    return _xla.jit(fn, **jit_options)


# The function behind each command, imported on first use (these modules import JAX only
# when called): name -> module.
_API = {"inspect": "summary", "run": "running", "optimize": "optimizing", "verify": "verifying",
        "quantize": "quantizing", "bench": "benchmark"}


def __getattr__(name: str):
    if name in _API:
        from importlib import import_module
        function = getattr(import_module(f".{_API[name]}", __name__), name)
        globals()[name] = function
        return function
    raise AttributeError(f"module 'jaxfuse' has no attribute {name!r}")


__all__ = ["Buffer", "Graph", "GraphError", "Model", "ModelError", "Op", "OpCode", "Quantization", "Tensor",
           "bench", "inspect", "jit", "load", "lower", "optimize", "quantize", "run", "save", "verify",
           "__version__"]
