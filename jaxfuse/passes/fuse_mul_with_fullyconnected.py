"""fuse_mul_with_fullyconnected: fold a per-channel constant that follows a FULLY_CONNECTED into its parameters.

BEFORE   x -> FULLY_CONNECTED -> MUL s (fused act)
AFTER    x -> FULLY_CONNECTED(W*s, b*s) (fused act)

W' = W * s[o] (weights [O,I]), b' = b*s.
Exact conditions: see post_activation (no fused activation on the FULLY_CONNECTED, each
intermediate tensor read only by the next op, per-channel float constants).
"""
from .base import register_pass
from .post_activation import FoldIntoProducer


@register_pass
class FuseMulWithFullyconnected(FoldIntoProducer):
    name = "fuse_mul_with_fullyconnected"
    producers = ('FULLY_CONNECTED',)
    chain = (('MUL',),)
