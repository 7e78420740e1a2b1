"""Checks that do not need the whole model: an op without a lowering rule (a custom op at
the end of a segmentation model) stops only what depends on it. The rewrites before it are
checked with the original's activation statistics and applied, the ones after it are
checked on standard-normal samples (and the report says so), the whole-model check
compares every tensor that can be evaluated and names the outputs it could not check; an
op without outputs is refused in one line."""
import numpy as np
import pytest

import jaxfuse
from jaxfuse.builder import ModelBuilder
from jaxfuse.cli import main
from jaxfuse.equivalence import compare
from jaxfuse.ir import Graph, Op, OpCode
from jaxfuse.lowering import LoweringError
from jaxfuse.passes import optimize
from jaxfuse.schema import BUILTIN_CODES
from reference import relative_error, run_litert


def _conv_relu(b, x, rng, name, channels=4):
    w = b.const(f"{name}_w", rng.standard_normal((channels, 3, 3, x.shape[-1])).astype(np.float32))
    c = b.op("CONV_2D", [x, w, b.const(f"{name}_b", rng.standard_normal(channels).astype(np.float32))],
             {"padding": 0}, name=name)
    return b.op("RELU", [c], name=f"{name}_relu")


def _segmenter(rng, after_custom: bool = False) -> jaxfuse.Model:
    """Three conv -> RELU pairs, then a custom op (no rule, as MediaPipe's
    Convolution2DTransposeBias), optionally followed by one more conv -> RELU."""
    b = ModelBuilder()
    x = b.input("x", [1, 8, 8, 3])
    for i in range(3):
        x = _conv_relu(b, x, rng, f"conv{i}")
    y = b.op("CUSTOM", [x], output_shape=[1, 16, 16, 4], name="upsampled")
    b.graph.ops[-1].opcode = OpCode(BUILTIN_CODES["CUSTOM"], 1, "Convolution2DTransposeBias")
    if after_custom:
        y = _conv_relu(b, y, rng, "head")
    b.output(y)
    return b.build()


def _without_custom_tail(model: jaxfuse.Model) -> jaxfuse.Model:
    """The model up to the custom op's input (what LiteRT can run)."""
    model = model.copy()
    g = model.main
    custom = next(op for op in g.ops if op.type.startswith("CUSTOM"))
    g.ops = g.ops[:g.ops.index(custom)]
    g.outputs = [custom.inputs[0]]
    g.cleanup()
    return model


def test_rewrites_before_a_custom_op_are_checked_and_applied(tmp_path, rng):
    model = _segmenter(rng)
    fused, report = optimize(model)
    act = report.passes["fuse_activation_function"]
    assert act.fused == 3 and not act.rolled_back
    assert fused.op_histogram().get("RELU", 0) == 0
    assert len(report.rewrites) == 3 and all(r["error"] <= 1e-5 for r in report.rewrites)
    v = report.verification
    assert v is not None and v.ok and v.outputs == []  # the only output is the custom op's: not claimed
    assert v.compared_tensors >= 3  # the conv outputs before it were compared
    assert v.unchecked == ["output 'upsampled': op 6 (CUSTOM(Convolution2DTransposeBias)) has no lowering rule"]
    assert "NOT checked" in v.summary() and "upsampled" in v.summary()
    assert any("op 6 (CUSTOM(Convolution2DTransposeBias)) has no lowering rule" in n for n in report.notes)
    # the written model runs its checked part as the original does (LiteRT cannot run the custom op)
    x = [rng.standard_normal((1, 8, 8, 3)).astype(np.float32)]
    jaxfuse.save(_without_custom_tail(model), tmp_path / "a.tflite")
    jaxfuse.save(_without_custom_tail(fused), tmp_path / "b.tflite")
    assert relative_error(run_litert(tmp_path / "b.tflite", x)[0], run_litert(tmp_path / "a.tflite", x)[0]) < 1e-5


def test_a_rewrite_after_the_custom_op_is_checked_on_standard_normal_samples(rng):
    fused, report = optimize(_segmenter(rng, after_custom=True))
    assert report.passes["fuse_activation_function"].fused == 4
    assert any("'upsampled'" in n and "standard-normal samples only" in n for n in report.notes)
    assert report.verification.unchecked and report.verification.unchecked[0].startswith("output 'head_relu': op 6")


def test_verify_still_refuses_a_model_it_cannot_evaluate_whole(tmp_path, rng, capsys):
    path = tmp_path / "seg.tflite"
    jaxfuse.save(_segmenter(rng), path)
    assert main(["verify", str(path), str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "op 6 (CUSTOM(Convolution2DTransposeBias), output 'upsampled') has no " \
        "lowering rule" in err
    with pytest.raises(LoweringError):
        compare(_segmenter(rng), _segmenter(rng))
    assert compare(_segmenter(rng), _segmenter(rng), partial=True).unchecked


def test_an_op_without_outputs_is_refused_in_one_line(tmp_path, rng, capsys):
    """An op without outputs acts by side effect: evaluating one graph by its outputs would skip
    it, so the checks refuse it in one line (it used to end in 'segment cannot be lowered').
    CALL_ONCE into an init subgraph makes the model one that verify runs whole instead."""
    model = _without_custom_tail(_segmenter(rng))
    g = model.main
    g.ops.insert(0, Op(OpCode(BUILTIN_CODES["CUSTOM"], 1, "SideEffectOnly"), [], []))
    path = tmp_path / "side_effect.tflite"
    jaxfuse.save(model, path)
    assert main(["verify", str(path), str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "op 0 (CUSTOM(SideEffectOnly)) has no outputs (it acts by side effect)" in err
    model = _without_custom_tail(_segmenter(rng))
    model.main.ops.insert(0, Op(OpCode(BUILTIN_CODES["CALL_ONCE"], 1), [], [], "CallOnceOptions",
                                {"initSubgraphIndex": 1}))
    model.graphs.append(Graph(name="init"))
    jaxfuse.save(model, tmp_path / "init.tflite")
    assert main(["verify", str(tmp_path / "init.tflite"), str(tmp_path / "init.tflite")]) == 0
