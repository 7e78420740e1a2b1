"""fuse_batchnorm_with_tconv: fold a per-channel constant that follows a TRANSPOSE_CONV into its parameters.

BEFORE   x -> TRANSPOSE_CONV -> MUL s -> ADD c (fused act)
AFTER    x -> TRANSPOSE_CONV(W*s, b*s + c) (fused act)

W' = W * s[o] (filter [O,KH,KW,I], O = output channels), b' = b*s + c; a missing bias input is created.
Exact conditions: see post_activation (no fused activation on the TRANSPOSE_CONV, each
intermediate tensor read only by the next op, per-channel float constants).
"""
from .base import register_pass
from .post_activation import FoldIntoProducer


@register_pass
class FuseBatchnormWithTconv(FoldIntoProducer):
    name = "fuse_batchnorm_with_tconv"
    producers = ('TRANSPOSE_CONV',)
    chain = (('MUL',), ('ADD', 'SUB'))
