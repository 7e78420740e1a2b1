"""Quantized QUANTIZE / DEQUANTIZE, data-movement and resize rules against LiteRT's builtin kernels."""
import numpy as np
import pytest

import jaxfuse
from jaxfuse.builder import ModelBuilder
from jaxfuse.lowering import LoweringError, lower
from quantized import QConst, QIn, assert_matches_litert, quantized_op, random_q
from reference import run_litert
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


@pytest.mark.parametrize("src,dst", [((np.int8, 0.05, 3), (np.int8, 0.2, -1)),  # ratio 1/4: ties
                                     ((np.uint8, 0.05, 131), (np.int8, 0.2, -1)),
                                     ((np.int8, 0.05, 3), (np.uint8, 0.4, 120)),
                                     ((np.uint8, 0.05, 131), (np.uint8, 0.2, 128)),
                                     ((np.int16, 0.001, 0), (np.int16, 0.004, 0)),
                                     ((np.int8, 0.05, -7), (np.int8, 0.031, 3)),
                                     ((np.int8, 0.05, -7), (np.uint8, 0.05, 121)),
                                     ((np.uint8, 0.02, 128), (np.int8, 0.07, -1)),
                                     ((np.int16, 0.001, 0), (np.int16, 0.0007, 0))])
def test_requantize(save_model, rng, src, dst):
    dtype, scale, zero_point = src
    # 3 x 43 values: LiteRT's 8-bit loop takes blocks of 16 through its vector code, the rest scalar
    model, feeds = quantized_op("QUANTIZE", [QIn(random_q(rng, (3, 43), dtype), scale, zero_point)],
                                out_dtype=dst[0], out_scale=dst[1], out_zero_point=dst[2])
    assert_matches_litert(save_model(model), feeds, exact=True)


# -- data movement ------------------------------------------------------------------------

QUANTIZED_TYPES = [(np.int8, 0.05, -3), (np.uint8, 0.031, 131), (np.int16, 0.001, 0)]


def with_edges(value):
    """value with its type's extremes and zero in the first elements."""
    info = np.iinfo(value.dtype)
    flat = value.reshape(-1)
    flat[:3] = [info.min, info.max, 0]
    return value


def refused_by_both(save_model, model, feeds, match):
    """LiteRT refuses the model and lowering raises a LoweringError matching `match`."""
    path = save_model(model)
    with pytest.raises(RuntimeError):
        run_litert(path, feeds)
    fn, params = lower(jaxfuse.load(path))
    with pytest.raises(LoweringError, match=match):
        fn(params, *feeds)


@pytest.mark.parametrize("dtype,scale,zero_point", QUANTIZED_TYPES)
@pytest.mark.parametrize("paddings", [[[0, 0], [1, 2], [0, 3], [0, 0]],   # LiteRT's image-style kernel
                                      [[1, 0], [2, 1], [0, 0], [1, 1]]])  # its generic kernel
def test_pad(save_model, rng, dtype, scale, zero_point, paddings):
    x = QIn(with_edges(random_q(rng, (2, 3, 4, 2), dtype)), scale, zero_point)
    model, feeds = quantized_op("PAD", [x, np.array(paddings, np.int32)], out_dtype=dtype, out_scale=scale,
                                out_zero_point=zero_point)
    assert_matches_litert(save_model(model), feeds, exact=True)


def test_pad_reinterprets_when_output_quantization_differs(save_model, rng):
    """LiteRT pads with the output zero point and copies the integers without rescaling."""
    x = QIn(random_q(rng, (1, 3, 4), np.uint8), 0.02, 100)
    model, feeds = quantized_op("PAD", [x, np.array([[0, 0], [1, 1], [2, 0]], np.int32)], out_dtype=np.uint8,
                                out_scale=0.05, out_zero_point=7)
    (y,) = assert_matches_litert(save_model(model), feeds, exact=True)
    assert y[0, 0, 0] == 7


@pytest.mark.parametrize("dtype,scale,zero_point", QUANTIZED_TYPES)
def test_padv2(save_model, rng, dtype, scale, zero_point):
    x = QIn(with_edges(random_q(rng, (1, 3, 4, 2), dtype)), scale, zero_point)
    value = QConst(np.array([np.iinfo(dtype).max - 5], dtype), scale, zero_point)
    model, feeds = quantized_op("PADV2", [x, np.array([[0, 1], [1, 2], [0, 3], [2, 0]], np.int32), value],
                                out_dtype=dtype, out_scale=scale, out_zero_point=zero_point)
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("value_quant", [(0.1, 0), (0.05, 4)])
def test_padv2_refuses_a_pad_value_quantized_unlike_the_output(save_model, rng, value_quant):
    x = QIn(random_q(rng, (1, 3, 4)), 0.05, 0)
    model, feeds = quantized_op("PADV2", [x, np.array([[0, 0], [1, 1], [0, 0]], np.int32),
                                          QConst(np.array([3], np.int8), *value_quant)],
                                out_scale=0.05, output_shape=(1, 5, 4))
    refused_by_both(save_model, model, feeds, r"op 0 \(PADV2.*pad value \(input 2\) is quantized with scale .* "
                                              "LiteRT requires them equal")


@pytest.mark.parametrize("dtype,scale,zero_point", QUANTIZED_TYPES)
@pytest.mark.parametrize("axis", [1, -1])
def test_concatenation(save_model, rng, dtype, scale, zero_point, axis):
    a = QIn(with_edges(random_q(rng, (2, 3, 4), dtype)), scale, zero_point)
    b = QIn(random_q(rng, (2, 3, 4), dtype), scale, zero_point)
    c = QConst(random_q(rng, (2, 3, 4), dtype), scale, zero_point)
    model, feeds = quantized_op("CONCATENATION", [a, b, c], {"axis": axis}, out_dtype=dtype, out_scale=scale,
                                out_zero_point=zero_point)
    assert_matches_litert(save_model(model), feeds, exact=True)


def test_concatenation_requantizes_uint8(save_model, rng):
    """uint8 inputs quantized unlike the output go through LiteRT's float32 rescaling,
    a constant among them too; scale ratios 0.25 and 0.5 make exact halves (rounded away from zero)."""
    a = QIn(with_edges(random_q(rng, (3, 256), np.uint8)), 0.02, 128)
    a.value[0] = np.arange(256)
    b = QIn(np.arange(256, dtype=np.uint8)[None].repeat(2, 0), 0.01, 3)
    c = QConst(random_q(rng, (1, 256), np.uint8), 0.0137, 250)
    d = QIn(random_q(rng, (2, 256), np.uint8), 0.04, 131)  # quantized as the output: copied
    model, feeds = quantized_op("CONCATENATION", [a, b, c, d], {"axis": 0}, out_dtype=np.uint8, out_scale=0.04,
                                out_zero_point=131)
    assert_matches_litert(save_model(model), feeds, exact=True)


def test_concatenation_int16_copies_inputs_of_other_scales(save_model, rng):
    """LiteRT's int16 kernel only requires zero points 0 and copies the integers."""
    a = QIn(random_q(rng, (2, 5), np.int16), 0.001)
    b = QIn(random_q(rng, (2, 3), np.int16), 0.004)
    model, feeds = quantized_op("CONCATENATION", [a, b], {"axis": 1}, out_dtype=np.int16, out_scale=0.002)
    (y,) = assert_matches_litert(save_model(model), feeds, exact=True)
    np.testing.assert_array_equal(y, np.concatenate(feeds, axis=1))


@pytest.mark.parametrize("dtype,second,out_zero_point,match", [
    (np.int8, (0.1, 0), 0, "int8 input 1 is quantized with scale 0.1, zero point 0 but the output with scale 0.05"),
    (np.int8, (0.05, 2), 0, "int8 input 1 is quantized with scale 0.05, zero point 2"),
    (np.int16, (0.05, 2), 0, "int16 input 1 has zero point 2; LiteRT requires 0"),
    (np.int16, (0.05, 0), 4, "int16 the output has zero point 4; LiteRT requires 0"),
])
def test_concatenation_refusals(save_model, rng, dtype, second, out_zero_point, match):
    a = QIn(random_q(rng, (2, 3), dtype), 0.05, 0)
    b = QIn(random_q(rng, (2, 3), dtype), *second)
    model, feeds = quantized_op("CONCATENATION", [a, b], {"axis": 1}, out_dtype=dtype, out_scale=0.05,
                                out_zero_point=out_zero_point, output_shape=(2, 6))
    refused_by_both(save_model, model, feeds, r"op 0 \(CONCATENATION.*" + match)


def test_concatenation_refuses_a_fused_activation(save_model, rng):
    a = QIn(random_q(rng, (2, 3)), 0.05, 0)
    model, feeds = quantized_op("CONCATENATION", [a, a], {"axis": 0, "fusedActivationFunction": 1}, out_scale=0.05,
                                output_shape=(4, 3))
    refused_by_both(save_model, model, feeds, r"op 0 \(CONCATENATION.*fused activation RELU")


@pytest.mark.parametrize("dtype,scale,zero_point", QUANTIZED_TYPES)
@pytest.mark.parametrize("op_type,extra,options", [
    ("RESHAPE", [np.array([4, -1], np.int32)], None),
    ("RESHAPE", [], {"newShape": [2, 12]}),
    ("SQUEEZE", [], {"squeezeDims": [-2]}),
    ("TRANSPOSE", [np.array([2, 0, 1, 3], np.int32)], None),
])
def test_data_movement(save_model, rng, dtype, scale, zero_point, op_type, extra, options):
    x = QIn(with_edges(random_q(rng, (2, 3, 1, 4), dtype)), scale, zero_point)
    model, feeds = quantized_op(op_type, [x, *extra], options, out_dtype=dtype, out_scale=scale,
                                out_zero_point=zero_point,
                                options_type="ReshapeOptions" if op_type == "RESHAPE" and options else None)
    assert_matches_litert(save_model(model), feeds, exact=True)


def test_transpose_reinterprets_when_output_quantization_differs(save_model, rng):
    """LiteRT moves the integers whatever the output's scale and zero point are."""
    x = QIn(random_q(rng, (2, 3, 4)), 0.05, -3)
    model, feeds = quantized_op("TRANSPOSE", [x, np.array([1, 2, 0], np.int32)], out_scale=0.5, out_zero_point=9)
    (y,) = assert_matches_litert(save_model(model), feeds, exact=True)
    np.testing.assert_array_equal(y, np.transpose(feeds[0], (1, 2, 0)))


def test_data_movement_refuses_a_type_change(save_model, rng):
    x = QIn(random_q(rng, (2, 3)), 0.05, 0)
    model, feeds = quantized_op("RESHAPE", [x, np.array([3, 2], np.int32)], out_dtype=np.uint8, out_scale=0.05,
                                out_zero_point=128, output_shape=(3, 2))
    fn, params = lower(model)
    with pytest.raises(LoweringError, match=r"op 0 \(RESHAPE.*input type int8 differs from output type uint8"):
        fn(params, *feeds)


RESIZE_MODES = [(False, False), (True, False), (False, True)]


@pytest.mark.parametrize("dtype,scale,zero_point", QUANTIZED_TYPES)
@pytest.mark.parametrize("size", [(8, 10), (3, 2), (7, 5), (9, 13)])
@pytest.mark.parametrize("align_corners,half_pixel", RESIZE_MODES)
@pytest.mark.parametrize("op_type", ["RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"])
def test_resize(save_model, rng, dtype, scale, zero_point, size, align_corners, half_pixel, op_type):
    x = QIn(with_edges(random_q(rng, (2, 4, 5, 3), dtype)), scale, zero_point)
    model, feeds = quantized_op(op_type, [x, np.array(size, np.int32)],
                                {"alignCorners": align_corners, "halfPixelCenters": half_pixel},
                                out_dtype=dtype, out_scale=scale, out_zero_point=zero_point)
    assert_matches_litert(save_model(model), feeds, exact=True)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16])
def test_resize_bilinear_halves(save_model, dtype):
    """2x upsampling of pixels whose sums are odd puts exact halves in every rounding (negative
    ones included for int8 / int16); uint8 with halfPixelCenters, 8x and depth 8 is LiteRT's
    separate 8.8 fixed-point kernel."""
    info = np.iinfo(dtype)
    pixels = np.array([[info.min, info.min + 1, -3, 0, 1], [info.max, info.max - 1, -4, 5, -2]])
    x = np.clip(pixels, info.min, info.max).astype(dtype)[None, :, :, None].repeat(8, axis=3)
    x[..., 1::2] = np.flip(x[..., 1::2], axis=2)
    for size, half_pixel in [((4, 10), False), ((16, 40), True)]:
        model, feeds = quantized_op("RESIZE_BILINEAR", [QIn(x, 0.1, 0), np.array(size, np.int32)],
                                    {"halfPixelCenters": half_pixel}, out_dtype=dtype, out_scale=0.1)
        assert_matches_litert(save_model(model), feeds, exact=True)


def test_resize_bilinear_refuses_align_corners_with_half_pixel_centers(save_model, rng):
    x = QIn(random_q(rng, (1, 4, 5, 3)), 0.05, 0)
    model, feeds = quantized_op("RESIZE_BILINEAR", [x, np.array([8, 10], np.int32)],
                                {"alignCorners": True, "halfPixelCenters": True}, out_scale=0.05,
                                output_shape=(1, 8, 10, 3))
    refused_by_both(save_model, model, feeds, r"op 0 \(RESIZE_BILINEAR.*alignCorners and halfPixelCenters")
