"""Quantization parameters as the quantized lowering rules need them, checked.

real = scale * (q - zero_point), per tensor or per channel along `axis`. The checks here
are the ones LiteRT's reader and kernels make (a scale that is missing, zero, negative or
not finite; a zero-point count that differs from the scale count; a per-channel axis out
of range or of the wrong size), so a bad file is refused with a message naming the
tensor instead of computing garbage.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Tensor
from ..schema import TENSOR_TYPE_NAMES
from .fixed_point import round_half_away

QUANTIZED_ACTIVATION_TYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16))


def type_name(tensor: Tensor) -> str:
    return TENSOR_TYPE_NAMES.get(tensor.type, f"type {tensor.type}").lower()


def is_quantized_integer(tensor: Tensor | None) -> bool:
    """An integer tensor carrying a scale: its values are q, meaning scale * (q - zero_point)."""
    return tensor is not None and tensor.dtype is not None and tensor.dtype.kind in "iu" and tensor.is_quantized


@dataclass(frozen=True)
class QuantParams:
    scale: np.ndarray        # float32, one value (per tensor) or one per channel
    zero_point: np.ndarray   # int64, same length as scale
    axis: int                # the channel axis when per channel
    dtype: np.dtype          # the integer storage type

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    @property
    def s(self) -> float:
        """The per-tensor scale as a Python float (float32 value)."""
        return float(self.scale[0])

    @property
    def zp(self) -> int:
        """The per-tensor zero point."""
        return int(self.zero_point[0])

    @property
    def qmin(self) -> int:
        return int(np.iinfo(self.dtype).min)

    @property
    def qmax(self) -> int:
        return int(np.iinfo(self.dtype).max)

    def quantize_float(self, value: float) -> int:
        """TFLite's quantize(value) for clamps: zero_point + round(value / scale) in float32."""
        return self.zp + int(round_half_away(np.float32(value) / np.float32(self.s)))


def quantization_problem(tensor: Tensor) -> str:
    """'' if the tensor's quantization parameters are usable, else what is wrong with them."""
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return "has no quantization scale"
    scale = np.asarray(q.scale, np.float64)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        bad = scale[~(np.isfinite(scale) & (scale > 0))][0]
        return f"has an invalid quantization scale {bad:g} (scales must be positive and finite)"
    zero_point = q.zero_point
    if zero_point is None or len(zero_point) != len(scale):
        count = 0 if zero_point is None else len(zero_point)
        return f"has {len(scale)} scale(s) but {count} zero point(s)"
    if len(scale) > 1:
        rank = len(tensor.shape)
        if not 0 <= q.quantized_dimension < rank:
            return (f"is quantized per channel along axis {q.quantized_dimension}, "
                    f"which a tensor of rank {rank} does not have")
        if int(tensor.shape[q.quantized_dimension]) != len(scale):
            return (f"has {len(scale)} per-channel scales for {tensor.shape[q.quantized_dimension]} channels "
                    f"along axis {q.quantized_dimension}")
    dtype = tensor.dtype
    if dtype is not None and dtype.kind in "iu":
        info = np.iinfo(dtype)
        zp = np.asarray(zero_point, np.int64)
        if np.any(zp < info.min) or np.any(zp > info.max):
            return f"has a zero point outside the range of {type_name(tensor)}"
    return ""


def quant_params(tensor: Tensor) -> QuantParams:
    """The checked parameters; ValueError naming the tensor and the problem otherwise."""
    problem = quantization_problem(tensor)
    if problem:
        raise ValueError(f"tensor '{tensor.name}' ({type_name(tensor)}) {problem}")
    q = tensor.quantization
    return QuantParams(np.asarray(q.scale, np.float32).reshape(-1), np.asarray(q.zero_point, np.int64).reshape(-1),
                       int(q.quantized_dimension), tensor.dtype)


def activation_range(code: int, out: QuantParams) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized: a fused activation as a clamp of the
    quantized output (RELU [q(0), qmax], RELU6 [q(0), q(6)], RELU_N1_TO_1 [q(-1), q(1)])."""
    low, high = out.qmin, out.qmax
    if code == 1:
        low = max(low, out.quantize_float(0.0))
    elif code == 3:
        low, high = max(low, out.quantize_float(0.0)), min(high, out.quantize_float(6.0))
    elif code == 2:
        low, high = max(low, out.quantize_float(-1.0)), min(high, out.quantize_float(1.0))
    elif code != 0:
        raise ValueError(f"fused activation {code} has no quantized form")
    return low, high
