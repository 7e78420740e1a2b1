"""Small matching and surgery helpers shared by the passes (no schema knowledge)."""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Op, OpCode, Tensor
from ..schema import BUILTIN_CODES, DTYPE_TO_TENSOR_TYPE

ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6, ACT_TANH, ACT_SIGN_BIT = range(6)
WEIGHTED_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "TRANSPOSE_CONV": 1, "FULLY_CONNECTED": 1}
BIAS_INDEX = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "TRANSPOSE_CONV": 3, "FULLY_CONNECTED": 2}
DATA_INDEX = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 0, "TRANSPOSE_CONV": 2, "FULLY_CONNECTED": 0}


def activation(op: Op) -> int:
    return int(op.options.get("fusedActivationFunction", ACT_NONE))


def is_float(t: Tensor | None) -> bool:
    return t is not None and t.dtype is not None and t.dtype.kind == "f" and not t.is_quantized


def parameters_problem(op: Op) -> str:
    """'' if a weighted op's weights (and its bias, when present) are float constants, else why not."""
    weights = op.inputs[1]
    if weights is None or not weights.is_constant or not is_float(weights):
        return f"the {op.type} weights are not a float constant"
    index = BIAS_INDEX[op.type]
    bias = op.inputs[index] if len(op.inputs) > index else None
    if bias is not None and (not bias.is_constant or not is_float(bias)):
        return f"the {op.type} bias is not a float constant"
    return ""


def per_channel_constant(const: Tensor | None, activation_tensor: Tensor) -> tuple[np.ndarray | None, str]:
    """The constant as a float64 vector over the last axis of `activation_tensor`, or
    (None, reason). Accepts [C], [1,C], [1,1,1,C] (and size-1 scalars, which are uniform)."""
    if const is None or not const.is_constant:
        return None, "the other operand is not a constant"
    if not is_float(const):
        return None, f"the constant '{const.name}' is not a float tensor"
    channels = int(activation_tensor.shape[-1]) if activation_tensor.shape else 1
    shape = tuple(const.shape)
    if len(shape) > len(activation_tensor.shape) or any(d != 1 for d in shape[:-1]):
        return None, f"the constant '{const.name}' of shape {list(shape)} is not per-channel"
    size = shape[-1] if shape else 1
    if size not in (1, channels):
        return None, f"the constant '{const.name}' of shape {list(shape)} is not per-channel"
    return np.broadcast_to(const.data.astype(np.float64).reshape(-1), (channels,)).copy(), ""


def constant_operand(op: Op) -> tuple[int, int] | None:
    """(index of the activation input, index of the constant input) of a binary op."""
    if len(op.inputs) != 2 or any(t is None for t in op.inputs):
        return None
    a, b = op.inputs
    if b.is_constant and not a.is_constant:
        return 0, 1
    if a.is_constant and not b.is_constant:
        return 1, 0
    return None


def sole_reader(graph: Graph, tensor: Tensor, uses: dict) -> Op | None:
    """The only op reading `tensor` (and not a graph output), else None."""
    readers = uses.get(id(tensor), [])
    if len(readers) != 1 or graph.is_graph_output(tensor):
        return None
    if sum(t is tensor for t in readers[0].inputs) != 1:
        return None
    return readers[0]


def mul_add_pair(graph: Graph, mul: Op, uses: dict) -> Op | None:
    """The ADD that alone reads `mul`'s output: a batch norm the converter left as MUL -> ADD."""
    if mul.type != "MUL":
        return None
    add = sole_reader(graph, mul.outputs[0], uses)
    return add if add is not None and add.type == "ADD" else None


def new_constant(graph: Graph, name: str, value: np.ndarray, like: Tensor | None = None) -> Tensor:
    value = np.ascontiguousarray(value)
    tensor = Tensor(graph.unique_name(name), tuple(value.shape), DTYPE_TO_TENSOR_TYPE[value.dtype])
    tensor.set_data(value)
    if like is not None and like.shape_signature is not None:
        tensor.shape_signature = tuple(value.shape)
    return graph.add_tensor(tensor)


def set_constant(graph: Graph, op: Op, index: int, value64: np.ndarray, name: str) -> Tensor:
    """Give op.inputs[index] the value `value64` rounded once to float32; clones a shared
    tensor first and creates the tensor when the optional input is absent."""
    value = np.asarray(value64).astype(np.float32)
    while len(op.inputs) <= index:
        op.inputs.append(None)
    if op.inputs[index] is None:
        op.inputs[index] = new_constant(graph, name, value)
        return op.inputs[index]
    tensor = graph.private_input(op, index)
    tensor.set_data(value.reshape(tensor.shape) if value.size == int(np.prod(tensor.shape)) else value)
    return tensor


def bias64(op: Op) -> np.ndarray | None:
    index = BIAS_INDEX[op.type]
    bias = op.inputs[index] if len(op.inputs) > index else None
    return None if bias is None else bias.data.astype(np.float64).reshape(-1)


def replace_value(graph: Graph, old: Tensor, suffix: str) -> Tensor:
    """A fresh tensor for a value that a rewrite changes: same shape and type, a new name
    (so whole-model comparison by name never pairs it with the old value); every reader
    and the producer are switched over."""
    new = Tensor(graph.unique_name(old.name + suffix), old.shape, old.type, shape_signature=old.shape_signature)
    graph.add_tensor(new)
    for op in graph.ops:
        op.outputs = [new if t is old else t for t in op.outputs]
    graph.replace_all_uses(old, new)
    return new


def make_op(graph: Graph, type_name: str, inputs, outputs, options_type=None, options=None, *, before: Op) -> Op:
    """Insert a new op just before `before` in execution order."""
    op = Op(OpCode(BUILTIN_CODES[type_name], 1), list(inputs), list(outputs), options_type, dict(options or {}))
    position = next(i for i, o in enumerate(graph.ops) if o is before)
    graph.ops.insert(position, op)
    return op


def sees_no_padding(op: Op) -> bool:
    """True when every output of a conv-like op reads only real input cells."""
    if op.type == "FULLY_CONNECTED":
        return True
    if op.type not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return False
    weights = op.inputs[1]
    kh, kw = int(weights.shape[1]), int(weights.shape[2])
    return op.options.get("padding", 0) == 1 or (kh == 1 and kw == 1)
