"""Quantized rules against Samsung's onert, the second implementation beside LiteRT.

onert 0.1.0's cpu backend runs part of the quantized op set: in int8, CONV_2D,
DEPTHWISE_CONV_2D, ADD, SUB, MUL, AVERAGE_POOL_2D, SOFTMAX, CONCATENATION, PAD, RESHAPE and
RESIZE_BILINEAR (not FULLY_CONNECTED, MAX_POOL_2D or MEAN); in uint8, what ONE's default
quantizer writes, all of those. Its Python API cannot feed uint8 tensors, so the uint8
models take float inputs through QUANTIZE and give float outputs through DEQUANTIZE
(exact at both ends: the inputs are multiples of the scale, the outputs are read back in
steps of it). The int8 models are fed int8 directly: onert's float -> int8 QUANTIZE
clamps negative values to zero. Where onert refuses an op the test is skipped with
onert's own words; where it runs it, jaxfuse must agree within the LSB rule: bit for bit
except uint8 RESIZE_BILINEAR and MEAN, where onert's kernels round some elements the other
way from LiteRT's (which jaxfuse matches bit for bit) and stay within 1 LSB."""
import jax
import numpy as np
import pytest

import jaxfuse
from jaxfuse.ir import Op, OpCode, Tensor
from jaxfuse.lowering import lower
from jaxfuse.schema import BUILTIN_CODES, DTYPE_TO_TENSOR_TYPE, option_defaults
from quantized import LSB_MAX, LSB_SHARE, QIn, lsb_report, quantized_op, random_q
from reference import requires_onert, run_onert_or_skip
from test_lower_quantized_nn import FAMILIES, RELU, RELU6, SAME, VALID, layer

pytestmark = requires_onert

UINT8_ZERO_POINT = 128
FLOAT32 = DTYPE_TO_TENSOR_TYPE[np.dtype(np.float32)]


def boundary_op(op_type, source, target):
    options_type = {"QUANTIZE": "QuantizeOptions", "DEQUANTIZE": "DequantizeOptions"}[op_type]
    return Op(OpCode(BUILTIN_CODES[op_type], 1), [source], [target], options_type, option_defaults(options_type))


def with_float_boundary(model, feeds):
    """The model with float inputs (QUANTIZE to each quantized input) and float outputs
    (DEQUANTIZE of each quantized output), and the feeds as the floats they stand for."""
    graph = model.main
    float_feeds, new_inputs, front = [], [], []
    for t, value in zip(graph.inputs, feeds):
        q = t.quantization
        outer = graph.add_tensor(Tensor(graph.unique_name(t.name + "_float"), t.shape, FLOAT32))
        front.append(boundary_op("QUANTIZE", outer, t))
        new_inputs.append(outer)
        float_feeds.append(((value.astype(np.float64) - float(q.zero_point[0])) * float(q.scale[0])).astype(np.float32))
    new_outputs = []
    for t in graph.outputs:
        outer = graph.add_tensor(Tensor(graph.unique_name(t.name + "_float"), t.shape, FLOAT32))
        graph.ops.append(boundary_op("DEQUANTIZE", t, outer))
        new_outputs.append(outer)
    graph.ops[:0] = front
    graph.inputs, graph.outputs = new_inputs, new_outputs
    model.signatures = []
    return model, float_feeds


def assert_matches_onert(model, feeds, tmp_path, out_scale=None):
    """JAX and onert agree within the LSB rule; float outputs are compared in steps of `out_scale`."""
    path = tmp_path / "model.circle"
    jaxfuse.save(model, path)
    theirs = run_onert_or_skip(path, feeds, "it")
    fn, params = lower(jaxfuse.load(path))
    ours = [np.asarray(y) for y in jax.jit(fn)(params, *feeds)]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        if a.dtype.kind == "f":  # a DEQUANTIZE of the quantized result: back to integer steps
            a, b = (np.round(v.astype(np.float64) / out_scale).astype(np.int64) for v in (a, b))
        assert np.unique(b).size >= min(8, b.size)  # outputs that vary
        share, worst = lsb_report(a, b)
        assert share >= LSB_SHARE and worst <= LSB_MAX, f"{share:.4%} within 1 LSB, worst {worst} LSB"


def weighted(op, dtype, rng):
    """A conv-like one-op model in the int8 (per-channel) or uint8 (per-tensor, asymmetric) family."""
    family = FAMILIES["int8" if dtype == np.int8 else "uint8"]
    if op == "CONV_2D":
        return layer(op, rng, family, (1, 9, 9, 3), (8, 3, 3, 3), 0,
                     {"padding": SAME, "strideH": 2, "strideW": 2, "fusedActivationFunction": RELU})
    if op == "DEPTHWISE_CONV_2D":
        return layer(op, rng, family, (1, 8, 8, 4), (1, 3, 3, 8), 3,
                     {"padding": VALID, "depthMultiplier": 2, "fusedActivationFunction": RELU6})
    return layer(op, rng, family, (2, 16), (5, 16), 0, {})


def unweighted(op, dtype, rng):
    """A one-op model of an elementwise, pooling or array op on `dtype` inputs."""
    zp = -3 if dtype == np.int8 else UINT8_ZERO_POINT
    a, b = random_q(rng, (1, 6, 6, 4), dtype), random_q(rng, (1, 6, 6, 4), dtype)
    same = dict(out_dtype=dtype, out_scale=0.05, out_zero_point=zp)
    if op in ("ADD", "SUB"):
        return quantized_op(op, [QIn(a, 0.05, zp), QIn(b, 0.03, zp)], {"fusedActivationFunction": RELU},
                            out_dtype=dtype, out_scale=0.07, out_zero_point=zp)
    if op == "MUL":
        return quantized_op(op, [QIn(a, 0.05, zp), QIn(b, 0.04, zp)], {}, out_dtype=dtype, out_scale=0.2,
                            out_zero_point=zp)
    if op in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return quantized_op(op, [QIn(a, 0.05, zp)], {"padding": SAME, "strideH": 2, "strideW": 2,
                                                     "filterHeight": 3, "filterWidth": 3}, **same)
    if op == "SOFTMAX":
        return quantized_op(op, [QIn(a.reshape(4, 36), 0.05, zp)], {"beta": 1.0}, out_dtype=dtype,
                            out_scale=1 / 256, out_zero_point=-128 if dtype == np.int8 else 0)
    if op == "CONCATENATION":
        return quantized_op(op, [QIn(a, 0.05, zp), QIn(b, 0.05, zp)], {"axis": 3}, **same)
    if op == "PAD":
        return quantized_op(op, [QIn(a, 0.05, zp), np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32)], {}, **same)
    if op == "RESHAPE":
        return quantized_op(op, [QIn(a, 0.05, zp), np.array([1, 36, 4], np.int32)], {}, **same)
    if op == "RESIZE_BILINEAR":
        return quantized_op(op, [QIn(a, 0.05, zp), np.array([11, 7], np.int32)], {}, **same)
    if op == "MEAN":
        return quantized_op(op, [QIn(a, 0.05, zp), np.array([1, 2], np.int32)], {"keepDims": True},
                            out_dtype=dtype, out_scale=0.03, out_zero_point=zp)
    raise ValueError(op)


WEIGHTED = ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"]
UNWEIGHTED = ["ADD", "SUB", "MUL", "AVERAGE_POOL_2D", "MAX_POOL_2D", "SOFTMAX", "CONCATENATION", "PAD",
              "RESHAPE", "RESIZE_BILINEAR", "MEAN"]


@pytest.mark.parametrize("op", WEIGHTED + UNWEIGHTED)
def test_int8_op_matches_onert(op, tmp_path, rng):
    model, feeds = (weighted if op in WEIGHTED else unweighted)(op, np.int8, rng)
    assert_matches_onert(model, feeds, tmp_path)


@pytest.mark.parametrize("op", WEIGHTED + UNWEIGHTED)
def test_uint8_op_matches_onert(op, tmp_path, rng):
    model, feeds = (weighted if op in WEIGHTED else unweighted)(op, np.uint8, rng)
    out_scale = float(model.main.outputs[0].quantization.scale[0])
    model, feeds = with_float_boundary(model, feeds)
    assert_matches_onert(model, feeds, tmp_path, out_scale)


def test_float_boundary_is_exact(tmp_path, rng):
    """The QUANTIZE/DEQUANTIZE wrapping adds nothing: JAX gives the same integers with and without it."""
    model, feeds = unweighted("ADD", np.uint8, rng)
    out = model.main.outputs[0].quantization
    fn, params = lower(model)
    direct = np.asarray(jax.jit(fn)(params, *feeds)[0]).astype(np.int64)
    wrapped, float_feeds = with_float_boundary(model, feeds)
    fn, params = lower(wrapped)
    steps = np.round(np.asarray(jax.jit(fn)(params, *float_feeds)[0]) / float(out.scale[0])).astype(np.int64)
    np.testing.assert_array_equal(steps + int(out.zero_point[0]), direct)
