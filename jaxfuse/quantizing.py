"""What `jaxfuse quantize` does: quantize a float model with ai-edge-quantizer
(quantization.quantize) and check the result against the float model, through jaxfuse's
own quantized lowering and through LiteRT (check_quantized), as `jaxfuse.quantize`, which
returns the quantized model and a QuantizeReport (`to_dict()`: the --report JSON;
`format_text()`: what the command prints)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from .ir import Model
from .numerics import json_safe, short_name
from .quantization import SCHEMES, Quantized

CHECK_SAMPLES = 8  # calibration samples the check runs on


@dataclass
class QuantizeReport:
    input: str | None
    output: str | None        # the file written; None when nothing was (yet)
    scheme: str
    scheme_description: str
    quantizer: str
    calibration: str          # where the calibration samples came from
    calibration_samples: int
    ops: dict
    bytes: dict
    check: dict               # check_quantized's verdict
    timings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every output reached the minimum SQNR (the command writes the model only then)."""
        return bool(self.check["ok"])

    def to_dict(self) -> dict:
        """What `jaxfuse quantize --report` writes."""
        return json_safe({"input": self.input, "output": self.output, "scheme": self.scheme,
                          "scheme_description": self.scheme_description, "quantizer": self.quantizer,
                          "calibration": self.calibration, "calibration_samples": self.calibration_samples,
                          "ops": self.ops, "bytes": self.bytes, "check": self.check, "timings": self.timings})

    def format_text(self) -> str:
        """What `jaxfuse quantize` prints on stdout."""
        check = self.check
        lines = [f"{self.input or 'model'} -> {self.output or '(nothing written)'}: {self.scheme} ({self.scheme_description}), "
                 f"{self.quantizer}",
                 f"  calibration: {self.calibration}",
                 f"  ops {self.ops['before']} -> {self.ops['after']}, constants {self.bytes['before']} -> "
                 f"{self.bytes['after']} bytes",
                 f"  check on {check['samples']} calibration sample(s), float model vs quantized model:"]
        for out in check["outputs"]:
            line = f"    output '{out['name']}': SQNR {out['sqnr_db']:.2f} dB through jaxfuse"
            if out.get("litert_sqnr_db") is not None:
                line += (f", {out['litert_sqnr_db']:.2f} dB through LiteRT; jaxfuse vs LiteRT: max "
                         f"{out['jaxfuse_vs_litert_max_lsb']} LSB, {out['jaxfuse_vs_litert_within_1_lsb']:.3%} within "
                         "1 LSB")
            lines.append(line)
        if check["litert"] is not None:
            lines.append(f"    LiteRT: {check['litert']}")
        lines.append("  lowest SQNR tensors: " + ", ".join(f"'{short_name(w['name'])}' {w['sqnr_db']:.1f} dB"
                                                         for w in check["worst_tensors"]))
        lines.append("  time: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items()))
        return "\n".join(lines)


def check_quantized(model: Model, result: Quantized, samples: list[list[np.ndarray]],
                    min_sqnr: float | None = None) -> dict:
    """SQNR of the quantized model against the float one through jaxfuse's lowering, and
    the same through LiteRT with the LSB agreement of the two lowerings. Raises LoweringError
    when the quantized model cannot be lowered."""
    from . import io
    from .engines import LITERT_AVAILABLE, run_litert
    from .equivalence import compare
    from .numerics import convert_sample, dequantize, sqnr_db
    from .lowering import lower

    verdict = compare(model, result.model, samples, min_sqnr=min_sqnr)
    outputs = [{"name": o.name, "sqnr_db": o.sqnr_db} for o in verdict.outputs]
    litert_note = None
    if LITERT_AVAILABLE:
        from .xla import jit
        float_model, quantized = model.main, result.model.main
        fn, params = lower(result.model)
        jitted = jit(fn)
        float_bytes = io.to_bytes(model, "tflite")
        signal = [0.0] * len(outputs)
        noise = [0.0] * len(outputs)
        worst_lsb = [0] * len(outputs)
        within = [0] * len(outputs)
        count = [0] * len(outputs)
        for sample in samples:
            inputs = convert_sample(sample, float_model.inputs, quantized.inputs)
            reference = run_litert(float_bytes, sample)
            litert = run_litert(result.tflite_bytes, inputs)
            ours = [np.asarray(y) for y in jitted(params, *inputs)]
            for i, (ref, lit, own, t) in enumerate(zip(reference, litert, ours, quantized.outputs)):
                real = dequantize(lit, t)
                signal[i] += float(np.sum(np.asarray(ref, np.float64) ** 2))
                noise[i] += float(np.sum((np.asarray(ref, np.float64) - real) ** 2))
                diff = np.abs(own.astype(np.int64) - lit.astype(np.int64)) if own.dtype.kind in "iu" else \
                    np.abs(own.astype(np.float64) - lit.astype(np.float64)) / max(float(np.max(np.abs(lit))), 1e-30)
                worst_lsb[i] = max(worst_lsb[i], float(np.max(diff, initial=0)))
                within[i] += int(np.sum(diff <= 1))
                count[i] += diff.size
        for i, out in enumerate(outputs):
            out.update(litert_sqnr_db=sqnr_db(signal[i], noise[i]), jaxfuse_vs_litert_max_lsb=worst_lsb[i],
                       jaxfuse_vs_litert_within_1_lsb=within[i] / max(count[i], 1))
    else:
        litert_note = "ai-edge-litert is not installed: no cross-check"
    return {"ok": verdict.ok, "samples": len(samples), "min_sqnr": verdict.min_sqnr, "outputs": outputs,
            "worst_tensors": [{"name": w.name, "sqnr_db": w.sqnr_db} for w in verdict.worst_tensors],
            "litert": litert_note}


def already_quantized(model: Model) -> str | None:
    """The name of the model's first quantized integer tensor, if it has one."""
    return next((t.name for t in model.main.tensors if t.is_quantized and t.dtype is not None
                 and t.dtype.kind in "iu"), None)


def quantize_checked(model: Model, calibration: list[list[np.ndarray]], source: str, scheme: str = "int8",
                     min_sqnr: float | None = None, path: str | None = None) -> tuple[Quantized, QuantizeReport]:
    """(ai-edge-quantizer's result, QuantizeReport) for calibration samples already chosen;
    `source` says where they came from. The report's output is None and its timings are
    quantize and check (the command adds read, write and total)."""
    from .quantization import quantize as quantize_model

    timings = {}
    t = time.perf_counter()
    result = quantize_model(model, calibration, scheme)
    timings["quantize"] = time.perf_counter() - t
    t = time.perf_counter()
    check = check_quantized(model, result, calibration[:CHECK_SAMPLES], min_sqnr)
    timings["check"] = time.perf_counter() - t
    report = QuantizeReport(
        path, None, scheme, SCHEMES[scheme][1], f"ai-edge-quantizer {result.quantizer_version}", source,
        len(calibration), {"before": sum(model.op_histogram().values()),
                           "after": sum(result.model.op_histogram().values())},
        {"before": model.parameter_bytes(), "after": result.model.parameter_bytes()}, check, timings)
    return result, report


def quantize(model, calibration=None, scheme: str = "int8", samples: int | None = None, seed: int = 0,
             min_sqnr: float | None = None) -> tuple[Model, QuantizeReport]:
    """`jaxfuse quantize` as a function: (the quantized model, its QuantizeReport). The model
    (a Model or a path) is quantized with ai-edge-quantizer's static recipe for `scheme`
    ("int8" or "int16x8"), calibrated on `calibration` (an .npz path or directory, a
    SampleSet, a list of samples; None: `samples` seeded random ones), then checked against
    the float model on the first CHECK_SAMPLES calibration samples; report.ok is False when
    an output's SQNR is below `min_sqnr` (default 20 dB), where the command writes nothing.
    Raises QuantizerUnavailable, QuantizationError, or ValueError for an already quantized
    model.

    >>> import jaxfuse
    >>> q, report = jaxfuse.quantize("examples/models/misc_ops_tiny.tflite", samples=2)
    >>> report.ok, q.main.inputs[0].dtype.name, report.to_dict()["calibration_samples"]
    (True, 'int8', 2)
    >>> print(report.format_text().splitlines()[0].split(": ")[1])
    int8 (int8 weights (per channel), int8 activations), ai-edge-quantizer ...
    """
    from .samples import calibration_samples, unique_names

    path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    if path is not None:
        from .io import read
        model = read(path).validate()
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    name = already_quantized(model)
    if name is not None:
        raise ValueError(f"{path or 'model'}: is already quantized (tensor '{name}')")
    unique_names(model.main.inputs, "input", path or "model")
    chosen, source = calibration_samples(calibration, model.main.inputs, samples, seed, path or "model")
    result, report = quantize_checked(model, chosen, source, scheme, min_sqnr, path)
    return result.model, report
