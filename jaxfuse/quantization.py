"""Post-training quantization through Google's ai-edge-quantizer (the `quantize` extra:
`pip install 'jaxfuse[quantize]'`), checked afterwards with jaxfuse's own quantized lowering.

jaxfuse does not quantize by itself: the ranges, scales and rewritten graph are
ai-edge-quantizer's (its static recipes, calibrated on the given samples). What jaxfuse adds
is the plumbing users need around it (.circle in and out, a signature def when the model
has none, calibration samples from .npz files) and an independent check of the result:
the quantized model's SQNR against the float one through jaxfuse's integer lowering, and
the same figure through LiteRT.
"""
from __future__ import annotations

import contextlib
import io as _stdio
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np

from . import io
from .ir import Model, SignatureDef

# scheme -> (ai-edge-quantizer recipe function, what it means)
SCHEMES = {
    "int8": ("static_wi8_ai8", "int8 weights (per channel), int8 activations"),
    "int16x8": ("static_wi8_ai16", "int8 weights (per channel), int16 activations"),
}
DEFAULT_SIGNATURE_KEY = "serving_default"


class QuantizerUnavailable(RuntimeError):
    """ai-edge-quantizer is not installed."""


class QuantizationError(RuntimeError):
    """ai-edge-quantizer could not quantize the model; the message says why."""


@dataclass
class Quantized:
    model: Model
    tflite_bytes: bytes
    scheme: str
    quantizer_version: str


def quantizer_version() -> str:
    try:
        from importlib.metadata import version
        return version("ai-edge-quantizer")
    except Exception as e:
        raise QuantizerUnavailable("ai-edge-quantizer is not installed: pip install 'jaxfuse[quantize]'") from e


def with_signature(model: Model) -> tuple[Model, SignatureDef]:
    """The model and the signature def of its main graph, adding one (every graph input and
    output, named after its tensor) when the model has none: the quantizer needs one."""
    for signature in model.signatures:
        if signature.graph_index == 0:
            return model, signature
    model = model.copy()
    g = model.main
    signature = SignatureDef(DEFAULT_SIGNATURE_KEY, 0, [(t.name, t) for t in g.inputs], [(t.name, t) for t in g.outputs])
    model.signatures.append(signature)
    return model, signature


def quantize(model: Model, calibration: list[list[np.ndarray]], scheme: str = "int8") -> Quantized:
    """Quantize a float model with ai-edge-quantizer's static recipe for `scheme`,
    calibrated on `calibration` (samples: lists of arrays in graph-input order)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    version = quantizer_version()
    from ai_edge_quantizer import quantizer, recipe

    model, signature = with_signature(model)
    by_tensor = {id(t): key for key, t in signature.inputs}
    missing = [t.name for t in model.main.inputs if id(t) not in by_tensor]
    if missing:
        raise QuantizationError(f"the signature def '{signature.key}' does not list graph input '{missing[0]}'")
    keys = [by_tensor[id(t)] for t in model.main.inputs]
    data = {signature.key: [dict(zip(keys, sample)) for sample in calibration]}
    # The quantizer prints reports, progress bars, warnings and runtime log lines: keep the
    # caller's output its own.
    with _silenced():
        try:
            q = quantizer.Quantizer(bytearray(io.to_bytes(model, "tflite")))
            q.load_quantization_recipe(getattr(recipe, SCHEMES[scheme][0])())
            result = q.quantize(q.calibrate(data, num_threads=_threads()), enable_progress_report=False)
        except Exception as e:
            raise QuantizationError(f"ai-edge-quantizer failed: {type(e).__name__}: {e}") from None
    data = bytes(result.quantized_model)
    return Quantized(io.read_bytes(data), data, scheme, version)


def _threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@contextlib.contextmanager
def _silenced():
    """Nothing reaches stdout or stderr meanwhile: Python prints, warnings and tqdm bars, and
    the C++ runtime's log lines (written to file descriptors 1 and 2 directly)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(_stdio.StringIO()), contextlib.redirect_stderr(_stdio.StringIO()):
                yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
