"""Quantized (int8 / uint8 / int16) forms of data-movement ops and of ARG_MAX / ARG_MIN.

Data movement: LiteRT's kernels of these ops copy the stored integers. Some of them refuse an
output quantized unlike the input (`SAME_QUANTIZATION` below: the same scale and zero point,
checked in their Prepare); the others never read the scales, so an output quantized
differently reinterprets the same integers. Either way the float rule, run on the integers,
computes what LiteRT computes: one shared wrapper (`_on_stored_integers`) checks the types
and, where LiteRT does, the quantization, then calls it.
"""
import numpy as np

from . import array, comparison, layout, reduce
from .core import QUANTIZED, Ctx, register
from .quant import is_quantized_integer


def _quantized_tensors(ctx: Ctx):
    return [t for t in [*ctx.inputs, *ctx.outputs] if is_quantized_integer(t)]


def _check_same_quantization(ctx: Ctx) -> None:
    """Every quantized input and output has one scale and zero point, all equal (LiteRT's check)."""
    tensors = _quantized_tensors(ctx)
    params = [ctx.qparams(t) for t in tensors]
    for t, q in zip(tensors, params):
        if q.per_channel:
            raise ctx.error(f"'{t.name}' is quantized per channel; LiteRT's {ctx.op.type} takes one scale per tensor")
    first = params[0]
    for t, q in zip(tensors[1:], params[1:]):
        if q.s != first.s or q.zp != first.zp:
            raise ctx.error(f"'{t.name}' is quantized with scale {q.s:g}, zero point {q.zp} but '{tensors[0].name}' "
                            f"with scale {first.s:g}, zero point {first.zp}; LiteRT's {ctx.op.type} requires them "
                            f"equal")


def _check_storage_types(ctx: Ctx) -> None:
    """The quantized inputs and outputs share one integer type (LiteRT requires it)."""
    tensors = _quantized_tensors(ctx)
    types = {t.dtype for t in tensors}
    if len(types) > 1:
        raise ctx.error(f"quantized {ctx.op.type} needs inputs and outputs of one type (got "
                        f"{', '.join(f'{t.name}: {t.dtype}' for t in tensors)})")


def _on_stored_integers(float_rule, same_quantization: bool, int16: bool):
    """The quantized rule of a data-movement op: the float rule on the stored integers, after
    LiteRT's checks."""
    def rule(ctx, *values):
        _check_storage_types(ctx)
        if not int16 and any(t.dtype == np.int16 for t in _quantized_tensors(ctx)):
            raise ctx.error(f"LiteRT's {ctx.op.type} has no int16 kernel (float32, int8 and uint8 only)")
        if same_quantization:
            _check_same_quantization(ctx)
        return float_rule(ctx, *values)
    rule.__name__ = rule.__qualname__ = f"{float_rule.__name__}_quantized"
    rule.__doc__ = (f"{float_rule.__name__} on the stored integers"
                    + (" (LiteRT requires inputs and output quantized alike)." if same_quantization else "."))
    return rule


# op -> (float rule, LiteRT requires inputs and outputs to share scale and zero point, LiteRT has an int16 kernel)
DATA_MOVEMENT = {
    "STRIDED_SLICE": (array.strided_slice, False, True),
    "SLICE": (array.slice_, False, True),
    "SPLIT": (array.split, False, True),
    "SPLIT_V": (array.split_v, False, True),
    "GATHER": (array.gather, False, True),
    "GATHER_ND": (layout.gather_nd, False, True),
    "PACK": (array.pack, True, True),
    "UNPACK": (array.unpack, True, True),
    "EXPAND_DIMS": (array.expand_dims, True, True),
    "TILE": (layout.tile, False, True),
    "BROADCAST_TO": (layout.broadcast_to, False, True),
    "REVERSE_V2": (layout.reverse_v2, False, True),
    "DEPTH_TO_SPACE": (layout.depth_to_space, False, False),
    "SPACE_TO_DEPTH": (layout.space_to_depth, False, False),
    "BATCH_TO_SPACE_ND": (layout.batch_to_space_nd, False, True),
    "SELECT": (comparison.select, False, True),
    "SELECT_V2": (comparison.select_v2, False, True),
}
for _op, (_rule, _same, _int16) in DATA_MOVEMENT.items():
    register(_op, QUANTIZED)(_on_stored_integers(_rule, _same, _int16))


@register("SPACE_TO_BATCH_ND", QUANTIZED)
def space_to_batch_nd_quantized(ctx, x, block_shape, paddings):
    """The float rule on the stored integers, padding with the output's zero point (the quantized 0.0)."""
    _check_storage_types(ctx)
    return layout.space_to_batch_nd(ctx, x, block_shape, paddings, ctx.qparams(ctx.outputs[0]).zp)


def _no_int16(ctx: Ctx, x) -> None:
    if np.dtype(x.dtype) == np.int16:
        raise ctx.error(f"LiteRT's {ctx.op.type} has no int16 kernel")


@register("ARG_MAX", QUANTIZED)
def arg_max_quantized(ctx, x, axis):
    """The float rule on the stored integers (a positive scale keeps their order); no int16 (as LiteRT)."""
    _no_int16(ctx, x)
    return reduce.arg_max(ctx, x, axis)


@register("ARG_MIN", QUANTIZED)
def arg_min_quantized(ctx, x, axis):
    """The float rule on the stored integers (a positive scale keeps their order); no int16 (as LiteRT)."""
    _no_int16(ctx, x)
    return reduce.arg_min(ctx, x, axis)
