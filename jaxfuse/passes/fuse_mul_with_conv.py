"""fuse_mul_with_conv: fold a per-channel constant that follows a CONV_2D into its parameters.

BEFORE   x -> CONV_2D -> MUL s (fused act)
AFTER    x -> CONV_2D(W*s, b*s) (fused act)

W' = W * s[o], b' = b*s.
Exact conditions: see post_activation (no fused activation on the CONV_2D, each
intermediate tensor read only by the next op, per-channel float constants).
"""
from .base import register_pass
from .post_activation import FoldIntoProducer


@register_pass
class FuseMulWithConv(FoldIntoProducer):
    name = "fuse_mul_with_conv"
    producers = ('CONV_2D',)
    chain = (('MUL',),)
