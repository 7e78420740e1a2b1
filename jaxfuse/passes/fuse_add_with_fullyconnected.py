"""fuse_add_with_fullyconnected: fold a per-channel constant that follows a FULLY_CONNECTED into its parameters.

BEFORE   x -> FULLY_CONNECTED -> ADD c (or SUB c) (fused act)
AFTER    x -> FULLY_CONNECTED(W, b + c) (fused act)

b' = b + c; a missing bias input is created.
Exact conditions: see post_activation (no fused activation on the FULLY_CONNECTED, each
intermediate tensor read only by the next op, per-channel float constants).
"""
from .base import register_pass
from .post_activation import FoldIntoProducer


@register_pass
class FuseAddWithFullyconnected(FoldIntoProducer):
    name = "fuse_add_with_fullyconnected"
    producers = ('FULLY_CONNECTED',)
    chain = (('ADD', 'SUB'),)
