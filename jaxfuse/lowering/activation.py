"""TFLite's fused activation functions (the `fusedActivationFunction` option field)."""
import jax.numpy as jnp

from ..schema import ACTIVATION_NAMES


def apply_activation(x, code: int):
    """Fused activation `code` on x: 0 NONE, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6, 4 TANH, 5 SIGN_BIT (x < 0 as 1/0)."""
    if code == 0:
        return x
    if code == 1:
        return jnp.maximum(x, 0)
    if code == 2:
        return jnp.clip(x, -1, 1)
    if code == 3:
        return jnp.clip(x, 0, 6)
    if code == 4:
        return jnp.tanh(x)
    if code == 5:
        return jnp.signbit(x).astype(x.dtype)
    raise ValueError(f"unknown fused activation code {code} (known: {ACTIVATION_NAMES})")


def fused_activation(ctx, y):
    """y with the op's fusedActivationFunction applied. TANH and SIGN_BIT are refused: LiteRT's
    kernels silently skip them on ADD/CONV_2D/... and onert rejects them, so they have no agreed meaning."""
    code = ctx.opt("fusedActivationFunction")
    if code in (4, 5):
        raise ctx.error(f"fused activation {ACTIVATION_NAMES[code]} is ignored by LiteRT and rejected by onert; "
                        "refusing to guess its meaning")
    return apply_activation(y, code)


def no_fused_activation(ctx) -> None:
    """Refuse a fused activation on an op whose LiteRT kernel rejects one and whose onert kernel skips it."""
    code = ctx.opt("fusedActivationFunction")
    if code != 0:
        raise ctx.error(f"fused activation {ACTIVATION_NAMES.get(code, code)} on {ctx.op.type} is rejected by LiteRT "
                        "and ignored by onert; refusing to guess its meaning")
