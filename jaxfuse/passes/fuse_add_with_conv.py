"""fuse_add_with_conv: fold a per-channel constant that follows a CONV_2D into its parameters.

BEFORE   x -> CONV_2D -> ADD c (or SUB c) (fused act)
AFTER    x -> CONV_2D(W, b + c) (fused act)

b' = b + c (b - c for SUB).
Exact conditions: see post_activation (no fused activation on the CONV_2D, each
intermediate tensor read only by the next op, per-channel float constants).
"""
from .base import register_pass
from .post_activation import FoldIntoProducer


@register_pass
class FuseAddWithConv(FoldIntoProducer):
    name = "fuse_add_with_conv"
    producers = ('CONV_2D',)
    chain = (('ADD', 'SUB'),)
