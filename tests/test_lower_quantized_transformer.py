"""Quantized BATCH_MATMUL, SQUARED_DIFFERENCE, RSQRT and GELU (int8 and int16) (what ai-edge-quantizer leaves in
transformers) against LiteRT's builtin kernels, bit for bit."""
import numpy as np
import pytest

from quantized import QIn, random_q
from test_lower_quantized_elementwise import all_values, check, lowering_error


@pytest.mark.parametrize("dtype,zps,version", [(np.int8, (-5, 9, 3), 4), (np.int16, (0, 0, 0), 4)],
                         ids=["int8", "int16"])
@pytest.mark.parametrize("adjoint", [False, True])
def test_batch_matmul(save_model, dtype, zps, version, adjoint):
    rng = np.random.default_rng(0)
    a = random_q(rng, (1, 2, 7, 12), dtype)
    b = random_q(rng, (1, 2, 5, 12) if adjoint else (1, 2, 12, 5), dtype)
    check(save_model, "BATCH_MATMUL", [QIn(a, 0.05, zps[0]), QIn(b, 0.03, zps[1])], {"adjointRhs": adjoint},
          out_dtype=dtype, out_scale=0.4 if dtype == np.int8 else 0.004, out_zero_point=zps[2], version=version)


@pytest.mark.parametrize("scales", [(0.05, 0.05, 0.01), (0.02, 0.07, 0.2), (0.1, 0.01, 0.5)])
def test_squared_difference_int8(save_model, scales):
    rng = np.random.default_rng(1)
    x = random_q(rng, (1, 6, 10))
    mean = random_q(rng, (1, 6, 1))  # broadcast, as a LayerNorm's x - mean
    check(save_model, "SQUARED_DIFFERENCE", [QIn(x, scales[0], -4), QIn(mean, scales[1], 6)],
          out_dtype=np.int8, out_scale=scales[2], out_zero_point=-128, version=2)


@pytest.mark.parametrize("scales,zps", [((0.01, 0.05), (-128, -128)), ((0.002, 0.3), (-100, -128)),
                                        ((0.5, 0.02), (-128, 5))])
def test_rsqrt_int8_every_input(save_model, scales, zps):
    x = all_values(np.int8)
    x = x[x >= zps[0]].reshape(1, -1)  # LiteRT refuses inputs below the zero point
    check(save_model, "RSQRT", [QIn(x, scales[0], zps[0])], out_dtype=np.int8, out_scale=scales[1],
          out_zero_point=zps[1], version=2)


@pytest.mark.parametrize("scales", [(1e-4, 1e-3), (3e-3, 4e-4)])
def test_rsqrt_int16_every_input(save_model, scales):
    x = all_values(np.int16).reshape(1, -1)
    x = x[x >= 0].reshape(1, -1)
    check(save_model, "RSQRT", [QIn(x, scales[0])], out_dtype=np.int16, out_scale=scales[1], version=3)


@pytest.mark.parametrize("approximate", [False, True])
@pytest.mark.parametrize("scales,zps", [((0.05, 0.03), (-3, -100)), ((0.02, 0.01), (10, -128))])
def test_gelu_int8_every_input(save_model, approximate, scales, zps):
    x = all_values(np.int8).reshape(1, -1)
    check(save_model, "GELU", [QIn(x, scales[0], zps[0])], {"approximate": approximate}, out_dtype=np.int8,
          out_scale=scales[1], out_zero_point=zps[1], version=2)


@pytest.mark.parametrize("approximate", [False, True])
@pytest.mark.parametrize("scales", [(0.01, 0.01), (3e-4, 2e-4), (8.645365596748888e-05, 7.781729073030874e-05),
                                    (8.585811156081036e-05, 7.601213292218745e-05),
                                    (7.409772661048919e-05, 6.994002615101635e-05),
                                    (0.00015315139899030328, 7.711876241955906e-05)])
def test_gelu_int16_every_input(save_model, approximate, scales):
    """Pairs 3-5 are ViTs' (ai-edge-quantizer 16x8): there the erf form of the table, and an
    output range not rounded end by end as the kernel rounds it, were each one step off LiteRT
    at an entry. The last pair is one where the correctly rounded erfc gives a table entry
    one step off the C library's erfcf, which LiteRT calls."""
    x = all_values(np.int16).reshape(1, -1)
    check(save_model, "GELU", [QIn(x, scales[0])], {"approximate": approximate}, out_dtype=np.int16,
          out_scale=scales[1], version=2)


def test_int16_squared_difference_is_refused(save_model):
    x = np.zeros((1, 4), np.int16)
    assert "SQUARED_DIFFERENCE is not supported" in lowering_error(
        save_model, "SQUARED_DIFFERENCE", [QIn(x, 0.01), QIn(x, 0.01)], out_dtype=np.int16, out_scale=0.01)
