"""Pure parameter rules for folding per-channel scales and shifts into weights.

Every function here is a side-effect-free expression of arrays. Called with NumPy
float64 arrays (as the passes do) they compute the folded parameters exactly once in
double precision; called with JAX arrays they can be jit-ed, vmapped and differentiated
(fold-aware research: re-derive fused weights after a fine-tuning step).

Layouts (TFLite): CONV_2D filter [O,KH,KW,I]; DEPTHWISE_CONV_2D filter [1,KH,KW,C*M]
(output channel c*M+m reads input channel c); TRANSPOSE_CONV filter [O,KH,KW,I] with
O the output channels; FULLY_CONNECTED weights [O,I].
"""
from __future__ import annotations

import numpy as np

OUTPUT_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "TRANSPOSE_CONV": 0, "FULLY_CONNECTED": 0}
INPUT_AXIS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "TRANSPOSE_CONV": 3, "FULLY_CONNECTED": 1}


def _xp(*arrays):
    """NumPy for NumPy inputs, jax.numpy as soon as one input is a JAX array or tracer."""
    if all(isinstance(a, (np.ndarray, np.generic, float, int)) for a in arrays):
        return np
    import jax.numpy as jnp
    return jnp


def _along(vector, axis: int, ndim: int):
    shape = [1] * ndim
    shape[axis] = -1
    return vector.reshape(shape)


def fold_output_affine(kind: str, weights, bias, scale, shift):
    """op(x) * scale + shift == op'(x) with W' = W*scale (per output channel), b' = b*scale + shift.

    Valid for CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED without a
    fused activation. `bias` may be None (treated as zeros); `scale`/`shift` may be None.
    """
    xp = _xp(weights, *(a for a in (bias, scale, shift) if a is not None))
    out_channels = weights.shape[OUTPUT_AXIS[kind]]
    bias = xp.zeros(out_channels, weights.dtype) if bias is None else bias
    if scale is not None:
        weights = weights * _along(scale, OUTPUT_AXIS[kind], weights.ndim)
        bias = bias * scale
    if shift is not None:
        bias = bias + shift
    return weights, bias


def scale_input_channels(kind: str, weights, scale, input_shape=None):
    """op(x * scale) == op'(x) with W' = W scaled along its input channels.

    For DEPTHWISE_CONV_2D, output channel c*M+m reads input channel c. For a
    FULLY_CONNECTED fed by a flattened [.., C] tensor, the scale repeats every C columns.
    """
    xp = _xp(weights, scale)
    columns = weights.shape[INPUT_AXIS[kind]]
    repeat = columns // scale.shape[0]
    if kind == "DEPTHWISE_CONV_2D":
        per_column = xp.repeat(scale, repeat)      # c*M+m -> scale[c]
    else:
        per_column = xp.tile(scale, repeat)        # flattened (..., c) -> scale[c]
    return weights * _along(per_column, INPUT_AXIS[kind], weights.ndim)


def scale_input_channels_float32(kind: str, weights: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """scale_input_channels of float32 `weights` by a float64 `scale`, computed in float64
    and rounded once to float32. Where every scale is a float32 value (|gamma| of a float32
    batch norm is), the float64 product of two float32 values is exact (24 + 24 significant
    bits fit in 53), so rounding it is float32 multiplication itself, bit for bit: then the
    product is taken in float32, without a float64 copy of the weights."""
    scale32 = scale.astype(np.float32)
    if weights.dtype == np.float32 and np.array_equal(scale32, scale):
        return scale_input_channels(kind, weights, scale32)
    return scale_input_channels(kind, weights.astype(np.float64), scale).astype(np.float32)


def input_shift_to_bias(kind: str, weights, bias, shift):
    """op(x + shift) == op(x) + delta for an op that sees no padding: returns b + delta.

    delta[o] = sum over the window and input channels of W[o, ..., c] * shift[c]
    (for DEPTHWISE_CONV_2D: sum over the window of W[..., c*M+m] * shift[c]).
    """
    xp = _xp(weights, bias, shift) if bias is not None else _xp(weights, shift)
    if kind == "DEPTHWISE_CONV_2D":
        per_column = xp.repeat(shift, weights.shape[3] // shift.shape[0])
        delta = (weights * per_column).sum(axis=(0, 1, 2))
    elif kind == "FULLY_CONNECTED":
        per_column = xp.tile(shift, weights.shape[1] // shift.shape[0])
        delta = weights @ per_column
    else:  # CONV_2D, TRANSPOSE_CONV never reach here without padding checks by the caller
        delta = (weights * shift).sum(axis=(1, 2, 3))
    return delta if bias is None else bias + delta


def preactivation_split(gamma, beta, *, shift_backward, scale_forward, through_relu, keep=None, constant=None):
    """Split act(gamma*x + beta) into k * act(m * (x + d) + a), channel by channel.

    For k > 0 (any k != 0 when act is the identity) both sides are equal whenever
    k*m == gamma and k*(m*d + a) == beta. Returns (k, d, m, a):
      k: folded FORWARD into every consumer's input channels (1 where scale_forward is False);
      d: folded BACKWARD into the producer's bias (0 where shift_backward is False);
      m, a: what stays in the graph (m == 1 and a == 0 everywhere: only the activation stays).
    With a ReLU, k = |gamma| and m = sign(gamma); without one (through_relu False), k = gamma.
    Channels in `keep` (boolean mask) stay exactly as they were: k=1, d=0, m=gamma, a=beta.
    Zero gammas stay as m=0, a=beta (the channel is the constant act(beta)), unless marked in
    `constant`: then k=0, m=1, a=0 and the caller adds act(beta)'s contribution to the
    consumers' biases itself (valid only where no consumer sees padding).
    """
    xp = _xp(gamma, beta)
    nonzero = gamma != 0
    if keep is not None:
        nonzero = nonzero & ~keep
    safe_gamma = xp.where(nonzero, gamma, 1)
    if scale_forward:
        k = xp.where(nonzero, xp.abs(safe_gamma) if through_relu else safe_gamma, 1)
    else:
        k = xp.ones_like(gamma)
    shifted = nonzero if shift_backward else xp.zeros_like(nonzero)
    d = xp.where(shifted, beta / safe_gamma, 0)
    m = xp.where(nonzero, gamma / k, gamma)       # exactly +-1 or 1 where folded
    a = xp.where(shifted, 0, beta / k)
    if constant is not None:
        k = xp.where(constant, 0, k)
        m = xp.where(constant, 1, m)
        a = xp.where(constant, 0, a)
        d = xp.where(constant, 0, d)
    return k, d, m, a


CHAIN_STEPS = ("ADD", "SUB", "RSUB", "MUL", "DIV")


def compose_scale_shift(steps):
    """The (scale, shift) with chain(x) == x * scale + shift for a chain of elementwise
    steps applied in order, each a (kind, constant) pair:
      ("ADD", c): x + c      ("SUB", c): x - c      ("RSUB", c): c - x
      ("MUL", c): x * c      ("DIV", c): x / c  (c / x is not affine and has no step)
    Constants are per-channel vectors or size-1 arrays; the results are broadcast to
    their common shape. Starting from scale 1, shift 0, each step maps (s, t) to
    (s, t + c), (s, t - c), (-s, c - t), (s*c, t*c), (s/c, t/c).

    With NumPy float64 constants this composes the chain exactly once in double precision
    (the caller rounds once to float32): DIV then becomes a multiplication by 1/c, which in
    float32 is not bit-identical to dividing by c. With JAX arrays it can be jit-ed and
    differentiated.
    """
    if not steps:
        raise ValueError("compose_scale_shift needs at least one step")
    xp = _xp(*(c for _, c in steps))
    scale, shift = 1.0, 0.0
    for kind, c in steps:
        if kind == "ADD":
            shift = shift + c
        elif kind == "SUB":
            shift = shift - c
        elif kind == "RSUB":
            scale, shift = -scale, c - shift
        elif kind == "MUL":
            scale, shift = scale * c, shift * c
        elif kind == "DIV":
            scale, shift = scale / c, shift / c
        else:
            raise ValueError(f"unknown chain step {kind!r} (known: {', '.join(CHAIN_STEPS)})")
    scale, shift = xp.broadcast_arrays(xp.asarray(scale), xp.asarray(shift))
    return scale, shift


def fold_input_affine(kind: str, weights, bias, scale, shift, *, adjoint: bool = False):
    """op(x * scale + shift) == op'(x) for a linear op reading x as data, with x's channels
    on its last axis: returns (W', b') with W' = W scaled along its input channels and
    b' = b + (W applied to shift). `scale`/`shift` may be None; `bias` may be None (zeros).

    FULLY_CONNECTED (weights [O, I], I a multiple of the channels: the scale and shift repeat
    over a flattened input), CONV_2D that sees no padding (a 1x1 kernel; weights [O,KH,KW,C])
    and BATCH_MATMUL with a constant right-hand side ([..., C, N], or [..., N, C] when
    `adjoint`): there b' has shape [..., N] and is added after the product (no bias exists in
    the op itself). Exact in real arithmetic, for any sign of the scale, zeros included.
    """
    present = [a for a in (bias, scale, shift) if a is not None]
    xp = _xp(weights, *present)
    if kind == "BATCH_MATMUL":
        axis = weights.ndim - 1 if adjoint else weights.ndim - 2
        delta = None
        if shift is not None:
            delta = xp.matmul(weights, shift) if adjoint else xp.matmul(shift, weights)
        if scale is not None:
            weights = weights * _along(scale, axis, weights.ndim)
    else:
        delta = None if shift is None else input_shift_to_bias(kind, weights, None, shift)
        if scale is not None:
            weights = scale_input_channels(kind, weights, scale)
    if delta is None:
        return weights, bias
    return weights, delta if bias is None else bias + delta
