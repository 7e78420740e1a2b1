"""jaxfuse: exact batch-norm / scale-shift fusion for TFLite and circle models, proven in JAX."""
from .io import ModelError, read as load, write as save
from .ir import Buffer, Graph, GraphError, Model, Op, OpCode, Quantization, Tensor

__version__ = "0.1.0"
__all__ = ["Buffer", "Graph", "GraphError", "Model", "ModelError", "Op", "OpCode", "Quantization", "Tensor",
           "load", "save", "__version__"]
