"""fold_norm_affine: the gamma and beta of a LayerNorm or RMSNorm folded into the linear
layers that read it (pre-norm transformers), the normalization left in its cheapest form.

BEFORE (LayerNorm as the TF converter writes keras LayerNormalization: 11 ops)
  mu = MEAN(x, -1)      v = MEAN(SQUARED_DIFFERENCE(x, mu), -1)      r = RSQRT(v + eps)
  m = MUL(r, gamma)     y = ADD(MUL(x, m), ADD(MUL(NEG(mu), m), beta))
  y -> FULLY_CONNECTED W, b  (Q, K, V, MLP)   |   y -> MEAN over tokens -> FULLY_CONNECTED (head)
AFTER (7 ops, 3 of them over the whole activation instead of 6)
  mu, v, r as before    n = MUL(SUB(x, mu), r)
  n -> FULLY_CONNECTED W * gamma (input channels), b + W @ beta   |   n -> MEAN -> FULLY_CONNECTED (same)

Also matched: keras' LayerNormalization without gamma or without beta (m is the rsqrt
itself, or no ADD of beta: a norm without either becomes (x - mu) * r, 9 ops -> 7), RMSNorm (n = MUL(x, RSQRT(MEAN(SQUARE(x), -1) + eps))) and the normalized
form above, each followed by a chain of per-channel MUL / ADD / SUB constants (the scale the
TF converter leaves on keras RMSNormalization's final norm, which reaches the head through
the mean pool), or by the entangled m = MUL(r, gamma), y = MUL(xc, m) form.

Per channel c: y[.., c] = n[.., c] * gamma[c] + beta[c]; a linear op reading y as data
computes W (n * gamma + beta) = (W * gamma) n + W beta, exactly in real arithmetic for
every sign of gamma and for zero gammas (no activation stands between). A MEAN over
non-channel axes commutes with a per-channel affine, so it passes through to its readers.

Preconditions (each failing one is a Refusal, never an approximation):
 1. The statistics: MEAN over the last axis only with keep_dims, ADD of a one-element float
    constant, RSQRT; every intermediate the rewrite removes is read only inside the norm,
    gamma and beta are float per-channel constants of the normalized tensor.
 2. The affine folds only if EVERY reader of y absorbs it: FULLY_CONNECTED reading y as
    data (keep_num_dims or not, weights a float constant whose input columns repeat the
    channels), CONV_2D that sees no padding (1x1 kernel or VALID), BATCH_MATMUL with y on
    the left (not adjoint) and a float constant right-hand side (a nonzero beta needs the
    product's only reader to be an ADD of a per-channel constant, which takes W @ beta),
    possibly through MEAN over non-channel axes and RESHAPE that keeps the channel axis.
    y must not be a graph output. A residual ADD reading y (post-LN) absorbs nothing.
 3. Where the affine cannot fold, a converter's 11-op LayerNorm is still rewritten as
    n = (x - mu) * r followed by MUL(gamma) and ADD(beta) (9 ops), and the affine is
    reported as refused with the reader that keeps it.
Every rewrite is checked numerically by the pass manager (region before vs after).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import fold
from ..ir import Graph, Op, Tensor
from ..schema import DTYPE_TO_TENSOR_TYPE
from .base import Pass, Refusal, Rewrite, register_pass
from .common import (ACT_NONE, BIAS_INDEX, activation, bias64, is_float, make_op, new_constant, parameters_problem,
                     per_channel_constant, replace_value, sees_no_padding, set_constant, sole_reader)

TAIL_STEPS = {"MUL": "MUL", "ADD": "ADD", "SUB": "SUB"}


def _name(op: Op) -> str:
    return f"{op.type} '{op.outputs[0].name}'" if op.outputs else op.type


def _const_axes(op: Op) -> list[int] | None:
    axes = op.inputs[1] if len(op.inputs) > 1 else None
    if axes is None or not axes.is_constant:
        return None
    rank = len(op.inputs[0].shape)
    return sorted({int(a) % rank for a in np.ravel(axes.data)})


def _last_axis_mean(op: Op | None) -> bool:
    """MEAN over the last axis alone, keeping it (the statistic of a norm)."""
    if op is None or op.type != "MEAN" or op.inputs[0] is None:
        return False
    rank = len(op.inputs[0].shape)
    return _const_axes(op) == [rank - 1] and tuple(op.outputs[0].shape) == tuple(op.inputs[0].shape[:-1]) + (1,)


def _binary_other(op: Op, tensor: Tensor) -> Tensor | None:
    """The other input of a binary op that reads `tensor` once."""
    if len(op.inputs) != 2 or sum(t is tensor for t in op.inputs) != 1:
        return None
    return op.inputs[1] if op.inputs[0] is tensor else op.inputs[0]


@dataclass(eq=False)
class _Norm:
    """One matched norm: y == n * gamma + beta per channel, n == (x - mu) * r (or x * r)."""

    x: Tensor
    mu: Tensor | None            # None: RMSNorm
    r: Tensor
    stats: list[Op]              # MEAN(x), SQUARED_DIFFERENCE / SQUARE, MEAN, ADD(eps), RSQRT (what stays)
    removed: list[Op]            # the ops that compute y from x, mu and r and go away
    y: Tensor
    gamma: np.ndarray | None     # float64 per channel, None: 1
    beta: np.ndarray | None      # float64 per channel, None: 0
    centered: Tensor | None = None   # an existing x - mu tensor (SUB), reused
    normalized: Tensor | None = None  # an existing n tensor, reused
    entangled: bool = False      # the converter's form (a rewrite saves ops even when nothing folds)

    @property
    def kind(self) -> str:
        return "LayerNorm" if self.mu is not None else "RMSNorm"


def _stats(graph: Graph, rsqrt: Op, producers: dict) -> tuple[Tensor, Tensor | None, Tensor | None, list[Op]] | None:
    """(x, mu, x - mu tensor or None, the statistics ops) of the norm whose RSQRT is `rsqrt`."""
    add = producers.get(id(rsqrt.inputs[0]))
    if add is None or add.type != "ADD" or activation(add) != ACT_NONE or len(add.inputs) != 2:
        return None
    eps = next((t for t in add.inputs if t is not None and t.is_constant), None)
    if eps is None or not is_float(eps) or eps.data.size != 1:
        return None
    var = producers.get(id(_binary_other(add, eps)))
    if not _last_axis_mean(var):
        return None
    q = producers.get(id(var.inputs[0]))
    if q is None:
        return None
    if q.type == "SQUARED_DIFFERENCE" and len(q.inputs) == 2:
        for x, mu in (q.inputs, q.inputs[::-1]):
            mean = producers.get(id(mu))
            if _last_axis_mean(mean) and mean.inputs[0] is x:
                return x, mu, None, [mean, q, var, add, rsqrt]
        return None
    if q.type == "SQUARE" or (q.type == "MUL" and len(q.inputs) == 2 and q.inputs[0] is q.inputs[1]):
        z = q.inputs[0]
        sub = producers.get(id(z))
        if sub is not None and sub.type == "SUB" and activation(sub) == ACT_NONE and len(sub.inputs) == 2:
            mean = producers.get(id(sub.inputs[1]))
            if _last_axis_mean(mean) and mean.inputs[0] is sub.inputs[0]:
                return sub.inputs[0], sub.inputs[1], z, [mean, sub, q, var, add, rsqrt]
        return z, None, None, [q, var, add, rsqrt]
    return None


def _only_readers(graph: Graph, tensor: Tensor, uses: dict, allowed: list[Op]) -> bool:
    return not graph.is_graph_output(tensor) and all(any(op is a for a in allowed) for op in uses.get(id(tensor), []))


def _tail(graph: Graph, n: Tensor, uses: dict) -> tuple[list[Op], list[tuple[str, np.ndarray]], Tensor]:
    """The chain of per-channel MUL / ADD / SUB constants that alone reads n: (ops, steps, end)."""
    ops, steps, tensor = [], [], n
    while True:
        op = sole_reader(graph, tensor, uses)
        if op is None or op.type not in TAIL_STEPS or activation(op) != ACT_NONE:
            break
        other = _binary_other(op, tensor)
        if other is None or not other.is_constant:
            break
        value, _ = per_channel_constant(other, tensor)
        if value is None or tuple(op.outputs[0].shape) != tuple(tensor.shape):
            break
        if op.type == "SUB" and op.inputs[0] is not tensor:
            steps.append(("RSUB", value))
        else:
            steps.append((op.type, value))
        ops.append(op)
        tensor = op.outputs[0]
    return ops, steps, tensor


def _match(graph: Graph, rsqrt: Op, producers: dict, uses: dict) -> _Norm | Refusal | None:
    found = _stats(graph, rsqrt, producers)
    if found is None:
        return None
    x, mu, centered, stats = found
    if not is_float(x) or not x.shape:
        return None
    r = rsqrt.outputs[0]
    where = r.name
    readers = uses.get(id(r), [])
    # the normalized form n = MUL(xc, r) (xc: x, or x - mu), maybe followed by per-channel constants
    subs = [op for op in uses.get(id(mu), []) if op.type == "SUB" and activation(op) == ACT_NONE
            and op.inputs[0] is x and op.inputs[1] is mu] if mu is not None and centered is None else []
    centers = [centered] if centered is not None else [op.outputs[0] for op in subs] if mu is not None else [x]
    plain = [op for op in readers if op.type == "MUL" and activation(op) == ACT_NONE
             and any(_binary_other(op, r) is c for c in centers) and tuple(op.outputs[0].shape) == tuple(x.shape)]
    if plain:
        n = plain[0].outputs[0]
        centered = next((c for c in centers if _binary_other(plain[0], r) is c), None) if mu is not None else None
        stats = stats + [op for op in subs if op.outputs[0] is centered]
        tail, steps, y = _tail(graph, n, uses)
        if not tail:
            return None  # nothing to fold: already the bare normalization
        scale, shift = fold.compose_scale_shift(steps)
        channels = int(x.shape[-1])
        scale = np.broadcast_to(scale, (channels,)).astype(np.float64)
        shift = np.broadcast_to(shift, (channels,)).astype(np.float64)
        return _Norm(x, mu, r, stats, tail, y, None if np.all(scale == 1) else scale,
                     None if np.all(shift == 0) else shift, centered, n)
    # the entangled form: m = MUL(r, gamma), y = MUL(xc, m) [+ ADD(MUL(NEG(mu), m), beta)]
    scale_ops = [op for op in readers if op.type == "MUL" and activation(op) == ACT_NONE
                 and (c := _binary_other(op, r)) is not None and c.is_constant]
    if len(scale_ops) > 1:
        return None
    if scale_ops:
        scale_op = scale_ops[0]
        m = scale_op.outputs[0]
        gamma, why = per_channel_constant(_binary_other(scale_op, r), x)
        if gamma is None:
            return Refusal(where, f"the norm's scale: {why}")
    elif mu is not None and centered is None:  # no gamma (scale=False): m is the rsqrt itself
        scale_op, m, gamma = None, r, None
    else:
        return None
    xc = centered if centered is not None else x
    m_readers = uses.get(id(m), [])
    x_mul = next((op for op in m_readers if op.type == "MUL" and _binary_other(op, m) is xc), None)
    if x_mul is None or activation(x_mul) != ACT_NONE or tuple(x_mul.outputs[0].shape) != tuple(x.shape):
        return None
    removed = [op for op in (scale_op, x_mul) if op is not None]
    if mu is None or centered is not None:
        if len(m_readers) != 1 or graph.is_graph_output(m):
            return Refusal(where, f"the norm's scaled rsqrt '{m.name}' is read outside the norm")
        return _Norm(x, mu, r, stats, removed, x_mul.outputs[0], gamma, None, centered)
    # LayerNorm: y = ADD(MUL(x, m), ADD(MUL(NEG(mu), m), beta))
    neg_mul = next((op for op in m_readers if op is not x_mul and op.type == "MUL"), None)
    neg = producers.get(id(_binary_other(neg_mul, m))) if neg_mul is not None else None
    if neg is None or neg.type != "NEG" or neg.inputs[0] is not mu or activation(neg_mul) != ACT_NONE:
        return None
    shift_add = sole_reader(graph, neg_mul.outputs[0], uses)
    beta = None
    offset = neg_mul.outputs[0]
    if shift_add is not None and shift_add.type == "ADD" and activation(shift_add) == ACT_NONE:
        beta_const = _binary_other(shift_add, offset)
        if beta_const is not None and beta_const.is_constant:
            beta, why = per_channel_constant(beta_const, x)
            if beta is None:
                return Refusal(where, f"the norm's shift: {why}")
            removed.append(shift_add)
            offset = shift_add.outputs[0]
    final = next((op for op in uses.get(id(x_mul.outputs[0]), []) if op.type == "ADD"
                  and _binary_other(op, x_mul.outputs[0]) is offset and activation(op) == ACT_NONE), None)
    if final is None:
        return None
    removed += [neg, neg_mul, final]
    inner = [(neg.outputs[0], [neg_mul]), (m, [x_mul, neg_mul]), (neg_mul.outputs[0], removed),
             (x_mul.outputs[0], [final]), (offset, [final])]
    for tensor, allowed in inner:
        if not _only_readers(graph, tensor, uses, allowed):
            return Refusal(where, f"the norm's intermediate '{tensor.name}' is read outside the norm")
    return _Norm(x, mu, r, stats, removed, final.outputs[0], gamma, beta, entangled=True)


@dataclass
class _Absorbers:
    weighted: list[Op] = field(default_factory=list)     # FULLY_CONNECTED / CONV_2D / BATCH_MATMUL
    bias_adds: dict = field(default_factory=dict)          # id(BATCH_MATMUL) -> the ADD taking W @ beta
    pass_through: list[Op] = field(default_factory=list)  # MEAN / RESHAPE between


def _absorbers(graph: Graph, y: Tensor, channels: int, uses: dict, needs_shift: bool, state: _Absorbers) -> str:
    """'' when every reader of y absorbs a per-channel affine of its channels, else why not."""
    if graph.is_graph_output(y):
        return f"the norm's output '{y.name}' is a graph output"
    for op in uses.get(id(y), []):
        if op.type in ("FULLY_CONNECTED", "CONV_2D"):
            if [i for i, t in enumerate(op.inputs) if t is y] != [0]:
                return f"{_name(op)} reads the normalized tensor as something other than its data input"
            why = parameters_problem(op)
            if why:
                return why
            if op.type == "FULLY_CONNECTED" and int(op.inputs[1].shape[1]) % channels:
                return f"{_name(op)}'s input columns do not repeat the channels"
            if op.type == "CONV_2D" and not sees_no_padding(op):
                return f"{_name(op)} sees padding, where a shift would not be added"
            state.weighted.append(op)
        elif op.type == "BATCH_MATMUL":
            rhs = op.inputs[1] if len(op.inputs) == 2 else None
            if op.inputs[0] is not y or rhs is y or op.options.get("adjointLhs"):
                return f"{_name(op)} does not read the normalized tensor as its left-hand side"
            if rhs is None or not rhs.is_constant or not is_float(rhs):
                return f"{_name(op)}'s right-hand side is not a float constant"
            if int(rhs.shape[-1 if op.options.get("adjointRhs") else -2]) != channels:
                return f"{_name(op)} does not contract the channel axis"
            if needs_shift:
                add = sole_reader(graph, op.outputs[0], uses)
                other = _binary_other(add, op.outputs[0]) if add is not None and add.type == "ADD" else None
                if len(rhs.shape) != 2 or other is None or not other.is_constant \
                        or per_channel_constant(other, op.outputs[0])[0] is None \
                        or tuple(add.outputs[0].shape) != tuple(op.outputs[0].shape):
                    return (f"{_name(op)} has no bias to take W @ beta (its only reader is not an ADD of a "
                            "per-channel constant)")
                state.bias_adds[id(op)] = add
            state.weighted.append(op)
        elif op.type in ("MEAN", "RESHAPE"):
            if op.inputs[0] is not y or any(t is y for t in op.inputs[1:]):
                return f"{_name(op)} reads the normalized tensor as a parameter"
            if op.type == "MEAN":
                axes = _const_axes(op)
                if axes is None or len(y.shape) - 1 in axes:
                    return f"{_name(op)} reduces over the channel axis"
            elif not op.outputs[0].shape or int(op.outputs[0].shape[-1]) != channels:
                return f"{_name(op)} moves the channel axis"
            state.pass_through.append(op)
            why = _absorbers(graph, op.outputs[0], channels, uses, needs_shift, state)
            if why:
                return why
        elif op.type == "ADD" and not any(t is not None and t.is_constant for t in op.inputs):
            return f"the residual {_name(op)} reads the normalized tensor (post-norm): the affine cannot leave it"
        else:
            return f"{_name(op)} reads the normalized tensor and cannot absorb a per-channel scale and shift"
    return ""


@register_pass
class FoldNormAffine(Pass):
    """fold_affine=False (an int8 target that measured the fold to cost SQNR) keeps every
    affine as one MUL and one ADD after the cheapest normalization."""

    name = "fold_norm_affine"

    def __init__(self, fold_affine: bool = True):
        self.fold_affine = fold_affine

    def propose(self, graph: Graph):
        producers = graph.producers()
        uses = graph.consumer_map()
        for rsqrt in list(graph.ops):
            if rsqrt.type != "RSQRT" or not rsqrt.inputs or rsqrt.inputs[0] is None:
                continue
            norm = _match(graph, rsqrt, producers, uses)
            if norm is None:
                continue
            if isinstance(norm, Refusal):
                yield norm
                continue
            where = norm.y.name
            channels = int(norm.x.shape[-1])
            if tuple(norm.y.shape) != tuple(norm.x.shape):
                yield Refusal(where, "the norm's affine broadcasts the tensor to a new shape")
                continue
            state = _Absorbers()
            if norm.gamma is None and norm.beta is None:
                why = "no affine"  # only the cheaper normalization to write
            else:
                why = _absorbers(graph, norm.y, channels, uses, norm.beta is not None, state)
            region = list({id(op): op for op in [*norm.stats, *norm.removed]}.values())
            added = 0 if norm.normalized is not None else 1 + (norm.centered is None and norm.mu is not None)
            if not why and not self.fold_affine:
                why = "the affine is kept (fold_norm_affine(fold_affine=False))"
            elif not why:
                region += state.weighted + list(state.bias_adds.values()) + state.pass_through
                removed = len(norm.removed) - added
                yield Rewrite(key=(id(rsqrt), "fold"), where=where, region=region,
                              apply=_Apply(graph, norm, state, fold_affine=True),
                              summary=f"{norm.kind}: gamma and beta folded into {len(state.weighted)} op(s); "
                                      f"{removed} op(s) removed",
                              details={"norm": norm.kind, "folded": True, "ops_removed": removed,
                                       "absorbers": len(state.weighted)})
                continue
            if norm.gamma is not None or norm.beta is not None:
                yield Refusal(where, f"{norm.kind} affine stays: {why}")
            removed = len(norm.removed) - added - (norm.gamma is not None) - (norm.beta is not None)
            if norm.normalized is None and removed > 0:
                yield Rewrite(key=(id(rsqrt), "normalize"), where=where, region=region,
                              apply=_Apply(graph, norm, state, fold_affine=False),
                              summary=f"{norm.kind}: rewritten as (x - mean) * rsqrt, then the affine; "
                                      f"{removed} op(s) removed",
                              details={"norm": norm.kind, "folded": False, "ops_removed": removed})


def _activation(graph: Graph, like: Tensor, name: str) -> Tensor:
    t = Tensor(graph.unique_name(name), like.shape, DTYPE_TO_TENSOR_TYPE[like.dtype],
               shape_signature=like.shape_signature)
    return graph.add_tensor(t)


@dataclass(eq=False)
class _Apply:
    graph: Graph
    norm: _Norm
    absorbers: _Absorbers
    fold_affine: bool

    def __call__(self):
        g, nm = self.graph, self.norm
        anchor = nm.removed[-1]
        n = nm.normalized
        if n is None:
            xc = nm.centered
            if xc is None and nm.mu is not None:
                xc = _activation(g, nm.x, nm.y.name + "/jaxfuse_centered")
                make_op(g, "SUB", [nm.x, nm.mu], [xc], "SubOptions", {"fusedActivationFunction": ACT_NONE},
                        before=anchor)
            bare = not self.fold_affine and nm.gamma is None and nm.beta is None  # n is the output itself
            n = nm.y if bare else _activation(g, nm.x, nm.y.name + "/jaxfuse_normalized")
            make_op(g, "MUL", [xc if xc is not None else nm.x, nm.r], [n], "MulOptions",
                    {"fusedActivationFunction": ACT_NONE}, before=anchor)
        if self.fold_affine:
            self._fold_into_readers()
            y = nm.y
            for op in nm.removed:
                g.remove_op(op)
            g.replace_all_uses(y, n)
            for op in self.absorbers.pass_through:
                replace_value(g, op.outputs[0], "/jaxfuse_normalized")
            return
        # the affine stays, as one MUL and one ADD after the normalization
        out = n
        steps = [(kind, value) for kind, value in (("MUL", nm.gamma), ("ADD", nm.beta)) if value is not None]
        for i, (kind, value) in enumerate(steps):
            const = new_constant(g, f"{nm.y.name}/jaxfuse_{'gamma' if kind == 'MUL' else 'beta'}",
                                 value.astype(np.float32))
            target = nm.y if i == len(steps) - 1 else _activation(g, nm.x, nm.y.name + "/jaxfuse_scaled")
            make_op(g, kind, [out, const], [target], f"{kind.title()}Options",
                    {"fusedActivationFunction": ACT_NONE}, before=anchor)
            out = target
        for op in nm.removed:
            g.remove_op(op)

    def _fold_into_readers(self):
        g, nm = self.graph, self.norm
        for op in self.absorbers.weighted:
            weights = op.inputs[1].data.astype(np.float64)
            if op.type == "BATCH_MATMUL":
                adjoint = bool(op.options.get("adjointRhs"))
                new_w, delta = fold.fold_input_affine("BATCH_MATMUL", weights, None, nm.gamma, nm.beta, adjoint=adjoint)
                if delta is not None:
                    add = self.absorbers.bias_adds[id(op)]
                    index = 1 if add.inputs[0] is op.outputs[0] else 0
                    const, _ = per_channel_constant(add.inputs[index], op.outputs[0])
                    tensor = g.private_input(add, index)
                    value = (const + delta).astype(np.float32)
                    tensor.set_data(value.reshape(tensor.shape) if value.size == tensor.data.size else value)
                    replace_value(g, op.outputs[0], "/jaxfuse_unshifted")  # its value lacks W @ beta now
            else:
                new_w, new_b = fold.fold_input_affine(op.type, weights, bias64(op), nm.gamma, nm.beta)
                if nm.beta is not None:
                    set_constant(g, op, BIAS_INDEX[op.type], new_b, op.outputs[0].name + "/bias")
            if nm.gamma is not None:
                g.private_input(op, 1).set_data(np.asarray(new_w).astype(np.float32))
