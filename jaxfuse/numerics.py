"""NumPy-only helpers shared by the CLI, the equivalence checks and the reference engines:
seeded random inputs and the error measure (no JAX import, so the CLI stays quick)."""
import numpy as np

from .ir import Tensor

RANDOM_INT_RANGE = (0, 9)  # inclusive


def random_input(tensor: Tensor, rng: np.random.Generator) -> np.ndarray:
    """Standard normal for floats (negative values included), integers uniform in
    RANDOM_INT_RANGE, fair coin flips for bools."""
    dtype = tensor.dtype or np.dtype(np.float32)
    shape = tuple(max(int(d), 1) for d in tensor.shape)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 1, size=shape, endpoint=True).astype(dtype)
    low, high = RANDOM_INT_RANGE
    return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)


def random_inputs(graph, samples: int = 2, seed: int = 0) -> list[list[np.ndarray]]:
    """`samples` lists of arrays for graph.inputs, drawn by random_input from one Generator
    seeded with `seed` (the same draws whoever asks: checks, benchmarks, tests)."""
    rng = np.random.default_rng(seed)
    return [[random_input(t, rng) for t in graph.inputs] for _ in range(samples)]


def error_stats(reference, candidate) -> tuple[float, float, float]:
    """(max abs error, scale = max |reference|, error relative to that scale); shapes that
    differ are an infinite error."""
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        return float("inf"), 0.0, float("inf")
    abs_err = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return abs_err, scale, relative_to_scale(abs_err, scale)


def relative_to_scale(abs_err: float, scale: float) -> float:
    """abs_err / scale, with 0 for no error and a tiny floor under an all-zero reference."""
    return 0.0 if abs_err == 0.0 else abs_err / max(scale, np.finfo(np.float32).tiny)
