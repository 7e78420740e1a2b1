"""Sample sets from .npz files: the leading sample axis, directories, and clear errors."""
import numpy as np
import pytest

from jaxfuse.ir import Tensor
from jaxfuse.samples import SampleError, read_samples
from jaxfuse.schema import TENSOR_TYPES


def tensor(name, shape, type_name="FLOAT32"):
    return Tensor(name, tuple(shape), TENSOR_TYPES[type_name])


IMAGE = tensor("image", [1, 4, 4, 3])
SCALE = tensor("scale", [2], "INT32")


def test_exact_shape_is_one_sample(tmp_path):
    x = np.ones([1, 4, 4, 3], np.float32)
    np.savez(tmp_path / "s.npz", image=x, scale=np.array([1, 2], np.int32))
    samples = read_samples(str(tmp_path / "s.npz"), [IMAGE, SCALE])
    assert len(samples) == 1 and samples[0][0].shape == (1, 4, 4, 3) and samples[0][1].tolist() == [1, 2]


@pytest.mark.parametrize("shape", [[5, 1, 4, 4, 3], [5, 4, 4, 3]])
def test_leading_sample_axis_with_or_without_the_batch_of_one(tmp_path, shape):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    np.savez(tmp_path / "s.npz", image=x)
    samples = read_samples(str(tmp_path / "s.npz"), [IMAGE])
    assert len(samples) == 5
    assert all(s[0].shape == (1, 4, 4, 3) for s in samples)
    np.testing.assert_array_equal(samples[3][0].reshape(-1), x[3].reshape(-1))


def test_directory_in_name_order_and_limit(tmp_path):
    for i, name in enumerate(["b.npz", "a.npz"]):
        np.savez(tmp_path / name, image=np.full([2, 4, 4, 3], i, np.float32))
    (tmp_path / "notes.txt").write_text("ignored")
    samples = read_samples(str(tmp_path), [IMAGE])
    assert [float(s[0][0, 0, 0, 0]) for s in samples] == [1, 1, 0, 0]  # a.npz first
    assert len(read_samples(str(tmp_path), [IMAGE], limit=3)) == 3


@pytest.mark.parametrize("arrays,fragment", [
    ({"image": np.ones([2, 4, 4], np.float32)}, "has shape [2, 4, 4]; the model expects [1, 4, 4, 3], or [N, 1, 4, 4, 3]"),
    ({"image": np.ones([2, 4, 4, 3], np.float64)}, "has dtype float64, the model expects float32"),
    ({}, "missing input 'image'"),
    ({"image": np.ones([1, 4, 4, 3], np.float32), "extra": np.ones(1)}, "unexpected array 'extra'"),
    ({"image": np.ones([0, 4, 4, 3], np.float32)}, "holds no samples"),
])
def test_bad_files_name_the_problem(tmp_path, arrays, fragment):
    np.savez(tmp_path / "s.npz", **arrays)
    with pytest.raises(SampleError, match="s.npz: ") as e:
        read_samples(str(tmp_path / "s.npz"), [IMAGE])
    assert fragment in str(e.value)


def test_sample_counts_must_agree(tmp_path):
    np.savez(tmp_path / "s.npz", image=np.ones([3, 4, 4, 3], np.float32), scale=np.ones([2, 2], np.int32))
    with pytest.raises(SampleError, match="different sample counts"):
        read_samples(str(tmp_path / "s.npz"), [IMAGE, SCALE])


@pytest.mark.parametrize("make,fragment", [(lambda p: None, "no such file"),
                                           (lambda p: p.mkdir(), "holds no .npz files"),
                                           (lambda p: p.write_bytes(b"junk"), "not a readable .npz"),
                                           (lambda p: np.save(open(p, "wb"), np.ones(3)), "single array")])
def test_unreadable_paths(tmp_path, make, fragment):
    path = tmp_path / "x.npz"
    make(path)
    with pytest.raises(SampleError, match=fragment):
        read_samples(str(path), [IMAGE])
