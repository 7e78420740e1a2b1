"""Shared engine of the passes that fold a per-channel MUL and/or ADD into the weighted
op BEFORE it (fuse_batchnorm_with_*, fuse_mul_with_*, fuse_add_with_*).

BEFORE                                       AFTER
  x -> P(W, b) -> t -> MUL s -> ADD c (act)    x -> P(W', b', act) -> out
            (t read by nothing else)
  W' = W * s along P's output channels, b' = b*s + c   (fold.fold_output_affine)

Valid when: P is one of the pass's op types with no fused activation; each tensor in the
chain is read only by the next op and is not a graph output; every MUL/ADD/SUB operand
besides the chain is a float per-channel constant (shape [C], [1,C], [1,1,1,C] or a single
value) that does not broadcast the tensor to a new shape; only the last op of the chain has
a fused activation (it moves onto P); P's weights and bias are float constants (shared
ones are cloned first, a missing bias is created).
"""
from __future__ import annotations

import numpy as np

from .. import fold
from ..ir import Graph, Op
from ..schema import ACTIVATION_NAMES
from .base import Pass, Refusal, Rewrite
from .common import (ACT_NONE, ACT_SIGN_BIT, ACT_TANH, BIAS_INDEX, activation, bias64, constant_operand,
                     parameters_problem, per_channel_constant, set_constant, sole_reader)


def _affine_of(op: Op, tensor) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(scale, shift) such that op(tensor) == tensor*scale + shift, or a reason."""
    operands = constant_operand(op)
    if operands is None or op.inputs[operands[0]] is not tensor:
        return None, None, f"the {op.type}'s other operand is not a constant"
    value, why = per_channel_constant(op.inputs[operands[1]], tensor)
    if value is None:
        return None, None, why
    if tuple(op.outputs[0].shape) != tuple(tensor.shape):
        return None, None, f"the {op.type} broadcasts the tensor to a new shape"
    if op.type == "MUL":
        return value, None, ""
    if op.type == "ADD":
        return None, value, ""
    if op.type == "SUB" and operands == (0, 1):
        return None, -value, ""
    return None, None, f"{op.type} with the constant first is not a scale or shift"


def _fusable_activation(op: Op) -> str:
    if activation(op) in (ACT_TANH, ACT_SIGN_BIT):
        return f"LiteRT kernels ignore a fused {ACTIVATION_NAMES[activation(op)]} on the producer"
    return ""


class FoldIntoProducer(Pass):
    producers: tuple[str, ...] = ()
    chain: tuple[tuple[str, ...], ...] = ()   # op types allowed at each chain position

    def propose(self, graph: Graph):
        uses = graph.consumer_map()
        for producer in list(graph.ops):
            if producer.type not in self.producers:
                continue
            first = sole_reader(graph, producer.outputs[0], uses) if len(producer.outputs) == 1 else None
            readers = uses.get(id(producer.outputs[0]), [])
            if first is None:
                if any(r.type in self.chain[0] and constant_operand(r) for r in readers):
                    yield Refusal(producer.outputs[0].name, f"the {producer.type} output has another reader")
                continue
            if first.type not in self.chain[0] or constant_operand(first) is None:
                continue
            where = producer.outputs[0].name
            chain, why = self._match_chain(graph, first, uses)
            if why:
                yield Refusal(where, why)
                continue
            why = self._producer_guard(producer) or _fusable_activation(chain[-1])
            if why:
                yield Refusal(where, why)
                continue
            scale, shift, tensor = None, None, producer.outputs[0]
            for op in chain:
                s, c, why = _affine_of(op, tensor)
                if why:
                    break
                if s is not None:
                    scale = s if scale is None else scale * s
                    shift = None if shift is None else shift * s
                if c is not None:
                    shift = c if shift is None else shift + c
                tensor = op.outputs[0]
            if why:
                yield Refusal(where, why)
                continue
            if any(t.is_quantized for t in producer.inputs if t is not None):
                yield Refusal(where, "a tensor is quantized")
                continue
            yield Rewrite(key=(id(producer), id(chain[-1])), where=where, region=[producer, *chain],
                          apply=lambda p=producer, c=chain, s=scale, t=shift: self._apply(graph, p, c, s, t),
                          summary=f"{'+'.join(op.type for op in chain)} folded into {producer.type}")

    def _match_chain(self, graph: Graph, first: Op, uses) -> tuple[list[Op], str]:
        chain = [first]
        for allowed in self.chain[1:]:
            nxt = sole_reader(graph, chain[-1].outputs[0], uses)
            if nxt is None or nxt.type not in allowed:
                return [], f"the {chain[-1].type} is not followed by {'/'.join(allowed)} alone"
            chain.append(nxt)
        for op in chain[:-1]:
            if activation(op) != ACT_NONE:
                return [], f"the {op.type} has a fused activation before the end of the chain"
        return chain, ""

    @staticmethod
    def _producer_guard(producer: Op) -> str:
        if activation(producer) != ACT_NONE:
            return f"the {producer.type} has a fused activation"
        if parameters_problem(producer):
            return parameters_problem(producer)
        if "fusedActivationFunction" not in producer.options:
            return f"this {producer.type} has no fused activation field"
        return ""

    @staticmethod
    def _apply(graph: Graph, producer: Op, chain: list[Op], scale, shift) -> None:
        weights = producer.inputs[1].data.astype(np.float64)
        new_weights, new_bias = fold.fold_output_affine(producer.type, weights, bias64(producer), scale, shift)
        if scale is not None:  # a shift alone leaves the weights (and whoever shares them) as they are
            graph.private_input(producer, 1).set_data(new_weights.astype(np.float32))
        set_constant(graph, producer, BIAS_INDEX[producer.type], new_bias, producer.outputs[0].name + "/bias")
        producer.outputs = [chain[-1].outputs[0]]
        producer.options = {**producer.options, "fusedActivationFunction": activation(chain[-1])}
        for op in chain:
            graph.remove_op(op)
