"""canonicalize_scale_shift: a chain of per-channel elementwise ops becomes one MUL and one ADD.

litert-torch writes every unfolded batch norm as SUB(mean) -> MUL(rsqrt(var+eps)) ->
MUL(gamma) -> ADD(beta); the batch-norm passes match MUL -> ADD. This pass rewrites any
such chain into that form, so they can fold it.

BEFORE   x -> SUB c1 -> t1 -> MUL c2 -> t2 -> DIV c3 -> t3 -> ADD c4 (act) -> y
                (t1, t2, t3 read by nothing else)
AFTER    x -> MUL s -> t -> ADD t' (act) -> y         (y keeps its tensor)
         x -> MUL s (act) -> y  when t' == 0;   x -> ADD t' (act) -> y  when s == 1;
         x -> RELU/RELU6/RELU_N1_TO_1 -> y  when s == 1, t' == 0 and the chain ends in one;
         the readers of y read x  when s == 1, t' == 0 and there is no activation.

(s, t') = fold.compose_scale_shift(steps): starting from (1, 0), each op maps (s, t) to
x + c: (s, t + c);  x - c: (s, t - c);  c - x: (-s, c - t);  x * c: (s*c, t*c);
x / c: (s/c, t/c); computed per channel in float64 and rounded once to float32.

Valid when (each a Refusal naming the tensor and op that stops it):
 1. every op of the chain is ADD, SUB (either operand order), MUL, or DIV with the
    constant as divisor (c / x is not affine), with one activation operand, the previous
    op's output (the first op's may be anything), and one float32 constant that is
    per-channel along the last axis ([C], [1,C], [1,1,1,C]) or a single value; no tensor
    is quantized and no constant is behind a DEQUANTIZE (optimize() turns float16 ones into
    float32 constants before the passes run, passes/float16.py);
 2. every op's output has the shape of its activation operand (no broadcast to a bigger
    shape), so x*s + t' broadcasts exactly as the chain did;
 3. every intermediate tensor is read only by the next op of the chain and is not a
    graph output (so nothing else sees the values that disappear);
 4. only the last op has a fused activation; it stays on the result's last op (a
    fused TANH or SIGN_BIT, which LiteRT's kernels ignore, is refused);
 5. s and t' are finite (a DIV by a zero constant is refused);
 6. the result is shorter than the chain, or the chain is not already MUL -> ADD (a
    canonical MUL -> ADD pair and a single op are left as they are, so the manager's
    fixed point is reached);
 7. an identity chain without activation is removed only when y is not a graph output.

Under 1-4, chain(x) == act(x*s + t') in exact arithmetic. In float32 the result differs
from the chain by rounding only: each op rounded once before, two ops rounded once after.
A DIV by c becomes a multiplication by 1/c (rounded in float64, then to float32), which is
not bit-identical to a float32 division but well within the rewrite check's tolerance. A
chain that subtracts a large mean (x*s and t' nearly cancel) loses relative precision in
the composed form; the per-rewrite check, with the model's own activation statistics,
rolls such a rewrite back.
"""
from __future__ import annotations

import numpy as np

from .. import fold
from ..ir import Graph, Op, Tensor
from ..schema import ACTIVATION_NAMES, option_defaults
from .base import Pass, Refusal, Rewrite, register_pass
from .common import ACT_NONE, ACT_RELU, ACT_RELU6, ACT_RELU_N1_TO_1, activation, make_op, new_constant, \
    per_channel_constant

CHAIN_OPS = ("ADD", "SUB", "MUL", "DIV")
ACTIVATION_OPS = {ACT_RELU: "RELU", ACT_RELU6: "RELU6", ACT_RELU_N1_TO_1: "RELU_N1_TO_1"}
CANONICAL = ["MUL", "ADD"]


class _Link:
    """One candidate op: a binary ADD/SUB/MUL/DIV between an activation and a constant."""

    def __init__(self, op: Op, data: Tensor, const: Tensor, const_first: bool):
        self.op, self.data, self.const, self.const_first = op, data, const, const_first
        self.step: tuple[str, np.ndarray] | None = None   # (kind, float64 vector) when valid
        self.problem = ""                                  # why it is not a valid link

    @property
    def out(self) -> Tensor:
        return self.op.outputs[0]


def _name(op: Op) -> str:
    return f"{op.type} '{op.outputs[0].name}'"


def _dequantized(tensor: Tensor, producers: dict) -> Tensor | None:
    """The constant (float16, int8, ...) behind a DEQUANTIZE that produces `tensor`, else None."""
    op = producers.get(id(tensor))
    if op is not None and op.type == "DEQUANTIZE" and op.inputs and op.inputs[0] is not None \
            and op.inputs[0].is_constant:
        return op.inputs[0]
    return None


def _candidate(op: Op, producers: dict) -> _Link | None:
    """A _Link when `op` is a binary chain op with one constant(-like) operand, else None."""
    if op.type not in CHAIN_OPS or len(op.inputs) != 2 or len(op.outputs) != 1 or any(t is None for t in op.inputs):
        return None
    a, b = op.inputs
    const_like = [t.is_constant or _dequantized(t, producers) is not None for t in (a, b)]
    if const_like == [False, True]:
        return _Link(op, a, b, const_first=False)
    if const_like == [True, False]:
        return _Link(op, b, a, const_first=True)
    return None


def _classify(link: _Link, producers: dict) -> None:
    """Fill link.step, or link.problem with a one-line reason naming the op and tensor."""
    op, x, c = link.op, link.data, link.const
    if any(t.is_quantized for t in (x, c, link.out)):
        link.problem = f"the {_name(op)} works on quantized tensors"
        return
    if not c.is_constant:
        stored = _dequantized(c, producers)
        link.problem = (f"the {_name(op)} reads '{stored.name}', a {stored.dtype} constant behind DEQUANTIZE "
                        "(dequantized weights are not folded)")
        return
    if x.dtype != np.float32 or c.dtype != np.float32 or link.out.dtype != np.float32:
        link.problem = f"the {_name(op)} is not float32 ('{c.name}' is {c.dtype}, '{x.name}' is {x.dtype})"
        return
    if tuple(link.out.shape) != tuple(x.shape):
        link.problem = f"the {_name(op)} broadcasts '{x.name}' {list(x.shape)} to {list(link.out.shape)}"
        return
    if op.type == "DIV" and link.const_first:
        link.problem = f"the {_name(op)} divides the constant '{c.name}' by the tensor (c / x is not affine)"
        return
    value, why = per_channel_constant(c, x)
    if value is None:
        link.problem = f"{op.type} '{link.out.name}': {why}"
        return
    kind = "RSUB" if op.type == "SUB" and link.const_first else op.type
    link.step = (kind, value)


def _edge_problem(graph: Graph, prev: _Link, nxt: _Link, uses: dict) -> str:
    """'' when `nxt` can extend the chain that ends with `prev`, else why not."""
    if prev.problem:
        return prev.problem
    if nxt.problem:
        return nxt.problem
    t = prev.out
    if activation(prev.op) != ACT_NONE:
        return (f"the {prev.op.type} output '{t.name}' passes a fused "
                f"{ACTIVATION_NAMES[activation(prev.op)]} before the chain ends")
    if graph.is_graph_output(t):
        return f"the {prev.op.type} output '{t.name}' is a graph output"
    others = [op for op in uses.get(id(t), []) if op is not nxt.op]
    if others:
        return f"the {prev.op.type} output '{t.name}' has another reader ({_name(others[0])})"
    return ""


def _result_ops(scale32: np.ndarray, shift32: np.ndarray, act: int) -> list[str]:
    ops = (["MUL"] if np.any(scale32 != 1) else []) + (["ADD"] if np.any(shift32 != 0) else [])
    if not ops and act != ACT_NONE:
        ops = [ACTIVATION_OPS.get(act, "ADD")]
    return ops


@register_pass
class CanonicalizeScaleShift(Pass):
    name = "canonicalize_scale_shift"

    def propose(self, graph: Graph):
        producers = graph.producers()
        uses = graph.consumer_map()
        links: dict[int, _Link] = {}
        for op in graph.ops:
            link = _candidate(op, producers)
            if link is not None:
                _classify(link, producers)
                links[id(op)] = link

        # chains: valid links joined where the previous output feeds only the next op
        joined_to_prev: set[int] = set()
        nexts: dict[int, _Link] = {}
        refusals: list[Refusal] = []
        for link in links.values():
            prev_op = producers.get(id(link.data))
            prev = links.get(id(prev_op)) if prev_op is not None else None
            if prev is None:
                continue
            why = _edge_problem(graph, prev, link, uses)
            if not why:
                joined_to_prev.add(id(link.op))
                nexts[id(prev.op)] = link
            elif [prev.op.type, link.op.type] != CANONICAL:  # a MUL -> ADD pair needs nothing anyway
                refusals.append(Refusal(prev.out.name, why))
        yield from refusals

        for link in links.values():
            if link.problem or id(link.op) in joined_to_prev:
                continue
            chain = [link]
            while id(chain[-1].op) in nexts:
                chain.append(nexts[id(chain[-1].op)])
            yield from self._propose_chain(graph, chain, uses)

    def _propose_chain(self, graph: Graph, chain: list[_Link], uses: dict):
        last = chain[-1]
        x, y, act = chain[0].data, last.out, activation(last.op)
        types = [link.op.type for link in chain]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            scale, shift = fold.compose_scale_shift([link.step for link in chain])
            scale32, shift32 = scale.astype(np.float32), shift.astype(np.float32)
        result = _result_ops(scale32, shift32, act)
        if len(result) > len(chain) or (len(result) == len(chain) and (len(chain) == 1 or types == CANONICAL)):
            return  # already as short and as canonical as it gets (c - x alone would grow)
        where = y.name
        if act not in (ACT_NONE, *ACTIVATION_OPS):
            yield Refusal(where, f"the {_name(last.op)} has a fused {ACTIVATION_NAMES[act]}, "
                                 f"which LiteRT's kernels ignore")
            return
        if not (np.all(np.isfinite(scale32)) and np.all(np.isfinite(shift32))):
            zero = [link for link in chain if link.op.type == "DIV" and not np.all(link.step[1])]
            yield Refusal(where, f"the {_name(zero[0].op)} divides by a zero in '{zero[0].const.name}'" if zero
                          else f"the chain ending at '{y.name}' composes to a non-finite scale or shift")
            return
        region = [link.op for link in chain]
        if not result:
            if graph.is_graph_output(y):
                yield Refusal(where, f"the chain {'+'.join(types)} is the identity but its output '{y.name}' "
                                     f"is a graph output")
                return
            region += [op for op in uses.get(id(y), []) if op not in region]
        shape = self._constant_shape(chain)
        if shape == (1,):  # every constant was a single value: so are the scale and shift
            scale32, shift32 = scale32[:1], shift32[:1]
        yield Rewrite(key=tuple(id(op) for op in region), where=where, region=region,
                      apply=lambda: self._apply(graph, chain, result, scale32.reshape(shape),
                                                shift32.reshape(shape), act),
                      summary=f"{'+'.join(types)} -> {'+'.join(result) or 'nothing'}",
                      details={"chain": types, "result": result})

    @staticmethod
    def _constant_shape(chain: list[_Link]) -> tuple[int, ...]:
        """The layout of the chain's first per-channel constant ([1] when all are single values)."""
        for link in chain:
            if link.const.data.size > 1:
                return tuple(link.const.shape)
        return (1,)

    @staticmethod
    def _apply(graph: Graph, chain: list[_Link], result: list[str], scale, shift, act: int) -> None:
        first, last = chain[0], chain[-1]
        x, y = first.data, last.out
        if not result:
            graph.replace_all_uses(y, x)
        current = x
        for k, kind in enumerate(result):
            out = y if k == len(result) - 1 else graph.add_tensor(
                Tensor(graph.unique_name(y.name + "/jaxfuse_scaled"), y.shape, y.type,
                       shape_signature=y.shape_signature))
            fused = act if k == len(result) - 1 else ACT_NONE
            if kind in ("MUL", "ADD"):
                value, suffix = (scale, "/jaxfuse_scale") if kind == "MUL" else (shift, "/jaxfuse_shift")
                const = new_constant(graph, y.name + suffix, np.ascontiguousarray(value, np.float32))
                table = "MulOptions" if kind == "MUL" else "AddOptions"
                make_op(graph, kind, [current, const], [out], table,
                        {**option_defaults(table), "fusedActivationFunction": fused}, before=last.op)
            else:  # s == 1, t == 0: only the activation is left
                make_op(graph, kind, [current], [out], before=last.op)
            current = out
        for link in chain:
            graph.remove_op(link.op)
