"""Comparing models that only run whole: several subgraphs (IF, WHILE, CALL_ONCE) or resource
variables (a streaming model's state).

The segmented comparison (jaxfuse.equivalence.compare) lowers one graph piece by piece, and
control flow or a variable needs the whole model (lowering.WholeModelNeeded). Here each model
runs as jaxfuse.lower(model) does, and the figures go into the same VerifyReport:

- stateless (several subgraphs): the samples run one by one, outputs compared per sample;
- stateful: both models start from their init_state and take the samples as consecutive
  steps (in order; default at least DEFAULT_STEPS seeded random ones). Outputs are compared
  at every step (the per-sample figures are then per step), and every variable the two share
  (by VAR_HANDLE name) after every step, reported as the shared tensors ("state 'name'").
"""
from __future__ import annotations

import numpy as np

from .ir import Model, Tensor
from .lowering import resource_variables, run_steps
from .lowering.core import variable_key
from .numerics import random_inputs
from .samples import as_sample_set

DEFAULT_STEPS = 8  # a state shows a difference only after a few steps


def needs_whole_model(model: Model) -> bool:
    """Whether only a whole-model lowering runs `model`: other subgraphs or resource variables."""
    return len(model.graphs) > 1 or bool(resource_variables(model))


def state_tensors(model: Model) -> dict[str, Tensor]:
    """{variable key: a tensor holding its value} (the first READ_VARIABLE output or
    ASSIGN_VARIABLE value, with its quantization), for every variable of resource_variables."""
    found: dict[str, Tensor] = {}
    for graph in model.graphs:
        handles = {id(op.outputs[0]): variable_key(op) for op in graph.ops if op.type == "VAR_HANDLE" and op.outputs}
        for op in graph.ops:
            if op.type in ("READ_VARIABLE", "ASSIGN_VARIABLE") and op.inputs and op.inputs[0] is not None:
                key = handles.get(id(op.inputs[0]))
                value = op.outputs[0] if op.type == "READ_VARIABLE" else op.inputs[1]
                if key is not None and key not in found and value is not None and value.dtype is not None:
                    found[key] = value
    return found


def compare_whole(reference: Model, candidate: Model, samples=None, *, tolerance: float, seed: int = 0,
                  num_samples: int = 2, max_lsb: float, min_sqnr: float | None = None):
    """equivalence.compare for models that need the whole model (see the module docstring)."""
    from .equivalence import (DEFAULT_MIN_SQNR, FLOAT, MIXED, QUANTIZED, TensorDiff, VerifyReport, _Accumulated,
                              _acceptable, _converted, is_classifier)
    ga, gb = reference.main, candidate.main
    variables_a, variables_b = resource_variables(reference), resource_variables(candidate)
    stateful = bool(variables_a or variables_b)
    if samples is None:
        samples = random_inputs(ga, max(num_samples, DEFAULT_STEPS) if stateful else num_samples, seed)
    sample_set = as_sample_set(samples, ga.inputs)
    total = len(sample_set)
    if total == 0:
        raise ValueError("no samples to compare on")
    steps_a = sample_set.take(np.arange(total))
    steps_b = _converted(steps_a, ga.inputs, gb.inputs)
    outputs_a, states_a = run_steps(reference, steps_a, every_state=True)
    outputs_b, states_b = run_steps(candidate, steps_b, every_state=True)
    indices = np.arange(total)

    def figures(ta: Tensor, tb: Tensor, name: str, a: np.ndarray, b: np.ndarray, top1: bool) -> TensorDiff:
        if a.shape != b.shape:  # never compared
            return TensorDiff(name, float("inf"), 0.0, float("inf"))
        pair = _Accumulated(ta, tb, top1=top1)
        pair.add(indices, a, b)
        return pair.diff(name, pair.local()[1])

    outputs = [figures(ta, tb, ta.name, a, b, is_classifier(ta))
               for ta, tb, a, b in zip(ga.outputs, gb.outputs, outputs_a, outputs_b)]
    tensors_a, tensors_b = state_tensors(reference), state_tensors(candidate)
    index_b = {v.key: i for i, v in enumerate(variables_b)}
    states = [figures(tensors_a[v.key], tensors_b[v.key], f"state '{v.key}'", states_a[i], states_b[index_b[v.key]],
                      False)
              for i, v in enumerate(variables_a) if v.key in index_b]
    notes = []
    if stateful:
        unmatched = sorted({v.key for v in variables_a} ^ {v.key for v in variables_b})
        notes.append(f"stateful: {total} consecutive steps from the initial state, outputs compared at every step "
                     f"and {len(states)} variable(s) after every step")
        if unmatched:
            notes.append(f"variables in only one model (not compared): {', '.join(unmatched)}")
    else:
        notes.append(f"{len(reference.graphs)} subgraphs: compared through whole-model lowering, sample by sample")
    mode = MIXED if any(o.kind == MIXED for o in outputs) else (
        QUANTIZED if outputs and all(o.kind == QUANTIZED for o in outputs) else FLOAT)
    sqnr_limit = min_sqnr if min_sqnr is not None or mode != MIXED else DEFAULT_MIN_SQNR
    first = next((d for d in states if d.kind != MIXED and not _acceptable(d, tolerance, max_lsb, None)), None)
    worst = sorted((d for d in outputs + states if d.sqnr_db is not None), key=lambda d: d.sqnr_db)[:5]
    ok = all(_acceptable(o, tolerance, max_lsb, sqnr_limit) for o in outputs) and first is None
    return VerifyReport(ok=ok, tolerance=tolerance, samples=total,
                        max_abs_error=max((o.max_abs_error for o in outputs), default=0.0),
                        max_rel_error=max((o.rel_error for o in outputs), default=0.0), outputs=outputs,
                        compared_tensors=len(states), first_divergent=first, notes=notes, mode=mode,
                        max_lsb=max_lsb if mode == QUANTIZED else None, min_sqnr=sqnr_limit, worst_tensors=worst)


def activation_statistics(model: Model, sample: list[np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray] | None]:
    """equivalence.activation_statistics for a model that only runs whole: every float tensor of
    the main graph on one sample (a stateful model: its first step from init_state)."""
    from .equivalence import channel_statistics
    from .lowering import init_state, lower_graph
    from .lowering.core import tensor_keys
    from .programs import PROGRAMS
    graph = model.main
    fn, params = lower_graph(graph, all_tensors=True, model=model)
    args = (*sample, *init_state(model))
    results = PROGRAMS.compile(fn, params, *args)(params, *args)  # compiled as the checks are
    values = results[0] if resource_variables(model) else results
    keys = tensor_keys(graph)
    floating = {keys[id(t)] for t in graph.tensors
                if not t.is_constant and t.dtype is not None and t.dtype.kind == "f" and len(t.shape) >= 1}
    return {key: channel_statistics(np.asarray(value)) for key, value in values.items()
            if key in floating and np.asarray(value).size}
