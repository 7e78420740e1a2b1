"""Quantized QUANTIZE / DEQUANTIZE and data-movement rules against LiteRT's builtin kernels."""
import numpy as np
import pytest

from jaxfuse.builder import ModelBuilder
from quantized import QConst, QIn, assert_matches_litert, quantized_op, random_q
from test_lower_ops import In


@pytest.mark.parametrize("dtype,zero_point", [(np.int8, -3), (np.uint8, 131), (np.int16, 0)])
def test_dequantize(save_model, rng, dtype, zero_point):
    model, feeds = quantized_op("DEQUANTIZE", [QIn(random_q(rng, (2, 5, 7), dtype), 0.0371, zero_point)],
                                out_dtype=np.float32)
    assert_matches_litert(save_model(model), feeds)


def test_dequantize_per_channel_constant(save_model, rng):
    w = QConst(random_q(rng, (4, 3)), [0.1, 0.02, 0.5, 1.25], 0, axis=0)
    b = ModelBuilder()
    x = b.input("x", [4, 3])
    deq = b.op("DEQUANTIZE", [b.const("w", w.value, quant=w.quant)], dtype=np.float32)
    b.output(b.op("ADD", [x, deq]))
    feeds = [rng.standard_normal((4, 3)).astype(np.float32)]
    assert_matches_litert(save_model(b.build()), feeds)


@pytest.mark.parametrize("dtype,scale,zero_point", [(np.int8, 0.05, -7), (np.uint8, 0.031, 128), (np.int16, 1e-3, 0)])
def test_quantize_from_float(save_model, rng, dtype, scale, zero_point):
    x = (rng.standard_normal((3, 50)) * 4).astype(np.float32)
    # ties (LiteRT rounds them to even) and saturation (within int32: beyond, x86 LiteRT wraps)
    x[0, :6] = [0.5 * scale, -0.5 * scale, 1.5 * scale, -2.5 * scale, 1e5, -1e5]
    model, feeds = quantized_op("QUANTIZE", [In(x)], out_dtype=dtype, out_scale=scale, out_zero_point=zero_point)
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("src,dst", [((np.int8, 0.05, -7), (np.int8, 0.031, 3)),
                                     ((np.int8, 0.05, -7), (np.uint8, 0.05, 121)),
                                     ((np.uint8, 0.02, 128), (np.int8, 0.07, -1)),
                                     ((np.int16, 0.001, 0), (np.int16, 0.0007, 0))])
def test_requantize(save_model, rng, src, dst):
    dtype, scale, zero_point = src
    model, feeds = quantized_op("QUANTIZE", [QIn(random_q(rng, (4, 64), dtype), scale, zero_point)],
                                out_dtype=dst[0], out_scale=dst[1], out_zero_point=dst[2])
    assert_matches_litert(save_model(model), feeds)
