"""Sample sets for calibration and checks: .npz files keyed by graph input name.

Each array carries a leading sample axis: shape [N, *input_shape], or [N, ...] in place
of a batch dimension of 1 (an input [1, 224, 224, 3] takes [N, 224, 224, 3]). An array
of exactly the input's shape is one sample. A dynamic dimension (-1 in the input's shape
signature) takes any size, the same in every sample of a set (one set runs at one shape).
A directory stands for the .npz files in it, in name order, one after the other. Arrays must have the input's dtype (no casting).
Problems raise SampleError with a one-line message naming the file.

Files are read lazily: `open_samples` checks every file's names, shapes and dtypes from
the array headers and returns a SampleSet, which reads only the samples asked for. Arrays
stored uncompressed (np.savez) are memory-mapped, so a set larger than memory can be
checked chunk by chunk, and each process of a distributed run reads only its share;
compressed ones (np.savez_compressed) are decompressed whole when first read.
"""
from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass

import numpy as np

from .ir import Tensor
from .numerics import is_quantized_integer, quantize, random_input
from .schema import TENSOR_TYPE_NAMES
from .shapes import fits, is_dynamic, signature

SINGLE, STACKED, IN_PLACE_OF_BATCH = "single", "stacked", "in place of batch"


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


class _Member:
    """One array of an .npz archive: its header, and its data on demand (memory-mapped when
    stored uncompressed)."""

    def __init__(self, path: str, name: str, shape: tuple, dtype: np.dtype, fortran: bool, offset: int | None):
        self.path, self.name, self.shape, self.dtype, self.fortran, self.offset = \
            path, name, shape, dtype, fortran, offset
        self._loaded = None

    def array(self) -> np.ndarray:
        if self.offset is not None:
            if int(np.prod(self.shape)) == 0:
                return np.zeros(self.shape, self.dtype)
            return np.memmap(self.path, self.dtype, "r", self.offset, self.shape, "F" if self.fortran else "C")
        if self._loaded is None:
            try:
                with np.load(self.path, allow_pickle=False) as archive:
                    self._loaded = archive[self.name]
            except Exception as e:
                raise SampleError(f"{self.path}: array '{self.name}' cannot be loaded ({type(e).__name__}: {e})") \
                    from None
        return self._loaded


def _read_header(f) -> tuple[tuple, np.dtype, bool]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f"unsupported .npy format version {version}")


def _members(path: str) -> dict[str, _Member]:
    """The arrays of an .npz archive, by name, from their headers only."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise SampleError(f"{path}: cannot read ({e.strerror or e})") from None
    if magic == b"\x93NUMPY":
        raise SampleError(f"{path}: holds a single array (.npy), expected an .npz archive keyed by input name")
    members = {}
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[:-4]
                stored = info.compress_type == zipfile.ZIP_STORED
                with archive.open(info) as member:
                    try:
                        shape, fortran, dtype = _read_header(member)
                        header_size = member.tell()
                    except ValueError as e:
                        raise SampleError(f"{path}: array '{name}' cannot be loaded (ValueError: {e})") from None
                if dtype.hasobject:
                    raise SampleError(f"{path}: array '{name}' cannot be loaded (it holds Python objects, which "
                                      "would need pickle)")
                offset = None
                if stored:
                    raw.seek(info.header_offset)
                    local = raw.read(30)
                    if local[:4] != b"PK\x03\x04":
                        raise zipfile.BadZipFile("bad local file header")
                    name_length, extra_length = struct.unpack("<HH", local[26:30])
                    offset = info.header_offset + 30 + name_length + extra_length + header_size
                    if offset + int(np.prod(shape)) * dtype.itemsize > os.path.getsize(path):
                        raise zipfile.BadZipFile(f"array '{name}' is truncated")
                members[name] = _Member(path, name, tuple(shape), dtype, fortran, offset)
    except SampleError:
        raise
    except OSError as e:
        raise SampleError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # zipfile.BadZipFile, EOFError, struct.error, ... on junk
        raise SampleError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e})") from None
    return members


def _takes_real_values(tensor: Tensor, dtype: np.dtype) -> bool:
    """A float array for a quantized integer input: real values, quantized when read."""
    return is_quantized_integer(tensor) and dtype.kind == "f"


def _form(path: str, tensor: Tensor, shape: tuple, dtype: np.dtype, real: bool = False) -> str:
    """How an array of `shape` holds samples for `tensor` (the rules in the module docstring;
    a dynamic dimension, -1 in the input's shape signature, takes any size); with `real`,
    float arrays are accepted for quantized integer inputs too."""
    expected = tuple(int(d) for d in tensor.shape)
    if tensor.dtype is None or (dtype != tensor.dtype and not (real and _takes_real_values(tensor, dtype))):
        raise SampleError(f"{path}: input '{tensor.name}' has dtype {dtype}, the model expects "
                          f"{_type_name(tensor)}")
    if shape == expected:
        return SINGLE
    if len(shape) == len(expected) + 1 and fits(tensor, shape[1:]):
        return STACKED
    if expected and expected[0] == 1 and len(shape) == len(expected) and fits(tensor, (1, *shape[1:])):
        return IN_PLACE_OF_BATCH  # (also where the batch dimension is dynamic: N samples, not one batch of N)
    if fits(tensor, shape):
        return SINGLE
    if is_dynamic(tensor):
        raise SampleError(f"{path}: input '{tensor.name}' has shape {list(shape)}; the model expects "
                          f"{list(signature(tensor))} (-1: any size), or that with a leading sample axis")
    raise SampleError(f"{path}: input '{tensor.name}' has shape {list(shape)}; the model expects "
                      f"{list(expected)}, or [N, {', '.join(map(str, expected))}] for N samples"
                      + (f", or [N, {', '.join(map(str, expected[1:]))}]" if expected and expected[0] == 1 else ""))


def _sample_shape(member: "_Member", form: str) -> tuple:
    return member.shape if form == SINGLE else member.shape[1:] if form == STACKED else (1, *member.shape[1:])


@dataclass
class _File:
    path: str
    members: list[_Member]   # in input order
    forms: list[str]
    count: int

    def shapes(self) -> list[tuple]:
        """One sample's shape per input."""
        return [_sample_shape(m, form) for m, form in zip(self.members, self.forms)]


def _open_file(path: str, tensors: list[Tensor], real: bool = False) -> _File:
    members = _members(path)
    names = [t.name for t in tensors]
    expected = ", ".join(f"'{n}'" for n in names) or "none"
    missing = [n for n in names if n not in members]
    if missing:
        raise SampleError(f"{path}: missing input {', '.join(repr(n) for n in missing)} "
                          f"(the model's inputs are {expected})")
    extra = [k for k in members if k not in names]
    if extra:
        raise SampleError(f"{path}: unexpected array {', '.join(repr(k) for k in extra)} "
                          f"(the model's inputs are {expected})")
    chosen = [members[t.name] for t in tensors]
    forms = [_form(path, t, m.shape, m.dtype, real) for t, m in zip(tensors, chosen)]
    counts = [1 if form == SINGLE else m.shape[0] for form, m in zip(forms, chosen)]
    if len(set(counts)) > 1:
        raise SampleError(f"{path}: the inputs have different sample counts "
                          f"({', '.join(f'{t.name}: {n}' for t, n in zip(tensors, counts))})")
    count = counts[0] if counts else 1
    if count == 0:
        raise SampleError(f"{path}: holds no samples (sample axis of length 0)")
    return _File(path, chosen, forms, count)


class SampleSet:
    """Samples for a list of graph inputs, each a list of arrays in input order, read on
    demand. `len(s)` samples; `s[i]` is sample i; `s.batch(a, b)` samples a..b-1 stacked
    on a leading axis ([b - a, *input_shape] per input)."""

    def __init__(self, tensors: list[Tensor], files: list[_File] | None = None,
                 arrays: list[np.ndarray] | None = None, source: str = "samples"):
        self.tensors = list(tensors)
        # one sample's shape per input: the data's (a dynamic dimension takes the size the data has)
        self.shapes = files[0].shapes() if files else [tuple(a.shape[1:]) for a in arrays] \
            if arrays else [tuple(int(d) for d in t.shape) for t in tensors]
        for f in (files or [])[1:]:
            for t, first, here in zip(tensors, self.shapes, f.shapes()):
                if here != first:
                    raise SampleError(f"{f.path}: input '{t.name}' has samples of shape {list(here)}, "
                                      f"{files[0].path} of {list(first)}: one set runs at one shape")
        self.source = source
        self._files = files or []
        self._arrays = arrays  # in-memory: per input [N, *shape]
        self.count = (len(arrays[0]) if arrays else 0) if arrays is not None else sum(f.count for f in self._files)
        forms = {form for f in self._files for form in f.forms}
        self.form = (forms.pop() if len(forms) == 1 else "mixed") if forms else STACKED
        # real values (float arrays) that batch() quantizes with their input's scale and zero point
        self.quantizes = any(_takes_real_values(t, m.dtype) for f in self._files for t, m in zip(tensors, f.members))

    @classmethod
    def from_list(cls, samples: list[list[np.ndarray]], tensors: list[Tensor]) -> "SampleSet":
        """A set holding these samples (each a list of arrays of the inputs' shapes)."""
        if not tensors:
            return cls(tensors, arrays=[], source="samples")
        arrays = [np.stack([np.asarray(s[i]) for s in samples]) if samples else
                  np.zeros((0, *[int(d) for d in t.shape]), t.dtype or np.float32) for i, t in enumerate(tensors)]
        result = cls(tensors, arrays=arrays)
        result.count = len(samples)
        return result

    def __len__(self) -> int:
        return self.count

    def batch(self, start: int, stop: int) -> list[np.ndarray]:
        """Samples start..stop-1, per input stacked on a leading axis (a copy, in memory)."""
        start, stop = max(0, start), min(stop, self.count)
        if self._arrays is not None:
            return [np.array(a[start:stop]) for a in self._arrays]
        parts: list[list[np.ndarray]] = [[] for _ in self.tensors]
        offset = 0
        for f in self._files:
            lo, hi = max(start - offset, 0), min(stop - offset, f.count)
            if lo < hi:
                for i, (member, form) in enumerate(zip(f.members, f.forms)):
                    data = member.array()
                    if form == SINGLE:
                        chunk = np.asarray(data)[None]
                    else:
                        chunk = np.asarray(data[lo:hi])
                    if _takes_real_values(self.tensors[i], chunk.dtype):
                        chunk = quantize(chunk, self.tensors[i])
                    parts[i].append(chunk.reshape((hi - lo, *self.shapes[i])))
            offset += f.count
            if offset >= stop:
                break
        if not self.tensors:
            return []
        return [np.concatenate(p) if len(p) > 1 else np.array(p[0]) for p in parts]

    def take(self, indices) -> list[np.ndarray]:
        """The samples at `indices` (any order, repeats allowed), stacked per input; runs of
        consecutive indices are read at once."""
        indices = np.asarray(indices, np.int64)
        parts: list[list[np.ndarray]] = []
        start = 0
        for end in range(1, len(indices) + 1):
            if end == len(indices) or indices[end] != indices[end - 1] + 1:
                parts.append(self.batch(int(indices[start]), int(indices[end - 1]) + 1))
                start = end
        if not parts or not self.tensors:
            return [np.zeros((0, *shape), t.dtype or np.float32) for t, shape in zip(self.tensors, self.shapes)]
        return [np.concatenate([p[i] for p in parts]) for i in range(len(self.tensors))]

    def __getitem__(self, index: int) -> list[np.ndarray]:
        if not -self.count <= index < self.count:
            raise IndexError(index)
        index %= max(self.count, 1)
        return [a[0] for a in self.batch(index, index + 1)]

    def __iter__(self):
        for i in range(self.count):
            yield self[i]

    def head(self, limit: int | None) -> "SampleSet":
        """The first `limit` samples (all of them for None)."""
        if limit is None or limit >= self.count:
            return self
        return SampleSet.from_list([self[i] for i in range(limit)], self.tensors)


def open_samples(path: str, tensors: list[Tensor], real: bool = False) -> SampleSet:
    """The samples of an .npz file or a directory of them, checked (names, shapes, dtypes)
    but not read. With `real`, a quantized integer input also takes float arrays (real
    values), which the set quantizes with the input's scale and zero point as it reads
    them (`quantizes` is then true)."""
    return SampleSet(tensors, files=[_open_file(f, tensors, real) for f in sample_files(path)], source=path)


def as_sample_set(samples, tensors: list[Tensor]) -> SampleSet:
    """A SampleSet for a SampleSet or a list of samples (each a list of arrays)."""
    if isinstance(samples, SampleSet):
        return samples
    return SampleSet.from_list(list(samples), tensors)


def read_file_samples(path: str, tensors: list[Tensor]) -> list[list[np.ndarray]]:
    """The samples of one .npz file: every input present, nothing extra, one sample count."""
    return list(SampleSet(tensors, files=[_open_file(path, tensors)], source=path))


def read_samples(path: str, tensors: list[Tensor], limit: int | None = None) -> list[list[np.ndarray]]:
    """Samples (each a list of arrays in `tensors` order) from an .npz file or a directory
    of them; at most `limit` (the first ones) when given."""
    samples: list[list[np.ndarray]] = []
    for file in sample_files(path):
        samples.extend(read_file_samples(file, tensors))
        if limit is not None and len(samples) >= limit:
            return samples[:limit]
    return samples


def unique_names(tensors: list[Tensor], role: str, path: str) -> list[str]:
    """The tensors' names, which must be distinct: .npz arrays are keyed by them."""
    names = [t.name for t in tensors]
    for name in names:
        if names.count(name) > 1:
            raise SampleError(f"{path}: {names.count(name)} graph {role}s are named '{name}', so .npz arrays "
                              f"cannot be keyed by name")
    return names


def random_sample(tensors: list[Tensor], seed: int, path: str = "model") -> list[np.ndarray]:
    """One seeded sample for `tensors`, drawn in order from numpy.random.default_rng(seed) as
    the equivalence checks draw theirs (numerics.random_input: floats standard normal,
    quantized integers over their whole type, other integers in RANDOM_INT_RANGE, bools fair).

    >>> import jaxfuse
    >>> m = jaxfuse.load("examples/models/resnet50v2_tiny.tflite")
    >>> [(a.shape, a.dtype.name) for a in random_sample(m.main.inputs, seed=0)]
    [((1, 64, 64, 3), 'float32')]
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for t in tensors:
        if any(int(d) < 0 for d in t.shape):
            raise SampleError(f"{path}: input '{t.name}' has unknown dimensions {list(t.shape)}; give --inputs")
        if t.dtype is None or t.dtype.kind not in "fcbiu":
            raise SampleError(f"{path}: input '{t.name}' has type {_type_name(t)}, which run cannot generate")
        arrays.append(random_input(t, rng))
    return arrays


DEFAULT_CALIBRATION_SAMPLES = 32


def calibration_samples(calibration, tensors: list[Tensor], samples: int | None = None, seed: int = 0,
                        path: str = "model") -> tuple[list[list[np.ndarray]], str]:
    """(samples, where they come from) for ai-edge-quantizer. `calibration`: an .npz file or
    directory (its first `samples` samples, all without), a SampleSet or a list of samples;
    None: `samples` (default DEFAULT_CALIBRATION_SAMPLES) seeded random ones, which the text
    says: the ranges come from them."""
    if samples is not None and samples < 1:
        raise SampleError(f"--samples must be at least 1, got {samples}")
    if isinstance(calibration, (str, os.PathLike)):
        chosen = read_samples(os.fspath(calibration), tensors, samples)
        return chosen, f"{len(chosen)} sample(s) from {os.fspath(calibration)}"
    if calibration is not None:
        chosen = list(as_sample_set(calibration, tensors).head(samples))
        return chosen, f"{len(chosen)} sample(s) given"
    count = DEFAULT_CALIBRATION_SAMPLES if samples is None else samples
    rng = np.random.default_rng(seed)
    chosen = [random_sample(tensors, int(rng.integers(2 ** 31)), path) for _ in range(count)]
    return chosen, (f"{count} seeded random sample(s) (seed {seed}; floats standard normal): the ranges "
                    "come from these, so give --calibration FILE.npz with real data for a model you will deploy")
