"""fold_norm_affine: the gamma and beta of a LayerNorm or RMSNorm folded into the linear
layers that read it (pre-norm transformers), the normalization left in its cheapest form.

BEFORE (LayerNorm as the TF converter writes keras LayerNormalization: 11 ops)
  mu = MEAN(x, -1)      v = MEAN(SQUARED_DIFFERENCE(x, mu), -1)      r = RSQRT(v + eps)
  m = MUL(r, gamma)     y = ADD(MUL(x, m), ADD(MUL(NEG(mu), m), beta))
  y -> FULLY_CONNECTED W, b  (Q, K, V, MLP)   |   y -> MEAN over tokens -> FULLY_CONNECTED (head)
AFTER (7 ops, 3 of them over the whole activation instead of 6)
  mu, v, r as before    n = MUL(SUB(x, mu), r)
  n -> FULLY_CONNECTED W * gamma (input channels), b + W @ beta   |   n -> MEAN -> FULLY_CONNECTED (same)

The other forms: every converter that writes the normalized tensor n first and the affine
after it (litert-torch's LayerNorm n = x * r + (-mu * r) and RMSNorm n = x * r, the TF
converter's RMSNorm and LayerNormalization(rms_scaling=True), onnx-style (x - mu) * r or
(x - mu) / SQRT(v + eps)) is
BEFORE   n -> MUL(gamma) -> ADD(beta) (any chain of per-channel MUL / ADD / SUB / DIV
         constants) -> the readers above
AFTER    n -> the readers, their weights and biases refolded
Such a chain is folded wherever it stands: behind a norm it is reported as the norm's
affine (and a reader that cannot take it is reported), elsewhere silently as a per-channel
affine. keras' LayerNormalization without gamma or without beta (m is the rsqrt itself, or
no ADD of beta) is the entangled form without those ops.
The statistics are recognized through the reshapes converters put between them: a MEAN
over the last axis (with or without keep_dims; other reduced axes of size 1), an optional
ADD of a one-element epsilon (a float16 model may have lost an epsilon of 1e-12), RSQRT.

Per channel c: y[.., c] = n[.., c] * gamma[c] + beta[c]; a linear op reading y as data
computes W (n * gamma + beta) = (W * gamma) n + W beta, exactly in real arithmetic for
every sign of gamma and for zero gammas (no activation stands between). An op that moves
rows but keeps every channel row whole (MEAN over non-channel axes, RESHAPE / SQUEEZE /
EXPAND_DIMS keeping the last dimension, a TRANSPOSE keeping the last axis last,
STRIDED_SLICE / SLICE keeping the whole channel range, GATHER of rows: a class token)
commutes with a per-channel affine, so it passes through to its readers; SHAPE reads only
the shape, which the fold keeps. A chain whose constants vary along an earlier axis (onnx2tf
reads a [1, C, T] input as NCW: gamma [1, C, 1]) folds when every reader is a TRANSPOSE that
brings that axis last.

Preconditions (each failing one is a Refusal, never an approximation):
 1. The statistics as above; every intermediate the rewrite removes is read only inside the
    norm (or the chain), gamma and beta are float per-channel constants of the normalized
    tensor, a DIV's constant has no zero.
 2. The affine folds only if EVERY reader of y absorbs it: FULLY_CONNECTED reading y as
    data (keep_num_dims or not, weights a float constant whose input columns repeat the
    channels), CONV_2D that sees no padding (1x1 kernel or VALID), BATCH_MATMUL with y on
    the left (not adjoint) and a float constant right-hand side (a nonzero beta needs the
    product's only reader to be an ADD of a per-channel constant, which takes W @ beta),
    possibly through the row-moving ops above. y must not be a graph output. A residual ADD
    reading y (post-LN) absorbs nothing.
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

TAIL_STEPS = ("MUL", "ADD", "SUB", "DIV")
VIEW_OPS = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE")
ROW_OPS = ("MEAN", "RESHAPE", "EXPAND_DIMS", "SQUEEZE", "TRANSPOSE", "STRIDED_SLICE", "SLICE", "GATHER")


def _name(op: Op) -> str:
    return f"{op.type} '{op.outputs[0].name}'" if op.outputs else op.type


def _size(t: Tensor) -> int:
    return int(np.prod(t.shape)) if t.shape is not None else -1


def _const_axes(op: Op) -> list[int] | None:
    axes = op.inputs[1] if len(op.inputs) > 1 else None
    if axes is None or not axes.is_constant:
        return None
    rank = len(op.inputs[0].shape)
    return sorted({int(a) % rank for a in np.ravel(axes.data)})


def _through_views(t: Tensor | None, producers: dict) -> tuple[Tensor | None, list[Op]]:
    """The tensor behind reshapes that keep its elements (converters reshape statistics
    between [.., 1] and [..]), and those reshapes."""
    views = []
    while t is not None:
        p = producers.get(id(t))
        if p is None or p.type not in VIEW_OPS or not p.inputs or p.inputs[0] is None \
                or _size(p.inputs[0]) != _size(t):
            break
        views.append(p)
        t = p.inputs[0]
    return t, views


def _row_mean_input(op: Op | None) -> Tensor | None:
    """x when `op` is a MEAN of x over its last axis alone (any other reduced axis has size 1),
    keeping dims or not: the statistic of a norm."""
    if op is None or op.type != "MEAN" or op.inputs[0] is None or not op.inputs[0].shape:
        return None
    x = op.inputs[0]
    rank = len(x.shape)
    axes = _const_axes(op)
    if axes is None or rank - 1 not in axes or any(int(x.shape[a]) != 1 for a in axes if a != rank - 1):
        return None
    return x if _size(op.outputs[0]) * int(x.shape[-1]) == _size(x) else None


def _binary_other(op: Op, tensor: Tensor) -> Tensor | None:
    """The other input of a binary op that reads `tensor` once."""
    if len(op.inputs) != 2 or sum(t is tensor for t in op.inputs) != 1:
        return None
    return op.inputs[1] if op.inputs[0] is tensor else op.inputs[0]


@dataclass(eq=False)
class _Norm:
    """One matched affine: y == n * gamma + beta per channel (n: (x - mu) * r, x * r, or a
    tensor normalized some other way)."""

    kind: str                    # "LayerNorm", "RMSNorm", or "per-channel affine" (no norm behind it)
    x: Tensor
    mu: Tensor | None            # None: RMSNorm, or a tail found after n
    r: Tensor | None
    stats: list[Op]              # MEAN(x), SQUARED_DIFFERENCE / SQUARE, MEAN, ADD(eps), RSQRT (what stays)
    removed: list[Op]            # the ops that compute y from x, mu and r (or from n) and go away
    y: Tensor
    gamma: np.ndarray | None     # float64 per channel, None: 1
    beta: np.ndarray | None      # float64 per channel, None: 0
    centered: Tensor | None = None   # an existing x - mu tensor (SUB), reused
    normalized: Tensor | None = None  # an existing n tensor, reused
    channel_axis: int = -1       # where the channels are: not the last for onnx2tf's channels-first tensors


def _stats(graph: Graph, root: Op, producers: dict) -> tuple[Tensor, Tensor | None, Tensor | None, list[Op]] | None:
    """(x, mu, x - mu tensor or None, the statistics ops) of the norm whose RSQRT (or SQRT,
    for a division) is `root`."""
    v, views = _through_views(root.inputs[0] if root.inputs else None, producers)
    stats = [root, *views]
    add = producers.get(id(v))
    if add is not None and add.type == "ADD" and activation(add) == ACT_NONE and len(add.inputs) == 2:
        eps = next((t for t in add.inputs if t is not None and t.is_constant), None)
        if eps is None or not is_float(eps) or eps.data.size != 1:
            return None
        v, views = _through_views(_binary_other(add, eps), producers)
        stats += [add, *views]
    var = producers.get(id(v))
    q_out = _row_mean_input(var)
    q = producers.get(id(q_out)) if q_out is not None else None
    if q is None:
        return None
    stats.append(var)
    if q.type == "SQUARED_DIFFERENCE" and len(q.inputs) == 2:
        for x, mu in (q.inputs, q.inputs[::-1]):
            base, mu_views = _through_views(mu, producers)
            mean = producers.get(id(base))
            if _row_mean_input(mean) is x:
                return x, mu, None, [mean, *mu_views, q, *stats]
        return None
    squared = q.inputs[0] if q.inputs else None
    if q.type == "SQUARE" or (q.type == "MUL" and len(q.inputs) == 2 and q.inputs[0] is q.inputs[1]) or (
            q.type == "POW" and len(q.inputs) == 2 and q.inputs[1] is not None and q.inputs[1].is_constant
            and q.inputs[1].data.size == 1 and float(q.inputs[1].data.reshape(-1)[0]) == 2.0):
        sub = producers.get(id(squared))
        if sub is not None and sub.type == "SUB" and activation(sub) == ACT_NONE and len(sub.inputs) == 2:
            base, mu_views = _through_views(sub.inputs[1], producers)
            mean = producers.get(id(base))
            if _row_mean_input(mean) is sub.inputs[0]:
                return sub.inputs[0], sub.inputs[1], squared, [mean, *mu_views, sub, q, *stats]
        return squared, None, None, [q, *stats]
    return None


def _only_readers(graph: Graph, tensor: Tensor, uses: dict, allowed: list[Op]) -> bool:
    return not graph.is_graph_output(tensor) and all(any(op is a for a in allowed) for op in uses.get(id(tensor), []))


def _axis_constant(const: Tensor, tensor: Tensor) -> tuple[np.ndarray, int | None] | None:
    """(float64 values, axis) of a float constant that varies along one axis of `tensor` alone
    (right-aligned broadcasting); axis None for a one-element constant."""
    if not is_float(const) or len(const.shape) > len(tensor.shape):
        return None
    varying = [i for i, d in enumerate(const.shape) if d != 1]
    if not varying:
        return const.data.astype(np.float64).reshape(-1)[:1], None
    axis = len(tensor.shape) - len(const.shape) + varying[0]
    if len(varying) > 1 or int(const.shape[varying[0]]) != int(tensor.shape[axis]):
        return None
    return const.data.astype(np.float64).reshape(-1), axis


def _tail_step(op: Op, tensor: Tensor, uses: dict) -> tuple[str, np.ndarray, int | None] | None:
    """(kind, constant, the axis it varies along or None) when `op` is a step of an affine
    chain applied to `tensor`."""
    if op.type not in TAIL_STEPS or activation(op) != ACT_NONE or not op.outputs \
            or tuple(op.outputs[0].shape) != tuple(tensor.shape):
        return None
    other = _binary_other(op, tensor)
    if other is None or not other.is_constant:
        return None
    found = _axis_constant(other, tensor)
    if found is None:
        return None
    value, axis = found
    if op.type == "DIV":
        if op.inputs[0] is not tensor or np.any(value == 0):
            return None  # c / x is not affine; x / 0 has no scale
        return "DIV", value, axis
    if op.type == "SUB" and op.inputs[0] is not tensor:
        return "RSUB", value, axis
    return op.type, value, axis


def _tail(graph: Graph, first: Op, n: Tensor, uses: dict) -> tuple[list[Op], list[tuple[str, np.ndarray]], Tensor, int]:
    """The chain of per-channel constant steps from `first` (which reads n): (ops, steps, end,
    the channel axis). Every op after the first is the sole reader of the one before; every
    step varies along the same axis (the last when none varies)."""
    ops, steps, tensor, op, channel_axis = [], [], n, first, None
    while op is not None:
        step = _tail_step(op, tensor, uses)
        if step is None or (step[2] is not None and channel_axis is not None and step[2] != channel_axis):
            break  # not a step, or one along another axis than the chain's
        kind, value, axis = step
        channel_axis = axis if axis is not None else channel_axis
        steps.append((kind, value))
        ops.append(op)
        tensor = op.outputs[0]
        op = sole_reader(graph, tensor, uses)
    return ops, steps, tensor, len(n.shape) - 1 if channel_axis is None else channel_axis


def _entangled(graph: Graph, rsqrt: Op, producers: dict, uses: dict) -> _Norm | Refusal | None:
    """The TF converter's keras LayerNormalization (gamma multiplied into the rsqrt): m =
    MUL(r, gamma), y = ADD(MUL(x, m), ADD(MUL(NEG(mu), m), beta)), or without gamma (m = r) or
    beta; RMSNorm's y = MUL(x, MUL(r, gamma))."""
    found = _stats(graph, rsqrt, producers)
    if found is None or rsqrt.type != "RSQRT":
        return None
    x, mu, centered, stats = found
    if not is_float(x) or not x.shape:
        return None
    r = rsqrt.outputs[0]
    where = r.name
    readers = uses.get(id(r), [])
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
    kind = "LayerNorm" if mu is not None else "RMSNorm"
    if mu is None or centered is not None:
        if len(m_readers) != 1 or graph.is_graph_output(m):
            return Refusal(where, f"the norm's scaled rsqrt '{m.name}' is read outside the norm")
        return _Norm(kind, x, mu, r, stats, removed, x_mul.outputs[0], gamma, None, centered)
    # LayerNorm: y = ADD(MUL(x, m), ADD(MUL(NEG(mu), m), beta)) (keras 3), or
    # y = ADD(MUL(x, m), SUB(beta, MUL(mu, m))) (tf.nn.batch_normalization: tf_keras, onnx2tf)
    neg_mul = next((op for op in m_readers if op is not x_mul and op.type == "MUL"), None)
    if neg_mul is None or activation(neg_mul) != ACT_NONE:
        return None
    other = _binary_other(neg_mul, m)
    neg = producers.get(id(other))
    negated = neg is not None and neg.type == "NEG" and neg.inputs[0] is mu
    if not negated and other is not mu:
        return None
    shift_op = sole_reader(graph, neg_mul.outputs[0], uses)
    beta = None
    offset = neg_mul.outputs[0]
    if shift_op is not None and activation(shift_op) == ACT_NONE and (
            shift_op.type == "ADD" if negated else shift_op.type == "SUB" and shift_op.inputs[1] is offset):
        beta_const = _binary_other(shift_op, offset)
        if beta_const is not None and beta_const.is_constant:
            beta, why = per_channel_constant(beta_const, x)
            if beta is None:
                return Refusal(where, f"the norm's shift: {why}")
            removed.append(shift_op)
            offset = shift_op.outputs[0]
    # without beta the mean term is added (negated) or subtracted
    final_type = "ADD" if negated or beta is not None else "SUB"
    xm = x_mul.outputs[0]
    final = next((op for op in uses.get(id(xm), []) if op.type == final_type and activation(op) == ACT_NONE
                  and _binary_other(op, xm) is offset and (op.type == "ADD" or op.inputs[0] is xm)), None)
    if final is None:
        return None
    removed += [neg, neg_mul, final] if negated else [neg_mul, final]
    inner = [(neg.outputs[0], [neg_mul])] if negated else []
    inner += [(m, [x_mul, neg_mul]), (neg_mul.outputs[0], removed), (xm, [final]), (offset, [final])]
    for tensor, allowed in inner:
        if not _only_readers(graph, tensor, uses, allowed):
            return Refusal(where, f"the norm's intermediate '{tensor.name}' is read outside the norm")
    return _Norm(kind, x, mu, r, stats, removed, final.outputs[0], gamma, beta)


NORM_ROOTS = ("RSQRT", "SQRT")
BEHIND_DEPTH = 3  # ops between n and the norm's RSQRT: litert-torch's n = ADD(MUL(x, RESHAPE(r)), ...)


def norm_behind(graph: Graph, n: Tensor, producers: dict) -> str | None:
    """"LayerNorm" / "RMSNorm" when `n` is computed, within a few element-wise ops, from a
    norm's rsqrt (or a division by its sqrt) and the tensor that norm normalizes; else None."""
    seen, roots, level = {id(n)}, [], [n]
    for _ in range(BEHIND_DEPTH):
        following = []
        for t in level:
            base, _ = _through_views(t, producers)
            p = producers.get(id(base))
            if p is None:
                continue
            if p.type in NORM_ROOTS:
                roots.append(p)
            elif p.type in ("MUL", "ADD", "SUB", "DIV", "NEG"):
                for i in p.inputs:
                    if i is not None and not i.is_constant and id(i) not in seen:
                        seen.add(id(i))
                        following.append(i)
        level = following
    for root in roots:
        found = _stats(graph, root, producers)
        if found is not None and (id(found[0]) in seen or (found[2] is not None and id(found[2]) in seen)):
            return "LayerNorm" if found[1] is not None else "RMSNorm"
    return None


def _tails(graph: Graph, producers: dict, uses: dict, claimed: set) -> list[tuple[Op, Tensor]]:
    """(first op, n) of every maximal chain of per-channel constant steps on a float activation."""
    found = []
    for op in graph.ops:
        if id(op) in claimed or op.type not in TAIL_STEPS or len(op.inputs) != 2:
            continue
        n = next((t for t in op.inputs if t is not None and not t.is_constant), None)
        if n is None or not is_float(n) or not n.shape or _tail_step(op, n, uses) is None:
            continue
        before = producers.get(id(n))
        if before is not None and sole_reader(graph, n, uses) is op and before.inputs \
                and any(t is not None and not t.is_constant and _tail_step(before, t, uses) is not None
                        for t in before.inputs):
            continue  # not the start of its chain
        found.append((op, n))
    return found


@dataclass
class _Absorbers:
    weighted: list[Op] = field(default_factory=list)     # FULLY_CONNECTED / CONV_2D / BATCH_MATMUL
    bias_adds: dict = field(default_factory=dict)          # id(BATCH_MATMUL) -> the ADD taking W @ beta
    pass_through: list[Op] = field(default_factory=list)  # row-moving ops between (their values change)
    shape_readers: list[Op] = field(default_factory=list)  # SHAPE (its value stays)


def _moves_rows_only(op: Op, y: Tensor, channels: int) -> str:
    """'' when `op` (one of ROW_OPS reading y) keeps every channel row of y whole, else why not."""
    if op.inputs[0] is not y or any(t is y for t in op.inputs[1:]):
        return f"{_name(op)} reads the normalized tensor as a parameter"
    out = op.outputs[0]
    rank = len(y.shape)
    params = [t for t in op.inputs[1:] if t is not None]
    if op.type in ("MEAN", "TRANSPOSE", "STRIDED_SLICE", "SLICE") and not all(t.is_constant for t in params):
        return f"{_name(op)} has parameters that are not constants"
    if op.type == "MEAN" and rank - 1 in _const_axes(op):
        return f"{_name(op)} reduces over the channel axis"
    if not out.shape or int(out.shape[-1]) != channels:
        return f"{_name(op)} moves the channel axis"
    if op.type == "TRANSPOSE":
        if int(np.ravel(params[0].data)[-1]) % rank != rank - 1:
            return f"{_name(op)} moves the channel axis"
    elif op.type == "STRIDED_SLICE":
        o = op.options
        strides = np.ravel(params[2].data) if len(params) > 2 else np.ones(rank)
        if o.get("ellipsisMask", 0) or o.get("newAxisMask", 0) or o.get("offset", False) \
                or (int(o.get("shrinkAxisMask", 0)) >> (rank - 1)) & 1 or len(strides) != rank or int(strides[-1]) != 1:
            return f"{_name(op)} does not keep the channel range whole"
    elif op.type == "GATHER":
        axis = int(op.options.get("axis", 0)) % rank
        if axis == rank - 1 or int(op.options.get("batchDims", 0)):
            return f"{_name(op)} gathers channels"
    # RESHAPE / SQUEEZE / EXPAND_DIMS keeping the last dimension, SLICE of all channels: rows move whole
    return ""


SHAPE_COMPUTATION_MAX_OPS = 32


def _shape_computation(t: Tensor, producers: dict) -> list[Op] | None:
    """The ops computing the integer tensor `t` from SHAPE ops and constants alone (TF's
    Tensordot reshapes by the run-time shape of its input), else None."""
    ops, todo, seen = [], [t], set()
    while todo:
        t = todo.pop()
        if t is None or t.is_constant or id(t) in seen:
            continue
        seen.add(id(t))
        p = producers.get(id(t))
        if p is None or t.dtype is None or t.dtype.kind not in "iu" or len(ops) >= SHAPE_COMPUTATION_MAX_OPS:
            return None
        ops.append(p)
        if p.type != "SHAPE":
            todo += list(p.inputs)
    return ops


def _absorbers(graph: Graph, y: Tensor, channels: int, uses: dict, needs_shift: bool, state: _Absorbers,
               producers: dict) -> str:
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
        elif op.type == "SHAPE":
            state.shape_readers.append(op)
        elif op.type in ROW_OPS:
            why = _moves_rows_only(op, y, channels)
            if why:
                return why
            if op.type == "RESHAPE" and len(op.inputs) > 1 and op.inputs[1] is not None \
                    and not op.inputs[1].is_constant:
                computed = _shape_computation(op.inputs[1], producers)
                if computed is None:
                    return f"{_name(op)} reshapes to a shape computed from values"
                state.shape_readers += computed
            state.pass_through.append(op)
            why = _absorbers(graph, op.outputs[0], channels, uses, needs_shift, state, producers)
            if why:
                return why
        elif op.type == "ADD" and not any(t is not None and t.is_constant for t in op.inputs):
            return f"the residual {_name(op)} reads the normalized tensor (post-norm): the affine cannot leave it"
        else:
            return f"{_name(op)} reads the normalized tensor and cannot absorb a per-channel scale and shift"
    return ""


def _channels_first_absorbers(graph: Graph, y: Tensor, axis: int, channels: int, uses: dict, needs_shift: bool,
                              state: _Absorbers, producers: dict) -> str:
    """_absorbers for channels on an axis before the last (onnx2tf reads a [1, C, T] input as
    NCW): each reader must be a TRANSPOSE that brings that axis last (then its readers absorb)
    or a SHAPE."""
    if graph.is_graph_output(y):
        return f"the norm's output '{y.name}' is a graph output"
    for op in uses.get(id(y), []):
        if op.type == "SHAPE":
            state.shape_readers.append(op)
            continue
        perm = op.inputs[1] if op.type == "TRANSPOSE" and len(op.inputs) > 1 else None
        if perm is None or not perm.is_constant or op.inputs[0] is not y \
                or int(np.ravel(perm.data)[-1]) % len(y.shape) != axis:
            return f"{_name(op)} reads channels on axis {axis} without bringing them last"
        state.pass_through.append(op)
        why = _absorbers(graph, op.outputs[0], channels, uses, needs_shift, state, producers)
        if why:
            return why
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
        claimed: set[int] = set()
        for rsqrt in list(graph.ops):
            if rsqrt.type != "RSQRT" or not rsqrt.inputs or rsqrt.inputs[0] is None:
                continue
            norm = _entangled(graph, rsqrt, producers, uses)
            if norm is None:
                continue
            if isinstance(norm, Refusal):
                yield norm
                continue
            claimed |= {id(op) for op in [*norm.stats, *norm.removed]}
            yield from self._proposals(graph, norm, producers, uses, key=id(rsqrt))
        for first, n in _tails(graph, producers, uses, claimed):
            ops, steps, y, axis = _tail(graph, first, n, uses)
            kind = norm_behind(graph, n, producers) or "per-channel affine"
            scale, shift = fold.compose_scale_shift(steps)
            channels = int(n.shape[axis])
            scale = np.broadcast_to(scale, (channels,)).astype(np.float64)
            shift = np.broadcast_to(shift, (channels,)).astype(np.float64)
            norm = _Norm(kind, n, None, None, [], ops, y, None if np.all(scale == 1) else scale,
                         None if np.all(shift == 0) else shift, normalized=n, channel_axis=axis)
            for proposal in self._proposals(graph, norm, producers, uses, key=id(first)):
                if isinstance(proposal, Rewrite) or kind != "per-channel affine":
                    yield proposal  # a chain behind no norm that cannot fold is no news

    def _proposals(self, graph: Graph, norm: _Norm, producers: dict, uses: dict, key: int):
        where = norm.y.name
        channels = int(norm.x.shape[-1])
        if tuple(norm.y.shape) != tuple(norm.x.shape):
            yield Refusal(where, "the norm's affine broadcasts the tensor to a new shape")
            return
        state = _Absorbers()
        if norm.gamma is None and norm.beta is None:
            why = "no affine"  # only the cheaper normalization to write
        elif norm.channel_axis % len(norm.x.shape) != len(norm.x.shape) - 1:
            channels = int(norm.x.shape[norm.channel_axis])
            why = _channels_first_absorbers(graph, norm.y, norm.channel_axis, channels, uses, norm.beta is not None,
                                            state, producers)
        else:
            why = _absorbers(graph, norm.y, channels, uses, norm.beta is not None, state, producers)
        region = list({id(op): op for op in [*norm.stats, *norm.removed]}.values())
        added = 0 if norm.normalized is not None else 1 + (norm.centered is None and norm.mu is not None)
        if not why and not self.fold_affine:
            why = "the affine is kept (fold_norm_affine(fold_affine=False))"
        elif not why:
            region += state.weighted + list(state.bias_adds.values()) + state.pass_through + state.shape_readers
            region = list({id(op): op for op in region}.values())
            removed = len(norm.removed) - added
            yield Rewrite(key=(key, "fold"), where=where, region=region,
                          apply=_Apply(graph, norm, state, fold_affine=True),
                          summary=f"{norm.kind}: gamma and beta folded into {len(state.weighted)} op(s); "
                                  f"{removed} op(s) removed",
                          details={"norm": norm.kind, "folded": True, "ops_removed": removed,
                                   "absorbers": len(state.weighted)})
            return
        if norm.gamma is not None or norm.beta is not None:
            yield Refusal(where, f"{norm.kind} affine stays: {why}")
        removed = len(norm.removed) - added - (norm.gamma is not None) - (norm.beta is not None)
        if norm.normalized is None and removed > 0:
            yield Rewrite(key=(key, "normalize"), where=where, region=region,
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
