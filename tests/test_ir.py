"""Graph queries, edits and validation; copy-on-write constants."""
import numpy as np
import pytest

from jaxfuse.builder import ModelBuilder
from jaxfuse.ir import Buffer, GraphError, Tensor


def two_convs_sharing_weights():
    b = ModelBuilder()
    x = b.input("x", [1, 4, 4, 2])
    w = b.const("w", np.ones((2, 1, 1, 2), np.float32))
    bias = b.const("bias", np.zeros(2, np.float32))
    y1 = b.op("CONV_2D", [x, w, bias], name="y1")
    y2 = b.op("CONV_2D", [y1, w, bias], name="y2")
    b.output(y2)
    return b.build()


def test_producer_consumers_and_replace_all_uses():
    g = two_convs_sharing_weights().main
    y1 = g.tensor("y1")
    assert g.producer(y1) is g.ops[0]
    assert g.consumers(y1) == [g.ops[1]]
    assert g.consumers(g.tensor("w")) == g.ops
    z = g.add_tensor(Tensor("z", y1.shape, y1.type))
    g.replace_all_uses(y1, z)
    assert g.ops[1].inputs[0] is z


def test_private_input_clones_shared_constants():
    g = two_convs_sharing_weights().main
    first, second = g.ops
    w = g.private_input(first, 1)
    assert w is not second.inputs[1] and w.name != "w"
    w.set_data(np.full((2, 1, 1, 2), 3, np.float32))
    np.testing.assert_array_equal(second.inputs[1].data, np.ones((2, 1, 1, 2)))


def test_set_data_never_changes_a_buffer_shared_by_two_tensors():
    g = two_convs_sharing_weights().main
    w = g.tensor("w")
    twin = Tensor("twin", w.shape, w.type, buffer=w.buffer)
    w.set_data(np.zeros(w.shape, np.float32))
    np.testing.assert_array_equal(twin.data, np.ones(w.shape))
    with pytest.raises(ValueError):
        twin.data[0, 0, 0, 0] = 5  # buffers are read-only


def test_dead_code_removal_and_toposort():
    model = two_convs_sharing_weights()
    g = model.main
    g.outputs = [g.tensor("y1")]
    g.cleanup()
    assert [op.outputs[0].name for op in g.ops] == ["y1"]
    assert "y2" not in {t.name for t in g.tensors}
    model = two_convs_sharing_weights()
    g = model.main
    g.ops.reverse()
    g.toposort()
    assert [op.outputs[0].name for op in g.ops] == ["y1", "y2"]


def test_validate_names_the_problem():
    g = two_convs_sharing_weights().main
    g.ops[1].inputs[0] = Tensor("stranger", (1, 4, 4, 2), 0)
    with pytest.raises(GraphError, match="'stranger' that is not in the graph"):
        g.validate()

    g = two_convs_sharing_weights().main
    g.ops[0].inputs[0] = g.tensor("y2")  # y1 <- y2 <- y1
    with pytest.raises(GraphError, match="cycle"):
        g.validate()

    g = two_convs_sharing_weights().main
    g.tensor("w").buffer = Buffer(np.zeros(3, np.float32))
    with pytest.raises(GraphError, match="needs 16 bytes, its buffer has 12"):
        g.validate()

    g = two_convs_sharing_weights().main
    g.tensor("x").name = "x"
    g.inputs = []
    with pytest.raises(GraphError, match="nothing produces"):
        g.validate()


def test_model_copy_is_independent_but_shares_buffers():
    model = two_convs_sharing_weights()
    copy = model.copy()
    assert copy.main.tensor("w").buffer is model.main.tensor("w").buffer
    copy.main.ops[0].options["fusedActivationFunction"] = 1
    assert model.main.ops[0].options["fusedActivationFunction"] == 0
    copy.main.remove_op(copy.main.ops[1])
    assert len(model.main.ops) == 2


def test_buffers_are_aligned_read_only_copies_that_never_keep_a_file_alive():
    from pathlib import Path

    import jaxfuse
    from jaxfuse.ir import BUFFER_ALIGNMENT
    model = jaxfuse.load(Path(__file__).parent.parent / "examples" / "models" / "resnet50v2_tiny.tflite")
    buffers = {id(t.buffer): t.buffer for t in model.main.tensors if t.is_constant}
    assert len(buffers) > 10
    for buffer in buffers.values():
        owner = buffer.data
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
        assert owner.base is None  # its own memory, not a view of the file's bytes
        assert buffer.data.ctypes.data % BUFFER_ALIGNMENT == 0 and not buffer.data.flags.writeable
    odd = np.frombuffer(bytes(range(10)), np.uint8)[1:9]  # unaligned, read-only, someone else's
    copied = Buffer(odd)
    assert copied.data.ctypes.data % BUFFER_ALIGNMENT == 0 and copied.data.tobytes() == odd.tobytes()
    assert np.shares_memory(Buffer(copied.data).data, copied.data)  # already aligned and owned: not copied
