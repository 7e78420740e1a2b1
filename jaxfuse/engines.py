"""Run models in independent reference engines: LiteRT (the TFLite runtime) and onert
(Samsung ONE's runtime). Both are optional dependencies (the `test` extra).

run_litert uses LiteRT's builtin kernels without the default XNNPACK delegate, so the
reference is the kernels that define TFLite semantics. LiteRT refuses the circle file
identifier, so circle models run through a TFL3 copy. onert 0.1.0 can crash its process
(models whose buffers live after the flatbuffer, ops its cpu backend lacks), so run_onert
runs it in a child process and turns a crash into OnertCrash.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from importlib.util import find_spec

import numpy as np

from . import io
from .numerics import error_stats

ONERT_AVAILABLE = find_spec("onert") is not None
LITERT_AVAILABLE = find_spec("ai_edge_litert") is not None


class OnertCrash(RuntimeError):
    """onert failed or killed its process."""


def _tflite_bytes(path_or_bytes) -> bytes:
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data = bytes(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            data = f.read()
    if data[4:8] == b"CIR0":  # LiteRT refuses the circle identifier
        data = io.to_bytes(io.read_bytes(data), "tflite")
    return data


def litert_interpreter(path_or_bytes, num_threads: int | None = None, allocate: bool = True):
    """A LiteRT interpreter with builtin kernels (no default delegate), allocated unless
    `allocate` is False (a dynamic model may not even prepare at its stored input shapes:
    resize its inputs first)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=_tflite_bytes(path_or_bytes), num_threads=num_threads,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    if allocate:
        interp.allocate_tensors()
    return interp


def run_litert(path_or_bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs of the model (a .tflite/.circle path or bytes) in graph output order."""
    interp = litert_interpreter(path_or_bytes, allocate=False)
    details = interp.get_input_details()
    if len(details) != len(inputs):
        raise ValueError(f"model has {len(details)} inputs, got {len(inputs)}")
    for d, x in zip(details, inputs):
        if tuple(d["shape"]) != np.shape(x):
            interp.resize_tensor_input(d["index"], np.shape(x))
    interp.allocate_tensors()  # every shape computed from the inputs' (as jaxfuse.shapes does)
    for d, x in zip(details, inputs):
        interp.set_tensor(d["index"], np.asarray(x, d["dtype"]))
    interp.invoke()
    return [np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()]


def run_onert(path_or_bytes, inputs: list[np.ndarray], timeout: float = 600) -> list[np.ndarray]:
    """Outputs of the model in onert's cpu backend, computed in a child process.

    A path is read by extension (.tflite or .circle); bytes are written to a file first.
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
        proc = subprocess.run([sys.executable, "-m", "jaxfuse.engines", path, inp, out],
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


def relative_error(candidate, reference) -> float:
    """max|candidate - reference| / max|reference|: the error relative to the reference's scale."""
    if np.shape(candidate) != np.shape(reference):
        raise ValueError(f"shapes differ: {np.shape(candidate)} vs {np.shape(reference)}")
    return error_stats(reference, candidate)[2]


def final_softmax(graph):
    """The SOFTMAX op producing the graph's first output, or None."""
    op = graph.producer(graph.outputs[0])
    return op if op is not None and op.type == "SOFTMAX" else None


def logits_copy(model):
    """A copy of `model` without its final SOFTMAX, so its output is the logits (signature
    defs follow the output)."""
    model = model.copy()
    g = model.main
    softmax = final_softmax(g)
    if softmax is not None:
        probs, logits = softmax.outputs[0], softmax.inputs[0]
        g.replace_all_uses(probs, logits).remove_op(softmax).cleanup()
        for s in model.signatures:
            s.outputs = [(key, logits if t is probs else t) for key, t in s.outputs]
    return model


if __name__ == "__main__":
    _onert_child(*sys.argv[1:4])
