"""fuse_preactivation_batchnorm: a batch norm that FOLLOWS a residual add (or any op),
folded exactly: scale forward into the consumers, shift backward into a producer's bias.

BEFORE                                         AFTER
  conv_p -> c --.                                conv_p' (bias + d) -> c' --.
  shortcut s --ADD--> x --+-- MUL g            shortcut s ----------ADD--> x' --+-- [MUL m]
                          |    ADD b (ReLU)                                     |    [ADD a] / RELU
                          |     -> y -> conv_k                                  |     -> y' -> conv_k' (W * k)
                          '--> (MAX_POOL) --ADD <- conv_q      (MAX_POOL) --ADD <- conv_q' (bias - d)

Per channel:  relu(g*x + b) == k * relu(m*(x + d) + a)   whenever k > 0, k*m = g, k*(m*d + a) = b
(fold.preactivation_split). Preferred choice: k = |g|, d = b/g, m = sign(g), a = 0, so the
MUL and ADD become one RELU (all g > 0) or one MUL by a +-1 vector with a fused ReLU.

Preconditions (each failing one is a Refusal or a smaller choice, never an approximation):
 1. MUL(x, g) -> ADD(., b) with fused NONE or RELU, g and b float per-channel constants,
    the MUL's output read only by that ADD, no fused activation on the MUL.
 2. Scale forward (k != 1) only if EVERY reader of y absorbs it: CONV_2D / DEPTHWISE_CONV_2D /
    TRANSPOSE_CONV / FULLY_CONNECTED reading y as data with constant float weights, possibly
    through zero PAD (not on channels), MEAN over non-channel axes, MAX_POOL_2D and
    AVERAGE_POOL_2D without activation (k > 0 commutes with all of them).
 3. Shift backward (d != 0) only if x + d can be produced exactly: x comes from a weighted
    op without activation (bias += d), or from an ADD without activation one of whose
    inputs comes from such an op read by nothing else, possibly through ops that commute
    with a per-channel shift: MAX_POOL_2D and AVERAGE_POOL_2D without activation, VALID or
    SAME (TFLite's max pool ignores padded cells, its average pool divides by the real
    cells of each window), and PADV2 whose constant is -inf or at most the lowest float32
    when only such max pools read it (the pad value never wins a max, and lowest + d rounds
    to lowest in float32). Every OTHER reader of a shifted tensor cancels -d exactly: an ADD
    without activation whose other input comes from a weighted op without activation read
    by nothing else (its bias -= d), a weighted op that sees no padding (bias -= W.d), or
    an op that commutes with the shift (its readers are then checked the same way). Never
    across a zero PAD (x + d would be padded with 0, not with d).
 4. Zero gammas: the channel is the constant act(b). If act(b) == 0 it folds into the
    consumers as k = 0; if act(b) > 0 only where every consumer sees no padding (its
    weights times act(b) go into the consumer's bias); otherwise the batch norm is refused.
 5. The result must remove at least one op (else it is refused: nothing to gain).
If the check of the full fold fails (tiny |g| makes d huge, and x + d loses x's precision
in float32 on the residual stream), the fallback keeps the shift in the graph
(d = 0, a = b/|g|: the ADD(+ReLU) stays, the MUL goes) when that still removes an op.

Forms (Form below; the default is what serves float models best): "shift" moves only the
shift (k = 1, m = g: MUL(g) with the ReLU, the consumers untouched), "scale" moves only the
scale; a ReLU left alone can be written as MUL(x, 1) with a fused RELU, which LiteRT's
XNNPACK delegate runs in int8 (it takes RELU ops for float tensors only). `optimize --for
int8` picks among them by measuring (jaxfuse/quantized_target.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fold
from ..ir import Graph, Op, Tensor
from .base import Pass, Refusal, Rewrite, register_pass
from .fold_norm_affine import norm_behind
from .fuse_activation_function import FUSABLE_PRODUCERS
from .common import (ACT_NONE, ACT_RELU, BIAS_INDEX, DATA_INDEX, WEIGHTED_OPS, activation, bias64, constant_operand,
                     is_float, make_op, mul_add_pair, new_constant, parameters_problem, per_channel_constant, replace_value,
                     sees_no_padding, set_constant, sole_reader)

PASS_THROUGH = ("PAD", "MEAN", "MAX_POOL_2D", "AVERAGE_POOL_2D")
POOLS = ("MAX_POOL_2D", "AVERAGE_POOL_2D")


def _weighted_data_reader(op: Op, tensor: Tensor) -> str:
    """'' if `op` is a weighted op that reads `tensor` only as its data input with constant
    float weights, else why not."""
    if op.type not in WEIGHTED_OPS:
        return f"{op.type} cannot absorb a per-channel scale"
    data_index = DATA_INDEX[op.type]
    if [i for i, t in enumerate(op.inputs) if t is tensor] != [data_index]:
        return f"{op.type} reads the tensor as something other than its data input"
    return parameters_problem(op)


class _Absorbers:
    """Readers of y that take the forward scale: weighted ops, reached through pass-through ops."""

    def __init__(self):
        self.weighted: list[tuple[Op, bool]] = []   # (op, reached directly or via MEAN/pools only)
        self.pass_through: list[Op] = []
        self.all_direct_no_padding = True

    @property
    def through_max_pool(self) -> bool:
        return any(op.type == "MAX_POOL_2D" for op in self.pass_through)


def _collect_absorbers(graph: Graph, y: Tensor, uses: dict, state: _Absorbers, padding_free: bool) -> str:
    if graph.is_graph_output(y):
        return "the batch norm's output is a graph output"
    for op in uses.get(id(y), []):
        if op.type in WEIGHTED_OPS:
            why = _weighted_data_reader(op, y)
            if why:
                return why
            if op.type == "FULLY_CONNECTED" and int(op.inputs[1].shape[1]) % int(y.shape[-1]):
                return "FULLY_CONNECTED input columns do not repeat the channels"
            state.weighted.append((op, padding_free))
            state.all_direct_no_padding &= padding_free and sees_no_padding(op)
            continue
        if op.type not in PASS_THROUGH:
            return f"{op.type} reads the batch norm's output and cannot absorb a per-channel scale"
        if op.inputs[0] is not y or any(t is y for t in op.inputs[1:]):
            return f"{op.type} reads the batch norm's output as a parameter"
        if activation(op) not in (ACT_NONE, ACT_RELU):
            return f"{op.type} has a fused activation that does not commute with a scale"
        if op.type == "PAD":
            paddings = op.inputs[1].data if op.inputs[1] is not None and op.inputs[1].is_constant else None
            if paddings is None or np.any(paddings[-1] != 0):
                return "PAD pads the channel axis or its paddings are not constant"
        if op.type == "MEAN":
            axes = op.inputs[1].data if op.inputs[1] is not None and op.inputs[1].is_constant else None
            rank = len(op.inputs[0].shape)
            if axes is None or any(int(a) % rank == rank - 1 for a in np.ravel(axes)):
                return "MEAN reduces over the channel axis"
        state.pass_through.append(op)
        why = _collect_absorbers(graph, op.outputs[0], uses, state, padding_free and op.type != "PAD")
        if why:
            return why
    return ""


class _Shift:
    """Where +d enters (a weighted op's bias) and where -d leaves again."""

    def __init__(self):
        self.source: Op | None = None
        self.path: list[Op] = []              # ADD / pools / -inf pads the shifted value flows through
        self.shifted: list[Tensor] = []       # tensors whose value becomes value + d
        self.cancel_bias: list[Op] = []       # weighted ops before a compensating ADD: bias -= d
        self.cancel_input: list[Op] = []      # weighted readers without padding: bias -= W.d


def _name(op: Op) -> str:
    """An op as users find it in the model: its type and its output tensor."""
    return f"{op.type} '{op.outputs[0].name}'" if op.outputs else op.type


def _shiftable_producer(graph: Graph, tensor: Tensor, producers: dict, uses: dict, *, must_be_sole=True) -> Op | None:
    op = producers.get(id(tensor))
    if op is None or op.type not in WEIGHTED_OPS or activation(op) != ACT_NONE or parameters_problem(op):
        return None
    if must_be_sole and sole_reader(graph, tensor, uses) is None:
        return None
    return op


def _lowest_pad_into_max_pools(op: Op, uses: dict) -> bool:
    """PADV2 filling with -inf or the lowest float32 whose every reader is a MAX_POOL_2D
    without activation: max(pad(z + d)) == max(pad(z)) + d, as the pad value never wins (and
    lowest + d rounds back to lowest in float32 for any |d| below 1e31)."""
    if op.type != "PADV2" or len(op.inputs) < 3 or op.inputs[2] is None or not op.inputs[2].is_constant \
            or not is_float(op.inputs[2]):
        return False
    value = float(np.asarray(op.inputs[2].data, np.float64).reshape(-1)[0])
    if not value <= float(np.finfo(np.float32).min):
        return False
    readers = uses.get(id(op.outputs[0]), [])
    return bool(readers) and all(r.type == "MAX_POOL_2D" and activation(r) == ACT_NONE and r.inputs[0] is op.outputs[0]
                                 for r in readers)


def _commutes_with_shift(op: Op, uses: dict) -> bool:
    """op(z + d) == op(z) + d per channel: pools without activation (TFLite's average pool
    divides by the real cells of each window, its max pool ignores SAME padding) and a
    lowest-value pad feeding max pools. A zero PAD never does."""
    return (op.type in POOLS and activation(op) == ACT_NONE) or _lowest_pad_into_max_pools(op, uses)


def _find_source(graph: Graph, x: Tensor, producers: dict, uses: dict, shift: _Shift) -> str:
    """Walk back from x through ops that commute with a shift to the weighted op whose bias
    takes +d (directly, or as one branch of a residual ADD); '' or why not, naming the op."""
    tensor = x
    while True:
        producer = producers.get(id(tensor))
        if producer is None:
            return f"the shift would reach graph input '{tensor.name}'"
        if _shiftable_producer(graph, tensor, producers, uses, must_be_sole=False) is not None:
            shift.source = producer
            return ""
        if producer.type == "ADD" and activation(producer) == ACT_NONE and constant_operand(producer) is None \
                and len(producer.inputs) == 2 and all(tuple(t.shape) == tuple(tensor.shape) for t in producer.inputs):
            for branch in producer.inputs:
                source = _shiftable_producer(graph, branch, producers, uses)
                if source is not None:
                    shift.source = source
                    shift.path.append(producer)
                    shift.shifted.append(branch)
                    return ""
            return (f"neither input of the residual {_name(producer)} comes from a conv-like op without activation "
                    "read by nothing else")
        if _commutes_with_shift(producer, uses) and producer.inputs[0] is not None:
            shift.path.append(producer)
            tensor = producer.inputs[0]
            shift.shifted.append(tensor)
            continue
        if producer.type == "PAD":
            return f"{_name(producer)} pads with zeros, which a shift would change (x + d is padded with 0, not d)"
        if producer.type == "PADV2":
            return (f"{_name(producer)} pads with a constant that is not -inf or the lowest float, or feeds "
                    "something other than a max pool: a shift would change its padding")
        if producer.type in WEIGHTED_OPS and activation(producer) != ACT_NONE:
            return f"{_name(producer)} has a fused activation, which a shift does not pass"
        return f"{_name(producer)} produces the batch norm's input and cannot take the shift exactly"


def _find_shift(graph: Graph, x: Tensor, bn_mul: Op, producers: dict, uses: dict) -> tuple[_Shift | None, str]:
    shift = _Shift()
    shift.shifted = [x]
    why = _find_source(graph, x, producers, uses, shift)
    if why:
        return None, why
    # The op each shifted tensor flows into on the way to the batch norm is accounted for.
    expected = {id(x): bn_mul}
    for op in shift.path:
        for t in op.inputs:
            if t is not None and any(t is s for s in shift.shifted):
                expected.setdefault(id(t), op)

    # Every other reader of every shifted tensor must cancel the shift.
    pending = list(shift.shifted)
    while pending:
        tensor = pending.pop()
        if graph.is_graph_output(tensor):
            return None, f"shifted tensor '{tensor.name}' is a graph output"
        for op in uses.get(id(tensor), []):
            if op is expected.get(id(tensor)) or any(op is p for p in shift.path):
                continue
            if op.type == "ADD" and activation(op) == ACT_NONE and len(op.inputs) == 2 and \
                    sum(t is tensor for t in op.inputs) == 1:
                other = op.inputs[1] if op.inputs[0] is tensor else op.inputs[0]
                canceller = _shiftable_producer(graph, other, producers, uses) if not other.is_constant else None
                if canceller is None or tuple(other.shape) != tuple(tensor.shape) or \
                        tuple(op.outputs[0].shape) != tuple(tensor.shape):
                    return None, (f"{_name(op)} reads the shifted tensor '{tensor.name}' and its other input "
                                  f"'{other.name}' does not come from a conv-like op that could cancel the shift")
                shift.path.append(op)
                shift.cancel_bias.append(canceller)
            elif _commutes_with_shift(op, uses):
                shift.path.append(op)
                shift.shifted.append(op.outputs[0])
                pending.append(op.outputs[0])
            elif op.type in WEIGHTED_OPS and not _weighted_data_reader(op, tensor) and sees_no_padding(op):
                shift.cancel_input.append(op)
            else:
                return None, f"{_name(op)} reads the shifted tensor '{tensor.name}' and cannot cancel the shift"
    return shift, ""


def _dequantized_constant(tensor: Tensor | None, producers: dict) -> bool:
    op = producers.get(id(tensor)) if tensor is not None else None
    return op is not None and op.type == "DEQUANTIZE" and op.inputs[0] is not None and op.inputs[0].is_constant


FOLDS = ("full", "shift", "scale")
RELU_FORMS = ("op", "mul")


@dataclass(frozen=True)
class Form:
    """Which exact fold the pass makes of each batch norm, and how it writes a ReLU left alone.

    fold  "full"  (default): scale forward and shift backward, falling back to the scale
                  alone (the shift stays as the ADD) or, where no reader takes the scale, to
                  the shift alone;
          "shift": the shift backward only: the scale stays as a MUL carrying the ReLU, and
                  the consumers' weights and the batch norm's output keep the values (and the
                  int8 ranges) they had;
          "scale": the scale forward only: the shift stays as the ADD with its ReLU.
    relu  "op"   (default): a ReLU that cannot fuse into its producer is a RELU op;
          "mul":  it is a MUL by 1 with a fused RELU, which LiteRT's XNNPACK delegate runs in
                  int8 (it takes RELU ops for float tensors only).
    """

    fold: str = "full"
    relu: str = "op"

    def __post_init__(self):
        if self.fold not in FOLDS or self.relu not in RELU_FORMS:
            raise ValueError(f"unknown form {self.fold!r}/{self.relu!r} (folds: {FOLDS}, ReLU forms: {RELU_FORMS})")


def _relu_would_fuse(graph: Graph, x: Tensor, producers: dict, uses: dict) -> bool:
    """fuse_activation_function will fuse a RELU reading x into x's producer."""
    producer = producers.get(id(x))
    return (producer is not None and producer.type in FUSABLE_PRODUCERS and len(producer.outputs) == 1
            and "fusedActivationFunction" in producer.options and activation(producer) == ACT_NONE
            and sole_reader(graph, x, uses) is not None)


@register_pass
class FusePreactivationBatchnorm(Pass):
    name = "fuse_preactivation_batchnorm"

    def __init__(self, form: Form = Form()):
        self.form = form

    def propose(self, graph: Graph):
        producers = graph.producers()
        uses = graph.consumer_map()
        for mul in list(graph.ops):
            add = mul_add_pair(graph, mul, uses)
            if add is None:
                continue
            operands = constant_operand(mul)
            if operands is None:
                if any(_dequantized_constant(t, producers) for t in mul.inputs):
                    yield Refusal(add.outputs[0].name, "the batch norm's constants are quantized behind DEQUANTIZE: "
                                  "folding them would requantize them (not exact)")
                continue
            x = mul.inputs[operands[0]]
            add_operands = constant_operand(add)
            if add_operands is None or add.inputs[add_operands[0]] is not mul.outputs[0]:
                continue
            where = add.outputs[0].name
            if not is_float(x) or not x.shape:
                yield Refusal(where, "the batch norm is not on a float tensor")
                continue
            gamma, why = per_channel_constant(mul.inputs[operands[1]], x)
            if gamma is None:
                yield Refusal(where, why)
                continue
            beta, why = per_channel_constant(add.inputs[add_operands[1]], x)
            if beta is None:
                yield Refusal(where, why)
                continue
            if tuple(mul.outputs[0].shape) != tuple(x.shape) or tuple(add.outputs[0].shape) != tuple(x.shape):
                yield Refusal(where, "the constants broadcast the tensor to a new shape")
                continue
            if activation(mul) != ACT_NONE:
                yield Refusal(where, "the MUL has a fused activation")
                continue
            act = activation(add)
            if act == ACT_NONE and norm_behind(graph, x, producers) is not None:
                continue  # a LayerNorm's / RMSNorm's own affine: fold_norm_affine's, which says why it stays
            if act not in (ACT_NONE, ACT_RELU):
                yield Refusal(where, "the ADD's fused activation does not commute with a per-channel scale")
                continue
            yield from self._plans(graph, mul, add, x, gamma, beta, act, producers, uses, where)

    def _plans(self, graph, mul, add, x, gamma, beta, act, producers, uses, where):
        y = add.outputs[0]
        absorbers = _Absorbers()
        scale_why = _collect_absorbers(graph, y, uses, absorbers, True)
        scale_forward = not scale_why
        shift, shift_why = _find_shift(graph, x, mul, producers, uses)
        through_relu = act == ACT_RELU
        positive_scale = through_relu or absorbers.through_max_pool  # max(k*z) == k*max(z) needs k > 0

        zero = gamma == 0
        constant = None
        if zero.any():
            const_value = np.maximum(beta, 0) if through_relu else beta
            needs_no_padding = zero & (const_value != 0)
            if scale_forward and (not needs_no_padding.any() or absorbers.all_direct_no_padding):
                constant = zero
            # else zero channels stay as m = 0, a = b, which keeps both ops: refused below

        if self.form.fold == "full":
            choices = [("full" if scale_forward else "shift only", True)] if shift is not None else []
            choices += [("scale only", False)] if scale_forward else []
        elif self.form.fold == "shift":
            choices = [("shift only", True)] if shift is not None else []
        else:
            choices = [("scale only", False)] if scale_forward else []
        reasons = [r for r in (scale_why and f"scale stays: {scale_why}",
                               shift_why and f"shift stays: {shift_why}") if r]
        proposed = False
        relu_as_mul = self.form.relu == "mul" and not _relu_would_fuse(graph, x, producers, uses)
        scales = scale_forward and self.form.fold != "shift"
        for label, shift_backward in choices:
            k, d, m, a = fold.preactivation_split(gamma, beta, shift_backward=shift_backward,
                                                  scale_forward=scales, through_relu=positive_scale,
                                                  constant=constant if scales else None)
            if self.form.fold == "shift" and constant is not None:
                # zero-gamma channels are the constant act(b): into the consumers' biases (k = 0)
                k, d, m, a = (np.where(constant, v, w) for v, w in ((0.0, k), (0.0, d), (1.0, m), (0.0, a)))
            if through_relu:  # a zero-gamma channel with b <= 0 is relu(b) = 0 whatever is added
                a = np.where(zero & (beta <= 0), 0.0, a)
            need_mul, need_add = bool(np.any(m != 1)), bool(np.any(a != 0))
            if need_mul and need_add:
                continue
            proposed = True
            ops_removed = 2 - (need_mul or need_add or act != ACT_NONE)
            scaled = bool(np.any(k != 1))
            region = [mul, add]
            if scaled:
                region += [op for op, _ in absorbers.weighted] + absorbers.pass_through
            if shift_backward:
                region += [shift.source] + shift.path + shift.cancel_bias + shift.cancel_input
            unique_region = list({id(op): op for op in region}.values())
            summary = (f"{label}: {int(np.sum(k != 1))} channel scale(s) forward into "
                       f"{len(absorbers.weighted) if scaled else 0} op(s), "
                       f"{int(np.sum(d != 0))} shift(s) backward; {ops_removed} op(s) removed")
            details = {"mode": label, "negative_gammas": int(np.sum(gamma < 0)), "zero_gammas": int(np.sum(zero)),
                       "ops_removed": int(ops_removed), "shift_backward": bool(shift_backward),
                       "scale_forward": scaled}
            yield Rewrite(key=(id(mul), id(add), label), where=where, region=unique_region,
                          apply=_Apply(graph, mul, add, beta, act, k, d, m, a,
                                       absorbers if scaled else _Absorbers(),
                                       shift if shift_backward else None, constant if scaled else None,
                                       relu_as_mul),
                          summary=summary, details=details)
        if not proposed:
            if zero.any() and constant is None:
                reasons.insert(0, f"{int(zero.sum())} zero gamma(s) and a consumer sees padding")
            elif np.any(gamma < 0) and shift is None:
                reasons.insert(0, "negative gammas need the shift moved backward, which is not possible here")
            yield Refusal(where, "; ".join(reasons) or "nothing to gain")


@dataclass(eq=False)
class _Apply:
    """The surgery for one plan (kept apart from matching; all parameters precomputed)."""

    graph: Graph
    mul: Op
    add: Op
    beta: np.ndarray
    act: int
    k: np.ndarray
    d: np.ndarray
    m: np.ndarray
    a: np.ndarray
    absorbers: _Absorbers
    shift: _Shift | None
    constant: np.ndarray | None
    relu_as_mul: bool

    def __call__(self):
        g, mul, add = self.graph, self.mul, self.add
        k, m, a = self.k, self.m, self.a
        if self.shift is not None:
            self._move_shift_backward()
        x = next(t for t in mul.inputs if not t.is_constant)  # renamed if it was shifted
        y = add.outputs[0]
        if np.any(k != 1):
            self._scale_consumers()
            y = replace_value(g, y, "/jaxfuse_prescale")
            for op in self.absorbers.pass_through:
                replace_value(g, op.outputs[0], "/jaxfuse_prescale")
        need_mul, need_add = bool(np.any(m != 1)), bool(np.any(a != 0))
        mul_const = mul.inputs[1] if mul.inputs[1].is_constant else mul.inputs[0]
        add_const = add.inputs[1] if add.inputs[1].is_constant else add.inputs[0]
        if need_mul:
            if mul_const.data.size != m.size or not np.array_equal(mul_const.data.astype(np.float64).reshape(-1), m):
                suffix = "/jaxfuse_sign" if np.all(np.isin(np.abs(m), (0.0, 1.0))) else "/jaxfuse_scale"
                mul_const = _vector_constant(g, mul_const, m, suffix)
            mul.inputs = [x, mul_const]
            mul.outputs = [y]
            mul.options = {**mul.options, "fusedActivationFunction": self.act}
            g.remove_op(add)
        elif need_add:
            add.inputs = [x, _vector_constant(g, add_const, a, "/jaxfuse_shift")]
            g.remove_op(mul)
        elif self.act == ACT_RELU and self.relu_as_mul:
            one = new_constant(g, y.name + "/jaxfuse_one", np.ones(1, np.float32))
            make_op(g, "MUL", [x, one], [y], "MulOptions", {"fusedActivationFunction": ACT_RELU}, before=add)
            g.remove_op(mul)
            g.remove_op(add)
        elif self.act == ACT_RELU:
            make_op(g, "RELU", [x], [y], before=add)
            g.remove_op(mul)
            g.remove_op(add)
        else:
            g.remove_op(mul)
            g.remove_op(add)
            g.replace_all_uses(y, x)

    def _move_shift_backward(self):
        g, d, shift = self.graph, self.d, self.shift
        source = shift.source
        bias = bias64(source)
        set_constant(g, source, BIAS_INDEX[source.type], (0 if bias is None else bias) + d,
                     source.outputs[0].name + "/bias")
        for op in shift.cancel_bias:
            bias = bias64(op)
            set_constant(g, op, BIAS_INDEX[op.type], (0 if bias is None else bias) - d, op.outputs[0].name + "/bias")
            replace_value(g, op.outputs[0], "/jaxfuse_compensated")
        for op in shift.cancel_input:
            weights = op.inputs[1].data.astype(np.float64)
            new_bias = fold.input_shift_to_bias(op.type, weights, bias64(op), -d)
            set_constant(g, op, BIAS_INDEX[op.type], new_bias, op.outputs[0].name + "/bias")
        for t in shift.shifted:
            replace_value(g, t, "/jaxfuse_shifted")

    def _scale_consumers(self):
        g, k = self.graph, self.k
        const_value = None
        if self.constant is not None and np.any(self.constant):
            act_beta = np.maximum(self.beta, 0) if self.act == ACT_RELU else self.beta
            const_value = np.where(self.constant, act_beta, 0)
        for op, _ in self.absorbers.weighted:
            weights = op.inputs[1].data
            if const_value is not None and np.any(const_value):
                new_bias = fold.input_shift_to_bias(op.type, weights.astype(np.float64), bias64(op), const_value)
                set_constant(g, op, BIAS_INDEX[op.type], new_bias, op.outputs[0].name + "/bias")
            tensor = g.private_input(op, 1)
            tensor.set_data(fold.scale_input_channels_float32(op.type, weights, k))


def _vector_constant(graph: Graph, like: Tensor, values: np.ndarray, suffix: str) -> Tensor:
    shape = tuple(like.shape) if int(np.prod(like.shape)) == values.size else (values.size,)
    return new_constant(graph, like.name + suffix, values.astype(np.float32).reshape(shape))
