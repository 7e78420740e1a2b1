"""Fuse a model's batch norms and verify the result over a data set, from Python only.

    python examples/fuse_and_verify.py [MODEL] [--samples N] [--out FUSED.circle]

The data set is an .npz keyed by input name with a leading sample axis (written here from
seeded random images; put your own there): `jaxfuse.optimize` checks every rewrite and the
whole model on it, `jaxfuse.verify` compares the two models over every sample (per output:
the worst error, its 99th percentile over the samples, the worst sample, top-1 agreement),
and `jaxfuse.run` gives the outputs themselves. The same as

    jaxfuse optimize MODEL -o FUSED.circle --inputs data.npz && jaxfuse verify MODEL FUSED.circle --inputs data.npz
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

import jaxfuse

HERE = os.path.dirname(os.path.abspath(__file__))


def main(model_path: str = os.path.join(HERE, "models", "resnet50v2_tiny.tflite"), samples: int = 8,
         out: str | None = None, folder: str | None = None):
    folder = folder or tempfile.mkdtemp(prefix="jaxfuse_example_")
    model = jaxfuse.load(model_path)
    summary = jaxfuse.inspect(model, model_path)
    print(f"{model_path}: {summary.op_count} ops, inputs {[t['shape'] for t in summary.inputs]}")

    rng = np.random.default_rng(0)
    data = os.path.join(folder, "data.npz")
    np.savez(data, **{t.name: rng.standard_normal((samples, *t.shape)).astype(t.dtype) for t in model.main.inputs})

    fused, report = jaxfuse.optimize(model, inputs=data)
    print(report.format_text())
    verdict = jaxfuse.verify(model, fused, data)
    print(verdict.format_text("original", "fused"))

    outputs = jaxfuse.run(fused, data)  # every sample at once, batched
    print("fused outputs:", [o.shape for o in outputs])
    if out is not None:
        jaxfuse.save(fused, out)
        print("wrote", out)
    return report, verdict, outputs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default=os.path.join(HERE, "models", "resnet50v2_tiny.tflite"))
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--out")
    args = parser.parse_args()
    main(args.model, args.samples, args.out)
