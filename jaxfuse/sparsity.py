"""TFLite's sparse tensor encoding (`Tensor.sparsity`): what it means, in numpy.

A sparse constant stores only the values its dimension metadata reaches. The dense shape
is split into blocks (`block_map[k]` is the dense dimension that block dimension k cuts);
the levels walk the blocked dimensions, then the block dimensions, in `traversal_order`.
A DENSE level visits every index 0 .. dense_size-1; a SPARSE_CSR level visits, for the
node numbered p at the level above, indices[segments[p]:segments[p+1]]. Nodes are numbered
in the order they are visited, level by level, and the leaves in that order are the stored
values (LiteRT's FormatConverter, tensorflow/lite/kernels/internal/utils/sparsity_format_converter.cc).

    values = sparsify(dense, [DENSE, SPARSE_CSR])   # (stored values, Sparsity)
    densify(values, dense.shape, sparsity)          # == dense
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DENSE, SPARSE_CSR = 0, 1
# the dtypes of the index vectors, as the schema's SparseIndexVector union stores them
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.uint16), np.dtype(np.uint8))


class SparsityError(ValueError):
    """Dimension metadata that does not describe a tensor of the given shape."""


@dataclass(eq=False)
class DimMetadata:
    format: int                                  # DENSE or SPARSE_CSR
    dense_size: int = 0                          # DENSE levels: how many indices
    array_segments: np.ndarray | None = None     # SPARSE_CSR levels; the dtype is the file's vector type
    array_indices: np.ndarray | None = None


@dataclass(eq=False)
class Sparsity:
    traversal_order: tuple[int, ...] | None
    block_map: tuple[int, ...] | None
    dim_metadata: list[DimMetadata] = field(default_factory=list)

    def equals(self, other: "Sparsity | None") -> bool:
        """Same encoding, index vector types included."""
        if other is None or (self.traversal_order, self.block_map) != (other.traversal_order, other.block_map) \
                or len(self.dim_metadata) != len(other.dim_metadata):
            return False

        def same(a, b):
            return (a is None) == (b is None) and (a is None or (a.dtype == b.dtype and np.array_equal(a, b)))

        return all(a.format == b.format and a.dense_size == b.dense_size and same(a.array_segments, b.array_segments)
                   and same(a.array_indices, b.array_indices) for a, b in zip(self.dim_metadata, other.dim_metadata))


def _layout(shape: tuple[int, ...], sparsity: Sparsity) -> tuple[list[int], list[int], list[int]]:
    """(traversal order, block map, block sizes), checked against `shape`."""
    rank = len(shape)
    block_map = list(sparsity.block_map or ())
    order = list(sparsity.traversal_order) if sparsity.traversal_order is not None \
        else list(range(rank + len(block_map)))
    levels = len(sparsity.dim_metadata)
    if sorted(order) != list(range(rank + len(block_map))) or levels != len(order):
        raise SparsityError(f"traversal order {order} and {levels} dimension metadata do not fit a rank-{rank} "
                            f"tensor with {len(block_map)} block dimensions")
    if any(not 0 <= d < rank for d in block_map):
        raise SparsityError(f"block map {block_map} names a dimension outside rank {rank}")
    block_sizes = []
    for k, d in enumerate(block_map):
        size = sparsity.dim_metadata[order.index(rank + k)].dense_size
        if size <= 0 or shape[d] % size:
            raise SparsityError(f"block size {size} does not divide dimension {d} of size {shape[d]}")
        block_sizes.append(size)
    return order, block_map, block_sizes


def _blocked_shape(shape, order, block_map, block_sizes) -> list[int]:
    """The size of each level, in traversal order."""
    outer = list(shape)
    for d, size in zip(block_map, block_sizes):
        outer[d] //= size
    expanded = outer + block_sizes
    return [expanded[i] for i in order]


def _walk(shape: tuple[int, ...], sparsity: Sparsity) -> tuple[list[int], list[np.ndarray]]:
    """(order, per level the index of each leaf), leaves in stored order."""
    order, block_map, block_sizes = _layout(shape, sparsity)
    sizes = _blocked_shape(shape, order, block_map, block_sizes)
    count = 1  # nodes at the level above, numbered 0 .. count-1
    coords: list[np.ndarray] = []
    for level, (dm, size) in enumerate(zip(sparsity.dim_metadata, sizes)):
        if dm.format == DENSE:
            if dm.dense_size != size:
                raise SparsityError(f"level {level} is dense with size {dm.dense_size}, the shape gives {size}")
            parent = np.repeat(np.arange(count), size)
            index = np.tile(np.arange(size), count)
        elif dm.format == SPARSE_CSR:
            if dm.array_segments is None or dm.array_indices is None:
                raise SparsityError(f"level {level} is sparse but lacks its segments or indices")
            segments = dm.array_segments.astype(np.int64)
            indices = dm.array_indices.astype(np.int64)
            if segments.size != count + 1 or segments[0] != 0 or np.any(np.diff(segments) < 0) \
                    or segments[-1] != indices.size:
                raise SparsityError(f"level {level}: {segments.size} segments for {count} nodes and "
                                    f"{indices.size} indices do not fit")
            if indices.size and (indices.min() < 0 or indices.max() >= size):
                raise SparsityError(f"level {level}: an index lies outside 0..{size - 1}")
            parent = np.repeat(np.arange(count), np.diff(segments))
            index = indices
        else:
            raise SparsityError(f"level {level} has unknown format {dm.format}")
        coords = [c[parent] for c in coords] + [index]
        count = index.size
    return order, coords


def stored_count(shape: tuple[int, ...], sparsity: Sparsity) -> int:
    """How many values a tensor of `shape` stores with this encoding."""
    _, coords = _walk(tuple(shape), sparsity)
    return int(coords[-1].size) if coords else 1


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity: Sparsity) -> np.ndarray:
    """The dense tensor of `shape` whose stored values are `values` (zeros elsewhere)."""
    shape = tuple(shape)
    rank = len(shape)
    order, coords = _walk(shape, sparsity)
    _, block_map, block_sizes = _layout(shape, sparsity)
    if values.size != (coords[-1].size if coords else 1):
        raise SparsityError(f"{values.size} values stored, the encoding reaches {coords[-1].size}")
    dense_index: list[np.ndarray | None] = [None] * rank
    for level in range(rank):
        dense_index[order[level]] = coords[level]
    for level in range(rank, len(order)):
        k = order[level] - rank
        d = block_map[k]
        dense_index[d] = dense_index[d] * block_sizes[k] + coords[level]
    dense = np.zeros(shape, values.dtype)
    if rank:
        dense[tuple(dense_index)] = values.reshape(-1)
    else:
        dense[()] = values.reshape(())
    return dense


def sparsify(dense: np.ndarray, formats, traversal_order=None, block_map=(), block_sizes=(),
             index_dtype=np.int32) -> tuple[np.ndarray, Sparsity]:
    """Encode `dense`: (stored values, Sparsity). `formats` gives DENSE / SPARSE_CSR per level
    (traversal order); a sparse level keeps an index when anything under it is non-zero."""
    dense = np.asarray(dense)
    rank = dense.ndim
    block_map, block_sizes = list(block_map), list(block_sizes)
    order = list(traversal_order) if traversal_order is not None else list(range(rank + len(block_map)))
    outer = list(dense.shape)
    for d, size in zip(block_map, block_sizes):
        outer[d] //= size
    # split each blocked dimension d into (outer, block) and bring the block dimensions last
    split_shape, outer_axes, block_axes = [], [], {}
    for d in range(rank):
        outer_axes.append(len(split_shape))
        split_shape.append(outer[d])
        if d in block_map:
            block_axes[block_map.index(d)] = len(split_shape)
            split_shape.append(block_sizes[block_map.index(d)])
    expanded = dense.reshape(split_shape).transpose(outer_axes + [block_axes[k] for k in range(len(block_map))])
    walked = expanded.transpose(order)
    sizes = walked.shape
    nonzero = walked != 0
    metadata = []
    flat = np.zeros(1, np.int64)  # flattened coordinate of each node in `walked` so far
    for level, size in enumerate(sizes):
        candidates = (flat[:, None] * size + np.arange(size)).reshape(-1)
        if formats[level] == DENSE:
            metadata.append(DimMetadata(DENSE, int(size)))
            flat = candidates
            continue
        below = nonzero.reshape(math.prod(sizes[:level + 1]), -1).any(axis=1)
        keep = below[candidates].reshape(flat.size, size)
        segments = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
        metadata.append(DimMetadata(SPARSE_CSR, 0, segments.astype(index_dtype),
                                    np.nonzero(keep)[1].astype(index_dtype)))
        flat = candidates[keep.reshape(-1)]
    values = walked.reshape(-1)[flat]
    sparsity = Sparsity(tuple(order) if traversal_order is not None else tuple(range(len(order))),
                        tuple(block_map) if block_map else None, metadata)
    return values, sparsity
