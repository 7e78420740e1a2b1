"""NumPy-only helpers shared by the CLI, the equivalence checks and the reference engines:
seeded random inputs, (de)quantization of sample arrays and the error measures (no JAX
import, so the CLI stays quick)."""
import numpy as np

from .ir import Tensor

RANDOM_INT_RANGE = (0, 9)  # inclusive


def random_input(tensor: Tensor, rng: np.random.Generator) -> np.ndarray:
    """Standard normal for floats (negative values included), quantized integers uniform
    over their whole type (every real value the quantization can express), other integers
    uniform in RANDOM_INT_RANGE, fair coin flips for bools."""
    dtype = tensor.dtype or np.dtype(np.float32)
    shape = tuple(max(int(d), 1) for d in tensor.shape)
    if dtype.kind in "iu" and tensor.is_quantized:
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
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


def as_real(values) -> np.ndarray:
    """A complex array as its (real, imaginary) float pairs along a doubled last axis (other
    arrays unchanged): errors of complex tensors are the largest error of either part."""
    values = np.asarray(values)
    if values.dtype.kind != "c":
        return values
    if values.ndim == 0:
        return np.array([values.real, values.imag])
    return np.ascontiguousarray(values).view(values.real.dtype)


def error_stats(reference, candidate) -> tuple[float, float, float]:
    """(max abs error, scale = max |reference|, error relative to that scale); shapes that
    differ are an infinite error. Complex values compare part by part (as_real)."""
    if np.shape(reference) != np.shape(candidate):
        return float("inf"), 0.0, float("inf")
    reference = np.asarray(as_real(reference), np.float64)
    candidate = np.asarray(as_real(candidate), np.float64)
    if reference.shape != candidate.shape:
        return float("inf"), 0.0, float("inf")
    abs_err = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return abs_err, scale, relative_to_scale(abs_err, scale)


def sample_errors(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample (leading axis): (max |a - b|, max finite |a|, count of non-finite values
    in a); NaN on both sides and equal infinities are agreement, NaN on one side only is
    an infinite error. Complex values compare part by part (as_real)."""
    n = a.shape[0]
    a, b = as_real(a.reshape(n, -1)), as_real(b.reshape(n, -1))
    if a.dtype == b.dtype and a.dtype.kind == "f" and a.size:
        # in the arrays' own type: the difference of two close floats is exact (Sterbenz), and
        # a non-finite value anywhere makes one of these figures non-finite, which the exact
        # path below then handles
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.subtract(a, b)
            np.abs(diff, out=diff)
            error = diff.max(axis=1).astype(np.float64)
            scale = np.maximum(a.max(axis=1), -a.min(axis=1)).astype(np.float64)
        del diff
        if np.isfinite(error).all() and np.isfinite(scale).all():
            return error, scale, np.zeros(n, np.int64)
    if np.isfinite(a).all() and np.isfinite(b).all():  # the same figures, without the masks
        a = a.astype(np.float64)
        return np.abs(a - b).max(axis=1, initial=0.0), np.abs(a).max(axis=1, initial=0.0), np.zeros(n, np.int64)
    a, b = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore"):
        agree = (np.isnan(a) & np.isnan(b)) | (a == b)
        diff = np.where(agree, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)
    finite = np.isfinite(a)
    scale = np.where(finite, np.abs(a), 0.0)
    return diff.max(axis=1, initial=0.0), scale.max(axis=1, initial=0.0), (~finite).sum(axis=1)


def relative_to_scale(abs_err: float, scale: float) -> float:
    """abs_err / scale, with 0 for no error and a tiny floor under an all-zero reference."""
    return 0.0 if abs_err == 0.0 else abs_err / max(scale, np.finfo(np.float32).tiny)


def is_quantized_integer(tensor: Tensor) -> bool:
    return tensor.dtype is not None and tensor.dtype.kind in "iu" and tensor.is_quantized


def _along_axis(values: np.ndarray, tensor: Tensor, ndim: int) -> np.ndarray:
    """Per-tensor parameters as scalars, per-channel ones shaped to broadcast on their axis."""
    values = np.asarray(values).reshape(-1)
    if values.size == 1:
        return values[0]
    shape = [1] * ndim
    shape[tensor.quantization.quantized_dimension] = -1
    return values.reshape(shape)


def dequantize(q: np.ndarray, tensor: Tensor) -> np.ndarray:
    """The real values scale * (q - zero_point) of a quantized tensor's array, in float64;
    other arrays are returned as float64 unchanged."""
    q = np.asarray(q)
    if not is_quantized_integer(tensor):
        return q.astype(np.float64)
    quant = tensor.quantization
    scale = _along_axis(np.asarray(quant.scale, np.float64), tensor, q.ndim)
    zero_point = _along_axis(np.asarray(quant.zero_point, np.int64), tensor, q.ndim)
    return (q.astype(np.int64) - zero_point) * scale


def quantize(real: np.ndarray, tensor: Tensor) -> np.ndarray:
    """The array of `tensor`'s type holding `real`: round(real / scale) + zero_point, halves
    to even, saturated (as LiteRT's QUANTIZE does on x86) for a quantized tensor; a plain
    cast otherwise."""
    real = np.asarray(real)
    if not is_quantized_integer(tensor):
        return real.astype(tensor.dtype)
    quant = tensor.quantization
    scale = _along_axis(np.asarray(quant.scale, np.float32), tensor, real.ndim)
    zero_point = _along_axis(np.asarray(quant.zero_point, np.int64), tensor, real.ndim)
    info = np.iinfo(tensor.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.clip(np.rint(real.astype(np.float32) / scale), info.min - 2.0 ** 16, info.max + 2.0 ** 16)
    return np.clip(np.nan_to_num(scaled).astype(np.int64) + zero_point, info.min, info.max).astype(tensor.dtype)


def convert_sample(sample: list[np.ndarray], source: list[Tensor], target: list[Tensor]) -> list[np.ndarray]:
    """A sample drawn for graph inputs `source` as arrays for graph inputs `target` of
    another model: the real values stay, the storage type follows the target (a float
    sample is quantized for a quantized input, an integer one dequantized for a float one)."""
    converted = []
    for array, src, dst in zip(sample, source, target):
        same_storage = src.dtype == dst.dtype and (not is_quantized_integer(src) or _same_quantization(src, dst))
        converted.append(array if same_storage else quantize(dequantize(array, src), dst))
    return converted


def _same_quantization(a: Tensor, b: Tensor) -> bool:
    qa, qb = a.quantization, b.quantization
    return (qb is not None and np.array_equal(qa.scale, qb.scale) and np.array_equal(qa.zero_point, qb.zero_point)
            and qa.quantized_dimension == qb.quantized_dimension)


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """10 log10(signal / noise); infinite when there is no noise."""
    if noise_power == 0:
        return float("inf")
    if signal_power == 0:
        return float("-inf")
    return float(10.0 * np.log10(signal_power / noise_power))


def json_safe(value):
    """`value` with infinite and NaN floats replaced by the strings "inf", "-inf", "nan"
    (JSON has no such numbers), through dicts and lists."""
    if isinstance(value, float) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def short_name(name: str, limit: int = 60) -> str:
    """A tensor name for one line of text: converters join the names of fused ops with ';'."""
    first = name.split(";")[0][:limit]
    return first if first == name else first + "..."
