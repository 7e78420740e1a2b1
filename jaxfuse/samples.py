"""Sample sets for calibration and checks: .npz files keyed by graph input name.

Each array carries a leading sample axis: shape [N, *input_shape], or [N, ...] in place
of a batch dimension of 1 (an input [1, 224, 224, 3] takes [N, 224, 224, 3]). An array
of exactly the input's shape is one sample. A directory stands for the .npz files in it,
in name order, one after the other. Arrays must have the input's dtype (no casting).
Problems raise SampleError with a one-line message naming the file.
"""
from __future__ import annotations

import os

import numpy as np

from .ir import Tensor
from .schema import TENSOR_TYPE_NAMES


class SampleError(ValueError):
    """An unusable sample file; the message names it and the problem."""


def _type_name(tensor: Tensor) -> str:
    return TENSOR_TYPE_NAMES.get(tensor.type, f"type{tensor.type}").lower()


def sample_files(path: str) -> list[str]:
    """The .npz files `path` stands for (itself, or a directory's .npz files in name order)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".npz"))
        if not files:
            raise SampleError(f"{path}: directory holds no .npz files")
        return files
    if not os.path.exists(path):
        raise SampleError(f"{path}: no such file")
    return [path]


def _open(path: str):
    try:
        archive = np.load(path, allow_pickle=False)
    except OSError as e:
        raise SampleError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # numpy raises ValueError, zipfile.BadZipFile, EOFError, ... on junk
        raise SampleError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SampleError(f"{path}: holds a single array (.npy), expected an .npz archive keyed by input name")
    return archive


def _as_samples(path: str, tensor: Tensor, array: np.ndarray) -> np.ndarray:
    """`array` as [N, *shape] for `tensor`, by the rules in the module docstring."""
    shape = tuple(int(d) for d in tensor.shape)
    if tensor.dtype is None or array.dtype != tensor.dtype:
        raise SampleError(f"{path}: input '{tensor.name}' has dtype {array.dtype}, the model expects "
                          f"{_type_name(tensor)}")
    if array.shape == shape:
        return array[None]
    if array.ndim == len(shape) + 1 and array.shape[1:] == shape:
        return array
    if shape and shape[0] == 1 and array.ndim == len(shape) and array.shape[1:] == shape[1:]:
        return array[:, None]
    raise SampleError(f"{path}: input '{tensor.name}' has shape {list(array.shape)}; the model expects "
                      f"{list(shape)}, or [N, {', '.join(map(str, shape))}] for N samples"
                      + (f", or [N, {', '.join(map(str, shape[1:]))}]" if shape and shape[0] == 1 else ""))


def read_file_samples(path: str, tensors: list[Tensor]) -> list[list[np.ndarray]]:
    """The samples of one .npz file: every input present, nothing extra, one sample count."""
    with _open(path) as archive:
        names = [t.name for t in tensors]
        expected = ", ".join(f"'{n}'" for n in names) or "none"
        missing = [n for n in names if n not in archive.files]
        if missing:
            raise SampleError(f"{path}: missing input {', '.join(repr(n) for n in missing)} "
                              f"(the model's inputs are {expected})")
        extra = [k for k in archive.files if k not in names]
        if extra:
            raise SampleError(f"{path}: unexpected array {', '.join(repr(k) for k in extra)} "
                              f"(the model's inputs are {expected})")
        per_input = []
        for t in tensors:
            try:
                array = archive[t.name]
            except Exception as e:
                raise SampleError(f"{path}: array '{t.name}' cannot be loaded ({type(e).__name__}: {e})") from None
            per_input.append(_as_samples(path, t, array))
    counts = {len(a) for a in per_input}
    if len(counts) > 1:
        raise SampleError(f"{path}: the inputs have different sample counts "
                          f"({', '.join(f'{t.name}: {len(a)}' for t, a in zip(tensors, per_input))})")
    count = counts.pop() if counts else 1
    if count == 0:
        raise SampleError(f"{path}: holds no samples (sample axis of length 0)")
    return [[a[i] for a in per_input] for i in range(count)]


def read_samples(path: str, tensors: list[Tensor], limit: int | None = None) -> list[list[np.ndarray]]:
    """Samples (each a list of arrays in `tensors` order) from an .npz file or a directory
    of them; at most `limit` (the first ones) when given."""
    samples: list[list[np.ndarray]] = []
    for file in sample_files(path):
        samples.extend(read_file_samples(file, tensors))
        if limit is not None and len(samples) >= limit:
            return samples[:limit]
    return samples
