"""Helpers for the quantized-rule tests: single-op quantized models and the LSB comparison
with LiteRT's builtin kernels (the acceptance rule: within 1 LSB on at least 99.9% of the
elements of every tensor, never more than 2)."""
import jax
import numpy as np

import jaxfuse
from jaxfuse.builder import ModelBuilder, quantization
from jaxfuse.lowering import lower
from reference import run_litert

LSB_SHARE = 0.999  # share of elements that must be within 1 LSB
LSB_MAX = 2        # no element may be further off


class QIn:
    """A quantized graph input: integer `value` with scale and zero point (per tensor)."""

    def __init__(self, value, scale, zero_point=0):
        self.value = np.asarray(value)
        self.quant = quantization(scale, zero_point)


class QConst:
    """A quantized constant: integer `value`, scales/zero points per tensor or per channel along `axis`."""

    def __init__(self, value, scale, zero_point=0, axis=0):
        self.value = np.asarray(value)
        self.quant = quantization(scale, zero_point, axis)


def random_q(rng, shape, dtype=np.int8):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def quantized_op(op_type, operands, options=None, *, out_dtype=np.int8, out_scale=None, out_zero_point=0,
                 output_shape=None, **kwargs):
    """A model of one op. QIn operands become quantized graph inputs, QConst quantized
    constants, plain arrays unquantized constants (shapes, axes), None omitted inputs. The
    output is quantized with (out_scale, out_zero_point) unless out_scale is None (float)."""
    b = ModelBuilder()
    tensors, feeds = [], []
    for i, v in enumerate(operands):
        if v is None:
            tensors.append(None)
        elif isinstance(v, QIn):
            tensors.append(b.input(f"in{i}", v.value.shape, v.value.dtype, quant=v.quant))
            feeds.append(v.value)
        elif isinstance(v, QConst):
            tensors.append(b.const(f"c{i}", v.value, quant=v.quant))
        elif hasattr(v, "value"):  # a float graph input (tests.test_lower_ops.In)
            tensors.append(b.input(f"in{i}", v.value.shape, v.value.dtype))
            feeds.append(v.value)
        else:
            tensors.append(b.const(f"c{i}", v))
    quant = None if out_scale is None else quantization(out_scale, out_zero_point)
    out = b.op(op_type, tensors, options, dtype=out_dtype, quant=quant, output_shape=output_shape, **kwargs)
    b.output(*(out if isinstance(out, list) else [out]))
    return b.build(), feeds


def lsb_report(actual: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
    """(share of elements within 1 LSB, largest difference in LSBs)."""
    diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
    return float(np.mean(diff <= 1)) if diff.size else 1.0, int(diff.max(initial=0))


def run_both(path, feeds):
    """(JAX outputs, LiteRT outputs) of the saved model."""
    expected = run_litert(path, feeds)
    fn, params = lower(jaxfuse.load(path))
    actual = [np.asarray(y) for y in jax.jit(fn)(params, *feeds)]
    return actual, expected


def assert_matches_litert(path, feeds, exact=False):
    """JAX and LiteRT agree: integer outputs within the LSB rule (bit for bit with exact=True),
    float outputs within 1e-6 of their scale. Returns the JAX outputs."""
    actual, expected = run_both(path, feeds)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape, (a.shape, e.shape)
        assert a.dtype == e.dtype, (a.dtype, e.dtype)
        if a.dtype.kind == "f":
            scale = max(float(np.max(np.abs(e))), 1e-30)
            assert float(np.max(np.abs(a - e))) <= 1e-6 * scale
        elif exact:
            np.testing.assert_array_equal(a, e)
        else:
            share, worst = lsb_report(a, e)
            assert share >= LSB_SHARE and worst <= LSB_MAX, f"{share:.4%} within 1 LSB, worst {worst} LSB"
    return actual
