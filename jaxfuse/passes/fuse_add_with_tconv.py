"""fuse_add_with_tconv: fold a per-channel constant that follows a TRANSPOSE_CONV into its parameters.

BEFORE   x -> TRANSPOSE_CONV -> ADD c (or SUB c) (fused act)
AFTER    x -> TRANSPOSE_CONV(W, b + c) (fused act)

b' = b + c; a missing bias input is created.
Exact conditions: see post_activation (no fused activation on the TRANSPOSE_CONV, each
intermediate tensor read only by the next op, per-channel float constants).
"""
from .base import register_pass
from .post_activation import FoldIntoProducer


@register_pass
class FuseAddWithTconv(FoldIntoProducer):
    name = "fuse_add_with_tconv"
    producers = ('TRANSPOSE_CONV',)
    chain = (('ADD', 'SUB'),)
