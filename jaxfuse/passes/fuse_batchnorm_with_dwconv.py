"""fuse_batchnorm_with_dwconv: fold a per-channel constant that follows a DEPTHWISE_CONV_2D into its parameters.

BEFORE   x -> DEPTHWISE_CONV_2D -> MUL s -> ADD c (fused act)
AFTER    x -> DEPTHWISE_CONV_2D(W*s, b*s + c) (fused act)

W' = W * s[c*M+m] along the last axis of the [1,KH,KW,C*M] filter (any depth multiplier M), b' = b*s + c.
Exact conditions: see post_activation (no fused activation on the DEPTHWISE_CONV_2D, each
intermediate tensor read only by the next op, per-channel float constants).
"""
from .base import register_pass
from .post_activation import FoldIntoProducer


@register_pass
class FuseBatchnormWithDwconv(FoldIntoProducer):
    name = "fuse_batchnorm_with_dwconv"
    producers = ('DEPTHWISE_CONV_2D',)
    chain = (('MUL',), ('ADD', 'SUB'))
