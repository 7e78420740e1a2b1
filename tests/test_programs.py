"""Compiled programs are shared only between identical programs (jaxfuse.programs,
segmented.structure_key): repeated blocks reuse one executable, and two blocks that differ
in an option or a quantization parameter never do (a wrong hit would be a wrong answer)."""
import copy
import re
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxfuse
from jaxfuse import programs, segmented
from jaxfuse.builder import ModelBuilder
from jaxfuse.equivalence import check_region
from jaxfuse.ir import Graph, Op
from jaxfuse.lowering import RULES, lower_graph
from jaxfuse.numerics import random_inputs
from quantized import QConst, QIn, quantized_op, random_q

LOWERING = Path(jaxfuse.__file__).parent / "lowering"


def residual_chain(activations, seed=0, channels=3):
    """x -> [CONV(act) -> ADD(+x)] per entry of `activations` (fused activation codes)."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.input("x", [1, 5, 5, channels])
    for i, act in enumerate(activations):
        w = b.const(f"w{i}", rng.standard_normal((channels, 3, 3, channels)).astype(np.float32))
        h = b.op("CONV_2D", [x, w, b.const(f"b{i}", rng.standard_normal(channels).astype(np.float32))],
                 {"fusedActivationFunction": act}, name=f"conv{i}")
        x = b.op("ADD", [h, x], name=f"add{i}")
    b.output(x)
    return b.build()


def whole_graph_values(graph, sample):
    fn, params = lower_graph(graph, all_tensors=True)
    return {k: np.asarray(v) for k, v in jax.jit(fn)(params, *sample).items()}


def segment_values(graph, sample, max_ops):
    run = segmented.SegmentedRun(graph, max_ops=max_ops)
    values = {}
    for part in run.run([x[None] for x in sample]):
        values.update({k: np.asarray(v)[0] for k, v in part.items()})
    return run, values


def test_repeated_blocks_share_one_program_and_keep_their_own_weights():
    graph = residual_chain([1, 1, 1, 1, 1]).main
    sample = random_inputs(graph, 1, seed=2)[0]
    before = programs.STATS.to_dict()
    run, values = segment_values(graph, sample, max_ops=2)
    counts = programs.STATS.since(before)
    assert len(run.segments) == 5 and all(len(s.ops) == 2 for s in run.segments)
    # one block traced, three found by structure; the last block hands nothing on, so it differs
    assert counts["reused_unlowered"] >= 3 and counts["lowered"] <= 2
    expected = whole_graph_values(graph, sample)
    for key, value in expected.items():
        np.testing.assert_allclose(values[key], value, rtol=1e-5, atol=1e-5, err_msg=key)


def test_blocks_differing_in_an_option_do_not_share():
    graph = residual_chain([1, 3, 1, 1]).main  # the second block's conv has RELU6, the others RELU
    segments = segmented.plan_segments(graph, max_ops=2)
    keys = [segmented.structure_key(s.ops, s.inputs, [t for op in s.ops for t in op.outputs], ("t",))[0]
            for s in segments]
    assert keys[0] == keys[2] == keys[3] and keys[1] != keys[0]
    sample = [np.full((1, 5, 5, 3), 2.0, np.float32)]  # large values: RELU6 clips, RELU does not
    _, values = segment_values(graph, sample, max_ops=2)
    expected = whole_graph_values(graph, sample)
    assert expected["conv1"].max() == 6.0 and expected["conv0"].max() > 6.0
    for key, value in expected.items():
        np.testing.assert_allclose(values[key], value, rtol=1e-5, atol=1e-5, err_msg=key)


def quantized_add(out_scale, constant):
    rng = np.random.default_rng(0)
    return quantized_op("ADD", [QIn(random_q(rng, (1, 4, 4, 3)), 0.05, 2), QConst(constant, 0.04, -1)],
                        out_scale=out_scale, out_zero_point=3, version=2)


@pytest.mark.parametrize("change", ["scale", "weights"])
def test_quantized_ops_differing_in_a_scale_or_a_weight_value_do_not_share(change):
    """Quantized rules compute multipliers from the scales and read constants while tracing:
    both are part of the program, so each model gets its own."""
    rng = np.random.default_rng(1)
    constant = random_q(rng, (1, 1, 1, 3))
    first, feeds = quantized_add(0.1, constant)
    other = constant.copy()
    other[0, 0, 0, 0] ^= 1
    second, _ = quantized_add(0.1 if change == "weights" else 0.0625, constant if change == "scale" else other)
    keys = []
    for model in (first, second):
        g = model.main
        keys.append(segmented.structure_key(g.ops, g.inputs, g.outputs, ("t",))[0])
        before = programs.STATS.to_dict()
        _, values = segment_values(g, feeds, max_ops=16)
        if model is second:  # (the first may be known from the other case of this test)
            assert programs.STATS.since(before)["reused_unlowered"] == 0
        out = g.outputs[0].name
        np.testing.assert_array_equal(values[out], whole_graph_values(g, feeds)[out])
    assert keys[0] != keys[1]


def test_float_weights_are_arguments_not_part_of_the_key():
    a, b = residual_chain([1], seed=0).main, residual_chain([1], seed=5).main
    key = [segmented.structure_key(g.ops, g.inputs, g.outputs, ())[0] for g in (a, b)]
    assert key[0] == key[1]


def test_float_rules_never_read_constant_values_while_tracing():
    """structure_key leaves float constants' values out because float rules receive them as
    traced parameters; a float rule reading Tensor.data would make that unsound unless it is
    registered with reads_constant_values (then its inputs' values are in the key)."""
    import inspect

    from jaxfuse.lowering.core import READS_CONSTANT_VALUES
    float_rules = [rule for (op, family), rule in RULES.items() if family == "float"]
    assert float_rules
    for rule in float_rules:
        if rule not in READS_CONSTANT_VALUES:
            assert not re.search(r"\.data\b", inspect.getsource(rule)), f"{rule.__qualname__} reads a constant's .data"


def test_a_rule_reading_float_constants_has_them_in_the_key():
    """RANGE's float start/limit/delta fix its output's length: two RANGEs that differ only in
    them are different programs."""

    def ranged(limit):
        b = ModelBuilder()
        x = b.input("x", [1])
        r = b.op("RANGE", [b.const("start", np.array(0.0, np.float32)), b.const("limit", np.array(limit, np.float32)),
                           b.const("delta", np.array(1.0, np.float32))])
        b.output(b.op("ADD", [b.op("SUM", [r, b.const("axis", np.array([0], np.int32))]), x]))
        r.shape, r.shape_signature = (3,), (-1,)  # a dynamic length, stored alike in both
        return b.build().main
    a, b = ranged(3.0), ranged(4.0)
    keys = [segmented.structure_key(g.ops, g.inputs, g.outputs, ())[0] for g in (a, b)]
    assert keys[0] != keys[1]


def test_region_checks_of_repeated_regions_reuse_the_program_with_their_own_values():
    """Two regions of the same structure (a conv whose filter a rewrite scaled), each with
    its own weights and its own error: the second reuses the first's program, found by
    structure, and still measures its own error."""
    rng = np.random.default_rng(3)

    def region(scale):
        b = ModelBuilder()
        x = b.input("x", [1, 4, 4, 2])
        w = rng.standard_normal((2, 1, 1, 2)).astype(np.float32)
        b.output(b.op("CONV_2D", [x, b.const("w", w), b.const("b", np.zeros(2, np.float32))], name="y"))
        g = b.build().main
        conv = g.ops[0]
        scaled = copy.copy(conv.inputs[1]).set_data(w * np.float32(scale))
        after = Op(conv.opcode, [conv.inputs[0], scaled, conv.inputs[2]], list(conv.outputs), conv.options_type,
                   dict(conv.options))
        return (Graph(list(g.tensors), [conv]), Graph([*g.tensors, scaled], [after]), g.inputs, g.outputs)

    errors = []
    before_counts = programs.STATS.to_dict()
    for scale in (1.0 + 1e-3, 1.0 + 1e-2):
        before, after, frontier, observed = region(scale)
        sample = [rng.standard_normal((1, 4, 4, 2)).astype(np.float32)]
        errors.append(check_region(before, after, frontier, observed, [sample, sample]))
    assert programs.STATS.since(before_counts)["reused_unlowered"] >= 1
    assert errors[0] == pytest.approx(1e-3, rel=1e-2) and errors[1] == pytest.approx(1e-2, rel=1e-2)


def test_program_cache_shares_executables_between_equal_programs_only():
    cache = programs.ProgramCache()
    x = np.ones((2, 3), np.float32)
    first = cache.compile(lambda w, x: x @ w, np.ones((3, 3), np.float32), x)
    again = cache.compile(lambda w, x: x @ w, np.full((3, 3), 2.0, np.float32), x)  # other weights: same program
    other = cache.compile(lambda w, x: x @ w + 1, np.ones((3, 3), np.float32), x)
    assert first is again and other is not first and len(cache) == 2
    np.testing.assert_allclose(np.asarray(again(np.full((3, 3), 2.0, np.float32), x)), np.full((2, 3), 6.0))


def test_a_compile_option_this_jaxlib_lacks_is_left_out(monkeypatch):
    monkeypatch.setattr(programs, "CHECK_COMPILER_OPTIONS",
                        {**programs.CHECK_COMPILER_OPTIONS, "xla_jaxfuse_no_such_option": True})
    compiled = programs.ProgramCache().compile(lambda x: x * 3, np.ones(4, np.float32))
    np.testing.assert_array_equal(np.asarray(compiled(np.ones(4, np.float32))), np.full(4, 3.0))
    assert "xla_jaxfuse_no_such_option" in programs._UNSUPPORTED_OPTIONS


def test_optimize_reports_its_compilations():
    model = jaxfuse.load(Path(__file__).parent.parent / "examples" / "models" / "resnet50v2_tiny.tflite")
    programs.PROGRAMS.clear()  # an earlier test in this process may have compiled every program already
    _, report = jaxfuse.optimize(model)
    c = report.compilation
    assert c["compiled"] > 0 and c["compile_seconds"] > 0 and c["lowered"] > 0
    assert c["reused"] + c["reused_unlowered"] > 0  # the whole-model check reruns the reference's programs
    assert "XLA programs:" in report.format_text()


def test_float64_products_use_ynnpack_for_single_ops_only():
    """A quantized model's exact integer products are float64 convolutions, which XLA CPU runs
    fast only through YNNPACK: their programs hand single convolutions and dots to it, never
    its fusions of neighbouring ops (jaxfuse.xla); other programs have it off."""
    import jax
    import jax.numpy as jnp

    from jaxfuse.lowering import fixed_point as fp
    from jaxfuse.programs import CHECK_COMPILER_OPTIONS, effective_options

    def conv(a, b):
        return jax.lax.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "OHWI", "NHWC"))

    def exact(x, w):
        with fp.x64():
            return fp.exact_integer_product(conv, x, w, 2.0 ** 40).astype(jnp.int32)

    x, w = jax.ShapeDtypeStruct((1, 4, 4, 2), jnp.int32), jax.ShapeDtypeStruct((3, 1, 1, 2), jnp.int32)
    quantized = jax.jit(exact).lower(x, w).as_text()
    floating = jax.jit(conv).lower(jax.ShapeDtypeStruct((1, 4, 4, 2), jnp.float32),
                                   jax.ShapeDtypeStruct((3, 1, 1, 2), jnp.float32)).as_text()
    key = "xla_cpu_experimental_ynn_fusion_type"
    assert key in CHECK_COMPILER_OPTIONS
    assert effective_options(quantized, CHECK_COMPILER_OPTIONS)[key] == \
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
    assert CHECK_COMPILER_OPTIONS[key] == ""
    assert effective_options(floating, CHECK_COMPILER_OPTIONS) == CHECK_COMPILER_OPTIONS
