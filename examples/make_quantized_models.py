#!/usr/bin/env python3
"""Make the committed quantized fixtures from the committed float ones.

Each fixture is a float model of examples/models/ quantized by Google's ai-edge-quantizer
(its static post-training recipes, through ``jaxfuse.quantization.quantize``), calibrated
on seeded random samples: ``jaxfuse.numerics.random_inputs`` with CALIBRATION_SEED, that is
standard normal floats, the distribution the float fixtures are checked on. The bytes
written are the quantizer's own output, untouched.

Fixtures (``<name>.tflite`` + a ``<name>.json`` sidecar):

    resnet50v2_tiny_int8         resnet50v2_tiny        int8    (int8 weights per channel, int8 activations)
    mobilenetv2_tiny_int8        mobilenetv2_tiny       int8
    resnet50v2_tiny_mixed_int8   resnet50v2_tiny_mixed  int8    (negative and zero batch-norm gammas)
    resnet50v2_tiny_int16x8      resnet50v2_tiny        int16x8 (int8 weights, int16 activations)
    misc_ops_tiny_int8           misc_ops_tiny          int8    (TRANSPOSE_CONV, HARD_SWISH, LOGISTIC,
                                                                 TANH, CONCATENATION, AVERAGE_POOL_2D,
                                                                 RESHAPE, ... in one model)
    vit_tiny_mixed_logits_int8   vit_tiny_mixed_logits  int8    (pre-LN ViT: BATCH_MATMUL, SQUARED_DIFFERENCE,
                                                                 RSQRT, GELU, TRANSPOSE, SOFTMAX; each NEG
                                                                 stays float between DEQUANTIZE and QUANTIZE)

There is no uint8 fixture: ai-edge-quantizer writes int8 and int16 activations only, and no
other quantizer is installed here (TensorFlow's converter is not a dependency of this script).

Each model is quantized twice and the two results must be byte-identical (the script
refuses otherwise), so a run reproduces the committed files exactly; ``--check`` rebuilds
them in memory and compares with the files in --out-dir instead of writing.

The sidecar records the source model (file and sha256), the scheme and the quantizer's
recipe, the calibration (seed, sample count, distribution), the versions, size and sha256,
the inputs and outputs with their scale and zero point, the op histogram, the quantization
summary ``jaxfuse inspect`` prints, and a check on CHECK_SAMPLES seeded random samples
(seed CHECK_SEED, drawn for the float model as ``jaxfuse verify`` draws them): the SQNR in
dB of the quantized model's dequantized output against the float model's, through jaxfuse
(``jaxfuse.equivalence.compare``, the figure ``jaxfuse verify FLOAT QUANTIZED --samples 4``
prints) and through LiteRT's builtin kernels, and how many LSB jaxfuse's output is from
LiteRT's there.

Examples::

    python examples/make_quantized_models.py              # (re)write the fixtures in examples/models/
    python examples/make_quantized_models.py --check      # do the committed files match?
    python examples/make_quantized_models.py misc_ops_tiny_int8 --out-dir /tmp/q

Requires ai-edge-quantizer (the ``quantize`` extra) and ai-edge-litert; no TensorFlow.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

import jaxfuse
from jaxfuse.io import read_bytes
from jaxfuse.numerics import random_inputs

MODELS = Path(__file__).resolve().parent / "models"
CALIBRATION_SEED = 0
CALIBRATION_SAMPLES = 32
CHECK_SEED = 0
CHECK_SAMPLES = 4


@dataclass(frozen=True)
class Fixture:
    name: str
    source: str   # stem of the float model in examples/models/
    scheme: str   # a key of jaxfuse.quantization.SCHEMES
    summary_scheme: str = ""  # what `jaxfuse inspect` calls the result, when not `scheme` ("mixed": float islands)


FIXTURES = [
    Fixture("resnet50v2_tiny_int8", "resnet50v2_tiny", "int8"),
    Fixture("mobilenetv2_tiny_int8", "mobilenetv2_tiny", "int8"),
    Fixture("resnet50v2_tiny_mixed_int8", "resnet50v2_tiny_mixed", "int8"),
    Fixture("resnet50v2_tiny_int16x8", "resnet50v2_tiny", "int16x8"),
    Fixture("misc_ops_tiny_int8", "misc_ops_tiny", "int8"),
    Fixture("vit_tiny_mixed_logits_int8", "vit_tiny_mixed_logits", "int8", summary_scheme="mixed"),
]
BY_NAME = {f.name: f for f in FIXTURES}


class GenerationError(RuntimeError):
    pass


def calibration_samples(model, count: int = CALIBRATION_SAMPLES, seed: int = CALIBRATION_SEED):
    return random_inputs(model.main, count, seed)


def build(fixture: Fixture, source_dir: Path = MODELS) -> bytes:
    """The quantized model's bytes, exactly as ai-edge-quantizer writes them; quantized twice,
    the two results must be identical."""
    from jaxfuse.summary import quantization_summary
    from jaxfuse.quantization import quantize

    model = jaxfuse.load(source_dir / f"{fixture.source}.tflite")
    samples = calibration_samples(model)
    first = quantize(model, samples, fixture.scheme)
    second = quantize(model, samples, fixture.scheme)
    if first.tflite_bytes != second.tflite_bytes:
        raise GenerationError(f"{fixture.name}: ai-edge-quantizer gave different bytes on two runs with the same "
                              "calibration samples")
    scheme = quantization_summary(first.model)["scheme"]
    if scheme != (fixture.summary_scheme or fixture.scheme):
        raise GenerationError(f"{fixture.name}: the quantized model's scheme is {scheme!r}, expected "
                              f"{fixture.summary_scheme or fixture.scheme!r} (some op stayed float?)")
    return first.tflite_bytes


def _io_info(tensor) -> dict:
    q = tensor.quantization
    return {"name": tensor.name, "shape": [int(d) for d in tensor.shape], "dtype": str(tensor.dtype),
            "scale": [float(s) for s in q.scale], "zero_point": [int(z) for z in q.zero_point]}


def check(float_model, quantized_bytes: bytes) -> dict:
    """SQNR of the quantized model against the float one through jaxfuse and through LiteRT,
    and jaxfuse's distance to LiteRT in LSB, on the same seeded samples."""
    import jax

    from jaxfuse.engines import run_litert
    from jaxfuse.equivalence import compare
    from jaxfuse.io import to_bytes
    from jaxfuse.numerics import convert_sample, dequantize, sqnr_db

    quantized = read_bytes(quantized_bytes)
    samples = random_inputs(float_model.main, CHECK_SAMPLES, CHECK_SEED)
    report = compare(float_model, quantized, samples)
    (ours_sqnr,) = [o.sqnr_db for o in report.outputs]
    fn, params = jaxfuse.lower(quantized)
    jitted = jax.jit(fn)
    float_bytes = to_bytes(float_model, "tflite")
    signal = noise = 0.0
    worst_lsb = 0
    (out,) = quantized.main.outputs
    for sample in samples:
        inputs = convert_sample(sample, float_model.main.inputs, quantized.main.inputs)
        (reference,) = run_litert(float_bytes, sample)
        (litert,) = run_litert(quantized_bytes, inputs)
        (ours,) = [np.asarray(y) for y in jitted(params, *inputs)]
        reference = np.asarray(reference, np.float64)
        signal += float(np.sum(reference ** 2))
        noise += float(np.sum((reference - dequantize(litert, out)) ** 2))
        worst_lsb = max(worst_lsb, int(np.max(np.abs(ours.astype(np.int64) - litert.astype(np.int64)))))
    return {"samples": CHECK_SAMPLES, "seed": CHECK_SEED,
            "inputs": "jaxfuse.numerics.random_inputs of the float model (standard normal), quantized with the "
                      "input's scale and zero point",
            "sqnr_db_jaxfuse": round(ours_sqnr, 4), "sqnr_db_litert": round(sqnr_db(signal, noise), 4),
            "jaxfuse_vs_litert_max_lsb": worst_lsb}


def record(fixture: Fixture, data: bytes, source_dir: Path = MODELS) -> dict:
    from jaxfuse.summary import quantization_summary
    from jaxfuse.quantization import SCHEMES

    source_path = source_dir / f"{fixture.source}.tflite"
    float_model = jaxfuse.load(source_path)
    model = read_bytes(data)
    histogram = model.op_histogram()
    return {
        "file": f"{fixture.name}.tflite",
        "model": fixture.name,
        "generator": "examples/make_quantized_models.py",
        "source": {"file": source_path.name, "sha256": hashlib.sha256(source_path.read_bytes()).hexdigest()},
        "scheme": fixture.scheme,
        "scheme_description": SCHEMES[fixture.scheme][1],
        "recipe": f"ai_edge_quantizer.recipe.{SCHEMES[fixture.scheme][0]}()",
        "calibration": {"seed": CALIBRATION_SEED, "samples": CALIBRATION_SAMPLES,
                        "distribution": "jaxfuse.numerics.random_inputs (standard normal floats)"},
        "versions": {name: version(name) for name in ("ai-edge-quantizer", "ai-edge-litert", "numpy", "jax")},
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "inputs": [_io_info(t) for t in model.main.inputs],
        "outputs": [_io_info(t) for t in model.main.outputs],
        "num_ops": sum(histogram.values()),
        "op_histogram": histogram,
        "quantization": quantization_summary(model),
        "check": check(float_model, data),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Make the quantized fixtures of examples/models/ with ai-edge-quantizer.",
                                epilog="fixtures: " + ", ".join(BY_NAME))
    p.add_argument("names", nargs="*", metavar="NAME", help="fixtures to make (default: all)")
    p.add_argument("--out-dir", type=Path, default=MODELS, help=f"where to write (default {MODELS})")
    p.add_argument("--check", action="store_true",
                   help="rebuild in memory and compare with the files in --out-dir; write nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [n for n in args.names if n not in BY_NAME]
    if unknown:
        print(f"unknown fixture(s): {', '.join(unknown)} (known: {', '.join(BY_NAME)})", file=sys.stderr)
        return 2
    stale = []
    for fixture in [BY_NAME[n] for n in args.names] or FIXTURES:
        data = build(fixture)
        path = args.out_dir / f"{fixture.name}.tflite"
        if args.check:
            same = path.is_file() and path.read_bytes() == data
            print(f"{fixture.name}: {'matches' if same else 'DIFFERS from'} {path}")
            stale += [] if same else [fixture.name]
            continue
        info = record(fixture, data)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        (args.out_dir / f"{fixture.name}.json").write_text(json.dumps(info, indent=2) + "\n")
        c = info["check"]
        print(f"{path}: {info['size_bytes']} bytes, {info['num_ops']} ops, {fixture.scheme}; SQNR "
              f"{c['sqnr_db_jaxfuse']:.2f} dB (jaxfuse) / {c['sqnr_db_litert']:.2f} dB (LiteRT), jaxfuse vs LiteRT "
              f"max {c['jaxfuse_vs_litert_max_lsb']} LSB")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
