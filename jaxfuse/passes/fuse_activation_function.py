"""fuse_activation_function: a standalone activation op becomes its producer's fused activation.

BEFORE   x -> P (fused NONE) -> t -> RELU -> out        (t read by nothing else)
AFTER    x -> P (fused RELU) -> out

Exact when P applies its fused activation to exactly the value it would have written to
t, which holds for every op type listed in FUSABLE_PRODUCERS. Activations compose as
NONE∘a = a, a∘a = a (for the clamps), RELU6∘RELU = RELU∘RELU6 = RELU6; other pairs are refused.
Not fused (checked against LiteRT, tests/test_passes_post.py):
- TANH: LiteRT's kernels ignore a fused TANH on every op that has the field (its
  FULLY_CONNECTED rejects it), so no producer can take it.
- into CONCATENATION: LiteRT rejects a fused activation there (onert ignores it).
"""
from __future__ import annotations

from ..ir import Graph
from .base import Pass, Refusal, Rewrite, register_pass
from .common import ACT_NONE, ACT_RELU, ACT_RELU6, ACT_RELU_N1_TO_1, ACT_TANH, activation, sole_reader

ACTIVATION_OPS = {"RELU": ACT_RELU, "RELU6": ACT_RELU6, "RELU_N1_TO_1": ACT_RELU_N1_TO_1, "TANH": ACT_TANH}
FUSABLE_PRODUCERS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "ADD", "SUB", "MUL", "DIV",
                     "MAX_POOL_2D", "AVERAGE_POOL_2D"}
UNFUSABLE_ACTIVATIONS = {"TANH": "LiteRT kernels ignore a fused TANH"}
UNFUSABLE_PRODUCERS = {"CONCATENATION": "LiteRT rejects a fused activation on CONCATENATION"}


def compose(inner: int, outer: int) -> int | None:
    """The single fused activation equal to outer(inner(x)), or None."""
    if inner == ACT_NONE or (inner == outer and outer != ACT_TANH):  # tanh(tanh(x)) != tanh(x)
        return outer
    if {inner, outer} == {ACT_RELU, ACT_RELU6}:
        return ACT_RELU6
    return None


@register_pass
class FuseActivationFunction(Pass):
    name = "fuse_activation_function"

    def propose(self, graph: Graph):
        producers = graph.producers()
        uses = graph.consumer_map()
        for act_op in list(graph.ops):
            if act_op.type not in ACTIVATION_OPS or len(act_op.inputs) != 1:
                continue
            t = act_op.inputs[0]
            producer = producers.get(id(t))
            where = act_op.outputs[0].name
            if producer is None:
                continue
            if producer.type in UNFUSABLE_PRODUCERS:
                yield Refusal(where, UNFUSABLE_PRODUCERS[producer.type])
                continue
            if producer.type not in FUSABLE_PRODUCERS or "fusedActivationFunction" not in producer.options:
                yield Refusal(where, f"{producer.type} has no fused activation")
                continue
            if act_op.type in UNFUSABLE_ACTIVATIONS:
                yield Refusal(where, UNFUSABLE_ACTIVATIONS[act_op.type])
                continue
            if sole_reader(graph, t, uses) is not act_op or len(producer.outputs) != 1:
                yield Refusal(where, f"the {producer.type} output has another reader")
                continue
            if t.is_quantized or act_op.outputs[0].is_quantized:
                yield Refusal(where, "a tensor is quantized")
                continue
            fused = compose(activation(producer), ACTIVATION_OPS[act_op.type])
            if fused is None:
                yield Refusal(where, f"{producer.type}'s fused activation and {act_op.type} do not compose into one")
                continue

            def apply(p=producer, a=act_op, f=fused):
                p.outputs = [a.outputs[0]]
                p.options = {**p.options, "fusedActivationFunction": f}
                graph.remove_op(a)

            yield Rewrite(key=(id(producer), id(act_op)), where=where, region=[producer, act_op], apply=apply,
                          summary=f"{act_op.type} fused into {producer.type}")
