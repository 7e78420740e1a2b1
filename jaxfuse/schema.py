"""Enumerations of the circle schema (a superset of TFLite's) as plain Python tables.

Everything else that knows the flatbuffer layout lives in jaxfuse.io.
"""
import numpy as np
from circle_schema.v0_10 import circle as _circle

BUILTIN_NAMES: dict[int, str] = {
    value: name for name, value in vars(_circle.BuiltinOperator.BuiltinOperator).items()
    if not name.startswith("_") and isinstance(value, int)
}
BUILTIN_CODES: dict[str, int] = {name: code for code, name in BUILTIN_NAMES.items()}
BUILTIN_CUSTOM = BUILTIN_CODES["CUSTOM"]
# Codes >= this do not fit the int8 deprecated_builtin_code field.
PLACEHOLDER_FOR_GREATER_OP_CODES = 127

TENSOR_TYPE_NAMES: dict[int, str] = {
    value: name for name, value in vars(_circle.TensorType.TensorType).items()
    if not name.startswith("_") and isinstance(value, int)
}
TENSOR_TYPES: dict[str, int] = {name: code for code, name in TENSOR_TYPE_NAMES.items()}

TENSOR_TYPE_TO_DTYPE: dict[int, np.dtype] = {
    TENSOR_TYPES[name]: np.dtype(dt) for name, dt in [
        ("FLOAT32", np.float32), ("FLOAT16", np.float16), ("FLOAT64", np.float64),
        ("INT8", np.int8), ("UINT8", np.uint8), ("INT16", np.int16), ("UINT16", np.uint16),
        ("INT32", np.int32), ("UINT32", np.uint32), ("INT64", np.int64), ("UINT64", np.uint64),
        ("BOOL", np.bool_), ("COMPLEX64", np.complex64), ("COMPLEX128", np.complex128),
    ]
}
DTYPE_TO_TENSOR_TYPE: dict[np.dtype, int] = {dt: code for code, dt in TENSOR_TYPE_TO_DTYPE.items()}

ACTIVATION_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


def option_defaults(options_type: str) -> dict:
    """The fields of a builtin options table (e.g. "Conv2DOptions") with the schema's defaults,
    keyed by the same camelCase names the reader puts in `Op.options`."""
    table = getattr(getattr(_circle, options_type, None), options_type + "T", None)
    if table is None:
        raise KeyError(f"unknown builtin options table {options_type!r}")
    return dict(vars(table()))
