"""Small models with several subgraphs, control flow, resource variables, sparse and
zero-element constants, built op by op (ModelBuilder builds one subgraph; these ops need
options or tensors it does not make)."""
import numpy as np

from jaxfuse.builder import ModelBuilder
from jaxfuse.ir import Graph, Model, Op, OpCode, Tensor
from jaxfuse.schema import BUILTIN_CODES, TENSOR_TYPES, option_defaults
from jaxfuse.sparsity import sparsify

RESOURCE = TENSOR_TYPES["RESOURCE"]


def add_op(graph: Graph, op_type: str, inputs, outputs, options_type=None, options=None) -> Op:
    fields = {**option_defaults(options_type), **(options or {})} if options_type else {}
    op = Op(OpCode(BUILTIN_CODES[op_type], 1), list(inputs), list(outputs), options_type, fields)
    graph.ops.append(op)
    return op


def var_handle(graph: Graph, shared_name: str) -> Tensor:
    handle = graph.add_tensor(Tensor(graph.unique_name(shared_name), (), RESOURCE))
    add_op(graph, "VAR_HANDLE", [], [handle], "VarHandleOptions",
           {"container": b"", "sharedName": shared_name.encode()})
    return handle


def accumulator(initial=0.5, scale=2.0, shape=(1, 4), projected=False) -> Model:
    """Each step: state += x (state starts at `initial`, assigned by CALL_ONCE's init subgraph);
    output scale * state. Two variables: the sum and a step counter (int32). `projected`: x is
    first FULLY_CONNECTED then MUL by a per-channel constant (a pattern optimize folds)."""
    b = ModelBuilder("main")
    g = b.graph
    x = b.input("x", shape)
    if projected:
        rng = np.random.default_rng(5)
        fc = b.op("FULLY_CONNECTED", [x, b.const("w", rng.standard_normal((shape[1], shape[1])).astype(np.float32)),
                                      b.const("b", rng.standard_normal(shape[1]).astype(np.float32))], name="fc")
        x = b.op("MUL", [fc, b.const("s", rng.uniform(0.5, 2, shape[1]).astype(np.float32))], name="x_scaled")
    add_op(g, "CALL_ONCE", [], [], "CallOnceOptions", {"initSubgraphIndex": 1})
    acc, steps = var_handle(g, "acc"), var_handle(g, "steps")
    old = g.add_tensor(Tensor("acc_value", shape, TENSOR_TYPES["FLOAT32"]))
    add_op(g, "READ_VARIABLE", [acc], [old])
    new = b.op("ADD", [old, x], name="acc_next")
    add_op(g, "ASSIGN_VARIABLE", [acc, new], [])
    count = g.add_tensor(Tensor("steps_value", (1,), TENSOR_TYPES["INT32"]))
    add_op(g, "READ_VARIABLE", [steps], [count])
    one = b.const("one", np.ones(1, np.int32))
    add_op(g, "ASSIGN_VARIABLE", [steps, b.op("ADD", [count, one], name="steps_next")], [])
    y = b.op("MUL", [new, b.const("scale", np.full(shape, scale, np.float32))], name="y")
    b.output(y)

    init = ModelBuilder("init")
    ig = init.graph
    add_op(ig, "ASSIGN_VARIABLE", [var_handle(ig, "acc"), init.const("acc_init", np.full(shape, initial, np.float32))],
           [])
    add_op(ig, "ASSIGN_VARIABLE", [var_handle(ig, "steps"), init.const("steps_init", np.zeros(1, np.int32))], [])
    return Model([g, ig]).validate()


def if_model() -> Model:
    """y = (x + 1 if flag else x * 3) with a flag input."""
    b = ModelBuilder("main")
    x = b.input("x", [2, 3])
    flag = b.input("flag", [], np.bool_)
    y = b.graph.add_tensor(Tensor("y", (2, 3), TENSOR_TYPES["FLOAT32"]))
    add_op(b.graph, "IF", [flag, x], [y], "IfOptions", {"thenSubgraphIndex": 1, "elseSubgraphIndex": 2})
    b.output(y)
    branches = []
    for name, op_type, value in (("then", "ADD", 1.0), ("else", "MUL", 3.0)):
        s = ModelBuilder(name)
        xi = s.input("x", [2, 3])
        s.output(s.op(op_type, [xi, s.const("k", np.full([2, 3], value, np.float32))], name="out"))
        branches.append(s.graph)
    return Model([b.graph, *branches]).validate()


def while_model() -> Model:
    """Double x until its sum exceeds `limit`, counting the rounds: (x, rounds). The loop also
    carries the shape x is reshaped to in the body (unchanged: a static value in every round)."""
    b = ModelBuilder("main")
    x = b.input("x", [1, 3])
    rounds0 = b.const("rounds0", np.zeros([1], np.int32))
    shape = b.const("shape", np.array([1, 3], np.int32))
    outs = [b.graph.add_tensor(Tensor("x_out", (1, 3), TENSOR_TYPES["FLOAT32"])),
            b.graph.add_tensor(Tensor("rounds", (1,), TENSOR_TYPES["INT32"])),
            b.graph.add_tensor(Tensor("shape_out", (2,), TENSOR_TYPES["INT32"]))]
    add_op(b.graph, "WHILE", [x, rounds0, shape], outs, "WhileOptions",
           {"condSubgraphIndex": 1, "bodySubgraphIndex": 2})
    b.output(*outs[:2])

    cond = ModelBuilder("cond")
    cx = cond.input("x", [1, 3])
    cond.input("r", [1], np.int32)  # the condition takes every loop value, and reads only x
    cond.input("shape", [2], np.int32)
    total = cond.op("SUM", [cx, cond.const("axes", np.array([0, 1], np.int32))], name="total")
    room = cond.op("RELU", [cond.op("SUB", [cond.const("limit", np.array(100.0, np.float32)), total])])
    cond.output(cond.op("CAST", [room], options_type="CastOptions", dtype=np.bool_, name="go_on"))  # total < limit
    body = ModelBuilder("body")
    bx, br, bshape = body.input("x", [1, 3]), body.input("r", [1], np.int32), body.input("shape", [2], np.int32)
    flat = body.op("RESHAPE", [bx, body.const("flat", np.array([3], np.int32))], options_type="ReshapeOptions")
    doubled = body.op("MUL", [flat, body.const("two", np.full([3], 2.0, np.float32))], name="x2")
    body.output(body.op("RESHAPE", [doubled, bshape], options_type="ReshapeOptions", output_shape=(1, 3), name="x2r"),
                body.op("ADD", [br, body.const("one", np.ones([1], np.int32))], name="r1"), bshape)
    return Model([b.graph, cond.graph, body.graph]).validate()


def sparse_model(block: bool = False, float16: bool = False) -> Model:
    """y = x @ W^T + 1 with W a sparse constant read through DENSIFY (CSR on the inner dimension,
    or 2x2 blocks), optionally float16 weights behind a DEQUANTIZE."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 6)).astype(np.float32)
    if block:
        w[rng.random((4, 3)).repeat(2, 0).repeat(2, 1) < 0.5] = 0
        values, sparsity = sparsify(w, [0, 1, 0, 0], block_map=[0, 1], block_sizes=[2, 2])
    else:
        w[rng.random(w.shape) < 0.6] = 0
        values, sparsity = sparsify(w, [0, 1], index_dtype=np.uint8)
    dtype = np.float16 if float16 else np.float32
    b = ModelBuilder("main")
    x = b.input("x", [2, 6])
    stored = b.const("w_sparse", values.astype(dtype).reshape(-1))
    stored.shape, stored.sparsity = (8, 6), sparsity
    dense = b.op("DENSIFY", [stored], output_shape=(8, 6), dtype=dtype, name="w")
    if float16:
        dense = b.op("DEQUANTIZE", [dense], output_shape=(8, 6), name="w32")
    y = b.op("FULLY_CONNECTED", [x, dense, b.const("bias", np.ones(8, np.float32))], name="y")
    b.output(y)
    return b.build()


def zero_element_reshape() -> Model:
    """RESHAPE of a [1] tensor to a scalar by a shape constant of shape [0] (an empty buffer), then ADD."""
    b = ModelBuilder("main")
    x = b.input("x", [1])
    target = b.const("shape_empty", np.zeros(0, np.int32))
    s = b.op("RESHAPE", [x, target], options_type="ReshapeOptions", name="scalar")
    b.output(b.op("ADD", [s, b.const("k", np.array(2.0, np.float32))], name="y"))
    return b.build()


def gated_accumulator() -> Model:
    """A variable assigned inside a branch: y = (acc += x) if flag else 3 * x, acc starting at 1."""
    b = ModelBuilder("main")
    g = b.graph
    x = b.input("x", [1, 4])
    flag = b.input("flag", [], np.bool_)
    add_op(g, "CALL_ONCE", [], [], "CallOnceOptions", {"initSubgraphIndex": 3})
    y = g.add_tensor(Tensor("y", (1, 4), TENSOR_TYPES["FLOAT32"]))
    add_op(g, "IF", [flag, x], [y], "IfOptions", {"thenSubgraphIndex": 1, "elseSubgraphIndex": 2})
    b.output(y)

    then = ModelBuilder("then")
    tx = then.input("x", [1, 4])
    handle = var_handle(then.graph, "acc")
    old = then.graph.add_tensor(Tensor("acc_value", (1, 4), TENSOR_TYPES["FLOAT32"]))
    add_op(then.graph, "READ_VARIABLE", [handle], [old])
    new = then.op("ADD", [old, tx], name="acc_next")
    add_op(then.graph, "ASSIGN_VARIABLE", [handle, new], [])
    then.output(new)

    other = ModelBuilder("else")
    ex = other.input("x", [1, 4])
    other.output(other.op("MUL", [ex, other.const("three", np.full([1, 4], 3.0, np.float32))], name="x3"))

    init = ModelBuilder("init")
    add_op(init.graph, "ASSIGN_VARIABLE", [var_handle(init.graph, "acc"),
                                           init.const("acc_init", np.ones([1, 4], np.float32))], [])
    return Model([g, then.graph, other.graph, init.graph]).validate()
