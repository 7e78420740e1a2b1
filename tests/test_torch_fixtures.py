"""The committed PyTorch fixtures (examples/make_torch_models.py: timm ResNetV2 and a
hand-written pre-activation net, converted by litert-torch and by torch.onnx + onnx2tf).

They load, lower and match LiteRT and onert, and their graphs are exactly what the
converters write, so that a fusion pass for these patterns has a fixed target:

litert-torch  input NCHW, one TRANSPOSE(perm 0,2,3,1) first; each unfolded batch norm is
              SUB(mean) -> MUL(rsqrt(var + eps)) -> MUL(gamma) -> ADD(beta, fused RELU),
              constants [1, 1, 1, C]; the stem's max pool is PADV2(-inf) -> MAX_POOL_2D.
onnx2tf       input NHWC, no TRANSPOSE; each unfolded batch norm is MUL(scale) ->
              ADD(shift, fused RELU), constants [C]; the stem's max pool is
              PADV2(-3.4028235e38) -> MAX_POOL_2D.

No torch is needed here.
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxfuse
from jaxfuse.numerics import random_inputs
from reference import relative_error, requires_onert, run_litert, run_onert_or_skip

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODELS = EXAMPLES / "models"
TOLERANCE = 1e-4  # of the output's scale
RELU = 1  # ActivationFunctionType.RELU

#: stem -> (model, converter, negative gammas?)
FIXTURES = {
    "resnetv2_50_tiny_litert_mixed": ("resnetv2_50_tiny", "litert-torch", True),
    "resnetv2_50_tiny_litert": ("resnetv2_50_tiny", "litert-torch", False),
    "resnetv2_50_tiny_onnx2tf_mixed": ("resnetv2_50_tiny", "onnx2tf", True),
    "preact3_tiny_litert_mixed": ("preact3_tiny", "litert-torch", True),
    "preact3_tiny_onnx2tf_mixed": ("preact3_tiny", "onnx2tf", True),
}

#: Op histograms the converters write (the small models mirror the full ones' structure:
#: timm resnetv2_50 gives the same 147 / 112 ops at 224x224 and 1000 classes).
HISTOGRAMS = {
    ("resnetv2_50_tiny", "litert-torch"): {
        "TRANSPOSE": 1, "PAD": 4, "CONV_2D": 54, "PADV2": 1, "MAX_POOL_2D": 1, "SUB": 17,
        "MUL": 34, "ADD": 33, "MEAN": 1, "RESHAPE": 1},
    ("resnetv2_50_tiny", "onnx2tf"): {
        "PAD": 4, "CONV_2D": 54, "PADV2": 1, "MAX_POOL_2D": 1, "MUL": 17, "ADD": 33, "MEAN": 1,
        "RESHAPE": 1},
    ("preact3_tiny", "litert-torch"): {
        "TRANSPOSE": 1, "PAD": 3, "CONV_2D": 8, "PADV2": 1, "MAX_POOL_2D": 2, "SUB": 4, "MUL": 8,
        "ADD": 7, "MEAN": 1, "FULLY_CONNECTED": 1},
    ("preact3_tiny", "onnx2tf"): {
        "PAD": 3, "CONV_2D": 8, "PADV2": 1, "MAX_POOL_2D": 2, "MUL": 4, "ADD": 7, "MEAN": 1,
        "FULLY_CONNECTED": 1},
}

#: Batch norms the converters leave unfolded: the pre-activation ones (16 blocks + the
#: final one in resnetv2_50; 3 blocks + the final one in preact3). The others follow a
#: conv and are folded into it.
UNFOLDED_BATCH_NORMS = {"resnetv2_50_tiny": 17, "preact3_tiny": 4}

#: What the stem's max pool pads with.
MAXPOOL_PAD_VALUE = {"litert-torch": -np.inf, "onnx2tf": np.float32(-3.4028235e38)}


def path_of(stem):
    return MODELS / f"{stem}.tflite"


def sidecar(stem):
    return json.loads((MODELS / f"{stem}.json").read_text())


def jax_outputs(model, x):
    fn, params = jaxfuse.lower(model)
    return [np.asarray(y) for y in jax.jit(fn)(params, *x)]


def only_consumer(graph, tensor):
    users = graph.consumers(tensor)
    return users[0] if len(users) == 1 and not graph.is_graph_output(tensor) else None


def const_operand(op):
    """(activation input, constant) of a binary op with one constant operand, or None."""
    a, b = op.inputs[:2]
    if b is not None and b.is_constant and not a.is_constant:
        return a, b
    return None


def batch_norm_chains(graph, converter):
    """Every unfolded batch norm as the list of its ops, in graph order.

    litert-torch: SUB -> MUL -> MUL -> ADD(RELU), onnx2tf: MUL -> ADD(RELU); each with a
    per-channel constant of the converter's shape, each intermediate read only by the next.
    """
    if converter == "litert-torch":
        types = ("SUB", "MUL", "MUL", "ADD")
    else:
        types = ("MUL", "ADD")
    chains = []
    for op in graph.ops:
        if op.type != types[0]:
            continue
        chain = [op]
        while len(chain) < len(types):
            nxt = only_consumer(graph, chain[-1].outputs[0])
            if nxt is None or nxt.type != types[len(chain)]:
                break
            chain.append(nxt)
        if len(chain) != len(types) or chain[-1].options.get("fusedActivationFunction") != RELU:
            continue
        if any(c.options.get("fusedActivationFunction", 0) != 0 for c in chain[:-1]):
            continue
        if all(const_operand(c) is not None for c in chain):
            chains.append(chain)
    return chains


def constant_shape(converter, channels):
    return (1, 1, 1, channels) if converter == "litert-torch" else (channels,)


def test_fixture_set_and_sidecars():
    for stem, (model, converter, mixed) in FIXTURES.items():
        data = path_of(stem).read_bytes()
        meta = sidecar(stem)
        assert meta["generator"] == "examples/make_torch_models.py"
        assert (meta["model"], meta["converter"]) == (model, converter)
        assert meta["size_bytes"] == len(data) < 500_000
        assert meta["check"]["relative_error_vs_torch"] <= TOLERANCE
        assert (meta["batch_norm"]["negative_gamma"] > 0) == mixed
        assert meta["batch_norm"]["zero_gamma"] == 0
    assert sum(path_of(s).stat().st_size for s in FIXTURES) < 1_500_000


@pytest.mark.parametrize("stem", FIXTURES)
def test_op_histogram_is_what_the_converter_writes(stem):
    model_name, converter, _ = FIXTURES[stem]
    model = jaxfuse.load(path_of(stem))
    assert model.op_histogram() == HISTOGRAMS[(model_name, converter)]
    assert model.op_histogram() == sidecar(stem)["op_histogram"]
    assert len(model.graphs) == 1


@pytest.mark.parametrize("stem", FIXTURES)
def test_layout_and_transposes(stem):
    _, converter, _ = FIXTURES[stem]
    g = jaxfuse.load(path_of(stem)).main
    (inp,) = g.inputs
    transposes = [op for op in g.ops if op.type == "TRANSPOSE"]
    if converter == "litert-torch":
        assert tuple(inp.shape) == (1, 3, 64, 64)  # NCHW, as in torch
        (t,) = transposes
        assert t is g.ops[0] and t.inputs[0] is inp
        assert t.inputs[1].data.tolist() == [0, 2, 3, 1]
    else:
        assert tuple(inp.shape) == (1, 64, 64, 3)  # NHWC
        assert transposes == []
    assert [tuple(t.shape) for t in g.outputs] == [(1, 10)]


@pytest.mark.parametrize("stem", FIXTURES)
def test_batch_norm_patterns(stem):
    model_name, converter, mixed = FIXTURES[stem]
    g = jaxfuse.load(path_of(stem)).main
    chains = batch_norm_chains(g, converter)
    assert len(chains) == UNFOLDED_BATCH_NORMS[model_name]
    # Every SUB and every per-channel MUL / ADD of the histogram belongs to a chain but
    # the residual ADDs (two activations).
    in_chains = {id(op) for chain in chains for op in chain}
    for op in g.ops:
        if op.type in ("SUB", "MUL"):
            assert id(op) in in_chains, op
        if op.type == "ADD" and id(op) not in in_chains:
            assert not any(t.is_constant for t in op.inputs), op
    negative = 0
    for chain in chains:
        channels = chain[0].outputs[0].shape[-1]
        consts = [const_operand(op)[1] for op in chain]
        assert {tuple(c.shape) for c in consts} == {constant_shape(converter, channels)}
        if converter == "litert-torch":
            _, rsqrt, gamma, _ = (c.data for c in consts)
            assert np.all(rsqrt > 0)  # rsqrt(var + eps) with var in [0.5, 2]
            negative += int(np.sum(gamma < 0))
        else:
            negative += int(np.sum(consts[0].data < 0))  # gamma * rsqrt(var + eps)
    assert (negative > 0) == mixed


@pytest.mark.parametrize("stem", FIXTURES)
def test_stem_maxpool_is_padv2_then_valid_maxpool_then_batch_norm(stem):
    _, converter, _ = FIXTURES[stem]
    g = jaxfuse.load(path_of(stem)).main
    (padv2,) = [op for op in g.ops if op.type == "PADV2"]
    assert g.producer(padv2.inputs[0]).type == "CONV_2D"
    assert padv2.inputs[1].data.tolist() == [[0, 0], [1, 1], [1, 1], [0, 0]]
    value = padv2.inputs[2].data
    assert value.shape == () and value == MAXPOOL_PAD_VALUE[converter]
    pool = only_consumer(g, padv2.outputs[0])
    assert pool.type == "MAX_POOL_2D"
    o = pool.options
    assert (o["filterHeight"], o["filterWidth"], o["strideH"], o["strideW"], o["padding"]) == (3, 3, 2, 2, 1)
    # The first block's pre-activation batch norm reads the max pool (besides the shortcut).
    first = batch_norm_chains(g, converter)[0]
    assert first[0].inputs[0] is pool.outputs[0]


@pytest.mark.parametrize("stem", FIXTURES)
def test_jax_matches_litert(stem):
    path = path_of(stem)
    model = jaxfuse.load(path)
    for seed in (0, 1):
        x = random_inputs(model.main, 1, seed)[0]
        for ours, ref in zip(jax_outputs(model, x), run_litert(path, x)):
            assert relative_error(ours, ref) <= TOLERANCE


@requires_onert
@pytest.mark.parametrize("stem", FIXTURES)
def test_jax_matches_onert(stem):
    path = path_of(stem)
    model = jaxfuse.load(path)
    x = random_inputs(model.main, 1, 0)[0]
    reference = run_onert_or_skip(path, x, f"this model ({', '.join(sorted(model.op_histogram()))})")
    for ours, ref in zip(jax_outputs(model, x), reference):
        assert relative_error(ours, ref) <= TOLERANCE


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed here")
@pytest.mark.parametrize("script", ["make_torch_models.py", "make_models.py"])
def test_torch_route_without_torch_says_what_to_install(script):
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "preact3_tiny", "--out-dir", "/tmp/x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "pip install .[torch]" in proc.stderr and "Traceback" not in proc.stderr


def test_torch_model_list_needs_no_torch():
    proc = subprocess.run([sys.executable, str(EXAMPLES / "make_torch_models.py"), "--list"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    for stem in FIXTURES:
        assert stem in proc.stdout
