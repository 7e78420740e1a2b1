"""What `jaxfuse run` does: a model's main subgraph, lowered to JAX and jit-compiled, on one
sample or a sample set, as `jaxfuse.run` (the output arrays) and `run_report` (a RunResult
whose `format_text()` is what the command prints).

Inputs are one sample (a list of arrays in graph-input order, or a dict keyed by input
name), a list of samples, a SampleSet, or an .npz file or directory (samples.open_samples);
None draws one seeded random sample (samples.random_sample). Arrays must have the input's
shape and dtype, except that a float array for a quantized integer input holds real values,
which are quantized with that input's scale and zero point (round half to even, saturated,
as LiteRT's QUANTIZE); with raw=True integer inputs are required, as the model stores them.
The outputs keep the model's output types: a quantized model gives its integer outputs
(dequantize them with numerics.dequantize and the output tensor).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .ir import Model, Tensor
from .numerics import is_quantized_integer, quantize
from .samples import SINGLE, SampleError, SampleSet, open_samples, random_sample, unique_names

QUANTIZED_NOTE = "float values quantized with each input's scale and zero point"


@dataclass
class Inputs:
    """A model's inputs, checked: one sample of exactly the inputs' shapes, or a sample set."""
    sample: list[np.ndarray] | None
    dataset: SampleSet | None
    source: str              # where they come from, as `jaxfuse run` says it
    quantized: bool = False  # real (float) values were quantized for integer inputs

    @property
    def description(self) -> str:
        return self.source + (f" ({QUANTIZED_NOTE})" if self.quantized else "")


@dataclass
class RunResult:
    """The outputs of a run (one sample: the outputs' shapes; N samples: a leading sample
    axis, laid out as the inputs were) and where the inputs came from."""
    names: list[str]
    outputs: list[np.ndarray]
    inputs: str
    samples: int | None       # None: one sample, no sample axis
    quantized_inputs: bool

    def to_dict(self) -> dict:
        """The figures `jaxfuse run` prints (JSON-ready: shapes, dtypes and statistics)."""
        return {"inputs": self.inputs, "samples": self.samples, "quantized_inputs": self.quantized_inputs,
                "outputs": [{"name": n, "shape": list(a.shape), "dtype": str(a.dtype), **_statistics(a)}
                            for n, a in zip(self.names, self.outputs)]}

    def format_text(self) -> str:
        """What `jaxfuse run` prints: the inputs line, then one line per output."""
        width = max((len(n) for n in self.names), default=0)
        return "\n".join([f"inputs: {self.inputs}"] + [f"{n.ljust(width)}  {list(a.shape)}  {a.dtype}  {_stats_text(a)}"
                                                        for n, a in zip(self.names, self.outputs)])


def model_inputs(model: Model, inputs=None, raw: bool = False, seed: int = 0, path: str = "model") -> Inputs:
    """`inputs` (module docstring) checked against the model's graph inputs, without running
    anything; SampleError (one line naming the problem) when they do not fit."""
    tensors = model.main.inputs
    if inputs is None:
        return Inputs(random_sample(tensors, seed, path), None, f"random, seed {seed}")
    if isinstance(inputs, (str, os.PathLike)):
        unique_names(tensors, "input", path)
        dataset = open_samples(os.fspath(inputs), tensors, real=not raw)
        source = f"from {os.fspath(inputs)}"
        if len(dataset) == 1 and dataset.form == SINGLE:  # one sample of exactly the model's shapes
            return Inputs(dataset[0], None, source, dataset.quantizes)
        return Inputs(None, dataset, source + f" ({len(dataset)} samples)", dataset.quantizes)
    if isinstance(inputs, np.ndarray):  # one array: the one input of a one-input model
        inputs = [inputs]
    if isinstance(inputs, SampleSet):
        return Inputs(None, inputs, f"given ({len(inputs)} samples)", inputs.quantizes)
    if isinstance(inputs, dict) or (isinstance(inputs, (list, tuple)) and
                                    not any(isinstance(x, (list, tuple, dict)) for x in inputs)):
        sample, quantized = _checked(inputs, tensors, raw)
        return Inputs(sample, None, "given", quantized)
    checked = [_checked(s, tensors, raw) for s in inputs]
    return Inputs(None, SampleSet.from_list([s for s, _ in checked], tensors),
                  f"given ({len(checked)} samples)", any(q for _, q in checked))


def run_inputs(model: Model, prepared: Inputs) -> list[np.ndarray]:
    """The model's outputs on prepared inputs (jaxfuse.jit; a sample set batched and sharded over
    the local devices by batched.run_model; a stateful model's samples are its steps, in order). Raises LoweringError for an op it cannot lower."""
    from .lowering import lower, resource_variables, run_steps
    from .xla import jit

    if prepared.dataset is None and resource_variables(model):  # one step from the state the model starts in
        return [np.asarray(o[0]) for o in run_steps(model, [np.asarray(x)[None] for x in prepared.sample])[0]]
    if prepared.dataset is None:
        fn, params = lower(model)
        return [np.asarray(o) for o in jit(fn)(params, *prepared.sample)]  # tracing may reject an op too
    from . import progress
    from .batched import run_model
    with progress.bar(len(prepared.dataset), "running", "sample") as bar:
        outputs = run_model(model, prepared.dataset, progress_bar=bar)
    if prepared.dataset.form == "in place of batch":  # outputs [N, ...] in place of their batch of 1 too
        outputs = [o.reshape(o.shape[0], *o.shape[2:]) if o.ndim >= 2 and o.shape[1] == 1 else o for o in outputs]
    return outputs


def run_report(model, inputs=None, raw: bool = False, seed: int = 0) -> RunResult:
    """`jaxfuse run` as a function: the outputs and what the command prints about them.

    >>> import jaxfuse
    >>> result = run_report("examples/models/misc_ops_tiny.tflite", seed=1)
    >>> print(result.format_text().splitlines()[0])
    inputs: random, seed 1
    >>> result.to_dict()["outputs"][0]["shape"]
    [1, 10]
    """
    model, path = _model(model)
    prepared = model_inputs(model, inputs, raw, seed, path)
    names = unique_names(model.main.outputs, "output", path)
    outputs = run_inputs(model, prepared)
    return RunResult(names, outputs, prepared.description,
                     None if prepared.dataset is None else len(prepared.dataset), prepared.quantized)


def run(model, inputs=None, raw: bool = False, seed: int = 0) -> list[np.ndarray]:
    """The model's outputs (a list of arrays in graph-output order) on `inputs`: one sample
    (list of arrays, or dict by input name), a list of samples or a SampleSet (outputs then
    carry a leading sample axis), an .npz path, or None for one seeded random sample. Float
    inputs to a quantized model are quantized with each input's scale and zero point;
    raw=True requires the integer values themselves. Outputs keep the model's dtypes (a
    quantized model's are integers: dequantize with numerics.dequantize(array, tensor)).

    >>> import numpy as np, jaxfuse
    >>> x = np.zeros((1, 32, 32, 3), np.float32)
    >>> (probs,) = jaxfuse.run("examples/models/misc_ops_tiny.tflite", [x])
    >>> probs.shape, round(float(probs.sum()), 4)
    ((1, 10), 1.0)
    >>> [o.shape for o in jaxfuse.run("examples/models/misc_ops_tiny.tflite", [[x], [x + 1]])]
    [(2, 1, 10)]
    """
    return run_report(model, inputs, raw, seed).outputs


def _model(model) -> tuple[Model, str]:
    if isinstance(model, (str, os.PathLike)):
        from .io import read
        return read(os.fspath(model)).validate(), os.fspath(model)
    return model, "model"


def _checked(sample, tensors: list[Tensor], raw: bool) -> tuple[list[np.ndarray], bool]:
    """One in-memory sample as arrays in input order, each of its input's shape and dtype
    (real values quantized unless raw); and whether any was quantized."""
    if isinstance(sample, dict):
        names = [t.name for t in tensors]
        missing = [n for n in names if n not in sample]
        extra = [k for k in sample if k not in names]
        if missing or extra:
            raise SampleError(f"inputs: {'missing ' + repr(missing[0]) if missing else 'unexpected ' + repr(extra[0])}"
                              f" (the model's inputs are {', '.join(repr(n) for n in names) or 'none'})")
        sample = [sample[n] for n in names]
    if len(sample) != len(tensors):
        raise SampleError(f"inputs: {len(sample)} array(s) for {len(tensors)} graph input(s)")
    arrays, quantized = [], False
    for array, t in zip(sample, tensors):
        a = np.asarray(array)
        want = [int(d) for d in t.shape]
        if list(a.shape) != want:
            raise SampleError(f"inputs: input '{t.name}' has shape {list(a.shape)}, the model expects {want}")
        if a.dtype != t.dtype:
            if not raw and is_quantized_integer(t) and a.dtype.kind == "f":
                a, quantized = quantize(a, t), True
            else:
                raise SampleError(f"inputs: input '{t.name}' has dtype {a.dtype}, the model expects {t.dtype}")
        arrays.append(a)
    return arrays, quantized


def _stats_text(a: np.ndarray) -> str:
    s = _statistics(a)
    if not s:
        return "empty"
    prefix = "|x| " if a.dtype.kind == "c" else ""
    return f"{prefix}min {s['min']:.6g}  max {s['max']:.6g}  mean {s['mean']:.6g}"


def _statistics(a: np.ndarray) -> dict:
    """min, max and mean (of |x| for complex values, of 0/1 for bools); none when empty."""
    if a.size == 0:
        return {}
    if a.dtype.kind == "c":
        a = np.abs(a)
    if a.dtype.kind == "b":
        a = a.astype(np.int8)
    return {"min": a.min().item(), "max": a.max().item(), "mean": float(a.mean(dtype=np.float64))}
