"""Reading and writing .tflite / .circle files: the only schema-aware code in jaxfuse."""
from .read import ModelError, read, read_bytes
from .write import to_bytes, write

__all__ = ["ModelError", "read", "read_bytes", "to_bytes", "write"]
