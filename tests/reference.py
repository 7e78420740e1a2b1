"""Run models in the reference engines: LiteRT (the TFLite runtime) and onert (Samsung ONE).

run_litert uses LiteRT's builtin kernels without the default XNNPACK delegate, so the
reference is the kernels that define TFLite semantics. onert 0.1.0 can crash the
process (models whose buffers live after the flatbuffer, ops its cpu backend lacks), so
run_onert runs it in a child process and turns a crash into OnertCrash.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

import jaxfuse.io

ONERT_AVAILABLE = find_spec("onert") is not None
requires_onert = pytest.mark.skipif(
    not ONERT_AVAILABLE, reason="onert wheels exist only for Linux x86_64 CPython 3.11 "
    f"(this is {platform.system()} {platform.machine()} CPython {platform.python_version()})")


class OnertCrash(RuntimeError):
    """onert failed or killed its process."""


def relative_error(a, b) -> float:
    """max|a - b| / max(max|b|, tiny): the error of `a` relative to the scale of the reference `b`."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), np.finfo(np.float32).tiny))


def _tflite_bytes(path_or_bytes) -> bytes:
    data = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    if bytes(data[4:8]) == b"CIR0":  # LiteRT refuses the circle identifier
        data = jaxfuse.io.to_bytes(jaxfuse.io.read_bytes(data), "tflite")
    return bytes(data)


def run_litert(path_or_bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs of the model (a .tflite/.circle path or bytes) in graph output order."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=_tflite_bytes(path_or_bytes),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    details = interp.get_input_details()
    if len(details) != len(inputs):
        raise ValueError(f"model has {len(details)} inputs, got {len(inputs)}")
    for d, x in zip(details, inputs):
        if tuple(d["shape"]) != np.shape(x):
            interp.resize_tensor_input(d["index"], np.shape(x))
    interp.allocate_tensors()
    for d, x in zip(details, inputs):
        interp.set_tensor(d["index"], np.asarray(x, d["dtype"]))
    interp.invoke()
    return [np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()]


def run_onert(path_or_bytes, inputs: list[np.ndarray], timeout: float = 600) -> list[np.ndarray]:
    """Outputs of the model in onert's cpu backend, computed in a child process.

    A path is read by extension (.tflite or .circle); bytes are written to a .circle file.
    """
    with tempfile.TemporaryDirectory(prefix="jaxfuse-onert-") as tmp:
        if isinstance(path_or_bytes, (bytes, bytearray)):
            path = os.path.join(tmp, "model.circle" if bytes(path_or_bytes[4:8]) == b"CIR0" else "model.tflite")
            with open(path, "wb") as f:
                f.write(path_or_bytes)
        else:
            path = os.fspath(path_or_bytes)
        inp, out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(inp, *[np.asarray(x) for x in inputs])
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), path, inp, out],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise OnertCrash(f"onert failed on {path} ({how}): {tail[0]}")
        with np.load(out) as result:
            return [result[f"arr_{i}"] for i in range(len(result.files))]


def _onert_child(path: str, inp: str, out: str) -> None:
    from onert.infer import session

    with np.load(inp) as data:
        inputs = [data[f"arr_{i}"] for i in range(len(data.files))]
    outputs = session(path, "cpu").infer(inputs)
    np.savez(out, *[np.array(o) for o in outputs])


def logits_copy(model):
    """A copy of `model` whose final SOFTMAX is removed, so its output is the logits."""
    model = model.copy()
    g = model.main
    producer = g.producer(g.outputs[0])
    if producer is not None and producer.type == "SOFTMAX":
        g.outputs = [producer.inputs[0] if t is producer.outputs[0] else t for t in g.outputs]
        model.signatures = []  # they name the softmax output
        g.cleanup()
    return model

if __name__ == "__main__":
    _onert_child(*sys.argv[1:4])

