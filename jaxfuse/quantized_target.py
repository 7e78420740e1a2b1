"""`optimize --for int8`: the exact fold that stays best after quantization, chosen by measurement.

Every fold jaxfuse makes is exact in float, but they are not equal once the model is
quantized: folding a batch norm's scale into the next convolution changes that
convolution's int8 weights and the range of the tensor between them, and moving its shift
into the previous convolution's bias shifts the range of the residual stream. Which of
these costs least SQNR depends on the model (measured: on keras ResNet50V2 the shift-only
fold gains 0.5 dB over the int8 original while the full fold loses 0.5 dB; on the 64x64
tiny version the order is reversed). So for a quantized target jaxfuse makes each
candidate, quantizes it with ai-edge-quantizer exactly as `jaxfuse quantize` would (same
recipe, same calibration samples), measures its SQNR against the float original with its
own quantized lowering (before a final SOFTMAX, whose int8 output in steps of 1/256 would
hide the differences), and keeps the candidate with the fewest ops among those that lose
at most `max_loss` dB against the quantized unfused model (the highest SQNR breaks ties).

Candidates (fuse_preactivation_batchnorm's Form; every other pass runs as usual):
  full  - scale forward and shift backward, a ReLU left alone written as MUL by 1 with a
          fused RELU (LiteRT's XNNPACK delegate runs that in int8, not a RELU op);
  shift - the shift backward only, the scale stays a MUL carrying the ReLU;
  scale - the scale forward only, the shift stays an ADD carrying the ReLU;
  norms      - no pre-activation fold; every LayerNorm / RMSNorm affine folded into the
               linear layers reading it (fold_norm_affine): gamma's spread moves into their
               weights' input channels, which may cost int8 resolution;
  norms-kept - no pre-activation fold; the norms in their cheapest form, each affine kept
               as one MUL and one ADD;
  none  - neither (the reference the others are measured against).
The batch-norm candidates fold the norms too; the norm candidates are measured only where
fold_norm_affine rewrites something, the batch-norm ones only where a batch norm folds.
All of them keep every op XNNPACK delegates in int8, so each runs at least as fast as the
quantized original; which is fastest follows its op count.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .engines import logits_copy
from .equivalence import compare
from .ir import Model
from .passes import DEFAULT_PIPELINE, PASSES, optimize
from .passes.fold_norm_affine import FoldNormAffine
from .passes.manager import OptimizationReport
from .passes.fuse_preactivation_batchnorm import FusePreactivationBatchnorm, Form
from .quantization import quantize

PREACTIVATION = "fuse_preactivation_batchnorm"
NORMS = "fold_norm_affine"
# name -> (pre-activation Form or None, norm mode: "fold", "keep" or None for no fold_norm_affine)
CANDIDATES = {"full": (Form("full", "mul"), "fold"), "shift": (Form("shift"), "fold"), "scale": (Form("scale"), "fold"),
              "norms": (None, "fold"), "norms-kept": (None, "keep"), "none": (None, None)}
NORM_CANDIDATES = ("norms", "norms-kept")
DEFAULT_MAX_LOSS = 0.3  # dB of SQNR a fused model may lose against the quantized unfused one


@dataclass
class Candidate:
    name: str
    ops: int
    sqnr_db: float           # the worst output's SQNR of the quantized candidate against the float original
    preactivation_fused: int
    optimize_seconds: float
    quantize_seconds: float
    norms_rewritten: int = 0  # LayerNorm / RMSNorm rewrites of fold_norm_affine


@dataclass
class Selection:
    scheme: str
    chosen: str
    max_loss_db: float
    candidates: list[Candidate] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def format_text(self) -> str:
        lines = [f"  for {self.scheme}: chose '{self.chosen}' ({self.reason})"]
        if not self.candidates:
            return lines[0]
        reference = next(c for c in self.candidates if c.name == "none")
        for c in self.candidates:
            mark = "*" if c.name == self.chosen else " "
            lines.append(f"   {mark} {c.name:10s} {c.ops:5d} ops, SQNR {c.sqnr_db:6.2f} dB "
                         f"({c.sqnr_db - reference.sqnr_db:+.2f} vs unfused), {c.preactivation_fused} pre-activation "
                         f"batch norm(s) folded, {c.norms_rewritten} norm rewrite(s)")
        return "\n".join(lines)


def pipeline(passes, form: Form | None, norms: str | None = "fold") -> list:
    """`passes` (names or Pass instances; None: the default pipeline) with the pre-activation
    pass in `form` (left out for form None) and fold_norm_affine folding or keeping the norm
    affines (norms "fold" / "keep"; left out for None)."""
    names = list(DEFAULT_PIPELINE if passes is None else passes)
    chosen = []
    for p in names:
        name = p if isinstance(p, str) else getattr(p, "name", None)
        if name == PREACTIVATION:
            if form is not None:
                chosen.append(FusePreactivationBatchnorm(form))
        elif name == NORMS:
            if norms is not None:
                chosen.append(FoldNormAffine(fold_affine=norms == "fold"))
        else:
            chosen.append(PASSES[p] if isinstance(p, str) else p)
    return chosen


def optimize_for_quantization(model: Model, calibration: list[list[np.ndarray]], check: list[list[np.ndarray]],
                              scheme: str = "int8", passes=None, max_loss: float = DEFAULT_MAX_LOSS, **options):
    """(optimized model, OptimizationReport, Selection): the candidate that stays best after
    quantization with `scheme` (module docstring). `calibration` feeds ai-edge-quantizer,
    `check` the SQNR measurement; `options` go to passes.optimize for every candidate."""
    optimized = {}
    for name, (form, norms) in CANDIDATES.items():
        t = time.perf_counter()
        optimized[name] = (*optimize(model, pipeline(passes, form, norms), **options), time.perf_counter() - t)

    def count(report, pass_name):
        return report.passes[pass_name].fused if pass_name in report.passes else 0
    fused = {name: count(report, PREACTIVATION) for name, (_, report, _) in optimized.items()}
    norms = {name: count(report, NORMS) for name, (_, report, _) in optimized.items()}
    if not any(fused.values()) and not any(norms.values()):  # every candidate is the same model
        chosen, report, _ = optimized["none"]
        return chosen, report, Selection(scheme, "none", max_loss, [], "no pre-activation batch norm or norm to fold")
    results = {}
    reference_logits = logits_copy(model)
    for name, (candidate, report, optimize_seconds) in optimized.items():
        # a candidate that changed nothing its dimension covers is another one again, measured once
        if name in NORM_CANDIDATES and not norms[name] or name not in (*NORM_CANDIDATES, "none") and not fused[name]:
            continue
        t = time.perf_counter()
        # measured before a final SOFTMAX: its int8 output (steps of 1/256) would hide the differences
        quantized = quantize(logits_copy(candidate), calibration, scheme).model
        quantize_seconds = time.perf_counter() - t
        verdict = compare(reference_logits, quantized, check, min_sqnr=-np.inf)
        sqnr = min(o.sqnr_db for o in verdict.outputs)
        results[name] = (candidate, report, Candidate(name, report.ops_after, float(sqnr), fused[name],
                                                      optimize_seconds, quantize_seconds, norms[name]))
    candidates = [c for _, _, c in results.values()]
    chosen, reason = choose(candidates, max_loss, scheme)
    optimized, report, _ = results[chosen]
    return optimized, report, Selection(scheme, chosen, max_loss, candidates, reason)


def choose(candidates: list[Candidate], max_loss: float, scheme: str = "int8") -> tuple[str, str]:
    """(name, why) of the candidate with the fewest ops among those whose SQNR is at most
    `max_loss` dB below the unfused one's ("none"), the higher SQNR breaking ties."""
    reference = next(c for c in candidates if c.name == "none").sqnr_db
    acceptable = [c for c in candidates if c.sqnr_db >= reference - max_loss]
    best = min(acceptable, key=lambda c: (c.ops, -c.sqnr_db))
    if best.name == "none":
        return best.name, f"every fold loses more than {max_loss:g} dB of {scheme} SQNR or removes nothing"
    return best.name, (f"the fewest ops among the folds within {max_loss:g} dB of the unfused model's {scheme} "
                       f"SQNR ({best.sqnr_db - reference:+.2f} dB)")


@dataclass
class TargetReport(OptimizationReport):
    """The OptimizationReport of the chosen candidate with the Selection that chose it:
    `to_dict()` is what `optimize --for int8 --report` writes (the selection under "for"),
    `format_text()` the report's lines and the choice."""
    selection: Selection | None = None

    @classmethod
    def of(cls, report: OptimizationReport, selection: Selection) -> "TargetReport":
        return cls(**{f.name: getattr(report, f.name) for f in fields(OptimizationReport)}, selection=selection)

    def to_dict(self) -> dict:
        data = OptimizationReport.to_dict(self)
        data.pop("selection")
        return {**data, "for": self.selection.to_dict()}

    def format_text(self) -> str:
        return OptimizationReport.format_text(self) + "\n" + self.selection.format_text()
