"""Spectral ops: RFFT2D (tf.signal.rfft2d) and the ops that read its complex64 values."""
import jax.numpy as jnp

from .core import register


@register("RFFT2D")
def rfft2d(ctx, x, fft_length):
    """2-D real FFT of every [..., H, W] slice (the last two axes) at the static fft_length
    (h, w), powers of two as LiteRT requires: the slice is cropped or zero-padded to h x w and
    the result is complex64 [..., h, w / 2 + 1] (LiteRT computes it in double and rounds once;
    XLA's float32 FFT stays within a few float32 ulps of the output's scale)."""
    h, w = (int(v) for v in ctx.static(fft_length, "fft_length (input 1)").reshape(-1))
    for n, what in ((h, "height"), (w, "width")):
        if n <= 0 or n & (n - 1):
            raise ctx.error(f"fft_length {what} {n} is not a power of two (LiteRT's FFT needs one)")
    if x.ndim < 2:
        raise ctx.error(f"input of rank {x.ndim}; RFFT2D transforms the last two axes")
    return jnp.fft.rfft2(x.astype(jnp.float32), s=(h, w), axes=(-2, -1)).astype(jnp.complex64)


@register("COMPLEX_ABS")
def complex_abs(ctx, x):
    """|x| of complex64 values as float32 (hypot of the parts, as std::abs)."""
    return jnp.abs(x).astype(jnp.float32)


@register("REAL")
def real(ctx, x):
    """The real part of complex64 values, as float32."""
    return jnp.real(x).astype(jnp.float32)


@register("IMAG")
def imag(ctx, x):
    """The imaginary part of complex64 values, as float32."""
    return jnp.imag(x).astype(jnp.float32)
