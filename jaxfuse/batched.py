"""Whole-model inference over a sample set: `jaxfuse run --inputs` with many samples.

A model with resource variables takes the samples as its steps: one after the other, in order,
from the state its init subgraphs give (jaxfuse.lowering.stateful.run_steps).

The model is one jit-compiled XLA program (XLA's optimizations, programs.RUN_COMPILER_OPTIONS:
this is a run, not a check), vmapped over chunks of samples and sharded over the local devices, each
process of a jax.distributed run taking its share of the chunks (see jaxfuse.distributed).
"""
from __future__ import annotations

import math

import numpy as np

from .ir import Model
from .programs import RUN_COMPILER_OPTIONS, compile_with_options
from .samples import SampleSet
from .segmented import Placement, SegmentedRun


def run_model(model: Model, samples: SampleSet, devices=None, chunk: int | None = None,
              progress_bar=None) -> list[np.ndarray]:
    """The outputs of the model's main graph for every sample: per output an array
    [N, *output_shape] in sample order (on every process of a distributed run)."""
    import jax
    from .distributed import allgather_rows, chunk_groups, share
    from .equivalence import chunk_size
    from .lowering import lower, resource_variables, run_steps

    graph = model.main
    total = len(samples)
    if resource_variables(model):  # a stateful model: the samples are its steps, in order
        return run_steps(model, samples.take(np.arange(total)))[0]
    fn, params = lower(model)
    keys = list(params)
    devices = list(devices) if devices else jax.local_devices()
    size = chunk or chunk_size(total, SegmentedRun(graph).bytes_per_sample(), devices[0].platform)
    chunks = share(math.ceil(total / size))
    used = max(1, min(len(devices), len(chunks)))
    placement = Placement(devices[:used])
    flat = placement.put_params([params[k] for k in keys])
    del params

    def step(flat_params, *xs):
        return fn(dict(zip(keys, flat_params)), *xs)

    vstep = jax.vmap(step, in_axes=(None,) + (0,) * len(graph.inputs))
    shardings = placement.shardings((flat, *graph.inputs))
    compiled = None
    indices_done, rows = [], [[] for _ in graph.outputs]
    for indices, valid in chunk_groups(chunks, used, size, total):
        batch = [placement.put_batch(x) for x in samples.take(indices)]
        if compiled is None:
            compiled = compile_with_options(jax.jit(vstep, **shardings).lower(flat, *batch), RUN_COMPILER_OPTIONS)
        outputs = compiled(flat, *batch)
        for i, out in enumerate(outputs):
            rows[i].append(np.asarray(out)[valid])
        indices_done.append(indices[valid])
        if progress_bar is not None:
            progress_bar.update(int(valid.sum()))
    local_indices = np.concatenate(indices_done) if indices_done else np.zeros(0, np.int64)
    results = []
    for i, t in enumerate(graph.outputs):
        local = np.concatenate(rows[i]) if rows[i] else np.zeros((0, *t.shape), t.dtype or np.float32)
        gathered_indices, gathered = allgather_rows(local_indices, local)
        results.append(gathered[np.argsort(gathered_indices, kind="stable")])
    return results
