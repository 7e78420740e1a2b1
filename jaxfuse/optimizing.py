"""`jaxfuse optimize` as a function: the exact fusion passes (passes.manager.optimize) for a
float target, or for a quantized one the fold that stays best after quantization
(quantized_target.optimize_for_quantization), with the note the command prints when a float
fold leaves ReLUs that int8 runs slowly."""
from __future__ import annotations

import os

from .ir import Model

TARGETS = ("float", "int8", "int16x8")


def standalone_relus(model: Model) -> int:
    return sum(op.type in ("RELU", "RELU6", "RELU_N1_TO_1") for op in model.main.ops)


def relu_note(model: Model, optimized: Model) -> str | None:
    """What a float-target optimize says when its fold leaves ReLUs as ops of their own."""
    added = standalone_relus(optimized) - standalone_relus(model)
    if added <= 0:
        return None
    return (f"{added} ReLU(s) are now RELU ops of their own: quantized to int8, LiteRT's XNNPACK delegate does not "
            "run those (measured on ResNet50V2: 2.8x slower with 1 thread), and the full fold changes int8 ranges "
            "(-0.5 dB SQNR there): for a model you will quantize, use --for int8")


def optimize(model, passes=None, target: str = "float", calibration=None, samples: int | None = None,
             seed: int = 0, max_sqnr_loss: float | None = None, **options):
    """(optimized copy, report): `jaxfuse optimize` as a function; the input model is not
    changed. `model`: a Model or a path.

    target "float": every exact pass (or `passes`, names or Pass instances), each rewrite
    checked, then the whole model (options: verify, inputs (samples, a SampleSet or an .npz
    path), tolerance, lossy_float16, see jaxfuse.passes.manager.optimize); the report is an
    OptimizationReport.
    target "int8" / "int16x8": the exact fold that stays best after quantization with
    ai-edge-quantizer on `calibration` (an .npz path, a SampleSet or a list of samples;
    None: `samples` seeded random ones, default 32), within `max_sqnr_loss` dB (default
    0.3) of the quantized unfused model; the report is a quantized_target.TargetReport
    (report.selection: the candidates and the choice). The result is still a float model.
    A whole-model mismatch raises equivalence.VerificationError (its .report has the details).

    >>> import jaxfuse
    >>> fused, report = jaxfuse.optimize("examples/models/resnet50v2_tiny.tflite")
    >>> report.ops_before, report.ops_after, report.verification.ok
    (115, 94, True)
    >>> report.to_dict()["passes"]["fuse_preactivation_batchnorm"]["fused"]
    17
    """
    if isinstance(model, (str, os.PathLike)):
        from .io import read
        model = read(os.fspath(model)).validate()
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (known: {', '.join(TARGETS)})")
    if isinstance(options.get("inputs"), (str, os.PathLike)):  # an .npz file or directory of samples
        from .samples import open_samples
        options["inputs"] = open_samples(os.fspath(options["inputs"]), model.main.inputs)
    if target == "float":
        from .passes import optimize as optimize_passes
        optimized, report = optimize_passes(model, passes, **options)
        note = relu_note(model, optimized)
        if note is not None:
            report.notes.append(note)
        return optimized, report
    from .quantized_target import DEFAULT_MAX_LOSS, TargetReport, optimize_for_quantization
    from .samples import calibration_samples, unique_names
    max_loss = DEFAULT_MAX_LOSS if max_sqnr_loss is None else max_sqnr_loss
    if not max_loss >= 0:
        raise ValueError(f"--max-sqnr-loss must be at least 0, got {max_sqnr_loss}")
    unique_names(model.main.inputs, "input", "model")
    chosen, _ = calibration_samples(calibration, model.main.inputs, samples, seed)
    optimized, report, selection = optimize_for_quantization(model, chosen, chosen, target, passes, max_loss,
                                                             **options)
    return optimized, TargetReport.of(report, selection)
