"""Fuse a float model for int8, quantize it and the original, and compare them, from Python.

    python examples/quantize_and_compare.py [MODEL] [--samples N]

Every fold is exact in float, but quantization sees folds differently, so
`jaxfuse.optimize(target="int8")` quantizes each candidate fold with ai-edge-quantizer and
keeps the one with the fewest ops that loses at most 0.3 dB of SQNR. Then both the fused
and the unfused model are quantized on the same calibration samples (`jaxfuse.quantize`,
which checks each against its float model through jaxfuse and LiteRT), and
`jaxfuse.verify` measures the SQNR of each quantized model against the float original.
Needs ai-edge-quantizer (pip install 'jaxfuse[quantize]').
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import jaxfuse

HERE = os.path.dirname(os.path.abspath(__file__))


def main(model_path: str = os.path.join(HERE, "models", "resnet50v2_tiny.tflite"), samples: int = 16):
    model = jaxfuse.load(model_path)
    rng = np.random.default_rng(0)
    calibration = [[rng.standard_normal(tuple(t.shape)).astype(t.dtype) for t in model.main.inputs]
                   for _ in range(samples)]

    fused, report = jaxfuse.optimize(model, target="int8", calibration=calibration)
    print(report.selection.format_text())
    sqnr = {}
    for name, candidate in (("unfused", model), ("fused", fused)):
        quantized, check = jaxfuse.quantize(candidate, calibration)
        print(f"{name}: {check.format_text().splitlines()[2].strip()}")  # ops and bytes before -> after
        verdict = jaxfuse.verify(model, quantized, calibration[:4])  # float original vs quantized
        sqnr[name] = min(o.sqnr_db for o in verdict.outputs)
        print(f"{name}: {verdict.format_text('float', 'int8')}")
    print(f"SQNR against the float model: unfused {sqnr['unfused']:.2f} dB, fused {sqnr['fused']:.2f} dB")
    return report, sqnr


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default=os.path.join(HERE, "models", "resnet50v2_tiny.tflite"))
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    main(args.model, args.samples)
