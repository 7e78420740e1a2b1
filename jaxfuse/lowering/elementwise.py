"""Elementwise ops: broadcasting binary arithmetic and unary activations/math."""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .activation import fused_activation
from .core import register


@register("ADD")
def add(ctx, a, b):
    """a + b (numpy broadcasting), then the fused activation."""
    return fused_activation(ctx, a + b)


@register("SUB")
def sub(ctx, a, b):
    """a - b (numpy broadcasting), then the fused activation."""
    return fused_activation(ctx, a - b)


@register("MUL")
def mul(ctx, a, b):
    """a * b (numpy broadcasting), then the fused activation."""
    return fused_activation(ctx, a * b)


@register("DIV")
def div(ctx, a, b):
    """a / b (numpy broadcasting), then the fused activation."""
    return fused_activation(ctx, a / b)


@register("MAXIMUM")
def maximum(ctx, a, b):
    """Elementwise max(a, b), broadcasting."""
    return jnp.maximum(a, b)


@register("MINIMUM")
def minimum(ctx, a, b):
    """Elementwise min(a, b), broadcasting."""
    return jnp.minimum(a, b)


@register("SQUARED_DIFFERENCE")
def squared_difference(ctx, a, b):
    """(a - b)^2, broadcasting."""
    d = a - b
    return d * d


@register("POW")
def pow_(ctx, a, b):
    """a ** b, broadcasting."""
    return jnp.power(a, b)


@register("ABS")
def abs_(ctx, x):
    """|x|."""
    return jnp.abs(x)


@register("NEG")
def neg(ctx, x):
    """-x."""
    return -x


@register("EXP")
def exp(ctx, x):
    """e^x."""
    return jnp.exp(x)


@register("LOG")
def log(ctx, x):
    """Natural logarithm."""
    return jnp.log(x)


@register("SQRT")
def sqrt(ctx, x):
    """Square root."""
    return jnp.sqrt(x)


@register("RSQRT")
def rsqrt(ctx, x):
    """1 / sqrt(x)."""
    return lax.rsqrt(x)


@register("SQUARE")
def square(ctx, x):
    """x * x."""
    return x * x


@register("FLOOR")
def floor(ctx, x):
    """Round toward -inf."""
    return jnp.floor(x)


@register("LOGISTIC")
def logistic(ctx, x):
    """Sigmoid 1 / (1 + e^-x)."""
    return jax.nn.sigmoid(x)


@register("TANH")
def tanh(ctx, x):
    """Hyperbolic tangent."""
    return jnp.tanh(x)


@register("RELU")
def relu(ctx, x):
    """max(x, 0)."""
    return jnp.maximum(x, 0)


@register("RELU6")
def relu6(ctx, x):
    """min(max(x, 0), 6)."""
    return jnp.clip(x, 0, 6)


@register("RELU_N1_TO_1")
def relu_n1_to_1(ctx, x):
    """min(max(x, -1), 1)."""
    return jnp.clip(x, -1, 1)


@register("RELU_0_TO_1")
def relu_0_to_1(ctx, x):
    """min(max(x, 0), 1)."""
    return jnp.clip(x, 0, 1)


@register("ELU")
def elu(ctx, x):
    """x for x >= 0, e^x - 1 below."""
    return jnp.where(x < 0, jnp.expm1(x), x)


@register("LEAKY_RELU")
def leaky_relu(ctx, x):
    """x for x > 0, alpha * x otherwise."""
    return jnp.where(x > 0, x, x * np.asarray(ctx.opt("alpha"), x.dtype))


@register("PRELU")
def prelu(ctx, x, alpha):
    """x for x >= 0, alpha * x otherwise (alpha broadcast against x)."""
    return jnp.where(x >= 0, x, x * alpha)


@register("HARD_SWISH")
def hard_swish(ctx, x):
    """x * min(max(x + 3, 0), 6) / 6."""
    return x * jnp.clip(x + 3, 0, 6) / 6


@register("GELU")
def gelu(ctx, x):
    """0.5 * x * erfc(-x / sqrt 2), or the tanh approximation when approximate is set."""
    return jax.nn.gelu(x, approximate=bool(ctx.opt("approximate")))
