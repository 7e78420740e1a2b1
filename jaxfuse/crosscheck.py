"""An independent cross-check: jaxfuse's values against LiteRT's on the same inputs.

jaxfuse proves rewrites with XLA, so a compiler bug that hits both sides of a check goes
unseen there (jaxfuse.xla has one). LiteRT shares no code with XLA: comparing every tensor
the two compute names where they part. Outputs decide the verdict; among the other
tensors the first one (in op order) beyond the tolerance is reported, to localize a
disagreement.

    report = crosscheck(model, inputs)          # a list of arrays in graph-input order
    print(report.format_text()); report.agrees

Float tensors agree when their largest difference is within `tolerance` of the LiteRT
tensor's scale, or within LiteRT's own spread on that output (its default XNNPACK delegate
against its builtin kernels, measured on the same inputs); quantized tensors when they are
at most `max_lsb` steps apart.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .ir import Model
from .numerics import is_quantized_integer, relative_to_scale, short_name

DEFAULT_TOLERANCE = 1e-4   # of the output's scale
DEFAULT_MAX_LSB = 1


class CrosscheckError(ValueError):
    """The cross-check cannot run (no LiteRT, or LiteRT cannot run the model)."""


@dataclass
class TensorComparison:
    name: str
    shape: list[int]
    quantized: bool
    max_abs_error: float     # LSB for quantized tensors
    scale: float             # max |LiteRT value| (0 for quantized tensors)
    rel_error: float         # max_abs_error / scale for floats, the LSB count for quantized ones
    litert_spread: float | None = None  # outputs only: LiteRT XNNPACK vs builtin, same measure
    agrees: bool = True


@dataclass
class CrosscheckReport:
    engine: str
    tolerance: float
    max_lsb: int
    outputs: list[TensorComparison]
    tensors_compared: int = 0
    steps: int = 1       # samples run in order on one interpreter: outputs compared at each, other tensors at the last
    diverging: list[TensorComparison] = field(default_factory=list)  # non-output tensors beyond tolerance
    samples: int = 1  # outputs compared on this many samples (tensors on the first)

    @property
    def agrees(self) -> bool:
        return all(o.agrees for o in self.outputs)

    @property
    def first_divergence(self) -> TensorComparison | None:
        return self.diverging[0] if self.diverging else None

    def to_dict(self) -> dict:
        first = self.first_divergence
        return {"engine": self.engine, "agrees": self.agrees, "tolerance": self.tolerance, "max_lsb": self.max_lsb,
                "outputs": [asdict(o) for o in self.outputs], "tensors_compared": self.tensors_compared,
                "diverging_tensors": len(self.diverging), "steps": self.steps,
                "first_divergence": None if first is None else asdict(first), "samples": self.samples}

    def format_text(self) -> str:
        over = f"outputs of {self.samples} samples, " if self.samples > 1 else ""
        lines = [f"against {self.engine}: {'agrees' if self.agrees else 'DISAGREES'} "
                 f"({over}{self.tensors_compared} tensors compared; tolerance {self.tolerance:g} of the scale, "
                 f"{self.max_lsb} LSB for quantized tensors)"]
        if self.steps > 1:
            lines.append(f"  {self.steps} steps in order: outputs compared at every step, other tensors at the last")
        for o in self.outputs:
            measure = f"{o.max_abs_error:g} LSB" if o.quantized else f"relative {o.rel_error:.3g}"
            spread = "" if o.litert_spread is None else f", LiteRT's own spread {o.litert_spread:.3g}"
            lines.append(f"  output '{short_name(o.name)}': {measure}{spread}: "
                         f"{'agrees' if o.agrees else 'DISAGREES'}")
        first = self.first_divergence
        if first is not None:
            measure = f"{first.max_abs_error:g} LSB" if first.quantized else f"relative {first.rel_error:.3g}"
            lines.append(f"  first tensor beyond the tolerance: '{short_name(first.name)}' ({measure}; "
                         f"{len(self.diverging)} in all)")
        return "\n".join(lines)


def _compare(name: str, ours: np.ndarray, theirs: np.ndarray, quantized: bool) -> TensorComparison:
    if quantized:
        if ours.shape != theirs.shape:
            lsb = float("inf")
        else:
            lsb = float(np.max(np.abs(ours.astype(np.int64) - theirs.astype(np.int64)), initial=0))
        return TensorComparison(name, list(theirs.shape), True, lsb, 0.0, lsb)
    if ours.shape != theirs.shape:
        return TensorComparison(name, list(theirs.shape), False, float("inf"), 0.0, float("inf"))
    wide = np.complex128 if "c" in (ours.dtype.kind, theirs.dtype.kind) else np.float64
    ours, theirs = ours.astype(wide), theirs.astype(wide)
    with np.errstate(invalid="ignore"):
        same = (ours == theirs) | (np.isnan(ours) & np.isnan(theirs))  # equal infinities and NaNs agree
        diff = np.where(same, 0.0, np.abs(ours - theirs))
    abs_err = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff), initial=0.0))
    finite = np.abs(theirs[np.isfinite(theirs)])
    scale = float(finite.max(initial=0.0))
    return TensorComparison(name, list(theirs.shape), False, abs_err, scale, relative_to_scale(abs_err, scale))


def _output_agrees(c: TensorComparison, report: CrosscheckReport) -> bool:
    """Within the tolerance (LSB for quantized outputs), or within LiteRT's own spread."""
    return c.rel_error <= max(report.max_lsb if c.quantized else report.tolerance, c.litert_spread or 0.0)


def _litert_tensors(content: bytes, steps: list[list[np.ndarray]], builtin: bool, keep_all: bool):
    """An interpreter that has run `steps` in order (LiteRT keeps the variables between invokes),
    and per output an array with a leading step axis."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin else OpResolverType.AUTO
    interp = Interpreter(model_content=content, experimental_op_resolver_type=resolver,
                         experimental_preserve_all_tensors=keep_all)
    details = interp.get_input_details()
    if len(details) != len(steps[0]):
        raise CrosscheckError(f"the model has {len(details)} inputs, {len(steps[0])} were given")
    for d, x in zip(details, steps[0]):
        if tuple(d["shape"]) != np.shape(x):
            interp.resize_tensor_input(d["index"], np.shape(x))
    interp.allocate_tensors()
    outputs = []
    for inputs in steps:
        for d, x in zip(details, inputs):
            interp.set_tensor(d["index"], np.asarray(x, d["dtype"]))
        interp.invoke()
        outputs.append([np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()])
    return interp, [np.stack(values) for values in zip(*outputs)]


def crosscheck(model: Model, inputs: list[np.ndarray] | None = None, tolerance: float = DEFAULT_TOLERANCE,
               max_lsb: int = DEFAULT_MAX_LSB, *, steps: list[list[np.ndarray]] | None = None) -> CrosscheckReport:
    """Run `model`'s main subgraph on `inputs` (one sample, graph-input order) in jaxfuse (compiled
    as its checks are, jaxfuse.xla's settings) and in LiteRT's builtin kernels, and compare every tensor both
    compute. Models with several subgraphs or resource variables run whole (jaxfuse.lower). `steps`
    instead of `inputs`: samples run in order on one interpreter, a stateful model carrying its
    variables from one to the next; outputs are compared at every step, the other tensors at the
    last. Raises CrosscheckError when LiteRT is missing or refuses the model."""
    if (inputs is None) == (steps is None):
        raise CrosscheckError("give either inputs (one sample) or steps (samples run in order)")
    steps = [list(inputs)] if steps is None else [list(step) for step in steps]
    if not steps:
        raise CrosscheckError("no steps to run")
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        raise CrosscheckError("the LiteRT cross-check needs ai-edge-litert (pip install ai-edge-litert)") from None
    from .io import to_bytes
    from .lowering import init_state, lower_graph, resource_variables, run_steps
    from .lowering.core import tensor_keys
    from .programs import PROGRAMS
    from .whole_model import needs_whole_model

    graph = model.main
    keys = tensor_keys(graph)
    content = to_bytes(model, "tflite")
    try:
        reference, theirs_out = _litert_tensors(content, steps, builtin=True, keep_all=True)
        _, delegated_out = _litert_tensors(content, steps, builtin=False, keep_all=False)
    except CrosscheckError:
        raise
    except Exception as e:  # LiteRT raises RuntimeError / ValueError with its own text
        raise CrosscheckError(f"LiteRT cannot run the model: {str(e).strip().splitlines()[-1]}") from None
    last = steps[-1]
    if needs_whole_model(model):
        stacked = [np.stack([np.asarray(step[i]) for step in steps]) for i in range(len(graph.inputs))]
        ours_out, states = run_steps(model, stacked, every_state=True)
        before_last = init_state(model) if len(steps) == 1 else tuple(v[-2] for v in states)
        fn, params = lower_graph(graph, all_tensors=True, model=model)
        executable = PROGRAMS.compile(fn, params, *last, *before_last)
        results = executable(params, *last, *before_last)
        ours = results[0] if resource_variables(model) else results
    else:
        fn, params = lower_graph(graph, all_tensors=True)
        executable = PROGRAMS.compile(fn, params, *last)  # run once: compiled for checks (programs.py)
        ours = executable(params, *last)
        ours_out = [np.asarray(ours[keys[id(t)]])[None] for t in graph.outputs]
    ours = {k: np.asarray(v) for k, v in ours.items()}
    output_ids = {id(t) for t in graph.outputs}
    input_ids = {id(t) for t in graph.inputs}
    report = CrosscheckReport("LiteRT (builtin kernels)", tolerance, max_lsb, [], steps=len(steps))
    for index, t in enumerate(graph.tensors):
        key = keys[id(t)]
        if key not in ours or id(t) in input_ids or t.dtype is None \
                or t.dtype.kind not in "biufc":  # resource handles hold no values
            continue
        try:
            theirs = np.asarray(reference.get_tensor(index))
        except ValueError:  # a tensor LiteRT did not keep
            continue
        comparison = _compare(t.name, ours[key], theirs, is_quantized_integer(t))
        report.tensors_compared += 1
        comparison.agrees = comparison.rel_error <= (max_lsb if comparison.quantized else tolerance)
        if id(t) not in output_ids and not comparison.agrees:
            report.diverging.append(comparison)
    for t, mine, theirs, delegated in zip(graph.outputs, ours_out, theirs_out, delegated_out):
        comparison = _compare(t.name, np.asarray(mine), theirs, is_quantized_integer(t))  # every step at once
        spread = _compare(t.name, delegated, theirs, comparison.quantized)
        comparison.shape = list(theirs.shape[1:])
        comparison.litert_spread = spread.rel_error
        comparison.agrees = _output_agrees(comparison, report)
        report.outputs.append(comparison)
    return report


def compare_outputs(report: CrosscheckReport, model: Model, samples, outputs: list[np.ndarray]) -> CrosscheckReport:
    """Widen `report` (crosscheck on samples[0]) to every sample's outputs: `outputs` are
    jaxfuse's, one array [N, ...] per graph output; LiteRT's builtin kernels run each sample.
    Each output keeps its worst sample's figures (LiteRT's spread stays the first sample's)."""
    from .io import to_bytes
    content = to_bytes(model, "tflite")
    graph = model.main
    for i in range(1, len(samples)):
        _, litert_outputs = _litert_tensors(content, [list(samples[i])], builtin=True, keep_all=False)
        for k, t in enumerate(graph.outputs):
            theirs, ours = litert_outputs[k][0], np.asarray(outputs[k][i])
            if ours.size == theirs.size:  # run lays [N, ...] in place of a batch of 1
                ours = ours.reshape(theirs.shape)
            seen = _compare(t.name, ours, theirs, is_quantized_integer(t))
            kept = report.outputs[k]
            if seen.rel_error > kept.rel_error:
                kept.max_abs_error, kept.scale, kept.rel_error = seen.max_abs_error, seen.scale, seen.rel_error
            kept.agrees = _output_agrees(kept, report)
    report.samples = len(samples)
    return report
