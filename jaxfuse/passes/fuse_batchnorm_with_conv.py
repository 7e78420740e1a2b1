"""fuse_batchnorm_with_conv: fold a per-channel constant that follows a CONV_2D into its parameters.

BEFORE   x -> CONV_2D -> MUL s -> ADD c (fused act)
AFTER    x -> CONV_2D(W*s, b*s + c) (fused act)

W' = W * s[o] (filter [O,KH,KW,I]), b' = b*s + c.
Exact conditions: see post_activation (no fused activation on the CONV_2D, each
intermediate tensor read only by the next op, per-channel float constants).
"""
from .base import register_pass
from .post_activation import FoldIntoProducer


@register_pass
class FuseBatchnormWithConv(FoldIntoProducer):
    name = "fuse_batchnorm_with_conv"
    producers = ('CONV_2D',)
    chain = (('MUL',), ('ADD', 'SUB'))
