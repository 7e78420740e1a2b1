"""Fold-aware fine-tuning: the folding rules are pure JAX functions, so they jit, vmap and
differentiate. Train a conv + batch norm through its FUSED form, then re-derive the fused
weights after the update and check them against the unfused computation.

    python examples/fold_aware.py
"""
import jax
import jax.numpy as jnp
import numpy as np

from jaxfuse import fold

EPS = 1e-3


def conv(x, weights, bias):
    """TFLite CONV_2D semantics: NHWC input, OHWI filter, SAME padding, stride 1."""
    y = jax.lax.conv_general_dilated(x, weights, (1, 1), "SAME", dimension_numbers=("NHWC", "OHWI", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    return y + bias


def batchnorm_affine(p):
    """Inference batch norm as y*scale + shift."""
    scale = p["gamma"] / jnp.sqrt(p["var"] + EPS)
    return scale, p["beta"] - p["mean"] * scale


@jax.jit
def fused_parameters(p):
    """conv -> batch norm folded into one conv (fold.fold_output_affine), under jit."""
    scale, shift = batchnorm_affine(p)
    return fold.fold_output_affine("CONV_2D", p["w"], p["b"], scale, shift)


def fused_forward(p, x):
    return jax.nn.relu(conv(x, *fused_parameters(p)))


def unfused_forward(p, x):
    scale, shift = batchnorm_affine(p)
    return jax.nn.relu(conv(x, p["w"], p["b"]) * scale + shift)


def main():
    rng = np.random.default_rng(0)
    c_in, c_out = 3, 8
    params = {
        "w": jnp.asarray(rng.standard_normal((c_out, 3, 3, c_in)) * 0.3, jnp.float32),
        "b": jnp.zeros(c_out, jnp.float32),
        "gamma": jnp.asarray(rng.uniform(-1.5, 1.5, c_out), jnp.float32),   # negative gammas too
        "beta": jnp.asarray(rng.standard_normal(c_out) * 0.5, jnp.float32),
        "mean": jnp.asarray(rng.standard_normal(c_out) * 0.5, jnp.float32),
        "var": jnp.asarray(rng.uniform(0.5, 2.0, c_out), jnp.float32),
    }
    x = jnp.asarray(rng.standard_normal((4, 8, 8, c_in)), jnp.float32)
    target = jnp.asarray(rng.standard_normal((4, 8, 8, c_out)), jnp.float32)

    def loss(p, forward):
        return jnp.mean((forward(p, x) - target) ** 2)

    # Gradients through the fold equal gradients through the unfused graph.
    g_fused = jax.grad(loss)(params, fused_forward)
    g_plain = jax.grad(loss)(params, unfused_forward)
    grad_gap = max(float(jnp.max(jnp.abs(g_fused[k] - g_plain[k]))) for k in ("w", "gamma", "beta"))

    # One fine-tuning step of the batch-norm parameters, then re-derive the fused conv.
    step = jax.jit(lambda p, g: {k: p[k] - 0.1 * g[k] if k in ("gamma", "beta", "w") else p[k] for k in p})
    tuned = step(params, g_fused)
    fused_w, fused_b = fused_parameters(tuned)
    out_gap = float(jnp.max(jnp.abs(conv(x, fused_w, fused_b) - (conv(x, tuned["w"], tuned["b"]) *
                                                                 batchnorm_affine(tuned)[0] +
                                                                 batchnorm_affine(tuned)[1]))))

    # The pre-activation split is differentiable too: d(k*relu(m*(x+d)+a))/d(gamma) == d(relu(gamma*x+beta))/d(gamma).
    def split_value(gamma, beta, v):
        k, d, m, a = fold.preactivation_split(gamma, beta, shift_backward=True, scale_forward=True,
                                              through_relu=True)
        return jnp.sum(k * jax.nn.relu(m * (v + d) + a))

    v = jnp.linspace(-3.0, 3.0, c_out)
    split_gap = float(jnp.max(jnp.abs(jax.grad(split_value)(tuned["gamma"], tuned["beta"], v) -
                                      jax.grad(lambda g, b: jnp.sum(jax.nn.relu(g * v + b)))(tuned["gamma"],
                                                                                            tuned["beta"]))))
    print(f"loss before {float(loss(params, fused_forward)):.5f}, after one step {float(loss(tuned, fused_forward)):.5f}")
    print(f"gradient through the fold vs unfused: max difference {grad_gap:.2e}")
    print(f"re-derived fused conv vs conv -> batch norm after the step: max difference {out_gap:.2e}")
    print(f"d/dgamma of the pre-activation split vs relu(gamma*x+beta): max difference {split_gap:.2e}")
    return grad_gap, out_gap, split_gap


if __name__ == "__main__":
    main()
