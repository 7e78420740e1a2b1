"""Build small models programmatically (tests, examples, experiments).

    b = ModelBuilder()
    x = b.input("x", [1, 8, 8, 3])
    w = b.const("w", np.ones([4, 3, 3, 3], np.float32))
    bias = b.const("bias", np.zeros([4], np.float32))
    y = b.op("CONV_2D", [x, w, bias], {"padding": 1, "fusedActivationFunction": 1})
    b.output(y)
    jaxfuse.save(b.build(), "conv.tflite")

Options start from the schema defaults of the op's options table, then the sensible
defaults below (stride 1, softmax beta 1, ...), then what the caller gives. Output shapes
and dtypes are inferred with the op's JAX lowering rule unless `output_shape` is given
(which also allows ops that have no rule).

Quantized tensors: pass `quant=quantization(scale, zero_point, axis)` to input(), const()
and op() (for op() it is the output's, and `dtype` its storage type):

    x = b.input("x", [1, 8, 8, 3], np.int8, quant=quantization(0.05, -3))
    w = b.const("w", w_int8, quant=quantization(w_scales, 0, axis=0))
    y = b.op("CONV_2D", [x, w, bias_int32], dtype=np.int8, quant=quantization(0.1, 5))
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from .ir import Graph, Model, Op, OpCode, Quantization, Tensor
from .lowering.core import QUANTIZED, Ctx, LoweringError, apply_rule, op_family, rule_for
from .schema import BUILTIN_CODES, DTYPE_TO_TENSOR_TYPE, TENSOR_TYPES, option_defaults

_STRIDE_1 = {"strideW": 1, "strideH": 1}
# op type -> (options table, defaults that differ from the schema's)
DEFAULT_OPTIONS: dict[str, tuple[str, dict]] = {
    "CONV_2D": ("Conv2DOptions", _STRIDE_1),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", {**_STRIDE_1, "depthMultiplier": 1}),
    "TRANSPOSE_CONV": ("TransposeConvOptions", _STRIDE_1),
    "FULLY_CONNECTED": ("FullyConnectedOptions", {}),
    "MAX_POOL_2D": ("Pool2DOptions", {**_STRIDE_1, "filterWidth": 1, "filterHeight": 1}),
    "AVERAGE_POOL_2D": ("Pool2DOptions", {**_STRIDE_1, "filterWidth": 1, "filterHeight": 1}),
    "L2_NORMALIZATION": ("L2NormOptions", {}),
    "SOFTMAX": ("SoftmaxOptions", {"beta": 1.0}),
    "CONCATENATION": ("ConcatenationOptions", {}),
    "ADD": ("AddOptions", {}),
    "SUB": ("SubOptions", {}),
    "MUL": ("MulOptions", {}),
    "DIV": ("DivOptions", {}),
    "MAXIMUM": ("MaximumMinimumOptions", {}),
    "MINIMUM": ("MaximumMinimumOptions", {}),
    "SQUARED_DIFFERENCE": ("SquaredDifferenceOptions", {}),
    "POW": ("PowOptions", {}),
    "LEAKY_RELU": ("LeakyReluOptions", {"alpha": 0.2}),
    "HARD_SWISH": ("HardSwishOptions", {}),
    "GELU": ("GeluOptions", {}),
    "ABS": ("AbsOptions", {}),
    "NEG": ("NegOptions", {}),
    "EXP": ("ExpOptions", {}),
    "SQUARE": ("SquareOptions", {}),
    "DEQUANTIZE": ("DequantizeOptions", {}),
    "CAST": ("CastOptions", {}),
    "MEAN": ("ReducerOptions", {}),
    "SUM": ("ReducerOptions", {}),
    "REDUCE_MAX": ("ReducerOptions", {}),
    "REDUCE_MIN": ("ReducerOptions", {}),
    "REDUCE_PROD": ("ReducerOptions", {}),
    "ARG_MAX": ("ArgMaxOptions", {"outputType": TENSOR_TYPES["INT32"]}),
    "ARG_MIN": ("ArgMinOptions", {"outputType": TENSOR_TYPES["INT32"]}),
    "PAD": ("PadOptions", {}),
    "PADV2": ("PadV2Options", {}),
    "MIRROR_PAD": ("MirrorPadOptions", {}),
    "SQUEEZE": ("SqueezeOptions", {}),
    "EXPAND_DIMS": ("ExpandDimsOptions", {}),
    "TRANSPOSE": ("TransposeOptions", {}),
    "STRIDED_SLICE": ("StridedSliceOptions", {}),
    "SLICE": ("SliceOptions", {}),
    "SHAPE": ("ShapeOptions", {"outType": TENSOR_TYPES["INT32"]}),
    "PACK": ("PackOptions", {}),
    "UNPACK": ("UnpackOptions", {}),
    "SPLIT": ("SplitOptions", {}),
    "SPLIT_V": ("SplitVOptions", {}),
    "GATHER": ("GatherOptions", {}),
    "BATCH_MATMUL": ("BatchMatMulOptions", {}),
    "RESIZE_BILINEAR": ("ResizeBilinearOptions", {}),
    "RESIZE_NEAREST_NEIGHBOR": ("ResizeNearestNeighborOptions", {}),
    "DEPTH_TO_SPACE": ("DepthToSpaceOptions", {"blockSize": 2}),
    "SPACE_TO_DEPTH": ("SpaceToDepthOptions", {"blockSize": 2}),
    "CUMSUM": ("CumsumOptions", {}),
    "REVERSE_V2": ("ReverseV2Options", {}),
    "RANGE": ("RangeOptions", {}),
    "FLOOR_DIV": ("FloorDivOptions", {}),
    "FLOOR_MOD": ("FloorModOptions", {}),
    "GATHER_ND": ("GatherNdOptions", {}),
    "SELECT": ("SelectOptions", {}),
    "SELECT_V2": ("SelectV2Options", {}),
    "GREATER": ("GreaterOptions", {}),
    "GREATER_EQUAL": ("GreaterEqualOptions", {}),
    "LESS": ("LessOptions", {}),
    "LESS_EQUAL": ("LessEqualOptions", {}),
    "EQUAL": ("EqualOptions", {}),
    "NOT_EQUAL": ("NotEqualOptions", {}),
    "LOGICAL_AND": ("LogicalAndOptions", {}),
    "LOGICAL_OR": ("LogicalOrOptions", {}),
    "LOGICAL_NOT": ("LogicalNotOptions", {}),
    "TILE": ("TileOptions", {}),
    "FILL": ("FillOptions", {}),
    "BROADCAST_TO": ("BroadcastToOptions", {}),
    "ZEROS_LIKE": ("ZerosLikeOptions", {}),
    "COS": ("CosOptions", {}),
    "RFFT2D": ("Rfft2dOptions", {}),
    "SIGN": ("SignOptions", {}),
    "ADD_N": ("AddNOptions", {}),
    "WHERE": ("WhereOptions", {}),
    "SPACE_TO_BATCH_ND": ("SpaceToBatchNDOptions", {}),
    "BATCH_TO_SPACE_ND": ("BatchToSpaceNDOptions", {}),
}
# ops whose output dtype is not their first input's
_OUTPUT_DTYPES = {"SHAPE": np.int32, "ARG_MAX": np.int32, "ARG_MIN": np.int32, "DEQUANTIZE": np.float32,
                  **{op: np.bool_ for op in ("GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "EQUAL", "NOT_EQUAL")},
                  "RFFT2D": np.complex64, "WHERE": np.int64,
                  **{op: np.float32 for op in ("COMPLEX_ABS", "REAL", "IMAG")}}


def quantization(scale, zero_point=0, axis: int = 0) -> Quantization:
    """Quantization parameters: scale and zero point, scalars (per tensor) or vectors (per
    channel along `axis`); a scalar zero point is repeated for every scale."""
    scale = np.atleast_1d(np.asarray(scale, np.float32)).reshape(-1)
    zero_point = np.atleast_1d(np.asarray(zero_point, np.int64)).reshape(-1)
    if zero_point.size == 1 and scale.size > 1:
        zero_point = np.repeat(zero_point, scale.size)
    return Quantization(scale=scale, zero_point=zero_point, quantized_dimension=int(axis))


class ModelBuilder:
    """Append tensors and ops to one subgraph; `build()` returns a validated Model."""

    def __init__(self, name: str | None = None):
        self.graph = Graph(name=name)
        self._static: dict[int, np.ndarray] = {}  # values known without running the model

    def _tensor(self, name: str, shape, dtype, buffer_value=None) -> Tensor:
        """A new tensor with a name unique in the graph (not yet added to it)."""
        dtype = np.dtype(dtype)
        if dtype not in DTYPE_TO_TENSOR_TYPE:
            raise ValueError(f"tensor '{name}': dtype {dtype} has no TFLite tensor type")
        t = Tensor(self.graph.unique_name(name), tuple(int(d) for d in shape), DTYPE_TO_TENSOR_TYPE[dtype])
        return t if buffer_value is None else t.set_data(buffer_value)

    def input(self, name: str, shape: Sequence[int], dtype=np.float32, quant: Quantization | None = None) -> Tensor:
        """A graph input of a static shape."""
        t = self.graph.add_tensor(self._tensor(name, shape, dtype))
        t.quantization = quant
        self.graph.inputs.append(t)
        return t

    def const(self, name: str, value, dtype=None, quant: Quantization | None = None) -> Tensor:
        """A constant tensor holding `value` (numpy dtype kept unless `dtype` is given)."""
        value = np.asarray(value, dtype=dtype)
        t = self.graph.add_tensor(self._tensor(name, value.shape, value.dtype, value))
        t.quantization = quant
        if value.dtype.kind not in "fc" and quant is None:
            self._static[id(t)] = t.data
        return t

    def op(self, op_type: str, inputs: Sequence[Tensor | None], options: dict | None = None, *,
           options_type: str | None = None, output_shape: Sequence[int] | None = None, dtype=None,
           name: str | None = None, num_outputs: int = 1, version: int = 1,
           quant: Quantization | None = None) -> Tensor | list[Tensor]:
        """Append a builtin op; returns its output tensor (a list when num_outputs > 1).

        None in `inputs` marks an omitted optional input. Without `output_shape` the
        output shapes (and, without `dtype`, dtypes) come from the op's lowering rule.
        LiteRT accepts operator version 1 for every float feature the lowering rules cover;
        quantized kernels check the version (int8 ops need 2 or more, int16 ones more still):
        pass `version`. `quant` becomes every output's quantization.
        """
        if op_type not in BUILTIN_CODES:
            raise ValueError(f"unknown builtin op {op_type!r}")
        table, defaults = DEFAULT_OPTIONS.get(op_type, (None, {}))
        options_type = options_type or table
        fields = {}
        if options_type is not None:
            fields = {**option_defaults(options_type), **defaults, **(options or {})}
            unknown = set(fields) - set(option_defaults(options_type))
            if unknown:
                raise ValueError(f"{op_type}: {options_type} has no field(s) {sorted(unknown)}")
        elif options:
            raise ValueError(f"{op_type}: options given but no options_type is known for it")
        first = next((t for t in inputs if t is not None), None)
        out_dtype = dtype or _OUTPUT_DTYPES.get(op_type) or (first.dtype if first is not None else np.float32)
        base = name or f"{op_type.lower()}_{len(self.graph.ops)}"
        outs = [self._tensor(base if num_outputs == 1 else f"{base}_{k}", output_shape or (), out_dtype)
                for k in range(num_outputs)]
        for t in outs:
            t.quantization = quant
        op = Op(OpCode(BUILTIN_CODES[op_type], version), list(inputs), outs, options_type, fields)
        if output_shape is None:
            self._infer(op, explicit_dtype=dtype is not None)
        self.graph.tensors.extend(outs)
        self.graph.ops.append(op)
        return outs[0] if num_outputs == 1 else outs

    def _infer(self, op: Op, explicit_dtype: bool) -> None:
        try:
            rule = rule_for(op, len(self.graph.ops))
        except LoweringError:
            which = " for quantized tensors" if op_family(op) == QUANTIZED else ""
            raise ValueError(f"{op.type} has no lowering rule{which} to infer its output shape: give output_shape") \
                from None
        ctx = Ctx(op, len(self.graph.ops))
        values = [None if t is None else self._static.get(id(t), jax.ShapeDtypeStruct(t.shape, t.dtype))
                  for t in op.inputs]
        dynamic = [i for i, v in enumerate(values) if isinstance(v, jax.ShapeDtypeStruct)]
        captured = []

        def run(*args):
            merged = list(values)
            for i, a in zip(dynamic, args):
                merged[i] = a
            captured.extend(apply_rule(ctx, rule, merged))
            return list(captured)

        results = jax.eval_shape(run, *[values[i] for i in dynamic])
        for t, shaped, value in zip(op.outputs, results, captured):
            t.shape = tuple(shaped.shape)
            if not explicit_dtype:
                t.type = DTYPE_TO_TENSOR_TYPE[np.dtype(shaped.dtype)]
            if isinstance(value, np.ndarray):
                self._static[id(t)] = value

    def output(self, *tensors: Tensor) -> None:
        """Mark tensors as graph outputs (in call order)."""
        self.graph.outputs.extend(tensors)

    def build(self) -> Model:
        return Model([self.graph]).validate()
