"""`jaxfuse verify` as a function (equivalence.compare on models or paths) and the text the
command prints of its VerifyReport (VerifyReport.format_text)."""
from __future__ import annotations

import os

from .numerics import short_name


def verify(reference, candidate, inputs=None, **options):
    """Compare two models (Models or paths) through JAX on the same inputs: their outputs
    and every tensor they share by name. A VerifyReport: `ok`, the errors (float models:
    relative to each tensor's scale; quantized ones: in LSB; float vs quantized: SQNR), the
    first divergent tensor; `to_dict()` is `jaxfuse verify --json`, `format_text()` its text.

    inputs: a list of samples (each a list of arrays in graph-input order), a SampleSet, or
    an .npz path (samples.open_samples); default: seeded random samples. Options: tolerance,
    max_lsb, min_sqnr, seed, num_samples (see jaxfuse.equivalence.compare).

    >>> import jaxfuse
    >>> m = jaxfuse.load("examples/models/resnet50v2_tiny.tflite")
    >>> fused, _ = jaxfuse.optimize(m, verify=False)
    >>> report = jaxfuse.verify(m, fused, num_samples=1)
    >>> report.ok, report.to_dict()["samples"]
    (True, 1)
    >>> print(report.format_text("original", "fused").split(":")[0])
    original vs fused
    """
    from .equivalence import compare
    from .io import read

    reference = read(os.fspath(reference)).validate() if isinstance(reference, (str, os.PathLike)) else reference
    candidate = read(os.fspath(candidate)).validate() if isinstance(candidate, (str, os.PathLike)) else candidate
    if isinstance(inputs, (str, os.PathLike)):
        from .samples import open_samples
        inputs = open_samples(os.fspath(inputs), reference.main.inputs)
    return compare(reference, candidate, inputs, **options)


def format_verify_text(report, reference: str = "reference", candidate: str = "candidate") -> str:
    """What `jaxfuse verify` prints: the summary line, one line per output (with several
    samples: the 99th percentile, the worst sample, top-1 agreement) and, for quantized
    models, the tensors with the lowest SQNR."""
    lines = [f"{reference} vs {candidate}: {report.summary()}"]
    for o in report.outputs:
        lines.append(f"  output '{o.name}': {format_diff(o)}{_format_samples(o, report.samples)}")
    if report.mode != "float":
        for t in report.worst_tensors:
            lines.append(f"  lowest SQNR: '{short_name(t.name)}': {format_diff(t)}")
    return "\n".join(lines)


def format_diff(d) -> str:
    if d.kind == "quantized":
        return (f"max {d.lsb_error:.3g} LSB, {d.within_1_lsb:.3%} of elements within 1 LSB, "
                f"SQNR {d.sqnr_db:.2f} dB")
    if d.kind == "float-vs-quantized":
        return f"SQNR {d.sqnr_db:.2f} dB, max abs error {d.max_abs_error:.3g} (scale {d.scale:.3g})"
    return f"max abs error {d.max_abs_error:.3g}, scale {d.scale:.3g}, relative {d.rel_error:.3g}"


def _format_samples(d, samples: int) -> str:
    """Per-sample figures of an output: 99th percentile, worst sample, top-1 agreement."""
    if d.worst_sample is None or samples < 2:
        return ""
    unit = " LSB" if d.kind == "quantized" else " of the scale"
    text = f"; over {samples} samples: 99th percentile {d.p99_error:.3g}{unit}, worst sample {d.worst_sample}"
    if d.top1_agreement is not None:
        text += f", top-1 agreement {d.top1_agreement:.2%}"
    return text


def failing_model(labels: list[str], models: list) -> str | None:
    """The label of the first model whose lowering fails when traced on its input shapes
    (which of two models a LoweringError from a comparison came from)."""
    import jax

    from .lowering import LoweringError, lower, resource_variables
    for label, model in zip(labels, models):
        try:
            fn, params = lower(model)
            jax.eval_shape(fn, params, *[jax.ShapeDtypeStruct(t.shape, t.dtype) for t in model.main.inputs],
                           *[jax.ShapeDtypeStruct(v.shape, v.dtype) for v in resource_variables(model)])
        except LoweringError:
            return label
    return None
