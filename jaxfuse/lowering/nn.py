"""Convolutions, pooling, fully connected, softmax and normalization (NHWC, TFLite layouts)."""
import jax.numpy as jnp
import numpy as np
from jax import lax

from .activation import fused_activation, no_fused_activation
from .core import Ctx, register

HIGHEST = lax.Precision.HIGHEST
SAME, VALID = 0, 1


def window_padding(ctx: Ctx, size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite padding of one spatial axis: SAME gives out = ceil(size/stride) and pads
    max((out-1)*stride + (kernel-1)*dilation + 1 - size, 0), the odd cell after; VALID pads nothing."""
    padding = ctx.opt("padding")
    if padding == VALID:
        return 0, 0
    if padding != SAME:
        raise ctx.error(f"unknown padding {padding} (0 SAME, 1 VALID)")
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _strides(ctx: Ctx) -> tuple[int, int]:
    return ctx.opt("strideH"), ctx.opt("strideW")


def _finish(ctx: Ctx, y, bias):
    """Add the optional per-output-channel bias, then the fused activation."""
    if bias is not None:
        y = y + bias
    return fused_activation(ctx, y)


def _conv(ctx: Ctx, x, w, rhs_spec: str, groups: int, dilation: tuple[int, int]):
    strides = _strides(ctx)
    kh, kw = w.shape[rhs_spec.index("H")], w.shape[rhs_spec.index("W")]
    pads = [window_padding(ctx, x.shape[1], kh, strides[0], dilation[0]),
            window_padding(ctx, x.shape[2], kw, strides[1], dilation[1])]
    return lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", rhs_spec, "NHWC"),
                                    feature_group_count=groups, precision=HIGHEST)


def _pointwise_conv(ctx: Ctx, x, w):
    """An ungrouped 1x1 convolution as a product over the channel axis. The same sums (XLA
    CPU runs both as an Eigen contraction: the same bits on ResNet50V2's shapes; a 1x1
    input, as in a classifier head, may sum in another order), but a convolution's filter
    is transposed to [I, O] on every run, while a product reads the [O, I] filter as it is.
    A 1x1 window never pads, so SAME and VALID agree and the stride is a slice; dilation
    does not apply."""
    strides = _strides(ctx)
    for size, stride in zip(x.shape[1:3], strides):
        window_padding(ctx, size, 1, stride)  # checks the padding option
    if strides != (1, 1):
        x = x[:, ::strides[0], ::strides[1], :]
    return lax.dot_general(x, w.reshape(w.shape[0], w.shape[3]), (((3,), (1,)), ((), ())), precision=HIGHEST)


@register("CONV_2D")
def conv_2d(ctx, x, w, bias=None):
    """Cross-correlation of NHWC x with OHWI w (groups = C / I) with padding, stride, dilation; + bias, activation."""
    if x.shape[3] % w.shape[3]:
        raise ctx.error(f"input channels {x.shape[3]} are not a multiple of the filter's {w.shape[3]}")
    if w.shape[1] == w.shape[2] == 1 and x.shape[3] == w.shape[3]:
        return _finish(ctx, _pointwise_conv(ctx, x, w), bias)
    dilation = (ctx.opt("dilationHFactor"), ctx.opt("dilationWFactor"))
    return _finish(ctx, _conv(ctx, x, w, "OHWI", x.shape[3] // w.shape[3], dilation), bias)


@register("DEPTHWISE_CONV_2D")
def depthwise_conv_2d(ctx, x, w, bias=None):
    """Per-channel conv: filter [1,KH,KW,C*M], output channel c*M+m sees input channel c (M from shapes)."""
    channels, out_channels = x.shape[3], w.shape[3]
    if out_channels % channels:
        raise ctx.error(f"filter channels {out_channels} are not a multiple of the input's {channels}")
    hwio = w.reshape(w.shape[1], w.shape[2], 1, out_channels)
    dilation = (ctx.opt("dilationHFactor"), ctx.opt("dilationWFactor"))
    return _finish(ctx, _conv(ctx, x, hwio, "HWIO", channels, dilation), bias)


@register("TRANSPOSE_CONV")
def transpose_conv(ctx, output_shape, w, x, bias=None):
    """Conv input-gradient: out[i*s - pad + k] += x[i] * w[:, k, :]; output shape from input 0, SAME/VALID pad on it."""
    shape = [int(d) for d in ctx.static(output_shape, "output_shape (input 0)")]
    strides = _strides(ctx)
    pads = []  # as a correlation of the stride-dilated input with the flipped kernel
    for size_in, size_out, k, s in zip(x.shape[1:3], shape[1:3], w.shape[1:3], strides):
        low = k - 1 - window_padding(ctx, size_out, k, s)[0]
        pads.append((low, size_out + k - 1 - low - ((size_in - 1) * s + 1)))
    y = lax.conv_general_dilated(x, w[:, ::-1, ::-1, :], (1, 1), pads, lhs_dilation=strides,
                                 dimension_numbers=("NHWC", "OHWI", "NHWC"), precision=HIGHEST)
    return _finish(ctx, y, bias)


@register("FULLY_CONNECTED")
def fully_connected(ctx, x, w, bias=None):
    """x [..., I] (flattened to [-1, I] unless keepNumDims) times w[O, I] transposed, + bias, activation."""
    if ctx.opt("weightsFormat") != 0:
        raise ctx.error(f"weights format {ctx.opt('weightsFormat')} (shuffled) is not supported, only DEFAULT")
    if not ctx.opt("keepNumDims"):
        x = x.reshape(-1, w.shape[1])
    y = lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())), precision=HIGHEST)
    return _finish(ctx, y, bias)


def _pool_window(ctx: Ctx, x):
    kernel = (ctx.opt("filterHeight"), ctx.opt("filterWidth"))
    strides = _strides(ctx)
    pads = [window_padding(ctx, n, k, s) for n, k, s in zip(x.shape[1:3], kernel, strides)]
    return (1, *kernel, 1), (1, *strides, 1), [(0, 0), *pads, (0, 0)]


@register("MAX_POOL_2D")
def max_pool_2d(ctx, x):
    """Window maximum over H, W; SAME padding cells are ignored; fused activation."""
    window, strides, pads = _pool_window(ctx, x)
    y = lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, window, strides, pads)
    return fused_activation(ctx, y)


@register("AVERAGE_POOL_2D")
def average_pool_2d(ctx, x):
    """Window mean over H, W, dividing by the number of valid (unpadded) cells; fused activation."""
    window, strides, pads = _pool_window(ctx, x)
    total = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, window, strides, pads)
    counts = [_valid_cells(n, k, s, pad, out) for n, k, s, pad, out in
              zip(x.shape[1:3], window[1:3], strides[1:3], pads[1:3], total.shape[1:3])]
    count = np.outer(*counts).astype(x.dtype)[None, :, :, None]
    return fused_activation(ctx, total / count)


def _valid_cells(size: int, kernel: int, stride: int, pad: tuple[int, int], out: int) -> np.ndarray:
    """How many cells of each window along one axis lie inside the unpadded input."""
    starts = np.arange(out) * stride - pad[0]
    return np.minimum(starts + kernel, size) - np.maximum(starts, 0)


@register("SOFTMAX")
def softmax(ctx, x):
    """exp(beta * (x - max)) / sum over the last axis."""
    z = (x - jnp.max(x, axis=-1, keepdims=True)) * ctx.opt("beta")
    e = jnp.exp(z)
    return e / jnp.sum(e, axis=-1, keepdims=True)


@register("LOG_SOFTMAX")
def log_softmax(ctx, x):
    """(x - max) - log(sum(exp(x - max))) over the last axis."""
    z = x - jnp.max(x, axis=-1, keepdims=True)
    return z - jnp.log(jnp.sum(jnp.exp(z), axis=-1, keepdims=True))


@register("L2_NORMALIZATION")
def l2_normalization(ctx, x):
    """x / max(sqrt(sum of x^2 over the last axis), 1e-6); a fused activation is refused (see no_fused_activation)."""
    no_fused_activation(ctx)
    return x / jnp.maximum(jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)), 1e-6)


@register("BATCH_MATMUL")
def batch_matmul(ctx, a, b):
    """Matrix product of the last two axes (each optionally transposed by adjointLhs/Rhs), batch axes broadcast."""
    if ctx.opt("adjointLhs"):
        a = jnp.swapaxes(a, -1, -2)
    if ctx.opt("adjointRhs"):
        b = jnp.swapaxes(b, -1, -2)
    return jnp.matmul(a, b, precision=HIGHEST)
